#include "core/clock.h"

#include <stdlib.h>
#include <time.h>

#define CLOCK_MS_PER_DAY INT64_C(86400000)

/* Reads one clock.  Both clocks exist on every supported system and the
 * arguments are valid, so a failure means a broken process: stop rather
 * than hand out a wrong time. */
static struct timespec clock_read(clockid_t id)
{
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0)
        abort();
    return ts;
}

int64_t clock_now_ms(void)
{
    struct timespec ts = clock_read(CLOCK_REALTIME);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t clock_mono_us(void)
{
    struct timespec ts = clock_read(CLOCK_MONOTONIC);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil); pure arithmetic, no locale or time zone involved. */
static int64_t clock_days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;                                 /* [0, 399] */
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1; /* [0, 365] */
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;         /* [0, 146096] */
    return era * 146097 + doe - 719468;
}

/* The inverse of clock_days_from_civil(). */
static void clock_civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* Writes v as exactly width decimal digits (v is in range by construction). */
static void clock_put_digits(char *out, int64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        out[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

void clock_format_ms(int64_t unix_ms, char out[CLOCK_TIMESTAMP_LEN + 1])
{
    const int64_t min_ms = clock_days_from_civil(0, 1, 1) * CLOCK_MS_PER_DAY;
    const int64_t max_ms = clock_days_from_civil(10000, 1, 1) * CLOCK_MS_PER_DAY - 1;
    if (unix_ms < min_ms)
        unix_ms = min_ms;
    if (unix_ms > max_ms)
        unix_ms = max_ms;

    /* Floor division, so instants before 1970 fall on the right day. */
    int64_t days = unix_ms / CLOCK_MS_PER_DAY;
    int64_t rem = unix_ms % CLOCK_MS_PER_DAY;
    if (rem < 0) {
        rem += CLOCK_MS_PER_DAY;
        days--;
    }
    int64_t y;
    int m, d;
    clock_civil_from_days(days, &y, &m, &d);

    clock_put_digits(out, y, 4);
    out[4] = '-';
    clock_put_digits(out + 5, m, 2);
    out[7] = '-';
    clock_put_digits(out + 8, d, 2);
    out[10] = 'T';
    clock_put_digits(out + 11, rem / 3600000, 2);
    out[13] = ':';
    clock_put_digits(out + 14, rem / 60000 % 60, 2);
    out[16] = ':';
    clock_put_digits(out + 17, rem / 1000 % 60, 2);
    out[19] = '.';
    clock_put_digits(out + 20, rem % 1000, 3);
    out[23] = 'Z';
    out[24] = '\0';
}

/* Reads exactly n ASCII digits at s into *v: 0, or -1 on a non-digit. */
static int clock_read_digits(const char *s, int n, int *v)
{
    int acc = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        acc = acc * 10 + (s[i] - '0');
    }
    *v = acc;
    return 0;
}

static int clock_is_leap_year(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int clock_days_in_month(int y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && clock_is_leap_year(y) ? 29 : days[m - 1];
}

int clock_parse_date(const char *s, size_t len, int *y, int *m, int *d)
{
    int yy, mm, dd;
    if (!s || len != CLOCK_DATE_LEN || s[4] != '-' || s[7] != '-')
        return -1;
    if (clock_read_digits(s, 4, &yy) != 0 || clock_read_digits(s + 5, 2, &mm) != 0 ||
        clock_read_digits(s + 8, 2, &dd) != 0)
        return -1;
    if (mm < 1 || mm > 12 || dd < 1 || dd > clock_days_in_month(yy, mm))
        return -1;
    *y = yy;
    *m = mm;
    *d = dd;
    return 0;
}

int64_t clock_date_to_ms(int y, int m, int d)
{
    return clock_days_from_civil(y, m, d) * CLOCK_MS_PER_DAY;
}

/* Whether s holds "HH:MM" with HH <= max_hour and MM <= 59. */
static int clock_is_hh_mm(const char *s, int max_hour)
{
    int h, mi;
    return clock_read_digits(s, 2, &h) == 0 && s[2] == ':' &&
           clock_read_digits(s + 3, 2, &mi) == 0 && h <= max_hour && mi <= 59;
}

int clock_is_datetime(const char *s, size_t len)
{
    /* Shortest form: "YYYY-MM-DDTHH:MM:SSZ", 20 bytes. */
    int y, m, d, sec;
    if (!s || len < 20)
        return 0;
    if (clock_parse_date(s, CLOCK_DATE_LEN, &y, &m, &d) != 0)
        return 0;
    if (s[10] != 'T' && s[10] != 't')
        return 0;
    /* Second 60 is a leap second, which RFC 3339 allows. */
    if (!clock_is_hh_mm(s + 11, 23) || s[16] != ':' || clock_read_digits(s + 17, 2, &sec) != 0 ||
        sec > 60)
        return 0;

    size_t i = 19;
    if (s[i] == '.') {
        size_t start = ++i;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start || i - start > 9)
            return 0;
    }
    if (i == len)
        return 0;
    if (s[i] == 'Z' || s[i] == 'z')
        return i + 1 == len;
    if (s[i] != '+' && s[i] != '-')
        return 0;
    return len - i == 6 && clock_is_hh_mm(s + i + 1, 23);
}
