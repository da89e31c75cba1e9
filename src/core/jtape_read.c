/* jtape_read: the lookups of core/jtape.h, which read a parsed tape back:
 * jtape_get (an object's member), jtape_string and jtape_string_eq (a
 * string's decoded value), jtape_equal (json_equal on two tapes).
 *
 * Invariant relied on: the tape was built by jtape_parse(), so no key holds
 * an escape (raw bytes compare), every escape is well formed and every
 * string's raw text is valid UTF-8.  Nothing here allocates but
 * jtape_string(), into the caller's scratch buffer. */
#include "core/jtape.h"

#include <assert.h>
#include <string.h>

#include "core/jtape_text.h"

/* Decodes raw string text (len bytes) into w, which has room for len
 * bytes (a decoded value is never longer than its raw text); returns the
 * bytes written. */
static size_t decode(const unsigned char *raw, size_t len, char *w)
{
    return (size_t)(jtape_unescape_into(raw, len, w, jtape_utf8_put) - w);
}

uint32_t jtape_get(const struct jtape *t, uint32_t obj, const char *key, size_t key_len)
{
    assert(t != NULL && obj < t->count && t->tokens[obj].kind == JTAPE_OBJECT);
    const struct jtape_token *tok = t->tokens;
    for (uint32_t k = obj + 1; k < tok[obj].end; k = tok[k + 1].end) {
        assert(tok[k].kind == JTAPE_STRING && !tok[k].escaped);
        if (tok[k].len == key_len && memcmp(t->text + tok[k].start, key, key_len) == 0)
            return k + 1;
    }
    return 0;
}

int jtape_string_eq(const struct jtape *t, uint32_t i, const char *s, size_t len)
{
    assert(t != NULL && i < t->count && t->tokens[i].kind == JTAPE_STRING);
    const struct jtape_token *tok = &t->tokens[i];
    const unsigned char *raw = (const unsigned char *)t->text + tok->start;
    if (!tok->escaped)
        return tok->len == len && memcmp(raw, s, len) == 0;
    if (len > tok->len)
        return 0; /* a decoded value is never longer than its raw text */
    const unsigned char *end = raw + tok->len;
    size_t at = 0;
    while (raw < end) {
        if (*raw != '\\') {
            if (at == len || (unsigned char)s[at] != *raw)
                return 0;
            at++;
            raw++;
            continue;
        }
        uint32_t cp;
        char utf8[4];
        raw += jtape_unescape(raw, &cp);
        size_t n = jtape_utf8_put(utf8, cp);
        if (len - at < n || memcmp(s + at, utf8, n) != 0)
            return 0;
        at += n;
    }
    return at == len;
}

const char *jtape_string(const struct jtape *t, uint32_t i, struct buf *scratch, size_t *len)
{
    assert(t != NULL && i < t->count && t->tokens[i].kind == JTAPE_STRING && len != NULL);
    const struct jtape_token *tok = &t->tokens[i];
    const unsigned char *raw = (const unsigned char *)t->text + tok->start;
    if (!tok->escaped) {
        *len = tok->len;
        return (const char *)raw;
    }
    assert(scratch != NULL);
    if (buf_reserve(scratch, tok->len) != 0)
        return NULL;
    char *w = scratch->data + scratch->len;
    *len = decode(raw, tok->len, w);
    scratch->len += *len;
    scratch->data[scratch->len] = '\0';
    return w;
}

/* The next code point of a string's raw text at *p, which it passes. */
static uint32_t next_code_point(const unsigned char **p)
{
    const unsigned char *s = *p;
    uint32_t cp;
    if (*s == '\\') {
        *p += jtape_unescape(s, &cp);
        return cp;
    }
    if (*s < 0x80) {
        *p += 1;
        return *s;
    }
    if (*s < 0xe0) {
        *p += 2;
        return (uint32_t)(*s & 0x1f) << 6 | (s[1] & 0x3f);
    }
    if (*s < 0xf0) {
        *p += 3;
        return (uint32_t)(*s & 0x0f) << 12 | (uint32_t)(s[1] & 0x3f) << 6 | (s[2] & 0x3f);
    }
    *p += 4;
    return (uint32_t)(*s & 0x07) << 18 | (uint32_t)(s[1] & 0x3f) << 12 |
           (uint32_t)(s[2] & 0x3f) << 6 | (s[3] & 0x3f);
}

static int strings_equal(const struct jtape *a, const struct jtape_token *x, const struct jtape *b,
                         const struct jtape_token *y)
{
    const unsigned char *p = (const unsigned char *)a->text + x->start;
    const unsigned char *q = (const unsigned char *)b->text + y->start;
    if (!x->escaped && !y->escaped)
        return x->len == y->len && memcmp(p, q, x->len) == 0;
    if (x->count != y->count)
        return 0;
    for (uint32_t n = 0; n < x->count; n++)
        if (next_code_point(&p) != next_code_point(&q))
            return 0;
    return 1;
}

int jtape_equal(const struct jtape *a, uint32_t i, const struct jtape *b, uint32_t j)
{
    assert(a != NULL && b != NULL && i < a->count && j < b->count);
    const struct jtape_token *x = &a->tokens[i], *y = &b->tokens[j];
    if (x->kind != y->kind)
        return 0;
    switch (x->kind) {
    case JTAPE_OBJECT:
        if (x->count != y->count)
            return 0;
        for (uint32_t k = i + 1; k < x->end; k = a->tokens[k + 1].end) {
            uint32_t v = jtape_get(b, j, a->text + a->tokens[k].start, a->tokens[k].len);
            if (!v || !jtape_equal(a, k + 1, b, v))
                return 0;
        }
        return 1;
    case JTAPE_ARRAY:
        if (x->count != y->count)
            return 0;
        for (uint32_t k = i + 1, l = j + 1; k < x->end; k = a->tokens[k].end, l = b->tokens[l].end)
            if (!jtape_equal(a, k, b, l))
                return 0;
        return 1;
    case JTAPE_STRING:
        return strings_equal(a, x, b, y);
    case JTAPE_INTEGER:
        return x->integer == y->integer;
    default:
        return 1; /* true, false, null */
    }
}
