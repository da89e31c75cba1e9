/* test_deliver: the deliverer.  First its decisions, which need no
 * network (webhook/deliver_internal.h, attempt.c): an attempt's outcome
 * under the retry schedule, the jitter's bounds, Retry-After values, and
 * the attempt's JSON object as the store records it.  Then the deliverer
 * itself, its two threads run against a fake store (one event, one
 * endpoint: what deliver.c asks of store.h, in memory) and a receiver on
 * 127.0.0.1 (libmicrohttpd): the request it gets, 410, a refused address,
 * an answer longer than it reads, and a prompt stop with an attempt in
 * flight.  The end-to-end tests over both stores are
 * tests/api/test_webhook_delivery.py. */
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/sync.h"
#include "payment/event.h"
#include "payment/store_impl.h"
#include "test.h"
#include "webhook/deliver_internal.h"
#include "webhook/sign.h"

#define NOW 1790000000123LL /* 2026-09-21T14:13:20.123Z */

static void config(struct webhook_deliver_config *c)
{
    webhook_deliver_config_init(c);
    CHECK_INT(webhook_schedule_parse("0s,5s,5m,30m", c), 0);
}

static struct webhook_decision decide(const struct webhook_deliver_config *c, int attempt,
                                      long status, const char *error, int64_t retry_after_ms,
                                      uint64_t rnd)
{
    struct webhook_attempt_result r = {status, error, retry_after_ms, 0};
    struct webhook_decision dec;
    webhook_attempt_decide(c, attempt, &r, NOW, rnd, &dec);
    return dec;
}

static void test_2xx_succeeds(void)
{
    struct webhook_deliver_config c;
    config(&c);
    static const long ok[] = {200, 201, 202, 204, 299};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct webhook_decision dec = decide(&c, 4, ok[i], NULL, 0, 0); /* even the last */
        CHECK_INT(dec.status, PAYMENT_DELIVERY_SUCCEEDED);
        CHECK_INT(dec.succeeded, 1);
        CHECK_INT(dec.gone, 0);
        CHECK_INT(dec.next_ms, 0);
    }
}

static void test_410_fails_and_disables(void)
{
    struct webhook_deliver_config c;
    config(&c);
    struct webhook_decision dec = decide(&c, 1, 410, NULL, 0, 0); /* retries left: none taken */
    CHECK_INT(dec.status, PAYMENT_DELIVERY_FAILED);
    CHECK_INT(dec.gone, 1);
    CHECK_INT(dec.succeeded, 0);
}

static void test_other_answers_retry_per_schedule(void)
{
    struct webhook_deliver_config c;
    config(&c);
    /* rnd 0 gives the lowest jitter: delay - 10%. */
    static const long bad[] = {0, 199, 300, 301, 302, 400, 404, 429, 500, 503};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct webhook_decision dec = decide(&c, 1, bad[i], bad[i] ? NULL : "timeout", 0, 0);
        CHECK_INT(dec.status, PAYMENT_DELIVERY_PENDING);
        CHECK_INT(dec.next_ms, NOW + 4500); /* schedule[1] = 5 s, less 10% */
        CHECK_INT(dec.succeeded, 0);
        CHECK_INT(dec.gone, 0);
    }
    CHECK_INT(decide(&c, 2, 500, NULL, 0, 0).next_ms, NOW + 270000);    /* 5 m - 10% */
    CHECK_INT(decide(&c, 3, 500, NULL, 0, 0).next_ms, NOW + 1620000);   /* 30 m - 10% */
    /* The schedule has 4 entries: the 4th attempt is the last. */
    struct webhook_decision last = decide(&c, 4, 500, NULL, 0, 0);
    CHECK_INT(last.status, PAYMENT_DELIVERY_FAILED);
    CHECK_INT(last.next_ms, 0);
    CHECK_INT(last.gone, 0);
    CHECK_INT(decide(&c, 9, 500, NULL, 0, 0).status, PAYMENT_DELIVERY_FAILED);
}

static void test_final_fails_at_once(void)
{
    struct webhook_deliver_config c;
    config(&c);
    struct webhook_attempt_result r = {0, "endpoint disabled", 0, 1};
    struct webhook_decision dec;
    webhook_attempt_decide(&c, 1, &r, NOW, 0, &dec);
    CHECK_INT(dec.status, PAYMENT_DELIVERY_FAILED);
    CHECK_INT(dec.gone, 0);
}

static void test_single_entry_schedule_never_retries(void)
{
    struct webhook_deliver_config c;
    webhook_deliver_config_init(&c);
    CHECK_INT(webhook_schedule_parse("0s", &c), 0);
    CHECK_INT(decide(&c, 1, 500, NULL, 0, 0).status, PAYMENT_DELIVERY_FAILED);
}

static void test_retry_after_on_429_and_503(void)
{
    struct webhook_deliver_config c;
    config(&c);
    int64_t later = NOW + 60000; /* after the 5 s of the schedule */
    CHECK_INT(decide(&c, 1, 429, NULL, later, 0).next_ms, later);
    CHECK_INT(decide(&c, 1, 503, NULL, later, 0).next_ms, later);
    /* Other statuses ignore it. */
    CHECK_INT(decide(&c, 1, 500, NULL, later, 0).next_ms, NOW + 4500);
    CHECK_INT(decide(&c, 1, 200, NULL, later, 0).status, PAYMENT_DELIVERY_SUCCEEDED);
    /* Never earlier than the schedule says. */
    CHECK_INT(decide(&c, 1, 429, NULL, NOW + 1000, 0).next_ms, NOW + 4500);
    /* Capped at a day. */
    CHECK_INT(decide(&c, 1, 503, NULL, NOW + 7 * 86400000LL, 0).next_ms,
              NOW + WEBHOOK_RETRY_AFTER_MAX_MS);
    /* A Retry-After does not extend a schedule that ran out. */
    CHECK_INT(decide(&c, 4, 429, NULL, later, 0).status, PAYMENT_DELIVERY_FAILED);
}

static void test_jitter_bounds(void)
{
    CHECK_INT(webhook_jitter(0, 12345), 0);
    CHECK_INT(webhook_jitter(5, 12345), 5); /* too small to vary */
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    uint64_t x = 88172645463325252ULL;
    for (int i = 0; i < 100000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t j = webhook_jitter(5000, x);
        lo = j < lo ? j : lo;
        hi = j > hi ? j : hi;
    }
    CHECK_INT(lo, 4500);
    CHECK_INT(hi, 5500);
    CHECK_INT(webhook_jitter(5000, 0), 4500);
    CHECK_INT(webhook_jitter(5000, 1000), 5500);
    CHECK_INT(webhook_jitter(5000, 500), 5000);
    CHECK_INT(webhook_jitter(5000, UINT64_MAX), 4500 + (int64_t)(UINT64_MAX % 1001));
    /* The longest delay a schedule may hold. */
    CHECK(webhook_jitter(30 * 86400000LL, UINT64_MAX) >= 27 * 86400000LL);
}

static int64_t retry_after(const char *v)
{
    return webhook_retry_after_parse(v, strlen(v), NOW);
}

static void test_retry_after_parse(void)
{
    CHECK_INT(retry_after("120"), NOW + 120000);
    CHECK_INT(retry_after(" 0\r\n"), NOW);
    CHECK_INT(retry_after("\t7 "), NOW + 7000);
    CHECK_INT(retry_after("99999999999999999999999"), NOW + 999999999000LL); /* bounded */
    /* An HTTP-date (IMF-fixdate); one past is now. */
    CHECK_INT(retry_after("Wed, 21 Oct 2026 07:28:00 GMT"), 1792567680000LL);
    CHECK_INT(retry_after("Wed, 21 Oct 2026 07:28:00 GMT\r\n"), 1792567680000LL);
    CHECK_INT(retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), NOW);
    /* Malformed: none. */
    static const char *const bad[] = {
        "", "  ", "-5", "1.5", "12abc", "soon",
        "Wed, 21 Oct 2026 07:28:00 UTC",  /* not GMT */
        "Wed, 31 Feb 2026 07:28:00 GMT",  /* no such day */
        "Wed, 21 Foo 2026 07:28:00 GMT",  /* no such month */
        "Xyz, 21 Oct 2026 07:28:00 GMT",  /* no such weekday */
        "Wed, 21 Oct 2026 24:28:00 GMT",  /* no such hour */
        "Wed, 21 Oct 2026 07:28 GMT",     /* too short */
        "Wednesday, 21-Oct-26 07:28:00 GMT", /* the obsolete forms are not read */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t t = retry_after(bad[i]);
        if (t != 0)
            fprintf(stderr, "  accepted: \"%s\"\n", bad[i]);
        CHECK_INT(t, 0);
    }
}

/* The attempt's JSON, parsed. */
static json_t *attempt_json(int attempt, const struct webhook_attempt_result *r,
                            const struct webhook_decision *dec)
{
    struct buf b = BUF_INIT;
    CHECK_INT(webhook_attempt_json(&b, attempt, NOW, r, 42, dec), 0);
    json_error_t err;
    json_t *j = json_loads(b.data ? b.data : "", 0, &err);
    if (!j)
        fprintf(stderr, "  not JSON: %s\n", b.data ? b.data : "");
    buf_free(&b);
    return j;
}

static void test_attempt_json(void)
{
    struct webhook_attempt_result failed = {500, NULL, 0, 0};
    struct webhook_decision pending = {PAYMENT_DELIVERY_PENDING, NOW + 5000, 0, 0};
    json_t *j = attempt_json(2, &failed, &pending);
    CHECK(j != NULL);
    if (j) {
        CHECK_INT(json_object_size(j), 6);
        CHECK_INT(json_integer_value(json_object_get(j, "attempt")), 2);
        CHECK_STR(json_string_value(json_object_get(j, "at")), "2026-09-21T14:13:20.123Z");
        CHECK_INT(json_integer_value(json_object_get(j, "status_code")), 500);
        CHECK(json_is_null(json_object_get(j, "error")));
        CHECK_INT(json_integer_value(json_object_get(j, "latency_ms")), 42);
        CHECK_STR(json_string_value(json_object_get(j, "next_attempt_at")),
                  "2026-09-21T14:13:25.123Z");
        json_decref(j);
    }
    struct webhook_attempt_result timeout = {0, "no answer \"within\" 15000 ms", 0, 0};
    struct webhook_decision done = {PAYMENT_DELIVERY_FAILED, 0, 0, 0};
    j = attempt_json(10, &timeout, &done);
    CHECK(j != NULL);
    if (j) {
        CHECK(json_is_null(json_object_get(j, "status_code")));
        CHECK_STR(json_string_value(json_object_get(j, "error")), "no answer \"within\" 15000 ms");
        CHECK(json_is_null(json_object_get(j, "next_attempt_at")));
        json_decref(j);
    }
    struct webhook_attempt_result ok = {204, NULL, 0, 0};
    struct webhook_decision succeeded = {PAYMENT_DELIVERY_SUCCEEDED, 0, 1, 0};
    j = attempt_json(1, &ok, &succeeded);
    CHECK(j != NULL);
    if (j) {
        CHECK_INT(json_integer_value(json_object_get(j, "status_code")), 204);
        CHECK(json_is_null(json_object_get(j, "next_attempt_at")));
        json_decref(j);
    }
}

static void test_default_config(void)
{
    struct webhook_deliver_config c;
    webhook_deliver_config_init(&c);
    CHECK_INT(c.timeout_ms, 15000);
    CHECK_INT(c.n_schedule, 10);
    CHECK_INT(c.schedule_ms[0], 0);
    CHECK_INT(c.schedule_ms[9], 24 * 3600000LL);
    CHECK_INT(c.disable_after_ms, 5 * 86400000LL);
    CHECK(c.poll_ms > 0 && c.poll_ms <= 1000);
}

/* ---- the deliverer against a fake store and a loopback receiver ---------- */

#define FAKE_DELIVERIES 8
#define FAKE_SECRET "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
#define FAKE_EVENT_ID "0190b5a2-0000-7000-8000-0000000000e1"
#define FAKE_ORG "0190b5a2-0000-7000-8000-0000000000a1"
#define FAKE_WEBHOOK_ID "0190b5a2-0000-7000-8000-0000000000b1"
#define FAKE_PAYMENT_DOC "{\"id\":\"0190b5a2-0000-7000-8000-0000000000c1\"}"

/* One delivery the fake store holds. */
struct fake_delivery {
    char id[UUID_STR_LEN + 1];
    char event_id[UUID_STR_LEN + 1];
    char *body;                        /* owned */
    size_t body_len;
    enum payment_delivery_status status;
    int attempts;
    int64_t next_ms;
    char owner[WEBHOOK_OWNER_MAX];     /* "" when the lease is free */
    int64_t lease_until_ms;
    struct buf attempts_json;          /* the recorded objects, comma-separated */
};

/* A store of one event (pos 1) and one endpoint, as deliver.c uses it. */
struct fake_store {
    payment_store base;                /* first: the store handle is its address */
    pthread_mutex_t mu;                /* guards everything below */
    struct payment_webhook ep;         /* ep.doc is doc */
    char *doc;                         /* owned */
    int64_t dispatch_pos;
    struct fake_delivery dl[FAKE_DELIVERIES];
    size_t n_dl;
};

static struct fake_store *fake_of(payment_store *s)
{
    return (struct fake_store *)s;
}

static int fake_events(payment_store *s, const struct payment_event_query *q,
                       payment_store_event_fn each, void *arg, int64_t *next_pos)
{
    (void)s;
    struct payment_event ev = {0};
    ev.pos = 1;
    memcpy(ev.id, FAKE_EVENT_ID, sizeof ev.id);
    ev.type = PAYMENT_EVENT_CREATED;
    memcpy(ev.organisation_id, FAKE_ORG, sizeof ev.organisation_id);
    memcpy(ev.payment_id, "0190b5a2-0000-7000-8000-0000000000c1", sizeof ev.payment_id);
    ev.occurred_ms = NOW;
    ev.doc = FAKE_PAYMENT_DOC;
    ev.doc_len = strlen(FAKE_PAYMENT_DOC);
    *next_pos = q->after_pos > 1 ? q->after_pos : 1;
    return q->after_pos < 1 ? each(arg, &ev) : 0;
}

static int fake_dispatch_pos(payment_store *s, int64_t *pos)
{
    struct fake_store *f = fake_of(s);
    sync_lock(&f->mu);
    *pos = f->dispatch_pos;
    sync_unlock(&f->mu);
    return 0;
}

static int fake_webhook_get(payment_store *s, const char *id, payment_store_webhook_fn each,
                            void *arg)
{
    struct fake_store *f = fake_of(s);
    if (strcmp(id, FAKE_WEBHOOK_ID) != 0)
        return PAYMENT_STORE_ENOTFOUND;
    sync_lock(&f->mu);
    int rc = each(arg, &f->ep);
    sync_unlock(&f->mu);
    return rc;
}

static int fake_webhooks_list(payment_store *s, const struct payment_webhook_query *q,
                              payment_store_webhook_fn each, void *arg, int *more)
{
    struct fake_store *f = fake_of(s);
    *more = 0;
    sync_lock(&f->mu);
    int rc = 0;
    if ((!q->enabled_only || f->ep.enabled) && !q->after_id)
        rc = each(arg, &f->ep);
    sync_unlock(&f->mu);
    return rc;
}

static int fake_webhook_update(payment_store *s, const struct payment_webhook *w,
                               int64_t expected_version)
{
    struct fake_store *f = fake_of(s);
    char *doc = strndup(w->doc, w->doc_len);
    if (!doc)
        return PAYMENT_STORE_EINTERNAL;
    sync_lock(&f->mu);
    if (f->ep.version != expected_version) {
        sync_unlock(&f->mu);
        free(doc);
        return PAYMENT_STORE_ECONFLICT;
    }
    free(f->doc);
    f->doc = doc;
    f->ep.doc = doc;
    f->ep.doc_len = w->doc_len;
    f->ep.version = w->version;
    f->ep.enabled = w->enabled;
    sync_unlock(&f->mu);
    return 0;
}

static int fake_deliveries_add(payment_store *s, int64_t expected_pos, int64_t new_pos,
                               const struct payment_delivery_new *d, size_t n, int reset,
                               int64_t now_ms)
{
    (void)reset;
    struct fake_store *f = fake_of(s);
    sync_lock(&f->mu);
    if (f->dispatch_pos != expected_pos) {
        sync_unlock(&f->mu);
        return PAYMENT_STORE_ECONFLICT;
    }
    for (size_t i = 0; i < n && f->n_dl < FAKE_DELIVERIES; i++) {
        struct fake_delivery *x = &f->dl[f->n_dl++];
        memset(x, 0, sizeof *x);
        memcpy(x->id, d[i].id, sizeof x->id);
        memcpy(x->event_id, d[i].event_id, sizeof x->event_id);
        x->body = strndup(d[i].body, d[i].body_len);
        x->body_len = d[i].body_len;
        x->status = PAYMENT_DELIVERY_PENDING;
        x->next_ms = now_ms;
    }
    f->dispatch_pos = new_pos;
    sync_unlock(&f->mu);
    return 0;
}

static int fake_claim(payment_store *s, const char *owner, int64_t now_ms, int64_t lease_ms,
                      uint32_t max, payment_store_delivery_fn each, void *arg)
{
    struct fake_store *f = fake_of(s);
    sync_lock(&f->mu);
    uint32_t n = 0;
    for (size_t i = 0; i < f->n_dl && n < max; i++) {
        struct fake_delivery *x = &f->dl[i];
        if (x->status != PAYMENT_DELIVERY_PENDING || x->next_ms > now_ms ||
            (x->owner[0] && x->lease_until_ms > now_ms))
            continue;
        snprintf(x->owner, sizeof x->owner, "%s", owner);
        x->lease_until_ms = now_ms + lease_ms;
        struct payment_delivery d = {0};
        memcpy(d.id, x->id, sizeof d.id);
        memcpy(d.webhook_id, FAKE_WEBHOOK_ID, sizeof d.webhook_id);
        memcpy(d.event_id, x->event_id, sizeof d.event_id);
        d.status = x->status;
        d.attempts = x->attempts;
        d.body = x->body;
        d.body_len = x->body_len;
        d.attempts_json = "[]";
        each(arg, &d);
        n++;
    }
    sync_unlock(&f->mu);
    return 0;
}

static int fake_record_one(payment_store *s, const struct payment_delivery_attempt *a,
                           int64_t *failing_since_ms)
{
    struct fake_store *f = fake_of(s);
    sync_lock(&f->mu);
    int rc = PAYMENT_STORE_ENOTFOUND;
    for (size_t i = 0; i < f->n_dl; i++) {
        struct fake_delivery *x = &f->dl[i];
        if (strcmp(x->id, a->delivery_id) != 0)
            continue;
        rc = PAYMENT_STORE_ECONFLICT;
        if (strcmp(x->owner, a->owner) != 0)
            break;
        if (x->attempts_json.len)
            buf_puts(&x->attempts_json, ",");
        buf_puts(&x->attempts_json, a->attempt_json);
        x->attempts++;
        x->status = a->status;
        x->next_ms = a->next_ms;
        x->owner[0] = '\0';
        if (!a->succeeded && f->ep.failing_since_ms == 0)
            f->ep.failing_since_ms = a->at_ms;
        else if (a->succeeded)
            f->ep.failing_since_ms = 0;
        if (failing_since_ms)
            *failing_since_ms = f->ep.failing_since_ms;
        rc = 0;
        break;
    }
    sync_unlock(&f->mu);
    return rc;
}

static int fake_record(payment_store *s, const struct payment_delivery_attempt *a, size_t n,
                       struct payment_delivery_recorded *out)
{
    for (size_t i = 0; i < n; i++)
        out[i].err = fake_record_one(s, &a[i], &out[i].failing_since_ms);
    return 0;
}

static int fake_pending(payment_store *s, int64_t *count, int64_t *oldest_ms)
{
    struct fake_store *f = fake_of(s);
    sync_lock(&f->mu);
    *count = 0;
    *oldest_ms = 0;
    for (size_t i = 0; i < f->n_dl; i++)
        if (f->dl[i].status == PAYMENT_DELIVERY_PENDING) {
            (*count)++;
            *oldest_ms = NOW;
        }
    sync_unlock(&f->mu);
    return 0;
}

static const struct payment_store_backend fake_backend = {
    .events = fake_events,
    .dispatch_pos = fake_dispatch_pos,
    .webhook_get = fake_webhook_get,
    .webhooks_list = fake_webhooks_list,
    .webhook_update = fake_webhook_update,
    .deliveries_add = fake_deliveries_add,
    .deliveries_claim = fake_claim,
    .deliveries_record = fake_record,
    .deliveries_pending = fake_pending,
};

/* A fake store whose endpoint delivers to url. */
static void fake_open(struct fake_store *f, const char *url)
{
    memset(f, 0, sizeof *f);
    f->base.backend = &fake_backend;
    CHECK_INT(pthread_mutex_init(&f->mu, NULL), 0);
    struct buf doc = BUF_INIT;
    buf_printf(&doc,
               "{\"url\":\"%s\",\"event_types\":[\"*\"],\"description\":\"\","
               "\"status\":\"enabled\",\"disabled_reason\":null,\"secrets\":[{\"secret\":\"%s\","
               "\"created_ms\":0,\"expires_ms\":0}]}",
               url, FAKE_SECRET);
    f->doc = buf_steal(&doc, &f->ep.doc_len);
    f->ep.doc = f->doc;
    memcpy(f->ep.id, FAKE_WEBHOOK_ID, sizeof f->ep.id);
    memcpy(f->ep.organisation_id, FAKE_ORG, sizeof f->ep.organisation_id);
    f->ep.enabled = 1;
    f->ep.types = PAYMENT_EVENT_CREATED | PAYMENT_EVENT_UPDATED | PAYMENT_EVENT_DELETED;
}

static void fake_close(struct fake_store *f)
{
    for (size_t i = 0; i < f->n_dl; i++) {
        free(f->dl[i].body);
        buf_free(&f->dl[i].attempts_json);
    }
    free(f->doc);
    pthread_mutex_destroy(&f->mu);
}

/* The first delivery's status and attempts' JSON ("" when none), read
 * under the lock. */
static enum payment_delivery_status fake_delivery_status(struct fake_store *f, char *json,
                                                         size_t size)
{
    sync_lock(&f->mu);
    enum payment_delivery_status st = f->n_dl ? f->dl[0].status : 0;
    snprintf(json, size, "%s", f->n_dl && f->dl[0].attempts_json.data ?
                                   f->dl[0].attempts_json.data : "");
    sync_unlock(&f->mu);
    return st;
}

/* The endpoint's enabled column, read under the lock. */
static int fake_endpoint_enabled(struct fake_store *f)
{
    sync_lock(&f->mu);
    int enabled = f->ep.enabled;
    sync_unlock(&f->mu);
    return enabled;
}

/* A receiver: what it answers, and what it got. */
struct receiver {
    struct MHD_Daemon *mhd;
    uint16_t port;
    pthread_mutex_t mu;               /* guards what follows */
    unsigned status;                  /* to answer */
    size_t answer_len;                /* bytes of the answer's body */
    int sleep_ms;                     /* before answering */
    int requests;                     /* completed uploads seen */
    char id[64], timestamp[32], signature[256], content_type[64], user_agent[64];
    struct buf body;                  /* of the last request */
};

/* The upload in progress of one request. */
struct upload {
    struct buf body;
};

static void copy_header(struct MHD_Connection *c, const char *name, char *out, size_t size)
{
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
    snprintf(out, size, "%s", v ? v : "");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **state)
{
    (void)url;
    (void)method;
    (void)version;
    struct receiver *rx = cls;
    struct upload *up = *state;
    if (!up) {
        up = calloc(1, sizeof *up);
        *state = up;
        return up ? MHD_YES : MHD_NO;
    }
    if (*upload_size) {
        buf_append(&up->body, upload_data, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    sync_lock(&rx->mu);
    rx->requests++;
    copy_header(c, "webhook-id", rx->id, sizeof rx->id);
    copy_header(c, "webhook-timestamp", rx->timestamp, sizeof rx->timestamp);
    copy_header(c, "webhook-signature", rx->signature, sizeof rx->signature);
    copy_header(c, "Content-Type", rx->content_type, sizeof rx->content_type);
    copy_header(c, "User-Agent", rx->user_agent, sizeof rx->user_agent);
    buf_reset(&rx->body);
    buf_append(&rx->body, up->body.data ? up->body.data : "", up->body.len);
    unsigned status = rx->status;
    size_t len = rx->answer_len;
    int sleep_ms = rx->sleep_ms;
    sync_unlock(&rx->mu);
    if (sleep_ms)
        usleep((useconds_t)sleep_ms * 1000);
    char *answer = malloc(len + 1);
    if (!answer)
        return MHD_NO;
    memset(answer, 'x', len);
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, answer, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(answer);
        return MHD_NO;
    }
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **state,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    struct upload *up = *state;
    if (up) {
        buf_free(&up->body);
        free(up);
    }
    *state = NULL;
}

static int receiver_start(struct receiver *rx, unsigned status)
{
    memset(rx, 0, sizeof *rx);
    rx->status = status;
    CHECK_INT(pthread_mutex_init(&rx->mu, NULL), 0);
    rx->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION,
                               0, NULL, NULL, on_request, rx, MHD_OPTION_NOTIFY_COMPLETED,
                               on_completed, rx, MHD_OPTION_SOCK_ADDR, NULL, MHD_OPTION_END);
    CHECK(rx->mhd != NULL);
    if (!rx->mhd)
        return -1;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(rx->mhd, MHD_DAEMON_INFO_BIND_PORT);
    rx->port = info ? info->port : 0;
    CHECK(rx->port != 0);
    return rx->port ? 0 : -1;
}

static void receiver_stop(struct receiver *rx)
{
    if (rx->mhd)
        MHD_stop_daemon(rx->mhd);
    buf_free(&rx->body);
    pthread_mutex_destroy(&rx->mu);
}

static int receiver_requests(struct receiver *rx)
{
    sync_lock(&rx->mu);
    int n = rx->requests;
    sync_unlock(&rx->mu);
    return n;
}

static const struct logger quiet = {LOG_ERROR, 2};

/* A deliverer on f: fast polls, a short timeout, two attempts. */
static webhook_deliver *deliverer_start(struct fake_store *f, int allow_private)
{
    struct webhook_deliver_config c;
    webhook_deliver_config_init(&c);
    c.store = &f->base;
    c.log = &quiet;
    c.timeout_ms = 2000;
    c.poll_ms = 50;
    c.allow_private = allow_private;
    CHECK_INT(webhook_schedule_parse("0s,1h", &c), 0);
    webhook_deliver *d = webhook_deliver_start(&c);
    CHECK(d != NULL);
    return d;
}

/* Waits up to 10 s for the first delivery to have an attempt recorded;
 * returns its status, its attempts' JSON in json. */
static enum payment_delivery_status wait_recorded(struct fake_store *f, char *json, size_t size)
{
    for (int i = 0; i < 1000; i++) {
        enum payment_delivery_status st = fake_delivery_status(f, json, size);
        if (json[0])
            return st;
        usleep(10000);
    }
    return 0;
}

static void url_of(const struct receiver *rx, char *out, size_t size)
{
    snprintf(out, size, "http://127.0.0.1:%u/hook", (unsigned)rx->port);
}

/* A receiver answering status and a fake store whose one endpoint is its
 * url: what each delivery below starts from. */
struct delivery_case {
    struct receiver rx;
    struct fake_store f;
};

/* 0, or -1 (a failed check) when the receiver cannot start. */
static int case_open(struct delivery_case *c, unsigned status)
{
    if (receiver_start(&c->rx, status) != 0)
        return -1;
    char url[64];
    url_of(&c->rx, url, sizeof url);
    fake_open(&c->f, url);
    return 0;
}

static void case_close(struct delivery_case *c)
{
    fake_close(&c->f);
    receiver_stop(&c->rx);
}

static void test_delivers_signed_request(void)
{
    struct delivery_case c;
    if (case_open(&c, 204) != 0)
        return;
    char json[2048];
    webhook_deliver *d = deliverer_start(&c.f, 1);
    CHECK_INT(wait_recorded(&c.f, json, sizeof json), PAYMENT_DELIVERY_SUCCEEDED);
    CHECK(strstr(json, "\"attempt\":1,") && strstr(json, "\"status_code\":204,"));
    CHECK(strstr(json, "\"error\":null") && strstr(json, "\"next_attempt_at\":null"));
    struct buf m = BUF_INIT;
    webhook_deliver_metrics(d, &m);
    CHECK(strstr(m.data, "paymentd_webhook_deliveries_total{outcome=\"succeeded\"} 1\n"));
    CHECK(strstr(m.data, "paymentd_webhook_attempts_total 1\n"));
    buf_free(&m);
    webhook_deliver_stop(d);

    CHECK_INT(receiver_requests(&c.rx), 1);
    CHECK_STR(c.rx.id, FAKE_EVENT_ID);
    CHECK_STR(c.rx.content_type, "application/json");
    CHECK(strstr(c.rx.user_agent, "paymentd") == c.rx.user_agent);
    /* The body is the event as GET /v1/events renders it. */
    struct buf want = BUF_INIT;
    CHECK(c.rx.body.data && strstr(c.rx.body.data, "\"id\":\"" FAKE_EVENT_ID "\"") &&
          strstr(c.rx.body.data, "\"event_type\":\"payment.created\"") &&
          strstr(c.rx.body.data, "\"payment\":" FAKE_PAYMENT_DOC));
    /* Signed over the timestamp sent, which is about now. */
    int64_t ts = strtoll(c.rx.timestamp, NULL, 10);
    CHECK(llabs(ts - clock_now_ms() / 1000) < 30);
    CHECK_INT(webhook_sign(FAKE_SECRET, FAKE_EVENT_ID, ts, c.rx.body.data, c.rx.body.len, &want),
              0);
    CHECK_STR(c.rx.signature, want.data);
    buf_free(&want);
    case_close(&c);
}

static void test_gone_disables_endpoint(void)
{
    struct delivery_case c;
    if (case_open(&c, 410) != 0)
        return;
    char json[2048];
    webhook_deliver *d = deliverer_start(&c.f, 1);
    CHECK_INT(wait_recorded(&c.f, json, sizeof json), PAYMENT_DELIVERY_FAILED);
    CHECK(strstr(json, "\"status_code\":410,") != NULL);
    for (int i = 0; i < 500 && fake_endpoint_enabled(&c.f); i++) /* right after the record */
        usleep(10000);
    webhook_deliver_stop(d);
    CHECK_INT(c.f.ep.enabled, 0);
    CHECK_INT(c.f.ep.version, 1);
    CHECK(strstr(c.f.doc, "\"status\":\"disabled\"") && strstr(c.f.doc, "410 Gone"));
    case_close(&c);
}

static void test_refused_address_is_retried(void)
{
    struct delivery_case c;
    if (case_open(&c, 200) != 0)
        return;
    char json[2048];
    webhook_deliver *d = deliverer_start(&c.f, 0); /* 127.0.0.1 refused */
    CHECK_INT(wait_recorded(&c.f, json, sizeof json), PAYMENT_DELIVERY_PENDING);
    webhook_deliver_stop(d);
    CHECK(strstr(json, "\"status_code\":null,") && strstr(json, "refused"));
    CHECK(strstr(json, "\"next_attempt_at\":\"") != NULL);
    CHECK_INT(receiver_requests(&c.rx), 0);
    case_close(&c);
}

static void test_long_answer_read_up_to_limit(void)
{
    struct delivery_case c;
    if (case_open(&c, 200) != 0)
        return;
    c.rx.answer_len = 4 * WEBHOOK_ANSWER_MAX;
    char json[2048];
    webhook_deliver *d = deliverer_start(&c.f, 1);
    CHECK_INT(wait_recorded(&c.f, json, sizeof json), PAYMENT_DELIVERY_SUCCEEDED);
    CHECK(strstr(json, "\"status_code\":200,") != NULL);
    webhook_deliver_stop(d);
    case_close(&c);
}

static void test_disabled_endpoint_fails_unsent(void)
{
    struct delivery_case c;
    if (case_open(&c, 200) != 0)
        return;
    char json[2048];
    /* Dispatched while enabled, then disabled. */
    struct payment_delivery_new n = {.id = "0190b5a2-0000-7000-8000-0000000000d1",
                                     .webhook_id = FAKE_WEBHOOK_ID,
                                     .event_id = FAKE_EVENT_ID,
                                     .event_pos = 1,
                                     .body = "{}",
                                     .body_len = 2};
    CHECK_INT(fake_deliveries_add(&c.f.base, 0, 1, &n, 1, 0, clock_now_ms()), 0);
    c.f.ep.enabled = 0;
    webhook_deliver *d = deliverer_start(&c.f, 1);
    CHECK_INT(wait_recorded(&c.f, json, sizeof json), PAYMENT_DELIVERY_FAILED);
    webhook_deliver_stop(d);
    CHECK(strstr(json, "\"status_code\":null,") && strstr(json, "\"error\":\"endpoint disabled\""));
    CHECK_INT(receiver_requests(&c.rx), 0);
    case_close(&c);
}

static void test_stop_abandons_attempt_in_flight(void)
{
    struct delivery_case c;
    if (case_open(&c, 200) != 0)
        return;
    c.rx.sleep_ms = 1500;
    char json[2048];
    webhook_deliver *d = deliverer_start(&c.f, 1);
    for (int i = 0; i < 500 && receiver_requests(&c.rx) == 0; i++)
        usleep(10000);
    CHECK_INT(receiver_requests(&c.rx), 1);
    int64_t t0 = clock_mono_us();
    webhook_deliver_stop(d);
    int64_t took_ms = (clock_mono_us() - t0) / 1000;
    if (took_ms >= 500)
        fprintf(stderr, "  stop took %lld ms\n", (long long)took_ms);
    CHECK(took_ms < 500);
    /* Abandoned: nothing recorded, the lease still held. */
    CHECK_INT(fake_delivery_status(&c.f, json, sizeof json), PAYMENT_DELIVERY_PENDING);
    CHECK_STR(json, "");
    CHECK(c.f.dl[0].owner[0] != '\0');
    case_close(&c);
}

TEST_MAIN({"2xx_succeeds", test_2xx_succeeds},
          {"410_fails_and_disables", test_410_fails_and_disables},
          {"other_answers_retry_per_schedule", test_other_answers_retry_per_schedule},
          {"final_fails_at_once", test_final_fails_at_once},
          {"single_entry_schedule_never_retries", test_single_entry_schedule_never_retries},
          {"retry_after_on_429_and_503", test_retry_after_on_429_and_503},
          {"jitter_bounds", test_jitter_bounds},
          {"retry_after_parse", test_retry_after_parse},
          {"attempt_json", test_attempt_json},
          {"default_config", test_default_config},
          {"delivers_signed_request", test_delivers_signed_request},
          {"gone_disables_endpoint", test_gone_disables_endpoint},
          {"refused_address_is_retried", test_refused_address_is_retried},
          {"long_answer_read_up_to_limit", test_long_answer_read_up_to_limit},
          {"disabled_endpoint_fails_unsent", test_disabled_endpoint_fails_unsent},
          {"stop_abandons_attempt_in_flight", test_stop_abandons_attempt_in_flight})
