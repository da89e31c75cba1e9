/* request: one delivery attempt's HTTP request (deliver_internal.h): a
 * POST of the body with the Standard Webhooks headers (every secret the
 * endpoint has at the attempt signs), no redirects followed, http and https
 * only (also for a redirect), no proxy (a proxy would connect on our
 * behalf, past the address check), certificates verified against the
 * system's store, each connection's address checked (url.h: DNS may
 * answer otherwise than at registration), the answer read up to
 * WEBHOOK_ANSWER_MAX bytes and none of it kept; and what a finished
 * transfer gave.
 *
 * Threads: made by the sender thread, then the transfer thread's (the
 * callbacks run in its curl_multi_perform) until finished, then the
 * sender's again. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "core/clock.h"
#include "webhook/deliver_internal.h"
#include "webhook/endpoint.h"
#include "webhook/sign.h"
#include "webhook/url.h"

#define USER_AGENT "paymentd-webhooks/1"

/* ---- libcurl's callbacks ------------------------------------------------------ */

/* Reads the answer up to WEBHOOK_ANSWER_MAX bytes, keeping none: past it,
 * the transfer stops (a write error webhook_request_finish knows). */
static size_t on_answer(char *data, size_t size, size_t nmemb, void *arg)
{
    (void)data;
    struct webhook_request *q = arg;
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
    struct webhook_request *q = arg;
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
    struct webhook_request *q = arg;
    if (purpose != CURLSOCKTYPE_IPCXN ||
        !webhook_addr_allowed(&a->addr, q->d->c.allow_private)) {
        q->refused = 1;
        return CURL_SOCKET_BAD;
    }
    int fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    return fd >= 0 ? fd : CURL_SOCKET_BAD;
}

/* ---- making it ------------------------------------------------------------------- */

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
static const char *make_headers(struct webhook_request *q, const struct webhook_target *t)
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
static int set_options(struct webhook_request *q, const char *url)
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

struct webhook_request *webhook_request_new(webhook_deliver *d, struct webhook_job *job,
                                            const struct webhook_target *t, const char **why)
{
    struct webhook_request *q = calloc(1, sizeof *q);
    if (!q) {
        *why = "out of memory";
        return NULL;
    }
    q->job = *job;
    q->d = d;
    q->at_ms = clock_now_ms();
    q->started_us = clock_mono_us();
    *why = make_headers(q, t);
    if (!*why && (!(q->easy = curl_easy_init()) || set_options(q, t->url) != 0))
        *why = "cannot set up the request";
    if (*why) {
        q->job.body = NULL; /* still job's */
        webhook_request_free(q);
        return NULL;
    }
    job->body = NULL; /* q's now */
    return q;
}

void webhook_request_free(struct webhook_request *q)
{
    if (!q)
        return;
    if (q->easy)
        curl_easy_cleanup(q->easy);
    curl_slist_free_all(q->headers);
    free(q->job.body);
    free(q);
}

/* ---- what it gave ------------------------------------------------------------------ */

void webhook_request_finish(struct webhook_request *q, CURLcode result)
{
    q->latency_ms = (clock_mono_us() - q->started_us) / 1000;
    struct webhook_attempt_result *r = &q->outcome;
    memset(r, 0, sizeof *r);
    long status = 0;
    /* An answer cut at WEBHOOK_ANSWER_MAX is an answer all the same. */
    if ((result == CURLE_OK || (result == CURLE_WRITE_ERROR && q->answer_cut)) &&
        curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
        status = 0;
    if (status > 0) {
        r->status = status;
        r->retry_after_ms = webhook_retry_after_parse(q->retry_after, strlen(q->retry_after),
                                                      clock_now_ms());
    } else if (q->refused) {
        r->error = "the destination's address is refused (private or reserved)";
    } else if (result == CURLE_OPERATION_TIMEDOUT) {
        snprintf(q->error, sizeof q->error, "no answer within %" PRId64 " ms",
                 q->d->c.timeout_ms);
        r->error = q->error;
    } else {
        snprintf(q->error, sizeof q->error, "%.60s%s%.90s", curl_easy_strerror(result),
                 q->errbuf[0] ? ": " : "", q->errbuf);
        r->error = q->error;
    }
}
