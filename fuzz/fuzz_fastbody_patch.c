/* fuzz_fastbody_patch: a PATCH on the body fast path
 * (payment_fastbody_read(PATCH), payment_fastbody_merge,
 * payment_fastbody_doc) against the general path it stands in front of
 * (payment_body_parse, payment_validate_data(PATCH), revision_next with
 * REVISION_PATCH, payment_doc_row).
 *
 * Input: `STORED 0xFF PATCH`, or `PATCH` alone (0xFF never occurs in
 * UTF-8).  The stored document a patch is merged into is always one this
 * server would store: written by payment_doc_new + payment_doc_row from a
 * data object valid for a replace, so its UUIDs are canonical and its
 * attributes hold no null.  When STORED is such a request body, the
 * document is made from it; any other STORED picks one of the fixed
 * documents below by its first byte ("0" the seed sample, "1" the next,
 * and so on); a PATCH alone is merged into every
 * fixed document in turn.  One payment_fastbody serves every pair of an
 * input, so its memory is reused across reads and merges.  For each pair:
 *  - the read and the merge answer OK or DEFER only (memory does not run
 *    out here), and a DEFER leaves no member tokens behind;
 *  - when the read says OK, payment_body_parse accepts the patch and
 *    payment_validate_data(PATCH) finds no problem in its data;
 *  - when the merge says OK too, and the patch names no other organisation
 *    than the stored one (the API declines such a patch before merging),
 *    revision_next says REVISION_OK, and payment_fastbody_doc gives byte
 *    for byte the text, and field for field the row, that payment_doc_row
 *    gives of revision_next's document, from the same stored document,
 *    base version, creation and modification times;
 *  - the changes between the stored and the next document read on tapes
 *    (payment_changes_between_tapes) are those read on jansson's trees
 *    (payment_changes_between).
 * Liveness, checked once in LLVMFuzzerInitialize: realistic patches of the
 * stored seed sample (the amount, a new attribute, an optional attribute
 * nulled, a nested member, relationships added, the envelope given) are
 * taken by the fast path, so a merge that defers everything cannot pass. */
#include <jansson.h>

#include "core/clock.h"
#include "core/jtape.h"
#include "core/uuid.h"
#include "fuzz.h"
#include "payment/changes.h"
#include "payment/doc.h"
#include "payment/fastbody.h"
#include "payment/revision.h"
#include "payment/validate.h"

#define FBP_SEPARATOR 0xFF
#define FBP_ORG "ee2fb143-6dfe-4787-b183-ca8ddd4164d2" /* the seed sample's */
#define FBP_ID "4ee3a8d8-ca7b-4290-a52c-dd5b6165ec43"  /* when a stored body names none */
#define FBP_CREATED_ON "2026-11-26T10:00:00.123Z"
#define FBP_CREATED_MS INT64_C(1795687200123) /* FBP_CREATED_ON */
#define FBP_STORED_MS INT64_C(1795687230000)  /* the stored document's modified_on */
#define FBP_NOW_MS INT64_C(1795687260456)     /* the patch's */
#define FBP_VERSION 4                          /* the stored version */
/* The seed sample from fuzz/ (make -C fuzz) or from the repository root. */
static const char *const fbp_seed_paths[] = {"../spec/seed-payment.json",
                                             "spec/seed-payment.json"};

/* A stored document, as the store hands it to a patch. */
struct fbp_stored {
    char *text;         /* its text (compact, as stored); owned */
    json_t *tree;       /* jansson's reading of it, as the general path's */
    struct jtape tape;  /* jtape's reading; count 0 when jtape defers */
    int64_t version;    /* its version, the patch's base */
    int64_t created_ms; /* the row's creation time */
};

/* What a stored document's fixed variant leaves out, beyond the body. */
enum fbp_drop {
    FBP_KEEP = 0,
    FBP_DROP_ATTRIBUTES = 1,   /* a document without attributes */
    FBP_DROP_TYPE = 2,         /* ... without a type */
    FBP_EMPTY_TYPE = 4,        /* ... whose type is "" */
    FBP_DROP_CREATED_ON = 8,   /* ... without created_on (created_ms stands) */
};

/* The fixed stored documents: request bodies valid for a replace, each
 * made a document and then changed by drop.  The seed sample comes first
 * (made in LLVMFuzzerInitialize). */
static const struct {
    const char *body;
    unsigned drop;
} fbp_fixed_bodies[] = {
    {"{\"data\":{\"type\":\"payments\",\"id\":\"" FBP_ID "\",\"organisation_id\":\"" FBP_ORG
     "\",\"attributes\":{\"amount\":\"10.00\",\"currency\":\"GBP\",\"reference\":\"r1\","
     "\"custom\":\"text\",\"list\":[{\"a\":1},2],\"flag\":true}}}",
     FBP_KEEP},
    {"{\"data\":{\"organisation_id\":\"" FBP_ORG "\",\"attributes\":{\"amount\":\"1\","
     "\"currency\":\"EUR\",\"payment_scheme\":\"SEPACT\",\"beneficiary_party\":{\"name\":\"B\","
     "\"account_with\":{\"bank_id\":\"1\",\"bank_address\":[\"x\"]}},\"custom\":{\"k\":\"v\","
     "\"n\":[1,{\"m\":{}}]}},\"relationships\":{\"payment\":{\"data\":[{\"type\":\"t\","
     "\"id\":\"x\"}]},\"gone\":null,\"s\":\"str\"}}}",
     FBP_KEEP},
    {"{\"data\":{\"type\":\"Other_type\",\"organisation_id\":\"" FBP_ORG "\",\"attributes\":"
     "{\"amount\":\"5.5\",\"currency\":\"USD\",\"reference\":\"caf\\u00e9 \\\"q\\\"\\n\\u0001\","
     "\"end_to_end_reference\":\"\\/ \xe2\x80\xa8\"},\"relationships\":{}}}",
     FBP_KEEP},
    {"{\"data\":{\"organisation_id\":\"" FBP_ORG "\",\"attributes\":{\"amount\":\"1\","
     "\"currency\":\"GBP\"},\"relationships\":{\"a\":1}}}",
     FBP_DROP_ATTRIBUTES},
    {"{\"data\":{\"organisation_id\":\"" FBP_ORG "\",\"attributes\":{\"amount\":\"2.00\","
     "\"currency\":\"GBP\",\"processing_date\":\"2015-02-12\"}}}",
     FBP_EMPTY_TYPE | FBP_DROP_CREATED_ON},
    {"{\"data\":{\"organisation_id\":\"" FBP_ORG "\",\"attributes\":{\"amount\":\"3.00\","
     "\"currency\":\"GBP\",\"payment_scheme\":\"FPS\"}}}",
     FBP_DROP_TYPE},
};
#define FBP_FIXED (1 + sizeof fbp_fixed_bodies / sizeof fbp_fixed_bodies[0])

/* Set once by LLVMFuzzerInitialize and only read afterwards. */
static payment_validator *fbp_validator;       /* the spec's patterns, compiled once */
static struct fbp_stored fbp_fixed[FBP_FIXED]; /* [0] the seed sample */

static void fbp_stored_free(struct fbp_stored *st)
{
    free(st->text);
    json_decref(st->tree);
    jtape_free(&st->tape);
    *st = (struct fbp_stored){.tape = JTAPE_INIT};
}

/* The stored document body (len bytes) gives, changed by drop, into *st:
 * 1, or 0 when body is not valid for a replace (st untouched). */
static int fbp_stored_make(struct fbp_stored *st, const char *body, size_t len, unsigned drop)
{
    char msg[256];
    json_t *root = payment_body_parse(body, len, msg, sizeof msg);
    json_t *data = json_object_get(root, "data");
    json_t *errors = json_array();
    FUZZ_CHECK(errors != NULL);
    int valid = root && payment_validate_data(fbp_validator, PAYMENT_CHECK_REPLACE, data,
                                              errors) == 0;
    json_decref(errors);
    if (!valid) {
        json_decref(root);
        return 0;
    }
    char id[UUID_STR_LEN + 1], org[UUID_STR_LEN + 1];
    const char *id_in = payment_doc_string(data, "id");
    const char *org_in = payment_doc_string(data, "organisation_id");
    if (id_in)
        FUZZ_CHECK(uuid_canonical(id_in, strlen(id_in), id) == 0);
    else
        memcpy(id, FBP_ID, sizeof id);
    FUZZ_CHECK(org_in && uuid_canonical(org_in, strlen(org_in), org) == 0);
    const char *type = payment_doc_string(data, "type");
    json_t *relationships = json_object_get(data, "relationships");
    json_t *doc = payment_doc_new(type && *type ? type : "payments", id, FBP_VERSION, org,
                                  FBP_CREATED_ON, FBP_STORED_MS,
                                  json_object_get(data, "attributes"),
                                  json_is_null(relationships) ? NULL : relationships);
    FUZZ_CHECK(doc != NULL);
    char *text = NULL;
    struct payment_row row;
    if (drop == FBP_KEEP) {
        FUZZ_CHECK(payment_doc_row(doc, FBP_CREATED_MS, FBP_STORED_MS, &row, &text) == 0);
    } else {
        if (drop & FBP_DROP_ATTRIBUTES)
            FUZZ_CHECK(json_object_del(doc, "attributes") == 0);
        if (drop & FBP_DROP_TYPE)
            FUZZ_CHECK(json_object_del(doc, "type") == 0);
        if (drop & FBP_EMPTY_TYPE)
            FUZZ_CHECK(json_object_set_new(doc, "type", json_string("")) == 0);
        if (drop & FBP_DROP_CREATED_ON)
            FUZZ_CHECK(json_object_del(doc, "created_on") == 0);
        text = json_dumps(doc, JSON_COMPACT);
        FUZZ_CHECK(text != NULL);
    }
    json_decref(doc);
    json_decref(root);

    *st = (struct fbp_stored){.text = text, .tape = JTAPE_INIT, .version = FBP_VERSION,
                              .created_ms = FBP_CREATED_MS};
    st->tree = json_loadb(text, strlen(text), 0, NULL); /* as the general handler reads it */
    FUZZ_CHECK(json_is_object(st->tree));
    int rc = jtape_parse(&st->tape, text, strlen(text), PAYMENT_BODY_MAX_DEPTH);
    FUZZ_CHECK(rc == JTAPE_OK || rc == JTAPE_DEFER);
    return 1;
}

/* How a pair ended. */
enum fbp_outcome {
    FBP_READ_DEFERRED,   /* payment_fastbody_read(PATCH) deferred */
    FBP_STORED_UNREAD,   /* jtape leaves the stored document to jansson: no merge */
    FBP_MERGE_DEFERRED,  /* payment_fastbody_merge deferred */
    FBP_OTHER_ORG,       /* merged, but the patch names another organisation */
    FBP_SAME,            /* merged, and both paths store the same */
};

static void fbp_check_no_tokens(const struct payment_fastbody *fb)
{
    FUZZ_CHECK(fb->data == 0 && fb->id == 0 && fb->version == 0 && fb->organisation_id == 0 &&
               fb->type == 0 && fb->attributes == 0 && fb->relationships == 0);
}

/* Whether the patch's data names an organisation other than the stored
 * document's (the API declines it before any merge). */
static int fbp_other_org(const json_t *data, const json_t *stored)
{
    const char *org = payment_doc_string(data, "organisation_id");
    const char *stored_org = payment_doc_string(stored, "organisation_id");
    char canon[UUID_STR_LEN + 1];
    FUZZ_CHECK(stored_org != NULL);
    return org && (uuid_canonical(org, strlen(org), canon) != 0 || strcmp(canon, stored_org) != 0);
}

/* The fast path's next document after an OK merge: *text (the caller
 * frees it) and *row. */
static void fbp_fast_doc(struct payment_fastbody *fb, const struct fbp_stored *st,
                         struct payment_row *row, char **text)
{
    const char *type = payment_doc_string(st->tree, "type");
    const char *created_on = payment_doc_string(st->tree, "created_on");
    char created_buf[CLOCK_TIMESTAMP_LEN + 1];
    if (!created_on) {
        clock_format_ms(st->created_ms, created_buf);
        created_on = created_buf;
    }
    struct payment_fastbody_base base = {
        .fallback_type = type && *type ? type : "payments",
        .id = payment_doc_string(st->tree, "id"),
        .version = st->version + 1,
        .organisation_id = payment_doc_string(st->tree, "organisation_id"),
        .created_on = created_on,
        .created_ms = st->created_ms,
        .modified_ms = FBP_NOW_MS,
    };
    FUZZ_CHECK(base.id && base.organisation_id);
    FUZZ_CHECK(payment_fastbody_doc(fb, &base, row, text) == PAYMENT_FASTBODY_OK);
    FUZZ_CHECK(*text && row->doc == *text && row->doc_len == strlen(*text));
}

static int fbp_same_column(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* The row the fast path wrote is the general path's, field for field. */
static void fbp_check_rows(const struct payment_row *fast, const char *fast_text,
                           const struct payment_row *general, const char *general_text)
{
    if (strcmp(fast_text, general_text) != 0)
        fprintf(stderr, "documents differ:\n fast:    %s\n general: %s\n", fast_text,
                general_text);
    FUZZ_CHECK(strcmp(fast_text, general_text) == 0 && fast->doc_len == general->doc_len);
    FUZZ_CHECK(strcmp(fast->id, general->id) == 0);
    FUZZ_CHECK(strcmp(fast->organisation_id, general->organisation_id) == 0);
    FUZZ_CHECK(fast->version == general->version);
    FUZZ_CHECK(fast->created_ms == general->created_ms &&
               fast->modified_ms == general->modified_ms);
    FUZZ_CHECK(fbp_same_column(fast->currency, general->currency));
    FUZZ_CHECK(fbp_same_column(fast->payment_scheme, general->payment_scheme));
    FUZZ_CHECK(fbp_same_column(fast->payment_type, general->payment_type));
    FUZZ_CHECK(fbp_same_column(fast->reference, general->reference));
    FUZZ_CHECK(fbp_same_column(fast->end_to_end_reference, general->end_to_end_reference));
    FUZZ_CHECK(strcmp(fast->processing_date, general->processing_date) == 0);
    FUZZ_CHECK(strcmp(fast->amount_key, general->amount_key) == 0);
}

/* The changes of the next document (text, and general's tree next) read on
 * tapes are those read on trees. */
static void fbp_check_changes(const struct fbp_stored *st, const char *text, const json_t *next)
{
    struct jtape tape = JTAPE_INIT;
    FUZZ_CHECK(jtape_parse(&tape, text, strlen(text), PAYMENT_BODY_MAX_DEPTH) == JTAPE_OK);
    char *on_tapes = payment_changes_between_tapes(&st->tape, &tape);
    char *on_trees = payment_changes_between(st->tree, next);
    FUZZ_CHECK(on_tapes && on_trees);
    if (strcmp(on_tapes, on_trees) != 0)
        fprintf(stderr, "changes differ:\n tapes: %s\n trees: %s\n", on_tapes, on_trees);
    FUZZ_CHECK(strcmp(on_tapes, on_trees) == 0);
    free(on_tapes);
    free(on_trees);
    jtape_free(&tape);
}

/* revision_next's next document for the patch's data merged into st,
 * which must be REVISION_OK, against the fast path's text and row. */
static void fbp_check_general(const struct fbp_stored *st, const json_t *data,
                              const struct payment_row *fast, const char *fast_text)
{
    struct revision_input in = {
        .current = st->tree,
        .created_ms = st->created_ms,
        .base_version = st->version,
        .data = data,
        .mode = REVISION_PATCH,
        .organisation_id = NULL,
        .validator = fbp_validator,
        .attributes_valid = 0,
        .now_ms = FBP_NOW_MS,
    };
    json_t *next = NULL, *errors = NULL;
    int rc = revision_next(&in, &next, &errors);
    if (rc != REVISION_OK) {
        char *e = errors ? json_dumps(errors, JSON_COMPACT) : NULL;
        fprintf(stderr, "fast path merged, revision_next %d: %s\n", rc, e ? e : "?");
        free(e);
    }
    FUZZ_CHECK(rc == REVISION_OK && next != NULL && errors == NULL);
    struct payment_row row;
    char *text = NULL;
    FUZZ_CHECK(payment_doc_row(next, st->created_ms, FBP_NOW_MS, &row, &text) == 0);
    fbp_check_rows(fast, fast_text, &row, text);
    fbp_check_changes(st, fast_text, next);
    free(text);
    json_decref(next);
}

/* The general path's reading of a patch the fast path read: accepted, and
 * valid for PATCH.  Returns the body's root (the caller decrefs it). */
static json_t *fbp_general_read(const char *patch, size_t len)
{
    char msg[256] = "";
    json_t *root = payment_body_parse(patch, len, msg, sizeof msg);
    if (!root)
        fprintf(stderr, "fast path read the patch, body refused: %s\n", msg);
    FUZZ_CHECK(root != NULL);
    json_t *errors = json_array();
    FUZZ_CHECK(errors != NULL);
    int n = payment_validate_data(fbp_validator, PAYMENT_CHECK_PATCH,
                                  json_object_get(root, "data"), errors);
    if (n != 0) {
        char *e = json_dumps(errors, JSON_COMPACT);
        fprintf(stderr, "fast path read the patch, invalid: %s\n", e ? e : "?");
        free(e);
    }
    FUZZ_CHECK(n == 0);
    json_decref(errors);
    return root;
}

/* One patch on one stored document, on fb. */
static enum fbp_outcome fbp_check_pair(struct payment_fastbody *fb, const struct fbp_stored *st,
                                       const char *patch, size_t len)
{
    int rc = payment_fastbody_read(fb, fbp_validator, PAYMENT_CHECK_PATCH, patch, len);
    FUZZ_CHECK(rc == PAYMENT_FASTBODY_OK || rc == PAYMENT_FASTBODY_DEFER);
    if (rc != PAYMENT_FASTBODY_OK) {
        fbp_check_no_tokens(fb);
        return FBP_READ_DEFERRED;
    }
    FUZZ_CHECK(fb->data != 0);
    json_t *root = fbp_general_read(patch, len);
    enum fbp_outcome out = FBP_STORED_UNREAD;
    if (st->tape.count == 0)
        goto done; /* the API declines a stored document jtape does not read */
    rc = payment_fastbody_merge(fb, fbp_validator, &st->tape);
    FUZZ_CHECK(rc == PAYMENT_FASTBODY_OK || rc == PAYMENT_FASTBODY_DEFER);
    if (rc != PAYMENT_FASTBODY_OK) {
        fbp_check_no_tokens(fb);
        out = FBP_MERGE_DEFERRED;
        goto done;
    }
    FUZZ_CHECK(fb->data != 0 && fb->attributes != 0);
    json_t *data = json_object_get(root, "data");
    out = FBP_OTHER_ORG;
    if (fbp_other_org(data, st->tree))
        goto done;
    struct payment_row row;
    char *text = NULL;
    fbp_fast_doc(fb, st, &row, &text);
    fbp_check_general(st, data, &row, text);
    free(text);
    out = FBP_SAME;
done:
    json_decref(root);
    return out;
}

/* The seed sample as the benchmarks send it (payment_purpose_coded "X"),
 * compact: a malloc'd body. */
static char *fbp_seed_body(void)
{
    json_t *seed = NULL;
    for (size_t i = 0; !seed && i < sizeof fbp_seed_paths / sizeof fbp_seed_paths[0]; i++)
        seed = json_load_file(fbp_seed_paths[i], JSON_REJECT_DUPLICATES, NULL);
    if (!seed)
        fprintf(stderr, "spec/seed-payment.json: not found (run from the root or fuzz/)\n");
    FUZZ_CHECK(seed != NULL);
    json_t *attributes = json_object_get(json_object_get(seed, "data"), "attributes");
    FUZZ_CHECK(json_object_set_new(attributes, "payment_purpose_coded", json_string("X")) == 0);
    char *text = json_dumps(seed, JSON_COMPACT);
    FUZZ_CHECK(text != NULL);
    json_decref(seed);
    return text;
}

/* Patches of the stored seed sample the fast path must take. */
static const char *const fbp_live_patches[] = {
    "{\"data\":{\"attributes\":{\"amount\":\"27.50\"}}}",
    "{\"data\":{\"attributes\":{\"new_member\":\"added\"}}}",
    "{\"data\":{\"attributes\":{\"reference\":null}}}",
    "{\"data\":{\"attributes\":{\"beneficiary_party\":{\"account_name\":\"J Doe\"}}}}",
    "{\"data\":{\"relationships\":{\"extra\":{\"data\":[{\"type\":\"x\",\"id\":\"1\"}]}}}}",
    "{\"data\":{\"type\":\"payments\",\"id\":\"" FBP_ID "\",\"version\":" "4"
    ",\"organisation_id\":\"" FBP_ORG "\",\"attributes\":{\"amount\":\"1.00\","
    "\"remittance_information\":\"paid\"}}}",
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    json_object_seed(0x7061796d); /* the same hash layout on every run */
    fbp_validator = payment_validator_new();
    FUZZ_CHECK(fbp_validator != NULL);

    char *seed = fbp_seed_body();
    FUZZ_CHECK(fbp_stored_make(&fbp_fixed[0], seed, strlen(seed), FBP_KEEP) == 1);
    free(seed);
    for (size_t i = 1; i < FBP_FIXED; i++) {
        const char *body = fbp_fixed_bodies[i - 1].body;
        FUZZ_CHECK(fbp_stored_make(&fbp_fixed[i], body, strlen(body),
                                   fbp_fixed_bodies[i - 1].drop) == 1);
    }

    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    for (size_t i = 0; i < sizeof fbp_live_patches / sizeof fbp_live_patches[0]; i++) {
        const char *patch = fbp_live_patches[i];
        enum fbp_outcome out = fbp_check_pair(&fb, &fbp_fixed[0], patch, strlen(patch));
        if (out != FBP_SAME)
            fprintf(stderr, "liveness: the seed sample's patch %s ended %d\n", patch, (int)out);
        FUZZ_CHECK(out == FBP_SAME);
    }
    payment_fastbody_free(&fb);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *sep = memchr(data, FBP_SEPARATOR, size);
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    if (!sep) {
        for (size_t i = 0; i < FBP_FIXED; i++)
            (void)fbp_check_pair(&fb, &fbp_fixed[i], (const char *)data, size);
        payment_fastbody_free(&fb);
        return 0;
    }
    const char *stored = (const char *)data, *patch = (const char *)sep + 1;
    size_t stored_len = (size_t)(sep - data), patch_len = size - stored_len - 1;
    struct fbp_stored made = {.tape = JTAPE_INIT};
    if (fbp_stored_make(&made, stored, stored_len, FBP_KEEP)) {
        (void)fbp_check_pair(&fb, &made, patch, patch_len);
        fbp_stored_free(&made);
    } else {
        size_t pick = stored_len ? (uint8_t)(stored[0] - '0') % FBP_FIXED : 0; /* "0": the seed */
        (void)fbp_check_pair(&fb, &fbp_fixed[pick], patch, patch_len);
    }
    payment_fastbody_free(&fb);
    return 0;
}
