/* janitor: a background thread that keeps the store from growing with
 * everything ever written: it forgets idempotency records once they are
 * older than their time to live (--idempotency-ttl), takes events out of
 * the change feed once older than --event-retention, and deletes them from
 * the histories too once older than --history-retention.  Webhook
 * deliveries that succeeded or failed go with the events they carried:
 * once made longer ago than --event-retention (a pending one stays until it
 * finishes).
 *
 * Each pass asks the store to purge what is due (best effort, in the
 * store's small batches); passes come every tenth of the shortest of the
 * three durations, at least a second apart, so that a record outlives its
 * duration by a tenth of it at most.
 *
 * Threads: janitor_start and janitor_stop from the owner; the store is
 * borrowed and must outlive the janitor. */
#ifndef APP_JANITOR_H
#define APP_JANITOR_H

#include <stdint.h>

#include "payment/store.h"

typedef struct janitor janitor;

/* How long what the janitor purges is kept, in ms. */
struct janitor_retention {
    int64_t idempotency_ttl_ms;   /* idempotency and operation outcomes; > 0 */
    int64_t event_retention_ms;   /* events in the feed; 0: for ever */
    int64_t history_retention_ms; /* events in the histories; 0: for ever */
};

#define JANITOR_INTERVAL_MIN_MS 1000 /* passes are never closer than this */

/* The time between passes for r: a tenth of the shortest duration, at
 * least JANITOR_INTERVAL_MIN_MS. */
int64_t janitor_interval_ms(const struct janitor_retention *r);

/* Starts purging s as r says (copied), every janitor_interval_ms(r).
 * NULL when the thread cannot start. */
janitor *janitor_start(payment_store *s, const struct janitor_retention *r);

/* Stops and joins the thread (it may be mid-purge); NULL is a no-op. */
void janitor_stop(janitor *j);

#endif
