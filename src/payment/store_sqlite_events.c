/* store_sqlite_events: the events of the embedded store (store.h, "events:
 * the history and the change feed"): recording them in the payment writes,
 * and reading the feed and the histories.
 *
 * Recording.  Each payment write (store_sqlite_writer.c, and the broker's
 * applies, store_sqlite_apply.c) inserts its event into the events table
 * in the write's own savepoint, after the payment row: a write that changes
 * nothing (a conflict, an unknown or duplicate id) inserts none, and a
 * write undone for its idempotency key, or by a failed batch, takes its
 * event with it, so a commit holds both the change and its event or
 * neither.  A delete's event is inserted from the row it deletes (the
 * document as it was), and that insert is the delete's compare-and-set.
 *
 * Positions, and why the feed is in commit order.  An event's position is
 * its rowid (INTEGER PRIMARY KEY AUTOINCREMENT), given by SQLite at the
 * insert, inside the write transaction, not before it.  SQLite lets one
 * transaction write a database file at a time: BEGIN IMMEDIATE takes the
 * WAL's write lock, for every connection of every process on the file,
 * and keeps it until COMMIT or ROLLBACK.  So while a transaction holds
 * positions not yet committed, no other can commit any, and the next
 * writer starts from the committed sqlite_sequence, above every position
 * given so far.  Positions are therefore given in commit order: every
 * event not yet committed when a reader's snapshot was taken will commit
 * with a position above every position that snapshot holds.  A feed page
 * and the end it reports (max(pos)) are read in one read transaction, one
 * snapshot, so a consumer that moves its cursor to that end (or to its
 * last event) skips nothing committed later.  A rolled-back transaction's
 * positions are given again (sqlite_sequence rolls back with it); no
 * reader ever saw them.  A number taken outside the write lock (a counter
 * in memory, taken when the write is submitted, or one in a table committed
 * before the write's own transaction) would not do: a write could take 5,
 * another 6 and commit first, and a reader seeing 6 would pass 5 before it
 * commits.
 *
 * Retention: the feed's floor, in feed_meta, is the last position that
 * left the feed; a cursor below it has missed events (EEXPIRED), a cursor
 * of 0 starts at it.  The writer thread purges between its batches of
 * writes, one small transaction per turn (SQLITE_EVENTS_PURGE_BATCH events
 * at most for each cut-off), so a write waits at most for one of those.
 * Each walks the events in position order from the oldest (the feed from
 * its floor) and stops at the first that occurred at or after the cut-off:
 * positions follow commits, and an event's time is its write's, so the
 * oldest come first; one committed late with an earlier time is kept until
 * those before it go.  Events that leave the feed move the floor past
 * them; deleted ones (from the histories) too.
 *
 * The subscriber is told by the writer thread: after each commit of its own
 * that holds events, and, polling PRAGMA data_version every
 * SQLITE_EVENTS_POLL_US between its turns, after other connections'
 * commits (other processes', or another store's on the same file).
 *
 * Threads: the recording functions and the poll run on the writer thread,
 * on its connection; the reads on the calling thread's reader connection
 * (store_sqlite_read.c), which they leave outside any transaction. */
#include <assert.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/uuid.h"
#include "payment/store_sqlite.h"

/* Events each part of a purge turn walks at most: with their documents,
 * a few hundred take a few milliseconds to delete. */
#define SQLITE_EVENTS_PURGE_BATCH 256

/* ---- recording ---------------------------------------------------------- */

/* The event's id: the one info gives, else a new UUIDv7 of occurred_ms.
 * SQLITE_OK, or SQLITE_ERROR when the kernel's random source fails. */
static int sqlite_event_id(const struct payment_event_info *info, int64_t occurred_ms,
                           char out[UUID_STR_LEN + 1])
{
    if (info && info->id[0]) {
        memcpy(out, info->id, UUID_STR_LEN);
        out[UUID_STR_LEN] = '\0';
        return SQLITE_OK;
    }
    struct uuid u;
    if (uuid_v7_generate(occurred_ms, &u) != 0)
        return SQLITE_ERROR;
    uuid_format(&u, out);
    return SQLITE_OK;
}

/* Binds what every event statement takes from the write's description
 * (info, NULL for none): ?1 the id (written into id), ?6 occurred_ms,
 * ?7..?10 the caller, request, key and operation. */
static int sqlite_event_bind_info(sqlite3_stmt *stmt, const struct payment_event_info *info,
                                  int64_t occurred_ms, char id[UUID_STR_LEN + 1])
{
    int rc = sqlite_event_id(info, occurred_ms, id);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 1, id, UUID_STR_LEN, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 6, occurred_ms);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 7, info ? info->api_key_id : NULL);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 8, info ? info->request_id : NULL);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 9, info ? info->idempotency_key : NULL);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 10, info ? info->operation_id : NULL);
    return rc;
}

int sqlite_event_record(struct sqlite_store *st, struct sqlite_op *op,
                        enum payment_event_type type)
{
    assert(type == PAYMENT_EVENT_CREATED || type == PAYMENT_EVENT_UPDATED);
    const struct payment_row *row = &op->row;
    const struct payment_event_info *info = op->ev;
    int64_t occurred_ms = info && info->occurred_ms ? info->occurred_ms : row->modified_ms;
    const char *changes = info && type == PAYMENT_EVENT_UPDATED ? info->changes : NULL;
    char id[UUID_STR_LEN + 1];
    sqlite3_stmt *stmt = st->w[W_EV_INSERT];
    int rc = sqlite_event_bind_info(stmt, info, occurred_ms, id);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 2, row->id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 3, row->organisation_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 4, row->version);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(stmt, 5, (int)type);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 11, changes);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text64(stmt, 12, row->doc ? row->doc : "", row->doc ? row->doc_len : 0,
                                 SQLITE_STATIC, SQLITE_UTF8);
    if (rc != SQLITE_OK) {
        sqlite_stmt_release(stmt);
        return rc;
    }
    rc = sqlite_stmt_run(stmt);
    op->evented = rc == SQLITE_OK;
    return rc;
}

int sqlite_event_bind_delete(struct sqlite_op *op, sqlite3_stmt *stmt,
                             char id[UUID_STR_LEN + 1])
{
    const struct payment_event_info *info = op->ev;
    int64_t occurred_ms = info && info->occurred_ms ? info->occurred_ms : clock_now_ms();
    int rc = sqlite_event_bind_info(stmt, info, occurred_ms, id);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 2, op->row.id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 4, op->expected_version);
    return rc;
}

/* ---- reading ------------------------------------------------------------ */

/* An optional text column: its text, or NULL. */
static const char *sqlite_event_text(sqlite3_stmt *stmt, int col)
{
    return (const char *)sqlite3_column_text(stmt, col);
}

int sqlite_event_row(sqlite3 *db, sqlite3_stmt *stmt, struct payment_event *ev)
{
    ev->pos = sqlite3_column_int64(stmt, 0);
    int type = sqlite3_column_int(stmt, 2);
    ev->type = (enum payment_event_type)type;
    ev->version = sqlite3_column_int64(stmt, 5);
    ev->occurred_ms = sqlite3_column_int64(stmt, 6);
    ev->api_key_id = sqlite_event_text(stmt, 7);
    ev->request_id = sqlite_event_text(stmt, 8);
    ev->idempotency_key = sqlite_event_text(stmt, 9);
    ev->operation_id = sqlite_event_text(stmt, 10);
    ev->changes = sqlite_event_text(stmt, 11);
    ev->doc = (const char *)sqlite3_column_text(stmt, 12);
    ev->doc_len = (size_t)sqlite3_column_bytes(stmt, 12);
    int bad = sqlite_column_uuid(stmt, 1, ev->id) != 0 ||
              sqlite_column_uuid(stmt, 3, ev->organisation_id) != 0 ||
              sqlite_column_uuid(stmt, 4, ev->payment_id) != 0 || !ev->doc ||
              (type != PAYMENT_EVENT_CREATED && type != PAYMENT_EVENT_UPDATED &&
               type != PAYMENT_EVENT_DELETED);
    if (bad || sqlite3_errcode(db) == SQLITE_NOMEM)
        return PAYMENT_STORE_EINTERNAL;
    return PAYMENT_STORE_OK;
}

/* What a page read: its events, the last one's position. */
struct sqlite_event_page {
    uint32_t n;
    int64_t last_pos;
};

/* Steps through a bound statement's events, calling each per event, at
 * most limit of them; sets *more (when not NULL) if another row follows.
 * Returns 0, each's non-zero value, or a negative store error. */
static int sqlite_event_rows(sqlite3 *db, sqlite3_stmt *stmt, uint32_t limit,
                             payment_store_event_fn each, void *arg,
                             struct sqlite_event_page *page, int *more)
{
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (page->n == limit) {
            if (more)
                *more = 1;
            return PAYMENT_STORE_OK;
        }
        struct payment_event ev;
        int err = sqlite_event_row(db, stmt, &ev);
        if (err != PAYMENT_STORE_OK)
            return err;
        int stop = each(arg, &ev);
        if (stop)
            return stop;
        page->n++;
        page->last_pos = ev.pos;
    }
    return rc == SQLITE_DONE ? PAYMENT_STORE_OK : sqlite_map_err(rc);
}

int sqlite_history(payment_store *s, const char *payment_id, int64_t after_version,
                   uint32_t limit, payment_store_event_fn each, void *arg, int *more)
{
    struct sqlite_store *st = (struct sqlite_store *)s;
    int err;
    struct sqlite_reader *r = sqlite_reader_get(st, &err);
    if (!r)
        return err;
    sqlite3_stmt *stmt = r->stmt[R_HISTORY];
    int rc = sqlite3_bind_text(stmt, 1, payment_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 2, after_version);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 3, (int64_t)limit + 1);
    struct sqlite_event_page page = {0, 0};
    err = rc == SQLITE_OK ? sqlite_event_rows(r->db, stmt, limit, each, arg, &page, more)
                          : sqlite_map_err(rc);
    sqlite_stmt_release(stmt);
    return err;
}

/* ---- the feed ----------------------------------------------------------- */

/* A feed query's shape: which of its clauses the SQL holds.  Its index in
 * the reader's feed statements is orgs * 16 + the four filter bits. */
enum sqlite_feed_shape {
    FEED_TO = 1,      /* occurred_ms < ?7 */
    FEED_FROM = 2,    /* occurred_ms >= ?6 */
    FEED_PAYMENT = 4, /* payment_id = ?5 */
    FEED_TYPES = 8,   /* (type & ?4) != 0 */
    FEED_ONE_ORG = 16,   /* organisation_id = ?3 */
    FEED_MANY_ORGS = 32, /* organisation_id among the JSON array ?3 */
};

#define SQLITE_FEED_SQL_MAX 640 /* the longest shape's SQL */
#define SQLITE_FEED_ALL_TYPES                                                             \
    (PAYMENT_EVENT_CREATED | PAYMENT_EVENT_UPDATED | PAYMENT_EVENT_DELETED)

static unsigned sqlite_feed_shape(const struct payment_event_query *q)
{
    unsigned shape = 0;
    if (!q->all_orgs)
        shape |= q->n_orgs == 1 ? FEED_ONE_ORG : FEED_MANY_ORGS;
    if (q->types != 0 && (q->types & SQLITE_FEED_ALL_TYPES) != SQLITE_FEED_ALL_TYPES)
        shape |= FEED_TYPES;
    if (q->payment_id)
        shape |= FEED_PAYMENT;
    if (q->from_ms != INT64_MIN)
        shape |= FEED_FROM;
    if (q->to_ms != INT64_MAX)
        shape |= FEED_TO;
    assert(shape < SQLITE_FEED_SHAPES);
    return shape;
}

/* The SQL of a shape: events above ?1 in position order, at most ?2. */
static void sqlite_feed_sql(unsigned shape, char out[SQLITE_FEED_SQL_MAX])
{
    int n = snprintf(out, SQLITE_FEED_SQL_MAX, "SELECT %s FROM events WHERE pos > ?1%s%s%s%s%s"
                     " ORDER BY pos LIMIT ?2", SQLITE_EVENT_COLUMNS,
                     shape & FEED_ONE_ORG ? " AND organisation_id = ?3"
                     : shape & FEED_MANY_ORGS
                         ? " AND organisation_id IN (SELECT value FROM json_each(?3))"
                         : "",
                     shape & FEED_TYPES ? " AND (type & ?4) != 0" : "",
                     shape & FEED_PAYMENT ? " AND payment_id = ?5" : "",
                     shape & FEED_FROM ? " AND occurred_ms >= ?6" : "",
                     shape & FEED_TO ? " AND occurred_ms < ?7" : "");
    assert(n > 0 && n < SQLITE_FEED_SQL_MAX);
    (void)n;
}

/* The reader's statement of a shape, prepared on its first use. */
static int sqlite_feed_stmt(struct sqlite_reader *r, unsigned shape, sqlite3_stmt **out)
{
    if (!r->feed[shape]) {
        char sql[SQLITE_FEED_SQL_MAX];
        sqlite_feed_sql(shape, sql);
        int rc = sqlite3_prepare_v3(r->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &r->feed[shape],
                                    NULL);
        if (rc != SQLITE_OK)
            return rc;
    }
    *out = r->feed[shape];
    return SQLITE_OK;
}

/* The organisations of a query naming several, as a JSON array. */
static int sqlite_feed_orgs(const struct payment_event_query *q, struct buf *json)
{
    buf_puts(json, "[");
    for (size_t i = 0; i < q->n_orgs; i++) {
        buf_puts(json, i ? ",\"" : "\"");
        buf_json_escape(json, q->orgs[i], strnlen(q->orgs[i], UUID_STR_LEN));
        buf_puts(json, "\"");
    }
    buf_puts(json, "]");
    return buf_failed(json) ? -1 : 0;
}

/* Binds the shape's parameters: ?1 the position the page starts after. */
static int sqlite_feed_bind(sqlite3_stmt *stmt, unsigned shape,
                            const struct payment_event_query *q, int64_t after,
                            const struct buf *orgs)
{
    int rc = sqlite3_bind_int64(stmt, 1, after);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 2, q->limit);
    if (rc == SQLITE_OK && (shape & FEED_ONE_ORG))
        rc = sqlite3_bind_text(stmt, 3, q->orgs[0], -1, SQLITE_STATIC);
    if (rc == SQLITE_OK && (shape & FEED_MANY_ORGS))
        rc = sqlite3_bind_text(stmt, 3, orgs->data, (int)orgs->len, SQLITE_STATIC);
    if (rc == SQLITE_OK && (shape & FEED_TYPES))
        rc = sqlite3_bind_int(stmt, 4, (int)q->types);
    if (rc == SQLITE_OK && (shape & FEED_PAYMENT))
        rc = sqlite3_bind_text(stmt, 5, q->payment_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK && (shape & FEED_FROM))
        rc = sqlite3_bind_int64(stmt, 6, q->from_ms);
    if (rc == SQLITE_OK && (shape & FEED_TO))
        rc = sqlite3_bind_int64(stmt, 7, q->to_ms);
    return rc;
}

/* The feed's end and floor as the open read transaction sees them. */
static int sqlite_feed_top(struct sqlite_reader *r, int64_t *end, int64_t *floor)
{
    sqlite3_stmt *stmt = r->stmt[R_FEED_TOP];
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        *end = sqlite3_column_int64(stmt, 0); /* NULL, no event: 0 */
        *floor = sqlite3_column_int64(stmt, 1);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_CORRUPT; /* one row, always */
    }
    sqlite_stmt_release(stmt);
    return rc;
}

/* The page q names, in the open read transaction; sets *next_pos. */
static int sqlite_feed_page(struct sqlite_reader *r, const struct payment_event_query *q,
                            const struct buf *orgs, payment_store_event_fn each, void *arg,
                            int64_t *next_pos)
{
    int64_t end = 0, floor = 0;
    int rc = sqlite_feed_top(r, &end, &floor);
    if (rc != SQLITE_OK)
        return sqlite_map_err(rc);
    if (q->after_pos > 0 && q->after_pos < floor)
        return PAYMENT_STORE_EEXPIRED;
    int64_t after = q->after_pos > floor ? q->after_pos : floor;
    struct sqlite_event_page page = {0, 0};
    if (q->all_orgs || q->n_orgs > 0) {
        unsigned shape = sqlite_feed_shape(q);
        sqlite3_stmt *stmt = NULL;
        rc = sqlite_feed_stmt(r, shape, &stmt);
        if (rc == SQLITE_OK)
            rc = sqlite_feed_bind(stmt, shape, q, after, orgs);
        int err = rc == SQLITE_OK
                      ? sqlite_event_rows(r->db, stmt, q->limit, each, arg, &page, NULL)
                      : sqlite_map_err(rc);
        if (stmt)
            sqlite_stmt_release(stmt);
        if (err != PAYMENT_STORE_OK)
            return err;
    }
    if (page.n == q->limit)
        *next_pos = page.last_pos;
    else
        *next_pos = end > after ? end : after;
    return PAYMENT_STORE_OK;
}

/* Ends the reader's read transaction, whatever happened in it. */
static void sqlite_read_end(struct sqlite_reader *r)
{
    if (sqlite3_get_autocommit(r->db))
        return; /* an error ended it already */
    if (sqlite_stmt_run(r->stmt[R_READ_END]) != SQLITE_OK && !sqlite3_get_autocommit(r->db))
        (void)sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL); /* ends a read in any case */
}

int sqlite_events(payment_store *s, const struct payment_event_query *q,
                  payment_store_event_fn each, void *arg, int64_t *next_pos)
{
    struct sqlite_store *st = (struct sqlite_store *)s;
    int err;
    struct sqlite_reader *r = sqlite_reader_get(st, &err);
    if (!r)
        return err;
    struct buf orgs = BUF_INIT;
    if (!q->all_orgs && q->n_orgs > 1 && sqlite_feed_orgs(q, &orgs) != 0) {
        buf_free(&orgs);
        return PAYMENT_STORE_EINTERNAL;
    }
    int rc = sqlite_stmt_run(r->stmt[R_READ_BEGIN]);
    if (rc == SQLITE_OK) {
        err = sqlite_feed_page(r, q, &orgs, each, arg, next_pos);
        sqlite_read_end(r);
    } else {
        err = sqlite_map_err(rc);
    }
    buf_free(&orgs);
    return err;
}

/* ---- the subscriber ----------------------------------------------------- */

void sqlite_events_subscribe(payment_store *s, void (*fn)(void *arg), void *arg)
{
    struct sqlite_store *st = (struct sqlite_store *)s;
    store_lock(&st->mu);
    st->ev_fn = fn;
    st->ev_arg = arg;
    if (pthread_cond_signal(&st->wake) != 0)
        abort();
    store_unlock(&st->mu);
}

int64_t sqlite_events_poll(struct sqlite_store *st, void (*fn)(void *arg), void *arg)
{
    int64_t now = clock_mono_us();
    if (now < st->poll_next_us)
        return st->poll_next_us;
    sqlite3_stmt *stmt = st->w[W_DATA_VERSION];
    int64_t version = -1;
    if (sqlite3_step(stmt) == SQLITE_ROW)
        version = sqlite3_column_int64(stmt, 0);
    sqlite_stmt_release(stmt); /* a failed poll is tried again at the next */
    /* The first poll tells too: a commit may have come before it. */
    if (version >= 0 && version != st->data_version) {
        st->data_version = version;
        fn(arg);
    }
    return now + SQLITE_EVENTS_POLL_US;
}

/* ---- retention ---------------------------------------------------------- */

void sqlite_events_purge(payment_store *s, int64_t feed_before_ms, int64_t history_before_ms)
{
    struct sqlite_store *st = (struct sqlite_store *)s;
    store_lock(&st->mu);
    int asked = 0;
    if (!st->closing && feed_before_ms > st->feed_purge_ms) {
        st->feed_purge_ms = feed_before_ms;
        asked = 1;
    }
    if (!st->closing && history_before_ms > st->history_purge_ms) {
        st->history_purge_ms = history_before_ms;
        asked = 1;
    }
    if (asked && pthread_cond_signal(&st->wake) != 0)
        abort();
    store_unlock(&st->mu);
}

/* The events above position after, oldest first, that occurred before
 * before_ms, up to the first that did not: *last is the last one's
 * position (after when none), *more set when the walk stopped at its
 * length with every event old. */
static int sqlite_events_walk(struct sqlite_store *st, int64_t after, int64_t before_ms,
                              int64_t *last, int *more)
{
    sqlite3_stmt *stmt = st->w[W_EV_WALK];
    int rc = sqlite3_bind_int64(stmt, 1, after);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(stmt, 2, SQLITE_EVENTS_PURGE_BATCH);
    *last = after;
    int n = 0;
    if (rc == SQLITE_OK) {
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
            if (sqlite3_column_int64(stmt, 1) >= before_ms) {
                rc = SQLITE_DONE;
                n = -1; /* stopped at a newer event */
                break;
            }
            *last = sqlite3_column_int64(stmt, 0);
            n++;
        }
    }
    sqlite_stmt_release(stmt);
    *more = n == SQLITE_EVENTS_PURGE_BATCH;
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int sqlite_floor_get(struct sqlite_store *st, int64_t *floor)
{
    sqlite3_stmt *stmt = st->w[W_FLOOR_GET];
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        *floor = sqlite3_column_int64(stmt, 0);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_CORRUPT; /* the migration inserted it */
    }
    sqlite_stmt_release(stmt);
    return rc;
}

/* Runs a statement whose one parameter is a position. */
static int sqlite_run_pos(sqlite3_stmt *stmt, int64_t pos)
{
    int rc = sqlite3_bind_int64(stmt, 1, pos);
    if (rc != SQLITE_OK) {
        sqlite_stmt_release(stmt);
        return rc;
    }
    return sqlite_stmt_run(stmt);
}

/* The purge's work inside its transaction. */
static int sqlite_events_purge_in(struct sqlite_store *st, int64_t feed_before_ms,
                                  int64_t history_before_ms, int *more_feed, int *more_history)
{
    int64_t floor = 0;
    int rc = sqlite_floor_get(st, &floor);
    int64_t new_floor = floor;
    if (rc == SQLITE_OK && history_before_ms != SQLITE_NO_PURGE) {
        int64_t last = 0;
        rc = sqlite_events_walk(st, 0, history_before_ms, &last, more_history);
        if (rc == SQLITE_OK && last > 0)
            rc = sqlite_run_pos(st->w[W_EV_PURGE], last);
        if (last > new_floor)
            new_floor = last;
    }
    if (rc == SQLITE_OK && feed_before_ms != SQLITE_NO_PURGE)
        rc = sqlite_events_walk(st, new_floor, feed_before_ms, &new_floor, more_feed);
    if (rc == SQLITE_OK && new_floor != floor)
        rc = sqlite_run_pos(st->w[W_FLOOR_PUT], new_floor);
    return rc;
}

void sqlite_events_purge_turn(struct sqlite_store *st, int64_t feed_before_ms,
                              int64_t history_before_ms, int *more_feed, int *more_history)
{
    *more_feed = *more_history = 0;
    int rc = sqlite_stmt_run(st->w[W_BEGIN]);
    if (rc == SQLITE_OK)
        rc = sqlite_events_purge_in(st, feed_before_ms, history_before_ms, more_feed,
                                    more_history);
    if (rc == SQLITE_OK)
        rc = sqlite_stmt_run(st->w[W_COMMIT]);
    if (rc != SQLITE_OK) {
        /* The store cannot purge now: the next request tries again. */
        *more_feed = *more_history = 0;
        if (!sqlite3_get_autocommit(st->wdb))
            (void)sqlite_stmt_run(st->w[W_ROLLBACK]); /* a failed ROLLBACK ends it too */
    }
}
