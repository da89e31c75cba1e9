/* router: see router.h. */
#include "http/router.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

enum http_method http_method_parse(const char *name)
{
    static const struct {
        const char *name;
        enum http_method method;
    } names[] = {
        {"GET", HTTP_GET},     {"HEAD", HTTP_HEAD},       {"POST", HTTP_POST},
        {"PUT", HTTP_PUT},     {"PATCH", HTTP_PATCH},     {"DELETE", HTTP_DELETE},
        {"OPTIONS", HTTP_OPTIONS},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i].name) == 0)
            return names[i].method;
    return HTTP_OTHER;
}

void http_methods_format(unsigned mask, char *out, size_t cap)
{
    static const char *const names[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
    size_t len = 0;
    if (cap == 0)
        return;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!(mask & (1u << i)))
            continue;
        int n = snprintf(out + len, cap - len, "%s%s", len ? ", " : "", names[i]);
        if (n < 0 || (size_t)n >= cap - len)
            return;
        len += (size_t)n;
    }
}

/* Matches path against pattern; on success reports the {id} segment.
 * Every placeholder ({id} and the others) matches a non-empty segment. */
static int pattern_match(const char *pattern, const char *path, const char **param, size_t *plen)
{
    *param = NULL;
    *plen = 0;
    while (*pattern) {
        if (*pattern == '{') {
            size_t name = strcspn(pattern, "}");
            assert(pattern[name] == '}'); /* a table's pattern is the program's */
            size_t n = strcspn(path, "/");
            if (n == 0)
                return 0;
            if (name + 1 == 4 && strncmp(pattern, "{id}", 4) == 0) {
                *param = path;
                *plen = n;
            }
            path += n;
            pattern += name + 1;
            continue;
        }
        if (*pattern != *path)
            return 0;
        pattern++;
        path++;
    }
    return *path == '\0';
}

const char *http_path_segment(const char *path, size_t index, size_t *len)
{
    const char *p = path;
    for (;;) {
        if (*p != '/')
            return NULL;
        p++;
        size_t n = strcspn(p, "/");
        if (index-- == 0) {
            *len = n;
            return p;
        }
        p += n;
    }
}

int http_router_match(const struct http_route *routes, size_t n, enum http_method method,
                      const char *path, struct http_match *m)
{
    enum http_method want = method == HTTP_HEAD ? HTTP_GET : method;
    memset(m, 0, sizeof *m);
    for (size_t i = 0; i < n; i++) {
        const char *param;
        size_t plen;
        if (!pattern_match(routes[i].pattern, path, &param, &plen))
            continue;
        m->allowed |= routes[i].methods;
        if (routes[i].methods & HTTP_GET)
            m->allowed |= HTTP_HEAD;
        if (!m->route && (routes[i].methods & want)) {
            m->route = &routes[i];
            m->param = param;
            m->param_len = plen;
        }
    }
    if (m->route)
        return 0;
    return m->allowed ? 405 : 404;
}
