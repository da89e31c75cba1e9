/* version: data.version, If-Match and ?version read the one way every
 * versioned resource reads them (see version.h). */
#include "http/version.h"

#include <assert.h>
#include <string.h>

static const char if_match_malformed[] =
    "If-Match must be exactly one strong entity tag such as \"3\"";

int http_parse_version(const char *s, size_t len, int64_t *out)
{
    if (len == 0 || len > 18 || (len > 1 && s[0] == '0'))
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int http_if_match_version(http_request *req, int64_t *v)
{
    const char *h = http_request_header(req, "If-Match");
    if (!h)
        return 0;
    while (*h == ' ' || *h == '\t')
        h++;
    size_t len = strlen(h);
    while (len > 0 && (h[len - 1] == ' ' || h[len - 1] == '\t'))
        len--;
    if (len < 3 || h[0] != '"' || h[len - 1] != '"' ||
        http_parse_version(h + 1, len - 2, v) != 0) {
        http_respond_error(req, 400, "bad_request", if_match_malformed, NULL);
        return -1;
    }
    return 1;
}

int http_client_version(http_request *req, json_t *data, int required, int64_t *v)
{
    json_t *jv = data ? json_object_get(data, "version") : NULL;
    return http_client_version_of(req, json_is_integer(jv), json_integer_value(jv), required, v);
}

int http_client_version_of(http_request *req, int has_body, int64_t body_version, int required,
                           int64_t *v)
{
    int64_t hv = -1;
    int h = http_if_match_version(req, &hv);
    if (h < 0)
        return -1;
    if (has_body && h && body_version != hv) {
        http_respond_error(req, 400, "bad_request", "If-Match and data.version disagree", NULL);
        return -1;
    }
    if (has_body)
        *v = body_version;
    else if (h)
        *v = hv;
    else if (required) {
        http_respond_error(req, 428, "version_required",
                           "name the version you read, in data.version or If-Match", NULL);
        return -1;
    } else
        *v = -1;
    return 0;
}

/* A DELETE's query, read. */
struct delete_query {
    int64_t version; /* -1 unless ?version= was given */
    int bad;         /* 1: malformed, repeated or unknown parameter */
};

static int delete_query_param(void *arg, const char *key, const char *value)
{
    struct delete_query *q = arg;
    assert(value); /* the server passes "" for a parameter without one */
    if (strcmp(key, "version") != 0 || q->version != -1 ||
        http_parse_version(value, strlen(value), &q->version) != 0) {
        q->bad = 1;
        return 1;
    }
    return 0;
}

int http_delete_version(http_request *req, int64_t *v)
{
    struct delete_query q = {-1, 0};
    http_request_query_each(req, delete_query_param, &q);
    if (q.bad) {
        http_respond_error(req, 400, "bad_request",
                           "the only parameter is version, a non-negative integer, once", NULL);
        return -1;
    }
    int64_t hv;
    int h = http_if_match_version(req, &hv);
    if (h < 0)
        return -1;
    if (h && q.version != -1 && hv != q.version) {
        http_respond_error(req, 400, "bad_request", "If-Match and ?version disagree", NULL);
        return -1;
    }
    *v = h ? hv : q.version;
    return 0;
}
