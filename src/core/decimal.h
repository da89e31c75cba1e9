/* decimal: non-negative decimal numbers in plain notation, as money travels
 * in the API.  Never converted through floating point.
 *
 * Plain notation: one or more digits, then optionally a point and one or
 * more digits.  No sign, exponent, spaces, "10." or ".5"; no leading zero
 * before another integer digit ("01.5", "00" are rejected; "0" and "0.50"
 * are accepted). */
#ifndef CORE_DECIMAL_H
#define CORE_DECIMAL_H

#include <stddef.h>

#define DECIMAL_MAX_LEN 20                       /* characters, the spec's limit */
#define DECIMAL_KEY_LEN (DECIMAL_MAX_LEN * 2)    /* see decimal_sort_key() */

struct decimal {
    const char *digits; /* integer digits, a view into the parsed text */
    size_t int_len;     /* count of integer digits, >= 1 */
    const char *frac;   /* fraction digits after the point, or NULL */
    size_t frac_len;    /* count of fraction digits, 0 when no point */
};

/* Parses exactly len bytes of s (at most DECIMAL_MAX_LEN).  Returns 0, or -1
 * when s is not a plain-notation decimal.  out points into s. */
int decimal_parse(const char *s, size_t len, struct decimal *out);

/* 1 when the value is zero ("0", "0.00"), else 0. */
int decimal_is_zero(const struct decimal *d);

/* Numeric comparison: negative, zero or positive as a <, =, > b.
 * "1.50" equals "1.5". */
int decimal_cmp(const struct decimal *a, const struct decimal *b);

/* Writes a fixed-width key (DECIMAL_KEY_LEN characters and a NUL) whose
 * byte-wise order is the numeric order of the values: the integer part
 * zero-padded on the left to DECIMAL_MAX_LEN digits, then the fraction
 * zero-padded on the right to DECIMAL_MAX_LEN digits.  Stores index it so
 * that amount range filters compare decimals, not strings. */
void decimal_sort_key(const struct decimal *d, char out[DECIMAL_KEY_LEN + 1]);

#endif
