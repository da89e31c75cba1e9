/* The store contract (store.h), written against any backend: each case takes
 * an opened, empty store; the runners (store_fixture.h) open one per case,
 * in a fresh temporary folder (SQLite), a fresh database that is dropped
 * afterwards (MongoDB, when PAYMENTD_TEST_MONGO_URI names a server such as
 * the test double of tests/mongo/double.py; without it the MongoDB cases
 * that need a server are reported as skipped), or a fresh schema that is
 * dropped afterwards (PostgreSQL, when PAYMENTD_TEST_PG_URI names a
 * database such as tests/pg/pg.sh's; skipped without it). */
#include "payment/store.h"

#include <ftw.h>
#include <mongoc/mongoc.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "payment/store_impl.h"
#include "store_fixture.h"
#include "store_waiter.h"
#include "test.h"

/* ---- synchronous wrappers: done runs on the writer thread --------------- */

static int sync_create_idem(payment_store *s, const struct payment_row *row,
                            const struct payment_idem *idem, int64_t *seq)
{
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_create(s, row, idem, NULL, waiter_done, &w);
    waiter_wait(&w);
    CHECK_INT(w.cur, -1);
    if (seq)
        *seq = w.seq;
    if (w.err != PAYMENT_STORE_OK)
        CHECK_INT(w.seq, 0);
    return w.err;
}

static int sync_create(payment_store *s, const struct payment_row *row, int64_t *seq)
{
    return sync_create_idem(s, row, NULL, seq);
}

static int sync_update_idem(payment_store *s, const struct payment_row *row, int64_t expected,
                            const struct payment_idem *idem, int64_t *cur)
{
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_update(s, row, expected, idem, NULL, waiter_done, &w);
    waiter_wait(&w);
    CHECK_INT(w.seq, 0);
    *cur = w.cur;
    return w.err;
}

static int sync_update(payment_store *s, const struct payment_row *row, int64_t expected,
                       int64_t *cur)
{
    return sync_update_idem(s, row, expected, NULL, cur);
}

static int sync_delete_idem(payment_store *s, const char *id, int64_t expected,
                            const struct payment_idem *idem, int64_t *cur)
{
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_delete(s, id, expected, idem, NULL, waiter_done, &w);
    waiter_wait(&w);
    CHECK_INT(w.seq, 0);
    *cur = w.cur;
    return w.err;
}

static int sync_delete(payment_store *s, const char *id, int64_t expected, int64_t *cur)
{
    return sync_delete_idem(s, id, expected, NULL, cur);
}

/* ---- payments ----------------------------------------------------------- */

/* A row and the bytes it borrows. */
struct pay {
    struct payment_row row;
    char currency[8];
    char reference[32];
    char doc[256];
};

static void pay_id(char out[UUID_STR_LEN + 1], int n)
{
    snprintf(out, UUID_STR_LEN + 1, "00000000-0000-4000-8000-%012d", n);
}

static void org_id(char out[UUID_STR_LEN + 1], int n)
{
    snprintf(out, UUID_STR_LEN + 1, "0a0a0a0a-0000-4000-8000-%012d", n);
}

/* Payment n of organisation org; the document starts {"id":"<id>" so that
 * listed rows can be told apart, and holds bytes a text layer could mangle. */
static void pay_init(struct pay *p, int n, int org, const char *currency, const char *amount,
                     const char *date, int64_t created_ms)
{
    memset(p, 0, sizeof *p);
    pay_id(p->row.id, n);
    org_id(p->row.organisation_id, org);
    p->row.created_ms = created_ms;
    p->row.modified_ms = created_ms;
    snprintf(p->currency, sizeof p->currency, "%s", currency);
    p->row.currency = p->currency;
    p->row.payment_scheme = n % 2 ? "FPS" : "BACS";
    p->row.payment_type = "Credit";
    snprintf(p->reference, sizeof p->reference, "ref-%d", n);
    p->row.reference = p->reference;
    p->row.end_to_end_reference = NULL;
    snprintf(p->row.processing_date, sizeof p->row.processing_date, "%s", date);
    struct decimal d;
    CHECK_INT(decimal_parse(amount, strlen(amount), &d), 0);
    decimal_sort_key(&d, p->row.amount_key);
    int len = snprintf(p->doc, sizeof p->doc,
                       "{\"id\":\"%s\",\"v\":%lld,\"amount\":\"%s\","
                       "\"note\":\"caf\xc3\xa9 \\\"q\\\"\"}",
                       p->row.id, (long long)p->row.version, amount);
    p->row.doc = p->doc;
    p->row.doc_len = (size_t)len;
}

/* Rewrites the document for version v. */
static void pay_set_version(struct pay *p, int64_t v, const char *tag)
{
    p->row.version = v;
    int len = snprintf(p->doc, sizeof p->doc, "{\"id\":\"%s\",\"v\":%lld,\"tag\":\"%s\"}",
                       p->row.id, (long long)v, tag);
    p->row.doc = p->doc;
    p->row.doc_len = (size_t)len;
}

static void check_doc(payment_store *s, const struct pay *p, int64_t version)
{
    struct buf b = BUF_INIT;
    int64_t v = -5;
    CHECK_INT(payment_store_get(s, p->row.id, &b, &v), PAYMENT_STORE_OK);
    CHECK_INT(v, version);
    CHECK_INT(b.len, p->row.doc_len);
    CHECK(b.data && memcmp(b.data, p->row.doc, p->row.doc_len) == 0);
    buf_free(&b);
}

static void check_gone(payment_store *s, const char *id)
{
    struct buf b = BUF_INIT;
    int64_t v = -5;
    CHECK_INT(payment_store_get(s, id, &b, &v), PAYMENT_STORE_ENOTFOUND);
    CHECK_INT(b.len, 0);
    CHECK_INT(v, -5);
    buf_free(&b);
}

/* ---- listing ------------------------------------------------------------ */

#define LISTED_MAX 2000

struct listed {
    int n;
    int stop_at;                        /* return 7 on this row (1-based), 0 never */
    int64_t seq[LISTED_MAX];
    int num[LISTED_MAX];                /* payment numbers, from the ids */
};

static int listed_row(void *arg, const char *doc, size_t len, int64_t seq)
{
    struct listed *l = arg;
    CHECK(len > 7 + UUID_STR_LEN && strncmp(doc, "{\"id\":\"", 7) == 0);
    CHECK_INT(doc[len], '\0');
    if (l->n == LISTED_MAX)
        return 9;
    l->seq[l->n] = seq;
    l->num[l->n] = atoi(doc + 7 + 24);
    l->n++;
    return l->n == l->stop_at ? 7 : 0;
}

static void query_init(struct payment_query *q, uint32_t page_size)
{
    memset(q, 0, sizeof *q);
    q->created_from_ms = INT64_MIN;
    q->created_to_ms = INT64_MAX;
    q->page_size = page_size;
    q->mode = PAYMENT_PAGE_FIRST;
}

/* Lists q into l (emptied first) and returns the store's answer. */
static int list(payment_store *s, const struct payment_query *q, struct listed *l, int *more)
{
    l->n = 0;
    *more = -1;
    return payment_store_list(s, q, listed_row, l, more);
}

/* Checks that l holds exactly the payment numbers want, in that order, and
 * that sequence numbers increase. */
static void check_listed(const struct listed *l, const int *want, int nwant, int line)
{
    int ok = l->n == nwant;
    for (int i = 0; ok && i < nwant; i++)
        ok = l->num[i] == want[i] && (i == 0 || l->seq[i] > l->seq[i - 1]);
    if (!ok) {
        fprintf(stderr, "  line %d: listed", line);
        for (int i = 0; i < l->n; i++)
            fprintf(stderr, " %d", l->num[i]);
        fprintf(stderr, "; expected");
        for (int i = 0; i < nwant; i++)
            fprintf(stderr, " %d", want[i]);
        fprintf(stderr, "\n");
    }
    CHECK(ok);
}

#define CHECK_LISTED(l, ...)                                                               \
    do {                                                                                   \
        static const int want_[] = {__VA_ARGS__};                                          \
        check_listed((l), want_, (int)(sizeof want_ / sizeof want_[0]), __LINE__);         \
    } while (0)

/* ---- cases -------------------------------------------------------------- */

static void case_ping(struct fixture *fx)
{
    CHECK_INT(payment_store_ping(fx->s), PAYMENT_STORE_OK);
}

static void case_create_get(struct fixture *fx)
{
    struct pay a, b;
    pay_init(&a, 1, 1, "GBP", "10.50", "2026-01-02", 1000);
    pay_init(&b, 2, 1, "GBP", "3", "", 2000);
    int64_t seq_a = 0, seq_b = 0;
    CHECK_INT(sync_create(fx->s, &a.row, &seq_a), PAYMENT_STORE_OK);
    CHECK_INT(sync_create(fx->s, &b.row, &seq_b), PAYMENT_STORE_OK);
    CHECK(seq_a > 0);
    CHECK(seq_b > seq_a);
    check_doc(fx->s, &a, 0);
    check_doc(fx->s, &b, 0);
    struct buf doc = BUF_INIT;
    int64_t v = -5, created = -5;
    CHECK_INT(payment_store_get_meta(fx->s, a.row.id, &doc, &v, &created), PAYMENT_STORE_OK);
    CHECK_INT(v, 0);
    CHECK_INT(created, 1000);
    CHECK_INT(doc.len, a.row.doc_len);
    buf_free(&doc);
    check_gone(fx->s, "00000000-0000-4000-8000-000000000999");
    check_gone(fx->s, "");
    CHECK_INT(payment_store_get_meta(fx->s, "nope", &doc, &v, &created), PAYMENT_STORE_ENOTFOUND);
    buf_free(&doc);
}

static void case_duplicate(struct fixture *fx)
{
    struct pay a, again;
    pay_init(&a, 1, 1, "GBP", "1", "", 1);
    pay_init(&again, 1, 2, "EUR", "2", "", 2);
    CHECK_INT(sync_create(fx->s, &a.row, NULL), PAYMENT_STORE_OK);
    CHECK_INT(sync_create(fx->s, &again.row, NULL), PAYMENT_STORE_EDUPLICATE);
    check_doc(fx->s, &a, 0);
}

static void case_update(struct fixture *fx)
{
    struct pay p;
    pay_init(&p, 1, 1, "GBP", "1", "", 1000);
    CHECK_INT(sync_create(fx->s, &p.row, NULL), PAYMENT_STORE_OK);
    int64_t cur = -5;

    pay_set_version(&p, 1, "first");
    p.row.created_ms = 555; /* the store keeps the creation time */
    p.row.modified_ms = 2000;
    CHECK_INT(sync_update(fx->s, &p.row, 0, &cur), PAYMENT_STORE_OK);
    CHECK_INT(cur, -1);
    check_doc(fx->s, &p, 1);
    struct buf doc = BUF_INIT;
    int64_t v, created;
    CHECK_INT(payment_store_get_meta(fx->s, p.row.id, &doc, &v, &created), PAYMENT_STORE_OK);
    CHECK_INT(created, 1000);
    buf_free(&doc);

    struct pay stale = p;
    pay_set_version(&stale, 1, "stale");
    CHECK_INT(sync_update(fx->s, &stale.row, 0, &cur), PAYMENT_STORE_ECONFLICT);
    CHECK_INT(cur, 1);
    pay_set_version(&stale, 8, "future");
    CHECK_INT(sync_update(fx->s, &stale.row, 7, &cur), PAYMENT_STORE_ECONFLICT);
    CHECK_INT(cur, 1);
    check_doc(fx->s, &p, 1);

    pay_set_version(&p, 2, "second");
    CHECK_INT(sync_update(fx->s, &p.row, 1, &cur), PAYMENT_STORE_OK);
    check_doc(fx->s, &p, 2);

    struct pay unknown;
    pay_init(&unknown, 2, 1, "GBP", "1", "", 1);
    pay_set_version(&unknown, 1, "x");
    CHECK_INT(sync_update(fx->s, &unknown.row, 0, &cur), PAYMENT_STORE_ENOTFOUND);
    CHECK_INT(cur, -1);
    check_gone(fx->s, unknown.row.id);
}

static void case_delete(struct fixture *fx)
{
    struct pay a, b;
    pay_init(&a, 1, 1, "GBP", "1", "", 1);
    pay_init(&b, 2, 1, "GBP", "1", "", 1);
    CHECK_INT(sync_create(fx->s, &a.row, NULL), PAYMENT_STORE_OK);
    CHECK_INT(sync_create(fx->s, &b.row, NULL), PAYMENT_STORE_OK);
    int64_t cur = -5;

    /* Unconditional. */
    CHECK_INT(sync_delete(fx->s, a.row.id, -1, &cur), PAYMENT_STORE_OK);
    CHECK_INT(cur, -1);

    /* Conditional: a mismatch changes nothing, a match deletes. */
    pay_set_version(&b, 1, "b1");
    CHECK_INT(sync_update(fx->s, &b.row, 0, &cur), PAYMENT_STORE_OK);
    CHECK_INT(sync_delete(fx->s, b.row.id, 0, &cur), PAYMENT_STORE_ECONFLICT);
    CHECK_INT(cur, 1);
    check_doc(fx->s, &b, 1);
    CHECK_INT(sync_delete(fx->s, b.row.id, 1, &cur), PAYMENT_STORE_OK);

    /* Tombstones: gone for reads and writes, and never created again. */
    const struct pay *dead[] = {&a, &b};
    for (int i = 0; i < 2; i++) {
        struct pay p = *dead[i];
        p.row.doc = p.doc;
        check_gone(fx->s, p.row.id);
        pay_set_version(&p, 2, "after");
        CHECK_INT(sync_update(fx->s, &p.row, 1, &cur), PAYMENT_STORE_ENOTFOUND);
        CHECK_INT(cur, -1);
        CHECK_INT(sync_delete(fx->s, p.row.id, -1, &cur), PAYMENT_STORE_ENOTFOUND);
        CHECK_INT(sync_delete(fx->s, p.row.id, 5, &cur), PAYMENT_STORE_ENOTFOUND);
        CHECK_INT(cur, -1);
        struct pay reborn;
        pay_init(&reborn, i + 1, 3, "EUR", "2", "", 3);
        CHECK_INT(sync_create(fx->s, &reborn.row, NULL), PAYMENT_STORE_EDUPLICATE);
        check_gone(fx->s, p.row.id);
    }
    CHECK_INT(sync_delete(fx->s, "00000000-0000-4000-8000-000000000999", -1, &cur),
              PAYMENT_STORE_ENOTFOUND);
    CHECK_INT(sync_delete(fx->s, "an id far longer than any uuid could ever be", -1, &cur),
              PAYMENT_STORE_ENOTFOUND);
}

static void case_list_paging(struct fixture *fx)
{
    struct pay p;
    /* Created in an order unlike their numbers: the list follows seq. */
    static const int order[] = {5, 3, 9, 1, 7, 2, 8, 4, 6, 10, 11, 12};
    for (int i = 0; i < 12; i++) {
        pay_init(&p, order[i], 1, "GBP", "1", "", 1000 + i);
        CHECK_INT(sync_create(fx->s, &p.row, NULL), PAYMENT_STORE_OK);
    }
    struct listed *l = calloc(1, sizeof *l);
    struct payment_query q;
    int more;

    query_init(&q, 100);
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 5, 3, 9, 1, 7, 2, 8, 4, 6, 10, 11, 12);
    CHECK_INT(more, 0);

    query_init(&q, 5);
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 5, 3, 9, 1, 7);
    CHECK_INT(more, 1);
    int64_t fifth = l->seq[4];

    q.mode = PAYMENT_PAGE_OFFSET;
    q.page_number = 1;
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 2, 8, 4, 6, 10);
    CHECK_INT(more, 1);
    q.page_number = 2;
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 11, 12);
    CHECK_INT(more, 0);
    q.page_number = 3;
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_INT(l->n, 0);
    CHECK_INT(more, 0);

    /* Exactly a page left: no more. */
    query_init(&q, 6);
    q.mode = PAYMENT_PAGE_OFFSET;
    q.page_number = 1;
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 8, 4, 6, 10, 11, 12);
    CHECK_INT(more, 0);

    query_init(&q, 5);
    q.mode = PAYMENT_PAGE_CURSOR;
    q.after_seq = fifth;
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 2, 8, 4, 6, 10);
    CHECK_INT(more, 1);
    q.after_seq = l->seq[4];
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 11, 12);
    CHECK_INT(more, 0);
    q.after_seq = l->seq[1];
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_INT(l->n, 0);
    CHECK_INT(more, 0);
    q.after_seq = 0;
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 5, 3, 9, 1, 7);

    /* A cursor stays stable while others insert: new rows come after it. */
    q.after_seq = fifth;
    q.page_size = 100;
    pay_init(&p, 13, 1, "GBP", "1", "", 5000);
    CHECK_INT(sync_create(fx->s, &p.row, NULL), PAYMENT_STORE_OK);
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 2, 8, 4, 6, 10, 11, 12, 13);

    /* The callback's non-zero answer stops the list and is returned. */
    query_init(&q, 100);
    l->stop_at = 3;
    CHECK_INT(list(fx->s, &q, l, &more), 7);
    CHECK_INT(l->n, 3);
    free(l);
}

static void case_list_filters(struct fixture *fx)
{
    /* n, org, currency, amount, processing date, created ms */
    static const struct {
        int n, org;
        const char *currency, *amount, *date;
        int64_t created;
    } rows[] = {
        {1, 1, "GBP", "5", "2026-01-01", 1000},
        {2, 2, "EUR", "20", "2026-01-15", 2000},
        {3, 1, "USD", "100", "2026-01-31", 3000},
        {4, 3, "GBP", "1000.50", "2026-02-01", 4000},
        {5, 2, "GBP", "99.99", "", 5000},
        {6, 1, "EUR", "100.00", "2025-12-31", 6000},
        {7, 3, "JPY", "20", "2026-01-15", 7000},
    };
    struct pay p;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        pay_init(&p, rows[i].n, rows[i].org, rows[i].currency, rows[i].amount, rows[i].date,
                 rows[i].created);
        CHECK_INT(sync_create(fx->s, &p.row, NULL), PAYMENT_STORE_OK);
    }
    /* A deleted payment matching every filter below is never listed. */
    pay_init(&p, 8, 1, "GBP", "50", "2026-01-15", 2500);
    CHECK_INT(sync_create(fx->s, &p.row, NULL), PAYMENT_STORE_OK);
    int64_t cur;
    CHECK_INT(sync_delete(fx->s, p.row.id, -1, &cur), PAYMENT_STORE_OK);

    struct listed *l = calloc(1, sizeof *l);
    struct payment_query q;
    int more;
    char o1[UUID_STR_LEN + 1], o3[UUID_STR_LEN + 1], o9[UUID_STR_LEN + 1];
    org_id(o1, 1);
    org_id(o3, 3);
    org_id(o9, 9);
    char gbp[] = "GBP", eur[] = "EUR", fps[] = "FPS", credit[] = "Credit", debit[] = "Debit";
    char ref3[] = "ref-3", ref8[] = "ref-8", ref7[] = "ref-7";

    query_init(&q, 100);
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 1, 2, 3, 4, 5, 6, 7);

    query_init(&q, 100);
    q.organisation_id.count = 1;
    q.organisation_id.values[0] = o1;
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 1, 3, 6);
    q.organisation_id.count = 3;
    q.organisation_id.values[1] = o9;
    q.organisation_id.values[2] = o3;
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 1, 3, 4, 6, 7);
    q.page_size = 2; /* paging across an index on (organisation, seq) */
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 1, 3);
    CHECK_INT(more, 1);
    q.mode = PAYMENT_PAGE_CURSOR;
    q.after_seq = l->seq[1];
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 4, 6);
    CHECK_INT(more, 1);

    query_init(&q, 100);
    q.currency.count = 2;
    q.currency.values[0] = gbp;
    q.currency.values[1] = eur;
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 1, 2, 4, 5, 6);
    q.organisation_id.count = 1; /* filters combine */
    q.organisation_id.values[0] = o1;
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 1, 6);

    query_init(&q, 100);
    q.payment_scheme.count = 1; /* odd numbers are FPS */
    q.payment_scheme.values[0] = fps;
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 1, 3, 5, 7);
    q.payment_type.count = 1;
    q.payment_type.values[0] = debit;
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_INT(l->n, 0);
    q.payment_type.values[0] = credit;
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 1, 3, 5, 7);

    query_init(&q, 100);
    q.reference.count = 3;
    q.reference.values[0] = ref8;
    q.reference.values[1] = ref7;
    q.reference.values[2] = ref3;
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 3, 7);

    /* Amounts compare as decimals: "100" < "20" as strings. */
    struct decimal d;
    query_init(&q, 100);
    CHECK_INT(decimal_parse("20", 2, &d), 0);
    decimal_sort_key(&d, q.amount_from);
    CHECK_INT(decimal_parse("100", 3, &d), 0);
    decimal_sort_key(&d, q.amount_to);
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 2, 3, 5, 6, 7);
    q.amount_to[0] = '\0';
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 2, 3, 4, 5, 6, 7);
    q.amount_from[0] = '\0';
    CHECK_INT(decimal_parse("99.99", 5, &d), 0);
    decimal_sort_key(&d, q.amount_to);
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 1, 2, 5, 7);

    /* Processing dates: inclusive bounds; payments without one never match. */
    query_init(&q, 100);
    snprintf(q.processing_date_from, sizeof q.processing_date_from, "2026-01-15");
    snprintf(q.processing_date_to, sizeof q.processing_date_to, "2026-01-31");
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 2, 3, 7);
    q.processing_date_to[0] = '\0';
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 2, 3, 4, 7);
    q.processing_date_from[0] = '\0';
    snprintf(q.processing_date_to, sizeof q.processing_date_to, "2026-01-01");
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 1, 6);

    /* Created: from inclusive, to exclusive. */
    query_init(&q, 100);
    q.created_from_ms = 2000;
    q.created_to_ms = 5000;
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 2, 3, 4);
    q.created_from_ms = INT64_MIN;
    q.created_to_ms = 2001;
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 1, 2);
    q.created_from_ms = 6000;
    q.created_to_ms = INT64_MAX;
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 6, 7);

    /* Offset paging counts filtered rows only. */
    query_init(&q, 2);
    q.currency.count = 1;
    q.currency.values[0] = gbp;
    q.mode = PAYMENT_PAGE_OFFSET;
    q.page_number = 1;
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 5);
    CHECK_INT(more, 0);
    free(l);
}

/* An any-of filter's values are matched as they are, whatever they hold:
 * quotes, backslashes, commas, braces, the word NULL, spaces, non-ASCII
 * (PostgreSQL sends a set of several values as one array literal). */
static void case_list_set_text(struct fixture *fx)
{
    static const char *const refs[] = {"q\"uote", "back\\slash", "com,ma",  "{brace}",
                                       "NULL",    "sp ace",      "caf\xc3\xa9", "plain"};
    const int nrefs = (int)(sizeof refs / sizeof refs[0]);
    struct pay p;
    for (int i = 0; i < nrefs; i++) {
        pay_init(&p, i + 1, 1, "GBP", "1", "", 1000 + i);
        snprintf(p.reference, sizeof p.reference, "%s", refs[i]);
        CHECK_INT(sync_create(fx->s, &p.row, NULL), PAYMENT_STORE_OK);
    }
    char v[8][16];
    for (int i = 0; i < nrefs; i++)
        snprintf(v[i], sizeof v[i], "%s", refs[i]);
    char com[] = "com", ma[] = "ma", brace[] = "brace", none[] = "nothing";
    struct listed *l = calloc(1, sizeof *l);
    struct payment_query q;
    int more;
    query_init(&q, 100);
    q.reference.count = (size_t)nrefs - 1;
    for (int i = 0; i < nrefs - 1; i++)
        q.reference.values[i] = v[i];
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 1, 2, 3, 4, 5, 6, 7);
    q.reference.count = 2; /* q"uote, back\slash */
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 1, 2);
    q.reference.values[0] = v[3];
    q.reference.values[1] = brace;
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 4);
    q.reference.values[0] = none;
    q.reference.values[1] = v[4]; /* the text NULL, not SQL's */
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 5);
    q.reference.values[0] = com;
    q.reference.values[1] = ma;
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_INT(l->n, 0);
    q.reference.count = 1;
    q.reference.values[0] = v[2];
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 3);
    q.reference.count = 2;
    q.reference.values[1] = v[6];
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 3, 7);
    free(l);
}

static void case_reopen(struct fixture *fx)
{
    struct pay a, b, c;
    pay_init(&a, 1, 1, "GBP", "1", "2026-03-04", 10);
    pay_init(&b, 2, 1, "GBP", "2", "", 20);
    pay_init(&c, 3, 2, "EUR", "3", "", 30);
    int64_t seq_c = 0, cur;
    CHECK_INT(sync_create(fx->s, &a.row, NULL), PAYMENT_STORE_OK);
    CHECK_INT(sync_create(fx->s, &b.row, NULL), PAYMENT_STORE_OK);
    CHECK_INT(sync_create(fx->s, &c.row, &seq_c), PAYMENT_STORE_OK);
    pay_set_version(&b, 1, "kept");
    CHECK_INT(sync_update(fx->s, &b.row, 0, &cur), PAYMENT_STORE_OK);
    CHECK_INT(sync_delete(fx->s, c.row.id, -1, &cur), PAYMENT_STORE_OK);
    /* Writes still queued at close are completed by it. */
    struct pay d;
    pay_init(&d, 4, 1, "GBP", "4", "", 40);
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_create(fx->s, &d.row, NULL, NULL, waiter_done, &w);
    payment_store_close(fx->s);
    fx->s = NULL;
    CHECK_INT(w.pending, 0);
    CHECK_INT(w.err, PAYMENT_STORE_OK);
    waiter_wait(&w);

    for (int round = 0; round < 2; round++) {
        char err[256] = "";
        CHECK_INT(payment_store_open(fx->uri, fx->flags, &fx->s, err, sizeof err),
              PAYMENT_STORE_OK);
        if (!fx->s)
            return;
        check_doc(fx->s, &a, 0);
        check_doc(fx->s, &b, 1);
        check_doc(fx->s, &d, 0);
        check_gone(fx->s, c.row.id);
        CHECK_INT(sync_create(fx->s, &c.row, NULL), PAYMENT_STORE_EDUPLICATE);
        struct buf doc = BUF_INIT;
        int64_t v, created = 0;
        CHECK_INT(payment_store_get_meta(fx->s, a.row.id, &doc, &v, &created), PAYMENT_STORE_OK);
        CHECK_INT(created, 10);
        buf_free(&doc);
        struct listed *l = calloc(1, sizeof *l);
        struct payment_query q;
        int more;
        query_init(&q, 100);
        CHECK_INT(list(fx->s, &q, l, &more), 0);
        if (round == 0) {
            CHECK_LISTED(l, 1, 2, 4);
            /* Sequence numbers are never reused, not even a tombstone's. */
            struct pay e;
            pay_init(&e, 5, 1, "GBP", "5", "", 50);
            int64_t seq_e = 0;
            CHECK_INT(sync_create(fx->s, &e.row, &seq_e), PAYMENT_STORE_OK);
            CHECK(seq_e > seq_c);
        } else {
            CHECK_LISTED(l, 1, 2, 4, 5);
        }
        free(l);
        if (round == 0) {
            payment_store_close(fx->s);
            fx->s = NULL;
        }
    }
}

/* A done callback may call back into the store: it runs without locks. */
struct chain {
    payment_store *s;
    struct pay second;
    struct waiter w;
    int first_err;
    int get_err;
};

static void chain_first_done(void *arg, int err, int64_t cur, int64_t seq)
{
    (void)cur, (void)seq;
    struct chain *c = arg;
    c->first_err = err;
    struct buf b = BUF_INIT;
    int64_t v;
    c->get_err = payment_store_get(c->s, "00000000-0000-4000-8000-000000000001", &b, &v);
    buf_free(&b);
    payment_store_create(c->s, &c->second.row, NULL, NULL, waiter_done, &c->w);
}

static void case_done_reenters(struct fixture *fx)
{
    struct chain *c = calloc(1, sizeof *c);
    struct pay first;
    c->s = fx->s;
    pay_init(&first, 1, 1, "GBP", "1", "", 1);
    pay_init(&c->second, 2, 1, "GBP", "2", "", 2);
    waiter_init(&c->w, 1);
    payment_store_create(fx->s, &first.row, NULL, NULL, chain_first_done, c);
    waiter_wait(&c->w);
    CHECK_INT(c->first_err, PAYMENT_STORE_OK);
    CHECK_INT(c->get_err, PAYMENT_STORE_OK); /* reported only once committed */
    CHECK_INT(c->w.err, PAYMENT_STORE_OK);
    check_doc(fx->s, &c->second, 0);
    free(c);
}

/* 8 threads each submit 200 creates at once, then wait for them all. */
#define CC_THREADS 8
#define CC_EACH 200

struct creator {
    payment_store *s;
    int base;            /* first payment number */
    struct pay *pays;    /* CC_EACH rows, borrowed by the store until done */
    struct waiter w;
    int ok;              /* creates reported OK, under w.mu */
};

static void creator_done(void *arg, int err, int64_t cur, int64_t seq)
{
    struct creator *c = arg;
    pthread_mutex_lock(&c->w.mu);
    if (err == PAYMENT_STORE_OK && cur == -1 && seq > 0)
        c->ok++;
    c->w.pending--;
    pthread_cond_broadcast(&c->w.cv);
    pthread_mutex_unlock(&c->w.mu);
}

static void *creator_main(void *arg)
{
    struct creator *c = arg;
    for (int i = 0; i < CC_EACH; i++) {
        pay_init(&c->pays[i], c->base + i, c->base % 3, "GBP", "1", "", c->base + i);
        payment_store_create(c->s, &c->pays[i].row, NULL, NULL, creator_done, c);
    }
    /* A read on this thread, which then exits: its connection goes with it. */
    CHECK_INT(payment_store_ping(c->s), PAYMENT_STORE_OK);
    return NULL;
}

static void case_concurrent_creates(struct fixture *fx)
{
    struct payment_store_stats before, after;
    int have_stats = payment_store_stats(fx->s, &before) == 0;
    struct creator cs[CC_THREADS];
    pthread_t t[CC_THREADS];
    for (int i = 0; i < CC_THREADS; i++) {
        cs[i].s = fx->s;
        cs[i].base = 1 + i * CC_EACH;
        cs[i].pays = calloc(CC_EACH, sizeof *cs[i].pays);
        cs[i].ok = 0;
        waiter_init(&cs[i].w, CC_EACH);
    }
    for (int i = 0; i < CC_THREADS; i++)
        CHECK_INT(pthread_create(&t[i], NULL, creator_main, &cs[i]), 0);
    for (int i = 0; i < CC_THREADS; i++)
        CHECK_INT(pthread_join(t[i], NULL), 0);
    int ok = 0;
    for (int i = 0; i < CC_THREADS; i++) {
        waiter_wait(&cs[i].w);
        ok += cs[i].ok;
        free(cs[i].pays);
    }
    CHECK_INT(ok, CC_THREADS * CC_EACH);

    /* Every payment listed exactly once, in two pages. */
    struct listed *l = calloc(1, sizeof *l);
    static unsigned char seen[CC_THREADS * CC_EACH + 1];
    memset(seen, 0, sizeof seen);
    struct payment_query q;
    int more;
    query_init(&q, 1000);
    int total = 0;
    for (int page = 0; page < 3; page++) {
        CHECK_INT(list(fx->s, &q, l, &more), 0);
        for (int i = 0; i < l->n; i++) {
            int n = l->num[i];
            CHECK(n >= 1 && n <= CC_THREADS * CC_EACH && !seen[n]);
            if (n >= 1 && n <= CC_THREADS * CC_EACH)
                seen[n] = 1;
            CHECK(i == 0 || l->seq[i] > l->seq[i - 1]);
        }
        total += l->n;
        if (!more)
            break;
        q.mode = PAYMENT_PAGE_CURSOR;
        q.after_seq = l->seq[l->n - 1];
    }
    CHECK_INT(total, CC_THREADS * CC_EACH);
    free(l);

    /* Group commit: many writes per transaction. */
    if (have_stats) {
        CHECK_INT(payment_store_stats(fx->s, &after), 0);
        uint64_t writes = after.writes - before.writes;
        uint64_t commits = after.commits - before.commits;
        CHECK_INT(writes, CC_THREADS * CC_EACH);
        CHECK(commits >= 1);
        CHECK(commits < writes);
        fprintf(stderr, "  %llu creates in %llu commits\n", (unsigned long long)writes,
                (unsigned long long)commits);
    }
}

/* 20 threads update the same payment from version 0: exactly one wins. */
#define CU_THREADS 20

struct updater {
    payment_store *s;
    pthread_barrier_t *start;
    struct pay p;
    int err;
    int64_t cur;
};

static void *updater_main(void *arg)
{
    struct updater *u = arg;
    int rc = pthread_barrier_wait(u->start);
    CHECK(rc == 0 || rc == PTHREAD_BARRIER_SERIAL_THREAD);
    u->err = sync_update(u->s, &u->p.row, 0, &u->cur);
    return NULL;
}

static void case_concurrent_updates(struct fixture *fx)
{
    struct pay p;
    pay_init(&p, 1, 1, "GBP", "1", "", 1);
    CHECK_INT(sync_create(fx->s, &p.row, NULL), PAYMENT_STORE_OK);
    pthread_barrier_t start;
    CHECK_INT(pthread_barrier_init(&start, NULL, CU_THREADS), 0);
    struct updater *us = calloc(CU_THREADS, sizeof *us);
    pthread_t t[CU_THREADS];
    for (int i = 0; i < CU_THREADS; i++) {
        us[i].s = fx->s;
        us[i].start = &start;
        us[i].p = p;
        char tag[24];
        snprintf(tag, sizeof tag, "writer-%d", i);
        pay_set_version(&us[i].p, 1, tag);
    }
    for (int i = 0; i < CU_THREADS; i++)
        CHECK_INT(pthread_create(&t[i], NULL, updater_main, &us[i]), 0);
    for (int i = 0; i < CU_THREADS; i++)
        CHECK_INT(pthread_join(t[i], NULL), 0);
    int ok = 0, conflict = 0, winner = -1;
    for (int i = 0; i < CU_THREADS; i++) {
        if (us[i].err == PAYMENT_STORE_OK) {
            ok++;
            winner = i;
            CHECK_INT(us[i].cur, -1);
        } else if (us[i].err == PAYMENT_STORE_ECONFLICT) {
            conflict++;
            CHECK_INT(us[i].cur, 1);
        }
    }
    CHECK_INT(ok, 1);
    CHECK_INT(conflict, CU_THREADS - 1);
    if (winner >= 0)
        check_doc(fx->s, &us[winner].p, 1);
    CHECK_INT(pthread_barrier_destroy(&start), 0);
    free(us);
}

/* ---- idempotency records ------------------------------------------------ */

/* A record and the bytes it borrows. */
struct rec {
    struct payment_idem idem;
    char scope[32];
    char key[64];
    char fingerprint[65];
    char location[96];
    char etag[24];
    char body[96];
};

/* Record n of (scope, key), created at created_ms.  Its body holds a NUL
 * and bytes that are not UTF-8: the store keeps bytes, not text.  A bare
 * record has no headers and no body. */
static void rec_init(struct rec *r, const char *scope, const char *key, int n, int64_t created_ms,
                     int bare)
{
    memset(r, 0, sizeof *r);
    snprintf(r->scope, sizeof r->scope, "%s", scope);
    snprintf(r->key, sizeof r->key, "%s", key);
    snprintf(r->fingerprint, sizeof r->fingerprint, "%064x", (unsigned)n);
    r->idem.scope = r->scope;
    r->idem.key = r->key;
    r->idem.fingerprint = r->fingerprint;
    r->idem.status = 200 + n % 100;
    r->idem.created_ms = created_ms;
    if (bare)
        return;
    snprintf(r->location, sizeof r->location, "/v1/payments/00000000-0000-4000-8000-%012d", n);
    snprintf(r->etag, sizeof r->etag, "\"%d\"", n);
    int len = snprintf(r->body, sizeof r->body, "{\"n\":%d}", n);
    memcpy(r->body + len, "\0\xff\xfe}", 4);
    r->idem.location = r->location;
    r->idem.etag = r->etag;
    r->idem.body = r->body;
    r->idem.body_len = (size_t)len + 4;
}

/* The stored outcome of r's (scope, key) is r's. */
static void check_rec_line(payment_store *s, const struct rec *r, int line)
{
    struct payment_idem_found f = {.location = BUF_INIT, .body = BUF_INIT};
    int err = payment_store_idem_get(s, r->scope, r->key, &f);
    if (err != PAYMENT_STORE_OK)
        fprintf(stderr, "  line %d: record (%s, %s) not found: %d\n", line, r->scope, r->key, err);
    CHECK_INT(err, PAYMENT_STORE_OK);
    CHECK_STR(f.fingerprint, r->fingerprint);
    CHECK_INT(f.status, r->idem.status);
    CHECK_STR(f.etag, r->etag);
    CHECK_INT(f.location.len, strlen(r->location));
    CHECK(f.location.len == 0 || memcmp(f.location.data, r->location, f.location.len) == 0);
    CHECK_INT(f.body.len, r->idem.body_len);
    CHECK(f.body.len == 0 || (f.body.len == r->idem.body_len &&
                              memcmp(f.body.data, r->body, f.body.len) == 0));
    buf_free(&f.location);
    buf_free(&f.body);
}

#define CHECK_REC(s, r) check_rec_line((s), (r), __LINE__)

/* No outcome is stored for (scope, key). */
static void check_no_rec_line(payment_store *s, const char *scope, const char *key, int line)
{
    struct payment_idem_found f = {.location = BUF_INIT, .body = BUF_INIT};
    int err = payment_store_idem_get(s, scope, key, &f);
    if (err != PAYMENT_STORE_ENOTFOUND)
        fprintf(stderr, "  line %d: record (%s, %s): %d\n", line, scope, key, err);
    CHECK_INT(err, PAYMENT_STORE_ENOTFOUND);
    CHECK_INT(f.location.len, 0);
    CHECK_INT(f.body.len, 0);
    buf_free(&f.location);
    buf_free(&f.body);
}

#define CHECK_NO_REC(s, scope, key) check_no_rec_line((s), (scope), (key), __LINE__)

/* A key recorded once refuses every other write, which then does not
 * happen; the same key in another scope is another key. */
static void case_idem_reuse(struct fixture *fx)
{
    struct pay a, b, c, d;
    struct rec ra, rbare, again, other_scope;
    pay_init(&a, 1, 1, "GBP", "1", "", 1000);
    pay_init(&b, 2, 1, "GBP", "2", "", 1000);
    pay_init(&c, 3, 1, "GBP", "3", "", 1000);
    pay_init(&d, 4, 1, "GBP", "4", "", 1000);
    rec_init(&ra, "api-key-1", "key-a", 1, 5000, 0);
    rec_init(&rbare, "api-key-1", "key-bare", 2, 5000, 1);
    CHECK_NO_REC(fx->s, "api-key-1", "key-a");
    int64_t cur = -5, seq = -5;
    CHECK_INT(sync_create_idem(fx->s, &a.row, &ra.idem, &seq), PAYMENT_STORE_OK);
    CHECK(seq > 0);
    CHECK_REC(fx->s, &ra);
    check_doc(fx->s, &a, 0);
    CHECK_INT(sync_create_idem(fx->s, &b.row, &rbare.idem, NULL), PAYMENT_STORE_OK);
    CHECK_REC(fx->s, &rbare);

    /* Same scope and key, another request: refused, and nothing written. */
    rec_init(&again, "api-key-1", "key-a", 9, 6000, 0);
    CHECK_INT(sync_create_idem(fx->s, &c.row, &again.idem, &seq), PAYMENT_STORE_EIDEMPOTENT);
    CHECK_INT(seq, 0);
    check_gone(fx->s, c.row.id);
    struct pay a1 = a;
    pay_set_version(&a1, 1, "must not be written");
    /* On the payment holding the key, and on another one. */
    CHECK_INT(sync_update_idem(fx->s, &a1.row, 0, &again.idem, &cur), PAYMENT_STORE_EIDEMPOTENT);
    CHECK_INT(cur, -1);
    CHECK_INT(sync_delete_idem(fx->s, a.row.id, 0, &again.idem, &cur), PAYMENT_STORE_EIDEMPOTENT);
    CHECK_INT(sync_delete_idem(fx->s, a.row.id, -1, &again.idem, &cur), PAYMENT_STORE_EIDEMPOTENT);
    check_doc(fx->s, &a, 0);
    struct pay b1 = b;
    pay_set_version(&b1, 1, "must not be written");
    CHECK_INT(sync_update_idem(fx->s, &b1.row, 0, &again.idem, &cur), PAYMENT_STORE_EIDEMPOTENT);
    CHECK_INT(sync_delete_idem(fx->s, b.row.id, -1, &again.idem, &cur), PAYMENT_STORE_EIDEMPOTENT);
    check_doc(fx->s, &b, 0);
    CHECK_REC(fx->s, &ra); /* the first outcome stays */

    /* The key in another scope, and another key in the same scope. */
    rec_init(&other_scope, "api-key-2", "key-a", 3, 6000, 0);
    CHECK_INT(sync_create_idem(fx->s, &c.row, &other_scope.idem, NULL), PAYMENT_STORE_OK);
    CHECK_REC(fx->s, &other_scope);
    CHECK_REC(fx->s, &ra);
    CHECK_NO_REC(fx->s, "", "key-a");
    CHECK_NO_REC(fx->s, "api-key-1", "key-A");
    rec_init(&again, "", "key-a", 4, 6000, 0); /* the shared scope of an open server */
    CHECK_INT(sync_create_idem(fx->s, &d.row, &again.idem, NULL), PAYMENT_STORE_OK);
    CHECK_REC(fx->s, &again);
    check_doc(fx->s, &d, 0);
    /* A write without a record never collides. */
    pay_set_version(&a1, 1, "no key");
    CHECK_INT(sync_update(fx->s, &a1.row, 0, &cur), PAYMENT_STORE_OK);
    check_doc(fx->s, &a1, 1);
    CHECK_REC(fx->s, &ra);
}

/* A write that fails for its own reason stores nothing, and its own reason
 * is the answer even when its key is recorded too. */
static void case_idem_failed_writes(struct fixture *fx)
{
    struct pay a, dup, unknown;
    pay_init(&a, 1, 1, "GBP", "1", "", 1000);
    pay_init(&dup, 1, 2, "EUR", "2", "", 1000);
    pay_init(&unknown, 7, 1, "GBP", "1", "", 1000);
    struct rec r;
    int64_t cur = -5;
    CHECK_INT(sync_create(fx->s, &a.row, NULL), PAYMENT_STORE_OK);

    rec_init(&r, "s", "dup", 1, 5000, 0);
    CHECK_INT(sync_create_idem(fx->s, &dup.row, &r.idem, NULL), PAYMENT_STORE_EDUPLICATE);
    CHECK_NO_REC(fx->s, "s", "dup");
    struct pay a5 = a;
    pay_set_version(&a5, 5, "stale");
    rec_init(&r, "s", "conflict", 2, 5000, 0);
    CHECK_INT(sync_update_idem(fx->s, &a5.row, 4, &r.idem, &cur), PAYMENT_STORE_ECONFLICT);
    CHECK_INT(cur, 0);
    CHECK_INT(sync_delete_idem(fx->s, a.row.id, 4, &r.idem, &cur), PAYMENT_STORE_ECONFLICT);
    CHECK_INT(cur, 0);
    CHECK_NO_REC(fx->s, "s", "conflict");
    pay_set_version(&unknown, 1, "x");
    rec_init(&r, "s", "missing", 3, 5000, 0);
    CHECK_INT(sync_update_idem(fx->s, &unknown.row, 0, &r.idem, &cur), PAYMENT_STORE_ENOTFOUND);
    CHECK_INT(sync_delete_idem(fx->s, unknown.row.id, -1, &r.idem, &cur),
              PAYMENT_STORE_ENOTFOUND);
    CHECK_NO_REC(fx->s, "s", "missing");
    check_doc(fx->s, &a, 0);

    /* Those keys were not used up. */
    struct pay b;
    pay_init(&b, 2, 1, "GBP", "1", "", 1000);
    rec_init(&r, "s", "dup", 4, 5000, 0);
    CHECK_INT(sync_create_idem(fx->s, &b.row, &r.idem, NULL), PAYMENT_STORE_OK);
    CHECK_REC(fx->s, &r);

    /* Own failure first: a recorded key on a stale or missing write. */
    CHECK_INT(sync_update_idem(fx->s, &a5.row, 4, &r.idem, &cur), PAYMENT_STORE_ECONFLICT);
    CHECK_INT(cur, 0);
    CHECK_INT(sync_update_idem(fx->s, &unknown.row, 0, &r.idem, &cur), PAYMENT_STORE_ENOTFOUND);
    CHECK_INT(sync_create_idem(fx->s, &dup.row, &r.idem, NULL), PAYMENT_STORE_EDUPLICATE);
    CHECK_REC(fx->s, &r);
    check_doc(fx->s, &a, 0);
}

/* Updates and deletes record their outcomes; a tombstone keeps every
 * record of its payment (a delete made with a key is answered again). */
static void case_idem_update_delete(struct fixture *fx)
{
    struct pay p;
    struct rec r1, r2, r3, late;
    pay_init(&p, 1, 1, "GBP", "1", "", 1000);
    int64_t cur = -5;
    CHECK_INT(sync_create(fx->s, &p.row, NULL), PAYMENT_STORE_OK);
    rec_init(&r1, "s", "put-1", 1, 5000, 0);
    rec_init(&r2, "s", "patch-2", 2, 5001, 0);
    rec_init(&r3, "s", "delete-3", 3, 5002, 1);
    pay_set_version(&p, 1, "one");
    CHECK_INT(sync_update_idem(fx->s, &p.row, 0, &r1.idem, &cur), PAYMENT_STORE_OK);
    CHECK_INT(cur, -1);
    check_doc(fx->s, &p, 1);
    pay_set_version(&p, 2, "two");
    CHECK_INT(sync_update_idem(fx->s, &p.row, 1, &r2.idem, &cur), PAYMENT_STORE_OK);
    check_doc(fx->s, &p, 2);
    CHECK_REC(fx->s, &r1);
    CHECK_REC(fx->s, &r2);
    CHECK_NO_REC(fx->s, "s", "delete-3");
    CHECK_INT(sync_delete_idem(fx->s, p.row.id, 2, &r3.idem, &cur), PAYMENT_STORE_OK);
    CHECK_INT(cur, -1);
    check_gone(fx->s, p.row.id);
    CHECK_REC(fx->s, &r1);
    CHECK_REC(fx->s, &r2);
    CHECK_REC(fx->s, &r3);
    /* On the tombstone: the delete's own failure, nothing recorded. */
    rec_init(&late, "s", "delete-4", 4, 5003, 0);
    CHECK_INT(sync_delete_idem(fx->s, p.row.id, -1, &late.idem, &cur), PAYMENT_STORE_ENOTFOUND);
    CHECK_NO_REC(fx->s, "s", "delete-4");
    /* An unconditional delete with a record. */
    struct pay q;
    pay_init(&q, 2, 1, "GBP", "1", "", 1000);
    CHECK_INT(sync_create(fx->s, &q.row, NULL), PAYMENT_STORE_OK);
    CHECK_INT(sync_delete_idem(fx->s, q.row.id, -1, &late.idem, &cur), PAYMENT_STORE_OK);
    CHECK_REC(fx->s, &late);
    check_gone(fx->s, q.row.id);
}

/* Polls until (scope, key) has no record, for at most about 2 s: a purge
 * may complete after it returns. */
static void wait_purged(payment_store *s, const char *scope, const char *key)
{
    for (int i = 0; i < 100; i++) {
        struct payment_idem_found f = {.location = BUF_INIT, .body = BUF_INIT};
        int err = payment_store_idem_get(s, scope, key, &f);
        buf_free(&f.location);
        buf_free(&f.body);
        if (err != PAYMENT_STORE_OK)
            return;
        CHECK_INT(usleep(20000), 0);
    }
}

/* purge(before) forgets the records created before, keeps the others (also
 * those of the same payment), and never touches a payment. */
static void case_idem_purge(struct fixture *fx)
{
    struct pay a, b, c;
    struct rec ra, ra2, rb, rc;
    pay_init(&a, 1, 1, "GBP", "1", "", 1000);
    pay_init(&b, 2, 1, "GBP", "2", "", 1000);
    pay_init(&c, 3, 1, "GBP", "3", "", 1000);
    rec_init(&ra, "s", "a-create", 1, 1000, 0);
    rec_init(&ra2, "s", "a-update", 2, 3000, 0);
    rec_init(&rb, "s", "b-create", 3, 2000, 0);
    rec_init(&rc, "s", "c-create", 4, 4000, 1);
    int64_t cur;
    CHECK_INT(sync_create_idem(fx->s, &a.row, &ra.idem, NULL), PAYMENT_STORE_OK);
    CHECK_INT(sync_create_idem(fx->s, &b.row, &rb.idem, NULL), PAYMENT_STORE_OK);
    CHECK_INT(sync_create_idem(fx->s, &c.row, &rc.idem, NULL), PAYMENT_STORE_OK);
    pay_set_version(&a, 1, "updated");
    CHECK_INT(sync_update_idem(fx->s, &a.row, 0, &ra2.idem, &cur), PAYMENT_STORE_OK);
    CHECK_INT(sync_delete(fx->s, b.row.id, -1, &cur), PAYMENT_STORE_OK);

    payment_store_idem_purge(fx->s, 2001); /* created before 2001 ms: ra and rb */
    wait_purged(fx->s, "s", "a-create");
    wait_purged(fx->s, "s", "b-create");
    CHECK_NO_REC(fx->s, "s", "a-create");
    CHECK_NO_REC(fx->s, "s", "b-create");
    CHECK_REC(fx->s, &ra2);
    CHECK_REC(fx->s, &rc);
    check_doc(fx->s, &a, 1);
    check_gone(fx->s, b.row.id);
    check_doc(fx->s, &c, 0);

    /* A purged key can be used again; the kept ones still refuse. */
    struct pay d, e;
    pay_init(&d, 4, 1, "GBP", "4", "", 1000);
    pay_init(&e, 5, 1, "GBP", "5", "", 1000);
    struct rec reuse;
    rec_init(&reuse, "s", "a-create", 5, 5000, 0);
    CHECK_INT(sync_create_idem(fx->s, &d.row, &reuse.idem, NULL), PAYMENT_STORE_OK);
    CHECK_REC(fx->s, &reuse);
    rec_init(&reuse, "s", "a-update", 6, 5000, 0);
    CHECK_INT(sync_create_idem(fx->s, &e.row, &reuse.idem, NULL), PAYMENT_STORE_EIDEMPOTENT);
    check_gone(fx->s, e.row.id);

    /* Everything before the end of time. */
    payment_store_idem_purge(fx->s, INT64_MAX);
    wait_purged(fx->s, "s", "a-update");
    wait_purged(fx->s, "s", "c-create");
    wait_purged(fx->s, "s", "a-create");
    CHECK_NO_REC(fx->s, "s", "a-update");
    CHECK_NO_REC(fx->s, "s", "c-create");
    CHECK_NO_REC(fx->s, "s", "a-create");
    check_doc(fx->s, &a, 1);
    check_doc(fx->s, &d, 0);
    CHECK_INT(sync_create_idem(fx->s, &e.row, &reuse.idem, NULL), PAYMENT_STORE_OK);
}

/* Records survive close and open, and keep refusing their keys. */
static void case_idem_reopen(struct fixture *fx)
{
    struct pay a, b;
    struct rec ra, ru, rd;
    pay_init(&a, 1, 1, "GBP", "1", "", 1000);
    pay_init(&b, 2, 1, "GBP", "2", "", 1000);
    rec_init(&ra, "s", "create", 1, 5000, 0);
    rec_init(&ru, "s", "update", 2, 5000, 0);
    rec_init(&rd, "s", "delete", 3, 5000, 1);
    int64_t cur;
    CHECK_INT(sync_create_idem(fx->s, &a.row, &ra.idem, NULL), PAYMENT_STORE_OK);
    CHECK_INT(sync_create(fx->s, &b.row, NULL), PAYMENT_STORE_OK);
    pay_set_version(&a, 1, "one");
    CHECK_INT(sync_update_idem(fx->s, &a.row, 0, &ru.idem, &cur), PAYMENT_STORE_OK);
    CHECK_INT(sync_delete_idem(fx->s, b.row.id, 0, &rd.idem, &cur), PAYMENT_STORE_OK);
    payment_store_close(fx->s);
    fx->s = NULL;
    char err[256] = "";
    CHECK_INT(payment_store_open(fx->uri, fx->flags, &fx->s, err, sizeof err),
              PAYMENT_STORE_OK);
    if (!fx->s)
        return;
    CHECK_REC(fx->s, &ra);
    CHECK_REC(fx->s, &ru);
    CHECK_REC(fx->s, &rd);
    struct pay c;
    pay_init(&c, 3, 1, "GBP", "3", "", 1000);
    CHECK_INT(sync_create_idem(fx->s, &c.row, &ru.idem, NULL), PAYMENT_STORE_EIDEMPOTENT);
    check_gone(fx->s, c.row.id);
    check_doc(fx->s, &a, 1);
}

/* 8 threads each submit 50 creates at once, each with its own key; then
 * 20 creates of other ids share one key: exactly one is made. */
#define CI_THREADS 8
#define CI_EACH 50
#define CI_SHARED 20

struct idem_creator {
    payment_store *s;
    int base;         /* first payment number */
    struct pay *pays; /* CI_EACH rows and their records, borrowed until done */
    struct rec *recs;
    struct waiter w;
    int ok;           /* creates reported OK, under w.mu */
    int refused;      /* EIDEMPOTENT, under w.mu */
};

static void idem_creator_done(void *arg, int err, int64_t cur, int64_t seq)
{
    struct idem_creator *c = arg;
    pthread_mutex_lock(&c->w.mu);
    if (err == PAYMENT_STORE_OK && cur == -1 && seq > 0)
        c->ok++;
    else if (err == PAYMENT_STORE_EIDEMPOTENT && seq == 0)
        c->refused++;
    c->w.pending--;
    pthread_cond_broadcast(&c->w.cv);
    pthread_mutex_unlock(&c->w.mu);
}

static void *idem_creator_main(void *arg)
{
    struct idem_creator *c = arg;
    for (int i = 0; i < CI_EACH; i++) {
        char key[32];
        snprintf(key, sizeof key, "key-%d", c->base + i);
        pay_init(&c->pays[i], c->base + i, 1, "GBP", "1", "", 1000);
        rec_init(&c->recs[i], "s", key, c->base + i, 5000, 0);
        payment_store_create(c->s, &c->pays[i].row, &c->recs[i].idem, NULL, idem_creator_done, c);
    }
    return NULL;
}

static void case_idem_concurrent(struct fixture *fx)
{
    struct idem_creator cs[CI_THREADS];
    pthread_t t[CI_THREADS];
    for (int i = 0; i < CI_THREADS; i++) {
        memset(&cs[i], 0, sizeof cs[i]);
        cs[i].s = fx->s;
        cs[i].base = 1 + i * CI_EACH;
        cs[i].pays = calloc(CI_EACH, sizeof *cs[i].pays);
        cs[i].recs = calloc(CI_EACH, sizeof *cs[i].recs);
        waiter_init(&cs[i].w, CI_EACH);
    }
    for (int i = 0; i < CI_THREADS; i++)
        CHECK_INT(pthread_create(&t[i], NULL, idem_creator_main, &cs[i]), 0);
    for (int i = 0; i < CI_THREADS; i++)
        CHECK_INT(pthread_join(t[i], NULL), 0);
    int ok = 0, missing = 0;
    for (int i = 0; i < CI_THREADS; i++) {
        waiter_wait(&cs[i].w);
        ok += cs[i].ok;
        for (int j = 0; j < CI_EACH; j++) {
            struct payment_idem_found f = {.location = BUF_INIT, .body = BUF_INIT};
            if (payment_store_idem_get(fx->s, "s", cs[i].recs[j].key, &f) != PAYMENT_STORE_OK ||
                strcmp(f.fingerprint, cs[i].recs[j].fingerprint) != 0 ||
                f.body.len != cs[i].recs[j].idem.body_len)
                missing++;
            buf_free(&f.location);
            buf_free(&f.body);
        }
        free(cs[i].pays);
        free(cs[i].recs);
    }
    CHECK_INT(ok, CI_THREADS * CI_EACH);
    CHECK_INT(missing, 0);

    /* One key, many ids, submitted together (one batch where the store
     * batches): one create wins, the rest are refused and not made. */
    struct idem_creator shared = {.s = fx->s};
    shared.pays = calloc(CI_SHARED, sizeof *shared.pays);
    shared.recs = calloc(1, sizeof *shared.recs);
    rec_init(&shared.recs[0], "s", "shared", 7, 5000, 0);
    waiter_init(&shared.w, CI_SHARED);
    for (int i = 0; i < CI_SHARED; i++) {
        pay_init(&shared.pays[i], 1000 + i, 1, "GBP", "1", "", 1000);
        payment_store_create(fx->s, &shared.pays[i].row, &shared.recs[0].idem, NULL, idem_creator_done,
                             &shared);
    }
    waiter_wait(&shared.w);
    CHECK_INT(shared.ok, 1);
    CHECK_INT(shared.refused, CI_SHARED - 1);
    int live = 0;
    for (int i = 0; i < CI_SHARED; i++) {
        struct buf b = BUF_INIT;
        int64_t v;
        live += payment_store_get(fx->s, shared.pays[i].row.id, &b, &v) == PAYMENT_STORE_OK;
        buf_free(&b);
    }
    CHECK_INT(live, 1);
    CHECK_REC(fx->s, &shared.recs[0]);
    free(shared.pays);
    free(shared.recs);
}

/* ---- operations applied from the broker --------------------------------- */

/* Whether fn(arg) dies of a failed assertion (SIGABRT), run in a child
 * process so that this one goes on. */
static int aborts(void (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        fn(arg);
        _exit(0);
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

struct apply_call {
    payment_store *s;
    const struct payment_apply *a;
};

static void ignore_done(void *arg, int err, int64_t current_version, int64_t seq)
{
    (void)arg, (void)err, (void)current_version, (void)seq;
}

static void apply_call(void *arg)
{
    struct apply_call *c = arg;
    payment_store_apply(c->s, c->a, ignore_done, NULL);
}

/* A write made in a child process, for the precondition checks. */
struct write_call {
    payment_store *s;
    const struct payment_row *row;
    int64_t expected_version;
};

static void create_call(void *arg)
{
    struct write_call *c = arg;
    payment_store_create(c->s, c->row, NULL, NULL, ignore_done, NULL);
}

static void update_call(void *arg)
{
    struct write_call *c = arg;
    payment_store_update(c->s, c->row, c->expected_version, NULL, NULL, ignore_done, NULL);
}

/* Whether applying a aborts: the store's check of its precondition. */
static int apply_aborts(payment_store *s, const struct payment_apply *a)
{
    struct apply_call c = {s, a};
    return aborts(apply_call, &c);
}

static int sync_apply(payment_store *s, const struct payment_apply *a)
{
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_apply(s, a, waiter_done, &w);
    waiter_wait(&w);
    CHECK_INT(w.cur, -1);
    CHECK_INT(w.seq, 0);
    return w.err;
}

static void apply_init(struct payment_apply *a, const char *op_id, uint32_t partition,
                       uint64_t seq, uint64_t fence, enum payment_apply_kind kind)
{
    memset(a, 0, sizeof *a);
    a->op_id = op_id;
    a->partition = partition;
    a->seq = seq;
    a->fence = fence;
    a->kind = kind;
    a->expected_version = -1;
    a->applied_ms = 1000 + (int64_t)seq;
}

/* The outcome recorded under op_id is (status, code, version) at (partition,
 * seq), about payment_id. */
static void check_op_line(payment_store *s, const char *op_id, const char *status,
                          const char *code, int64_t version, uint32_t partition, uint64_t seq,
                          const char *payment_id, int line)
{
    struct payment_op_found f;
    memset(&f, 0x5a, sizeof f);
    int err = payment_store_op_get(s, op_id, &f);
    if (err != PAYMENT_STORE_OK) {
        fprintf(stderr, "  line %d: operation %s: %s\n", line, op_id, payment_store_strerror(err));
        CHECK_INT(err, PAYMENT_STORE_OK);
        return;
    }
    int ok = strcmp(f.status, status) == 0 && strcmp(f.error_code, code) == 0 &&
             f.version == version && f.partition == partition && f.seq == seq &&
             strcmp(f.payment_id, payment_id) == 0 && (code[0] != '\0') == (f.message[0] != '\0');
    if (!ok)
        fprintf(stderr, "  line %d: operation %s: %s %s %lld p%u s%llu %s \"%s\"\n", line, op_id,
                f.status, f.error_code, (long long)f.version, f.partition,
                (unsigned long long)f.seq, f.payment_id, f.message);
    CHECK(ok);
}

#define CHECK_OP(s, op_id, status, code, version, partition, seq, pid)                     \
    check_op_line((s), (op_id), (status), (code), (version), (partition), (seq), (pid), __LINE__)

static void check_position_line(payment_store *s, uint32_t partition, uint64_t want_seq,
                                uint64_t want_fence, int line)
{
    uint64_t seq = 99, fence = 99;
    CHECK_INT(payment_store_partition_get(s, partition, &seq, &fence), PAYMENT_STORE_OK);
    if (seq != want_seq || fence != want_fence)
        fprintf(stderr, "  line %d: partition %u at (%llu, %llu)\n", line, partition,
                (unsigned long long)seq, (unsigned long long)fence);
    CHECK(seq == want_seq && fence == want_fence);
}

#define CHECK_POSITION(s, p, seq, fence) check_position_line((s), (p), (seq), (fence), __LINE__)

static void check_no_op(payment_store *s, const char *op_id)
{
    struct payment_op_found f;
    CHECK_INT(payment_store_op_get(s, op_id, &f), PAYMENT_STORE_ENOTFOUND);
}

/* Positions, fencing and every recorded outcome, in one partition. */
static void case_apply(struct fixture *fx)
{
    payment_store *s = fx->s;
    struct pay p, p1, stale;
    pay_init(&p, 1, 1, "GBP", "1", "", 10);
    struct payment_apply a;
    CHECK_POSITION(s, 3, 0, 0);
    check_no_op(s, "op-1");

    apply_init(&a, "op-1", 3, 1, 5, PAYMENT_APPLY_CREATE);
    a.row = &p.row;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    check_doc(s, &p, 0);
    CHECK_OP(s, "op-1", "succeeded", "", 0, 3, 1, p.row.id);
    CHECK_POSITION(s, 3, 1, 5);
    CHECK_POSITION(s, 4, 0, 0);
    struct payment_op_found f;
    CHECK_INT(payment_store_op_get(s, "op-1", &f), PAYMENT_STORE_OK);
    CHECK_STR(f.organisation_id, p.row.organisation_id);
    CHECK_STR(f.message, "");

    /* A redelivery (same sequence), under its own id or another: nothing. */
    apply_init(&a, "op-1", 3, 1, 5, PAYMENT_APPLY_CREATE);
    a.row = &p.row;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_ESKIPPED);
    p1 = p;
    pay_set_version(&p1, 1, "skipped");
    apply_init(&a, "op-1b", 3, 1, 5, PAYMENT_APPLY_UPDATE);
    a.row = &p1.row;
    a.expected_version = 0;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_ESKIPPED);
    check_no_op(s, "op-1b");
    check_doc(s, &p, 0);
    CHECK_POSITION(s, 3, 1, 5);

    /* An older lease holder is fenced off; a newer one takes over. */
    stale = p;
    pay_set_version(&stale, 1, "stale");
    apply_init(&a, "op-2", 3, 2, 4, PAYMENT_APPLY_UPDATE);
    a.row = &stale.row;
    a.expected_version = 0;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_EFENCED);
    check_no_op(s, "op-2");
    check_doc(s, &p, 0);
    CHECK_POSITION(s, 3, 1, 5);
    pay_set_version(&p1, 1, "taken over");
    apply_init(&a, "op-2", 3, 2, 7, PAYMENT_APPLY_UPDATE);
    a.row = &p1.row;
    a.expected_version = 0;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    check_doc(s, &p1, 1);
    CHECK_OP(s, "op-2", "succeeded", "", 1, 3, 2, p.row.id);
    CHECK_POSITION(s, 3, 2, 7);
    apply_init(&a, "op-x", 3, 3, 5, PAYMENT_APPLY_NONE);
    a.error_code = "validation_failed";
    a.error_message = "x";
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_EFENCED);
    check_no_op(s, "op-x");

    /* Failed writes are outcomes too: recorded once, position advanced. */
    apply_init(&a, "op-3", 3, 3, 7, PAYMENT_APPLY_UPDATE);
    a.row = &stale.row;
    a.expected_version = 0;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    CHECK_OP(s, "op-3", "failed", "version_conflict", 1, 3, 3, p.row.id);
    check_doc(s, &p1, 1);
    CHECK_POSITION(s, 3, 3, 7);

    char unknown[UUID_STR_LEN + 1];
    pay_id(unknown, 99);
    apply_init(&a, "op-4", 3, 4, 7, PAYMENT_APPLY_DELETE);
    a.payment_id = unknown;
    a.organisation_id = p.row.organisation_id;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    CHECK_OP(s, "op-4", "failed", "not_found", -1, 3, 4, unknown);

    apply_init(&a, "op-5", 3, 5, 7, PAYMENT_APPLY_NONE);
    a.payment_id = unknown;
    a.organisation_id = p.row.organisation_id;
    a.error_code = "validation_failed";
    a.error_message = "amount is required";
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    CHECK_OP(s, "op-5", "failed", "validation_failed", -1, 3, 5, unknown);
    CHECK_INT(payment_store_op_get(s, "op-5", &f), PAYMENT_STORE_OK);
    CHECK_STR(f.message, "amount is required");
    check_gone(s, unknown);

    struct pay dup;
    pay_init(&dup, 1, 1, "EUR", "2", "", 20);
    apply_init(&a, "op-6", 3, 6, 7, PAYMENT_APPLY_CREATE);
    a.row = &dup.row;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    CHECK_OP(s, "op-6", "failed", "duplicate_id", -1, 3, 6, p.row.id);
    check_doc(s, &p1, 1);

    /* Republished under a new sequence: skipped, yet the position moves on. */
    apply_init(&a, "op-5", 3, 7, 7, PAYMENT_APPLY_NONE);
    a.error_code = "other";
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_ESKIPPED);
    CHECK_OP(s, "op-5", "failed", "validation_failed", -1, 3, 5, unknown);
    CHECK_POSITION(s, 3, 7, 7);

    apply_init(&a, "op-8", 3, 8, 7, PAYMENT_APPLY_DELETE);
    a.payment_id = p.row.id;
    a.expected_version = 1;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    CHECK_OP(s, "op-8", "succeeded", "", 1, 3, 8, p.row.id);
    check_gone(s, p.row.id);

    /* Malformed operations are the caller's bug: an assertion fails before
     * anything reaches the writer. */
    apply_init(&a, "op-9", 3, 0, 7, PAYMENT_APPLY_NONE);
    CHECK(apply_aborts(s, &a));
    apply_init(&a, "op-9", 3, 9, 7, PAYMENT_APPLY_CREATE);
    CHECK(apply_aborts(s, &a));
    /* So are writes that name impossible versions. */
    struct write_call wc = {s, &p.row, 5};
    pay_set_version(&p, 2, "caller bug");
    CHECK(aborts(create_call, &wc));
    CHECK(aborts(update_call, &wc));
    check_no_op(s, "op-9");
    check_no_op(s, "op-unknown");
    CHECK_POSITION(s, 3, 8, 7);
}

/* An idempotency record is stored with a successful apply; a key already
 * recorded fails the operation, whose write then does not happen. */
static void case_apply_idem(struct fixture *fx)
{
    payment_store *s = fx->s;
    struct pay p, q;
    pay_init(&p, 1, 1, "GBP", "1", "", 10);
    pay_init(&q, 2, 1, "GBP", "2", "", 20);
    struct rec r1, r2;
    rec_init(&r1, "key-a", "k1", 1, 100, 0);
    rec_init(&r2, "key-a", "k1", 2, 200, 0);
    struct payment_apply a;
    apply_init(&a, "op-1", 0, 1, 1, PAYMENT_APPLY_CREATE);
    a.row = &p.row;
    a.idem = &r1.idem;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    CHECK_OP(s, "op-1", "succeeded", "", 0, 0, 1, p.row.id);
    CHECK_REC(s, &r1);
    apply_init(&a, "op-2", 0, 2, 1, PAYMENT_APPLY_CREATE);
    a.row = &q.row;
    a.idem = &r2.idem;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    CHECK_OP(s, "op-2", "failed", "idempotency_key_in_use", -1, 0, 2, q.row.id);
    check_gone(s, q.row.id);
    CHECK_REC(s, &r1);
    CHECK_POSITION(s, 0, 2, 1);
    /* A failed write stores no record. */
    struct rec r3;
    rec_init(&r3, "key-a", "k3", 3, 300, 1);
    apply_init(&a, "op-3", 0, 3, 1, PAYMENT_APPLY_CREATE);
    a.row = &p.row;
    a.idem = &r3.idem;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    CHECK_OP(s, "op-3", "failed", "duplicate_id", -1, 0, 3, p.row.id);
    CHECK_NO_REC(s, "key-a", "k3");
    /* A key a synchronous write recorded first: the operation fails, an
     * update and a delete alike, and the payment is left as it was. */
    struct rec r4;
    rec_init(&r4, "key-a", "k4", 4, 400, 0);
    struct pay q2;
    pay_init(&q2, 3, 1, "GBP", "3", "", 30);
    CHECK_INT(sync_create_idem(s, &q2.row, &r4.idem, NULL), PAYMENT_STORE_OK);
    struct pay p1 = p;
    pay_set_version(&p1, 1, "async");
    apply_init(&a, "op-4", 0, 4, 1, PAYMENT_APPLY_UPDATE);
    a.row = &p1.row;
    a.expected_version = 0;
    a.idem = &r4.idem;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    CHECK_OP(s, "op-4", "failed", "idempotency_key_in_use", -1, 0, 4, p.row.id);
    check_doc(s, &p, 0);
    apply_init(&a, "op-5", 0, 5, 1, PAYMENT_APPLY_DELETE);
    a.payment_id = p.row.id;
    a.idem = &r4.idem;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    CHECK_OP(s, "op-5", "failed", "idempotency_key_in_use", -1, 0, 5, p.row.id);
    check_doc(s, &p, 0);
    CHECK_REC(s, &r4);
    CHECK_POSITION(s, 0, 5, 1);
}

/* A keyed request's fingerprint is kept with its outcome, succeeded or
 * failed; outcomes are purged by age with the idempotency records. */
static void case_apply_fingerprint(struct fixture *fx)
{
    payment_store *s = fx->s;
    struct pay p;
    pay_init(&p, 1, 1, "GBP", "1", "", 10);
    char fp1[65], fp2[65];
    memset(fp1, 'a', 64);
    memset(fp2, 'b', 64);
    fp1[64] = fp2[64] = '\0';
    struct payment_apply a;
    apply_init(&a, "op-1", 0, 1, 1, PAYMENT_APPLY_CREATE);
    a.row = &p.row;
    a.fingerprint = fp1;
    a.applied_ms = 1000;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    apply_init(&a, "op-2", 0, 2, 1, PAYMENT_APPLY_CREATE);
    a.row = &p.row;
    a.fingerprint = fp2;
    a.applied_ms = 3000;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    apply_init(&a, "op-3", 0, 3, 1, PAYMENT_APPLY_NONE);
    a.error_code = "validation_failed";
    a.error_message = "bad";
    a.applied_ms = 1500;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    CHECK_OP(s, "op-1", "succeeded", "", 0, 0, 1, p.row.id);
    CHECK_OP(s, "op-2", "failed", "duplicate_id", -1, 0, 2, p.row.id);
    struct payment_op_found f;
    CHECK_INT(payment_store_op_get(s, "op-1", &f), PAYMENT_STORE_OK);
    CHECK_STR(f.fingerprint, fp1);
    CHECK_INT(payment_store_op_get(s, "op-2", &f), PAYMENT_STORE_OK);
    CHECK_STR(f.fingerprint, fp2);
    CHECK_INT(payment_store_op_get(s, "op-3", &f), PAYMENT_STORE_OK);
    CHECK_STR(f.fingerprint, "");

    /* Applied before 2000 ms: op-1 and op-3 go, op-2 and the payment stay. */
    payment_store_idem_purge(s, 2000);
    for (int i = 0; i < 100 && payment_store_op_get(s, "op-3", &f) == PAYMENT_STORE_OK; i++)
        CHECK_INT(usleep(20000), 0);
    check_no_op(s, "op-1");
    check_no_op(s, "op-3");
    CHECK_OP(s, "op-2", "failed", "duplicate_id", -1, 0, 2, p.row.id);
    check_doc(s, &p, 0);
    CHECK_POSITION(s, 0, 3, 1);
}

/* Positions and outcomes are durable: a reopened store skips what it did. */
static void case_apply_reopen(struct fixture *fx)
{
    struct pay p;
    pay_init(&p, 1, 1, "GBP", "1", "", 10);
    struct payment_apply a;
    apply_init(&a, "op-1", 1, 41, 9, PAYMENT_APPLY_CREATE);
    a.row = &p.row;
    CHECK_INT(sync_apply(fx->s, &a), PAYMENT_STORE_OK);
    apply_init(&a, "op-2", 2, 17, 3, PAYMENT_APPLY_NONE);
    a.error_code = "validation_failed";
    a.error_message = "bad";
    CHECK_INT(sync_apply(fx->s, &a), PAYMENT_STORE_OK);
    payment_store_close(fx->s);
    fx->s = NULL;
    char err[256] = "";
    CHECK_INT(payment_store_open(fx->uri, fx->flags, &fx->s, err, sizeof err),
              PAYMENT_STORE_OK);
    if (!fx->s)
        return;
    CHECK_POSITION(fx->s, 1, 41, 9);
    CHECK_POSITION(fx->s, 2, 17, 3);
    CHECK_OP(fx->s, "op-1", "succeeded", "", 0, 1, 41, p.row.id);
    CHECK_OP(fx->s, "op-2", "failed", "validation_failed", -1, 2, 17, "");
    apply_init(&a, "op-1", 1, 41, 9, PAYMENT_APPLY_CREATE);
    a.row = &p.row;
    CHECK_INT(sync_apply(fx->s, &a), PAYMENT_STORE_ESKIPPED);
    apply_init(&a, "op-1", 1, 41, 8, PAYMENT_APPLY_CREATE);
    a.row = &p.row;
    CHECK_INT(sync_apply(fx->s, &a), PAYMENT_STORE_ESKIPPED);
    apply_init(&a, "op-3", 1, 42, 8, PAYMENT_APPLY_NONE);
    CHECK_INT(sync_apply(fx->s, &a), PAYMENT_STORE_EFENCED);
}

/* 4 threads each apply one partition's 125 operations, a create then
 * updates each based on the previous version, all submitted at once: they
 * are reported in submission order and each applied once, so the chain of
 * versions holds.  Submitting them all again changes nothing. */
#define AP_THREADS 4
#define AP_EACH 125

struct applier;

struct applied {
    struct applier *owner;
    int index;                  /* in submission order */
    char op_id[24];
    struct pay p;               /* borrowed by the store until done */
    struct payment_apply a;
};

struct applier {
    payment_store *s;
    uint32_t partition;
    struct applied *ops;        /* AP_EACH */
    struct waiter w;
    int next;                   /* the index the next done should carry, under w.mu */
    int in_order;               /* dones in order, under w.mu */
    int ok;                     /* dones with the expected result, under w.mu */
    int want;                   /* the expected result */
};

static void applied_done(void *arg, int err, int64_t cur, int64_t seq)
{
    struct applied *op = arg;
    struct applier *t = op->owner;
    pthread_mutex_lock(&t->w.mu);
    if (op->index == t->next)
        t->in_order++;
    t->next = op->index + 1;
    if (err == t->want && cur == -1 && seq == 0)
        t->ok++;
    t->w.pending--;
    pthread_cond_broadcast(&t->w.cv);
    pthread_mutex_unlock(&t->w.mu);
}

static void *applier_main(void *arg)
{
    struct applier *t = arg;
    for (int i = 0; i < AP_EACH; i++)
        payment_store_apply(t->s, &t->ops[i].a, applied_done, &t->ops[i]);
    return NULL;
}

static void applier_prepare(struct applier *t, payment_store *s, uint32_t partition)
{
    t->s = s;
    t->partition = partition;
    t->ops = calloc(AP_EACH, sizeof *t->ops);
    for (int i = 0; i < AP_EACH; i++) {
        struct applied *op = &t->ops[i];
        op->owner = t;
        op->index = i;
        snprintf(op->op_id, sizeof op->op_id, "op-%u-%d", partition, i);
        pay_init(&op->p, 1 + (int)partition, (int)partition, "GBP", "1", "", 10);
        char tag[24];
        snprintf(tag, sizeof tag, "step-%d", i);
        pay_set_version(&op->p, i, tag);
        apply_init(&op->a, op->op_id, partition, (uint64_t)i + 1, 1,
                   i ? PAYMENT_APPLY_UPDATE : PAYMENT_APPLY_CREATE);
        op->a.row = &op->p.row;
        op->a.expected_version = i - 1;
    }
}

/* Runs every applier's operations from its own thread, expecting want. */
static void appliers_run(struct applier *ts, int want)
{
    pthread_t th[AP_THREADS];
    for (int i = 0; i < AP_THREADS; i++) {
        waiter_init(&ts[i].w, AP_EACH);
        ts[i].next = ts[i].in_order = ts[i].ok = 0;
        ts[i].want = want;
    }
    for (int i = 0; i < AP_THREADS; i++)
        CHECK_INT(pthread_create(&th[i], NULL, applier_main, &ts[i]), 0);
    for (int i = 0; i < AP_THREADS; i++)
        CHECK_INT(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < AP_THREADS; i++) {
        waiter_wait(&ts[i].w);
        CHECK_INT(ts[i].in_order, AP_EACH);
        CHECK_INT(ts[i].ok, AP_EACH);
    }
}

static void case_apply_concurrent(struct fixture *fx)
{
    struct applier ts[AP_THREADS];
    for (int i = 0; i < AP_THREADS; i++)
        applier_prepare(&ts[i], fx->s, (uint32_t)i);
    struct payment_store_stats before, after;
    int have_stats = payment_store_stats(fx->s, &before) == 0;
    appliers_run(ts, PAYMENT_STORE_OK);
    if (have_stats) {
        CHECK_INT(payment_store_stats(fx->s, &after), 0);
        CHECK(after.commits - before.commits < AP_THREADS * AP_EACH);
    }
    for (int i = 0; i < AP_THREADS; i++) {
        check_doc(fx->s, &ts[i].ops[AP_EACH - 1].p, AP_EACH - 1);
        CHECK_POSITION(fx->s, (uint32_t)i, AP_EACH, 1);
        for (int j = 0; j < AP_EACH; j++) {
            struct applied *op = &ts[i].ops[j];
            CHECK_OP(fx->s, op->op_id, "succeeded", "", j, (uint32_t)i, (uint64_t)j + 1,
                     op->p.row.id);
        }
    }
    appliers_run(ts, PAYMENT_STORE_ESKIPPED);
    for (int i = 0; i < AP_THREADS; i++) {
        check_doc(fx->s, &ts[i].ops[AP_EACH - 1].p, AP_EACH - 1);
        CHECK_POSITION(fx->s, (uint32_t)i, AP_EACH, 1);
        free(ts[i].ops);
    }
}

/* SQLite only: while another connection holds an open write transaction,
 * reads answer at once (no busy wait) and do not see its rows. */
static void case_reads_do_not_wait(struct fixture *fx)
{
    struct pay p;
    pay_init(&p, 1, 1, "GBP", "1", "", 1);
    CHECK_INT(sync_create(fx->s, &p.row, NULL), PAYMENT_STORE_OK);
    sqlite3 *db = NULL;
    CHECK_INT(sqlite3_open_v2(fx->uri + strlen("sqlite:"), &db, SQLITE_OPEN_READWRITE, NULL),
              SQLITE_OK);
    CHECK_INT(sqlite3_exec(db,
                           "BEGIN IMMEDIATE;"
                           "INSERT INTO payments (id, organisation_id, version, created_ms,"
                           " modified_ms, doc) VALUES ('00000000-0000-4000-8000-000000000002',"
                           " 'x', 0, 0, 0, '{\"id\":\"00000000-0000-4000-8000-000000000002\"}');",
                           NULL, NULL, NULL),
              SQLITE_OK);
    int64_t t0 = clock_mono_us();
    CHECK_INT(payment_store_ping(fx->s), PAYMENT_STORE_OK);
    check_doc(fx->s, &p, 0);
    check_gone(fx->s, "00000000-0000-4000-8000-000000000002");
    struct listed *l = calloc(1, sizeof *l);
    struct payment_query q;
    int more;
    query_init(&q, 100);
    CHECK_INT(list(fx->s, &q, l, &more), 0);
    CHECK_LISTED(l, 1);
    free(l);
    CHECK(clock_mono_us() - t0 < 1000000);
    CHECK_INT(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    CHECK_INT(sqlite3_close(db), SQLITE_OK);
}

/* ---- SQLite runners (store_fixture.h) ------------------------------------ */

SQLITE_CASE(ping)
SQLITE_CASE(create_get)
SQLITE_CASE(duplicate)
SQLITE_CASE(update)
SQLITE_CASE(delete)
SQLITE_CASE(list_paging)
SQLITE_CASE(list_filters)
SQLITE_CASE(list_set_text)
SQLITE_CASE(reopen)
SQLITE_CASE(done_reenters)
SQLITE_CASE(concurrent_creates)
SQLITE_CASE(concurrent_updates)
SQLITE_CASE(reads_do_not_wait)
SQLITE_CASE(idem_reuse)
SQLITE_CASE(idem_failed_writes)
SQLITE_CASE(idem_update_delete)
SQLITE_CASE(idem_purge)
SQLITE_CASE(idem_reopen)
SQLITE_CASE(idem_concurrent)
SQLITE_CASE(apply)
SQLITE_CASE(apply_idem)
SQLITE_CASE(apply_fingerprint)
SQLITE_CASE(apply_reopen)
SQLITE_CASE(apply_concurrent)
SQLITE_EXCL_CASE(create_get)
SQLITE_EXCL_CASE(update)
SQLITE_EXCL_CASE(delete)
SQLITE_EXCL_CASE(list_paging)
SQLITE_EXCL_CASE(list_filters)
SQLITE_EXCL_CASE(reopen)
SQLITE_EXCL_CASE(concurrent_creates)
SQLITE_EXCL_CASE(concurrent_updates)
SQLITE_EXCL_CASE(idem_reuse)
SQLITE_EXCL_CASE(idem_reopen)
SQLITE_EXCL_CASE(idem_concurrent)
SQLITE_EXCL_CASE(apply)
SQLITE_EXCL_CASE(apply_idem)

/* Open failures: EURI and a one-line reason. */
static void sqlite_open_errors(void)
{
    char dir[] = "/tmp/paymentd-store-XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp");
        return;
    }
    char notdb[300], notdir[300], isdir[300];
    snprintf(notdb, sizeof notdb, "%s/garbage.db", dir);
    FILE *f = fopen(notdb, "w");
    CHECK(f != NULL);
    if (f) {
        for (int i = 0; i < 200; i++)
            fputs("this is not an SQLite database\n", f);
        CHECK_INT(fclose(f), 0);
    }
    snprintf(isdir, sizeof isdir, "sqlite:%s", dir);
    snprintf(notdir, sizeof notdir, "sqlite:%s/garbage.db/x/p.db", dir);
    char garbage[320];
    snprintf(garbage, sizeof garbage, "sqlite:%s", notdb);
    const char *uris[] = {
        "", "bogus:/tmp/x.db", "sqlite", "sqlite:", "/tmp/x.db", "mongodb:/x",
        "sqlite:/dev/null/x/y.db", notdir, isdir, garbage,
    };
    for (size_t i = 0; i < sizeof uris / sizeof uris[0]; i++) {
        static char sentinel;
        payment_store *s = (payment_store *)&sentinel;
        char err[256] = "";
        CHECK_INT(payment_store_open(uris[i], 0, &s, err, sizeof err), PAYMENT_STORE_EURI);
        CHECK(s == NULL);
        CHECK(err[0] != '\0' && strchr(err, '\n') == NULL);
        if (s && s != (payment_store *)&sentinel)
            payment_store_close(s);
    }
    payment_store_close(NULL);
    rm_tree(dir);
}

static void sqlite_strerror(void)
{
    static const int errs[] = {PAYMENT_STORE_OK,          PAYMENT_STORE_ENOTFOUND,
                               PAYMENT_STORE_ECONFLICT,   PAYMENT_STORE_EDUPLICATE,
                               PAYMENT_STORE_EUNAVAILABLE, PAYMENT_STORE_EINTERNAL,
                               PAYMENT_STORE_EURI,        PAYMENT_STORE_EIDEMPOTENT,
                               PAYMENT_STORE_ESKIPPED,    PAYMENT_STORE_EFENCED};
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        CHECK(payment_store_strerror(errs[i])[0] != '\0');
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(payment_store_strerror(errs[i]), payment_store_strerror(errs[j])) != 0);
    }
    CHECK_STR(payment_store_strerror(-99), "unknown store error");
}

/* ---- MongoDB runners ---------------------------------------------------- */

#define MONGO_CASE(name)                                                                      \
    static void mongo_##name(void) { run_on_mongo(case_##name); }

MONGO_CASE(ping)
MONGO_CASE(create_get)
MONGO_CASE(duplicate)
MONGO_CASE(update)
MONGO_CASE(delete)
MONGO_CASE(list_paging)
MONGO_CASE(list_filters)
MONGO_CASE(list_set_text)
MONGO_CASE(reopen)
MONGO_CASE(done_reenters)
MONGO_CASE(concurrent_creates)
MONGO_CASE(concurrent_updates)
MONGO_CASE(idem_reuse)
MONGO_CASE(idem_failed_writes)
MONGO_CASE(idem_update_delete)
MONGO_CASE(idem_purge)
MONGO_CASE(idem_reopen)
MONGO_CASE(idem_concurrent)

MONGO_CASE(apply)
MONGO_CASE(apply_idem)
MONGO_CASE(apply_fingerprint)
MONGO_CASE(apply_reopen)
MONGO_CASE(apply_concurrent)

/* MongoDB unreachable: operations and positions answer EUNAVAILABLE within
 * about the selection timeout, nothing recorded. */
static void mongo_apply_absent(void)
{
    payment_store *s = NULL;
    char err[256] = "";
    CHECK_INT(payment_store_open(
                  "mongodb://127.0.0.1:1/x?serverSelectionTimeoutMS=300&paymentdWaitForStore=true", 0,
                  &s, err, sizeof err),
              PAYMENT_STORE_OK);
    if (!s)
        return;
    struct pay p;
    pay_init(&p, 1, 1, "GBP", "1", "", 1);
    struct payment_apply a;
    apply_init(&a, "op-1", 0, 1, 1, PAYMENT_APPLY_CREATE);
    a.row = &p.row;
    struct waiter w;
    waiter_init(&w, 1);
    int64_t t0 = clock_mono_us();
    payment_store_apply(s, &a, waiter_done, &w);
    waiter_wait(&w);
    CHECK_INT(w.err, PAYMENT_STORE_EUNAVAILABLE);
    struct payment_op_found f;
    CHECK_INT(payment_store_op_get(s, "op-1", &f), PAYMENT_STORE_EUNAVAILABLE);
    uint64_t seq = 9, fence = 9;
    CHECK_INT(payment_store_partition_get(s, 0, &seq, &fence), PAYMENT_STORE_EUNAVAILABLE);
    CHECK(clock_mono_us() - t0 < 4 * 400000);
    payment_store_close(s);
}

/* The stored shape of fx's payments collection: what operators query. */
static int mongo_find_one(const char *uri_db, const char *coll, const char *id, bson_t *out)
{
    bson_error_t e;
    mongoc_client_t *c = mongoc_client_new(mongo_base());
    if (!c)
        return 0;
    mongoc_collection_t *col = mongoc_client_get_collection(c, uri_db, coll);
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, filter, NULL, NULL);
    const bson_t *doc;
    int found = mongoc_cursor_next(cur, &doc);
    if (found)
        bson_copy_to(doc, out);
    CHECK(!mongoc_cursor_error(cur, &e));
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    mongoc_collection_destroy(col);
    mongoc_client_destroy(c);
    return found;
}

static int bson_has(const bson_t *b, const char *key)
{
    bson_iter_t it;
    return bson_iter_init_find(&it, b, key);
}

static const char *bson_str(const bson_t *b, const char *key)
{
    bson_iter_t it;
    return bson_iter_init_find(&it, b, key) && BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, NULL)
                                                                          : "";
}

/* The database name of a fixture URI. */
static void mongo_uri_db(const char *uri, char out[64])
{
    const char *hosts = strstr(uri, "://") + 3;
    const char *slash = hosts + strcspn(hosts, "/?");
    size_t n = *slash == '/' ? strcspn(slash + 1, "?") : 0;
    snprintf(out, 64, "%.*s", (int)n, slash + 1);
}

/* Documents, tombstones and indexes as README "Running on MongoDB" says,
 * and a counter behind the stored payments (a restore without the counters
 * collection) moved past them on open. */
static void case_mongo_layout(struct fixture *fx)
{
    char db[64];
    mongo_uri_db(fx->uri, db);
    struct pay a, b;
    pay_init(&a, 1, 1, "GBP", "10.50", "2026-01-02", 1000);
    pay_init(&b, 2, 1, "EUR", "3", "", 2000);
    int64_t seq_b = 0, cur;
    CHECK_INT(sync_create(fx->s, &a.row, NULL), PAYMENT_STORE_OK);
    CHECK_INT(sync_create(fx->s, &b.row, &seq_b), PAYMENT_STORE_OK);
    CHECK_INT(sync_delete(fx->s, b.row.id, -1, &cur), PAYMENT_STORE_OK);

    bson_t doc;
    CHECK(mongo_find_one(db, "payments", a.row.id, &doc));
    if (bson_has(&doc, "_id")) {
        CHECK_STR(bson_str(&doc, "organisation_id"), a.row.organisation_id);
        CHECK_STR(bson_str(&doc, "currency"), "GBP");
        CHECK_STR(bson_str(&doc, "processing_date"), "2026-01-02");
        CHECK_STR(bson_str(&doc, "amount_key"), a.row.amount_key);
        CHECK_STR(bson_str(&doc, "doc"), a.doc);
        CHECK(bson_has(&doc, "seq") && !bson_has(&doc, "end_to_end_reference"));
        bson_destroy(&doc);
    }
    CHECK(mongo_find_one(db, "payments", b.row.id, &doc));
    if (bson_has(&doc, "_id")) {
        bson_iter_t it;
        CHECK(bson_iter_init_find(&it, &doc, "deleted") && bson_iter_as_bool(&it));
        CHECK(!bson_has(&doc, "doc") && !bson_has(&doc, "currency"));
        CHECK_STR(bson_str(&doc, "organisation_id"), b.row.organisation_id);
        bson_destroy(&doc);
    }

    bson_t *cmd = BCON_NEW("listIndexes", BCON_UTF8("payments")), reply;
    CHECK(mongo_command(db, cmd, &reply));
    char *json = bson_as_relaxed_extended_json(&reply, NULL);
    static const char *const names[] = {"\"seq\"",       "\"organisation_seq\"", "\"currency_seq\"",
                                        "\"reference\"", "\"amount_key\"",       "\"created_ms\"",
                                        "\"organisation_idem_sk\"", "\"idem_key\"",
                                        "\"idem_created\""};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        CHECK(json && strstr(json, names[i]));
    bson_free(json);
    bson_destroy(&reply);
    bson_destroy(cmd);

    cmd = BCON_NEW("delete", BCON_UTF8("counters"), "deletes", "[", "{", "q", "{", "}", "limit",
                   BCON_INT32(0), "}", "]");
    CHECK(mongo_command(db, cmd, &reply));
    bson_destroy(&reply);
    bson_destroy(cmd);
    payment_store_close(fx->s);
    fx->s = NULL;
    char err[256] = "";
    CHECK_INT(payment_store_open(fx->uri, fx->flags, &fx->s, err, sizeof err),
              PAYMENT_STORE_OK);
    if (!fx->s)
        return;
    struct pay c;
    pay_init(&c, 3, 1, "GBP", "1", "", 3000);
    int64_t seq_c = 0;
    CHECK_INT(sync_create(fx->s, &c.row, &seq_c), PAYMENT_STORE_OK);
    CHECK(seq_c > seq_b);
}

static void mongo_layout(void) { run_on_mongo(case_mongo_layout); }

/* paymentdCollection: another collection, with its own counter. */
static void case_mongo_collection(struct fixture *fx)
{
    char db[64], uri[600], err[256] = "";
    mongo_uri_db(fx->uri, db);
    mongo_uri_for(uri, sizeof uri, mongo_base(), db, "paymentdCollection=payments_b");
    payment_store *other = NULL;
    CHECK_INT(payment_store_open(uri, 0, &other, err, sizeof err), PAYMENT_STORE_OK);
    if (!other)
        return;
    struct pay a;
    pay_init(&a, 1, 1, "GBP", "1", "", 1);
    CHECK_INT(sync_create(other, &a.row, NULL), PAYMENT_STORE_OK);
    check_doc(other, &a, 0);
    check_gone(fx->s, a.row.id);
    CHECK_INT(sync_create(fx->s, &a.row, NULL), PAYMENT_STORE_OK);
    payment_store_close(other);
    bson_t doc;
    CHECK(mongo_find_one(db, "payments_b", a.row.id, &doc));
    if (bson_has(&doc, "_id"))
        bson_destroy(&doc);
}

static void mongo_collection(void) { run_on_mongo(case_mongo_collection); }

/* The write concern of every write: majority with journal by default, the
 * URI's when it sets one.  Counted by the test double ({doubleStats: 1});
 * against a real MongoDB, which has no such command, the case is skipped. */
static int double_stats(int64_t *writes, int64_t *majority)
{
    bson_t *cmd = BCON_NEW("doubleStats", BCON_INT32(1)), reply;
    int ok = mongo_command("admin", cmd, &reply);
    bson_iter_t it;
    if (ok && bson_iter_init_find(&it, &reply, "writes"))
        *writes = bson_iter_as_int64(&it);
    if (ok && bson_iter_init_find(&it, &reply, "majorityJournaled"))
        *majority = bson_iter_as_int64(&it);
    bson_destroy(&reply);
    bson_destroy(cmd);
    return ok;
}

/* The double's counts of the write commands database db received, per
 * command name. */
struct write_counts {
    char name[32];    /* insert, update, delete, findAndModify, createIndexes */
    int64_t writes;   /* commands received */
    int64_t majority; /* of them, with {w: "majority", j: true} */
};

/* Fills out (at most max) from {doubleStats: 1}.  Returns how many, or -1
 * when the server has no such command (a real MongoDB). */
static int double_db_stats(const char *db, struct write_counts *out, int max)
{
    bson_t *cmd = BCON_NEW("doubleStats", BCON_INT32(1)), reply;
    int ok = mongo_command("admin", cmd, &reply), n = 0;
    char path[128];
    snprintf(path, sizeof path, "databases.%s", db);
    bson_iter_t it, names, counts;
    if (ok && bson_iter_init(&it, &reply) && bson_iter_find_descendant(&it, path, &names) &&
        BSON_ITER_HOLDS_DOCUMENT(&names) && bson_iter_recurse(&names, &names)) {
        while (n < max && bson_iter_next(&names)) {
            struct write_counts *c = &out[n++];
            snprintf(c->name, sizeof c->name, "%s", bson_iter_key(&names));
            c->writes = c->majority = -1;
            if (!BSON_ITER_HOLDS_DOCUMENT(&names) || !bson_iter_recurse(&names, &counts))
                continue;
            while (bson_iter_next(&counts)) {
                if (strcmp(bson_iter_key(&counts), "writes") == 0)
                    c->writes = bson_iter_as_int64(&counts);
                else if (strcmp(bson_iter_key(&counts), "majorityJournaled") == 0)
                    c->majority = bson_iter_as_int64(&counts);
            }
        }
    }
    bson_destroy(&reply);
    bson_destroy(cmd);
    return ok ? n : -1;
}

/* Every write command the store sends, on every path (index builds and the
 * counter at open, creates, updates, tombstones, idempotency records,
 * conflicts, refused keys, applies with their claims, outcomes, positions
 * and fence raises, purges), asks for write concern majority with journal:
 * the double's counts for the case's database, per command, show no write
 * without it, and each kind of write command was seen. */
static void case_mongo_write_concern_total(struct fixture *fx)
{
    char db[64];
    mongo_uri_db(fx->uri, db);
    struct write_counts counts[16];
    if (double_db_stats(db, counts, 16) < 0) {
        TEST_SKIP("no doubleStats command (a real MongoDB)");
        return;
    }
    payment_store *s = fx->s;
    int64_t cur;
    struct pay a, b, c, p;
    struct rec ra, rb, rc, rp;
    pay_init(&a, 1, 1, "GBP", "1", "", 1);
    pay_init(&b, 2, 1, "EUR", "2", "", 2);
    pay_init(&c, 3, 1, "EUR", "3", "", 3);
    rec_init(&ra, "scope", "key-a", 1, 1000, 0);
    rec_init(&rb, "scope", "key-b", 2, 1000, 0);
    rec_init(&rc, "scope", "key-c", 3, 1000, 1);
    CHECK_INT(sync_create_idem(s, &a.row, &ra.idem, NULL), PAYMENT_STORE_OK);
    CHECK_INT(sync_create(s, &b.row, NULL), PAYMENT_STORE_OK);
    CHECK_INT(sync_create_idem(s, &c.row, &ra.idem, NULL), PAYMENT_STORE_EIDEMPOTENT);
    pay_set_version(&a, 1, "a1");
    pay_set_version(&b, 1, "b1");
    CHECK_INT(sync_update_idem(s, &a.row, 0, &rb.idem, &cur), PAYMENT_STORE_OK);
    CHECK_INT(sync_update(s, &b.row, 0, &cur), PAYMENT_STORE_OK);
    CHECK_INT(sync_update(s, &b.row, 0, &cur), PAYMENT_STORE_ECONFLICT);
    CHECK_INT(sync_delete_idem(s, a.row.id, 1, &rc.idem, &cur), PAYMENT_STORE_OK);
    CHECK_INT(sync_delete(s, b.row.id, -1, &cur), PAYMENT_STORE_OK);

    struct payment_apply op;
    pay_init(&p, 4, 2, "GBP", "4", "", 4);
    rec_init(&rp, "scope", "key-p", 4, 1000, 0);
    apply_init(&op, "op-1", 0, 1, 1, PAYMENT_APPLY_CREATE);
    op.row = &p.row;
    op.idem = &rp.idem;
    op.fingerprint = rp.fingerprint;
    CHECK_INT(sync_apply(s, &op), PAYMENT_STORE_OK);
    CHECK_INT(sync_apply(s, &op), PAYMENT_STORE_ESKIPPED);
    apply_init(&op, "op-2", 0, 2, 1, PAYMENT_APPLY_CREATE); /* duplicate_id */
    op.row = &p.row;
    CHECK_INT(sync_apply(s, &op), PAYMENT_STORE_OK);
    pay_set_version(&p, 1, "p1");
    apply_init(&op, "op-3", 0, 3, 1, PAYMENT_APPLY_UPDATE);
    op.row = &p.row;
    op.expected_version = 0;
    CHECK_INT(sync_apply(s, &op), PAYMENT_STORE_OK);
    apply_init(&op, "op-4", 0, 4, 1, PAYMENT_APPLY_UPDATE); /* version_conflict */
    op.row = &p.row;
    op.expected_version = 0;
    CHECK_INT(sync_apply(s, &op), PAYMENT_STORE_OK);
    apply_init(&op, "op-5", 0, 5, 1, PAYMENT_APPLY_NONE);
    op.error_code = "validation_failed";
    op.error_message = "bad";
    CHECK_INT(sync_apply(s, &op), PAYMENT_STORE_OK);
    apply_init(&op, "op-6", 0, 6, 1, PAYMENT_APPLY_DELETE);
    op.payment_id = p.row.id;
    CHECK_INT(sync_apply(s, &op), PAYMENT_STORE_OK);
    CHECK_OP(s, "op-6", "succeeded", "", 1, 0, 6, p.row.id);

    payment_store_idem_purge(s, INT64_MAX);
    CHECK_NO_REC(s, "scope", "key-b");
    check_no_op(s, "op-1");

    int n = double_db_stats(db, counts, 16);
    static const char *const kinds[] = {"insert", "update", "delete", "findAndModify",
                                        "createIndexes"};
    int seen[5] = {0};
    for (int i = 0; i < n; i++) {
        if (counts[i].writes != counts[i].majority)
            fprintf(stderr, "  %s: %lld writes, %lld with majority and journal\n",
                    counts[i].name, (long long)counts[i].writes, (long long)counts[i].majority);
        CHECK(counts[i].writes > 0);
        CHECK_INT(counts[i].majority, counts[i].writes);
        for (int k = 0; k < 5; k++)
            seen[k] |= strcmp(counts[i].name, kinds[k]) == 0;
    }
    for (int k = 0; k < 5; k++) {
        if (!seen[k])
            fprintf(stderr, "  no %s command seen\n", kinds[k]);
        CHECK(seen[k]);
    }
}

static void mongo_write_concern_total(void) { run_on_mongo(case_mongo_write_concern_total); }

/* A URI that sets its own write concern gets it: the double counts the
 * store's writes, none with majority and journal. */
static void case_mongo_write_concern(struct fixture *fx)
{
    int64_t w1 = 0, m1 = 0, w2 = 0, m2 = 0;
    if (!double_stats(&w1, &m1)) {
        TEST_SKIP("no doubleStats command (a real MongoDB)");
        return;
    }
    struct pay p;
    char db[64], uri[600], err[256] = "";
    mongo_uri_db(fx->uri, db);
    mongo_uri_for(uri, sizeof uri, mongo_base(), db, "w=1");
    payment_store *w1store = NULL;
    CHECK_INT(payment_store_open(uri, 0, &w1store, err, sizeof err), PAYMENT_STORE_OK);
    if (!w1store)
        return;
    pay_init(&p, 2, 1, "GBP", "1", "", 1);
    CHECK_INT(sync_create(w1store, &p.row, NULL), PAYMENT_STORE_OK);
    payment_store_close(w1store);
    CHECK(double_stats(&w2, &m2));
    CHECK(w2 - w1 >= 2);
    CHECK_INT(m2, m1);
}

static void mongo_write_concern(void) { run_on_mongo(case_mongo_write_concern); }

/* Runs the write command cmd (destroyed here) on db and checks that it
 * wrote n documents. */
static void mongo_write_n(const char *db, bson_t *cmd, int64_t n)
{
    bson_t reply;
    CHECK(mongo_command(db, cmd, &reply));
    bson_iter_t it;
    CHECK(bson_iter_init_find(&it, &reply, "n") && bson_iter_as_int64(&it) == n);
    CHECK(!bson_iter_init_find(&it, &reply, "writeErrors"));
    bson_destroy(&reply);
    bson_destroy(cmd);
}

/* Forgets op_id's outcome and moves partition 0 back to (last_seq, fence):
 * what a crash after an apply's payment write and before its outcome and
 * position leaves. */
static void mongo_unrecord(const char *db, const char *op_id, int64_t last_seq, int64_t fence)
{
    mongo_write_n(db,
                  BCON_NEW("delete", BCON_UTF8("payments_operations"), "deletes", "[", "{", "q",
                           "{", "_id", BCON_UTF8(op_id), "}", "limit", BCON_INT32(1), "}", "]"),
                  1);
    mongo_write_n(db,
                  BCON_NEW("update", BCON_UTF8("payments_partitions"), "updates", "[", "{", "q",
                           "{", "_id", BCON_INT64(0), "}", "u", "{", "$set", "{", "last_seq",
                           BCON_INT64(last_seq), "fence", BCON_INT64(fence), "}", "}", "}", "]"),
                  1);
}

/* The entries of the stored payment's ops; *has_last when one is op_id. */
static int mongo_ops_count(const char *db, const char *id, const char *op_id, int *has_last)
{
    bson_t doc;
    int n = -1;
    *has_last = 0;
    if (!mongo_find_one(db, "payments", id, &doc))
        return n;
    bson_iter_t it, list, entry;
    if (bson_iter_init_find(&it, &doc, "ops") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &list)) {
        n = 0;
        while (bson_iter_next(&list)) {
            n++;
            if (BSON_ITER_HOLDS_DOCUMENT(&list) && bson_iter_recurse(&list, &entry) &&
                bson_iter_find(&entry, "id") && BSON_ITER_HOLDS_UTF8(&entry))
                *has_last = strcmp(bson_iter_utf8(&entry, NULL), op_id) == 0;
        }
    }
    bson_destroy(&doc);
    return n;
}

/* The crash window: a payment written by an operation whose outcome and
 * position were not (a crash between the steps; made here by applying, then
 * removing the outcome and moving the position back by hand).  Redelivered,
 * each operation is recognised from the payment itself: "succeeded" with
 * its version, not applied again (which would be duplicate_id, or
 * version_conflict, or a second write). */
static void case_mongo_apply_crash(struct fixture *fx)
{
    char db[64];
    mongo_uri_db(fx->uri, db);
    payment_store *s = fx->s;
    struct pay p, p1;
    pay_init(&p, 1, 1, "GBP", "1", "", 10);
    p1 = p;
    pay_set_version(&p1, 1, "once");
    struct payment_apply a;
    apply_init(&a, "op-c", 0, 1, 1, PAYMENT_APPLY_CREATE);
    a.row = &p.row;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    apply_init(&a, "op-u", 0, 2, 1, PAYMENT_APPLY_UPDATE);
    a.row = &p1.row;
    a.expected_version = 0;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);

    mongo_unrecord(db, "op-c", 0, 1);
    mongo_unrecord(db, "op-u", 0, 1);
    check_no_op(s, "op-c");
    CHECK_POSITION(s, 0, 0, 1);
    apply_init(&a, "op-c", 0, 1, 1, PAYMENT_APPLY_CREATE);
    a.row = &p.row;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    CHECK_OP(s, "op-c", "succeeded", "", 0, 0, 1, p.row.id);
    check_doc(s, &p1, 1);
    apply_init(&a, "op-u", 0, 2, 1, PAYMENT_APPLY_UPDATE);
    a.row = &p1.row;
    a.expected_version = 0;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    CHECK_OP(s, "op-u", "succeeded", "", 1, 0, 2, p.row.id);
    check_doc(s, &p1, 1);
    CHECK_POSITION(s, 0, 2, 1);

    /* The same for a delete, redelivered by the next lease holder. */
    apply_init(&a, "op-d", 0, 3, 1, PAYMENT_APPLY_DELETE);
    a.payment_id = p.row.id;
    a.expected_version = 1;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    mongo_unrecord(db, "op-d", 2, 1);
    apply_init(&a, "op-d", 0, 3, 2, PAYMENT_APPLY_DELETE);
    a.payment_id = p.row.id;
    a.expected_version = 1;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    CHECK_OP(s, "op-d", "succeeded", "", 1, 0, 3, p.row.id);
    check_gone(s, p.row.id);
    CHECK_POSITION(s, 0, 3, 2);

    /* A claim left by an attempt that stopped there: no outcome yet, and
     * the operation is applied when it comes again. */
    mongo_write_n(db,
                  BCON_NEW("insert", BCON_UTF8("payments_operations"), "documents", "[", "{",
                           "_id", BCON_UTF8("op-n"), "fence", BCON_INT64(2), "applied_ms",
                           BCON_INT64(5), "}", "]"),
                  1);
    check_no_op(s, "op-n");
    apply_init(&a, "op-n", 0, 4, 2, PAYMENT_APPLY_NONE);
    a.error_code = "validation_failed";
    a.error_message = "bad";
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    CHECK_OP(s, "op-n", "failed", "validation_failed", -1, 0, 4, "");

    /* ops keeps the newest entries only, and reads never show it. */
    struct pay q;
    pay_init(&q, 2, 1, "EUR", "2", "", 20);
    apply_init(&a, "op-q0", 0, 5, 2, PAYMENT_APPLY_CREATE);
    a.row = &q.row;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    char ids[40][16];
    for (int i = 1; i <= 40; i++) {
        snprintf(ids[i - 1], sizeof ids[i - 1], "op-q%d", i);
        pay_set_version(&q, i, ids[i - 1]);
        apply_init(&a, ids[i - 1], 0, 5 + (uint64_t)i, 2, PAYMENT_APPLY_UPDATE);
        a.row = &q.row;
        a.expected_version = i - 1;
        CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    }
    check_doc(s, &q, 40);
    int last = 0, n = mongo_ops_count(db, q.row.id, "op-q40", &last);
    CHECK(n >= 1 && n <= 16);
    CHECK(last);
    CHECK_OP(s, "op-q40", "succeeded", "", 40, 0, 45, q.row.id);
}

static void mongo_apply_crash(void) { run_on_mongo(case_mongo_apply_crash); }

/* A stale lease holder whose position check passed before a newer holder
 * took over (made here with another partition, whose position knows no
 * newer fence) can neither write a payment the newer holder decided on, nor
 * take over an operation the newer holder claimed. */
static void case_mongo_apply_fenced(struct fixture *fx)
{
    char db[64];
    mongo_uri_db(fx->uri, db);
    payment_store *s = fx->s;
    struct pay p, stale;
    pay_init(&p, 1, 1, "GBP", "1", "", 10);
    struct payment_apply a;
    apply_init(&a, "op-1", 1, 1, 9, PAYMENT_APPLY_CREATE);
    a.row = &p.row;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);

    stale = p;
    pay_set_version(&stale, 1, "stale");
    apply_init(&a, "op-s", 2, 1, 5, PAYMENT_APPLY_UPDATE);
    a.row = &stale.row;
    a.expected_version = 0;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_EFENCED);
    pay_set_version(&stale, 8, "stale");
    apply_init(&a, "op-s2", 2, 1, 5, PAYMENT_APPLY_UPDATE);
    a.row = &stale.row;
    a.expected_version = 7; /* a failure decided on it is fenced too */
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_EFENCED);
    apply_init(&a, "op-s3", 2, 1, 5, PAYMENT_APPLY_DELETE);
    a.payment_id = p.row.id;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_EFENCED);
    check_no_op(s, "op-s");
    check_no_op(s, "op-s2");
    check_no_op(s, "op-s3");
    check_doc(s, &p, 0);
    CHECK_POSITION(s, 2, 0, 0);

    /* The synchronous path is never fenced; a newer holder goes on. */
    int64_t cur;
    struct pay p1 = p;
    pay_set_version(&p1, 1, "sync");
    CHECK_INT(sync_update(s, &p1.row, 0, &cur), PAYMENT_STORE_OK);
    pay_set_version(&p1, 2, "newer");
    apply_init(&a, "op-2", 1, 2, 10, PAYMENT_APPLY_UPDATE);
    a.row = &p1.row;
    a.expected_version = 1;
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    check_doc(s, &p1, 2);

    /* An operation a newer holder claimed (and has not recorded yet). */
    mongo_write_n(db,
                  BCON_NEW("insert", BCON_UTF8("payments_operations"), "documents", "[", "{",
                           "_id", BCON_UTF8("op-k"), "fence", BCON_INT64(9), "applied_ms",
                           BCON_INT64(5), "}", "]"),
                  1);
    apply_init(&a, "op-k", 3, 1, 5, PAYMENT_APPLY_NONE);
    a.error_code = "validation_failed";
    a.error_message = "stale";
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_EFENCED);
    check_no_op(s, "op-k");
    CHECK_POSITION(s, 3, 0, 0);
    /* ... which the newer one records. */
    apply_init(&a, "op-k", 3, 1, 9, PAYMENT_APPLY_NONE);
    a.error_code = "validation_failed";
    a.error_message = "newer";
    CHECK_INT(sync_apply(s, &a), PAYMENT_STORE_OK);
    struct payment_op_found f;
    CHECK_INT(payment_store_op_get(s, "op-k", &f), PAYMENT_STORE_OK);
    CHECK_STR(f.message, "newer");
    CHECK_POSITION(s, 3, 1, 9);
}

static void mongo_apply_fenced(void) { run_on_mongo(case_mongo_apply_fenced); }

/* Where operations live, and every apply write with the store's write
 * concern (majority, journaled; counted by the double). */
static void case_mongo_apply_layout(struct fixture *fx)
{
    char db[64];
    mongo_uri_db(fx->uri, db);
    int64_t w0 = 0, m0 = 0, w1 = 0, m1 = 0;
    int counted = double_stats(&w0, &m0);
    struct pay p;
    pay_init(&p, 1, 1, "GBP", "1", "", 10);
    char fp[65];
    memset(fp, 'c', 64);
    fp[64] = '\0';
    struct payment_apply a;
    apply_init(&a, "op-1", 7, 3, 4, PAYMENT_APPLY_CREATE);
    a.row = &p.row;
    a.fingerprint = fp;
    CHECK_INT(sync_apply(fx->s, &a), PAYMENT_STORE_OK);
    /* An update whose write misses (a findAndModify raises the fence), and
     * a delete (a findAndModify). */
    struct pay stale = p, other;
    pay_set_version(&stale, 6, "stale");
    apply_init(&a, "op-2", 7, 4, 4, PAYMENT_APPLY_UPDATE);
    a.row = &stale.row;
    a.expected_version = 5;
    CHECK_INT(sync_apply(fx->s, &a), PAYMENT_STORE_OK);
    CHECK_OP(fx->s, "op-2", "failed", "version_conflict", 0, 7, 4, p.row.id);
    pay_init(&other, 2, 1, "GBP", "1", "", 10);
    CHECK_INT(sync_create(fx->s, &other.row, NULL), PAYMENT_STORE_OK);
    apply_init(&a, "op-3", 7, 5, 4, PAYMENT_APPLY_DELETE);
    a.payment_id = other.row.id;
    CHECK_INT(sync_apply(fx->s, &a), PAYMENT_STORE_OK);
    CHECK_OP(fx->s, "op-3", "succeeded", "", 0, 7, 5, other.row.id);
    if (counted) {
        CHECK(double_stats(&w1, &m1));
        CHECK(w1 - w0 >= 16); /* 5 for the create, 5 for the update, 2 the sync create */
        CHECK_INT(m1 - m0, w1 - w0);
    }
    bson_t doc;
    CHECK(mongo_find_one(db, "payments_operations", "op-1", &doc));
    if (bson_has(&doc, "_id")) {
        CHECK_STR(bson_str(&doc, "status"), "succeeded");
        CHECK_STR(bson_str(&doc, "payment_id"), p.row.id);
        CHECK_STR(bson_str(&doc, "fingerprint"), fp);
        CHECK(bson_has(&doc, "applied_ms") && bson_has(&doc, "fence"));
        bson_destroy(&doc);
    }
    CHECK(mongo_find_one(db, "payments", p.row.id, &doc));
    if (bson_has(&doc, "_id")) {
        CHECK_STR(bson_str(&doc, "doc"), p.doc);
        CHECK(bson_has(&doc, "ops") && bson_has(&doc, "fence") && !bson_has(&doc, "idem"));
        bson_destroy(&doc);
    }
    check_doc(fx->s, &p, 0);
    bson_t *cmd = BCON_NEW("listIndexes", BCON_UTF8("payments_operations")), reply;
    CHECK(mongo_command(db, cmd, &reply));
    char *json = bson_as_relaxed_extended_json(&reply, NULL);
    CHECK(json && strstr(json, "\"applied_ms\""));
    bson_free(json);
    bson_destroy(&reply);
    bson_destroy(cmd);
}

static void mongo_apply_layout(void) { run_on_mongo(case_mongo_apply_layout); }

/* Whether index spec (an element of listIndexes' answer) is unique. */
static int index_unique(bson_iter_t *spec)
{
    bson_iter_t it;
    return bson_iter_find_descendant(spec, "unique", &it) && bson_iter_as_bool(&it);
}

/* The indexes of the payments collection are those a collection sharded on
 * organisation_id accepts (README "Sharding"): every unique index but _id's
 * starts with organisation_id.  And the keys they no longer keep unique
 * across organisations are still refused: a key recorded in one
 * organisation refuses the writes of another, each decided in the embedded
 * store's order (id, version, then key). */
static void case_mongo_shardable(struct fixture *fx)
{
    char db[64];
    mongo_uri_db(fx->uri, db);
    bson_t *cmd = BCON_NEW("listIndexes", BCON_UTF8("payments")), reply;
    CHECK(mongo_command(db, cmd, &reply));
    bson_iter_t it, list;
    int unique = 0, total = 0;
    if (bson_iter_init(&it, &reply) && bson_iter_find_descendant(&it, "cursor.firstBatch", &list) &&
        bson_iter_recurse(&list, &list)) {
        while (bson_iter_next(&list)) {
            bson_iter_t spec, key, name;
            total++;
            CHECK(BSON_ITER_HOLDS_DOCUMENT(&list));
            if (!bson_iter_recurse(&list, &spec))
                continue;
            name = spec;
            const char *n = bson_iter_find(&name, "name") ? bson_iter_utf8(&name, NULL) : "";
            bson_iter_t u = spec;
            if (strcmp(n, "_id_") == 0 || !index_unique(&u))
                continue;
            unique++;
            int prefixed = bson_iter_find(&spec, "key") && bson_iter_recurse(&spec, &key) &&
                           bson_iter_next(&key) && strcmp(bson_iter_key(&key), "organisation_id") == 0;
            if (!prefixed)
                fprintf(stderr, "  unique index %s does not start with organisation_id\n", n);
            CHECK(prefixed);
        }
    }
    CHECK(total >= 10);
    CHECK_INT(unique, 1); /* the idempotency keys' */
    bson_destroy(&reply);
    bson_destroy(cmd);

    payment_store *s = fx->s;
    struct pay a, b, c;
    struct rec r, other;
    int64_t cur;
    pay_init(&a, 1, 1, "GBP", "1", "", 1);
    pay_init(&b, 2, 2, "GBP", "2", "", 2);
    pay_init(&c, 3, 2, "GBP", "3", "", 3);
    rec_init(&r, "s", "shared", 1, 1000, 0);
    rec_init(&other, "s", "shared", 2, 2000, 0);
    CHECK_INT(sync_create_idem(s, &a.row, &r.idem, NULL), PAYMENT_STORE_OK);
    CHECK_INT(sync_create(s, &b.row, NULL), PAYMENT_STORE_OK);
    CHECK_INT(sync_create_idem(s, &c.row, &other.idem, NULL), PAYMENT_STORE_EIDEMPOTENT);
    check_gone(s, c.row.id);
    struct pay dup = b; /* an id that exists comes before the key */
    CHECK_INT(sync_create_idem(s, &dup.row, &other.idem, NULL), PAYMENT_STORE_EDUPLICATE);
    pay_set_version(&b, 1, "must not be written");
    CHECK_INT(sync_update_idem(s, &b.row, 0, &other.idem, &cur), PAYMENT_STORE_EIDEMPOTENT);
    struct pay b6 = b;
    pay_set_version(&b6, 6, "must not be written");
    CHECK_INT(sync_update_idem(s, &b6.row, 5, &other.idem, &cur), PAYMENT_STORE_ECONFLICT);
    CHECK_INT(cur, 0);
    CHECK_INT(sync_delete_idem(s, b.row.id, -1, &other.idem, &cur), PAYMENT_STORE_EIDEMPOTENT);
    pay_init(&b, 2, 2, "GBP", "2", "", 2);
    check_doc(s, &b, 0);
    CHECK_REC(s, &r);

    /* The same through the broker's operations. */
    struct payment_apply op;
    apply_init(&op, "op-1", 0, 1, 1, PAYMENT_APPLY_CREATE);
    op.row = &c.row;
    op.idem = &other.idem;
    op.fingerprint = other.fingerprint;
    CHECK_INT(sync_apply(s, &op), PAYMENT_STORE_OK);
    CHECK_OP(s, "op-1", "failed", "idempotency_key_in_use", -1, 0, 1, c.row.id);
    check_gone(s, c.row.id);
    struct pay b1 = b;
    pay_set_version(&b1, 1, "must not be written");
    apply_init(&op, "op-2", 0, 2, 1, PAYMENT_APPLY_UPDATE);
    op.row = &b1.row;
    op.expected_version = 0;
    op.idem = &other.idem;
    op.fingerprint = other.fingerprint;
    CHECK_INT(sync_apply(s, &op), PAYMENT_STORE_OK);
    CHECK_OP(s, "op-2", "failed", "idempotency_key_in_use", -1, 0, 2, b.row.id);
    check_doc(s, &b, 0);
    CHECK_REC(s, &r);
}

static void mongo_shardable(void) { run_on_mongo(case_mongo_shardable); }

/* A store made before the idempotency index started with organisation_id
 * has an index idem_sk, unique on idem.sk alone: the store opens on it (its
 * own indexes are not equivalent to that one, which MongoDB would refuse),
 * and a key the old index refuses is EIDEMPOTENT. */
static void mongo_upgrade_idem_index(void)
{
    if (!mongo_base()) {
        TEST_SKIP(MONGO_URI_ENV " unset: no MongoDB to run on");
        return;
    }
    char db[64], uri[512], err[256] = "";
    mongo_db_name(db);
    mongo_uri_for(uri, sizeof uri, mongo_base(), db, "");
    bson_t *cmd = BCON_NEW("createIndexes", BCON_UTF8("payments"), "indexes", "[", "{", "key", "{",
                           "idem.sk", BCON_INT32(1), "}", "name", BCON_UTF8("idem_sk"), "unique",
                           BCON_BOOL(true), "partialFilterExpression", "{", "idem.sk", "{",
                           "$exists", BCON_BOOL(true), "}", "}", "}", "]"),
           reply;
    CHECK(mongo_command(db, cmd, &reply));
    bson_destroy(&reply);
    bson_destroy(cmd);
    payment_store *s = NULL;
    int rc = payment_store_open(uri, 0, &s, err, sizeof err);
    if (rc != PAYMENT_STORE_OK)
        fprintf(stderr, "  open: %s\n", err);
    CHECK_INT(rc, PAYMENT_STORE_OK);
    if (s) {
        struct pay a, b;
        struct rec r, again;
        pay_init(&a, 1, 1, "GBP", "1", "", 1);
        pay_init(&b, 2, 1, "GBP", "2", "", 2);
        rec_init(&r, "s", "old", 1, 1000, 0);
        rec_init(&again, "s", "old", 2, 2000, 0);
        CHECK_INT(sync_create_idem(s, &a.row, &r.idem, NULL), PAYMENT_STORE_OK);
        CHECK_INT(sync_create_idem(s, &b.row, &again.idem, NULL), PAYMENT_STORE_EIDEMPOTENT);
        check_gone(s, b.row.id);
        CHECK_REC(s, &r);
        payment_store_close(s);
    }
    mongo_drop(db);
}

/* The size in bytes of the stored document id of collection coll, 0 when
 * there is none. */
static uint32_t mongo_doc_size(const char *db, const char *coll, const char *id)
{
    bson_t doc;
    if (!mongo_find_one(db, coll, id, &doc))
        return 0;
    uint32_t len = doc.len;
    bson_destroy(&doc);
    return len;
}

#define IDEM_BOUND_UPDATES 10000 /* keyed updates of one payment */
#define IDEM_BOUND_BYTES 65536   /* its document stays below: 16 MB is MongoDB's limit */

/* Record i of the bounded case: key "key-<i>" in scope "s". */
static void bound_rec(struct rec *r, int i)
{
    char key[32];
    snprintf(key, sizeof key, "key-%d", i);
    rec_init(r, "s", key, i, 1000 + i, 0);
}

/* A payment updated often with keys keeps a bounded number of records (its
 * document stays far below MongoDB's 16 MB limit, and keyed writes keep
 * working), while a retry of a recent key, and of its create's key, is
 * still answered from its record.  An old key's record is dropped: its
 * retry is decided again and refused by its version. */
static void case_mongo_idem_bounded(struct fixture *fx)
{
    char db[64];
    mongo_uri_db(fx->uri, db);
    payment_store *s = fx->s;
    struct pay p;
    struct rec r;
    int64_t cur, t0 = clock_mono_us();
    pay_init(&p, 1, 1, "GBP", "1", "", 1);
    bound_rec(&r, 0);
    CHECK_INT(sync_create_idem(s, &p.row, &r.idem, NULL), PAYMENT_STORE_OK);
    for (int i = 1; i <= IDEM_BOUND_UPDATES; i++) {
        pay_set_version(&p, i, "bounded");
        bound_rec(&r, i);
        int err = sync_update_idem(s, &p.row, i - 1, &r.idem, &cur);
        if (err != PAYMENT_STORE_OK) {
            fprintf(stderr, "  keyed update %d: %s\n", i, payment_store_strerror(err));
            CHECK_INT(err, PAYMENT_STORE_OK);
            return;
        }
    }
    fprintf(stderr, "  %d keyed updates in %.1f s\n", IDEM_BOUND_UPDATES,
            (double)(clock_mono_us() - t0) / 1e6);
    uint32_t size = mongo_doc_size(db, "payments", p.row.id);
    if (size >= IDEM_BOUND_BYTES)
        fprintf(stderr, "  the document holds %u bytes\n", size);
    CHECK(size > 0 && size < IDEM_BOUND_BYTES);
    check_doc(s, &p, IDEM_BOUND_UPDATES);
    int recent[] = {0, IDEM_BOUND_UPDATES, IDEM_BOUND_UPDATES - 1, IDEM_BOUND_UPDATES - 10};
    for (size_t i = 0; i < sizeof recent / sizeof recent[0]; i++) {
        bound_rec(&r, recent[i]);
        CHECK_REC(s, &r);
    }
    CHECK_NO_REC(s, "s", "key-1");
    struct pay old = p;
    pay_set_version(&old, 1, "bounded");
    bound_rec(&r, 1);
    CHECK_INT(sync_update_idem(s, &old.row, 0, &r.idem, &cur), PAYMENT_STORE_ECONFLICT);
    CHECK_INT(cur, IDEM_BOUND_UPDATES);
    /* A keyed delete keeps its record, and the create's. */
    bound_rec(&r, IDEM_BOUND_UPDATES + 1);
    CHECK_INT(sync_delete_idem(s, p.row.id, IDEM_BOUND_UPDATES, &r.idem, &cur), PAYMENT_STORE_OK);
    CHECK_REC(s, &r);
    bound_rec(&r, 0);
    CHECK_REC(s, &r);
}

/* ---- PostgreSQL runners ------------------------------------------------- */

#define PG_CASE(name)                                                                         \
    static void pg_##name(void) { run_on_pg(case_##name); }

PG_CASE(ping)
PG_CASE(create_get)
PG_CASE(duplicate)
PG_CASE(update)
PG_CASE(delete)
PG_CASE(list_paging)
PG_CASE(list_filters)
PG_CASE(list_set_text)
PG_CASE(reopen)
PG_CASE(done_reenters)
PG_CASE(concurrent_creates)
PG_CASE(concurrent_updates)
PG_CASE(idem_reuse)
PG_CASE(idem_failed_writes)
PG_CASE(idem_update_delete)
PG_CASE(idem_purge)
PG_CASE(idem_reopen)
PG_CASE(idem_concurrent)
PG_CASE(apply)
PG_CASE(apply_idem)
PG_CASE(apply_fingerprint)
PG_CASE(apply_reopen)
PG_CASE(apply_concurrent)

static void mongo_idem_bounded(void) { run_on_mongo(case_mongo_idem_bounded); }

/* Bad URIs: EURI and a one-line reason, without contacting any server. */
static void mongo_open_errors(void)
{
    const char *uris[] = {
        "mongodb://",
        "mongodb:/x",
        "mongodb://127.0.0.1:1/bad.db",
        "mongodb://127.0.0.1:1/x?paymentdCollection=",
        "mongodb://127.0.0.1:1/x?paymentdCollection=system.users",
        "mongodb://127.0.0.1:1/x?paymentdCollection=a$b",
        "mongodb://127.0.0.1:1/x?paymentdWaitForStore=maybe",
        "mongodb://127.0.0.1:1/x?w=0",
        "mongodb://127.0.0.1:99999/x",
    };
    for (size_t i = 0; i < sizeof uris / sizeof uris[0]; i++) {
        payment_store *s = NULL;
        char err[256] = "";
        int64_t t0 = clock_mono_us();
        int rc = payment_store_open(uris[i], 0, &s, err, sizeof err);
        if (rc != PAYMENT_STORE_EURI)
            fprintf(stderr, "  %s: %d %s\n", uris[i], rc, err);
        CHECK_INT(rc, PAYMENT_STORE_EURI);
        CHECK(s == NULL);
        CHECK(err[0] != '\0' && strchr(err, '\n') == NULL);
        CHECK(clock_mono_us() - t0 < 500000);
        payment_store_close(s);
    }
}

/* Unreachable at start: open fails within the selection timeout, naming
 * the host and the way to start anyway. */
static void mongo_open_unreachable(void)
{
    payment_store *s = NULL;
    char err[256] = "";
    int64_t t0 = clock_mono_us();
    CHECK_INT(payment_store_open("mongodb://127.0.0.1:1/x?serverSelectionTimeoutMS=300", 0, &s, err,
                                 sizeof err),
              PAYMENT_STORE_EUNAVAILABLE);
    int64_t took = clock_mono_us() - t0;
    CHECK(took >= 250000 && took < 3000000);
    CHECK(s == NULL);
    CHECK(strstr(err, "127.0.0.1:1") && strstr(err, "paymentdWaitForStore=true"));
    CHECK(strchr(err, '\n') == NULL);
}

/* paymentdWaitForStore=true: open succeeds, and every call answers
 * EUNAVAILABLE within about the selection timeout while MongoDB is away. */
static void mongo_wait_for_store(void)
{
    payment_store *s = NULL;
    char err[256] = "";
    CHECK_INT(payment_store_open(
                  "mongodb://127.0.0.1:1/x?serverSelectionTimeoutMS=300&paymentdWaitForStore=true", 0,
                  &s, err, sizeof err),
              PAYMENT_STORE_OK);
    if (!s)
        return;
    int64_t t0 = clock_mono_us();
    CHECK_INT(payment_store_ping(s), PAYMENT_STORE_EUNAVAILABLE);
    struct buf b = BUF_INIT;
    int64_t v = -5;
    CHECK_INT(payment_store_get(s, "00000000-0000-4000-8000-000000000001", &b, &v),
              PAYMENT_STORE_EUNAVAILABLE);
    CHECK_INT(b.len, 0);
    buf_free(&b);
    struct listed *l = calloc(1, sizeof *l);
    struct payment_query q;
    int more;
    query_init(&q, 10);
    CHECK_INT(list(s, &q, l, &more), PAYMENT_STORE_EUNAVAILABLE);
    free(l);
    struct pay p;
    pay_init(&p, 1, 1, "GBP", "1", "", 1);
    int64_t cur;
    CHECK_INT(sync_create(s, &p.row, NULL), PAYMENT_STORE_EUNAVAILABLE);
    pay_set_version(&p, 1, "x");
    CHECK_INT(sync_update(s, &p.row, 0, &cur), PAYMENT_STORE_EUNAVAILABLE);
    CHECK_INT(sync_delete(s, p.row.id, -1, &cur), PAYMENT_STORE_EUNAVAILABLE);
    CHECK(clock_mono_us() - t0 < 6 * 400000);
    payment_store_close(s);
}

TEST_MAIN(TEST(sqlite_open_errors), TEST(sqlite_strerror), TEST(sqlite_ping),
          TEST(sqlite_create_get), TEST(sqlite_duplicate), TEST(sqlite_update),
          TEST(sqlite_delete), TEST(sqlite_list_paging), TEST(sqlite_list_filters),
          TEST(sqlite_list_set_text),
          TEST(sqlite_reopen), TEST(sqlite_done_reenters), TEST(sqlite_concurrent_creates),
          TEST(sqlite_concurrent_updates), TEST(sqlite_reads_do_not_wait),
          TEST(sqlite_idem_reuse), TEST(sqlite_idem_failed_writes),
          TEST(sqlite_idem_update_delete), TEST(sqlite_idem_purge), TEST(sqlite_idem_reopen),
          TEST(sqlite_idem_concurrent), TEST(sqlite_apply), TEST(sqlite_apply_idem), TEST(sqlite_apply_fingerprint),
          TEST(sqlite_apply_reopen), TEST(sqlite_apply_concurrent), TEST(sqlite_excl_create_get),
          TEST(sqlite_excl_update), TEST(sqlite_excl_delete), TEST(sqlite_excl_list_paging),
          TEST(sqlite_excl_list_filters), TEST(sqlite_excl_reopen),
          TEST(sqlite_excl_concurrent_creates), TEST(sqlite_excl_concurrent_updates),
          TEST(sqlite_excl_idem_reuse), TEST(sqlite_excl_idem_reopen),
          TEST(sqlite_excl_idem_concurrent), TEST(sqlite_excl_apply), TEST(sqlite_excl_apply_idem),
          TEST(mongo_open_errors), TEST(mongo_open_unreachable), TEST(mongo_wait_for_store),
          TEST(mongo_ping), TEST(mongo_create_get), TEST(mongo_duplicate), TEST(mongo_update),
          TEST(mongo_delete), TEST(mongo_list_paging), TEST(mongo_list_filters),
          TEST(mongo_list_set_text),
          TEST(mongo_reopen), TEST(mongo_done_reenters), TEST(mongo_concurrent_creates),
          TEST(mongo_concurrent_updates), TEST(mongo_idem_reuse), TEST(mongo_idem_failed_writes),
          TEST(mongo_idem_update_delete), TEST(mongo_idem_purge), TEST(mongo_idem_reopen),
          TEST(mongo_idem_concurrent), TEST(mongo_layout), TEST(mongo_collection),
          TEST(mongo_write_concern), TEST(mongo_write_concern_total),
          TEST(mongo_idem_bounded), TEST(mongo_shardable),
          TEST(mongo_upgrade_idem_index),
          TEST(mongo_apply), TEST(mongo_apply_idem), TEST(mongo_apply_fingerprint),
          TEST(mongo_apply_reopen), TEST(mongo_apply_concurrent), TEST(mongo_apply_absent),
          TEST(mongo_apply_crash), TEST(mongo_apply_fenced), TEST(mongo_apply_layout),
          TEST(pg_ping), TEST(pg_create_get), TEST(pg_duplicate), TEST(pg_update),
          TEST(pg_delete), TEST(pg_list_paging), TEST(pg_list_filters),
          TEST(pg_list_set_text), TEST(pg_reopen),
          TEST(pg_done_reenters), TEST(pg_concurrent_creates), TEST(pg_concurrent_updates),
          TEST(pg_idem_reuse), TEST(pg_idem_failed_writes), TEST(pg_idem_update_delete),
          TEST(pg_idem_purge), TEST(pg_idem_reopen), TEST(pg_idem_concurrent), TEST(pg_apply),
          TEST(pg_apply_idem), TEST(pg_apply_fingerprint), TEST(pg_apply_reopen),
          TEST(pg_apply_concurrent))
