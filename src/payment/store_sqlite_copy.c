/* store_sqlite_copy: the embedded store's side of a copy between stores
 * (store.h, "copying one store into another"): the three exports, and the
 * import of a page.
 *
 * Exports read on the calling thread's reader connection
 * (store_sqlite_read.c), one statement per page: outside an explicit
 * transaction a statement is its own read transaction, so a page is one
 * snapshot of committed data and never waits for the writer.  Payments
 * come in seq order, tombstones (deleted = 1, doc NULL) included; the
 * idempotency records in (scope, key) byte order (SQLite's BINARY
 * collation compares text with memcmp), through their unique index; the
 * events in position order, every row of the table, whether the feed still
 * holds it or only a history does.
 *
 * The import is one OP_CALL write (sqlite_call) on the writer thread, in
 * the operation's savepoint within the batch's transaction: durable when
 * it returns, all of it or none.  Each row is an INSERT that does nothing
 * on a conflict with what the target holds (a payment's id, a record's
 * (scope, key), an event's (payment_id, version), each a unique index), so
 * the rows changed are the rows added.  Payments take their seq, and
 * events their pos, from the insert (AUTOINCREMENT): the target numbers
 * them in the order the page gives, the source's.  Nothing records an event
 * for an imported payment: the source's events are imported as they are. */
#include <assert.h>
#include <sqlite3.h>
#include <stdint.h>
#include <string.h>

#include "payment/store_sqlite.h"

/* ---- exports -------------------------------------------------------------- */

/* A page of payments: ?1 the seq to start above, ?2 the rows to read (one
 * more than the page, to learn whether another follows). */
static const char sql_export_payments[] =
    "SELECT seq, id, organisation_id, version, created_ms, modified_ms, currency,"
    " payment_scheme, payment_type, reference, end_to_end_reference, processing_date,"
    " amount_key, doc, deleted FROM payments WHERE seq > ?1 ORDER BY seq LIMIT ?2";

/* Pages of idempotency records: from the first, or after (?1, ?2); ?3 the
 * rows to read. */
#define SQLITE_IDEM_EXPORT_COLUMNS                                                        \
    "scope, key, fingerprint, status, location, etag, body, created_ms"
static const char sql_export_idem_first[] =
    "SELECT " SQLITE_IDEM_EXPORT_COLUMNS " FROM idempotency ORDER BY scope, key LIMIT ?3";
static const char sql_export_idem_after[] =
    "SELECT " SQLITE_IDEM_EXPORT_COLUMNS " FROM idempotency WHERE (scope, key) > (?1, ?2)"
    " ORDER BY scope, key LIMIT ?3";

/* A page of events: ?1 the position to start above, ?2 the rows to read. */
static const char sql_export_events[] =
    "SELECT " SQLITE_EVENT_COLUMNS " FROM events WHERE pos > ?1 ORDER BY pos LIMIT ?2";

/* An optional text column: its text, or NULL for SQL NULL. */
static const char *sqlite_copy_text(sqlite3_stmt *stmt, int col)
{
    if (sqlite3_column_type(stmt, col) == SQLITE_NULL)
        return NULL;
    const char *v = (const char *)sqlite3_column_text(stmt, col);
    return v ? v : ""; /* NULL here: out of memory, which the row's check finds */
}

/* Copies a fixed-width text column (NULL as "") into out of size len:
 * 0, or -1 when it does not fit. */
static int sqlite_copy_fixed(sqlite3_stmt *stmt, int col, char *out, size_t len)
{
    const char *v = (const char *)sqlite3_column_text(stmt, col);
    size_t n = v ? (size_t)sqlite3_column_bytes(stmt, col) : 0;
    if (n >= len)
        return -1;
    memcpy(out, v ? v : "", n);
    out[n] = '\0';
    return 0;
}

/* What an export of payments passes its rows to. */
struct sqlite_export_payments {
    payment_store_export_fn each;
    void *arg;
};

/* Reads the current row of sql_export_payments into a payment_export and
 * passes it on. */
static int sqlite_export_payment_row(sqlite3_stmt *stmt, void *arg)
{
    const struct sqlite_export_payments *x = arg;
    struct payment_export p;
    memset(&p, 0, sizeof p);
    p.seq = sqlite3_column_int64(stmt, 0);
    p.deleted = sqlite3_column_int64(stmt, 14) != 0;
    struct payment_row *row = &p.row;
    if (sqlite_column_uuid(stmt, 1, row->id) != 0 ||
        sqlite_column_uuid(stmt, 2, row->organisation_id) != 0)
        return PAYMENT_STORE_EINTERNAL;
    row->version = sqlite3_column_int64(stmt, 3);
    row->created_ms = sqlite3_column_int64(stmt, 4);
    row->modified_ms = sqlite3_column_int64(stmt, 5);
    if (!p.deleted) { /* a tombstone's columns stay NULL and "" */
        row->currency = sqlite_copy_text(stmt, 6);
        row->payment_scheme = sqlite_copy_text(stmt, 7);
        row->payment_type = sqlite_copy_text(stmt, 8);
        row->reference = sqlite_copy_text(stmt, 9);
        row->end_to_end_reference = sqlite_copy_text(stmt, 10);
        if (sqlite_copy_fixed(stmt, 11, row->processing_date, sizeof row->processing_date) != 0 ||
            sqlite_copy_fixed(stmt, 12, row->amount_key, sizeof row->amount_key) != 0)
            return PAYMENT_STORE_EINTERNAL;
        row->doc = (const char *)sqlite3_column_text(stmt, 13);
        row->doc_len = (size_t)sqlite3_column_bytes(stmt, 13);
        if (!row->doc)
            return PAYMENT_STORE_EINTERNAL; /* a live row always has one, or memory ran out */
    }
    if (sqlite3_errcode(sqlite3_db_handle(stmt)) == SQLITE_NOMEM)
        return PAYMENT_STORE_EINTERNAL;
    return x->each(x->arg, &p);
}

int sqlite_export_payments(payment_store *s, int64_t after_seq, uint32_t limit,
                           payment_store_export_fn each, void *arg, int *more)
{
    int err;
    sqlite3_stmt *stmt = sqlite_read_stmt((struct sqlite_store *)s, sql_export_payments, &err);
    if (!stmt)
        return err;
    int rc = sqlite3_bind_int64(stmt, 1, after_seq);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 2, (int64_t)limit + 1);
    struct sqlite_export_payments x = {each, arg};
    return sqlite_page_rows(stmt, rc, limit, sqlite_export_payment_row, &x, more);
}

/* What an export of idempotency records passes its rows to. */
struct sqlite_export_idem {
    payment_store_idem_export_fn each;
    void *arg;
};

static int sqlite_export_idem_row(sqlite3_stmt *stmt, void *arg)
{
    const struct sqlite_export_idem *x = arg;
    struct payment_idem_export r;
    memset(&r, 0, sizeof r);
    r.scope = (const char *)sqlite3_column_text(stmt, 0);
    r.key = (const char *)sqlite3_column_text(stmt, 1);
    r.fingerprint = (const char *)sqlite3_column_text(stmt, 2);
    r.status = sqlite3_column_int(stmt, 3);
    r.location = sqlite_copy_text(stmt, 4);
    r.etag = sqlite_copy_text(stmt, 5);
    if (sqlite3_column_type(stmt, 6) != SQLITE_NULL) {
        r.body = sqlite3_column_blob(stmt, 6);
        r.body_len = (size_t)sqlite3_column_bytes(stmt, 6);
        if (!r.body)
            r.body = ""; /* an empty body is a zero-length blob, which SQLite gives as NULL */
    }
    r.created_ms = sqlite3_column_int64(stmt, 7);
    if (!r.scope || !r.key || !r.fingerprint ||
        sqlite3_errcode(sqlite3_db_handle(stmt)) == SQLITE_NOMEM)
        return PAYMENT_STORE_EINTERNAL;
    return x->each(x->arg, &r);
}

int sqlite_export_idem(payment_store *s, const char *after_scope, const char *after_key,
                       uint32_t limit, payment_store_idem_export_fn each, void *arg, int *more)
{
    assert((after_scope == NULL) == (after_key == NULL));
    const char *sql = after_scope ? sql_export_idem_after : sql_export_idem_first;
    int err;
    sqlite3_stmt *stmt = sqlite_read_stmt((struct sqlite_store *)s, sql, &err);
    if (!stmt)
        return err;
    int rc = SQLITE_OK;
    if (after_scope) {
        rc = sqlite3_bind_text(stmt, 1, after_scope, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_text(stmt, 2, after_key, -1, SQLITE_STATIC);
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 3, (int64_t)limit + 1);
    struct sqlite_export_idem x = {each, arg};
    return sqlite_page_rows(stmt, rc, limit, sqlite_export_idem_row, &x, more);
}

/* What an export of events passes its rows to. */
struct sqlite_export_events {
    payment_store_event_fn each;
    void *arg;
};

/* Reads the current row of a statement selecting SQLITE_EVENT_COLUMNS
 * into an event (sqlite_event_row) and passes it on. */
static int sqlite_export_event_row(sqlite3_stmt *stmt, void *arg)
{
    const struct sqlite_export_events *x = arg;
    struct payment_event ev;
    memset(&ev, 0, sizeof ev);
    int err = sqlite_event_row(sqlite3_db_handle(stmt), stmt, &ev);
    return err != PAYMENT_STORE_OK ? err : x->each(x->arg, &ev);
}

int sqlite_export_events(payment_store *s, int64_t after_pos, uint32_t limit,
                         payment_store_event_fn each, void *arg, int *more)
{
    int err;
    sqlite3_stmt *stmt = sqlite_read_stmt((struct sqlite_store *)s, sql_export_events, &err);
    if (!stmt)
        return err;
    int rc = sqlite3_bind_int64(stmt, 1, after_pos);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 2, (int64_t)limit + 1);
    struct sqlite_export_events x = {each, arg};
    return sqlite_page_rows(stmt, rc, limit, sqlite_export_event_row, &x, more);
}

/* ---- import ----------------------------------------------------------------- */

/* A payment as stored: ?1 id, ?2 organisation, ?3 version, ?4 created, ?5
 * modified, ?6..?10 the text columns, ?11 processing date, ?12 amount key,
 * ?13 doc, ?14 deleted. */
static const char sql_import_payment[] =
    "INSERT INTO payments (id, organisation_id, version, created_ms, modified_ms, currency,"
    " payment_scheme, payment_type, reference, end_to_end_reference, processing_date,"
    " amount_key, doc, deleted)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
    " ON CONFLICT (id) DO NOTHING";

static const char sql_import_idem[] =
    "INSERT INTO idempotency (scope, key, fingerprint, status, location, etag, body,"
    " created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (scope, key) DO NOTHING";

/* As W_EV_INSERT, skipping a version the payment's history holds. */
static const char sql_import_event[] =
    "INSERT INTO events (id, payment_id, organisation_id, version, type, occurred_ms,"
    " api_key_id, request_id, idempotency_key, operation_id, changes, doc)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    " ON CONFLICT (payment_id, version) DO NOTHING";

/* An import's call: the page, and what it added. */
struct sqlite_import {
    const struct payment_import *im;
    struct payment_import_result *out;
};

/* Binds sql_import_payment's ?1..?14 from p: a tombstone's doc NULL. */
static int sqlite_import_bind_payment(sqlite3_stmt *stmt, const struct payment_export *p)
{
    const struct payment_row *row = &p->row;
    int rc = sqlite_bind_row_columns(stmt, row);
    if (rc == SQLITE_OK)
        rc = p->deleted ? sqlite3_bind_null(stmt, 13)
                        : sqlite3_bind_text64(stmt, 13, row->doc, row->doc_len, SQLITE_STATIC,
                                              SQLITE_UTF8);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(stmt, 14, p->deleted ? 1 : 0);
    return rc;
}

static int sqlite_import_bind_idem(sqlite3_stmt *stmt, const struct payment_idem_export *r)
{
    int rc = sqlite3_bind_text(stmt, 1, r->scope, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 2, r->key, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 3, r->fingerprint, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(stmt, 4, r->status);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 5, r->location);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 6, r->etag);
    if (rc == SQLITE_OK) /* a blob, as sqlite_op_idem stores it */
        rc = r->body ? sqlite3_bind_blob64(stmt, 7, r->body, r->body_len, SQLITE_STATIC)
                     : sqlite3_bind_null(stmt, 7);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 8, r->created_ms);
    return rc;
}

static int sqlite_import_bind_event(sqlite3_stmt *stmt, const struct payment_event *ev)
{
    int rc = sqlite3_bind_text(stmt, 1, ev->id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 2, ev->payment_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 3, ev->organisation_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 4, ev->version);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(stmt, 5, (int)ev->type);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 6, ev->occurred_ms);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 7, ev->api_key_id);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 8, ev->request_id);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 9, ev->idempotency_key);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 10, ev->operation_id);
    if (rc == SQLITE_OK)
        rc = sqlite_bind_opt(stmt, 11, ev->changes);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text64(stmt, 12, ev->doc, ev->doc_len, SQLITE_STATIC, SQLITE_UTF8);
    return rc;
}

/* Runs a bound insert (rc: the binding's result) and counts into *added
 * the row it inserted, none when it met a row the target holds.  Releases
 * the statement.  SQLITE_OK, or the error. */
static int sqlite_import_run(struct sqlite_store *st, sqlite3_stmt *stmt, int rc, size_t *added)
{
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) {
        *added += (size_t)sqlite3_changes(st->wdb);
        rc = SQLITE_OK;
    }
    sqlite_stmt_release(stmt);
    return rc;
}

/* The writer's statement of sql (a static string), or NULL with *rc. */
static sqlite3_stmt *sqlite_import_stmt(struct sqlite_store *st, const char *sql, int *rc)
{
    return sqlite_cached(st->wdb, &st->wcache, sql, rc);
}

/* The OP_CALL: the page's payments, records and events, in that order. */
static int sqlite_import_call(struct sqlite_store *st, void *arg, int *err)
{
    const struct sqlite_import *x = arg;
    const struct payment_import *im = x->im;
    struct payment_import_result *out = x->out;
    memset(out, 0, sizeof *out); /* a call runs once, but say nothing of a failed one */
    int rc = SQLITE_OK;
    for (size_t i = 0; rc == SQLITE_OK && i < im->n_payments; i++) {
        const struct payment_export *p = &im->payments[i];
        assert(p->deleted || p->row.doc);
        sqlite3_stmt *stmt = sqlite_import_stmt(st, sql_import_payment, &rc);
        if (stmt)
            rc = sqlite_import_run(st, stmt, sqlite_import_bind_payment(stmt, p), &out->payments);
    }
    for (size_t i = 0; rc == SQLITE_OK && i < im->n_idem; i++) {
        const struct payment_idem_export *r = &im->idem[i];
        assert(r->scope && r->key && r->fingerprint);
        sqlite3_stmt *stmt = sqlite_import_stmt(st, sql_import_idem, &rc);
        if (stmt)
            rc = sqlite_import_run(st, stmt, sqlite_import_bind_idem(stmt, r), &out->idem);
    }
    for (size_t i = 0; rc == SQLITE_OK && i < im->n_events; i++) {
        const struct payment_event *ev = &im->events[i];
        assert(ev->doc);
        sqlite3_stmt *stmt = sqlite_import_stmt(st, sql_import_event, &rc);
        if (stmt)
            rc = sqlite_import_run(st, stmt, sqlite_import_bind_event(stmt, ev), &out->events);
    }
    *err = PAYMENT_STORE_OK;
    return rc;
}

int sqlite_import(payment_store *s, const struct payment_import *im,
                  struct payment_import_result *out)
{
    struct sqlite_import x = {im, out};
    int err = sqlite_call((struct sqlite_store *)s, sqlite_import_call, &x);
    if (err != PAYMENT_STORE_OK)
        memset(out, 0, sizeof *out); /* nothing was written */
    return err;
}
