/* jtape: a strict JSON reader for the request hot path.  It reads one JSON
 * text into a flat array of tokens (a "tape") in document order, without an
 * allocation per value, and writes values back exactly as jansson's
 * json_dumps(JSON_COMPACT) writes the tree json_loadb would have built.
 *
 * It is a fast path in front of jansson's
 * json_loadb(text, len, JSON_REJECT_DUPLICATES), never a second opinion:
 *   - it says JTAPE_OK only for texts jansson accepts, and then every value
 *     on the tape is the one jansson would hold (same strings after
 *     decoding, same integers, same member order, no duplicate keys);
 *   - anything jansson refuses, and anything jtape does not handle itself,
 *     is JTAPE_DEFER: the caller asks jansson, whose verdict and message
 *     stand.  Declined on purpose: real numbers (a fraction or an
 *     exponent), integers of more than 18 digits, the escape \u0000, keys
 *     holding any escape, nesting deeper than max_depth, an object of more
 *     than JTAPE_MEMBERS_MAX members, texts over JTAPE_TEXT_MAX bytes.
 * So a refusal's wording is always jansson's.  fuzz/fuzz_jtape.c holds the
 * tape to that on every input: where jtape says OK, jansson accepts, the
 * values agree, and jtape_dump's bytes equal json_dumps'.
 *
 * Layout: tokens[0] is the root.  A container's members follow it: an
 * array's items one after another, an object's members as a key (a STRING
 * token) directly followed by its value.  Every token's `end` is the index
 * just past its value and everything inside it, so a subtree is skipped in
 * one step:
 *     for (uint32_t k = obj + 1; k < t->tokens[obj].end; k = t->tokens[k + 1].end)
 *         key k, value k + 1
 *     for (uint32_t i = arr + 1; i < t->tokens[arr].end; i = t->tokens[i].end)
 *         item i
 *
 * Threads: a tape belongs to one thread at a time; no global state.
 * Ownership: the tape owns its tokens, borrows the text (which must outlive
 * every use of the tape).  Errors: enum jtape_err, here only. */
#ifndef CORE_JTAPE_H
#define CORE_JTAPE_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum jtape_err {
    JTAPE_OK = 0,
    JTAPE_DEFER = -1,  /* not read: ask jansson (see above) */
    JTAPE_ENOMEM = -2, /* out of memory */
};

enum jtape_kind {
    JTAPE_OBJECT,
    JTAPE_ARRAY,
    JTAPE_STRING,
    JTAPE_INTEGER,
    JTAPE_TRUE,
    JTAPE_FALSE,
    JTAPE_NULL,
};

#define JTAPE_MEMBERS_MAX 256          /* members of one object jtape reads */
#define JTAPE_TEXT_MAX (64u << 20)     /* longest text jtape reads, bytes */

struct jtape_token {
    uint8_t kind;    /* enum jtape_kind */
    uint8_t escaped; /* strings: the raw text holds a backslash escape */
    uint8_t verbatim; /* containers: JTAPE_VERBATIM* bits, when the raw text is the dump */
    uint32_t start;  /* offset in the text: strings, the byte after the opening
                        quote; other values, their first byte */
    uint32_t len;    /* strings: raw bytes between the quotes; integers: bytes of
                        the token; containers: bytes from bracket to bracket */
    uint32_t end;    /* index of the first token after this value's subtree */
    uint32_t count;  /* objects: members; arrays: items; strings: code points
                        of the decoded value; others 0 */
    int64_t integer; /* integers: the value ("-0" is 0, as for jansson) */
};

/* A container's raw text, bracket to bracket, is byte for byte what
 * jtape_dump writes of it: no whitespace inside, no escape, no "-0". */
#define JTAPE_VERBATIM 1u
/* ... and no object inside it, itself included, has a null member, so the
 * raw text is the dump with JTAPE_DUMP_STRIP_NULLS too. */
#define JTAPE_VERBATIM_NULLFREE 2u

struct jtape {
    const char *text;           /* the text read, borrowed */
    size_t text_len;            /* its bytes */
    struct jtape_token *tokens; /* owned; tokens[0] is the root */
    uint32_t count;             /* tokens in use */
    uint32_t cap;               /* tokens allocated */
};

#define JTAPE_INIT {NULL, 0, NULL, 0, 0}

/* Reads text (len bytes) as one JSON value whose root is an object or an
 * array, nested at most max_depth levels (the root is level 1), with only
 * whitespace around it.  Reuses the tape's token memory from an earlier
 * parse.  Returns JTAPE_OK, JTAPE_DEFER or JTAPE_ENOMEM; on anything but OK
 * the tape holds no tokens (count 0). */
int jtape_parse(struct jtape *t, const char *text, size_t len, int max_depth);

/* Releases the tokens; the tape is then JTAPE_INIT again. */
void jtape_free(struct jtape *t);

/* The token index of the value of member key (key_len bytes, compared with
 * the decoded key) of object obj, or 0 when there is none (0 is the root,
 * never a member's value).  obj must be an object token. */
uint32_t jtape_get(const struct jtape *t, uint32_t obj, const char *key, size_t key_len);

/* Whether string token i, decoded, is exactly the len bytes of s. */
int jtape_string_eq(const struct jtape *t, uint32_t i, const char *s, size_t len);

/* The decoded value of string token i: when it holds no escape, a pointer
 * into the text (*len bytes, not NUL-terminated) and scratch is untouched;
 * otherwise the value is appended to scratch (NUL-terminated) and the
 * pointer is into scratch, valid until scratch changes.  NULL out of
 * memory. */
const char *jtape_string(const struct jtape *t, uint32_t i, struct buf *scratch, size_t *len);

/* Appends value i as json_dumps(JSON_COMPACT) writes it.  With
 * JTAPE_DUMP_STRIP_NULLS, every object member whose value is null is left
 * out, at any depth, including objects inside arrays (null array items
 * stay): the bytes json_dumps gives after validate.h's
 * payment_attributes_strip_nulls.  Returns 0, or -1 out of memory (the
 * buffer is then failed). */
#define JTAPE_DUMP_STRIP_NULLS 1u
int jtape_dump(const struct jtape *t, uint32_t i, unsigned flags, struct buf *out);

/* Appends the len bytes of s (valid UTF-8 with no NUL) as a JSON string,
 * quotes included, escaped as json_dumps escapes it.  0, or -1 out of
 * memory. */
int jtape_dump_string(struct buf *out, const char *s, size_t len);

/* Whether value i of a equals value j of b as json_equal() judges the trees
 * jansson would build: objects member by member in any order, arrays item
 * by item, strings decoded. */
int jtape_equal(const struct jtape *a, uint32_t i, const struct jtape *b, uint32_t j);

#endif
