/* jtape: the parser of core/jtape.h.  jtape_parse() reads a JSON text in
 * one pass into the tape; jtape_read.c holds the lookups that read the tape
 * back (jtape_get, jtape_string*, jtape_equal), jtape_dump.c the writer.
 *
 * The parse is a loop over the text with an explicit stack of the open
 * containers' token indices (at most max_depth <= JTAPE_DEPTH_MAX, on the C
 * stack), so nesting never recurses.  Strings are checked in the same pass:
 * sixteen bytes at a time (SSE2) while they hold plain ASCII, then byte by
 * byte for escapes and UTF-8 sequences (core/utf8.h).  Duplicate keys are
 * caught as each key is read: a per-object filter of key fingerprints sends
 * only a possible repeat to a comparison with the object's earlier keys.
 * Every case jansson refuses, and every case jtape.h declines, ends the
 * parse with JTAPE_DEFER; fuzz/fuzz_jtape.c checks the verdicts and values
 * against jansson.
 *
 * Memory: one token array per tape, grown geometrically and kept across
 * parses; nothing else is allocated. */
#include "core/jtape.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "core/jtape_text.h"
#include "core/utf8.h"

#define JTAPE_DEPTH_MAX 64   /* the deepest max_depth a caller may ask for */
#define JTAPE_DIGITS_MAX 18  /* digits of the longest integer read */

const int8_t jtape_hex_plus1[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,
    ['6'] = 7,  ['7'] = 8,  ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12,
    ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16, ['A'] = 11, ['B'] = 12,
    ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

/* Whether c is whitespace to JSON (and jansson): space, tab, LF, CR. */
static inline int is_ws(unsigned char c)
{
    const uint64_t ws = UINT64_C(1) << ' ' | UINT64_C(1) << '\t' | UINT64_C(1) << '\n' |
                        UINT64_C(1) << '\r';
    return c <= ' ' && (ws >> c & 1);
}

static inline const unsigned char *skip_ws(const unsigned char *p, const unsigned char *end)
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

/* The offset of the first byte among the 16 at p that is a control
 * character, a quote, a backslash or not ASCII; 16 when there is none. */
static inline unsigned first_special16(const unsigned char *p)
{
#ifdef __SSE2__
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
    /* Signed, bytes of 0x80 and above are negative: below 0x20 too. */
    __m128i special = _mm_or_si128(_mm_cmplt_epi8(x, _mm_set1_epi8(0x20)),
                                   _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('"')),
                                                _mm_cmpeq_epi8(x, _mm_set1_epi8('\\'))));
    unsigned mask = (unsigned)_mm_movemask_epi8(special);
    return mask ? (unsigned)__builtin_ctz(mask) : 16;
#else
    for (unsigned k = 0; k < 16; k++)
        if (p[k] < 0x20 || p[k] >= 0x80 || p[k] == '"' || p[k] == '\\')
            return k;
    return 16;
#endif
}

/* Scans the string whose first raw byte is at p, up to its closing quote;
 * returns a pointer to that quote, or NULL (DEFER).  Sets *cps to the code
 * points of the decoded value and *escaped when it holds an escape. */
static inline __attribute__((always_inline)) const unsigned char *
scan_string(const unsigned char *p, const unsigned char *end, uint32_t *cps, uint8_t *escaped)
{
    uint32_t n = 0;
    for (;;) {
        while (end - p >= 16) {
            unsigned k = first_special16(p);
            p += k;
            n += k;
            if (k < 16)
                break;
        }
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

/* An object's keys seen so far, as a 128-bit filter of their fingerprints:
 * a key whose bit is clear is new; only a key whose bit is set is compared
 * with the object's earlier keys.  Keys never hold escapes, so raw bytes
 * compare. */
struct key_filter {
    uint64_t bits[2];
};

/* The filter bit of the raw key s (len bytes). */
static inline unsigned key_bit(const unsigned char *s, uint32_t len)
{
    if (len == 0)
        return 0;
    uint32_t h = len * 0x9e3779b1u ^ (uint32_t)s[0] * 0x85ebca6bu ^
                 (uint32_t)s[len - 1] * 0xc2b2ae35u ^ (uint32_t)s[len / 2] * 0x27d4eb2fu;
    return h >> 25;
}

/* Whether key token key repeats one of the earlier keys of object obj. */
static int key_repeats(const struct jtape_token *toks, const unsigned char *base, uint32_t obj,
                       uint32_t key)
{
    const struct jtape_token *k = &toks[key];
    for (uint32_t m = obj + 1; m < key; m = toks[m + 1].end)
        if (toks[m].len == k->len && memcmp(base + toks[m].start, base + k->start, k->len) == 0)
            return 1;
    return 0;
}

/* A container open while the text is read. */
struct open_container {
    uint32_t token;           /* its token */
    uint32_t count;           /* members or items so far */
    int object;               /* 1 for an object, 0 for an array */
    uint8_t verbatim;         /* JTAPE_VERBATIM* bits still true of it */
    struct key_filter filter; /* objects: the keys so far */
};

/* skip_ws inside container top: whitespace there means its raw text is
 * not its dump. */
static inline const unsigned char *skip_ws_in(const unsigned char *p, const unsigned char *end,
                                              struct open_container *top)
{
    const unsigned char *q = skip_ws(p, end);
    if (q != p)
        top->verbatim &= (uint8_t)~JTAPE_VERBATIM;
    return q;
}

/* Makes token *i, the next one, a value of the given kind starting at
 * `start`; grows the array when full (out of memory returns from the
 * parse). */
#define NEW_TOKEN(kind_, start_)                                                         \
    do {                                                                                 \
        if (n == cap) {                                                                  \
            t->count = n;                                                                \
            if (tape_grow(t) != 0)                                                       \
                return JTAPE_ENOMEM;                                                     \
            toks = t->tokens;                                                            \
            cap = t->cap;                                                                \
        }                                                                                \
        i = n++;                                                                         \
        toks[i] = (struct jtape_token){.kind = (kind_), .start = (start_), .end = i + 1}; \
    } while (0)

/* The parse proper: a loop over the text whose states are the labels
 * below, with the open containers on `stack`.  The token array is read
 * through locals (toks, n, cap) and stored back into t at the end. */
static int parse_text(struct jtape *t, const unsigned char *base, const unsigned char *end,
                      int max_depth)
{
    struct open_container stack[JTAPE_DEPTH_MAX];
    struct open_container *top = NULL; /* the innermost open container */
    int depth = 0;
    struct jtape_token *toks = t->tokens;
    uint32_t n = 0, cap = t->cap, i;
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
        NEW_TOKEN(*p == '{' ? JTAPE_OBJECT : JTAPE_ARRAY, (uint32_t)(p - base));
        top = &stack[depth++];
        top->token = i;
        top->count = 0;
        top->object = *p == '{';
        top->verbatim = JTAPE_VERBATIM | JTAPE_VERBATIM_NULLFREE;
        p = skip_ws_in(p + 1, end, top);
        if (p == end)
            return JTAPE_DEFER;
        if (top->object) {
            top->filter = (struct key_filter){{0, 0}};
            if (*p == '}')
                goto close;
            goto key;
        }
        if (*p == ']')
            goto close;
        top->count++;
        goto value;
    case '"': {
        uint32_t cps = 0;
        uint8_t escaped = 0;
        q = scan_string(p + 1, end, &cps, &escaped);
        if (!q)
            return JTAPE_DEFER;
        NEW_TOKEN(JTAPE_STRING, (uint32_t)(p + 1 - base));
        toks[i].len = (uint32_t)(q - p - 1);
        toks[i].count = cps;
        toks[i].escaped = escaped;
        if (escaped)
            top->verbatim &= (uint8_t)~JTAPE_VERBATIM; /* jansson writes it its own way */
        p = q + 1;
        goto after_value;
    }
    case 't':
        if (end - p < 4 || memcmp(p, "true", 4) != 0)
            return JTAPE_DEFER;
        NEW_TOKEN(JTAPE_TRUE, (uint32_t)(p - base));
        toks[i].len = 4;
        p += 4;
        goto after_scalar;
    case 'f':
        if (end - p < 5 || memcmp(p, "false", 5) != 0)
            return JTAPE_DEFER;
        NEW_TOKEN(JTAPE_FALSE, (uint32_t)(p - base));
        toks[i].len = 5;
        p += 5;
        goto after_scalar;
    case 'n':
        if (end - p < 4 || memcmp(p, "null", 4) != 0)
            return JTAPE_DEFER;
        NEW_TOKEN(JTAPE_NULL, (uint32_t)(p - base));
        toks[i].len = 4;
        if (top->object)
            top->verbatim &= (uint8_t)~JTAPE_VERBATIM_NULLFREE;
        p += 4;
        goto after_scalar;
    default: {
        if (*p != '-' && (unsigned)(*p - '0') >= 10)
            return JTAPE_DEFER;
        int64_t v;
        q = scan_integer(p, end, &v);
        if (!q)
            return JTAPE_DEFER;
        NEW_TOKEN(JTAPE_INTEGER, (uint32_t)(p - base));
        toks[i].len = (uint32_t)(q - p);
        toks[i].integer = v;
        if (v == 0 && *p == '-')
            top->verbatim &= (uint8_t)~JTAPE_VERBATIM; /* "-0" is written "0" */
        p = q;
        goto after_scalar;
    }
    }

after_scalar: /* an integer or a literal ended just before p */
    /* jansson reads one byte past a number or a literal and puts it back;
     * a NUL put back that way is dropped from its stream, so one NUL right
     * after one is skipped, as if it were not there ("[1\0,2]" is [1,2]). */
    if (p < end && *p == '\0') {
        top->verbatim &= (uint8_t)~JTAPE_VERBATIM;
        p++;
    }
    /* fall through */
after_value: /* a value ended just before p; a letter or digit right here is refused */
    if (depth == 0)
        goto done;
    p = skip_ws_in(p, end, top);
    if (p == end)
        return JTAPE_DEFER;
    if (*p == ',') {
        p = skip_ws_in(p + 1, end, top);
        if (top->object)
            goto key;
        top->count++;
        goto value;
    }
    if (*p == (top->object ? '}' : ']'))
        goto close;
    return JTAPE_DEFER;

key: /* p is where an object's next key must start */
    if (p == end || *p != '"')
        return JTAPE_DEFER;
    if (++top->count > JTAPE_MEMBERS_MAX)
        return JTAPE_DEFER;
    {
        uint32_t cps = 0;
        uint8_t escaped = 0;
        q = scan_string(p + 1, end, &cps, &escaped);
        if (!q || escaped)
            return JTAPE_DEFER;
        NEW_TOKEN(JTAPE_STRING, (uint32_t)(p + 1 - base));
        uint32_t len = (uint32_t)(q - p - 1);
        toks[i].len = len;
        toks[i].count = cps;
        unsigned bit = key_bit(p + 1, len);
        uint64_t *word = &top->filter.bits[bit >> 6], mask = UINT64_C(1) << (bit & 63);
        if ((*word & mask) && key_repeats(toks, base, top->token, i))
            return JTAPE_DEFER;
        *word |= mask;
    }
    p = skip_ws_in(q + 1, end, top);
    if (p == end || *p != ':')
        return JTAPE_DEFER;
    p = skip_ws_in(p + 1, end, top);
    goto value;

close: /* p is at the closing bracket of the innermost container */
    {
        struct jtape_token *c = &toks[top->token];
        c->end = n;
        c->count = top->count;
        c->len = (uint32_t)(p - base) - c->start + 1;
        c->verbatim = top->verbatim;
    }
    depth--;
    if (depth > 0)
        stack[depth - 1].verbatim &= top->verbatim;
    top = depth > 0 ? &stack[depth - 1] : NULL;
    p++;
    goto after_value;

done:
    t->count = n;
    p = skip_ws(p, end);
    return p == end ? JTAPE_OK : JTAPE_DEFER;
}

#undef NEW_TOKEN

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
