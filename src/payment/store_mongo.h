/* store_mongo.h: what the MongoDB store's files share; internal to the
 * backend (store.c reaches it through store_impl.h's table alone).  The
 * store's design is described in store_mongo.c; each file owns one part:
 *   store_mongo.c        open, close, counters, the backend's table
 *   store_mongo_uri.c    the URI: this store's options and its defaults
 *   store_mongo_client.c pooled clients, errors, one-document reads
 *   store_mongo_setup.c  indexes and the sequence counter
 *   store_mongo_bson.c   the documents, as BSON
 *   store_mongo_write.c  creates, updates, deletes, purges
 *   store_mongo_queue.c  submission, queues, worker threads, reports
 *   store_mongo_apply.c  operations from the broker
 *   store_mongo_read.c   gets, lists, records, outcomes, positions, ping
 * Functions return store errors (store.h) unless they say otherwise. */
#ifndef PAYMENT_STORE_MONGO_H
#define PAYMENT_STORE_MONGO_H

#include <mongoc/mongoc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/metrics.h"
#include "payment/store_impl.h"

#define MONGO_COUNTERS "counters"
#define MONGO_OPT_WAIT "paymentdWaitForStore"
#define MONGO_NAME_MAX 100            /* collection and database names */
#define MONGO_WRITERS 3               /* threads for updates and deletes */
#define MONGO_CAS_TRIES 3             /* conditional write, miss read, again */
#define MONGO_DOC_MAX (16000000 - 65536) /* document text MongoDB's 16 MB limit leaves room for */
#define MONGO_F_IDEM "idem"           /* the array of idempotency records */
#define MONGO_IDEM_SK_INDEX "organisation_idem_sk" /* unique: a (scope, key) per organisation */
#define MONGO_IDEM_SEP '\x1f'         /* between scope and key; no key holds it */
#define MONGO_F_OPS "ops"             /* a payment's last operations, {id, v} */
#define MONGO_F_FENCE "fence"         /* the newest lease revision that decided on it */
#define MONGO_OPS_SUFFIX "_operations" /* <collection>_operations: outcomes */
#define MONGO_PARTS_SUFFIX "_partitions" /* <collection>_partitions: positions */
#define MONGO_APPLY_BATCH_MAX 64      /* operations per apply batch, one per partition */

/* The list's columns, top-level fields of every live document. */
#define MONGO_F_ORG "organisation_id"
#define MONGO_F_CURRENCY "currency"
#define MONGO_F_SCHEME "payment_scheme"
#define MONGO_F_TYPE "payment_type"
#define MONGO_F_REF "reference"
#define MONGO_F_E2E "end_to_end_reference"
#define MONGO_F_DATE "processing_date"
#define MONGO_F_AMOUNT "amount_key"

/* What a queued write is: store.h's create, update, delete, or apply. */
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
    const struct payment_event_info *ev; /* described in the write's event, or NULL */
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

/* The store: what every thread shares.  Owned by open; freed by close. */
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

/* An idempotency record as a write stores it in its payment. */
struct mongo_rec {
    const struct payment_idem *idem; /* the outcome */
    const char *sk;                  /* its scope and key (mongo_sk_new) */
    int64_t rank;                    /* its order among the payment's records */
    int keep;                        /* records the payment keeps after the write, >= 2 */
};

/* What a broker operation's payment write leaves in the payment: the
 * applier's fence and the entry {id, v} of ops (v, the resulting version,
 * left out for a delete: the tombstone's version is final). */
struct mongo_mark {
    const char *op_id;
    int64_t fence;
    int64_t version; /* -1: none */
};

/* ---- store_mongo_uri.c: the URI */

void mongo_hosts(const mongoc_uri_t *uri, char *out, size_t outlen);
int mongo_configure(struct mongo_store *st, const char *uri, int *wait, char *errbuf,
                    size_t errlen);

/* ---- store_mongo_client.c: pooled clients, errors, one-document reads */

int mongo_code_err(uint32_t code, const char *msg);
int mongo_map_err(const bson_error_t *e);
mongoc_collection_t *mongo_collection(struct mongo_store *st, mongoc_client_t *c,
                                      const char *name);
int mongo_find_one(mongoc_collection_t *coll, const bson_t *filter, const bson_t *proj,
                   int local, bson_t *out);
mongoc_client_t *mongo_client(struct mongo_store *st, int *err);

/* ---- store_mongo_setup.c: indexes and the counter */

bool mongo_setup(struct mongo_store *st, mongoc_client_t *client, bson_error_t *e);
int mongo_ready(struct mongo_store *st, mongoc_client_t *client);

/* ---- store_mongo_bson.c: documents */

int64_t mongo_get_int64(const bson_t *doc, const char *key, int64_t fallback);
const char *mongo_get_utf8(const bson_t *doc, const char *key, uint32_t *len);
bool mongo_append_local(bson_t *opts);
char *mongo_sk_new(const char *scope, const char *key);
size_t mongo_idem_size(const struct payment_idem *idem);
int mongo_idem_keep(size_t bytes);
bool mongo_build_insert(bson_t *b, const struct payment_row *row, int64_t seq,
                        const struct mongo_rec *rec, const struct mongo_mark *mark);
bool mongo_build_update(bson_t *b, const struct payment_row *row,
                        const struct mongo_rec *rec, const struct mongo_mark *mark);
bool mongo_build_tombstone(bson_t *b, const struct mongo_rec *rec,
                           const struct mongo_mark *mark);
int mongo_holds_sk(const bson_t *doc, const char *sk);
bool mongo_append_not_above(bson_t *b, const char *field, int64_t v);
bool mongo_append_absent(bson_t *b, const char *field);
int mongo_ops_hold(const bson_t *doc, const char *op_id, int64_t *v);
void mongo_copy_utf8(const bson_t *doc, const char *key, char *out, size_t len);

/* ---- store_mongo_write.c: the writes */

int mongo_keys_held(mongoc_collection_t *coll, struct mongo_op *const *ops, size_t n,
                    bool *held);
void mongo_bulk_execute(mongoc_bulk_operation_t *bulk, struct mongo_op **ops, size_t n);
const struct mongo_mark *mongo_op_mark(const struct mongo_op *op, struct mongo_mark *m);
const struct mongo_rec *mongo_op_rec(const struct mongo_op *op, struct mongo_rec *r);
bool mongo_creates_run(struct mongo_store *st, mongoc_client_t *client,
                       struct mongo_op **ops, size_t n);
void mongo_write_run(struct mongo_store *st, mongoc_client_t *client, struct mongo_op *op);
void mongo_idem_purge(payment_store *s, int64_t before_ms);

/* ---- store_mongo_queue.c: submission and worker threads */

void mongo_create(payment_store *s, const struct payment_row *row,
                  const struct payment_idem *idem, const struct payment_event_info *ev, payment_store_done_fn done, void *arg);
void mongo_update(payment_store *s, const struct payment_row *row, int64_t expected_version,
                  const struct payment_idem *idem, const struct payment_event_info *ev, payment_store_done_fn done, void *arg);
void mongo_remove(payment_store *s, const char *id, int64_t expected_version,
                  const struct payment_idem *idem, const struct payment_event_info *ev, payment_store_done_fn done, void *arg);
void mongo_apply(payment_store *s, const struct payment_apply *a,
                 payment_store_done_fn done, void *arg);
void mongo_stop_threads(struct mongo_store *st);
int mongo_start_threads(struct mongo_store *st);

/* ---- store_mongo_apply.c: operations from the broker */

bool mongo_apply_run(struct mongo_store *st, mongoc_client_t *client, struct mongo_op **ops,
                     size_t n);

/* ---- store_mongo_read.c: the reads */

int mongo_idem_get(payment_store *s, const char *scope, const char *key,
                   struct payment_idem_found *out);
int mongo_ping(payment_store *s);
int mongo_get(payment_store *s, const char *id, struct buf *doc, int64_t *version,
              int64_t *created_ms);
int mongo_op_get(payment_store *s, const char *op_id, struct payment_op_found *out);
int mongo_partition_get(payment_store *s, uint32_t partition, uint64_t *last_seq,
                        uint64_t *fence);
int mongo_list(payment_store *s, const struct payment_query *q, payment_store_row_fn each,
               void *arg, int *more);

#endif
