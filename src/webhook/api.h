/* api: the webhook endpoint resource over HTTP (issue "Webhooks"):
 *
 *   POST   /v1/webhooks                          register (201, the secret shown once)
 *   GET    /v1/webhooks                          list, filter[organisation_id], cursor-paged
 *   GET    /v1/webhooks/{id}                     fetch
 *   PATCH  /v1/webhooks/{id}                     merge patch of data's members, data.version
 *   DELETE /v1/webhooks/{id}?version=N           delete (204)
 *   POST   /v1/webhooks/{id}/secret/rotate       a new secret; the old one signs 24 h more
 *   GET    /v1/webhooks/{id}/deliveries          attempts, filter[status], cursor-paged
 *   POST   /v1/webhooks/{id}/deliveries/{delivery_id}/retry   due again now (202)
 *   POST   /v1/webhooks/{id}/replay              every event of a time range again (202)
 *
 * in the {"data": ..., "links": ...} envelope, with the payments' rules for
 * versions (409 version_conflict), tenancy (another organisation's endpoint
 * is 404, an organisation the key may not act for 403) and errors (400
 * validation_failed naming each field).  Every handler runs on the server's
 * blocking pool: the store's webhook calls wait for commits, and a
 * registration resolves its url's host.  The module owns nothing global:
 * its context is built by main.c. */
#ifndef WEBHOOK_API_H
#define WEBHOOK_API_H

#include <stddef.h>

#include "http/router.h"
#include "payment/store.h"

#define WEBHOOK_API_ROUTES 9 /* entries webhook_api_routes() fills */

struct webhook_api {
    payment_store *store;     /* borrowed */
    const char *public_url;   /* prefix of links; "" makes them paths */
    int allow_private;        /* --webhook-allow-private: private destinations allowed */
    void (*wake)(void *ctx);  /* called after a retry or replay made deliveries due, or NULL */
    void *wake_ctx;           /* its argument */
};

/* Fills out (room for WEBHOOK_API_ROUTES) with the routes bound to api,
 * which must outlive the server.  Returns the count filled. */
size_t webhook_api_routes(struct webhook_api *api, struct http_route *out);

/* Appends to b the delivery body of a stored event: its JSON as GET
 * /v1/events shows it (payment_event_render).  Used by the dispatcher and
 * by replays alike.  Returns 0, or -1 out of memory. */
int webhook_event_body(const struct payment_event *ev, struct buf *b);

#endif
