/* api_events: GET /v1/events, the change feed: every event of the caller's
 * organisations in commit order, paged by position (page[after]), filtered,
 * and, with wait=N, a long poll: a request whose page is empty is parked
 * (feed_wait.h) until events may have come or N seconds pass, then reads
 * again.  No thread waits meanwhile; with a store that may block, every
 * read runs on the server's blocking pool, as the other reads do.
 *
 * Every page carries links.next, the last one included: page[after] at the
 * position the store gives (payment_store_events' next_pos) with the same
 * filters, size and wait, so that a consumer at the end of the feed holds
 * the cursor to wait on.  Positions are plain integers: a consumer may store
 * one and start from it, or from 0 for the oldest event kept.
 *
 * Threads and errors: as every handler (api_internal.h).  The handler is
 * its own continuation: each time a parked request wakes, it parses its
 * query and reads again; what must last across (the deadline, its place
 * among the waiters) is the request's state (struct events_wait). */
#include "payment/api_internal.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "payment/event.h"
#include "payment/feed_wait.h"
#include "payment/query.h"

#define EVENTS_PAGE_SIZE_DEFAULT 100
#define EVENTS_WAIT_MAX_S 30 /* wait=N: seconds, 0..this */
#define EVENTS_MAX_ORGS PAYMENT_QUERY_MAX_VALUES

_Static_assert(AUTH_MAX_ORGS <= EVENTS_MAX_ORGS, "a key's organisations fit a query's");

/* The parameters, in the order links give them. */
enum events_param {
    EP_ORG,
    EP_TYPE,
    EP_PAYMENT,
    EP_FROM,
    EP_TO,
    EP_SIZE,
    EP_AFTER,
    EP_WAIT,
    EP_COUNT,
};

static const char *const events_param_names[EP_COUNT] = {
    [EP_ORG] = "filter[organisation_id]",
    [EP_TYPE] = "filter[event_type]",
    [EP_PAYMENT] = "filter[payment_id]",
    [EP_FROM] = "filter[occurred_at][from]",
    [EP_TO] = "filter[occurred_at][to]",
    [EP_SIZE] = "page[size]",
    [EP_AFTER] = "page[after]",
    [EP_WAIT] = "wait",
};

/* A feed request's query, parsed. */
struct events_query {
    size_t n_orgs;                                  /* filter[organisation_id]; 0: none */
    char orgs[EVENTS_MAX_ORGS][UUID_STR_LEN + 1];   /* lower case */
    unsigned types;                                 /* payment_event_type bits; 0: all */
    char payment_id[UUID_STR_LEN + 1];              /* "" when not filtered */
    int64_t from_ms;                                /* INT64_MIN: no bound */
    int64_t to_ms;                                  /* INT64_MAX: no bound */
    uint32_t size;                                  /* page[size] */
    int64_t after;                                  /* page[after] */
    int wait_s;                                     /* wait; 0 when not given */
    unsigned seen;                                  /* bit per events_param given */
    struct buf errors;                              /* {"field","message"} items, comma-joined */
    size_t n_errors;                                /* items in errors */
    char unknown[128];                              /* the first unknown parameter, "" if none */
};

/* A waiting request's state: freed with the request. */
struct events_wait {
    struct payment_api *api;   /* its feed_wait, which the request entered */
    int64_t deadline_us;       /* monotonic: answered by then, events or not */
    struct feed_waiter waiter; /* its place while parked */
};

/* ---- the query ---------------------------------------------------------- */

static void events_error(struct events_query *q, enum events_param p, const char *message)
{
    if (q->n_errors++)
        buf_puts(&q->errors, ",");
    buf_printf(&q->errors, "{\"field\":\"%s\",\"message\":\"", events_param_names[p]);
    buf_json_escape(&q->errors, message, strlen(message));
    buf_puts(&q->errors, "\"}");
}

/* Digits only, no sign, at most max: 0 and *out, or -1. */
static int parse_count(const char *s, int64_t max, int64_t *out)
{
    int64_t n = 0;
    if (*s == '\0')
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || n > (max - (*s - '0')) / 10)
            return -1;
        n = n * 10 + (*s - '0');
    }
    *out = n;
    return 0;
}

/* The digits s[0..n) as a number (they were checked already). */
static int64_t digits(const char *s, size_t n)
{
    int64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

/* An RFC 3339 date-time into ms since the epoch: 0, or -1.  A fraction
 * finer than a millisecond rounds up, which keeps both bounds exact for
 * events stamped to the millisecond: occurred_ms >= t exactly when
 * occurred_ms >= ceil(t), and likewise for <. */
static int parse_datetime(const char *s, int64_t *ms)
{
    size_t len = strlen(s);
    int y, m, d;
    if (!clock_is_datetime(s, len) || clock_parse_date(s, CLOCK_DATE_LEN, &y, &m, &d) != 0)
        return -1;
    int64_t t = clock_date_to_ms(y, m, d) +
                ((digits(s + 11, 2) * 60 + digits(s + 14, 2)) * 60 + digits(s + 17, 2)) * 1000;
    size_t i = 19;
    if (s[i] == '.') {
        size_t start = ++i;
        while (s[i] >= '0' && s[i] <= '9')
            i++;
        int64_t frac = 0;
        int finer = 0;
        for (size_t k = start; k < i; k++) {
            if (k - start < 3)
                frac = frac * 10 + (s[k] - '0');
            else
                finer |= s[k] != '0';
        }
        for (size_t k = i - start; k < 3; k++)
            frac *= 10;
        t += frac + finer;
    }
    if (s[i] == '+' || s[i] == '-') {
        int64_t off = (digits(s + i + 1, 2) * 60 + digits(s + i + 4, 2)) * 60000;
        t += s[i] == '+' ? -off : off;
    }
    *ms = t;
    return 0;
}

/* Splits a comma list, calling fn on each item (len bytes at s); empty
 * items and more than max are refused.  Returns 0, or -1 with the reason
 * in *why. */
static int split_list(const char *v, size_t max, int (*fn)(struct events_query *, const char *,
                                                           size_t),
                      struct events_query *q, const char **why)
{
    size_t n = 0;
    for (const char *s = v;;) {
        size_t len = strcspn(s, ",");
        if (len == 0) {
            *why = "empty value in the list";
            return -1;
        }
        if (++n > max) {
            *why = "too many values";
            return -1;
        }
        if (fn(q, s, len) != 0) {
            *why = NULL;
            return -1;
        }
        if (s[len] == '\0')
            return 0;
        s += len + 1;
    }
}

static int add_org(struct events_query *q, const char *s, size_t len)
{
    if (uuid_canonical(s, len, q->orgs[q->n_orgs]) != 0)
        return -1;
    q->n_orgs++;
    return 0;
}

static int add_type(struct events_query *q, const char *s, size_t len)
{
    enum payment_event_type t;
    if (payment_event_type_parse(s, len, &t) != 0)
        return -1;
    q->types |= (unsigned)t;
    return 0;
}

/* Parses one parameter's value into q: 0, or -1 after recording why. */
static int events_param_value(struct events_query *q, enum events_param p, const char *v)
{
    const char *why = NULL;
    int64_t n = 0;
    switch (p) {
    case EP_ORG:
        if (split_list(v, EVENTS_MAX_ORGS, add_org, q, &why) != 0)
            why = why ? why : "must be a comma-separated list of organisation UUIDs";
        break;
    case EP_TYPE:
        if (split_list(v, 3, add_type, q, &why) != 0)
            why = why ? why
                      : "must be a comma-separated list of payment.created, payment.updated, "
                        "payment.deleted";
        break;
    case EP_PAYMENT:
        if (uuid_canonical(v, strlen(v), q->payment_id) != 0)
            why = "must be a payment UUID";
        break;
    case EP_FROM:
    case EP_TO:
        if (parse_datetime(v, p == EP_FROM ? &q->from_ms : &q->to_ms) != 0)
            why = "must be an RFC 3339 date-time such as 2026-12-01T10:00:00Z";
        break;
    case EP_SIZE:
        if (parse_count(v, PAYMENT_EVENTS_PAGE_MAX, &n) != 0 || n == 0)
            why = "must be an integer from 1 to 1000";
        q->size = (uint32_t)n;
        break;
    case EP_AFTER:
        if (parse_count(v, INT64_MAX, &q->after) != 0)
            why = "must be a feed position: an integer, 0 or more";
        break;
    case EP_WAIT:
        if (parse_count(v, EVENTS_WAIT_MAX_S, &n) != 0)
            why = "must be a number of seconds from 0 to 30";
        q->wait_s = (int)n;
        break;
    case EP_COUNT:
        assert(!"no such parameter");
        break;
    }
    if (why)
        events_error(q, p, why);
    return why ? -1 : 0;
}

static int events_param(void *arg, const char *key, const char *value)
{
    struct events_query *q = arg;
    enum events_param p = 0;
    while (p < EP_COUNT && strcmp(events_param_names[p], key) != 0)
        p++;
    if (p == EP_COUNT) {
        if (!q->unknown[0])
            snprintf(q->unknown, sizeof q->unknown, "%s", key);
        return 0;
    }
    if (q->seen & (1u << p))
        events_error(q, p, "is given more than once");
    else if (!value || !*value)
        events_error(q, p, "is empty");
    else
        events_param_value(q, p, value);
    q->seen |= 1u << p;
    return 0;
}

static void events_query_init(struct events_query *q)
{
    memset(q, 0, sizeof *q);
    q->from_ms = INT64_MIN;
    q->to_ms = INT64_MAX;
    q->size = EVENTS_PAGE_SIZE_DEFAULT;
    q->errors = (struct buf)BUF_INIT;
}

/* Parses the request's query into q.  Returns 0, or -1 after answering
 * 400: bad_request for an unknown parameter (as the payments list), else
 * validation_failed naming every parameter refused. */
static int events_query_parse(http_request *req, struct events_query *q)
{
    events_query_init(q);
    int rc = http_request_query_each(req, events_param, q);
    assert(rc == 0);
    (void)rc;
    if (q->from_ms != INT64_MIN && q->to_ms != INT64_MAX && q->from_ms >= q->to_ms)
        events_error(q, EP_FROM, "must be before filter[occurred_at][to]");
    if (q->unknown[0]) {
        char msg[192];
        snprintf(msg, sizeof msg, "unknown query parameter '%s'", q->unknown);
        http_respond_error(req, 400, "bad_request", msg, NULL);
        return -1;
    }
    if (q->n_errors == 0)
        return 0;
    if (buf_failed(&q->errors)) {
        api_respond_internal(req);
        return -1;
    }
    struct buf extra = BUF_INIT;
    char msg[96];
    buf_printf(&extra, "\"errors\":[%s]", q->errors.data);
    snprintf(msg, sizeof msg, "the query is not valid: %zu problem%s", q->n_errors,
             q->n_errors == 1 ? "" : "s");
    if (buf_failed(&extra))
        api_respond_internal(req);
    else
        http_respond_error(req, 400, "validation_failed", msg, extra.data);
    buf_free(&extra);
    return -1;
}

/* ---- tenancy ------------------------------------------------------------ */

/* Fills the store's query from q, with the organisations p may see: as
 * the payments list, the filter given less those p may not act for, or
 * all of p's when none was given; nothing at all when none is left.
 * orgs is where the store's list of organisations is kept. */
static void events_store_query(const struct events_query *q, const struct auth_principal *p,
                               char (*orgs)[UUID_STR_LEN + 1], struct payment_event_query *sq)
{
    memset(sq, 0, sizeof *sq);
    sq->after_pos = q->after;
    sq->limit = q->size;
    sq->types = q->types;
    sq->payment_id = q->payment_id[0] ? q->payment_id : NULL;
    sq->from_ms = q->from_ms;
    sq->to_ms = q->to_ms;
    sq->n_orgs = auth_visible_orgs(p, (const char(*)[UUID_STR_LEN + 1])q->orgs, q->n_orgs, orgs,
                                   &sq->all_orgs);
    sq->orgs = (const char(*)[UUID_STR_LEN + 1])orgs;
}

/* ---- the page ----------------------------------------------------------- */

/* Where the events of a page are rendered. */
struct events_page {
    struct buf *b;
    size_t count;
};

/* events_row's stop when the page's buffer ran out of memory: positive, so
 * that it is never taken for one of the store's errors. */
#define EVENTS_STOP_NO_MEMORY 1

static int events_row(void *arg, const struct payment_event *ev)
{
    struct events_page *pg = arg;
    if (pg->count++)
        buf_puts(pg->b, ",");
    return payment_event_render(ev, pg->b) != 0 ? EVENTS_STOP_NO_MEMORY : 0;
}

/* Appends "name":"<public url>/v1/events?<q's filters, size, page[after]=after,
 * wait>" to b. */
static void append_link(struct buf *b, const struct payment_api *api, const char *name,
                        const struct events_query *q, int64_t after)
{
    char at[CLOCK_TIMESTAMP_LEN + 1];
    buf_printf(b, "\"%s\":\"", name);
    buf_json_escape(b, api->public_url, strlen(api->public_url));
    buf_puts(b, "/v1/events?");
    for (size_t i = 0; i < q->n_orgs; i++)
        buf_printf(b, "%s%s", i ? "," : "filter[organisation_id]=", q->orgs[i]);
    if (q->types) {
        const char *sep = q->n_orgs ? "&filter[event_type]=" : "filter[event_type]=";
        for (unsigned t = PAYMENT_EVENT_CREATED; t <= PAYMENT_EVENT_DELETED; t <<= 1) {
            if (q->types & t) {
                buf_printf(b, "%s%s", sep, payment_event_type_name((enum payment_event_type)t));
                sep = ",";
            }
        }
    }
    int any = q->n_orgs || q->types;
    if (q->payment_id[0]) {
        buf_printf(b, "%sfilter[payment_id]=%s", any ? "&" : "", q->payment_id);
        any = 1;
    }
    if (q->from_ms != INT64_MIN) {
        clock_format_ms(q->from_ms, at);
        buf_printf(b, "%sfilter[occurred_at][from]=%s", any ? "&" : "", at);
        any = 1;
    }
    if (q->to_ms != INT64_MAX) {
        clock_format_ms(q->to_ms, at);
        buf_printf(b, "%sfilter[occurred_at][to]=%s", any ? "&" : "", at);
        any = 1;
    }
    buf_printf(b, "%spage[size]=%" PRIu32 "&page[after]=%" PRId64, any ? "&" : "", q->size,
               after);
    if (q->seen & (1u << EP_WAIT))
        buf_printf(b, "&wait=%d", q->wait_s);
    buf_puts(b, "\"");
}

/* Reads the page q names, as p may see it, into b ({"data":[... so far).
 * Returns the store's answer, PAYMENT_STORE_EINTERNAL when b ran out of
 * memory; sets *count and *next_pos. */
static int events_read(struct payment_api *api, const struct events_query *q,
                       const struct auth_principal *p, struct buf *b, size_t *count,
                       int64_t *next_pos)
{
    char orgs[EVENTS_MAX_ORGS][UUID_STR_LEN + 1];
    struct payment_event_query sq;
    events_store_query(q, p, orgs, &sq);
    struct events_page pg = {b, 0};
    int err = payment_store_events(api->store, &sq, events_row, &pg, next_pos);
    *count = pg.count;
    return err == EVENTS_STOP_NO_MEMORY ? PAYMENT_STORE_EINTERNAL : err;
}

static void events_respond_error(http_request *req, int err)
{
    if (err == PAYMENT_STORE_EEXPIRED)
        http_respond_error(req, 410, "cursor_expired",
                           "the events after this position are no longer kept; start again from "
                           "page[after]=0 (the oldest event kept) or from a recent position",
                           NULL);
    else
        api_respond_store_error(req, err, -1);
}

/* ---- waiting ------------------------------------------------------------ */

static void events_wait_free(void *p)
{
    struct events_wait *w = p;
    feed_wait_leave(w->api->feed);
    free(w);
}

/* Parks req, whose page was empty, when it asked to wait and may still:
 * 1 when parked (the handler returns at once), 0 when the empty page is
 * the answer (its wait is over, or the server is shutting down), -1 after
 * answering 503 (too many waiting, or out of memory). */
static int events_park(http_request *req, struct payment_api *api, const struct events_query *q,
                       uint64_t epoch)
{
    if (q->wait_s == 0 || !api->feed)
        return 0;
    struct events_wait *w = http_request_state(req);
    if (!w) {
        int rc = feed_wait_enter(api->feed);
        if (rc == FEED_WAIT_ECLOSED)
            return 0;
        if (rc == FEED_WAIT_EFULL) {
            http_respond_error(req, 503, "server_busy",
                               "too many requests are waiting on the event feed; retry later",
                               NULL);
            return -1;
        }
        if (!(w = calloc(1, sizeof *w))) {
            feed_wait_leave(api->feed);
            api_respond_internal(req);
            return -1;
        }
        w->api = api;
        w->deadline_us = clock_mono_us() + q->wait_s * INT64_C(1000000);
        http_request_set_state(req, w, events_wait_free);
    }
    if (clock_mono_us() >= w->deadline_us)
        return 0;
    return feed_wait_park(api->feed, req, &w->waiter, epoch, w->deadline_us,
                          api_events_list) == FEED_WAIT_OK;
}

/* ---- the handler -------------------------------------------------------- */

void api_events_list(http_request *req, void *ctx)
{
    struct payment_api *api = ctx;
    if (api_offload(req, api_events_list, api_may_block(api, 0)))
        return;
    struct events_query q;
    if (events_query_parse(req, &q) != 0) {
        buf_free(&q.errors);
        return;
    }
    buf_free(&q.errors);
    uint64_t epoch = api->feed ? feed_wait_epoch(api->feed) : 0;
    struct buf b = BUF_INIT;
    size_t count = 0;
    int64_t next_pos = q.after;
    buf_puts(&b, "{\"data\":[");
    int err = events_read(api, &q, api_principal(req), &b, &count, &next_pos);
    if (err != PAYMENT_STORE_OK) {
        buf_free(&b);
        events_respond_error(req, err);
        return;
    }
    if (count == 0) {
        int parked = events_park(req, api, &q, epoch);
        if (parked != 0) {
            buf_free(&b); /* parked: req may be answered and gone by now */
            return;
        }
    }
    buf_puts(&b, "],\"links\":{");
    append_link(&b, api, "self", &q, q.after);
    buf_puts(&b, ",");
    append_link(&b, api, "next", &q, next_pos);
    buf_puts(&b, "}}");
    http_respond_buf(req, 200, &b);
}
