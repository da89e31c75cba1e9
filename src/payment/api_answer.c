/* api_answer: answers and errors of the payment API: the store's errors as HTTP
 * statuses and codes, a create's 5xx naming its id, validation problems,
 * 403, replays, links and entity tags. */
#include "payment/api_internal.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void api_append_self_link(struct buf *b, const struct payment_api *api, const char *id)
{
    buf_puts(b, "\"links\":{\"self\":\"");
    buf_json_escape(b, api->public_url, strlen(api->public_url));
    buf_puts(b, "/v1/payments/");
    buf_puts(b, id);
    buf_puts(b, "\"}}");
}

/* The entity tag of a version, "\"N\"" (versions are never negative), without
 * a printf on every GET.  Returns its length. */
size_t api_etag_format(int64_t version, char out[32])
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
            409, "version_conflict",
            "the payment has changed since that version; fetch it and retry"};
    case PAYMENT_STORE_EDUPLICATE:
        return (struct store_answer){409, "duplicate_id",
                                     "a payment with this id exists or existed"};
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

void api_respond_store_error(http_request *req, int err, int64_t current_version)
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
void api_respond_create_failure(http_request *req, const struct payment_api *api, int status,
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

void api_respond_internal(http_request *req)
{
    http_respond_error(req, 500, "internal_error", "internal error", NULL);
}

/* A write's error: the store's answer, a create's 5xx naming its id. */
void api_respond_write_error(http_request *req, struct api_write_op *w, int err,
                             int64_t current_version)
{
    struct store_answer a = store_answer(err);
    if (w->creates && w->id[0] && a.status >= 500)
        api_respond_create_failure(req, w->api, a.status, a.code, a.message, w->id);
    else
        api_respond_store_error(req, err, current_version);
}

/* 400 validation_failed listing every problem. */
void api_respond_invalid(http_request *req, json_t *errors)
{
    http_respond_invalid(req, "payment", errors);
}

void api_respond_one_invalid(http_request *req, const char *field, const char *message)
{
    http_respond_one_invalid(req, "payment", field, message);
}

/* 403: the caller's key may not act for org. */
void api_respond_forbidden(http_request *req)
{
    http_respond_error(req, 403, "forbidden",
                       "this API key may not act for the payment's organisation", NULL);
}

/* Answers with a stored outcome, marked as a replay. */
void api_respond_replay(http_request *req, struct payment_idem_found *f)
{
    http_request_add_header(req, "Idempotent-Replayed", "true");
    if (f->location.len)
        http_request_add_header(req, "Location", f->location.data);
    if (f->etag[0])
        http_request_add_header(req, "ETag", f->etag);
    http_respond(req, f->status, &f->body);
}
