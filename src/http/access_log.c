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
#include "core/sync.h"

#define ACCESS_LOG_BATCH PIPE_BUF

struct access_log {
    const struct logger *lg;  /* the destination, borrowed */
    pthread_mutex_t mu;       /* guards pending, pending_lines, oldest_us and stop */
    pthread_cond_t wake;      /* a first line, a full batch, or stop (CLOCK_MONOTONIC) */
    struct buf pending;       /* whole lines, oldest first */
    uint64_t pending_lines;   /* lines in pending */
    int64_t oldest_us;        /* when pending's first line was added */
    int stop;                 /* write what is pending, then exit */
    _Atomic uint64_t dropped; /* lines not kept (access_log_dropped) */
    pthread_t thread;
};

/* The lock and signal calls fail only for objects not initialised or not
 * held: a broken process, stopped rather than left running unlocked. */
static void access_log_lock(access_log *al)
{
    if (pthread_mutex_lock(&al->mu) != 0)
        abort();
}

static void access_log_unlock(access_log *al)
{
    if (pthread_mutex_unlock(&al->mu) != 0)
        abort();
}

static void access_log_signal(access_log *al)
{
    if (pthread_cond_signal(&al->wake) != 0)
        abort();
}

static uint64_t access_log_count_lines(const char *data, size_t len)
{
    uint64_t n = 0;
    for (const char *p = data, *end = data + len; (p = memchr(p, '\n', (size_t)(end - p))); p++)
        n++;
    return n;
}

/* Writes one batch (log_write waits while the destination is full: this
 * thread is there to wait); what a write error leaves unwritten is counted
 * as dropped. */
static void access_log_write_batch(access_log *al, const char *data, size_t len)
{
    size_t off = log_write(al->lg, data, len);
    if (off < len)
        atomic_fetch_add_explicit(&al->dropped, access_log_count_lines(data + off, len - off),
                                  memory_order_relaxed);
}

/* Writes len bytes of whole lines in writes of at most ACCESS_LOG_BATCH
 * bytes, each ending at a line's end. */
static void access_log_write(access_log *al, const char *data, size_t len)
{
    while (len > 0) {
        size_t n = len;
        if (n > ACCESS_LOG_BATCH) {
            const char *nl = memrchr(data, '\n', ACCESS_LOG_BATCH);
            if (!nl) /* one line longer than a batch: alone */
                nl = memchr(data + ACCESS_LOG_BATCH, '\n', len - ACCESS_LOG_BATCH);
            n = nl ? (size_t)(nl - data) + 1 : len;
        }
        access_log_write_batch(al, data, n);
        data += n;
        len -= n;
    }
}

/* Whether the thread has work now: ACCESS_LOG_WAKE_BYTES of lines, lines
 * old enough, or stop.  Otherwise *until is when the oldest line will be old enough, or
 * *forever is set when there is no line (the first one signals). */
static int access_log_due(const access_log *al, struct timespec *until, int *forever)
{
    *forever = 0;
    if (al->stop || al->pending.len >= ACCESS_LOG_WAKE_BYTES)
        return 1;
    if (al->pending.len == 0) {
        *forever = 1;
        return 0;
    }
    int64_t now = clock_mono_us();
    int64_t due = al->oldest_us + ACCESS_LOG_DELAY_US;
    if (now >= due)
        return 1;
    *until = sync_deadline_in_us(due - now);
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
        int forever;
        while (!access_log_due(al, &until, &forever)) {
            int rc = forever ? pthread_cond_wait(&al->wake, &al->mu)
                             : pthread_cond_timedwait(&al->wake, &al->mu, &until);
            if (rc != 0 && rc != ETIMEDOUT && rc != EINTR)
                abort(); /* EINVAL or EPERM: a broken process */
        }
        if (al->stop && al->pending.len == 0)
            break;
        struct buf full = al->pending;
        al->pending = out; /* empty, its memory kept for the next lines */
        al->pending_lines = 0;
        out = full;
        access_log_unlock(al);
        access_log_write(al, out.data, out.len);
        buf_reset(&out);
        access_log_lock(al);
    }
    access_log_unlock(al);
    buf_free(&out);
    return NULL;
}

static void access_log_free(access_log *al)
{
    /* Neither is in use any more: destroying them cannot fail. */
    (void)pthread_cond_destroy(&al->wake);
    (void)pthread_mutex_destroy(&al->mu);
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
    if (sync_cond_init_monotonic(&al->wake) != 0) {
        free(al);
        return -1;
    }
    if (pthread_mutex_init(&al->mu, NULL) != 0) {
        (void)pthread_cond_destroy(&al->wake); /* unused: cannot fail */
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
        atomic_fetch_add_explicit(&al->dropped, al->pending_lines + 1, memory_order_relaxed);
        buf_reset(&al->pending);
        al->pending_lines = 0;
    } else if (rc < 0) {
        atomic_fetch_add_explicit(&al->dropped, 1, memory_order_relaxed);
    } else if (rc > 0) {
        al->pending_lines++;
        /* The thread sleeps without a deadline while nothing is pending:
         * the first line gives it one, ACCESS_LOG_WAKE_BYTES call it now. */
        if (old == 0)
            al->oldest_us = clock_mono_us();
        if (old == 0 || (al->pending.len >= ACCESS_LOG_WAKE_BYTES && old < ACCESS_LOG_WAKE_BYTES))
            access_log_signal(al);
    }
    access_log_unlock(al);
}

uint64_t access_log_dropped(const access_log *al)
{
    return atomic_load_explicit(&((access_log *)al)->dropped, memory_order_relaxed);
}

void access_log_stop(access_log *al)
{
    if (!al)
        return;
    access_log_lock(al);
    al->stop = 1;
    access_log_signal(al);
    access_log_unlock(al);
    if (pthread_join(al->thread, NULL) != 0)
        abort(); /* a thread of its own, joined once: cannot fail */
    access_log_free(al);
}
