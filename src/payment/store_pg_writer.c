/* store_pg_writer: the write path of the PostgreSQL store.  One writer
 * thread owns the write connection.  Submitters queue an operation and
 * return; the writer takes everything queued (at most PG_BATCH_MAX),
 * applies it in one transaction (store_pg_batch.c), and only then reports
 * each result: group commit, with no timer.  Between batches it runs the
 * idempotency and events purges, one small transaction each per turn, and
 * polls for other processes' events while the events have a subscriber.
 * Owns the queue and the submissions, OP_CALL's wait included.
 *
 * Threads: submissions, pg_call, the purges' requests and the stats on any
 * thread, under st->mu for what they share with the writer; everything else
 * on the writer thread. */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/sync.h"
#include "payment/store_pg.h"

/* The purges: at most $2 of the oldest rows before $1, by the time index;
 * rows another process is purging are left to it. */
static const char pg_sql_idem_purge[] =
    "DELETE FROM idempotency WHERE (scope, key) IN (SELECT scope, key FROM idempotency"
    " WHERE created_ms < $1 ORDER BY created_ms LIMIT $2 FOR UPDATE SKIP LOCKED)";
static const char pg_sql_op_purge[] =
    "DELETE FROM operations WHERE op_id IN (SELECT op_id FROM operations"
    " WHERE applied_ms < $1 ORDER BY applied_ms LIMIT $2 FOR UPDATE SKIP LOCKED)";

/* Reports and frees a finished batch; called without the queue lock. */
static void pg_batch_report(struct pg_store *st, struct pg_op *batch)
{
    while (batch) {
        struct pg_op *op = batch;
        batch = op->next;
        atomic_fetch_add(&st->writes, 1);
        op->done(op->arg, op->err, op->err == PAYMENT_STORE_ECONFLICT ? op->current_version : -1,
                 op->kind == PG_OP_CREATE && op->err == PAYMENT_STORE_OK ? op->seq : 0);
        free(op);
    }
}

/* ---- the purges ----------------------------------------------------------- */

/* Deletes at most PG_PURGE_BATCH rows older than before_ms with sql (in a
 * transaction of its own): sets *more when it deleted that many. */
static int pg_purge_table(struct pg_store *st, const char *sql, int64_t before_ms, int *more)
{
    struct pg_params p;
    pg_params_init(&p);
    pg_param_int(&p, before_ms);
    pg_param_int(&p, PG_PURGE_BATCH);
    PGresult *res;
    int rc = pg_exec(&st->wconn, sql, &p, &res);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    if (strtol(PQcmdTuples(res), NULL, 10) >= PG_PURGE_BATCH)
        *more = 1;
    PQclear(res);
    return PAYMENT_STORE_OK;
}

/* One turn of the purge between two batches of writes: the oldest
 * idempotency records and operation outcomes before before_ms, a batch of
 * each.  It takes no write lock (it decides nothing a write reads).  The
 * purge is over when fewer were left, or when the store cannot purge now
 * (the next request tries again), unless a later cut-off was asked for
 * meanwhile. */
static void pg_purge_turn(struct pg_store *st, int64_t before_ms)
{
    int more = 0;
    int rc = pg_purge_table(st, pg_sql_idem_purge, before_ms, &more);
    if (rc == PAYMENT_STORE_OK)
        rc = pg_purge_table(st, pg_sql_op_purge, before_ms, &more);
    if (rc != PAYMENT_STORE_OK)
        more = 0;
    if (more)
        return;
    store_lock(&st->mu);
    if (st->purge_before_ms == before_ms)
        st->purge_before_ms = INT64_MIN;
    store_unlock(&st->mu);
}

/* One turn of the events' purge; a part that has no more to do is over,
 * unless a later cut-off was asked for meanwhile. */
static void pg_events_purge_step(struct pg_store *st, int64_t feed_before, int64_t history_before)
{
    int more_feed = 0, more_history = 0;
    pg_events_purge_turn(st, feed_before, history_before, &more_feed, &more_history);
    store_lock(&st->mu);
    if (!more_feed && st->feed_purge_ms == feed_before)
        st->feed_purge_ms = INT64_MIN;
    if (!more_history && st->history_purge_ms == history_before)
        st->history_purge_ms = INT64_MIN;
    store_unlock(&st->mu);
}

/* ---- the writer thread ---------------------------------------------------- */

/* What the writer takes for one turn, under the queue lock. */
struct pg_turn {
    struct pg_op *batch;       /* the writes queued first, at most PG_BATCH_MAX, or NULL */
    int64_t purge_before;      /* the idempotency purge's cut-off, or INT64_MIN */
    int64_t feed_before;       /* the events purge's cut-offs, or INT64_MIN */
    int64_t history_before;
    void (*ev_fn)(void *arg);  /* the events' subscriber, or NULL */
    void *ev_arg;
    int closing;
};

/* Whether the writer has something to do now; the caller holds st->mu. */
static int pg_writer_has_work(const struct pg_store *st)
{
    return st->head || st->purge_before_ms != INT64_MIN || st->feed_purge_ms != INT64_MIN ||
           st->history_purge_ms != INT64_MIN || st->closing;
}

/* Waits, holding st->mu, for work, or with a subscriber at most until its
 * next poll is due.  st->wake counts on CLOCK_MONOTONIC. */
static void pg_writer_wait(struct pg_store *st)
{
    while (!pg_writer_has_work(st)) {
        if (!st->ev_fn) {
            sync_wait(&st->wake, &st->mu);
            continue;
        }
        int64_t now = clock_mono_us();
        if (now >= st->poll_next_us)
            return;
        struct timespec until = sync_deadline_in_us(st->poll_next_us - now);
        int rc = pthread_cond_timedwait(&st->wake, &st->mu, &until);
        if (rc == ETIMEDOUT)
            return;
        if (rc != 0)
            abort();
    }
}

/* Takes the first PG_BATCH_MAX queued writes off the queue (st->mu held). */
static struct pg_op *pg_queue_take(struct pg_store *st)
{
    struct pg_op *batch = st->head, *last = NULL;
    struct pg_op *op = batch;
    for (int n = 0; op && n < PG_BATCH_MAX; n++) {
        last = op;
        op = op->next;
    }
    st->head = op;
    if (!op)
        st->tail = NULL;
    if (last)
        last->next = NULL;
    return batch;
}

static void pg_writer_take(struct pg_store *st, struct pg_turn *t)
{
    store_lock(&st->mu);
    pg_writer_wait(st);
    t->batch = pg_queue_take(st);
    t->closing = st->closing;
    /* A purge is best effort: closing abandons it. */
    t->purge_before = st->closing ? INT64_MIN : st->purge_before_ms;
    t->feed_before = st->closing ? INT64_MIN : st->feed_purge_ms;
    t->history_before = st->closing ? INT64_MIN : st->history_purge_ms;
    t->ev_fn = st->ev_fn;
    t->ev_arg = st->ev_arg;
    store_unlock(&st->mu);
}

/* The writer thread: each turn applies the writes queued, in one
 * transaction, then one turn of a purge asked for, so that a write waits
 * for at most one small purge transaction, never for a whole purge.  With
 * a subscriber, it is told after each commit that holds events, and, every
 * PG_EVENTS_POLL_US, of other processes' commits. */
static void *pg_writer_main(void *arg)
{
    struct pg_store *st = arg;
    for (;;) {
        struct pg_turn t;
        pg_writer_take(st, &t);
        if (!t.batch && t.closing)
            return NULL; /* everything queued has been done */
        if (t.batch) {
            int events = pg_batch_run(st, t.batch);
            pg_batch_report(st, t.batch);
            if (events && t.ev_fn)
                t.ev_fn(t.ev_arg);
        }
        if (t.purge_before != INT64_MIN)
            pg_purge_turn(st, t.purge_before);
        if (t.feed_before != INT64_MIN || t.history_before != INT64_MIN)
            pg_events_purge_step(st, t.feed_before, t.history_before);
        if (t.ev_fn)
            st->poll_next_us = pg_events_poll(st, t.ev_fn, t.ev_arg);
    }
}

/* ---- submission ----------------------------------------------------------- */

/* Reports op at once, before it reaches the writer. */
static void pg_op_reject(struct pg_op *op, int err)
{
    op->done(op->arg, err, -1, 0);
    free(op);
}

static void pg_submit(struct pg_store *st, struct pg_op *op)
{
    store_lock(&st->mu);
    if (st->closing) {
        store_unlock(&st->mu);
        pg_op_reject(op, PAYMENT_STORE_EUNAVAILABLE);
        return;
    }
    int was_empty = st->head == NULL;
    if (st->tail)
        st->tail->next = op;
    else
        st->head = op;
    st->tail = op;
    /* The writer waits only on an empty queue. */
    if (was_empty)
        sync_signal(&st->wake);
    store_unlock(&st->mu);
}

/* A new operation, or NULL after reporting EINTERNAL (out of memory). */
static struct pg_op *pg_op_new(enum pg_op_kind kind, payment_store_done_fn done, void *arg)
{
    struct pg_op *op = calloc(1, sizeof *op);
    if (!op) {
        done(arg, PAYMENT_STORE_EINTERNAL, -1, 0);
        return NULL;
    }
    op->kind = kind;
    op->done = done;
    op->arg = arg;
    op->current_version = -1;
    op->expected_version = -1;
    return op;
}

void pg_create(payment_store *s, const struct payment_row *row, const struct payment_idem *idem,
               const struct payment_event_info *ev, payment_store_done_fn done, void *arg)
{
    struct pg_op *op = pg_op_new(PG_OP_CREATE, done, arg);
    if (!op)
        return;
    op->row = *row;
    op->idem = idem;
    op->ev = ev;
    pg_submit((struct pg_store *)s, op);
}

void pg_update(payment_store *s, const struct payment_row *row, int64_t expected_version,
               const struct payment_idem *idem, const struct payment_event_info *ev,
               payment_store_done_fn done, void *arg)
{
    struct pg_op *op = pg_op_new(PG_OP_UPDATE, done, arg);
    if (!op)
        return;
    op->row = *row;
    op->idem = idem;
    op->ev = ev;
    op->expected_version = expected_version;
    pg_submit((struct pg_store *)s, op);
}

void pg_remove(payment_store *s, const char *id, int64_t expected_version,
               const struct payment_idem *idem, const struct payment_event_info *ev,
               payment_store_done_fn done, void *arg)
{
    struct pg_op *op = pg_op_new(PG_OP_DELETE, done, arg);
    if (!op)
        return;
    op->idem = idem;
    op->ev = ev;
    size_t len = strlen(id);
    if (len > UUID_STR_LEN) {
        pg_op_reject(op, PAYMENT_STORE_ENOTFOUND); /* longer than any stored id */
        return;
    }
    memcpy(op->row.id, id, len + 1);
    op->expected_version = expected_version;
    pg_submit((struct pg_store *)s, op);
}

/* Queues a broker operation (store.c has checked it). */
void pg_apply(payment_store *s, const struct payment_apply *a, payment_store_done_fn done,
              void *arg)
{
    struct pg_op *op = pg_op_new(PG_OP_APPLY, done, arg);
    if (!op)
        return;
    op->apply = *a;
    op->idem = a->idem;
    op->ev = a->event;
    op->expected_version = a->expected_version;
    if (a->row)
        op->row = *a->row;
    if (a->kind == PAYMENT_APPLY_DELETE) {
        size_t len = strlen(a->payment_id);
        assert(len <= UUID_STR_LEN); /* store.c checked it */
        memcpy(op->row.id, a->payment_id, len + 1);
    }
    pg_submit((struct pg_store *)s, op);
}

/* What a submitter of an OP_CALL waits on. */
struct pg_call_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int reported; /* the operation was reported, under mu */
    int err;      /* its result */
};

/* The OP_CALL's done: wakes its submitter. */
static void pg_call_done(void *arg, int err, int64_t current_version, int64_t seq)
{
    (void)current_version;
    (void)seq;
    struct pg_call_wait *w = arg;
    sync_lock(&w->mu);
    w->err = err;
    w->reported = 1;
    sync_broadcast(&w->cv);
    sync_unlock(&w->mu);
}

int pg_call(struct pg_store *st, pg_call_fn fn, void *arg)
{
    assert(!st->writer_started || !pthread_equal(pthread_self(), st->writer));
    struct pg_call_wait w = {.reported = 0, .err = PAYMENT_STORE_EINTERNAL};
    if (pthread_mutex_init(&w.mu, NULL) != 0)
        return PAYMENT_STORE_EINTERNAL;
    if (pthread_cond_init(&w.cv, NULL) != 0) {
        if (pthread_mutex_destroy(&w.mu) != 0)
            abort(); /* initialised and unlocked */
        return PAYMENT_STORE_EINTERNAL;
    }
    struct pg_op *op = pg_op_new(PG_OP_CALL, pg_call_done, &w);
    if (op) { /* else reported already */
        op->call = fn;
        op->call_arg = arg;
        pg_submit(st, op);
    }
    sync_lock(&w.mu);
    while (!w.reported)
        sync_wait(&w.cv, &w.mu);
    sync_unlock(&w.mu);
    if (pthread_cond_destroy(&w.cv) != 0 || pthread_mutex_destroy(&w.mu) != 0)
        abort(); /* no thread waits on them any more */
    return w.err;
}

/* Asks the writer thread to purge, a batch per turn between its writes.
 * A purge asked for while one runs moves its cut-off later, never earlier. */
void pg_idem_purge(payment_store *s, int64_t before_ms)
{
    struct pg_store *st = (struct pg_store *)s;
    store_lock(&st->mu);
    if (!st->closing && before_ms > st->purge_before_ms) {
        st->purge_before_ms = before_ms;
        sync_signal(&st->wake);
    }
    store_unlock(&st->mu);
}

void pg_stats(payment_store *s, struct payment_store_stats *out)
{
    struct pg_store *st = (struct pg_store *)s;
    out->commits = atomic_load(&st->commits);
    out->writes = atomic_load(&st->writes);
    out->batches = &st->batches;
    out->checkpoints = 0;
}

/* Starts the writer with every signal blocked: signals are the main thread's. */
int pg_writer_start(struct pg_store *st)
{
    assert(!st->writer_started);
    sigset_t all, old;
    if (sigfillset(&all) != 0 || pthread_sigmask(SIG_BLOCK, &all, &old) != 0)
        return -1;
    int rc = pthread_create(&st->writer, NULL, pg_writer_main, st);
    if (pthread_sigmask(SIG_SETMASK, &old, NULL) != 0)
        abort(); /* cannot fail with a mask it returned */
    if (rc != 0)
        return -1;
    st->writer_started = 1;
    return 0;
}

/* Refuses new writes, lets the writer finish every queued one, and joins it. */
void pg_writer_stop(struct pg_store *st)
{
    store_lock(&st->mu);
    st->closing = 1;
    sync_signal(&st->wake);
    store_unlock(&st->mu);
    if (!st->writer_started)
        return;
    sync_join(st->writer); /* not from the writer: close is never called from done */
    st->writer_started = 0;
}
