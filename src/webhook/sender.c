/* sender: the sender thread (deliver.h).  It claims due deliveries under a
 * lease (timeout + WEBHOOK_LEASE_EXTRA_MS), at most WEBHOOK_IN_FLIGHT_MAX in
 * flight, and POSTs each with libcurl's multi interface: signed with the
 * secrets the endpoint has at the attempt, no redirects followed, http and
 * https only, no proxy, certificates verified against the system's store,
 * every connection's address checked (url.h: against DNS rebinding), the
 * answer read up to WEBHOOK_ANSWER_MAX bytes and not kept.  A finished
 * transfer's outcome is recorded by record.c.
 *
 * It claims when woken (new deliveries, a retry), every poll_ms, and at
 * once while claims come back full and there is room; it reads the pending
 * gauges every WEBHOOK_PENDING_EVERY_MS.  Between, it waits in
 * curl_multi_poll, which curl_multi_wakeup interrupts (wake, stop).
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
#include <strings.h>
#include <sys/socket.h>

#include "core/clock.h"
#include "core/sync.h"
#include "webhook/deliver_internal.h"
#include "webhook/endpoint.h"
#include "webhook/sign.h"
#include "webhook/url.h"

#define USER_AGENT "paymentd-webhooks/1"
#define RETRY_AFTER_MAX 64 /* bytes of a Retry-After value kept */

/* One attempt in flight. */
struct sender_req {
    struct webhook_job job;          /* what is attempted; owns the body */
    webhook_deliver *d;
    CURL *easy;                      /* in d->multi */
    struct curl_slist *headers;      /* owned */
    int64_t at_ms;                   /* when it was begun */
    int64_t started_us;              /* monotonic, for the latency */
    size_t answer_bytes;             /* of the answer's body read */
    int answer_cut;                  /* the answer was longer than WEBHOOK_ANSWER_MAX */
    int refused;                     /* a connection's address was refused */
    char retry_after[RETRY_AFTER_MAX]; /* the final answer's Retry-After value, or "" */
    char errbuf[CURL_ERROR_SIZE];    /* libcurl's detail of a failure */
    struct sender_req *prev, *next;  /* the in-flight list */
};

/* The thread's own state. */
struct sender {
    webhook_deliver *d;
    struct sender_req *flight;       /* attempts in flight */
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

static void req_free(struct sender_req *q)
{
    if (q->easy)
        curl_easy_cleanup(q->easy);
    curl_slist_free_all(q->headers);
    job_free(&q->job);
    free(q);
}

/* ---- libcurl callbacks --------------------------------------------------------- */

/* Reads the answer up to WEBHOOK_ANSWER_MAX bytes, keeping none: past it,
 * the transfer stops (a write error that finish_req knows). */
static size_t on_answer(char *data, size_t size, size_t nmemb, void *arg)
{
    (void)data;
    struct sender_req *q = arg;
    size_t n = size * nmemb;
    if (n > WEBHOOK_ANSWER_MAX - q->answer_bytes) {
        q->answer_cut = 1;
        return 0;
    }
    q->answer_bytes += n;
    return n;
}

/* Keeps the Retry-After of the last answer (a status line forgets the one
 * of an interim answer). */
static size_t on_header(char *line, size_t size, size_t nitems, void *arg)
{
    struct sender_req *q = arg;
    size_t n = size * nitems;
    static const char name[] = "retry-after:";
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        q->retry_after[0] = '\0';
    } else if (n > sizeof name - 1 && strncasecmp(line, name, sizeof name - 1) == 0) {
        size_t len = n - (sizeof name - 1);
        if (len >= sizeof q->retry_after)
            len = sizeof q->retry_after - 1;
        memcpy(q->retry_after, line + sizeof name - 1, len);
        q->retry_after[len] = '\0';
    }
    return n;
}

/* Opens a connection's socket only to an address url.h allows: checked at
 * each connection, whatever DNS said at registration. */
static curl_socket_t on_open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct sender_req *q = arg;
    if (purpose != CURLSOCKTYPE_IPCXN ||
        !webhook_addr_allowed(&a->addr, q->d->c.allow_private)) {
        q->refused = 1;
        return CURL_SOCKET_BAD;
    }
    int fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    return fd >= 0 ? fd : CURL_SOCKET_BAD;
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

/* Appends the header "name: value" to *list.  0, or -1 out of memory. */
static int add_header(struct curl_slist **list, const char *name, const char *value)
{
    struct buf h = BUF_INIT;
    buf_printf(&h, "%s: %s", name, value);
    struct curl_slist *l = buf_failed(&h) ? NULL : curl_slist_append(*list, h.data);
    buf_free(&h);
    if (!l)
        return -1;
    *list = l;
    return 0;
}

/* The request's headers: the Standard Webhooks ones (every secret of t
 * signs), the content type, and none for Expect (no 100-continue wait).
 * 0, or an error text for the attempt. */
static const char *make_headers(struct sender_req *q, const struct webhook_target *t)
{
    int64_t ts = q->at_ms / 1000;
    struct buf sig = BUF_INIT;
    for (int i = 0; i < t->n_secrets; i++)
        if (webhook_sign(t->secrets[i], q->job.event_id, ts, q->job.body, q->job.body_len,
                         &sig) != 0) {
            buf_free(&sig);
            return "a signing secret is malformed";
        }
    char tsbuf[32];
    snprintf(tsbuf, sizeof tsbuf, "%" PRId64, ts);
    int rc = sig.data ? 0 : -1;
    if (rc == 0)
        rc = add_header(&q->headers, "webhook-id", q->job.event_id);
    if (rc == 0)
        rc = add_header(&q->headers, "webhook-timestamp", tsbuf);
    if (rc == 0)
        rc = add_header(&q->headers, "webhook-signature", sig.data);
    if (rc == 0)
        rc = add_header(&q->headers, "Content-Type", "application/json");
    if (rc == 0) {
        struct curl_slist *l = curl_slist_append(q->headers, "Expect:");
        rc = l ? 0 : -1;
        if (l)
            q->headers = l;
    }
    buf_free(&sig);
    return rc == 0 ? NULL : "out of memory";
}

/* Sets the easy handle's options for url.  0, or -1 (a libcurl failure). */
static int set_options(struct sender_req *q, const char *url)
{
    CURL *e = q->easy;
    const webhook_deliver *d = q->d;
    int ok = curl_easy_setopt(e, CURLOPT_URL, url) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_PROXY, "") == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)d->c.timeout_ms) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_USERAGENT, USER_AGENT) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_POST, 1L) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_POSTFIELDS, q->job.body) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->job.body_len) ==
                 CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_HTTPHEADER, q->headers) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_answer) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_WRITEDATA, q) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_HEADERDATA, q) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, q) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_ERRORBUFFER, q->errbuf) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_PRIVATE, q) == CURLE_OK;
    return ok ? 0 : -1;
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
    struct sender_req *q = calloc(1, sizeof *q);
    const char *why = "out of memory";
    if (q) {
        q->job = *job;
        job->body = NULL; /* q owns it now */
        q->d = d;
        q->at_ms = clock_now_ms();
        q->started_us = clock_mono_us();
        why = make_headers(q, &e.target);
        if (!why && (!(q->easy = curl_easy_init()) || set_options(q, e.target.url) != 0))
            why = "cannot set up the request";
    }
    webhook_target_free(&e.target);
    if (!why) {
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
    }
    record_unsent(d, q ? &q->job : job, why, 0);
    if (q)
        req_free(q);
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

static void unlink_req(struct sender *s, struct sender_req *q)
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
static void finish_req(struct sender *s, struct sender_req *q, CURLcode result)
{
    webhook_deliver *d = s->d;
    int64_t latency_ms = (clock_mono_us() - q->started_us) / 1000;
    struct webhook_attempt_result r = {0};
    char error[WEBHOOK_ERROR_MAX];
    long status = 0;
    if (result == CURLE_OK || (result == CURLE_WRITE_ERROR && q->answer_cut)) {
        if (curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
            status = 0;
    }
    if (status > 0) {
        r.status = status;
        r.retry_after_ms = webhook_retry_after_parse(q->retry_after, strlen(q->retry_after),
                                                     clock_now_ms());
    } else if (q->refused) {
        r.error = "the destination's address is refused (private or reserved)";
    } else if (result == CURLE_OPERATION_TIMEDOUT) {
        snprintf(error, sizeof error, "no answer within %" PRId64 " ms", d->c.timeout_ms);
        r.error = error;
    } else {
        snprintf(error, sizeof error, "%.60s%s%.90s", curl_easy_strerror(result),
                 q->errbuf[0] ? ": " : "", q->errbuf);
        r.error = error;
    }
    CURLMcode mc = curl_multi_remove_handle(d->multi, q->easy);
    if (mc != CURLM_OK)
        log_msg(d->c.log, LOG_WARN, "webhooks: curl_multi_remove_handle: %s",
                curl_multi_strerror(mc));
    unlink_req(s, q);
    webhook_record_attempt(d, &q->job, q->at_ms, &r, latency_ms);
    req_free(q);
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
        finish_req(s, (struct sender_req *)priv, m->data.result);
    }
    return 0;
}

/* Abandons every transfer in flight: unrecorded, their leases run out. */
static void abandon_all(struct sender *s)
{
    while (s->flight) {
        struct sender_req *q = s->flight;
        CURLMcode mc = curl_multi_remove_handle(s->d->multi, q->easy);
        if (mc != CURLM_OK)
            log_msg(s->d->c.log, LOG_WARN, "webhooks: curl_multi_remove_handle: %s",
                    curl_multi_strerror(mc));
        unlink_req(s, q);
        req_free(q);
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
        if (drive(&s) != 0 && sync_pause_ms(&d->cv, &d->mu, &d->stopping, d->c.poll_ms))
            break;
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
