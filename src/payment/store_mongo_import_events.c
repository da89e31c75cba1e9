/* store_mongo_import_events: the events of a copy's page placed in the
 * MongoDB store's feed (payment_store_import's last part; the rest is
 * store_mongo_import.c), on the calling thread with the import's client.
 *
 * The events are inserted into <collection>_events as a sequencer round
 * inserts outbox entries (store_mongo_round.c; store_mongo_events.c says
 * why the feed's promise then holds, unchanged for them): in the page's
 * order at the positions after the highest one taken, in one ordered
 * insert; a position found taken (by a sequencer of the store) is passed by
 * reading the highest again, an event whose (payment_id, version) is there
 * already (the unique index) is skipped as present; then the watermark is
 * moved over the positions filled.  One read first finds the page's events
 * the target holds, so that a page imported again costs that read alone.
 * An ordered insert stops at its first failure: an interruption leaves a
 * prefix of the page's events, above which the same page imported again
 * places the rest. */

#include <stdlib.h>
#include <string.h>

#include "payment/store_mongo.h"

#define MONGO_IMPORT_TAKEN_TRIES 64 /* positions found taken per page before giving up */

/* Which of the page's events the target holds, by (payment_id, version). */
struct mongo_ev_present {
    const struct payment_event *events;
    size_t n;
    bool *present;
};

static int mongo_mark_event(const bson_t *doc, void *arg)
{
    struct mongo_ev_present *p = arg;
    const char *pid = mongo_get_utf8(doc, "payment_id", NULL);
    int64_t version = mongo_get_int64(doc, "version", -1);
    for (size_t i = 0; pid && i < p->n; i++)
        if (p->events[i].version == version && strcmp(p->events[i].payment_id, pid) == 0)
            p->present[i] = true;
    return PAYMENT_STORE_OK;
}

/* {$or: [{payment_id, version}, ...]} of the page's events. */
static bool mongo_build_events_held(bson_t *f, const struct payment_event *ev, size_t n)
{
    bson_t list, one;
    if (!BSON_APPEND_ARRAY_BEGIN(f, "$or", &list))
        return false;
    bool ok = true;
    for (size_t i = 0; ok && i < n; i++) {
        char idx[16];
        const char *k;
        bson_uint32_to_string((uint32_t)i, &k, idx, sizeof idx);
        ok = bson_append_document_begin(&list, k, -1, &one);
        if (!ok)
            break;
        ok = BSON_APPEND_UTF8(&one, "payment_id", ev[i].payment_id) &&
             BSON_APPEND_INT64(&one, "version", ev[i].version);
        ok = bson_append_document_end(&list, &one) && ok;
    }
    return bson_append_array_end(f, &list) && ok;
}

static int mongo_events_present(mongoc_collection_t *events, const struct payment_event *ev,
                                size_t n, bool *present)
{
    struct mongo_ev_present p = {ev, n, present};
    bson_t filter = BSON_INITIALIZER, proj = BSON_INITIALIZER;
    int err = mongo_build_events_held(&filter, ev, n) &&
                      BSON_APPEND_INT32(&proj, "payment_id", 1) &&
                      BSON_APPEND_INT32(&proj, "version", 1)
                  ? mongo_import_find(events, &filter, &proj, mongo_mark_event, &p)
                  : PAYMENT_STORE_EINTERNAL;
    bson_destroy(&filter);
    bson_destroy(&proj);
    return err;
}

/* The outbox entry of ev (store_mongo_events.c's fields), from which the
 * stored event is built with its position. */
static bool mongo_build_entry(bson_t *b, const struct payment_event *ev)
{
    struct mongo_event e = {
        .type = ev->type,
        .organisation_id = ev->organisation_id,
        .payment_id = ev->payment_id,
        .version = ev->version,
        .occurred_ms = ev->occurred_ms,
        .api_key_id = ev->api_key_id,
        .request_id = ev->request_id,
        .idempotency_key = ev->idempotency_key,
        .operation_id = ev->operation_id,
        .changes = ev->changes,
        .doc = ev->doc,
        .doc_len = ev->doc_len,
    };
    memcpy(e.id, ev->id, sizeof e.id);
    return mongo_append_event(b, "e", &e);
}

/* The event of entry (a document {e: entry}) at position pos: _id, then
 * the entry's fields but made_us, as a round stores it. */
static bool mongo_build_stored(bson_t *b, const bson_t *entry, int64_t pos)
{
    bson_iter_t it, fields;
    if (!BSON_APPEND_INT64(b, "_id", pos) || !bson_iter_init_find(&it, entry, "e") ||
        !bson_iter_recurse(&it, &fields))
        return false;
    while (bson_iter_next(&fields)) {
        const char *k = bson_iter_key(&fields);
        if (strcmp(k, "made_us") != 0 && !bson_append_iter(b, k, -1, &fields))
            return false;
    }
    return true;
}

/* The highest position taken (0 for none), on the primary's latest data. */
static int mongo_import_max(mongoc_collection_t *events, int64_t *max)
{
    bson_t filter = BSON_INITIALIZER;
    int err = mongo_find_edge(events, &filter, "_id", 0, 1, max);
    bson_destroy(&filter);
    if (err == PAYMENT_STORE_ENOTFOUND) {
        *max = 0;
        err = PAYMENT_STORE_OK;
    }
    return err;
}

/* Inserts the entries[0..n) at the positions pos, pos + 1, ... in one
 * ordered insert (mongo_import_insert's results). */
static int mongo_import_at(mongoc_collection_t *events, const bson_t *entries, size_t n,
                           int64_t pos, size_t *inserted, enum mongo_refusal *refused)
{
    struct mongo_docs d = {0};
    int err = mongo_docs_new(&d, n) == 0 ? PAYMENT_STORE_OK : PAYMENT_STORE_EINTERNAL;
    for (size_t i = 0; err == PAYMENT_STORE_OK && i < n; i++)
        if (!mongo_build_stored(mongo_docs_next(&d), &entries[i], pos + (int64_t)i))
            err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK)
        err = mongo_import_insert(events, d.doc, n, inserted, refused);
    mongo_docs_free(&d);
    return err;
}

/* Inserts entries[0..n) in order above every position taken (a round's
 * step 2): a taken position passed, a present event skipped.  Returns 0,
 * EUNAVAILABLE when positions stayed taken, or a store error. */
static int mongo_import_place(mongoc_collection_t *events, const bson_t *entries, size_t n,
                              int64_t wm, size_t *added)
{
    int64_t max = 0;
    int err = mongo_import_max(events, &max);
    int64_t pos = (max > wm ? max : wm) + 1;
    size_t i = 0;
    for (int taken = 0; err == PAYMENT_STORE_OK && i < n && taken < MONGO_IMPORT_TAKEN_TRIES;) {
        size_t inserted;
        enum mongo_refusal refused;
        err = mongo_import_at(events, entries + i, n - i, pos, &inserted, &refused);
        i += inserted;
        pos += (int64_t)inserted;
        *added += inserted;
        if (err == PAYMENT_STORE_OK && refused == MONGO_REFUSED_INDEX) {
            i++; /* its (payment_id, version) is there: present */
        } else if (err == PAYMENT_STORE_OK && refused == MONGO_REFUSED_ID) {
            taken++; /* by a sequencer: go on above the highest */
            err = mongo_import_max(events, &max);
            pos = max >= pos ? max + 1 : pos + 1;
        }
    }
    return err == PAYMENT_STORE_OK && i < n ? PAYMENT_STORE_EUNAVAILABLE : err;
}

/* The events of im the target lacks, placed in the feed in order, then the
 * watermark moved over them. */
int mongo_import_events(struct mongo_store *st, mongoc_client_t *client,
                               const struct payment_import *im, size_t *added)
{
    size_t n = im->n_events;
    bool *present = calloc(n, sizeof *present);
    struct mongo_docs d = {0};
    mongoc_collection_t *events = mongo_collection(st, client, st->events_coll);
    int err = present && mongo_docs_new(&d, n) == 0 ? PAYMENT_STORE_OK : PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK)
        err = mongo_events_present(events, im->events, n, present);
    for (size_t i = 0; err == PAYMENT_STORE_OK && i < n; i++)
        if (!present[i] && !mongo_build_entry(mongo_docs_next(&d), &im->events[i]))
            err = PAYMENT_STORE_EINTERNAL;
    struct mongo_feed feed;
    int raised = 0;
    if (err == PAYMENT_STORE_OK && d.n > 0) {
        err = mongo_feed_get(st, client, 1, &feed);
        if (err == PAYMENT_STORE_OK)
            err = mongo_import_place(events, d.doc, d.n, feed.wm, added);
        if (err == PAYMENT_STORE_OK)
            err = mongo_round_raise(st, client, &feed.wm, &raised);
    }
    if (raised)
        mongo_seq_notify(st);
    mongoc_collection_destroy(events);
    mongo_docs_free(&d);
    free(present);
    return err;
}
