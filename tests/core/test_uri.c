/* test_uri: URIs shown without their passwords, wherever a URI keeps one. */
#include "core/uri.h"

#include <string.h>

#include "test.h"

static void redacts(const char *in, const char *want)
{
    char out[256];
    uri_redact(in, out, sizeof out);
    CHECK_STR(out, want);
}

static void test_userinfo(void)
{
    redacts("postgres://u:secret@h:5432/db", "postgres://u:***@h:5432/db");
    redacts("mongodb://u:secret@h1,h2/db?replicaSet=r", "mongodb://u:***@h1,h2/db?replicaSet=r");
    redacts("postgres://u@h/db", "postgres://u@h/db"); /* no password */
    redacts("sqlite:./data/payments.db", "sqlite:./data/payments.db");
    redacts("postgres://h/db?x=a@b", "postgres://h/db?x=a@b"); /* an '@' past the authority */
}

/* libpq reads the authority up to the first '/', so a password may hold
 * '?', '#' or '@' unencoded: hidden whole. */
static void test_password_with_delimiters(void)
{
    redacts("postgres://u:se?cret@h:1/db", "postgres://u:***@h:1/db");
    redacts("postgres://u:se#cret@h:1/db", "postgres://u:***@h:1/db");
    redacts("postgres://u:se@cret@h:1/db", "postgres://u:***@h:1/db");
    redacts("postgres://u:se?cr#et@h", "postgres://u:***@h");
}

static void test_password_options(void)
{
    redacts("postgres://h/db?password=secret&sslmode=require",
            "postgres://h/db?password=***&sslmode=require");
    redacts("postgres://h/db?password=first&password=second",
            "postgres://h/db?password=***&password=***");
    redacts("postgres://u:pw@h/db?a=b&password=x#frag", "postgres://u:***@h/db?a=b&password=***#frag");
    redacts("postgres://h/db?mypassword=visible", "postgres://h/db?mypassword=visible");
}

static void test_small_buffer(void)
{
    char out[12];
    uri_redact("postgres://u:secretsecret@h/db", out, sizeof out);
    CHECK_STR(out, "postgres://"); /* cut, never past the buffer, no secret */
    char one[1];
    uri_redact("postgres://u:pw@h", one, sizeof one);
    CHECK_STR(one, "");
}

TEST_MAIN({"userinfo", test_userinfo}, {"password_with_delimiters", test_password_with_delimiters},
          {"password_options", test_password_options}, {"small_buffer", test_small_buffer})
