/* store_sqlite_read: the read path of the embedded store.  One read-only
 * connection per reading thread, opened on first use and registered in the
 * store so that close can finalize it; WAL readers see the last commit and
 * never wait for the writer.  Owns the readers and the lookups by key: get,
 * ping, idem_get, op_get, partition_get (the events' reads, on the same
 * readers, are store_sqlite_events.c's), and the helpers of the webhooks'
 * reads (statements cached per reader, UUID columns). */
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "payment/store_sqlite.h"

static const char *const sqlite_rsql[R_COUNT] = {
    [R_GET] = "SELECT doc, version, created_ms FROM payments WHERE id = ?1 AND deleted = 0",
    [R_PING] = "SELECT seq FROM payments ORDER BY seq DESC LIMIT 1",
    [R_IDEM] = "SELECT fingerprint, status, location, etag, body FROM idempotency"
               " WHERE scope = ?1 AND key = ?2",
    [R_OP] = "SELECT status, error_code, message, payment_id, organisation_id, version,"
             " partition, seq, fingerprint FROM operations WHERE op_id = ?1",
    [R_PART] = "SELECT last_seq, fence FROM partitions WHERE partition = ?1",
    /* A history page: one row more than asked, to learn whether another follows. */
    [R_HISTORY] = "SELECT " SQLITE_EVENT_COLUMNS " FROM events"
                  " WHERE payment_id = ?1 AND version > ?2 ORDER BY version LIMIT ?3",
    /* A feed page and the feed's end, read in one transaction. */
    [R_READ_BEGIN] = "BEGIN",
    [R_READ_END] = "COMMIT",
    [R_FEED_TOP] = "SELECT (SELECT max(pos) FROM events),"
                   " (SELECT value FROM feed_meta WHERE key = 'floor')",
};

void sqlite_reader_free(struct sqlite_reader *r)
{
    for (int i = 0; i < R_COUNT; i++)
        (void)sqlite3_finalize(r->stmt[i]); /* repeats a past step's error, if any */
    for (int i = 0; i < SQLITE_LIST_CACHE; i++)
        (void)sqlite3_finalize(r->list[i]);
    for (int i = 0; i < SQLITE_FEED_SHAPES; i++)
        (void)sqlite3_finalize(r->feed[i]);
    sqlite_cache_free(&r->cache);
    if (r->db && sqlite3_close(r->db) != SQLITE_OK)
        (void)sqlite3_close_v2(r->db); /* unreachable: every statement is finalized */
    free(r);
}

void sqlite_reader_unlink(struct sqlite_store *st, struct sqlite_reader *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        st->readers = r->next;
    if (r->next)
        r->next->prev = r->prev;
}

/* pthread key destructor: a reading thread exits before the store closes. */
void sqlite_reader_exit(void *p)
{
    struct sqlite_reader *r = p;
    struct sqlite_store *st = r->st;
    store_lock(&st->readers_mu);
    sqlite_reader_unlink(st, r);
    store_unlock(&st->readers_mu);
    sqlite_reader_free(r);
}

/* The calling thread's reader, opened on first use.  NULL and *err set when
 * it cannot be opened. */
struct sqlite_reader *sqlite_reader_get(struct sqlite_store *st, int *err)
{
    struct sqlite_reader *r = pthread_getspecific(st->reader_key);
    if (r)
        return r;
    r = calloc(1, sizeof *r);
    if (!r) {
        *err = PAYMENT_STORE_EINTERNAL;
        return NULL;
    }
    r->st = st;
    /* unix-excl holds its lock for read-write connections only, so an
     * exclusive store's readers are read-write connections kept to reading
     * by query_only. */
    int mode = st->exclusive ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY;
    int rc = sqlite3_open_v2(st->path, &r->db, mode | SQLITE_OPEN_NOMUTEX, sqlite_vfs(st));
    if (rc == SQLITE_OK && st->exclusive)
        rc = sqlite3_exec(r->db, "PRAGMA query_only = 1", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(r->db, SQLITE_BUSY_TIMEOUT_MS);
    for (int i = 0; rc == SQLITE_OK && i < R_COUNT; i++)
        rc = sqlite3_prepare_v3(r->db, sqlite_rsql[i], -1, SQLITE_PREPARE_PERSISTENT, &r->stmt[i],
                                NULL);
    if (rc == SQLITE_OK && pthread_setspecific(st->reader_key, r) != 0)
        rc = SQLITE_NOMEM;
    if (rc != SQLITE_OK) {
        sqlite_reader_free(r);
        *err = sqlite_map_err(rc);
        return NULL;
    }
    store_lock(&st->readers_mu);
    r->next = st->readers;
    if (st->readers)
        st->readers->prev = r;
    st->readers = r;
    store_unlock(&st->readers_mu);
    return r;
}

sqlite3_stmt *sqlite_read_stmt(struct sqlite_store *st, const char *sql, int *err)
{
    struct sqlite_reader *r = sqlite_reader_get(st, err);
    if (!r)
        return NULL;
    int rc = SQLITE_OK;
    sqlite3_stmt *stmt = sqlite_cached(r->db, &r->cache, sql, &rc);
    if (!stmt) {
        *err = sqlite_map_err(rc);
        return NULL;
    }
    /* Running already: this read was called from its own callback.  Left
     * alone, or the outer read would start again from its first row. */
    if (sqlite3_stmt_busy(stmt)) {
        *err = PAYMENT_STORE_EINTERNAL;
        return NULL;
    }
    return stmt;
}

int sqlite_column_uuid(sqlite3_stmt *stmt, int col, char out[UUID_STR_LEN + 1])
{
    const char *v = (const char *)sqlite3_column_text(stmt, col);
    size_t len = (size_t)sqlite3_column_bytes(stmt, col);
    if (!v || len > UUID_STR_LEN)
        return -1;
    memcpy(out, v, len);
    out[len] = '\0';
    return 0;
}

int sqlite_ping(payment_store *s)
{
    struct sqlite_store *st = (struct sqlite_store *)s;
    int err;
    struct sqlite_reader *r = sqlite_reader_get(st, &err);
    if (!r)
        return err;
    int rc = sqlite_stmt_run(r->stmt[R_PING]);
    return rc == SQLITE_OK ? PAYMENT_STORE_OK : sqlite_map_err(rc);
}

int sqlite_get(payment_store *s, const char *id, struct buf *doc, int64_t *version,
                      int64_t *created_ms)
{
    struct sqlite_store *st = (struct sqlite_store *)s;
    int err;
    struct sqlite_reader *r = sqlite_reader_get(st, &err);
    if (!r)
        return err;
    sqlite3_stmt *stmt = r->stmt[R_GET];
    int rc = sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(stmt, 0);
        size_t len = (size_t)sqlite3_column_bytes(stmt, 0);
        if (!text && sqlite3_errcode(r->db) == SQLITE_NOMEM) {
            err = PAYMENT_STORE_EINTERNAL;
        } else if (buf_append(doc, text ? text : "", text ? len : 0) != 0) {
            err = PAYMENT_STORE_EINTERNAL;
        } else {
            err = PAYMENT_STORE_OK;
            *version = sqlite3_column_int64(stmt, 1);
            if (created_ms)
                *created_ms = sqlite3_column_int64(stmt, 2);
        }
    } else if (rc == SQLITE_DONE) {
        err = PAYMENT_STORE_ENOTFOUND;
    } else {
        err = sqlite_map_err(rc);
    }
    sqlite_stmt_release(stmt);
    return err;
}

/* Copies column col (text or NULL) into b. */
static int sqlite_column_buf(sqlite3_stmt *stmt, int col, struct buf *b)
{
    const void *p = sqlite3_column_blob(stmt, col);
    size_t len = (size_t)sqlite3_column_bytes(stmt, col);
    return p ? buf_append(b, p, len) : 0;
}

int sqlite_idem_get(payment_store *s, const char *scope, const char *key,
                           struct payment_idem_found *out)
{
    struct sqlite_store *st = (struct sqlite_store *)s;
    int err;
    struct sqlite_reader *r = sqlite_reader_get(st, &err);
    if (!r)
        return err;
    sqlite3_stmt *stmt = r->stmt[R_IDEM];
    int rc = sqlite3_bind_text(stmt, 1, scope, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 2, key, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        const char *fp = (const char *)sqlite3_column_text(stmt, 0);
        const char *etag = (const char *)sqlite3_column_text(stmt, 3);
        snprintf(out->fingerprint, sizeof out->fingerprint, "%s", fp ? fp : "");
        snprintf(out->etag, sizeof out->etag, "%s", etag ? etag : "");
        out->status = sqlite3_column_int(stmt, 1);
        err = sqlite_column_buf(stmt, 2, &out->location) == 0 &&
                      sqlite_column_buf(stmt, 4, &out->body) == 0
                  ? PAYMENT_STORE_OK
                  : PAYMENT_STORE_EINTERNAL;
    } else if (rc == SQLITE_DONE) {
        err = PAYMENT_STORE_ENOTFOUND;
    } else {
        err = sqlite_map_err(rc);
    }
    sqlite_stmt_release(stmt);
    return err;
}

/* Copies text column col into out (NULL as ""), cut to fit. */
static void sqlite_column_str(sqlite3_stmt *stmt, int col, char *out, size_t len)
{
    const char *v = (const char *)sqlite3_column_text(stmt, col);
    snprintf(out, len, "%s", v ? v : "");
}

int sqlite_op_get(payment_store *s, const char *op_id, struct payment_op_found *out)
{
    struct sqlite_store *st = (struct sqlite_store *)s;
    int err;
    struct sqlite_reader *r = sqlite_reader_get(st, &err);
    if (!r)
        return err;
    sqlite3_stmt *stmt = r->stmt[R_OP];
    int rc = sqlite3_bind_text(stmt, 1, op_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        sqlite_column_str(stmt, 0, out->status, sizeof out->status);
        sqlite_column_str(stmt, 1, out->error_code, sizeof out->error_code);
        sqlite_column_str(stmt, 2, out->message, sizeof out->message);
        sqlite_column_str(stmt, 3, out->payment_id, sizeof out->payment_id);
        sqlite_column_str(stmt, 4, out->organisation_id, sizeof out->organisation_id);
        out->version = sqlite3_column_int64(stmt, 5);
        out->partition = (uint32_t)sqlite3_column_int64(stmt, 6);
        out->seq = (uint64_t)sqlite3_column_int64(stmt, 7);
        sqlite_column_str(stmt, 8, out->fingerprint, sizeof out->fingerprint);
        err = sqlite3_errcode(r->db) == SQLITE_NOMEM ? PAYMENT_STORE_EINTERNAL : PAYMENT_STORE_OK;
    } else if (rc == SQLITE_DONE) {
        err = PAYMENT_STORE_ENOTFOUND;
    } else {
        err = sqlite_map_err(rc);
    }
    sqlite_stmt_release(stmt);
    return err;
}

int sqlite_partition_get(payment_store *s, uint32_t partition, uint64_t *last_seq,
                                uint64_t *fence)
{
    struct sqlite_store *st = (struct sqlite_store *)s;
    int err;
    struct sqlite_reader *r = sqlite_reader_get(st, &err);
    if (!r)
        return err;
    sqlite3_stmt *stmt = r->stmt[R_PART];
    int rc = sqlite3_bind_int64(stmt, 1, partition);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    *last_seq = 0;
    *fence = 0;
    if (rc == SQLITE_ROW) {
        *last_seq = (uint64_t)sqlite3_column_int64(stmt, 0);
        *fence = (uint64_t)sqlite3_column_int64(stmt, 1);
        err = PAYMENT_STORE_OK;
    } else {
        err = rc == SQLITE_DONE ? PAYMENT_STORE_OK : sqlite_map_err(rc);
    }
    sqlite_stmt_release(stmt);
    return err;
}
