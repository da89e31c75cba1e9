/* store_pg_batch: a batch's transaction on the PostgreSQL store's write
 * connection (the writer thread, store_pg_writer.c, hands each batch here):
 * the write lock and its counters, the savepoints, the payment writes
 * (create, update, delete and their idempotency records; their events are
 * store_pg_events.c's, the broker's applies store_pg_apply.c's), and what
 * is done when an operation or the transaction fails.
 *
 * A batch's transaction: BEGIN; the write lock (store_pg.h), which reads
 * feed_meta 'seq' and 'pos' FOR UPDATE; the payment writes without
 * savepoints; the calls (OP_CALL), each in a savepoint; the counters that
 * moved written back; COMMIT.  When a payment write must be undone (its
 * Idempotency-Key taken by another write, an SQL error) the transaction is
 * rolled back and the batch applied again, an operation per savepoint, so
 * that the undone one leaves no trace.  A transaction the server could not
 * serialize (PG_ERETRY) is run again whole, PG_RETRY_MAX times at most; a
 * call may so run more than once, and only its last run commits.  A lost
 * connection fails every operation of the batch with EUNAVAILABLE (whether
 * a COMMIT whose answer was lost took effect is unknown: the client retries
 * with its Idempotency-Key); the next batch connects again (pg_exec does).
 *
 * Counters: sequence numbers and positions are handed out by pg_next_seq
 * and pg_next_pos from the values the lock read, and a savepoint rolled back
 * gives its numbers back, so a committed batch leaves no gap.  They are the
 * writer thread's: thread-local, since each open store has its own writer
 * and every function here runs on it. */
#include <assert.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "payment/store_pg.h"

/* Savepoints open at once at most: an operation's, a call's or an apply's
 * own inside it, and room to spare. */
#define PG_SAVEPOINTS_MAX 8
/* A payment write that must be undone: apply the batch per savepoint. */
#define PG_UNDO 1

/* The write lock, and the counters read with it. */
static const char pg_sql_lock[] =
    "SELECT key, value FROM feed_meta WHERE key IN ('pos', 'seq') FOR UPDATE";
/* The counters written back: only a row whose value moved is updated. */
static const char pg_sql_counters_put[] =
    "UPDATE feed_meta SET value = CASE key WHEN 'seq' THEN $1::bigint ELSE $2::bigint END"
    " WHERE (key = 'seq' AND value <> $1::bigint) OR (key = 'pos' AND value <> $2::bigint)";
/* Row parameters: $1 id, $2 organisation, $3 version, $4 modified, $5..$9
 * the text columns, $10 processing date, $11 amount key, $12 doc. */
static const char pg_sql_insert[] =
    "INSERT INTO payments (id, organisation_id, version, modified_ms, currency, payment_scheme,"
    " payment_type, reference, end_to_end_reference, processing_date, amount_key, doc,"
    " created_ms, seq, deleted)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, FALSE)"
    " ON CONFLICT (id) DO NOTHING";
/* created_ms is the store's: an update never changes it. */
static const char pg_sql_update[] =
    "UPDATE payments SET organisation_id = $2, version = $3, modified_ms = $4, currency = $5,"
    " payment_scheme = $6, payment_type = $7, reference = $8, end_to_end_reference = $9,"
    " processing_date = $10, amount_key = $11, doc = $12"
    " WHERE id = $1 AND version = $13 AND NOT deleted";
/* Made once pg_event_record_delete has found the live row at the expected
 * version: the tombstone is a version of its own. */
static const char pg_sql_delete[] =
    "UPDATE payments SET deleted = TRUE, doc = NULL, version = version + 1"
    " WHERE id = $1 AND NOT deleted";
static const char pg_sql_version[] = "SELECT version, deleted FROM payments WHERE id = $1";
static const char pg_sql_idem_insert[] =
    "INSERT INTO idempotency (scope, key, fingerprint, status, location, etag, body, created_ms)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (scope, key) DO NOTHING";

/* The writer thread's counters and savepoints. */
struct pg_counters {
    int locked;                          /* a batch's transaction holds the write lock */
    int64_t seq, pos;                    /* the last number given of each */
    int64_t seq_read, pos_read;          /* as the lock read them */
    int depth;                           /* savepoints open */
    int64_t saved_seq[PG_SAVEPOINTS_MAX]; /* seq and pos when each was made */
    int64_t saved_pos[PG_SAVEPOINTS_MAX];
};

static _Thread_local struct pg_counters pg_counters;

int64_t pg_next_seq(struct pg_store *st)
{
    (void)st;
    assert(pg_counters.locked);
    return ++pg_counters.seq;
}

int64_t pg_next_pos(struct pg_store *st)
{
    (void)st;
    assert(pg_counters.locked);
    return ++pg_counters.pos;
}

/* ---- savepoints ----------------------------------------------------------- */

/* Runs fmt with the savepoint level (once or twice) on c. */
static int pg_savepoint_run(struct pg_conn *c, const char *fmt, int level)
{
    char sql[80];
    int n = snprintf(sql, sizeof sql, fmt, level, level);
    assert(n > 0 && (size_t)n < sizeof sql);
    (void)n;
    return pg_exec_plain(c, sql);
}

int pg_savepoint(struct pg_conn *c)
{
    struct pg_counters *k = &pg_counters;
    assert(k->depth >= 0 && k->depth < PG_SAVEPOINTS_MAX);
    int rc = pg_savepoint_run(c, "SAVEPOINT w%d", k->depth + 1);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    k->saved_seq[k->depth] = k->seq;
    k->saved_pos[k->depth] = k->pos;
    k->depth++;
    return PAYMENT_STORE_OK;
}

int pg_release(struct pg_conn *c)
{
    struct pg_counters *k = &pg_counters;
    assert(k->depth > 0);
    int rc = pg_savepoint_run(c, "RELEASE SAVEPOINT w%d", k->depth);
    k->depth--;
    return rc;
}

/* Undoes the savepoint's changes and ends it; its numbers are given again. */
int pg_rollback_to(struct pg_conn *c)
{
    struct pg_counters *k = &pg_counters;
    assert(k->depth > 0);
    int rc = pg_savepoint_run(c, "ROLLBACK TO SAVEPOINT w%d; RELEASE SAVEPOINT w%d", k->depth);
    k->depth--;
    k->seq = k->saved_seq[k->depth];
    k->pos = k->saved_pos[k->depth];
    return rc;
}

/* Makes the savepoint made at level (depth level before it) the innermost
 * again, forgetting those a call left open inside it: releasing or rolling
 * back to it ends them with it. */
static void pg_savepoint_unwind(int level)
{
    assert(pg_counters.depth >= level + 1); /* a call ends no savepoint it did not make */
    pg_counters.depth = level + 1;
}

/* ---- the payment writes ---------------------------------------------------- */

/* The number of rows a statement changed. */
static long pg_changed(PGresult *res)
{
    return strtol(PQcmdTuples(res), NULL, 10);
}

/* Appends $1..$12, a row's columns (store_pg_writer.c's order); the strings
 * stay the submitter's, which done is called after. */
static void pg_params_row(struct pg_params *p, const struct payment_row *row)
{
    pg_param_text(p, row->id);
    pg_param_text(p, row->organisation_id);
    pg_param_int(p, row->version);
    pg_param_int(p, row->modified_ms);
    pg_param_text(p, row->currency);
    pg_param_text(p, row->payment_scheme);
    pg_param_text(p, row->payment_type);
    pg_param_text(p, row->reference);
    pg_param_text(p, row->end_to_end_reference);
    pg_param_nonempty(p, row->processing_date);
    pg_param_nonempty(p, row->amount_key);
    pg_param_textn(p, row->doc ? row->doc : "", row->doc ? row->doc_len : 0);
}

/* After a compare-and-set changed nothing: ENOTFOUND when the id is unknown
 * or a tombstone, else ECONFLICT with the stored version.  Runs under the
 * write lock, so nothing can change in between. */
static int pg_op_miss(struct pg_store *st, struct pg_op *op)
{
    struct pg_params p;
    pg_params_init(&p);
    pg_param_text(&p, op->row.id);
    PGresult *res;
    int rc = pg_exec(&st->wconn, pg_sql_version, &p, &res);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    op->err = PAYMENT_STORE_ENOTFOUND;
    if (PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 1), "f") == 0) {
        op->err = PAYMENT_STORE_ECONFLICT;
        op->current_version = pg_int(res, 0, 0);
    }
    PQclear(res);
    return PAYMENT_STORE_OK;
}

int pg_op_create(struct pg_store *st, struct pg_op *op)
{
    int64_t seq = pg_next_seq(st);
    struct pg_params p;
    pg_params_init(&p);
    pg_params_row(&p, &op->row);
    pg_param_int(&p, op->row.created_ms);
    pg_param_int(&p, seq);
    PGresult *res;
    int rc = pg_exec(&st->wconn, pg_sql_insert, &p, &res);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    long changed = pg_changed(res);
    PQclear(res);
    if (changed != 1) {
        /* The id is taken, tombstones included: the number is given again. */
        assert(pg_counters.seq == seq);
        pg_counters.seq--;
        op->err = PAYMENT_STORE_EDUPLICATE;
        return PAYMENT_STORE_OK;
    }
    op->err = PAYMENT_STORE_OK;
    op->seq = seq;
    return pg_event_record(st, op, PAYMENT_EVENT_CREATED);
}

int pg_op_update(struct pg_store *st, struct pg_op *op)
{
    struct pg_params p;
    pg_params_init(&p);
    pg_params_row(&p, &op->row);
    pg_param_int(&p, op->expected_version);
    PGresult *res;
    int rc = pg_exec(&st->wconn, pg_sql_update, &p, &res);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    long changed = pg_changed(res);
    PQclear(res);
    if (changed != 1)
        return pg_op_miss(st, op);
    op->err = PAYMENT_STORE_OK;
    return pg_event_record(st, op, PAYMENT_EVENT_UPDATED);
}

/* The event first, while the row still holds the document it records; its
 * insert is the compare-and-set, then the tombstone takes the next version. */
int pg_op_delete(struct pg_store *st, struct pg_op *op)
{
    int recorded = 0;
    int64_t pos = pg_counters.pos;
    int rc = pg_event_record_delete(st, op, &recorded);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    if (!recorded) {
        pg_counters.pos = pos; /* a position taken for no event is given again */
        return pg_op_miss(st, op);
    }
    struct pg_params p;
    pg_params_init(&p);
    pg_param_text(&p, op->row.id);
    PGresult *res;
    rc = pg_exec(&st->wconn, pg_sql_delete, &p, &res);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    long changed = pg_changed(res);
    PQclear(res);
    if (changed != 1)
        return PAYMENT_STORE_EINTERNAL; /* the event was just read from the row */
    op->err = PAYMENT_STORE_OK;
    return PAYMENT_STORE_OK;
}

/* Records the outcome of a write that succeeded: a key already recorded
 * (another request with it won) fails the write, which the caller undoes. */
int pg_op_idem(struct pg_store *st, struct pg_op *op)
{
    const struct payment_idem *in = op->idem;
    assert(in && in->scope && in->key && in->fingerprint);
    struct pg_params p;
    pg_params_init(&p);
    pg_param_text(&p, in->scope);
    pg_param_text(&p, in->key);
    pg_param_text(&p, in->fingerprint);
    pg_param_int(&p, in->status);
    pg_param_text(&p, in->location);
    pg_param_text(&p, in->etag);
    pg_param_textn(&p, in->body, in->body_len);
    pg_param_int(&p, in->created_ms);
    PGresult *res;
    int rc = pg_exec(&st->wconn, pg_sql_idem_insert, &p, &res);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    if (pg_changed(res) != 1)
        op->err = PAYMENT_STORE_EIDEMPOTENT;
    PQclear(res);
    return PAYMENT_STORE_OK;
}

/* Applies op and sets its result.  Returns PAYMENT_STORE_OK, or the error
 * that kept it from deciding (op->err is then meaningless). */
static int pg_op_apply(struct pg_store *st, struct pg_op *op)
{
    int rc = PAYMENT_STORE_EINTERNAL;
    switch (op->kind) {
    case PG_OP_CREATE: rc = pg_op_create(st, op); break;
    case PG_OP_UPDATE: rc = pg_op_update(st, op); break;
    case PG_OP_DELETE: rc = pg_op_delete(st, op); break;
    case PG_OP_APPLY: return pg_op_apply_broker(st, op);
    case PG_OP_CALL: return op->call(st, &st->wconn, op->call_arg, &op->err);
    }
    if (rc == PAYMENT_STORE_OK && op->err == PAYMENT_STORE_OK && op->idem)
        rc = pg_op_idem(st, op);
    return rc;
}

/* ---- the batch's transaction ---------------------------------------------- */

/* Whether an error ends the batch's transaction (else it ends only the
 * operation that met it). */
static int pg_err_fatal(int rc)
{
    return rc == PG_ERETRY || rc == PAYMENT_STORE_EUNAVAILABLE;
}

/* Whether op, applied with result rc, must have its own changes undone. */
static int pg_op_undone(const struct pg_op *op, int rc)
{
    return rc != PAYMENT_STORE_OK || op->err == PAYMENT_STORE_EIDEMPOTENT ||
           (op->kind == PG_OP_CALL && op->err != PAYMENT_STORE_OK);
}

/* Forgets what a rolled-back application of op decided. */
static void pg_op_reset(struct pg_op *op)
{
    op->err = PAYMENT_STORE_OK;
    op->current_version = -1;
    op->seq = 0;
}

/* BEGIN and the write lock: the counters read, nothing given yet. */
static int pg_batch_begin(struct pg_store *st)
{
    struct pg_counters *k = &pg_counters;
    k->locked = 0;
    k->depth = 0;
    int rc = pg_exec_plain(&st->wconn, "BEGIN");
    PGconn *pg = st->wconn.pg;
    if (rc == PAYMENT_STORE_EUNAVAILABLE && pg && PQstatus(pg) == CONNECTION_BAD) {
        /* The connection was lost while idle (a restart, a failover, a
         * timeout), found by BEGIN: nothing of the batch was sent, so it
         * goes on once on a new connection (pg_exec_plain makes it). */
        rc = pg_exec_plain(&st->wconn, "BEGIN");
    }
    if (rc != PAYMENT_STORE_OK)
        return rc;
    PGresult *res;
    rc = pg_exec(&st->wconn, pg_sql_lock, NULL, &res);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    int have = 0;
    for (int r = 0; r < PQntuples(res); r++) {
        const char *key = pg_text(res, r, 0);
        if (key && strcmp(key, "seq") == 0) {
            k->seq_read = pg_int(res, r, 1);
            have |= 1;
        } else if (key && strcmp(key, "pos") == 0) {
            k->pos_read = pg_int(res, r, 1);
            have |= 2;
        }
    }
    PQclear(res);
    if (have != 3)
        return PAYMENT_STORE_EINTERNAL; /* the schema made both rows */
    k->seq = k->seq_read;
    k->pos = k->pos_read;
    k->locked = 1;
    return PAYMENT_STORE_OK;
}

/* Ends the batch's transaction without committing, when one is open: a
 * lost connection has ended it already (and is not connected again here). */
static void pg_batch_rollback(struct pg_store *st)
{
    PGconn *pg = st->wconn.pg;
    PGTransactionStatusType ts = pg ? PQtransactionStatus(pg) : PQTRANS_UNKNOWN;
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR)
        (void)pg_exec_plain(&st->wconn, "ROLLBACK"); /* a failed one ends it too */
    pg_counters.locked = 0;
}

/* Writes back the counters that moved, then COMMIT. */
static int pg_batch_commit(struct pg_store *st)
{
    struct pg_counters *k = &pg_counters;
    assert(k->locked && k->depth == 0);
    int rc = PAYMENT_STORE_OK;
    if (k->seq != k->seq_read || k->pos != k->pos_read) {
        struct pg_params p;
        pg_params_init(&p);
        pg_param_int(&p, k->seq);
        pg_param_int(&p, k->pos);
        rc = pg_exec(&st->wconn, pg_sql_counters_put, &p, NULL);
    }
    if (rc != PAYMENT_STORE_OK)
        return rc;
    /* Every statement ran inside the transaction: none was run on a
     * connection made again since BEGIN. */
    PGconn *pg = st->wconn.pg;
    if (!pg || PQtransactionStatus(pg) != PQTRANS_INTRANS)
        return PAYMENT_STORE_EUNAVAILABLE;
    return pg_exec_plain(&st->wconn, "COMMIT");
}

/* Applies one operation in a savepoint of its own.  Returns
 * PAYMENT_STORE_OK when the transaction is still good (op->err says how op
 * went), else the error that broke it. */
static int pg_batch_step(struct pg_store *st, struct pg_op *op)
{
    int level = pg_counters.depth;
    int rc = pg_savepoint(&st->wconn);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    rc = pg_op_apply(st, op);
    if (pg_err_fatal(rc))
        return rc;
    pg_savepoint_unwind(level);
    if (!pg_op_undone(op, rc))
        return pg_release(&st->wconn);
    /* Undo the operation's own changes; the batch goes on. */
    if (rc != PAYMENT_STORE_OK)
        op->err = rc == PAYMENT_STORE_EDUPLICATE ? PAYMENT_STORE_EINTERNAL : rc;
    op->current_version = -1;
    op->seq = 0;
    return pg_rollback_to(&st->wconn);
}

/* The payment writes of the transaction just begun, without a savepoint
 * each: almost every write goes through, and a savepoint costs a round trip
 * and a subtransaction.  Returns PG_UNDO when one must be undone (an
 * Idempotency-Key taken meanwhile, an SQL error): the caller rolls back and
 * applies the batch again, an operation per savepoint.  OP_CALL writes are
 * left for the caller: a call may act beyond the store (a claim hands its
 * rows out), so it runs once per transaction. */
static int pg_batch_plain(struct pg_store *st, struct pg_op *batch)
{
    for (struct pg_op *op = batch; op; op = op->next) {
        if (op->kind == PG_OP_CALL)
            continue;
        int rc = pg_op_apply(st, op);
        if (pg_err_fatal(rc))
            return rc;
        if (pg_op_undone(op, rc))
            return PG_UNDO;
    }
    return PAYMENT_STORE_OK;
}

/* The operations of batch in savepoints: the calls only when the payment
 * writes were applied already (plain), else every operation in order. */
static int pg_batch_steps(struct pg_store *st, struct pg_op *batch, int plain)
{
    for (struct pg_op *op = batch; op; op = op->next) {
        if (plain && op->kind != PG_OP_CALL)
            continue; /* applied already */
        int rc = pg_batch_step(st, op);
        if (rc != PAYMENT_STORE_OK)
            return rc;
    }
    return PAYMENT_STORE_OK;
}

/* One try of a batch in one transaction, setting every operation's result:
 * the payment writes without savepoints, then the calls in theirs; or, when
 * a payment write must be undone, every operation in order in its own
 * savepoint.  The operations were all submitted before the commit, so
 * either order is one they may have run in.  Returns PAYMENT_STORE_OK once
 * committed (*events: the commit holds events), else the error that failed
 * the transaction, rolled back (PG_ERETRY: try again). */
static int pg_batch_try(struct pg_store *st, struct pg_op *batch, int *events)
{
    for (struct pg_op *op = batch; op; op = op->next)
        pg_op_reset(op);
    int rc = pg_batch_begin(st);
    if (rc == PAYMENT_STORE_OK)
        rc = pg_batch_plain(st, batch);
    if (rc == PG_UNDO) {
        pg_batch_rollback(st);
        for (struct pg_op *op = batch; op; op = op->next)
            pg_op_reset(op);
        rc = pg_batch_begin(st);
        if (rc == PAYMENT_STORE_OK)
            rc = pg_batch_steps(st, batch, 0);
    } else if (rc == PAYMENT_STORE_OK) {
        rc = pg_batch_steps(st, batch, 1);
    }
    *events = pg_counters.pos != pg_counters.pos_read;
    if (rc == PAYMENT_STORE_OK)
        rc = pg_batch_commit(st);
    if (rc != PAYMENT_STORE_OK)
        pg_batch_rollback(st);
    pg_counters.locked = 0;
    return rc;
}

static void pg_batch_fail(struct pg_op *batch, int err)
{
    for (struct pg_op *op = batch; op; op = op->next) {
        op->err = err;
        op->current_version = -1;
        op->seq = 0;
    }
}

/* Runs a batch, again while the server asks for it (store_pg.h). */
int pg_batch_run(struct pg_store *st, struct pg_op *batch)
{
    int rc = PG_ERETRY, events = 0;
    for (int try = 0; rc == PG_ERETRY && try < PG_RETRY_MAX; try++)
        rc = pg_batch_try(st, batch, &events);
    if (rc != PAYMENT_STORE_OK) {
        /* A unique key no write expected is the store's own fault. */
        pg_batch_fail(batch, rc == PG_ERETRY || rc == PAYMENT_STORE_EUNAVAILABLE
                                 ? PAYMENT_STORE_EUNAVAILABLE
                                 : PAYMENT_STORE_EINTERNAL);
        return 0;
    }
    atomic_fetch_add(&st->commits, 1);
    uint64_t n = 0;
    for (struct pg_op *op = batch; op; op = op->next)
        n++;
    metrics_sizes_observe(&st->batches, n);
    return events;
}

