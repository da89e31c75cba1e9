/* store_mongo_import: a page of a copy written into the MongoDB store
 * (payment_store_import; the exports are store_mongo_copy.c), on the
 * calling thread with a pooled client.
 *
 * Without multi-document transactions a page is written one document at a
 * time, each skipped when present, in the page's order: payments, then
 * idempotency records, then events, each kind in ordered inserts (an
 * ordered insert stops at its first failure, so what an interruption
 * leaves is a prefix of the page, which the same page imported again
 * completes).  Before each kind one read finds what the target holds, so
 * that a page imported again costs reads, not a refused insert per
 * document; a duplicate an insert still meets (another writer's, between
 * the read and the insert) is skipped as present.
 *
 * Payments: one $inc of the sequence counter reserves the numbers of the
 * payments to insert, given in the page's order, so the target's list
 * order is the source's, across pages and across runs (a resumed run's
 * numbers are all above the first run's).  A tombstone is stored as the
 * store leaves one (store_mongo_bson.c): _id, seq, organisation_id, its
 * own version, deleted: true.  No outbox entry is written: the source's
 * events are copied as they are.
 *
 * Idempotency records: the page does not say which payment's write each
 * record answered (a store may keep them apart from payments), so each is
 * kept in a document of its own in the payments collection, a holder
 * {_id: "idem" MONGO_IDEM_SEP sk, idem: [record]}: every lookup of a
 * record (payment_store_idem_get, the check of a write's key against other
 * documents, the purge) reads "idem.sk" over the whole collection, so the
 * record answers and refuses as it would in its payment.  A holder has no
 * seq, deleted or organisation_id: no list, get or export of payments sees
 * it (they filter on deleted or seq), and the unique index of keys holds
 * it under a null organisation.  (A collection sharded on organisation_id
 * takes documents without it on MongoDB 4.4 and later only.)
 *
 * Events: placed in the feed by store_mongo_import_events.c. */

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "payment/store_mongo.h"

#define MONGO_HOLDER_PREFIX "idem\x1f"   /* a holder's _id: this, then the record's sk */
#define MONGO_IMPORT_RANK INT64_MAX     /* an imported record's rank: alone in its holder */

/* ---- inserts -------------------------------------------------------------------- */

/* Whether a duplicate key message names the _id index ("... index: _id_
 * dup key ..."). */
static int mongo_import_dup_id(const char *msg)
{
    static const char tag[] = " index: _id_ ";
    const char *at = msg ? strstr(msg, " index: ") : NULL;
    return at && strncmp(at, tag, sizeof tag - 1) == 0;
}

/* Inserts docs[0..n) into coll in one ordered insert: *inserted of the
 * first went in, and *refused says why the next did not.  Returns 0, or a
 * store error (the outcome then unknown: an import again finds what went
 * in). */
int mongo_import_insert(mongoc_collection_t *coll, const bson_t *docs, size_t n,
                               size_t *inserted, enum mongo_refusal *refused)
{
    assert(n > 0);
    *inserted = 0;
    *refused = MONGO_REFUSED_NONE;
    bson_t opts = BSON_INITIALIZER;
    bson_error_t e;
    bool ok = BSON_APPEND_BOOL(&opts, "ordered", true);
    mongoc_bulk_operation_t *bulk =
        ok ? mongoc_collection_create_bulk_operation_with_opts(coll, &opts) : NULL;
    for (size_t i = 0; bulk && ok && i < n; i++)
        ok = mongoc_bulk_operation_insert_with_opts(bulk, &docs[i], NULL, &e);
    int err = PAYMENT_STORE_EINTERNAL;
    if (bulk && ok) {
        bson_t reply; /* always initialized by the call */
        if (mongoc_bulk_operation_execute(bulk, &reply, &e)) {
            *inserted = n;
            err = PAYMENT_STORE_OK;
        } else {
            int64_t done = mongo_get_int64(&reply, "nInserted", -1), code;
            const char *msg;
            mongo_reply_write_error(&reply, &code, &msg);
            if (code == MONGOC_ERROR_DUPLICATE_KEY && !mongo_reply_wc_failed(&reply) &&
                done >= 0 && (size_t)done < n) {
                *inserted = (size_t)done;
                *refused = mongo_import_dup_id(msg) ? MONGO_REFUSED_ID : MONGO_REFUSED_INDEX;
                err = PAYMENT_STORE_OK;
            } else {
                err = mongo_map_err(&e);
                err = err == PAYMENT_STORE_EUNAVAILABLE ? err : PAYMENT_STORE_EINTERNAL;
            }
        }
        bson_destroy(&reply);
    }
    mongoc_bulk_operation_destroy(bulk); /* NULL is a no-op */
    bson_destroy(&opts);
    return err;
}

/* Inserts docs[0..n) in order, each duplicate skipped as present; *added
 * counts those that went in.  Returns 0 or a store error. */
static int mongo_import_each(mongoc_collection_t *coll, const bson_t *docs, size_t n,
                             size_t *added)
{
    int err = PAYMENT_STORE_OK;
    for (size_t i = 0; err == PAYMENT_STORE_OK && i < n;) {
        size_t inserted;
        enum mongo_refusal refused;
        err = mongo_import_insert(coll, docs + i, n - i, &inserted, &refused);
        *added += inserted;
        i += inserted + (refused != MONGO_REFUSED_NONE); /* the refused one: present */
    }
    return err;
}

/* Makes d empty with room for cap documents: 0, or -1 out of memory. */
int mongo_docs_new(struct mongo_docs *d, size_t cap)
{
    d->n = 0;
    d->cap = cap;
    d->doc = malloc((cap ? cap : 1) * sizeof *d->doc);
    return d->doc ? 0 : -1;
}

/* Destroys d's documents and frees it; a d never made (zeroed) too. */
void mongo_docs_free(struct mongo_docs *d)
{
    for (size_t i = 0; i < d->n; i++)
        bson_destroy(&d->doc[i]);
    free(d->doc);
    d->doc = NULL;
    d->n = d->cap = 0;
}

/* The next document to build: initialized, counted. */
bson_t *mongo_docs_next(struct mongo_docs *d)
{
    assert(d->n < d->cap);
    bson_t *b = &d->doc[d->n++];
    bson_init(b);
    return b;
}

/* {field: {$in: values[0..n)}}. */
static bool mongo_import_in(bson_t *b, const char *field, const char *const *values, size_t n)
{
    bson_t cond, list;
    if (!BSON_APPEND_DOCUMENT_BEGIN(b, field, &cond))
        return false;
    bool ok = BSON_APPEND_ARRAY_BEGIN(&cond, "$in", &list);
    for (size_t i = 0; ok && i < n; i++) {
        char idx[16];
        const char *k;
        bson_uint32_to_string((uint32_t)i, &k, idx, sizeof idx);
        ok = bson_append_utf8(&list, k, -1, values[i], -1);
    }
    ok = ok && bson_append_array_end(&cond, &list);
    return bson_append_document_end(b, &cond) && ok;
}

/* Passes each document of coll matching filter (projected to proj, read
 * on the primary's latest data) to fn.  0, fn's answer or a store error. */
int mongo_import_find(mongoc_collection_t *coll, const bson_t *filter, const bson_t *proj,
                             mongo_doc_fn fn, void *arg)
{
    bson_t opts = BSON_INITIALIZER;
    int more = 0;
    if (!BSON_APPEND_DOCUMENT(&opts, "projection", proj) || !mongo_append_local(&opts)) {
        bson_destroy(&opts);
        return PAYMENT_STORE_EINTERNAL;
    }
    int err = mongo_page_each(mongoc_collection_find_with_opts(coll, filter, &opts, NULL),
                              UINT32_MAX, fn, arg, &more);
    bson_destroy(&opts);
    return err;
}

/* ---- payments --------------------------------------------------------------------- */

/* Which of n ids the target holds: present[i]. */
struct mongo_present {
    const char *const *ids;
    size_t n;
    bool *present;
};

static int mongo_mark_id(const bson_t *doc, void *arg)
{
    struct mongo_present *p = arg;
    const char *id = mongo_get_utf8(doc, "_id", NULL);
    for (size_t i = 0; id && i < p->n; i++)
        if (strcmp(p->ids[i], id) == 0)
            p->present[i] = true;
    return PAYMENT_STORE_OK;
}

/* Sets present[i] for the ids[0..n) coll holds (by _id).  0 or an error. */
static int mongo_ids_present(mongoc_collection_t *coll, const char *const *ids, size_t n,
                             bool *present)
{
    struct mongo_present p = {ids, n, present};
    bson_t filter = BSON_INITIALIZER, proj = BSON_INITIALIZER;
    int err = mongo_import_in(&filter, "_id", ids, n) && BSON_APPEND_INT32(&proj, "_id", 1)
                  ? mongo_import_find(coll, &filter, &proj, mongo_mark_id, &p)
                  : PAYMENT_STORE_EINTERNAL;
    bson_destroy(&filter);
    bson_destroy(&proj);
    return err;
}

/* Reserves n sequence numbers; *first is the first.  0 or a store error. */
static int mongo_import_reserve(struct mongo_store *st, mongoc_client_t *client, size_t n,
                                int64_t *first)
{
    mongoc_collection_t *counters = mongo_collection(st, client, MONGO_COUNTERS);
    mongoc_find_and_modify_opts_t *fam = mongoc_find_and_modify_opts_new();
    bson_t query = BSON_INITIALIZER, update = BSON_INITIALIZER, inc, out;
    bool ok = fam && BSON_APPEND_UTF8(&query, "_id", st->coll) &&
              BSON_APPEND_DOCUMENT_BEGIN(&update, "$inc", &inc) &&
              BSON_APPEND_INT64(&inc, "seq", (int64_t)n) &&
              bson_append_document_end(&update, &inc) &&
              mongoc_find_and_modify_opts_set_update(fam, &update) &&
              mongoc_find_and_modify_opts_set_flags(
                  fam, MONGOC_FIND_AND_MODIFY_UPSERT | MONGOC_FIND_AND_MODIFY_RETURN_NEW);
    int found = 0;
    int err = ok ? mongo_find_modify(counters, &query, fam, &out, &found)
                 : PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK && found) {
        int64_t last = mongo_get_int64(&out, "seq", -1);
        *first = last - (int64_t)n + 1;
        err = last >= (int64_t)n ? PAYMENT_STORE_OK : PAYMENT_STORE_EINTERNAL;
        bson_destroy(&out);
    } else if (err == PAYMENT_STORE_OK) {
        err = PAYMENT_STORE_EINTERNAL; /* an upsert always answers the document */
    }
    mongoc_find_and_modify_opts_destroy(fam); /* NULL is a no-op */
    bson_destroy(&query);
    bson_destroy(&update);
    mongoc_collection_destroy(counters);
    return err;
}

/* A tombstone as a delete leaves it (store_mongo_bson.c). */
static bool mongo_build_import_tombstone(bson_t *b, const struct payment_export *p, int64_t seq)
{
    return BSON_APPEND_UTF8(b, "_id", p->row.id) && BSON_APPEND_INT64(b, "seq", seq) &&
           BSON_APPEND_INT64(b, "created_ms", p->row.created_ms) &&
           BSON_APPEND_UTF8(b, MONGO_F_ORG, p->row.organisation_id) &&
           BSON_APPEND_INT64(b, "version", p->row.version) &&
           BSON_APPEND_INT64(b, "modified_ms", p->row.modified_ms) &&
           BSON_APPEND_BOOL(b, "deleted", true);
}

/* The payments of im the target lacks, inserted in order with new numbers. */
static int mongo_import_payments(struct mongo_store *st, mongoc_client_t *client,
                                 const struct payment_import *im, size_t *added)
{
    size_t n = im->n_payments;
    const char **ids = malloc(n * sizeof *ids);
    bool *present = calloc(n, sizeof *present);
    struct mongo_docs d = {0};
    mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
    int err = ids && present && mongo_docs_new(&d, n) == 0 ? PAYMENT_STORE_OK
                                                           : PAYMENT_STORE_EINTERNAL;
    for (size_t i = 0; err == PAYMENT_STORE_OK && i < n; i++)
        ids[i] = im->payments[i].row.id;
    if (err == PAYMENT_STORE_OK)
        err = mongo_ids_present(coll, ids, n, present);
    size_t missing = 0;
    for (size_t i = 0; err == PAYMENT_STORE_OK && i < n; i++)
        missing += !present[i];
    int64_t seq = 0;
    if (err == PAYMENT_STORE_OK && missing > 0)
        err = mongo_import_reserve(st, client, missing, &seq);
    for (size_t i = 0; err == PAYMENT_STORE_OK && i < n; i++) {
        const struct payment_export *p = &im->payments[i];
        if (present[i])
            continue;
        bson_t *b = mongo_docs_next(&d);
        bool ok = p->deleted ? mongo_build_import_tombstone(b, p, seq)
                             : mongo_build_insert(b, &p->row, seq, NULL, NULL, NULL);
        seq++;
        err = ok ? PAYMENT_STORE_OK : PAYMENT_STORE_EINTERNAL;
    }
    if (err == PAYMENT_STORE_OK && d.n > 0)
        err = mongo_import_each(coll, d.doc, d.n, added);
    mongoc_collection_destroy(coll);
    mongo_docs_free(&d);
    free(ids);
    free(present);
    return err;
}

/* ---- idempotency records ---------------------------------------------------------- */

/* Which of the page's keys the target holds: sk sorted, with their places. */
struct mongo_sk_index {
    const char *sk;
    size_t at;  /* its record's place in the page */
};

struct mongo_sk_present {
    struct mongo_sk_index *by_sk; /* n, sorted by sk */
    size_t n;
    bool *present;                /* by the page's place */
};

static int mongo_sk_index_cmp(const void *a, const void *b)
{
    return strcmp(((const struct mongo_sk_index *)a)->sk, ((const struct mongo_sk_index *)b)->sk);
}

/* Marks key sk (a record's) present when the page holds it. */
static int mongo_mark_sk_one(const char *sk, const bson_iter_t *rec, void *arg)
{
    (void)rec;
    struct mongo_sk_present *p = arg;
    struct mongo_sk_index key = {.sk = sk};
    const struct mongo_sk_index *at = bsearch(&key, p->by_sk, p->n, sizeof key, mongo_sk_index_cmp);
    if (at)
        p->present[at->at] = true;
    return PAYMENT_STORE_OK;
}

/* Marks the page's keys doc's records hold. */
static int mongo_mark_sk(const bson_t *doc, void *arg)
{
    return mongo_idem_each_sk(doc, mongo_mark_sk_one, arg);
}

/* Sets present[i] for the keys sk[0..n) a document of coll holds. */
static int mongo_sks_present(mongoc_collection_t *coll, char *const *sk, size_t n, bool *present)
{
    struct mongo_sk_present p = {malloc(n * sizeof *p.by_sk), n, present};
    if (!p.by_sk)
        return PAYMENT_STORE_EINTERNAL;
    for (size_t i = 0; i < n; i++)
        p.by_sk[i] = (struct mongo_sk_index){sk[i], i};
    qsort(p.by_sk, n, sizeof *p.by_sk, mongo_sk_index_cmp);
    bson_t filter = BSON_INITIALIZER, proj = BSON_INITIALIZER;
    int err = mongo_import_in(&filter, MONGO_F_IDEM ".sk", (const char *const *)sk, n) &&
                      BSON_APPEND_INT32(&proj, MONGO_F_IDEM ".sk", 1)
                  ? mongo_import_find(coll, &filter, &proj, mongo_mark_sk, &p)
                  : PAYMENT_STORE_EINTERNAL;
    bson_destroy(&filter);
    bson_destroy(&proj);
    free(p.by_sk);
    return err;
}

/* A holder of record r, whose key is sk. */
static bool mongo_build_holder(bson_t *b, const struct payment_idem_export *r, const char *sk)
{
    size_t lp = sizeof MONGO_HOLDER_PREFIX - 1, ls = strlen(sk);
    char *id = malloc(lp + ls + 1);
    if (!id || r->body_len > MONGO_DOC_MAX) {
        free(id);
        return false;
    }
    memcpy(id, MONGO_HOLDER_PREFIX, lp);
    memcpy(id + lp, sk, ls + 1);
    bson_t list, rec;
    bool ok = BSON_APPEND_UTF8(b, "_id", id) && BSON_APPEND_ARRAY_BEGIN(b, MONGO_F_IDEM, &list);
    free(id);
    if (!ok || !BSON_APPEND_DOCUMENT_BEGIN(&list, "0", &rec))
        return false;
    ok = BSON_APPEND_UTF8(&rec, "sk", sk) &&
         BSON_APPEND_UTF8(&rec, "fingerprint", r->fingerprint ? r->fingerprint : "") &&
         BSON_APPEND_INT32(&rec, "status", r->status) &&
         (!r->location || BSON_APPEND_UTF8(&rec, "location", r->location)) &&
         (!r->etag || BSON_APPEND_UTF8(&rec, "etag", r->etag)) &&
         (!r->body || BSON_APPEND_BINARY(&rec, "body", BSON_SUBTYPE_BINARY,
                                         (const uint8_t *)r->body, (uint32_t)r->body_len)) &&
         BSON_APPEND_INT64(&rec, "created", r->created_ms) &&
         BSON_APPEND_INT64(&rec, "rank", MONGO_IMPORT_RANK);
    ok = bson_append_document_end(&list, &rec) && ok;
    return bson_append_array_end(b, &list) && ok;
}

/* The records of im the target lacks, each in a holder of its own. */
static int mongo_import_idem(struct mongo_store *st, mongoc_client_t *client,
                             const struct payment_import *im, size_t *added)
{
    size_t n = im->n_idem;
    char **sk = calloc(n, sizeof *sk);
    bool *present = calloc(n, sizeof *present);
    struct mongo_docs d = {0};
    int err = sk && present && mongo_docs_new(&d, n) == 0 ? PAYMENT_STORE_OK
                                                          : PAYMENT_STORE_EINTERNAL;
    for (size_t i = 0; err == PAYMENT_STORE_OK && i < n; i++)
        if ((sk[i] = mongo_sk_new(im->idem[i].scope, im->idem[i].key)) == NULL)
            err = PAYMENT_STORE_EINTERNAL; /* no key, or one holding the separator */
    mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
    if (err == PAYMENT_STORE_OK)
        err = mongo_sks_present(coll, sk, n, present);
    for (size_t i = 0; err == PAYMENT_STORE_OK && i < n; i++)
        if (!present[i] && !mongo_build_holder(mongo_docs_next(&d), &im->idem[i], sk[i]))
            err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK && d.n > 0)
        err = mongo_import_each(coll, d.doc, d.n, added);
    mongoc_collection_destroy(coll);
    mongo_docs_free(&d);
    for (size_t i = 0; sk && i < n; i++)
        free(sk[i]);
    free(sk);
    free(present);
    return err;
}

/* ---- the page ------------------------------------------------------------------------ */

int mongo_import(payment_store *s, const struct payment_import *im,
                 struct payment_import_result *out)
{
    struct mongo_store *st = (struct mongo_store *)s;
    memset(out, 0, sizeof *out);
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    if (err == PAYMENT_STORE_OK && im->n_payments > 0)
        err = mongo_import_payments(st, client, im, &out->payments);
    if (err == PAYMENT_STORE_OK && im->n_idem > 0)
        err = mongo_import_idem(st, client, im, &out->idem);
    if (err == PAYMENT_STORE_OK && im->n_events > 0)
        err = mongo_import_events(st, client, im, &out->events);
    mongoc_client_pool_push(st->pool, client);
    return err;
}
