/* The events contract (store.h, "events: the history and the change
 * feed"), written against any backend: each case takes an opened, empty
 * store from the runners of store_fixture.h, on SQLite and, when
 * PAYMENTD_TEST_MONGO_URI names a server, on MongoDB, and when
 * PAYMENTD_TEST_PG_URI names one, on PostgreSQL (the PostgreSQL store's
 * own order cases are test_store_pg_feed.c's).
 *
 * Every write kind records exactly one event with the right type, version,
 * document and description; failed, refused and replayed writes record
 * none; applies record their write's; histories page and outlive their
 * payment; the feed keeps commit order under every filter, with next_pos
 * moving past what a filter hides; retention expires cursors and deletes
 * histories; a reader following the feed while threads write sees every
 * event once, each payment's in version order; the subscriber is told of
 * this store's and another's commits.
 *
 * The last cases are about commit order: a reader's cursor never passes
 * an event whose transaction is still open (the embedded store's), and a
 * write submitted before another but committed after it is still found
 * above a cursor that passed the other (the embedded store's and
 * PostgreSQL's, whose stores each have one writer thread). */
#include "payment/store.h"

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
#include "event_list.h"
#include "store_fixture.h"
#include "store_waiter.h"
#include "test.h"


/* ---- synchronous writes: done runs on the store's thread ---------------- */

static int sync_create(payment_store *s, const struct payment_row *row,
                       const struct payment_idem *idem, const struct payment_event_info *ev)
{
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_create(s, row, idem, ev, waiter_done, &w);
    waiter_wait(&w);
    return w.err;
}

static int sync_update(payment_store *s, const struct payment_row *row, int64_t expected,
                       const struct payment_idem *idem, const struct payment_event_info *ev)
{
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_update(s, row, expected, idem, ev, waiter_done, &w);
    waiter_wait(&w);
    return w.err;
}

static int sync_delete(payment_store *s, const char *id, int64_t expected,
                       const struct payment_idem *idem, const struct payment_event_info *ev)
{
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_delete(s, id, expected, idem, ev, waiter_done, &w);
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

/* ---- payments ----------------------------------------------------------- */

/* A row and the document it borrows. */
struct pay {
    struct payment_row row;
    char doc[160];
};

static void pay_id(char out[UUID_STR_LEN + 1], int n)
{
    snprintf(out, UUID_STR_LEN + 1, "00000000-0000-4000-8000-%012d", n);
}

static void org_id(char out[UUID_STR_LEN + 1], int n)
{
    snprintf(out, UUID_STR_LEN + 1, "0a0a0a0a-0000-4000-8000-%012d", n);
}

/* The document of payment id at version v, tagged. */
static void pay_doc(struct pay *p, const char *tag)
{
    int len = snprintf(p->doc, sizeof p->doc, "{\"id\":\"%s\",\"v\":%lld,\"tag\":\"%s\"}",
                       p->row.id, (long long)p->row.version, tag);
    p->row.doc = p->doc;
    p->row.doc_len = (size_t)len;
}

/* Payment n of organisation org at version 0, written at ms. */
static void pay_init(struct pay *p, int n, int org, int64_t ms)
{
    memset(p, 0, sizeof *p);
    pay_id(p->row.id, n);
    org_id(p->row.organisation_id, org);
    p->row.created_ms = p->row.modified_ms = ms;
    p->row.currency = "GBP";
    pay_doc(p, "created");
}

/* The next version of p, written at ms. */
static void pay_next(struct pay *p, const char *tag, int64_t ms)
{
    p->row.version++;
    p->row.modified_ms = ms;
    pay_doc(p, tag);
}

/* ---- events read -------------------------------------------------------- */


/* Every event of every organisation above after, at most limit. */
static void query_all(struct payment_event_query *q, int64_t after, uint32_t limit)
{
    memset(q, 0, sizeof *q);
    q->after_pos = after;
    q->limit = limit;
    q->all_orgs = 1;
    q->from_ms = INT64_MIN;
    q->to_ms = INT64_MAX;
}

/* Reads one feed page into l (appended); *next gets next_pos. */
static int feed_page(payment_store *s, const struct payment_event_query *q, struct seen_list *l,
                     int64_t *next)
{
    *next = -99;
    return payment_store_events(s, q, seen_add, l, next);
}

/* Follows q's feed from q->after_pos, page after page, until a page comes
 * back short: every event into l; returns the last next_pos. */
static int64_t feed_follow(payment_store *s, const struct payment_event_query *q,
                           struct seen_list *l)
{
    struct payment_event_query page = *q;
    for (int i = 0; i < 100000; i++) {
        size_t before = l->n;
        int64_t next;
        int err = feed_page(s, &page, l, &next);
        CHECK_INT(err, PAYMENT_STORE_OK);
        if (err != PAYMENT_STORE_OK)
            return page.after_pos;
        CHECK(next >= page.after_pos);
        if (l->n - before < page.limit)
            return next;
        page.after_pos = next;
    }
    CHECK(!"the feed never ended");
    return page.after_pos;
}

/* Every event of the feed, from the start. */
static void feed_all(payment_store *s, struct seen_list *l)
{
    struct payment_event_query q;
    query_all(&q, 0, 100);
    seen_reset(l);
    (void)feed_follow(s, &q, l);
}

static int history(payment_store *s, const char *pid, int64_t after_version, uint32_t limit,
                   struct seen_list *l, int *more)
{
    seen_reset(l);
    *more = -1;
    return payment_store_history(s, pid, after_version, limit, seen_add, l, more);
}

/* e is payment pid's event of type at version, holding doc. */
static void check_event_line(const struct seen *e, int type, const char *pid, int64_t version,
                             const char *doc, int line)
{
    int ok = e->type == type && strcmp(e->pid, pid) == 0 && e->version == version &&
             strcmp(e->doc, doc) == 0 && e->pos > 0;
    if (!ok)
        fprintf(stderr, "  line %d: event at %lld is type %d of %s v%lld %s; expected type %d"
                        " of %s v%lld %s\n", line, (long long)e->pos, e->type, e->pid,
                (long long)e->version, e->doc, type, pid, (long long)version, doc);
    CHECK(ok);
}

#define CHECK_EVENT(e, type, pid, version, doc)                                               \
    check_event_line((e), (type), (pid), (version), (doc), __LINE__)

/* l holds exactly the events of positions want[0..n), in that order. */
static void check_positions_line(const struct seen_list *l, const int64_t *want, size_t n,
                                 int line)
{
    int ok = l->n == n;
    for (size_t i = 0; ok && i < n; i++)
        ok = l->ev[i].pos == want[i];
    if (!ok) {
        fprintf(stderr, "  line %d: read", line);
        for (size_t i = 0; i < l->n; i++)
            fprintf(stderr, " %lld", (long long)l->ev[i].pos);
        fprintf(stderr, "; expected");
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %lld", (long long)want[i]);
        fprintf(stderr, "\n");
    }
    CHECK(ok);
}

#define CHECK_POSITIONS(l, want, n) check_positions_line((l), (want), (n), __LINE__)

/* Whether id is a version 7 UUID in lower case. */
static int is_uuid_v7(const char *id)
{
    char canon[UUID_STR_LEN + 1];
    return strlen(id) == UUID_STR_LEN && uuid_canonical(id, UUID_STR_LEN, canon) == 0 &&
           strcmp(canon, id) == 0 && id[14] == '7' && strchr("89ab", id[19]) != NULL;
}

/* ---- each write records its event ---------------------------------------- */

/* Create, update and delete each record one event: the document after the
 * change (a delete's as it was, at the tombstone's version), and the
 * description passed, or defaults without one. */
static void case_records_each_write(struct fixture *fx)
{
    payment_store *s = fx->s;
    struct pay p, q;
    pay_init(&p, 1, 1, 1000);
    struct payment_event_info created = {
        .id = "01890000-0000-7000-8000-000000000001",
        .api_key_id = "key-1",
        .request_id = "req-1",
        .idempotency_key = "idem-1",
        .occurred_ms = 1234,
    };
    CHECK_INT(sync_create(s, &p.row, NULL, &created), PAYMENT_STORE_OK);
    char doc0[sizeof p.doc];
    memcpy(doc0, p.doc, sizeof doc0);
    pay_next(&p, "updated", 2000);
    struct payment_event_info updated = {
        .request_id = "req-2",
        .operation_id = "op-2",
        .changes = "[\"/attributes/amount\"]",
    };
    CHECK_INT(sync_update(s, &p.row, 0, NULL, &updated), PAYMENT_STORE_OK);
    int64_t t0 = clock_now_ms();
    CHECK_INT(sync_delete(s, p.row.id, 1, NULL, NULL), PAYMENT_STORE_OK);
    int64_t t1 = clock_now_ms();
    pay_init(&q, 2, 2, 5000);
    CHECK_INT(sync_create(s, &q.row, NULL, NULL), PAYMENT_STORE_OK);

    struct seen_list l = {0};
    feed_all(s, &l);
    CHECK_INT(l.n, 4);
    if (l.n != 4) {
        seen_free(&l);
        return;
    }
    const struct seen *c = &l.ev[0], *u = &l.ev[1], *d = &l.ev[2], *c2 = &l.ev[3];
    CHECK_EVENT(c, PAYMENT_EVENT_CREATED, p.row.id, 0, doc0);
    CHECK_STR(c->id, created.id);
    CHECK_STR(c->org, p.row.organisation_id);
    CHECK_INT(c->occurred_ms, 1234);
    CHECK_STR(c->api_key_id, "key-1");
    CHECK_STR(c->request_id, "req-1");
    CHECK_STR(c->idem_key, "idem-1");
    CHECK_STR(c->op_id, NULL_TEXT);
    CHECK_STR(c->changes, NULL_TEXT);

    CHECK_EVENT(u, PAYMENT_EVENT_UPDATED, p.row.id, 1, p.doc);
    CHECK(is_uuid_v7(u->id));
    CHECK_INT(u->occurred_ms, 2000); /* none given: the row's modified_ms */
    CHECK_STR(u->api_key_id, NULL_TEXT);
    CHECK_STR(u->request_id, "req-2");
    CHECK_STR(u->idem_key, NULL_TEXT);
    CHECK_STR(u->op_id, "op-2");
    CHECK_STR(u->changes, "[\"/attributes/amount\"]");

    /* The tombstone is a version of its own, with the document as it was. */
    CHECK_EVENT(d, PAYMENT_EVENT_DELETED, p.row.id, 2, p.doc);
    CHECK(is_uuid_v7(d->id));
    CHECK(d->occurred_ms >= t0 && d->occurred_ms <= t1);
    CHECK_STR(d->org, p.row.organisation_id);
    CHECK_STR(d->api_key_id, NULL_TEXT);
    CHECK_STR(d->request_id, NULL_TEXT);
    CHECK_STR(d->idem_key, NULL_TEXT);
    CHECK_STR(d->op_id, NULL_TEXT);
    CHECK_STR(d->changes, NULL_TEXT);

    CHECK_EVENT(c2, PAYMENT_EVENT_CREATED, q.row.id, 0, q.doc);
    CHECK(is_uuid_v7(c2->id));
    CHECK_STR(c2->org, q.row.organisation_id);
    CHECK_INT(c2->occurred_ms, 5000);
    CHECK_STR(c2->request_id, NULL_TEXT);

    for (size_t i = 1; i < l.n; i++) {
        CHECK(l.ev[i].pos > l.ev[i - 1].pos);
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(l.ev[i].id, l.ev[j].id) != 0);
    }

    /* The history is the same events, the payment gone. */
    struct seen_list h = {0};
    int more;
    CHECK_INT(history(s, p.row.id, -1, 10, &h, &more), PAYMENT_STORE_OK);
    CHECK_INT(more, 0);
    int64_t want[] = {c->pos, u->pos, d->pos};
    CHECK_POSITIONS(&h, want, 3);
    for (size_t i = 0; i < h.n && i < 3; i++)
        CHECK_STR(h.ev[i].id, l.ev[i].id);
    struct buf b = BUF_INIT;
    int64_t v;
    CHECK_INT(payment_store_get(s, p.row.id, &b, &v), PAYMENT_STORE_ENOTFOUND);
    buf_free(&b);
    seen_free(&h);
    seen_free(&l);
}

/* Writes that fail, are refused or replay an Idempotency-Key record none. */
static void case_failed_writes_record_none(struct fixture *fx)
{
    payment_store *s = fx->s;
    struct pay p, q, r, stale;
    pay_init(&p, 1, 1, 1000);
    CHECK_INT(sync_create(s, &p.row, NULL, NULL), PAYMENT_STORE_OK);
    stale = p;
    pay_doc(&stale, "created");
    pay_next(&p, "v1", 1001);
    CHECK_INT(sync_update(s, &p.row, 0, NULL, NULL), PAYMENT_STORE_OK);
    struct seen_list l = {0};
    feed_all(s, &l);
    CHECK_INT(l.n, 2);

    CHECK_INT(sync_create(s, &stale.row, NULL, NULL), PAYMENT_STORE_EDUPLICATE);
    pay_next(&stale, "stale", 1002);
    CHECK_INT(sync_update(s, &stale.row, 0, NULL, NULL), PAYMENT_STORE_ECONFLICT);
    CHECK_INT(sync_delete(s, p.row.id, 0, NULL, NULL), PAYMENT_STORE_ECONFLICT);
    pay_init(&r, 9, 1, 1003);
    pay_next(&r, "nobody", 1003);
    CHECK_INT(sync_update(s, &r.row, 0, NULL, NULL), PAYMENT_STORE_ENOTFOUND);
    CHECK_INT(sync_delete(s, r.row.id, -1, NULL, NULL), PAYMENT_STORE_ENOTFOUND);

    /* A key already recorded refuses the whole write, its event too. */
    struct payment_idem idem = {.scope = "s", .key = "k", .fingerprint = "fp", .status = 201,
                                .created_ms = 1004};
    pay_init(&q, 2, 1, 1004);
    CHECK_INT(sync_create(s, &q.row, &idem, NULL), PAYMENT_STORE_OK);
    pay_init(&r, 3, 1, 1005);
    CHECK_INT(sync_create(s, &r.row, &idem, NULL), PAYMENT_STORE_EIDEMPOTENT);
    struct pay p2 = p;
    pay_next(&p2, "keyed", 1006);
    CHECK_INT(sync_update(s, &p2.row, 1, &idem, NULL), PAYMENT_STORE_EIDEMPOTENT);
    CHECK_INT(sync_delete(s, p.row.id, 1, &idem, NULL), PAYMENT_STORE_EIDEMPOTENT);

    CHECK_INT(sync_delete(s, p.row.id, -1, NULL, NULL), PAYMENT_STORE_OK);
    CHECK_INT(sync_delete(s, p.row.id, -1, NULL, NULL), PAYMENT_STORE_ENOTFOUND);
    pay_next(&p2, "after", 1007);
    CHECK_INT(sync_update(s, &p2.row, 2, NULL, NULL), PAYMENT_STORE_ENOTFOUND);
    struct pay again;
    pay_init(&again, 1, 1, 1008);
    CHECK_INT(sync_create(s, &again.row, NULL, NULL), PAYMENT_STORE_EDUPLICATE);

    feed_all(s, &l);
    CHECK_INT(l.n, 4);
    if (l.n == 4) {
        CHECK_EVENT(&l.ev[2], PAYMENT_EVENT_CREATED, q.row.id, 0, q.doc);
        CHECK_EVENT(&l.ev[3], PAYMENT_EVENT_DELETED, p.row.id, 2, p.doc);
    }
    int more;
    CHECK_INT(history(s, r.row.id, -1, 10, &l, &more), PAYMENT_STORE_OK);
    CHECK_INT(l.n, 0);
    CHECK_INT(more, 0);
    CHECK_INT(history(s, p.row.id, -1, 10, &l, &more), PAYMENT_STORE_OK);
    CHECK_INT(l.n, 3);
    seen_free(&l);
}

/* ---- applies ------------------------------------------------------------- */

static void apply_init(struct payment_apply *a, const char *op_id, uint64_t seq,
                       enum payment_apply_kind kind, const struct payment_event_info *ev)
{
    memset(a, 0, sizeof *a);
    a->op_id = op_id;
    a->partition = 4;
    a->seq = seq;
    a->fence = 2;
    a->kind = kind;
    a->expected_version = -1;
    a->applied_ms = 1000 + (int64_t)seq;
    a->event = ev;
}

/* An apply records its write's event; one that writes nothing (kind NONE,
 * a failed write, a skipped or fenced apply) records none. */
static void case_apply_records(struct fixture *fx)
{
    payment_store *s = fx->s;
    struct pay p, dup, other;
    pay_init(&p, 1, 1, 1000);
    struct payment_event_info e1 = {.operation_id = "op-1", .request_id = "req-1"};
    struct payment_apply a;
    apply_init(&a, "op-1", 1, PAYMENT_APPLY_CREATE, &e1);
    a.row = &p.row;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    char doc0[sizeof p.doc];
    memcpy(doc0, p.doc, sizeof doc0);

    pay_next(&p, "v1", 2000);
    struct payment_event_info e2 = {.operation_id = "op-2", .changes = "[\"/x\"]"};
    apply_init(&a, "op-2", 2, PAYMENT_APPLY_UPDATE, &e2);
    a.row = &p.row;
    a.expected_version = 0;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);

    /* Outcomes without a write. */
    struct pay stale = p;
    stale.row.version = 1;
    pay_doc(&stale, "stale");
    apply_init(&a, "op-3", 3, PAYMENT_APPLY_UPDATE, &e2);
    a.row = &stale.row;
    a.expected_version = 0;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK); /* failed: version_conflict */
    pay_init(&dup, 1, 1, 3000);
    apply_init(&a, "op-4", 4, PAYMENT_APPLY_CREATE, &e1);
    a.row = &dup.row;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK); /* failed: duplicate_id */
    apply_init(&a, "op-5", 5, PAYMENT_APPLY_NONE, &e1);
    a.payment_id = p.row.id;
    a.organisation_id = p.row.organisation_id;
    a.error_code = "validation_failed";
    a.error_message = "no";
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    pay_init(&other, 2, 1, 3000);
    apply_init(&a, "op-6", 5, PAYMENT_APPLY_CREATE, &e1);
    a.row = &other.row;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_ESKIPPED);
    apply_init(&a, "op-2", 6, PAYMENT_APPLY_CREATE, &e1);
    a.row = &other.row;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_ESKIPPED); /* republished */
    apply_init(&a, "op-7", 7, PAYMENT_APPLY_CREATE, &e1);
    a.row = &other.row;
    a.fence = 1;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_EFENCED);
    struct payment_idem idem = {.scope = "s", .key = "k", .fingerprint = "fp", .status = 202,
                                .created_ms = 1000};
    struct pay keyed;
    pay_init(&keyed, 3, 1, 3000);
    CHECK_INT(sync_create(s, &keyed.row, &idem, NULL), PAYMENT_STORE_OK);
    apply_init(&a, "op-8", 8, PAYMENT_APPLY_CREATE, &e1);
    a.row = &other.row;
    a.idem = &idem;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK); /* failed: idempotency_key_in_use */

    struct payment_event_info e9 = {.operation_id = "op-9"};
    apply_init(&a, "op-9", 9, PAYMENT_APPLY_DELETE, &e9);
    a.payment_id = p.row.id;
    a.organisation_id = p.row.organisation_id;
    a.expected_version = 1;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    struct payment_op_found f;
    CHECK_INT(payment_store_op_get(s, "op-9", &f), PAYMENT_STORE_OK);
    CHECK_STR(f.status, "succeeded");

    struct seen_list l = {0};
    feed_all(s, &l);
    CHECK_INT(l.n, 4);
    if (l.n == 4) {
        CHECK_EVENT(&l.ev[0], PAYMENT_EVENT_CREATED, p.row.id, 0, doc0);
        CHECK_STR(l.ev[0].op_id, "op-1");
        CHECK_STR(l.ev[0].request_id, "req-1");
        CHECK_EVENT(&l.ev[1], PAYMENT_EVENT_UPDATED, p.row.id, 1, p.doc);
        CHECK_STR(l.ev[1].op_id, "op-2");
        CHECK_STR(l.ev[1].changes, "[\"/x\"]");
        CHECK_EVENT(&l.ev[2], PAYMENT_EVENT_CREATED, keyed.row.id, 0, keyed.doc);
        CHECK_EVENT(&l.ev[3], PAYMENT_EVENT_DELETED, p.row.id, 2, p.doc);
        CHECK_STR(l.ev[3].op_id, "op-9");
    }
    seen_free(&l);
}

/* ---- histories ------------------------------------------------------------ */

/* Versions 0..9 and the tombstone's 10, another payment's writes between:
 * pages by after_version and limit, each version's document, more. */
static void case_history_pages(struct fixture *fx)
{
    payment_store *s = fx->s;
    struct pay p, q;
    char docs[11][sizeof p.doc];
    pay_init(&p, 1, 1, 1000);
    pay_init(&q, 2, 1, 1000);
    CHECK_INT(sync_create(s, &p.row, NULL, NULL), PAYMENT_STORE_OK);
    CHECK_INT(sync_create(s, &q.row, NULL, NULL), PAYMENT_STORE_OK);
    memcpy(docs[0], p.doc, sizeof p.doc);
    for (int v = 1; v <= 9; v++) {
        char tag[16];
        snprintf(tag, sizeof tag, "v%d", v);
        pay_next(&p, tag, 1000 + v);
        CHECK_INT(sync_update(s, &p.row, v - 1, NULL, NULL), PAYMENT_STORE_OK);
        memcpy(docs[v], p.doc, sizeof p.doc);
        pay_next(&q, tag, 1000 + v);
        CHECK_INT(sync_update(s, &q.row, v - 1, NULL, NULL), PAYMENT_STORE_OK);
    }
    CHECK_INT(sync_delete(s, p.row.id, -1, NULL, NULL), PAYMENT_STORE_OK);
    memcpy(docs[10], p.doc, sizeof p.doc);

    static const struct {
        int64_t after;
        uint32_t limit;
        int first, n, more;
    } pages[] = {
        {-1, 4, 0, 4, 1}, {3, 4, 4, 4, 1}, {7, 4, 8, 3, 0}, {6, 4, 7, 4, 0},
        {10, 4, 0, 0, 0}, {-1, 1000, 0, 11, 0}, {9, 1, 10, 1, 0}, {8, 1, 9, 1, 1},
    };
    struct seen_list l = {0};
    for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
        int more;
        CHECK_INT(history(s, p.row.id, pages[i].after, pages[i].limit, &l, &more),
                  PAYMENT_STORE_OK);
        CHECK_INT(l.n, pages[i].n);
        CHECK_INT(more, pages[i].more);
        for (size_t j = 0; j < l.n && (int)j < pages[i].n; j++) {
            int v = pages[i].first + (int)j;
            int type = v == 0 ? PAYMENT_EVENT_CREATED
                       : v == 10 ? PAYMENT_EVENT_DELETED : PAYMENT_EVENT_UPDATED;
            CHECK_EVENT(&l.ev[j], type, p.row.id, v, docs[v]);
        }
    }
    /* Each history event is the feed's. */
    struct seen_list all = {0};
    feed_all(s, &all);
    CHECK_INT(all.n, 2 + 2 * 9 + 1);
    int more;
    CHECK_INT(history(s, p.row.id, -1, 1000, &l, &more), PAYMENT_STORE_OK);
    size_t k = 0;
    for (size_t i = 0; i < all.n; i++)
        if (strcmp(all.ev[i].pid, p.row.id) == 0) {
            CHECK(k < l.n && l.ev[k].pos == all.ev[i].pos &&
                  strcmp(l.ev[k].id, all.ev[i].id) == 0);
            k++;
        }
    CHECK_INT(k, 11);
    char unknown[UUID_STR_LEN + 1];
    pay_id(unknown, 99);
    CHECK_INT(history(s, unknown, -1, 10, &l, &more), PAYMENT_STORE_OK);
    CHECK_INT(l.n, 0);
    CHECK_INT(more, 0);
    seen_free(&all);
    seen_free(&l);
}

/* ---- the feed ------------------------------------------------------------- */

#define FF_EVENTS 8

/* Eight events in three organisations, at 1000 * (1..8) ms; pos[i] is
 * event i's position (pos[0] unused).  Returns whether the feed read them
 * (a case has nothing to check otherwise). */
static int feed_fixture(payment_store *s, int64_t pos[FF_EVENTS + 1], char a_id[UUID_STR_LEN + 1])
{
    struct pay a, b, c, d;
    pay_init(&a, 1, 1, 0);
    pay_init(&b, 2, 2, 0);
    pay_init(&c, 3, 3, 0);
    pay_init(&d, 4, 2, 0);
    struct payment_event_info at = {0};
    at.occurred_ms = 1000;
    CHECK_INT(sync_create(s, &a.row, NULL, &at), PAYMENT_STORE_OK);
    at.occurred_ms = 2000;
    CHECK_INT(sync_create(s, &b.row, NULL, &at), PAYMENT_STORE_OK);
    at.occurred_ms = 3000;
    pay_next(&a, "a1", 0);
    CHECK_INT(sync_update(s, &a.row, 0, NULL, &at), PAYMENT_STORE_OK);
    at.occurred_ms = 4000;
    CHECK_INT(sync_create(s, &c.row, NULL, &at), PAYMENT_STORE_OK);
    at.occurred_ms = 5000;
    CHECK_INT(sync_delete(s, b.row.id, 0, NULL, &at), PAYMENT_STORE_OK);
    at.occurred_ms = 6000;
    pay_next(&c, "c1", 0);
    CHECK_INT(sync_update(s, &c.row, 0, NULL, &at), PAYMENT_STORE_OK);
    at.occurred_ms = 7000;
    CHECK_INT(sync_delete(s, a.row.id, 1, NULL, &at), PAYMENT_STORE_OK);
    at.occurred_ms = 8000;
    CHECK_INT(sync_create(s, &d.row, NULL, &at), PAYMENT_STORE_OK);
    struct seen_list l = {0};
    feed_all(s, &l);
    CHECK_INT(l.n, FF_EVENTS);
    for (size_t i = 0; i < FF_EVENTS; i++) {
        pos[i + 1] = i < l.n ? l.ev[i].pos : -1;
        if (i < l.n)
            CHECK_INT(l.ev[i].occurred_ms, 1000 * ((int64_t)i + 1));
    }
    memcpy(a_id, a.row.id, UUID_STR_LEN + 1);
    int ok = l.n == FF_EVENTS;
    seen_free(&l);
    return ok;
}

/* Reads the page q names; l holds exactly events want[0..n) (by number,
 * 1..8) and next_pos is pos[want_next]. */
static void check_page_line(payment_store *s, const struct payment_event_query *q,
                            const int64_t pos[FF_EVENTS + 1], const int *want, size_t n,
                            int64_t want_next, int line)
{
    struct seen_list l = {0};
    int64_t next;
    int err = feed_page(s, q, &l, &next);
    if (err != PAYMENT_STORE_OK)
        fprintf(stderr, "  line %d: %s\n", line, payment_store_strerror(err));
    CHECK_INT(err, PAYMENT_STORE_OK);
    int64_t want_pos[FF_EVENTS];
    for (size_t i = 0; i < n; i++)
        want_pos[i] = pos[want[i]];
    check_positions_line(&l, want_pos, n, line);
    if (next != want_next)
        fprintf(stderr, "  line %d: next_pos %lld, expected %lld\n", line, (long long)next,
                (long long)want_next);
    CHECK(next == want_next);
    seen_free(&l);
}

#define CHECK_PAGE(q, want, n, next) check_page_line(s, (q), pos, (want), (n), (next), __LINE__)

/* Every filter alone and combined, in commit order. */
static void case_feed_filters(struct fixture *fx)
{
    payment_store *s = fx->s;
    int64_t pos[FF_EVENTS + 1];
    char a_id[UUID_STR_LEN + 1];
    if (!feed_fixture(s, pos, a_id))
        return;
    int64_t end = pos[FF_EVENTS];
    char orgs[3][UUID_STR_LEN + 1];
    org_id(orgs[0], 1);
    org_id(orgs[1], 3);
    org_id(orgs[2], 2);
    struct payment_event_query q;

    query_all(&q, 0, 100);
    CHECK_PAGE(&q, ((int[]){1, 2, 3, 4, 5, 6, 7, 8}), 8, end);
    q.all_orgs = 0;
    q.orgs = orgs;
    q.n_orgs = 1;
    CHECK_PAGE(&q, ((int[]){1, 3, 7}), 3, end);
    q.n_orgs = 2;
    CHECK_PAGE(&q, ((int[]){1, 3, 4, 6, 7}), 5, end);
    q.n_orgs = 3;
    CHECK_PAGE(&q, ((int[]){1, 2, 3, 4, 5, 6, 7, 8}), 8, end);
    q.n_orgs = 0; /* no organisation: nothing, but the end */
    CHECK_PAGE(&q, ((int[]){0}), 0, end);

    query_all(&q, 0, 100);
    q.types = PAYMENT_EVENT_DELETED;
    CHECK_PAGE(&q, ((int[]){5, 7}), 2, end);
    q.types = PAYMENT_EVENT_CREATED | PAYMENT_EVENT_UPDATED;
    CHECK_PAGE(&q, ((int[]){1, 2, 3, 4, 6, 8}), 6, end);
    q.types = PAYMENT_EVENT_CREATED | PAYMENT_EVENT_UPDATED | PAYMENT_EVENT_DELETED;
    CHECK_PAGE(&q, ((int[]){1, 2, 3, 4, 5, 6, 7, 8}), 8, end);

    query_all(&q, 0, 100);
    q.payment_id = a_id;
    CHECK_PAGE(&q, ((int[]){1, 3, 7}), 3, end);
    q.types = PAYMENT_EVENT_UPDATED;
    CHECK_PAGE(&q, ((int[]){3}), 1, end);

    query_all(&q, 0, 100);
    q.from_ms = 3000;
    q.to_ms = 6000;
    CHECK_PAGE(&q, ((int[]){3, 4, 5}), 3, end);
    q.to_ms = INT64_MAX;
    CHECK_PAGE(&q, ((int[]){3, 4, 5, 6, 7, 8}), 6, end);
    q.from_ms = INT64_MIN;
    q.to_ms = 2000;
    CHECK_PAGE(&q, ((int[]){1}), 1, end);

    /* Combined: organisation 2's creations, organisation 1's after 2.5 s. */
    query_all(&q, 0, 100);
    q.all_orgs = 0;
    q.orgs = orgs + 2;
    q.n_orgs = 1;
    q.types = PAYMENT_EVENT_CREATED;
    CHECK_PAGE(&q, ((int[]){2, 8}), 2, end);
    q.orgs = orgs;
    q.types = 0;
    q.from_ms = 2500;
    CHECK_PAGE(&q, ((int[]){3, 7}), 2, end);
    q.n_orgs = 2;
    q.types = PAYMENT_EVENT_UPDATED;
    q.after_pos = pos[3];
    CHECK_PAGE(&q, ((int[]){6}), 1, end);
}

/* next_pos: a full page's last event, else the feed's end, past the events
 * a filter hides; a cursor past the end stays. */
static void case_feed_cursor(struct fixture *fx)
{
    payment_store *s = fx->s;
    int64_t pos[FF_EVENTS + 1];
    char a_id[UUID_STR_LEN + 1];
    if (!feed_fixture(s, pos, a_id))
        return;
    int64_t end = pos[FF_EVENTS];
    char org1[1][UUID_STR_LEN + 1];
    org_id(org1[0], 1);
    struct payment_event_query q;

    query_all(&q, 0, 3);
    CHECK_PAGE(&q, ((int[]){1, 2, 3}), 3, pos[3]);
    q.after_pos = pos[3];
    CHECK_PAGE(&q, ((int[]){4, 5, 6}), 3, pos[6]);
    q.after_pos = pos[6];
    CHECK_PAGE(&q, ((int[]){7, 8}), 2, end);
    q.after_pos = end;
    CHECK_PAGE(&q, ((int[]){0}), 0, end);
    q.after_pos = end + 100;
    CHECK_PAGE(&q, ((int[]){0}), 0, end + 100);
    q.after_pos = pos[1] + (pos[2] - pos[1]) / 2; /* between two positions */
    q.limit = 1;
    CHECK_PAGE(&q, ((int[]){2}), 1, pos[2]);

    /* Organisation 1: events 1, 3, 7; event 8 (another's) closes the feed. */
    query_all(&q, 0, 2);
    q.all_orgs = 0;
    q.orgs = org1;
    q.n_orgs = 1;
    CHECK_PAGE(&q, ((int[]){1, 3}), 2, pos[3]);
    q.after_pos = pos[3];
    CHECK_PAGE(&q, ((int[]){7}), 1, end);
    q.limit = 10;
    q.after_pos = 0;
    CHECK_PAGE(&q, ((int[]){1, 3, 7}), 3, end);
    q.after_pos = pos[7];
    CHECK_PAGE(&q, ((int[]){0}), 0, end);
    /* The limit's count met by the last matching event: the page is full. */
    q.after_pos = pos[1];
    q.limit = 2;
    CHECK_PAGE(&q, ((int[]){3, 7}), 2, pos[7]);

    /* Following page by page from 0 with a limit of 1 gives each once. */
    struct seen_list l = {0};
    query_all(&q, 0, 1);
    q.all_orgs = 0;
    q.orgs = org1;
    q.n_orgs = 1;
    CHECK_INT(feed_follow(s, &q, &l), end);
    int64_t want[] = {pos[1], pos[3], pos[7]};
    CHECK_POSITIONS(&l, want, 3);
    seen_free(&l);
}

/* ---- retention ------------------------------------------------------------ */

/* Whether the feed from after (0 or a position) reads first_pos first, or
 * reads nothing when first_pos is 0. */
static int feed_starts_at(payment_store *s, int64_t after, int64_t first_pos)
{
    struct payment_event_query q;
    query_all(&q, after, 1);
    struct seen_list l = {0};
    int64_t next;
    int err = feed_page(s, &q, &l, &next);
    int yes = err == PAYMENT_STORE_OK &&
              (first_pos ? l.n == 1 && l.ev[0].pos == first_pos : l.n == 0);
    seen_free(&l);
    return yes;
}

/* Whether payment n's history is empty (want_empty) or not. */
static int history_empty(payment_store *s, int n)
{
    char id[UUID_STR_LEN + 1];
    pay_id(id, n);
    struct seen_list l = {0};
    int more;
    int err = history(s, id, -1, 10, &l, &more);
    int empty = err == PAYMENT_STORE_OK && l.n == 0;
    seen_free(&l);
    return empty;
}

/* Waits up to 10 s for a purge to show: the feed from 0 starting at
 * first_pos, and payment gone_n's history gone (0: no history to wait for). */
static void wait_purged_line(payment_store *s, int64_t first_pos, int gone_n, int line)
{
    int done = 0;
    for (int i = 0; i < 1000 && !done; i++) {
        done = feed_starts_at(s, 0, first_pos) && (gone_n == 0 || history_empty(s, gone_n));
        if (!done)
            CHECK_INT(usleep(10000), 0);
    }
    if (!done)
        fprintf(stderr, "  line %d: the purge never showed\n", line);
    CHECK(done);
}

#define WAIT_PURGED(s, first_pos, gone_n) wait_purged_line((s), (first_pos), (gone_n), __LINE__)

static int feed_err(payment_store *s, int64_t after)
{
    struct payment_event_query q;
    query_all(&q, after, 10);
    struct seen_list l = {0};
    int64_t next;
    int err = feed_page(s, &q, &l, &next);
    seen_free(&l);
    return err;
}

/* Events leave the feed (a cursor before them expires, 0 starts after
 * them) and stay in the histories; then histories go too. */
static void case_retention(struct fixture *fx)
{
    payment_store *s = fx->s;
    struct pay p[7];
    int64_t pos[7];
    struct seen_list l = {0};
    for (int i = 1; i <= 6; i++) {
        pay_init(&p[i], i, 1, 1000 * i);
        CHECK_INT(sync_create(s, &p[i].row, NULL, NULL), PAYMENT_STORE_OK);
    }
    feed_all(s, &l);
    CHECK_INT(l.n, 6);
    if (l.n != 6) {
        seen_free(&l);
        return;
    }
    for (int i = 1; i <= 6; i++)
        pos[i] = l.ev[i - 1].pos;

    /* The feed keeps what occurred from 3.5 s on. */
    payment_store_events_purge(s, 3500, INT64_MIN);
    WAIT_PURGED(s, pos[4], 0);
    CHECK_INT(feed_err(s, pos[1]), PAYMENT_STORE_EEXPIRED);
    CHECK_INT(feed_err(s, pos[2]), PAYMENT_STORE_EEXPIRED);
    CHECK(feed_starts_at(s, pos[3], pos[4])); /* nothing after it left */
    CHECK(!history_empty(s, 1));
    CHECK(!history_empty(s, 3));

    /* Histories of what occurred before 2.5 s go. */
    payment_store_events_purge(s, 3500, 2500);
    WAIT_PURGED(s, pos[4], 2);
    CHECK(history_empty(s, 1));
    CHECK(!history_empty(s, 3));
    CHECK(feed_starts_at(s, pos[3], pos[4]));

    /* Every history: the feed is empty, its end kept. */
    payment_store_events_purge(s, 3500, 10000);
    WAIT_PURGED(s, 0, 6);
    CHECK_INT(feed_err(s, pos[5]), PAYMENT_STORE_EEXPIRED);
    struct payment_event_query q;
    query_all(&q, pos[6], 10);
    int64_t next;
    seen_reset(&l);
    CHECK_INT(feed_page(s, &q, &l, &next), PAYMENT_STORE_OK);
    CHECK_INT(l.n, 0);
    CHECK_INT(next, pos[6]);
    query_all(&q, 0, 10);
    CHECK_INT(feed_page(s, &q, &l, &next), PAYMENT_STORE_OK);
    CHECK_INT(l.n, 0);
    CHECK(next >= pos[6]);

    /* New events come after. */
    struct pay n;
    pay_init(&n, 7, 1, 20000);
    CHECK_INT(sync_create(s, &n.row, NULL, NULL), PAYMENT_STORE_OK);
    seen_reset(&l);
    query_all(&q, pos[6], 10);
    CHECK_INT(feed_page(s, &q, &l, &next), PAYMENT_STORE_OK);
    CHECK_INT(l.n, 1);
    if (l.n == 1)
        CHECK_EVENT(&l.ev[0], PAYMENT_EVENT_CREATED, n.row.id, 0, n.doc);
    seen_free(&l);
}

/* ---- concurrency ---------------------------------------------------------- */

#define CF_WRITERS 4
#define CF_PAYMENTS 30 /* per writer: created, updated twice, one in three deleted */
#define CF_TOTAL (CF_WRITERS * CF_PAYMENTS)

struct cf_writer {
    payment_store *s;
    int w;
    int failed;
};

/* The version a payment of the concurrency case ends at: its last event's. */
static int64_t cf_last_version(int j)
{
    return j % 3 == 0 ? 3 : 2;
}

static void *cf_writer_main(void *arg)
{
    struct cf_writer *c = arg;
    for (int j = 0; j < CF_PAYMENTS; j++) {
        struct pay p;
        pay_init(&p, 1 + c->w * CF_PAYMENTS + j, c->w, 1000 + j);
        c->failed += sync_create(c->s, &p.row, NULL, NULL) != PAYMENT_STORE_OK;
        for (int v = 1; v <= 2; v++) {
            pay_next(&p, "upd", 1000 + j);
            c->failed += sync_update(c->s, &p.row, v - 1, NULL, NULL) != PAYMENT_STORE_OK;
        }
        if (cf_last_version(j) == 3)
            c->failed += sync_delete(c->s, p.row.id, 2, NULL, NULL) != PAYMENT_STORE_OK;
    }
    return NULL;
}

/* A reader following the feed with next_pos: each payment's versions, the
 * next one it expects, and what it saw wrong. */
struct cf_reader {
    payment_store *s;
    _Atomic int writers_done;
    int64_t next_version[CF_TOTAL + 1];
    int64_t last_pos;
    long events, out_of_order, pages;
};

/* Reads one page from the reader's cursor; returns the events read. */
static size_t cf_read(struct cf_reader *r, struct seen_list *l)
{
    struct payment_event_query q;
    query_all(&q, r->last_pos, 7);
    seen_reset(l);
    int64_t next;
    CHECK_INT(feed_page(r->s, &q, l, &next), PAYMENT_STORE_OK);
    r->pages++;
    for (size_t i = 0; i < l->n; i++) {
        const struct seen *e = &l->ev[i];
        int n = atoi(e->pid + 24);
        int ok = e->pos > r->last_pos && n >= 1 && n <= CF_TOTAL &&
                 e->version == r->next_version[n];
        if (!ok && r->out_of_order++ < 5)
            fprintf(stderr, "  read %s v%lld at %lld after %lld\n", e->pid,
                    (long long)e->version, (long long)e->pos, (long long)r->last_pos);
        if (n >= 1 && n <= CF_TOTAL)
            r->next_version[n] = e->version + 1;
        r->last_pos = e->pos;
        r->events++;
    }
    CHECK(next >= r->last_pos);
    r->last_pos = next;
    return l->n;
}

static void *cf_reader_main(void *arg)
{
    struct cf_reader *r = arg;
    struct seen_list l = {0};
    for (;;) {
        int done = atomic_load(&r->writers_done);
        size_t n = cf_read(r, &l);
        if (done && n == 0)
            break; /* read to the end after the last write */
        if (n == 0)
            usleep(500);
    }
    seen_free(&l);
    return NULL;
}

/* Writers on several threads, a reader following the feed meanwhile: it
 * sees every event once, each payment's in version order. */
static void case_concurrent_feed(struct fixture *fx)
{
    struct cf_writer ws[CF_WRITERS];
    pthread_t wt[CF_WRITERS], rt;
    struct cf_reader *r = calloc(1, sizeof *r);
    r->s = fx->s;
    atomic_init(&r->writers_done, 0);
    CHECK_INT(pthread_create(&rt, NULL, cf_reader_main, r), 0);
    for (int i = 0; i < CF_WRITERS; i++) {
        ws[i] = (struct cf_writer){.s = fx->s, .w = i};
        CHECK_INT(pthread_create(&wt[i], NULL, cf_writer_main, &ws[i]), 0);
    }
    for (int i = 0; i < CF_WRITERS; i++) {
        CHECK_INT(pthread_join(wt[i], NULL), 0);
        CHECK_INT(ws[i].failed, 0);
    }
    atomic_store(&r->writers_done, 1);
    CHECK_INT(pthread_join(rt, NULL), 0);
    long want = 0;
    for (int n = 1; n <= CF_TOTAL; n++) {
        int64_t last = cf_last_version((n - 1) % CF_PAYMENTS);
        want += last + 1;
        CHECK_INT(r->next_version[n], last + 1);
    }
    CHECK_INT(r->out_of_order, 0);
    CHECK_INT(r->events, want);
    fprintf(stderr, "  %ld events followed in %ld reads\n", r->events, r->pages);

    /* The histories agree: versions 0..last, contiguous. */
    struct seen_list l = {0};
    for (int n = 1; n <= CF_TOTAL; n++) {
        char id[UUID_STR_LEN + 1];
        pay_id(id, n);
        int more;
        CHECK_INT(history(fx->s, id, -1, 100, &l, &more), PAYMENT_STORE_OK);
        int64_t last = cf_last_version((n - 1) % CF_PAYMENTS);
        CHECK_INT(l.n, last + 1);
        for (size_t i = 0; i < l.n; i++)
            CHECK_INT(l.ev[i].version, (int64_t)i);
    }
    seen_free(&l);
    free(r);
}

/* ---- the subscriber ------------------------------------------------------- */

static _Atomic int told;

static void tell(void *arg)
{
    (void)arg;
    atomic_fetch_add(&told, 1);
}

/* Whether the subscriber is told within ms milliseconds after since. */
static int told_within(int since, int ms)
{
    for (int i = 0; i < ms && atomic_load(&told) == since; i++)
        usleep(1000);
    return atomic_load(&told) != since;
}

/* Told at once of this store's commits, and within about a second of a
 * commit through another store on the same data, as another process's. */
static void case_subscribe(struct fixture *fx)
{
    atomic_store(&told, 0);
    payment_store_events_subscribe(fx->s, tell, NULL);
    payment_store *other = NULL;
    char err[256] = "";
    CHECK_INT(payment_store_open(fx->uri, fx->flags, &other, err, sizeof err), PAYMENT_STORE_OK);
    if (!other)
        return;
    usleep(300000); /* a poll of its own, if any, is past */
    struct pay p, q;
    pay_init(&p, 1, 1, 1000);
    int before = atomic_load(&told);
    CHECK_INT(sync_create(fx->s, &p.row, NULL, NULL), PAYMENT_STORE_OK);
    CHECK(told_within(before, 1000));
    usleep(300000);
    before = atomic_load(&told);
    pay_init(&q, 2, 1, 1000);
    int64_t t0 = clock_mono_us();
    CHECK_INT(sync_create(other, &q.row, NULL, NULL), PAYMENT_STORE_OK);
    CHECK(told_within(before, 1500));
    fprintf(stderr, "  told of another store's commit after %lld ms\n",
            (long long)(clock_mono_us() - t0) / 1000);
    payment_store_close(other);
}

/* ---- commit order (the embedded store) ------------------------------------ */

/* The store file of an "sqlite:PATH" URI. */
static const char *sqlite_path(const struct fixture *fx)
{
    return fx->uri + strlen("sqlite:");
}

/* An event another connection has inserted and not committed holds a
 * position above every committed one: a reader's cursor stays below it
 * (next_pos) and finds it once it commits; another store's write waits
 * behind it, then comes after it. */
static void case_open_transaction(struct fixture *fx)
{
    payment_store *s = fx->s, *other = NULL;
    char err[256] = "";
    CHECK_INT(payment_store_open(fx->uri, fx->flags, &other, err, sizeof err), PAYMENT_STORE_OK);
    if (!other)
        return;
    struct pay a, b;
    pay_init(&a, 1, 1, 1000);
    CHECK_INT(sync_create(s, &a.row, NULL, NULL), PAYMENT_STORE_OK);
    struct seen_list l = {0};
    struct payment_event_query q;
    query_all(&q, 0, 10);
    int64_t cursor = feed_follow(s, &q, &l);
    CHECK_INT(l.n, 1);

    sqlite3 *db = NULL;
    CHECK_INT(sqlite3_open_v2(sqlite_path(fx), &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    CHECK_INT(sqlite3_busy_timeout(db, 5000), SQLITE_OK);
    CHECK_INT(sqlite3_exec(db, "BEGIN IMMEDIATE;"
                               " INSERT INTO events (id, payment_id, organisation_id, version,"
                               " type, occurred_ms, doc) VALUES"
                               " ('01890000-0000-7000-8000-0000000000ff',"
                               " '00000000-0000-4000-8000-000000000077',"
                               " '0a0a0a0a-0000-4000-8000-000000000001', 0, 1, 1500, '{}')",
                           NULL, NULL, NULL),
              SQLITE_OK);
    int64_t open_pos = sqlite3_last_insert_rowid(db);
    CHECK(open_pos > cursor);

    /* Another store's write waits for the open transaction. */
    pay_init(&b, 2, 1, 2000);
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_create(other, &b.row, NULL, NULL, waiter_done, &w);
    for (int i = 0; i < 20; i++) {
        seen_reset(&l);
        query_all(&q, cursor, 10);
        int64_t next;
        CHECK_INT(feed_page(s, &q, &l, &next), PAYMENT_STORE_OK);
        CHECK_INT(l.n, 0);
        CHECK(next < open_pos);
        cursor = next;
        usleep(10000);
    }
    CHECK_INT(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    CHECK_INT(sqlite3_close(db), SQLITE_OK);
    waiter_wait(&w);
    CHECK_INT(w.err, PAYMENT_STORE_OK);

    seen_reset(&l);
    query_all(&q, cursor, 10);
    (void)feed_follow(s, &q, &l);
    CHECK_INT(l.n, 2);
    if (l.n == 2) {
        CHECK_INT(l.ev[0].pos, open_pos);
        CHECK_EVENT(&l.ev[1], PAYMENT_EVENT_CREATED, b.row.id, 0, b.doc);
    }
    seen_free(&l);
    payment_store_close(other);
}

/* A done callback that holds the writer thread that reports it until
 * released. */
struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int entered, released;
    struct waiter *w;
};

static void gate_done(void *arg, int err, int64_t cur, int64_t seq)
{
    struct gate *g = arg;
    pthread_mutex_lock(&g->mu);
    g->entered = 1;
    pthread_cond_broadcast(&g->cv);
    while (!g->released)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    waiter_done(g->w, err, cur, seq);
}

/* A write submitted to one store while another store's write, submitted
 * later, commits first: a reader whose cursor passed the later one still
 * finds the earlier one above it, as it would with two processes. */
static void case_submitted_first(struct fixture *fx)
{
    payment_store *s = fx->s, *other = NULL;
    char err[256] = "";
    CHECK_INT(payment_store_open(fx->uri, fx->flags, &other, err, sizeof err), PAYMENT_STORE_OK);
    if (!other)
        return;
    struct pay g0, w1, w2;
    pay_init(&g0, 1, 1, 1000);
    pay_init(&w1, 2, 1, 1000);
    pay_init(&w2, 3, 1, 1000);

    /* This store's writer is held in g0's report: w1 waits in its queue. */
    struct waiter wg, w;
    waiter_init(&wg, 1);
    waiter_init(&w, 1);
    struct gate g = {.w = &wg};
    CHECK_INT(pthread_mutex_init(&g.mu, NULL), 0);
    CHECK_INT(pthread_cond_init(&g.cv, NULL), 0);
    payment_store_create(s, &g0.row, NULL, NULL, gate_done, &g);
    pthread_mutex_lock(&g.mu);
    while (!g.entered)
        pthread_cond_wait(&g.cv, &g.mu);
    pthread_mutex_unlock(&g.mu);
    payment_store_create(s, &w1.row, NULL, NULL, waiter_done, &w);
    CHECK_INT(sync_create(other, &w2.row, NULL, NULL), PAYMENT_STORE_OK);

    struct seen_list l = {0};
    struct payment_event_query q;
    query_all(&q, 0, 10);
    int64_t cursor = feed_follow(s, &q, &l);
    CHECK_INT(l.n, 2);
    if (l.n == 2) {
        CHECK_STR(l.ev[0].pid, g0.row.id);
        CHECK_STR(l.ev[1].pid, w2.row.id);
        CHECK_INT(cursor, l.ev[1].pos);
    }

    pthread_mutex_lock(&g.mu);
    g.released = 1;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    waiter_wait(&wg);
    waiter_wait(&w);
    CHECK_INT(wg.err, PAYMENT_STORE_OK);
    CHECK_INT(w.err, PAYMENT_STORE_OK);

    seen_reset(&l);
    query_all(&q, cursor, 10);
    (void)feed_follow(s, &q, &l);
    if (l.n != 1)
        fprintf(stderr, "  %zu events above the cursor %lld, expected the write held back\n",
                l.n, (long long)cursor);
    CHECK_INT(l.n, 1);
    if (l.n == 1)
        CHECK_EVENT(&l.ev[0], PAYMENT_EVENT_CREATED, w1.row.id, 0, w1.doc);
    seen_free(&l);
    CHECK_INT(pthread_cond_destroy(&g.cv), 0);
    CHECK_INT(pthread_mutex_destroy(&g.mu), 0);
    payment_store_close(other);
}

/* ---- runners (SQLITE_CASE and SQLITE_EXCL_CASE: store_fixture.h) ----------- */

/* A backend that does not record events yet (no events function in its
 * table: store.c answers EINTERNAL) has its cases skipped, not failed. */
#define MONGO_CASE(name)                                                                      \
    static void mongo_case_##name(struct fixture *fx)                                         \
    {                                                                                         \
        if (!fx->s->backend->events) {                                                        \
            TEST_SKIP("this backend records no events yet");                                  \
            return;                                                                           \
        }                                                                                     \
        case_##name(fx);                                                                      \
    }                                                                                         \
    static void mongo_##name(void) { run_on_mongo(mongo_case_##name); }

/* Defines test pg_NAME running case_NAME on a fresh PostgreSQL schema. */
#define PG_EVENTS_CASE(name)                                                                  \
    static void pg_##name(void) { run_on_pg(case_##name); }

SQLITE_CASE(records_each_write)
SQLITE_CASE(failed_writes_record_none)
SQLITE_CASE(apply_records)
SQLITE_CASE(history_pages)
SQLITE_CASE(feed_filters)
SQLITE_CASE(feed_cursor)
SQLITE_CASE(retention)
SQLITE_CASE(concurrent_feed)
SQLITE_CASE(subscribe)
SQLITE_CASE(open_transaction)
SQLITE_CASE(submitted_first)
SQLITE_EXCL_CASE(records_each_write)
SQLITE_EXCL_CASE(feed_filters)
SQLITE_EXCL_CASE(concurrent_feed)
MONGO_CASE(records_each_write)
MONGO_CASE(failed_writes_record_none)
MONGO_CASE(apply_records)
MONGO_CASE(history_pages)
MONGO_CASE(feed_filters)
MONGO_CASE(feed_cursor)
MONGO_CASE(retention)
MONGO_CASE(concurrent_feed)
MONGO_CASE(subscribe)
PG_EVENTS_CASE(records_each_write)
PG_EVENTS_CASE(failed_writes_record_none)
PG_EVENTS_CASE(apply_records)
PG_EVENTS_CASE(history_pages)
PG_EVENTS_CASE(feed_filters)
PG_EVENTS_CASE(feed_cursor)
PG_EVENTS_CASE(retention)
PG_EVENTS_CASE(concurrent_feed)
PG_EVENTS_CASE(subscribe)
PG_EVENTS_CASE(submitted_first)

TEST_MAIN(TEST(sqlite_records_each_write), TEST(sqlite_failed_writes_record_none),
          TEST(sqlite_apply_records), TEST(sqlite_history_pages), TEST(sqlite_feed_filters),
          TEST(sqlite_feed_cursor), TEST(sqlite_retention), TEST(sqlite_concurrent_feed),
          TEST(sqlite_subscribe), TEST(sqlite_open_transaction), TEST(sqlite_submitted_first),
          TEST(sqlite_excl_records_each_write), TEST(sqlite_excl_feed_filters),
          TEST(sqlite_excl_concurrent_feed), TEST(mongo_records_each_write),
          TEST(mongo_failed_writes_record_none), TEST(mongo_apply_records),
          TEST(mongo_history_pages), TEST(mongo_feed_filters), TEST(mongo_feed_cursor),
          TEST(mongo_retention), TEST(mongo_concurrent_feed), TEST(mongo_subscribe),
          TEST(pg_records_each_write), TEST(pg_failed_writes_record_none),
          TEST(pg_apply_records), TEST(pg_history_pages), TEST(pg_feed_filters),
          TEST(pg_feed_cursor), TEST(pg_retention), TEST(pg_concurrent_feed),
          TEST(pg_subscribe), TEST(pg_submitted_first))
