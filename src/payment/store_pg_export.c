/* store_pg_export: the copy's exports on the PostgreSQL store (store.h,
 * "copying one store into another"): the payments with their tombstones,
 * the idempotency records and every event, in pages, for paymentd migrate
 * (the import is store_pg_copy.c's).
 *
 * Each page is one statement on the calling thread's reader
 * (store_pg_read.c), in autocommit: one snapshot, no lock a write waits
 * for.  A page asks for one row more than its limit, which says whether
 * another follows.  Tombstones are exported without their document and
 * text columns, as store.h has them (the table keeps the columns a
 * tombstone had when live).  Idempotency records come in (scope, key) byte
 * order (their columns are COLLATE "C"), their bodies decoded from bytea;
 * events in position order, those below the feed's floor (kept only for
 * the histories) included.
 *
 * Threads: any; each reads on its own reader connection. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "payment/store_pg.h"

static const char PG_SQL_EXPORT_PAYMENTS[] =
    "SELECT seq, id, organisation_id, version, created_ms, modified_ms, currency,"
    " payment_scheme, payment_type, reference, end_to_end_reference, processing_date,"
    " amount_key, doc, deleted FROM payments WHERE seq > $1 ORDER BY seq LIMIT $2";
/* The first page of the records, then the pages after a (scope, key). */
static const char PG_SQL_EXPORT_IDEM_FIRST[] =
    "SELECT scope, key, fingerprint, status, location, etag, body, created_ms"
    " FROM idempotency ORDER BY scope, key LIMIT $1";
static const char PG_SQL_EXPORT_IDEM_AFTER[] =
    "SELECT scope, key, fingerprint, status, location, etag, body, created_ms"
    " FROM idempotency WHERE (scope, key) > ($1, $2) ORDER BY scope, key LIMIT $3";
/* Every event, in the feed or below its floor (kept for the histories). */
static const char PG_SQL_EXPORT_EVENTS[] =
    "SELECT " PG_EVENT_COLUMNS " FROM events WHERE pos > $1 ORDER BY pos LIMIT $2";

/* Passes row r of a page's result on: 0, or what stops the page (a store
 * error, or the callback's non-zero answer). */
typedef int (*pg_export_row_fn)(const PGresult *res, int r, void *x);

/* Reads a page with sql and its parameters p (the last one limit + 1) and
 * calls row for each of its first limit rows, stopping at a non-zero
 * answer, which it returns; *more says whether another row followed. */
static int pg_export_page(payment_store *s, const char *sql, const struct pg_params *p,
                          uint32_t limit, pg_export_row_fn row, void *x, int *more)
{
    assert(limit >= 1 && limit <= PAYMENT_EXPORT_PAGE_MAX);
    *more = 0;
    PGresult *res;
    int err = pg_read((struct pg_store *)s, sql, p, &res);
    if (err != PAYMENT_STORE_OK)
        return err;
    int rows = PQntuples(res);
    for (int r = 0; r < rows && err == PAYMENT_STORE_OK; r++) {
        if ((uint32_t)r == limit) {
            *more = 1;
            break;
        }
        err = row(res, r, x);
    }
    PQclear(res);
    return err;
}

/* Copies text column col of row r (NULL as "") into out of cap bytes: 0,
 * or -1 when it does not fit (no write stores such a value). */
static int pg_column_fixed(const PGresult *res, int r, int col, char *out, size_t cap)
{
    const char *v = pg_text(res, r, col);
    size_t len = v ? pg_len(res, r, col) : 0;
    if (len >= cap)
        return -1;
    memcpy(out, v ? v : "", len);
    out[len] = '\0';
    return 0;
}

/* Fills e from row r of a PG_SQL_EXPORT_PAYMENTS result, its strings the
 * result's: 0, or EINTERNAL for a row no write makes. */
static int pg_export_row(const PGresult *res, int r, struct payment_export *e)
{
    memset(e, 0, sizeof *e);
    struct payment_row *row = &e->row;
    e->seq = pg_int(res, r, 0);
    e->deleted = strcmp(PQgetvalue(res, r, 14), "t") == 0;
    if (pg_column_uuid(res, r, 1, row->id) != 0 ||
        pg_column_uuid(res, r, 2, row->organisation_id) != 0)
        return PAYMENT_STORE_EINTERNAL;
    row->version = pg_int(res, r, 3);
    row->created_ms = pg_int(res, r, 4);
    row->modified_ms = pg_int(res, r, 5);
    if (e->deleted)
        return PAYMENT_STORE_OK; /* no document, no text columns */
    row->currency = pg_text(res, r, 6);
    row->payment_scheme = pg_text(res, r, 7);
    row->payment_type = pg_text(res, r, 8);
    row->reference = pg_text(res, r, 9);
    row->end_to_end_reference = pg_text(res, r, 10);
    row->doc = pg_text(res, r, 13);
    row->doc_len = pg_len(res, r, 13);
    if (pg_column_fixed(res, r, 11, row->processing_date, sizeof row->processing_date) != 0 ||
        pg_column_fixed(res, r, 12, row->amount_key, sizeof row->amount_key) != 0 || !row->doc)
        return PAYMENT_STORE_EINTERNAL;
    return PAYMENT_STORE_OK;
}

/* What an export of payments passes its rows to. */
struct pg_export_payments {
    payment_store_export_fn each;
    void *arg;
};

/* Passes row r of a PG_SQL_EXPORT_PAYMENTS result on. */
static int pg_export_payment(const PGresult *res, int r, void *arg)
{
    const struct pg_export_payments *x = arg;
    struct payment_export e;
    int err = pg_export_row(res, r, &e);
    return err != PAYMENT_STORE_OK ? err : x->each(x->arg, &e);
}

int pg_export_payments(payment_store *s, int64_t after_seq, uint32_t limit,
                       payment_store_export_fn each, void *arg, int *more)
{
    struct pg_params p;
    pg_params_init(&p);
    pg_param_int(&p, after_seq);
    pg_param_int(&p, (int64_t)limit + 1);
    struct pg_export_payments x = {each, arg};
    return pg_export_page(s, PG_SQL_EXPORT_PAYMENTS, &p, limit, pg_export_payment, &x, more);
}

/* What an export of idempotency records passes its rows to. */
struct pg_export_idem {
    payment_store_idem_export_fn each;
    void *arg;
};

/* Calls each for row r of an idempotency export: its answer, or EINTERNAL
 * (a body that cannot be decoded: out of memory). */
static int pg_export_idem_row(const PGresult *res, int r, void *arg)
{
    const struct pg_export_idem *x = arg;
    struct payment_idem_export e = {
        .scope = pg_text(res, r, 0),
        .key = pg_text(res, r, 1),
        .fingerprint = pg_text(res, r, 2),
        .status = (int)pg_int(res, r, 3),
        .location = pg_text(res, r, 4),
        .etag = pg_text(res, r, 5),
        .created_ms = pg_int(res, r, 7),
    };
    if (!e.scope || !e.key || !e.fingerprint)
        return PAYMENT_STORE_EINTERNAL; /* NOT NULL columns */
    unsigned char *body = NULL;
    const char *text = pg_text(res, r, 6);
    if (text) { /* bytea's text form, hex or escape: decoded */
        body = PQunescapeBytea((const unsigned char *)text, &e.body_len);
        if (!body)
            return PAYMENT_STORE_EINTERNAL;
        e.body = (const char *)body;
    }
    int rc = x->each(x->arg, &e);
    PQfreemem(body);
    return rc;
}

int pg_export_idem(payment_store *s, const char *after_scope, const char *after_key,
                   uint32_t limit, payment_store_idem_export_fn each, void *arg, int *more)
{
    assert((after_scope == NULL) == (after_key == NULL));
    struct pg_params p;
    pg_params_init(&p);
    if (after_scope) {
        pg_param_text(&p, after_scope);
        pg_param_text(&p, after_key);
    }
    pg_param_int(&p, (int64_t)limit + 1);
    struct pg_export_idem x = {each, arg};
    return pg_export_page(s, after_scope ? PG_SQL_EXPORT_IDEM_AFTER : PG_SQL_EXPORT_IDEM_FIRST,
                          &p, limit, pg_export_idem_row, &x, more);
}

/* What an export of events passes its rows to. */
struct pg_export_events {
    payment_store_event_fn each;
    void *arg;
};

/* Passes row r of a PG_SQL_EXPORT_EVENTS result on (pg_event_row). */
static int pg_export_event(const PGresult *res, int r, void *arg)
{
    const struct pg_export_events *x = arg;
    struct payment_event ev;
    int err = pg_event_row(res, r, &ev);
    return err != PAYMENT_STORE_OK ? err : x->each(x->arg, &ev);
}

int pg_export_events(payment_store *s, int64_t after_pos, uint32_t limit,
                     payment_store_event_fn each, void *arg, int *more)
{
    struct pg_params p;
    pg_params_init(&p);
    pg_param_int(&p, after_pos);
    pg_param_int(&p, (int64_t)limit + 1);
    struct pg_export_events x = {each, arg};
    return pg_export_page(s, PG_SQL_EXPORT_EVENTS, &p, limit, pg_export_event, &x, more);
}
