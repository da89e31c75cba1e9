/* transfer: the transfer thread (deliver_internal.h).  It takes the
 * requests the sender made off the ready list into libcurl's multi handle,
 * drives them, and puts each finished one, its outcome set, on the done
 * list for the sender to record.  It never calls the store, so the
 * transfers in flight are driven however long a store call takes.
 *
 * It waits in curl_multi_poll (at most poll_ms), which curl_multi_wakeup
 * interrupts: a request submitted, or stop.  On stop, the transfers in
 * flight are abandoned unrecorded: their leases expire and any process
 * claims them again.
 *
 * Threads: the multi handle and the in-flight list are this thread's own;
 * the ready and done lists are under the deliverer's mu. */
#include <assert.h>
#include <stdlib.h>

#include "core/sync.h"
#include "webhook/deliver_internal.h"

/* The thread's own state. */
struct transfer {
    webhook_deliver *d;
    struct webhook_request *flight; /* in the multi handle (a list on prev, next) */
};

void webhook_transfer_submit(webhook_deliver *d, struct webhook_request *q)
{
    sync_lock(&d->mu);
    q->prev = NULL;
    q->next = d->ready;
    d->ready = q;
    sync_unlock(&d->mu);
    CURLMcode mc = curl_multi_wakeup(d->multi);
    if (mc != CURLM_OK)
        log_msg(d->c.log, LOG_WARN, "webhooks: curl_multi_wakeup: %s", curl_multi_strerror(mc));
}

/* Hands q, finished, to the sender. */
static void hand_back(webhook_deliver *d, struct webhook_request *q)
{
    sync_lock(&d->mu);
    q->prev = NULL;
    q->next = d->done;
    d->done = q;
    sync_broadcast(&d->cv);
    sync_unlock(&d->mu);
}

static void flight_unlink(struct transfer *t, struct webhook_request *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        t->flight = q->next;
    if (q->next)
        q->next->prev = q->prev;
    q->prev = q->next = NULL;
}

/* Puts the ready requests in flight (or hands back one that cannot be).
 * Returns whether stopping. */
static int take_ready(struct transfer *t)
{
    webhook_deliver *d = t->d;
    sync_lock(&d->mu);
    struct webhook_request *ready = d->ready;
    d->ready = NULL;
    int stopping = d->stopping;
    sync_unlock(&d->mu);
    while (ready) {
        struct webhook_request *q = ready;
        ready = q->next;
        CURLMcode mc = curl_multi_add_handle(d->multi, q->easy);
        if (mc != CURLM_OK) {
            log_msg(d->c.log, LOG_WARN, "webhooks: curl_multi_add_handle: %s",
                    curl_multi_strerror(mc));
            webhook_request_finish(q, CURLE_FAILED_INIT);
            hand_back(d, q);
            continue;
        }
        q->prev = NULL;
        q->next = t->flight;
        if (t->flight)
            t->flight->prev = q;
        t->flight = q;
    }
    return stopping;
}

/* Takes a finished transfer out of the multi handle and hands it back. */
static void finish(struct transfer *t, struct webhook_request *q, CURLcode result)
{
    webhook_deliver *d = t->d;
    webhook_request_finish(q, result);
    CURLMcode mc = curl_multi_remove_handle(d->multi, q->easy);
    if (mc != CURLM_OK)
        log_msg(d->c.log, LOG_WARN, "webhooks: curl_multi_remove_handle: %s",
                curl_multi_strerror(mc));
    flight_unlink(t, q);
    hand_back(d, q);
}

/* Drives the transfers and finishes those done.  0, or -1 when the multi
 * handle failed (logged). */
static int drive(struct transfer *t)
{
    webhook_deliver *d = t->d;
    int running = 0;
    CURLMcode mc = curl_multi_perform(d->multi, &running);
    if (mc != CURLM_OK) {
        log_msg(d->c.log, LOG_ERROR, "webhooks: curl_multi_perform: %s", curl_multi_strerror(mc));
        return -1;
    }
    CURLMsg *m;
    int left = 0;
    while ((m = curl_multi_info_read(d->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        if (curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv) != CURLE_OK || !priv) {
            log_msg(d->c.log, LOG_ERROR, "webhooks: a transfer without its attempt");
            continue;
        }
        finish(t, (struct webhook_request *)priv, m->data.result);
    }
    return 0;
}

/* Abandons every transfer in flight: unrecorded, their leases run out. */
static void abandon_all(struct transfer *t)
{
    while (t->flight) {
        struct webhook_request *q = t->flight;
        CURLMcode mc = curl_multi_remove_handle(t->d->multi, q->easy);
        if (mc != CURLM_OK)
            log_msg(t->d->c.log, LOG_WARN, "webhooks: curl_multi_remove_handle: %s",
                    curl_multi_strerror(mc));
        flight_unlink(t, q);
        webhook_request_free(q);
    }
}

void *webhook_transfer_main(void *arg)
{
    struct transfer t = {0};
    t.d = arg;
    webhook_deliver *d = t.d;
    webhook_thread_deprioritize(d);
    assert(d->c.poll_ms > 0);
    int poll_ms = d->c.poll_ms < 60000 ? (int)d->c.poll_ms : 60000;
    while (!take_ready(&t)) {
        int failed = drive(&t) != 0;
        CURLMcode mc = curl_multi_poll(d->multi, NULL, 0, poll_ms, NULL);
        if (mc != CURLM_OK) {
            log_msg(d->c.log, LOG_ERROR, "webhooks: curl_multi_poll: %s", curl_multi_strerror(mc));
            failed = 1;
        }
        if (failed && sync_pause_ms(&d->cv, &d->mu, &d->stopping, poll_ms))
            break;
    }
    abandon_all(&t);
    return NULL;
}
