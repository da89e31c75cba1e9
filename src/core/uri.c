/* uri: see uri.h. */
#include "core/uri.h"

#include <assert.h>
#include <string.h>

/* Appends n bytes of s to out (cap bytes, *len of them used, always
 * NUL-terminated), cutting what does not fit. */
static void uri_put(char *out, size_t cap, size_t *len, const char *s, size_t n)
{
    assert(cap > 0 && *len < cap);
    size_t room = cap - 1 - *len;
    if (n > room)
        n = room;
    memcpy(out + *len, s, n);
    *len += n;
    out[*len] = '\0';
}

/* The '@' that ends the user information of uri's authority, or NULL. */
static const char *uri_userinfo_end(const char *uri)
{
    const char *start = strstr(uri, "://");
    if (!start)
        return NULL;
    start += 3;
    const char *end = start + strcspn(start, "/");
    const char *at = NULL;
    for (const char *p = start; p < end; p++)
        if (*p == '@')
            at = p;
    return at;
}

void uri_redact(const char *uri, char *out, size_t cap)
{
    assert(uri && out && cap > 0);
    size_t len = 0;
    out[0] = '\0';
    const char *p = uri;
    const char *at = uri_userinfo_end(uri);
    const char *authority = at ? strstr(uri, "://") + 3 : NULL;
    const char *colon = at ? memchr(authority, ':', (size_t)(at - authority)) : NULL;
    if (colon) { /* user:password@ */
        uri_put(out, cap, &len, uri, (size_t)(colon + 1 - uri));
        uri_put(out, cap, &len, "***", 3);
        p = at;
    }
    /* Every password= option of the query, up to its '&' or '#'. */
    const char *query = strchr(p, '?');
    if (!query) {
        uri_put(out, cap, &len, p, strlen(p));
        return;
    }
    uri_put(out, cap, &len, p, (size_t)(query + 1 - p));
    for (p = query + 1; *p && *p != '#';) {
        size_t n = strcspn(p, "&#");
        if (n >= 9 && strncmp(p, "password=", 9) == 0)
            uri_put(out, cap, &len, "password=***", 12);
        else
            uri_put(out, cap, &len, p, n);
        p += n;
        if (*p == '&')
            uri_put(out, cap, &len, p++, 1);
    }
    uri_put(out, cap, &len, p, strlen(p));
}
