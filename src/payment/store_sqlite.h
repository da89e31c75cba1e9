/* store_sqlite: what the files of the embedded store share, and nothing
 * else includes.  The store (struct sqlite_store) is one write connection
 * owned by one writer thread, a queue of writes to it, and one read-only
 * connection per reading thread:
 *
 *   store_sqlite.c         open, close, the backend table, shared helpers
 *   store_sqlite_schema.c  the schema's versions and their migration
 *   store_sqlite_writer.c  the write queue, the writer thread, group commit,
 *                          the payment writes and the idempotency purge
 *   store_sqlite_apply.c   operations applied from the broker
 *   store_sqlite_read.c    per-thread read connections, get, idem_get,
 *                          op_get, partition_get
 *   store_sqlite_list.c    list queries
 *   store_sqlite_events.c  the events: recording them in the writes, the
 *                          feed and the histories
 *   store_sqlite_backup.c  online backup of a store file
 *   store_sqlite_webhooks.c    the webhook endpoints, the dispatch position
 *   store_sqlite_deliveries.c  the webhook deliveries and their leases
 *   store_sqlite_deliveries_read.c  reading the deliveries
 *   store_sqlite_copy.c    a copy between stores: the exports, the import
 *
 * Errors: functions returning int give an SQLite result code (SQLITE_OK)
 * unless they say they give a store error (PAYMENT_STORE_*, store.h); the
 * backend functions (those of payment_store_sqlite_backend) have the
 * contract of their store.h counterparts. */
#ifndef PAYMENT_STORE_SQLITE_H
#define PAYMENT_STORE_SQLITE_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>

#include "payment/store_impl.h"

#define SQLITE_URI_PREFIX "sqlite:"
#define SQLITE_BUSY_TIMEOUT_MS 5000
/* List statements kept prepared per reader, by query shape: compiling one
 * cost a tenth of a page of 100. */
#define SQLITE_LIST_CACHE 8
#define SQLITE_NO_PURGE INT64_MIN /* purge_before_ms when no purge is asked for */
/* Feed statements per reader, one per query shape (store_sqlite_events.c):
 * organisations (all, one, several) times the four optional filters. */
#define SQLITE_FEED_SHAPES (3 * 16)
/* How often the writer thread looks for other connections' commits while
 * the events have a subscriber. */
#define SQLITE_EVENTS_POLL_US 200000

/* Statements a connection keeps prepared by their SQL's address, for the
 * low-rate calls (the webhooks') that do not earn a slot of their own. */
#define SQLITE_STMT_CACHE 32

/* Statements prepared on first use, keyed by the address of their SQL (a
 * static string), owned by one connection and used by one thread. */
struct sqlite_stmt_cache {
    const char *sql[SQLITE_STMT_CACHE];   /* NULL: a free slot */
    sqlite3_stmt *stmt[SQLITE_STMT_CACHE];
};

/* Writer statements, prepared once.  Row parameters: ?1 id, ?2 organisation,
 * ?3 version, ?4 created, ?5 modified, ?6..?10 the text columns, ?11
 * processing date, ?12 amount key, ?13 doc; ?14 the expected version.
 * Event parameters: store_sqlite_events.c. */
enum sqlite_wstmt {
    W_BEGIN,
    W_COMMIT,
    W_ROLLBACK,
    W_SAVEPOINT,
    W_RELEASE,
    W_ROLLBACK_TO,
    W_INSERT,
    W_UPDATE,
    W_DELETE,
    W_VERSION,
    W_IDEM_INSERT,
    W_IDEM_PURGE,
    W_OP_PURGE,
    W_SAVEPOINT_WRITE,
    W_RELEASE_WRITE,
    W_ROLLBACK_TO_WRITE,
    W_PART_GET,
    W_PART_PUT,
    W_OP_EXISTS,
    W_OP_INSERT,
    W_EV_INSERT,
    W_EV_DELETE,
    W_DATA_VERSION,
    W_FLOOR_GET,
    W_FLOOR_PUT,
    W_EV_WALK,
    W_EV_PURGE,
    W_COUNT
};

/* The columns a delivery is read from, in the order sqlite_delivery_row
 * (store_sqlite_deliveries_read.c) takes them. */
#define SQLITE_DELIVERY_COLUMNS                                                           \
    "id, webhook_id, event_id, event_pos, status, attempts, created_ms, next_ms,"       \
    " attempts_json, (SELECT body FROM delivery_bodies WHERE delivery_bodies.id = deliveries.id)"

/* The columns an event is read from, in the order sqlite_event_row
 * (store_sqlite_events.c) takes them. */
#define SQLITE_EVENT_COLUMNS                                                              \
    "pos, id, type, organisation_id, payment_id, version, occurred_ms, api_key_id,"       \
    " request_id, idempotency_key, operation_id, changes, doc"

/* Reader statements, prepared once per reading connection. */
enum sqlite_rstmt {
    R_GET,
    R_PING,
    R_IDEM,
    R_OP,
    R_PART,
    R_HISTORY,
    R_READ_BEGIN,
    R_READ_END,
    R_FEED_TOP,
    R_COUNT
};

enum sqlite_op_kind { OP_CREATE, OP_UPDATE, OP_DELETE, OP_APPLY, OP_CALL };

struct sqlite_store;

/* An OP_CALL write: run by the writer thread on the write connection inside
 * the operation's savepoint, within the batch's transaction.  Returns
 * SQLITE_OK with *err its store result (a result other than
 * PAYMENT_STORE_OK rolls the savepoint back), or the SQLite error that kept
 * it from deciding. */
typedef int (*sqlite_call_fn)(struct sqlite_store *st, void *arg, int *err);

/* One queued write.  row is a copy; the pointers in it stay borrowed from the
 * submitter until done has been called. */
struct sqlite_op {
    struct sqlite_op *next;     /* queue and batch link */
    enum sqlite_op_kind kind;
    struct payment_row row;     /* OP_DELETE uses row.id only */
    int64_t expected_version;   /* OP_UPDATE, OP_DELETE, OP_APPLY */
    const struct payment_idem *idem; /* stored with a successful write, or NULL */
    const struct payment_event_info *ev; /* described in the write's event, or NULL */
    payment_store_done_fn done;
    void *arg;
    int err;                    /* result, reported after the commit */
    int64_t current_version;    /* -1 unless err is ECONFLICT */
    int64_t seq;                /* OP_CREATE's sequence number */
    int evented;                /* its event is in the batch's transaction */
    struct payment_apply apply; /* OP_APPLY: a copy, its pointers borrowed like row's */
    sqlite_call_fn call;        /* OP_CALL: the write to run */
    void *call_arg;             /* and its argument, the submitter's */
};

/* One thread's read-only connection. */
struct sqlite_reader {
    struct sqlite_store *st;            /* owner, for the thread-exit destructor */
    sqlite3 *db;
    sqlite3_stmt *stmt[R_COUNT];
    sqlite3_stmt *list[SQLITE_LIST_CACHE]; /* list statements of recent shapes, or NULL */
    unsigned list_next;                 /* the slot the next new shape takes */
    sqlite3_stmt *feed[SQLITE_FEED_SHAPES]; /* feed statements by shape, prepared on use */
    struct sqlite_stmt_cache cache;     /* the webhooks' reads */
    struct sqlite_reader *prev, *next;  /* in st->readers, under st->readers_mu */
};

/* The thread that checkpoints the write-ahead log off the writer thread
 * (store_sqlite_checkpoint.c). */
struct sqlite_checkpointer {
    pthread_t thread;
    int started;              /* the thread runs */
    int sync_made;            /* mu and wake exist */
    sqlite3 *db;              /* its own connection, the thread's */
    pthread_mutex_t mu;       /* guards wanted and stop */
    pthread_cond_t wake;      /* signalled when wanted or stop is set */
    int wanted;               /* the log passed its threshold since the last checkpoint */
    int woken_at;             /* writer thread: the log's length when it last woke the thread */
    int stop;                 /* the store closes */
    _Atomic uint64_t runs;    /* checkpoints made */
};

struct sqlite_store {
    struct payment_store base;  /* first: what payment_store * points at */
    char *path;                 /* absolute file name, owned */
    int exclusive;              /* PAYMENT_STORE_EXCLUSIVE: every connection on unix-excl */
    sqlite3 *wdb;               /* the write connection, the writer thread's while it runs */
    sqlite3_stmt *w[W_COUNT];
    struct sqlite_stmt_cache wcache; /* the writer thread's OP_CALL statements (webhooks) */
    pthread_t writer;
    int writer_started;
    struct sqlite_checkpointer ckpt; /* the log's checkpoints, off the writer thread */
    pthread_mutex_t mu;         /* guards head, tail, the purges' cut-offs, closing, ev_fn, ev_arg */
    pthread_cond_t wake;        /* signalled on a first queued write, a purge, or close */
    struct sqlite_op *head, *tail;
    int64_t purge_before_ms;    /* the purge's cut-off, or SQLITE_NO_PURGE */
    int64_t feed_purge_ms;      /* events before it leave the feed, or SQLITE_NO_PURGE */
    int64_t history_purge_ms;   /* events before it are deleted, or SQLITE_NO_PURGE */
    int closing;                /* no more submissions; the writer drains and exits */
    void (*ev_fn)(void *arg);   /* the events' subscriber, or NULL */
    void *ev_arg;
    int64_t data_version;       /* writer thread: PRAGMA data_version at the last poll, or -1 */
    int64_t poll_next_us;       /* writer thread: when to poll next (clock_mono_us) */
    pthread_key_t reader_key;   /* this store's struct sqlite_reader of the calling thread */
    int have_key;
    pthread_mutex_t readers_mu; /* guards readers */
    struct sqlite_reader *readers;
    _Atomic uint64_t commits;   /* stats, written by the writer thread */
    _Atomic uint64_t writes;
    struct metrics_sizes batches; /* operations per committed transaction */
};

/* ---- store_sqlite.c: shared helpers ---------------------------------------- */

const char *sqlite_vfs(const struct sqlite_store *st);
int sqlite_map_err(int rc);
void sqlite_stmt_release(sqlite3_stmt *stmt);
/* Reads the current row of stmt into a record and passes it on: 0, or
 * what stops the page (a store error, or the callback's non-zero answer). */
typedef int (*sqlite_row_fn)(sqlite3_stmt *stmt, void *arg);
/* Steps a bound statement (rc: the binding's result; any other than
 * SQLITE_OK is returned mapped, with no step) through a page, calling row
 * per row, stopping after limit rows (then *more says whether another
 * followed) or at row's non-zero answer, which it returns.  Releases the
 * statement. */
int sqlite_page_rows(sqlite3_stmt *stmt, int rc, uint32_t limit, sqlite_row_fn row, void *arg,
                     int *more);
int sqlite_stmt_run(sqlite3_stmt *stmt);
int sqlite_bind_opt(sqlite3_stmt *stmt, int i, const char *v);
/* The statement of sql (a static string: its address is the key) on db,
 * prepared on first use and kept in c; NULL with *rc the error when it
 * cannot be prepared.  The caller resets it after use (sqlite_stmt_release). */
sqlite3_stmt *sqlite_cached(sqlite3 *db, struct sqlite_stmt_cache *c, const char *sql, int *rc);
/* Finalizes every statement of c. */
void sqlite_cache_free(struct sqlite_stmt_cache *c);

/* ---- store_sqlite_schema.c -------------------------------------------------- */

/* The first row's first column of sql as text, into out. */
int sqlite_pragma_text(sqlite3 *db, const char *sql, char *out, size_t outlen);
/* The schema version db holds (its user_version; 0 for a new file) into
 * *version: a read, nothing written. */
int sqlite_schema_read(sqlite3 *db, int *version);
/* SQLITE_OK when this build can open a store of schema version (older ones
 * it migrates), else SQLITE_ERROR with the reason in errbuf: a newer one's
 * says "store schema version N is newer than this build's (M): upgrade
 * paymentd". */
int sqlite_schema_check(int version, char *errbuf, size_t errlen);
/* Brings db's schema to the current version in one transaction; refuses a
 * newer one (sqlite_schema_check) without writing. */
int sqlite_schema_migrate(sqlite3 *db, char *errbuf, size_t errlen);

/* ---- store_sqlite_checkpoint.c ---------------------------------------------- */

/* Opens the checkpointer's connection, starts its thread and hooks it to the
 * write connection's commits; before the writer thread starts.  0, or -1
 * (sqlite_checkpointer_stop undoes what was done). */
int sqlite_checkpointer_start(struct sqlite_store *st);
/* Stops the thread and closes its connection; after the writer thread
 * stopped, before the write connection closes.  Safe on a store that never
 * started one. */
void sqlite_checkpointer_stop(struct sqlite_store *st);

/* ---- store_sqlite_writer.c -------------------------------------------------- */

/* Prepares the writer's statements (st->w) on st->wdb. */
int sqlite_writer_prepare(struct sqlite_store *st);
/* Starts the writer thread: 0, or -1 when it cannot be. */
int sqlite_writer_start(struct sqlite_store *st);
/* The payment writes of an operation, inside the caller's transaction:
 * SQLITE_OK with op->err their result, or the SQLite error that kept them
 * from deciding.  sqlite_op_idem records op->idem after a successful one. */
int sqlite_op_create(struct sqlite_store *st, struct sqlite_op *op);
int sqlite_op_update(struct sqlite_store *st, struct sqlite_op *op);
int sqlite_op_delete(struct sqlite_store *st, struct sqlite_op *op);
int sqlite_op_idem(struct sqlite_store *st, struct sqlite_op *op);
void sqlite_create(payment_store *s, const struct payment_row *row,
                   const struct payment_idem *idem, const struct payment_event_info *ev, payment_store_done_fn done, void *arg);
void sqlite_update(payment_store *s, const struct payment_row *row, int64_t expected_version,
                   const struct payment_idem *idem, const struct payment_event_info *ev, payment_store_done_fn done, void *arg);
void sqlite_remove(payment_store *s, const char *id, int64_t expected_version,
                   const struct payment_idem *idem, const struct payment_event_info *ev, payment_store_done_fn done, void *arg);
void sqlite_apply(payment_store *s, const struct payment_apply *a, payment_store_done_fn done,
                  void *arg);
void sqlite_idem_purge(payment_store *s, int64_t before_ms);
void sqlite_stats(payment_store *s, struct payment_store_stats *out);
/* Binds a payment row's columns ?1..?12 (id, organisation_id, version,
 * created_ms, modified_ms, the five text columns, NULL when absent, then
 * processing_date and amount_key, NULL when empty) without copies: row's
 * strings must outlive the statement's run. */
int sqlite_bind_row_columns(sqlite3_stmt *stmt, const struct payment_row *row);
/* Runs fn(st, arg, &err) as an OP_CALL write on the writer thread and waits
 * for its commit: returns err once it is durable, or the error that failed
 * the operation or its batch.  Not from the writer thread (a done callback,
 * the events' subscriber): it would wait for itself. */
int sqlite_call(struct sqlite_store *st, sqlite_call_fn fn, void *arg);

/* ---- store_sqlite_apply.c --------------------------------------------------- */

/* Applies an OP_APPLY operation inside the caller's savepoint. */
int sqlite_op_apply_broker(struct sqlite_store *st, struct sqlite_op *op);

/* ---- store_sqlite_read.c ---------------------------------------------------- */

/* The calling thread's reader, opened on first use; NULL with *err (a store
 * error) when it cannot be opened. */
struct sqlite_reader *sqlite_reader_get(struct sqlite_store *st, int *err);
void sqlite_reader_free(struct sqlite_reader *r);
/* Takes r out of st->readers; the caller holds st->readers_mu or is close. */
void sqlite_reader_unlink(struct sqlite_store *st, struct sqlite_reader *r);
/* The reader key's destructor: a reading thread exits before the store closes. */
void sqlite_reader_exit(void *p);
int sqlite_ping(payment_store *s);
int sqlite_get(payment_store *s, const char *id, struct buf *doc, int64_t *version,
               int64_t *created_ms);
int sqlite_idem_get(payment_store *s, const char *scope, const char *key,
                    struct payment_idem_found *out);
int sqlite_op_get(payment_store *s, const char *op_id, struct payment_op_found *out);
int sqlite_partition_get(payment_store *s, uint32_t partition, uint64_t *last_seq,
                         uint64_t *fence);
/* The calling thread's reader's statement of sql (a static string), kept in
 * its cache; NULL with *err (a store error) when it cannot be had. */
sqlite3_stmt *sqlite_read_stmt(struct sqlite_store *st, const char *sql, int *err);
/* Copies UUID column col into out: 0, or -1 when it is not one a write
 * stores (NULL, or too long). */
int sqlite_column_uuid(sqlite3_stmt *stmt, int col, char out[UUID_STR_LEN + 1]);

/* ---- store_sqlite_list.c ---------------------------------------------------- */

int sqlite_list(payment_store *s, const struct payment_query *q, payment_store_row_fn each,
                void *arg, int *more);

/* ---- store_sqlite_events.c ------------------------------------------------- */

/* Records the event of op's successful create or update (type
 * PAYMENT_EVENT_CREATED or _UPDATED), inside the caller's savepoint. */
int sqlite_event_record(struct sqlite_store *st, struct sqlite_op *op,
                        enum payment_event_type type);
/* Binds W_EV_DELETE for op: the statement that records op's payment.deleted
 * event from the live row at the expected version, and so is the delete's
 * compare-and-set (it inserts one row, or none).  id receives the event's
 * id, bound without a copy: it must outlive the statement's run. */
int sqlite_event_bind_delete(struct sqlite_op *op, sqlite3_stmt *stmt,
                             char id[UUID_STR_LEN + 1]);
/* Fills ev from the current row of a statement on db selecting
 * SQLITE_EVENT_COLUMNS, its strings the statement's.  PAYMENT_STORE_OK, or
 * EINTERNAL for a row no write makes, or when memory ran out. */
int sqlite_event_row(sqlite3 *db, sqlite3_stmt *stmt, struct payment_event *ev);
int sqlite_events(payment_store *s, const struct payment_event_query *q,
                  payment_store_event_fn each, void *arg, int64_t *next_pos);
int sqlite_history(payment_store *s, const char *payment_id, int64_t after_version,
                   uint32_t limit, payment_store_event_fn each, void *arg, int *more);
void sqlite_events_subscribe(payment_store *s, void (*fn)(void *arg), void *arg);
/* Writer thread: tells the subscriber fn (not NULL) when it is time to
 * (every SQLITE_EVENTS_POLL_US) and another connection, of this process or
 * another, committed since the last poll.  Returns when to call it next
 * (clock_mono_us). */
int64_t sqlite_events_poll(struct sqlite_store *st, void (*fn)(void *arg), void *arg);
void sqlite_events_purge(payment_store *s, int64_t feed_before_ms, int64_t history_before_ms);
/* Writer thread: one turn of the events' purge, in a transaction of its
 * own; each cut-off may be SQLITE_NO_PURGE.  Sets *more_feed and
 * *more_history when that part has more to do. */
void sqlite_events_purge_turn(struct sqlite_store *st, int64_t feed_before_ms,
                              int64_t history_before_ms, int *more_feed, int *more_history);

/* ---- store_sqlite_webhooks.c ---------------------------------------------- */

int sqlite_webhook_create(payment_store *s, struct payment_webhook *w);
int sqlite_webhook_update(payment_store *s, const struct payment_webhook *w,
                          int64_t expected_version);
int sqlite_webhook_delete(payment_store *s, const char *id, int64_t expected_version,
                          int64_t *current_version);
int sqlite_webhook_get(payment_store *s, const char *id, payment_store_webhook_fn each,
                       void *arg);
int sqlite_webhooks_list(payment_store *s, const struct payment_webhook_query *q,
                         payment_store_webhook_fn each, void *arg, int *more);
int sqlite_dispatch_pos(payment_store *s, int64_t *pos);

/* ---- store_sqlite_deliveries.c ---------------------------------------------- */

int sqlite_deliveries_add(payment_store *s, int64_t expected_pos, int64_t new_pos,
                          const struct payment_delivery_new *d, size_t n, int reset,
                          int64_t now_ms);
int sqlite_deliveries_claim(payment_store *s, const char *owner, int64_t now_ms, int64_t lease_ms,
                            uint32_t max, payment_store_delivery_fn each, void *arg);
int sqlite_deliveries_record(payment_store *s, const struct payment_delivery_attempt *a, size_t n,
                             struct payment_delivery_recorded *out);
int sqlite_delivery_retry(payment_store *s, const char *webhook_id, const char *id,
                          int64_t now_ms);
void sqlite_deliveries_purge(payment_store *s, int64_t before_ms);

/* ---- store_sqlite_deliveries_read.c ----------------------------------------- */

/* Fills d from the current row of a statement selecting
 * SQLITE_DELIVERY_COLUMNS, its strings the statement's: PAYMENT_STORE_OK,
 * or EINTERNAL for a row no write makes, or when memory ran out. */
int sqlite_delivery_row(sqlite3_stmt *stmt, struct payment_delivery *d);
int sqlite_deliveries_list(payment_store *s, const struct payment_delivery_query *q,
                           payment_store_delivery_fn each, void *arg, int *more);
int sqlite_deliveries_pending(payment_store *s, int64_t *count, int64_t *oldest_ms);

/* ---- store_sqlite_copy.c ---------------------------------------------------- */

int sqlite_export_payments(payment_store *s, int64_t after_seq, uint32_t limit,
                           payment_store_export_fn each, void *arg, int *more);
int sqlite_export_idem(payment_store *s, const char *after_scope, const char *after_key,
                       uint32_t limit, payment_store_idem_export_fn each, void *arg, int *more);
int sqlite_export_events(payment_store *s, int64_t after_pos, uint32_t limit,
                         payment_store_event_fn each, void *arg, int *more);
int sqlite_import(payment_store *s, const struct payment_import *im,
                  struct payment_import_result *out);

/* ---- store_sqlite_backup.c -------------------------------------------------- */

int sqlite_backup(const char *uri, const char *dest, char *errbuf, size_t errlen);

#endif
