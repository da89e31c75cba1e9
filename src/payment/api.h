/* api: the payment resource over HTTP: create, fetch, list, replace, patch
 * and delete, in the {"data": ..., "links": ...} envelope, with version
 * numbers for optimistic concurrency; and the change feed of their events.  The module owns nothing global: its
 * context is built by main.c and handed to its routes. */
#ifndef PAYMENT_API_H
#define PAYMENT_API_H

#include <stddef.h>

#include "core/buf.h"
#include "core/metrics.h"
#include "http/router.h"
#include "payment/feed_wait.h"
#include "payment/idem.h"
#include "payment/opqueue.h"
#include "payment/store.h"
#include "payment/validate.h"

#define PAYMENT_API_ROUTES 14 /* entries payment_api_routes() fills */

/* The store operations whose latency is measured. */
enum payment_store_op { PAYMENT_OP_GET, PAYMENT_OP_LIST, PAYMENT_OP_CREATE, PAYMENT_OP_UPDATE,
                        PAYMENT_OP_DELETE, PAYMENT_OP_COUNT };

struct payment_api {
    payment_store *store;                /* borrowed; writes are asynchronous */
    const payment_validator *validator;  /* borrowed */
    const char *public_url;              /* prefix of links; "" makes them paths */
    idem_inflight *inflight;             /* borrowed: Idempotency-Keys of requests in flight */
    const struct payment_opqueue *queue; /* borrowed: asynchronous writes, or NULL (off) */
    int async_always;                    /* every write asynchronous, not only Prefer ones */
    feed_wait *feed;                     /* borrowed: where GET /v1/events?wait=N waits; NULL:
                                          * such requests are answered at once */
    struct metrics_histogram store_latency[PAYMENT_OP_COUNT]; /* zeroed by the owner */
};

/* Fills out (room for PAYMENT_API_ROUTES) with the payment routes bound to
 * api, which must outlive the server.  Returns the count filled. */
size_t payment_api_routes(struct payment_api *api, struct http_route *out);

/* Appends the module's metrics (store operation latencies, the store's
 * group-commit batch sizes) in the Prometheus text format. */
void payment_api_metrics(struct payment_api *api, struct buf *b);

#endif
