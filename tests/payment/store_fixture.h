/* store_fixture: the runners of the store contract tests, which take a
 * case written against store.h and run it on an opened, empty store: a new
 * SQLite store in a temporary folder, removed afterwards, a fresh
 * database of the MongoDB server PAYMENTD_TEST_MONGO_URI names (such as the
 * test double of tests/mongo/double.py), dropped afterwards, or a fresh
 * schema of the PostgreSQL database PAYMENTD_TEST_PG_URI names (such as the
 * server of tests/pg/pg.sh), dropped afterwards; without the variable the
 * MongoDB or PostgreSQL runs are reported as skipped.  Header-only: each
 * test binary is one file. */
#ifndef TESTS_PAYMENT_STORE_FIXTURE_H
#define TESTS_PAYMENT_STORE_FIXTURE_H

#include <libpq-fe.h>
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "payment/store.h"
#include "store_waiter.h"
#include "test.h"

struct fixture {
    payment_store *s; /* open store, NULL once a case closed it for good */
    char uri[512];    /* opens the same store again */
    unsigned flags;   /* and with these payment_store_open flags */
};

typedef void (*store_case_fn)(struct fixture *fx);

/* Opens the store fx->uri names with fx->flags, runs fn on it and closes
 * it; a failed open is a failed check, its error printed. */
static inline void run_opened(store_case_fn fn, struct fixture *fx)
{
    char err[256] = "";
    int rc = payment_store_open(fx->uri, fx->flags, &fx->s, err, sizeof err);
    CHECK_INT(rc, PAYMENT_STORE_OK);
    if (rc == PAYMENT_STORE_OK) {
        fn(fx);
        payment_store_close(fx->s);
    } else {
        fprintf(stderr, "  open %s: %s\n", fx->uri, err);
    }
}

/* Runs fn on a new SQLite store in a temporary folder, removed afterwards,
 * opened with flags.  The store file sits two folders down, which open must
 * create. */
static inline void run_on_sqlite_with(store_case_fn fn, unsigned flags)
{
    char dir[] = "/tmp/paymentd-store-XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp");
        return;
    }
    struct fixture fx = {.flags = flags};
    snprintf(fx.uri, sizeof fx.uri, "sqlite:%s/data/sub/payments.db", dir);
    run_opened(fn, &fx);
    rm_tree(dir);
}

static inline void run_on_sqlite(store_case_fn fn)
{
    run_on_sqlite_with(fn, 0);
}

/* Defines test sqlite_NAME running case_NAME on a new SQLite store. */
#define SQLITE_CASE(name)                                                                     \
    static void sqlite_##name(void) { run_on_sqlite(case_##name); }

/* Defines test sqlite_excl_NAME: case_NAME on a store this process holds
 * exclusively (main.c's choice without a broker): its readers are other
 * connections than the shared store's, on another VFS. */
#define SQLITE_EXCL_CASE(name)                                                                \
    static void sqlite_excl_##name(void)                                                      \
    {                                                                                         \
        run_on_sqlite_with(case_##name, PAYMENT_STORE_EXCLUSIVE);                             \
    }

/* ---- MongoDB ------------------------------------------------------------ */

#define MONGO_URI_ENV "PAYMENTD_TEST_MONGO_URI"

/* The server the MongoDB cases run on, or NULL (they are reported skipped). */
static inline const char *mongo_base(void)
{
    const char *b = getenv(MONGO_URI_ENV);
    return b && b[0] ? b : NULL;
}

/* base (mongodb://HOSTS[/DB][?OPTS]) naming database db, with opts
 * ("k=v&k=v" or "") added to its options. */
static inline void mongo_uri_for(char *out, size_t len, const char *base, const char *db, const char *opts)
{
    const char *hosts = strstr(base, "://");
    hosts = hosts ? hosts + 3 : base;
    size_t hlen = strcspn(hosts, "/?");
    const char *q = strchr(hosts + hlen, '?');
    const char *old = q ? q + 1 : "";
    int n = snprintf(out, len, "%.*s/%s%s%s%s%s", (int)(hosts + hlen - base), base, db,
                     old[0] || opts[0] ? "?" : "", old, old[0] && opts[0] ? "&" : "", opts);
    CHECK(n > 0 && (size_t)n < len);
}

/* A database name no other case or run uses. */
static inline void mongo_db_name(char out[64])
{
    snprintf(out, 64, "paymentd_test_%ld_%lld", (long)getpid(), (long long)clock_mono_us());
}

/* Runs cmd on db with a client of its own; reply is always initialized. */
static inline int mongo_command(const char *db, const bson_t *cmd, bson_t *reply)
{
    bson_error_t e;
    mongoc_init(); /* idempotent; a store's open also calls it */
    mongoc_client_t *c = mongoc_client_new(mongo_base());
    CHECK(c != NULL);
    if (!c) {
        bson_init(reply);
        return 0;
    }
    CHECK(mongoc_client_set_error_api(c, MONGOC_ERROR_API_VERSION_2));
    int ok = mongoc_client_command_simple(c, db, cmd, NULL, reply, &e);
    mongoc_client_destroy(c);
    return ok;
}

static inline void mongo_drop(const char *db)
{
    bson_t *cmd = BCON_NEW("dropDatabase", BCON_INT32(1)), reply;
    CHECK(mongo_command(db, cmd, &reply));
    bson_destroy(&reply);
    bson_destroy(cmd);
}

/* Runs fn on a new database of the server PAYMENTD_TEST_MONGO_URI names. */
static inline void run_on_mongo(store_case_fn fn)
{
    if (!mongo_base()) {
        TEST_SKIP(MONGO_URI_ENV " unset: no MongoDB to run on");
        return;
    }
    char db[64];
    mongo_db_name(db);
    struct fixture fx = {0};
    mongo_uri_for(fx.uri, sizeof fx.uri, mongo_base(), db, "");
    run_opened(fn, &fx);
    mongo_drop(db);
}

/* ---- PostgreSQL ----------------------------------------------------------- */

#define PG_URI_ENV "PAYMENTD_TEST_PG_URI"

/* The database the PostgreSQL cases run on, or NULL (they are reported
 * skipped). */
static inline const char *pg_base(void)
{
    const char *b = getenv(PG_URI_ENV);
    return b && b[0] ? b : NULL;
}

static inline void pg_test_notice_drop(void *arg, const char *message)
{
    (void)arg;
    (void)message; /* "drop cascades to 12 other objects" */
}

/* Runs sql on the database uri names with a connection of its own: 1 when
 * the server ran it, else 0 with the reason printed. */
static inline int pg_test_exec(const char *uri, const char *sql)
{
    PGconn *c = PQconnectdb(uri);
    int ok = c && PQstatus(c) == CONNECTION_OK;
    if (!ok) {
        fprintf(stderr, "  connect %s: %s", uri, c ? PQerrorMessage(c) : "out of memory\n");
        PQfinish(c);
        return 0;
    }
    (void)PQsetNoticeProcessor(c, pg_test_notice_drop, NULL); /* returns the one before */
    PGresult *r = PQexec(c, sql);
    ExecStatusType status = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    ok = status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "  %s: %s", sql, r ? PQresultErrorMessage(r) : PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return ok;
}

/* A schema (namespace) name no other case or run uses: this process's id
 * and a counter. */
static inline void pg_schema_name(char out[64])
{
    static int counter;
    snprintf(out, 64, "paymentd_t_%ld_%d", (long)getpid(), ++counter);
}

/* The base URI with the server's search_path set to schema alone: every
 * table the store makes and reads is that schema's. */
static inline void pg_uri_for(char *out, size_t len, const char *base, const char *schema)
{
    int n = snprintf(out, len, "%s%coptions=-csearch_path%%3D%s", base,
                     strchr(base, '?') ? '&' : '?', schema);
    CHECK(n > 0 && (size_t)n < len);
}

/* Creates a fresh schema of the database PAYMENTD_TEST_PG_URI names, its
 * name in schema and a URI of it in uri: 1, or 0 (a failed check). */
static inline int pg_schema_create(char schema[64], char *uri, size_t len)
{
    pg_schema_name(schema);
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE SCHEMA %s", schema);
    int ok = pg_test_exec(pg_base(), sql);
    CHECK(ok);
    pg_uri_for(uri, len, pg_base(), schema);
    return ok;
}

static inline void pg_schema_drop(const char *schema)
{
    char sql[128];
    snprintf(sql, sizeof sql, "DROP SCHEMA %s CASCADE", schema);
    CHECK(pg_test_exec(pg_base(), sql));
}

/* Runs fn on a new schema of the database PAYMENTD_TEST_PG_URI names. */
static inline void run_on_pg(store_case_fn fn)
{
    if (!pg_base()) {
        TEST_SKIP(PG_URI_ENV " unset: no PostgreSQL to run on");
        return;
    }
    char schema[64];
    struct fixture fx = {0};
    if (!pg_schema_create(schema, fx.uri, sizeof fx.uri))
        return;
    run_opened(fn, &fx);
    pg_schema_drop(schema);
}

#endif
