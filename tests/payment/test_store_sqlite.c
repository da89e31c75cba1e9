/* What is particular to the embedded store beyond the contract test_store.c
 * checks on every backend: the page size of new stores, stores made with
 * another page size, and list statements kept prepared per query shape. */
#include <ftw.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "payment/store.h"
#include "test.h"

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int pending; /* writes not reported yet */
    int failed;  /* writes reported with an error */
};

static void waiter_done(void *arg, int err, int64_t cur, int64_t seq)
{
    struct waiter *w = arg;
    (void)cur;
    (void)seq;
    pthread_mutex_lock(&w->mu);
    w->failed += err != PAYMENT_STORE_OK;
    w->pending--;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Creates payments 0..n-1: organisation i % 3, currency GBP or EUR by
 * parity, reference "ref-<i % 4>"; each document is {"n":i,"pad":"..."}, a
 * few KB like a real payment.  Returns the count that failed. */
static int create_payments(payment_store *s, int n)
{
    struct waiter w = {.pending = n};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    struct payment_row *rows = calloc((size_t)n, sizeof *rows);
    char(*docs)[6000] = calloc((size_t)n, sizeof *docs);
    char(*refs)[16] = calloc((size_t)n, sizeof *refs);
    if (!rows || !docs || !refs) {
        free(rows);
        free(docs);
        free(refs);
        return n;
    }
    for (int i = 0; i < n; i++) {
        struct payment_row *r = &rows[i];
        snprintf(r->id, sizeof r->id, "00000000-0000-4000-8000-%012d", i);
        snprintf(r->organisation_id, sizeof r->organisation_id, "0a0a0a0a-0000-4000-8000-%012d",
                 i % 3);
        r->currency = i % 2 ? "EUR" : "GBP";
        snprintf(refs[i], sizeof refs[i], "ref-%d", i % 4);
        r->reference = refs[i];
        r->created_ms = r->modified_ms = 1000 + i;
        int len = snprintf(docs[i], sizeof docs[i], "{\"n\":%d,\"pad\":\"%5000d\"}", i, i);
        r->doc = docs[i];
        r->doc_len = (size_t)len;
        payment_store_create(s, r, NULL, waiter_done, &w);
    }
    pthread_mutex_lock(&w.mu);
    while (w.pending > 0)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    free(rows);
    free(docs);
    free(refs);
    return w.failed;
}

struct listed {
    int n;        /* rows */
    long sum;     /* of their payment numbers, position-weighted */
};

static int listed_row(void *arg, const char *doc, size_t len, int64_t seq)
{
    struct listed *l = arg;
    (void)seq;
    CHECK(len > 5 && strncmp(doc, "{\"n\":", 5) == 0);
    l->n++;
    l->sum += (long)l->n * atol(doc + 5);
    return 0;
}

static void query_init(struct payment_query *q)
{
    memset(q, 0, sizeof *q);
    q->created_from_ms = INT64_MIN;
    q->created_to_ms = INT64_MAX;
    q->page_size = 100;
    q->mode = PAYMENT_PAGE_FIRST;
}

/* Shape k of 12 list queries: filters on 1..3 organisations, a currency,
 * a reference, a page, a cursor, an offset (each its own SQL text). */
static void query_shape(struct payment_query *q, int k, char orgs[3][UUID_STR_LEN + 1])
{
    static char *gbp = "GBP", *eur = "EUR", *ref = "ref-1";
    query_init(q);
    for (int i = 0; i < 3; i++)
        snprintf(orgs[i], UUID_STR_LEN + 1, "0a0a0a0a-0000-4000-8000-%012d", i);
    q->organisation_id.count = (size_t)(k % 3) + (k >= 3);
    for (size_t i = 0; i < q->organisation_id.count; i++)
        q->organisation_id.values[i] = orgs[i];
    if (k >= 4 && k < 8) {
        q->currency.count = (size_t)(k % 2) + 1;
        q->currency.values[0] = gbp;
        q->currency.values[1] = eur;
    }
    if (k == 8 || k == 9) {
        q->reference.count = 1;
        q->reference.values[0] = ref;
    }
    if (k == 10) {
        q->mode = PAYMENT_PAGE_CURSOR;
        q->after_seq = 5;
    }
    if (k == 11) {
        q->mode = PAYMENT_PAGE_OFFSET;
        q->page_size = 4;
        q->page_number = 2;
    }
}

/* The page size of the database file at path, read on a connection of its
 * own; -1 when it cannot be read. */
static int page_size_of(const char *path)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int size = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "PRAGMA page_size", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        size = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    CHECK_INT(sqlite3_close(db), SQLITE_OK);
    return size;
}

/* A store file in a new temporary folder. */
struct tmp_store {
    char dir[32];  /* the folder, removed with its files by tmp_store_remove */
    char path[64]; /* dir/p.db */
    char uri[80];  /* "sqlite:" path */
};

static void tmp_store_make(struct tmp_store *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/paymentd-sqlite-XXXXXX");
    CHECK(mkdtemp(t->dir) != NULL);
    snprintf(t->path, sizeof t->path, "%s/p.db", t->dir);
    snprintf(t->uri, sizeof t->uri, "sqlite:%s", t->path);
}

static void tmp_store_remove(const struct tmp_store *t)
{
    nftw(t->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Reads payment i of create_payments: its store error, and EINTERNAL for an
 * empty document. */
static int get_payment(payment_store *s, int i)
{
    char id[UUID_STR_LEN + 1];
    snprintf(id, sizeof id, "00000000-0000-4000-8000-%012d", i);
    struct buf doc = BUF_INIT;
    int64_t version = -1;
    int err = payment_store_get(s, id, &doc, &version);
    if (err == PAYMENT_STORE_OK && doc.len == 0)
        err = PAYMENT_STORE_EINTERNAL;
    buf_free(&doc);
    return err;
}

/* An exclusive store keeps the write-ahead log's index in its memory: no
 * -shm file appears however much is written and read.  Opened shared, the
 * same file's index is in the -shm file, for other processes to use. */
static void test_exclusive_store_keeps_no_shm(void)
{
    struct tmp_store t;
    tmp_store_make(&t);
    char shm[80];
    snprintf(shm, sizeof shm, "%s-shm", t.path);
    payment_store *s = NULL;
    char err[256];
    CHECK_INT(payment_store_open_with(t.uri, PAYMENT_STORE_EXCLUSIVE, &s, err, sizeof err),
              PAYMENT_STORE_OK);
    if (s) {
        CHECK_INT(create_payments(s, 5), 0);
        CHECK_INT(get_payment(s, 4), PAYMENT_STORE_OK);
        CHECK(access(shm, F_OK) != 0);
        payment_store_close(s);
    }
    /* the same file shared, as with --broker: the index is in the -shm file */
    CHECK_INT(payment_store_open(t.uri, &s, err, sizeof err), PAYMENT_STORE_OK);
    if (s) {
        CHECK_INT(get_payment(s, 4), PAYMENT_STORE_OK);
        CHECK(access(shm, F_OK) == 0);
        payment_store_close(s);
    }
    tmp_store_remove(&t);
}

/* Runs first (SQLite takes global settings only before its first use):
 * after payment_store_init, SQLite keeps no memory statistics, so its
 * allocations take no global mutex; a second call is refused. */
static void test_init_turns_off_memory_statistics(void)
{
    char err[256];
    CHECK_INT(payment_store_init(err, sizeof err), PAYMENT_STORE_OK);
    struct tmp_store t;
    tmp_store_make(&t);
    payment_store *s = NULL;
    CHECK_INT(payment_store_open(t.uri, &s, err, sizeof err), PAYMENT_STORE_OK);
    if (s) {
        CHECK_INT(create_payments(s, 5), 0);
        CHECK_INT(get_payment(s, 0), PAYMENT_STORE_OK);
        sqlite3_int64 used = -1, peak = -1;
        CHECK_INT(sqlite3_status64(SQLITE_STATUS_MEMORY_USED, &used, &peak, 0), SQLITE_OK);
        CHECK(used == 0 && peak == 0); /* counted, these would be hundreds of KB */
        payment_store_close(s);
    }
    CHECK(payment_store_init(err, sizeof err) != PAYMENT_STORE_OK);
    CHECK(err[0] != '\0');
    tmp_store_remove(&t);
}

/* New stores get 8 KiB pages: a payment of a few KB fits one page. */
static void test_new_store_page_size(void)
{
    struct tmp_store t;
    tmp_store_make(&t);
    payment_store *s = NULL;
    char err[256];
    CHECK_INT(payment_store_open(t.uri, &s, err, sizeof err), PAYMENT_STORE_OK);
    if (s) {
        CHECK_INT(create_payments(s, 5), 0);
        payment_store_close(s);
    }
    CHECK_INT(page_size_of(t.path), 8192);
    tmp_store_remove(&t);
}

/* A store made with SQLite's default pages keeps them and works as before. */
static void test_existing_store_keeps_page_size(void)
{
    struct tmp_store t;
    tmp_store_make(&t);
    sqlite3 *db = NULL;
    CHECK_INT(sqlite3_open(t.path, &db), SQLITE_OK);
    CHECK_INT(sqlite3_exec(db, "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL;"
                               "CREATE TABLE t (x)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    payment_store *s = NULL;
    char err[256];
    CHECK_INT(payment_store_open(t.uri, &s, err, sizeof err), PAYMENT_STORE_OK);
    if (s) {
        CHECK_INT(create_payments(s, 5), 0);
        struct buf doc = BUF_INIT;
        int64_t version = -1;
        CHECK_INT(payment_store_get(s, "00000000-0000-4000-8000-000000000004", &doc, &version),
                  PAYMENT_STORE_OK);
        CHECK(doc.data && strncmp(doc.data, "{\"n\":4,", 7) == 0 && doc.len > 5000);
        buf_free(&doc);
        payment_store_close(s);
    }
    CHECK_INT(page_size_of(t.path), 4096);
    tmp_store_remove(&t);
}

/* More query shapes than the reader keeps prepared, round and round: every
 * pass lists the same rows, whether its statement was kept or made again. */
static void test_list_shapes_cycle(void)
{
    struct tmp_store t;
    tmp_store_make(&t);
    payment_store *s = NULL;
    char err[256];
    CHECK_INT(payment_store_open(t.uri, &s, err, sizeof err), PAYMENT_STORE_OK);
    if (!s) {
        tmp_store_remove(&t);
        return;
    }
    CHECK_INT(create_payments(s, 40), 0);
    enum { SHAPES = 12 };
    struct listed first[SHAPES];
    for (int pass = 0; pass < 4; pass++) {
        for (int k = 0; k < SHAPES; k++) {
            /* a different order each pass, so that eviction varies */
            int shape = (k * (pass + 1) * 5) % SHAPES;
            if (pass == 0)
                shape = k;
            struct payment_query q;
            char orgs[3][UUID_STR_LEN + 1];
            query_shape(&q, shape, orgs);
            struct listed l = {0, 0};
            int more = -1;
            CHECK_INT(payment_store_list(s, &q, listed_row, &l, &more), PAYMENT_STORE_OK);
            if (pass == 0) {
                first[shape] = l;
                CHECK(l.n > 0);
            } else {
                CHECK_INT(l.n, first[shape].n);
                CHECK_INT(l.sum, first[shape].sum);
            }
        }
    }
    /* hand-checked: organisation 0 alone (shape 1) holds payments 0, 3, ...,
     * 39; shape 11 is the third page of 4 of all three organisations */
    CHECK_INT(first[1].n, 14);
    CHECK_INT(first[11].n, 4);
    payment_store_close(s);
    tmp_store_remove(&t);
}

TEST_MAIN(TEST(test_init_turns_off_memory_statistics), TEST(test_new_store_page_size),
          TEST(test_existing_store_keeps_page_size), TEST(test_list_shapes_cycle),
          TEST(test_exclusive_store_keeps_no_shm))
