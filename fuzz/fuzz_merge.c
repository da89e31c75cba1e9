/* fuzz_merge: merge_patch() (RFC 7396) on two JSON documents.
 *
 * Input format: TARGET 0xFF PATCH.  A 0xFF byte never occurs in UTF-8, so
 * it cannot be part of either document.  Each side is any JSON value,
 * parsed by jansson (NUL allowed in strings); an input without 0xFF, or
 * where either side does not parse, is skipped.
 *
 * Properties checked, beyond "no crash, leak or UB":
 *  - the result equals that of a direct transcription of the RFC's
 *    MergePatch pseudo-code (merge_reference below);
 *  - neither argument is changed, and the result shares no object or array
 *    with either: clearing every container of the result leaves both intact;
 *  - applying the patch twice gives what applying it once gives;
 *  - a patch that is not an object replaces the target entirely.
 * LLVMFuzzerInitialize also checks the examples of RFC 7396 appendix A. */
#include <jansson.h>

#include "fuzz.h"
#include "payment/merge.h"

/* RFC 7396 section 2, word for word:
 *   define MergePatch(Target, Patch):
 *     if Patch is an Object:
 *       if Target is not an Object:
 *         Target = {} # Ignore the contents and set it to an empty Object
 *       for each Name/Value pair in Patch:
 *         if Value is null:
 *           if Name exists in Target:
 *             remove the Name/Value pair from Target
 *         else:
 *           Target[Name] = MergePatch(Target[Name], Value)
 *       return Target
 *     else:
 *       return Patch
 * target may be NULL (absent).  Returns a new reference. */
static json_t *merge_reference(const json_t *target, const json_t *patch)
{
    if (!json_is_object(patch))
        return json_deep_copy(patch);
    json_t *result = json_is_object(target) ? json_deep_copy(target) : json_object();
    FUZZ_CHECK(result != NULL);
    const char *name;
    size_t name_len;
    json_t *value;
    json_object_keylen_foreach((json_t *)patch, name, name_len, value) {
        if (json_is_null(value)) {
            (void)json_object_deln(result, name, name_len);
        } else {
            json_t *merged = merge_reference(json_object_getn(result, name, name_len), value);
            FUZZ_CHECK(merged && json_object_setn_new(result, name, name_len, merged) == 0);
        }
    }
    return result;
}

/* Empties every object and array inside v, deepest first. */
static void merge_clear_all(json_t *v)
{
    if (json_is_object(v)) {
        const char *key;
        json_t *member;
        json_object_foreach(v, key, member)
            merge_clear_all(member);
        json_object_clear(v);
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            merge_clear_all(json_array_get(v, i));
        json_array_clear(v);
    }
}

/* Whether v is a container, so that sharing it would matter. */
static int merge_is_container(const json_t *v)
{
    return json_is_object(v) || json_is_array(v);
}

static void merge_check(const json_t *target, const json_t *patch)
{
    json_t *target_copy = json_deep_copy(target), *patch_copy = json_deep_copy(patch);
    FUZZ_CHECK(target_copy && patch_copy);

    json_t *result = merge_patch(target, patch);
    FUZZ_CHECK(result != NULL);
    FUZZ_CHECK(json_equal(target, target_copy));
    FUZZ_CHECK(json_equal(patch, patch_copy));

    json_t *expected = merge_reference(target, patch);
    if (!json_equal(result, expected)) {
        char *r = json_dumps(result, JSON_ENCODE_ANY | JSON_COMPACT);
        char *e = json_dumps(expected, JSON_ENCODE_ANY | JSON_COMPACT);
        fprintf(stderr, "merge_patch gave %s, RFC 7396 gives %s\n", r ? r : "?", e ? e : "?");
        free(r);
        free(e);
    }
    FUZZ_CHECK(json_equal(result, expected));
    if (!json_is_object(patch))
        FUZZ_CHECK(json_equal(result, patch));

    json_t *twice = merge_patch(result, patch);
    FUZZ_CHECK(twice != NULL && json_equal(twice, result));

    /* No container of the result belongs to an argument. */
    FUZZ_CHECK(!merge_is_container(result) || (result != target && result != patch));
    merge_clear_all(result);
    FUZZ_CHECK(json_equal(target, target_copy));
    FUZZ_CHECK(json_equal(patch, patch_copy));

    json_decref(twice);
    json_decref(expected);
    json_decref(result);
    json_decref(patch_copy);
    json_decref(target_copy);
}

static json_t *merge_parse(const char *s, size_t len)
{
    return json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
}

/* RFC 7396 appendix A: target, patch, result. */
static const char *const merge_rfc_examples[][3] = {
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
    /* Section 3's example. */
    {"{\"title\":\"Goodbye!\",\"author\":{\"givenName\":\"John\",\"familyName\":\"Doe\"},"
     "\"tags\":[\"example\",\"sample\"],\"content\":\"This will be unchanged\"}",
     "{\"title\":\"Hello!\",\"phoneNumber\":\"+01-123-456-7890\",\"author\":{\"familyName\":null},"
     "\"tags\":[\"example\"]}",
     "{\"title\":\"Hello!\",\"author\":{\"givenName\":\"John\"},\"tags\":[\"example\"],"
     "\"content\":\"This will be unchanged\",\"phoneNumber\":\"+01-123-456-7890\"}"},
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    json_object_seed(0x7061796d); /* the same hash layout on every run */
    for (size_t i = 0; i < sizeof merge_rfc_examples / sizeof merge_rfc_examples[0]; i++) {
        json_t *t = merge_parse(merge_rfc_examples[i][0], strlen(merge_rfc_examples[i][0]));
        json_t *p = merge_parse(merge_rfc_examples[i][1], strlen(merge_rfc_examples[i][1]));
        json_t *want = merge_parse(merge_rfc_examples[i][2], strlen(merge_rfc_examples[i][2]));
        FUZZ_CHECK(t && p && want);
        json_t *got = merge_patch(t, p);
        if (!json_equal(got, want))
            fprintf(stderr, "RFC 7396 example %zu fails\n", i + 1);
        FUZZ_CHECK(json_equal(got, want));
        merge_check(t, p);
        json_decref(got);
        json_decref(want);
        json_decref(p);
        json_decref(t);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *split = memchr(data, 0xFF, size);
    if (!split)
        return 0;
    size_t target_len = (size_t)(split - data);
    json_t *target = merge_parse((const char *)data, target_len);
    json_t *patch = target ? merge_parse((const char *)split + 1, size - target_len - 1) : NULL;
    if (target && patch)
        merge_check(target, patch);
    json_decref(patch);
    json_decref(target);
    return 0;
}
