/* store_pg_deliveries: the webhook deliveries of the PostgreSQL store
 * (store.h, "webhooks: endpoints and their deliveries"): making them with
 * the dispatcher's position, leasing them to the processes that attempt
 * them, recording attempts, retrying and purging them.
 *
 * Writes are OP_CALL operations (pg_call), as the endpoints' are
 * (store_pg_webhooks.c): run on the writer thread inside a batch's
 * transaction, which holds the write lock that orders every process's
 * writes (store_pg.h), and returned once committed.  A call may be run
 * again when its batch is: each sets its outputs afresh.
 *
 * Leases.  A delivery's lease is (lease_owner, lease_until); free is (NULL,
 * 0).  A lease is held while now_ms < lease_until: a claim at now_ms takes
 * deliveries whose lease_until <= now_ms, so a lease expires at its
 * lease_until, exactly.  A claim is one statement that picks the due
 * deliveries and leases them; it runs under the write lock, which one
 * transaction of one process holds at a time, so two claims, from this
 * store or any other on the database, never both see a delivery free
 * (FOR UPDATE SKIP LOCKED would keep them apart without the lock too).  A
 * record is one conditional UPDATE that writes only while its owner is the
 * lease's owner; so an attempt whose lease expired and was taken by another
 * is refused, and one whose lease expired but was not taken is recorded
 * (nobody else attempted it meanwhile).  A reset (deliveries_add's) or a
 * retry leaves the lease alone: an attempt in flight finishes under it.
 *
 * The claimed deliveries are the claim statement's result, kept past the
 * commit and passed to the caller's function only then, on the caller's
 * thread: a delivery is attempted only once its lease is durable.
 *
 * A delivery's body is in its row, written once by its insert: a claim or a
 * record rewrites the row's other columns, and PostgreSQL keeps a value
 * that large out of line, unchanged, not copied.
 *
 * Reading them is store_pg_deliveries_read.c's.
 *
 * Threads: the pg_dl_* write functions on the writer thread; the rest on
 * the caller's. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/uuid.h"
#include "payment/store_pg.h"

/* ---- statements ----------------------------------------------------------- */

/* Moves the dispatcher's position from $1 to $2: no change when it is not $1. */
static const char sql_dispatch_move[] =
    "UPDATE feed_meta SET value = $2 WHERE key = 'dispatch' AND value = $1";
/* A new delivery: $1 id, $2 endpoint, $3 event, $4 position, $5 now, $6
 * body.  A delivery found there already keeps its id and its body. */
#define PG_DELIVERY_INSERT                                                                  \
    "INSERT INTO deliveries (id, webhook_id, event_id, event_pos, status, attempts,"       \
    " created_ms, next_ms, lease_owner, lease_until, attempts_json, body)"                  \
    " VALUES ($1, $2, $3, $4, 1, 0, $5, $5, NULL, 0, '[]', $6)"                            \
    " ON CONFLICT (webhook_id, event_id) DO "
static const char sql_insert[] = PG_DELIVERY_INSERT "NOTHING";
static const char sql_insert_reset[] = PG_DELIVERY_INSERT
    "UPDATE SET status = 1, next_ms = excluded.next_ms";
/* The claim: $1 now, $2 rows at most, $3 owner, $4 the lease's end.  The
 * due deliveries, earliest first by the partial index, leased and returned
 * in that order. */
static const char sql_claim[] =
    "WITH due AS (SELECT id FROM deliveries"
    " WHERE status = 1 AND next_ms <= $1 AND lease_until <= $1"
    " ORDER BY next_ms, id LIMIT $2 FOR UPDATE SKIP LOCKED),"
    " leased AS (UPDATE deliveries d SET lease_owner = $3, lease_until = $4 FROM due"
    " WHERE d.id = due.id RETURNING d.*)"
    " SELECT " PG_DELIVERY_COLUMNS " FROM leased ORDER BY next_ms, id";
static const char sql_owner[] =
    "SELECT lease_owner FROM deliveries WHERE id = $1 AND webhook_id = $2";
/* The attempt $2 (its text kept as given) on delivery $1 of endpoint $6,
 * written only by the lease's holder $5: status $3, due at $4; then the
 * endpoint's failing_since_ms, 0 after a success ($7) and $8 after a
 * failure unless it was failing already, each written only when it
 * changes, so the common case, a success to an endpoint that is not
 * failing, writes nothing to the endpoint's row.  Answers whether the
 * attempt was written, and the endpoint's failing_since_ms after it (0 when
 * gone): the one written, else the one it had (a statement's reads see the
 * rows as they were before it). */
static const char sql_record[] =
    "WITH rec AS (UPDATE deliveries SET attempts_json = CASE WHEN attempts_json = '[]'"
    " THEN '[' || $2::json::text || ']'"
    " ELSE left(attempts_json, -1) || ',' || $2::json::text || ']' END,"
    " attempts = attempts + 1, status = $3, next_ms = $4, lease_owner = NULL, lease_until = 0"
    " WHERE id = $1 AND lease_owner = $5 AND webhook_id = $6 RETURNING 1),"
    " mark AS (UPDATE webhooks SET failing_since_ms = CASE WHEN $7::boolean THEN 0"
    " ELSE $8::bigint END WHERE id = $6 AND EXISTS (SELECT 1 FROM rec)"
    " AND CASE WHEN $7::boolean THEN failing_since_ms <> 0 ELSE failing_since_ms = 0 END"
    " RETURNING failing_since_ms)"
    " SELECT (SELECT count(*) FROM rec), coalesce((SELECT failing_since_ms FROM mark),"
    " (SELECT failing_since_ms FROM webhooks WHERE id = $6), 0)";
static const char sql_retry[] =
    "UPDATE deliveries SET status = 1, next_ms = $3 WHERE id = $1 AND webhook_id = $2";
static const char sql_purge[] =
    "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries"
    " WHERE status <> 1 AND created_ms < $1 LIMIT $2)";

/* Rows a statement that changes rows changed. */
static int64_t pg_dl_changes(PGresult *res)
{
    return strtoll(PQcmdTuples(res), NULL, 10);
}

/* Runs sql with p, into *changes. */
static int pg_dl_run(struct pg_conn *c, const char *sql, const struct pg_params *p,
                     int64_t *changes)
{
    PGresult *res = NULL;
    int rc = pg_exec(c, sql, p, &res);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    *changes = pg_dl_changes(res);
    PQclear(res);
    return PAYMENT_STORE_OK;
}

/* ---- making deliveries ------------------------------------------------------ */

struct pg_dl_add {
    int64_t expected_pos; /* -1: the position is left alone */
    int64_t new_pos;
    const struct payment_delivery_new *d;
    size_t n;
    int reset;
    int64_t now_ms;
};

static int pg_dl_insert(struct pg_conn *c, const struct payment_delivery_new *d, int reset,
                        int64_t now_ms)
{
    struct pg_params p;
    pg_params_init(&p);
    pg_param_text(&p, d->id);
    pg_param_text(&p, d->webhook_id);
    pg_param_text(&p, d->event_id);
    pg_param_int(&p, d->event_pos);
    pg_param_int(&p, now_ms);
    pg_param_textn(&p, d->body ? d->body : "", d->body ? d->body_len : 0);
    return pg_exec(c, reset ? sql_insert_reset : sql_insert, &p, NULL);
}

/* The position moved (when a asks) and the deliveries made, in the
 * caller's savepoint: *err ECONFLICT when the position was not a's. */
static int pg_dl_add_all(struct pg_conn *c, const struct pg_dl_add *a, int *err)
{
    if (a->expected_pos != -1) {
        struct pg_params p;
        pg_params_init(&p);
        pg_param_int(&p, a->expected_pos);
        pg_param_int(&p, a->new_pos);
        int64_t moved = 0;
        int rc = pg_dl_run(c, sql_dispatch_move, &p, &moved);
        if (rc != PAYMENT_STORE_OK)
            return rc;
        if (moved == 0) {
            *err = PAYMENT_STORE_ECONFLICT;
            return PAYMENT_STORE_OK;
        }
    }
    int rc = PAYMENT_STORE_OK;
    for (size_t i = 0; rc == PAYMENT_STORE_OK && i < a->n; i++)
        rc = pg_dl_insert(c, &a->d[i], a->reset, a->now_ms);
    return rc;
}

/* OP_CALL: arg is a struct pg_dl_add.  In a savepoint of its own: a
 * position that moved meanwhile, or a delivery the server refuses (an id
 * taken by another (endpoint, event)), undoes it alone. */
static int pg_dl_add(struct pg_store *st, struct pg_conn *c, void *arg, int *err)
{
    (void)st;
    const struct pg_dl_add *a = arg;
    *err = PAYMENT_STORE_OK;
    int rc = pg_savepoint(c);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    rc = pg_dl_add_all(c, a, err);
    if (rc == PAYMENT_STORE_EDUPLICATE || rc == PAYMENT_STORE_EINTERNAL) {
        *err = rc; /* this call's alone: the batch goes on without it */
        rc = PAYMENT_STORE_OK;
    }
    if (rc != PAYMENT_STORE_OK)
        return rc;
    return *err == PAYMENT_STORE_OK ? pg_release(c) : pg_rollback_to(c);
}

int pg_deliveries_add(payment_store *s, int64_t expected_pos, int64_t new_pos,
                      const struct payment_delivery_new *d, size_t n, int reset, int64_t now_ms)
{
    assert(expected_pos == -1 || new_pos >= expected_pos);
    struct pg_dl_add a = {.expected_pos = expected_pos, .new_pos = new_pos, .d = d, .n = n,
                          .reset = reset, .now_ms = now_ms};
    return pg_call((struct pg_store *)s, pg_dl_add, &a);
}

/* ---- claims ---------------------------------------------------------------- */

struct pg_dl_claim {
    const char *owner;
    int64_t now_ms;
    int64_t lease_ms;
    uint32_t max;
    PGresult *leased; /* out: the deliveries leased (PG_DELIVERY_COLUMNS), owned */
};

/* OP_CALL: arg is a struct pg_dl_claim. */
static int pg_dl_claim(struct pg_store *st, struct pg_conn *c, void *arg, int *err)
{
    (void)st;
    struct pg_dl_claim *cl = arg;
    *err = PAYMENT_STORE_OK;
    PQclear(cl->leased); /* a batch run again: its first run's rows were undone */
    cl->leased = NULL;
    struct pg_params p;
    pg_params_init(&p);
    pg_param_int(&p, cl->now_ms);
    pg_param_int(&p, cl->max);
    pg_param_text(&p, cl->owner);
    pg_param_int(&p, cl->now_ms + cl->lease_ms);
    return pg_exec(c, sql_claim, &p, &cl->leased);
}

/* The deliveries are leased whatever each answers: one each stops at stays
 * leased, unattempted, until its lease expires. */
int pg_deliveries_claim(payment_store *s, const char *owner, int64_t now_ms, int64_t lease_ms,
                        uint32_t max, payment_store_delivery_fn each, void *arg)
{
    assert(max >= 1 && max <= PAYMENT_WEBHOOKS_PAGE_MAX);
    struct pg_dl_claim cl = {.owner = owner, .now_ms = now_ms, .lease_ms = lease_ms,
                             .max = max};
    int err = pg_call((struct pg_store *)s, pg_dl_claim, &cl);
    int n = err == PAYMENT_STORE_OK && cl.leased ? PQntuples(cl.leased) : 0;
    assert(n >= 0 && (uint32_t)n <= max);
    for (int r = 0; err == PAYMENT_STORE_OK && r < n; r++) {
        struct payment_delivery d;
        err = pg_delivery_row(cl.leased, r, &d);
        if (err == PAYMENT_STORE_OK)
            err = each(arg, &d);
    }
    PQclear(cl.leased);
    return err;
}

/* ---- attempts and retries -------------------------------------------------- */

struct pg_dl_record {
    const struct payment_delivery_attempt *a; /* the attempts, n of them */
    size_t n;
    struct payment_delivery_recorded *out;    /* each one's result */
};

/* Whether a->owner holds the lease: *err ENOTFOUND or ECONFLICT if not. */
static int pg_dl_owned(struct pg_conn *c, const struct payment_delivery_attempt *a, int *err)
{
    struct pg_params p;
    pg_params_init(&p);
    pg_param_text(&p, a->delivery_id);
    pg_param_text(&p, a->webhook_id);
    PGresult *res = NULL;
    int rc = pg_exec(c, sql_owner, &p, &res);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    if (PQntuples(res) == 0) {
        *err = PAYMENT_STORE_ENOTFOUND;
    } else {
        const char *owner = pg_text(res, 0, 0);
        if (!owner || strcmp(owner, a->owner) != 0)
            *err = PAYMENT_STORE_ECONFLICT;
    }
    PQclear(res);
    return PAYMENT_STORE_OK;
}

/* Records attempt a: *err its result (nothing written unless 0),
 * *failing_since_ms the endpoint's after it (0 unless recorded). */
static int pg_dl_record_one(struct pg_conn *c, const struct payment_delivery_attempt *a,
                            int *err, int64_t *failing_since_ms)
{
    *err = PAYMENT_STORE_OK;
    *failing_since_ms = 0;
    struct pg_params p;
    pg_params_init(&p);
    pg_param_text(&p, a->delivery_id);
    pg_param_text(&p, a->attempt_json);
    pg_param_int(&p, a->status);
    pg_param_int(&p, a->status == PAYMENT_DELIVERY_PENDING ? a->next_ms : 0);
    pg_param_text(&p, a->owner);
    pg_param_text(&p, a->webhook_id);
    pg_param_int(&p, a->succeeded != 0);
    pg_param_int(&p, a->at_ms);
    PGresult *res = NULL;
    int rc = pg_exec(c, sql_record, &p, &res);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    assert(PQntuples(res) == 1); /* scalar subqueries: always one row */
    int64_t recorded = pg_int(res, 0, 0);
    int64_t failing = pg_int(res, 0, 1);
    PQclear(res);
    assert(recorded <= 1); /* by the primary key */
    if (recorded == 1) {
        *failing_since_ms = failing;
        return PAYMENT_STORE_OK;
    }
    rc = pg_dl_owned(c, a, err); /* ENOTFOUND or ECONFLICT: nothing written */
    if (rc == PAYMENT_STORE_OK && *err == PAYMENT_STORE_OK)
        return PAYMENT_STORE_EINTERNAL; /* held by a->owner, yet not written */
    return rc;
}

/* OP_CALL: arg is a struct pg_dl_record.  Every attempt is decided in the
 * batch's transaction: a refused one (ECONFLICT, ENOTFOUND) writes
 * nothing, so the others commit; a server error undoes them all. */
static int pg_dl_record(struct pg_store *st, struct pg_conn *c, void *arg, int *err)
{
    (void)st;
    struct pg_dl_record *r = arg;
    *err = PAYMENT_STORE_OK;
    for (size_t i = 0; i < r->n; i++) {
        int rc = pg_dl_record_one(c, &r->a[i], &r->out[i].err, &r->out[i].failing_since_ms);
        if (rc != PAYMENT_STORE_OK)
            return rc;
    }
    return PAYMENT_STORE_OK;
}

int pg_deliveries_record(payment_store *s, const struct payment_delivery_attempt *a, size_t n,
                         struct payment_delivery_recorded *out)
{
    assert(n >= 1 && n <= PAYMENT_WEBHOOKS_PAGE_MAX);
    struct pg_dl_record r = {.a = a, .n = n, .out = out};
    int err = pg_call((struct pg_store *)s, pg_dl_record, &r);
    if (err != PAYMENT_STORE_OK) {
        for (size_t i = 0; i < n; i++)
            out[i] = (struct payment_delivery_recorded){err, 0}; /* rolled back: none made */
    }
    return err;
}

struct pg_dl_retry {
    const char *webhook_id;
    const char *id;
    int64_t now_ms;
};

/* OP_CALL: arg is a struct pg_dl_retry. */
static int pg_dl_retry(struct pg_store *st, struct pg_conn *c, void *arg, int *err)
{
    (void)st;
    const struct pg_dl_retry *r = arg;
    *err = PAYMENT_STORE_OK;
    struct pg_params p;
    pg_params_init(&p);
    pg_param_text(&p, r->id);
    pg_param_text(&p, r->webhook_id);
    pg_param_int(&p, r->now_ms);
    int64_t changes = 0;
    int rc = pg_dl_run(c, sql_retry, &p, &changes);
    if (rc == PAYMENT_STORE_OK && changes == 0)
        *err = PAYMENT_STORE_ENOTFOUND;
    return rc;
}

int pg_delivery_retry(payment_store *s, const char *webhook_id, const char *id, int64_t now_ms)
{
    struct pg_dl_retry r = {.webhook_id = webhook_id, .id = id, .now_ms = now_ms};
    return pg_call((struct pg_store *)s, pg_dl_retry, &r);
}

/* ---- purge ----------------------------------------------------------------- */

struct pg_dl_purge {
    int64_t before_ms;
    int64_t deleted; /* out */
};

/* OP_CALL: one batch of the purge; arg is a struct pg_dl_purge. */
static int pg_dl_purge(struct pg_store *st, struct pg_conn *c, void *arg, int *err)
{
    (void)st;
    struct pg_dl_purge *p = arg;
    *err = PAYMENT_STORE_OK;
    p->deleted = 0;
    struct pg_params params;
    pg_params_init(&params);
    pg_param_int(&params, p->before_ms);
    pg_param_int(&params, PG_PURGE_BATCH);
    return pg_dl_run(c, sql_purge, &params, &p->deleted);
}

/* Batch after batch, each its own operation (between them the writer
 * commits other writes), until one finds fewer to delete or fails. */
void pg_deliveries_purge(payment_store *s, int64_t before_ms)
{
    struct pg_dl_purge p = {.before_ms = before_ms};
    do {
        if (pg_call((struct pg_store *)s, pg_dl_purge, &p) != PAYMENT_STORE_OK)
            return; /* best effort: the next purge tries again */
    } while (p.deleted >= PG_PURGE_BATCH);
}
