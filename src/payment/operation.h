/* operation: the message of one asynchronous write, as an API server
 * publishes it on the operation stream and a worker reads it: one codec,
 * so that both sides agree on one definition.
 *
 * The message is one compact JSON object, its members in this order:
 *   "op"              the operation id: 1..128 visible ASCII characters
 *   "kind"            "create", "replace", "patch" or "delete"
 *   "payment_id"      a UUID
 *   "organisation_id" a UUID: the organisation the write is for (it routes
 *                     the message to its partition)
 *   "base_version"    an integer: the version the write is based on;
 *                     -1 for a create and an unconditional delete, >= 0
 *                     for a replace and a patch
 *   "submitted_ms"    an integer >= 0: when the server accepted it
 *   "data"            the request's data object; absent for a delete
 *   "idempotency"     present for a request with an Idempotency-Key:
 *                     {"scope", "key", "fingerprint", "location", "body"},
 *                     all strings: the caller's scope, the key (idem.h),
 *                     the request's fingerprint (64 hex digits), and the
 *                     202 answer's Location and body, stored as the key's
 *                     outcome with a successful write
 *   "api_key_id"      present when the server authenticates: the id of the
 *                     caller's API key, 1..AUTH_KEY_ID_MAX visible ASCII
 *                     characters (the event of the write names it)
 *   "request_id"      the X-Request-Id of the request that made the
 *                     operation, 1..OPERATION_REQUEST_ID_MAX visible ASCII
 *                     characters (its event carries it)
 * The last two are optional when decoding: messages published before they
 * existed have neither, and their writes' events name no request, and the
 * caller's key only when keyed (the idempotency scope is the key's id).  (A worker of before them refuses a message that has them, as
 * an unknown member: workers are upgraded first.)
 * Decoding is strict: any other member, type or value is refused.
 *
 * Threads: none kept; the functions are reentrant. */
#ifndef PAYMENT_OPERATION_H
#define PAYMENT_OPERATION_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/uuid.h"

#define OPERATION_ID_MAX 128 /* characters of an operation id */
/* Characters of a request id: as many as the HTTP server takes from a
 * client's X-Request-Id. */
#define OPERATION_REQUEST_ID_MAX 128

enum operation_err {
    OPERATION_OK = 0,
    OPERATION_EINVALID = -1,    /* decode: not a well-formed operation; the reason is in msg */
    OPERATION_ENOMEM = -2,      /* out of memory */
    OPERATION_EUNREADABLE = -3, /* decode: the bytes could not be read as JSON: not JSON, or
                                   out of memory while reading (jansson reports both as a
                                   syntax error), so the same bytes may read later */
};

enum operation_kind {
    OPERATION_CREATE,
    OPERATION_REPLACE,
    OPERATION_PATCH,
    OPERATION_DELETE,
};

/* A keyed request's idempotency members; strings NUL-terminated. */
struct operation_idem {
    const char *scope;       /* the caller: its API key id, or "" */
    const char *key;         /* the Idempotency-Key */
    const char *fingerprint; /* IDEM_FINGERPRINT_LEN hex digits */
    const char *location;    /* the 202 answer's Location */
    const char *body;        /* its body, body_len bytes (may hold NULs) */
    size_t body_len;
};

/* One operation.  Encoding borrows every pointer; a decoded operation owns
 * what its pointers point to (in root) until operation_free. */
struct operation {
    char id[OPERATION_ID_MAX + 1];          /* "op" */
    enum operation_kind kind;               /* "kind" */
    char payment_id[UUID_STR_LEN + 1];      /* lower case once decoded */
    char organisation_id[UUID_STR_LEN + 1]; /* lower case once decoded */
    int64_t base_version;                   /* -1: none */
    int64_t submitted_ms;                   /* ms since epoch */
    json_t *data;                           /* the data object; NULL for a delete */
    int has_idem;                           /* 1: idem holds the members */
    struct operation_idem idem;             /* valid when has_idem */
    const char *api_key_id;                 /* "api_key_id", or NULL (none: open) */
    const char *request_id;                 /* "request_id", or NULL (none) */
    json_t *root;                           /* decoded: the whole message, owned */
};

/* The kind's name in a message ("create", ...). */
const char *operation_kind_name(enum operation_kind kind);

/* The message for op: *out is malloc'd (free() it), *len its length
 * without the NUL after it.  op must be well-formed (as decode accepts it;
 * asserted for what is cheap to check).  Returns 0 or OPERATION_ENOMEM. */
int operation_encode(const struct operation *op, char **out, size_t *len);

/* Decodes len bytes of text into out.  Returns 0 (operation_free(out)
 * afterwards), OPERATION_ENOMEM, OPERATION_EUNREADABLE, or
 * OPERATION_EINVALID, each but ENOMEM with a one-line reason in msg; then
 * out holds nothing to free, but out->id is the
 * message's operation id when that member itself was well-formed (so that
 * the failure can be recorded under it), else "". */
int operation_decode(const char *text, size_t len, struct operation *out, char *msg,
                     size_t msglen);

/* Releases what a decoded operation owns; a zeroed one is a no-op. */
void operation_free(struct operation *op);

#endif
