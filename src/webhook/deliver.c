/* deliver: see deliver.h.  This file starts and stops the three threads
 * (dispatch.c; sender.c and transfer.c, the two halves of deliver.h's
 * sender), wakes them, and renders their counters.
 *
 * libcurl: curl_global_init is not thread safe, so webhook_deliver_start
 * calls it before starting its threads, and must itself be called from main
 * before any other thread uses libcurl; webhook_deliver_stop balances it
 * with curl_global_cleanup after joining them, likewise from main once no
 * other thread uses libcurl (main.c stops the HTTP server first).
 *
 * Threads: start and stop from main; wake and metrics from any. */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/metrics.h"
#include "core/sync.h"
#include "webhook/deliver_internal.h"

void webhook_thread_deprioritize(webhook_deliver *d)
{
    /* On Linux a thread's nice value is its own: PRIO_PROCESS with a
     * thread id sets that thread's alone. */
    id_t tid = (id_t)gettid();
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, tid);
    if (nice == -1 && errno != 0)
        nice = 0;
    int want = nice + WEBHOOK_NICE > 19 ? 19 : nice + WEBHOOK_NICE;
    if (setpriority(PRIO_PROCESS, tid, want) != 0)
        log_msg(d->c.log, LOG_WARN,
                "webhooks: cannot lower a delivery thread's priority (%s): deliveries compete "
                "with requests for the CPUs",
                strerror(errno));
}

/* This process's lease owner: "host-pid-random", unique among processes
 * (and among deliverers of one process) sharing a store. */
static int owner_name(char out[WEBHOOK_OWNER_MAX])
{
    char host[64];
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = '\0';
    uint64_t rnd;
    if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        return -1;
    int n = snprintf(out, WEBHOOK_OWNER_MAX, "%s-%ld-%016" PRIx64, host, (long)getpid(), rnd);
    return n > 0 && n < WEBHOOK_OWNER_MAX ? 0 : -1;
}

/* Frees what start made, the threads already joined (or never started). */
static void deliver_free(webhook_deliver *d)
{
    struct webhook_request *lists[] = {d->ready, d->done};
    for (size_t i = 0; i < 2; i++)
        while (lists[i]) {
            struct webhook_request *q = lists[i];
            lists[i] = q->next;
            webhook_request_free(q);
        }
    if (d->multi) {
        CURLMcode mc = curl_multi_cleanup(d->multi);
        if (mc != CURLM_OK)
            log_msg(d->c.log, LOG_WARN, "webhooks: curl_multi_cleanup: %s",
                    curl_multi_strerror(mc));
    }
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

/* Sets stopping and wakes both threads. */
static void deliver_signal_stop(webhook_deliver *d)
{
    sync_lock(&d->mu);
    d->stopping = 1;
    sync_broadcast(&d->cv);
    sync_unlock(&d->mu);
    CURLMcode mc = curl_multi_wakeup(d->multi);
    if (mc != CURLM_OK)
        log_msg(d->c.log, LOG_WARN, "webhooks: curl_multi_wakeup: %s", curl_multi_strerror(mc));
}

webhook_deliver *webhook_deliver_start(const struct webhook_deliver_config *c)
{
    assert(c && c->store && c->log && c->timeout_ms > 0 && c->poll_ms > 0 &&
           c->n_schedule >= 1 && c->n_schedule <= WEBHOOK_SCHEDULE_MAX && c->disable_after_ms >= 0);
    CURLcode cc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (cc != CURLE_OK) {
        log_msg(c->log, LOG_ERROR, "webhooks: curl_global_init: %s", curl_easy_strerror(cc));
        return NULL;
    }
    webhook_deliver *d = calloc(1, sizeof *d);
    if (!d) {
        log_msg(c->log, LOG_ERROR, "webhooks: out of memory");
        curl_global_cleanup();
        return NULL;
    }
    d->c = *c;
    atomic_init(&d->pending, -1);
    if (pthread_mutex_init(&d->mu, NULL) != 0) {
        free(d);
        curl_global_cleanup();
        log_msg(c->log, LOG_ERROR, "webhooks: cannot make a mutex");
        return NULL;
    }
    if (sync_cond_init_monotonic(&d->cv) != 0) {
        pthread_mutex_destroy(&d->mu);
        free(d);
        curl_global_cleanup();
        log_msg(c->log, LOG_ERROR, "webhooks: cannot make a condition variable");
        return NULL;
    }
    if (owner_name(d->owner) != 0 || !(d->multi = curl_multi_init())) {
        log_msg(c->log, LOG_ERROR, "webhooks: cannot set up the sender");
        deliver_free(d);
        curl_global_cleanup();
        return NULL;
    }
    if (pthread_create(&d->dispatcher, NULL, webhook_dispatch_main, d) != 0) {
        log_msg(c->log, LOG_ERROR, "webhooks: cannot start the dispatcher thread");
        deliver_free(d);
        curl_global_cleanup();
        return NULL;
    }
    if (pthread_create(&d->transfer, NULL, webhook_transfer_main, d) != 0) {
        log_msg(c->log, LOG_ERROR, "webhooks: cannot start the transfer thread");
        deliver_signal_stop(d);
        sync_join(d->dispatcher);
        deliver_free(d);
        curl_global_cleanup();
        return NULL;
    }
    if (pthread_create(&d->sender, NULL, webhook_sender_main, d) != 0) {
        log_msg(c->log, LOG_ERROR, "webhooks: cannot start the sender thread");
        deliver_signal_stop(d);
        sync_join(d->transfer);
        sync_join(d->dispatcher);
        deliver_free(d);
        curl_global_cleanup();
        return NULL;
    }
    log_msg(c->log, LOG_DEBUG, "webhooks: delivering as %s", d->owner);
    return d;
}

int webhook_deliver_stopping(webhook_deliver *d)
{
    sync_lock(&d->mu);
    int stopping = d->stopping;
    sync_unlock(&d->mu);
    return stopping;
}

void webhook_sender_wake(webhook_deliver *d)
{
    sync_lock(&d->mu);
    d->sender_woken = 1;
    sync_broadcast(&d->cv);
    sync_unlock(&d->mu);
}

void webhook_deliver_wake(void *arg)
{
    webhook_deliver *d = arg;
    if (!d)
        return;
    sync_lock(&d->mu);
    d->dispatch_woken = 1;
    d->sender_woken = 1;
    sync_broadcast(&d->cv);
    sync_unlock(&d->mu);
}

void webhook_deliver_stop(webhook_deliver *d)
{
    if (!d)
        return;
    deliver_signal_stop(d);
    sync_join(d->sender);
    sync_join(d->transfer);
    sync_join(d->dispatcher);
    deliver_free(d);
    curl_global_cleanup();
}

void webhook_deliver_metrics(webhook_deliver *d, struct buf *b)
{
    if (!d)
        return;
    metrics_render_header(b, "paymentd_webhook_deliveries_total", "counter",
                          "Webhook deliveries finished or retried, by outcome.");
    buf_printf(b, "paymentd_webhook_deliveries_total{outcome=\"succeeded\"} %" PRIu64 "\n",
               atomic_load(&d->succeeded));
    buf_printf(b, "paymentd_webhook_deliveries_total{outcome=\"failed\"} %" PRIu64 "\n",
               atomic_load(&d->failed));
    buf_printf(b, "paymentd_webhook_deliveries_total{outcome=\"retrying\"} %" PRIu64 "\n",
               atomic_load(&d->retrying));
    metrics_render_header(b, "paymentd_webhook_attempts_total", "counter",
                          "Webhook delivery attempts recorded by this process.");
    buf_printf(b, "paymentd_webhook_attempts_total %" PRIu64 "\n", atomic_load(&d->attempts));
    int64_t pending = atomic_load(&d->pending);
    if (pending < 0)
        pending = 0; /* not read yet */
    int64_t oldest = atomic_load(&d->oldest_pending_ms);
    int64_t age_ms = oldest > 0 ? clock_now_ms() - oldest : 0;
    metrics_render_header(b, "paymentd_webhook_pending_deliveries", "gauge",
                          "Webhook deliveries pending in the store (read about every second).");
    buf_printf(b, "paymentd_webhook_pending_deliveries %" PRId64 "\n", pending);
    metrics_render_header(b, "paymentd_webhook_oldest_pending_seconds", "gauge",
                          "Age of the oldest pending webhook delivery.");
    buf_printf(b, "paymentd_webhook_oldest_pending_seconds %.3f\n",
               age_ms > 0 ? (double)age_ms / 1000.0 : 0.0);
}
