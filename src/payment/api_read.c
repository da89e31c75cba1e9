/* api_read: the read handlers: GET of a payment (its stored bytes as they are,
 * If-None-Match) and the list (filters, paging links, tenants; as CSV, every
 * page, when the client asks for text/csv: api_csv.c). */
#include "payment/api_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "payment/query.h"

static void set_etag(http_request *req, int64_t version)
{
    char etag[32];
    api_etag_format(version, etag);
    http_request_add_header(req, "ETag", etag);
}

/* Whether If-None-Match names the current entity tag (or is "*"). */
static int if_none_match(http_request *req, int64_t version)
{
    const char *h = http_request_header(req, "If-None-Match");
    if (!h)
        return 0;
    char tag[32];
    size_t n = api_etag_format(version, tag);
    for (const char *p = h; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '*')
            return 1;
        if (p[0] == 'W' && p[1] == '/')
            p += 2; /* weak comparison, as RFC 9110 asks for If-None-Match */
        size_t len = strcspn(p, ",");
        size_t trimmed = len;
        while (trimmed > 0 && (p[trimmed - 1] == ' ' || p[trimmed - 1] == '\t'))
            trimmed--;
        if (n == trimmed && memcmp(p, tag, trimmed) == 0)
            return 1;
        p += len;
    }
    return 0;
}

void api_payments_fetch(http_request *req, void *ctx)
{
    struct payment_api *api = ctx;
    if (api_offload(req, api_payments_fetch, api_may_block(api, 0)))
        return;
    char id[UUID_STR_LEN + 1];
    api_path_id(req, id);
    struct buf b = BUF_INIT;
    int64_t version = 0;
    if (buf_reserve(&b, 8192) != 0) { /* a typical payment, in one allocation */
        http_respond_error(req, 500, "internal_error", "internal error", NULL);
        return;
    }
    buf_puts(&b, "{\"data\":");
    int64_t t0 = clock_mono_us();
    int err = payment_store_get(api->store, id, &b, &version);
    metrics_histogram_observe(&api->store_latency[PAYMENT_OP_GET], clock_mono_us() - t0);
    char org[UUID_STR_LEN + 1];
    if (err == PAYMENT_STORE_OK && api_principal(req) &&
        (api_doc_org(b.data + 8, b.len - 8, org) != 0 || !auth_allows(api_principal(req), org)))
        err = PAYMENT_STORE_ENOTFOUND; /* existence does not leak across tenants */
    if (err != PAYMENT_STORE_OK) {
        buf_free(&b);
        api_respond_store_error(req, err, -1);
        return;
    }
    set_etag(req, version);
    if (if_none_match(req, version)) {
        buf_free(&b);
        http_respond(req, 304, NULL);
        return;
    }
    buf_puts(&b, ",");
    api_append_self_link(&b, api, id);
    http_respond_buf(req, 200, &b);
}

struct list_parse {
    struct payment_query *q;
    char msg[256]; /* why the query was refused */
};

static int list_param(void *arg, const char *key, const char *value)
{
    struct list_parse *lp = arg;
    return payment_query_add(lp->q, key, value, lp->msg, sizeof lp->msg) != 0;
}

/* The page's buffer is sized once, from its first row, rather than doubled
 * and copied as rows arrive; this much at most. */
#define LIST_RESERVE_MAX (1024 * 1024)

int api_list_row(void *arg, const char *doc, size_t len, int64_t seq)
{
    struct api_list_out *o = arg;
    if (o->count == 0) {
        size_t want = (size_t)o->page_size * (len + 1) + 1024;
        buf_reserve(o->b, want < LIST_RESERVE_MAX ? want : LIST_RESERVE_MAX);
    }
    if (o->count++)
        buf_puts(o->b, ",");
    buf_append(o->b, doc, len);
    o->last_seq = seq;
    return buf_failed(o->b) ? API_LIST_STOP_NO_MEMORY : 0;
}

static void append_list_link(struct buf *b, const struct payment_api *api, const char *name,
                             const struct payment_query *q, enum payment_page_mode mode,
                             uint32_t number, int64_t after)
{
    struct buf qs = BUF_INIT;
    payment_query_link(q, mode, number, after, &qs);
    buf_printf(b, "\"%s\":\"", name);
    buf_json_escape(b, api->public_url, strlen(api->public_url));
    buf_puts(b, "/v1/payments");
    if (qs.data)
        buf_json_escape(b, qs.data, qs.len);
    buf_puts(b, "\"");
    if (buf_failed(&qs))
        b->failed = 1;
    buf_free(&qs);
}

/* Narrows q to the organisations p may act for: the filter given, less
 * the organisations p may not see, or all of p's when none was given.
 * Returns 1, 0 when nothing is left to list, or -1 out of memory. */
static int list_restrict(struct payment_query *q, const struct auth_principal *p)
{
    struct payment_query_set *set = &q->organisation_id;
    if (!p || p->all_orgs)
        return 1;
    if (set->count == 0) {
        for (size_t i = 0; i < p->n_orgs && i < PAYMENT_QUERY_MAX_VALUES; i++) {
            set->values[i] = strdup(p->orgs[i]);
            if (!set->values[i])
                return -1;
            set->count++;
        }
        return set->count > 0;
    }
    size_t kept = 0;
    for (size_t i = 0; i < set->count; i++)
        kept += auth_allows(p, set->values[i]);
    if (kept == 0)
        return 0; /* nothing to list; the filter stays for the links */
    kept = 0;
    for (size_t i = 0; i < set->count; i++) {
        if (auth_allows(p, set->values[i]))
            set->values[kept++] = set->values[i];
        else
            free(set->values[i]);
    }
    set->count = kept;
    return 1;
}

int api_list_each(struct payment_api *api, struct payment_query *q,
                  const struct auth_principal *p, payment_store_row_fn each, void *arg,
                  int *more)
{
    int64_t t0 = clock_mono_us();
    int visible = list_restrict(q, p);
    if (visible <= 0)
        *more = 0; /* nothing listed: no page follows either */
    int err = visible < 0   ? PAYMENT_STORE_EINTERNAL
              : visible > 0 ? payment_store_list(api->store, q, each, arg, more)
                            : PAYMENT_STORE_OK;
    metrics_histogram_observe(&api->store_latency[PAYMENT_OP_LIST], clock_mono_us() - t0);
    return err;
}

int api_list_fill(struct payment_api *api, struct payment_query *q,
                  const struct auth_principal *p, struct api_list_out *out, int *more)
{
    int err = api_list_each(api, q, p, api_list_row, out, more);
    return err == API_LIST_STOP_NO_MEMORY ? PAYMENT_STORE_EINTERNAL : err;
}

void api_payments_list(http_request *req, void *ctx)
{
    struct payment_api *api = ctx;
    if (api_offload(req, api_payments_list, api_may_block(api, 0)))
        return;
    struct payment_query q;
    struct list_parse lp = {&q, ""};
    payment_query_init(&q);
    if (http_request_query_each(req, list_param, &lp) != 0 ||
        payment_query_finish(&q, lp.msg, sizeof lp.msg) != 0) {
        http_respond_error(req, 400, "bad_request", lp.msg[0] ? lp.msg : "bad query", NULL);
        payment_query_clear(&q);
        return;
    }
    if (api_csv_wanted(req)) {
        api_payments_csv(req, api, &q);
        return;
    }
    struct buf b = BUF_INIT;
    struct api_list_out out = {&b, 0, 0, q.page_size};
    int more = 0;
    buf_puts(&b, "{\"data\":[");
    int err = api_list_fill(api, &q, api_principal(req), &out, &more);
    if (err != PAYMENT_STORE_OK) {
        buf_free(&b);
        payment_query_clear(&q);
        api_respond_store_error(req, err, -1);
        return;
    }
    buf_puts(&b, "],\"links\":{");
    append_list_link(&b, api, "self", &q, q.mode, q.page_number, q.after_seq);
    buf_puts(&b, ",");
    append_list_link(&b, api, "first", &q, PAYMENT_PAGE_FIRST, 0, 0);
    if (more) {
        buf_puts(&b, ",");
        /* Offset paging continues by offset while the next page is within
         * the offset limit, and by cursor beyond it. */
        if (q.mode == PAYMENT_PAGE_OFFSET &&
            (uint64_t)(q.page_number + 1) * q.page_size < PAYMENT_OFFSET_LIMIT)
            append_list_link(&b, api, "next", &q, PAYMENT_PAGE_OFFSET, q.page_number + 1, 0);
        else
            append_list_link(&b, api, "next", &q, PAYMENT_PAGE_CURSOR, 0, out.last_seq);
    }
    buf_puts(&b, "}}");
    payment_query_clear(&q);
    http_respond_buf(req, 200, &b);
}
