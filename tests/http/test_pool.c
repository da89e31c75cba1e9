/* pool: jobs run on threads started as work comes (none before), up to the
 * pool's maximum, an idle thread taken before a new one is started; a full
 * queue refuses at once; stopping runs what is queued. */
#include "http/pool.h"

#include <dirent.h>
#include <pthread.h>
#include <time.h>

#include "core/sync.h"
#include "test.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int open_gate; /* jobs may finish */
static int running;   /* jobs inside job() */
static int done;      /* jobs finished */

static void job(void *arg)
{
    (void)arg;
    sync_lock(&mu);
    running++;
    sync_broadcast(&cv);
    while (!open_gate)
        sync_wait(&cv, &mu);
    running--;
    done++;
    sync_broadcast(&cv);
    sync_unlock(&mu);
}

/* Waits (up to 5 s) until *what reaches n; returns whether it did. */
static int wait_for(const int *what, int n)
{
    struct timespec ts = {0, 10 * 1000 * 1000};
    for (int i = 0; i < 500; i++) {
        sync_lock(&mu);
        int v = *what;
        sync_unlock(&mu);
        if (v >= n)
            return 1;
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* The threads of this process, from /proc. */
static int threads(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    CHECK(d != NULL);
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

/* The thread count once it settles at want (up to 5 s): a joined thread
 * may still be listed in /proc/self/task for a moment after its join
 * returned (the kernel lets it go after clearing its id). */
static int threads_settled(int want)
{
    struct timespec ts = {0, 10 * 1000 * 1000};
    int n = threads();
    for (int i = 0; i < 500 && n != want; i++) {
        nanosleep(&ts, NULL);
        n = threads();
    }
    return n;
}

static void gate(int open)
{
    sync_lock(&mu);
    open_gate = open;
    sync_broadcast(&cv);
    sync_unlock(&mu);
}

static void test_threads_on_demand(void)
{
    http_pool *p = NULL;
    int base = threads();
    CHECK_INT(http_pool_start(2, 4, &p), HTTP_POOL_OK);
    if (!p)
        return;
    CHECK_INT(threads(), base); /* none before any work */
    gate(0);
    CHECK_INT(http_pool_submit(p, job, NULL), HTTP_POOL_OK);
    CHECK(wait_for(&running, 1));
    CHECK_INT(threads(), base + 1);
    CHECK_INT(http_pool_submit(p, job, NULL), HTTP_POOL_OK); /* none idle: a second */
    CHECK(wait_for(&running, 2));
    CHECK_INT(threads(), base + 2);
    CHECK_INT(http_pool_submit(p, job, NULL), HTTP_POOL_OK); /* at the maximum: queued */
    CHECK_INT(http_pool_queued(p), 1);
    CHECK_INT(threads(), base + 2);
    gate(1);
    CHECK(wait_for(&done, 3));
    CHECK_INT(http_pool_submit(p, job, NULL), HTTP_POOL_OK); /* an idle one takes it */
    CHECK(wait_for(&done, 4));
    CHECK_INT(threads(), base + 2);
    http_pool_stop(p);
    CHECK_INT(threads_settled(base), base);
}

static void test_full_queue_refused(void)
{
    http_pool *p = NULL;
    CHECK_INT(http_pool_start(1, 1, &p), HTTP_POOL_OK);
    if (!p)
        return;
    sync_lock(&mu);
    running = done = 0;
    sync_unlock(&mu);
    gate(0);
    CHECK_INT(http_pool_submit(p, job, NULL), HTTP_POOL_OK);
    CHECK(wait_for(&running, 1));
    CHECK_INT(http_pool_submit(p, job, NULL), HTTP_POOL_OK);
    CHECK_INT(http_pool_submit(p, job, NULL), HTTP_POOL_EFULL);
    gate(1);
    http_pool_stop(p); /* runs the queued one first */
    CHECK_INT(done, 2);
}

TEST_MAIN(TEST(test_threads_on_demand), TEST(test_full_queue_refused))
