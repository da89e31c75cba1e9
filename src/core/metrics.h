/* metrics: counters and latency histograms cheap enough for every request,
 * and their rendering in the Prometheus text exposition format.
 *
 * Updates are relaxed atomic additions: no lock, no allocation.  A scrape
 * reads each cell once, so a histogram read during updates may be off by
 * the few observations in flight, which Prometheus tolerates. */
#ifndef CORE_METRICS_H
#define CORE_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "core/buf.h"

#define METRICS_BUCKETS 14 /* finite upper bounds; +Inf is implied */

/* A latency histogram in microseconds, rendered in seconds. */
struct metrics_histogram {
    _Atomic uint64_t bucket[METRICS_BUCKETS + 1]; /* per-bucket counts, not cumulative */
    _Atomic uint64_t sum_us;                      /* total of observed values */
};

/* A histogram of plain sizes (batch sizes): powers of two up to 4096. */
#define METRICS_SIZE_BUCKETS 13
struct metrics_sizes {
    _Atomic uint64_t bucket[METRICS_SIZE_BUCKETS + 1]; /* per-bucket counts */
    _Atomic uint64_t sum;                              /* total of observed sizes */
};

void metrics_histogram_observe(struct metrics_histogram *h, int64_t us);
void metrics_sizes_observe(struct metrics_sizes *h, uint64_t size);

/* Appends "# HELP" and "# TYPE" lines for a metric family. */
void metrics_render_header(struct buf *b, const char *name, const char *type, const char *help);

/* Appends the _bucket, _sum and _count series of h under name, with labels
 * (a comma-separated list such as route="/x",status="200", or "").
 * Nothing is written for a histogram that observed nothing. */
void metrics_render_histogram(struct buf *b, const char *name, const char *labels,
                              const struct metrics_histogram *h);
void metrics_render_sizes(struct buf *b, const char *name, const char *labels,
                          const struct metrics_sizes *h);

#endif
