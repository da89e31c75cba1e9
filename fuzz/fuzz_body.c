/* fuzz_body: a request body through everything a write does before the
 * store: payment_body_parse(), payment_validate_data() for create, replace
 * and patch, the merge of a patch into a stored payment, and the document
 * and row the store would receive (payment_doc_new(), payment_doc_row()).
 *
 * Properties checked on every input, beyond "no crash, leak or UB":
 *  - a refusal always carries a message, which the error response's JSON
 *    escaping turns into a valid JSON string (jansson quotes the offending
 *    bytes, and the message may be cut inside a UTF-8 sequence);
 *  - an accepted body is an object nested at most PAYMENT_BODY_MAX_DEPTH
 *    deep, and a body jansson accepts (duplicates rejected) within that
 *    depth is never refused;
 *  - utf8_valid() agrees with jansson's UTF-8 check on the raw bytes;
 *  - validation returns the count of problems it appended, each a
 *    {"field": "data...", "message": "..."} object; validating the same
 *    data again gives the same problems; no null is left in validated
 *    attributes;
 *  - create is replace plus "version 0": valid for create implies valid for
 *    replace, which implies valid for patch;
 *  - a valid create (or a valid patch merged into a stored payment) makes a
 *    document whose row points at its columns and whose serialized text
 *    parses back to the same document, validates again as a replace, and is
 *    accepted again by payment_body_parse() inside {"data": ...}. */
#include <jansson.h>

#include "core/decimal.h"
#include "core/uuid.h"
#include "fuzz.h"
#include "payment/doc.h"
#include "payment/merge.h"
#include "payment/validate.h"

#define BODY_CREATED_ON "2026-11-26T10:00:00.123Z"
#define BODY_CREATED_MS INT64_C(1795687200123) /* BODY_CREATED_ON */
#define BODY_MODIFIED_MS INT64_C(1795687260456)
#define BODY_GENERATED_ID "01920000-0000-7000-8000-000000000001" /* when data.id is absent */

/* The attributes of the stored payment every patch is merged into: valid,
 * with nested objects and arrays for the patch to reach. */
static const char body_stored_attributes[] =
    "{\"amount\":\"26.00\",\"currency\":\"GBP\",\"payment_scheme\":\"FPS\","
    "\"processing_date\":\"2015-02-12\",\"reference\":\"rent for oct\","
    "\"beneficiary_party\":{\"account_name\":\"James Bond\",\"account_number_code\":\"IBAN\","
    "\"address\":[\"1 Clarence Mew\",\"Horsforth\"],\"account_type\":0},"
    "\"fx\":{\"exchange_rate\":\"0.13343\",\"original_amount\":\"100.00\"},"
    "\"custom\":{\"kept\":[1,{\"x\":null}]}}";

/* Set once by LLVMFuzzerInitialize and only read afterwards: libFuzzer
 * gives its entry points no other way to share what is costly to build. */
static payment_validator *body_validator; /* the spec's patterns, compiled once */
static json_t *body_stored;               /* parsed body_stored_attributes */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    json_object_seed(0x7061796d); /* the same hash layout on every run */
    body_validator = payment_validator_new();
    FUZZ_CHECK(body_validator != NULL);
    body_stored = json_loads(body_stored_attributes, 0, NULL);
    FUZZ_CHECK(json_is_object(body_stored));
    json_t *errors = json_array();
    FUZZ_CHECK(errors && payment_validate_attributes(body_validator, body_stored, errors) == 0);
    json_decref(errors);
    return 0;
}

/* Levels of nesting of v: a scalar is 0, the root object of a body 1. */
static int body_depth(const json_t *v)
{
    int deepest = 0;
    if (json_is_object(v)) {
        const char *key;
        json_t *member;
        json_object_foreach((json_t *)v, key, member) {
            int d = body_depth(member);
            if (d > deepest)
                deepest = d;
        }
        return deepest + 1;
    }
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            int d = body_depth(json_array_get(v, i));
            if (d > deepest)
                deepest = d;
        }
        return deepest + 1;
    }
    return 0;
}

/* Whether any object member inside v, at any depth, is null. */
static int body_has_null_member(const json_t *v)
{
    if (json_is_object(v)) {
        const char *key;
        json_t *member;
        json_object_foreach((json_t *)v, key, member) {
            if (json_is_null(member) || body_has_null_member(member))
                return 1;
        }
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if (body_has_null_member(json_array_get(v, i)))
                return 1;
    }
    return 0;
}

/* Every problem is {"field": "data...", "message": non-empty}. */
static void body_check_problems(const json_t *errors, int n)
{
    FUZZ_CHECK(n >= 0);
    FUZZ_CHECK((size_t)n == json_array_size(errors));
    for (size_t i = 0; i < json_array_size(errors); i++) {
        const json_t *p = json_array_get(errors, i);
        const char *field = json_string_value(json_object_get(p, "field"));
        const char *message = json_string_value(json_object_get(p, "message"));
        FUZZ_CHECK(json_is_object(p) && json_object_size(p) == 2);
        FUZZ_CHECK(field && strncmp(field, "data", 4) == 0);
        FUZZ_CHECK(message && message[0] != '\0');
    }
}

/* Validates data for mode, twice, and returns the count of problems.
 * *validated gets the deep copy that was validated (nulls stripped from its
 * attributes for create and replace); the caller releases it. */
static int body_validate(enum payment_check mode, const json_t *data, json_t **validated)
{
    json_t *copy = json_deep_copy(data); /* NULL when data is absent */
    FUZZ_CHECK(copy != NULL || data == NULL);
    json_t *errors = json_array(), *again = json_array();
    FUZZ_CHECK(errors && again);

    int n = payment_validate_data(body_validator, mode, copy, errors);
    body_check_problems(errors, n);
    int n2 = payment_validate_data(body_validator, mode, copy, again);
    FUZZ_CHECK(n2 == n && json_equal(errors, again));

    json_t *attributes = json_object_get(copy, "attributes");
    if (mode != PAYMENT_CHECK_PATCH && json_is_object(attributes))
        FUZZ_CHECK(!body_has_null_member(attributes));

    json_decref(errors);
    json_decref(again);
    *validated = copy;
    return n;
}

/* Builds the document a write stores and checks its row and text. */
static void body_check_document(const char *type, const char *id, int64_t version,
                                const char *org, json_t *attributes, json_t *relationships)
{
    json_t *doc = payment_doc_new(type, id, version, org, BODY_CREATED_ON, BODY_MODIFIED_MS,
                                  attributes, relationships);
    FUZZ_CHECK(doc != NULL);

    struct payment_row row;
    char *text = NULL;
    FUZZ_CHECK(payment_doc_row(doc, BODY_CREATED_MS, BODY_MODIFIED_MS, &row, &text) == 0);
    FUZZ_CHECK(text != NULL && row.doc == text && row.doc_len == strlen(text));
    FUZZ_CHECK(strcmp(row.id, id) == 0 && strcmp(row.organisation_id, org) == 0);
    FUZZ_CHECK(row.version == version);
    FUZZ_CHECK(row.created_ms == BODY_CREATED_MS && row.modified_ms == BODY_MODIFIED_MS);

    /* Valid attributes always have a currency and a parseable amount. */
    const char *currency = payment_doc_string(attributes, "currency");
    FUZZ_CHECK(currency && row.currency && strcmp(row.currency, currency) == 0);
    FUZZ_CHECK(strlen(row.amount_key) == DECIMAL_KEY_LEN);
    const char *date = payment_doc_string(attributes, "processing_date");
    FUZZ_CHECK(date ? strcmp(row.processing_date, date) == 0 : row.processing_date[0] == '\0');
    const char *scheme = payment_doc_string(attributes, "payment_scheme");
    FUZZ_CHECK(scheme ? row.payment_scheme && strcmp(row.payment_scheme, scheme) == 0
                      : row.payment_scheme == NULL);

    /* What is stored parses back to the same document ... */
    json_error_t err;
    json_t *back = json_loads(text, JSON_REJECT_DUPLICATES, &err);
    FUZZ_CHECK(back != NULL && json_equal(back, doc));

    /* ... which a client may send back as a replace ... */
    json_t *errors = json_array();
    FUZZ_CHECK(errors != NULL);
    int n = payment_validate_data(body_validator, PAYMENT_CHECK_REPLACE, back, errors);
    if (n != 0)
        fprintf(stderr, "stored document invalid: %s\n", text);
    FUZZ_CHECK(n == 0);

    /* ... and whose body the server accepts. */
    size_t len = strlen(text) + sizeof "{\"data\":}";
    char *body = malloc(len);
    FUZZ_CHECK(body != NULL);
    snprintf(body, len, "{\"data\":%s}", text);
    char msg[256] = "";
    json_t *root = payment_body_parse(body, strlen(body), msg, sizeof msg);
    if (!root)
        fprintf(stderr, "stored document refused: %s\n", msg);
    FUZZ_CHECK(root != NULL);

    json_decref(root);
    free(body);
    json_decref(errors);
    json_decref(back);
    free(text);
    json_decref(doc);
}

static const char *body_type_or(const json_t *data, const char *fallback)
{
    const char *t = payment_doc_string(data, "type");
    return t && *t ? t : fallback;
}

/* A valid create, stored as the create handler stores it. */
static void body_check_create(const json_t *data)
{
    char id[UUID_STR_LEN + 1], org[UUID_STR_LEN + 1];
    const char *given = payment_doc_string(data, "id");
    const char *org_in = payment_doc_string(data, "organisation_id");
    if (given)
        FUZZ_CHECK(uuid_canonical(given, strlen(given), id) == 0);
    else
        memcpy(id, BODY_GENERATED_ID, sizeof id);
    FUZZ_CHECK(org_in && uuid_canonical(org_in, strlen(org_in), org) == 0);
    json_t *relationships = json_object_get(data, "relationships");
    body_check_document(body_type_or(data, "payments"), id, 0, org,
                        json_object_get(data, "attributes"),
                        json_is_null(relationships) ? NULL : relationships);
}

/* A valid patch merged into the stored payment, as the patch handler does:
 * the merged attributes are validated in full, and when valid stored. */
static void body_check_patch(const json_t *data)
{
    json_t *pa = json_object_get(data, "attributes");
    json_t *pr = json_object_get(data, "relationships");
    json_t *attributes = json_is_null(pa) || !pa ? json_incref(body_stored)
                                                 : merge_patch(body_stored, pa);
    FUZZ_CHECK(json_is_object(attributes)); /* a valid patch's attributes are an object */
    json_t *relationships = NULL;
    if (json_is_object(pr)) {
        json_t *none = json_object();
        FUZZ_CHECK(none != NULL);
        relationships = merge_patch(none, pr);
        json_decref(none);
        FUZZ_CHECK(json_is_object(relationships));
    }

    payment_attributes_strip_nulls(attributes);
    FUZZ_CHECK(!body_has_null_member(attributes));
    json_t *errors = json_array();
    FUZZ_CHECK(errors != NULL);
    int n = payment_validate_attributes(body_validator, attributes, errors);
    body_check_problems(errors, n);
    if (n == 0)
        body_check_document(body_type_or(data, "payments"), BODY_GENERATED_ID, 1,
                            "ee2fb143-6dfe-4787-b183-ca8ddd4164d2", attributes, relationships);
    json_decref(errors);
    json_decref(relationships);
    json_decref(attributes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_check_utf8((const char *)data, size);
    char msg[256] = "";
    json_t *root = payment_body_parse((const char *)data, size, msg, sizeof msg);
    if (!root) {
        FUZZ_CHECK(msg[0] != '\0');
        fuzz_check_error_message(msg);
        /* Refused: then jansson refuses it too, or it is no object within
         * the depth limit. */
        json_t *plain = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
        FUZZ_CHECK(!json_is_object(plain) || body_depth(plain) > PAYMENT_BODY_MAX_DEPTH);
        json_decref(plain);
        return 0;
    }
    FUZZ_CHECK(json_is_object(root));
    FUZZ_CHECK(body_depth(root) <= PAYMENT_BODY_MAX_DEPTH);

    const json_t *body_data = json_object_get(root, "data");
    json_t *created, *replaced, *patched;
    int n_create = body_validate(PAYMENT_CHECK_CREATE, body_data, &created);
    int n_replace = body_validate(PAYMENT_CHECK_REPLACE, body_data, &replaced);
    int n_patch = body_validate(PAYMENT_CHECK_PATCH, body_data, &patched);

    /* Create adds exactly one rule to replace (version 0); patch drops the
     * required members and leaves attributes to the merge. */
    FUZZ_CHECK(n_create == n_replace || n_create == n_replace + 1);
    FUZZ_CHECK(n_patch <= n_replace);

    if (n_create == 0)
        body_check_create(created);
    if (n_patch == 0)
        body_check_patch(patched);

    json_decref(created);
    json_decref(replaced);
    json_decref(patched);
    json_decref(root);
    return 0;
}
