#include "core/uuid.h"

#include <string.h>

#include "test.h"

static void test_parse_table(void)
{
    static const struct {
        const char *s;
        size_t len; /* 0: strlen(s) */
        int ok;
    } cases[] = {
        {"123e4567-e89b-12d3-a456-426614174000", 0, 1},
        {"123E4567-E89B-12D3-A456-426614174000", 0, 1},
        {"00000000-0000-0000-0000-000000000000", 0, 1},
        {"ffffffff-ffff-ffff-ffff-ffffffffffff", 0, 1},
        {"AbCdEf01-2345-6789-aBcD-eF0123456789", 0, 1},
        {"", 0, 0},
        {"123e4567-e89b-12d3-a456-42661417400", 0, 0},    /* 35 chars */
        {"123e4567-e89b-12d3-a456-4266141740000", 0, 0},  /* 37 chars */
        {"{123e4567-e89b-12d3-a456-426614174000}", 0, 0}, /* braces */
        {"{23e4567-e89b-12d3-a456-42661417400}", 0, 0},   /* braces, 36 chars */
        {"urn:uuid:123e4567-e89b-12d3-a456-426614174000", 0, 0},
        {"123e4567e89b12d3a456426614174000", 0, 0},       /* 32-digit form */
        {"123e4567-e89b-12d3-a4564-26614174000", 0, 0},   /* hyphen moved */
        {"123e4567e-89b-12d3-a456-426614174000", 0, 0},   /* hyphen moved */
        {"123e4567-e89b-12d3-a456_426614174000", 0, 0},   /* not a hyphen */
        {"123e4567-e89b-12d3-a456-4266141740-0", 0, 0},   /* extra hyphen */
        {"123e4567 e89b 12d3 a456 426614174000", 0, 0},
        {"123g4567-e89b-12d3-a456-426614174000", 0, 0},   /* non-hex */
        {"123e4567-e89b-12d3-a456-42661417400z", 0, 0},   /* non-hex */
        {"+23e4567-e89b-12d3-a456-426614174000", 0, 0},
        {"123e4567-e89b-12d3-a456-426614174000\0", 37, 0}, /* trailing NUL */
        {"123e4567-e89b-12d3-a456-4266\0" "4174000", 36, 0}, /* embedded NUL */
        {"123e4567-e89b-12d3-a456-426614174000xyz", 36, 1}, /* exactly len bytes */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].s);
        struct uuid u;
        int rc = uuid_parse(cases[i].s, len, &u);
        if ((rc == 0) != cases[i].ok)
            fprintf(stderr, "  case %zu: \"%s\"\n", i, cases[i].s);
        CHECK_INT(rc == 0, cases[i].ok);
        char out[UUID_STR_LEN + 1];
        CHECK_INT(uuid_canonical(cases[i].s, len, out) == 0, cases[i].ok);
    }
}

static void test_parse_bytes(void)
{
    struct uuid u;
    CHECK_INT(uuid_parse("00112233-4455-6677-8899-AABBCCDDEEFF", UUID_STR_LEN, &u), 0);
    static const uint8_t want[16] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                     0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
    CHECK(memcmp(u.bytes, want, 16) == 0);
}

static void test_round_trip_lower_case(void)
{
    static const char *const in[] = {
        "123E4567-E89B-12D3-A456-426614174000",
        "AbCdEf01-2345-6789-aBcD-eF0123456789",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
    };
    static const char *const want[] = {
        "123e4567-e89b-12d3-a456-426614174000",
        "abcdef01-2345-6789-abcd-ef0123456789",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
    };
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        char out[UUID_STR_LEN + 1];
        memset(out, 'x', sizeof out);
        CHECK_INT(uuid_canonical(in[i], strlen(in[i]), out), 0);
        CHECK_STR(out, want[i]);

        struct uuid u;
        CHECK_INT(uuid_parse(in[i], strlen(in[i]), &u), 0);
        uuid_format(&u, out);
        CHECK_INT(strlen(out), UUID_STR_LEN);
        CHECK_STR(out, want[i]);
    }
}

static void test_v7_layout(void)
{
    const int64_t ms = INT64_C(0x017F22E279B0); /* 2022-02-22T19:22:22Z, RFC 9562's example */
    struct uuid u;
    CHECK_INT(uuid_v7_generate(ms, &u), 0);
    static const uint8_t ts[6] = {0x01, 0x7f, 0x22, 0xe2, 0x79, 0xb0};
    CHECK(memcmp(u.bytes, ts, 6) == 0);
    CHECK_INT(u.bytes[6] >> 4, 7);       /* version */
    CHECK_INT(u.bytes[8] >> 6, 2);       /* variant 10 */

    char s[UUID_STR_LEN + 1];
    uuid_format(&u, s);
    CHECK(strncmp(s, "017f22e2-79b0-7", 15) == 0);
    CHECK(strchr("89ab", s[19]) != NULL);
    struct uuid back;
    CHECK_INT(uuid_parse(s, UUID_STR_LEN, &back), 0);
    CHECK(memcmp(back.bytes, u.bytes, 16) == 0);
}

static void test_v7_version_and_variant_always_set(void)
{
    /* The random bits cover the version and variant positions; over many
     * draws any failure to mask them would show. */
    for (int i = 0; i < 200; i++) {
        struct uuid u;
        CHECK_INT(uuid_v7_generate(i, &u), 0);
        CHECK_INT(u.bytes[6] >> 4, 7);
        CHECK_INT(u.bytes[8] >> 6, 2);
        CHECK_INT(u.bytes[5], i);
        CHECK_INT(u.bytes[0] | u.bytes[1] | u.bytes[2] | u.bytes[3] | u.bytes[4], 0);
    }
}

static void test_v7_generations_differ(void)
{
    struct uuid a, b;
    CHECK_INT(uuid_v7_generate(1700000000000, &a), 0);
    CHECK_INT(uuid_v7_generate(1700000000000, &b), 0);
    CHECK(memcmp(a.bytes, b.bytes, 6) == 0);
    CHECK(memcmp(a.bytes + 6, b.bytes + 6, 10) != 0);
}

TEST_MAIN(TEST(test_parse_table), TEST(test_parse_bytes), TEST(test_round_trip_lower_case),
          TEST(test_v7_layout), TEST(test_v7_version_and_variant_always_set),
          TEST(test_v7_generations_differ))
