/* relay: see relay.h.  One thread runs a loop of steps: set up the stream
 * and buckets, keep or take the lease, read a page of the feed after the
 * last acknowledged event, publish it, confirm.  Everything but the stats
 * (atomics) and the stop flag (under mu) is the thread's own. */
#include "app/relay.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker/opstream.h"
#include "broker/partition.h"
#include "core/clock.h"
#include "core/metrics.h"
#include "core/sync.h"
#include "payment/event.h"

#define RELAY_LEASE_BUCKET "PAYMENTS_RELAY"
#define RELAY_LEASE_KEY "lease"
#define RELAY_POSITION_KEY "events.relayed"
#define RELAY_RETRY_MIN_MS 100  /* first pause after a failure */
#define RELAY_RETRY_MAX_MS 2000 /* longest pause between tries */
#define RELAY_CONFIRM_TRIES 8   /* compare-and-set rounds lost in a row before a pause */
#define RELAY_PUBLISH_MS 2000   /* longest wait for one acknowledgement */
#define PAGE_NO_MEMORY 1        /* page_add's failure: positive, unlike the store's errors */

/* What the loop does after a step. */
enum relay_next {
    RELAY_AGAIN,   /* another step at once: the page was full */
    RELAY_IDLE,    /* caught up: read again after idle_ms */
    RELAY_STANDBY, /* another relay holds the lease: try again after refresh_ms */
    RELAY_RETRY,   /* the store or the broker failed: pause, doubling */
};

/* One event of a page: its JSON is json.data[off .. off + len). */
struct page_event {
    char id[UUID_STR_LEN + 1]; /* the message id */
    uint32_t partition;        /* of its organisation */
    int64_t pos;               /* its feed position */
    size_t off, len;           /* its JSON in the page's buffer */
};

/* The events read by one step. */
struct page {
    struct page_event *ev; /* room for the configured page size */
    size_t n;              /* events read */
    struct buf json;       /* their JSON, one after the other */
    int64_t next_pos;      /* where the feed goes on after them (store.h) */
    uint32_t partitions;   /* to place each event */
};

struct relay {
    struct relay_config c;     /* with defaults filled in; pointers borrowed */
    char id[128];              /* the lease's value */
    pthread_t thread;          /* the loop */
    pthread_mutex_t mu;        /* guards stopping and abandon */
    pthread_cond_t cv;         /* signalled by stop */
    int stopping;              /* set once by stop */
    int abandon;               /* stop as a crash would: no confirmation, no release */
    /* The thread's own: */
    broker_kv *config;         /* PAYMENTS_CONFIG: the position */
    broker_kv *leases;         /* PAYMENTS_RELAY: the lease */
    int ready;                 /* stream and buckets set up */
    int held;                  /* we hold the lease (as far as we know) */
    uint64_t lease_rev;        /* its revision, while held */
    int64_t lease_at_ms;       /* monotonic: just before its last successful write */
    int64_t next_refresh_ms;   /* monotonic: when to refresh it */
    int pos_known;             /* confirmed and pos_rev were read since the lease was taken */
    int64_t confirmed;         /* the position key's value as we last wrote or read it */
    uint64_t pos_rev;          /* its revision; 0: the key has no value */
    int64_t sent;              /* every event up to here is on the stream */
    int from_start;            /* the next read starts at the oldest event kept (EEXPIRED) */
    int failing;               /* the last step failed (logged once per run of failures) */
    struct page page;          /* the page in hand */
    /* Stats, read by any thread: */
    _Atomic int st_active;
    _Atomic int st_caught_up;
    _Atomic int64_t st_confirmed;
    _Atomic uint64_t st_published;
    _Atomic uint64_t st_expired;
    _Atomic int64_t st_behind_ms;
};

static int64_t mono_ms(void)
{
    return clock_mono_us() / 1000;
}

/* ---- logging failures once per run ---------------------------------------- */

static void relay_failed(struct relay *r, const char *what, const char *why)
{
    if (!r->failing)
        log_msg(r->c.log, LOG_WARN, "relay: %s: %s; retrying", what, why);
    r->failing = 1;
}

static void relay_recovered(struct relay *r)
{
    if (r->failing)
        log_msg(r->c.log, LOG_INFO, "relay: the broker and the store answer again");
    r->failing = 0;
}

/* ---- set-up ---------------------------------------------------------------- */

/* Creates the stream and opens both buckets.  0, or -1 (logged). */
static int relay_setup(struct relay *r)
{
    char err[256] = "";
    int rc = opstream_events_setup(r->c.broker, r->c.replicas, r->c.max_age_ms, err, sizeof err);
    if (rc == OPSTREAM_OK && !r->config)
        rc = broker_kv_open(r->c.broker, OPSTREAM_CONFIG_BUCKET, 0, r->c.replicas, &r->config,
                            err, sizeof err);
    if (rc == OPSTREAM_OK && !r->leases)
        rc = broker_kv_open(r->c.broker, RELAY_LEASE_BUCKET, r->c.lease_ttl_ms, r->c.replicas,
                            &r->leases, err, sizeof err);
    if (rc != 0) {
        relay_failed(r, "setting up the events stream", err);
        return -1;
    }
    r->ready = 1;
    return 0;
}

/* ---- the lease ------------------------------------------------------------- */

static void relay_lease_lost(struct relay *r, const char *why)
{
    log_msg(r->c.log, LOG_WARN, "relay %s: lease %s; standing by", r->id, why);
    r->held = 0;
    atomic_store(&r->st_active, 0);
}

/* Refreshes the held lease.  0, or a broker error (ECONFLICT: lost). */
static int relay_lease_refresh(struct relay *r)
{
    int64_t at = mono_ms();
    uint64_t rev = 0;
    int rc = broker_kv_update(r->leases, RELAY_LEASE_KEY, r->id, strlen(r->id), r->lease_rev,
                              &rev);
    if (rc == BROKER_OK) {
        r->lease_rev = rev;
        r->lease_at_ms = at;
        r->next_refresh_ms = at + r->c.refresh_ms;
    } else if (rc == BROKER_ECONFLICT) {
        relay_lease_lost(r, "taken over");
    } else {
        relay_failed(r, "refreshing the lease", broker_strerror(rc));
    }
    return rc;
}

/* Whether the held lease is surely still ours: less than a TTL since its
 * last write began. */
static int relay_lease_fresh(const struct relay *r)
{
    return r->held && mono_ms() - r->lease_at_ms < r->c.lease_ttl_ms;
}

/* Whether the lease holds our id: a create of ours whose answer was lost
 * (the id names this process alone).  1 with its revision, else 0. */
static int relay_lease_ours(struct relay *r, uint64_t *rev)
{
    char *value = NULL;
    int rc = broker_kv_get(r->leases, RELAY_LEASE_KEY, &value, NULL, rev);
    int ours = rc == BROKER_OK && strcmp(value, r->id) == 0;
    free(value);
    return ours;
}

/* Takes the lease when free, refreshes it when due.  RELAY_AGAIN when we
 * hold it now. */
static enum relay_next relay_lease(struct relay *r)
{
    if (r->held && !relay_lease_fresh(r))
        relay_lease_lost(r, "expired");
    if (r->held) {
        if (mono_ms() < r->next_refresh_ms)
            return RELAY_AGAIN;
        int rc = relay_lease_refresh(r);
        return rc == BROKER_OK ? RELAY_AGAIN : rc == BROKER_ECONFLICT ? RELAY_STANDBY : RELAY_RETRY;
    }
    int64_t at = mono_ms();
    uint64_t rev = 0;
    int rc = broker_kv_create(r->leases, RELAY_LEASE_KEY, r->id, strlen(r->id), &rev);
    if (rc == BROKER_EEXISTS) {
        if (!relay_lease_ours(r, &rev))
            return RELAY_STANDBY;
        rc = BROKER_OK;
    }
    if (rc != BROKER_OK) {
        relay_failed(r, "taking the lease", broker_strerror(rc));
        return RELAY_RETRY;
    }
    r->held = 1;
    r->lease_rev = rev;
    r->lease_at_ms = at;
    r->next_refresh_ms = at + r->c.refresh_ms;
    r->pos_known = 0; /* another relay may have moved it */
    atomic_store(&r->st_active, 1);
    atomic_store(&r->st_behind_ms, clock_now_ms());
    log_msg(r->c.log, LOG_INFO, "relay %s: lease taken; publishing events", r->id);
    return RELAY_AGAIN;
}

/* Deletes the lease we hold, so that another relay takes over at once. */
static void relay_lease_release(struct relay *r)
{
    if (!r->held || !broker_connected(r->c.broker))
        return;
    int rc = broker_kv_delete(r->leases, RELAY_LEASE_KEY, r->lease_rev);
    if (rc != BROKER_OK && rc != BROKER_ECONFLICT)
        log_msg(r->c.log, LOG_WARN, "relay: releasing the lease: %s", broker_strerror(rc));
    r->held = 0;
    atomic_store(&r->st_active, 0);
}

/* ---- the confirmed position -------------------------------------------------- */

/* A position's text, 0..INT64_MAX in decimal: 0 and *out, or -1. */
static int relay_parse_pos(const char *text, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = text[0] >= '0' && text[0] <= '9' ? strtoll(text, &end, 10) : -1;
    if (v < 0 || !end || *end || errno)
        return -1;
    *out = (int64_t)v;
    return 0;
}

/* Reads the position key into confirmed and pos_rev (0, 0 when it has no
 * value); sent never goes back.  0, or a broker error (logged). */
static int relay_position_load(struct relay *r)
{
    char *text = NULL;
    uint64_t rev = 0;
    int rc = broker_kv_get(r->config, RELAY_POSITION_KEY, &text, NULL, &rev);
    int64_t pos = 0;
    if (rc == BROKER_OK && relay_parse_pos(text, &pos) != 0)
        rc = BROKER_EINTERNAL;
    free(text);
    if (rc == BROKER_ENOTFOUND) {
        rc = BROKER_OK;
        rev = 0;
    }
    if (rc != BROKER_OK) {
        relay_failed(r, "reading the position " RELAY_POSITION_KEY, broker_strerror(rc));
        return rc;
    }
    r->confirmed = pos;
    r->pos_rev = rev;
    if (r->sent < pos)
        r->sent = pos; /* another relay published up to there */
    r->pos_known = 1;
    atomic_store(&r->st_confirmed, pos);
    return BROKER_OK;
}

/* Moves the position key forward to sent, with compare-and-set; a lost race
 * re-reads the key, and a larger value found there is kept (the relay then
 * goes on from it).  0, or a broker error (logged). */
static int relay_confirm(struct relay *r)
{
    for (int round = 0; round < RELAY_CONFIRM_TRIES; round++) {
        if (r->sent <= r->confirmed)
            return BROKER_OK;
        char text[24];
        int len = snprintf(text, sizeof text, "%" PRId64, r->sent);
        uint64_t rev = 0;
        int rc = r->pos_rev ? broker_kv_update(r->config, RELAY_POSITION_KEY, text, (size_t)len,
                                               r->pos_rev, &rev)
                            : broker_kv_create(r->config, RELAY_POSITION_KEY, text, (size_t)len,
                                               &rev);
        if (rc == BROKER_OK) {
            r->confirmed = r->sent;
            r->pos_rev = rev;
            atomic_store(&r->st_confirmed, r->confirmed);
            return BROKER_OK;
        }
        if (rc != BROKER_ECONFLICT && rc != BROKER_EEXISTS) {
            relay_failed(r, "confirming the position", broker_strerror(rc));
            return rc;
        }
        rc = relay_position_load(r); /* another relay wrote it: look again */
        if (rc != BROKER_OK)
            return rc;
    }
    relay_failed(r, "confirming the position", "lost every compare-and-set");
    return BROKER_ECONFLICT;
}

/* ---- reading a page ---------------------------------------------------------- */

static int page_add(void *arg, const struct payment_event *ev)
{
    struct page *pg = arg;
    struct page_event *pe = &pg->ev[pg->n];
    size_t off = pg->json.len;
    if (payment_event_render(ev, &pg->json) != 0)
        return PAGE_NO_MEMORY; /* the step fails and is tried again */
    memcpy(pe->id, ev->id, sizeof pe->id);
    pe->partition = partition_of(ev->organisation_id, pg->partitions);
    pe->pos = ev->pos;
    pe->off = off;
    pe->len = pg->json.len - off;
    pg->n++;
    return 0;
}

/* Reads the events after sent (or from the oldest kept) into the page.
 * 0, or -1 (logged). */
static int relay_read(struct relay *r)
{
    struct page *pg = &r->page;
    pg->n = 0;
    buf_reset(&pg->json);
    struct payment_event_query q = {
        .after_pos = r->from_start ? 0 : r->sent,
        .limit = r->c.page,
        .all_orgs = 1,
        .from_ms = INT64_MIN,
        .to_ms = INT64_MAX,
    };
    int64_t next = 0;
    int rc = payment_store_events(r->c.store, &q, page_add, pg, &next);
    if (rc == PAYMENT_STORE_EEXPIRED && !r->from_start) {
        /* Purged before they were relayed: gone for good.  The events kept
         * all follow the purged ones, hence the position. */
        log_msg(r->c.log, LOG_ERROR,
                "relay: the events after position %" PRId64 " were purged from the store "
                "before they were published; going on from the oldest one kept",
                r->sent);
        atomic_fetch_add(&r->st_expired, 1);
        r->from_start = 1;
        return relay_read(r);
    }
    if (rc != PAYMENT_STORE_OK) {
        relay_failed(r, "reading the events",
                     rc == PAGE_NO_MEMORY ? "out of memory" : payment_store_strerror(rc));
        return -1;
    }
    assert(pg->n <= r->c.page);
    pg->next_pos = next;
    return 0;
}

/* ---- publishing ---------------------------------------------------------- */

static int relay_stopping(struct relay *r)
{
    sync_lock(&r->mu);
    int stop = r->stopping;
    sync_unlock(&r->mu);
    return stop;
}

/* Publishes the page's events in order, each once the previous one is
 * acknowledged, while the lease is ours; moves sent past each one
 * acknowledged.  Returns how many were. */
static size_t relay_publish(struct relay *r)
{
    struct page *pg = &r->page;
    size_t i = 0;
    for (; i < pg->n; i++) {
        if (relay_stopping(r))
            break;
        if (mono_ms() >= r->next_refresh_ms && relay_lease_refresh(r) != BROKER_OK)
            break;
        if (!relay_lease_fresh(r)) {
            relay_lease_lost(r, "expired");
            break;
        }
        const struct page_event *pe = &pg->ev[i];
        char subject[OPSTREAM_SUBJECT_LEN];
        opstream_events_subject(pe->partition, subject);
        int rc = broker_publish(r->c.broker, subject, pe->id, pg->json.data + pe->off, pe->len,
                                RELAY_PUBLISH_MS, NULL, NULL);
        if (rc != BROKER_OK) {
            relay_failed(r, "publishing an event", broker_strerror(rc));
            r->ready = 0; /* the stream may be gone (deleted): set it up again */
            break;
        }
        r->sent = pe->pos;
        r->from_start = 0;
        atomic_fetch_add(&r->st_published, 1);
    }
    return i;
}

/* ---- the loop ------------------------------------------------------------ */

static void relay_caught_up(struct relay *r, int yes)
{
    atomic_store(&r->st_caught_up, yes);
    if (yes)
        atomic_store(&r->st_behind_ms, 0);
    else if (atomic_load(&r->st_behind_ms) == 0)
        atomic_store(&r->st_behind_ms, clock_now_ms());
}

/* One round: lease, page, publish, confirm. */
static enum relay_next relay_step(struct relay *r)
{
    if (!r->ready && relay_setup(r) != 0)
        return RELAY_RETRY;
    enum relay_next next = relay_lease(r);
    if (next == RELAY_STANDBY)
        relay_recovered(r);
    if (next != RELAY_AGAIN)
        return next;
    if (!r->pos_known && relay_position_load(r) != BROKER_OK)
        return RELAY_RETRY;
    if (relay_read(r) != 0)
        return RELAY_RETRY;
    struct page *pg = &r->page;
    size_t done = relay_publish(r);
    int complete = done == pg->n;
    if (complete) {
        /* The feed's end as the read saw it: no event below it is left. */
        if (pg->next_pos > r->sent)
            r->sent = pg->next_pos;
        r->from_start = 0;
    }
    sync_lock(&r->mu);
    int abandon = r->abandon, stopping = r->stopping;
    sync_unlock(&r->mu);
    /* Stopping with the broker away: a confirmation would only wait out
     * its timeout. */
    if (abandon || (stopping && !broker_connected(r->c.broker)))
        return RELAY_RETRY;
    if (relay_confirm(r) != BROKER_OK || !complete)
        return RELAY_RETRY;
    relay_recovered(r);
    int full = pg->n == r->c.page;
    relay_caught_up(r, !full);
    return full ? RELAY_AGAIN : RELAY_IDLE;
}

static void *relay_main(void *arg)
{
    struct relay *r = arg;
    int backoff = RELAY_RETRY_MIN_MS;
    for (;;) {
        enum relay_next next = relay_step(r);
        int wait = 0;
        switch (next) {
        case RELAY_AGAIN:
            break;
        case RELAY_IDLE:
            wait = r->c.idle_ms;
            break;
        case RELAY_STANDBY:
            wait = r->c.refresh_ms;
            break;
        case RELAY_RETRY:
            wait = backoff;
            relay_caught_up(r, 0);
            break;
        }
        backoff = next == RELAY_RETRY ? (backoff * 2 > RELAY_RETRY_MAX_MS ? RELAY_RETRY_MAX_MS
                                                                          : backoff * 2)
                                      : RELAY_RETRY_MIN_MS;
        if (wait > 0 ? sync_pause_ms(&r->cv, &r->mu, &r->stopping, wait) : relay_stopping(r))
            break;
    }
    return NULL;
}

/* ---- start and stop -------------------------------------------------------- */

static void relay_fill_defaults(struct relay *r, const struct relay_config *cfg)
{
    r->c = *cfg;
    if (!r->c.partitions)
        r->c.partitions = 16;
    if (r->c.replicas < 1)
        r->c.replicas = 1;
    if (r->c.lease_ttl_ms <= 0)
        r->c.lease_ttl_ms = 6000;
    if (r->c.refresh_ms <= 0)
        r->c.refresh_ms = 1000;
    if (r->c.idle_ms <= 0)
        r->c.idle_ms = 150;
    if (!r->c.page || r->c.page > PAYMENT_EVENTS_PAGE_MAX)
        r->c.page = r->c.page ? PAYMENT_EVENTS_PAGE_MAX : 256;
    if (cfg->relay_id && *cfg->relay_id) {
        snprintf(r->id, sizeof r->id, "%s", cfg->relay_id);
    } else {
        char host[64];
        if (gethostname(host, sizeof host) != 0)
            snprintf(host, sizeof host, "relay");
        host[sizeof host - 1] = '\0';
        snprintf(r->id, sizeof r->id, "%s-%ld", host, (long)getpid());
    }
    r->c.relay_id = r->id;
    r->page.partitions = r->c.partitions;
}

relay *relay_start(const struct relay_config *cfg)
{
    assert(cfg && cfg->store && cfg->broker && cfg->log);
    struct relay *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    relay_fill_defaults(r, cfg);
    r->page.ev = calloc(r->c.page, sizeof *r->page.ev);
    if (!r->page.ev || pthread_mutex_init(&r->mu, NULL) != 0) {
        free(r->page.ev);
        free(r);
        return NULL;
    }
    if (sync_cond_init_monotonic(&r->cv) != 0) {
        pthread_mutex_destroy(&r->mu);
        free(r->page.ev);
        free(r);
        return NULL;
    }
    if (pthread_create(&r->thread, NULL, relay_main, r) != 0) {
        pthread_cond_destroy(&r->cv);
        pthread_mutex_destroy(&r->mu);
        free(r->page.ev);
        free(r);
        return NULL;
    }
    return r;
}

static void relay_free(struct relay *r, int abandon)
{
    sync_lock(&r->mu);
    r->stopping = 1;
    r->abandon = abandon;
    sync_signal(&r->cv);
    sync_unlock(&r->mu);
    sync_join(r->thread);
    /* The last step confirmed what it published (unless abandoned); what
     * is left is the lease. */
    if (!abandon)
        relay_lease_release(r);
    broker_kv_close(r->config);
    broker_kv_close(r->leases);
    buf_free(&r->page.json);
    free(r->page.ev);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void relay_stop(relay *r)
{
    if (r)
        relay_free(r, 0);
}

void relay_abandon(relay *r)
{
    if (r)
        relay_free(r, 1);
}

void relay_stats(relay *r, struct relay_stats *out)
{
    out->active = atomic_load(&r->st_active);
    out->caught_up = atomic_load(&r->st_caught_up);
    out->confirmed = atomic_load(&r->st_confirmed);
    out->published = atomic_load(&r->st_published);
    out->expired = atomic_load(&r->st_expired);
    out->behind_ms = atomic_load(&r->st_behind_ms);
}

void relay_metrics(relay *r, struct buf *b)
{
    struct relay_stats s;
    relay_stats(r, &s);
    int64_t lag = s.active && s.behind_ms ? clock_now_ms() - s.behind_ms : 0;
    metrics_render_header(b, "paymentd_relay_active", "gauge",
                          "1 while this server's relay holds the lease and publishes events.");
    buf_printf(b, "paymentd_relay_active %d\n", s.active);
    metrics_render_header(b, "paymentd_relay_position", "gauge",
                          "The feed position the relay last confirmed.");
    buf_printf(b, "paymentd_relay_position %" PRId64 "\n", s.confirmed);
    metrics_render_header(b, "paymentd_relay_published_total", "counter",
                          "Events published to PAYMENTS_EVENTS and acknowledged.");
    buf_printf(b, "paymentd_relay_published_total %" PRIu64 "\n", s.published);
    metrics_render_header(b, "paymentd_relay_lag_seconds", "gauge",
                          "How long the active relay has not been caught up with the feed.");
    buf_printf(b, "paymentd_relay_lag_seconds %.3f\n", (double)lag / 1000.0);
    metrics_render_header(b, "paymentd_relay_expired_total", "counter",
                          "Times events were purged from the store before they were relayed.");
    buf_printf(b, "paymentd_relay_expired_total %" PRIu64 "\n", s.expired);
}
