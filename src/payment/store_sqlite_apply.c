/* store_sqlite_apply: operations from the broker on the embedded store.
 * Each is applied inside the writer's batch, in a savepoint of its own: the
 * partition's position and fence are checked, the payment written with its
 * event, the outcome recorded and the partition moved, all or nothing.  A
 * delete's outcome keeps the version it deleted, as before deletes took a
 * version of their own. */
#include <sqlite3.h>
#include <stdint.h>

#include "payment/store_sqlite.h"

/* An operation's recorded outcome. */
struct sqlite_outcome {
    const char *status;
    const char *error_code; /* NULL when succeeded, as is message */
    const char *message;
    int64_t version;
};

/* op->err (when rc is SQLITE_OK): ESKIPPED, EFENCED, or OK to go on. */
static int sqlite_apply_position(struct sqlite_store *st, struct sqlite_op *op)
{
    sqlite3_stmt *stmt = st->w[W_PART_GET];
    int rc = sqlite3_bind_int64(stmt, 1, op->apply.partition);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    op->err = PAYMENT_STORE_OK;
    if (rc == SQLITE_ROW) {
        int64_t last_seq = sqlite3_column_int64(stmt, 0), fence = sqlite3_column_int64(stmt, 1);
        /* Sequence first: a stale redelivery is skipped, whoever delivers it. */
        if ((int64_t)op->apply.seq <= last_seq)
            op->err = PAYMENT_STORE_ESKIPPED;
        else if (fence > (int64_t)op->apply.fence)
            op->err = PAYMENT_STORE_EFENCED;
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite_stmt_release(stmt);
    return rc;
}

/* Sets *found when op_id is already recorded. */
static int sqlite_apply_known(struct sqlite_store *st, struct sqlite_op *op, int *found)
{
    sqlite3_stmt *stmt = st->w[W_OP_EXISTS];
    int rc = sqlite3_bind_text(stmt, 1, op->apply.op_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    *found = rc == SQLITE_ROW;
    sqlite_stmt_release(stmt);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int sqlite_apply_advance(struct sqlite_store *st, struct sqlite_op *op)
{
    sqlite3_stmt *stmt = st->w[W_PART_PUT];
    int rc = sqlite3_bind_int64(stmt, 1, op->apply.partition);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 2, (int64_t)op->apply.seq);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 3, (int64_t)op->apply.fence);
    if (rc != SQLITE_OK) {
        sqlite_stmt_release(stmt);
        return rc;
    }
    return sqlite_stmt_run(stmt);
}

/* The version a successful delete removed: its tombstone's, less the one
 * the tombstone took (the payment.deleted event's version). */
static int sqlite_apply_deleted_version(struct sqlite_store *st, struct sqlite_op *op,
                                        int64_t *version)
{
    sqlite3_stmt *stmt = st->w[W_VERSION];
    int rc = sqlite3_bind_text(stmt, 1, op->row.id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        *version = sqlite3_column_int64(stmt, 0) - 1;
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_CORRUPT; /* it was just deleted in this transaction */
    }
    sqlite_stmt_release(stmt);
    return rc;
}

/* The payment write of op, in a savepoint of its own so that an idempotency
 * key already recorded undoes it alone; op->err is the write's result. */
static int sqlite_apply_write(struct sqlite_store *st, struct sqlite_op *op)
{
    int rc = sqlite_stmt_run(st->w[W_SAVEPOINT_WRITE]);
    if (rc != SQLITE_OK)
        return rc;
    switch (op->apply.kind) {
    case PAYMENT_APPLY_CREATE: rc = sqlite_op_create(st, op); break;
    case PAYMENT_APPLY_UPDATE: rc = sqlite_op_update(st, op); break;
    case PAYMENT_APPLY_DELETE: rc = sqlite_op_delete(st, op); break;
    default: rc = SQLITE_MISUSE; break; /* NONE never gets here */
    }
    if (rc == SQLITE_OK && op->err == PAYMENT_STORE_OK && op->idem)
        rc = sqlite_op_idem(st, op);
    if (rc != SQLITE_OK)
        return rc; /* the caller's savepoint undoes everything */
    if (op->err == PAYMENT_STORE_EIDEMPOTENT) {
        op->evented = 0;
        rc = sqlite_stmt_run(st->w[W_ROLLBACK_TO_WRITE]);
        if (rc != SQLITE_OK)
            return rc;
    }
    return sqlite_stmt_run(st->w[W_RELEASE_WRITE]);
}

/* What the synchronous API would have answered, as a recorded outcome. */
static int sqlite_apply_outcome(struct sqlite_store *st, struct sqlite_op *op,
                                struct sqlite_outcome *out)
{
    out->status = "failed";
    out->error_code = NULL;
    out->message = NULL;
    out->version = -1;
    switch (op->err) {
    case PAYMENT_STORE_OK:
        out->status = "succeeded";
        if (op->apply.kind != PAYMENT_APPLY_DELETE) {
            out->version = op->row.version;
            return SQLITE_OK;
        }
        return sqlite_apply_deleted_version(st, op, &out->version);
    case PAYMENT_STORE_ENOTFOUND:
        out->error_code = "not_found";
        out->message = "no payment with this id";
        return SQLITE_OK;
    case PAYMENT_STORE_ECONFLICT:
        out->error_code = "version_conflict";
        out->message = "the payment has changed since that version; fetch it and retry";
        out->version = op->current_version;
        return SQLITE_OK;
    case PAYMENT_STORE_EDUPLICATE:
        out->error_code = "duplicate_id";
        out->message = "a payment with this id exists or existed";
        return SQLITE_OK;
    case PAYMENT_STORE_EIDEMPOTENT:
        out->error_code = "idempotency_key_in_use";
        out->message = "another request with this Idempotency-Key is being processed";
        return SQLITE_OK;
    default:
        return SQLITE_MISUSE; /* no other result is decided by the write */
    }
}

static int sqlite_apply_record(struct sqlite_store *st, struct sqlite_op *op,
                               const struct sqlite_outcome *o)
{
    const struct payment_apply *a = &op->apply;
    const char *pid = a->payment_id ? a->payment_id : a->row ? a->row->id : NULL;
    const char *org = a->organisation_id ? a->organisation_id
                                         : a->row ? a->row->organisation_id : NULL;
    sqlite3_stmt *stmt = st->w[W_OP_INSERT];
    int rc = sqlite3_bind_text(stmt, 1, a->op_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 2, a->partition);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 3, (int64_t)a->seq);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 4, o->status, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 5, o->error_code);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 6, o->message);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 7, pid);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 8, org);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 9, o->version);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 10, a->applied_ms);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 11, a->fingerprint);
    if (rc != SQLITE_OK) {
        sqlite_stmt_release(stmt);
        return rc;
    }
    return sqlite_stmt_run(stmt);
}

/* Position check, write, outcome, new position: all or nothing, in the
 * caller's savepoint.  op->err ends OK (outcome recorded), ESKIPPED or
 * EFENCED. */
int sqlite_op_apply_broker(struct sqlite_store *st, struct sqlite_op *op)
{
    int rc = sqlite_apply_position(st, op);
    if (rc != SQLITE_OK || op->err != PAYMENT_STORE_OK)
        return rc;
    int known = 0;
    rc = sqlite_apply_known(st, op, &known);
    if (rc != SQLITE_OK)
        return rc;
    if (known) {
        /* Republished under a new sequence: applied once already. */
        rc = sqlite_apply_advance(st, op);
        op->err = PAYMENT_STORE_ESKIPPED;
        return rc;
    }
    struct sqlite_outcome o;
    if (op->apply.kind == PAYMENT_APPLY_NONE) {
        o.status = "failed";
        o.error_code = op->apply.error_code ? op->apply.error_code : "internal_error";
        o.message = op->apply.error_message ? op->apply.error_message : "";
        o.version = -1;
    } else {
        rc = sqlite_apply_write(st, op);
        if (rc == SQLITE_OK)
            rc = sqlite_apply_outcome(st, op, &o);
        if (rc != SQLITE_OK)
            return rc;
    }
    rc = sqlite_apply_record(st, op, &o);
    if (rc == SQLITE_OK)
        rc = sqlite_apply_advance(st, op);
    op->err = PAYMENT_STORE_OK;
    op->current_version = -1;
    return rc;
}
