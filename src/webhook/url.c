/* url: see url.h.  The syntax is judged in three steps: what this file can
 * say clearly itself (length, bytes, an absolute "scheme://", the scheme),
 * then libcurl's URL parser (the one the deliverer connects with, so a url
 * accepted here is one it can send to), then what the parts must be (a
 * host, no user information).  Addresses are judged by their bytes: the
 * refused ranges are listed in refused_v4 and refused_v6, and an IPv6
 * address that carries an IPv4 one (mapped, compatible, NAT64, 6to4) is
 * judged by that IPv4 address.
 *
 * Threads: any; nothing global but libcurl's URL API, which needs no
 * curl_global_init.  webhook_url_resolve blocks on getaddrinfo. */
#include "webhook/url.h"

#include <assert.h>
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "webhook/endpoint.h"

/* ---- syntax ------------------------------------------------------------- */

/* The length of url's scheme (the letters before "://"), or 0 when url
 * does not start with one. */
static size_t scheme_len(const char *url)
{
    size_t n = 0;
    if (!((url[0] >= 'a' && url[0] <= 'z') || (url[0] >= 'A' && url[0] <= 'Z')))
        return 0;
    while ((url[n] >= 'a' && url[n] <= 'z') || (url[n] >= 'A' && url[n] <= 'Z') ||
           (url[n] >= '0' && url[n] <= '9') || url[n] == '+' || url[n] == '-' || url[n] == '.')
        n++;
    return strncmp(url + n, "://", 3) == 0 ? n : 0;
}

/* Whether every byte of url is visible ASCII (no spaces, controls or
 * bytes above 0x7e: a url must be percent-encoded). */
static int visible_ascii(const char *url)
{
    for (const unsigned char *p = (const unsigned char *)url; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return 0;
    return 1;
}

static int fail(int err, char *why, size_t whylen, const char *msg)
{
    snprintf(why, whylen, "%s", msg);
    return err;
}

/* Parses url with libcurl and copies its host (IPv6 literal without its
 * brackets) into host, when host is not NULL.  Returns 0 or an error with
 * why set. */
static int parse_with_curl(const char *url, char *host, size_t hostlen, char *why, size_t whylen)
{
    CURLU *h = curl_url();
    if (!h)
        return fail(WEBHOOK_URL_ESYNTAX, why, whylen, "cannot be checked now (out of memory)");
    int rc = WEBHOOK_URL_OK;
    char *user = NULL, *password = NULL, *part = NULL;
    CURLUcode uc = curl_url_set(h, CURLUPART_URL, url, 0);
    if (uc != CURLUE_OK) {
        char msg[160];
        snprintf(msg, sizeof msg, "is not a valid URL (%s)", curl_url_strerror(uc));
        rc = fail(WEBHOOK_URL_ESYNTAX, why, whylen, msg);
        goto out;
    }
    if (curl_url_get(h, CURLUPART_USER, &user, 0) == CURLUE_OK ||
        curl_url_get(h, CURLUPART_PASSWORD, &password, 0) == CURLUE_OK) {
        rc = fail(WEBHOOK_URL_ESYNTAX, why, whylen,
                  "must not hold user information (user:password@)");
        goto out;
    }
    if (curl_url_get(h, CURLUPART_HOST, &part, 0) != CURLUE_OK || !part[0]) {
        rc = fail(WEBHOOK_URL_ESYNTAX, why, whylen, "must name a host");
        goto out;
    }
    if (host) {
        size_t len = strlen(part);
        const char *start = part;
        if (len >= 2 && part[0] == '[' && part[len - 1] == ']') {
            start++;
            len -= 2;
        }
        if (len >= hostlen) {
            rc = fail(WEBHOOK_URL_ESYNTAX, why, whylen, "has a host name that is too long");
            goto out;
        }
        memcpy(host, start, len);
        host[len] = '\0';
    }
out:
    curl_free(user);
    curl_free(password);
    curl_free(part);
    curl_url_cleanup(h);
    return rc;
}

/* webhook_url_check, giving the host too (host may be NULL). */
static int check_url(const char *url, char *host, size_t hostlen, char *why, size_t whylen)
{
    char msg[96];
    size_t len = strlen(url);
    if (len == 0)
        return fail(WEBHOOK_URL_ESYNTAX, why, whylen, "must not be empty");
    if (len > WEBHOOK_URL_MAX) {
        snprintf(msg, sizeof msg, "must be at most %d bytes long", WEBHOOK_URL_MAX);
        return fail(WEBHOOK_URL_ESYNTAX, why, whylen, msg);
    }
    if (!visible_ascii(url))
        return fail(WEBHOOK_URL_ESYNTAX, why, whylen,
                    "must hold only visible ASCII characters (percent-encode the others)");
    size_t n = scheme_len(url);
    if (n == 0)
        return fail(WEBHOOK_URL_ESYNTAX, why, whylen,
                    "must be an absolute URL such as https://example.com/hooks");
    if (!((n == 4 && strncasecmp(url, "http", 4) == 0) ||
          (n == 5 && strncasecmp(url, "https", 5) == 0)))
        return fail(WEBHOOK_URL_ESCHEME, why, whylen, "must use the scheme http or https");
    if (strchr("/?#", url[n + 3]))
        return fail(WEBHOOK_URL_ESYNTAX, why, whylen, "must name a host");
    return parse_with_curl(url, host, hostlen, why, whylen);
}

int webhook_url_check(const char *url, char *why, size_t whylen)
{
    assert(url && why && whylen > 0);
    return check_url(url, NULL, 0, why, whylen);
}

/* ---- addresses ---------------------------------------------------------- */

/* A refused range: the address's first bits bits equal prefix's. */
struct range {
    uint8_t prefix[16];
    unsigned bits;
};

static const struct range refused_v4[] = {
    {{0}, 8},                 /* 0/8: "this network", 0.0.0.0 unspecified */
    {{10}, 8},                /* private (RFC 1918) */
    {{100, 64}, 10},          /* shared address space (carrier NAT) */
    {{127}, 8},               /* loopback */
    {{169, 254}, 16},         /* link-local (cloud metadata services live here) */
    {{172, 16}, 12},          /* private */
    {{192, 0, 0}, 24},        /* IETF protocol assignments */
    {{192, 168}, 16},         /* private */
    {{198, 18}, 15},          /* benchmarking */
    {{224}, 4},               /* multicast */
    {{240}, 4},               /* reserved, 255.255.255.255 broadcast included */
};

static const struct range refused_v6[] = {
    {{0}, 128},                          /* :: unspecified */
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 128}, /* ::1 loopback */
    {{0xfc}, 7},                         /* unique local */
    {{0xfe, 0x80}, 10},                  /* link-local */
    {{0xfe, 0xc0}, 10},                  /* site-local (deprecated, still private) */
    {{0xff}, 8},                         /* multicast */
    {{0x01, 0x00}, 64},                  /* discard-only */
};

static int in_range(const uint8_t *addr, const struct range *r)
{
    unsigned whole = r->bits / 8, rest = r->bits % 8;
    if (memcmp(addr, r->prefix, whole) != 0)
        return 0;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (addr[whole] & mask) == (r->prefix[whole] & mask);
}

static int v4_allowed(const uint8_t a[4])
{
    for (size_t i = 0; i < sizeof refused_v4 / sizeof refused_v4[0]; i++)
        if (in_range(a, &refused_v4[i]))
            return 0;
    return 1;
}

/* The IPv4 address an IPv6 one carries (mapped ::ffff:a.b.c.d, compatible
 * ::a.b.c.d, NAT64 64:ff9b::a.b.c.d, 6to4 2002:a.b.c.d::), or NULL. */
static const uint8_t *embedded_v4(const uint8_t a[16])
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t compat[12] = {0};
    static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b};
    if (memcmp(a, mapped, 12) == 0 || memcmp(a, nat64, 12) == 0)
        return a + 12;
    if (memcmp(a, compat, 12) == 0 && (a[12] | a[13] | a[14]) != 0)
        return a + 12; /* not :: or ::1, which are judged as IPv6 */
    if (a[0] == 0x20 && a[1] == 0x02)
        return a + 2;
    return NULL;
}

static int v6_allowed(const uint8_t a[16])
{
    for (size_t i = 0; i < sizeof refused_v6 / sizeof refused_v6[0]; i++)
        if (in_range(a, &refused_v6[i]))
            return 0;
    const uint8_t *v4 = embedded_v4(a);
    return v4 ? v4_allowed(v4) : 1;
}

int webhook_addr_allowed(const struct sockaddr *sa, int allow_private)
{
    assert(sa);
    if (allow_private)
        return 1;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return v4_allowed((const uint8_t *)&in->sin_addr.s_addr);
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        return v6_allowed(in6->sin6_addr.s6_addr);
    }
    return 0; /* no other family is a destination */
}

/* ---- resolution --------------------------------------------------------- */

/* The text of sa's address into out (for a message). */
static void addr_text(const struct sockaddr *sa, char *out, size_t len)
{
    if (sa->sa_family != AF_INET && sa->sa_family != AF_INET6) {
        snprintf(out, len, "an address of another family");
        return;
    }
    const void *a = sa->sa_family == AF_INET
                        ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
                        : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (!inet_ntop(sa->sa_family, a, out, (socklen_t)len))
        snprintf(out, len, "?");
}

int webhook_url_resolve(const char *url, int allow_private, char *why, size_t whylen)
{
    assert(url && why && whylen > 0);
    char host[256];
    int rc = check_url(url, host, sizeof host, why, whylen);
    if (rc != WEBHOOK_URL_OK || allow_private)
        return rc; /* every address is allowed: nothing to resolve for */
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(host, NULL, &hints, &res);
    if (gai != 0 || !res) {
        char msg[320];
        snprintf(msg, sizeof msg, "has a host that does not resolve (%s: %s)", host,
                 gai_strerror(gai ? gai : EAI_NONAME));
        if (res)
            freeaddrinfo(res);
        return fail(WEBHOOK_URL_ERESOLVE, why, whylen, msg);
    }
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (webhook_addr_allowed(ai->ai_addr, 0))
            continue;
        char addr[INET6_ADDRSTRLEN], msg[400];
        addr_text(ai->ai_addr, addr, sizeof addr);
        snprintf(msg, sizeof msg,
                 "must not lead to a loopback, private, link-local, multicast or other "
                 "non-public address (%s is %s)",
                 host, addr);
        rc = fail(WEBHOOK_URL_EPRIVATE, why, whylen, msg);
        break;
    }
    freeaddrinfo(res);
    return rc;
}
