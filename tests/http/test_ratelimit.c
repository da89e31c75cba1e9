#include "http/ratelimit.h"

#include <stdio.h>

#include "test.h"

static void test_burst_then_refill(void)
{
    ratelimit *rl = ratelimit_new(5);
    CHECK(rl != NULL);
    if (!rl)
        return;
    int64_t t = 1000000;
    for (int i = 0; i < 5; i++)
        CHECK_INT(ratelimit_take(rl, "key:a", t), 0);
    CHECK_INT(ratelimit_take(rl, "key:a", t), 1);  /* empty: a token in 0.2 s, said as 1 s */
    CHECK_INT(ratelimit_take(rl, "key:b", t), 0);  /* another caller has its own bucket */
    CHECK_INT(ratelimit_take(rl, "key:a", t + 100000), 1); /* half a token is not enough */
    CHECK_INT(ratelimit_take(rl, "key:a", t + 200000), 0); /* 0.2 s: one token back */
    CHECK_INT(ratelimit_take(rl, "key:a", t + 200000), 1);
    /* A long pause refills only up to the burst. */
    int ok = 0;
    for (int i = 0; i < 20; i++)
        ok += ratelimit_take(rl, "key:a", t + 60000000) == 0;
    CHECK_INT(ok, 5);
    ratelimit_free(rl);
}

static void test_slow_rate_wait(void)
{
    ratelimit *rl = ratelimit_new(1);
    CHECK_INT(ratelimit_take(rl, "addr:1.2.3.4", 0), 0);
    CHECK_INT(ratelimit_take(rl, "addr:1.2.3.4", 0), 1);
    CHECK_INT(ratelimit_take(rl, "addr:1.2.3.4", 999999), 1);
    CHECK_INT(ratelimit_take(rl, "addr:1.2.3.4", 1000000), 0);
    ratelimit_free(rl);
}

static void test_many_callers_bounded(void)
{
    ratelimit *rl = ratelimit_new(2);
    char name[32];
    /* Far more callers than buckets: each still gets its first request. */
    for (int i = 0; i < 50000; i++) {
        snprintf(name, sizeof name, "addr:%d", i);
        CHECK_INT(ratelimit_take(rl, name, i), 0);
    }
    /* A caller seen just now keeps its bucket. */
    CHECK_INT(ratelimit_take(rl, "addr:49999", 50000), 0);
    CHECK_INT(ratelimit_take(rl, "addr:49999", 50000), 1);
    ratelimit_free(rl);
}

TEST_MAIN(TEST(test_burst_then_refill), TEST(test_slow_rate_wait), TEST(test_many_callers_bounded))
