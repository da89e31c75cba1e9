/* console: the operator console's files, served at /console/ from the
 * binary itself.
 *
 * Every file under console/ is embedded at build time (the Makefile runs
 * scripts/embed_assets.py into build/gen/console_assets.c, which defines
 * console_assets[]).  GET and HEAD /console/<path> answer a file's bytes,
 * /console/ the file index.html, /console a 308 to /console/; a path no
 * file has is 404.  Only the embedded table is ever read: no path reaches
 * the file system, so "..", encoded or not, finds nothing.  The routes need
 * no API key (the page asks for one; the API calls it makes carry it).
 *
 * Every answer of these routes carries a strict Content-Security-Policy
 * (scripts, styles, images, fonts and connections from the server only;
 * no inline script, no frames, no base URI), X-Frame-Options DENY and
 * Referrer-Policy no-referrer; files carry Cache-Control no-cache and an
 * ETag (a hash of the file), and an If-None-Match naming it is answered
 * 304.  The table is constant: the routes run on any thread. */
#ifndef APP_CONSOLE_H
#define APP_CONSOLE_H

#include <stddef.h>

#include "http/router.h"

/* One embedded file. */
struct console_asset {
    const char *path;            /* relative to console/, '/'-separated, e.g. "js/app.js" */
    const unsigned char *data;   /* its bytes */
    size_t len;                  /* their count */
    const char *etag;            /* a quoted hash of the bytes: "\"1a2b...\"" */
};

/* The embedded files, sorted by path, then a {NULL} entry (generated). */
extern const struct console_asset console_assets[];
extern const size_t console_n_assets;

#define CONSOLE_ROUTES 6 /* entries console_routes() fills */

/* Fills out (room for CONSOLE_ROUTES) with the console's routes.  Returns
 * the count filled. */
size_t console_routes(struct http_route *out);

/* The embedded file at path (relative to console/), or NULL. */
const struct console_asset *console_asset_find(const char *path);

/* The Content-Type of a file, by its name's extension. */
const char *console_content_type(const char *path);

#endif
