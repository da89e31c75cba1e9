/* store_mongo_webhooks: the MongoDB store's webhook endpoints (store.h,
 * "webhooks"): create, update, delete, get, list, and where a new
 * endpoint starts in the feed.
 *
 * An endpoint is one document of <collection>_webhooks: _id (its id),
 * organisation_id, version, created_ms, modified_ms, enabled (bool), types
 * (payment_event_type values or-ed), after_pos, failing_since_ms, and doc,
 * the endpoint's JSON kept verbatim as a string.  Every decision is one
 * single-document operation: create relies on the unique _id, update and
 * delete are conditioned on {_id, version}, and only when that matches
 * nothing does a read tell ENOTFOUND from ECONFLICT.
 *
 * The limit (PAYMENT_WEBHOOKS_PER_ORG_MAX per organisation): a create
 * takes one of its organisation's slots before it inserts, a delete gives
 * it back after (store_mongo_webhook_slots.c).
 *
 * Threads: every call runs on its caller's thread with a pooled client,
 * within the store's timeouts (a server that does not answer gives
 * EUNAVAILABLE). */

#include <assert.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "payment/store_mongo.h"

/* Fills in the webhook collections' names from the payments collection's. */
void mongo_webhooks_names(struct mongo_store *st)
{
    snprintf(st->hooks_coll, sizeof st->hooks_coll, "%s" MONGO_HOOKS_SUFFIX, st->coll);
    snprintf(st->hook_orgs_coll, sizeof st->hook_orgs_coll, "%s" MONGO_HOOK_ORGS_SUFFIX,
             st->coll);
    snprintf(st->deliveries_coll, sizeof st->deliveries_coll, "%s" MONGO_DELIVERIES_SUFFIX,
             st->coll);
    snprintf(st->dispatch_id, sizeof st->dispatch_id, "%s" MONGO_DISPATCH_SUFFIX, st->coll);
}

/* One update of the first document filter matches, upserted when upsert is
 * set; *matched: it matched one, or upserted one.  Returns 0 or a store
 * error (EDUPLICATE: an upsert, or the update, collided on a unique key). */
int mongo_update_matched(mongoc_collection_t *coll, const bson_t *filter, const bson_t *update,
                         int upsert, int *matched)
{
    bson_t opts = BSON_INITIALIZER, reply;
    bson_error_t e;
    int err = PAYMENT_STORE_EINTERNAL;
    *matched = 0;
    if (!upsert || BSON_APPEND_BOOL(&opts, "upsert", true)) {
        if (mongoc_collection_update_one(coll, filter, update, &opts, &reply, &e)) {
            *matched = mongo_get_int64(&reply, "matchedCount", 0) > 0 ||
                       mongo_get_int64(&reply, "upsertedCount", 0) > 0;
            err = PAYMENT_STORE_OK;
        } else {
            err = mongo_map_err(&e);
        }
        bson_destroy(&reply); /* always initialized by the call */
    }
    bson_destroy(&opts);
    return err;
}

/* ---- documents ------------------------------------------------------------------ */

/* The document create inserts for w. */
static bool mongo_build_hook(bson_t *b, const struct payment_webhook *w)
{
    return w->doc_len <= INT_MAX && BSON_APPEND_UTF8(b, "_id", w->id) &&
           BSON_APPEND_UTF8(b, MONGO_F_ORG, w->organisation_id) &&
           BSON_APPEND_INT64(b, "version", w->version) &&
           BSON_APPEND_INT64(b, "created_ms", w->created_ms) &&
           BSON_APPEND_INT64(b, "modified_ms", w->modified_ms) &&
           BSON_APPEND_BOOL(b, "enabled", w->enabled != 0) &&
           BSON_APPEND_INT64(b, "types", (int64_t)w->types) &&
           BSON_APPEND_INT64(b, "after_pos", w->after_pos) &&
           BSON_APPEND_INT64(b, "failing_since_ms", w->failing_since_ms) &&
           bson_append_utf8(b, "doc", 3, w->doc, (int)w->doc_len);
}

/* A bool field of doc, or 0 when absent. */
static int mongo_get_bool(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    return bson_iter_init_find(&it, doc, key) && bson_iter_as_bool(&it);
}

/* Fills w from a stored endpoint; w->doc points into doc.  Returns 0, or
 * EINTERNAL for a document that is no endpoint. */
static int mongo_hook_read(const bson_t *doc, struct payment_webhook *w)
{
    memset(w, 0, sizeof *w);
    uint32_t len = 0;
    const char *id = mongo_get_utf8(doc, "_id", NULL);
    const char *org = mongo_get_utf8(doc, MONGO_F_ORG, NULL);
    w->doc = mongo_get_utf8(doc, "doc", &len);
    if (!id || !org || !w->doc || strlen(id) > UUID_STR_LEN || strlen(org) > UUID_STR_LEN)
        return PAYMENT_STORE_EINTERNAL;
    w->doc_len = len;
    snprintf(w->id, sizeof w->id, "%s", id);
    snprintf(w->organisation_id, sizeof w->organisation_id, "%s", org);
    w->version = mongo_get_int64(doc, "version", 0);
    w->created_ms = mongo_get_int64(doc, "created_ms", 0);
    w->modified_ms = mongo_get_int64(doc, "modified_ms", 0);
    w->enabled = mongo_get_bool(doc, "enabled");
    w->types = (unsigned)mongo_get_int64(doc, "types", 0);
    w->after_pos = mongo_get_int64(doc, "after_pos", 0);
    w->failing_since_ms = mongo_get_int64(doc, "failing_since_ms", 0);
    return PAYMENT_STORE_OK;
}

/* Reads endpoint id (read concern local: a decision's read) into *out (the
 * caller destroys it).  Returns 0, ENOTFOUND, or a store error. */
int mongo_hook_find(mongoc_collection_t *hooks, const char *id, bson_t *out)
{
    bson_t filter = BSON_INITIALIZER;
    int err = BSON_APPEND_UTF8(&filter, "_id", id) ? mongo_find_one(hooks, &filter, NULL, 1, out)
                                                   : PAYMENT_STORE_EINTERNAL;
    bson_destroy(&filter);
    return err;
}

/* ---- where a new endpoint starts ------------------------------------------------ */

/* The highest position taken in the feed (max _id), 0 when empty. */
static int mongo_feed_max(struct mongo_store *st, mongoc_client_t *client, int64_t *max)
{
    mongoc_collection_t *events = mongo_collection(st, client, st->events_coll);
    bson_t filter = BSON_INITIALIZER;
    *max = 0; /* no event yet, unless one is found */
    int err = mongo_find_edge(events, &filter, "_id", 0, 0, max);
    bson_destroy(&filter);
    mongoc_collection_destroy(events);
    return err == PAYMENT_STORE_ENOTFOUND ? PAYMENT_STORE_OK : err;
}

/* The position a new endpoint is owed the events above, read BEFORE its
 * insert: the higher of the watermark and the highest position taken.
 *
 * Why every event committed after the endpoint is above it.  Such an event
 * enters its payment's outbox after the endpoint's insert, so after this
 * read; the sequencer round that stamps it reads that outbox later still,
 * and inserts it above the highest position it then finds
 * (store_mongo_events.c, step 2).  Positions never leave the feed
 * (retention leaves stubs), so that highest is at least what this read
 * found: the event's position is greater.  The read uses the store's read
 * concern (majority by default), so it never counts a position a failover
 * could roll back and give to a later event; a majority read that lags only
 * lowers the result, which is safe.  wm is at most the highest position,
 * but is taken too should the feed's documents lag it.
 *
 * The other way the bound is loose: events committed before the endpoint
 * but stamped after this read are above it too, and owed to the endpoint.
 * This process's own earlier writes are not: the read first waits for the
 * sequencer's round over them (mongo_seq_flush), as a feed read does. */
static int mongo_feed_end(struct mongo_store *st, mongoc_client_t *client, int64_t *end)
{
    mongo_seq_flush(st);
    struct mongo_feed feed;
    int64_t max = 0;
    int err = mongo_feed_get(st, client, 0, &feed);
    if (err == PAYMENT_STORE_OK)
        err = mongo_feed_max(st, client, &max);
    if (err == PAYMENT_STORE_OK)
        *end = feed.wm > max ? feed.wm : max;
    return err;
}

/* ---- the calls ------------------------------------------------------------------ */

int mongo_webhook_create(payment_store *s, struct payment_webhook *w)
{
    struct mongo_store *st = (struct mongo_store *)s;
    if (w->doc_len > MONGO_DOC_MAX)
        return PAYMENT_STORE_EINTERNAL;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    if (err == PAYMENT_STORE_OK)
        err = mongo_slot_take(st, client, w->organisation_id, w->id);
    if (err == PAYMENT_STORE_OK) {
        err = mongo_feed_end(st, client, &w->after_pos);
        if (err != PAYMENT_STORE_OK)
            mongo_slot_give(st, client, w->organisation_id, w->id); /* no insert was sent */
    }
    /* A failed insert leaves the slot taken: its outcome may be unknown, a
     * duplicate id may be this organisation's endpoint holding that very
     * slot, and a slot without endpoint is freed later (mongo_slots_repair). */
    w->failing_since_ms = 0;
    bson_t doc = BSON_INITIALIZER;
    if (err == PAYMENT_STORE_OK && !mongo_build_hook(&doc, w))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *hooks = mongo_collection(st, client, st->hooks_coll);
        bson_error_t e;
        if (!mongoc_collection_insert_one(hooks, &doc, NULL, NULL, &e))
            err = mongo_map_err(&e); /* EDUPLICATE: the unique _id */
        mongoc_collection_destroy(hooks);
    }
    bson_destroy(&doc);
    mongoc_client_pool_push(st->pool, client);
    return err;
}

/* The $set of an update of w; clear_failing: the endpoint is being enabled
 * again. */
static bool mongo_build_hook_update(bson_t *update, const struct payment_webhook *w,
                                    int clear_failing)
{
    bson_t set;
    bool ok = w->doc_len <= INT_MAX && BSON_APPEND_DOCUMENT_BEGIN(update, "$set", &set);
    if (!ok)
        return false;
    ok = BSON_APPEND_INT64(&set, "version", w->version) &&
         BSON_APPEND_INT64(&set, "modified_ms", w->modified_ms) &&
         BSON_APPEND_BOOL(&set, "enabled", w->enabled != 0) &&
         BSON_APPEND_INT64(&set, "types", (int64_t)w->types) &&
         bson_append_utf8(&set, "doc", 3, w->doc, (int)w->doc_len) &&
         (!clear_failing || BSON_APPEND_INT64(&set, "failing_since_ms", 0));
    return bson_append_document_end(update, &set) && ok;
}

/* One try of an update: reads the endpoint (ENOTFOUND, ECONFLICT), then
 * writes on the version read, which also fixes whether it was enabled.
 * Returns 0 when written, 1 when it changed meanwhile, or the decision. */
static int mongo_hook_update_try(mongoc_collection_t *hooks, const struct payment_webhook *w,
                                 int64_t expected_version)
{
    bson_t stored;
    int err = mongo_hook_find(hooks, w->id, &stored);
    if (err != PAYMENT_STORE_OK)
        return err;
    int64_t version = mongo_get_int64(&stored, "version", -1);
    int was_enabled = mongo_get_bool(&stored, "enabled");
    bson_destroy(&stored);
    if (version != expected_version)
        return PAYMENT_STORE_ECONFLICT;
    bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER;
    int matched = 0;
    err = BSON_APPEND_UTF8(&filter, "_id", w->id) &&
                  BSON_APPEND_INT64(&filter, "version", expected_version) &&
                  mongo_build_hook_update(&update, w, w->enabled && !was_enabled)
              ? mongo_update_matched(hooks, &filter, &update, 0, &matched)
              : PAYMENT_STORE_EINTERNAL;
    bson_destroy(&filter);
    bson_destroy(&update);
    if (err == PAYMENT_STORE_EDUPLICATE)
        err = PAYMENT_STORE_EINTERNAL; /* no index but _id, which is not changed */
    return err == PAYMENT_STORE_OK && !matched ? 1 : err;
}

int mongo_webhook_update(payment_store *s, const struct payment_webhook *w,
                         int64_t expected_version)
{
    struct mongo_store *st = (struct mongo_store *)s;
    assert(w->version == expected_version + 1);
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *hooks = mongo_collection(st, client, st->hooks_coll);
        err = 1;
        for (int tries = 0; err == 1 && tries < MONGO_CAS_TRIES; tries++)
            err = mongo_hook_update_try(hooks, w, expected_version);
        if (err == 1)
            err = PAYMENT_STORE_EUNAVAILABLE; /* changed under every try */
        mongoc_collection_destroy(hooks);
    }
    mongoc_client_pool_push(st->pool, client);
    return err;
}

/* Removes endpoint id when at expected_version (-1: any), into *removed
 * (the caller destroys it when *found).  Returns 0 or a store error. */
static int mongo_hook_remove(mongoc_collection_t *hooks, const char *id, int64_t expected_version,
                             bson_t *removed, int *found)
{
    bson_t query = BSON_INITIALIZER;
    mongoc_find_and_modify_opts_t *fam = mongoc_find_and_modify_opts_new();
    bool ok = fam && BSON_APPEND_UTF8(&query, "_id", id) &&
              (expected_version < 0 || BSON_APPEND_INT64(&query, "version", expected_version)) &&
              mongoc_find_and_modify_opts_set_flags(fam, MONGOC_FIND_AND_MODIFY_REMOVE);
    *found = 0;
    int err = ok ? mongo_find_modify(hooks, &query, fam, removed, found) : PAYMENT_STORE_EINTERNAL;
    mongoc_find_and_modify_opts_destroy(fam); /* NULL is a no-op */
    bson_destroy(&query);
    return err;
}

/* Deletes the deliveries of endpoint id, best effort: one left behind is
 * never sent (its endpoint is not found), and is failed by the deliverer. */
static void mongo_hook_deliveries_drop(struct mongo_store *st, mongoc_client_t *client,
                                       const char *id)
{
    mongoc_collection_t *deliveries = mongo_collection(st, client, st->deliveries_coll);
    bson_t filter = BSON_INITIALIZER;
    bson_error_t e;
    if (BSON_APPEND_UTF8(&filter, "webhook_id", id))
        (void)mongoc_collection_delete_many(deliveries, &filter, NULL, NULL, &e);
    bson_destroy(&filter);
    mongoc_collection_destroy(deliveries);
}

int mongo_webhook_delete(payment_store *s, const char *id, int64_t expected_version,
                         int64_t *current_version)
{
    struct mongo_store *st = (struct mongo_store *)s;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    mongoc_collection_t *hooks = mongo_collection(st, client, st->hooks_coll);
    bson_t removed;
    int found = 0;
    if (err == PAYMENT_STORE_OK)
        err = mongo_hook_remove(hooks, id, expected_version, &removed, &found);
    if (err == PAYMENT_STORE_OK && found) {
        char org[UUID_STR_LEN + 1];
        mongo_copy_utf8(&removed, MONGO_F_ORG, org, sizeof org);
        bson_destroy(&removed);
        mongo_slot_give(st, client, org, id);
        mongo_hook_deliveries_drop(st, client, id);
    } else if (err == PAYMENT_STORE_OK) {
        bson_t stored; /* missed: gone, or at another version */
        err = mongo_hook_find(hooks, id, &stored);
        if (err == PAYMENT_STORE_OK) {
            if (current_version)
                *current_version = mongo_get_int64(&stored, "version", -1);
            bson_destroy(&stored);
            err = PAYMENT_STORE_ECONFLICT;
        }
    }
    mongoc_collection_destroy(hooks);
    mongoc_client_pool_push(st->pool, client);
    return err;
}

int mongo_webhook_get(payment_store *s, const char *id, payment_store_webhook_fn each, void *arg)
{
    struct mongo_store *st = (struct mongo_store *)s;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    bson_t filter = BSON_INITIALIZER, doc;
    if (err == PAYMENT_STORE_OK && !BSON_APPEND_UTF8(&filter, "_id", id))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *hooks = mongo_collection(st, client, st->hooks_coll);
        err = mongo_find_one(hooks, &filter, NULL, 0, &doc);
        if (err == PAYMENT_STORE_OK) {
            struct payment_webhook w;
            err = mongo_hook_read(&doc, &w);
            if (err == PAYMENT_STORE_OK)
                err = each(arg, &w);
            bson_destroy(&doc);
        }
        mongoc_collection_destroy(hooks);
    }
    bson_destroy(&filter);
    mongoc_client_pool_push(st->pool, client);
    return err;
}

/* The filter of a list: ids above after_id, q's organisations, enabled. */
static bool mongo_build_hooks_filter(bson_t *f, const struct payment_webhook_query *q)
{
    bson_t gt, in, list;
    bool ok = !q->after_id || (BSON_APPEND_DOCUMENT_BEGIN(f, "_id", &gt) &&
                               BSON_APPEND_UTF8(&gt, "$gt", q->after_id) &&
                               bson_append_document_end(f, &gt));
    if (ok && !q->all_orgs) {
        ok = BSON_APPEND_DOCUMENT_BEGIN(f, MONGO_F_ORG, &in) &&
             BSON_APPEND_ARRAY_BEGIN(&in, "$in", &list);
        for (size_t i = 0; ok && i < q->n_orgs; i++) {
            char idx[16];
            const char *k;
            bson_uint32_to_string((uint32_t)i, &k, idx, sizeof idx);
            ok = BSON_APPEND_UTF8(&list, k, q->orgs[i]);
        }
        ok = ok && bson_append_array_end(&in, &list) && bson_append_document_end(f, &in);
    }
    return ok && (!q->enabled_only || BSON_APPEND_BOOL(f, "enabled", true));
}

/* Id order, one more than the page (to learn whether another follows). */
static bool mongo_build_page_opts(bson_t *o, uint32_t limit)
{
    bson_t sort;
    return BSON_APPEND_DOCUMENT_BEGIN(o, "sort", &sort) && BSON_APPEND_INT32(&sort, "_id", 1) &&
           bson_append_document_end(o, &sort) && BSON_APPEND_INT64(o, "limit", (int64_t)limit + 1) &&
           BSON_APPEND_INT64(o, "batchSize", (int64_t)limit + 1);
}

/* An endpoint callback and its argument, for mongo_page_each. */
struct mongo_hook_each {
    payment_store_webhook_fn each;
    void *arg;
};

/* Passes endpoint doc to the callback of arg (a mongo_hook_each). */
static int mongo_hook_give(const bson_t *doc, void *arg)
{
    const struct mongo_hook_each *to = arg;
    struct payment_webhook w;
    int err = mongo_hook_read(doc, &w);
    return err != PAYMENT_STORE_OK ? err : to->each(to->arg, &w);
}

int mongo_webhooks_list(payment_store *s, const struct payment_webhook_query *q,
                        payment_store_webhook_fn each, void *arg, int *more)
{
    struct mongo_store *st = (struct mongo_store *)s;
    *more = 0;
    if (!q->all_orgs && q->n_orgs == 0)
        return PAYMENT_STORE_OK; /* no organisation: none match */
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
    if (err == PAYMENT_STORE_OK &&
        !(mongo_build_hooks_filter(&filter, q) && mongo_build_page_opts(&opts, q->limit)))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *hooks = mongo_collection(st, client, st->hooks_coll);
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(hooks, &filter, &opts, NULL);
        struct mongo_hook_each to = {each, arg};
        err = mongo_page_each(cur, q->limit, mongo_hook_give, &to, more);
        mongoc_collection_destroy(hooks);
    }
    bson_destroy(&filter);
    bson_destroy(&opts);
    mongoc_client_pool_push(st->pool, client);
    return err;
}
