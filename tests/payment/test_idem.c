#include "payment/idem.h"

#include <pthread.h>
#include <string.h>

#include "test.h"

static void test_key_syntax(void)
{
    char k255[257], k256[258];
    memset(k255, 'a', 255);
    k255[255] = '\0';
    memset(k256, 'a', 256);
    k256[256] = '\0';
    static const struct {
        const char *key;
        int ok;
    } cases[] = {
        {"a", 1}, {"8e03978e-40d5-43e8-bc93-6894a57f9324", 1}, {"!~#$%&'()*+,-./:;<=>?@[]^_`{|}", 1},
        {"", 0}, {" a", 0}, {"a b", 0}, {"a\tb", 0}, {"\x7f", 0}, {"caf\xc3\xa9", 0}, {"a\n", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (idem_key_valid(cases[i].key) != cases[i].ok) {
            fprintf(stderr, "  key \"%s\": expected %d\n", cases[i].key, cases[i].ok);
            test_failures++;
        }
    CHECK_INT(idem_key_valid(k255), 1);
    CHECK_INT(idem_key_valid(k256), 0);
}

static void test_fingerprints(void)
{
    char a[65], b[65];
    CHECK_INT(idem_fingerprint("POST", "/v1/payments", "{}", 2, a), 0);
    CHECK_INT(strlen(a), 64);
    CHECK_INT(idem_fingerprint("POST", "/v1/payments", "{}", 2, b), 0);
    CHECK_STR(a, b);
    static const struct {
        const char *method, *path, *body;
    } others[] = {
        {"PUT", "/v1/payments", "{}"},  {"POST", "/v1/payment", "{}"},
        {"POST", "/v1/payments", "{ }"}, {"POST", "/v1/payments", ""},
        /* the same bytes split differently between the fields */
        {"POS", "T/v1/payments", "{}"}, {"POST", "/v1/payments{", "}"},
    };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        CHECK_INT(idem_fingerprint(others[i].method, others[i].path, others[i].body,
                                   strlen(others[i].body), b),
                  0);
        CHECK(strcmp(a, b) != 0);
    }
    /* A body with a NUL is hashed by length, not up to the NUL. */
    CHECK_INT(idem_fingerprint("POST", "/p", "a\0b", 3, a), 0);
    CHECK_INT(idem_fingerprint("POST", "/p", "a\0c", 3, b), 0);
    CHECK(strcmp(a, b) != 0);
}

static void test_inflight(void)
{
    idem_inflight *t = idem_inflight_new();
    CHECK_INT(idem_inflight_claim(t, "alpha", "k1"), 0);
    CHECK_INT(idem_inflight_claim(t, "alpha", "k1"), 1);
    CHECK_INT(idem_inflight_claim(t, "beta", "k1"), 0);  /* scopes are apart */
    CHECK_INT(idem_inflight_claim(t, "alphak", "1"), 0); /* no confusion at the seam */
    idem_inflight_release(t, "alpha", "k1");
    CHECK_INT(idem_inflight_claim(t, "alpha", "k1"), 0);
    idem_inflight_release(t, "nobody", "nothing"); /* releasing nothing is harmless */
    idem_inflight_free(t); /* frees claims still held */
}

struct race {
    idem_inflight *t;
    int won; /* claims this thread got */
};

static void *racer(void *arg)
{
    struct race *r = arg;
    for (int i = 0; i < 1000; i++) {
        if (idem_inflight_claim(r->t, "s", "same") == 0) {
            r->won++;
            idem_inflight_release(r->t, "s", "same");
        }
    }
    return NULL;
}

static void test_inflight_threads(void)
{
    idem_inflight *t = idem_inflight_new();
    struct race r[4] = {{t, 0}, {t, 0}, {t, 0}, {t, 0}};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        CHECK_INT(pthread_create(&th[i], NULL, racer, &r[i]), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    CHECK(r[0].won + r[1].won + r[2].won + r[3].won > 0);
    CHECK_INT(idem_inflight_claim(t, "s", "same"), 0); /* every claim was released */
    idem_inflight_free(t);
}

TEST_MAIN(TEST(test_key_syntax), TEST(test_fingerprints), TEST(test_inflight),
          TEST(test_inflight_threads))
