/* feed_wait: parked feed requests and the thread that wakes them (see
 * feed_wait.h).  One mutex guards the list of parked requests, the counts
 * and the flags; requests are resumed outside it, after being taken off
 * the list, so that a resumed request is never touched again here (it may
 * be answered and freed at once). */
#include "payment/feed_wait.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "core/clock.h"
#include "core/sync.h"

struct feed_wait {
    payment_store *store;       /* borrowed; reports to feed_wait_notify */
    pthread_mutex_t mu;         /* guards everything below but thread */
    pthread_cond_t wake;        /* signalled on a report, a new park, or closing */
    struct feed_waiter *parked; /* the parked requests, newest first */
    size_t max;                 /* requests that may be entered at once */
    size_t entered;             /* requests entered and not left */
    uint64_t epoch;             /* store reports so far */
    int closed;                 /* feed_wait_close was called */
    int started;                /* the thread runs (joined by close) */
    pthread_t thread;           /* wakes parked requests */
};

/* The store's report that events may have been committed: quick, as the
 * subscription asks. */
static void feed_wait_notify(void *arg)
{
    feed_wait *fw = arg;
    sync_lock(&fw->mu);
    fw->epoch++;
    sync_signal(&fw->wake);
    sync_unlock(&fw->mu);
}

static void waiter_unlink(feed_wait *fw, struct feed_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        fw->parked = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

/* Takes off the list every parked request (all) or those due by now_us,
 * and returns them chained through next.  Under mu. */
static struct feed_waiter *take_due(feed_wait *fw, int all, int64_t now_us)
{
    struct feed_waiter *out = NULL;
    for (struct feed_waiter *w = fw->parked, *next; w; w = next) {
        next = w->next;
        if (!all && w->due_us > now_us)
            continue;
        waiter_unlink(fw, w);
        w->next = out;
        out = w;
    }
    return out;
}

/* Resumes the requests taken by take_due; not under mu.  Each is read
 * before it is resumed: after that it belongs to the server again. */
static void resume_all(struct feed_waiter *w)
{
    while (w) {
        struct feed_waiter *next = w->next;
        http_request *req = w->req;
        w->next = NULL;
        http_request_resume(req);
        w = next;
    }
}

/* The earliest due time of the parked requests, INT64_MAX when none.
 * Under mu. */
static int64_t earliest_due(const feed_wait *fw)
{
    int64_t due = INT64_MAX;
    for (const struct feed_waiter *w = fw->parked; w; w = w->next)
        if (w->due_us < due)
            due = w->due_us;
    return due;
}

/* Waits on wake until due_us (monotonic; INT64_MAX: no limit).  Under mu. */
static void wait_until(feed_wait *fw, int64_t due_us)
{
    if (due_us == INT64_MAX) {
        sync_wait(&fw->wake, &fw->mu);
        return;
    }
    struct timespec until = {(time_t)(due_us / 1000000), (long)(due_us % 1000000) * 1000};
    int rc = pthread_cond_timedwait(&fw->wake, &fw->mu, &until);
    assert(rc == 0 || rc == ETIMEDOUT);
    (void)rc;
}

/* The thread: wakes every parked request after a report (at most one
 * such round per FEED_WAIT_COALESCE_MS, so that a stream of commits makes
 * each waiter read again at a bounded rate), and each one when it is due. */
static void *feed_wait_main(void *arg)
{
    feed_wait *fw = arg;
    const int64_t coalesce_us = FEED_WAIT_COALESCE_MS * INT64_C(1000);
    sync_lock(&fw->mu);
    uint64_t seen = fw->epoch;
    int64_t last_round_us = INT64_MIN / 2;
    while (!fw->closed) {
        int64_t now = clock_mono_us();
        int all = fw->epoch != seen && now >= last_round_us + coalesce_us;
        if (all) {
            seen = fw->epoch;
            last_round_us = now;
        }
        struct feed_waiter *due = take_due(fw, all, now);
        if (due) {
            sync_unlock(&fw->mu);
            resume_all(due);
            sync_lock(&fw->mu);
            continue;
        }
        int64_t until = earliest_due(fw);
        if (fw->epoch != seen && last_round_us + coalesce_us < until)
            until = last_round_us + coalesce_us; /* a report waits for its round */
        wait_until(fw, until);
    }
    sync_unlock(&fw->mu);
    return NULL;
}

int feed_wait_start(payment_store *s, size_t max, feed_wait **out)
{
    assert(max >= 1);
    *out = NULL;
    feed_wait *fw = calloc(1, sizeof *fw);
    if (!fw)
        return -1;
    fw->store = s;
    fw->max = max;
    if (pthread_mutex_init(&fw->mu, NULL) != 0) {
        free(fw);
        return -1;
    }
    /* Timed on the monotonic clock that clock_mono_us reads (wait_until). */
    if (sync_cond_init_monotonic(&fw->wake) != 0) {
        pthread_mutex_destroy(&fw->mu);
        free(fw);
        return -1;
    }
    if (pthread_create(&fw->thread, NULL, feed_wait_main, fw) != 0) {
        pthread_cond_destroy(&fw->wake);
        pthread_mutex_destroy(&fw->mu);
        free(fw);
        return -1;
    }
    fw->started = 1;
    payment_store_events_subscribe(s, feed_wait_notify, fw);
    *out = fw;
    return 0;
}

int feed_wait_enter(feed_wait *fw)
{
    sync_lock(&fw->mu);
    int rc = fw->closed ? FEED_WAIT_ECLOSED : fw->entered >= fw->max ? FEED_WAIT_EFULL : 0;
    if (rc == 0)
        fw->entered++;
    sync_unlock(&fw->mu);
    return rc;
}

void feed_wait_leave(feed_wait *fw)
{
    sync_lock(&fw->mu);
    assert(fw->entered > 0);
    fw->entered--;
    sync_unlock(&fw->mu);
}

uint64_t feed_wait_epoch(feed_wait *fw)
{
    sync_lock(&fw->mu);
    uint64_t e = fw->epoch;
    sync_unlock(&fw->mu);
    return e;
}

int feed_wait_park(feed_wait *fw, http_request *req, struct feed_waiter *w, uint64_t epoch,
                   int64_t deadline_us, http_handler_fn then)
{
    int64_t recheck_us = clock_mono_us() + FEED_WAIT_RECHECK_MS * INT64_C(1000);
    sync_lock(&fw->mu);
    assert(fw->entered > 0);
    if (fw->closed) {
        sync_unlock(&fw->mu);
        return FEED_WAIT_ECLOSED;
    }
    /* Suspended under mu: the thread cannot resume it before it is. */
    http_request_suspend(req, then);
    w->req = req;
    w->due_us = deadline_us < recheck_us ? deadline_us : recheck_us;
    /* A report came since the caller read: read again soon, as the round
     * that report made (which this request missed) would have had it. */
    int64_t soon_us = clock_mono_us() + FEED_WAIT_COALESCE_MS * INT64_C(1000);
    if (fw->epoch != epoch && soon_us < w->due_us)
        w->due_us = soon_us;
    w->prev = NULL;
    w->next = fw->parked;
    if (fw->parked)
        fw->parked->prev = w;
    fw->parked = w;
    sync_signal(&fw->wake); /* its due time may be the earliest now */
    sync_unlock(&fw->mu);
    return FEED_WAIT_OK;
}

size_t feed_wait_count(feed_wait *fw)
{
    sync_lock(&fw->mu);
    size_t n = fw->entered;
    sync_unlock(&fw->mu);
    return n;
}

void feed_wait_close(feed_wait *fw)
{
    if (!fw)
        return;
    sync_lock(&fw->mu);
    fw->closed = 1;
    struct feed_waiter *all = take_due(fw, 1, 0);
    int started = fw->started;
    fw->started = 0;
    sync_signal(&fw->wake);
    sync_unlock(&fw->mu);
    resume_all(all);
    if (started)
        sync_join(fw->thread);
}

void feed_wait_free(feed_wait *fw)
{
    if (!fw)
        return;
    feed_wait_close(fw);
    assert(fw->parked == NULL);
    pthread_cond_destroy(&fw->wake);
    pthread_mutex_destroy(&fw->mu);
    free(fw);
}
