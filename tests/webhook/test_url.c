/* Webhook destinations (webhook/url.h): the syntax a url must have, and
 * which addresses a connection may go to. */
#include "webhook/url.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "webhook/endpoint.h"

static void test_syntax(void)
{
    static const struct {
        const char *url;
        int want;
    } cases[] = {
        {"https://example.com/hooks", WEBHOOK_URL_OK},
        {"http://example.com", WEBHOOK_URL_OK},
        {"HTTPS://Example.COM:8443/a/b?c=d#e", WEBHOOK_URL_OK},
        {"http://127.0.0.1:9/x", WEBHOOK_URL_OK},
        {"http://[::1]:8080/", WEBHOOK_URL_OK},
        {"", WEBHOOK_URL_ESYNTAX},
        {"example.com/hooks", WEBHOOK_URL_ESYNTAX},
        {"/hooks", WEBHOOK_URL_ESYNTAX},
        {"http//example.com", WEBHOOK_URL_ESYNTAX},
        {"http://", WEBHOOK_URL_ESYNTAX},
        {"http:///path", WEBHOOK_URL_ESYNTAX},
        {"http://exa mple.com/", WEBHOOK_URL_ESYNTAX},
        {"http://example.com/a b", WEBHOOK_URL_ESYNTAX},
        {"http://example.com/\x01", WEBHOOK_URL_ESYNTAX},
        {"http://example.com/caf\xc3\xa9", WEBHOOK_URL_ESYNTAX},
        {"http://[::1/", WEBHOOK_URL_ESYNTAX},
        {"http://example.com:99999/", WEBHOOK_URL_ESYNTAX},
        {"http://user@example.com/", WEBHOOK_URL_ESYNTAX},
        {"http://user:pw@example.com/", WEBHOOK_URL_ESYNTAX},
        {"https://:pw@example.com/", WEBHOOK_URL_ESYNTAX},
        {"ftp://example.com/", WEBHOOK_URL_ESCHEME},
        {"file:///etc/passwd", WEBHOOK_URL_ESCHEME},
        {"gopher://example.com/", WEBHOOK_URL_ESCHEME},
        {"httpx://example.com/", WEBHOOK_URL_ESCHEME},
        {"ws://example.com/", WEBHOOK_URL_ESCHEME},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char why[256] = "";
        int rc = webhook_url_check(cases[i].url, why, sizeof why);
        if (rc != cases[i].want)
            fprintf(stderr, "  case %zu: \"%s\": %d (%s)\n", i, cases[i].url, rc, why);
        CHECK_INT(rc, cases[i].want);
        CHECK(rc == WEBHOOK_URL_OK || why[0] != '\0'); /* a refusal says why */
    }
}

static void test_messages(void)
{
    char why[256];
    CHECK_INT(webhook_url_check("ftp://example.com/", why, sizeof why), WEBHOOK_URL_ESCHEME);
    CHECK(strstr(why, "http or https") != NULL);
    CHECK_INT(webhook_url_check("http://u:p@example.com/", why, sizeof why), WEBHOOK_URL_ESYNTAX);
    CHECK(strstr(why, "user information") != NULL);
    char tiny[8];
    CHECK_INT(webhook_url_check("ftp://x/", tiny, sizeof tiny), WEBHOOK_URL_ESCHEME);
    CHECK_INT(strlen(tiny), sizeof tiny - 1); /* cut, NUL-terminated */
}

static void test_length(void)
{
    static const char prefix[] = "https://example.com/";
    size_t n = WEBHOOK_URL_MAX;
    char *url = malloc(n + 2);
    CHECK(url != NULL);
    if (!url)
        return;
    memcpy(url, prefix, sizeof prefix - 1);
    memset(url + sizeof prefix - 1, 'a', n - (sizeof prefix - 1));
    url[n] = '\0';
    char why[256];
    CHECK_INT(webhook_url_check(url, why, sizeof why), WEBHOOK_URL_OK);
    url[n] = 'a';
    url[n + 1] = '\0';
    CHECK_INT(webhook_url_check(url, why, sizeof why), WEBHOOK_URL_ESYNTAX);
    CHECK(strstr(why, "2048") != NULL);
    free(url);
}

/* Whether a textual address is allowed. */
static int allowed(const char *text, int allow_private)
{
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
    memset(&in, 0, sizeof in);
    memset(&in6, 0, sizeof in6);
    if (inet_pton(AF_INET, text, &in.sin_addr) == 1) {
        in.sin_family = AF_INET;
        return webhook_addr_allowed((const struct sockaddr *)&in, allow_private);
    }
    if (inet_pton(AF_INET6, text, &in6.sin6_addr) == 1) {
        in6.sin6_family = AF_INET6;
        return webhook_addr_allowed((const struct sockaddr *)&in6, allow_private);
    }
    fprintf(stderr, "  not an address: %s\n", text);
    CHECK(0);
    return -1;
}

static void test_addresses(void)
{
    static const char *const refused[] = {
        "127.0.0.1", "127.255.255.254", "10.0.0.1", "10.255.255.255", "172.16.0.1",
        "172.31.255.255", "192.168.0.1", "192.168.255.255", "100.64.0.1", "100.127.255.255",
        "169.254.169.254", "169.254.0.1", "0.0.0.0", "0.1.2.3", "224.0.0.1", "239.255.255.250",
        "255.255.255.255", "240.0.0.1", "::1", "::", "fe80::1", "febf:ffff::1", "fc00::1",
        "fd12:3456::1", "ff02::1", "ff0e::1", "::ffff:127.0.0.1", "::ffff:10.1.2.3",
        "::ffff:169.254.169.254", "::127.0.0.1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::1",
    };
    static const char *const public[] = {
        "8.8.8.8", "1.1.1.1", "93.184.216.34", "172.15.255.255", "172.32.0.1", "100.63.255.255",
        "100.128.0.1", "169.253.255.255", "192.167.255.255", "11.0.0.1", "223.255.255.255",
        "2606:4700:4700::1111", "2a00:1450:4001::200e", "::ffff:8.8.8.8",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        if (allowed(refused[i], 0) != 0)
            fprintf(stderr, "  %s allowed\n", refused[i]);
        CHECK_INT(allowed(refused[i], 0), 0);
        CHECK_INT(allowed(refused[i], 1), 1); /* --webhook-allow-private */
    }
    for (size_t i = 0; i < sizeof public / sizeof public[0]; i++) {
        if (allowed(public[i], 0) != 1)
            fprintf(stderr, "  %s refused\n", public[i]);
        CHECK_INT(allowed(public[i], 0), 1);
        CHECK_INT(allowed(public[i], 1), 1);
    }
    CHECK_INT(allowed("fec0::1", 0), 0); /* site-local: deprecated, still private */
}

static void test_other_family(void)
{
    struct sockaddr sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_family = AF_UNIX;
    CHECK_INT(webhook_addr_allowed(&sa, 0), 0);
    CHECK_INT(webhook_addr_allowed(&sa, 1), 1);
}

static void test_resolve(void)
{
    static const char *const refused[] = {
        "http://127.0.0.1:9/x", "http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/", "http://localhost/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/",
    };
    char why[512];
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        int rc = webhook_url_resolve(refused[i], 0, why, sizeof why);
        if (rc != WEBHOOK_URL_EPRIVATE)
            fprintf(stderr, "  %s: %d (%s)\n", refused[i], rc, why);
        CHECK_INT(rc, WEBHOOK_URL_EPRIVATE);
        CHECK(strstr(why, "non-public") != NULL);
        CHECK_INT(webhook_url_resolve(refused[i], 1, why, sizeof why), WEBHOOK_URL_OK);
    }
    CHECK_INT(webhook_url_resolve("http://93.184.216.34/hooks", 0, why, sizeof why),
              WEBHOOK_URL_OK);
    CHECK_INT(webhook_url_resolve("http://[2606:4700:4700::1111]/", 0, why, sizeof why),
              WEBHOOK_URL_OK);
    CHECK_INT(webhook_url_resolve("http://no-such-host.invalid/", 0, why, sizeof why),
              WEBHOOK_URL_ERESOLVE);
    /* Syntax first, allowed or not. */
    CHECK_INT(webhook_url_resolve("ftp://127.0.0.1/", 1, why, sizeof why), WEBHOOK_URL_ESCHEME);
    CHECK_INT(webhook_url_resolve("http://u@127.0.0.1/", 1, why, sizeof why),
              WEBHOOK_URL_ESYNTAX);
}

TEST_MAIN(TEST(test_syntax), TEST(test_messages), TEST(test_length), TEST(test_addresses),
          TEST(test_other_family), TEST(test_resolve))
