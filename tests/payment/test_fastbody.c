/* test_fastbody: the body fast path against the general path.  Whenever
 * payment_fastbody_read says OK, payment_body_parse + payment_validate_data
 * accept the body for the same mode, and payment_fastbody_doc gives the
 * bytes and the row payment_doc_new + payment_doc_row give; bodies that
 * break one rule each are DEFER. */
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

static payment_validator *validator;

/* What a write of body would store, by either path: the document's text
 * and its row.  ok: the path accepted the body. */
struct stored {
    int ok;
    char *text;
    struct payment_row row;
};

static void stored_free(struct stored *s)
{
    free(s->text);
}

/* The id and organisation the handler would give the document: the body's
 * (canonical) or GENERATED_ID; the organisation must be a UUID. */
static int base_ids(const char *id_in, size_t id_len, const char *org_in, size_t org_len,
                    char id[UUID_STR_LEN + 1], char org[UUID_STR_LEN + 1])
{
    if (!id_in)
        memcpy(id, GENERATED_ID, UUID_STR_LEN + 1);
    else if (uuid_canonical(id_in, id_len, id) != 0)
        return -1;
    return org_in && uuid_canonical(org_in, org_len, org) == 0 ? 0 : -1;
}

static int64_t mode_version(enum payment_check mode)
{
    return mode == PAYMENT_CHECK_CREATE ? 0 : 7;
}

/* The row's strings point into the document it was written from: copies
 * them out (into static memory, one row at a time) before it goes. */
static void keep_row_strings(struct payment_row *row)
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
static struct stored general_path(enum payment_check mode, const char *body, size_t len)
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
static struct stored fast_path(struct payment_fastbody *fb, enum payment_check mode,
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

static int same_column(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* The two paths stored the same text and row. */
static int same_stored(const struct stored *fast, const struct stored *general)
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
static int compare(struct payment_fastbody *fb, enum payment_check mode, const char *body,
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
static int compare_both(struct payment_fastbody *fb, const char *body)
{
    int create = compare(fb, PAYMENT_CHECK_CREATE, body, strlen(body), NULL);
    int replace = compare(fb, PAYMENT_CHECK_REPLACE, body, strlen(body), NULL);
    return create | replace << 1;
}

static char *read_file(const char *path, size_t *len)
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
static char *seed_compact(void)
{
    json_t *seed = json_load_file(SEED_PATH, JSON_REJECT_DUPLICATES, NULL);
    CHECK(seed != NULL);
    json_t *attributes = json_object_get(json_object_get(seed, "data"), "attributes");
    CHECK(json_object_set_new(attributes, "payment_purpose_coded", json_string("X")) == 0);
    char *text = seed ? json_dumps(seed, JSON_COMPACT) : NULL;
    json_decref(seed);
    return text;
}

/* ---- tests ---- */

static void test_seed_sample(void)
{
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    char *compact = seed_compact();
    size_t len;
    char *pretty = read_file(SEED_PATH, &len);
    CHECK(compact && pretty);
    if (compact && pretty) {
        CHECK_INT(compare_both(&fb, compact), 3);
        /* As published it breaks the spec: both paths refuse it. */
        int general_ok = 1;
        CHECK(!compare(&fb, PAYMENT_CHECK_REPLACE, pretty, len, &general_ok) && !general_ok);
        char *coded = strstr(pretty, "\"payment_purpose_coded\": \"string\"");
        CHECK(coded != NULL);
        if (coded)
            memcpy(strstr(coded, "\"string\""), "\"X\"     ", 8); /* same length */
        CHECK_INT(compare_both(&fb, pretty), 3);
        /* The row's columns, as the seed has them. */
        struct stored s = fast_path(&fb, PAYMENT_CHECK_CREATE, compact, strlen(compact));
        CHECK(s.ok);
        CHECK_STR(s.row.currency, "EUR");
        CHECK_STR(s.row.payment_scheme, "FPS");
        CHECK_STR(s.row.reference, "rent for oct");
        CHECK_STR(s.row.processing_date, "2015-02-12");
        CHECK(s.ok && strstr(s.text, "null") == NULL); /* the seed's null attributes are gone */
        static const char head[] =
            "{\"type\":\"payments\",\"id\":\"" GENERATED_ID "\",\"version\":0,";
        CHECK(s.ok && strncmp(s.text, head, sizeof head - 1) == 0);
        stored_free(&s);
    }
    free(compact);
    free(pretty);
    payment_fastbody_free(&fb);
}

static void test_corpus(void)
{
    DIR *dir = opendir(CORPUS_DIR);
    CHECK(dir != NULL);
    if (!dir)
        return;
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    int files = 0, fast_ok = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", CORPUS_DIR, e->d_name);
        size_t len;
        char *body = read_file(path, &len);
        CHECK(body != NULL);
        if (!body)
            continue;
        files++;
        fast_ok += compare(&fb, PAYMENT_CHECK_CREATE, body, len, NULL);
        fast_ok += compare(&fb, PAYMENT_CHECK_REPLACE, body, len, NULL);
        free(body);
    }
    closedir(dir);
    payment_fastbody_free(&fb);
    CHECK(files > 100);
    CHECK(fast_ok > 0); /* the corpus holds valid bodies the fast path takes */
}

/* A body: data members before organisation_id, then attributes holding
 * amount and currency after the given ones. */
static char *body_of(const char *data_members, const char *attributes)
{
    static char body[4096];
    int n = snprintf(body, sizeof body,
                     "{\"data\":{%s\"organisation_id\":\"" ORG "\",\"attributes\":{%s}}}",
                     data_members, attributes);
    CHECK(n > 0 && (size_t)n < sizeof body);
    return body;
}

#define MONEY "\"amount\":\"100.00\",\"currency\":\"GBP\""

static void test_valid_small(void)
{
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    CHECK_INT(compare_both(&fb, body_of("", MONEY)), 3);
    CHECK_INT(compare_both(&fb, body_of("\"type\":\"\",\"id\":\"" ID "\",", MONEY)), 3);
    CHECK_INT(compare_both(&fb, body_of("\"type\":\"Pay_ments\",\"version\":0,", MONEY)), 3);
    CHECK_INT(compare_both(&fb, body_of("\"version\":7,", MONEY)), 2); /* replace only */
    CHECK_INT(compare_both(&fb, body_of("\"relationships\":{\"a\":[null,{\"b\":null}]},", MONEY)),
              3);
    CHECK_INT(
        compare_both(&fb, body_of("\"relationships\":null,\"type\":null,\"id\":null,", MONEY)), 3);
    CHECK_INT(compare_both(&fb, body_of("\"created_on\":5,\"extra\":[1,2],", MONEY)), 3);
    CHECK_INT(compare_both(&fb, "{\"data\":{\"attributes\":{" MONEY "},\"organisation_id\":\"" ORG
                                "\"},\"other\":true}"),
              3);
    payment_fastbody_free(&fb);
}

static void test_uppercase_uuids(void)
{
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    const char *body = "{\"data\":{\"id\":\"4EE3A8D8-CA7B-4290-A52C-DD5B6165EC43\","
                       "\"organisation_id\":\"743D5B63-8E6F-432E-A8FA-C5D8D2EE5FCB\","
                       "\"attributes\":{" MONEY "}}}";
    CHECK_INT(compare_both(&fb, body), 3);
    struct stored s = fast_path(&fb, PAYMENT_CHECK_CREATE, body, strlen(body));
    CHECK(s.ok);
    CHECK_STR(s.row.id, ID);
    CHECK_STR(s.row.organisation_id, ORG);
    stored_free(&s);
    payment_fastbody_free(&fb);
}

static void test_nulls_stripped(void)
{
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    const char *body = body_of(
        "", "\"reference\":null," MONEY ",\"beneficiary_party\":{\"name\":null,\"account_with\":"
            "{\"bank_id\":null,\"bank_address\":[\"a\",\"b\"]},\"address\":[\"x\"]},"
            "\"charges_information\":{\"sender_charges\":[{\"amount\":null,\"currency\":\"GBP\"},"
            "{\"amount\":\"1\",\"currency\":null}]},"
            "\"custom\":{\"deep\":[[{\"x\":null,\"y\":[null,{\"z\":null}]}],null]},\"last\":null");
    CHECK_INT(compare_both(&fb, body), 3);
    struct stored s = fast_path(&fb, PAYMENT_CHECK_REPLACE, body, strlen(body));
    CHECK(s.ok);
    CHECK(s.row.reference == NULL);
    CHECK(s.ok && strstr(s.text, "\"custom\":{\"deep\":[[{\"y\":[null,{}]}],null]}") != NULL);
    CHECK(s.ok && strstr(s.text, "\"last\"") == NULL && strstr(s.text, "\"name\"") == NULL);
    stored_free(&s);
    payment_fastbody_free(&fb);
}

static void test_escapes(void)
{
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    const char *body = body_of(
        "\"type\":\"\\u0070ay\\u006dents\",\"id\":\"4ee3a8d8-ca7b-4290-a52c-dd5b6165ec4\\u0033\",",
        "\"amount\":\"1\\u0030.5\",\"currency\":\"\\u0047BP\",\"payment_scheme\":\"F\\u0050S\","
        "\"reference\":\"caf\\u00e9 \\\"q\\\" \\/ \\t\\u0001\\ud834\\udd1e\","
        "\"end_to_end_reference\":\"line\\nnext\",\"payment_type\":\"\xc3\xa9t\xc3\xa9\","
        "\"processing_date\":\"2015\\u002d02-12\",\"remittance_information\":\"\\u007f\\u2028\"");
    CHECK_INT(compare_both(&fb, body), 3);
    struct stored s = fast_path(&fb, PAYMENT_CHECK_CREATE, body, strlen(body));
    CHECK(s.ok);
    CHECK_STR(s.row.currency, "GBP");
    CHECK_STR(s.row.payment_scheme, "FPS");
    CHECK_STR(s.row.reference, "caf\xc3\xa9 \"q\" / \t\x01\xf0\x9d\x84\x9e");
    CHECK_STR(s.row.end_to_end_reference, "line\nnext");
    CHECK_STR(s.row.processing_date, "2015-02-12");
    CHECK_STR(s.row.id, ID);
    stored_free(&s);
    payment_fastbody_free(&fb);
}

/* Bodies that break one rule each: the general path refuses them, and the
 * fast path defers. */
static void test_broken_rules_defer(void)
{
    static const struct {
        const char *data; /* data members before organisation_id */
        const char *attributes;
    } cases[] = {
        {"\"id\":\"not-a-uuid\",", MONEY},
        {"\"id\":5,", MONEY},
        {"\"id\":\"4ee3a8d8-ca7b-4290-a52c-dd5b6165ec4\",", MONEY},
        {"\"type\":\"pay-ments\",", MONEY},
        {"\"type\":\"pay ments\",", MONEY},
        {"\"type\":7,", MONEY},
        {"\"version\":-1,", MONEY},
        {"\"version\":\"0\",", MONEY},
        {"\"version\":true,", MONEY},
        {"\"relationships\":[],", MONEY},
        {"\"relationships\":\"x\",", MONEY},
        {"", "\"amount\":\"100.00\""},                         /* currency required */
        {"", "\"currency\":\"GBP\""},                          /* amount required */
        {"", "\"amount\":null,\"currency\":\"GBP\""},          /* null is absent */
        {"", "\"amount\":\"100.00\",\"currency\":\"gbp\""},    /* not a code */
        {"", "\"amount\":\"100.00\",\"currency\":\"XXY\""},
        {"", "\"amount\":100,\"currency\":\"GBP\""},
        {"", "\"amount\":\"0.00\",\"currency\":\"GBP\""},
        {"", "\"amount\":\"1.001\",\"currency\":\"GBP\""},
        {"", "\"amount\":\"1.5\",\"currency\":\"JPY\""},
        {"", "\"amount\":\"01.5\",\"currency\":\"GBP\""},
        {"", "\"amount\":\"1.\",\"currency\":\"GBP\""},
        {"", "\"amount\":\"1..2\",\"currency\":\"GBP\""},
        {"", "\"amount\":\"-1\",\"currency\":\"GBP\""},
        {"", "\"amount\":\"123456789012345678901\",\"currency\":\"GBP\""},
        {"", MONEY ",\"payment_scheme\":\"CHAPS\""},
        {"", MONEY ",\"payment_scheme\":\"SEPACT\""},           /* EUR only */
        {"", MONEY ",\"payment_scheme\":\"SEPAINSTANT\""},
        {"", "\"amount\":\"250000.01\",\"currency\":\"GBP\",\"payment_scheme\":\"FPS\""},
        {"", "\"amount\":\"15000.01\",\"currency\":\"EUR\",\"payment_scheme\":\"SEPAINSTANT\""},
        {"", "\"amount\":\"20000000.01\",\"currency\":\"GBP\",\"payment_scheme\":\"BACS\""},
        {"", MONEY ",\"payment_scheme\":5"},
        {"", MONEY ",\"reference\":\"1234567890123456789\""}, /* 19 > 18 */
        {"", MONEY ",\"reference\":7"},
        {"", MONEY ",\"processing_date\":\"2015-02-30\""},
        {"", MONEY ",\"payment_acceptance_datetime\":\"2017-09-30 12:36\""},
        {"", MONEY ",\"beneficiary_party\":[]"},
        {"", MONEY ",\"beneficiary_party\":{\"account_number_code\":\"XX\"}"},
        {"", MONEY ",\"beneficiary_party\":{\"account_type\":\"0\"}"},
        {"", MONEY ",\"beneficiary_party\":{\"address\":[\"a\",null]}"},
        {"", MONEY ",\"beneficiary_party\":{\"address\":\"a\"}"},
        {"", MONEY ",\"beneficiary_party\":{\"account_with\":{\"bank_id_code\":\"XX\"}}"},
        {"", MONEY ",\"beneficiary_party\":{\"birth_country\":\"FRA\"}"},
        {"", MONEY ",\"receivers_correspondent\":{\"bank_address\":[\"" /* 141 > 140 */
             "0123456789012345678901234567890123456789012345678901234567890123456789"
             "01234567890123456789012345678901234567890123456789012345678901234567890\"]}"},
        {"", MONEY ",\"charges_information\":{\"sender_charges\":[{\"amount\":1}]}"},
        {"", MONEY ",\"charges_information\":{\"sender_charges\":[5]}"},
        {"", MONEY ",\"swift\":{\"header\":{\"priority\":\"123456789\"}}"},
        {"", MONEY ",\"ultimate_debtor\":{\"birth_date\":\"1977-13-01\"}"},
        {"", MONEY ",\"fx\":{\"original_currency\":\"\\u0045UR\\u0045\"}"},
    };
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *body = body_of(cases[i].data, cases[i].attributes);
        for (enum payment_check mode = PAYMENT_CHECK_CREATE; mode <= PAYMENT_CHECK_REPLACE;
             mode++) {
            int general_ok = 1;
            int fast_ok = compare(&fb, mode, body, strlen(body), &general_ok);
            if (fast_ok || general_ok)
                fprintf(stderr, "  case %zu mode %d: fast %d general %d: %s\n", i, (int)mode,
                        fast_ok, general_ok, body);
            CHECK(!fast_ok && !general_ok);
        }
    }
    /* Beyond attributes: the envelope, the body, the version on create. */
    static const char *const bodies[] = {
        "{\"data\":{\"attributes\":{" MONEY "}}}",                       /* no organisation */
        "{\"data\":{\"organisation_id\":null,\"attributes\":{" MONEY "}}}",
        "{\"data\":{\"organisation_id\":\"x\",\"attributes\":{" MONEY "}}}",
        "{\"data\":{\"organisation_id\":\"" ORG "\"}}",                  /* no attributes */
        "{\"data\":{\"organisation_id\":\"" ORG "\",\"attributes\":null}}",
        "{\"data\":{\"organisation_id\":\"" ORG "\",\"attributes\":[]}}",
        "{\"data\":[]}",
        "{\"data\":null}",
        "{}",
        "[]",
        "",
        "{\"data\":{\"organisation_id\":\"" ORG "\",\"attributes\":{" MONEY "}}",  /* cut */
        "{\"data\":{\"organisation_id\":\"" ORG "\",\"attributes\":{" MONEY "}},\"data\":1}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        int general_ok = 1;
        CHECK(!compare(&fb, PAYMENT_CHECK_CREATE, bodies[i], strlen(bodies[i]), &general_ok));
        CHECK(!general_ok);
        CHECK(!compare(&fb, PAYMENT_CHECK_REPLACE, bodies[i], strlen(bodies[i]), &general_ok));
        CHECK(!general_ok);
    }
    int general_ok = 1;
    const char *v1 = body_of("\"version\":1,", MONEY);
    CHECK(!compare(&fb, PAYMENT_CHECK_CREATE, v1, strlen(v1), &general_ok) && !general_ok);
    CHECK(compare(&fb, PAYMENT_CHECK_REPLACE, v1, strlen(v1), &general_ok) && general_ok);
    payment_fastbody_free(&fb);
}

/* What jtape declines is left to jansson, whichever its verdict. */
static void test_doubt_defers(void)
{
    static const struct {
        const char *attributes;
        int general_ok; /* jansson's verdict */
    } cases[] = {
        {MONEY ",\"custom\":1.5", 1},
        {MONEY ",\"custom\":1e3", 1},
        {MONEY ",\"cu\\u0073tom\":1", 1},
        {MONEY ",\"custom\":123456789012345678", 1},   /* 18 digits: jtape's own */
        {MONEY ",\"custom\":1234567890123456789", 1},  /* 19: jansson's */
        {MONEY ",\"custom\":12345678901234567890", 0}, /* too big for jansson */
        {MONEY ",\"custom\":\"a\\u0000b\"", 0},      /* payment_body_parse refuses NUL */
    };
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *body = body_of("", cases[i].attributes);
        int general_ok = -1;
        int fast_ok = compare(&fb, PAYMENT_CHECK_CREATE, body, strlen(body), &general_ok);
        CHECK_INT(fast_ok, i == 3);
        CHECK_INT(general_ok, cases[i].general_ok);
    }
    payment_fastbody_free(&fb);
}

/* The patterns decided without regexec give the validator's verdicts. */
static void test_patterns(void)
{
    static const char *const types[] = {
        "", "payments", "Pay_ments", "_", "a-b", "a b", "a1", "1", "\xc3\xa9", "a\\tb",
        "\\u0041", "\\u00e9",
    };
    static const char *const amounts[] = {
        "1", "1.00", "12345678901234567.00", "123456789012345678.00", "1.0.0", "..", ".5",
        "1a", "1 ", "\\u0031", "\xd9\xa1", "1e2", "1,00",
    };
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    char members[256], attrs[256];
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        snprintf(members, sizeof members, "\"type\":\"%s\",", types[i]);
        const char *body = body_of(members, MONEY);
        int general_ok;
        int fast_ok = compare(&fb, PAYMENT_CHECK_CREATE, body, strlen(body), &general_ok);
        if (fast_ok != general_ok)
            fprintf(stderr, "  type %s: fast %d general %d\n", types[i], fast_ok, general_ok);
        CHECK_INT(fast_ok, general_ok);
    }
    for (size_t i = 0; i < sizeof amounts / sizeof amounts[0]; i++) {
        snprintf(attrs, sizeof attrs, "\"amount\":\"%s\",\"currency\":\"GBP\"", amounts[i]);
        const char *body = body_of("", attrs);
        int general_ok;
        int fast_ok = compare(&fb, PAYMENT_CHECK_CREATE, body, strlen(body), &general_ok);
        if (fast_ok != general_ok)
            fprintf(stderr, "  amount %s: fast %d general %d\n", amounts[i], fast_ok,
                    general_ok);
        CHECK_INT(fast_ok, general_ok);
    }
    payment_fastbody_free(&fb);
}

/* The scheme limits as fastbody_check.c applies them (validate.c's rules,
 * payment_scheme_rule) give validate.c's verdicts at, and just past, every
 * limit. */
static void test_scheme_limits(void)
{
    static const char *const schemes[] = {"FPS", "BACS", "SEPAINSTANT", "SEPACT", "SWIFT",
                                          "fps", ""};
    static const char *const currencies[] = {"EUR", "GBP", "JPY", "XAU"};
    static const char *const amounts[] = {"1", "1.5", "15000.00", "15000.01", "250000",
                                          "250000.001", "20000000.00", "20000000.01",
                                          "99999999999999999999"};
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    char attrs[256];
    int accepted = 0;
    for (size_t s = 0; s < sizeof schemes / sizeof schemes[0]; s++)
        for (size_t c = 0; c < sizeof currencies / sizeof currencies[0]; c++)
            for (size_t a = 0; a < sizeof amounts / sizeof amounts[0]; a++) {
                snprintf(attrs, sizeof attrs,
                         "\"amount\":\"%s\",\"currency\":\"%s\",\"payment_scheme\":\"%s\"",
                         amounts[a], currencies[c], schemes[s]);
                const char *body = body_of("", attrs);
                int general_ok;
                int fast_ok = compare(&fb, PAYMENT_CHECK_REPLACE, body, strlen(body),
                                      &general_ok);
                if (fast_ok != general_ok)
                    fprintf(stderr, "  %s: fast %d general %d\n", attrs, fast_ok, general_ok);
                CHECK_INT(fast_ok, general_ok);
                accepted += fast_ok;
            }
    CHECK(accepted > 20);
    payment_fastbody_free(&fb);
}

/* The tables the fast path binary-searches are sorted by name. */
static int sorted(const struct schema_node *n, int depth)
{
    if (depth > 16)
        return 0;
    int ok = 1;
    for (size_t i = 0; i < n->property_count; i++) {
        if (i > 0 && strcmp(n->properties[i - 1].name, n->properties[i].name) >= 0) {
            fprintf(stderr, "  unsorted: %s, %s\n", n->properties[i - 1].name,
                    n->properties[i].name);
            ok = 0;
        }
        ok &= sorted(&n->properties[i], depth + 1);
    }
    if (n->items)
        ok &= sorted(n->items, depth + 1);
    return ok;
}

static void test_tables_sorted(void)
{
    CHECK(sorted(&schema_payment_attributes, 0));
    CHECK(sorted(&schema_payment_envelope, 0));
}

/* One fastbody reads body after body; a deferred read leaves no tokens. */
static void test_reuse(void)
{
    struct payment_fastbody fb = PAYMENT_FASTBODY_INIT;
    char *seed = seed_compact();
    const char *small = body_of("\"id\":\"" ID "\",", MONEY);
    CHECK(seed != NULL);
    for (int i = 0; seed && i < 3; i++) {
        CHECK_INT(compare_both(&fb, seed), 3);
        CHECK_INT(payment_fastbody_read(&fb, validator, PAYMENT_CHECK_CREATE, "{}", 2),
                  PAYMENT_FASTBODY_DEFER);
        CHECK(fb.data == 0 && fb.attributes == 0 && fb.id == 0);
        CHECK_INT(compare_both(&fb, small), 3);
        CHECK(fb.id != 0 && fb.organisation_id != 0 && fb.attributes != 0 && fb.type == 0);
    }
    free(seed);
    payment_fastbody_free(&fb);
    CHECK(fb.tape.tokens == NULL && fb.scratch.data == NULL);
    payment_fastbody_free(&fb); /* twice is harmless */
}

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

TEST_MAIN({"setup", setup}, {"seed_sample", test_seed_sample}, {"corpus", test_corpus},
          {"valid_small", test_valid_small}, {"uppercase_uuids", test_uppercase_uuids},
          {"nulls_stripped", test_nulls_stripped}, {"escapes", test_escapes},
          {"broken_rules_defer", test_broken_rules_defer}, {"doubt_defers", test_doubt_defers},
          {"patterns", test_patterns}, {"scheme_limits", test_scheme_limits},
          {"tables_sorted", test_tables_sorted}, {"reuse", test_reuse},
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
