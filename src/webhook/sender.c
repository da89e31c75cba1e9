/* sender: the sender thread (deliver.h).  It claims due deliveries under a
 * lease (timeout + WEBHOOK_LEASE_EXTRA_MS), at most WEBHOOK_IN_FLIGHT_MAX in
 * flight, and POSTs each with libcurl's multi interface (request.c makes
 * the requests and reads what they gave; record.c records it).  A
 * delivery whose endpoint is disabled is recorded failed unsent; one whose
 * endpoint is gone went with it.
 *
 * It claims when woken (new deliveries, a retry), every poll_ms, and at
 * once while claims come back full and there is room; it reads the pending
 * gauges every WEBHOOK_PENDING_EVERY_MS, and at once when the last attempt
 * in flight finishes (record.c counts a finished delivery out of them
 * meanwhile).  Between, it waits in curl_multi_poll, which
 * curl_multi_wakeup interrupts (wake, stop).
 *
 * On stop, the transfers in flight are abandoned unrecorded: their leases
 * expire and any process claims them again.
 *
 * Threads: everything here is the sender thread's own. */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/sync.h"
#include "webhook/deliver_internal.h"

/* The thread's own state. */
struct sender {
    webhook_deliver *d;
    struct webhook_request *flight;       /* attempts in flight */
    size_t n_flight;
    struct webhook_job *claimed;     /* a claim's deliveries (room for WEBHOOK_IN_FLIGHT_MAX) */
    size_t n_claimed;
    int claim_no_memory;             /* the claim callback ran out of memory */
    int failing;                     /* the store failed last time (logged once per run) */
};

static void job_free(struct webhook_job *job)
{
    free(job->body);
    job->body = NULL;
}

/* ---- beginning an attempt -------------------------------------------------- */

/* The endpoint as the attempt needs it. */
struct endpoint_read {
    int enabled;
    int64_t now_ms;
    int target_rc;                   /* webhook_endpoint_target's */
    struct webhook_target target;
};

static int on_endpoint(void *arg, const struct payment_webhook *w)
{
    struct endpoint_read *e = arg;
    e->enabled = w->enabled;
    e->target_rc = webhook_endpoint_target(w->doc, w->doc_len, e->now_ms, &e->target);
    return 0;
}

/* Records an attempt that made no request: error, and whether final. */
static void record_unsent(webhook_deliver *d, const struct webhook_job *job, const char *error,
                          int final)
{
    struct webhook_attempt_result r = {0};
    r.error = error;
    r.final = final;
    webhook_record_attempt(d, job, clock_now_ms(), &r, 0);
}

/* Begins the attempt of job (taking its body): reads its endpoint, and
 * either puts the request in flight or records why none was made. */
static void begin_attempt(struct sender *s, struct webhook_job *job)
{
    webhook_deliver *d = s->d;
    struct endpoint_read e = {0};
    e.now_ms = clock_now_ms();
    e.target_rc = -1;
    int rc = payment_store_webhook_get(d->c.store, job->webhook_id, on_endpoint, &e);
    if (rc == PAYMENT_STORE_ENOTFOUND) {
        job_free(job); /* deleted: its deliveries went with it */
        return;
    }
    if (rc != PAYMENT_STORE_OK) {
        log_msg(d->c.log, LOG_WARN,
                "webhooks: endpoint %s delivery %s: reading the endpoint: %s; tried again once "
                "its lease expires",
                job->webhook_id, job->delivery_id, payment_store_strerror(rc));
        job_free(job);
        return;
    }
    if (!e.enabled) {
        record_unsent(d, job, "endpoint disabled", 1);
        if (e.target_rc == 0)
            webhook_target_free(&e.target);
        job_free(job);
        return;
    }
    if (e.target_rc != 0) {
        record_unsent(d, job, "the endpoint's document is unreadable", 0);
        job_free(job);
        return;
    }
    const char *why = NULL;
    struct webhook_request *q = webhook_request_new(d, job, &e.target, &why);
    webhook_target_free(&e.target);
    if (q) {
        CURLMcode mc = curl_multi_add_handle(d->multi, q->easy);
        if (mc == CURLM_OK) {
            q->next = s->flight;
            if (s->flight)
                s->flight->prev = q;
            s->flight = q;
            s->n_flight++;
            return;
        }
        why = curl_multi_strerror(mc);
        record_unsent(d, &q->job, why, 0);
        webhook_request_free(q);
        return;
    }
    record_unsent(d, job, why, 0);
    job_free(job);
}

/* ---- claiming ------------------------------------------------------------------ */

static int on_claimed(void *arg, const struct payment_delivery *dl)
{
    struct sender *s = arg;
    assert(s->n_claimed < WEBHOOK_IN_FLIGHT_MAX);
    struct webhook_job *job = &s->claimed[s->n_claimed];
    memset(job, 0, sizeof *job);
    memcpy(job->delivery_id, dl->id, sizeof job->delivery_id);
    memcpy(job->webhook_id, dl->webhook_id, sizeof job->webhook_id);
    memcpy(job->event_id, dl->event_id, sizeof job->event_id);
    job->attempts = dl->attempts;
    job->body = malloc(dl->body_len + 1);
    if (!job->body) {
        s->claim_no_memory = 1; /* its lease expires: claimed again later */
        return 0;
    }
    memcpy(job->body, dl->body, dl->body_len);
    job->body[dl->body_len] = '\0';
    job->body_len = dl->body_len;
    s->n_claimed++;
    return 0;
}

/* Claims what room allows and begins each attempt.  Returns whether the
 * claim came back full (more may be due). */
static int claim(struct sender *s)
{
    webhook_deliver *d = s->d;
    size_t room = WEBHOOK_IN_FLIGHT_MAX - s->n_flight;
    assert(room > 0);
    s->n_claimed = 0;
    s->claim_no_memory = 0;
    int rc = payment_store_deliveries_claim(d->c.store, d->owner, clock_now_ms(),
                                            d->c.timeout_ms + WEBHOOK_LEASE_EXTRA_MS,
                                            (uint32_t)room, on_claimed, s);
    if (rc != PAYMENT_STORE_OK) {
        if (!s->failing)
            log_msg(d->c.log, LOG_WARN, "webhooks: sender: claiming deliveries: %s; retrying",
                    payment_store_strerror(rc));
        s->failing = 1;
    } else if (s->failing) {
        log_msg(d->c.log, LOG_INFO, "webhooks: sender: the store answers again");
        s->failing = 0;
    }
    if (s->claim_no_memory)
        log_msg(d->c.log, LOG_ERROR, "webhooks: sender: out of memory claiming deliveries");
    size_t n = s->n_claimed;
    for (size_t i = 0; i < n; i++)
        begin_attempt(s, &s->claimed[i]);
    s->n_claimed = 0;
    return rc == PAYMENT_STORE_OK && n == room;
}

/* ---- finishing --------------------------------------------------------------- */

static void unlink_req(struct sender *s, struct webhook_request *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        s->flight = q->next;
    if (q->next)
        q->next->prev = q->prev;
    s->n_flight--;
}

/* Records a finished transfer's outcome, and frees it. */
static void finish_req(struct sender *s, struct webhook_request *q, CURLcode result)
{
    webhook_deliver *d = s->d;
    int64_t latency_ms = (clock_mono_us() - q->started_us) / 1000;
    struct webhook_attempt_result r;
    char error[WEBHOOK_ERROR_MAX];
    webhook_request_result(q, result, &r, error, sizeof error);
    CURLMcode mc = curl_multi_remove_handle(d->multi, q->easy);
    if (mc != CURLM_OK)
        log_msg(d->c.log, LOG_WARN, "webhooks: curl_multi_remove_handle: %s",
                curl_multi_strerror(mc));
    unlink_req(s, q);
    webhook_record_attempt(d, &q->job, q->at_ms, &r, latency_ms);
    webhook_request_free(q);
}

/* Drives the transfers and finishes those done.  0, or -1 when the multi
 * handle failed (logged). */
static int drive(struct sender *s)
{
    webhook_deliver *d = s->d;
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
        finish_req(s, (struct webhook_request *)priv, m->data.result);
    }
    return 0;
}

/* Abandons every transfer in flight: unrecorded, their leases run out. */
static void abandon_all(struct sender *s)
{
    while (s->flight) {
        struct webhook_request *q = s->flight;
        CURLMcode mc = curl_multi_remove_handle(s->d->multi, q->easy);
        if (mc != CURLM_OK)
            log_msg(s->d->c.log, LOG_WARN, "webhooks: curl_multi_remove_handle: %s",
                    curl_multi_strerror(mc));
        unlink_req(s, q);
        webhook_request_free(q);
    }
}

/* ---- the loop ------------------------------------------------------------------ */

/* Reads the pending gauges from the store. */
static void read_pending(webhook_deliver *d)
{
    int64_t count = 0, oldest = 0;
    int rc = payment_store_deliveries_pending(d->c.store, &count, &oldest);
    if (rc != PAYMENT_STORE_OK)
        return; /* the gauges keep their last values */
    atomic_store(&d->pending, count);
    atomic_store(&d->oldest_pending_ms, oldest);
}

void *webhook_sender_main(void *arg)
{
    struct sender s = {0};
    s.d = arg;
    webhook_deliver *d = s.d;
    s.claimed = calloc(WEBHOOK_IN_FLIGHT_MAX, sizeof *s.claimed);
    if (!s.claimed) {
        log_msg(d->c.log, LOG_ERROR, "webhooks: sender: out of memory; not sending");
        return NULL;
    }
    int64_t poll_us = d->c.poll_ms * 1000;
    int64_t next_claim_us = 0, next_pending_us = 0; /* monotonic; 0: now */
    int more_due = 0;                               /* the last claim came back full */
    while (!webhook_deliver_stopping(d)) {
        int64_t now_us = clock_mono_us();
        if (s.n_flight < WEBHOOK_IN_FLIGHT_MAX &&
            (more_due || now_us >= next_claim_us || atomic_exchange(&d->sender_woken, 0))) {
            more_due = claim(&s);
            next_claim_us = clock_mono_us() + poll_us;
        }
        if (now_us >= next_pending_us) {
            read_pending(d);
            next_pending_us = clock_mono_us() + WEBHOOK_PENDING_EVERY_MS * 1000LL;
        }
        size_t before = s.n_flight;
        if (drive(&s) != 0 && sync_pause_ms(&d->cv, &d->mu, &d->stopping, d->c.poll_ms))
            break;
        if (s.n_flight < before && s.n_flight == 0)
            next_pending_us = 0; /* the last attempt finished: the gauges now, not in a second */
        now_us = clock_mono_us();
        int64_t wait_us = next_claim_us < next_pending_us ? next_claim_us : next_pending_us;
        wait_us -= now_us;
        if (more_due && s.n_flight < WEBHOOK_IN_FLIGHT_MAX)
            wait_us = 0;
        if (wait_us < 0)
            wait_us = 0;
        if (wait_us > poll_us)
            wait_us = poll_us;
        CURLMcode mc = curl_multi_poll(d->multi, NULL, 0, (int)(wait_us / 1000), NULL);
        if (mc != CURLM_OK) {
            log_msg(d->c.log, LOG_ERROR, "webhooks: curl_multi_poll: %s", curl_multi_strerror(mc));
            if (sync_pause_ms(&d->cv, &d->mu, &d->stopping, d->c.poll_ms))
                break;
        }
    }
    abandon_all(&s);
    free(s.claimed);
    return NULL;
}
