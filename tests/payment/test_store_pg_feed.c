/* The PostgreSQL store's change feed across processes, on the real server
 * PAYMENTD_TEST_PG_URI names (skipped when unset): store_pg.h's promise
 * that positions grow in commit order whichever process commits, because
 * every write transaction takes the write lock (feed_meta 'pos' FOR UPDATE)
 * before the writer hands out positions.
 *
 * Two stores are opened on one schema, as two processes would (each its own
 * writer thread and connections: their writes are ordered by the server
 * only).  In the first case four threads write through both while a reader
 * follows the feed with after_pos cursors, through both too: it must see
 * every acknowledged write's event exactly once, positions strictly
 * increasing, each payment's versions in order, none skipped.  In the second
 * a transaction of another client holds the write lock with an event
 * inserted: a reader's cursor stays below it, the other store's write waits
 * for it and comes after it. */
#include "payment/store.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "event_list.h"
#include "store_fixture.h"
#include "store_waiter.h"
#include "test.h"

/* The longest a case may take before SIGALRM ends the run. */
#define HARD_TIMEOUT_S 300

/* ---- writes --------------------------------------------------------------- */

/* A write's result, once it is reported. */
static int wait_write(struct waiter *w)
{
    waiter_wait(w);
    return w->err;
}

/* A row and the document it borrows. */
struct pay {
    struct payment_row row;
    char doc[128];
};

/* Payment n of organisation org at version 0. */
static void pay_init(struct pay *p, int n, int org)
{
    memset(p, 0, sizeof *p);
    snprintf(p->row.id, sizeof p->row.id, "00000000-0000-4000-8000-%012d", n);
    snprintf(p->row.organisation_id, sizeof p->row.organisation_id,
             "0a0a0a0a-0000-4000-8000-%012d", org);
    p->row.created_ms = p->row.modified_ms = clock_now_ms();
    p->row.currency = "GBP";
    int len = snprintf(p->doc, sizeof p->doc, "{\"id\":\"%s\",\"v\":0}", p->row.id);
    p->row.doc = p->doc;
    p->row.doc_len = (size_t)len;
}

/* The next version of p. */
static void pay_next(struct pay *p)
{
    p->row.version++;
    p->row.modified_ms = clock_now_ms();
    int len = snprintf(p->doc, sizeof p->doc, "{\"id\":\"%s\",\"v\":%lld}", p->row.id,
                       (long long)p->row.version);
    p->row.doc_len = (size_t)len;
}

static int sync_create(payment_store *s, const struct pay *p)
{
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_create(s, &p->row, NULL, NULL, waiter_done, &w);
    return wait_write(&w);
}

static int sync_update(payment_store *s, const struct pay *p)
{
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_update(s, &p->row, p->row.version - 1, NULL, NULL, waiter_done, &w);
    return wait_write(&w);
}

static int sync_delete(payment_store *s, const struct pay *p)
{
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_delete(s, p->row.id, p->row.version, NULL, NULL, waiter_done, &w);
    return wait_write(&w);
}

/* Every event of every organisation above after, at most limit. */
static void query_all(struct payment_event_query *q, int64_t after, uint32_t limit)
{
    memset(q, 0, sizeof *q);
    q->after_pos = after;
    q->limit = limit;
    q->all_orgs = 1;
    q->from_ms = INT64_MIN;
    q->to_ms = INT64_MAX;
}

/* The payment number of a test payment's id. */
static int pay_number(const char *id)
{
    return atoi(id + 24);
}

/* ---- two stores, writers and a reader ------------------------------------ */

#define XP_THREADS 4
#define XP_PAYMENTS 40 /* per thread: created, updated twice, one in three deleted */
#define XP_TOTAL (XP_THREADS * XP_PAYMENTS)
#define XP_VERSIONS 4  /* versions a payment reaches at most: 0..3 */

/* What the writers had acknowledged: per payment, its versions written. */
struct xp_acked {
    int versions[XP_TOTAL + 1]; /* versions 0..n-1 acknowledged */
};

struct xp_writer {
    payment_store *stores[2];
    int t;                      /* thread number */
    struct xp_acked *acked;     /* this thread's payments only */
    int failed;
};

/* Each write of a payment goes through the other store than the one
 * before: both stores' writer threads contend for the write lock. */
static void *xp_writer_main(void *arg)
{
    struct xp_writer *c = arg;
    for (int j = 0; j < XP_PAYMENTS; j++) {
        int n = 1 + c->t * XP_PAYMENTS + j;
        struct pay p;
        pay_init(&p, n, c->t + 1);
        int err = sync_create(c->stores[j % 2], &p);
        for (int v = 1; err == PAYMENT_STORE_OK && v <= 2; v++) {
            c->acked->versions[n]++;
            pay_next(&p);
            err = sync_update(c->stores[(j + v) % 2], &p);
        }
        if (err == PAYMENT_STORE_OK) {
            c->acked->versions[n]++;
            if (j % 3 == 0) {
                err = sync_delete(c->stores[(j + 1) % 2], &p);
                c->acked->versions[n] += err == PAYMENT_STORE_OK;
            }
        }
        if (err != PAYMENT_STORE_OK && c->failed++ < 3)
            fprintf(stderr, "  write of payment %d failed: %s\n", n, payment_store_strerror(err));
    }
    return NULL;
}

/* A reader following the feed from 0 through both stores, page after page:
 * what it saw, and what it saw wrong. */
struct xp_reader {
    payment_store *stores[2];
    _Atomic int writers_done;
    int seen[XP_TOTAL + 1][XP_VERSIONS]; /* times each version's event was read */
    int64_t next_version[XP_TOTAL + 1];  /* the version expected next */
    int64_t cursor;
    long events, pages, unordered, foreign;
};

/* Reads the page after the reader's cursor; returns the events read, or -1
 * when the read failed. */
static long xp_read(struct xp_reader *r, struct seen_list *l)
{
    struct payment_event_query q;
    query_all(&q, r->cursor, 1 + (uint32_t)(r->pages % 13));
    seen_reset(l);
    int64_t next = -1;
    int err = payment_store_events(r->stores[r->pages % 2], &q, seen_add, l, &next);
    r->pages++;
    CHECK_INT(err, PAYMENT_STORE_OK);
    if (err != PAYMENT_STORE_OK)
        return -1;
    for (size_t i = 0; i < l->n; i++) {
        const struct seen *e = &l->ev[i];
        int n = pay_number(e->pid);
        if (n < 1 || n > XP_TOTAL || e->version < 0 || e->version >= XP_VERSIONS) {
            r->foreign++;
            continue;
        }
        int ok = e->pos > r->cursor && e->version == r->next_version[n];
        if (!ok && r->unordered++ < 5)
            fprintf(stderr, "  read payment %d v%lld at %lld after %lld (expected v%lld)\n", n,
                    (long long)e->version, (long long)e->pos, (long long)r->cursor,
                    (long long)r->next_version[n]);
        r->seen[n][e->version]++;
        r->next_version[n] = e->version + 1;
        r->cursor = e->pos;
        r->events++;
    }
    CHECK(next >= r->cursor);
    r->cursor = next > r->cursor ? next : r->cursor;
    return (long)l->n;
}

static void *xp_reader_main(void *arg)
{
    struct xp_reader *r = arg;
    struct seen_list l = {0};
    for (;;) {
        int done = atomic_load(&r->writers_done);
        long n = xp_read(r, &l);
        if (n < 0 || (done && n == 0))
            break; /* read to the end after the last write */
        if (n == 0)
            usleep(200);
    }
    seen_free(&l);
    return NULL;
}

/* Every acknowledged write's event read exactly once, nothing else. */
static void xp_check(const struct xp_reader *r, const struct xp_acked *acked)
{
    long want = 0, missing = 0, twice = 0, unacked = 0;
    for (int n = 1; n <= XP_TOTAL; n++) {
        want += acked->versions[n];
        for (int v = 0; v < XP_VERSIONS; v++) {
            int expected = v < acked->versions[n], seen = r->seen[n][v];
            if (seen < expected && missing++ < 5)
                fprintf(stderr, "  payment %d v%d acknowledged, never read\n", n, v);
            if (seen > 1 && twice++ < 5)
                fprintf(stderr, "  payment %d v%d read %d times\n", n, v, seen);
            if (seen == 1 && !expected && unacked++ < 5)
                fprintf(stderr, "  payment %d v%d read, never acknowledged\n", n, v);
        }
    }
    CHECK_INT(missing, 0);
    CHECK_INT(twice, 0);
    CHECK_INT(unacked, 0);
    CHECK_INT(r->unordered, 0);
    CHECK_INT(r->foreign, 0);
    CHECK_INT(r->events, want);
    fprintf(stderr, "  %ld events followed in %ld reads\n", r->events, r->pages);
}

static void case_two_stores_feed(struct fixture *fx)
{
    payment_store *other = NULL;
    char err[256] = "";
    CHECK_INT(payment_store_open(fx->uri, fx->flags, &other, err, sizeof err), PAYMENT_STORE_OK);
    if (!other) {
        fprintf(stderr, "  open %s: %s\n", fx->uri, err);
        return;
    }
    struct xp_acked *acked = calloc(1, sizeof *acked);
    struct xp_reader *r = calloc(1, sizeof *r);
    CHECK(acked && r);
    if (!acked || !r) {
        free(acked);
        free(r);
        payment_store_close(other);
        return;
    }
    r->stores[0] = fx->s;
    r->stores[1] = other;
    atomic_init(&r->writers_done, 0);
    pthread_t rt, wt[XP_THREADS];
    struct xp_writer ws[XP_THREADS];
    CHECK_INT(pthread_create(&rt, NULL, xp_reader_main, r), 0);
    for (int t = 0; t < XP_THREADS; t++) {
        ws[t] = (struct xp_writer){.stores = {fx->s, other}, .t = t, .acked = acked};
        CHECK_INT(pthread_create(&wt[t], NULL, xp_writer_main, &ws[t]), 0);
    }
    for (int t = 0; t < XP_THREADS; t++) {
        CHECK_INT(pthread_join(wt[t], NULL), 0);
        CHECK_INT(ws[t].failed, 0);
    }
    atomic_store(&r->writers_done, 1);
    CHECK_INT(pthread_join(rt, NULL), 0);
    xp_check(r, acked);
    free(r);
    free(acked);
    payment_store_close(other);
}

/* ---- another client's open transaction ------------------------------------ */

/* Runs sql on c: whether it succeeded (its message printed otherwise);
 * *value gets the first row's first column when there is one. */
static int pq_run(PGconn *c, const char *sql, long long *value)
{
    PGresult *res = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(res);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "  %s: %s", sql, PQresultErrorMessage(res));
    if (ok && value && PQntuples(res) > 0)
        *value = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    return ok;
}

/* An event a transaction of another client has inserted under the write
 * lock and not committed: a reader's cursor stays below it (next_pos) and
 * finds it once it commits; another store's write waits for the lock, then
 * comes after it. */
static void case_open_transaction(struct fixture *fx)
{
    payment_store *s = fx->s, *other = NULL;
    char err[256] = "";
    CHECK_INT(payment_store_open(fx->uri, fx->flags, &other, err, sizeof err), PAYMENT_STORE_OK);
    if (!other)
        return;
    struct pay a, b;
    pay_init(&a, 1, 1);
    CHECK_INT(sync_create(s, &a), PAYMENT_STORE_OK);
    struct seen_list l = {0};
    struct payment_event_query q;
    query_all(&q, 0, 10);
    int64_t cursor = -1;
    CHECK_INT(payment_store_events(s, &q, seen_add, &l, &cursor), PAYMENT_STORE_OK);
    CHECK_INT(l.n, 1);

    PGconn *c = PQconnectdb(fx->uri);
    CHECK(PQstatus(c) == CONNECTION_OK);
    long long open_pos = -1;
    CHECK(pq_run(c, "BEGIN", NULL));
    CHECK(pq_run(c, "SELECT value + 1 FROM feed_meta WHERE key = 'pos' FOR UPDATE", &open_pos));
    CHECK(pq_run(c, "INSERT INTO events (pos, id, payment_id, organisation_id, version, type,"
                    " occurred_ms, doc) SELECT value + 1, '01890000-0000-7000-8000-0000000000ff',"
                    " '00000000-0000-4000-8000-000000000077',"
                    " '0a0a0a0a-0000-4000-8000-000000000001', 0, 1, 1500, '{}'"
                    " FROM feed_meta WHERE key = 'pos'", NULL));
    CHECK(pq_run(c, "UPDATE feed_meta SET value = value + 1 WHERE key = 'pos'", NULL));
    CHECK(open_pos > cursor);

    /* The other store's write waits for the open transaction. */
    pay_init(&b, 2, 1);
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_create(other, &b.row, NULL, NULL, waiter_done, &w);
    for (int i = 0; i < 20; i++) {
        seen_reset(&l);
        query_all(&q, cursor, 10);
        int64_t next = -1;
        CHECK_INT(payment_store_events(s, &q, seen_add, &l, &next), PAYMENT_STORE_OK);
        CHECK_INT(l.n, 0);
        CHECK(next < open_pos);
        cursor = next;
        usleep(10000);
    }
    pthread_mutex_lock(&w.mu);
    CHECK_INT(w.pending, 1); /* still waiting for the lock */
    pthread_mutex_unlock(&w.mu);
    CHECK(pq_run(c, "COMMIT", NULL));
    PQfinish(c);
    CHECK_INT(wait_write(&w), PAYMENT_STORE_OK);

    seen_reset(&l);
    query_all(&q, cursor, 10);
    int64_t next = -1;
    CHECK_INT(payment_store_events(s, &q, seen_add, &l, &next), PAYMENT_STORE_OK);
    CHECK_INT(l.n, 2);
    if (l.n == 2) {
        CHECK_INT(l.ev[0].pos, open_pos);
        CHECK_STR(l.ev[1].pid, b.row.id);
        CHECK(l.ev[1].pos > open_pos);
    }
    seen_free(&l);
    payment_store_close(other);
}

static void pg_two_stores_feed(void)
{
    alarm(HARD_TIMEOUT_S); /* a store that hangs fails the run instead of holding it */
    run_on_pg(case_two_stores_feed);
    alarm(0);
}

static void pg_open_transaction(void)
{
    alarm(HARD_TIMEOUT_S); /* a store that hangs fails the run instead of holding it */
    run_on_pg(case_open_transaction);
    alarm(0);
}

TEST_MAIN(TEST(pg_two_stores_feed), TEST(pg_open_transaction))
