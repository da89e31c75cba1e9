/* api_writes: the write handlers: create, replace, patch and delete, each in the
 * order that decides which error wins, then the store's compare-and-set
 * (or, asynchronously, the broker). */
#include "payment/api_internal.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "payment/changes.h"
#include "payment/doc.h"
#include "payment/revision.h"

/* The request's write in flight with its Idempotency-Key handled (held, or
 * the request answered from the key's record): the op, or NULL after
 * answering. */
static struct api_write_op *write_begin(http_request *req, struct payment_api *api)
{
    struct api_write_op *w = api_write_op_new(req, api);
    return w && api_idem_begin(req, w) == 0 ? w : NULL;
}

void api_payments_create(http_request *req, void *ctx)
{
    struct payment_api *api = ctx;
    if (api_offload(req, api_payments_create, api_may_block(api, 0) || api_async_wanted(req, api)))
        return;
    struct api_write_op *w = write_begin(req, api);
    if (!w || (!api_async_wanted(req, api) && api_create_fast(req, api, w) == 0))
        return;
    json_t *root = api_read_payment_body(req, api, PAYMENT_CHECK_CREATE);
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
    if (!auth_allows(api_principal(req), org)) {
        json_decref(root);
        api_respond_forbidden(req);
        return;
    }
    int async = api_async_wanted(req, api);
    if (given) {
        int id_rc = uuid_canonical(given, strlen(given), w->id);
        assert(id_rc == 0);
        (void)id_rc;
    } else if (async && w->has_key) {
        if (api_async_payment_id(w, w->id) != 0) {
            json_decref(root);
            api_respond_internal(req); /* nothing was written */
            return;
        }
    } else if (uuid_v7_generate(now, &u) == 0) {
        uuid_format(&u, w->id);
    } else {
        json_decref(root);
        api_respond_internal(req); /* no random source: nothing was written */
        return;
    }
    w->creates = 1; /* from here on a 5xx names w->id */
    if (async) {
        if (json_object_set_new(data, "id", json_string(w->id)) != 0)
            api_respond_write_error(req, w, PAYMENT_STORE_EINTERNAL, -1);
        else
            api_async_submit(req, w, OPERATION_CREATE, w->id, org, -1, data);
        json_decref(root);
        return;
    }
    char created_on[CLOCK_TIMESTAMP_LEN + 1];
    clock_format_ms(now, created_on);
    w->doc = payment_doc_new(api_type_or(data, "payments"), w->id, 0, org, created_on, now,
                             json_object_get(data, "attributes"),
                             api_non_null(json_object_get(data, "relationships")));
    json_decref(root);
    if (api_write_op_prepare(req, w, now, now, 201) != 0)
        return;
    api_write_op_submit(req, w, PAYMENT_OP_CREATE, -1);
}

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
        api_respond_store_error(req, err, -1);
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
        api_respond_one_invalid(req, "data.id", "must equal the id in the path");
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
    if (!auth_allows(api_principal(req), canon)) {
        api_respond_forbidden(req);
        return -1;
    }
    return 0;
}

/* The next version of cur the request makes (revision.h), into *next.
 * Returns 0, or -1 after answering 400 (a different organisation_id, an
 * invalid result) or 500. */
static int next_version(http_request *req, struct payment_api *api, json_t *data,
                        enum payment_check mode, const struct current *cur, int64_t now,
                        json_t **next)
{
    json_t *errors = NULL;
    struct revision_input in = {
        .current = cur->doc,
        .created_ms = cur->created_ms,
        .base_version = cur->version,
        .data = data,
        .mode = mode == PAYMENT_CHECK_PATCH ? REVISION_PATCH : REVISION_REPLACE,
        .organisation_id = NULL, /* the body's, checked against the caller's rights */
        .validator = api->validator,
        .attributes_valid = 1, /* api_read_payment_body validated a replace's */
        .now_ms = now,
    };
    int rc = revision_next(&in, next, &errors);
    if (rc == REVISION_EINVALID)
        api_respond_invalid(req, errors);
    else if (rc != REVISION_OK)
        api_respond_internal(req);
    json_decref(errors);
    return rc == REVISION_OK ? 0 : -1;
}

/* Submits the compare-and-set write of next, the version after cur's
 * (w takes the reference), with the paths it changes for its event. */
static void submit_update(http_request *req, struct api_write_op *w, const char *id,
                          const struct current *cur, json_t *next, int64_t now)
{
    snprintf(w->id, sizeof w->id, "%s", id);
    w->doc = next;
    if (api_write_op_prepare(req, w, cur->created_ms, now, 200) != 0)
        return;
    w->changes = payment_changes_between(cur->doc, next);
    if (!w->changes) {
        api_respond_write_error(req, w, PAYMENT_STORE_EINTERNAL, -1);
        return;
    }
    api_write_op_submit(req, w, PAYMENT_OP_UPDATE, cur->version);
}

/* PUT and PATCH, in the order that decides which error wins: the body and
 * its validation; the stored payment is then read so that a different
 * organisation_id, or (PATCH) an invalid merge result, is a validation
 * error too (revision_next: the worker's definition of the next version);
 * then a missing version (428), existence (404) and the version (409);
 * then the compare-and-set write, which alone decides a race. */
static void payments_update(http_request *req, struct payment_api *api, enum payment_check mode)
{
    char id[UUID_STR_LEN + 1];
    int64_t expected;
    struct current cur = {0};
    json_t *next = NULL;
    int64_t now = clock_now_ms();
    struct api_write_op *w = write_begin(req, api);
    if (!w || (!api_async_wanted(req, api) && api_update_fast(req, api, w, mode) == 0))
        return;
    json_t *root = api_read_payment_body(req, api, mode);
    if (!root)
        return;
    json_t *data = json_object_get(root, "data");
    enum operation_kind kind = mode == PAYMENT_CHECK_PATCH ? OPERATION_PATCH : OPERATION_REPLACE;
    api_path_id(req, id);
    if (check_id(req, data, id) != 0 || check_body_org(req, data) != 0)
        goto out;
    int missing = read_current(req, api, id, &cur);
    if (missing < 0)
        goto out;
    if (!missing && !auth_allows(api_principal(req),
                                 payment_doc_string(cur.doc, "organisation_id") ?: "")) {
        /* Another organisation's payment is answered as an unknown id. */
        json_decref(cur.doc);
        cur = (struct current){0};
        missing = 1;
    }
    if (!missing && next_version(req, api, data, mode, &cur, now, &next) != 0)
        goto out;
    if (http_client_version(req, data, 1, &expected) != 0)
        goto out;
    if (missing) {
        /* Asynchronously, a payment not stored yet (its create may still
         * be queued before this write) is the worker's to find, when the
         * body names the organisation that routes the operation. */
        const char *body_org = payment_doc_string(data, "organisation_id");
        char org[UUID_STR_LEN + 1];
        if (api_async_wanted(req, api) && body_org &&
            uuid_canonical(body_org, strlen(body_org), org) == 0) {
            api_async_submit(req, w, kind, id, org, expected, data);
            goto out;
        }
        api_respond_store_error(req, PAYMENT_STORE_ENOTFOUND, -1);
        goto out;
    }
    if (api_async_wanted(req, api)) {
        /* Checked here against the payment as it is now; the worker checks
         * again, and decides the version, when it applies the operation. */
        api_async_submit(req, w, kind, id, payment_doc_string(cur.doc, "organisation_id") ?: "",
                         expected, data);
        goto out;
    }
    if (cur.version != expected) {
        api_respond_store_error(req, PAYMENT_STORE_ECONFLICT, cur.version);
        goto out;
    }
    submit_update(req, w, id, &cur, next, now);
    next = NULL;
out:
    json_decref(next);
    json_decref(cur.doc);
    json_decref(root);
}

void api_payments_replace(http_request *req, void *ctx)
{
    if (api_offload(req, api_payments_replace, api_may_block(ctx, 0) || api_async_wanted(req, ctx)))
        return;
    payments_update(req, ctx, PAYMENT_CHECK_REPLACE);
}

void api_payments_patch(http_request *req, void *ctx)
{
    if (api_offload(req, api_payments_patch, api_may_block(ctx, 0) || api_async_wanted(req, ctx)))
        return;
    payments_update(req, ctx, PAYMENT_CHECK_PATCH);
}

/* With a key limited to some organisations, the payment is read first:
 * another organisation's payment is answered 404, as an unknown id is (its
 * organisation never changes, so the read cannot go stale).  Returns 0, or
 * -1 after answering. */
static int delete_allowed(http_request *req, struct payment_api *api, const char *id)
{
    const struct auth_principal *p = api_principal(req);
    if (!p || p->all_orgs)
        return 0;
    struct buf b = BUF_INIT;
    int64_t version;
    char org[UUID_STR_LEN + 1];
    int err = payment_store_get(api->store, id, &b, &version);
    if (err == PAYMENT_STORE_OK && api_doc_org(b.data, b.len, org) != 0)
        err = PAYMENT_STORE_EINTERNAL;
    buf_free(&b);
    if (err != PAYMENT_STORE_OK) {
        api_respond_store_error(req, err, -1);
        return -1;
    }
    if (!auth_allows(p, org)) {
        api_respond_store_error(req, PAYMENT_STORE_ENOTFOUND, -1);
        return -1;
    }
    return 0;
}

void api_payments_delete(http_request *req, void *ctx)
{
    struct payment_api *api = ctx;
    if (api_offload(req, api_payments_delete, api_may_block(api, 0) || api_async_wanted(req, api)))
        return;
    char id[UUID_STR_LEN + 1];
    api_path_id(req, id);
    struct api_write_op *w = write_begin(req, api);
    if (!w)
        return;
    int64_t expected;
    if (http_delete_version(req, &expected) != 0)
        return;
    if (delete_allowed(req, api, id) != 0)
        return;
    if (api_async_wanted(req, api)) {
        struct buf b = BUF_INIT;
        int64_t version;
        char org[UUID_STR_LEN + 1];
        int err = payment_store_get(api->store, id, &b, &version);
        if (err == PAYMENT_STORE_OK && api_doc_org(b.data, b.len, org) != 0)
            err = PAYMENT_STORE_EINTERNAL;
        buf_free(&b);
        if (err != PAYMENT_STORE_OK)
            api_respond_store_error(req, err, -1);
        else
            api_async_submit(req, w, OPERATION_DELETE, id, org, expected, NULL);
        return;
    }
    snprintf(w->id, sizeof w->id, "%s", id);
    w->status = 204;
    api_write_op_submit(req, w, PAYMENT_OP_DELETE, expected);
}
