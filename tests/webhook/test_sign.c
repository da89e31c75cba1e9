/* test_sign: Standard Webhooks signatures (webhook/sign.h).
 *
 * The expected signatures were computed independently of this code, with
 * Python's standard library (/usr/bin/python3):
 *
 *   import hmac, hashlib, base64
 *   def sig(secret, msg_id, ts, body):
 *       key = base64.b64decode(secret[len("whsec_"):])
 *       mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256)
 *       return "v1," + base64.b64encode(mac.digest()).decode()
 *
 * The first vector is also the example the specification publishes. */
#include "webhook/sign.h"

#include <string.h>

#include "test.h"

#define SPEC_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define SPEC_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define SPEC_TS 1614265330
#define SPEC_BODY "{\"test\": 2432232314}"
#define SPEC_SIG "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

/* base64 of the bytes 1..32: a key with padding. */
#define PADDED_SECRET "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
#define EVENT_ID "0190b5a2-0000-7000-8000-000000000001"
#define EVENT_TS 1700000000
#define EVENT_BODY "{\"a\":1}"
/* sig(PADDED_SECRET, EVENT_ID, EVENT_TS, b'{"a":1}') */
#define PADDED_SIG "v1,JvaHovjpwPjBvLwXP/xx21j/0aLlBXjwtuj+F0bNlgo="
/* sig(SPEC_SECRET, EVENT_ID, EVENT_TS, b'{"a":1}') */
#define SPEC_KEY_EVENT_SIG "v1,nUU0qYJejQErg9jGA5dlQO0IQFAAyO5GGsKUi94snQs="

static void test_specification_vector(void)
{
    struct buf b = BUF_INIT;
    CHECK_INT(webhook_sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY, strlen(SPEC_BODY), &b), 0);
    CHECK_STR(b.data, SPEC_SIG);
    buf_free(&b);
}

static void test_empty_body(void)
{
    /* sig(SPEC_SECRET, SPEC_ID, SPEC_TS, b'') */
    struct buf b = BUF_INIT;
    CHECK_INT(webhook_sign(SPEC_SECRET, SPEC_ID, SPEC_TS, "", 0, &b), 0);
    CHECK_STR(b.data, "v1,v48jdbgvh29KJz2Qc+ghw8G6vG3nAKnujWBg8oM/62A=");
    buf_free(&b);
}

static void test_padded_key(void)
{
    struct buf b = BUF_INIT;
    CHECK_INT(webhook_sign(PADDED_SECRET, EVENT_ID, EVENT_TS, EVENT_BODY, strlen(EVENT_BODY), &b),
              0);
    CHECK_STR(b.data, PADDED_SIG);
    buf_free(&b);
}

static void test_body_bytes_are_len_not_nul(void)
{
    /* Only len bytes of the body are signed. */
    struct buf b = BUF_INIT;
    const char body[] = EVENT_BODY "trailing";
    CHECK_INT(webhook_sign(PADDED_SECRET, EVENT_ID, EVENT_TS, body, strlen(EVENT_BODY), &b), 0);
    CHECK_STR(b.data, PADDED_SIG);
    buf_free(&b);
}

static void test_two_secrets_space_separated(void)
{
    struct buf b = BUF_INIT;
    CHECK_INT(webhook_sign(PADDED_SECRET, EVENT_ID, EVENT_TS, EVENT_BODY, strlen(EVENT_BODY), &b),
              0);
    CHECK_INT(webhook_sign(SPEC_SECRET, EVENT_ID, EVENT_TS, EVENT_BODY, strlen(EVENT_BODY), &b),
              0);
    CHECK_STR(b.data, PADDED_SIG " " SPEC_KEY_EVENT_SIG);
    buf_free(&b);
}

static void test_malformed_secrets(void)
{
    static const char *const bad[] = {
        "",                                        /* nothing */
        "whsec_",                                  /* no key */
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",        /* no prefix */
        "whsek_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  /* another prefix */
        "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  /* prefix in capitals */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS",   /* not a multiple of four */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa!w",  /* outside the alphabet */
        "whsec_MfKQ9r8GKYqrTwjUPD8I LPZIo2LaLaS",  /* a space */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa-_",  /* the url-safe alphabet */
        "whsec_MfK=9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  /* padding inside */
        "whsec_====",                              /* padding only */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYqrTwjUPD"
        "8ILPZIo2LaLaSw",                          /* longer than WEBHOOK_SECRET_MAX */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct buf b = BUF_INIT;
        int rc = webhook_sign(bad[i], EVENT_ID, EVENT_TS, EVENT_BODY, strlen(EVENT_BODY), &b);
        if (rc != -1)
            fprintf(stderr, "  accepted: \"%s\"\n", bad[i]);
        CHECK_INT(rc, -1);
        CHECK_INT(b.len, 0); /* nothing appended */
        buf_free(&b);
    }
}

TEST_MAIN({"specification_vector", test_specification_vector},
          {"empty_body", test_empty_body},
          {"padded_key", test_padded_key},
          {"body_bytes_are_len_not_nul", test_body_bytes_are_len_not_nul},
          {"two_secrets_space_separated", test_two_secrets_space_separated},
          {"malformed_secrets", test_malformed_secrets})
