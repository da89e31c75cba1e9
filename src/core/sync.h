/* sync: the pthread calls on mutexes, condition variables and threads whose
 * failure can only be a bug in paymentd (a mutex locked twice or unlocked by
 * another thread, a condition waited on with a mutex not held, a thread
 * joined twice).  Each asserts that the call succeeded, so that callers need
 * no error path for what a correct program never meets, and a bug stops the
 * process at once instead of running on without the lock.
 *
 * Threads: as pthreads.  Header only. */
#ifndef CORE_SYNC_H
#define CORE_SYNC_H

#include <assert.h>
#include <pthread.h>

static inline void sync_lock(pthread_mutex_t *m)
{
    int rc = pthread_mutex_lock(m);
    assert(rc == 0);
    (void)rc;
}

static inline void sync_unlock(pthread_mutex_t *m)
{
    int rc = pthread_mutex_unlock(m);
    assert(rc == 0);
    (void)rc;
}

/* Waits on cv; m is held by the caller (and again on return). */
static inline void sync_wait(pthread_cond_t *cv, pthread_mutex_t *m)
{
    int rc = pthread_cond_wait(cv, m);
    assert(rc == 0);
    (void)rc;
}

static inline void sync_signal(pthread_cond_t *cv)
{
    int rc = pthread_cond_signal(cv);
    assert(rc == 0);
    (void)rc;
}

static inline void sync_broadcast(pthread_cond_t *cv)
{
    int rc = pthread_cond_broadcast(cv);
    assert(rc == 0);
    (void)rc;
}

/* Joins t, started joinable by the caller and joined once. */
static inline void sync_join(pthread_t t)
{
    int rc = pthread_join(t, NULL);
    assert(rc == 0);
    (void)rc;
}

#endif
