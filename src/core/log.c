#include "core/log.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"

static const char *const log_level_names[] = {"debug", "info", "warn", "error"};

int log_level_parse(const char *s, enum log_level *out)
{
    if (!s)
        return -1;
    for (int i = LOG_DEBUG; i <= LOG_ERROR; i++) {
        if (strcmp(s, log_level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

int log_wants(const struct logger *lg, enum log_level level)
{
    return level >= lg->level && level >= LOG_DEBUG && level <= LOG_ERROR;
}

/* Appends s as a quoted JSON string, or null for NULL.  Bytes that are not
 * valid UTF-8 (a request path may hold anything once percent-decoded) become
 * U+FFFD (buf_json_escape), so that every line stays valid JSON. */
static void log_append_string(struct buf *b, const char *s)
{
    if (!s) {
        buf_puts(b, "null");
        return;
    }
    buf_puts(b, "\"");
    buf_json_escape(b, s, strlen(s));
    buf_puts(b, "\"");
}

/* Starts a line with its time and level fields, leaving the object open. */
static void log_begin(struct buf *b, enum log_level level)
{
    char ts[CLOCK_TIMESTAMP_LEN + 1];
    clock_format_ms(clock_now_ms(), ts);
    buf_puts(b, "{\"time\":\"");
    buf_append(b, ts, CLOCK_TIMESTAMP_LEN);
    buf_puts(b, "\",\"level\":\"");
    buf_puts(b, log_level_names[level]);
    buf_puts(b, "\"");
}

/* Appends v in decimal: the access log's numbers, without a printf. */
static void log_append_int(struct buf *b, int64_t v)
{
    char digits[24];
    size_t n = sizeof digits;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        digits[--n] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        digits[--n] = '-';
    buf_append(b, digits + n, sizeof digits - n);
}

size_t log_write(const struct logger *lg, const char *data, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(lg->fd, data + off, len - off);
        if (n >= 0) {
            /* Only a full pipe or disk writes short; finish the line rather
             * than leave half of it. */
            off += (size_t)n;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            /* A non-blocking stderr (inherited so from some parents) that
             * is full: wait for room rather than lose lines. */
            struct pollfd pfd = {.fd = lg->fd, .events = POLLOUT};
            if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
                break;
        } else if (errno != EINTR) {
            break;
        }
    }
    return off;
}

/* Closes the object and writes the whole line in one write(2), so lines
 * from concurrent threads never interleave.  A line that could not be built
 * is dropped: the logger has nowhere to report its own failure. */
static void log_finish(const struct logger *lg, struct buf *b)
{
    buf_puts(b, "}\n");
    if (!buf_failed(b))
        (void)log_write(lg, b->data, b->len); /* nowhere to report a short write */
    buf_free(b);
}

void log_msg(const struct logger *lg, enum log_level level, const char *fmt, ...)
{
    if (!log_wants(lg, level))
        return;

    char small[512];
    char *msg = small;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof small) {
        msg = malloc((size_t)n + 1);
        if (!msg)
            return;
        va_start(ap, fmt);
        int m = vsnprintf(msg, (size_t)n + 1, fmt, ap);
        va_end(ap);
        if (m != n) {
            free(msg);
            return;
        }
    }

    struct buf b = BUF_INIT;
    log_begin(&b, level);
    buf_puts(&b, ",\"msg\":");
    log_append_string(&b, msg);
    if (msg != small)
        free(msg);
    log_finish(lg, &b);
}

int log_request_format(const struct logger *lg, struct buf *b, const char *request_id,
                       const char *method, const char *path, int status, int64_t duration_us)
{
    if (!log_wants(lg, LOG_INFO))
        return 0;
    log_begin(b, LOG_INFO);
    buf_puts(b, ",\"request_id\":");
    log_append_string(b, request_id);
    buf_puts(b, ",\"method\":");
    log_append_string(b, method);
    buf_puts(b, ",\"path\":");
    log_append_string(b, path);
    buf_puts(b, ",\"status\":");
    log_append_int(b, status);
    buf_puts(b, ",\"duration_us\":");
    log_append_int(b, duration_us);
    buf_puts(b, "}\n");
    return buf_failed(b) ? -1 : 1;
}


int log_file_open(const char *path, char *errbuf, size_t errlen)
{
    int fd;
    do
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        snprintf(errbuf, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (fd > 2)
        return fd;
    /* Standard input, output or error was closed when the process started:
     * the file must not take their place (a reopen replaces the logger's fd,
     * never a standard one), so it moves above them. */
    int high = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int dup_errno = errno;
    close(fd);
    if (high < 0)
        snprintf(errbuf, errlen, "%s: %s", path, strerror(dup_errno));
    return high;
}

int log_reopen(const struct logger *lg, const char *path, char *errbuf, size_t errlen)
{
    assert(lg->fd > 2); /* a file of its own, never stderr */
    int fd = log_file_open(path, errbuf, errlen);
    if (fd < 0)
        return -1;
    int rc;
    do
        rc = dup3(fd, lg->fd, O_CLOEXEC);
    while (rc < 0 && (errno == EINTR || errno == EBUSY));
    int dup_errno = rc < 0 ? errno : 0;
    /* On Linux close releases the fd even when it reports an error, and
     * after dup3 lg->fd holds the file open: a failed close loses nothing. */
    if (close(fd) != 0 && rc >= 0)
        return 0;
    if (rc < 0) {
        snprintf(errbuf, errlen, "%s: %s", path, strerror(dup_errno));
        return -1;
    }
    return 0;
}
