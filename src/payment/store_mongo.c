/* store_mongo: payments in MongoDB, through libmongoc's client pool.
 *
 * URI: mongodb://HOST:PORT[,HOST:PORT...]/DB?OPTIONS.  The database is the
 * URI's path (default "payment").  Two options belong to this store and are
 * taken out before libmongoc parses the rest:
 *   paymentdCollection=NAME    the payments collection (default "payments");
 *   paymentdWaitForStore=true  open succeeds while MongoDB is unreachable:
 *                              the store answers EUNAVAILABLE until MongoDB
 *                              answers and the indexes are in place.
 * Without the second, open fails when MongoDB does not answer in time.
 *
 * Document: _id is the payment id, seq the sequence number, doc the
 * serialized data object kept verbatim as a string (the bytes GET returns:
 * no number goes through a BSON double), and the list's columns as
 * top-level fields, absent when the payment has no value.  A deleted payment
 * keeps _id, seq, organisation_id and version with deleted: true (its
 * tombstone): the unique _id index then refuses to create the id again.
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
 * <collection>_partitions; see "operations from the broker" below for why
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
#include <limits.h>
#include <mongoc/mongoc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/clock.h"
#include "core/metrics.h"
#include "payment/store_impl.h"

#define MONGO_DEFAULT_DB "payment"
#define MONGO_DEFAULT_COLLECTION "payments"
#define MONGO_COUNTERS "counters"
#define MONGO_OPT_COLLECTION "paymentdCollection"
#define MONGO_OPT_WAIT "paymentdWaitForStore"
#define MONGO_NAME_MAX 100            /* collection and database names */
#define MONGO_WRITERS 3               /* threads for updates and deletes */
#define MONGO_CREATE_BATCH_MAX 500    /* creates per bulk insert */
#define MONGO_CREATE_BATCH_BYTES (16u << 20)
#define MONGO_CAS_TRIES 3             /* conditional write, miss read, again */
#define MONGO_DOC_MAX (16000000 - 65536) /* document text MongoDB's 16 MB limit leaves room for */
#define MONGO_F_IDEM "idem"           /* the array of idempotency records */
#define MONGO_IDEM_SK_INDEX "organisation_idem_sk" /* unique: a (scope, key) per organisation */
#define MONGO_IDEM_SK_OLD "idem_sk"   /* unique on idem.sk alone, in stores made before */
#define MONGO_IDEM_SEP '\x1f'         /* between scope and key; no key holds it */
#define MONGO_IDEM_KEEP 16            /* records a payment keeps: its create's and the newest */
#define MONGO_RANK_CREATE INT64_MAX   /* a create's record ranks above every other */
#define MONGO_RANK_DELETE (INT64_MAX - 1) /* nothing follows a delete */
#define MONGO_F_OPS "ops"             /* a payment's last operations, {id, v} */
#define MONGO_F_FENCE "fence"         /* the newest lease revision that decided on it */
#define MONGO_OPS_KEEP 16             /* entries of ops kept: the newest */
#define MONGO_OPS_SUFFIX "_operations" /* <collection>_operations: outcomes */
#define MONGO_PARTS_SUFFIX "_partitions" /* <collection>_partitions: positions */
#define MONGO_APPLY_BATCH_MAX 64      /* operations per apply batch, one per partition */
#define MONGO_APPLY_SCAN 1024         /* queued operations looked at for one batch */
#define MONGO_SELECTION_TIMEOUT_MS 2000
#define MONGO_CONNECT_TIMEOUT_MS 2000
#define MONGO_SOCKET_TIMEOUT_MS 5000

/* The list's columns, top-level fields of every live document. */
#define MONGO_F_ORG "organisation_id"
#define MONGO_F_CURRENCY "currency"
#define MONGO_F_SCHEME "payment_scheme"
#define MONGO_F_TYPE "payment_type"
#define MONGO_F_REF "reference"
#define MONGO_F_E2E "end_to_end_reference"
#define MONGO_F_DATE "processing_date"
#define MONGO_F_AMOUNT "amount_key"
#define MONGO_ROW_OPTIONAL 7 /* the fields above after organisation_id */

/* One index per filter, and the list order.  seq is not unique: the
 * counter makes it so.  The one unique index besides _id starts with
 * organisation_id, the shard key README advises: a sharded collection
 * allows no unique index without the shard key's prefix.  Names are fixed
 * so that open is idempotent.  The idempotency indexes hold only documents
 * with records (partial). */
static const struct {
    const char *name;
    const char *field[2]; /* ascending keys, the second may be NULL */
    int unique;           /* a key in at most one document */
    const char *partial;  /* only documents holding this field, or NULL: all */
} mongo_indexes[] = {
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
    {"idem_key", {MONGO_F_IDEM ".sk", NULL}, 0, MONGO_F_IDEM ".sk"},
    {"idem_created", {MONGO_F_IDEM ".created", NULL}, 0, MONGO_F_IDEM ".created"},
};

enum mongo_op_kind { OP_CREATE, OP_UPDATE, OP_DELETE, OP_APPLY };

/* An operation's outcome, as recorded. */
struct mongo_outcome {
    const char *status;     /* "succeeded" or "failed"; NULL while undecided */
    const char *error_code; /* NULL when succeeded, as is message */
    const char *message;
    int64_t version;        /* resulting, or current (version_conflict), else -1 */
};

/* One queued write.  row is a copy; the pointers in it stay borrowed from the
 * submitter until done has been called. */
struct mongo_op {
    struct mongo_op *next;    /* queue and batch link */
    enum mongo_op_kind kind;
    struct payment_row row;   /* OP_DELETE uses row.id only */
    int64_t expected_version; /* OP_UPDATE, OP_DELETE (-1: unconditional) */
    int64_t queued_us;        /* clock_mono_us() at submission */
    payment_store_done_fn done;
    void *arg;
    int err;                  /* result, reported once decided */
    int64_t current_version;  /* -1 unless err is ECONFLICT */
    int64_t seq;              /* OP_CREATE's sequence number */
    const struct payment_idem *idem; /* stored with a successful write, or NULL */
    char *sk;                 /* idem's scope and key (mongo_sk_new), owned; or NULL */
    struct payment_apply apply; /* OP_APPLY: a copy, its pointers borrowed like row's */
    int known;                /* OP_APPLY: its outcome was recorded before */
    struct mongo_outcome outcome; /* OP_APPLY: what it decided */
};

/* A FIFO of operations. */
struct mongo_queue {
    struct mongo_op *head, *tail;
    pthread_cond_t wake; /* signalled on a push and on close */
};

struct mongo_store {
    struct payment_store base;   /* first: what payment_store * points at */
    mongoc_uri_t *uri;           /* owned; the pool reads it */
    mongoc_client_pool_t *pool;  /* clients shared by every thread */
    char db[MONGO_NAME_MAX + 1];
    char coll[MONGO_NAME_MAX + 1];
    char ops_coll[MONGO_NAME_MAX + sizeof MONGO_OPS_SUFFIX];     /* outcomes */
    char parts_coll[MONGO_NAME_MAX + sizeof MONGO_PARTS_SUFFIX]; /* positions */
    int64_t stale_us;            /* a queued write older than this is not tried */
    pthread_mutex_t mu;          /* guards creates, writes, closing */
    struct mongo_queue creates;  /* taken in batches by the create thread */
    struct mongo_queue writes;   /* updates and deletes, one at a time */
    struct mongo_queue applies;  /* operations from the broker, in batches */
    int closing;                 /* no more submissions; workers drain and exit */
    pthread_t threads[2 + MONGO_WRITERS]; /* [0] creates, [1] applies, the rest writes */
    int nthreads;                /* started, to join */
    int sync_ready;              /* mu, setup_mu and the conditions exist */
    pthread_mutex_t setup_mu;    /* one setup attempt at a time */
    atomic_int ready;            /* indexes and counter are in place */
    _Atomic uint64_t n_commits;  /* stats: write commands acknowledged */
    _Atomic uint64_t n_writes;   /* stats: write operations reported */
    struct metrics_sizes batches; /* stats: operations per write command */
};

/* ---- small helpers ------------------------------------------------------ */

/* Server error codes that mean "not now" rather than "never": the server is
 * shutting down, stepping down, unreachable, or could not reach the write
 * concern in time. */
static int mongo_code_transient(uint32_t code)
{
    static const uint32_t codes[] = {
        6,     /* HostUnreachable */
        7,     /* HostNotFound */
        50,    /* MaxTimeMSExpired */
        64,    /* WriteConcernFailed */
        89,    /* NetworkTimeout */
        91,    /* ShutdownInProgress */
        189,   /* PrimarySteppedDown */
        262,   /* ExceededTimeLimit */
        9001,  /* SocketException */
        10107, /* NotWritablePrimary */
        11600, /* InterruptedAtShutdown */
        11602, /* InterruptedDueToReplStateChange */
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
static int mongo_code_err(uint32_t code, const char *msg)
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
static int mongo_map_err(const bson_error_t *e)
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
static mongoc_collection_t *mongo_collection(struct mongo_store *st, mongoc_client_t *c,
                                             const char *name)
{
    return mongoc_client_get_collection(c, st->db, name);
}

/* An int64 field of doc, or fallback when absent. */
static int64_t mongo_get_int64(const bson_t *doc, const char *key, int64_t fallback)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_NUMBER(&it))
        return bson_iter_as_int64(&it);
    return fallback;
}

/* A string field of doc (NUL-terminated inside doc), or NULL. */
static const char *mongo_get_utf8(const bson_t *doc, const char *key, uint32_t *len)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, len);
    return NULL;
}

/* readConcern local: the primary's latest data, for decisions. */
static bool mongo_append_local(bson_t *opts)
{
    bson_t rc;
    return BSON_APPEND_DOCUMENT_BEGIN(opts, "readConcern", &rc) &&
           BSON_APPEND_UTF8(&rc, "level", MONGOC_READ_CONCERN_LEVEL_LOCAL) &&
           bson_append_document_end(opts, &rc);
}

/* The first document of coll that filter matches, projected to proj (NULL:
 * whole), read with read concern local when local is set (else the URI's),
 * copied into out (the caller destroys it).  Returns 0, ENOTFOUND, or a
 * store error. */
static int mongo_find_one(mongoc_collection_t *coll, const bson_t *filter, const bson_t *proj,
                          int local, bson_t *out)
{
    bson_t opts = BSON_INITIALIZER;
    bool ok = (!proj || BSON_APPEND_DOCUMENT(&opts, "projection", proj)) &&
              (!local || mongo_append_local(&opts)) && BSON_APPEND_INT64(&opts, "limit", 1) &&
              BSON_APPEND_BOOL(&opts, "singleBatch", true);
    int err = PAYMENT_STORE_EINTERNAL;
    if (ok) {
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, &opts, NULL);
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
    bson_destroy(&opts);
    return err;
}

/* ---- documents ---------------------------------------------------------- */

/* The optional list columns of row, NULL when absent. */
static void mongo_row_optional(const struct payment_row *row, const char *name[MONGO_ROW_OPTIONAL],
                               const char *value[MONGO_ROW_OPTIONAL])
{
    name[0] = MONGO_F_CURRENCY, value[0] = row->currency;
    name[1] = MONGO_F_SCHEME, value[1] = row->payment_scheme;
    name[2] = MONGO_F_TYPE, value[2] = row->payment_type;
    name[3] = MONGO_F_REF, value[3] = row->reference;
    name[4] = MONGO_F_E2E, value[4] = row->end_to_end_reference;
    name[5] = MONGO_F_DATE, value[5] = row->processing_date[0] ? row->processing_date : NULL;
    name[6] = MONGO_F_AMOUNT, value[6] = row->amount_key[0] ? row->amount_key : NULL;
}

static bool mongo_append_doc_text(bson_t *b, const struct payment_row *row)
{
    if (row->doc_len > INT_MAX)
        return false;
    const char *text = row->doc ? row->doc : "";
    return bson_append_utf8(b, "doc", 3, text, row->doc ? (int)row->doc_len : 0);
}

/* The fields a write sets: the row's columns that are present, the
 * document, the version and modification time. */
static bool mongo_append_columns(bson_t *b, const struct payment_row *row)
{
    const char *name[MONGO_ROW_OPTIONAL], *value[MONGO_ROW_OPTIONAL];
    mongo_row_optional(row, name, value);
    bool ok = BSON_APPEND_UTF8(b, MONGO_F_ORG, row->organisation_id) &&
              BSON_APPEND_INT64(b, "version", row->version) &&
              BSON_APPEND_INT64(b, "modified_ms", row->modified_ms);
    for (int i = 0; ok && i < MONGO_ROW_OPTIONAL; i++)
        if (value[i])
            ok = BSON_APPEND_UTF8(b, name[i], value[i]);
    return ok && mongo_append_doc_text(b, row);
}

/* The text an idempotency record is found by: scope, MONGO_IDEM_SEP, key.
 * Keys never hold the separator, so distinct pairs give distinct texts.
 * Returns it (the caller frees it), or NULL when key is not a key or memory
 * runs out. */
static char *mongo_sk_new(const char *scope, const char *key)
{
    if (!scope || !key || !key[0] || strchr(key, MONGO_IDEM_SEP))
        return NULL;
    size_t ls = strlen(scope), lk = strlen(key);
    char *sk = malloc(ls + lk + 2);
    if (sk) {
        memcpy(sk, scope, ls);
        sk[ls] = MONGO_IDEM_SEP;
        memcpy(sk + ls + 1, key, lk + 1);
    }
    return sk;
}

/* The bytes a record adds to its document, roughly. */
static size_t mongo_idem_size(const struct payment_idem *idem)
{
    if (!idem)
        return 0;
    return strlen(idem->scope) + strlen(idem->key) + (idem->location ? strlen(idem->location) : 0) +
           (idem->body ? idem->body_len : 0) + 256;
}

/* An idempotency record as a write stores it in its payment. */
struct mongo_rec {
    const struct payment_idem *idem; /* the outcome */
    const char *sk;                  /* its scope and key (mongo_sk_new) */
    int64_t rank;                    /* its order among the payment's records */
    int keep;                        /* records the payment keeps after the write, >= 2 */
};

/* How many records a payment keeps when a write of about bytes (its text
 * and its record) pushes one: MONGO_IDEM_KEEP, fewer for large payments,
 * whose records (their answers hold the payment) would otherwise fill the
 * document; never fewer than 2, the create's and the new one. */
static int mongo_idem_keep(size_t bytes)
{
    size_t fit = MONGO_DOC_MAX / 2 / (bytes ? bytes : 1);
    return fit < 2 ? 2 : fit > MONGO_IDEM_KEEP ? MONGO_IDEM_KEEP : (int)fit;
}

/* Appends the record {sk, fingerprint, status, location, etag, body,
 * created, rank} as field key of b; absent headers and body are left out. */
static bool mongo_append_idem(bson_t *b, const char *key, const struct mongo_rec *r)
{
    const struct payment_idem *idem = r->idem;
    if (idem->body && idem->body_len > MONGO_DOC_MAX)
        return false;
    bson_t rec;
    if (!bson_append_document_begin(b, key, -1, &rec))
        return false;
    bool ok = BSON_APPEND_UTF8(&rec, "sk", r->sk) &&
              BSON_APPEND_UTF8(&rec, "fingerprint", idem->fingerprint ? idem->fingerprint : "") &&
              BSON_APPEND_INT32(&rec, "status", idem->status) &&
              (!idem->location || BSON_APPEND_UTF8(&rec, "location", idem->location)) &&
              (!idem->etag || BSON_APPEND_UTF8(&rec, "etag", idem->etag)) &&
              (!idem->body || BSON_APPEND_BINARY(&rec, "body", BSON_SUBTYPE_BINARY,
                                                 (const uint8_t *)idem->body,
                                                 (uint32_t)idem->body_len)) &&
              BSON_APPEND_INT64(&rec, "created", idem->created_ms) &&
              BSON_APPEND_INT64(&rec, "rank", r->rank);
    return bson_append_document_end(b, &rec) && ok;
}

/* {idem: {$each: [record], $sort: {rank: 1}, $slice: -keep}} into $push
 * document push: the record added, the lowest ranks beyond keep dropped. */
static bool mongo_append_idem_push(bson_t *push, const struct mongo_rec *r)
{
    bson_t field, each, sort;
    if (!BSON_APPEND_DOCUMENT_BEGIN(push, MONGO_F_IDEM, &field))
        return false;
    bool ok = BSON_APPEND_ARRAY_BEGIN(&field, "$each", &each);
    if (!ok)
        return false;
    ok = mongo_append_idem(&each, "0", r);
    ok = bson_append_array_end(&field, &each) && ok;
    ok = ok && BSON_APPEND_DOCUMENT_BEGIN(&field, "$sort", &sort) &&
         BSON_APPEND_INT32(&sort, "rank", 1) && bson_append_document_end(&field, &sort) &&
         BSON_APPEND_INT32(&field, "$slice", -r->keep);
    return bson_append_document_end(push, &field) && ok;
}

/* What a broker operation's payment write leaves in the payment: the
 * applier's fence and the entry {id, v} of ops (v, the resulting version,
 * left out for a delete: the tombstone's version is final). */
struct mongo_mark {
    const char *op_id;
    int64_t fence;
    int64_t version; /* -1: none */
};

/* The entry {id, v} as field key of b. */
static bool mongo_append_entry(bson_t *b, const char *key, const struct mongo_mark *mark)
{
    bson_t e;
    if (!bson_append_document_begin(b, key, -1, &e))
        return false;
    bool ok = BSON_APPEND_UTF8(&e, "id", mark->op_id) &&
              (mark->version < 0 || BSON_APPEND_INT64(&e, "v", mark->version));
    return bson_append_document_end(b, &e) && ok;
}

/* {$push: {idem: record (mongo_append_idem_push), ops: {$each: [entry],
 * $slice: -KEEP}}} into update b, with what there is (a broker operation's
 * write may have both). */
static bool mongo_append_push(bson_t *b, const struct mongo_rec *rec,
                              const struct mongo_mark *mark)
{
    if (!rec && !mark)
        return true;
    bson_t push, ops, each;
    if (!BSON_APPEND_DOCUMENT_BEGIN(b, "$push", &push))
        return false;
    bool ok = !rec || mongo_append_idem_push(&push, rec);
    if (ok && mark) {
        ok = BSON_APPEND_DOCUMENT_BEGIN(&push, MONGO_F_OPS, &ops);
        if (!ok)
            return false;
        ok = BSON_APPEND_ARRAY_BEGIN(&ops, "$each", &each);
        if (!ok)
            return false;
        ok = mongo_append_entry(&each, "0", mark);
        ok = bson_append_array_end(&ops, &each) && ok;
        ok = ok && BSON_APPEND_INT32(&ops, "$slice", -MONGO_OPS_KEEP);
        ok = bson_append_document_end(&push, &ops) && ok;
    }
    return bson_append_document_end(b, &push) && ok;
}

/* The document a create inserts, holding its record or its mark when it
 * has one. */
static bool mongo_build_insert(bson_t *b, const struct payment_row *row, int64_t seq,
                               const struct mongo_rec *rec, const struct mongo_mark *mark)
{
    bool ok = BSON_APPEND_UTF8(b, "_id", row->id) && BSON_APPEND_INT64(b, "seq", seq) &&
              BSON_APPEND_INT64(b, "created_ms", row->created_ms) &&
              mongo_append_columns(b, row) && BSON_APPEND_BOOL(b, "deleted", false);
    bson_t list;
    if (ok && mark) {
        ok = BSON_APPEND_INT64(b, MONGO_F_FENCE, mark->fence) &&
             BSON_APPEND_ARRAY_BEGIN(b, MONGO_F_OPS, &list);
        if (!ok)
            return false;
        ok = mongo_append_entry(&list, "0", mark);
        ok = bson_append_array_end(b, &list) && ok;
    }
    if (!ok || !rec)
        return ok;
    if (!BSON_APPEND_ARRAY_BEGIN(b, MONGO_F_IDEM, &list))
        return false;
    ok = mongo_append_idem(&list, "0", rec);
    return bson_append_array_end(b, &list) && ok;
}

/* {$set: columns, $unset: the absent ones, $push: the record or mark};
 * created_ms and seq are kept. */
static bool mongo_build_update(bson_t *b, const struct payment_row *row,
                               const struct mongo_rec *rec, const struct mongo_mark *mark)
{
    const char *name[MONGO_ROW_OPTIONAL], *value[MONGO_ROW_OPTIONAL];
    mongo_row_optional(row, name, value);
    bson_t set, unset;
    bool ok = BSON_APPEND_DOCUMENT_BEGIN(b, "$set", &set);
    if (!ok)
        return false;
    ok = mongo_append_columns(&set, row) &&
         (!mark || BSON_APPEND_INT64(&set, MONGO_F_FENCE, mark->fence));
    if (!bson_append_document_end(b, &set) || !ok)
        return false;
    int absent = 0;
    for (int i = 0; i < MONGO_ROW_OPTIONAL; i++)
        absent += value[i] == NULL;
    if (absent > 0) {
        if (!BSON_APPEND_DOCUMENT_BEGIN(b, "$unset", &unset))
            return false;
        for (int i = 0; ok && i < MONGO_ROW_OPTIONAL; i++)
            if (!value[i])
                ok = BSON_APPEND_UTF8(&unset, name[i], "");
        if (!bson_append_document_end(b, &unset) || !ok)
            return false;
    }
    return mongo_append_push(b, rec, mark);
}

/* A tombstone keeps _id, seq, organisation_id (the shard key when sharded),
 * version, the idempotency records (a delete made with a key is answered
 * again from its record) and the operations' marks; the document and the
 * other columns go. */
static bool mongo_build_tombstone(bson_t *b, const struct mongo_rec *rec,
                                  const struct mongo_mark *mark)
{
    static const char *const gone[] = {"doc",       MONGO_F_CURRENCY, MONGO_F_SCHEME,
                                       MONGO_F_TYPE, MONGO_F_REF,     MONGO_F_E2E,
                                       MONGO_F_DATE, MONGO_F_AMOUNT};
    bson_t set, unset;
    if (!BSON_APPEND_DOCUMENT_BEGIN(b, "$set", &set))
        return false;
    bool ok = BSON_APPEND_BOOL(&set, "deleted", true) &&
              (!mark || BSON_APPEND_INT64(&set, MONGO_F_FENCE, mark->fence));
    if (!bson_append_document_end(b, &set) || !ok)
        return false;
    if (!BSON_APPEND_DOCUMENT_BEGIN(b, "$unset", &unset))
        return false;
    for (size_t i = 0; ok && i < sizeof gone / sizeof gone[0]; i++)
        ok = BSON_APPEND_UTF8(&unset, gone[i], "");
    if (!bson_append_document_end(b, &unset) || !ok)
        return false;
    return mongo_append_push(b, rec, mark);
}

/* ---- setup: indexes and the counter ------------------------------------- */

static bool mongo_build_indexes(bson_t *cmd, const char *coll)
{
    bson_t list;
    bool ok = BSON_APPEND_UTF8(cmd, "createIndexes", coll) &&
              BSON_APPEND_ARRAY_BEGIN(cmd, "indexes", &list);
    if (!ok)
        return false;
    for (size_t i = 0; ok && i < sizeof mongo_indexes / sizeof mongo_indexes[0]; i++) {
        char idx[16];
        const char *k;
        bson_uint32_to_string((uint32_t)i, &k, idx, sizeof idx);
        bson_t spec, key;
        if (!bson_append_document_begin(&list, k, -1, &spec))
            return false;
        ok = BSON_APPEND_DOCUMENT_BEGIN(&spec, "key", &key);
        if (!ok)
            return false;
        for (int f = 0; ok && f < 2 && mongo_indexes[i].field[f]; f++)
            ok = BSON_APPEND_INT32(&key, mongo_indexes[i].field[f], 1);
        ok = bson_append_document_end(&spec, &key) && ok;
        ok = ok && BSON_APPEND_UTF8(&spec, "name", mongo_indexes[i].name);
        if (ok && mongo_indexes[i].unique)
            ok = BSON_APPEND_BOOL(&spec, "unique", true);
        if (ok && mongo_indexes[i].partial) {
            bson_t pfe, cond;
            ok = BSON_APPEND_DOCUMENT_BEGIN(&spec, "partialFilterExpression", &pfe);
            if (!ok)
                return false;
            ok = BSON_APPEND_DOCUMENT_BEGIN(&pfe, mongo_indexes[i].partial, &cond);
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

/* Moves the counter to at least floor (a restore may hold payments the
 * counter has not counted).  $max with upsert is idempotent; two nodes
 * upserting at once may collide on _id, and the loser's retry finds it. */
static bool mongo_counter_floor(mongoc_collection_t *counters, const char *name, int64_t floor,
                                bson_error_t *e)
{
    bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER, opts = BSON_INITIALIZER, max;
    bool ok = BSON_APPEND_UTF8(&filter, "_id", name) &&
              BSON_APPEND_DOCUMENT_BEGIN(&update, "$max", &max) &&
              BSON_APPEND_INT64(&max, "seq", floor) && bson_append_document_end(&update, &max) &&
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

/* Creates the indexes (a no-op when they exist) and floors the counter. */
static bool mongo_setup(struct mongo_store *st, mongoc_client_t *client, bson_error_t *e)
{
    mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
    mongoc_collection_t *counters = mongo_collection(st, client, MONGO_COUNTERS);
    bson_t cmd = BSON_INITIALIZER;
    bool ok = mongo_build_indexes(&cmd, st->coll);
    if (!ok)
        bson_set_error(e, MONGOC_ERROR_BSON, 0, "cannot build the index specification");
    ok = ok && mongoc_collection_write_command_with_opts(coll, &cmd, NULL, NULL, e) &&
         mongo_ops_index(st, client, e);
    int64_t max = ok ? mongo_max_seq(coll, e) : -1;
    ok = max >= 0 && mongo_counter_floor(counters, st->coll, max, e);
    bson_destroy(&cmd);
    mongoc_collection_destroy(counters);
    mongoc_collection_destroy(coll);
    return ok;
}

/* PAYMENT_STORE_OK once setup has succeeded, trying it now if no other
 * thread is: requests never queue behind a setup that waits for MongoDB. */
static int mongo_ready(struct mongo_store *st, mongoc_client_t *client)
{
    if (atomic_load(&st->ready))
        return PAYMENT_STORE_OK;
    if (pthread_mutex_trylock(&st->setup_mu) != 0)
        return PAYMENT_STORE_EUNAVAILABLE;
    int err = PAYMENT_STORE_OK;
    bson_error_t e;
    if (!atomic_load(&st->ready)) {
        if (mongo_setup(st, client, &e))
            atomic_store(&st->ready, 1);
        else
            err = mongo_map_err(&e) == PAYMENT_STORE_EUNAVAILABLE ? PAYMENT_STORE_EUNAVAILABLE
                                                                 : PAYMENT_STORE_EINTERNAL;
    }
    store_unlock(&st->setup_mu);
    return err;
}

/* A client from the pool, which the caller pushes back, with *err set to
 * whether the store is set up (mongo_ready); NULL with *err EUNAVAILABLE
 * when the pool has none.  pop waits only when every client is in use
 * (maxPoolSize); with waitQueueTimeoutMS it may give up. */
static mongoc_client_t *mongo_client(struct mongo_store *st, int *err)
{
    mongoc_client_t *c = mongoc_client_pool_pop(st->pool);
    *err = c ? mongo_ready(st, c) : PAYMENT_STORE_EUNAVAILABLE;
    return c;
}

/* Whether doc's idempotency records (doc.idem, possibly projected to their
 * sk alone) hold sk. */
static int mongo_holds_sk(const bson_t *doc, const char *sk)
{
    bson_iter_t it, list, rec;
    if (!sk || !bson_iter_init_find(&it, doc, MONGO_F_IDEM) || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &list))
        return 0;
    while (bson_iter_next(&list)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&list) || !bson_iter_recurse(&list, &rec) ||
            !bson_iter_find(&rec, "sk") || !BSON_ITER_HOLDS_UTF8(&rec))
            continue;
        if (strcmp(bson_iter_utf8(&rec, NULL), sk) == 0)
            return 1;
    }
    return 0;
}

/* Sets held[i] for each op of ops with a key that a payment other than
 * its own holds already.  The unique index sees only the keys of the
 * op's organisation (it starts with organisation_id, the shard key); this
 * read, on the primary's latest data, finds the others.  Returns 0 or a
 * store error. */
static int mongo_keys_held(mongoc_collection_t *coll, struct mongo_op *const *ops, size_t n,
                           bool *held)
{
    bson_t filter = BSON_INITIALIZER, proj = BSON_INITIALIZER, cond, list;
    size_t keyed = 0;
    bool ok = BSON_APPEND_DOCUMENT_BEGIN(&filter, MONGO_F_IDEM ".sk", &cond) &&
              BSON_APPEND_ARRAY_BEGIN(&cond, "$in", &list);
    for (size_t i = 0; i < n; i++) {
        held[i] = false;
        if (ok && ops[i]->sk) {
            char idx[16];
            const char *k;
            bson_uint32_to_string((uint32_t)keyed++, &k, idx, sizeof idx);
            ok = bson_append_utf8(&list, k, -1, ops[i]->sk, -1);
        }
    }
    ok = ok && bson_append_array_end(&cond, &list) && bson_append_document_end(&filter, &cond) &&
         BSON_APPEND_INT32(&proj, MONGO_F_IDEM ".sk", 1);
    bson_t opts = BSON_INITIALIZER;
    ok = ok && BSON_APPEND_DOCUMENT(&opts, "projection", &proj) && mongo_append_local(&opts);
    int err = ok ? PAYMENT_STORE_OK : PAYMENT_STORE_EINTERNAL;
    if (ok && keyed > 0) {
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
        const bson_t *doc;
        bson_error_t e;
        while (mongoc_cursor_next(cur, &doc)) {
            const char *id = mongo_get_utf8(doc, "_id", NULL);
            for (size_t i = 0; i < n; i++)
                if (ops[i]->sk && (!id || strcmp(id, ops[i]->row.id) != 0) &&
                    mongo_holds_sk(doc, ops[i]->sk))
                    held[i] = true;
        }
        if (mongoc_cursor_error(cur, &e))
            err = mongo_map_err(&e);
        mongoc_cursor_destroy(cur);
    }
    bson_destroy(&filter);
    bson_destroy(&proj);
    bson_destroy(&opts);
    return err;
}

/* ---- the write path: creates -------------------------------------------- */

/* Reserves n sequence numbers; returns the last, or -1 with e set. */
static int64_t mongo_seq_reserve(struct mongo_store *st, mongoc_client_t *client, size_t n,
                                 bson_error_t *e)
{
    mongoc_collection_t *counters = mongo_collection(st, client, MONGO_COUNTERS);
    mongoc_find_and_modify_opts_t *fam = mongoc_find_and_modify_opts_new();
    bson_t query = BSON_INITIALIZER, update = BSON_INITIALIZER, inc;
    bool ok = fam && BSON_APPEND_UTF8(&query, "_id", st->coll) &&
              BSON_APPEND_DOCUMENT_BEGIN(&update, "$inc", &inc) &&
              BSON_APPEND_INT64(&inc, "seq", (int64_t)n) &&
              bson_append_document_end(&update, &inc) &&
              mongoc_find_and_modify_opts_set_update(fam, &update) &&
              mongoc_find_and_modify_opts_set_flags(
                  fam, MONGOC_FIND_AND_MODIFY_UPSERT | MONGOC_FIND_AND_MODIFY_RETURN_NEW);
    int64_t last = -1;
    if (!ok) {
        bson_set_error(e, MONGOC_ERROR_BSON, 0, "cannot build the counter update");
    } else {
        bson_t reply; /* always initialized by the call */
        if (mongoc_collection_find_and_modify_with_opts(counters, &query, fam, &reply, e)) {
            bson_iter_t it, v;
            if (bson_iter_init_find(&it, &reply, "value") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
                bson_iter_recurse(&it, &v) && bson_iter_find(&v, "seq") &&
                BSON_ITER_HOLDS_NUMBER(&v))
                last = bson_iter_as_int64(&v);
            if (last < (int64_t)n)
                bson_set_error(e, MONGOC_ERROR_COMMAND, 0,
                               "the sequence counter answered no number");
        }
        bson_destroy(&reply);
    }
    mongoc_find_and_modify_opts_destroy(fam); /* NULL is a no-op */
    bson_destroy(&query);
    bson_destroy(&update);
    mongoc_collection_destroy(counters);
    return last < (int64_t)n ? -1 : last;
}

/* Sets the result of every write in ops (all undecided: err 1) from a
 * failed bulk write's reply: the ones with a write error get it (a
 * duplicate _id EDUPLICATE, a key another payment holds EIDEMPOTENT); the
 * others succeeded only when every write is accounted for (inserted,
 * matched or upserted, plus write errors) and the write concern held, else
 * their outcome is unknown and they fail with err. */
static void mongo_bulk_results(struct mongo_op **ops, size_t n, const bson_t *reply, int err)
{
    size_t errors = 0;
    bson_iter_t it, list, item;
    if (bson_iter_init_find(&it, reply, "writeErrors") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &list)) {
        while (bson_iter_next(&list)) {
            if (!BSON_ITER_HOLDS_DOCUMENT(&list) || !bson_iter_recurse(&list, &item))
                continue;
            int64_t index = -1, code = 0;
            const char *msg = NULL;
            while (bson_iter_next(&item)) {
                if (strcmp(bson_iter_key(&item), "index") == 0)
                    index = bson_iter_as_int64(&item);
                else if (strcmp(bson_iter_key(&item), "code") == 0)
                    code = bson_iter_as_int64(&item);
                else if (strcmp(bson_iter_key(&item), "errmsg") == 0 &&
                         BSON_ITER_HOLDS_UTF8(&item))
                    msg = bson_iter_utf8(&item, NULL);
            }
            if (index < 0 || (size_t)index >= n || ops[index]->err != 1)
                continue;
            ops[index]->err = mongo_code_err((uint32_t)code, msg);
            errors++;
        }
    }
    /* Inserted, or matched or upserted by an update: done. */
    int64_t done = mongo_get_int64(reply, "nInserted", 0) + mongo_get_int64(reply, "nMatched", 0) +
                   mongo_get_int64(reply, "nUpserted", 0);
    int wc_failed = bson_iter_init_find(&it, reply, "writeConcernErrors") &&
                    BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &list) &&
                    bson_iter_next(&list);
    int known = !wc_failed && (size_t)done + errors == n;
    for (size_t i = 0; i < n; i++)
        if (ops[i]->err == 1)
            ops[i]->err = known ? PAYMENT_STORE_OK : err;
}

/* Executes bulk (holding one write per op) and sets each op's err: OK when
 * all succeeded; else bson_error_t holds the first write error's, and what
 * befell the rest is the reply's to tell. */
static void mongo_bulk_execute(mongoc_bulk_operation_t *bulk, struct mongo_op **ops, size_t n)
{
    bson_t reply; /* always initialized by the call */
    bson_error_t e;
    if (mongoc_bulk_operation_execute(bulk, &reply, &e)) {
        for (size_t i = 0; i < n; i++)
            ops[i]->err = PAYMENT_STORE_OK;
    } else {
        int err = mongo_map_err(&e);
        mongo_bulk_results(ops, n, &reply,
                           err == PAYMENT_STORE_EUNAVAILABLE ? err : PAYMENT_STORE_EINTERNAL);
    }
    bson_destroy(&reply);
}

/* The mark a broker operation's payment write leaves, in *m; NULL for the
 * other writes. */
static const struct mongo_mark *mongo_op_mark(const struct mongo_op *op, struct mongo_mark *m)
{
    if (op->kind != OP_APPLY)
        return NULL;
    m->op_id = op->apply.op_id;
    m->fence = (int64_t)op->apply.fence;
    m->version = op->apply.kind == PAYMENT_APPLY_DELETE ? -1 : op->row.version;
    return m;
}

/* The record op's write stores, in *r; NULL when it has none. */
static const struct mongo_rec *mongo_op_rec(const struct mongo_op *op, struct mongo_rec *r)
{
    if (!op->idem)
        return NULL;
    int create = op->kind == OP_CREATE ||
                 (op->kind == OP_APPLY && op->apply.kind == PAYMENT_APPLY_CREATE);
    int remove = op->kind == OP_DELETE ||
                 (op->kind == OP_APPLY && op->apply.kind == PAYMENT_APPLY_DELETE);
    r->idem = op->idem;
    r->sk = op->sk;
    r->rank = create ? MONGO_RANK_CREATE : remove ? MONGO_RANK_DELETE : op->row.version;
    r->keep = mongo_idem_keep(op->row.doc_len + mongo_idem_size(op->idem));
    return r;
}

/* Inserts the creates of ops (all not yet decided) in one unordered bulk
 * write after reserving their sequence numbers in one $inc.  Returns
 * whether the bulk write was sent (a commit, for the counters). */
static bool mongo_creates_insert(struct mongo_store *st, mongoc_client_t *client,
                                 struct mongo_op **ops, size_t n)
{
    bson_error_t e;
    int64_t last = mongo_seq_reserve(st, client, n, &e);
    if (last < 0) {
        int err = mongo_map_err(&e);
        for (size_t i = 0; i < n; i++)
            ops[i]->err = err == PAYMENT_STORE_EUNAVAILABLE ? err : PAYMENT_STORE_EINTERNAL;
        return false;
    }
    mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
    bson_t opts = BSON_INITIALIZER;
    bool ok = BSON_APPEND_BOOL(&opts, "ordered", false);
    mongoc_bulk_operation_t *bulk =
        ok ? mongoc_collection_create_bulk_operation_with_opts(coll, &opts) : NULL;
    for (size_t i = 0; bulk && i < n; i++) {
        ops[i]->seq = last - (int64_t)n + 1 + (int64_t)i;
        ops[i]->err = 1; /* undecided */
        bson_t doc = BSON_INITIALIZER;
        struct mongo_mark mark;
        struct mongo_rec rec;
        ok = mongo_build_insert(&doc, &ops[i]->row, ops[i]->seq, mongo_op_rec(ops[i], &rec),
                                mongo_op_mark(ops[i], &mark)) &&
             mongoc_bulk_operation_insert_with_opts(bulk, &doc, NULL, &e);
        bson_destroy(&doc);
        if (!ok)
            break;
    }
    bool sent = bulk && ok;
    if (!sent) {
        for (size_t i = 0; i < n; i++)
            ops[i]->err = PAYMENT_STORE_EINTERNAL; /* a document BSON cannot hold */
    } else {
        mongo_bulk_execute(bulk, ops, n);
    }
    mongoc_bulk_operation_destroy(bulk); /* NULL is a no-op */
    bson_destroy(&opts);
    mongoc_collection_destroy(coll);
    return sent;
}

/* Decides a create whose key a payment of another organisation holds: as
 * the embedded store, the id first (EDUPLICATE when it exists), then the
 * key (EIDEMPOTENT). */
static void mongo_create_held(mongoc_collection_t *coll, struct mongo_op *op)
{
    bson_t filter = BSON_INITIALIZER, proj = BSON_INITIALIZER, doc;
    int err = BSON_APPEND_UTF8(&filter, "_id", op->row.id) && BSON_APPEND_INT32(&proj, "_id", 1)
                  ? mongo_find_one(coll, &filter, &proj, 1, &doc)
                  : PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        bson_destroy(&doc);
        err = PAYMENT_STORE_EDUPLICATE;
    } else if (err == PAYMENT_STORE_ENOTFOUND) {
        err = PAYMENT_STORE_EIDEMPOTENT;
    }
    op->err = err;
    bson_destroy(&filter);
    bson_destroy(&proj);
}

/* Decides the creates of ops (all not yet decided): those whose key a
 * payment of another organisation holds are refused (mongo_create_held),
 * the others inserted (mongo_creates_insert).  Returns whether a bulk write
 * was sent. */
static bool mongo_creates_run(struct mongo_store *st, mongoc_client_t *client,
                              struct mongo_op **ops, size_t n)
{
    bool *held = calloc(n, sizeof *held);
    struct mongo_op **todo = malloc(n * sizeof *todo);
    mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
    int err = held && todo ? mongo_keys_held(coll, ops, n, held) : PAYMENT_STORE_EINTERNAL;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (err != PAYMENT_STORE_OK)
            ops[i]->err = err == PAYMENT_STORE_EUNAVAILABLE ? err : PAYMENT_STORE_EINTERNAL;
        else if (held[i])
            mongo_create_held(coll, ops[i]);
        else
            todo[m++] = ops[i];
    }
    mongoc_collection_destroy(coll);
    bool sent = m > 0 && mongo_creates_insert(st, client, todo, m);
    free(held);
    free(todo);
    return sent;
}

/* ---- the write path: updates and deletes -------------------------------- */

/* After a conditional write matched nothing: reads the id's state, on the
 * primary's latest data (read concern local), into *live, *version and
 * *holds (whether its records hold sk; sk may be NULL).  Returns 0, or a
 * store error. */
static int mongo_read_state(mongoc_collection_t *coll, const char *id, const char *sk, int *live,
                            int64_t *version, int *holds)
{
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, proj, rc;
    bool ok = BSON_APPEND_UTF8(&filter, "_id", id) &&
              BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj) &&
              BSON_APPEND_INT32(&proj, "version", 1) && BSON_APPEND_INT32(&proj, "deleted", 1) &&
              (!sk || BSON_APPEND_INT32(&proj, MONGO_F_IDEM ".sk", 1)) &&
              bson_append_document_end(&opts, &proj) &&
              BSON_APPEND_DOCUMENT_BEGIN(&opts, "readConcern", &rc) &&
              BSON_APPEND_UTF8(&rc, "level", MONGOC_READ_CONCERN_LEVEL_LOCAL) &&
              bson_append_document_end(&opts, &rc) && BSON_APPEND_INT64(&opts, "limit", 1) &&
              BSON_APPEND_BOOL(&opts, "singleBatch", true);
    int err = PAYMENT_STORE_EINTERNAL;
    if (ok) {
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
        const bson_t *doc;
        bson_error_t e;
        if (mongoc_cursor_next(cur, &doc)) {
            bson_iter_t it;
            *live = !(bson_iter_init_find(&it, doc, "deleted") && bson_iter_as_bool(&it));
            *version = mongo_get_int64(doc, "version", -1);
            *holds = mongo_holds_sk(doc, sk);
            err = PAYMENT_STORE_OK;
        } else if (mongoc_cursor_error(cur, &e)) {
            err = mongo_map_err(&e);
        } else {
            *live = 0;
            *holds = 0;
            err = PAYMENT_STORE_OK;
        }
        mongoc_cursor_destroy(cur);
    }
    bson_destroy(&filter);
    bson_destroy(&opts);
    return err;
}

/* One compare-and-set: the update (or tombstone) of op, with its record,
 * when the stored payment is live, at the expected version, and does not
 * hold op's key already.  Sets *matched. */
static int mongo_cas(mongoc_collection_t *coll, const struct mongo_op *op, int *matched)
{
    struct mongo_rec rec;
    bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER, reply, ne;
    bool ok = BSON_APPEND_UTF8(&filter, "_id", op->row.id) &&
              BSON_APPEND_BOOL(&filter, "deleted", false);
    if (ok && op->expected_version >= 0)
        ok = BSON_APPEND_INT64(&filter, "version", op->expected_version);
    if (ok && op->sk)
        ok = BSON_APPEND_DOCUMENT_BEGIN(&filter, MONGO_F_IDEM ".sk", &ne) &&
             BSON_APPEND_UTF8(&ne, "$ne", op->sk) && bson_append_document_end(&filter, &ne);
    if (ok)
        ok = op->kind == OP_UPDATE
                 ? op->row.doc_len + mongo_idem_size(op->idem) <= MONGO_DOC_MAX &&
                       mongo_build_update(&update, &op->row, mongo_op_rec(op, &rec), NULL)
                 : mongo_build_tombstone(&update, mongo_op_rec(op, &rec), NULL);
    int err = PAYMENT_STORE_EINTERNAL;
    if (ok) {
        bson_error_t e;
        if (mongoc_collection_update_one(coll, &filter, &update, NULL, &reply, &e)) {
            *matched = mongo_get_int64(&reply, "matchedCount", 0) == 1;
            err = PAYMENT_STORE_OK;
        } else {
            err = mongo_map_err(&e);
            if (err == PAYMENT_STORE_EDUPLICATE)
                err = PAYMENT_STORE_EINTERNAL; /* no update changes _id */
        }
        bson_destroy(&reply); /* always initialized by the call */
    }
    bson_destroy(&filter);
    bson_destroy(&update);
    return err;
}

/* Decides an update or delete: the conditional write, and only when it
 * matched nothing, a read telling "gone" from "other version" from "holds
 * the key already" (in that order, as the embedded store decides).  A read
 * finding the expected version live without the key means the payment
 * changed in between (it was created, or reached that version): the write
 * is tried again. */
static void mongo_write_run(struct mongo_store *st, mongoc_client_t *client, struct mongo_op *op)
{
    mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
    bool held = false; /* by a payment of another organisation: no write */
    op->err = PAYMENT_STORE_ECONFLICT;
    int err = mongo_keys_held(coll, &op, 1, &held);
    for (int tries = 0; err == PAYMENT_STORE_OK && tries < MONGO_CAS_TRIES; tries++) {
        int matched = 0, live = 0, holds = held;
        int64_t version = -1;
        err = held ? PAYMENT_STORE_OK : mongo_cas(coll, op, &matched);
        if (err == PAYMENT_STORE_OK && matched) {
            op->err = PAYMENT_STORE_OK;
            break;
        }
        if (err == PAYMENT_STORE_OK)
            err = mongo_read_state(coll, op->row.id, op->sk, &live, &version, &holds);
        if (err != PAYMENT_STORE_OK)
            break;
        if (!live) {
            op->err = PAYMENT_STORE_ENOTFOUND;
            break;
        }
        op->current_version = version;
        if (op->expected_version >= 0 && version != op->expected_version)
            break; /* ECONFLICT */
        if (holds || held) {
            op->err = PAYMENT_STORE_EIDEMPOTENT;
            break;
        }
    }
    if (err != PAYMENT_STORE_OK)
        op->err = err;
    if (op->err != PAYMENT_STORE_ECONFLICT)
        op->current_version = -1;
    mongoc_collection_destroy(coll);
}

/* ---- queues and worker threads ------------------------------------------ */

static void mongo_report(struct mongo_store *st, struct mongo_op *op)
{
    atomic_fetch_add(&st->n_writes, 1);
    op->done(op->arg, op->err, op->err == PAYMENT_STORE_ECONFLICT ? op->current_version : -1,
             op->kind == OP_CREATE && op->err == PAYMENT_STORE_OK ? op->seq : 0);
    free(op->sk);
    free(op);
}

/* Reports op at once, before it reaches a worker: not counted. */
static void mongo_reject(struct mongo_op *op, int err)
{
    op->done(op->arg, err, -1, 0);
    free(op->sk);
    free(op);
}

static void mongo_queue_push(struct mongo_queue *q, struct mongo_op *op)
{
    if (q->tail)
        q->tail->next = op;
    else
        q->head = op;
    q->tail = op;
    op->next = NULL;
}

static struct mongo_op *mongo_queue_pop(struct mongo_queue *q)
{
    struct mongo_op *op = q->head;
    if (op) {
        q->head = op->next;
        if (!q->head)
            q->tail = NULL;
        op->next = NULL;
    }
    return op;
}

/* Waits for work on q; NULL when closing and q is empty. */
static struct mongo_op *mongo_queue_wait(struct mongo_store *st, struct mongo_queue *q)
{
    store_lock(&st->mu);
    while (!q->head && !st->closing)
        if (pthread_cond_wait(&q->wake, &st->mu) != 0)
            abort();
    struct mongo_op *op = mongo_queue_pop(q);
    return op; /* st->mu still held: the caller may take more, then unlocks */
}

/* Whether op waited so long in its queue that its client has been waiting
 * longer than the store's timeout: MongoDB has been unreachable meanwhile. */
static int mongo_op_stale(const struct mongo_store *st, const struct mongo_op *op)
{
    return clock_mono_us() - op->queued_us > st->stale_us;
}

/* The bytes op's document takes, roughly: its text and its record. */
static size_t mongo_op_bytes(const struct mongo_op *op)
{
    return op->row.doc_len + mongo_idem_size(op->idem);
}

/* Takes the next batch of creates (at least one, at most the batch limits);
 * NULL when closing and none is queued.  *n is its length. */
static struct mongo_op *mongo_creates_take(struct mongo_store *st, size_t *n)
{
    struct mongo_op *head = mongo_queue_wait(st, &st->creates);
    struct mongo_op *tail = head;
    size_t count = head ? 1 : 0;
    size_t bytes = head ? mongo_op_bytes(head) : 0;
    while (head && count < MONGO_CREATE_BATCH_MAX && st->creates.head &&
           bytes + mongo_op_bytes(st->creates.head) <= MONGO_CREATE_BATCH_BYTES) {
        struct mongo_op *op = mongo_queue_pop(&st->creates);
        bytes += mongo_op_bytes(op);
        tail->next = op;
        tail = op;
        count++;
    }
    store_unlock(&st->mu);
    *n = count;
    return head;
}

/* Decides a batch: stale creates fail at once, the rest go to MongoDB. */
static void mongo_creates_batch(struct mongo_store *st, struct mongo_op *batch, size_t n)
{
    struct mongo_op **live = malloc(n * sizeof *live);
    size_t nlive = 0;
    for (struct mongo_op *op = batch; op; op = op->next) {
        if (!live || mongo_op_bytes(op) > MONGO_DOC_MAX)
            op->err = PAYMENT_STORE_EINTERNAL; /* out of memory, or more than BSON holds */
        else if (mongo_op_stale(st, op))
            op->err = PAYMENT_STORE_EUNAVAILABLE;
        else
            live[nlive++] = op;
    }
    if (nlive) {
        int err = PAYMENT_STORE_OK;
        mongoc_client_t *client = mongo_client(st, &err);
        if (err != PAYMENT_STORE_OK) {
            for (size_t i = 0; i < nlive; i++)
                live[i]->err = err;
        } else if (mongo_creates_run(st, client, live, nlive)) {
            atomic_fetch_add(&st->n_commits, 1);
            metrics_sizes_observe(&st->batches, nlive);
        }
        if (client)
            mongoc_client_pool_push(st->pool, client);
    }
    free(live);
}

static void *mongo_creates_main(void *arg)
{
    struct mongo_store *st = arg;
    for (;;) {
        size_t n;
        struct mongo_op *batch = mongo_creates_take(st, &n);
        if (!batch)
            return NULL; /* closing, and every queued create is done */
        mongo_creates_batch(st, batch, n);
        while (batch) {
            struct mongo_op *op = batch;
            batch = op->next;
            mongo_report(st, op);
        }
    }
}

static void *mongo_writes_main(void *arg)
{
    struct mongo_store *st = arg;
    for (;;) {
        struct mongo_op *op = mongo_queue_wait(st, &st->writes);
        store_unlock(&st->mu);
        if (!op)
            return NULL;
        int err = PAYMENT_STORE_EUNAVAILABLE;
        mongoc_client_t *client = mongo_op_stale(st, op) ? NULL : mongo_client(st, &err);
        if (client && err == PAYMENT_STORE_OK) {
            mongo_write_run(st, client, op);
            if (op->err == PAYMENT_STORE_OK) {
                atomic_fetch_add(&st->n_commits, 1);
                metrics_sizes_observe(&st->batches, 1);
            }
        }
        else
            op->err = err;
        if (client)
            mongoc_client_pool_push(st->pool, client);
        mongo_report(st, op);
    }
}

/* ---- operations from the broker ------------------------------------------
 *
 * The embedded store applies an operation in one transaction.  MongoDB
 * gives none here (a deployment need not be a replica set, and sharded
 * transactions are slow), so an apply is five single-document steps, each
 * idempotent, ordered so that a crash anywhere leaves a redelivery that is
 * recognised, and conditioned so that a stale lease holder is harmless:
 *
 *  1. position: the partition's document {_id: partition, last_seq, fence}
 *     is read: seq at or below last_seq is ESKIPPED, a fence above ours
 *     EFENCED; nothing written.
 *  2. claim: the outcome document {_id: op id} is upserted with our fence
 *     unless it holds an outcome (status) or a fence above ours.  Holding
 *     an outcome, the operation is known (republished): on to step 5, then
 *     ESKIPPED.  A fence above ours: EFENCED.
 *  3. payment write: one conditional single-document write that also sets
 *     the payment's fence to ours, pushes {id: op, v: version} to its ops
 *     and, with a key, pushes the idempotency record to its idem (as the
 *     synchronous writes do).  An update or delete is filtered on {version,
 *     deleted: false, ops.id != op, idem.sk != key, fence not above ours};
 *     when it matches nothing, or the idem index refuses the key (another
 *     payment holds it: nothing written), a findAndModify raises the
 *     payment's fence to ours (unless above: EFENCED) and the outcome is
 *     decided from what it returns: ops holding op is "succeeded" with its
 *     v (an earlier attempt's write, recognised instead of repeated), else
 *     not_found, version_conflict, idempotency_key_in_use (refused, or its
 *     idem holds the key), or a retry.  A create inserts a document holding
 *     the mark and the record; a duplicate _id or key reads the id: ops
 *     holding op is "succeeded", another document duplicate_id, none
 *     idempotency_key_in_use.
 *  4. record: the outcome document gets the outcome, only while it holds
 *     our claim (our fence, no status; upserted if it was purged).
 *  5. advance: the partition's document gets (max(last_seq, seq), our
 *     fence), only while its fence is not above ours.
 *
 * Why each operation takes effect exactly once:
 *  - Its payment write happens at most once: it requires op absent from
 *    ops and pushes op in the same atomic write.  ops keeps the newest
 *    MONGO_OPS_KEEP entries; an entry is needed only until its outcome is
 *    recorded, and a partition has one operation in flight at a time (one
 *    per partition in a batch; the worker waits for each), so one entry per
 *    payment is all that is ever needed.
 *  - The position is written last: a crash anywhere leaves it before op,
 *    so op is delivered again and step 2 finds its outcome, or step 3 its
 *    write, or nothing of it happened but a claim and a raised fence (a
 *    failure that was not recorded had no effect: decided again, as if for
 *    the first time).
 *  - A partition's operations run one at a time (one per partition in a
 *    batch), and the worker submits the next one only once the previous
 *    one was applied or skipped, hence recorded: an operation decided
 *    again on redelivery finds no later operation of its partition
 *    applied, so the order holds.
 *  - One decision is recorded per operation, the last claimer's: a claim
 *    replaces only claims as old or older, never an outcome, and a record
 *    needs its claim to stand.  A stale holder (its lease taken over by a
 *    newer fence) records before the newer holder claims (which then finds
 *    the outcome), or its record is refused: EFENCED.
 *  - The recorded decision agrees with the payment: every decision of step
 *    3 on an existing payment raises the payment's fence first (the write
 *    itself, or the findAndModify), and a write needs that fence not above
 *    the writer's; so once the newer holder decided, the stale one can no
 *    longer write, and what it wrote before, the newer one finds in ops.
 *    (A payment is one organisation's, so one partition's: its fence only
 *    ever meets the leases of that partition.)
 *  - Positions never move back nor to an older fence: step 5's filter.
 *  - An idempotency record exists exactly when its operation's payment
 *    write does: it is pushed in that write, which the unique idem index
 *    (or the filter, within one payment) refuses whole when the key is
 *    held, by a synchronous write or another operation.  So a write that
 *    carried op in ops carried the record too, and recognising op there
 *    on redelivery ("succeeded") needs no look at the record; a failure
 *    stores none.  The outcome keeps the request's fingerprint.
 *
 * What this cannot do without a transaction: an update or delete decided
 * not_found raises no fence (there is no document), so a stale holder
 * still in the middle of the same operation could apply it if a
 * synchronous create of that very id lands in between: a lease lost
 * mid-write, an operation on a payment that does not exist, and a create
 * of its id racing it, all at once. */

/* {field: {$not: {$gt: v}}}: at most v, or absent (payments the
 * synchronous path wrote have no fence). */
static bool mongo_append_not_above(bson_t *b, const char *field, int64_t v)
{
    bson_t cond, gt;
    return BSON_APPEND_DOCUMENT_BEGIN(b, field, &cond) &&
           BSON_APPEND_DOCUMENT_BEGIN(&cond, "$not", &gt) && BSON_APPEND_INT64(&gt, "$gt", v) &&
           bson_append_document_end(&cond, &gt) && bson_append_document_end(b, &cond);
}

/* {field: {$exists: false}}. */
static bool mongo_append_absent(bson_t *b, const char *field)
{
    bson_t cond;
    return BSON_APPEND_DOCUMENT_BEGIN(b, field, &cond) &&
           BSON_APPEND_BOOL(&cond, "$exists", false) &&
           bson_append_document_end(b, &cond);
}

/* Whether doc's ops holds op_id; *v is that entry's v, or -1 without one. */
static int mongo_ops_hold(const bson_t *doc, const char *op_id, int64_t *v)
{
    bson_iter_t it, list, entry;
    *v = -1;
    if (!bson_iter_init_find(&it, doc, MONGO_F_OPS) || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &list))
        return 0;
    while (bson_iter_next(&list)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&list) || !bson_iter_recurse(&list, &entry))
            continue;
        bson_iter_t id = entry;
        if (!bson_iter_find(&id, "id") || !BSON_ITER_HOLDS_UTF8(&id) ||
            strcmp(bson_iter_utf8(&id, NULL), op_id) != 0)
            continue;
        if (bson_iter_find(&entry, "v") && BSON_ITER_HOLDS_NUMBER(&entry))
            *v = bson_iter_as_int64(&entry);
        return 1;
    }
    return 0;
}

static void mongo_outcome_ok(struct mongo_op *op, int64_t version)
{
    op->outcome.status = "succeeded";
    op->outcome.error_code = NULL;
    op->outcome.message = NULL;
    op->outcome.version = version;
}

/* The failures a payment write decides, worded as the synchronous API's. */
static void mongo_outcome_failed(struct mongo_op *op, int err, int64_t current)
{
    op->outcome.status = "failed";
    op->outcome.version = -1;
    switch (err) {
    case PAYMENT_STORE_ENOTFOUND:
        op->outcome.error_code = "not_found";
        op->outcome.message = "no payment with this id";
        break;
    case PAYMENT_STORE_ECONFLICT:
        op->outcome.error_code = "version_conflict";
        op->outcome.message = "the payment has changed since that version; fetch it and retry";
        op->outcome.version = current;
        break;
    case PAYMENT_STORE_EIDEMPOTENT:
        op->outcome.error_code = "idempotency_key_in_use";
        op->outcome.message = "another request with this Idempotency-Key is being processed";
        break;
    default: /* EDUPLICATE */
        op->outcome.error_code = "duplicate_id";
        op->outcome.message = "a payment with this id exists or existed";
        break;
    }
}

/* Step 1 for every undecided operation (err 1) of ops: ESKIPPED or EFENCED
 * from its partition's position, else left undecided. */
static void mongo_apply_positions(struct mongo_store *st, mongoc_client_t *client,
                                  struct mongo_op **ops, size_t n)
{
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, cond, list;
    bool ok = BSON_APPEND_DOCUMENT_BEGIN(&filter, "_id", &cond) &&
              BSON_APPEND_ARRAY_BEGIN(&cond, "$in", &list);
    for (size_t i = 0; ok && i < n; i++) {
        char idx[16];
        const char *k;
        bson_uint32_to_string((uint32_t)i, &k, idx, sizeof idx);
        ok = bson_append_int64(&list, k, -1, ops[i]->apply.partition);
    }
    ok = ok && bson_append_array_end(&cond, &list) && bson_append_document_end(&filter, &cond) &&
         mongo_append_local(&opts);
    int err = PAYMENT_STORE_EINTERNAL;
    if (ok) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->parts_coll);
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
        const bson_t *doc;
        bson_error_t e;
        while (mongoc_cursor_next(cur, &doc)) {
            int64_t p = mongo_get_int64(doc, "_id", -1);
            int64_t last = mongo_get_int64(doc, "last_seq", 0);
            int64_t fence = mongo_get_int64(doc, MONGO_F_FENCE, 0);
            for (size_t i = 0; i < n; i++) {
                const struct payment_apply *a = &ops[i]->apply;
                if (ops[i]->err != 1 || (int64_t)a->partition != p)
                    continue;
                /* Sequence first: a stale redelivery is skipped, whoever delivers it. */
                if ((int64_t)a->seq <= last)
                    ops[i]->err = PAYMENT_STORE_ESKIPPED;
                else if (fence > (int64_t)a->fence)
                    ops[i]->err = PAYMENT_STORE_EFENCED;
            }
        }
        err = mongoc_cursor_error(cur, &e) ? mongo_map_err(&e) : PAYMENT_STORE_OK;
        mongoc_cursor_destroy(cur);
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&filter);
    bson_destroy(&opts);
    for (size_t i = 0; err != PAYMENT_STORE_OK && i < n; i++)
        if (ops[i]->err == 1)
            ops[i]->err = err;
}

/* Builds one operation's upsert of a step: its filter and its update. */
typedef bool (*mongo_upsert_fn)(const struct mongo_op *op, bson_t *filter, bson_t *update);

/* Step 2: ours unless recorded or claimed by a newer fence. */
static bool mongo_build_claim(const struct mongo_op *op, bson_t *filter, bson_t *update)
{
    const struct payment_apply *a = &op->apply;
    bson_t set;
    return BSON_APPEND_UTF8(filter, "_id", a->op_id) && mongo_append_absent(filter, "status") &&
           mongo_append_not_above(filter, MONGO_F_FENCE, (int64_t)a->fence) &&
           BSON_APPEND_DOCUMENT_BEGIN(update, "$set", &set) &&
           BSON_APPEND_INT64(&set, MONGO_F_FENCE, (int64_t)a->fence) &&
           BSON_APPEND_INT64(&set, "applied_ms", a->applied_ms) &&
           bson_append_document_end(update, &set);
}

/* Step 4: the outcome, while our claim stands (the filter's _id and fence
 * are what an upsert inserts). */
static bool mongo_build_record(const struct mongo_op *op, bson_t *filter, bson_t *update)
{
    const struct payment_apply *a = &op->apply;
    const struct mongo_outcome *o = &op->outcome;
    const char *pid = a->payment_id ? a->payment_id : a->row ? op->row.id : NULL;
    const char *org = a->organisation_id ? a->organisation_id
                                         : a->row ? op->row.organisation_id : NULL;
    bson_t set;
    return BSON_APPEND_UTF8(filter, "_id", a->op_id) &&
           BSON_APPEND_INT64(filter, MONGO_F_FENCE, (int64_t)a->fence) &&
           mongo_append_absent(filter, "status") &&
           BSON_APPEND_DOCUMENT_BEGIN(update, "$set", &set) &&
           BSON_APPEND_UTF8(&set, "status", o->status) &&
           (!o->error_code || BSON_APPEND_UTF8(&set, "error_code", o->error_code)) &&
           (!o->message || BSON_APPEND_UTF8(&set, "message", o->message)) &&
           (!pid || BSON_APPEND_UTF8(&set, "payment_id", pid)) &&
           (!org || BSON_APPEND_UTF8(&set, "organisation_id", org)) &&
           BSON_APPEND_INT64(&set, "version", o->version) &&
           BSON_APPEND_INT64(&set, "partition", a->partition) &&
           BSON_APPEND_INT64(&set, "seq", (int64_t)a->seq) &&
           BSON_APPEND_INT64(&set, "applied_ms", a->applied_ms) &&
           (!a->fingerprint || BSON_APPEND_UTF8(&set, "fingerprint", a->fingerprint)) &&
           bson_append_document_end(update, &set);
}

/* Step 5: forward, while no newer fence holds the partition. */
static bool mongo_build_advance(const struct mongo_op *op, bson_t *filter, bson_t *update)
{
    const struct payment_apply *a = &op->apply;
    bson_t max, set;
    return BSON_APPEND_INT64(filter, "_id", a->partition) &&
           mongo_append_not_above(filter, MONGO_F_FENCE, (int64_t)a->fence) &&
           BSON_APPEND_DOCUMENT_BEGIN(update, "$max", &max) &&
           BSON_APPEND_INT64(&max, "last_seq", (int64_t)a->seq) &&
           bson_append_document_end(update, &max) &&
           BSON_APPEND_DOCUMENT_BEGIN(update, "$set", &set) &&
           BSON_APPEND_INT64(&set, MONGO_F_FENCE, (int64_t)a->fence) &&
           bson_append_document_end(update, &set);
}

/* Runs build's upsert for every undecided operation (err 1) of ops, but
 * the known ones when skip_known is set, in one unordered bulk write on
 * collection name.  Each of those then has OK, EDUPLICATE (the filter's
 * condition failed on the existing _id) or an error (mongo_bulk_results);
 * the others are left as they are.  Returns whether the bulk write was
 * sent. */
static bool mongo_apply_upserts(struct mongo_store *st, mongoc_client_t *client, const char *name,
                                struct mongo_op **ops, size_t n, int skip_known,
                                mongo_upsert_fn build)
{
    struct mongo_op *live[MONGO_APPLY_BATCH_MAX];
    size_t m = 0;
    for (size_t i = 0; i < n && m < MONGO_APPLY_BATCH_MAX; i++)
        if (ops[i]->err == 1 && !(skip_known && ops[i]->known))
            live[m++] = ops[i];
    if (m == 0)
        return false;
    mongoc_collection_t *coll = mongo_collection(st, client, name);
    bson_t opts = BSON_INITIALIZER, upsert = BSON_INITIALIZER;
    bson_error_t e;
    bool ok = BSON_APPEND_BOOL(&opts, "ordered", false) &&
              BSON_APPEND_BOOL(&upsert, "upsert", true);
    mongoc_bulk_operation_t *bulk =
        ok ? mongoc_collection_create_bulk_operation_with_opts(coll, &opts) : NULL;
    for (size_t i = 0; bulk && ok && i < m; i++) {
        bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER;
        ok = build(live[i], &filter, &update) &&
             mongoc_bulk_operation_update_one_with_opts(bulk, &filter, &update, &upsert, &e);
        bson_destroy(&filter);
        bson_destroy(&update);
    }
    bool sent = bulk && ok;
    if (!sent) {
        for (size_t i = 0; i < m; i++)
            live[i]->err = PAYMENT_STORE_EINTERNAL;
    } else {
        mongo_bulk_execute(bulk, live, m);
    }
    mongoc_bulk_operation_destroy(bulk); /* NULL is a no-op */
    bson_destroy(&opts);
    bson_destroy(&upsert);
    mongoc_collection_destroy(coll);
    return sent;
}

/* After a claim met an existing outcome document: recorded (known, on to
 * the advance), claimed by a newer fence (EFENCED), or claimed by a claim
 * that raced ours in, or gone (purged): EUNAVAILABLE, to be tried again. */
static void mongo_apply_claimed(struct mongo_store *st, mongoc_client_t *client,
                                struct mongo_op *op)
{
    mongoc_collection_t *coll = mongo_collection(st, client, st->ops_coll);
    bson_t filter = BSON_INITIALIZER, proj = BSON_INITIALIZER, doc;
    int err = PAYMENT_STORE_EINTERNAL;
    if (BSON_APPEND_UTF8(&filter, "_id", op->apply.op_id) &&
        BSON_APPEND_INT32(&proj, "status", 1) && BSON_APPEND_INT32(&proj, MONGO_F_FENCE, 1))
        err = mongo_find_one(coll, &filter, &proj, 1, &doc);
    if (err == PAYMENT_STORE_OK) {
        op->known = mongo_get_utf8(&doc, "status", NULL) != NULL;
        if (op->known)
            err = 1;
        else if (mongo_get_int64(&doc, MONGO_F_FENCE, 0) > (int64_t)op->apply.fence)
            err = PAYMENT_STORE_EFENCED;
        else
            err = PAYMENT_STORE_EUNAVAILABLE;
        bson_destroy(&doc);
    } else if (err == PAYMENT_STORE_ENOTFOUND) {
        err = PAYMENT_STORE_EUNAVAILABLE;
    }
    op->err = err;
    bson_destroy(&filter);
    bson_destroy(&proj);
    mongoc_collection_destroy(coll);
}

/* One findAndModify of the payment id on coll, returning the new document
 * projected to proj into *out and setting *found.  Returns 0 or a store
 * error. */
static int mongo_apply_fam(mongoc_collection_t *coll, const bson_t *query, const bson_t *update,
                           const bson_t *proj, bson_t *out, int *found)
{
    mongoc_find_and_modify_opts_t *fam = mongoc_find_and_modify_opts_new();
    bool ok = fam && mongoc_find_and_modify_opts_set_update(fam, update) &&
              mongoc_find_and_modify_opts_set_fields(fam, proj) &&
              mongoc_find_and_modify_opts_set_flags(fam, MONGOC_FIND_AND_MODIFY_RETURN_NEW);
    int err = PAYMENT_STORE_EINTERNAL;
    *found = 0;
    if (ok) {
        bson_t reply; /* always initialized by the call */
        bson_error_t e;
        if (mongoc_collection_find_and_modify_with_opts(coll, query, fam, &reply, &e)) {
            bson_iter_t it;
            const uint8_t *data = NULL;
            uint32_t len = 0;
            err = PAYMENT_STORE_OK;
            if (bson_iter_init_find(&it, &reply, "value") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
                bson_iter_document(&it, &len, &data);
                bson_t value;
                if (bson_init_static(&value, data, len)) {
                    bson_copy_to(&value, out);
                    *found = 1;
                } else {
                    err = PAYMENT_STORE_EINTERNAL;
                }
            }
        } else {
            err = mongo_map_err(&e);
            if (err == PAYMENT_STORE_EDUPLICATE)
                err = PAYMENT_STORE_EINTERNAL; /* no update here changes _id */
        }
        bson_destroy(&reply);
    }
    mongoc_find_and_modify_opts_destroy(fam); /* NULL is a no-op */
    return err;
}

/* Step 3's write of an update or delete, with op's record when it has one:
 * when the payment is live, at the expected version, without op in ops,
 * without op's key and not fenced above us.  Sets *version (the resulting
 * one) when it matched, else -1.  EIDEMPOTENT: another payment holds the key
 * (nothing written).  An update knows its version; a delete, possibly
 * unconditional, reads its tombstone's (final) in the same findAndModify. */
static int mongo_apply_cas(mongoc_collection_t *coll, const struct mongo_op *op, int64_t *version)
{
    const struct payment_apply *a = &op->apply;
    struct mongo_mark mark;
    struct mongo_rec rec;
    bson_t query = BSON_INITIALIZER, update = BSON_INITIALIZER, proj = BSON_INITIALIZER, ne, doc;
    bool ok = BSON_APPEND_UTF8(&query, "_id", op->row.id) &&
              BSON_APPEND_BOOL(&query, "deleted", false) &&
              (a->expected_version < 0 ||
               BSON_APPEND_INT64(&query, "version", a->expected_version)) &&
              BSON_APPEND_DOCUMENT_BEGIN(&query, MONGO_F_OPS ".id", &ne) &&
              BSON_APPEND_UTF8(&ne, "$ne", a->op_id) && bson_append_document_end(&query, &ne) &&
              mongo_append_not_above(&query, MONGO_F_FENCE, (int64_t)a->fence) &&
              BSON_APPEND_INT32(&proj, "version", 1);
    if (ok && op->sk)
        ok = BSON_APPEND_DOCUMENT_BEGIN(&query, MONGO_F_IDEM ".sk", &ne) &&
             BSON_APPEND_UTF8(&ne, "$ne", op->sk) && bson_append_document_end(&query, &ne);
    if (ok)
        ok = a->kind == PAYMENT_APPLY_UPDATE
                 ? mongo_build_update(&update, &op->row, mongo_op_rec(op, &rec),
                                      mongo_op_mark(op, &mark))
                 : mongo_build_tombstone(&update, mongo_op_rec(op, &rec), mongo_op_mark(op, &mark));
    int err = PAYMENT_STORE_EINTERNAL, found = 0;
    *version = -1;
    if (ok && a->kind == PAYMENT_APPLY_UPDATE) {
        bson_t reply; /* always initialized by the call */
        bson_error_t e;
        if (mongoc_collection_update_one(coll, &query, &update, NULL, &reply, &e)) {
            if (mongo_get_int64(&reply, "matchedCount", 0) == 1)
                *version = op->row.version;
            err = PAYMENT_STORE_OK;
        } else {
            err = mongo_map_err(&e);
            if (err == PAYMENT_STORE_EDUPLICATE)
                err = PAYMENT_STORE_EINTERNAL; /* no update changes _id */
        }
        bson_destroy(&reply);
    } else if (ok) {
        err = mongo_apply_fam(coll, &query, &update, &proj, &doc, &found);
        if (err == PAYMENT_STORE_OK && found) {
            *version = mongo_get_int64(&doc, "version", -1);
            bson_destroy(&doc);
        }
    }
    bson_destroy(&query);
    bson_destroy(&update);
    bson_destroy(&proj);
    return err;
}

/* After step 3's write matched nothing: raises the payment's fence to ours
 * and returns its state (version, deleted, ops, the records' sk) in out
 * (*found), so that no older holder can write it after this decision.
 * EFENCED when a newer one did; *found 0 when there is no such payment. */
static int mongo_apply_fence(mongoc_collection_t *coll, const struct mongo_op *op, bson_t *out,
                             int *found)
{
    const struct payment_apply *a = &op->apply;
    bson_t query = BSON_INITIALIZER, update = BSON_INITIALIZER, proj = BSON_INITIALIZER, set;
    bool ok = BSON_APPEND_UTF8(&query, "_id", op->row.id) &&
              mongo_append_not_above(&query, MONGO_F_FENCE, (int64_t)a->fence) &&
              BSON_APPEND_DOCUMENT_BEGIN(&update, "$set", &set) &&
              BSON_APPEND_INT64(&set, MONGO_F_FENCE, (int64_t)a->fence) &&
              bson_append_document_end(&update, &set) && BSON_APPEND_INT32(&proj, "version", 1) &&
              BSON_APPEND_INT32(&proj, "deleted", 1) && BSON_APPEND_INT32(&proj, MONGO_F_OPS, 1) &&
              (!op->sk || BSON_APPEND_INT32(&proj, MONGO_F_IDEM ".sk", 1));
    int err = ok ? mongo_apply_fam(coll, &query, &update, &proj, out, found)
                 : PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK && !*found) {
        /* Missed: no such payment, or a newer fence on it. */
        bson_t filter = BSON_INITIALIZER, doc;
        err = BSON_APPEND_UTF8(&filter, "_id", op->row.id)
                  ? mongo_find_one(coll, &filter, &proj, 1, &doc)
                  : PAYMENT_STORE_EINTERNAL;
        if (err == PAYMENT_STORE_OK) {
            bson_destroy(&doc);
            err = PAYMENT_STORE_EFENCED;
        } else if (err == PAYMENT_STORE_ENOTFOUND) {
            err = PAYMENT_STORE_OK;
        }
        bson_destroy(&filter);
    }
    bson_destroy(&query);
    bson_destroy(&update);
    bson_destroy(&proj);
    return err;
}

/* Step 3 for an update or delete: the write, and only when it wrote
 * nothing, the decision on the fenced payment, in the embedded store's
 * order: gone, other version, then the key held (by another payment: the
 * write's duplicate key; by this one: its records).  The payment changing
 * between the two (it reached the expected version) is tried again. */
static void mongo_apply_write(mongoc_collection_t *coll, struct mongo_op *op)
{
    const struct payment_apply *a = &op->apply;
    bool held = false; /* by a payment of another organisation: no write */
    int err = mongo_keys_held(coll, &op, 1, &held);
    if (err != PAYMENT_STORE_OK) {
        op->err = err;
        return;
    }
    op->err = PAYMENT_STORE_EUNAVAILABLE; /* still moving after every try: later */
    for (int tries = 0; tries < MONGO_CAS_TRIES; tries++) {
        int64_t version = -1;
        err = held ? PAYMENT_STORE_EIDEMPOTENT : mongo_apply_cas(coll, op, &version);
        if (err == PAYMENT_STORE_OK && version >= 0) {
            mongo_outcome_ok(op, version);
            op->err = 1;
            return;
        }
        int taken = err == PAYMENT_STORE_EIDEMPOTENT;
        bson_t doc;
        int found = 0;
        if (err == PAYMENT_STORE_OK || taken)
            err = mongo_apply_fence(coll, op, &doc, &found);
        if (err != PAYMENT_STORE_OK) {
            op->err = err;
            return;
        }
        if (!found) {
            mongo_outcome_failed(op, PAYMENT_STORE_ENOTFOUND, -1);
            op->err = 1;
            return;
        }
        int64_t v, current = mongo_get_int64(&doc, "version", -1);
        bson_iter_t it;
        int live = !(bson_iter_init_find(&it, &doc, "deleted") && bson_iter_as_bool(&it));
        int decided = 1;
        if (mongo_ops_hold(&doc, a->op_id, &v)) /* an earlier attempt wrote it */
            mongo_outcome_ok(op, v >= 0 ? v : current);
        else if (!live)
            mongo_outcome_failed(op, PAYMENT_STORE_ENOTFOUND, -1);
        else if (a->expected_version >= 0 && current != a->expected_version)
            mongo_outcome_failed(op, PAYMENT_STORE_ECONFLICT, current);
        else if (taken || mongo_holds_sk(&doc, op->sk))
            mongo_outcome_failed(op, PAYMENT_STORE_EIDEMPOTENT, -1);
        else
            decided = 0;
        bson_destroy(&doc);
        if (decided) {
            op->err = 1;
            return;
        }
    }
}

/* Step 3 for a create the insert refused: refused is EDUPLICATE (its _id
 * exists) or EIDEMPOTENT (its key is held; MongoDB names one index of those
 * that refuse it).  A document with the id is an earlier attempt's (it holds
 * op; that insert held the record too) or another payment's, which comes
 * before the key as in the embedded store; without one, another payment
 * holds the key. */
static void mongo_apply_duplicate(mongoc_collection_t *coll, struct mongo_op *op, int refused)
{
    bson_t filter = BSON_INITIALIZER, proj = BSON_INITIALIZER, doc;
    int err = BSON_APPEND_UTF8(&filter, "_id", op->row.id) &&
                      BSON_APPEND_INT32(&proj, "version", 1) &&
                      BSON_APPEND_INT32(&proj, MONGO_F_OPS, 1)
                  ? mongo_find_one(coll, &filter, &proj, 1, &doc)
                  : PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        int64_t v;
        if (mongo_ops_hold(&doc, op->apply.op_id, &v))
            mongo_outcome_ok(op, v >= 0 ? v : 0);
        else
            mongo_outcome_failed(op, PAYMENT_STORE_EDUPLICATE, -1);
        bson_destroy(&doc);
        err = 1;
    } else if (err == PAYMENT_STORE_ENOTFOUND && refused == PAYMENT_STORE_EIDEMPOTENT) {
        mongo_outcome_failed(op, PAYMENT_STORE_EIDEMPOTENT, -1);
        err = 1;
    } else if (err == PAYMENT_STORE_ENOTFOUND) {
        err = PAYMENT_STORE_EINTERNAL; /* ids are never removed */
    }
    op->err = err;
    bson_destroy(&filter);
    bson_destroy(&proj);
}

/* Step 3 for every claimed operation: the creates in one bulk insert, the
 * updates and deletes one by one, kind NONE's failure as the worker
 * decided it.  Operations of one batch are of distinct partitions, so
 * their order among themselves is free. */
static void mongo_apply_writes(struct mongo_store *st, mongoc_client_t *client,
                               struct mongo_op **ops, size_t n)
{
    struct mongo_op *creates[MONGO_APPLY_BATCH_MAX];
    size_t nc = 0;
    mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
    for (size_t i = 0; i < n; i++) {
        struct mongo_op *op = ops[i];
        const struct payment_apply *a = &op->apply;
        if (op->err != 1 || op->known)
            continue;
        switch (a->kind) {
        case PAYMENT_APPLY_NONE:
            op->outcome.status = "failed";
            op->outcome.error_code = a->error_code ? a->error_code : "internal_error";
            op->outcome.message = a->error_message ? a->error_message : "";
            op->outcome.version = -1;
            break;
        case PAYMENT_APPLY_CREATE:
            creates[nc++] = op;
            break;
        default:
            mongo_apply_write(coll, op);
            break;
        }
    }
    if (nc > 0)
        (void)mongo_creates_run(st, client, creates, nc);
    for (size_t i = 0; i < nc; i++) {
        struct mongo_op *op = creates[i];
        if (op->err == PAYMENT_STORE_OK) {
            mongo_outcome_ok(op, 0);
            op->err = 1;
        } else if (op->err == PAYMENT_STORE_EDUPLICATE ||
                   op->err == PAYMENT_STORE_EIDEMPOTENT) {
            mongo_apply_duplicate(coll, op, op->err);
        }
    }
    mongoc_collection_destroy(coll);
}

/* After step 5 met the partition's document: moved by a newer fence
 * (EFENCED), or first written by an insert that raced ours in: EUNAVAILABLE,
 * to be tried again (everything before step 5 is recognised then). */
static void mongo_apply_refused(struct mongo_store *st, mongoc_client_t *client,
                                struct mongo_op *op)
{
    mongoc_collection_t *coll = mongo_collection(st, client, st->parts_coll);
    bson_t filter = BSON_INITIALIZER, doc;
    int err = BSON_APPEND_INT64(&filter, "_id", op->apply.partition)
                  ? mongo_find_one(coll, &filter, NULL, 1, &doc)
                  : PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        err = mongo_get_int64(&doc, MONGO_F_FENCE, 0) > (int64_t)op->apply.fence
                  ? PAYMENT_STORE_EFENCED
                  : PAYMENT_STORE_EUNAVAILABLE;
        bson_destroy(&doc);
    } else if (err == PAYMENT_STORE_ENOTFOUND) {
        err = PAYMENT_STORE_EUNAVAILABLE;
    }
    op->err = err;
    bson_destroy(&filter);
    mongoc_collection_destroy(coll);
}

/* Steps 1 to 5 for a batch (every operation undecided: err 1).  Each ends
 * OK, ESKIPPED, EFENCED, or an error that changed nothing a redelivery
 * would not recognise.  Returns whether a position was written (a commit,
 * for the counters). */
static bool mongo_apply_run(struct mongo_store *st, mongoc_client_t *client, struct mongo_op **ops,
                            size_t n)
{
    /* Between the steps, OK and EDUPLICATE are only ever the last step's
     * results: no step leaves them as a final result. */
    mongo_apply_positions(st, client, ops, n);
    if (mongo_apply_upserts(st, client, st->ops_coll, ops, n, 0, mongo_build_claim)) {
        for (size_t i = 0; i < n; i++) {
            if (ops[i]->err == PAYMENT_STORE_OK)
                ops[i]->err = 1;
            else if (ops[i]->err == PAYMENT_STORE_EDUPLICATE)
                mongo_apply_claimed(st, client, ops[i]);
        }
    }
    mongo_apply_writes(st, client, ops, n);
    if (mongo_apply_upserts(st, client, st->ops_coll, ops, n, 1, mongo_build_record)) {
        for (size_t i = 0; i < n; i++) {
            if (ops[i]->err == PAYMENT_STORE_OK)
                ops[i]->err = 1;
            else if (ops[i]->err == PAYMENT_STORE_EDUPLICATE)
                ops[i]->err = PAYMENT_STORE_EFENCED; /* a newer holder claimed it */
        }
    }
    bool sent = mongo_apply_upserts(st, client, st->parts_coll, ops, n, 0, mongo_build_advance);
    for (size_t i = 0; sent && i < n; i++) {
        if (ops[i]->err == PAYMENT_STORE_OK)
            ops[i]->err = ops[i]->known ? PAYMENT_STORE_ESKIPPED : PAYMENT_STORE_OK;
        else if (ops[i]->err == PAYMENT_STORE_EDUPLICATE)
            mongo_apply_refused(st, client, ops[i]);
    }
    return sent;
}

/* Decides a batch.  While MongoDB is away (*down: the last batch met
 * EUNAVAILABLE), stale operations fail at once; else every one goes to
 * MongoDB, however long it waited (a worker's backlog under load is no
 * outage).  Sets *down for the next batch. */
static void mongo_applies_batch(struct mongo_store *st, struct mongo_op **ops, size_t n,
                                int *down)
{
    bool tried[MONGO_APPLY_BATCH_MAX];
    size_t live = 0;
    for (size_t i = 0; i < n; i++) {
        tried[i] = !(*down && mongo_op_stale(st, ops[i]));
        ops[i]->err = tried[i] ? 1 : PAYMENT_STORE_EUNAVAILABLE;
        live += tried[i];
    }
    if (live == 0)
        return; /* still down, as far as we know */
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (err != PAYMENT_STORE_OK) {
        for (size_t i = 0; i < n; i++)
            if (ops[i]->err == 1)
                ops[i]->err = err;
    } else if (mongo_apply_run(st, client, ops, n)) {
        atomic_fetch_add(&st->n_commits, 1);
        metrics_sizes_observe(&st->batches, live);
    }
    if (client)
        mongoc_client_pool_push(st->pool, client);
    *down = 0;
    for (size_t i = 0; i < n; i++)
        *down |= tried[i] && ops[i]->err == PAYMENT_STORE_EUNAVAILABLE;
}

/* Takes the next batch of operations into ops: the first queued of each
 * partition, in queue order, at most MONGO_APPLY_BATCH_MAX, looking at the
 * first MONGO_APPLY_SCAN queued only; a partition's later ones stay queued,
 * in order, so its operations are applied and reported in submission order.
 * Returns how many, 0 when closing and none is queued. */
static size_t mongo_applies_take(struct mongo_store *st, struct mongo_op **ops)
{
    struct mongo_queue *q = &st->applies;
    struct mongo_op *first = mongo_queue_wait(st, q); /* st->mu held */
    size_t n = 0, scanned = 0;
    if (first)
        ops[n++] = first;
    struct mongo_op *prev = NULL, *op = first ? q->head : NULL;
    while (op && n < MONGO_APPLY_BATCH_MAX && scanned++ < MONGO_APPLY_SCAN) {
        struct mongo_op *next = op->next;
        size_t i = 0;
        while (i < n && ops[i]->apply.partition != op->apply.partition)
            i++;
        if (i == n) { /* its partition's first: taken out of the queue */
            if (prev)
                prev->next = next;
            else
                q->head = next;
            if (q->tail == op)
                q->tail = prev;
            op->next = NULL;
            ops[n++] = op;
        } else {
            prev = op;
        }
        op = next;
    }
    store_unlock(&st->mu);
    return n;
}

static void *mongo_applies_main(void *arg)
{
    struct mongo_store *st = arg;
    struct mongo_op *ops[MONGO_APPLY_BATCH_MAX];
    int down = 0;
    for (;;) {
        size_t n = mongo_applies_take(st, ops);
        if (n == 0)
            return NULL; /* closing, and every queued operation is done */
        mongo_applies_batch(st, ops, n, &down);
        for (size_t i = 0; i < n; i++)
            mongo_report(st, ops[i]);
    }
}

/* ---- submitting writes ------------------------------------------------- */

static void mongo_submit(struct mongo_store *st, struct mongo_op *op)
{
    struct mongo_queue *q = op->kind == OP_CREATE  ? &st->creates
                            : op->kind == OP_APPLY ? &st->applies
                                                   : &st->writes;
    op->queued_us = clock_mono_us();
    store_lock(&st->mu);
    if (st->closing) {
        store_unlock(&st->mu);
        mongo_reject(op, PAYMENT_STORE_EUNAVAILABLE);
        return;
    }
    int was_empty = q->head == NULL;
    mongo_queue_push(q, op);
    /* Workers wait only on an empty queue; several may wait on writes. */
    if (was_empty && pthread_cond_signal(&q->wake) != 0)
        abort();
    store_unlock(&st->mu);
}

/* A new operation, or NULL after reporting EINTERNAL (out of memory). */
static struct mongo_op *mongo_op_new(enum mongo_op_kind kind, payment_store_done_fn done,
                                     void *arg)
{
    struct mongo_op *op = calloc(1, sizeof *op);
    if (!op) {
        done(arg, PAYMENT_STORE_EINTERNAL, -1, 0);
        return NULL;
    }
    op->kind = kind;
    op->done = done;
    op->arg = arg;
    op->current_version = -1;
    op->expected_version = -1;
    return op;
}

/* Gives op its record and the record's sk.  Returns 0 after rejecting op
 * (a record without a usable key is a caller bug; or out of memory). */
static int mongo_op_idem(struct mongo_op *op, const struct payment_idem *idem)
{
    if (!idem)
        return 1;
    op->idem = idem;
    op->sk = mongo_sk_new(idem->scope, idem->key);
    if (!op->sk || !idem->fingerprint) {
        mongo_reject(op, PAYMENT_STORE_EINTERNAL);
        return 0;
    }
    return 1;
}

static void mongo_create(payment_store *s, const struct payment_row *row,
                         const struct payment_idem *idem, payment_store_done_fn done, void *arg)
{
    struct mongo_op *op = mongo_op_new(OP_CREATE, done, arg);
    if (!op)
        return;
    op->row = *row;
    if (!mongo_op_idem(op, idem))
        return;
    if (row->version != 0) {
        mongo_reject(op, PAYMENT_STORE_EINTERNAL); /* a caller bug */
        return;
    }
    mongo_submit((struct mongo_store *)s, op);
}

static void mongo_update(payment_store *s, const struct payment_row *row, int64_t expected_version,
                         const struct payment_idem *idem, payment_store_done_fn done, void *arg)
{
    struct mongo_op *op = mongo_op_new(OP_UPDATE, done, arg);
    if (!op)
        return;
    op->row = *row;
    if (!mongo_op_idem(op, idem))
        return;
    op->expected_version = expected_version;
    if (expected_version < 0 || row->version != expected_version + 1) {
        mongo_reject(op, PAYMENT_STORE_EINTERNAL); /* a caller bug */
        return;
    }
    mongo_submit((struct mongo_store *)s, op);
}

static void mongo_remove(payment_store *s, const char *id, int64_t expected_version,
                         const struct payment_idem *idem, payment_store_done_fn done, void *arg)
{
    struct mongo_op *op = mongo_op_new(OP_DELETE, done, arg);
    if (!op)
        return;
    if (!mongo_op_idem(op, idem))
        return;
    size_t len = strlen(id);
    if (len > UUID_STR_LEN) {
        mongo_reject(op, PAYMENT_STORE_ENOTFOUND); /* longer than any stored id */
        return;
    }
    memcpy(op->row.id, id, len + 1);
    op->expected_version = expected_version < 0 ? -1 : expected_version;
    mongo_submit((struct mongo_store *)s, op);
}

/* Queues a broker operation (store.c has checked it). */
static void mongo_apply(payment_store *s, const struct payment_apply *a,
                        payment_store_done_fn done, void *arg)
{
    struct mongo_op *op = mongo_op_new(OP_APPLY, done, arg);
    if (!op)
        return;
    op->apply = *a;
    /* Kind NONE writes nothing, so it stores no record. */
    if (a->kind != PAYMENT_APPLY_NONE && !mongo_op_idem(op, a->idem))
        return;
    if (a->row) {
        op->row = *a->row;
        if (a->kind != PAYMENT_APPLY_NONE && mongo_op_bytes(op) > MONGO_DOC_MAX) {
            mongo_reject(op, PAYMENT_STORE_EINTERNAL);
            return;
        }
    }
    if (a->kind == PAYMENT_APPLY_DELETE)
        memcpy(op->row.id, a->payment_id, strlen(a->payment_id) + 1);
    mongo_submit((struct mongo_store *)s, op);
}

/* ---- the read path ------------------------------------------------------ */

/* Fills out from the record rec (an element of a document's idem array).
 * Returns 0, or a store error. */
static int mongo_idem_fill(bson_iter_t *rec, struct payment_idem_found *out)
{
    int err = PAYMENT_STORE_OK;
    out->status = 0;
    out->fingerprint[0] = out->etag[0] = '\0';
    while (err == PAYMENT_STORE_OK && bson_iter_next(rec)) {
        const char *k = bson_iter_key(rec);
        uint32_t len = 0;
        if (strcmp(k, "fingerprint") == 0 && BSON_ITER_HOLDS_UTF8(rec)) {
            snprintf(out->fingerprint, sizeof out->fingerprint, "%s", bson_iter_utf8(rec, NULL));
        } else if (strcmp(k, "etag") == 0 && BSON_ITER_HOLDS_UTF8(rec)) {
            snprintf(out->etag, sizeof out->etag, "%s", bson_iter_utf8(rec, NULL));
        } else if (strcmp(k, "status") == 0 && BSON_ITER_HOLDS_NUMBER(rec)) {
            out->status = (int)bson_iter_as_int64(rec);
        } else if (strcmp(k, "location") == 0 && BSON_ITER_HOLDS_UTF8(rec)) {
            const char *text = bson_iter_utf8(rec, &len);
            if (buf_append(&out->location, text, len) != 0)
                err = PAYMENT_STORE_EINTERNAL;
        } else if (strcmp(k, "body") == 0 && BSON_ITER_HOLDS_BINARY(rec)) {
            const uint8_t *data = NULL;
            bson_subtype_t sub;
            bson_iter_binary(rec, &sub, &len, &data);
            if (len && buf_append(&out->body, (const char *)data, len) != 0)
                err = PAYMENT_STORE_EINTERNAL;
        }
    }
    return err;
}

/* Finds the record whose sk is sk in the found document doc (projected to
 * that record) and fills out.  ENOTFOUND when doc holds none. */
static int mongo_idem_parse(const bson_t *doc, const char *sk, struct payment_idem_found *out)
{
    bson_iter_t it, list, rec, field;
    if (!bson_iter_init_find(&it, doc, MONGO_F_IDEM) || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &list))
        return PAYMENT_STORE_ENOTFOUND;
    while (bson_iter_next(&list)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&list) || !bson_iter_recurse(&list, &rec))
            continue;
        field = rec;
        if (bson_iter_find(&field, "sk") && BSON_ITER_HOLDS_UTF8(&field) &&
            strcmp(bson_iter_utf8(&field, NULL), sk) == 0)
            return mongo_idem_fill(&rec, out);
    }
    return PAYMENT_STORE_ENOTFOUND;
}

/* {"idem.sk": sk}, and the projection of that record alone. */
static bool mongo_build_idem_get(bson_t *filter, bson_t *opts, const char *sk)
{
    bson_t proj, match, cond;
    return BSON_APPEND_UTF8(filter, MONGO_F_IDEM ".sk", sk) &&
           BSON_APPEND_DOCUMENT_BEGIN(opts, "projection", &proj) &&
           BSON_APPEND_DOCUMENT_BEGIN(&proj, MONGO_F_IDEM, &match) &&
           BSON_APPEND_DOCUMENT_BEGIN(&match, "$elemMatch", &cond) &&
           BSON_APPEND_UTF8(&cond, "sk", sk) && bson_append_document_end(&match, &cond) &&
           bson_append_document_end(&proj, &match) && BSON_APPEND_INT32(&proj, "_id", 0) &&
           bson_append_document_end(opts, &proj) && BSON_APPEND_INT64(opts, "limit", 1) &&
           BSON_APPEND_BOOL(opts, "singleBatch", true);
}

static int mongo_idem_get(payment_store *s, const char *scope, const char *key,
                          struct payment_idem_found *out)
{
    struct mongo_store *st = (struct mongo_store *)s;
    char *sk = mongo_sk_new(scope, key);
    if (!sk)
        return key && key[0] && !strchr(key, MONGO_IDEM_SEP) ? PAYMENT_STORE_EINTERNAL
                                                             : PAYMENT_STORE_ENOTFOUND;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client) {
        free(sk);
        return err;
    }
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
    if (err == PAYMENT_STORE_OK && !mongo_build_idem_get(&filter, &opts, sk))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
        const bson_t *doc;
        bson_error_t e;
        if (mongoc_cursor_next(cur, &doc))
            err = mongo_idem_parse(doc, sk, out);
        else
            err = mongoc_cursor_error(cur, &e) ? mongo_map_err(&e) : PAYMENT_STORE_ENOTFOUND;
        mongoc_cursor_destroy(cur);
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&filter);
    bson_destroy(&opts);
    mongoc_client_pool_push(st->pool, client);
    free(sk);
    return err;
}

/* {"idem.created": {$lt: before}}, and {$pull: {idem: {created: {$lt:
 * before}}}}: every old record of every document holding one. */
static bool mongo_build_purge(bson_t *filter, bson_t *update, int64_t before_ms)
{
    bson_t lt, pull, match, cond;
    return BSON_APPEND_DOCUMENT_BEGIN(filter, MONGO_F_IDEM ".created", &lt) &&
           BSON_APPEND_INT64(&lt, "$lt", before_ms) && bson_append_document_end(filter, &lt) &&
           BSON_APPEND_DOCUMENT_BEGIN(update, "$pull", &pull) &&
           BSON_APPEND_DOCUMENT_BEGIN(&pull, MONGO_F_IDEM, &match) &&
           BSON_APPEND_DOCUMENT_BEGIN(&match, "created", &cond) &&
           BSON_APPEND_INT64(&cond, "$lt", before_ms) && bson_append_document_end(&match, &cond) &&
           bson_append_document_end(&pull, &match) && bson_append_document_end(update, &pull);
}

/* Forgets the outcomes of operations applied before before_ms, and the
 * claims of attempts made before then that never recorded one. */
static int mongo_purge_ops(struct mongo_store *st, mongoc_client_t *client, int64_t before_ms)
{
    bson_t filter = BSON_INITIALIZER, lt;
    int err = PAYMENT_STORE_EINTERNAL;
    if (BSON_APPEND_DOCUMENT_BEGIN(&filter, "applied_ms", &lt) &&
        BSON_APPEND_INT64(&lt, "$lt", before_ms) && bson_append_document_end(&filter, &lt)) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->ops_coll);
        bson_error_t e;
        err = mongoc_collection_delete_many(coll, &filter, NULL, NULL, &e) ? PAYMENT_STORE_OK
                                                                           : mongo_map_err(&e);
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&filter);
    return err;
}

/* Runs on the calling thread: one update of every document with an old
 * record, then the old operation outcomes.  Returns 0 or a store error. */
static int mongo_purge_run(struct mongo_store *st, int64_t before_ms)
{
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    bson_t filter = BSON_INITIALIZER, update = BSON_INITIALIZER;
    if (err == PAYMENT_STORE_OK && !mongo_build_purge(&filter, &update, before_ms))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
        bson_error_t e;
        if (!mongoc_collection_update_many(coll, &filter, &update, NULL, NULL, &e))
            err = mongo_map_err(&e);
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&filter);
    bson_destroy(&update);
    if (err == PAYMENT_STORE_OK)
        err = mongo_purge_ops(st, client, before_ms);
    mongoc_client_pool_push(st->pool, client);
    return err;
}

static void mongo_idem_purge(payment_store *s, int64_t before_ms)
{
    /* Best effort: records a failed purge leaves are taken by the next. */
    (void)mongo_purge_run((struct mongo_store *)s, before_ms);
}

static int mongo_ping(payment_store *s)
{
    struct mongo_store *st = (struct mongo_store *)s;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    bson_t cmd = BSON_INITIALIZER;
    if (err == PAYMENT_STORE_OK && !BSON_APPEND_INT32(&cmd, "ping", 1))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        bson_t reply; /* always initialized by the call */
        bson_error_t e;
        if (!mongoc_client_command_simple(client, "admin", &cmd, NULL, &reply, &e))
            err = mongo_map_err(&e);
        bson_destroy(&reply);
    }
    bson_destroy(&cmd);
    mongoc_client_pool_push(st->pool, client);
    return err;
}

static bool mongo_build_get(bson_t *filter, bson_t *opts, const char *id)
{
    bson_t proj;
    return BSON_APPEND_UTF8(filter, "_id", id) && BSON_APPEND_BOOL(filter, "deleted", false) &&
           BSON_APPEND_DOCUMENT_BEGIN(opts, "projection", &proj) &&
           BSON_APPEND_INT32(&proj, "doc", 1) && BSON_APPEND_INT32(&proj, "version", 1) &&
           BSON_APPEND_INT32(&proj, "created_ms", 1) && bson_append_document_end(opts, &proj) &&
           BSON_APPEND_INT64(opts, "limit", 1) && BSON_APPEND_BOOL(opts, "singleBatch", true);
}

static int mongo_get(payment_store *s, const char *id, struct buf *doc, int64_t *version,
                     int64_t *created_ms)
{
    struct mongo_store *st = (struct mongo_store *)s;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
    if (err == PAYMENT_STORE_OK && !mongo_build_get(&filter, &opts, id))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
        const bson_t *row;
        bson_error_t e;
        if (mongoc_cursor_next(cur, &row)) {
            uint32_t len = 0;
            const char *text = mongo_get_utf8(row, "doc", &len);
            if (buf_append(doc, text ? text : "", text ? len : 0) != 0) {
                err = PAYMENT_STORE_EINTERNAL;
            } else {
                *version = mongo_get_int64(row, "version", 0);
                if (created_ms)
                    *created_ms = mongo_get_int64(row, "created_ms", 0);
            }
        } else {
            err = mongoc_cursor_error(cur, &e) ? mongo_map_err(&e) : PAYMENT_STORE_ENOTFOUND;
        }
        mongoc_cursor_destroy(cur);
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&filter);
    bson_destroy(&opts);
    mongoc_client_pool_push(st->pool, client);
    return err;
}

/* Copies the string field key of doc into out ("" when absent), cut to fit. */
static void mongo_copy_utf8(const bson_t *doc, const char *key, char *out, size_t len)
{
    const char *v = mongo_get_utf8(doc, key, NULL);
    snprintf(out, len, "%s", v ? v : "");
}

static int mongo_op_get(payment_store *s, const char *op_id, struct payment_op_found *out)
{
    struct mongo_store *st = (struct mongo_store *)s;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    bson_t filter = BSON_INITIALIZER, doc, exists;
    if (err == PAYMENT_STORE_OK &&
        !(BSON_APPEND_UTF8(&filter, "_id", op_id) &&
          BSON_APPEND_DOCUMENT_BEGIN(&filter, "status", &exists) &&
          BSON_APPEND_BOOL(&exists, "$exists", true) && bson_append_document_end(&filter, &exists)))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->ops_coll);
        err = mongo_find_one(coll, &filter, NULL, 0, &doc); /* a claim alone is not found */
        if (err == PAYMENT_STORE_OK) {
            mongo_copy_utf8(&doc, "status", out->status, sizeof out->status);
            mongo_copy_utf8(&doc, "error_code", out->error_code, sizeof out->error_code);
            mongo_copy_utf8(&doc, "message", out->message, sizeof out->message);
            mongo_copy_utf8(&doc, "payment_id", out->payment_id, sizeof out->payment_id);
            mongo_copy_utf8(&doc, "organisation_id", out->organisation_id,
                            sizeof out->organisation_id);
            mongo_copy_utf8(&doc, "fingerprint", out->fingerprint, sizeof out->fingerprint);
            out->version = mongo_get_int64(&doc, "version", -1);
            out->partition = (uint32_t)mongo_get_int64(&doc, "partition", 0);
            out->seq = (uint64_t)mongo_get_int64(&doc, "seq", 0);
            bson_destroy(&doc);
        }
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&filter);
    mongoc_client_pool_push(st->pool, client);
    return err;
}

static int mongo_partition_get(payment_store *s, uint32_t partition, uint64_t *last_seq,
                               uint64_t *fence)
{
    struct mongo_store *st = (struct mongo_store *)s;
    *last_seq = 0;
    *fence = 0;
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    bson_t filter = BSON_INITIALIZER, doc;
    if (err == PAYMENT_STORE_OK && !BSON_APPEND_INT64(&filter, "_id", partition))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->parts_coll);
        err = mongo_find_one(coll, &filter, NULL, 0, &doc);
        if (err == PAYMENT_STORE_OK) {
            *last_seq = (uint64_t)mongo_get_int64(&doc, "last_seq", 0);
            *fence = (uint64_t)mongo_get_int64(&doc, MONGO_F_FENCE, 0);
            bson_destroy(&doc);
        } else if (err == PAYMENT_STORE_ENOTFOUND) {
            err = PAYMENT_STORE_OK; /* nothing applied there yet */
        }
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&filter);
    mongoc_client_pool_push(st->pool, client);
    return err;
}

/* {field: {$in: values}} when the set filter is given. */
static bool mongo_filter_set(bson_t *filter, const char *field, const struct payment_query_set *set)
{
    if (set->count == 0)
        return true;
    bson_t cond, list;
    if (!BSON_APPEND_DOCUMENT_BEGIN(filter, field, &cond))
        return false;
    bool ok = BSON_APPEND_ARRAY_BEGIN(&cond, "$in", &list);
    for (size_t i = 0; ok && i < set->count && i < PAYMENT_QUERY_MAX_VALUES; i++) {
        char idx[16];
        const char *k;
        bson_uint32_to_string((uint32_t)i, &k, idx, sizeof idx);
        ok = bson_append_utf8(&list, k, -1, set->values[i], -1);
    }
    ok = ok && bson_append_array_end(&cond, &list);
    return bson_append_document_end(filter, &cond) && ok;
}

/* {field: {$gte: from, $lte: to}} with the bounds given ("" unset). */
static bool mongo_filter_range(bson_t *filter, const char *field, const char *from, const char *to)
{
    if (!from[0] && !to[0])
        return true;
    bson_t cond;
    if (!BSON_APPEND_DOCUMENT_BEGIN(filter, field, &cond))
        return false;
    bool ok = (!from[0] || BSON_APPEND_UTF8(&cond, "$gte", from)) &&
              (!to[0] || BSON_APPEND_UTF8(&cond, "$lte", to));
    return bson_append_document_end(filter, &cond) && ok;
}

/* An int64 range: from inclusive unless INT64_MIN, to exclusive unless
 * INT64_MAX; op_from and op_to name the comparisons. */
static bool mongo_filter_int_range(bson_t *filter, const char *field, int64_t from,
                                   const char *op_from, int64_t to, const char *op_to)
{
    if (from == INT64_MIN && to == INT64_MAX)
        return true;
    bson_t cond;
    if (!BSON_APPEND_DOCUMENT_BEGIN(filter, field, &cond))
        return false;
    bool ok = (from == INT64_MIN || BSON_APPEND_INT64(&cond, op_from, from)) &&
              (to == INT64_MAX || BSON_APPEND_INT64(&cond, op_to, to));
    return bson_append_document_end(filter, &cond) && ok;
}

/* The filter of q: live payments, its filters, the cursor's position. */
static bool mongo_build_list_filter(bson_t *f, const struct payment_query *q)
{
    return BSON_APPEND_BOOL(f, "deleted", false) &&
           mongo_filter_set(f, MONGO_F_ORG, &q->organisation_id) &&
           mongo_filter_set(f, MONGO_F_CURRENCY, &q->currency) &&
           mongo_filter_set(f, MONGO_F_SCHEME, &q->payment_scheme) &&
           mongo_filter_set(f, MONGO_F_TYPE, &q->payment_type) &&
           mongo_filter_set(f, MONGO_F_REF, &q->reference) &&
           mongo_filter_set(f, MONGO_F_E2E, &q->end_to_end_reference) &&
           mongo_filter_range(f, MONGO_F_DATE, q->processing_date_from, q->processing_date_to) &&
           mongo_filter_range(f, MONGO_F_AMOUNT, q->amount_from, q->amount_to) &&
           mongo_filter_int_range(f, "created_ms", q->created_from_ms, "$gte", q->created_to_ms,
                                  "$lt") &&
           mongo_filter_int_range(f, "seq",
                                  q->mode == PAYMENT_PAGE_CURSOR ? q->after_seq : INT64_MIN, "$gt",
                                  INT64_MAX, "$lt");
}

/* Sequence order, one row more than the page (to learn whether another
 * follows), skipping the pages before an offset page. */
static bool mongo_build_list_opts(bson_t *o, const struct payment_query *q)
{
    bson_t sort, proj;
    int64_t limit = (int64_t)q->page_size + 1;
    bool ok = BSON_APPEND_DOCUMENT_BEGIN(o, "sort", &sort) && BSON_APPEND_INT32(&sort, "seq", 1) &&
              bson_append_document_end(o, &sort) &&
              BSON_APPEND_DOCUMENT_BEGIN(o, "projection", &proj) &&
              BSON_APPEND_INT32(&proj, "doc", 1) && BSON_APPEND_INT32(&proj, "seq", 1) &&
              BSON_APPEND_INT32(&proj, "_id", 0) && bson_append_document_end(o, &proj) &&
              BSON_APPEND_INT64(o, "limit", limit) && BSON_APPEND_INT64(o, "batchSize", limit);
    if (ok && q->mode == PAYMENT_PAGE_OFFSET && q->page_number > 0)
        ok = BSON_APPEND_INT64(o, "skip", (int64_t)q->page_number * q->page_size);
    return ok;
}

/* Steps through the page, calling each per row.  Returns 0, each's non-zero
 * value, or a negative store error. */
static int mongo_list_rows(mongoc_cursor_t *cur, uint32_t page_size, payment_store_row_fn each,
                           void *arg, int *more)
{
    uint32_t n = 0;
    const bson_t *row;
    while (mongoc_cursor_next(cur, &row)) {
        if (n == page_size) {
            *more = 1;
            return PAYMENT_STORE_OK;
        }
        uint32_t len = 0;
        const char *text = mongo_get_utf8(row, "doc", &len);
        int stop = each(arg, text ? text : "", text ? len : 0, mongo_get_int64(row, "seq", 0));
        if (stop)
            return stop;
        n++;
    }
    bson_error_t e;
    return mongoc_cursor_error(cur, &e) ? mongo_map_err(&e) : PAYMENT_STORE_OK;
}

static int mongo_list(payment_store *s, const struct payment_query *q, payment_store_row_fn each,
                      void *arg, int *more)
{
    struct mongo_store *st = (struct mongo_store *)s;
    *more = 0;
    if (q->page_size == 0 || q->page_size > PAYMENT_PAGE_SIZE_MAX)
        return PAYMENT_STORE_EINTERNAL; /* the query parser guarantees 1..MAX */
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (!client)
        return err;
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
    if (err == PAYMENT_STORE_OK &&
        (!mongo_build_list_filter(&filter, q) || !mongo_build_list_opts(&opts, q)))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK) {
        mongoc_collection_t *coll = mongo_collection(st, client, st->coll);
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
        err = mongo_list_rows(cur, q->page_size, each, arg, more);
        mongoc_cursor_destroy(cur);
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&filter);
    bson_destroy(&opts);
    mongoc_client_pool_push(st->pool, client);
    return err;
}

/* ---- open and close ----------------------------------------------------- */

/* The URI split into what libmongoc parses and this store's own options. */
struct mongo_uri_opts {
    char *rest;                     /* the URI without this store's options, owned */
    char coll[MONGO_NAME_MAX + 1];  /* paymentdCollection */
    int wait;                       /* paymentdWaitForStore=true */
};

/* A collection name MongoDB accepts and a shell user can type. */
static int mongo_name_ok(const char *s, size_t len)
{
    if (len == 0 || len > MONGO_NAME_MAX || strncmp(s, "system.", 7) == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

/* Takes one "key=value" option of the query string: returns 1 when it is
 * this store's (and records it), 0 when it is libmongoc's, -1 when invalid. */
static int mongo_uri_own_option(struct mongo_uri_opts *o, const char *opt, size_t len,
                                char *errbuf, size_t errlen)
{
    const char *eq = memchr(opt, '=', len);
    size_t klen = eq ? (size_t)(eq - opt) : len;
    const char *v = eq ? eq + 1 : opt + len;
    size_t vlen = (size_t)(opt + len - v);
    if (klen == strlen(MONGO_OPT_COLLECTION) && strncasecmp(opt, MONGO_OPT_COLLECTION, klen) == 0) {
        if (!mongo_name_ok(v, vlen)) {
            store_errf(errbuf, errlen,
                       "MongoDB URI: %s must be 1 to %d letters, digits, '_', '-' or '.'",
                       MONGO_OPT_COLLECTION, MONGO_NAME_MAX);
            return -1;
        }
        memcpy(o->coll, v, vlen);
        o->coll[vlen] = '\0';
        return 1;
    }
    if (klen == strlen(MONGO_OPT_WAIT) && strncasecmp(opt, MONGO_OPT_WAIT, klen) == 0) {
        if (vlen == 4 && strncasecmp(v, "true", 4) == 0) {
            o->wait = 1;
        } else if (vlen == 5 && strncasecmp(v, "false", 5) == 0) {
            o->wait = 0;
        } else {
            store_errf(errbuf, errlen, "MongoDB URI: %s must be true or false", MONGO_OPT_WAIT);
            return -1;
        }
        return 1;
    }
    return 0;
}

/* Splits uri into o.  Returns 0, or -1 with a reason. */
static int mongo_uri_split(const char *uri, struct mongo_uri_opts *o, char *errbuf, size_t errlen)
{
    snprintf(o->coll, sizeof o->coll, "%s", MONGO_DEFAULT_COLLECTION);
    o->wait = 0;
    size_t n = strlen(uri);
    o->rest = malloc(n + 1);
    if (!o->rest) {
        store_errf(errbuf, errlen, "out of memory");
        return -1;
    }
    const char *q = strchr(uri, '?');
    size_t len = q ? (size_t)(q - uri) : n;
    memcpy(o->rest, uri, len);
    size_t kept = 0;
    for (const char *p = q ? q + 1 : NULL; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t olen = amp ? (size_t)(amp - p) : strlen(p);
        int own = olen ? mongo_uri_own_option(o, p, olen, errbuf, errlen) : 1;
        if (own < 0)
            return -1;
        if (!own) {
            o->rest[len++] = kept++ ? '&' : '?';
            memcpy(o->rest + len, p, olen);
            len += olen;
        }
        p = amp ? amp + 1 : NULL;
    }
    o->rest[len] = '\0';
    return 0;
}

/* "host:port,host:port" of the URI, for messages (never the credentials). */
static void mongo_hosts(const mongoc_uri_t *uri, char *out, size_t outlen)
{
    size_t len = 0;
    out[0] = '\0';
    for (const mongoc_host_list_t *h = mongoc_uri_get_hosts(uri); h && len < outlen; h = h->next) {
        int n = snprintf(out + len, outlen - len, "%s%s", len ? "," : "", h->host_and_port);
        if (n < 0)
            break;
        len += (size_t)n;
    }
}

/* A timeout option: the URI's, else def.  Returns it, or -1 if it cannot be
 * set. */
static int32_t mongo_uri_timeout(mongoc_uri_t *uri, const char *key, int32_t def)
{
    if (!mongoc_uri_has_option(uri, key) && !mongoc_uri_set_option_as_int32(uri, key, def))
        return -1;
    return mongoc_uri_get_option_as_int32(uri, key, def);
}

/* Applies this store's defaults to what the URI leaves unset.  Returns 0,
 * or -1 with a reason. */
static int mongo_uri_defaults(mongoc_uri_t *uri, int32_t *selection_ms, char *errbuf,
                              size_t errlen)
{
    int32_t sel = mongo_uri_timeout(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS,
                                    MONGO_SELECTION_TIMEOUT_MS);
    int32_t sock = mongo_uri_timeout(uri, MONGOC_URI_SOCKETTIMEOUTMS, MONGO_SOCKET_TIMEOUT_MS);
    int32_t conn = mongo_uri_timeout(uri, MONGOC_URI_CONNECTTIMEOUTMS, MONGO_CONNECT_TIMEOUT_MS);
    if (sel <= 0 || sock < 0 || conn < 0) {
        store_errf(errbuf, errlen, "MongoDB URI: bad timeout options");
        return -1;
    }
    *selection_ms = sel;
    const mongoc_write_concern_t *wc = mongoc_uri_get_write_concern(uri);
    if (mongoc_write_concern_is_default(wc)) {
        mongoc_write_concern_t *maj = mongoc_write_concern_new();
        if (!maj) {
            store_errf(errbuf, errlen, "out of memory");
            return -1;
        }
        mongoc_write_concern_set_wmajority(maj, sock ? sock / 5 * 4 : 0);
        mongoc_write_concern_set_journal(maj, true);
        mongoc_uri_set_write_concern(uri, maj); /* copies it */
        mongoc_write_concern_destroy(maj);
    } else if (!mongoc_write_concern_is_acknowledged(wc)) {
        store_errf(errbuf, errlen, "MongoDB URI: w=0 is refused: a reply must follow an "
                                   "acknowledged write");
        return -1;
    }
    const mongoc_read_concern_t *rc = mongoc_uri_get_read_concern(uri);
    if (!mongoc_read_concern_get_level(rc)) {
        mongoc_read_concern_t *maj = mongoc_read_concern_new();
        bool ok = maj && mongoc_read_concern_set_level(maj, MONGOC_READ_CONCERN_LEVEL_MAJORITY);
        if (ok)
            mongoc_uri_set_read_concern(uri, maj); /* copies it */
        mongoc_read_concern_destroy(maj); /* NULL is a no-op */
        if (!ok) {
            store_errf(errbuf, errlen, "MongoDB URI: cannot set the read concern");
            return -1;
        }
    }
    return 0;
}

/* A database name MongoDB accepts. */
static int mongo_db_ok(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 63)
        return 0;
    return strpbrk(s, "/\\. \"$*<>:|?") == NULL;
}

static void mongo_store_free(struct mongo_store *st)
{
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

/* Stops the worker threads after they drained their queues. */
static void mongo_stop_threads(struct mongo_store *st)
{
    store_lock(&st->mu);
    st->closing = 1;
    if (pthread_cond_broadcast(&st->creates.wake) != 0 ||
        pthread_cond_broadcast(&st->writes.wake) != 0 ||
        pthread_cond_broadcast(&st->applies.wake) != 0)
        abort();
    store_unlock(&st->mu);
    for (int i = 0; i < st->nthreads; i++)
        if (pthread_join(st->threads[i], NULL) != 0)
            abort(); /* joinable and not this thread: close must not be called from done */
    st->nthreads = 0;
}

/* Starts the workers with every signal blocked: signals are the main
 * thread's.  Returns 0, or -1 (the started ones are stopped). */
static int mongo_start_threads(struct mongo_store *st)
{
    sigset_t all, old;
    if (sigfillset(&all) != 0 || pthread_sigmask(SIG_BLOCK, &all, &old) != 0)
        return -1;
    int rc = 0;
    for (int i = 0; rc == 0 && i < 2 + MONGO_WRITERS; i++) {
        rc = pthread_create(&st->threads[i], NULL,
                            i == 0   ? mongo_creates_main
                            : i == 1 ? mongo_applies_main
                                     : mongo_writes_main,
                            st);
        if (rc == 0)
            st->nthreads++;
    }
    if (pthread_sigmask(SIG_SETMASK, &old, NULL) != 0)
        abort(); /* cannot fail with a mask it returned */
    if (rc != 0)
        mongo_stop_threads(st);
    return rc == 0 ? 0 : -1;
}

/* The first pop starts libmongoc's monitoring threads: with every signal
 * blocked, so that they never take the process's signals.  Then the setup,
 * whose failure is fatal unless waiting was asked for and MongoDB is only
 * unreachable. */
static int mongo_first_contact(struct mongo_store *st, int wait, char *errbuf, size_t errlen)
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
    int err = PAYMENT_STORE_OK;
    if (mongo_setup(st, client, &e)) {
        atomic_store(&st->ready, 1);
    } else {
        err = mongo_map_err(&e) == PAYMENT_STORE_EUNAVAILABLE ? PAYMENT_STORE_EUNAVAILABLE
                                                             : PAYMENT_STORE_EURI;
        if (err == PAYMENT_STORE_EUNAVAILABLE && wait) {
            err = PAYMENT_STORE_OK; /* the first request that reaches it sets up */
        } else {
            char hosts[256];
            mongo_hosts(st->uri, hosts, sizeof hosts);
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

/* Parses the URI into st: database, collection, defaults.  Returns 0, or a
 * store error with a reason. */
static int mongo_configure(struct mongo_store *st, const char *uri, int *wait, char *errbuf,
                           size_t errlen)
{
    struct mongo_uri_opts o;
    if (mongo_uri_split(uri, &o, errbuf, errlen) != 0) {
        free(o.rest);
        return PAYMENT_STORE_EURI;
    }
    bson_error_t e;
    st->uri = mongoc_uri_new_with_error(o.rest, &e);
    free(o.rest);
    if (!st->uri) {
        store_errf(errbuf, errlen, "bad MongoDB URI: %s", e.message);
        return PAYMENT_STORE_EURI;
    }
    const char *db = mongoc_uri_get_database(st->uri);
    if (!db)
        db = MONGO_DEFAULT_DB;
    if (!mongo_db_ok(db)) {
        store_errf(errbuf, errlen, "MongoDB URI: bad database name \"%.64s\"", db);
        return PAYMENT_STORE_EURI;
    }
    snprintf(st->db, sizeof st->db, "%s", db);
    snprintf(st->coll, sizeof st->coll, "%s", o.coll);
    snprintf(st->ops_coll, sizeof st->ops_coll, "%s" MONGO_OPS_SUFFIX, o.coll);
    snprintf(st->parts_coll, sizeof st->parts_coll, "%s" MONGO_PARTS_SUFFIX, o.coll);
    *wait = o.wait;
    int32_t selection_ms = 0;
    if (mongo_uri_defaults(st->uri, &selection_ms, errbuf, errlen) != 0)
        return PAYMENT_STORE_EURI;
    st->stale_us = (int64_t)selection_ms * 1000;
    return PAYMENT_STORE_OK;
}

static int mongo_open(const char *uri, unsigned flags, payment_store **out, char *errbuf,
                      size_t errlen)
{
    (void)flags; /* PAYMENT_STORE_EXCLUSIVE is the embedded store's */
    /* Process-wide and idempotent.  libmongoc's own log lines would break
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
    atomic_init(&st->n_commits, 0);
    atomic_init(&st->n_writes, 0);
    int wait = 0;
    int err = mongo_configure(st, uri, &wait, errbuf, errlen);
    if (err != PAYMENT_STORE_OK)
        goto fail;
    err = PAYMENT_STORE_EINTERNAL;
    if (mongo_sync_init(st) != 0) {
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
    err = mongo_first_contact(st, wait, errbuf, errlen);
    if (err != PAYMENT_STORE_OK)
        goto fail;
    if (mongo_start_threads(st) != 0) {
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

/* The caller guarantees no call into the store runs or starts meanwhile. */
static void mongo_close(payment_store *s)
{
    struct mongo_store *st = (struct mongo_store *)s;
    mongo_stop_threads(st);
    mongo_store_free(st);
}

const struct payment_store_backend payment_store_mongo_backend = {
    .scheme = "mongodb",
    .open = mongo_open,
    .close = mongo_close,
    .ping = mongo_ping,
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
};
