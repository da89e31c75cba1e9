/* attempt: the decisions about one delivery attempt (deliver_internal.h):
 * its outcome under the retry schedule, the jitter of a retry, a
 * Retry-After header's time, and the attempt's JSON object.  Pure
 * functions, apart from the time and randomness their callers pass in:
 * any thread. */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "webhook/deliver_internal.h"

#define RETRY_AFTER_SECONDS_MAX 999999999LL /* delta-seconds beyond this count as this */

void webhook_attempt_decide(const struct webhook_deliver_config *c, int attempt,
                            const struct webhook_attempt_result *r, int64_t now_ms,
                            uint64_t rnd, struct webhook_decision *out)
{
    assert(attempt >= 1 && c->n_schedule >= 1 && c->n_schedule <= WEBHOOK_SCHEDULE_MAX);
    memset(out, 0, sizeof *out);
    if (r->status >= 200 && r->status <= 299) {
        out->status = PAYMENT_DELIVERY_SUCCEEDED;
        out->succeeded = 1;
        return;
    }
    if (r->status == 410) {
        out->status = PAYMENT_DELIVERY_FAILED;
        out->gone = 1;
        return;
    }
    if (r->final || (size_t)attempt >= c->n_schedule) {
        out->status = PAYMENT_DELIVERY_FAILED;
        return;
    }
    int64_t next = now_ms + webhook_jitter(c->schedule_ms[attempt], rnd);
    if ((r->status == 429 || r->status == 503) && r->retry_after_ms > 0) {
        int64_t latest = now_ms + WEBHOOK_RETRY_AFTER_MAX_MS;
        int64_t asked = r->retry_after_ms < latest ? r->retry_after_ms : latest;
        if (asked > next)
            next = asked;
    }
    out->status = PAYMENT_DELIVERY_PENDING;
    out->next_ms = next;
}

int64_t webhook_jitter(int64_t delay_ms, uint64_t rnd)
{
    assert(delay_ms >= 0);
    /* Schedules stop at 30 days a delay (schedule.c): no overflow. */
    int64_t span = delay_ms * WEBHOOK_JITTER_PERCENT / 100;
    if (span == 0)
        return delay_ms;
    int64_t off = (int64_t)(rnd % (uint64_t)(2 * span + 1)) - span;
    int64_t out = delay_ms + off;
    assert(out >= 0);
    return out;
}

/* ---- Retry-After ---------------------------------------------------------- */

/* n digits at p into *v: 0, or -1 when one is not a digit. */
static int digits(const char *p, size_t n, int *v)
{
    int x = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        x = x * 10 + (p[i] - '0');
    }
    *v = x;
    return 0;
}

/* An IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT", RFC 9110 5.6.7) of
 * exactly 29 bytes: 0 and the time in *ms, or -1. */
static int imf_fixdate(const char *s, size_t len, int64_t *ms)
{
    static const char days[] = "MonTueWedThuFriSatSun";
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    if (len != 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' ||
        s[16] != ' ' || s[19] != ':' || s[22] != ':' || memcmp(s + 25, " GMT", 4) != 0)
        return -1;
    int day_ok = 0;
    for (size_t i = 0; i + 3 <= sizeof days - 1; i += 3)
        day_ok |= memcmp(s, days + i, 3) == 0;
    int month = 0;
    for (size_t i = 0; i + 3 <= sizeof months - 1; i += 3)
        if (memcmp(s + 8, months + i, 3) == 0)
            month = (int)(i / 3) + 1;
    int d, y, hh, mm, ss;
    if (!day_ok || !month || digits(s + 5, 2, &d) || digits(s + 12, 4, &y) ||
        digits(s + 17, 2, &hh) || digits(s + 20, 2, &mm) || digits(s + 23, 2, &ss) ||
        hh > 23 || mm > 59 || ss > 60)
        return -1;
    char date[CLOCK_DATE_LEN + 1];
    int n = snprintf(date, sizeof date, "%04d-%02d-%02d", y, month, d);
    int py, pm, pd;
    if (n != CLOCK_DATE_LEN || clock_parse_date(date, CLOCK_DATE_LEN, &py, &pm, &pd) != 0)
        return -1;
    *ms = clock_date_to_ms(py, pm, pd) + ((int64_t)hh * 3600 + mm * 60 + ss) * 1000;
    return 0;
}

int64_t webhook_retry_after_parse(const char *v, size_t len, int64_t now_ms)
{
    while (len > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        len--;
    }
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t' || v[len - 1] == '\r' ||
                       v[len - 1] == '\n'))
        len--;
    if (len == 0)
        return 0;
    if (v[0] >= '0' && v[0] <= '9') {
        int64_t secs = 0;
        for (size_t i = 0; i < len; i++) {
            if (v[i] < '0' || v[i] > '9')
                return 0;
            if (secs < RETRY_AFTER_SECONDS_MAX)
                secs = secs * 10 + (v[i] - '0');
        }
        if (secs > RETRY_AFTER_SECONDS_MAX)
            secs = RETRY_AFTER_SECONDS_MAX;
        return now_ms + secs * 1000;
    }
    int64_t at;
    if (imf_fixdate(v, len, &at) != 0)
        return 0;
    return at > now_ms ? at : now_ms;
}

/* ---- the attempt's JSON ----------------------------------------------------- */

int webhook_attempt_json(struct buf *b, int attempt, int64_t at_ms,
                         const struct webhook_attempt_result *r, int64_t latency_ms,
                         const struct webhook_decision *dec)
{
    char at[CLOCK_TIMESTAMP_LEN + 1];
    clock_format_ms(at_ms, at);
    buf_printf(b, "{\"attempt\":%d,\"at\":\"%s\",\"status_code\":", attempt, at);
    if (r->status > 0)
        buf_printf(b, "%ld", r->status);
    else
        buf_puts(b, "null");
    buf_puts(b, ",\"error\":");
    if (r->error) {
        buf_puts(b, "\"");
        buf_json_escape(b, r->error, strlen(r->error));
        buf_puts(b, "\"");
    } else {
        buf_puts(b, "null");
    }
    buf_printf(b, ",\"latency_ms\":%" PRId64 ",\"next_attempt_at\":", latency_ms);
    if (dec->status == PAYMENT_DELIVERY_PENDING) {
        char next[CLOCK_TIMESTAMP_LEN + 1];
        clock_format_ms(dec->next_ms, next);
        buf_printf(b, "\"%s\"", next);
    } else {
        buf_puts(b, "null");
    }
    buf_puts(b, "}");
    return buf_failed(b) ? -1 : 0;
}
