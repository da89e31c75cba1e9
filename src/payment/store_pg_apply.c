/* store_pg_apply: operations from the broker on the PostgreSQL store.  Each
 * is applied inside the writer's batch (store_pg_writer.c), under the write
 * lock: the partition's row is read FOR UPDATE and its position and fence
 * checked, the payment written with its event, the outcome recorded and the
 * partition moved, all in the batch's transaction, so all or nothing.  The
 * payment write has a savepoint of its own, so that an idempotency key
 * already recorded undoes the write alone and the failure is recorded as
 * its outcome.  A delete's outcome keeps the version it deleted, as the
 * embedded store's does. */
#include <assert.h>
#include <stdint.h>

#include "payment/store_pg.h"

/* The partition's row, locked to the commit: a worker of another process
 * applying to the same partition waits for it, then reads what it moved. */
static const char pg_sql_part_get[] =
    "SELECT last_seq, fence FROM partitions WHERE partition = $1 FOR UPDATE";
static const char pg_sql_part_put[] =
    "INSERT INTO partitions (partition, last_seq, fence) VALUES ($1, $2, $3)"
    " ON CONFLICT (partition) DO UPDATE SET last_seq = excluded.last_seq,"
    " fence = excluded.fence";
static const char pg_sql_op_exists[] = "SELECT 1 FROM operations WHERE op_id = $1";
static const char pg_sql_op_insert[] =
    "INSERT INTO operations (op_id, partition, seq, status, error_code, message, payment_id,"
    " organisation_id, version, applied_ms, fingerprint)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
static const char pg_sql_version[] = "SELECT version FROM payments WHERE id = $1";

/* An operation's recorded outcome. */
struct pg_outcome {
    const char *status;
    const char *error_code; /* NULL when succeeded, as is message */
    const char *message;
    int64_t version;
};

/* op->err (when it returns PAYMENT_STORE_OK): ESKIPPED, EFENCED, or OK to
 * go on. */
static int pg_apply_position(struct pg_store *st, struct pg_op *op)
{
    struct pg_params p;
    pg_params_init(&p);
    pg_param_int(&p, op->apply.partition);
    PGresult *res;
    int rc = pg_exec(&st->wconn, pg_sql_part_get, &p, &res);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    op->err = PAYMENT_STORE_OK;
    if (PQntuples(res) == 1) {
        int64_t last_seq = pg_int(res, 0, 0), fence = pg_int(res, 0, 1);
        /* Sequence first: a stale redelivery is skipped, whoever delivers it. */
        if ((int64_t)op->apply.seq <= last_seq)
            op->err = PAYMENT_STORE_ESKIPPED;
        else if (fence > (int64_t)op->apply.fence)
            op->err = PAYMENT_STORE_EFENCED;
    }
    PQclear(res);
    return PAYMENT_STORE_OK;
}

/* Sets *found when op_id is already recorded. */
static int pg_apply_known(struct pg_store *st, struct pg_op *op, int *found)
{
    struct pg_params p;
    pg_params_init(&p);
    pg_param_text(&p, op->apply.op_id);
    PGresult *res;
    int rc = pg_exec(&st->wconn, pg_sql_op_exists, &p, &res);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    *found = PQntuples(res) > 0;
    PQclear(res);
    return PAYMENT_STORE_OK;
}

static int pg_apply_advance(struct pg_store *st, struct pg_op *op)
{
    struct pg_params p;
    pg_params_init(&p);
    pg_param_int(&p, op->apply.partition);
    pg_param_int(&p, (int64_t)op->apply.seq);
    pg_param_int(&p, (int64_t)op->apply.fence);
    return pg_exec(&st->wconn, pg_sql_part_put, &p, NULL);
}

/* The version a successful delete removed: its tombstone's, less the one
 * the tombstone took (the payment.deleted event's version). */
static int pg_apply_deleted_version(struct pg_store *st, struct pg_op *op, int64_t *version)
{
    struct pg_params p;
    pg_params_init(&p);
    pg_param_text(&p, op->row.id);
    PGresult *res;
    int rc = pg_exec(&st->wconn, pg_sql_version, &p, &res);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    if (PQntuples(res) == 1)
        *version = pg_int(res, 0, 0) - 1;
    else
        rc = PAYMENT_STORE_EINTERNAL; /* it was just deleted in this transaction */
    PQclear(res);
    return rc;
}

/* The payment write of op, in a savepoint of its own so that an idempotency
 * key already recorded undoes it alone; op->err is the write's result. */
static int pg_apply_write(struct pg_store *st, struct pg_op *op)
{
    int rc = pg_savepoint(&st->wconn);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    switch (op->apply.kind) {
    case PAYMENT_APPLY_CREATE: rc = pg_op_create(st, op); break;
    case PAYMENT_APPLY_UPDATE: rc = pg_op_update(st, op); break;
    case PAYMENT_APPLY_DELETE: rc = pg_op_delete(st, op); break;
    default: rc = PAYMENT_STORE_EINTERNAL; break; /* NONE never gets here */
    }
    if (rc == PAYMENT_STORE_OK && op->err == PAYMENT_STORE_OK && op->idem)
        rc = pg_op_idem(st, op);
    if (rc != PAYMENT_STORE_OK)
        return rc; /* the caller's transaction or savepoint undoes everything */
    if (op->err == PAYMENT_STORE_EIDEMPOTENT) {
        op->seq = 0;
        return pg_rollback_to(&st->wconn);
    }
    return pg_release(&st->wconn);
}

/* What the synchronous API would have answered, as a recorded outcome. */
static int pg_apply_outcome(struct pg_store *st, struct pg_op *op, struct pg_outcome *out)
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
            return PAYMENT_STORE_OK;
        }
        return pg_apply_deleted_version(st, op, &out->version);
    case PAYMENT_STORE_ENOTFOUND:
        out->error_code = "not_found";
        out->message = "no payment with this id";
        return PAYMENT_STORE_OK;
    case PAYMENT_STORE_ECONFLICT:
        out->error_code = "version_conflict";
        out->message = "the payment has changed since that version; fetch it and retry";
        out->version = op->current_version;
        return PAYMENT_STORE_OK;
    case PAYMENT_STORE_EDUPLICATE:
        out->error_code = "duplicate_id";
        out->message = "a payment with this id exists or existed";
        return PAYMENT_STORE_OK;
    case PAYMENT_STORE_EIDEMPOTENT:
        out->error_code = "idempotency_key_in_use";
        out->message = "another request with this Idempotency-Key is being processed";
        return PAYMENT_STORE_OK;
    default:
        return PAYMENT_STORE_EINTERNAL; /* no other result is decided by the write */
    }
}

static int pg_apply_record(struct pg_store *st, struct pg_op *op, const struct pg_outcome *o)
{
    const struct payment_apply *a = &op->apply;
    const char *pid = a->payment_id ? a->payment_id : a->row ? a->row->id : NULL;
    const char *org = a->organisation_id ? a->organisation_id
                                         : a->row ? a->row->organisation_id : NULL;
    struct pg_params p;
    pg_params_init(&p);
    pg_param_text(&p, a->op_id);
    pg_param_int(&p, a->partition);
    pg_param_int(&p, (int64_t)a->seq);
    pg_param_text(&p, o->status);
    pg_param_text(&p, o->error_code);
    pg_param_text(&p, o->message);
    pg_param_text(&p, pid);
    pg_param_text(&p, org);
    pg_param_int(&p, o->version);
    pg_param_int(&p, a->applied_ms);
    pg_param_text(&p, a->fingerprint);
    return pg_exec(&st->wconn, pg_sql_op_insert, &p, NULL);
}

/* Position check, write, outcome, new position: all or nothing, in the
 * caller's transaction.  op->err ends OK (outcome recorded), ESKIPPED or
 * EFENCED. */
int pg_op_apply_broker(struct pg_store *st, struct pg_op *op)
{
    assert(op->kind == PG_OP_APPLY && op->apply.op_id);
    int rc = pg_apply_position(st, op);
    if (rc != PAYMENT_STORE_OK || op->err != PAYMENT_STORE_OK)
        return rc;
    int known = 0;
    rc = pg_apply_known(st, op, &known);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    if (known) {
        /* Republished under a new sequence: applied once already. */
        rc = pg_apply_advance(st, op);
        op->err = PAYMENT_STORE_ESKIPPED;
        return rc;
    }
    struct pg_outcome o;
    if (op->apply.kind == PAYMENT_APPLY_NONE) {
        o.status = "failed";
        o.error_code = op->apply.error_code ? op->apply.error_code : "internal_error";
        o.message = op->apply.error_message ? op->apply.error_message : "";
        o.version = -1;
    } else {
        rc = pg_apply_write(st, op);
        if (rc == PAYMENT_STORE_OK)
            rc = pg_apply_outcome(st, op, &o);
        if (rc != PAYMENT_STORE_OK)
            return rc;
    }
    rc = pg_apply_record(st, op, &o);
    if (rc == PAYMENT_STORE_OK)
        rc = pg_apply_advance(st, op);
    op->err = PAYMENT_STORE_OK;
    op->current_version = -1;
    return rc;
}
