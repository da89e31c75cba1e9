/* feed_wait: where requests to the change feed wait for new events (the
 * long poll of GET /v1/events?wait=N), without holding any thread.
 *
 * A request that found its page empty is parked here: suspended (see
 * http_request_suspend) and listed, until one of these wakes it, when the
 * server runs its continuation, which reads the feed again:
 *   - the store reports that events may have been committed (the module is
 *     the store's one events subscriber, and wakes every parked request;
 *     reports that come faster than FEED_WAIT_COALESCE_MS apart wake them
 *     once, so that a stream of commits does not make each waiter read
 *     again at the commit rate);
 *   - its recheck is due (FEED_WAIT_RECHECK_MS after it was parked), in
 *     case a report was missed;
 *   - its deadline passes;
 *   - the server shuts down (feed_wait_close).
 * One thread of the module's own does the waking; the store's report only
 * signals it, so the store's writer never waits on HTTP work.
 *
 * Admission: at most max requests are in a long poll at once (parked, or
 * woken and reading again), so that waiters cannot take every connection
 * and every read of the store; feed_wait_enter refuses the next one, which
 * the handler answers 503.
 *
 * Ownership: the module borrows the store (which must outlive it, the
 * subscription being for life) and each parked request; struct
 * feed_waiter is the caller's memory, kept with the request.
 * Threads: every function but feed_wait_start and feed_wait_free is safe
 * from any thread. */
#ifndef PAYMENT_FEED_WAIT_H
#define PAYMENT_FEED_WAIT_H

#include <stddef.h>
#include <stdint.h>

#include "http/server.h"
#include "payment/store.h"

#define FEED_WAIT_RECHECK_MS 1000 /* a parked request reads again at least this often */
#define FEED_WAIT_COALESCE_MS 10   /* reports closer than this wake the parked once */

typedef struct feed_wait feed_wait;

/* A parked request, in the caller's memory (its request state): unused
 * while not parked. */
struct feed_waiter {
    struct feed_waiter *prev, *next; /* in the parked list */
    http_request *req;               /* the suspended request */
    int64_t due_us;                  /* monotonic: its deadline or its recheck, the earlier */
};

enum feed_wait_err {
    FEED_WAIT_OK = 0,
    FEED_WAIT_EFULL = -1,   /* enter: max requests are waiting already */
    FEED_WAIT_ECLOSED = -2, /* enter, park: the server is shutting down */
};

/* Makes the module for store s, subscribes to its events and starts the
 * waking thread; max (>= 1) requests may wait at once.  Call before the
 * store's writes begin (payment_store_events_subscribe).  Returns 0 and
 * the module, or -1 (out of memory, no thread). */
int feed_wait_start(payment_store *s, size_t max, feed_wait **out);

/* Counts a request in: FEED_WAIT_OK, then feed_wait_leave exactly once
 * when it is answered or freed; or FEED_WAIT_EFULL, FEED_WAIT_ECLOSED. */
int feed_wait_enter(feed_wait *fw);
void feed_wait_leave(feed_wait *fw);

/* The count of the store's reports so far: read it before reading the
 * feed, and give it to feed_wait_park. */
uint64_t feed_wait_epoch(feed_wait *fw);

/* Suspends req (entered) with continuation then and parks it in w until
 * it is woken, at deadline_us (monotonic) at the latest.  A report that
 * came after epoch (feed_wait_epoch before the read that found nothing)
 * wakes it within FEED_WAIT_COALESCE_MS: the events it announces may be
 * committed after that read.  Call as the
 * handler's last step: req may be resumed, answered and freed before this
 * returns FEED_WAIT_OK.  FEED_WAIT_ECLOSED: not parked (nor suspended),
 * the handler answers now. */
int feed_wait_park(feed_wait *fw, http_request *req, struct feed_waiter *w, uint64_t epoch,
                   int64_t deadline_us, http_handler_fn then);

/* Requests in a long poll now (the /metrics gauge). */
size_t feed_wait_count(feed_wait *fw);

/* Shutting down: wakes every parked request, refuses every new one, and
 * stops the waking thread.  Call before http_server_stop, which waits for
 * suspended requests.  NULL is a no-op; a second call too. */
void feed_wait_close(feed_wait *fw);

/* Frees the module, closing it first if need be.  The store keeps
 * reporting to it until closed: free it after payment_store_close.  NULL is
 * a no-op. */
void feed_wait_free(feed_wait *fw);

#endif
