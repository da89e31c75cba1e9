/* store_sqlite: the embedded store, SQLite in WAL mode with synchronous=FULL.
 *
 * Writes: one writer thread owns the write connection.  Submitters queue an
 * operation and return; the writer takes everything queued, applies it in
 * one transaction (a savepoint per operation, so that one operation's SQL
 * error undoes only itself), commits (in WAL mode with synchronous=FULL the
 * commit is the fsync), and only then reports each result.  This is group
 * commit: a batch is whatever waited, with no timer, so durable throughput is
 * not capped by the disk's fsync rate.  One writer also makes sequence
 * numbers strictly increasing in commit order.
 *
 * The purge of old idempotency records and operation outcomes is the
 * writer's too, in transactions of a few hundred rows taken between its
 * batches of writes: a write waits for one such transaction at most, never
 * for a whole purge of a day's records.
 *
 * Reads: one read-only connection per reading thread, opened on first use
 * and registered in the store so that close can finalize it.  WAL readers
 * see the last commit and never wait for the writer.
 *
 * Deleted payments stay as tombstone rows (deleted = 1, doc NULL) that keep
 * their id, so the UNIQUE id constraint also refuses to create them again. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "payment/store_impl.h"

#define SQLITE_URI_PREFIX "sqlite:"
#define SQLITE_BUSY_TIMEOUT_MS 5000
#define SQLITE_PAGE_SIZE_NEW "8192"
#define SQLITE_LIST_SQL_MAX 4096 /* the longest list query: 600 set values and every range */
#define SQLITE_LIST_BINDS (6 * PAYMENT_QUERY_MAX_VALUES + 8)
/* List statements kept prepared per reader, by query shape: compiling one
 * cost a tenth of a page of 100. */
#define SQLITE_LIST_CACHE 8
/* Rows of each table the purge deletes per transaction: a few hundred
 * kilobyte records take a few milliseconds, the longest a write waits for
 * the purge. */
#define SQLITE_PURGE_BATCH 256
#define SQLITE_NO_PURGE INT64_MIN /* purge_before_ms when no purge is asked for */

/* Schema steps: entry i moves a store from user_version i to i + 1.  Append
 * new steps; never edit a released one. */
static const char *const sqlite_migrations[] = {
    /* 1: payments, their tombstones, and the list indexes. */
    "CREATE TABLE payments ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id TEXT UNIQUE NOT NULL,"
    " organisation_id TEXT NOT NULL,"
    " version INTEGER NOT NULL,"
    " created_ms INTEGER NOT NULL,"
    " modified_ms INTEGER NOT NULL,"
    " currency TEXT,"
    " payment_scheme TEXT,"
    " payment_type TEXT,"
    " reference TEXT,"
    " end_to_end_reference TEXT,"
    " processing_date TEXT,"
    " amount_key TEXT,"
    " doc TEXT,"
    " deleted INTEGER NOT NULL DEFAULT 0"
    ");"
    /* List by organisation in seq order without a sort. */
    "CREATE INDEX payments_organisation ON payments (organisation_id, seq);"
    /* References are near-unique: an exact-match filter becomes a lookup.
     * Currency, scheme and type are too coarse, and the ranges are served
     * well enough by the seq-ordered scan, to pay an index on every write. */
    "CREATE INDEX payments_reference ON payments (reference);"
    "CREATE INDEX payments_end_to_end_reference ON payments (end_to_end_reference);",
    /* 2: outcomes of writes made with an Idempotency-Key, written in the
     * transaction of the write they answer. */
    "CREATE TABLE idempotency ("
    " scope TEXT NOT NULL,"
    " key TEXT NOT NULL,"
    " fingerprint TEXT NOT NULL,"
    " status INTEGER NOT NULL,"
    " location TEXT,"
    " etag TEXT,"
    " body BLOB,"
    " created_ms INTEGER NOT NULL,"
    " PRIMARY KEY (scope, key)"
    ") WITHOUT ROWID;"
    "CREATE INDEX idempotency_created ON idempotency (created_ms);",
    /* 3: outcomes of operations applied from the broker, and each stream
     * partition's position and fencing token, written in the transaction of
     * the payment write they describe. */
    "CREATE TABLE operations ("
    " op_id TEXT PRIMARY KEY NOT NULL,"
    " partition INTEGER NOT NULL,"
    " seq INTEGER NOT NULL,"
    " status TEXT NOT NULL,"
    " error_code TEXT,"
    " message TEXT,"
    " payment_id TEXT,"
    " organisation_id TEXT,"
    " version INTEGER NOT NULL,"
    " applied_ms INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    /* A handful of rows keyed by a small integer: the rowid table fits. */
    "CREATE TABLE partitions ("
    " partition INTEGER PRIMARY KEY,"
    " last_seq INTEGER NOT NULL,"
    " fence INTEGER NOT NULL"
    ");",
    /* 4: a keyed asynchronous request is answered from its operation's
     * outcome, which keeps the request's fingerprint; outcomes are purged by
     * age like idempotency records. */
    "ALTER TABLE operations ADD COLUMN fingerprint TEXT;"
    "CREATE INDEX operations_applied ON operations (applied_ms);",
    /* 5: idempotency records hold response bodies of a kilobyte or more.
     * In a WITHOUT ROWID table the (scope, key) b-tree held the bodies
     * themselves, few rows to a page, so deleting old ones rewrote much of
     * it; a rowid table keeps the bodies in its own b-tree, found through a
     * small unique (scope, key) index, and the purge walks the creation
     * time index in small batches. */
    "CREATE TABLE idempotency_rowid ("
    " scope TEXT NOT NULL,"
    " key TEXT NOT NULL,"
    " fingerprint TEXT NOT NULL,"
    " status INTEGER NOT NULL,"
    " location TEXT,"
    " etag TEXT,"
    " body BLOB,"
    " created_ms INTEGER NOT NULL"
    ");"
    "INSERT INTO idempotency_rowid (scope, key, fingerprint, status, location, etag, body,"
    " created_ms) SELECT scope, key, fingerprint, status, location, etag, body, created_ms"
    " FROM idempotency ORDER BY created_ms;"
    "DROP TABLE idempotency;"
    "ALTER TABLE idempotency_rowid RENAME TO idempotency;"
    "CREATE UNIQUE INDEX idempotency_key ON idempotency (scope, key);"
    "CREATE INDEX idempotency_created ON idempotency (created_ms);",
};

#define SQLITE_SCHEMA_VERSION ((int)(sizeof sqlite_migrations / sizeof sqlite_migrations[0]))

/* Writer statements, prepared once.  Row parameters: ?1 id, ?2 organisation,
 * ?3 version, ?4 created, ?5 modified, ?6..?10 the text columns, ?11
 * processing date, ?12 amount key, ?13 doc; ?14 the expected version. */
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
    W_COUNT
};

static const char *const sqlite_wsql[W_COUNT] = {
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
    [W_SAVEPOINT] = "SAVEPOINT op",
    [W_RELEASE] = "RELEASE op",
    [W_ROLLBACK_TO] = "ROLLBACK TO op",
    [W_INSERT] = "INSERT INTO payments (id, organisation_id, version, created_ms, modified_ms,"
                 " currency, payment_scheme, payment_type, reference, end_to_end_reference,"
                 " processing_date, amount_key, doc, deleted)"
                 " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 0)",
    /* created_ms (?4) is the store's: an update never changes it. */
    [W_UPDATE] = "UPDATE payments SET organisation_id = ?2, version = ?3, modified_ms = ?5,"
                 " currency = ?6, payment_scheme = ?7, payment_type = ?8, reference = ?9,"
                 " end_to_end_reference = ?10, processing_date = ?11, amount_key = ?12,"
                 " doc = ?13 WHERE id = ?1 AND version = ?14 AND deleted = 0",
    [W_DELETE] = "UPDATE payments SET deleted = 1, doc = NULL"
                 " WHERE id = ?1 AND deleted = 0 AND (?2 = -1 OR version = ?2)",
    [W_VERSION] = "SELECT version, deleted FROM payments WHERE id = ?1",
    [W_IDEM_INSERT] = "INSERT INTO idempotency (scope, key, fingerprint, status, location, etag,"
                      " body, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    /* The purge: at most ?2 of the oldest rows before ?1, by the time index. */
    [W_IDEM_PURGE] = "DELETE FROM idempotency WHERE rowid IN (SELECT rowid FROM idempotency"
                     " WHERE created_ms < ?1 ORDER BY created_ms LIMIT ?2)",
    [W_OP_PURGE] = "DELETE FROM operations WHERE op_id IN (SELECT op_id FROM operations"
                   " WHERE applied_ms < ?1 ORDER BY applied_ms LIMIT ?2)",
    /* Inside an apply's savepoint: undoes its payment write alone. */
    [W_SAVEPOINT_WRITE] = "SAVEPOINT apply_write",
    [W_RELEASE_WRITE] = "RELEASE apply_write",
    [W_ROLLBACK_TO_WRITE] = "ROLLBACK TO apply_write",
    [W_PART_GET] = "SELECT last_seq, fence FROM partitions WHERE partition = ?1",
    [W_PART_PUT] = "INSERT INTO partitions (partition, last_seq, fence) VALUES (?1, ?2, ?3)"
                   " ON CONFLICT (partition) DO UPDATE SET last_seq = excluded.last_seq,"
                   " fence = excluded.fence",
    [W_OP_EXISTS] = "SELECT 1 FROM operations WHERE op_id = ?1",
    [W_OP_INSERT] = "INSERT INTO operations (op_id, partition, seq, status, error_code, message,"
                    " payment_id, organisation_id, version, applied_ms, fingerprint)"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
};

/* Reader statements, prepared once per reading connection. */
enum sqlite_rstmt { R_GET, R_PING, R_IDEM, R_OP, R_PART, R_COUNT };

static const char *const sqlite_rsql[R_COUNT] = {
    [R_GET] = "SELECT doc, version, created_ms FROM payments WHERE id = ?1 AND deleted = 0",
    [R_PING] = "SELECT seq FROM payments ORDER BY seq DESC LIMIT 1",
    [R_IDEM] = "SELECT fingerprint, status, location, etag, body FROM idempotency"
               " WHERE scope = ?1 AND key = ?2",
    [R_OP] = "SELECT status, error_code, message, payment_id, organisation_id, version,"
             " partition, seq, fingerprint FROM operations WHERE op_id = ?1",
    [R_PART] = "SELECT last_seq, fence FROM partitions WHERE partition = ?1",
};

enum sqlite_op_kind { OP_CREATE, OP_UPDATE, OP_DELETE, OP_APPLY };

/* One queued write.  row is a copy; the pointers in it stay borrowed from the
 * submitter until done has been called. */
struct sqlite_op {
    struct sqlite_op *next;     /* queue and batch link */
    enum sqlite_op_kind kind;
    struct payment_row row;     /* OP_DELETE uses row.id only */
    int64_t expected_version;   /* OP_UPDATE, OP_DELETE, OP_APPLY */
    const struct payment_idem *idem; /* stored with a successful write, or NULL */
    payment_store_done_fn done;
    void *arg;
    int err;                    /* result, reported after the commit */
    int64_t current_version;    /* -1 unless err is ECONFLICT */
    int64_t seq;                /* OP_CREATE's sequence number */
    struct payment_apply apply; /* OP_APPLY: a copy, its pointers borrowed like row's */
};

struct sqlite_store;

/* One thread's read-only connection. */
struct sqlite_reader {
    struct sqlite_store *st;            /* owner, for the thread-exit destructor */
    sqlite3 *db;
    sqlite3_stmt *stmt[R_COUNT];
    sqlite3_stmt *list[SQLITE_LIST_CACHE]; /* list statements of recent shapes, or NULL */
    unsigned list_next;                 /* the slot the next new shape takes */
    struct sqlite_reader *prev, *next;  /* in st->readers, under st->readers_mu */
};

struct sqlite_store {
    struct payment_store base;  /* first: what payment_store * points at */
    char *path;                 /* absolute file name, owned */
    int exclusive;              /* PAYMENT_STORE_EXCLUSIVE: every connection on unix-excl */
    sqlite3 *wdb;               /* the write connection, the writer thread's while it runs */
    sqlite3_stmt *w[W_COUNT];
    pthread_t writer;
    int writer_started;
    pthread_mutex_t mu;         /* guards head, tail, purge_before_ms, closing */
    pthread_cond_t wake;        /* signalled on a first queued write, a purge, or close */
    struct sqlite_op *head, *tail;
    int64_t purge_before_ms;    /* the purge's cut-off, or SQLITE_NO_PURGE */
    int closing;                /* no more submissions; the writer drains and exits */
    pthread_key_t reader_key;   /* this store's struct sqlite_reader of the calling thread */
    int have_key;
    pthread_mutex_t readers_mu; /* guards readers */
    struct sqlite_reader *readers;
    _Atomic uint64_t commits;   /* stats, written by the writer thread */
    _Atomic uint64_t writes;
    struct metrics_sizes batches; /* operations per committed transaction */
};

/* ---- small helpers ------------------------------------------------------ */

/* The VFS of every connection of the store.  unix-excl takes the file's
 * lock at the first access and keeps it until the last connection of the
 * process closes; the write-ahead log's index then lives in the process's
 * memory, not in the -shm file, so a read transaction makes no fcntl call
 * and waits on no other process.  The connections of one process share the
 * lock, so the writer and the readers work as with the default VFS. */
static const char *sqlite_vfs(const struct sqlite_store *st)
{
    return st->exclusive ? "unix-excl" : NULL;
}

/* The store error of a failed SQLite call: transient conditions of the disk
 * or of another process's lock are "unavailable" (503), the rest internal. */
static int sqlite_map_err(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
        return PAYMENT_STORE_EUNAVAILABLE;
    default:
        return PAYMENT_STORE_EINTERNAL;
    }
}

/* Makes a statement reusable.  sqlite3_reset repeats the error of the last
 * step, already handled by the caller, and clear_bindings cannot fail. */
static void sqlite_stmt_release(sqlite3_stmt *stmt)
{
    (void)sqlite3_reset(stmt);
    (void)sqlite3_clear_bindings(stmt);
}

/* Runs a statement that returns no row of interest: SQLITE_OK or the error. */
static int sqlite_stmt_run(sqlite3_stmt *stmt)
{
    int rc = sqlite3_step(stmt);
    sqlite_stmt_release(stmt);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

/* Binds text, or NULL for a NULL pointer. */
static int sqlite_bind_opt(sqlite3_stmt *stmt, int i, const char *v)
{
    return v ? sqlite3_bind_text(stmt, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(stmt, i);
}

/* Binds text, or NULL for an empty string (absent fixed-width columns). */
static int sqlite_bind_nonempty(sqlite3_stmt *stmt, int i, const char *v)
{
    return v[0] ? sqlite3_bind_text(stmt, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(stmt, i);
}

/* Binds ?1..?13 from row; the strings stay the submitter's (SQLITE_STATIC)
 * since done is called only after the statement is released. */
static int sqlite_bind_row(sqlite3_stmt *stmt, const struct payment_row *row)
{
    int rc = sqlite3_bind_text(stmt, 1, row->id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 2, row->organisation_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 3, row->version);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 4, row->created_ms);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 5, row->modified_ms);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 6, row->currency);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 7, row->payment_scheme);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 8, row->payment_type);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 9, row->reference);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 10, row->end_to_end_reference);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_nonempty(stmt, 11, row->processing_date);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_nonempty(stmt, 12, row->amount_key);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text64(stmt, 13, row->doc ? row->doc : "", row->doc ? row->doc_len : 0,
                                 SQLITE_STATIC, SQLITE_UTF8);
    return rc;
}

/* ---- the write path ----------------------------------------------------- */

/* After a compare-and-set changed nothing: ENOTFOUND when the id is unknown
 * or a tombstone, else ECONFLICT with the stored version.  Runs inside the
 * batch's transaction, so nothing can change in between. */
static int sqlite_op_miss(struct sqlite_store *st, struct sqlite_op *op)
{
    sqlite3_stmt *stmt = st->w[W_VERSION];
    int rc = sqlite3_bind_text(stmt, 1, op->row.id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        if (sqlite3_column_int64(stmt, 1) != 0) {
            op->err = PAYMENT_STORE_ENOTFOUND;
        } else {
            op->err = PAYMENT_STORE_ECONFLICT;
            op->current_version = sqlite3_column_int64(stmt, 0);
        }
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        op->err = PAYMENT_STORE_ENOTFOUND;
        rc = SQLITE_OK;
    }
    sqlite_stmt_release(stmt);
    return rc;
}

static int sqlite_op_create(struct sqlite_store *st, struct sqlite_op *op)
{
    sqlite3_stmt *stmt = st->w[W_INSERT];
    int rc = sqlite_bind_row(stmt, &op->row);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) {
        op->err = PAYMENT_STORE_OK;
        op->seq = sqlite3_last_insert_rowid(st->wdb);
        rc = SQLITE_OK;
    } else if (sqlite3_extended_errcode(st->wdb) == SQLITE_CONSTRAINT_UNIQUE) {
        /* The only unique column is id, tombstones included. */
        op->err = PAYMENT_STORE_EDUPLICATE;
        rc = SQLITE_OK;
    }
    sqlite_stmt_release(stmt);
    return rc;
}

/* Runs a bound compare-and-set statement: OK when it changed the row, else
 * ENOTFOUND or ECONFLICT as sqlite_op_miss decides. */
static int sqlite_op_cas(struct sqlite_store *st, struct sqlite_op *op, sqlite3_stmt *stmt, int rc)
{
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    int changed = rc == SQLITE_DONE && sqlite3_changes(st->wdb) == 1;
    sqlite_stmt_release(stmt);
    if (rc != SQLITE_DONE)
        return rc;
    if (changed) {
        op->err = PAYMENT_STORE_OK;
        return SQLITE_OK;
    }
    return sqlite_op_miss(st, op);
}

static int sqlite_op_update(struct sqlite_store *st, struct sqlite_op *op)
{
    sqlite3_stmt *stmt = st->w[W_UPDATE];
    int rc = sqlite_bind_row(stmt, &op->row);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 14, op->expected_version);
    return sqlite_op_cas(st, op, stmt, rc);
}

static int sqlite_op_delete(struct sqlite_store *st, struct sqlite_op *op)
{
    sqlite3_stmt *stmt = st->w[W_DELETE];
    int rc = sqlite3_bind_text(stmt, 1, op->row.id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 2, op->expected_version);
    return sqlite_op_cas(st, op, stmt, rc);
}

/* Records the outcome of a write that succeeded, in its savepoint: a key
 * already recorded (another request with it won) fails the write. */
static int sqlite_op_idem(struct sqlite_store *st, struct sqlite_op *op)
{
    const struct payment_idem *in = op->idem;
    sqlite3_stmt *stmt = st->w[W_IDEM_INSERT];
    int rc = sqlite3_bind_text(stmt, 1, in->scope, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 2, in->key, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 3, in->fingerprint, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(stmt, 4, in->status);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 5, in->location);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 6, in->etag);
    if (rc == SQLITE_OK)
        rc = in->body ? sqlite3_bind_blob64(stmt, 7, in->body, in->body_len, SQLITE_STATIC)
                      : sqlite3_bind_null(stmt, 7);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 8, in->created_ms);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    } else if (sqlite3_extended_errcode(st->wdb) == SQLITE_CONSTRAINT_UNIQUE) {
        /* The (scope, key) index is the table's only unique constraint. */
        op->err = PAYMENT_STORE_EIDEMPOTENT;
        rc = SQLITE_OK;
    }
    sqlite_stmt_release(stmt);
    return rc;
}

/* ---- operations from the broker ---------------------------------------- */

/* An operation's recorded outcome. */
struct sqlite_outcome {
    const char *status;
    const char *error_code; /* NULL when succeeded, as is message */
    const char *message;
    int64_t version;
};

/* op->err (when rc is SQLITE_OK): ESKIPPED, EFENCED, or OK to go on. */
static int sqlite_apply_position(struct sqlite_store *st, struct sqlite_op *op)
{
    sqlite3_stmt *stmt = st->w[W_PART_GET];
    int rc = sqlite3_bind_int64(stmt, 1, op->apply.partition);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    op->err = PAYMENT_STORE_OK;
    if (rc == SQLITE_ROW) {
        int64_t last_seq = sqlite3_column_int64(stmt, 0), fence = sqlite3_column_int64(stmt, 1);
        /* Sequence first: a stale redelivery is skipped, whoever delivers it. */
        if ((int64_t)op->apply.seq <= last_seq)
            op->err = PAYMENT_STORE_ESKIPPED;
        else if (fence > (int64_t)op->apply.fence)
            op->err = PAYMENT_STORE_EFENCED;
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite_stmt_release(stmt);
    return rc;
}

/* Sets *found when op_id is already recorded. */
static int sqlite_apply_known(struct sqlite_store *st, struct sqlite_op *op, int *found)
{
    sqlite3_stmt *stmt = st->w[W_OP_EXISTS];
    int rc = sqlite3_bind_text(stmt, 1, op->apply.op_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    *found = rc == SQLITE_ROW;
    sqlite_stmt_release(stmt);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int sqlite_apply_advance(struct sqlite_store *st, struct sqlite_op *op)
{
    sqlite3_stmt *stmt = st->w[W_PART_PUT];
    int rc = sqlite3_bind_int64(stmt, 1, op->apply.partition);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 2, (int64_t)op->apply.seq);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 3, (int64_t)op->apply.fence);
    if (rc != SQLITE_OK) {
        sqlite_stmt_release(stmt);
        return rc;
    }
    return sqlite_stmt_run(stmt);
}

/* The version a successful delete left on its tombstone. */
static int sqlite_apply_deleted_version(struct sqlite_store *st, struct sqlite_op *op,
                                        int64_t *version)
{
    sqlite3_stmt *stmt = st->w[W_VERSION];
    int rc = sqlite3_bind_text(stmt, 1, op->row.id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        *version = sqlite3_column_int64(stmt, 0);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_CORRUPT; /* it was just deleted in this transaction */
    }
    sqlite_stmt_release(stmt);
    return rc;
}

/* The payment write of op, in a savepoint of its own so that an idempotency
 * key already recorded undoes it alone; op->err is the write's result. */
static int sqlite_apply_write(struct sqlite_store *st, struct sqlite_op *op)
{
    int rc = sqlite_stmt_run(st->w[W_SAVEPOINT_WRITE]);
    if (rc != SQLITE_OK)
        return rc;
    switch (op->apply.kind) {
    case PAYMENT_APPLY_CREATE: rc = sqlite_op_create(st, op); break;
    case PAYMENT_APPLY_UPDATE: rc = sqlite_op_update(st, op); break;
    case PAYMENT_APPLY_DELETE: rc = sqlite_op_delete(st, op); break;
    default: rc = SQLITE_MISUSE; break; /* NONE never gets here */
    }
    if (rc == SQLITE_OK && op->err == PAYMENT_STORE_OK && op->idem)
        rc = sqlite_op_idem(st, op);
    if (rc != SQLITE_OK)
        return rc; /* the caller's savepoint undoes everything */
    if (op->err == PAYMENT_STORE_EIDEMPOTENT) {
        rc = sqlite_stmt_run(st->w[W_ROLLBACK_TO_WRITE]);
        if (rc != SQLITE_OK)
            return rc;
    }
    return sqlite_stmt_run(st->w[W_RELEASE_WRITE]);
}

/* What the synchronous API would have answered, as a recorded outcome. */
static int sqlite_apply_outcome(struct sqlite_store *st, struct sqlite_op *op,
                                struct sqlite_outcome *out)
{
    out->status = "failed";
    out->error_code = NULL;
    out->message = NULL;
    out->version = -1;
    switch (op->err) {
    case PAYMENT_STORE_OK:
        out->status = "succeeded";
        if (op->apply.kind != PAYMENT_APPLY_DELETE) {
            out->version = op->row.version;
            return SQLITE_OK;
        }
        return sqlite_apply_deleted_version(st, op, &out->version);
    case PAYMENT_STORE_ENOTFOUND:
        out->error_code = "not_found";
        out->message = "no payment with this id";
        return SQLITE_OK;
    case PAYMENT_STORE_ECONFLICT:
        out->error_code = "version_conflict";
        out->message = "the payment has changed since that version; fetch it and retry";
        out->version = op->current_version;
        return SQLITE_OK;
    case PAYMENT_STORE_EDUPLICATE:
        out->error_code = "duplicate_id";
        out->message = "a payment with this id exists or existed";
        return SQLITE_OK;
    case PAYMENT_STORE_EIDEMPOTENT:
        out->error_code = "idempotency_key_in_use";
        out->message = "another request with this Idempotency-Key is being processed";
        return SQLITE_OK;
    default:
        return SQLITE_MISUSE; /* no other result is decided by the write */
    }
}

static int sqlite_apply_record(struct sqlite_store *st, struct sqlite_op *op,
                               const struct sqlite_outcome *o)
{
    const struct payment_apply *a = &op->apply;
    const char *pid = a->payment_id ? a->payment_id : a->row ? a->row->id : NULL;
    const char *org = a->organisation_id ? a->organisation_id
                                         : a->row ? a->row->organisation_id : NULL;
    sqlite3_stmt *stmt = st->w[W_OP_INSERT];
    int rc = sqlite3_bind_text(stmt, 1, a->op_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 2, a->partition);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 3, (int64_t)a->seq);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 4, o->status, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 5, o->error_code);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 6, o->message);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 7, pid);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 8, org);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 9, o->version);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 10, a->applied_ms);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 11, a->fingerprint);
    if (rc != SQLITE_OK) {
        sqlite_stmt_release(stmt);
        return rc;
    }
    return sqlite_stmt_run(stmt);
}

/* Position check, write, outcome, new position: all or nothing, in the
 * caller's savepoint.  op->err ends OK (outcome recorded), ESKIPPED or
 * EFENCED. */
static int sqlite_op_apply_broker(struct sqlite_store *st, struct sqlite_op *op)
{
    int rc = sqlite_apply_position(st, op);
    if (rc != SQLITE_OK || op->err != PAYMENT_STORE_OK)
        return rc;
    int known = 0;
    rc = sqlite_apply_known(st, op, &known);
    if (rc != SQLITE_OK)
        return rc;
    if (known) {
        /* Republished under a new sequence: applied once already. */
        rc = sqlite_apply_advance(st, op);
        op->err = PAYMENT_STORE_ESKIPPED;
        return rc;
    }
    struct sqlite_outcome o;
    if (op->apply.kind == PAYMENT_APPLY_NONE) {
        o.status = "failed";
        o.error_code = op->apply.error_code ? op->apply.error_code : "internal_error";
        o.message = op->apply.error_message ? op->apply.error_message : "";
        o.version = -1;
    } else {
        rc = sqlite_apply_write(st, op);
        if (rc == SQLITE_OK)
            rc = sqlite_apply_outcome(st, op, &o);
        if (rc != SQLITE_OK)
            return rc;
    }
    rc = sqlite_apply_record(st, op, &o);
    if (rc == SQLITE_OK)
        rc = sqlite_apply_advance(st, op);
    op->err = PAYMENT_STORE_OK;
    op->current_version = -1;
    return rc;
}

/* Applies op and sets its result.  Returns SQLITE_OK, or the SQLite error
 * that kept it from deciding (op->err is then meaningless). */
static int sqlite_op_apply(struct sqlite_store *st, struct sqlite_op *op)
{
    int rc = SQLITE_MISUSE;
    switch (op->kind) {
    case OP_CREATE: rc = sqlite_op_create(st, op); break;
    case OP_UPDATE: rc = sqlite_op_update(st, op); break;
    case OP_DELETE: rc = sqlite_op_delete(st, op); break;
    case OP_APPLY: return sqlite_op_apply_broker(st, op);
    }
    if (rc == SQLITE_OK && op->err == PAYMENT_STORE_OK && op->idem)
        rc = sqlite_op_idem(st, op);
    return rc;
}

static void sqlite_batch_fail(struct sqlite_op *batch, int err)
{
    for (struct sqlite_op *op = batch; op; op = op->next) {
        op->err = err;
        op->current_version = -1;
        op->seq = 0;
    }
}

/* Gives up the batch's transaction: every operation fails with err. */
static void sqlite_batch_abort(struct sqlite_store *st, struct sqlite_op *batch, int err)
{
    /* Some errors (IOERR, FULL) have already rolled the transaction back. */
    if (!sqlite3_get_autocommit(st->wdb)) {
        /* If even ROLLBACK fails the connection closes the transaction
         * itself before the next BEGIN can succeed; nothing more to do. */
        (void)sqlite_stmt_run(st->w[W_ROLLBACK]);
    }
    sqlite_batch_fail(batch, err);
}

/* Applies one savepoint-wrapped operation.  Returns SQLITE_OK when the
 * transaction is still good (op->err says how op went), else the error that
 * broke the transaction. */
static int sqlite_batch_step(struct sqlite_store *st, struct sqlite_op *op)
{
    int rc = sqlite_stmt_run(st->w[W_SAVEPOINT]);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite_op_apply(st, op);
    if (rc != SQLITE_OK || op->err == PAYMENT_STORE_EIDEMPOTENT) {
        /* Undo the operation's own changes; the batch goes on. */
        if (rc != SQLITE_OK)
            op->err = sqlite_map_err(rc);
        op->current_version = -1;
        op->seq = 0;
        if (sqlite3_get_autocommit(st->wdb))
            return rc != SQLITE_OK ? rc : SQLITE_ERROR;
        rc = sqlite_stmt_run(st->w[W_ROLLBACK_TO]);
        if (rc != SQLITE_OK)
            return rc;
    }
    return sqlite_stmt_run(st->w[W_RELEASE]);
}

/* Runs a batch in one transaction and sets every operation's result. */
static void sqlite_batch_run(struct sqlite_store *st, struct sqlite_op *batch)
{
    int rc = sqlite_stmt_run(st->w[W_BEGIN]);
    if (rc != SQLITE_OK) {
        sqlite_batch_abort(st, batch, sqlite_map_err(rc));
        return;
    }
    for (struct sqlite_op *op = batch; op; op = op->next) {
        rc = sqlite_batch_step(st, op);
        if (rc != SQLITE_OK) {
            sqlite_batch_abort(st, batch, sqlite_map_err(rc));
            return;
        }
    }
    rc = sqlite_stmt_run(st->w[W_COMMIT]);
    if (rc != SQLITE_OK) {
        sqlite_batch_abort(st, batch, sqlite_map_err(rc));
        return;
    }
    atomic_fetch_add(&st->commits, 1);
    uint64_t n = 0;
    for (struct sqlite_op *op = batch; op; op = op->next)
        n++;
    metrics_sizes_observe(&st->batches, n);
}

/* Reports and frees a finished batch; called without the queue lock. */
static void sqlite_batch_report(struct sqlite_store *st, struct sqlite_op *batch)
{
    while (batch) {
        struct sqlite_op *op = batch;
        batch = op->next;
        atomic_fetch_add(&st->writes, 1);
        op->done(op->arg, op->err, op->err == PAYMENT_STORE_ECONFLICT ? op->current_version : -1,
                 op->kind == OP_CREATE && op->err == PAYMENT_STORE_OK ? op->seq : 0);
        free(op);
    }
}

/* Deletes at most SQLITE_PURGE_BATCH rows older than before_ms from one
 * purged table: sets *more when it deleted that many. */
static int sqlite_purge_table(struct sqlite_store *st, enum sqlite_wstmt purge, int64_t before_ms,
                              int *more)
{
    sqlite3_stmt *stmt = st->w[purge];
    int rc = sqlite3_bind_int64(stmt, 1, before_ms);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(stmt, 2, SQLITE_PURGE_BATCH);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    sqlite_stmt_release(stmt);
    if (rc != SQLITE_DONE)
        return rc;
    if (sqlite3_changes(st->wdb) >= SQLITE_PURGE_BATCH)
        *more = 1;
    return SQLITE_OK;
}

/* One turn of the purge, in a transaction of its own between two batches
 * of writes: the oldest idempotency records and operation outcomes before
 * before_ms, a batch of each.  The purge is over when fewer were left, or
 * when the store cannot purge now (the next request tries again), unless a
 * later cut-off was asked for meanwhile. */
static void sqlite_purge_turn(struct sqlite_store *st, int64_t before_ms)
{
    int more = 0;
    int rc = sqlite_stmt_run(st->w[W_BEGIN]);
    if (rc == SQLITE_OK)
        rc = sqlite_purge_table(st, W_IDEM_PURGE, before_ms, &more);
    if (rc == SQLITE_OK)
        rc = sqlite_purge_table(st, W_OP_PURGE, before_ms, &more);
    if (rc == SQLITE_OK)
        rc = sqlite_stmt_run(st->w[W_COMMIT]);
    if (rc != SQLITE_OK) {
        more = 0;
        if (!sqlite3_get_autocommit(st->wdb))
            (void)sqlite_stmt_run(st->w[W_ROLLBACK]); /* a failed ROLLBACK ends it too */
    }
    if (more)
        return;
    store_lock(&st->mu);
    if (st->purge_before_ms == before_ms)
        st->purge_before_ms = SQLITE_NO_PURGE;
    store_unlock(&st->mu);
}

/* The writer thread: each turn applies every write queued, in one
 * transaction, then one turn of a purge asked for, so that a write waits
 * for at most one small purge transaction, never for a whole purge. */
static void *sqlite_writer_main(void *arg)
{
    struct sqlite_store *st = arg;
    for (;;) {
        store_lock(&st->mu);
        while (!st->head && st->purge_before_ms == SQLITE_NO_PURGE && !st->closing)
            if (pthread_cond_wait(&st->wake, &st->mu) != 0)
                abort();
        struct sqlite_op *batch = st->head;
        st->head = st->tail = NULL;
        /* A purge is best effort: closing abandons it. */
        int64_t purge_before = st->closing ? SQLITE_NO_PURGE : st->purge_before_ms;
        store_unlock(&st->mu);
        if (!batch && purge_before == SQLITE_NO_PURGE)
            return NULL; /* closing, and everything queued has been done */
        if (batch) {
            sqlite_batch_run(st, batch);
            sqlite_batch_report(st, batch);
        }
        if (purge_before != SQLITE_NO_PURGE)
            sqlite_purge_turn(st, purge_before);
    }
}

/* Reports op at once, before it reaches the writer. */
static void sqlite_op_reject(struct sqlite_op *op, int err)
{
    op->done(op->arg, err, -1, 0);
    free(op);
}

static void sqlite_submit(struct sqlite_store *st, struct sqlite_op *op)
{
    store_lock(&st->mu);
    if (st->closing) {
        store_unlock(&st->mu);
        sqlite_op_reject(op, PAYMENT_STORE_EUNAVAILABLE);
        return;
    }
    int was_empty = st->head == NULL;
    if (st->tail)
        st->tail->next = op;
    else
        st->head = op;
    st->tail = op;
    /* The writer waits only on an empty queue. */
    if (was_empty && pthread_cond_signal(&st->wake) != 0)
        abort();
    store_unlock(&st->mu);
}

/* A new operation, or NULL after reporting EINTERNAL (out of memory). */
static struct sqlite_op *sqlite_op_new(enum sqlite_op_kind kind, payment_store_done_fn done,
                                       void *arg)
{
    struct sqlite_op *op = calloc(1, sizeof *op);
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

static void sqlite_create(payment_store *s, const struct payment_row *row,
                          const struct payment_idem *idem, payment_store_done_fn done, void *arg)
{
    struct sqlite_op *op = sqlite_op_new(OP_CREATE, done, arg);
    if (!op)
        return;
    op->row = *row;
    op->idem = idem;
    if (row->version != 0) {
        sqlite_op_reject(op, PAYMENT_STORE_EINTERNAL); /* a caller bug */
        return;
    }
    sqlite_submit((struct sqlite_store *)s, op);
}

static void sqlite_update(payment_store *s, const struct payment_row *row,
                          int64_t expected_version, const struct payment_idem *idem,
                          payment_store_done_fn done, void *arg)
{
    struct sqlite_op *op = sqlite_op_new(OP_UPDATE, done, arg);
    if (!op)
        return;
    op->row = *row;
    op->idem = idem;
    op->expected_version = expected_version;
    if (expected_version < 0 || row->version != expected_version + 1) {
        sqlite_op_reject(op, PAYMENT_STORE_EINTERNAL); /* a caller bug */
        return;
    }
    sqlite_submit((struct sqlite_store *)s, op);
}

static void sqlite_remove(payment_store *s, const char *id, int64_t expected_version,
                          const struct payment_idem *idem, payment_store_done_fn done, void *arg)
{
    struct sqlite_op *op = sqlite_op_new(OP_DELETE, done, arg);
    if (!op)
        return;
    op->idem = idem;
    size_t len = strlen(id);
    if (len > UUID_STR_LEN) {
        sqlite_op_reject(op, PAYMENT_STORE_ENOTFOUND); /* longer than any stored id */
        return;
    }
    memcpy(op->row.id, id, len + 1);
    op->expected_version = expected_version;
    sqlite_submit((struct sqlite_store *)s, op);
}

/* Queues a broker operation (store.c has checked it). */
static void sqlite_apply(payment_store *s, const struct payment_apply *a,
                         payment_store_done_fn done, void *arg)
{
    struct sqlite_op *op = sqlite_op_new(OP_APPLY, done, arg);
    if (!op)
        return;
    op->apply = *a;
    op->idem = a->idem;
    op->expected_version = a->expected_version;
    if (a->row)
        op->row = *a->row;
    if (a->kind == PAYMENT_APPLY_DELETE)
        memcpy(op->row.id, a->payment_id, strlen(a->payment_id) + 1);
    sqlite_submit((struct sqlite_store *)s, op);
}

/* Asks the writer thread to purge, a batch per turn between its writes.
 * A purge asked for while one runs moves its cut-off later, never earlier. */
static void sqlite_idem_purge(payment_store *s, int64_t before_ms)
{
    struct sqlite_store *st = (struct sqlite_store *)s;
    store_lock(&st->mu);
    if (!st->closing && before_ms > st->purge_before_ms) {
        st->purge_before_ms = before_ms;
        if (pthread_cond_signal(&st->wake) != 0)
            abort();
    }
    store_unlock(&st->mu);
}

static void sqlite_stats(payment_store *s, struct payment_store_stats *out)
{
    struct sqlite_store *st = (struct sqlite_store *)s;
    out->commits = atomic_load(&st->commits);
    out->writes = atomic_load(&st->writes);
    out->batches = &st->batches;
}

/* ---- the read path ------------------------------------------------------ */

static void sqlite_reader_free(struct sqlite_reader *r)
{
    for (int i = 0; i < R_COUNT; i++)
        (void)sqlite3_finalize(r->stmt[i]); /* repeats a past step's error, if any */
    for (int i = 0; i < SQLITE_LIST_CACHE; i++)
        (void)sqlite3_finalize(r->list[i]);
    if (r->db && sqlite3_close(r->db) != SQLITE_OK)
        (void)sqlite3_close_v2(r->db); /* unreachable: every statement is finalized */
    free(r);
}

static void sqlite_reader_unlink(struct sqlite_store *st, struct sqlite_reader *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        st->readers = r->next;
    if (r->next)
        r->next->prev = r->prev;
}

/* pthread key destructor: a reading thread exits before the store closes. */
static void sqlite_reader_exit(void *p)
{
    struct sqlite_reader *r = p;
    struct sqlite_store *st = r->st;
    store_lock(&st->readers_mu);
    sqlite_reader_unlink(st, r);
    store_unlock(&st->readers_mu);
    sqlite_reader_free(r);
}

/* The calling thread's reader, opened on first use.  NULL and *err set when
 * it cannot be opened. */
static struct sqlite_reader *sqlite_reader_get(struct sqlite_store *st, int *err)
{
    struct sqlite_reader *r = pthread_getspecific(st->reader_key);
    if (r)
        return r;
    r = calloc(1, sizeof *r);
    if (!r) {
        *err = PAYMENT_STORE_EINTERNAL;
        return NULL;
    }
    r->st = st;
    /* unix-excl holds its lock for read-write connections only, so an
     * exclusive store's readers are read-write connections kept to reading
     * by query_only. */
    int mode = st->exclusive ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY;
    int rc = sqlite3_open_v2(st->path, &r->db, mode | SQLITE_OPEN_NOMUTEX, sqlite_vfs(st));
    if (rc == SQLITE_OK && st->exclusive)
        rc = sqlite3_exec(r->db, "PRAGMA query_only = 1", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(r->db, SQLITE_BUSY_TIMEOUT_MS);
    for (int i = 0; rc == SQLITE_OK && i < R_COUNT; i++)
        rc = sqlite3_prepare_v3(r->db, sqlite_rsql[i], -1, SQLITE_PREPARE_PERSISTENT, &r->stmt[i],
                                NULL);
    if (rc == SQLITE_OK && pthread_setspecific(st->reader_key, r) != 0)
        rc = SQLITE_NOMEM;
    if (rc != SQLITE_OK) {
        sqlite_reader_free(r);
        *err = sqlite_map_err(rc);
        return NULL;
    }
    store_lock(&st->readers_mu);
    r->next = st->readers;
    if (st->readers)
        st->readers->prev = r;
    st->readers = r;
    store_unlock(&st->readers_mu);
    return r;
}

static int sqlite_ping(payment_store *s)
{
    struct sqlite_store *st = (struct sqlite_store *)s;
    int err;
    struct sqlite_reader *r = sqlite_reader_get(st, &err);
    if (!r)
        return err;
    int rc = sqlite_stmt_run(r->stmt[R_PING]);
    return rc == SQLITE_OK ? PAYMENT_STORE_OK : sqlite_map_err(rc);
}

static int sqlite_get(payment_store *s, const char *id, struct buf *doc, int64_t *version,
                      int64_t *created_ms)
{
    struct sqlite_store *st = (struct sqlite_store *)s;
    int err;
    struct sqlite_reader *r = sqlite_reader_get(st, &err);
    if (!r)
        return err;
    sqlite3_stmt *stmt = r->stmt[R_GET];
    int rc = sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(stmt, 0);
        size_t len = (size_t)sqlite3_column_bytes(stmt, 0);
        if (!text && sqlite3_errcode(r->db) == SQLITE_NOMEM) {
            err = PAYMENT_STORE_EINTERNAL;
        } else if (buf_append(doc, text ? text : "", text ? len : 0) != 0) {
            err = PAYMENT_STORE_EINTERNAL;
        } else {
            err = PAYMENT_STORE_OK;
            *version = sqlite3_column_int64(stmt, 1);
            if (created_ms)
                *created_ms = sqlite3_column_int64(stmt, 2);
        }
    } else if (rc == SQLITE_DONE) {
        err = PAYMENT_STORE_ENOTFOUND;
    } else {
        err = sqlite_map_err(rc);
    }
    sqlite_stmt_release(stmt);
    return err;
}

/* Copies column col (text or NULL) into b. */
static int sqlite_column_buf(sqlite3_stmt *stmt, int col, struct buf *b)
{
    const void *p = sqlite3_column_blob(stmt, col);
    size_t len = (size_t)sqlite3_column_bytes(stmt, col);
    return p ? buf_append(b, p, len) : 0;
}

static int sqlite_idem_get(payment_store *s, const char *scope, const char *key,
                           struct payment_idem_found *out)
{
    struct sqlite_store *st = (struct sqlite_store *)s;
    int err;
    struct sqlite_reader *r = sqlite_reader_get(st, &err);
    if (!r)
        return err;
    sqlite3_stmt *stmt = r->stmt[R_IDEM];
    int rc = sqlite3_bind_text(stmt, 1, scope, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 2, key, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        const char *fp = (const char *)sqlite3_column_text(stmt, 0);
        const char *etag = (const char *)sqlite3_column_text(stmt, 3);
        snprintf(out->fingerprint, sizeof out->fingerprint, "%s", fp ? fp : "");
        snprintf(out->etag, sizeof out->etag, "%s", etag ? etag : "");
        out->status = sqlite3_column_int(stmt, 1);
        err = sqlite_column_buf(stmt, 2, &out->location) == 0 &&
                      sqlite_column_buf(stmt, 4, &out->body) == 0
                  ? PAYMENT_STORE_OK
                  : PAYMENT_STORE_EINTERNAL;
    } else if (rc == SQLITE_DONE) {
        err = PAYMENT_STORE_ENOTFOUND;
    } else {
        err = sqlite_map_err(rc);
    }
    sqlite_stmt_release(stmt);
    return err;
}

/* Copies text column col into out (NULL as ""), cut to fit. */
static void sqlite_column_str(sqlite3_stmt *stmt, int col, char *out, size_t len)
{
    const char *v = (const char *)sqlite3_column_text(stmt, col);
    snprintf(out, len, "%s", v ? v : "");
}

static int sqlite_op_get(payment_store *s, const char *op_id, struct payment_op_found *out)
{
    struct sqlite_store *st = (struct sqlite_store *)s;
    int err;
    struct sqlite_reader *r = sqlite_reader_get(st, &err);
    if (!r)
        return err;
    sqlite3_stmt *stmt = r->stmt[R_OP];
    int rc = sqlite3_bind_text(stmt, 1, op_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        sqlite_column_str(stmt, 0, out->status, sizeof out->status);
        sqlite_column_str(stmt, 1, out->error_code, sizeof out->error_code);
        sqlite_column_str(stmt, 2, out->message, sizeof out->message);
        sqlite_column_str(stmt, 3, out->payment_id, sizeof out->payment_id);
        sqlite_column_str(stmt, 4, out->organisation_id, sizeof out->organisation_id);
        out->version = sqlite3_column_int64(stmt, 5);
        out->partition = (uint32_t)sqlite3_column_int64(stmt, 6);
        out->seq = (uint64_t)sqlite3_column_int64(stmt, 7);
        sqlite_column_str(stmt, 8, out->fingerprint, sizeof out->fingerprint);
        err = sqlite3_errcode(r->db) == SQLITE_NOMEM ? PAYMENT_STORE_EINTERNAL : PAYMENT_STORE_OK;
    } else if (rc == SQLITE_DONE) {
        err = PAYMENT_STORE_ENOTFOUND;
    } else {
        err = sqlite_map_err(rc);
    }
    sqlite_stmt_release(stmt);
    return err;
}

static int sqlite_partition_get(payment_store *s, uint32_t partition, uint64_t *last_seq,
                                uint64_t *fence)
{
    struct sqlite_store *st = (struct sqlite_store *)s;
    int err;
    struct sqlite_reader *r = sqlite_reader_get(st, &err);
    if (!r)
        return err;
    sqlite3_stmt *stmt = r->stmt[R_PART];
    int rc = sqlite3_bind_int64(stmt, 1, partition);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    *last_seq = 0;
    *fence = 0;
    if (rc == SQLITE_ROW) {
        *last_seq = (uint64_t)sqlite3_column_int64(stmt, 0);
        *fence = (uint64_t)sqlite3_column_int64(stmt, 1);
        err = PAYMENT_STORE_OK;
    } else {
        err = rc == SQLITE_DONE ? PAYMENT_STORE_OK : sqlite_map_err(rc);
    }
    sqlite_stmt_release(stmt);
    return err;
}

/* A list query under construction: SQL text and its positional bindings. */
struct sqlite_list_sql {
    char text[SQLITE_LIST_SQL_MAX];
    size_t len;
    int overflow; /* text did not fit: the query is not run */
    struct {
        const char *text; /* NULL: bind num */
        int64_t num;
    } binds[SQLITE_LIST_BINDS];
    int nbinds;
};

static void sqlite_list_put(struct sqlite_list_sql *l, const char *s)
{
    size_t n = strlen(s);
    if (l->overflow || n >= sizeof l->text - l->len) {
        l->overflow = 1;
        return;
    }
    memcpy(l->text + l->len, s, n + 1);
    l->len += n;
}

/* Appends clause (holding one '?') bound to text, or to num when text is NULL. */
static void sqlite_list_arg(struct sqlite_list_sql *l, const char *clause, const char *text,
                            int64_t num)
{
    if (l->nbinds == SQLITE_LIST_BINDS) {
        l->overflow = 1;
        return;
    }
    sqlite_list_put(l, clause);
    l->binds[l->nbinds].text = text;
    l->binds[l->nbinds].num = num;
    l->nbinds++;
}

static void sqlite_list_set(struct sqlite_list_sql *l, const char *column,
                            const struct payment_query_set *set)
{
    if (set->count == 0)
        return;
    sqlite_list_put(l, " AND ");
    sqlite_list_put(l, column);
    sqlite_list_put(l, " IN (");
    for (size_t i = 0; i < set->count && i < PAYMENT_QUERY_MAX_VALUES; i++)
        sqlite_list_arg(l, i ? ", ?" : "?", set->values[i], 0);
    sqlite_list_put(l, ")");
}

/* Builds the query of q's shape: its filters, its page, one row more than
 * the page to learn whether another follows. */
static void sqlite_list_build(struct sqlite_list_sql *l, const struct payment_query *q)
{
    sqlite_list_put(l, "SELECT seq, doc FROM payments WHERE deleted = 0");
    sqlite_list_set(l, "organisation_id", &q->organisation_id);
    sqlite_list_set(l, "currency", &q->currency);
    sqlite_list_set(l, "payment_scheme", &q->payment_scheme);
    sqlite_list_set(l, "payment_type", &q->payment_type);
    sqlite_list_set(l, "reference", &q->reference);
    sqlite_list_set(l, "end_to_end_reference", &q->end_to_end_reference);
    if (q->processing_date_from[0])
        sqlite_list_arg(l, " AND processing_date >= ?", q->processing_date_from, 0);
    if (q->processing_date_to[0])
        sqlite_list_arg(l, " AND processing_date <= ?", q->processing_date_to, 0);
    if (q->amount_from[0])
        sqlite_list_arg(l, " AND amount_key >= ?", q->amount_from, 0);
    if (q->amount_to[0])
        sqlite_list_arg(l, " AND amount_key <= ?", q->amount_to, 0);
    if (q->created_from_ms != INT64_MIN)
        sqlite_list_arg(l, " AND created_ms >= ?", NULL, q->created_from_ms);
    if (q->created_to_ms != INT64_MAX)
        sqlite_list_arg(l, " AND created_ms < ?", NULL, q->created_to_ms);
    if (q->mode == PAYMENT_PAGE_CURSOR)
        sqlite_list_arg(l, " AND seq > ?", NULL, q->after_seq);
    sqlite_list_put(l, " ORDER BY seq");
    sqlite_list_arg(l, " LIMIT ?", NULL, (int64_t)q->page_size + 1);
    if (q->mode == PAYMENT_PAGE_OFFSET)
        sqlite_list_arg(l, " OFFSET ?", NULL, (int64_t)q->page_number * q->page_size);
}

static int sqlite_list_bind(sqlite3_stmt *stmt, const struct sqlite_list_sql *l)
{
    int rc = SQLITE_OK;
    for (int i = 0; rc == SQLITE_OK && i < l->nbinds; i++)
        rc = l->binds[i].text ? sqlite3_bind_text(stmt, i + 1, l->binds[i].text, -1, SQLITE_STATIC)
                              : sqlite3_bind_int64(stmt, i + 1, l->binds[i].num);
    return rc;
}

/* Steps through the page, calling each per row.  Returns 0, each's non-zero
 * value, or a negative store error. */
static int sqlite_list_rows(sqlite3 *db, sqlite3_stmt *stmt, uint32_t page_size,
                            payment_store_row_fn each, void *arg, int *more)
{
    uint32_t n = 0;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (n == page_size) {
            *more = 1;
            return PAYMENT_STORE_OK;
        }
        int64_t seq = sqlite3_column_int64(stmt, 0);
        const char *doc = (const char *)sqlite3_column_text(stmt, 1);
        size_t len = (size_t)sqlite3_column_bytes(stmt, 1);
        if (!doc && sqlite3_errcode(db) == SQLITE_NOMEM)
            return PAYMENT_STORE_EINTERNAL;
        int stop = each(arg, doc ? doc : "", doc ? len : 0, seq);
        if (stop)
            return stop;
        n++;
    }
    return rc == SQLITE_DONE ? PAYMENT_STORE_OK : sqlite_map_err(rc);
}

/* The reader's prepared statement for l's text: a cached one, or a new one
 * that replaces the oldest.  The statement stays the reader's. */
static int sqlite_list_stmt(struct sqlite_reader *r, const struct sqlite_list_sql *l,
                            sqlite3_stmt **out)
{
    for (int i = 0; i < SQLITE_LIST_CACHE && r->list[i]; i++) {
        const char *sql = sqlite3_sql(r->list[i]);
        if (sql && strlen(sql) == l->len && memcmp(sql, l->text, l->len) == 0) {
            *out = r->list[i];
            return SQLITE_OK;
        }
    }
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v3(r->db, l->text, (int)l->len + 1, SQLITE_PREPARE_PERSISTENT,
                                &stmt, NULL);
    if (rc != SQLITE_OK)
        return rc;
    unsigned slot = r->list_next++ % SQLITE_LIST_CACHE;
    (void)sqlite3_finalize(r->list[slot]); /* its last run's error was handled then */
    r->list[slot] = stmt;
    *out = stmt;
    return SQLITE_OK;
}

static int sqlite_list(payment_store *s, const struct payment_query *q, payment_store_row_fn each,
                       void *arg, int *more)
{
    struct sqlite_store *st = (struct sqlite_store *)s;
    *more = 0;
    if (q->page_size == 0 || q->page_size > PAYMENT_PAGE_SIZE_MAX)
        return PAYMENT_STORE_EINTERNAL; /* the query parser guarantees 1..MAX */
    int err;
    struct sqlite_reader *r = sqlite_reader_get(st, &err);
    if (!r)
        return err;
    struct sqlite_list_sql *l = malloc(sizeof *l);
    if (!l)
        return PAYMENT_STORE_EINTERNAL;
    l->len = 0;
    l->overflow = 0;
    l->nbinds = 0;
    l->text[0] = '\0';
    sqlite_list_build(l, q);
    sqlite3_stmt *stmt = NULL;
    int rc = l->overflow ? SQLITE_TOOBIG : sqlite_list_stmt(r, l, &stmt);
    if (rc == SQLITE_OK)
        rc = sqlite_list_bind(stmt, l);
    if (rc == SQLITE_OK)
        err = sqlite_list_rows(r->db, stmt, q->page_size, each, arg, more);
    else
        err = sqlite_map_err(rc);
    if (stmt)
        sqlite_stmt_release(stmt); /* its text binds point into l */
    free(l);
    return err;
}

/* ---- open and close ----------------------------------------------------- */

/* mkdir -p of the folder holding path. */
static int sqlite_make_parent(const char *path, char *errbuf, size_t errlen)
{
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path)
        return 0; /* the current folder or the root */
    char dir[PATH_MAX];
    size_t n = (size_t)(slash - path);
    if (n >= sizeof dir) {
        store_errf(errbuf, errlen, "store path too long: %s", path);
        return -1;
    }
    memcpy(dir, path, n);
    dir[n] = '\0';
    for (size_t i = 1; i <= n; i++) {
        if (dir[i] != '/' && dir[i] != '\0')
            continue;
        char c = dir[i];
        dir[i] = '\0';
        int failed = mkdir(dir, 0777) != 0 && errno != EEXIST;
        int saved = errno;
        dir[i] = c;
        if (failed) {
            char msg[128];
            store_errf(errbuf, errlen, "cannot create store folder %.*s: %s", (int)i, dir,
                        strerror_r(saved, msg, sizeof msg));
            return -1;
        }
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        store_errf(errbuf, errlen, "store folder %s is not a folder", dir);
        return -1;
    }
    return 0;
}

/* The first row's first column of sql as text, into out. */
static int sqlite_pragma_text(sqlite3 *db, const char *sql, char *out, size_t outlen)
{
    sqlite3_stmt *stmt;
    int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        const unsigned char *v = sqlite3_column_text(stmt, 0);
        snprintf(out, outlen, "%s", v ? (const char *)v : "");
        rc = SQLITE_OK;
    }
    (void)sqlite3_finalize(stmt);
    return rc == SQLITE_DONE ? SQLITE_ERROR : rc;
}

static int sqlite_exec(sqlite3 *db, const char *sql, char *errbuf, size_t errlen)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        store_errf(errbuf, errlen, "store schema: %s", msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return rc;
}

/* Brings the schema to SQLITE_SCHEMA_VERSION in one transaction, so that
 * concurrent openers and a crash mid-way leave a whole version. */
static int sqlite_migrate(sqlite3 *db, char *errbuf, size_t errlen)
{
    int rc = sqlite_exec(db, "BEGIN IMMEDIATE", errbuf, errlen);
    if (rc != SQLITE_OK)
        return rc;
    char text[32];
    rc = sqlite_pragma_text(db, "PRAGMA user_version", text, sizeof text);
    if (rc != SQLITE_OK) {
        store_errf(errbuf, errlen, "store schema: %s", sqlite3_errmsg(db));
        goto fail;
    }
    int version = atoi(text);
    if (version < 0 || version > SQLITE_SCHEMA_VERSION) {
        store_errf(errbuf, errlen, "store schema version %d is not one this build knows (%d)",
                    version, SQLITE_SCHEMA_VERSION);
        rc = SQLITE_ERROR;
        goto fail;
    }
    for (int v = version; v < SQLITE_SCHEMA_VERSION; v++) {
        rc = sqlite_exec(db, sqlite_migrations[v], errbuf, errlen);
        if (rc != SQLITE_OK)
            goto fail;
    }
    if (version < SQLITE_SCHEMA_VERSION) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", SQLITE_SCHEMA_VERSION);
        rc = sqlite_exec(db, sql, errbuf, errlen);
        if (rc != SQLITE_OK)
            goto fail;
    }
    return sqlite_exec(db, "COMMIT", errbuf, errlen);
fail:
    if (!sqlite3_get_autocommit(db))
        (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL); /* closing the connection would too */
    return rc;
}

/* Opens the write connection: WAL, full sync, schema, statements. */
static int sqlite_open_writer(struct sqlite_store *st, const char *path, char *errbuf,
                              size_t errlen)
{
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path, &st->wdb, flags, sqlite_vfs(st));
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(st->wdb, SQLITE_BUSY_TIMEOUT_MS);
    /* A new store's pages hold a whole typical payment (about 7 KB stored),
     * so that a read takes one page, not a leaf and an overflow page, and
     * SQLite hands out the document without assembling it.  Only a store not
     * yet written takes it; an existing one keeps its page size. */
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(st->wdb, "PRAGMA page_size = " SQLITE_PAGE_SIZE_NEW, NULL, NULL, NULL);
    char mode[16] = "";
    if (rc == SQLITE_OK)
        rc = sqlite_pragma_text(st->wdb, "PRAGMA journal_mode = WAL", mode, sizeof mode);
    if (rc == SQLITE_OK && strcasecmp(mode, "wal") != 0) {
        store_errf(errbuf, errlen, "cannot open store %s: WAL mode refused (%s)", path, mode);
        return PAYMENT_STORE_EURI;
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(st->wdb, "PRAGMA synchronous = FULL", NULL, NULL, NULL);
    if ((rc & 0xff) == SQLITE_BUSY) { /* the WAL pragma's read waited out the busy timeout */
        store_errf(errbuf, errlen, "%s is %s", path,
                   st->exclusive ? "open in another process, and this one needs it to itself"
                                 : "held exclusively by another process");
        return PAYMENT_STORE_EUNAVAILABLE;
    }
    if (rc != SQLITE_OK) {
        store_errf(errbuf, errlen, "cannot open store %s: %s", path,
                    st->wdb ? sqlite3_errmsg(st->wdb) : sqlite3_errstr(rc));
        return rc == SQLITE_NOMEM ? PAYMENT_STORE_EINTERNAL : PAYMENT_STORE_EURI;
    }
    if (sqlite_migrate(st->wdb, errbuf, errlen) != SQLITE_OK)
        return PAYMENT_STORE_EURI;
    for (int i = 0; i < W_COUNT; i++) {
        rc = sqlite3_prepare_v3(st->wdb, sqlite_wsql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->w[i],
                                NULL);
        if (rc != SQLITE_OK) {
            store_errf(errbuf, errlen, "store statement: %s", sqlite3_errmsg(st->wdb));
            return PAYMENT_STORE_EINTERNAL;
        }
    }
    /* Readers open the file by its absolute name: a later chdir cannot move them. */
    const char *full = sqlite3_db_filename(st->wdb, "main");
    st->path = strdup(full && full[0] ? full : path);
    if (!st->path) {
        store_errf(errbuf, errlen, "out of memory");
        return PAYMENT_STORE_EINTERNAL;
    }
    return PAYMENT_STORE_OK;
}

/* Starts the writer with every signal blocked: signals are the main thread's. */
static int sqlite_start_writer(struct sqlite_store *st)
{
    sigset_t all, old;
    if (sigfillset(&all) != 0 || pthread_sigmask(SIG_BLOCK, &all, &old) != 0)
        return -1;
    int rc = pthread_create(&st->writer, NULL, sqlite_writer_main, st);
    if (pthread_sigmask(SIG_SETMASK, &old, NULL) != 0)
        abort(); /* cannot fail with a mask it returned */
    if (rc != 0)
        return -1;
    st->writer_started = 1;
    return 0;
}

/* Frees a store whose writer is not running: readers, statements, connection. */
static void sqlite_store_free(struct sqlite_store *st)
{
    if (st->have_key && pthread_key_delete(st->reader_key) != 0)
        abort(); /* the key is valid */
    while (st->readers) {
        struct sqlite_reader *r = st->readers;
        sqlite_reader_unlink(st, r);
        sqlite_reader_free(r);
    }
    /* Closed last: the last connection checkpoints and removes the WAL. */
    for (int i = 0; i < W_COUNT; i++)
        (void)sqlite3_finalize(st->w[i]); /* repeats a past step's error, if any */
    if (st->wdb && sqlite3_close(st->wdb) != SQLITE_OK)
        (void)sqlite3_close_v2(st->wdb); /* unreachable: every statement is finalized */
    (void)pthread_cond_destroy(&st->wake);
    (void)pthread_mutex_destroy(&st->mu);
    (void)pthread_mutex_destroy(&st->readers_mu);
    free(st->path);
    free(st);
}

/* The store's mutexes and condition variable: 0, or -1 with none left. */
static int sqlite_sync_init(struct sqlite_store *st)
{
    if (pthread_mutex_init(&st->mu, NULL) != 0)
        return -1;
    if (pthread_mutex_init(&st->readers_mu, NULL) != 0) {
        (void)pthread_mutex_destroy(&st->mu);
        return -1;
    }
    if (pthread_cond_init(&st->wake, NULL) != 0) {
        (void)pthread_mutex_destroy(&st->readers_mu);
        (void)pthread_mutex_destroy(&st->mu);
        return -1;
    }
    return 0;
}

/* ---- online backup ------------------------------------------------------ */

/* Opens the store at path to copy it: read-write (a store left by a crash
 * is recovered from its write-ahead log first) but kept to reading, never
 * created, on the default VFS so that it shares the file with the
 * processes using it.  Reads the schema version, which takes the read lock
 * the copy will need: a file held exclusively fails here. */
static int sqlite_backup_source(const char *path, sqlite3 **out, char *errbuf, size_t errlen)
{
    int rc = sqlite3_open_v2(path, out, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(*out, SQLITE_BUSY_TIMEOUT_MS);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(*out, "PRAGMA query_only = 1", NULL, NULL, NULL);
    char version[32] = "";
    if (rc == SQLITE_OK)
        rc = sqlite_pragma_text(*out, "PRAGMA user_version", version, sizeof version);
    if ((rc & 0xff) == SQLITE_BUSY) {
        store_errf(errbuf, errlen, "%s is held exclusively by a running paymentd: run it with "
                   "--store-shared true, or stop it, to back it up", path);
        return PAYMENT_STORE_EUNAVAILABLE;
    }
    if ((rc & 0xff) == SQLITE_CANTOPEN) {
        store_errf(errbuf, errlen, "no store at %s", path);
        return PAYMENT_STORE_EURI;
    }
    if (rc != SQLITE_OK) {
        store_errf(errbuf, errlen, "cannot read store %s: %s", path,
                   *out ? sqlite3_errmsg(*out) : sqlite3_errstr(rc));
        return rc == SQLITE_NOTADB ? PAYMENT_STORE_EURI : sqlite_map_err(rc);
    }
    if (atoi(version) <= 0) {
        store_errf(errbuf, errlen, "%s is not a paymentd store (no schema)", path);
        return PAYMENT_STORE_EURI;
    }
    return PAYMENT_STORE_OK;
}

/* Copies src into the empty file tmp in one step, so in one read
 * transaction of src (a snapshot; writers in other processes go on), then
 * takes the copy out of WAL mode: the copy is one file, its log folded in. */
static int sqlite_backup_copy(sqlite3 *src, const char *tmp, char *errbuf, size_t errlen)
{
    sqlite3 *dst = NULL;
    int rc = sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    sqlite3_backup *b = rc == SQLITE_OK ? sqlite3_backup_init(dst, "main", src, "main") : NULL;
    if (b) {
        int step = sqlite3_backup_step(b, -1);
        rc = sqlite3_backup_finish(b); /* the step's error, if any */
        if (rc == SQLITE_OK && step != SQLITE_DONE)
            rc = step;
    } else if (rc == SQLITE_OK) {
        rc = sqlite3_errcode(dst);
    }
    char mode[16] = "";
    if (rc == SQLITE_OK)
        rc = sqlite_pragma_text(dst, "PRAGMA journal_mode = DELETE", mode, sizeof mode);
    if (rc == SQLITE_OK && strcasecmp(mode, "delete") != 0)
        rc = SQLITE_ERROR;
    if (rc != SQLITE_OK)
        store_errf(errbuf, errlen, "backup to %s: %s", tmp,
                   dst && sqlite3_errcode(dst) != SQLITE_OK ? sqlite3_errmsg(dst)
                                                             : sqlite3_errstr(rc));
    if (dst && sqlite3_close(dst) != SQLITE_OK && rc == SQLITE_OK) {
        store_errf(errbuf, errlen, "backup to %s: cannot close it", tmp);
        rc = SQLITE_ERROR; /* unreachable: the backup is finished */
    }
    if (rc == SQLITE_OK)
        return PAYMENT_STORE_OK;
    return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED ? PAYMENT_STORE_EUNAVAILABLE
                                                                      : PAYMENT_STORE_EINTERNAL;
}

/* fsync of the file or folder at path: 0 or -1 with errno. */
static int sqlite_fsync_path(const char *path, int flags)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | flags);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    if (close(fd) != 0 && rc == 0)
        return -1;
    errno = saved;
    return rc;
}

/* Makes the finished copy tmp durable and names it dest: the file's data,
 * then the rename, then the folder that holds the new name. */
static int sqlite_backup_publish(const char *tmp, const char *dest, char *errbuf, size_t errlen)
{
    char msg[128];
    if (sqlite_fsync_path(tmp, 0) != 0 || rename(tmp, dest) != 0) {
        store_errf(errbuf, errlen, "backup to %s: %s", dest, strerror_r(errno, msg, sizeof msg));
        return PAYMENT_STORE_EINTERNAL;
    }
    char dir[PATH_MAX];
    const char *slash = strrchr(dest, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dest)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - dest), dest); /* shorter than tmp */
    if (sqlite_fsync_path(dir, O_DIRECTORY) != 0) {
        store_errf(errbuf, errlen, "backup to %s: syncing its folder: %s", dest,
                   strerror_r(errno, msg, sizeof msg));
        return PAYMENT_STORE_EINTERNAL;
    }
    return PAYMENT_STORE_OK;
}

/* EURI when dest is the store itself, or a file with a write-ahead log
 * beside it (a store in use, or left by a crash: that log would be
 * replayed into the copy when it is opened). */
static int sqlite_backup_check_dest(const char *path, const char *dest, char *errbuf,
                                    size_t errlen)
{
    struct stat a, b;
    if (stat(path, &a) == 0 && stat(dest, &b) == 0 && a.st_dev == b.st_dev &&
        a.st_ino == b.st_ino) {
        store_errf(errbuf, errlen, "the backup file %s is the store itself", dest);
        return PAYMENT_STORE_EURI;
    }
    char wal[PATH_MAX];
    int n = snprintf(wal, sizeof wal, "%s-wal", dest);
    if (n < 0 || (size_t)n >= sizeof wal) {
        store_errf(errbuf, errlen, "backup file name too long: %s", dest);
        return PAYMENT_STORE_EURI;
    }
    if (access(wal, F_OK) == 0) {
        store_errf(errbuf, errlen, "%s has a write-ahead log beside it (%s): a store in use, "
                   "not a place for a backup", dest, wal);
        return PAYMENT_STORE_EURI;
    }
    return PAYMENT_STORE_OK;
}

static int sqlite_backup(const char *uri, const char *dest, char *errbuf, size_t errlen)
{
    const char *path = uri + strlen(SQLITE_URI_PREFIX);
    if (!path[0] || !dest[0]) {
        store_errf(errbuf, errlen, "%s", path[0] ? "no backup file named"
                                                 : "the store URI names no file");
        return PAYMENT_STORE_EURI;
    }
    int err = sqlite_backup_check_dest(path, dest, errbuf, errlen);
    if (err != PAYMENT_STORE_OK)
        return err;
    char tmp[PATH_MAX];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", dest);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        store_errf(errbuf, errlen, "backup file name too long: %s", dest);
        return PAYMENT_STORE_EURI;
    }
    /* The copy's folder is checked first: a backup that cannot be written
     * is refused before it waits for the store. */
    int fd = mkstemp(tmp);
    if (fd < 0) {
        char msg[128];
        store_errf(errbuf, errlen, "cannot create %s: %s", tmp, strerror_r(errno, msg, sizeof msg));
        return PAYMENT_STORE_EINTERNAL;
    }
    if (close(fd) != 0) { /* unreachable: nothing was written to it */
        store_errf(errbuf, errlen, "cannot close %s", tmp);
        err = PAYMENT_STORE_EINTERNAL;
    }
    sqlite3 *src = NULL;
    if (err == PAYMENT_STORE_OK)
        err = sqlite_backup_source(path, &src, errbuf, errlen);
    if (err == PAYMENT_STORE_OK)
        err = sqlite_backup_copy(src, tmp, errbuf, errlen);
    if (src && sqlite3_close(src) != SQLITE_OK)
        (void)sqlite3_close_v2(src); /* unreachable: it has no statement left */
    if (err == PAYMENT_STORE_OK)
        err = sqlite_backup_publish(tmp, dest, errbuf, errlen);
    if (err != PAYMENT_STORE_OK) {
        char journal[PATH_MAX + 16];
        snprintf(journal, sizeof journal, "%s-journal", tmp);
        (void)unlink(tmp); /* best effort: the failure is already reported */
        (void)unlink(journal);
    }
    return err;
}

/* SQLite keeps memory statistics by default: every allocation of every
 * connection then takes one global mutex, for which the reader threads
 * contend (futex calls under load).  paymentd reads none of them. */
static int sqlite_init(char *errbuf, size_t errlen)
{
    int rc = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    if (rc == SQLITE_OK)
        rc = sqlite3_initialize();
    if (rc != SQLITE_OK) {
        store_errf(errbuf, errlen, "SQLite set-up: %s", sqlite3_errstr(rc));
        return PAYMENT_STORE_EINTERNAL;
    }
    return PAYMENT_STORE_OK;
}

static int sqlite_open(const char *uri, unsigned flags, payment_store **out, char *errbuf,
                       size_t errlen)
{
    const char *path = uri + strlen(SQLITE_URI_PREFIX);
    if (!path[0]) {
        store_errf(errbuf, errlen, "store URI %s names no file (expected sqlite:PATH)", uri);
        return PAYMENT_STORE_EURI;
    }
    if (sqlite_make_parent(path, errbuf, errlen) != 0)
        return PAYMENT_STORE_EURI;
    struct sqlite_store *st = calloc(1, sizeof *st);
    if (!st) {
        store_errf(errbuf, errlen, "out of memory");
        return PAYMENT_STORE_EINTERNAL;
    }
    st->exclusive = (flags & PAYMENT_STORE_EXCLUSIVE) != 0;
    st->purge_before_ms = SQLITE_NO_PURGE;
    atomic_init(&st->commits, 0);
    atomic_init(&st->writes, 0);
    if (sqlite_sync_init(st) != 0) {
        free(st);
        store_errf(errbuf, errlen, "cannot create the store's locks");
        return PAYMENT_STORE_EINTERNAL;
    }
    /* From here sqlite_store_free undoes whatever was done. */
    int err = PAYMENT_STORE_EINTERNAL;
    if (pthread_key_create(&st->reader_key, sqlite_reader_exit) != 0) {
        store_errf(errbuf, errlen, "cannot create a thread key");
        goto fail;
    }
    st->have_key = 1;
    err = sqlite_open_writer(st, path, errbuf, errlen);
    if (err != PAYMENT_STORE_OK)
        goto fail;
    if (sqlite_start_writer(st) != 0) {
        store_errf(errbuf, errlen, "cannot start the store writer thread");
        err = PAYMENT_STORE_EINTERNAL;
        goto fail;
    }
    *out = &st->base;
    return PAYMENT_STORE_OK;
fail:
    sqlite_store_free(st);
    return err;
}

/* The caller guarantees no call into the store runs or starts meanwhile,
 * and no thread that read from it exits meanwhile (its key destructor would
 * race with the readers' teardown). */
static void sqlite_close(payment_store *s)
{
    struct sqlite_store *st = (struct sqlite_store *)s;
    store_lock(&st->mu);
    st->closing = 1;
    if (pthread_cond_signal(&st->wake) != 0)
        abort();
    store_unlock(&st->mu);
    if (st->writer_started && pthread_join(st->writer, NULL) != 0)
        abort(); /* joinable and not this thread: close must not be called from done */
    sqlite_store_free(st);
}

const struct payment_store_backend payment_store_sqlite_backend = {
    .scheme = "sqlite",
    .init = sqlite_init,
    .open = sqlite_open,
    .backup = sqlite_backup,
    .close = sqlite_close,
    .ping = sqlite_ping,
    .get = sqlite_get,
    .list = sqlite_list,
    .create = sqlite_create,
    .update = sqlite_update,
    .remove = sqlite_remove,
    .stats = sqlite_stats,
    .idem_get = sqlite_idem_get,
    .idem_purge = sqlite_idem_purge,
    .apply = sqlite_apply,
    .op_get = sqlite_op_get,
    .partition_get = sqlite_partition_get,
};
