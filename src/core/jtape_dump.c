/* jtape_dump: the writer of core/jtape.h.  It writes a tape's values back
 * as jansson's json_dumps(JSON_COMPACT) writes the tree json_loadb builds
 * from the same text, and strings as jansson escapes them.
 *
 * jansson's escapes (Debian's 2.14, found by experiment and held by
 * fuzz/fuzz_jtape.c): '"' and '\\' as \" and \\; the control characters
 * U+0008, U+0009, U+000A, U+000C and U+000D as \b \t \n \f \r; every other
 * one below U+0020 as \u00XX with upper-case hex; nothing else ('/', DEL,
 * U+2028 and U+2029 are written as they are).
 *
 * So a compact value is never longer than its raw text (whitespace goes,
 * "-0" becomes "0", "\/" becomes "/", an escaped character is written in
 * at most as many bytes as its escape took): a dump reserves the raw length
 * once and writes without further checks.  A container whose raw text is
 * already its dump (JTAPE_VERBATIM, found by the parse: the common case of
 * a compact body) is copied whole. */
#include "core/jtape.h"

#include <assert.h>
#include <string.h>

#include "core/jtape_text.h"

#define JTAPE_DUMP_DEPTH_MAX 64 /* deepest tape jtape_parse() builds */

static const char hex_upper[] = "0123456789ABCDEF";

/* Writes control character c (< 0x20) as jansson escapes it; returns the
 * bytes written. */
static size_t put_control(char *w, unsigned char c)
{
    static const char named[0x20] = {['\b'] = 'b', ['\t'] = 't', ['\n'] = 'n', ['\f'] = 'f',
                                     ['\r'] = 'r'};
    w[0] = '\\';
    if (named[c]) {
        w[1] = named[c];
        return 2;
    }
    w[1] = 'u';
    w[2] = '0';
    w[3] = '0';
    w[4] = hex_upper[c >> 4];
    w[5] = hex_upper[c & 0xf];
    return 6;
}

/* Writes decoded code point cp as jansson's dump writes it inside a
 * string; returns the bytes written. */
static size_t put_escaped(char *w, uint32_t cp)
{
    if (cp < 0x20)
        return put_control(w, (unsigned char)cp);
    if (cp == '"' || cp == '\\') {
        w[0] = '\\';
        w[1] = (char)cp;
        return 2;
    }
    return jtape_utf8_put(w, cp);
}

/* Writes string token tok, quotes included; returns the byte after it. */
static char *put_string(const struct jtape *t, const struct jtape_token *tok, char *w)
{
    const unsigned char *raw = (const unsigned char *)t->text + tok->start;
    *w++ = '"';
    if (!tok->escaped) {
        memcpy(w, raw, tok->len);
        w += tok->len;
        *w++ = '"';
        return w;
    }
    w = jtape_unescape_into(raw, tok->len, w, put_escaped);
    *w++ = '"';
    return w;
}

/* Writes the scalar token tok; returns the byte after it. */
static char *put_scalar(const struct jtape *t, const struct jtape_token *tok, char *w)
{
    switch (tok->kind) {
    case JTAPE_STRING:
        return put_string(t, tok, w);
    case JTAPE_INTEGER:
        if (tok->integer == 0) {
            *w++ = '0'; /* "-0" too, as jansson reads it */
            return w;
        }
        memcpy(w, t->text + tok->start, tok->len);
        return w + tok->len;
    case JTAPE_TRUE:
        memcpy(w, "true", 4);
        return w + 4;
    case JTAPE_FALSE:
        memcpy(w, "false", 5);
        return w + 5;
    default:
        assert(tok->kind == JTAPE_NULL);
        memcpy(w, "null", 4);
        return w + 4;
    }
}

/* An open container while a dump walks the tape. */
struct open_container {
    uint32_t end;   /* index of the token after its subtree */
    uint8_t object; /* 1 for an object, 0 for an array */
};

int jtape_dump(const struct jtape *t, uint32_t i, unsigned flags, struct buf *out)
{
    assert(t != NULL && out != NULL && i < t->count);
    assert((flags & ~JTAPE_DUMP_STRIP_NULLS) == 0);
    const struct jtape_token *tok = t->tokens;
    if (buf_reserve(out, (size_t)tok[i].len + 2) != 0)
        return -1;
    char *w = out->data + out->len;
    const int strip = (flags & JTAPE_DUMP_STRIP_NULLS) != 0;
    /* the bits a container needs for its raw text to be written as it is */
    const uint8_t verbatim = strip ? JTAPE_VERBATIM | JTAPE_VERBATIM_NULLFREE : JTAPE_VERBATIM;
    struct open_container stack[JTAPE_DUMP_DEPTH_MAX];
    int depth = 0;
    int first = 1; /* the next value is the first of its container */
    uint32_t k = i;
    const uint32_t stop = tok[i].end;
    for (;;) {
        while (depth > 0 && k == stack[depth - 1].end) {
            *w++ = stack[--depth].object ? '}' : ']';
            first = 0;
        }
        if (k == stop)
            break;
        if (depth > 0 && stack[depth - 1].object) {
            assert(tok[k].kind == JTAPE_STRING);
            if (strip && tok[k + 1].kind == JTAPE_NULL) {
                k += 2;
                continue;
            }
            if (!first)
                *w++ = ',';
            w = put_string(t, &tok[k], w);
            *w++ = ':';
            k++;
        } else if (!first) {
            *w++ = ',';
        }
        if ((tok[k].kind == JTAPE_OBJECT || tok[k].kind == JTAPE_ARRAY) &&
            (tok[k].verbatim & verbatim) == verbatim) {
            memcpy(w, t->text + tok[k].start, tok[k].len); /* its raw text is its dump */
            w += tok[k].len;
            k = tok[k].end;
            first = 0;
            continue;
        }
        if (tok[k].kind == JTAPE_OBJECT || tok[k].kind == JTAPE_ARRAY) {
            assert(depth < JTAPE_DUMP_DEPTH_MAX);
            stack[depth].end = tok[k].end;
            stack[depth].object = tok[k].kind == JTAPE_OBJECT;
            depth++;
            *w++ = tok[k].kind == JTAPE_OBJECT ? '{' : '[';
            first = 1;
        } else {
            w = put_scalar(t, &tok[k], w);
            first = 0;
        }
        k++;
    }
    assert(depth == 0);
    size_t len = (size_t)(w - out->data);
    assert(len <= out->len + tok[i].len + 2);
    out->len = len;
    out->data[len] = '\0';
    return 0;
}

int jtape_dump_string(struct buf *out, const char *s, size_t len)
{
    assert(out != NULL && (s != NULL || len == 0));
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    if (buf_append(out, "\"", 1) != 0)
        return -1;
    while (p < end) {
        const unsigned char *run = p;
        while (p < end && *p >= 0x20 && *p != '"' && *p != '\\')
            p++;
        if (buf_append(out, run, (size_t)(p - run)) != 0)
            return -1;
        if (p == end)
            break;
        char esc[6];
        size_t n;
        if (*p < 0x20) {
            n = put_control(esc, *p);
        } else {
            esc[0] = '\\';
            esc[1] = (char)*p;
            n = 2;
        }
        if (buf_append(out, esc, n) != 0)
            return -1;
        p++;
    }
    return buf_append(out, "\"", 1);
}
