/* opqueue_broker: the payment API's queue of operations (payment/opqueue.h)
 * over NATS JetStream: an operation is published on the operation stream
 * (broker/opstream.h), subject of its organisation's partition
 * (broker/partition.h), with the operation id as message id; pending
 * operations are keys of a key-value bucket (PAYMENTS_OPS, opened by the
 * caller with the retention it wants).
 *
 * Owns nothing on the heap: the broker and the bucket are borrowed and
 * must outlive the queue.  Threads and errors: as payment/opqueue.h (the
 * broker's handles are thread-safe). */
#ifndef APP_OPQUEUE_BROKER_H
#define APP_OPQUEUE_BROKER_H

#include <stdint.h>

#include "broker/broker.h"
#include "payment/opqueue.h"

struct opqueue_broker {
    broker *broker;      /* borrowed: the connection */
    broker_kv *pending;  /* borrowed: the bucket of pending operations */
    uint32_t partitions; /* of the operation stream */
};

/* Sets ob up over broker b and bucket pending, and fills q with the
 * functions over ob (its ctx); ob must outlive q's use. */
void opqueue_broker_init(struct opqueue_broker *ob, broker *b, broker_kv *pending,
                         uint32_t partitions, struct payment_opqueue *q);

#endif
