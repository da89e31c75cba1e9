/* opstream: the layout of the operation stream, shared by the API servers
 * that publish operations and the workers that apply them: stream
 * "PAYMENTS" with one subject per partition ("payments.cmd.<p>"), stream
 * "PAYMENTS_DEAD" keeping the operations no worker could apply
 * ("payments.dead.<p>"), and the partition count, recorded once in the
 * bucket "PAYMENTS_CONFIG" (key "partitions") by the first process that
 * sets the streams up.
 *
 * Events.  Stream "PAYMENTS_EVENTS" carries the committed events of the
 * store's change feed, published by the relay (app/relay.h) on their
 * organisation's partition ("payments.events.<p>", the same partition as
 * the organisation's operations, by the same recorded count), each with its
 * event id as message id.  A consumer of one subject gets its
 * organisations' events, each payment's in version order.
 *
 * Why the count is recorded: the partition of an organisation depends on
 * the count (partition.h), and a worker applies only the partitions below
 * its own count.  A process started with another count than the recorded
 * one would publish operations no worker reads, or read only some of the
 * partitions, so it is refused at start instead.  Changing the count is an
 * explicit step (`repartition`), taken once the stream is drained.
 *
 * Threads: as broker.h (the functions only use the given handle).
 *
 * Errors are the negative values of enum opstream_err, here only. */
#ifndef BROKER_OPSTREAM_H
#define BROKER_OPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "broker/broker.h"

#define OPSTREAM_NAME "PAYMENTS"
#define OPSTREAM_DEAD_NAME "PAYMENTS_DEAD"
#define OPSTREAM_EVENTS_NAME "PAYMENTS_EVENTS"
#define OPSTREAM_CONFIG_BUCKET "PAYMENTS_CONFIG" /* shared settings; keys never expire */
#define OPSTREAM_SUBJECT_LEN 32 /* room for a subject and its NUL */

enum opstream_err {
    OPSTREAM_OK = 0,
    OPSTREAM_EUNAVAILABLE = -1, /* the broker did not answer: trying again may succeed */
    OPSTREAM_EINTERNAL = -2,    /* the broker refused a set-up request, or a bad record */
    OPSTREAM_EPARTITIONS = -3,  /* another partition count is recorded: do not start */
};

/* The subject of partition p's operations, "payments.cmd.<p>". */
void opstream_subject(uint32_t p, char out[OPSTREAM_SUBJECT_LEN]);

/* The subject of partition p's dead letters, "payments.dead.<p>". */
void opstream_dead_subject(uint32_t p, char out[OPSTREAM_SUBJECT_LEN]);

/* The subject of partition p's events, "payments.events.<p>". */
void opstream_events_subject(uint32_t p, char out[OPSTREAM_SUBJECT_LEN]);

/* Creates the events stream (or updates it to `replicas` copies and this
 * age), whose messages are removed max_age_ms after they were published
 * (0: never).  Returns 0, or an error with a one-line reason in err. */
int opstream_events_setup(broker *b, int replicas, int64_t max_age_ms, char *err,
                          size_t errlen);

/* Creates both streams (or updates them to `replicas` copies) and checks
 * the recorded partition count: records `partitions` when none is recorded
 * yet; with another one recorded, fails with OPSTREAM_EPARTITIONS and a
 * one-line reason naming both, unless `repartition` is set, which records
 * `partitions` over it.  Returns 0, or an error with a reason in err. */
int opstream_setup(broker *b, uint32_t partitions, int replicas, int repartition, char *err,
                   size_t errlen);

#endif
