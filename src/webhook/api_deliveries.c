/* api_deliveries: an endpoint's deliveries: the list (filter[status],
 * cursor-paged by id, each with its attempts as the sender recorded them)
 * and a manual retry of one (due again now, its attempts kept), which
 * wakes the deliverer.  The endpoint is read first: another organisation's
 * is 404 here as everywhere. */
#include "webhook/api_internal.h"

#include <string.h>

#include "core/clock.h"

/* Where a page of deliveries is rendered. */
struct deliveries_page {
    struct buf *b;
    size_t count;                 /* items appended */
    char last[UUID_STR_LEN + 1];  /* the last item's id */
};

static int deliveries_row(void *arg, const struct payment_delivery *d)
{
    struct deliveries_page *pg = arg;
    if (pg->count++)
        buf_puts(pg->b, ",");
    wh_render_delivery(pg->b, d);
    memcpy(pg->last, d->id, sizeof pg->last);
    return 0;
}

void wh_deliveries_list(http_request *req, void *ctx)
{
    struct webhook_api *api = ctx;
    if (wh_offload(req, wh_deliveries_list))
        return;
    char id[UUID_STR_LEN + 1];
    struct wh_query q;
    struct wh_endpoint e;
    wh_path_id(req, id);
    if (wh_query_parse(req, WH_LIST_DELIVERIES, &q) != 0 ||
        wh_endpoint_load(req, api, id, &e) != 0)
        return;
    wh_endpoint_free(&e);
    struct payment_delivery_query sq = {
        .webhook_id = id,
        .statuses = q.statuses,
        .after_id = q.after[0] ? q.after : NULL,
        .limit = q.size,
    };
    struct buf b = BUF_INIT;
    struct deliveries_page pg = {&b, 0, ""};
    int more = 0;
    buf_puts(&b, "{\"data\":[");
    int err = payment_store_deliveries_list(api->store, &sq, deliveries_row, &pg, &more);
    if (err != PAYMENT_STORE_OK) {
        buf_free(&b);
        wh_respond_store_error(req, err, -1);
        return;
    }
    wh_respond_page(req, api, &b, id, &q, more && pg.count ? pg.last : NULL);
}

/* The id just below u in the order the store lists ids (lower-case text,
 * the order of the bytes), so that a list after it starts at u; "" for
 * the smallest id. */
static void id_before(const struct uuid *u, char out[UUID_STR_LEN + 1])
{
    struct uuid prev = *u;
    int i = 15;
    while (i >= 0 && prev.bytes[i] == 0)
        prev.bytes[i--] = 0xff;
    if (i < 0) {
        out[0] = '\0';
        return;
    }
    prev.bytes[i]--;
    uuid_format(&prev, out);
}

/* Reads delivery id of endpoint wid into b as the list shows it: 0, or a
 * store error (ENOTFOUND when it is gone). */
static int read_delivery(struct webhook_api *api, const char *wid, const struct uuid *id,
                         struct buf *b)
{
    char after[UUID_STR_LEN + 1], want[UUID_STR_LEN + 1];
    id_before(id, after);
    uuid_format(id, want);
    struct payment_delivery_query sq = {
        .webhook_id = wid, .statuses = 0, .after_id = after[0] ? after : NULL, .limit = 1};
    struct deliveries_page pg = {b, 0, ""};
    int more = 0;
    int err = payment_store_deliveries_list(api->store, &sq, deliveries_row, &pg, &more);
    if (err == PAYMENT_STORE_OK && (pg.count != 1 || strcmp(pg.last, want) != 0))
        err = PAYMENT_STORE_ENOTFOUND;
    return err;
}

void wh_delivery_retry(http_request *req, void *ctx)
{
    struct webhook_api *api = ctx;
    if (wh_offload(req, wh_delivery_retry))
        return;
    char id[UUID_STR_LEN + 1], did[UUID_STR_LEN + 1];
    struct wh_endpoint e;
    struct uuid u;
    size_t len;
    wh_path_id(req, id);
    /* /v1/webhooks/{id}/deliveries/{delivery_id}/retry: segment 4. */
    const char *seg = http_path_segment(http_request_path(req), 4, &len);
    if (!seg || uuid_parse(seg, len, &u) != 0) {
        http_respond_error(req, 400, "invalid_id", "the delivery id in the path is not a UUID",
                           NULL);
        return;
    }
    uuid_format(&u, did);
    if (wh_endpoint_load(req, api, id, &e) != 0)
        return;
    wh_endpoint_free(&e);
    int err = payment_store_delivery_retry(api->store, id, did, clock_now_ms());
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"data\":");
    if (err == PAYMENT_STORE_OK)
        err = read_delivery(api, id, &u, &b);
    if (err == PAYMENT_STORE_ENOTFOUND) {
        buf_free(&b);
        http_respond_error(req, 404, "not_found", "this endpoint has no delivery with this id",
                           NULL);
        return;
    }
    if (err != PAYMENT_STORE_OK) {
        buf_free(&b);
        wh_respond_store_error(req, err, -1);
        return;
    }
    buf_puts(&b, ",\"links\":{\"self\":\"");
    wh_append_url(&b, api, id, "/deliveries");
    buf_puts(&b, "\"}}");
    http_respond_buf(req, 202, &b);
    if (api->wake)
        api->wake(api->wake_ctx);
}
