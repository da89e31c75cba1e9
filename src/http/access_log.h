/* access_log: the server's access log, written by a thread of its own.
 *
 * Request threads add a line under a short lock and never write; the
 * log's thread writes the lines out in the order they were added, in writes
 * of whole lines of at most PIPE_BUF bytes (atomic on a pipe, so never
 * interleaved with other writers' lines; a single longer line is written
 * alone), once ACCESS_LOG_WAKE_BYTES of them wait or ACCESS_LOG_DELAY_US
 * after the oldest was added.  (Woken per PIPE_BUF of lines, the thread
 * cost a GET about 10% more CPU: a futex wake and two context switches per
 * 27 lines.)
 *
 * A destination that stops taking lines (a pipe nobody reads, a stalled
 * disk) holds up that thread alone: once ACCESS_LOG_MAX_PENDING bytes wait
 * (besides the batch being written, as large at most), further lines are
 * dropped and counted, and requests are served as before.  A non-blocking
 * destination that is full is waited for by the thread; lines a write
 * error loses are counted too.  A crash loses the lines still waiting (a
 * fraction of a second of them), nothing else: payments are durable before
 * they are answered. */
#ifndef HTTP_ACCESS_LOG_H
#define HTTP_ACCESS_LOG_H

#include <stdint.h>

#include "core/log.h"

#define ACCESS_LOG_DELAY_US 100000
#define ACCESS_LOG_WAKE_BYTES (64u * 1024)
#define ACCESS_LOG_MAX_PENDING (1u << 20)

typedef struct access_log access_log;

/* Starts the log's thread; lines go to lg->fd (lg borrowed: it must
 * outlive the log).  Returns 0, or -1 (*out untouched) when memory or the
 * thread is not to be had. */
int access_log_start(const struct logger *lg, access_log **out);

/* Adds the line of a completed request (log_request_format's), unless the
 * logger's level drops it (not counted as dropped).  Never waits for the
 * destination.  Any thread may add, until access_log_stop is called. */
void access_log_add(access_log *al, const char *request_id, const char *method, const char *path,
                    int status, int64_t duration_us);

/* Lines dropped so far: too many waiting for the destination, lost to a
 * write error, or out of memory. */
uint64_t access_log_dropped(const access_log *al);

/* Writes every line added, stops the thread and frees the log; waits as
 * long as the destination takes to accept the last lines.  No add may run
 * during or after it.  NULL is a no-op. */
void access_log_stop(access_log *al);

#endif
