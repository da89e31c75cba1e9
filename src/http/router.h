/* router: the table that maps a method and a path to a handler.
 *
 * A route's pattern is a literal path in which one segment may be "{id}",
 * matching any non-empty segment without '/', which the match reports (the
 * handler's http_request_param).  Other segments may be placeholders of
 * other names ("{version}"): each matches any non-empty segment without
 * '/' too, but is not reported; the handler reads it from the path
 * (http_path_segment).  Each module fills its part of the table at
 * start-up, naming its own context; matching never allocates. */
#ifndef HTTP_ROUTER_H
#define HTTP_ROUTER_H

#include <stddef.h>

struct http_request;

enum http_method {
    HTTP_GET = 1 << 0,
    HTTP_HEAD = 1 << 1, /* routed as GET; the server sends no body */
    HTTP_POST = 1 << 2,
    HTTP_PUT = 1 << 3,
    HTTP_PATCH = 1 << 4,
    HTTP_DELETE = 1 << 5,
    HTTP_OPTIONS = 1 << 6,
    HTTP_OTHER = 1 << 7, /* any other method: never routed */
};

/* A handler answers with http_respond*() before returning, or suspends the
 * request (http_request_suspend) and answers from its continuation.  ctx is
 * its route's ctx. */
typedef void (*http_handler_fn)(struct http_request *req, void *ctx);

enum http_route_flags {
    HTTP_ROUTE_BODY = 1 << 0,      /* takes a JSON body: content type checked (415) */
    HTTP_ROUTE_UUID_PARAM = 1 << 1, /* {id} must be a UUID, else 400 invalid_id */
    HTTP_ROUTE_AUTH = 1 << 2        /* needs a principal, when the server authenticates */
};

struct http_route {
    unsigned methods;    /* a single enum http_method bit */
    const char *pattern; /* e.g. "/v1/payments/{id}" */
    http_handler_fn fn;  /* the handler */
    unsigned flags;      /* enum http_route_flags */
    void *ctx;           /* passed to fn: the owning module's context */
};

struct http_match {
    const struct http_route *route; /* NULL: no route for this method */
    const char *param;              /* start of the {id} segment in the path, or NULL */
    size_t param_len;               /* its length */
    unsigned allowed;               /* methods the path has, when it exists */
};

/* The index-th segment of path ("/a/b": "a" is 0, "b" is 1) and its
 * length in *len, or NULL when path has fewer segments. */
const char *http_path_segment(const char *path, size_t index, size_t *len);

/* Parses a request method name. */
enum http_method http_method_parse(const char *name);

/* Writes the methods of a mask as "GET, HEAD, PUT" into out. */
void http_methods_format(unsigned mask, char *out, size_t cap);

/* Finds the route for method and path.  Returns 0 with m->route set on a
 * match; 404 when no pattern matches the path; 405 when patterns match the
 * path but none has the method (m->allowed lists those that do). */
int http_router_match(const struct http_route *routes, size_t n, enum http_method method,
                      const char *path, struct http_match *m);

#endif
