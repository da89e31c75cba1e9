/* operation: the codec of the operation message.  Encoding gives the bytes
 * the API server has always published (field names, types, order);
 * decoding gives back what was encoded, and refuses every malformed
 * message with a reason, keeping its operation id when that was sound. */
#include "payment/operation.h"

#include <stdlib.h>
#include <string.h>

#include "test.h"

#define OP "f21ec205-a78e-84ee-8ed1-60c728bb588b"
#define PID "01a21772-e6ce-76e2-ae8b-04892833f0e0"
#define ORG "ee2fb143-6dfe-4787-b183-ca8ddd4164d2"
#define FP "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void fill(struct operation *op, enum operation_kind kind, json_t *data)
{
    memset(op, 0, sizeof *op);
    snprintf(op->id, sizeof op->id, "%s", OP);
    op->kind = kind;
    snprintf(op->payment_id, sizeof op->payment_id, "%s", PID);
    snprintf(op->organisation_id, sizeof op->organisation_id, "%s", ORG);
    op->base_version = kind == OPERATION_CREATE ? -1 : 3;
    op->submitted_ms = 1700000000123;
    op->data = data;
}

/* Byte for byte the message of a keyed PATCH as published before the codec
 * existed: the members in that order, compact, the body's NUL kept. */
static void test_encode_format(void)
{
    json_t *data = json_pack("{s:{s:s}}", "attributes", "reference", "x");
    struct operation op;
    fill(&op, OPERATION_PATCH, data);
    op.has_idem = 1;
    op.idem = (struct operation_idem){"ops", "k-1", FP, "/v1/operations/" OP, "{\"a\":1}\0z", 9};
    char *text = NULL;
    size_t len = 0;
    CHECK_INT(operation_encode(&op, &text, &len), 0);
    CHECK_STR(text, "{\"op\":\"" OP "\",\"kind\":\"patch\",\"payment_id\":\"" PID
                    "\",\"organisation_id\":\"" ORG "\",\"base_version\":3,"
                    "\"submitted_ms\":1700000000123,\"data\":{\"attributes\":{\"reference\":"
                    "\"x\"}},\"idempotency\":{\"scope\":\"ops\",\"key\":\"k-1\",\"fingerprint\":\"" FP
                    "\",\"location\":\"/v1/operations/" OP "\",\"body\":\"{\\\"a\\\":1}\\u0000z\"}}");
    CHECK_INT(len, text ? strlen(text) : 0);
    free(text);
    /* The caller's key and the request's id follow, when there are. */
    op.api_key_id = "billing-1";
    op.request_id = "req-42:a.b_c";
    CHECK_INT(operation_encode(&op, &text, &len), 0);
    CHECK(text && strstr(text, "\"body\":\"{\\\"a\\\":1}\\u0000z\"},\"api_key_id\":\"billing-1\","
                               "\"request_id\":\"req-42:a.b_c\"}") != NULL);
    free(text);
    /* A delete carries no data, an unkeyed request no idempotency. */
    fill(&op, OPERATION_DELETE, NULL);
    op.base_version = -1;
    CHECK_INT(operation_encode(&op, &text, &len), 0);
    CHECK_STR(text, "{\"op\":\"" OP "\",\"kind\":\"delete\",\"payment_id\":\"" PID
                    "\",\"organisation_id\":\"" ORG "\",\"base_version\":-1,"
                    "\"submitted_ms\":1700000000123}");
    free(text);
    json_decref(data);
}

/* The longest key and request ids are taken. */
static void test_longest_ids(void)
{
    char key[65], rid[129], *text = NULL, msg[128] = "";
    memset(key, 'k', 64);
    key[64] = '\0';
    memset(rid, 'r', 128);
    rid[128] = '\0';
    struct operation op, back;
    fill(&op, OPERATION_DELETE, NULL);
    op.api_key_id = key;
    op.request_id = rid;
    size_t len = 0;
    CHECK_INT(operation_encode(&op, &text, &len), 0);
    CHECK_INT(text ? operation_decode(text, len, &back, msg, sizeof msg) : -99, 0);
    CHECK_STR(back.api_key_id, key);
    CHECK_STR(back.request_id, rid);
    operation_free(&back);
    free(text);
}

/* What is encoded is decoded, for every kind, keyed or not. */
static void test_round_trip(void)
{
    for (int k = OPERATION_CREATE; k <= OPERATION_DELETE; k++) {
        for (int keyed = 0; keyed <= 1; keyed++) {
            json_t *data = k == OPERATION_DELETE
                               ? NULL
                               : json_pack("{s:s,s:{s:s,s:[i,n]}}", "organisation_id", ORG,
                                           "attributes", "amount", "1.00", "list", 1);
            struct operation op, back;
            fill(&op, (enum operation_kind)k, data);
            op.has_idem = keyed;
            if (keyed)
                op.idem = (struct operation_idem){"", "key", FP, "/l", "b\0c", 3};
            /* The key and request ids, each with and without the other. */
            op.api_key_id = k % 2 ? "key-7" : NULL;
            op.request_id = keyed ? "0123456789abcdef-12" : NULL;
            char *text = NULL, msg[128] = "";
            size_t len = 0;
            CHECK_INT(operation_encode(&op, &text, &len), 0);
            CHECK_INT(operation_decode(text, len, &back, msg, sizeof msg), 0);
            CHECK_STR(back.id, OP);
            CHECK_INT(back.kind, k);
            CHECK_STR(back.payment_id, PID);
            CHECK_STR(back.organisation_id, ORG);
            CHECK_INT(back.base_version, op.base_version);
            CHECK_INT(back.submitted_ms, op.submitted_ms);
            CHECK(data ? json_equal(back.data, data) : back.data == NULL);
            CHECK_INT(back.has_idem, keyed);
            if (op.api_key_id)
                CHECK_STR(back.api_key_id, op.api_key_id);
            else
                CHECK(back.api_key_id == NULL);
            if (op.request_id)
                CHECK_STR(back.request_id, op.request_id);
            else
                CHECK(back.request_id == NULL);
            if (keyed) {
                CHECK_STR(back.idem.scope, "");
                CHECK_STR(back.idem.key, "key");
                CHECK_STR(back.idem.fingerprint, FP);
                CHECK_STR(back.idem.location, "/l");
                CHECK_INT(back.idem.body_len, 3);
                CHECK(back.idem.body && memcmp(back.idem.body, "b\0c", 3) == 0);
            }
            operation_free(&back);
            CHECK(back.root == NULL && back.data == NULL);
            free(text);
            json_decref(data);
        }
    }
}

/* Upper-case UUIDs are decoded in lower case. */
static void test_decode_canonical(void)
{
    const char *text = "{\"op\":\"x\",\"kind\":\"delete\",\"payment_id\":\"01A21772-E6CE-76E2-AE8B-"
                       "04892833F0E0\",\"organisation_id\":\"" ORG "\",\"base_version\":7,"
                       "\"submitted_ms\":0}";
    struct operation op;
    char msg[128];
    CHECK_INT(operation_decode(text, strlen(text), &op, msg, sizeof msg), 0);
    CHECK_STR(op.payment_id, PID);
    CHECK_INT(op.base_version, 7);
    /* A message of before the key and request ids: neither. */
    CHECK(op.api_key_id == NULL && op.request_id == NULL);
    operation_free(&op);
}

/* 65 characters: one more than a key id may have (and, twice, more than
 * a request id). */
#define K65 "k1234567890123456789012345678901234567890123456789012345678901234"

#define HEAD "{\"op\":\"" OP "\",\"kind\":\"patch\",\"payment_id\":\"" PID "\",\"organisation_id\":\"" ORG "\","

/* Every malformed message is refused with a reason; the operation id is
 * kept when it was itself sound. */
static void test_decode_refuses(void)
{
    static const struct {
        const char *text;
        const char *id;   /* out->id afterwards */
        const char *says; /* in the reason */
    } cases[] = {
        {"", "", "not JSON"},
        {"not json", "", "not JSON"},
        {"[1]", "", "not a JSON object"},
        {"{\"op\":\"\"}", "", "op must"},
        {"{\"op\":\"a b\"}", "", "op must"},
        {"{\"op\":7}", "", "op must"},
        {"{\"op\":\"a\\u0000b\"}", "", "op must"},
        {"{\"op\":\"x\",\"op\":\"y\"}", "", "not JSON"},
        {HEAD "\"base_version\":0,\"submitted_ms\":0,\"data\":{},\"extra\":1}", OP, "unknown member"},
        {"{\"op\":\"" OP "\",\"kind\":\"frobnicate\"}", OP, "kind"},
        {"{\"op\":\"" OP "\",\"kind\":\"patch\",\"payment_id\":\"nope\"}", OP, "payment_id"},
        {"{\"op\":\"" OP "\",\"kind\":\"patch\",\"payment_id\":\"" PID "\"}", OP, "organisation_id"},
        {HEAD "\"base_version\":-1,\"submitted_ms\":0,\"data\":{}}", OP, "base_version"},
        {HEAD "\"base_version\":\"1\",\"submitted_ms\":0,\"data\":{}}", OP, "base_version"},
        {HEAD "\"base_version\":9223372036854775807,\"submitted_ms\":0,\"data\":{}}", OP,
         "base_version"},
        {HEAD "\"base_version\":1.5,\"submitted_ms\":0,\"data\":{}}", OP, "base_version"},
        {HEAD "\"base_version\":1,\"submitted_ms\":-1,\"data\":{}}", OP, "submitted_ms"},
        {HEAD "\"base_version\":1,\"data\":{}}", OP, "submitted_ms"},
        {HEAD "\"base_version\":1,\"submitted_ms\":0}", OP, "data"},
        {HEAD "\"base_version\":1,\"submitted_ms\":0,\"data\":[]}", OP, "data"},
        {HEAD "\"base_version\":1,\"submitted_ms\":0,\"data\":{},\"idempotency\":{}}", OP,
         "idempotency"},
        {HEAD "\"base_version\":1,\"submitted_ms\":0,\"data\":{},\"idempotency\":{\"scope\":\"\","
              "\"key\":\"k\",\"fingerprint\":\"abc\",\"location\":\"/l\",\"body\":\"\"}}",
         OP, "idempotency"},
        {HEAD "\"base_version\":1,\"submitted_ms\":0,\"data\":{},\"idempotency\":{\"scope\":\"\","
              "\"key\":\"k k\",\"fingerprint\":\"" FP "\",\"location\":\"/l\",\"body\":\"\"}}",
         OP, "idempotency"},
        {HEAD "\"base_version\":1,\"submitted_ms\":0,\"data\":{},\"api_key_id\":\"\"}", OP,
         "api_key_id"},
        {HEAD "\"base_version\":1,\"submitted_ms\":0,\"data\":{},\"api_key_id\":7}", OP,
         "api_key_id"},
        {HEAD "\"base_version\":1,\"submitted_ms\":0,\"data\":{},\"api_key_id\":null}", OP,
         "api_key_id"},
        {HEAD "\"base_version\":1,\"submitted_ms\":0,\"data\":{},\"api_key_id\":\"a b\"}", OP,
         "api_key_id"},
        {HEAD "\"base_version\":1,\"submitted_ms\":0,\"data\":{},\"api_key_id\":\"" K65 "\"}", OP,
         "api_key_id"},
        {HEAD "\"base_version\":1,\"submitted_ms\":0,\"data\":{},\"request_id\":\"\"}", OP,
         "request_id"},
        {HEAD "\"base_version\":1,\"submitted_ms\":0,\"data\":{},\"request_id\":\"a\\u0000\"}",
         OP, "request_id"},
        {HEAD "\"base_version\":1,\"submitted_ms\":0,\"data\":{},\"request_id\":\"" K65 K65 "\"}",
         OP, "request_id"},
        {"{\"op\":\"" OP "\",\"kind\":\"create\",\"payment_id\":\"" PID "\",\"organisation_id\":\"" ORG
         "\",\"base_version\":0,\"submitted_ms\":0,\"data\":{}}",
         OP, "base_version"},
        {"{\"op\":\"" OP "\",\"kind\":\"delete\",\"payment_id\":\"" PID "\",\"organisation_id\":\"" ORG
         "\",\"base_version\":0,\"submitted_ms\":0,\"data\":{}}",
         OP, "data"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct operation op;
        char msg[128] = "";
        int rc = operation_decode(cases[i].text, strlen(cases[i].text), &op, msg, sizeof msg);
        /* Bytes that do not read as JSON may be a lack of memory: told apart. */
        int want = strstr(cases[i].says, "not JSON") ? OPERATION_EUNREADABLE : OPERATION_EINVALID;
        if (rc != want || strcmp(op.id, cases[i].id) != 0 ||
            !strstr(msg, cases[i].says)) {
            fprintf(stderr, "  case %zu (%s): rc %d, id \"%s\", msg \"%s\"\n", i, cases[i].text,
                    rc, op.id, msg);
            test_failures++;
        }
        CHECK(op.root == NULL && op.data == NULL);
        if (rc == 0)
            operation_free(&op);
    }
}

/* jansson's allocator for test_decode_out_of_memory: fails once `budget`
 * allocations were made. */
static int alloc_budget = -1;

static void *budget_malloc(size_t n)
{
    if (alloc_budget == 0)
        return NULL;
    if (alloc_budget > 0)
        alloc_budget--;
    return malloc(n);
}

/* Out of memory while decoding a sound message is OPERATION_ENOMEM or
 * OPERATION_EUNREADABLE (the worker retries both), never the verdict that
 * the message is malformed, which would record an operation the client was
 * told was accepted as failed. */
static void test_decode_out_of_memory(void)
{
    json_t *data = json_pack("{s:{s:s}}", "attributes", "reference", "x");
    struct operation op;
    fill(&op, OPERATION_PATCH, data);
    char *text = NULL;
    size_t len = 0;
    CHECK_INT(operation_encode(&op, &text, &len), 0);
    json_decref(data);
    json_set_alloc_funcs(budget_malloc, free);
    int ok = 0, enomem = 0;
    for (int budget = 0; budget < 200 && text; budget++) {
        alloc_budget = budget;
        char why[128] = "";
        int rc = operation_decode(text, len, &op, why, sizeof why);
        alloc_budget = -1;
        if (rc == OPERATION_OK) {
            ok++;
            operation_free(&op);
        } else if (rc == OPERATION_ENOMEM || rc == OPERATION_EUNREADABLE) {
            enomem++;
        } else {
            fprintf(stderr, "  with %d allocations: %d (%s)\n", budget, rc, why);
            test_failures++;
        }
    }
    json_set_alloc_funcs(malloc, free);
    CHECK(enomem > 0);
    CHECK(ok > 0);
    free(text);
}

TEST_MAIN(TEST(test_encode_format), TEST(test_round_trip), TEST(test_longest_ids), TEST(test_decode_canonical),
          TEST(test_decode_refuses), TEST(test_decode_out_of_memory))
