#include "core/decimal.h"

#include <string.h>

#include "test.h"

/* Parses a literal that the test knows to be valid. */
static struct decimal dec(const char *s)
{
    struct decimal d = {NULL, 0, NULL, 0};
    int rc = decimal_parse(s, strlen(s), &d);
    if (rc != 0)
        fprintf(stderr, "  test literal \"%s\" did not parse\n", s);
    CHECK_INT(rc, 0);
    return d;
}

static void test_parse_table(void)
{
    static const struct {
        const char *s;
        int ok;
        size_t int_len, frac_len;
    } cases[] = {
        {"0", 1, 1, 0},
        {"1", 1, 1, 0},
        {"10", 1, 2, 0},
        {"0.5", 1, 1, 1},
        {"0.50", 1, 1, 2},
        {"0.00", 1, 1, 2},
        {"1.5", 1, 1, 1},
        {"123.45", 1, 3, 2},
        {"250000.00", 1, 6, 2},
        {"12345678901234567890", 1, 20, 0},   /* 20 characters */
        {"1234567890.123456789", 1, 10, 9},   /* 20 characters */
        {"0.000000000000000001", 1, 1, 18},   /* 20 characters */
        {"123456789012345678901", 0, 0, 0},   /* 21 characters */
        {"1234567890.1234567890", 0, 0, 0},   /* 21 characters */
        {"", 0, 0, 0},
        {".", 0, 0, 0},
        {".5", 0, 0, 0},
        {"10.", 0, 0, 0},
        {"01.5", 0, 0, 0},
        {"00", 0, 0, 0},
        {"00.5", 0, 0, 0},
        {"007", 0, 0, 0},
        {"-1", 0, 0, 0},
        {"+1", 0, 0, 0},
        {"1e5", 0, 0, 0},
        {"1E5", 0, 0, 0},
        {"1.5e2", 0, 0, 0},
        {" 1", 0, 0, 0},
        {"1 ", 0, 0, 0},
        {"1,5", 0, 0, 0},
        {"1.2.3", 0, 0, 0},
        {"1..2", 0, 0, 0},
        {"1.-2", 0, 0, 0},
        {"0x10", 0, 0, 0},
        {"NaN", 0, 0, 0},
        {"abc", 0, 0, 0},
        {"١٢", 0, 0, 0},  /* non-ASCII digits */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct decimal d;
        int rc = decimal_parse(cases[i].s, strlen(cases[i].s), &d);
        if ((rc == 0) != cases[i].ok)
            fprintf(stderr, "  case \"%s\"\n", cases[i].s);
        CHECK_INT(rc == 0, cases[i].ok);
        if (rc == 0 && cases[i].ok) {
            CHECK(d.digits == cases[i].s);
            CHECK_INT(d.int_len, cases[i].int_len);
            CHECK_INT(d.frac_len, cases[i].frac_len);
            if (cases[i].frac_len)
                CHECK(d.frac == cases[i].s + cases[i].int_len + 1);
            else
                CHECK(d.frac == NULL);
        }
    }
}

static void test_parse_exact_len(void)
{
    struct decimal d;
    CHECK_INT(decimal_parse("12.5xyz", 4, &d), 0);
    CHECK_INT(d.int_len, 2);
    CHECK_INT(d.frac_len, 1);
    CHECK_INT(decimal_parse("12.5", 3, &d), -1);      /* "12." */
    CHECK_INT(decimal_parse("1\0" "2", 3, &d), -1);   /* embedded NUL */
    CHECK_INT(decimal_parse("1.5", 0, &d), -1);
}

static void test_is_zero(void)
{
    static const struct {
        const char *s;
        int zero;
    } cases[] = {
        {"0", 1}, {"0.0", 1}, {"0.00", 1}, {"0.000000000000000000", 1},
        {"1", 0}, {"0.01", 0}, {"0.000000000000000001", 0}, {"10", 0}, {"100.00", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct decimal d = dec(cases[i].s);
        CHECK_INT(decimal_is_zero(&d), cases[i].zero);
    }
}

static int sign(int v)
{
    return (v > 0) - (v < 0);
}

/* Pairs of values and the sign of a compared with b; each pair is also
 * checked the other way round. */
static const struct {
    const char *a, *b;
    int cmp;
} order_cases[] = {
    {"1.50", "1.5", 0},
    {"1", "1.0", 0},
    {"1", "1.000000000000000000", 0},
    {"0", "0.00", 0},
    {"250000.00", "250000", 0},
    {"9.99", "10", -1},
    {"0.1", "0.09", 1},
    {"0.09", "0.1", -1},
    {"99.999", "100", -1},
    {"0", "0.000000000000000001", -1},
    {"1.49", "1.5", -1},
    {"1.5", "1.51", -1},
    {"1.05", "1.5", -1},
    {"2", "10", -1},
    {"19", "2", 1},
    {"15000.00", "15000.01", -1},
    {"12345678901234567889", "12345678901234567890", -1},
    {"1234567890123456789", "12345678901234567890", -1},
    {"999999999.9999999999", "1000000000", -1},
    {"0.9", "1", -1},
};

static void test_cmp(void)
{
    for (size_t i = 0; i < sizeof order_cases / sizeof order_cases[0]; i++) {
        struct decimal a = dec(order_cases[i].a), b = dec(order_cases[i].b);
        int want = order_cases[i].cmp;
        if (sign(decimal_cmp(&a, &b)) != want || sign(decimal_cmp(&b, &a)) != -want)
            fprintf(stderr, "  case %s vs %s\n", order_cases[i].a, order_cases[i].b);
        CHECK_INT(sign(decimal_cmp(&a, &b)), want);
        CHECK_INT(sign(decimal_cmp(&b, &a)), -want);
        CHECK_INT(decimal_cmp(&a, &a), 0);
    }
}

static void test_cmp_hand_built_leading_zeros(void)
{
    /* The comparison does not rely on the parser's no-leading-zero rule. */
    struct decimal a = {"007", 3, NULL, 0};
    struct decimal b = dec("7");
    struct decimal c = dec("10");
    CHECK_INT(decimal_cmp(&a, &b), 0);
    CHECK(decimal_cmp(&a, &c) < 0);
}

static void test_sort_key_format(void)
{
    static const struct {
        const char *s;
        const char *key;
    } cases[] = {
        {"0", "00000000000000000000" "00000000000000000000"},
        {"1.5", "00000000000000000001" "50000000000000000000"},
        {"123.45", "00000000000000000123" "45000000000000000000"},
        {"12345678901234567890", "12345678901234567890" "00000000000000000000"},
        {"0.000000000000000001", "00000000000000000000" "00000000000000000100"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct decimal d = dec(cases[i].s);
        char key[DECIMAL_KEY_LEN + 1];
        memset(key, 'x', sizeof key);
        decimal_sort_key(&d, key);
        CHECK_INT(strlen(key), DECIMAL_KEY_LEN);
        CHECK_STR(key, cases[i].key);
    }
}

static void test_sort_key_order_is_numeric(void)
{
    for (size_t i = 0; i < sizeof order_cases / sizeof order_cases[0]; i++) {
        struct decimal a = dec(order_cases[i].a), b = dec(order_cases[i].b);
        char ka[DECIMAL_KEY_LEN + 1], kb[DECIMAL_KEY_LEN + 1];
        decimal_sort_key(&a, ka);
        decimal_sort_key(&b, kb);
        int want = order_cases[i].cmp;
        if (sign(strcmp(ka, kb)) != want)
            fprintf(stderr, "  case %s vs %s: %s vs %s\n", order_cases[i].a, order_cases[i].b, ka,
                    kb);
        CHECK_INT(sign(strcmp(ka, kb)), want);
        CHECK_INT(sign(memcmp(ka, kb, DECIMAL_KEY_LEN)), sign(decimal_cmp(&a, &b)));
    }
}

TEST_MAIN(TEST(test_parse_table), TEST(test_parse_exact_len), TEST(test_is_zero), TEST(test_cmp),
          TEST(test_cmp_hand_built_leading_zeros), TEST(test_sort_key_format),
          TEST(test_sort_key_order_is_numeric))
