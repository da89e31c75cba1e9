/* store_mongo_sequencer: the thread that moves events from the payments'
 * outboxes into the feed, in rounds (the steps, and why they keep the
 * feed's promise, are store_mongo_events.c's comment), and the rounds
 * themselves, which a history read also runs for one payment.
 *
 * Threads: one sequencer thread per store, started at open and stopped at
 * close.  Writers note the payments they wrote (mongo_seq_note, from the
 * store's worker threads) and wake it; it runs a round over those, and
 * every MONGO_SEQ_POLL_MS reads the watermark (calling the subscriber when
 * another process moved it), and every MONGO_SEQ_ADOPT_MS adopts outbox
 * entries older than that (another process's its own sequencer has not
 * taken, or left by a crash) and moves the watermark over positions a
 * crash left filled.  It takes a client from the pool per round, with the
 * store's timeouts, and never holds a lock while it talks to MongoDB: it
 * blocks no writer and no reader.  A feed read waits for the round over
 * the writes noted before it (mongo_seq_flush), at most the store's
 * selection timeout.  Close lets the thread run one last round over what
 * was noted, then joins it.
 *
 * Errors: a round that fails leaves the entries where they are (nothing a
 * round does is lost by stopping halfway); they are taken again by a later
 * note or adoption. */

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/sync.h"
#include "payment/store_mongo.h"

#define MONGO_SEQ_NOTED_MAX 1024   /* payments noted between rounds; more: adopt all */
#define MONGO_SEQ_DOCS 256         /* payments read per query of a round */
#define MONGO_SEQ_ENTRIES 512      /* entries inserted per chunk of a round */
#define MONGO_SEQ_POLL_MS 150      /* the watermark is read this often */
#define MONGO_SEQ_ADOPT_MS 1000    /* entries this old are anyone's; looked for this often */
#define MONGO_SEQ_TAKEN_TRIES 64   /* positions found taken in one chunk before giving up */
#define MONGO_SEQ_RAISE_READ 1000  /* positions read per step of a raise */

struct mongo_seq {
    struct mongo_store *st;           /* the store it serves */
    pthread_mutex_t mu;               /* guards every field below */
    pthread_cond_t wake;              /* the thread: work noted, or closing */
    pthread_cond_t flushed;           /* readers in mongo_seq_flush: a round ended */
    pthread_t thread;
    int started;                      /* thread is running, to join */
    int closing;                      /* the store is closing: last round, then exit */
    char ids[MONGO_SEQ_NOTED_MAX][UUID_STR_LEN + 1]; /* payments written since the last round */
    size_t n_ids;
    int overflow;                     /* more were noted than ids holds */
    uint64_t noted;                   /* notes made */
    uint64_t done;                    /* notes whose round has run */
    void (*fn)(void *arg);            /* the subscriber, or NULL */
    void *fn_arg;
    mongo_seq_hook_fn hook;           /* tests: a crash between steps, or NULL */
    void *hook_arg;
    int64_t wm;                       /* the watermark as this thread last saw it */
};

/* ---- a round -------------------------------------------------------------- */

/* One outbox entry of a round.  Its pointers point into its payment's
 * document, which the round holds. */
struct mongo_entry {
    const char *payment_id;
    const char *id;         /* the event's id */
    const uint8_t *data;    /* the entry's BSON */
    uint32_t len;
    int64_t occurred_ms;
    int done;               /* in the feed: inserted by this round, or found there */
};

/* The payments a round reads and their entries. */
struct mongo_round {
    bson_t **docs;                /* copies of the documents read, owned */
    size_t n_docs;
    struct mongo_entry *entries;  /* in document order, each outbox in its order */
    size_t n_entries;
};

static void mongo_round_free(struct mongo_round *r)
{
    for (size_t i = 0; i < r->n_docs; i++)
        bson_destroy(r->docs[i]);
    free(r->docs);
    free(r->entries);
    memset(r, 0, sizeof *r);
}

/* Adds doc's outbox entries to r, taking doc.  Returns 0, or -1 out of
 * memory (doc destroyed). */
static int mongo_round_add(struct mongo_round *r, bson_t *doc, size_t cap)
{
    const char *pid = mongo_get_utf8(doc, "_id", NULL);
    bson_iter_t it, list, field;
    size_t n = (size_t)mongo_pend_count(doc);
    bson_t **docs = realloc(r->docs, (r->n_docs + 1) * sizeof *docs);
    struct mongo_entry *entries = docs ? realloc(r->entries, cap * sizeof *entries) : NULL;
    if (docs)
        r->docs = docs;
    if (!docs || !entries || r->n_entries + n > cap) {
        bson_destroy(doc);
        return -1;
    }
    r->entries = entries;
    r->docs[r->n_docs++] = doc;
    if (!pid || !bson_iter_init_find(&it, doc, MONGO_F_PEND) || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &list))
        return 0;
    while (bson_iter_next(&list)) {
        const uint8_t *data;
        uint32_t len;
        if (!BSON_ITER_HOLDS_DOCUMENT(&list))
            continue;
        bson_iter_document(&list, &len, &data);
        bson_t entry;
        struct mongo_entry *e = &r->entries[r->n_entries];
        if (!bson_init_static(&entry, data, len) || !bson_iter_init_find(&field, &entry, "id") ||
            !BSON_ITER_HOLDS_UTF8(&field))
            continue; /* not an entry this store wrote: left alone */
        e->id = bson_iter_utf8(&field, NULL);
        e->payment_id = pid;
        e->data = data;
        e->len = len;
        e->occurred_ms = mongo_get_int64(&entry, "occurred_ms", 0);
        e->done = 0;
        r->n_entries++;
    }
    return 0;
}

/* The highest position taken: max(_id) of the feed.  Returns 0 or a store
 * error. */
static int mongo_seq_max(mongoc_collection_t *events, int64_t *max)
{
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort, proj;
    bool ok = BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort) &&
              BSON_APPEND_INT32(&sort, "_id", -1) && bson_append_document_end(&opts, &sort) &&
              BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj) &&
              BSON_APPEND_INT32(&proj, "_id", 1) && bson_append_document_end(&opts, &proj) &&
              mongo_append_local(&opts) && BSON_APPEND_INT64(&opts, "limit", 1) &&
              BSON_APPEND_BOOL(&opts, "singleBatch", true);
    int err = PAYMENT_STORE_EINTERNAL;
    if (ok) {
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(events, &filter, &opts, NULL);
        const bson_t *doc;
        bson_error_t e;
        *max = 0;
        if (mongoc_cursor_next(cur, &doc))
            *max = mongo_get_int64(doc, "_id", 0);
        err = mongoc_cursor_error(cur, &e) ? mongo_map_err(&e) : PAYMENT_STORE_OK;
        mongoc_cursor_destroy(cur);
    }
    bson_destroy(&filter);
    bson_destroy(&opts);
    return err;
}

/* The event of entry at position pos, as the feed stores it: the entry's
 * fields but queued_ms, after _id. */
static bool mongo_build_event(bson_t *b, const struct mongo_entry *e, int64_t pos)
{
    bson_t entry;
    bson_iter_t it;
    if (!bson_init_static(&entry, e->data, e->len) || !BSON_APPEND_INT64(b, "_id", pos) ||
        !bson_iter_init(&it, &entry))
        return false;
    while (bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        if (strcmp(k, "queued_ms") != 0 && !bson_append_iter(b, k, -1, &it))
            return false;
    }
    return true;
}

/* Whether a write error of the feed's insert is a duplicate event: the
 * (payment_id, version) index's, not a position's. */
static int mongo_dup_event(const char *msg)
{
    static const char tag[] = " index: " MONGO_EVENTS_VERSION_INDEX " ";
    const char *at = msg ? strstr(msg, " index: ") : NULL;
    return at && strncmp(at, tag, sizeof tag - 1) == 0;
}

/* Reads an ordered insert's reply: how many were inserted (*n) and its
 * write error, if any (*code, *msg into reply). */
static void mongo_insert_reply(const bson_t *reply, int64_t *n, int64_t *code, const char **msg)
{
    bson_iter_t it, list, item;
    *n = mongo_get_int64(reply, "nInserted", 0);
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

/* Inserts entries e[0..n) at positions from *pos in one ordered insert.
 * Sets *inserted (the first ones, now at *pos..) and *refused: 0 when all
 * went in, 1 for a position taken, 2 for an event in the feed already (the
 * one after the inserted ones).  Returns 0 or a store error (an unknown
 * outcome included: a later round finds what went in). */
static int mongo_insert_entries(mongoc_collection_t *events, struct mongo_entry *e, size_t n,
                                int64_t pos, size_t *inserted, int *refused)
{
    bson_t opts = BSON_INITIALIZER;
    bson_error_t err;
    bool ok = BSON_APPEND_BOOL(&opts, "ordered", true);
    mongoc_bulk_operation_t *bulk =
        ok ? mongoc_collection_create_bulk_operation_with_opts(events, &opts) : NULL;
    for (size_t i = 0; bulk && ok && i < n; i++) {
        bson_t doc = BSON_INITIALIZER;
        ok = mongo_build_event(&doc, &e[i], pos + (int64_t)i) &&
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
            bson_iter_t it;
            bson_iter_t list;
            int wc_failed = bson_iter_init_find(&it, &reply, "writeConcernErrors") &&
                            BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &list) &&
                            bson_iter_next(&list);
            if (code == MONGOC_ERROR_DUPLICATE_KEY && !wc_failed && done >= 0 &&
                (size_t)done < n) {
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

/* Step 2 for entries e[0..n): each in the feed at the end, inserted above
 * every position taken or found there already (done), in order; stops at
 * an error, leaving the rest.  Returns 0 or a store error. */
static int mongo_seq_insert(mongoc_collection_t *events, struct mongo_entry *e, size_t n,
                            int64_t wm)
{
    int64_t max = 0;
    int err = mongo_seq_max(events, &max);
    int64_t pos = (max > wm ? max : wm) + 1;
    size_t i = 0;
    for (int taken = 0; err == PAYMENT_STORE_OK && i < n && taken < MONGO_SEQ_TAKEN_TRIES;) {
        size_t inserted;
        int refused;
        err = mongo_insert_entries(events, e + i, n - i, pos, &inserted, &refused);
        if (err != PAYMENT_STORE_OK)
            break;
        for (size_t k = 0; k < inserted; k++)
            e[i + k].done = 1;
        i += inserted;
        pos += (int64_t)inserted;
        if (refused == 2) {
            e[i++].done = 1; /* stamped before: its position is its own */
        } else if (refused == 1) {
            taken++; /* another sequencer's: go on above the highest */
            err = mongo_seq_max(events, &max);
            if (max >= pos)
                pos = max + 1;
            else
                pos++;
        }
    }
    return err;
}

/* Step 3: the end of the run of filled positions from wm + 1, read in
 * order (local: what the inserts just made), into *end (wm when none).
 * Returns 0 or a store error. */
static int mongo_seq_run_end(mongoc_collection_t *events, int64_t wm, int64_t *end)
{
    *end = wm;
    for (;;) {
        bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, gt, sort, proj;
        bool ok = BSON_APPEND_DOCUMENT_BEGIN(&filter, "_id", &gt) &&
                  BSON_APPEND_INT64(&gt, "$gt", *end) && bson_append_document_end(&filter, &gt) &&
                  BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort) &&
                  BSON_APPEND_INT32(&sort, "_id", 1) && bson_append_document_end(&opts, &sort) &&
                  BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj) &&
                  BSON_APPEND_INT32(&proj, "_id", 1) && bson_append_document_end(&opts, &proj) &&
                  mongo_append_local(&opts) &&
                  BSON_APPEND_INT64(&opts, "limit", MONGO_SEQ_RAISE_READ) &&
                  BSON_APPEND_INT64(&opts, "batchSize", MONGO_SEQ_RAISE_READ);
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
        if (err != PAYMENT_STORE_OK || gap || n < MONGO_SEQ_RAISE_READ)
            return err;
    }
}

/* Step 3: moves wm (*wm, as read) over the filled positions above it.
 * Sets *raised when it moved.  Returns 0 or a store error. */
static int mongo_seq_raise(struct mongo_store *st, mongoc_client_t *client,
                           mongoc_collection_t *events, int64_t *wm, int *raised)
{
    int64_t end;
    int err = mongo_seq_run_end(events, *wm, &end);
    if (err == PAYMENT_STORE_OK && end > *wm) {
        err = mongo_feed_raise(st, client, end, INT64_MIN, INT64_MIN);
        if (err == PAYMENT_STORE_OK) {
            *wm = end;
            *raised = 1;
        }
    }
    return err;
}

/* Step 4: pulls the entries in the feed from their outboxes, one update per
 * payment in one unordered bulk write.  Returns 0 or a store error. */
static int mongo_seq_pull(mongoc_collection_t *payments, const struct mongo_round *r,
                          size_t from, size_t to)
{
    bson_t opts = BSON_INITIALIZER;
    bool ok = BSON_APPEND_BOOL(&opts, "ordered", false);
    mongoc_bulk_operation_t *bulk =
        ok ? mongoc_collection_create_bulk_operation_with_opts(payments, &opts) : NULL;
    size_t updates = 0;
    for (size_t i = from; bulk && ok && i < to;) {
        const char *pid = r->entries[i].payment_id;
        size_t j = i, n = 0;
        bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER, pull, match, in, list;
        ok = BSON_APPEND_UTF8(&filter, "_id", pid) &&
             BSON_APPEND_DOCUMENT_BEGIN(&update, "$pull", &pull) &&
             BSON_APPEND_DOCUMENT_BEGIN(&pull, MONGO_F_PEND, &match) &&
             BSON_APPEND_DOCUMENT_BEGIN(&match, "id", &in) &&
             BSON_APPEND_ARRAY_BEGIN(&in, "$in", &list);
        for (; ok && j < to && r->entries[j].payment_id == pid; j++) {
            if (!r->entries[j].done)
                continue;
            char idx[16];
            const char *k;
            bson_uint32_to_string((uint32_t)n++, &k, idx, sizeof idx);
            ok = bson_append_utf8(&list, k, -1, r->entries[j].id, -1);
        }
        ok = ok && bson_append_array_end(&in, &list) && bson_append_document_end(&match, &in) &&
             bson_append_document_end(&pull, &match) && bson_append_document_end(&update, &pull);
        bson_error_t e;
        if (ok && n > 0) {
            ok = mongoc_bulk_operation_update_one_with_opts(bulk, &filter, &update, NULL, &e);
            updates++;
        }
        bson_destroy(&filter);
        bson_destroy(&update);
        i = j;
    }
    int err = bulk && ok ? PAYMENT_STORE_OK : PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK && updates > 0) {
        bson_t reply; /* always initialized by the call */
        bson_error_t e;
        if (!mongoc_bulk_operation_execute(bulk, &reply, &e))
            err = mongo_map_err(&e);
        bson_destroy(&reply);
    }
    mongoc_bulk_operation_destroy(bulk); /* NULL is a no-op */
    bson_destroy(&opts);
    return err;
}

/* Whether the test hook stops the round at stage (a crash there). */
static int mongo_seq_crashes(struct mongo_store *st, enum mongo_seq_stage stage)
{
    struct mongo_seq *q = st->seq;
    sync_lock(&q->mu);
    mongo_seq_hook_fn hook = q->hook;
    void *arg = q->hook_arg;
    sync_unlock(&q->mu);
    return hook && hook(arg, stage);
}

/* Step 2 for r's entries [from, to): those older than the histories'
 * retention (feed.history_before) are not inserted, their history being
 * gone: only pulled.  Returns 0 or a store error. */
static int mongo_seq_chunk_insert(struct mongo_store *st, mongoc_collection_t *events,
                                  struct mongo_round *r, size_t from, size_t to,
                                  const struct mongo_feed *feed)
{
    struct mongo_entry *live = malloc((to - from) * sizeof *live);
    if (!live)
        return PAYMENT_STORE_EINTERNAL;
    size_t n = 0;
    for (size_t i = from; i < to; i++) {
        if (r->entries[i].occurred_ms < feed->history_before)
            r->entries[i].done = 1;
        else
            live[n++] = r->entries[i];
    }
    int err = mongo_seq_crashes(st, MONGO_SEQ_READ) ? PAYMENT_STORE_EUNAVAILABLE
                                                    : mongo_seq_insert(events, live, n, feed->wm);
    for (size_t i = from, k = 0; i < to && k < n; i++)
        if (live[k].id == r->entries[i].id)
            r->entries[i].done = live[k++].done;
    free(live);
    return err;
}

/* Steps 2 to 4 for r's entries [from, to), whole outboxes: insert, raise,
 * pull.  *raised is set when wm moved.  Returns 0 or a store error. */
static int mongo_seq_chunk(struct mongo_store *st, mongoc_client_t *client,
                           struct mongo_round *r, size_t from, size_t to, int *raised)
{
    struct mongo_feed feed;
    int err = mongo_feed_get(st, client, 1, &feed);
    if (err != PAYMENT_STORE_OK)
        return err;
    mongoc_collection_t *events = mongo_collection(st, client, st->events_coll);
    err = mongo_seq_chunk_insert(st, events, r, from, to, &feed);
    if (err == PAYMENT_STORE_OK && mongo_seq_crashes(st, MONGO_SEQ_INSERTED))
        err = PAYMENT_STORE_EUNAVAILABLE;
    if (err == PAYMENT_STORE_OK)
        err = mongo_seq_raise(st, client, events, &feed.wm, raised);
    if (err == PAYMENT_STORE_OK && mongo_seq_crashes(st, MONGO_SEQ_RAISED))
        err = PAYMENT_STORE_EUNAVAILABLE;
    mongoc_collection_destroy(events);
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *payments = mongo_collection(st, client, st->coll);
        err = mongo_seq_pull(payments, r, from, to);
        mongoc_collection_destroy(payments);
    }
    return err;
}

/* Step 1: reads the payments filter selects that hold entries (their _id
 * and outbox), at most MONGO_SEQ_DOCS, into r.  Returns 0 or a store
 * error; *full when the limit was reached. */
static int mongo_seq_read(struct mongo_store *st, mongoc_client_t *client, const bson_t *filter,
                          struct mongo_round *r, int *full)
{
    bson_t opts = BSON_INITIALIZER, proj;
    bool ok = BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj) &&
              BSON_APPEND_INT32(&proj, MONGO_F_PEND, 1) && bson_append_document_end(&opts, &proj) &&
              mongo_append_local(&opts) && BSON_APPEND_INT64(&opts, "limit", MONGO_SEQ_DOCS);
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
            if (mongo_round_add(r, bson_copy(doc), cap) != 0)
                err = PAYMENT_STORE_EINTERNAL;
        }
        if (err == PAYMENT_STORE_OK && mongoc_cursor_error(cur, &e))
            err = mongo_map_err(&e);
        *full = r->n_docs >= MONGO_SEQ_DOCS;
        mongoc_cursor_destroy(cur);
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&opts);
    return err;
}

/* A round over the payments filter selects: read, then steps 2 to 4 in
 * chunks of whole outboxes of about MONGO_SEQ_ENTRIES entries.  Sets
 * *raised when wm moved and *full when more payments may match.  Returns 0
 * or a store error. */
static int mongo_seq_round(struct mongo_store *st, mongoc_client_t *client, const bson_t *filter,
                           int *raised, int *full)
{
    struct mongo_round r = {0};
    int err = mongo_seq_read(st, client, filter, &r, full);
    for (size_t from = 0; err == PAYMENT_STORE_OK && from < r.n_entries;) {
        size_t to = from + 1;
        while (to < r.n_entries && (to - from < MONGO_SEQ_ENTRIES ||
                                    r.entries[to].payment_id == r.entries[to - 1].payment_id))
            to++;
        err = mongo_seq_chunk(st, client, &r, from, to, raised);
        from = to;
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

/* Runs rounds over the outboxes of payments ids[0..n), for the sequencer
 * and for histories.  Returns 0 or a store error. */
int mongo_seq_stamp_ids(struct mongo_store *st, mongoc_client_t *client, const char *const *ids,
                        size_t n)
{
    int err = PAYMENT_STORE_OK, raised = 0;
    for (size_t from = 0; err == PAYMENT_STORE_OK && from < n; from += MONGO_SEQ_DOCS) {
        size_t m = n - from < MONGO_SEQ_DOCS ? n - from : MONGO_SEQ_DOCS;
        bson_t filter = BSON_INITIALIZER;
        int full;
        err = mongo_build_ids_filter(&filter, ids + from, m)
                  ? mongo_seq_round(st, client, &filter, &raised, &full)
                  : PAYMENT_STORE_EINTERNAL;
        bson_destroy(&filter);
    }
    if (raised)
        mongo_seq_notify(st);
    return err;
}

/* Adopts the entries queued before before_ms (INT64_MAX: every one), in
 * rounds until none is left.  Sets *raised when wm moved.  Returns 0 or a
 * store error. */
static int mongo_seq_adopt(struct mongo_store *st, mongoc_client_t *client, int64_t before_ms,
                           int *raised)
{
    int err = PAYMENT_STORE_OK, full = 1;
    for (int rounds = 0; err == PAYMENT_STORE_OK && full && rounds < 64; rounds++) {
        bson_t filter = BSON_INITIALIZER, cond;
        bool ok = BSON_APPEND_DOCUMENT_BEGIN(&filter, MONGO_F_PEND ".queued_ms", &cond) &&
                  BSON_APPEND_BOOL(&cond, "$exists", true) &&
                  (before_ms == INT64_MAX || BSON_APPEND_INT64(&cond, "$lt", before_ms)) &&
                  bson_append_document_end(&filter, &cond);
        err = ok ? mongo_seq_round(st, client, &filter, raised, &full) : PAYMENT_STORE_EINTERNAL;
        bson_destroy(&filter);
    }
    return err;
}

/* ---- the thread ------------------------------------------------------------ */

/* Calls the subscriber, if any. */
void mongo_seq_notify(struct mongo_store *st)
{
    struct mongo_seq *q = st->seq;
    sync_lock(&q->mu);
    void (*fn)(void *) = q->fn;
    void *arg = q->fn_arg;
    sync_unlock(&q->mu);
    if (fn)
        fn(arg);
}

/* The poll: the watermark read (the subscriber called when it moved), and
 * when adopt is set, old entries adopted and wm moved over what a crash
 * left filled. */
static void mongo_seq_poll(struct mongo_store *st, mongoc_client_t *client, int adopt)
{
    struct mongo_feed feed;
    int raised = 0;
    int err = mongo_feed_get(st, client, 1, &feed);
    if (err == PAYMENT_STORE_OK && adopt) {
        err = mongo_seq_adopt(st, client, clock_now_ms() - MONGO_SEQ_ADOPT_MS, &raised);
        mongoc_collection_t *events = mongo_collection(st, client, st->events_coll);
        if (err == PAYMENT_STORE_OK)
            (void)mongo_seq_raise(st, client, events, &feed.wm, &raised);
        mongoc_collection_destroy(events);
    }
    struct mongo_seq *q = st->seq;
    sync_lock(&q->mu);
    raised |= err == PAYMENT_STORE_OK && feed.wm > q->wm;
    if (err == PAYMENT_STORE_OK && feed.wm > q->wm)
        q->wm = feed.wm;
    sync_unlock(&q->mu);
    if (raised)
        mongo_seq_notify(st);
}

/* A deadline ms from now on the monotonic clock of the condition. */
static struct timespec mongo_deadline(int64_t ms)
{
    struct timespec t;
    if (clock_gettime(CLOCK_MONOTONIC, &t) != 0)
        abort(); /* cannot fail with a valid clock */
    t.tv_sec += (time_t)(ms / 1000);
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

/* Waits on cv until deadline; returns 0 when it passed. */
static int mongo_timed_wait(pthread_cond_t *cv, pthread_mutex_t *mu, const struct timespec *t)
{
    int rc = pthread_cond_timedwait(cv, mu, t);
    if (rc != 0 && rc != ETIMEDOUT)
        abort(); /* only a bug: a cond not initialized, a mutex not held */
    return rc == 0;
}

/* One turn of the thread, with work taken (ids, overflow, or a poll due):
 * the rounds, without the lock. */
static void mongo_seq_turn(struct mongo_store *st, char (*ids)[UUID_STR_LEN + 1], size_t n,
                           int overflow, int poll, int adopt)
{
    int err = PAYMENT_STORE_OK, raised = 0;
    mongoc_client_t *client = mongo_client(st, &err);
    if (err == PAYMENT_STORE_OK && n > 0) {
        const char *ptrs[MONGO_SEQ_NOTED_MAX];
        for (size_t i = 0; i < n; i++)
            ptrs[i] = ids[i];
        (void)mongo_seq_stamp_ids(st, client, ptrs, n);
    }
    if (err == PAYMENT_STORE_OK && overflow && mongo_seq_adopt(st, client, INT64_MAX, &raised) ==
                                                   PAYMENT_STORE_OK && raised)
        mongo_seq_notify(st);
    if (err == PAYMENT_STORE_OK && poll)
        mongo_seq_poll(st, client, adopt);
    if (client)
        mongoc_client_pool_push(st->pool, client);
}

static void *mongo_seq_main(void *arg)
{
    struct mongo_store *st = arg;
    struct mongo_seq *q = st->seq;
    char(*ids)[UUID_STR_LEN + 1] = malloc(sizeof q->ids);
    int64_t next_poll = clock_mono_us(), next_adopt = next_poll;
    sync_lock(&q->mu);
    for (;;) {
        int64_t left_us = next_poll - clock_mono_us();
        struct timespec until = mongo_deadline(left_us > 0 ? left_us / 1000 : 0);
        while (!q->closing && q->n_ids == 0 && !q->overflow && clock_mono_us() < next_poll)
            if (!mongo_timed_wait(&q->wake, &q->mu, &until))
                break;
        int closing = q->closing;
        size_t n = ids ? q->n_ids : 0;
        int overflow = q->overflow || (!ids && q->n_ids > 0);
        if (n > 0)
            memcpy(ids, q->ids, n * sizeof q->ids[0]);
        uint64_t target = q->noted;
        q->n_ids = 0;
        q->overflow = 0;
        sync_unlock(&q->mu);
        int64_t now = clock_mono_us();
        int poll = !closing && now >= next_poll, adopt = poll && now >= next_adopt;
        if (poll)
            next_poll = now + MONGO_SEQ_POLL_MS * 1000;
        if (adopt)
            next_adopt = now + MONGO_SEQ_ADOPT_MS * 1000;
        if (n > 0 || overflow || poll)
            mongo_seq_turn(st, ids, n, overflow, poll, adopt);
        sync_lock(&q->mu);
        q->done = target;
        sync_broadcast(&q->flushed);
        if (closing)
            break; /* the last round ran: what it left, another process adopts */
    }
    sync_unlock(&q->mu);
    free(ids);
    return NULL;
}

/* ---- what the store calls ---------------------------------------------------- */

/* Notes that payment_id's outbox got an entry, and wakes the thread. */
void mongo_seq_note(struct mongo_store *st, const char *payment_id)
{
    struct mongo_seq *q = st->seq;
    sync_lock(&q->mu);
    size_t i = 0;
    while (i < q->n_ids && strcmp(q->ids[i], payment_id) != 0)
        i++;
    if (i == q->n_ids) {
        if (q->n_ids < MONGO_SEQ_NOTED_MAX)
            snprintf(q->ids[q->n_ids++], sizeof q->ids[0], "%s", payment_id);
        else
            q->overflow = 1;
    }
    q->noted++;
    sync_signal(&q->wake);
    sync_unlock(&q->mu);
}

/* Waits until the writes noted so far went through a round, at most the
 * store's selection timeout (a round that failed counts: the read then
 * shows what the feed holds). */
void mongo_seq_flush(struct mongo_store *st)
{
    struct mongo_seq *q = st->seq;
    struct timespec until = mongo_deadline(st->stale_us / 1000);
    sync_lock(&q->mu);
    uint64_t target = q->noted;
    if (q->done < target)
        sync_signal(&q->wake);
    while (q->done < target && q->started && !q->closing)
        if (!mongo_timed_wait(&q->flushed, &q->mu, &until))
            break;
    sync_unlock(&q->mu);
}

void mongo_events_subscribe(payment_store *s, void (*fn)(void *arg), void *arg)
{
    struct mongo_seq *q = ((struct mongo_store *)s)->seq;
    sync_lock(&q->mu);
    q->fn = fn;
    q->fn_arg = arg;
    sync_unlock(&q->mu);
}

void mongo_seq_set_hook(payment_store *s, mongo_seq_hook_fn hook, void *arg)
{
    struct mongo_seq *q = ((struct mongo_store *)s)->seq;
    sync_lock(&q->mu);
    q->hook = hook;
    q->hook_arg = arg;
    sync_unlock(&q->mu);
}

/* Creates st's sequencer (not started).  Returns 0, or -1. */
int mongo_seq_new(struct mongo_store *st)
{
    struct mongo_seq *q = calloc(1, sizeof *q);
    pthread_condattr_t attr;
    if (!q)
        return -1;
    q->st = st;
    if (pthread_mutex_init(&q->mu, NULL) != 0)
        goto no_mu;
    if (pthread_condattr_init(&attr) != 0)
        goto no_attr;
    if (pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&q->wake, &attr) != 0)
        goto no_wake;
    if (pthread_cond_init(&q->flushed, &attr) != 0)
        goto no_flushed;
    (void)pthread_condattr_destroy(&attr);
    st->seq = q;
    return 0;
no_flushed:
    (void)pthread_cond_destroy(&q->wake);
no_wake:
    (void)pthread_condattr_destroy(&attr);
no_attr:
    (void)pthread_mutex_destroy(&q->mu);
no_mu:
    free(q);
    return -1;
}

/* Starts the thread with every signal blocked.  Returns 0, or -1. */
int mongo_seq_start(struct mongo_store *st)
{
    struct mongo_seq *q = st->seq;
    sigset_t all, old;
    if (sigfillset(&all) != 0 || pthread_sigmask(SIG_BLOCK, &all, &old) != 0)
        return -1;
    int rc = pthread_create(&q->thread, NULL, mongo_seq_main, st);
    if (pthread_sigmask(SIG_SETMASK, &old, NULL) != 0)
        abort(); /* cannot fail with a mask it returned */
    if (rc != 0)
        return -1;
    sync_lock(&q->mu);
    q->started = 1;
    sync_unlock(&q->mu);
    return 0;
}

/* Stops the thread after its last round (the writers are stopped already)
 * and frees the sequencer.  NULL st->seq is a no-op. */
void mongo_seq_free(struct mongo_store *st)
{
    struct mongo_seq *q = st->seq;
    if (!q)
        return;
    sync_lock(&q->mu);
    int started = q->started;
    q->closing = 1;
    sync_signal(&q->wake);
    sync_broadcast(&q->flushed);
    sync_unlock(&q->mu);
    if (started)
        sync_join(q->thread);
    (void)pthread_cond_destroy(&q->flushed);
    (void)pthread_cond_destroy(&q->wake);
    (void)pthread_mutex_destroy(&q->mu);
    free(q);
    st->seq = NULL;
}
