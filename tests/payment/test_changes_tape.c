/* changes_tape: payment_changes_between_tapes gives, for two documents read
 * into tapes, the paths an update changed, byte for byte what
 * payment_changes_between gives for the jansson trees of the same texts:
 * every case below is checked against both the expected text and the tree
 * function.  Members in the same order, in another order, added, removed
 * and renamed; arrays and values of another type; values equal once
 * decoded or written with other spaces; names with '.' and '~'; more paths
 * than the list holds inline; the seed sample as stored, with changes and
 * with its members reordered. */
#include "payment/changes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/jtape.h"
#include "test.h"

#define SEED_PATH "spec/seed-payment.json"
#define DEPTH 32 /* nesting the tapes read, as a request body's */

/* The changes between two texts by the tapes, checked equal to the trees'.
 * NULL when either text was not read (a failed check). */
static char *changes(const char *before, size_t before_len, const char *after, size_t after_len)
{
    struct jtape ta = JTAPE_INIT, tb = JTAPE_INIT;
    int read = jtape_parse(&ta, before, before_len, DEPTH) == JTAPE_OK &&
               jtape_parse(&tb, after, after_len, DEPTH) == JTAPE_OK;
    CHECK(read);
    json_error_t e;
    json_t *a = json_loadb(before, before_len, JSON_REJECT_DUPLICATES, &e);
    json_t *b = json_loadb(after, after_len, JSON_REJECT_DUPLICATES, &e);
    CHECK(json_is_object(a) && json_is_object(b));
    char *tape = read ? payment_changes_between_tapes(&ta, &tb) : NULL;
    char *tree = json_is_object(a) && json_is_object(b) ? payment_changes_between(a, b) : NULL;
    CHECK_STR(tape, tree);
    free(tree);
    json_decref(a);
    json_decref(b);
    jtape_free(&ta);
    jtape_free(&tb);
    return tape;
}

#define CHECK_CHANGES(before, after, want)                                             \
    do {                                                                               \
        char *got_ = changes((before), strlen(before), (after), strlen(after));       \
        CHECK_STR(got_, (want));                                                       \
        free(got_);                                                                    \
    } while (0)

#define DOC(attrs)                                                                   \
    "{\"type\":\"payments\",\"id\":\"p\",\"version\":3,\"organisation_id\":\"o\","   \
    "\"created_on\":\"2024-01-01T00:00:00.000Z\",\"modified_on\":\"2024-01-02T00:00:00.000Z\"," \
    "\"attributes\":" attrs "}"

#define DOC_NEXT(attrs)                                                              \
    "{\"type\":\"payments\",\"id\":\"p\",\"version\":4,\"organisation_id\":\"o\","   \
    "\"created_on\":\"2024-01-01T00:00:00.000Z\",\"modified_on\":\"2024-01-03T00:00:00.000Z\"," \
    "\"attributes\":" attrs "}"

/* Only the version and the modified time differ: nothing changed; below
 * the root such names are attributes like any other. */
static void test_bookkeeping_left_out(void)
{
    CHECK_CHANGES(DOC("{\"amount\":\"1.00\"}"), DOC_NEXT("{\"amount\":\"1.00\"}"), "[]");
    CHECK_CHANGES(DOC("{\"version\":1}"), DOC_NEXT("{\"version\":2}"), "[\"attributes.version\"]");
    CHECK_CHANGES("{\"created_on\":\"a\",\"version\":1}", "{\"created_on\":\"b\",\"version\":2}",
                  "[\"created_on\"]");
    /* Bookkeeping present on one side only is still left out. */
    CHECK_CHANGES("{\"a\":1,\"version\":1}", "{\"modified_on\":\"t\",\"a\":1}", "[]");
    CHECK_CHANGES("{}", "{\"version\":1,\"modified_on\":\"t\"}", "[]");
}

/* Leaf members, the members in the same order or not, sorted in the
 * result whatever the documents' order. */
static void test_leaves_any_order(void)
{
    CHECK_CHANGES(DOC("{\"reference\":\"r\",\"beneficiary_party\":{\"name\":\"A\",\"account\":\"1\"},"
                      "\"amount\":\"1.00\"}"),
                  DOC_NEXT("{\"reference\":\"r\",\"beneficiary_party\":{\"name\":\"B\","
                           "\"account\":\"1\"},\"amount\":\"2.00\"}"),
                  "[\"attributes.amount\",\"attributes.beneficiary_party.name\"]");
    CHECK_CHANGES(DOC("{\"reference\":\"r\",\"beneficiary_party\":{\"name\":\"A\",\"account\":\"1\"},"
                      "\"amount\":\"1.00\"}"),
                  DOC_NEXT("{\"amount\":\"2.00\",\"beneficiary_party\":{\"account\":\"1\","
                           "\"name\":\"B\"},\"reference\":\"r\"}"),
                  "[\"attributes.amount\",\"attributes.beneficiary_party.name\"]");
    CHECK_CHANGES("{\"a\":{\"b\":{\"c\":1,\"d\":2}}}", "{\"a\":{\"b\":{\"c\":1,\"d\":3}}}",
                  "[\"a.b.d\"]");
    /* Reversed, rotated, interleaved: each member still meets its match. */
    CHECK_CHANGES("{\"a\":1,\"b\":2,\"c\":3,\"d\":4}", "{\"d\":4,\"c\":30,\"b\":2,\"a\":10}",
                  "[\"a\",\"c\"]");
    CHECK_CHANGES("{\"a\":1,\"b\":2,\"c\":3,\"d\":4}", "{\"c\":3,\"d\":40,\"a\":1,\"b\":20}",
                  "[\"b\",\"d\"]");
    CHECK_CHANGES("{\"a\":1,\"b\":2,\"c\":3,\"d\":4}", "{\"a\":1,\"c\":3,\"b\":2,\"d\":4}", "[]");
    /* Names that are prefixes of each other are different members. */
    CHECK_CHANGES("{\"ab\":1,\"a\":2}", "{\"a\":2,\"ab\":3}", "[\"ab\"]");
    CHECK_CHANGES("{\"a\":1}", "{\"ab\":1}", "[\"a\",\"ab\"]");
}

/* Members added or removed at any level, anywhere in the order; a whole
 * object added or removed is one path. */
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
    /* In the middle, in the same order otherwise. */
    CHECK_CHANGES("{\"a\":1,\"b\":2,\"c\":3}", "{\"a\":1,\"x\":0,\"b\":2,\"c\":3}", "[\"x\"]");
    CHECK_CHANGES("{\"a\":1,\"x\":0,\"b\":2,\"c\":3}", "{\"a\":1,\"b\":2,\"c\":3}", "[\"x\"]");
    /* Removed and added at once, as many on each side. */
    CHECK_CHANGES(DOC("{\"z\":1,\"b\":{\"k\":1}}"), DOC_NEXT("{\"a\":1,\"b\":{\"j\":1}}"),
                  "[\"attributes.a\",\"attributes.b.j\",\"attributes.b.k\",\"attributes.z\"]");
    CHECK_CHANGES("{\"a\":1,\"b\":2}", "{\"b\":2,\"c\":1}", "[\"a\",\"c\"]");
    /* Empty objects. */
    CHECK_CHANGES("{}", "{}", "[]");
    CHECK_CHANGES("{\"a\":{}}", "{\"a\":{}}", "[]");
    CHECK_CHANGES("{\"a\":{}}", "{\"a\":{\"b\":null}}", "[\"a.b\"]");
    CHECK_CHANGES("{}", "{\"a\":{}}", "[\"a\"]");
}

/* An array is one value compared whole; a change of type is one path;
 * values equal once decoded are equal. */
static void test_values(void)
{
    CHECK_CHANGES("{\"l\":[1,{\"a\":1}]}", "{\"l\":[1,{\"a\":2}]}", "[\"l\"]");
    CHECK_CHANGES("{\"l\":[1,2]}", "{\"l\":[1,2]}", "[]");
    CHECK_CHANGES("{\"l\":[1,2]}", "{\"l\":[2,1]}", "[\"l\"]");
    CHECK_CHANGES("{\"l\":[1,2]}", "{\"l\":[1,2,3]}", "[\"l\"]");
    CHECK_CHANGES("{\"l\":[{\"a\":1,\"b\":2}]}", "{\"l\":[{\"b\":2,\"a\":1}]}", "[]");
    CHECK_CHANGES("{\"p\":{\"a\":1}}", "{\"p\":\"flat\"}", "[\"p\"]");
    CHECK_CHANGES("{\"p\":[]}", "{\"p\":{}}", "[\"p\"]");
    CHECK_CHANGES("{\"p\":null}", "{\"p\":false}", "[\"p\"]");
    CHECK_CHANGES("{\"p\":null}", "{\"p\":null}", "[]");
    CHECK_CHANGES("{\"p\":true}", "{\"p\":false}", "[\"p\"]");
    CHECK_CHANGES("{\"p\":\"1\"}", "{\"p\":1}", "[\"p\"]");
    CHECK_CHANGES("{\"p\":-0}", "{\"p\":0}", "[]");
    CHECK_CHANGES("{\"p\":10}", "{\"p\":1}", "[\"p\"]");
    CHECK_CHANGES("{\"s\":\"A\\n\\u00e9\"}", "{\"s\":\"\\u0041\\u000a\xc3\xa9\"}", "[]");
    CHECK_CHANGES("{\"s\":\"a\\\"\"}", "{\"s\":\"a'\"}", "[\"s\"]");
    /* The same values written otherwise (spaces, escapes, member order)
     * are equal, however deep; one byte of difference below is found. */
    CHECK_CHANGES("{\"o\":{\"a\":[1,{\"b\":\"\\u0041\",\"c\":null}],\"d\":{}}}",
                  "{ \"o\" : { \"d\" : { } , \"a\" : [ 1 , { \"c\" : null , \"b\" : \"A\" } ] } }",
                  "[]");
    CHECK_CHANGES("{\"o\":{\"a\":[1,{\"b\":\"A\"}],\"d\":{\"e\":1}}}",
                  "{\"o\":{\"a\":[1,{\"b\":\"A\"}],\"d\":{\"e\":2}}}", "[\"o.d.e\"]");
}

/* '.' and '~' in names are escaped as ~1 and ~0: "a.b" and a.b differ;
 * an empty name is a segment of its own; other bytes are kept. */
static void test_names_escaped(void)
{
    CHECK_CHANGES("{\"a.b\":1,\"a\":{\"b\":1}}", "{\"a.b\":2,\"a\":{\"b\":2}}",
                  "[\"a.b\",\"a~1b\"]");
    CHECK_CHANGES("{\"x~1\":1}", "{\"x~1\":2}", "[\"x~01\"]");
    CHECK_CHANGES("{\"~.~\":{\"..\":1}}", "{\"~.~\":{\"..\":2}}", "[\"~0~1~0.~1~1\"]");
    CHECK_CHANGES("{\"\":{\"x\":1},\"x\":1}", "{\"\":{\"x\":2},\"x\":1}", "[\".x\"]");
    CHECK_CHANGES("{\"a\":{\"\":1}}", "{\"a\":{\"\":2}}", "[\"a.\"]");
    CHECK_CHANGES("{\"\":1}", "{\"\":2}", "[\"\"]");
    CHECK_CHANGES("{\"a\":{\"\xc3\xa9t\xc3\xa9\":1,\"/\":1}}",
                  "{\"a\":{\"\xc3\xa9t\xc3\xa9\":2,\"/\":2}}",
                  "[\"a./\",\"a.\xc3\xa9t\xc3\xa9\"]");
}

/* More changed paths than the list holds before allocating, each object
 * written in reverse order: all of them, sorted. */
static void test_many_paths(void)
{
    struct buf before = BUF_INIT, after = BUF_INIT, want = BUF_INIT;
    buf_puts(&before, "{");
    buf_puts(&after, "{");
    buf_puts(&want, "[");
    for (int o = 3; o >= 0; o--) {
        buf_printf(&before, "%s\"o%d\":{", o == 3 ? "" : ",", o);
        buf_printf(&after, "%s\"o%d\":{", o == 3 ? "" : ",", o);
        for (int m = 49; m >= 0; m--) {
            buf_printf(&before, "%s\"m%02d\":%d", m == 49 ? "" : ",", m, m);
            buf_printf(&after, "%s\"m%02d\":%d", m == 49 ? "" : ",", m, m + 1);
        }
        buf_puts(&before, "}");
        buf_puts(&after, "}");
    }
    for (int o = 0; o < 4; o++)
        for (int m = 0; m < 50; m++)
            buf_printf(&want, "%s\"o%d.m%02d\"", o || m ? "," : "", o, m);
    buf_puts(&before, "}");
    buf_puts(&after, "}");
    buf_puts(&want, "]");
    CHECK(!buf_failed(&before) && !buf_failed(&after) && !buf_failed(&want));
    if (!buf_failed(&before) && !buf_failed(&after) && !buf_failed(&want))
        CHECK_CHANGES(before.data, after.data, want.data);
    buf_free(&before);
    buf_free(&after);
    buf_free(&want);
}

/* The seed sample as a stored document (its data with an id and times),
 * compact, in the order jansson keeps; NULL when it cannot be read. */
static json_t *seed_document(void)
{
    json_error_t e;
    json_t *body = json_load_file(SEED_PATH, JSON_REJECT_DUPLICATES, &e);
    if (!body)
        fprintf(stderr, "  %s: %s (run from the repository root)\n", SEED_PATH, e.text);
    CHECK(body != NULL);
    json_t *doc = json_deep_copy(json_object_get(body, "data"));
    json_decref(body);
    CHECK(json_is_object(doc));
    if (!json_is_object(doc)) {
        json_decref(doc);
        return NULL;
    }
    CHECK(json_object_set_new(doc, "id", json_string("4ee3a8d8-ca7b-4290-a52c-dd5b6165ec43")) == 0);
    CHECK(json_object_set_new(doc, "created_on", json_string("2024-01-01T00:00:00.000Z")) == 0);
    CHECK(json_object_set_new(doc, "modified_on", json_string("2024-01-01T00:00:00.000Z")) == 0);
    return doc;
}

/* Checks the changes from before to after, each dumped with flags. */
static void check_documents(const json_t *before, size_t before_flags, const json_t *after,
                            size_t after_flags, const char *want)
{
    char *a = json_dumps(before, JSON_COMPACT | before_flags);
    char *b = json_dumps(after, JSON_COMPACT | after_flags);
    CHECK(a && b);
    if (a && b) {
        char *got = changes(a, strlen(a), b, strlen(b));
        CHECK_STR(got, want);
        free(got);
    }
    free(a);
    free(b);
}

/* The seed sample: the bookkeeping only; the amount; a nested name; a
 * member removed and one added; an array item; all of it with the after
 * document's members in another order (sorted keys). */
static void test_seed_sample(void)
{
    json_t *before = seed_document();
    if (!before)
        return;
    json_t *after = json_deep_copy(before);
    CHECK(after != NULL);
    if (!after) {
        json_decref(before);
        return;
    }
    json_t *attrs = json_object_get(after, "attributes");
    CHECK(json_object_set_new(after, "version", json_integer(1)) == 0);
    CHECK(json_object_set_new(after, "modified_on", json_string("2024-01-02T00:00:00.000Z")) == 0);
    check_documents(before, 0, after, 0, "[]");
    check_documents(before, 0, after, JSON_SORT_KEYS, "[]");

    CHECK(json_object_set_new(attrs, "amount", json_string("27.00")) == 0);
    check_documents(before, 0, after, 0, "[\"attributes.amount\"]");
    check_documents(before, JSON_SORT_KEYS, after, 0, "[\"attributes.amount\"]");

    json_t *party = json_object_get(attrs, "beneficiary_party");
    CHECK(json_object_set_new(party, "account_name", json_string("M")) == 0);
    CHECK(json_object_del(attrs, "fx") == 0);
    CHECK(json_object_set_new(attrs, "a.new~member", json_null()) == 0);
    json_t *address = json_object_get(json_object_get(party, "account_with"), "bank_address");
    CHECK(json_array_set_new(address, 0, json_string("Elsewhere")) == 0);
    /* '~' sorts after 'm': the escaped name after amount. */
    const char *want = "[\"attributes.amount\",\"attributes.a~1new~0member\","
                       "\"attributes.beneficiary_party.account_name\","
                       "\"attributes.beneficiary_party.account_with.bank_address\","
                       "\"attributes.fx\"]";
    check_documents(before, 0, after, 0, want);
    check_documents(before, 0, after, JSON_SORT_KEYS, want);
    check_documents(before, JSON_SORT_KEYS, after, 0, want);
    json_decref(after);
    json_decref(before);
}

TEST_MAIN(TEST(test_bookkeeping_left_out), TEST(test_leaves_any_order),
          TEST(test_added_and_removed), TEST(test_values), TEST(test_names_escaped),
          TEST(test_many_paths), TEST(test_seed_sample))
