/* test_keys_reload: auth_keys_reload puts a whole new file in force, refuses
 * a bad one without changing anything, keeps the principals found before a
 * reload readable, and never fails a find of a key present in both files
 * while another thread reloads (run under ASan: a freed set would show). */
#include "auth/keys.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

#define ORG_A "ee2fb143-6dfe-4787-b183-ca8ddd4164d2"
#define ORG_B "3fa85f64-5717-4562-b3fc-2c963f66afa6"
#define FINDERS 4
#define RELOADS 1000

/* SHA-256 of "one", "two" and "three" (sha256sum), the secrets of the keys. */
#define H_ONE "7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed"
#define H_TWO "3fc4ccfe745870e2c0d99f71f30ff0656c8dedd41cc1d7d3d376b0dbe685e2f3"
#define H_THREE "8b5b9db0c13db24256c829aa364aa90c6d2eba318b9232a4ab9313b954d3555f"

/* Writes text to path (replacing it).  Returns 0, or -1. */
static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    size_t n = strlen(text);
    int ok = fwrite(text, 1, n, f) == n;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* A fresh key file path under /tmp, unlinked by the caller. */
static void temp_path(char path[64])
{
    snprintf(path, 64, "/tmp/paymentd-reload-XXXXXX");
    int fd = mkstemp(path);
    if (fd >= 0)
        close(fd);
}

static auth_keys *load_text(const char *path, const char *text)
{
    char err[256];
    auth_keys *k = NULL;
    if (write_file(path, text) != 0 || auth_keys_load(path, &k, err, sizeof err) != 0) {
        fprintf(stderr, "  cannot load: %s\n", err);
        return NULL;
    }
    return k;
}

static const char *id_of(auth_keys *k, const char *secret)
{
    const struct auth_principal *p = auth_keys_find(k, secret, strlen(secret));
    return p ? p->id : NULL;
}

static void test_good_reload_swaps(void)
{
    char path[64], msg[256];
    temp_path(path);
    auth_keys *k = load_text(path, "alpha " H_ONE " " ORG_A "\nbeta " H_TWO " *\n");
    CHECK(k != NULL);
    if (!k)
        return;
    CHECK(write_file(path, "alpha " H_ONE " " ORG_B " read\ngamma " H_THREE " *\n") == 0);
    CHECK_INT(auth_keys_reload(k, path, msg, sizeof msg), 0);
    CHECK_STR(msg, "2 keys; added gamma; removed beta; changed alpha");
    const struct auth_principal *p = auth_keys_find(k, "one", 3);
    CHECK(p && strcmp(p->id, "alpha") == 0 && !p->write);
    CHECK(p && auth_allows(p, ORG_B) && !auth_allows(p, ORG_A));
    CHECK(id_of(k, "two") == NULL);
    CHECK_STR(id_of(k, "three"), "gamma");
    /* The same file again changes nothing. */
    CHECK_INT(auth_keys_reload(k, path, msg, sizeof msg), 0);
    CHECK_STR(msg, "2 keys");
    auth_keys_free(k);
    unlink(path);
}

static void test_bad_file_keeps_old_keys(void)
{
    char path[64], msg[256], want[128];
    temp_path(path);
    auth_keys *k = load_text(path, "alpha " H_ONE " " ORG_A "\n");
    CHECK(k != NULL);
    if (!k)
        return;
    /* Line 3 is malformed; line 2 alone would be a good key. */
    CHECK(write_file(path, "# new\ngamma " H_THREE " *\ndelta " H_TWO "\n") == 0);
    CHECK_INT(auth_keys_reload(k, path, msg, sizeof msg), -1);
    snprintf(want, sizeof want, "%s:3: expected:", path);
    CHECK(strncmp(msg, want, strlen(want)) == 0);
    CHECK_STR(id_of(k, "one"), "alpha");
    CHECK(id_of(k, "three") == NULL);
    /* A duplicate id, and a missing file: refused too. */
    CHECK(write_file(path, "gamma " H_THREE " *\ngamma " H_TWO " *\n") == 0);
    CHECK_INT(auth_keys_reload(k, path, msg, sizeof msg), -1);
    snprintf(want, sizeof want, "%s:2: duplicate key id", path);
    CHECK_STR(msg, want);
    unlink(path);
    CHECK_INT(auth_keys_reload(k, path, msg, sizeof msg), -1);
    CHECK(strstr(msg, "No such file") != NULL);
    CHECK_STR(id_of(k, "one"), "alpha");
    /* A good file after bad ones is taken. */
    CHECK(write_file(path, "gamma " H_THREE " *\n") == 0);
    CHECK_INT(auth_keys_reload(k, path, msg, sizeof msg), 0);
    CHECK_STR(id_of(k, "three"), "gamma");
    CHECK(id_of(k, "one") == NULL);
    auth_keys_free(k);
    unlink(path);
}

static void test_principal_outlives_reload(void)
{
    char path[64], msg[256];
    temp_path(path);
    auth_keys *k = load_text(path, "alpha " H_ONE " " ORG_A "," ORG_B "\n");
    CHECK(k != NULL);
    if (!k)
        return;
    const struct auth_principal *before = auth_keys_find(k, "one", 3);
    CHECK(before != NULL);
    CHECK(write_file(path, "omega " H_TWO " *\n") == 0);
    for (int i = 0; i < 3; i++)
        CHECK_INT(auth_keys_reload(k, path, msg, sizeof msg), 0);
    /* A request that found alpha before still reads what it was granted. */
    CHECK(before && strcmp(before->id, "alpha") == 0 && before->n_orgs == 2);
    CHECK(before && strcmp(before->orgs[1], ORG_B) == 0 && auth_allows(before, ORG_A));
    CHECK(id_of(k, "one") == NULL);
    auth_keys_free(k);
    unlink(path);
}

/* What the finder threads share with the reloading one. */
struct race {
    auth_keys *keys;        /* reloaded meanwhile */
    atomic_int stop;        /* set once the reloads are done */
    atomic_long finds;      /* finds made */
    atomic_long misses;     /* finds of "one" that failed or read a wrong key */
};

static void *finder(void *arg)
{
    struct race *r = arg;
    while (!atomic_load(&r->stop)) {
        const struct auth_principal *p = auth_keys_find(r->keys, "one", 3);
        /* Reads the whole principal: a freed or half-built set shows. */
        if (!p || strcmp(p->id, "alpha") != 0 || p->n_orgs != 1 ||
            (strcmp(p->orgs[0], ORG_A) != 0 && strcmp(p->orgs[0], ORG_B) != 0))
            atomic_fetch_add(&r->misses, 1);
        atomic_fetch_add(&r->finds, 1);
    }
    return NULL;
}

static void test_concurrent_finds_while_reloading(void)
{
    char path_a[64], path_b[64], msg[256];
    temp_path(path_a);
    temp_path(path_b);
    /* alpha is in both files (with other organisations); the rest come and go. */
    CHECK(write_file(path_b, "gamma " H_THREE " *\nalpha " H_ONE " " ORG_B "\n") == 0);
    struct race r = {.keys = load_text(path_a, "alpha " H_ONE " " ORG_A "\nbeta " H_TWO " *\n")};
    CHECK(r.keys != NULL);
    if (!r.keys)
        return;
    pthread_t threads[FINDERS];
    int started = 0;
    for (; started < FINDERS; started++)
        if (pthread_create(&threads[started], NULL, finder, &r) != 0)
            break;
    CHECK_INT(started, FINDERS);
    int failed_reloads = 0;
    for (int i = 0; i < RELOADS; i++)
        failed_reloads += auth_keys_reload(r.keys, i % 2 ? path_a : path_b, msg, sizeof msg) != 0;
    atomic_store(&r.stop, 1);
    for (int i = 0; i < started; i++)
        CHECK(pthread_join(threads[i], NULL) == 0);
    CHECK_INT(failed_reloads, 0);
    CHECK_INT(atomic_load(&r.misses), 0);
    CHECK(atomic_load(&r.finds) > 0);
    fprintf(stderr, "  %d reloads during %ld finds from %d threads\n", RELOADS,
            atomic_load(&r.finds), FINDERS);
    auth_keys_free(r.keys);
    unlink(path_a);
    unlink(path_b);
}

TEST_MAIN({"good_reload_swaps", test_good_reload_swaps},
          {"bad_file_keeps_old_keys", test_bad_file_keeps_old_keys},
          {"principal_outlives_reload", test_principal_outlives_reload},
          {"concurrent_finds_while_reloading", test_concurrent_finds_while_reloading})
