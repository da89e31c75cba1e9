#include "core/log.h"

#include <errno.h>
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

static int log_enabled(const struct logger *lg, enum log_level level)
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
    buf_printf(b, "{\"time\":\"%s\",\"level\":\"%s\"", ts, log_level_names[level]);
}

/* Closes the object and writes the whole line in one write(2), so lines
 * from concurrent threads never interleave.  A line that could not be built
 * is dropped: the logger has nowhere to report its own failure. */
static void log_finish(const struct logger *lg, struct buf *b)
{
    buf_puts(b, "}\n");
    if (buf_failed(b)) {
        buf_free(b);
        return;
    }
    size_t off = 0;
    while (off < b->len) {
        ssize_t n = write(lg->fd, b->data + off, b->len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        /* Only a full pipe or disk writes short; finish the line rather
         * than leave half of it. */
        off += (size_t)n;
    }
    buf_free(b);
}

void log_msg(const struct logger *lg, enum log_level level, const char *fmt, ...)
{
    if (!log_enabled(lg, level))
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

void log_request(const struct logger *lg, const char *request_id, const char *method,
                 const char *path, int status, int64_t duration_us)
{
    if (!log_enabled(lg, LOG_INFO))
        return;
    struct buf b = BUF_INIT;
    log_begin(&b, LOG_INFO);
    buf_puts(&b, ",\"request_id\":");
    log_append_string(&b, request_id);
    buf_puts(&b, ",\"method\":");
    log_append_string(&b, method);
    buf_puts(&b, ",\"path\":");
    log_append_string(&b, path);
    buf_printf(&b, ",\"status\":%d,\"duration_us\":%lld", status, (long long)duration_us);
    log_finish(lg, &b);
}
