/* utf8: validity of UTF-8 text, as RFC 3629 defines it: no overlong forms,
 * no surrogates, nothing past U+10FFFF. */
#ifndef CORE_UTF8_H
#define CORE_UTF8_H

#include <stddef.h>

/* Length (1..4) of the valid sequence at s, of at most n >= 1 bytes; 0 when
 * the bytes there are not one. */
size_t utf8_seq_len(const unsigned char *s, size_t n);

/* 1 when all n bytes of s are valid UTF-8, else 0. */
int utf8_valid(const char *s, size_t n);

#endif
