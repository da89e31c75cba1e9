/* store_mongo_webhooks: what the MongoDB store promises about webhooks
 * (store.h, "webhooks"; how, in store_mongo_webhooks.c and
 * store_mongo_deliveries.c), against the server PAYMENTD_TEST_MONGO_URI
 * names (the test double, tests/mongo/double.py); without it every case is
 * reported skipped.  Each case runs on a fresh database, dropped
 * afterwards (store_fixture.h).  Two stores opened on one database stand
 * for two processes; a TCP relay between a store and the server that stops
 * relaying stands for a server that froze. */
#include "payment/store_mongo.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "store_fixture.h"
#include "store_waiter.h"
#include "test.h"

#define ORG_A "0a0a0a0a-0000-4000-8000-000000000001"
#define ORG_B "0a0a0a0a-0000-4000-8000-000000000002"
#define ALL_TYPES (PAYMENT_EVENT_CREATED | PAYMENT_EVENT_UPDATED | PAYMENT_EVENT_DELETED)

/* ---- the server, directly ------------------------------------------------- */

/* The database fx's URI names. */
static void fixture_db(const struct fixture *fx, char out[64])
{
    const char *hosts = strstr(fx->uri, "://");
    hosts = hosts ? hosts + 3 : fx->uri;
    const char *slash = strchr(hosts, '/');
    snprintf(out, 64, "%.*s", slash ? (int)strcspn(slash + 1, "?") : 0, slash ? slash + 1 : "");
}

/* Runs the write command cmd (destroyed) on fx's database. */
static void raw_write(const struct fixture *fx, bson_t *cmd)
{
    char db[64];
    fixture_db(fx, db);
    bson_t reply;
    CHECK(mongo_command(db, cmd, &reply));
    bson_iter_t it;
    CHECK(!bson_iter_init_find(&it, &reply, "writeErrors"));
    bson_destroy(&reply);
    bson_destroy(cmd);
}

/* ---- endpoints ------------------------------------------------------------- */

/* An endpoint as written, owning its document's text. */
struct hook {
    struct payment_webhook w;
    char doc[128];
};

/* Endpoint n of org, enabled for every type. */
static void hook_init(struct hook *h, int n, const char *org)
{
    memset(h, 0, sizeof *h);
    snprintf(h->w.id, sizeof h->w.id, "0190bbbb-0000-7000-8000-%012d", n);
    snprintf(h->w.organisation_id, sizeof h->w.organisation_id, "%s", org);
    h->w.created_ms = h->w.modified_ms = 5000 + n;
    h->w.enabled = 1;
    h->w.types = ALL_TYPES;
    h->w.doc = h->doc;
    h->w.doc_len = (size_t)snprintf(h->doc, sizeof h->doc, "{\"url\":\"http://127.0.0.1/%d\"}", n);
}

/* An endpoint as read, with copies of what the callback lent. */
struct hook_read {
    struct payment_webhook w;
    char doc[256];
};

static int hook_copy(void *arg, const struct payment_webhook *w)
{
    struct hook_read *r = arg;
    r->w = *w;
    snprintf(r->doc, sizeof r->doc, "%.*s", (int)w->doc_len, w->doc);
    r->w.doc = r->doc;
    return 0;
}

static int hook_get(payment_store *s, const char *id, struct hook_read *r)
{
    memset(r, 0, sizeof *r);
    return payment_store_webhook_get(s, id, hook_copy, r);
}

/* The ids a list gave, in order. */
struct id_list {
    char ids[64][UUID_STR_LEN + 1];
    size_t n;
};

static int hook_collect(void *arg, const struct payment_webhook *w)
{
    struct id_list *l = arg;
    if (l->n < 64)
        snprintf(l->ids[l->n++], sizeof l->ids[0], "%s", w->id);
    return 0;
}

/* ---- deliveries ------------------------------------------------------------ */

/* Delivery n for endpoint hook (its id's number) and event e at pos. */
static void delivery_init(struct payment_delivery_new *d, int n, int hook, int e, int64_t pos)
{
    memset(d, 0, sizeof *d);
    snprintf(d->id, sizeof d->id, "0190dddd-0000-7000-8000-%012d", n);
    snprintf(d->webhook_id, sizeof d->webhook_id, "0190bbbb-0000-7000-8000-%012d", hook);
    snprintf(d->event_id, sizeof d->event_id, "0190eeee-0000-7000-8000-%012d", e);
    d->event_pos = pos;
    d->body = "{\"event\":true}";
    d->body_len = strlen(d->body);
}

/* A delivery as read, with copies of what the callback lent. */
struct dl {
    struct payment_delivery d;
    char attempts[512];
    char body[64];
};

struct dl_list {
    struct dl items[64];
    size_t n;
};

static int dl_collect(void *arg, const struct payment_delivery *d)
{
    struct dl_list *l = arg;
    if (l->n >= 64)
        return 0;
    struct dl *x = &l->items[l->n++];
    x->d = *d;
    snprintf(x->attempts, sizeof x->attempts, "%s", d->attempts_json);
    snprintf(x->body, sizeof x->body, "%.*s", (int)d->body_len, d->body);
    x->d.attempts_json = x->attempts;
    x->d.body = x->body;
    return 0;
}

/* The deliveries of endpoint hook with statuses (0: all), every page. */
static void dl_all(payment_store *s, int hook, unsigned statuses, struct dl_list *out)
{
    char id[UUID_STR_LEN + 1];
    snprintf(id, sizeof id, "0190bbbb-0000-7000-8000-%012d", hook);
    memset(out, 0, sizeof *out);
    struct payment_delivery_query q = {.webhook_id = id, .statuses = statuses, .limit = 64};
    int more = 0;
    CHECK_INT(payment_store_deliveries_list(s, &q, dl_collect, out, &more), PAYMENT_STORE_OK);
    CHECK_INT(more, 0);
}

/* The delivery n of a list, or NULL. */
static const struct dl *dl_find(const struct dl_list *l, int n)
{
    char id[UUID_STR_LEN + 1];
    snprintf(id, sizeof id, "0190dddd-0000-7000-8000-%012d", n);
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->items[i].d.id, id) == 0)
            return &l->items[i];
    return NULL;
}

static int claim(payment_store *s, const char *owner, int64_t now, int64_t lease, uint32_t max,
                 struct dl_list *out)
{
    memset(out, 0, sizeof *out);
    return payment_store_deliveries_claim(s, owner, now, lease, max, dl_collect, out);
}

/* Records an attempt of delivery n (endpoint hook) by owner. */
static int record(payment_store *s, int n, int hook, const char *owner, const char *json,
                  enum payment_delivery_status status, int64_t next_ms, int ok, int64_t at_ms,
                  int64_t *failing)
{
    char id[UUID_STR_LEN + 1], hid[UUID_STR_LEN + 1];
    snprintf(id, sizeof id, "0190dddd-0000-7000-8000-%012d", n);
    snprintf(hid, sizeof hid, "0190bbbb-0000-7000-8000-%012d", hook);
    struct payment_delivery_attempt a = {.delivery_id = id, .webhook_id = hid, .owner = owner,
                                         .attempt_json = json, .status = status,
                                         .next_ms = next_ms, .succeeded = ok, .at_ms = at_ms};
    return payment_store_delivery_record(s, &a, failing);
}

/* Creates endpoint n of org, checking it. */
static void hook_create(payment_store *s, int n, const char *org)
{
    struct hook h;
    hook_init(&h, n, org);
    CHECK_INT(payment_store_webhook_create(s, &h.w), PAYMENT_STORE_OK);
}

/* ---- cases: endpoints ------------------------------------------------------ */

static void case_endpoints(struct fixture *fx)
{
    payment_store *s = fx->s;
    struct hook h;
    struct hook_read r;
    hook_init(&h, 1, ORG_A);
    h.w.after_pos = 77;
    h.w.failing_since_ms = 99;
    CHECK_INT(payment_store_webhook_create(s, &h.w), PAYMENT_STORE_OK);
    CHECK_INT(h.w.after_pos, 0); /* an empty feed */
    CHECK_INT(h.w.failing_since_ms, 0);
    CHECK_INT(payment_store_webhook_create(s, &h.w), PAYMENT_STORE_EDUPLICATE);
    CHECK_INT(hook_get(s, h.w.id, &r), PAYMENT_STORE_OK);
    CHECK_STR(r.w.id, h.w.id);
    CHECK_STR(r.w.organisation_id, ORG_A);
    CHECK_INT(r.w.version, 0);
    CHECK_INT(r.w.created_ms, 5001);
    CHECK_INT(r.w.enabled, 1);
    CHECK_INT(r.w.types, ALL_TYPES);
    CHECK_INT(r.w.failing_since_ms, 0);
    CHECK_STR(r.doc, h.doc);

    /* Update: on the version, the document, enabled and types replaced;
     * created_ms and organisation_id kept. */
    struct hook u;
    hook_init(&u, 1, ORG_B);
    u.w.version = 1;
    u.w.created_ms = 1;
    u.w.modified_ms = 9000;
    u.w.enabled = 0;
    u.w.types = PAYMENT_EVENT_DELETED;
    u.w.doc_len = (size_t)snprintf(u.doc, sizeof u.doc, "{\"url\":\"https://x/\"}");
    CHECK_INT(payment_store_webhook_update(s, &u.w, 0), PAYMENT_STORE_OK);
    CHECK_INT(payment_store_webhook_update(s, &u.w, 0), PAYMENT_STORE_ECONFLICT);
    CHECK_INT(hook_get(s, h.w.id, &r), PAYMENT_STORE_OK);
    CHECK_INT(r.w.version, 1);
    CHECK_INT(r.w.created_ms, 5001);
    CHECK_INT(r.w.modified_ms, 9000);
    CHECK_STR(r.w.organisation_id, ORG_A);
    CHECK_INT(r.w.enabled, 0);
    CHECK_INT(r.w.types, PAYMENT_EVENT_DELETED);
    CHECK_STR(r.doc, "{\"url\":\"https://x/\"}");
    struct hook none;
    hook_init(&none, 2, ORG_A);
    none.w.version = 1;
    CHECK_INT(payment_store_webhook_update(s, &none.w, 0), PAYMENT_STORE_ENOTFOUND);

    /* Delete: ENOTFOUND before ECONFLICT, the current version on ECONFLICT. */
    int64_t cur = -5;
    CHECK_INT(payment_store_webhook_delete(s, h.w.id, 0, &cur), PAYMENT_STORE_ECONFLICT);
    CHECK_INT(cur, 1);
    CHECK_INT(payment_store_webhook_delete(s, none.w.id, 0, &cur), PAYMENT_STORE_ENOTFOUND);
    CHECK_INT(payment_store_webhook_delete(s, h.w.id, 1, NULL), PAYMENT_STORE_OK);
    CHECK_INT(hook_get(s, h.w.id, &r), PAYMENT_STORE_ENOTFOUND);
    CHECK_INT(payment_store_webhook_delete(s, h.w.id, -1, NULL), PAYMENT_STORE_ENOTFOUND);
    u.w.version = 2;
    CHECK_INT(payment_store_webhook_update(s, &u.w, 1), PAYMENT_STORE_ENOTFOUND);
    /* An unconditional delete. */
    hook_create(s, 3, ORG_A);
    CHECK_INT(payment_store_webhook_delete(s, "0190bbbb-0000-7000-8000-000000000003", -1, NULL),
              PAYMENT_STORE_OK);
}

static void case_limit(struct fixture *fx)
{
    payment_store *s = fx->s;
    for (int i = 0; i < PAYMENT_WEBHOOKS_PER_ORG_MAX; i++)
        hook_create(s, 100 + i, ORG_A);
    struct hook h;
    hook_init(&h, 200, ORG_A);
    CHECK_INT(payment_store_webhook_create(s, &h.w), PAYMENT_STORE_ELIMIT);
    hook_create(s, 300, ORG_B); /* another organisation's count */
    /* A refused create left no endpoint, and took no slot. */
    struct hook_read r;
    CHECK_INT(hook_get(s, h.w.id, &r), PAYMENT_STORE_ENOTFOUND);
    /* A duplicate id is EDUPLICATE even when full... */
    struct hook d;
    hook_init(&d, 100, ORG_A);
    CHECK_INT(payment_store_webhook_create(s, &d.w), PAYMENT_STORE_EDUPLICATE);
    /* ... and a delete gives its slot back. */
    CHECK_INT(payment_store_webhook_delete(s, d.w.id, -1, NULL), PAYMENT_STORE_OK);
    CHECK_INT(payment_store_webhook_create(s, &h.w), PAYMENT_STORE_OK);
    hook_init(&h, 201, ORG_A);
    CHECK_INT(payment_store_webhook_create(s, &h.w), PAYMENT_STORE_ELIMIT);
}

/* A slot left without endpoint (a create whose insert was lost) is freed
 * once old, and only then. */
static void case_limit_stale_slot(struct fixture *fx)
{
    payment_store *s = fx->s;
    for (int i = 0; i < PAYMENT_WEBHOOKS_PER_ORG_MAX - 1; i++)
        hook_create(s, 100 + i, ORG_A);
    char coll[64];
    snprintf(coll, sizeof coll, "payments%s", MONGO_HOOK_ORGS_SUFFIX);
    int64_t now = clock_now_ms();
    raw_write(fx, BCON_NEW("update", BCON_UTF8(coll), "updates", "[", "{", "q", "{", "_id",
                           BCON_UTF8(ORG_A), "}", "u", "{", "$push", "{", "ids", "{", "id",
                           BCON_UTF8("lost-1"), "at", BCON_INT64(now), "}", "}", "}", "}", "]"));
    struct hook h;
    hook_init(&h, 200, ORG_A);
    CHECK_INT(payment_store_webhook_create(s, &h.w), PAYMENT_STORE_ELIMIT); /* may be in flight */
    raw_write(fx, BCON_NEW("update", BCON_UTF8(coll), "updates", "[", "{", "q", "{", "_id",
                           BCON_UTF8(ORG_A), "}", "u", "{", "$set", "{", "ids.19.at",
                           BCON_INT64(now - 10 * 60 * 1000), "}", "}", "}", "]"));
    CHECK_INT(payment_store_webhook_create(s, &h.w), PAYMENT_STORE_OK);
    hook_init(&h, 201, ORG_A);
    CHECK_INT(payment_store_webhook_create(s, &h.w), PAYMENT_STORE_ELIMIT);
}

/* ---- cases: where an endpoint starts --------------------------------------- */

struct pay {
    struct payment_row row;
    char doc[96];
};

static int pay_create(payment_store *s, int n)
{
    struct pay p;
    memset(&p, 0, sizeof p);
    snprintf(p.row.id, sizeof p.row.id, "00000000-0000-4000-8000-%012d", n);
    snprintf(p.row.organisation_id, sizeof p.row.organisation_id, "%s", ORG_A);
    p.row.created_ms = p.row.modified_ms = 1000;
    p.row.doc = p.doc;
    p.row.doc_len = (size_t)snprintf(p.doc, sizeof p.doc, "{\"id\":\"%s\"}", p.row.id);
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_create(s, &p.row, NULL, NULL, waiter_done, &w);
    waiter_wait(&w);
    return w.err;
}

/* The positions of payment n's events (one: its create), read from the feed. */
struct positions {
    int64_t pos[64];
    int n[64];
    size_t count;
};

static int pos_collect(void *arg, const struct payment_event *ev)
{
    struct positions *p = arg;
    if (p->count < 64) {
        p->pos[p->count] = ev->pos;
        p->n[p->count++] = atoi(ev->payment_id + 24);
    }
    return 0;
}

/* Waits (at most 10 s) until the feed holds want events, read into out. */
static void feed_read(payment_store *s, size_t want, struct positions *out)
{
    int64_t until = clock_mono_us() + 10 * 1000 * 1000;
    do {
        memset(out, 0, sizeof *out);
        struct payment_event_query q = {.after_pos = 0, .limit = 64, .all_orgs = 1,
                                        .from_ms = INT64_MIN, .to_ms = INT64_MAX};
        int64_t next = 0;
        CHECK_INT(payment_store_events(s, &q, pos_collect, out, &next), PAYMENT_STORE_OK);
        if (out->count >= want)
            return;
        usleep(20000);
    } while (clock_mono_us() < until);
    CHECK_INT(out->count, want);
}

static void case_after_pos(struct fixture *fx)
{
    payment_store *s = fx->s;
    for (int i = 1; i <= 5; i++)
        CHECK_INT(pay_create(s, i), PAYMENT_STORE_OK);
    struct hook h;
    hook_init(&h, 1, ORG_A);
    CHECK_INT(payment_store_webhook_create(s, &h.w), PAYMENT_STORE_OK);
    struct hook_read r;
    CHECK_INT(hook_get(s, h.w.id, &r), PAYMENT_STORE_OK);
    CHECK_INT(r.w.after_pos, h.w.after_pos);
    for (int i = 6; i <= 10; i++)
        CHECK_INT(pay_create(s, i), PAYMENT_STORE_OK);
    /* Another process's writes too. */
    char err[256] = "";
    payment_store *other = NULL;
    CHECK_INT(payment_store_open(fx->uri, 0, &other, err, sizeof err), PAYMENT_STORE_OK);
    if (other) {
        for (int i = 11; i <= 13; i++)
            CHECK_INT(pay_create(other, i), PAYMENT_STORE_OK);
        payment_store_close(other);
    }
    struct positions p;
    feed_read(s, 13, &p);
    for (size_t i = 0; i < p.count; i++) {
        if (p.n[i] > 5)
            CHECK(p.pos[i] > h.w.after_pos); /* owed: committed after the endpoint */
        else
            CHECK(p.pos[i] <= h.w.after_pos); /* this process's, before it */
    }
    CHECK_INT(h.w.after_pos, 5);
}

/* ---- cases: making deliveries ---------------------------------------------- */

static void case_add(struct fixture *fx)
{
    payment_store *s = fx->s;
    hook_create(s, 1, ORG_A);
    int64_t pos = -1;
    CHECK_INT(payment_store_dispatch_pos(s, &pos), PAYMENT_STORE_OK);
    CHECK_INT(pos, 0);
    struct payment_delivery_new d[4];
    for (int i = 0; i < 3; i++)
        delivery_init(&d[i], 10 + i, 1, 10 + i, 10 + i);
    CHECK_INT(payment_store_deliveries_add(s, 0, 12, d, 3, 0, 1000), PAYMENT_STORE_OK);
    CHECK_INT(payment_store_dispatch_pos(s, &pos), PAYMENT_STORE_OK);
    CHECK_INT(pos, 12);
    struct dl_list l;
    dl_all(s, 1, 0, &l);
    CHECK_INT(l.n, 3);
    CHECK_STR(l.items[0].d.id, d[0].id);
    CHECK_STR(l.items[0].d.event_id, d[0].event_id);
    CHECK_INT(l.items[0].d.event_pos, 10);
    CHECK_INT(l.items[0].d.status, PAYMENT_DELIVERY_PENDING);
    CHECK_INT(l.items[0].d.next_ms, 1000);
    CHECK_INT(l.items[0].d.created_ms, 1000);
    CHECK_INT(l.items[0].d.attempts, 0);
    CHECK_STR(l.items[0].attempts, "[]");
    CHECK_STR(l.items[0].body, "{\"event\":true}");

    /* The same (endpoint, event) again, under other ids: nothing new. */
    for (int i = 0; i < 3; i++)
        delivery_init(&d[i], 20 + i, 1, 10 + i, 10 + i);
    delivery_init(&d[3], 23, 1, 13, 13);
    CHECK_INT(payment_store_deliveries_add(s, 12, 13, d, 4, 0, 2000), PAYMENT_STORE_OK);
    dl_all(s, 1, 0, &l);
    CHECK_INT(l.n, 4);
    CHECK(dl_find(&l, 10) && dl_find(&l, 10)->d.next_ms == 1000);
    CHECK(dl_find(&l, 23) != NULL && dl_find(&l, 20) == NULL);

    /* A stale expected position: ECONFLICT, nothing made, position kept. */
    delivery_init(&d[0], 30, 1, 30, 30);
    CHECK_INT(payment_store_deliveries_add(s, 12, 30, d, 1, 0, 3000), PAYMENT_STORE_ECONFLICT);
    CHECK_INT(payment_store_deliveries_add(s, 0, 30, d, 1, 0, 3000), PAYMENT_STORE_ECONFLICT);
    dl_all(s, 1, 0, &l);
    CHECK_INT(l.n, 4);
    CHECK_INT(payment_store_dispatch_pos(s, &pos), PAYMENT_STORE_OK);
    CHECK_INT(pos, 13);

    /* expected_pos -1: made, the position left alone. */
    CHECK_INT(payment_store_deliveries_add(s, -1, 99, d, 1, 0, 3000), PAYMENT_STORE_OK);
    CHECK_INT(payment_store_dispatch_pos(s, &pos), PAYMENT_STORE_OK);
    CHECK_INT(pos, 13);
    dl_all(s, 1, 0, &l);
    CHECK_INT(l.n, 5);

    /* Reset: an existing delivery pending and due again, attempts kept. */
    struct dl_list c;
    CHECK_INT(claim(s, "A", 3000, 1000, 1, &c), PAYMENT_STORE_OK);
    CHECK_INT(c.n, 1);
    CHECK_STR(c.items[0].d.id, "0190dddd-0000-7000-8000-000000000010");
    CHECK_INT(record(s, 10, 1, "A", "{\"n\":1}", PAYMENT_DELIVERY_SUCCEEDED, 0, 1, 3001, NULL),
              PAYMENT_STORE_OK);
    delivery_init(&d[0], 40, 1, 10, 10);
    delivery_init(&d[1], 41, 1, 50, 50);
    CHECK_INT(payment_store_deliveries_add(s, -1, 0, d, 2, 1, 4000), PAYMENT_STORE_OK);
    dl_all(s, 1, 0, &l);
    CHECK_INT(l.n, 6);
    const struct dl *x = dl_find(&l, 10);
    CHECK(x != NULL);
    if (x) {
        CHECK_INT(x->d.status, PAYMENT_DELIVERY_PENDING);
        CHECK_INT(x->d.next_ms, 4000);
        CHECK_INT(x->d.attempts, 1);
        CHECK_STR(x->attempts, "[{\"n\":1}]");
        CHECK_INT(x->d.created_ms, 1000);
    }
    x = dl_find(&l, 41);
    CHECK(x != NULL && x->d.status == PAYMENT_DELIVERY_PENDING && x->d.next_ms == 4000);
    /* Without reset, an existing delivery is left as it is. */
    CHECK_INT(payment_store_deliveries_add(s, -1, 0, d, 1, 0, 5000), PAYMENT_STORE_OK);
    dl_all(s, 1, 0, &l);
    x = dl_find(&l, 10);
    CHECK(x != NULL && x->d.next_ms == 4000 && x->d.attempts == 1);
}

/* ---- cases: leases and attempts -------------------------------------------- */

static void case_claim(struct fixture *fx)
{
    payment_store *s = fx->s;
    hook_create(s, 1, ORG_A);
    struct payment_delivery_new d[3];
    delivery_init(&d[0], 1, 1, 1, 1);
    CHECK_INT(payment_store_deliveries_add(s, 0, 3, d, 1, 0, 3000), PAYMENT_STORE_OK);
    delivery_init(&d[0], 3, 1, 3, 3);
    CHECK_INT(payment_store_deliveries_add(s, 3, 4, d, 1, 0, 2000), PAYMENT_STORE_OK);
    delivery_init(&d[0], 2, 1, 2, 2);
    CHECK_INT(payment_store_deliveries_add(s, 4, 5, d, 1, 0, 9000), PAYMENT_STORE_OK);

    /* At 5000: the two due, earliest due first (not id order); not the one
     * due at 9000. */
    struct dl_list c;
    CHECK_INT(claim(s, "A", 5000, 1000, 10, &c), PAYMENT_STORE_OK);
    CHECK_INT(c.n, 2);
    CHECK_STR(c.items[0].d.id, "0190dddd-0000-7000-8000-000000000003");
    CHECK_STR(c.items[1].d.id, "0190dddd-0000-7000-8000-000000000001");
    CHECK_STR(c.items[0].body, "{\"event\":true}");
    /* Leased: nobody gets them until the lease ends at 6000. */
    CHECK_INT(claim(s, "B", 5999, 1000, 10, &c), PAYMENT_STORE_OK);
    CHECK_INT(c.n, 0);
    CHECK_INT(claim(s, "B", 6000, 1000, 1, &c), PAYMENT_STORE_OK); /* max */
    CHECK_INT(c.n, 1);
    CHECK_STR(c.items[0].d.id, "0190dddd-0000-7000-8000-000000000003");
    /* A's lease is over: its record is refused and records nothing. */
    CHECK_INT(record(s, 3, 1, "A", "{\"n\":1}", PAYMENT_DELIVERY_SUCCEEDED, 0, 1, 6001, NULL),
              PAYMENT_STORE_ECONFLICT);
    struct dl_list l;
    dl_all(s, 1, 0, &l);
    const struct dl *x = dl_find(&l, 3);
    CHECK(x && x->d.attempts == 0 && strcmp(x->attempts, "[]") == 0 &&
          x->d.status == PAYMENT_DELIVERY_PENDING);
    /* A lease not taken over: its holder records after it ends. */
    CHECK_INT(record(s, 1, 1, "A", "{\"n\":1}", PAYMENT_DELIVERY_SUCCEEDED, 0, 1, 7000, NULL),
              PAYMENT_STORE_OK);
    /* B records; the delivery is free again and due at 6500. */
    CHECK_INT(record(s, 3, 1, "B", "{\"n\":1}", PAYMENT_DELIVERY_PENDING, 6500, 0, 6001, NULL),
              PAYMENT_STORE_OK);
    CHECK_INT(record(s, 3, 1, "B", "{\"n\":1}", PAYMENT_DELIVERY_PENDING, 6500, 0, 6001, NULL),
              PAYMENT_STORE_ECONFLICT); /* the lease was freed */
    CHECK_INT(claim(s, "A", 6499, 1000, 10, &c), PAYMENT_STORE_OK);
    CHECK_INT(c.n, 0);
    CHECK_INT(claim(s, "A", 9000, 1000, 10, &c), PAYMENT_STORE_OK);
    CHECK_INT(c.n, 2);
    CHECK_STR(c.items[0].d.id, "0190dddd-0000-7000-8000-000000000003");
    CHECK_INT(c.items[0].d.attempts, 1);
    CHECK_STR(c.items[1].d.id, "0190dddd-0000-7000-8000-000000000002");
    /* Expired leases are anyone's. */
    CHECK_INT(claim(s, "C", 20000, 1000, 10, &c), PAYMENT_STORE_OK);
    CHECK_INT(c.n, 2);
}

static int stop_first(void *arg, const struct payment_delivery *d)
{
    (void)d;
    (*(int *)arg)++;
    return 7;
}

static void case_record(struct fixture *fx)
{
    payment_store *s = fx->s;
    hook_create(s, 1, ORG_A);
    struct payment_delivery_new d[2];
    delivery_init(&d[0], 1, 1, 1, 1);
    delivery_init(&d[1], 2, 1, 2, 2);
    CHECK_INT(payment_store_deliveries_add(s, 0, 2, d, 2, 0, 1000), PAYMENT_STORE_OK);
    int calls = 0;
    CHECK_INT(payment_store_deliveries_claim(s, "A", 1000, 100, 10, stop_first, &calls), 7);
    CHECK_INT(calls, 1); /* the second is not leased */
    struct dl_list c;
    CHECK_INT(claim(s, "B", 1000, 100000, 10, &c), PAYMENT_STORE_OK);
    CHECK_INT(c.n, 1);
    CHECK_STR(c.items[0].d.id, "0190dddd-0000-7000-8000-000000000002");

    /* Failures: failing_since_ms set by the first, kept by the next. */
    int64_t failing = -1;
    CHECK_INT(record(s, 1, 1, "B", "{\"a\":1}", PAYMENT_DELIVERY_PENDING, 1500, 0, 1100, &failing),
              PAYMENT_STORE_ECONFLICT); /* the wrong owner */
    CHECK_INT(failing, 0);
    CHECK_INT(record(s, 1, 1, "A", "{\"a\":1}", PAYMENT_DELIVERY_PENDING, 1500, 0, 1100, &failing),
              PAYMENT_STORE_OK);
    CHECK_INT(failing, 1100);
    CHECK_INT(claim(s, "A", 1500, 100, 1, &c), PAYMENT_STORE_OK);
    CHECK_INT(c.n, 1);
    CHECK_STR(c.items[0].attempts, "[{\"a\":1}]");
    CHECK_INT(record(s, 1, 1, "A", "{\"a\":2}", PAYMENT_DELIVERY_PENDING, 2000, 0, 1600, &failing),
              PAYMENT_STORE_OK);
    CHECK_INT(failing, 1100);
    struct hook_read r;
    CHECK_INT(hook_get(s, "0190bbbb-0000-7000-8000-000000000001", &r), PAYMENT_STORE_OK);
    CHECK_INT(r.w.failing_since_ms, 1100);
    /* A success clears it. */
    CHECK_INT(claim(s, "A", 2000, 100, 1, &c), PAYMENT_STORE_OK);
    CHECK_INT(record(s, 1, 1, "A", "{\"a\":3}", PAYMENT_DELIVERY_SUCCEEDED, 0, 1, 2100, &failing),
              PAYMENT_STORE_OK);
    CHECK_INT(failing, 0);
    struct dl_list l;
    dl_all(s, 1, 0, &l);
    const struct dl *x = dl_find(&l, 1);
    CHECK(x != NULL);
    if (x) {
        CHECK_STR(x->attempts, "[{\"a\":1},{\"a\":2},{\"a\":3}]");
        CHECK_INT(x->d.attempts, 3);
        CHECK_INT(x->d.status, PAYMENT_DELIVERY_SUCCEEDED);
        CHECK_INT(x->d.next_ms, 0);
    }
    /* A failure on a disabled endpoint; enabling it again clears it. */
    CHECK_INT(record(s, 2, 1, "B", "{\"b\":1}", PAYMENT_DELIVERY_FAILED, 0, 0, 2200, &failing),
              PAYMENT_STORE_OK);
    CHECK_INT(failing, 2200);
    struct hook u;
    hook_init(&u, 1, ORG_A);
    u.w.version = 1;
    u.w.enabled = 0;
    CHECK_INT(payment_store_webhook_update(s, &u.w, 0), PAYMENT_STORE_OK);
    CHECK_INT(hook_get(s, u.w.id, &r), PAYMENT_STORE_OK);
    CHECK_INT(r.w.failing_since_ms, 2200); /* an update keeps it */
    u.w.version = 2;
    u.w.enabled = 1;
    CHECK_INT(payment_store_webhook_update(s, &u.w, 1), PAYMENT_STORE_OK);
    CHECK_INT(hook_get(s, u.w.id, &r), PAYMENT_STORE_OK);
    CHECK_INT(r.w.failing_since_ms, 0);
    /* Unknown deliveries, or another endpoint's: ENOTFOUND. */
    CHECK_INT(record(s, 9, 1, "A", "{}", PAYMENT_DELIVERY_FAILED, 0, 0, 1, NULL),
              PAYMENT_STORE_ENOTFOUND);
    CHECK_INT(record(s, 1, 2, "A", "{}", PAYMENT_DELIVERY_FAILED, 0, 0, 1, NULL),
              PAYMENT_STORE_ENOTFOUND);
}

static void case_retry(struct fixture *fx)
{
    payment_store *s = fx->s;
    hook_create(s, 1, ORG_A);
    struct payment_delivery_new d;
    delivery_init(&d, 1, 1, 1, 1);
    CHECK_INT(payment_store_deliveries_add(s, 0, 1, &d, 1, 0, 1000), PAYMENT_STORE_OK);
    struct dl_list c;
    CHECK_INT(claim(s, "A", 1000, 100, 1, &c), PAYMENT_STORE_OK);
    CHECK_INT(record(s, 1, 1, "A", "{\"a\":1}", PAYMENT_DELIVERY_FAILED, 0, 0, 1001, NULL),
              PAYMENT_STORE_OK);
    CHECK_INT(claim(s, "A", 50000, 100, 1, &c), PAYMENT_STORE_OK);
    CHECK_INT(c.n, 0); /* failed: never claimed */
    CHECK_INT(payment_store_delivery_retry(s, d.webhook_id, d.id, 7000), PAYMENT_STORE_OK);
    struct dl_list l;
    dl_all(s, 1, 0, &l);
    CHECK_INT(l.n, 1);
    CHECK_INT(l.items[0].d.status, PAYMENT_DELIVERY_PENDING);
    CHECK_INT(l.items[0].d.next_ms, 7000);
    CHECK_INT(l.items[0].d.attempts, 1);
    CHECK_INT(claim(s, "A", 7000, 100, 1, &c), PAYMENT_STORE_OK);
    CHECK_INT(c.n, 1);
    CHECK_INT(payment_store_delivery_retry(s, d.webhook_id, "0190dddd-0000-7000-8000-000000000009",
                                           7000),
              PAYMENT_STORE_ENOTFOUND);
    CHECK_INT(payment_store_delivery_retry(s, "0190bbbb-0000-7000-8000-000000000009", d.id, 7000),
              PAYMENT_STORE_ENOTFOUND);
}

/* ---- cases: lists, gauges, retention, cascades ------------------------------ */

static void case_lists(struct fixture *fx)
{
    payment_store *s = fx->s;
    for (int i = 1; i <= 5; i++)
        hook_create(s, i, i % 2 ? ORG_A : ORG_B); /* A: 1 3 5, B: 2 4 */
    struct hook u;
    hook_init(&u, 3, ORG_A);
    u.w.version = 1;
    u.w.enabled = 0;
    CHECK_INT(payment_store_webhook_update(s, &u.w, 0), PAYMENT_STORE_OK);

    struct id_list l = {0};
    int more = -1;
    struct payment_webhook_query q = {.limit = 2, .all_orgs = 1};
    CHECK_INT(payment_store_webhooks_list(s, &q, hook_collect, &l, &more), PAYMENT_STORE_OK);
    CHECK_INT(l.n, 2);
    CHECK_INT(more, 1);
    CHECK_STR(l.ids[1], "0190bbbb-0000-7000-8000-000000000002");
    q.after_id = l.ids[1];
    q.limit = 3;
    CHECK_INT(payment_store_webhooks_list(s, &q, hook_collect, &l, &more), PAYMENT_STORE_OK);
    CHECK_INT(l.n, 5);
    CHECK_INT(more, 0);
    CHECK_STR(l.ids[4], "0190bbbb-0000-7000-8000-000000000005");

    const char orgs[1][UUID_STR_LEN + 1] = {ORG_A};
    struct payment_webhook_query qa = {.limit = 10, .orgs = orgs, .n_orgs = 1};
    memset(&l, 0, sizeof l);
    CHECK_INT(payment_store_webhooks_list(s, &qa, hook_collect, &l, &more), PAYMENT_STORE_OK);
    CHECK_INT(l.n, 3);
    qa.enabled_only = 1;
    memset(&l, 0, sizeof l);
    CHECK_INT(payment_store_webhooks_list(s, &qa, hook_collect, &l, &more), PAYMENT_STORE_OK);
    CHECK_INT(l.n, 2);
    CHECK_STR(l.ids[0], "0190bbbb-0000-7000-8000-000000000001");
    CHECK_STR(l.ids[1], "0190bbbb-0000-7000-8000-000000000005");
    qa.n_orgs = 0; /* no organisation: none */
    memset(&l, 0, sizeof l);
    CHECK_INT(payment_store_webhooks_list(s, &qa, hook_collect, &l, &more), PAYMENT_STORE_OK);
    CHECK_INT(l.n, 0);

    /* Deliveries: status filter and pages. */
    struct payment_delivery_new d[5];
    for (int i = 0; i < 5; i++)
        delivery_init(&d[i], i + 1, 1, i + 1, i + 1);
    CHECK_INT(payment_store_deliveries_add(s, 0, 5, d, 5, 0, 1000), PAYMENT_STORE_OK);
    struct dl_list c;
    CHECK_INT(claim(s, "A", 1000, 100, 2, &c), PAYMENT_STORE_OK);
    CHECK_INT(record(s, 1, 1, "A", "{}", PAYMENT_DELIVERY_SUCCEEDED, 0, 1, 1001, NULL),
              PAYMENT_STORE_OK);
    CHECK_INT(record(s, 2, 1, "A", "{}", PAYMENT_DELIVERY_FAILED, 0, 0, 1001, NULL),
              PAYMENT_STORE_OK);
    struct dl_list dl;
    dl_all(s, 1, PAYMENT_DELIVERY_PENDING, &dl);
    CHECK_INT(dl.n, 3);
    dl_all(s, 1, PAYMENT_DELIVERY_SUCCEEDED | PAYMENT_DELIVERY_FAILED, &dl);
    CHECK_INT(dl.n, 2);
    dl_all(s, 2, 0, &dl);
    CHECK_INT(dl.n, 0);
    memset(&dl, 0, sizeof dl);
    struct payment_delivery_query dq = {.webhook_id = d[0].webhook_id, .limit = 2};
    CHECK_INT(payment_store_deliveries_list(s, &dq, dl_collect, &dl, &more), PAYMENT_STORE_OK);
    CHECK_INT(dl.n, 2);
    CHECK_INT(more, 1);
    dq.after_id = d[1].id;
    dq.limit = 3;
    CHECK_INT(payment_store_deliveries_list(s, &dq, dl_collect, &dl, &more), PAYMENT_STORE_OK);
    CHECK_INT(dl.n, 5);
    CHECK_INT(more, 0);
    CHECK_STR(dl.items[2].d.id, d[2].id);
    CHECK_STR(dl.items[4].d.id, d[4].id);
}

static void case_pending_purge(struct fixture *fx)
{
    payment_store *s = fx->s;
    hook_create(s, 1, ORG_A);
    int64_t count = -1, oldest = -1;
    CHECK_INT(payment_store_deliveries_pending(s, &count, &oldest), PAYMENT_STORE_OK);
    CHECK_INT(count, 0);
    CHECK_INT(oldest, 0);
    struct payment_delivery_new d[4];
    for (int i = 0; i < 4; i++) {
        delivery_init(&d[i], i + 1, 1, i + 1, i + 1);
        CHECK_INT(payment_store_deliveries_add(s, -1, 0, &d[i], 1, 0, 1000 * (i + 1)),
                  PAYMENT_STORE_OK);
    }
    CHECK_INT(payment_store_deliveries_pending(s, &count, &oldest), PAYMENT_STORE_OK);
    CHECK_INT(count, 4);
    CHECK_INT(oldest, 1000);
    struct dl_list c;
    CHECK_INT(claim(s, "A", 5000, 100, 3, &c), PAYMENT_STORE_OK);
    CHECK_INT(c.n, 3);
    CHECK_INT(record(s, 1, 1, "A", "{}", PAYMENT_DELIVERY_SUCCEEDED, 0, 1, 5001, NULL),
              PAYMENT_STORE_OK);
    CHECK_INT(record(s, 2, 1, "A", "{}", PAYMENT_DELIVERY_FAILED, 0, 0, 5001, NULL),
              PAYMENT_STORE_OK);
    CHECK_INT(record(s, 3, 1, "A", "{}", PAYMENT_DELIVERY_SUCCEEDED, 0, 1, 5001, NULL),
              PAYMENT_STORE_OK);
    CHECK_INT(payment_store_deliveries_pending(s, &count, &oldest), PAYMENT_STORE_OK);
    CHECK_INT(count, 1);
    CHECK_INT(oldest, 4000);
    /* Finished and created before 3000: 1 and 2; 3 is newer, 4 pending. */
    payment_store_deliveries_purge(s, 3000);
    struct dl_list l;
    dl_all(s, 1, 0, &l);
    CHECK_INT(l.n, 2);
    CHECK(dl_find(&l, 3) != NULL && dl_find(&l, 4) != NULL);
    payment_store_deliveries_purge(s, 10000);
    dl_all(s, 1, 0, &l);
    CHECK_INT(l.n, 1);
    CHECK(dl_find(&l, 4) != NULL);
}

static void case_delete_cascades(struct fixture *fx)
{
    payment_store *s = fx->s;
    hook_create(s, 1, ORG_A);
    hook_create(s, 2, ORG_A);
    struct payment_delivery_new d[3];
    delivery_init(&d[0], 1, 1, 1, 1);
    delivery_init(&d[1], 2, 1, 2, 2);
    delivery_init(&d[2], 3, 2, 1, 1);
    CHECK_INT(payment_store_deliveries_add(s, 0, 2, d, 3, 0, 1000), PAYMENT_STORE_OK);
    struct dl_list c;
    CHECK_INT(claim(s, "A", 1000, 100, 1, &c), PAYMENT_STORE_OK);
    CHECK_INT(c.n, 1);
    CHECK_INT(payment_store_webhook_delete(s, d[0].webhook_id, 0, NULL), PAYMENT_STORE_OK);
    struct dl_list l;
    dl_all(s, 1, 0, &l);
    CHECK_INT(l.n, 0);
    dl_all(s, 2, 0, &l);
    CHECK_INT(l.n, 1);
    int64_t failing = -1;
    CHECK_INT(record(s, 1, 1, "A", "{}", PAYMENT_DELIVERY_SUCCEEDED, 0, 1, 1001, &failing),
              PAYMENT_STORE_ENOTFOUND);
    CHECK_INT(claim(s, "A", 9000, 100, 10, &c), PAYMENT_STORE_OK);
    CHECK_INT(c.n, 1);
    CHECK_STR(c.items[0].d.id, d[2].id);
    /* A delivery of an endpoint gone meanwhile (the cascade not run):
     * recorded, the endpoint's failing_since_ms read as 0. */
    CHECK_INT(payment_store_webhook_delete(s, d[2].webhook_id, -1, NULL), PAYMENT_STORE_OK);
    delivery_init(&d[0], 4, 2, 9, 9);
    CHECK_INT(payment_store_deliveries_add(s, -1, 0, d, 1, 0, 9000), PAYMENT_STORE_OK);
    CHECK_INT(claim(s, "A", 9000, 100, 10, &c), PAYMENT_STORE_OK);
    CHECK_INT(c.n, 1);
    CHECK_INT(record(s, 4, 2, "A", "{}", PAYMENT_DELIVERY_FAILED, 0, 0, 9001, &failing),
              PAYMENT_STORE_OK);
    CHECK_INT(failing, 0);
}

/* ---- two processes claiming and recording at once --------------------------- */

#define RACE_DELIVERIES 40
#define RACE_LEASE_MS 60

/* What the two claimers share: who holds each delivery, as they believe. */
struct race {
    pthread_mutex_t mu;
    char holder[RACE_DELIVERIES][8]; /* "" when none */
    int64_t until[RACE_DELIVERIES];  /* the holder's lease end */
    int succeeded[RACE_DELIVERIES];  /* success records accepted */
    int records;                     /* records accepted, all */
    int conflicts;                   /* records refused */
    int overlaps;                    /* claims of a delivery another held */
    atomic_int done;                 /* deliveries succeeded */
};

struct racer {
    struct race *race;
    payment_store *s;
    const char *owner;
    unsigned seed;
    int errors; /* store errors seen */
};

/* The claim callback: note the lease, and any overlap with another's. */
struct race_claim {
    struct racer *r;
    int64_t now;
    int n[8];
    size_t count;
};

static int race_claimed(void *arg, const struct payment_delivery *d)
{
    struct race_claim *c = arg;
    struct race *race = c->r->race;
    int i = atoi(d->id + 24);
    if (i < 0 || i >= RACE_DELIVERIES || c->count >= 8)
        return 0;
    pthread_mutex_lock(&race->mu);
    if (race->holder[i][0] && strcmp(race->holder[i], c->r->owner) != 0 &&
        race->until[i] > c->now)
        race->overlaps++;
    snprintf(race->holder[i], sizeof race->holder[i], "%s", c->r->owner);
    race->until[i] = c->now + RACE_LEASE_MS;
    pthread_mutex_unlock(&race->mu);
    c->n[c->count++] = i;
    return 0;
}

static void *racer_main(void *arg)
{
    struct racer *r = arg;
    struct race *race = r->race;
    int64_t deadline = clock_mono_us() + 20 * 1000 * 1000;
    while (atomic_load(&race->done) < RACE_DELIVERIES && clock_mono_us() < deadline) {
        struct race_claim c = {.r = r, .now = clock_now_ms()};
        if (payment_store_deliveries_claim(r->s, r->owner, c.now, RACE_LEASE_MS, 4, race_claimed,
                                           &c) != PAYMENT_STORE_OK)
            r->errors++;
        for (size_t k = 0; k < c.count; k++) {
            int i = c.n[k];
            int roll = (int)(rand_r(&r->seed) % 10);
            if (roll == 0)
                usleep((RACE_LEASE_MS + 20) * 1000); /* outlives its lease */
            else
                usleep((useconds_t)(rand_r(&r->seed) % 3000));
            int ok = roll % 2; /* about half the attempts succeed */
            pthread_mutex_lock(&race->mu); /* let go before the store frees it */
            if (strcmp(race->holder[i], r->owner) == 0)
                race->holder[i][0] = '\0';
            pthread_mutex_unlock(&race->mu);
            int err = record(r->s, i, 1, r->owner, ok ? "{\"ok\":1}" : "{\"ok\":0}",
                             ok ? PAYMENT_DELIVERY_SUCCEEDED : PAYMENT_DELIVERY_PENDING,
                             clock_now_ms(), ok, clock_now_ms(), NULL);
            pthread_mutex_lock(&race->mu);
            if (err == PAYMENT_STORE_OK) {
                race->records++;
                if (ok) {
                    race->succeeded[i]++;
                    atomic_fetch_add(&race->done, 1);
                }
            } else if (err == PAYMENT_STORE_ECONFLICT) {
                race->conflicts++;
            } else {
                r->errors++;
            }
            pthread_mutex_unlock(&race->mu);
        }
        if (c.count == 0)
            usleep(2000);
    }
    return NULL;
}

static void case_two_claimers(struct fixture *fx)
{
    payment_store *s = fx->s;
    hook_create(s, 1, ORG_A);
    struct payment_delivery_new d[RACE_DELIVERIES];
    for (int i = 0; i < RACE_DELIVERIES; i++)
        delivery_init(&d[i], i, 1, i, i + 1);
    CHECK_INT(payment_store_deliveries_add(s, 0, RACE_DELIVERIES, d, RACE_DELIVERIES, 0,
                                           clock_now_ms()),
              PAYMENT_STORE_OK);
    char err[256] = "";
    payment_store *other = NULL;
    CHECK_INT(payment_store_open(fx->uri, 0, &other, err, sizeof err), PAYMENT_STORE_OK);
    if (!other)
        return;
    static struct race race;
    memset(&race, 0, sizeof race);
    CHECK_INT(pthread_mutex_init(&race.mu, NULL), 0);
    atomic_init(&race.done, 0);
    struct racer a = {.race = &race, .s = s, .owner = "A", .seed = 1};
    struct racer b = {.race = &race, .s = other, .owner = "B", .seed = 2};
    pthread_t ta, tb;
    CHECK_INT(pthread_create(&ta, NULL, racer_main, &a), 0);
    CHECK_INT(pthread_create(&tb, NULL, racer_main, &b), 0);
    CHECK_INT(pthread_join(ta, NULL), 0);
    CHECK_INT(pthread_join(tb, NULL), 0);
    payment_store_close(other);
    CHECK_INT(race.overlaps, 0);
    CHECK_INT(a.errors + b.errors, 0);
    struct dl_list l;
    dl_all(s, 1, 0, &l);
    CHECK_INT(l.n, RACE_DELIVERIES);
    int attempts = 0;
    for (size_t k = 0; k < l.n; k++) {
        int i = atoi(l.items[k].d.id + 24);
        CHECK_INT(l.items[k].d.status, PAYMENT_DELIVERY_SUCCEEDED);
        CHECK_INT(race.succeeded[i], 1); /* none succeeded twice, none lost */
        attempts += l.items[k].d.attempts;
    }
    CHECK_INT(attempts, race.records); /* every accepted record, and nothing else */
    fprintf(stderr, "  two claimers: %d records, %d refused\n", race.records, race.conflicts);
    pthread_mutex_destroy(&race.mu);
}

/* ---- a server that freezes ---------------------------------------------------- */

/* A TCP relay on 127.0.0.1 to the server: relays until frozen, then holds
 * every connection open and silent. */
struct relay {
    int listen_fd;
    int port;
    struct sockaddr_in server;
    atomic_int frozen;
    atomic_int stop;
    pthread_t thread;
};

static void relay_pipe(struct relay *r, int a, int b)
{
    struct pollfd p[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
    char buf[65536];
    while (!atomic_load(&r->stop)) {
        int n = poll(p, 2, 50);
        if (atomic_load(&r->frozen)) {
            usleep(20 * 1000); /* silent: nothing read, nothing written */
            continue;
        }
        if (n <= 0)
            continue;
        for (int k = 0; k < 2; k++) {
            if (!(p[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t got = read(p[k].fd, buf, sizeof buf);
            if (got <= 0)
                return;
            for (ssize_t off = 0; off < got;) {
                ssize_t put = write(p[1 - k].fd, buf + off, (size_t)(got - off));
                if (put <= 0)
                    return;
                off += put;
            }
        }
    }
}

struct relay_conn {
    struct relay *r;
    int fd;
};

static void *relay_conn_main(void *arg)
{
    struct relay_conn *c = arg;
    int up = socket(AF_INET, SOCK_STREAM, 0);
    if (up >= 0 && connect(up, (struct sockaddr *)&c->r->server, sizeof c->r->server) == 0)
        relay_pipe(c->r, c->fd, up);
    if (up >= 0)
        close(up);
    close(c->fd);
    free(c);
    return NULL;
}

static void *relay_main(void *arg)
{
    struct relay *r = arg;
    while (!atomic_load(&r->stop)) {
        struct pollfd p = {.fd = r->listen_fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int fd = accept(r->listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        struct relay_conn *c = malloc(sizeof *c);
        pthread_t t;
        if (!c) {
            close(fd);
            continue;
        }
        c->r = r;
        c->fd = fd;
        if (pthread_create(&t, NULL, relay_conn_main, c) != 0) {
            close(fd);
            free(c);
            continue;
        }
        pthread_detach(t);
    }
    return NULL;
}

/* Starts a relay to the server PAYMENTD_TEST_MONGO_URI names (its first
 * host, 127.0.0.1:PORT).  Returns 0, or -1. */
static int relay_start(struct relay *r)
{
    memset(r, 0, sizeof *r);
    const char *hosts = strstr(mongo_base(), "://");
    const char *colon = hosts ? strchr(hosts + 3, ':') : NULL;
    if (!colon)
        return -1;
    r->server.sin_family = AF_INET;
    r->server.sin_port = htons((uint16_t)atoi(colon + 1));
    r->server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    r->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (r->listen_fd < 0 || bind(r->listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(r->listen_fd, 16) != 0 || getsockname(r->listen_fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    r->port = ntohs(a.sin_port);
    atomic_init(&r->frozen, 0);
    atomic_init(&r->stop, 0);
    return pthread_create(&r->thread, NULL, relay_main, r) == 0 ? 0 : -1;
}

/* Stops the relay; its connections end within 50 ms. */
static void relay_stop(struct relay *r)
{
    atomic_store(&r->stop, 1);
    pthread_join(r->thread, NULL);
    close(r->listen_fd);
    usleep(200 * 1000);
}

static int count_call(void *arg, const struct payment_delivery *d)
{
    (void)d;
    (*(int *)arg)++;
    return 0;
}

/* Every webhook call through a frozen server answers EUNAVAILABLE within
 * the store's timeouts. */
static void mongo_webhooks_frozen_server(void)
{
    if (!mongo_base()) {
        TEST_SKIP(MONGO_URI_ENV " unset: no MongoDB to run on");
        return;
    }
    struct relay r;
    if (relay_start(&r) != 0) {
        CHECK(!"relay");
        return;
    }
    char db[64], base[128], uri[512], err[256] = "";
    mongo_db_name(db);
    snprintf(base, sizeof base, "mongodb://127.0.0.1:%d", r.port);
    mongo_uri_for(uri, sizeof uri, base, db,
                  "serverSelectionTimeoutMS=800&connectTimeoutMS=800&socketTimeoutMS=800");
    payment_store *s = NULL;
    CHECK_INT(payment_store_open(uri, 0, &s, err, sizeof err), PAYMENT_STORE_OK);
    if (s) {
        struct hook h;
        hook_init(&h, 1, ORG_A);
        CHECK_INT(payment_store_webhook_create(s, &h.w), PAYMENT_STORE_OK);
        struct payment_delivery_new d;
        delivery_init(&d, 1, 1, 1, 1);
        CHECK_INT(payment_store_deliveries_add(s, 0, 1, &d, 1, 0, 1000), PAYMENT_STORE_OK);
        atomic_store(&r.frozen, 1);
        int64_t t0 = clock_mono_us();
        struct hook_read hr;
        int calls = 0, more = 0;
        int64_t pos, count, oldest;
        hook_init(&h, 2, ORG_A);
        CHECK_INT(payment_store_webhook_create(s, &h.w), PAYMENT_STORE_EUNAVAILABLE);
        CHECK_INT(hook_get(s, d.webhook_id, &hr), PAYMENT_STORE_EUNAVAILABLE);
        CHECK_INT(payment_store_dispatch_pos(s, &pos), PAYMENT_STORE_EUNAVAILABLE);
        CHECK_INT(payment_store_deliveries_add(s, 1, 2, &d, 1, 0, 1000),
                  PAYMENT_STORE_EUNAVAILABLE);
        CHECK_INT(payment_store_deliveries_claim(s, "A", 1000, 100, 5, count_call, &calls),
                  PAYMENT_STORE_EUNAVAILABLE);
        CHECK_INT(record(s, 1, 1, "A", "{}", PAYMENT_DELIVERY_FAILED, 0, 0, 1, NULL),
                  PAYMENT_STORE_EUNAVAILABLE);
        CHECK_INT(payment_store_deliveries_pending(s, &count, &oldest), PAYMENT_STORE_EUNAVAILABLE);
        struct payment_delivery_query q = {.webhook_id = d.webhook_id, .limit = 5};
        CHECK_INT(payment_store_deliveries_list(s, &q, count_call, &calls, &more),
                  PAYMENT_STORE_EUNAVAILABLE);
        payment_store_deliveries_purge(s, 5000); /* returns */
        int64_t took_ms = (clock_mono_us() - t0) / 1000;
        fprintf(stderr, "  nine calls on a frozen server: %lld ms\n", (long long)took_ms);
        CHECK(took_ms < 9 * 3000);
        atomic_store(&r.frozen, 0);
        payment_store_close(s);
    }
    relay_stop(&r);
    mongo_drop(db);
}

/* ---- two processes dispatching at once ---------------------------------------- */

#define DISPATCH_ROUNDS 60

struct dispatcher {
    payment_store *s;
    int n;       /* its number: its deliveries' ids */
    int moved;   /* adds that moved the position */
    int refused; /* adds refused: ECONFLICT */
    int errors;  /* anything else */
};

/* Each round reads the position and adds one delivery moving it by one,
 * as a dispatcher does. */
static void *dispatcher_main(void *arg)
{
    struct dispatcher *p = arg;
    for (int i = 0; i < DISPATCH_ROUNDS; i++) {
        int64_t pos = 0;
        if (payment_store_dispatch_pos(p->s, &pos) != PAYMENT_STORE_OK) {
            p->errors++;
            continue;
        }
        struct payment_delivery_new d;
        delivery_init(&d, p->n * 1000 + i, 1, (int)pos + 1, pos + 1);
        int err = payment_store_deliveries_add(p->s, pos, pos + 1, &d, 1, 0, 1000);
        if (err == PAYMENT_STORE_OK)
            p->moved++;
        else if (err == PAYMENT_STORE_ECONFLICT)
            p->refused++;
        else
            p->errors++;
    }
    return NULL;
}

/* Two stores moving the position at once: each move is from the position
 * its dispatcher read, so the position ends at the number of moves, and
 * every event has one delivery. */
static void case_two_dispatchers(struct fixture *fx)
{
    hook_create(fx->s, 1, ORG_A);
    char err[256] = "";
    payment_store *other = NULL;
    CHECK_INT(payment_store_open(fx->uri, 0, &other, err, sizeof err), PAYMENT_STORE_OK);
    if (!other)
        return;
    struct dispatcher a = {.s = fx->s, .n = 1}, b = {.s = other, .n = 2};
    pthread_t ta, tb;
    CHECK_INT(pthread_create(&ta, NULL, dispatcher_main, &a), 0);
    CHECK_INT(pthread_create(&tb, NULL, dispatcher_main, &b), 0);
    CHECK_INT(pthread_join(ta, NULL), 0);
    CHECK_INT(pthread_join(tb, NULL), 0);
    payment_store_close(other);
    CHECK_INT(a.errors + b.errors, 0);
    int64_t pos = -1;
    CHECK_INT(payment_store_dispatch_pos(fx->s, &pos), PAYMENT_STORE_OK);
    CHECK_INT(pos, a.moved + b.moved);
    fprintf(stderr, "  two dispatchers: %d moves, %d refused\n", a.moved + b.moved,
            a.refused + b.refused);
    /* One delivery per event, whoever made it. */
    struct payment_delivery_query q = {.webhook_id = "0190bbbb-0000-7000-8000-000000000001",
                                       .limit = PAYMENT_WEBHOOKS_PAGE_MAX};
    int calls = 0, more = 0;
    CHECK_INT(payment_store_deliveries_list(fx->s, &q, count_call, &calls, &more),
              PAYMENT_STORE_OK);
    CHECK_INT(calls, pos); /* a refused add's delivery is its event's, made by the winner too */
}

/* ---- the tests ----------------------------------------------------------------- */

#define MONGO_CASE(name)                                                                    \
    static void mongo_webhooks_##name(void) { run_on_mongo(case_##name); }

MONGO_CASE(endpoints)
MONGO_CASE(limit)
MONGO_CASE(limit_stale_slot)
MONGO_CASE(after_pos)
MONGO_CASE(add)
MONGO_CASE(claim)
MONGO_CASE(record)
MONGO_CASE(retry)
MONGO_CASE(lists)
MONGO_CASE(pending_purge)
MONGO_CASE(delete_cascades)
MONGO_CASE(two_claimers)
MONGO_CASE(two_dispatchers)

TEST_MAIN(TEST(mongo_webhooks_endpoints), TEST(mongo_webhooks_limit),
          TEST(mongo_webhooks_limit_stale_slot), TEST(mongo_webhooks_after_pos),
          TEST(mongo_webhooks_add), TEST(mongo_webhooks_claim), TEST(mongo_webhooks_record),
          TEST(mongo_webhooks_retry), TEST(mongo_webhooks_lists),
          TEST(mongo_webhooks_pending_purge), TEST(mongo_webhooks_delete_cascades),
          TEST(mongo_webhooks_two_claimers), TEST(mongo_webhooks_two_dispatchers),
          TEST(mongo_webhooks_frozen_server))
