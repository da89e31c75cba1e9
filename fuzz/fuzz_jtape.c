/* fuzz_jtape: core/jtape.h against jansson, its reference.  The input is
 * any text; jtape_parse() (max_depth 32) and
 * json_loadb(JSON_REJECT_DUPLICATES) both read it.
 *
 * Properties checked on every input, beyond "no crash, leak or UB":
 *  - soundness: where jtape says OK, jansson accepts, and the tape and the
 *    tree agree value by value: kinds, integers, decoded strings (bytes,
 *    json_string_length, code points, jtape_string_eq both ways), member
 *    order and counts, every token's `end`; jtape_get() finds every member
 *    jansson has and no other; jtape_dump() of the root and of every
 *    subtree is json_dumps(JSON_COMPACT | JSON_ENCODE_ANY)'s bytes, and with
 *    JTAPE_DUMP_STRIP_NULLS the dump of a deep copy after
 *    payment_attributes_strip_nulls(); jtape_dump_string() of every decoded
 *    string is jansson's dump of that string; jtape_equal() agrees with
 *    json_equal() on every pair of the root's values (at most 16), within
 *    one tape and against a second tape read from jansson's dump of the
 *    root with its keys sorted (so objects differ in order only);
 *  - liveness (DEFER is not a way out): where jansson accepts a text that
 *    holds nothing jtape.h declines (a real, an integer of more than 18
 *    digits, \u0000, a key with an escape, nesting over 32, an object over
 *    JTAPE_MEMBERS_MAX members), jtape says OK;
 *  - a tape that is not OK holds no tokens, and a tape reused for a second
 *    parse of the same text gives the same tokens. */
#include <jansson.h>

#include "core/jtape.h"
#include "fuzz.h"
#include "payment/validate.h"

#define JTAPE_FUZZ_DEPTH 32     /* max_depth of every parse */
#define JTAPE_FUZZ_PAIRS_MAX 16 /* root values compared pairwise */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

/* The code points of n bytes of valid UTF-8. */
static size_t code_points(const char *s, size_t n)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        count += ((unsigned char)s[i] & 0xc0) != 0x80;
    return count;
}

/* Checks that jtape_dump(flags) of value i is out_expected's bytes. */
static void check_dump_bytes(const struct jtape *t, uint32_t i, unsigned flags,
                             const char *expected)
{
    struct buf out = BUF_INIT;
    FUZZ_CHECK(buf_puts(&out, "prefix") == 0); /* a dump appends */
    FUZZ_CHECK(jtape_dump(t, i, flags, &out) == 0);
    FUZZ_CHECK(out.len >= 6 && memcmp(out.data, "prefix", 6) == 0);
    if (strcmp(out.data + 6, expected) != 0)
        fprintf(stderr, "jtape_dump(%u, %u):\n  %s\njansson:\n  %s\n", i, flags, out.data + 6,
                expected);
    FUZZ_CHECK(strcmp(out.data + 6, expected) == 0);
    buf_free(&out);
}

/* jtape_dump of value i, plain and without nulls, against jansson's. */
static void check_dump(const struct jtape *t, uint32_t i, const json_t *v)
{
    char *expected = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    FUZZ_CHECK(expected != NULL);
    check_dump_bytes(t, i, 0, expected);
    free(expected);

    json_t *copy = json_deep_copy(v);
    FUZZ_CHECK(copy != NULL);
    payment_attributes_strip_nulls(copy);
    expected = json_dumps(copy, JSON_COMPACT | JSON_ENCODE_ANY);
    FUZZ_CHECK(expected != NULL);
    check_dump_bytes(t, i, JTAPE_DUMP_STRIP_NULLS, expected);
    free(expected);
    json_decref(copy);
}

/* String token i against jansson's string s (n bytes). */
static void check_string(const struct jtape *t, uint32_t i, const char *s, size_t n)
{
    const struct jtape_token *tok = &t->tokens[i];
    FUZZ_CHECK(tok->kind == JTAPE_STRING && tok->end == i + 1);
    FUZZ_CHECK(tok->count == code_points(s, n));
    FUZZ_CHECK(tok->escaped == (memchr(t->text + tok->start, '\\', tok->len) != NULL));

    struct buf scratch = BUF_INIT;
    FUZZ_CHECK(buf_puts(&scratch, "ab") == 0); /* the value is appended */
    size_t len = 0;
    const char *got = jtape_string(t, i, &scratch, &len);
    FUZZ_CHECK(got != NULL && len == n && memcmp(got, s, n) == 0);
    if (tok->escaped)
        FUZZ_CHECK(got == scratch.data + 2 && scratch.len == 2 + n && got[n] == '\0');
    else
        FUZZ_CHECK(got == t->text + tok->start && scratch.len == 2);
    buf_free(&scratch);

    FUZZ_CHECK(jtape_string_eq(t, i, s, n));
    if (n > 0)
        FUZZ_CHECK(!jtape_string_eq(t, i, s, n - 1));
    char *longer = malloc(n + 1);
    FUZZ_CHECK(longer != NULL);
    memcpy(longer, s, n);
    longer[n] = 'x';
    FUZZ_CHECK(!jtape_string_eq(t, i, longer, n + 1));
    if (n > 0) {
        longer[n - 1] ^= 0x01; /* same length, last byte differs */
        FUZZ_CHECK(!jtape_string_eq(t, i, longer, n));
    }
    free(longer);

    struct buf out = BUF_INIT;
    FUZZ_CHECK(jtape_dump_string(&out, s, n) == 0);
    json_t *js = json_stringn(s, n);
    FUZZ_CHECK(js != NULL);
    char *expected = json_dumps(js, JSON_ENCODE_ANY);
    FUZZ_CHECK(expected != NULL && strcmp(out.data, expected) == 0);
    free(expected);
    json_decref(js);
    buf_free(&out);
}

/* Value i of the tape against jansson's value v, and every value inside. */
static void check_value(const struct jtape *t, uint32_t i, const json_t *v)
{
    const struct jtape_token *tok = &t->tokens[i];
    FUZZ_CHECK(i < t->count && tok->end > i && tok->end <= t->count);
    switch (tok->kind) {
    case JTAPE_OBJECT: {
        FUZZ_CHECK(json_is_object(v) && tok->count == json_object_size(v));
        FUZZ_CHECK(t->text[tok->start] == '{' && t->text[tok->start + tok->len - 1] == '}');
        uint32_t k = i + 1;
        const char *key;
        size_t key_len;
        json_t *member;
        json_object_keylen_foreach((json_t *)v, key, key_len, member) {
            FUZZ_CHECK(k < tok->end);
            check_string(t, k, key, key_len);
            FUZZ_CHECK(jtape_get(t, i, key, key_len) == k + 1);
            check_value(t, k + 1, member);
            k = t->tokens[k + 1].end;
        }
        FUZZ_CHECK(k == tok->end);
        /* Keys jansson does not hold are not found. */
        static const char *const absent[] = {"", "a", "id", "data", "x\x01"};
        for (size_t a = 0; a < sizeof absent / sizeof absent[0]; a++)
            if (!json_object_getn(v, absent[a], strlen(absent[a])))
                FUZZ_CHECK(jtape_get(t, i, absent[a], strlen(absent[a])) == 0);
        break;
    }
    case JTAPE_ARRAY: {
        FUZZ_CHECK(json_is_array(v) && tok->count == json_array_size(v));
        FUZZ_CHECK(t->text[tok->start] == '[' && t->text[tok->start + tok->len - 1] == ']');
        uint32_t k = i + 1;
        for (size_t n = 0; n < json_array_size(v); n++) {
            FUZZ_CHECK(k < tok->end);
            check_value(t, k, json_array_get(v, n));
            k = t->tokens[k].end;
        }
        FUZZ_CHECK(k == tok->end);
        break;
    }
    case JTAPE_STRING:
        FUZZ_CHECK(json_is_string(v));
        check_string(t, i, json_string_value(v), json_string_length(v));
        break;
    case JTAPE_INTEGER:
        FUZZ_CHECK(json_is_integer(v) && tok->integer == json_integer_value(v));
        FUZZ_CHECK(tok->end == i + 1 && tok->count == 0);
        break;
    case JTAPE_TRUE:
        FUZZ_CHECK(json_is_true(v) && tok->end == i + 1);
        break;
    case JTAPE_FALSE:
        FUZZ_CHECK(json_is_false(v) && tok->end == i + 1);
        break;
    case JTAPE_NULL:
        FUZZ_CHECK(json_is_null(v) && tok->end == i + 1);
        break;
    default:
        FUZZ_CHECK(!"a known kind");
    }
    check_dump(t, i, v);
}

/* The root's values (an object's member values, an array's items), at most
 * JTAPE_FUZZ_PAIRS_MAX, as tokens and as jansson values. */
static size_t root_values(const struct jtape *t, const json_t *root, uint32_t *tokens,
                          const json_t **values)
{
    size_t n = 0;
    uint32_t end = t->tokens[0].end;
    if (json_is_object(root)) {
        const char *key;
        json_t *member;
        uint32_t k = 1;
        json_object_foreach((json_t *)root, key, member) {
            if (n == JTAPE_FUZZ_PAIRS_MAX || k >= end)
                break;
            tokens[n] = k + 1;
            values[n++] = member;
            k = t->tokens[k + 1].end;
        }
    } else {
        uint32_t k = 1;
        for (size_t a = 0; a < json_array_size(root) && n < JTAPE_FUZZ_PAIRS_MAX; a++) {
            tokens[n] = k;
            values[n++] = json_array_get(root, a);
            k = t->tokens[k].end;
        }
    }
    return n;
}

/* jtape_equal against json_equal: the root's values pairwise within the
 * tape, and against a tape of the same root with its keys sorted. */
static void check_equal(const struct jtape *t, const json_t *root)
{
    char *sorted = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    FUZZ_CHECK(sorted != NULL);
    struct jtape u = JTAPE_INIT;
    FUZZ_CHECK(jtape_parse(&u, sorted, strlen(sorted), JTAPE_FUZZ_DEPTH) == JTAPE_OK);
    FUZZ_CHECK(jtape_equal(t, 0, &u, 0) && jtape_equal(&u, 0, t, 0));

    json_t *root_sorted = json_loadb(sorted, strlen(sorted), JSON_REJECT_DUPLICATES, NULL);
    FUZZ_CHECK(root_sorted != NULL);
    uint32_t ta[JTAPE_FUZZ_PAIRS_MAX], ua[JTAPE_FUZZ_PAIRS_MAX];
    const json_t *tv[JTAPE_FUZZ_PAIRS_MAX], *uv[JTAPE_FUZZ_PAIRS_MAX];
    size_t tn = root_values(t, root, ta, tv);
    size_t un = root_values(&u, root_sorted, ua, uv);
    for (size_t a = 0; a < tn; a++) {
        for (size_t b = 0; b < tn; b++)
            FUZZ_CHECK(jtape_equal(t, ta[a], t, ta[b]) == json_equal(tv[a], tv[b]));
        for (size_t b = 0; b < un; b++)
            FUZZ_CHECK(jtape_equal(t, ta[a], &u, ua[b]) == json_equal(tv[a], uv[b]));
    }
    json_decref(root_sorted);
    jtape_free(&u);
    free(sorted);
}

/* Whether text (which jansson accepted) holds a key with an escape: a
 * string followed by ':' with a backslash inside. */
static int has_escaped_key(const uint8_t *text, size_t size)
{
    for (size_t i = 0; i < size; i++) {
        if (text[i] != '"')
            continue;
        int escaped = 0;
        for (i++; i < size && text[i] != '"'; i++) {
            if (text[i] == '\\') {
                escaped = 1;
                i++;
            }
        }
        size_t j = i + 1;
        while (j < size && (text[j] == ' ' || text[j] == '\t' || text[j] == '\n' || text[j] == '\r'))
            j++;
        if (escaped && j < size && text[j] == ':')
            return 1;
    }
    return 0;
}

/* Whether value v (at nesting level depth) holds what jtape.h declines. */
static int declined_value(const json_t *v, int depth)
{
    if (depth > JTAPE_FUZZ_DEPTH)
        return 1;
    switch (json_typeof(v)) {
    case JSON_REAL:
        return 1;
    case JSON_INTEGER: {
        json_int_t n = json_integer_value(v);
        return n >= INT64_C(1000000000000000000) || n <= -INT64_C(1000000000000000000);
    }
    case JSON_STRING:
        return strlen(json_string_value(v)) != json_string_length(v); /* \u0000 */
    case JSON_ARRAY:
        for (size_t i = 0; i < json_array_size(v); i++)
            if (declined_value(json_array_get(v, i), depth + 1))
                return 1;
        return 0;
    case JSON_OBJECT: {
        if (json_object_size(v) > JTAPE_MEMBERS_MAX)
            return 1;
        const char *key;
        json_t *member;
        json_object_foreach((json_t *)v, key, member) {
            if (declined_value(member, depth + 1))
                return 1;
        }
        return 0;
    }
    default:
        return 0;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct jtape tape = JTAPE_INIT; /* reused, as a server thread does */
    const char *text = (const char *)data;
    int rc = jtape_parse(&tape, text, size, JTAPE_FUZZ_DEPTH);
    FUZZ_CHECK(rc == JTAPE_OK || rc == JTAPE_DEFER);
    json_error_t error;
    json_t *root = json_loadb(text, size, JSON_REJECT_DUPLICATES, &error);

    if (rc != JTAPE_OK) {
        FUZZ_CHECK(tape.count == 0);
        if (root && !declined_value(root, 1) && !has_escaped_key(data, size)) {
            fprintf(stderr, "jansson accepts and nothing is declined, but jtape defers\n");
            FUZZ_CHECK(!"liveness");
        }
        json_decref(root);
        return 0;
    }
    if (!root)
        fprintf(stderr, "jtape OK where jansson refuses: %s\n", error.text);
    FUZZ_CHECK(root != NULL);
    FUZZ_CHECK(tape.count > 0 && tape.tokens[0].end == tape.count);
    FUZZ_CHECK(tape.text == text && tape.text_len == size);
    check_value(&tape, 0, root);
    check_equal(&tape, root);

    /* A second parse into the used tape gives the same tokens. */
    struct jtape again = JTAPE_INIT;
    FUZZ_CHECK(jtape_parse(&again, text, size, JTAPE_FUZZ_DEPTH) == JTAPE_OK);
    FUZZ_CHECK(jtape_parse(&tape, text, size, JTAPE_FUZZ_DEPTH) == JTAPE_OK);
    FUZZ_CHECK(again.count == tape.count);
    for (uint32_t i = 0; i < tape.count; i++) {
        const struct jtape_token *a = &again.tokens[i], *b = &tape.tokens[i];
        FUZZ_CHECK(a->kind == b->kind && a->escaped == b->escaped && a->start == b->start &&
                   a->len == b->len && a->end == b->end && a->count == b->count &&
                   a->integer == b->integer);
    }
    jtape_free(&again);
    json_decref(root);
    return 0;
}
