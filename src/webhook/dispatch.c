/* dispatch: the dispatcher thread (deliver.h).  Each round reads the
 * store's dispatch position, the feed page above it (every organisation),
 * then the enabled endpoints, and makes one delivery per event and
 * endpoint of its organisation that wants its type and is owed it (event
 * pos > the endpoint's after_pos), moving the position past the page in the
 * same store step (payment_store_deliveries_add).  Another process that
 * dispatched meanwhile makes that step fail with ECONFLICT: the round is
 * read again, and the (endpoint, event) rule keeps any delivery from being
 * made twice.
 *
 * Why the endpoints are read after the events: an endpoint created after
 * the events were read has an after_pos at or above every event of the
 * page (the feed's end at its commit), so it is owed none of them; read
 * before, one created between the two reads would miss the page's events
 * committed after it.
 *
 * Threads: this one thread owns everything here; it sleeps on the
 * deliverer's cv between rounds (poll_ms, or until woken or stopped). */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/sync.h"
#include "core/uuid.h"
#include "webhook/api.h"
#include "webhook/deliver_internal.h"

#define DISPATCH_PAGE 1000 /* events a round reads at most */
static_assert(DISPATCH_PAGE <= PAYMENT_EVENTS_PAGE_MAX, "a feed page's limit");

/* One event of the page: its body is bodies.data[off .. off + len). */
struct dispatch_event {
    int64_t pos;
    char id[UUID_STR_LEN + 1];
    char organisation_id[UUID_STR_LEN + 1];
    unsigned type;                 /* enum payment_event_type */
    size_t off, len;
};

/* One enabled endpoint, as the round needs it. */
struct dispatch_endpoint {
    char id[UUID_STR_LEN + 1];
    char organisation_id[UUID_STR_LEN + 1];
    unsigned types;                /* event types it wants */
    int64_t after_pos;             /* owed events above this position */
};

/* What a round holds; reused from round to round. */
struct dispatch_round {
    struct dispatch_event *ev;     /* room for DISPATCH_PAGE */
    size_t n_ev;
    struct buf bodies;             /* the events' bodies, one after the other */
    int no_memory;                 /* a callback ran out of memory */
    struct dispatch_endpoint *ep;  /* the enabled endpoints, sorted by organisation */
    size_t n_ep, cap_ep;
    struct payment_delivery_new *dl; /* the deliveries to make */
    size_t n_dl, cap_dl;
};

/* What the loop does after a round. */
enum dispatch_next {
    DISPATCH_AGAIN, /* at once: the page was full, or the position moved */
    DISPATCH_IDLE,  /* caught up: wait poll_ms or a wake */
    DISPATCH_RETRY, /* the store failed: wait poll_ms */
};

/* The thread's own state across rounds. */
struct dispatcher {
    webhook_deliver *d;
    struct dispatch_round r;
    int failing;                   /* the last round failed (logged once per run) */
};

/* ---- reading ---------------------------------------------------------------- */

static int on_event(void *arg, const struct payment_event *ev)
{
    struct dispatch_round *r = arg;
    assert(r->n_ev < DISPATCH_PAGE);
    struct dispatch_event *e = &r->ev[r->n_ev];
    e->pos = ev->pos;
    memcpy(e->id, ev->id, sizeof e->id);
    memcpy(e->organisation_id, ev->organisation_id, sizeof e->organisation_id);
    e->type = (unsigned)ev->type;
    e->off = r->bodies.len;
    if (webhook_event_body(ev, &r->bodies) != 0 || buf_failed(&r->bodies)) {
        r->no_memory = 1;
        return 1;
    }
    e->len = r->bodies.len - e->off;
    r->n_ev++;
    return 0;
}

static int on_endpoint(void *arg, const struct payment_webhook *w)
{
    struct dispatch_round *r = arg;
    if (r->n_ep == r->cap_ep) {
        size_t cap = r->cap_ep ? r->cap_ep * 2 : 64;
        struct dispatch_endpoint *ep = realloc(r->ep, cap * sizeof *ep);
        if (!ep) {
            r->no_memory = 1;
            return 1;
        }
        r->ep = ep;
        r->cap_ep = cap;
    }
    struct dispatch_endpoint *e = &r->ep[r->n_ep++];
    memcpy(e->id, w->id, sizeof e->id);
    memcpy(e->organisation_id, w->organisation_id, sizeof e->organisation_id);
    e->types = w->types;
    e->after_pos = w->after_pos;
    return 0;
}

/* Reads every enabled endpoint into r->ep, page by page.  0 or a store
 * error (EINTERNAL out of memory). */
static int read_endpoints(payment_store *s, struct dispatch_round *r)
{
    r->n_ep = 0;
    char after[UUID_STR_LEN + 1] = "";
    int more = 1;
    while (more) {
        struct payment_webhook_query q = {0};
        q.after_id = after[0] ? after : NULL;
        q.limit = PAYMENT_WEBHOOKS_PAGE_MAX;
        q.all_orgs = 1;
        q.enabled_only = 1;
        size_t before = r->n_ep;
        more = 0;
        int rc = payment_store_webhooks_list(s, &q, on_endpoint, r, &more);
        if (r->no_memory)
            return PAYMENT_STORE_EINTERNAL;
        if (rc != PAYMENT_STORE_OK)
            return rc;
        if (r->n_ep == before)
            break; /* "more" with an empty page: nothing to go on from */
        memcpy(after, r->ep[r->n_ep - 1].id, sizeof after);
    }
    return PAYMENT_STORE_OK;
}

/* Reads the feed page above after_pos into r.  0 or a store error. */
static int read_page(payment_store *s, struct dispatch_round *r, int64_t after_pos,
                     int64_t *next_pos)
{
    r->n_ev = 0;
    r->no_memory = 0;
    buf_reset(&r->bodies);
    struct payment_event_query q = {0};
    q.after_pos = after_pos;
    q.limit = DISPATCH_PAGE;
    q.all_orgs = 1;
    q.from_ms = INT64_MIN;
    q.to_ms = INT64_MAX;
    return payment_store_events(s, &q, on_event, r, next_pos);
}

/* ---- matching ------------------------------------------------------------ */

static int endpoint_cmp(const void *a, const void *b)
{
    const struct dispatch_endpoint *x = a, *y = b;
    return strcmp(x->organisation_id, y->organisation_id);
}

/* The index of the first endpoint of organisation org in the sorted r->ep
 * (r->n_ep when none). */
static size_t first_of_org(const struct dispatch_round *r, const char *org)
{
    size_t lo = 0, hi = r->n_ep;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(r->ep[mid].organisation_id, org) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Adds the delivery of event e to endpoint ep.  0, or -1 (out of memory,
 * or the kernel's random source failed). */
static int add_delivery(struct dispatch_round *r, const struct dispatch_event *e,
                        const struct dispatch_endpoint *ep, int64_t now_ms)
{
    if (r->n_dl == r->cap_dl) {
        size_t cap = r->cap_dl ? r->cap_dl * 2 : 256;
        struct payment_delivery_new *dl = realloc(r->dl, cap * sizeof *dl);
        if (!dl)
            return -1;
        r->dl = dl;
        r->cap_dl = cap;
    }
    struct payment_delivery_new *n = &r->dl[r->n_dl];
    struct uuid u;
    if (uuid_v7_generate(now_ms, &u) != 0)
        return -1;
    uuid_format(&u, n->id);
    memcpy(n->webhook_id, ep->id, sizeof n->webhook_id);
    memcpy(n->event_id, e->id, sizeof n->event_id);
    n->event_pos = e->pos;
    n->body = r->bodies.data + e->off;
    n->body_len = e->len;
    r->n_dl++;
    return 0;
}

/* Makes r->dl: every delivery the page's events owe the endpoints.  0, or
 * -1 (see add_delivery). */
static int match(struct dispatch_round *r, int64_t now_ms)
{
    r->n_dl = 0;
    if (r->n_ep > 1)
        qsort(r->ep, r->n_ep, sizeof r->ep[0], endpoint_cmp);
    for (size_t i = 0; i < r->n_ev; i++) {
        const struct dispatch_event *e = &r->ev[i];
        for (size_t j = first_of_org(r, e->organisation_id);
             j < r->n_ep && strcmp(r->ep[j].organisation_id, e->organisation_id) == 0; j++) {
            const struct dispatch_endpoint *ep = &r->ep[j];
            if ((ep->types & e->type) && e->pos > ep->after_pos &&
                add_delivery(r, e, ep, now_ms) != 0)
                return -1;
        }
    }
    return 0;
}

/* ---- rounds ---------------------------------------------------------------- */

static enum dispatch_next round_failed(struct dispatcher *t, const char *what, int rc)
{
    if (!t->failing)
        log_msg(t->d->c.log, LOG_WARN, "webhooks: dispatcher: %s: %s; retrying", what,
                payment_store_strerror(rc));
    t->failing = 1;
    return DISPATCH_RETRY;
}

/* A round that the store answered: logs the recovery of a failing run. */
static void round_ok(struct dispatcher *t)
{
    if (t->failing)
        log_msg(t->d->c.log, LOG_INFO, "webhooks: dispatcher: the store answers again");
    t->failing = 0;
}

static enum dispatch_next dispatch_once(struct dispatcher *t)
{
    webhook_deliver *d = t->d;
    payment_store *s = d->c.store;
    struct dispatch_round *r = &t->r;
    int64_t pos = 0;
    int rc = payment_store_dispatch_pos(s, &pos);
    if (rc != PAYMENT_STORE_OK)
        return round_failed(t, "reading the dispatch position", rc);

    int64_t next_pos = 0;
    rc = read_page(s, r, pos, &next_pos);
    if (rc == PAYMENT_STORE_EEXPIRED) {
        log_msg(d->c.log, LOG_WARN,
                "webhooks: dispatcher: the feed was purged past the dispatch position %" PRId64
                "; the events that left it are not delivered; going on from the feed's start",
                pos);
        rc = read_page(s, r, 0, &next_pos);
    }
    if (r->no_memory)
        return round_failed(t, "reading the feed", PAYMENT_STORE_EINTERNAL);
    if (rc != PAYMENT_STORE_OK)
        return round_failed(t, "reading the feed", rc);
    if (next_pos < pos)
        next_pos = pos; /* cannot be: a page ends at or above where it began */
    if (r->n_ev == 0 && next_pos == pos) {
        round_ok(t);
        return DISPATCH_IDLE;
    }

    r->n_ep = 0;
    if (r->n_ev > 0 && (rc = read_endpoints(s, r)) != PAYMENT_STORE_OK)
        return round_failed(t, "listing the endpoints", rc);
    int64_t now = clock_now_ms();
    if (match(r, now) != 0)
        return round_failed(t, "making deliveries", PAYMENT_STORE_EINTERNAL);
    rc = payment_store_deliveries_add(s, pos, next_pos, r->dl, r->n_dl, 0, now);
    if (rc == PAYMENT_STORE_ECONFLICT) {
        log_msg(d->c.log, LOG_DEBUG,
                "webhooks: dispatcher: another process dispatched past %" PRId64, pos);
        return DISPATCH_AGAIN;
    }
    if (rc != PAYMENT_STORE_OK)
        return round_failed(t, "adding deliveries", rc);
    round_ok(t);
    if (r->n_dl > 0)
        webhook_sender_wake(d);
    return r->n_ev == DISPATCH_PAGE ? DISPATCH_AGAIN : DISPATCH_IDLE;
}

/* Waits poll_ms, or until woken or stopped.  Returns whether stopping. */
static int dispatch_wait(webhook_deliver *d)
{
    struct timespec until = sync_deadline_in_ms(d->c.poll_ms);
    sync_lock(&d->mu);
    int rc = 0;
    while (!d->stopping && !d->dispatch_woken && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&d->cv, &d->mu, &until);
    d->dispatch_woken = 0;
    int stopping = d->stopping;
    sync_unlock(&d->mu);
    return stopping;
}

void *webhook_dispatch_main(void *arg)
{
    struct dispatcher t = {0};
    t.d = arg;
    webhook_thread_deprioritize(t.d);
    t.r.bodies = (struct buf)BUF_INIT;
    t.r.ev = malloc(DISPATCH_PAGE * sizeof *t.r.ev);
    if (!t.r.ev) {
        log_msg(t.d->c.log, LOG_ERROR, "webhooks: dispatcher: out of memory; not dispatching");
        return NULL;
    }
    while (!webhook_deliver_stopping(t.d)) {
        if (dispatch_once(&t) == DISPATCH_AGAIN)
            continue;
        if (dispatch_wait(t.d))
            break;
    }
    free(t.r.ev);
    free(t.r.ep);
    free(t.r.dl);
    buf_free(&t.r.bodies);
    return NULL;
}
