/* store_sqlite: the embedded store, SQLite in WAL mode with synchronous=FULL.
 * This file opens and closes a store (the write connection, its schema,
 * the writer thread, the readers' thread key), holds the backend table and
 * the helpers the other files of the backend share; store_sqlite.h lists
 * those files and what each owns.
 *
 * One writer thread applies every write, in group-committed transactions,
 * so sequence numbers strictly increase in commit order
 * (store_sqlite_writer.c); each reading thread has a read-only connection
 * of its own that sees the last commit and never waits for the writer
 * (store_sqlite_read.c).
 *
 * Deleted payments stay as tombstone rows (deleted = 1, doc NULL) that keep
 * their id, so the UNIQUE id constraint also refuses to create them again. */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "payment/store_sqlite.h"

#include "core/sync.h"

#define SQLITE_PAGE_SIZE_NEW "8192"

/* ---- small helpers ------------------------------------------------------ */

/* The VFS of every connection of the store.  unix-excl takes the file's
 * lock at the first access and keeps it until the last connection of the
 * process closes; the write-ahead log's index then lives in the process's
 * memory, not in the -shm file, so a read transaction makes no fcntl call
 * and waits on no other process.  The connections of one process share the
 * lock, so the writer and the readers work as with the default VFS. */
const char *sqlite_vfs(const struct sqlite_store *st)
{
    return st->exclusive ? "unix-excl" : NULL;
}

/* The store error of a failed SQLite call: transient conditions of the disk
 * or of another process's lock are "unavailable" (503), the rest internal. */
int sqlite_map_err(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
        return PAYMENT_STORE_EUNAVAILABLE;
    default:
        return PAYMENT_STORE_EINTERNAL;
    }
}

/* Makes a statement reusable.  sqlite3_reset repeats the error of the last
 * step, already handled by the caller, and clear_bindings cannot fail. */
void sqlite_stmt_release(sqlite3_stmt *stmt)
{
    (void)sqlite3_reset(stmt);
    (void)sqlite3_clear_bindings(stmt);
}

int sqlite_page_rows(sqlite3_stmt *stmt, int rc, uint32_t limit, sqlite_row_fn row, void *arg,
                     int *more)
{
    uint32_t n = 0;
    int err = PAYMENT_STORE_OK;
    while (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (n == limit) {
            *more = 1;
            break;
        }
        err = row(stmt, arg);
        if (err != PAYMENT_STORE_OK)
            break;
        n++;
        rc = SQLITE_OK;
    }
    sqlite_stmt_release(stmt);
    if (err != PAYMENT_STORE_OK)
        return err;
    return rc == SQLITE_ROW || rc == SQLITE_DONE || rc == SQLITE_OK ? PAYMENT_STORE_OK
                                                                     : sqlite_map_err(rc);
}

/* Runs a statement that returns no row of interest: SQLITE_OK or the error. */
int sqlite_stmt_run(sqlite3_stmt *stmt)
{
    int rc = sqlite3_step(stmt);
    sqlite_stmt_release(stmt);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

/* Binds text, or NULL for a NULL pointer. */
int sqlite_bind_opt(sqlite3_stmt *stmt, int i, const char *v)
{
    return v ? sqlite3_bind_text(stmt, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(stmt, i);
}

sqlite3_stmt *sqlite_cached(sqlite3 *db, struct sqlite_stmt_cache *c, const char *sql, int *rc)
{
    size_t i = 0;
    for (; i < SQLITE_STMT_CACHE && c->sql[i]; i++)
        if (c->sql[i] == sql)
            return c->stmt[i];
    assert(i < SQLITE_STMT_CACHE); /* the statements of the calls using it are fewer */
    *rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &c->stmt[i], NULL);
    if (*rc != SQLITE_OK) {
        (void)sqlite3_finalize(c->stmt[i]); /* NULL after a failed prepare: a no-op */
        c->stmt[i] = NULL;
        return NULL;
    }
    c->sql[i] = sql;
    return c->stmt[i];
}

void sqlite_cache_free(struct sqlite_stmt_cache *c)
{
    for (size_t i = 0; i < SQLITE_STMT_CACHE; i++) {
        (void)sqlite3_finalize(c->stmt[i]); /* repeats a past step's error, if any */
        c->stmt[i] = NULL;
        c->sql[i] = NULL;
    }
}

/* ---- open and close ----------------------------------------------------- */

/* mkdir -p of the folder holding path. */
static int sqlite_make_parent(const char *path, char *errbuf, size_t errlen)
{
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path)
        return 0; /* the current folder or the root */
    char dir[PATH_MAX];
    size_t n = (size_t)(slash - path);
    if (n >= sizeof dir) {
        store_errf(errbuf, errlen, "store path too long: %s", path);
        return -1;
    }
    memcpy(dir, path, n);
    dir[n] = '\0';
    for (size_t i = 1; i <= n; i++) {
        if (dir[i] != '/' && dir[i] != '\0')
            continue;
        char c = dir[i];
        dir[i] = '\0';
        int failed = mkdir(dir, 0777) != 0 && errno != EEXIST;
        int saved = errno;
        dir[i] = c;
        if (failed) {
            char msg[128];
            store_errf(errbuf, errlen, "cannot create store folder %.*s: %s", (int)i, dir,
                        strerror_r(saved, msg, sizeof msg));
            return -1;
        }
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        store_errf(errbuf, errlen, "store folder %s is not a folder", dir);
        return -1;
    }
    return 0;
}

/* Opens the write connection: WAL, full sync, schema, statements. */
static int sqlite_open_writer(struct sqlite_store *st, const char *path, char *errbuf,
                              size_t errlen)
{
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path, &st->wdb, flags, sqlite_vfs(st));
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(st->wdb, SQLITE_BUSY_TIMEOUT_MS);
    /* A store of a newer schema is refused before the pragmas below: the WAL
     * one rewrites the header of a file not in WAL mode (a restored backup),
     * and a refused store is left as it was, byte for byte. */
    int version = 0;
    if (rc == SQLITE_OK)
        rc = sqlite_schema_read(st->wdb, &version);
    if (rc == SQLITE_OK && sqlite_schema_check(version, errbuf, errlen) != SQLITE_OK)
        return PAYMENT_STORE_EURI;
    /* A new store's pages hold a whole typical payment (about 7 KB stored),
     * so that a read takes one page, not a leaf and an overflow page, and
     * SQLite hands out the document without assembling it.  Only a store not
     * yet written takes it; an existing one keeps its page size. */
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(st->wdb, "PRAGMA page_size = " SQLITE_PAGE_SIZE_NEW, NULL, NULL, NULL);
    char mode[16] = "";
    if (rc == SQLITE_OK)
        rc = sqlite_pragma_text(st->wdb, "PRAGMA journal_mode = WAL", mode, sizeof mode);
    if (rc == SQLITE_OK && strcasecmp(mode, "wal") != 0) {
        store_errf(errbuf, errlen, "cannot open store %s: WAL mode refused (%s)", path, mode);
        return PAYMENT_STORE_EURI;
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(st->wdb, "PRAGMA synchronous = FULL", NULL, NULL, NULL);
    /* Each write's savepoint keeps a copy of every page it changes (its
     * statement journal), in memory only up to 64 KB by default, then in a
     * temporary file: a write with its event changes more than eight pages
     * of 8 KB, and each would be written to that file.  In memory it stays. */
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(st->wdb, "PRAGMA temp_store = MEMORY", NULL, NULL, NULL);
    if ((rc & 0xff) == SQLITE_BUSY) { /* a read above waited out the busy timeout */
        store_errf(errbuf, errlen, "%s is %s", path,
                   st->exclusive ? "open in another process, and this one needs it to itself"
                                 : "held exclusively by another process");
        return PAYMENT_STORE_EUNAVAILABLE;
    }
    if (rc != SQLITE_OK) {
        store_errf(errbuf, errlen, "cannot open store %s: %s", path,
                    st->wdb ? sqlite3_errmsg(st->wdb) : sqlite3_errstr(rc));
        return rc == SQLITE_NOMEM ? PAYMENT_STORE_EINTERNAL : PAYMENT_STORE_EURI;
    }
    if (sqlite_schema_migrate(st->wdb, errbuf, errlen) != SQLITE_OK)
        return PAYMENT_STORE_EURI;
    if (sqlite_writer_prepare(st) != SQLITE_OK) {
        store_errf(errbuf, errlen, "store statement: %s", sqlite3_errmsg(st->wdb));
        return PAYMENT_STORE_EINTERNAL;
    }
    /* Readers open the file by its absolute name: a later chdir cannot move them. */
    const char *full = sqlite3_db_filename(st->wdb, "main");
    st->path = strdup(full && full[0] ? full : path);
    if (!st->path) {
        store_errf(errbuf, errlen, "out of memory");
        return PAYMENT_STORE_EINTERNAL;
    }
    return PAYMENT_STORE_OK;
}

/* Frees a store whose writer is not running: readers, statements, connection. */
static void sqlite_store_free(struct sqlite_store *st)
{
    if (st->have_key && pthread_key_delete(st->reader_key) != 0)
        abort(); /* the key is valid */
    while (st->readers) {
        struct sqlite_reader *r = st->readers;
        sqlite_reader_unlink(st, r);
        sqlite_reader_free(r);
    }
    sqlite_checkpointer_stop(st);
    /* Closed last: the last connection checkpoints and removes the WAL. */
    for (int i = 0; i < W_COUNT; i++)
        (void)sqlite3_finalize(st->w[i]); /* repeats a past step's error, if any */
    sqlite_cache_free(&st->wcache);
    if (st->wdb && sqlite3_close(st->wdb) != SQLITE_OK)
        (void)sqlite3_close_v2(st->wdb); /* unreachable: every statement is finalized */
    (void)pthread_cond_destroy(&st->wake);
    (void)pthread_mutex_destroy(&st->mu);
    (void)pthread_mutex_destroy(&st->readers_mu);
    free(st->path);
    free(st);
}

/* The store's mutexes and condition variable: 0, or -1 with none left. */
static int sqlite_sync_init(struct sqlite_store *st)
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

/* SQLite keeps memory statistics by default: every allocation of every
 * connection then takes one global mutex, for which the reader threads
 * contend (futex calls under load).  paymentd reads none of them. */
static int sqlite_init(char *errbuf, size_t errlen)
{
    int rc = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    if (rc == SQLITE_OK)
        rc = sqlite3_initialize();
    if (rc != SQLITE_OK) {
        store_errf(errbuf, errlen, "SQLite set-up: %s", sqlite3_errstr(rc));
        return PAYMENT_STORE_EINTERNAL;
    }
    return PAYMENT_STORE_OK;
}

static int sqlite_open(const char *uri, unsigned flags, payment_store **out, char *errbuf,
                       size_t errlen)
{
    const char *path = uri + strlen(SQLITE_URI_PREFIX);
    if (!path[0]) {
        store_errf(errbuf, errlen, "store URI %s names no file (expected sqlite:PATH)", uri);
        return PAYMENT_STORE_EURI;
    }
    struct stat sb;
    if ((flags & PAYMENT_STORE_EXISTING) && stat(path, &sb) != 0) {
        store_errf(errbuf, errlen, "no store at %s: the file does not exist (nothing created)",
                   path);
        return PAYMENT_STORE_EURI;
    }
    if (!(flags & PAYMENT_STORE_EXISTING) && sqlite_make_parent(path, errbuf, errlen) != 0)
        return PAYMENT_STORE_EURI;
    struct sqlite_store *st = calloc(1, sizeof *st);
    if (!st) {
        store_errf(errbuf, errlen, "out of memory");
        return PAYMENT_STORE_EINTERNAL;
    }
    st->exclusive = (flags & PAYMENT_STORE_EXCLUSIVE) != 0;
    st->purge_before_ms = SQLITE_NO_PURGE;
    st->feed_purge_ms = SQLITE_NO_PURGE;
    st->history_purge_ms = SQLITE_NO_PURGE;
    st->data_version = -1; /* none polled yet */
    atomic_init(&st->commits, 0);
    atomic_init(&st->writes, 0);
    if (sqlite_sync_init(st) != 0) {
        free(st);
        store_errf(errbuf, errlen, "cannot create the store's locks");
        return PAYMENT_STORE_EINTERNAL;
    }
    /* From here sqlite_store_free undoes whatever was done. */
    int err = PAYMENT_STORE_EINTERNAL;
    if (pthread_key_create(&st->reader_key, sqlite_reader_exit) != 0) {
        store_errf(errbuf, errlen, "cannot create a thread key");
        goto fail;
    }
    st->have_key = 1;
    err = sqlite_open_writer(st, path, errbuf, errlen);
    if (err != PAYMENT_STORE_OK)
        goto fail;
    if (sqlite_checkpointer_start(st) != 0) {
        store_errf(errbuf, errlen, "cannot start the store's checkpoint thread");
        err = PAYMENT_STORE_EINTERNAL;
        goto fail;
    }
    if (sqlite_writer_start(st) != 0) {
        store_errf(errbuf, errlen, "cannot start the store writer thread");
        err = PAYMENT_STORE_EINTERNAL;
        goto fail;
    }
    *out = &st->base;
    return PAYMENT_STORE_OK;
fail:
    sqlite_store_free(st);
    return err;
}

/* The caller guarantees no call into the store runs or starts meanwhile,
 * and no thread that read from it exits meanwhile (its key destructor would
 * race with the readers' teardown). */
static void sqlite_close(payment_store *s)
{
    struct sqlite_store *st = (struct sqlite_store *)s;
    store_lock(&st->mu);
    st->closing = 1;
    if (pthread_cond_signal(&st->wake) != 0)
        abort();
    store_unlock(&st->mu);
    if (st->writer_started && pthread_join(st->writer, NULL) != 0)
        abort(); /* joinable and not this thread: close must not be called from done */
    sqlite_store_free(st);
}

const struct payment_store_backend payment_store_sqlite_backend = {
    .scheme = "sqlite",
    .init = sqlite_init,
    .open = sqlite_open,
    .backup = sqlite_backup,
    .close = sqlite_close,
    .ping = sqlite_ping,
    .get = sqlite_get,
    .list = sqlite_list,
    .create = sqlite_create,
    .update = sqlite_update,
    .remove = sqlite_remove,
    .stats = sqlite_stats,
    .idem_get = sqlite_idem_get,
    .idem_purge = sqlite_idem_purge,
    .apply = sqlite_apply,
    .op_get = sqlite_op_get,
    .partition_get = sqlite_partition_get,
    .events = sqlite_events,
    .history = sqlite_history,
    .events_subscribe = sqlite_events_subscribe,
    .events_purge = sqlite_events_purge,
    .webhook_create = sqlite_webhook_create,
    .webhook_update = sqlite_webhook_update,
    .webhook_delete = sqlite_webhook_delete,
    .webhook_get = sqlite_webhook_get,
    .webhooks_list = sqlite_webhooks_list,
    .dispatch_pos = sqlite_dispatch_pos,
    .deliveries_add = sqlite_deliveries_add,
    .deliveries_claim = sqlite_deliveries_claim,
    .deliveries_record = sqlite_deliveries_record,
    .delivery_retry = sqlite_delivery_retry,
    .deliveries_list = sqlite_deliveries_list,
    .deliveries_pending = sqlite_deliveries_pending,
    .deliveries_purge = sqlite_deliveries_purge,
    .export_payments = sqlite_export_payments,
    .export_idem = sqlite_export_idem,
    .export_events = sqlite_export_events,
    .import = sqlite_import,
};
