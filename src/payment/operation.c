/* operation: see operation.h. */
#include "payment/operation.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/keys.h"    /* AUTH_KEY_ID_MAX */
#include "payment/idem.h" /* IDEM_FINGERPRINT_LEN */

/* A macro's value as a string literal. */
#define TEXT_(x) #x
#define TEXT(x) TEXT_(x)

static const char *const kind_names[] = {
    [OPERATION_CREATE] = "create",
    [OPERATION_REPLACE] = "replace",
    [OPERATION_PATCH] = "patch",
    [OPERATION_DELETE] = "delete",
};

#define KINDS (sizeof kind_names / sizeof kind_names[0])

const char *operation_kind_name(enum operation_kind kind)
{
    assert((size_t)kind < KINDS);
    return kind_names[kind];
}

/* ---- encoding ---- */

static json_t *encode_idem(const struct operation_idem *i)
{
    assert(i->scope && i->key && i->fingerprint && i->location && i->body);
    return json_pack("{s:s, s:s, s:s, s:s, s:s%}", "scope", i->scope, "key", i->key,
                     "fingerprint", i->fingerprint, "location", i->location, "body", i->body,
                     i->body_len);
}

/* Whether s is 1..max visible ASCII characters. */
static int visible_ascii(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (s[n] <= 0x20 || s[n] >= 0x7f)
            return 0;
    return n >= 1 && n <= max;
}

/* Sets the optional string member key of msg to value, when not NULL.
 * Returns 0, or -1 out of memory. */
static int encode_optional(json_t *msg, const char *key, const char *value)
{
    return value ? json_object_set_new(msg, key, json_string(value)) : 0;
}

int operation_encode(const struct operation *op, char **out, size_t *len)
{
    assert(op && out && len && op->id[0]);
    assert((op->kind == OPERATION_DELETE) == (op->data == NULL));
    assert(!op->api_key_id || visible_ascii(op->api_key_id, AUTH_KEY_ID_MAX));
    assert(!op->request_id || visible_ascii(op->request_id, OPERATION_REQUEST_ID_MAX));
    *out = NULL;
    *len = 0;
    json_t *msg = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "op", op->id, "kind",
                            operation_kind_name(op->kind), "payment_id", op->payment_id,
                            "organisation_id", op->organisation_id, "base_version",
                            (json_int_t)op->base_version, "submitted_ms",
                            (json_int_t)op->submitted_ms);
    if (msg && op->data && json_object_set(msg, "data", op->data) != 0) {
        json_decref(msg);
        msg = NULL;
    }
    if (msg && op->has_idem && json_object_set_new(msg, "idempotency", encode_idem(&op->idem)) != 0) {
        json_decref(msg);
        msg = NULL;
    }
    if (msg && (encode_optional(msg, "api_key_id", op->api_key_id) != 0 ||
                encode_optional(msg, "request_id", op->request_id) != 0)) {
        json_decref(msg);
        msg = NULL;
    }
    char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    if (!text)
        return OPERATION_ENOMEM;
    *out = text;
    *len = strlen(text);
    return OPERATION_OK;
}

/* ---- decoding ---- */

static int invalid(char *msg, size_t msglen, const char *what)
{
    snprintf(msg, msglen, "malformed operation: %s", what);
    return OPERATION_EINVALID;
}

static int decode_kind(const char *s, enum operation_kind *out)
{
    for (size_t k = 0; s && k < KINDS; k++)
        if (strcmp(s, kind_names[k]) == 0) {
            *out = (enum operation_kind)k;
            return 0;
        }
    return -1;
}

static int decode_uuid(const json_t *v, char out[UUID_STR_LEN + 1])
{
    return json_is_string(v) && uuid_canonical(json_string_value(v), json_string_length(v),
                                               out) == 0
               ? 0
               : -1;
}

/* An integer member within [min, max]: 0, or -1. */
static int decode_int(const json_t *v, int64_t min, int64_t max, int64_t *out)
{
    if (!json_is_integer(v))
        return -1;
    json_int_t n = json_integer_value(v);
    if (n < min || n > max)
        return -1;
    *out = n;
    return 0;
}

/* A string member without NULs (strings of jansson may hold them). */
static const char *decode_string(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
        return NULL;
    return json_string_value(v);
}

static int decode_idem(const json_t *v, struct operation_idem *out)
{
    if (!json_is_object(v) || json_object_size(v) != 5)
        return -1;
    const json_t *body = json_object_get(v, "body");
    out->scope = decode_string(v, "scope");
    out->key = decode_string(v, "key");
    out->fingerprint = decode_string(v, "fingerprint");
    out->location = decode_string(v, "location");
    if (!out->scope || !out->key || !visible_ascii(out->key, 255) /* as idem_key_valid */ || !out->fingerprint ||
        strlen(out->fingerprint) != IDEM_FINGERPRINT_LEN ||
        strspn(out->fingerprint, "0123456789abcdef") != IDEM_FINGERPRINT_LEN || !out->location ||
        !json_is_string(body))
        return -1;
    out->body = json_string_value(body);
    out->body_len = json_string_length(body);
    return 0;
}

/* An optional string member of 1..max visible ASCII characters: 0 with
 * *out set (NULL when absent), or -1. */
static int decode_optional(const json_t *root, const char *key, size_t max, const char **out)
{
    *out = NULL;
    if (!json_object_get(root, key))
        return 0;
    const char *s = decode_string(root, key);
    if (!s || !visible_ascii(s, max))
        return -1;
    *out = s;
    return 0;
}

/* Every member of root is a known one. */
static int known_members(const json_t *root)
{
    static const char *const names[] = {"op",           "kind",         "payment_id",
                                        "organisation_id", "base_version", "submitted_ms",
                                        "data",         "idempotency",  "api_key_id",
                                        "request_id"};
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)root, key, v) {
        size_t i = 0;
        while (i < sizeof names / sizeof names[0] && strcmp(key, names[i]) != 0)
            i++;
        if (i == sizeof names / sizeof names[0])
            return 0;
    }
    return 1;
}

/* The members after "op", into out (whose root holds the message). */
static int decode_members(struct operation *out, char *msg, size_t msglen)
{
    const json_t *root = out->root;
    if (!known_members(root))
        return invalid(msg, msglen, "unknown member");
    if (decode_kind(decode_string(root, "kind"), &out->kind) != 0)
        return invalid(msg, msglen, "kind must be create, replace, patch or delete");
    if (decode_uuid(json_object_get(root, "payment_id"), out->payment_id) != 0)
        return invalid(msg, msglen, "payment_id must be a UUID");
    if (decode_uuid(json_object_get(root, "organisation_id"), out->organisation_id) != 0)
        return invalid(msg, msglen, "organisation_id must be a UUID");
    int conditional = out->kind == OPERATION_REPLACE || out->kind == OPERATION_PATCH;
    int64_t min = conditional ? 0 : -1, max = out->kind == OPERATION_CREATE ? -1 : INT64_MAX - 1;
    if (decode_int(json_object_get(root, "base_version"), min, max, &out->base_version) != 0)
        return invalid(msg, msglen, "base_version out of range for the kind");
    if (decode_int(json_object_get(root, "submitted_ms"), 0, INT64_MAX, &out->submitted_ms) != 0)
        return invalid(msg, msglen, "submitted_ms must be an integer >= 0");
    json_t *data = json_object_get(root, "data");
    if (out->kind == OPERATION_DELETE ? data != NULL : !json_is_object(data))
        return invalid(msg, msglen, "data must be an object, absent for a delete");
    const json_t *idem = json_object_get(root, "idempotency");
    if (idem && decode_idem(idem, &out->idem) != 0)
        return invalid(msg, msglen, "bad idempotency member");
    out->has_idem = idem != NULL;
    if (decode_optional(root, "api_key_id", AUTH_KEY_ID_MAX, &out->api_key_id) != 0)
        return invalid(msg, msglen,
                       "api_key_id must be 1.." TEXT(AUTH_KEY_ID_MAX) " visible ASCII characters");
    if (decode_optional(root, "request_id", OPERATION_REQUEST_ID_MAX, &out->request_id) != 0)
        return invalid(msg, msglen, "request_id must be 1.." TEXT(OPERATION_REQUEST_ID_MAX)
                                    " visible ASCII characters");
    out->data = json_incref(data);
    return OPERATION_OK;
}

int operation_decode(const char *text, size_t len, struct operation *out, char *msg,
                     size_t msglen)
{
    assert(text || len == 0);
    memset(out, 0, sizeof *out);
    json_error_t je;
    out->root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!out->root) {
        /* Out of memory reads as a syntax error too: the caller cannot
         * tell, and retries before it gives the message up. */
        (void)invalid(msg, msglen, "not JSON");
        return OPERATION_EUNREADABLE;
    }
    if (!json_is_object(out->root)) {
        operation_free(out);
        return invalid(msg, msglen, "not a JSON object");
    }
    const char *id = decode_string(out->root, "op");
    if (!id || !visible_ascii(id, OPERATION_ID_MAX)) {
        operation_free(out);
        return invalid(msg, msglen, "op must be 1..128 visible ASCII characters");
    }
    snprintf(out->id, sizeof out->id, "%s", id);
    int rc = decode_members(out, msg, msglen);
    if (rc != OPERATION_OK) {
        char keep[OPERATION_ID_MAX + 1];
        memcpy(keep, out->id, sizeof keep);
        operation_free(out);
        memcpy(out->id, keep, sizeof keep);
    }
    return rc;
}

void operation_free(struct operation *op)
{
    json_decref(op->data);
    json_decref(op->root);
    memset(op, 0, sizeof *op);
}
