/* fuzz_operation: operation_decode() on any bytes, as a worker reads a
 * message of the operation stream.
 *
 * Properties checked, beyond "no crash, leak or UB":
 *  - a refused message leaves nothing to free, a reason, and an operation
 *    id that is "" or 1..128 visible ASCII characters;
 *  - an accepted one is well-formed (canonical UUIDs, base_version in its
 *    kind's range, data an object exactly unless a delete, the caller's key
 *    id and the request id absent or 1..max visible ASCII characters), and
 *    encoding it and decoding that gives the same operation back. */
#include "auth/keys.h"
#include "fuzz.h"
#include "payment/operation.h"

static int visible(const char *s)
{
    for (; *s; s++)
        if (*s <= 0x20 || *s >= 0x7f)
            return 0;
    return 1;
}

/* Two optional strings are both absent or equal. */
static int same_optional(const char *a, const char *b)
{
    return a && b ? strcmp(a, b) == 0 : a == b;
}

/* An optional id is absent, or 1..max visible characters. */
static int optional_id_ok(const char *s, size_t max)
{
    return !s || (s[0] && strlen(s) <= max && visible(s));
}

static void check_same(const struct operation *a, const struct operation *b)
{
    FUZZ_CHECK(strcmp(a->id, b->id) == 0);
    FUZZ_CHECK(a->kind == b->kind);
    FUZZ_CHECK(strcmp(a->payment_id, b->payment_id) == 0);
    FUZZ_CHECK(strcmp(a->organisation_id, b->organisation_id) == 0);
    FUZZ_CHECK(a->base_version == b->base_version);
    FUZZ_CHECK(a->submitted_ms == b->submitted_ms);
    FUZZ_CHECK((a->data == NULL) == (b->data == NULL));
    FUZZ_CHECK(!a->data || json_equal(a->data, b->data));
    FUZZ_CHECK(same_optional(a->api_key_id, b->api_key_id));
    FUZZ_CHECK(same_optional(a->request_id, b->request_id));
    FUZZ_CHECK(a->has_idem == b->has_idem);
    if (a->has_idem) {
        FUZZ_CHECK(strcmp(a->idem.scope, b->idem.scope) == 0);
        FUZZ_CHECK(strcmp(a->idem.key, b->idem.key) == 0);
        FUZZ_CHECK(strcmp(a->idem.fingerprint, b->idem.fingerprint) == 0);
        FUZZ_CHECK(strcmp(a->idem.location, b->idem.location) == 0);
        FUZZ_CHECK(a->idem.body_len == b->idem.body_len);
        FUZZ_CHECK(memcmp(a->idem.body, b->idem.body, a->idem.body_len) == 0);
    }
}

static void check_accepted(const struct operation *op)
{
    char canon[UUID_STR_LEN + 1];
    FUZZ_CHECK(op->id[0] && visible(op->id) && strlen(op->id) <= OPERATION_ID_MAX);
    FUZZ_CHECK(uuid_canonical(op->payment_id, strlen(op->payment_id), canon) == 0 &&
               strcmp(canon, op->payment_id) == 0);
    FUZZ_CHECK(uuid_canonical(op->organisation_id, strlen(op->organisation_id), canon) == 0 &&
               strcmp(canon, op->organisation_id) == 0);
    FUZZ_CHECK(op->kind == OPERATION_CREATE ? op->base_version == -1 : op->base_version >= -1);
    if (op->kind == OPERATION_REPLACE || op->kind == OPERATION_PATCH)
        FUZZ_CHECK(op->base_version >= 0);
    FUZZ_CHECK(op->kind == OPERATION_DELETE ? op->data == NULL : json_is_object(op->data));
    FUZZ_CHECK(optional_id_ok(op->api_key_id, AUTH_KEY_ID_MAX));
    FUZZ_CHECK(optional_id_ok(op->request_id, OPERATION_REQUEST_ID_MAX));
    char *text = NULL;
    size_t len = 0;
    FUZZ_CHECK(operation_encode(op, &text, &len) == OPERATION_OK);
    struct operation back;
    char msg[160] = "";
    int rc = operation_decode(text, len, &back, msg, sizeof msg);
    if (rc != OPERATION_OK)
        fprintf(stderr, "re-decoding the encoding failed: %s\n", msg);
    FUZZ_CHECK(rc == OPERATION_OK);
    check_same(op, &back);
    operation_free(&back);
    free(text);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    json_object_seed(0x7061796d); /* the same hash layout on every run */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct operation op;
    char msg[160] = "";
    int rc = operation_decode((const char *)data, size, &op, msg, sizeof msg);
    if (rc == OPERATION_OK) {
        check_accepted(&op);
        operation_free(&op);
        return 0;
    }
    FUZZ_CHECK(rc == OPERATION_EINVALID || rc == OPERATION_ENOMEM ||
               rc == OPERATION_EUNREADABLE);
    FUZZ_CHECK(op.root == NULL && op.data == NULL);
    FUZZ_CHECK(rc == OPERATION_ENOMEM || msg[0]);
    FUZZ_CHECK(strlen(op.id) <= OPERATION_ID_MAX && visible(op.id));
    return 0;
}
