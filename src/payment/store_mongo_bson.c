/* store_mongo_bson: the documents the MongoDB store writes and reads, as
 * BSON: a payment's fields, its idempotency records (bounded by $sort and
 * $slice on their rank), the marks of broker operations, the event pushed
 * to its outbox (the entry itself is store_mongo_events.c's), tombstones,
 * and the small filter pieces every module builds with.  No I/O. */

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "payment/store_mongo.h"

#define MONGO_IDEM_KEEP 16            /* records a payment keeps: its create's and the newest */
#define MONGO_OPS_KEEP 16             /* entries of ops kept: the newest */
#define MONGO_ROW_OPTIONAL 7           /* the list's columns besides organisation_id */

/* An int64 field of doc, or fallback when absent. */
int64_t mongo_get_int64(const bson_t *doc, const char *key, int64_t fallback)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_NUMBER(&it))
        return bson_iter_as_int64(&it);
    return fallback;
}

/* A string field of doc (NUL-terminated inside doc), or NULL. */
const char *mongo_get_utf8(const bson_t *doc, const char *key, uint32_t *len)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, len);
    return NULL;
}

/* readConcern local: the primary's latest data, for decisions. */
bool mongo_append_local(bson_t *opts)
{
    bson_t rc;
    return BSON_APPEND_DOCUMENT_BEGIN(opts, "readConcern", &rc) &&
           BSON_APPEND_UTF8(&rc, "level", MONGOC_READ_CONCERN_LEVEL_LOCAL) &&
           bson_append_document_end(opts, &rc);
}

/* The optional list columns of row, NULL when absent. */
static void mongo_row_optional(const struct payment_row *row, const char *name[MONGO_ROW_OPTIONAL],
                               const char *value[MONGO_ROW_OPTIONAL])
{
    name[0] = MONGO_F_CURRENCY, value[0] = row->currency;
    name[1] = MONGO_F_SCHEME, value[1] = row->payment_scheme;
    name[2] = MONGO_F_TYPE, value[2] = row->payment_type;
    name[3] = MONGO_F_REF, value[3] = row->reference;
    name[4] = MONGO_F_E2E, value[4] = row->end_to_end_reference;
    name[5] = MONGO_F_DATE, value[5] = row->processing_date[0] ? row->processing_date : NULL;
    name[6] = MONGO_F_AMOUNT, value[6] = row->amount_key[0] ? row->amount_key : NULL;
}

static bool mongo_append_doc_text(bson_t *b, const struct payment_row *row)
{
    if (row->doc_len > INT_MAX)
        return false;
    const char *text = row->doc ? row->doc : "";
    return bson_append_utf8(b, "doc", 3, text, row->doc ? (int)row->doc_len : 0);
}

/* The fields a write sets: the row's columns that are present, the
 * document, the version and modification time. */
static bool mongo_append_columns(bson_t *b, const struct payment_row *row)
{
    const char *name[MONGO_ROW_OPTIONAL], *value[MONGO_ROW_OPTIONAL];
    mongo_row_optional(row, name, value);
    bool ok = BSON_APPEND_UTF8(b, MONGO_F_ORG, row->organisation_id) &&
              BSON_APPEND_INT64(b, "version", row->version) &&
              BSON_APPEND_INT64(b, "modified_ms", row->modified_ms);
    for (int i = 0; ok && i < MONGO_ROW_OPTIONAL; i++)
        if (value[i])
            ok = BSON_APPEND_UTF8(b, name[i], value[i]);
    return ok && mongo_append_doc_text(b, row);
}

/* The text an idempotency record is found by: scope, MONGO_IDEM_SEP, key.
 * Keys never hold the separator, so distinct pairs give distinct texts.
 * Returns it (the caller frees it), or NULL when key is not a key or memory
 * runs out. */
char *mongo_sk_new(const char *scope, const char *key)
{
    if (!scope || !key || !key[0] || strchr(key, MONGO_IDEM_SEP))
        return NULL;
    size_t ls = strlen(scope), lk = strlen(key);
    char *sk = malloc(ls + lk + 2);
    if (sk) {
        memcpy(sk, scope, ls);
        sk[ls] = MONGO_IDEM_SEP;
        memcpy(sk + ls + 1, key, lk + 1);
    }
    return sk;
}

/* The bytes a record adds to its document, roughly. */
size_t mongo_idem_size(const struct payment_idem *idem)
{
    if (!idem)
        return 0;
    return strlen(idem->scope) + strlen(idem->key) + (idem->location ? strlen(idem->location) : 0) +
           (idem->body ? idem->body_len : 0) + 256;
}

/* How many records a payment keeps when a write of about bytes (its text
 * and its record) pushes one: MONGO_IDEM_KEEP, fewer for large payments,
 * whose records (their answers hold the payment) would otherwise fill the
 * document; never fewer than 2, the create's and the new one. */
int mongo_idem_keep(size_t bytes)
{
    size_t fit = MONGO_DOC_MAX / 2 / (bytes ? bytes : 1);
    return fit < 2 ? 2 : fit > MONGO_IDEM_KEEP ? MONGO_IDEM_KEEP : (int)fit;
}

/* Appends the record {sk, fingerprint, status, location, etag, body,
 * created, rank} as field key of b; absent headers and body are left out. */
static bool mongo_append_idem(bson_t *b, const char *key, const struct mongo_rec *r)
{
    const struct payment_idem *idem = r->idem;
    if (idem->body && idem->body_len > MONGO_DOC_MAX)
        return false;
    bson_t rec;
    if (!bson_append_document_begin(b, key, -1, &rec))
        return false;
    bool ok = BSON_APPEND_UTF8(&rec, "sk", r->sk) &&
              BSON_APPEND_UTF8(&rec, "fingerprint", idem->fingerprint ? idem->fingerprint : "") &&
              BSON_APPEND_INT32(&rec, "status", idem->status) &&
              (!idem->location || BSON_APPEND_UTF8(&rec, "location", idem->location)) &&
              (!idem->etag || BSON_APPEND_UTF8(&rec, "etag", idem->etag)) &&
              (!idem->body || BSON_APPEND_BINARY(&rec, "body", BSON_SUBTYPE_BINARY,
                                                 (const uint8_t *)idem->body,
                                                 (uint32_t)idem->body_len)) &&
              BSON_APPEND_INT64(&rec, "created", idem->created_ms) &&
              BSON_APPEND_INT64(&rec, "rank", r->rank);
    return bson_append_document_end(b, &rec) && ok;
}

/* {idem: {$each: [record], $sort: {rank: 1}, $slice: -keep}} into $push
 * document push: the record added, the lowest ranks beyond keep dropped. */
static bool mongo_append_idem_push(bson_t *push, const struct mongo_rec *r)
{
    bson_t field, each, sort;
    if (!BSON_APPEND_DOCUMENT_BEGIN(push, MONGO_F_IDEM, &field))
        return false;
    bool ok = BSON_APPEND_ARRAY_BEGIN(&field, "$each", &each);
    if (!ok)
        return false;
    ok = mongo_append_idem(&each, "0", r);
    ok = bson_append_array_end(&field, &each) && ok;
    ok = ok && BSON_APPEND_DOCUMENT_BEGIN(&field, "$sort", &sort) &&
         BSON_APPEND_INT32(&sort, "rank", 1) && bson_append_document_end(&field, &sort) &&
         BSON_APPEND_INT32(&field, "$slice", -r->keep);
    return bson_append_document_end(push, &field) && ok;
}

/* The entry {id, v} as field key of b. */
static bool mongo_append_entry(bson_t *b, const char *key, const struct mongo_mark *mark)
{
    bson_t e;
    if (!bson_append_document_begin(b, key, -1, &e))
        return false;
    bool ok = BSON_APPEND_UTF8(&e, "id", mark->op_id) &&
              (mark->version < 0 || BSON_APPEND_INT64(&e, "v", mark->version));
    return bson_append_document_end(b, &e) && ok;
}

/* {pend: {$each: [entry]}} into $push document push: the event appended
 * to the outbox (whose room the write's filter checked). */
static bool mongo_append_pend_push(bson_t *push, const struct mongo_event *ev)
{
    bson_t field, each;
    if (!BSON_APPEND_DOCUMENT_BEGIN(push, MONGO_F_PEND, &field))
        return false;
    bool ok = BSON_APPEND_ARRAY_BEGIN(&field, "$each", &each);
    if (!ok)
        return false;
    ok = mongo_append_event(&each, "0", ev);
    ok = bson_append_array_end(&field, &each) && ok;
    return bson_append_document_end(push, &field) && ok;
}

/* {$push: {idem: record (mongo_append_idem_push), ops: {$each: [entry],
 * $slice: -KEEP}, pend: event}} into update b, with what there is (a broker
 * operation's write may have all three). */
static bool mongo_append_push(bson_t *b, const struct mongo_rec *rec,
                              const struct mongo_mark *mark, const struct mongo_event *ev)
{
    if (!rec && !mark && !ev)
        return true;
    bson_t push, ops, each;
    if (!BSON_APPEND_DOCUMENT_BEGIN(b, "$push", &push))
        return false;
    bool ok = (!rec || mongo_append_idem_push(&push, rec)) &&
              (!ev || mongo_append_pend_push(&push, ev));
    if (ok && mark) {
        ok = BSON_APPEND_DOCUMENT_BEGIN(&push, MONGO_F_OPS, &ops);
        if (!ok)
            return false;
        ok = BSON_APPEND_ARRAY_BEGIN(&ops, "$each", &each);
        if (!ok)
            return false;
        ok = mongo_append_entry(&each, "0", mark);
        ok = bson_append_array_end(&ops, &each) && ok;
        ok = ok && BSON_APPEND_INT32(&ops, "$slice", -MONGO_OPS_KEEP);
        ok = bson_append_document_end(&push, &ops) && ok;
    }
    return bson_append_document_end(b, &push) && ok;
}

/* The document a create inserts, holding its event in its outbox, and its
 * record or its mark when it has one. */
bool mongo_build_insert(bson_t *b, const struct payment_row *row, int64_t seq,
                        const struct mongo_rec *rec, const struct mongo_mark *mark,
                        const struct mongo_event *ev)
{
    bool ok = BSON_APPEND_UTF8(b, "_id", row->id) && BSON_APPEND_INT64(b, "seq", seq) &&
              BSON_APPEND_INT64(b, "created_ms", row->created_ms) &&
              mongo_append_columns(b, row) && BSON_APPEND_BOOL(b, "deleted", false);
    bson_t list;
    if (ok && ev) {
        if (!BSON_APPEND_ARRAY_BEGIN(b, MONGO_F_PEND, &list))
            return false;
        ok = mongo_append_event(&list, "0", ev);
        ok = bson_append_array_end(b, &list) && ok;
    }
    if (ok && mark) {
        ok = BSON_APPEND_INT64(b, MONGO_F_FENCE, mark->fence) &&
             BSON_APPEND_ARRAY_BEGIN(b, MONGO_F_OPS, &list);
        if (!ok)
            return false;
        ok = mongo_append_entry(&list, "0", mark);
        ok = bson_append_array_end(b, &list) && ok;
    }
    if (!ok || !rec)
        return ok;
    if (!BSON_APPEND_ARRAY_BEGIN(b, MONGO_F_IDEM, &list))
        return false;
    ok = mongo_append_idem(&list, "0", rec);
    return bson_append_array_end(b, &list) && ok;
}

/* {$set: columns, $unset: the absent ones, $push: the event, the record or
 * mark}; created_ms and seq are kept. */
bool mongo_build_update(bson_t *b, const struct payment_row *row,
                        const struct mongo_rec *rec, const struct mongo_mark *mark,
                        const struct mongo_event *ev)
{
    const char *name[MONGO_ROW_OPTIONAL], *value[MONGO_ROW_OPTIONAL];
    mongo_row_optional(row, name, value);
    bson_t set, unset;
    bool ok = BSON_APPEND_DOCUMENT_BEGIN(b, "$set", &set);
    if (!ok)
        return false;
    ok = mongo_append_columns(&set, row) &&
         (!mark || BSON_APPEND_INT64(&set, MONGO_F_FENCE, mark->fence));
    if (!bson_append_document_end(b, &set) || !ok)
        return false;
    int absent = 0;
    for (int i = 0; i < MONGO_ROW_OPTIONAL; i++)
        absent += value[i] == NULL;
    if (absent > 0) {
        if (!BSON_APPEND_DOCUMENT_BEGIN(b, "$unset", &unset))
            return false;
        for (int i = 0; ok && i < MONGO_ROW_OPTIONAL; i++)
            if (!value[i])
                ok = BSON_APPEND_UTF8(&unset, name[i], "");
        if (!bson_append_document_end(b, &unset) || !ok)
            return false;
    }
    return mongo_append_push(b, rec, mark, ev);
}

/* A tombstone keeps _id, seq, organisation_id (the shard key when sharded),
 * the idempotency records (a delete made with a key is answered again from
 * its record), the operations' marks and the outbox, which gets the delete's
 * event; its version is the event's (the deleted version + 1); the document
 * and the other columns go. */
bool mongo_build_tombstone(bson_t *b, const struct mongo_rec *rec,
                           const struct mongo_mark *mark, const struct mongo_event *ev)
{
    static const char *const gone[] = {"doc",       MONGO_F_CURRENCY, MONGO_F_SCHEME,
                                       MONGO_F_TYPE, MONGO_F_REF,     MONGO_F_E2E,
                                       MONGO_F_DATE, MONGO_F_AMOUNT};
    bson_t set, unset;
    if (!BSON_APPEND_DOCUMENT_BEGIN(b, "$set", &set))
        return false;
    bool ok = BSON_APPEND_BOOL(&set, "deleted", true) &&
              (!ev || BSON_APPEND_INT64(&set, "version", ev->version)) &&
              (!mark || BSON_APPEND_INT64(&set, MONGO_F_FENCE, mark->fence));
    if (!bson_append_document_end(b, &set) || !ok)
        return false;
    if (!BSON_APPEND_DOCUMENT_BEGIN(b, "$unset", &unset))
        return false;
    for (size_t i = 0; ok && i < sizeof gone / sizeof gone[0]; i++)
        ok = BSON_APPEND_UTF8(&unset, gone[i], "");
    if (!bson_append_document_end(b, &unset) || !ok)
        return false;
    return mongo_append_push(b, rec, mark, ev);
}

/* Whether doc's idempotency records (doc.idem, possibly projected to their
 * sk alone) hold sk. */
int mongo_holds_sk(const bson_t *doc, const char *sk)
{
    bson_iter_t it, list, rec;
    if (!sk || !bson_iter_init_find(&it, doc, MONGO_F_IDEM) || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &list))
        return 0;
    while (bson_iter_next(&list)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&list) || !bson_iter_recurse(&list, &rec) ||
            !bson_iter_find(&rec, "sk") || !BSON_ITER_HOLDS_UTF8(&rec))
            continue;
        if (strcmp(bson_iter_utf8(&rec, NULL), sk) == 0)
            return 1;
    }
    return 0;
}

/* {field: {$not: {$gt: v}}}: at most v, or absent (payments the
 * synchronous path wrote have no fence). */
bool mongo_append_not_above(bson_t *b, const char *field, int64_t v)
{
    bson_t cond, gt;
    return BSON_APPEND_DOCUMENT_BEGIN(b, field, &cond) &&
           BSON_APPEND_DOCUMENT_BEGIN(&cond, "$not", &gt) && BSON_APPEND_INT64(&gt, "$gt", v) &&
           bson_append_document_end(&cond, &gt) && bson_append_document_end(b, &cond);
}

/* {field: {$exists: false}}. */
bool mongo_append_absent(bson_t *b, const char *field)
{
    bson_t cond;
    return BSON_APPEND_DOCUMENT_BEGIN(b, field, &cond) &&
           BSON_APPEND_BOOL(&cond, "$exists", false) &&
           bson_append_document_end(b, &cond);
}

/* Whether doc's ops holds op_id; *v is that entry's v, or -1 without one. */
int mongo_ops_hold(const bson_t *doc, const char *op_id, int64_t *v)
{
    bson_iter_t it, list, entry;
    *v = -1;
    if (!bson_iter_init_find(&it, doc, MONGO_F_OPS) || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &list))
        return 0;
    while (bson_iter_next(&list)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&list) || !bson_iter_recurse(&list, &entry))
            continue;
        bson_iter_t id = entry;
        if (!bson_iter_find(&id, "id") || !BSON_ITER_HOLDS_UTF8(&id) ||
            strcmp(bson_iter_utf8(&id, NULL), op_id) != 0)
            continue;
        if (bson_iter_find(&entry, "v") && BSON_ITER_HOLDS_NUMBER(&entry))
            *v = bson_iter_as_int64(&entry);
        return 1;
    }
    return 0;
}

/* Copies the string field key of doc into out ("" when absent), cut to fit. */
void mongo_copy_utf8(const bson_t *doc, const char *key, char *out, size_t len)
{
    const char *v = mongo_get_utf8(doc, key, NULL);
    snprintf(out, len, "%s", v ? v : "");
}
