/* api_idem: the Idempotency-Key of a write: its syntax, the request's
 * fingerprint, the stored outcome replayed (or 422), the key held while
 * the request is in flight. */
#include "payment/api_internal.h"

#include <stdio.h>
#include <string.h>

/* Appends one decoded query parameter to b, each part length-prefixed so
 * that no two different queries give the same bytes. */
static int idem_query_param(void *arg, const char *key, const char *value)
{
    struct buf *b = arg;
    buf_printf(b, "\n%zu:%s%zu:%s", strlen(key), key, strlen(value), value);
    return 0;
}

/* Looks the request's stored outcome up: its idempotency record, or, with
 * operations set and an asynchronous request, the operation the key
 * became.  Returns 1 after answering (a replay, 422, or an error), 0 when
 * there is none. */
static int idem_lookup(http_request *req, struct api_write_op *w, int operations)
{
    struct payment_idem_found f = {.location = BUF_INIT, .body = BUF_INIT};
    int err = payment_store_idem_get(w->api->store, w->scope, w->key, &f);
    if (err == PAYMENT_STORE_OK) {
        if (strcmp(f.fingerprint, w->fingerprint) == 0)
            api_respond_replay(req, &f);
        else
            http_respond_error(req, 422, "idempotency_key_reused",
                               "this Idempotency-Key was used with another request", NULL);
    } else if (err != PAYMENT_STORE_ENOTFOUND) {
        api_respond_store_error(req, err, -1);
    }
    buf_free(&f.location);
    buf_free(&f.body);
    /* Only an asynchronous request looks for the operation its key made:
     * a synchronous one leaves the broker alone, the store's record of the
     * key deciding once between the two. */
    if (err == PAYMENT_STORE_ENOTFOUND && operations && api_async_wanted(req, w->api))
        return api_async_replay(req, w);
    return err != PAYMENT_STORE_ENOTFOUND;
}

/* Handles the Idempotency-Key of a write: 400 for a malformed key, the
 * stored answer (or 422) when the key was used, 409 while another request
 * holds it.  Returns 0 when the request goes on (holding the key), or -1
 * after answering. */
int api_idem_begin(http_request *req, struct api_write_op *w)
{
    const char *key = http_request_header(req, "Idempotency-Key");
    if (!key)
        return 0;
    if (!idem_key_valid(key)) {
        http_respond_error(req, 400, "bad_request",
                           "Idempotency-Key must be 1 to 255 visible ASCII characters", NULL);
        return -1;
    }
    const struct auth_principal *p = api_principal(req);
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
    http_request_on_answer(req, api_write_op_release);
    /* The request that held the key may have finished between the lookup
     * and the claim: look again, now that no other can.  The store only: an
     * operation the key made meanwhile is found by the publish, which the
     * stream deduplicates, at no second wait on the broker. */
    return idem_lookup(req, w, 0) ? -1 : 0;
}
