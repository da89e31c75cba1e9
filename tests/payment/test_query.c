#include "payment/query.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

#define MSG_LEN 256

/* One parameter of a query under test. */
struct kv {
    const char *key;
    const char *value;
};

/* Adds n parameters to a fresh query and finishes it.  Returns 0, or -1
 * with the first message in msg.  The caller clears q either way. */
static int parse_kvs(struct payment_query *q, const struct kv *kvs, size_t n, char *msg)
{
    payment_query_init(q);
    msg[0] = '\0';
    for (size_t i = 0; i < n; i++)
        if (payment_query_add(q, kvs[i].key, kvs[i].value, msg, MSG_LEN) != 0)
            return -1;
    return payment_query_finish(q, msg, MSG_LEN);
}

/* The link of q in its own mode, as the handler builds "self"; caller frees. */
static char *self_link(const struct payment_query *q)
{
    struct buf b = BUF_INIT;
    if (payment_query_link(q, q->mode, q->page_number, q->after_seq, &b) != 0) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b, NULL);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Percent-decodes s in place, as the HTTP layer does before the query sees it. */
static void percent_decode(char *s)
{
    char *o = s;
    for (; *s; s++) {
        if (*s == '%' && hexval(s[1]) >= 0 && hexval(s[2]) >= 0) {
            *o++ = (char)(hexval(s[1]) * 16 + hexval(s[2]));
            s += 2;
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
}

/* Parses a link's query string ("?k=v&...") back into a fresh query, as a
 * client following the link would make the server do. */
static int parse_link(struct payment_query *q, const char *link, char *msg)
{
    payment_query_init(q);
    msg[0] = '\0';
    if (link[0] != '?')
        return -1;
    char *copy = strdup(link + 1);
    if (!copy)
        return -1;
    int rc = 0;
    char *save = NULL;
    for (char *pair = strtok_r(copy, "&", &save); pair && rc == 0;
         pair = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(pair, '=');
        if (!eq) {
            rc = -1;
            break;
        }
        *eq = '\0';
        percent_decode(pair);
        percent_decode(eq + 1);
        rc = payment_query_add(q, pair, eq + 1, msg, MSG_LEN);
    }
    free(copy);
    if (rc == 0)
        rc = payment_query_finish(q, msg, MSG_LEN);
    return rc;
}

static void test_init_defaults(void)
{
    struct payment_query q;
    char msg[MSG_LEN];
    payment_query_init(&q);
    CHECK_INT(q.page_size, PAYMENT_PAGE_SIZE_DEFAULT);
    CHECK_INT(q.mode, PAYMENT_PAGE_FIRST);
    CHECK_INT(q.organisation_id.count, 0);
    CHECK_STR(q.processing_date_from, "");
    CHECK_STR(q.amount_to, "");
    CHECK(q.created_from_ms == INT64_MIN);
    CHECK(q.created_to_ms == INT64_MAX);
    CHECK_INT(payment_query_finish(&q, msg, sizeof msg), 0);
    CHECK_INT(q.mode, PAYMENT_PAGE_FIRST);
    char *link = self_link(&q);
    CHECK_STR(link, "?page[size]=100");
    free(link);
    payment_query_clear(&q);
}

/* Every parameter with a valid value: the self link shows what was stored. */
static void test_valid_values(void)
{
    static const struct {
        const char *key, *value, *link;
    } cases[] = {
        {"filter[organisation_id]", "743D5B63-8E6F-432E-A8FA-C5D8D2EE5FCB",
         "?filter[organisation_id]=743d5b63-8e6f-432e-a8fa-c5d8d2ee5fcb&page[size]=100"},
        {"filter[organisation_id]",
         "743d5b63-8e6f-432e-a8fa-c5d8d2ee5fcb,00000000-0000-0000-0000-00000000000A",
         "?filter[organisation_id]=743d5b63-8e6f-432e-a8fa-c5d8d2ee5fcb,"
         "00000000-0000-0000-0000-00000000000a&page[size]=100"},
        {"filter[currency]", "GBP", "?filter[currency]=GBP&page[size]=100"},
        {"filter[currency]", "GBP,EUR,JPY,BHD,XAU",
         "?filter[currency]=GBP,EUR,JPY,BHD,XAU&page[size]=100"},
        {"filter[payment_scheme]", "FPS", "?filter[payment_scheme]=FPS&page[size]=100"},
        {"filter[payment_scheme]", "BACS,SEPAINSTANT,SEPACT,SWIFT",
         "?filter[payment_scheme]=BACS,SEPAINSTANT,SEPACT,SWIFT&page[size]=100"},
        {"filter[payment_type]", "Credit", "?filter[payment_type]=Credit&page[size]=100"},
        {"filter[payment_type]", "Credit,Debit",
         "?filter[payment_type]=Credit,Debit&page[size]=100"},
        {"filter[reference]", "Payment for Em's piano lessons",
         "?filter[reference]=Payment%20for%20Em%27s%20piano%20lessons&page[size]=100"},
        {"filter[reference]", "a&b=c?d#e%f+g/h[i]",
         "?filter[reference]=a%26b%3Dc%3Fd%23e%25f%2Bg%2Fh%5Bi%5D&page[size]=100"},
        {"filter[end_to_end_reference]", "Wil piano Jan",
         "?filter[end_to_end_reference]=Wil%20piano%20Jan&page[size]=100"},
        {"filter[end_to_end_reference]", "caf\xc3\xa9",
         "?filter[end_to_end_reference]=caf%C3%A9&page[size]=100"},
        {"filter[processing_date_from]", "2026-11-26",
         "?filter[processing_date_from]=2026-11-26&page[size]=100"},
        {"filter[processing_date_to]", "2024-02-29",
         "?filter[processing_date_to]=2024-02-29&page[size]=100"},
        {"filter[amount][from]", "0", "?filter[amount][from]=0&page[size]=100"},
        {"filter[amount][from]", "12.50", "?filter[amount][from]=12.5&page[size]=100"},
        {"filter[amount][to]", "100.00", "?filter[amount][to]=100&page[size]=100"},
        {"filter[amount][to]", "12345678901234567890",
         "?filter[amount][to]=12345678901234567890&page[size]=100"},
        {"filter[amount][to]", "0.000000000000000001",
         "?filter[amount][to]=0.000000000000000001&page[size]=100"},
        {"filter[created_date_from]", "2026-11-26",
         "?filter[created_date_from]=2026-11-26&page[size]=100"},
        {"filter[created_date_to]", "2024-02-29",
         "?filter[created_date_to]=2024-02-29&page[size]=100"},
        {"filter[created_date_to]", "9999-12-31",
         "?filter[created_date_to]=9999-12-31&page[size]=100"},
        {"page[size]", "1", "?page[size]=1"},
        {"page[size]", "1000", "?page[size]=1000"},
        {"page[size]", "0050", "?page[size]=50"},
        {"page[number]", "0", "?page[size]=100&page[number]=0"},
        {"page[number]", "99", "?page[size]=100&page[number]=99"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct payment_query q;
        char msg[MSG_LEN];
        struct kv kv = {cases[i].key, cases[i].value};
        int rc = parse_kvs(&q, &kv, 1, msg);
        if (rc != 0)
            fprintf(stderr, "  case %zu (%s=%s): %s\n", i, cases[i].key, cases[i].value, msg);
        CHECK_INT(rc, 0);
        char *link = self_link(&q);
        CHECK_STR(link, cases[i].link);
        free(link);
        payment_query_clear(&q);
    }
}

/* The stored forms the stores filter on. */
static void test_stored_forms(void)
{
    static const struct kv kvs[] = {
        {"filter[organisation_id]", "743D5B63-8E6F-432E-A8FA-C5D8D2EE5FCB,Credit"},
    };
    struct payment_query q;
    char msg[MSG_LEN];

    /* A bad value after a good one: the error names it and nothing leaks. */
    CHECK_INT(parse_kvs(&q, kvs, 1, msg), -1);
    CHECK(strstr(msg, "'Credit'") != NULL);
    CHECK_INT(q.organisation_id.count, 0);
    payment_query_clear(&q);

    static const struct kv good[] = {
        {"filter[organisation_id]", "743D5B63-8E6F-432E-A8FA-C5D8D2EE5FCB"},
        {"filter[currency]", "EUR,GBP"},
        {"filter[amount][from]", "12.5"},
        {"filter[amount][to]", "100"},
        {"filter[created_date_from]", "2026-11-26"},
        {"filter[created_date_to]", "2026-11-26"},
        {"filter[processing_date_from]", "2024-02-29"},
        {"page[size]", "25"},
        {"page[number]", "3"},
    };
    CHECK_INT(parse_kvs(&q, good, sizeof good / sizeof good[0], msg), 0);
    CHECK_INT(q.organisation_id.count, 1);
    CHECK_STR(q.organisation_id.values[0], "743d5b63-8e6f-432e-a8fa-c5d8d2ee5fcb");
    CHECK_INT(q.currency.count, 2);
    CHECK_STR(q.currency.values[0], "EUR");
    CHECK_STR(q.currency.values[1], "GBP");
    CHECK_STR(q.amount_from, "0000000000000000001250000000000000000000");
    CHECK_STR(q.amount_to, "0000000000000000010000000000000000000000");
    CHECK(q.created_from_ms == INT64_C(1795651200000));
    CHECK(q.created_to_ms == INT64_C(1795737600000)); /* first ms of 2026-11-27 */
    CHECK_STR(q.processing_date_from, "2024-02-29");
    CHECK_STR(q.processing_date_to, "");
    CHECK_INT(q.page_size, 25);
    CHECK_INT(q.page_number, 3);
    CHECK_INT(q.mode, PAYMENT_PAGE_OFFSET);
    payment_query_clear(&q);

    /* A created_date_to at a month's end covers the whole of that leap day. */
    static const struct kv leap[] = {{"filter[created_date_to]", "2024-02-29"}};
    CHECK_INT(parse_kvs(&q, leap, 1, msg), 0);
    CHECK(q.created_to_ms == INT64_C(1709251200000)); /* 2024-03-01 */
    payment_query_clear(&q);

    /* Clear, then init again: the query is reusable. */
    CHECK_INT(parse_kvs(&q, good, 2, msg), 0);
    payment_query_clear(&q);
    CHECK_INT(q.currency.count, 0);
    payment_query_init(&q);
    CHECK_INT(q.currency.count, 0);
    payment_query_clear(&q);
}

/* Every parameter with malformed values: -1, and a message naming it. */
static void test_invalid_values(void)
{
    static const struct {
        const char *key, *value, *msg_has;
    } cases[] = {
        {"filter[organisation_id]", "", "filter[organisation_id]"},
        {"filter[organisation_id]", NULL, "filter[organisation_id]"},
        {"filter[organisation_id]", "not-a-uuid", "not a UUID"},
        {"filter[organisation_id]", "743d5b638e6f432ea8fac5d8d2ee5fcb", "not a UUID"},
        {"filter[organisation_id]", "{743d5b63-8e6f-432e-a8fa-c5d8d2ee5fcb}", "not a UUID"},
        {"filter[organisation_id]", "743d5b63-8e6f-432e-a8fa-c5d8d2ee5fcg", "not a UUID"},
        {"filter[organisation_id]", "743d5b63-8e6f-432e-a8fa-c5d8d2ee5fcb,", "empty value"},
        {"filter[organisation_id]", ",743d5b63-8e6f-432e-a8fa-c5d8d2ee5fcb", "empty value"},
        {"filter[currency]", "XYZ", "'XYZ'"},
        {"filter[currency]", "HRK", "'HRK'"},
        {"filter[currency]", "eur", "'eur'"},
        {"filter[currency]", "EURO", "'EURO'"},
        {"filter[currency]", "EU", "'EU'"},
        {"filter[currency]", "EUR,,GBP", "empty value"},
        {"filter[currency]", "EUR,GBP,XXQ", "'XXQ'"},
        {"filter[currency]", " EUR", "' EUR'"},
        {"filter[payment_scheme]", "fps", "'fps'"},
        {"filter[payment_scheme]", "SEPA", "'SEPA'"},
        {"filter[payment_scheme]", "FPS,CHAPS", "'CHAPS'"},
        {"filter[payment_scheme]", "FPSX", "'FPSX'"},
        {"filter[payment_type]", "", "empty value"},
        {"filter[payment_type]", "Credit,", "empty value"},
        {"filter[reference]", ",", "empty value"},
        {"filter[end_to_end_reference]", "", "empty value"},
        {"filter[processing_date_from]", "2026-13-01", "not a date"},
        {"filter[processing_date_from]", "2023-02-29", "not a date"},
        {"filter[processing_date_from]", "2026-1-01", "not a date"},
        {"filter[processing_date_from]", "2026-01-01T00:00:00Z", "not a date"},
        {"filter[processing_date_to]", "2026-01-01,2026-01-02", "one value"},
        {"filter[processing_date_to]", "", "empty value"},
        {"filter[processing_date_to]", "yesterday", "not a date"},
        {"filter[amount][from]", "-1", "'-1'"},
        {"filter[amount][from]", "1e3", "'1e3'"},
        {"filter[amount][from]", "+1", "'+1'"},
        {"filter[amount][from]", "01.5", "'01.5'"},
        {"filter[amount][from]", "10.", "'10.'"},
        {"filter[amount][from]", ".5", "'.5'"},
        {"filter[amount][from]", "1 0", "'1 0'"},
        {"filter[amount][to]", "123456789012345678901", "filter[amount][to]"},
        {"filter[amount][to]", "1,2", "one value"},
        {"filter[amount][to]", "", "empty value"},
        {"filter[created_date_from]", "2026-02-30", "not a date"},
        {"filter[created_date_from]", "2026-11-26,2026-11-27", "one value"},
        {"filter[created_date_to]", "26-11-2026", "not a date"},
        {"filter[created_date_to]", "", "empty value"},
        {"page[size]", "0", "1 to 1000"},
        {"page[size]", "1001", "1 to 1000"},
        {"page[size]", "-1", "1 to 1000"},
        {"page[size]", "+5", "1 to 1000"},
        {"page[size]", " 5", "1 to 1000"},
        {"page[size]", "5 ", "1 to 1000"},
        {"page[size]", "1.5", "1 to 1000"},
        {"page[size]", "0x10", "1 to 1000"},
        {"page[size]", "99999999999999999999999", "1 to 1000"},
        {"page[size]", "10,20", "one value"},
        {"page[size]", "", "empty value"},
        {"page[number]", "-1", "non-negative integer"},
        {"page[number]", "+1", "non-negative integer"},
        {"page[number]", "1e2", "non-negative integer"},
        {"page[number]", "4294967296", "page[after]"},
        {"page[number]", "99999999999999999999999", "page[after]"},
        {"page[number]", "", "empty value"},
        {"page[after]", "", "empty value"},
        {"page[after]", "abc", "page[after]"},
        {"page[after]", "1", "page[after]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct payment_query q;
        char msg[MSG_LEN] = "";
        payment_query_init(&q);
        int rc = payment_query_add(&q, cases[i].key, cases[i].value, msg, sizeof msg);
        if (rc != -1 || !strstr(msg, cases[i].msg_has))
            fprintf(stderr, "  case %zu (%s=%s): rc %d, msg \"%s\"\n", i, cases[i].key,
                    cases[i].value ? cases[i].value : "(null)", rc, msg);
        CHECK_INT(rc, -1);
        CHECK(strstr(msg, cases[i].msg_has) != NULL);
        payment_query_clear(&q);
    }
}

static void test_value_count_limit(void)
{
    struct payment_query q;
    char msg[MSG_LEN];
    char value[PAYMENT_QUERY_MAX_VALUES * 4 + 8] = "";
    size_t len = 0;
    for (int i = 0; i < PAYMENT_QUERY_MAX_VALUES; i++)
        len += (size_t)snprintf(value + len, sizeof value - len, "%s%d", i ? "," : "", i);

    payment_query_init(&q);
    CHECK_INT(payment_query_add(&q, "filter[reference]", value, msg, sizeof msg), 0);
    CHECK_INT(q.reference.count, PAYMENT_QUERY_MAX_VALUES);
    CHECK_STR(q.reference.values[PAYMENT_QUERY_MAX_VALUES - 1], "99");
    payment_query_clear(&q);

    snprintf(value + len, sizeof value - len, ",x");
    payment_query_init(&q);
    CHECK_INT(payment_query_add(&q, "filter[reference]", value, msg, sizeof msg), -1);
    CHECK(strstr(msg, "more than 100 values") != NULL);
    CHECK_INT(q.reference.count, 0);
    payment_query_clear(&q);
}

static const char *const known_keys[] = {
    "filter[organisation_id]", "filter[currency]", "filter[payment_scheme]",
    "filter[payment_type]", "filter[reference]", "filter[end_to_end_reference]",
    "filter[processing_date_from]", "filter[processing_date_to]", "filter[amount][from]",
    "filter[amount][to]", "filter[created_date_from]", "filter[created_date_to]", "page[size]",
    "page[number]", "page[after]",
};

/* A valid value of each known key, in order. */
static const char *const known_values[] = {
    "743d5b63-8e6f-432e-a8fa-c5d8d2ee5fcb", "GBP", "FPS", "Credit", "ref", "e2e", "2026-01-01",
    "2026-01-31", "1", "2", "2026-01-01", "2026-01-31", "10", "1", NULL /* a cursor */,
};

static void test_repeated_parameter(void)
{
    char cursor[PAYMENT_CURSOR_MAX_LEN + 1];
    payment_cursor_encode(42, cursor);
    for (size_t i = 0; i < sizeof known_keys / sizeof known_keys[0]; i++) {
        struct payment_query q;
        char msg[MSG_LEN] = "";
        const char *v = known_values[i] ? known_values[i] : cursor;
        payment_query_init(&q);
        CHECK_INT(payment_query_add(&q, known_keys[i], v, msg, sizeof msg), 0);
        CHECK_INT(payment_query_add(&q, known_keys[i], v, msg, sizeof msg), -1);
        CHECK(strstr(msg, known_keys[i]) != NULL);
        CHECK(strstr(msg, "more than once") != NULL);
        payment_query_clear(&q);
    }
}

static void test_unknown_parameter(void)
{
    static const char *const keys[] = {
        "",
        "sort",
        "page",
        "filter",
        "page[]",
        "page[limit]",
        "page[offset]",
        "PAGE[SIZE]",
        "page[size] ",
        "page[size",
        "page%5Bsize%5D",
        "filter[]",
        "filter[amount]",
        "filter[amount][from",
        "filter[amount_from]",
        "filter[Currency]",
        "filter[id]",
        "filter[organisation_id][0]",
        "version",
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        struct payment_query q;
        char msg[MSG_LEN] = "";
        payment_query_init(&q);
        CHECK_INT(payment_query_add(&q, keys[i], "1", msg, sizeof msg), -1);
        char want[MSG_LEN];
        snprintf(want, sizeof want, "'%s'", keys[i]);
        if (!strstr(msg, want))
            fprintf(stderr, "  key \"%s\": msg \"%s\"\n", keys[i], msg);
        CHECK(strstr(msg, "unknown") != NULL);
        CHECK(strstr(msg, want) != NULL);
        payment_query_clear(&q);
    }
}

static void test_finish_combinations(void)
{
    char cursor[PAYMENT_CURSOR_MAX_LEN + 1];
    payment_cursor_encode(7, cursor);
    static const char *const none = NULL;
    const struct {
        struct kv kvs[4];
        int rc;
        int mode;            /* when rc == 0 */
        const char *msg_has; /* when rc == -1 */
    } cases[] = {
        {{{"page[size]", "100"}, {"page[number]", "99"}}, 0, PAYMENT_PAGE_OFFSET, none},
        {{{"page[size]", "100"}, {"page[number]", "100"}}, -1, 0, "page[after]"},
        {{{"page[number]", "100"}, {"page[size]", "100"}}, -1, 0, "cursor"},
        {{{"page[number]", "99"}}, 0, PAYMENT_PAGE_OFFSET, none}, /* default size 100 */
        {{{"page[number]", "100"}}, -1, 0, "cursor"},
        {{{"page[size]", "1"}, {"page[number]", "9999"}}, 0, PAYMENT_PAGE_OFFSET, none},
        {{{"page[size]", "1"}, {"page[number]", "10000"}}, -1, 0, "cursor"},
        {{{"page[size]", "1000"}, {"page[number]", "9"}}, 0, PAYMENT_PAGE_OFFSET, none},
        {{{"page[size]", "1000"}, {"page[number]", "10"}}, -1, 0, "cursor"},
        {{{"page[size]", "1000"}, {"page[number]", "4294967295"}}, -1, 0, "cursor"},
        {{{"page[size]", "3"}, {"page[number]", "3333"}}, 0, PAYMENT_PAGE_OFFSET, none},
        {{{"page[size]", "3"}, {"page[number]", "3334"}}, -1, 0, "cursor"},
        {{{"page[size]", "50"}}, 0, PAYMENT_PAGE_FIRST, none},
        {{{"page[after]", cursor}}, 0, PAYMENT_PAGE_CURSOR, none},
        {{{"page[after]", cursor}, {"page[size]", "1000"}}, 0, PAYMENT_PAGE_CURSOR, none},
        {{{"page[after]", cursor}, {"page[number]", "0"}}, -1, 0, "page[number]"},
        {{{"page[number]", "0"}, {"page[after]", cursor}}, -1, 0, "page[after]"},
        {{{"filter[processing_date_from]", "2026-01-02"},
          {"filter[processing_date_to]", "2026-01-01"}},
         -1, 0, "filter[processing_date_from]"},
        {{{"filter[processing_date_from]", "2026-01-01"},
          {"filter[processing_date_to]", "2026-01-01"}},
         0, PAYMENT_PAGE_FIRST, none},
        {{{"filter[processing_date_from]", "2025-12-31"},
          {"filter[processing_date_to]", "2026-01-01"}},
         0, PAYMENT_PAGE_FIRST, none},
        /* decimals, not strings: "9" < "10" although "9" > "10" as text */
        {{{"filter[amount][from]", "9"}, {"filter[amount][to]", "10"}}, 0, PAYMENT_PAGE_FIRST,
         none},
        {{{"filter[amount][from]", "10"}, {"filter[amount][to]", "9.99"}}, -1, 0,
         "filter[amount][from]"},
        {{{"filter[amount][from]", "1.50"}, {"filter[amount][to]", "1.5"}}, 0,
         PAYMENT_PAGE_FIRST, none},
        {{{"filter[amount][from]", "1.51"}, {"filter[amount][to]", "1.5"}}, -1, 0, "amount"},
        {{{"filter[created_date_from]", "2026-11-26"}, {"filter[created_date_to]", "2026-11-26"}},
         0, PAYMENT_PAGE_FIRST, none},
        {{{"filter[created_date_from]", "2026-11-27"}, {"filter[created_date_to]", "2026-11-26"}},
         -1, 0, "filter[created_date_from]"},
        {{{"filter[created_date_to]", "2026-11-26"}, {"filter[created_date_from]", "2026-11-01"}},
         0, PAYMENT_PAGE_FIRST, none},
        /* bounds of different filters never compare with each other */
        {{{"filter[created_date_from]", "2026-11-27"},
          {"filter[processing_date_to]", "2026-11-26"}},
         0, PAYMENT_PAGE_FIRST, none},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct payment_query q;
        char msg[MSG_LEN];
        size_t n = 0;
        while (n < 4 && cases[i].kvs[n].key)
            n++;
        int rc = parse_kvs(&q, cases[i].kvs, n, msg);
        if (rc != cases[i].rc)
            fprintf(stderr, "  case %zu: rc %d, msg \"%s\"\n", i, rc, msg);
        CHECK_INT(rc, cases[i].rc);
        if (cases[i].rc == 0) {
            CHECK_INT(q.mode, cases[i].mode);
        } else {
            if (!strstr(msg, cases[i].msg_has))
                fprintf(stderr, "  case %zu: msg \"%s\"\n", i, msg);
            CHECK(strstr(msg, cases[i].msg_has) != NULL);
        }
        payment_query_clear(&q);
    }

    /* The mode's fields hold what was given. */
    struct payment_query q;
    char msg[MSG_LEN];
    const struct kv after[] = {{"page[after]", cursor}};
    CHECK_INT(parse_kvs(&q, after, 1, msg), 0);
    CHECK(q.after_seq == 7);
    payment_query_clear(&q);
}

static int url_safe(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_'))
            return 0;
    return 1;
}

static void test_cursor_round_trip(void)
{
    static const int64_t seqs[] = {
        0, 1, 2, 255, 256, 65535, INT64_C(2147483647), INT64_C(2147483648),
        INT64_C(4294967301), INT64_C(1) << 62, INT64_MAX - 1, INT64_MAX,
    };
    char prev[PAYMENT_CURSOR_MAX_LEN + 1] = "";
    for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
        char c[PAYMENT_CURSOR_MAX_LEN + 1];
        int64_t got = -1;
        memset(c, 'Z', sizeof c);
        payment_cursor_encode(seqs[i], c);
        CHECK(strlen(c) > 0);
        CHECK(strlen(c) <= PAYMENT_CURSOR_MAX_LEN);
        CHECK(url_safe(c));
        CHECK(strcmp(c, prev) != 0);
        CHECK_INT(payment_cursor_decode(c, &got), 0);
        CHECK(got == seqs[i]);
        memcpy(prev, c, sizeof prev);
    }

    /* Opaque: the token is not the number in disguise. */
    char c[PAYMENT_CURSOR_MAX_LEN + 1];
    payment_cursor_encode(12345, c);
    CHECK(strstr(c, "12345") == NULL);

    /* Negative seqs are never produced. */
    payment_cursor_encode(-1, c);
    int64_t got = 99;
    CHECK_INT(payment_cursor_decode(c, &got), -1);
    payment_cursor_encode(INT64_MIN, c);
    CHECK_INT(payment_cursor_decode(c, &got), -1);
    CHECK(got == 99);
}

static void test_cursor_rejects_tampering(void)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    static const int64_t seqs[] = {0, 1000, INT64_MAX};
    int64_t got;

    /* Every one-character edit of a valid cursor is rejected. */
    for (size_t k = 0; k < sizeof seqs / sizeof seqs[0]; k++) {
        char c[PAYMENT_CURSOR_MAX_LEN + 1], t[PAYMENT_CURSOR_MAX_LEN + 1];
        payment_cursor_encode(seqs[k], c);
        size_t len = strlen(c);
        int accepted = 0;
        for (size_t i = 0; i < len; i++) {
            for (size_t a = 0; a < sizeof alphabet - 1; a++) {
                if (alphabet[a] == c[i])
                    continue;
                memcpy(t, c, sizeof t);
                t[i] = alphabet[a];
                if (payment_cursor_decode(t, &got) == 0)
                    accepted++;
            }
        }
        CHECK_INT(accepted, 0);

        /* truncated, extended, padded, standard base64, case-flipped */
        memcpy(t, c, sizeof t);
        t[len - 1] = '\0';
        CHECK_INT(payment_cursor_decode(t, &got), -1);
        char longer[PAYMENT_CURSOR_MAX_LEN + 3];
        snprintf(longer, sizeof longer, "%sA", c);
        CHECK_INT(payment_cursor_decode(longer, &got), -1);
        snprintf(longer, sizeof longer, "%s=", c);
        CHECK_INT(payment_cursor_decode(longer, &got), -1);
        snprintf(longer, sizeof longer, "A%s", c);
        CHECK_INT(payment_cursor_decode(longer, &got), -1);
        for (size_t i = 0; i < len; i++) {
            memcpy(t, c, sizeof t);
            if (t[i] == '-')
                t[i] = '+';
            else if (t[i] == '_')
                t[i] = '/';
            else
                t[i] = ',';
            CHECK_INT(payment_cursor_decode(t, &got), -1);
        }
    }

    static const char *const garbage[] = {
        "", "0", "42", "-1", "AAAAAAAAAAAAAAAAAAAA", "____________________",
        "AQAAAAAAAAAAAAAAAAAA", "AQAAAAAAAAAqAAAAAAAA", "aaaaaaaaaaaaaaaaaaaa",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "page[after]", "cursor with spaces", "AAAAAAAAAAAAAAAAAAA\n",
    };
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++)
        CHECK_INT(payment_cursor_decode(garbage[i], &got), -1);

    /* Random tokens of the right shape: none passes the check. */
    uint64_t x = UINT64_C(0x9e3779b97f4a7c15);
    int accepted = 0;
    for (int n = 0; n < 20000; n++) {
        char t[PAYMENT_CURSOR_MAX_LEN + 1];
        char ok[PAYMENT_CURSOR_MAX_LEN + 1];
        payment_cursor_encode(0, ok);
        size_t len = strlen(ok);
        for (size_t i = 0; i < len; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            t[i] = alphabet[x % 64];
        }
        t[len] = '\0';
        if (payment_cursor_decode(t, &got) == 0)
            accepted++;
    }
    CHECK_INT(accepted, 0);
}

/* The cursor format, rebuilt here so that a change to it is deliberate
 * (cursors in clients' hands must keep working across releases) and so
 * that a well-formed cursor of a negative seq can be forged: version 1, seq
 * as 8 bytes big-endian, 6 bytes of the check, in base64url. */
static void forge_cursor(uint8_t version, int64_t seq, char out[PAYMENT_CURSOR_MAX_LEN + 1])
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t p[15];
    p[0] = version;
    for (int i = 0; i < 8; i++)
        p[1 + i] = (uint8_t)((uint64_t)seq >> (56 - 8 * i));
    uint64_t h = UINT64_C(0x7061796d656e7464);
    for (int i = 0; i < 9; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    for (int i = 0; i < 6; i++)
        p[9 + i] = (uint8_t)(h >> (56 - 8 * i));
    for (int i = 0, o = 0; i < 15; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = alphabet[v & 63];
    }
    out[20] = '\0';
}

static void test_cursor_format(void)
{
    static const int64_t seqs[] = {0, 1, 77777, INT64_MAX};
    char forged[PAYMENT_CURSOR_MAX_LEN + 1], real[PAYMENT_CURSOR_MAX_LEN + 1];
    int64_t got;
    for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
        forge_cursor(1, seqs[i], forged);
        payment_cursor_encode(seqs[i], real);
        CHECK_STR(real, forged);
    }
    /* Well-formed and correctly checked, but negative: still refused. */
    static const int64_t negative[] = {-1, -2, INT64_MIN};
    for (size_t i = 0; i < sizeof negative / sizeof negative[0]; i++) {
        forge_cursor(1, negative[i], forged);
        got = 5;
        CHECK_INT(payment_cursor_decode(forged, &got), -1);
        CHECK(got == 5);
    }
    /* Correctly checked, but of a version this server does not know. */
    static const uint8_t versions[] = {0, 2, 255};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        forge_cursor(versions[i], 42, forged);
        CHECK_INT(payment_cursor_decode(forged, &got), -1);
    }
}

static const struct kv all_filters[] = {
    {"page[size]", "25"},
    {"filter[amount][to]", "1000.00"},
    {"filter[currency]", "GBP,EUR"},
    {"filter[created_date_to]", "2026-12-31"},
    {"filter[reference]", "rent, flat 1"}, /* comma splits: "rent" and " flat 1" */
    {"filter[organisation_id]", "743D5B63-8E6F-432E-A8FA-C5D8D2EE5FCB"},
    {"filter[payment_scheme]", "FPS"},
    {"filter[payment_type]", "Credit"},
    {"filter[end_to_end_reference]", "a&b=c"},
    {"filter[processing_date_from]", "2026-01-01"},
    {"filter[processing_date_to]", "2026-06-30"},
    {"filter[amount][from]", "0.5"},
    {"filter[created_date_from]", "2026-01-01"},
};

#define ALL_FILTERS_LINK                                                              \
    "?filter[organisation_id]=743d5b63-8e6f-432e-a8fa-c5d8d2ee5fcb"                   \
    "&filter[currency]=GBP,EUR&filter[payment_scheme]=FPS&filter[payment_type]=Credit" \
    "&filter[reference]=rent,%20flat%201&filter[end_to_end_reference]=a%26b%3Dc"      \
    "&filter[processing_date_from]=2026-01-01&filter[processing_date_to]=2026-06-30"   \
    "&filter[amount][from]=0.5&filter[amount][to]=1000"                                \
    "&filter[created_date_from]=2026-01-01&filter[created_date_to]=2026-12-31"         \
    "&page[size]=25"

static void test_link_modes(void)
{
    struct payment_query q;
    char msg[MSG_LEN];
    CHECK_INT(parse_kvs(&q, all_filters, sizeof all_filters / sizeof all_filters[0], msg), 0);
    CHECK_INT(q.reference.count, 2);

    struct buf b = BUF_INIT;
    CHECK_INT(payment_query_link(&q, PAYMENT_PAGE_FIRST, 0, 0, &b), 0);
    CHECK_STR(b.data, ALL_FILTERS_LINK);
    buf_reset(&b);

    CHECK_INT(payment_query_link(&q, PAYMENT_PAGE_OFFSET, 3, 0, &b), 0);
    CHECK_STR(b.data, ALL_FILTERS_LINK "&page[number]=3");
    buf_reset(&b);

    char cursor[PAYMENT_CURSOR_MAX_LEN + 1], want[1024];
    payment_cursor_encode(250, cursor);
    CHECK_INT(payment_query_link(&q, PAYMENT_PAGE_CURSOR, 0, 250, &b), 0);
    snprintf(want, sizeof want, "%s&page[after]=%s", ALL_FILTERS_LINK, cursor);
    CHECK_STR(b.data, want);
    buf_reset(&b);

    /* The link appends to what the buffer holds: the handler's path. */
    CHECK_INT(buf_puts(&b, "/v1/payments"), 0);
    CHECK_INT(payment_query_link(&q, PAYMENT_PAGE_OFFSET, 0, 0, &b), 0);
    CHECK_STR(b.data, "/v1/payments" ALL_FILTERS_LINK "&page[number]=0");
    buf_free(&b);
    payment_query_clear(&q);

    /* No filters: page[size] alone, then the mode's parameter. */
    payment_query_init(&q);
    CHECK_INT(payment_query_link(&q, PAYMENT_PAGE_OFFSET, 1, 0, &b), 0);
    CHECK_STR(b.data, "?page[size]=100&page[number]=1");
    buf_reset(&b);
    CHECK_INT(payment_query_link(&q, PAYMENT_PAGE_CURSOR, 0, 0, &b), 0);
    payment_cursor_encode(0, cursor);
    snprintf(want, sizeof want, "?page[size]=100&page[after]=%s", cursor);
    CHECK_STR(b.data, want);
    buf_free(&b);
    payment_query_clear(&q);
}

/* Parsing a link's output back gives the same query, in every mode. */
static void test_link_round_trip(void)
{
    static const struct {
        int mode;
        uint32_t number;
        int64_t after;
    } modes[] = {
        {PAYMENT_PAGE_FIRST, 0, 0},        {PAYMENT_PAGE_OFFSET, 0, 0},
        {PAYMENT_PAGE_OFFSET, 99, 0},      {PAYMENT_PAGE_CURSOR, 0, 0},
        {PAYMENT_PAGE_CURSOR, 0, 123456789}, {PAYMENT_PAGE_CURSOR, 0, INT64_MAX},
    };
    static const struct kv odd[] = {
        {"filter[reference]", "100% sure?,#1 & co,caf\xc3\xa9,a+b,x=y,[z]"},
        {"filter[payment_type]", "~Credit_-."},
        {"filter[amount][from]", "0.000"},
        {"filter[amount][to]", "0"},
        {"filter[created_date_from]", "1970-01-01"},
        {"filter[created_date_to]", "9999-12-31"},
        {"page[size]", "1"},
    };
    const struct {
        const struct kv *kvs;
        size_t n;
    } queries[] = {
        {NULL, 0},
        {all_filters, sizeof all_filters / sizeof all_filters[0]},
        {odd, sizeof odd / sizeof odd[0]},
    };
    for (size_t i = 0; i < sizeof queries / sizeof queries[0]; i++) {
        for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
            struct payment_query q, back;
            char msg[MSG_LEN];
            CHECK_INT(parse_kvs(&q, queries[i].kvs, queries[i].n, msg), 0);
            struct buf b = BUF_INIT;
            CHECK_INT(payment_query_link(&q, (enum payment_page_mode)modes[m].mode,
                                         modes[m].number, modes[m].after, &b),
                      0);
            int rc = parse_link(&back, b.data, msg);
            if (rc != 0)
                fprintf(stderr, "  link %s: %s\n", b.data, msg);
            CHECK_INT(rc, 0);
            CHECK_INT(back.mode, modes[m].mode);
            if (modes[m].mode == PAYMENT_PAGE_OFFSET)
                CHECK_INT(back.page_number, modes[m].number);
            if (modes[m].mode == PAYMENT_PAGE_CURSOR)
                CHECK(back.after_seq == modes[m].after);
            CHECK_INT(back.page_size, q.page_size);
            CHECK_INT(back.reference.count, q.reference.count);
            for (size_t j = 0; j < q.reference.count && j < back.reference.count; j++)
                CHECK_STR(back.reference.values[j], q.reference.values[j]);
            CHECK_INT(back.organisation_id.count, q.organisation_id.count);
            for (size_t j = 0; j < q.organisation_id.count && j < back.organisation_id.count; j++)
                CHECK_STR(back.organisation_id.values[j], q.organisation_id.values[j]);
            CHECK_INT(back.currency.count, q.currency.count);
            CHECK_INT(back.payment_scheme.count, q.payment_scheme.count);
            CHECK_INT(back.payment_type.count, q.payment_type.count);
            CHECK_INT(back.end_to_end_reference.count, q.end_to_end_reference.count);
            CHECK_STR(back.processing_date_from, q.processing_date_from);
            CHECK_STR(back.processing_date_to, q.processing_date_to);
            CHECK_STR(back.amount_from, q.amount_from);
            CHECK_STR(back.amount_to, q.amount_to);
            CHECK(back.created_from_ms == q.created_from_ms);
            CHECK(back.created_to_ms == q.created_to_ms);

            /* and its link is the same text */
            struct buf b2 = BUF_INIT;
            CHECK_INT(payment_query_link(&back, (enum payment_page_mode)modes[m].mode,
                                         modes[m].number, modes[m].after, &b2),
                      0);
            CHECK_STR(b2.data, b.data);
            buf_free(&b2);
            buf_free(&b);
            payment_query_clear(&back);
            payment_query_clear(&q);
        }
    }
}

TEST_MAIN(TEST(test_init_defaults), TEST(test_valid_values), TEST(test_stored_forms),
          TEST(test_invalid_values), TEST(test_value_count_limit), TEST(test_repeated_parameter),
          TEST(test_unknown_parameter), TEST(test_finish_combinations),
          TEST(test_cursor_round_trip), TEST(test_cursor_rejects_tampering), TEST(test_cursor_format),
          TEST(test_link_modes), TEST(test_link_round_trip))
