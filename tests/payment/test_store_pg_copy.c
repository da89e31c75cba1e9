/* The PostgreSQL store's copy calls where the contract's cases
 * (test_store_copy.c) leave them free, on the real server
 * (PAYMENTD_TEST_PG_URI; skipped without it):
 *   - numbers: an import takes a sequence number and an event position only
 *     for a row it adds, in the page's order, the first of a row repeated
 *     in the page; a page partly held leaves no gap, and the next write
 *     after an import continues the numbers;
 *   - bytes: the page goes to the server as array literals, so text with
 *     quotes, backslashes, braces, commas or the word NULL, and idempotency
 *     bodies with any bytes (NUL included), come back as they were;
 *   - a page the server refuses (a document holding a NUL byte) writes
 *     nothing, and gives back the numbers it took. */
#include "payment/store.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "store_copy_fixture.h"
#include "store_fixture.h"
#include "store_waiter.h"
#include "test.h"

static void pay_id(char out[UUID_STR_LEN + 1], int n)
{
    snprintf(out, UUID_STR_LEN + 1, "00000000-0000-4000-8000-%012d", n);
}

/* Payment n as a page holds it, its document doc (NULL: a tombstone). */
static void pay_make(struct payment_export *p, int n, const char *doc)
{
    memset(p, 0, sizeof *p);
    pay_id(p->row.id, n);
    snprintf(p->row.organisation_id, sizeof p->row.organisation_id,
             "0a0a0a0a-0000-4000-8000-000000000001");
    p->row.version = doc ? 0 : 1;
    p->row.created_ms = p->row.modified_ms = 1767225600000LL + n;
    p->deleted = doc == NULL;
    if (doc) {
        p->row.currency = "GBP";
        p->row.doc = doc;
        p->row.doc_len = strlen(doc);
    }
}

/* Payment n's event of version v, its document doc. */
static void ev_make(struct payment_event *ev, int n, int64_t v, const char *doc)
{
    memset(ev, 0, sizeof *ev);
    snprintf(ev->id, sizeof ev->id, "01900000-0000-7000-8000-%06d%06d", n, (int)v);
    ev->type = v == 0 ? PAYMENT_EVENT_CREATED : PAYMENT_EVENT_DELETED;
    snprintf(ev->organisation_id, sizeof ev->organisation_id,
             "0a0a0a0a-0000-4000-8000-000000000001");
    pay_id(ev->payment_id, n);
    ev->version = v;
    ev->occurred_ms = 1767225600000LL + n;
    ev->doc = doc;
    ev->doc_len = strlen(doc);
}

static struct payment_import_result import(payment_store *s, const struct payment_export *p,
                                           size_t np, const struct payment_idem_export *r,
                                           size_t nr, const struct payment_event *e, size_t ne,
                                           int want)
{
    struct payment_import im = {p, np, r, nr, e, ne};
    struct payment_import_result out = {0, 0, 0};
    CHECK_INT(payment_store_import(s, &im, &out), want);
    return out;
}

/* The payments s holds have sequence numbers 1..n, their ids payments
 * ids[0..n); its events positions 1..m, their (payment, version) evs. */
static void check_numbers(payment_store *s, const int *ids, size_t n, const int (*evs)[2],
                          size_t m)
{
    struct held h;
    held_read(s, 3, &h);
    CHECK_INT(h.n_pay, n);
    for (size_t i = 0; i < h.n_pay && i < n; i++) {
        char id[UUID_STR_LEN + 1];
        pay_id(id, ids[i]);
        CHECK_INT(h.pay[i].e.seq, i + 1);
        CHECK_STR(h.pay[i].e.row.id, id);
    }
    CHECK_INT(h.ev.n, m);
    for (size_t i = 0; i < h.ev.n && i < m; i++) {
        char id[UUID_STR_LEN + 1];
        pay_id(id, evs[i][0]);
        CHECK_INT(h.ev.ev[i].pos, i + 1);
        CHECK_STR(h.ev.ev[i].pid, id);
        CHECK_INT(h.ev.ev[i].version, evs[i][1]);
    }
    held_free(&h);
}

/* ---- numbers -------------------------------------------------------------- */

static void case_numbers(struct fixture *fx)
{
    payment_store *s = fx->s;
    struct payment_export p[4];
    struct payment_event e[4];
    pay_make(&p[0], 1, "{\"n\":1}");
    pay_make(&p[1], 2, NULL);
    ev_make(&e[0], 1, 0, "{\"n\":1}");
    ev_make(&e[1], 2, 0, "{\"n\":2}");
    ev_make(&e[2], 2, 1, "{\"n\":2}");
    struct payment_import_result out = import(s, p, 2, NULL, 0, e, 3, PAYMENT_STORE_OK);
    CHECK(out.payments == 2 && out.idem == 0 && out.events == 3);

    /* Held rows and repeats between new ones: only the new ones numbered. */
    pay_make(&p[0], 3, "{\"n\":3,\"first\":1}");
    pay_make(&p[1], 1, "{\"n\":1,\"again\":1}");
    pay_make(&p[2], 3, "{\"n\":3,\"repeat\":1}");
    pay_make(&p[3], 4, "{\"n\":4}");
    ev_make(&e[0], 1, 0, "{\"again\":1}");
    ev_make(&e[1], 3, 0, "{\"n\":3,\"first\":1}");
    ev_make(&e[2], 3, 0, "{\"repeat\":1}");
    ev_make(&e[3], 4, 0, "{\"n\":4}");
    out = import(s, p, 4, NULL, 0, e, 4, PAYMENT_STORE_OK);
    CHECK(out.payments == 2 && out.events == 2);
    static const int ids[] = {1, 2, 3, 4};
    static const int evs[][2] = {{1, 0}, {2, 0}, {2, 1}, {3, 0}, {4, 0}};
    check_numbers(s, ids, 4, evs, 5);
    struct buf doc = BUF_INIT;
    int64_t v = -1;
    CHECK_INT(payment_store_get(s, p[0].row.id, &doc, &v), PAYMENT_STORE_OK);
    CHECK(doc.data && strcmp(doc.data, "{\"n\":3,\"first\":1}") == 0); /* the first of the two */
    buf_free(&doc);

    /* The next write continues both counters. */
    struct payment_export next;
    pay_make(&next, 5, "{\"n\":5}");
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_create(s, &next.row, NULL, NULL, waiter_done, &w);
    waiter_wait(&w);
    CHECK_INT(w.err, PAYMENT_STORE_OK);
    CHECK_INT(w.seq, 5);
    static const int ids5[] = {1, 2, 3, 4, 5};
    static const int evs5[][2] = {{1, 0}, {2, 0}, {2, 1}, {3, 0}, {4, 0}, {5, 0}};
    check_numbers(s, ids5, 5, evs5, 6);
}

/* ---- bytes ---------------------------------------------------------------- */

static const char DOC[] = "{\"a\":\"q\\\"u\\\\o\",\"b\":\"{x,y}\",\"c\":\"caf\xc3\xa9\",\"d\":null}";
static const char BODY[] = {'{', 0, '"', '\\', ',', '}', (char)0xff, 0};

static void case_bytes(struct fixture *fx)
{
    payment_store *s = fx->s;
    struct payment_export p;
    pay_make(&p, 1, DOC);
    p.row.reference = "a\"b\\c{d},NULL";
    p.row.end_to_end_reference = "NULL";
    p.row.payment_scheme = "";
    struct payment_idem_export r[2] = {
        {.scope = "", .key = "k\"\\{,}", .fingerprint = "f", .status = 201, .etag = "\"3\"",
         .body = BODY, .body_len = sizeof BODY, .created_ms = 7},
        {.scope = "NULL", .key = "NULL", .fingerprint = "g", .status = 204, .created_ms = 8},
    };
    struct payment_event e;
    ev_make(&e, 1, 0, DOC);
    e.request_id = "r\"\\";
    e.changes = "[\"/a\\\"b\"]";
    struct payment_import_result out = import(s, &p, 1, r, 2, &e, 1, PAYMENT_STORE_OK);
    CHECK(out.payments == 1 && out.idem == 2 && out.events == 1);

    struct held h;
    held_read(s, 3, &h);
    CHECK_INT(h.n_pay, 1);
    if (h.n_pay == 1) {
        CHECK_STR(h.pay[0].doc, DOC);
        CHECK_STR(h.pay[0].reference, "a\"b\\c{d},NULL");
        CHECK_STR(h.pay[0].e2e, "NULL");
        CHECK_STR(h.pay[0].scheme, "");
        CHECK(h.pay[0].type == NULL);
    }
    CHECK_INT(h.n_rec, 2);
    if (h.n_rec == 2) {
        CHECK_STR(h.rec[0].scope, "");
        CHECK_STR(h.rec[0].key, "k\"\\{,}");
        CHECK(same_bytes(h.rec[0].body, h.rec[0].r.body_len, BODY, sizeof BODY));
        CHECK_STR(h.rec[0].etag, "\"3\"");
        CHECK(h.rec[0].location == NULL);
        CHECK_STR(h.rec[1].key, "NULL");
        CHECK(h.rec[1].body == NULL && h.rec[1].etag == NULL);
    }
    CHECK_INT(h.ev.n, 1);
    if (h.ev.n == 1) {
        CHECK_STR(h.ev.ev[0].doc, DOC);
        CHECK_STR(h.ev.ev[0].request_id, "r\"\\");
        CHECK_STR(h.ev.ev[0].changes, "[\"/a\\\"b\"]");
        CHECK_STR(h.ev.ev[0].api_key_id, NULL_TEXT);
    }
    held_free(&h);
}

/* ---- a refused page -------------------------------------------------------- */

static void case_refused_page(struct fixture *fx)
{
    payment_store *s = fx->s;
    struct payment_export p[2];
    struct payment_event e[2];
    pay_make(&p[0], 1, "{\"n\":1}");
    pay_make(&p[1], 2, "{\"n\":2}");
    p[1].row.doc_len = strlen(p[1].row.doc) + 1; /* its NUL terminator too */
    ev_make(&e[0], 1, 0, "{\"n\":1}");
    ev_make(&e[1], 2, 0, "{\"n\":2}");
    import(s, p, 2, NULL, 0, e, 2, PAYMENT_STORE_EINTERNAL);
    check_numbers(s, NULL, 0, NULL, 0);

    /* The good rows alone: the numbers the refused page took are given again. */
    struct payment_import_result out = import(s, p, 1, NULL, 0, e, 1, PAYMENT_STORE_OK);
    CHECK(out.payments == 1 && out.events == 1);
    static const int ids[] = {1};
    static const int evs[][2] = {{1, 0}};
    check_numbers(s, ids, 1, evs, 1);
}

#define PG_COPY_CASE(name)                                                                    \
    static void pg_##name(void) { run_on_pg(case_##name); }

PG_COPY_CASE(numbers)
PG_COPY_CASE(bytes)
PG_COPY_CASE(refused_page)

TEST_MAIN(TEST(pg_numbers), TEST(pg_bytes), TEST(pg_refused_page))
