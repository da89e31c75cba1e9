/* The copy's contract (store.h, "copying one store into another"), written
 * against any backend: a source store holding creates, updates, deletes
 * (tombstones), idempotency records and events, some of them kept only in
 * a history, is copied page by page into a second, empty store, and the
 * target must then answer every read as the source does: the same
 * documents, versions and times, tombstones that refuse a create, the list
 * order, each history, the feed's order, the idempotency records.  A copy
 * run again adds nothing; a copy interrupted after some pages and run again
 * from the beginning ends equal.  Each case runs on the embedded store, on
 * PostgreSQL (PAYMENTD_TEST_PG_URI) and on MongoDB
 * (PAYMENTD_TEST_MONGO_URI), the target a second fresh store of the same
 * kind; the cross cases copy between two different backends. */
#include "payment/store.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "event_list.h"
#include "store_copy_fixture.h"
#include "store_fixture.h"
#include "store_waiter.h"
#include "test.h"

#define COPY_PAGE 7        /* rows per exported page: several pages of each kind */
#define COPY_PAYMENTS 24   /* payments the source holds */
#define COPY_EARLY 3       /* the first ones, created long ago: their creations leave the feed */
#define COPY_EARLY_MS 1000 /* when payment i <= COPY_EARLY was created: i * this */
#define COPY_T0 1767225600000LL /* when the others were: 2026-01-01 */
#define COPY_FEED_CUT (COPY_EARLY_MS * (COPY_EARLY + 1)) /* the source's feed keeps from here */
#define COPY_NO_LIMIT 1000000 /* pages a whole copy may take */
/* What populate writes: idempotency records (8 creates, 6 updates, 1
 * delete) and events (24 creations, 18 updates, 4 deletions). */
#define COPY_RECORDS 15
#define COPY_EVENTS 46

/* ---- the source's contents ------------------------------------------------- */

/* Payment n's id, and its organisation's (one of three). */
static void pay_id(char out[UUID_STR_LEN + 1], int n)
{
    snprintf(out, UUID_STR_LEN + 1, "00000000-0000-4000-8000-%012d", n);
}

static void org_id(char out[UUID_STR_LEN + 1], int n)
{
    snprintf(out, UUID_STR_LEN + 1, "0a0a0a0a-0000-4000-8000-%012d", n % 3 + 1);
}

/* A row and the bytes it borrows. */
struct pay {
    struct payment_row row;
    char reference[32];
    char doc[160];
};

static int64_t created_ms_of(int n)
{
    return n <= COPY_EARLY ? n * COPY_EARLY_MS : COPY_T0 + n * 1000;
}

/* Payment n at version v; some of its columns absent, as a write may have
 * them.  The document holds its creation time and bytes a text layer could
 * mangle. */
static void pay_make(struct pay *p, int n, int64_t v)
{
    memset(p, 0, sizeof *p);
    pay_id(p->row.id, n);
    org_id(p->row.organisation_id, n);
    p->row.version = v;
    p->row.created_ms = created_ms_of(n);
    /* Updates all happen late: only the early creations are old enough to
     * leave the feed, whatever order a backend's purge walks in. */
    p->row.modified_ms = v ? COPY_T0 + n * 1000 + v * 500 : p->row.created_ms;
    p->row.currency = n % 4 == 3 ? NULL : "GBP";
    p->row.payment_scheme = n % 2 ? "FPS" : "BACS";
    p->row.payment_type = "Credit";
    snprintf(p->reference, sizeof p->reference, "ref-%d", n);
    p->row.reference = p->reference;
    p->row.end_to_end_reference = n % 3 ? NULL : "e2e";
    if (n % 2)
        snprintf(p->row.processing_date, sizeof p->row.processing_date, "2026-01-%02d",
                 (n % 28 + 1) & 31);
    if (n % 3) {
        struct decimal d;
        char amount[16];
        snprintf(amount, sizeof amount, "%d.%02d", n * 7, n);
        CHECK_INT(decimal_parse(amount, strlen(amount), &d), 0);
        decimal_sort_key(&d, p->row.amount_key);
    }
    int len = snprintf(p->doc, sizeof p->doc,
                       "{\"id\":\"%s\",\"version\":%lld,\"created_on\":\"t%lld\","
                       "\"note\":\"caf\xc3\xa9 \\\"q\\\"\"}",
                       p->row.id, (long long)v, (long long)p->row.created_ms);
    CHECK(len > 0 && (size_t)len < sizeof p->doc);
    p->row.doc = p->doc;
    p->row.doc_len = (size_t)len;
}

/* An idempotency record of write w, with some of its parts absent. */
struct rec {
    struct payment_idem idem;
    char key[32];
    char fingerprint[65];
    char body[64];
};

static void rec_make(struct rec *r, int w)
{
    memset(r, 0, sizeof *r);
    snprintf(r->key, sizeof r->key, "key-%d", w);
    for (int i = 0; i < 64; i++)
        r->fingerprint[i] = "0123456789abcdef"[(w * 7 + i) % 16];
    r->idem.scope = w % 2 ? "apikey-1" : "";
    r->idem.key = r->key;
    r->idem.fingerprint = r->fingerprint;
    r->idem.status = w % 3 ? 201 : 204;
    r->idem.location = w % 3 ? "/v1/payments/x" : NULL;
    r->idem.etag = w % 4 ? "\"3\"" : NULL;
    int len = snprintf(r->body, sizeof r->body, "{\"w\":%d,\"b\":\"\x01\xff\"}", w);
    r->idem.body = w % 3 ? r->body : NULL;
    r->idem.body_len = w % 3 ? (size_t)len : 0;
    r->idem.created_ms = COPY_T0 + w;
}

static void ev_make(struct payment_event_info *ev, int n, const char *changes)
{
    memset(ev, 0, sizeof *ev);
    ev->api_key_id = n % 2 ? "apikey-1" : NULL;
    ev->request_id = n % 3 ? "req-x" : NULL;
    ev->idempotency_key = n % 5 ? NULL : "key-ev";
    ev->changes = changes;
}

/* Whether the feed's first event is above the early payments' creations. */
static int early_left_feed(payment_store *s)
{
    struct payment_event_query q;
    memset(&q, 0, sizeof q);
    q.limit = 1;
    q.all_orgs = 1;
    q.from_ms = INT64_MIN;
    q.to_ms = INT64_MAX;
    struct seen_list l = {0};
    int64_t next;
    int err = payment_store_events(s, &q, seen_add, &l, &next);
    int gone = err == PAYMENT_STORE_OK && l.n == 1 && l.ev[0].occurred_ms >= COPY_FEED_CUT;
    seen_free(&l);
    return gone;
}

/* Fills s: payments created (every third with a record), the even ones
 * updated (every fourth twice), every fifth deleted (the tenth with a
 * record); the early payments' creations then leave the feed and stay in
 * their histories. */
static void populate(payment_store *s)
{
    struct pay p;
    struct rec r;
    struct payment_event_info ev;
    int w = 0;
    for (int n = 1; n <= COPY_PAYMENTS; n++) {
        pay_make(&p, n, 0);
        ev_make(&ev, n, NULL);
        rec_make(&r, ++w);
        CHECK_INT(sync_write(s, 0, &p.row, 0, n % 3 ? NULL : &r.idem, &ev), PAYMENT_STORE_OK);
    }
    for (int n = 2; n <= COPY_PAYMENTS; n += 2) {
        for (int v = 1; v <= (n % 4 ? 1 : 2); v++) {
            pay_make(&p, n, v);
            ev_make(&ev, n + v, "[\"/attributes/amount\"]");
            rec_make(&r, ++w);
            CHECK_INT(sync_write(s, 1, &p.row, v - 1, n % 8 ? NULL : &r.idem, &ev),
                      PAYMENT_STORE_OK);
        }
    }
    for (int n = 5; n <= COPY_PAYMENTS; n += 5) {
        pay_make(&p, n, 0);
        ev_make(&ev, n, NULL);
        ev.occurred_ms = COPY_T0 + 100000 + n;
        rec_make(&r, ++w);
        CHECK_INT(sync_write(s, 2, &p.row, -1, n == 10 ? &r.idem : NULL, &ev), PAYMENT_STORE_OK);
    }
    payment_store_events_purge(s, COPY_FEED_CUT, INT64_MIN);
    int gone = 0;
    for (int i = 0; i < 3000 && !gone; i++) { /* 30 s: a loaded machine purges slowly */
        gone = early_left_feed(s);
        if (!gone)
            CHECK_INT(usleep(10000), 0);
    }
    CHECK(gone);
}

/* ---- the copy ------------------------------------------------------------- */

/* One exported page, copied out of the callbacks. */
struct page {
    struct held h;
};

/* Imports the page held in pg into dst, adding what it added to *sum. */
static int page_import(payment_store *dst, struct page *pg, struct payment_import_result *sum)
{
    struct held *h = &pg->h;
    struct payment_export *pays = calloc(h->n_pay + 1, sizeof *pays);
    struct payment_idem_export *recs = calloc(h->n_rec + 1, sizeof *recs);
    struct payment_event *evs = calloc(h->ev.n + 1, sizeof *evs);
    CHECK(pays && recs && evs);
    if (!pays || !recs || !evs)
        abort();
    for (size_t i = 0; i < h->n_pay; i++)
        pays[i] = h->pay[i].e;
    for (size_t i = 0; i < h->n_rec; i++)
        recs[i] = h->rec[i].r;
    for (size_t i = 0; i < h->ev.n; i++) {
        const struct seen *e = &h->ev.ev[i];
        struct payment_event *o = &evs[i];
        o->pos = e->pos;
        memcpy(o->id, e->id, sizeof o->id);
        o->type = (enum payment_event_type)e->type;
        memcpy(o->organisation_id, e->org, sizeof o->organisation_id);
        memcpy(o->payment_id, e->pid, sizeof o->payment_id);
        o->version = e->version;
        o->occurred_ms = e->occurred_ms;
#define SEEN_TEXT(t) (strcmp((t), NULL_TEXT) == 0 ? NULL : (t))
        o->api_key_id = SEEN_TEXT(e->api_key_id);
        o->request_id = SEEN_TEXT(e->request_id);
        o->idempotency_key = SEEN_TEXT(e->idem_key);
        o->operation_id = SEEN_TEXT(e->op_id);
        o->changes = SEEN_TEXT(e->changes);
#undef SEEN_TEXT
        o->doc = e->doc;
        o->doc_len = strlen(e->doc);
    }
    struct payment_import im = {pays, h->n_pay, recs, h->n_rec, evs, h->ev.n};
    struct payment_import_result out = {99, 99, 99};
    int err = payment_store_import(dst, &im, &out);
    CHECK_INT(err, PAYMENT_STORE_OK);
    if (err == PAYMENT_STORE_OK) {
        CHECK(out.payments <= h->n_pay && out.idem <= h->n_rec && out.events <= h->ev.n);
        sum->payments += out.payments;
        sum->idem += out.idem;
        sum->events += out.events;
    }
    free(pays);
    free(recs);
    free(evs);
    return err;
}

/* Copies src into dst, COPY_PAGE rows of one kind per imported page: the
 * payments, then the records, then the events.  Stops after max_pages
 * pages (an interruption).  *sum gets what the imports added. */
static void copy(payment_store *src, payment_store *dst, int max_pages,
                 struct payment_import_result *sum)
{
    memset(sum, 0, sizeof *sum);
    int pages = 0;
    int64_t after_seq = 0, after_pos = 0;
    char *after_scope = NULL, *after_key = NULL;
    for (int kind = 0; kind < 3; kind++) {
        int more = 1;
        while (more && pages < max_pages) {
            struct page pg;
            memset(&pg, 0, sizeof pg);
            int err;
            if (kind == 0)
                err = payment_store_export_payments(src, after_seq, COPY_PAGE, held_add_pay,
                                                    &pg.h, &more);
            else if (kind == 1)
                err = payment_store_export_idem(src, after_scope, after_key, COPY_PAGE,
                                                held_add_rec, &pg.h, &more);
            else
                err = payment_store_export_events(src, after_pos, COPY_PAGE, seen_add, &pg.h.ev,
                                                  &more);
            CHECK_INT(err, PAYMENT_STORE_OK);
            size_t n = pg.h.n_pay + pg.h.n_rec + pg.h.ev.n;
            if (err != PAYMENT_STORE_OK || n == 0) {
                held_free(&pg.h);
                break;
            }
            if (kind == 0)
                after_seq = pg.h.pay[pg.h.n_pay - 1].e.seq;
            if (kind == 1) {
                free(after_scope);
                free(after_key);
                after_scope = dup_text(pg.h.rec[pg.h.n_rec - 1].scope);
                after_key = dup_text(pg.h.rec[pg.h.n_rec - 1].key);
            }
            if (kind == 2)
                after_pos = pg.h.ev.ev[pg.h.ev.n - 1].pos;
            err = page_import(dst, &pg, sum);
            held_free(&pg.h);
            pages++;
            if (err != PAYMENT_STORE_OK)
                break;
        }
    }
    free(after_scope);
    free(after_key);
}

static void check_get(payment_store *src, payment_store *dst, const char *id)
{
    struct buf a = BUF_INIT, b = BUF_INIT;
    int64_t va = -5, vb = -6, ca = -5, cb = -6;
    CHECK_INT(payment_store_get_meta(src, id, &a, &va, &ca), PAYMENT_STORE_OK);
    CHECK_INT(payment_store_get_meta(dst, id, &b, &vb, &cb), PAYMENT_STORE_OK);
    CHECK_INT(vb, va);
    CHECK_INT(cb, ca);
    CHECK(a.len == b.len && a.len > 0 && memcmp(a.data, b.data, a.len) == 0);
    buf_free(&a);
    buf_free(&b);
}

/* A page of payment_store_list, by ids, in order. */
struct listed {
    char ids[COPY_PAYMENTS + 1][UUID_STR_LEN + 1];
    int n;
};

static int listed_add(void *arg, const char *doc, size_t len, int64_t seq)
{
    (void)seq;
    struct listed *l = arg;
    CHECK(l->n <= COPY_PAYMENTS && len > 8 + UUID_STR_LEN);
    if (l->n > COPY_PAYMENTS || len <= 8 + UUID_STR_LEN)
        return 1;
    memcpy(l->ids[l->n], doc + 7, UUID_STR_LEN); /* {"id":"<id>" */
    l->ids[l->n][UUID_STR_LEN] = '\0';
    l->n++;
    return 0;
}

static void list_all(payment_store *s, struct listed *l)
{
    struct payment_query q;
    memset(&q, 0, sizeof q);
    q.created_from_ms = INT64_MIN;
    q.created_to_ms = INT64_MAX;
    q.page_size = 100;
    q.mode = PAYMENT_PAGE_FIRST;
    l->n = 0;
    int more = -1;
    CHECK_INT(payment_store_list(s, &q, listed_add, l, &more), PAYMENT_STORE_OK);
    CHECK_INT(more, 0);
}

/* Reads the feed of s whole, from its start. */
static void feed_read(payment_store *s, struct seen_list *l)
{
    struct payment_event_query q;
    memset(&q, 0, sizeof q);
    q.limit = COPY_PAGE;
    q.all_orgs = 1;
    q.from_ms = INT64_MIN;
    q.to_ms = INT64_MAX;
    for (;;) {
        size_t before = l->n;
        int64_t next = -1;
        CHECK_INT(payment_store_events(s, &q, seen_add, l, &next), PAYMENT_STORE_OK);
        if (l->n == before || next <= q.after_pos)
            break;
        q.after_pos = next;
    }
}

static void history_read(payment_store *s, const char *id, struct seen_list *l)
{
    int more = -1;
    CHECK_INT(payment_store_history(s, id, -1, 100, seen_add, l, &more), PAYMENT_STORE_OK);
    CHECK_INT(more, 0);
}

/* The target answers every read as the source does. */
static void check_copied(payment_store *src, payment_store *dst)
{
    struct held a, b;
    held_read(src, COPY_PAGE, &a);
    held_read(dst, COPY_PAGE, &b);
    /* What the exports give: every payment, tombstones included, in order. */
    CHECK_INT(a.n_pay, COPY_PAYMENTS);
    CHECK_INT(b.n_pay, a.n_pay);
    for (size_t i = 0; i < a.n_pay && i < b.n_pay; i++) {
        check_same_pay(&a.pay[i], &b.pay[i]);
        if (i)
            CHECK(b.pay[i].e.seq > b.pay[i - 1].e.seq);
    }
    CHECK_INT(a.n_rec, COPY_RECORDS);
    CHECK_INT(b.n_rec, a.n_rec);
    for (size_t i = 0; i < a.n_rec && i < b.n_rec; i++)
        check_same_rec(&a.rec[i], &b.rec[i]);
    CHECK_INT(a.ev.n, COPY_EVENTS);
    check_same_events(&a.ev, &b.ev);

    /* The reads: get, tombstones, idempotency records. */
    for (size_t i = 0; i < a.n_pay; i++) {
        const char *id = a.pay[i].e.row.id;
        if (!a.pay[i].e.deleted) {
            check_get(src, dst, id);
            continue;
        }
        struct buf d = BUF_INIT;
        int64_t v = -5;
        CHECK_INT(payment_store_get(dst, id, &d, &v), PAYMENT_STORE_ENOTFOUND);
        buf_free(&d);
    }
    for (size_t i = 0; i < a.n_rec; i++) {
        struct payment_idem_found fa = {.location = BUF_INIT, .body = BUF_INIT};
        struct payment_idem_found fb = {.location = BUF_INIT, .body = BUF_INIT};
        CHECK_INT(payment_store_idem_get(src, a.rec[i].scope, a.rec[i].key, &fa), 0);
        CHECK_INT(payment_store_idem_get(dst, a.rec[i].scope, a.rec[i].key, &fb), 0);
        CHECK_STR(fb.fingerprint, fa.fingerprint);
        CHECK_INT(fb.status, fa.status);
        CHECK_STR(fb.etag, fa.etag);
        CHECK(same_bytes(fb.location.data, fb.location.len, fa.location.data, fa.location.len));
        CHECK(fb.body.len == fa.body.len &&
              (fa.body.len == 0 || memcmp(fb.body.data, fa.body.data, fa.body.len) == 0));
        buf_free(&fa.location), buf_free(&fa.body), buf_free(&fb.location), buf_free(&fb.body);
    }

    /* The list order. */
    struct listed *la = calloc(1, sizeof *la), *lb = calloc(1, sizeof *lb);
    CHECK(la && lb);
    if (la && lb) {
        list_all(src, la);
        list_all(dst, lb);
        CHECK_INT(la->n, COPY_PAYMENTS - COPY_PAYMENTS / 5);
        CHECK_INT(lb->n, la->n);
        for (int i = 0; i < la->n && i < lb->n; i++)
            CHECK_STR(lb->ids[i], la->ids[i]);
    }
    free(la);
    free(lb);

    /* Each history, tombstones' included. */
    for (size_t i = 0; i < a.n_pay; i++) {
        struct seen_list ha = {0}, hb = {0};
        history_read(src, a.pay[i].e.row.id, &ha);
        history_read(dst, a.pay[i].e.row.id, &hb);
        CHECK_INT(ha.n, (size_t)a.pay[i].e.row.version + 1);
        check_same_events(&ha, &hb);
        seen_free(&ha);
        seen_free(&hb);
    }

    /* The feed: the source's events, in its order, those the source kept
     * only in histories (the early creations) included. */
    struct seen_list fa = {0}, fb = {0};
    feed_read(src, &fa);
    feed_read(dst, &fb);
    check_same_events(&a.ev, &fb);
    CHECK_INT(fa.n + COPY_EARLY, fb.n);
    for (size_t i = 0; i < fa.n && i + COPY_EARLY < fb.n; i++)
        check_same_event(&fa.ev[i], &fb.ev[i + COPY_EARLY]);
    seen_free(&fa);
    seen_free(&fb);
    held_free(&a);
    held_free(&b);
}

/* A tombstone refuses its id's creation on the target; a live id too. */
static void check_tombstones_refuse(payment_store *dst)
{
    for (int n = 5; n <= COPY_PAYMENTS; n += 5) {
        struct pay p;
        pay_make(&p, n, 0);
        CHECK_INT(sync_write(dst, 0, &p.row, 0, NULL, NULL), PAYMENT_STORE_EDUPLICATE);
    }
    struct pay p;
    pay_make(&p, 1, 0);
    CHECK_INT(sync_write(dst, 0, &p.row, 0, NULL, NULL), PAYMENT_STORE_EDUPLICATE);
}

/* What the whole source adds to an empty target. */
static void check_added_all(payment_store *src, const struct payment_import_result *sum)
{
    struct held a;
    held_read(src, COPY_PAGE, &a);
    CHECK_INT(sum->payments, a.n_pay);
    CHECK_INT(sum->idem, a.n_rec);
    CHECK_INT(sum->events, a.ev.n);
    held_free(&a);
}

/* ---- the cases ------------------------------------------------------------- */

/* A whole copy page by page; run again, it adds nothing. */
static void copy_between(payment_store *src, payment_store *dst)
{
    struct payment_import_result sum;
    copy(src, dst, COPY_NO_LIMIT, &sum);
    check_added_all(src, &sum);
    check_copied(src, dst);
    copy(src, dst, COPY_NO_LIMIT, &sum);
    CHECK_INT(sum.payments, 0);
    CHECK_INT(sum.idem, 0);
    CHECK_INT(sum.events, 0);
    check_copied(src, dst);
    check_tombstones_refuse(dst);
}

static void case_copy(struct fixture *fx)
{
    populate(fx->s);
    struct extra dst;
    if (!extra_open(fixture_kind(fx), &dst))
        return;
    if (dst.s)
        copy_between(fx->s, dst.s);
    extra_close(&dst);
}

/* A copy interrupted after a few pages of each kind, then run from the
 * beginning, ends equal; the two runs add everything once between them. */
static void case_copy_resumed(struct fixture *fx)
{
    populate(fx->s);
    static const int stops[] = {2, 5, 8};
    for (size_t i = 0; i < sizeof stops / sizeof stops[0]; i++) {
        struct extra dst;
        if (!extra_open(fixture_kind(fx), &dst))
            return;
        if (dst.s) {
            struct payment_import_result first, second;
            copy(fx->s, dst.s, stops[i], &first);
            CHECK(first.payments + first.idem + first.events > 0);
            copy(fx->s, dst.s, COPY_NO_LIMIT, &second);
            struct payment_import_result sum = {first.payments + second.payments,
                                                first.idem + second.idem,
                                                first.events + second.events};
            check_added_all(fx->s, &sum);
            check_copied(fx->s, dst.s);
        }
        extra_close(&dst);
    }
}

/* An empty import adds nothing; an import of a page the target holds adds
 * nothing either, whatever else the page holds. */
static void case_import_skips(struct fixture *fx)
{
    struct payment_import empty = {0};
    struct payment_import_result out = {9, 9, 9};
    CHECK_INT(payment_store_import(fx->s, &empty, &out), PAYMENT_STORE_OK);
    CHECK(out.payments == 0 && out.idem == 0 && out.events == 0);
    populate(fx->s);
    struct held h;
    held_read(fx->s, COPY_PAGE, &h);
    struct page pg = {.h = h};
    struct payment_import_result sum = {0, 0, 0};
    CHECK_INT(page_import(fx->s, &pg, &sum), PAYMENT_STORE_OK);
    CHECK(sum.payments == 0 && sum.idem == 0 && sum.events == 0);
    held_free(&h);
}

#define SQLITE_CASE_(name)                                                                    \
    static void sqlite_##name(void) { run_on_sqlite(case_##name); }
#define PG_CASE(name)                                                                         \
    static void pg_##name(void) { run_on_pg(case_##name); }
#define MONGO_CASE(name)                                                                      \
    static void mongo_##name(void) { run_on_mongo(case_##name); }
#define ALL_CASES(name) SQLITE_CASE_(name) PG_CASE(name) MONGO_CASE(name)

ALL_CASES(copy)
ALL_CASES(copy_resumed)
ALL_CASES(import_skips)

/* A copy from a store of kind from into one of kind to. */
static void cross(enum store_kind from, enum store_kind to)
{
    if (!kind_available(from) || !kind_available(to))
        return;
    struct extra src, dst;
    if (!extra_open(from, &src))
        return;
    if (!extra_open(to, &dst)) {
        extra_close(&src);
        return;
    }
    if (src.s && dst.s) {
        fprintf(stderr, "  %s -> %s\n", kind_name(from), kind_name(to));
        populate(src.s);
        copy_between(src.s, dst.s);
    }
    extra_close(&dst);
    extra_close(&src);
}

static void cross_sqlite_pg(void) { cross(KIND_SQLITE, KIND_PG); }
static void cross_mongo_pg(void) { cross(KIND_MONGO, KIND_PG); }
static void cross_pg_sqlite(void) { cross(KIND_PG, KIND_SQLITE); }
static void cross_sqlite_mongo(void) { cross(KIND_SQLITE, KIND_MONGO); }
static void cross_mongo_sqlite(void) { cross(KIND_MONGO, KIND_SQLITE); }

TEST_MAIN(TEST(sqlite_copy), TEST(sqlite_copy_resumed), TEST(sqlite_import_skips),
          TEST(pg_copy), TEST(pg_copy_resumed), TEST(pg_import_skips), TEST(mongo_copy),
          TEST(mongo_copy_resumed), TEST(mongo_import_skips), TEST(cross_sqlite_pg),
          TEST(cross_mongo_pg), TEST(cross_pg_sqlite), TEST(cross_sqlite_mongo),
          TEST(cross_mongo_sqlite))
