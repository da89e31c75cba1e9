/* The PostgreSQL store's write lock held by someone else, on the real
 * server PAYMENTD_TEST_PG_URI names (skipped when unset): store_pg.h's
 * promise that a write waits for the write lock (feed_meta 'pos' FOR
 * UPDATE) at most lock_timeout (PG_WRITER_SESSION, 5 s) and is then
 * answered EUNAVAILABLE (a 503), never left waiting without end behind a
 * stalled process.
 *
 * Another libpq session plays that process: BEGIN, then the lock.  In the
 * first case it never lets go until the store has answered: the create must
 * be answered EUNAVAILABLE after about 5 s (not at once: it did wait), the
 * payment must not be stored, reads must not wait for the lock, and once
 * the session commits creates succeed again on the same store.  In the
 * second the session lets go after a second: the create waits for it and
 * succeeds.  A write still unanswered well past the timeout fails the case
 * (the session then lets go so that the store can close); alarm() ends a
 * process hung anyway. */
#include "payment/store.h"

#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "store_fixture.h"
#include "store_waiter.h"
#include "test.h"

/* The write lock as a batch of the store takes it (store_pg_batch.c). */
#define LOCK_SQL "SELECT value FROM feed_meta WHERE key = 'pos' FOR UPDATE"
/* The store's lock_timeout, and the bounds its answer must come within. */
#define LOCK_TIMEOUT_US 5000000
#define ANSWER_AFTER_US (LOCK_TIMEOUT_US - 500000)
#define ANSWER_WITHIN_US 8000000
/* A write unanswered this long is reported as hanging. */
#define HANG_US 15000000
/* Seconds after which the whole process is ended as hung. */
#define HARD_TIMEOUT_S 120

/* A row and the document it borrows. */
struct pay {
    struct payment_row row;
    char doc[128];
};

/* Payment n at version 0. */
static void pay_init(struct pay *p, int n)
{
    memset(p, 0, sizeof *p);
    snprintf(p->row.id, sizeof p->row.id, "00000000-0000-4000-8000-%012d", n);
    snprintf(p->row.organisation_id, sizeof p->row.organisation_id,
             "0b0b0b0b-0000-4000-8000-000000000001");
    p->row.created_ms = p->row.modified_ms = clock_now_ms();
    p->row.currency = "GBP";
    int len = snprintf(p->doc, sizeof p->doc, "{\"id\":\"%s\",\"v\":0}", p->row.id);
    p->row.doc = p->doc;
    p->row.doc_len = (size_t)len;
}

/* Waits at most within_us for w's writes: 1 when all were reported (w is
 * then released), 0 when not (w stays live: wait again with waiter_wait). */
static int waiter_wait_for(struct waiter *w, int64_t within_us)
{
    struct timespec until;
    CHECK_INT(clock_gettime(CLOCK_REALTIME, &until), 0);
    until.tv_sec += (time_t)(within_us / 1000000);
    until.tv_nsec += (long)(within_us % 1000000) * 1000;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->mu);
    int rc = 0;
    while (w->pending > 0 && rc == 0)
        rc = pthread_cond_timedwait(&w->cv, &w->mu, &until);
    CHECK(rc == 0 || rc == ETIMEDOUT);
    int done = w->pending == 0;
    pthread_mutex_unlock(&w->mu);
    if (done)
        waiter_wait(w); /* returns at once; releases w */
    return done;
}

/* Runs sql on c: whether it succeeded (its message printed otherwise). */
static int pq_run(PGconn *c, const char *sql)
{
    PGresult *res = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(res);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "  %s: %s", sql, PQresultErrorMessage(res));
    PQclear(res);
    return ok;
}

/* A session of its own on the store's database holding the write lock, or
 * NULL (a failed check). */
static PGconn *lock_holder(const char *uri)
{
    PGconn *c = PQconnectdb(uri);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "  connect: %s", c ? PQerrorMessage(c) : "out of memory\n");
        CHECK(!"a session of its own");
        PQfinish(c);
        return NULL;
    }
    int ok = pq_run(c, "BEGIN") && pq_run(c, LOCK_SQL);
    CHECK(ok);
    if (!ok) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

static void lock_release(PGconn *c)
{
    CHECK(pq_run(c, "COMMIT"));
    PQfinish(c);
}

/* Whether payment id is stored, read while the write lock may be held. */
static int stored(payment_store *s, const char *id)
{
    struct buf doc = BUF_INIT;
    int64_t version = -1;
    int rc = payment_store_get(s, id, &doc, &version);
    buf_free(&doc);
    CHECK(rc == PAYMENT_STORE_OK || rc == PAYMENT_STORE_ENOTFOUND);
    return rc == PAYMENT_STORE_OK;
}

static int sync_create(payment_store *s, const struct pay *p)
{
    struct waiter w;
    waiter_init(&w, 1);
    payment_store_create(s, &p->row, NULL, NULL, waiter_done, &w);
    waiter_wait(&w);
    return w.err;
}

/* ---- the lock held until the store answers ---------------------------------- */

static void case_lock_held_gives_unavailable(struct fixture *fx)
{
    payment_store *s = fx->s;
    struct pay a, b, c;
    pay_init(&a, 1);
    pay_init(&b, 2);
    pay_init(&c, 3);
    CHECK_INT(sync_create(s, &a), PAYMENT_STORE_OK); /* the writer is connected */

    PGconn *holder = lock_holder(fx->uri);
    if (!holder)
        return;
    struct waiter w;
    waiter_init(&w, 1);
    int64_t t0 = clock_mono_us();
    payment_store_create(s, &b.row, NULL, NULL, waiter_done, &w);
    /* Reads take no lock: answered while the write waits. */
    int64_t r0 = clock_mono_us();
    CHECK(stored(s, a.row.id));
    CHECK(clock_mono_us() - r0 < 1000000);
    int answered = waiter_wait_for(&w, HANG_US);
    int64_t took = clock_mono_us() - t0;
    if (!answered) {
        fprintf(stderr, "  a create behind the held write lock unanswered after %.1f s\n",
                (double)took / 1e6);
        CHECK(answered);
        lock_release(holder); /* lets the write through, so that the store closes */
        waiter_wait(&w);
        return;
    }
    fprintf(stderr, "  a create behind the held write lock answered %d after %.2f s\n", w.err,
            (double)took / 1e6);
    CHECK_INT(w.err, PAYMENT_STORE_EUNAVAILABLE);
    CHECK(took >= ANSWER_AFTER_US);  /* it waited for the lock, as long as allowed */
    CHECK(took <= ANSWER_WITHIN_US); /* and no longer */
    CHECK(!stored(s, b.row.id));

    lock_release(holder);
    CHECK_INT(sync_create(s, &c), PAYMENT_STORE_OK);
    CHECK_INT(sync_create(s, &b), PAYMENT_STORE_OK); /* the refused one, again */
    CHECK(stored(s, b.row.id));
    CHECK(stored(s, c.row.id));
}

/* ---- the lock let go within the timeout -------------------------------------- */

struct late_release {
    PGconn *holder;
    useconds_t after_us;
};

static void *late_release_main(void *arg)
{
    struct late_release *l = arg;
    usleep(l->after_us);
    lock_release(l->holder);
    return NULL;
}

static void case_lock_released_in_time_lets_the_write_through(struct fixture *fx)
{
    payment_store *s = fx->s;
    struct pay a, b;
    pay_init(&a, 1);
    pay_init(&b, 2);
    CHECK_INT(sync_create(s, &a), PAYMENT_STORE_OK);

    struct late_release l = {lock_holder(fx->uri), 1000000};
    if (!l.holder)
        return;
    pthread_t t;
    CHECK_INT(pthread_create(&t, NULL, late_release_main, &l), 0);
    int64_t t0 = clock_mono_us();
    CHECK_INT(sync_create(s, &b), PAYMENT_STORE_OK);
    int64_t took = clock_mono_us() - t0;
    CHECK_INT(pthread_join(t, NULL), 0);
    CHECK(took >= 900000);            /* it waited for the lock */
    CHECK(took < LOCK_TIMEOUT_US);    /* and went on once it was free */
    CHECK(stored(s, b.row.id));
}

static void pg_lock_held_gives_unavailable(void)
{
    alarm(HARD_TIMEOUT_S);
    run_on_pg(case_lock_held_gives_unavailable);
    alarm(0);
}

static void pg_lock_released_in_time(void)
{
    alarm(HARD_TIMEOUT_S);
    run_on_pg(case_lock_released_in_time_lets_the_write_through);
    alarm(0);
}

TEST_MAIN(TEST(pg_lock_held_gives_unavailable), TEST(pg_lock_released_in_time))
