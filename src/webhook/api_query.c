/* api_query: the query of a webhook list (endpoints, or one endpoint's
 * deliveries): its filter, page[size] and page[after], a cursor that is
 * the last listed id (ids are UUIDv7s: listing in id order is listing in
 * creation order), and the links that carry them on, ending a page's
 * answer for both lists (wh_respond_page).  Problems are named
 * by parameter, as GET /v1/events names them. */
#include "webhook/api_internal.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* The parameters, in the order links give them. */
enum wh_param { P_ORG, P_STATUS, P_SIZE, P_AFTER, P_COUNT };

static const char *const param_names[P_COUNT] = {
    [P_ORG] = "filter[organisation_id]",
    [P_STATUS] = "filter[status]",
    [P_SIZE] = "page[size]",
    [P_AFTER] = "page[after]",
};

static const struct {
    const char *name;
    enum payment_delivery_status status;
} statuses[] = {
    {"pending", PAYMENT_DELIVERY_PENDING},
    {"succeeded", PAYMENT_DELIVERY_SUCCEEDED},
    {"failed", PAYMENT_DELIVERY_FAILED},
};

/* What the parse keeps between parameters. */
struct parse {
    struct wh_query *q;
    unsigned seen;      /* bit per wh_param given */
    json_t *errors;     /* {"field", "message"} items */
    int oom;            /* errors ran out of memory */
    char unknown[128];  /* the first unknown parameter, "" if none */
};

static void refuse(struct parse *p, enum wh_param k, const char *message)
{
    if (json_array_append_new(p->errors, json_pack("{s:s, s:s}", "field", param_names[k],
                                                   "message", message)) != 0)
        p->oom = 1;
}

/* Each comma-separated item of v into add: 0, or -1 (an empty or bad item,
 * or more than max). */
static int each_item(const char *v, size_t max, int (*add)(struct wh_query *, const char *, size_t),
                     struct wh_query *q)
{
    size_t n = 0;
    for (const char *s = v;;) {
        size_t len = strcspn(s, ",");
        if (len == 0 || ++n > max || add(q, s, len) != 0)
            return -1;
        if (s[len] == '\0')
            return 0;
        s += len + 1;
    }
}

static int add_org(struct wh_query *q, const char *s, size_t len)
{
    if (uuid_canonical(s, len, q->orgs[q->n_orgs]) != 0)
        return -1;
    q->n_orgs++;
    return 0;
}

static int add_status(struct wh_query *q, const char *s, size_t len)
{
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        if (strlen(statuses[i].name) == len && memcmp(statuses[i].name, s, len) == 0) {
            q->statuses |= (unsigned)statuses[i].status;
            return 0;
        }
    }
    return -1;
}

static void param_value(struct parse *p, enum wh_param k, const char *v)
{
    struct wh_query *q = p->q;
    int64_t n = 0;
    switch (k) {
    case P_ORG:
        if (each_item(v, AUTH_MAX_ORGS, add_org, q) != 0)
            refuse(p, k, "must be a comma-separated list of at most " AUTH_MAX_ORGS_TEXT
                         " organisation UUIDs");
        break;
    case P_STATUS:
        if (each_item(v, 3, add_status, q) != 0)
            refuse(p, k, "must be a comma-separated list of pending, succeeded, failed");
        break;
    case P_SIZE:
        if (http_parse_version(v, strlen(v), &n) != 0 || n < 1 || n > PAYMENT_WEBHOOKS_PAGE_MAX)
            refuse(p, k, "must be an integer from 1 to 1000");
        else
            q->size = (uint32_t)n;
        break;
    case P_AFTER:
        if (uuid_canonical(v, strlen(v), q->after) != 0) {
            q->after[0] = '\0';
            refuse(p, k, "must be a cursor: the id of the last item of the previous page");
        }
        break;
    case P_COUNT:
        assert(!"no such parameter");
        break;
    }
}

static int param(void *arg, const char *key, const char *value)
{
    struct parse *p = arg;
    enum wh_param k = 0;
    while (k < P_COUNT && strcmp(param_names[k], key) != 0)
        k++;
    int mine = k != P_COUNT && (k != P_ORG || p->q->list == WH_LIST_ENDPOINTS) &&
               (k != P_STATUS || p->q->list == WH_LIST_DELIVERIES);
    if (!mine) {
        if (!p->unknown[0])
            snprintf(p->unknown, sizeof p->unknown, "%s", key);
        return 0;
    }
    if (p->seen & (1u << k))
        refuse(p, k, "is given more than once");
    else if (!value || !*value)
        refuse(p, k, "is empty");
    else
        param_value(p, k, value);
    p->seen |= 1u << k;
    return 0;
}

int wh_query_parse(http_request *req, enum wh_list list, struct wh_query *q)
{
    memset(q, 0, sizeof *q);
    q->list = list;
    q->size = WH_PAGE_SIZE_DEFAULT;
    struct parse p = {.q = q, .errors = json_array()};
    if (!p.errors) {
        wh_respond_internal(req);
        return -1;
    }
    int rc = http_request_query_each(req, param, &p);
    assert(rc == 0);
    (void)rc;
    if (p.unknown[0]) {
        char msg[192];
        snprintf(msg, sizeof msg, "unknown query parameter '%s'", p.unknown);
        http_respond_error(req, 400, "bad_request", msg, NULL);
    } else if (p.oom) {
        wh_respond_internal(req);
    } else if (json_array_size(p.errors) > 0) {
        wh_respond_invalid(req, p.errors);
    }
    int ok = !p.unknown[0] && !p.oom && json_array_size(p.errors) == 0;
    json_decref(p.errors);
    return ok ? 0 : -1;
}

void wh_respond_page(http_request *req, const struct webhook_api *api, struct buf *b,
                     const char *id, const struct wh_query *q, const char *next_after)
{
    buf_puts(b, "],\"links\":{");
    wh_query_link(b, api, "self", id, q, q->after[0] ? q->after : NULL);
    buf_puts(b, ",");
    if (next_after)
        wh_query_link(b, api, "next", id, q, next_after);
    else
        buf_puts(b, "\"next\":null");
    buf_puts(b, "}}");
    http_respond_buf(req, 200, b);
}

void wh_query_link(struct buf *b, const struct webhook_api *api, const char *name,
                   const char *id, const struct wh_query *q, const char *after)
{
    buf_printf(b, "\"%s\":\"", name);
    wh_append_url(b, api, id, q->list == WH_LIST_DELIVERIES ? "/deliveries?" : "?");
    for (size_t i = 0; i < q->n_orgs; i++)
        buf_printf(b, "%s%s", i ? "," : "filter[organisation_id]=", q->orgs[i]);
    if (q->n_orgs)
        buf_puts(b, "&");
    const char *sep = "filter[status]=";
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        if (q->statuses & (unsigned)statuses[i].status) {
            buf_printf(b, "%s%s", sep, statuses[i].name);
            sep = ",";
        }
    }
    if (q->statuses)
        buf_puts(b, "&");
    buf_printf(b, "page[size]=%" PRIu32, q->size);
    if (after)
        buf_printf(b, "&page[after]=%s", after);
    buf_puts(b, "\"");
}
