#include "http/router.h"

#include <stdlib.h>
#include <string.h>

#include "test.h"

/* Handlers are never called: the router only hands them back.  Each route's
 * ctx is a distinct tag so a match can be traced to its table row. */
static void handler(struct http_request *req, void *ctx)
{
    (void)req;
    (void)ctx;
}

static int tags[16];

static const struct http_route routes[] = {
    {HTTP_POST, "/v1/payments", handler, HTTP_ROUTE_BODY, &tags[0]},
    {HTTP_GET, "/v1/payments", handler, 0, &tags[1]},
    {HTTP_GET, "/v1/payments/{id}", handler, HTTP_ROUTE_UUID_PARAM, &tags[2]},
    {HTTP_PUT, "/v1/payments/{id}", handler, HTTP_ROUTE_BODY | HTTP_ROUTE_UUID_PARAM, &tags[3]},
    {HTTP_PATCH, "/v1/payments/{id}", handler, HTTP_ROUTE_BODY | HTTP_ROUTE_UUID_PARAM, &tags[4]},
    {HTTP_DELETE, "/v1/payments/{id}", handler, HTTP_ROUTE_UUID_PARAM, &tags[5]},
    {HTTP_POST, "/v1/payment", handler, HTTP_ROUTE_BODY, &tags[6]},
    {HTTP_GET, "/v1/payment/{id}", handler, HTTP_ROUTE_UUID_PARAM, &tags[7]},
    {HTTP_DELETE, "/v1/payment/{id}", handler, HTTP_ROUTE_UUID_PARAM, &tags[8]},
    {HTTP_GET, "/healthz", handler, 0, &tags[9]},
    {HTTP_GET, "/readyz", handler, 0, &tags[10]},
    {HTTP_GET, "/v1", handler, 0, &tags[11]},
    {HTTP_POST, "/things/{id}/actions", handler, 0, &tags[12]},
};

#define N_ROUTES (sizeof routes / sizeof routes[0])

static const unsigned ID_METHODS = HTTP_GET | HTTP_HEAD | HTTP_PUT | HTTP_PATCH | HTTP_DELETE;

static void test_match_table(void)
{
    static const struct {
        enum http_method method;
        const char *path;
        int rc;             /* expected return */
        int route;          /* expected tags[] index of the route, -1 for none */
        const char *param;  /* expected {id} text, NULL for no parameter */
        unsigned allowed;   /* expected allowed mask */
    } cases[] = {
        /* exact paths */
        {HTTP_POST, "/v1/payments", 0, 0, NULL, HTTP_GET | HTTP_HEAD | HTTP_POST},
        {HTTP_GET, "/v1/payments", 0, 1, NULL, HTTP_GET | HTTP_HEAD | HTTP_POST},
        {HTTP_GET, "/healthz", 0, 9, NULL, HTTP_GET | HTTP_HEAD},
        {HTTP_GET, "/readyz", 0, 10, NULL, HTTP_GET | HTTP_HEAD},
        {HTTP_GET, "/v1", 0, 11, NULL, HTTP_GET | HTTP_HEAD},
        {HTTP_POST, "/v1/payment", 0, 6, NULL, HTTP_POST},
        /* {id} capture */
        {HTTP_GET, "/v1/payments/abc", 0, 2, "abc", ID_METHODS},
        {HTTP_PUT, "/v1/payments/abc", 0, 3, "abc", ID_METHODS},
        {HTTP_PATCH, "/v1/payments/x", 0, 4, "x", ID_METHODS},
        {HTTP_DELETE, "/v1/payments/123e4567-e89b-12d3-a456-426614174000", 0, 5,
         "123e4567-e89b-12d3-a456-426614174000", ID_METHODS},
        {HTTP_GET, "/v1/payment/ABC", 0, 7, "ABC", HTTP_GET | HTTP_HEAD | HTTP_DELETE},
        {HTTP_DELETE, "/v1/payment/ABC", 0, 8, "ABC", HTTP_GET | HTTP_HEAD | HTTP_DELETE},
        {HTTP_POST, "/things/42/actions", 0, 12, "42", HTTP_POST},
        /* HEAD is routed to GET routes */
        {HTTP_HEAD, "/v1/payments", 0, 1, NULL, HTTP_GET | HTTP_HEAD | HTTP_POST},
        {HTTP_HEAD, "/v1/payments/abc", 0, 2, "abc", ID_METHODS},
        {HTTP_HEAD, "/healthz", 0, 9, NULL, HTTP_GET | HTTP_HEAD},
        /* 405: known path, other method; GET implies HEAD in allowed */
        {HTTP_DELETE, "/v1/payments", 405, -1, NULL, HTTP_GET | HTTP_HEAD | HTTP_POST},
        {HTTP_PUT, "/v1/payments", 405, -1, NULL, HTTP_GET | HTTP_HEAD | HTTP_POST},
        {HTTP_OPTIONS, "/v1/payments", 405, -1, NULL, HTTP_GET | HTTP_HEAD | HTTP_POST},
        {HTTP_POST, "/v1/payments/abc", 405, -1, NULL, ID_METHODS},
        {HTTP_POST, "/healthz", 405, -1, NULL, HTTP_GET | HTTP_HEAD},
        {HTTP_PATCH, "/v1/payment/abc", 405, -1, NULL, HTTP_GET | HTTP_HEAD | HTTP_DELETE},
        {HTTP_GET, "/v1/payment", 405, -1, NULL, HTTP_POST},
        {HTTP_HEAD, "/v1/payment", 405, -1, NULL, HTTP_POST},
        {HTTP_GET, "/things/42/actions", 405, -1, NULL, HTTP_POST},
        /* an unknown method is never routed, but the path is known */
        {HTTP_OTHER, "/v1/payments", 405, -1, NULL, HTTP_GET | HTTP_HEAD | HTTP_POST},
        {HTTP_OTHER, "/v1/payments/abc", 405, -1, NULL, ID_METHODS},
        {HTTP_OTHER, "/healthz", 405, -1, NULL, HTTP_GET | HTTP_HEAD},
        /* 404: trailing slash, empty id, extra or missing segments, prefixes */
        {HTTP_GET, "/v1/payments/", 404, -1, NULL, 0},
        {HTTP_GET, "/v1/payments/abc/", 404, -1, NULL, 0},
        {HTTP_GET, "/v1/payments//", 404, -1, NULL, 0},
        {HTTP_GET, "/v1/payments/abc/def", 404, -1, NULL, 0},
        {HTTP_GET, "/healthz/", 404, -1, NULL, 0},
        {HTTP_GET, "/v1/", 404, -1, NULL, 0},
        {HTTP_GET, "/v1/payment/", 404, -1, NULL, 0},
        {HTTP_POST, "/things//actions", 404, -1, NULL, 0},
        {HTTP_POST, "/things/42/actions/", 404, -1, NULL, 0},
        {HTTP_POST, "/things/42/action", 404, -1, NULL, 0},
        {HTTP_POST, "/things/42", 404, -1, NULL, 0},
        {HTTP_GET, "/healthzz", 404, -1, NULL, 0},
        {HTTP_GET, "/health", 404, -1, NULL, 0},
        {HTTP_GET, "/V1/payments", 404, -1, NULL, 0},
        {HTTP_GET, "/v1/paymentsabc", 404, -1, NULL, 0},
        {HTTP_GET, "v1/payments", 404, -1, NULL, 0},
        {HTTP_GET, "/", 404, -1, NULL, 0},
        {HTTP_GET, "", 404, -1, NULL, 0},
        {HTTP_OTHER, "/nowhere", 404, -1, NULL, 0},
        {HTTP_HEAD, "/nowhere", 404, -1, NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct http_match m;
        memset(&m, 0xa5, sizeof m); /* the router must reset every field */
        int failures = test_failures;
        int rc = http_router_match(routes, N_ROUTES, cases[i].method, cases[i].path, &m);
        CHECK_INT(rc, cases[i].rc);
        CHECK_INT(m.allowed, cases[i].allowed);
        if (cases[i].route < 0) {
            CHECK(m.route == NULL);
        } else {
            CHECK(m.route != NULL);
            if (m.route) {
                CHECK(m.route->ctx == &tags[cases[i].route]);
                CHECK(m.route >= routes && m.route < routes + N_ROUTES);
            }
        }
        if (cases[i].rc == 0 && cases[i].param) {
            size_t plen = strlen(cases[i].param);
            const char *path = cases[i].path;
            /* the parameter is a view into the path, not a copy */
            CHECK(m.param != NULL);
            CHECK_INT(m.param_len, plen);
            if (m.param) {
                CHECK(m.param >= path && m.param + m.param_len <= path + strlen(path));
                CHECK(strncmp(m.param, cases[i].param, plen) == 0);
            }
        } else if (cases[i].rc == 0) {
            CHECK(m.param == NULL);
            CHECK_INT(m.param_len, 0);
        }
        if (test_failures != failures)
            fprintf(stderr, "  case %zu: method %d \"%s\"\n", i, (int)cases[i].method,
                    cases[i].path);
    }
}

static void test_match_param_position(void)
{
    static const char path[] = "/v1/payments/0123456789";
    struct http_match m;
    CHECK_INT(http_router_match(routes, N_ROUTES, HTTP_GET, path, &m), 0);
    CHECK(m.param == path + strlen("/v1/payments/"));
    CHECK_INT(m.param_len, 10);
}

static void test_match_first_route_wins(void)
{
    static int a, b;
    static const struct http_route dup[] = {
        {HTTP_GET, "/x/{id}", handler, 0, &a},
        {HTTP_GET, "/x/{id}", handler, 0, &b},
        {HTTP_PUT, "/x/{id}", handler, 0, &b},
    };
    struct http_match m;
    CHECK_INT(http_router_match(dup, 3, HTTP_GET, "/x/1", &m), 0);
    CHECK(m.route == &dup[0]);
    CHECK_INT(m.allowed, HTTP_GET | HTTP_HEAD | HTTP_PUT);
    CHECK_INT(http_router_match(dup, 3, HTTP_PUT, "/x/1", &m), 0);
    CHECK(m.route == &dup[2]);
    CHECK_INT(m.param_len, 1);
}

/* A placeholder of another name matches a segment but is not the
 * reported parameter, wherever it stands; it never matches an empty one. */
static void test_match_named_placeholder(void)
{
    static int a, b;
    static const struct http_route named[] = {
        {HTTP_GET, "/p/{id}/history", handler, 0, &a},
        {HTTP_GET, "/p/{id}/history/{version}", handler, 0, &b},
    };
    static const char path[] = "/p/abc/history/12";
    struct http_match m;
    CHECK_INT(http_router_match(named, 2, HTTP_GET, path, &m), 0);
    CHECK(m.route == &named[1]);
    CHECK(m.param == path + 3);
    CHECK_INT(m.param_len, 3);
    CHECK_INT(http_router_match(named, 2, HTTP_GET, "/p/abc/history", &m), 0);
    CHECK(m.route == &named[0]);
    CHECK_INT(http_router_match(named, 2, HTTP_GET, "/p/abc/history/", &m), 404);
    CHECK_INT(http_router_match(named, 2, HTTP_GET, "/p/abc/history/1/2", &m), 404);
    CHECK_INT(http_router_match(named, 2, HTTP_PUT, "/p/abc/history/1", &m), 405);
    CHECK_INT(m.allowed, HTTP_GET | HTTP_HEAD);
}

static void test_path_segment(void)
{
    size_t len = 99;
    const char *p = "/v1/payments/abc/history/12";
    CHECK(http_path_segment(p, 0, &len) == p + 1);
    CHECK_INT(len, 2);
    CHECK(http_path_segment(p, 4, &len) == p + 25);
    CHECK_INT(len, 2);
    CHECK(http_path_segment(p, 5, &len) == NULL);
    CHECK(http_path_segment("/a//b", 1, &len) != NULL);
    CHECK_INT(len, 0);
    CHECK(http_path_segment("", 0, &len) == NULL);
}

static void test_match_empty_table(void)
{
    struct http_match m;
    CHECK_INT(http_router_match(routes, 0, HTTP_GET, "/v1/payments", &m), 404);
    CHECK(m.route == NULL);
    CHECK_INT(m.allowed, 0);
}

static void test_method_parse(void)
{
    static const struct {
        const char *name;
        enum http_method method;
    } cases[] = {
        {"GET", HTTP_GET},
        {"HEAD", HTTP_HEAD},
        {"POST", HTTP_POST},
        {"PUT", HTTP_PUT},
        {"PATCH", HTTP_PATCH},
        {"DELETE", HTTP_DELETE},
        {"OPTIONS", HTTP_OPTIONS},
        /* methods are case-sensitive (RFC 9110 section 9.1) */
        {"get", HTTP_OTHER},
        {"Get", HTTP_OTHER},
        {"TRACE", HTTP_OTHER},
        {"CONNECT", HTTP_OTHER},
        {"PROPFIND", HTTP_OTHER},
        {"GETS", HTTP_OTHER},
        {"GE", HTTP_OTHER},
        {"GET ", HTTP_OTHER},
        {"", HTTP_OTHER},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum http_method got = http_method_parse(cases[i].name);
        if (got != cases[i].method)
            fprintf(stderr, "  case %zu: \"%s\"\n", i, cases[i].name);
        CHECK_INT(got, cases[i].method);
    }
}

static void test_methods_format(void)
{
    static const struct {
        unsigned mask;
        const char *want;
    } cases[] = {
        {0, ""},
        {HTTP_GET, "GET"},
        {HTTP_HEAD, "HEAD"},
        {HTTP_OPTIONS, "OPTIONS"},
        {HTTP_GET | HTTP_HEAD | HTTP_POST, "GET, HEAD, POST"},
        {HTTP_POST | HTTP_HEAD | HTTP_GET, "GET, HEAD, POST"},
        {HTTP_GET | HTTP_HEAD | HTTP_PUT | HTTP_PATCH | HTTP_DELETE,
         "GET, HEAD, PUT, PATCH, DELETE"},
        {HTTP_DELETE | HTTP_POST, "POST, DELETE"},
        {HTTP_GET | HTTP_HEAD | HTTP_POST | HTTP_PUT | HTTP_PATCH | HTTP_DELETE | HTTP_OPTIONS,
         "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"},
        /* HTTP_OTHER has no name and is never listed */
        {HTTP_OTHER, ""},
        {HTTP_GET | HTTP_OTHER, "GET"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[128];
        memset(out, 'x', sizeof out);
        http_methods_format(cases[i].mask, out, sizeof out);
        CHECK_STR(out, cases[i].want);
    }
}

/* Every capacity from 1 up: the output must stay inside the buffer (an
 * exact-size heap block, so AddressSanitizer sees any overrun), be
 * terminated, and be a prefix of the full text. */
static void test_methods_format_truncation(void)
{
    const unsigned mask = HTTP_GET | HTTP_HEAD | HTTP_POST | HTTP_PUT | HTTP_PATCH | HTTP_DELETE |
                          HTTP_OPTIONS;
    const char *full = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
    size_t full_len = strlen(full);
    for (size_t cap = 1; cap <= full_len + 2; cap++) {
        char *out = malloc(cap);
        CHECK(out != NULL);
        if (!out)
            return;
        memset(out, 'x', cap);
        http_methods_format(mask, out, cap);
        size_t n = strnlen(out, cap);
        CHECK(n < cap);
        CHECK(strncmp(out, full, n) == 0);
        if (cap > full_len)
            CHECK_STR(out, full);
        free(out);
    }

    char small[4];
    memset(small, 'x', sizeof small);
    http_methods_format(HTTP_GET | HTTP_HEAD, small, sizeof small);
    CHECK_STR(small, "GET");

    /* cap 0 writes nothing */
    char none = 'x';
    http_methods_format(HTTP_GET, &none, 0);
    CHECK_INT(none, 'x');
}

TEST_MAIN(TEST(test_match_table), TEST(test_match_param_position),
          TEST(test_match_named_placeholder), TEST(test_path_segment),
          TEST(test_match_first_route_wins), TEST(test_match_empty_table),
          TEST(test_method_parse), TEST(test_methods_format),
          TEST(test_methods_format_truncation))
