/* store_mongo_read: the MongoDB store's reads, on the calling thread with a
 * pooled client: a payment, a list page (filters, order, paging), an
 * idempotency record, an operation's outcome, a partition's position, and
 * the ping of /readyz. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "payment/store_mongo.h"

/* Fills out from the record rec (an element of a document's idem array).
 * Returns 0, or a store error. */
static int mongo_idem_fill(bson_iter_t *rec, struct payment_idem_found *out)
{
    int err = PAYMENT_STORE_OK;
    out->status = 0;
    out->fingerprint[0] = out->etag[0] = '\0';
    while (err == PAYMENT_STORE_OK && bson_iter_next(rec)) {
        const char *k = bson_iter_key(rec);
        uint32_t len = 0;
        if (strcmp(k, "fingerprint") == 0 && BSON_ITER_HOLDS_UTF8(rec)) {
            snprintf(out->fingerprint, sizeof out->fingerprint, "%s", bson_iter_utf8(rec, NULL));
        } else if (strcmp(k, "etag") == 0 && BSON_ITER_HOLDS_UTF8(rec)) {
            snprintf(out->etag, sizeof out->etag, "%s", bson_iter_utf8(rec, NULL));
        } else if (strcmp(k, "status") == 0 && BSON_ITER_HOLDS_NUMBER(rec)) {
            out->status = (int)bson_iter_as_int64(rec);
        } else if (strcmp(k, "location") == 0 && BSON_ITER_HOLDS_UTF8(rec)) {
            const char *text = bson_iter_utf8(rec, &len);
            if (buf_append(&out->location, text, len) != 0)
                err = PAYMENT_STORE_EINTERNAL;
        } else if (strcmp(k, "body") == 0 && BSON_ITER_HOLDS_BINARY(rec)) {
            const uint8_t *data = NULL;
            bson_subtype_t sub;
            bson_iter_binary(rec, &sub, &len, &data);
            if (len && buf_append(&out->body, (const char *)data, len) != 0)
                err = PAYMENT_STORE_EINTERNAL;
        }
    }
    return err;
}

/* Finds the record whose sk is sk in the found document doc (projected to
 * that record) and fills out.  ENOTFOUND when doc holds none. */
static int mongo_idem_parse(const bson_t *doc, const char *sk, struct payment_idem_found *out)
{
    bson_iter_t it, list, rec, field;
    if (!bson_iter_init_find(&it, doc, MONGO_F_IDEM) || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &list))
        return PAYMENT_STORE_ENOTFOUND;
    while (bson_iter_next(&list)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&list) || !bson_iter_recurse(&list, &rec))
            continue;
        field = rec;
        if (bson_iter_find(&field, "sk") && BSON_ITER_HOLDS_UTF8(&field) &&
            strcmp(bson_iter_utf8(&field, NULL), sk) == 0)
            return mongo_idem_fill(&rec, out);
    }
    return PAYMENT_STORE_ENOTFOUND;
}

/* {"idem.sk": sk}, and the projection of that record alone. */
static bool mongo_build_idem_get(bson_t *filter, bson_t *opts, const char *sk)
{
    bson_t proj, match, cond;
    return BSON_APPEND_UTF8(filter, MONGO_F_IDEM ".sk", sk) &&
           BSON_APPEND_DOCUMENT_BEGIN(opts, "projection", &proj) &&
           BSON_APPEND_DOCUMENT_BEGIN(&proj, MONGO_F_IDEM, &match) &&
           BSON_APPEND_DOCUMENT_BEGIN(&match, "$elemMatch", &cond) &&
           BSON_APPEND_UTF8(&cond, "sk", sk) && bson_append_document_end(&match, &cond) &&
           bson_append_document_end(&proj, &match) && BSON_APPEND_INT32(&proj, "_id", 0) &&
           bson_append_document_end(opts, &proj) && BSON_APPEND_INT64(opts, "limit", 1) &&
           BSON_APPEND_BOOL(opts, "singleBatch", true);
}

int mongo_idem_get(payment_store *s, const char *scope, const char *key,
                   struct payment_idem_found *out)
{
    struct mongo_store *st = (struct mongo_store *)s;
    char *sk = mongo_sk_new(scope, key);
    if (!sk)
        return key && key[0] && !strchr(key, MONGO_IDEM_SEP) ? PAYMENT_STORE_EINTERNAL
                                                             : PAYMENT_STORE_ENOTFOUND;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client) {
        free(sk);
        return err;
    }
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
    if (err == PAYMENT_STORE_OK && !mongo_build_idem_get(&filter, &opts, sk))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
        const bson_t *doc;
        bson_error_t e;
        if (mongoc_cursor_next(cur, &doc))
            err = mongo_idem_parse(doc, sk, out);
        else
            err = mongoc_cursor_error(cur, &e) ? mongo_map_err(&e) : PAYMENT_STORE_ENOTFOUND;
        mongoc_cursor_destroy(cur);
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&filter);
    bson_destroy(&opts);
    mongoc_client_pool_push(st->pool, client);
    free(sk);
    return err;
}

int mongo_ping(payment_store *s)
{
    struct mongo_store *st = (struct mongo_store *)s;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    bson_t cmd = BSON_INITIALIZER;
    if (err == PAYMENT_STORE_OK && !BSON_APPEND_INT32(&cmd, "ping", 1))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        bson_t reply; /* always initialized by the call */
        bson_error_t e;
        if (!mongoc_client_command_simple(client, "admin", &cmd, NULL, &reply, &e))
            err = mongo_map_err(&e);
        bson_destroy(&reply);
    }
    bson_destroy(&cmd);
    mongoc_client_pool_push(st->pool, client);
    return err;
}

static bool mongo_build_get(bson_t *filter, bson_t *opts, const char *id)
{
    bson_t proj;
    return BSON_APPEND_UTF8(filter, "_id", id) && BSON_APPEND_BOOL(filter, "deleted", false) &&
           BSON_APPEND_DOCUMENT_BEGIN(opts, "projection", &proj) &&
           BSON_APPEND_INT32(&proj, "doc", 1) && BSON_APPEND_INT32(&proj, "version", 1) &&
           BSON_APPEND_INT32(&proj, "created_ms", 1) && bson_append_document_end(opts, &proj) &&
           BSON_APPEND_INT64(opts, "limit", 1) && BSON_APPEND_BOOL(opts, "singleBatch", true);
}

int mongo_get(payment_store *s, const char *id, struct buf *doc, int64_t *version,
              int64_t *created_ms)
{
    struct mongo_store *st = (struct mongo_store *)s;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
    if (err == PAYMENT_STORE_OK && !mongo_build_get(&filter, &opts, id))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
        const bson_t *row;
        bson_error_t e;
        if (mongoc_cursor_next(cur, &row)) {
            uint32_t len = 0;
            const char *text = mongo_get_utf8(row, "doc", &len);
            if (buf_append(doc, text ? text : "", text ? len : 0) != 0) {
                err = PAYMENT_STORE_EINTERNAL;
            } else {
                *version = mongo_get_int64(row, "version", 0);
                if (created_ms)
                    *created_ms = mongo_get_int64(row, "created_ms", 0);
            }
        } else {
            err = mongoc_cursor_error(cur, &e) ? mongo_map_err(&e) : PAYMENT_STORE_ENOTFOUND;
        }
        mongoc_cursor_destroy(cur);
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&filter);
    bson_destroy(&opts);
    mongoc_client_pool_push(st->pool, client);
    return err;
}

int mongo_op_get(payment_store *s, const char *op_id, struct payment_op_found *out)
{
    struct mongo_store *st = (struct mongo_store *)s;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    bson_t filter = BSON_INITIALIZER, doc, exists;
    if (err == PAYMENT_STORE_OK &&
        !(BSON_APPEND_UTF8(&filter, "_id", op_id) &&
          BSON_APPEND_DOCUMENT_BEGIN(&filter, "status", &exists) &&
          BSON_APPEND_BOOL(&exists, "$exists", true) && bson_append_document_end(&filter, &exists)))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->ops_coll);
        err = mongo_find_one(coll, &filter, NULL, 0, &doc); /* a claim alone is not found */
        if (err == PAYMENT_STORE_OK) {
            mongo_copy_utf8(&doc, "status", out->status, sizeof out->status);
            mongo_copy_utf8(&doc, "error_code", out->error_code, sizeof out->error_code);
            mongo_copy_utf8(&doc, "message", out->message, sizeof out->message);
            mongo_copy_utf8(&doc, "payment_id", out->payment_id, sizeof out->payment_id);
            mongo_copy_utf8(&doc, "organisation_id", out->organisation_id,
                            sizeof out->organisation_id);
            mongo_copy_utf8(&doc, "fingerprint", out->fingerprint, sizeof out->fingerprint);
            out->version = mongo_get_int64(&doc, "version", -1);
            out->partition = (uint32_t)mongo_get_int64(&doc, "partition", 0);
            out->seq = (uint64_t)mongo_get_int64(&doc, "seq", 0);
            bson_destroy(&doc);
        }
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&filter);
    mongoc_client_pool_push(st->pool, client);
    return err;
}

int mongo_partition_get(payment_store *s, uint32_t partition, uint64_t *last_seq,
                        uint64_t *fence)
{
    struct mongo_store *st = (struct mongo_store *)s;
    *last_seq = 0;
    *fence = 0;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    bson_t filter = BSON_INITIALIZER, doc;
    if (err == PAYMENT_STORE_OK && !BSON_APPEND_INT64(&filter, "_id", partition))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->parts_coll);
        err = mongo_find_one(coll, &filter, NULL, 0, &doc);
        if (err == PAYMENT_STORE_OK) {
            *last_seq = (uint64_t)mongo_get_int64(&doc, "last_seq", 0);
            *fence = (uint64_t)mongo_get_int64(&doc, MONGO_F_FENCE, 0);
            bson_destroy(&doc);
        } else if (err == PAYMENT_STORE_ENOTFOUND) {
            err = PAYMENT_STORE_OK; /* nothing applied there yet */
        }
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&filter);
    mongoc_client_pool_push(st->pool, client);
    return err;
}

/* {field: {$in: values}} when the set filter is given. */
static bool mongo_filter_set(bson_t *filter, const char *field, const struct payment_query_set *set)
{
    if (set->count == 0)
        return true;
    bson_t cond, list;
    if (!BSON_APPEND_DOCUMENT_BEGIN(filter, field, &cond))
        return false;
    bool ok = BSON_APPEND_ARRAY_BEGIN(&cond, "$in", &list);
    for (size_t i = 0; ok && i < set->count && i < PAYMENT_QUERY_MAX_VALUES; i++) {
        char idx[16];
        const char *k;
        bson_uint32_to_string((uint32_t)i, &k, idx, sizeof idx);
        ok = bson_append_utf8(&list, k, -1, set->values[i], -1);
    }
    ok = ok && bson_append_array_end(&cond, &list);
    return bson_append_document_end(filter, &cond) && ok;
}

/* {field: {$gte: from, $lte: to}} with the bounds given ("" unset). */
static bool mongo_filter_range(bson_t *filter, const char *field, const char *from, const char *to)
{
    if (!from[0] && !to[0])
        return true;
    bson_t cond;
    if (!BSON_APPEND_DOCUMENT_BEGIN(filter, field, &cond))
        return false;
    bool ok = (!from[0] || BSON_APPEND_UTF8(&cond, "$gte", from)) &&
              (!to[0] || BSON_APPEND_UTF8(&cond, "$lte", to));
    return bson_append_document_end(filter, &cond) && ok;
}

/* An int64 range: from inclusive unless INT64_MIN, to exclusive unless
 * INT64_MAX; op_from and op_to name the comparisons. */
static bool mongo_filter_int_range(bson_t *filter, const char *field, int64_t from,
                                   const char *op_from, int64_t to, const char *op_to)
{
    if (from == INT64_MIN && to == INT64_MAX)
        return true;
    bson_t cond;
    if (!BSON_APPEND_DOCUMENT_BEGIN(filter, field, &cond))
        return false;
    bool ok = (from == INT64_MIN || BSON_APPEND_INT64(&cond, op_from, from)) &&
              (to == INT64_MAX || BSON_APPEND_INT64(&cond, op_to, to));
    return bson_append_document_end(filter, &cond) && ok;
}

/* The filter of q: live payments, its filters, the cursor's position. */
static bool mongo_build_list_filter(bson_t *f, const struct payment_query *q)
{
    return BSON_APPEND_BOOL(f, "deleted", false) &&
           mongo_filter_set(f, MONGO_F_ORG, &q->organisation_id) &&
           mongo_filter_set(f, MONGO_F_CURRENCY, &q->currency) &&
           mongo_filter_set(f, MONGO_F_SCHEME, &q->payment_scheme) &&
           mongo_filter_set(f, MONGO_F_TYPE, &q->payment_type) &&
           mongo_filter_set(f, MONGO_F_REF, &q->reference) &&
           mongo_filter_set(f, MONGO_F_E2E, &q->end_to_end_reference) &&
           mongo_filter_range(f, MONGO_F_DATE, q->processing_date_from, q->processing_date_to) &&
           mongo_filter_range(f, MONGO_F_AMOUNT, q->amount_from, q->amount_to) &&
           mongo_filter_int_range(f, "created_ms", q->created_from_ms, "$gte", q->created_to_ms,
                                  "$lt") &&
           mongo_filter_int_range(f, "seq",
                                  q->mode == PAYMENT_PAGE_CURSOR ? q->after_seq : INT64_MIN, "$gt",
                                  INT64_MAX, "$lt");
}

/* Sequence order, one row more than the page (to learn whether another
 * follows), skipping the pages before an offset page. */
static bool mongo_build_list_opts(bson_t *o, const struct payment_query *q)
{
    bson_t sort, proj;
    int64_t limit = (int64_t)q->page_size + 1;
    bool ok = BSON_APPEND_DOCUMENT_BEGIN(o, "sort", &sort) && BSON_APPEND_INT32(&sort, "seq", 1) &&
              bson_append_document_end(o, &sort) &&
              BSON_APPEND_DOCUMENT_BEGIN(o, "projection", &proj) &&
              BSON_APPEND_INT32(&proj, "doc", 1) && BSON_APPEND_INT32(&proj, "seq", 1) &&
              BSON_APPEND_INT32(&proj, "_id", 0) && bson_append_document_end(o, &proj) &&
              BSON_APPEND_INT64(o, "limit", limit) && BSON_APPEND_INT64(o, "batchSize", limit);
    if (ok && q->mode == PAYMENT_PAGE_OFFSET && q->page_number > 0)
        ok = BSON_APPEND_INT64(o, "skip", (int64_t)q->page_number * q->page_size);
    return ok;
}

/* Steps through the page, calling each per row.  Returns 0, each's non-zero
 * value, or a negative store error. */
static int mongo_list_rows(mongoc_cursor_t *cur, uint32_t page_size, payment_store_row_fn each,
                           void *arg, int *more)
{
    uint32_t n = 0;
    const bson_t *row;
    while (mongoc_cursor_next(cur, &row)) {
        if (n == page_size) {
            *more = 1;
            return PAYMENT_STORE_OK;
        }
        uint32_t len = 0;
        const char *text = mongo_get_utf8(row, "doc", &len);
        int stop = each(arg, text ? text : "", text ? len : 0, mongo_get_int64(row, "seq", 0));
        if (stop)
            return stop;
        n++;
    }
    bson_error_t e;
    return mongoc_cursor_error(cur, &e) ? mongo_map_err(&e) : PAYMENT_STORE_OK;
}

int mongo_list(payment_store *s, const struct payment_query *q, payment_store_row_fn each,
               void *arg, int *more)
{
    struct mongo_store *st = (struct mongo_store *)s;
    *more = 0;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
    if (err == PAYMENT_STORE_OK &&
        (!mongo_build_list_filter(&filter, q) || !mongo_build_list_opts(&opts, q)))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
        err = mongo_list_rows(cur, q->page_size, each, arg, more);
        mongoc_cursor_destroy(cur);
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&filter);
    bson_destroy(&opts);
    mongoc_client_pool_push(st->pool, client);
    return err;
}
