/* janitor: a background thread that forgets idempotency records once they
 * are older than their time to live (--idempotency-ttl), so the store does
 * not grow with every keyed request ever made. */
#ifndef APP_JANITOR_H
#define APP_JANITOR_H

#include <stdint.h>

#include "payment/store.h"

typedef struct janitor janitor;

/* Starts purging records older than ttl_ms from s every interval_ms.
 * NULL when the thread cannot start. */
janitor *janitor_start(payment_store *s, int64_t ttl_ms, int64_t interval_ms);

/* Stops and joins the thread (it may be mid-purge); NULL is a no-op. */
void janitor_stop(janitor *j);

#endif
