/* api_write_op: a write in flight: the row the store borrows, the answer prepared
 * before the write (an idempotency record holds it), the description of the
 * event the store records with the write, the store's verdict and the
 * continuation that answers once the write is durable. */
#include "payment/api_internal.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "payment/doc.h"

/* Lets go of the request's Idempotency-Key: once the answer can be seen,
 * an immediate retry must find the key free (and its record, if any). */
void api_write_op_release(void *p)
{
    struct api_write_op *w = p;
    if (w->claimed)
        idem_inflight_release(w->api->inflight, w->scope, w->key);
    w->claimed = 0;
}

static void write_op_free(void *p)
{
    struct api_write_op *w = p;
    if (!w)
        return;
    api_write_op_release(w);
    json_decref(w->doc);
    free(w->text);
    payment_fastbody_free(&w->fast);
    free(w->changes);
    buf_free(&w->location);
    buf_free(&w->body);
    free(w);
}

static void write_done(void *arg, int err, int64_t current_version, int64_t seq)
{
    http_request *req = arg;
    struct api_write_op *w = http_request_state(req);
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
    struct api_write_op *w = http_request_state(req);
    (void)ctx;
    if (w->err != PAYMENT_STORE_OK) {
        api_respond_write_error(req, w, w->err, w->current_version);
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
static int write_op_answer(struct api_write_op *w, int status)
{
    struct payment_api *api = w->api;
    w->status = status;
    if (!w->row.doc)
        return 0;
    if (status == 201)
        buf_printf(&w->location, "%s/v1/payments/%s", api->public_url, w->row.id);
    api_etag_format(w->row.version, w->etag);
    buf_puts(&w->body, "{\"data\":");
    buf_append(&w->body, w->row.doc, w->row.doc_len);
    buf_puts(&w->body, ",");
    api_append_self_link(&w->body, api, w->row.id);
    return buf_failed(&w->location) || buf_failed(&w->body) ? -1 : 0;
}

/* The idempotency record of w's answer, or NULL without a key. */
static const struct payment_idem *write_op_idem(struct api_write_op *w)
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

/* Describes w's event: a new id (a UUIDv7 of its time), the caller's key,
 * the request's id and Idempotency-Key, and for an update the paths it
 * changed.  It occurs at the row's modification time, a delete now.
 * Returns 0, or -1 without a random source. */
static int write_op_event(http_request *req, struct api_write_op *w, enum payment_store_op op)
{
    assert(op != PAYMENT_OP_UPDATE || w->changes);
    const struct auth_principal *p = api_principal(req);
    int64_t at = op == PAYMENT_OP_DELETE ? clock_now_ms() : w->row.modified_ms;
    struct uuid u;
    if (uuid_v7_generate(at, &u) != 0)
        return -1;
    w->event = (struct payment_event_info){
        .api_key_id = p ? p->id : NULL,
        .request_id = http_request_id(req),
        .idempotency_key = w->has_key ? w->key : NULL,
        .operation_id = NULL,
        .changes = op == PAYMENT_OP_UPDATE ? w->changes : NULL,
        .occurred_ms = at,
    };
    uuid_format(&u, w->event.id);
    return 0;
}

/* Sends w to the store: the continuation answers once it is durable. */
void api_write_op_submit(http_request *req, struct api_write_op *w, enum payment_store_op op,
                         int64_t expected_version)
{
    struct payment_api *api = w->api;
    if (write_op_event(req, w, op) != 0) {
        api_respond_write_error(req, w, PAYMENT_STORE_EINTERNAL, -1); /* nothing written */
        return;
    }
    const struct payment_idem *idem = write_op_idem(w);
    const struct payment_event_info *ev = &w->event;
    http_request_suspend(req, written);
    w->op = op;
    w->submitted_us = clock_mono_us();
    if (op == PAYMENT_OP_CREATE)
        payment_store_create(api->store, &w->row, idem, ev, write_done, req);
    else if (op == PAYMENT_OP_UPDATE)
        payment_store_update(api->store, &w->row, expected_version, idem, ev, write_done, req);
    else
        payment_store_delete(api->store, w->id, expected_version, idem, ev, write_done, req);
}

struct api_write_op *api_write_op_new(http_request *req, struct payment_api *api)
{
    struct api_write_op *w = calloc(1, sizeof *w);
    if (!w) {
        http_respond_error(req, 500, "internal_error", "internal error", NULL);
        return NULL;
    }
    w->api = api;
    w->fast = (struct payment_fastbody)PAYMENT_FASTBODY_INIT;
    http_request_set_state(req, w, write_op_free);
    return w;
}

int api_write_op_prepare_row(http_request *req, struct api_write_op *w, int status)
{
    assert(w->row.doc && w->row.doc == w->text);
    if (write_op_answer(w, status) != 0) {
        api_respond_write_error(req, w, PAYMENT_STORE_EINTERNAL, -1);
        return -1;
    }
    return 0;
}

int api_write_op_prepare(http_request *req, struct api_write_op *w, int64_t created_ms,
                         int64_t modified_ms, int status)
{
    if (!w->doc || payment_doc_row(w->doc, created_ms, modified_ms, &w->row, &w->text) != 0) {
        api_respond_write_error(req, w, PAYMENT_STORE_EINTERNAL, -1);
        return -1;
    }
    return api_write_op_prepare_row(req, w, status);
}
