/* store_pg: the PostgreSQL store's life: open (the URI, the write
 * connection, the schema, the readers' thread key, the writer thread),
 * close, and the backend's tables; store_pg.h lists the files that do the
 * rest and the design they share.
 *
 * URI: postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?OPTIONS], or the same
 * with postgresql://, handed to libpq whole: every standard libpq option
 * works.  The URI keeps its password only in st->uri, which no message
 * prints: messages name st->uri_redacted.
 *
 * Open fails when the server does not answer (EUNAVAILABLE), when the URI
 * is not one libpq can parse (EURI), when the database holds a schema
 * newer than this build's (EURI), or, opened PAYMENT_STORE_EXISTING, when
 * the search_path's schema holds no store (EURI, nothing created).  Once open, a server that goes away makes
 * the calls answer EUNAVAILABLE, and the connections are made again by the
 * calls that follow (store_pg_conn.c): the store is never reopened.
 *
 * Threads: open and close run on the caller's thread; the writer thread
 * owns st->wconn between them; each reading thread owns its reader. */
#include <assert.h>
#include <ctype.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/sync.h"
#include "payment/store_pg.h"

/* Frees what open made of st, its writer not running: readers, the write
 * connection, the locks, the strings.  have_sync: the locks were made. */
static void pg_store_free(struct pg_store *st, int have_sync)
{
    /* The key first: no reader's destructor runs after this (a thread
     * exiting now no longer finds its reader), so the list is close's. */
    if (st->have_key && pthread_key_delete(st->reader_key) != 0)
        abort(); /* the key is valid */
    while (st->readers) {
        struct pg_reader *r = st->readers;
        pg_reader_unlink(st, r);
        pg_reader_free(r);
    }
    pg_conn_close(&st->wconn);
    if (have_sync) {
        (void)pthread_cond_destroy(&st->wake);    /* no thread waits on it any more */
        (void)pthread_mutex_destroy(&st->mu);     /* nor holds it */
        (void)pthread_mutex_destroy(&st->readers_mu);
    }
    free(st->uri);
    free(st->uri_redacted);
    free(st);
}

/* The store's mutexes and condition variable: 0, or -1 with none left. */
static int pg_sync_init(struct pg_store *st)
{
    if (pthread_mutex_init(&st->mu, NULL) != 0)
        return -1;
    if (pthread_mutex_init(&st->readers_mu, NULL) != 0) {
        (void)pthread_mutex_destroy(&st->mu);
        return -1;
    }
    /* The writer's timed waits (the events' poll) count on the monotonic clock. */
    if (sync_cond_init_monotonic(&st->wake) != 0) {
        (void)pthread_mutex_destroy(&st->readers_mu);
        (void)pthread_mutex_destroy(&st->mu);
        return -1;
    }
    return 0;
}

/* st->uri and st->uri_redacted from uri, the scheme in lower case (store.c
 * matches it in any case, libpq only in lower case): 0, or -1 out of
 * memory. */
static int pg_store_uris(struct pg_store *st, const char *uri)
{
    st->uri = strdup(uri);
    size_t len = strlen(uri) + 16; /* each of two passwords may become "***" */
    st->uri_redacted = malloc(len);
    if (!st->uri || !st->uri_redacted)
        return -1;
    for (char *p = st->uri; *p && *p != ':'; p++)
        *p = (char)tolower((unsigned char)*p);
    pg_uri_redact(st->uri, st->uri_redacted, len);
    return 0;
}

/* Whether libpq can parse the URI: 0, or EURI with a one-line reason.
 * libpq's message may quote the URI's text, so it is given only when the
 * URI holds no password.  A text after the scheme that is not "//..." is
 * not named at all: libpq would read it as "key=value" pairs, and
 * pg_uri_redact finds no password in it. */
static int pg_uri_check(const struct pg_store *st, char *errbuf, size_t errlen)
{
    if (strncmp(st->uri, "postgres://", 11) != 0 && strncmp(st->uri, "postgresql://", 13) != 0) {
        store_errf(errbuf, errlen, "store URI not of the form postgres://USER@HOST:PORT/DB");
        return PAYMENT_STORE_EURI;
    }
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(st->uri, &msg);
    if (opts) {
        PQconninfoFree(opts);
        return PAYMENT_STORE_OK;
    }
    int has_password = strcmp(st->uri, st->uri_redacted) != 0;
    const char *why = msg && !has_password ? msg : "not a PostgreSQL URI";
    store_errf(errbuf, errlen, "store %s: %.*s (expected postgres://USER@HOST:PORT/DB)",
               st->uri_redacted, (int)strcspn(why, "\n"), why);
    PQfreemem(msg); /* NULL when libpq ran out of memory: a no-op */
    return PAYMENT_STORE_EURI;
}

/* PAYMENT_STORE_EXISTING: whether the schema the search_path makes tables
 * in (current_schema(), NULL when it names none that exists) holds the
 * store's paymentd_schema table: 0, or EURI naming what is missing (or
 * the server's error) in errbuf. */
static int pg_schema_exists(struct pg_store *st, char *errbuf, size_t errlen)
{
    static const char sql[] =
        "SELECT current_schema(), EXISTS (SELECT 1 FROM pg_catalog.pg_tables"
        " WHERE schemaname = current_schema() AND tablename = 'paymentd_schema')";
    PGresult *res = NULL;
    int err = pg_exec(&st->wconn, sql, NULL, &res);
    if (err != PAYMENT_STORE_OK) {
        store_errf(errbuf, errlen, "store %s: cannot look for its schema (%s)", st->uri_redacted,
                   payment_store_strerror(err));
        return err;
    }
    assert(PQntuples(res) == 1 && PQnfields(res) == 2);
    const char *schema = pg_text(res, 0, 0);
    const char *found = pg_text(res, 0, 1);
    if (!schema)
        store_errf(errbuf, errlen,
                   "no store at %s: its search_path names no schema that exists (nothing "
                   "created)",
                   st->uri_redacted);
    else if (!found || strcmp(found, "t") != 0)
        store_errf(errbuf, errlen,
                   "no store at %s: schema \"%s\" holds no paymentd_schema table (nothing "
                   "created)",
                   st->uri_redacted, schema);
    err = schema && found && strcmp(found, "t") == 0 ? PAYMENT_STORE_OK : PAYMENT_STORE_EURI;
    PQclear(res);
    return err;
}

static int pg_open(const char *uri, unsigned flags, payment_store **out, char *errbuf,
                   size_t errlen)
{
    /* PAYMENT_STORE_EXCLUSIVE is the embedded store's */
    struct pg_store *st = calloc(1, sizeof *st);
    if (!st) {
        store_errf(errbuf, errlen, "out of memory");
        return PAYMENT_STORE_EINTERNAL;
    }
    st->purge_before_ms = INT64_MIN;
    st->feed_purge_ms = INT64_MIN;
    st->history_purge_ms = INT64_MIN;
    st->seen_pos = -1; /* none polled yet */
    atomic_init(&st->commits, 0);
    atomic_init(&st->writes, 0);
    if (pg_store_uris(st, uri) != 0) {
        store_errf(errbuf, errlen, "out of memory");
        pg_store_free(st, 0);
        return PAYMENT_STORE_EINTERNAL;
    }
    st->wconn = (struct pg_conn)PG_CONN_INIT(st->uri);
    st->wconn.session_sql = PG_WRITER_SESSION;
    int err = pg_uri_check(st, errbuf, errlen);
    if (err != PAYMENT_STORE_OK) {
        pg_store_free(st, 0);
        return err;
    }
    if (pg_sync_init(st) != 0) {
        store_errf(errbuf, errlen, "cannot create the store's locks");
        pg_store_free(st, 0);
        return PAYMENT_STORE_EINTERNAL;
    }
    /* From here pg_store_free(st, 1) undoes whatever was done. */
    err = PAYMENT_STORE_EINTERNAL;
    if (pthread_key_create(&st->reader_key, pg_reader_exit) != 0) {
        store_errf(errbuf, errlen, "cannot create a thread key");
        goto fail;
    }
    st->have_key = 1;
    err = pg_conn_open(&st->wconn, errbuf, errlen);
    if (err == PAYMENT_STORE_OK && (flags & PAYMENT_STORE_EXISTING))
        err = pg_schema_exists(st, errbuf, errlen);
    if (err == PAYMENT_STORE_OK)
        err = pg_schema_migrate(&st->wconn, errbuf, errlen);
    if (err != PAYMENT_STORE_OK)
        goto fail;
    if (pg_writer_start(st) != 0) {
        store_errf(errbuf, errlen, "cannot start the store writer thread");
        err = PAYMENT_STORE_EINTERNAL;
        goto fail;
    }
    *out = &st->base;
    return PAYMENT_STORE_OK;
fail:
    pg_store_free(st, 1);
    return err;
}

/* The caller guarantees no call into the store runs or starts meanwhile,
 * and no thread that read from it exits meanwhile (its key destructor would
 * race with the readers' teardown). */
static void pg_close(payment_store *s)
{
    struct pg_store *st = (struct pg_store *)s;
    pg_writer_stop(st); /* drains the queue: every submitted write is reported */
    pg_store_free(st, 1);
}

/* The table of both schemes. */
#define PG_BACKEND_FUNCTIONS                                                                   \
    .may_block = 1, .init = NULL, .open = pg_open, .backup = NULL, .close = pg_close,          \
    .ping = pg_ping, .get = pg_get, .list = pg_list, .create = pg_create,                      \
    .update = pg_update, .remove = pg_remove, .stats = pg_stats, .idem_get = pg_idem_get,      \
    .idem_purge = pg_idem_purge, .apply = pg_apply, .op_get = pg_op_get,                       \
    .partition_get = pg_partition_get, .events = pg_events, .history = pg_history,             \
    .events_subscribe = pg_events_subscribe, .events_purge = pg_events_purge,                  \
    .webhook_create = pg_webhook_create, .webhook_update = pg_webhook_update,                  \
    .webhook_delete = pg_webhook_delete, .webhook_get = pg_webhook_get,                        \
    .webhooks_list = pg_webhooks_list, .dispatch_pos = pg_dispatch_pos,                        \
    .deliveries_add = pg_deliveries_add, .deliveries_claim = pg_deliveries_claim,              \
    .deliveries_record = pg_deliveries_record, .delivery_retry = pg_delivery_retry,            \
    .deliveries_list = pg_deliveries_list, .deliveries_pending = pg_deliveries_pending,        \
    .deliveries_purge = pg_deliveries_purge, .export_payments = pg_export_payments,            \
    .export_idem = pg_export_idem, .export_events = pg_export_events, .import = pg_import

const struct payment_store_backend payment_store_pg_backend = {
    .scheme = "postgres",
    PG_BACKEND_FUNCTIONS,
};

const struct payment_store_backend payment_store_postgresql_backend = {
    .scheme = "postgresql",
    PG_BACKEND_FUNCTIONS,
};
