/* store_pg_events_upkeep: the events' work between the PostgreSQL store's
 * batches, on the writer thread (store_pg_events.c describes the events):
 * telling the subscriber of other processes' commits, by reading
 * feed_meta 'pos' every PG_EVENTS_POLL_US, and the retention purge, one
 * small transaction per turn under the write lock, moving the feed's floor
 * past the events that leave the feed and deleting those that leave the
 * histories.
 *
 * Threads: pg_events_subscribe and pg_events_purge from any thread (they
 * set what the writer reads under st->mu); the poll and the purge's turn on
 * the writer thread, on st->wconn. */
#include <assert.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "payment/store_pg.h"

/* ---- the subscriber ----------------------------------------------------- */

void pg_events_subscribe(payment_store *s, void (*fn)(void *arg), void *arg)
{
    struct pg_store *st = (struct pg_store *)s;
    store_lock(&st->mu);
    st->ev_fn = fn;
    st->ev_arg = arg;
    if (pthread_cond_signal(&st->wake) != 0)
        abort();
    store_unlock(&st->mu);
}

static const char PG_SQL_FEED_END[] = "SELECT value FROM feed_meta WHERE key = 'pos'";

int64_t pg_events_poll(struct pg_store *st, void (*fn)(void *arg), void *arg)
{
    assert(fn);
    int64_t now = clock_mono_us();
    if (now < st->poll_next_us)
        return st->poll_next_us;
    PGresult *res = NULL;
    int64_t pos = -1;
    /* A failed poll (the server away) is tried again at the next. */
    if (pg_exec(&st->wconn, PG_SQL_FEED_END, NULL, &res) == PAYMENT_STORE_OK) {
        if (PQntuples(res) == 1)
            pos = pg_int(res, 0, 0);
        PQclear(res);
    }
    /* The first poll tells too: a commit may have come before it. */
    if (pos >= 0 && pos != st->seen_pos) {
        st->seen_pos = pos;
        fn(arg);
    }
    st->poll_next_us = now + PG_EVENTS_POLL_US;
    return st->poll_next_us;
}

/* ---- retention ---------------------------------------------------------- */

void pg_events_purge(payment_store *s, int64_t feed_before_ms, int64_t history_before_ms)
{
    struct pg_store *st = (struct pg_store *)s;
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

static const char PG_SQL_PURGE_LOCK[] = "SELECT value FROM feed_meta WHERE key = 'pos'"
                                        " FOR UPDATE";
static const char PG_SQL_FLOOR_GET[] = "SELECT value FROM feed_meta WHERE key = 'floor'";
static const char PG_SQL_FLOOR_PUT[] = "UPDATE feed_meta SET value = $1 WHERE key = 'floor'";
static const char PG_SQL_EVENTS_WALK[] = "SELECT pos, occurred_ms FROM events WHERE pos > $1"
                                         " ORDER BY pos LIMIT $2";
static const char PG_SQL_EVENTS_DELETE[] = "DELETE FROM events WHERE pos <= $1";

/* Runs sql with one integer parameter on the write connection, its rows
 * into *res (NULL: none wanted). */
static int pg_write_int(struct pg_store *st, const char *sql, int64_t v, PGresult **res)
{
    struct pg_params p;
    pg_params_init(&p);
    pg_param_int(&p, v);
    return pg_exec(&st->wconn, sql, &p, res);
}

/* Reads a one-value query (feed_meta's) into *value. */
static int pg_write_value(struct pg_store *st, const char *sql, int64_t *value)
{
    PGresult *res = NULL;
    int err = pg_exec(&st->wconn, sql, NULL, &res);
    if (err != PAYMENT_STORE_OK)
        return err;
    err = PQntuples(res) == 1 ? PAYMENT_STORE_OK : PAYMENT_STORE_EINTERNAL; /* the migration's */
    if (err == PAYMENT_STORE_OK)
        *value = pg_int(res, 0, 0);
    PQclear(res);
    return err;
}

/* The events above position after, oldest first, that occurred before
 * before_ms, up to the first that did not: *last is the last one's
 * position (after when none), *more set when the walk stopped at its
 * length with every event old. */
static int pg_events_walk(struct pg_store *st, int64_t after, int64_t before_ms, int64_t *last,
                          int *more)
{
    struct pg_params p;
    pg_params_init(&p);
    pg_param_int(&p, after);
    pg_param_int(&p, PG_PURGE_BATCH);
    PGresult *res = NULL;
    int err = pg_exec(&st->wconn, PG_SQL_EVENTS_WALK, &p, &res);
    *last = after;
    *more = 0;
    if (err != PAYMENT_STORE_OK)
        return err;
    int rows = PQntuples(res), n = 0;
    for (; n < rows && pg_int(res, n, 1) < before_ms; n++)
        *last = pg_int(res, n, 0);
    *more = n == PG_PURGE_BATCH;
    PQclear(res);
    return PAYMENT_STORE_OK;
}

/* The purge's work inside its transaction, the write lock taken. */
static int pg_events_purge_in(struct pg_store *st, int64_t feed_before_ms,
                              int64_t history_before_ms, int *more_feed, int *more_history)
{
    int64_t floor = 0;
    int err = pg_write_value(st, PG_SQL_FLOOR_GET, &floor);
    int64_t new_floor = floor;
    if (err == PAYMENT_STORE_OK && history_before_ms != INT64_MIN) {
        int64_t last = 0;
        err = pg_events_walk(st, 0, history_before_ms, &last, more_history);
        if (err == PAYMENT_STORE_OK && last > 0)
            err = pg_write_int(st, PG_SQL_EVENTS_DELETE, last, NULL);
        if (last > new_floor)
            new_floor = last;
    }
    if (err == PAYMENT_STORE_OK && feed_before_ms != INT64_MIN)
        err = pg_events_walk(st, new_floor, feed_before_ms, &new_floor, more_feed);
    if (err == PAYMENT_STORE_OK && new_floor != floor)
        err = pg_write_int(st, PG_SQL_FLOOR_PUT, new_floor, NULL);
    return err;
}

/* One try of a purge turn's transaction. */
static int pg_events_purge_once(struct pg_store *st, int64_t feed_before_ms,
                                int64_t history_before_ms, int *more_feed, int *more_history)
{
    int64_t end = 0;
    int err = pg_exec_plain(&st->wconn, "BEGIN");
    if (err == PAYMENT_STORE_OK)
        err = pg_write_value(st, PG_SQL_PURGE_LOCK, &end); /* the write lock (store_pg.h) */
    if (err == PAYMENT_STORE_OK)
        err = pg_events_purge_in(st, feed_before_ms, history_before_ms, more_feed,
                                 more_history);
    if (err == PAYMENT_STORE_OK)
        err = pg_exec_plain(&st->wconn, "COMMIT");
    if (err != PAYMENT_STORE_OK)
        (void)pg_exec_plain(&st->wconn, "ROLLBACK"); /* a lost connection rolled back already */
    return err;
}

void pg_events_purge_turn(struct pg_store *st, int64_t feed_before_ms, int64_t history_before_ms,
                          int *more_feed, int *more_history)
{
    int err = PG_ERETRY;
    for (int try = 0; try < PG_RETRY_MAX && err == PG_ERETRY; try++) {
        *more_feed = *more_history = 0;
        err = pg_events_purge_once(st, feed_before_ms, history_before_ms, more_feed,
                                   more_history);
    }
    if (err != PAYMENT_STORE_OK)
        *more_feed = *more_history = 0; /* the store cannot purge now: the next request tries */
}
