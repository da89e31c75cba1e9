/* store_sqlite_writer: the write path of the embedded store.  One writer
 * thread owns the write connection.  Submitters queue an operation and
 * return; the writer takes everything queued, applies it in one
 * transaction (a savepoint per operation, so that one operation's SQL error
 * undoes only itself), commits (in WAL mode with synchronous=FULL the commit
 * is the fsync), and only then reports each result: group commit, with no
 * timer.  Between batches it runs the idempotency and events purges, one
 * small transaction each per turn.  Owns the queue, the writer's statements
 * and the payment writes (create, update, delete, their events and
 * idempotency records; store_sqlite_events.c describes the events).
 *
 * Other writes (the webhooks') are OP_CALL operations: a function of their
 * own, run on the write connection in its savepoint like a payment write,
 * which sqlite_call submits and then waits for the batch's commit. */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/sync.h"
#include "payment/store_sqlite.h"

/* Rows of each table the purge deletes per transaction: a few hundred
 * kilobyte records take a few milliseconds, the longest a write waits for
 * the purge. */
#define SQLITE_PURGE_BATCH 256

static const char *const sqlite_wsql[W_COUNT] = {
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
    [W_SAVEPOINT] = "SAVEPOINT op",
    [W_RELEASE] = "RELEASE op",
    [W_ROLLBACK_TO] = "ROLLBACK TO op",
    [W_INSERT] = "INSERT INTO payments (id, organisation_id, version, created_ms, modified_ms,"
                 " currency, payment_scheme, payment_type, reference, end_to_end_reference,"
                 " processing_date, amount_key, doc, deleted)"
                 " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 0)",
    /* created_ms (?4) is the store's: an update never changes it. */
    [W_UPDATE] = "UPDATE payments SET organisation_id = ?2, version = ?3, modified_ms = ?5,"
                 " currency = ?6, payment_scheme = ?7, payment_type = ?8, reference = ?9,"
                 " end_to_end_reference = ?10, processing_date = ?11, amount_key = ?12,"
                 " doc = ?13 WHERE id = ?1 AND version = ?14 AND deleted = 0",
    /* Made once W_EV_DELETE has found the live row at the expected version,
     * in the same savepoint: the tombstone is a version of its own. */
    [W_DELETE] = "UPDATE payments SET deleted = 1, doc = NULL, version = version + 1"
                 " WHERE id = ?1 AND deleted = 0",
    [W_VERSION] = "SELECT version, deleted FROM payments WHERE id = ?1",
    [W_IDEM_INSERT] = "INSERT INTO idempotency (scope, key, fingerprint, status, location, etag,"
                      " body, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    /* The purge: at most ?2 of the oldest rows before ?1, by the time index. */
    [W_IDEM_PURGE] = "DELETE FROM idempotency WHERE rowid IN (SELECT rowid FROM idempotency"
                     " WHERE created_ms < ?1 ORDER BY created_ms LIMIT ?2)",
    [W_OP_PURGE] = "DELETE FROM operations WHERE op_id IN (SELECT op_id FROM operations"
                   " WHERE applied_ms < ?1 ORDER BY applied_ms LIMIT ?2)",
    /* Inside an apply's savepoint: undoes its payment write alone. */
    [W_SAVEPOINT_WRITE] = "SAVEPOINT apply_write",
    [W_RELEASE_WRITE] = "RELEASE apply_write",
    [W_ROLLBACK_TO_WRITE] = "ROLLBACK TO apply_write",
    [W_PART_GET] = "SELECT last_seq, fence FROM partitions WHERE partition = ?1",
    [W_PART_PUT] = "INSERT INTO partitions (partition, last_seq, fence) VALUES (?1, ?2, ?3)"
                   " ON CONFLICT (partition) DO UPDATE SET last_seq = excluded.last_seq,"
                   " fence = excluded.fence",
    [W_OP_EXISTS] = "SELECT 1 FROM operations WHERE op_id = ?1",
    [W_OP_INSERT] = "INSERT INTO operations (op_id, partition, seq, status, error_code, message,"
                    " payment_id, organisation_id, version, applied_ms, fingerprint)"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    /* Events: ?1 id, ?2 payment, ?3 organisation, ?4 version, ?5 type, ?6
     * occurred, ?7 API key id, ?8 request id, ?9 Idempotency-Key, ?10
     * operation id, ?11 changes, ?12 doc. */
    [W_EV_INSERT] = "INSERT INTO events (id, payment_id, organisation_id, version, type,"
                    " occurred_ms, api_key_id, request_id, idempotency_key, operation_id,"
                    " changes, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    /* A delete's event, from the row it deletes (?2, at version ?4 unless
     * ?4 is -1): the document as it was, at the tombstone's version.  Type
     * 4 is PAYMENT_EVENT_DELETED. */
    [W_EV_DELETE] = "INSERT INTO events (id, payment_id, organisation_id, version, type,"
                    " occurred_ms, api_key_id, request_id, idempotency_key, operation_id, doc)"
                    " SELECT ?1, id, organisation_id, version + 1, 4, ?6, ?7, ?8, ?9, ?10, doc"
                    " FROM payments WHERE id = ?2 AND deleted = 0 AND (?4 = -1 OR version = ?4)",
    /* Changes when another connection commits (the events' poll). */
    [W_DATA_VERSION] = "PRAGMA data_version",
    /* The events' retention (store_sqlite_events.c): the feed's floor, a
     * walk of ?2 events above position ?1, and the deletion of the oldest
     * events up to position ?1. */
    [W_FLOOR_GET] = "SELECT value FROM feed_meta WHERE key = 'floor'",
    [W_FLOOR_PUT] = "UPDATE feed_meta SET value = ?1 WHERE key = 'floor'",
    [W_EV_WALK] = "SELECT pos, occurred_ms FROM events WHERE pos > ?1 ORDER BY pos LIMIT ?2",
    [W_EV_PURGE] = "DELETE FROM events WHERE pos <= ?1",
};

/* Prepares every writer statement, once, on the write connection. */
int sqlite_writer_prepare(struct sqlite_store *st)
{
    int rc = SQLITE_OK;
    for (int i = 0; rc == SQLITE_OK && i < W_COUNT; i++)
        rc = sqlite3_prepare_v3(st->wdb, sqlite_wsql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->w[i],
                                NULL);
    return rc;
}

/* Binds text, or NULL for an empty string (absent fixed-width columns). */
static int sqlite_bind_nonempty(sqlite3_stmt *stmt, int i, const char *v)
{
    return v[0] ? sqlite3_bind_text(stmt, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(stmt, i);
}

int sqlite_bind_row_columns(sqlite3_stmt *stmt, const struct payment_row *row)
{
    int rc = sqlite3_bind_text(stmt, 1, row->id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 2, row->organisation_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 3, row->version);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 4, row->created_ms);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 5, row->modified_ms);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 6, row->currency);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 7, row->payment_scheme);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 8, row->payment_type);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 9, row->reference);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 10, row->end_to_end_reference);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_nonempty(stmt, 11, row->processing_date);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_nonempty(stmt, 12, row->amount_key);
    return rc;
}

/* Binds ?1..?13 from row; the strings stay the submitter's (SQLITE_STATIC)
 * since done is called only after the statement is released. */
static int sqlite_bind_row(sqlite3_stmt *stmt, const struct payment_row *row)
{
    int rc = sqlite_bind_row_columns(stmt, row);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text64(stmt, 13, row->doc ? row->doc : "", row->doc ? row->doc_len : 0,
                                 SQLITE_STATIC, SQLITE_UTF8);
    return rc;
}

/* ---- the write path ----------------------------------------------------- */

/* After a compare-and-set changed nothing: ENOTFOUND when the id is unknown
 * or a tombstone, else ECONFLICT with the stored version.  Runs inside the
 * batch's transaction, so nothing can change in between. */
static int sqlite_op_miss(struct sqlite_store *st, struct sqlite_op *op)
{
    sqlite3_stmt *stmt = st->w[W_VERSION];
    int rc = sqlite3_bind_text(stmt, 1, op->row.id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        if (sqlite3_column_int64(stmt, 1) != 0) {
            op->err = PAYMENT_STORE_ENOTFOUND;
        } else {
            op->err = PAYMENT_STORE_ECONFLICT;
            op->current_version = sqlite3_column_int64(stmt, 0);
        }
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        op->err = PAYMENT_STORE_ENOTFOUND;
        rc = SQLITE_OK;
    }
    sqlite_stmt_release(stmt);
    return rc;
}

int sqlite_op_create(struct sqlite_store *st, struct sqlite_op *op)
{
    sqlite3_stmt *stmt = st->w[W_INSERT];
    int rc = sqlite_bind_row(stmt, &op->row);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) {
        op->err = PAYMENT_STORE_OK;
        op->seq = sqlite3_last_insert_rowid(st->wdb);
        rc = SQLITE_OK;
    } else if (sqlite3_extended_errcode(st->wdb) == SQLITE_CONSTRAINT_UNIQUE) {
        /* The only unique column is id, tombstones included. */
        op->err = PAYMENT_STORE_EDUPLICATE;
        rc = SQLITE_OK;
    }
    sqlite_stmt_release(stmt);
    if (rc == SQLITE_OK && op->err == PAYMENT_STORE_OK)
        rc = sqlite_event_record(st, op, PAYMENT_EVENT_CREATED);
    return rc;
}

/* Runs a bound compare-and-set statement: OK when it changed the row, else
 * ENOTFOUND or ECONFLICT as sqlite_op_miss decides. */
static int sqlite_op_cas(struct sqlite_store *st, struct sqlite_op *op, sqlite3_stmt *stmt, int rc)
{
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    int changed = rc == SQLITE_DONE && sqlite3_changes(st->wdb) == 1;
    sqlite_stmt_release(stmt);
    if (rc != SQLITE_DONE)
        return rc;
    if (changed) {
        op->err = PAYMENT_STORE_OK;
        return SQLITE_OK;
    }
    return sqlite_op_miss(st, op);
}

int sqlite_op_update(struct sqlite_store *st, struct sqlite_op *op)
{
    sqlite3_stmt *stmt = st->w[W_UPDATE];
    int rc = sqlite_bind_row(stmt, &op->row);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 14, op->expected_version);
    rc = sqlite_op_cas(st, op, stmt, rc);
    if (rc == SQLITE_OK && op->err == PAYMENT_STORE_OK)
        rc = sqlite_event_record(st, op, PAYMENT_EVENT_UPDATED);
    return rc;
}

/* The event first, while the row still holds the document it records; its
 * insert is the compare-and-set, then the tombstone takes the next version. */
int sqlite_op_delete(struct sqlite_store *st, struct sqlite_op *op)
{
    char event_id[UUID_STR_LEN + 1];
    sqlite3_stmt *stmt = st->w[W_EV_DELETE];
    int rc = sqlite_event_bind_delete(op, stmt, event_id);
    rc = sqlite_op_cas(st, op, stmt, rc);
    if (rc != SQLITE_OK || op->err != PAYMENT_STORE_OK)
        return rc;
    stmt = st->w[W_DELETE];
    rc = sqlite3_bind_text(stmt, 1, op->row.id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    int changed = rc == SQLITE_DONE && sqlite3_changes(st->wdb) == 1;
    sqlite_stmt_release(stmt);
    if (rc != SQLITE_DONE)
        return rc;
    if (!changed)
        return SQLITE_CORRUPT; /* the event was just read from the row */
    op->evented = 1;
    return SQLITE_OK;
}

/* Records the outcome of a write that succeeded, in its savepoint: a key
 * already recorded (another request with it won) fails the write. */
int sqlite_op_idem(struct sqlite_store *st, struct sqlite_op *op)
{
    const struct payment_idem *in = op->idem;
    sqlite3_stmt *stmt = st->w[W_IDEM_INSERT];
    int rc = sqlite3_bind_text(stmt, 1, in->scope, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 2, in->key, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 3, in->fingerprint, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(stmt, 4, in->status);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 5, in->location);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 6, in->etag);
    if (rc == SQLITE_OK)
        rc = in->body ? sqlite3_bind_blob64(stmt, 7, in->body, in->body_len, SQLITE_STATIC)
                      : sqlite3_bind_null(stmt, 7);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 8, in->created_ms);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    } else if (sqlite3_extended_errcode(st->wdb) == SQLITE_CONSTRAINT_UNIQUE) {
        /* The (scope, key) index is the table's only unique constraint. */
        op->err = PAYMENT_STORE_EIDEMPOTENT;
        rc = SQLITE_OK;
    }
    sqlite_stmt_release(stmt);
    return rc;
}

/* Applies op and sets its result.  Returns SQLITE_OK, or the SQLite error
 * that kept it from deciding (op->err is then meaningless). */
static int sqlite_op_apply(struct sqlite_store *st, struct sqlite_op *op)
{
    int rc = SQLITE_MISUSE;
    switch (op->kind) {
    case OP_CREATE: rc = sqlite_op_create(st, op); break;
    case OP_UPDATE: rc = sqlite_op_update(st, op); break;
    case OP_DELETE: rc = sqlite_op_delete(st, op); break;
    case OP_APPLY: return sqlite_op_apply_broker(st, op);
    case OP_CALL: return op->call(st, op->call_arg, &op->err);
    }
    if (rc == SQLITE_OK && op->err == PAYMENT_STORE_OK && op->idem)
        rc = sqlite_op_idem(st, op);
    return rc;
}

static void sqlite_batch_fail(struct sqlite_op *batch, int err)
{
    for (struct sqlite_op *op = batch; op; op = op->next) {
        op->err = err;
        op->current_version = -1;
        op->seq = 0;
    }
}

/* Gives up the batch's transaction: every operation fails with err. */
static void sqlite_batch_abort(struct sqlite_store *st, struct sqlite_op *batch, int err)
{
    /* Some errors (IOERR, FULL) have already rolled the transaction back. */
    if (!sqlite3_get_autocommit(st->wdb)) {
        /* If even ROLLBACK fails the connection closes the transaction
         * itself before the next BEGIN can succeed; nothing more to do. */
        (void)sqlite_stmt_run(st->w[W_ROLLBACK]);
    }
    sqlite_batch_fail(batch, err);
}

/* Whether op, applied with result rc, must have its own changes undone
 * (the batch then goes on without them). */
static int sqlite_op_undone(const struct sqlite_op *op, int rc)
{
    return rc != SQLITE_OK || op->err == PAYMENT_STORE_EIDEMPOTENT ||
           (op->kind == OP_CALL && op->err != PAYMENT_STORE_OK);
}

/* Applies one savepoint-wrapped operation.  Returns SQLITE_OK when the
 * transaction is still good (op->err says how op went), else the error that
 * broke the transaction. */
static int sqlite_batch_step(struct sqlite_store *st, struct sqlite_op *op)
{
    int rc = sqlite_stmt_run(st->w[W_SAVEPOINT]);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite_op_apply(st, op);
    if (sqlite_op_undone(op, rc)) {
        /* Undo the operation's own changes; the batch goes on. */
        if (rc != SQLITE_OK)
            op->err = sqlite_map_err(rc);
        op->current_version = -1;
        op->seq = 0;
        op->evented = 0;
        if (sqlite3_get_autocommit(st->wdb))
            return rc != SQLITE_OK ? rc : SQLITE_ERROR;
        rc = sqlite_stmt_run(st->w[W_ROLLBACK_TO]);
        if (rc != SQLITE_OK)
            return rc;
    }
    return sqlite_stmt_run(st->w[W_RELEASE]);
}

/* The payment writes of the transaction just begun, applied without a
 * savepoint each: a savepoint costs a copy of every page an operation
 * touches first (SQLite's statement journal, in memory), about a third of
 * the writer's work on a create.  Almost every write goes through; when one
 * must be undone (an Idempotency-Key taken meanwhile, an SQL error), or an
 * SQL error ended the transaction, this returns 0 and the caller rolls the
 * transaction back and applies the whole batch again, an operation per
 * savepoint.  OP_CALL writes are left for the caller: a call may act
 * beyond the store (a claim hands its rows out), so it must run once. */
static int sqlite_batch_plain(struct sqlite_store *st, struct sqlite_op *batch)
{
    for (struct sqlite_op *op = batch; op; op = op->next) {
        if (op->kind == OP_CALL)
            continue;
        if (sqlite_op_undone(op, sqlite_op_apply(st, op)))
            return 0;
    }
    return 1;
}

/* Forgets what a rolled-back application of op decided. */
static void sqlite_op_reset(struct sqlite_op *op)
{
    op->err = PAYMENT_STORE_OK;
    op->current_version = -1;
    op->seq = 0;
    op->evented = 0;
}

/* Runs a batch in one transaction and sets every operation's result: the
 * payment writes first, without savepoints (sqlite_batch_plain), then the
 * calls, each in a savepoint; or, when a payment write must be undone,
 * every operation in order, each in a savepoint.  The batch's operations
 * were all submitted before its commit, so either order is one they may
 * have run in.  Returns whether the commit holds events. */
static int sqlite_batch_run(struct sqlite_store *st, struct sqlite_op *batch)
{
    int rc = sqlite_stmt_run(st->w[W_BEGIN]);
    if (rc != SQLITE_OK) {
        sqlite_batch_abort(st, batch, sqlite_map_err(rc));
        return 0;
    }
    int plain = sqlite_batch_plain(st, batch);
    if (!plain) {
        if (!sqlite3_get_autocommit(st->wdb))
            rc = sqlite_stmt_run(st->w[W_ROLLBACK]);
        if (rc == SQLITE_OK)
            rc = sqlite_stmt_run(st->w[W_BEGIN]);
        if (rc != SQLITE_OK) {
            sqlite_batch_abort(st, batch, sqlite_map_err(rc));
            return 0;
        }
        for (struct sqlite_op *op = batch; op; op = op->next)
            sqlite_op_reset(op);
    }
    for (struct sqlite_op *op = batch; op; op = op->next) {
        if (plain && op->kind != OP_CALL)
            continue; /* applied already */
        rc = sqlite_batch_step(st, op);
        if (rc != SQLITE_OK) {
            sqlite_batch_abort(st, batch, sqlite_map_err(rc));
            return 0;
        }
    }
    rc = sqlite_stmt_run(st->w[W_COMMIT]);
    if (rc != SQLITE_OK) {
        sqlite_batch_abort(st, batch, sqlite_map_err(rc));
        return 0;
    }
    atomic_fetch_add(&st->commits, 1);
    uint64_t n = 0;
    int events = 0;
    for (struct sqlite_op *op = batch; op; op = op->next) {
        n++;
        events |= op->evented;
    }
    metrics_sizes_observe(&st->batches, n);
    return events;
}

/* Reports and frees a finished batch; called without the queue lock. */
static void sqlite_batch_report(struct sqlite_store *st, struct sqlite_op *batch)
{
    while (batch) {
        struct sqlite_op *op = batch;
        batch = op->next;
        atomic_fetch_add(&st->writes, 1);
        op->done(op->arg, op->err, op->err == PAYMENT_STORE_ECONFLICT ? op->current_version : -1,
                 op->kind == OP_CREATE && op->err == PAYMENT_STORE_OK ? op->seq : 0);
        free(op);
    }
}

/* Deletes at most SQLITE_PURGE_BATCH rows older than before_ms from one
 * purged table: sets *more when it deleted that many. */
static int sqlite_purge_table(struct sqlite_store *st, enum sqlite_wstmt purge, int64_t before_ms,
                              int *more)
{
    sqlite3_stmt *stmt = st->w[purge];
    int rc = sqlite3_bind_int64(stmt, 1, before_ms);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(stmt, 2, SQLITE_PURGE_BATCH);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    sqlite_stmt_release(stmt);
    if (rc != SQLITE_DONE)
        return rc;
    if (sqlite3_changes(st->wdb) >= SQLITE_PURGE_BATCH)
        *more = 1;
    return SQLITE_OK;
}

/* One turn of the purge, in a transaction of its own between two batches
 * of writes: the oldest idempotency records and operation outcomes before
 * before_ms, a batch of each.  The purge is over when fewer were left, or
 * when the store cannot purge now (the next request tries again), unless a
 * later cut-off was asked for meanwhile. */
static void sqlite_purge_turn(struct sqlite_store *st, int64_t before_ms)
{
    int more = 0;
    int rc = sqlite_stmt_run(st->w[W_BEGIN]);
    if (rc == SQLITE_OK)
        rc = sqlite_purge_table(st, W_IDEM_PURGE, before_ms, &more);
    if (rc == SQLITE_OK)
        rc = sqlite_purge_table(st, W_OP_PURGE, before_ms, &more);
    if (rc == SQLITE_OK)
        rc = sqlite_stmt_run(st->w[W_COMMIT]);
    if (rc != SQLITE_OK) {
        more = 0;
        if (!sqlite3_get_autocommit(st->wdb))
            (void)sqlite_stmt_run(st->w[W_ROLLBACK]); /* a failed ROLLBACK ends it too */
    }
    if (more)
        return;
    store_lock(&st->mu);
    if (st->purge_before_ms == before_ms)
        st->purge_before_ms = SQLITE_NO_PURGE;
    store_unlock(&st->mu);
}

/* One turn of the events' purge; a part that has no more to do is over,
 * unless a later cut-off was asked for meanwhile. */
static void sqlite_events_purge_step(struct sqlite_store *st, int64_t feed_before,
                                     int64_t history_before)
{
    int more_feed = 0, more_history = 0;
    sqlite_events_purge_turn(st, feed_before, history_before, &more_feed, &more_history);
    store_lock(&st->mu);
    if (!more_feed && st->feed_purge_ms == feed_before)
        st->feed_purge_ms = SQLITE_NO_PURGE;
    if (!more_history && st->history_purge_ms == history_before)
        st->history_purge_ms = SQLITE_NO_PURGE;
    store_unlock(&st->mu);
}

/* What the writer takes for one turn, under the queue lock. */
struct sqlite_turn {
    struct sqlite_op *batch;   /* every write queued, or NULL */
    int64_t purge_before;      /* the idempotency purge's cut-off, or SQLITE_NO_PURGE */
    int64_t feed_before;       /* the events purge's cut-offs, or SQLITE_NO_PURGE */
    int64_t history_before;
    void (*ev_fn)(void *arg);  /* the events' subscriber, or NULL */
    void *ev_arg;
    int closing;
};

/* Whether the writer has something to do now; the caller holds st->mu. */
static int sqlite_writer_has_work(const struct sqlite_store *st)
{
    return st->head || st->purge_before_ms != SQLITE_NO_PURGE ||
           st->feed_purge_ms != SQLITE_NO_PURGE || st->history_purge_ms != SQLITE_NO_PURGE ||
           st->closing;
}

/* Waits, holding st->mu, for work, or with a subscriber at most until its
 * next poll is due. */
static void sqlite_writer_wait(struct sqlite_store *st)
{
    while (!sqlite_writer_has_work(st)) {
        if (!st->ev_fn) {
            if (pthread_cond_wait(&st->wake, &st->mu) != 0)
                abort();
            continue;
        }
        int64_t due = st->poll_next_us;
        if (clock_mono_us() >= due)
            return;
        struct timespec until = {.tv_sec = due / 1000000, .tv_nsec = due % 1000000 * 1000};
        int rc = pthread_cond_timedwait(&st->wake, &st->mu, &until);
        if (rc == ETIMEDOUT)
            return;
        if (rc != 0)
            abort();
    }
}

static void sqlite_writer_take(struct sqlite_store *st, struct sqlite_turn *t)
{
    store_lock(&st->mu);
    sqlite_writer_wait(st);
    t->batch = st->head;
    st->head = st->tail = NULL;
    t->closing = st->closing;
    /* A purge is best effort: closing abandons it. */
    t->purge_before = st->closing ? SQLITE_NO_PURGE : st->purge_before_ms;
    t->feed_before = st->closing ? SQLITE_NO_PURGE : st->feed_purge_ms;
    t->history_before = st->closing ? SQLITE_NO_PURGE : st->history_purge_ms;
    t->ev_fn = st->ev_fn;
    t->ev_arg = st->ev_arg;
    store_unlock(&st->mu);
}

/* The writer thread: each turn applies every write queued, in one
 * transaction, then one turn of a purge asked for, so that a write waits
 * for at most one small purge transaction, never for a whole purge.  With
 * a subscriber, it is told after each commit that holds events, and, every
 * SQLITE_EVENTS_POLL_US, of other connections' commits. */
static void *sqlite_writer_main(void *arg)
{
    struct sqlite_store *st = arg;
    for (;;) {
        struct sqlite_turn t;
        sqlite_writer_take(st, &t);
        if (!t.batch && t.closing)
            return NULL; /* everything queued has been done */
        if (t.batch) {
            int events = sqlite_batch_run(st, t.batch);
            sqlite_batch_report(st, t.batch);
            if (events && t.ev_fn)
                t.ev_fn(t.ev_arg);
        }
        if (t.purge_before != SQLITE_NO_PURGE)
            sqlite_purge_turn(st, t.purge_before);
        if (t.feed_before != SQLITE_NO_PURGE || t.history_before != SQLITE_NO_PURGE)
            sqlite_events_purge_step(st, t.feed_before, t.history_before);
        if (t.ev_fn)
            st->poll_next_us = sqlite_events_poll(st, t.ev_fn, t.ev_arg);
    }
}

/* Reports op at once, before it reaches the writer. */
static void sqlite_op_reject(struct sqlite_op *op, int err)
{
    op->done(op->arg, err, -1, 0);
    free(op);
}

static void sqlite_submit(struct sqlite_store *st, struct sqlite_op *op)
{
    store_lock(&st->mu);
    if (st->closing) {
        store_unlock(&st->mu);
        sqlite_op_reject(op, PAYMENT_STORE_EUNAVAILABLE);
        return;
    }
    int was_empty = st->head == NULL;
    if (st->tail)
        st->tail->next = op;
    else
        st->head = op;
    st->tail = op;
    /* The writer waits only on an empty queue. */
    if (was_empty && pthread_cond_signal(&st->wake) != 0)
        abort();
    store_unlock(&st->mu);
}

/* A new operation, or NULL after reporting EINTERNAL (out of memory). */
static struct sqlite_op *sqlite_op_new(enum sqlite_op_kind kind, payment_store_done_fn done,
                                       void *arg)
{
    struct sqlite_op *op = calloc(1, sizeof *op);
    if (!op) {
        done(arg, PAYMENT_STORE_EINTERNAL, -1, 0);
        return NULL;
    }
    op->kind = kind;
    op->done = done;
    op->arg = arg;
    op->current_version = -1;
    op->expected_version = -1;
    return op;
}

void sqlite_create(payment_store *s, const struct payment_row *row,
                          const struct payment_idem *idem, const struct payment_event_info *ev, payment_store_done_fn done, void *arg)
{
    struct sqlite_op *op = sqlite_op_new(OP_CREATE, done, arg);
    if (!op)
        return;
    op->row = *row;
    op->idem = idem;
    op->ev = ev;
    sqlite_submit((struct sqlite_store *)s, op);
}

void sqlite_update(payment_store *s, const struct payment_row *row,
                          int64_t expected_version, const struct payment_idem *idem,
                          const struct payment_event_info *ev, payment_store_done_fn done, void *arg)
{
    struct sqlite_op *op = sqlite_op_new(OP_UPDATE, done, arg);
    if (!op)
        return;
    op->row = *row;
    op->idem = idem;
    op->ev = ev;
    op->expected_version = expected_version;
    sqlite_submit((struct sqlite_store *)s, op);
}

void sqlite_remove(payment_store *s, const char *id, int64_t expected_version,
                          const struct payment_idem *idem, const struct payment_event_info *ev, payment_store_done_fn done, void *arg)
{
    struct sqlite_op *op = sqlite_op_new(OP_DELETE, done, arg);
    if (!op)
        return;
    op->idem = idem;
    op->ev = ev;
    size_t len = strlen(id);
    if (len > UUID_STR_LEN) {
        sqlite_op_reject(op, PAYMENT_STORE_ENOTFOUND); /* longer than any stored id */
        return;
    }
    memcpy(op->row.id, id, len + 1);
    op->expected_version = expected_version;
    sqlite_submit((struct sqlite_store *)s, op);
}

/* Queues a broker operation (store.c has checked it). */
void sqlite_apply(payment_store *s, const struct payment_apply *a,
                         payment_store_done_fn done, void *arg)
{
    struct sqlite_op *op = sqlite_op_new(OP_APPLY, done, arg);
    if (!op)
        return;
    op->apply = *a;
    op->idem = a->idem;
    op->ev = a->event;
    op->expected_version = a->expected_version;
    if (a->row)
        op->row = *a->row;
    if (a->kind == PAYMENT_APPLY_DELETE)
        memcpy(op->row.id, a->payment_id, strlen(a->payment_id) + 1);
    sqlite_submit((struct sqlite_store *)s, op);
}

/* What a submitter of an OP_CALL waits on. */
struct sqlite_call_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int reported; /* the operation was reported, under mu */
    int err;      /* its result */
};

/* The OP_CALL's done: wakes its submitter. */
static void sqlite_call_done(void *arg, int err, int64_t current_version, int64_t seq)
{
    (void)current_version;
    (void)seq;
    struct sqlite_call_wait *w = arg;
    sync_lock(&w->mu);
    w->err = err;
    w->reported = 1;
    sync_broadcast(&w->cv);
    sync_unlock(&w->mu);
}

int sqlite_call(struct sqlite_store *st, sqlite_call_fn fn, void *arg)
{
    assert(!st->writer_started || !pthread_equal(pthread_self(), st->writer));
    struct sqlite_call_wait w = {.reported = 0, .err = PAYMENT_STORE_EINTERNAL};
    if (pthread_mutex_init(&w.mu, NULL) != 0)
        return PAYMENT_STORE_EINTERNAL;
    if (pthread_cond_init(&w.cv, NULL) != 0) {
        if (pthread_mutex_destroy(&w.mu) != 0)
            abort(); /* initialised and unlocked */
        return PAYMENT_STORE_EINTERNAL;
    }
    struct sqlite_op *op = sqlite_op_new(OP_CALL, sqlite_call_done, &w);
    if (op) { /* else reported already */
        op->call = fn;
        op->call_arg = arg;
        sqlite_submit(st, op);
    }
    sync_lock(&w.mu);
    while (!w.reported)
        sync_wait(&w.cv, &w.mu);
    sync_unlock(&w.mu);
    if (pthread_cond_destroy(&w.cv) != 0 || pthread_mutex_destroy(&w.mu) != 0)
        abort(); /* no thread waits on them any more */
    return w.err;
}

/* Asks the writer thread to purge, a batch per turn between its writes.
 * A purge asked for while one runs moves its cut-off later, never earlier. */
void sqlite_idem_purge(payment_store *s, int64_t before_ms)
{
    struct sqlite_store *st = (struct sqlite_store *)s;
    store_lock(&st->mu);
    if (!st->closing && before_ms > st->purge_before_ms) {
        st->purge_before_ms = before_ms;
        if (pthread_cond_signal(&st->wake) != 0)
            abort();
    }
    store_unlock(&st->mu);
}

void sqlite_stats(payment_store *s, struct payment_store_stats *out)
{
    struct sqlite_store *st = (struct sqlite_store *)s;
    out->commits = atomic_load(&st->commits);
    out->writes = atomic_load(&st->writes);
    out->batches = &st->batches;
    out->checkpoints = atomic_load(&st->ckpt.runs);
}

/* Starts the writer with every signal blocked: signals are the main thread's. */
int sqlite_writer_start(struct sqlite_store *st)
{
    sigset_t all, old;
    if (sigfillset(&all) != 0 || pthread_sigmask(SIG_BLOCK, &all, &old) != 0)
        return -1;
    int rc = pthread_create(&st->writer, NULL, sqlite_writer_main, st);
    if (pthread_sigmask(SIG_SETMASK, &old, NULL) != 0)
        abort(); /* cannot fail with a mask it returned */
    if (rc != 0)
        return -1;
    st->writer_started = 1;
    return 0;
}
