/* jtape: the reader of core/jtape.h.  jtape_parse() reads a JSON text in
 * one pass into the tape, and the lookups (jtape_get, jtape_string*,
 * jtape_equal) read the tape back; jtape_dump.c writes values out.
 *
 * The parse is a loop over the text with an explicit stack of the open
 * containers' token indices (at most max_depth <= JTAPE_DEPTH_MAX, on the C
 * stack), so nesting never recurses.  Strings are checked in the same pass:
 * eight bytes at a time while they hold plain ASCII, then byte by byte for
 * escapes and UTF-8 sequences (core/utf8.h).  Every case jansson refuses,
 * and every case jtape.h declines, ends the parse with JTAPE_DEFER;
 * fuzz/fuzz_jtape.c checks the verdicts and values against jansson.
 *
 * Memory: one token array per tape, grown geometrically and kept across
 * parses; nothing else is allocated. */
#include "core/jtape.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "core/jtape_text.h"
#include "core/utf8.h"

#define JTAPE_DEPTH_MAX 64   /* the deepest max_depth a caller may ask for */
#define JTAPE_DIGITS_MAX 18  /* digits of the longest integer read */
#define JTAPE_PAIRWISE_MAX 16 /* objects of at most this many members compare keys pairwise */

const int8_t jtape_hex_plus1[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,
    ['6'] = 7,  ['7'] = 8,  ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12,
    ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16, ['A'] = 11, ['B'] = 12,
    ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

static int is_ws(unsigned char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static const unsigned char *skip_ws(const unsigned char *p, const unsigned char *end)
{
    while (p < end && is_ws(*p))
        p++;
    return p;
}

/* Grows the token array so that one more token fits. */
static int tape_grow(struct jtape *t)
{
    uint32_t cap = t->cap ? t->cap * 2 : 256;
    if (cap < t->cap)
        return -1;
    struct jtape_token *tokens = realloc(t->tokens, (size_t)cap * sizeof *tokens);
    if (!tokens)
        return -1;
    t->tokens = tokens;
    t->cap = cap;
    return 0;
}

/* The four hex digits at p as a code unit, or -1. */
static int32_t hex4(const unsigned char *p)
{
    int32_t a = jtape_hex(p[0]), b = jtape_hex(p[1]), c = jtape_hex(p[2]),
            d = jtape_hex(p[3]);
    if ((a | b | c | d) < 0)
        return -1;
    return a << 12 | b << 8 | c << 4 | d;
}

/* Checks the escape at p (a backslash); returns the byte after it, or NULL
 * when jansson refuses it or jtape declines it (\u0000). */
static const unsigned char *scan_escape(const unsigned char *p, const unsigned char *end)
{
    if (end - p < 2)
        return NULL;
    switch (p[1]) {
    case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
        return p + 2;
    case 'u':
        break;
    default:
        return NULL;
    }
    if (end - p < 6)
        return NULL;
    int32_t u = hex4(p + 2);
    if (u <= 0 || (u >= 0xdc00 && u <= 0xdfff))
        return NULL; /* refused (bad hex, a lone low surrogate) or declined (\u0000) */
    if (u < 0xd800 || u > 0xdbff)
        return p + 6;
    if (end - p < 12 || p[6] != '\\' || p[7] != 'u')
        return NULL;
    int32_t lo = hex4(p + 8);
    if (lo < 0xdc00 || lo > 0xdfff)
        return NULL;
    return p + 12;
}

/* A mask with the high bit of each byte of x that is a control character,
 * a quote, a backslash or not ASCII.  Its lowest set bit is exact (a borrow
 * only runs upwards from a byte that is flagged rightly), which is the only
 * one read. */
static inline uint64_t special_bytes(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    uint64_t quote = x ^ (ones * '"'), backslash = x ^ (ones * '\\');
    uint64_t control = (x - ones * 0x20) & ~x;
    uint64_t is_quote = (quote - ones) & ~quote;
    uint64_t is_backslash = (backslash - ones) & ~backslash;
    return (control | is_quote | is_backslash | x) & highs;
}

/* Scans the string whose first raw byte is at p, up to its closing quote;
 * returns a pointer to that quote, or NULL (DEFER).  Sets *cps to the code
 * points of the decoded value and *escaped when it holds an escape. */
static const unsigned char *scan_string(const unsigned char *p, const unsigned char *end,
                                        uint32_t *cps, uint8_t *escaped)
{
    uint32_t n = 0;
    for (;;) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        while (end - p >= 8) {
            uint64_t x;
            memcpy(&x, p, 8);
            uint64_t m = special_bytes(x);
            if (m) {
                unsigned k = (unsigned)__builtin_ctzll(m) / 8;
                p += k;
                n += k;
                break;
            }
            p += 8;
            n += 8;
        }
#endif
        if (p == end)
            return NULL;
        unsigned char c = *p;
        if (c == '"') {
            *cps = n;
            return p;
        }
        if (c < 0x20)
            return NULL;
        n++;
        if (c == '\\') {
            *escaped = 1;
            p = scan_escape(p, end);
            if (!p)
                return NULL;
        } else if (c < 0x80) {
            p++;
        } else {
            size_t len = utf8_seq_len(p, (size_t)(end - p));
            if (!len)
                return NULL;
            p += len;
        }
    }
}

/* Scans the integer at p; returns the byte after it, or NULL (DEFER: not
 * an integer jansson reads, a real, or too many digits). */
static const unsigned char *scan_integer(const unsigned char *p, const unsigned char *end,
                                         int64_t *value)
{
    int negative = *p == '-';
    if (negative)
        p++;
    const unsigned char *digits = p;
    uint64_t v = 0;
    if (p < end && *p == '0') {
        p++;
    } else {
        while (p < end && (unsigned)(*p - '0') < 10 && p - digits <= JTAPE_DIGITS_MAX) {
            v = v * 10 + (unsigned)(*p - '0');
            p++;
        }
    }
    if (p == digits || p - digits > JTAPE_DIGITS_MAX)
        return NULL;
    if (p < end && ((unsigned)(*p - '0') < 10 || *p == '.' || *p == 'e' || *p == 'E'))
        return NULL;
    *value = negative ? -(int64_t)v : (int64_t)v;
    return p;
}

/* Whether the keys of object obj (its subtree ends at the last token) hold
 * a duplicate.  Keys never hold escapes, so raw bytes compare. */
static int has_duplicate_key(const struct jtape *t, uint32_t obj)
{
    const struct jtape_token *tok = t->tokens;
    uint32_t members = tok[obj].count;
    if (members < 2)
        return 0;
    uint32_t keys[JTAPE_MEMBERS_MAX];
    uint32_t n = 0;
    for (uint32_t k = obj + 1; k < tok[obj].end; k = tok[k + 1].end)
        keys[n++] = k;
    assert(n == members);
    const char *text = t->text;
    if (n <= JTAPE_PAIRWISE_MAX) {
        for (uint32_t a = 1; a < n; a++)
            for (uint32_t b = 0; b < a; b++)
                if (tok[keys[a]].len == tok[keys[b]].len &&
                    memcmp(text + tok[keys[a]].start, text + tok[keys[b]].start,
                           tok[keys[a]].len) == 0)
                    return 1;
        return 0;
    }
    /* An open-addressed table twice the largest object's size. */
    enum { SLOTS = 2 * JTAPE_MEMBERS_MAX };
    uint16_t slot[SLOTS];
    memset(slot, 0xff, sizeof slot);
    for (uint32_t a = 0; a < n; a++) {
        const struct jtape_token *k = &tok[keys[a]];
        const unsigned char *s = (const unsigned char *)text + k->start;
        uint32_t h = 2166136261u;
        for (uint32_t i = 0; i < k->len; i++)
            h = (h ^ s[i]) * 16777619u;
        for (uint32_t i = h % SLOTS;; i = (i + 1) % SLOTS) {
            if (slot[i] == 0xffff) {
                slot[i] = (uint16_t)a;
                break;
            }
            const struct jtape_token *o = &tok[keys[slot[i]]];
            if (o->len == k->len && memcmp(text + o->start, s, k->len) == 0)
                return 1;
        }
    }
    return 0;
}

/* Appends a token of the given kind starting at p; its index, or
 * UINT32_MAX out of memory. */
static inline uint32_t push_token(struct jtape *t, uint8_t kind, uint32_t start)
{
    if (t->count == t->cap && tape_grow(t) != 0)
        return UINT32_MAX;
    uint32_t i = t->count++;
    struct jtape_token *tok = &t->tokens[i];
    tok->kind = kind;
    tok->escaped = 0;
    tok->start = start;
    tok->len = 0;
    tok->end = i + 1;
    tok->count = 0;
    tok->integer = 0;
    return i;
}

static int parse_text(struct jtape *t, const unsigned char *base, const unsigned char *end,
                      int max_depth)
{
    uint32_t stack[JTAPE_DEPTH_MAX]; /* the open containers' tokens */
    int depth = 0;
    uint32_t i, top;
    const unsigned char *p = skip_ws(base, end), *q;

    if (p == end || (*p != '{' && *p != '['))
        return JTAPE_DEFER;

value: /* p is at a value's first byte, its container already counts it */
    if (p == end)
        return JTAPE_DEFER;
    switch (*p) {
    case '{':
    case '[':
        if (depth == max_depth)
            return JTAPE_DEFER;
        i = push_token(t, *p == '{' ? JTAPE_OBJECT : JTAPE_ARRAY, (uint32_t)(p - base));
        if (i == UINT32_MAX)
            return JTAPE_ENOMEM;
        stack[depth++] = i;
        p = skip_ws(p + 1, end);
        if (p == end)
            return JTAPE_DEFER;
        if (t->tokens[i].kind == JTAPE_OBJECT) {
            if (*p == '}')
                goto close;
            goto key;
        }
        if (*p == ']')
            goto close;
        t->tokens[i].count++;
        goto value;
    case '"': {
        uint32_t cps = 0;
        uint8_t escaped = 0;
        q = scan_string(p + 1, end, &cps, &escaped);
        if (!q)
            return JTAPE_DEFER;
        i = push_token(t, JTAPE_STRING, (uint32_t)(p + 1 - base));
        if (i == UINT32_MAX)
            return JTAPE_ENOMEM;
        t->tokens[i].len = (uint32_t)(q - p - 1);
        t->tokens[i].count = cps;
        t->tokens[i].escaped = escaped;
        p = q + 1;
        goto after_value;
    }
    case 't':
        if (end - p < 4 || memcmp(p, "true", 4) != 0)
            return JTAPE_DEFER;
        i = push_token(t, JTAPE_TRUE, (uint32_t)(p - base));
        if (i == UINT32_MAX)
            return JTAPE_ENOMEM;
        t->tokens[i].len = 4;
        p += 4;
        goto after_scalar;
    case 'f':
        if (end - p < 5 || memcmp(p, "false", 5) != 0)
            return JTAPE_DEFER;
        i = push_token(t, JTAPE_FALSE, (uint32_t)(p - base));
        if (i == UINT32_MAX)
            return JTAPE_ENOMEM;
        t->tokens[i].len = 5;
        p += 5;
        goto after_scalar;
    case 'n':
        if (end - p < 4 || memcmp(p, "null", 4) != 0)
            return JTAPE_DEFER;
        i = push_token(t, JTAPE_NULL, (uint32_t)(p - base));
        if (i == UINT32_MAX)
            return JTAPE_ENOMEM;
        t->tokens[i].len = 4;
        p += 4;
        goto after_scalar;
    default: {
        if (*p != '-' && (unsigned)(*p - '0') >= 10)
            return JTAPE_DEFER;
        int64_t v;
        q = scan_integer(p, end, &v);
        if (!q)
            return JTAPE_DEFER;
        i = push_token(t, JTAPE_INTEGER, (uint32_t)(p - base));
        if (i == UINT32_MAX)
            return JTAPE_ENOMEM;
        t->tokens[i].len = (uint32_t)(q - p);
        t->tokens[i].integer = v;
        p = q;
        goto after_scalar;
    }
    }

after_scalar: /* an integer or a literal ended just before p */
    /* jansson reads one byte past a number or a literal and puts it back;
     * a NUL put back that way is dropped from its stream, so one NUL right
     * after one is skipped, as if it were not there ("[1\0,2]" is [1,2]). */
    if (p < end && *p == '\0')
        p++;
    /* fall through */
after_value: /* a value ended just before p; a letter or digit right here is refused */
    if (depth == 0)
        goto done;
    p = skip_ws(p, end);
    if (p == end)
        return JTAPE_DEFER;
    top = stack[depth - 1];
    if (*p == ',') {
        p = skip_ws(p + 1, end);
        if (t->tokens[top].kind == JTAPE_OBJECT)
            goto key;
        t->tokens[top].count++;
        goto value;
    }
    if (*p == (t->tokens[top].kind == JTAPE_OBJECT ? '}' : ']'))
        goto close;
    return JTAPE_DEFER;

key: /* p is where an object's next key must start */
    if (p == end || *p != '"')
        return JTAPE_DEFER;
    top = stack[depth - 1];
    if (++t->tokens[top].count > JTAPE_MEMBERS_MAX)
        return JTAPE_DEFER;
    {
        uint32_t cps = 0;
        uint8_t escaped = 0;
        q = scan_string(p + 1, end, &cps, &escaped);
        if (!q || escaped)
            return JTAPE_DEFER;
        i = push_token(t, JTAPE_STRING, (uint32_t)(p + 1 - base));
        if (i == UINT32_MAX)
            return JTAPE_ENOMEM;
        t->tokens[i].len = (uint32_t)(q - p - 1);
        t->tokens[i].count = cps;
    }
    p = skip_ws(q + 1, end);
    if (p == end || *p != ':')
        return JTAPE_DEFER;
    p = skip_ws(p + 1, end);
    goto value;

close: /* p is at the closing bracket of the innermost container */
    top = stack[--depth];
    {
        struct jtape_token *c = &t->tokens[top];
        c->end = t->count;
        c->len = (uint32_t)(p - base) - c->start + 1;
        if (c->kind == JTAPE_OBJECT && has_duplicate_key(t, top))
            return JTAPE_DEFER;
    }
    p++;
    goto after_value;

done:
    p = skip_ws(p, end);
    return p == end ? JTAPE_OK : JTAPE_DEFER;
}

int jtape_parse(struct jtape *t, const char *text, size_t len, int max_depth)
{
    assert(t != NULL && (text != NULL || len == 0));
    assert(max_depth >= 1 && max_depth <= JTAPE_DEPTH_MAX);
    t->text = text;
    t->text_len = len;
    t->count = 0;
    if (len == 0 || len > JTAPE_TEXT_MAX)
        return JTAPE_DEFER;
    const unsigned char *base = (const unsigned char *)text;
    int rc = parse_text(t, base, base + len, max_depth);
    if (rc != JTAPE_OK)
        t->count = 0;
    return rc;
}

void jtape_free(struct jtape *t)
{
    assert(t != NULL);
    free(t->tokens);
    *t = (struct jtape)JTAPE_INIT;
}

size_t jtape_decode(const unsigned char *raw, size_t len, char *w)
{
    char *start = w;
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
        w += jtape_utf8_put(w, cp);
    }
    return (size_t)(w - start);
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
    *len = jtape_decode(raw, tok->len, w);
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
