/* store_mongo_leases: the attempts of the MongoDB store's webhook
 * deliveries (store.h, "webhooks"): claims under a lease, records, manual
 * retries, and the endpoint's failing_since_ms a record moves.  The
 * delivery's document is described in store_mongo_deliveries.c.
 *
 * A claim reads the ids of the claimable deliveries (pending, due, and
 * lease_until at or below now), then leases each with one findAndModify on
 * its _id still conditioned on being claimable, setting lease_owner and
 * lease_until; MongoDB applies each to one document atomically, so two
 * claimers never both win one delivery while its lease runs.  A record is
 * one update conditioned on {_id, webhook_id, lease_owner: owner}: after
 * the lease expired and another claimed it, the owner differs and nothing
 * is recorded (ECONFLICT).  It frees the lease (lease_until 0, no owner).
 * The endpoint's failing_since_ms is a second, conditional update of the
 * endpoint's document.
 *
 * Threads: every call runs on its caller's thread with a pooled client,
 * within the store's timeouts (a server that does not answer gives
 * EUNAVAILABLE); a claim's callback runs while the client is held. */

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "payment/store_mongo.h"

/* {status: pending, next_ms: {$lte: now_ms}, lease_until: {$lte: now_ms}}:
 * a delivery that may be claimed at now_ms. */
static bool mongo_append_claimable(bson_t *q, int64_t now_ms)
{
    bson_t due, lease;
    return BSON_APPEND_INT32(q, "status", PAYMENT_DELIVERY_PENDING) &&
           BSON_APPEND_DOCUMENT_BEGIN(q, "next_ms", &due) &&
           BSON_APPEND_INT64(&due, "$lte", now_ms) && bson_append_document_end(q, &due) &&
           BSON_APPEND_DOCUMENT_BEGIN(q, "lease_until", &lease) &&
           BSON_APPEND_INT64(&lease, "$lte", now_ms) && bson_append_document_end(q, &lease);
}

/* The ids of at most max deliveries claimable at now_ms, the earliest due
 * first, into ids (*n of them).  Returns 0 or a store error. */
static int mongo_claim_candidates(mongoc_collection_t *coll, int64_t now_ms, uint32_t max,
                                  char (*ids)[UUID_STR_LEN + 1], uint32_t *n)
{
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort, proj;
    bool ok = mongo_append_claimable(&filter, now_ms) &&
              BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort) &&
              BSON_APPEND_INT32(&sort, "next_ms", 1) && BSON_APPEND_INT32(&sort, "_id", 1) &&
              bson_append_document_end(&opts, &sort) &&
              BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj) &&
              BSON_APPEND_INT32(&proj, "_id", 1) && bson_append_document_end(&opts, &proj) &&
              mongo_append_local(&opts) && BSON_APPEND_INT64(&opts, "limit", max) &&
              BSON_APPEND_INT64(&opts, "batchSize", max);
    int err = PAYMENT_STORE_EINTERNAL;
    *n = 0;
    if (ok) {
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
        const bson_t *doc;
        bson_error_t e;
        while (*n < max && mongoc_cursor_next(cur, &doc)) {
            const char *id = mongo_get_utf8(doc, "_id", NULL);
            if (id && strlen(id) <= UUID_STR_LEN)
                memcpy(ids[(*n)++], id, strlen(id) + 1);
        }
        err = mongoc_cursor_error(cur, &e) ? mongo_map_err(&e) : PAYMENT_STORE_OK;
        mongoc_cursor_destroy(cur);
    }
    bson_destroy(&filter);
    bson_destroy(&opts);
    return err;
}

/* Leases delivery id to owner until now_ms + lease_ms when it is still
 * claimable (one findAndModify: MongoDB decides), into *out (the caller
 * destroys it when *found; not found: another claimer was first).
 * Returns 0 or a store error. */
static int mongo_claim_one(mongoc_collection_t *coll, const char *id, const char *owner,
                           int64_t now_ms, int64_t lease_ms, bson_t *out, int *found)
{
    bson_t query = BSON_INITIALIZER, update = BSON_INITIALIZER, set;
    mongoc_find_and_modify_opts_t *fam = mongoc_find_and_modify_opts_new();
    bool ok = fam && BSON_APPEND_UTF8(&query, "_id", id) &&
              mongo_append_claimable(&query, now_ms) &&
              BSON_APPEND_DOCUMENT_BEGIN(&update, "$set", &set) &&
              BSON_APPEND_UTF8(&set, "lease_owner", owner) &&
              BSON_APPEND_INT64(&set, "lease_until", now_ms + lease_ms) &&
              bson_append_document_end(&update, &set) &&
              mongoc_find_and_modify_opts_set_update(fam, &update) &&
              mongoc_find_and_modify_opts_set_flags(fam, MONGOC_FIND_AND_MODIFY_RETURN_NEW);
    *found = 0;
    int err = ok ? mongo_find_modify(coll, &query, fam, out, found) : PAYMENT_STORE_EINTERNAL;
    mongoc_find_and_modify_opts_destroy(fam); /* NULL is a no-op */
    bson_destroy(&query);
    bson_destroy(&update);
    return err;
}

/* One query finds the candidates, the earliest due first; each is then
 * leased by a findAndModify on its _id that is still conditioned on being
 * claimable, so a candidate another claimer took meanwhile is skipped (the
 * claim then gives fewer than it could).  Each is passed to each as soon
 * as it is leased, so a callback that stops the claim leaves nothing
 * leased that it has not seen; an error after some were passed is
 * returned, and those stay leased to owner. */
int mongo_deliveries_claim(payment_store *s, const char *owner, int64_t now_ms, int64_t lease_ms,
                           uint32_t max, payment_store_delivery_fn each, void *arg)
{
    struct mongo_store *st = (struct mongo_store *)s;
    char(*ids)[UUID_STR_LEN + 1] = malloc(max * sizeof *ids);
    if (!ids)
        return PAYMENT_STORE_EINTERNAL;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client) {
        free(ids);
        return err;
    }
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->deliveries_coll);
        struct buf json = BUF_INIT;
        uint32_t n = 0;
        err = mongo_claim_candidates(coll, now_ms, max, ids, &n);
        for (uint32_t i = 0; err == PAYMENT_STORE_OK && i < n; i++) {
            bson_t doc;
            int found = 0;
            err = mongo_claim_one(coll, ids[i], owner, now_ms, lease_ms, &doc, &found);
            if (err == PAYMENT_STORE_OK && found) {
                err = mongo_delivery_give(&doc, &json, each, arg);
                bson_destroy(&doc);
            }
        }
        buf_free(&json);
        mongoc_collection_destroy(coll);
    }
    mongoc_client_pool_push(st->pool, client);
    free(ids);
    return err;
}

/* The record of attempt a: filter {_id, webhook_id, lease_owner}; the
 * attempt appended and counted, the status set, the lease freed. */
static bool mongo_build_record(bson_t *filter, bson_t *update,
                               const struct payment_delivery_attempt *a)
{
    size_t len = strlen(a->attempt_json);
    bson_t push, inc, set, unset;
    return len <= INT_MAX && BSON_APPEND_UTF8(filter, "_id", a->delivery_id) &&
           BSON_APPEND_UTF8(filter, "webhook_id", a->webhook_id) &&
           BSON_APPEND_UTF8(filter, "lease_owner", a->owner) &&
           BSON_APPEND_DOCUMENT_BEGIN(update, "$push", &push) &&
           bson_append_utf8(&push, "log", 3, a->attempt_json, (int)len) &&
           bson_append_document_end(update, &push) &&
           BSON_APPEND_DOCUMENT_BEGIN(update, "$inc", &inc) &&
           BSON_APPEND_INT32(&inc, "attempts", 1) && bson_append_document_end(update, &inc) &&
           BSON_APPEND_DOCUMENT_BEGIN(update, "$set", &set) &&
           BSON_APPEND_INT32(&set, "status", (int32_t)a->status) &&
           BSON_APPEND_INT64(&set, "next_ms",
                             a->status == PAYMENT_DELIVERY_PENDING ? a->next_ms : 0) &&
           BSON_APPEND_INT64(&set, "lease_until", 0) && bson_append_document_end(update, &set) &&
           BSON_APPEND_DOCUMENT_BEGIN(update, "$unset", &unset) &&
           BSON_APPEND_UTF8(&unset, "lease_owner", "") && bson_append_document_end(update, &unset);
}

/* Whether delivery id of endpoint webhook_id exists: ECONFLICT when it
 * does (a record that missed: the lease is another's), ENOTFOUND, or a
 * store error. */
static int mongo_record_missed(mongoc_collection_t *coll, const char *webhook_id, const char *id)
{
    bson_t filter = BSON_INITIALIZER, proj = BSON_INITIALIZER, doc;
    int err = BSON_APPEND_UTF8(&filter, "_id", id) &&
                      BSON_APPEND_UTF8(&filter, "webhook_id", webhook_id) &&
                      BSON_APPEND_INT32(&proj, "_id", 1)
                  ? mongo_find_one(coll, &filter, &proj, 1, &doc)
                  : PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        bson_destroy(&doc);
        err = PAYMENT_STORE_ECONFLICT;
    }
    bson_destroy(&filter);
    bson_destroy(&proj);
    return err;
}

/* The endpoint's part of a recorded attempt: failing_since_ms set to at_ms
 * on a failed attempt when it is 0, or to 0 on a success (each one
 * conditional update, so concurrent attempts keep the earliest failure),
 * then read into *failing_since_ms (0 when the endpoint is gone).  Returns
 * 0 or a store error. */
static int mongo_webhook_failing(mongoc_collection_t *hooks, const char *id, int succeeded,
                                 int64_t at_ms, int64_t *failing_since_ms)
{
    bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER, set, ne;
    bool ok = BSON_APPEND_UTF8(&filter, "_id", id) &&
              (succeeded ? BSON_APPEND_DOCUMENT_BEGIN(&filter, "failing_since_ms", &ne) &&
                               BSON_APPEND_INT64(&ne, "$ne", 0) &&
                               bson_append_document_end(&filter, &ne)
                         : BSON_APPEND_INT64(&filter, "failing_since_ms", 0)) &&
              BSON_APPEND_DOCUMENT_BEGIN(&update, "$set", &set) &&
              BSON_APPEND_INT64(&set, "failing_since_ms", succeeded ? 0 : at_ms) &&
              bson_append_document_end(&update, &set);
    int matched = 0;
    int err = ok ? mongo_update_matched(hooks, &filter, &update, 0, &matched)
                 : PAYMENT_STORE_EINTERNAL;
    bson_destroy(&filter);
    bson_destroy(&update);
    bson_t doc;
    *failing_since_ms = 0;
    if (err == PAYMENT_STORE_OK)
        err = mongo_hook_find(hooks, id, &doc);
    if (err == PAYMENT_STORE_OK) {
        *failing_since_ms = mongo_get_int64(&doc, "failing_since_ms", 0);
        bson_destroy(&doc);
    } else if (err == PAYMENT_STORE_ENOTFOUND) {
        err = PAYMENT_STORE_OK; /* the endpoint is gone: 0 */
    }
    return err;
}

/* The attempt is recorded before the endpoint is told: an error from the
 * second step is returned with the attempt recorded (the lease freed). */
/* Records attempt a with client: its result, *failing_since_ms the
 * endpoint's value after it. */
static int mongo_record_one(struct mongo_store *st, mongoc_client_t *client,
                            const struct payment_delivery_attempt *a, int64_t *failing_since_ms)
{
    bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER;
    int err = mongo_build_record(&filter, &update, a) ? PAYMENT_STORE_OK : PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->deliveries_coll);
        int matched = 0;
        err = mongo_update_matched(coll, &filter, &update, 0, &matched);
        if (err == PAYMENT_STORE_OK && !matched)
            err = mongo_record_missed(coll, a->webhook_id, a->delivery_id);
        mongoc_collection_destroy(coll);
    }
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *hooks = mongo_collection(st, client, st->hooks_coll);
        err = mongo_webhook_failing(hooks, a->webhook_id, a->succeeded, a->at_ms,
                                    failing_since_ms);
        mongoc_collection_destroy(hooks);
    }
    bson_destroy(&filter);
    bson_destroy(&update);
    return err;
}

/* One attempt after the other: without transactions each is its own
 * write.  A refused one (ECONFLICT, ENOTFOUND) is its own result; any other
 * error stops the call, those before it recorded. */
int mongo_deliveries_record(payment_store *s, const struct payment_delivery_attempt *a, size_t n,
                            struct payment_delivery_recorded *out)
{
    struct mongo_store *st = (struct mongo_store *)s;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    for (size_t i = 0; err == PAYMENT_STORE_OK && i < n; i++) {
        out[i].failing_since_ms = 0;
        out[i].err = mongo_record_one(st, client, &a[i], &out[i].failing_since_ms);
        if (out[i].err != PAYMENT_STORE_ECONFLICT && out[i].err != PAYMENT_STORE_ENOTFOUND)
            err = out[i].err;
    }
    mongoc_client_pool_push(st->pool, client);
    return err;
}

int mongo_delivery_retry(payment_store *s, const char *webhook_id, const char *id, int64_t now_ms)
{
    struct mongo_store *st = (struct mongo_store *)s;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER, set;
    if (err == PAYMENT_STORE_OK &&
        !(BSON_APPEND_UTF8(&filter, "_id", id) &&
          BSON_APPEND_UTF8(&filter, "webhook_id", webhook_id) &&
          BSON_APPEND_DOCUMENT_BEGIN(&update, "$set", &set) &&
          BSON_APPEND_INT32(&set, "status", PAYMENT_DELIVERY_PENDING) &&
          BSON_APPEND_INT64(&set, "next_ms", now_ms) && bson_append_document_end(&update, &set)))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->deliveries_coll);
        int matched = 0;
        err = mongo_update_matched(coll, &filter, &update, 0, &matched);
        if (err == PAYMENT_STORE_OK && !matched)
            err = PAYMENT_STORE_ENOTFOUND;
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&filter);
    bson_destroy(&update);
    mongoc_client_pool_push(st->pool, client);
    return err;
}

