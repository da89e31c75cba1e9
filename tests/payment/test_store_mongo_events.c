/* store_mongo_events: what the MongoDB store promises about events (store.h,
 * "events"; how, in store_mongo_events.c), against the server
 * PAYMENTD_TEST_MONGO_URI names (the test double, tests/mongo/double.py);
 * without it every case is reported skipped.  Each case runs on a fresh
 * database, dropped afterwards.  Two stores opened on one database stand
 * for two processes, each with its sequencer; the sequencer's test hook
 * stands for a process that dies between the steps of a round. */
#include "payment/store_mongo.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "event_list.h"
#include "store_waiter.h"
#include "test.h"

#define MONGO_URI_ENV "PAYMENTD_TEST_MONGO_URI"
#define WAIT_MS 8000 /* what "eventually" may take: adoption runs every second */

/* ---- the server --------------------------------------------------------- */

static const char *mongo_base(void)
{
    const char *b = getenv(MONGO_URI_ENV);
    return b && b[0] ? b : NULL;
}

/* A client of the test's own, on the server (the caller destroys it). */
static mongoc_client_t *raw_client(void)
{
    mongoc_init();
    mongoc_client_t *c = mongoc_client_new(mongo_base());
    CHECK(c != NULL);
    if (c)
        CHECK(mongoc_client_set_error_api(c, MONGOC_ERROR_API_VERSION_2));
    return c;
}

/* Runs cmd (destroyed) on db; reply, when not NULL, is initialized. */
static int raw_command(const char *db, bson_t *cmd, bson_t *reply)
{
    bson_t ignored;
    bson_t *r = reply ? reply : &ignored;
    bson_error_t e;
    mongoc_client_t *c = raw_client();
    int ok = c && mongoc_client_command_simple(c, db, cmd, NULL, r, &e);
    if (!c)
        bson_init(r);
    if (!ok)
        fprintf(stderr, "  command on %s: %s\n", db, c ? e.message : "no client");
    if (!reply)
        bson_destroy(&ignored);
    mongoc_client_destroy(c); /* NULL is a no-op */
    bson_destroy(cmd);
    return ok;
}

/* Runs the write command cmd (destroyed) on db: it must succeed whole. */
static void raw_write(const char *db, bson_t *cmd)
{
    bson_t reply;
    CHECK(raw_command(db, cmd, &reply));
    bson_iter_t it;
    CHECK(!bson_iter_init_find(&it, &reply, "writeErrors"));
    bson_destroy(&reply);
}

/* The documents of db.coll that filter (destroyed) matches, counted (by a
 * find: the test double has no aggregate). */
static int64_t raw_count(const char *db, const char *coll, bson_t *filter)
{
    mongoc_client_t *c = raw_client();
    int64_t n = -1;
    if (c) {
        mongoc_collection_t *col = mongoc_client_get_collection(c, db, coll);
        bson_t *opts = BCON_NEW("projection", "{", "_id", BCON_INT32(1), "}");
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, filter, opts, NULL);
        const bson_t *doc;
        bson_error_t e;
        n = 0;
        while (mongoc_cursor_next(cur, &doc))
            n++;
        if (mongoc_cursor_error(cur, &e)) {
            fprintf(stderr, "  count %s: %s\n", coll, e.message);
            n = -1;
        }
        mongoc_cursor_destroy(cur);
        bson_destroy(opts);
        mongoc_collection_destroy(col);
        mongoc_client_destroy(c);
    }
    bson_destroy(filter);
    return n;
}

/* The first document of db.coll that filter (destroyed) matches, into out
 * (initialized when found).  Returns whether there was one. */
static int raw_find_one(const char *db, const char *coll, bson_t *filter, bson_t *out)
{
    mongoc_client_t *c = raw_client();
    int found = 0;
    if (c) {
        mongoc_collection_t *col = mongoc_client_get_collection(c, db, coll);
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, filter, NULL, NULL);
        const bson_t *doc;
        bson_error_t e;
        found = mongoc_cursor_next(cur, &doc);
        if (found)
            bson_copy_to(doc, out);
        CHECK(!mongoc_cursor_error(cur, &e));
        mongoc_cursor_destroy(cur);
        mongoc_collection_destroy(col);
        mongoc_client_destroy(c);
    }
    bson_destroy(filter);
    return found;
}

static int64_t bson_int(const bson_t *b, const char *key)
{
    bson_iter_t it;
    return bson_iter_init_find(&it, b, key) && BSON_ITER_HOLDS_NUMBER(&it) ? bson_iter_as_int64(&it)
                                                                            : -1;
}

/* The watermark the feed's document holds (0 without one). */
static int64_t raw_wm(const char *db)
{
    bson_t doc;
    int64_t wm = 0;
    if (raw_find_one(db, "counters", BCON_NEW("_id", BCON_UTF8("payments_feed")), &doc)) {
        wm = bson_int(&doc, "wm");
        bson_destroy(&doc);
    }
    return wm;
}

/* The entries in payment id's outbox, -1 when there is no such payment. */
static int raw_pending(const char *db, const char *id)
{
    bson_t doc;
    if (!raw_find_one(db, "payments", BCON_NEW("_id", BCON_UTF8(id)), &doc))
        return -1;
    bson_iter_t it, list;
    int n = 0;
    if (bson_iter_init_find(&it, &doc, "pend") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &list))
        while (bson_iter_next(&list))
            n++;
    bson_destroy(&doc);
    return n;
}

/* Events stored about payment id: in the feed's collection, stubs aside. */
static int64_t raw_events_of(const char *db, const char *id)
{
    return raw_count(db, "payments_events", BCON_NEW("payment_id", BCON_UTF8(id)));
}

/* ---- fixtures ----------------------------------------------------------- */

struct fixture {
    char db[64];
    char uri[512];
    payment_store *s; /* the store the case writes with */
};

/* A database of its own on the server, and a store on it.  Returns 0 after
 * reporting the case skipped (no server) or failed. */
static int fixture_open(struct fixture *fx)
{
    memset(fx, 0, sizeof *fx);
    if (!mongo_base()) {
        TEST_SKIP(MONGO_URI_ENV " unset: no MongoDB to run on");
        return 0;
    }
    snprintf(fx->db, sizeof fx->db, "paymentd_ev_%ld_%lld", (long)getpid(),
             (long long)clock_mono_us());
    const char *hosts = strstr(mongo_base(), "://");
    hosts = hosts ? hosts + 3 : mongo_base();
    size_t hlen = strcspn(hosts, "/?");
    snprintf(fx->uri, sizeof fx->uri, "%.*s/%s", (int)(hosts + hlen - mongo_base()), mongo_base(),
             fx->db);
    char err[256] = "";
    int rc = payment_store_open(fx->uri, 0, &fx->s, err, sizeof err);
    CHECK_INT(rc, PAYMENT_STORE_OK);
    if (rc != PAYMENT_STORE_OK)
        fprintf(stderr, "  open %s: %s\n", fx->uri, err);
    return rc == PAYMENT_STORE_OK;
}

/* Another store on fx's database: another process. */
static payment_store *fixture_other(const struct fixture *fx)
{
    payment_store *s = NULL;
    char err[256] = "";
    CHECK_INT(payment_store_open(fx->uri, 0, &s, err, sizeof err), PAYMENT_STORE_OK);
    return s;
}

static void fixture_close(struct fixture *fx)
{
    payment_store_close(fx->s);
    fx->s = NULL;
    if (fx->db[0])
        CHECK(raw_command(fx->db, BCON_NEW("dropDatabase", BCON_INT32(1)), NULL));
}

/* ---- payments and writes ------------------------------------------------- */

struct pay {
    struct payment_row row;
    char doc[192];
};

/* Payment n of organisation org at version v, its document naming both. */
static void pay_init(struct pay *p, int n, int org, int64_t v)
{
    memset(p, 0, sizeof *p);
    snprintf(p->row.id, sizeof p->row.id, "00000000-0000-4000-8000-%012d", n);
    snprintf(p->row.organisation_id, sizeof p->row.organisation_id,
             "0a0a0a0a-0000-4000-8000-%012d", org);
    p->row.created_ms = 1000;
    p->row.currency = "GBP";
    p->row.version = v;
    p->row.modified_ms = 1000 + v;
    p->row.doc = p->doc;
    p->row.doc_len = (size_t)snprintf(p->doc, sizeof p->doc, "{\"id\":\"%s\",\"v\":%lld}",
                                      p->row.id, (long long)v);
}

/* The same payment at version v. */
static void pay_version(struct pay *p, int64_t v)
{
    int n = atoi(p->row.id + 24), org = atoi(p->row.organisation_id + 24);
    pay_init(p, n, org, v);
}

static int sync_create(payment_store *s, const struct pay *p, const struct payment_idem *idem,
                       const struct payment_event_info *ev)
{
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_create(s, &p->row, idem, ev, waiter_done, &w);
    waiter_wait(&w);
    return w.err;
}

static int sync_update(payment_store *s, const struct pay *p, const struct payment_idem *idem,
                       const struct payment_event_info *ev)
{
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_update(s, &p->row, p->row.version - 1, idem, ev, waiter_done, &w);
    waiter_wait(&w);
    return w.err;
}

static int sync_delete(payment_store *s, const char *id, int64_t expected,
                       const struct payment_event_info *ev)
{
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_delete(s, id, expected, NULL, ev, waiter_done, &w);
    waiter_wait(&w);
    return w.err;
}

static int sync_apply(payment_store *s, const struct payment_apply *a)
{
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_apply(s, a, waiter_done, &w);
    waiter_wait(&w);
    return w.err;
}

static void apply_init(struct payment_apply *a, const char *op_id, uint64_t seq,
                       enum payment_apply_kind kind)
{
    memset(a, 0, sizeof *a);
    a->op_id = op_id;
    a->seq = seq;
    a->fence = 1;
    a->kind = kind;
    a->expected_version = -1;
    a->applied_ms = 2000;
}

/* ---- events read back ----------------------------------------------------- */


/* payment id's whole history into out, read in pages of two. */
static int history_all(payment_store *s, const char *id, struct seen_list *out)
{
    int64_t after = -1;
    for (;;) {
        size_t before = out->n;
        int more = 0;
        int err = payment_store_history(s, id, after, 2, seen_add, out, &more);
        if (err != PAYMENT_STORE_OK)
            return err;
        if (out->n > before)
            after = out->ev[out->n - 1].version;
        if (!more)
            return PAYMENT_STORE_OK;
    }
}

static void feed_query(struct payment_event_query *q, int64_t after, uint32_t limit)
{
    memset(q, 0, sizeof *q);
    q->after_pos = after;
    q->limit = limit;
    q->all_orgs = 1;
    q->from_ms = INT64_MIN;
    q->to_ms = INT64_MAX;
}

/* Follows the feed from *cursor in pages of limit until a page comes back
 * short, appending to out and moving *cursor. */
static int feed_follow(payment_store *s, int64_t *cursor, uint32_t limit, struct seen_list *out)
{
    for (;;) {
        struct payment_event_query q;
        feed_query(&q, *cursor, limit);
        size_t before = out->n;
        int64_t next = -1;
        int err = payment_store_events(s, &q, seen_add, out, &next);
        if (err != PAYMENT_STORE_OK)
            return err;
        CHECK(next >= *cursor);
        *cursor = next;
        if (out->n - before < limit)
            return PAYMENT_STORE_OK;
    }
}

/* Follows the feed until out holds want events or WAIT_MS passed. */
static void feed_wait(payment_store *s, int64_t *cursor, struct seen_list *out, size_t want)
{
    int64_t until = clock_mono_us() + WAIT_MS * 1000LL;
    while (out->n < want && clock_mono_us() < until) {
        CHECK_INT(feed_follow(s, cursor, 100, out), PAYMENT_STORE_OK);
        if (out->n < want)
            usleep(20000);
    }
}

/* Whether an event id is a UUIDv7 in lower case. */
static int is_uuid_v7(const char *id)
{
    char canon[UUID_STR_LEN + 1];
    return strlen(id) == UUID_STR_LEN && uuid_canonical(id, UUID_STR_LEN, canon) == 0 &&
           strcmp(canon, id) == 0 && id[14] == '7';
}

/* Whether the feed's events l are in strictly increasing positions, each
 * event once. */
static int feed_sane(const struct seen_list *l)
{
    for (size_t i = 1; i < l->n; i++)
        if (l->ev[i].pos <= l->ev[i - 1].pos)
            return 0;
    for (size_t i = 0; i < l->n; i++)
        for (size_t j = i + 1; j < l->n; j++)
            if (strcmp(l->ev[i].id, l->ev[j].id) == 0)
                return 0;
    return 1;
}

/* ---- every write kind records one event -------------------------------------- */

/* Synchronous writes: one event each, with who and what made them; the
 * delete's with the document as it was at version + 1, which the tombstone
 * takes.  Failed and refused writes record none. */
static int wait_outbox_empty(const char *db, const char *id);

static void writes_sync(struct fixture *fx, struct pay *p)
{
    payment_store *s = fx->s;
    struct payment_event_info info = {.api_key_id = "key-1",
                                      .request_id = "req-1",
                                      .idempotency_key = "idem-1",
                                      .occurred_ms = 5000};
    pay_init(p, 1, 1, 0);
    CHECK_INT(sync_create(s, p, NULL, &info), PAYMENT_STORE_OK);
    struct payment_event_info upd = {.changes = "[\"/attributes/amount\"]"};
    struct pay p1 = *p;
    pay_version(&p1, 1);
    p1.row.modified_ms = 7000;
    CHECK_INT(sync_update(s, &p1, NULL, &upd), PAYMENT_STORE_OK);
    CHECK_INT(sync_delete(s, p->row.id, 1, NULL), PAYMENT_STORE_OK);

    struct seen_list h = {0};
    CHECK_INT(history_all(s, p->row.id, &h), PAYMENT_STORE_OK);
    CHECK_INT(h.n, 3);
    if (h.n == 3) {
        CHECK_INT(h.ev[0].type, PAYMENT_EVENT_CREATED);
        CHECK_INT(h.ev[0].version, 0);
        CHECK_STR(h.ev[0].doc, p->doc);
        CHECK_STR(h.ev[0].org, p->row.organisation_id);
        CHECK_STR(h.ev[0].pid, p->row.id);
        CHECK_STR(h.ev[0].api_key_id, "key-1");
        CHECK_STR(h.ev[0].request_id, "req-1");
        CHECK_STR(h.ev[0].idem_key, "idem-1");
        CHECK_STR(h.ev[0].op_id, NULL_TEXT);
        CHECK_STR(h.ev[0].changes, NULL_TEXT);
        CHECK_INT(h.ev[0].occurred_ms, 5000);
        CHECK(is_uuid_v7(h.ev[0].id));
        CHECK_INT(h.ev[1].type, PAYMENT_EVENT_UPDATED);
        CHECK_INT(h.ev[1].version, 1);
        CHECK_STR(h.ev[1].doc, p1.doc);
        CHECK_STR(h.ev[1].changes, "[\"/attributes/amount\"]");
        CHECK_STR(h.ev[1].api_key_id, NULL_TEXT);
        CHECK_INT(h.ev[1].occurred_ms, 7000); /* the row's modified_ms */
        CHECK_INT(h.ev[2].type, PAYMENT_EVENT_DELETED);
        CHECK_INT(h.ev[2].version, 2);
        CHECK_STR(h.ev[2].doc, p1.doc); /* as it was */
        CHECK_STR(h.ev[2].org, p->row.organisation_id);
        CHECK(h.ev[2].occurred_ms > 1000000); /* now */
        CHECK(strcmp(h.ev[0].id, h.ev[1].id) != 0 && strcmp(h.ev[1].id, h.ev[2].id) != 0);
        CHECK(h.ev[0].pos > 0 && h.ev[0].pos < h.ev[1].pos && h.ev[1].pos < h.ev[2].pos);
    }
    bson_t doc;
    CHECK(raw_find_one(fx->db, "payments", BCON_NEW("_id", BCON_UTF8(p->row.id)), &doc));
    CHECK_INT(bson_int(&doc, "version"), 2); /* the tombstone's */
    bson_destroy(&doc);
    seen_free(&h);

    /* Failed and refused writes. */
    struct payment_idem rec = {.scope = "s", .key = "k", .fingerprint = "f", .status = 201};
    struct pay q, q1, r;
    pay_init(&q, 2, 1, 0);
    pay_init(&r, 3, 1, 0);
    CHECK_INT(sync_create(s, p, NULL, NULL), PAYMENT_STORE_EDUPLICATE);
    CHECK_INT(sync_update(s, &p1, NULL, NULL), PAYMENT_STORE_ENOTFOUND);
    CHECK_INT(sync_delete(s, p->row.id, -1, NULL), PAYMENT_STORE_ENOTFOUND);
    CHECK_INT(sync_create(s, &q, &rec, NULL), PAYMENT_STORE_OK);
    CHECK_INT(sync_create(s, &r, &rec, NULL), PAYMENT_STORE_EIDEMPOTENT); /* a replay */
    q1 = q;
    pay_version(&q1, 1);
    CHECK_INT(sync_update(s, &q1, &rec, NULL), PAYMENT_STORE_EIDEMPOTENT);
    pay_version(&q1, 6);
    CHECK_INT(sync_update(s, &q1, NULL, NULL), PAYMENT_STORE_ECONFLICT);
    CHECK_INT(sync_delete(s, q.row.id, 4, NULL), PAYMENT_STORE_ECONFLICT);
    CHECK(wait_outbox_empty(fx->db, q.row.id)); /* the sequencer stamps q's create */
    CHECK_INT(raw_events_of(fx->db, p->row.id), 3);
    CHECK_INT(raw_events_of(fx->db, q.row.id), 1);
    CHECK_INT(raw_events_of(fx->db, r.row.id), 0);
    CHECK_INT(raw_pending(fx->db, q.row.id), 0);
}

/* Operations from the broker: one event per write, carrying the
 * operation's id; kind NONE, failures and redeliveries none. */
static void writes_applied(struct fixture *fx)
{
    payment_store *s = fx->s;
    struct pay p, p1;
    pay_init(&p, 4, 2, 0);
    struct payment_apply a;
    apply_init(&a, "op-c", 1, PAYMENT_APPLY_CREATE);
    a.row = &p.row;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    p1 = p;
    pay_version(&p1, 1);
    struct payment_event_info info = {.operation_id = "op-u-given", .changes = "[\"/x\"]"};
    apply_init(&a, "op-u", 2, PAYMENT_APPLY_UPDATE);
    a.row = &p1.row;
    a.expected_version = 0;
    a.event = &info;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    apply_init(&a, "op-u", 3, PAYMENT_APPLY_UPDATE); /* republished */
    a.row = &p1.row;
    a.expected_version = 0;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_ESKIPPED);
    apply_init(&a, "op-n", 4, PAYMENT_APPLY_NONE);
    a.payment_id = p.row.id;
    a.organisation_id = p.row.organisation_id;
    a.error_code = "validation_failed";
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    apply_init(&a, "op-x", 5, PAYMENT_APPLY_UPDATE); /* version_conflict */
    a.row = &p1.row;
    a.expected_version = 0;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    apply_init(&a, "op-d", 6, PAYMENT_APPLY_DELETE);
    a.payment_id = p.row.id;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    struct payment_op_found f;
    CHECK_INT(payment_store_op_get(s, "op-d", &f), PAYMENT_STORE_OK);
    CHECK_INT(f.version, 1); /* the outcome names the version deleted */

    struct seen_list h = {0};
    CHECK_INT(history_all(s, p.row.id, &h), PAYMENT_STORE_OK);
    CHECK_INT(h.n, 3);
    if (h.n == 3) {
        CHECK_STR(h.ev[0].op_id, "op-c");
        CHECK_INT(h.ev[0].type, PAYMENT_EVENT_CREATED);
        CHECK_STR(h.ev[1].op_id, "op-u-given");
        CHECK_STR(h.ev[1].changes, "[\"/x\"]");
        CHECK_STR(h.ev[1].doc, p1.doc);
        CHECK_STR(h.ev[2].op_id, "op-d");
        CHECK_INT(h.ev[2].type, PAYMENT_EVENT_DELETED);
        CHECK_INT(h.ev[2].version, 2);
        CHECK_STR(h.ev[2].doc, p1.doc);
    }
    seen_free(&h);
    CHECK_INT(raw_events_of(fx->db, p.row.id), 3);
}

/* Every write kind, then the feed, read at once (a process reads its own
 * writes in the feed too): every event exactly once, in position order,
 * the same as the histories. */
static void mongo_events_writes(void)
{
    struct fixture fx;
    if (!fixture_open(&fx))
        return;
    struct pay p;
    writes_sync(&fx, &p);
    writes_applied(&fx);
    struct seen_list feed = {0}, h = {0};
    int64_t cursor = 0;
    CHECK_INT(feed_follow(fx.s, &cursor, 3, &feed), PAYMENT_STORE_OK);
    CHECK_INT(feed.n, 7); /* p: 3, payment 2: 1, payment 4: 3 */
    CHECK(feed_sane(&feed));
    CHECK_INT(history_all(fx.s, p.row.id, &h), PAYMENT_STORE_OK);
    for (size_t i = 0; i < h.n && i < feed.n; i++) {
        CHECK_STR(feed.ev[i].id, h.ev[i].id);
        CHECK_INT(feed.ev[i].pos, h.ev[i].pos);
    }
    CHECK_INT(cursor, feed.n ? feed.ev[feed.n - 1].pos : -1);
    seen_free(&feed);
    seen_free(&h);
    fixture_close(&fx);
}

/* ---- histories read their writes ---------------------------------------------- */

/* A test hook: every round stops as it starts (a process whose sequencer
 * never gets anywhere). */
static int hook_never(void *arg, enum mongo_seq_stage stage)
{
    (void)arg;
    return stage == MONGO_SEQ_START;
}

/* A payment written by a process whose sequencer stamps nothing is in the
 * history another process reads right after each write (the reader stamps
 * the outbox itself), deleted or not, in pages; and then in that reader's
 * feed. */
static void mongo_events_history_reads_writes(void)
{
    struct fixture fx;
    if (!fixture_open(&fx))
        return;
    payment_store *reader = fixture_other(&fx);
    mongo_seq_set_hook(fx.s, hook_never, NULL);
    struct pay p;
    pay_init(&p, 1, 1, 0);
    for (int64_t v = 0; reader && v < 5; v++) {
        pay_version(&p, v);
        CHECK_INT(v == 0 ? sync_create(fx.s, &p, NULL, NULL) : sync_update(fx.s, &p, NULL, NULL),
                  PAYMENT_STORE_OK);
        struct seen_list h = {0};
        CHECK_INT(history_all(reader, p.row.id, &h), PAYMENT_STORE_OK);
        CHECK_INT(h.n, v + 1);
        if (h.n == (size_t)v + 1) {
            CHECK_INT(h.ev[v].version, v);
            CHECK_STR(h.ev[v].doc, p.doc);
            CHECK(h.ev[v].pos > 0);
        }
        seen_free(&h);
    }
    CHECK_INT(sync_delete(fx.s, p.row.id, -1, NULL), PAYMENT_STORE_OK);
    struct seen_list h = {0}, page = {0}, feed = {0};
    if (reader) {
        CHECK_INT(history_all(reader, p.row.id, &h), PAYMENT_STORE_OK);
        CHECK_INT(h.n, 6);
        if (h.n == 6)
            CHECK_INT(h.ev[5].type, PAYMENT_EVENT_DELETED);
        CHECK_INT(raw_pending(fx.db, p.row.id), 0);
        int more = 0;
        CHECK_INT(payment_store_history(reader, p.row.id, 1, 3, seen_add, &page, &more),
                  PAYMENT_STORE_OK);
        CHECK_INT(page.n, 3);
        CHECK_INT(more, 1);
        if (page.n == 3)
            CHECK_INT(page.ev[0].version, 2);
        int64_t cursor = 0;
        CHECK_INT(feed_follow(reader, &cursor, 10, &feed), PAYMENT_STORE_OK);
        CHECK_INT(feed.n, 6);
        CHECK_INT(payment_store_history(reader, "00000000-0000-4000-8000-000000000099", -1, 5,
                                        seen_add, &page, &more),
                  PAYMENT_STORE_OK);
        CHECK_INT(more, 0);
        CHECK_INT(page.n, 3); /* nothing added: no such payment */
    }
    seen_free(&h);
    seen_free(&page);
    seen_free(&feed);
    payment_store_close(reader);
    fixture_close(&fx);
}

/* ---- two sequencers, several writers, readers following ----------------------- */

#define TS_WRITERS 4  /* threads, half on each store */
#define TS_PAYMENTS 8 /* payments each writes */
#define TS_UPDATES 3  /* updates of each */

struct ts_writer {
    payment_store *s;
    int base; /* its first payment number */
};

static void *ts_writer_main(void *arg)
{
    struct ts_writer *w = arg;
    struct pay p[TS_PAYMENTS];
    for (int i = 0; i < TS_PAYMENTS; i++) {
        pay_init(&p[i], w->base + i, 1 + i % 2, 0);
        CHECK_INT(sync_create(w->s, &p[i], NULL, NULL), PAYMENT_STORE_OK);
    }
    for (int v = 1; v <= TS_UPDATES; v++) {
        for (int i = 0; i < TS_PAYMENTS; i++) {
            pay_version(&p[i], v);
            CHECK_INT(sync_update(w->s, &p[i], NULL, NULL), PAYMENT_STORE_OK);
        }
    }
    for (int i = 0; i < TS_PAYMENTS; i += 3)
        CHECK_INT(sync_delete(w->s, p[i].row.id, -1, NULL), PAYMENT_STORE_OK);
    return NULL;
}

/* The events a writer makes: every payment's, and a delete for every third. */
#define TS_EVENTS (TS_WRITERS * (TS_PAYMENTS * (1 + TS_UPDATES) + (TS_PAYMENTS + 2) / 3))

struct ts_reader {
    payment_store *s;
    uint32_t page;           /* its page size */
    struct seen_list seen;      /* every event it read, in order */
    int64_t last[TS_WRITERS * TS_PAYMENTS + 1]; /* per payment number: last version seen */
    int out_of_order;        /* events that were not their payment's next version */
};

/* Follows the feed until it read every event or WAIT_MS passed since the
 * last one, checking each payment's versions come one after the other. */
static void *ts_reader_main(void *arg)
{
    struct ts_reader *r = arg;
    int64_t cursor = 0, idle_until = clock_mono_us() + 4 * WAIT_MS * 1000LL;
    for (int i = 0; i <= TS_WRITERS * TS_PAYMENTS; i++)
        r->last[i] = -1;
    while (r->seen.n < TS_EVENTS && clock_mono_us() < idle_until) {
        size_t before = r->seen.n;
        CHECK_INT(feed_follow(r->s, &cursor, r->page, &r->seen), PAYMENT_STORE_OK);
        for (size_t i = before; i < r->seen.n; i++) {
            const struct seen *e = &r->seen.ev[i];
            int n = atoi(e->pid + 24);
            if (n < 1 || n > TS_WRITERS * TS_PAYMENTS || e->version != r->last[n] + 1)
                r->out_of_order++;
            else
                r->last[n] = e->version;
        }
        if (r->seen.n > before)
            idle_until = clock_mono_us() + WAIT_MS * 1000LL;
        else
            usleep(5000);
    }
    return NULL;
}

/* A test hook that slows a sequencer's rounds before they read the
 * outboxes, so that these hold several entries by then, some written after
 * the round took its notes. */
static int hook_slow(void *arg, enum mongo_seq_stage stage)
{
    (void)arg;
    if (stage == MONGO_SEQ_START)
        usleep(30000);
    return 0;
}

/* Two stores (two processes, two sequencers) written by several threads
 * at once, while three readers follow the feed with different page sizes:
 * each reader sees every event exactly once, positions increasing, each
 * payment's versions in order, and the same events as the histories. */
static void mongo_events_two_sequencers(void)
{
    struct fixture fx;
    if (!fixture_open(&fx))
        return;
    payment_store *other = fixture_other(&fx);
    if (!other) {
        fixture_close(&fx);
        return;
    }
    mongo_seq_set_hook(other, hook_slow, NULL);
    struct ts_writer w[TS_WRITERS];
    struct ts_reader *r = calloc(3, sizeof *r);
    pthread_t wt[TS_WRITERS], rt[3];
    static const uint32_t pages[3] = {1, 7, 100};
    for (int i = 0; i < 3; i++) {
        r[i].s = i == 1 ? other : fx.s;
        r[i].page = pages[i];
        CHECK_INT(pthread_create(&rt[i], NULL, ts_reader_main, &r[i]), 0);
    }
    for (int i = 0; i < TS_WRITERS; i++) {
        w[i].s = i % 2 ? other : fx.s;
        w[i].base = 1 + i * TS_PAYMENTS;
        CHECK_INT(pthread_create(&wt[i], NULL, ts_writer_main, &w[i]), 0);
    }
    for (int i = 0; i < TS_WRITERS; i++)
        CHECK_INT(pthread_join(wt[i], NULL), 0);
    for (int i = 0; i < 3; i++) {
        CHECK_INT(pthread_join(rt[i], NULL), 0);
        CHECK_INT(r[i].seen.n, TS_EVENTS);
        CHECK_INT(r[i].out_of_order, 0);
        CHECK(feed_sane(&r[i].seen));
        for (size_t k = 0; i > 0 && k < r[i].seen.n && k < r[0].seen.n; k++)
            CHECK_INT(r[i].seen.ev[k].pos, r[0].seen.ev[k].pos);
    }
    /* The histories hold the same events, at the same positions. */
    size_t matched = 0;
    for (int n = 1; n <= TS_WRITERS * TS_PAYMENTS; n++) {
        struct pay p;
        pay_init(&p, n, 1, 0);
        struct seen_list h = {0};
        CHECK_INT(history_all(fx.s, p.row.id, &h), PAYMENT_STORE_OK);
        for (size_t i = 0; i < h.n; i++)
            for (size_t k = 0; k < r[0].seen.n; k++)
                if (strcmp(r[0].seen.ev[k].id, h.ev[i].id) == 0 && r[0].seen.ev[k].pos == h.ev[i].pos)
                    matched++;
        seen_free(&h);
    }
    CHECK_INT(matched, TS_EVENTS);
    CHECK_INT(raw_count(fx.db, "payments_events", bson_new()), TS_EVENTS);
    for (int i = 0; i < 3; i++)
        seen_free(&r[i].seen);
    free(r);
    payment_store_close(other);
    fixture_close(&fx);
}

/* ---- the order of one process's writes ----------------------------------------- */

#define OW_PAYMENTS 3 /* payments written in turn */
#define OW_ROUNDS 8   /* writes of each */

/* Writes made one after the other, on several payments, are fed in the
 * order they were made, also when the sequencer lags behind them (its
 * rounds then find outboxes holding entries written after they took their
 * notes). */
static void mongo_events_order_of_writes(void)
{
    struct fixture fx;
    if (!fixture_open(&fx))
        return;
    mongo_seq_set_hook(fx.s, hook_slow, NULL);
    usleep(300 * 1000); /* the sequencer's first poll over: it takes the first note alone */
    struct pay p[OW_PAYMENTS];
    char made[OW_PAYMENTS * OW_ROUNDS][UUID_STR_LEN + 8]; /* payment id and version, in order */
    size_t n = 0;
    for (int v = 0; v < OW_ROUNDS; v++) {
        for (int i = 0; i < OW_PAYMENTS; i++) {
            if (v == 0) {
                pay_init(&p[i], i + 1, 1, 0);
                CHECK_INT(sync_create(fx.s, &p[i], NULL, NULL), PAYMENT_STORE_OK);
            } else {
                pay_version(&p[i], v);
                CHECK_INT(sync_update(fx.s, &p[i], NULL, NULL), PAYMENT_STORE_OK);
            }
            snprintf(made[n++], sizeof made[0], "%s/%d", p[i].row.id, v);
        }
    }
    struct seen_list feed = {0};
    int64_t cursor = 0;
    feed_wait(fx.s, &cursor, &feed, n);
    CHECK_INT(feed.n, n);
    int misplaced = 0;
    for (size_t k = 0; k < feed.n && k < n; k++) {
        char got[UUID_STR_LEN + 8];
        snprintf(got, sizeof got, "%s/%lld", feed.ev[k].pid, (long long)feed.ev[k].version);
        if (strcmp(got, made[k]) != 0 && misplaced++ == 0)
            fprintf(stderr, "  position %lld: %s, written as %s\n", (long long)feed.ev[k].pos, got,
                    made[k]);
    }
    CHECK_INT(misplaced, 0);
    seen_free(&feed);
    mongo_seq_set_hook(fx.s, NULL, NULL);
    fixture_close(&fx);
}

/* ---- crashes between the steps ------------------------------------------------ */

/* A test hook: the first round to reach stage (arg) stops there. */
struct crash {
    enum mongo_seq_stage stage;
    atomic_int crashed; /* rounds stopped */
};

static int hook_crash(void *arg, enum mongo_seq_stage stage)
{
    struct crash *c = arg;
    int expected = 0;
    return stage == c->stage && atomic_compare_exchange_strong(&c->crashed, &expected, 1);
}

/* Waits until payment id's outbox is empty. */
static int wait_outbox_empty(const char *db, const char *id)
{
    int64_t until = clock_mono_us() + WAIT_MS * 1000LL;
    int n;
    while ((n = raw_pending(db, id)) != 0 && clock_mono_us() < until)
        usleep(20000);
    return n == 0;
}

/* A crash after the insert, before the watermark: the event is stored
 * above the watermark, where no reader sees it; with no other write, a
 * sequencer finds the entry still in the outbox, already in the feed, and
 * moves the watermark: the event is read once, at the position it got. */
static void mongo_events_crash_after_insert(void)
{
    struct fixture fx;
    if (!fixture_open(&fx))
        return;
    struct crash c = {.stage = MONGO_SEQ_INSERTED};
    atomic_init(&c.crashed, 0);
    mongo_seq_set_hook(fx.s, hook_crash, &c);
    struct pay p;
    pay_init(&p, 1, 1, 0);
    CHECK_INT(sync_create(fx.s, &p, NULL, NULL), PAYMENT_STORE_OK);
    int64_t until = clock_mono_us() + WAIT_MS * 1000LL;
    while (!atomic_load(&c.crashed) && clock_mono_us() < until)
        usleep(5000);
    CHECK(atomic_load(&c.crashed));
    bson_t doc;
    int64_t pos = -1;
    if (raw_find_one(fx.db, "payments_events", BCON_NEW("payment_id", BCON_UTF8(p.row.id)),
                     &doc)) {
        pos = bson_int(&doc, "_id");
        bson_destroy(&doc);
    }
    CHECK(pos > 0);
    CHECK(raw_wm(fx.db) < pos);
    CHECK_INT(raw_pending(fx.db, p.row.id), 1);

    struct seen_list feed = {0};
    int64_t cursor = 0;
    CHECK_INT(feed_follow(fx.s, &cursor, 10, &feed), PAYMENT_STORE_OK);
    CHECK(cursor < pos); /* not past the event, which is not readable yet */
    feed_wait(fx.s, &cursor, &feed, 1);
    CHECK_INT(feed.n, 1);
    if (feed.n == 1)
        CHECK_INT(feed.ev[0].pos, pos);
    CHECK(wait_outbox_empty(fx.db, p.row.id));
    CHECK_INT(raw_events_of(fx.db, p.row.id), 1);
    usleep(1500 * 1000); /* an adoption round more: nothing new */
    CHECK_INT(feed_follow(fx.s, &cursor, 10, &feed), PAYMENT_STORE_OK);
    CHECK_INT(feed.n, 1);
    seen_free(&feed);
    mongo_seq_set_hook(fx.s, NULL, NULL);
    fixture_close(&fx);
}

/* The outbox entry of payment p's event e, as a write leaves it (queued
 * long ago: any sequencer adopts it at once). */
static bson_t *entry_of(const struct seen *e, const struct pay *p)
{
    return BCON_NEW("id", BCON_UTF8(e->id), "type", BCON_UTF8("payment.created"),
                    "organisation_id", BCON_UTF8(p->row.organisation_id), "payment_id",
                    BCON_UTF8(p->row.id), "version", BCON_INT64(e->version), "occurred_ms",
                    BCON_INT64(e->occurred_ms), "doc", BCON_UTF8(e->doc), "made_us",
                    BCON_INT64(1));
}

/* A crash after the watermark, before the outbox is emptied: the event is
 * read; the entry left behind is found in the feed already and pulled, not
 * fed twice.  The same for an entry put back by hand. */
static void mongo_events_crash_after_raise(void)
{
    struct fixture fx;
    if (!fixture_open(&fx))
        return;
    struct crash c = {.stage = MONGO_SEQ_RAISED};
    atomic_init(&c.crashed, 0);
    mongo_seq_set_hook(fx.s, hook_crash, &c);
    struct pay p;
    pay_init(&p, 1, 1, 0);
    CHECK_INT(sync_create(fx.s, &p, NULL, NULL), PAYMENT_STORE_OK);
    struct seen_list feed = {0};
    int64_t cursor = 0;
    feed_wait(fx.s, &cursor, &feed, 1);
    CHECK_INT(feed.n, 1);
    CHECK(atomic_load(&c.crashed));
    CHECK_INT(raw_pending(fx.db, p.row.id), 1); /* left by the crash */
    CHECK(wait_outbox_empty(fx.db, p.row.id));
    CHECK_INT(raw_events_of(fx.db, p.row.id), 1);

    if (feed.n == 1) {
        bson_t *entry = entry_of(&feed.ev[0], &p);
        raw_write(fx.db, BCON_NEW("update", BCON_UTF8("payments"), "updates", "[", "{", "q", "{",
                                  "_id", BCON_UTF8(p.row.id), "}", "u", "{", "$push", "{", "pend",
                                  BCON_DOCUMENT(entry), "}", "}", "}", "]"));
        bson_destroy(entry);
        CHECK_INT(raw_pending(fx.db, p.row.id), 1);
        CHECK(wait_outbox_empty(fx.db, p.row.id));
    }
    CHECK_INT(raw_events_of(fx.db, p.row.id), 1);
    CHECK_INT(feed_follow(fx.s, &cursor, 10, &feed), PAYMENT_STORE_OK);
    CHECK_INT(feed.n, 1);
    struct seen_list again = {0};
    int64_t from0 = 0;
    CHECK_INT(feed_follow(fx.s, &from0, 10, &again), PAYMENT_STORE_OK);
    CHECK_INT(again.n, 1);
    if (again.n == 1 && feed.n == 1)
        CHECK_INT(again.ev[0].pos, feed.ev[0].pos);
    seen_free(&feed);
    seen_free(&again);
    mongo_seq_set_hook(fx.s, NULL, NULL);
    fixture_close(&fx);
}

/* An event document put in the feed's collection by hand at pos, about a
 * payment no write made. */
static void raw_event(const char *db, int64_t pos, const char *pid)
{
    char id[UUID_STR_LEN + 1];
    snprintf(id, sizeof id, "00000000-0000-7000-8000-%012lld", (long long)pos);
    raw_write(db, BCON_NEW("insert", BCON_UTF8("payments_events"), "documents", "[", "{", "_id",
                           BCON_INT64(pos), "id", BCON_UTF8(id), "type",
                           BCON_UTF8("payment.created"), "organisation_id",
                           BCON_UTF8("0a0a0a0a-0000-4000-8000-000000000001"), "payment_id",
                           BCON_UTF8(pid), "version", BCON_INT64(0), "occurred_ms",
                           BCON_INT64(1000), "doc", BCON_UTF8("{}"), "}", "]"));
}

/* A position filled before the one below it (as a replica may show them,
 * or a write that allocates positions before it commits would): the
 * watermark does not pass the gap, so a reader holding its cursor never
 * skips the lower position, which it gets, with the rest in order, once
 * it is filled. */
static void mongo_events_reader_never_passes_a_gap(void)
{
    struct fixture fx;
    if (!fixture_open(&fx))
        return;
    struct pay p;
    pay_init(&p, 1, 1, 0);
    CHECK_INT(sync_create(fx.s, &p, NULL, NULL), PAYMENT_STORE_OK);
    struct seen_list feed = {0};
    int64_t cursor = 0;
    CHECK_INT(feed_follow(fx.s, &cursor, 10, &feed), PAYMENT_STORE_OK);
    CHECK_INT(feed.n, 1);
    CHECK_INT(cursor, 1);

    raw_event(fx.db, 3, "00000000-0000-4000-8000-00000000aaa3");
    pay_version(&p, 1);
    CHECK_INT(sync_update(fx.s, &p, NULL, NULL), PAYMENT_STORE_OK); /* at position 4 */
    usleep(1500 * 1000); /* an adoption round: the watermark stays below the gap */
    CHECK_INT(feed_follow(fx.s, &cursor, 10, &feed), PAYMENT_STORE_OK);
    CHECK_INT(feed.n, 1);
    CHECK_INT(cursor, 1);
    CHECK_INT(raw_wm(fx.db), 1);

    raw_event(fx.db, 2, "00000000-0000-4000-8000-00000000aaa2");
    feed_wait(fx.s, &cursor, &feed, 4);
    CHECK_INT(feed.n, 4);
    for (size_t i = 0; i < feed.n; i++)
        CHECK_INT(feed.ev[i].pos, (int64_t)i + 1);
    if (feed.n == 4)
        CHECK_STR(feed.ev[3].pid, p.row.id);
    seen_free(&feed);
    fixture_close(&fx);
}

/* ---- the outbox is bounded --------------------------------------------------- */

/* With no sequencer stamping, a payment's outbox fills up to
 * MONGO_PEND_KEEP entries; the next write waits, then fails EUNAVAILABLE
 * without writing; once a sequencer runs again, writes go on and every
 * version is in the history. */
static void mongo_events_outbox_bounded(void)
{
    struct fixture fx;
    if (!fixture_open(&fx))
        return;
    mongo_seq_set_hook(fx.s, hook_never, NULL);
    struct pay p;
    pay_init(&p, 1, 1, 0);
    CHECK_INT(sync_create(fx.s, &p, NULL, NULL), PAYMENT_STORE_OK);
    for (int64_t v = 1; v < MONGO_PEND_KEEP; v++) {
        pay_version(&p, v);
        CHECK_INT(sync_update(fx.s, &p, NULL, NULL), PAYMENT_STORE_OK);
    }
    CHECK_INT(raw_pending(fx.db, p.row.id), MONGO_PEND_KEEP);
    pay_version(&p, MONGO_PEND_KEEP);
    int64_t t0 = clock_mono_us();
    CHECK_INT(sync_update(fx.s, &p, NULL, NULL), PAYMENT_STORE_EUNAVAILABLE);
    CHECK(clock_mono_us() - t0 >= MONGO_ROOM_TRIES * MONGO_ROOM_PAUSE_MS * 1000LL / 2);
    CHECK_INT(raw_pending(fx.db, p.row.id), MONGO_PEND_KEEP);
    CHECK_INT(sync_delete(fx.s, p.row.id, -1, NULL), PAYMENT_STORE_EUNAVAILABLE);
    mongo_seq_set_hook(fx.s, NULL, NULL);
    CHECK_INT(sync_update(fx.s, &p, NULL, NULL), PAYMENT_STORE_OK);
    struct seen_list h = {0};
    CHECK_INT(history_all(fx.s, p.row.id, &h), PAYMENT_STORE_OK);
    CHECK_INT(h.n, MONGO_PEND_KEEP + 1);
    for (size_t i = 0; i < h.n; i++)
        CHECK_INT(h.ev[i].version, (int64_t)i);
    seen_free(&h);
    fixture_close(&fx);
}

/* ---- feed pages and filters -------------------------------------------------- */

/* Reads one feed page of q into out; returns the error, *next set. */
static int feed_page(payment_store *s, const struct payment_event_query *q, struct seen_list *out,
                     int64_t *next)
{
    seen_free(out);
    return payment_store_events(s, q, seen_add, out, next);
}

/* Organisations, types, a payment, occurrence times; a full page's next
 * is its last event's position, a short one's the feed's end. */
static void mongo_events_filters(void)
{
    struct fixture fx;
    if (!fixture_open(&fx))
        return;
    struct pay a, b, c;
    pay_init(&a, 1, 1, 0);
    pay_init(&b, 2, 2, 0);
    pay_init(&c, 3, 3, 0);
    struct payment_event_info early = {.occurred_ms = 100}, late = {.occurred_ms = 900};
    CHECK_INT(sync_create(fx.s, &a, NULL, &early), PAYMENT_STORE_OK); /* 1 */
    CHECK_INT(sync_create(fx.s, &b, NULL, &early), PAYMENT_STORE_OK); /* 2 */
    CHECK_INT(sync_create(fx.s, &c, NULL, &late), PAYMENT_STORE_OK);  /* 3 */
    pay_version(&a, 1);
    CHECK_INT(sync_update(fx.s, &a, NULL, &late), PAYMENT_STORE_OK);                 /* 4 */
    CHECK_INT(sync_delete(fx.s, b.row.id, -1, &late), PAYMENT_STORE_OK);             /* 5 */
    struct seen_list out = {0};
    struct payment_event_query q;
    int64_t next = -1;
    char orgs[2][UUID_STR_LEN + 1];
    snprintf(orgs[0], sizeof orgs[0], "%s", a.row.organisation_id);
    snprintf(orgs[1], sizeof orgs[1], "%s", b.row.organisation_id);

    feed_query(&q, 0, 2);
    CHECK_INT(feed_page(fx.s, &q, &out, &next), PAYMENT_STORE_OK);
    CHECK_INT(out.n, 2);
    CHECK_INT(next, 2); /* full: its last */
    feed_query(&q, 0, 10);
    q.all_orgs = 0;
    q.orgs = (const char(*)[UUID_STR_LEN + 1])orgs;
    q.n_orgs = 2;
    CHECK_INT(feed_page(fx.s, &q, &out, &next), PAYMENT_STORE_OK);
    CHECK_INT(out.n, 4); /* all but c's */
    CHECK_INT(next, 5);  /* short: the end, past events it did not show */
    q.n_orgs = 0;
    CHECK_INT(feed_page(fx.s, &q, &out, &next), PAYMENT_STORE_OK);
    CHECK_INT(out.n, 0);
    CHECK_INT(next, 5);
    feed_query(&q, 0, 10);
    q.types = PAYMENT_EVENT_UPDATED | PAYMENT_EVENT_DELETED;
    CHECK_INT(feed_page(fx.s, &q, &out, &next), PAYMENT_STORE_OK);
    CHECK_INT(out.n, 2);
    if (out.n == 2)
        CHECK(out.ev[0].type == PAYMENT_EVENT_UPDATED && out.ev[1].type == PAYMENT_EVENT_DELETED);
    feed_query(&q, 0, 10);
    q.payment_id = a.row.id;
    CHECK_INT(feed_page(fx.s, &q, &out, &next), PAYMENT_STORE_OK);
    CHECK_INT(out.n, 2);
    feed_query(&q, 0, 10);
    q.from_ms = 100;
    q.to_ms = 900;
    CHECK_INT(feed_page(fx.s, &q, &out, &next), PAYMENT_STORE_OK);
    CHECK_INT(out.n, 2); /* to is exclusive */
    feed_query(&q, 1, 10);
    q.from_ms = 900;
    CHECK_INT(feed_page(fx.s, &q, &out, &next), PAYMENT_STORE_OK);
    CHECK_INT(out.n, 3);
    feed_query(&q, 9, 10); /* beyond the end */
    CHECK_INT(feed_page(fx.s, &q, &out, &next), PAYMENT_STORE_OK);
    CHECK_INT(out.n, 0);
    CHECK_INT(next, 9);
    seen_free(&out);
    fixture_close(&fx);
}

/* ---- retention --------------------------------------------------------------- */

/* Old events leave the feed (a cursor before them is EEXPIRED) but stay in
 * the histories; purged from the histories they leave stubs, and positions
 * are never given again. */
static void mongo_events_retention(void)
{
    struct fixture fx;
    if (!fixture_open(&fx))
        return;
    struct pay old1, old2, recent;
    pay_init(&old1, 1, 1, 0);
    pay_init(&old2, 2, 1, 0);
    pay_init(&recent, 3, 1, 0);
    struct payment_event_info then = {.occurred_ms = 1000}, now = {.occurred_ms = 9000};
    CHECK_INT(sync_create(fx.s, &old1, NULL, &then), PAYMENT_STORE_OK);   /* 1 */
    CHECK_INT(sync_create(fx.s, &old2, NULL, &then), PAYMENT_STORE_OK);   /* 2 */
    CHECK_INT(sync_create(fx.s, &recent, NULL, &now), PAYMENT_STORE_OK);  /* 3 */
    pay_version(&old1, 1);
    CHECK_INT(sync_update(fx.s, &old1, NULL, &then), PAYMENT_STORE_OK);   /* 4: old, but later */
    struct seen_list out = {0}, h = {0};
    int64_t cursor = 0;
    CHECK_INT(feed_follow(fx.s, &cursor, 10, &out), PAYMENT_STORE_OK);
    CHECK_INT(out.n, 4);

    payment_store_events_purge(fx.s, 5000, INT64_MIN);
    struct payment_event_query q;
    int64_t next = -1;
    feed_query(&q, 1, 10);
    CHECK_INT(payment_store_events(fx.s, &q, seen_add, &out, &next), PAYMENT_STORE_EEXPIRED);
    feed_query(&q, 0, 10);
    CHECK_INT(feed_page(fx.s, &q, &out, &next), PAYMENT_STORE_OK);
    CHECK_INT(out.n, 2); /* the feed starts at the first recent event */
    if (out.n == 2)
        CHECK_INT(out.ev[0].pos, 3);
    feed_query(&q, 2, 10);
    CHECK_INT(feed_page(fx.s, &q, &out, &next), PAYMENT_STORE_OK);
    CHECK_INT(out.n, 2);
    CHECK_INT(history_all(fx.s, old2.row.id, &h), PAYMENT_STORE_OK);
    CHECK_INT(h.n, 1); /* still in its history */
    seen_free(&h);

    payment_store_events_purge(fx.s, 5000, 5000);
    CHECK_INT(history_all(fx.s, old2.row.id, &h), PAYMENT_STORE_OK);
    CHECK_INT(h.n, 0);
    CHECK_INT(history_all(fx.s, old1.row.id, &h), PAYMENT_STORE_OK);
    CHECK_INT(h.n, 0);
    CHECK_INT(history_all(fx.s, recent.row.id, &h), PAYMENT_STORE_OK);
    CHECK_INT(h.n, 1);
    seen_free(&h);
    CHECK_INT(raw_count(fx.db, "payments_events", bson_new()), 4); /* stubs kept */
    CHECK_INT(raw_count(fx.db, "payments_events", BCON_NEW("doc", "{", "$exists",
                                                             BCON_BOOL(true), "}")),
              1);
    payment_store_events_purge(fx.s, INT64_MAX, INT64_MAX);
    struct pay more;
    pay_init(&more, 4, 1, 0);
    CHECK_INT(sync_create(fx.s, &more, NULL, &now), PAYMENT_STORE_OK);
    CHECK_INT(history_all(fx.s, more.row.id, &h), PAYMENT_STORE_OK);
    CHECK_INT(h.n, 1);
    if (h.n == 1)
        CHECK_INT(h.ev[0].pos, 5); /* after every position given before */
    feed_query(&q, 4, 10);
    CHECK_INT(feed_page(fx.s, &q, &out, &next), PAYMENT_STORE_OK);
    CHECK_INT(out.n, 1);
    seen_free(&h);
    seen_free(&out);
    fixture_close(&fx);
}

/* ---- the subscriber ---------------------------------------------------------- */

static void count_call(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

/* Waits until *calls is above seen; returns whether it got there. */
static int wait_called(atomic_int *calls, int seen)
{
    int64_t until = clock_mono_us() + WAIT_MS * 1000LL;
    while (atomic_load(calls) <= seen && clock_mono_us() < until)
        usleep(5000);
    return atomic_load(calls) > seen;
}

/* Called soon after this process's writes, and after another process's. */
static void mongo_events_subscriber(void)
{
    struct fixture fx;
    if (!fixture_open(&fx))
        return;
    payment_store *other = fixture_other(&fx);
    atomic_int calls;
    atomic_init(&calls, 0);
    payment_store_events_subscribe(fx.s, count_call, &calls);
    usleep(300 * 1000);
    int seen = atomic_load(&calls);
    struct pay a, b;
    pay_init(&a, 1, 1, 0);
    pay_init(&b, 2, 1, 0);
    int64_t t0 = clock_mono_us();
    CHECK_INT(sync_create(fx.s, &a, NULL, NULL), PAYMENT_STORE_OK);
    CHECK(wait_called(&calls, seen));
    CHECK(clock_mono_us() - t0 < 1000000);
    seen = atomic_load(&calls);
    if (other) {
        t0 = clock_mono_us();
        CHECK_INT(sync_create(other, &b, NULL, NULL), PAYMENT_STORE_OK);
        CHECK(wait_called(&calls, seen));
        CHECK(clock_mono_us() - t0 < 2000000); /* its poll: "about a second" */
    }
    payment_store_events_subscribe(fx.s, NULL, NULL);
    payment_store_close(other);
    fixture_close(&fx);
}

TEST_MAIN(TEST(mongo_events_writes), TEST(mongo_events_history_reads_writes),
          TEST(mongo_events_two_sequencers), TEST(mongo_events_order_of_writes),
          TEST(mongo_events_crash_after_insert),
          TEST(mongo_events_crash_after_raise), TEST(mongo_events_reader_never_passes_a_gap),
          TEST(mongo_events_outbox_bounded), TEST(mongo_events_filters),
          TEST(mongo_events_retention), TEST(mongo_events_subscriber))
