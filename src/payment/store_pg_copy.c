/* store_pg_copy: the copy's import on the PostgreSQL store (store.h,
 * "copying one store into another"): one page of payments, idempotency
 * records and events written in one transaction, skipping what the store
 * holds (the exports are store_pg_export.c's).
 *
 * The import is one OP_CALL write (pg_call), so it runs on the writer
 * thread in a batch's transaction, under the write lock, in a savepoint of
 * its own: the page is committed whole or not at all, and nothing another
 * process writes can come between what it checks and what it writes.  Each
 * table takes a few statements per page whatever its size, the page's rows
 * sent as array parameters (one array literal per column, unnested by the
 * server):
 *   - payments and events: one statement finds the rows to add (those
 *     whose id, or (payment_id, version), the store does not hold, the
 *     first of any repeated in the page), then one inserts them, numbered
 *     by pg_next_seq and pg_next_pos in the page's order: a number is taken
 *     only for a row that is added, so a copy leaves no gap;
 *   - idempotency records: one insert, ON CONFLICT DO NOTHING, its row
 *     count the records added.
 * A failure undoes the savepoint (and gives its numbers back,
 * store_pg_batch.c); the batch may run the call again, so every run counts
 * afresh.
 *
 * Threads: the statements run on the writer thread (st->wconn) while the
 * import's caller waits in pg_call. */
#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "payment/store_pg.h"

/* ---- a page's columns as array parameters ---------------------------------- */

/* Columns a multi-row statement takes at most. */
#define PG_COPY_COLUMNS_MAX 16

/* The columns of the rows of one statement, each an array literal ("{"
 * then the elements, "," between them) made row by row: each row appends
 * one element to every column in order. */
struct pg_arrays {
    struct buf col[PG_COPY_COLUMNS_MAX]; /* owned */
    int n;                               /* columns */
    int at;                              /* the next column of the row being made */
    size_t rows;                         /* rows made */
    int bad;                             /* a text element held a NUL byte */
};

static void pg_arrays_init(struct pg_arrays *a, int n)
{
    assert(n > 0 && n <= PG_COPY_COLUMNS_MAX);
    memset(a, 0, sizeof *a);
    a->n = n;
    for (int i = 0; i < n; i++)
        (void)buf_puts(&a->col[i], "{"); /* a failure: buf_failed, checked at the end */
}

static void pg_arrays_free(struct pg_arrays *a)
{
    for (int i = 0; i < a->n; i++)
        buf_free(&a->col[i]);
}

/* The column the next element goes into, its separator written. */
static struct buf *pg_arrays_next(struct pg_arrays *a)
{
    assert(a->at < a->n);
    struct buf *b = &a->col[a->at++];
    if (a->rows > 0)
        (void)buf_puts(b, ",");
    return b;
}

/* Ends a row: every column had its element. */
static void pg_arrays_row_end(struct pg_arrays *a)
{
    assert(a->at == a->n);
    a->at = 0;
    a->rows++;
}

/* len bytes of s, quoted (a quote or backslash escaped), or NULL. */
static void pg_array_text(struct pg_arrays *a, const char *s, size_t len)
{
    struct buf *b = pg_arrays_next(a);
    if (!s) {
        (void)buf_puts(b, "NULL");
        return;
    }
    if (memchr(s, '\0', len))
        a->bad = 1; /* a text value never holds one */
    (void)buf_puts(b, "\"");
    size_t from = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"' || s[i] == '\\') {
            (void)buf_append(b, s + from, i - from);
            (void)buf_puts(b, "\\");
            from = i;
        }
    }
    (void)buf_append(b, s + from, len - from);
    (void)buf_puts(b, "\"");
}

/* s NUL-terminated, or NULL (for NULL, and for "" when nonempty). */
static void pg_array_str(struct pg_arrays *a, const char *s, int nonempty)
{
    if (s && nonempty && !*s)
        s = NULL;
    pg_array_text(a, s, s ? strlen(s) : 0);
}

static void pg_array_int(struct pg_arrays *a, int64_t v)
{
    (void)buf_printf(pg_arrays_next(a), "%" PRId64, v);
}

static void pg_array_bool(struct pg_arrays *a, int v)
{
    (void)buf_puts(pg_arrays_next(a), v ? "t" : "f");
}

/* len bytes of s (any bytes) as bytea's hex form, or NULL. */
static void pg_array_bytea(struct pg_arrays *a, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    struct buf *b = pg_arrays_next(a);
    if (!s) {
        (void)buf_puts(b, "NULL");
        return;
    }
    if (buf_reserve(b, 2 * len + 8) != 0)
        return;
    (void)buf_puts(b, "\"\\\\x"); /* "\\x: the quoted element's backslash escaped */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char pair[2] = {hex[c >> 4], hex[c & 15]};
        (void)buf_append(b, pair, 2);
    }
    (void)buf_puts(b, "\"");
}

/* Closes every column and appends them to p as text parameters (they stay
 * a's): PAYMENT_STORE_OK, or EINTERNAL (out of memory, a NUL in a text). */
static int pg_arrays_params(struct pg_arrays *a, struct pg_params *p)
{
    assert(a->at == 0 && a->rows > 0);
    int failed = a->bad;
    for (int i = 0; i < a->n; i++) {
        (void)buf_puts(&a->col[i], "}");
        failed |= buf_failed(&a->col[i]);
        pg_param_text(p, a->col[i].data);
    }
    return failed ? PAYMENT_STORE_EINTERNAL : PAYMENT_STORE_OK;
}

/* ---- import ---------------------------------------------------------------- */

/* The page's rows the target does not hold: their ordinals (from 1), the
 * first of any repeated, in ascending order. */
static const char PG_SQL_NEW_PAYMENTS[] =
    "SELECT min(u.ord) FROM unnest($1::text[]) WITH ORDINALITY AS u(id, ord)"
    " WHERE NOT EXISTS (SELECT 1 FROM payments p WHERE p.id = u.id)"
    " GROUP BY u.id ORDER BY 1";
static const char PG_SQL_NEW_EVENTS[] =
    "SELECT min(u.ord) FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY"
    " AS u(payment_id, version, ord)"
    " WHERE NOT EXISTS (SELECT 1 FROM events e"
    " WHERE e.payment_id = u.payment_id AND e.version = u.version)"
    " GROUP BY u.payment_id, u.version ORDER BY 1";
static const char PG_SQL_IMPORT_PAYMENTS[] =
    "INSERT INTO payments (seq, id, organisation_id, version, created_ms, modified_ms,"
    " currency, payment_scheme, payment_type, reference, end_to_end_reference,"
    " processing_date, amount_key, doc, deleted)"
    " SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],"
    " $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],"
    " $13::text[], $14::text[], $15::boolean[])"
    " ON CONFLICT (id) DO NOTHING";
#define PG_IMPORT_PAYMENT_COLUMNS 15
static const char PG_SQL_IMPORT_IDEM[] =
    "INSERT INTO idempotency (scope, key, fingerprint, status, location, etag, body,"
    " created_ms)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::integer[], $5::text[],"
    " $6::text[], $7::bytea[], $8::bigint[])"
    " ON CONFLICT (scope, key) DO NOTHING";
#define PG_IMPORT_IDEM_COLUMNS 8
static const char PG_SQL_IMPORT_EVENTS[] =
    "INSERT INTO events (pos, id, payment_id, organisation_id, version, type, occurred_ms,"
    " api_key_id, request_id, idempotency_key, operation_id, changes, doc)"
    " SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[],"
    " $6::integer[], $7::bigint[], $8::text[], $9::text[], $10::text[], $11::text[],"
    " $12::text[], $13::text[])"
    " ON CONFLICT (payment_id, version) DO NOTHING";
#define PG_IMPORT_EVENT_COLUMNS 13

/* What an import's call is given and what it found. */
struct pg_import_call {
    const struct payment_import *im;  /* the caller's */
    struct payment_import_result out; /* counted afresh by each run */
};

/* The number of rows a statement changed. */
static size_t pg_rows_changed(PGresult *res)
{
    return (size_t)strtoull(PQcmdTuples(res), NULL, 10);
}

/* Runs sql with the columns of a on c: the rows it changed into *changed. */
static int pg_arrays_exec(struct pg_conn *c, const char *sql, struct pg_arrays *a,
                          size_t *changed)
{
    struct pg_params p;
    pg_params_init(&p);
    int rc = pg_arrays_params(a, &p);
    PGresult *res = NULL;
    if (rc == PAYMENT_STORE_OK)
        rc = pg_exec(c, sql, &p, &res);
    if (rc == PAYMENT_STORE_OK) {
        *changed = pg_rows_changed(res);
        PQclear(res);
    }
    return rc;
}

/* Runs a PG_SQL_NEW_* query with the keys in a, of n rows: *res holds the
 * ordinals of the rows to add, checked ascending within 1..n. */
static int pg_import_new(struct pg_conn *c, const char *sql, struct pg_arrays *a, size_t n,
                         PGresult **res)
{
    struct pg_params p;
    pg_params_init(&p);
    int rc = pg_arrays_params(a, &p);
    if (rc == PAYMENT_STORE_OK)
        rc = pg_exec(c, sql, &p, res);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    int64_t last = 0;
    for (int r = 0; r < PQntuples(*res); r++) {
        int64_t ord = pg_int(*res, r, 0);
        if (ord <= last || ord > (int64_t)n) {
            PQclear(*res);
            *res = NULL;
            return PAYMENT_STORE_EINTERNAL;
        }
        last = ord;
    }
    return PAYMENT_STORE_OK;
}

/* Appends the page's row i of a table to a, numbered by the table's next
 * number (pg_next_seq, pg_next_pos). */
typedef void (*pg_import_row_fn)(struct pg_store *st, struct pg_arrays *a,
                                 const struct payment_import *im, size_t i);

/* Inserts with sql (columns wide) the page's rows fresh names (the answer
 * of pg_import_new, which it clears), each appended by add in fresh's
 * order: *added the rows, once the insert added each of them. */
static int pg_import_fresh(struct pg_store *st, struct pg_conn *c,
                           const struct payment_import *im, PGresult *fresh, const char *sql,
                           int columns, pg_import_row_fn add, size_t *added)
{
    int rc = PAYMENT_STORE_OK;
    size_t n = (size_t)PQntuples(fresh), changed = 0;
    if (n > 0) {
        struct pg_arrays rows;
        pg_arrays_init(&rows, columns);
        for (size_t r = 0; r < n; r++)
            add(st, &rows, im, (size_t)pg_int(fresh, (int)r, 0) - 1);
        rc = pg_arrays_exec(c, sql, &rows, &changed);
        pg_arrays_free(&rows);
    }
    PQclear(fresh);
    if (rc == PAYMENT_STORE_OK && changed != n)
        rc = PAYMENT_STORE_EINTERNAL; /* every write holds the write lock: none came between */
    if (rc == PAYMENT_STORE_OK)
        *added = n;
    return rc;
}

/* Appends the page's payment i to a, its sequence number the next. */
static void pg_import_payment_row(struct pg_store *st, struct pg_arrays *a,
                                  const struct payment_import *im, size_t i)
{
    const struct payment_export *e = &im->payments[i];
    const struct payment_row *row = &e->row;
    assert(e->deleted || row->doc); /* a live payment has its document */
    pg_array_int(a, pg_next_seq(st));
    pg_array_str(a, row->id, 0);
    pg_array_str(a, row->organisation_id, 0);
    pg_array_int(a, row->version);
    pg_array_int(a, row->created_ms);
    pg_array_int(a, row->modified_ms);
    pg_array_str(a, row->currency, 0);
    pg_array_str(a, row->payment_scheme, 0);
    pg_array_str(a, row->payment_type, 0);
    pg_array_str(a, row->reference, 0);
    pg_array_str(a, row->end_to_end_reference, 0);
    pg_array_str(a, row->processing_date, 1);
    pg_array_str(a, row->amount_key, 1);
    if (e->deleted)
        pg_array_text(a, NULL, 0); /* a tombstone keeps no document */
    else
        pg_array_text(a, row->doc, row->doc_len);
    pg_array_bool(a, e->deleted);
    pg_arrays_row_end(a);
}

/* Inserts the payments the target does not hold, in the page's order. */
static int pg_import_payments(struct pg_store *st, struct pg_conn *c,
                              const struct payment_import *im, size_t *added)
{
    if (im->n_payments == 0)
        return PAYMENT_STORE_OK;
    struct pg_arrays keys;
    pg_arrays_init(&keys, 1);
    for (size_t i = 0; i < im->n_payments; i++) {
        pg_array_str(&keys, im->payments[i].row.id, 0);
        pg_arrays_row_end(&keys);
    }
    PGresult *fresh = NULL;
    int rc = pg_import_new(c, PG_SQL_NEW_PAYMENTS, &keys, im->n_payments, &fresh);
    pg_arrays_free(&keys);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    return pg_import_fresh(st, c, im, fresh, PG_SQL_IMPORT_PAYMENTS, PG_IMPORT_PAYMENT_COLUMNS,
                           pg_import_payment_row, added);
}

/* Inserts the records the target does not hold. */
static int pg_import_idem(struct pg_conn *c, const struct payment_import *im, size_t *added)
{
    if (im->n_idem == 0)
        return PAYMENT_STORE_OK;
    struct pg_arrays rows;
    pg_arrays_init(&rows, PG_IMPORT_IDEM_COLUMNS);
    for (size_t i = 0; i < im->n_idem; i++) {
        const struct payment_idem_export *r = &im->idem[i];
        assert(r->scope && r->key && r->fingerprint);
        pg_array_str(&rows, r->scope, 0);
        pg_array_str(&rows, r->key, 0);
        pg_array_str(&rows, r->fingerprint, 0);
        pg_array_int(&rows, r->status);
        pg_array_str(&rows, r->location, 0);
        pg_array_str(&rows, r->etag, 0);
        pg_array_bytea(&rows, r->body, r->body_len);
        pg_array_int(&rows, r->created_ms);
        pg_arrays_row_end(&rows);
    }
    int rc = pg_arrays_exec(c, PG_SQL_IMPORT_IDEM, &rows, added);
    pg_arrays_free(&rows);
    return rc;
}

/* Appends the page's event i to a, its position the next. */
static void pg_import_event_row(struct pg_store *st, struct pg_arrays *a,
                                const struct payment_import *im, size_t i)
{
    const struct payment_event *ev = &im->events[i];
    assert(ev->doc);
    pg_array_int(a, pg_next_pos(st));
    pg_array_str(a, ev->id, 0);
    pg_array_str(a, ev->payment_id, 0);
    pg_array_str(a, ev->organisation_id, 0);
    pg_array_int(a, ev->version);
    pg_array_int(a, (int64_t)ev->type);
    pg_array_int(a, ev->occurred_ms);
    pg_array_str(a, ev->api_key_id, 0);
    pg_array_str(a, ev->request_id, 0);
    pg_array_str(a, ev->idempotency_key, 0);
    pg_array_str(a, ev->operation_id, 0);
    pg_array_str(a, ev->changes, 0);
    pg_array_text(a, ev->doc, ev->doc_len);
    pg_arrays_row_end(a);
}

/* Inserts the events the target does not hold, positions in the page's
 * order, taken only for those. */
static int pg_import_events(struct pg_store *st, struct pg_conn *c,
                            const struct payment_import *im, size_t *added)
{
    if (im->n_events == 0)
        return PAYMENT_STORE_OK;
    struct pg_arrays keys;
    pg_arrays_init(&keys, 2);
    for (size_t i = 0; i < im->n_events; i++) {
        pg_array_str(&keys, im->events[i].payment_id, 0);
        pg_array_int(&keys, im->events[i].version);
        pg_arrays_row_end(&keys);
    }
    PGresult *fresh = NULL;
    int rc = pg_import_new(c, PG_SQL_NEW_EVENTS, &keys, im->n_events, &fresh);
    pg_arrays_free(&keys);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    return pg_import_fresh(st, c, im, fresh, PG_SQL_IMPORT_EVENTS, PG_IMPORT_EVENT_COLUMNS,
                           pg_import_event_row, added);
}

/* The import's OP_CALL: payments, records, events, in the call's
 * savepoint (store_pg_batch.c), which a failure rolls back. */
static int pg_import_run(struct pg_store *st, struct pg_conn *c, void *arg, int *err)
{
    struct pg_import_call *call = arg;
    memset(&call->out, 0, sizeof call->out);
    int rc = pg_import_payments(st, c, call->im, &call->out.payments);
    if (rc == PAYMENT_STORE_OK)
        rc = pg_import_idem(c, call->im, &call->out.idem);
    if (rc == PAYMENT_STORE_OK)
        rc = pg_import_events(st, c, call->im, &call->out.events);
    *err = PAYMENT_STORE_OK;
    return rc;
}

int pg_import(payment_store *s, const struct payment_import *im,
              struct payment_import_result *out)
{
    struct pg_import_call call = {.im = im};
    int err = pg_call((struct pg_store *)s, pg_import_run, &call);
    if (err == PAYMENT_STORE_OK)
        *out = call.out;
    else if (err != PAYMENT_STORE_EUNAVAILABLE)
        err = PAYMENT_STORE_EINTERNAL; /* store.h: nothing else is answered */
    return err;
}
