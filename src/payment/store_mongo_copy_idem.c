/* store_mongo_copy_idem: the export of the idempotency records on the
 * MongoDB store (payment_store_export_idem; the other exports are
 * store_mongo_copy.c), on the calling thread with a pooled client.
 *
 * Records live in the "idem" arrays of the documents their writes changed,
 * several per document, so no query gives them in (scope, key) order: a
 * page is chosen from the keys alone ("idem.sk" projected: scope
 * MONGO_IDEM_SEP key), the limit + 1 smallest above the cursor kept in a
 * bounded buffer, then those records are read whole.  Each page reads the
 * keys of every record above the cursor, so a whole export reads about
 * n^2 / (2 * limit) keys for n records (records are purged after a day: n
 * is a day's keyed writes).  The byte order of sk is the order of (scope,
 * key) because a scope (an API key id, or "") holds no byte at or below
 * MONGO_IDEM_SEP; a key never holds the separator, so sk splits at its
 * last one. */

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "payment/store_mongo.h"

/* The keys of a page: the smallest sk above the cursor, at most keep of
 * them once cut, in a buffer of twice that. */
struct mongo_sk_pick {
    const char *after;  /* the cursor's sk ("" from the first) */
    char **sk;          /* owned copies */
    size_t n;
    size_t keep;        /* limit + 1: the page and whether another follows */
    size_t cap;         /* 2 * keep */
};

static int mongo_sk_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts the keys, drops repeats (one key held by two organisations' payments)
 * and keeps the keep smallest. */
static void mongo_sk_cut(struct mongo_sk_pick *p)
{
    qsort(p->sk, p->n, sizeof *p->sk, mongo_sk_cmp);
    size_t m = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (m > 0 && strcmp(p->sk[m - 1], p->sk[i]) == 0)
            free(p->sk[i]);
        else
            p->sk[m++] = p->sk[i];
    }
    for (size_t i = p->keep; i < m; i++)
        free(p->sk[i]);
    p->n = m < p->keep ? m : p->keep;
}

int mongo_idem_each_sk(const bson_t *doc, mongo_sk_fn fn, void *arg)
{
    bson_iter_t it, list, rec;
    if (!bson_iter_init_find(&it, doc, MONGO_F_IDEM) || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &list))
        return PAYMENT_STORE_OK;
    while (bson_iter_next(&list)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&list) || !bson_iter_recurse(&list, &rec) ||
            !bson_iter_find(&rec, "sk") || !BSON_ITER_HOLDS_UTF8(&rec))
            continue;
        int err = fn(bson_iter_utf8(&rec, NULL), &list, arg);
        if (err != PAYMENT_STORE_OK)
            return err;
    }
    return PAYMENT_STORE_OK;
}

/* Adds key sk (of a record) when above the cursor.  0, or EINTERNAL out of
 * memory. */
static int mongo_sk_add_one(const char *sk, const bson_iter_t *rec, void *arg)
{
    (void)rec;
    struct mongo_sk_pick *p = arg;
    if (strcmp(sk, p->after) <= 0 || !strchr(sk, MONGO_IDEM_SEP))
        return PAYMENT_STORE_OK;
    if (p->n == p->cap)
        mongo_sk_cut(p);
    if ((p->sk[p->n] = strdup(sk)) == NULL)
        return PAYMENT_STORE_EINTERNAL;
    p->n++;
    return PAYMENT_STORE_OK;
}

/* Adds the keys of doc's records above the cursor.  0, or EINTERNAL out of
 * memory. */
static int mongo_sk_add(const bson_t *doc, void *arg)
{
    return mongo_idem_each_sk(doc, mongo_sk_add_one, arg);
}

/* {"idem.sk": {$gt: after}}, projected to the keys. */
static bool mongo_build_sk_scan(bson_t *filter, bson_t *opts, const char *after)
{
    bson_t gt, proj;
    return BSON_APPEND_DOCUMENT_BEGIN(filter, MONGO_F_IDEM ".sk", &gt) &&
           BSON_APPEND_UTF8(&gt, "$gt", after) && bson_append_document_end(filter, &gt) &&
           BSON_APPEND_DOCUMENT_BEGIN(opts, "projection", &proj) &&
           BSON_APPEND_INT32(&proj, MONGO_F_IDEM ".sk", 1) &&
           bson_append_document_end(opts, &proj);
}

/* Chooses the page's keys into p (sorted, at most p->keep).  0 or a store
 * error. */
static int mongo_sk_choose(mongoc_collection_t *coll, struct mongo_sk_pick *p)
{
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
    int more = 0, err = PAYMENT_STORE_EINTERNAL;
    if (mongo_build_sk_scan(&filter, &opts, p->after))
        err = mongo_page_each(mongoc_collection_find_with_opts(coll, &filter, &opts, NULL),
                              UINT32_MAX, mongo_sk_add, p, &more);
    if (err == PAYMENT_STORE_OK)
        mongo_sk_cut(p);
    bson_destroy(&filter);
    bson_destroy(&opts);
    return err;
}

/* The page's records, found by their keys: recs[i] is the record of
 * sk[i], pointing into one of docs (copies, owned), or NULL when it went
 * (purged) since its key was read. */
struct mongo_idem_page {
    char **sk;             /* sorted, borrowed from the pick */
    size_t n;
    bson_t rec[PAYMENT_EXPORT_PAGE_MAX]; /* static views into docs */
    int found[PAYMENT_EXPORT_PAGE_MAX];
    bson_t **docs;         /* the documents read, owned */
    size_t n_docs;
};

/* Takes record rec (of key sk) when the page holds its key and has not
 * found it yet. */
static int mongo_idem_take_one(const char *sk, const bson_iter_t *rec, void *arg)
{
    struct mongo_idem_page *pg = arg;
    char **at = bsearch(&sk, pg->sk, pg->n, sizeof *pg->sk, mongo_sk_cmp);
    size_t i = at ? (size_t)(at - pg->sk) : 0;
    if (!at || pg->found[i])
        return PAYMENT_STORE_OK;
    const uint8_t *data;
    uint32_t len;
    bson_iter_document(rec, &len, &data);
    if (!bson_init_static(&pg->rec[i], data, len))
        return PAYMENT_STORE_EINTERNAL;
    pg->found[i] = 1;
    return PAYMENT_STORE_OK;
}

/* Takes doc's records whose keys the page holds (the first found of each). */
static int mongo_idem_take(const bson_t *doc, void *arg)
{
    struct mongo_idem_page *pg = arg;
    bson_t **docs = realloc(pg->docs, (pg->n_docs + 1) * sizeof *docs);
    bson_t *copy = docs ? bson_copy(doc) : NULL;
    if (docs)
        pg->docs = docs;
    if (!copy)
        return PAYMENT_STORE_EINTERNAL;
    pg->docs[pg->n_docs++] = copy;
    return mongo_idem_each_sk(copy, mongo_idem_take_one, pg);
}

/* {"idem.sk": {$in: sk[0..n)}}, projected to the records. */
static bool mongo_build_idem_read(bson_t *filter, bson_t *opts, char *const *sk, size_t n)
{
    bson_t cond, list, proj;
    bool ok = BSON_APPEND_DOCUMENT_BEGIN(filter, MONGO_F_IDEM ".sk", &cond) &&
              BSON_APPEND_ARRAY_BEGIN(&cond, "$in", &list);
    for (size_t i = 0; ok && i < n; i++) {
        char idx[16];
        const char *k;
        bson_uint32_to_string((uint32_t)i, &k, idx, sizeof idx);
        ok = bson_append_utf8(&list, k, -1, sk[i], -1);
    }
    return ok && bson_append_array_end(&cond, &list) && bson_append_document_end(filter, &cond) &&
           BSON_APPEND_DOCUMENT_BEGIN(opts, "projection", &proj) &&
           BSON_APPEND_INT32(&proj, MONGO_F_IDEM, 1) && bson_append_document_end(opts, &proj);
}

/* Record rec (of key sk, which this splits in place) to each. */
static int mongo_idem_give(const bson_t *rec, char *sk, payment_store_idem_export_fn each,
                           void *arg)
{
    char *sep = strrchr(sk, MONGO_IDEM_SEP);
    assert(sep); /* mongo_sk_add keeps only keys holding it */
    *sep = '\0';
    struct payment_idem_export r = {
        .scope = sk,
        .key = sep + 1,
        .fingerprint = mongo_get_utf8(rec, "fingerprint", NULL),
        .status = (int)mongo_get_int64(rec, "status", 0),
        .location = mongo_get_utf8(rec, "location", NULL),
        .etag = mongo_get_utf8(rec, "etag", NULL),
        .created_ms = mongo_get_int64(rec, "created", 0),
    };
    bson_iter_t it;
    if (bson_iter_init_find(&it, rec, "body") && BSON_ITER_HOLDS_BINARY(&it)) {
        const uint8_t *data = NULL;
        uint32_t len = 0;
        bson_subtype_t sub;
        bson_iter_binary(&it, &sub, &len, &data);
        r.body = data ? (const char *)data : "";
        r.body_len = len;
    }
    if (!r.fingerprint)
        return PAYMENT_STORE_EINTERNAL;
    return each(arg, &r);
}

/* Reads the records of the chosen keys and gives them in key order. */
static int mongo_idem_read(mongoc_collection_t *coll, struct mongo_idem_page *pg,
                           payment_store_idem_export_fn each, void *arg)
{
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
    int more = 0, err = PAYMENT_STORE_EINTERNAL;
    if (mongo_build_idem_read(&filter, &opts, pg->sk, pg->n))
        err = mongo_page_each(mongoc_collection_find_with_opts(coll, &filter, &opts, NULL),
                              UINT32_MAX, mongo_idem_take, pg, &more);
    for (size_t i = 0; err == PAYMENT_STORE_OK && i < pg->n; i++)
        if (pg->found[i])
            err = mongo_idem_give(&pg->rec[i], pg->sk[i], each, arg);
    bson_destroy(&filter);
    bson_destroy(&opts);
    return err;
}

/* The cursor's sk: scope, separator, key; "" from the first.  NULL out of
 * memory. */
static char *mongo_sk_after(const char *scope, const char *key)
{
    assert((scope == NULL) == (key == NULL));
    if (!scope)
        return strdup("");
    size_t ls = strlen(scope), lk = strlen(key);
    char *sk = malloc(ls + lk + 2);
    if (sk) {
        memcpy(sk, scope, ls);
        sk[ls] = MONGO_IDEM_SEP;
        memcpy(sk + ls + 1, key, lk + 1);
    }
    return sk;
}

/* One page: its keys chosen, then its records read and given. */
static int mongo_idem_page_run(mongoc_collection_t *coll, const char *after, uint32_t limit,
                               payment_store_idem_export_fn each, void *arg, int *more)
{
    struct mongo_sk_pick pick = {.after = after, .keep = (size_t)limit + 1};
    pick.cap = 2 * pick.keep;
    pick.sk = malloc(pick.cap * sizeof *pick.sk);
    struct mongo_idem_page *pg = calloc(1, sizeof *pg);
    int err = pick.sk && pg ? mongo_sk_choose(coll, &pick) : PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        *more = pick.n > limit;
        pg->sk = pick.sk;
        pg->n = pick.n > limit ? limit : pick.n;
        if (pg->n > 0)
            err = mongo_idem_read(coll, pg, each, arg);
    }
    for (size_t i = 0; pg && i < pg->n_docs; i++)
        bson_destroy(pg->docs[i]);
    if (pg)
        free(pg->docs);
    free(pg);
    for (size_t i = 0; pick.sk && i < pick.n; i++)
        free(pick.sk[i]);
    free(pick.sk);
    return err;
}

int mongo_export_idem(payment_store *s, const char *after_scope, const char *after_key,
                      uint32_t limit, payment_store_idem_export_fn each, void *arg, int *more)
{
    assert(limit >= 1 && limit <= PAYMENT_EXPORT_PAGE_MAX);
    struct mongo_store *st = (struct mongo_store *)s;
    *more = 0;
    char *after = mongo_sk_after(after_scope, after_key);
    if (!after)
        return PAYMENT_STORE_EINTERNAL;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client) {
        free(after);
        return err;
    }
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
        err = mongo_idem_page_run(coll, after, limit, each, arg, more);
        mongoc_collection_destroy(coll);
    }
    mongoc_client_pool_push(st->pool, client);
    free(after);
    return err;
}
