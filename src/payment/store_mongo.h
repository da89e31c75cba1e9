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
 *   store_mongo_events.c the events: outbox entries, the feed, histories
 *                        (and why the feed's order holds)
 *   store_mongo_sequencer.c the thread that moves outbox entries into the feed
 *   store_mongo_round.c  a round of it: outboxes read, events inserted, pulled
 *   store_mongo_retention.c the purge of old events
 *   store_mongo_webhooks.c webhook endpoints, where a new one starts in the feed
 *   store_mongo_webhook_slots.c the per-organisation limit of endpoints
 *   store_mongo_deliveries.c deliveries: made, the dispatch position, lists, purges
 *   store_mongo_leases.c  deliveries' attempts: claims, records, retries
 *   store_mongo_copy.c    a copy's exports of payments and events
 *   store_mongo_copy_idem.c a copy's export of idempotency records, in key order
 *   store_mongo_import.c  a copy's import: a page written one document at a time
 *   store_mongo_import_events.c its events placed in the feed
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
#define MONGO_ROOM_TRIES 100          /* pauses a write waits for room in a full outbox */
#define MONGO_ROOM_PAUSE_MS 20        /* each */
#define MONGO_DOC_MAX (16000000 - 65536) /* document text MongoDB's 16 MB limit leaves room for */
#define MONGO_F_IDEM "idem"           /* the array of idempotency records */
#define MONGO_IDEM_SK_INDEX "organisation_idem_sk" /* unique: a (scope, key) per organisation */
#define MONGO_IDEM_SEP '\x1f'         /* between scope and key; no key holds it */
#define MONGO_F_OPS "ops"             /* a payment's last operations, {id, v} */
#define MONGO_F_FENCE "fence"         /* the newest lease revision that decided on it */
#define MONGO_OPS_SUFFIX "_operations" /* <collection>_operations: outcomes */
#define MONGO_PARTS_SUFFIX "_partitions" /* <collection>_partitions: positions */
#define MONGO_APPLY_BATCH_MAX 64      /* operations per apply batch, one per partition */
#define MONGO_F_PEND "pend"           /* a payment's outbox: its events not yet in the feed */
#define MONGO_PEND_KEEP 16            /* entries an outbox holds at most */
#define MONGO_EVENTS_SUFFIX "_events" /* <collection>_events: the feed and the histories */
#define MONGO_FEED_SUFFIX "_feed"     /* {_id: <collection>_feed} in counters: watermark, floor */
#define MONGO_EVENTS_VERSION_INDEX "payment_version" /* unique: one event per version */
#define MONGO_HOOKS_SUFFIX "_webhooks" /* <collection>_webhooks: endpoints */
#define MONGO_HOOK_ORGS_SUFFIX "_webhook_orgs" /* <collection>_webhook_orgs: the limit's slots */
#define MONGO_DELIVERIES_SUFFIX "_deliveries" /* <collection>_deliveries: deliveries */
#define MONGO_DISPATCH_SUFFIX "_dispatch" /* {_id: <collection>_dispatch} in counters: pos */
#define MONGO_SCHEMA_SUFFIX "_schema" /* {_id: <collection>_schema} in counters: version */
/* The layout's version (store_mongo_setup.c); a store of a later one is
 * refused, with bson_error_t domain MONGO_ERROR_SCHEMA from mongo_setup. */
#define MONGO_SCHEMA_VERSION 1
#define MONGO_ERROR_SCHEMA 0x7064u
#define MONGO_DELIVERY_KEY_INDEX "webhook_event" /* unique: one delivery per (endpoint, event) */

/* The list's columns, top-level fields of every live document. */
#define MONGO_F_ORG "organisation_id"
#define MONGO_F_CURRENCY "currency"
#define MONGO_F_SCHEME "payment_scheme"
#define MONGO_F_TYPE "payment_type"
#define MONGO_F_REF "reference"
#define MONGO_F_E2E "end_to_end_reference"
#define MONGO_F_DATE "processing_date"
#define MONGO_F_AMOUNT "amount_key"

/* An event as a write puts it in its payment's outbox (store_mongo_events.c).
 * Pointers are borrowed from the write's submitter, or from a document read
 * for the write (a delete's). */
struct mongo_event {
    char id[UUID_STR_LEN + 1];    /* UUIDv7 */
    enum payment_event_type type;
    const char *organisation_id;  /* a delete's: the stored one */
    const char *payment_id;
    int64_t version;              /* the version the change makes */
    int64_t occurred_ms;
    int64_t made_us;              /* when the write was submitted (µs, wall clock): */
                                  /* the feed's order across payments; adoption */
    const char *api_key_id;       /* NULL when none, as are the next four */
    const char *request_id;
    const char *idempotency_key;
    const char *operation_id;
    const char *changes;          /* updates only */
    const char *doc;              /* the payment after the change; a delete's as it was */
    size_t doc_len;
};

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
    struct mongo_event event; /* the event the write records (OP_APPLY: kind NONE none) */
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
    char events_coll[MONGO_NAME_MAX + sizeof MONGO_EVENTS_SUFFIX]; /* the feed */
    char feed_id[MONGO_NAME_MAX + sizeof MONGO_FEED_SUFFIX];       /* its counter's _id */
    char hooks_coll[MONGO_NAME_MAX + sizeof MONGO_HOOKS_SUFFIX];   /* endpoints */
    char hook_orgs_coll[MONGO_NAME_MAX + sizeof MONGO_HOOK_ORGS_SUFFIX]; /* their slots */
    char deliveries_coll[MONGO_NAME_MAX + sizeof MONGO_DELIVERIES_SUFFIX]; /* deliveries */
    char dispatch_id[MONGO_NAME_MAX + sizeof MONGO_DISPATCH_SUFFIX]; /* its counter's _id */
    struct mongo_seq *seq;       /* the sequencer (store_mongo_sequencer.c), owned */
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
    atomic_int refused;          /* setup found a newer schema: never serves, never sets up */
    char refusal[sizeof ((bson_error_t *)0)->message]; /* why, set before refused */
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

/* The feed's document {_id: <collection>_feed} in counters. */
struct mongo_feed {
    int64_t wm;    /* every position 1..wm is filled and final */
    int64_t floor; /* positions at or below it have left the feed */
};

/* Where a sequencer's round may stop, for the tests' crash hook. */
enum mongo_seq_stage {
    MONGO_SEQ_START,    /* a round starts: nothing read yet */
    MONGO_SEQ_INSERTED, /* events inserted, watermark not raised yet */
    MONGO_SEQ_RAISED,   /* watermark raised, entries not pulled yet */
};

/* Tests: called by a round at each stage; non-zero stops the round there,
 * as a crash of its process would. */
typedef int (*mongo_seq_hook_fn)(void *arg, enum mongo_seq_stage stage);

/* ---- store_mongo_uri.c: the URI */

void mongo_hosts(const mongoc_uri_t *uri, char *out, size_t outlen);
int mongo_configure(struct mongo_store *st, const char *uri, int *wait, char *errbuf,
                    size_t errlen);

/* ---- store_mongo_client.c: pooled clients, errors, one-document reads,
 * findAndModify */

int mongo_code_err(uint32_t code, const char *msg);
int mongo_map_err(const bson_error_t *e);
mongoc_collection_t *mongo_collection(struct mongo_store *st, mongoc_client_t *c,
                                      const char *name);
int mongo_find_one(mongoc_collection_t *coll, const bson_t *filter, const bson_t *proj,
                   int local, bson_t *out);
int mongo_find_edge(mongoc_collection_t *coll, const bson_t *filter, const char *field,
                    int ascending, int local, int64_t *value);
int mongo_find_modify(mongoc_collection_t *coll, const bson_t *query,
                      const mongoc_find_and_modify_opts_t *fam, bson_t *out, int *found);
/* Reads a document of a page and passes it on: 0, or what stops the page. */
typedef int (*mongo_doc_fn)(const bson_t *doc, void *arg);
int mongo_page_each(mongoc_cursor_t *cur, uint32_t limit, mongo_doc_fn fn, void *arg, int *more);
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
                        const struct mongo_rec *rec, const struct mongo_mark *mark,
                        const struct mongo_event *ev);
bool mongo_build_update(bson_t *b, const struct payment_row *row,
                        const struct mongo_rec *rec, const struct mongo_mark *mark,
                        const struct mongo_event *ev);
bool mongo_build_tombstone(bson_t *b, const struct mongo_rec *rec,
                           const struct mongo_mark *mark, const struct mongo_event *ev);
int mongo_holds_sk(const bson_t *doc, const char *sk);
bool mongo_append_not_above(bson_t *b, const char *field, int64_t v);
bool mongo_append_absent(bson_t *b, const char *field);
int mongo_ops_hold(const bson_t *doc, const char *op_id, int64_t *v);
void mongo_copy_utf8(const bson_t *doc, const char *key, char *out, size_t len);

/* ---- store_mongo_write.c: the writes */

/* The state of a payment a write decides on (mongo_read_state). */
struct mongo_state {
    int found;       /* a document (live or tombstone) has the id */
    int live;        /* found and not deleted */
    int64_t version;
    int holds;       /* its records hold the write's key */
    int pending;     /* entries in its outbox */
    bson_t doc;      /* with_doc: what was read (doc, organisation_id), when found */
    int has_doc;     /* doc is initialized: the caller destroys it */
};
int mongo_read_state(mongoc_collection_t *coll, const char *id, const char *sk, int with_doc,
                     struct mongo_state *out);
int mongo_delete_event(struct mongo_state *state, struct mongo_event *ev);
void mongo_room_wait(struct mongo_store *st, const char *payment_id);

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

/* ---- store_mongo_events.c: outbox entries, the feed, histories */

int64_t mongo_wall_us(void);
int mongo_event_init(struct mongo_event *e, enum payment_event_type type,
                     const struct payment_event_info *info, const char *payment_id,
                     int64_t fallback_ms);
bool mongo_append_event(bson_t *b, const char *key, const struct mongo_event *e);
int mongo_pend_keep(size_t bytes);
bool mongo_append_pend_room(bson_t *filter, int keep);
int mongo_pend_count(const bson_t *doc);
int mongo_feed_get(struct mongo_store *st, mongoc_client_t *client, int local,
                   struct mongo_feed *out);
int mongo_feed_raise(struct mongo_store *st, mongoc_client_t *client, int64_t wm,
                     int64_t floor);
int mongo_events(payment_store *s, const struct payment_event_query *q,
                 payment_store_event_fn each, void *arg, int64_t *next_pos);
int mongo_history(payment_store *s, const char *payment_id, int64_t after_version,
                  uint32_t limit, payment_store_event_fn each, void *arg, int *more);

/* ---- store_mongo_sequencer.c: the sequencer */

int mongo_seq_new(struct mongo_store *st);
int mongo_seq_start(struct mongo_store *st);
void mongo_seq_free(struct mongo_store *st);
void mongo_seq_note(struct mongo_store *st, const char *payment_id);
void mongo_seq_flush(struct mongo_store *st);
void mongo_seq_notify(struct mongo_store *st);
int mongo_seq_stamp_ids(struct mongo_store *st, mongoc_client_t *client, const char *const *ids,
                        size_t n, int64_t cutoff);
int mongo_seq_crashes(struct mongo_store *st, enum mongo_seq_stage stage);
void mongo_events_subscribe(payment_store *s, void (*fn)(void *arg), void *arg);
void mongo_seq_set_hook(payment_store *s, mongo_seq_hook_fn hook, void *arg);

/* ---- store_mongo_round.c: a round of the sequencer */

int mongo_round_ids(struct mongo_store *st, mongoc_client_t *client, const char *const *ids,
                    size_t n, int64_t cutoff, int *raised);
int mongo_round_adopt(struct mongo_store *st, mongoc_client_t *client, int64_t before_us,
                      int *raised);
int mongo_round_raise(struct mongo_store *st, mongoc_client_t *client, int64_t *wm, int *raised);

/* A bulk write's first write error, if any: *code (0 for none) and *msg
 * (NULL, or pointing into reply). */
void mongo_reply_write_error(const bson_t *reply, int64_t *code, const char **msg);
/* Whether a bulk write's reply holds a write concern error. */
int mongo_reply_wc_failed(const bson_t *reply);

/* ---- store_mongo_retention.c: purging events */

void mongo_events_purge(payment_store *s, int64_t feed_before_ms, int64_t history_before_ms);

/* ---- store_mongo_webhooks.c: endpoints */

void mongo_webhooks_names(struct mongo_store *st);
int mongo_webhook_create(payment_store *s, struct payment_webhook *w);
int mongo_webhook_update(payment_store *s, const struct payment_webhook *w,
                         int64_t expected_version);
int mongo_webhook_delete(payment_store *s, const char *id, int64_t expected_version,
                         int64_t *current_version);
int mongo_webhook_get(payment_store *s, const char *id, payment_store_webhook_fn each,
                      void *arg);
int mongo_webhooks_list(payment_store *s, const struct payment_webhook_query *q,
                        payment_store_webhook_fn each, void *arg, int *more);
int mongo_update_matched(mongoc_collection_t *coll, const bson_t *filter, const bson_t *update,
                         int upsert, int *matched);
int mongo_hook_find(mongoc_collection_t *hooks, const char *id, bson_t *out);

/* ---- store_mongo_webhook_slots.c: the per-organisation limit */

int mongo_slot_take(struct mongo_store *st, mongoc_client_t *client, const char *org,
                    const char *id);
void mongo_slot_give(struct mongo_store *st, mongoc_client_t *client, const char *org,
                     const char *id);

/* ---- store_mongo_deliveries.c: deliveries and the dispatch position */

int mongo_delivery_give(const bson_t *doc, struct buf *json, payment_store_delivery_fn each,
                        void *arg);

int mongo_dispatch_pos(payment_store *s, int64_t *pos);
int mongo_deliveries_add(payment_store *s, int64_t expected_pos, int64_t new_pos,
                         const struct payment_delivery_new *d, size_t n, int reset,
                         int64_t now_ms);
int mongo_deliveries_list(payment_store *s, const struct payment_delivery_query *q,
                          payment_store_delivery_fn each, void *arg, int *more);
int mongo_deliveries_pending(payment_store *s, int64_t *count, int64_t *oldest_ms);
void mongo_deliveries_purge(payment_store *s, int64_t before_ms);

/* ---- store_mongo_leases.c: claims, records, retries */

int mongo_deliveries_claim(payment_store *s, const char *owner, int64_t now_ms, int64_t lease_ms,
                           uint32_t max, payment_store_delivery_fn each, void *arg);
int mongo_deliveries_record(payment_store *s, const struct payment_delivery_attempt *a, size_t n,
                            struct payment_delivery_recorded *out);
int mongo_delivery_retry(payment_store *s, const char *webhook_id, const char *id,
                         int64_t now_ms);

/* ---- store_mongo_copy.c, store_mongo_copy_idem.c: a copy's exports */

int mongo_export_payments(payment_store *s, int64_t after_seq, uint32_t limit,
                          payment_store_export_fn each, void *arg, int *more);
int mongo_export_events(payment_store *s, int64_t after_pos, uint32_t limit,
                        payment_store_event_fn each, void *arg, int *more);
int mongo_export_idem(payment_store *s, const char *after_scope, const char *after_key,
                      uint32_t limit, payment_store_idem_export_fn each, void *arg, int *more);
/* Called with a record's key and the iterator holding the record (a
 * document): 0 to go on, or a store error that stops the walk. */
typedef int (*mongo_sk_fn)(const char *sk, const bson_iter_t *rec, void *arg);
/* Calls fn for each record of doc's MONGO_F_IDEM array that has a text sk,
 * in the array's order (others are passed over): 0, or fn's error. */
int mongo_idem_each_sk(const bson_t *doc, mongo_sk_fn fn, void *arg);

/* ---- store_mongo_import.c: a copy's import, and its inserts */

/* What an ordered insert refused first. */
enum mongo_refusal {
    MONGO_REFUSED_NONE,  /* every document went in */
    MONGO_REFUSED_ID,    /* the next one's _id is taken */
    MONGO_REFUSED_INDEX, /* the next one is a duplicate in another unique index */
};

/* A page's documents, built before they are inserted. */
struct mongo_docs {
    bson_t *doc;  /* n of them, each initialized; owned */
    size_t n;
    size_t cap;   /* room for this many */
};

int mongo_docs_new(struct mongo_docs *d, size_t cap);
void mongo_docs_free(struct mongo_docs *d);
bson_t *mongo_docs_next(struct mongo_docs *d);
int mongo_import_insert(mongoc_collection_t *coll, const bson_t *docs, size_t n,
                        size_t *inserted, enum mongo_refusal *refused);
int mongo_import_find(mongoc_collection_t *coll, const bson_t *filter, const bson_t *proj,
                      mongo_doc_fn fn, void *arg);
int mongo_import(payment_store *s, const struct payment_import *im,
                 struct payment_import_result *out);

/* ---- store_mongo_import_events.c: a page's events placed in the feed */

int mongo_import_events(struct mongo_store *st, mongoc_client_t *client,
                        const struct payment_import *im, size_t *added);

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
