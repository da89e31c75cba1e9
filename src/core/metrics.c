#include "core/metrics.h"

#include <inttypes.h>
#include <stdio.h>

/* Upper bounds in microseconds: 100 us .. 10 s. */
static const int64_t latency_bounds_us[METRICS_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 10000000,
};

void metrics_histogram_observe(struct metrics_histogram *h, int64_t us)
{
    if (us < 0)
        us = 0;
    int i = 0;
    while (i < METRICS_BUCKETS && us > latency_bounds_us[i])
        i++;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (uint64_t)us, memory_order_relaxed);
}

void metrics_sizes_observe(struct metrics_sizes *h, uint64_t size)
{
    int i = 0;
    while (i < METRICS_SIZE_BUCKETS && size > (1ull << i))
        i++;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, size, memory_order_relaxed);
}

void metrics_render_header(struct buf *b, const char *name, const char *type, const char *help)
{
    buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Writes the cumulative buckets; le(i) formats bucket i's bound. */
static uint64_t render_buckets(struct buf *b, const char *name, const char *labels,
                               const _Atomic uint64_t *bucket, int n,
                               void (*le)(char *out, size_t cap, int i))
{
    uint64_t counts[METRICS_BUCKETS + METRICS_SIZE_BUCKETS + 2];
    uint64_t total = 0;
    for (int i = 0; i <= n; i++) {
        counts[i] = atomic_load_explicit(&bucket[i], memory_order_relaxed);
        total += counts[i];
    }
    if (total == 0)
        return 0;
    const char *sep = labels[0] ? "," : "";
    uint64_t cum = 0;
    for (int i = 0; i <= n; i++) {
        char bound[32];
        cum += counts[i];
        if (i == n)
            snprintf(bound, sizeof bound, "+Inf");
        else
            le(bound, sizeof bound, i);
        buf_printf(b, "%s_bucket{%s%sle=\"%s\"} %" PRIu64 "\n", name, labels, sep, bound, cum);
    }
    return cum;
}

static void latency_le(char *out, size_t cap, int i)
{
    snprintf(out, cap, "%g", (double)latency_bounds_us[i] / 1e6);
}

static void size_le(char *out, size_t cap, int i)
{
    snprintf(out, cap, "%llu", 1ull << i);
}

void metrics_render_histogram(struct buf *b, const char *name, const char *labels,
                              const struct metrics_histogram *h)
{
    uint64_t n = render_buckets(b, name, labels, h->bucket, METRICS_BUCKETS, latency_le);
    if (n == 0)
        return;
    uint64_t sum = atomic_load_explicit(&h->sum_us, memory_order_relaxed);
    const char *open = labels[0] ? "{" : "", *close = labels[0] ? "}" : "";
    buf_printf(b, "%s_sum%s%s%s %.6f\n%s_count%s%s%s %" PRIu64 "\n", name, open, labels, close,
               (double)sum / 1e6, name, open, labels, close, n);
}

void metrics_render_sizes(struct buf *b, const char *name, const char *labels,
                          const struct metrics_sizes *h)
{
    uint64_t n = render_buckets(b, name, labels, h->bucket, METRICS_SIZE_BUCKETS, size_le);
    if (n == 0)
        return;
    uint64_t sum = atomic_load_explicit(&h->sum, memory_order_relaxed);
    const char *open = labels[0] ? "{" : "", *close = labels[0] ? "}" : "";
    buf_printf(b, "%s_sum%s%s%s %" PRIu64 "\n%s_count%s%s%s %" PRIu64 "\n", name, open, labels,
               close, sum, name, open, labels, close, n);
}
