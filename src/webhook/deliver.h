/* deliver: the webhook deliveries of one process (issue "Webhooks").
 * Threads of its own, never the HTTP threads:
 *
 *   - the dispatcher follows the store's feed from the store's dispatch
 *     position (payment_store_dispatch_pos) and makes, for each event, one
 *     delivery per enabled endpoint of its organisation that wants its type
 *     and was created before it (event pos > after_pos), moving the position
 *     in the same store step (payment_store_deliveries_add);
 *   - the sender claims due deliveries under a lease (one process at a time
 *     attempts a delivery), POSTs them with libcurl's multi interface,
 *     signed (sign.h) with the secrets the endpoint has at the attempt,
 *     and records each attempt: 2xx succeeded; 410 disables the endpoint;
 *     otherwise the next attempt per the retry schedule (with jitter, a
 *     429/503's Retry-After honoured), or failed once the schedule runs out;
 *     an endpoint failing everything for disable_after is disabled (0:
 *     never).  Its store calls and its transfers run on two threads, so a
 *     slow store call never holds up a transfer in flight.
 *
 * At least once: a delivery's state is in the store, so a crash loses
 * nothing; an attempt cut off by one is claimed again once its lease
 * expires (lease = timeout + 5 s).  Connections go only to addresses
 * url.h allows (checked again at each connection).
 *
 * Threads: start and stop from one thread (main); wake and metrics from
 * any.  Errors: NULL from start, with the reason logged. */
#ifndef WEBHOOK_DELIVER_H
#define WEBHOOK_DELIVER_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/log.h"
#include "payment/store.h"

#define WEBHOOK_SCHEDULE_MAX 32 /* retries a schedule may list */

struct webhook_deliver_config {
    payment_store *store;         /* borrowed, outlives the deliverer */
    const struct logger *log;     /* borrowed */
    int64_t timeout_ms;           /* a receiver's time to answer (--webhook-timeout) */
    size_t n_schedule;            /* 1..WEBHOOK_SCHEDULE_MAX */
    int64_t schedule_ms[WEBHOOK_SCHEDULE_MAX]; /* delays before attempt 1, 2, ... (first: 0) */
    int64_t disable_after_ms;     /* an endpoint failing this long is disabled */
    int allow_private;            /* private destinations allowed */
    int64_t poll_ms;              /* how often the threads look for work when not woken */
};

/* The defaults: timeout 15 s, schedule 0s,5s,5m,30m,2h,5h,10h,14h,20h,24h,
 * disable after 5 days, private refused, poll 500 ms. */
void webhook_deliver_config_init(struct webhook_deliver_config *c);

/* Parses a schedule "0s,5s,5m,..." (units ms, s, m, h, d) into c.
 * Returns 0, or -1 when malformed, empty or longer than
 * WEBHOOK_SCHEDULE_MAX. */
int webhook_schedule_parse(const char *text, struct webhook_deliver_config *c);

typedef struct webhook_deliver webhook_deliver;

/* Starts the threads.  NULL on failure (logged).  It calls
 * curl_global_init, which is not thread safe: call it from main before any
 * other thread uses libcurl (stop, which calls curl_global_cleanup, once
 * none does). */
webhook_deliver *webhook_deliver_start(const struct webhook_deliver_config *c);

/* Tells the threads to look for work now (new events, a retry). */
void webhook_deliver_wake(void *d);

/* Stops the threads (an attempt in flight is abandoned: its lease lets
 * another take it) and frees d.  NULL is a no-op. */
void webhook_deliver_stop(webhook_deliver *d);

/* Appends the metrics in the Prometheus text format:
 * paymentd_webhook_deliveries_total{outcome="succeeded|failed|retrying"},
 * paymentd_webhook_attempts_total, paymentd_webhook_pending_deliveries,
 * paymentd_webhook_oldest_pending_seconds. */
void webhook_deliver_metrics(webhook_deliver *d, struct buf *b);

#endif
