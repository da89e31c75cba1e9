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

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 when the
 * bytes there are not one: overlong forms, surrogates and code points past
 * U+10FFFF are invalid. */
static size_t log_utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

/* Appends s as a quoted JSON string, or null for NULL.  Bytes that are not
 * valid UTF-8 (a request path may hold anything once percent-decoded) become
 * U+FFFD, so that every line stays valid JSON. */
static void log_append_string(struct buf *b, const char *s)
{
    if (!s) {
        buf_puts(b, "null");
        return;
    }
    const unsigned char *u = (const unsigned char *)s;
    size_t len = strlen(s), start = 0, i = 0;
    buf_puts(b, "\"");
    while (i < len) {
        size_t n = log_utf8_seq_len(u + i, len - i);
        if (n) {
            i += n;
            continue;
        }
        buf_json_escape(b, s + start, i - start);
        buf_puts(b, "\\ufffd");
        start = ++i;
    }
    buf_json_escape(b, s + start, len - start);
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
