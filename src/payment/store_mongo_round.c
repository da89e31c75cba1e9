/* store_mongo_round: one round of moving events from the payments'
 * outboxes into the feed: the steps of store_mongo_events.c's comment
 * (read the outboxes, insert the entries above the highest position, raise
 * the watermark, pull the entries), and why they keep the feed's promise,
 * are there.  Rounds keep no state between them and are safe in any number
 * at once, in any processes: the sequencer thread runs them
 * (store_mongo_sequencer.c), and so does a history read for its payment.
 * A round runs on its caller's thread with its caller's client.
 *
 * The order of a round's entries: each outbox in its own order (its
 * writes', hence its versions'), and across payments by when each write
 * was submitted (made_us; an entry never before the one ahead of it in its
 * outbox).  A round takes only the entries made up to its cutoff: for the
 * sequencer, the moment it took the notes the round is for (a later entry
 * of a noted payment waits for the next round, whose positions are all
 * higher).  So a write made after another one ended, in one process, is
 * fed after it: the first was noted before the second was made, so it is
 * in the same round (ordered by made_us) or an earlier one.  Writes of
 * different processes, or made at the same time, may be fed in either
 * order; a payment's are always in version order.
 *
 * Errors: a round stops at its first error, with what it did so far in
 * place; every step can be taken again by any later round. */

#include <stdlib.h>
#include <string.h>

#include "payment/store_mongo.h"

#define MONGO_ROUND_DOCS 256       /* payments read per query of a round */
#define MONGO_ROUND_ENTRIES 512    /* entries inserted per chunk of a round */
#define MONGO_ROUND_TAKEN_TRIES 64 /* positions found taken in one chunk before giving up */
#define MONGO_ROUND_RAISE_READ 1000 /* positions read per step of a raise */
#define MONGO_ROUND_ADOPTIONS 64   /* rounds of one adoption at most */

/* One outbox entry of a round.  Its pointers point into its payment's
 * document, which the round holds. */
struct mongo_entry {
    const char *payment_id;
    const char *id;         /* the event's id */
    const uint8_t *data;    /* the entry's BSON */
    uint32_t len;
    int64_t key;            /* its place in the round's order (made_us, see above) */
    size_t index;           /* its place in the round's entries: ties */
    int done;               /* in the feed: inserted by this round, or found there */
    int pulled;             /* and pulled from its outbox */
};

/* The payments a round reads and their entries. */
struct mongo_round {
    int64_t cutoff;               /* entries made later wait for another round */
    bson_t **docs;                /* copies of the documents read, owned */
    size_t n_docs;
    struct mongo_entry *entries;  /* by document, each outbox in its order */
    size_t n_entries;
    struct mongo_entry **order;   /* the entries in the order they are fed */
};

static void mongo_round_free(struct mongo_round *r)
{
    for (size_t i = 0; i < r->n_docs; i++)
        bson_destroy(r->docs[i]);
    free(r->docs);
    free(r->entries);
    free(r->order);
    memset(r, 0, sizeof *r);
}

/* ---- step 1: the outboxes ------------------------------------------------------ */

/* Adds doc's outbox entries to r, taking doc; r's entries grow to cap.
 * Returns 0, or -1 out of memory (doc destroyed). */
static int mongo_round_add(struct mongo_round *r, bson_t *doc, size_t cap)
{
    const char *pid = mongo_get_utf8(doc, "_id", NULL);
    bson_iter_t it, list, field;
    bson_t **docs = realloc(r->docs, (r->n_docs + 1) * sizeof *docs);
    struct mongo_entry *entries = docs ? realloc(r->entries, cap * sizeof *entries) : NULL;
    if (docs)
        r->docs = docs;
    if (entries)
        r->entries = entries;
    if (!docs || !entries || r->n_entries + (size_t)mongo_pend_count(doc) > cap) {
        bson_destroy(doc);
        return -1;
    }
    r->docs[r->n_docs++] = doc;
    if (!pid || !bson_iter_init_find(&it, doc, MONGO_F_PEND) || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &list))
        return 0;
    int64_t key = INT64_MIN;
    while (bson_iter_next(&list)) {
        const uint8_t *data;
        uint32_t len;
        bson_t entry;
        if (!BSON_ITER_HOLDS_DOCUMENT(&list))
            continue;
        bson_iter_document(&list, &len, &data);
        if (!bson_init_static(&entry, data, len) || !bson_iter_init_find(&field, &entry, "id") ||
            !BSON_ITER_HOLDS_UTF8(&field))
            continue; /* not an entry this store wrote: left alone */
        struct mongo_entry *e = &r->entries[r->n_entries];
        int64_t made = mongo_get_int64(&entry, "made_us", 0);
        key = made > key ? made : key;
        if (key > r->cutoff)
            break; /* this one and the rest of its outbox: a later round's */
        *e = (struct mongo_entry){.payment_id = pid,
                                  .id = bson_iter_utf8(&field, NULL),
                                  .data = data,
                                  .len = len,
                                  .key = key,
                                  .index = r->n_entries};
        r->n_entries++;
    }
    return 0;
}

static int mongo_entry_cmp(const void *a, const void *b)
{
    const struct mongo_entry *x = *(const struct mongo_entry *const *)a;
    const struct mongo_entry *y = *(const struct mongo_entry *const *)b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Puts r's entries in the order they are fed (see the file's comment).
 * Returns 0, or -1 out of memory. */
static int mongo_round_order(struct mongo_round *r)
{
    r->order = malloc((r->n_entries ? r->n_entries : 1) * sizeof *r->order);
    if (!r->order)
        return -1;
    for (size_t i = 0; i < r->n_entries; i++)
        r->order[i] = &r->entries[i];
    qsort(r->order, r->n_entries, sizeof *r->order, mongo_entry_cmp);
    return 0;
}

/* Reads the payments filter selects that hold entries (their _id and
 * outbox), at most MONGO_ROUND_DOCS, into r, in order.  Returns 0 or a
 * store error; *full when the limit was reached. */
static int mongo_round_read(struct mongo_store *st, mongoc_client_t *client, const bson_t *filter,
                            struct mongo_round *r, int *full)
{
    bson_t opts = BSON_INITIALIZER, proj;
    bool ok = BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj) &&
              BSON_APPEND_INT32(&proj, MONGO_F_PEND, 1) && bson_append_document_end(&opts, &proj) &&
              mongo_append_local(&opts) && BSON_APPEND_INT64(&opts, "limit", MONGO_ROUND_DOCS);
    int err = ok ? PAYMENT_STORE_OK : PAYMENT_STORE_EINTERNAL;
    size_t cap = 0;
    *full = 0;
    if (ok) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, &opts, NULL);
        const bson_t *doc;
        bson_error_t e;
        while (err == PAYMENT_STORE_OK && mongoc_cursor_next(cur, &doc)) {
            cap += (size_t)mongo_pend_count(doc);
            bson_t *copy = bson_copy(doc);
            if (!copy || mongo_round_add(r, copy, cap) != 0)
                err = PAYMENT_STORE_EINTERNAL;
        }
        if (err == PAYMENT_STORE_OK && mongoc_cursor_error(cur, &e))
            err = mongo_map_err(&e);
        *full = r->n_docs >= MONGO_ROUND_DOCS;
        mongoc_cursor_destroy(cur);
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&opts);
    if (err == PAYMENT_STORE_OK && mongo_round_order(r) != 0)
        err = PAYMENT_STORE_EINTERNAL;
    return err;
}

/* ---- step 2: positions ------------------------------------------------------------ */

/* The highest position taken: max(_id) of the feed, on the primary's
 * latest data.  Returns 0 or a store error. */
static int mongo_round_max(mongoc_collection_t *events, int64_t *max)
{
    bson_t filter = BSON_INITIALIZER;
    int err = mongo_find_edge(events, &filter, "_id", 0, 1, max);
    bson_destroy(&filter);
    if (err == PAYMENT_STORE_ENOTFOUND) {
        *max = 0;
        return PAYMENT_STORE_OK;
    }
    return err;
}

/* The event of entry e at position pos, as the feed stores it: _id, then
 * the entry's fields but made_us. */
static bool mongo_build_event(bson_t *b, const struct mongo_entry *e, int64_t pos)
{
    bson_t entry;
    bson_iter_t it;
    if (!bson_init_static(&entry, e->data, e->len) || !BSON_APPEND_INT64(b, "_id", pos) ||
        !bson_iter_init(&it, &entry))
        return false;
    while (bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        if (strcmp(k, "made_us") != 0 && !bson_append_iter(b, k, -1, &it))
            return false;
    }
    return true;
}

/* Whether a write error of the feed's insert names the (payment_id,
 * version) index: the event is in the feed already. */
static int mongo_dup_event(const char *msg)
{
    static const char tag[] = " index: " MONGO_EVENTS_VERSION_INDEX " ";
    const char *at = msg ? strstr(msg, " index: ") : NULL;
    return at && strncmp(at, tag, sizeof tag - 1) == 0;
}

void mongo_reply_write_error(const bson_t *reply, int64_t *code, const char **msg)
{
    bson_iter_t it, list, item;
    *code = 0;
    *msg = NULL;
    if (bson_iter_init_find(&it, reply, "writeErrors") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &list) && bson_iter_next(&list) &&
        BSON_ITER_HOLDS_DOCUMENT(&list) && bson_iter_recurse(&list, &item)) {
        while (bson_iter_next(&item)) {
            if (strcmp(bson_iter_key(&item), "code") == 0)
                *code = bson_iter_as_int64(&item);
            else if (strcmp(bson_iter_key(&item), "errmsg") == 0 && BSON_ITER_HOLDS_UTF8(&item))
                *msg = bson_iter_utf8(&item, NULL);
        }
    }
}

int mongo_reply_wc_failed(const bson_t *reply)
{
    bson_iter_t it, list;
    return bson_iter_init_find(&it, reply, "writeConcernErrors") && BSON_ITER_HOLDS_ARRAY(&it) &&
           bson_iter_recurse(&it, &list) && bson_iter_next(&list);
}

/* From an ordered insert's reply: how many went in (*n), and its write
 * error, if any (*code, and *msg pointing into reply). */
static void mongo_insert_reply(const bson_t *reply, int64_t *n, int64_t *code, const char **msg)
{
    *n = mongo_get_int64(reply, "nInserted", 0);
    mongo_reply_write_error(reply, code, msg);
}

/* Inserts e[0..n) at positions pos, pos + 1, ... in one ordered insert.
 * Sets *inserted (the first ones went in) and *refused: 0 when all went
 * in, 1 when the next one's position was taken, 2 when its event is in the
 * feed already.  Returns 0 or a store error (an outcome unknown included:
 * a later round finds what went in). */
static int mongo_insert_entries(mongoc_collection_t *events, struct mongo_entry *const *e, size_t n,
                                int64_t pos, size_t *inserted, int *refused)
{
    bson_t opts = BSON_INITIALIZER;
    bson_error_t err;
    bool ok = BSON_APPEND_BOOL(&opts, "ordered", true);
    mongoc_bulk_operation_t *bulk =
        ok ? mongoc_collection_create_bulk_operation_with_opts(events, &opts) : NULL;
    for (size_t i = 0; bulk && ok && i < n; i++) {
        bson_t doc = BSON_INITIALIZER;
        ok = mongo_build_event(&doc, e[i], pos + (int64_t)i) &&
             mongoc_bulk_operation_insert_with_opts(bulk, &doc, NULL, &err);
        bson_destroy(&doc);
    }
    *inserted = 0;
    *refused = 0;
    int rc = PAYMENT_STORE_EINTERNAL;
    if (bulk && ok) {
        bson_t reply; /* always initialized by the call */
        if (mongoc_bulk_operation_execute(bulk, &reply, &err)) {
            *inserted = n;
            rc = PAYMENT_STORE_OK;
        } else {
            int64_t done, code;
            const char *msg;
            mongo_insert_reply(&reply, &done, &code, &msg);
            if (code == MONGOC_ERROR_DUPLICATE_KEY && !mongo_reply_wc_failed(&reply) &&
                done >= 0 && (size_t)done < n) {
                *inserted = (size_t)done;
                *refused = mongo_dup_event(msg) ? 2 : 1;
                rc = PAYMENT_STORE_OK;
            } else {
                rc = mongo_map_err(&err);
                rc = rc == PAYMENT_STORE_EUNAVAILABLE ? rc : PAYMENT_STORE_EINTERNAL;
            }
        }
        bson_destroy(&reply);
    }
    mongoc_bulk_operation_destroy(bulk); /* NULL is a no-op */
    bson_destroy(&opts);
    return rc;
}

/* Step 2 for e[0..n), in that order: each inserted above every position
 * taken, or found in the feed already (done).  Stops at an error; entries
 * left undone then make it EUNAVAILABLE (the next ones must wait for
 * them).  Returns 0 or a store error. */
static int mongo_round_insert(mongoc_collection_t *events, struct mongo_entry *const *e, size_t n,
                              int64_t wm)
{
    int64_t max = 0;
    int err = mongo_round_max(events, &max);
    int64_t pos = (max > wm ? max : wm) + 1;
    size_t i = 0;
    for (int taken = 0; err == PAYMENT_STORE_OK && i < n && taken < MONGO_ROUND_TAKEN_TRIES;) {
        size_t inserted;
        int refused;
        err = mongo_insert_entries(events, e + i, n - i, pos, &inserted, &refused);
        for (size_t k = 0; err == PAYMENT_STORE_OK && k < inserted; k++)
            e[i + k]->done = 1;
        i += inserted;
        pos += (int64_t)inserted;
        if (err == PAYMENT_STORE_OK && refused == 2) {
            e[i++]->done = 1; /* stamped before: its position is its own */
        } else if (err == PAYMENT_STORE_OK && refused == 1) {
            taken++; /* by another round: go on above the highest */
            err = mongo_round_max(events, &max);
            pos = max >= pos ? max + 1 : pos + 1;
        }
    }
    return err == PAYMENT_STORE_OK && i < n ? PAYMENT_STORE_EUNAVAILABLE : err;
}

/* ---- step 3: the watermark -------------------------------------------------------- */

/* One step of the walk: reads positions above *end in order, moving *end
 * while they follow it.  *more: a full read without a gap. */
static int mongo_round_walk(mongoc_collection_t *events, int64_t *end, int *more)
{
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, gt, sort, proj;
    bool ok = BSON_APPEND_DOCUMENT_BEGIN(&filter, "_id", &gt) &&
              BSON_APPEND_INT64(&gt, "$gt", *end) && bson_append_document_end(&filter, &gt) &&
              BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort) &&
              BSON_APPEND_INT32(&sort, "_id", 1) && bson_append_document_end(&opts, &sort) &&
              BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj) &&
              BSON_APPEND_INT32(&proj, "_id", 1) && bson_append_document_end(&opts, &proj) &&
              mongo_append_local(&opts) &&
              BSON_APPEND_INT64(&opts, "limit", MONGO_ROUND_RAISE_READ) &&
              BSON_APPEND_INT64(&opts, "batchSize", MONGO_ROUND_RAISE_READ);
    int err = PAYMENT_STORE_EINTERNAL, gap = 0, n = 0;
    if (ok) {
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(events, &filter, &opts, NULL);
        const bson_t *doc;
        bson_error_t e;
        while (!gap && mongoc_cursor_next(cur, &doc)) {
            n++;
            if (mongo_get_int64(doc, "_id", 0) == *end + 1)
                (*end)++;
            else
                gap = 1;
        }
        err = mongoc_cursor_error(cur, &e) ? mongo_map_err(&e) : PAYMENT_STORE_OK;
        mongoc_cursor_destroy(cur);
    }
    bson_destroy(&filter);
    bson_destroy(&opts);
    *more = !gap && n == MONGO_ROUND_RAISE_READ;
    return err;
}

/* Step 3: moves the watermark (*wm, as read) over the filled positions
 * above it, up to the first gap.  Sets *raised when it moved.  Returns 0
 * or a store error. */
int mongo_round_raise(struct mongo_store *st, mongoc_client_t *client, int64_t *wm, int *raised)
{
    mongoc_collection_t *events = mongo_collection(st, client, st->events_coll);
    int64_t end = *wm;
    int more = 1, err = PAYMENT_STORE_OK;
    while (err == PAYMENT_STORE_OK && more)
        err = mongo_round_walk(events, &end, &more);
    mongoc_collection_destroy(events);
    if (err == PAYMENT_STORE_OK && end > *wm) {
        err = mongo_feed_raise(st, client, end, INT64_MIN);
        if (err == PAYMENT_STORE_OK) {
            *wm = end;
            *raised = 1;
        }
    }
    return err;
}

/* ---- step 4: the outboxes emptied ------------------------------------------------ */

/* Appends {_id: pid}, {$pull: {pend: {id: {$in: the ids of entries[0..n)
 * in the feed and not pulled}}}} to bulk; *added when there was one. */
static bool mongo_round_pull_one(mongoc_bulk_operation_t *bulk, const struct mongo_entry *entries,
                                 size_t n, int *added)
{
    bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER, pull, match, in, list;
    bool ok = BSON_APPEND_UTF8(&filter, "_id", entries[0].payment_id) &&
              BSON_APPEND_DOCUMENT_BEGIN(&update, "$pull", &pull) &&
              BSON_APPEND_DOCUMENT_BEGIN(&pull, MONGO_F_PEND, &match) &&
              BSON_APPEND_DOCUMENT_BEGIN(&match, "id", &in) &&
              BSON_APPEND_ARRAY_BEGIN(&in, "$in", &list);
    uint32_t ids = 0;
    for (size_t j = 0; ok && j < n; j++) {
        if (!entries[j].done || entries[j].pulled)
            continue;
        char idx[16];
        const char *k;
        bson_uint32_to_string(ids++, &k, idx, sizeof idx);
        ok = bson_append_utf8(&list, k, -1, entries[j].id, -1);
    }
    ok = ok && bson_append_array_end(&in, &list) && bson_append_document_end(&match, &in) &&
         bson_append_document_end(&pull, &match) && bson_append_document_end(&update, &pull);
    bson_error_t e;
    if (ok && ids > 0) {
        ok = mongoc_bulk_operation_update_one_with_opts(bulk, &filter, &update, NULL, &e);
        *added = 1;
    }
    bson_destroy(&filter);
    bson_destroy(&update);
    return ok;
}

/* Step 4: pulls the entries in the feed from their outboxes, one update
 * per payment in one unordered bulk write.  Returns 0 or a store error. */
static int mongo_round_pull(struct mongo_store *st, mongoc_client_t *client,
                            struct mongo_round *r)
{
    mongoc_collection_t *payments = mongo_collection(st, client, st->coll);
    bson_t opts = BSON_INITIALIZER;
    bool ok = BSON_APPEND_BOOL(&opts, "ordered", false);
    mongoc_bulk_operation_t *bulk =
        ok ? mongoc_collection_create_bulk_operation_with_opts(payments, &opts) : NULL;
    int added = 0;
    for (size_t i = 0, j; bulk && ok && i < r->n_entries; i = j) {
        for (j = i + 1; j < r->n_entries && r->entries[j].payment_id == r->entries[i].payment_id;)
            j++;
        ok = mongo_round_pull_one(bulk, r->entries + i, j - i, &added);
    }
    int err = bulk && ok ? PAYMENT_STORE_OK : PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK && added) {
        bson_t reply; /* always initialized by the call */
        bson_error_t e;
        if (!mongoc_bulk_operation_execute(bulk, &reply, &e))
            err = mongo_map_err(&e);
        bson_destroy(&reply);
    }
    for (size_t i = 0; err == PAYMENT_STORE_OK && i < r->n_entries; i++)
        r->entries[i].pulled = r->entries[i].done;
    mongoc_bulk_operation_destroy(bulk); /* NULL is a no-op */
    bson_destroy(&opts);
    mongoc_collection_destroy(payments);
    return err;
}

/* ---- rounds ------------------------------------------------------------------------- */

/* Steps 2 to 4 for the entries order[from, to), with the test hook's
 * crashes between them.  *raised is set when wm moved.  Returns 0 or a
 * store error. */
static int mongo_round_chunk(struct mongo_store *st, mongoc_client_t *client,
                             struct mongo_round *r, size_t from, size_t to, int *raised)
{
    struct mongo_feed feed;
    int err = mongo_feed_get(st, client, 1, &feed);
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *events = mongo_collection(st, client, st->events_coll);
        err = mongo_round_insert(events, r->order + from, to - from, feed.wm);
        mongoc_collection_destroy(events);
    }
    if (err == PAYMENT_STORE_OK && mongo_seq_crashes(st, MONGO_SEQ_INSERTED))
        err = PAYMENT_STORE_EUNAVAILABLE;
    if (err == PAYMENT_STORE_OK)
        err = mongo_round_raise(st, client, &feed.wm, raised);
    if (err == PAYMENT_STORE_OK && mongo_seq_crashes(st, MONGO_SEQ_RAISED))
        err = PAYMENT_STORE_EUNAVAILABLE;
    if (err == PAYMENT_STORE_OK)
        err = mongo_round_pull(st, client, r);
    return err;
}

/* A round over the payments filter selects, taking their entries made up
 * to cutoff: step 1, then steps 2 to 4 in chunks of MONGO_ROUND_ENTRIES, in
 * order.  Sets *raised when wm moved and *full when more payments may
 * match.  Returns 0 or a store error. */
static int mongo_round_run(struct mongo_store *st, mongoc_client_t *client, const bson_t *filter,
                           int64_t cutoff, int *raised, int *full)
{
    struct mongo_round r = {.cutoff = cutoff};
    *full = 0;
    int err = mongo_seq_crashes(st, MONGO_SEQ_START) ? PAYMENT_STORE_EUNAVAILABLE
                                                     : mongo_round_read(st, client, filter, &r, full);
    for (size_t from = 0; err == PAYMENT_STORE_OK && from < r.n_entries;
         from += MONGO_ROUND_ENTRIES) {
        size_t to = r.n_entries - from > MONGO_ROUND_ENTRIES ? from + MONGO_ROUND_ENTRIES
                                                             : r.n_entries;
        err = mongo_round_chunk(st, client, &r, from, to, raised);
    }
    mongo_round_free(&r);
    return err;
}

/* {_id: {$in: ids}, "pend.0": {$exists: true}}. */
static bool mongo_build_ids_filter(bson_t *f, const char *const *ids, size_t n)
{
    bson_t cond, list, ex;
    bool ok = BSON_APPEND_DOCUMENT_BEGIN(f, "_id", &cond) &&
              BSON_APPEND_ARRAY_BEGIN(&cond, "$in", &list);
    for (size_t i = 0; ok && i < n; i++) {
        char idx[16];
        const char *k;
        bson_uint32_to_string((uint32_t)i, &k, idx, sizeof idx);
        ok = bson_append_utf8(&list, k, -1, ids[i], -1);
    }
    return ok && bson_append_array_end(&cond, &list) && bson_append_document_end(f, &cond) &&
           BSON_APPEND_DOCUMENT_BEGIN(f, MONGO_F_PEND ".0", &ex) &&
           BSON_APPEND_BOOL(&ex, "$exists", true) && bson_append_document_end(f, &ex);
}

/* Rounds over the outboxes of payments ids[0..n), taking the entries made
 * up to cutoff (µs, wall clock).  Sets *raised when wm moved.  Returns 0
 * or a store error. */
int mongo_round_ids(struct mongo_store *st, mongoc_client_t *client, const char *const *ids,
                    size_t n, int64_t cutoff, int *raised)
{
    int err = PAYMENT_STORE_OK;
    for (size_t from = 0; err == PAYMENT_STORE_OK && from < n; from += MONGO_ROUND_DOCS) {
        size_t m = n - from < MONGO_ROUND_DOCS ? n - from : MONGO_ROUND_DOCS;
        bson_t filter = BSON_INITIALIZER;
        int full;
        err = mongo_build_ids_filter(&filter, ids + from, m)
                  ? mongo_round_run(st, client, &filter, cutoff, raised, &full)
                  : PAYMENT_STORE_EINTERNAL;
        bson_destroy(&filter);
    }
    return err;
}

/* Rounds over the entries made before before_us (the payments holding
 * one, and their entries made up to then), until none is left.  Sets
 * *raised when wm moved.  Returns 0 or a store error. */
int mongo_round_adopt(struct mongo_store *st, mongoc_client_t *client, int64_t before_us,
                      int *raised)
{
    int err = PAYMENT_STORE_OK, full = 1;
    for (int rounds = 0; err == PAYMENT_STORE_OK && full && rounds < MONGO_ROUND_ADOPTIONS;
         rounds++) {
        bson_t filter = BSON_INITIALIZER, cond;
        bool ok = BSON_APPEND_DOCUMENT_BEGIN(&filter, MONGO_F_PEND ".made_us", &cond) &&
                  BSON_APPEND_BOOL(&cond, "$exists", true) &&
                  BSON_APPEND_INT64(&cond, "$lte", before_us) &&
                  bson_append_document_end(&filter, &cond);
        err = ok ? mongo_round_run(st, client, &filter, before_us, raised, &full)
                 : PAYMENT_STORE_EINTERNAL;
        bson_destroy(&filter);
    }
    return err;
}
