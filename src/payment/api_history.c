/* api_history: a payment's history, the events that made each of its
 * versions (event.h), read from the store (payment_store_history):
 *
 *   GET /v1/payments/{id}/history            every version, oldest first,
 *       paged by version: page[after] (a version; the page starts above
 *       it) and page[size] (1..PAYMENT_EVENTS_PAGE_MAX, default 100);
 *       {"data": [events], "links": {"self", "next" (only when more)}}
 *   GET /v1/payments/{id}/history/{version}  one version:
 *       {"data": event, "links": {"self"}}
 *
 * A deleted payment's history stays readable.  Tenancy as for payments:
 * the payment's organisation (its events') must be one the caller may act
 * for, else the answer is the 404 of an unknown payment.  Malformed
 * parameters are 400 validation_failed, decided before the store is read. */
#include "payment/api_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "payment/event.h"

#define HISTORY_PAGE_DEFAULT 100 /* events a page holds without page[size] */

/* The paging parameters of a history page. */
struct history_query {
    int64_t after;   /* versions above this; -1: from the first */
    uint32_t size;   /* events at most */
    int has_after;   /* page[after] was given */
    int has_size;    /* page[size] was given */
    char bad[64];    /* the name of the parameter refused (cut short), "" for none */
    const char *why; /* why */
};

/* A macro's value as a string literal. */
#define TEXT_(x) #x
#define TEXT(x) TEXT_(x)

static int history_param(void *arg, const char *key, const char *value)
{
    struct history_query *q = arg;
    int after = strcmp(key, "page[after]") == 0, size = strcmp(key, "page[size]") == 0;
    int64_t v = 0;
    snprintf(q->bad, sizeof q->bad, "%s", key);
    if (!after && !size) {
        q->why = "is not a parameter of this route (page[after], page[size])";
        return 1;
    }
    if (after ? q->has_after : q->has_size) {
        q->why = "is given twice";
        return 1;
    }
    int ok = http_parse_version(value, strlen(value), &v) == 0;
    if (after) {
        q->has_after = 1;
        q->after = v;
        q->why = "must be a version: a non-negative integer";
    } else {
        ok = ok && v >= 1 && v <= PAYMENT_EVENTS_PAGE_MAX;
        q->has_size = 1;
        q->size = ok ? (uint32_t)v : 0;
        q->why = "must be an integer from 1 to " TEXT(PAYMENT_EVENTS_PAGE_MAX);
    }
    return !ok;
}

/* 400 validation_failed naming one parameter (client text, escaped). */
static void respond_bad_param(http_request *req, const char *name, const char *why)
{
    struct buf extra = BUF_INIT;
    buf_puts(&extra, "\"errors\":[{\"field\":\"");
    buf_json_escape(&extra, name, strlen(name));
    buf_puts(&extra, "\",\"message\":\"");
    buf_json_escape(&extra, why, strlen(why));
    buf_puts(&extra, "\"}]");
    if (buf_failed(&extra))
        api_respond_internal(req);
    else
        http_respond_error(req, 400, "validation_failed", "the request's parameters are not valid",
                           extra.data);
    buf_free(&extra);
}

/* The events read for one answer. */
struct history_out {
    struct buf *b;                        /* rendered events, comma-separated */
    size_t count;                         /* events read */
    int64_t last_version;                 /* the last one's version */
    char org[UUID_STR_LEN + 1];           /* the payment's organisation, "" before any */
};

/* Stops a read when the answer's buffer ran out of memory: positive, so
 * that it is never taken for one of the store's errors (all negative). */
#define HISTORY_STOP_NO_MEMORY 1

static int history_event(void *arg, const struct payment_event *ev)
{
    struct history_out *o = arg;
    if (o->count++)
        buf_puts(o->b, ",");
    memcpy(o->org, ev->organisation_id, sizeof o->org);
    o->last_version = ev->version;
    return payment_event_render(ev, o->b) != 0 ? HISTORY_STOP_NO_MEMORY : 0;
}

/* Reads id's events above after, at most limit, into o.  Returns a store
 * error, PAYMENT_STORE_EINTERNAL for a buffer out of memory. */
static int history_read(struct payment_api *api, const char *id, int64_t after, uint32_t limit,
                        struct history_out *o, int *more)
{
    int err = payment_store_history(api->store, id, after, limit, history_event, o, more);
    return err == HISTORY_STOP_NO_MEMORY ? PAYMENT_STORE_EINTERNAL : err;
}

/* The organisation of a live payment into org, from its document: 0,
 * ENOTFOUND for an unknown or deleted id, or a store error. */
static int history_live_org(struct payment_api *api, const char *id,
                            char org[UUID_STR_LEN + 1])
{
    struct buf doc = BUF_INIT;
    int64_t version = 0;
    int err = payment_store_get(api->store, id, &doc, &version);
    if (err == PAYMENT_STORE_OK && api_doc_org(doc.data, doc.len, org) != 0)
        err = PAYMENT_STORE_EINTERNAL;
    buf_free(&doc);
    return err;
}

/* The payment's organisation into org when an empty page did not show it:
 * from its first event, or, when the history retention took every event
 * of a payment still live, from the payment itself (its history is then an
 * empty page, not a 404).  0, ENOTFOUND for a payment without either, or a
 * store error. */
static int history_org(struct payment_api *api, const char *id, char org[UUID_STR_LEN + 1])
{
    struct buf b = BUF_INIT;
    struct history_out o = {.b = &b};
    int more = 0;
    int err = history_read(api, id, -1, 1, &o, &more);
    buf_free(&b);
    if (err == PAYMENT_STORE_OK && o.count == 0)
        return history_live_org(api, id, org);
    if (err == PAYMENT_STORE_OK)
        memcpy(org, o.org, UUID_STR_LEN + 1);
    return err;
}

/* After a read that returned err and found the payment of organisation
 * org: whether the answer goes on.  Answers a store error, and the 404 of
 * an unknown payment when the caller may not see org.  1 to go on, or 0
 * (answered). */
static int history_answerable(http_request *req, int err, const char *org)
{
    if (err == PAYMENT_STORE_OK && auth_allows(api_principal(req), org))
        return 1;
    api_respond_store_error(req, err != PAYMENT_STORE_OK ? err : PAYMENT_STORE_ENOTFOUND, -1);
    return 0;
}

/* Reads payment id's history page (history_read) into o, and answers
 * (freeing o->b) unless the caller may see it: when the page does not hold
 * what was asked for (any event, or with want_version >= 0 that version),
 * the payment's organisation comes from the payment itself.  1 to go on,
 * or 0 (answered). */
static int history_read_visible(http_request *req, struct payment_api *api, const char *id,
                                int64_t after, uint32_t limit, struct history_out *o,
                                int *more, int64_t want_version)
{
    int err = history_read(api, id, after, limit, o, more);
    int held = want_version < 0 ? o->count > 0
                                : o->count == 1 && o->last_version == want_version;
    if (err == PAYMENT_STORE_OK && !held)
        err = history_org(api, id, o->org); /* is there a payment? */
    if (history_answerable(req, err, o->org))
        return 1;
    buf_free(o->b);
    return 0;
}

/* Appends "name":"<public url>/v1/payments/<id>/history?page[size]=N
 * [&page[after]=V]" to b. */
static void history_link(struct buf *b, const struct payment_api *api, const char *name,
                         const char *id, uint32_t size, int has_after, int64_t after)
{
    buf_printf(b, "\"%s\":\"", name);
    buf_json_escape(b, api->public_url, strlen(api->public_url));
    buf_printf(b, "/v1/payments/%s/history?page[size]=%" PRIu32, id, size);
    if (has_after)
        buf_printf(b, "&page[after]=%" PRId64, after);
    buf_puts(b, "\"");
}

void api_payments_history(http_request *req, void *ctx)
{
    struct payment_api *api = ctx;
    if (api_offload(req, api_payments_history, api_may_block(api, 0)))
        return;
    struct history_query q = {.after = -1, .size = HISTORY_PAGE_DEFAULT};
    int rc = http_request_query_each(req, history_param, &q);
    if (rc != 0) {
        if (rc > 0)
            respond_bad_param(req, q.bad, q.why);
        else
            api_respond_internal(req);
        return;
    }
    char id[UUID_STR_LEN + 1];
    api_path_id(req, id);
    struct buf b = BUF_INIT;
    struct history_out o = {.b = &b};
    int more = 0;
    buf_puts(&b, "{\"data\":[");
    if (!history_read_visible(req, api, id, q.after, q.size, &o, &more, -1))
        return;
    buf_puts(&b, "],\"links\":{");
    history_link(&b, api, "self", id, q.size, q.has_after, q.after);
    if (more) {
        buf_puts(&b, ",");
        history_link(&b, api, "next", id, q.size, 1, o.last_version);
    }
    buf_puts(&b, "}}");
    http_respond_buf(req, 200, &b);
}

/* The {version} of the path, after its payment id: 0, or -1 after
 * answering 400. */
static int path_version(http_request *req, int64_t *version)
{
    size_t len = 0;
    const char *s = http_path_segment(http_request_path(req), 4, &len);
    if (s && http_parse_version(s, len, version) == 0)
        return 0;
    respond_bad_param(req, "version", "must be a version: a non-negative integer");
    return -1;
}

void api_payments_history_version(http_request *req, void *ctx)
{
    struct payment_api *api = ctx;
    if (api_offload(req, api_payments_history_version, api_may_block(api, 0)))
        return;
    int64_t version;
    if (path_version(req, &version) != 0)
        return;
    char id[UUID_STR_LEN + 1];
    api_path_id(req, id);
    struct buf b = BUF_INIT;
    struct history_out o = {.b = &b};
    int more = 0;
    buf_puts(&b, "{\"data\":");
    if (!history_read_visible(req, api, id, version - 1, 1, &o, &more, version))
        return;
    if (o.count != 1 || o.last_version != version) {
        buf_free(&b);
        http_respond_error(req, 404, "not_found", "the payment has no such version", NULL);
        return;
    }
    buf_puts(&b, ",\"links\":{\"self\":\"");
    buf_json_escape(&b, api->public_url, strlen(api->public_url));
    buf_printf(&b, "/v1/payments/%s/history/%" PRId64 "\"}}", id, version);
    http_respond_buf(req, 200, &b);
}
