/* The server's access log: batched, yet every line arrives whole, soon, and
 * all of them by the time the server has stopped.  The blocking pool: a
 * handler waiting there holds up no other request, and a full queue is
 * answered 503 at once. */
#include "http/server.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "test.h"

static void hello(http_request *req, void *ctx)
{
    (void)ctx;
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"hello\":1}");
    http_respond_buf(req, 200, &b);
}

/* The gate the pool's handlers wait at: a stand-in for a stalled
 * dependency. */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_open;
static int gate_waiting; /* handlers waiting at it */
static int gate_passed;  /* handlers that went through it */

static void gate_set(int open)
{
    pthread_mutex_lock(&gate_mu);
    gate_open = open;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
}

static int gate_waiters(void)
{
    pthread_mutex_lock(&gate_mu);
    int n = gate_waiting;
    pthread_mutex_unlock(&gate_mu);
    return n;
}

/* Runs on the pool: waits for the gate, then answers as hello does. */
static void blocked_hello(http_request *req, void *ctx)
{
    pthread_mutex_lock(&gate_mu);
    gate_waiting++;
    while (!gate_open)
        pthread_cond_wait(&gate_cv, &gate_mu);
    gate_waiting--;
    gate_passed++;
    pthread_mutex_unlock(&gate_mu);
    hello(req, ctx);
}

static void block(http_request *req, void *ctx)
{
    (void)ctx;
    http_request_run_blocking(req, blocked_hello);
}

static const struct http_route routes[] = {
    {HTTP_GET, "/hello", hello, 0, NULL},
    {HTTP_GET, "/hello/{id}", hello, 0, NULL},
    {HTTP_GET, "/block", block, 0, NULL},
};

/* A server whose log goes to an unlinked temporary file. */
struct fixture {
    struct logger lg;
    http_server *srv;
    int sock; /* one keep-alive client connection */
};

/* A server of threads loop threads, and pool_threads, pool_queue and
 * pool_wait_ms for the blocking pool (0: the defaults). */
static int fixture_start_pool(struct fixture *f, unsigned threads, unsigned pool_threads,
                              size_t pool_queue, unsigned pool_wait_ms)
{
    char name[] = "/tmp/test_server_XXXXXX";
    memset(f, 0, sizeof *f);
    f->sock = -1;
    int fd = mkstemp(name);
    if (fd < 0)
        return -1;
    (void)unlink(name);
    if (fcntl(fd, F_SETFL, O_APPEND) != 0) {
        close(fd);
        return -1;
    }
    f->lg = (struct logger){LOG_INFO, fd};
    struct http_server_config cfg = {
        .host = "127.0.0.1",
        .threads = threads,
        .blocking_threads = pool_threads,
        .blocking_queue = pool_queue,
        .blocking_wait_ms = pool_wait_ms,
        .max_body = 4096,
        .client_timeout_s = 30,
        .max_connections = 100,
        .routes = routes,
        .n_routes = sizeof routes / sizeof routes[0],
        .log = &f->lg,
    };
    char err[256];
    if (http_server_start(&cfg, &f->srv, err, sizeof err) != 0) {
        fprintf(stderr, "  server: %s\n", err);
        close(fd);
        return -1;
    }
    f->sock = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(http_server_port(f->srv))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {10, 0}; /* a server that never answers fails a test, not hangs it */
    if (f->sock < 0 || setsockopt(f->sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        connect(f->sock, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr, "  connect: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

static int fixture_start(struct fixture *f)
{
    return fixture_start_pool(f, 2, 0, 0, 0);
}

/* Sends GET path and reads the whole answer (its body is short and its
 * headers end the response: Content-Length is small).  Returns 0. */
static int get(struct fixture *f, const char *path)
{
    char req[8192];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    if (n < 0 || (size_t)n >= sizeof req || write(f->sock, req, (size_t)n) != n)
        return -1;
    char resp[4096];
    size_t got = 0;
    for (;;) {
        ssize_t r = read(f->sock, resp + got, sizeof resp - 1 - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
        resp[got] = '\0';
        const char *end = strstr(resp, "\r\n\r\n");
        if (end && strstr(end, "{\"hello\":1}"))
            return strncmp(resp, "HTTP/1.1 200", 12) == 0 ? 0 : -1;
    }
}

/* The log's whole text (malloc'd) and its line count. */
static char *log_text(const struct fixture *f, size_t *lines)
{
    off_t size = lseek(f->lg.fd, 0, SEEK_END);
    char *text = malloc(size > 0 ? (size_t)size + 1 : 1);
    if (!text)
        return NULL;
    ssize_t r = size > 0 ? pread(f->lg.fd, text, (size_t)size, 0) : 0;
    text[r > 0 ? r : 0] = '\0';
    *lines = 0;
    for (const char *p = text; *p; p++)
        *lines += *p == '\n';
    return text;
}

/* Every line of text is a JSON access line of path prefix want_path. */
static size_t valid_lines(char *text, const char *want_path)
{
    size_t good = 0;
    for (char *line = text, *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        json_t *j = json_loadb(line, (size_t)(nl - line), 0, NULL);
        const char *path = json_string_value(json_object_get(j, "path"));
        good += path && strncmp(path, want_path, strlen(want_path)) == 0 &&
                json_integer_value(json_object_get(j, "status")) == 200;
        json_decref(j);
    }
    return good;
}

static void fixture_stop(struct fixture *f)
{
    if (f->sock >= 0)
        close(f->sock);
    http_server_stop(f->srv, 1000);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A few requests and then silence: their lines are written within a fraction
 * of a second, not held until more traffic comes. */
static void test_lines_written_soon(void)
{
    struct fixture f;
    CHECK_INT(fixture_start(&f), 0);
    for (int i = 0; i < 3; i++)
        CHECK_INT(get(&f, "/hello"), 0);
    int64_t t0 = clock_mono_us();
    size_t lines = 0;
    char *text = NULL;
    while (clock_mono_us() - t0 < 2000000) {
        free(text);
        text = log_text(&f, &lines);
        if (lines >= 3)
            break;
        sleep_ms(20);
    }
    CHECK_INT(lines, 3);
    CHECK(clock_mono_us() - t0 < 1000000);
    CHECK_INT(text ? valid_lines(text, "/hello") : 0, 3);
    free(text);
    fixture_stop(&f);
    close(f.lg.fd);
}

/* Many requests, then an immediate stop: every line is there, whole. */
static void test_stop_writes_every_line(void)
{
    struct fixture f;
    CHECK_INT(fixture_start(&f), 0);
    enum { N = 300 };
    char path[64];
    for (int i = 0; i < N; i++) {
        snprintf(path, sizeof path, "/hello/%d", i);
        CHECK_INT(get(&f, path), 0);
    }
    fixture_stop(&f);
    size_t lines;
    char *text = log_text(&f, &lines);
    CHECK_INT(lines, N);
    CHECK_INT(text ? valid_lines(text, "/hello/") : 0, N);
    /* in the order the requests completed (one connection: sent order) */
    int in_order = 1, last = -1;
    for (char *p = text; p && (p = strstr(p, "\"path\":\"/hello/")) != NULL; p++) {
        int n = atoi(p + strlen("\"path\":\"/hello/"));
        in_order &= n == last + 1;
        last = n;
    }
    CHECK(in_order);
    CHECK_INT(last, N - 1);
    free(text);
    close(f.lg.fd);
}

/* A line longer than a batch (a long path) is written alone and whole,
 * between lines batched before and after it. */
static void test_long_line_whole(void)
{
    struct fixture f;
    CHECK_INT(fixture_start(&f), 0);
    char path[6000];
    memcpy(path, "/hello/", 7);
    memset(path + 7, 'a', sizeof path - 8);
    path[sizeof path - 1] = '\0';
    CHECK_INT(get(&f, "/hello/1"), 0);
    CHECK_INT(get(&f, path), 0);
    CHECK_INT(get(&f, "/hello/2"), 0);
    fixture_stop(&f);
    size_t lines;
    char *text = log_text(&f, &lines);
    CHECK_INT(lines, 3);
    CHECK_INT(text ? valid_lines(text, "/hello/") : 0, 3);
    CHECK(text && strstr(text, path) != NULL);
    free(text);
    close(f.lg.fd);
}

/* A new connection to f's server that sent GET path; -1 on failure.  Reads
 * time out after 10 s, so that a server that never answers fails the test
 * rather than hanging it. */
static int send_get(const struct fixture *f, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(http_server_port(f->srv))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {10, 0};
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || write(fd, req, (size_t)n) != n) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Reads one answer from fd (until its body has ended, or has the end
 * marker) into out; returns its status, or -1. */
static int read_answer(int fd, const char *marker, char *out, size_t cap)
{
    size_t got = 0;
    out[0] = '\0';
    for (;;) {
        ssize_t r = read(fd, out + got, cap - 1 - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
        out[got] = '\0';
        const char *end = strstr(out, "\r\n\r\n");
        if (end && strstr(end, marker))
            return atoi(out + 9);
    }
}

/* The requests waiting for a pool thread, as /metrics shows them. */
static long pool_queued(struct fixture *f)
{
    struct buf b = BUF_INIT;
    http_server_metrics(f->srv, &b);
    const char *at = b.data ? strstr(b.data, "\npaymentd_http_blocking_queued ") : NULL;
    long n = at ? atol(at + strlen("\npaymentd_http_blocking_queued ")) : -1;
    buf_free(&b);
    return n;
}

/* Waits (up to 5 s) until n requests wait for a pool thread. */
static int wait_queued(struct fixture *f, long n)
{
    for (int i = 0; i < 500 && pool_queued(f) != n; i++)
        sleep_ms(10);
    return pool_queued(f) == n;
}

/* With one loop thread, a handler waiting on the pool holds up no other
 * request, and its answer arrives once it is done. */
static void test_pool_does_not_hold_the_loop(void)
{
    struct fixture f;
    gate_set(0);
    CHECK_INT(fixture_start_pool(&f, 1, 2, 4, 0), 0);
    int fd = send_get(&f, "/block");
    CHECK(fd >= 0);
    for (int i = 0; i < 500 && gate_waiters() < 1; i++)
        sleep_ms(10);
    CHECK_INT(gate_waiters(), 1);
    int64_t t0 = clock_mono_us();
    CHECK_INT(get(&f, "/hello"), 0);
    CHECK(clock_mono_us() - t0 < 2000000);
    gate_set(1);
    char resp[4096];
    CHECK_INT(read_answer(fd, "{\"hello\":1}", resp, sizeof resp), 200);
    close(fd);
    fixture_stop(&f);
    close(f.lg.fd);
}

/* A full pool queue: 503 server_busy with Retry-After, at once; the
 * requests running and queued are answered when they can be. */
static void test_pool_full_is_503(void)
{
    struct fixture f;
    gate_set(0);
    CHECK_INT(fixture_start_pool(&f, 1, 1, 1, 0), 0);
    int running = send_get(&f, "/block");
    for (int i = 0; i < 500 && gate_waiters() < 1; i++)
        sleep_ms(10);
    CHECK_INT(gate_waiters(), 1);
    int queued = send_get(&f, "/block");
    CHECK(wait_queued(&f, 1));
    int64_t t0 = clock_mono_us();
    int refused = send_get(&f, "/block");
    char resp[4096];
    CHECK_INT(read_answer(refused, "}", resp, sizeof resp), 503);
    CHECK(clock_mono_us() - t0 < 2000000);
    CHECK(strstr(resp, "\"error_code\":\"server_busy\"") != NULL);
    CHECK(strstr(resp, "Retry-After: 1") != NULL);
    gate_set(1);
    CHECK_INT(read_answer(running, "{\"hello\":1}", resp, sizeof resp), 200);
    CHECK_INT(read_answer(queued, "{\"hello\":1}", resp, sizeof resp), 200);
    close(running);
    close(queued);
    close(refused);
    fixture_stop(&f);
    close(f.lg.fd);
}

/* A request that waited in the pool's queue past blocking_wait_ms is
 * answered 503 server_busy without running: a stalled dependency does not
 * leave requests queued behind it for as long as the queue is. */
static void test_pool_stale_is_503(void)
{
    struct fixture f;
    gate_set(0);
    CHECK_INT(fixture_start_pool(&f, 1, 1, 4, 100), 0);
    int running = send_get(&f, "/block");
    for (int i = 0; i < 500 && gate_waiters() < 1; i++)
        sleep_ms(10);
    CHECK_INT(gate_waiters(), 1);
    int stale = send_get(&f, "/block");
    CHECK(wait_queued(&f, 1));
    sleep_ms(300); /* it waits behind the running one, past 100 ms */
    pthread_mutex_lock(&gate_mu);
    int passed = gate_passed;
    pthread_mutex_unlock(&gate_mu);
    gate_set(1);
    char resp[4096];
    CHECK_INT(read_answer(running, "{\"hello\":1}", resp, sizeof resp), 200);
    CHECK_INT(read_answer(stale, "}", resp, sizeof resp), 503);
    CHECK(strstr(resp, "\"error_code\":\"server_busy\"") != NULL);
    CHECK(strstr(resp, "Retry-After: 1") != NULL);
    pthread_mutex_lock(&gate_mu);
    CHECK_INT(gate_passed, passed + 1); /* the running one only */
    pthread_mutex_unlock(&gate_mu);
    close(running);
    close(stale);
    fixture_stop(&f);
    close(f.lg.fd);
}

TEST_MAIN(TEST(test_lines_written_soon), TEST(test_stop_writes_every_line),
          TEST(test_long_line_whole), TEST(test_pool_does_not_hold_the_loop),
          TEST(test_pool_full_is_503), TEST(test_pool_stale_is_503))
