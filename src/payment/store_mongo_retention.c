/* store_mongo_retention: events leaving the feed and the histories
 * (payment_store_events_purge), on the calling thread, in small steps.
 *
 * The feed: its floor (in the feed's document, store_mongo_events.c) moves
 * up to the position before the first event, above it and at or below the
 * watermark, that occurred at or after the cut-off (feed_before_ms, or
 * history_before_ms when later: the histories' purge takes events out of
 * the feed too); readers skip what is at or below the floor, and a cursor
 * below it is EEXPIRED.  Events before the feed's cut-off stay in the
 * histories.
 *
 * The histories: events that occurred before history_before_ms, at or below
 * the watermark, are purged MONGO_PURGE_BATCH at a time, each batch one
 * update of that many documents, so that writes never wait behind a large
 * one.  A purged event becomes a stub, {_id: position} alone, never a
 * missing document: a position is never empty again once filled, which is
 * what keeps a sequencer that read the highest position long ago from
 * putting an event below a reader's cursor (see the feed's argument).  A
 * stub is about 30 bytes, the price of that guarantee.  A stub frees its
 * (payment_id, version) key: an event purged in the moment between its
 * insert and the pull of its outbox entry (one that occurred before the
 * histories' retention, so only just stamped if a worker applied an old
 * operation) would be fed again by the next round. */

#include <stdint.h>
#include <stdlib.h>

#include "payment/store_mongo.h"

#define MONGO_PURGE_BATCH 500   /* events purged per update */
#define MONGO_PURGE_BATCHES 20  /* batches per call; the rest is the next call's */

/* The floor that leaves out every event before feed_before_ms up to the
 * first one at or after it: that one's position - 1, or wm when there is
 * none.  Returns 0 or a store error. */
static int mongo_purge_floor(mongoc_collection_t *events, const struct mongo_feed *feed,
                             int64_t feed_before_ms, int64_t *floor)
{
    bson_t filter = BSON_INITIALIZER, pos, at;
    bool ok = BSON_APPEND_DOCUMENT_BEGIN(&filter, "_id", &pos) &&
              BSON_APPEND_INT64(&pos, "$gt", feed->floor) &&
              BSON_APPEND_INT64(&pos, "$lte", feed->wm) && bson_append_document_end(&filter, &pos) &&
              BSON_APPEND_DOCUMENT_BEGIN(&filter, "occurred_ms", &at) &&
              BSON_APPEND_INT64(&at, "$gte", feed_before_ms) &&
              bson_append_document_end(&filter, &at);
    int64_t first = 0;
    int err = ok ? mongo_find_edge(events, &filter, "_id", 1, 0, &first) : PAYMENT_STORE_EINTERNAL;
    bson_destroy(&filter);
    if (err == PAYMENT_STORE_ENOTFOUND) {
        *floor = feed->wm;
        return PAYMENT_STORE_OK;
    }
    if (err == PAYMENT_STORE_OK)
        *floor = first - 1;
    return err;
}

/* The positions of up to MONGO_PURGE_BATCH events at or below wm that
 * occurred before before_ms, into pos; *n how many.  Returns 0 or a store
 * error. */
static int mongo_purge_find(mongoc_collection_t *events, int64_t wm, int64_t before_ms,
                            int64_t *pos, size_t *n)
{
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, lte, lt, proj;
    bool ok = BSON_APPEND_DOCUMENT_BEGIN(&filter, "occurred_ms", &lt) &&
              BSON_APPEND_INT64(&lt, "$lt", before_ms) && bson_append_document_end(&filter, &lt) &&
              BSON_APPEND_DOCUMENT_BEGIN(&filter, "_id", &lte) &&
              BSON_APPEND_INT64(&lte, "$lte", wm) && bson_append_document_end(&filter, &lte) &&
              BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj) &&
              BSON_APPEND_INT32(&proj, "_id", 1) && bson_append_document_end(&opts, &proj) &&
              BSON_APPEND_INT64(&opts, "limit", MONGO_PURGE_BATCH) &&
              BSON_APPEND_INT64(&opts, "batchSize", MONGO_PURGE_BATCH);
    int err = PAYMENT_STORE_EINTERNAL;
    *n = 0;
    if (ok) {
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(events, &filter, &opts, NULL);
        const bson_t *doc;
        bson_error_t e;
        while (*n < MONGO_PURGE_BATCH && mongoc_cursor_next(cur, &doc))
            pos[(*n)++] = mongo_get_int64(doc, "_id", 0);
        err = mongoc_cursor_error(cur, &e) ? mongo_map_err(&e) : PAYMENT_STORE_OK;
        mongoc_cursor_destroy(cur);
    }
    bson_destroy(&filter);
    bson_destroy(&opts);
    return err;
}

/* Turns the events at positions pos[0..n) into stubs.  Returns 0 or a
 * store error. */
static int mongo_purge_stub(mongoc_collection_t *events, const int64_t *pos, size_t n)
{
    static const char *const fields[] = {
        "id",         "type",       "organisation_id", "payment_id",   "version", "occurred_ms",
        "api_key_id", "request_id", "idempotency_key", "operation_id", "changes", "doc"};
    bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER, cond, list, unset;
    bool ok = BSON_APPEND_DOCUMENT_BEGIN(&filter, "_id", &cond) &&
              BSON_APPEND_ARRAY_BEGIN(&cond, "$in", &list);
    for (size_t i = 0; ok && i < n; i++) {
        char idx[16];
        const char *k;
        bson_uint32_to_string((uint32_t)i, &k, idx, sizeof idx);
        ok = bson_append_int64(&list, k, -1, pos[i]);
    }
    ok = ok && bson_append_array_end(&cond, &list) && bson_append_document_end(&filter, &cond) &&
         BSON_APPEND_DOCUMENT_BEGIN(&update, "$unset", &unset);
    for (size_t i = 0; ok && i < sizeof fields / sizeof fields[0]; i++)
        ok = BSON_APPEND_UTF8(&unset, fields[i], "");
    ok = ok && bson_append_document_end(&update, &unset);
    int err = PAYMENT_STORE_EINTERNAL;
    if (ok) {
        bson_error_t e;
        err = mongoc_collection_update_many(events, &filter, &update, NULL, NULL, &e)
                  ? PAYMENT_STORE_OK
                  : mongo_map_err(&e);
    }
    bson_destroy(&filter);
    bson_destroy(&update);
    return err;
}

/* The histories' purge: batches until none is left or MONGO_PURGE_BATCHES
 * ran.  Returns 0 or a store error. */
static int mongo_purge_histories(mongoc_collection_t *events, int64_t wm, int64_t before_ms)
{
    int64_t pos[MONGO_PURGE_BATCH];
    size_t n = MONGO_PURGE_BATCH;
    int err = PAYMENT_STORE_OK;
    for (int b = 0; err == PAYMENT_STORE_OK && n == MONGO_PURGE_BATCH && b < MONGO_PURGE_BATCHES;
         b++) {
        err = mongo_purge_find(events, wm, before_ms, pos, &n);
        if (err == PAYMENT_STORE_OK && n > 0)
            err = mongo_purge_stub(events, pos, n);
    }
    return err;
}

static int mongo_purge_run(struct mongo_store *st, int64_t feed_before_ms,
                           int64_t history_before_ms)
{
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    struct mongo_feed feed;
    if (err == PAYMENT_STORE_OK)
        err = mongo_feed_get(st, client, 1, &feed);
    mongoc_collection_t *events = mongo_collection(st, client, st->events_coll);
    int64_t floor = INT64_MIN;
    int64_t cut = history_before_ms > feed_before_ms ? history_before_ms : feed_before_ms;
    if (err == PAYMENT_STORE_OK)
        err = mongo_purge_floor(events, &feed, cut, &floor);
    if (err == PAYMENT_STORE_OK && floor > feed.floor)
        err = mongo_feed_raise(st, client, INT64_MIN, floor);
    if (err == PAYMENT_STORE_OK && history_before_ms != INT64_MIN)
        err = mongo_purge_histories(events, feed.wm, history_before_ms);
    mongoc_collection_destroy(events);
    mongoc_client_pool_push(st->pool, client);
    return err;
}

void mongo_events_purge(payment_store *s, int64_t feed_before_ms, int64_t history_before_ms)
{
    /* Best effort: what a failed purge leaves, the next one takes. */
    (void)mongo_purge_run((struct mongo_store *)s, feed_before_ms, history_before_ms);
}
