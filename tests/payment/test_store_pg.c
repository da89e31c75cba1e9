/* store_pg: what the PostgreSQL store does beyond the contract cases of
 * test_store.c: its open's failures (the server away or refusing, a URI
 * libpq cannot parse, a schema newer than this build's) and their
 * messages, which never hold the password; both schemes; several stores
 * migrating one schema at once; reads that do not wait for a writer's
 * transaction; and a store that outlives its server's restart.
 *
 * The cases run on the database PAYMENTD_TEST_PG_URI names, each on a
 * fresh schema (store_fixture.h); without it they are reported skipped.
 * The restart case also needs PAYMENTD_TEST_PG_DIR, the folder of that
 * server's tests/pg/pg.sh, and runs the script from the repository's root
 * (the folder the tests run in). */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "payment/store.h"
#include "store_fixture.h"
#include "store_waiter.h"
#include "test.h"

#define PG_DIR_ENV "PAYMENTD_TEST_PG_DIR"
#define PASSWORD "s3cret-Pa55"

/* ---- helpers ----------------------------------------------------------------- */

/* A payment of organisation 1 whose document names its id. */
struct pay {
    struct payment_row row;
    char doc[128];
};

static void pay_init(struct pay *p, int n)
{
    memset(p, 0, sizeof *p);
    snprintf(p->row.id, sizeof p->row.id, "00000000-0000-4000-8000-%012d", n);
    snprintf(p->row.organisation_id, sizeof p->row.organisation_id,
             "0a0a0a0a-0000-4000-8000-000000000001");
    p->row.created_ms = 1000 + n;
    p->row.modified_ms = p->row.created_ms;
    p->row.currency = "GBP";
    int len = snprintf(p->doc, sizeof p->doc, "{\"id\":\"%s\",\"n\":%d}", p->row.id, n);
    p->row.doc = p->doc;
    p->row.doc_len = (size_t)len;
}

static int sync_create(payment_store *s, const struct payment_row *row)
{
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_create(s, row, NULL, NULL, waiter_done, &w);
    waiter_wait(&w);
    return w.err;
}

/* Gets p: the store's answer, the document checked when found. */
static int get_doc(payment_store *s, const struct pay *p)
{
    struct buf b = BUF_INIT;
    int64_t v = -5;
    int err = payment_store_get(s, p->row.id, &b, &v);
    if (err == PAYMENT_STORE_OK) {
        CHECK_INT(v, 0);
        CHECK(b.len == p->row.doc_len && memcmp(b.data, p->row.doc, b.len) == 0);
    }
    buf_free(&b);
    return err;
}

static int count_row(void *arg, const char *doc, size_t len, int64_t seq)
{
    (void)doc, (void)len, (void)seq;
    ++*(int *)arg;
    return 0;
}

/* Lists every payment: the store's answer, the rows counted into *n. */
static int list_all(payment_store *s, int *n)
{
    struct payment_query q;
    memset(&q, 0, sizeof q);
    q.created_from_ms = INT64_MIN;
    q.created_to_ms = INT64_MAX;
    q.page_size = 100;
    q.mode = PAYMENT_PAGE_FIRST;
    int more;
    *n = 0;
    return payment_store_list(s, &q, count_row, n, &more);
}

/* A fresh schema for the case (pg_schema_create): 1, or 0 when the case
 * is skipped (no PostgreSQL) or a check failed. */
static int case_schema(char schema[64], char *uri, size_t len)
{
    if (!pg_base()) {
        TEST_SKIP(PG_URI_ENV " unset: no PostgreSQL to run on");
        return 0;
    }
    return pg_schema_create(schema, uri, len);
}

/* base's URI with user:password@ in place of its user: for URIs the server
 * must refuse. */
static void uri_with_user(char *out, size_t len, const char *base, const char *userinfo)
{
    const char *host = strchr(strstr(base, "://") + 3, '@');
    host = host ? host + 1 : strstr(base, "://") + 3;
    int n = snprintf(out, len, "postgres://%s@%s", userinfo, host);
    CHECK(n > 0 && (size_t)n < len);
}

/* Opens uri and expects it to fail with want, a one-line message without
 * the password. */
static void check_open_fails(const char *uri, int want)
{
    payment_store *s = NULL;
    char err[512] = "";
    int rc = payment_store_open(uri, 0, &s, err, sizeof err);
    if (rc != want)
        fprintf(stderr, "  %s: %d %s\n", uri, rc, err);
    CHECK_INT(rc, want);
    CHECK(s == NULL);
    CHECK(err[0] != '\0' && strchr(err, '\n') == NULL);
    if (strstr(err, PASSWORD))
        fprintf(stderr, "  password in: %s\n", err);
    CHECK(strstr(err, PASSWORD) == NULL);
    payment_store_close(s);
}

/* ---- open ---------------------------------------------------------------------- */

/* A server that does not answer, or refuses the user: EUNAVAILABLE; a URI
 * libpq cannot parse: EURI.  No message holds the password. */
static void pg_open_errors(void)
{
    int64_t t0 = clock_mono_us();
    check_open_fails("postgres://paymentd:" PASSWORD "@127.0.0.1:1/paymentd",
                     PAYMENT_STORE_EUNAVAILABLE);
    check_open_fails("postgresql://paymentd@127.0.0.1:1/paymentd?password=" PASSWORD
                     "&sslmode=disable",
                     PAYMENT_STORE_EUNAVAILABLE);
    CHECK(clock_mono_us() - t0 < 2000000); /* refused at once, not a timeout */
    check_open_fails("postgres://paymentd:" PASSWORD "@127.0.0.1:1/paymentd?no_such_option=1",
                     PAYMENT_STORE_EURI);
    check_open_fails("postgres://paymentd:" PASSWORD "%zz@127.0.0.1:1/paymentd",
                     PAYMENT_STORE_EURI);
    check_open_fails("postgres:paymentd:" PASSWORD "@127.0.0.1:1/paymentd", PAYMENT_STORE_EURI);
    check_open_fails("PostgreSQL:/paymentd:" PASSWORD "@127.0.0.1:1/paymentd",
                     PAYMENT_STORE_EURI);
    check_open_fails("postgress://paymentd:" PASSWORD "@127.0.0.1:1/paymentd",
                     PAYMENT_STORE_EURI);
    check_open_fails("host=127.0.0.1 password=" PASSWORD, PAYMENT_STORE_EURI);
    if (!pg_base()) {
        TEST_SKIP(PG_URI_ENV " unset: no PostgreSQL to refuse a user");
        return;
    }
    char uri[512];
    uri_with_user(uri, sizeof uri, pg_base(), "no_such_user:" PASSWORD);
    check_open_fails(uri, PAYMENT_STORE_EUNAVAILABLE);
}

/* postgresql:// and a scheme in capitals open the store postgres:// does. */
static void pg_schemes(void)
{
    char schema[64], uri[512];
    if (!case_schema(schema, uri, sizeof uri))
        return;
    CHECK(strncmp(uri, "postgres://", 11) == 0);
    const char *rest = uri + strlen("postgres://");
    char other[600];
    const char *schemes[] = {"postgresql", "POSTGRESQL", "Postgres", "postgres"};
    struct pay p;
    for (int i = 0; i < 4; i++) {
        snprintf(other, sizeof other, "%s://%s", schemes[i], rest);
        payment_store *s = NULL;
        char err[256] = "";
        CHECK_INT(payment_store_open(other, 0, &s, err, sizeof err), PAYMENT_STORE_OK);
        if (!s) {
            fprintf(stderr, "  %s: %s\n", other, err);
            continue;
        }
        CHECK(payment_store_may_block(s));
        pay_init(&p, i + 1);
        CHECK_INT(sync_create(s, &p.row), PAYMENT_STORE_OK);
        int n = -1;
        CHECK_INT(list_all(s, &n), PAYMENT_STORE_OK);
        CHECK_INT(n, i + 1); /* one schema: each store sees the payments of those before */
        CHECK_INT(get_doc(s, &p), PAYMENT_STORE_OK);
        payment_store_close(s);
    }
    pg_schema_drop(schema);
}

struct opener {
    const char *uri;
    pthread_barrier_t *start;
    int rc;
    char err[256];
};

static void *opener_run(void *arg)
{
    struct opener *o = arg;
    payment_store *s = NULL;
    int rc = pthread_barrier_wait(o->start);
    CHECK(rc == 0 || rc == PTHREAD_BARRIER_SERIAL_THREAD);
    o->rc = payment_store_open(o->uri, 0, &s, o->err, sizeof o->err);
    if (s) {
        o->rc = payment_store_ping(s) != PAYMENT_STORE_OK ? -1000 : o->rc;
        payment_store_close(s);
    }
    return NULL;
}

/* Four stores opened at once on a new schema: each migrates it or finds it
 * migrated, none fails, and the schema holds one version. */
static void pg_concurrent_opens(void)
{
    char schema[64], uri[512];
    if (!case_schema(schema, uri, sizeof uri))
        return;
    enum { N = 4 };
    pthread_barrier_t start;
    CHECK_INT(pthread_barrier_init(&start, NULL, N), 0);
    struct opener o[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        o[i] = (struct opener){.uri = uri, .start = &start, .rc = 1};
        CHECK_INT(pthread_create(&t[i], NULL, opener_run, &o[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        CHECK_INT(pthread_join(t[i], NULL), 0);
        if (o[i].rc != PAYMENT_STORE_OK)
            fprintf(stderr, "  open %d: %d %s\n", i, o[i].rc, o[i].err);
        CHECK_INT(o[i].rc, PAYMENT_STORE_OK);
    }
    CHECK_INT(pthread_barrier_destroy(&start), 0);
    /* One row, the current version: the check fails when there are two. */
    CHECK(pg_test_exec(uri, "DO $$ BEGIN IF (SELECT count(*) FROM paymentd_schema) <> 1 THEN"
                            " RAISE 'paymentd_schema rows'; END IF; END $$"));
    pg_schema_drop(schema);
}

/* A schema newer than this build's is refused: EURI, one clear line. */
static void pg_newer_schema(void)
{
    char schema[64], uri[512];
    if (!case_schema(schema, uri, sizeof uri))
        return;
    payment_store *s = NULL;
    char err[256] = "";
    CHECK_INT(payment_store_open(uri, 0, &s, err, sizeof err), PAYMENT_STORE_OK);
    payment_store_close(s);
    CHECK(pg_test_exec(uri, "UPDATE paymentd_schema SET version = version + 1"));
    s = NULL;
    CHECK_INT(payment_store_open(uri, 0, &s, err, sizeof err), PAYMENT_STORE_EURI);
    CHECK(s == NULL);
    CHECK(strstr(err, "newer") != NULL && strstr(err, "upgrade paymentd") != NULL);
    CHECK(strchr(err, '\n') == NULL);
    payment_store_close(s);
    pg_schema_drop(schema);
}

/* ---- reads ---------------------------------------------------------------------- */

/* While another session holds a write transaction (the write lock, feed_meta
 * 'pos', taken and a payment inserted), reads answer at once and do not
 * see its row. */
static void case_reads_do_not_wait(struct fixture *fx)
{
    struct pay a, b;
    pay_init(&a, 1);
    pay_init(&b, 2);
    CHECK_INT(sync_create(fx->s, &a.row), PAYMENT_STORE_OK);
    PGconn *c = PQconnectdb(fx->uri);
    CHECK(c && PQstatus(c) == CONNECTION_OK);
    PGresult *r = PQexec(c, "BEGIN; SELECT value FROM feed_meta WHERE key = 'pos' FOR UPDATE;"
                            "INSERT INTO payments (seq, id, organisation_id, version, created_ms,"
                            " modified_ms, doc) VALUES (1000,"
                            " '00000000-0000-4000-8000-000000000002', 'x', 0, 0, 0, '{}')");
    CHECK(r && PQresultStatus(r) == PGRES_COMMAND_OK);
    PQclear(r);
    int64_t t0 = clock_mono_us();
    CHECK_INT(payment_store_ping(fx->s), PAYMENT_STORE_OK);
    CHECK_INT(get_doc(fx->s, &a), PAYMENT_STORE_OK);
    CHECK_INT(get_doc(fx->s, &b), PAYMENT_STORE_ENOTFOUND);
    int n = -1;
    CHECK_INT(list_all(fx->s, &n), PAYMENT_STORE_OK);
    CHECK_INT(n, 1);
    CHECK(clock_mono_us() - t0 < 1000000);
    r = PQexec(c, "ROLLBACK");
    CHECK(r && PQresultStatus(r) == PGRES_COMMAND_OK);
    PQclear(r);
    PQfinish(c);
}

static void pg_reads_do_not_wait(void)
{
    run_on_pg(case_reads_do_not_wait);
}

/* ---- the server's restart ---------------------------------------------------- */

/* Runs tests/pg/pg.sh cmd on the test server's folder: 1 when it succeeded. */
static int pg_script(const char *cmd)
{
    char line[600];
    snprintf(line, sizeof line, "tests/pg/pg.sh %s '%s' >/dev/null", cmd, getenv(PG_DIR_ENV));
    int rc = system(line);
    if (rc != 0)
        fprintf(stderr, "  %s: %d\n", line, rc);
    return rc == 0;
}

/* Calls the store until ping answers (at most 10 s): its answer. */
static int ping_until_up(payment_store *s)
{
    int err = PAYMENT_STORE_EUNAVAILABLE;
    for (int i = 0; i < 100 && err != PAYMENT_STORE_OK; i++) {
        err = payment_store_ping(s);
        if (err != PAYMENT_STORE_OK)
            usleep(100000);
    }
    return err;
}

/* The server stops: every call answers EUNAVAILABLE, promptly; it starts
 * again: the same store reads and writes, its connections made again. */
static void case_server_restart(struct fixture *fx)
{
    struct pay a, b;
    pay_init(&a, 1);
    pay_init(&b, 2);
    CHECK_INT(sync_create(fx->s, &a.row), PAYMENT_STORE_OK);
    CHECK_INT(get_doc(fx->s, &a), PAYMENT_STORE_OK); /* this thread's reader connected */
    if (!pg_script("stop"))
        return;
    int64_t t0 = clock_mono_us();
    int n = -1;
    CHECK_INT(payment_store_ping(fx->s), PAYMENT_STORE_EUNAVAILABLE);
    CHECK_INT(get_doc(fx->s, &a), PAYMENT_STORE_EUNAVAILABLE);
    CHECK_INT(list_all(fx->s, &n), PAYMENT_STORE_EUNAVAILABLE);
    CHECK_INT(sync_create(fx->s, &b.row), PAYMENT_STORE_EUNAVAILABLE);
    CHECK(clock_mono_us() - t0 < 5000000);
    CHECK(pg_script("start"));
    CHECK_INT(ping_until_up(fx->s), PAYMENT_STORE_OK);
    CHECK_INT(get_doc(fx->s, &a), PAYMENT_STORE_OK);
    CHECK_INT(get_doc(fx->s, &b), PAYMENT_STORE_ENOTFOUND);
    int err = PAYMENT_STORE_EUNAVAILABLE;
    for (int i = 0; i < 50 && err == PAYMENT_STORE_EUNAVAILABLE; i++) {
        err = sync_create(fx->s, &b.row); /* the writer reconnects on its next batch */
        if (err == PAYMENT_STORE_EUNAVAILABLE)
            usleep(100000);
    }
    CHECK_INT(err, PAYMENT_STORE_OK);
    CHECK_INT(get_doc(fx->s, &b), PAYMENT_STORE_OK);
    CHECK_INT(list_all(fx->s, &n), PAYMENT_STORE_OK);
    CHECK_INT(n, 2);
}

/* A read after the restart, with no call while the server was away: the
 * reader's lost connection is found by the read itself, which answers
 * (the read made again on a new connection) instead of EUNAVAILABLE. */
static void case_restart_unnoticed(struct fixture *fx)
{
    struct pay a;
    pay_init(&a, 1);
    CHECK_INT(sync_create(fx->s, &a.row), PAYMENT_STORE_OK);
    CHECK_INT(get_doc(fx->s, &a), PAYMENT_STORE_OK);
    if (!pg_script("stop"))
        return;
    CHECK(pg_script("start"));
    CHECK_INT(get_doc(fx->s, &a), PAYMENT_STORE_OK);
    int n = -1;
    CHECK_INT(list_all(fx->s, &n), PAYMENT_STORE_OK);
    CHECK_INT(n, 1);
}

static void pg_server_restart(void)
{
    if (!getenv(PG_DIR_ENV) || !pg_base()) {
        TEST_SKIP(PG_DIR_ENV " or " PG_URI_ENV " unset: no server of tests/pg/pg.sh to restart");
        return;
    }
    run_on_pg(case_server_restart);
    run_on_pg(case_restart_unnoticed);
}

TEST_MAIN(TEST(pg_open_errors), TEST(pg_schemes), TEST(pg_concurrent_opens), TEST(pg_newer_schema),
          TEST(pg_reads_do_not_wait), TEST(pg_server_restart))
