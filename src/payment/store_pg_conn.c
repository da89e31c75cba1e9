/* store_pg_conn: one libpq connection of the PostgreSQL store, the
 * statements prepared on it, their parameters, and what a failed result
 * means for the store.
 *
 * The URI is handed to libpq whole (every standard libpq option works),
 * after defaults of the store's own that the URI may override: a bounded
 * connection time, TCP keepalives and a TCP user timeout, so that a server
 * that went silent fails a call within seconds (EUNAVAILABLE: 503) instead
 * of holding a thread forever.  A lost connection is connected again by the
 * next call, at most once a second, so a server that is down costs each
 * call no wait at all between tries. */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/uri.h"
#include "payment/store_pg.h"

#define PG_RECONNECT_US 1000000 /* between two tries to connect */

void pg_uri_redact(const char *uri, char *out, size_t outlen)
{
    uri_redact(uri, out, outlen);
}

/* The first line of libpq's message for c, for errbuf. */
static void pg_conn_message(const struct pg_conn *c, char *errbuf, size_t errlen)
{
    char redacted[512];
    pg_uri_redact(c->uri, redacted, sizeof redacted);
    const char *msg = c->pg ? PQerrorMessage(c->pg) : "out of memory";
    size_t n = strcspn(msg, "\n");
    store_errf(errbuf, errlen, "store %s: %.*s", redacted, (int)(n > 300 ? 300 : n), msg);
}

/* The server's notices (NOTICE, WARNING: "relation exists, skipping") are
 * not the store's to print: libpq's default writes them to stderr. */
static void pg_notice_drop(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

int pg_conn_open(struct pg_conn *c, char *errbuf, size_t errlen)
{
    assert(c && c->uri);
    pg_conn_close(c);
    /* Defaults first: the URI, expanded in dbname's place, overrides them. */
    const char *const keys[] = {"connect_timeout", "tcp_user_timeout", "keepalives",
                                "keepalives_idle", "keepalives_interval", "keepalives_count",
                                "application_name", "dbname", NULL};
    const char *const values[] = {PG_CONNECT_TIMEOUT_S, PG_TCP_USER_TIMEOUT_MS, "1", "5", "2", "3",
                                  PG_APPLICATION_NAME, c->uri, NULL};
    c->pg = PQconnectdbParams(keys, values, 1);
    if (c->pg && PQstatus(c->pg) == CONNECTION_OK) {
        (void)PQsetNoticeProcessor(c->pg, pg_notice_drop, NULL); /* returns the one before */
        if (!c->session_sql)
            return PAYMENT_STORE_OK;
        PGresult *res = PQexec(c->pg, c->session_sql);
        int ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
        if (ok)
            return PAYMENT_STORE_OK;
    }
    pg_conn_message(c, errbuf, errlen);
    pg_conn_close(c);
    c->retry_after_us = clock_mono_us() + PG_RECONNECT_US;
    return PAYMENT_STORE_EUNAVAILABLE;
}

void pg_conn_close(struct pg_conn *c)
{
    if (c->pg)
        PQfinish(c->pg);
    c->pg = NULL;
    memset(c->sql, 0, sizeof c->sql); /* the server forgets them with the session */
}

/* Connects c when it is not (or no longer) connected: 0 or EUNAVAILABLE. */
static int pg_conn_ready(struct pg_conn *c)
{
    if (c->pg && PQstatus(c->pg) == CONNECTION_OK)
        return PAYMENT_STORE_OK;
    if (clock_mono_us() < c->retry_after_us)
        return PAYMENT_STORE_EUNAVAILABLE;
    return pg_conn_open(c, NULL, 0);
}

void pg_params_init(struct pg_params *p)
{
    p->n = 0;
}

static void pg_param_push(struct pg_params *p, const char *v, int len, int format)
{
    assert(p->n < PG_PARAMS_MAX);
    p->values[p->n] = v;
    p->lengths[p->n] = len;
    p->formats[p->n] = format;
    p->n++;
}

void pg_param_text(struct pg_params *p, const char *s)
{
    pg_param_push(p, s, 0, 0);
}

void pg_param_textn(struct pg_params *p, const char *s, size_t len)
{
    assert(len <= INT32_MAX);
    pg_param_push(p, s, (int)len, 1); /* binary: a text or bytea value's bytes as they are */
}

void pg_param_nonempty(struct pg_params *p, const char *s)
{
    pg_param_text(p, s && *s ? s : NULL);
}

void pg_param_int(struct pg_params *p, int64_t v)
{
    assert(p->n < PG_PARAMS_MAX);
    int n = snprintf(p->ints[p->n], sizeof p->ints[p->n], "%" PRId64, v);
    assert(n > 0 && (size_t)n < sizeof p->ints[p->n]);
    (void)n;
    pg_param_push(p, p->ints[p->n], 0, 0);
}

int pg_result_err(struct pg_conn *c, const PGresult *res)
{
    if (!res || !c->pg || PQstatus(c->pg) != CONNECTION_OK)
        return PAYMENT_STORE_EUNAVAILABLE;
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (!state)
        return PAYMENT_STORE_EUNAVAILABLE; /* libpq's own: the connection failed */
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)
        return PG_ERETRY;
    if (strcmp(state, "23505") == 0)
        return PAYMENT_STORE_EDUPLICATE;
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "53", 2) == 0 ||
        strcmp(state, "57P01") == 0 || strcmp(state, "57P02") == 0 ||
        strcmp(state, "57P03") == 0 || strcmp(state, "57014") == 0 ||
        strcmp(state, "25006") == 0 || strcmp(state, "55P03") == 0)
        return PAYMENT_STORE_EUNAVAILABLE;
    return PAYMENT_STORE_EINTERNAL;
}

/* The result of res (which it clears unless handed to *out). */
static int pg_result_take(struct pg_conn *c, PGresult *res, PGresult **out)
{
    ExecStatusType status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
        if (out)
            *out = res;
        else
            PQclear(res);
        return PAYMENT_STORE_OK;
    }
    int rc = pg_result_err(c, res);
    PQclear(res);
    return rc;
}

/* The slot of sql's statement on c, prepared now when it is not yet: its
 * index, -1 when the cache is full (run it unprepared), or a store error
 * (below -1) when it cannot be prepared. */
static int pg_stmt_slot(struct pg_conn *c, const char *sql, char name[16])
{
    int free_slot = -1;
    for (int i = 0; i < PG_STMT_CACHE; i++) {
        if (c->sql[i] == sql) {
            snprintf(name, 16, "p%d", i);
            return i;
        }
        if (!c->sql[i] && free_slot < 0)
            free_slot = i;
    }
    if (free_slot < 0)
        return -1;
    snprintf(name, 16, "p%d", free_slot);
    int rc = pg_result_take(c, PQprepare(c->pg, name, sql, 0, NULL), NULL);
    if (rc != PAYMENT_STORE_OK)
        return rc < -1 ? rc : PAYMENT_STORE_EINTERNAL;
    c->sql[free_slot] = sql;
    return free_slot;
}

int pg_exec(struct pg_conn *c, const char *sql, const struct pg_params *p, PGresult **res)
{
    assert(c && sql);
    if (res)
        *res = NULL;
    int rc = pg_conn_ready(c);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    char name[16];
    int slot = pg_stmt_slot(c, sql, name);
    if (slot < -1)
        return slot;
    int n = p ? p->n : 0;
    const char *const *values = p ? p->values : NULL;
    const int *lengths = p ? p->lengths : NULL;
    const int *formats = p ? p->formats : NULL;
    PGresult *r = slot >= 0 ? PQexecPrepared(c->pg, name, n, values, lengths, formats, 0)
                            : PQexecParams(c->pg, sql, n, NULL, values, lengths, formats, 0);
    return pg_result_take(c, r, res);
}

int pg_exec_plain(struct pg_conn *c, const char *sql)
{
    int rc = pg_conn_ready(c);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    return pg_result_take(c, PQexec(c->pg, sql), NULL);
}

int64_t pg_int(const PGresult *res, int r, int col)
{
    if (PQgetisnull(res, r, col))
        return 0;
    char *end;
    long long v = strtoll(PQgetvalue(res, r, col), &end, 10);
    assert(*end == '\0'); /* the server's own text of an integer column */
    return (int64_t)v;
}

const char *pg_text(const PGresult *res, int r, int col)
{
    return PQgetisnull(res, r, col) ? NULL : PQgetvalue(res, r, col);
}

size_t pg_len(const PGresult *res, int r, int col)
{
    return PQgetisnull(res, r, col) ? 0 : (size_t)PQgetlength(res, r, col);
}
