/* fuzz_fastbody: the body fast path (payment/fastbody.h) against the general
 * path it stands in front of.
 *
 * For each input and each mode (CREATE, REPLACE), one payment_fastbody
 * reading the input for both modes in turn:
 *  - when payment_fastbody_read says OK, the general path accepts the body:
 *    payment_body_parse, then payment_validate_data on its data;
 *  - and then payment_fastbody_doc gives byte for byte the text, and field
 *    for field the row, that payment_doc_new (same type, id, version,
 *    organisation, times; attributes with nulls stripped, relationships when
 *    not null) and payment_doc_row give;
 *  - OK for CREATE implies OK for REPLACE (create only adds "version 0");
 *  - a read answers OK or DEFER only (memory does not run out here), and a
 *    deferred read leaves no member tokens behind.
 * Liveness, checked once in LLVMFuzzerInitialize: the seed sample as the
 * benchmarks send it (payment_purpose_coded "X") is OK for both modes, so a
 * fast path that defers everything cannot pass. */
#include <jansson.h>

#include "core/uuid.h"
#include "fuzz.h"
#include "payment/doc.h"
#include "payment/fastbody.h"
#include "payment/validate.h"

#define FB_CREATED_ON "2026-11-26T10:00:00.123Z"
#define FB_CREATED_MS INT64_C(1795687200123) /* FB_CREATED_ON */
#define FB_MODIFIED_MS INT64_C(1795687260456)
#define FB_GENERATED_ID "01920000-0000-7000-8000-000000000001" /* when data.id is absent */
/* The seed sample from fuzz/ (make -C fuzz) or from the repository root. */
static const char *const fb_seed_paths[] = {"../spec/seed-payment.json", "spec/seed-payment.json"};

/* Set once by LLVMFuzzerInitialize and only read afterwards. */
static payment_validator *fb_validator; /* the spec's patterns, compiled once */

/* The version each mode's document holds. */
static int64_t fb_version(enum payment_check mode)
{
    return mode == PAYMENT_CHECK_CREATE ? 0 : 3;
}

/* The general path's document and row for data, valid for mode; the
 * caller frees *text and decrefs *doc (the row points into both). */
static void fb_general_doc(enum payment_check mode, json_t *data, json_t **doc,
                           struct payment_row *row, char **text)
{
    char id[UUID_STR_LEN + 1], org[UUID_STR_LEN + 1];
    const char *given = payment_doc_string(data, "id");
    const char *org_in = payment_doc_string(data, "organisation_id");
    if (given)
        FUZZ_CHECK(uuid_canonical(given, strlen(given), id) == 0);
    else
        memcpy(id, FB_GENERATED_ID, sizeof id);
    FUZZ_CHECK(org_in && uuid_canonical(org_in, strlen(org_in), org) == 0);
    const char *type = payment_doc_string(data, "type");
    json_t *relationships = json_object_get(data, "relationships");
    *doc = payment_doc_new(type && *type ? type : "payments", id, fb_version(mode), org,
                           FB_CREATED_ON, FB_MODIFIED_MS, json_object_get(data, "attributes"),
                           json_is_null(relationships) ? NULL : relationships);
    FUZZ_CHECK(*doc != NULL);
    FUZZ_CHECK(payment_doc_row(*doc, FB_CREATED_MS, FB_MODIFIED_MS, row, text) == 0);
}

/* The fast path's document and row, after an OK read. */
static void fb_fast_doc(struct payment_fastbody *fb, enum payment_check mode,
                        struct payment_row *row, char **text)
{
    char id[UUID_STR_LEN + 1], org[UUID_STR_LEN + 1];
    size_t len;
    const char *s;
    if (fb->id) {
        s = payment_fastbody_string(fb, fb->id, &len);
        FUZZ_CHECK(s && uuid_canonical(s, len, id) == 0);
    } else {
        memcpy(id, FB_GENERATED_ID, sizeof id);
    }
    s = payment_fastbody_string(fb, fb->organisation_id, &len);
    FUZZ_CHECK(s && uuid_canonical(s, len, org) == 0);
    struct payment_fastbody_base base = {
        .fallback_type = "payments",
        .id = id,
        .version = fb_version(mode),
        .organisation_id = org,
        .created_on = FB_CREATED_ON,
        .created_ms = FB_CREATED_MS,
        .modified_ms = FB_MODIFIED_MS,
    };
    FUZZ_CHECK(payment_fastbody_doc(fb, &base, row, text) == PAYMENT_FASTBODY_OK);
    FUZZ_CHECK(*text && row->doc == *text && row->doc_len == strlen(*text));
}

static int fb_same_column(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* The general path accepts body for mode and stores what the fast path
 * stored (text, row). */
static void fb_check_general(enum payment_check mode, const char *body, size_t len,
                             const struct payment_row *fast, const char *fast_text)
{
    char msg[256] = "";
    json_t *root = payment_body_parse(body, len, msg, sizeof msg);
    if (!root)
        fprintf(stderr, "fast path OK, body refused: %s\n", msg);
    FUZZ_CHECK(root != NULL);
    json_t *data = json_object_get(root, "data");
    json_t *errors = json_array();
    FUZZ_CHECK(errors != NULL);
    int n = payment_validate_data(fb_validator, mode, data, errors);
    if (n != 0) {
        char *e = json_dumps(errors, JSON_COMPACT);
        fprintf(stderr, "fast path OK, mode %d invalid: %s\n", (int)mode, e ? e : "?");
        free(e);
    }
    FUZZ_CHECK(n == 0);

    json_t *doc;
    struct payment_row row;
    char *text;
    fb_general_doc(mode, data, &doc, &row, &text);
    if (strcmp(text, fast_text) != 0)
        fprintf(stderr, "documents differ:\n fast:    %s\n general: %s\n", fast_text, text);
    FUZZ_CHECK(strcmp(text, fast_text) == 0 && row.doc_len == fast->doc_len);
    FUZZ_CHECK(strcmp(row.id, fast->id) == 0);
    FUZZ_CHECK(strcmp(row.organisation_id, fast->organisation_id) == 0);
    FUZZ_CHECK(row.version == fast->version);
    FUZZ_CHECK(row.created_ms == fast->created_ms && row.modified_ms == fast->modified_ms);
    FUZZ_CHECK(fb_same_column(row.currency, fast->currency));
    FUZZ_CHECK(fb_same_column(row.payment_scheme, fast->payment_scheme));
    FUZZ_CHECK(fb_same_column(row.payment_type, fast->payment_type));
    FUZZ_CHECK(fb_same_column(row.reference, fast->reference));
    FUZZ_CHECK(fb_same_column(row.end_to_end_reference, fast->end_to_end_reference));
    FUZZ_CHECK(strcmp(row.processing_date, fast->processing_date) == 0);
    FUZZ_CHECK(strcmp(row.amount_key, fast->amount_key) == 0);

    free(text);
    json_decref(doc);
    json_decref(errors);
    json_decref(root);
}

/* One mode: 1 when the fast path took the body (and the general path
 * agreed), 0 when it deferred. */
static int fb_check_mode(struct payment_fastbody *fb, enum payment_check mode, const char *body,
                         size_t len)
{
    int rc = payment_fastbody_read(fb, fb_validator, mode, body, len);
    FUZZ_CHECK(rc == PAYMENT_FASTBODY_OK || rc == PAYMENT_FASTBODY_DEFER);
    if (rc != PAYMENT_FASTBODY_OK) {
        FUZZ_CHECK(fb->data == 0 && fb->attributes == 0 && fb->organisation_id == 0);
        return 0;
    }
    FUZZ_CHECK(fb->data && fb->attributes && fb->organisation_id);
    struct payment_row row;
    char *text;
    fb_fast_doc(fb, mode, &row, &text);
    fb_check_general(mode, body, len, &row, text);
    free(text);
    return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    json_object_seed(0x7061796d); /* the same hash layout on every run */
    fb_validator = payment_validator_new();
    FUZZ_CHECK(fb_validator != NULL);

    json_t *seed = NULL;
    for (size_t i = 0; !seed && i < sizeof fb_seed_paths / sizeof fb_seed_paths[0]; i++)
        seed = json_load_file(fb_seed_paths[i], JSON_REJECT_DUPLICATES, NULL);
    if (!seed)
        fprintf(stderr, "spec/seed-payment.json: not found (run from the root or fuzz/)\n");
    FUZZ_CHECK(seed != NULL);
    json_t *attributes = json_object_get(json_object_get(seed, "data"), "attributes");
    FUZZ_CHECK(json_object_set_new(attributes, "payment_purpose_coded", json_string("X")) == 0);
    char *text = json_dumps(seed, JSON_COMPACT);
    FUZZ_CHECK(text != NULL);
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    FUZZ_CHECK(fb_check_mode(&fb, PAYMENT_CHECK_CREATE, text, strlen(text)) == 1);
    FUZZ_CHECK(fb_check_mode(&fb, PAYMENT_CHECK_REPLACE, text, strlen(text)) == 1);
    payment_fastbody_free(&fb);
    free(text);
    json_decref(seed);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    int create = fb_check_mode(&fb, PAYMENT_CHECK_CREATE, body, size);
    int replace = fb_check_mode(&fb, PAYMENT_CHECK_REPLACE, body, size);
    FUZZ_CHECK(!create || replace);
    payment_fastbody_free(&fb);
    return 0;
}
