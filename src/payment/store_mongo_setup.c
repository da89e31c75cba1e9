/* store_mongo_setup: what a database needs before the store serves: its
 * schema marker (checked first: a store a newer paymentd has changed is
 * refused before anything is written), its indexes (created on open, a
 * no-op when they exist; the one unique index of the payments besides _id
 * starts with organisation_id, the shard key README advises), the feed's
 * indexes, the webhooks' indexes, and a sequence counter at least as high
 * as every stored seq.
 *
 * The marker is {_id: <collection>_schema, version: N} in counters.
 * Version 1 is the layout as it was when the marker came: a store without
 * one (new, or made before it) is of version 1 and is given it.  A later
 * paymentd that changes the layout raises it, migrating here, and this
 * build then refuses the store with the words every store uses: at open,
 * where paymentd exits; or, when setup waited for MongoDB, at the first
 * request, after which the store stays refused (every call EUNAVAILABLE).
 * The marker is raised and read in one findAndModify, so that of two
 * paymentd starting at once, an older one cannot miss a newer one's raise. */

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "payment/store_mongo.h"

/* An index as this store asks for it. */
struct mongo_index {
    const char *name;
    const char *field[2]; /* ascending keys, the second may be NULL */
    int unique;           /* a key in at most one document */
    const char *partial;  /* only documents holding this field, or NULL: all */
};

/* One index per filter, and the list order.  seq is not unique: the
 * counter makes it so.  The one unique index besides _id starts with
 * organisation_id, the shard key README advises: a sharded collection
 * allows no unique index without the shard key's prefix.  Names are fixed
 * so that open is idempotent.  The idempotency indexes hold only documents
 * with records (partial), and so does the outbox's (documents holding
 * entries: what the sequencer looks for). */
static const struct mongo_index mongo_indexes[] = {
    {"seq", {"seq", NULL}, 0, NULL},
    {"organisation_seq", {MONGO_F_ORG, "seq"}, 0, NULL},
    {"currency_seq", {MONGO_F_CURRENCY, "seq"}, 0, NULL},
    {"payment_scheme_seq", {MONGO_F_SCHEME, "seq"}, 0, NULL},
    {"payment_type_seq", {MONGO_F_TYPE, "seq"}, 0, NULL},
    {"reference", {MONGO_F_REF, NULL}, 0, NULL},
    {"end_to_end_reference", {MONGO_F_E2E, NULL}, 0, NULL},
    {"processing_date", {MONGO_F_DATE, NULL}, 0, NULL},
    {"amount_key", {MONGO_F_AMOUNT, NULL}, 0, NULL},
    {"created_ms", {"created_ms", NULL}, 0, NULL},
    {MONGO_IDEM_SK_INDEX, {MONGO_F_ORG, MONGO_F_IDEM ".sk"}, 1, MONGO_F_IDEM ".sk"},
    /* Lookups by key.  Not {idem.sk} alone: stores made before hold an
     * index idem_sk on that key, and MongoDB refuses an equivalent index
     * under another name. */
    {"idem_key", {MONGO_F_IDEM ".sk", MONGO_F_ORG}, 0, MONGO_F_IDEM ".sk"},
    {"idem_created", {MONGO_F_IDEM ".created", NULL}, 0, MONGO_F_IDEM ".created"},
    {"pend", {MONGO_F_PEND ".made_us", NULL}, 0, MONGO_F_PEND ".made_us"},
};

/* The feed's (store_mongo_events.c): its _id is the position (the feed's
 * order); the feed of some organisations; one event per version of a
 * payment, which is also a history's order (partial: a purged event's stub
 * has no payment); and time, for retention and the time filters. */
static const struct mongo_index mongo_event_indexes[] = {
    {"organisation_pos", {MONGO_F_ORG, "_id"}, 0, NULL},
    {MONGO_EVENTS_VERSION_INDEX, {"payment_id", "version"}, 1, "payment_id"},
    {"occurred_ms", {"occurred_ms", NULL}, 0, NULL},
};

/* The webhooks' (store_mongo_webhooks.c, store_mongo_deliveries.c): the
 * endpoints of some organisations in id order; one delivery per (endpoint,
 * event), the rule that makes a dispatch that is made again do nothing; an
 * endpoint's deliveries in id order; the due ones in due order (claims);
 * and by status and age (the pending gauge, purges). */
static const struct mongo_index mongo_hook_indexes[] = {
    {"organisation_id", {MONGO_F_ORG, "_id"}, 0, NULL},
};
static const struct mongo_index mongo_delivery_indexes[] = {
    {MONGO_DELIVERY_KEY_INDEX, {"webhook_id", "event_id"}, 1, NULL},
    {"webhook_id", {"webhook_id", "_id"}, 0, NULL},
    {"status_next", {"status", "next_ms"}, 0, NULL},
    {"status_created", {"status", "created_ms"}, 0, NULL},
};

static bool mongo_build_indexes(bson_t *cmd, const char *coll, const struct mongo_index *indexes,
                                size_t n)
{
    bson_t list;
    bool ok = BSON_APPEND_UTF8(cmd, "createIndexes", coll) &&
              BSON_APPEND_ARRAY_BEGIN(cmd, "indexes", &list);
    if (!ok)
        return false;
    for (size_t i = 0; ok && i < n; i++) {
        char idx[16];
        const char *k;
        bson_uint32_to_string((uint32_t)i, &k, idx, sizeof idx);
        bson_t spec, key;
        if (!bson_append_document_begin(&list, k, -1, &spec))
            return false;
        ok = BSON_APPEND_DOCUMENT_BEGIN(&spec, "key", &key);
        if (!ok)
            return false;
        for (int f = 0; ok && f < 2 && indexes[i].field[f]; f++)
            ok = BSON_APPEND_INT32(&key, indexes[i].field[f], 1);
        ok = bson_append_document_end(&spec, &key) && ok;
        ok = ok && BSON_APPEND_UTF8(&spec, "name", indexes[i].name);
        if (ok && indexes[i].unique)
            ok = BSON_APPEND_BOOL(&spec, "unique", true);
        if (ok && indexes[i].partial) {
            bson_t pfe, cond;
            ok = BSON_APPEND_DOCUMENT_BEGIN(&spec, "partialFilterExpression", &pfe);
            if (!ok)
                return false;
            ok = BSON_APPEND_DOCUMENT_BEGIN(&pfe, indexes[i].partial, &cond);
            if (!ok)
                return false;
            ok = BSON_APPEND_BOOL(&cond, "$exists", true);
            ok = bson_append_document_end(&pfe, &cond) && ok;
            ok = bson_append_document_end(&spec, &pfe) && ok;
        }
        ok = bson_append_document_end(&list, &spec) && ok;
    }
    return bson_append_array_end(cmd, &list) && ok;
}

/* The highest seq stored, 0 for none, or -1 with e set. */
static int64_t mongo_max_seq(mongoc_collection_t *coll, bson_error_t *e)
{
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort, proj;
    bool ok = BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort) &&
              BSON_APPEND_INT32(&sort, "seq", -1) && bson_append_document_end(&opts, &sort) &&
              BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj) &&
              BSON_APPEND_INT32(&proj, "seq", 1) && bson_append_document_end(&opts, &proj) &&
              BSON_APPEND_INT64(&opts, "limit", 1) && BSON_APPEND_BOOL(&opts, "singleBatch", true);
    int64_t max = -1;
    if (ok) {
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
        const bson_t *doc;
        max = 0;
        if (mongoc_cursor_next(cur, &doc))
            max = mongo_get_int64(doc, "seq", 0);
        else if (mongoc_cursor_error(cur, e))
            max = -1;
        mongoc_cursor_destroy(cur);
    } else {
        bson_set_error(e, MONGOC_ERROR_BSON, 0, "cannot build a query");
    }
    bson_destroy(&filter);
    bson_destroy(&opts);
    return max;
}

/* Moves field of the counter name to at least floor (a restore may hold
 * payments the counter has not counted).  $max with upsert is idempotent;
 * two nodes upserting at once may collide on _id, and the loser's retry
 * finds it. */
static bool mongo_counter_floor(mongoc_collection_t *counters, const char *name,
                                const char *field, int64_t floor, bson_error_t *e)
{
    bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER, opts = BSON_INITIALIZER, max;
    bool ok = BSON_APPEND_UTF8(&filter, "_id", name) &&
              BSON_APPEND_DOCUMENT_BEGIN(&update, "$max", &max) &&
              BSON_APPEND_INT64(&max, field, floor) && bson_append_document_end(&update, &max) &&
              BSON_APPEND_BOOL(&opts, "upsert", true);
    if (!ok)
        bson_set_error(e, MONGOC_ERROR_BSON, 0, "cannot build the counter update");
    for (int tries = 0; ok && tries < 2; tries++) {
        ok = mongoc_collection_update_one(counters, &filter, &update, &opts, NULL, e);
        if (ok || e->domain != MONGOC_ERROR_SERVER || e->code != MONGOC_ERROR_DUPLICATE_KEY)
            break;
        ok = true; /* lost an upsert race: the document exists now */
    }
    bson_destroy(&filter);
    bson_destroy(&update);
    bson_destroy(&opts);
    return ok;
}

/* The marker's version in findAndModify's reply, the document as it is
 * after the raise, into *version; false with e set when it has none. */
static bool mongo_schema_returned(const bson_t *reply, int64_t *version, bson_error_t *e)
{
    bson_iter_t it;
    const uint8_t *data = NULL;
    uint32_t len = 0;
    bson_t value;
    *version = -1;
    if (bson_iter_init_find(&it, reply, "value") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        bson_iter_document(&it, &len, &data);
        if (bson_init_static(&value, data, len))
            *version = mongo_get_int64(&value, "version", -1);
    }
    if (*version < 0) {
        bson_set_error(e, MONGOC_ERROR_BSON, 0, "the store's schema marker holds no version");
        return false;
    }
    return true;
}

/* Raises the store's marker id to at least this build's version (creating
 * it when missing: a store without one is of version 1) and reads it back
 * in the same step: one findAndModify, upsert, $max, the new document.  A
 * write, so the primary answers, and two paymentd starting at once each
 * see the other's raise: whichever comes second gets the higher version.
 * Two upserts of a missing marker may collide on _id; the loser's retry
 * finds it.  *version, or false with e set. */
static bool mongo_schema_raise(mongoc_collection_t *counters, const char *id, int64_t *version,
                               bson_error_t *e)
{
    bson_t query = BSON_INITIALIZER, update = BSON_INITIALIZER, max;
    mongoc_find_and_modify_opts_t *fam = mongoc_find_and_modify_opts_new();
    bool ok = fam && BSON_APPEND_UTF8(&query, "_id", id) &&
              BSON_APPEND_DOCUMENT_BEGIN(&update, "$max", &max) &&
              BSON_APPEND_INT64(&max, "version", MONGO_SCHEMA_VERSION) &&
              bson_append_document_end(&update, &max) &&
              mongoc_find_and_modify_opts_set_update(fam, &update) &&
              mongoc_find_and_modify_opts_set_flags(
                  fam, MONGOC_FIND_AND_MODIFY_UPSERT | MONGOC_FIND_AND_MODIFY_RETURN_NEW);
    if (!ok)
        bson_set_error(e, MONGOC_ERROR_BSON, 0, "cannot build the schema marker's update");
    bool done = false;
    for (int tries = 0; ok && !done && tries < 2; tries++) {
        bson_t reply; /* always initialized by the call */
        ok = mongoc_collection_find_and_modify_with_opts(counters, &query, fam, &reply, e);
        if (ok) {
            ok = mongo_schema_returned(&reply, version, e);
            done = true;
        } else if (tries == 0 && e->domain == MONGOC_ERROR_SERVER &&
                   e->code == MONGOC_ERROR_DUPLICATE_KEY) {
            ok = true; /* lost the upsert race: the marker exists now */
        }
        bson_destroy(&reply);
    }
    assert(!ok || done);
    mongoc_find_and_modify_opts_destroy(fam); /* NULL is a no-op */
    bson_destroy(&query);
    bson_destroy(&update);
    return ok;
}

/* Refuses a store of a later layout than this build's (e in domain
 * MONGO_ERROR_SCHEMA; the marker is left as it is: $max does not lower
 * it), else leaves this build's version recorded in its marker. */
static bool mongo_schema_mark(struct mongo_store *st, mongoc_collection_t *counters,
                              bson_error_t *e)
{
    char id[MONGO_NAME_MAX + sizeof MONGO_SCHEMA_SUFFIX];
    int n = snprintf(id, sizeof id, "%s%s", st->coll, MONGO_SCHEMA_SUFFIX);
    assert(n > 0 && (size_t)n < sizeof id); /* the collection's name is at most MONGO_NAME_MAX */
    int64_t version;
    if (!mongo_schema_raise(counters, id, &version, e))
        return false;
    assert(version >= MONGO_SCHEMA_VERSION); /* $max raised it at least this far */
    if (version > MONGO_SCHEMA_VERSION) {
        bson_set_error(e, MONGO_ERROR_SCHEMA, 0,
                       "store schema version %" PRId64
                       " is newer than this build's (%d): upgrade paymentd",
                       version, MONGO_SCHEMA_VERSION);
        return false;
    }
    return true;
}

/* The index the purge of operation outcomes reads: applied_ms. */
static bool mongo_ops_index(struct mongo_store *st, mongoc_client_t *client, bson_error_t *e)
{
    bson_t cmd = BSON_INITIALIZER, list, spec, key;
    bool ok = BSON_APPEND_UTF8(&cmd, "createIndexes", st->ops_coll) &&
              BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &list) &&
              BSON_APPEND_DOCUMENT_BEGIN(&list, "0", &spec) &&
              BSON_APPEND_DOCUMENT_BEGIN(&spec, "key", &key) &&
              BSON_APPEND_INT32(&key, "applied_ms", 1) && bson_append_document_end(&spec, &key) &&
              BSON_APPEND_UTF8(&spec, "name", "applied_ms") &&
              bson_append_document_end(&list, &spec) && bson_append_array_end(&cmd, &list);
    if (!ok) {
        bson_set_error(e, MONGOC_ERROR_BSON, 0, "cannot build the index specification");
    } else {
        mongoc_collection_t *coll = mongo_collection(st, client, st->ops_coll);
        ok = mongoc_collection_write_command_with_opts(coll, &cmd, NULL, NULL, e);
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&cmd);
    return ok;
}

/* Creates the indexes of collection name (a no-op when they exist). */
static bool mongo_create_indexes(struct mongo_store *st, mongoc_client_t *client,
                                 const char *name, const struct mongo_index *indexes, size_t n,
                                 bson_error_t *e)
{
    bson_t cmd = BSON_INITIALIZER;
    bool ok = mongo_build_indexes(&cmd, name, indexes, n);
    if (!ok) {
        bson_set_error(e, MONGOC_ERROR_BSON, 0, "cannot build the index specification");
    } else {
        mongoc_collection_t *coll = mongo_collection(st, client, name);
        ok = mongoc_collection_write_command_with_opts(coll, &cmd, NULL, NULL, e);
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&cmd);
    return ok;
}

/* Checks and marks the schema, creates the indexes (a no-op when they
 * exist) and floors the counter. */
bool mongo_setup(struct mongo_store *st, mongoc_client_t *client, bson_error_t *e)
{
    mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
    mongoc_collection_t *counters = mongo_collection(st, client, MONGO_COUNTERS);
    bool ok = mongo_schema_mark(st, counters, e) &&
              mongo_create_indexes(st, client, st->coll, mongo_indexes,
                                   sizeof mongo_indexes / sizeof mongo_indexes[0], e) &&
              mongo_create_indexes(st, client, st->events_coll, mongo_event_indexes,
                                   sizeof mongo_event_indexes / sizeof mongo_event_indexes[0], e) &&
              mongo_ops_index(st, client, e) &&
              mongo_create_indexes(st, client, st->hooks_coll, mongo_hook_indexes,
                                   sizeof mongo_hook_indexes / sizeof mongo_hook_indexes[0], e) &&
              mongo_create_indexes(st, client, st->deliveries_coll, mongo_delivery_indexes,
                                   sizeof mongo_delivery_indexes / sizeof mongo_delivery_indexes[0],
                                   e);
    int64_t max = ok ? mongo_max_seq(coll, e) : -1;
    ok = max >= 0 && mongo_counter_floor(counters, st->coll, "seq", max, e);
    mongoc_collection_destroy(counters);
    mongoc_collection_destroy(coll);
    return ok;
}

/* Keeps setup's refusal of a newer store: its words, then the flag (so
 * that whoever sees the flag reads whole words). */
static void mongo_refuse(struct mongo_store *st, const char *why)
{
    int n = snprintf(st->refusal, sizeof st->refusal, "%s", why);
    assert(n > 0); /* never empty; it fits: refusal is as long as e.message */
    atomic_store(&st->refused, 1);
}

/* PAYMENT_STORE_OK once setup has succeeded, trying it now if no other
 * thread is: requests never queue behind a setup that waits for MongoDB.
 * A store setup refused (a newer schema) stays refused: EUNAVAILABLE,
 * setup never tried again, the words in st->refusal. */
int mongo_ready(struct mongo_store *st, mongoc_client_t *client)
{
    if (atomic_load(&st->ready))
        return PAYMENT_STORE_OK;
    if (atomic_load(&st->refused))
        return PAYMENT_STORE_EUNAVAILABLE;
    if (pthread_mutex_trylock(&st->setup_mu) != 0)
        return PAYMENT_STORE_EUNAVAILABLE;
    int err = PAYMENT_STORE_OK;
    bson_error_t e;
    if (atomic_load(&st->refused)) {
        err = PAYMENT_STORE_EUNAVAILABLE; /* refused while this thread waited */
    } else if (!atomic_load(&st->ready)) {
        if (mongo_setup(st, client, &e)) {
            atomic_store(&st->ready, 1);
        } else if (e.domain == MONGO_ERROR_SCHEMA) {
            mongo_refuse(st, e.message);
            err = PAYMENT_STORE_EUNAVAILABLE;
        } else {
            err = mongo_map_err(&e) == PAYMENT_STORE_EUNAVAILABLE ? PAYMENT_STORE_EUNAVAILABLE
                                                                 : PAYMENT_STORE_EINTERNAL;
        }
    }
    store_unlock(&st->setup_mu);
    return err;
}
