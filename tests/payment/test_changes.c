/* changes: the paths an update changed, as an event lists them: leaf
 * members of objects, an array or a change of type as one path, members
 * added and removed, the bookkeeping left out, names with '.' or '~'
 * escaped so that a path names one member, sorted, valid JSON. */
#include "payment/changes.h"

#include <stdlib.h>
#include <string.h>

#include "test.h"

/* The changes between two documents given as JSON text. */
static char *changes(const char *before, const char *after)
{
    json_error_t e;
    json_t *a = json_loads(before, 0, &e);
    json_t *b = json_loads(after, 0, &e);
    CHECK(a && b);
    char *text = a && b ? payment_changes_between(a, b) : NULL;
    json_decref(a);
    json_decref(b);
    return text;
}

#define CHECK_CHANGES(before, after, want)      \
    do {                                        \
        char *got_ = changes((before), (after)); \
        CHECK_STR(got_, (want));                \
        free(got_);                             \
    } while (0)

#define DOC(attrs)                                                                   \
    "{\"type\":\"payments\",\"id\":\"p\",\"version\":3,\"organisation_id\":\"o\","   \
    "\"created_on\":\"2024-01-01T00:00:00.000Z\",\"modified_on\":\"2024-01-02T00:00:00.000Z\"," \
    "\"attributes\":" attrs "}"

#define DOC_NEXT(attrs)                                                              \
    "{\"type\":\"payments\",\"id\":\"p\",\"version\":4,\"organisation_id\":\"o\","   \
    "\"created_on\":\"2024-01-01T00:00:00.000Z\",\"modified_on\":\"2024-01-03T00:00:00.000Z\"," \
    "\"attributes\":" attrs "}"

/* Only the version and the modified time differ: nothing changed. */
static void test_bookkeeping_left_out(void)
{
    CHECK_CHANGES(DOC("{\"amount\":\"1.00\"}"), DOC_NEXT("{\"amount\":\"1.00\"}"), "[]");
    /* A member named so below the root is an attribute like any other. */
    CHECK_CHANGES(DOC("{\"version\":1}"), DOC_NEXT("{\"version\":2}"), "[\"attributes.version\"]");
    /* The root's other members are not bookkeeping. */
    CHECK_CHANGES("{\"created_on\":\"a\",\"version\":1}", "{\"created_on\":\"b\",\"version\":2}",
                  "[\"created_on\"]");
}

/* Leaf members within objects, sorted whatever the documents' order. */
static void test_leaves_sorted(void)
{
    CHECK_CHANGES(DOC("{\"reference\":\"r\",\"beneficiary_party\":{\"name\":\"A\",\"account\":\"1\"},"
                      "\"amount\":\"1.00\"}"),
                  DOC_NEXT("{\"amount\":\"2.00\",\"beneficiary_party\":{\"account\":\"1\","
                           "\"name\":\"B\"},\"reference\":\"r\"}"),
                  "[\"attributes.amount\",\"attributes.beneficiary_party.name\"]");
    /* Three levels down. */
    CHECK_CHANGES(DOC("{\"a\":{\"b\":{\"c\":1,\"d\":2}}}"), DOC_NEXT("{\"a\":{\"b\":{\"c\":1,\"d\":3}}}"),
                  "[\"attributes.a.b.d\"]");
    /* An integer and a real are values of different types. */
    CHECK_CHANGES(DOC("{\"n\":1}"), DOC_NEXT("{\"n\":1.0}"), "[\"attributes.n\"]");
}

/* Members added or removed, at any level; a whole object added or removed
 * is one path. */
static void test_added_and_removed(void)
{
    CHECK_CHANGES(DOC("{\"amount\":\"1\"}"), DOC_NEXT("{\"amount\":\"1\",\"reference\":\"x\"}"),
                  "[\"attributes.reference\"]");
    CHECK_CHANGES(DOC("{\"amount\":\"1\",\"reference\":\"x\"}"), DOC_NEXT("{\"amount\":\"1\"}"),
                  "[\"attributes.reference\"]");
    CHECK_CHANGES(DOC("{\"amount\":\"1\"}"),
                  DOC_NEXT("{\"amount\":\"1\",\"debtor_party\":{\"name\":\"n\",\"bic\":\"b\"}}"),
                  "[\"attributes.debtor_party\"]");
    CHECK_CHANGES("{\"attributes\":{},\"relationships\":{\"x\":{}}}", "{\"attributes\":{}}",
                  "[\"relationships\"]");
    /* Removed and added at once: both, in order. */
    CHECK_CHANGES(DOC("{\"z\":1,\"b\":{\"k\":1}}"), DOC_NEXT("{\"a\":1,\"b\":{\"j\":1}}"),
                  "[\"attributes.a\",\"attributes.b.j\",\"attributes.b.k\",\"attributes.z\"]");
}

/* An array is one value: any change in it is its path; a change of type
 * is one path too. */
static void test_arrays_and_types(void)
{
    CHECK_CHANGES(DOC("{\"l\":[1,{\"a\":1}]}"), DOC_NEXT("{\"l\":[1,{\"a\":2}]}"),
                  "[\"attributes.l\"]");
    CHECK_CHANGES(DOC("{\"l\":[1,2]}"), DOC_NEXT("{\"l\":[1,2]}"), "[]");
    CHECK_CHANGES(DOC("{\"p\":{\"a\":1}}"), DOC_NEXT("{\"p\":\"flat\"}"), "[\"attributes.p\"]");
    CHECK_CHANGES(DOC("{\"p\":[]}"), DOC_NEXT("{\"p\":{}}"), "[\"attributes.p\"]");
    CHECK_CHANGES(DOC("{\"p\":null}"), DOC_NEXT("{\"p\":false}"), "[\"attributes.p\"]");
    CHECK_CHANGES(DOC("{\"p\":\"1\"}"), DOC_NEXT("{\"p\":1}"), "[\"attributes.p\"]");
}

/* '.' and '~' in names are escaped as ~1 and ~0: "a.b" and a.b differ. */
static void test_names_escaped(void)
{
    CHECK_CHANGES(DOC("{\"a.b\":1,\"a\":{\"b\":1}}"), DOC_NEXT("{\"a.b\":2,\"a\":{\"b\":2}}"),
                  "[\"attributes.a.b\",\"attributes.a~1b\"]");
    CHECK_CHANGES(DOC("{\"x~1\":1}"), DOC_NEXT("{\"x~1\":2}"), "[\"attributes.x~01\"]");
    /* An empty name is a segment of its own. */
    CHECK_CHANGES("{\"\":{\"x\":1},\"x\":1}", "{\"\":{\"x\":2},\"x\":1}", "[\".x\"]");
    CHECK_CHANGES("{\"a\":{\"\":1}}", "{\"a\":{\"\":2}}", "[\"a.\"]");
}

/* The text is valid JSON whatever the names hold: quotes, backslashes,
 * control characters and non-ASCII text come out as JSON strings that
 * read back as the names. */
static void test_valid_json(void)
{
    char *text = changes("{\"a\":{\"q\\\"\\\\\\n\":1,\"\xc3\xa9t\xc3\xa9\":1}}",
                         "{\"a\":{\"q\\\"\\\\\\n\":2,\"\xc3\xa9t\xc3\xa9\":2}}");
    json_error_t e;
    json_t *arr = text ? json_loads(text, 0, &e) : NULL;
    CHECK(json_is_array(arr));
    CHECK_INT(json_array_size(arr), 2);
    CHECK_STR(json_string_value(json_array_get(arr, 0)), "a.q\"\\\n");
    CHECK_STR(json_string_value(json_array_get(arr, 1)), "a.\xc3\xa9t\xc3\xa9");
    json_decref(arr);
    free(text);
}

TEST_MAIN(TEST(test_bookkeeping_left_out), TEST(test_leaves_sorted), TEST(test_added_and_removed),
          TEST(test_arrays_and_types), TEST(test_names_escaped), TEST(test_valid_json))
