/* api_internal: what the files of the payment API share, and nothing else
 * includes.  The handlers are split by concept: answers and errors
 * (api_answer.c), request pieces (api_request.c), a write in flight
 * (api_write_op.c), Idempotency-Keys (api_idem.c), asynchronous writes and
 * operations (api_async.c), the read handlers (api_read.c; the list as CSV
 * in api_csv.c), the write
 * handlers (api_writes.c, the fast path of create and replace in
 * api_writes_fast.c), a payment's history (api_history.c), the change
 * feed (api_events.c, its long poll in feed_wait.c) and the route table
 * (api.c).
 *
 * Threads: every function runs on the thread of the request it is given,
 * an HTTP loop thread or, when api_offload handed the request over, a
 * thread of the server's blocking pool.  Errors: answered to the client;
 * functions returning int say 0 (go on) or -1 (answered) unless stated. */
#ifndef PAYMENT_API_INTERNAL_H
#define PAYMENT_API_INTERNAL_H

#include <jansson.h>
#include <stdint.h>

#include "auth/keys.h"
#include "core/uuid.h"
#include "http/problems.h"
#include "http/server.h"
#include "http/version.h"
#include "payment/api.h"
#include "payment/fastbody.h"
#include "payment/idem.h"
#include "payment/operation.h"
#include "payment/store.h"

/* A write in flight: what the store borrows until it reports (the row, the
 * idempotency record, the event's description), what it reported, and the
 * answer prepared before the write (an idempotency record must hold the
 * answer, and is stored with the write).  Freed with the request. */
struct api_write_op {
    struct payment_api *api;
    json_t *doc;              /* the document written, when the general path made it */
    char *text;               /* its serialized form, borrowed by the row (NULL for delete) */
    struct payment_fastbody fast; /* the body, when the fast path read it; the row borrows it */
    struct payment_row row;   /* what the store writes */
    char id[UUID_STR_LEN + 1];
    int err;                  /* the store's verdict */
    int64_t current_version;  /* on ECONFLICT */
    enum payment_store_op op; /* for the latency metric */
    int64_t submitted_us;     /* when it went to the store */
    int creates;              /* a create: its 5xx answers name id (api_respond_write_error) */
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
    char *changes;            /* an update: the paths it changed (changes.h), owned */
    struct payment_event_info event; /* who and what, recorded with the write */
};

struct api_list_out {
    struct buf *b;
    size_t count;       /* rows appended */
    int64_t last_seq;   /* seq of the last row */
    uint32_t page_size; /* rows the page may hold */
};

/* api_list_row's stop when the page's buffer ran out of memory: positive, so
 * that it is never taken for one of the store's errors (all negative). */
#define API_LIST_STOP_NO_MEMORY 1

/* The fast path of a synchronous create, replace and patch
 * (api_writes_fast.c): 0 when the request was answered or submitted, 1 when
 * the general path must take it, nothing having been answered or written.
 * w is the write begun (its Idempotency-Key handled); mode is
 * PAYMENT_CHECK_REPLACE or PAYMENT_CHECK_PATCH. */
int api_create_fast(http_request *req, struct payment_api *api, struct api_write_op *w);
int api_update_fast(http_request *req, struct payment_api *api, struct api_write_op *w,
                    enum payment_check mode);

/* --- answers and errors (api_answer.c) ----------------------------------- */

/* Appends "links":{"self":...}} of payment id to b. */
void api_append_self_link(struct buf *b, const struct payment_api *api, const char *id);
/* The entity tag "\"N\"" of a version into out; returns its length. */
size_t api_etag_format(int64_t version, char out[32]);
/* The answer to a store error (current_version with ECONFLICT). */
void api_respond_store_error(http_request *req, int err, int64_t current_version);
/* A create's 5xx, naming its id id in Location and payment_id. */
void api_respond_create_failure(http_request *req, const struct payment_api *api, int status,
                                const char *code, const char *message, const char *id);
/* 500 internal_error. */
void api_respond_internal(http_request *req);
/* A write's error: the store's answer, a create's 5xx naming its id. */
void api_respond_write_error(http_request *req, struct api_write_op *w, int err,
                             int64_t current_version);
/* 400 validation_failed listing errors. */
void api_respond_invalid(http_request *req, json_t *errors);
/* 400 validation_failed with one problem. */
void api_respond_one_invalid(http_request *req, const char *field, const char *message);
/* 403 forbidden: the key may not act for the organisation. */
void api_respond_forbidden(http_request *req);
/* A stored outcome, marked as a replay. */
void api_respond_replay(http_request *req, struct payment_idem_found *f);

/* --- request pieces (api_request.c) -------------------------------------- */

/* v, or NULL when it is JSON null. */
json_t *api_non_null(json_t *v);
/* Whether a handler may wait on the network (the store; with broker_too,
 * the broker). */
int api_may_block(const struct payment_api *api, int broker_too);
/* 1 after handing the request to the blocking pool to run fn there. */
int api_offload(http_request *req, http_handler_fn fn, int blocks);
/* The caller's principal, or NULL when the server runs open. */
const struct auth_principal *api_principal(const http_request *req);
/* The organisation of a stored document into org: 0, or -1. */
int api_doc_org(const char *doc, size_t len, char org[UUID_STR_LEN + 1]);
/* The path's id, in lower case. */
void api_path_id(http_request *req, char id[UUID_STR_LEN + 1]);
/* The parsed and validated body, or NULL after answering 400. */
json_t *api_read_payment_body(http_request *req, struct payment_api *api,
                              enum payment_check mode);
/* data.type, or fallback. */
const char *api_type_or(json_t *data, const char *fallback);

/* --- a write in flight (api_write_op.c) ---------------------------------- */

/* A write op attached to req (freed with it), or NULL after answering 500. */
struct api_write_op *api_write_op_new(http_request *req, struct payment_api *api);
/* Lets go of the request's Idempotency-Key (http_request_on_answer). */
void api_write_op_release(void *p);
/* Prepares the answer to the write of w->row, already filled from w->text:
 * answers 500 and returns -1 on failure. */
int api_write_op_prepare_row(http_request *req, struct api_write_op *w, int status);
/* Serializes w->doc into w->row and prepares the answer: answers 500 and
 * returns -1 on failure. */
int api_write_op_prepare(http_request *req, struct api_write_op *w, int64_t created_ms,
                         int64_t modified_ms, int status);
/* Sends w to the store with the description of its event (w->changes must
 * be set for an update); the request is answered once the write is
 * durable. */
void api_write_op_submit(http_request *req, struct api_write_op *w, enum payment_store_op op,
                         int64_t expected_version);

/* --- Idempotency-Key (api_idem.c) ---------------------------------------- */

/* Handles a write's Idempotency-Key: 0 to go on (holding it), -1 answered. */
int api_idem_begin(http_request *req, struct api_write_op *w);

/* --- asynchronous writes (api_async.c) ----------------------------------- */

/* Whether this write goes through the broker. */
int api_async_wanted(http_request *req, const struct payment_api *api);
/* 1 after answering from the operation the request's key made, else 0. */
int api_async_replay(http_request *req, struct api_write_op *w);
/* The id of the payment a keyed asynchronous create without an id of its
 * own makes: derived from the caller and the key, so that every retry
 * names the payment the first attempt's operation creates (a 503 names it
 * too).  w->has_key must be set.  Returns 0, or -1 out of memory. */
int api_async_payment_id(const struct api_write_op *w, char out[UUID_STR_LEN + 1]);
/* Publishes the operation and answers 202, or 503 broker_unavailable. */
void api_async_submit(http_request *req, struct api_write_op *w, enum operation_kind kind,
                      const char *pid, const char *org, int64_t base_version, json_t *data);
/* GET /v1/operations/{id}. */
void api_operations_fetch(http_request *req, void *ctx);

/* --- read handlers (api_read.c) ------------------------------------------ */

/* GET /v1/payments/{id}. */
void api_payments_fetch(http_request *req, void *ctx);
/* GET /v1/payments. */
void api_payments_list(http_request *req, void *ctx);
/* Appends a listed row to the page (arg: struct api_list_out): 0, or
 * API_LIST_STOP_NO_MEMORY. */
int api_list_row(void *arg, const char *doc, size_t len, int64_t seq);
/* Lists the page q names, visible to p, into out: a store error, or
 * PAYMENT_STORE_EINTERNAL when the page's buffer ran out of memory. */
int api_list_fill(struct payment_api *api, struct payment_query *q,
                  const struct auth_principal *p, struct api_list_out *out, int *more);
/* Lists the page q names, narrowed (once, in q) to the organisations p may
 * see (NULL: all), calling each per row: the store's answer, or each's
 * first non-zero result. */
int api_list_each(struct payment_api *api, struct payment_query *q,
                  const struct auth_principal *p, payment_store_row_fn each, void *arg,
                  int *more);

/* --- the list as CSV (api_csv.c) ----------------------------------------- */

/* Whether the request's Accept prefers text/csv to JSON (JSON when tied,
 * absent, or neither is acceptable). */
int api_csv_wanted(const http_request *req);
/* Answers the list q filters (every page of it, p's organisations only) as
 * CSV, streamed; takes q (cleared). */
void api_payments_csv(http_request *req, struct payment_api *api, struct payment_query *q);

/* --- write handlers (api_writes.c) --------------------------------------- */

void api_payments_create(http_request *req, void *ctx);
void api_payments_replace(http_request *req, void *ctx);
void api_payments_patch(http_request *req, void *ctx);
void api_payments_delete(http_request *req, void *ctx);

/* --- history (api_history.c) --------------------------------------------- */

/* GET /v1/payments/{id}/history. */
void api_payments_history(http_request *req, void *ctx);
/* GET /v1/payments/{id}/history/{version}. */
void api_payments_history_version(http_request *req, void *ctx);

/* --- events feed (api_events.c) ------------------------------------------ */

/* GET /v1/events: the change feed, paged by position, with wait=N. */
void api_events_list(http_request *req, void *ctx);

#endif
