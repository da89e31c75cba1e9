/* sync: the pthread calls on mutexes, condition variables and threads whose
 * failure can only be a bug in paymentd (a mutex locked twice or unlocked by
 * another thread, a condition waited on with a mutex not held, a thread
 * joined twice).  Each asserts that the call succeeded, so that callers need
 * no error path for what a correct program never meets, and a bug stops the
 * process at once instead of running on without the lock.
 *
 * Also the timed waits of the threads that sleep between rounds: condition
 * variables timed on CLOCK_MONOTONIC (so that setting the wall clock moves
 * no deadline), their deadlines, and the wait "until a flag is set or the
 * time is up".
 *
 * Threads: as pthreads.  Header only. */
#ifndef CORE_SYNC_H
#define CORE_SYNC_H

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

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

/* Initialises cv as a condition variable whose timed waits count on
 * CLOCK_MONOTONIC, the clock of sync_deadline_in_us and clock_mono_us.
 * 0, or -1 with cv not initialised (nothing to destroy).  Setting up can
 * fail (out of memory): the caller keeps an error path. */
static inline int sync_cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        return -1;
    int rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(cv, &attr);
    int drc = pthread_condattr_destroy(&attr); /* an initialised attr */
    assert(drc == 0);
    (void)drc;
    return rc == 0 ? 0 : -1;
}

/* The CLOCK_MONOTONIC instant us microseconds (>= 0) from now, normalised
 * (tv_nsec in [0, 1e9)): the deadline pthread_cond_timedwait takes on a
 * condition variable made by sync_cond_init_monotonic. */
static inline struct timespec sync_deadline_in_us(int64_t us)
{
    assert(us >= 0);
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        abort(); /* a valid clock and pointer: cannot fail */
    int64_t ns = (int64_t)ts.tv_nsec + us % 1000000 * 1000;
    ts.tv_sec += (time_t)(us / 1000000 + ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    return ts;
}

/* sync_deadline_in_us of ms milliseconds (>= 0). */
static inline struct timespec sync_deadline_in_ms(int64_t ms)
{
    return sync_deadline_in_us(ms * 1000);
}

/* Waits on cv, m held by the caller (and again on return), until *flag
 * (guarded by m) is set or the deadline until passes on cv's clock.
 * Wakeups for any other reason, and a failed wait, wait again.  Returns
 * *flag as last read, under m. */
static inline int sync_timedwait_flag(pthread_cond_t *cv, pthread_mutex_t *m, const int *flag,
                                      const struct timespec *until)
{
    int rc = 0;
    while (!*flag && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(cv, m, until);
    return *flag;
}

/* Sleeps ms milliseconds (>= 0), or less when *flag is set: takes m (which
 * guards *flag; the caller does not hold it) and waits on cv, made by
 * sync_cond_init_monotonic and signalled by whoever sets *flag.  Returns
 * *flag as last read, under m. */
static inline int sync_pause_ms(pthread_cond_t *cv, pthread_mutex_t *m, const int *flag,
                                int64_t ms)
{
    struct timespec until = sync_deadline_in_ms(ms);
    sync_lock(m);
    int set = sync_timedwait_flag(cv, m, flag, &until);
    sync_unlock(m);
    return set;
}

#endif
