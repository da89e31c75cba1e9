/* record: an attempt's outcome into the store (deliver_internal.h): the
 * decision (attempt.c), the attempt's JSON appended under the lease,
 * the counters, a log line for each failed attempt (endpoint, delivery,
 * status or error: never a secret nor the body), and disabling an endpoint
 * that answered 410 or has failed every attempt for disable_after.
 *
 * Threads: the sender thread's (the store calls block). */
#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/clock.h"
#include "webhook/deliver_internal.h"
#include "webhook/endpoint.h"

#define DISABLE_TRIES 4 /* updates tried when the endpoint's version moves meanwhile */

/* A random number for the jitter; the time when the kernel has none. */
static uint64_t jitter_random(int64_t now_ms)
{
    uint64_t rnd;
    if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd)
        rnd = (uint64_t)now_ms * 0x9e3779b97f4a7c15ULL;
    return rnd;
}

/* Logs a failed attempt: info when it is retried, warn when the delivery
 * failed. */
static void log_failed_attempt(webhook_deliver *d, const struct webhook_job *job, int attempt,
                               const struct webhook_attempt_result *r,
                               const struct webhook_decision *dec)
{
    char what[WEBHOOK_ERROR_MAX + 32];
    if (r->status > 0)
        snprintf(what, sizeof what, "status %ld", r->status);
    else
        snprintf(what, sizeof what, "%s", r->error ? r->error : "no answer");
    if (dec->status == PAYMENT_DELIVERY_PENDING) {
        char next[CLOCK_TIMESTAMP_LEN + 1];
        clock_format_ms(dec->next_ms, next);
        log_msg(d->c.log, LOG_INFO,
                "webhooks: endpoint %s delivery %s attempt %d failed: %s; next attempt at %s",
                job->webhook_id, job->delivery_id, attempt, what, next);
    } else {
        log_msg(d->c.log, LOG_WARN,
                "webhooks: endpoint %s delivery %s attempt %d failed: %s; delivery failed",
                job->webhook_id, job->delivery_id, attempt, what);
    }
}

/* Whether an endpoint failing since failing_since_ms has failed long
 * enough at now_ms to be disabled.  disable_after 0: never. */
static int failing_too_long(const webhook_deliver *d, int64_t failing_since_ms, int64_t now_ms)
{
    return d->c.disable_after_ms > 0 && failing_since_ms > 0 &&
           now_ms - failing_since_ms >= d->c.disable_after_ms;
}

/* One pending delivery fewer in the cached gauge, until the sender reads
 * it again (the same thread: no read is under way meanwhile). */
static void pending_finished(webhook_deliver *d)
{
    int64_t n = atomic_load(&d->pending);
    while (n > 0 && !atomic_compare_exchange_weak(&d->pending, &n, n - 1))
        ;
}

/* Decides rec's outcome and writes its attempt's JSON into rec->json:
 * 0, or -1 out of memory (logged; its lease lets it be tried again). */
static int record_prepare(webhook_deliver *d, struct webhook_record *rec)
{
    rec->attempt = rec->job->attempts + 1;
    rec->now_ms = clock_now_ms();
    webhook_attempt_decide(&d->c, rec->attempt, rec->r, rec->now_ms,
                           jitter_random(rec->now_ms), &rec->dec);
    rec->json = (struct buf)BUF_INIT;
    if (webhook_attempt_json(&rec->json, rec->attempt, rec->at_ms, rec->r, rec->latency_ms,
                             &rec->dec) == 0)
        return 0;
    log_msg(d->c.log, LOG_ERROR,
            "webhooks: delivery %s: out of memory recording an attempt; tried again once its "
            "lease expires",
            rec->job->delivery_id);
    buf_free(&rec->json);
    return -1;
}

/* What follows rec's record, whose result was err: counters, a log line
 * for a failed attempt, disabling its endpoint. */
static void record_finish(webhook_deliver *d, const struct webhook_record *rec, int err,
                          int64_t failing_since)
{
    const struct webhook_job *job = rec->job;
    if (err == PAYMENT_STORE_ECONFLICT) {
        log_msg(d->c.log, LOG_WARN,
                "webhooks: endpoint %s delivery %s attempt %d: the lease expired before the "
                "outcome was recorded; not recorded (another attempt follows)",
                job->webhook_id, job->delivery_id, rec->attempt);
        return;
    }
    if (err == PAYMENT_STORE_ENOTFOUND) {
        log_msg(d->c.log, LOG_DEBUG, "webhooks: delivery %s is gone (its endpoint deleted)",
                job->delivery_id);
        return;
    }
    if (err != PAYMENT_STORE_OK) {
        log_msg(d->c.log, LOG_WARN,
                "webhooks: endpoint %s delivery %s attempt %d: recording it: %s; tried again "
                "once its lease expires",
                job->webhook_id, job->delivery_id, rec->attempt, payment_store_strerror(err));
        return;
    }
    const struct webhook_decision *dec = &rec->dec;
    atomic_fetch_add(&d->attempts, 1);
    if (dec->status == PAYMENT_DELIVERY_SUCCEEDED)
        atomic_fetch_add(&d->succeeded, 1);
    else if (dec->status == PAYMENT_DELIVERY_FAILED)
        atomic_fetch_add(&d->failed, 1);
    else
        atomic_fetch_add(&d->retrying, 1);
    if (dec->status != PAYMENT_DELIVERY_PENDING)
        pending_finished(d);
    if (dec->succeeded)
        return;
    log_failed_attempt(d, job, rec->attempt, rec->r, dec);
    if (dec->gone) {
        webhook_disable_endpoint(d, job->webhook_id, "the receiver answered 410 Gone");
    } else if (failing_too_long(d, failing_since, rec->now_ms)) {
        char since[CLOCK_TIMESTAMP_LEN + 1], reason[128];
        clock_format_ms(failing_since, since);
        snprintf(reason, sizeof reason, "every delivery attempt failed since %s", since);
        webhook_disable_endpoint(d, job->webhook_id, reason);
    }
}

void webhook_record_attempts(webhook_deliver *d, struct webhook_record *recs, size_t n)
{
    assert(n <= WEBHOOK_IN_FLIGHT_MAX);
    struct payment_delivery_attempt a[WEBHOOK_IN_FLIGHT_MAX];
    struct payment_delivery_recorded out[WEBHOOK_IN_FLIGHT_MAX];
    size_t idx[WEBHOOK_IN_FLIGHT_MAX]; /* a[k] is recs[idx[k]]'s */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        struct webhook_record *rec = &recs[i];
        if (record_prepare(d, rec) != 0)
            continue;
        a[m] = (struct payment_delivery_attempt){
            .delivery_id = rec->job->delivery_id,
            .webhook_id = rec->job->webhook_id,
            .owner = d->owner,
            .attempt_json = rec->json.data,
            .status = rec->dec.status,
            .next_ms = rec->dec.next_ms,
            .succeeded = rec->dec.succeeded,
            .at_ms = rec->at_ms,
        };
        idx[m++] = i;
    }
    if (m > 0)
        (void)payment_store_deliveries_record(d->c.store, a, m, out); /* out says each */
    for (size_t k = 0; k < m; k++) {
        struct webhook_record *rec = &recs[idx[k]];
        buf_free(&rec->json);
        record_finish(d, rec, out[k].err, out[k].failing_since_ms);
    }
}

void webhook_record_attempt(webhook_deliver *d, const struct webhook_job *job, int64_t at_ms,
                            const struct webhook_attempt_result *r, int64_t latency_ms)
{
    struct webhook_record rec = {.job = job, .at_ms = at_ms, .r = r, .latency_ms = latency_ms};
    webhook_record_attempts(d, &rec, 1);
}

/* ---- disabling an endpoint -------------------------------------------------- */

/* The endpoint as read, its document copied. */
struct endpoint_copy {
    struct payment_webhook w; /* w.doc points at doc */
    char *doc;                /* owned */
};

static int on_endpoint(void *arg, const struct payment_webhook *w)
{
    struct endpoint_copy *e = arg;
    e->w = *w;
    e->doc = malloc(w->doc_len + 1);
    if (!e->doc)
        return 1;
    memcpy(e->doc, w->doc, w->doc_len);
    e->doc[w->doc_len] = '\0';
    e->w.doc = e->doc;
    return 0;
}

/* One try.  0 done (or nothing to do), 1 to try again (the version moved),
 * -1 failed (logged). */
static int disable_once(webhook_deliver *d, const char *webhook_id, const char *reason)
{
    struct endpoint_copy e = {0};
    int rc = payment_store_webhook_get(d->c.store, webhook_id, on_endpoint, &e);
    if (rc == PAYMENT_STORE_ENOTFOUND) {
        free(e.doc);
        return 0;
    }
    if (rc != PAYMENT_STORE_OK || !e.doc) {
        log_msg(d->c.log, LOG_WARN, "webhooks: endpoint %s: reading it to disable it: %s",
                webhook_id, rc != PAYMENT_STORE_OK ? payment_store_strerror(rc) : "out of memory");
        free(e.doc);
        return -1;
    }
    if (!e.w.enabled) {
        free(e.doc);
        return 0;
    }
    size_t len = 0;
    char *doc = webhook_endpoint_disabled(e.doc, e.w.doc_len, reason, &len);
    if (!doc) {
        log_msg(d->c.log, LOG_WARN, "webhooks: endpoint %s: its document cannot be disabled",
                webhook_id);
        free(e.doc);
        return -1;
    }
    struct payment_webhook w = e.w;
    int64_t expected = w.version;
    w.version = expected + 1;
    w.enabled = 0;
    w.modified_ms = clock_now_ms();
    w.doc = doc;
    w.doc_len = len;
    rc = payment_store_webhook_update(d->c.store, &w, expected);
    free(doc);
    free(e.doc);
    if (rc == PAYMENT_STORE_OK) {
        log_msg(d->c.log, LOG_WARN, "webhooks: endpoint %s disabled: %s", webhook_id, reason);
        return 0;
    }
    if (rc == PAYMENT_STORE_ECONFLICT)
        return 1;
    if (rc == PAYMENT_STORE_ENOTFOUND)
        return 0;
    log_msg(d->c.log, LOG_WARN, "webhooks: endpoint %s: disabling it: %s", webhook_id,
            payment_store_strerror(rc));
    return -1;
}

void webhook_disable_endpoint(webhook_deliver *d, const char *webhook_id, const char *reason)
{
    for (int i = 0; i < DISABLE_TRIES; i++)
        if (disable_once(d, webhook_id, reason) != 1)
            return;
    log_msg(d->c.log, LOG_WARN,
            "webhooks: endpoint %s: not disabled (%s): it changed %d times meanwhile",
            webhook_id, reason, DISABLE_TRIES);
}
