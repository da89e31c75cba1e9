/* buf: a growable byte buffer, the one way the server assembles response
 * bodies and queries.  A buffer owns its memory; buf_free() releases it.
 * An append that runs out of memory returns -1 and marks the buffer failed;
 * every later append is then refused, so callers may append freely and
 * check once through buf_failed().  The contents of a failed buffer are
 * meaningless (an escape may have stopped halfway). */
#ifndef CORE_BUF_H
#define CORE_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data;  /* NUL-terminated after every append; NULL while empty */
    size_t len;  /* bytes in use, not counting the terminating NUL */
    size_t cap;  /* bytes allocated */
    int failed;  /* set once any append ran out of memory */
};

#define BUF_INIT {NULL, 0, 0, 0}

int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *data, size_t len);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as the body of a JSON string (without the quotes), escaping
 * quotes, backslashes and control characters; each byte that is not part of
 * valid UTF-8 becomes \ufffd, so the result is always valid JSON. */
int buf_json_escape(struct buf *b, const char *s, size_t len);
/* Empties the buffer but keeps its memory for reuse. */
void buf_reset(struct buf *b);
/* Hands the bytes to the caller (free() them) and empties the buffer. */
char *buf_steal(struct buf *b, size_t *len);
void buf_free(struct buf *b);
static inline int buf_failed(const struct buf *b) { return b->failed; }

#endif
