/* uuid: RFC 9562 UUIDs in their textual 8-4-4-4-12 form.
 *
 * Only that form is a UUID here: 36 characters, hex digits in any letter
 * case, hyphens at offsets 8, 13, 18 and 23.  No braces, no "urn:uuid:"
 * prefix, no 32-digit form.  Output is always lower case. */
#ifndef CORE_UUID_H
#define CORE_UUID_H

#include <stddef.h>
#include <stdint.h>

#define UUID_STR_LEN 36 /* characters, without the terminating NUL */

struct uuid {
    uint8_t bytes[16]; /* network order, as in the textual form */
};

/* Parses exactly len bytes of s.  Returns 0, or -1 when s is not a UUID. */
int uuid_parse(const char *s, size_t len, struct uuid *out);

/* Writes the lower-case textual form and a NUL into out. */
void uuid_format(const struct uuid *u, char out[UUID_STR_LEN + 1]);

/* Parses and re-formats in lower case: 0, or -1 when s is not a UUID. */
int uuid_canonical(const char *s, size_t len, char out[UUID_STR_LEN + 1]);

/* A version 7 UUID: 48-bit big-endian unix_ms, version and variant bits,
 * the remaining 74 bits from getrandom(2).  Returns 0, or -1 when the
 * kernel's random source fails. */
int uuid_v7_generate(int64_t unix_ms, struct uuid *out);

#endif
