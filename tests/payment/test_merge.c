#include "payment/merge.h"

#include <stdlib.h>

#include "test.h"

static json_t *parse(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &err);
    if (!v)
        fprintf(stderr, "  bad test JSON %s: %s\n", text, err.text);
    return v;
}

static char *dump(const json_t *v)
{
    return json_dumps(v, JSON_ENCODE_ANY | JSON_SORT_KEYS | JSON_COMPACT);
}

/* RFC 7396, appendix A, row by row. */
static const struct {
    const char *target;
    const char *patch;
    const char *result;
} rfc_cases[] = {
    {"{\"a\":\"b\"}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
    {"{\"a\":\"b\"}", "{\"b\":\"c\"}", "{\"a\":\"b\",\"b\":\"c\"}"},
    {"{\"a\":\"b\"}", "{\"a\":null}", "{}"},
    {"{\"a\":\"b\",\"b\":\"c\"}", "{\"a\":null}", "{\"b\":\"c\"}"},
    {"{\"a\":[\"b\"]}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
    {"{\"a\":\"c\"}", "{\"a\":[\"b\"]}", "{\"a\":[\"b\"]}"},
    {"{\"a\":{\"b\":\"c\"}}", "{\"a\":{\"b\":\"d\",\"c\":null}}", "{\"a\":{\"b\":\"d\"}}"},
    {"{\"a\":[{\"b\":\"c\"}]}", "{\"a\":[1]}", "{\"a\":[1]}"},
    {"[\"a\",\"b\"]", "[\"c\",\"d\"]", "[\"c\",\"d\"]"},
    {"{\"a\":\"b\"}", "[\"c\"]", "[\"c\"]"},
    {"{\"a\":\"foo\"}", "null", "null"},
    {"{\"a\":\"foo\"}", "\"bar\"", "\"bar\""},
    {"{\"e\":null}", "{\"a\":1}", "{\"e\":null,\"a\":1}"},
    {"[1,2]", "{\"a\":\"b\",\"c\":null}", "{\"a\":\"b\"}"},
    {"{}", "{\"a\":{\"bb\":{\"ccc\":null}}}", "{\"a\":{\"bb\":{}}}"},
    /* RFC 7396 section 3's example. */
    {"{\"title\":\"Goodbye!\",\"author\":{\"givenName\":\"John\",\"familyName\":\"Doe\"},"
     "\"tags\":[\"example\",\"sample\"],\"content\":\"This will be unchanged\"}",
     "{\"title\":\"Hello!\",\"phoneNumber\":\"+01-123-456-7890\","
     "\"author\":{\"familyName\":null},\"tags\":[\"example\"]}",
     "{\"title\":\"Hello!\",\"author\":{\"givenName\":\"John\"},\"tags\":[\"example\"],"
     "\"content\":\"This will be unchanged\",\"phoneNumber\":\"+01-123-456-7890\"}"},
    /* Nested: a member merged into a non-object target member. */
    {"{\"a\":1}", "{\"a\":{\"b\":{\"c\":2}}}", "{\"a\":{\"b\":{\"c\":2}}}"},
    {"{\"a\":{\"x\":1,\"y\":{\"z\":2}}}", "{\"a\":{\"y\":{\"w\":3}}}",
     "{\"a\":{\"x\":1,\"y\":{\"z\":2,\"w\":3}}}"},
    {"{\"a\":1}", "{}", "{\"a\":1}"},
};

static void test_rfc7396_appendix_a(void)
{
    for (size_t i = 0; i < sizeof rfc_cases / sizeof rfc_cases[0]; i++) {
        json_t *target = parse(rfc_cases[i].target);
        json_t *patch = parse(rfc_cases[i].patch);
        json_t *expect = parse(rfc_cases[i].result);
        CHECK(target && patch && expect);
        json_t *got = merge_patch(target, patch);
        CHECK(got != NULL);
        if (got && expect && !json_equal(got, expect)) {
            char *text = dump(got);
            fprintf(stderr, "  case %zu: merge(%s, %s) == %s, expected %s\n", i,
                    rfc_cases[i].target, rfc_cases[i].patch, text ? text : "?",
                    rfc_cases[i].result);
            free(text);
            test_failures++;
        }
        json_decref(got);
        json_decref(target);
        json_decref(patch);
        json_decref(expect);
    }
}

/* Neither argument changes, and the result shares nothing with them: the
 * caller may edit it without touching the stored document. */
static void test_inputs_untouched(void)
{
    json_t *target = parse("{\"a\":{\"b\":\"c\",\"d\":[1,{\"e\":2}]},\"f\":\"g\",\"h\":{\"i\":1}}");
    json_t *patch = parse("{\"a\":{\"b\":null,\"x\":{\"y\":null,\"z\":1}},\"f\":null,"
                          "\"k\":[{\"n\":null}]}");
    CHECK(target && patch);
    char *target_before = dump(target);
    char *patch_before = dump(patch);

    json_t *got = merge_patch(target, patch);
    CHECK(got != NULL);
    json_t *expect = parse("{\"a\":{\"d\":[1,{\"e\":2}],\"x\":{\"z\":1}},\"h\":{\"i\":1},"
                           "\"k\":[{\"n\":null}]}");
    CHECK(got && expect && json_equal(got, expect));

    /* Editing the result in depth leaves both inputs as they were. */
    CHECK_INT(json_object_set_new(json_object_get(got, "h"), "i", json_integer(99)), 0);
    CHECK_INT(json_array_clear(json_object_get(json_object_get(got, "a"), "d")), 0);
    CHECK_INT(json_object_clear(json_array_get(json_object_get(got, "k"), 0)), 0);

    char *target_after = dump(target);
    char *patch_after = dump(patch);
    CHECK_STR(target_after, target_before);
    CHECK_STR(patch_after, patch_before);

    /* A non-object patch gives a copy, not the patch itself. */
    json_t *copy = merge_patch(target, json_object_get(patch, "k"));
    CHECK(copy != NULL && copy != json_object_get(patch, "k"));
    CHECK(json_equal(copy, json_object_get(patch, "k")));

    free(target_before);
    free(patch_before);
    free(target_after);
    free(patch_after);
    json_decref(copy);
    json_decref(expect);
    json_decref(got);
    json_decref(target);
    json_decref(patch);
}

TEST_MAIN(TEST(test_rfc7396_appendix_a), TEST(test_inputs_untouched))
