/* deadletters: the HTTP node's count of dead letters, the operations no
 * worker could apply (stream PAYMENTS_DEAD, broker/opstream.h), for
 * /metrics.  A thread of its own reads the stream's message count every
 * interval, so that a scrape never waits on the broker from an HTTP thread.
 *
 * Threads: start and stop from one thread; deadletters_metrics from any. */
#ifndef APP_DEADLETTERS_H
#define APP_DEADLETTERS_H

#include "broker/broker.h"
#include "core/buf.h"

typedef struct deadletters deadletters;

/* Starts reading the count from b (borrowed: it must outlive the reader)
 * every interval_ms.  NULL when the thread cannot start. */
deadletters *deadletters_start(broker *b, int interval_ms);

/* Stops and joins the thread (waiting for a read in hand, at most the
 * broker's request timeout); NULL is a no-op. */
void deadletters_stop(deadletters *d);

/* Appends the gauge paymentd_broker_dead_letters, the last count read;
 * nothing before the first read succeeded. */
void deadletters_metrics(deadletters *d, struct buf *b);

#endif
