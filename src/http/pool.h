/* pool: a bounded pool of threads for blocking work, so that the HTTP
 * event-loop threads never wait on the network.
 *
 * A job is a function and its argument, run once on one of the pool's
 * threads in submission order.  Threads are started as work comes, up to
 * the pool's maximum, and kept until the pool stops.  The queue is bounded: when it is full a
 * submission is refused at once (the caller answers 503), never queued
 * behind a stalled dependency without limit.
 *
 * Threads: http_pool_submit is safe from any thread; http_pool_stop from
 * the owner only, once no submission can happen any more.
 * Errors: HTTP_POOL_EFULL, HTTP_POOL_ESTART (see the functions). */
#ifndef HTTP_POOL_H
#define HTTP_POOL_H

#include <stddef.h>

typedef struct http_pool http_pool;

enum http_pool_err {
    HTTP_POOL_OK = 0,
    HTTP_POOL_EFULL = -1,  /* submit: the queue holds its maximum of jobs */
    HTTP_POOL_ESTART = -2, /* start: out of memory */
};

/* Makes a pool of at most threads threads (>= 1; none started yet) with
 * room for queue_max jobs waiting (>= 1).  Returns 0 and the pool, or
 * HTTP_POOL_ESTART. */
int http_pool_start(unsigned threads, size_t queue_max, http_pool **out);

/* Queues fn(arg), starting a thread for it when none is idle and the
 * maximum allows.  Returns 0, or HTTP_POOL_EFULL (fn will not run): the
 * queue is full, or no thread could be started at all. */
int http_pool_submit(http_pool *p, void (*fn)(void *arg), void *arg);

/* Jobs queued and not started yet, at this instant (metrics, tests). */
size_t http_pool_queued(http_pool *p);

/* Runs every job queued, then joins the threads and frees the pool.  NULL
 * is a no-op. */
void http_pool_stop(http_pool *p);

#endif
