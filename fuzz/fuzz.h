/* fuzz: what every libFuzzer harness of paymentd shares.
 *
 * A harness is one fuzz_*.c file linked with the src/ modules it drives and
 * with libFuzzer (clang -fsanitize=fuzzer).  It must never crash, leak or
 * trip a sanitizer on any input; a property it checks that does not hold is
 * reported with FUZZ_CHECK, which prints the broken property and aborts so
 * that libFuzzer saves the input as a crash. */
#ifndef FUZZ_FUZZ_H
#define FUZZ_FUZZ_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/utf8.h"

/* The entry points libFuzzer calls; declared here for -Wmissing-prototypes. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts with the broken property when cond is false. */
#define FUZZ_CHECK(cond)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: property violated: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                      \
        }                                                                                 \
    } while (0)

/* A NUL-terminated heap copy of size bytes (the caller frees it); a NUL in
 * the input ends the string early, as it would in a C API.  Aborts when out
 * of memory: under libFuzzer that is a finding of its own. */
static inline char *fuzz_strndup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    FUZZ_CHECK(s != NULL);
    if (size)
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* A refusal's message goes into {"error_message": "..."} through
 * buf_json_escape(), and may quote client bytes, cut anywhere by snprintf.
 * Whatever it holds, the escaped text must be a valid JSON string, equal to
 * the message when that is valid UTF-8. */
static inline void fuzz_check_error_message(const char *msg)
{
    struct buf b = BUF_INIT;
    size_t len = strlen(msg);
    FUZZ_CHECK(buf_puts(&b, "\"") == 0 && buf_json_escape(&b, msg, len) == 0 &&
               buf_puts(&b, "\"") == 0);
    json_t *s = json_loadb(b.data, b.len, JSON_DECODE_ANY, NULL);
    if (!json_is_string(s))
        fprintf(stderr, "escaped message is not a JSON string: %s\n", b.data);
    FUZZ_CHECK(json_is_string(s));
    FUZZ_CHECK(!utf8_valid(msg, len) ||
               (json_string_length(s) == len && memcmp(json_string_value(s), msg, len) == 0));
    json_decref(s);
    buf_free(&b);
}

/* utf8_valid() agrees with jansson's own UTF-8 check. */
static inline void fuzz_check_utf8(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    FUZZ_CHECK((j != NULL) == (utf8_valid(s, n) != 0));
    json_decref(j);
}

#endif
