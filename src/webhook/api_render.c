/* api_render: the answers of the webhook API: errors in the payments' shape
 * ({"error_code", "error_message"}, validation problems as "errors":
 * [{"field", "message"}], answered by http/problems.h), an endpoint (its document's public members, never
 * its secrets but the one answer that made a secret) and a delivery (its
 * attempts as the sender recorded them). */
#include "webhook/api_internal.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"

void wh_respond_internal(http_request *req)
{
    http_respond_error(req, 500, "internal_error", "internal error", NULL);
}

void wh_respond_invalid(http_request *req, json_t *errors)
{
    http_respond_invalid(req, "request", errors);
}

void wh_respond_one_invalid(http_request *req, const char *field, const char *message)
{
    http_respond_one_invalid(req, "request", field, message);
}

void wh_respond_forbidden(http_request *req)
{
    http_respond_error(req, 403, "forbidden",
                       "this API key may not act for the endpoint's organisation", NULL);
}

void wh_respond_store_error(http_request *req, int err, int64_t current_version)
{
    char extra[64];
    switch (err) {
    case PAYMENT_STORE_ENOTFOUND:
        http_respond_error(req, 404, "not_found", "no webhook endpoint with this id", NULL);
        break;
    case PAYMENT_STORE_ECONFLICT:
        snprintf(extra, sizeof extra, "\"current_version\":%" PRId64, current_version);
        http_respond_error(req, 409, "version_conflict",
                           "the endpoint has changed since that version; fetch it and retry",
                           current_version >= 0 ? extra : NULL);
        break;
    case PAYMENT_STORE_ELIMIT:
        wh_respond_one_invalid(req, "data.organisation_id",
                               "the organisation has the most webhook endpoints allowed: at "
                               "most 20; delete one first");
        break;
    case PAYMENT_STORE_EUNAVAILABLE:
        http_respond_error(req, 503, "store_unavailable",
                           "the store cannot take requests now; retry later", NULL);
        break;
    default:
        wh_respond_internal(req);
        break;
    }
}

_Static_assert(PAYMENT_WEBHOOKS_PER_ORG_MAX == 20, "the ELIMIT message says 20");

void wh_append_url(struct buf *b, const struct webhook_api *api, const char *id,
                   const char *suffix)
{
    buf_json_escape(b, api->public_url, strlen(api->public_url));
    buf_puts(b, "/v1/webhooks");
    if (id) {
        buf_puts(b, "/");
        buf_puts(b, id);
    }
    buf_puts(b, suffix);
}

/* Sets key to a timestamp's text: 0, or -1. */
static int set_time(json_t *o, const char *key, int64_t ms)
{
    char at[CLOCK_TIMESTAMP_LEN + 1];
    clock_format_ms(ms, at);
    return json_object_set_new(o, key, json_string(at));
}

/* Copies doc's member key into o (null when absent or not of the kind the
 * document holds there). */
static int copy_member(json_t *o, json_t *doc, const char *key)
{
    json_t *v = json_object_get(doc, key);
    return json_object_set(o, key, v ? v : json_null());
}

json_t *wh_endpoint_json(const struct payment_webhook *w, const char *secret)
{
    json_t *doc = json_loadb(w->doc, w->doc_len, 0, NULL);
    json_t *o = json_object();
    int rc = !json_is_object(doc) || !o;
    rc = rc || json_object_set_new(o, "type", json_string("webhooks")) != 0;
    rc = rc || json_object_set_new(o, "id", json_string(w->id)) != 0;
    rc = rc || json_object_set_new(o, "version", json_integer(w->version)) != 0;
    rc = rc || json_object_set_new(o, "organisation_id", json_string(w->organisation_id)) != 0;
    rc = rc || copy_member(o, doc, "url") != 0;
    rc = rc || copy_member(o, doc, "event_types") != 0;
    rc = rc || copy_member(o, doc, "description") != 0;
    rc = rc || copy_member(o, doc, "status") != 0;
    rc = rc || copy_member(o, doc, "disabled_reason") != 0;
    rc = rc || set_time(o, "created_on", w->created_ms) != 0;
    rc = rc || set_time(o, "modified_on", w->modified_ms) != 0;
    if (secret)
        rc = rc || json_object_set_new(o, "secret", json_string(secret)) != 0;
    json_decref(doc); /* its secrets go with it */
    if (rc) {
        json_decref(o);
        return NULL;
    }
    return o;
}

void wh_respond_endpoint(http_request *req, const struct webhook_api *api,
                         const struct payment_webhook *w, const char *secret, int status,
                         int location)
{
    json_t *data = wh_endpoint_json(w, secret);
    char *text = data ? json_dumps(data, JSON_COMPACT) : NULL;
    json_decref(data);
    if (!text) {
        wh_respond_internal(req);
        return;
    }
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"data\":");
    buf_puts(&b, text);
    free(text);
    buf_puts(&b, ",\"links\":{\"self\":\"");
    wh_append_url(&b, api, w->id, "");
    buf_puts(&b, "\",\"deliveries\":\"");
    wh_append_url(&b, api, w->id, "/deliveries");
    buf_puts(&b, "\"}}");
    char etag[32];
    snprintf(etag, sizeof etag, "\"%" PRId64 "\"", w->version);
    http_request_add_header(req, "ETag", etag);
    if (location) {
        struct buf loc = BUF_INIT;
        buf_printf(&loc, "%s/v1/webhooks/%s", api->public_url, w->id);
        if (!buf_failed(&loc))
            http_request_add_header(req, "Location", loc.data);
        buf_free(&loc);
    }
    http_respond_buf(req, status, &b);
}

static const char *delivery_status_name(enum payment_delivery_status s)
{
    switch (s) {
    case PAYMENT_DELIVERY_PENDING:
        return "pending";
    case PAYMENT_DELIVERY_SUCCEEDED:
        return "succeeded";
    case PAYMENT_DELIVERY_FAILED:
        return "failed";
    }
    return "unknown";
}

void wh_render_delivery(struct buf *b, const struct payment_delivery *d)
{
    char at[CLOCK_TIMESTAMP_LEN + 1];
    clock_format_ms(d->created_ms, at);
    buf_printf(b,
               "{\"type\":\"webhook_deliveries\",\"id\":\"%s\",\"event_id\":\"%s\","
               "\"status\":\"%s\",\"created_on\":\"%s\",\"next_attempt_at\":",
               d->id, d->event_id, delivery_status_name(d->status), at);
    if (d->status == PAYMENT_DELIVERY_PENDING) {
        clock_format_ms(d->next_ms, at);
        buf_printf(b, "\"%s\"", at);
    } else {
        buf_puts(b, "null");
    }
    buf_puts(b, ",\"attempts\":");
    /* The sender's own JSON array, as it recorded it. */
    buf_puts(b, d->attempts_json && d->attempts_json[0] ? d->attempts_json : "[]");
    buf_puts(b, "}");
}
