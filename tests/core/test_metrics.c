#include "core/metrics.h"

#include <stdint.h>
#include <string.h>

#include "test.h"

static void test_latency_buckets(void)
{
    struct metrics_histogram h = {0};
    static const struct {
        int64_t us;
        int bucket;
    } cases[] = {
        {-5, 0}, {0, 0}, {100, 0}, {101, 1}, {250, 1}, {999, 3}, {1000, 3}, {1001, 4},
        {10000000, 13}, {10000001, 14}, {INT64_MAX / 2, 14},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct metrics_histogram one = {0};
        metrics_histogram_observe(&one, cases[i].us);
        for (int b = 0; b <= METRICS_BUCKETS; b++)
            CHECK_INT(one.bucket[b], b == cases[i].bucket);
        metrics_histogram_observe(&h, cases[i].us);
    }
    uint64_t total = 0;
    for (int b = 0; b <= METRICS_BUCKETS; b++)
        total += h.bucket[b];
    CHECK_INT(total, sizeof cases / sizeof cases[0]);
}

static void test_render_histogram(void)
{
    struct metrics_histogram h = {0};
    struct buf b = BUF_INIT;
    metrics_render_histogram(&b, "x_seconds", "op=\"get\"", &h);
    CHECK_INT(b.len, 0); /* nothing observed, nothing written */
    metrics_histogram_observe(&h, 50);
    metrics_histogram_observe(&h, 700);
    metrics_histogram_observe(&h, 700);
    metrics_render_histogram(&b, "x_seconds", "op=\"get\"", &h);
    CHECK(strstr(b.data, "x_seconds_bucket{op=\"get\",le=\"0.0001\"} 1\n") != NULL);
    CHECK(strstr(b.data, "x_seconds_bucket{op=\"get\",le=\"0.0005\"} 1\n") != NULL);
    CHECK(strstr(b.data, "x_seconds_bucket{op=\"get\",le=\"0.001\"} 3\n") != NULL);
    CHECK(strstr(b.data, "x_seconds_bucket{op=\"get\",le=\"+Inf\"} 3\n") != NULL);
    CHECK(strstr(b.data, "x_seconds_sum{op=\"get\"} 0.001450\n") != NULL);
    CHECK(strstr(b.data, "x_seconds_count{op=\"get\"} 3\n") != NULL);
    buf_free(&b);
}

static void test_render_sizes_without_labels(void)
{
    struct metrics_sizes h = {0};
    struct buf b = BUF_INIT;
    metrics_sizes_observe(&h, 1);
    metrics_sizes_observe(&h, 3);
    metrics_sizes_observe(&h, 5000);
    metrics_render_header(&b, "batch", "histogram", "Sizes.");
    metrics_render_sizes(&b, "batch", "", &h);
    CHECK(strstr(b.data, "# HELP batch Sizes.\n# TYPE batch histogram\n") == b.data);
    CHECK(strstr(b.data, "batch_bucket{le=\"1\"} 1\n") != NULL);
    CHECK(strstr(b.data, "batch_bucket{le=\"2\"} 1\n") != NULL);
    CHECK(strstr(b.data, "batch_bucket{le=\"4\"} 2\n") != NULL);
    CHECK(strstr(b.data, "batch_bucket{le=\"4096\"} 2\n") != NULL);
    CHECK(strstr(b.data, "batch_bucket{le=\"+Inf\"} 3\n") != NULL);
    CHECK(strstr(b.data, "batch_sum 5004\nbatch_count 3\n") != NULL);
    buf_free(&b);
}

TEST_MAIN(TEST(test_latency_buckets), TEST(test_render_histogram),
          TEST(test_render_sizes_without_labels))
