/* store_waiter: what the store tests share: waiting for writes a store
 * reports through its done callback (store.h's payment_store_done_fn), and
 * removing a test's folder.  Header-only: each test binary is one file. */
#ifndef TESTS_PAYMENT_STORE_WAITER_H
#define TESTS_PAYMENT_STORE_WAITER_H

#include <ftw.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#include "payment/store.h"
#include "test.h"

/* Writes in flight, counted down by waiter_done. */
struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int pending; /* writes not reported yet */
    int failed;  /* writes reported with an error */
    int err;     /* the last write's result (1 before any) */
    int64_t cur; /* its current version (ECONFLICT), -2 before any */
    int64_t seq; /* its sequence number (create), -2 before any */
};

static inline void waiter_init(struct waiter *w, int pending)
{
    CHECK_INT(pthread_mutex_init(&w->mu, NULL), 0);
    CHECK_INT(pthread_cond_init(&w->cv, NULL), 0);
    w->pending = pending;
    w->failed = 0;
    w->err = 1;
    w->cur = w->seq = -2;
}

/* A payment_store_done_fn; arg is the waiter. */
static inline void waiter_done(void *arg, int err, int64_t cur, int64_t seq)
{
    struct waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    w->failed += err != PAYMENT_STORE_OK;
    w->err = err;
    w->cur = cur;
    w->seq = seq;
    w->pending--;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Waits until every write was reported, then releases the waiter (its
 * results stay readable). */
static inline void waiter_wait(struct waiter *w)
{
    pthread_mutex_lock(&w->mu);
    while (w->pending > 0)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}

static inline int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* Removes dir and everything in it. */
static inline void rm_tree(const char *dir)
{
    CHECK_INT(nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
}

#endif
