/* store_mongo_write: the MongoDB store's writes, as its worker threads run
 * them: creates in one bulk insert after one $inc of the counter, updates
 * and deletes as conditional single-document updates whose misses a read
 * explains, keys held by another organisation's payment found before the
 * write, and the purge of old idempotency records and outcomes. */

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "payment/store_mongo.h"

#define MONGO_RANK_CREATE INT64_MAX   /* a create's record ranks above every other */
#define MONGO_RANK_DELETE (INT64_MAX - 1) /* nothing follows a delete */

/* Sets held[i] for each op of ops with a key that a payment other than
 * its own holds already.  The unique index sees only the keys of the
 * op's organisation (it starts with organisation_id, the shard key); this
 * read, on the primary's latest data, finds the others.  Returns 0 or a
 * store error. */
int mongo_keys_held(mongoc_collection_t *coll, struct mongo_op *const *ops, size_t n,
                    bool *held)
{
    bson_t filter = BSON_INITIALIZER, proj = BSON_INITIALIZER, cond, list;
    size_t keyed = 0;
    bool ok = BSON_APPEND_DOCUMENT_BEGIN(&filter, MONGO_F_IDEM ".sk", &cond) &&
              BSON_APPEND_ARRAY_BEGIN(&cond, "$in", &list);
    for (size_t i = 0; i < n; i++) {
        held[i] = false;
        if (ok && ops[i]->sk) {
            char idx[16];
            const char *k;
            bson_uint32_to_string((uint32_t)keyed++, &k, idx, sizeof idx);
            ok = bson_append_utf8(&list, k, -1, ops[i]->sk, -1);
        }
    }
    ok = ok && bson_append_array_end(&cond, &list) && bson_append_document_end(&filter, &cond) &&
         BSON_APPEND_INT32(&proj, MONGO_F_IDEM ".sk", 1);
    bson_t opts = BSON_INITIALIZER;
    ok = ok && BSON_APPEND_DOCUMENT(&opts, "projection", &proj) && mongo_append_local(&opts);
    int err = ok ? PAYMENT_STORE_OK : PAYMENT_STORE_EINTERNAL;
    if (ok && keyed > 0) {
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
        const bson_t *doc;
        bson_error_t e;
        while (mongoc_cursor_next(cur, &doc)) {
            const char *id = mongo_get_utf8(doc, "_id", NULL);
            for (size_t i = 0; i < n; i++)
                if (ops[i]->sk && (!id || strcmp(id, ops[i]->row.id) != 0) &&
                    mongo_holds_sk(doc, ops[i]->sk))
                    held[i] = true;
        }
        if (mongoc_cursor_error(cur, &e))
            err = mongo_map_err(&e);
        mongoc_cursor_destroy(cur);
    }
    bson_destroy(&filter);
    bson_destroy(&proj);
    bson_destroy(&opts);
    return err;
}

/* Reserves n sequence numbers; returns the last, or -1 with e set. */
static int64_t mongo_seq_reserve(struct mongo_store *st, mongoc_client_t *client, size_t n,
                                 bson_error_t *e)
{
    mongoc_collection_t *counters = mongo_collection(st, client, MONGO_COUNTERS);
    mongoc_find_and_modify_opts_t *fam = mongoc_find_and_modify_opts_new();
    bson_t query = BSON_INITIALIZER, update = BSON_INITIALIZER, inc;
    bool ok = fam && BSON_APPEND_UTF8(&query, "_id", st->coll) &&
              BSON_APPEND_DOCUMENT_BEGIN(&update, "$inc", &inc) &&
              BSON_APPEND_INT64(&inc, "seq", (int64_t)n) &&
              bson_append_document_end(&update, &inc) &&
              mongoc_find_and_modify_opts_set_update(fam, &update) &&
              mongoc_find_and_modify_opts_set_flags(
                  fam, MONGOC_FIND_AND_MODIFY_UPSERT | MONGOC_FIND_AND_MODIFY_RETURN_NEW);
    int64_t last = -1;
    if (!ok) {
        bson_set_error(e, MONGOC_ERROR_BSON, 0, "cannot build the counter update");
    } else {
        bson_t reply; /* always initialized by the call */
        if (mongoc_collection_find_and_modify_with_opts(counters, &query, fam, &reply, e)) {
            bson_iter_t it, v;
            if (bson_iter_init_find(&it, &reply, "value") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
                bson_iter_recurse(&it, &v) && bson_iter_find(&v, "seq") &&
                BSON_ITER_HOLDS_NUMBER(&v))
                last = bson_iter_as_int64(&v);
            if (last < (int64_t)n)
                bson_set_error(e, MONGOC_ERROR_COMMAND, 0,
                               "the sequence counter answered no number");
        }
        bson_destroy(&reply);
    }
    mongoc_find_and_modify_opts_destroy(fam); /* NULL is a no-op */
    bson_destroy(&query);
    bson_destroy(&update);
    mongoc_collection_destroy(counters);
    return last < (int64_t)n ? -1 : last;
}

/* Sets the result of every write in ops (all undecided: err 1) from a
 * failed bulk write's reply: the ones with a write error get it (a
 * duplicate _id EDUPLICATE, a key another payment holds EIDEMPOTENT); the
 * others succeeded only when every write is accounted for (inserted,
 * matched or upserted, plus write errors) and the write concern held, else
 * their outcome is unknown and they fail with err. */
static void mongo_bulk_results(struct mongo_op **ops, size_t n, const bson_t *reply, int err)
{
    size_t errors = 0;
    bson_iter_t it, list, item;
    if (bson_iter_init_find(&it, reply, "writeErrors") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &list)) {
        while (bson_iter_next(&list)) {
            if (!BSON_ITER_HOLDS_DOCUMENT(&list) || !bson_iter_recurse(&list, &item))
                continue;
            int64_t index = -1, code = 0;
            const char *msg = NULL;
            while (bson_iter_next(&item)) {
                if (strcmp(bson_iter_key(&item), "index") == 0)
                    index = bson_iter_as_int64(&item);
                else if (strcmp(bson_iter_key(&item), "code") == 0)
                    code = bson_iter_as_int64(&item);
                else if (strcmp(bson_iter_key(&item), "errmsg") == 0 &&
                         BSON_ITER_HOLDS_UTF8(&item))
                    msg = bson_iter_utf8(&item, NULL);
            }
            if (index < 0 || (size_t)index >= n || ops[index]->err != 1)
                continue;
            ops[index]->err = mongo_code_err((uint32_t)code, msg);
            errors++;
        }
    }
    /* Inserted, or matched or upserted by an update: done. */
    int64_t done = mongo_get_int64(reply, "nInserted", 0) + mongo_get_int64(reply, "nMatched", 0) +
                   mongo_get_int64(reply, "nUpserted", 0);
    int wc_failed = bson_iter_init_find(&it, reply, "writeConcernErrors") &&
                    BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &list) &&
                    bson_iter_next(&list);
    int known = !wc_failed && (size_t)done + errors == n;
    for (size_t i = 0; i < n; i++)
        if (ops[i]->err == 1)
            ops[i]->err = known ? PAYMENT_STORE_OK : err;
}

/* Executes bulk (holding one write per op) and sets each op's err: OK when
 * all succeeded; else bson_error_t holds the first write error's, and what
 * befell the rest is the reply's to tell. */
void mongo_bulk_execute(mongoc_bulk_operation_t *bulk, struct mongo_op **ops, size_t n)
{
    bson_t reply; /* always initialized by the call */
    bson_error_t e;
    if (mongoc_bulk_operation_execute(bulk, &reply, &e)) {
        for (size_t i = 0; i < n; i++)
            ops[i]->err = PAYMENT_STORE_OK;
    } else {
        int err = mongo_map_err(&e);
        mongo_bulk_results(ops, n, &reply,
                           err == PAYMENT_STORE_EUNAVAILABLE ? err : PAYMENT_STORE_EINTERNAL);
    }
    bson_destroy(&reply);
}

/* The mark a broker operation's payment write leaves, in *m; NULL for the
 * other writes. */
const struct mongo_mark *mongo_op_mark(const struct mongo_op *op, struct mongo_mark *m)
{
    if (op->kind != OP_APPLY)
        return NULL;
    m->op_id = op->apply.op_id;
    m->fence = (int64_t)op->apply.fence;
    /* A delete's outcome names the version it deleted, one below its event's. */
    m->version = op->apply.kind == PAYMENT_APPLY_DELETE ? op->event.version - 1 : op->row.version;
    return m;
}

/* The record op's write stores, in *r; NULL when it has none. */
const struct mongo_rec *mongo_op_rec(const struct mongo_op *op, struct mongo_rec *r)
{
    if (!op->idem)
        return NULL;
    int create = op->kind == OP_CREATE ||
                 (op->kind == OP_APPLY && op->apply.kind == PAYMENT_APPLY_CREATE);
    int remove = op->kind == OP_DELETE ||
                 (op->kind == OP_APPLY && op->apply.kind == PAYMENT_APPLY_DELETE);
    r->idem = op->idem;
    r->sk = op->sk;
    r->rank = create ? MONGO_RANK_CREATE : remove ? MONGO_RANK_DELETE : op->row.version;
    r->keep = mongo_idem_keep(op->row.doc_len + mongo_idem_size(op->idem));
    return r;
}

/* Inserts the creates of ops (all not yet decided) in one unordered bulk
 * write after reserving their sequence numbers in one $inc.  Returns
 * whether the bulk write was sent (a commit, for the counters). */
static bool mongo_creates_insert(struct mongo_store *st, mongoc_client_t *client,
                                 struct mongo_op **ops, size_t n)
{
    bson_error_t e;
    int64_t last = mongo_seq_reserve(st, client, n, &e);
    if (last < 0) {
        int err = mongo_map_err(&e);
        for (size_t i = 0; i < n; i++)
            ops[i]->err = err == PAYMENT_STORE_EUNAVAILABLE ? err : PAYMENT_STORE_EINTERNAL;
        return false;
    }
    mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
    bson_t opts = BSON_INITIALIZER;
    bool ok = BSON_APPEND_BOOL(&opts, "ordered", false);
    mongoc_bulk_operation_t *bulk =
        ok ? mongoc_collection_create_bulk_operation_with_opts(coll, &opts) : NULL;
    for (size_t i = 0; bulk && i < n; i++) {
        ops[i]->seq = last - (int64_t)n + 1 + (int64_t)i;
        ops[i]->err = 1; /* undecided */
        bson_t doc = BSON_INITIALIZER;
        struct mongo_mark mark;
        struct mongo_rec rec;
        ok = mongo_build_insert(&doc, &ops[i]->row, ops[i]->seq, mongo_op_rec(ops[i], &rec),
                                mongo_op_mark(ops[i], &mark), &ops[i]->event) &&
             mongoc_bulk_operation_insert_with_opts(bulk, &doc, NULL, &e);
        bson_destroy(&doc);
        if (!ok)
            break;
    }
    bool sent = bulk && ok;
    if (!sent) {
        for (size_t i = 0; i < n; i++)
            ops[i]->err = PAYMENT_STORE_EINTERNAL; /* a document BSON cannot hold */
    } else {
        mongo_bulk_execute(bulk, ops, n);
    }
    mongoc_bulk_operation_destroy(bulk); /* NULL is a no-op */
    bson_destroy(&opts);
    mongoc_collection_destroy(coll);
    return sent;
}

/* Decides a create whose key a payment of another organisation holds: as
 * the embedded store, the id first (EDUPLICATE when it exists), then the
 * key (EIDEMPOTENT). */
static void mongo_create_held(mongoc_collection_t *coll, struct mongo_op *op)
{
    bson_t filter = BSON_INITIALIZER, proj = BSON_INITIALIZER, doc;
    int err = BSON_APPEND_UTF8(&filter, "_id", op->row.id) && BSON_APPEND_INT32(&proj, "_id", 1)
                  ? mongo_find_one(coll, &filter, &proj, 1, &doc)
                  : PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        bson_destroy(&doc);
        err = PAYMENT_STORE_EDUPLICATE;
    } else if (err == PAYMENT_STORE_ENOTFOUND) {
        err = PAYMENT_STORE_EIDEMPOTENT;
    }
    op->err = err;
    bson_destroy(&filter);
    bson_destroy(&proj);
}

/* Decides the creates of ops (all not yet decided): those whose key a
 * payment of another organisation holds are refused (mongo_create_held),
 * the others inserted (mongo_creates_insert).  Returns whether a bulk write
 * was sent. */
bool mongo_creates_run(struct mongo_store *st, mongoc_client_t *client,
                       struct mongo_op **ops, size_t n)
{
    bool *held = calloc(n, sizeof *held);
    struct mongo_op **todo = malloc(n * sizeof *todo);
    mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
    int err = held && todo ? mongo_keys_held(coll, ops, n, held) : PAYMENT_STORE_EINTERNAL;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (err != PAYMENT_STORE_OK)
            ops[i]->err = err == PAYMENT_STORE_EUNAVAILABLE ? err : PAYMENT_STORE_EINTERNAL;
        else if (held[i])
            mongo_create_held(coll, ops[i]);
        else
            todo[m++] = ops[i];
    }
    mongoc_collection_destroy(coll);
    bool sent = m > 0 && mongo_creates_insert(st, client, todo, m);
    free(held);
    free(todo);
    return sent;
}

/* Reads the id's state on the primary's latest data (read concern local)
 * into out: whether it exists and is live, its version, whether its records
 * hold sk (sk may be NULL) and how many entries its outbox holds; with_doc
 * keeps the document read, with its text and organisation_id, in out->doc
 * (a delete's event needs them).  Returns 0, or a store error (out->doc
 * then not kept). */
int mongo_read_state(mongoc_collection_t *coll, const char *id, const char *sk, int with_doc,
                     struct mongo_state *out)
{
    memset(out, 0, sizeof *out);
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, proj, rc;
    bool ok = BSON_APPEND_UTF8(&filter, "_id", id) &&
              BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj) &&
              BSON_APPEND_INT32(&proj, "version", 1) && BSON_APPEND_INT32(&proj, "deleted", 1) &&
              BSON_APPEND_INT32(&proj, MONGO_F_PEND ".id", 1) &&
              (!sk || BSON_APPEND_INT32(&proj, MONGO_F_IDEM ".sk", 1)) &&
              (!with_doc || (BSON_APPEND_INT32(&proj, "doc", 1) &&
                             BSON_APPEND_INT32(&proj, MONGO_F_ORG, 1))) &&
              bson_append_document_end(&opts, &proj) &&
              BSON_APPEND_DOCUMENT_BEGIN(&opts, "readConcern", &rc) &&
              BSON_APPEND_UTF8(&rc, "level", MONGOC_READ_CONCERN_LEVEL_LOCAL) &&
              bson_append_document_end(&opts, &rc) && BSON_APPEND_INT64(&opts, "limit", 1) &&
              BSON_APPEND_BOOL(&opts, "singleBatch", true);
    int err = PAYMENT_STORE_EINTERNAL;
    if (ok) {
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
        const bson_t *doc;
        bson_error_t e;
        if (mongoc_cursor_next(cur, &doc)) {
            bson_iter_t it;
            out->found = 1;
            out->live = !(bson_iter_init_find(&it, doc, "deleted") && bson_iter_as_bool(&it));
            out->version = mongo_get_int64(doc, "version", -1);
            out->holds = mongo_holds_sk(doc, sk);
            out->pending = mongo_pend_count(doc);
            if (with_doc) {
                bson_copy_to(doc, &out->doc);
                out->has_doc = 1;
            }
            err = PAYMENT_STORE_OK;
        } else {
            err = mongoc_cursor_error(cur, &e) ? mongo_map_err(&e) : PAYMENT_STORE_OK;
        }
        mongoc_cursor_destroy(cur);
    }
    bson_destroy(&filter);
    bson_destroy(&opts);
    return err;
}

/* Completes a delete's event from the live payment it read (state, with
 * its document): the document as it was, its organisation, and the version
 * the tombstone takes, the stored one + 1.  Returns 0, or EINTERNAL for a
 * document without them. */
int mongo_delete_event(struct mongo_state *state, struct mongo_event *ev)
{
    uint32_t len = 0;
    ev->doc = state->has_doc ? mongo_get_utf8(&state->doc, "doc", &len) : NULL;
    ev->doc_len = len;
    ev->organisation_id = state->has_doc ? mongo_get_utf8(&state->doc, MONGO_F_ORG, NULL) : NULL;
    ev->version = state->version + 1;
    return ev->doc && ev->organisation_id && state->version >= 0 ? PAYMENT_STORE_OK
                                                                  : PAYMENT_STORE_EINTERNAL;
}

/* Called when a write found its payment's outbox full: wakes the
 * sequencer on it and gives it a moment. */
void mongo_room_wait(struct mongo_store *st, const char *payment_id)
{
    mongo_seq_note(st, payment_id);
    struct timespec pause = {0, MONGO_ROOM_PAUSE_MS * 1000000L};
    (void)nanosleep(&pause, NULL); /* interrupted: shorter, and tried again */
}

/* One compare-and-set: the update (or tombstone) of op, with its event and
 * record, when the stored payment is live, at version (-1: any), does not
 * hold op's key already, and its outbox has room.  Sets *matched. */
static int mongo_cas(mongoc_collection_t *coll, const struct mongo_op *op, int64_t version,
                     int *matched)
{
    struct mongo_rec rec;
    bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER, reply, ne;
    bool ok = BSON_APPEND_UTF8(&filter, "_id", op->row.id) &&
              BSON_APPEND_BOOL(&filter, "deleted", false) &&
              mongo_append_pend_room(&filter, mongo_pend_keep(op->event.doc_len));
    if (ok && version >= 0)
        ok = BSON_APPEND_INT64(&filter, "version", version);
    if (ok && op->sk)
        ok = BSON_APPEND_DOCUMENT_BEGIN(&filter, MONGO_F_IDEM ".sk", &ne) &&
             BSON_APPEND_UTF8(&ne, "$ne", op->sk) && bson_append_document_end(&filter, &ne);
    if (ok)
        ok = 2 * op->event.doc_len + mongo_idem_size(op->idem) <= MONGO_DOC_MAX &&
             (op->kind == OP_UPDATE
                  ? mongo_build_update(&update, &op->row, mongo_op_rec(op, &rec), NULL, &op->event)
                  : mongo_build_tombstone(&update, mongo_op_rec(op, &rec), NULL, &op->event));
    int err = PAYMENT_STORE_EINTERNAL;
    *matched = 0;
    if (ok) {
        bson_error_t e;
        if (mongoc_collection_update_one(coll, &filter, &update, NULL, &reply, &e)) {
            *matched = mongo_get_int64(&reply, "matchedCount", 0) == 1;
            err = PAYMENT_STORE_OK;
        } else {
            err = mongo_map_err(&e);
            if (err == PAYMENT_STORE_EDUPLICATE)
                err = PAYMENT_STORE_EINTERNAL; /* no update changes _id */
        }
        bson_destroy(&reply); /* always initialized by the call */
    }
    bson_destroy(&filter);
    bson_destroy(&update);
    return err;
}

/* The decision a state read gives op, in the embedded store's order: gone,
 * other version, key held (by this payment's records, or another's: held).
 * Returns the error, or 1 when the payment is as op expects it. */
static int mongo_state_decides(const struct mongo_state *state, struct mongo_op *op, bool held)
{
    if (!state->live)
        return PAYMENT_STORE_ENOTFOUND;
    if (op->expected_version >= 0 && state->version != op->expected_version) {
        op->current_version = state->version;
        return PAYMENT_STORE_ECONFLICT;
    }
    if (state->holds || held)
        return PAYMENT_STORE_EIDEMPOTENT;
    return 1;
}

/* One try of an update or delete: 0 when written, 1 when undecided (the
 * payment changed meanwhile, or its outbox is full: *full), else the
 * decision.  A delete reads the payment first (its event needs the
 * document and version) and writes on the version it read; an update
 * writes, and reads only when that matched nothing. */
static int mongo_write_try(mongoc_collection_t *coll, struct mongo_op *op, bool held, int *full)
{
    struct mongo_state state;
    int matched = 0, err;
    *full = 0;
    if (op->kind == OP_UPDATE && !held) {
        err = mongo_cas(coll, op, op->expected_version, &matched);
        if (err != PAYMENT_STORE_OK || matched)
            return err;
    }
    err = mongo_read_state(coll, op->row.id, op->sk, op->kind == OP_DELETE, &state);
    if (err == PAYMENT_STORE_OK)
        err = mongo_state_decides(&state, op, held);
    if (err == 1) {
        *full = state.pending >= mongo_pend_keep(op->kind == OP_DELETE && state.has_doc
                                                     ? (size_t)state.doc.len
                                                     : op->event.doc_len);
        if (op->kind == OP_DELETE && !*full) {
            err = mongo_delete_event(&state, &op->event);
            if (err == PAYMENT_STORE_OK)
                err = mongo_cas(coll, op, state.version, &matched);
            if (err == PAYMENT_STORE_OK)
                err = matched ? PAYMENT_STORE_OK : 1;
            op->event.doc = NULL; /* it pointed into state */
            op->event.organisation_id = NULL;
        }
    }
    if (state.has_doc)
        bson_destroy(&state.doc);
    return err;
}

/* Decides an update or delete (mongo_write_try), trying again while the
 * payment changes under it (MONGO_CAS_TRIES) or its outbox is full (for
 * MONGO_ROOM_TRIES pauses); still undecided, EUNAVAILABLE. */
void mongo_write_run(struct mongo_store *st, mongoc_client_t *client, struct mongo_op *op)
{
    mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
    bool held = false; /* by a payment of another organisation: no write */
    int err = mongo_keys_held(coll, &op, 1, &held);
    for (int tries = 0, rooms = 0; err == PAYMENT_STORE_OK && tries < MONGO_CAS_TRIES;) {
        int full;
        err = mongo_write_try(coll, op, held, &full);
        if (err != 1)
            break;
        if (full && rooms++ < MONGO_ROOM_TRIES)
            mongo_room_wait(st, op->row.id);
        else
            tries++;
        err = tries < MONGO_CAS_TRIES ? PAYMENT_STORE_OK : PAYMENT_STORE_EUNAVAILABLE;
    }
    op->err = err;
    if (op->err != PAYMENT_STORE_ECONFLICT)
        op->current_version = -1;
    mongoc_collection_destroy(coll);
}

/* {"idem.created": {$lt: before}}, and {$pull: {idem: {created: {$lt:
 * before}}}}: every old record of every document holding one. */
static bool mongo_build_purge(bson_t *filter, bson_t *update, int64_t before_ms)
{
    bson_t lt, pull, match, cond;
    return BSON_APPEND_DOCUMENT_BEGIN(filter, MONGO_F_IDEM ".created", &lt) &&
           BSON_APPEND_INT64(&lt, "$lt", before_ms) && bson_append_document_end(filter, &lt) &&
           BSON_APPEND_DOCUMENT_BEGIN(update, "$pull", &pull) &&
           BSON_APPEND_DOCUMENT_BEGIN(&pull, MONGO_F_IDEM, &match) &&
           BSON_APPEND_DOCUMENT_BEGIN(&match, "created", &cond) &&
           BSON_APPEND_INT64(&cond, "$lt", before_ms) && bson_append_document_end(&match, &cond) &&
           bson_append_document_end(&pull, &match) && bson_append_document_end(update, &pull);
}

/* Forgets the outcomes of operations applied before before_ms, and the
 * claims of attempts made before then that never recorded one. */
static int mongo_purge_ops(struct mongo_store *st, mongoc_client_t *client, int64_t before_ms)
{
    bson_t filter = BSON_INITIALIZER, lt;
    int err = PAYMENT_STORE_EINTERNAL;
    if (BSON_APPEND_DOCUMENT_BEGIN(&filter, "applied_ms", &lt) &&
        BSON_APPEND_INT64(&lt, "$lt", before_ms) && bson_append_document_end(&filter, &lt)) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->ops_coll);
        bson_error_t e;
        err = mongoc_collection_delete_many(coll, &filter, NULL, NULL, &e) ? PAYMENT_STORE_OK
                                                                           : mongo_map_err(&e);
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&filter);
    return err;
}

/* Runs on the calling thread: one update of every document with an old
 * record, then the old operation outcomes.  Returns 0 or a store error. */
static int mongo_purge_run(struct mongo_store *st, int64_t before_ms)
{
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER;
    if (err == PAYMENT_STORE_OK && !mongo_build_purge(&filter, &update, before_ms))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
        bson_error_t e;
        if (!mongoc_collection_update_many(coll, &filter, &update, NULL, NULL, &e))
            err = mongo_map_err(&e);
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&filter);
    bson_destroy(&update);
    if (err == PAYMENT_STORE_OK)
        err = mongo_purge_ops(st, client, before_ms);
    mongoc_client_pool_push(st->pool, client);
    return err;
}

void mongo_idem_purge(payment_store *s, int64_t before_ms)
{
    /* Best effort: records a failed purge leaves are taken by the next. */
    (void)mongo_purge_run((struct mongo_store *)s, before_ms);
}
