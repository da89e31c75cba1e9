/* jtape_text: what jtape's parser (jtape.c), lookups (jtape_read.c) and
 * writer (jtape_dump.c) share about the raw text of a string on a tape.
 * Private to jtape: only those files include it.
 *
 * Invariant: the bytes handed to these functions are a string's raw text
 * that jtape_parse() accepted, so every escape is well formed (a surrogate
 * escape is always the high half of a pair directly followed by its low
 * half) and never \u0000. */
#ifndef CORE_JTAPE_TEXT_H
#define CORE_JTAPE_TEXT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* One more than the value of hex digit c; 0 when c is not one (so that
 * the table's default entries say "not a digit"). */
extern const int8_t jtape_hex_plus1[256];

/* The value of hex digit c, or -1 when c is not one. */
static inline int jtape_hex(unsigned char c)
{
    return jtape_hex_plus1[c] - 1;
}

/* Decodes the escape starting at p (a backslash) into its code point
 * (*cp); returns the raw bytes it spans (2, 6 or 12). */
static inline size_t jtape_unescape(const unsigned char *p, uint32_t *cp)
{
    switch (p[1]) {
    case 'b': *cp = '\b'; return 2;
    case 'f': *cp = '\f'; return 2;
    case 'n': *cp = '\n'; return 2;
    case 'r': *cp = '\r'; return 2;
    case 't': *cp = '\t'; return 2;
    case 'u': break;
    default: *cp = p[1]; return 2; /* '"', '\\' or '/' */
    }
    uint32_t u = (uint32_t)(jtape_hex(p[2]) << 12 | jtape_hex(p[3]) << 8 | jtape_hex(p[4]) << 4 |
                            jtape_hex(p[5]));
    if (u < 0xd800 || u > 0xdbff) {
        *cp = u;
        return 6;
    }
    uint32_t lo = (uint32_t)(jtape_hex(p[8]) << 12 | jtape_hex(p[9]) << 8 |
                             jtape_hex(p[10]) << 4 | jtape_hex(p[11]));
    *cp = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
    return 12;
}

/* Writes code point cp (valid, not a surrogate) as UTF-8 at w; returns the
 * bytes written (1..4). */
static inline size_t jtape_utf8_put(char *w, uint32_t cp)
{
    if (cp < 0x80) {
        w[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        w[0] = (char)(0xc0 | cp >> 6);
        w[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        w[0] = (char)(0xe0 | cp >> 12);
        w[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        w[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    w[0] = (char)(0xf0 | cp >> 18);
    w[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    w[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    w[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Writes a decoded code point at w; returns the bytes written. */
typedef size_t (*jtape_put_fn)(char *w, uint32_t cp);

/* Copies the raw string bytes raw[0..len) (checked by the parse) to w,
 * each escape decoded and written by put (jtape_utf8_put for the value,
 * the dump's own writer for jansson's escapes); returns the byte after the
 * last one written. */
static inline char *jtape_unescape_into(const unsigned char *raw, size_t len, char *w,
                                        jtape_put_fn put)
{
    const unsigned char *end = raw + len;
    while (raw < end) {
        const unsigned char *bs = memchr(raw, '\\', (size_t)(end - raw));
        size_t run = (size_t)((bs ? bs : end) - raw);
        memcpy(w, raw, run);
        w += run;
        raw += run;
        if (!bs)
            break;
        uint32_t cp;
        raw += jtape_unescape(raw, &cp);
        w += put(w, cp);
    }
    return w;
}

#endif
