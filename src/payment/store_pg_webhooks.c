/* store_pg_webhooks: the webhook endpoints of the PostgreSQL store and the
 * dispatcher's position (store.h, "webhooks: endpoints and their
 * deliveries"; the deliveries are store_pg_deliveries.c's).
 *
 * Writes are OP_CALL operations (pg_call): each runs on the writer thread,
 * inside a batch's transaction that holds the write lock (feed_meta 'pos',
 * store_pg.h), and the call returns once that transaction committed.  Every
 * check a write makes (the id taken, the organisation's count, the version)
 * is a statement of that transaction, run after the lock was granted, so it
 * reads the latest committed state: no other process's write can overtake
 * it.  A refused write (EDUPLICATE, ELIMIT, ECONFLICT, ENOTFOUND) is decided
 * before it writes anything.  A call may be run again when its batch is
 * (a serialization failure): it sets every output afresh each time.
 *
 * An endpoint's after_pos is the feed's end as of its transaction: the
 * larger of feed_meta 'pos' and the largest position in events.  The batch
 * runs its payment writes, and gives their events positions, before its
 * calls; those events are rows of the transaction already (whether or not
 * the writer wrote its counter back yet), so they are at or below after_pos,
 * and every event committed later is above it.
 *
 * The dispatcher's position is feed_meta's 'dispatch' row.
 *
 * Reads run on the calling thread's reader (pg_read); a read is one
 * statement, so one snapshot, and its rows are the client's before any
 * callback runs, so a callback may call the store, the same read included.
 *
 * Threads: the pg_wh_* write functions on the writer thread; the rest on
 * the caller's. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/uuid.h"
#include "payment/store_pg.h"

/* ---- statements ----------------------------------------------------------- */

/* The columns an endpoint is read from, in pg_webhook_row's order. */
#define PG_WEBHOOK_COLUMNS                                                                  \
    "id, organisation_id, version, created_ms, modified_ms, enabled, types, after_pos,"    \
    " failing_since_ms, doc"

static const char sql_version[] = "SELECT version FROM webhooks WHERE id = $1";
/* The insert, made only while the organisation has room ($9 the most it
 * may have); after_pos is the feed's end as of the transaction. */
static const char sql_insert[] =
    "INSERT INTO webhooks (id, organisation_id, version, created_ms, modified_ms, enabled,"
    " types, after_pos, failing_since_ms, doc)"
    " SELECT $1::text, $2::text, 0, $3::bigint, $4::bigint, $5::integer, $6::integer,"
    " greatest((SELECT value FROM feed_meta WHERE key = 'pos'),"
    " (SELECT coalesce(max(pos), 0) FROM events)), 0, $7::text"
    " WHERE (SELECT count(*) FROM webhooks WHERE organisation_id = $2::text) < $8::bigint"
    " ON CONFLICT (id) DO NOTHING RETURNING after_pos";
/* SET's expressions read the row as it was: enabling resets failing_since_ms. */
static const char sql_update[] =
    "UPDATE webhooks SET version = $2, modified_ms = $3, enabled = $4, types = $5, doc = $6,"
    " failing_since_ms = CASE WHEN enabled = 0 AND $4 <> 0 THEN 0 ELSE failing_since_ms END"
    " WHERE id = $1 AND version = $7";
/* The delete of a version ($2, or any when it is -1), returning what it deleted. */
static const char sql_delete[] =
    "DELETE FROM webhooks WHERE id = $1 AND ($2::bigint = -1 OR version = $2::bigint)"
    " RETURNING version";
static const char sql_delete_deliveries[] = "DELETE FROM deliveries WHERE webhook_id = $1";
static const char sql_dispatch_get[] = "SELECT value FROM feed_meta WHERE key = 'dispatch'";

static const char sql_get[] = "SELECT " PG_WEBHOOK_COLUMNS " FROM webhooks WHERE id = $1";
/* Lists: $1 the id to start above, $2 the rows to read, $3 an array of the
 * organisations. */
static const char sql_list_all[] = "SELECT " PG_WEBHOOK_COLUMNS
                                   " FROM webhooks WHERE id > $1 ORDER BY id LIMIT $2";
static const char sql_list_all_enabled[] =
    "SELECT " PG_WEBHOOK_COLUMNS
    " FROM webhooks WHERE id > $1 AND enabled <> 0 ORDER BY id LIMIT $2";
static const char sql_list_orgs[] =
    "SELECT " PG_WEBHOOK_COLUMNS " FROM webhooks WHERE id > $1"
    " AND organisation_id = ANY ($3::text[]) ORDER BY id LIMIT $2";
static const char sql_list_orgs_enabled[] =
    "SELECT " PG_WEBHOOK_COLUMNS " FROM webhooks WHERE id > $1"
    " AND organisation_id = ANY ($3::text[]) AND enabled <> 0 ORDER BY id LIMIT $2";

/* Rows a statement that changes rows changed. */
static int64_t pg_wh_changes(PGresult *res)
{
    return strtoll(PQcmdTuples(res), NULL, 10);
}

/* The stored version of endpoint id (*found 0: none), in the transaction. */
static int pg_wh_version(struct pg_conn *c, const char *id, int64_t *version, int *found)
{
    struct pg_params p;
    pg_params_init(&p);
    pg_param_text(&p, id);
    PGresult *res = NULL;
    int rc = pg_exec(c, sql_version, &p, &res);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    *found = PQntuples(res) == 1;
    *version = *found ? pg_int(res, 0, 0) : 0;
    PQclear(res);
    return PAYMENT_STORE_OK;
}

/* ---- create ------------------------------------------------------------- */

/* OP_CALL: arg is the endpoint, whose after_pos and failing_since_ms it sets. */
static int pg_wh_create(struct pg_store *st, struct pg_conn *c, void *arg, int *err)
{
    (void)st;
    struct payment_webhook *w = arg;
    assert(w->version == 0); /* store.c's precondition: the insert writes 0 */
    *err = PAYMENT_STORE_OK;
    struct pg_params p;
    pg_params_init(&p);
    pg_param_text(&p, w->id);
    pg_param_text(&p, w->organisation_id);
    pg_param_int(&p, w->created_ms);
    pg_param_int(&p, w->modified_ms);
    pg_param_int(&p, w->enabled != 0);
    pg_param_int(&p, w->types);
    pg_param_textn(&p, w->doc, w->doc_len);
    pg_param_int(&p, PAYMENT_WEBHOOKS_PER_ORG_MAX);
    PGresult *res = NULL;
    int rc = pg_exec(c, sql_insert, &p, &res);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    int inserted = PQntuples(res) == 1;
    if (inserted) {
        w->after_pos = pg_int(res, 0, 0);
        w->failing_since_ms = 0;
    }
    PQclear(res);
    if (inserted)
        return PAYMENT_STORE_OK;
    /* Nothing written: the id is taken, else the organisation is full. */
    int64_t version = 0;
    int found = 0;
    rc = pg_wh_version(c, w->id, &version, &found);
    *err = found ? PAYMENT_STORE_EDUPLICATE : PAYMENT_STORE_ELIMIT;
    return rc;
}

int pg_webhook_create(payment_store *s, struct payment_webhook *w)
{
    return pg_call((struct pg_store *)s, pg_wh_create, w);
}

/* ---- update and delete ---------------------------------------------------- */

struct pg_wh_update {
    const struct payment_webhook *w;
    int64_t expected_version;
};

/* OP_CALL: arg is a struct pg_wh_update. */
static int pg_wh_update(struct pg_store *st, struct pg_conn *c, void *arg, int *err)
{
    (void)st;
    const struct pg_wh_update *u = arg;
    const struct payment_webhook *w = u->w;
    *err = PAYMENT_STORE_OK;
    struct pg_params p;
    pg_params_init(&p);
    pg_param_text(&p, w->id);
    pg_param_int(&p, w->version);
    pg_param_int(&p, w->modified_ms);
    pg_param_int(&p, w->enabled != 0);
    pg_param_int(&p, w->types);
    pg_param_textn(&p, w->doc, w->doc_len);
    pg_param_int(&p, u->expected_version);
    PGresult *res = NULL;
    int rc = pg_exec(c, sql_update, &p, &res);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    int64_t changed = pg_wh_changes(res);
    PQclear(res);
    assert(changed <= 1); /* by the primary key */
    if (changed == 1)
        return PAYMENT_STORE_OK;
    int64_t version = 0;
    int found = 0;
    rc = pg_wh_version(c, w->id, &version, &found);
    *err = found ? PAYMENT_STORE_ECONFLICT : PAYMENT_STORE_ENOTFOUND;
    return rc;
}

int pg_webhook_update(payment_store *s, const struct payment_webhook *w, int64_t expected_version)
{
    assert(w->version == expected_version + 1);
    struct pg_wh_update u = {.w = w, .expected_version = expected_version};
    return pg_call((struct pg_store *)s, pg_wh_update, &u);
}

struct pg_wh_delete {
    const char *id;
    int64_t expected_version;   /* -1: any */
    int64_t current_version;    /* out: the stored one on ECONFLICT */
};

/* Runs sql with id as $1, rows unwanted. */
static int pg_wh_run_id(struct pg_conn *c, const char *sql, const char *id)
{
    struct pg_params p;
    pg_params_init(&p);
    pg_param_text(&p, id);
    return pg_exec(c, sql, &p, NULL);
}

/* OP_CALL: arg is a struct pg_wh_delete. */
static int pg_wh_delete(struct pg_store *st, struct pg_conn *c, void *arg, int *err)
{
    (void)st;
    struct pg_wh_delete *d = arg;
    *err = PAYMENT_STORE_OK;
    d->current_version = -1;
    struct pg_params p;
    pg_params_init(&p);
    pg_param_text(&p, d->id);
    pg_param_int(&p, d->expected_version);
    PGresult *res = NULL;
    int rc = pg_exec(c, sql_delete, &p, &res);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    int deleted = PQntuples(res) == 1;
    PQclear(res);
    if (deleted)
        return pg_wh_run_id(c, sql_delete_deliveries, d->id);
    int64_t version = 0;
    int found = 0;
    rc = pg_wh_version(c, d->id, &version, &found);
    if (found)
        d->current_version = version;
    *err = found ? PAYMENT_STORE_ECONFLICT : PAYMENT_STORE_ENOTFOUND;
    return rc;
}

int pg_webhook_delete(payment_store *s, const char *id, int64_t expected_version,
                      int64_t *current_version)
{
    struct pg_wh_delete d = {.id = id, .expected_version = expected_version,
                             .current_version = -1};
    int err = pg_call((struct pg_store *)s, pg_wh_delete, &d);
    if (current_version)
        *current_version = err == PAYMENT_STORE_ECONFLICT ? d.current_version : -1;
    return err;
}

/* ---- reads -------------------------------------------------------------- */

/* Fills w from row r of a result selecting PG_WEBHOOK_COLUMNS, its doc the
 * result's: PAYMENT_STORE_OK, or EINTERNAL for a row no write makes. */
static int pg_webhook_row(const PGresult *res, int r, struct payment_webhook *w)
{
    memset(w, 0, sizeof *w);
    w->version = pg_int(res, r, 2);
    w->created_ms = pg_int(res, r, 3);
    w->modified_ms = pg_int(res, r, 4);
    w->enabled = pg_int(res, r, 5) != 0;
    w->types = (unsigned)pg_int(res, r, 6);
    w->after_pos = pg_int(res, r, 7);
    w->failing_since_ms = pg_int(res, r, 8);
    w->doc = pg_text(res, r, 9);
    w->doc_len = pg_len(res, r, 9);
    if (pg_column_uuid(res, r, 0, w->id) != 0 ||
        pg_column_uuid(res, r, 1, w->organisation_id) != 0 || !w->doc)
        return PAYMENT_STORE_EINTERNAL;
    return PAYMENT_STORE_OK;
}

/* Passes rows [0, n) of res to each, stopping at the first non-zero answer
 * (returned) or a row no write makes (EINTERNAL). */
static int pg_wh_give(const PGresult *res, int n, payment_store_webhook_fn each, void *arg)
{
    int err = PAYMENT_STORE_OK;
    for (int r = 0; err == PAYMENT_STORE_OK && r < n; r++) {
        struct payment_webhook w;
        err = pg_webhook_row(res, r, &w);
        if (err == PAYMENT_STORE_OK)
            err = each(arg, &w);
    }
    return err;
}

int pg_webhook_get(payment_store *s, const char *id, payment_store_webhook_fn each, void *arg)
{
    struct pg_params p;
    pg_params_init(&p);
    pg_param_text(&p, id);
    PGresult *res = NULL;
    int err = pg_read((struct pg_store *)s, sql_get, &p, &res);
    if (err != PAYMENT_STORE_OK)
        return err;
    err = PQntuples(res) == 1 ? pg_wh_give(res, 1, each, arg) : PAYMENT_STORE_ENOTFOUND;
    PQclear(res);
    return err;
}

/* The organisations of q as an array literal ({"a","b"}), into b. */
static int pg_wh_orgs_array(const struct payment_webhook_query *q, struct buf *b)
{
    (void)buf_puts(b, "{");
    for (size_t i = 0; i < q->n_orgs; i++) {
        (void)buf_puts(b, i ? ",\"" : "\"");
        for (const char *o = q->orgs[i]; *o; o++) {
            if (*o == '"' || *o == '\\')
                (void)buf_puts(b, "\\");
            (void)buf_append(b, o, 1);
        }
        (void)buf_puts(b, "\"");
    }
    (void)buf_puts(b, "}");
    return buf_failed(b) ? -1 : 0;
}

int pg_webhooks_list(payment_store *s, const struct payment_webhook_query *q,
                     payment_store_webhook_fn each, void *arg, int *more)
{
    assert(q->limit >= 1 && q->limit <= PAYMENT_WEBHOOKS_PAGE_MAX);
    *more = 0;
    if (!q->all_orgs && q->n_orgs == 0)
        return PAYMENT_STORE_OK;
    const char *sql = q->all_orgs ? (q->enabled_only ? sql_list_all_enabled : sql_list_all)
                                  : (q->enabled_only ? sql_list_orgs_enabled : sql_list_orgs);
    struct buf orgs = BUF_INIT;
    if (!q->all_orgs && pg_wh_orgs_array(q, &orgs) != 0) {
        buf_free(&orgs);
        return PAYMENT_STORE_EINTERNAL;
    }
    struct pg_params p;
    pg_params_init(&p);
    pg_param_text(&p, q->after_id ? q->after_id : "");
    pg_param_int(&p, (int64_t)q->limit + 1);
    if (!q->all_orgs)
        pg_param_text(&p, orgs.data); /* text form: an array's literal */
    PGresult *res = NULL;
    int err = pg_read((struct pg_store *)s, sql, &p, &res);
    buf_free(&orgs);
    if (err != PAYMENT_STORE_OK)
        return err;
    int n = PQntuples(res);
    assert(n >= 0 && (uint32_t)n <= q->limit + 1);
    int page = (uint32_t)n > q->limit ? (int)q->limit : n;
    err = pg_wh_give(res, page, each, arg);
    if (err == PAYMENT_STORE_OK)
        *more = n > page;
    PQclear(res);
    return err;
}

int pg_dispatch_pos(payment_store *s, int64_t *pos)
{
    PGresult *res = NULL;
    *pos = 0;
    int err = pg_read((struct pg_store *)s, sql_dispatch_get, NULL, &res);
    if (err != PAYMENT_STORE_OK)
        return err;
    if (PQntuples(res) == 1)
        *pos = pg_int(res, 0, 0);
    PQclear(res);
    return PAYMENT_STORE_OK;
}
