#include "payment/api.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/keys.h"
#include "broker/partition.h"
#include "core/clock.h"
#include "core/hex.h"
#include "core/uuid.h"
#include "http/server.h"
#include "payment/doc.h"
#include "payment/idem.h"
#include "payment/merge.h"
#include "payment/query.h"

/* A write in flight: what the store borrows until it reports, what it
 * reported, and the answer prepared before the write (an idempotency record
 * must hold the answer, and is stored with the write).  Freed with the
 * request. */
struct write_op {
    struct payment_api *api;
    json_t *doc;              /* the document written (NULL for delete) */
    char *text;               /* its serialized form, borrowed by the row */
    struct payment_row row;   /* what the store writes */
    char id[UUID_STR_LEN + 1];
    int err;                  /* the store's verdict */
    int64_t current_version;  /* on ECONFLICT */
    enum payment_store_op op; /* for the latency metric */
    int64_t submitted_us;     /* when it went to the store */
    int creates;              /* a create: its 5xx answers name w->id (see respond_write_error) */
    int status;               /* the answer on success */
    struct buf location;      /* its Location header, empty for none */
    char etag[32];            /* its ETag header, "" for none */
    struct buf body;          /* its body, empty for none */
    int has_key;              /* the request carries an Idempotency-Key */
    int claimed;              /* ... which this request holds in flight */
    char scope[AUTH_KEY_ID_MAX + 1];
    char key[IDEM_KEY_MAX + 1];
    char fingerprint[IDEM_FINGERPRINT_LEN + 1];
    struct payment_idem idem; /* the record stored with the write */
};

/* Lets go of the request's Idempotency-Key: once the answer can be seen,
 * an immediate retry must find the key free (and its record, if any). */
static void write_op_release(void *p)
{
    struct write_op *w = p;
    if (w->claimed)
        idem_inflight_release(w->api->inflight, w->scope, w->key);
    w->claimed = 0;
}

static void write_op_free(void *p)
{
    struct write_op *w = p;
    if (!w)
        return;
    write_op_release(w);
    json_decref(w->doc);
    free(w->text);
    buf_free(&w->location);
    buf_free(&w->body);
    free(w);
}

/* --- answers ------------------------------------------------------------ */

static void respond_write_error(http_request *req, struct write_op *w, int err,
                                int64_t current_version);

static void append_self_link(struct buf *b, const struct payment_api *api, const char *id)
{
    buf_puts(b, "\"links\":{\"self\":\"");
    buf_json_escape(b, api->public_url, strlen(api->public_url));
    buf_puts(b, "/v1/payments/");
    buf_puts(b, id);
    buf_puts(b, "\"}}");
}

/* The entity tag of a version, "\"N\"" (versions are never negative), without
 * a printf on every GET.  Returns its length. */
static size_t etag_format(int64_t version, char out[32])
{
    char digits[24];
    size_t k = sizeof digits;
    uint64_t v = version < 0 ? 0 : (uint64_t)version;
    do {
        digits[--k] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    size_t n = sizeof digits - k;
    out[0] = '"';
    memcpy(out + 1, digits + k, n);
    out[n + 1] = '"';
    out[n + 2] = '\0';
    return n + 2;
}

static void set_etag(http_request *req, int64_t version)
{
    char etag[32];
    etag_format(version, etag);
    http_request_add_header(req, "ETag", etag);
}

/* The answer to a store error, current_version aside. */
struct store_answer {
    int status;
    const char *code;
    const char *message;
};

static struct store_answer store_answer(int err)
{
    switch (err) {
    case PAYMENT_STORE_ENOTFOUND:
        return (struct store_answer){404, "not_found", "no payment with this id"};
    case PAYMENT_STORE_ECONFLICT:
        return (struct store_answer){
            409, "version_conflict", "the payment has changed since that version; fetch it and retry"};
    case PAYMENT_STORE_EDUPLICATE:
        return (struct store_answer){409, "duplicate_id", "a payment with this id exists or existed"};
    case PAYMENT_STORE_EIDEMPOTENT:
        return (struct store_answer){
            409, "idempotency_key_in_use",
            "another request with this Idempotency-Key is being processed"};
    case PAYMENT_STORE_EUNAVAILABLE:
        return (struct store_answer){503, "store_unavailable",
                                     "the store cannot take requests now; retry later"};
    default:
        return (struct store_answer){500, "internal_error", "internal error"};
    }
}

static void respond_store_error(http_request *req, int err, int64_t current_version)
{
    struct store_answer a = store_answer(err);
    char extra[64];
    if (err == PAYMENT_STORE_ECONFLICT)
        snprintf(extra, sizeof extra, "\"current_version\":%" PRId64, current_version);
    http_respond_error(req, a.status, a.code, a.message,
                       err == PAYMENT_STORE_ECONFLICT ? extra : NULL);
}

/* Answers a 5xx to a create whose id is chosen: the store's commit or the
 * broker's acknowledgement may have happened before the failure was seen,
 * so Location and a payment_id member name the id, and a retry with that
 * id (or with an Idempotency-Key) cannot create a second payment. */
static void respond_create_failure(http_request *req, const struct payment_api *api, int status,
                                   const char *code, const char *message, const char *id)
{
    assert(status >= 500 && id[0]);
    struct buf location = BUF_INIT;
    char extra[64];
    buf_printf(&location, "%s/v1/payments/%s", api->public_url, id);
    if (!buf_failed(&location))
        http_request_add_header(req, "Location", location.data);
    buf_free(&location);
    snprintf(extra, sizeof extra, "\"payment_id\":\"%s\"", id);
    http_respond_error(req, status, code, message, extra);
}

static void respond_internal(http_request *req)
{
    http_respond_error(req, 500, "internal_error", "internal error", NULL);
}

/* A write's error: the store's answer, a create's 5xx naming its id. */
static void respond_write_error(http_request *req, struct write_op *w, int err,
                                int64_t current_version)
{
    struct store_answer a = store_answer(err);
    if (w->creates && w->id[0] && a.status >= 500)
        respond_create_failure(req, w->api, a.status, a.code, a.message, w->id);
    else
        respond_store_error(req, err, current_version);
}

/* 400 validation_failed listing every problem. */
static void respond_invalid(http_request *req, json_t *errors)
{
    char *list = json_dumps(errors, JSON_COMPACT);
    if (!list) {
        http_respond_error(req, 500, "internal_error", "internal error", NULL);
        return;
    }
    struct buf extra = BUF_INIT;
    buf_puts(&extra, "\"errors\":");
    buf_puts(&extra, list);
    free(list);
    size_t n = json_array_size(errors);
    char msg[96];
    snprintf(msg, sizeof msg, "the payment is not valid: %zu problem%s", n, n == 1 ? "" : "s");
    if (buf_failed(&extra))
        http_respond_error(req, 500, "internal_error", "internal error", NULL);
    else
        http_respond_error(req, 400, "validation_failed", msg, extra.data);
    buf_free(&extra);
}

/* Appends one {"field","message"} problem: 1, or -1 out of memory. */
static int problem(json_t *errors, const char *field, const char *message)
{
    return json_array_append_new(errors, json_pack("{s:s, s:s}", "field", field, "message",
                                                   message)) == 0
               ? 1
               : -1;
}

/* v, or NULL when it is JSON null: a null member means absent. */
static json_t *non_null(json_t *v)
{
    return json_is_null(v) ? NULL : v;
}

static void respond_one_invalid(http_request *req, const char *field, const char *message)
{
    json_t *errors = json_pack("[{s:s, s:s}]", "field", field, "message", message);
    if (!errors) {
        http_respond_error(req, 500, "internal_error", "internal error", NULL);
        return;
    }
    respond_invalid(req, errors);
    json_decref(errors);
}

/* --- request pieces ----------------------------------------------------- */

/* Whether a handler may wait on the network: a store whose calls may
 * (MongoDB), or, with broker_too, a broker. */
static int may_block(const struct payment_api *api, int broker_too)
{
    return payment_store_may_block(api->store) || (broker_too && api->broker);
}

/* Hands the request to the HTTP server's blocking pool to run fn there,
 * unless it does not block or runs there already.  Returns 1 when handed
 * over (the handler returns at once), 0 when the handler goes on here. */
static int offload(http_request *req, http_handler_fn fn, int blocks)
{
    if (!blocks || http_request_on_pool(req))
        return 0;
    http_request_run_blocking(req, fn);
    return 1;
}

static const struct auth_principal *principal(const http_request *req)
{
    return http_request_principal(req);
}

/* 403: the caller's key may not act for org. */
static void respond_forbidden(http_request *req)
{
    http_respond_error(req, 403, "forbidden",
                       "this API key may not act for the payment's organisation", NULL);
}

/* The organisation of a stored document, read from its text: documents
 * are written by payment_doc_new(), whose members before organisation_id
 * (type, id, version) cannot contain the key, so its first occurrence is
 * the envelope's.  Copies it into org; returns 0, or -1. */
static int doc_org(const char *doc, size_t len, char org[UUID_STR_LEN + 1])
{
    static const char key[] = "\"organisation_id\":\"";
    const char *p = memmem(doc, len, key, sizeof key - 1);
    if (!p || (size_t)(doc + len - p) < sizeof key - 1 + UUID_STR_LEN)
        return -1;
    memcpy(org, p + sizeof key - 1, UUID_STR_LEN);
    org[UUID_STR_LEN] = '\0';
    return 0;
}

/* The path's id in lower case.  The route only matches UUIDs (the server
 * answers 400 invalid_id before any handler), so this cannot fail. */
static void path_id(http_request *req, char id[UUID_STR_LEN + 1])
{
    const char *param = http_request_param(req);
    assert(param);
    int rc = uuid_canonical(param, strlen(param), id);
    assert(rc == 0);
    (void)rc;
}

static const char *const if_match_malformed =
    "If-Match must be exactly one strong entity tag such as \"3\"";

/* Parses the body and validates its data object for mode.  Returns the
 * root (new reference) or NULL after answering 400. */
static json_t *read_payment_body(http_request *req, struct payment_api *api,
                                 enum payment_check mode)
{
    size_t len;
    const char *body = http_request_body(req, &len);
    char msg[256];
    json_t *root = payment_body_parse(body, len, msg, sizeof msg);
    if (!root) {
        http_respond_error(req, 400, "bad_request", msg, NULL);
        return NULL;
    }
    json_t *errors = json_array();
    int n = errors ? payment_validate_data(api->validator, mode, json_object_get(root, "data"),
                                           errors)
                   : -1;
    if (n != 0) {
        if (n < 0)
            http_respond_error(req, 500, "internal_error", "internal error", NULL);
        else
            respond_invalid(req, errors);
        json_decref(errors);
        json_decref(root);
        return NULL;
    }
    json_decref(errors);
    return root;
}

/* Parses "N", a non-negative decimal integer in its one canonical form (no
 * leading zeros: the entity tag "00" is not the tag "0"). */
static int parse_version(const char *s, size_t len, int64_t *out)
{
    if (len == 0 || len > 18 || (len > 1 && s[0] == '0'))
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* If-Match: exactly one strong entity tag "N".  Returns 1 and sets *v when
 * present, 0 when absent, -1 when malformed. */
static int if_match_version(http_request *req, int64_t *v)
{
    const char *h = http_request_header(req, "If-Match");
    if (!h)
        return 0;
    while (*h == ' ' || *h == '\t')
        h++;
    size_t len = strlen(h);
    while (len > 0 && (h[len - 1] == ' ' || h[len - 1] == '\t'))
        len--;
    if (len < 3 || h[0] != '"' || h[len - 1] != '"')
        return -1;
    return parse_version(h + 1, len - 2, v) == 0 ? 1 : -1;
}

/* The version the client based its write on, from data.version and
 * If-Match.  Returns 0 with *v set (or -1 in *v when neither is given and
 * required is 0), or -1 after answering 400 or 428. */
static int client_version(http_request *req, json_t *data, int required, int64_t *v)
{
    int64_t hv = -1;
    int h = if_match_version(req, &hv);
    if (h < 0) {
        http_respond_error(req, 400, "bad_request", if_match_malformed, NULL);
        return -1;
    }
    json_t *jv = data ? json_object_get(data, "version") : NULL;
    int has_body = json_is_integer(jv);
    if (has_body && h && json_integer_value(jv) != hv) {
        http_respond_error(req, 400, "bad_request", "If-Match and data.version disagree", NULL);
        return -1;
    }
    if (has_body)
        *v = json_integer_value(jv);
    else if (h)
        *v = hv;
    else if (required) {
        http_respond_error(req, 428, "version_required",
                           "name the version you read, in data.version or If-Match", NULL);
        return -1;
    } else
        *v = -1;
    return 0;
}

/* --- create ------------------------------------------------------------- */

static void write_done(void *arg, int err, int64_t current_version, int64_t seq)
{
    http_request *req = arg;
    struct write_op *w = http_request_state(req);
    (void)seq;
    w->err = err;
    w->current_version = current_version;
    metrics_histogram_observe(&w->api->store_latency[w->op], clock_mono_us() - w->submitted_us);
    http_request_resume(req);
}

/* The continuation of every write: the store's error, or the answer
 * prepared before the write. */
static void written(http_request *req, void *ctx)
{
    struct write_op *w = http_request_state(req);
    (void)ctx;
    if (w->err != PAYMENT_STORE_OK) {
        respond_write_error(req, w, w->err, w->current_version);
        return;
    }
    if (w->location.len)
        http_request_add_header(req, "Location", w->location.data);
    if (w->etag[0])
        http_request_add_header(req, "ETag", w->etag);
    http_respond(req, w->status, &w->body);
}

/* Prepares the answer to a successful write of w->row: status, Location
 * (create), ETag and {"data": doc, "links"}; or, with no document, an
 * empty 204.  Returns 0, or -1 out of memory. */
static int write_op_answer(struct write_op *w, int status)
{
    struct payment_api *api = w->api;
    w->status = status;
    if (!w->doc)
        return 0;
    if (status == 201)
        buf_printf(&w->location, "%s/v1/payments/%s", api->public_url, w->row.id);
    etag_format(w->row.version, w->etag);
    buf_puts(&w->body, "{\"data\":");
    buf_append(&w->body, w->row.doc, w->row.doc_len);
    buf_puts(&w->body, ",");
    append_self_link(&w->body, api, w->row.id);
    return buf_failed(&w->location) || buf_failed(&w->body) ? -1 : 0;
}

/* The idempotency record of w's answer, or NULL without a key. */
static const struct payment_idem *write_op_idem(struct write_op *w)
{
    if (!w->has_key)
        return NULL;
    w->idem = (struct payment_idem){
        .scope = w->scope,
        .key = w->key,
        .fingerprint = w->fingerprint,
        .status = w->status,
        .location = w->location.len ? w->location.data : NULL,
        .etag = w->etag[0] ? w->etag : NULL,
        .body = w->body.len ? w->body.data : NULL,
        .body_len = w->body.len,
        .created_ms = clock_now_ms(),
    };
    return &w->idem;
}

/* Answers with a stored outcome, marked as a replay. */
static void respond_replay(http_request *req, struct payment_idem_found *f)
{
    http_request_add_header(req, "Idempotent-Replayed", "true");
    if (f->location.len)
        http_request_add_header(req, "Location", f->location.data);
    if (f->etag[0])
        http_request_add_header(req, "ETag", f->etag);
    http_respond(req, f->status, &f->body);
}

/* Appends one decoded query parameter to b, each part length-prefixed so
 * that no two different queries give the same bytes. */
static int idem_query_param(void *arg, const char *key, const char *value)
{
    struct buf *b = arg;
    buf_printf(b, "\n%zu:%s%zu:%s", strlen(key), key, strlen(value), value);
    return 0;
}

static int async_replay(http_request *req, struct write_op *w);
static int async_wanted(http_request *req, const struct payment_api *api);

/* Looks the request's stored outcome up: its idempotency record, or, with
 * operations set and an asynchronous request, the operation the key
 * became.  Returns 1 after answering (a replay, 422, or an error), 0 when
 * there is none. */
static int idem_lookup(http_request *req, struct write_op *w, int operations)
{
    struct payment_idem_found f = {.location = BUF_INIT, .body = BUF_INIT};
    int err = payment_store_idem_get(w->api->store, w->scope, w->key, &f);
    if (err == PAYMENT_STORE_OK) {
        if (strcmp(f.fingerprint, w->fingerprint) == 0)
            respond_replay(req, &f);
        else
            http_respond_error(req, 422, "idempotency_key_reused",
                               "this Idempotency-Key was used with another request", NULL);
    } else if (err != PAYMENT_STORE_ENOTFOUND) {
        respond_store_error(req, err, -1);
    }
    buf_free(&f.location);
    buf_free(&f.body);
    /* Only an asynchronous request looks for the operation its key made:
     * a synchronous one leaves the broker alone, the store's record of the
     * key deciding once between the two. */
    if (err == PAYMENT_STORE_ENOTFOUND && operations && async_wanted(req, w->api))
        return async_replay(req, w);
    return err != PAYMENT_STORE_ENOTFOUND;
}

/* Handles the Idempotency-Key of a write: 400 for a malformed key, the
 * stored answer (or 422) when the key was used, 409 while another request
 * holds it.  Returns 0 when the request goes on (holding the key), or -1
 * after answering. */
static int idem_begin(http_request *req, struct write_op *w)
{
    const char *key = http_request_header(req, "Idempotency-Key");
    if (!key)
        return 0;
    if (!idem_key_valid(key)) {
        http_respond_error(req, 400, "bad_request",
                           "Idempotency-Key must be 1 to 255 visible ASCII characters", NULL);
        return -1;
    }
    const struct auth_principal *p = principal(req);
    snprintf(w->scope, sizeof w->scope, "%s", p ? p->id : "");
    snprintf(w->key, sizeof w->key, "%s", key);
    size_t len;
    const char *body = http_request_body(req, &len);
    struct buf target = BUF_INIT;
    buf_puts(&target, http_request_path(req));
    struct buf query = BUF_INIT;
    http_request_query_each(req, idem_query_param, &query);
    buf_append(&target, query.data ? query.data : "", query.len);
    int bad = buf_failed(&target) || buf_failed(&query) ||
              idem_fingerprint(http_request_method_name(req), target.data, body, len,
                               w->fingerprint) != 0;
    buf_free(&target);
    buf_free(&query);
    if (bad) {
        http_respond_error(req, 500, "internal_error", "internal error", NULL);
        return -1;
    }
    if (idem_lookup(req, w, 1))
        return -1;
    int c = idem_inflight_claim(w->api->inflight, w->scope, w->key);
    if (c != 0) {
        if (c > 0)
            http_respond_error(req, 409, "idempotency_key_in_use",
                               "another request with this Idempotency-Key is being processed",
                               NULL);
        else
            http_respond_error(req, 500, "internal_error", "internal error", NULL);
        return -1;
    }
    w->claimed = 1;
    w->has_key = 1;
    http_request_on_answer(req, write_op_release);
    /* The request that held the key may have finished between the lookup
     * and the claim: look again, now that no other can.  The store only: an
     * operation the key made meanwhile is found by the publish, which the
     * stream deduplicates, at no second wait on the broker. */
    return idem_lookup(req, w, 0) ? -1 : 0;
}

/* Sends w to the store: the continuation answers once it is durable. */
static void write_op_submit(http_request *req, struct write_op *w, enum payment_store_op op,
                            int64_t expected_version)
{
    struct payment_api *api = w->api;
    const struct payment_idem *idem = write_op_idem(w);
    http_request_suspend(req, written);
    w->op = op;
    w->submitted_us = clock_mono_us();
    if (op == PAYMENT_OP_CREATE)
        payment_store_create(api->store, &w->row, idem, write_done, req);
    else if (op == PAYMENT_OP_UPDATE)
        payment_store_update(api->store, &w->row, expected_version, idem, write_done, req);
    else
        payment_store_delete(api->store, w->id, expected_version, idem, write_done, req);
}

static struct write_op *write_op_new(http_request *req, struct payment_api *api)
{
    struct write_op *w = calloc(1, sizeof *w);
    if (!w) {
        http_respond_error(req, 500, "internal_error", "internal error", NULL);
        return NULL;
    }
    w->api = api;
    http_request_set_state(req, w, write_op_free);
    return w;
}

/* Serializes w->doc into w->row and prepares the answer; answers 500 and
 * returns -1 on failure. */
static int write_op_prepare(http_request *req, struct write_op *w, int64_t created_ms,
                            int64_t modified_ms, int status)
{
    if (!w->doc || payment_doc_row(w->doc, created_ms, modified_ms, &w->row, &w->text) != 0 ||
        write_op_answer(w, status) != 0) {
        respond_write_error(req, w, PAYMENT_STORE_EINTERNAL, -1);
        return -1;
    }
    return 0;
}

static const char *type_or(json_t *data, const char *fallback)
{
    const char *t = payment_doc_string(data, "type");
    return t && *t ? t : fallback;
}

/* --- asynchronous writes (--broker) --------------------------------------- */

/* How long a publish may wait for the broker's acknowledgement before the
 * request is answered 503 broker_unavailable: it holds an HTTP thread. */
#define ASYNC_PUBLISH_MS 2000

/* Whether this write goes through the broker: --async-writes always, or
 * the request's Prefer header holds respond-async (RFC 7240). */
static int async_wanted(http_request *req, const struct payment_api *api)
{
    if (!api->broker)
        return 0;
    if (api->async_always)
        return 1;
    const char *prefer = http_request_header(req, "Prefer");
    for (const char *p = prefer; p && *p;) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, ",;");
        size_t t = n;
        while (t > 0 && (p[t - 1] == ' ' || p[t - 1] == '\t'))
            t--;
        if (t == 13 && strncasecmp(p, "respond-async", 13) == 0)
            return 1;
        p += strcspn(p, ",");
    }
    return 0;
}

/* The operation id: a UUIDv7, or, for a request with an Idempotency-Key,
 * one derived from the caller and the key, so that a retry publishes the
 * same message id (the stream stores it once), a worker recognises an
 * operation it applied, and a retry is answered from the operation. */
static int async_op_id(struct write_op *w, char out[UUID_STR_LEN + 1])
{
    struct uuid u;
    if (w->key[0]) {
        char hex[IDEM_FINGERPRINT_LEN + 1];
        if (idem_fingerprint("ASYNC", w->scope, w->key, strlen(w->key), hex) != 0)
            return -1;
        for (int i = 0; i < 16; i++)
            u.bytes[i] = (uint8_t)(hex_value(hex[2 * i]) * 16 + hex_value(hex[2 * i + 1]));
        u.bytes[6] = (uint8_t)((u.bytes[6] & 0x0f) | 0x80); /* version 8: custom */
        u.bytes[8] = (uint8_t)((u.bytes[8] & 0x3f) | 0x80); /* RFC 9562 variant */
    } else if (uuid_v7_generate(clock_now_ms(), &u) != 0) {
        return -1;
    }
    uuid_format(&u, out);
    return 0;
}

/* An operation as GET /v1/operations shows it: applied (the store holds
 * its outcome) or pending (the broker's bucket holds its payment,
 * organisation and fingerprint until a worker applies it). */
struct op_view {
    int applied;
    struct payment_op_found f; /* applied: the outcome; pending: the three fields */
};

enum { OP_FOUND, OP_NONE, OP_ESTORE, OP_EBROKER };

/* Looks operation id up: OP_FOUND with v filled, OP_NONE, OP_ESTORE (the
 * store's error in *err) or OP_EBROKER. */
static int op_lookup(struct payment_api *api, const char *id, struct op_view *v, int *err)
{
    memset(v, 0, sizeof *v);
    *err = payment_store_op_get(api->store, id, &v->f);
    if (*err == PAYMENT_STORE_OK) {
        v->applied = 1;
        return OP_FOUND;
    }
    if (*err != PAYMENT_STORE_ENOTFOUND)
        return OP_ESTORE;
    if (!api->ops)
        return OP_NONE;
    if (!broker_connected(api->broker))
        return OP_EBROKER; /* at once, rather than after the request timeout */
    char *value = NULL;
    size_t len = 0;
    int rc = broker_kv_get(api->ops, id, &value, &len, NULL);
    if (rc == BROKER_ENOTFOUND)
        return OP_NONE;
    if (rc != BROKER_OK)
        return OP_EBROKER;
    json_t *j = json_loadb(value, len, 0, NULL);
    free(value);
    const char *pid = payment_doc_string(j, "payment_id");
    const char *org = payment_doc_string(j, "organisation_id");
    const char *fp = payment_doc_string(j, "fingerprint");
    int ok = pid && org && strlen(pid) == UUID_STR_LEN && strlen(org) == UUID_STR_LEN;
    if (ok) {
        memcpy(v->f.payment_id, pid, UUID_STR_LEN + 1);
        memcpy(v->f.organisation_id, org, UUID_STR_LEN + 1);
        snprintf(v->f.fingerprint, sizeof v->f.fingerprint, "%s", fp ? fp : "");
        snprintf(v->f.status, sizeof v->f.status, "pending");
    }
    json_decref(j);
    return ok ? OP_FOUND : OP_NONE;
}

/* Appends {"data": operation, "links": ...} to b. */
static void op_render(struct buf *b, const struct payment_api *api, const char *id,
                      const struct op_view *v)
{
    const struct payment_op_found *f = &v->f;
    buf_printf(b, "{\"data\":{\"type\":\"operations\",\"id\":\"%s\",\"status\":\"%s\","
                  "\"payment_id\":\"%s\",\"organisation_id\":\"%s\"",
               id, f->status, f->payment_id, f->organisation_id);
    if (v->applied && strcmp(f->status, "succeeded") == 0) {
        buf_printf(b, ",\"version\":%" PRId64, f->version);
    } else if (v->applied) {
        buf_puts(b, ",\"error_code\":\"");
        buf_json_escape(b, f->error_code, strlen(f->error_code));
        buf_puts(b, "\",\"error_message\":\"");
        buf_json_escape(b, f->message, strlen(f->message));
        buf_puts(b, "\"");
        if (f->version >= 0)
            buf_printf(b, ",\"current_version\":%" PRId64, f->version);
    }
    buf_puts(b, "},\"links\":{\"self\":\"");
    buf_json_escape(b, api->public_url, strlen(api->public_url));
    buf_printf(b, "/v1/operations/%s\",\"payment\":\"", id);
    buf_json_escape(b, api->public_url, strlen(api->public_url));
    buf_printf(b, "/v1/payments/%s\"}}", f->payment_id);
}

/* 202 Accepted with operation id and its Location. */
static void respond_accepted(http_request *req, const struct payment_api *api, const char *id,
                             const struct op_view *v)
{
    struct buf b = BUF_INIT, loc = BUF_INIT;
    buf_printf(&loc, "%s/v1/operations/%s", api->public_url, id);
    op_render(&b, api, id, v);
    if (!buf_failed(&loc))
        http_request_add_header(req, "Location", loc.data);
    buf_free(&loc);
    http_respond_buf(req, 202, &b);
}

/* A keyed request whose key already made an operation (pending or
 * applied) is answered 202 with that operation, as a replay, or 422 when
 * the key came with another request.  Returns 1 after answering, 0 when
 * the key made no operation yet. */
static int async_replay(http_request *req, struct write_op *w)
{
    char id[UUID_STR_LEN + 1];
    struct op_view v;
    int err;
    if (async_op_id(w, id) != 0) {
        http_respond_error(req, 500, "internal_error", "internal error", NULL);
        return 1;
    }
    switch (op_lookup(w->api, id, &v, &err)) {
    case OP_NONE:
    case OP_EBROKER:
        /* Nothing to replay, as far as can be seen: the store's unique
         * idempotency record still lets the key decide once. */
        return 0;
    case OP_ESTORE:
        respond_store_error(req, err, -1);
        return 1;
    default:
        break;
    }
    /* Operations of older versions kept no fingerprint: the key decides. */
    if (v.f.fingerprint[0] && strcmp(v.f.fingerprint, w->fingerprint) != 0) {
        http_respond_error(req, 422, "idempotency_key_reused",
                           "this Idempotency-Key was used with another request", NULL);
        return 1;
    }
    http_request_add_header(req, "Idempotent-Replayed", "true");
    respond_accepted(req, w->api, id, &v);
    return 1;
}

/* Publishes the operation (kind, payment pid of organisation org, based on
 * base_version, carrying data when not NULL) to its organisation's
 * partition and answers 202 once the broker has acknowledged it, or 503
 * broker_unavailable. */
static void async_submit(http_request *req, struct write_op *w, const char *kind, const char *pid,
                         const char *org, int64_t base_version, json_t *data)
{
    struct payment_api *api = w->api;
    char op[UUID_STR_LEN + 1], subject[64];
    if (async_op_id(w, op) != 0) {
        respond_write_error(req, w, PAYMENT_STORE_EINTERNAL, -1);
        return;
    }
    /* The answer, made first: a keyed operation carries it, as the
     * idempotency record its worker stores with a successful write. */
    struct op_view v = {.applied = 0};
    snprintf(v.f.status, sizeof v.f.status, "pending");
    snprintf(v.f.payment_id, sizeof v.f.payment_id, "%s", pid);
    snprintf(v.f.organisation_id, sizeof v.f.organisation_id, "%s", org);
    struct buf body = BUF_INIT, loc = BUF_INIT;
    buf_printf(&loc, "%s/v1/operations/%s", api->public_url, op);
    op_render(&body, api, op, &v);
    json_t *msg = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "op", op, "kind", kind,
                            "payment_id", pid, "organisation_id", org, "base_version",
                            (json_int_t)base_version, "submitted_ms", (json_int_t)clock_now_ms());
    if (msg && data && json_object_set(msg, "data", data) != 0) {
        json_decref(msg);
        msg = NULL;
    }
    if (msg && w->has_key && !buf_failed(&body) && !buf_failed(&loc) &&
        json_object_set_new(msg, "idempotency",
                            json_pack("{s:s, s:s, s:s, s:s, s:s%}", "scope", w->scope, "key",
                                      w->key, "fingerprint", w->fingerprint, "location", loc.data,
                                      "body", body.data, body.len)) != 0) {
        json_decref(msg);
        msg = NULL;
    }
    char *text = msg && !buf_failed(&body) && !buf_failed(&loc) ? json_dumps(msg, JSON_COMPACT)
                                                                 : NULL;
    json_decref(msg);
    if (!text) {
        buf_free(&body);
        buf_free(&loc);
        respond_write_error(req, w, PAYMENT_STORE_EINTERNAL, -1);
        return;
    }
    snprintf(subject, sizeof subject, "payments.cmd.%u", partition_of(org, api->partitions));
    int duplicate = 0;
    int rc = broker_publish(api->broker, subject, op, text, strlen(text), ASYNC_PUBLISH_MS, NULL,
                            &duplicate);
    free(text);
    if (rc == BROKER_OK && !duplicate) {
        /* Marks the operation pending for GET /v1/operations until a
         * worker records its outcome.  EEXISTS: the same operation id was
         * published before, past the stream's duplicate window. */
        char value[256];
        int n = snprintf(value, sizeof value,
                         "{\"payment_id\":\"%s\",\"organisation_id\":\"%s\",\"fingerprint\":\"%s\"}",
                         pid, org, w->has_key ? w->fingerprint : "");
        rc = broker_kv_create(api->ops, op, value, (size_t)n, NULL);
        if (rc == BROKER_EEXISTS)
            duplicate = 1;
        rc = BROKER_OK; /* else a failure only delays what GET shows */
    }
    static const char *const unacked = "the broker did not acknowledge the operation; retry later";
    if (rc != BROKER_OK && w->creates) {
        respond_create_failure(req, api, 503, "broker_unavailable", unacked, pid);
    } else if (rc != BROKER_OK) {
        http_respond_error(req, 503, "broker_unavailable", unacked, NULL);
    } else if (duplicate) {
        /* Another request with this key made the operation: its answer, or
         * 422 for another request, or 409 until it can be seen. */
        if (!async_replay(req, w))
            http_respond_error(req, 409, "idempotency_key_in_use",
                               "another request with this Idempotency-Key is being processed",
                               NULL);
    } else {
        http_request_add_header(req, "Location", loc.data);
        http_respond_buf(req, 202, &body);
    }
    buf_free(&body);
    buf_free(&loc);
}

static void payments_create(http_request *req, void *ctx)
{
    struct payment_api *api = ctx;
    if (offload(req, payments_create, may_block(api, 0) || async_wanted(req, api)))
        return;
    struct write_op *w = write_op_new(req, api);
    if (!w || idem_begin(req, w) != 0)
        return;
    json_t *root = read_payment_body(req, api, PAYMENT_CHECK_CREATE);
    if (!root)
        return;
    json_t *data = json_object_get(root, "data");
    const char *given = payment_doc_string(data, "id");
    char org[UUID_STR_LEN + 1];
    const char *org_in = payment_doc_string(data, "organisation_id");
    struct uuid u;
    int64_t now = clock_now_ms();
    /* Validation checked the client's id and the organisation as UUIDs. */
    assert(org_in);
    int org_rc = uuid_canonical(org_in, strlen(org_in), org);
    assert(org_rc == 0);
    (void)org_rc;
    if (!auth_allows(principal(req), org)) {
        json_decref(root);
        respond_forbidden(req);
        return;
    }
    if (given) {
        int id_rc = uuid_canonical(given, strlen(given), w->id);
        assert(id_rc == 0);
        (void)id_rc;
    } else if (uuid_v7_generate(now, &u) == 0) {
        uuid_format(&u, w->id);
    } else {
        json_decref(root);
        respond_internal(req); /* no random source: nothing was written */
        return;
    }
    w->creates = 1; /* from here on a 5xx names w->id */
    if (async_wanted(req, api)) {
        if (json_object_set_new(data, "id", json_string(w->id)) != 0)
            respond_write_error(req, w, PAYMENT_STORE_EINTERNAL, -1);
        else
            async_submit(req, w, "create", w->id, org, -1, data);
        json_decref(root);
        return;
    }
    char created_on[CLOCK_TIMESTAMP_LEN + 1];
    clock_format_ms(now, created_on);
    w->doc = payment_doc_new(type_or(data, "payments"), w->id, 0, org, created_on, now,
                             json_object_get(data, "attributes"),
                             non_null(json_object_get(data, "relationships")));
    json_decref(root);
    if (write_op_prepare(req, w, now, now, 201) != 0)
        return;
    write_op_submit(req, w, PAYMENT_OP_CREATE, -1);
}

/* --- fetch -------------------------------------------------------------- */

/* Whether If-None-Match names the current entity tag (or is "*"). */
static int if_none_match(http_request *req, int64_t version)
{
    const char *h = http_request_header(req, "If-None-Match");
    if (!h)
        return 0;
    char tag[32];
    size_t n = etag_format(version, tag);
    for (const char *p = h; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '*')
            return 1;
        if (p[0] == 'W' && p[1] == '/')
            p += 2; /* weak comparison, as RFC 9110 asks for If-None-Match */
        size_t len = strcspn(p, ",");
        size_t trimmed = len;
        while (trimmed > 0 && (p[trimmed - 1] == ' ' || p[trimmed - 1] == '\t'))
            trimmed--;
        if (n == trimmed && memcmp(p, tag, trimmed) == 0)
            return 1;
        p += len;
    }
    return 0;
}

static void payments_fetch(http_request *req, void *ctx)
{
    struct payment_api *api = ctx;
    if (offload(req, payments_fetch, may_block(api, 0)))
        return;
    char id[UUID_STR_LEN + 1];
    path_id(req, id);
    struct buf b = BUF_INIT;
    int64_t version = 0;
    if (buf_reserve(&b, 8192) != 0) { /* a typical payment, in one allocation */
        http_respond_error(req, 500, "internal_error", "internal error", NULL);
        return;
    }
    buf_puts(&b, "{\"data\":");
    int64_t t0 = clock_mono_us();
    int err = payment_store_get(api->store, id, &b, &version);
    metrics_histogram_observe(&api->store_latency[PAYMENT_OP_GET], clock_mono_us() - t0);
    char org[UUID_STR_LEN + 1];
    if (err == PAYMENT_STORE_OK && principal(req) &&
        (doc_org(b.data + 8, b.len - 8, org) != 0 || !auth_allows(principal(req), org)))
        err = PAYMENT_STORE_ENOTFOUND; /* existence does not leak across tenants */
    if (err != PAYMENT_STORE_OK) {
        buf_free(&b);
        respond_store_error(req, err, -1);
        return;
    }
    set_etag(req, version);
    if (if_none_match(req, version)) {
        buf_free(&b);
        http_respond(req, 304, NULL);
        return;
    }
    buf_puts(&b, ",");
    append_self_link(&b, api, id);
    http_respond_buf(req, 200, &b);
}

/* --- replace and patch --------------------------------------------------- */

/* The stored payment an update is based on. */
struct current {
    json_t *doc;        /* parsed stored document */
    int64_t version;    /* stored version */
    int64_t created_ms; /* stored creation time */
};

/* Reads the stored payment.  Returns 0, 1 when there is none (not
 * answered: a 404 loses to validation and version errors), or -1 after
 * answering 503/500. */
static int read_current(http_request *req, struct payment_api *api, const char *id,
                        struct current *cur)
{
    struct buf b = BUF_INIT;
    int64_t t0 = clock_mono_us();
    int err = payment_store_get_meta(api->store, id, &b, &cur->version, &cur->created_ms);
    metrics_histogram_observe(&api->store_latency[PAYMENT_OP_GET], clock_mono_us() - t0);
    if (err == PAYMENT_STORE_ENOTFOUND) {
        buf_free(&b);
        return 1;
    }
    if (err != PAYMENT_STORE_OK) {
        buf_free(&b);
        respond_store_error(req, err, -1);
        return -1;
    }
    cur->doc = json_loadb(b.data, b.len, 0, NULL);
    buf_free(&b);
    if (!json_is_object(cur->doc)) {
        json_decref(cur->doc);
        http_respond_error(req, 500, "internal_error", "internal error", NULL);
        return -1;
    }
    return 0;
}

/* The body's id, when given, must be the path's. */
static int check_id(http_request *req, json_t *data, const char *id)
{
    const char *body_id = payment_doc_string(data, "id");
    char canon[UUID_STR_LEN + 1];
    if (body_id && (uuid_canonical(body_id, strlen(body_id), canon) != 0 || strcmp(canon, id))) {
        respond_one_invalid(req, "data.id", "must equal the id in the path");
        return -1;
    }
    return 0;
}

/* organisation_id, when given, must be one the caller may act for: 403
 * otherwise, decided before the payment is looked up, so that the answer
 * is the same whether or not it exists. */
static int check_body_org(http_request *req, json_t *data)
{
    const char *org = payment_doc_string(data, "organisation_id");
    char canon[UUID_STR_LEN + 1];
    if (!org || uuid_canonical(org, strlen(org), canon) != 0)
        return 0; /* validation has refused a malformed one already */
    if (!auth_allows(principal(req), canon)) {
        respond_forbidden(req);
        return -1;
    }
    return 0;
}

/* organisation_id, when given, must be the stored one. */
static int check_org(http_request *req, json_t *data, const struct current *cur)
{
    const char *org = payment_doc_string(data, "organisation_id");
    char canon[UUID_STR_LEN + 1];
    if (!org)
        return 0;
    if (uuid_canonical(org, strlen(org), canon) != 0 ||
        strcmp(canon, payment_doc_string(cur->doc, "organisation_id") ?: "") != 0) {
        respond_one_invalid(req, "data.organisation_id",
                            "cannot change: must equal the stored organisation_id");
        return -1;
    }
    return 0;
}

/* Builds the next version of cur from attributes and relationships, and
 * submits the compare-and-set write. */
static void submit_update(http_request *req, struct write_op *w, const char *id, json_t *data,
                          const struct current *cur, json_t *attributes, json_t *relationships)
{
    int64_t now = clock_now_ms();
    snprintf(w->id, sizeof w->id, "%s", id);
    w->doc = payment_doc_new(type_or(data, payment_doc_string(cur->doc, "type") ?: "payments"),
                             id, cur->version + 1,
                             payment_doc_string(cur->doc, "organisation_id"),
                             payment_doc_string(cur->doc, "created_on") ?: "", now, attributes,
                             relationships);
    if (write_op_prepare(req, w, cur->created_ms, now, 200) != 0)
        return;
    write_op_submit(req, w, PAYMENT_OP_UPDATE, cur->version);
}

/* Merges the patch's attributes and relationships into the stored ones and
 * validates the result; answers 400 and returns -1 when it is not valid.
 * A null attributes patch changes nothing; a null relationships patch
 * removes them (RFC 7396). */
static int merge_current(http_request *req, struct payment_api *api, json_t *data,
                         const struct current *cur, json_t **attributes, json_t **relationships)
{
    json_t *pa = json_object_get(data, "attributes");
    json_t *pr = json_object_get(data, "relationships");
    json_t *ca = json_object_get(cur->doc, "attributes");
    json_t *cr = json_object_get(cur->doc, "relationships");
    if (json_is_null(pa))
        pa = NULL;
    *attributes = pa ? merge_patch(ca, pa) : json_incref(ca);
    if (json_is_null(pr))
        *relationships = NULL;
    else if (pr)
        *relationships = merge_patch(cr, pr); /* from {} when there are none */
    else
        *relationships = json_incref(cr);
    json_t *errors = json_array();
    if (!*attributes || (pr && !json_is_null(pr) && !*relationships) || !errors) {
        json_decref(errors);
        http_respond_error(req, 500, "internal_error", "internal error", NULL);
        return -1;
    }
    int n = 0;
    if (!json_is_object(*attributes)) {
        n = problem(errors, "data.attributes", "must be an object");
    } else {
        payment_attributes_strip_nulls(*attributes); /* nulls inside patched arrays */
        n = payment_validate_attributes(api->validator, *attributes, errors);
    }
    if (n == 0 && *relationships && !json_is_object(*relationships))
        n = problem(errors, "data.relationships", "must be an object");
    if (n != 0) {
        if (n < 0)
            http_respond_error(req, 500, "internal_error", "internal error", NULL);
        else
            respond_invalid(req, errors);
    }
    json_decref(errors);
    return n == 0 ? 0 : -1;
}

/* PUT and PATCH, in the order that decides which error wins: the body and
 * its validation; the stored payment is then read so that a different
 * organisation_id, or (PATCH) an invalid merge result, is a validation
 * error too; then a missing version (428), existence (404) and the version
 * (409); then the compare-and-set write, which alone decides a race. */
static void payments_update(http_request *req, struct payment_api *api, enum payment_check mode)
{
    char id[UUID_STR_LEN + 1];
    int64_t expected;
    struct current cur = {0};
    json_t *attributes = NULL, *relationships = NULL;
    struct write_op *w = write_op_new(req, api);
    if (!w || idem_begin(req, w) != 0)
        return;
    json_t *root = read_payment_body(req, api, mode);
    if (!root)
        return;
    json_t *data = json_object_get(root, "data");
    path_id(req, id);
    if (check_id(req, data, id) != 0 || check_body_org(req, data) != 0)
        goto out;
    int missing = read_current(req, api, id, &cur);
    if (missing < 0)
        goto out;
    if (!missing && !auth_allows(principal(req),
                                 payment_doc_string(cur.doc, "organisation_id") ?: "")) {
        /* Another organisation's payment is answered as an unknown id. */
        json_decref(cur.doc);
        cur = (struct current){0};
        missing = 1;
    }
    if (!missing && check_org(req, data, &cur) != 0)
        goto out;
    if (!missing && mode == PAYMENT_CHECK_PATCH &&
        merge_current(req, api, data, &cur, &attributes, &relationships) != 0)
        goto out;
    if (client_version(req, data, 1, &expected) != 0)
        goto out;
    if (missing) {
        /* Asynchronously, a payment not stored yet (its create may still
         * be queued before this write) is the worker's to find, when the
         * body names the organisation that routes the operation. */
        const char *body_org = payment_doc_string(data, "organisation_id");
        char org[UUID_STR_LEN + 1];
        if (async_wanted(req, api) && body_org &&
            uuid_canonical(body_org, strlen(body_org), org) == 0) {
            async_submit(req, w, mode == PAYMENT_CHECK_PATCH ? "patch" : "replace", id, org,
                         expected, data);
            goto out;
        }
        respond_store_error(req, PAYMENT_STORE_ENOTFOUND, -1);
        goto out;
    }
    if (async_wanted(req, api)) {
        /* Checked here against the payment as it is now; the worker checks
         * again, and decides the version, when it applies the operation. */
        async_submit(req, w, mode == PAYMENT_CHECK_PATCH ? "patch" : "replace", id,
                     payment_doc_string(cur.doc, "organisation_id") ?: "", expected, data);
        goto out;
    }
    if (cur.version != expected) {
        respond_store_error(req, PAYMENT_STORE_ECONFLICT, cur.version);
        goto out;
    }
    if (mode == PAYMENT_CHECK_REPLACE) {
        attributes = json_incref(json_object_get(data, "attributes"));
        relationships = json_incref(non_null(json_object_get(data, "relationships")));
    }
    submit_update(req, w, id, data, &cur, attributes, relationships);
out:
    json_decref(attributes);
    json_decref(relationships);
    json_decref(cur.doc);
    json_decref(root);
}

static void payments_replace(http_request *req, void *ctx)
{
    if (offload(req, payments_replace, may_block(ctx, 0) || async_wanted(req, ctx)))
        return;
    payments_update(req, ctx, PAYMENT_CHECK_REPLACE);
}

static void payments_patch(http_request *req, void *ctx)
{
    if (offload(req, payments_patch, may_block(ctx, 0) || async_wanted(req, ctx)))
        return;
    payments_update(req, ctx, PAYMENT_CHECK_PATCH);
}

/* --- delete ------------------------------------------------------------- */

struct delete_query {
    int64_t version; /* -1 unless ?version= was given */
    int bad;         /* 1: malformed, repeated or unknown parameter */
};

static int delete_query_param(void *arg, const char *key, const char *value)
{
    struct delete_query *q = arg;
    if (strcmp(key, "version") != 0 || q->version != -1 ||
        parse_version(value, strlen(value), &q->version) != 0) {
        q->bad = 1;
        return 1;
    }
    return 0;
}

/* With a key limited to some organisations, the payment is read first:
 * another organisation's payment is answered 404, as an unknown id is (its
 * organisation never changes, so the read cannot go stale).  Returns 0, or
 * -1 after answering. */
static int delete_allowed(http_request *req, struct payment_api *api, const char *id)
{
    const struct auth_principal *p = principal(req);
    if (!p || p->all_orgs)
        return 0;
    struct buf b = BUF_INIT;
    int64_t version;
    char org[UUID_STR_LEN + 1];
    int err = payment_store_get(api->store, id, &b, &version);
    if (err == PAYMENT_STORE_OK && doc_org(b.data, b.len, org) != 0)
        err = PAYMENT_STORE_EINTERNAL;
    buf_free(&b);
    if (err != PAYMENT_STORE_OK) {
        respond_store_error(req, err, -1);
        return -1;
    }
    if (!auth_allows(p, org)) {
        respond_store_error(req, PAYMENT_STORE_ENOTFOUND, -1);
        return -1;
    }
    return 0;
}

static void payments_delete(http_request *req, void *ctx)
{
    struct payment_api *api = ctx;
    if (offload(req, payments_delete, may_block(api, 0) || async_wanted(req, api)))
        return;
    char id[UUID_STR_LEN + 1];
    path_id(req, id);
    struct write_op *w = write_op_new(req, api);
    if (!w || idem_begin(req, w) != 0)
        return;
    struct delete_query q = {-1, 0};
    http_request_query_each(req, delete_query_param, &q);
    if (q.bad) {
        http_respond_error(req, 400, "bad_request",
                           "the only parameter is version, a non-negative integer, once", NULL);
        return;
    }
    int64_t hv;
    int h = if_match_version(req, &hv);
    if (h < 0 || (h && q.version != -1 && hv != q.version)) {
        http_respond_error(req, 400, "bad_request",
                           h < 0 ? if_match_malformed : "If-Match and ?version disagree", NULL);
        return;
    }
    if (delete_allowed(req, api, id) != 0)
        return;
    if (async_wanted(req, api)) {
        struct buf b = BUF_INIT;
        int64_t version;
        char org[UUID_STR_LEN + 1];
        int err = payment_store_get(api->store, id, &b, &version);
        if (err == PAYMENT_STORE_OK && doc_org(b.data, b.len, org) != 0)
            err = PAYMENT_STORE_EINTERNAL;
        buf_free(&b);
        if (err != PAYMENT_STORE_OK)
            respond_store_error(req, err, -1);
        else
            async_submit(req, w, "delete", id, org, h ? hv : q.version, NULL);
        return;
    }
    snprintf(w->id, sizeof w->id, "%s", id);
    w->status = 204;
    write_op_submit(req, w, PAYMENT_OP_DELETE, h ? hv : q.version);
}

/* --- list --------------------------------------------------------------- */

struct list_parse {
    struct payment_query *q;
    char msg[256]; /* why the query was refused */
};

static int list_param(void *arg, const char *key, const char *value)
{
    struct list_parse *lp = arg;
    return payment_query_add(lp->q, key, value, lp->msg, sizeof lp->msg) != 0;
}

struct list_out {
    struct buf *b;
    size_t count;       /* rows appended */
    int64_t last_seq;   /* seq of the last row */
    uint32_t page_size; /* rows the page may hold */
};

/* The page's buffer is sized once, from its first row, rather than doubled
 * and copied as rows arrive; this much at most. */
#define LIST_RESERVE_MAX (1024 * 1024)

/* list_row's stop when the page's buffer ran out of memory: positive, so
 * that it is never taken for one of the store's errors (all negative). */
#define LIST_STOP_NO_MEMORY 1

static int list_row(void *arg, const char *doc, size_t len, int64_t seq)
{
    struct list_out *o = arg;
    if (o->count == 0) {
        size_t want = (size_t)o->page_size * (len + 1) + 1024;
        buf_reserve(o->b, want < LIST_RESERVE_MAX ? want : LIST_RESERVE_MAX);
    }
    if (o->count++)
        buf_puts(o->b, ",");
    buf_append(o->b, doc, len);
    o->last_seq = seq;
    return buf_failed(o->b) ? LIST_STOP_NO_MEMORY : 0;
}

static void append_list_link(struct buf *b, const struct payment_api *api, const char *name,
                             const struct payment_query *q, enum payment_page_mode mode,
                             uint32_t number, int64_t after)
{
    struct buf qs = BUF_INIT;
    payment_query_link(q, mode, number, after, &qs);
    buf_printf(b, "\"%s\":\"", name);
    buf_json_escape(b, api->public_url, strlen(api->public_url));
    buf_puts(b, "/v1/payments");
    if (qs.data)
        buf_json_escape(b, qs.data, qs.len);
    buf_puts(b, "\"");
    if (buf_failed(&qs))
        b->failed = 1;
    buf_free(&qs);
}

/* Narrows q to the organisations p may act for: the filter given, less
 * the organisations p may not see, or all of p's when none was given.
 * Returns 1, 0 when nothing is left to list, or -1 out of memory. */
static int list_restrict(struct payment_query *q, const struct auth_principal *p)
{
    struct payment_query_set *set = &q->organisation_id;
    if (!p || p->all_orgs)
        return 1;
    if (set->count == 0) {
        for (size_t i = 0; i < p->n_orgs && i < PAYMENT_QUERY_MAX_VALUES; i++) {
            set->values[i] = strdup(p->orgs[i]);
            if (!set->values[i])
                return -1;
            set->count++;
        }
        return set->count > 0;
    }
    size_t kept = 0;
    for (size_t i = 0; i < set->count; i++)
        kept += auth_allows(p, set->values[i]);
    if (kept == 0)
        return 0; /* nothing to list; the filter stays for the links */
    kept = 0;
    for (size_t i = 0; i < set->count; i++) {
        if (auth_allows(p, set->values[i]))
            set->values[kept++] = set->values[i];
        else
            free(set->values[i]);
    }
    set->count = kept;
    return 1;
}

static void payments_list(http_request *req, void *ctx)
{
    struct payment_api *api = ctx;
    if (offload(req, payments_list, may_block(api, 0)))
        return;
    struct payment_query q;
    struct list_parse lp = {&q, ""};
    payment_query_init(&q);
    if (http_request_query_each(req, list_param, &lp) != 0 ||
        payment_query_finish(&q, lp.msg, sizeof lp.msg) != 0) {
        http_respond_error(req, 400, "bad_request", lp.msg[0] ? lp.msg : "bad query", NULL);
        payment_query_clear(&q);
        return;
    }
    struct buf b = BUF_INIT;
    struct list_out out = {&b, 0, 0, q.page_size};
    int more = 0;
    buf_puts(&b, "{\"data\":[");
    int64_t t0 = clock_mono_us();
    int visible = list_restrict(&q, principal(req));
    int err = visible < 0   ? PAYMENT_STORE_EINTERNAL
              : visible > 0 ? payment_store_list(api->store, &q, list_row, &out, &more)
                            : PAYMENT_STORE_OK;
    metrics_histogram_observe(&api->store_latency[PAYMENT_OP_LIST], clock_mono_us() - t0);
    if (err == LIST_STOP_NO_MEMORY)
        err = PAYMENT_STORE_EINTERNAL;
    if (err != PAYMENT_STORE_OK) {
        buf_free(&b);
        payment_query_clear(&q);
        respond_store_error(req, err, -1);
        return;
    }
    buf_puts(&b, "],\"links\":{");
    append_list_link(&b, api, "self", &q, q.mode, q.page_number, q.after_seq);
    buf_puts(&b, ",");
    append_list_link(&b, api, "first", &q, PAYMENT_PAGE_FIRST, 0, 0);
    if (more) {
        buf_puts(&b, ",");
        /* Offset paging continues by offset while the next page is within
         * the offset limit, and by cursor beyond it. */
        if (q.mode == PAYMENT_PAGE_OFFSET &&
            (uint64_t)(q.page_number + 1) * q.page_size < PAYMENT_OFFSET_LIMIT)
            append_list_link(&b, api, "next", &q, PAYMENT_PAGE_OFFSET, q.page_number + 1, 0);
        else
            append_list_link(&b, api, "next", &q, PAYMENT_PAGE_CURSOR, 0, out.last_seq);
    }
    buf_puts(&b, "}}");
    payment_query_clear(&q);
    http_respond_buf(req, 200, &b);
}

/* --- operations ---------------------------------------------------------- */

static void operations_fetch(http_request *req, void *ctx)
{
    struct payment_api *api = ctx;
    if (offload(req, operations_fetch, may_block(api, 1)))
        return;
    char id[UUID_STR_LEN + 1];
    path_id(req, id);
    struct op_view v;
    int err;
    int found = op_lookup(api, id, &v, &err);
    if (found == OP_ESTORE) {
        respond_store_error(req, err, -1);
        return;
    }
    if (found == OP_EBROKER) {
        http_respond_error(req, 503, "broker_unavailable", "the broker does not answer", NULL);
        return;
    }
    /* Another tenant's operation does not exist for the caller. */
    if (found != OP_FOUND || !auth_allows(principal(req), v.f.organisation_id)) {
        http_respond_error(req, 404, "not_found", "no operation with this id", NULL);
        return;
    }
    if (!v.applied)
        http_request_add_header(req, "Retry-After", "1");
    struct buf b = BUF_INIT;
    op_render(&b, api, id, &v);
    http_respond_buf(req, 200, &b);
}

/* --- routes ------------------------------------------------------------- */

size_t payment_api_routes(struct payment_api *api, struct http_route *out)
{
    const unsigned body = HTTP_ROUTE_BODY | HTTP_ROUTE_AUTH;
    const unsigned id = HTTP_ROUTE_UUID_PARAM | HTTP_ROUTE_AUTH;
    const struct http_route routes[PAYMENT_API_ROUTES] = {
        {HTTP_POST, "/v1/payments", payments_create, body, api},
        {HTTP_GET, "/v1/payments", payments_list, HTTP_ROUTE_AUTH, api},
        {HTTP_GET, "/v1/payments/{id}", payments_fetch, id, api},
        {HTTP_PUT, "/v1/payments/{id}", payments_replace, id | body, api},
        {HTTP_PATCH, "/v1/payments/{id}", payments_patch, id | body, api},
        {HTTP_DELETE, "/v1/payments/{id}", payments_delete, id, api},
        /* The original service's singular routes, kept as aliases. */
        {HTTP_POST, "/v1/payment", payments_create, body, api},
        {HTTP_GET, "/v1/payment/{id}", payments_fetch, id, api},
        {HTTP_PUT, "/v1/payment/{id}", payments_replace, id | body, api},
        {HTTP_DELETE, "/v1/payment/{id}", payments_delete, id, api},
        {HTTP_GET, "/v1/operations/{id}", operations_fetch, id, api},
    };
    memcpy(out, routes, sizeof routes);
    return PAYMENT_API_ROUTES;
}

void payment_api_metrics(struct payment_api *api, struct buf *b)
{
    static const char *const ops[PAYMENT_OP_COUNT] = {"get", "list", "create", "update",
                                                      "delete"};
    static const char *const name = "paymentd_store_operation_duration_seconds";
    metrics_render_header(b, name, "histogram",
                          "Store operations, from the call (writes: submission) to the answer.");
    for (int i = 0; i < PAYMENT_OP_COUNT; i++) {
        char labels[32];
        snprintf(labels, sizeof labels, "op=\"%s\"", ops[i]);
        metrics_render_histogram(b, name, labels, &api->store_latency[i]);
    }
    struct payment_store_stats st;
    if (payment_store_stats(api->store, &st) != 0)
        return;
    metrics_render_header(b, "paymentd_store_commits_total", "counter",
                          "Write transactions committed (each one fsync).");
    buf_printf(b, "paymentd_store_commits_total %" PRIu64 "\n", st.commits);
    metrics_render_header(b, "paymentd_store_writes_total", "counter",
                          "Write operations answered by the store.");
    buf_printf(b, "paymentd_store_writes_total %" PRIu64 "\n", st.writes);
    if (st.batches) {
        metrics_render_header(b, "paymentd_store_commit_batch_size", "histogram",
                              "Write operations per committed transaction (group commit).");
        metrics_render_sizes(b, "paymentd_store_commit_batch_size", "", st.batches);
    }
}
