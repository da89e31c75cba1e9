/* store_mongo_webhook_slots: the per-organisation limit of webhook
 * endpoints (PAYMENT_WEBHOOKS_PER_ORG_MAX) without a transaction.
 *
 * Each organisation has a document {_id: organisation, ids: [{id, at}]} in
 * <collection>_webhook_orgs, one slot per endpoint.  A create first takes
 * a slot for its id with one conditional $push, which matches only while
 * the array holds fewer than the limit ("ids.<max-1>" absent), so two
 * creates racing for the last slot cannot both have it; then it inserts
 * the endpoint (store_mongo_webhooks.c).  A delete gives the slot back
 * after the endpoint is gone.  So there are never more endpoints than
 * slots, nor more slots than the limit.  A slot may outlive its endpoint
 * (a create whose insert failed, or whose answer was lost; a delete that
 * could not give it back): a create that finds the array full frees the
 * slots whose endpoint does not exist and that are older than
 * MONGO_SLOT_STALE_MS (far beyond any write's timeout, so never a slot
 * whose insert is still in flight), and tries again.
 *
 * Threads: called on the caller's thread with its pooled client. */

#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "payment/store_mongo.h"

#define MONGO_SLOT_STALE_MS (5 * 60 * 1000) /* a slot without endpoint this old is freed */
#define MONGO_SLOT_TRIES 4                   /* slot races lost before giving up */

/* Frees org's slots whose endpoint is gone and that were taken before
 * now_ms - MONGO_SLOT_STALE_MS; *freed: some were.  Returns 0 or a store
 * error. */
static int mongo_slots_repair(struct mongo_store *st, mongoc_client_t *client, const char *org,
                              int64_t now_ms, int *freed)
{
    mongoc_collection_t *hooks = mongo_collection(st, client, st->hooks_coll);
    mongoc_collection_t *orgs = mongo_collection(st, client, st->hook_orgs_coll);
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, proj, update = BSON_INITIALIZER;
    bson_t pull, cond, idc, nin, at;
    int err = PAYMENT_STORE_EINTERNAL;
    *freed = 0;
    bool ok = BSON_APPEND_UTF8(&filter, MONGO_F_ORG, org) &&
              BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj) &&
              BSON_APPEND_INT32(&proj, "_id", 1) && bson_append_document_end(&opts, &proj) &&
              mongo_append_local(&opts) &&
              BSON_APPEND_DOCUMENT_BEGIN(&update, "$pull", &pull) &&
              BSON_APPEND_DOCUMENT_BEGIN(&pull, "ids", &cond) &&
              BSON_APPEND_DOCUMENT_BEGIN(&cond, "id", &idc) &&
              BSON_APPEND_ARRAY_BEGIN(&idc, "$nin", &nin);
    if (ok) {
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(hooks, &filter, &opts, NULL);
        const bson_t *doc;
        uint32_t i = 0;
        while (ok && mongoc_cursor_next(cur, &doc)) {
            char idx[16];
            const char *k, *id = mongo_get_utf8(doc, "_id", NULL);
            bson_uint32_to_string(i++, &k, idx, sizeof idx);
            ok = id && BSON_APPEND_UTF8(&nin, k, id);
        }
        bson_error_t e;
        err = mongoc_cursor_error(cur, &e) ? mongo_map_err(&e)
              : ok                         ? PAYMENT_STORE_OK
                                           : PAYMENT_STORE_EINTERNAL;
        mongoc_cursor_destroy(cur);
        ok = bson_append_array_end(&idc, &nin) && bson_append_document_end(&cond, &idc) &&
             BSON_APPEND_DOCUMENT_BEGIN(&cond, "at", &at) &&
             BSON_APPEND_INT64(&at, "$lt", now_ms - MONGO_SLOT_STALE_MS) &&
             bson_append_document_end(&cond, &at) && bson_append_document_end(&pull, &cond) &&
             bson_append_document_end(&update, &pull);
    }
    if (err == PAYMENT_STORE_OK && !ok)
        err = PAYMENT_STORE_EINTERNAL;
    bson_t of = BSON_INITIALIZER;
    if (err == PAYMENT_STORE_OK && !BSON_APPEND_UTF8(&of, "_id", org))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        bson_t reply; /* always initialized by the call */
        bson_error_t e;
        if (mongoc_collection_update_one(orgs, &of, &update, NULL, &reply, &e))
            *freed = mongo_get_int64(&reply, "modifiedCount", 0) > 0;
        else
            err = mongo_map_err(&e);
        bson_destroy(&reply);
    }
    bson_destroy(&of);
    bson_destroy(&filter);
    bson_destroy(&opts);
    bson_destroy(&update);
    mongoc_collection_destroy(orgs);
    mongoc_collection_destroy(hooks);
    return err;
}

/* The filter and update of taking a slot for id in org: {_id: org,
 * "ids.<max-1>": absent, "ids.id": {$ne: id}}, {$push: {ids: {id, at}}}. */
static bool mongo_build_slot_take(bson_t *filter, bson_t *update, const char *org,
                                  const char *id, int64_t now_ms)
{
    char last[32];
    bson_t ne, push, slot;
    snprintf(last, sizeof last, "ids.%d", PAYMENT_WEBHOOKS_PER_ORG_MAX - 1);
    return BSON_APPEND_UTF8(filter, "_id", org) && mongo_append_absent(filter, last) &&
           BSON_APPEND_DOCUMENT_BEGIN(filter, "ids.id", &ne) && BSON_APPEND_UTF8(&ne, "$ne", id) &&
           bson_append_document_end(filter, &ne) &&
           BSON_APPEND_DOCUMENT_BEGIN(update, "$push", &push) &&
           BSON_APPEND_DOCUMENT_BEGIN(&push, "ids", &slot) && BSON_APPEND_UTF8(&slot, "id", id) &&
           BSON_APPEND_INT64(&slot, "at", now_ms) && bson_append_document_end(&push, &slot) &&
           bson_append_document_end(update, &push);
}

/* After a take that matched nothing: what org's document says.  Returns 0
 * when id holds a slot already (a retried create: the insert decides), 1
 * to try again (a race lost, or stale slots freed), ELIMIT, or a store
 * error. */
static int mongo_slot_missed(struct mongo_store *st, mongoc_client_t *client, const char *org,
                             const char *id, int64_t now_ms)
{
    mongoc_collection_t *orgs = mongo_collection(st, client, st->hook_orgs_coll);
    bson_t filter = BSON_INITIALIZER, doc;
    int err = BSON_APPEND_UTF8(&filter, "_id", org) ? mongo_find_one(orgs, &filter, NULL, 1, &doc)
                                                    : PAYMENT_STORE_EINTERNAL;
    bson_destroy(&filter);
    mongoc_collection_destroy(orgs);
    if (err == PAYMENT_STORE_ENOTFOUND)
        return 1; /* gone meanwhile: take again */
    if (err != PAYMENT_STORE_OK)
        return err;
    bson_iter_t it, list, slot;
    int n = 0, held = 0;
    if (bson_iter_init_find(&it, &doc, "ids") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &list))
        while (bson_iter_next(&list)) {
            n++;
            if (BSON_ITER_HOLDS_DOCUMENT(&list) && bson_iter_recurse(&list, &slot) &&
                bson_iter_find(&slot, "id") && BSON_ITER_HOLDS_UTF8(&slot) &&
                strcmp(bson_iter_utf8(&slot, NULL), id) == 0)
                held = 1;
        }
    bson_destroy(&doc);
    if (held)
        return PAYMENT_STORE_OK;
    if (n < PAYMENT_WEBHOOKS_PER_ORG_MAX)
        return 1;
    int freed = 0;
    err = mongo_slots_repair(st, client, org, now_ms, &freed);
    return err != PAYMENT_STORE_OK ? err : freed ? 1 : PAYMENT_STORE_ELIMIT;
}

/* Takes a slot of org for id.  Returns 0, ELIMIT, or a store error. */
int mongo_slot_take(struct mongo_store *st, mongoc_client_t *client, const char *org,
                    const char *id)
{
    int64_t now_ms = clock_now_ms();
    bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER;
    int err = mongo_build_slot_take(&filter, &update, org, id, now_ms) ? 1
                                                                       : PAYMENT_STORE_EINTERNAL;
    mongoc_collection_t *orgs = mongo_collection(st, client, st->hook_orgs_coll);
    for (int tries = 0; err == 1 && tries < MONGO_SLOT_TRIES; tries++) {
        int matched = 0;
        /* Upserted when org has no document yet; when it has one that is
         * full or holds id, the upsert collides on _id: EDUPLICATE. */
        err = mongo_update_matched(orgs, &filter, &update, 1, &matched);
        if (err == PAYMENT_STORE_OK && !matched)
            err = PAYMENT_STORE_EINTERNAL; /* an upsert always matches or inserts */
        else if (err == PAYMENT_STORE_EDUPLICATE)
            err = mongo_slot_missed(st, client, org, id, now_ms);
    }
    mongoc_collection_destroy(orgs);
    bson_destroy(&filter);
    bson_destroy(&update);
    return err == 1 ? PAYMENT_STORE_EUNAVAILABLE : err; /* races lost every time: busy */
}

/* Gives id's slot of org back, best effort: a slot left behind is freed by
 * a later create (mongo_slots_repair). */
void mongo_slot_give(struct mongo_store *st, mongoc_client_t *client, const char *org,
                     const char *id)
{
    mongoc_collection_t *orgs = mongo_collection(st, client, st->hook_orgs_coll);
    bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER, pull, slot;
    int matched;
    if (BSON_APPEND_UTF8(&filter, "_id", org) &&
        BSON_APPEND_DOCUMENT_BEGIN(&update, "$pull", &pull) &&
        BSON_APPEND_DOCUMENT_BEGIN(&pull, "ids", &slot) && BSON_APPEND_UTF8(&slot, "id", id) &&
        bson_append_document_end(&pull, &slot) && bson_append_document_end(&update, &pull))
        (void)mongo_update_matched(orgs, &filter, &update, 0, &matched);
    bson_destroy(&filter);
    bson_destroy(&update);
    mongoc_collection_destroy(orgs);
}
