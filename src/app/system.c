#include "app/system.h"

#include <string.h>

#include "app/version.h"
#include "auth/keys.h"
#include "http/server.h"

static void respond_literal(http_request *req, int status, const char *json)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, json);
    http_respond_buf(req, status, &b);
}

static void healthz(http_request *req, void *ctx)
{
    (void)ctx;
    respond_literal(req, 200, "{\"status\":\"ok\"}");
}

static void readyz(http_request *req, void *ctx)
{
    struct system_ctx *sys = ctx;
    if (payment_store_may_block(sys->store) && !http_request_on_pool(req)) {
        http_request_run_blocking(req, readyz); /* the ping waits on the network */
        return;
    }
    if (payment_store_ping(sys->store) != 0) {
        /* A store that refuses for good says why: the operator's one line. */
        const char *why = payment_store_refusal(sys->store);
        http_respond_error(req, 503, "store_unavailable", why ? why : "the store does not answer",
                           NULL);
        return;
    }
    respond_literal(req, 200, "{\"status\":\"ready\"}");
}

static void index_v1(http_request *req, void *ctx)
{
    struct system_ctx *sys = ctx;
    const char *u = sys->public_url;
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"links\":{\"self\":\"");
    buf_json_escape(&b, u, strlen(u));
    buf_puts(&b, "/v1\",\"payments\":\"");
    buf_json_escape(&b, u, strlen(u));
    buf_puts(&b, "/v1/payments\",\"payment\":\"");
    buf_json_escape(&b, u, strlen(u));
    buf_puts(&b, "/v1/payments/{id}\",\"events\":\"");
    buf_json_escape(&b, u, strlen(u));
    buf_puts(&b, "/v1/events\",\"webhooks\":\"");
    buf_json_escape(&b, u, strlen(u));
    buf_puts(&b, "/v1/webhooks\"}}");
    http_respond_buf(req, 200, &b);
}

/* GET /v1/me: who the request acts as. */
static void me(http_request *req, void *ctx)
{
    (void)ctx;
    /* A route with HTTP_ROUTE_AUTH has a principal whenever the server
     * authenticates: none means it runs open. */
    const struct auth_principal *p = http_request_principal(req);
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"data\":{\"key_id\":");
    if (p) {
        buf_puts(&b, "\"");
        buf_json_escape(&b, p->id, strlen(p->id));
        buf_puts(&b, "\"");
    } else {
        buf_puts(&b, "null");
    }
    buf_puts(&b, ",\"organisations\":");
    if (!p || p->all_orgs) {
        buf_puts(&b, "\"*\"");
    } else {
        buf_puts(&b, "[");
        for (size_t i = 0; i < p->n_orgs; i++) {
            buf_puts(&b, i ? ",\"" : "\"");
            buf_puts(&b, p->orgs[i]); /* a UUID: nothing to escape */
            buf_puts(&b, "\"");
        }
        buf_puts(&b, "]");
    }
    buf_puts(&b, !p || p->write ? ",\"write\":true" : ",\"write\":false");
    buf_puts(&b, p ? ",\"open\":false}}" : ",\"open\":true}}");
    http_respond_buf(req, 200, &b);
}

static void metrics(http_request *req, void *ctx)
{
    struct system_ctx *sys = ctx;
    struct buf b = BUF_INIT;
    version_metrics(&b);
    http_server_metrics(http_request_server(req), &b);
    payment_api_metrics(sys->api, &b);
    if (sys->dead)
        deadletters_metrics(sys->dead, &b);
    if (sys->relay)
        relay_metrics(sys->relay, &b);
    if (sys->webhooks)
        webhook_deliver_metrics(sys->webhooks, &b);
    http_request_add_header(req, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    http_respond_buf(req, 200, &b);
}

size_t system_routes(struct system_ctx *ctx, struct http_route *out)
{
    const struct http_route routes[SYSTEM_ROUTES] = {
        {HTTP_GET, "/healthz", healthz, 0, ctx},
        {HTTP_GET, "/readyz", readyz, 0, ctx},
        {HTTP_GET, "/v1", index_v1, HTTP_ROUTE_AUTH, ctx},
        {HTTP_GET, "/v1/me", me, HTTP_ROUTE_AUTH, ctx},
        {HTTP_GET, "/metrics", metrics, 0, ctx},
    };
    memcpy(out, routes, sizeof routes);
    return SYSTEM_ROUTES;
}
