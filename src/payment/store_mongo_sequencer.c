/* store_mongo_sequencer: the thread that moves events from the payments'
 * outboxes into the feed by running rounds (store_mongo_round.c; why
 * they keep the feed's promise: store_mongo_events.c), the notes writers
 * leave it, the subscriber, and the test hook.
 *
 * Threads: one sequencer thread per store, started at open and stopped at
 * close.  Writers note the payments they wrote (mongo_seq_note, from the
 * store's worker threads, before reporting) and wake it; it runs a round
 * over those, and every MONGO_SEQ_POLL_MS reads the watermark (calling the
 * subscriber when another process moved it), and every MONGO_SEQ_ADOPT_MS
 * adopts outbox entries made longer ago than that (another process's that
 * its own sequencer has not taken, or entries a crash left) and moves the
 * watermark over positions a crash left filled.  It takes a client from the pool per
 * turn, with the store's timeouts, and holds no lock while it talks to
 * MongoDB: it blocks no writer and no reader.  A feed or history read
 * waits for the round over the writes noted before it (mongo_seq_flush),
 * at most the store's selection timeout.  Close lets the thread run one
 * last round over what was noted, then joins it.
 *
 * Errors: a round that fails leaves the entries where they are, to a later
 * note or adoption. */

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/sync.h"
#include "payment/store_mongo.h"

#define MONGO_SEQ_NOTED_MAX 1024   /* payments noted between rounds; more: adopt all */
#define MONGO_SEQ_POLL_MS 150      /* the watermark is read this often */
#define MONGO_SEQ_ADOPT_MS 1000    /* entries this old are anyone's; looked for this often */

struct mongo_seq {
    pthread_mutex_t mu;               /* guards every field below */
    pthread_cond_t wake;              /* the thread: work noted, or closing */
    pthread_cond_t flushed;           /* readers in mongo_seq_flush: a round ended */
    pthread_t thread;
    int started;                      /* thread is running, to join */
    int closing;                      /* the store is closing: last round, then exit */
    char ids[MONGO_SEQ_NOTED_MAX][UUID_STR_LEN + 1]; /* payments written since the last round */
    size_t n_ids;
    int overflow;                     /* more were noted than ids holds */
    uint64_t noted;                   /* notes made */
    uint64_t done;                    /* notes whose round has run */
    void (*fn)(void *arg);            /* the subscriber, or NULL */
    void *fn_arg;
    mongo_seq_hook_fn hook;           /* tests: a crash between steps, or NULL */
    void *hook_arg;
    int64_t wm;                       /* the watermark as this thread last saw it */
};

/* Whether the test hook stops the round at stage (a crash there). */
int mongo_seq_crashes(struct mongo_store *st, enum mongo_seq_stage stage)
{
    struct mongo_seq *q = st->seq;
    sync_lock(&q->mu);
    mongo_seq_hook_fn hook = q->hook;
    void *arg = q->hook_arg;
    sync_unlock(&q->mu);
    return hook && hook(arg, stage);
}

/* Runs rounds over the outboxes of ids[0..n) (their entries made up to
 * cutoff), then calls the subscriber when the watermark moved.  Returns 0
 * or a store error. */
int mongo_seq_stamp_ids(struct mongo_store *st, mongoc_client_t *client, const char *const *ids,
                        size_t n, int64_t cutoff)
{
    int raised = 0;
    int err = mongo_round_ids(st, client, ids, n, cutoff, &raised);
    if (raised)
        mongo_seq_notify(st);
    return err;
}

/* ---- the thread ------------------------------------------------------------ */

/* Calls the subscriber, if any. */
void mongo_seq_notify(struct mongo_store *st)
{
    struct mongo_seq *q = st->seq;
    sync_lock(&q->mu);
    void (*fn)(void *) = q->fn;
    void *arg = q->fn_arg;
    sync_unlock(&q->mu);
    if (fn)
        fn(arg);
}

/* The poll: the watermark read (the subscriber called when it moved), and
 * when adopt is set, old entries adopted and wm moved over what a crash
 * left filled. */
static void mongo_seq_poll(struct mongo_store *st, mongoc_client_t *client, int adopt)
{
    struct mongo_feed feed;
    int raised = 0;
    int err = mongo_feed_get(st, client, 1, &feed);
    if (err == PAYMENT_STORE_OK && adopt) {
        err = mongo_round_adopt(st, client, mongo_wall_us() - MONGO_SEQ_ADOPT_MS * 1000LL,
                                &raised);
        if (err == PAYMENT_STORE_OK)
            (void)mongo_round_raise(st, client, &feed.wm, &raised);
    }
    struct mongo_seq *q = st->seq;
    sync_lock(&q->mu);
    raised |= err == PAYMENT_STORE_OK && feed.wm > q->wm;
    if (err == PAYMENT_STORE_OK && feed.wm > q->wm)
        q->wm = feed.wm;
    sync_unlock(&q->mu);
    if (raised)
        mongo_seq_notify(st);
}

/* A deadline ms from now on the monotonic clock of the condition. */
static struct timespec mongo_deadline(int64_t ms)
{
    struct timespec t;
    if (clock_gettime(CLOCK_MONOTONIC, &t) != 0)
        abort(); /* cannot fail with a valid clock */
    t.tv_sec += (time_t)(ms / 1000);
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

/* Waits on cv until deadline; returns 0 when it passed. */
static int mongo_timed_wait(pthread_cond_t *cv, pthread_mutex_t *mu, const struct timespec *t)
{
    int rc = pthread_cond_timedwait(cv, mu, t);
    if (rc != 0 && rc != ETIMEDOUT)
        abort(); /* only a bug: a cond not initialized, a mutex not held */
    return rc == 0;
}

/* What one turn of the thread does. */
struct mongo_seq_work {
    char (*ids)[UUID_STR_LEN + 1]; /* payments noted, taken from the sequencer */
    size_t n;
    int overflow;   /* more were noted than ids held: adopt every entry */
    int64_t cutoff; /* when the notes were taken (µs, wall clock): the round's entries */
    int poll;       /* read the watermark */
    int adopt;      /* and adopt old entries */
};

/* One turn of the thread: the rounds, without the lock. */
static void mongo_seq_turn(struct mongo_store *st, const struct mongo_seq_work *w)
{
    int err = PAYMENT_STORE_OK, raised = 0;
    mongoc_client_t *client = mongo_client(st, &err);
    if (err == PAYMENT_STORE_OK && w->n > 0) {
        const char *ptrs[MONGO_SEQ_NOTED_MAX];
        for (size_t i = 0; i < w->n; i++)
            ptrs[i] = w->ids[i];
        (void)mongo_seq_stamp_ids(st, client, ptrs, w->n, w->cutoff);
    }
    if (err == PAYMENT_STORE_OK && w->overflow &&
        mongo_round_adopt(st, client, w->cutoff, &raised) == PAYMENT_STORE_OK && raised)
        mongo_seq_notify(st);
    if (err == PAYMENT_STORE_OK && w->poll)
        mongo_seq_poll(st, client, w->adopt);
    if (client)
        mongoc_client_pool_push(st->pool, client);
}

/* Waits for work (q->mu held), then takes the notes into w; returns
 * whether the store is closing. */
static int mongo_seq_take(struct mongo_seq *q, struct mongo_seq_work *w, int64_t next_poll)
{
    int64_t left_us = next_poll - clock_mono_us();
    struct timespec until = mongo_deadline(left_us > 0 ? left_us / 1000 : 0);
    while (!q->closing && q->n_ids == 0 && !q->overflow && clock_mono_us() < next_poll)
        if (!mongo_timed_wait(&q->wake, &q->mu, &until))
            break;
    w->n = w->ids ? q->n_ids : 0;
    w->overflow = q->overflow || (!w->ids && q->n_ids > 0);
    if (w->n > 0)
        memcpy(w->ids, q->ids, w->n * sizeof q->ids[0]);
    w->cutoff = mongo_wall_us(); /* after every write noted: each was made before its note */
    q->n_ids = 0;
    q->overflow = 0;
    return q->closing;
}

static void *mongo_seq_main(void *arg)
{
    struct mongo_store *st = arg;
    struct mongo_seq *q = st->seq;
    struct mongo_seq_work w = {.ids = malloc(sizeof q->ids)};
    int64_t next_poll = clock_mono_us(), next_adopt = next_poll;
    sync_lock(&q->mu);
    for (;;) {
        int closing = mongo_seq_take(q, &w, next_poll);
        uint64_t target = q->noted;
        sync_unlock(&q->mu);
        int64_t now = clock_mono_us();
        w.poll = !closing && now >= next_poll;
        w.adopt = w.poll && now >= next_adopt;
        if (w.poll)
            next_poll = now + MONGO_SEQ_POLL_MS * 1000;
        if (w.adopt)
            next_adopt = now + MONGO_SEQ_ADOPT_MS * 1000;
        if (w.n > 0 || w.overflow || w.poll)
            mongo_seq_turn(st, &w);
        sync_lock(&q->mu);
        q->done = target;
        sync_broadcast(&q->flushed);
        if (closing)
            break; /* the last round ran: what it left, another process adopts */
    }
    sync_unlock(&q->mu);
    free(w.ids);
    return NULL;
}

/* ---- what the store calls ---------------------------------------------------- */

/* Notes that payment_id's outbox got an entry, and wakes the thread. */
void mongo_seq_note(struct mongo_store *st, const char *payment_id)
{
    struct mongo_seq *q = st->seq;
    sync_lock(&q->mu);
    size_t i = 0;
    while (i < q->n_ids && strcmp(q->ids[i], payment_id) != 0)
        i++;
    if (i == q->n_ids) {
        if (q->n_ids < MONGO_SEQ_NOTED_MAX)
            snprintf(q->ids[q->n_ids++], sizeof q->ids[0], "%s", payment_id);
        else
            q->overflow = 1;
    }
    q->noted++;
    sync_signal(&q->wake);
    sync_unlock(&q->mu);
}

/* Waits until the writes noted so far went through a round, at most the
 * store's selection timeout (a round that failed counts: the read then
 * shows what the feed holds). */
void mongo_seq_flush(struct mongo_store *st)
{
    struct mongo_seq *q = st->seq;
    struct timespec until = mongo_deadline(st->stale_us / 1000);
    sync_lock(&q->mu);
    uint64_t target = q->noted;
    if (q->done < target)
        sync_signal(&q->wake);
    while (q->done < target && q->started && !q->closing)
        if (!mongo_timed_wait(&q->flushed, &q->mu, &until))
            break;
    sync_unlock(&q->mu);
}

void mongo_events_subscribe(payment_store *s, void (*fn)(void *arg), void *arg)
{
    struct mongo_seq *q = ((struct mongo_store *)s)->seq;
    sync_lock(&q->mu);
    q->fn = fn;
    q->fn_arg = arg;
    sync_unlock(&q->mu);
}

void mongo_seq_set_hook(payment_store *s, mongo_seq_hook_fn hook, void *arg)
{
    struct mongo_seq *q = ((struct mongo_store *)s)->seq;
    sync_lock(&q->mu);
    q->hook = hook;
    q->hook_arg = arg;
    sync_unlock(&q->mu);
}

/* Creates st's sequencer (not started).  Returns 0, or -1. */
int mongo_seq_new(struct mongo_store *st)
{
    struct mongo_seq *q = calloc(1, sizeof *q);
    pthread_condattr_t attr;
    if (!q)
        return -1;
    if (pthread_mutex_init(&q->mu, NULL) != 0)
        goto no_mu;
    if (pthread_condattr_init(&attr) != 0)
        goto no_attr;
    if (pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&q->wake, &attr) != 0)
        goto no_wake;
    if (pthread_cond_init(&q->flushed, &attr) != 0)
        goto no_flushed;
    (void)pthread_condattr_destroy(&attr);
    st->seq = q;
    return 0;
no_flushed:
    (void)pthread_cond_destroy(&q->wake);
no_wake:
    (void)pthread_condattr_destroy(&attr);
no_attr:
    (void)pthread_mutex_destroy(&q->mu);
no_mu:
    free(q);
    return -1;
}

/* Starts the thread with every signal blocked.  Returns 0, or -1. */
int mongo_seq_start(struct mongo_store *st)
{
    struct mongo_seq *q = st->seq;
    sigset_t all, old;
    if (sigfillset(&all) != 0 || pthread_sigmask(SIG_BLOCK, &all, &old) != 0)
        return -1;
    int rc = pthread_create(&q->thread, NULL, mongo_seq_main, st);
    if (pthread_sigmask(SIG_SETMASK, &old, NULL) != 0)
        abort(); /* cannot fail with a mask it returned */
    if (rc != 0)
        return -1;
    sync_lock(&q->mu);
    q->started = 1;
    sync_unlock(&q->mu);
    return 0;
}

/* Stops the thread after its last round (the writers are stopped already)
 * and frees the sequencer.  NULL st->seq is a no-op. */
void mongo_seq_free(struct mongo_store *st)
{
    struct mongo_seq *q = st->seq;
    if (!q)
        return;
    sync_lock(&q->mu);
    int started = q->started;
    q->closing = 1;
    sync_signal(&q->wake);
    sync_broadcast(&q->flushed);
    sync_unlock(&q->mu);
    if (started)
        sync_join(q->thread);
    (void)pthread_cond_destroy(&q->flushed);
    (void)pthread_cond_destroy(&q->wake);
    (void)pthread_mutex_destroy(&q->mu);
    free(q);
    st->seq = NULL;
}
