/* relay: publishes the store's committed events (its change feed,
 * payment/store.h) to the JetStream stream PAYMENTS_EVENTS
 * (broker/opstream.h): each on its organisation's partition subject
 * "payments.events.<p>", with its event id as Nats-Msg-Id and the JSON of
 * payment/event.h as its body, the bytes GET /v1/events answers with.  The
 * relay reads the stored events, never the request path: an event is
 * published only once its change is committed, and every committed one is.
 *
 * Position.  The relay reads the feed from its confirmed position, a page at
 * a time, publishes the page's events in position order, each once the
 * previous one is acknowledged by the stream, and only then confirms the
 * position past them: key "events.relayed" of the bucket PAYMENTS_CONFIG (a
 * feed position in decimal), written with compare-and-set on its revision
 * and only ever moved forward (a relay that loses the race re-reads it and
 * keeps the larger).  A crash between an acknowledgement and the
 * confirmation has the next relay publish those events again: NATS
 * consumers get every event at least once.  A repeat within the stream's
 * 2-minute duplicate window (a takeover after a crash comes well within
 * it) is stored once; one after it (every relay stopped for longer) is
 * stored again, after the events already there, so a consumer recognises
 * it by its id.
 *
 * One active relay.  Every paymentd HTTP server run with --broker runs a
 * relay (`paymentd worker` does not: any process reading the shared store
 * can relay all of it, and the servers are always there to publish
 * operations).  The relay holding the lease, key "lease" of the bucket
 * PAYMENTS_RELAY whose keys expire lease_ttl_ms after their last write,
 * publishes; the others try to take it every refresh interval: at once
 * after a clean stop (the lease is deleted), within the TTL after a crash.
 * A holder refreshes the lease with compare-and-set every refresh interval
 * and stops publishing as soon as a TTL has passed since its last refresh
 * (its own clock tells, so a process paused for a while stops before it
 * publishes anything stale).
 *
 * Order.  The lease only saves work; order and completeness do not depend
 * on it.  Two relays publishing at once (one whose lease ran out while it
 * was stalled in a publish) each publish in position order and wait for
 * each acknowledgement before the next publish; so when an event of a
 * payment is first stored, the payment's previous event is stored already
 * (the relay publishing it had that one acknowledged first), and the second
 * copies are dropped by the duplicate window.  Each payment's events thus
 * reach the stream in version order, and the position only moves past
 * events that are on the stream.
 *
 * Waking.  The store has one change subscriber (the feed's long polls), so
 * the relay polls: every idle_ms while it is caught up, at once again while
 * pages come full.
 *
 * Failures.  A store or broker that cannot answer is retried from the last
 * event acknowledged, with a pause doubling from 100 ms to 2 s: nothing is
 * skipped.  The one exception is a position whose following events were
 * purged from the store before they were relayed (EEXPIRED: every relay was
 * stopped for longer than --event-retention): those are gone, and the relay
 * goes on from the oldest event kept, with an error logged and counted.
 *
 * Threads.  relay_start and relay_stop (or relay_abandon) are called from
 * one thread; the relay runs on a thread of its own in between.
 * relay_stats and relay_metrics may be called from any thread. */
#ifndef APP_RELAY_H
#define APP_RELAY_H

#include <stdint.h>

#include "broker/broker.h"
#include "core/buf.h"
#include "core/log.h"
#include "payment/store.h"

typedef struct relay relay;

/* A zero field takes the default in brackets. */
struct relay_config {
    payment_store *store;     /* the feed (required; borrowed: must outlive the relay) */
    broker *broker;           /* where to publish (required; borrowed, likewise) */
    const struct logger *log; /* (required; borrowed, likewise) */
    uint32_t partitions;      /* partitions of the streams (recorded, opstream.h) [16] */
    int replicas;             /* copies of the stream and buckets [1] */
    int64_t max_age_ms;       /* events are kept on the stream this long; 0: for ever [0] */
    const char *relay_id;     /* the lease's value, for operators ["<hostname>-<pid>"] */
    int lease_ttl_ms;         /* lifetime of an unrefreshed lease [6000] */
    int refresh_ms;           /* between lease refreshes, and tries of a held one [1000] */
    int idle_ms;              /* between reads of the feed once caught up [150] */
    uint32_t page;            /* events read at once, 1..PAYMENT_EVENTS_PAGE_MAX [256] */
};

#define RELAY_CONFIG_INIT {NULL, NULL, NULL, 0, 0, 0, NULL, 0, 0, 0, 0}

/* What the relay has done so far, for tests and metrics. */
struct relay_stats {
    int active;           /* it holds the lease and publishes */
    int caught_up;        /* its last read found the feed's end, and all was published */
    int64_t confirmed;    /* the position it last confirmed (or read), 0 before any */
    uint64_t published;   /* events acknowledged by the stream (duplicates included) */
    uint64_t expired;     /* times it found events purged before they were relayed */
    int64_t behind_ms;    /* since when (ms since epoch) it is not caught up; 0 when it is */
};

/* Starts the relay's thread, which sets up the stream and buckets (and
 * retries until it can), then competes for the lease.  NULL when no memory
 * or no thread. */
relay *relay_start(const struct relay_config *cfg);

/* Stops: the event being published is finished, what was acknowledged is
 * confirmed and the lease deleted (each only if the broker is connected),
 * then the relay is freed.  NULL is a no-op. */
void relay_stop(relay *r);

/* As relay_stop, but confirms nothing more and leaves the lease to expire,
 * as a crashed relay would: for tests of takeover. */
void relay_abandon(relay *r);

/* Fills out; any thread. */
void relay_stats(relay *r, struct relay_stats *out);

/* Appends the relay's gauges and counters (paymentd_relay_*) to b. */
void relay_metrics(relay *r, struct buf *b);

#endif
