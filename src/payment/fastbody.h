/* fastbody: the fast path of a create's, a replace's or a patch's request
 * body.  The body is read into a tape (core/jtape.h), checked against the
 * very rules of validate.h, and the stored document is written straight
 * from the tape: no jansson tree is built or freed.  A patch is merged into
 * the stored document on tapes first (payment_fastbody_merge), and the
 * merged attributes are then checked as a replace's.
 *
 * It decides only the common case, a body jtape reads and that breaks no
 * rule.  Anything else is PAYMENT_FASTBODY_DEFER and the caller takes the
 * general path (payment_body_parse, payment_validate_data, payment_doc_new,
 * payment_doc_row), whose verdict and messages stand; the fast path never
 * refuses a body itself.  fuzz/fuzz_fastbody.c holds it to that on every
 * input: whenever it says OK, the general path accepts the body for the same
 * mode, and payment_fastbody_doc gives the bytes and the row that
 * payment_doc_new + payment_doc_row give (for a patch, that revision_next
 * gives and payment_doc_row writes).
 *
 * Threads: a fastbody belongs to one thread at a time.  Ownership: it owns
 * its tape and scratch memory and borrows the body, which must outlive it.
 * Errors: enum payment_fastbody_err, here only. */
#ifndef PAYMENT_FASTBODY_H
#define PAYMENT_FASTBODY_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/jtape.h"
#include "payment/store.h"
#include "payment/validate.h"

enum payment_fastbody_err {
    PAYMENT_FASTBODY_OK = 0,
    PAYMENT_FASTBODY_DEFER = -1,  /* take the general path */
    PAYMENT_FASTBODY_ENOMEM = -2, /* out of memory */
};

struct payment_fastbody {
    struct jtape tape;      /* the body read (after a merge, the merged body) */
    struct buf scratch;     /* decoded strings the row's pointers point into */
    struct jtape patch;     /* after a merge: the patch as the request sent it */
    struct buf merged;      /* after a merge: the text tape reads, the merged body */
    uint32_t data;          /* token of the body's "data" object */
    uint32_t id;            /* tokens of data's members; 0 when absent or null */
    uint32_t version;
    uint32_t organisation_id;
    uint32_t type;
    uint32_t attributes;
    uint32_t relationships;
};

#define PAYMENT_FASTBODY_INIT {JTAPE_INIT, BUF_INIT, JTAPE_INIT, BUF_INIT, 0, 0, 0, 0, 0, 0, 0}

/* Reads body (len bytes) and checks it as payment_body_parse and then
 * payment_validate_data(v, mode, data) would, for any mode.  OK only when
 * both would accept it; fills fb's tokens.  Reuses fb's memory from an
 * earlier read.  A patch's attributes are not checked here (a merge patch:
 * the merged result is, by payment_fastbody_merge). */
int payment_fastbody_read(struct payment_fastbody *fb, const payment_validator *v,
                          enum payment_check mode, const char *body, size_t len);

/* After payment_fastbody_read(PAYMENT_CHECK_PATCH) said OK: merges the
 * patch into the stored document `stored` (a tape of it, whose root is the
 * document object) as revision_next(REVISION_PATCH) does: attributes and
 * relationships merged by RFC 7396 in jansson's member order (a member
 * replaced keeps its place, new members follow in the patch's order, a
 * non-object member a patch object merges into becomes {}), a null
 * relationships removing them; then checks the merged attributes, nulls
 * stripped, as a replace's.  OK leaves fb as a replace's read leaves it:
 * the id, version, organisation_id and type tokens are the patch's, the
 * attributes and relationships the merged ones, all on fb->tape (over
 * fb->merged); payment_fastbody_doc then writes the next document.  DEFER
 * when the general path must decide (a problem to report, a stored
 * document it does not read), and fb's tokens are then cleared; ENOMEM.
 * The body read by payment_fastbody_read must still be alive (fb->patch
 * borrows it). */
int payment_fastbody_merge(struct payment_fastbody *fb, const payment_validator *v,
                           const struct jtape *stored);

/* The decoded value of string token tok of the body (see jtape_string):
 * NULL out of memory, or when tok is 0 or not a string.  Call it before
 * payment_fastbody_doc: a decoded value goes to fb->scratch, which then
 * holds the row's strings too, and growing it would move them. */
const char *payment_fastbody_string(struct payment_fastbody *fb, uint32_t tok, size_t *len);

/* What a stored document holds beyond the body's type, attributes and
 * relationships; everything borrowed. */
struct payment_fastbody_base {
    const char *fallback_type;   /* the type when the body names none or "" */
    const char *id;              /* canonical UUID */
    int64_t version;             /* the version the document holds */
    const char *organisation_id; /* canonical UUID */
    const char *created_on;      /* the stored text of the creation time */
    int64_t created_ms;          /* the row's creation time */
    int64_t modified_ms;         /* the row's modification time (modified_on) */
};

/* Writes the document payment_doc_new(type, id, version, org, created_on,
 * modified_ms, attributes with nulls stripped, non-null relationships)
 * followed by payment_doc_row(doc, created_ms, modified_ms) would give, after
 * a successful payment_fastbody_read: *text (malloc'd, the caller frees it)
 * and *row, whose pointers point into *text and fb, which must both outlive
 * it.  Returns PAYMENT_FASTBODY_OK or PAYMENT_FASTBODY_ENOMEM. */
int payment_fastbody_doc(struct payment_fastbody *fb, const struct payment_fastbody_base *base,
                         struct payment_row *row, char **text);

/* Releases fb's memory; it is then PAYMENT_FASTBODY_INIT again. */
void payment_fastbody_free(struct payment_fastbody *fb);

#endif
