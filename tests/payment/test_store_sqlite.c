/* What is particular to the embedded store beyond the contract test_store.c
 * checks on every backend: the page size of new stores, stores made with
 * another page size, list statements kept prepared per query shape, the
 * idempotency purge in small transactions between writes, the migration of
 * older stores, and online backups. */
#include <dirent.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "payment/store.h"
#include "store_waiter.h"
#include "test.h"

/* Creates payments base..base+n-1: organisation i % 3, currency GBP or EUR
 * by parity, reference "ref-<i % 4>"; each document is {"n":i,"pad":"..."},
 * a few KB like a real payment.  Returns the count that failed. */
static int create_payments_from(payment_store *s, int base, int n)
{
    struct waiter w;
    waiter_init(&w, n);
    struct payment_row *rows = calloc((size_t)n, sizeof *rows);
    char(*docs)[6000] = calloc((size_t)n, sizeof *docs);
    char(*refs)[16] = calloc((size_t)n, sizeof *refs);
    if (!rows || !docs || !refs) {
        free(rows);
        free(docs);
        free(refs);
        return n;
    }
    for (int k = 0; k < n; k++) {
        int i = base + k;
        struct payment_row *r = &rows[k];
        snprintf(r->id, sizeof r->id, "00000000-0000-4000-8000-%012d", i);
        snprintf(r->organisation_id, sizeof r->organisation_id, "0a0a0a0a-0000-4000-8000-%012d",
                 i % 3);
        r->currency = i % 2 ? "EUR" : "GBP";
        snprintf(refs[k], sizeof refs[k], "ref-%d", i % 4);
        r->reference = refs[k];
        r->created_ms = r->modified_ms = 1000 + i;
        int len = snprintf(docs[k], sizeof docs[k], "{\"n\":%d,\"pad\":\"%5000d\"}", i, i);
        r->doc = docs[k];
        r->doc_len = (size_t)len;
        payment_store_create(s, r, NULL, NULL, waiter_done, &w);
    }
    waiter_wait(&w);
    free(rows);
    free(docs);
    free(refs);
    return w.failed;
}

static int create_payments(payment_store *s, int n)
{
    return create_payments_from(s, 0, n);
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
    rm_tree(t->dir);
}

/* Makes t and opens a store there: the store, or NULL (a failed check) with
 * t removed. */
static payment_store *tmp_store_open(struct tmp_store *t)
{
    tmp_store_make(t);
    payment_store *s = NULL;
    char err[256];
    CHECK_INT(payment_store_open(t->uri, 0, &s, err, sizeof err), PAYMENT_STORE_OK);
    if (!s)
        tmp_store_remove(t);
    return s;
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
    CHECK_INT(payment_store_open(t.uri, PAYMENT_STORE_EXCLUSIVE, &s, err, sizeof err),
              PAYMENT_STORE_OK);
    if (s) {
        CHECK_INT(create_payments(s, 5), 0);
        CHECK_INT(get_payment(s, 4), PAYMENT_STORE_OK);
        CHECK(access(shm, F_OK) != 0);
        payment_store_close(s);
    }
    /* the same file shared, as with --broker: the index is in the -shm file */
    CHECK_INT(payment_store_open(t.uri, 0, &s, err, sizeof err), PAYMENT_STORE_OK);
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
    CHECK_INT(payment_store_open(t.uri, 0, &s, err, sizeof err), PAYMENT_STORE_OK);
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
    CHECK_INT(payment_store_open(t.uri, 0, &s, err, sizeof err), PAYMENT_STORE_OK);
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
    CHECK_INT(payment_store_open(t.uri, 0, &s, err, sizeof err), PAYMENT_STORE_OK);
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
    payment_store *s = tmp_store_open(&t);
    if (!s)
        return;
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

/* ---- the idempotency purge ------------------------------------------------ */

/* A payment_store_event_fn counting into *(int *)arg. */
static int tally_event(void *arg, const struct payment_event *ev)
{
    CHECK(ev->pos > 0);
    (*(int *)arg)++;
    return 0;
}

/* Updates row from expected and waits: its store error. */
static int update_row(payment_store *s, const struct payment_row *row, int64_t expected)
{
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_update(s, row, expected, NULL, NULL, waiter_done, &w);
    waiter_wait(&w);
    return w.err;
}

/* A payment_store_event_fn that reads and keeps nothing. */
static int drop_event(void *arg, const struct payment_event *ev)
{
    (void)arg;
    CHECK(ev->pos > 0);
    return 0;
}

static double now_ms(void)
{
    struct timespec ts;
    CHECK_INT(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* What bulk_insert binds to each row: ?1 a text made of prefix and the
 * row's number, ?2 time_ms, ?3 len bytes of fill (a blob or a text). */
struct bulk_row {
    const char *prefix; /* printf format of ?1, taking the row's number */
    int64_t time_ms;
    char fill;
    size_t len;
    int fill_is_text;
};

/* Runs insert, an INSERT of parameters ?1..?3 as row says, once for each
 * number first..first + n - 1, in one transaction on a connection of the
 * test's own (the store is open and idle: it shares the file).  Returns
 * the SQLite result. */
static int bulk_insert(const char *path, const char *insert, int first, int n,
                       const struct bulk_row *row)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *ins = NULL;
    char *fill = malloc(row->len);
    int rc = fill ? sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) : SQLITE_NOMEM;
    if (fill)
        memset(fill, row->fill, row->len);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(db, 10000);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, insert, -1, &ins, NULL);
    for (int i = first; rc == SQLITE_OK && i < first + n; i++) {
        char text[64];
        snprintf(text, sizeof text, row->prefix, i);
        rc = sqlite3_bind_text(ins, 1, text, -1, SQLITE_TRANSIENT);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(ins, 2, row->time_ms);
        if (rc == SQLITE_OK)
            rc = row->fill_is_text ? sqlite3_bind_text(ins, 3, fill, (int)row->len, SQLITE_STATIC)
                                   : sqlite3_bind_blob(ins, 3, fill, (int)row->len, SQLITE_STATIC);
        if (rc == SQLITE_OK && sqlite3_step(ins) != SQLITE_DONE)
            rc = sqlite3_errcode(db);
        (void)sqlite3_reset(ins);
    }
    (void)sqlite3_finalize(ins);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (db && sqlite3_close(db) != SQLITE_OK && rc == SQLITE_OK)
        rc = SQLITE_ERROR;
    free(fill);
    return rc;
}

/* Inserts idempotency records "key-<first>".. created at created_ms, each
 * with a body of body_len bytes (bulk_insert).  Returns the SQLite result. */
static int insert_idem_records(const char *path, int first, int n, size_t body_len,
                               int64_t created_ms)
{
    const struct bulk_row row = {"key-%d", created_ms, 'b', body_len, 0};
    return bulk_insert(path,
                       "INSERT INTO idempotency (scope, key, fingerprint, status,"
                       " location, etag, body, created_ms)"
                       " VALUES ('s', ?1, 'fp', 201, '/v1/payments/x', '\"0\"', ?3, ?2)",
                       first, n, &row);
}

/* The number of rows of table, or -1. */
static long long count_rows(sqlite3 *db, const char *table)
{
    char sql[64];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    sqlite3_stmt *st = NULL;
    long long n = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    (void)sqlite3_finalize(st);
    return n;
}

/* Creates row with idem (or NULL) and waits: its store error. */
static int create_row(payment_store *s, const struct payment_row *row,
                      const struct payment_idem *idem)
{
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_create(s, row, idem, NULL, waiter_done, &w);
    waiter_wait(&w);
    return w.err;
}

/* Creates payment number i (an id of its own, a small document) and waits:
 * its store error. */
static int create_one(payment_store *s, int i)
{
    struct payment_row r;
    memset(&r, 0, sizeof r);
    snprintf(r.id, sizeof r.id, "11111111-0000-4000-8000-%012d", i);
    snprintf(r.organisation_id, sizeof r.organisation_id, "0a0a0a0a-0000-4000-8000-000000000000");
    r.created_ms = r.modified_ms = 1000;
    char doc[64];
    r.doc_len = (size_t)snprintf(doc, sizeof doc, "{\"n\":%d}", i);
    r.doc = doc;
    return create_row(s, &r, NULL);
}

/* The size of a purge test: the environment's name, else dflt; at least
 * 1000. */
static int purge_size(const char *name, int dflt)
{
    const char *env = getenv(name);
    int n = env ? atoi(env) : dflt;
    return n < 1000 ? 1000 : n;
}

/* Writes payments to s one after another while a purge submitted at start
 * (now_ms) runs, until the rows `rows` counts in db (a table, with a WHERE
 * clause or not) are down from total to left, or for at most 300 s; then
 * checks that they are, and that the writes saw the purge part done at 5
 * points at least, and prints how long it took and the longest write.  what
 * names the rows in that line. */
static void check_writes_through_purge(payment_store *s, sqlite3 *db, const char *rows,
                                       long long total, long long left, double start,
                                       const char *what)
{
    double longest = 0;
    int writes = 0, partway = 0;
    long long now_left = total, last = -1;
    while (now_left > left && now_ms() - start < 300e3) {
        double t0 = now_ms();
        CHECK_INT(create_one(s, writes), PAYMENT_STORE_OK);
        double took = now_ms() - t0;
        longest = took > longest ? took : longest;
        writes++;
        now_left = count_rows(db, rows);
        CHECK(now_left >= left);
        /* a write completed while the purge was part done, at a new point */
        if (now_left > left && now_left < total && now_left != last)
            partway++;
        last = now_left;
    }
    double purge_ms = now_ms() - start;
    CHECK_INT(now_left, left);
    CHECK(partway >= 5);
    fprintf(stderr, "  purge of %lld %s: %.0f ms, %d writes meanwhile (%d seeing it part done),"
                    " longest write %.1f ms\n",
            total - left, what, purge_ms, writes, partway, longest);
}

/* A large purge does not hold up writes: it runs in small transactions
 * between the writer's batches, so writes submitted one after another
 * while it runs keep completing, and the test sees the purge part done
 * between them, over many writer turns; at the end every old record is
 * gone and the newer ones stay.  The record count is
 * PAYMENTD_TEST_PURGE_RECORDS (default 20000); the longest write and the
 * purge's duration are printed. */
static void test_purge_lets_writes_through(void)
{
    int n = purge_size("PAYMENTD_TEST_PURGE_RECORDS", 20000);
    struct tmp_store t;
    payment_store *s = tmp_store_open(&t);
    if (!s)
        return;
    CHECK_INT(insert_idem_records(t.path, 0, n, 1024, 1000), SQLITE_OK);
    CHECK_INT(insert_idem_records(t.path, n, 10, 1024, 5000), SQLITE_OK); /* kept */
    sqlite3 *db = NULL;
    CHECK_INT(sqlite3_open_v2(t.path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    CHECK_INT(count_rows(db, "idempotency"), n + 10);

    double start = now_ms();
    payment_store_idem_purge(s, 2000);
    check_writes_through_purge(s, db, "idempotency", n + 10, 10, start, "records");
    struct payment_idem_found f = {.location = BUF_INIT, .body = BUF_INIT};
    CHECK_INT(payment_store_idem_get(s, "s", "key-0", &f), PAYMENT_STORE_ENOTFOUND);
    char kept[32];
    snprintf(kept, sizeof kept, "key-%d", n);
    CHECK_INT(payment_store_idem_get(s, "s", kept, &f), PAYMENT_STORE_OK);
    CHECK_INT(f.body.len, 1024);
    buf_free(&f.location);
    buf_free(&f.body);
    CHECK_INT(sqlite3_close(db), SQLITE_OK);
    payment_store_close(s);
    tmp_store_remove(&t);
}

/* Inserts n events of payments first.. (ids below "1"; "2..." for kept
 * ones, when kept), version 0, occurred at occurred_ms, each with a
 * document of doc_len bytes (bulk_insert).  Returns the SQLite result. */
static int insert_events(const char *path, int first, int n, int kept, size_t doc_len,
                         int64_t occurred_ms)
{
    const struct bulk_row row = {kept ? "22222222-0000-4000-8000-%012d"
                                      : "00000000-0000-4000-8000-%012d",
                                 occurred_ms, 'd', doc_len, 1};
    return bulk_insert(path,
                       "INSERT INTO events (id, payment_id, organisation_id, version,"
                       " type, occurred_ms, doc) VALUES ('01890000-0000-7000-8000-"
                       "000000000000', ?1, '0a0a0a0a-0000-4000-8000-000000000000', 0,"
                       " 1, ?2, ?3)",
                       first, n, &row);
}

/* The events purge does not hold up writes either: a history purge of
 * many events (PAYMENTD_TEST_PURGE_EVENTS, default 5000, of 4 KB) runs in
 * small transactions between the writer's batches, so writes submitted one
 * after another keep completing and see it part done, over many turns; at
 * the end the old events are gone, the newer ones stay, and a cursor
 * before them has expired. */
static void test_events_purge_lets_writes_through(void)
{
    int n = purge_size("PAYMENTD_TEST_PURGE_EVENTS", 5000);
    struct tmp_store t;
    payment_store *s = tmp_store_open(&t);
    if (!s)
        return;
    CHECK_INT(insert_events(t.path, 0, n, 0, 4096, 1000), SQLITE_OK);
    CHECK_INT(insert_events(t.path, 0, 10, 1, 4096, 5000), SQLITE_OK); /* kept */
    sqlite3 *db = NULL;
    CHECK_INT(sqlite3_open_v2(t.path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    const char *old = "events WHERE payment_id < '1'";
    CHECK_INT(count_rows(db, old), n);

    double start = now_ms();
    payment_store_events_purge(s, 2000, 2000);
    check_writes_through_purge(s, db, old, n, 0, start, "events");
    CHECK_INT(count_rows(db, "events WHERE payment_id LIKE '2%'"), 10);
    struct payment_event_query q = {.after_pos = 1, .limit = 10, .all_orgs = 1,
                                    .from_ms = INT64_MIN, .to_ms = INT64_MAX};
    int64_t next;
    CHECK_INT(payment_store_events(s, &q, drop_event, NULL, &next), PAYMENT_STORE_EEXPIRED);
    q.after_pos = n;
    CHECK_INT(payment_store_events(s, &q, drop_event, NULL, &next), PAYMENT_STORE_OK);
    CHECK_INT(sqlite3_close(db), SQLITE_OK);
    payment_store_close(s);
    tmp_store_remove(&t);
}

/* ---- migration ------------------------------------------------------------ */

/* The schema of version 4 (the last with idempotency records in a WITHOUT
 * ROWID table), as released. */
static const char store_v4_sql[] =
    "CREATE TABLE payments (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,"
    " organisation_id TEXT NOT NULL, version INTEGER NOT NULL, created_ms INTEGER NOT NULL,"
    " modified_ms INTEGER NOT NULL, currency TEXT, payment_scheme TEXT, payment_type TEXT,"
    " reference TEXT, end_to_end_reference TEXT, processing_date TEXT, amount_key TEXT, doc TEXT,"
    " deleted INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX payments_organisation ON payments (organisation_id, seq);"
    "CREATE INDEX payments_reference ON payments (reference);"
    "CREATE INDEX payments_end_to_end_reference ON payments (end_to_end_reference);"
    "CREATE TABLE idempotency (scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,"
    " status INTEGER NOT NULL, location TEXT, etag TEXT, body BLOB, created_ms INTEGER NOT NULL,"
    " PRIMARY KEY (scope, key)) WITHOUT ROWID;"
    "CREATE INDEX idempotency_created ON idempotency (created_ms);"
    "CREATE TABLE operations (op_id TEXT PRIMARY KEY NOT NULL, partition INTEGER NOT NULL,"
    " seq INTEGER NOT NULL, status TEXT NOT NULL, error_code TEXT, message TEXT, payment_id TEXT,"
    " organisation_id TEXT, version INTEGER NOT NULL, applied_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE partitions (partition INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL,"
    " fence INTEGER NOT NULL);"
    "ALTER TABLE operations ADD COLUMN fingerprint TEXT;"
    "CREATE INDEX operations_applied ON operations (applied_ms);"
    "INSERT INTO payments (id, organisation_id, version, created_ms, modified_ms, doc)"
    " VALUES ('00000000-0000-4000-8000-000000000001', '0a0a0a0a-0000-4000-8000-000000000000',"
    " 3, 1000, 2000, '{\"n\":1}');"
    "INSERT INTO idempotency VALUES ('k1', 'create-1', 'fp1', 201, '/v1/payments/1', '\"0\"',"
    " X'7b226e223a317d', 1000);"
    "INSERT INTO idempotency VALUES ('k1', 'patch-1', 'fp2', 200, NULL, '\"3\"', NULL, 3000);"
    "INSERT INTO operations VALUES ('op-1', 2, 7, 'succeeded', NULL, NULL,"
    " '00000000-0000-4000-8000-000000000001', '0a0a0a0a-0000-4000-8000-000000000000', 0, 1500,"
    " 'fp3');"
    "INSERT INTO partitions VALUES (2, 7, 4);"
    "PRAGMA user_version = 4;";

/* A store of version 4 opens migrated: its records, payments, operations
 * and positions intact, idempotency records in a rowid table whose
 * (scope, key) still refuses a second record, and purged by age. */
static void test_migrates_version_4(void)
{
    struct tmp_store t;
    tmp_store_make(&t);
    sqlite3 *db = NULL;
    CHECK_INT(sqlite3_open(t.path, &db), SQLITE_OK);
    CHECK_INT(sqlite3_exec(db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL), SQLITE_OK);
    CHECK_INT(sqlite3_exec(db, store_v4_sql, NULL, NULL, NULL), SQLITE_OK);
    CHECK_INT(sqlite3_close(db), SQLITE_OK);

    payment_store *s = NULL;
    char err[256];
    CHECK_INT(payment_store_open(t.uri, 0, &s, err, sizeof err), PAYMENT_STORE_OK);
    if (!s) {
        tmp_store_remove(&t);
        return;
    }
    struct payment_idem_found f = {.location = BUF_INIT, .body = BUF_INIT};
    CHECK_INT(payment_store_idem_get(s, "k1", "create-1", &f), PAYMENT_STORE_OK);
    CHECK_STR(f.fingerprint, "fp1");
    CHECK_INT(f.status, 201);
    CHECK_STR(f.etag, "\"0\"");
    CHECK(f.location.len == 14 && memcmp(f.location.data, "/v1/payments/1", 14) == 0);
    CHECK(f.body.len == 7 && memcmp(f.body.data, "{\"n\":1}", 7) == 0);
    buf_free(&f.location);
    buf_free(&f.body);
    memset(&f, 0, sizeof f);
    CHECK_INT(payment_store_idem_get(s, "k1", "patch-1", &f), PAYMENT_STORE_OK);
    CHECK_STR(f.fingerprint, "fp2");
    CHECK_INT(f.status, 200);
    CHECK_INT(f.location.len, 0);
    CHECK_INT(f.body.len, 0);
    buf_free(&f.location);
    buf_free(&f.body);
    struct buf doc = BUF_INIT;
    int64_t version = -1;
    CHECK_INT(payment_store_get(s, "00000000-0000-4000-8000-000000000001", &doc, &version),
              PAYMENT_STORE_OK);
    CHECK_INT(version, 3);
    CHECK(doc.len == 7 && memcmp(doc.data, "{\"n\":1}", 7) == 0);
    buf_free(&doc);
    struct payment_op_found op;
    CHECK_INT(payment_store_op_get(s, "op-1", &op), PAYMENT_STORE_OK);
    CHECK_STR(op.fingerprint, "fp3");
    uint64_t last_seq = 0, fence = 0;
    CHECK_INT(payment_store_partition_get(s, 2, &last_seq, &fence), PAYMENT_STORE_OK);
    CHECK(last_seq == 7 && fence == 4);

    /* the key is still taken: a write with it is refused and not made */
    struct payment_row r;
    memset(&r, 0, sizeof r);
    snprintf(r.id, sizeof r.id, "00000000-0000-4000-8000-000000000002");
    snprintf(r.organisation_id, sizeof r.organisation_id, "0a0a0a0a-0000-4000-8000-000000000000");
    r.doc = "{}";
    r.doc_len = 2;
    struct payment_idem idem = {.scope = "k1", .key = "create-1", .fingerprint = "fp9",
                                .status = 201, .created_ms = 4000};
    CHECK_INT(create_row(s, &r, &idem), PAYMENT_STORE_EIDEMPOTENT);
    doc = (struct buf)BUF_INIT;
    CHECK_INT(payment_store_get(s, r.id, &doc, &version), PAYMENT_STORE_ENOTFOUND);
    buf_free(&doc);

    /* the feed starts empty (a payment written before has no history), and
     * the next write of a payment records its event */
    struct payment_event_query q = {.limit = 10, .all_orgs = 1, .from_ms = INT64_MIN,
                                    .to_ms = INT64_MAX};
    int64_t next = -1;
    int events = 0;
    CHECK_INT(payment_store_events(s, &q, tally_event, &events, &next), PAYMENT_STORE_OK);
    CHECK_INT(events, 0);
    CHECK_INT(next, 0);
    snprintf(r.id, sizeof r.id, "00000000-0000-4000-8000-000000000001");
    r.version = 4;
    CHECK_INT(update_row(s, &r, 3), PAYMENT_STORE_OK);
    int more = -1;
    CHECK_INT(payment_store_history(s, r.id, -1, 10, tally_event, &events, &more),
              PAYMENT_STORE_OK);
    CHECK_INT(events, 1);

    /* purged by age from the new table */
    payment_store_idem_purge(s, 2000);
    memset(&f, 0, sizeof f);
    for (int i = 0; i < 500 && payment_store_idem_get(s, "k1", "create-1", &f) == 0; i++) {
        buf_free(&f.location);
        buf_free(&f.body);
        memset(&f, 0, sizeof f);
        CHECK_INT(usleep(10000), 0);
    }
    CHECK_INT(payment_store_idem_get(s, "k1", "create-1", &f), PAYMENT_STORE_ENOTFOUND);
    CHECK_INT(payment_store_idem_get(s, "k1", "patch-1", &f), PAYMENT_STORE_OK);
    buf_free(&f.location);
    buf_free(&f.body);
    payment_store_close(s);

    CHECK_INT(sqlite3_open_v2(t.path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    CHECK_INT(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    CHECK_INT(sqlite3_step(st), SQLITE_ROW);
    CHECK(sqlite3_column_int(st, 0) > 4);
    (void)sqlite3_finalize(st);
    /* a rowid table: its b-tree is keyed by rowid, not by (scope, key) */
    CHECK_INT(sqlite3_prepare_v2(db, "SELECT rowid FROM idempotency", -1, &st, NULL), SQLITE_OK);
    (void)sqlite3_finalize(st);
    CHECK_INT(sqlite3_close(db), SQLITE_OK);
    tmp_store_remove(&t);
}

/* ---- online backup -------------------------------------------------------- */

/* Creates payments one after another, from number 1000 up, until stop. */
struct writer_thread {
    payment_store *s;
    pthread_t thread;
    _Atomic int acked;  /* payments 1000 .. 1000 + acked - 1 are created */
    _Atomic int stop;
    int failed;         /* creates that failed */
};

static void *writer_main(void *arg)
{
    struct writer_thread *w = arg;
    while (!atomic_load(&w->stop)) {
        int i = 1000 + atomic_load(&w->acked);
        if (create_one(w->s, i) != PAYMENT_STORE_OK) {
            w->failed++;
            break;
        }
        atomic_fetch_add(&w->acked, 1);
    }
    return NULL;
}

/* Whether any name in dir contains part. */
static int dir_has(const char *dir, const char *part)
{
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    int found = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        found |= strstr(e->d_name, part) != NULL;
    if (d)
        CHECK_INT(closedir(d), 0);
    return found;
}

/* The result of PRAGMA integrity_check on path, opened read-only (a file
 * still in WAL mode cannot be, without its -shm file), into out. */
static void integrity_of(const char *path, char *out, size_t len)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    snprintf(out, len, "(cannot read)");
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        snprintf(out, len, "%s", (const char *)sqlite3_column_text(st, 0));
    (void)sqlite3_finalize(st);
    CHECK_INT(sqlite3_close(db), SQLITE_OK);
}

/* A backup taken while a writer creates payments holds every payment
 * created before it began, in one file a store opens; no temporary file
 * is left behind. */
static void test_backup_while_writing(void)
{
    struct tmp_store t;
    tmp_store_make(&t);
    payment_store *s = NULL;
    char err[256], copy[80], copy_uri[96], side[96];
    snprintf(copy, sizeof copy, "%s/copy.db", t.dir);
    snprintf(copy_uri, sizeof copy_uri, "sqlite:%s", copy);
    CHECK_INT(payment_store_open(t.uri, 0, &s, err, sizeof err), PAYMENT_STORE_OK);
    if (!s) {
        tmp_store_remove(&t);
        return;
    }
    CHECK_INT(create_payments(s, 200), 0); /* about 1 MB, still in the log */
    struct writer_thread w = {.s = s};
    atomic_init(&w.acked, 0);
    atomic_init(&w.stop, 0);
    CHECK_INT(pthread_create(&w.thread, NULL, writer_main, &w), 0);
    while (atomic_load(&w.acked) < 20 && !w.failed)
        CHECK_INT(usleep(1000), 0);
    int before = atomic_load(&w.acked);
    CHECK_INT(payment_store_backup(t.uri, copy, err, sizeof err), PAYMENT_STORE_OK);
    int during = atomic_load(&w.acked) - before;
    atomic_store(&w.stop, 1);
    CHECK_INT(pthread_join(w.thread, NULL), 0);
    CHECK_INT(w.failed, 0);
    payment_store_close(s);
    fprintf(stderr, "  backup: %d writes before it, %d during it\n", before, during);

    static const char *const sides[] = {"-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof sides / sizeof sides[0]; i++) {
        snprintf(side, sizeof side, "%s%s", copy, sides[i]);
        CHECK(access(side, F_OK) != 0);
    }
    CHECK(!dir_has(t.dir, ".tmp-"));
    char check[64];
    integrity_of(copy, check, sizeof check);
    CHECK_STR(check, "ok");
    /* the header's file format bytes: 1, a rollback-journal file, which
     * needs no -wal or -shm file beside it (2 would be WAL mode) */
    unsigned char header[20] = {0};
    FILE *f = fopen(copy, "rb");
    CHECK(f != NULL);
    if (f) {
        CHECK_INT(fread(header, 1, sizeof header, f), sizeof header);
        CHECK_INT(fclose(f), 0);
    }
    CHECK(header[18] == 1 && header[19] == 1);

    CHECK_INT(payment_store_open(copy_uri, 0, &s, err, sizeof err), PAYMENT_STORE_OK);
    if (s) {
        for (int i = 0; i < 200; i++)
            CHECK_INT(get_payment(s, i), PAYMENT_STORE_OK);
        for (int i = 0; i < before; i++) {
            char id[UUID_STR_LEN + 1];
            snprintf(id, sizeof id, "11111111-0000-4000-8000-%012d", 1000 + i);
            struct buf doc = BUF_INIT;
            int64_t version = -1;
            CHECK_INT(payment_store_get(s, id, &doc, &version), PAYMENT_STORE_OK);
            buf_free(&doc);
        }
        payment_store_close(s);
    }
    tmp_store_remove(&t);
}

/* Backups that cannot be made fail with their reason and leave nothing:
 * no store (none is created), a folder that does not exist, the store
 * itself, a MongoDB store; a failed backup keeps the file it would have
 * replaced. */
static void test_backup_failures(void)
{
    struct tmp_store t;
    tmp_store_make(&t);
    char err[256], copy[96], missing[96];
    snprintf(copy, sizeof copy, "%s/copy.db", t.dir);
    CHECK_INT(payment_store_backup(t.uri, copy, err, sizeof err), PAYMENT_STORE_EURI);
    CHECK(strstr(err, "no store") != NULL);
    CHECK(access(t.path, F_OK) != 0);
    CHECK(access(copy, F_OK) != 0);

    payment_store *s = NULL;
    CHECK_INT(payment_store_open(t.uri, 0, &s, err, sizeof err), PAYMENT_STORE_OK);
    if (s) {
        CHECK_INT(create_payments(s, 3), 0);
        payment_store_close(s);
    }
    snprintf(missing, sizeof missing, "%s/no/such/folder/copy.db", t.dir);
    CHECK_INT(payment_store_backup(t.uri, missing, err, sizeof err), PAYMENT_STORE_EINTERNAL);
    CHECK(err[0] != '\0');
    CHECK_INT(payment_store_backup(t.uri, t.path, err, sizeof err), PAYMENT_STORE_EURI);
    CHECK(strstr(err, "store itself") != NULL);
    CHECK_INT(payment_store_backup("mongodb://127.0.0.1:1/x", copy, err, sizeof err),
              PAYMENT_STORE_EURI);

    /* a file where the copy goes stays as it was when the copy fails */
    FILE *f = fopen(copy, "w");
    CHECK(f != NULL);
    if (f) {
        CHECK_INT(fputs("previous", f) >= 0, 1);
        CHECK_INT(fclose(f), 0);
    }
    char not_store[96];
    snprintf(not_store, sizeof not_store, "sqlite:%s/not-a-store", t.dir);
    f = fopen(not_store + 7, "w");
    CHECK(f != NULL);
    if (f) {
        CHECK_INT(fputs("this is not a database, only text long enough to be read as one......"
                        "................................................................", f) >= 0, 1);
        CHECK_INT(fclose(f), 0);
    }
    CHECK_INT(payment_store_backup(not_store, copy, err, sizeof err), PAYMENT_STORE_EURI);
    char back[16] = "";
    f = fopen(copy, "r");
    CHECK(f != NULL);
    if (f) {
        CHECK(fgets(back, sizeof back, f) != NULL);
        CHECK_INT(fclose(f), 0);
    }
    CHECK_STR(back, "previous");
    CHECK(!dir_has(t.dir, ".tmp-"));
    tmp_store_remove(&t);
}

/* A store another process keeps to itself (a server without
 * --store-shared) cannot be copied: EUNAVAILABLE, with the way out in the
 * reason, once the busy timeout is over. */
static void test_backup_of_exclusive_store(void)
{
    struct tmp_store t;
    tmp_store_make(&t);
    char err[256], copy[96];
    snprintf(copy, sizeof copy, "%s/copy.db", t.dir);
    int ready[2], done[2];
    CHECK_INT(pipe(ready), 0);
    CHECK_INT(pipe(done), 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) { /* the holder: opens the store exclusively until told */
        payment_store *s = NULL;
        char c = payment_store_open(t.uri, PAYMENT_STORE_EXCLUSIVE, &s, err, sizeof err) ==
                         PAYMENT_STORE_OK && create_payments(s, 3) == 0
                     ? 'y'
                     : 'n';
        if (write(ready[1], &c, 1) != 1 || read(done[0], &c, 1) != 1)
            _exit(2);
        payment_store_close(s);
        _exit(0);
    }
    char c = 0;
    CHECK_INT(read(ready[0], &c, 1), 1);
    CHECK_INT(c, 'y');
    CHECK_INT(payment_store_backup(t.uri, copy, err, sizeof err), PAYMENT_STORE_EUNAVAILABLE);
    CHECK(strstr(err, "--store-shared true") != NULL);
    CHECK(access(copy, F_OK) != 0);
    CHECK(!dir_has(t.dir, ".tmp-"));
    CHECK_INT(write(done[1], "x", 1), 1);
    int status = -1;
    CHECK_INT(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    for (int i = 0; i < 2; i++) {
        CHECK_INT(close(ready[i]), 0);
        CHECK_INT(close(done[i]), 0);
    }
    /* once it is closed, the same store can be copied */
    CHECK_INT(payment_store_backup(t.uri, copy, err, sizeof err), PAYMENT_STORE_OK);
    tmp_store_remove(&t);
}

/* An offset page skips the rows before it in the index of an organisation's
 * live payments (schema 8): tombstones are not in it, so neither the skipped
 * rows nor the deleted ones are read; and the pages are still right. */
static void test_offset_pages_skip_in_the_index(void)
{
    struct tmp_store t;
    payment_store *s = tmp_store_open(&t);
    if (!s)
        return;
    CHECK_INT(create_payments(s, 300), 0);
    /* payments 0, 30, 60, ... of organisation 0 deleted */
    struct waiter w;
    waiter_init(&w, 10);
    for (int i = 0; i < 300; i += 30) {
        char id[UUID_STR_LEN + 1];
        snprintf(id, sizeof id, "00000000-0000-4000-8000-%012d", i);
        payment_store_delete(s, id, -1, NULL, NULL, waiter_done, &w);
    }
    waiter_wait(&w);
    CHECK_INT(w.failed, 0);
    char org[UUID_STR_LEN + 1] = "0a0a0a0a-0000-4000-8000-000000000000";
    struct payment_query q;
    query_init(&q);
    q.organisation_id.count = 1;
    q.organisation_id.values[0] = org;
    q.mode = PAYMENT_PAGE_OFFSET;
    q.page_size = 20;
    q.page_number = 2;
    struct listed l = {0, 0};
    int more = 0;
    CHECK_INT(payment_store_list(s, &q, listed_row, &l, &more), PAYMENT_STORE_OK);
    /* organisation 0's live payments are 3, 6, ... but not multiples of 30:
     * the 41st to 60th of them */
    long want = 0;
    int live = 0, on_page = 0;
    for (int i = 0; i < 300; i += 3) {
        if (i % 30 == 0)
            continue;
        live++;
        if (live > 40 && live <= 60)
            want += (long)++on_page * i;
    }
    CHECK_INT(l.n, 20);
    CHECK(l.sum == want);
    CHECK_INT(more, 1);
    payment_store_close(s);

    sqlite3 *db = NULL;
    CHECK_INT(sqlite3_open_v2(t.path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    CHECK_INT(sqlite3_prepare_v2(db,
                                 "EXPLAIN QUERY PLAN SELECT seq, doc FROM payments WHERE deleted = 0"
                                 " AND organisation_id IN (?) ORDER BY seq LIMIT ? OFFSET ?",
                                 -1, &st, NULL),
              SQLITE_OK);
    CHECK_INT(sqlite3_step(st), SQLITE_ROW);
    const char *plan = (const char *)sqlite3_column_text(st, 3);
    CHECK(plan && strstr(plan, "USING INDEX payments_organisation_live (organisation_id=?)"));
    (void)sqlite3_finalize(st);
    /* the index holds no tombstone: it is partial */
    CHECK_INT(sqlite3_prepare_v2(db,
                                 "SELECT count(*) FROM payments INDEXED BY payments_organisation_live"
                                 " WHERE deleted = 0 AND organisation_id = ?1",
                                 -1, &st, NULL),
              SQLITE_OK);
    CHECK_INT(sqlite3_bind_text(st, 1, org, -1, SQLITE_STATIC), SQLITE_OK);
    CHECK_INT(sqlite3_step(st), SQLITE_ROW);
    CHECK_INT(sqlite3_column_int(st, 0), 90);
    (void)sqlite3_finalize(st);
    CHECK_INT(sqlite3_close(db), SQLITE_OK);
    tmp_store_remove(&t);
}

/* The write-ahead log is copied into the database file by the store's
 * checkpoint thread while the writer goes on (paymentd_store_checkpoints_total
 * counts them), and stays bounded: the writer finishes a checkpoint itself
 * only when the log passes 2,000 pages.  Every payment is there afterwards,
 * read back from a fresh open of the file. */
static void test_checkpoints_beside_the_writer(void)
{
    struct tmp_store t;
    payment_store *s = tmp_store_open(&t);
    if (!s)
        return;
    char err[256];
    char wal[600];
    snprintf(wal, sizeof wal, "%s-wal", t.path);
    long wal_max = 0;
    for (int round = 0; round < 8; round++) {
        CHECK_INT(create_payments_from(s, round * 150, 150), 0);
        struct stat sb;
        if (stat(wal, &sb) == 0 && sb.st_size > wal_max)
            wal_max = (long)sb.st_size;
    }
    struct payment_store_stats stats;
    /* the thread runs beside the writer: give its last checkpoint a moment */
    for (int i = 0; i < 200; i++) {
        CHECK_INT(payment_store_stats(s, &stats), 0);
        if (stats.checkpoints > 0)
            break;
        usleep(10000);
    }
    CHECK(stats.checkpoints > 0);
    struct stat db;
    CHECK_INT(stat(t.path, &db), 0);
    CHECK(db.st_size > 4 * 1024 * 1024); /* the log reached the file while open */
    /* 2,000 pages of 8 KB and their headers, and one batch past them */
    CHECK(wal_max < 24L * 1024 * 1024);
    payment_store_close(s);
    CHECK_INT(payment_store_open(t.uri, 0, &s, err, sizeof err), PAYMENT_STORE_OK);
    if (s) {
        int missing = 0;
        for (int i = 0; i < 8 * 150; i++)
            missing += get_payment(s, i) != PAYMENT_STORE_OK;
        CHECK_INT(missing, 0);
        payment_store_close(s);
    }
    tmp_store_remove(&t);
}

TEST_MAIN(TEST(test_init_turns_off_memory_statistics), TEST(test_new_store_page_size),
          TEST(test_existing_store_keeps_page_size), TEST(test_list_shapes_cycle),
          TEST(test_offset_pages_skip_in_the_index),
          TEST(test_checkpoints_beside_the_writer),
          TEST(test_exclusive_store_keeps_no_shm), TEST(test_purge_lets_writes_through),
          TEST(test_events_purge_lets_writes_through),
          TEST(test_migrates_version_4), TEST(test_backup_while_writing),
          TEST(test_backup_failures), TEST(test_backup_of_exclusive_store))
