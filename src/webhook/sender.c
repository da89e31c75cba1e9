/* sender: the sender thread (deliver_internal.h): the store's side of the
 * attempts.  It claims due deliveries under a lease (timeout +
 * WEBHOOK_LEASE_EXTRA_MS), at most WEBHOOK_IN_FLIGHT_MAX claimed and not yet
 * recorded, reads each one's endpoint, makes its request (request.c) and
 * hands it to the transfer thread (transfer.c); it records each finished
 * one (record.c).  A delivery whose endpoint is disabled is recorded failed
 * unsent; one whose endpoint is gone went with it.
 *
 * It claims when woken (new deliveries, a retry), every poll_ms, and at
 * once while claims come back full and there is room; it records as soon
 * as transfers finish; it reads the pending gauges every
 * WEBHOOK_PENDING_EVERY_MS, and at once when the last outstanding attempt
 * is recorded (record.c counts a finished delivery out of them meanwhile).
 * Between, it waits on the deliverer's cv.
 *
 * On stop, finished attempts not yet recorded are dropped: their leases
 * expire and any process claims them again.
 *
 * Threads: its state is its own; the lists it shares are under mu. */
#include <assert.h>
#include <errno.h>
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
    size_t outstanding;              /* requests handed to the transfer thread, not recorded */
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
 * either hands its request to the transfer thread or records why none was
 * made. */
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
        webhook_transfer_submit(d, q);
        s->outstanding++;
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
    size_t room = WEBHOOK_IN_FLIGHT_MAX - s->outstanding;
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

/* ---- recording ------------------------------------------------------------------ */

/* Records every attempt of the list done, WEBHOOK_IN_FLIGHT_MAX at most
 * at a time, and frees them. */
static void record_done(struct sender *s, struct webhook_request *done)
{
    struct webhook_record recs[WEBHOOK_IN_FLIGHT_MAX];
    struct webhook_request *batch[WEBHOOK_IN_FLIGHT_MAX];
    while (done) {
        size_t n = 0;
        for (; done && n < WEBHOOK_IN_FLIGHT_MAX; done = done->next, n++) {
            batch[n] = done;
            recs[n] = (struct webhook_record){.job = &done->job, .at_ms = done->at_ms,
                                              .latency_ms = done->latency_ms, .r = &done->outcome};
        }
        webhook_record_attempts(s->d, recs, n);
        for (size_t i = 0; i < n; i++) {
            webhook_request_free(batch[i]);
            assert(s->outstanding > 0);
            s->outstanding--;
        }
    }
}

static void free_list(struct webhook_request *list)
{
    while (list) {
        struct webhook_request *q = list;
        list = q->next;
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

/* What a wait gave. */
struct woken {
    int stopping;
    int claim;                       /* woken for a claim (there is room) */
    struct webhook_request *done;    /* finished attempts to record */
};

/* Waits until stopped, finished attempts come back, woken for a claim
 * while there is room, or until deadline_us (monotonic), whichever first. */
static struct woken sender_wait(struct sender *s, int64_t deadline_us)
{
    webhook_deliver *d = s->d;
    int room = s->outstanding < WEBHOOK_IN_FLIGHT_MAX;
    int64_t now_us = clock_mono_us();
    struct timespec until = sync_deadline_in_us(deadline_us > now_us ? deadline_us - now_us : 0);
    struct woken w = {0};
    sync_lock(&d->mu);
    int rc = 0;
    while (!d->stopping && !d->done && !(room && d->sender_woken) && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&d->cv, &d->mu, &until);
    w.stopping = d->stopping;
    w.done = d->done;
    d->done = NULL;
    if (room && d->sender_woken) {
        w.claim = 1;
        d->sender_woken = 0;
    }
    sync_unlock(&d->mu);
    return w;
}

void *webhook_sender_main(void *arg)
{
    struct sender s = {0};
    s.d = arg;
    webhook_deliver *d = s.d;
    webhook_thread_deprioritize(d);
    s.claimed = calloc(WEBHOOK_IN_FLIGHT_MAX, sizeof *s.claimed);
    if (!s.claimed) {
        log_msg(d->c.log, LOG_ERROR, "webhooks: sender: out of memory; not sending");
        return NULL;
    }
    int64_t poll_us = d->c.poll_ms * 1000;
    int64_t next_claim_us = 0, next_pending_us = 0; /* monotonic; 0: now */
    int more_due = 0;                               /* the last claim came back full */
    for (;;) {
        int64_t now_us = clock_mono_us();
        int room = s.outstanding < WEBHOOK_IN_FLIGHT_MAX;
        int64_t deadline_us = next_pending_us;
        if (room && next_claim_us < deadline_us)
            deadline_us = next_claim_us;
        if (room && more_due)
            deadline_us = now_us;
        struct woken w = sender_wait(&s, deadline_us);
        if (w.stopping) {
            free_list(w.done);
            break;
        }
        if (w.done) {
            record_done(&s, w.done);
            if (s.outstanding == 0)
                next_pending_us = 0; /* all recorded: the gauges now, not in a second */
        }
        now_us = clock_mono_us();
        if (s.outstanding < WEBHOOK_IN_FLIGHT_MAX &&
            (w.claim || more_due || now_us >= next_claim_us)) {
            more_due = claim(&s);
            next_claim_us = clock_mono_us() + poll_us;
        }
        if (now_us >= next_pending_us) {
            read_pending(d);
            next_pending_us = clock_mono_us() + WEBHOOK_PENDING_EVERY_MS * 1000LL;
        }
    }
    free(s.claimed);
    return NULL;
}
