#include "broker/partition.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "test.h"

/* A deterministic stream of well-mixed 64-bit keys (splitmix64). */
static uint64_t next_key(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The jump hash again, written from the paper's description rather than its
 * code: a generator object yields r in (0, 1], and from bucket b the next
 * candidate is floor((b + 1) / r), here computed exactly in integers
 * ((b + 1) * 2^31 / ((x >> 33) + 1) never exceeds 2^62). */
struct lcg {
    uint64_t x;
};

static uint64_t lcg_next(struct lcg *g)
{
    g->x = g->x * 2862933555777941757ULL + 1;
    return (g->x >> 33) + 1; /* r = this / 2^31 */
}

static int32_t jump_exact(uint64_t key, int32_t buckets)
{
    struct lcg g = {key};
    uint64_t b = 0; /* bucket 0 always holds the key for one bucket */
    for (;;) {
        uint64_t next = ((b + 1) << 31) / lcg_next(&g);
        if (next >= (uint64_t)buckets)
            return (int32_t)b;
        b = next;
    }
}

static void test_fnv1a_vectors(void)
{
    /* The published FNV-1a 64 test vectors. */
    CHECK(partition_key("", 0) == 0xcbf29ce484222325ULL);
    CHECK(partition_key("a", 1) == 0xaf63dc4c8601ec8cULL);
    CHECK(partition_key("foobar", 6) == 0x85944171f73967e8ULL);
    /* Letters fold to lower case; digits and hyphens are unchanged. */
    CHECK(partition_key("FOOBAR", 6) == 0x85944171f73967e8ULL);
    CHECK(partition_key("FoObAr", 6) == 0x85944171f73967e8ULL);
    CHECK(partition_key("foobaR", 6) != partition_key("foobaS", 6));
    /* Exactly len bytes are hashed. */
    CHECK(partition_key("foobarxyz", 6) == 0x85944171f73967e8ULL);
}

static void test_jump_published_vectors(void)
{
    /* Values of the paper's reference implementation, as published with
     * other ports of it. */
    static const struct {
        uint64_t key;
        int32_t buckets;
        int32_t want;
    } cases[] = {
        {1, 1, 0},
        {42, 57, 43},
        {0xDEAD10CC, 1, 0},
        {0xDEAD10CC, 666, 361},
        {256, 1024, 520},
        {0, -10, 0}, /* fewer than one bucket: bucket 0 */
        {0xDEAD10CC, -666, 0},
        {0xDEAD10CC, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK_INT(partition_jump(cases[i].key, cases[i].buckets), cases[i].want);
}

static void test_jump_matches_exact_formulation(void)
{
    static const int32_t buckets[] = {1, 2, 3, 5, 7, 16, 17, 100, 1000, 1024, 65536, 1000003,
                                      INT32_MAX};
    uint64_t state = 12345;
    int mismatches = 0;
    for (int k = 0; k < 20000; k++) {
        /* Small keys first (edge of the generator), then mixed ones. */
        uint64_t key = k < 1000 ? (uint64_t)k : next_key(&state);
        for (size_t i = 0; i < sizeof buckets / sizeof buckets[0]; i++) {
            int32_t got = partition_jump(key, buckets[i]);
            if (got != jump_exact(key, buckets[i])) {
                if (mismatches++ < 5)
                    fprintf(stderr, "  key %llu buckets %d: %d vs %d\n", (unsigned long long)key,
                            buckets[i], got, jump_exact(key, buckets[i]));
            }
            if (got < 0 || got >= buckets[i])
                mismatches++;
        }
    }
    CHECK_INT(mismatches, 0);
}

/* Growing N to N + 1 keeps every key in place or moves it to bucket N, and
 * moves about 1/(N + 1) of them. */
static void test_jump_consistency(void)
{
    enum { KEYS = 20000 };
    static uint64_t keys[KEYS];
    uint64_t state = 99;
    for (int k = 0; k < KEYS; k++)
        keys[k] = next_key(&state);
    int bad_moves = 0, off_rate = 0;
    for (int32_t n = 1; n <= 64; n++) {
        int moved = 0;
        for (int k = 0; k < KEYS; k++) {
            int32_t before = partition_jump(keys[k], n), after = partition_jump(keys[k], n + 1);
            if (before != after) {
                moved++;
                if (after != n)
                    bad_moves++;
            }
        }
        /* Binomial(KEYS, 1/(n+1)): allow five standard deviations. */
        double p = 1.0 / (n + 1), mean = KEYS * p, sd = sqrt(KEYS * p * (1 - p));
        if (fabs(moved - mean) > 5 * sd) {
            fprintf(stderr, "  %d -> %d buckets moved %d keys, expected about %.0f\n", n, n + 1,
                    moved, mean);
            off_rate++;
        }
    }
    CHECK_INT(bad_moves, 0);
    CHECK_INT(off_rate, 0);
}

/* Organisation ids spread evenly over the partitions. */
static void test_partition_uniformity(void)
{
    static const uint32_t sizes[] = {2, 7, 16, 64};
    enum { ORGS = 64000 };
    uint64_t state = 7;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        uint32_t n = sizes[s];
        int counts[64] = {0};
        for (int i = 0; i < ORGS; i++) {
            uint64_t a = next_key(&state), b = next_key(&state);
            char id[37];
            snprintf(id, sizeof id, "%08x-%04x-4%03x-%04x-%012llx", (unsigned)(a >> 32),
                     (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xfff,
                     0x8000 | ((unsigned)(b >> 48) & 0x3fff),
                     (unsigned long long)(b & 0xffffffffffffULL));
            uint32_t p = partition_of(id, n);
            CHECK(p < n);
            if (p < n)
                counts[p]++;
        }
        /* Pearson's chi-square against the uniform distribution; the bound
         * is far in the tail (p < 1e-6 for these degrees of freedom) so
         * that only a real bias fails, and every bucket within 10%. */
        double expected = (double)ORGS / n, chi2 = 0;
        int far = 0;
        for (uint32_t p = 0; p < n; p++) {
            chi2 += (counts[p] - expected) * (counts[p] - expected) / expected;
            if (fabs(counts[p] - expected) > 0.10 * expected)
                far++;
        }
        double df = n - 1, bound = df + 10 * sqrt(2 * df) + 20;
        if (chi2 > bound)
            fprintf(stderr, "  %u partitions: chi2 %.1f > %.1f\n", n, chi2, bound);
        CHECK(chi2 <= bound);
        CHECK_INT(far, 0);
    }
}

static void test_partition_of_regression(void)
{
    /* Fixed values: a change here re-routes organisations between running
     * API servers and workers, so it must never happen by accident.  They
     * were computed independently of this code (Python, IEEE doubles). */
    static const struct {
        const char *org;
        uint64_t key;
        uint32_t p[5]; /* partitions 1, 2, 16, 100, 1024 */
    } cases[] = {
        {"743d5b63-8e6f-432e-a8fa-c5d8d2ee5fcb", 0x660a1612460ee7a2ULL, {0, 0, 11, 72, 1014}},
        {"00000000-0000-0000-0000-000000000000", 0x7c384c6218f299f1ULL, {0, 1, 11, 20, 211}},
        {"ffffffff-ffff-ffff-ffff-ffffffffffff", 0x7718f1b2f3cdd331ULL, {0, 0, 11, 91, 91}},
        {"123e4567-e89b-12d3-a456-426614174000", 0x8da4bf2f8d2be9bfULL, {0, 0, 4, 16, 328}},
        {"eb0bd6f5-c3f5-44b2-b677-acd23cdde73c", 0xe07d30e7a2873a52ULL, {0, 0, 8, 95, 503}},
        {"ee2fb143-6dfe-4787-b183-ca8ddd4164d2", 0xe241dbf636ca1221ULL, {0, 1, 5, 33, 433}},
        {"3fa85f64-5717-4562-b3fc-2c963f66afa6", 0x1d404c4b8d922e5eULL, {0, 0, 0, 17, 588}},
    };
    static const uint32_t sizes[5] = {1, 2, 16, 100, 1024};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK(partition_key(cases[i].org, strlen(cases[i].org)) == cases[i].key);
        for (int s = 0; s < 5; s++)
            CHECK_INT(partition_of(cases[i].org, sizes[s]), cases[i].p[s]);
    }
    /* The id's letter case does not matter. */
    CHECK_INT(partition_of("EB0BD6F5-C3F5-44B2-B677-ACD23CDDE73C", 100), 95);
    CHECK_INT(partition_of("Eb0bD6f5-c3F5-44b2-B677-aCd23cDde73c", 1024), 503);
    /* Zero partitions is one. */
    CHECK_INT(partition_of("eb0bd6f5-c3f5-44b2-b677-acd23cdde73c", 0), 0);
    CHECK(partition_of("eb0bd6f5-c3f5-44b2-b677-acd23cdde73c", UINT32_MAX) < (uint32_t)INT32_MAX);
}

TEST_MAIN(TEST(test_fnv1a_vectors), TEST(test_jump_published_vectors),
          TEST(test_jump_matches_exact_formulation), TEST(test_jump_consistency),
          TEST(test_partition_uniformity), TEST(test_partition_of_regression))
