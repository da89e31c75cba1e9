#include "http/access_log.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/clock.h"

#define ACCESS_LOG_BATCH PIPE_BUF

struct access_log {
    const struct logger *lg;  /* the destination, borrowed */
    pthread_mutex_t mu;       /* guards pending, pending_lines, oldest_us and stop */
    pthread_cond_t wake;      /* a batch is full, or stop is set (CLOCK_MONOTONIC) */
    struct buf pending;       /* whole lines, oldest first */
    uint64_t pending_lines;   /* lines in pending */
    int64_t oldest_us;        /* when pending's first line was added */
    int stop;                 /* write what is pending, then exit */
    _Atomic uint64_t dropped; /* lines not kept (access_log_dropped) */
    pthread_t thread;
};

static void access_log_lock(access_log *al)
{
    if (pthread_mutex_lock(&al->mu) != 0)
        abort(); /* only for a mutex not initialised: a broken process */
}

/* Writes len bytes of whole lines in writes of at most ACCESS_LOG_BATCH
 * bytes, each ending at a line's end. */
static void access_log_write(const struct logger *lg, const char *data, size_t len)
{
    while (len > 0) {
        size_t n = len;
        if (n > ACCESS_LOG_BATCH) {
            const char *nl = memrchr(data, '\n', ACCESS_LOG_BATCH);
            if (!nl) /* one line longer than a batch: alone */
                nl = memchr(data + ACCESS_LOG_BATCH, '\n', len - ACCESS_LOG_BATCH);
            n = nl ? (size_t)(nl - data) + 1 : len;
        }
        log_write(lg, data, n);
        data += n;
        len -= n;
    }
}

/* Whether the thread has work now: a full batch, a batch old enough, or
 * stop.  Otherwise *until is when the oldest line will be old enough. */
static int access_log_due(const access_log *al, struct timespec *until)
{
    if (al->stop || al->pending.len >= ACCESS_LOG_BATCH)
        return 1;
    int64_t now = clock_mono_us();
    int64_t due = al->pending.len ? al->oldest_us + ACCESS_LOG_DELAY_US : now + ACCESS_LOG_DELAY_US;
    if (al->pending.len && now >= due)
        return 1;
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        abort(); /* a valid clock and pointer: cannot fail */
    int64_t ns = (int64_t)ts.tv_nsec + (due - now) * 1000;
    until->tv_sec = ts.tv_sec + (time_t)(ns / 1000000000);
    until->tv_nsec = (long)(ns % 1000000000);
    return 0;
}

/* The log's thread: takes the pending lines whole (swapping buffers, so
 * that adders wait for no write) and writes them outside the lock. */
static void *access_log_main(void *arg)
{
    access_log *al = arg;
    struct buf out = BUF_INIT; /* the lines being written */
    access_log_lock(al);
    for (;;) {
        struct timespec until;
        while (!access_log_due(al, &until)) {
            int rc = pthread_cond_timedwait(&al->wake, &al->mu, &until);
            if (rc != 0 && rc != ETIMEDOUT && rc != EINTR)
                abort(); /* EINVAL or EPERM: a broken process */
        }
        if (al->stop && al->pending.len == 0)
            break;
        struct buf full = al->pending;
        al->pending = out; /* empty, its memory kept for the next lines */
        al->pending_lines = 0;
        out = full;
        pthread_mutex_unlock(&al->mu);
        access_log_write(al->lg, out.data, out.len);
        buf_reset(&out);
        access_log_lock(al);
    }
    pthread_mutex_unlock(&al->mu);
    buf_free(&out);
    return NULL;
}

static void access_log_free(access_log *al)
{
    pthread_cond_destroy(&al->wake);
    pthread_mutex_destroy(&al->mu);
    buf_free(&al->pending);
    free(al);
}

int access_log_start(const struct logger *lg, access_log **out)
{
    access_log *al = calloc(1, sizeof *al);
    if (!al)
        return -1;
    al->lg = lg;
    atomic_init(&al->dropped, 0);
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0) {
        free(al);
        return -1;
    }
    int ok = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
             pthread_cond_init(&al->wake, &attr) == 0;
    (void)pthread_condattr_destroy(&attr); /* cannot fail on an initialised attr */
    if (!ok) {
        free(al);
        return -1;
    }
    if (pthread_mutex_init(&al->mu, NULL) != 0) {
        pthread_cond_destroy(&al->wake);
        free(al);
        return -1;
    }
    if (pthread_create(&al->thread, NULL, access_log_main, al) != 0) {
        access_log_free(al);
        return -1;
    }
    *out = al;
    return 0;
}

void access_log_add(access_log *al, const char *request_id, const char *method, const char *path,
                    int status, int64_t duration_us)
{
    if (!log_wants(al->lg, LOG_INFO))
        return;
    access_log_lock(al);
    size_t old = al->pending.len;
    int rc = -1;
    if (old < ACCESS_LOG_MAX_PENDING)
        rc = log_request_format(al->lg, &al->pending, request_id, method, path, status,
                                duration_us);
    if (rc < 0 && old < ACCESS_LOG_MAX_PENDING) {
        /* Out of memory: a failed buffer's contents are lost, its lines
         * with it. */
        atomic_fetch_add(&al->dropped, al->pending_lines + 1);
        buf_reset(&al->pending);
        al->pending_lines = 0;
    } else if (rc < 0) {
        atomic_fetch_add(&al->dropped, 1);
    } else if (rc > 0) {
        if (old == 0)
            al->oldest_us = clock_mono_us();
        al->pending_lines++;
        if (al->pending.len >= ACCESS_LOG_BATCH && old < ACCESS_LOG_BATCH)
            pthread_cond_signal(&al->wake);
    }
    pthread_mutex_unlock(&al->mu);
}

uint64_t access_log_dropped(const access_log *al)
{
    return atomic_load(&((access_log *)al)->dropped);
}

void access_log_stop(access_log *al)
{
    if (!al)
        return;
    access_log_lock(al);
    al->stop = 1;
    pthread_cond_signal(&al->wake);
    pthread_mutex_unlock(&al->mu);
    if (pthread_join(al->thread, NULL) != 0)
        abort(); /* a thread of its own, joined once: cannot fail */
    access_log_free(al);
}
