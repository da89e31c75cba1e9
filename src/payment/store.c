/* store: picks a backend by URI scheme and forwards every call to it. */
#include "payment/store.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "payment/store_impl.h"

/* Every backend this build knows, looked up by URI scheme. */
static const struct payment_store_backend *const store_backends[] = {
    &payment_store_sqlite_backend,
    &payment_store_mongo_backend,
    &payment_store_pg_backend,
    &payment_store_postgresql_backend,
};

static const struct payment_store_backend *store_backend_find(const char *uri)
{
    const char *colon = strchr(uri, ':');
    if (!colon)
        return NULL;
    size_t n = (size_t)(colon - uri);
    for (size_t i = 0; i < sizeof store_backends / sizeof store_backends[0]; i++) {
        const char *scheme = store_backends[i]->scheme;
        if (strlen(scheme) == n && strncasecmp(uri, scheme, n) == 0)
            return store_backends[i];
    }
    return NULL;
}

int payment_store_init(char *errbuf, size_t errlen)
{
    if (errbuf && errlen)
        errbuf[0] = '\0';
    for (size_t i = 0; i < sizeof store_backends / sizeof store_backends[0]; i++) {
        int rc = store_backends[i]->init ? store_backends[i]->init(errbuf, errlen) : 0;
        if (rc != PAYMENT_STORE_OK)
            return rc;
    }
    return PAYMENT_STORE_OK;
}

int payment_store_open(const char *uri, unsigned flags, payment_store **out, char *errbuf,
                       size_t errlen)
{
    *out = NULL;
    if (errbuf && errlen)
        errbuf[0] = '\0';
    const struct payment_store_backend *be = uri ? store_backend_find(uri) : NULL;
    if (!be) {
        /* The scheme alone: the rest may hold a password. */
        const char *colon = uri ? strchr(uri, ':') : NULL;
        int n = colon && colon - uri <= 32 ? (int)(colon - uri) : 0;
        store_errf(errbuf, errlen,
                   "store URI %s%.*s%s has no known scheme (expected sqlite:PATH,"
                   " mongodb://... or postgres://...)",
                   n ? "\"" : "", n, uri ? uri : "", n ? ":...\"" : "");
        return PAYMENT_STORE_EURI;
    }
    payment_store *s = NULL;
    int rc = be->open(uri, flags, &s, errbuf, errlen);
    if (rc != PAYMENT_STORE_OK)
        return rc;
    s->backend = be;
    *out = s;
    return PAYMENT_STORE_OK;
}

int payment_store_backup(const char *uri, const char *dest, char *errbuf, size_t errlen)
{
    if (errbuf && errlen)
        errbuf[0] = '\0';
    const struct payment_store_backend *be = store_backend_find(uri);
    if (!be || !be->backup) {
        store_errf(errbuf, errlen, "backup copies the embedded store (sqlite:PATH) only%s",
                   be ? "; back MongoDB up with its own tools (mongodump)" : "");
        return PAYMENT_STORE_EURI;
    }
    return be->backup(uri, dest, errbuf, errlen);
}

void payment_store_close(payment_store *s)
{
    if (s)
        s->backend->close(s);
}

int payment_store_may_block(const payment_store *s)
{
    return s->backend->may_block;
}

const char *payment_store_refusal(payment_store *s)
{
    return s->backend->refusal ? s->backend->refusal(s) : NULL;
}

int payment_store_ping(payment_store *s)
{
    return s->backend->ping(s);
}

int payment_store_get(payment_store *s, const char *id, struct buf *doc, int64_t *version)
{
    return s->backend->get(s, id, doc, version, NULL);
}

int payment_store_get_meta(payment_store *s, const char *id, struct buf *doc, int64_t *version,
                           int64_t *created_ms)
{
    return s->backend->get(s, id, doc, version, created_ms);
}

int payment_store_list(payment_store *s, const struct payment_query *q, payment_store_row_fn each,
                       void *arg, int *more)
{
    assert(q->page_size >= 1 && q->page_size <= PAYMENT_PAGE_SIZE_MAX); /* payment_query_finish */
    return s->backend->list(s, q, each, arg, more);
}

void payment_store_create(payment_store *s, const struct payment_row *row,
                          const struct payment_idem *idem, const struct payment_event_info *ev,
                          payment_store_done_fn done, void *arg)
{
    assert(row->version == 0);
    s->backend->create(s, row, idem, ev, done, arg);
}

void payment_store_update(payment_store *s, const struct payment_row *row,
                          int64_t expected_version, const struct payment_idem *idem,
                          const struct payment_event_info *ev, payment_store_done_fn done,
                          void *arg)
{
    assert(expected_version >= 0 && row->version == expected_version + 1);
    s->backend->update(s, row, expected_version, idem, ev, done, arg);
}

void payment_store_delete(payment_store *s, const char *id, int64_t expected_version,
                          const struct payment_idem *idem, const struct payment_event_info *ev,
                          payment_store_done_fn done, void *arg)
{
    s->backend->remove(s, id, expected_version, idem, ev, done, arg);
}

int payment_store_idem_get(payment_store *s, const char *scope, const char *key,
                           struct payment_idem_found *out)
{
    return s->backend->idem_get(s, scope, key, out);
}

void payment_store_idem_purge(payment_store *s, int64_t before_ms)
{
    s->backend->idem_purge(s, before_ms);
}

/* Whether a is well formed: payment_store_apply's precondition. */
static int store_apply_valid(const struct payment_apply *a)
{
    if (!a->op_id || !a->op_id[0] || a->seq < 1 || a->seq > INT64_MAX || a->fence > INT64_MAX)
        return 0;
    switch (a->kind) {
    case PAYMENT_APPLY_NONE:
        return 1;
    case PAYMENT_APPLY_CREATE:
        return a->row && a->row->version == 0;
    case PAYMENT_APPLY_UPDATE:
        return a->row && a->expected_version >= 0 && a->row->version == a->expected_version + 1;
    case PAYMENT_APPLY_DELETE:
        return a->payment_id && strlen(a->payment_id) <= UUID_STR_LEN &&
               a->expected_version >= -1;
    default:
        return 0;
    }
}

void payment_store_apply(payment_store *s, const struct payment_apply *a,
                         payment_store_done_fn done, void *arg)
{
    assert(store_apply_valid(a)); /* the worker builds it from a decoded operation */
    if (!s->backend->apply) {
        done(arg, PAYMENT_STORE_EINTERNAL, -1, 0);
        return;
    }
    s->backend->apply(s, a, done, arg);
}

int payment_store_op_get(payment_store *s, const char *op_id, struct payment_op_found *out)
{
    /* A backend that cannot apply operations has none to find. */
    if (!s->backend->op_get)
        return PAYMENT_STORE_ENOTFOUND;
    return s->backend->op_get(s, op_id, out);
}

int payment_store_partition_get(payment_store *s, uint32_t partition, uint64_t *last_seq,
                                uint64_t *fence)
{
    if (!s->backend->partition_get)
        return PAYMENT_STORE_EINTERNAL;
    return s->backend->partition_get(s, partition, last_seq, fence);
}

int payment_store_events(payment_store *s, const struct payment_event_query *q,
                         payment_store_event_fn each, void *arg, int64_t *next_pos)
{
    assert(q->limit >= 1 && q->limit <= PAYMENT_EVENTS_PAGE_MAX && q->after_pos >= 0);
    *next_pos = q->after_pos;
    if (!s->backend->events)
        return PAYMENT_STORE_EINTERNAL;
    return s->backend->events(s, q, each, arg, next_pos);
}

int payment_store_history(payment_store *s, const char *payment_id, int64_t after_version,
                          uint32_t limit, payment_store_event_fn each, void *arg, int *more)
{
    assert(limit >= 1 && limit <= PAYMENT_EVENTS_PAGE_MAX && after_version >= -1);
    *more = 0;
    if (!s->backend->history)
        return PAYMENT_STORE_EINTERNAL;
    return s->backend->history(s, payment_id, after_version, limit, each, arg, more);
}

void payment_store_events_subscribe(payment_store *s, void (*fn)(void *arg), void *arg)
{
    if (s->backend->events_subscribe)
        s->backend->events_subscribe(s, fn, arg);
}

void payment_store_events_purge(payment_store *s, int64_t feed_before_ms,
                                int64_t history_before_ms)
{
    if (s->backend->events_purge)
        s->backend->events_purge(s, feed_before_ms, history_before_ms);
}

/* An attempt of a batch record not decided yet: positive, never a store
 * error (all negative or 0). */
#define STORE_RECORD_UNDECIDED 1

/* The webhooks: forwarded, with the preconditions asserted here once. */

int payment_store_webhook_create(payment_store *s, struct payment_webhook *w)
{
    assert(w && w->version == 0 && w->doc);
    if (!s->backend->webhook_create)
        return PAYMENT_STORE_EINTERNAL;
    return s->backend->webhook_create(s, w);
}

int payment_store_webhook_update(payment_store *s, const struct payment_webhook *w,
                                 int64_t expected_version)
{
    assert(w && w->doc && expected_version >= 0 && w->version == expected_version + 1);
    if (!s->backend->webhook_update)
        return PAYMENT_STORE_EINTERNAL;
    return s->backend->webhook_update(s, w, expected_version);
}

int payment_store_webhook_delete(payment_store *s, const char *id, int64_t expected_version,
                                 int64_t *current_version)
{
    assert(id && expected_version >= -1);
    if (current_version)
        *current_version = -1;
    if (!s->backend->webhook_delete)
        return PAYMENT_STORE_EINTERNAL;
    return s->backend->webhook_delete(s, id, expected_version, current_version);
}

int payment_store_webhook_get(payment_store *s, const char *id, payment_store_webhook_fn each,
                              void *arg)
{
    assert(id && each);
    if (!s->backend->webhook_get)
        return PAYMENT_STORE_EINTERNAL;
    return s->backend->webhook_get(s, id, each, arg);
}

int payment_store_webhooks_list(payment_store *s, const struct payment_webhook_query *q,
                                payment_store_webhook_fn each, void *arg, int *more)
{
    assert(q && each && q->limit >= 1 && q->limit <= PAYMENT_WEBHOOKS_PAGE_MAX);
    *more = 0;
    if (!s->backend->webhooks_list)
        return PAYMENT_STORE_EINTERNAL;
    return s->backend->webhooks_list(s, q, each, arg, more);
}

int payment_store_dispatch_pos(payment_store *s, int64_t *pos)
{
    *pos = 0;
    if (!s->backend->dispatch_pos)
        return PAYMENT_STORE_EINTERNAL;
    return s->backend->dispatch_pos(s, pos);
}

int payment_store_deliveries_add(payment_store *s, int64_t expected_pos, int64_t new_pos,
                                 const struct payment_delivery_new *d, size_t n, int reset,
                                 int64_t now_ms)
{
    assert(expected_pos == -1 || (expected_pos >= 0 && new_pos >= expected_pos));
    assert(n == 0 || d);
    if (!s->backend->deliveries_add)
        return PAYMENT_STORE_EINTERNAL;
    return s->backend->deliveries_add(s, expected_pos, new_pos, d, n, reset, now_ms);
}

int payment_store_deliveries_claim(payment_store *s, const char *owner, int64_t now_ms,
                                   int64_t lease_ms, uint32_t max, payment_store_delivery_fn each,
                                   void *arg)
{
    assert(owner && *owner && lease_ms > 0 && max >= 1 && max <= PAYMENT_WEBHOOKS_PAGE_MAX);
    if (!s->backend->deliveries_claim)
        return PAYMENT_STORE_EINTERNAL;
    return s->backend->deliveries_claim(s, owner, now_ms, lease_ms, max, each, arg);
}

int payment_store_delivery_record(payment_store *s, const struct payment_delivery_attempt *a,
                                  int64_t *failing_since_ms)
{
    struct payment_delivery_recorded out = {PAYMENT_STORE_EINTERNAL, 0};
    int err = payment_store_deliveries_record(s, a, 1, &out);
    if (failing_since_ms)
        *failing_since_ms = err == PAYMENT_STORE_OK ? out.failing_since_ms : 0;
    return err != PAYMENT_STORE_OK ? err : out.err;
}

int payment_store_deliveries_record(payment_store *s, const struct payment_delivery_attempt *a,
                                    size_t n, struct payment_delivery_recorded *out)
{
    assert(a && out && n >= 1 && n <= PAYMENT_WEBHOOKS_PAGE_MAX);
    for (size_t i = 0; i < n; i++) {
        assert(a[i].delivery_id && a[i].webhook_id && a[i].owner && a[i].attempt_json);
        assert(a[i].status == PAYMENT_DELIVERY_PENDING ||
               a[i].status == PAYMENT_DELIVERY_SUCCEEDED ||
               a[i].status == PAYMENT_DELIVERY_FAILED);
        out[i] = (struct payment_delivery_recorded){STORE_RECORD_UNDECIDED, 0};
    }
    int err = s->backend->deliveries_record ? s->backend->deliveries_record(s, a, n, out)
                                            : PAYMENT_STORE_EINTERNAL;
    /* A backend that stopped early left the rest undecided: the call's
     * error is theirs.  One that answered 0 decided every attempt. */
    for (size_t i = 0; i < n; i++) {
        if (out[i].err == STORE_RECORD_UNDECIDED) {
            assert(err != PAYMENT_STORE_OK);
            out[i].err = err;
        }
    }
    return err;
}

int payment_store_delivery_retry(payment_store *s, const char *webhook_id, const char *id,
                                 int64_t now_ms)
{
    assert(webhook_id && id);
    if (!s->backend->delivery_retry)
        return PAYMENT_STORE_EINTERNAL;
    return s->backend->delivery_retry(s, webhook_id, id, now_ms);
}

int payment_store_deliveries_list(payment_store *s, const struct payment_delivery_query *q,
                                  payment_store_delivery_fn each, void *arg, int *more)
{
    assert(q && q->webhook_id && each && q->limit >= 1 && q->limit <= PAYMENT_WEBHOOKS_PAGE_MAX);
    *more = 0;
    if (!s->backend->deliveries_list)
        return PAYMENT_STORE_EINTERNAL;
    return s->backend->deliveries_list(s, q, each, arg, more);
}

int payment_store_deliveries_pending(payment_store *s, int64_t *count, int64_t *oldest_ms)
{
    *count = 0;
    *oldest_ms = 0;
    if (!s->backend->deliveries_pending)
        return PAYMENT_STORE_EINTERNAL;
    return s->backend->deliveries_pending(s, count, oldest_ms);
}

void payment_store_deliveries_purge(payment_store *s, int64_t before_ms)
{
    if (s->backend->deliveries_purge)
        s->backend->deliveries_purge(s, before_ms);
}

int payment_store_export_payments(payment_store *s, int64_t after_seq, uint32_t limit,
                                  payment_store_export_fn each, void *arg, int *more)
{
    assert(each && limit >= 1 && limit <= PAYMENT_EXPORT_PAGE_MAX && after_seq >= 0);
    *more = 0;
    if (!s->backend->export_payments)
        return PAYMENT_STORE_EINTERNAL;
    return s->backend->export_payments(s, after_seq, limit, each, arg, more);
}

int payment_store_export_idem(payment_store *s, const char *after_scope, const char *after_key,
                              uint32_t limit, payment_store_idem_export_fn each, void *arg,
                              int *more)
{
    assert(each && limit >= 1 && limit <= PAYMENT_EXPORT_PAGE_MAX);
    assert((after_scope == NULL) == (after_key == NULL));
    *more = 0;
    if (!s->backend->export_idem)
        return PAYMENT_STORE_EINTERNAL;
    return s->backend->export_idem(s, after_scope, after_key, limit, each, arg, more);
}

int payment_store_export_events(payment_store *s, int64_t after_pos, uint32_t limit,
                                payment_store_event_fn each, void *arg, int *more)
{
    assert(each && limit >= 1 && limit <= PAYMENT_EXPORT_PAGE_MAX && after_pos >= 0);
    *more = 0;
    if (!s->backend->export_events)
        return PAYMENT_STORE_EINTERNAL;
    return s->backend->export_events(s, after_pos, limit, each, arg, more);
}

int payment_store_import(payment_store *s, const struct payment_import *im,
                         struct payment_import_result *out)
{
    assert(im && out);
    assert(im->n_payments == 0 || im->payments);
    assert(im->n_idem == 0 || im->idem);
    assert(im->n_events == 0 || im->events);
    memset(out, 0, sizeof *out);
    if (!s->backend->import)
        return PAYMENT_STORE_EINTERNAL;
    return s->backend->import(s, im, out);
}

int payment_store_stats(payment_store *s, struct payment_store_stats *out)
{
    if (!s->backend->stats)
        return -1;
    memset(out, 0, sizeof *out);
    s->backend->stats(s, out);
    return 0;
}

const char *payment_store_strerror(int err)
{
    switch (err) {
    case PAYMENT_STORE_OK: return "ok";
    case PAYMENT_STORE_ENOTFOUND: return "not found";
    case PAYMENT_STORE_ECONFLICT: return "version conflict";
    case PAYMENT_STORE_EDUPLICATE: return "duplicate id";
    case PAYMENT_STORE_EUNAVAILABLE: return "store unavailable";
    case PAYMENT_STORE_EINTERNAL: return "internal store error";
    case PAYMENT_STORE_EURI: return "unusable store URI";
    case PAYMENT_STORE_EIDEMPOTENT: return "idempotency key already recorded";
    case PAYMENT_STORE_ESKIPPED: return "operation already applied";
    case PAYMENT_STORE_EFENCED: return "partition fenced by a newer lease";
    case PAYMENT_STORE_EEXPIRED: return "events no longer kept";
    case PAYMENT_STORE_ELIMIT: return "too many webhook endpoints";
    default: return "unknown store error";
    }
}

void store_errf(char *errbuf, size_t errlen, const char *fmt, ...)
{
    if (!errbuf || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
    if (n < 0)
        errbuf[0] = '\0';
}

void store_lock(pthread_mutex_t *m)
{
    if (pthread_mutex_lock(m) != 0)
        abort();
}

void store_unlock(pthread_mutex_t *m)
{
    if (pthread_mutex_unlock(m) != 0)
        abort();
}
