/* store_impl: the private interface between store.c and the store backends.
 * For backends (and their tests) only: handlers include store.h, never this.
 *
 * A backend is a const table of functions mirroring store.h.  Its open
 * allocates its own state with a struct payment_store as the FIRST member
 * and returns a pointer to that member; store.c then sets the backend field
 * and forwards every public call to the table.  A backend registers itself
 * by URI scheme: declare its table below and add it to the static list of
 * backends in store.c.  Nothing else changes when a backend is added.
 *
 * Every function has the contract of its store.h counterpart. */
#ifndef PAYMENT_STORE_IMPL_H
#define PAYMENT_STORE_IMPL_H

#include <pthread.h>
#include <stdint.h>

#include "payment/store.h"

struct payment_store_backend {
    const char *scheme; /* the URI's scheme, before ':', matched case-insensitively */
    int may_block;      /* its calls may wait on the network (payment_store_may_block) */
    /* Its part of payment_store_init, or NULL. */
    int (*init)(char *errbuf, size_t errlen);
    /* uri is the whole URI; its scheme is this backend's.  flags: store.h. */
    int (*open)(const char *uri, unsigned flags, payment_store **out, char *errbuf,
                size_t errlen);
    /* payment_store_backup, or NULL where a backend cannot (store.c
     * answers EURI). */
    int (*backup)(const char *uri, const char *dest, char *errbuf, size_t errlen);
    void (*close)(payment_store *s);
    int (*ping)(payment_store *s);
    /* payment_store_refusal, or NULL where a store never refuses for good
     * after its open. */
    const char *(*refusal)(payment_store *s);
    /* get and get_meta in one: created_ms may be NULL. */
    int (*get)(payment_store *s, const char *id, struct buf *doc, int64_t *version,
               int64_t *created_ms);
    int (*list)(payment_store *s, const struct payment_query *q, payment_store_row_fn each,
                void *arg, int *more);
    void (*create)(payment_store *s, const struct payment_row *row,
                   const struct payment_idem *idem, const struct payment_event_info *ev,
                   payment_store_done_fn done, void *arg);
    void (*update)(payment_store *s, const struct payment_row *row, int64_t expected_version,
                   const struct payment_idem *idem, const struct payment_event_info *ev,
                   payment_store_done_fn done, void *arg);
    void (*remove)(payment_store *s, const char *id, int64_t expected_version,
                   const struct payment_idem *idem, const struct payment_event_info *ev,
                   payment_store_done_fn done, void *arg);
    int (*idem_get)(payment_store *s, const char *scope, const char *key,
                    struct payment_idem_found *out);
    void (*idem_purge)(payment_store *s, int64_t before_ms);
    /* Fills out; NULL when the backend keeps no counters. */
    void (*stats)(payment_store *s, struct payment_store_stats *out);
    /* The broker's operations; NULL where not built yet (store.c answers
     * EINTERNAL). */
    void (*apply)(payment_store *s, const struct payment_apply *a, payment_store_done_fn done,
                  void *arg);
    int (*op_get)(payment_store *s, const char *op_id, struct payment_op_found *out);
    int (*partition_get)(payment_store *s, uint32_t partition, uint64_t *last_seq,
                         uint64_t *fence);
    /* The events; NULL where not built yet (store.c answers EINTERNAL, or
     * does nothing). */
    int (*events)(payment_store *s, const struct payment_event_query *q,
                  payment_store_event_fn each, void *arg, int64_t *next_pos);
    int (*history)(payment_store *s, const char *payment_id, int64_t after_version,
                   uint32_t limit, payment_store_event_fn each, void *arg, int *more);
    void (*events_subscribe)(payment_store *s, void (*fn)(void *arg), void *arg);
    void (*events_purge)(payment_store *s, int64_t feed_before_ms, int64_t history_before_ms);
    /* The webhooks; NULL where not built yet (store.c answers EINTERNAL,
     * or does nothing). */
    int (*webhook_create)(payment_store *s, struct payment_webhook *w);
    int (*webhook_update)(payment_store *s, const struct payment_webhook *w,
                          int64_t expected_version);
    int (*webhook_delete)(payment_store *s, const char *id, int64_t expected_version,
                          int64_t *current_version);
    int (*webhook_get)(payment_store *s, const char *id, payment_store_webhook_fn each,
                       void *arg);
    int (*webhooks_list)(payment_store *s, const struct payment_webhook_query *q,
                         payment_store_webhook_fn each, void *arg, int *more);
    int (*dispatch_pos)(payment_store *s, int64_t *pos);
    int (*deliveries_add)(payment_store *s, int64_t expected_pos, int64_t new_pos,
                          const struct payment_delivery_new *d, size_t n, int reset,
                          int64_t now_ms);
    int (*deliveries_claim)(payment_store *s, const char *owner, int64_t now_ms,
                            int64_t lease_ms, uint32_t max, payment_store_delivery_fn each,
                            void *arg);
    /* payment_store_deliveries_record; the single record is one of n. */
    int (*deliveries_record)(payment_store *s, const struct payment_delivery_attempt *a,
                             size_t n, struct payment_delivery_recorded *out);
    int (*delivery_retry)(payment_store *s, const char *webhook_id, const char *id,
                          int64_t now_ms);
    int (*deliveries_list)(payment_store *s, const struct payment_delivery_query *q,
                           payment_store_delivery_fn each, void *arg, int *more);
    int (*deliveries_pending)(payment_store *s, int64_t *count, int64_t *oldest_ms);
    void (*deliveries_purge)(payment_store *s, int64_t before_ms);
    /* The copy's calls; NULL where not built (store.c answers EINTERNAL). */
    int (*export_payments)(payment_store *s, int64_t after_seq, uint32_t limit,
                           payment_store_export_fn each, void *arg, int *more);
    int (*export_idem)(payment_store *s, const char *after_scope, const char *after_key,
                       uint32_t limit, payment_store_idem_export_fn each, void *arg, int *more);
    int (*export_events)(payment_store *s, int64_t after_pos, uint32_t limit,
                         payment_store_event_fn each, void *arg, int *more);
    int (*import)(payment_store *s, const struct payment_import *im,
                  struct payment_import_result *out);
};

/* Helpers every backend needs.  store_errf writes a one-line reason into
 * errbuf (which may be NULL).  store_lock/store_unlock abort on failure:
 * with default mutexes a failure is a programming error, not a condition. */
void store_errf(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void store_lock(pthread_mutex_t *m);
void store_unlock(pthread_mutex_t *m);

/* The head of every backend's store state. */
struct payment_store {
    const struct payment_store_backend *backend; /* set by payment_store_open */
};

/* The registered backends (one table each, in their own .c file). */
extern const struct payment_store_backend payment_store_sqlite_backend;
extern const struct payment_store_backend payment_store_mongo_backend;
/* PostgreSQL: one table per scheme, postgres: and postgresql:. */
extern const struct payment_store_backend payment_store_pg_backend;
extern const struct payment_store_backend payment_store_postgresql_backend;

#endif
