/* The console's file table and content types (app/console.h); serving
 * them over HTTP is tests/api/test_console_server.py's. */
#include "app/console.h"

#include <string.h>

#include "test.h"

static void test_content_types(void)
{
    CHECK_STR(console_content_type("index.html"), "text/html; charset=utf-8");
    CHECK_STR(console_content_type("css/app.css"), "text/css; charset=utf-8");
    CHECK_STR(console_content_type("js/app.js"), "text/javascript; charset=utf-8");
    CHECK_STR(console_content_type("js/mod.mjs"), "text/javascript; charset=utf-8");
    CHECK_STR(console_content_type("logo.svg"), "image/svg+xml");
    CHECK_STR(console_content_type("shot.png"), "image/png");
    CHECK_STR(console_content_type("favicon.ico"), "image/x-icon");
    CHECK_STR(console_content_type("columns.json"), "application/json");
    CHECK_STR(console_content_type("fonts/sans.woff2"), "font/woff2");
    CHECK_STR(console_content_type("README.txt"), "text/plain; charset=utf-8");
    /* No extension, an unknown one, or a dot in a folder's name only. */
    CHECK_STR(console_content_type("LICENSE"), "application/octet-stream");
    CHECK_STR(console_content_type("a.exe"), "application/octet-stream");
    CHECK_STR(console_content_type("v1.js/app"), "application/octet-stream");
    CHECK_STR(console_content_type("index.HTML"), "application/octet-stream");
}

/* The generated table: sorted, ended by {NULL}, every entry found by its
 * path, each with a quoted tag; index.html is there. */
static void test_table(void)
{
    CHECK(console_assets[console_n_assets].path == NULL);
    CHECK(console_asset_find("index.html") != NULL);
    for (size_t i = 0; i < console_n_assets; i++) {
        const struct console_asset *a = &console_assets[i];
        CHECK(console_asset_find(a->path) == a);
        CHECK(i == 0 || strcmp(console_assets[i - 1].path, a->path) < 0);
        size_t n = strlen(a->etag);
        CHECK(n > 2 && a->etag[0] == '"' && a->etag[n - 1] == '"');
        CHECK(a->path[0] != '/' && strncmp(a->path, "../", 3) != 0 && !strstr(a->path, "/../"));
    }
    CHECK(console_asset_find("") == NULL);
    CHECK(console_asset_find("/index.html") == NULL);
    CHECK(console_asset_find("../index.html") == NULL);
    CHECK(console_asset_find("index.html/") == NULL);
    CHECK(console_asset_find("zzz") == NULL);
}

TEST_MAIN(TEST(test_content_types), TEST(test_table))
