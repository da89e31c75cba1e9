/* revision: the next version of a stored payment from a replace or a
 * patch, as PUT, PATCH and the worker build it. */
#include "payment/revision.h"

#include <string.h>

#include "test.h"

#define PID "01a21772-e6ce-76e2-ae8b-04892833f0e0"
#define ORG "ee2fb143-6dfe-4787-b183-ca8ddd4164d2"
#define ORG_UPPER "EE2FB143-6DFE-4787-B183-CA8DDD4164D2"
#define OTHER_ORG "00000000-0000-4000-8000-000000000001"

static payment_validator *v;
static int attributes_valid; /* next()'s revision_input.attributes_valid */

/* A stored payment at version 2 with a reference and relationships. */
static json_t *stored(void)
{
    return json_pack("{s:s,s:s,s:I,s:s,s:s,s:s,s:{s:s,s:s,s:s,s:s},s:{s:{s:s}}}", "type",
                     "payments", "id", PID, "version", (json_int_t)2, "organisation_id", ORG,
                     "created_on", "2026-01-02T03:04:05.678Z", "modified_on",
                     "2026-01-03T00:00:00.000Z", "attributes", "amount", "10.00", "currency",
                     "GBP", "payment_scheme", "FPS", "reference", "old", "relationships",
                     "beneficiary", "id", "x");
}

static int next(const json_t *cur, const char *data_json, enum revision_mode mode,
                const char *org, json_t **doc, json_t **errors)
{
    json_t *data = json_loads(data_json, 0, NULL);
    CHECK(data != NULL);
    json_t *before = json_deep_copy(data);
    struct revision_input in = {
        .current = cur,
        .created_ms = 0,
        .base_version = 2,
        .data = data,
        .mode = mode,
        .organisation_id = org,
        .validator = v,
        .attributes_valid = attributes_valid,
        .now_ms = 1767225600000, /* 2026-01-01T00:00:00Z */
    };
    int rc = data ? revision_next(&in, doc, errors) : -100;
    CHECK(json_equal(data, before)); /* the request is left as it was */
    json_decref(before);
    json_decref(data);
    return rc;
}

static const char *attr(const json_t *doc, const char *name)
{
    return json_string_value(json_object_get(json_object_get(doc, "attributes"), name));
}

static void test_setup(void)
{
    v = payment_validator_new();
    CHECK(v != NULL);
}

/* A patch merges into the stored attributes; null removes a member; what
 * the version does not change is kept. */
static void test_patch_merges(void)
{
    json_t *cur = stored(), *doc = NULL, *errors = NULL;
    CHECK_INT(next(cur, "{\"attributes\":{\"amount\":\"12.50\",\"reference\":null}}",
                   REVISION_PATCH, ORG, &doc, &errors),
              REVISION_OK);
    CHECK(errors == NULL);
    CHECK_STR(attr(doc, "amount"), "12.50");
    CHECK_STR(attr(doc, "currency"), "GBP");
    CHECK(attr(doc, "reference") == NULL);
    CHECK_INT(json_integer_value(json_object_get(doc, "version")), 3);
    CHECK_STR(json_string_value(json_object_get(doc, "id")), PID);
    CHECK_STR(json_string_value(json_object_get(doc, "organisation_id")), ORG);
    CHECK_STR(json_string_value(json_object_get(doc, "type")), "payments");
    CHECK_STR(json_string_value(json_object_get(doc, "created_on")), "2026-01-02T03:04:05.678Z");
    CHECK_STR(json_string_value(json_object_get(doc, "modified_on")), "2026-01-01T00:00:00.000Z");
    CHECK(json_equal(json_object_get(doc, "relationships"), json_object_get(cur, "relationships")));
    CHECK_STR(attr(cur, "reference"), "old"); /* the stored document is left as it was */
    json_decref(doc);
    json_decref(cur);
}

/* Null attributes change nothing; null relationships remove them; a
 * relationships patch merges. */
static void test_patch_nulls(void)
{
    json_t *cur = stored(), *doc = NULL, *errors = NULL;
    CHECK_INT(next(cur, "{\"attributes\":null,\"relationships\":null}", REVISION_PATCH, NULL,
                   &doc, &errors),
              REVISION_OK);
    CHECK(json_equal(json_object_get(doc, "attributes"), json_object_get(cur, "attributes")));
    CHECK(json_object_get(doc, "relationships") == NULL);
    json_decref(doc);
    CHECK_INT(next(cur, "{\"relationships\":{\"debtor\":{\"id\":\"y\"}}}", REVISION_PATCH, NULL,
                   &doc, &errors),
              REVISION_OK);
    const json_t *rel = json_object_get(doc, "relationships");
    CHECK(json_object_get(rel, "beneficiary") && json_object_get(rel, "debtor"));
    json_decref(doc);
    json_decref(cur);
}

/* A replace takes the request's attributes (nulls removed) and
 * relationships, and the type it names. */
static void test_replace(void)
{
    json_t *cur = stored(), *doc = NULL, *errors = NULL;
    CHECK_INT(next(cur,
                   "{\"type\":\"Payment\",\"organisation_id\":\"" ORG_UPPER "\",\"attributes\":"
                   "{\"amount\":\"30.00\",\"currency\":\"EUR\",\"numeric_reference\":null}}",
                   REVISION_REPLACE, ORG, &doc, &errors),
              REVISION_OK);
    CHECK_STR(attr(doc, "amount"), "30.00");
    CHECK(attr(doc, "reference") == NULL);
    CHECK(json_object_get(json_object_get(doc, "attributes"), "numeric_reference") == NULL);
    CHECK(json_object_get(doc, "relationships") == NULL);
    CHECK_STR(json_string_value(json_object_get(doc, "type")), "Payment");
    CHECK_INT(json_integer_value(json_object_get(doc, "version")), 3);
    json_decref(doc);
    json_decref(cur);
}

/* The organisation cannot change, from the body or from the operation. */
static void test_organisation_fixed(void)
{
    json_t *cur = stored(), *doc = NULL, *errors = NULL;
    CHECK_INT(next(cur, "{\"organisation_id\":\"" OTHER_ORG "\",\"attributes\":{}}",
                   REVISION_PATCH, NULL, &doc, &errors),
              REVISION_EINVALID);
    CHECK(doc == NULL);
    CHECK_INT(json_array_size(errors), 1);
    CHECK_STR(json_string_value(json_object_get(json_array_get(errors, 0), "field")),
              "data.organisation_id");
    json_decref(errors);
    CHECK_INT(next(cur, "{\"attributes\":{}}", REVISION_PATCH, OTHER_ORG, &doc, &errors),
              REVISION_EINVALID);
    CHECK_INT(json_array_size(errors), 1);
    json_decref(errors);
    CHECK_INT(next(cur, "{\"organisation_id\":\"nope\",\"attributes\":{}}", REVISION_PATCH,
                   NULL, &doc, &errors),
              REVISION_EINVALID);
    json_decref(errors);
    json_decref(cur);
}

/* An invalid result reports every problem with its field. */
static void test_invalid_result(void)
{
    json_t *cur = stored(), *doc = NULL, *errors = NULL;
    CHECK_INT(next(cur, "{\"attributes\":{\"amount\":\"-1\",\"currency\":7}}",
                   REVISION_PATCH, NULL, &doc, &errors),
              REVISION_EINVALID);
    CHECK(doc == NULL);
    CHECK(json_array_size(errors) >= 2);
    int amount = 0;
    for (size_t i = 0; i < json_array_size(errors); i++)
        amount |= strcmp(json_string_value(json_object_get(json_array_get(errors, i), "field")),
                         "data.attributes.amount") == 0;
    CHECK(amount);
    json_decref(errors);
    CHECK_INT(next(cur, "{\"attributes\":7}", REVISION_PATCH, NULL, &doc, &errors),
              REVISION_EINVALID);
    CHECK_STR(json_string_value(json_object_get(json_array_get(errors, 0), "field")),
              "data.attributes");
    json_decref(errors);
    CHECK_INT(next(cur, "{\"relationships\":[1]}", REVISION_REPLACE, NULL, &doc, &errors),
              REVISION_EINVALID); /* no attributes, and relationships not an object */
    json_decref(errors);
    CHECK_INT(next(cur, "{\"relationships\":7}", REVISION_PATCH, NULL, &doc, &errors),
              REVISION_EINVALID);
    CHECK_STR(json_string_value(json_object_get(json_array_get(errors, 0), "field")),
              "data.relationships");
    json_decref(errors);
    json_decref(cur);
}

/* created_on comes from the stored creation time when the document has
 * none; a document without an id or organisation is refused. */
static void test_stored_document(void)
{
    json_t *cur = stored(), *doc = NULL, *errors = NULL;
    json_object_del(cur, "created_on");
    CHECK_INT(next(cur, "{\"attributes\":{}}", REVISION_PATCH, NULL, &doc, &errors), REVISION_OK);
    CHECK_STR(json_string_value(json_object_get(doc, "created_on")), "1970-01-01T00:00:00.000Z");
    json_decref(doc);
    json_object_del(cur, "organisation_id");
    CHECK_INT(next(cur, "{\"attributes\":{}}", REVISION_PATCH, NULL, &doc, &errors),
              REVISION_ESTORED);
    CHECK(doc == NULL && errors == NULL);
    json_decref(cur);
}

/* A replace whose attributes the caller validated (the HTTP handler's body
 * check) takes them as they are; a patch's merge result is checked all the
 * same, as is everything without the flag (the worker). */
static void test_attributes_valid(void)
{
    json_t *cur = stored(), *doc = NULL, *errors = NULL;
    const char *partial = "{\"attributes\":{\"reference\":\"new\"}}"; /* no amount */
    attributes_valid = 1;
    CHECK_INT(next(cur, partial, REVISION_REPLACE, NULL, &doc, &errors), REVISION_OK);
    CHECK_STR(attr(doc, "reference"), "new");
    json_decref(doc);
    CHECK_INT(next(cur, "{\"attributes\":{\"amount\":\"-1\"}}", REVISION_PATCH, NULL, &doc,
                   &errors),
              REVISION_EINVALID);
    json_decref(errors);
    attributes_valid = 0;
    CHECK_INT(next(cur, partial, REVISION_REPLACE, NULL, &doc, &errors), REVISION_EINVALID);
    json_decref(errors);
    json_decref(cur);
}

static void test_teardown(void)
{
    payment_validator_free(v);
}

TEST_MAIN(TEST(test_setup), TEST(test_patch_merges), TEST(test_patch_nulls), TEST(test_replace),
          TEST(test_organisation_fixed), TEST(test_invalid_result), TEST(test_stored_document),
          TEST(test_attributes_valid), TEST(test_teardown))
