/* test: the unit-test harness.  A test file defines functions registered
 * with TEST_MAIN and checks with CHECK*; a failed check reports its file and
 * line and fails that test, which keeps going.  A test that cannot run here
 * says so with TEST_SKIP and returns: it is counted as skipped, never as
 * passed.  main() prints a closing line "N passed, N failed, N skipped"
 * (counting tests) and exits non-zero on any failure. */
#ifndef TEST_H
#define TEST_H

#include <stdio.h>
#include <string.h>

struct test_case {
    const char *name;
    void (*fn)(void);
};

extern int test_failures; /* checks failed in the running test */
extern int test_skipped;  /* the running test called TEST_SKIP */

/* Marks the running test skipped, with the reason on stderr; the test
 * returns right after.  A test that also failed a check counts as failed. */
#define TEST_SKIP(why)                                                 \
    do {                                                               \
        fprintf(stderr, "  %s:%d: skipped: %s\n", __FILE__, __LINE__, (why)); \
        test_skipped = 1;                                              \
    } while (0)

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
            test_failures++;                                                        \
        }                                                                           \
    } while (0)

#define CHECK_INT(a, b)                                                                    \
    do {                                                                                   \
        long long a_ = (long long)(a), b_ = (long long)(b);                                \
        if (a_ != b_) {                                                                    \
            fprintf(stderr, "  %s:%d: %s == %lld, expected %lld\n", __FILE__, __LINE__, #a, \
                    a_, b_);                                                               \
            test_failures++;                                                               \
        }                                                                                  \
    } while (0)

#define CHECK_STR(a, b)                                                                    \
    do {                                                                                   \
        const char *a_ = (a), *b_ = (b);                                                   \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                           \
            fprintf(stderr, "  %s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, \
                    #a, a_ ? a_ : "(null)", b_ ? b_ : "(null)");                           \
            test_failures++;                                                               \
        }                                                                                  \
    } while (0)

/* Defines main() running the given test functions in order. */
#define TEST_MAIN(...)                                                            \
    int test_failures;                                                            \
    int test_skipped;                                                             \
    int main(void)                                                                \
    {                                                                             \
        static const struct test_case cases[] = {__VA_ARGS__};                   \
        int passed = 0, failed = 0, skipped = 0;                                  \
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {            \
            test_failures = 0;                                                    \
            test_skipped = 0;                                                     \
            cases[i].fn();                                                        \
            if (test_failures) {                                                  \
                fprintf(stderr, "FAIL %s\n", cases[i].name);                      \
                failed++;                                                         \
            } else if (test_skipped) {                                            \
                fprintf(stderr, "SKIP %s\n", cases[i].name);                      \
                skipped++;                                                        \
            } else {                                                              \
                passed++;                                                         \
            }                                                                     \
        }                                                                         \
        printf("%s: %d passed, %d failed, %d skipped\n", __FILE__, passed, failed, \
               skipped);                                                          \
        return failed ? 1 : 0;                                                    \
    }

#define TEST(fn) {#fn, fn}

#endif
