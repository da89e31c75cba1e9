/* janitor: the purging thread (see janitor.h).  It sleeps on a condition
 * variable between passes so that janitor_stop wakes it at once. */
#include "app/janitor.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "core/clock.h"
#include "core/sync.h"

struct janitor {
    payment_store *store;          /* borrowed */
    struct janitor_retention keep; /* how long things are kept */
    int64_t interval_ms;           /* between passes */
    pthread_t thread;              /* janitor_main */
    pthread_mutex_t mu;            /* guards stopping */
    pthread_cond_t wake;           /* signalled by janitor_stop */
    int stopping;                  /* janitor_stop was called */
};

/* The cut-off of a retention: what occurred before it goes; INT64_MIN
 * (nothing) for ever. */
static int64_t retention_cut(int64_t now_ms, int64_t keep_ms)
{
    return keep_ms > 0 ? now_ms - keep_ms : INT64_MIN;
}

/* One pass: every purge that is due. */
static void janitor_pass(janitor *j)
{
    int64_t now = clock_now_ms();
    payment_store_idem_purge(j->store, now - j->keep.idempotency_ttl_ms);
    int64_t feed_cut = retention_cut(now, j->keep.event_retention_ms);
    int64_t history_cut = retention_cut(now, j->keep.history_retention_ms);
    if (feed_cut != INT64_MIN || history_cut != INT64_MIN)
        payment_store_events_purge(j->store, feed_cut, history_cut);
    if (feed_cut != INT64_MIN)
        payment_store_deliveries_purge(j->store, feed_cut);
}

int64_t janitor_interval_ms(const struct janitor_retention *r)
{
    int64_t shortest = r->idempotency_ttl_ms;
    if (r->event_retention_ms > 0 && r->event_retention_ms < shortest)
        shortest = r->event_retention_ms;
    if (r->history_retention_ms > 0 && r->history_retention_ms < shortest)
        shortest = r->history_retention_ms;
    return shortest / 10 > JANITOR_INTERVAL_MIN_MS ? shortest / 10 : JANITOR_INTERVAL_MIN_MS;
}

static void *janitor_main(void *arg)
{
    janitor *j = arg;
    if (pthread_mutex_lock(&j->mu) != 0)
        return NULL;
    while (!j->stopping) {
        struct timespec until = sync_deadline_in_ms(j->interval_ms);
        if (sync_timedwait_flag(&j->wake, &j->mu, &j->stopping, &until))
            break;
        sync_unlock(&j->mu);
        janitor_pass(j);
        if (pthread_mutex_lock(&j->mu) != 0)
            return NULL;
    }
    sync_unlock(&j->mu);
    return NULL;
}

janitor *janitor_start(payment_store *s, const struct janitor_retention *r)
{
    assert(r->idempotency_ttl_ms > 0 && r->event_retention_ms >= 0 &&
           r->history_retention_ms >= 0);
    janitor *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->store = s;
    j->keep = *r;
    j->interval_ms = janitor_interval_ms(r);
    if (pthread_mutex_init(&j->mu, NULL) != 0) {
        free(j);
        return NULL;
    }
    if (sync_cond_init_monotonic(&j->wake) != 0) {
        pthread_mutex_destroy(&j->mu);
        free(j);
        return NULL;
    }
    if (pthread_create(&j->thread, NULL, janitor_main, j) != 0) {
        pthread_cond_destroy(&j->wake);
        pthread_mutex_destroy(&j->mu);
        free(j);
        return NULL;
    }
    return j;
}

void janitor_stop(janitor *j)
{
    if (!j)
        return;
    if (pthread_mutex_lock(&j->mu) == 0) {
        j->stopping = 1;
        sync_signal(&j->wake);
        sync_unlock(&j->mu);
    }
    sync_join(j->thread);
    pthread_cond_destroy(&j->wake);
    pthread_mutex_destroy(&j->mu);
    free(j);
}
