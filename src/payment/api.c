/* api: the payment routes and the module's metrics.  The handlers live in
 * the api_*.c files (see api_internal.h). */
#include "payment/api.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "payment/api_internal.h"

size_t payment_api_routes(struct payment_api *api, struct http_route *out)
{
    const unsigned body = HTTP_ROUTE_BODY | HTTP_ROUTE_AUTH;
    const unsigned id = HTTP_ROUTE_UUID_PARAM | HTTP_ROUTE_AUTH;
    const struct http_route routes[PAYMENT_API_ROUTES] = {
        {HTTP_POST, "/v1/payments", api_payments_create, body, api},
        {HTTP_GET, "/v1/payments", api_payments_list, HTTP_ROUTE_AUTH, api},
        {HTTP_GET, "/v1/payments/{id}", api_payments_fetch, id, api},
        {HTTP_PUT, "/v1/payments/{id}", api_payments_replace, id | body, api},
        {HTTP_PATCH, "/v1/payments/{id}", api_payments_patch, id | body, api},
        {HTTP_DELETE, "/v1/payments/{id}", api_payments_delete, id, api},
        {HTTP_GET, "/v1/payments/{id}/history", api_payments_history, id, api},
        {HTTP_GET, "/v1/payments/{id}/history/{version}", api_payments_history_version, id, api},
        /* The original service's singular routes, kept as aliases. */
        {HTTP_POST, "/v1/payment", api_payments_create, body, api},
        {HTTP_GET, "/v1/payment/{id}", api_payments_fetch, id, api},
        {HTTP_PUT, "/v1/payment/{id}", api_payments_replace, id | body, api},
        {HTTP_DELETE, "/v1/payment/{id}", api_payments_delete, id, api},
        {HTTP_GET, "/v1/operations/{id}", api_operations_fetch, id, api},
        {HTTP_GET, "/v1/events", api_events_list, HTTP_ROUTE_AUTH, api},
    };
    memcpy(out, routes, sizeof routes);
    return PAYMENT_API_ROUTES;
}

void payment_api_metrics(struct payment_api *api, struct buf *b)
{
    static const char *const ops[PAYMENT_OP_COUNT] = {"get", "list", "create", "update",
                                                      "delete"};
    static const char *const name = "paymentd_store_operation_duration_seconds";
    metrics_render_header(b, name, "histogram",
                          "Store operations, from the call (writes: submission) to the answer.");
    for (int i = 0; i < PAYMENT_OP_COUNT; i++) {
        char labels[32];
        snprintf(labels, sizeof labels, "op=\"%s\"", ops[i]);
        metrics_render_histogram(b, name, labels, &api->store_latency[i]);
    }
    if (api->feed) {
        metrics_render_header(b, "paymentd_feed_waiting_requests", "gauge",
                              "Requests to GET /v1/events in a long poll (wait=N) now.");
        buf_printf(b, "paymentd_feed_waiting_requests %zu\n", feed_wait_count(api->feed));
    }
    struct payment_store_stats st;
    if (payment_store_stats(api->store, &st) != 0)
        return;
    metrics_render_header(b, "paymentd_store_commits_total", "counter",
                          "Write transactions committed (each one fsync).");
    buf_printf(b, "paymentd_store_commits_total %" PRIu64 "\n", st.commits);
    metrics_render_header(b, "paymentd_store_writes_total", "counter",
                          "Write operations answered by the store.");
    buf_printf(b, "paymentd_store_writes_total %" PRIu64 "\n", st.writes);
    metrics_render_header(b, "paymentd_store_checkpoints_total", "counter",
                          "Checkpoints of the embedded store's write-ahead log made by its "
                          "checkpoint thread, beside the writer.");
    buf_printf(b, "paymentd_store_checkpoints_total %" PRIu64 "\n", st.checkpoints);
    if (st.batches) {
        metrics_render_header(b, "paymentd_store_commit_batch_size", "histogram",
                              "Write operations per committed transaction (group commit).");
        metrics_render_sizes(b, "paymentd_store_commit_batch_size", "", st.batches);
    }
}
