/* log: one JSON object per line on stderr, or appended to a file
 * (--log-file), written with a single write(2) so that lines from
 * concurrent threads never interleave.
 *
 * A logger is plain configuration, built once in main.c and read-only
 * afterwards; every function here is safe to call from any thread.  A log
 * file is reopened (after logrotate moved it) by log_reopen, which puts the
 * new file under the same fd number: a thread writing meanwhile writes its
 * whole line to the old file or the new one, never half to each. */
#ifndef CORE_LOG_H
#define CORE_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

struct logger {
    enum log_level level; /* lines below this level are dropped */
    int fd;               /* where lines go, normally 2 */
};

/* Parses "debug", "info", "warn" or "error".  Returns 0, or -1. */
int log_level_parse(const char *s, enum log_level *out);

/* Whether lg writes lines of this level. */
int log_wants(const struct logger *lg, enum log_level level);

/* {"time":"...","level":"info","msg":"..."}: a formatted message. */
void log_msg(const struct logger *lg, enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The access log line, at level info, newline included:
 * {"time","level","request_id","method","path","status","duration_us"},
 * appended to b for a caller that batches lines (log_write).  Returns 1 when
 * appended, 0 when the level drops it (b unchanged), -1 when b ran out of
 * memory. */
int log_request_format(const struct logger *lg, struct buf *b, const char *request_id,
                       const char *method, const char *path, int status, int64_t duration_us);

/* Writes len bytes, whole lines, in one write(2) (finishing a short one), so
 * that a batch up to PIPE_BUF bytes never interleaves with other lines.  A
 * full non-blocking destination is waited for.  Returns the bytes written:
 * len, or less after a write error. */
size_t log_write(const struct logger *lg, const char *data, size_t len);

/* Opens path for appending log lines (O_APPEND, close-on-exec, created
 * 0640 when missing).  Returns the fd, or -1 with "PATH: reason" in errbuf. */
int log_file_open(const char *path, char *errbuf, size_t errlen);

/* Reopens path, the file lg writes to, in place: the new file is opened,
 * then duplicated over lg->fd (dup3, atomically), so that every thread keeps
 * writing through lg->fd.  Returns 0, or -1 with "PATH: reason" in errbuf
 * and lg still writing where it did. */
int log_reopen(const struct logger *lg, const char *path, char *errbuf, size_t errlen);

#endif
