/* worker: applies the operations published on the command stream
 * ("PAYMENTS", subjects "payments.cmd.<p>") to the store, each partition in
 * stream order, as `paymentd worker` does.
 *
 * Membership.  Each worker holds one key "w.<UUIDv7>" of the bucket
 * "PAYMENTS_WORKERS", created when it joins and refreshed every refresh
 * interval; the live workers are the keys present, listed in one request
 * every 250 ms (at most the refresh interval), and a worker's rank is the
 * index of its key among them (by joining time).  With `live` workers,
 * rank r owns the partitions p with p * live / partitions == r: contiguous
 * ranges, so that a newcomer's share comes mostly from one neighbour.
 *
 * Leases.  Ownership of partition p is the key "p<N>" of the bucket
 * "PAYMENTS_LEASES", created when free and refreshed with compare-and-set;
 * both buckets' keys expire lease_ttl_ms after their last write, so a killed
 * worker's partitions are taken over after at most that long.  The lease's
 * current revision is the fencing token given to payment_store_apply: a
 * worker whose lease was taken over is refused by the store (EFENCED) before
 * it writes anything, and drops the partition.
 *
 * Rebalancing.  A worker that owns partitions no longer its own hands them
 * all back at once, as soon as it sees the new membership: each partition's
 * thread finishes the message it is applying (never one it is waiting
 * for), then the leases are deleted.  A worker missing some of its
 * partitions looks for their leases every 100 ms (one listing) and creates
 * each as soon as it is free.  A join is thus balanced within about 250 ms
 * plus the message in hand, and a lease is still only ever created free.
 *
 * Order.  One thread per owned partition reads it from the position the
 * store recorded (last applied sequence + 1) and applies one message at a
 * time, waiting for the store's answer before reading the next.  A message
 * the store cannot take now (EUNAVAILABLE: the store is down) is retried
 * every 100 ms for as long as it takes, never skipped.
 *
 * Poison.  A message whose apply fails with EINTERNAL is tried again after
 * a pause doubling from 100 ms (at most 5 s), max_attempts times in all;
 * then it is copied, as it is, to "payments.dead.<p>" of the stream
 * "PAYMENTS_DEAD" (broker/opstream.h), its operation recorded as failed with
 * internal_error, and the partition moves on.  Bytes that do not read as
 * JSON count as such a failure (out of memory reads so too).  A JSON
 * message without an operation id (not an operation at all) is copied
 * there and skipped.  The copy is made before the record, so a crash in
 * between leaves the copy made twice at worst (kept once within the
 * stream's duplicate window).  The record of the failure moves the
 * partition's position in the same transaction: while the store cannot
 * write even that, it is retried (every 5 s at most), never skipped, since
 * a position that does not move is what keeps every operation applied once.
 *
 * Threads.  worker_start and worker_stop are called from one thread; the
 * worker runs on its own threads in between. */
#ifndef APP_WORKER_H
#define APP_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "core/log.h"
#include "payment/store.h"
#include "payment/validate.h"

typedef struct worker worker;

/* worker_start's errors. */
enum worker_err {
    WORKER_OK = 0,
    WORKER_EUNAVAILABLE = -1, /* the broker could not be set up now: trying again may work */
    WORKER_EINTERNAL = -2,    /* no memory, no threads, no random source */
    WORKER_EPARTITIONS = -3,  /* the stream records another count (broker/opstream.h) */
};

/* A zero field takes the default in brackets. */
struct worker_config {
    const char *broker_urls; /* "nats://HOST:PORT[,...]" (required) */
    uint32_t partitions;     /* partitions of the stream [16] */
    const char *worker_id;   /* the lease value, for operators ["<hostname>-<pid>"] */
    int lease_ttl_ms;        /* lifetime of an unrefreshed lease or membership [6000] */
    int refresh_ms;          /* interval between refreshes [1000] */
    int replicas;            /* copies of the stream and buckets (3 on a cluster) [1] */
    unsigned max_attempts;   /* tries of an operation failing with EINTERNAL [5] */
    int repartition;         /* record `partitions` over another recorded count [0] */
};

#define WORKER_CONFIG_INIT {NULL, 0, NULL, 0, 0, 0, 0, 0}

/* Connects to the broker, creates the streams and buckets when missing,
 * checks the partition count against the stream's (opstream_setup) and
 * starts the worker's threads.  store and v are borrowed and must outlive
 * the worker; log too.  Returns 0 and the worker in *out (worker_stop()
 * it), or a worker_err with a one-line reason in err. */
int worker_start(const struct worker_config *cfg, payment_store *store,
                 const payment_validator *v, const struct logger *log, worker **out, char *err,
                 size_t errlen);

/* Stops: each partition finishes the message in hand, leases and the
 * membership key are released (so others take over at once), the broker
 * connection closed and the worker freed.  NULL is a no-op.  The caller runs
 * broker_library_shutdown() once afterwards, at exit. */
void worker_stop(worker *w);

/* As worker_stop, but leaves the leases and the membership key to expire,
 * as a killed worker's would: for tests of takeover. */
void worker_abandon(worker *w);

/* Operations applied by this worker so far (an applied outcome, success or
 * failure, or a skipped redelivery): for tests and metrics. */
uint64_t worker_applied(const worker *w);

/* Whether the worker holds partition p's lease at this instant;
 * *acquired (may be NULL) is the number of times it acquired it so far, so
 * that two looks with one count saw one unbroken ownership.  For tests and
 * metrics. */
int worker_owns(const worker *w, uint32_t p, uint64_t *acquired);

#endif
