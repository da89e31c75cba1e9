/* test_jtape: core/jtape.h, the strict JSON tape.  Each case states one
 * behaviour; where it is jansson's, jansson itself gives the expected bytes
 * (fuzz/fuzz_jtape.c checks the same on any input). */
#include "core/jtape.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

#define DEPTH 32

/* Parses a C string literal (its bytes, without the terminating NUL). */
#define PARSE(t, lit) jtape_parse((t), (lit), sizeof(lit) - 1, DEPTH)

/* jtape_dump(flags) of value i, as a heap string. */
static char *dump(const struct jtape *t, uint32_t i, unsigned flags)
{
    struct buf b = BUF_INIT;
    if (jtape_dump(t, i, flags, &b) != 0)
        return NULL;
    if (!b.data)
        return strdup("");
    return b.data;
}

/* jansson's json_dumps(JSON_COMPACT) of the text, as a heap string. */
static char *jansson_dump(const char *text, size_t len)
{
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
    if (!root)
        return NULL;
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return s;
}

static void test_layout(void)
{
    struct jtape t = JTAPE_INIT;
    static const char text[] = " {\"a\": [1, \"x\", true], \"b\": {}, \"c\": null} ";
    CHECK_INT(PARSE(&t, text), JTAPE_OK);
    CHECK_INT(t.count, 10);
    CHECK(t.text == text && t.text_len == sizeof text - 1);
    const struct jtape_token *k = t.tokens;
    CHECK_INT(k[0].kind, JTAPE_OBJECT);
    CHECK_INT(k[0].count, 3);
    CHECK_INT(k[0].end, 10);
    CHECK_INT(k[0].start, 1);
    CHECK_INT(k[0].len, sizeof text - 3); /* bracket to bracket */
    CHECK_INT(k[1].kind, JTAPE_STRING);    /* key "a" */
    CHECK_INT(k[1].start, 3);
    CHECK_INT(k[1].len, 1);
    CHECK_INT(k[2].kind, JTAPE_ARRAY);
    CHECK_INT(k[2].count, 3);
    CHECK_INT(k[2].end, 6);
    CHECK_INT(k[3].kind, JTAPE_INTEGER);
    CHECK_INT(k[3].integer, 1);
    CHECK_INT(k[4].kind, JTAPE_STRING);
    CHECK_INT(k[4].count, 1);
    CHECK_INT(k[5].kind, JTAPE_TRUE);
    CHECK_INT(k[7].kind, JTAPE_OBJECT);
    CHECK_INT(k[7].count, 0);
    CHECK_INT(k[7].end, 8);
    CHECK_INT(k[9].kind, JTAPE_NULL);

    /* The header's iteration idioms. */
    int members = 0, items = 0;
    for (uint32_t m = 1; m < k[0].end; m = k[m + 1].end)
        members++;
    for (uint32_t i = 3; i < k[2].end; i = k[i].end)
        items++;
    CHECK_INT(members, 3);
    CHECK_INT(items, 3);
    jtape_free(&t);
    CHECK(t.tokens == NULL && t.count == 0 && t.cap == 0);
}

/* Every text here is refused by jansson or declined by jtape. */
static void test_defers(void)
{
    static const struct {
        const char *text;
        size_t len;
    } cases[] = {
#define C(s) {s, sizeof(s) - 1}
        C(""), C("   "), C("1"), C("\"x\""), C("true"), C("\xef\xbb\xbf[1]"), C("[1]\0"),
        C("[1] x"), C("[1]]"), C("[1,]"), C("{\"a\":1,}"), C("[,1]"), C("{\"a\" 1}"), C("{1:1}"),
        C("[01]"), C("[-]"), C("[-01]"), C("[1.]"), C("[1.5]"), C("[1e5]"), C("[1E5]"),
        C("[1234567890123456789]"), C("[truex]"), C("[nul]"), C("[True]"), C("[\"a\tb\"]"),
        C("[\"a\x1f\"]"), C("[\"a\0b\"]"), C("[\"\\x\"]"), C("[\"\\u12\"]"), C("[\"\\u12g4\"]"),
        C("[\"\\u0000\"]"), C("[\"\\ud83d\"]"), C("[\"\\ude00\"]"), C("[\"\\ud83d\\u0041\"]"),
        C("[\"\\ud83d\\ud83d\"]"), C("[\"\\ud83dx\"]"), C("[\"\xc0\x80\"]"), C("[\"\xe0\x80\x80\"]"),
        C("[\"\xed\xa0\x80\"]"), C("[\"\xf4\x90\x80\x80\"]"), C("[\"\xff\"]"), C("[\"\xe2\x82\"]"),
        C("[\"abc"), C("{\"a\":1,\"a\":2}"), C("{\"\\u0061\":1}"), C("[1 2]"), C("{\"a\":}"),
        C("[\v1]"), C("[\f1]"),
        /* The same inside strings long enough for the sixteen-byte scan. */
        C("[\"abcdefghijklmn\topqrstuvwxyz\"]"), C("[\"abcdefghijklmn\x01opqrstuvwxyz\"]"),
        C("[\"abcdefghijklmn\x1fopqrstuvwxyz\"]"), C("[\"abcdefghijklmn\xffopqrstuvwxyz\"]"),
        C("[\"abcdefghijklmn\xed\xa0\x80opqrstuvwxyz\"]"), C("[\"abcdefghijklmn\\uD800opqrstuvwxyz\"]"),
        C("[\"abcdefghijklmnopqrstuvwxyz"),
#undef C
    };
    struct jtape t = JTAPE_INIT;
    CHECK_INT(PARSE(&t, "[1,2,3]"), JTAPE_OK);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = jtape_parse(&t, cases[i].text, cases[i].len, DEPTH);
        if (rc != JTAPE_DEFER)
            fprintf(stderr, "  case %zu \"%s\" gave %d\n", i, cases[i].text, rc);
        CHECK_INT(rc, JTAPE_DEFER);
        CHECK_INT(t.count, 0); /* a failed parse leaves no tokens */
    }
    jtape_free(&t);
}

static void test_integers(void)
{
    struct jtape t = JTAPE_INIT;
    CHECK_INT(PARSE(&t, "[0,-0,-1,999999999999999999,-999999999999999999,42]"), JTAPE_OK);
    CHECK_INT(t.tokens[1].integer, 0);
    CHECK_INT(t.tokens[2].integer, 0);
    CHECK_INT(t.tokens[2].len, 2);
    CHECK_INT(t.tokens[3].integer, -1);
    CHECK(t.tokens[4].integer == INT64_C(999999999999999999));
    CHECK(t.tokens[5].integer == -INT64_C(999999999999999999));
    char *d = dump(&t, 0, 0);
    CHECK_STR(d, "[0,0,-1,999999999999999999,-999999999999999999,42]"); /* "-0" is 0 */
    free(d);
    jtape_free(&t);
}

/* jansson skips one NUL right after a number or a literal (it reads one
 * byte past them and drops a NUL it puts back); jtape reads the same. */
static void test_nul_after_scalar(void)
{
    struct jtape t = JTAPE_INIT;
    static const char text[] = "{\"a\":[1\0,true\0,false\0,null\0,-0\0 ],\"b\":2\0}";
    CHECK_INT(PARSE(&t, text), JTAPE_OK);
    CHECK_INT(t.count, 10);
    char *got = dump(&t, 0, 0), *want = jansson_dump(text, sizeof text - 1);
    CHECK_STR(got, "{\"a\":[1,true,false,null,0],\"b\":2}");
    CHECK_STR(got, want);
    free(got);
    free(want);
    CHECK_INT(PARSE(&t, "[1\0\0]"), JTAPE_DEFER);
    CHECK_INT(PARSE(&t, "[1 \0]"), JTAPE_DEFER);
    CHECK_INT(PARSE(&t, "[\"a\"\0]"), JTAPE_DEFER);
    CHECK_INT(PARSE(&t, "[[]\0]"), JTAPE_DEFER);
    CHECK_INT(PARSE(&t, "[1]\0"), JTAPE_DEFER);
    jtape_free(&t);
}

static void test_depth(void)
{
    char text[2 * 65];
    struct jtape t = JTAPE_INIT;
    for (int n = 1; n <= 64; n++) {
        memset(text, '[', (size_t)n);
        memset(text + n, ']', (size_t)n);
        CHECK_INT(jtape_parse(&t, text, 2 * (size_t)n, 5), n <= 5 ? JTAPE_OK : JTAPE_DEFER);
        CHECK_INT(jtape_parse(&t, text, 2 * (size_t)n, 64), JTAPE_OK);
    }
    jtape_free(&t);
}

static void test_members_max(void)
{
    struct buf text = BUF_INIT;
    struct jtape t = JTAPE_INIT;
    CHECK_INT(buf_puts(&text, "{"), 0);
    for (int i = 0; i < JTAPE_MEMBERS_MAX + 1; i++) {
        if (i == JTAPE_MEMBERS_MAX) {
            CHECK_INT(buf_puts(&text, "}"), 0);
            CHECK_INT(jtape_parse(&t, text.data, text.len, DEPTH), JTAPE_OK);
            CHECK_INT(t.count, 2 * JTAPE_MEMBERS_MAX + 1);
            if (t.count) {
                CHECK_INT(t.tokens[0].count, JTAPE_MEMBERS_MAX);
                CHECK_INT(jtape_get(&t, 0, "k255", 4), t.count - 1);
            }
            text.len--;
        }
        CHECK_INT(buf_printf(&text, "%s\"k%d\":%d", i ? "," : "", i, i), 0);
    }
    CHECK_INT(buf_puts(&text, "}"), 0);
    CHECK_INT(jtape_parse(&t, text.data, text.len, DEPTH), JTAPE_DEFER);
    buf_free(&text);
    jtape_free(&t);
}

/* Duplicate keys are refused in small and large objects (where the key
 * filter is crowded and distinct keys share bits), and only within one
 * object. */
static void test_duplicate_keys(void)
{
    struct buf text = BUF_INIT;
    struct jtape t = JTAPE_INIT;
    for (int members = 2; members <= 100; members += 7) {
        for (int dup = 0; dup < 2; dup++) {
            buf_reset(&text);
            CHECK_INT(buf_puts(&text, "{"), 0);
            for (int i = 0; i < members; i++)
                CHECK_INT(buf_printf(&text, "%s\"key%d\":{\"key%d\":1}", i ? "," : "", i,
                                     dup && i == members - 1 ? members / 2 : i),
                          0);
            if (dup)
                CHECK_INT(buf_printf(&text, ",\"key%d\":0", members / 3), 0);
            CHECK_INT(buf_puts(&text, "}"), 0);
            CHECK_INT(jtape_parse(&t, text.data, text.len, DEPTH), dup ? JTAPE_DEFER : JTAPE_OK);
        }
    }
    /* Same length, different bytes; a key that is a prefix of another. */
    CHECK_INT(PARSE(&t, "{\"ab\":1,\"ba\":2,\"a\":3,\"abc\":4}"), JTAPE_OK);
    buf_free(&text);
    jtape_free(&t);
}

static void test_get(void)
{
    struct jtape t = JTAPE_INIT;
    CHECK_INT(PARSE(&t, "{\"data\":{\"id\":\"x\",\"i\":1,\"\":2},\"id\":3}"), JTAPE_OK);
    uint32_t data = jtape_get(&t, 0, "data", 4);
    CHECK_INT(data, 2);
    CHECK_INT(jtape_get(&t, data, "id", 2), 4);
    CHECK_INT(jtape_get(&t, data, "i", 1), 6);
    CHECK_INT(jtape_get(&t, data, "", 0), 8);
    CHECK_INT(jtape_get(&t, 0, "id", 2), 10);
    CHECK_INT(jtape_get(&t, 0, "i", 1), 0);
    CHECK_INT(jtape_get(&t, 0, "idx", 3), 0);
    CHECK_INT(jtape_get(&t, data, "data", 4), 0);
    jtape_free(&t);
}

static void test_strings(void)
{
    struct jtape t = JTAPE_INIT;
    static const char text[] =
        "[\"plain \xc3\xa9\",\"a\\n\\u00e9\\ud83d\\ude00\\/\\\"\",\"\",\"\\u2028\"]";
    CHECK_INT(PARSE(&t, text), JTAPE_OK);
    struct buf scratch = BUF_INIT;
    size_t len = 0;

    const char *s = jtape_string(&t, 1, &scratch, &len);
    CHECK(s == text + 2); /* no escape: the text itself */
    CHECK_INT(len, 8);
    CHECK_INT(t.tokens[1].count, 7);
    CHECK_INT(t.tokens[1].escaped, 0);
    CHECK(scratch.data == NULL);

    CHECK_INT(buf_puts(&scratch, "keep"), 0);
    s = jtape_string(&t, 2, &scratch, &len);
    static const char decoded[] = "a\n\xc3\xa9\xf0\x9f\x98\x80/\"";
    CHECK(s == scratch.data + 4);
    CHECK_INT(len, sizeof decoded - 1);
    CHECK(s && memcmp(s, decoded, len) == 0 && s[len] == '\0');
    CHECK(memcmp(scratch.data, "keep", 4) == 0);
    CHECK_INT(t.tokens[2].count, 6);
    CHECK_INT(t.tokens[2].escaped, 1);

    CHECK(jtape_string_eq(&t, 2, decoded, sizeof decoded - 1));
    CHECK(!jtape_string_eq(&t, 2, decoded, sizeof decoded - 2));
    CHECK(!jtape_string_eq(&t, 2, "a\n\xc3\xa9\xf0\x9f\x98\x80/'", sizeof decoded - 1));
    CHECK(jtape_string_eq(&t, 1, "plain \xc3\xa9", 8));
    CHECK(!jtape_string_eq(&t, 1, "plain e", 7));
    CHECK(jtape_string_eq(&t, 3, "", 0));
    CHECK(jtape_string_eq(&t, 4, "\xe2\x80\xa8", 3));
    buf_free(&scratch);
    jtape_free(&t);
}

/* jtape_dump writes what jansson writes: its escapes, and compact form. */
static void test_dump_as_jansson(void)
{
    static const struct {
        const char *text;
        size_t len;
    } cases[] = {
#define C(s) {s, sizeof(s) - 1}
        C("[\"\\u0001\\u001f\\u001F\\b\\f\\n\\r\\t\\u0008\\u000b\\u007f\\u0080\"]"),
        C("[\"\x7f \xe2\x80\xa8 \xe2\x80\xa9 / \\/ \\\" \\\\ \\u0022 \\u005c\"]"),
        C("[\"\\u00e9\\u00E9\\uFFFF\\ud800\\udc00\\uDBFF\\uDFFF\"]"),
        C(" { \"a\" : [ 1 , -0 , { } , [ ] , true , false , null ] ,\n\t\"b\" : \"c\" } "),
        C("{\"\xc3\xa9\":\"\xf0\x9f\x98\x80\"}"),
#undef C
    };
    struct jtape t = JTAPE_INIT;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_INT(jtape_parse(&t, cases[i].text, cases[i].len, DEPTH), JTAPE_OK);
        char *got = dump(&t, 0, 0), *want = jansson_dump(cases[i].text, cases[i].len);
        CHECK_STR(got, want);
        free(got);
        free(want);
    }
    /* The escapes, spelled out. */
    CHECK_INT(PARSE(&t, "[\"\\u0001\\u001f\\b\\u000b\\u007f\\/\"]"), JTAPE_OK);
    char *got = dump(&t, 0, 0);
    CHECK_STR(got, "[\"\\u0001\\u001F\\b\\u000B\x7f/\"]");
    free(got);
    jtape_free(&t);
}

static void test_dump_appends_subtrees(void)
{
    struct jtape t = JTAPE_INIT;
    CHECK_INT(PARSE(&t, "{\"a\": {\"b\": [1, \"x\\ty\"]}, \"c\": -0}"), JTAPE_OK);
    struct buf out = BUF_INIT;
    CHECK_INT(buf_puts(&out, "<"), 0);
    CHECK_INT(jtape_dump(&t, jtape_get(&t, 0, "a", 1), 0, &out), 0);
    CHECK_INT(jtape_dump(&t, jtape_get(&t, 0, "c", 1), 0, &out), 0);
    CHECK_INT(jtape_dump(&t, 1, 0, &out), 0); /* a key is a string */
    CHECK_STR(out.data, "<{\"b\":[1,\"x\\ty\"]}0\"a\"");
    CHECK_INT(out.len, strlen(out.data));
    buf_free(&out);
    jtape_free(&t);
}

static void test_dump_strip_nulls(void)
{
    struct jtape t = JTAPE_INIT;
    CHECK_INT(PARSE(&t, "{\"a\":null,\"b\":[null,{\"c\":null,\"d\":1,\"e\":null}],"
                        "\"f\":{\"g\":null},\"h\":null}"),
              JTAPE_OK);
    char *got = dump(&t, 0, JTAPE_DUMP_STRIP_NULLS);
    CHECK_STR(got, "{\"b\":[null,{\"d\":1}],\"f\":{}}");
    free(got);
    got = dump(&t, 0, 0);
    CHECK_STR(got, "{\"a\":null,\"b\":[null,{\"c\":null,\"d\":1,\"e\":null}],\"f\":{\"g\":null},"
                   "\"h\":null}");
    free(got);
    CHECK_INT(PARSE(&t, "[null]"), JTAPE_OK);
    got = dump(&t, 0, JTAPE_DUMP_STRIP_NULLS);
    CHECK_STR(got, "[null]");
    free(got);
    jtape_free(&t);
}

static void test_dump_string(void)
{
    struct buf out = BUF_INIT;
    static const char s[] = "a\"b\\c\x01\x1f\b\t\n\f\r\x7f/\xe2\x80\xa8";
    CHECK_INT(jtape_dump_string(&out, s, sizeof s - 1), 0);
    json_t *js = json_stringn(s, sizeof s - 1);
    char *want = json_dumps(js, JSON_ENCODE_ANY);
    CHECK_STR(out.data, want);
    CHECK_STR(out.data, "\"a\\\"b\\\\c\\u0001\\u001F\\b\\t\\n\\f\\r\x7f/\xe2\x80\xa8\"");
    free(want);
    json_decref(js);
    buf_reset(&out);
    CHECK_INT(jtape_dump_string(&out, "", 0), 0);
    CHECK_STR(out.data, "\"\"");
    buf_free(&out);
}

static void test_equal(void)
{
    struct jtape a = JTAPE_INIT, b = JTAPE_INIT;
    CHECK_INT(PARSE(&a, "[{\"x\":1,\"y\":[1,2],\"z\":\"\xc3\xa9\"},[1,2],\"\xc3\xa9\",1,true,null,{}]"),
              JTAPE_OK);
    CHECK_INT(PARSE(&b, "[{\"z\":\"\\u00e9\",\"y\":[1,2],\"x\":1},[2,1],\"\\u00E9\",-0,false,null,[]]"),
              JTAPE_OK);
    uint32_t ia = 1, ib = 1;
    static const int want[] = {1, 0, 1, 0, 0, 1, 0}; /* member order does not matter, item order does */
    for (int n = 0; n < 7; n++, ia = a.tokens[ia].end, ib = b.tokens[ib].end) {
        CHECK_INT(jtape_equal(&a, ia, &b, ib), want[n]);
        CHECK_INT(jtape_equal(&b, ib, &a, ia), want[n]);
        CHECK_INT(jtape_equal(&a, ia, &a, ia), 1);
    }
    CHECK_INT(PARSE(&b, "[{\"x\":1,\"y\":[1,2]}]"), JTAPE_OK); /* a member fewer */
    CHECK_INT(jtape_equal(&a, 1, &b, 1), 0);
    CHECK_INT(PARSE(&b, "[0]"), JTAPE_OK);
    CHECK_INT(jtape_equal(&a, 0, &a, 0), 1);
    CHECK_INT(jtape_equal(&a, 0, &b, 0), 0);
    jtape_free(&a);
    jtape_free(&b);
}

/* A tape grows past its first allocation and keeps it for the next parse. */
static void test_growth_and_reuse(void)
{
    struct buf text = BUF_INIT;
    struct jtape t = JTAPE_INIT;
    CHECK_INT(buf_puts(&text, "["), 0);
    for (int i = 0; i < 5000; i++)
        CHECK_INT(buf_printf(&text, "%s%d", i ? "," : "", i), 0);
    CHECK_INT(buf_puts(&text, "]"), 0);
    CHECK_INT(jtape_parse(&t, text.data, text.len, DEPTH), JTAPE_OK);
    CHECK_INT(t.count, 5001);
    CHECK_INT(t.tokens[5000].integer, 4999);
    char *d = dump(&t, 0, 0);
    CHECK_STR(d, text.data);
    free(d);
    struct jtape_token *tokens = t.tokens;
    uint32_t cap = t.cap;
    CHECK_INT(PARSE(&t, "{\"a\":1}"), JTAPE_OK);
    CHECK(t.tokens == tokens && t.cap == cap);
    CHECK_INT(t.count, 3);
    buf_free(&text);
    jtape_free(&t);
}

/* The seed sample reads and writes back as jansson does. */
static void test_seed_sample(void)
{
    json_t *seed = json_load_file("spec/seed-payment.json", 0, NULL);
    if (!seed) {
        TEST_SKIP("spec/seed-payment.json not found (run from the repository root)");
        return;
    }
    char *pretty = json_dumps(seed, JSON_INDENT(2));
    char *compact = json_dumps(seed, JSON_COMPACT);
    struct jtape t = JTAPE_INIT;
    CHECK_INT(jtape_parse(&t, pretty, strlen(pretty), DEPTH), JTAPE_OK);
    char *got = dump(&t, 0, 0);
    CHECK_STR(got, compact);
    free(got);
    jtape_free(&t);
    free(pretty);
    free(compact);
    json_decref(seed);
}

/* A container whose raw text is its dump says so (JTAPE_VERBATIM), and is
 * then copied whole; whitespace, an escape, "-0" or a NUL after a scalar
 * inside it (or inside a container within it) make it written value by
 * value; a null member keeps it verbatim but not for a dump that strips
 * nulls.  The dumps stay jansson's either way. */
static void test_verbatim(void)
{
    static const struct {
        const char *text;
        unsigned root;         /* the root's bits */
        unsigned first;        /* the bits of the root's first member or item */
        const char *stripped;  /* the dump with JTAPE_DUMP_STRIP_NULLS */
    } cases[] = {
        {"{\"a\":{\"b\":[1,\"x\"]},\"c\":true}", 3, 3, "{\"a\":{\"b\":[1,\"x\"]},\"c\":true}"},
        {"{\"a\":{\"b\":[1, \"x\"]},\"c\":true}", 2, 2, "{\"a\":{\"b\":[1,\"x\"]},\"c\":true}"},
        {"{\"a\":{\"b\":[1,\"x\"]} ,\"c\":true}", 2, 3, "{\"a\":{\"b\":[1,\"x\"]},\"c\":true}"},
        {"{\"a\":{\"b\":[1,\"\\/\"]},\"c\":true}", 2, 2, "{\"a\":{\"b\":[1,\"/\"]},\"c\":true}"},
        {"{\"a\":{\"b\":[-0,\"x\"]},\"c\":true}", 2, 2, "{\"a\":{\"b\":[0,\"x\"]},\"c\":true}"},
        {"{\"a\":{\"b\":null},\"c\":true}", 1, 1, "{\"a\":{},\"c\":true}"},
        {"{\"a\":[null],\"c\":true}", 3, 3, "{\"a\":[null],\"c\":true}"},
        {"{\"a\":{\"b\":[1,\"x\"]},\"c\":null}", 1, 3, "{\"a\":{\"b\":[1,\"x\"]}}"},
        {"[{\"a\":1}\n]", 2, 3, "[{\"a\":1}]"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        struct jtape t = JTAPE_INIT;
        const char *text = cases[k].text;
        CHECK_INT(jtape_parse(&t, text, strlen(text), DEPTH), JTAPE_OK);
        if (t.count < 3)
            continue;
        CHECK_INT(t.tokens[0].verbatim, (int)cases[k].root);
        uint32_t first = t.tokens[0].kind == JTAPE_OBJECT ? 2 : 1;
        CHECK_INT(t.tokens[first].verbatim, (int)cases[k].first);
        char *want = jansson_dump(text, strlen(text));
        char *got = dump(&t, 0, 0);
        CHECK(want && got && strcmp(want, got) == 0);
        free(got);
        got = dump(&t, 0, JTAPE_DUMP_STRIP_NULLS);
        CHECK_STR(got, cases[k].stripped);
        free(got);
        free(want);
        jtape_free(&t);
    }
}

TEST_MAIN({"layout", test_layout}, {"verbatim", test_verbatim}, {"defers", test_defers}, {"integers", test_integers},
          {"nul_after_scalar", test_nul_after_scalar},
          {"depth", test_depth}, {"members_max", test_members_max},
          {"duplicate_keys", test_duplicate_keys}, {"get", test_get}, {"strings", test_strings},
          {"dump_as_jansson", test_dump_as_jansson},
          {"dump_appends_subtrees", test_dump_appends_subtrees},
          {"dump_strip_nulls", test_dump_strip_nulls}, {"dump_string", test_dump_string},
          {"equal", test_equal}, {"growth_and_reuse", test_growth_and_reuse},
          {"seed_sample", test_seed_sample})
