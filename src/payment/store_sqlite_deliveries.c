/* store_sqlite_deliveries: the webhook deliveries of the embedded store
 * (store.h, "webhooks: endpoints and their deliveries"): making them with
 * the dispatcher's position, leasing them to the processes that attempt
 * them, recording attempts, retrying and purging them.
 *
 * Writes are OP_CALL operations (sqlite_call), as the endpoints' are
 * (store_sqlite_webhooks.c): run on the writer thread in a savepoint of a
 * group-committed transaction, returned once durable.
 *
 * Leases.  A delivery's lease is (lease_owner, lease_until); free is (NULL,
 * 0).  A lease is held while now_ms < lease_until: a claim at now_ms takes
 * deliveries whose lease_until <= now_ms, so a lease expires at its
 * lease_until, exactly.  A claim reads the due deliveries and leases them in
 * one write transaction, and a transaction writes only while it holds the
 * file's write lock, which one connection of one process holds at a time;
 * so two claims, from this store or any other on the file, never both see a
 * delivery free, and never both hold its lease.  A record writes only while
 * its owner is the lease's owner, read in its own transaction; so an
 * attempt whose lease expired and was taken by another is refused, and one
 * whose lease expired but was not taken is recorded (nobody else attempted
 * it meanwhile).  A reset (deliveries_add's) or a retry leaves the lease
 * alone: an attempt in flight finishes under it.
 *
 * The claimed deliveries are copied out of the transaction and passed to
 * the caller's function only after the commit, on the caller's thread: a
 * delivery is attempted only once its lease is durable.
 *
 * Reading them is store_sqlite_deliveries_read.c's.
 *
 * Threads: the sqlite_dl_* write functions on the writer thread; the rest
 * on the caller's. */
#include <assert.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/uuid.h"
#include "payment/store_sqlite.h"

/* Finished deliveries the purge deletes per transaction. */
#define SQLITE_DELIVERIES_PURGE_BATCH 256

/* ---- statements ----------------------------------------------------------- */

static const char sql_dispatch_get[] = "SELECT value FROM feed_meta WHERE key = 'dispatch'";
static const char sql_dispatch_put[] = "UPDATE feed_meta SET value = ?1 WHERE key = 'dispatch'";
/* A new delivery: ?1 id, ?2 endpoint, ?3 event, ?4 position, ?5 now; its
 * body goes to delivery_bodies (schema 9), under the id of the delivery of
 * (?2, ?3) as it stands after the insert: a delivery found there already
 * keeps its id and its body. */
#define SQLITE_DELIVERY_INSERT                                                              \
    "INSERT INTO deliveries (id, webhook_id, event_id, event_pos, status, attempts,"       \
    " created_ms, next_ms, lease_owner, lease_until, attempts_json, body)"                  \
    " VALUES (?1, ?2, ?3, ?4, 1, 0, ?5, ?5, NULL, 0, '[]', '')"                            \
    " ON CONFLICT (webhook_id, event_id) DO "
static const char sql_insert[] = SQLITE_DELIVERY_INSERT "NOTHING";
static const char sql_insert_reset[] = SQLITE_DELIVERY_INSERT
    "UPDATE SET status = 1, next_ms = excluded.next_ms";
/* ?1 endpoint, ?2 event, ?3 body. */
static const char sql_insert_body[] =
    "INSERT OR IGNORE INTO delivery_bodies (id, body)"
    " SELECT id, ?3 FROM deliveries WHERE webhook_id = ?1 AND event_id = ?2";
/* The claim's candidates, earliest due first, by the partial index. */
static const char sql_due[] = "SELECT " SQLITE_DELIVERY_COLUMNS " FROM deliveries"
                              " WHERE status = 1 AND next_ms <= ?1 AND lease_until <= ?1"
                              " ORDER BY next_ms, id LIMIT ?2";
static const char sql_lease[] =
    "UPDATE deliveries SET lease_owner = ?2, lease_until = ?3 WHERE id = ?1";
static const char sql_owner[] =
    "SELECT lease_owner FROM deliveries WHERE id = ?1 AND webhook_id = ?2";
/* The attempt, written only by the lease's holder (?5) of delivery ?1 of
 * endpoint ?6: no change means it is not (sqlite_dl_owned says why). */
static const char sql_record[] =
    "UPDATE deliveries SET attempts_json = json_insert(attempts_json, '$[#]', json(?2)),"
    " attempts = attempts + 1, status = ?3, next_ms = ?4, lease_owner = NULL, lease_until = 0"
    " WHERE id = ?1 AND lease_owner = ?5 AND webhook_id = ?6";
/* An endpoint's failing_since_ms after a success (0), and after a failure
 * at ?2 (?2 unless it was failing already); each writes only a change, so
 * the common case, a success to an endpoint that is not failing, writes
 * nothing to the endpoint's row. */
static const char sql_failing_clear[] =
    "UPDATE webhooks SET failing_since_ms = 0 WHERE id = ?1 AND failing_since_ms <> 0";
static const char sql_failing_mark[] =
    "UPDATE webhooks SET failing_since_ms = ?2 WHERE id = ?1 AND failing_since_ms = 0";
static const char sql_failing_get[] = "SELECT failing_since_ms FROM webhooks WHERE id = ?1";
static const char sql_retry[] =
    "UPDATE deliveries SET status = 1, next_ms = ?3 WHERE id = ?1 AND webhook_id = ?2";
static const char sql_purge[] =
    "DELETE FROM deliveries WHERE rowid IN (SELECT rowid FROM deliveries"
    " WHERE status <> 1 AND created_ms < ?1 LIMIT ?2)";

static sqlite3_stmt *sqlite_dl_stmt(struct sqlite_store *st, const char *sql, int *rc)
{
    return sqlite_cached(st->wdb, &st->wcache, sql, rc);
}

/* Binds text ?i, the caller's, for the statement's run. */
static int sqlite_dl_text(sqlite3_stmt *stmt, int i, const char *v, int rc)
{
    return rc == SQLITE_OK ? sqlite3_bind_text(stmt, i, v, -1, SQLITE_STATIC) : rc;
}

static int sqlite_dl_int(sqlite3_stmt *stmt, int i, int64_t v, int rc)
{
    return rc == SQLITE_OK ? sqlite3_bind_int64(stmt, i, v) : rc;
}

/* Runs a bound statement that changes rows, into *changes; releases it. */
static int sqlite_dl_run(struct sqlite_store *st, sqlite3_stmt *stmt, int rc, int *changes)
{
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (changes)
        *changes = rc == SQLITE_DONE ? sqlite3_changes(st->wdb) : 0;
    sqlite_stmt_release(stmt);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Runs a bound statement reading one integer (0 without a row); releases it. */
static int sqlite_dl_get(sqlite3_stmt *stmt, int rc, int64_t *out)
{
    *out = 0;
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(stmt, 0);
    sqlite_stmt_release(stmt);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* ---- claimed copies ---------------------------------------------------------- */

/* A claimed delivery, copied out of the claim's transaction. */
struct sqlite_claimed {
    struct payment_delivery d; /* its strings point into text */
    char *text;                /* attempts_json, NUL, body, NUL: owned */
};

/* Copies the statement's current delivery into c: PAYMENT_STORE_OK or
 * EINTERNAL. */
static int sqlite_claimed_copy(sqlite3_stmt *stmt, struct sqlite_claimed *c)
{
    int err = sqlite_delivery_row(stmt, &c->d);
    if (err != PAYMENT_STORE_OK)
        return err;
    size_t alen = strlen(c->d.attempts_json);
    c->text = malloc(alen + 1 + c->d.body_len + 1);
    if (!c->text)
        return PAYMENT_STORE_EINTERNAL;
    memcpy(c->text, c->d.attempts_json, alen + 1);
    memcpy(c->text + alen + 1, c->d.body, c->d.body_len);
    c->text[alen + 1 + c->d.body_len] = '\0';
    c->d.attempts_json = c->text;
    c->d.body = c->text + alen + 1;
    return PAYMENT_STORE_OK;
}

/* ---- making deliveries ------------------------------------------------------ */

struct sqlite_dl_add {
    int64_t expected_pos; /* -1: the position is left alone */
    int64_t new_pos;
    const struct payment_delivery_new *d;
    size_t n;
    int reset;
    int64_t now_ms;
};

static int sqlite_dl_insert(struct sqlite_store *st, const struct payment_delivery_new *d,
                            int reset, int64_t now_ms)
{
    int rc = SQLITE_OK;
    sqlite3_stmt *stmt = sqlite_dl_stmt(st, reset ? sql_insert_reset : sql_insert, &rc);
    if (!stmt)
        return rc;
    rc = sqlite_dl_text(stmt, 1, d->id, rc);
    rc = sqlite_dl_text(stmt, 2, d->webhook_id, rc);
    rc = sqlite_dl_text(stmt, 3, d->event_id, rc);
    rc = sqlite_dl_int(stmt, 4, d->event_pos, rc);
    rc = sqlite_dl_int(stmt, 5, now_ms, rc);
    int changes = 0;
    rc = sqlite_dl_run(st, stmt, rc, &changes);
    if (rc != SQLITE_OK || changes == 0)
        return rc; /* there already, body and all */
    stmt = sqlite_dl_stmt(st, sql_insert_body, &rc);
    if (!stmt)
        return rc;
    rc = sqlite_dl_text(stmt, 1, d->webhook_id, rc);
    rc = sqlite_dl_text(stmt, 2, d->event_id, rc);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text64(stmt, 3, d->body ? d->body : "", d->body ? d->body_len : 0,
                                 SQLITE_STATIC, SQLITE_UTF8);
    return sqlite_dl_run(st, stmt, rc, NULL);
}

/* OP_CALL: arg is a struct sqlite_dl_add. */
static int sqlite_dl_add(struct sqlite_store *st, void *arg, int *err)
{
    const struct sqlite_dl_add *a = arg;
    int rc = SQLITE_OK;
    if (a->expected_pos != -1) {
        sqlite3_stmt *stmt = sqlite_dl_stmt(st, sql_dispatch_get, &rc);
        if (!stmt)
            return rc;
        int64_t pos = 0;
        rc = sqlite_dl_get(stmt, SQLITE_OK, &pos);
        if (rc != SQLITE_OK)
            return rc;
        if (pos != a->expected_pos) {
            *err = PAYMENT_STORE_ECONFLICT;
            return SQLITE_OK;
        }
    }
    for (size_t i = 0; rc == SQLITE_OK && i < a->n; i++)
        rc = sqlite_dl_insert(st, &a->d[i], a->reset, a->now_ms);
    if (rc != SQLITE_OK || a->expected_pos == -1)
        return rc;
    sqlite3_stmt *stmt = sqlite_dl_stmt(st, sql_dispatch_put, &rc);
    if (!stmt)
        return rc;
    return sqlite_dl_run(st, stmt, sqlite_dl_int(stmt, 1, a->new_pos, SQLITE_OK), NULL);
}

int sqlite_deliveries_add(payment_store *s, int64_t expected_pos, int64_t new_pos,
                          const struct payment_delivery_new *d, size_t n, int reset,
                          int64_t now_ms)
{
    struct sqlite_dl_add a = {.expected_pos = expected_pos, .new_pos = new_pos, .d = d, .n = n,
                              .reset = reset, .now_ms = now_ms};
    return sqlite_call((struct sqlite_store *)s, sqlite_dl_add, &a);
}

/* ---- claims ---------------------------------------------------------------- */

struct sqlite_dl_claim {
    const char *owner;
    int64_t now_ms;
    int64_t lease_ms;
    uint32_t max;
    struct sqlite_claimed *rows; /* out: max slots, n of them filled */
    size_t n;
};

static void sqlite_claim_free(struct sqlite_dl_claim *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->rows[i].text);
    free(c->rows);
    c->rows = NULL;
    c->n = 0;
}

/* Copies the due deliveries into c->rows. */
static int sqlite_dl_due(struct sqlite_store *st, struct sqlite_dl_claim *c, int *err)
{
    int rc = SQLITE_OK;
    sqlite3_stmt *stmt = sqlite_dl_stmt(st, sql_due, &rc);
    if (!stmt)
        return rc;
    rc = sqlite_dl_int(stmt, 1, c->now_ms, rc);
    rc = sqlite_dl_int(stmt, 2, c->max, rc);
    while (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        assert(c->n < c->max);
        *err = sqlite_claimed_copy(stmt, &c->rows[c->n]);
        if (*err != PAYMENT_STORE_OK) {
            free(c->rows[c->n].text);
            break;
        }
        c->n++;
        rc = SQLITE_OK;
    }
    sqlite_stmt_release(stmt);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

/* OP_CALL: arg is a struct sqlite_dl_claim. */
static int sqlite_dl_claim(struct sqlite_store *st, void *arg, int *err)
{
    struct sqlite_dl_claim *c = arg;
    assert(c->n == 0);
    int rc = sqlite_dl_due(st, c, err);
    if (rc != SQLITE_OK || *err != PAYMENT_STORE_OK)
        return rc;
    for (size_t i = 0; rc == SQLITE_OK && i < c->n; i++) {
        sqlite3_stmt *stmt = sqlite_dl_stmt(st, sql_lease, &rc);
        if (!stmt)
            return rc;
        rc = sqlite_dl_text(stmt, 1, c->rows[i].d.id, rc);
        rc = sqlite_dl_text(stmt, 2, c->owner, rc);
        rc = sqlite_dl_int(stmt, 3, c->now_ms + c->lease_ms, rc);
        rc = sqlite_dl_run(st, stmt, rc, NULL);
    }
    return rc;
}

/* The deliveries are leased whatever each answers: one each stops at stays
 * leased, unattempted, until its lease expires. */
int sqlite_deliveries_claim(payment_store *s, const char *owner, int64_t now_ms, int64_t lease_ms,
                            uint32_t max, payment_store_delivery_fn each, void *arg)
{
    struct sqlite_dl_claim c = {.owner = owner, .now_ms = now_ms, .lease_ms = lease_ms,
                                .max = max};
    c.rows = calloc(max, sizeof *c.rows);
    if (!c.rows)
        return PAYMENT_STORE_EINTERNAL;
    int err = sqlite_call((struct sqlite_store *)s, sqlite_dl_claim, &c);
    for (size_t i = 0; err == PAYMENT_STORE_OK && i < c.n; i++)
        err = each(arg, &c.rows[i].d);
    sqlite_claim_free(&c);
    return err;
}

/* ---- attempts and retries -------------------------------------------------- */

struct sqlite_dl_record {
    const struct payment_delivery_attempt *a; /* the attempts, n of them */
    size_t n;
    struct payment_delivery_recorded *out;    /* each one's result */
};

/* Whether a->owner holds the lease: *err ENOTFOUND or ECONFLICT if not. */
static int sqlite_dl_owned(struct sqlite_store *st, const struct payment_delivery_attempt *a,
                           int *err)
{
    int rc = SQLITE_OK;
    sqlite3_stmt *stmt = sqlite_dl_stmt(st, sql_owner, &rc);
    if (!stmt)
        return rc;
    rc = sqlite_dl_text(stmt, 1, a->delivery_id, rc);
    rc = sqlite_dl_text(stmt, 2, a->webhook_id, rc);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        const char *owner = (const char *)sqlite3_column_text(stmt, 0);
        if (!owner || strcmp(owner, a->owner) != 0)
            *err = PAYMENT_STORE_ECONFLICT; /* a NULL from lack of memory: refused too */
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        *err = PAYMENT_STORE_ENOTFOUND;
        rc = SQLITE_OK;
    }
    sqlite_stmt_release(stmt);
    return rc;
}

/* The endpoint's failing_since_ms after attempt a, into *out. */
static int sqlite_dl_failing(struct sqlite_store *st, const struct payment_delivery_attempt *a,
                             int64_t *out)
{
    int rc = SQLITE_OK;
    sqlite3_stmt *stmt = sqlite_dl_stmt(st, a->succeeded ? sql_failing_clear : sql_failing_mark,
                                        &rc);
    if (!stmt)
        return rc;
    rc = sqlite_dl_text(stmt, 1, a->webhook_id, rc);
    if (!a->succeeded)
        rc = sqlite_dl_int(stmt, 2, a->at_ms, rc);
    int changes = 0;
    rc = sqlite_dl_run(st, stmt, rc, &changes);
    if (rc != SQLITE_OK)
        return rc;
    if (a->succeeded || changes == 1) {
        *out = a->succeeded ? 0 : a->at_ms;
        return SQLITE_OK;
    }
    stmt = sqlite_dl_stmt(st, sql_failing_get, &rc); /* failing since an earlier attempt */
    if (!stmt)
        return rc;
    return sqlite_dl_get(stmt, sqlite_dl_text(stmt, 1, a->webhook_id, SQLITE_OK), out);
}

/* Records attempt a in the batch's savepoint: *err its result (nothing
 * written unless 0), *failing_since_ms the endpoint's after it. */
static int sqlite_dl_record_one(struct sqlite_store *st, const struct payment_delivery_attempt *a,
                                int *err, int64_t *failing_since_ms)
{
    *err = PAYMENT_STORE_OK;
    int rc = SQLITE_OK;
    sqlite3_stmt *stmt = sqlite_dl_stmt(st, sql_record, &rc);
    if (!stmt)
        return rc;
    rc = sqlite_dl_text(stmt, 1, a->delivery_id, rc);
    rc = sqlite_dl_text(stmt, 2, a->attempt_json, rc);
    rc = sqlite_dl_int(stmt, 3, a->status, rc);
    rc = sqlite_dl_int(stmt, 4, a->status == PAYMENT_DELIVERY_PENDING ? a->next_ms : 0, rc);
    rc = sqlite_dl_text(stmt, 5, a->owner, rc);
    rc = sqlite_dl_text(stmt, 6, a->webhook_id, rc);
    int changes = 0;
    rc = sqlite_dl_run(st, stmt, rc, &changes);
    if (rc != SQLITE_OK)
        return rc;
    if (changes == 0) {
        rc = sqlite_dl_owned(st, a, err); /* ENOTFOUND or ECONFLICT: nothing written */
        if (rc == SQLITE_OK && *err == PAYMENT_STORE_OK)
            return SQLITE_CORRUPT; /* held by a->owner, yet not written */
        return rc;
    }
    return sqlite_dl_failing(st, a, failing_since_ms);
}

/* OP_CALL: arg is a struct sqlite_dl_record.  Every attempt is decided in
 * the one savepoint: a refused one (ECONFLICT, ENOTFOUND) writes nothing,
 * so the others commit; an SQLite error undoes them all. */
static int sqlite_dl_record(struct sqlite_store *st, void *arg, int *err)
{
    struct sqlite_dl_record *r = arg;
    *err = PAYMENT_STORE_OK;
    for (size_t i = 0; i < r->n; i++) {
        int rc = sqlite_dl_record_one(st, &r->a[i], &r->out[i].err, &r->out[i].failing_since_ms);
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

int sqlite_deliveries_record(payment_store *s, const struct payment_delivery_attempt *a, size_t n,
                             struct payment_delivery_recorded *out)
{
    struct sqlite_dl_record r = {.a = a, .n = n, .out = out};
    int err = sqlite_call((struct sqlite_store *)s, sqlite_dl_record, &r);
    if (err != PAYMENT_STORE_OK) {
        for (size_t i = 0; i < n; i++)
            out[i] = (struct payment_delivery_recorded){err, 0}; /* rolled back: none made */
    }
    return err;
}

struct sqlite_dl_retry {
    const char *webhook_id;
    const char *id;
    int64_t now_ms;
};

/* OP_CALL: arg is a struct sqlite_dl_retry. */
static int sqlite_dl_retry(struct sqlite_store *st, void *arg, int *err)
{
    const struct sqlite_dl_retry *r = arg;
    int rc = SQLITE_OK;
    sqlite3_stmt *stmt = sqlite_dl_stmt(st, sql_retry, &rc);
    if (!stmt)
        return rc;
    rc = sqlite_dl_text(stmt, 1, r->id, rc);
    rc = sqlite_dl_text(stmt, 2, r->webhook_id, rc);
    rc = sqlite_dl_int(stmt, 3, r->now_ms, rc);
    int changes = 0;
    rc = sqlite_dl_run(st, stmt, rc, &changes);
    if (rc == SQLITE_OK && changes == 0)
        *err = PAYMENT_STORE_ENOTFOUND;
    return rc;
}

int sqlite_delivery_retry(payment_store *s, const char *webhook_id, const char *id,
                          int64_t now_ms)
{
    struct sqlite_dl_retry r = {.webhook_id = webhook_id, .id = id, .now_ms = now_ms};
    return sqlite_call((struct sqlite_store *)s, sqlite_dl_retry, &r);
}

/* ---- purge ----------------------------------------------------------------- */

struct sqlite_dl_purge {
    int64_t before_ms;
    int deleted; /* out */
};

/* OP_CALL: one batch of the purge; arg is a struct sqlite_dl_purge. */
static int sqlite_dl_purge(struct sqlite_store *st, void *arg, int *err)
{
    (void)err;
    struct sqlite_dl_purge *p = arg;
    int rc = SQLITE_OK;
    sqlite3_stmt *stmt = sqlite_dl_stmt(st, sql_purge, &rc);
    if (!stmt)
        return rc;
    rc = sqlite_dl_int(stmt, 1, p->before_ms, rc);
    rc = sqlite_dl_int(stmt, 2, SQLITE_DELIVERIES_PURGE_BATCH, rc);
    return sqlite_dl_run(st, stmt, rc, &p->deleted);
}

/* Batch after batch, each its own transaction (between them the writer
 * commits other writes), until one finds fewer to delete or fails. */
void sqlite_deliveries_purge(payment_store *s, int64_t before_ms)
{
    struct sqlite_dl_purge p = {.before_ms = before_ms};
    do {
        p.deleted = 0;
        if (sqlite_call((struct sqlite_store *)s, sqlite_dl_purge, &p) != PAYMENT_STORE_OK)
            return; /* best effort: the next purge tries again */
    } while (p.deleted >= SQLITE_DELIVERIES_PURGE_BATCH);
}
