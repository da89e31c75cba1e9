#include "payment/doc.h"

#include <stdlib.h>
#include <string.h>

#include "core/decimal.h"
#include "test.h"

#define ID "4ee3a8d8-ca7b-4290-a52c-dd5b6165ec43"
#define ORG "743d5b63-8e6f-432e-a8fa-c5d8d2ee5fcb"
#define CREATED "2026-11-26T10:00:00.123Z"
#define CREATED_MS 1795687200123LL

static json_t *load(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, 0, &err);
    if (!v)
        fprintf(stderr, "  bad test JSON %s: %s\n", text, err.text);
    return v;
}

/* Parses len bytes (strlen when len is 0) and reports whether it was
 * accepted; a rejection must come with a message. */
static int body_ok(const char *body, size_t len)
{
    char msg[256];
    memset(msg, 0, sizeof msg);
    json_t *v = payment_body_parse(body, len, msg, sizeof msg);
    if (!v) {
        CHECK(msg[0] != '\0');
        return 0;
    }
    CHECK(json_is_object(v));
    json_decref(v);
    return 1;
}

static void test_body_table(void)
{
    static const struct {
        const char *body;
        size_t len; /* 0: strlen(body) */
        int ok;
    } cases[] = {
        /* accepted */
        {"{}", 0, 1},
        {"{\"data\":{}}", 0, 1},
        {"  \n\t{\"a\":1}\r\n ", 0, 1},
        {"{\"a\":1,\"A\":1}", 0, 1},
        {"{\"a\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e\"}", 0, 1},
        {"{\"caf\xc3\xa9\":\"\\u00e9\\ud834\\udd1e\"}", 0, 1},
        {"{\"a\":[1,2,{\"b\":null}],\"c\":{\"d\":true}}", 0, 1},
        {"{\"a\":\"\\u0001\"}", 0, 1},
        {"{\"a\":1}xyz", 7, 1}, /* exactly len bytes */
        /* empty */
        {"", 0, 0},
        {"   ", 0, 0},
        {"\n", 0, 0},
        /* malformed */
        {"{", 0, 0},
        {"}", 0, 0},
        {"{\"a\":}", 0, 0},
        {"{\"a\":1,}", 0, 0},
        {"{\"a\" 1}", 0, 0},
        {"{'a':1}", 0, 0},
        {"{a:1}", 0, 0},
        {"{\"a\":01}", 0, 0},
        {"{\"a\":NaN}", 0, 0},
        {"{\"a\":\"unterminated}", 0, 0},
        {"{\"a\":\"\\x\"}", 0, 0},
        {"{\"a\":\"tab\there\"}", 0, 0},
        {"{}{}", 0, 0},
        {"{} x", 0, 0},
        {"{}\0", 3, 0},
        {"{\"a\":1}", 6, 0}, /* cut short by len */
        /* not an object */
        {"[]", 0, 0},
        {"[{\"a\":1}]", 0, 0},
        {"\"string\"", 0, 0},
        {"1", 0, 0},
        {"-1.5e3", 0, 0},
        {"true", 0, 0},
        {"null", 0, 0},
        /* duplicate keys, at any depth */
        {"{\"a\":1,\"a\":2}", 0, 0},
        {"{\"a\":1,\"a\":1}", 0, 0},
        {"{\"a\":1,\"b\":2,\"a\":3}", 0, 0},
        {"{\"a\":1,\"\\u0061\":2}", 0, 0},
        {"{\"d\":{\"x\":1,\"x\":{}}}", 0, 0},
        {"{\"l\":[{\"x\":1,\"x\":2}]}", 0, 0},
        /* invalid UTF-8 */
        {"{\"a\":\"\xff\"}", 0, 0},
        {"{\"a\":\"\x80\"}", 0, 0},
        {"{\"a\":\"\xc0\x80\"}", 0, 0},         /* overlong NUL */
        {"{\"a\":\"\xc1\xbf\"}", 0, 0},         /* overlong */
        {"{\"a\":\"\xe0\x80\xaf\"}", 0, 0},     /* overlong '/' */
        {"{\"a\":\"\xed\xa0\x80\"}", 0, 0},     /* UTF-16 surrogate */
        {"{\"a\":\"\xf4\x90\x80\x80\"}", 0, 0}, /* past U+10FFFF */
        {"{\"a\":\"\xe2\x82\"}", 0, 0},         /* truncated sequence */
        {"{\"\xff\":1}", 0, 0},                 /* in a key */
        {"{\"a\":\"\\ud800\"}", 0, 0},          /* lone surrogate escape */
        /* \u0000 in a value or a key */
        {"{\"a\":\"\\u0000\"}", 0, 0},
        {"{\"a\":\"x\\u0000y\"}", 0, 0},
        {"{\"a\\u0000b\":1}", 0, 0},
        {"{\"l\":[\"\\u0000\"]}", 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].body);
        int ok = body_ok(cases[i].body, len);
        if (ok != cases[i].ok)
            fprintf(stderr, "  case %zu: %.*s\n", i, (int)len, cases[i].body);
        CHECK_INT(ok, cases[i].ok);
    }
}

static void test_body_message(void)
{
    char msg[256] = "";
    CHECK(payment_body_parse("[1]", 3, msg, sizeof msg) == NULL);
    CHECK(msg[0] != '\0');
    memset(msg, 0, sizeof msg);
    CHECK(payment_body_parse("{\"a\":1,\"a\":2}", 13, msg, sizeof msg) == NULL);
    CHECK(msg[0] != '\0');

    /* a small message buffer is truncated, not overrun */
    for (size_t cap = 1; cap <= 4; cap++) {
        char *small = malloc(cap);
        CHECK(small != NULL);
        if (!small)
            return;
        memset(small, 'x', cap);
        CHECK(payment_body_parse("", 0, small, cap) == NULL);
        CHECK(strnlen(small, cap) < cap);
        free(small);
    }

    /* the parsed value is the body's */
    json_t *v = payment_body_parse("{\"data\":{\"id\":\"x\"}}", 19, msg, sizeof msg);
    CHECK(v != NULL);
    CHECK_STR(json_string_value(json_object_get(json_object_get(v, "data"), "id")), "x");
    CHECK_INT(v ? v->refcount : 0, 1);
    json_decref(v);
}

enum nest_kind { NEST_OBJECTS, NEST_ARRAYS, NEST_MIXED };

/* A body levels deep (the root object is level 1): prefix, then the nested
 * values, after the member "prefix" when given.  malloc'd. */
static char *nested(int levels, enum nest_kind kind, const char *prefix)
{
    size_t cap = strlen(prefix ? prefix : "") + (size_t)levels * 8 + 16;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    size_t n = 0;
    n += (size_t)snprintf(s + n, cap - n, "{%s%s\"n\":", prefix ? prefix : "", prefix ? "," : "");
    char closers[4096];
    size_t c = 0;
    for (int level = 2; level <= levels && c < sizeof closers; level++) {
        int obj = kind == NEST_OBJECTS || (kind == NEST_MIXED && level % 2 == 0);
        if (obj) {
            n += (size_t)snprintf(s + n, cap - n, "%s", level < levels ? "{\"k\":" : "{");
            closers[c++] = '}';
        } else {
            s[n++] = '[';
            closers[c++] = ']';
        }
    }
    if (levels == 1)
        n += (size_t)snprintf(s + n, cap - n, "0");
    else if (kind != NEST_OBJECTS && closers[c - 1] == ']')
        s[n++] = '1';
    while (c > 0)
        s[n++] = closers[--c];
    s[n++] = '}';
    s[n] = '\0';
    return s;
}

static void test_body_depth(void)
{
    static const char *const prefixes[] = {
        NULL,
        /* brackets inside strings, keys and values, do not count */
        "\"s\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{\"",
        "\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\":1",
        /* closing brackets in strings do not lower the count either */
        "\"s\":\"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}}}}}}}}}\"",
        /* an escaped quote does not end the string */
        "\"s\":\"\\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"",
        "\"s\":\"\\\"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\"",
        /* an escaped backslash before the closing quote does end it */
        "\"s\":\"\\\\\"",
        "\"s\":\"a\\\\\\\\\",\"t\":\"\\\\\\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"",
        /* siblings: depth is the deepest path, not a total */
        "\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    };
    static const enum nest_kind kinds[] = {NEST_OBJECTS, NEST_ARRAYS, NEST_MIXED};
    for (size_t p = 0; p < sizeof prefixes / sizeof prefixes[0]; p++) {
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            static const struct {
                int levels;
                int ok;
            } depths[] = {{1, 1}, {2, 1}, {31, 1}, {32, 1}, {33, 0}, {34, 0}, {500, 0}};
            for (size_t d = 0; d < sizeof depths / sizeof depths[0]; d++) {
                char *body = nested(depths[d].levels, kinds[k], prefixes[p]);
                CHECK(body != NULL);
                if (!body)
                    return;
                /* the test's own body must be valid JSON of that depth */
                json_error_t err;
                json_t *check = json_loads(body, 0, &err);
                if (!check)
                    fprintf(stderr, "  bad test body %.200s: %s\n", body, err.text);
                CHECK(check != NULL);
                json_decref(check);

                int ok = body_ok(body, strlen(body));
                if (ok != depths[d].ok)
                    fprintf(stderr, "  prefix %zu kind %zu depth %d: %.200s\n", p, k,
                            depths[d].levels, body);
                CHECK_INT(ok, depths[d].ok);
                free(body);
            }
        }
    }
}

/* The shape nested() builds, spelled out for the smallest cases. */
static void test_nested_builder(void)
{
    static const struct {
        int levels;
        enum nest_kind kind;
        const char *want;
    } cases[] = {
        {1, NEST_OBJECTS, "{\"n\":0}"},
        {2, NEST_OBJECTS, "{\"n\":{}}"},
        {3, NEST_OBJECTS, "{\"n\":{\"k\":{}}}"},
        {3, NEST_ARRAYS, "{\"n\":[[1]]}"},
        {4, NEST_MIXED, "{\"n\":{\"k\":[{}]}}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *s = nested(cases[i].levels, cases[i].kind, NULL);
        CHECK_STR(s, cases[i].want);
        free(s);
    }
}

static void test_doc_new_order(void)
{
    json_t *attrs = load("{\"amount\":\"1.00\",\"currency\":\"GBP\"}");
    json_t *rels = load("{\"beneficiary\":{\"data\":{\"id\":\"x\"}}}");
    CHECK(attrs && rels);
    if (!attrs || !rels)
        return;
    json_t *doc =
        payment_doc_new("payments", ID, 3, ORG, CREATED, CREATED_MS + 61000, attrs, rels);
    CHECK(doc != NULL);
    if (doc) {
        static const char *const order[] = {"type",       "id",          "version",
                                             "organisation_id", "created_on", "modified_on",
                                             "attributes", "relationships"};
        size_t i = 0;
        for (void *it = json_object_iter(doc); it; it = json_object_iter_next(doc, it), i++) {
            CHECK(i < sizeof order / sizeof order[0]);
            if (i < sizeof order / sizeof order[0])
                CHECK_STR(json_object_iter_key(it), order[i]);
        }
        CHECK_INT(i, 8);

        char *text = json_dumps(doc, JSON_COMPACT);
        CHECK_STR(text, "{\"type\":\"payments\",\"id\":\"" ID "\",\"version\":3,"
                        "\"organisation_id\":\"" ORG "\",\"created_on\":\"" CREATED "\","
                        "\"modified_on\":\"2026-11-26T10:01:01.123Z\","
                        "\"attributes\":{\"amount\":\"1.00\",\"currency\":\"GBP\"},"
                        "\"relationships\":{\"beneficiary\":{\"data\":{\"id\":\"x\"}}}}");
        free(text);

        /* attributes and relationships are shared, with the document's own
         * references */
        CHECK(json_object_get(doc, "attributes") == attrs);
        CHECK(json_object_get(doc, "relationships") == rels);
        CHECK_INT(attrs->refcount, 2);
        CHECK_INT(rels->refcount, 2);
        json_decref(doc);
    }
    CHECK_INT(attrs->refcount, 1);
    CHECK_INT(rels->refcount, 1);
    json_decref(attrs);
    json_decref(rels);
}

static void test_doc_new_without_relationships(void)
{
    json_t *attrs = load("{}");
    CHECK(attrs != NULL);
    json_t *doc = payment_doc_new("payments", ID, 0, ORG, CREATED, CREATED_MS, attrs, NULL);
    CHECK(doc != NULL);
    if (doc) {
        CHECK(json_object_get(doc, "relationships") == NULL);
        CHECK_INT(json_object_size(doc), 7);
        char *text = json_dumps(doc, JSON_COMPACT);
        CHECK_STR(text, "{\"type\":\"payments\",\"id\":\"" ID "\",\"version\":0,"
                        "\"organisation_id\":\"" ORG "\",\"created_on\":\"" CREATED "\","
                        "\"modified_on\":\"" CREATED "\",\"attributes\":{}}");
        free(text);
        json_decref(doc);
    }
    CHECK_INT(attrs->refcount, 1);
    json_decref(attrs);
}

static void test_doc_new_modified_on(void)
{
    static const struct {
        int64_t ms;
        const char *want;
    } cases[] = {
        {0, "1970-01-01T00:00:00.000Z"},
        {1, "1970-01-01T00:00:00.001Z"},
        {951868799999LL, "2000-02-29T23:59:59.999Z"},
        {CREATED_MS, CREATED},
        {CREATED_MS + 877, "2026-11-26T10:00:01.000Z"},
    };
    json_t *attrs = json_object();
    CHECK(attrs != NULL);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *doc = payment_doc_new("other_Type", ID, 7, ORG, "2001-01-01T00:00:00.000Z",
                                      cases[i].ms, attrs, NULL);
        CHECK(doc != NULL);
        CHECK_STR(payment_doc_string(doc, "modified_on"), cases[i].want);
        /* created_on is kept as given, not derived from modified_ms */
        CHECK_STR(payment_doc_string(doc, "created_on"), "2001-01-01T00:00:00.000Z");
        CHECK_STR(payment_doc_string(doc, "type"), "other_Type");
        CHECK_INT(json_integer_value(json_object_get(doc, "version")), 7);
        json_decref(doc);
    }
    json_decref(attrs);
}

static void test_doc_string(void)
{
    json_t *obj = load("{\"s\":\"v\",\"n\":1,\"z\":null,\"o\":{}}");
    CHECK(obj != NULL);
    CHECK_STR(payment_doc_string(obj, "s"), "v");
    CHECK(payment_doc_string(obj, "n") == NULL);
    CHECK(payment_doc_string(obj, "z") == NULL);
    CHECK(payment_doc_string(obj, "o") == NULL);
    CHECK(payment_doc_string(obj, "missing") == NULL);
    CHECK(payment_doc_string(NULL, "s") == NULL);
    json_decref(obj);
}

static void test_doc_row(void)
{
    json_t *attrs = load("{\"amount\":\"100.21\",\"currency\":\"GBP\",\"payment_scheme\":\"FPS\","
                         "\"payment_type\":\"Credit\",\"reference\":\"Payment for piano\","
                         "\"end_to_end_reference\":\"Wil piano Jan\","
                         "\"processing_date\":\"2017-01-18\",\"extra\":[1,{\"x\":\"y\"}]}");
    json_t *rels = load("{\"r\":{}}");
    CHECK(attrs && rels);
    if (!attrs || !rels)
        return;
    int64_t modified = CREATED_MS + 5000;
    json_t *doc = payment_doc_new("payments", ID, 4, ORG, CREATED, modified, attrs, rels);
    CHECK(doc != NULL);
    if (!doc)
        return;

    struct payment_row row;
    memset(&row, 0xa5, sizeof row);
    char *text = NULL;
    CHECK_INT(payment_doc_row(doc, CREATED_MS, modified, &row, &text), 0);
    CHECK(text != NULL);
    if (!text) {
        json_decref(doc);
        json_decref(attrs);
        json_decref(rels);
        return;
    }
    CHECK_STR(row.id, ID);
    CHECK_STR(row.organisation_id, ORG);
    CHECK_INT(row.version, 4);
    CHECK_INT(row.created_ms, CREATED_MS);
    CHECK_INT(row.modified_ms, modified);
    CHECK_STR(row.currency, "GBP");
    CHECK_STR(row.payment_scheme, "FPS");
    CHECK_STR(row.payment_type, "Credit");
    CHECK_STR(row.reference, "Payment for piano");
    CHECK_STR(row.end_to_end_reference, "Wil piano Jan");
    CHECK_STR(row.processing_date, "2017-01-18");
    /* string columns are views into the document */
    CHECK(row.currency == json_string_value(json_object_get(attrs, "currency")));

    struct decimal d;
    char key[DECIMAL_KEY_LEN + 1];
    CHECK_INT(decimal_parse("100.21", 6, &d), 0);
    decimal_sort_key(&d, key);
    CHECK_STR(row.amount_key, key);
    CHECK_INT(strlen(row.amount_key), DECIMAL_KEY_LEN);

    char *want = json_dumps(doc, JSON_COMPACT);
    CHECK_STR(text, want);
    free(want);
    CHECK(row.doc == text);
    CHECK_INT(row.doc_len, strlen(text));

    /* the text is the whole document: it reads back equal */
    json_t *back = load(text);
    CHECK(back != NULL && json_equal(back, doc));
    json_decref(back);

    free(text);
    json_decref(doc);
    json_decref(attrs);
    json_decref(rels);
}

/* Optional columns are NULL or "" when absent or unusable. */
static void test_doc_row_absent_columns(void)
{
    static const char *const attr_cases[] = {
        "{}",
        "{\"amount\":\"abc\",\"processing_date\":\"2017-1-18\",\"currency\":7}",
        "{\"amount\":100,\"processing_date\":null,\"payment_scheme\":null}",
        "{\"amount\":\"01.5\",\"processing_date\":\"2017-01-181\"}",
    };
    for (size_t i = 0; i < sizeof attr_cases / sizeof attr_cases[0]; i++) {
        json_t *attrs = load(attr_cases[i]);
        CHECK(attrs != NULL);
        json_t *doc = payment_doc_new("payments", ID, 0, ORG, CREATED, CREATED_MS, attrs, NULL);
        CHECK(doc != NULL);
        struct payment_row row;
        memset(&row, 0xa5, sizeof row);
        char *text = NULL;
        int failures = test_failures;
        CHECK_INT(payment_doc_row(doc, CREATED_MS, CREATED_MS, &row, &text), 0);
        CHECK(row.currency == NULL);
        CHECK(row.payment_scheme == NULL);
        CHECK(row.payment_type == NULL);
        CHECK(row.reference == NULL);
        CHECK(row.end_to_end_reference == NULL);
        CHECK_STR(row.processing_date, "");
        CHECK_STR(row.amount_key, "");
        CHECK(text != NULL && row.doc == text);
        if (test_failures != failures)
            fprintf(stderr, "  case %zu: %s\n", i, attr_cases[i]);
        free(text);
        json_decref(doc);
        json_decref(attrs);
    }
}

/* Amount keys order numerically, through the row. */
static void test_doc_row_amount_key_order(void)
{
    static const char *const amounts[] = {"0.01", "0.1", "1", "1.5", "9.99", "10", "100.21",
                                          "1000000"};
    char prev[DECIMAL_KEY_LEN + 1] = "";
    for (size_t i = 0; i < sizeof amounts / sizeof amounts[0]; i++) {
        json_t *attrs = json_pack("{s:s}", "amount", amounts[i]);
        CHECK(attrs != NULL);
        json_t *doc = payment_doc_new("payments", ID, 0, ORG, CREATED, CREATED_MS, attrs, NULL);
        struct payment_row row;
        char *text = NULL;
        CHECK_INT(payment_doc_row(doc, CREATED_MS, CREATED_MS, &row, &text), 0);
        CHECK(strcmp(prev, row.amount_key) < 0);
        memcpy(prev, row.amount_key, sizeof prev);
        free(text);
        json_decref(doc);
        json_decref(attrs);
    }
}

static void test_doc_row_malformed(void)
{
    static const char *const docs[] = {
        "{\"organisation_id\":\"" ORG "\",\"version\":0,\"attributes\":{}}",
        "{\"id\":null,\"organisation_id\":\"" ORG "\",\"attributes\":{}}",
        "{\"id\":7,\"organisation_id\":\"" ORG "\",\"attributes\":{}}",
        "{\"id\":\"4ee3a8d8\",\"organisation_id\":\"" ORG "\",\"attributes\":{}}",
        "{\"id\":\"" ID "0\",\"organisation_id\":\"" ORG "\",\"attributes\":{}}",
        "{\"id\":\"" ID "\",\"attributes\":{}}",
        "{\"id\":\"" ID "\",\"organisation_id\":\"\",\"attributes\":{}}",
        "{}",
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        json_t *doc = load(docs[i]);
        CHECK(doc != NULL);
        struct payment_row row;
        char *text = NULL;
        int rc = payment_doc_row(doc, 0, 0, &row, &text);
        if (rc != -1)
            fprintf(stderr, "  case %zu: %s\n", i, docs[i]);
        CHECK_INT(rc, -1);
        CHECK(text == NULL);
        free(text);
        json_decref(doc);
    }
}

TEST_MAIN(TEST(test_body_table), TEST(test_body_message), TEST(test_nested_builder),
          TEST(test_body_depth), TEST(test_doc_new_order), TEST(test_doc_new_without_relationships),
          TEST(test_doc_new_modified_on), TEST(test_doc_string), TEST(test_doc_row),
          TEST(test_doc_row_absent_columns), TEST(test_doc_row_amount_key_order),
          TEST(test_doc_row_malformed))
