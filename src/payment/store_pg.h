/* store_pg: what the files of the PostgreSQL store share, and nothing else
 * includes.  The store (struct pg_store) is one write connection owned by
 * one writer thread, a queue of writes to it, and one read connection per
 * reading thread, all through libpq:
 *
 *   store_pg.c          open, close, ping, counters, the backend's table
 *   store_pg_conn.c     connections: options and their defaults, prepared
 *                       statements, parameters, errors, reconnection
 *   store_pg_schema.c   the schema's versions and their migration
 *   store_pg_writer.c   the write queue, the writer thread, group commit,
 *                       the purges between batches
 *   store_pg_batch.c    a batch's transaction: the write lock and its
 *                       counters, savepoints, the payment writes, retries
 *   store_pg_apply.c    operations applied from the broker
 *   store_pg_read.c     per-thread read connections, get, idem_get, op_get,
 *                       partition_get
 *   store_pg_list.c     list queries
 *   store_pg_events.c   the events: recording them in the writes, the feed,
 *                       the histories
 *   store_pg_events_upkeep.c the subscriber's poll, the retention purge
 *   store_pg_webhooks.c   the webhook endpoints, the dispatch position
 *   store_pg_deliveries.c the webhook deliveries and their leases
 *   store_pg_deliveries_read.c reading the deliveries
 *   store_pg_export.c   the copy's exports (paymentd migrate)
 *   store_pg_copy.c     the copy's import
 *
 * Order across processes.  Several paymentd processes may write one
 * database.  Every write transaction (a batch of the writer) first locks
 * one row, feed_meta 'pos' (SELECT ... FOR UPDATE), and holds it to its
 * commit: the writes of all processes are serialized by that lock, so
 *   - payment sequence numbers and event positions, given by the writer
 *     from feed_meta's 'seq' and 'pos' while it holds the lock, grow in
 *     commit order: a reader that has seen position p never later finds a
 *     committed event at or below p that it did not see (the feed never
 *     skips), and a list cursor never skips a payment;
 *   - every check a write makes (a version compare-and-set, an
 *     idempotency key taken, a delivery's lease) reads the latest committed
 *     state (READ COMMITTED takes a new snapshot per statement, after the
 *     lock was granted), so no two processes decide on one thing at once.
 * Group commit keeps throughput from being capped by commit latency: a
 * batch holds every write queued while the one before committed.  Reads
 * take no lock and never wait for writes.
 *
 * Durability: a write is reported after its COMMIT returned, which with the
 * server's synchronous_commit = on (its default) means flushed to the
 * server's log.
 *
 * Errors: functions returning int give a store error (PAYMENT_STORE_*,
 * store.h) unless they say otherwise; PG_ERETRY, below, only where said.
 * The backend functions (those of payment_store_pg_backend) have the
 * contract of their store.h counterparts. */
#ifndef PAYMENT_STORE_PG_H
#define PAYMENT_STORE_PG_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/metrics.h"
#include "payment/store_impl.h"

/* A transaction the server could not serialize (SQLSTATE 40001) or chose as
 * a deadlock's victim (40P01): run it again.  Never returned by a backend
 * function: after PG_RETRY_MAX tries it becomes EUNAVAILABLE. */
#define PG_ERETRY (-100)
#define PG_RETRY_MAX 5

/* Defaults given to libpq before the URI's own options (which override
 * them), so that a server that does not answer costs a bounded wait: the
 * connection's establishment, and TCP keepalives and the user timeout for
 * a connection whose server went silent. */
#define PG_CONNECT_TIMEOUT_S "3"
#define PG_TCP_USER_TIMEOUT_MS "10000"
#define PG_APPLICATION_NAME "paymentd"

/* Statements a connection keeps prepared, by the address of their SQL. */
#define PG_STMT_CACHE 64
/* Parameters a statement takes at most. */
#define PG_PARAMS_MAX 24
/* How often the writer thread looks for other processes' commits while the
 * events have a subscriber. */
#define PG_EVENTS_POLL_US 200000
/* Rows of each table a purge deletes per transaction. */
#define PG_PURGE_BATCH 256
/* Operations one batch (one transaction) holds at most. */
#define PG_BATCH_MAX 256

/* ---- store_pg_conn.c: connections ------------------------------------------- */

/* One connection and the statements prepared on it.  Used by one thread at
 * a time.  After a connection is lost (PQstatus CONNECTION_BAD) the next
 * pg_exec connects again (no more often than once a second), and the
 * prepared statements are prepared again on use. */
struct pg_conn {
    PGconn *pg;                        /* NULL until connected */
    const char *uri;                   /* the store's URI, borrowed */
    const char *sql[PG_STMT_CACHE];    /* prepared statements by SQL address; NULL: free */
    int64_t retry_after_us;            /* clock_mono_us before which no reconnect is tried */
    const char *session_sql;           /* run on every new connection, or NULL */
};

#define PG_CONN_INIT(uri) {NULL, (uri), {NULL}, 0, NULL}

/* The write connection's session: a write transaction waits for the write
 * lock (store_pg.h's header) at most this long, so that a process stalled
 * while holding it (a paused VM, a stuck network) costs the others' writes
 * a 503, not a wait without end. */
#define PG_WRITER_SESSION "SET lock_timeout = '5s'"

/* Connects c (the URI given to PG_CONN_INIT, with the defaults above):
 * PAYMENT_STORE_OK, or EUNAVAILABLE with a one-line reason in errbuf (may
 * be NULL) that never holds the password. */
int pg_conn_open(struct pg_conn *c, char *errbuf, size_t errlen);
/* Closes c's connection; c may be opened again. */
void pg_conn_close(struct pg_conn *c);

/* A statement's parameters, all sent in text form except textn's bytes
 * (binary form, which for text and bytea columns is the bytes themselves):
 * no copy of a string is made, so every string must outlive the pg_exec. */
struct pg_params {
    int n;
    const char *values[PG_PARAMS_MAX];
    int lengths[PG_PARAMS_MAX];
    int formats[PG_PARAMS_MAX];
    char ints[PG_PARAMS_MAX][24];      /* the text of integer parameters */
};

void pg_params_init(struct pg_params *p);
/* Appends $n+1: s NUL-terminated, or SQL NULL when s is NULL. */
void pg_param_text(struct pg_params *p, const char *s);
/* Appends $n+1: len bytes of s, or NULL when s is NULL.  For a text column
 * no NUL may be among them (the server refuses one); a bytea column takes
 * any bytes. */
void pg_param_textn(struct pg_params *p, const char *s, size_t len);
/* Appends $n+1: s, or SQL NULL when s is NULL or "". */
void pg_param_nonempty(struct pg_params *p, const char *s);
void pg_param_int(struct pg_params *p, int64_t v);

/* Runs sql (a static string: its address is the key of the statement
 * prepared for it on c, on first use) with p (NULL: no parameters).
 * Returns PAYMENT_STORE_OK with *res (the caller PQclears it; may be NULL
 * when the caller wants no rows) when the server ran it, else the result
 * of pg_result_err (res set to NULL): EUNAVAILABLE when the server cannot
 * answer (c not connected and not connectable, the connection lost), or
 * PG_ERETRY, or EDUPLICATE (SQLSTATE 23505, a unique key), or EINTERNAL. */
int pg_exec(struct pg_conn *c, const char *sql, const struct pg_params *p, PGresult **res);
/* Runs a statement that is not prepared (BEGIN, COMMIT, SET ...): as
 * pg_exec, without parameters. */
int pg_exec_plain(struct pg_conn *c, const char *sql);
/* The store error of a result that did not succeed (NULL: none came back),
 * after which the connection c's state tells whether it was lost:
 * EUNAVAILABLE for a lost connection and for the server's "cannot answer
 * now" states (SQLSTATE classes 08 connection, 53 insufficient resources,
 * 57P01-57P03 shutting down or starting, 25006 a read-only transaction: a
 * standby after a failover, 55P03 a lock not granted within lock_timeout),
 * PG_ERETRY for 40001 and 40P01, EDUPLICATE for
 * 23505, EINTERNAL otherwise. */
int pg_result_err(struct pg_conn *c, const PGresult *res);

/* Column helpers on row r of res: an integer (0 for NULL), a string (NULL
 * for NULL), and a string's length. */
int64_t pg_int(const PGresult *res, int r, int col);
const char *pg_text(const PGresult *res, int r, int col);
size_t pg_len(const PGresult *res, int r, int col);

/* The URI with its password (in the userinfo or a password= option)
 * replaced by "***", for logs and messages, into out. */
void pg_uri_redact(const char *uri, char *out, size_t outlen);

/* ---- store_pg_schema.c ------------------------------------------------------- */

/* Brings c's database to the current schema in one transaction, under a
 * transaction-scoped advisory lock, so that several processes starting at
 * once migrate it once.  A database of a newer version is refused (EURI)
 * with one clear line in errbuf; EUNAVAILABLE or EINTERNAL otherwise. */
int pg_schema_migrate(struct pg_conn *c, char *errbuf, size_t errlen);

/* ---- the store -------------------------------------------------------------- */

enum pg_op_kind { PG_OP_CREATE, PG_OP_UPDATE, PG_OP_DELETE, PG_OP_APPLY, PG_OP_CALL };

struct pg_store;

/* An OP_CALL write: run by the writer thread on the write connection
 * inside the batch's transaction (so under the write lock, after the
 * payment writes of the batch).  Returns PAYMENT_STORE_OK with *err its
 * store result, or the error that kept it from deciding (which fails the
 * batch's transaction: it is then run again or failed, see
 * store_pg_batch.c).  A result other than PAYMENT_STORE_OK must have
 * written nothing; a call that writes before it knows runs inside
 * pg_savepoint/pg_release itself. */
typedef int (*pg_call_fn)(struct pg_store *st, struct pg_conn *c, void *arg, int *err);

/* One queued write.  row is a copy; the pointers in it stay borrowed from
 * the submitter until done has been called. */
struct pg_op {
    struct pg_op *next;         /* queue and batch link */
    enum pg_op_kind kind;
    struct payment_row row;     /* PG_OP_DELETE uses row.id only */
    int64_t expected_version;   /* UPDATE, DELETE, APPLY */
    const struct payment_idem *idem; /* stored with a successful write, or NULL */
    const struct payment_event_info *ev; /* described in the write's event, or NULL */
    payment_store_done_fn done;
    void *arg;
    int err;                    /* result, reported after the commit */
    int64_t current_version;    /* -1 unless err is ECONFLICT */
    int64_t seq;                /* CREATE's sequence number */
    struct payment_apply apply; /* APPLY: a copy, its pointers borrowed like row's */
    pg_call_fn call;            /* CALL: the write to run */
    void *call_arg;             /* and its argument, the submitter's */
};

/* One thread's read connection. */
struct pg_reader {
    struct pg_store *st;            /* owner, for the thread-exit destructor */
    struct pg_conn conn;
    struct pg_reader *prev, *next;  /* in st->readers, under st->readers_mu */
};

struct pg_store {
    struct payment_store base;  /* first: what payment_store * points at */
    char *uri;                  /* the URI as given, owned (holds the password) */
    char *uri_redacted;         /* the URI for logs, owned */
    struct pg_conn wconn;       /* the write connection, the writer thread's while it runs */
    pthread_t writer;
    int writer_started;
    pthread_mutex_t mu;         /* guards head, tail, the purges' cut-offs, closing, ev_fn, ev_arg */
    pthread_cond_t wake;        /* signalled on a first queued write, a purge, or close */
    struct pg_op *head, *tail;
    int64_t purge_before_ms;    /* idempotency purge's cut-off, or INT64_MIN for none */
    int64_t feed_purge_ms;      /* events before it leave the feed, or INT64_MIN */
    int64_t history_purge_ms;   /* events before it are deleted, or INT64_MIN */
    int closing;                /* no more submissions; the writer drains and exits */
    void (*ev_fn)(void *arg);   /* the events' subscriber, or NULL */
    void *ev_arg;
    int64_t seen_pos;           /* writer thread: feed_meta 'pos' at the last poll, or -1 */
    int64_t poll_next_us;       /* writer thread: when to poll next (clock_mono_us) */
    pthread_key_t reader_key;   /* this store's struct pg_reader of the calling thread */
    int have_key;
    pthread_mutex_t readers_mu; /* guards readers */
    struct pg_reader *readers;
    _Atomic uint64_t commits;   /* stats, written by the writer thread */
    _Atomic uint64_t writes;
    struct metrics_sizes batches; /* operations per committed transaction */
};

/* The columns an event is read from, in the order pg_event_row takes them. */
#define PG_EVENT_COLUMNS                                                                  \
    "pos, id, type, organisation_id, payment_id, version, occurred_ms, api_key_id,"       \
    " request_id, idempotency_key, operation_id, changes, doc"

/* The columns a delivery is read from, in the order pg_delivery_row takes
 * them. */
#define PG_DELIVERY_COLUMNS                                                               \
    "id, webhook_id, event_id, event_pos, status, attempts, created_ms, next_ms,"       \
    " attempts_json, body"

/* ---- store_pg_writer.c ------------------------------------------------------- */

/* Starts the writer thread on st->wconn (connected): 0, or -1. */
int pg_writer_start(struct pg_store *st);
/* Stops it after it drained the queue (close). */
void pg_writer_stop(struct pg_store *st);
void pg_create(payment_store *s, const struct payment_row *row, const struct payment_idem *idem,
               const struct payment_event_info *ev, payment_store_done_fn done, void *arg);
void pg_update(payment_store *s, const struct payment_row *row, int64_t expected_version,
               const struct payment_idem *idem, const struct payment_event_info *ev,
               payment_store_done_fn done, void *arg);
void pg_remove(payment_store *s, const char *id, int64_t expected_version,
               const struct payment_idem *idem, const struct payment_event_info *ev,
               payment_store_done_fn done, void *arg);
void pg_apply(payment_store *s, const struct payment_apply *a, payment_store_done_fn done,
              void *arg);
void pg_idem_purge(payment_store *s, int64_t before_ms);
void pg_stats(payment_store *s, struct payment_store_stats *out);
/* Runs fn(st, conn, arg, &err) as an OP_CALL write on the writer thread and
 * waits for its commit: returns err once it is durable, or the error that
 * failed the operation or its batch.  Not from the writer thread. */
int pg_call(struct pg_store *st, pg_call_fn fn, void *arg);

/* ---- store_pg_batch.c -------------------------------------------------------- */

/* Writer thread: runs batch (linked by next, PG_BATCH_MAX operations at
 * most) in one transaction, tried again while the server asks for it, and
 * sets every operation's result; committed ones are counted in st's stats.
 * Returns whether the commit holds events. */
int pg_batch_run(struct pg_store *st, struct pg_op *batch);
/* Writer thread, inside the batch's transaction (the write lock held): the
 * next payment sequence number and the next event position, taken from the
 * counters the batch read when it took the lock (written back before its
 * commit). */
int64_t pg_next_seq(struct pg_store *st);
int64_t pg_next_pos(struct pg_store *st);
/* A savepoint around a write that may have to be undone alone, on c:
 * pg_savepoint, then pg_release (kept) or pg_rollback_to (undone). */
int pg_savepoint(struct pg_conn *c);
int pg_release(struct pg_conn *c);
int pg_rollback_to(struct pg_conn *c);
/* The payment writes of an operation, inside the batch's transaction:
 * PAYMENT_STORE_OK with op->err their result, or the error that kept them
 * from deciding.  pg_op_idem records op->idem after a successful one. */
int pg_op_create(struct pg_store *st, struct pg_op *op);
int pg_op_update(struct pg_store *st, struct pg_op *op);
int pg_op_delete(struct pg_store *st, struct pg_op *op);
int pg_op_idem(struct pg_store *st, struct pg_op *op);

/* ---- store_pg_apply.c -------------------------------------------------------- */

/* Applies an APPLY operation inside the batch's transaction. */
int pg_op_apply_broker(struct pg_store *st, struct pg_op *op);

/* ---- store_pg_read.c --------------------------------------------------------- */

/* The calling thread's reader, connected on first use; NULL with *err (a
 * store error) when it cannot be. */
struct pg_reader *pg_reader_get(struct pg_store *st, int *err);
void pg_reader_free(struct pg_reader *r);
/* Takes r out of st->readers; the caller holds st->readers_mu or is close. */
void pg_reader_unlink(struct pg_store *st, struct pg_reader *r);
/* The reader key's destructor: a reading thread exits before the store closes. */
void pg_reader_exit(void *p);
int pg_ping(payment_store *s);
int pg_get(payment_store *s, const char *id, struct buf *doc, int64_t *version,
           int64_t *created_ms);
int pg_idem_get(payment_store *s, const char *scope, const char *key,
                struct payment_idem_found *out);
int pg_op_get(payment_store *s, const char *op_id, struct payment_op_found *out);
int pg_partition_get(payment_store *s, uint32_t partition, uint64_t *last_seq, uint64_t *fence);
/* Runs sql with p on the calling thread's reader: as pg_exec, a failure of
 * the connection retried once on a new one. */
int pg_read(struct pg_store *st, const char *sql, const struct pg_params *p, PGresult **res);
/* As pg_read, for SQL built for this one call (a list's filters): run
 * unprepared, so that it is not cached by an address it does not keep and
 * the server plans it for its values. */
int pg_read_unprepared(struct pg_store *st, const char *sql, const struct pg_params *p,
                       PGresult **res);
/* Copies UUID column col of row r into out: 0, or -1 when it is not one a
 * write stores (NULL, or not UUID_STR_LEN long). */
int pg_column_uuid(const PGresult *res, int r, int col, char out[UUID_STR_LEN + 1]);

/* ---- store_pg_list.c --------------------------------------------------------- */

int pg_list(payment_store *s, const struct payment_query *q, payment_store_row_fn each,
            void *arg, int *more);

/* ---- store_pg_events.c ------------------------------------------------------- */

/* Records the event of op's successful create or update (type
 * PAYMENT_EVENT_CREATED or _UPDATED), its position pg_next_pos's, inside
 * the batch's transaction. */
int pg_event_record(struct pg_store *st, struct pg_op *op, enum payment_event_type type);
/* Records op's payment.deleted event from the live row at op's expected
 * version (any, when it is -1), the document as it was: PAYMENT_STORE_OK
 * with *recorded 1, or 0 when no live row matched (nothing written). */
int pg_event_record_delete(struct pg_store *st, struct pg_op *op, int *recorded);
/* Fills ev from row r of a result selecting PG_EVENT_COLUMNS (its strings
 * the result's): 0, or EINTERNAL for a row no write makes. */
int pg_event_row(const PGresult *res, int r, struct payment_event *ev);
int pg_events(payment_store *s, const struct payment_event_query *q,
              payment_store_event_fn each, void *arg, int64_t *next_pos);
int pg_history(payment_store *s, const char *payment_id, int64_t after_version, uint32_t limit,
               payment_store_event_fn each, void *arg, int *more);

/* ---- store_pg_events_upkeep.c ------------------------------------------------ */

void pg_events_subscribe(payment_store *s, void (*fn)(void *arg), void *arg);
/* Writer thread: tells the subscriber fn (not NULL) when it is time to
 * (every PG_EVENTS_POLL_US) and feed_meta 'pos' moved since the last poll
 * (another process committed).  Returns when to call it next
 * (clock_mono_us). */
int64_t pg_events_poll(struct pg_store *st, void (*fn)(void *arg), void *arg);
void pg_events_purge(payment_store *s, int64_t feed_before_ms, int64_t history_before_ms);
/* Writer thread: one turn of the events' purge, in a transaction of its
 * own (taking the write lock); each cut-off may be INT64_MIN (none).  Sets
 * *more_feed and *more_history when that part has more to do. */
void pg_events_purge_turn(struct pg_store *st, int64_t feed_before_ms, int64_t history_before_ms,
                          int *more_feed, int *more_history);

/* ---- store_pg_webhooks.c ----------------------------------------------------- */

int pg_webhook_create(payment_store *s, struct payment_webhook *w);
int pg_webhook_update(payment_store *s, const struct payment_webhook *w,
                      int64_t expected_version);
int pg_webhook_delete(payment_store *s, const char *id, int64_t expected_version,
                      int64_t *current_version);
int pg_webhook_get(payment_store *s, const char *id, payment_store_webhook_fn each, void *arg);
int pg_webhooks_list(payment_store *s, const struct payment_webhook_query *q,
                     payment_store_webhook_fn each, void *arg, int *more);
int pg_dispatch_pos(payment_store *s, int64_t *pos);

/* ---- store_pg_deliveries.c --------------------------------------------------- */

int pg_deliveries_add(payment_store *s, int64_t expected_pos, int64_t new_pos,
                      const struct payment_delivery_new *d, size_t n, int reset, int64_t now_ms);
int pg_deliveries_claim(payment_store *s, const char *owner, int64_t now_ms, int64_t lease_ms,
                        uint32_t max, payment_store_delivery_fn each, void *arg);
int pg_deliveries_record(payment_store *s, const struct payment_delivery_attempt *a, size_t n,
                         struct payment_delivery_recorded *out);
int pg_delivery_retry(payment_store *s, const char *webhook_id, const char *id, int64_t now_ms);
void pg_deliveries_purge(payment_store *s, int64_t before_ms);

/* ---- store_pg_deliveries_read.c ---------------------------------------------- */

/* Fills d from row r of a result selecting PG_DELIVERY_COLUMNS, its
 * strings the result's: PAYMENT_STORE_OK, or EINTERNAL for a row no write
 * makes. */
int pg_delivery_row(const PGresult *res, int r, struct payment_delivery *d);
int pg_deliveries_list(payment_store *s, const struct payment_delivery_query *q,
                       payment_store_delivery_fn each, void *arg, int *more);
int pg_deliveries_pending(payment_store *s, int64_t *count, int64_t *oldest_ms);

/* ---- store_pg_export.c ------------------------------------------------------- */

int pg_export_payments(payment_store *s, int64_t after_seq, uint32_t limit,
                       payment_store_export_fn each, void *arg, int *more);
int pg_export_idem(payment_store *s, const char *after_scope, const char *after_key,
                   uint32_t limit, payment_store_idem_export_fn each, void *arg, int *more);
int pg_export_events(payment_store *s, int64_t after_pos, uint32_t limit,
                     payment_store_event_fn each, void *arg, int *more);

/* ---- store_pg_copy.c --------------------------------------------------------- */

/* One pg_call: the page in the call's savepoint of a batch's transaction. */
int pg_import(payment_store *s, const struct payment_import *im,
              struct payment_import_result *out);

#endif
