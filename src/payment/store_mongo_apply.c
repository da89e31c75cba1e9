/* store_mongo_apply: operations applied from the broker (payment_store_apply)
 * without transactions.
 *
 * The embedded store applies an operation in one transaction.  MongoDB
 * gives none here (a deployment need not be a replica set, and sharded
 * transactions are slow), so an apply is five single-document steps, each
 * idempotent, ordered so that a crash anywhere leaves a redelivery that is
 * recognised, and conditioned so that a stale lease holder is harmless:
 *
 *  1. position: the partition's document {_id: partition, last_seq, fence}
 *     is read: seq at or below last_seq is ESKIPPED, a fence above ours
 *     EFENCED; nothing written.
 *  2. claim: the outcome document {_id: op id} is upserted with our fence
 *     unless it holds an outcome (status) or a fence above ours.  Holding
 *     an outcome, the operation is known (republished): on to step 5, then
 *     ESKIPPED.  A fence above ours: EFENCED.
 *  3. payment write: one conditional single-document write that also sets
 *     the payment's fence to ours, pushes {id: op, v: version} to its ops
 *     and, with a key, pushes the idempotency record to its idem (as the
 *     synchronous writes do).  An update or delete is filtered on {version,
 *     deleted: false, ops.id != op, idem.sk != key, fence not above ours};
 *     when it matches nothing, or the idem index refuses the key (another
 *     payment holds it: nothing written), a findAndModify raises the
 *     payment's fence to ours (unless above: EFENCED) and the outcome is
 *     decided from what it returns: ops holding op is "succeeded" with its
 *     v (an earlier attempt's write, recognised instead of repeated), else
 *     not_found, version_conflict, idempotency_key_in_use (refused, or its
 *     idem holds the key), or a retry.  A create inserts a document holding
 *     the mark and the record; a duplicate _id or key reads the id: ops
 *     holding op is "succeeded", another document duplicate_id, none
 *     idempotency_key_in_use.
 *  4. record: the outcome document gets the outcome, only while it holds
 *     our claim (our fence, no status; upserted if it was purged).
 *  5. advance: the partition's document gets (max(last_seq, seq), our
 *     fence), only while its fence is not above ours.
 *
 * Why each operation takes effect exactly once:
 *  - Its payment write happens at most once: it requires op absent from
 *    ops and pushes op in the same atomic write.  ops keeps the newest
 *    MONGO_OPS_KEEP entries; an entry is needed only until its outcome is
 *    recorded, and a partition has one operation in flight at a time (one
 *    per partition in a batch; the worker waits for each), so one entry per
 *    payment is all that is ever needed.
 *  - The position is written last: a crash anywhere leaves it before op,
 *    so op is delivered again and step 2 finds its outcome, or step 3 its
 *    write, or nothing of it happened but a claim and a raised fence (a
 *    failure that was not recorded had no effect: decided again, as if for
 *    the first time).
 *  - A partition's operations run one at a time (one per partition in a
 *    batch), and the worker submits the next one only once the previous
 *    one was applied or skipped, hence recorded: an operation decided
 *    again on redelivery finds no later operation of its partition
 *    applied, so the order holds.
 *  - One decision is recorded per operation, the last claimer's: a claim
 *    replaces only claims as old or older, never an outcome, and a record
 *    needs its claim to stand.  A stale holder (its lease taken over by a
 *    newer fence) records before the newer holder claims (which then finds
 *    the outcome), or its record is refused: EFENCED.
 *  - The recorded decision agrees with the payment: every decision of step
 *    3 on an existing payment raises the payment's fence first (the write
 *    itself, or the findAndModify), and a write needs that fence not above
 *    the writer's; so once the newer holder decided, the stale one can no
 *    longer write, and what it wrote before, the newer one finds in ops.
 *    (A payment is one organisation's, so one partition's: its fence only
 *    ever meets the leases of that partition.)
 *  - Positions never move back nor to an older fence: step 5's filter.
 *  - An idempotency record exists exactly when its operation's payment
 *    write does: it is pushed in that write, which the unique idem index
 *    (or the filter, within one payment) refuses whole when the key is
 *    held, by a synchronous write or another operation.  So a write that
 *    carried op in ops carried the record too, and recognising op there
 *    on redelivery ("succeeded") needs no look at the record; a failure
 *    stores none.  The outcome keeps the request's fingerprint.
 *
 * What this cannot do without a transaction: an update or delete decided
 * not_found raises no fence (there is no document), so a stale holder
 * still in the middle of the same operation could apply it if a
 * synchronous create of that very id lands in between: a lease lost
 * mid-write, an operation on a payment that does not exist, and a create
 * of its id racing it, all at once. */

#include <stdlib.h>
#include <string.h>

#include "payment/store_mongo.h"

static void mongo_outcome_ok(struct mongo_op *op, int64_t version)
{
    op->outcome.status = "succeeded";
    op->outcome.error_code = NULL;
    op->outcome.message = NULL;
    op->outcome.version = version;
}

/* The failures a payment write decides, worded as the synchronous API's. */
static void mongo_outcome_failed(struct mongo_op *op, int err, int64_t current)
{
    op->outcome.status = "failed";
    op->outcome.version = -1;
    switch (err) {
    case PAYMENT_STORE_ENOTFOUND:
        op->outcome.error_code = "not_found";
        op->outcome.message = "no payment with this id";
        break;
    case PAYMENT_STORE_ECONFLICT:
        op->outcome.error_code = "version_conflict";
        op->outcome.message = "the payment has changed since that version; fetch it and retry";
        op->outcome.version = current;
        break;
    case PAYMENT_STORE_EIDEMPOTENT:
        op->outcome.error_code = "idempotency_key_in_use";
        op->outcome.message = "another request with this Idempotency-Key is being processed";
        break;
    default: /* EDUPLICATE */
        op->outcome.error_code = "duplicate_id";
        op->outcome.message = "a payment with this id exists or existed";
        break;
    }
}

/* Step 1 for every undecided operation (err 1) of ops: ESKIPPED or EFENCED
 * from its partition's position, else left undecided. */
static void mongo_apply_positions(struct mongo_store *st, mongoc_client_t *client,
                                  struct mongo_op **ops, size_t n)
{
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, cond, list;
    bool ok = BSON_APPEND_DOCUMENT_BEGIN(&filter, "_id", &cond) &&
              BSON_APPEND_ARRAY_BEGIN(&cond, "$in", &list);
    for (size_t i = 0; ok && i < n; i++) {
        char idx[16];
        const char *k;
        bson_uint32_to_string((uint32_t)i, &k, idx, sizeof idx);
        ok = bson_append_int64(&list, k, -1, ops[i]->apply.partition);
    }
    ok = ok && bson_append_array_end(&cond, &list) && bson_append_document_end(&filter, &cond) &&
         mongo_append_local(&opts);
    int err = PAYMENT_STORE_EINTERNAL;
    if (ok) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->parts_coll);
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
        const bson_t *doc;
        bson_error_t e;
        while (mongoc_cursor_next(cur, &doc)) {
            int64_t p = mongo_get_int64(doc, "_id", -1);
            int64_t last = mongo_get_int64(doc, "last_seq", 0);
            int64_t fence = mongo_get_int64(doc, MONGO_F_FENCE, 0);
            for (size_t i = 0; i < n; i++) {
                const struct payment_apply *a = &ops[i]->apply;
                if (ops[i]->err != 1 || (int64_t)a->partition != p)
                    continue;
                /* Sequence first: a stale redelivery is skipped, whoever delivers it. */
                if ((int64_t)a->seq <= last)
                    ops[i]->err = PAYMENT_STORE_ESKIPPED;
                else if (fence > (int64_t)a->fence)
                    ops[i]->err = PAYMENT_STORE_EFENCED;
            }
        }
        err = mongoc_cursor_error(cur, &e) ? mongo_map_err(&e) : PAYMENT_STORE_OK;
        mongoc_cursor_destroy(cur);
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&filter);
    bson_destroy(&opts);
    for (size_t i = 0; err != PAYMENT_STORE_OK && i < n; i++)
        if (ops[i]->err == 1)
            ops[i]->err = err;
}

/* Builds one operation's upsert of a step: its filter and its update. */
typedef bool (*mongo_upsert_fn)(const struct mongo_op *op, bson_t *filter, bson_t *update);

/* Step 2: ours unless recorded or claimed by a newer fence. */
static bool mongo_build_claim(const struct mongo_op *op, bson_t *filter, bson_t *update)
{
    const struct payment_apply *a = &op->apply;
    bson_t set;
    return BSON_APPEND_UTF8(filter, "_id", a->op_id) && mongo_append_absent(filter, "status") &&
           mongo_append_not_above(filter, MONGO_F_FENCE, (int64_t)a->fence) &&
           BSON_APPEND_DOCUMENT_BEGIN(update, "$set", &set) &&
           BSON_APPEND_INT64(&set, MONGO_F_FENCE, (int64_t)a->fence) &&
           BSON_APPEND_INT64(&set, "applied_ms", a->applied_ms) &&
           bson_append_document_end(update, &set);
}

/* Step 4: the outcome, while our claim stands (the filter's _id and fence
 * are what an upsert inserts). */
static bool mongo_build_record(const struct mongo_op *op, bson_t *filter, bson_t *update)
{
    const struct payment_apply *a = &op->apply;
    const struct mongo_outcome *o = &op->outcome;
    const char *pid = a->payment_id ? a->payment_id : a->row ? op->row.id : NULL;
    const char *org = a->organisation_id ? a->organisation_id
                                         : a->row ? op->row.organisation_id : NULL;
    bson_t set;
    return BSON_APPEND_UTF8(filter, "_id", a->op_id) &&
           BSON_APPEND_INT64(filter, MONGO_F_FENCE, (int64_t)a->fence) &&
           mongo_append_absent(filter, "status") &&
           BSON_APPEND_DOCUMENT_BEGIN(update, "$set", &set) &&
           BSON_APPEND_UTF8(&set, "status", o->status) &&
           (!o->error_code || BSON_APPEND_UTF8(&set, "error_code", o->error_code)) &&
           (!o->message || BSON_APPEND_UTF8(&set, "message", o->message)) &&
           (!pid || BSON_APPEND_UTF8(&set, "payment_id", pid)) &&
           (!org || BSON_APPEND_UTF8(&set, "organisation_id", org)) &&
           BSON_APPEND_INT64(&set, "version", o->version) &&
           BSON_APPEND_INT64(&set, "partition", a->partition) &&
           BSON_APPEND_INT64(&set, "seq", (int64_t)a->seq) &&
           BSON_APPEND_INT64(&set, "applied_ms", a->applied_ms) &&
           (!a->fingerprint || BSON_APPEND_UTF8(&set, "fingerprint", a->fingerprint)) &&
           bson_append_document_end(update, &set);
}

/* Step 5: forward, while no newer fence holds the partition. */
static bool mongo_build_advance(const struct mongo_op *op, bson_t *filter, bson_t *update)
{
    const struct payment_apply *a = &op->apply;
    bson_t max, set;
    return BSON_APPEND_INT64(filter, "_id", a->partition) &&
           mongo_append_not_above(filter, MONGO_F_FENCE, (int64_t)a->fence) &&
           BSON_APPEND_DOCUMENT_BEGIN(update, "$max", &max) &&
           BSON_APPEND_INT64(&max, "last_seq", (int64_t)a->seq) &&
           bson_append_document_end(update, &max) &&
           BSON_APPEND_DOCUMENT_BEGIN(update, "$set", &set) &&
           BSON_APPEND_INT64(&set, MONGO_F_FENCE, (int64_t)a->fence) &&
           bson_append_document_end(update, &set);
}

/* Runs build's upsert for every undecided operation (err 1) of ops, but
 * the known ones when skip_known is set, in one unordered bulk write on
 * collection name.  Each of those then has OK, EDUPLICATE (the filter's
 * condition failed on the existing _id) or an error (mongo_bulk_results);
 * the others are left as they are.  Returns whether the bulk write was
 * sent. */
static bool mongo_apply_upserts(struct mongo_store *st, mongoc_client_t *client, const char *name,
                                struct mongo_op **ops, size_t n, int skip_known,
                                mongo_upsert_fn build)
{
    struct mongo_op *live[MONGO_APPLY_BATCH_MAX];
    size_t m = 0;
    for (size_t i = 0; i < n && m < MONGO_APPLY_BATCH_MAX; i++)
        if (ops[i]->err == 1 && !(skip_known && ops[i]->known))
            live[m++] = ops[i];
    if (m == 0)
        return false;
    mongoc_collection_t *coll = mongo_collection(st, client, name);
    bson_t opts = BSON_INITIALIZER, upsert = BSON_INITIALIZER;
    bson_error_t e;
    bool ok = BSON_APPEND_BOOL(&opts, "ordered", false) &&
              BSON_APPEND_BOOL(&upsert, "upsert", true);
    mongoc_bulk_operation_t *bulk =
        ok ? mongoc_collection_create_bulk_operation_with_opts(coll, &opts) : NULL;
    for (size_t i = 0; bulk && ok && i < m; i++) {
        bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER;
        ok = build(live[i], &filter, &update) &&
             mongoc_bulk_operation_update_one_with_opts(bulk, &filter, &update, &upsert, &e);
        bson_destroy(&filter);
        bson_destroy(&update);
    }
    bool sent = bulk && ok;
    if (!sent) {
        for (size_t i = 0; i < m; i++)
            live[i]->err = PAYMENT_STORE_EINTERNAL;
    } else {
        mongo_bulk_execute(bulk, live, m);
    }
    mongoc_bulk_operation_destroy(bulk); /* NULL is a no-op */
    bson_destroy(&opts);
    bson_destroy(&upsert);
    mongoc_collection_destroy(coll);
    return sent;
}

/* After a claim met an existing outcome document: recorded (known, on to
 * the advance), claimed by a newer fence (EFENCED), or claimed by a claim
 * that raced ours in, or gone (purged): EUNAVAILABLE, to be tried again. */
static void mongo_apply_claimed(struct mongo_store *st, mongoc_client_t *client,
                                struct mongo_op *op)
{
    mongoc_collection_t *coll = mongo_collection(st, client, st->ops_coll);
    bson_t filter = BSON_INITIALIZER, proj = BSON_INITIALIZER, doc;
    int err = PAYMENT_STORE_EINTERNAL;
    if (BSON_APPEND_UTF8(&filter, "_id", op->apply.op_id) &&
        BSON_APPEND_INT32(&proj, "status", 1) && BSON_APPEND_INT32(&proj, MONGO_F_FENCE, 1))
        err = mongo_find_one(coll, &filter, &proj, 1, &doc);
    if (err == PAYMENT_STORE_OK) {
        op->known = mongo_get_utf8(&doc, "status", NULL) != NULL;
        if (op->known)
            err = 1;
        else if (mongo_get_int64(&doc, MONGO_F_FENCE, 0) > (int64_t)op->apply.fence)
            err = PAYMENT_STORE_EFENCED;
        else
            err = PAYMENT_STORE_EUNAVAILABLE;
        bson_destroy(&doc);
    } else if (err == PAYMENT_STORE_ENOTFOUND) {
        err = PAYMENT_STORE_EUNAVAILABLE;
    }
    op->err = err;
    bson_destroy(&filter);
    bson_destroy(&proj);
    mongoc_collection_destroy(coll);
}

/* One findAndModify of the payment id on coll, returning the new document
 * projected to proj into *out and setting *found.  Returns 0 or a store
 * error. */
static int mongo_apply_fam(mongoc_collection_t *coll, const bson_t *query, const bson_t *update,
                           const bson_t *proj, bson_t *out, int *found)
{
    mongoc_find_and_modify_opts_t *fam = mongoc_find_and_modify_opts_new();
    bool ok = fam && mongoc_find_and_modify_opts_set_update(fam, update) &&
              mongoc_find_and_modify_opts_set_fields(fam, proj) &&
              mongoc_find_and_modify_opts_set_flags(fam, MONGOC_FIND_AND_MODIFY_RETURN_NEW);
    *found = 0;
    int err = ok ? mongo_find_modify(coll, query, fam, out, found) : PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_EDUPLICATE)
        err = PAYMENT_STORE_EINTERNAL; /* no update here changes _id */
    mongoc_find_and_modify_opts_destroy(fam); /* NULL is a no-op */
    return err;
}

/* For a delete's step 3: reads the payment (its event carries the document
 * and version read), and completes op's event when the payment is live, at
 * the expected version, with room in its outbox.  Sets *at to the version
 * to write on, or -1 when the write is not to be tried (the fence then
 * decides).  Returns 0 or a store error; state's document is the caller's
 * to destroy. */
static int mongo_apply_read(mongoc_collection_t *coll, struct mongo_op *op,
                            struct mongo_state *state, int64_t *at)
{
    *at = -1;
    int err = mongo_read_state(coll, op->row.id, op->sk, 1, state);
    if (err != PAYMENT_STORE_OK || !state->live ||
        (op->apply.expected_version >= 0 && state->version != op->apply.expected_version) ||
        state->pending >= mongo_pend_keep(state->doc.len))
        return err;
    err = mongo_delete_event(state, &op->event);
    if (err == PAYMENT_STORE_OK)
        *at = state->version;
    return err;
}

/* Step 3's write of an update or delete, with op's event and its record
 * when it has one: when the payment is live, at the expected version
 * (a delete: at the version it read first), without op in ops, without
 * op's key, not fenced above us, with room in its outbox.  Sets *version
 * (the outcome's: an update's resulting one, a delete's deleted one) when
 * it matched, else -1.  EIDEMPOTENT: another payment holds the key (nothing
 * written). */
static int mongo_apply_cas(mongoc_collection_t *coll, struct mongo_op *op, int64_t *version)
{
    const struct payment_apply *a = &op->apply;
    struct mongo_mark mark;
    struct mongo_rec rec;
    struct mongo_state state = {0};
    int64_t at = a->expected_version;
    *version = -1;
    int err = a->kind == PAYMENT_APPLY_DELETE ? mongo_apply_read(coll, op, &state, &at)
                                              : PAYMENT_STORE_OK;
    bson_t query = BSON_INITIALIZER, update = BSON_INITIALIZER, ne;
    bool ok = err == PAYMENT_STORE_OK && at >= 0 &&
              BSON_APPEND_UTF8(&query, "_id", op->row.id) &&
              BSON_APPEND_BOOL(&query, "deleted", false) &&
              BSON_APPEND_INT64(&query, "version", at) &&
              BSON_APPEND_DOCUMENT_BEGIN(&query, MONGO_F_OPS ".id", &ne) &&
              BSON_APPEND_UTF8(&ne, "$ne", a->op_id) && bson_append_document_end(&query, &ne) &&
              mongo_append_not_above(&query, MONGO_F_FENCE, (int64_t)a->fence) &&
              mongo_append_pend_room(&query, mongo_pend_keep(op->event.doc_len));
    if (ok && op->sk)
        ok = BSON_APPEND_DOCUMENT_BEGIN(&query, MONGO_F_IDEM ".sk", &ne) &&
             BSON_APPEND_UTF8(&ne, "$ne", op->sk) && bson_append_document_end(&query, &ne);
    if (ok)
        ok = 2 * op->event.doc_len + mongo_idem_size(op->idem) <= MONGO_DOC_MAX &&
             (a->kind == PAYMENT_APPLY_UPDATE
                  ? mongo_build_update(&update, &op->row, mongo_op_rec(op, &rec),
                                       mongo_op_mark(op, &mark), &op->event)
                  : mongo_build_tombstone(&update, mongo_op_rec(op, &rec),
                                          mongo_op_mark(op, &mark), &op->event));
    if (ok) {
        bson_t reply; /* always initialized by the call */
        bson_error_t e;
        if (mongoc_collection_update_one(coll, &query, &update, NULL, &reply, &e)) {
            if (mongo_get_int64(&reply, "matchedCount", 0) == 1)
                *version = a->kind == PAYMENT_APPLY_UPDATE ? op->row.version : at;
        } else {
            err = mongo_map_err(&e);
            if (err == PAYMENT_STORE_EDUPLICATE)
                err = PAYMENT_STORE_EINTERNAL; /* no update changes _id */
        }
        bson_destroy(&reply);
    } else if (err == PAYMENT_STORE_OK && at >= 0) {
        err = PAYMENT_STORE_EINTERNAL;
    }
    if (a->kind == PAYMENT_APPLY_DELETE) {
        op->event.doc = NULL; /* it pointed into state */
        op->event.organisation_id = NULL;
    }
    if (state.has_doc)
        bson_destroy(&state.doc);
    bson_destroy(&query);
    bson_destroy(&update);
    return err;
}

/* After step 3's write matched nothing: raises the payment's fence to ours
 * and returns its state (version, deleted, ops, the records' sk) in out
 * (*found), so that no older holder can write it after this decision.
 * EFENCED when a newer one did; *found 0 when there is no such payment. */
static int mongo_apply_fence(mongoc_collection_t *coll, const struct mongo_op *op, bson_t *out,
                             int *found)
{
    const struct payment_apply *a = &op->apply;
    bson_t query = BSON_INITIALIZER, update = BSON_INITIALIZER, proj = BSON_INITIALIZER, set;
    bool ok = BSON_APPEND_UTF8(&query, "_id", op->row.id) &&
              mongo_append_not_above(&query, MONGO_F_FENCE, (int64_t)a->fence) &&
              BSON_APPEND_DOCUMENT_BEGIN(&update, "$set", &set) &&
              BSON_APPEND_INT64(&set, MONGO_F_FENCE, (int64_t)a->fence) &&
              bson_append_document_end(&update, &set) && BSON_APPEND_INT32(&proj, "version", 1) &&
              BSON_APPEND_INT32(&proj, "deleted", 1) && BSON_APPEND_INT32(&proj, MONGO_F_OPS, 1) &&
              BSON_APPEND_INT32(&proj, MONGO_F_PEND ".id", 1) &&
              (!op->sk || BSON_APPEND_INT32(&proj, MONGO_F_IDEM ".sk", 1));
    int err = ok ? mongo_apply_fam(coll, &query, &update, &proj, out, found)
                 : PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK && !*found) {
        /* Missed: no such payment, or a newer fence on it. */
        bson_t filter = BSON_INITIALIZER, doc;
        err = BSON_APPEND_UTF8(&filter, "_id", op->row.id)
                  ? mongo_find_one(coll, &filter, &proj, 1, &doc)
                  : PAYMENT_STORE_EINTERNAL;
        if (err == PAYMENT_STORE_OK) {
            bson_destroy(&doc);
            err = PAYMENT_STORE_EFENCED;
        } else if (err == PAYMENT_STORE_ENOTFOUND) {
            err = PAYMENT_STORE_OK;
        }
        bson_destroy(&filter);
    }
    bson_destroy(&query);
    bson_destroy(&update);
    bson_destroy(&proj);
    return err;
}

/* Step 3 for an update or delete: the write, and only when it wrote
 * nothing, the decision on the fenced payment, in the embedded store's
 * order: gone, other version, then the key held (by another payment: the
 * write's duplicate key; by this one: its records).  The payment changing
 * between the two (it reached the expected version) is tried again, and so
 * is one whose outbox was full, after a pause. */
static void mongo_apply_write(struct mongo_store *st, mongoc_collection_t *coll,
                              struct mongo_op *op)
{
    const struct payment_apply *a = &op->apply;
    bool held = false; /* by a payment of another organisation: no write */
    int err = mongo_keys_held(coll, &op, 1, &held);
    if (err != PAYMENT_STORE_OK) {
        op->err = err;
        return;
    }
    op->err = PAYMENT_STORE_EUNAVAILABLE; /* still moving after every try: later */
    for (int tries = 0, rooms = 0; tries < MONGO_CAS_TRIES;) {
        int64_t version = -1;
        err = held ? PAYMENT_STORE_EIDEMPOTENT : mongo_apply_cas(coll, op, &version);
        if (err == PAYMENT_STORE_OK && version >= 0) {
            mongo_outcome_ok(op, version);
            op->err = 1;
            return;
        }
        int taken = err == PAYMENT_STORE_EIDEMPOTENT;
        bson_t doc;
        int found = 0;
        if (err == PAYMENT_STORE_OK || taken)
            err = mongo_apply_fence(coll, op, &doc, &found);
        if (err != PAYMENT_STORE_OK) {
            op->err = err;
            return;
        }
        if (!found) {
            mongo_outcome_failed(op, PAYMENT_STORE_ENOTFOUND, -1);
            op->err = 1;
            return;
        }
        int64_t v, current = mongo_get_int64(&doc, "version", -1);
        bson_iter_t it;
        int live = !(bson_iter_init_find(&it, &doc, "deleted") && bson_iter_as_bool(&it));
        int decided = 1;
        if (mongo_ops_hold(&doc, a->op_id, &v)) /* an earlier attempt wrote it */
            mongo_outcome_ok(op, v >= 0 ? v : current);
        else if (!live)
            mongo_outcome_failed(op, PAYMENT_STORE_ENOTFOUND, -1);
        else if (a->expected_version >= 0 && current != a->expected_version)
            mongo_outcome_failed(op, PAYMENT_STORE_ECONFLICT, current);
        else if (taken || mongo_holds_sk(&doc, op->sk))
            mongo_outcome_failed(op, PAYMENT_STORE_EIDEMPOTENT, -1);
        else
            decided = 0;
        int full = mongo_pend_count(&doc) >= mongo_pend_keep(op->event.doc_len);
        bson_destroy(&doc);
        if (decided) {
            op->err = 1;
            return;
        }
        if (full && rooms++ < MONGO_ROOM_TRIES)
            mongo_room_wait(st, op->row.id);
        else
            tries++;
    }
}

/* Step 3 for a create the insert refused: refused is EDUPLICATE (its _id
 * exists) or EIDEMPOTENT (its key is held; MongoDB names one index of those
 * that refuse it).  A document with the id is an earlier attempt's (it holds
 * op; that insert held the record too) or another payment's, which comes
 * before the key as in the embedded store; without one, another payment
 * holds the key. */
static void mongo_apply_duplicate(mongoc_collection_t *coll, struct mongo_op *op, int refused)
{
    bson_t filter = BSON_INITIALIZER, proj = BSON_INITIALIZER, doc;
    int err = BSON_APPEND_UTF8(&filter, "_id", op->row.id) &&
                      BSON_APPEND_INT32(&proj, "version", 1) &&
                      BSON_APPEND_INT32(&proj, MONGO_F_OPS, 1)
                  ? mongo_find_one(coll, &filter, &proj, 1, &doc)
                  : PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        int64_t v;
        if (mongo_ops_hold(&doc, op->apply.op_id, &v))
            mongo_outcome_ok(op, v >= 0 ? v : 0);
        else
            mongo_outcome_failed(op, PAYMENT_STORE_EDUPLICATE, -1);
        bson_destroy(&doc);
        err = 1;
    } else if (err == PAYMENT_STORE_ENOTFOUND && refused == PAYMENT_STORE_EIDEMPOTENT) {
        mongo_outcome_failed(op, PAYMENT_STORE_EIDEMPOTENT, -1);
        err = 1;
    } else if (err == PAYMENT_STORE_ENOTFOUND) {
        err = PAYMENT_STORE_EINTERNAL; /* ids are never removed */
    }
    op->err = err;
    bson_destroy(&filter);
    bson_destroy(&proj);
}

/* Step 3 for every claimed operation: the creates in one bulk insert, the
 * updates and deletes one by one, kind NONE's failure as the worker
 * decided it.  Operations of one batch are of distinct partitions, so
 * their order among themselves is free. */
static void mongo_apply_writes(struct mongo_store *st, mongoc_client_t *client,
                               struct mongo_op **ops, size_t n)
{
    struct mongo_op *creates[MONGO_APPLY_BATCH_MAX];
    size_t nc = 0;
    mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
    for (size_t i = 0; i < n; i++) {
        struct mongo_op *op = ops[i];
        const struct payment_apply *a = &op->apply;
        if (op->err != 1 || op->known)
            continue;
        switch (a->kind) {
        case PAYMENT_APPLY_NONE:
            op->outcome.status = "failed";
            op->outcome.error_code = a->error_code ? a->error_code : "internal_error";
            op->outcome.message = a->error_message ? a->error_message : "";
            op->outcome.version = -1;
            break;
        case PAYMENT_APPLY_CREATE:
            creates[nc++] = op;
            break;
        default:
            mongo_apply_write(st, coll, op);
            break;
        }
    }
    if (nc > 0)
        (void)mongo_creates_run(st, client, creates, nc);
    for (size_t i = 0; i < nc; i++) {
        struct mongo_op *op = creates[i];
        if (op->err == PAYMENT_STORE_OK) {
            mongo_outcome_ok(op, 0);
            op->err = 1;
        } else if (op->err == PAYMENT_STORE_EDUPLICATE ||
                   op->err == PAYMENT_STORE_EIDEMPOTENT) {
            mongo_apply_duplicate(coll, op, op->err);
        }
    }
    mongoc_collection_destroy(coll);
}

/* After step 5 met the partition's document: moved by a newer fence
 * (EFENCED), or first written by an insert that raced ours in: EUNAVAILABLE,
 * to be tried again (everything before step 5 is recognised then). */
static void mongo_apply_refused(struct mongo_store *st, mongoc_client_t *client,
                                struct mongo_op *op)
{
    mongoc_collection_t *coll = mongo_collection(st, client, st->parts_coll);
    bson_t filter = BSON_INITIALIZER, doc;
    int err = BSON_APPEND_INT64(&filter, "_id", op->apply.partition)
                  ? mongo_find_one(coll, &filter, NULL, 1, &doc)
                  : PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        err = mongo_get_int64(&doc, MONGO_F_FENCE, 0) > (int64_t)op->apply.fence
                  ? PAYMENT_STORE_EFENCED
                  : PAYMENT_STORE_EUNAVAILABLE;
        bson_destroy(&doc);
    } else if (err == PAYMENT_STORE_ENOTFOUND) {
        err = PAYMENT_STORE_EUNAVAILABLE;
    }
    op->err = err;
    bson_destroy(&filter);
    mongoc_collection_destroy(coll);
}

/* Steps 1 to 5 for a batch (every operation undecided: err 1).  Each ends
 * OK, ESKIPPED, EFENCED, or an error that changed nothing a redelivery
 * would not recognise.  Returns whether a position was written (a commit,
 * for the counters). */
bool mongo_apply_run(struct mongo_store *st, mongoc_client_t *client, struct mongo_op **ops,
                     size_t n)
{
    /* Between the steps, OK and EDUPLICATE are only ever the last step's
     * results: no step leaves them as a final result. */
    mongo_apply_positions(st, client, ops, n);
    if (mongo_apply_upserts(st, client, st->ops_coll, ops, n, 0, mongo_build_claim)) {
        for (size_t i = 0; i < n; i++) {
            if (ops[i]->err == PAYMENT_STORE_OK)
                ops[i]->err = 1;
            else if (ops[i]->err == PAYMENT_STORE_EDUPLICATE)
                mongo_apply_claimed(st, client, ops[i]);
        }
    }
    mongo_apply_writes(st, client, ops, n);
    if (mongo_apply_upserts(st, client, st->ops_coll, ops, n, 1, mongo_build_record)) {
        for (size_t i = 0; i < n; i++) {
            if (ops[i]->err == PAYMENT_STORE_OK)
                ops[i]->err = 1;
            else if (ops[i]->err == PAYMENT_STORE_EDUPLICATE)
                ops[i]->err = PAYMENT_STORE_EFENCED; /* a newer holder claimed it */
        }
    }
    bool sent = mongo_apply_upserts(st, client, st->parts_coll, ops, n, 0, mongo_build_advance);
    for (size_t i = 0; sent && i < n; i++) {
        if (ops[i]->err == PAYMENT_STORE_OK)
            ops[i]->err = ops[i]->known ? PAYMENT_STORE_ESKIPPED : PAYMENT_STORE_OK;
        else if (ops[i]->err == PAYMENT_STORE_EDUPLICATE)
            mongo_apply_refused(st, client, ops[i]);
    }
    return sent;
}
