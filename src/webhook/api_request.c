/* api_request: the pieces of a webhook request: the blocking pool, the
 * caller, the path's id and endpoint (as the caller may see it), the body
 * and its data's members validated (each problem named by its field, as
 * the payments name theirs) and times.  Versions (data.version, If-Match,
 * ?version) are read by http/version.h, as the payments read them. */
#include "webhook/api_internal.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "payment/doc.h"
#include "payment/event.h"
#include "webhook/url.h"

int wh_offload(http_request *req, http_handler_fn fn)
{
    if (http_request_on_pool(req))
        return 0;
    http_request_run_blocking(req, fn);
    return 1;
}

const struct auth_principal *wh_principal(const http_request *req)
{
    return http_request_principal(req);
}

void wh_path_id(http_request *req, char id[UUID_STR_LEN + 1])
{
    const char *param = http_request_param(req);
    assert(param);
    int rc = uuid_canonical(param, strlen(param), id);
    assert(rc == 0); /* HTTP_ROUTE_UUID_PARAM: the server answered 400 otherwise */
    (void)rc;
}

json_t *wh_read_body(http_request *req)
{
    size_t len;
    const char *body = http_request_body(req, &len);
    char msg[256];
    json_t *root = payment_body_parse(body, len, msg, sizeof msg);
    if (!root) {
        http_respond_error(req, 400, "bad_request", msg, NULL);
        return NULL;
    }
    if (!json_is_object(json_object_get(root, "data"))) {
        json_decref(root);
        wh_respond_one_invalid(req, "data", "is required, and must be an object");
        return NULL;
    }
    return root;
}

/* ---- data's members ------------------------------------------------------ */

/* Appends {"field": field, "message": message} to errors: 0, or -1. */
static int problem(json_t *errors, const char *field, const char *message)
{
    return json_array_append_new(errors, json_pack("{s:s, s:s}", "field", field, "message",
                                                   message));
}

static int check_org(json_t *v, struct wh_fields *f, json_t *errors)
{
    const char *s = json_string_value(v);
    if (!s || uuid_canonical(s, json_string_length(v), f->organisation_id) != 0)
        return problem(errors, "data.organisation_id", "must be an organisation's UUID");
    f->given |= WH_F_ORG;
    return 0;
}

static int check_url(json_t *v, int allow_private, struct wh_fields *f, json_t *errors)
{
    const char *s = json_string_value(v);
    if (!s || strlen(s) != json_string_length(v))
        return problem(errors, "data.url", "must be a string: an http or https URL");
    char why[512];
    if (webhook_url_resolve(s, allow_private, why, sizeof why) != WEBHOOK_URL_OK)
        return problem(errors, "data.url", why);
    f->url = s;
    f->given |= WH_F_URL;
    return 0;
}

static int check_types(json_t *v, struct wh_fields *f, json_t *errors)
{
    if (!json_is_array(v) || json_array_size(v) == 0)
        return problem(errors, "data.event_types",
                       "must be a non-empty array of event types (payment.created, "
                       "payment.updated, payment.deleted), or [\"*\"] for all");
    size_t i, bad = 0;
    json_t *item;
    json_array_foreach(v, i, item) {
        const char *name = json_string_value(item);
        enum payment_event_type t;
        char field[48];
        const char *why = NULL;
        snprintf(field, sizeof field, "data.event_types[%zu]", i);
        if (name && strcmp(name, "*") == 0)
            why = json_array_size(v) == 1 ? NULL : "\"*\" (every type) must be the only item";
        else if (!name || payment_event_type_parse(name, strlen(name), &t) != 0)
            why = "is not an event type: payment.created, payment.updated or payment.deleted";
        if (why) {
            bad++;
            if (problem(errors, field, why) != 0)
                return -1;
        }
    }
    if (bad == 0) {
        f->event_types = v;
        f->given |= WH_F_TYPES;
    }
    return 0;
}

static int check_description(json_t *v, struct wh_fields *f, json_t *errors)
{
    char msg[64];
    if (!json_is_string(v) && !json_is_null(v))
        return problem(errors, "data.description", "must be a string");
    if (json_is_string(v) && json_string_length(v) > WEBHOOK_DESCRIPTION_MAX) {
        snprintf(msg, sizeof msg, "must be at most %d bytes long", WEBHOOK_DESCRIPTION_MAX);
        return problem(errors, "data.description", msg);
    }
    f->description = v;
    f->given |= WH_F_DESCRIPTION;
    return 0;
}

static int check_status(json_t *v, struct wh_fields *f, json_t *errors)
{
    const char *s = json_string_value(v);
    if (!s || (strcmp(s, "enabled") != 0 && strcmp(s, "disabled") != 0))
        return problem(errors, "data.status", "must be \"enabled\" or \"disabled\"");
    f->enabled = strcmp(s, "enabled") == 0;
    f->given |= WH_F_STATUS;
    return 0;
}

/* data.id (PATCH): when given, the path's id. */
static int check_id(json_t *v, const char *path_id, json_t *errors)
{
    const char *s = json_string_value(v);
    char canon[UUID_STR_LEN + 1];
    if (!s || uuid_canonical(s, json_string_length(v), canon) != 0 || strcmp(canon, path_id))
        return problem(errors, "data.id", "must equal the id in the path");
    return 0;
}

/* One member of data: 0, or -1 out of memory. */
static int check_member(const char *key, json_t *v, enum wh_mode mode, const char *path_id,
                        int allow_private, struct wh_fields *f, json_t *errors)
{
    char field[160];
    int patch = mode == WH_PATCH;
    if (strcmp(key, "type") == 0) {
        const char *s = json_string_value(v);
        return s && strcmp(s, "webhooks") == 0
                   ? 0
                   : problem(errors, "data.type", "must be \"webhooks\" when given");
    }
    if (patch && strcmp(key, "version") == 0)
        return json_is_null(v) || (json_is_integer(v) && json_integer_value(v) >= 0)
                   ? 0
                   : problem(errors, "data.version", "must be a non-negative integer");
    if (patch && strcmp(key, "id") == 0)
        return check_id(v, path_id, errors);
    if (patch && json_is_null(v) && strcmp(key, "description") != 0 &&
        (strcmp(key, "organisation_id") == 0 || strcmp(key, "url") == 0 ||
         strcmp(key, "event_types") == 0 || strcmp(key, "status") == 0)) {
        snprintf(field, sizeof field, "data.%s", key);
        return problem(errors, field, "cannot be removed");
    }
    if (strcmp(key, "organisation_id") == 0)
        return check_org(v, f, errors);
    if (strcmp(key, "url") == 0)
        return check_url(v, allow_private, f, errors);
    if (strcmp(key, "event_types") == 0)
        return check_types(v, f, errors);
    if (strcmp(key, "description") == 0)
        return check_description(v, f, errors);
    if (patch && strcmp(key, "status") == 0)
        return check_status(v, f, errors);
    snprintf(field, sizeof field, "data.%.100s", key);
    return problem(errors, field,
                   patch ? "is not a member a caller may change: url, event_types, description, "
                           "status (and version)"
                         : "is not a member of a new endpoint: organisation_id, url, "
                           "event_types, description");
}

int wh_fields_check(json_t *data, enum wh_mode mode, const char *path_id, int allow_private,
                    struct wh_fields *f, json_t *errors)
{
    assert(json_is_object(data) && errors);
    assert(mode == WH_CREATE || path_id);
    memset(f, 0, sizeof *f);
    const char *key;
    json_t *v;
    json_object_foreach(data, key, v) {
        if (check_member(key, v, mode, path_id, allow_private, f, errors) != 0)
            return -1;
    }
    if (mode == WH_CREATE) {
        static const struct {
            const char *name;
            const char *field;
        } required[] = {{"organisation_id", "data.organisation_id"},
                        {"url", "data.url"},
                        {"event_types", "data.event_types"}};
        for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
            if (!json_object_get(data, required[i].name) &&
                problem(errors, required[i].field, "is required") != 0)
                return -1;
    }
    return (int)json_array_size(errors);
}

/* ---- times --------------------------------------------------------------- */

/* The number written by the n digits at s (checked already). */
static int64_t number(const char *s, size_t n)
{
    int64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

int wh_parse_time(const char *s, int64_t *ms)
{
    size_t len = strlen(s);
    int y, m, d;
    if (!clock_is_datetime(s, len) || clock_parse_date(s, CLOCK_DATE_LEN, &y, &m, &d) != 0)
        return -1;
    int64_t hh = number(s + 11, 2), mm = number(s + 14, 2), ss = number(s + 17, 2);
    int64_t t = clock_date_to_ms(y, m, d) + ((hh * 60 + mm) * 60 + ss) * 1000;
    size_t i = 19;
    if (s[i] == '.') {
        int64_t frac = 0;
        size_t digits = 0;
        int finer = 0;
        for (i++; s[i] >= '0' && s[i] <= '9'; i++, digits++) {
            if (digits < 3)
                frac = frac * 10 + (s[i] - '0');
            else
                finer |= s[i] != '0';
        }
        for (; digits < 3; digits++)
            frac *= 10;
        t += frac + finer;
    }
    if (s[i] == '+' || s[i] == '-') {
        int64_t offset = (number(s + i + 1, 2) * 60 + number(s + i + 4, 2)) * 60000;
        t += s[i] == '+' ? -offset : offset;
    }
    *ms = t;
    return 0;
}

/* ---- the path's endpoint ------------------------------------------------- */

static int copy_endpoint(void *arg, const struct payment_webhook *w)
{
    struct wh_endpoint *e = arg;
    e->w = *w;
    buf_append(&e->doc, w->doc, w->doc_len);
    e->w.doc = NULL;
    return 0;
}

int wh_endpoint_load(http_request *req, struct webhook_api *api, const char *id,
                     struct wh_endpoint *e)
{
    memset(e, 0, sizeof *e);
    e->doc = (struct buf)BUF_INIT;
    int err = payment_store_webhook_get(api->store, id, copy_endpoint, e);
    if (err == PAYMENT_STORE_OK && (buf_failed(&e->doc) || !e->doc.data))
        err = PAYMENT_STORE_EINTERNAL;
    if (err == PAYMENT_STORE_OK && !auth_allows(wh_principal(req), e->w.organisation_id))
        err = PAYMENT_STORE_ENOTFOUND; /* existence does not leak across tenants */
    if (err != PAYMENT_STORE_OK) {
        wh_endpoint_free(e);
        wh_respond_store_error(req, err, -1);
        return -1;
    }
    e->w.doc = e->doc.data;
    e->w.doc_len = e->doc.len;
    return 0;
}

void wh_endpoint_free(struct wh_endpoint *e)
{
    buf_free(&e->doc);
    e->w.doc = NULL;
    e->w.doc_len = 0;
}
