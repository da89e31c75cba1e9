/* The server's access log: batched, yet every line arrives whole, soon, and
 * all of them by the time the server has stopped. */
#include "http/server.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
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

static const struct http_route routes[] = {
    {HTTP_GET, "/hello", hello, 0, NULL},
    {HTTP_GET, "/hello/{id}", hello, 0, NULL},
};

/* A server whose log goes to an unlinked temporary file. */
struct fixture {
    struct logger lg;
    http_server *srv;
    int sock; /* one keep-alive client connection */
};

static int fixture_start(struct fixture *f)
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
        .threads = 2,
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
    if (f->sock < 0 || connect(f->sock, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr, "  connect: %s\n", strerror(errno));
        return -1;
    }
    return 0;
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

TEST_MAIN(TEST(test_lines_written_soon), TEST(test_stop_writes_every_line),
          TEST(test_long_line_whole))
