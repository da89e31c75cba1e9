#include "core/clock.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

#include "test.h"

static void test_format_table(void)
{
    static const struct {
        int64_t ms;
        const char *want;
    } cases[] = {
        {0, "1970-01-01T00:00:00.000Z"},
        {1, "1970-01-01T00:00:00.001Z"},
        {-1, "1969-12-31T23:59:59.999Z"},
        {-86400000, "1969-12-31T00:00:00.000Z"},
        {951782400000, "2000-02-29T00:00:00.000Z"},
        {951868799999, "2000-02-29T23:59:59.999Z"},
        {1506774962123, "2017-09-30T12:36:02.123Z"},
        {1709164800000, "2024-02-29T00:00:00.000Z"},
        {1798538400123, "2026-12-29T10:00:00.123Z"},
        {4102444799999, "2099-12-31T23:59:59.999Z"},
        {-2208988800000, "1900-01-01T00:00:00.000Z"},
        {-62167219200000, "0000-01-01T00:00:00.000Z"},
        {253402300799999, "9999-12-31T23:59:59.999Z"},
        /* clamped to years 0000..9999 */
        {-62167219200001, "0000-01-01T00:00:00.000Z"},
        {INT64_MIN, "0000-01-01T00:00:00.000Z"},
        {253402300800000, "9999-12-31T23:59:59.999Z"},
        {INT64_MAX, "9999-12-31T23:59:59.999Z"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[CLOCK_TIMESTAMP_LEN + 1];
        memset(out, 'x', sizeof out);
        clock_format_ms(cases[i].ms, out);
        CHECK_INT(strlen(out), CLOCK_TIMESTAMP_LEN);
        CHECK_STR(out, cases[i].want);
    }
}

/* Cross-checks the arithmetic against the C library over four centuries,
 * one sample about every 37 days at a varying time of day. */
static void test_format_matches_gmtime(void)
{
    const int64_t step = INT64_C(37) * 86400000 + 3723456;
    for (int64_t ms = -2208988800000; ms < INT64_C(10000000000000); ms += step) {
        time_t t = (time_t)(ms / 1000 - (ms % 1000 < 0));
        struct tm tm;
        CHECK(gmtime_r(&t, &tm) != NULL);
        char want[64];
        int ms_part = (int)(((ms % 1000) + 1000) % 1000);
        snprintf(want, sizeof want, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms_part);
        char out[CLOCK_TIMESTAMP_LEN + 1];
        clock_format_ms(ms, out);
        if (strcmp(out, want) != 0) {
            CHECK_STR(out, want);
            break;
        }
    }
}

static void *format_worker(void *arg)
{
    int64_t base = *(const int64_t *)arg;
    long bad = 0;
    for (int i = 0; i < 20000; i++) {
        char out[CLOCK_TIMESTAMP_LEN + 1];
        clock_format_ms(base, out);
        bad += strcmp(out, base == 0 ? "1970-01-01T00:00:00.000Z" : "2017-09-30T12:36:02.123Z") != 0;
    }
    return (void *)bad;
}

static void test_format_thread_safe(void)
{
    static const int64_t bases[2] = {0, 1506774962123};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        CHECK_INT(pthread_create(&th[i], NULL, format_worker, (void *)&bases[i]), 0);
    for (int i = 0; i < 2; i++) {
        void *bad = (void *)1;
        CHECK_INT(pthread_join(th[i], &bad), 0);
        CHECK(bad == NULL);
    }
}

static void test_now_and_mono(void)
{
    int64_t now = clock_now_ms();
    CHECK(now > INT64_C(1700000000000)); /* after 2023-11 */
    CHECK(now < INT64_C(4102444800000)); /* before 2100 */
    int64_t a = clock_mono_us();
    struct timespec ts = {0, 2000000};
    CHECK_INT(nanosleep(&ts, NULL), 0);
    int64_t b = clock_mono_us();
    CHECK(b - a >= 2000);
    CHECK(b - a < 5000000);
}

static void test_parse_date_table(void)
{
    static const struct {
        const char *s;
        int ok, y, m, d;
    } cases[] = {
        {"2017-09-30", 1, 2017, 9, 30},
        {"2000-02-29", 1, 2000, 2, 29},
        {"2024-02-29", 1, 2024, 2, 29},
        {"2024-12-31", 1, 2024, 12, 31},
        {"2024-01-01", 1, 2024, 1, 1},
        {"2024-04-30", 1, 2024, 4, 30},
        {"0000-01-01", 1, 0, 1, 1},
        {"9999-12-31", 1, 9999, 12, 31},
        {"1900-02-29", 0, 0, 0, 0},
        {"2023-02-29", 0, 0, 0, 0},
        {"2100-02-29", 0, 0, 0, 0},
        {"2024-02-30", 0, 0, 0, 0},
        {"2024-04-31", 0, 0, 0, 0},
        {"2024-06-31", 0, 0, 0, 0},
        {"2024-09-31", 0, 0, 0, 0},
        {"2024-11-31", 0, 0, 0, 0},
        {"2024-01-32", 0, 0, 0, 0},
        {"2024-13-01", 0, 0, 0, 0},
        {"2024-00-10", 0, 0, 0, 0},
        {"2024-01-00", 0, 0, 0, 0},
        {"2024-1-01", 0, 0, 0, 0},
        {"2024-01-1", 0, 0, 0, 0},
        {"24-01-01", 0, 0, 0, 0},
        {"20240-01-01", 0, 0, 0, 0},
        {"2024/01/01", 0, 0, 0, 0},
        {"20240101", 0, 0, 0, 0},
        {"2024-01-01T00:00:00Z", 0, 0, 0, 0},
        {"2024-01-0a", 0, 0, 0, 0},
        {"+024-01-01", 0, 0, 0, 0},
        {"2024-+1-01", 0, 0, 0, 0},
        {" 2024-01-0", 0, 0, 0, 0},
        {"", 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int y = -1, m = -1, d = -1;
        int rc = clock_parse_date(cases[i].s, strlen(cases[i].s), &y, &m, &d);
        if ((rc == 0) != cases[i].ok)
            fprintf(stderr, "  case \"%s\"\n", cases[i].s);
        CHECK_INT(rc == 0, cases[i].ok);
        if (cases[i].ok) {
            CHECK_INT(y, cases[i].y);
            CHECK_INT(m, cases[i].m);
            CHECK_INT(d, cases[i].d);
        }
    }
    int y, m, d;
    CHECK_INT(clock_parse_date("2024-01-01xyz", 10, &y, &m, &d), 0); /* exactly len bytes */
    CHECK_INT(clock_parse_date("2024-01-01", 9, &y, &m, &d), -1);
    CHECK_INT(clock_parse_date("2024-01\0-01", 10, &y, &m, &d), -1);
}

static void test_date_to_ms(void)
{
    static const struct {
        int y, m, d;
        int64_t ms;
    } cases[] = {
        {1970, 1, 1, 0},
        {1970, 1, 2, 86400000},
        {1969, 12, 31, -86400000},
        {2000, 2, 29, 951782400000},
        {2000, 3, 1, 951868800000},
        {2017, 9, 30, 1506729600000},
        {2024, 2, 29, 1709164800000},
        {1900, 1, 1, -2208988800000},
        {0, 1, 1, -62167219200000},
        {9999, 12, 31, 253402214400000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK_INT(clock_date_to_ms(cases[i].y, cases[i].m, cases[i].d), cases[i].ms);

    /* Consecutive days are one day apart, across month and year ends. */
    int64_t prev = clock_date_to_ms(1999, 12, 31);
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    for (int m = 1; m <= 12; m++) {
        for (int d = 1; d <= mdays[m - 1]; d++) {
            int64_t cur = clock_date_to_ms(2000, m, d);
            if (cur - prev != 86400000)
                CHECK_INT(cur - prev, 86400000);
            char out[CLOCK_TIMESTAMP_LEN + 1], want[64];
            clock_format_ms(cur, out);
            snprintf(want, sizeof want, "2000-%02d-%02dT00:00:00.000Z", m, d);
            CHECK_STR(out, want);
            prev = cur;
        }
    }
}

static void test_is_datetime_table(void)
{
    static const struct {
        const char *s;
        int ok;
    } cases[] = {
        {"2017-09-30T12:36:02.123+01:00", 1},
        {"2017-09-30T12:36:02Z", 1},
        {"2017-09-30T12:36:02z", 1},
        {"2017-09-30t12:36:02Z", 1},
        {"2017-09-30T12:36:02.1Z", 1},
        {"2017-09-30T12:36:02.123456789Z", 1},
        {"2017-09-30T00:00:00-00:00", 1},
        {"2017-09-30T23:59:59+23:59", 1},
        {"2017-09-30T23:59:59-12:00", 1},
        {"2016-12-31T23:59:60Z", 1},  /* leap second */
        {"2024-02-29T12:00:00Z", 1},
        {"2017-09-30 12:36:02Z", 0},
        {"2017-09-30T12:36:02", 0},   /* no offset */
        {"2017-09-30T12:36:02.123", 0},
        {"2017-09-30T24:00:00Z", 0},
        {"2017-09-30T12:60:00Z", 0},
        {"2017-09-30T12:00:61Z", 0},
        {"2017-09-30T12:36:02+25:00", 0},
        {"2017-09-30T12:36:02+24:00", 0},
        {"2017-09-30T12:36:02+01:60", 0},
        {"2017-09-30T12:36:02+0100", 0},
        {"2017-09-30T12:36:02+01", 0},
        {"2017-09-30T12:36:02+01:00:00", 0},
        {"2017-09-30T12:36:02ZZ", 0},
        {"2017-09-30T12:36:02.Z", 0},
        {"2017-09-30T12:36:02.1234567890Z", 0},
        {"2017-09-30T12:36:02,123Z", 0},
        {"2017-09-30T12:36Z", 0},
        {"2017-09-30T1:36:02Z", 0},
        {"2017-02-30T12:36:02Z", 0},
        {"2023-02-29T12:00:00Z", 0},
        {"2017-09-30", 0},
        {"2017-09-30T", 0},
        {"T12:36:02Z", 0},
        {"", 0},
        {"2017-09-30T12:36:02 Z", 0},
        {"2017-09-30T12:36:02Z ", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = clock_is_datetime(cases[i].s, strlen(cases[i].s));
        if (got != cases[i].ok)
            fprintf(stderr, "  case \"%s\"\n", cases[i].s);
        CHECK_INT(got, cases[i].ok);
    }
    CHECK_INT(clock_is_datetime("2017-09-30T12:36:02Zjunk", 20), 1); /* exactly len bytes */
    CHECK_INT(clock_is_datetime("2017-09-30T12:36:02Z", 19), 0);
    CHECK_INT(clock_is_datetime("2017-09-30T12:36:02\0Z", 21), 0);

    /* Every timestamp the server writes is a date-time it accepts. */
    char out[CLOCK_TIMESTAMP_LEN + 1];
    clock_format_ms(clock_now_ms(), out);
    CHECK_INT(clock_is_datetime(out, strlen(out)), 1);
}

TEST_MAIN(TEST(test_format_table), TEST(test_format_matches_gmtime), TEST(test_format_thread_safe),
          TEST(test_now_and_mono), TEST(test_parse_date_table), TEST(test_date_to_ms),
          TEST(test_is_datetime_table))
