/* The webhooks contract (store.h, "webhooks: endpoints and their
 * deliveries"), written against any backend: each case takes an opened,
 * empty store from the runners of store_fixture.h, on SQLite and, when
 * PAYMENTD_TEST_MONGO_URI names a server, on MongoDB, and when
 * PAYMENTD_TEST_PG_URI names one, on PostgreSQL.
 *
 * Endpoints: create, get, update, delete and list with versions and
 * conflicts; the per-organisation limit; after_pos at the feed's end;
 * failing_since_ms kept, set and cleared.  Deliveries: made once per
 * (endpoint, event) with the dispatcher's position as a compare-and-set,
 * replayed by reset; leased by claims (never to two owners, due ones only,
 * earliest first); attempts recorded only under the lease, appended in
 * order; retried; listed with filters and pages; counted; purged; deleted
 * with their endpoint; all of it kept across a close and an open.
 *
 * The last cases are the embedded store's and PostgreSQL's: two stores on
 * one file (one schema), claiming and recording from four threads (two per
 * store) with short leases, never hold one delivery at once and lose none;
 * a read called from its own callback is refused without upsetting the
 * outer one (PostgreSQL's, whose rows are the client's before the first
 * callback, answers it); a store of schema version 6 opens migrated. */
#include "payment/store.h"

#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/uuid.h"
#include "payment/store_impl.h"
#include "store_fixture.h"
#include "store_waiter.h"
#include "test.h"

/* ---- endpoints ------------------------------------------------------------ */

/* An endpoint to write and the document it borrows. */
struct wh {
    struct payment_webhook w;
    char doc[96];
};

static void org_id(char out[UUID_STR_LEN + 1], int n)
{
    snprintf(out, UUID_STR_LEN + 1, "0a0a0a0a-0000-4000-8000-%012d", n);
}

static void wh_id(char out[UUID_STR_LEN + 1], int n)
{
    snprintf(out, UUID_STR_LEN + 1, "01900000-0000-7000-8000-%012d", n);
}

static void wh_doc(struct wh *h, const char *tag)
{
    int len = snprintf(h->doc, sizeof h->doc, "{\"id\":%d,\"v\":%lld,\"tag\":\"%s\"}",
                       atoi(h->w.id + 24), (long long)h->w.version, tag);
    h->w.doc = h->doc;
    h->w.doc_len = (size_t)len;
}

/* Endpoint n of organisation org, enabled, version 0, made at ms. */
static void wh_init(struct wh *h, int n, int org, int64_t ms)
{
    memset(h, 0, sizeof *h);
    wh_id(h->w.id, n);
    org_id(h->w.organisation_id, org);
    h->w.created_ms = h->w.modified_ms = ms;
    h->w.enabled = 1;
    h->w.types = PAYMENT_EVENT_CREATED | PAYMENT_EVENT_UPDATED;
    h->w.after_pos = -7;        /* the store's to set */
    h->w.failing_since_ms = -7; /* likewise */
    wh_doc(h, "created");
}

/* An endpoint as read, copied out of the callback. */
struct wh_seen {
    char id[UUID_STR_LEN + 1];
    char org[UUID_STR_LEN + 1];
    int64_t version, created_ms, modified_ms, after_pos, failing_since_ms;
    int enabled;
    unsigned types;
    char doc[96];
};

struct wh_list {
    struct wh_seen e[64];
    size_t n;
};

/* A payment_store_webhook_fn; arg is a wh_list. */
static int wh_add(void *arg, const struct payment_webhook *w)
{
    struct wh_list *l = arg;
    CHECK(l->n < sizeof l->e / sizeof l->e[0]);
    if (l->n >= sizeof l->e / sizeof l->e[0])
        return 1;
    struct wh_seen *e = &l->e[l->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->id, sizeof e->id, "%s", w->id);
    snprintf(e->org, sizeof e->org, "%s", w->organisation_id);
    e->version = w->version;
    e->created_ms = w->created_ms;
    e->modified_ms = w->modified_ms;
    e->after_pos = w->after_pos;
    e->failing_since_ms = w->failing_since_ms;
    e->enabled = w->enabled;
    e->types = w->types;
    CHECK(w->doc != NULL && w->doc_len < sizeof e->doc);
    if (w->doc && w->doc_len < sizeof e->doc)
        memcpy(e->doc, w->doc, w->doc_len);
    return 0;
}

/* Reads endpoint id into *out: the store's answer. */
static int wh_get(payment_store *s, const char *id, struct wh_seen *out)
{
    struct wh_list l = {.n = 0};
    int err = payment_store_webhook_get(s, id, wh_add, &l);
    if (err == PAYMENT_STORE_OK) {
        CHECK_INT(l.n, 1);
        *out = l.e[0];
    }
    return err;
}

/* The failing_since_ms endpoint id holds now. */
static int64_t wh_failing(payment_store *s, const char *id)
{
    struct wh_seen e;
    CHECK_INT(wh_get(s, id, &e), PAYMENT_STORE_OK);
    return e.failing_since_ms;
}

/* Lists q into l; returns the store's answer, *more its flag. */
static int wh_list(payment_store *s, const struct payment_webhook_query *q, struct wh_list *l,
                   int *more)
{
    l->n = 0;
    *more = -1;
    return payment_store_webhooks_list(s, q, wh_add, l, more);
}

/* got[0..got_n) are the ids numbered want[0..n) by id_of, in that order;
 * else says at line what was verb (listed, read) and what was expected. */
static void check_ids_line(const char *const *got, size_t got_n,
                           void (*id_of)(char[UUID_STR_LEN + 1], int), const int *want, size_t n,
                           const char *verb, int line)
{
    int ok = got_n == n;
    for (size_t i = 0; ok && i < n; i++) {
        char id[UUID_STR_LEN + 1];
        id_of(id, want[i]);
        ok = strcmp(got[i], id) == 0;
    }
    if (!ok) {
        fprintf(stderr, "  line %d: %s", line, verb);
        for (size_t i = 0; i < got_n; i++)
            fprintf(stderr, " %d", atoi(got[i] + 24));
        fprintf(stderr, "; expected");
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %d", want[i]);
        fprintf(stderr, "\n");
    }
    CHECK(ok);
}

/* l holds the endpoints numbered want[0..n), in that order. */
static void check_wh_ids_line(const struct wh_list *l, const int *want, size_t n, int line)
{
    const char *got[sizeof l->e / sizeof l->e[0]];
    for (size_t i = 0; i < l->n; i++)
        got[i] = l->e[i].id;
    check_ids_line(got, l->n, wh_id, want, n, "listed", line);
}

#define CHECK_WH_IDS(l, ...)                                                                  \
    do {                                                                                      \
        const int want_[] = {__VA_ARGS__};                                                    \
        check_wh_ids_line((l), want_, sizeof want_ / sizeof want_[0], __LINE__);              \
    } while (0)

/* ---- payments, for the feed --------------------------------------------------- */

/* Creates payment n of organisation 1, which records its event. */
static void pay_create(payment_store *s, int n)
{
    struct payment_row row;
    memset(&row, 0, sizeof row);
    snprintf(row.id, sizeof row.id, "00000000-0000-4000-8000-%012d", n);
    org_id(row.organisation_id, 1);
    row.created_ms = row.modified_ms = 1000 + n;
    row.doc = "{}";
    row.doc_len = 2;
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_create(s, &row, NULL, NULL, waiter_done, &w);
    waiter_wait(&w);
    CHECK_INT(w.err, PAYMENT_STORE_OK);
}

struct last_pos {
    int64_t pos;
};

static int last_pos_add(void *arg, const struct payment_event *ev)
{
    ((struct last_pos *)arg)->pos = ev->pos;
    return 0;
}

/* The position of the newest event of the feed (0 when none). */
static int64_t feed_last(payment_store *s)
{
    struct payment_event_query q = {.after_pos = 0, .limit = PAYMENT_EVENTS_PAGE_MAX,
                                    .all_orgs = 1, .from_ms = INT64_MIN, .to_ms = INT64_MAX};
    struct last_pos lp = {0};
    for (int i = 0; i < 1000; i++) {
        int64_t next = -1;
        CHECK_INT(payment_store_events(s, &q, last_pos_add, &lp, &next), PAYMENT_STORE_OK);
        if (next <= q.after_pos)
            break;
        q.after_pos = next;
    }
    return lp.pos;
}

/* ---- deliveries ---------------------------------------------------------------- */

static void dl_id(char out[UUID_STR_LEN + 1], int n)
{
    snprintf(out, UUID_STR_LEN + 1, "01910000-0000-7000-8000-%012d", n);
}

static void ev_id(char out[UUID_STR_LEN + 1], int n)
{
    snprintf(out, UUID_STR_LEN + 1, "01920000-0000-7000-8000-%012d", n);
}

/* A delivery to make and the body it borrows. */
struct dl {
    struct payment_delivery_new d;
    char body[64];
};

/* Delivery n of event ev to endpoint wh. */
static void dl_init(struct dl *x, int n, int wh, int ev)
{
    memset(x, 0, sizeof *x);
    dl_id(x->d.id, n);
    wh_id(x->d.webhook_id, wh);
    ev_id(x->d.event_id, ev);
    x->d.event_pos = ev;
    int len = snprintf(x->body, sizeof x->body, "{\"event\":%d}", ev);
    x->d.body = x->body;
    x->d.body_len = (size_t)len;
}

/* Makes one delivery, the position left alone. */
static int dl_add1(payment_store *s, int n, int wh, int ev, int64_t now_ms)
{
    struct dl x;
    dl_init(&x, n, wh, ev);
    return payment_store_deliveries_add(s, -1, 0, &x.d, 1, 0, now_ms);
}

/* A delivery as read, copied out of the callback. */
struct dl_seen {
    char id[UUID_STR_LEN + 1];
    char webhook_id[UUID_STR_LEN + 1];
    char event_id[UUID_STR_LEN + 1];
    int64_t event_pos;
    int status;
    int attempts;
    int64_t created_ms, next_ms;
    char attempts_json[2048];
    char body[64];
};

struct dl_list {
    struct dl_seen *e;
    size_t n, cap;
};

/* A payment_store_delivery_fn; arg is a dl_list. */
static int dl_add(void *arg, const struct payment_delivery *d)
{
    struct dl_list *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        struct dl_seen *grown = realloc(l->e, cap * sizeof *grown);
        CHECK(grown != NULL);
        if (!grown)
            return 1;
        l->e = grown;
        l->cap = cap;
    }
    struct dl_seen *e = &l->e[l->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->id, sizeof e->id, "%s", d->id);
    snprintf(e->webhook_id, sizeof e->webhook_id, "%s", d->webhook_id);
    snprintf(e->event_id, sizeof e->event_id, "%s", d->event_id);
    e->event_pos = d->event_pos;
    e->status = (int)d->status;
    e->attempts = d->attempts;
    e->created_ms = d->created_ms;
    e->next_ms = d->next_ms;
    CHECK(d->attempts_json && strlen(d->attempts_json) < sizeof e->attempts_json);
    snprintf(e->attempts_json, sizeof e->attempts_json, "%s",
             d->attempts_json ? d->attempts_json : "");
    CHECK(d->body != NULL && d->body_len < sizeof e->body);
    if (d->body && d->body_len < sizeof e->body)
        memcpy(e->body, d->body, d->body_len);
    return 0;
}

static void dl_free(struct dl_list *l)
{
    free(l->e);
    memset(l, 0, sizeof *l);
}

/* Claims for owner into l (emptied first): the store's answer. */
static int dl_claim(payment_store *s, const char *owner, int64_t now_ms, int64_t lease_ms,
                    uint32_t max, struct dl_list *l)
{
    l->n = 0;
    return payment_store_deliveries_claim(s, owner, now_ms, lease_ms, max, dl_add, l);
}

/* Lists endpoint wh's deliveries of statuses into l (emptied first). */
static int dl_list(payment_store *s, int wh, unsigned statuses, const char *after_id,
                   uint32_t limit, struct dl_list *l, int *more)
{
    char id[UUID_STR_LEN + 1];
    wh_id(id, wh);
    struct payment_delivery_query q = {.webhook_id = id, .statuses = statuses,
                                       .after_id = after_id, .limit = limit};
    l->n = 0;
    *more = -1;
    return payment_store_deliveries_list(s, &q, dl_add, l, more);
}

/* Delivery n of endpoint wh as stored: 0, or -1 when it is not listed. */
static int dl_find(payment_store *s, int wh, int n, struct dl_seen *out)
{
    struct dl_list l = {0};
    int more;
    CHECK_INT(dl_list(s, wh, 0, NULL, PAYMENT_WEBHOOKS_PAGE_MAX, &l, &more), PAYMENT_STORE_OK);
    char id[UUID_STR_LEN + 1];
    dl_id(id, n);
    int found = -1;
    for (size_t i = 0; i < l.n; i++) {
        if (strcmp(l.e[i].id, id) == 0) {
            *out = l.e[i];
            found = 0;
        }
    }
    dl_free(&l);
    return found;
}

/* l holds the deliveries numbered want[0..n), in that order. */
static void check_dl_ids_line(const struct dl_list *l, const int *want, size_t n, int line)
{
    const char **got = calloc(l->n ? l->n : 1, sizeof *got);
    CHECK(got != NULL);
    if (!got)
        return;
    for (size_t i = 0; i < l->n; i++)
        got[i] = l->e[i].id;
    check_ids_line(got, l->n, dl_id, want, n, "read", line);
    free(got);
}

#define CHECK_DL_IDS(l, ...)                                                                  \
    do {                                                                                      \
        const int want_[] = {__VA_ARGS__};                                                    \
        check_dl_ids_line((l), want_, sizeof want_ / sizeof want_[0], __LINE__);              \
    } while (0)

#define CHECK_DL_NONE(l) CHECK_INT((l)->n, 0)

/* The JSON text got means the same as want (whatever its spacing). */
static void check_json_line(const char *got, const char *want, int line)
{
    json_error_t e;
    json_t *a = json_loads(got, 0, &e), *b = json_loads(want, 0, &e);
    int ok = a && b && json_equal(a, b);
    if (!ok)
        fprintf(stderr, "  line %d: JSON %s, expected %s\n", line, got, want);
    CHECK(ok);
    json_decref(a);
    json_decref(b);
}

#define CHECK_JSON(got, want) check_json_line((got), (want), __LINE__)

/* Records attempt_json on delivery n of endpoint wh for owner. */
static int dl_record(payment_store *s, int wh, int n, const char *owner, const char *attempt_json,
                     enum payment_delivery_status status, int64_t next_ms, int succeeded,
                     int64_t at_ms, int64_t *failing)
{
    char did[UUID_STR_LEN + 1], wid[UUID_STR_LEN + 1];
    dl_id(did, n);
    wh_id(wid, wh);
    struct payment_delivery_attempt a = {.delivery_id = did, .webhook_id = wid, .owner = owner,
                                         .attempt_json = attempt_json, .status = status,
                                         .next_ms = next_ms, .succeeded = succeeded,
                                         .at_ms = at_ms};
    return payment_store_delivery_record(s, &a, failing);
}

static int dl_retry(payment_store *s, int wh, int n, int64_t now_ms)
{
    char did[UUID_STR_LEN + 1], wid[UUID_STR_LEN + 1];
    dl_id(did, n);
    wh_id(wid, wh);
    return payment_store_delivery_retry(s, wid, did, now_ms);
}

/* Creates endpoint n of organisation org. */
static void wh_make(payment_store *s, int n, int org)
{
    struct wh h;
    wh_init(&h, n, org, 1000 + n);
    CHECK_INT(payment_store_webhook_create(s, &h.w), PAYMENT_STORE_OK);
}

/* ---- endpoints: create, get, update, delete --------------------------------- */

static void case_endpoint_crud(struct fixture *fx)
{
    payment_store *s = fx->s;
    struct wh h;
    wh_init(&h, 1, 1, 5000);
    CHECK_INT(payment_store_webhook_create(s, &h.w), PAYMENT_STORE_OK);
    CHECK_INT(h.w.after_pos, 0); /* an empty feed */
    CHECK_INT(h.w.failing_since_ms, 0);
    struct wh_seen e;
    CHECK_INT(wh_get(s, h.w.id, &e), PAYMENT_STORE_OK);
    CHECK_STR(e.id, h.w.id);
    CHECK_STR(e.org, h.w.organisation_id);
    CHECK_INT(e.version, 0);
    CHECK_INT(e.created_ms, 5000);
    CHECK_INT(e.modified_ms, 5000);
    CHECK_INT(e.enabled, 1);
    CHECK_INT(e.types, PAYMENT_EVENT_CREATED | PAYMENT_EVENT_UPDATED);
    CHECK_INT(e.after_pos, 0);
    CHECK_INT(e.failing_since_ms, 0);
    CHECK_STR(e.doc, h.doc);

    /* the id is taken, whatever else the second one says */
    struct wh again;
    wh_init(&again, 1, 2, 6000);
    CHECK_INT(payment_store_webhook_create(s, &again.w), PAYMENT_STORE_EDUPLICATE);
    CHECK_INT(wh_get(s, h.w.id, &e), PAYMENT_STORE_OK);
    CHECK_STR(e.org, h.w.organisation_id);
    CHECK_INT(e.created_ms, 5000);

    /* an update replaces document, enabled and types; the rest stays */
    struct wh u = h;
    u.w.version = 1;
    u.w.modified_ms = 7000;
    u.w.created_ms = 1;                    /* kept as stored */
    org_id(u.w.organisation_id, 9);        /* likewise */
    u.w.after_pos = 12345;                 /* likewise */
    u.w.failing_since_ms = 777;            /* likewise */
    u.w.enabled = 0;
    u.w.types = PAYMENT_EVENT_DELETED;
    wh_doc(&u, "updated");
    CHECK_INT(payment_store_webhook_update(s, &u.w, 0), PAYMENT_STORE_OK);
    CHECK_INT(wh_get(s, h.w.id, &e), PAYMENT_STORE_OK);
    CHECK_INT(e.version, 1);
    CHECK_INT(e.modified_ms, 7000);
    CHECK_INT(e.created_ms, 5000);
    CHECK_STR(e.org, h.w.organisation_id);
    CHECK_INT(e.after_pos, 0);
    CHECK_INT(e.failing_since_ms, 0);
    CHECK_INT(e.enabled, 0);
    CHECK_INT(e.types, PAYMENT_EVENT_DELETED);
    CHECK_STR(e.doc, u.doc);

    /* a stale version conflicts and changes nothing */
    struct wh stale = h;
    stale.w.version = 1;
    wh_doc(&stale, "stale");
    CHECK_INT(payment_store_webhook_update(s, &stale.w, 0), PAYMENT_STORE_ECONFLICT);
    CHECK_INT(wh_get(s, h.w.id, &e), PAYMENT_STORE_OK);
    CHECK_STR(e.doc, u.doc);
    /* an unknown id is not found, whatever the version */
    struct wh unknown;
    wh_init(&unknown, 2, 1, 5000);
    unknown.w.version = 4;
    CHECK_INT(payment_store_webhook_update(s, &unknown.w, 3), PAYMENT_STORE_ENOTFOUND);
    CHECK_INT(wh_get(s, unknown.w.id, &e), PAYMENT_STORE_ENOTFOUND);

    /* delete: a stale version conflicts with the stored one given */
    int64_t cur = -5;
    CHECK_INT(payment_store_webhook_delete(s, h.w.id, 0, &cur), PAYMENT_STORE_ECONFLICT);
    CHECK_INT(cur, 1);
    CHECK_INT(wh_get(s, h.w.id, &e), PAYMENT_STORE_OK);
    CHECK_INT(payment_store_webhook_delete(s, h.w.id, 1, &cur), PAYMENT_STORE_OK);
    CHECK_INT(wh_get(s, h.w.id, &e), PAYMENT_STORE_ENOTFOUND);
    CHECK_INT(payment_store_webhook_delete(s, h.w.id, -1, NULL), PAYMENT_STORE_ENOTFOUND);
    CHECK_INT(payment_store_webhook_delete(s, h.w.id, 5, &cur), PAYMENT_STORE_ENOTFOUND);
    u.w.version = 2;
    CHECK_INT(payment_store_webhook_update(s, &u.w, 1), PAYMENT_STORE_ENOTFOUND);

    /* -1 deletes whatever the version */
    wh_make(s, 3, 1);
    CHECK_INT(payment_store_webhook_delete(s, unknown.w.id, -1, NULL), PAYMENT_STORE_ENOTFOUND);
    char id3[UUID_STR_LEN + 1];
    wh_id(id3, 3);
    CHECK_INT(payment_store_webhook_delete(s, id3, -1, &cur), PAYMENT_STORE_OK);
    CHECK_INT(wh_get(s, id3, &e), PAYMENT_STORE_ENOTFOUND);
}

/* At most PAYMENT_WEBHOOKS_PER_ORG_MAX per organisation; others unaffected;
 * a deletion makes room. */
static void case_endpoint_limit(struct fixture *fx)
{
    payment_store *s = fx->s;
    for (int i = 1; i <= PAYMENT_WEBHOOKS_PER_ORG_MAX; i++)
        wh_make(s, i, 1);
    struct wh h;
    wh_init(&h, 100, 1, 1000);
    CHECK_INT(payment_store_webhook_create(s, &h.w), PAYMENT_STORE_ELIMIT);
    struct wh_seen e;
    CHECK_INT(wh_get(s, h.w.id, &e), PAYMENT_STORE_ENOTFOUND);
    wh_make(s, 101, 2);
    char id[UUID_STR_LEN + 1];
    wh_id(id, 7);
    CHECK_INT(payment_store_webhook_delete(s, id, -1, NULL), PAYMENT_STORE_OK);
    CHECK_INT(payment_store_webhook_create(s, &h.w), PAYMENT_STORE_OK);
    struct wh h2;
    wh_init(&h2, 102, 1, 1000);
    CHECK_INT(payment_store_webhook_create(s, &h2.w), PAYMENT_STORE_ELIMIT);
}

/* after_pos is the feed's end when the endpoint commits: the events before
 * it are at or below, the ones after above. */
static void case_after_pos(struct fixture *fx)
{
    payment_store *s = fx->s;
    pay_create(s, 1);
    pay_create(s, 2);
    int64_t before = feed_last(s);
    CHECK(before > 0);
    struct wh h;
    wh_init(&h, 1, 1, 1000);
    CHECK_INT(payment_store_webhook_create(s, &h.w), PAYMENT_STORE_OK);
    CHECK_INT(h.w.after_pos, before);
    struct wh_seen e;
    CHECK_INT(wh_get(s, h.w.id, &e), PAYMENT_STORE_OK);
    CHECK_INT(e.after_pos, before);
    pay_create(s, 3);
    int64_t after = feed_last(s);
    CHECK(after > h.w.after_pos);
    /* the feed read from after_pos holds exactly the later event */
    struct payment_event_query q = {.after_pos = h.w.after_pos, .limit = 10, .all_orgs = 1,
                                    .from_ms = INT64_MIN, .to_ms = INT64_MAX};
    struct last_pos lp = {0};
    int64_t next = -1;
    CHECK_INT(payment_store_events(s, &q, last_pos_add, &lp, &next), PAYMENT_STORE_OK);
    CHECK_INT(lp.pos, after);
    /* a second endpoint starts at the new end */
    wh_init(&h, 2, 1, 1000);
    CHECK_INT(payment_store_webhook_create(s, &h.w), PAYMENT_STORE_OK);
    CHECK_INT(h.w.after_pos, after);
}

enum { QUEUED_PAYMENTS = 64 };

/* An endpoint created while payments queued before it are still being
 * written (in its batch, or in those before it) starts above all their
 * events: they committed with it or before it. */
static void case_after_pos_queued(struct fixture *fx)
{
    payment_store *s = fx->s;
    static struct payment_row rows[QUEUED_PAYMENTS];
    struct waiter w;
    waiter_init(&w, QUEUED_PAYMENTS);
    for (int i = 0; i < QUEUED_PAYMENTS; i++) {
        memset(&rows[i], 0, sizeof rows[i]);
        snprintf(rows[i].id, sizeof rows[i].id, "00000000-0000-4000-8000-%012d", 100 + i);
        org_id(rows[i].organisation_id, 1);
        rows[i].created_ms = rows[i].modified_ms = 1000 + i;
        rows[i].doc = "{}";
        rows[i].doc_len = 2;
        payment_store_create(s, &rows[i], NULL, NULL, waiter_done, &w);
    }
    struct wh h;
    wh_init(&h, 1, 1, 1000);
    CHECK_INT(payment_store_webhook_create(s, &h.w), PAYMENT_STORE_OK);
    waiter_wait(&w);
    CHECK_INT(w.failed, 0);
    CHECK_INT(feed_last(s), h.w.after_pos);
}

/* Lists in id order with the organisation and enabled filters, in pages. */
static void case_list_endpoints(struct fixture *fx)
{
    payment_store *s = fx->s;
    wh_make(s, 5, 1);
    wh_make(s, 1, 2);
    wh_make(s, 3, 1);
    wh_make(s, 2, 1);
    wh_make(s, 4, 3);
    struct wh off;
    wh_init(&off, 6, 2, 1000);
    off.w.enabled = 0;
    CHECK_INT(payment_store_webhook_create(s, &off.w), PAYMENT_STORE_OK);

    struct wh_list l;
    int more;
    struct payment_webhook_query q = {.limit = 100, .all_orgs = 1};
    CHECK_INT(wh_list(s, &q, &l, &more), PAYMENT_STORE_OK);
    CHECK_WH_IDS(&l, 1, 2, 3, 4, 5, 6);
    CHECK_INT(more, 0);
    if (l.n == 6) {
        CHECK_INT(l.e[5].enabled, 0);
        CHECK_INT(l.e[0].enabled, 1);
        CHECK_STR(l.e[2].doc, "{\"id\":3,\"v\":0,\"tag\":\"created\"}");
    }

    /* pages of 2 */
    q.limit = 2;
    CHECK_INT(wh_list(s, &q, &l, &more), PAYMENT_STORE_OK);
    CHECK_WH_IDS(&l, 1, 2);
    CHECK_INT(more, 1);
    char after[UUID_STR_LEN + 1];
    wh_id(after, 4);
    q.after_id = after;
    CHECK_INT(wh_list(s, &q, &l, &more), PAYMENT_STORE_OK);
    CHECK_WH_IDS(&l, 5, 6);
    CHECK_INT(more, 0);
    wh_id(after, 6);
    CHECK_INT(wh_list(s, &q, &l, &more), PAYMENT_STORE_OK);
    CHECK_INT(l.n, 0);
    CHECK_INT(more, 0);

    /* enabled only */
    q = (struct payment_webhook_query){.limit = 100, .all_orgs = 1, .enabled_only = 1};
    CHECK_INT(wh_list(s, &q, &l, &more), PAYMENT_STORE_OK);
    CHECK_WH_IDS(&l, 1, 2, 3, 4, 5);

    /* organisations */
    char orgs[2][UUID_STR_LEN + 1];
    org_id(orgs[0], 1);
    org_id(orgs[1], 2);
    q = (struct payment_webhook_query){.limit = 100, .n_orgs = 1, .orgs = orgs};
    CHECK_INT(wh_list(s, &q, &l, &more), PAYMENT_STORE_OK);
    CHECK_WH_IDS(&l, 2, 3, 5);
    q.n_orgs = 2;
    CHECK_INT(wh_list(s, &q, &l, &more), PAYMENT_STORE_OK);
    CHECK_WH_IDS(&l, 1, 2, 3, 5, 6);
    q.enabled_only = 1;
    q.limit = 3;
    CHECK_INT(wh_list(s, &q, &l, &more), PAYMENT_STORE_OK);
    CHECK_WH_IDS(&l, 1, 2, 3);
    CHECK_INT(more, 1);
    wh_id(after, 3);
    q.after_id = after;
    CHECK_INT(wh_list(s, &q, &l, &more), PAYMENT_STORE_OK);
    CHECK_WH_IDS(&l, 5);
    CHECK_INT(more, 0);
    q = (struct payment_webhook_query){.limit = 100, .n_orgs = 0, .orgs = orgs};
    CHECK_INT(wh_list(s, &q, &l, &more), PAYMENT_STORE_OK);
    CHECK_INT(l.n, 0);
}

/* ---- deliveries: made with the position ------------------------------------- */

static void case_deliveries_add(struct fixture *fx)
{
    payment_store *s = fx->s;
    wh_make(s, 1, 1);
    wh_make(s, 2, 1);
    int64_t pos = -1;
    CHECK_INT(payment_store_dispatch_pos(s, &pos), PAYMENT_STORE_OK);
    CHECK_INT(pos, 0);

    struct dl x[4];
    dl_init(&x[0], 1, 1, 10);
    dl_init(&x[1], 2, 2, 10);
    dl_init(&x[2], 3, 1, 11);
    struct payment_delivery_new d[3] = {x[0].d, x[1].d, x[2].d};
    CHECK_INT(payment_store_deliveries_add(s, 0, 11, d, 3, 0, 5000), PAYMENT_STORE_OK);
    CHECK_INT(payment_store_dispatch_pos(s, &pos), PAYMENT_STORE_OK);
    CHECK_INT(pos, 11);

    struct dl_list l = {0};
    int more;
    CHECK_INT(dl_list(s, 1, 0, NULL, 10, &l, &more), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 1, 3);
    if (l.n == 2) {
        struct dl_seen *e = &l.e[0];
        CHECK_STR(e->webhook_id, x[0].d.webhook_id);
        CHECK_STR(e->event_id, x[0].d.event_id);
        CHECK_INT(e->event_pos, 10);
        CHECK_INT(e->status, PAYMENT_DELIVERY_PENDING);
        CHECK_INT(e->attempts, 0);
        CHECK_INT(e->created_ms, 5000);
        CHECK_INT(e->next_ms, 5000);
        CHECK_JSON(e->attempts_json, "[]");
        CHECK_STR(e->body, "{\"event\":10}");
    }

    /* a stale position: nothing made, the position unchanged */
    dl_init(&x[3], 4, 1, 12);
    CHECK_INT(payment_store_deliveries_add(s, 0, 12, &x[3].d, 1, 0, 6000),
              PAYMENT_STORE_ECONFLICT);
    CHECK_INT(payment_store_dispatch_pos(s, &pos), PAYMENT_STORE_OK);
    CHECK_INT(pos, 11);
    CHECK_INT(dl_list(s, 1, 0, NULL, 10, &l, &more), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 1, 3);
    CHECK_INT(payment_store_deliveries_add(s, 12, 13, &x[3].d, 1, 0, 6000),
              PAYMENT_STORE_ECONFLICT);

    /* one (endpoint, event) is made once, whatever id the second one has;
     * the position moves, also with no delivery at all */
    struct dl dup;
    dl_init(&dup, 9, 1, 10);
    struct payment_delivery_new d2[2] = {dup.d, x[3].d};
    CHECK_INT(payment_store_deliveries_add(s, 11, 12, d2, 2, 0, 6000), PAYMENT_STORE_OK);
    CHECK_INT(dl_list(s, 1, 0, NULL, 10, &l, &more), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 1, 3, 4);
    if (l.n == 3)
        CHECK_INT(l.e[0].next_ms, 5000);
    CHECK_INT(payment_store_deliveries_add(s, 12, 20, NULL, 0, 0, 6000), PAYMENT_STORE_OK);
    CHECK_INT(payment_store_dispatch_pos(s, &pos), PAYMENT_STORE_OK);
    CHECK_INT(pos, 20);

    /* reset (a replay, the position left alone): an existing delivery is due
     * again at now, its attempts kept; a new one is made */
    CHECK_INT(dl_claim(s, "a", 5000, 60000, 1, &l), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 1);
    CHECK_INT(dl_record(s, 1, 1, "a", "{\"n\":1}", PAYMENT_DELIVERY_SUCCEEDED, 0, 1, 5001, NULL),
              PAYMENT_STORE_OK);
    struct dl fresh;
    dl_init(&fresh, 5, 1, 13);
    struct payment_delivery_new d3[2] = {dup.d, fresh.d};
    CHECK_INT(payment_store_deliveries_add(s, -1, 0, d3, 2, 1, 8000), PAYMENT_STORE_OK);
    CHECK_INT(payment_store_dispatch_pos(s, &pos), PAYMENT_STORE_OK);
    CHECK_INT(pos, 20);
    struct dl_seen e;
    CHECK_INT(dl_find(s, 1, 1, &e), 0);
    CHECK_INT(e.status, PAYMENT_DELIVERY_PENDING);
    CHECK_INT(e.next_ms, 8000);
    CHECK_INT(e.attempts, 1);
    CHECK_JSON(e.attempts_json, "[{\"n\":1}]");
    CHECK_INT(e.created_ms, 5000);
    CHECK_INT(dl_find(s, 1, 9, &e), -1);
    CHECK_INT(dl_find(s, 1, 5, &e), 0);
    CHECK_INT(e.next_ms, 8000);
    /* without reset, a replay of an existing one changes nothing */
    CHECK_INT(payment_store_deliveries_add(s, -1, 0, &x[2].d, 1, 0, 9000), PAYMENT_STORE_OK);
    CHECK_INT(dl_find(s, 1, 3, &e), 0);
    CHECK_INT(e.next_ms, 5000);
    dl_free(&l);
}

/* ---- claims ------------------------------------------------------------------ */

/* A payment_store_delivery_fn answering 7; arg counts its calls. */
static int stop_at_first(void *arg, const struct payment_delivery *d)
{
    (void)d;
    ++*(int *)arg;
    return 7;
}

static void case_claim(struct fixture *fx)
{
    payment_store *s = fx->s;
    wh_make(s, 1, 1);
    /* due at 3000, 1000, 2000, 1000 (ids 4 < 2: the tie goes by id) */
    CHECK_INT(dl_add1(s, 1, 1, 1, 3000), PAYMENT_STORE_OK);
    CHECK_INT(dl_add1(s, 4, 1, 2, 1000), PAYMENT_STORE_OK);
    CHECK_INT(dl_add1(s, 3, 1, 3, 2000), PAYMENT_STORE_OK);
    CHECK_INT(dl_add1(s, 2, 1, 4, 1000), PAYMENT_STORE_OK);

    struct dl_list l = {0};
    CHECK_INT(dl_claim(s, "a", 999, 500, 10, &l), PAYMENT_STORE_OK);
    CHECK_DL_NONE(&l); /* none due yet */
    CHECK_INT(dl_claim(s, "a", 2500, 500, 2, &l), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 2, 4);
    if (l.n == 2) {
        CHECK_STR(l.e[0].body, "{\"event\":4}");
        CHECK_JSON(l.e[0].attempts_json, "[]");
        CHECK_INT(l.e[0].attempts, 0);
        CHECK_INT(l.e[0].status, PAYMENT_DELIVERY_PENDING);
    }
    /* the rest due at 2500 is the third; not the leased ones */
    CHECK_INT(dl_claim(s, "b", 2500, 500, 10, &l), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 3);
    CHECK_INT(dl_claim(s, "b", 2999, 500, 10, &l), PAYMENT_STORE_OK);
    CHECK_DL_NONE(&l); /* every due one leased until 3000 at least */
    /* at 3000: the first two's leases expire, the fourth is due */
    CHECK_INT(dl_claim(s, "b", 3000, 500, 3, &l), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 2, 4, 3);
    CHECK_INT(dl_claim(s, "c", 3000, 500, 10, &l), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 1);
    CHECK_INT(dl_claim(s, "a", 3499, 500, 10, &l), PAYMENT_STORE_OK);
    CHECK_DL_NONE(&l);
    /* a finished one is never claimed again */
    CHECK_INT(dl_record(s, 1, 2, "b", "{}", PAYMENT_DELIVERY_SUCCEEDED, 0, 1, 3001, NULL),
              PAYMENT_STORE_OK);
    CHECK_INT(dl_record(s, 1, 4, "b", "{}", PAYMENT_DELIVERY_FAILED, 0, 0, 3001, NULL),
              PAYMENT_STORE_OK);
    CHECK_INT(dl_claim(s, "a", 10000, 500, 10, &l), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 3, 1);
    /* a callback's non-zero answer stops the claim and is its answer */
    int calls = 0;
    CHECK_INT(payment_store_deliveries_claim(s, "z", 10500, 500, 10, stop_at_first, &calls), 7);
    CHECK_INT(calls, 1);
    dl_free(&l);
}

/* Records only under the lease; attempts appended in order. */
static void case_record(struct fixture *fx)
{
    payment_store *s = fx->s;
    wh_make(s, 1, 1);
    CHECK_INT(dl_add1(s, 1, 1, 1, 1000), PAYMENT_STORE_OK);
    struct dl_list l = {0};
    CHECK_INT(dl_claim(s, "a", 1000, 100, 10, &l), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 1);

    /* not the lease holder: refused, nothing recorded */
    int64_t failing = -1;
    CHECK_INT(dl_record(s, 1, 1, "b", "{\"by\":\"b\"}", PAYMENT_DELIVERY_SUCCEEDED, 0, 1, 1001,
                        &failing),
              PAYMENT_STORE_ECONFLICT);
    struct dl_seen e;
    CHECK_INT(dl_find(s, 1, 1, &e), 0);
    CHECK_INT(e.attempts, 0);
    CHECK_JSON(e.attempts_json, "[]");
    CHECK_INT(e.status, PAYMENT_DELIVERY_PENDING);
    CHECK_INT(wh_failing(s, e.webhook_id), 0);
    /* unknown delivery, or another endpoint's id */
    CHECK_INT(dl_record(s, 1, 2, "a", "{}", PAYMENT_DELIVERY_FAILED, 0, 0, 1001, NULL),
              PAYMENT_STORE_ENOTFOUND);
    CHECK_INT(dl_record(s, 2, 1, "a", "{}", PAYMENT_DELIVERY_FAILED, 0, 0, 1001, NULL),
              PAYMENT_STORE_ENOTFOUND);

    /* the holder: recorded, pending again at next_ms, the lease freed */
    CHECK_INT(dl_record(s, 1, 1, "a", "{\"n\":1,\"code\":500}", PAYMENT_DELIVERY_PENDING, 1050, 0,
                        1010, &failing),
              PAYMENT_STORE_OK);
    CHECK_INT(failing, 1010);
    CHECK_INT(dl_find(s, 1, 1, &e), 0);
    CHECK_INT(e.attempts, 1);
    CHECK_INT(e.status, PAYMENT_DELIVERY_PENDING);
    CHECK_INT(e.next_ms, 1050);
    CHECK_JSON(e.attempts_json, "[{\"n\":1,\"code\":500}]");
    /* a second record by the old holder: the lease is gone */
    CHECK_INT(dl_record(s, 1, 1, "a", "{\"n\":9}", PAYMENT_DELIVERY_PENDING, 1050, 0, 1011, NULL),
              PAYMENT_STORE_ECONFLICT);
    CHECK_INT(dl_claim(s, "b", 1049, 100, 10, &l), PAYMENT_STORE_OK);
    CHECK_DL_NONE(&l); /* freed but not yet due */
    CHECK_INT(dl_claim(s, "b", 1050, 100, 10, &l), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 1);
    if (l.n == 1) {
        CHECK_INT(l.e[0].attempts, 1);
        CHECK_JSON(l.e[0].attempts_json, "[{\"n\":1,\"code\":500}]");
    }

    /* a lease that expired and was taken: the first holder is refused */
    CHECK_INT(dl_claim(s, "c", 1150, 100, 10, &l), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 1);
    CHECK_INT(dl_record(s, 1, 1, "b", "{\"n\":2,\"by\":\"b\"}", PAYMENT_DELIVERY_PENDING, 2000, 0,
                        1160, NULL),
              PAYMENT_STORE_ECONFLICT);
    CHECK_INT(dl_record(s, 1, 1, "c", "{\"n\":2,\"code\":503}", PAYMENT_DELIVERY_PENDING, 2000, 0,
                        1170, &failing),
              PAYMENT_STORE_OK);
    CHECK_INT(failing, 1010); /* the first failure since the last success */
    /* a lease that expired but was not taken: its holder still records */
    CHECK_INT(dl_claim(s, "d", 2000, 100, 10, &l), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 1);
    CHECK_INT(dl_record(s, 1, 1, "d", "{\"n\":3,\"code\":200}", PAYMENT_DELIVERY_SUCCEEDED, 5000,
                        1, 2500, &failing),
              PAYMENT_STORE_OK);
    CHECK_INT(failing, 0);
    CHECK_INT(dl_find(s, 1, 1, &e), 0);
    CHECK_INT(e.attempts, 3);
    CHECK_INT(e.status, PAYMENT_DELIVERY_SUCCEEDED);
    CHECK_INT(e.next_ms, 0);
    CHECK_JSON(e.attempts_json,
               "[{\"n\":1,\"code\":500},{\"n\":2,\"code\":503},{\"n\":3,\"code\":200}]");
    CHECK_INT(e.created_ms, 1000);
    CHECK_INT(dl_claim(s, "e", 100000, 100, 10, &l), PAYMENT_STORE_OK);
    CHECK_DL_NONE(&l);
    dl_free(&l);
}

/* A batch of records: each decided on its own (the holder's recorded, a
 * lease another holds refused, an unknown delivery not found), the
 * endpoint's failing_since_ms after each in order. */
static void case_record_batch(struct fixture *fx)
{
    payment_store *s = fx->s;
    wh_make(s, 1, 1);
    for (int n = 1; n <= 3; n++)
        CHECK_INT(dl_add1(s, n, 1, n, 1000), PAYMENT_STORE_OK);
    struct dl_list l = {0};
    CHECK_INT(dl_claim(s, "a", 1000, 100, 2, &l), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 1, 2);
    CHECK_INT(dl_claim(s, "b", 1000, 100, 2, &l), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 3);
    char did[4][UUID_STR_LEN + 1], wid[UUID_STR_LEN + 1];
    wh_id(wid, 1);
    for (int i = 0; i < 4; i++)
        dl_id(did[i], i == 3 ? 9 : i + 1);
    struct payment_delivery_attempt a[4];
    for (int i = 0; i < 4; i++)
        a[i] = (struct payment_delivery_attempt){.delivery_id = did[i], .webhook_id = wid,
                                                 .owner = "a", .attempt_json = "{\"code\":500}",
                                                 .status = PAYMENT_DELIVERY_PENDING,
                                                 .next_ms = 2000, .at_ms = 1010 + i};
    a[1].attempt_json = "{\"code\":200}";
    a[1].status = PAYMENT_DELIVERY_SUCCEEDED;
    a[1].succeeded = 1;
    struct payment_delivery_recorded out[4];
    CHECK_INT(payment_store_deliveries_record(s, a, 4, out), PAYMENT_STORE_OK);
    CHECK_INT(out[0].err, PAYMENT_STORE_OK);
    CHECK_INT(out[0].failing_since_ms, 1010);
    CHECK_INT(out[1].err, PAYMENT_STORE_OK);
    CHECK_INT(out[1].failing_since_ms, 0); /* the success after it */
    CHECK_INT(out[2].err, PAYMENT_STORE_ECONFLICT);
    CHECK_INT(out[3].err, PAYMENT_STORE_ENOTFOUND);
    struct dl_seen e;
    CHECK_INT(dl_find(s, 1, 1, &e), 0);
    CHECK_INT(e.status, PAYMENT_DELIVERY_PENDING);
    CHECK_INT(e.next_ms, 2000);
    CHECK_JSON(e.attempts_json, "[{\"code\":500}]");
    CHECK_INT(dl_find(s, 1, 2, &e), 0);
    CHECK_INT(e.status, PAYMENT_DELIVERY_SUCCEEDED);
    CHECK_JSON(e.attempts_json, "[{\"code\":200}]");
    CHECK_INT(dl_find(s, 1, 3, &e), 0);
    CHECK_INT(e.attempts, 0); /* b's lease: nothing recorded */
    CHECK_INT(wh_failing(s, wid), 0);
    dl_free(&l);
}

/* failing_since_ms: set by the first failure, kept by later ones, cleared by
 * a success; kept by an update, cleared by enabling; 0 for a gone endpoint. */
static void case_failing_since(struct fixture *fx)
{
    payment_store *s = fx->s;
    struct wh h;
    wh_init(&h, 1, 1, 1000);
    CHECK_INT(payment_store_webhook_create(s, &h.w), PAYMENT_STORE_OK);
    for (int i = 1; i <= 4; i++)
        CHECK_INT(dl_add1(s, i, 1, i, 1000), PAYMENT_STORE_OK);
    struct dl_list l = {0};
    CHECK_INT(dl_claim(s, "a", 1000, 100000, 10, &l), PAYMENT_STORE_OK);
    CHECK_INT(l.n, 4);
    int64_t failing = -1;
    CHECK_INT(dl_record(s, 1, 1, "a", "{}", PAYMENT_DELIVERY_PENDING, 9000, 0, 2000, &failing),
              PAYMENT_STORE_OK);
    CHECK_INT(failing, 2000);
    CHECK_INT(dl_record(s, 1, 2, "a", "{}", PAYMENT_DELIVERY_FAILED, 0, 0, 3000, &failing),
              PAYMENT_STORE_OK);
    CHECK_INT(failing, 2000);
    CHECK_INT(wh_failing(s, h.w.id), 2000);

    /* an update keeps it; disabling too; enabling clears it */
    h.w.version = 1;
    wh_doc(&h, "renamed");
    CHECK_INT(payment_store_webhook_update(s, &h.w, 0), PAYMENT_STORE_OK);
    CHECK_INT(wh_failing(s, h.w.id), 2000);
    h.w.version = 2;
    h.w.enabled = 0;
    CHECK_INT(payment_store_webhook_update(s, &h.w, 1), PAYMENT_STORE_OK);
    CHECK_INT(wh_failing(s, h.w.id), 2000);
    h.w.version = 3;
    h.w.enabled = 1;
    CHECK_INT(payment_store_webhook_update(s, &h.w, 2), PAYMENT_STORE_OK);
    CHECK_INT(wh_failing(s, h.w.id), 0);

    CHECK_INT(dl_record(s, 1, 3, "a", "{}", PAYMENT_DELIVERY_PENDING, 9000, 0, 4000, &failing),
              PAYMENT_STORE_OK);
    CHECK_INT(failing, 4000);
    CHECK_INT(wh_failing(s, h.w.id), 4000);

    /* the endpoint gone: its deliveries went with it */
    CHECK_INT(payment_store_webhook_delete(s, h.w.id, -1, NULL), PAYMENT_STORE_OK);
    failing = -1;
    CHECK_INT(dl_record(s, 1, 4, "a", "{}", PAYMENT_DELIVERY_FAILED, 0, 0, 5000, &failing),
              PAYMENT_STORE_ENOTFOUND);
    CHECK_INT(failing, 0);
    /* a delivery made for an endpoint that is gone records, with 0 */
    CHECK_INT(dl_add1(s, 5, 1, 5, 6000), PAYMENT_STORE_OK);
    CHECK_INT(dl_claim(s, "a", 6000, 100000, 10, &l), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 5);
    failing = -1;
    CHECK_INT(dl_record(s, 1, 5, "a", "{}", PAYMENT_DELIVERY_FAILED, 0, 0, 6001, &failing),
              PAYMENT_STORE_OK);
    CHECK_INT(failing, 0);
    dl_free(&l);
}

/* A retry makes any delivery pending and due now, its attempts kept. */
static void case_retry(struct fixture *fx)
{
    payment_store *s = fx->s;
    wh_make(s, 1, 1);
    wh_make(s, 2, 1);
    CHECK_INT(dl_add1(s, 1, 1, 1, 1000), PAYMENT_STORE_OK);
    struct dl_list l = {0};
    CHECK_INT(dl_claim(s, "a", 1000, 100, 10, &l), PAYMENT_STORE_OK);
    CHECK_INT(dl_record(s, 1, 1, "a", "{\"n\":1}", PAYMENT_DELIVERY_FAILED, 0, 0, 1001, NULL),
              PAYMENT_STORE_OK);
    CHECK_INT(dl_claim(s, "a", 50000, 100, 10, &l), PAYMENT_STORE_OK);
    CHECK_DL_NONE(&l);
    CHECK_INT(dl_retry(s, 2, 1, 60000), PAYMENT_STORE_ENOTFOUND); /* another endpoint's id */
    CHECK_INT(dl_retry(s, 1, 2, 60000), PAYMENT_STORE_ENOTFOUND);
    CHECK_INT(dl_retry(s, 1, 1, 60000), PAYMENT_STORE_OK);
    struct dl_seen e;
    CHECK_INT(dl_find(s, 1, 1, &e), 0);
    CHECK_INT(e.status, PAYMENT_DELIVERY_PENDING);
    CHECK_INT(e.next_ms, 60000);
    CHECK_INT(e.attempts, 1);
    CHECK_INT(dl_claim(s, "b", 59999, 100, 10, &l), PAYMENT_STORE_OK);
    CHECK_DL_NONE(&l);
    CHECK_INT(dl_claim(s, "b", 60000, 100, 10, &l), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 1);
    /* a succeeded one too; a pending one is due now */
    CHECK_INT(dl_record(s, 1, 1, "b", "{\"n\":2}", PAYMENT_DELIVERY_SUCCEEDED, 0, 1, 60001, NULL),
              PAYMENT_STORE_OK);
    CHECK_INT(dl_retry(s, 1, 1, 70000), PAYMENT_STORE_OK);
    CHECK_INT(dl_find(s, 1, 1, &e), 0);
    CHECK_INT(e.status, PAYMENT_DELIVERY_PENDING);
    CHECK_INT(e.next_ms, 70000);
    CHECK_JSON(e.attempts_json, "[{\"n\":1},{\"n\":2}]");
    CHECK_INT(dl_retry(s, 1, 1, 65000), PAYMENT_STORE_OK);
    CHECK_INT(dl_find(s, 1, 1, &e), 0);
    CHECK_INT(e.next_ms, 65000);
    dl_free(&l);
}

/* Lists one endpoint's, in id order, filtered by status, in pages. */
static void case_list_deliveries(struct fixture *fx)
{
    payment_store *s = fx->s;
    wh_make(s, 1, 1);
    wh_make(s, 2, 1);
    /* 1..6 to endpoint 1, made out of order; 7 to endpoint 2 */
    int order[] = {4, 1, 6, 2, 5, 3};
    for (int i = 0; i < 6; i++)
        CHECK_INT(dl_add1(s, order[i], 1, order[i], 1000), PAYMENT_STORE_OK);
    CHECK_INT(dl_add1(s, 7, 2, 1, 1000), PAYMENT_STORE_OK);
    struct dl_list l = {0};
    CHECK_INT(dl_claim(s, "a", 1000, 100, 10, &l), PAYMENT_STORE_OK);
    CHECK_INT(l.n, 7);
    /* 2 and 5 succeed, 3 fails, the rest stay pending */
    CHECK_INT(dl_record(s, 1, 2, "a", "{}", PAYMENT_DELIVERY_SUCCEEDED, 0, 1, 1001, NULL),
              PAYMENT_STORE_OK);
    CHECK_INT(dl_record(s, 1, 5, "a", "{}", PAYMENT_DELIVERY_SUCCEEDED, 0, 1, 1001, NULL),
              PAYMENT_STORE_OK);
    CHECK_INT(dl_record(s, 1, 3, "a", "{}", PAYMENT_DELIVERY_FAILED, 0, 0, 1001, NULL),
              PAYMENT_STORE_OK);

    int more;
    CHECK_INT(dl_list(s, 1, 0, NULL, 100, &l, &more), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 1, 2, 3, 4, 5, 6);
    CHECK_INT(more, 0);
    CHECK_INT(dl_list(s, 2, 0, NULL, 100, &l, &more), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 7);
    CHECK_INT(dl_list(s, 3, 0, NULL, 100, &l, &more), PAYMENT_STORE_OK);
    CHECK_DL_NONE(&l);
    CHECK_INT(dl_list(s, 1, PAYMENT_DELIVERY_PENDING, NULL, 100, &l, &more), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 1, 4, 6);
    CHECK_INT(dl_list(s, 1, PAYMENT_DELIVERY_SUCCEEDED, NULL, 100, &l, &more), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 2, 5);
    CHECK_INT(dl_list(s, 1, PAYMENT_DELIVERY_SUCCEEDED | PAYMENT_DELIVERY_FAILED, NULL, 100, &l,
                      &more),
              PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 2, 3, 5);
    if (l.n == 3) {
        CHECK_INT(l.e[1].status, PAYMENT_DELIVERY_FAILED);
        CHECK_INT(l.e[1].next_ms, 0);
        CHECK_INT(l.e[1].attempts, 1);
    }

    /* pages */
    CHECK_INT(dl_list(s, 1, 0, NULL, 4, &l, &more), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 1, 2, 3, 4);
    CHECK_INT(more, 1);
    char after[UUID_STR_LEN + 1];
    dl_id(after, 4);
    CHECK_INT(dl_list(s, 1, 0, after, 4, &l, &more), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 5, 6);
    CHECK_INT(more, 0);
    dl_id(after, 1);
    CHECK_INT(dl_list(s, 1, PAYMENT_DELIVERY_PENDING, after, 1, &l, &more), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 4);
    CHECK_INT(more, 1);
    dl_id(after, 4);
    CHECK_INT(dl_list(s, 1, PAYMENT_DELIVERY_PENDING, after, 1, &l, &more), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 6);
    CHECK_INT(more, 0);
    dl_free(&l);
}

/* How many are pending and since when; the purge deletes old finished
 * ones only, more than one batch of them. */
static void case_pending_purge(struct fixture *fx)
{
    payment_store *s = fx->s;
    int64_t count = -1, oldest = -1;
    CHECK_INT(payment_store_deliveries_pending(s, &count, &oldest), PAYMENT_STORE_OK);
    CHECK_INT(count, 0);
    CHECK_INT(oldest, 0);
    wh_make(s, 1, 1);
    enum { OLD = 600 };
    struct dl *x = calloc(OLD, sizeof *x);
    struct payment_delivery_new *d = calloc(OLD, sizeof *d);
    CHECK(x && d);
    if (!x || !d) {
        free(x);
        free(d);
        return;
    }
    for (int i = 0; i < OLD; i++) {
        dl_init(&x[i], 1000 + i, 1, 1000 + i);
        d[i] = x[i].d;
    }
    CHECK_INT(payment_store_deliveries_add(s, -1, 0, d, OLD, 0, 2000), PAYMENT_STORE_OK);
    CHECK_INT(dl_add1(s, 1, 1, 1, 3000), PAYMENT_STORE_OK); /* stays pending */
    CHECK_INT(dl_add1(s, 2, 1, 2, 2500), PAYMENT_STORE_OK); /* fails, late */
    CHECK_INT(payment_store_deliveries_pending(s, &count, &oldest), PAYMENT_STORE_OK);
    CHECK_INT(count, OLD + 2);
    CHECK_INT(oldest, 2000);

    /* the 600 finish (every other one fails), then 2 fails */
    struct dl_list l = {0};
    CHECK_INT(dl_claim(s, "a", 2500, 100000, PAYMENT_WEBHOOKS_PAGE_MAX, &l), PAYMENT_STORE_OK);
    CHECK_INT(l.n, OLD + 1);
    for (int i = 0; i < OLD; i++)
        CHECK_INT(dl_record(s, 1, 1000 + i, "a", "{}",
                            i % 2 ? PAYMENT_DELIVERY_FAILED : PAYMENT_DELIVERY_SUCCEEDED, 0,
                            i % 2 == 0, 2600, NULL),
                  PAYMENT_STORE_OK);
    CHECK_INT(dl_record(s, 1, 2, "a", "{}", PAYMENT_DELIVERY_FAILED, 0, 0, 2600, NULL),
              PAYMENT_STORE_OK);
    CHECK_INT(payment_store_deliveries_pending(s, &count, &oldest), PAYMENT_STORE_OK);
    CHECK_INT(count, 1);
    CHECK_INT(oldest, 3000);

    /* before 2500: the 600, not 2 (made at 2500) nor the pending 1 */
    payment_store_deliveries_purge(s, 2500);
    int more;
    CHECK_INT(dl_list(s, 1, 0, NULL, PAYMENT_WEBHOOKS_PAGE_MAX, &l, &more), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 1, 2);
    /* a pending one is never purged */
    payment_store_deliveries_purge(s, 100000);
    CHECK_INT(dl_list(s, 1, 0, NULL, PAYMENT_WEBHOOKS_PAGE_MAX, &l, &more), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 1);
    CHECK_INT(payment_store_deliveries_pending(s, &count, &oldest), PAYMENT_STORE_OK);
    CHECK_INT(count, 1);
    CHECK_INT(oldest, 3000);
    dl_free(&l);
    free(x);
    free(d);
}

/* Deleting an endpoint deletes its deliveries, not another's. */
static void case_delete_cascades(struct fixture *fx)
{
    payment_store *s = fx->s;
    wh_make(s, 1, 1);
    wh_make(s, 2, 1);
    CHECK_INT(dl_add1(s, 1, 1, 1, 1000), PAYMENT_STORE_OK);
    CHECK_INT(dl_add1(s, 2, 1, 2, 1000), PAYMENT_STORE_OK);
    CHECK_INT(dl_add1(s, 3, 2, 1, 1000), PAYMENT_STORE_OK);
    char id[UUID_STR_LEN + 1];
    wh_id(id, 1);
    int64_t cur = -5;
    CHECK_INT(payment_store_webhook_delete(s, id, 3, &cur), PAYMENT_STORE_ECONFLICT);
    CHECK_INT(cur, 0);
    struct dl_list l = {0};
    int more;
    CHECK_INT(dl_list(s, 1, 0, NULL, 100, &l, &more), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 1, 2); /* a refused delete deletes nothing */
    CHECK_INT(payment_store_webhook_delete(s, id, 0, &cur), PAYMENT_STORE_OK);
    CHECK_INT(dl_list(s, 1, 0, NULL, 100, &l, &more), PAYMENT_STORE_OK);
    CHECK_DL_NONE(&l);
    CHECK_INT(dl_list(s, 2, 0, NULL, 100, &l, &more), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 3);
    int64_t count = -1, oldest = -1;
    CHECK_INT(payment_store_deliveries_pending(s, &count, &oldest), PAYMENT_STORE_OK);
    CHECK_INT(count, 1);
    CHECK_INT(dl_claim(s, "a", 5000, 100, 10, &l), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 3);
    CHECK_INT(dl_retry(s, 1, 1, 6000), PAYMENT_STORE_ENOTFOUND);
    dl_free(&l);
}

/* Everything is kept across a close and an open. */
static void case_reopen(struct fixture *fx)
{
    payment_store *s = fx->s;
    pay_create(s, 1);
    struct wh h;
    wh_init(&h, 1, 1, 1000);
    CHECK_INT(payment_store_webhook_create(s, &h.w), PAYMENT_STORE_OK);
    wh_make(s, 2, 1);
    struct dl x[2];
    dl_init(&x[0], 1, 1, 10);
    dl_init(&x[1], 2, 2, 10);
    struct payment_delivery_new d[2] = {x[0].d, x[1].d};
    CHECK_INT(payment_store_deliveries_add(s, 0, 10, d, 2, 0, 2000), PAYMENT_STORE_OK);
    struct dl_list l = {0};
    CHECK_INT(dl_claim(s, "a", 2000, 60000, 1, &l), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 1);
    CHECK_INT(dl_record(s, 1, 1, "a", "{\"n\":1}", PAYMENT_DELIVERY_PENDING, 3000, 0, 2100, NULL),
              PAYMENT_STORE_OK);
    CHECK_INT(dl_claim(s, "a", 2000, 60000, 1, &l), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 2); /* leased across the reopen */

    payment_store_close(s);
    fx->s = NULL;
    char err[256] = "";
    int rc = payment_store_open(fx->uri, fx->flags, &fx->s, err, sizeof err);
    CHECK_INT(rc, PAYMENT_STORE_OK);
    if (rc != PAYMENT_STORE_OK) {
        fprintf(stderr, "  reopen %s: %s\n", fx->uri, err);
        dl_free(&l);
        return; /* run_opened closes fx->s: make it a store it can close */
    }
    s = fx->s;
    struct wh_seen e;
    CHECK_INT(wh_get(s, h.w.id, &e), PAYMENT_STORE_OK);
    CHECK_INT(e.after_pos, h.w.after_pos);
    CHECK(e.after_pos > 0);
    CHECK_INT(e.failing_since_ms, 2100);
    CHECK_STR(e.doc, h.doc);
    int64_t pos = -1;
    CHECK_INT(payment_store_dispatch_pos(s, &pos), PAYMENT_STORE_OK);
    CHECK_INT(pos, 10);
    struct dl_seen de;
    CHECK_INT(dl_find(s, 1, 1, &de), 0);
    CHECK_INT(de.attempts, 1);
    CHECK_INT(de.next_ms, 3000);
    CHECK_JSON(de.attempts_json, "[{\"n\":1}]");
    CHECK_STR(de.body, "{\"event\":10}");
    /* the lease held: 2 is not claimed before it expires */
    CHECK_INT(dl_claim(s, "b", 3000, 60000, 10, &l), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 1);
    CHECK_INT(dl_claim(s, "b", 62000, 60000, 10, &l), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 2);
    CHECK_INT(dl_record(s, 2, 2, "a", "{}", PAYMENT_DELIVERY_SUCCEEDED, 0, 1, 62001, NULL),
              PAYMENT_STORE_ECONFLICT);
    /* the limit counts the stored ones */
    for (int i = 3; i <= PAYMENT_WEBHOOKS_PER_ORG_MAX; i++)
        wh_make(s, i, 1);
    struct wh over;
    wh_init(&over, 99, 1, 1000);
    CHECK_INT(payment_store_webhook_create(s, &over.w), PAYMENT_STORE_ELIMIT);
    dl_free(&l);
}

/* ---- two stores on one file or schema -------------------------------------- */

enum { RACE_DELIVERIES = 16, RACE_ATTEMPTS = 24, RACE_LEASE_MS = 25, RACE_CLAIM_MAX = 4,
       RACE_THREADS = 4 };

/* One thread claiming and recording for its owner on its own store. */
struct racer {
    payment_store *s;
    const char *owner;
    pthread_t thread;
    int refused;     /* records refused: the lease was taken meanwhile */
    int recorded;
    int early;       /* records refused before their lease's end: another held it too */
    int errors;      /* other failures */
    _Atomic int *done; /* set by the first to see nothing pending */
};

/* A payment_store_delivery_fn keeping the claimed deliveries. */
static int racer_keep(void *arg, const struct payment_delivery *d)
{
    return dl_add(arg, d);
}

/* Records, on each claimed delivery, the attempt {"o":owner,"seen":n} where
 * n is the attempts the claim saw: under a lease no other owner holds,
 * attempt i of a delivery always saw i before it.  A record is refused only
 * once the lease has expired, never before: no other owner was given it.  The last attempt
 * succeeds; the others leave it due at once.  Some sleep past the lease. */
static void *racer_main(void *arg)
{
    struct racer *r = arg;
    struct dl_list l = {0};
    unsigned seed = (unsigned)(uintptr_t)r->owner[0];
    int64_t deadline = clock_mono_us() + 60 * 1000000LL;
    while (!atomic_load(r->done) && clock_mono_us() < deadline) {
        l.n = 0;
        int64_t now = clock_now_ms();
        int err = payment_store_deliveries_claim(r->s, r->owner, now, RACE_LEASE_MS,
                                                 RACE_CLAIM_MAX, racer_keep, &l);
        if (err != PAYMENT_STORE_OK) {
            fprintf(stderr, "  %s: claim: %s\n", r->owner, payment_store_strerror(err));
            r->errors++;
            continue;
        }
        if (l.n == 0) {
            int64_t count = 0, oldest = 0;
            if (payment_store_deliveries_pending(r->s, &count, &oldest) == PAYMENT_STORE_OK &&
                count == 0)
                atomic_store(r->done, 1);
            (void)usleep(500);
            continue;
        }
        for (size_t i = 0; i < l.n; i++) {
            if (rand_r(&seed) % 4 == 0)
                (void)usleep((useconds_t)(rand_r(&seed) % (2 * RACE_LEASE_MS * 1000)));
            char attempt[96];
            snprintf(attempt, sizeof attempt, "{\"o\":\"%s\",\"seen\":%d}", r->owner,
                     l.e[i].attempts);
            int last = l.e[i].attempts + 1 >= RACE_ATTEMPTS;
            struct payment_delivery_attempt a = {
                .delivery_id = l.e[i].id,
                .webhook_id = l.e[i].webhook_id,
                .owner = r->owner,
                .attempt_json = attempt,
                .status = last ? PAYMENT_DELIVERY_SUCCEEDED : PAYMENT_DELIVERY_PENDING,
                .next_ms = clock_now_ms(),
                .succeeded = last,
                .at_ms = clock_now_ms(),
            };
            err = payment_store_delivery_record(r->s, &a, NULL);
            if (err == PAYMENT_STORE_OK) {
                r->recorded++;
            } else if (err == PAYMENT_STORE_ECONFLICT) {
                r->refused++;
                /* Another claim may take the lease only at its end or
                 * later, and it was taken before the refusal returned. */
                if (clock_now_ms() < now + RACE_LEASE_MS)
                    r->early++;
            } else {
                fprintf(stderr, "  %s: record: %s\n", r->owner, payment_store_strerror(err));
                r->errors++;
            }
        }
    }
    dl_free(&l);
    return NULL;
}

/* Attempt i of e saw i attempts before it, whoever made it. */
static int race_attempts_ordered(const struct dl_seen *e, int *owners)
{
    json_error_t je;
    json_t *arr = json_loads(e->attempts_json, 0, &je);
    int ok = arr && json_is_array(arr) && (int)json_array_size(arr) == e->attempts;
    for (size_t i = 0; ok && i < json_array_size(arr); i++) {
        json_t *a = json_array_get(arr, i);
        json_t *seen = json_object_get(a, "seen");
        const char *o = json_string_value(json_object_get(a, "o"));
        ok = json_is_integer(seen) && json_integer_value(seen) == (json_int_t)i && o;
        if (ok)
            *owners |= o[0] == 'A' || o[0] == 'C' ? 1 : 2; /* by store */
    }
    if (!ok)
        fprintf(stderr, "  delivery %s: attempts %d %s\n", e->id, e->attempts, e->attempts_json);
    json_decref(arr);
    return ok;
}

static void case_two_stores_race(struct fixture *fx)
{
    payment_store *s = fx->s, *other = NULL;
    char err[256] = "";
    CHECK_INT(payment_store_open(fx->uri, fx->flags, &other, err, sizeof err), PAYMENT_STORE_OK);
    if (!other)
        return;
    wh_make(s, 1, 1);
    struct dl x[RACE_DELIVERIES];
    struct payment_delivery_new d[RACE_DELIVERIES];
    for (int i = 0; i < RACE_DELIVERIES; i++) {
        dl_init(&x[i], i + 1, 1, i + 1);
        d[i] = x[i].d;
    }
    CHECK_INT(payment_store_deliveries_add(s, 0, RACE_DELIVERIES, d, RACE_DELIVERIES, 0,
                                           clock_now_ms()),
              PAYMENT_STORE_OK);
    _Atomic int done = 0;
    /* two owners per store: A and C on s, B and D on other */
    struct racer r[RACE_THREADS];
    const char *const owners_of[] = {"A", "B", "C", "D"};
    for (int i = 0; i < RACE_THREADS; i++)
        r[i] = (struct racer){.s = i % 2 ? other : s, .owner = owners_of[i], .done = &done};
    for (int i = 0; i < RACE_THREADS; i++)
        CHECK_INT(pthread_create(&r[i].thread, NULL, racer_main, &r[i]), 0);
    int errors = 0, early = 0, recorded = 0;
    for (int i = 0; i < RACE_THREADS; i++) {
        CHECK_INT(pthread_join(r[i].thread, NULL), 0);
        errors += r[i].errors;
        early += r[i].early;
        recorded += r[i].recorded;
        fprintf(stderr, "  race: %s recorded %d, refused %d\n", r[i].owner, r[i].recorded,
                r[i].refused);
    }
    CHECK_INT(atomic_load(&done), 1);
    CHECK_INT(errors, 0);
    CHECK_INT(early, 0);
    CHECK_INT(recorded, RACE_DELIVERIES * RACE_ATTEMPTS);

    struct dl_list l = {0};
    int more;
    CHECK_INT(dl_list(s, 1, 0, NULL, 100, &l, &more), PAYMENT_STORE_OK);
    CHECK_INT(l.n, RACE_DELIVERIES);
    int owners = 0;
    for (size_t i = 0; i < l.n; i++) {
        CHECK_INT(l.e[i].status, PAYMENT_DELIVERY_SUCCEEDED);
        CHECK_INT(l.e[i].attempts, RACE_ATTEMPTS);
        CHECK(race_attempts_ordered(&l.e[i], &owners));
    }
    CHECK_INT(owners, 3); /* both stores took part */
    dl_free(&l);
    payment_store_close(other);
}

/* ---- the embedded store: a read called from its own callback ---------------- */

struct nested {
    payment_store *s;
    int calls;     /* endpoints the outer list passed */
    int inner_err; /* the inner list's answer */
    int get_err;   /* a get's answer, from the callback */
};

static int nested_each(void *arg, const struct payment_webhook *w)
{
    struct nested *n = arg;
    n->calls++;
    struct wh_list l;
    int more;
    struct payment_webhook_query q = {.limit = 10, .all_orgs = 1};
    n->inner_err = wh_list(n->s, &q, &l, &more);
    struct wh_seen e;
    n->get_err = wh_get(n->s, w->id, &e);
    return 0;
}

/* Another read works from a callback; the same read answers inner_want
 * (refused on SQLite, whose statement is in use) and leaves the outer one
 * going, each endpoint passed once. */
static void nested_read_answers(struct fixture *fx, int inner_want)
{
    payment_store *s = fx->s;
    for (int i = 1; i <= 3; i++)
        wh_make(s, i, 1);
    struct nested n = {.s = s, .inner_err = 1, .get_err = 1};
    struct payment_webhook_query q = {.limit = 10, .all_orgs = 1};
    int more = -1;
    CHECK_INT(payment_store_webhooks_list(s, &q, nested_each, &n, &more), PAYMENT_STORE_OK);
    CHECK_INT(n.calls, 3);
    CHECK_INT(n.inner_err, inner_want);
    CHECK_INT(n.get_err, PAYMENT_STORE_OK);
    CHECK_INT(more, 0);
}

static void case_nested_read(struct fixture *fx)
{
    nested_read_answers(fx, PAYMENT_STORE_EINTERNAL);
}

static void case_nested_read_answered(struct fixture *fx)
{
    nested_read_answers(fx, PAYMENT_STORE_OK);
}

/* ---- the embedded store: migration from schema version 6 -------------------- */

/* Schema version 6, as released, with a payment and its event. */
static const char store_v6_sql[] =
    "CREATE TABLE payments (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,"
    " organisation_id TEXT NOT NULL, version INTEGER NOT NULL, created_ms INTEGER NOT NULL,"
    " modified_ms INTEGER NOT NULL, currency TEXT, payment_scheme TEXT, payment_type TEXT,"
    " reference TEXT, end_to_end_reference TEXT, processing_date TEXT, amount_key TEXT, doc TEXT,"
    " deleted INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX payments_organisation ON payments (organisation_id, seq);"
    "CREATE INDEX payments_reference ON payments (reference);"
    "CREATE INDEX payments_end_to_end_reference ON payments (end_to_end_reference);"
    "CREATE TABLE operations (op_id TEXT PRIMARY KEY NOT NULL, partition INTEGER NOT NULL,"
    " seq INTEGER NOT NULL, status TEXT NOT NULL, error_code TEXT, message TEXT, payment_id TEXT,"
    " organisation_id TEXT, version INTEGER NOT NULL, applied_ms INTEGER NOT NULL,"
    " fingerprint TEXT) WITHOUT ROWID;"
    "CREATE TABLE partitions (partition INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL,"
    " fence INTEGER NOT NULL);"
    "CREATE INDEX operations_applied ON operations (applied_ms);"
    "CREATE TABLE idempotency (scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,"
    " status INTEGER NOT NULL, location TEXT, etag TEXT, body BLOB, created_ms INTEGER NOT NULL);"
    "CREATE UNIQUE INDEX idempotency_key ON idempotency (scope, key);"
    "CREATE INDEX idempotency_created ON idempotency (created_ms);"
    "CREATE TABLE events (pos INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL,"
    " payment_id TEXT NOT NULL, organisation_id TEXT NOT NULL, version INTEGER NOT NULL,"
    " type INTEGER NOT NULL, occurred_ms INTEGER NOT NULL, api_key_id TEXT, request_id TEXT,"
    " idempotency_key TEXT, operation_id TEXT, changes TEXT, doc TEXT NOT NULL);"
    "CREATE UNIQUE INDEX events_payment ON events (payment_id, version);"
    "CREATE INDEX events_organisation ON events (organisation_id, pos);"
    "CREATE TABLE feed_meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL)"
    " WITHOUT ROWID;"
    "INSERT INTO feed_meta (key, value) VALUES ('floor', 0);"
    "INSERT INTO payments (id, organisation_id, version, created_ms, modified_ms, doc)"
    " VALUES ('00000000-0000-4000-8000-000000000001', '0a0a0a0a-0000-4000-8000-000000000001',"
    " 0, 1000, 1000, '{}');"
    "INSERT INTO events (pos, id, payment_id, organisation_id, version, type, occurred_ms, doc)"
    " VALUES (41, '01890000-0000-7000-8000-000000000001', '00000000-0000-4000-8000-000000000001',"
    " '0a0a0a0a-0000-4000-8000-000000000001', 0, 1, 1000, '{}');"
    "PRAGMA user_version = 6;";

static void sqlite_migrates_version_6(void)
{
    char dir[] = "/tmp/paymentd-webhooks-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[64], uri[80];
    snprintf(path, sizeof path, "%s/p.db", dir);
    snprintf(uri, sizeof uri, "sqlite:%s", path);
    sqlite3 *db = NULL;
    CHECK_INT(sqlite3_open(path, &db), SQLITE_OK);
    CHECK_INT(sqlite3_exec(db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL), SQLITE_OK);
    CHECK_INT(sqlite3_exec(db, store_v6_sql, NULL, NULL, NULL), SQLITE_OK);
    CHECK_INT(sqlite3_close(db), SQLITE_OK);

    payment_store *s = NULL;
    char err[256] = "";
    CHECK_INT(payment_store_open(uri, 0, &s, err, sizeof err), PAYMENT_STORE_OK);
    if (!s) {
        fprintf(stderr, "  open: %s\n", err);
        rm_tree(dir);
        return;
    }
    struct buf doc = BUF_INIT;
    int64_t version = -1;
    CHECK_INT(payment_store_get(s, "00000000-0000-4000-8000-000000000001", &doc, &version),
              PAYMENT_STORE_OK);
    buf_free(&doc);
    int64_t pos = -1;
    CHECK_INT(payment_store_dispatch_pos(s, &pos), PAYMENT_STORE_OK);
    CHECK_INT(pos, 0);
    struct wh h;
    wh_init(&h, 1, 1, 1000);
    CHECK_INT(payment_store_webhook_create(s, &h.w), PAYMENT_STORE_OK);
    CHECK_INT(h.w.after_pos, 41);
    CHECK_INT(dl_add1(s, 1, 1, 42, 1000), PAYMENT_STORE_OK);
    struct dl_list l = {0};
    CHECK_INT(dl_claim(s, "a", 1000, 100, 10, &l), PAYMENT_STORE_OK);
    CHECK_DL_IDS(&l, 1);
    dl_free(&l);
    payment_store_close(s);

    CHECK_INT(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    CHECK_INT(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    CHECK_INT(sqlite3_step(st), SQLITE_ROW);
    CHECK(sqlite3_column_int(st, 0) >= 7);
    (void)sqlite3_finalize(st);
    CHECK_INT(sqlite3_close(db), SQLITE_OK);
    rm_tree(dir);
}

/* The count of rows of sql's one-column answer, on a read connection. */
static int64_t sqlite_count(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    CHECK_INT(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    CHECK_INT(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (st && sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    (void)sqlite3_finalize(st);
    CHECK_INT(sqlite3_close(db), SQLITE_OK);
    return n;
}

/* Schema 9: a delivery's body lives in delivery_bodies, one row per
 * delivery, never rewritten (a claim or a record leaves it alone), and goes
 * with its delivery whichever way that goes (the endpoint's delete, the
 * purge); a store of schema 8, bodies in the deliveries' rows, is migrated
 * with every body kept. */
static void sqlite_delivery_bodies_apart(void)
{
    char dir[] = "/tmp/paymentd-webhooks-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[64], uri[80];
    snprintf(path, sizeof path, "%s/p.db", dir);
    snprintf(uri, sizeof uri, "sqlite:%s", path);
    payment_store *s = NULL;
    char err[256] = "";
    CHECK_INT(payment_store_open(uri, 0, &s, err, sizeof err), PAYMENT_STORE_OK);
    if (!s) {
        rm_tree(dir);
        return;
    }
    wh_make(s, 1, 1);
    wh_make(s, 2, 1);
    CHECK_INT(dl_add1(s, 1, 1, 10, 1000), PAYMENT_STORE_OK);
    CHECK_INT(dl_add1(s, 2, 1, 11, 1000), PAYMENT_STORE_OK);
    CHECK_INT(dl_add1(s, 3, 2, 10, 1000), PAYMENT_STORE_OK);
    CHECK_INT(dl_add1(s, 4, 2, 10, 1000), PAYMENT_STORE_OK); /* (2, 10) again: kept as 3 */
    payment_store_close(s);
    CHECK_INT(sqlite_count(path, "SELECT count(*) FROM delivery_bodies"), 3);
    CHECK_INT(sqlite_count(path, "SELECT count(*) FROM deliveries WHERE body <> ''"), 0);

    /* back to schema 8's shape: the bodies in the rows, no table, no trigger */
    sqlite3 *db = NULL;
    CHECK_INT(sqlite3_open(path, &db), SQLITE_OK);
    CHECK_INT(sqlite3_exec(db,
                           "UPDATE deliveries SET body = (SELECT body FROM delivery_bodies b"
                           " WHERE b.id = deliveries.id);"
                           "DROP TRIGGER deliveries_body_gone; DROP TABLE delivery_bodies;"
                           "PRAGMA user_version = 8;",
                           NULL, NULL, NULL),
              SQLITE_OK);
    CHECK_INT(sqlite3_close(db), SQLITE_OK);
    CHECK_INT(payment_store_open(uri, 0, &s, err, sizeof err), PAYMENT_STORE_OK);
    if (!s) {
        rm_tree(dir);
        return;
    }
    struct dl_list l = {0};
    CHECK_INT(dl_claim(s, "a", 5000, 100, 10, &l), PAYMENT_STORE_OK);
    CHECK_INT((int)l.n, 3);
    for (size_t i = 0; i < l.n; i++)
        CHECK_STR(l.e[i].body, l.e[i].event_pos == 10 ? "{\"event\":10}" : "{\"event\":11}");
    dl_free(&l);
    char id[UUID_STR_LEN + 1];
    wh_id(id, 2);
    int64_t cur = -1;
    CHECK_INT(payment_store_webhook_delete(s, id, 0, &cur), PAYMENT_STORE_OK);
    payment_store_close(s);
    CHECK_INT(sqlite_count(path, "SELECT count(*) FROM delivery_bodies"), 2);
    CHECK_INT(sqlite_count(path, "SELECT count(*) FROM deliveries WHERE body <> ''"), 0);
    CHECK_INT(sqlite_count(path, "SELECT count(*) FROM delivery_bodies b WHERE NOT EXISTS"
                                 " (SELECT 1 FROM deliveries d WHERE d.id = b.id)"),
              0);
    rm_tree(dir);
}

/* ---- runners (SQLITE_CASE, SQLITE_EXCL_CASE and run_on_pg: store_fixture.h) --- */

/* A backend without webhooks yet (no webhook_create in its table: store.c
 * answers EINTERNAL) has its cases skipped, not failed. */
#define MONGO_CASE(name)                                                                      \
    static void mongo_case_##name(struct fixture *fx)                                         \
    {                                                                                         \
        if (!fx->s->backend->webhook_create) {                                                \
            TEST_SKIP("this backend has no webhooks yet");                                    \
            return;                                                                           \
        }                                                                                     \
        case_##name(fx);                                                                      \
    }                                                                                         \
    static void mongo_##name(void) { run_on_mongo(mongo_case_##name); }

/* Defines test pg_NAME running case_NAME on a fresh PostgreSQL schema. */
#define PG_CASE(name)                                                                         \
    static void pg_##name(void) { run_on_pg(case_##name); }

SQLITE_CASE(endpoint_crud)
SQLITE_CASE(endpoint_limit)
SQLITE_CASE(after_pos)
SQLITE_CASE(after_pos_queued)
SQLITE_CASE(list_endpoints)
SQLITE_CASE(deliveries_add)
SQLITE_CASE(claim)
SQLITE_CASE(record)
SQLITE_CASE(record_batch)
SQLITE_CASE(failing_since)
SQLITE_CASE(retry)
SQLITE_CASE(list_deliveries)
SQLITE_CASE(pending_purge)
SQLITE_CASE(delete_cascades)
SQLITE_CASE(reopen)
SQLITE_CASE(two_stores_race)
SQLITE_CASE(nested_read)
SQLITE_EXCL_CASE(endpoint_crud)
SQLITE_EXCL_CASE(after_pos)
SQLITE_EXCL_CASE(claim)
SQLITE_EXCL_CASE(record)
SQLITE_EXCL_CASE(reopen)
MONGO_CASE(endpoint_crud)
MONGO_CASE(endpoint_limit)
MONGO_CASE(after_pos)
MONGO_CASE(list_endpoints)
MONGO_CASE(deliveries_add)
MONGO_CASE(claim)
MONGO_CASE(record)
MONGO_CASE(record_batch)
MONGO_CASE(failing_since)
MONGO_CASE(retry)
MONGO_CASE(list_deliveries)
MONGO_CASE(pending_purge)
MONGO_CASE(delete_cascades)
MONGO_CASE(reopen)
PG_CASE(endpoint_crud)
PG_CASE(endpoint_limit)
PG_CASE(after_pos)
PG_CASE(after_pos_queued)
PG_CASE(list_endpoints)
PG_CASE(deliveries_add)
PG_CASE(claim)
PG_CASE(record)
PG_CASE(record_batch)
PG_CASE(failing_since)
PG_CASE(retry)
PG_CASE(list_deliveries)
PG_CASE(pending_purge)
PG_CASE(delete_cascades)
PG_CASE(reopen)
PG_CASE(two_stores_race)
PG_CASE(nested_read_answered)

TEST_MAIN(TEST(sqlite_endpoint_crud), TEST(sqlite_endpoint_limit), TEST(sqlite_after_pos), TEST(sqlite_after_pos_queued),
          TEST(sqlite_list_endpoints), TEST(sqlite_deliveries_add), TEST(sqlite_claim),
          TEST(sqlite_record), TEST(sqlite_record_batch), TEST(sqlite_failing_since),
          TEST(sqlite_retry), TEST(sqlite_list_deliveries), TEST(sqlite_pending_purge),
          TEST(sqlite_delete_cascades), TEST(sqlite_reopen), TEST(sqlite_two_stores_race),
          TEST(sqlite_nested_read), TEST(sqlite_migrates_version_6), TEST(sqlite_delivery_bodies_apart),
          TEST(sqlite_excl_endpoint_crud), TEST(sqlite_excl_after_pos), TEST(sqlite_excl_claim),
          TEST(sqlite_excl_record), TEST(sqlite_excl_reopen), TEST(mongo_endpoint_crud),
          TEST(mongo_endpoint_limit), TEST(mongo_after_pos), TEST(mongo_list_endpoints),
          TEST(mongo_deliveries_add), TEST(mongo_claim), TEST(mongo_record),
          TEST(mongo_record_batch), TEST(mongo_failing_since), TEST(mongo_retry),
          TEST(mongo_list_deliveries), TEST(mongo_pending_purge), TEST(mongo_delete_cascades),
          TEST(mongo_reopen), TEST(pg_endpoint_crud), TEST(pg_endpoint_limit),
          TEST(pg_after_pos), TEST(pg_after_pos_queued), TEST(pg_list_endpoints), TEST(pg_deliveries_add), TEST(pg_claim),
          TEST(pg_record), TEST(pg_record_batch), TEST(pg_failing_since), TEST(pg_retry),
          TEST(pg_list_deliveries), TEST(pg_pending_purge), TEST(pg_delete_cascades),
          TEST(pg_reopen), TEST(pg_two_stores_race), TEST(pg_nested_read_answered))
