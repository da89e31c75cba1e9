/* schedule: the deliverer's configuration defaults and its retry schedule
 * (deliver.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "webhook/deliver.h"

/* The default schedule, roughly what the large senders use: at once, then
 * backing off to a day between attempts, about three days in all. */
static const char default_schedule[] = "0s,5s,5m,30m,2h,5h,10h,14h,20h,24h";

void webhook_deliver_config_init(struct webhook_deliver_config *c)
{
    memset(c, 0, sizeof *c);
    c->timeout_ms = 15000;
    c->disable_after_ms = 5 * 86400 * 1000LL;
    c->poll_ms = 500;
    int rc = webhook_schedule_parse(default_schedule, c);
    (void)rc;
    /* The default is well formed. */
    if (rc != 0)
        abort();
}

/* One delay "N[ms|s|m|h|d]" of len bytes into *ms: 0, or -1.  At most
 * 30 days, so that sums stay far from overflow. */
static int schedule_delay(const char *p, size_t len, int64_t *ms)
{
    size_t n = 0;
    int64_t v = 0;
    while (n < len && p[n] >= '0' && p[n] <= '9' && n < 10)
        v = v * 10 + (p[n++] - '0');
    if (n == 0)
        return -1;
    const char *u = p + n;
    size_t ulen = len - n;
    int64_t unit;
    if (ulen == 2 && memcmp(u, "ms", 2) == 0)
        unit = 1;
    else if (ulen == 1 && *u == 's')
        unit = 1000;
    else if (ulen == 1 && *u == 'm')
        unit = 60 * 1000LL;
    else if (ulen == 1 && *u == 'h')
        unit = 3600 * 1000LL;
    else if (ulen == 1 && *u == 'd')
        unit = 86400 * 1000LL;
    else
        return -1;
    if (v > 30 * 86400 * 1000LL / unit)
        return -1;
    *ms = v * unit;
    return 0;
}

int webhook_schedule_parse(const char *text, struct webhook_deliver_config *c)
{
    int64_t delays[WEBHOOK_SCHEDULE_MAX];
    size_t n = 0;
    const char *p = text;
    if (!p || !*p)
        return -1;
    for (;;) {
        size_t len = strcspn(p, ",");
        if (n == WEBHOOK_SCHEDULE_MAX || schedule_delay(p, len, &delays[n]) != 0)
            return -1;
        n++;
        if (!p[len])
            break;
        p += len + 1;
    }
    memcpy(c->schedule_ms, delays, n * sizeof delays[0]);
    c->n_schedule = n;
    return 0;
}
