#include "app/janitor.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "core/clock.h"
#include "core/sync.h"

struct janitor {
    payment_store *store;  /* borrowed */
    int64_t ttl_ms;        /* records older than this go */
    int64_t interval_ms;   /* between purges */
    pthread_t thread;
    pthread_mutex_t mu;    /* guards stopping */
    pthread_cond_t wake;   /* signalled by janitor_stop */
    int stopping;
};

static void *janitor_main(void *arg)
{
    janitor *j = arg;
    if (pthread_mutex_lock(&j->mu) != 0)
        return NULL;
    while (!j->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until); /* the condition's clock */
        until.tv_sec += j->interval_ms / 1000;
        until.tv_nsec += (j->interval_ms % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        int rc = 0;
        while (!j->stopping && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&j->wake, &j->mu, &until);
        if (j->stopping)
            break;
        sync_unlock(&j->mu);
        payment_store_idem_purge(j->store, clock_now_ms() - j->ttl_ms);
        if (pthread_mutex_lock(&j->mu) != 0)
            return NULL;
    }
    sync_unlock(&j->mu);
    return NULL;
}

janitor *janitor_start(payment_store *s, int64_t ttl_ms, int64_t interval_ms)
{
    janitor *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->store = s;
    j->ttl_ms = ttl_ms;
    j->interval_ms = interval_ms > 0 ? interval_ms : 1000;
    if (pthread_mutex_init(&j->mu, NULL) != 0) {
        free(j);
        return NULL;
    }
    pthread_condattr_t attr;
    int ok = pthread_condattr_init(&attr) == 0;
    if (ok) {
        ok = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
             pthread_cond_init(&j->wake, &attr) == 0;
        pthread_condattr_destroy(&attr);
    }
    if (!ok) {
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
