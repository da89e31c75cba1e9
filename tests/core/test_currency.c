#include "core/currency.h"

#include <string.h>

#include "test.h"

static int minor(const char *code)
{
    return currency_minor_unit(code, strlen(code));
}

static void test_known_codes(void)
{
    static const struct {
        const char *code;
        int minor_unit;
    } cases[] = {
        {"EUR", 2}, {"USD", 2}, {"GBP", 2}, {"CHF", 2}, {"JPY", 0}, {"KRW", 0},
        {"ISK", 0}, {"CLP", 0}, {"VND", 0}, {"XOF", 0}, {"XAF", 0}, {"XPF", 0},
        {"UGX", 0}, {"PYG", 0}, {"UYI", 0}, {"VUV", 0}, {"BIF", 0}, {"DJF", 0},
        {"GNF", 0}, {"KMF", 0}, {"RWF", 0}, {"BHD", 3}, {"KWD", 3}, {"IQD", 3},
        {"JOD", 3}, {"LYD", 3}, {"OMR", 3}, {"TND", 3}, {"CLF", 4}, {"UYW", 4},
        {"VES", 2}, {"VED", 2}, {"SLE", 2}, {"ZWG", 2}, {"MRU", 2}, {"STN", 2},
        {"BYN", 2}, {"CHE", 2}, {"CHW", 2}, {"COU", 2}, {"MXV", 2}, {"USN", 2},
        {"BOV", 2}, {"XCD", 2}, {"XCG", 2}, {"AED", 2}, {"ZMW", 2}, {"ZAR", 2},
        {"AFN", 2}, {"MGA", 2}, {"CVE", 2}, {"IDR", 2}, {"CUP", 2}, {"SSP", 2},
        {"XAU", CURRENCY_NO_MINOR_UNIT}, {"XAG", CURRENCY_NO_MINOR_UNIT},
        {"XPT", CURRENCY_NO_MINOR_UNIT}, {"XPD", CURRENCY_NO_MINOR_UNIT},
        {"XDR", CURRENCY_NO_MINOR_UNIT}, {"XBA", CURRENCY_NO_MINOR_UNIT},
        {"XBB", CURRENCY_NO_MINOR_UNIT}, {"XBC", CURRENCY_NO_MINOR_UNIT},
        {"XBD", CURRENCY_NO_MINOR_UNIT}, {"XSU", CURRENCY_NO_MINOR_UNIT},
        {"XUA", CURRENCY_NO_MINOR_UNIT}, {"XTS", CURRENCY_NO_MINOR_UNIT},
        {"XXX", CURRENCY_NO_MINOR_UNIT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = minor(cases[i].code);
        if (got != cases[i].minor_unit)
            fprintf(stderr, "  code %s\n", cases[i].code);
        CHECK_INT(got, cases[i].minor_unit);
    }
}

/* The first and last entries and their neighbours guard the binary search's
 * edges. */
static void test_table_edges(void)
{
    CHECK_INT(minor("AED"), 2);
    CHECK_INT(minor("ZWG"), 2);
    CHECK_INT(minor("AAA"), CURRENCY_UNKNOWN);
    CHECK_INT(minor("ZZZ"), CURRENCY_UNKNOWN);
    CHECK_INT(minor("ZWH"), CURRENCY_UNKNOWN);
}

static void test_withdrawn_codes(void)
{
    static const char *const withdrawn[] = {
        "HRK", "SLL", "ZWL", "MRO", "VEF", "STD", "LTL", "LVL", "EEK", "CUC",
        "BYR", "ZWD", "ZMK", "GHC", "TRL", "ROL", "DEM", "FRF", "ITL", "ESP",
        "SKK", "CYP", "MTL", "SIT", "VEB", "SDD", "CSD", "AZM", "MZM", "XFO",
        "XFU", "XEU",
    };
    for (size_t i = 0; i < sizeof withdrawn / sizeof withdrawn[0]; i++) {
        int got = minor(withdrawn[i]);
        if (got != CURRENCY_UNKNOWN)
            fprintf(stderr, "  code %s\n", withdrawn[i]);
        CHECK_INT(got, CURRENCY_UNKNOWN);
    }
}

static void test_malformed_codes(void)
{
    static const char *const bad[] = {
        "eur", "Eur", "EUr", "usd", "jpy", "", "E", "EU", "EURO", "EUR ", " EUR",
        "123", "E1R", "XYZ", "QQQ", "EU-",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int got = minor(bad[i]);
        if (got != CURRENCY_UNKNOWN)
            fprintf(stderr, "  code \"%s\"\n", bad[i]);
        CHECK_INT(got, CURRENCY_UNKNOWN);
    }
    CHECK_INT(currency_minor_unit("EURO", 3), 2);            /* exactly len bytes */
    CHECK_INT(currency_minor_unit("EUR", 2), CURRENCY_UNKNOWN);
    CHECK_INT(currency_minor_unit("EU\0", 3), CURRENCY_UNKNOWN);
    CHECK_INT(currency_minor_unit("E\0R", 3), CURRENCY_UNKNOWN);
}

/* Every code from AAA to ZZZ: the listed ones are exactly the expected
 * count, each with a valid minor unit. */
static void test_whole_table(void)
{
    int listed = 0;
    char code[4] = {0};
    for (char a = 'A'; a <= 'Z'; a++)
        for (char b = 'A'; b <= 'Z'; b++)
            for (char c = 'A'; c <= 'Z'; c++) {
                code[0] = a;
                code[1] = b;
                code[2] = c;
                int m = currency_minor_unit(code, 3);
                if (m == CURRENCY_UNKNOWN)
                    continue;
                listed++;
                CHECK((m >= 0 && m <= 4) || m == CURRENCY_NO_MINOR_UNIT);
            }
    CHECK_INT(listed, 179);
}

TEST_MAIN(TEST(test_known_codes), TEST(test_table_edges), TEST(test_withdrawn_codes),
          TEST(test_malformed_codes), TEST(test_whole_table))
