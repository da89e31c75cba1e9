/* api_request: the pieces of a payment request: the path's id, the body parsed
 * and validated, the caller, and whether the handler must leave the event
 * loop (api_offload).  Versions (data.version, If-Match) are read by
 * http/version.h, as the webhook API reads them. */
#include "payment/api_internal.h"

#include <assert.h>
#include <string.h>

#include "payment/doc.h"

/* v, or NULL when it is JSON null: a null member means absent. */
json_t *api_non_null(json_t *v)
{
    return json_is_null(v) ? NULL : v;
}

/* Whether a handler may wait on the network: a store whose calls may
 * (MongoDB), or, with broker_too, a broker. */
int api_may_block(const struct payment_api *api, int broker_too)
{
    return payment_store_may_block(api->store) || (broker_too && api->queue);
}

/* Hands the request to the HTTP server's blocking pool to run fn there,
 * unless it does not block or runs there already.  Returns 1 when handed
 * over (the handler returns at once), 0 when the handler goes on here. */
int api_offload(http_request *req, http_handler_fn fn, int blocks)
{
    if (!blocks || http_request_on_pool(req))
        return 0;
    http_request_run_blocking(req, fn);
    return 1;
}

const struct auth_principal *api_principal(const http_request *req)
{
    return http_request_principal(req);
}

/* The organisation of a stored document, read from its text: documents
 * are written by payment_doc_new(), whose members before organisation_id
 * (type, id, version) cannot contain the key, so its first occurrence is
 * the envelope's.  Copies it into org; returns 0, or -1. */
int api_doc_org(const char *doc, size_t len, char org[UUID_STR_LEN + 1])
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
void api_path_id(http_request *req, char id[UUID_STR_LEN + 1])
{
    const char *param = http_request_param(req);
    assert(param);
    int rc = uuid_canonical(param, strlen(param), id);
    assert(rc == 0);
    (void)rc;
}

/* Parses the body and validates its data object for mode.  Returns the
 * root (new reference) or NULL after answering 400. */
json_t *api_read_payment_body(http_request *req, struct payment_api *api,
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
            api_respond_invalid(req, errors);
        json_decref(errors);
        json_decref(root);
        return NULL;
    }
    json_decref(errors);
    return root;
}

const char *api_type_or(json_t *data, const char *fallback)
{
    const char *t = payment_doc_string(data, "type");
    return t && *t ? t : fallback;
}
