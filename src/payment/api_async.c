/* api_async: asynchronous writes (--broker): the operation published
 * through the operation queue (opqueue.h) to its organisation's partition
 * and answered 202, the operation id derived from an Idempotency-Key,
 * replays from the operation, GET /v1/operations/{id}. */
#include "payment/api_internal.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/clock.h"
#include "core/hex.h"
#include "payment/doc.h"

/* How long a publish may wait for the broker's acknowledgement before the
 * request is answered 503 broker_unavailable: it holds an HTTP thread. */
#define ASYNC_PUBLISH_MS 2000

/* Whether this write goes through the broker: --async-writes always, or
 * the request's Prefer header holds respond-async (RFC 7240). */
int api_async_wanted(http_request *req, const struct payment_api *api)
{
    if (!api->queue)
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
/* A UUID (version 8) derived from the caller's scope and Idempotency-Key
 * under purpose: the same for every retry with the key, and different for
 * each purpose.  Returns 0, or -1 out of memory. */
static int key_uuid(const struct api_write_op *w, const char *purpose,
                    char out[UUID_STR_LEN + 1])
{
    assert(w->key[0]);
    struct uuid u;
    char hex[IDEM_FINGERPRINT_LEN + 1];
    if (idem_fingerprint(purpose, w->scope, w->key, strlen(w->key), hex) != 0)
        return -1;
    for (int i = 0; i < 16; i++)
        u.bytes[i] = (uint8_t)(hex_value(hex[2 * i]) * 16 + hex_value(hex[2 * i + 1]));
    u.bytes[6] = (uint8_t)((u.bytes[6] & 0x0f) | 0x80); /* version 8: custom */
    u.bytes[8] = (uint8_t)((u.bytes[8] & 0x3f) | 0x80); /* RFC 9562 variant */
    uuid_format(&u, out);
    return 0;
}

static int async_op_id(struct api_write_op *w, char out[UUID_STR_LEN + 1])
{
    struct uuid u;
    if (w->key[0])
        return key_uuid(w, "ASYNC", out);
    if (uuid_v7_generate(clock_now_ms(), &u) != 0)
        return -1;
    uuid_format(&u, out);
    return 0;
}

int api_async_payment_id(const struct api_write_op *w, char out[UUID_STR_LEN + 1])
{
    return key_uuid(w, "ASYNC-PAYMENT", out);
}

/* An operation as GET /v1/operations shows it: applied (the store holds
 * its outcome) or pending (the queue's pending mark holds its payment,
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
    const struct payment_opqueue *q = api->queue;
    if (!q)
        return OP_NONE;
    if (!q->connected(q->ctx))
        return OP_EBROKER; /* at once, rather than after the request timeout */
    char *value = NULL;
    size_t len = 0;
    int rc = q->pending_get(q->ctx, id, &value, &len);
    if (rc == OPQUEUE_ENOTFOUND)
        return OP_NONE;
    if (rc != OPQUEUE_OK)
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
int api_async_replay(http_request *req, struct api_write_op *w)
{
    char id[UUID_STR_LEN + 1];
    struct op_view v;
    int err;
    /* A 5xx names the payment when called for a create whose id is chosen
     * (api_respond_write_error): the key's operation creates that one. */
    if (async_op_id(w, id) != 0) {
        api_respond_write_error(req, w, PAYMENT_STORE_EINTERNAL, -1);
        return 1;
    }
    switch (op_lookup(w->api, id, &v, &err)) {
    case OP_NONE:
    case OP_EBROKER:
        /* Nothing to replay, as far as can be seen: the store's unique
         * idempotency record still lets the key decide once. */
        return 0;
    case OP_ESTORE:
        api_respond_write_error(req, w, err, -1);
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
 * base_version, carrying data when not NULL, and the caller's key and the
 * request's id for the write's event), encoded by operation.h, to
 * its organisation's partition and answers 202 once the broker has
 * acknowledged it, or 503 broker_unavailable. */
void api_async_submit(http_request *req, struct api_write_op *w, enum operation_kind kind,
                      const char *pid, const char *org, int64_t base_version, json_t *data)
{
    struct payment_api *api = w->api;
    const struct payment_opqueue *q = api->queue;
    assert(q); /* callers ask api_async_wanted first */
    char op[UUID_STR_LEN + 1];
    if (async_op_id(w, op) != 0) {
        api_respond_write_error(req, w, PAYMENT_STORE_EINTERNAL, -1);
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
    const struct auth_principal *p = api_principal(req);
    struct operation msg = {
        .kind = kind,
        .base_version = base_version,
        .submitted_ms = clock_now_ms(),
        .data = data,
        .has_idem = w->has_key,
        .idem = {w->scope, w->key, w->fingerprint, loc.data, body.data, body.len},
        .api_key_id = p ? p->id : NULL, /* the event's actor and request */
        .request_id = http_request_id(req),
    };
    snprintf(msg.id, sizeof msg.id, "%s", op);
    snprintf(msg.payment_id, sizeof msg.payment_id, "%s", pid);
    snprintf(msg.organisation_id, sizeof msg.organisation_id, "%s", org);
    char *text = NULL;
    size_t text_len = 0;
    if (buf_failed(&body) || buf_failed(&loc) ||
        operation_encode(&msg, &text, &text_len) != OPERATION_OK) {
        buf_free(&body);
        buf_free(&loc);
        api_respond_write_error(req, w, PAYMENT_STORE_EINTERNAL, -1);
        return;
    }
    int duplicate = 0;
    int rc = q->publish(q->ctx, op, org, text, text_len, ASYNC_PUBLISH_MS, &duplicate);
    free(text);
    if (rc == OPQUEUE_OK && !duplicate) {
        /* Marks the operation pending for GET /v1/operations until a
         * worker records its outcome.  EEXISTS: the same operation id was
         * published before, past the stream's duplicate window. */
        char value[256];
        int n = snprintf(value, sizeof value,
                         "{\"payment_id\":\"%s\",\"organisation_id\":\"%s\",\"fingerprint\":\"%s\"}",
                         pid, org, w->has_key ? w->fingerprint : "");
        if (q->pending_mark(q->ctx, op, value, (size_t)n) == OPQUEUE_EEXISTS)
            duplicate = 1;
        /* else a failure only delays what GET shows */
    }
    /* Any failed publish is 503: a refusal (a stream being re-created, a
     * cluster without a leader answering oddly) may pass on a retry, and
     * the retry is safe (the operation id decides once). */
    static const char *const unacked = "the broker did not acknowledge the operation; retry later";
    if (rc != OPQUEUE_OK && w->creates) {
        api_respond_create_failure(req, api, 503, "broker_unavailable", unacked, pid);
    } else if (rc != OPQUEUE_OK) {
        http_respond_error(req, 503, "broker_unavailable", unacked, NULL);
    } else if (duplicate) {
        /* Another request with this key made the operation: its answer, or
         * 422 for another request, or 409 until it can be seen. */
        if (!api_async_replay(req, w))
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

void api_operations_fetch(http_request *req, void *ctx)
{
    struct payment_api *api = ctx;
    if (api_offload(req, api_operations_fetch, api_may_block(api, 1)))
        return;
    char id[UUID_STR_LEN + 1];
    api_path_id(req, id);
    struct op_view v;
    int err;
    int found = op_lookup(api, id, &v, &err);
    if (found == OP_ESTORE) {
        api_respond_store_error(req, err, -1);
        return;
    }
    if (found == OP_EBROKER) {
        http_respond_error(req, 503, "broker_unavailable", "the broker does not answer", NULL);
        return;
    }
    /* Another tenant's operation does not exist for the caller. */
    if (found != OP_FOUND || !auth_allows(api_principal(req), v.f.organisation_id)) {
        http_respond_error(req, 404, "not_found", "no operation with this id", NULL);
        return;
    }
    if (!v.applied)
        http_request_add_header(req, "Retry-After", "1");
    struct buf b = BUF_INIT;
    op_render(&b, api, id, &v);
    http_respond_buf(req, 200, &b);
}
