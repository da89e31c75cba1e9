/* api_crud: the endpoint handlers: register, fetch, patch, delete and
 * rotate the secret, each in the order that decides which error a caller
 * sees, as the payments' (validation 400, 403, a missing version 428, 404,
 * 409), then the store's compare-and-set, which alone decides a race.
 *
 * A secret is in memory only while its request is answered: the document's
 * text is wiped before it is freed (OPENSSL_cleanse), and no line is logged
 * here. */
#include "webhook/api_internal.h"

#include <assert.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"

#define ROTATE_TRIES 3 /* rotations raced by another write, tried again */

/* The document's text for the store, or NULL. */
static char *doc_text(json_t *doc, size_t *len)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    if (text)
        *len = strlen(text);
    return text;
}

/* Wipes and frees a document's text: it holds secrets. */
static void doc_text_free(char *text)
{
    if (text)
        OPENSSL_cleanse(text, strlen(text));
    free(text);
}

/* Answers 409 with the endpoint's current version (read again: the write
 * that lost a race does not learn it), or the store's error reading it. */
static void respond_conflict(http_request *req, struct webhook_api *api, const char *id)
{
    struct wh_endpoint e;
    if (wh_endpoint_load(req, api, id, &e) != 0)
        return;
    wh_respond_store_error(req, PAYMENT_STORE_ECONFLICT, e.w.version);
    wh_endpoint_free(&e);
}

/* Checks a body's data for mode: 0 with f filled, or -1 after answering. */
static int check_body(http_request *req, struct webhook_api *api, json_t *data,
                      enum wh_mode mode, const char *path_id, struct wh_fields *f)
{
    json_t *errors = json_array();
    int n = errors ? wh_fields_check(data, mode, path_id, api->allow_private, f, errors) : -1;
    if (n < 0)
        wh_respond_internal(req);
    else if (n > 0)
        wh_respond_invalid(req, errors);
    json_decref(errors);
    return n == 0 ? 0 : -1;
}

void wh_create(http_request *req, void *ctx)
{
    struct webhook_api *api = ctx;
    if (wh_offload(req, wh_create))
        return;
    json_t *root = wh_read_body(req);
    if (!root)
        return;
    struct wh_fields f;
    char secret[WEBHOOK_SECRET_MAX + 1] = "";
    json_t *doc = NULL;
    char *text = NULL;
    if (check_body(req, api, json_object_get(root, "data"), WH_CREATE, NULL, &f) != 0)
        goto out;
    if (!auth_allows(wh_principal(req), f.organisation_id)) {
        wh_respond_forbidden(req);
        goto out;
    }
    int64_t now = clock_now_ms();
    struct payment_webhook w = {.version = 0, .created_ms = now, .modified_ms = now,
                                .enabled = 1, .types = wh_types_mask(f.event_types)};
    struct uuid u;
    memcpy(w.organisation_id, f.organisation_id, sizeof w.organisation_id);
    if (uuid_v7_generate(now, &u) != 0 || wh_secret_new(secret) != 0 ||
        !(text = doc_text(doc = wh_doc_new(&f, secret, now), &w.doc_len))) {
        wh_respond_internal(req); /* nothing was written */
        goto out;
    }
    uuid_format(&u, w.id);
    w.doc = text;
    int err = payment_store_webhook_create(api->store, &w);
    if (err != PAYMENT_STORE_OK)
        wh_respond_store_error(req, err, -1);
    else
        wh_respond_endpoint(req, api, &w, secret, 201, 1);
out:
    OPENSSL_cleanse(secret, sizeof secret);
    doc_text_free(text);
    json_decref(doc);
    json_decref(root);
}

void wh_fetch(http_request *req, void *ctx)
{
    struct webhook_api *api = ctx;
    if (wh_offload(req, wh_fetch))
        return;
    char id[UUID_STR_LEN + 1];
    struct wh_endpoint e;
    wh_path_id(req, id);
    if (wh_endpoint_load(req, api, id, &e) != 0)
        return;
    wh_respond_endpoint(req, api, &e.w, NULL, 200, 0);
    wh_endpoint_free(&e);
}

/* Writes doc as endpoint e's next version: 0 with *next filled (its doc
 * pointing at the text the caller frees with doc_text_free), or the
 * store's error. */
static int write_next(struct webhook_api *api, const struct wh_endpoint *e, json_t *doc,
                      struct payment_webhook *next, char **text)
{
    *next = e->w;
    next->version = e->w.version + 1;
    next->modified_ms = clock_now_ms();
    next->enabled = wh_doc_enabled(doc);
    next->types = wh_types_mask(json_object_get(doc, "event_types"));
    if (!(*text = doc_text(doc, &next->doc_len)))
        return PAYMENT_STORE_EINTERNAL;
    next->doc = *text;
    return payment_store_webhook_update(api->store, next, e->w.version);
}

void wh_patch(http_request *req, void *ctx)
{
    struct webhook_api *api = ctx;
    if (wh_offload(req, wh_patch))
        return;
    char id[UUID_STR_LEN + 1];
    struct wh_fields f;
    struct wh_endpoint e = {.doc = BUF_INIT};
    int64_t expected;
    json_t *doc = NULL;
    char *text = NULL;
    wh_path_id(req, id);
    json_t *root = wh_read_body(req);
    if (!root)
        return;
    json_t *data = json_object_get(root, "data");
    if (check_body(req, api, data, WH_PATCH, id, &f) != 0 ||
        http_client_version(req, data, 1, &expected) != 0 ||
        wh_endpoint_load(req, api, id, &e) != 0)
        goto out;
    if ((f.given & WH_F_ORG) && strcmp(f.organisation_id, e.w.organisation_id) != 0) {
        wh_respond_one_invalid(req, "data.organisation_id",
                               "cannot change: an endpoint belongs to the organisation it was "
                               "registered for");
        goto out;
    }
    if (e.w.version != expected) {
        wh_respond_store_error(req, PAYMENT_STORE_ECONFLICT, e.w.version);
        goto out;
    }
    struct payment_webhook next;
    doc = json_loadb(e.w.doc, e.w.doc_len, 0, NULL);
    int err = !json_is_object(doc) || wh_doc_patch(doc, &f) != 0
                  ? PAYMENT_STORE_EINTERNAL
                  : write_next(api, &e, doc, &next, &text);
    if (err == PAYMENT_STORE_ECONFLICT)
        respond_conflict(req, api, id);
    else if (err != PAYMENT_STORE_OK)
        wh_respond_store_error(req, err, -1);
    else
        wh_respond_endpoint(req, api, &next, NULL, 200, 0);
out:
    doc_text_free(text);
    json_decref(doc);
    wh_endpoint_free(&e);
    json_decref(root);
}

void wh_delete(http_request *req, void *ctx)
{
    struct webhook_api *api = ctx;
    if (wh_offload(req, wh_delete))
        return;
    char id[UUID_STR_LEN + 1];
    wh_path_id(req, id);
    int64_t expected;
    if (http_delete_version(req, &expected) != 0)
        return;
    struct wh_endpoint e;
    if (wh_endpoint_load(req, api, id, &e) != 0)
        return; /* unknown, or another organisation's: 404 */
    wh_endpoint_free(&e);
    int64_t current = -1;
    int err = payment_store_webhook_delete(api->store, id, expected, &current);
    if (err != PAYMENT_STORE_OK)
        wh_respond_store_error(req, err, current);
    else
        http_respond(req, 204, NULL);
}

/* One rotation of endpoint e: the store's answer, with *next and *text
 * (doc_text_free) filled on success. */
static int rotate_once(struct webhook_api *api, const struct wh_endpoint *e, const char *secret,
                       struct payment_webhook *next, char **text)
{
    json_t *doc = json_loadb(e->w.doc, e->w.doc_len, 0, NULL);
    int err = !json_is_object(doc) || wh_doc_rotate(doc, secret, clock_now_ms()) != 0
                  ? PAYMENT_STORE_EINTERNAL
                  : write_next(api, e, doc, next, text);
    json_decref(doc);
    return err;
}

void wh_rotate(http_request *req, void *ctx)
{
    struct webhook_api *api = ctx;
    if (wh_offload(req, wh_rotate))
        return;
    char id[UUID_STR_LEN + 1];
    char secret[WEBHOOK_SECRET_MAX + 1];
    wh_path_id(req, id);
    int64_t expected;
    int h = http_if_match_version(req, &expected);
    if (h < 0)
        return;
    if (wh_secret_new(secret) != 0) {
        wh_respond_internal(req);
        return;
    }
    struct payment_webhook next;
    char *text = NULL;
    int err = PAYMENT_STORE_ECONFLICT;
    /* Without If-Match the caller asked for a rotation whatever else
     * changed: a write that raced it is read again and rotated anew. */
    for (int tries = 0; err == PAYMENT_STORE_ECONFLICT && tries < ROTATE_TRIES; tries++) {
        struct wh_endpoint e;
        if (wh_endpoint_load(req, api, id, &e) != 0)
            goto out;
        if (h && e.w.version != expected) {
            wh_respond_store_error(req, PAYMENT_STORE_ECONFLICT, e.w.version);
            wh_endpoint_free(&e);
            goto out;
        }
        doc_text_free(text);
        text = NULL;
        err = rotate_once(api, &e, secret, &next, &text);
        wh_endpoint_free(&e);
        if (h && err == PAYMENT_STORE_ECONFLICT)
            break;
    }
    if (err == PAYMENT_STORE_ECONFLICT)
        respond_conflict(req, api, id);
    else if (err != PAYMENT_STORE_OK)
        wh_respond_store_error(req, err, -1);
    else
        wh_respond_endpoint(req, api, &next, secret, 200, 0);
out:
    OPENSSL_cleanse(secret, sizeof secret);
    doc_text_free(text);
}
