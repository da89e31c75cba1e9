/* store_mongo_deliveries: the MongoDB store's webhook deliveries (store.h,
 * "webhooks"): their documents, making them with the dispatcher's
 * position, lists, the pending gauge and purges.  Claims, records and
 * retries are store_mongo_leases.c's.
 *
 * A delivery is one document of <collection>_deliveries: _id (its id),
 * webhook_id, event_id, event_pos, status (payment_delivery_status),
 * attempts (how many recorded), log (the attempts' JSON objects as strings,
 * in order), created_ms, next_ms (0 unless pending), body (binary: the
 * bytes to send), lease_until (0: free) and lease_owner (absent: free).  A
 * unique index on (webhook_id, event_id) allows one delivery per endpoint
 * and event, whoever makes it and however often.
 *
 * The dispatcher's position is {_id: <collection>_dispatch, pos} in
 * counters.  Without transactions, deliveries_add takes three steps:
 *   1. read the position: not expected_pos, ECONFLICT, nothing made (the
 *      common race, another process dispatched these events already);
 *   2. make the deliveries, one unordered bulk write: inserts, whose
 *      duplicate key on (webhook_id, event_id) means the delivery exists
 *      and is left alone; with reset, upserts on (webhook_id, event_id)
 *      with $setOnInsert of the new delivery and $set of pending and due,
 *      a duplicate key from two upserts racing being the other's delivery;
 *   3. move the position from expected_pos to new_pos, one conditional
 *      update: ECONFLICT when another process moved it between 1 and 3.
 * A failure or a conflict at 3 leaves the deliveries of 2 made: the process
 * that moves the position dispatches the same events, and its step 2 makes
 * nothing new (store.h allows this).
 *
 * Threads: every call runs on its caller's thread with a pooled client,
 * within the store's timeouts (a server that does not answer gives
 * EUNAVAILABLE). */

#include <assert.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "payment/store_mongo.h"

#define MONGO_PURGE_BATCH 256  /* deliveries a purge deletes per step */
#define MONGO_PURGE_STEPS 16   /* steps of one purge at most */

/* ---- documents ------------------------------------------------------------------ */

/* {field: {$in: [the statuses of the set statuses]}}. */
static bool mongo_append_status_in(bson_t *b, const char *field, unsigned statuses)
{
    static const enum payment_delivery_status all[] = {
        PAYMENT_DELIVERY_PENDING, PAYMENT_DELIVERY_SUCCEEDED, PAYMENT_DELIVERY_FAILED};
    bson_t cond, list;
    if (!BSON_APPEND_DOCUMENT_BEGIN(b, field, &cond))
        return false;
    bool ok = BSON_APPEND_ARRAY_BEGIN(&cond, "$in", &list);
    uint32_t n = 0;
    for (size_t i = 0; ok && i < sizeof all / sizeof all[0]; i++) {
        if (!(statuses & (unsigned)all[i]))
            continue;
        char idx[16];
        const char *k;
        bson_uint32_to_string(n++, &k, idx, sizeof idx);
        ok = BSON_APPEND_INT32(&list, k, (int32_t)all[i]);
    }
    ok = ok && bson_append_array_end(&cond, &list);
    return bson_append_document_end(b, &cond) && ok;
}

/* The fields of a new delivery d but its key (webhook_id, event_id), its
 * status and its due time. */
static bool mongo_append_delivery_rest(bson_t *b, const struct payment_delivery_new *d,
                                       int64_t now_ms)
{
    bson_t log;
    return d->body_len <= INT_MAX && BSON_APPEND_UTF8(b, "_id", d->id) &&
           BSON_APPEND_INT64(b, "event_pos", d->event_pos) && BSON_APPEND_INT32(b, "attempts", 0) &&
           BSON_APPEND_ARRAY_BEGIN(b, "log", &log) && bson_append_array_end(b, &log) &&
           BSON_APPEND_INT64(b, "created_ms", now_ms) &&
           bson_append_binary(b, "body", 4, BSON_SUBTYPE_BINARY, (const uint8_t *)d->body,
                              (uint32_t)d->body_len) &&
           BSON_APPEND_INT64(b, "lease_until", 0);
}

/* Pending, due at now_ms. */
static bool mongo_append_due(bson_t *b, int64_t now_ms)
{
    return BSON_APPEND_INT32(b, "status", PAYMENT_DELIVERY_PENDING) &&
           BSON_APPEND_INT64(b, "next_ms", now_ms);
}

/* The document of a new delivery d. */
static bool mongo_build_delivery(bson_t *b, const struct payment_delivery_new *d, int64_t now_ms)
{
    return BSON_APPEND_UTF8(b, "webhook_id", d->webhook_id) &&
           BSON_APPEND_UTF8(b, "event_id", d->event_id) && mongo_append_delivery_rest(b, d, now_ms) &&
           mongo_append_due(b, now_ms);
}

/* The upsert of a replay of delivery d: filter {webhook_id, event_id};
 * update $setOnInsert of the rest, and $set of status pending, due at
 * now_ms, on the existing delivery too. */
static bool mongo_build_delivery_reset(bson_t *filter, bson_t *update,
                                       const struct payment_delivery_new *d, int64_t now_ms)
{
    bson_t ins, set;
    if (!BSON_APPEND_UTF8(filter, "webhook_id", d->webhook_id) ||
        !BSON_APPEND_UTF8(filter, "event_id", d->event_id) ||
        !BSON_APPEND_DOCUMENT_BEGIN(update, "$setOnInsert", &ins))
        return false;
    bool ok = mongo_append_delivery_rest(&ins, d, now_ms);
    if (!bson_append_document_end(update, &ins) || !ok ||
        !BSON_APPEND_DOCUMENT_BEGIN(update, "$set", &set))
        return false;
    ok = mongo_append_due(&set, now_ms);
    return bson_append_document_end(update, &set) && ok;
}

/* Fills d from a stored delivery; its pointers point into doc, but
 * attempts_json, built into json (which the caller frees).  Returns 0, or
 * EINTERNAL for a document that is no delivery. */
static int mongo_delivery_read(const bson_t *doc, struct payment_delivery *d, struct buf *json)
{
    memset(d, 0, sizeof *d);
    const char *id = mongo_get_utf8(doc, "_id", NULL);
    const char *hook = mongo_get_utf8(doc, "webhook_id", NULL);
    const char *event = mongo_get_utf8(doc, "event_id", NULL);
    bson_iter_t it, log;
    if (!id || !hook || !event || strlen(id) > UUID_STR_LEN || strlen(hook) > UUID_STR_LEN ||
        strlen(event) > UUID_STR_LEN || !bson_iter_init_find(&it, doc, "body") ||
        !BSON_ITER_HOLDS_BINARY(&it))
        return PAYMENT_STORE_EINTERNAL;
    const uint8_t *body = NULL;
    uint32_t body_len = 0;
    bson_subtype_t sub;
    bson_iter_binary(&it, &sub, &body_len, &body);
    d->body = body_len ? (const char *)body : "";
    d->body_len = body_len;
    snprintf(d->id, sizeof d->id, "%s", id);
    snprintf(d->webhook_id, sizeof d->webhook_id, "%s", hook);
    snprintf(d->event_id, sizeof d->event_id, "%s", event);
    d->event_pos = mongo_get_int64(doc, "event_pos", 0);
    d->status = (enum payment_delivery_status)mongo_get_int64(doc, "status", 0);
    d->attempts = (int)mongo_get_int64(doc, "attempts", 0);
    d->created_ms = mongo_get_int64(doc, "created_ms", 0);
    d->next_ms = d->status == PAYMENT_DELIVERY_PENDING ? mongo_get_int64(doc, "next_ms", 0) : 0;
    buf_reset(json);
    buf_puts(json, "[");
    if (bson_iter_init_find(&it, doc, "log") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &log)) {
        int first = 1;
        while (bson_iter_next(&log)) {
            uint32_t len = 0;
            const char *a = BSON_ITER_HOLDS_UTF8(&log) ? bson_iter_utf8(&log, &len) : NULL;
            if (!a)
                return PAYMENT_STORE_EINTERNAL;
            if (!first)
                buf_puts(json, ",");
            buf_append(json, a, len);
            first = 0;
        }
    }
    buf_puts(json, "]");
    if (buf_failed(json))
        return PAYMENT_STORE_EINTERNAL;
    d->attempts_json = json->data;
    return PAYMENT_STORE_OK;
}

/* Reads doc into a delivery and passes it to each.  Returns 0, each's
 * non-zero value, or a store error. */
int mongo_delivery_give(const bson_t *doc, struct buf *json, payment_store_delivery_fn each,
                        void *arg)
{
    struct payment_delivery d;
    int err = mongo_delivery_read(doc, &d, json);
    return err != PAYMENT_STORE_OK ? err : each(arg, &d);
}

/* A delivery callback, its argument and the buffer its attempts are read
 * into, for mongo_page_each. */
struct mongo_delivery_each {
    struct buf json; /* owned: reused from document to document */
    payment_store_delivery_fn each;
    void *arg;
};

/* mongo_delivery_give for a page's document, with arg a
 * mongo_delivery_each. */
static int mongo_delivery_page_give(const bson_t *doc, void *arg)
{
    struct mongo_delivery_each *to = arg;
    return mongo_delivery_give(doc, &to->json, to->each, to->arg);
}

/* ---- the dispatch position ------------------------------------------------------ */

/* Reads the position (read concern local when local is set: a decision's
 * read), 0 before the first dispatch. */
static int mongo_dispatch_read(struct mongo_store *st, mongoc_client_t *client, int local,
                               int64_t *pos)
{
    mongoc_collection_t *counters = mongo_collection(st, client, MONGO_COUNTERS);
    bson_t filter = BSON_INITIALIZER, doc;
    int err = BSON_APPEND_UTF8(&filter, "_id", st->dispatch_id)
                  ? mongo_find_one(counters, &filter, NULL, local, &doc)
                  : PAYMENT_STORE_EINTERNAL;
    *pos = 0;
    if (err == PAYMENT_STORE_OK) {
        *pos = mongo_get_int64(&doc, "pos", 0);
        bson_destroy(&doc);
    } else if (err == PAYMENT_STORE_ENOTFOUND) {
        err = PAYMENT_STORE_OK;
    }
    bson_destroy(&filter);
    mongoc_collection_destroy(counters);
    return err;
}

int mongo_dispatch_pos(payment_store *s, int64_t *pos)
{
    struct mongo_store *st = (struct mongo_store *)s;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    if (err == PAYMENT_STORE_OK)
        err = mongo_dispatch_read(st, client, 0, pos);
    mongoc_client_pool_push(st->pool, client);
    return err;
}

/* Step 3: moves the position from expected_pos to new_pos.  The document
 * does not exist before the first dispatch, whose expected_pos is 0: it is
 * then upserted, and an upsert that meets a document at another position
 * collides on _id.  Returns 0, ECONFLICT, or a store error. */
static int mongo_dispatch_move(struct mongo_store *st, mongoc_client_t *client,
                               int64_t expected_pos, int64_t new_pos)
{
    mongoc_collection_t *counters = mongo_collection(st, client, MONGO_COUNTERS);
    bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER, set;
    int matched = 0;
    int err = BSON_APPEND_UTF8(&filter, "_id", st->dispatch_id) &&
                      BSON_APPEND_INT64(&filter, "pos", expected_pos) &&
                      BSON_APPEND_DOCUMENT_BEGIN(&update, "$set", &set) &&
                      BSON_APPEND_INT64(&set, "pos", new_pos) &&
                      bson_append_document_end(&update, &set)
                  ? mongo_update_matched(counters, &filter, &update, expected_pos == 0, &matched)
                  : PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_EDUPLICATE || (err == PAYMENT_STORE_OK && !matched))
        err = PAYMENT_STORE_ECONFLICT;
    bson_destroy(&filter);
    bson_destroy(&update);
    mongoc_collection_destroy(counters);
    return err;
}

/* ---- making deliveries ---------------------------------------------------------- */

/* Whether a failed bulk write's reply holds write errors that are all
 * duplicate keys (an upsert that lost a race to another's insert), and
 * nothing else went wrong. */
static int mongo_bulk_only_duplicates(const bson_t *reply)
{
    bson_iter_t it, list, err;
    if (bson_iter_init_find(&it, reply, "writeConcernErrors") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &list) && bson_iter_next(&list))
        return 0;
    if (!bson_iter_init_find(&it, reply, "writeErrors") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &list))
        return 0;
    int n = 0;
    while (bson_iter_next(&list)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&list) || !bson_iter_recurse(&list, &err) ||
            !bson_iter_find(&err, "code") || bson_iter_as_int64(&err) != MONGOC_ERROR_DUPLICATE_KEY)
            return 0;
        n++;
    }
    return n > 0;
}

/* Appends delivery d to bulk: an insert (a duplicate key is the existing
 * delivery), or with reset an upsert that makes an existing one due. */
static bool mongo_bulk_delivery(mongoc_bulk_operation_t *bulk, const bson_t *upsert,
                                const struct payment_delivery_new *d, int reset, int64_t now_ms)
{
    bson_t a = BSON_INITIALIZER, b = BSON_INITIALIZER;
    bson_error_t e;
    bool ok = reset ? mongo_build_delivery_reset(&a, &b, d, now_ms) &&
                          mongoc_bulk_operation_update_one_with_opts(bulk, &a, &b, upsert, &e)
                    : mongo_build_delivery(&a, d, now_ms) &&
                          mongoc_bulk_operation_insert_with_opts(bulk, &a, NULL, &e);
    bson_destroy(&a);
    bson_destroy(&b);
    return ok;
}

/* Step 2: makes deliveries d[0..n) in one unordered bulk write (see the
 * file's comment).  Inserts, not upserts, unless reset: the unique index
 * finds an existing delivery without a query per delivery.  Returns 0 or a
 * store error. */
static int mongo_deliveries_make(struct mongo_store *st, mongoc_client_t *client,
                                 const struct payment_delivery_new *d, size_t n, int reset,
                                 int64_t now_ms)
{
    mongoc_collection_t *coll = mongo_collection(st, client, st->deliveries_coll);
    bson_t opts = BSON_INITIALIZER, upsert = BSON_INITIALIZER;
    bool ok = BSON_APPEND_BOOL(&opts, "ordered", false) &&
              BSON_APPEND_BOOL(&upsert, "upsert", true);
    mongoc_bulk_operation_t *bulk =
        ok ? mongoc_collection_create_bulk_operation_with_opts(coll, &opts) : NULL;
    for (size_t i = 0; bulk && ok && i < n; i++)
        ok = mongo_bulk_delivery(bulk, &upsert, &d[i], reset, now_ms);
    int err = PAYMENT_STORE_EINTERNAL;
    if (bulk && ok) {
        bson_t reply; /* always initialized by the call */
        bson_error_t e;
        if (mongoc_bulk_operation_execute(bulk, &reply, &e) || mongo_bulk_only_duplicates(&reply))
            err = PAYMENT_STORE_OK;
        else
            err = mongo_map_err(&e) == PAYMENT_STORE_EUNAVAILABLE ? PAYMENT_STORE_EUNAVAILABLE
                                                                 : PAYMENT_STORE_EINTERNAL;
        bson_destroy(&reply);
    }
    mongoc_bulk_operation_destroy(bulk); /* NULL is a no-op */
    bson_destroy(&opts);
    bson_destroy(&upsert);
    mongoc_collection_destroy(coll);
    return err;
}

int mongo_deliveries_add(payment_store *s, int64_t expected_pos, int64_t new_pos,
                         const struct payment_delivery_new *d, size_t n, int reset,
                         int64_t now_ms)
{
    struct mongo_store *st = (struct mongo_store *)s;
    assert(expected_pos == -1 || new_pos >= expected_pos);
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    int64_t pos = 0;
    if (err == PAYMENT_STORE_OK && expected_pos >= 0) {
        err = mongo_dispatch_read(st, client, 1, &pos);
        if (err == PAYMENT_STORE_OK && pos != expected_pos)
            err = PAYMENT_STORE_ECONFLICT; /* step 1: nothing made */
    }
    if (err == PAYMENT_STORE_OK && n > 0)
        err = mongo_deliveries_make(st, client, d, n, reset, now_ms);
    if (err == PAYMENT_STORE_OK && expected_pos >= 0 && new_pos != expected_pos)
        err = mongo_dispatch_move(st, client, expected_pos, new_pos);
    mongoc_client_pool_push(st->pool, client);
    return err;
}

/* ---- reads and retention -------------------------------------------------------- */

/* The filter of a list: the endpoint's, q's statuses, ids above after_id. */
static bool mongo_build_deliveries_filter(bson_t *f, const struct payment_delivery_query *q)
{
    bson_t gt;
    return BSON_APPEND_UTF8(f, "webhook_id", q->webhook_id) &&
           (!q->statuses || mongo_append_status_in(f, "status", q->statuses)) &&
           (!q->after_id ||
            (BSON_APPEND_DOCUMENT_BEGIN(f, "_id", &gt) && BSON_APPEND_UTF8(&gt, "$gt", q->after_id) &&
             bson_append_document_end(f, &gt)));
}

int mongo_deliveries_list(payment_store *s, const struct payment_delivery_query *q,
                          payment_store_delivery_fn each, void *arg, int *more)
{
    struct mongo_store *st = (struct mongo_store *)s;
    *more = 0;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort;
    int64_t limit = (int64_t)q->limit + 1; /* one more: whether another follows */
    if (err == PAYMENT_STORE_OK &&
        !(mongo_build_deliveries_filter(&filter, q) &&
          BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort) &&
          BSON_APPEND_INT32(&sort, "_id", 1) && bson_append_document_end(&opts, &sort) &&
          BSON_APPEND_INT64(&opts, "limit", limit) && BSON_APPEND_INT64(&opts, "batchSize", limit)))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->deliveries_coll);
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
        struct mongo_delivery_each to = {BUF_INIT, each, arg};
        err = mongo_page_each(cur, q->limit, mongo_delivery_page_give, &to, more);
        buf_free(&to.json);
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&filter);
    bson_destroy(&opts);
    mongoc_client_pool_push(st->pool, client);
    return err;
}

/* How many deliveries are pending: MongoDB's count command. */
static int mongo_pending_count(mongoc_collection_t *coll, const char *name, int64_t *count)
{
    bson_t cmd = BSON_INITIALIZER, query, reply;
    bson_error_t e;
    int err = PAYMENT_STORE_EINTERNAL;
    if (BSON_APPEND_UTF8(&cmd, "count", name) && BSON_APPEND_DOCUMENT_BEGIN(&cmd, "query", &query) &&
        BSON_APPEND_INT32(&query, "status", PAYMENT_DELIVERY_PENDING) &&
        bson_append_document_end(&cmd, &query)) {
        if (mongoc_collection_read_command_with_opts(coll, &cmd, NULL, NULL, &reply, &e)) {
            *count = mongo_get_int64(&reply, "n", 0);
            err = PAYMENT_STORE_OK;
        } else {
            err = mongo_map_err(&e);
        }
        bson_destroy(&reply); /* always initialized by the call */
    }
    bson_destroy(&cmd);
    return err;
}

/* The creation time of the oldest pending delivery, 0 when none. */
static int mongo_pending_oldest(mongoc_collection_t *coll, int64_t *oldest_ms)
{
    bson_t filter = BSON_INITIALIZER;
    *oldest_ms = 0; /* none pending, unless one is found */
    int err = BSON_APPEND_INT32(&filter, "status", PAYMENT_DELIVERY_PENDING)
                  ? mongo_find_edge(coll, &filter, "created_ms", 1, 0, oldest_ms)
                  : PAYMENT_STORE_EINTERNAL;
    bson_destroy(&filter);
    return err == PAYMENT_STORE_ENOTFOUND ? PAYMENT_STORE_OK : err;
}

int mongo_deliveries_pending(payment_store *s, int64_t *count, int64_t *oldest_ms)
{
    struct mongo_store *st = (struct mongo_store *)s;
    *count = 0;
    *oldest_ms = 0;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->deliveries_coll);
        err = mongo_pending_count(coll, st->deliveries_coll, count);
        if (err == PAYMENT_STORE_OK)
            err = mongo_pending_oldest(coll, oldest_ms);
        mongoc_collection_destroy(coll);
    }
    mongoc_client_pool_push(st->pool, client);
    return err;
}

/* {status: {$in: [succeeded, failed]}, created_ms: {$lt: before_ms}}. */
static bool mongo_build_finished(bson_t *f, int64_t before_ms)
{
    bson_t lt;
    return mongo_append_status_in(f, "status",
                                  PAYMENT_DELIVERY_SUCCEEDED | PAYMENT_DELIVERY_FAILED) &&
           BSON_APPEND_DOCUMENT_BEGIN(f, "created_ms", &lt) &&
           BSON_APPEND_INT64(&lt, "$lt", before_ms) && bson_append_document_end(f, &lt);
}

/* One step of a purge: up to MONGO_PURGE_BATCH finished deliveries found
 * by id, then deleted by id (and still finished: a retry meanwhile keeps
 * its delivery).  *found is how many were found.  Returns 0 or a store
 * error. */
static int mongo_purge_step(mongoc_collection_t *coll, int64_t before_ms, int *found)
{
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, proj;
    bson_t del = BSON_INITIALIZER, idc, ids;
    *found = 0;
    bool ok = mongo_build_finished(&filter, before_ms) &&
              BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj) &&
              BSON_APPEND_INT32(&proj, "_id", 1) && bson_append_document_end(&opts, &proj) &&
              BSON_APPEND_INT64(&opts, "limit", MONGO_PURGE_BATCH) &&
              BSON_APPEND_INT64(&opts, "batchSize", MONGO_PURGE_BATCH) &&
              BSON_APPEND_DOCUMENT_BEGIN(&del, "_id", &idc) &&
              BSON_APPEND_ARRAY_BEGIN(&idc, "$in", &ids);
    int err = PAYMENT_STORE_EINTERNAL;
    if (ok) {
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
        const bson_t *doc;
        bson_error_t e;
        while (ok && mongoc_cursor_next(cur, &doc)) {
            char idx[16];
            const char *k, *id = mongo_get_utf8(doc, "_id", NULL);
            bson_uint32_to_string((uint32_t)(*found)++, &k, idx, sizeof idx);
            ok = id && BSON_APPEND_UTF8(&ids, k, id);
        }
        err = mongoc_cursor_error(cur, &e) ? mongo_map_err(&e)
              : ok                         ? PAYMENT_STORE_OK
                                           : PAYMENT_STORE_EINTERNAL;
        mongoc_cursor_destroy(cur);
        ok = bson_append_array_end(&idc, &ids) && bson_append_document_end(&del, &idc) &&
             mongo_build_finished(&del, before_ms);
    }
    if (err == PAYMENT_STORE_OK && *found > 0) {
        bson_error_t e;
        err = !ok ? PAYMENT_STORE_EINTERNAL
              : mongoc_collection_delete_many(coll, &del, NULL, NULL, &e) ? PAYMENT_STORE_OK
                                                                          : mongo_map_err(&e);
    }
    bson_destroy(&filter);
    bson_destroy(&opts);
    bson_destroy(&del);
    return err;
}

void mongo_deliveries_purge(payment_store *s, int64_t before_ms)
{
    struct mongo_store *st = (struct mongo_store *)s;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return;
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->deliveries_coll);
        int found = MONGO_PURGE_BATCH;
        for (int step = 0; err == PAYMENT_STORE_OK && found == MONGO_PURGE_BATCH &&
                           step < MONGO_PURGE_STEPS;
             step++)
            err = mongo_purge_step(coll, before_ms, &found);
        mongoc_collection_destroy(coll);
    }
    mongoc_client_pool_push(st->pool, client);
}
