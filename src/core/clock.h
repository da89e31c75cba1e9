/* clock: wall-clock and monotonic time, and the date and date-time text
 * forms the API speaks (ISO 8601 / RFC 3339, always UTC on output). */
#ifndef CORE_CLOCK_H
#define CORE_CLOCK_H

#include <stddef.h>
#include <stdint.h>

#define CLOCK_TIMESTAMP_LEN 24 /* "2026-11-26T10:00:00.123Z" */
#define CLOCK_DATE_LEN 10      /* "2026-11-26" */

/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t clock_now_ms(void);

/* Microseconds from an arbitrary origin (CLOCK_MONOTONIC), for durations. */
int64_t clock_mono_us(void);

/* Formats unix_ms as "YYYY-MM-DDTHH:MM:SS.mmmZ" plus a NUL.  Years outside
 * 0000..9999 are clamped to that range. */
void clock_format_ms(int64_t unix_ms, char out[CLOCK_TIMESTAMP_LEN + 1]);

/* Strict "YYYY-MM-DD" of exactly len bytes naming a real calendar date
 * (leap years included).  Returns 0 and fills y/m/d, or -1. */
int clock_parse_date(const char *s, size_t len, int *y, int *m, int *d);

/* Milliseconds since the epoch of 00:00:00.000 UTC of that date. */
int64_t clock_date_to_ms(int y, int m, int d);

/* Whether s (len bytes) is an RFC 3339 date-time: a real date, "T" (or
 * "t"), HH:MM:SS with an optional fraction of 1..9 digits, then "Z"/"z" or
 * a +HH:MM / -HH:MM offset.  Returns 1 or 0. */
int clock_is_datetime(const char *s, size_t len);

#endif
