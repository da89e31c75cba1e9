/* console: see console.h. */
#include "app/console.h"

#include <assert.h>
#include <string.h>

#include "http/server.h"

#define CONSOLE_PREFIX "/console/"

/* The headers every console answer carries (X-Content-Type-Options
 * nosniff is the server's, on every answer). */
static void add_security_headers(http_request *req)
{
    http_request_add_header(req, "Content-Security-Policy",
                            "default-src 'none'; script-src 'self'; style-src 'self'; "
                            "img-src 'self' data:; connect-src 'self'; font-src 'self'; "
                            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'");
    http_request_add_header(req, "X-Frame-Options", "DENY");
    http_request_add_header(req, "Referrer-Policy", "no-referrer");
}

const struct console_asset *console_asset_find(const char *path)
{
    size_t lo = 0, hi = console_n_assets;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(path, console_assets[mid].path);
        if (c == 0)
            return &console_assets[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *console_content_type(const char *path)
{
    static const struct {
        const char *ext;  /* with its dot */
        const char *type; /* the Content-Type */
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".json", "application/json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".woff2", "font/woff2"},
        {".txt", "text/plain; charset=utf-8"},
    };
    const char *dot = strrchr(path, '.');
    if (dot && !strchr(dot, '/'))
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcmp(dot, types[i].ext) == 0)
                return types[i].type;
    return "application/octet-stream";
}

/* Whether an If-None-Match value ("*", or entity tags separated by
 * commas, maybe weak) names etag. */
static int etag_listed(const char *if_none_match, const char *etag)
{
    size_t elen = strlen(etag);
    const char *s = if_none_match;
    while (*s) {
        s += strspn(s, " \t,");
        size_t n = strcspn(s, ",");
        size_t end = n;
        while (end > 0 && (s[end - 1] == ' ' || s[end - 1] == '\t'))
            end--;
        const char *tag = s;
        if (end >= 2 && strncmp(tag, "W/", 2) == 0) {
            tag += 2;
            end -= 2;
        }
        if ((end == 1 && tag[0] == '*') || (end == elen && memcmp(tag, etag, elen) == 0))
            return 1;
        s += n;
    }
    return 0;
}

static void respond_asset(http_request *req, const struct console_asset *a)
{
    add_security_headers(req);
    http_request_add_header(req, "Cache-Control", "no-cache");
    http_request_add_header(req, "ETag", a->etag);
    const char *inm = http_request_header(req, "If-None-Match");
    if (inm && etag_listed(inm, a->etag)) {
        http_respond(req, 304, NULL);
        return;
    }
    http_request_add_header(req, "Content-Type", console_content_type(a->path));
    struct buf b = BUF_INIT;
    buf_append(&b, a->data, a->len);
    http_respond_buf(req, 200, &b);
}

static void respond_missing(http_request *req)
{
    add_security_headers(req);
    http_respond_error(req, 404, "not_found", "no such console file", NULL);
}

/* GET /console/<path>: the file at path. */
static void console_file(http_request *req, void *ctx)
{
    (void)ctx;
    const char *path = http_request_path(req);
    assert(strncmp(path, CONSOLE_PREFIX, strlen(CONSOLE_PREFIX)) == 0); /* the routes' */
    const struct console_asset *a = console_asset_find(path + strlen(CONSOLE_PREFIX));
    if (a)
        respond_asset(req, a);
    else
        respond_missing(req);
}

/* GET /console/: the console's first page. */
static void console_index(http_request *req, void *ctx)
{
    (void)ctx;
    const struct console_asset *a = console_asset_find("index.html");
    if (a)
        respond_asset(req, a);
    else
        respond_missing(req);
}

/* GET /console: to /console/, so that the page's relative links resolve. */
static void console_redirect(http_request *req, void *ctx)
{
    (void)ctx;
    add_security_headers(req);
    http_request_add_header(req, "Location", CONSOLE_PREFIX);
    http_respond(req, 308, NULL);
}

size_t console_routes(struct http_route *out)
{
    /* A placeholder matches one segment: files sit at most three folders
     * deep ("/console/a/b/c/d", scripts/embed_assets.py refuses deeper
     * ones); a deeper path is the router's 404. */
    const struct http_route routes[CONSOLE_ROUTES] = {
        {HTTP_GET, "/console", console_redirect, 0, NULL},
        {HTTP_GET, "/console/", console_index, 0, NULL},
        {HTTP_GET, "/console/{a}", console_file, 0, NULL},
        {HTTP_GET, "/console/{a}/{b}", console_file, 0, NULL},
        {HTTP_GET, "/console/{a}/{b}/{c}", console_file, 0, NULL},
        {HTTP_GET, "/console/{a}/{b}/{c}/{d}", console_file, 0, NULL},
    };
    memcpy(out, routes, sizeof routes);
    return CONSOLE_ROUTES;
}
