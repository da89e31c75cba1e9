/* api_list: GET /v1/webhooks, the endpoints of the organisations the caller
 * may act for (filter[organisation_id] narrowing them, as the payments
 * list does), in creation order, cursor-paged by id.  No secret is in it. */
#include "webhook/api_internal.h"

#include <stdlib.h>
#include <string.h>

/* Where the page is rendered. */
struct list_page {
    struct buf *b;
    size_t count;                       /* items appended */
    char last[UUID_STR_LEN + 1];        /* the last item's id */
};

/* list_row's stop for a document it cannot render: positive, so that it is
 * never taken for one of the store's errors (all negative). */
#define LIST_STOP_FAILED 1

static int list_row(void *arg, const struct payment_webhook *w)
{
    struct list_page *pg = arg;
    json_t *o = wh_endpoint_json(w, NULL);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text)
        return LIST_STOP_FAILED;
    if (pg->count++)
        buf_puts(pg->b, ",");
    buf_puts(pg->b, text);
    free(text);
    memcpy(pg->last, w->id, sizeof pg->last);
    return buf_failed(pg->b) ? LIST_STOP_FAILED : 0;
}

/* The store's query from q, with the organisations p may see: the filter
 * given less those p may not act for, or all of p's when none was given;
 * none at all when none is left.  orgs keeps the store's list. */
static void store_query(const struct wh_query *q, const struct auth_principal *p,
                        char (*orgs)[UUID_STR_LEN + 1], struct payment_webhook_query *sq)
{
    memset(sq, 0, sizeof *sq);
    sq->after_id = q->after[0] ? q->after : NULL;
    sq->limit = q->size;
    sq->n_orgs = auth_visible_orgs(p, (const char(*)[UUID_STR_LEN + 1])q->orgs, q->n_orgs, orgs,
                                   &sq->all_orgs);
    sq->orgs = (const char(*)[UUID_STR_LEN + 1])orgs;
}

void wh_list(http_request *req, void *ctx)
{
    struct webhook_api *api = ctx;
    if (wh_offload(req, wh_list))
        return;
    struct wh_query q;
    if (wh_query_parse(req, WH_LIST_ENDPOINTS, &q) != 0)
        return;
    char orgs[AUTH_MAX_ORGS][UUID_STR_LEN + 1];
    struct payment_webhook_query sq;
    store_query(&q, wh_principal(req), orgs, &sq);
    struct buf b = BUF_INIT;
    struct list_page pg = {&b, 0, ""};
    int more = 0;
    buf_puts(&b, "{\"data\":[");
    int err = sq.all_orgs || sq.n_orgs
                  ? payment_store_webhooks_list(api->store, &sq, list_row, &pg, &more)
                  : PAYMENT_STORE_OK;
    if (err != PAYMENT_STORE_OK) {
        buf_free(&b);
        wh_respond_store_error(req, err == LIST_STOP_FAILED ? PAYMENT_STORE_EINTERNAL : err, -1);
        return;
    }
    wh_respond_page(req, api, &b, NULL, &q, more && pg.count ? pg.last : NULL);
}
