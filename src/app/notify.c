/* notify: sd_notify wrappers (see notify.h).  The only state is whether a
 * failure was already logged, an atomic flag. */
#include "app/notify.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "core/clock.h"

static atomic_int notify_failure_logged; /* 1 once a failed notification was logged */

/* Sends state (newline-separated assignments); logs the first failure. */
static void notify_send(const struct logger *log, const char *state)
{
    int rc = sd_notify(0, state);
    if (rc >= 0) /* 0: no NOTIFY_SOCKET, nothing to tell */
        return;
    if (atomic_exchange(&notify_failure_logged, 1) == 0)
        log_msg(log, LOG_DEBUG, "cannot notify the service manager (%s): %s; not told again",
                state, strerror(-rc));
}

/* Sends head followed by STATUS=status, status cut to fit. */
static void notify_with_status(const struct logger *log, const char *head, const char *status)
{
    assert(head && status);
    char state[512];
    int n = snprintf(state, sizeof state, "%s\nSTATUS=%s", head, status);
    assert(n > 0); /* a truncated status is still sent */
    (void)n;
    notify_send(log, state);
}

void notify_ready(const struct logger *log, const char *status)
{
    notify_with_status(log, "READY=1", status);
}

void notify_reloading(const struct logger *log, const char *status)
{
    /* MONOTONIC_USEC lets a manager tell this reload from an earlier one
     * (Type=notify-reload needs it; Type=notify ignores it). */
    char head[96];
    int n = snprintf(head, sizeof head, "RELOADING=1\nMONOTONIC_USEC=%lld",
                     (long long)clock_mono_us());
    assert(n > 0 && (size_t)n < sizeof head);
    (void)n;
    notify_with_status(log, head, status);
}

void notify_stopping(const struct logger *log, const char *status)
{
    notify_with_status(log, "STOPPING=1", status);
}

void notify_watchdog(const struct logger *log)
{
    notify_send(log, "WATCHDOG=1");
}

void notify_extend_timeout(const struct logger *log, uint64_t usec)
{
    char line[64];
    snprintf(line, sizeof line, "EXTEND_TIMEOUT_USEC=%llu", (unsigned long long)usec);
    notify_send(log, line);
}

int64_t notify_watchdog_interval_ms(void)
{
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
        return 0;
    int64_t half = (int64_t)(usec / 2000);
    return half > 0 ? half : 1;
}
