/* store_mongo_copy: the exports of a copy on the MongoDB store (store.h,
 * "copying one store into another"; the idempotency records'
 * export is store_mongo_copy_idem.c, the import store_mongo_import.c), on
 * the calling thread with a pooled client.
 *
 * Payments: the payments collection in seq order, tombstones included
 * (deleted: true, their document and columns gone), the fields a copy
 * needs projected (records, outboxes and broker marks left out).  Documents
 * without seq (the holders of imported idempotency records,
 * store_mongo_import.c) are not payments and are never read here.
 *
 * Events: <collection>_events by position, the stubs of purged events left
 * out (a history's purge leaves only their position), events that left the
 * feed but are kept in histories included.  Events still in outboxes are
 * stored events too: each page first runs the sequencer's adoption over
 * every entry made until then and moves the watermark (what a history read
 * does for its payment), so that they are read with their positions. */

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "payment/store_mongo.h"

/* ---- payments ---------------------------------------------------------------- */

/* A page's callback and its argument. */
struct mongo_export_page {
    payment_store_export_fn each;
    void *arg;
};

/* Whether the boolean field key of doc is true. */
static int mongo_get_true(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    return bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_BOOL(&it) &&
           bson_iter_bool(&it);
}

/* Copies the string field key of doc into out (a UUID); 0, or -1 when it is
 * absent or too long. */
static int mongo_copy_id(const bson_t *doc, const char *key, char out[UUID_STR_LEN + 1])
{
    uint32_t len = 0;
    const char *v = mongo_get_utf8(doc, key, &len);
    if (!v || len > UUID_STR_LEN)
        return -1;
    memcpy(out, v, len + 1);
    return 0;
}

/* The live payment's columns and document from doc into p.  0, or -1 when
 * doc has no document or a column that does not fit. */
static int mongo_export_live(const bson_t *doc, struct payment_export *p)
{
    uint32_t len = 0, date_len = 0, amount_len = 0;
    const char *date = mongo_get_utf8(doc, MONGO_F_DATE, &date_len);
    const char *amount = mongo_get_utf8(doc, MONGO_F_AMOUNT, &amount_len);
    p->row.currency = mongo_get_utf8(doc, MONGO_F_CURRENCY, NULL);
    p->row.payment_scheme = mongo_get_utf8(doc, MONGO_F_SCHEME, NULL);
    p->row.payment_type = mongo_get_utf8(doc, MONGO_F_TYPE, NULL);
    p->row.reference = mongo_get_utf8(doc, MONGO_F_REF, NULL);
    p->row.end_to_end_reference = mongo_get_utf8(doc, MONGO_F_E2E, NULL);
    p->row.doc = mongo_get_utf8(doc, "doc", &len);
    p->row.doc_len = len;
    if (!p->row.doc || date_len > CLOCK_DATE_LEN || amount_len > DECIMAL_KEY_LEN)
        return -1;
    if (date)
        memcpy(p->row.processing_date, date, date_len + 1);
    if (amount)
        memcpy(p->row.amount_key, amount, amount_len + 1);
    return 0;
}

/* One payment document to the page's callback. */
static int mongo_export_payment(const bson_t *doc, void *arg)
{
    const struct mongo_export_page *page = arg;
    struct payment_export p;
    memset(&p, 0, sizeof p);
    if (mongo_copy_id(doc, "_id", p.row.id) != 0 ||
        mongo_copy_id(doc, MONGO_F_ORG, p.row.organisation_id) != 0)
        return PAYMENT_STORE_EINTERNAL;
    p.row.version = mongo_get_int64(doc, "version", -1);
    p.row.created_ms = mongo_get_int64(doc, "created_ms", 0);
    p.row.modified_ms = mongo_get_int64(doc, "modified_ms", 0);
    p.seq = mongo_get_int64(doc, "seq", 0);
    p.deleted = mongo_get_true(doc, "deleted");
    if (p.row.version < 0 || p.seq <= 0 || (!p.deleted && mongo_export_live(doc, &p) != 0))
        return PAYMENT_STORE_EINTERNAL;
    return page->each(page->arg, &p);
}

/* {seq: {$gt: after_seq}}; seq order, limit + 1, without the records, the
 * outbox and the broker's marks. */
static bool mongo_build_export_payments(bson_t *filter, bson_t *opts, int64_t after_seq,
                                        uint32_t limit)
{
    bson_t gt, sort, proj;
    return BSON_APPEND_DOCUMENT_BEGIN(filter, "seq", &gt) &&
           BSON_APPEND_INT64(&gt, "$gt", after_seq) && bson_append_document_end(filter, &gt) &&
           BSON_APPEND_DOCUMENT_BEGIN(opts, "sort", &sort) && BSON_APPEND_INT32(&sort, "seq", 1) &&
           bson_append_document_end(opts, &sort) &&
           BSON_APPEND_DOCUMENT_BEGIN(opts, "projection", &proj) &&
           BSON_APPEND_INT32(&proj, MONGO_F_IDEM, 0) && BSON_APPEND_INT32(&proj, MONGO_F_PEND, 0) &&
           BSON_APPEND_INT32(&proj, MONGO_F_OPS, 0) && BSON_APPEND_INT32(&proj, MONGO_F_FENCE, 0) &&
           bson_append_document_end(opts, &proj) &&
           BSON_APPEND_INT64(opts, "limit", (int64_t)limit + 1) &&
           BSON_APPEND_INT64(opts, "batchSize", (int64_t)limit + 1);
}

int mongo_export_payments(payment_store *s, int64_t after_seq, uint32_t limit,
                          payment_store_export_fn each, void *arg, int *more)
{
    assert(limit >= 1 && limit <= PAYMENT_EXPORT_PAGE_MAX);
    struct mongo_store *st = (struct mongo_store *)s;
    *more = 0;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
    if (err == PAYMENT_STORE_OK && !mongo_build_export_payments(&filter, &opts, after_seq, limit))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        struct mongo_export_page page = {each, arg};
        mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
        err = mongo_page_each(mongoc_collection_find_with_opts(coll, &filter, &opts, NULL), limit,
                              mongo_export_payment, &page, more);
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&filter);
    bson_destroy(&opts);
    mongoc_client_pool_push(st->pool, client);
    return err;
}

/* ---- events ---------------------------------------------------------------------- */

/* A page's callback and its argument. */
struct mongo_events_page {
    payment_store_event_fn each;
    void *arg;
};

static enum payment_event_type mongo_copy_type(const char *name)
{
    if (!name)
        return 0;
    if (strcmp(name, "payment.created") == 0)
        return PAYMENT_EVENT_CREATED;
    if (strcmp(name, "payment.updated") == 0)
        return PAYMENT_EVENT_UPDATED;
    if (strcmp(name, "payment.deleted") == 0)
        return PAYMENT_EVENT_DELETED;
    return 0;
}

/* One stored event (store_mongo_events.c's fields) to the page's callback. */
static int mongo_export_event(const bson_t *doc, void *arg)
{
    const struct mongo_events_page *page = arg;
    struct payment_event ev;
    memset(&ev, 0, sizeof ev);
    uint32_t len = 0;
    ev.pos = mongo_get_int64(doc, "_id", 0);
    ev.type = mongo_copy_type(mongo_get_utf8(doc, "type", NULL));
    ev.version = mongo_get_int64(doc, "version", -1);
    ev.occurred_ms = mongo_get_int64(doc, "occurred_ms", 0);
    ev.api_key_id = mongo_get_utf8(doc, "api_key_id", NULL);
    ev.request_id = mongo_get_utf8(doc, "request_id", NULL);
    ev.idempotency_key = mongo_get_utf8(doc, "idempotency_key", NULL);
    ev.operation_id = mongo_get_utf8(doc, "operation_id", NULL);
    ev.changes = mongo_get_utf8(doc, "changes", NULL);
    ev.doc = mongo_get_utf8(doc, "doc", &len);
    ev.doc_len = len;
    if (mongo_copy_id(doc, "id", ev.id) != 0 ||
        mongo_copy_id(doc, MONGO_F_ORG, ev.organisation_id) != 0 ||
        mongo_copy_id(doc, "payment_id", ev.payment_id) != 0 || ev.pos <= 0 || !ev.type ||
        ev.version < 0 || !ev.doc)
        return PAYMENT_STORE_EINTERNAL;
    return page->each(page->arg, &ev);
}

/* Stamps every outbox entry made until now and moves the watermark over
 * what is filled, so that the feed holds every stored event.  0 or a store
 * error. */
static int mongo_export_stamp(struct mongo_store *st, mongoc_client_t *client)
{
    int raised = 0;
    struct mongo_feed feed;
    int err = mongo_round_adopt(st, client, mongo_wall_us(), &raised);
    if (err == PAYMENT_STORE_OK)
        err = mongo_feed_get(st, client, 1, &feed);
    if (err == PAYMENT_STORE_OK)
        err = mongo_round_raise(st, client, &feed.wm, &raised);
    if (raised)
        mongo_seq_notify(st);
    return err;
}

/* {_id: {$gt: after_pos}, payment_id: {$exists: true}} (no stubs);
 * position order, limit + 1. */
static bool mongo_build_export_events(bson_t *filter, bson_t *opts, int64_t after_pos,
                                      uint32_t limit)
{
    bson_t gt, ex, sort;
    return BSON_APPEND_DOCUMENT_BEGIN(filter, "_id", &gt) &&
           BSON_APPEND_INT64(&gt, "$gt", after_pos) && bson_append_document_end(filter, &gt) &&
           BSON_APPEND_DOCUMENT_BEGIN(filter, "payment_id", &ex) &&
           BSON_APPEND_BOOL(&ex, "$exists", true) && bson_append_document_end(filter, &ex) &&
           BSON_APPEND_DOCUMENT_BEGIN(opts, "sort", &sort) && BSON_APPEND_INT32(&sort, "_id", 1) &&
           bson_append_document_end(opts, &sort) &&
           BSON_APPEND_INT64(opts, "limit", (int64_t)limit + 1) &&
           BSON_APPEND_INT64(opts, "batchSize", (int64_t)limit + 1);
}

int mongo_export_events(payment_store *s, int64_t after_pos, uint32_t limit,
                        payment_store_event_fn each, void *arg, int *more)
{
    assert(limit >= 1 && limit <= PAYMENT_EXPORT_PAGE_MAX);
    struct mongo_store *st = (struct mongo_store *)s;
    *more = 0;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    if (err == PAYMENT_STORE_OK)
        err = mongo_export_stamp(st, client);
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
    if (err == PAYMENT_STORE_OK && !mongo_build_export_events(&filter, &opts, after_pos, limit))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        struct mongo_events_page page = {each, arg};
        mongoc_collection_t *coll = mongo_collection(st, client, st->events_coll);
        err = mongo_page_each(mongoc_collection_find_with_opts(coll, &filter, &opts, NULL), limit,
                              mongo_export_event, &page, more);
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&filter);
    bson_destroy(&opts);
    mongoc_client_pool_push(st->pool, client);
    return err;
}
