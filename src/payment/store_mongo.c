/* store_mongo: payments in MongoDB, through libmongoc's client pool.  This
 * file owns the store's life (open, the first contact, close, counters)
 * and the backend's table; the design below is carried out by the other
 * store_mongo_*.c files (store_mongo.h lists them).
 *
 * URI: mongodb://HOST:PORT[,HOST:PORT...]/DB?OPTIONS.  The database is the
 * URI's path (default "payment").  Two options belong to this store and are
 * taken out before libmongoc parses the rest:
 *   paymentdCollection=NAME    the payments collection (default "payments");
 *   paymentdWaitForStore=true  open succeeds while MongoDB is unreachable:
 *                              the store answers EUNAVAILABLE until MongoDB
 *                              answers and the indexes are in place, and
 *                              for good if it is then of a newer schema.
 * Without the second, open fails when MongoDB does not answer in time.
 *
 * Document: _id is the payment id, seq the sequence number, doc the
 * serialized data object kept verbatim as a string (the bytes GET returns:
 * no number goes through a BSON double), and the list's columns as
 * top-level fields, absent when the payment has no value, and pend, the
 * outbox of events not yet in the feed (store_mongo_events.c).  A deleted
 * payment keeps _id, seq, organisation_id, its outbox and a version of its
 * own (the deleted one + 1) with deleted: true (its tombstone): the unique
 * _id index then refuses to create the id again.
 *
 * Decisions are MongoDB's, each in one single-document operation: create
 * relies on the unique _id (error 11000); update and delete are updates
 * filtered on {_id, version, deleted: false}, and only when that matches
 * nothing does a read of the current version tell ENOTFOUND from ECONFLICT.
 *
 * Idempotency records live in the payment document their write changed, in
 * an array "idem" of {sk: scope "\x1f" key, fingerprint, status, location,
 * etag, body (binary), created, rank}: the create inserts the document
 * holding its record, an update or delete $pushes it in the same
 * conditional update, so a record exists exactly when its write does,
 * without transactions.  A unique multikey index on {organisation_id,
 * idem.sk} (partial: documents without records are not in it) refuses a
 * key another payment of the organisation holds: error 11000 naming that
 * index is EIDEMPOTENT.  The index starts with organisation_id so that the
 * collection can be sharded on it (MongoDB refuses a unique index without
 * the shard key's prefix); a key held by a payment of another organisation
 * is found by a read before the write (mongo_keys_held), which leaves one
 * race: two writes with one key for two organisations at the same moment.
 * A unique index does not look inside one document, so updates and deletes
 * also filter on {"idem.sk": {$ne: sk}}; a miss whose read finds the
 * payment live at the expected version and holding sk is EIDEMPOTENT.  Tombstones keep their records.  Purging $pulls old records.
 *
 * A payment keeps at most MONGO_IDEM_KEEP records, so that one updated
 * often with keys stays far below MongoDB's 16 MB document limit: each
 * record has a rank (the version its write made; a create's and a delete's
 * rank above every update's), and a write pushes its record with $sort on
 * rank and $slice, dropping the lowest.  The create's record is always kept
 * (a retried POST without it would create a second payment), and so is the
 * record being pushed (its version is the highest), so no write is ever
 * left without its record.  A retry of an update or delete whose record was
 * dropped is decided again: its version no longer matches (409) or the
 * payment is gone (404), so nothing is written twice.
 *
 * Operations applied from the broker (payment_store_apply) keep their
 * outcomes in <collection>_operations and each partition's position in
 * <collection>_partitions; see store_mongo_apply.c for why
 * that is exactly once without transactions.  A payment an operation wrote
 * carries two more fields, never served (reads project doc alone): fence,
 * the newest lease revision that decided on it, and ops, its last
 * operations {id, v}.
 *
 * Sequence numbers come from a counter document ({_id: <collection>} in
 * collection "counters") incremented atomically by findAndModify.  Within
 * one process, creates run on one thread that takes every create queued,
 * allocates their numbers with one $inc and inserts them in one unordered
 * bulk write, so numbers grow in commit order.  Across processes sharing a
 * database they do not quite: a node may commit seq 11 before another node
 * commits seq 10, and a cursor read in between (after 11) never sees 10.
 *
 * Every change records its event in the same single-document write, in
 * the payment's outbox; a sequencer thread moves the events into the feed,
 * <collection>_events, in an order no reader can miss: see
 * store_mongo_events.c.
 *
 * Webhook endpoints live in <collection>_webhooks, the slots of the
 * per-organisation limit in <collection>_webhook_orgs, deliveries in
 * <collection>_deliveries and the dispatcher's position in counters: see
 * store_mongo_webhooks.c and store_mongo_deliveries.c.
 *
 * Writes run on worker threads (the HTTP threads only queue them): the
 * create thread above, MONGO_WRITERS threads for updates and deletes, and
 * one thread for operations from the broker.
 * Each takes a client from the pool per operation or batch and returns it
 * before reporting, so a done callback may call the store again.  Reads run
 * on the calling thread with a pooled client.  A write still queued after
 * serverSelectionTimeoutMS fails EUNAVAILABLE without being tried, so an
 * outage answers every request within about twice that timeout.
 *
 * This store's defaults, each where the URI sets none (libmongoc's own wait
 * 30 s): serverSelectionTimeoutMS 2000, connectTimeoutMS 2000,
 * socketTimeoutMS 5000; write concern majority with journal (wtimeout 4/5
 * of the socket timeout) and read concern majority.  w=0 is refused: a 2xx
 * must follow an acknowledged write. */

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "payment/store_mongo.h"

int payment_store_schema_mongo(void)
{
    return MONGO_SCHEMA_VERSION;
}

static void mongo_store_free(struct mongo_store *st)
{
    mongo_seq_free(st); /* NULL is a no-op; its thread stopped first */
    if (st->pool)
        mongoc_client_pool_destroy(st->pool);
    mongoc_uri_destroy(st->uri); /* NULL is a no-op */
    if (st->sync_ready) {
        (void)pthread_cond_destroy(&st->creates.wake);
        (void)pthread_cond_destroy(&st->writes.wake);
        (void)pthread_cond_destroy(&st->applies.wake);
        (void)pthread_mutex_destroy(&st->mu);
        (void)pthread_mutex_destroy(&st->setup_mu);
    }
    free(st);
}

/* The store's locks and conditions: 0, or -1 with none left. */
static int mongo_sync_init(struct mongo_store *st)
{
    if (pthread_mutex_init(&st->mu, NULL) != 0)
        return -1;
    if (pthread_mutex_init(&st->setup_mu, NULL) != 0)
        goto no_setup;
    if (pthread_cond_init(&st->creates.wake, NULL) != 0)
        goto no_creates;
    if (pthread_cond_init(&st->writes.wake, NULL) != 0)
        goto no_writes;
    if (pthread_cond_init(&st->applies.wake, NULL) != 0)
        goto no_applies;
    st->sync_ready = 1;
    return 0;
no_applies:
    (void)pthread_cond_destroy(&st->writes.wake);
no_writes:
    (void)pthread_cond_destroy(&st->creates.wake);
no_creates:
    (void)pthread_mutex_destroy(&st->setup_mu);
no_setup:
    (void)pthread_mutex_destroy(&st->mu);
    return -1;
}

/* PAYMENT_STORE_EXISTING: whether the payments collection exists, in
 * *exists: one that does holds at least its _id index (MongoDB answers a
 * missing one's listIndexes with error 26, or libmongoc with no index).
 * false with e set when MongoDB could not be asked. */
static bool mongo_coll_exists(struct mongo_store *st, mongoc_client_t *client, int *exists,
                              bson_error_t *e)
{
    mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
    mongoc_cursor_t *cursor = mongoc_collection_find_indexes_with_opts(coll, NULL);
    const bson_t *index;
    *exists = mongoc_cursor_next(cursor, &index);
    bool ok = *exists || !mongoc_cursor_error(cursor, e) ||
              e->code == MONGOC_ERROR_COLLECTION_DOES_NOT_EXIST;
    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(coll);
    return ok;
}

/* The first pop starts libmongoc's monitoring threads: with every signal
 * blocked, so that they never take the process's signals.  Then, opened
 * PAYMENT_STORE_EXISTING (existing), whether the collection exists, and
 * the setup, whose failure is fatal unless waiting was asked for and
 * MongoDB is only unreachable. */
static int mongo_first_contact(struct mongo_store *st, int wait, int existing, char *errbuf,
                               size_t errlen)
{
    sigset_t all, old;
    if (sigfillset(&all) != 0 || pthread_sigmask(SIG_BLOCK, &all, &old) != 0) {
        store_errf(errbuf, errlen, "cannot block signals");
        return PAYMENT_STORE_EINTERNAL;
    }
    mongoc_client_t *client = mongoc_client_pool_pop(st->pool);
    if (pthread_sigmask(SIG_SETMASK, &old, NULL) != 0)
        abort(); /* cannot fail with a mask it returned */
    if (!client) {
        store_errf(errbuf, errlen, "no MongoDB client available");
        return PAYMENT_STORE_EUNAVAILABLE;
    }
    bson_error_t e;
    char hosts[256];
    mongo_hosts(st->uri, hosts, sizeof hosts);
    int err = PAYMENT_STORE_OK, exists = 1;
    if (existing && !mongo_coll_exists(st, client, &exists, &e)) {
        store_errf(errbuf, errlen, "MongoDB at %s, database %s: %s", hosts, st->db, e.message);
        err = mongo_map_err(&e) == PAYMENT_STORE_EUNAVAILABLE ? PAYMENT_STORE_EUNAVAILABLE
                                                             : PAYMENT_STORE_EURI;
    } else if (!exists) {
        store_errf(errbuf, errlen,
                   "no store at MongoDB %s, database %s: no collection %s (nothing created)",
                   hosts, st->db, st->coll);
        err = PAYMENT_STORE_EURI;
    } else if (mongo_setup(st, client, &e)) {
        atomic_store(&st->ready, 1);
    } else if (e.domain == MONGO_ERROR_SCHEMA) {
        store_errf(errbuf, errlen, "%s", e.message); /* the words every store uses */
        err = PAYMENT_STORE_EURI;
    } else {
        err = mongo_map_err(&e) == PAYMENT_STORE_EUNAVAILABLE ? PAYMENT_STORE_EUNAVAILABLE
                                                             : PAYMENT_STORE_EURI;
        if (err == PAYMENT_STORE_EUNAVAILABLE && wait) {
            err = PAYMENT_STORE_OK; /* the first request that reaches it sets up */
        } else {
            store_errf(errbuf, errlen, "MongoDB at %s, database %s: %s%s", hosts, st->db,
                       e.message,
                       err == PAYMENT_STORE_EUNAVAILABLE
                           ? " (--wait-for-store, or " MONGO_OPT_WAIT
                             "=true in the URI, starts anyway)"
                           : "");
        }
    }
    mongoc_client_pool_push(st->pool, client);
    return err;
}

static int mongo_open(const char *uri, unsigned flags, payment_store **out, char *errbuf,
                      size_t errlen)
{
    /* PAYMENT_STORE_EXCLUSIVE is the embedded store's.  Process-wide and idempotent.  libmongoc's own log lines would break
     * the server's one-JSON-object-per-line stderr: the store reports
     * through its results instead. */
    mongoc_init();
    mongoc_log_set_handler(NULL, NULL);
    struct mongo_store *st = calloc(1, sizeof *st);
    if (!st) {
        store_errf(errbuf, errlen, "out of memory");
        return PAYMENT_STORE_EINTERNAL;
    }
    atomic_init(&st->ready, 0);
    atomic_init(&st->refused, 0);
    atomic_init(&st->n_commits, 0);
    atomic_init(&st->n_writes, 0);
    int wait = 0;
    int err = mongo_configure(st, uri, &wait, errbuf, errlen);
    if (err != PAYMENT_STORE_OK)
        goto fail;
    mongo_webhooks_names(st);
    err = PAYMENT_STORE_EINTERNAL;
    if (mongo_sync_init(st) != 0 || mongo_seq_new(st) != 0) {
        store_errf(errbuf, errlen, "cannot create the store's locks");
        goto fail;
    }
    bson_error_t e;
    st->pool = mongoc_client_pool_new_with_error(st->uri, &e);
    if (!st->pool) {
        store_errf(errbuf, errlen, "MongoDB client pool: %s", e.message);
        err = PAYMENT_STORE_EURI;
        goto fail;
    }
    if (!mongoc_client_pool_set_error_api(st->pool, MONGOC_ERROR_API_VERSION_2) ||
        !mongoc_client_pool_set_appname(st->pool, "paymentd")) {
        store_errf(errbuf, errlen, "cannot configure the MongoDB client pool");
        goto fail;
    }
    err = mongo_first_contact(st, wait, (flags & PAYMENT_STORE_EXISTING) != 0, errbuf, errlen);
    if (err != PAYMENT_STORE_OK)
        goto fail;
    if (mongo_seq_start(st) != 0 || mongo_start_threads(st) != 0) {
        store_errf(errbuf, errlen, "cannot start the store's threads");
        err = PAYMENT_STORE_EINTERNAL;
        goto fail;
    }
    *out = &st->base;
    return PAYMENT_STORE_OK;
fail:
    mongo_store_free(st);
    return err;
}

static void mongo_stats(payment_store *s, struct payment_store_stats *out)
{
    struct mongo_store *st = (struct mongo_store *)s;
    memset(out, 0, sizeof *out);
    out->commits = atomic_load(&st->n_commits);
    out->writes = atomic_load(&st->n_writes);
    out->batches = &st->batches;
}

/* Setup's refusal of a newer store, once it was made (mongo_ready). */
static const char *mongo_refusal_text(payment_store *s)
{
    struct mongo_store *st = (struct mongo_store *)s;
    return atomic_load(&st->refused) ? st->refusal : NULL;
}

/* The caller guarantees no call into the store runs or starts meanwhile. */
static void mongo_close(payment_store *s)
{
    struct mongo_store *st = (struct mongo_store *)s;
    mongo_stop_threads(st); /* the writers first: their last events are noted */
    mongo_store_free(st);
}

const struct payment_store_backend payment_store_mongo_backend = {
    .scheme = "mongodb",
    .may_block = 1, /* every call is a round trip to MongoDB */
    .open = mongo_open,
    .close = mongo_close,
    .ping = mongo_ping,
    .refusal = mongo_refusal_text,
    .get = mongo_get,
    .list = mongo_list,
    .create = mongo_create,
    .update = mongo_update,
    .remove = mongo_remove,
    .idem_get = mongo_idem_get,
    .idem_purge = mongo_idem_purge,
    .stats = mongo_stats,
    .apply = mongo_apply,
    .op_get = mongo_op_get,
    .partition_get = mongo_partition_get,
    .events = mongo_events,
    .history = mongo_history,
    .events_subscribe = mongo_events_subscribe,
    .events_purge = mongo_events_purge,
    .webhook_create = mongo_webhook_create,
    .webhook_update = mongo_webhook_update,
    .webhook_delete = mongo_webhook_delete,
    .webhook_get = mongo_webhook_get,
    .webhooks_list = mongo_webhooks_list,
    .dispatch_pos = mongo_dispatch_pos,
    .deliveries_add = mongo_deliveries_add,
    .deliveries_claim = mongo_deliveries_claim,
    .deliveries_record = mongo_deliveries_record,
    .delivery_retry = mongo_delivery_retry,
    .deliveries_list = mongo_deliveries_list,
    .deliveries_pending = mongo_deliveries_pending,
    .deliveries_purge = mongo_deliveries_purge,
    .export_payments = mongo_export_payments,
    .export_idem = mongo_export_idem,
    .export_events = mongo_export_events,
    .import = mongo_import,
};
