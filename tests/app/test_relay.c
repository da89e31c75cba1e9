/* The event relay against a real nats-server (started by tests/broker/nats.sh,
 * run from the repository's root) and a temporary SQLite store written
 * directly: every stored event reaches the stream PAYMENTS_EVENTS once, as
 * the JSON the feed renders, with its id as message id, on its
 * organisation's partition, each payment's events in version order; a relay
 * abandoned mid-stream (as if killed) under writes is taken over after its
 * lease expires, from its last confirmed position, leaving no gap; while the
 * broker is down nothing is published and nothing is skipped, and the relay
 * catches up once it is back; of two relays one publishes, and a relay
 * stopped cleanly hands over at once. */
#include "app/relay.h"

#include <inttypes.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "broker/nats_fixture.h"
#include "broker/opstream.h"
#include "broker/partition.h"
#include "core/clock.h"
#include "payment/event.h"
#include "payment/store.h"
#include "payment/store_waiter.h"
#include "test.h"

#define PARTITIONS 8
#define ORGS 12
#define TTL_MS 1500     /* the relays' lease, short: takeovers are waited for */
#define REFRESH_MS 250
#define PATIENCE_MS 60000

/* The run's fixture, set up by test_setup. */
static struct {
    char url[256];         /* the server */
    char dir[128];         /* its directory and the store's */
    broker *b;             /* the test's own connection, for reading */
    payment_store *store;  /* written directly */
    struct logger log;
    _Atomic int next_payment; /* payments created so far: the next one's number */
} fx;

/* ---- writing events ------------------------------------------------------ */

static void org_id(int o, char out[37])
{
    snprintf(out, 37, "0a0a0a0a-0000-4000-8000-%012d", o);
}

static void payment_id(int k, char out[37])
{
    snprintf(out, 37, "00000000-0000-4000-9000-%012d", k);
}

#define LONG_AGO_MS 1700000000000 /* when the events occurred, unless told otherwise */

/* One payment's document at a version, its row, and its event's
 * description. */
struct doc {
    struct payment_row row;
    char text[256];
    struct payment_event_info info;
};

/* occurred_ms 0: LONG_AGO_MS + k. */
static void doc_make(struct doc *d, int k, int64_t version, int64_t occurred_ms)
{
    memset(d, 0, sizeof *d);
    d->info.occurred_ms = occurred_ms ? occurred_ms : LONG_AGO_MS + k;
    payment_id(k, d->row.id);
    org_id(k % ORGS, d->row.organisation_id);
    d->row.version = version;
    d->row.created_ms = d->row.modified_ms = LONG_AGO_MS + k;
    int len = snprintf(d->text, sizeof d->text,
                       "{\"type\":\"payments\",\"id\":\"%s\",\"version\":%" PRId64
                       ",\"organisation_id\":\"%s\",\"attributes\":{\"reference\":\"v%" PRId64
                       "\"}}",
                       d->row.id, version, d->row.organisation_id, version);
    d->row.doc = d->text;
    d->row.doc_len = (size_t)len;
}

/* Payments first .. first + n - 1: created, then `updates` rounds of
 * updates, then every tenth deleted; their events occurred at occurred_ms
 * (0: long ago).  Returns the writes that failed. */
static int write_payments(int first, int n, int updates, int64_t occurred_ms)
{
    struct doc *docs = calloc((size_t)n, sizeof *docs);
    if (!docs)
        return n;
    int failed = 0;
    for (int round = 0; round <= updates; round++) {
        struct waiter w;
        waiter_init(&w, n);
        for (int i = 0; i < n; i++) {
            doc_make(&docs[i], first + i, round, occurred_ms);
            if (round == 0)
                payment_store_create(fx.store, &docs[i].row, NULL, &docs[i].info, waiter_done,
                                     &w);
            else
                payment_store_update(fx.store, &docs[i].row, round - 1, NULL, &docs[i].info,
                                     waiter_done, &w);
        }
        waiter_wait(&w);
        failed += w.failed;
    }
    struct waiter w;
    int deletes = (n + 9) / 10;
    waiter_init(&w, deletes);
    for (int i = 0; i < n; i += 10)
        payment_store_delete(fx.store, docs[i].row.id, updates, NULL, &docs[i].info, waiter_done,
                             &w);
    waiter_wait(&w);
    free(docs);
    return failed + w.failed;
}

/* Writes n new payments, their events occurred at occurred_ms (0: long
 * ago): n * (updates + 1) + n / 10 events. */
static int write_new_at(int n, int updates, int64_t occurred_ms)
{
    int first = atomic_fetch_add(&fx.next_payment, n);
    return write_payments(first, n, updates, occurred_ms);
}

static int write_new(int n, int updates)
{
    return write_new_at(n, updates, 0);
}

/* ---- the feed, as the store has it ----------------------------------------- */

struct fevent {
    char id[37];
    char payment[37];
    char org[37];
    int64_t pos;
    int64_t version;
    char *json;     /* as payment_event_render makes it */
    int seen;       /* times found on the stream */
};

struct feed {
    struct fevent *ev;
    size_t n, cap;
    int64_t end;    /* the feed's end as the last read saw it */
};

static int feed_add(void *arg, const struct payment_event *ev)
{
    struct feed *f = arg;
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 1024;
        struct fevent *p = realloc(f->ev, cap * sizeof *p);
        if (!p)
            return 1;
        f->ev = p;
        f->cap = cap;
    }
    struct fevent *e = &f->ev[f->n];
    memset(e, 0, sizeof *e);
    memcpy(e->id, ev->id, sizeof e->id);
    memcpy(e->payment, ev->payment_id, sizeof e->payment);
    memcpy(e->org, ev->organisation_id, sizeof e->org);
    e->pos = ev->pos;
    e->version = ev->version;
    struct buf b = BUF_INIT;
    if (payment_event_render(ev, &b) != 0) {
        buf_free(&b);
        return 1;
    }
    e->json = buf_steal(&b, NULL);
    f->n++;
    return 0;
}

static int by_id(const void *a, const void *b)
{
    return strcmp(((const struct fevent *)a)->id, ((const struct fevent *)b)->id);
}

/* Reads the whole feed into f (feed_free it).  0, or -1. */
static int feed_read(struct feed *f)
{
    memset(f, 0, sizeof *f);
    for (;;) {
        struct payment_event_query q = {.after_pos = f->end, .limit = PAYMENT_EVENTS_PAGE_MAX,
                                         .all_orgs = 1, .from_ms = INT64_MIN,
                                         .to_ms = INT64_MAX};
        size_t before = f->n;
        int64_t next = 0;
        if (payment_store_events(fx.store, &q, feed_add, f, &next) != PAYMENT_STORE_OK)
            return -1;
        f->end = next;
        if (f->n - before < PAYMENT_EVENTS_PAGE_MAX)
            return 0;
    }
}

static void feed_free(struct feed *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->ev[i].json);
    free(f->ev);
}

/* ---- the stream, as a consumer sees it --------------------------------------- */

struct smsg {
    uint64_t seq;
    char *id;      /* Nats-Msg-Id */
    char *subject;
    char *data;    /* NUL-terminated copy */
    size_t len;
};

struct stream {
    struct smsg *m;
    size_t n;
};

static char *dup_n(const void *p, size_t len)
{
    char *s = malloc(len + 1);
    if (s) {
        memcpy(s, p, len);
        s[len] = '\0';
    }
    return s;
}

/* Reads every message of PAYMENTS_EVENTS, in stream order.  0, or -1. */
static int stream_read(struct stream *s)
{
    memset(s, 0, sizeof *s);
    uint64_t total = 0;
    if (broker_stream_messages(fx.b, OPSTREAM_EVENTS_NAME, 0, &total) != BROKER_OK)
        return -1;
    s->m = calloc(total ? total : 1, sizeof *s->m);
    broker_reader *r = NULL;
    if (!s->m || broker_reader_open(fx.b, OPSTREAM_EVENTS_NAME, "payments.events.*", 1, &r) != 0)
        return -1;
    while (s->n < total) {
        struct broker_msg m;
        if (broker_reader_next(r, 5000, &m) != BROKER_OK)
            break;
        struct smsg *o = &s->m[s->n++];
        o->seq = m.seq;
        o->id = m.msg_id ? dup_n(m.msg_id, strlen(m.msg_id)) : NULL;
        o->subject = dup_n(m.subject, strlen(m.subject));
        o->data = dup_n(m.data, m.len);
        o->len = m.len;
    }
    broker_reader_close(r);
    return s->n == total ? 0 : -1;
}

static void stream_free(struct stream *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->m[i].id);
        free(s->m[i].subject);
        free(s->m[i].data);
    }
    free(s->m);
}

/* The last version of each payment seen on the stream so far. */
struct last {
    char payment[37];
    int64_t version;
};

static int by_payment(const void *a, const void *b)
{
    return strcmp(((const struct last *)a)->payment, ((const struct last *)b)->payment);
}

/* What check_stream accepts besides a perfect match. */
enum {
    IN_FEED_ORDER = 1, /* the first copies are in feed order, not only in order per payment */
    PURGED = 2,        /* messages of events no longer in the feed (purged) are left aside */
};

/* Compares the stream with the feed: every event on the stream, as the
 * feed renders it, with its id as message id, on its organisation's
 * subject; each payment's first copies in version order from 0, and no
 * gap.  Returns the copies beyond the first (duplicates), or -1 when the
 * check failed (reported). */
static long check_stream(unsigned how)
{
    int exact_order = (how & IN_FEED_ORDER) != 0;
    struct feed f;
    struct stream s;
    if (feed_read(&f) != 0 || stream_read(&s) != 0) {
        CHECK(!"the feed and the stream can be read");
        return -1;
    }
    size_t feed_n = f.n;
    struct fevent *by_pos = malloc((f.n ? f.n : 1) * sizeof *by_pos);
    struct last *last = calloc(f.n ? f.n : 1, sizeof *last);
    CHECK(by_pos && last);
    if (!by_pos || !last)
        return -1;
    memcpy(by_pos, f.ev, f.n * sizeof *by_pos);
    qsort(f.ev, f.n, sizeof *f.ev, by_id);
    /* One entry per payment, sorted, version -1 before its first event. */
    size_t np = 0;
    for (size_t i = 0; i < f.n; i++) {
        struct last key;
        memcpy(key.payment, f.ev[i].payment, sizeof key.payment);
        if (np == 0 || !bsearch(&key, last, np, sizeof *last, by_payment)) {
            last[np] = key;
            last[np].version = -1;
            np++;
            qsort(last, np, sizeof *last, by_payment);
        }
    }
    long dups = 0, unknown = 0, wrong_json = 0, wrong_subject = 0, out_of_order = 0,
         wrong_place = 0;
    size_t first_copies = 0;
    for (size_t i = 0; i < s.n; i++) {
        struct smsg *m = &s.m[i];
        struct fevent key;
        snprintf(key.id, sizeof key.id, "%s", m->id ? m->id : "");
        struct fevent *e = bsearch(&key, f.ev, f.n, sizeof *f.ev, by_id);
        if (!e) {
            unknown += (how & PURGED) == 0;
            continue;
        }
        if (e->seen++) {
            dups++;
            continue;
        }
        if (strlen(e->json) != m->len || memcmp(e->json, m->data, m->len) != 0) {
            if (wrong_json++ == 0)
                fprintf(stderr, "  stream: %s\n  feed:   %s\n", m->data, e->json);
        }
        char subject[OPSTREAM_SUBJECT_LEN];
        opstream_events_subject(partition_of(e->org, PARTITIONS), subject);
        wrong_subject += strcmp(subject, m->subject) != 0;
        struct last lk;
        memcpy(lk.payment, e->payment, sizeof lk.payment);
        struct last *l = bsearch(&lk, last, np, sizeof *last, by_payment);
        if (!l || e->version != l->version + 1) {
            if (out_of_order++ == 0)
                fprintf(stderr, "  payment %s: version %" PRId64 " after %" PRId64 "\n",
                        e->payment, e->version, l ? l->version : -2);
        }
        if (l)
            l->version = e->version;
        if (exact_order && strcmp(by_pos[first_copies].id, e->id) != 0)
            wrong_place++;
        first_copies++;
    }
    long missing = 0;
    for (size_t i = 0; i < f.n; i++)
        missing += f.ev[i].seen == 0;
    CHECK(feed_n > 0);
    CHECK_INT(missing, 0);
    CHECK_INT(unknown, 0);
    CHECK_INT(wrong_json, 0);
    CHECK_INT(wrong_subject, 0);
    CHECK_INT(out_of_order, 0);
    CHECK_INT(wrong_place, 0);
    fprintf(stderr, "  %zu events in the feed, %zu messages on the stream (%ld duplicates)\n",
            feed_n, s.n, dups);
    free(by_pos);
    free(last);
    feed_free(&f);
    stream_free(&s);
    return missing || unknown || wrong_json || wrong_subject || out_of_order || wrong_place
               ? -1
               : dups;
}

/* ---- relays ---------------------------------------------------------------- */

static relay *start_relay(const char *id, int ttl_ms)
{
    struct relay_config c = RELAY_CONFIG_INIT;
    c.store = fx.store;
    c.broker = fx.b;
    c.log = &fx.log;
    c.partitions = PARTITIONS;
    c.relay_id = id;
    c.lease_ttl_ms = ttl_ms;
    c.refresh_ms = REFRESH_MS;
    c.idle_ms = 50;
    relay *r = relay_start(&c);
    CHECK(r != NULL);
    return r;
}

static int64_t feed_end(void)
{
    struct payment_event_query q = {.after_pos = 0, .limit = 1, .all_orgs = 1,
                                     .from_ms = INT64_MIN, .to_ms = INT64_MAX};
    int64_t end = 0;
    /* A page of one from the last event's position ends at the feed's end. */
    for (;;) {
        int64_t next = 0;
        q.after_pos = end;
        q.limit = PAYMENT_EVENTS_PAGE_MAX;
        struct feed f;
        memset(&f, 0, sizeof f);
        if (payment_store_events(fx.store, &q, feed_add, &f, &next) != PAYMENT_STORE_OK) {
            feed_free(&f);
            return -1;
        }
        int full = f.n == PAYMENT_EVENTS_PAGE_MAX;
        feed_free(&f);
        end = next;
        if (!full)
            return end;
    }
}

/* Waits until r has confirmed the feed's end; 0, or -1 after the patience. */
static int wait_caught_up(relay *r, int patience_ms)
{
    int64_t end = feed_end();
    int64_t until = fixture_mono_ms() + patience_ms;
    struct relay_stats st;
    do {
        relay_stats(r, &st);
        if (st.active && st.caught_up && st.confirmed >= end)
            return 0;
        fixture_sleep_ms(20);
    } while (fixture_mono_ms() < until);
    fprintf(stderr, "  relay not caught up: confirmed %" PRId64 " of %" PRId64 ", active %d\n",
            st.confirmed, end, st.active);
    return -1;
}

/* The position key's value, -1 when it cannot be read. */
static int64_t position_key(void)
{
    char err[256];
    broker_kv *kv = NULL;
    if (broker_kv_open(fx.b, OPSTREAM_CONFIG_BUCKET, 0, 1, &kv, err, sizeof err) != 0)
        return -1;
    char *text = NULL;
    int rc = broker_kv_get(kv, "events.relayed", &text, NULL, NULL);
    int64_t v = rc == 0 ? strtoll(text, NULL, 10) : -1;
    free(text);
    broker_kv_close(kv);
    return v;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_setup(void)
{
    fx.log.level = LOG_ERROR; /* lease and outage warnings are expected here */
    fx.log.fd = 2;
    char err[256] = "";
    CHECK_INT(fixture_nats_start("/tmp/paymentd-relay-test-XXXXXX", fx.dir, sizeof fx.dir,
                                 fx.url, sizeof fx.url),
              0);
    if (!fx.url[0])
        return;
    struct broker_options o = BROKER_OPTIONS_INIT;
    o.request_timeout_ms = 2000;
    CHECK_INT(broker_open(fx.url, &o, &fx.b, err, sizeof err), 0);
    char uri[256];
    snprintf(uri, sizeof uri, "sqlite:%s/store.db", fx.dir);
    CHECK_INT(payment_store_open(uri, 0, &fx.store, err, sizeof err), 0);
}

/* A backlog written before any relay runs is published whole, in feed
 * order, and the position confirmed is the feed's end. */
static void test_publishes_every_event(void)
{
    if (!fx.store || !fx.b)
        return;
    CHECK_INT(write_new(300, 2), 0);
    int64_t t0 = fixture_mono_ms();
    relay *r = start_relay("relay-a", TTL_MS);
    CHECK_INT(wait_caught_up(r, PATIENCE_MS), 0);
    struct relay_stats st;
    relay_stats(r, &st);
    fprintf(stderr, "  %" PRIu64 " events published in %" PRId64 " ms\n", st.published,
            fixture_mono_ms() - t0);
    CHECK_INT(check_stream(IN_FEED_ORDER), 0);
    CHECK_INT(position_key(), feed_end());
    struct buf m = BUF_INIT;
    relay_metrics(r, &m);
    char want[160];
    CHECK(m.data && strstr(m.data, "\npaymentd_relay_active 1\n"));
    snprintf(want, sizeof want, "\npaymentd_relay_position %" PRId64 "\n", feed_end());
    CHECK(m.data && strstr(m.data, want));
    snprintf(want, sizeof want, "\npaymentd_relay_published_total %" PRIu64 "\n", st.published);
    CHECK(m.data && strstr(m.data, want));
    CHECK(m.data && strstr(m.data, "\npaymentd_relay_lag_seconds 0.000\n"));
    buf_free(&m);
    /* Caught up, it publishes what comes next. */
    CHECK_INT(write_new(20, 1), 0);
    CHECK_INT(wait_caught_up(r, PATIENCE_MS), 0);
    CHECK_INT(check_stream(IN_FEED_ORDER), 0);
    relay_stop(r);
}

/* Writes go on in the background while a relay is abandoned mid-stream. */
struct writer {
    pthread_t thread;
    int rounds;   /* of 100 new payments with two updates each */
    int failed;   /* writes that failed */
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    for (int i = 0; i < w->rounds; i++)
        w->failed += write_new(100, 2);
    return NULL;
}

/* A relay abandoned mid-backlog (no confirmation, its lease left to
 * expire) while writes go on: the next one takes over once the lease has
 * expired, from the confirmed position; the stream ends up with every
 * event, each payment's in version order, and the repeats are dropped by
 * the duplicate window. */
static void test_takeover_after_crash(void)
{
    if (!fx.store || !fx.b)
        return;
    CHECK_INT(write_new(600, 2), 0); /* a backlog: the relay's pages come full */
    uint64_t before = 0;
    CHECK_INT(broker_stream_messages(fx.b, OPSTREAM_EVENTS_NAME, 0, &before), 0);
    relay *a = start_relay("relay-a", TTL_MS);
    relay *b = start_relay("relay-b", TTL_MS);
    struct writer w = {.rounds = 5};
    CHECK_INT(pthread_create(&w.thread, NULL, writer_main, &w), 0);
    /* a or b takes the lease; the one that did is abandoned mid-page. */
    struct relay_stats sa, sb;
    int64_t until = fixture_mono_ms() + PATIENCE_MS;
    do {
        fixture_sleep_ms(1);
        relay_stats(a, &sa);
        relay_stats(b, &sb);
    } while (sa.published + sb.published < 700 && fixture_mono_ms() < until);
    relay *victim = sa.active ? a : b, *heir = sa.active ? b : a;
    CHECK(sa.active != sb.active);
    relay_stats(victim, &sa); /* what it published, repeats included */
    relay_abandon(victim);
    int64_t abandoned = fixture_mono_ms();
    relay_stats(heir, &sb);
    CHECK(!sb.active); /* the lease is still the victim's */
    CHECK_INT(pthread_join(w.thread, NULL), 0);
    CHECK_INT(w.failed, 0);
    until = fixture_mono_ms() + PATIENCE_MS;
    do {
        fixture_sleep_ms(5);
        relay_stats(heir, &sb);
    } while (!sb.active && fixture_mono_ms() < until);
    int64_t took = fixture_mono_ms() - abandoned;
    CHECK(took >= TTL_MS - 2 * REFRESH_MS); /* only once the lease expired */
    CHECK_INT(wait_caught_up(heir, PATIENCE_MS), 0);
    relay_stats(heir, &sb);
    uint64_t after = 0;
    CHECK_INT(broker_stream_messages(fx.b, OPSTREAM_EVENTS_NAME, 0, &after), 0);
    fprintf(stderr,
            "  taken over %" PRId64 " ms after the abandonment; %" PRIu64 " acknowledged in "
            "all, %" PRIu64 " new messages: %" PRIu64 " repeats dropped by the window\n",
            took, sa.published + sb.published, after - before,
            sa.published + sb.published - (after - before));
    CHECK_INT(check_stream(0u), 0);
    relay_stop(heir);
}

/* With the broker down nothing is published, and nothing is skipped: the
 * relay catches up once it is back. */
static void test_broker_down_catch_up(void)
{
    if (!fx.store || !fx.b)
        return;
    relay *r = start_relay("relay-c", TTL_MS);
    CHECK_INT(wait_caught_up(r, PATIENCE_MS), 0);
    char args[256];
    snprintf(args, sizeof args, "stop '%s/nats'", fx.dir);
    CHECK_INT(nats_sh(args, NULL, 0), 0);
    struct relay_stats s0, s1;
    relay_stats(r, &s0);
    CHECK_INT(write_new(100, 2), 0);
    /* It knows it is behind once a call to the broker has failed (each
     * waits up to the request timeout for the connection to come back). */
    int64_t until = fixture_mono_ms() + 10000;
    do {
        fixture_sleep_ms(20);
        relay_stats(r, &s1);
    } while (s1.caught_up && fixture_mono_ms() < until);
    CHECK(!s1.caught_up);
    fixture_sleep_ms(1000);
    relay_stats(r, &s1);
    CHECK_INT(s1.published, s0.published);
    snprintf(args, sizeof args, "start '%s/nats'", fx.dir);
    CHECK_INT(nats_sh(args, NULL, 0), 0);
    CHECK_INT(write_new(50, 1), 0);
    CHECK_INT(wait_caught_up(r, PATIENCE_MS), 0);
    CHECK_INT(check_stream(0u), 0);
    relay_stop(r);
}

/* Of two relays one publishes; the one stopped hands over at once (its
 * lease deleted), well before the lease would have expired. */
static void test_clean_stop_hands_over(void)
{
    if (!fx.store || !fx.b)
        return;
    const int ttl = 5000;
    relay *a = start_relay("relay-d", ttl);
    relay *b = start_relay("relay-e", ttl);
    struct relay_stats sa, sb;
    int64_t until = fixture_mono_ms() + PATIENCE_MS;
    do {
        fixture_sleep_ms(10);
        relay_stats(a, &sa);
        relay_stats(b, &sb);
    } while (!sa.active && !sb.active && fixture_mono_ms() < until);
    int both = 0;
    for (int i = 0; i < 50; i++) {
        relay_stats(a, &sa);
        relay_stats(b, &sb);
        both += sa.active && sb.active;
        fixture_sleep_ms(10);
    }
    CHECK_INT(both, 0);
    CHECK(sa.active != sb.active);
    relay *active = sa.active ? a : b, *other = sa.active ? b : a;
    relay_stop(active);
    int64_t stopped = fixture_mono_ms();
    do {
        fixture_sleep_ms(5);
        relay_stats(other, &sb);
    } while (!sb.active && fixture_mono_ms() - stopped < ttl * 3);
    int64_t took = fixture_mono_ms() - stopped;
    fprintf(stderr, "  handed over in %" PRId64 " ms (lease %d ms)\n", took, ttl);
    CHECK(sb.active);
    CHECK(took < ttl / 2);
    CHECK_INT(write_new(20, 1), 0);
    CHECK_INT(wait_caught_up(other, PATIENCE_MS), 0);
    CHECK_INT(check_stream(0u), 0);
    relay_stop(other);
}

/* A lease that holds the relay's own id (its create was stored, but the
 * answer lost) is the relay's: it publishes at once, not after the TTL. */
static void test_own_lease_adopted(void)
{
    if (!fx.store || !fx.b)
        return;
    const int ttl = 5000;
    char err[256];
    broker_kv *kv = NULL;
    CHECK_INT(broker_kv_open(fx.b, "PAYMENTS_RELAY", ttl, 1, &kv, err, sizeof err), 0);
    CHECK_INT(broker_kv_create(kv, "lease", "relay-h", 7, NULL), 0);
    broker_kv_close(kv);
    int64_t t0 = fixture_mono_ms();
    relay *r = start_relay("relay-h", ttl);
    struct relay_stats st;
    do {
        fixture_sleep_ms(5);
        relay_stats(r, &st);
    } while (!st.active && fixture_mono_ms() - t0 < 3 * ttl);
    int64_t took = fixture_mono_ms() - t0;
    fprintf(stderr, "  active %" PRId64 " ms after its start (lease %d ms)\n", took, ttl);
    CHECK(st.active);
    CHECK(took < ttl / 2);
    CHECK_INT(wait_caught_up(r, PATIENCE_MS), 0);
    relay_stop(r);
}

/* Deletes the events stream behind the relay's back.  0, or -1. */
static int delete_events_stream(void)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsErrCode jerr = 0;
    natsStatus s = natsConnection_ConnectTo(&nc, fx.url);
    if (s == NATS_OK)
        s = natsConnection_JetStream(&js, nc, NULL);
    if (s == NATS_OK)
        s = js_DeleteStream(js, OPSTREAM_EVENTS_NAME, NULL, &jerr);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return s == NATS_OK ? 0 : -1;
}

/* A stream deleted under a running relay is set up again by it, and what
 * is committed afterwards reaches it. */
static void test_stream_recreated(void)
{
    if (!fx.store || !fx.b)
        return;
    relay *r = start_relay("relay-g", TTL_MS);
    CHECK_INT(wait_caught_up(r, PATIENCE_MS), 0);
    CHECK_INT(delete_events_stream(), 0);
    CHECK_INT(write_new(10, 1), 0);
    CHECK_INT(wait_caught_up(r, PATIENCE_MS), 0);
    uint64_t n = 0;
    CHECK_INT(broker_stream_messages(fx.b, OPSTREAM_EVENTS_NAME, 0, &n), 0);
    CHECK_INT(n, 10 * 2 + 1);
    relay_stop(r);
}

/* Events purged from the store before they were relayed (every relay
 * stopped for longer than the retention) are gone: the relay says so and
 * goes on from the oldest event kept, which all reach the stream. */
static void test_expired_goes_on(void)
{
    if (!fx.store || !fx.b)
        return;
    int64_t relayed = feed_end();
    int64_t now = clock_now_ms();
    CHECK_INT(write_new(100, 1), 0); /* occurred long ago: purged */
    CHECK_INT(write_new_at(20, 2, now), 0);
    payment_store_events_purge(fx.store, now - 60000, INT64_MIN);
    struct payment_event_query q = {.after_pos = relayed, .limit = 1, .all_orgs = 1,
                                     .from_ms = INT64_MIN, .to_ms = INT64_MAX};
    struct feed f;
    memset(&f, 0, sizeof f);
    int64_t next = 0, until = fixture_mono_ms() + PATIENCE_MS;
    int rc;
    /* The purge runs between the store's writes, a batch at a time. */
    while ((rc = payment_store_events(fx.store, &q, feed_add, &f, &next)) == PAYMENT_STORE_OK &&
           fixture_mono_ms() < until) {
        feed_free(&f);
        memset(&f, 0, sizeof f);
        fixture_sleep_ms(20);
    }
    feed_free(&f);
    CHECK_INT(rc, PAYMENT_STORE_EEXPIRED);
    relay *r = start_relay("relay-f", TTL_MS);
    CHECK_INT(wait_caught_up(r, PATIENCE_MS), 0);
    struct relay_stats st;
    relay_stats(r, &st);
    CHECK_INT(st.expired, 1);
    CHECK_INT(st.published, 20 * 3 + 2); /* only the events kept */
    CHECK_INT(check_stream(PURGED), 0);
    CHECK_INT(position_key(), feed_end());
    relay_stop(r);
}

static void test_teardown(void)
{
    payment_store_close(fx.store);
    broker_close(fx.b);
    broker_library_shutdown();
    if (fx.dir[0]) { /* the guardian removes the folder at exit */
        char args[256];
        snprintf(args, sizeof args, "stop '%s/nats'", fx.dir);
        CHECK_INT(nats_sh(args, NULL, 0), 0);
    }
}

TEST_MAIN(TEST(test_setup), TEST(test_publishes_every_event), TEST(test_takeover_after_crash),
          TEST(test_broker_down_catch_up), TEST(test_clean_stop_hands_over),
          TEST(test_own_lease_adopted), TEST(test_stream_recreated), TEST(test_expired_goes_on), TEST(test_teardown))
