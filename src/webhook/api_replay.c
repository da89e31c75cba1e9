/* api_replay: POST /v1/webhooks/{id}/replay {"data": {"from", "to"}}: every
 * event the endpoint is owed (its organisation's, of its types, above its
 * after_pos) that occurred in [from, to) made due again now, each
 * delivery existing for it reset to pending (its attempts kept), the
 * missing ones made; then the deliverer is woken.
 *
 * One request's work is bounded: the feed is read once to count the
 * events (at most WH_REPLAY_EVENTS_MAX, else 400 asking for a narrower
 * range, nothing done), then again, up to the last position counted, to
 * make the deliveries a feed page at a time (payment_store_deliveries_add
 * with reset, the dispatcher's position left alone).  Each page is one
 * store step: a failure midway leaves the pages before it replayed, which
 * a retry of the request makes again harmlessly. */
#include "webhook/api_internal.h"

#include <stdlib.h>
#include <string.h>

#include "core/clock.h"

#define REPLAY_PAGE 1000 /* events a feed read, and a store step, holds */
_Static_assert(REPLAY_PAGE <= PAYMENT_EVENTS_PAGE_MAX, "a feed page");

/* The range asked for. */
struct replay_range {
    int64_t from_ms;
    int64_t to_ms;
};

/* One page of deliveries being made. */
struct replay_page {
    const struct payment_webhook *w;
    int64_t last_pos;                       /* events above this are not replayed */
    struct payment_delivery_new d[REPLAY_PAGE];
    struct buf bodies[REPLAY_PAGE];         /* the deliveries' bodies, owned */
    size_t n;
    size_t page_seen;                       /* events the store passed in this page */
    size_t counted;                         /* the count pass: events seen */
    int64_t max_pos;                        /* the count pass: the last one's position */
    int failed;                             /* out of memory, or no random source */
};

/* ---- the body ------------------------------------------------------------ */

/* data.from or data.to: 0 with *ms, or -1 after recording the problem. */
static int range_time(json_t *data, const char *key, const char *field, int64_t *ms,
                      json_t *errors)
{
    const char *s = json_string_value(json_object_get(data, key));
    if (s && wh_parse_time(s, ms) == 0)
        return 0;
    json_array_append_new(errors,
                          json_pack("{s:s, s:s}", "field", field, "message",
                                    s || json_object_get(data, key)
                                        ? "must be an RFC 3339 date-time such as "
                                          "2026-12-01T10:00:00Z"
                                        : "is required: an RFC 3339 date-time"));
    return -1;
}

/* The range in the body: 0, or -1 after answering 400. */
static int read_range(http_request *req, struct replay_range *r)
{
    json_t *root = wh_read_body(req);
    if (!root)
        return -1;
    json_t *data = json_object_get(root, "data");
    json_t *errors = json_array();
    if (!errors) {
        json_decref(root);
        wh_respond_internal(req);
        return -1;
    }
    int from_ok = range_time(data, "from", "data.from", &r->from_ms, errors) == 0;
    int to_ok = range_time(data, "to", "data.to", &r->to_ms, errors) == 0;
    if (from_ok && to_ok && r->from_ms >= r->to_ms)
        json_array_append_new(errors, json_pack("{s:s, s:s}", "field", "data.from", "message",
                                                "must be before data.to"));
    const char *key;
    json_t *v;
    json_object_foreach(data, key, v) {
        if (strcmp(key, "from") != 0 && strcmp(key, "to") != 0 && strcmp(key, "type") != 0) {
            char field[160];
            snprintf(field, sizeof field, "data.%.100s", key);
            json_array_append_new(errors, json_pack("{s:s, s:s}", "field", field, "message",
                                                    "is not a member of a replay: from, to"));
        }
    }
    int rc = 0;
    if (json_array_size(errors) > 0) {
        wh_respond_invalid(req, errors);
        rc = -1;
    }
    json_decref(errors);
    json_decref(root);
    return rc;
}

/* ---- the feed ------------------------------------------------------------ */

static int count_event(void *arg, const struct payment_event *ev)
{
    struct replay_page *pg = arg;
    pg->page_seen++;
    if (ev->pos <= pg->w->after_pos)
        return 0; /* before the endpoint: never owed */
    pg->counted++;
    pg->max_pos = ev->pos;
    return 0;
}

static int add_event(void *arg, const struct payment_event *ev)
{
    struct replay_page *pg = arg;
    struct uuid u;
    pg->page_seen++;
    if (ev->pos <= pg->w->after_pos || ev->pos > pg->last_pos)
        return 0;
    struct payment_delivery_new *d = &pg->d[pg->n];
    struct buf *body = &pg->bodies[pg->n];
    if (uuid_v7_generate(clock_now_ms(), &u) != 0 || webhook_event_body(ev, body) != 0) {
        pg->failed = 1;
        return 1;
    }
    uuid_format(&u, d->id);
    memcpy(d->webhook_id, pg->w->id, sizeof d->webhook_id);
    memcpy(d->event_id, ev->id, sizeof d->event_id);
    d->event_pos = ev->pos;
    d->body = body->data;
    d->body_len = body->len;
    pg->n++;
    return 0;
}

static void page_clear(struct replay_page *pg)
{
    for (size_t i = 0; i < pg->n; i++)
        buf_free(&pg->bodies[i]);
    pg->n = 0;
}

/* Reads the endpoint's events of r, a feed page at a time from its
 * after_pos, passing each to fn; with make, each page's deliveries are
 * made.  Stops after max_pos, or once more than WH_REPLAY_EVENTS_MAX were
 * counted.  Returns 0 or a store error. */
static int walk(struct webhook_api *api, struct replay_page *pg, const struct replay_range *r,
                payment_store_event_fn fn, int make, int64_t now)
{
    char org[1][UUID_STR_LEN + 1];
    memcpy(org[0], pg->w->organisation_id, sizeof org[0]);
    struct payment_event_query q = {
        .after_pos = pg->w->after_pos,
        .limit = REPLAY_PAGE,
        .n_orgs = 1,
        .orgs = (const char(*)[UUID_STR_LEN + 1])org,
        .types = pg->w->types,
        .from_ms = r->from_ms,
        .to_ms = r->to_ms,
    };
    for (;;) {
        int64_t next = q.after_pos;
        pg->page_seen = 0;
        int err = payment_store_events(api->store, &q, fn, pg, &next);
        if (err == PAYMENT_STORE_EEXPIRED && q.after_pos > 0 && q.after_pos == pg->w->after_pos) {
            q.after_pos = 0; /* the feed starts after the endpoint: all of it is owed */
            continue;
        }
        if (pg->failed || err > 0)
            err = PAYMENT_STORE_EINTERNAL;
        if (err == PAYMENT_STORE_OK && make && pg->n > 0)
            err = payment_store_deliveries_add(api->store, -1, 0, pg->d, pg->n, 1, now);
        page_clear(pg);
        if (err != PAYMENT_STORE_OK)
            return err;
        if (pg->page_seen < REPLAY_PAGE || next <= q.after_pos)
            return 0; /* the end of the feed */
        if (pg->counted > WH_REPLAY_EVENTS_MAX || (make && next >= pg->last_pos))
            return 0;
        q.after_pos = next;
    }
}

void wh_replay(http_request *req, void *ctx)
{
    struct webhook_api *api = ctx;
    if (wh_offload(req, wh_replay))
        return;
    char id[UUID_STR_LEN + 1];
    struct replay_range r;
    struct wh_endpoint e;
    wh_path_id(req, id);
    if (read_range(req, &r) != 0 || wh_endpoint_load(req, api, id, &e) != 0)
        return;
    struct replay_page *pg = calloc(1, sizeof *pg);
    if (!pg) {
        wh_endpoint_free(&e);
        wh_respond_internal(req);
        return;
    }
    pg->w = &e.w;
    int64_t now = clock_now_ms();
    int err = walk(api, pg, &r, count_event, 0, now);
    if (err == PAYMENT_STORE_OK && pg->counted > WH_REPLAY_EVENTS_MAX) {
        wh_respond_one_invalid(req, "data.from",
                               "the range holds more than 10000 of the endpoint's events; "
                               "replay a narrower range at a time");
        goto out;
    }
    pg->last_pos = pg->max_pos;
    if (err == PAYMENT_STORE_OK && pg->counted > 0)
        err = walk(api, pg, &r, add_event, 1, now);
    if (err != PAYMENT_STORE_OK) {
        wh_respond_store_error(req, err, -1);
        goto out;
    }
    char from[CLOCK_TIMESTAMP_LEN + 1], to[CLOCK_TIMESTAMP_LEN + 1];
    clock_format_ms(r.from_ms, from);
    clock_format_ms(r.to_ms, to);
    struct buf b = BUF_INIT;
    buf_printf(&b,
               "{\"data\":{\"type\":\"webhook_replays\",\"webhook_id\":\"%s\",\"from\":\"%s\","
               "\"to\":\"%s\",\"events\":%zu},\"links\":{\"deliveries\":\"",
               id, from, to, pg->counted);
    wh_append_url(&b, api, id, "/deliveries");
    buf_puts(&b, "\"}}");
    http_respond_buf(req, 202, &b);
    if (api->wake && pg->counted > 0)
        api->wake(api->wake_ctx);
out:
    free(pg);
    wh_endpoint_free(&e);
}
