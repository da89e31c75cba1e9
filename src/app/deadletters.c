/* deadletters: see deadletters.h. */
#include "app/deadletters.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "broker/opstream.h"
#include "core/metrics.h"
#include "core/sync.h"

#define DEADLETTERS_READ_MS 2000 /* longest wait for one count */

struct deadletters {
    broker *b;               /* borrowed */
    int interval_ms;         /* between reads */
    pthread_t thread;        /* the reader */
    pthread_mutex_t mu;      /* guards stopping */
    pthread_cond_t wake;     /* signalled by stop */
    int stopping;            /* set once by stop */
    _Atomic uint64_t count;  /* the last count read, plus one; 0 before any */
};

/* Waits interval_ms, or less when stopped: 1 when stopping. */
static int deadletters_wait(deadletters *d)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until); /* the condition's clock */
    until.tv_sec += d->interval_ms / 1000;
    until.tv_nsec += (long)(d->interval_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    sync_lock(&d->mu);
    int rc = 0;
    while (!d->stopping && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&d->wake, &d->mu, &until);
    int stop = d->stopping;
    sync_unlock(&d->mu);
    return stop;
}

static void *deadletters_main(void *arg)
{
    deadletters *d = arg;
    do {
        uint64_t n = 0;
        /* A failed read keeps the last count: the broker may be away. */
        if (broker_stream_messages(d->b, OPSTREAM_DEAD_NAME, DEADLETTERS_READ_MS, &n) == 0)
            atomic_store(&d->count, n + 1);
    } while (!deadletters_wait(d));
    return NULL;
}

deadletters *deadletters_start(broker *b, int interval_ms)
{
    deadletters *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->b = b;
    d->interval_ms = interval_ms > 0 ? interval_ms : 5000;
    pthread_condattr_t attr;
    int ok = pthread_mutex_init(&d->mu, NULL) == 0;
    if (ok && pthread_condattr_init(&attr) == 0) {
        ok = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
             pthread_cond_init(&d->wake, &attr) == 0;
        pthread_condattr_destroy(&attr);
        if (ok && pthread_create(&d->thread, NULL, deadletters_main, d) == 0)
            return d;
        if (ok)
            pthread_cond_destroy(&d->wake);
        pthread_mutex_destroy(&d->mu);
    } else if (ok) {
        pthread_mutex_destroy(&d->mu);
    }
    free(d);
    return NULL;
}

void deadletters_stop(deadletters *d)
{
    if (!d)
        return;
    sync_lock(&d->mu);
    d->stopping = 1;
    sync_signal(&d->wake);
    sync_unlock(&d->mu);
    sync_join(d->thread);
    pthread_cond_destroy(&d->wake);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

void deadletters_metrics(deadletters *d, struct buf *b)
{
    uint64_t c = atomic_load(&d->count);
    if (c == 0)
        return;
    metrics_render_header(b, "paymentd_broker_dead_letters", "gauge",
                          "Operations no worker could apply, kept in stream PAYMENTS_DEAD.");
    buf_printf(b, "paymentd_broker_dead_letters %" PRIu64 "\n", c - 1);
}
