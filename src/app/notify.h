/* notify: the service manager's notifications (systemd's sd_notify):
 * readiness, reloads, stopping, a status line and watchdog pings.
 *
 * Every function does nothing when the process was not started with
 * NOTIFY_SOCKET (libsystemd checks).  A notification that cannot be sent is
 * logged once, at debug, and never stops the process.  Called from main's
 * thread; safe from any. */
#ifndef APP_NOTIFY_H
#define APP_NOTIFY_H

#include <stdint.h>

#include "core/log.h"

/* READY=1 with STATUS=status: the server listens, the worker runs, or a
 * reload is done. */
void notify_ready(const struct logger *log, const char *status);

/* RELOADING=1 (with MONOTONIC_USEC) and STATUS=status: a SIGHUP reload
 * starts; notify_ready ends it. */
void notify_reloading(const struct logger *log, const char *status);

/* STOPPING=1 and STATUS=status: SIGTERM or SIGINT arrived. */
void notify_stopping(const struct logger *log, const char *status);

/* WATCHDOG=1: the process is alive. */
void notify_watchdog(const struct logger *log);

/* EXTEND_TIMEOUT_USEC=usec: the start (or stop) goes on for at least usec
 * more, past the unit's TimeoutStartSec (the worker waiting for its broker). */
void notify_extend_timeout(const struct logger *log, uint64_t usec);

/* How often to send WATCHDOG=1 in milliseconds, half of the manager's
 * WATCHDOG_USEC (at least 1), or 0 when the watchdog is not enabled for
 * this process. */
int64_t notify_watchdog_interval_ms(void);

#endif
