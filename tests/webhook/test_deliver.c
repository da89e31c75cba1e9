/* test_deliver: the deliverer's decisions that need no network
 * (webhook/deliver_internal.h, attempt.c): an attempt's outcome under the
 * retry schedule, the jitter's bounds, Retry-After values, and the
 * attempt's JSON object as the store records it. */
#include <jansson.h>
#include <stdint.h>
#include <string.h>

#include "test.h"
#include "webhook/deliver_internal.h"

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

TEST_MAIN({"2xx_succeeds", test_2xx_succeeds},
          {"410_fails_and_disables", test_410_fails_and_disables},
          {"other_answers_retry_per_schedule", test_other_answers_retry_per_schedule},
          {"final_fails_at_once", test_final_fails_at_once},
          {"single_entry_schedule_never_retries", test_single_entry_schedule_never_retries},
          {"retry_after_on_429_and_503", test_retry_after_on_429_and_503},
          {"jitter_bounds", test_jitter_bounds},
          {"retry_after_parse", test_retry_after_parse},
          {"attempt_json", test_attempt_json},
          {"default_config", test_default_config})
