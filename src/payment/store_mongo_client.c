/* store_mongo_client: talking to MongoDB.  Owns the mapping of libmongoc's
 * errors to store errors (a duplicate key naming the idempotency index is
 * EIDEMPOTENT), pooled clients (each checked for the store being set up),
 * collections, one-document reads and findAndModify. */

#include <string.h>

#include "payment/store_mongo.h"

#define MONGO_IDEM_SK_OLD "idem_sk"   /* unique on idem.sk alone, in stores made before */

/* Server error codes that mean "not now" rather than "never": the server is
 * shutting down, stepping down, unreachable, busy, interrupted, or could not
 * reach the write concern in time; a shard's routing table is stale.  An
 * error outside this list is EINTERNAL, which a worker retries only
 * --max-apply-attempts times before it records the operation as failed: so
 * every code a failover or an overload can produce belongs here. */
static int mongo_code_transient(uint32_t code)
{
    static const uint32_t codes[] = {
        6,     /* HostUnreachable */
        7,     /* HostNotFound */
        24,    /* LockTimeout */
        46,    /* LockBusy */
        50,    /* MaxTimeMSExpired */
        63,    /* StaleShardVersion */
        64,    /* WriteConcernFailed */
        89,    /* NetworkTimeout */
        91,    /* ShutdownInProgress */
        112,   /* WriteConflict */
        133,   /* FailedToSatisfyReadPreference */
        150,   /* StaleEpoch */
        189,   /* PrimarySteppedDown */
        262,   /* ExceededTimeLimit */
        9001,  /* SocketException */
        10058, /* LegacyNotPrimary */
        10107, /* NotWritablePrimary */
        11600, /* InterruptedAtShutdown */
        11601, /* Interrupted */
        11602, /* InterruptedDueToReplStateChange */
        13388, /* StaleConfig */
        13435, /* NotPrimaryNoSecondaryOk */
        13436, /* NotPrimaryOrSecondary */
    };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (codes[i] == code)
            return 1;
    return 0;
}

/* The store error of server error code with message msg (NULL if none).
 * A duplicate key is EIDEMPOTENT when MongoDB names an idempotency index,
 * this one or the one of stores made before ("E11000 ... collection:
 * DB.COLL index: NAME dup key: ..."; names hold no space, so the first
 * " index: " is this one), else EDUPLICATE (_id). */
int mongo_code_err(uint32_t code, const char *msg)
{
    if (code == MONGOC_ERROR_DUPLICATE_KEY) {
        static const char tag[] = " index: " MONGO_IDEM_SK_INDEX " ";
        static const char old[] = " index: " MONGO_IDEM_SK_OLD " ";
        const char *at = msg ? strstr(msg, " index: ") : NULL;
        return at && (strncmp(at, tag, sizeof tag - 1) == 0 ||
                      strncmp(at, old, sizeof old - 1) == 0)
                   ? PAYMENT_STORE_EIDEMPOTENT
                   : PAYMENT_STORE_EDUPLICATE;
    }
    return mongo_code_transient(code) ? PAYMENT_STORE_EUNAVAILABLE : PAYMENT_STORE_EINTERNAL;
}

/* The store error of a failed libmongoc call (error API version 2). */
int mongo_map_err(const bson_error_t *e)
{
    switch (e->domain) {
    case MONGOC_ERROR_STREAM:
    case MONGOC_ERROR_SERVER_SELECTION:
    case MONGOC_ERROR_WRITE_CONCERN:
        return PAYMENT_STORE_EUNAVAILABLE;
    case MONGOC_ERROR_SERVER:
        return mongo_code_err(e->code, e->message);
    default:
        return PAYMENT_STORE_EINTERNAL;
    }
}

/* Collection name of the store's database, through client c (the caller
 * destroys it). */
mongoc_collection_t *mongo_collection(struct mongo_store *st, mongoc_client_t *c,
                                      const char *name)
{
    return mongoc_client_get_collection(c, st->db, name);
}

/* The first document of coll that filter matches, projected to proj (NULL:
 * whole), read with read concern local when local is set (else the URI's),
 * copied into out (the caller destroys it).  Returns 0, ENOTFOUND, or a
 * store error. */
/* The first document of coll matching filter under opts (which this
 * completes with limit 1 and a single batch) copied into out.  0,
 * ENOTFOUND, or an error.  Frees opts. */
static int mongo_find_first(mongoc_collection_t *coll, const bson_t *filter, bson_t *opts,
                            bool ok, bson_t *out)
{
    ok = ok && BSON_APPEND_INT64(opts, "limit", 1) && BSON_APPEND_BOOL(opts, "singleBatch", true);
    int err = PAYMENT_STORE_EINTERNAL;
    if (ok) {
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, opts, NULL);
        const bson_t *doc;
        bson_error_t e;
        if (mongoc_cursor_next(cur, &doc)) {
            bson_copy_to(doc, out);
            err = PAYMENT_STORE_OK;
        } else {
            err = mongoc_cursor_error(cur, &e) ? mongo_map_err(&e) : PAYMENT_STORE_ENOTFOUND;
        }
        mongoc_cursor_destroy(cur);
    }
    bson_destroy(opts);
    return err;
}

int mongo_find_one(mongoc_collection_t *coll, const bson_t *filter, const bson_t *proj,
                   int local, bson_t *out)
{
    bson_t opts = BSON_INITIALIZER;
    bool ok = (!proj || BSON_APPEND_DOCUMENT(&opts, "projection", proj)) &&
              (!local || mongo_append_local(&opts));
    return mongo_find_first(coll, filter, &opts, ok, out);
}

/* The int64 field of coll's first document matching filter in field's
 * order, ascending or descending (the least or the greatest), into *value;
 * with local, read at "local" read concern.  0, ENOTFOUND when none
 * matches, or an error. */
int mongo_find_edge(mongoc_collection_t *coll, const bson_t *filter, const char *field,
                    int ascending, int local, int64_t *value)
{
    bson_t opts = BSON_INITIALIZER, sort, proj, doc;
    bool ok = BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort) &&
              BSON_APPEND_INT32(&sort, field, ascending ? 1 : -1) &&
              bson_append_document_end(&opts, &sort) &&
              BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj) &&
              BSON_APPEND_INT32(&proj, field, 1) && bson_append_document_end(&opts, &proj) &&
              (!local || mongo_append_local(&opts));
    int err = mongo_find_first(coll, filter, &opts, ok, &doc);
    if (err == PAYMENT_STORE_OK) {
        *value = mongo_get_int64(&doc, field, 0);
        bson_destroy(&doc);
    }
    return err;
}

/* Passes the documents of cur to fn, stopping after limit of them (then
 * *more says whether another followed) or at fn's non-zero answer, which
 * it returns; else the cursor's error, or 0.  Destroys cur. */
int mongo_page_each(mongoc_cursor_t *cur, uint32_t limit, mongo_doc_fn fn, void *arg, int *more)
{
    const bson_t *doc;
    uint32_t n = 0;
    int err = PAYMENT_STORE_OK;
    while (err == PAYMENT_STORE_OK && mongoc_cursor_next(cur, &doc)) {
        if (n++ == limit) {
            *more = 1;
            break;
        }
        err = fn(doc, arg);
    }
    bson_error_t e;
    if (err == PAYMENT_STORE_OK && mongoc_cursor_error(cur, &e))
        err = mongo_map_err(&e);
    mongoc_cursor_destroy(cur);
    return err;
}

/* Runs the findAndModify fam on coll's document matching query; when the
 * reply holds one ("value": before or after the change, as fam's flags
 * ask), copies it into out (the caller destroys it) and sets *found, else
 * clears it.  Returns 0, a store error (mongo_map_err), or EINTERNAL for a
 * reply that cannot be read. */
int mongo_find_modify(mongoc_collection_t *coll, const bson_t *query,
                      const mongoc_find_and_modify_opts_t *fam, bson_t *out, int *found)
{
    bson_t reply; /* always initialized by the call */
    bson_error_t e;
    int err = PAYMENT_STORE_OK;
    *found = 0;
    if (mongoc_collection_find_and_modify_with_opts(coll, query, fam, &reply, &e)) {
        bson_iter_t it;
        if (bson_iter_init_find(&it, &reply, "value") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
            const uint8_t *data = NULL;
            uint32_t len = 0;
            bson_t value;
            bson_iter_document(&it, &len, &data);
            if (bson_init_static(&value, data, len)) {
                bson_copy_to(&value, out);
                *found = 1;
            } else {
                err = PAYMENT_STORE_EINTERNAL;
            }
        }
    } else {
        err = mongo_map_err(&e);
    }
    bson_destroy(&reply);
    return err;
}

/* A client from the pool, which the caller pushes back, with *err set to
 * whether the store is set up (mongo_ready); NULL with *err EUNAVAILABLE
 * when the pool has none.  pop waits only when every client is in use
 * (maxPoolSize); with waitQueueTimeoutMS it may give up. */
mongoc_client_t *mongo_client(struct mongo_store *st, int *err)
{
    mongoc_client_t *c = mongoc_client_pool_pop(st->pool);
    *err = c ? mongo_ready(st, c) : PAYMENT_STORE_EUNAVAILABLE;
    return c;
}
