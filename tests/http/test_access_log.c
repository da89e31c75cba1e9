/* The access log on its own: writes of whole lines within PIPE_BUF, a
 * destination that takes nothing never holds up the adders (lines past the
 * cap are dropped and counted), a full pipe of a non-blocking destination
 * is waited for, lines the level drops are not counted, lines past
 * ACCESS_LOG_WAKE_BYTES go out at once.
 * (tests/http/test_server.c checks the log through a server: lines soon,
 * every line by the stop, in order, a long line whole.) */
#include "http/access_log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "test.h"

/* Adds lines "/p/<first>".."/p/<first + n - 1>" with request ids of the same
 * numbers. */
static void add_lines(access_log *al, int first, int n)
{
    for (int i = first; i < first + n; i++) {
        char id[32], path[32];
        snprintf(id, sizeof id, "r%d", i);
        snprintf(path, sizeof path, "/p/%d", i);
        access_log_add(al, id, "GET", path, 200, 7);
    }
}

/* Reads fd until end of file into a malloc'd string. */
static char *read_all(int fd)
{
    size_t cap = 1 << 16, len = 0;
    char *s = malloc(cap + 1);
    for (;;) {
        if (!s)
            return NULL;
        ssize_t r = read(fd, s + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == cap) {
            cap *= 2;
            char *t = realloc(s, cap + 1);
            if (!t)
                free(s);
            s = t;
        }
    }
    if (s)
        s[len] = '\0';
    return s;
}

/* Counts the lines of text that are whole access lines, and checks their
 * numbers ("/p/N") only grow. */
static int whole_lines(const char *text, int *in_order)
{
    int n = 0, last = -1;
    *in_order = 1;
    for (const char *line = text, *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        static const char key[] = "\"path\":\"/p/";
        const char *p = memmem(line, (size_t)(nl - line), key, sizeof key - 1);
        if (line[0] != '{' || nl[-1] != '}' || !p)
            continue;
        int k = atoi(p + strlen("\"path\":\"/p/"));
        *in_order &= k > last;
        last = k;
        n++;
    }
    return n;
}

struct adder {
    access_log *al;
    int n;                 /* lines to add */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;              /* set when every add returned */
};

static void *adder_main(void *arg)
{
    struct adder *a = arg;
    add_lines(a->al, 0, a->n);
    pthread_mutex_lock(&a->mu);
    a->done = 1;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

struct reader {
    int fd;
    char *text; /* all that was read, malloc'd */
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    r->text = read_all(r->fd);
    return NULL;
}

/* A pipe nobody reads: adding far more lines than the pipe and the cap hold
 * returns (it would hang before); what did not fit is counted as dropped;
 * once the pipe is read, every line kept arrives whole and in order.  With
 * nonblocking, the pipe's writing end is non-blocking, as a stderr inherited
 * from some parents is: a full pipe is waited for, not lines lost. */
static void stuck_destination(int nonblocking)
{
    int p[2];
    CHECK_INT(pipe(p), 0);
    if (nonblocking)
        CHECK_INT(fcntl(p[1], F_SETFL, O_NONBLOCK), 0);
    struct logger lg = {LOG_INFO, p[1]};
    access_log *al = NULL;
    CHECK_INT(access_log_start(&lg, &al), 0);
    if (!al)
        return;
    /* 134 bytes a line, 2.7 MB in all: more than the cap, a batch being
     * written (as large at most) and the pipe can hold */
    enum { N = 20000 };
    struct adder a = {.al = al, .n = N};
    pthread_mutex_init(&a.mu, NULL);
    pthread_cond_init(&a.cv, NULL);
    pthread_t t;
    CHECK_INT(pthread_create(&t, NULL, adder_main, &a), 0);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30; /* a hang, not a speed: the adds take milliseconds */
    pthread_mutex_lock(&a.mu);
    int rc = 0;
    while (!a.done && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&a.cv, &a.mu, &until);
    int done = a.done;
    pthread_mutex_unlock(&a.mu);
    if (!done) {
        fprintf(stderr, "  %s: the adds are stuck behind the full pipe\n", __func__);
        abort(); /* the adder cannot be freed: end the run here, as a failure */
    }
    pthread_join(t, NULL);
    uint64_t dropped = access_log_dropped(al);
    CHECK(dropped > 0 && dropped < N);
    /* now a reader: the last lines go out, then end of file */
    struct reader r = {p[0], NULL};
    pthread_t rt;
    CHECK_INT(pthread_create(&rt, NULL, reader_main, &r), 0);
    access_log_stop(al);
    close(p[1]);
    pthread_join(rt, NULL);
    int in_order = 0;
    CHECK(r.text != NULL);
    CHECK_INT(r.text ? whole_lines(r.text, &in_order) : 0, N - (int)dropped);
    CHECK(in_order);
    free(r.text);
    pthread_cond_destroy(&a.cv);
    pthread_mutex_destroy(&a.mu);
    close(p[0]);
}

/* What a reader of a socket that keeps message boundaries saw. */
struct messages {
    int fd;
    const char *long_path; /* the one line longer than PIPE_BUF */
    int writes, bad, lines, long_alone;
};

static void *messages_main(void *arg)
{
    struct messages *m = arg;
    static char msg[16384];
    for (;;) {
        ssize_t n = recv(m->fd, msg, sizeof msg - 1, 0);
        if (n <= 0)
            break;
        msg[n] = '\0';
        m->writes++;
        int in_order;
        int whole = whole_lines(msg, &in_order);
        int nl = 0;
        for (ssize_t i = 0; i < n; i++)
            nl += msg[i] == '\n';
        m->lines += whole;
        m->bad += msg[n - 1] != '\n' || whole != nl || !in_order;
        m->bad += n > PIPE_BUF && nl != 1;
        m->long_alone += n > PIPE_BUF && nl == 1 && strstr(msg, m->long_path) != NULL;
    }
    return NULL;
}

static void test_stuck_destination(void)
{
    stuck_destination(0);
}

static void test_stuck_nonblocking_destination(void)
{
    stuck_destination(1);
}

/* On a socket that keeps message boundaries, each write is seen alone:
 * every one is whole lines, at most PIPE_BUF bytes, but for a single line
 * longer than that, written alone. */
static void test_writes_are_whole_lines(void)
{
    int sv[2];
    CHECK_INT(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    static char path[6000];
    memcpy(path, "/p/500/", 7);
    memset(path + 7, 'a', sizeof path - 8);
    path[sizeof path - 1] = '\0';
    struct messages m = {.fd = sv[0], .long_path = path};
    pthread_t rt;
    CHECK_INT(pthread_create(&rt, NULL, messages_main, &m), 0);
    struct logger lg = {LOG_INFO, sv[1]};
    access_log *al = NULL;
    CHECK_INT(access_log_start(&lg, &al), 0);
    if (!al) {
        close(sv[1]);
        pthread_join(rt, NULL);
        close(sv[0]);
        return;
    }
    add_lines(al, 0, 500);
    access_log_add(al, "r500", "GET", path, 200, 7);
    add_lines(al, 501, 500);
    access_log_stop(al);
    CHECK_INT(shutdown(sv[1], SHUT_WR), 0);
    pthread_join(rt, NULL);
    CHECK_INT(m.lines, 1001);
    CHECK_INT(m.bad, 0);
    CHECK_INT(m.long_alone, 1);
    CHECK(m.writes >= 1001 * 100 / PIPE_BUF); /* no write above PIPE_BUF but the long line's */
    CHECK(m.writes < 1001 / 10);             /* batched: not a write a line */
    close(sv[0]);
    close(sv[1]);
}

/* Lines the logger's level drops are neither written nor counted. */
static void test_level_drops_lines(void)
{
    int p[2];
    CHECK_INT(pipe(p), 0);
    struct logger lg = {LOG_WARN, p[1]};
    access_log *al = NULL;
    CHECK_INT(access_log_start(&lg, &al), 0);
    if (!al)
        return;
    add_lines(al, 0, 100);
    CHECK_INT(access_log_dropped(al), 0);
    access_log_stop(al);
    close(p[1]);
    char *text = read_all(p[0]);
    CHECK(text && text[0] == '\0');
    free(text);
    close(p[0]);
}

/* ACCESS_LOG_WAKE_BYTES of lines are written at once, not when the first
 * has waited ACCESS_LOG_DELAY_US: one line, a pause (the thread now waits
 * for that line's deadline), then lines past the mark; of five tries,
 * at least one sees the write within a fifth of the delay after the fill
 * (not a speed: without the wake-up every try waits out the deadline, so
 * only five stalls of the machine in a row could fail it). */
static void test_wake_bytes_written_at_once(void)
{
    int sv[2];
    CHECK_INT(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    struct logger lg = {LOG_INFO, sv[1]};
    access_log *al = NULL;
    CHECK_INT(access_log_start(&lg, &al), 0);
    if (!al) {
        close(sv[0]);
        close(sv[1]);
        return;
    }
    int64_t best = INT64_MAX;
    static char msg[16384];
    for (int attempt = 0; attempt < 5 && best >= ACCESS_LOG_DELAY_US / 5; attempt++) {
        add_lines(al, attempt * 1000, 1);
        struct timespec pause = {0, ACCESS_LOG_DELAY_US / 5 * 1000};
        nanosleep(&pause, NULL);
        int64_t t0 = clock_mono_us();
        add_lines(al, attempt * 1000 + 1, 499); /* 500 lines of 134+ bytes: past the wake */
        struct pollfd pfd = {.fd = sv[0], .events = POLLIN};
        CHECK_INT(poll(&pfd, 1, 5000), 1);
        int64_t took = clock_mono_us() - t0;
        if (took < best)
            best = took;
        /* the rest of the 500 lines: all of them by the delay at the latest */
        int got = 0;
        while (got < 500 && poll(&pfd, 1, 5000) == 1) {
            ssize_t n = recv(sv[0], msg, sizeof msg, 0);
            if (n <= 0)
                break;
            for (ssize_t i = 0; i < n; i++)
                got += msg[i] == '\n';
        }
        CHECK_INT(got, 500);
    }
    CHECK(best < ACCESS_LOG_DELAY_US / 5);
    access_log_stop(al);
    close(sv[0]);
    close(sv[1]);
}

/* Stopping a log that never had a line, and stopping NULL. */
static void test_stop_empty(void)
{
    struct logger lg = {LOG_INFO, -1};
    access_log *al = NULL;
    CHECK_INT(access_log_start(&lg, &al), 0);
    access_log_stop(al);
    access_log_stop(NULL);
    CHECK(1); /* what is checked is that neither hangs nor crashes */
}

TEST_MAIN(TEST(test_stuck_destination), TEST(test_stuck_nonblocking_destination),
          TEST(test_writes_are_whole_lines),
          TEST(test_level_drops_lines), TEST(test_wake_bytes_written_at_once),
          TEST(test_stop_empty))
