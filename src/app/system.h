/* system: the routes that describe the server rather than a resource:
 * GET /healthz (the process is alive), GET /readyz (the store answers, else
 * 503 store_unavailable), GET /v1 (an index of the API's links), GET /v1/me
 * (who the request acts as: its key's id, organisations and right to write,
 * and whether the server runs open, without keys) and GET /metrics
 * (Prometheus text format). */
#ifndef APP_SYSTEM_H
#define APP_SYSTEM_H

#include <stddef.h>

#include "app/deadletters.h"
#include "app/relay.h"
#include "http/router.h"
#include "payment/api.h"
#include "payment/store.h"
#include "webhook/deliver.h"

#define SYSTEM_ROUTES 5 /* entries system_routes() fills */

struct system_ctx {
    payment_store *store;   /* borrowed: pinged by /readyz */
    const char *public_url; /* prefix of links, "" for paths */
    struct payment_api *api; /* borrowed: its metrics are served by /metrics */
    deadletters *dead;       /* borrowed, NULL without a broker: its count too */
    relay *relay;            /* borrowed, NULL when not relaying: its figures too */
    webhook_deliver *webhooks; /* borrowed, NULL when not delivering: its figures too */
};

/* Fills out (room for SYSTEM_ROUTES) with routes bound to ctx, which must
 * outlive the server.  Returns the count filled. */
size_t system_routes(struct system_ctx *ctx, struct http_route *out);

#endif
