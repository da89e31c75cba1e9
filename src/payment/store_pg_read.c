/* store_pg_read: the read path of the PostgreSQL store.  Each reading
 * thread has a connection of its own (its reader), made on its first read
 * and registered in the store so that close can free it; a thread that
 * exits before the store closes frees its reader through the thread key's
 * destructor.  Owns the readers, the lookups by key (get, ping, idem_get,
 * op_get, partition_get) and the helpers of the other files' reads.
 *
 * Every read is one statement in autocommit: READ COMMITTED gives it a
 * snapshot of the last commits when it starts, it takes no lock a write
 * waits for, and it waits for no write.  A read whose connection was lost
 * (the server restarted, a failover) is run once more on a new connection:
 * running a read twice is harmless, and the caller sees EUNAVAILABLE only
 * when the server does not answer that one either. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "payment/store_pg.h"

static const char PG_SQL_PING[] = "SELECT value FROM feed_meta WHERE key = 'pos'";
static const char PG_SQL_GET[] =
    "SELECT doc, version, created_ms FROM payments WHERE id = $1 AND NOT deleted";
static const char PG_SQL_IDEM[] =
    "SELECT fingerprint, status, location, etag, body FROM idempotency"
    " WHERE scope = $1 AND key = $2";
static const char PG_SQL_OP[] =
    "SELECT status, error_code, message, payment_id, organisation_id, version, partition, seq,"
    " fingerprint FROM operations WHERE op_id = $1";
static const char PG_SQL_PARTITION[] =
    "SELECT last_seq, fence FROM partitions WHERE partition = $1";

/* ---- readers --------------------------------------------------------------- */

void pg_reader_free(struct pg_reader *r)
{
    pg_conn_close(&r->conn);
    free(r);
}

void pg_reader_unlink(struct pg_store *st, struct pg_reader *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        st->readers = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

void pg_reader_exit(void *p)
{
    struct pg_reader *r = p;
    struct pg_store *st = r->st;
    store_lock(&st->readers_mu);
    pg_reader_unlink(st, r);
    store_unlock(&st->readers_mu);
    pg_reader_free(r);
}

/* The reader is registered unconnected: its first statement connects it
 * (pg_exec), so that a server that is down costs a thread one try a second,
 * not one per call. */
struct pg_reader *pg_reader_get(struct pg_store *st, int *err)
{
    struct pg_reader *r = pthread_getspecific(st->reader_key);
    if (r)
        return r;
    r = calloc(1, sizeof *r);
    if (!r) {
        *err = PAYMENT_STORE_EINTERNAL;
        return NULL;
    }
    r->st = st;
    r->conn = (struct pg_conn)PG_CONN_INIT(st->uri);
    if (pthread_setspecific(st->reader_key, r) != 0) {
        free(r);
        *err = PAYMENT_STORE_EINTERNAL;
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

/* ---- running a read ---------------------------------------------------------- */

static int pg_conn_up(const struct pg_conn *c)
{
    return c->pg && PQstatus(c->pg) == CONNECTION_OK;
}

/* Connects c when it is not connected, no more often than pg_exec would:
 * 0 or EUNAVAILABLE. */
static int pg_reader_connect(struct pg_conn *c)
{
    if (pg_conn_up(c))
        return PAYMENT_STORE_OK;
    if (clock_mono_us() < c->retry_after_us)
        return PAYMENT_STORE_EUNAVAILABLE;
    return pg_conn_open(c, NULL, 0);
}

/* Runs sql once on c: prepared (a static string) or not (built per call). */
static int pg_read_once(struct pg_conn *c, const char *sql, const struct pg_params *p,
                        int prepared, PGresult **res)
{
    if (prepared)
        return pg_exec(c, sql, p, res);
    *res = NULL;
    int rc = pg_reader_connect(c);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    PGresult *r = PQexecParams(c->pg, sql, p ? p->n : 0, NULL, p ? p->values : NULL,
                               p ? p->lengths : NULL, p ? p->formats : NULL, 0);
    ExecStatusType status = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK) {
        *res = r;
        return PAYMENT_STORE_OK;
    }
    rc = pg_result_err(c, r);
    PQclear(r);
    return rc;
}

/* Runs sql on the calling thread's reader, again on a new connection when
 * the one it ran on was lost meanwhile. */
static int pg_read_run(struct pg_store *st, const char *sql, const struct pg_params *p,
                       int prepared, PGresult **res)
{
    assert(res);
    *res = NULL;
    int err;
    struct pg_reader *r = pg_reader_get(st, &err);
    if (!r)
        return err;
    int was_up = pg_conn_up(&r->conn);
    err = pg_read_once(&r->conn, sql, p, prepared, res);
    if (err == PAYMENT_STORE_EUNAVAILABLE && was_up && !pg_conn_up(&r->conn)) {
        pg_conn_close(&r->conn); /* connected again at once by the retry */
        err = pg_read_once(&r->conn, sql, p, prepared, res);
    }
    if (err == PG_ERETRY)
        err = PAYMENT_STORE_EUNAVAILABLE; /* a single statement outside a transaction: not met */
    return err;
}

int pg_read(struct pg_store *st, const char *sql, const struct pg_params *p, PGresult **res)
{
    return pg_read_run(st, sql, p, 1, res);
}

int pg_read_unprepared(struct pg_store *st, const char *sql, const struct pg_params *p,
                       PGresult **res)
{
    return pg_read_run(st, sql, p, 0, res);
}

int pg_column_uuid(const PGresult *res, int r, int col, char out[UUID_STR_LEN + 1])
{
    const char *v = pg_text(res, r, col);
    size_t len = pg_len(res, r, col);
    if (!v || len > UUID_STR_LEN)
        return -1;
    memcpy(out, v, len);
    out[len] = '\0';
    return 0;
}

/* ---- lookups ----------------------------------------------------------------- */

int pg_ping(payment_store *s)
{
    PGresult *res;
    int err = pg_read((struct pg_store *)s, PG_SQL_PING, NULL, &res);
    if (err != PAYMENT_STORE_OK)
        return err;
    err = PQntuples(res) == 1 ? PAYMENT_STORE_OK : PAYMENT_STORE_EINTERNAL;
    PQclear(res);
    return err;
}

/* Appends column col of row 0 (NULL: nothing) to b: 0, or EINTERNAL. */
static int pg_column_buf(const PGresult *res, int col, struct buf *b)
{
    const char *v = pg_text(res, 0, col);
    if (!v)
        return PAYMENT_STORE_OK;
    return buf_append(b, v, pg_len(res, 0, col)) == 0 ? PAYMENT_STORE_OK
                                                       : PAYMENT_STORE_EINTERNAL;
}

int pg_get(payment_store *s, const char *id, struct buf *doc, int64_t *version,
           int64_t *created_ms)
{
    struct pg_params p;
    pg_params_init(&p);
    pg_param_text(&p, id);
    PGresult *res;
    int err = pg_read((struct pg_store *)s, PG_SQL_GET, &p, &res);
    if (err != PAYMENT_STORE_OK)
        return err;
    if (PQntuples(res) == 0) {
        err = PAYMENT_STORE_ENOTFOUND;
    } else {
        err = pg_column_buf(res, 0, doc);
        if (err == PAYMENT_STORE_OK) {
            *version = pg_int(res, 0, 1);
            if (created_ms)
                *created_ms = pg_int(res, 0, 2);
        }
    }
    PQclear(res);
    return err;
}

/* Appends bytea column col of row 0 (NULL: nothing) to b, its text form
 * (hex, or escape when the server's bytea_output says so) decoded: 0, or
 * EINTERNAL. */
static int pg_column_bytes(const PGresult *res, int col, struct buf *b)
{
    const char *v = pg_text(res, 0, col);
    if (!v)
        return PAYMENT_STORE_OK;
    size_t len = 0;
    unsigned char *bytes = PQunescapeBytea((const unsigned char *)v, &len);
    if (!bytes)
        return PAYMENT_STORE_EINTERNAL; /* out of memory */
    int err = buf_append(b, bytes, len) == 0 ? PAYMENT_STORE_OK : PAYMENT_STORE_EINTERNAL;
    PQfreemem(bytes);
    return err;
}

/* Copies text column col of row 0 into out (NULL as ""), cut to fit. */
static void pg_column_str(const PGresult *res, int col, char *out, size_t len)
{
    const char *v = pg_text(res, 0, col);
    snprintf(out, len, "%s", v ? v : "");
}

int pg_idem_get(payment_store *s, const char *scope, const char *key,
                struct payment_idem_found *out)
{
    struct pg_params p;
    pg_params_init(&p);
    pg_param_text(&p, scope);
    pg_param_text(&p, key);
    PGresult *res;
    int err = pg_read((struct pg_store *)s, PG_SQL_IDEM, &p, &res);
    if (err != PAYMENT_STORE_OK)
        return err;
    if (PQntuples(res) == 0) {
        err = PAYMENT_STORE_ENOTFOUND;
    } else {
        pg_column_str(res, 0, out->fingerprint, sizeof out->fingerprint);
        pg_column_str(res, 3, out->etag, sizeof out->etag);
        out->status = (int)pg_int(res, 0, 1);
        err = pg_column_buf(res, 2, &out->location);
        if (err == PAYMENT_STORE_OK)
            err = pg_column_bytes(res, 4, &out->body);
    }
    PQclear(res);
    return err;
}

int pg_op_get(payment_store *s, const char *op_id, struct payment_op_found *out)
{
    struct pg_params p;
    pg_params_init(&p);
    pg_param_text(&p, op_id);
    PGresult *res;
    int err = pg_read((struct pg_store *)s, PG_SQL_OP, &p, &res);
    if (err != PAYMENT_STORE_OK)
        return err;
    if (PQntuples(res) == 0) {
        err = PAYMENT_STORE_ENOTFOUND;
    } else {
        pg_column_str(res, 0, out->status, sizeof out->status);
        pg_column_str(res, 1, out->error_code, sizeof out->error_code);
        pg_column_str(res, 2, out->message, sizeof out->message);
        pg_column_str(res, 3, out->payment_id, sizeof out->payment_id);
        pg_column_str(res, 4, out->organisation_id, sizeof out->organisation_id);
        out->version = pg_int(res, 0, 5);
        out->partition = (uint32_t)pg_int(res, 0, 6);
        out->seq = (uint64_t)pg_int(res, 0, 7);
        pg_column_str(res, 8, out->fingerprint, sizeof out->fingerprint);
    }
    PQclear(res);
    return err;
}

int pg_partition_get(payment_store *s, uint32_t partition, uint64_t *last_seq, uint64_t *fence)
{
    *last_seq = 0;
    *fence = 0;
    struct pg_params p;
    pg_params_init(&p);
    pg_param_int(&p, partition);
    PGresult *res;
    int err = pg_read((struct pg_store *)s, PG_SQL_PARTITION, &p, &res);
    if (err != PAYMENT_STORE_OK)
        return err;
    if (PQntuples(res) == 1) { /* none: the partition was never applied to */
        *last_seq = (uint64_t)pg_int(res, 0, 0);
        *fence = (uint64_t)pg_int(res, 0, 1);
    }
    PQclear(res);
    return PAYMENT_STORE_OK;
}
