#include "auth/keys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

/* SHA-256("s3cret") and SHA-256("other") */
#define H_S3CRET "1af29a6b7bc2a77ad9390c3c2ab3a1a5cd0bc0b6b5b8e3d4ee2d1d4f5d4bd6c8"
#define ORG_A "ee2fb143-6dfe-4787-b183-ca8ddd4164d2"
#define ORG_B "3fa85f64-5717-4562-b3fc-2c963f66afa6"

static char *write_file(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/paymentd-keys-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    size_t n = strlen(text);
    if (write(fd, text, n) != (ssize_t)n) {
        close(fd);
        return NULL;
    }
    close(fd);
    return path;
}

/* The hex SHA-256 of s, computed by the system's sha256sum as an oracle
 * independent of the code under test. */
static void sha256_hex(const char *s, char out[65])
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "printf '%%s' '%s' | sha256sum", s);
    FILE *p = popen(cmd, "r");
    out[0] = '\0';
    if (!p)
        return;
    if (fscanf(p, "%64s", out) != 1)
        out[0] = '\0';
    pclose(p);
}

static auth_keys *load(const char *text, char *err, size_t errlen)
{
    char *path = write_file(text);
    auth_keys *k = NULL;
    if (!path)
        return NULL;
    if (auth_keys_load(path, &k, err, errlen) != 0)
        k = NULL;
    unlink(path);
    return k;
}

static void test_find_and_allow(void)
{
    char a[65], b[65], text[512], err[256];
    sha256_hex("s3cret", a);
    sha256_hex("other", b);
    CHECK_INT(strlen(a), 64);
    snprintf(text, sizeof text,
             "# comment\n\nalpha %s " ORG_A "\n  beta\t%s *\ngamma %s %s," ORG_B "\n", a, b,
             "0000000000000000000000000000000000000000000000000000000000000000",
             "EE2FB143-6DFE-4787-B183-CA8DDD4164D2");
    auth_keys *k = load(text, err, sizeof err);
    CHECK(k != NULL);
    if (!k) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    const struct auth_principal *p = auth_keys_find(k, "s3cret", 6);
    CHECK(p && strcmp(p->id, "alpha") == 0);
    CHECK(p && auth_allows(p, ORG_A) && !auth_allows(p, ORG_B));
    p = auth_keys_find(k, "other", 5);
    CHECK(p && strcmp(p->id, "beta") == 0 && p->all_orgs && auth_allows(p, ORG_B));
    CHECK(auth_keys_find(k, "s3cre", 5) == NULL);
    CHECK(auth_keys_find(k, "s3cret ", 7) == NULL);
    CHECK(auth_keys_find(k, "", 0) == NULL);
    CHECK(auth_allows(NULL, ORG_B)); /* open mode */
    CHECK(auth_authenticate(k, "Bearer s3cret") == auth_keys_find(k, "s3cret", 6));
    CHECK(auth_authenticate(k, "bearer   other  ") != NULL);
    CHECK(auth_authenticate(k, "Basic czNjcmV0") == NULL);
    CHECK(auth_authenticate(k, "Bearer ") == NULL);
    CHECK(auth_authenticate(k, NULL) == NULL);
    CHECK(auth_authenticate(k, "Bearer wrong") == NULL);
    auth_keys_free(k);
}

static void test_bad_files(void)
{
    static const struct {
        const char *text;
        const char *why; /* part of the message */
    } cases[] = {
        {"", "no keys"},
        {"# only a comment\n", "no keys"},
        {"alpha " H_S3CRET "\n", "expected"},
        {"alpha " H_S3CRET " * write extra\n", "expected"},
        {"alpha " H_S3CRET " * extra\n", "read or write"},
        {"alpha " H_S3CRET " * READ\n", "read or write"},
        {"alpha " H_S3CRET " * readonly\n", "read or write"},
        {"alpha abc *\n", "64 hex"},
        {"alpha " H_S3CRET "x *\n", "64 hex"},
        {"al/pha " H_S3CRET " *\n", "key ids"},
        {"alpha " H_S3CRET " not-a-uuid\n", "UUID"},
        {"alpha " H_S3CRET " " ORG_A ",\n", "UUID"},
        {"alpha " H_S3CRET " *\nalpha " H_S3CRET " *\n", "duplicate"},
        {"alpha " H_S3CRET " *\nbeta " H_S3CRET " *\n", "share one secret"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256] = "";
        auth_keys *k = load(cases[i].text, err, sizeof err);
        CHECK(k == NULL);
        if (k)
            auth_keys_free(k);
        if (!strstr(err, cases[i].why)) {
            fprintf(stderr, "  case %zu: message \"%s\" lacks \"%s\"\n", i, err, cases[i].why);
            test_failures++;
        }
    }
    char err[256] = "";
    auth_keys *k = NULL;
    CHECK_INT(auth_keys_load("/nonexistent/keys", &k, err, sizeof err), -1);
    CHECK(strstr(err, "/nonexistent/keys") != NULL);
}

/* The optional fourth field: "read" keys may not write; "write" keys, and
 * keys without the field (files written before it), may. */
static void test_read_only(void)
{
    char a[65], b[65], c[65], text[512], err[256];
    sha256_hex("s3cret", a);
    sha256_hex("other", b);
    sha256_hex("third", c);
    snprintf(text, sizeof text,
             "reader %s " ORG_A " read\nwriter %s *\twrite\nold %s " ORG_A "\n", a, b, c);
    auth_keys *k = load(text, err, sizeof err);
    CHECK(k != NULL);
    if (!k) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    const struct auth_principal *reader = auth_keys_find(k, "s3cret", 6);
    const struct auth_principal *writer = auth_keys_find(k, "other", 5);
    const struct auth_principal *old = auth_keys_find(k, "third", 5);
    CHECK(reader && writer && old);
    if (reader && writer && old) {
        CHECK_INT(reader->write, 0);
        CHECK(reader->n_orgs == 1 && auth_allows(reader, ORG_A) && !auth_allows(reader, ORG_B));
        CHECK_STR(auth_authorize_write(reader), "this API key may only read");
        CHECK_INT(writer->write, 1);
        CHECK(writer->all_orgs);
        CHECK(auth_authorize_write(writer) == NULL);
        CHECK_INT(old->write, 1);
        CHECK(auth_authorize_write(old) == NULL);
    }
    auth_keys_free(k);
}

/* What a list may show: everything for an open server or a "*" key
 * without a filter; the filter less what the key may not act for; a
 * restricted key's own organisations without one. */
static void test_visible_orgs(void)
{
    static const char filter[2][UUID_STR_LEN + 1] = {ORG_A, ORG_B};
    char out[AUTH_MAX_ORGS][UUID_STR_LEN + 1];
    int all = -1;
    CHECK_INT(auth_visible_orgs(NULL, NULL, 0, out, &all), 0);
    CHECK_INT(all, 1);
    CHECK_INT(auth_visible_orgs(NULL, filter, 2, out, &all), 2);
    CHECK_INT(all, 0);
    CHECK_STR(out[1], ORG_B);

    char own[1][UUID_STR_LEN + 1] = {ORG_A};
    struct auth_principal p = {.id = "k", .n_orgs = 1, .orgs = own};
    CHECK_INT(auth_visible_orgs(&p, NULL, 0, out, &all), 1);
    CHECK_INT(all, 0);
    CHECK_STR(out[0], ORG_A);
    CHECK_INT(auth_visible_orgs(&p, filter + 1, 1, out, &all), 0); /* B only: nothing */
    CHECK_INT(all, 0);
    CHECK_INT(auth_visible_orgs(&p, filter, 2, out, &all), 1);
    CHECK_STR(out[0], ORG_A);

    struct auth_principal star = {.id = "s", .all_orgs = 1};
    CHECK_INT(auth_visible_orgs(&star, NULL, 0, out, &all), 0);
    CHECK_INT(all, 1);
    CHECK_INT(auth_visible_orgs(&star, filter + 1, 1, out, &all), 1);
    CHECK_INT(all, 0);
    CHECK_STR(out[0], ORG_B);
}

TEST_MAIN(TEST(test_find_and_allow), TEST(test_bad_files), TEST(test_read_only),
          TEST(test_visible_orgs))
