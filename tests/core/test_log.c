#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "test.h"

/* A logger writing into a pipe whose read end does not block. */
struct capture {
    int rd, wr;
    struct logger lg;
    char text[65536]; /* everything read so far, NUL-terminated */
    size_t len;
};

static int capture_open(struct capture *c, enum log_level level)
{
    int fds[2];
    memset(c, 0, sizeof *c);
    if (pipe(fds) != 0)
        return -1;
    int fl = fcntl(fds[0], F_GETFL);
    if (fl < 0 || fcntl(fds[0], F_SETFL, fl | O_NONBLOCK) != 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    c->rd = fds[0];
    c->wr = fds[1];
    c->lg.level = level;
    c->lg.fd = c->wr;
    return 0;
}

/* Drains the pipe into c->text and returns it. */
static const char *capture_read(struct capture *c)
{
    for (;;) {
        ssize_t n = read(c->rd, c->text + c->len, sizeof c->text - 1 - c->len);
        if (n > 0) {
            c->len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        break; /* EAGAIN: drained (or the text buffer is full) */
    }
    c->text[c->len] = '\0';
    return c->text;
}

static void capture_close(struct capture *c)
{
    close(c->rd);
    close(c->wr);
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Parses the single line in s; NULL (and a failed check) when s is not
 * exactly one JSON object followed by a newline. */
static json_t *parse_one_line(const char *s)
{
    size_t len = strlen(s);
    CHECK(len > 0 && s[len - 1] == '\n');
    CHECK_INT(count_lines(s), 1);
    json_error_t err;
    json_t *j = json_loads(s, JSON_REJECT_DUPLICATES, &err);
    if (!j)
        fprintf(stderr, "  not JSON (%s): %s\n", err.text, s);
    CHECK(j != NULL && json_is_object(j));
    return j;
}

/* The line's time lies between the instant given and now; timestamps of
 * one fixed width order as text the way they order in time. */
static void check_time_since(json_t *j, const char *before)
{
    const char *t = json_string_value(json_object_get(j, "time"));
    CHECK(t != NULL);
    if (!t)
        return;
    CHECK_INT(strlen(t), CLOCK_TIMESTAMP_LEN);
    CHECK_INT(clock_is_datetime(t, strlen(t)), 1);
    char now[CLOCK_TIMESTAMP_LEN + 1];
    clock_format_ms(clock_now_ms(), now);
    CHECK(strcmp(before, t) <= 0);
    CHECK(strcmp(t, now) <= 0);
}

/* Formats the access line and writes it, as the access log's thread does. */
static void request_line(const struct logger *lg, const char *request_id, const char *method,
                         const char *path, int status, int64_t duration_us)
{
    struct buf b = BUF_INIT;
    int rc = log_request_format(lg, &b, request_id, method, path, status, duration_us);
    CHECK(rc >= 0);
    if (rc == 1)
        CHECK_INT(log_write(lg, b.data, b.len), (long long)b.len);
    buf_free(&b);
}

static void test_level_parse(void)
{
    static const struct {
        const char *s;
        int ok;
        enum log_level level;
    } cases[] = {
        {"debug", 1, LOG_DEBUG}, {"info", 1, LOG_INFO}, {"warn", 1, LOG_WARN},
        {"error", 1, LOG_ERROR}, {"", 0, LOG_INFO},     {"INFO", 0, LOG_INFO},
        {"warning", 0, LOG_INFO}, {"info ", 0, LOG_INFO}, {"err", 0, LOG_INFO},
        {"fatal", 0, LOG_INFO},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum log_level level = (enum log_level)42;
        int rc = log_level_parse(cases[i].s, &level);
        CHECK_INT(rc == 0, cases[i].ok);
        if (cases[i].ok)
            CHECK_INT(level, cases[i].level);
        else
            CHECK_INT(level, 42);
    }
    enum log_level level;
    CHECK_INT(log_level_parse(NULL, &level), -1);
}

static void test_msg_fields(void)
{
    struct capture c;
    CHECK_INT(capture_open(&c, LOG_INFO), 0);
    char before[CLOCK_TIMESTAMP_LEN + 1];
    clock_format_ms(clock_now_ms(), before);
    log_msg(&c.lg, LOG_WARN, "store %s answered in %d ms", "sqlite", 42);
    json_t *j = parse_one_line(capture_read(&c));
    if (j) {
        CHECK_INT(json_object_size(j), 3);
        CHECK_STR(json_string_value(json_object_get(j, "level")), "warn");
        CHECK_STR(json_string_value(json_object_get(j, "msg")), "store sqlite answered in 42 ms");
        check_time_since(j, before);
        json_decref(j);
    }
    capture_close(&c);
}

static void test_msg_long(void)
{
    /* Longer than any stack buffer the logger might start with. */
    static char big[5000];
    memset(big, 'a', sizeof big - 1);
    big[100] = '"';
    big[4000] = '\n';
    struct capture c;
    CHECK_INT(capture_open(&c, LOG_DEBUG), 0);
    log_msg(&c.lg, LOG_ERROR, "%s|end", big);
    json_t *j = parse_one_line(capture_read(&c));
    if (j) {
        const char *msg = json_string_value(json_object_get(j, "msg"));
        CHECK(msg != NULL);
        CHECK_INT(msg ? strlen(msg) : 0, sizeof big - 1 + 4);
        CHECK(msg && strncmp(msg, big, sizeof big - 1) == 0);
        CHECK(msg && strcmp(msg + sizeof big - 1, "|end") == 0);
        CHECK_STR(json_string_value(json_object_get(j, "level")), "error");
        json_decref(j);
    }
    capture_close(&c);
}

static void test_request_fields(void)
{
    struct capture c;
    CHECK_INT(capture_open(&c, LOG_INFO), 0);
    char before[CLOCK_TIMESTAMP_LEN + 1];
    clock_format_ms(clock_now_ms(), before);
    request_line(&c.lg, "0b5e7c3e-1c1f-4a52-9c3e-7d4b9a1f0e21", "POST", "/v1/payments", 201,
                INT64_C(12345678901));
    json_t *j = parse_one_line(capture_read(&c));
    if (j) {
        CHECK_INT(json_object_size(j), 7);
        CHECK_STR(json_string_value(json_object_get(j, "level")), "info");
        CHECK_STR(json_string_value(json_object_get(j, "request_id")),
                  "0b5e7c3e-1c1f-4a52-9c3e-7d4b9a1f0e21");
        CHECK_STR(json_string_value(json_object_get(j, "method")), "POST");
        CHECK_STR(json_string_value(json_object_get(j, "path")), "/v1/payments");
        CHECK(json_is_integer(json_object_get(j, "status")));
        CHECK_INT(json_integer_value(json_object_get(j, "status")), 201);
        CHECK(json_is_integer(json_object_get(j, "duration_us")));
        CHECK_INT(json_integer_value(json_object_get(j, "duration_us")), INT64_C(12345678901));
        check_time_since(j, before);
        json_decref(j);
    }
    capture_close(&c);
}

static void test_request_escaping(void)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"/v1/payments/\"x\"", "/v1/payments/\"x\""},
        {"/a\\b", "/a\\b"},
        {"/a\nb\r\tc", "/a\nb\r\tc"},
        {"/\x01\x1f\x7f", "/\x01\x1f\x7f"},
        {"/caf\xc3\xa9", "/caf\xc3\xa9"},                  /* valid UTF-8 kept */
        {"/\xe2\x82\xac/\xf0\x9f\x92\xb6", "/\xe2\x82\xac/\xf0\x9f\x92\xb6"},
        {"/\xff", "/\xef\xbf\xbd"},                        /* invalid byte: U+FFFD */
        {"/\xc3", "/\xef\xbf\xbd"},                        /* truncated sequence */
        {"/\xc0\xaf", "/\xef\xbf\xbd\xef\xbf\xbd"},        /* overlong "/" */
        {"/\xed\xa0\x80", "/\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* surrogate */
        {"/\xf4\x90\x80\x80x", "/\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdx"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct capture c;
        CHECK_INT(capture_open(&c, LOG_DEBUG), 0);
        request_line(&c.lg, "id\"1", "G\\ET", cases[i].in, 400, 7);
        json_t *j = parse_one_line(capture_read(&c));
        if (j) {
            CHECK_STR(json_string_value(json_object_get(j, "path")), cases[i].want);
            CHECK_STR(json_string_value(json_object_get(j, "request_id")), "id\"1");
            CHECK_STR(json_string_value(json_object_get(j, "method")), "G\\ET");
            json_decref(j);
        }
        capture_close(&c);
    }
}

static void test_request_null_strings(void)
{
    struct capture c;
    CHECK_INT(capture_open(&c, LOG_INFO), 0);
    request_line(&c.lg, NULL, "GET", NULL, 404, 0);
    json_t *j = parse_one_line(capture_read(&c));
    if (j) {
        CHECK(json_is_null(json_object_get(j, "request_id")));
        CHECK(json_is_null(json_object_get(j, "path")));
        CHECK_STR(json_string_value(json_object_get(j, "method")), "GET");
        json_decref(j);
    }
    capture_close(&c);
}

static void test_level_filtering(void)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int min = LOG_DEBUG; min <= LOG_ERROR; min++) {
        struct capture c;
        CHECK_INT(capture_open(&c, (enum log_level)min), 0);
        for (int lv = LOG_DEBUG; lv <= LOG_ERROR; lv++)
            log_msg(&c.lg, (enum log_level)lv, "m%d", lv);
        request_line(&c.lg, "r", "GET", "/healthz", 200, 1);
        const char *text = capture_read(&c);
        size_t want = (size_t)(LOG_ERROR - min + 1) + (min <= LOG_INFO);
        CHECK_INT(count_lines(text), want);

        /* The lines that remain are the right ones, in order. */
        const char *line = text;
        for (int lv = min; lv <= LOG_ERROR && *line; lv++) {
            json_error_t err;
            json_t *j = json_loadb(line, (size_t)(strchr(line, '\n') - line), 0, &err);
            CHECK(j != NULL);
            if (j) {
                char msg[16];
                snprintf(msg, sizeof msg, "m%d", lv);
                CHECK_STR(json_string_value(json_object_get(j, "level")), names[lv]);
                CHECK_STR(json_string_value(json_object_get(j, "msg")), msg);
                json_decref(j);
            }
            line = strchr(line, '\n') + 1;
        }
        CHECK_INT(strstr(text, "/healthz") != NULL, min <= LOG_INFO);
        capture_close(&c);
    }
}

/* log_request_format appends exactly the line log_request writes (the
 * time aside), and nothing at a level that drops it. */
static void test_request_format(void)
{
    struct capture c;
    CHECK_INT(capture_open(&c, LOG_INFO), 0);
    request_line(&c.lg, "rid-1", "GET", "/v1/payments/\"q\"", 304, -5);
    const char *written = capture_read(&c);
    size_t written_len = strlen(written);

    struct buf b = BUF_INIT;
    buf_puts(&b, "before\n");
    CHECK_INT(log_request_format(&c.lg, &b, "rid-1", "GET", "/v1/payments/\"q\"", 304, -5), 1);
    CHECK(b.len > 7 && b.data[b.len - 1] == '\n');
    CHECK(strncmp(b.data, "before\n", 7) == 0);
    json_t *j = parse_one_line(b.data + 7);
    json_t *w = parse_one_line(written);
    if (j && w) {
        json_object_del(j, "time");
        json_object_del(w, "time");
        CHECK(json_equal(j, w));
        CHECK_INT(json_integer_value(json_object_get(j, "duration_us")), -5);
        CHECK_INT(json_integer_value(json_object_get(j, "status")), 304);
    }
    json_decref(j);
    json_decref(w);
    /* log_write sends the batch as it is, and says it did */
    CHECK_INT(log_write(&c.lg, b.data, b.len), b.len);
    CHECK_STR(capture_read(&c) + written_len, b.data);
    struct logger closed = {LOG_INFO, -1};
    CHECK_INT(log_write(&closed, b.data, b.len), 0); /* a write error: nothing written */
    buf_free(&b);
    capture_close(&c);

    struct logger quiet = {LOG_WARN, -1};
    struct buf q = BUF_INIT;
    CHECK_INT(log_request_format(&quiet, &q, "r", "GET", "/", 200, 1), 0);
    CHECK_INT(q.len, 0);
    buf_free(&q);
}

struct writer_arg {
    const struct logger *lg;
    int id;
};

static void *writer_main(void *p)
{
    const struct writer_arg *a = p;
    char path[300];
    memset(path, 'p', sizeof path);
    path[0] = '/';
    path[sizeof path - 1] = '\0';
    for (int i = 0; i < 200; i++) {
        if (i % 2)
            log_msg(a->lg, LOG_INFO, "thread %d line %d %s", a->id, i, path);
        else
            request_line(a->lg, "req", "GET", path, 200 + a->id, i);
    }
    return NULL;
}

/* Lines from concurrent threads reach a shared file whole and unmixed. */
static void test_concurrent_lines_do_not_interleave(void)
{
    char name[] = "/tmp/test_log_XXXXXX";
    int fd = mkstemp(name);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    CHECK_INT(unlink(name), 0);
    CHECK_INT(fcntl(fd, F_SETFL, O_APPEND), 0);
    struct logger lg = {LOG_DEBUG, fd};

    enum { THREADS = 4 };
    pthread_t th[THREADS];
    struct writer_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i].lg = &lg;
        args[i].id = i;
        CHECK_INT(pthread_create(&th[i], NULL, writer_main, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        CHECK_INT(pthread_join(th[i], NULL), 0);

    off_t size = lseek(fd, 0, SEEK_END);
    CHECK(size > 0);
    char *text = malloc((size_t)size + 1);
    CHECK(text != NULL);
    if (text && size > 0) {
        CHECK_INT(pread(fd, text, (size_t)size, 0), size);
        text[size] = '\0';
        CHECK_INT(count_lines(text), THREADS * 200);
        size_t good = 0;
        for (char *line = text, *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
            json_error_t err;
            json_t *j = json_loadb(line, (size_t)(nl - line), 0, &err);
            good += j != NULL;
            json_decref(j);
        }
        CHECK_INT(good, THREADS * 200);
    }
    free(text);
    CHECK_INT(close(fd), 0);
}

TEST_MAIN(TEST(test_level_parse), TEST(test_msg_fields), TEST(test_msg_long),
          TEST(test_request_fields), TEST(test_request_escaping), TEST(test_request_null_strings),
          TEST(test_level_filtering), TEST(test_concurrent_lines_do_not_interleave),
          TEST(test_request_format))
