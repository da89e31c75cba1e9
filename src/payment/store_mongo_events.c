/* store_mongo_events: the MongoDB store's events (store.h, "events"): the
 * outbox every write fills, the feed and the histories readers get, and why
 * the feed keeps its promise.  The sequencer (store_mongo_sequencer.c) moves
 * events from the outboxes into the feed; retention is
 * store_mongo_retention.c's.
 *
 * The outbox.  There is no transaction here, so an event is written in the
 * very write that makes its change: every create, update and delete
 * (synchronous, or an operation's from the broker) pushes its event onto
 * the payment document's array "pend" in the same single-document update
 * (a create inserts the document holding it).  The change and its event
 * are one atomic write: neither exists without the other.  A write that
 * fails, or is refused, writes neither.  A delete reads the payment first
 * and is conditioned on the version it read, so that its event carries the
 * document as it was and that version + 1, which the tombstone takes too.
 * An outbox holds at most MONGO_PEND_KEEP entries, fewer for large payments
 * (each holds a copy of the document): a write's filter requires room, and
 * a write that finds none wakes the sequencer and waits a little, then fails
 * EUNAVAILABLE, so that a stopped sequencer never lets a document outgrow
 * MongoDB's 16 MB.
 *
 * The feed.  <collection>_events holds one document per event, its _id the
 * event's position (an integer), with a unique index on (payment_id,
 * version): one event per version of a payment, whoever writes it (the
 * index a history reads by, so no index on the event id is needed: an
 * event's id is as unique as its version).  The counters document {_id:
 * <collection>_feed} holds wm, the watermark: every position from 1 to wm
 * is filled, and stays as it is; and floor: the positions at or below it
 * have left the feed (retention).
 *
 * Sequencers (one per open store, in any number of processes) stamp outbox
 * entries in rounds (store_mongo_round.c; the order a round feeds its
 * entries in, across payments, is explained there):
 *   1. read payments holding entries, each outbox in array order (the order
 *      its writes were made, hence version order);
 *   2. insert the entries, in one ordered insert, at the positions after the
 *      highest one taken (max(_id), or wm when higher).  A duplicate _id:
 *      another sequencer took that position; read the highest again and go
 *      on above it.  A duplicate (payment_id, version): the event is in the
 *      feed already (stamped by another sequencer, or by this one before a
 *      crash); skip it.  An ordered insert stops at its first failure, so an
 *      outbox's entry is inserted only after the one before it is in the
 *      feed;
 *   3. raise wm to the end of the run of filled positions above it (read in
 *      order from wm + 1 up to the first gap), with $max so that it only
 *      grows;
 *   4. $pull the entries now in the feed (by event id) from their outboxes.
 * Each sequencer is woken by its own process's writes and, about once a
 * second, adopts outbox entries older than a second (another process's
 * that its own sequencer has not taken, or one that died) and runs step 3
 * even when it stamped nothing.
 *
 * Why a reader never misses an event.  A feed reader reads wm first, then
 * the events above its cursor and at or below wm, and its next cursor is at
 * most wm.
 *  - No event ever appears at or below wm: step 3 moves wm over filled
 *    positions only, an insert at a filled position fails (unique _id), and
 *    retention turns a purged event into a stub, never an empty position.
 *    So a reader that has read up to p <= wm, reading again, finds every
 *    event it has not seen above p.
 *  - Every event reaches the feed: its entry leaves the outbox (step 4) only
 *    once the event is in the feed (step 2), and the outbox is looked at
 *    again until then (this process's sequencer at once, any sequencer after
 *    a second).  A crash after step 2 leaves the entries, found stamped and
 *    pulled by the next round; a crash before step 3 leaves wm behind, moved
 *    on by the next round of any sequencer (step 3 walks from wm over
 *    whatever filled the positions).
 *  - Exactly once: the unique (payment_id, version) index refuses a second
 *    copy, however many sequencers try, and whenever.
 *  - A payment's events in version order: positions are only ever taken at
 *    the highest + 1, or above one found taken, so the filled positions are
 *    always 1..max and an insert that succeeds lands above every event in
 *    the feed; an outbox's next entry is inserted only once the one before
 *    it is in the feed (step 2), so it lands above it.
 * Positions being taken contiguously, readers could seem safe without wm;
 * they are not: a reader whose read concern is local may see an insert
 * that a failover then rolls back, its position given to another event.
 * wm is raised only after the inserts below it were acknowledged (majority,
 * unless the URI says otherwise), and step 3 checks every position it
 * passes rather than trusting the rule above: a gap, however it came to
 * be, is never passed, and readers rely on wm's rule alone.
 *
 * The feed promise needs <collection>_events unsharded (or sharded on _id):
 * a sharded collection enforces a unique _id only per shard.  The payments
 * collection stays shardable on organisation_id (the pend index is not
 * unique).
 *
 * Histories read <collection>_events by (payment_id, version).  A history
 * reads its own writes, and any process's: it first waits for this
 * process's round over the writes reported before it (as a feed read
 * does), then looks at the payment's outbox and, when that still holds
 * entries (another process's), stamps them itself (a reader may run a
 * round for one payment: rounds are safe in any number), so that every
 * event is read with its position.  A tombstone keeps its outbox until it
 * is stamped, and the events stay after the payment is deleted.
 *
 * The feed reads its own writes too, within a process: a feed read first
 * waits (briefly) for the sequencer's round over the writes this process
 * reported before it. */

#include <assert.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "payment/store_mongo.h"

#define MONGO_PEND_SHARE 4 /* outbox entries take at most 1/4 of a document */

static const char *mongo_event_type_name(enum payment_event_type t)
{
    switch (t) {
    case PAYMENT_EVENT_CREATED: return "payment.created";
    case PAYMENT_EVENT_UPDATED: return "payment.updated";
    case PAYMENT_EVENT_DELETED: return "payment.deleted";
    }
    return "";
}

static enum payment_event_type mongo_event_type_parse(const char *name)
{
    static const enum payment_event_type types[] = {
        PAYMENT_EVENT_CREATED, PAYMENT_EVENT_UPDATED, PAYMENT_EVENT_DELETED};
    for (size_t i = 0; name && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(name, mongo_event_type_name(types[i])) == 0)
            return types[i];
    return 0;
}

/* Microseconds since the epoch (CLOCK_REALTIME). */
int64_t mongo_wall_us(void)
{
    struct timespec t;
    if (clock_gettime(CLOCK_REALTIME, &t) != 0)
        abort(); /* cannot fail with a valid clock */
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* Describes the event of a write on payment_id: its id (info's, or a new
 * UUIDv7), when it occurred (info's, else fallback_ms), and who made it.
 * The caller fills organisation_id, version and doc when the write knows
 * them.  Returns 0, or -1 when no id can be made. */
int mongo_event_init(struct mongo_event *e, enum payment_event_type type,
                     const struct payment_event_info *info, const char *payment_id,
                     int64_t fallback_ms)
{
    memset(e, 0, sizeof *e);
    int64_t now = clock_now_ms();
    if (info && info->id[0]) {
        memcpy(e->id, info->id, sizeof e->id);
    } else {
        struct uuid u;
        if (uuid_v7_generate(now, &u) != 0)
            return -1;
        uuid_format(&u, e->id);
    }
    e->type = type;
    e->payment_id = payment_id;
    e->occurred_ms = info && info->occurred_ms ? info->occurred_ms : fallback_ms;
    e->made_us = mongo_wall_us();
    if (info) {
        e->api_key_id = info->api_key_id;
        e->request_id = info->request_id;
        e->idempotency_key = info->idempotency_key;
        e->operation_id = info->operation_id;
        e->changes = type == PAYMENT_EVENT_UPDATED ? info->changes : NULL;
    }
    return 0;
}

/* Appends a string field when s is not NULL. */
static bool mongo_append_opt(bson_t *b, const char *key, const char *s)
{
    return !s || bson_append_utf8(b, key, -1, s, -1);
}

/* The outbox entry of e as field key of b: the event's fields as the feed
 * stores them (store_mongo_round.c copies them), and made_us. */
bool mongo_append_event(bson_t *b, const char *key, const struct mongo_event *e)
{
    if (e->doc_len > INT_MAX || !e->organisation_id || !e->payment_id)
        return false;
    bson_t entry;
    if (!bson_append_document_begin(b, key, -1, &entry))
        return false;
    bool ok = BSON_APPEND_UTF8(&entry, "id", e->id) &&
              BSON_APPEND_UTF8(&entry, "type", mongo_event_type_name(e->type)) &&
              BSON_APPEND_UTF8(&entry, MONGO_F_ORG, e->organisation_id) &&
              BSON_APPEND_UTF8(&entry, "payment_id", e->payment_id) &&
              BSON_APPEND_INT64(&entry, "version", e->version) &&
              BSON_APPEND_INT64(&entry, "occurred_ms", e->occurred_ms) &&
              mongo_append_opt(&entry, "api_key_id", e->api_key_id) &&
              mongo_append_opt(&entry, "request_id", e->request_id) &&
              mongo_append_opt(&entry, "idempotency_key", e->idempotency_key) &&
              mongo_append_opt(&entry, "operation_id", e->operation_id) &&
              mongo_append_opt(&entry, "changes", e->changes) &&
              bson_append_utf8(&entry, "doc", 3, e->doc ? e->doc : "",
                               e->doc ? (int)e->doc_len : 0) &&
              BSON_APPEND_INT64(&entry, "made_us", e->made_us);
    return bson_append_document_end(b, &entry) && ok;
}

/* How many entries the outbox of a payment of about bytes (its text) may
 * hold: MONGO_PEND_KEEP, fewer for large payments, at least one. */
int mongo_pend_keep(size_t bytes)
{
    size_t fit = MONGO_DOC_MAX / MONGO_PEND_SHARE / (bytes ? bytes : 1);
    return fit < 1 ? 1 : fit > MONGO_PEND_KEEP ? MONGO_PEND_KEEP : (int)fit;
}

/* {"pend.<keep - 1>": {$exists: false}}: the outbox has room for one more
 * entry when it may hold keep. */
bool mongo_append_pend_room(bson_t *filter, int keep)
{
    char field[32];
    snprintf(field, sizeof field, MONGO_F_PEND ".%d", keep - 1);
    return mongo_append_absent(filter, field);
}

/* The entries of doc's outbox (doc.pend, possibly projected). */
int mongo_pend_count(const bson_t *doc)
{
    bson_iter_t it, list;
    int n = 0;
    if (bson_iter_init_find(&it, doc, MONGO_F_PEND) && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &list))
        while (bson_iter_next(&list))
            n++;
    return n;
}

/* Reads the feed's document into out (zeros when there is none yet), with
 * read concern local when local is set, else the store's.  Returns 0 or a
 * store error. */
int mongo_feed_get(struct mongo_store *st, mongoc_client_t *client, int local,
                   struct mongo_feed *out)
{
    memset(out, 0, sizeof *out);
    mongoc_collection_t *coll = mongo_collection(st, client, MONGO_COUNTERS);
    bson_t filter = BSON_INITIALIZER, doc;
    int err = BSON_APPEND_UTF8(&filter, "_id", st->feed_id)
                  ? mongo_find_one(coll, &filter, NULL, local, &doc)
                  : PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        out->wm = mongo_get_int64(&doc, "wm", 0);
        out->floor = mongo_get_int64(&doc, "floor", 0);
        bson_destroy(&doc);
    } else if (err == PAYMENT_STORE_ENOTFOUND) {
        err = PAYMENT_STORE_OK;
    }
    bson_destroy(&filter);
    mongoc_collection_destroy(coll);
    return err;
}

/* Moves the feed's document forward: wm and floor, each when above
 * INT64_MIN, only ever up ($max; upserted).  Returns 0 or a store error. */
int mongo_feed_raise(struct mongo_store *st, mongoc_client_t *client, int64_t wm,
                     int64_t floor)
{
    assert(wm != INT64_MIN || floor != INT64_MIN);
    mongoc_collection_t *coll = mongo_collection(st, client, MONGO_COUNTERS);
    bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER, opts = BSON_INITIALIZER, max;
    bool ok = BSON_APPEND_UTF8(&filter, "_id", st->feed_id) &&
              BSON_APPEND_DOCUMENT_BEGIN(&update, "$max", &max) &&
              (wm == INT64_MIN || BSON_APPEND_INT64(&max, "wm", wm)) &&
              (floor == INT64_MIN || BSON_APPEND_INT64(&max, "floor", floor)) &&
              bson_append_document_end(&update, &max) && BSON_APPEND_BOOL(&opts, "upsert", true);
    int err = ok ? PAYMENT_STORE_OK : PAYMENT_STORE_EINTERNAL;
    for (int tries = 0; ok && tries < 2; tries++) {
        bson_error_t e;
        if (mongoc_collection_update_one(coll, &filter, &update, &opts, NULL, &e)) {
            err = PAYMENT_STORE_OK;
            break;
        }
        err = mongo_map_err(&e);
        if (err != PAYMENT_STORE_EDUPLICATE)
            break; /* else lost an upsert race: the document exists now */
    }
    bson_destroy(&filter);
    bson_destroy(&update);
    bson_destroy(&opts);
    mongoc_collection_destroy(coll);
    return err;
}

/* Fills ev from a stored event doc; its pointers point into doc.  Returns
 * 0, or EINTERNAL for a document that is no event (a purged one's stub). */
static int mongo_event_read(const bson_t *doc, struct payment_event *ev)
{
    memset(ev, 0, sizeof *ev);
    uint32_t len = 0;
    const char *id = mongo_get_utf8(doc, "id", NULL);
    const char *org = mongo_get_utf8(doc, MONGO_F_ORG, NULL);
    const char *pid = mongo_get_utf8(doc, "payment_id", NULL);
    ev->pos = mongo_get_int64(doc, "_id", 0);
    ev->type = mongo_event_type_parse(mongo_get_utf8(doc, "type", NULL));
    ev->doc = mongo_get_utf8(doc, "doc", &len);
    ev->doc_len = len;
    if (!id || !org || !pid || !ev->doc || ev->pos <= 0 || !ev->type)
        return PAYMENT_STORE_EINTERNAL;
    snprintf(ev->id, sizeof ev->id, "%s", id);
    snprintf(ev->organisation_id, sizeof ev->organisation_id, "%s", org);
    snprintf(ev->payment_id, sizeof ev->payment_id, "%s", pid);
    ev->version = mongo_get_int64(doc, "version", -1);
    ev->occurred_ms = mongo_get_int64(doc, "occurred_ms", 0);
    ev->api_key_id = mongo_get_utf8(doc, "api_key_id", NULL);
    ev->request_id = mongo_get_utf8(doc, "request_id", NULL);
    ev->idempotency_key = mongo_get_utf8(doc, "idempotency_key", NULL);
    ev->operation_id = mongo_get_utf8(doc, "operation_id", NULL);
    ev->changes = mongo_get_utf8(doc, "changes", NULL);
    return PAYMENT_STORE_OK;
}

/* Calls each per event of cur, at most limit.  Returns 0, each's non-zero
 * value, or a store error; *n is how many were given, *last the last one's
 * position and *more whether cur held another. */
static int mongo_events_each(mongoc_cursor_t *cur, uint32_t limit, payment_store_event_fn each,
                             void *arg, uint32_t *n, int64_t *last, int *more)
{
    const bson_t *doc;
    *n = 0;
    *more = 0;
    while (mongoc_cursor_next(cur, &doc)) {
        if (*n == limit) {
            *more = 1;
            return PAYMENT_STORE_OK;
        }
        struct payment_event ev;
        int err = mongo_event_read(doc, &ev);
        if (err != PAYMENT_STORE_OK)
            return err;
        int stop = each(arg, &ev);
        if (stop)
            return stop;
        *last = ev.pos;
        (*n)++;
    }
    bson_error_t e;
    return mongoc_cursor_error(cur, &e) ? mongo_map_err(&e) : PAYMENT_STORE_OK;
}

/* {field: {$in: [values]}}: n strings of stride bytes from values. */
static bool mongo_append_in(bson_t *b, const char *field, const char *values, size_t stride,
                            size_t n)
{
    bson_t cond, list;
    if (!BSON_APPEND_DOCUMENT_BEGIN(b, field, &cond))
        return false;
    bool ok = BSON_APPEND_ARRAY_BEGIN(&cond, "$in", &list);
    for (size_t i = 0; ok && i < n; i++) {
        char idx[16];
        const char *k;
        bson_uint32_to_string((uint32_t)i, &k, idx, sizeof idx);
        ok = bson_append_utf8(&list, k, -1, values + i * stride, -1);
    }
    ok = ok && bson_append_array_end(&cond, &list);
    return bson_append_document_end(b, &cond) && ok;
}

/* The types q asks for, as a $in of their names; every event when none
 * is asked for (the stubs of purged events have no type). */
static bool mongo_append_types(bson_t *b, unsigned types)
{
    static const enum payment_event_type all[] = {
        PAYMENT_EVENT_CREATED, PAYMENT_EVENT_UPDATED, PAYMENT_EVENT_DELETED};
    char names[3][24];
    size_t n = 0;
    for (size_t i = 0; i < 3; i++)
        if (!types || (types & (unsigned)all[i]))
            snprintf(names[n++], sizeof names[0], "%s", mongo_event_type_name(all[i]));
    return mongo_append_in(b, "type", names[0], sizeof names[0], n);
}

/* The filter of a feed page: positions in (lo, wm], and q's filters. */
static bool mongo_build_feed_filter(bson_t *f, const struct payment_event_query *q, int64_t lo,
                                    int64_t wm)
{
    bson_t pos, at;
    bool ok = BSON_APPEND_DOCUMENT_BEGIN(f, "_id", &pos) && BSON_APPEND_INT64(&pos, "$gt", lo) &&
              BSON_APPEND_INT64(&pos, "$lte", wm) && bson_append_document_end(f, &pos) &&
              (q->all_orgs ||
               mongo_append_in(f, MONGO_F_ORG, q->orgs[0], sizeof q->orgs[0], q->n_orgs)) &&
              mongo_append_types(f, q->types) &&
              (!q->payment_id || BSON_APPEND_UTF8(f, "payment_id", q->payment_id));
    if (ok && (q->from_ms != INT64_MIN || q->to_ms != INT64_MAX)) {
        ok = BSON_APPEND_DOCUMENT_BEGIN(f, "occurred_ms", &at) &&
             (q->from_ms == INT64_MIN || BSON_APPEND_INT64(&at, "$gte", q->from_ms)) &&
             (q->to_ms == INT64_MAX || BSON_APPEND_INT64(&at, "$lt", q->to_ms)) &&
             bson_append_document_end(f, &at);
    }
    return ok;
}

/* Position order, at most limit. */
static bool mongo_build_sorted(bson_t *o, const char *field, int64_t limit)
{
    bson_t sort;
    return BSON_APPEND_DOCUMENT_BEGIN(o, "sort", &sort) && BSON_APPEND_INT32(&sort, field, 1) &&
           bson_append_document_end(o, &sort) && BSON_APPEND_INT64(o, "limit", limit) &&
           BSON_APPEND_INT64(o, "batchSize", limit);
}

/* One feed page of q between lo (exclusive) and wm (inclusive); *n and
 * *last as mongo_events_each sets them. */
static int mongo_feed_page(struct mongo_store *st, mongoc_client_t *client,
                           const struct payment_event_query *q, int64_t lo, int64_t wm,
                           payment_store_event_fn each, void *arg, uint32_t *n, int64_t *last)
{
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
    int err = PAYMENT_STORE_EINTERNAL, more;
    if (mongo_build_feed_filter(&filter, q, lo, wm) &&
        mongo_build_sorted(&opts, "_id", (int64_t)q->limit)) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->events_coll);
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
        err = mongo_events_each(cur, q->limit, each, arg, n, last, &more);
        mongoc_cursor_destroy(cur);
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&filter);
    bson_destroy(&opts);
    return err;
}

int mongo_events(payment_store *s, const struct payment_event_query *q,
                 payment_store_event_fn each, void *arg, int64_t *next_pos)
{
    struct mongo_store *st = (struct mongo_store *)s;
    mongo_seq_flush(st);
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    struct mongo_feed feed;
    if (err == PAYMENT_STORE_OK)
        err = mongo_feed_get(st, client, 0, &feed); /* wm first: see the file's comment */
    if (err == PAYMENT_STORE_OK && q->after_pos > 0 && q->after_pos < feed.floor)
        err = PAYMENT_STORE_EEXPIRED;
    if (err == PAYMENT_STORE_OK) {
        int64_t lo = q->after_pos > feed.floor ? q->after_pos : feed.floor;
        uint32_t n = 0;
        int64_t last = 0;
        if (lo < feed.wm && (q->all_orgs || q->n_orgs > 0))
            err = mongo_feed_page(st, client, q, lo, feed.wm, each, arg, &n, &last);
        if (err == PAYMENT_STORE_OK)
            *next_pos = n == q->limit ? last : feed.wm > q->after_pos ? feed.wm : q->after_pos;
    }
    mongoc_client_pool_push(st->pool, client);
    return err;
}

/* Stamps the events still in payment_id's outbox, so that its history
 * holds every change reported done.  Returns 0 or a store error. */
static int mongo_history_stamp(struct mongo_store *st, mongoc_client_t *client,
                               const char *payment_id)
{
    mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
    bson_t filter = BSON_INITIALIZER, proj = BSON_INITIALIZER, doc;
    int err = BSON_APPEND_UTF8(&filter, "_id", payment_id) &&
                      BSON_APPEND_INT32(&proj, MONGO_F_PEND ".id", 1)
                  ? mongo_find_one(coll, &filter, &proj, 0, &doc)
                  : PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        int pending = mongo_pend_count(&doc);
        bson_destroy(&doc);
        err = pending > 0 ? mongo_seq_stamp_ids(st, client, &payment_id, 1, mongo_wall_us())
                          : PAYMENT_STORE_OK;
    } else if (err == PAYMENT_STORE_ENOTFOUND) {
        err = PAYMENT_STORE_OK; /* no such payment: its history is empty */
    }
    bson_destroy(&filter);
    bson_destroy(&proj);
    mongoc_collection_destroy(coll);
    return err;
}

int mongo_history(payment_store *s, const char *payment_id, int64_t after_version,
                  uint32_t limit, payment_store_event_fn each, void *arg, int *more)
{
    struct mongo_store *st = (struct mongo_store *)s;
    mongo_seq_flush(st); /* this process's writes: fed by its sequencer, in order */
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    if (err == PAYMENT_STORE_OK)
        err = mongo_history_stamp(st, client, payment_id);
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, gt;
    if (err == PAYMENT_STORE_OK &&
        !(BSON_APPEND_UTF8(&filter, "payment_id", payment_id) &&
          BSON_APPEND_DOCUMENT_BEGIN(&filter, "version", &gt) &&
          BSON_APPEND_INT64(&gt, "$gt", after_version) && bson_append_document_end(&filter, &gt) &&
          mongo_build_sorted(&opts, "version", (int64_t)limit + 1)))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->events_coll);
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
        uint32_t n;
        int64_t last;
        err = mongo_events_each(cur, limit, each, arg, &n, &last, more);
        mongoc_cursor_destroy(cur);
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&filter);
    bson_destroy(&opts);
    mongoc_client_pool_push(st->pool, client);
    return err;
}
