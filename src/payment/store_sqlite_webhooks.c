/* store_sqlite_webhooks: the webhook endpoints of the embedded store and
 * the dispatcher's position (store.h, "webhooks: endpoints and their
 * deliveries"; the deliveries are store_sqlite_deliveries.c's).
 *
 * Writes are OP_CALL operations (sqlite_call): each runs on the writer
 * thread, in its savepoint of a group-committed transaction, and the call
 * returns once that transaction is durable.  Every check a write makes (the
 * id taken, the organisation's count, the version) is read in the same
 * transaction as the write, under SQLite's write lock, which every
 * connection of every process on the file takes in turn: no check can be
 * overtaken by another store's write.
 *
 * An endpoint's after_pos is the largest event position ever given as of
 * its transaction: the events table's AUTOINCREMENT counter (sqlite_sequence),
 * or, should that be missing, the largest position kept or the feed's floor.
 * Positions are given inside write transactions, in commit order
 * (store_sqlite_events.c), so the events committed after the endpoint are
 * exactly those above it, and those of its own batch written before it are
 * at or below it.
 *
 * The dispatcher's position is feed_meta's 'dispatch' row.
 *
 * Reads run on the calling thread's reader connection
 * (store_sqlite_read.c), with statements cached per reader; a read is one
 * statement, so one snapshot.  A callback may call the store, except for
 * the very read it is called from (whose statement is in use: that call
 * fails with EINTERNAL).
 *
 * Threads: the sqlite_wh_* write functions on the writer thread; the rest
 * on the caller's. */
#include <assert.h>
#include <sqlite3.h>
#include <stdint.h>
#include <string.h>

#include "core/buf.h"
#include "core/uuid.h"
#include "payment/store_sqlite.h"

/* ---- statements ----------------------------------------------------------- */

/* The columns an endpoint is read from, in sqlite_webhook_row's order. */
#define SQLITE_WEBHOOK_COLUMNS                                                              \
    "id, organisation_id, version, created_ms, modified_ms, enabled, types, after_pos,"    \
    " failing_since_ms, doc"

static const char sql_version[] = "SELECT version FROM webhooks WHERE id = ?1";
static const char sql_org_count[] = "SELECT count(*) FROM webhooks WHERE organisation_id = ?1";
/* The largest position ever given: sqlite_sequence's row for events is made
 * by the first event, and kept when events are purged. */
static const char sql_feed_end[] =
    "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),"
    " coalesce((SELECT max(pos) FROM events), 0),"
    " coalesce((SELECT value FROM feed_meta WHERE key = 'floor'), 0))";
static const char sql_insert[] =
    "INSERT INTO webhooks (id, organisation_id, version, created_ms, modified_ms, enabled,"
    " types, after_pos, failing_since_ms, doc) VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6, ?7, 0, ?8)";
/* SET's expressions read the row as it was: enabling resets failing_since_ms. */
static const char sql_update[] =
    "UPDATE webhooks SET version = ?2, modified_ms = ?3, enabled = ?4, types = ?5, doc = ?6,"
    " failing_since_ms = CASE WHEN enabled = 0 AND ?4 <> 0 THEN 0 ELSE failing_since_ms END"
    " WHERE id = ?1 AND version = ?7";
static const char sql_delete[] = "DELETE FROM webhooks WHERE id = ?1";
static const char sql_delete_deliveries[] = "DELETE FROM deliveries WHERE webhook_id = ?1";
static const char sql_dispatch_get[] = "SELECT value FROM feed_meta WHERE key = 'dispatch'";

static const char sql_get[] = "SELECT " SQLITE_WEBHOOK_COLUMNS " FROM webhooks WHERE id = ?1";
/* Lists: ?1 the id to start above, ?2 the rows to read, ?3 a JSON array of
 * the organisations. */
static const char sql_list_all[] = "SELECT " SQLITE_WEBHOOK_COLUMNS
                                   " FROM webhooks WHERE id > ?1 ORDER BY id LIMIT ?2";
static const char sql_list_all_enabled[] =
    "SELECT " SQLITE_WEBHOOK_COLUMNS
    " FROM webhooks WHERE id > ?1 AND enabled <> 0 ORDER BY id LIMIT ?2";
static const char sql_list_orgs[] =
    "SELECT " SQLITE_WEBHOOK_COLUMNS " FROM webhooks WHERE id > ?1"
    " AND organisation_id IN (SELECT value FROM json_each(?3)) ORDER BY id LIMIT ?2";
static const char sql_list_orgs_enabled[] =
    "SELECT " SQLITE_WEBHOOK_COLUMNS " FROM webhooks WHERE id > ?1"
    " AND organisation_id IN (SELECT value FROM json_each(?3)) AND enabled <> 0"
    " ORDER BY id LIMIT ?2";

/* The writer's statement of sql, or NULL with *rc. */
static sqlite3_stmt *sqlite_wh_stmt(struct sqlite_store *st, const char *sql, int *rc)
{
    return sqlite_cached(st->wdb, &st->wcache, sql, rc);
}

/* Runs a statement whose first row's first column is an integer, into
 * *out; *found says whether there was a row.  Releases it. */
static int sqlite_wh_int(sqlite3_stmt *stmt, int rc, int64_t *out, int *found)
{
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    *found = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(stmt, 0);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite_stmt_release(stmt);
    return rc;
}

/* The stored version of endpoint id (*found 0: none), in the transaction. */
static int sqlite_wh_version(struct sqlite_store *st, const char *id, int64_t *version,
                             int *found)
{
    int rc = SQLITE_OK;
    sqlite3_stmt *stmt = sqlite_wh_stmt(st, sql_version, &rc);
    if (!stmt)
        return rc;
    rc = sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
    return sqlite_wh_int(stmt, rc, version, found);
}

/* ---- create ------------------------------------------------------------- */

/* The organisation's count is under the limit: *err ELIMIT otherwise. */
static int sqlite_wh_room(struct sqlite_store *st, const char *org, int *err)
{
    int rc = SQLITE_OK;
    sqlite3_stmt *stmt = sqlite_wh_stmt(st, sql_org_count, &rc);
    if (!stmt)
        return rc;
    rc = sqlite3_bind_text(stmt, 1, org, -1, SQLITE_STATIC);
    int64_t count = 0;
    int found = 0;
    rc = sqlite_wh_int(stmt, rc, &count, &found);
    if (rc == SQLITE_OK && count >= PAYMENT_WEBHOOKS_PER_ORG_MAX)
        *err = PAYMENT_STORE_ELIMIT;
    return rc;
}

static int sqlite_wh_insert(struct sqlite_store *st, const struct payment_webhook *w)
{
    int rc = SQLITE_OK;
    sqlite3_stmt *stmt = sqlite_wh_stmt(st, sql_insert, &rc);
    if (!stmt)
        return rc;
    rc = sqlite3_bind_text(stmt, 1, w->id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 2, w->organisation_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 3, w->created_ms);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 4, w->modified_ms);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(stmt, 5, w->enabled != 0);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 6, w->types);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 7, w->after_pos);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text64(stmt, 8, w->doc, w->doc_len, SQLITE_STATIC, SQLITE_UTF8);
    if (rc != SQLITE_OK) {
        sqlite_stmt_release(stmt);
        return rc;
    }
    return sqlite_stmt_run(stmt);
}

/* OP_CALL: arg is the endpoint, whose after_pos and failing_since_ms it sets. */
static int sqlite_wh_create(struct sqlite_store *st, void *arg, int *err)
{
    struct payment_webhook *w = arg;
    assert(w->version == 0); /* store.c's precondition: the insert writes 0 */
    int64_t version = 0;
    int found = 0;
    int rc = sqlite_wh_version(st, w->id, &version, &found);
    if (rc != SQLITE_OK)
        return rc;
    if (found) {
        *err = PAYMENT_STORE_EDUPLICATE;
        return SQLITE_OK;
    }
    rc = sqlite_wh_room(st, w->organisation_id, err);
    if (rc != SQLITE_OK || *err != PAYMENT_STORE_OK)
        return rc;
    sqlite3_stmt *stmt = sqlite_wh_stmt(st, sql_feed_end, &rc);
    if (!stmt)
        return rc;
    rc = sqlite_wh_int(stmt, SQLITE_OK, &w->after_pos, &found);
    if (rc != SQLITE_OK)
        return rc;
    w->failing_since_ms = 0;
    return sqlite_wh_insert(st, w);
}

int sqlite_webhook_create(payment_store *s, struct payment_webhook *w)
{
    return sqlite_call((struct sqlite_store *)s, sqlite_wh_create, w);
}

/* ---- update and delete ---------------------------------------------------- */

struct sqlite_wh_update {
    const struct payment_webhook *w;
    int64_t expected_version;
};

/* OP_CALL: arg is a struct sqlite_wh_update. */
static int sqlite_wh_update(struct sqlite_store *st, void *arg, int *err)
{
    const struct sqlite_wh_update *u = arg;
    const struct payment_webhook *w = u->w;
    int rc = SQLITE_OK;
    sqlite3_stmt *stmt = sqlite_wh_stmt(st, sql_update, &rc);
    if (!stmt)
        return rc;
    rc = sqlite3_bind_text(stmt, 1, w->id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 2, w->version);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 3, w->modified_ms);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(stmt, 4, w->enabled != 0);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 5, w->types);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text64(stmt, 6, w->doc, w->doc_len, SQLITE_STATIC, SQLITE_UTF8);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 7, u->expected_version);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    int changed = rc == SQLITE_DONE && sqlite3_changes(st->wdb) == 1;
    sqlite_stmt_release(stmt);
    if (rc != SQLITE_DONE)
        return rc;
    if (changed)
        return SQLITE_OK;
    int64_t version = 0;
    int found = 0;
    rc = sqlite_wh_version(st, w->id, &version, &found);
    *err = found ? PAYMENT_STORE_ECONFLICT : PAYMENT_STORE_ENOTFOUND;
    return rc;
}

int sqlite_webhook_update(payment_store *s, const struct payment_webhook *w,
                          int64_t expected_version)
{
    struct sqlite_wh_update u = {.w = w, .expected_version = expected_version};
    return sqlite_call((struct sqlite_store *)s, sqlite_wh_update, &u);
}

struct sqlite_wh_delete {
    const char *id;
    int64_t expected_version;   /* -1: any */
    int64_t current_version;    /* out: the stored one on ECONFLICT */
};

/* Runs a statement binding id as ?1, changing rows. */
static int sqlite_wh_run_id(struct sqlite_store *st, const char *sql, const char *id)
{
    int rc = SQLITE_OK;
    sqlite3_stmt *stmt = sqlite_wh_stmt(st, sql, &rc);
    if (!stmt)
        return rc;
    rc = sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
    if (rc != SQLITE_OK) {
        sqlite_stmt_release(stmt);
        return rc;
    }
    return sqlite_stmt_run(stmt);
}

/* OP_CALL: arg is a struct sqlite_wh_delete. */
static int sqlite_wh_delete(struct sqlite_store *st, void *arg, int *err)
{
    struct sqlite_wh_delete *d = arg;
    int64_t version = 0;
    int found = 0;
    int rc = sqlite_wh_version(st, d->id, &version, &found);
    if (rc != SQLITE_OK)
        return rc;
    if (!found) {
        *err = PAYMENT_STORE_ENOTFOUND;
        return SQLITE_OK;
    }
    if (d->expected_version != -1 && d->expected_version != version) {
        d->current_version = version;
        *err = PAYMENT_STORE_ECONFLICT;
        return SQLITE_OK;
    }
    rc = sqlite_wh_run_id(st, sql_delete, d->id);
    if (rc == SQLITE_OK)
        rc = sqlite_wh_run_id(st, sql_delete_deliveries, d->id);
    return rc;
}

int sqlite_webhook_delete(payment_store *s, const char *id, int64_t expected_version,
                          int64_t *current_version)
{
    struct sqlite_wh_delete d = {.id = id, .expected_version = expected_version,
                                 .current_version = -1};
    int err = sqlite_call((struct sqlite_store *)s, sqlite_wh_delete, &d);
    if (current_version)
        *current_version = err == PAYMENT_STORE_ECONFLICT ? d.current_version : -1;
    return err;
}

/* ---- reads -------------------------------------------------------------- */

/* Fills w from the current row of a statement selecting
 * SQLITE_WEBHOOK_COLUMNS: PAYMENT_STORE_OK, or EINTERNAL for a row no write
 * makes, or when memory ran out. */
static int sqlite_webhook_row(sqlite3_stmt *stmt, struct payment_webhook *w)
{
    memset(w, 0, sizeof *w);
    w->version = sqlite3_column_int64(stmt, 2);
    w->created_ms = sqlite3_column_int64(stmt, 3);
    w->modified_ms = sqlite3_column_int64(stmt, 4);
    w->enabled = sqlite3_column_int(stmt, 5) != 0;
    w->types = (unsigned)sqlite3_column_int64(stmt, 6);
    w->after_pos = sqlite3_column_int64(stmt, 7);
    w->failing_since_ms = sqlite3_column_int64(stmt, 8);
    w->doc = (const char *)sqlite3_column_text(stmt, 9);
    w->doc_len = (size_t)sqlite3_column_bytes(stmt, 9);
    if (sqlite_column_uuid(stmt, 0, w->id) != 0 || sqlite_column_uuid(stmt, 1, w->organisation_id) != 0 ||
        !w->doc)
        return PAYMENT_STORE_EINTERNAL;
    return PAYMENT_STORE_OK;
}

/* An endpoint callback and its argument, for sqlite_page_rows. */
struct sqlite_wh_each {
    payment_store_webhook_fn each;
    void *arg;
};

/* Passes the current row's endpoint to the callback of arg (a
 * sqlite_wh_each). */
static int sqlite_wh_give(sqlite3_stmt *stmt, void *arg)
{
    const struct sqlite_wh_each *to = arg;
    struct payment_webhook w;
    int err = sqlite_webhook_row(stmt, &w);
    return err != PAYMENT_STORE_OK ? err : to->each(to->arg, &w);
}

int sqlite_webhook_get(payment_store *s, const char *id, payment_store_webhook_fn each,
                       void *arg)
{
    int err = PAYMENT_STORE_OK;
    sqlite3_stmt *stmt = sqlite_read_stmt((struct sqlite_store *)s, sql_get, &err);
    if (!stmt)
        return err;
    int rc = sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        struct sqlite_wh_each to = {each, arg};
        err = sqlite_wh_give(stmt, &to);
    } else {
        err = rc == SQLITE_DONE ? PAYMENT_STORE_ENOTFOUND : sqlite_map_err(rc);
    }
    sqlite_stmt_release(stmt);
    return err;
}

/* The organisations of q as a JSON array of strings, into b. */
static int sqlite_wh_orgs_json(const struct payment_webhook_query *q, struct buf *b)
{
    (void)buf_puts(b, "[");
    for (size_t i = 0; i < q->n_orgs; i++) {
        (void)buf_puts(b, i ? ",\"" : "\"");
        (void)buf_json_escape(b, q->orgs[i], strlen(q->orgs[i]));
        (void)buf_puts(b, "\"");
    }
    (void)buf_puts(b, "]");
    return buf_failed(b) ? -1 : 0;
}

int sqlite_webhooks_list(payment_store *s, const struct payment_webhook_query *q,
                         payment_store_webhook_fn each, void *arg, int *more)
{
    assert(q->limit >= 1 && q->limit <= PAYMENT_WEBHOOKS_PAGE_MAX);
    *more = 0;
    if (!q->all_orgs && q->n_orgs == 0)
        return PAYMENT_STORE_OK;
    const char *sql = q->all_orgs ? (q->enabled_only ? sql_list_all_enabled : sql_list_all)
                                  : (q->enabled_only ? sql_list_orgs_enabled : sql_list_orgs);
    int err = PAYMENT_STORE_OK;
    sqlite3_stmt *stmt = sqlite_read_stmt((struct sqlite_store *)s, sql, &err);
    if (!stmt)
        return err;
    struct buf orgs = BUF_INIT;
    int rc = sqlite3_bind_text(stmt, 1, q->after_id ? q->after_id : "", -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 2, (int64_t)q->limit + 1);
    if (rc == SQLITE_OK && !q->all_orgs)
        rc = sqlite_wh_orgs_json(q, &orgs) == 0
                 ? sqlite3_bind_text(stmt, 3, orgs.data, (int)orgs.len, SQLITE_STATIC)
                 : SQLITE_NOMEM;
    struct sqlite_wh_each to = {each, arg};
    err = sqlite_page_rows(stmt, rc, q->limit, sqlite_wh_give, &to, more);
    buf_free(&orgs);
    return err;
}

int sqlite_dispatch_pos(payment_store *s, int64_t *pos)
{
    int err = PAYMENT_STORE_OK;
    sqlite3_stmt *stmt = sqlite_read_stmt((struct sqlite_store *)s, sql_dispatch_get, &err);
    if (!stmt)
        return err;
    int found = 0;
    *pos = 0;
    int rc = sqlite_wh_int(stmt, SQLITE_OK, pos, &found);
    return rc == SQLITE_OK ? PAYMENT_STORE_OK : sqlite_map_err(rc);
}
