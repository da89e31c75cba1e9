/* deadletters: see deadletters.h. */
#include "app/deadletters.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

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

static void *deadletters_main(void *arg)
{
    deadletters *d = arg;
    do {
        uint64_t n = 0;
        /* A failed read keeps the last count: the broker may be away. */
        if (broker_stream_messages(d->b, OPSTREAM_DEAD_NAME, DEADLETTERS_READ_MS, &n) == 0)
            atomic_store(&d->count, n + 1);
    } while (!sync_pause_ms(&d->wake, &d->mu, &d->stopping, d->interval_ms));
    return NULL;
}

deadletters *deadletters_start(broker *b, int interval_ms)
{
    deadletters *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->b = b;
    d->interval_ms = interval_ms > 0 ? interval_ms : 5000;
    if (pthread_mutex_init(&d->mu, NULL) == 0) {
        if (sync_cond_init_monotonic(&d->wake) == 0) {
            if (pthread_create(&d->thread, NULL, deadletters_main, d) == 0)
                return d;
            pthread_cond_destroy(&d->wake);
        }
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
