/* sync's timed waits: monotonic deadlines normalised and as far ahead as
 * asked, a pause that runs its time out with the flag clear, ends at once
 * with it set, and early when another thread sets it. */
#include "core/sync.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "test.h"

static int64_t mono_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        abort();
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t timespec_ns(struct timespec ts)
{
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Checks that deadline(n) lies n * unit_ns after the call began and no
 * later than n * unit_ns after it returned, normalised. */
static void check_deadline(struct timespec (*deadline)(int64_t), int64_t n, int64_t unit_ns)
{
    int64_t before = mono_ns();
    struct timespec d = deadline(n);
    int64_t after = mono_ns();
    CHECK(d.tv_nsec >= 0 && d.tv_nsec < 1000000000);
    CHECK(timespec_ns(d) >= before + n * unit_ns);
    CHECK(timespec_ns(d) <= after + n * unit_ns);
}

static void test_deadlines(void)
{
    static const int64_t us[] = {0, 1, 999, 1000, 999999, 1000000, 1500000, 86400000000};
    for (size_t i = 0; i < sizeof us / sizeof us[0]; i++)
        check_deadline(sync_deadline_in_us, us[i], 1000);
    static const int64_t ms[] = {0, 1, 999, 1000, 1001, 123456};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
        check_deadline(sync_deadline_in_ms, ms[i], 1000000);
}

struct flagged {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int flag;
};

static int flagged_init(struct flagged *f)
{
    f->flag = 0;
    if (pthread_mutex_init(&f->mu, NULL) != 0)
        return -1;
    if (sync_cond_init_monotonic(&f->cv) != 0) {
        pthread_mutex_destroy(&f->mu);
        return -1;
    }
    return 0;
}

static void flagged_destroy(struct flagged *f)
{
    CHECK_INT(pthread_cond_destroy(&f->cv), 0);
    CHECK_INT(pthread_mutex_destroy(&f->mu), 0);
}

/* Sets the flag after 50 ms, signalling as whoever stops a thread does. */
static void *set_flag_later(void *arg)
{
    struct flagged *f = arg;
    usleep(50000);
    sync_lock(&f->mu);
    f->flag = 1;
    sync_signal(&f->cv);
    sync_unlock(&f->mu);
    return NULL;
}

/* A signal that sets no flag: the pause waits on. */
static void *signal_only(void *arg)
{
    struct flagged *f = arg;
    usleep(20000);
    sync_lock(&f->mu);
    sync_signal(&f->cv);
    sync_unlock(&f->mu);
    return NULL;
}

static void test_pause(void)
{
    struct flagged f;
    if (flagged_init(&f) != 0) {
        CHECK(!"flagged_init");
        return;
    }
    /* The flag clear: the whole time, even when signalled before. */
    pthread_t t;
    CHECK_INT(pthread_create(&t, NULL, signal_only, &f), 0);
    int64_t start = clock_mono_us();
    CHECK_INT(sync_pause_ms(&f.cv, &f.mu, &f.flag, 100), 0);
    CHECK(clock_mono_us() - start >= 100000);
    sync_join(t);

    /* Set by another thread: early. */
    CHECK_INT(pthread_create(&t, NULL, set_flag_later, &f), 0);
    start = clock_mono_us();
    CHECK_INT(sync_pause_ms(&f.cv, &f.mu, &f.flag, 10000), 1);
    CHECK(clock_mono_us() - start < 5000000);
    sync_join(t);

    /* Set already: at once. */
    start = clock_mono_us();
    CHECK_INT(sync_pause_ms(&f.cv, &f.mu, &f.flag, 10000), 1);
    CHECK(clock_mono_us() - start < 1000000);
    flagged_destroy(&f);
}

static void test_timedwait_flag(void)
{
    struct flagged f;
    if (flagged_init(&f) != 0) {
        CHECK(!"flagged_init");
        return;
    }
    sync_lock(&f.mu);
    /* A deadline passed: back at once, the flag clear, m held. */
    struct timespec past = sync_deadline_in_ms(0);
    CHECK_INT(sync_timedwait_flag(&f.cv, &f.mu, &f.flag, &past), 0);
    struct timespec soon = sync_deadline_in_ms(30);
    int64_t start = clock_mono_us();
    CHECK_INT(sync_timedwait_flag(&f.cv, &f.mu, &f.flag, &soon), 0);
    CHECK(clock_mono_us() - start >= 29000);
    sync_unlock(&f.mu);
    flagged_destroy(&f);
}

TEST_MAIN(TEST(test_deadlines), TEST(test_pause), TEST(test_timedwait_flag))
