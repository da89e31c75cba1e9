/* opqueue: the queue of operations that asynchronous writes go through,
 * as the payment API needs it: publish an operation's message (encoded by
 * operation.h) on its organisation's partition, mark the operation pending,
 * read a pending one back, tell whether the queue is reachable.  The
 * payment module defines the interface; the application implements it
 * (app/opqueue_broker.c, over NATS JetStream), so that the handlers know
 * nothing of the broker.
 *
 * Threads: every function may be called from any number of threads at
 * once; all but connected may block on the network (up to the queue's
 * timeouts), so callers run off the HTTP event loop.
 *
 * Errors are the negative values of enum opqueue_err, here only. */
#ifndef PAYMENT_OPQUEUE_H
#define PAYMENT_OPQUEUE_H

#include <stddef.h>

enum opqueue_err {
    OPQUEUE_OK = 0,
    OPQUEUE_EUNAVAILABLE = -1, /* no answer in time; a publish's outcome is then unknown */
    OPQUEUE_EINTERNAL = -2,    /* anything else: a refused request, no memory */
    OPQUEUE_EEXISTS = -3,      /* pending_mark: the operation is marked already */
    OPQUEUE_ENOTFOUND = -4,    /* pending_get: not pending (never marked, or expired) */
};

/* A queue: its functions, each called with ctx.  Borrowed by whoever
 * holds it; ctx outlives every call. */
struct payment_opqueue {
    /* Publishes len bytes of msg, the message of operation op_id, on the
     * partition of organisation org (a UUID), with op_id as its message id,
     * waiting up to timeout_ms for the queue to store it.  Returns 0 with
     * *duplicate 0, or 0 with *duplicate 1 when the queue stored op_id
     * before (within its duplicate window: nothing new is stored), or
     * OPQUEUE_EUNAVAILABLE / OPQUEUE_EINTERNAL. */
    int (*publish)(void *ctx, const char *op_id, const char *org, const char *msg, size_t len,
                   int timeout_ms, int *duplicate);
    /* Marks op_id pending with len bytes of value, unless it is marked:
     * 0, OPQUEUE_EEXISTS, or OPQUEUE_EUNAVAILABLE / OPQUEUE_EINTERNAL.  A
     * mark lasts until it expires (the application's retention). */
    int (*pending_mark)(void *ctx, const char *op_id, const char *value, size_t len);
    /* op_id's pending mark: 0 with *value (malloc'd, a NUL after its *len
     * bytes: free() it), OPQUEUE_ENOTFOUND, or OPQUEUE_EUNAVAILABLE /
     * OPQUEUE_EINTERNAL. */
    int (*pending_get)(void *ctx, const char *op_id, char **value, size_t *len);
    /* 1 when the queue is connected at this instant, else 0; never blocks. */
    int (*connected)(void *ctx);
    void *ctx;
};

#endif
