/* test_fastbody_patch: a patch on the body fast path
 * (payment_fastbody_read(PATCH) + payment_fastbody_merge) against the
 * general path's revision_next(REVISION_PATCH): whenever the fast path
 * takes a patch, the next document and its row are byte for byte the
 * general path's (jansson's member order kept), and every patch the
 * general path refuses is DEFER. */
#include "fastbody_fixture.h"

/* ---- PATCH: payment_fastbody_read(PATCH) + payment_fastbody_merge against
 * revision_next(REVISION_PATCH) ---- */

#define PATCH_NOW_MS 1795687290789LL /* the patch's modification time */

/* The document a replace of body stores (general_path): malloc'd text. */
static char *stored_doc(const char *body)
{
    struct stored s = general_path(PAYMENT_CHECK_REPLACE, body, strlen(body));
    CHECK(s.ok);
    return s.text;
}

/* stored_doc(body) without its member key, as an older document may be. */
static char *stored_doc_without(const char *body, const char *key)
{
    char *text = stored_doc(body);
    json_t *doc = text ? json_loads(text, 0, NULL) : NULL;
    CHECK(doc != NULL && json_object_del(doc, key) == 0);
    free(text);
    text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return text;
}

/* revision_next's next version of the stored document (text) for patch,
 * written by payment_doc_row. */
static struct stored patch_general(const char *stored_text, const char *patch)
{
    struct stored s = {0};
    char msg[256];
    json_t *current = json_loads(stored_text, 0, NULL);
    CHECK(current != NULL);
    json_t *root = payment_body_parse(patch, strlen(patch), msg, sizeof msg);
    json_t *errors = json_array();
    CHECK(errors != NULL);
    json_t *data = json_object_get(root, "data");
    if (!root || payment_validate_data(validator, PAYMENT_CHECK_PATCH, data, errors) != 0)
        goto out;
    struct revision_input in = {
        .current = current,
        .created_ms = CREATED_MS,
        .base_version = mode_version(PAYMENT_CHECK_REPLACE),
        .data = data,
        .mode = REVISION_PATCH,
        .validator = validator,
        .now_ms = PATCH_NOW_MS,
    };
    json_t *next = NULL, *problems = NULL;
    if (revision_next(&in, &next, &problems) == REVISION_OK) {
        s.ok = payment_doc_row(next, CREATED_MS, PATCH_NOW_MS, &s.row, &s.text) == 0;
        CHECK(s.ok);
        keep_row_strings(&s.row);
    }
    json_decref(next);
    json_decref(problems);
out:
    json_decref(errors);
    json_decref(root);
    json_decref(current);
    return s;
}

/* The fast path's next version: read, merge, then the document from the
 * stored one's id, organisation, type and created_on.  *read_ok: the read
 * said OK. */
static struct stored patch_fast(struct payment_fastbody *fb, const char *stored_text,
                                const char *patch, int *read_ok)
{
    struct stored s = {0};
    int rc = payment_fastbody_read(fb, validator, PAYMENT_CHECK_PATCH, patch, strlen(patch));
    CHECK(rc == PAYMENT_FASTBODY_OK || rc == PAYMENT_FASTBODY_DEFER);
    if (read_ok)
        *read_ok = rc == PAYMENT_FASTBODY_OK;
    if (rc != PAYMENT_FASTBODY_OK) {
        CHECK(fb->data == 0 && fb->attributes == 0 && fb->organisation_id == 0);
        return s;
    }
    struct jtape tape = JTAPE_INIT;
    CHECK_INT(jtape_parse(&tape, stored_text, strlen(stored_text), PAYMENT_BODY_MAX_DEPTH),
              JTAPE_OK);
    rc = payment_fastbody_merge(fb, validator, &tape);
    CHECK(rc == PAYMENT_FASTBODY_OK || rc == PAYMENT_FASTBODY_DEFER);
    json_t *current = json_loads(stored_text, 0, NULL);
    CHECK(current != NULL);
    if (rc != PAYMENT_FASTBODY_OK) {
        CHECK(fb->data == 0 && fb->attributes == 0 && fb->relationships == 0);
    } else {
        const char *type = payment_doc_string(current, "type");
        const char *created_on = payment_doc_string(current, "created_on");
        struct payment_fastbody_base base = {
            .fallback_type = type && *type ? type : "payments",
            .id = payment_doc_string(current, "id"),
            .version = mode_version(PAYMENT_CHECK_REPLACE) + 1,
            .organisation_id = payment_doc_string(current, "organisation_id"),
            .created_on = created_on ? created_on : CREATED,
            .created_ms = CREATED_MS,
            .modified_ms = PATCH_NOW_MS,
        };
        CHECK_INT(payment_fastbody_doc(fb, &base, &s.row, &s.text), PAYMENT_FASTBODY_OK);
        s.ok = s.text != NULL;
    }
    json_decref(current);
    jtape_free(&tape);
    return s;
}

/* Both paths on patch: 1 when the fast path took it (and then it stored
 * what the general path stores), 0 when it deferred.  *text, when given,
 * gets the general path's document (malloc'd; NULL when it refused);
 * *general_ok its verdict. */
static int compare_patch(struct payment_fastbody *fb, const char *stored_text, const char *patch,
                         int *general_ok, char **text)
{
    struct stored fast = patch_fast(fb, stored_text, patch, NULL);
    struct stored general = patch_general(stored_text, patch);
    if (fast.ok) {
        if (!general.ok)
            fprintf(stderr, "  fast OK, general refused: %s\n", patch);
        CHECK(general.ok && same_stored(&fast, &general));
    }
    if (general_ok)
        *general_ok = general.ok;
    if (text) {
        *text = general.text;
        general.text = NULL;
    }
    stored_free(&fast);
    stored_free(&general);
    return fast.ok;
}

/* A patch the fast path must take: the next document (the general path's,
 * equal to the fast one) holds want.  The caller frees nothing. */
static void patch_gives(struct payment_fastbody *fb, const char *stored_text, const char *patch,
                        const char *want)
{
    char *text = NULL;
    int general_ok = 0;
    CHECK(compare_patch(fb, stored_text, patch, &general_ok, &text));
    CHECK(general_ok && text && strstr(text, want) != NULL);
    if (text && !strstr(text, want))
        fprintf(stderr, "  %s\n  holds no %s\n", text, want);
    free(text);
}

/* A patch both paths refuse: the fast path defers, revision_next finds a
 * problem. */
static void patch_refused(struct payment_fastbody *fb, const char *stored_text,
                          const char *patch)
{
    int general_ok = 1;
    CHECK(!compare_patch(fb, stored_text, patch, &general_ok, NULL));
    CHECK(!general_ok);
}

#define PATCH_OF(attributes) "{\"data\":{\"attributes\":{" attributes "}}}"
#define STORED_ATTRIBUTES MONEY ",\"reference\":\"r\""

static void test_patch_replace_keeps_place(void)
{
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    char *stored = stored_doc(body_of("", STORED_ATTRIBUTES));
    patch_gives(&fb, stored, PATCH_OF("\"currency\":\"EUR\",\"amount\":\"5.00\""),
                "\"attributes\":{\"amount\":\"5.00\",\"currency\":\"EUR\",\"reference\":\"r\"}");
    patch_gives(&fb, stored, PATCH_OF("\"reference\":\"new\""),
                "\"attributes\":{" MONEY ",\"reference\":\"new\"}");
    free(stored);
    payment_fastbody_free(&fb);
}

static void test_patch_new_members_in_patch_order(void)
{
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    char *stored = stored_doc(body_of("", STORED_ATTRIBUTES));
    patch_gives(&fb, stored,
                PATCH_OF("\"zeta\":\"z\",\"reference\":\"n\",\"alpha\":[1,{\"b\":null}],"
                         "\"numeric_reference\":\"1002\""),
                "\"attributes\":{" MONEY ",\"reference\":\"n\",\"zeta\":\"z\","
                "\"alpha\":[1,{}],\"numeric_reference\":\"1002\"}");
    free(stored);
    payment_fastbody_free(&fb);
}

static void test_patch_nested_merge(void)
{
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    char *stored = stored_doc(body_of(
        "", MONEY ",\"beneficiary_party\":{\"name\":\"B\",\"account_with\":{\"bank_id\":\"1\","
            "\"bank_address\":[\"x\"]},\"account_number\":\"123\"},\"reference\":\"r\""));
    patch_gives(&fb, stored,
                PATCH_OF("\"beneficiary_party\":{\"account_with\":{\"bank_id\":\"2\","
                         "\"bank_id_code\":\"GBDSC\"},\"account_name\":\"N\",\"name\":null}"),
                "\"beneficiary_party\":{\"account_with\":{\"bank_id\":\"2\",\"bank_address\":"
                "[\"x\"],\"bank_id_code\":\"GBDSC\"},\"account_number\":\"123\","
                "\"account_name\":\"N\"},\"reference\":\"r\"}");
    free(stored);
    payment_fastbody_free(&fb);
}

static void test_patch_object_onto_non_object(void)
{
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    char *stored = stored_doc(body_of("", MONEY ",\"custom\":\"text\",\"list\":[1],\"n\":7"));
    patch_gives(&fb, stored,
                PATCH_OF("\"custom\":{\"a\":{\"b\":1,\"c\":null}},\"list\":{\"x\":null},"
                         "\"n\":{}"),
                "\"attributes\":{" MONEY ",\"custom\":{\"a\":{\"b\":1}},\"list\":{},\"n\":{}}");
    /* A member the rules want a string of becomes an object: refused. */
    patch_refused(&fb, stored, PATCH_OF("\"currency\":{\"code\":\"GBP\"}"));
    free(stored);
    payment_fastbody_free(&fb);
}

static void test_patch_null_removes(void)
{
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    char *stored = stored_doc(body_of("", STORED_ATTRIBUTES ",\"custom\":{\"a\":1}"));
    patch_gives(&fb, stored, PATCH_OF("\"reference\":null,\"custom\":null,\"absent\":null"),
                "\"attributes\":{" MONEY "}");
    struct stored s = patch_fast(&fb, stored, PATCH_OF("\"reference\":null"), NULL);
    CHECK(s.ok && s.row.reference == NULL);
    stored_free(&s);
    free(stored);
    payment_fastbody_free(&fb);
}

static void test_patch_nulls_in_arrays(void)
{
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    char *stored = stored_doc(body_of("", MONEY));
    patch_gives(&fb, stored,
                PATCH_OF("\"custom\":[{\"x\":null,\"y\":[null,{\"z\":null}]},null],"
                         "\"charges_information\":{\"sender_charges\":[{\"amount\":\"1.00\","
                         "\"currency\":null}]}"),
                "\"custom\":[{\"y\":[null,{}]},null],\"charges_information\":"
                "{\"sender_charges\":[{\"amount\":\"1.00\"}]}}");
    free(stored);
    payment_fastbody_free(&fb);
}

static void test_patch_relationships(void)
{
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    char *with = stored_doc(body_of("\"relationships\":{\"a\":{\"b\":1},\"n\":null},", MONEY));
    char *without = stored_doc(body_of("", MONEY));
    /* null removes them */
    patch_gives(&fb, with, "{\"data\":{\"relationships\":null}}",
                "\"attributes\":{" MONEY "}}");
    /* absent keeps them as stored, their nulls too */
    patch_gives(&fb, with, PATCH_OF("\"reference\":\"r\""),
                "\"relationships\":{\"a\":{\"b\":1},\"n\":null}}");
    /* an object merged onto none */
    patch_gives(&fb, without,
                "{\"data\":{\"relationships\":{\"p\":{\"q\":null,\"r\":1},\"s\":null}}}",
                "\"attributes\":{" MONEY "},\"relationships\":{\"p\":{\"r\":1}}}");
    /* merged onto the stored ones; nulls inside an array stay */
    patch_gives(&fb, with,
                "{\"data\":{\"relationships\":{\"a\":{\"c\":2},\"n\":1,\"arr\":[{\"x\":null}]}}}",
                "\"relationships\":{\"a\":{\"b\":1,\"c\":2},\"n\":1,\"arr\":[{\"x\":null}]}}");
    /* not an object after the merge: refused */
    patch_refused(&fb, with, "{\"data\":{\"relationships\":[1]}}");
    char *text = NULL;
    CHECK(compare_patch(&fb, with, "{\"data\":{\"relationships\":null}}", NULL, &text));
    CHECK(text && strstr(text, "relationships") == NULL);
    free(text);
    free(with);
    free(without);
    payment_fastbody_free(&fb);
}

static void test_patch_type_change(void)
{
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    char *stored = stored_doc(body_of("\"type\":\"Stored_type\",", MONEY));
    patch_gives(&fb, stored, "{\"data\":{\"type\":\"Other\"}}", "{\"type\":\"Other\",");
    patch_gives(&fb, stored, "{\"data\":{\"type\":\"\"}}", "{\"type\":\"Stored_type\",");
    patch_gives(&fb, stored, "{\"data\":{\"type\":null}}", "{\"type\":\"Stored_type\",");
    patch_gives(&fb, stored, PATCH_OF("\"reference\":\"x\""), "{\"type\":\"Stored_type\",");
    char *untyped = stored_doc_without(body_of("", MONEY), "type");
    patch_gives(&fb, untyped, PATCH_OF("\"reference\":\"x\""), "{\"type\":\"payments\",");
    patch_refused(&fb, stored, "{\"data\":{\"type\":\"a-b\"}}");
    free(untyped);
    free(stored);
    payment_fastbody_free(&fb);
}

static void test_patch_attributes_absent(void)
{
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    char *stored = stored_doc(body_of("", STORED_ATTRIBUTES));
    /* No attributes, or null ones: the stored ones stand. */
    patch_gives(&fb, stored, "{\"data\":{}}", "\"attributes\":{" STORED_ATTRIBUTES "}}");
    patch_gives(&fb, stored, "{\"data\":{\"attributes\":null}}",
                "\"attributes\":{" STORED_ATTRIBUTES "}}");
    patch_gives(&fb, stored, PATCH_OF(""), "\"attributes\":{" STORED_ATTRIBUTES "}}");
    /* A stored document without attributes and a patch giving none: no
     * next version (revision_next: attributes must be an object). */
    char *bare = stored_doc_without(body_of("", MONEY), "attributes");
    patch_refused(&fb, bare, "{\"data\":{}}");
    patch_refused(&fb, bare, "{\"data\":{\"relationships\":{\"a\":1}}}");
    /* ... and one giving them: whatever the fast path decides, it agrees. */
    int general_ok = 0;
    (void)compare_patch(&fb, bare, PATCH_OF(MONEY), &general_ok, NULL);
    CHECK(general_ok);
    free(bare);
    free(stored);
    payment_fastbody_free(&fb);
}

static void test_patch_escapes_whitespace(void)
{
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    char *stored = stored_doc(body_of("", MONEY ",\"reference\":\"caf\\u00e9\\n\""));
    patch_gives(&fb, stored,
                " {\t\"data\" :\n{ \"type\" : \"\\u0070ay\" , \"attributes\":{\r\n"
                "\"end_to_end_reference\" : \"\\\"q\\\" \\/ \\u0001\\ud834\\udd1e\" ,"
                " \"custom\" : [ 1 , { \"a\" : null } ] ,\"amount\":\"1\\u0030.00\" } } }\n",
                "{\"type\":\"pay\",");
    patch_gives(&fb, stored, PATCH_OF("\"custom\":\"x\""),
                "\"reference\":\"caf\xc3\xa9\\n\",\"custom\":\"x\"}");
    struct stored s = patch_fast(&fb, stored, PATCH_OF("\"amount\":\"1\\u0030.00\""), NULL);
    CHECK(s.ok);
    CHECK_STR(s.row.reference, "caf\xc3\xa9\n");
    CHECK(s.ok && strstr(s.text, "\"amount\":\"10.00\"") != NULL);
    stored_free(&s);
    free(stored);
    payment_fastbody_free(&fb);
}

/* A merge whose result breaks a rule is the general path's: DEFER. */
static void test_patch_invalid_result_defers(void)
{
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    char *stored = stored_doc(body_of("", STORED_ATTRIBUTES));
    int read_ok = 0;
    struct stored s = patch_fast(&fb, stored, PATCH_OF("\"amount\":\"x\""), &read_ok);
    CHECK(read_ok && !s.ok); /* the patch reads; the merged attributes do not pass */
    stored_free(&s);
    patch_refused(&fb, stored, PATCH_OF("\"amount\":\"x\""));
    patch_refused(&fb, stored, PATCH_OF("\"amount\":null"));   /* required */
    patch_refused(&fb, stored, PATCH_OF("\"currency\":\"JPY\",\"amount\":\"1.5\""));
    patch_refused(&fb, stored, PATCH_OF("\"payment_scheme\":\"SEPACT\""));   /* EUR only */
    patch_refused(&fb, stored, PATCH_OF("\"beneficiary_party\":{\"address\":\"a\"}"));
    /* and the fast path takes the next patch again */
    patch_gives(&fb, stored, PATCH_OF("\"amount\":\"2.00\""), "\"amount\":\"2.00\"");
    free(stored);
    payment_fastbody_free(&fb);
}

/* The patch's envelope is checked at the read: a bad one never merges. */
static void test_patch_envelope_defers_at_read(void)
{
    static const char *const patches[] = {
        "{\"data\":{\"organisation_id\":\"x\"}}",
        "{\"data\":{\"organisation_id\":5}}",
        "{\"data\":{\"id\":\"not-a-uuid\"}}",
        "{\"data\":{\"version\":-1}}",
        "{\"data\":{\"type\":7}}",
        "{\"data\":{\"attributes\":[]}}",
        "{\"data\":{\"relationships\":\"x\"}}",
        "{\"data\":[]}",
        "{}",
        "[]",
    };
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    char *stored = stored_doc(body_of("", MONEY));
    for (size_t i = 0; i < sizeof patches / sizeof patches[0]; i++) {
        CHECK_INT(payment_fastbody_read(&fb, validator, PAYMENT_CHECK_PATCH, patches[i],
                                        strlen(patches[i])),
                  PAYMENT_FASTBODY_DEFER);
        CHECK(fb.data == 0 && fb.organisation_id == 0 && fb.attributes == 0);
        patch_refused(&fb, stored, patches[i]);
    }
    /* Its own organisation, in any letter case, and its id: taken. */
    patch_gives(&fb, stored,
                "{\"data\":{\"id\":\"4EE3A8D8-CA7B-4290-A52C-DD5B6165EC43\",\"version\":7,"
                "\"organisation_id\":\"743D5B63-8E6F-432E-A8FA-C5D8D2EE5FCB\"}}",
                "\"version\":8,\"organisation_id\":\"" ORG "\",");
    free(stored);
    payment_fastbody_free(&fb);
}

/* The seed sample stored, patched as a client would, and its changes on
 * tapes equal to those on trees. */
static void test_patch_seed_sample(void)
{
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    char *seed = seed_compact();
    char *stored = seed ? stored_doc(seed) : NULL;
    CHECK(stored != NULL);
    const char *patch = PATCH_OF("\"amount\":\"27.50\",\"beneficiary_party\":"
                                 "{\"account_name\":\"J Doe\"},\"reference\":null");
    char *text = NULL;
    CHECK(stored && compare_patch(&fb, stored, patch, NULL, &text));
    struct jtape before = JTAPE_INIT, after = JTAPE_INIT;
    if (stored && text) {
        CHECK_INT(jtape_parse(&before, stored, strlen(stored), PAYMENT_BODY_MAX_DEPTH),
                  JTAPE_OK);
        CHECK_INT(jtape_parse(&after, text, strlen(text), PAYMENT_BODY_MAX_DEPTH), JTAPE_OK);
        char *changes = payment_changes_between_tapes(&before, &after);
        CHECK_STR(changes, "[\"attributes.amount\",\"attributes.beneficiary_party.account_name\","
                           "\"attributes.reference\"]");
        free(changes);
    }
    jtape_free(&before);
    jtape_free(&after);
    free(text);
    free(stored);
    free(seed);
    payment_fastbody_free(&fb);
}

static void setup(void)
{
    json_object_seed(1);
    validator = payment_validator_new();
    CHECK(validator != NULL);
}

static void teardown(void)
{
    payment_validator_free(validator);
}

TEST_MAIN({"setup", setup},
          {"patch_replace_keeps_place", test_patch_replace_keeps_place},
          {"patch_new_members_in_patch_order", test_patch_new_members_in_patch_order},
          {"patch_nested_merge", test_patch_nested_merge},
          {"patch_object_onto_non_object", test_patch_object_onto_non_object},
          {"patch_null_removes", test_patch_null_removes},
          {"patch_nulls_in_arrays", test_patch_nulls_in_arrays},
          {"patch_relationships", test_patch_relationships},
          {"patch_type_change", test_patch_type_change},
          {"patch_attributes_absent", test_patch_attributes_absent},
          {"patch_escapes_whitespace", test_patch_escapes_whitespace},
          {"patch_invalid_result_defers", test_patch_invalid_result_defers},
          {"patch_envelope_defers_at_read", test_patch_envelope_defers_at_read},
          {"patch_seed_sample", test_patch_seed_sample}, {"teardown", teardown})
