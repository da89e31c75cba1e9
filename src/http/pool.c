/* pool: the HTTP layer's threads for blocking work (see pool.h).  A ring of
 * queue_max job slots under one mutex; idle threads sleep on a condition
 * variable.  Threads are started when work comes and no idle one can take
 * it, up to max_threads, and then kept: a server whose requests never block
 * (the embedded store without a broker) starts none.  The pool owns its
 * ring and its threads.
 *
 * Invariant: after a submission, queued <= idle or max_threads are started
 * (unless the system refused a thread: the job then waits for a busy one),
 * so that a queued job never waits while a thread could be started for it. */
#include "http/pool.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>

#include "core/sync.h"

struct pool_job {
    void (*fn)(void *arg); /* what to run */
    void *arg;             /* its argument, owned by the submitter */
};

struct http_pool {
    pthread_mutex_t mu;     /* guards everything below but threads */
    pthread_cond_t wake;    /* a job was queued, or stopping */
    struct pool_job *ring;  /* queue_max slots */
    size_t queue_max;       /* capacity of ring */
    size_t head;            /* the oldest queued job */
    size_t queued;          /* jobs in ring */
    int stopping;           /* set by http_pool_stop: exit once the ring is empty */
    unsigned idle;          /* threads waiting for a job */
    unsigned max_threads;   /* threads the pool may start */
    unsigned n_threads;     /* threads started */
    pthread_t *threads;     /* n_threads of them, room for max_threads */
};

static void *pool_main(void *arg)
{
    http_pool *p = arg;
    sync_lock(&p->mu);
    for (;;) {
        while (p->queued == 0 && !p->stopping) {
            p->idle++;
            sync_wait(&p->wake, &p->mu);
            p->idle--;
        }
        if (p->queued == 0)
            break; /* stopping, and nothing left */
        struct pool_job job = p->ring[p->head];
        p->head = (p->head + 1) % p->queue_max;
        p->queued--;
        sync_unlock(&p->mu);
        job.fn(job.arg);
        sync_lock(&p->mu);
    }
    sync_unlock(&p->mu);
    return NULL;
}

/* Stops and joins the threads started so far, then frees p. */
static void pool_free(http_pool *p)
{
    sync_lock(&p->mu);
    p->stopping = 1;
    sync_broadcast(&p->wake);
    sync_unlock(&p->mu);
    for (unsigned i = 0; i < p->n_threads; i++)
        sync_join(p->threads[i]);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p->ring);
    free(p);
}

int http_pool_start(unsigned threads, size_t queue_max, http_pool **out)
{
    assert(threads >= 1 && queue_max >= 1);
    *out = NULL;
    http_pool *p = calloc(1, sizeof *p);
    if (!p)
        return HTTP_POOL_ESTART;
    p->queue_max = queue_max;
    p->ring = calloc(queue_max, sizeof *p->ring);
    p->threads = calloc(threads, sizeof *p->threads);
    if (!p->ring || !p->threads || pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p->ring);
        free(p->threads);
        free(p);
        return HTTP_POOL_ESTART;
    }
    if (pthread_cond_init(&p->wake, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p->ring);
        free(p->threads);
        free(p);
        return HTTP_POOL_ESTART;
    }
    p->max_threads = threads;
    *out = p;
    return HTTP_POOL_OK;
}

int http_pool_submit(http_pool *p, void (*fn)(void *arg), void *arg)
{
    sync_lock(&p->mu);
    assert(!p->stopping); /* the owner stops submitting before it stops the pool */
    if (p->queued == p->queue_max) {
        sync_unlock(&p->mu);
        return HTTP_POOL_EFULL;
    }
    if (p->queued + 1 > p->idle && p->n_threads < p->max_threads) {
        if (pthread_create(&p->threads[p->n_threads], NULL, pool_main, p) == 0)
            p->n_threads++;
        else if (p->n_threads == 0) {
            sync_unlock(&p->mu);
            return HTTP_POOL_EFULL; /* no thread could ever run it */
        }
    }
    p->ring[(p->head + p->queued) % p->queue_max] = (struct pool_job){fn, arg};
    p->queued++;
    sync_signal(&p->wake);
    sync_unlock(&p->mu);
    return HTTP_POOL_OK;
}

size_t http_pool_queued(http_pool *p)
{
    sync_lock(&p->mu);
    size_t n = p->queued;
    sync_unlock(&p->mu);
    return n;
}

void http_pool_stop(http_pool *p)
{
    if (p)
        pool_free(p);
}
