/* fastbody_fixture: what test_fastbody.c and test_fastbody_patch.c share:
 * the general path and the fast path of a body side by side, their stored
 * documents compared, and the bodies the cases build.  Header-only: each
 * test binary is one file. */
#ifndef TESTS_PAYMENT_FASTBODY_FIXTURE_H
#define TESTS_PAYMENT_FASTBODY_FIXTURE_H

#include "payment/fastbody.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/uuid.h"
#include "payment/changes.h"
#include "payment/doc.h"
#include "payment/revision.h"
#include "payment/schema.h"
#include "test.h"


#define SEED_PATH "spec/seed-payment.json"
#define CORPUS_DIR "fuzz/corpus/body"
#define ORG "743d5b63-8e6f-432e-a8fa-c5d8d2ee5fcb"
#define ID "4ee3a8d8-ca7b-4290-a52c-dd5b6165ec43"
#define GENERATED_ID "01920000-0000-7000-8000-000000000001" /* when the body names none */
#define CREATED "2026-11-26T10:00:00.123Z"
#define CREATED_MS 1795687200123LL
#define MODIFIED_MS 1795687260456LL

/* Set by each binary's setup. */
static payment_validator *validator;

/* What a write of body would store, by either path: the document's text
 * and its row.  ok: the path accepted the body. */
struct stored {
    int ok;
    char *text;
    struct payment_row row;
};

static inline void stored_free(struct stored *s)
{
    free(s->text);
}

/* The id and organisation the handler would give the document: the body's
 * (canonical) or GENERATED_ID; the organisation must be a UUID. */
static inline int base_ids(const char *id_in, size_t id_len, const char *org_in, size_t org_len,
                    char id[UUID_STR_LEN + 1], char org[UUID_STR_LEN + 1])
{
    if (!id_in)
        memcpy(id, GENERATED_ID, UUID_STR_LEN + 1);
    else if (uuid_canonical(id_in, id_len, id) != 0)
        return -1;
    return org_in && uuid_canonical(org_in, org_len, org) == 0 ? 0 : -1;
}

static inline int64_t mode_version(enum payment_check mode)
{
    return mode == PAYMENT_CHECK_CREATE ? 0 : 7;
}

/* The row's strings point into the document it was written from: copies
 * them out (into static memory, one row at a time) before it goes. */
static inline void keep_row_strings(struct payment_row *row)
{
    static char strings[5][512];
    const char **cols[5] = {&row->currency, &row->payment_scheme, &row->payment_type,
                            &row->reference, &row->end_to_end_reference};
    for (int i = 0; i < 5; i++) {
        if (*cols[i]) {
            CHECK(strlen(*cols[i]) < sizeof strings[i]);
            snprintf(strings[i], sizeof strings[i], "%s", *cols[i]);
            *cols[i] = strings[i];
        }
    }
}

/* payment_body_parse, payment_validate_data, payment_doc_new, payment_doc_row. */
static inline struct stored general_path(enum payment_check mode, const char *body, size_t len)
{
    struct stored s = {0};
    char msg[256];
    json_t *root = payment_body_parse(body, len, msg, sizeof msg);
    json_t *errors = json_array();
    CHECK(errors != NULL);
    json_t *data = json_object_get(root, "data");
    if (!root || payment_validate_data(validator, mode, data, errors) != 0)
        goto out;
    const char *id_in = payment_doc_string(data, "id");
    const char *org_in = payment_doc_string(data, "organisation_id");
    char id[UUID_STR_LEN + 1], org[UUID_STR_LEN + 1];
    CHECK(base_ids(id_in, id_in ? strlen(id_in) : 0, org_in, org_in ? strlen(org_in) : 0, id,
                   org) == 0);
    const char *type = payment_doc_string(data, "type");
    json_t *rel = json_object_get(data, "relationships");
    json_t *doc = payment_doc_new(type && *type ? type : "payments", id, mode_version(mode), org,
                                  CREATED, MODIFIED_MS, json_object_get(data, "attributes"),
                                  json_is_null(rel) ? NULL : rel);
    CHECK(doc != NULL);
    s.ok = doc && payment_doc_row(doc, CREATED_MS, MODIFIED_MS, &s.row, &s.text) == 0;
    CHECK(s.ok);
    keep_row_strings(&s.row);
    json_decref(doc);
out:
    json_decref(errors);
    json_decref(root);
    return s;
}

/* payment_fastbody_read and payment_fastbody_doc; fb keeps the row's
 * strings. */
static inline struct stored fast_path(struct payment_fastbody *fb, enum payment_check mode,
                               const char *body, size_t len)
{
    struct stored s = {0};
    int rc = payment_fastbody_read(fb, validator, mode, body, len);
    CHECK(rc == PAYMENT_FASTBODY_OK || rc == PAYMENT_FASTBODY_DEFER);
    if (rc != PAYMENT_FASTBODY_OK)
        return s;
    size_t id_len = 0, org_len = 0;
    const char *id_in = fb->id ? payment_fastbody_string(fb, fb->id, &id_len) : NULL;
    char id[UUID_STR_LEN + 1], org[UUID_STR_LEN + 1];
    if (fb->id)
        CHECK(uuid_canonical(id_in, id_len, id) == 0);
    const char *org_in = payment_fastbody_string(fb, fb->organisation_id, &org_len);
    CHECK(base_ids(id_in, id_len, org_in, org_len, id, org) == 0);
    struct payment_fastbody_base base = {
        .fallback_type = "payments",
        .id = id,
        .version = mode_version(mode),
        .organisation_id = org,
        .created_on = CREATED,
        .created_ms = CREATED_MS,
        .modified_ms = MODIFIED_MS,
    };
    CHECK_INT(payment_fastbody_doc(fb, &base, &s.row, &s.text), PAYMENT_FASTBODY_OK);
    s.ok = 1;
    return s;
}

static inline int same_column(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* The two paths stored the same text and row. */
static inline int same_stored(const struct stored *fast, const struct stored *general)
{
    const struct payment_row *a = &fast->row, *b = &general->row;
    int same = fast->text && general->text && strcmp(fast->text, general->text) == 0 &&
               a->doc == fast->text && a->doc_len == strlen(fast->text) &&
               strcmp(a->id, b->id) == 0 && strcmp(a->organisation_id, b->organisation_id) == 0 &&
               a->version == b->version && a->created_ms == b->created_ms &&
               a->modified_ms == b->modified_ms && same_column(a->currency, b->currency) &&
               same_column(a->payment_scheme, b->payment_scheme) &&
               same_column(a->payment_type, b->payment_type) &&
               same_column(a->reference, b->reference) &&
               same_column(a->end_to_end_reference, b->end_to_end_reference) &&
               strcmp(a->processing_date, b->processing_date) == 0 &&
               strcmp(a->amount_key, b->amount_key) == 0;
    if (!same)
        fprintf(stderr, "  fast:    %s\n  general: %s\n", fast->text ? fast->text : "(none)",
                general->text ? general->text : "(none)");
    return same;
}

/* Runs both paths for mode: returns 1 when the fast path said OK (and then
 * checks the general path agrees), 0 when it deferred; *general_ok gets
 * the general path's verdict. */
static inline int compare(struct payment_fastbody *fb, enum payment_check mode, const char *body,
                   size_t len, int *general_ok)
{
    struct stored fast = fast_path(fb, mode, body, len);
    struct stored general = general_path(mode, body, len);
    if (fast.ok) {
        CHECK(general.ok);
        if (!general.ok)
            fprintf(stderr, "  fast OK, general refused: %.*s\n", (int)len, body);
        else
            CHECK(same_stored(&fast, &general));
    }
    if (general_ok)
        *general_ok = general.ok;
    stored_free(&fast);
    stored_free(&general);
    return fast.ok;
}

/* compare() for both modes on a NUL-terminated body; returns the modes the
 * fast path took (bit 0 create, bit 1 replace). */
static inline int compare_both(struct payment_fastbody *fb, const char *body)
{
    int create = compare(fb, PAYMENT_CHECK_CREATE, body, strlen(body), NULL);
    int replace = compare(fb, PAYMENT_CHECK_REPLACE, body, strlen(body), NULL);
    return create | replace << 1;
}

static inline char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *data = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = (cap ? cap * 2 : 8192);
            char *p = realloc(data, cap);
            if (!p)
                break;
            data = p;
        }
        size_t got = fread(data + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    fclose(f);
    if (data)
        data[n] = '\0';
    *len = n;
    return data;
}

/* The seed sample, compact as a client would send it, with the fix the
 * benchmarks make: its payment_purpose_coded "string" breaks the spec
 * (x-length 4), so they send "X". */
static inline char *seed_compact(void)
{
    json_t *seed = json_load_file(SEED_PATH, JSON_REJECT_DUPLICATES, NULL);
    CHECK(seed != NULL);
    json_t *attributes = json_object_get(json_object_get(seed, "data"), "attributes");
    CHECK(json_object_set_new(attributes, "payment_purpose_coded", json_string("X")) == 0);
    char *text = seed ? json_dumps(seed, JSON_COMPACT) : NULL;
    json_decref(seed);
    return text;
}

/* A body: data members before organisation_id, then attributes holding
 * amount and currency after the given ones. */
static inline char *body_of(const char *data_members, const char *attributes)
{
    static char body[4096];
    int n = snprintf(body, sizeof body,
                     "{\"data\":{%s\"organisation_id\":\"" ORG "\",\"attributes\":{%s}}}",
                     data_members, attributes);
    CHECK(n > 0 && (size_t)n < sizeof body);
    return body;
}

#define MONEY "\"amount\":\"100.00\",\"currency\":\"GBP\""

#endif
