/* fastbody_merge: payment_fastbody_merge, a patch merged into the stored
 * document on tapes, as revision_next(REVISION_PATCH) merges it through
 * jansson (merge.c), and the result read back as a replace's body.
 *
 * The merged body is written as text and read by payment_fastbody_read
 * (REPLACE), so the merged attributes meet every rule a replace's meet,
 * checked by the same code:
 *     {"data":{["id":I,]["version":V,]"organisation_id":O,["type":T,]
 *              "attributes":A[,"relationships":R]}}
 * I, V and T are the patch's members when given and not null, O the
 * patch's or else the stored document's, all copied as their raw text; A
 * and R are merged.
 *
 * Member order, which the stored document's bytes depend on: jansson's
 * objects keep insertion order, json_object_setn_new on a key present
 * replaces its value in place and json_object_deln removes it.  So merging
 * patch object P into target object T gives T's members in T's order, each
 * kept (P does not name it), left out (P's value is null), merged (P's is
 * an object: into T's member when that is an object, else into {}) or
 * replaced (P's is any other value); then P's members T lacks, in P's
 * order, null ones left out and objects merged into {} (which drops their
 * null members at every depth).  A patch cannot name a key twice (jtape
 * defers duplicates), so a member is never removed and added back.
 *
 * Keys are compared as raw bytes: jtape reads no key holding an escape, so
 * a key's raw text is its decoded value.  Values are copied as raw text
 * (whitespace and escapes included): the read that follows normalises them.
 *
 * Invariant: OK only when revision_next would give a next version; a
 * stored document without the members the merge needs, or a result that
 * breaks a rule, is DEFER and the general path answers. */
#include "payment/fastbody.h"

#include <assert.h>
#include <string.h>

/* The raw text of value i of t, appended to out. */
static int merge_raw(struct buf *out, const struct jtape *t, uint32_t i)
{
    const struct jtape_token *v = &t->tokens[i];
    switch (v->kind) {
    case JTAPE_STRING:
        return buf_append(out, t->text + v->start - 1, (size_t)v->len + 2); /* the quotes */
    case JTAPE_TRUE:
        return buf_append(out, "true", 4);
    case JTAPE_FALSE:
        return buf_append(out, "false", 5);
    case JTAPE_NULL:
        return buf_append(out, "null", 4);
    default: /* an integer's digits, a container bracket to bracket */
        return buf_append(out, t->text + v->start, v->len);
    }
}

/* Appends `,"name":` (a member of data the merge writes itself). */
static int merge_name(struct buf *out, const char *name)
{
    return buf_append(out, ",\"", 2) | buf_puts(out, name) | buf_append(out, "\":", 2);
}

/* Appends `"key":` for key token k of t, after a comma unless *first. */
static int merge_key(struct buf *out, int *first, const struct jtape *t, uint32_t k)
{
    const struct jtape_token *key = &t->tokens[k];
    assert(key->kind == JTAPE_STRING && !key->escaped);
    int rc = *first ? 0 : buf_append(out, ",", 1);
    *first = 0;
    rc |= buf_append(out, t->text + key->start - 1, (size_t)key->len + 2);
    return rc | buf_append(out, ":", 1);
}

/* The value of key token k of t in object obj of u (0 when obj is 0). */
static uint32_t merge_find(const struct jtape *u, uint32_t obj, const struct jtape *t, uint32_t k)
{
    return obj ? jtape_get(u, obj, t->text + t->tokens[k].start, t->tokens[k].len) : 0;
}

/* Appends object pobj of p merged into object tobj of t (0: into {}). */
static int merge_object(struct buf *out, const struct jtape *t, uint32_t tobj,
                        const struct jtape *p, uint32_t pobj)
{
    assert(p->tokens[pobj].kind == JTAPE_OBJECT);
    assert(tobj == 0 || t->tokens[tobj].kind == JTAPE_OBJECT);
    int first = 1;
    int rc = buf_append(out, "{", 1);
    for (uint32_t k = tobj ? tobj + 1 : 0; tobj && k < t->tokens[tobj].end;
         k = t->tokens[k + 1].end) {
        uint32_t pv = merge_find(p, pobj, t, k);
        if (pv && p->tokens[pv].kind == JTAPE_NULL)
            continue; /* removed */
        rc |= merge_key(out, &first, t, k);
        if (!pv)
            rc |= merge_raw(out, t, k + 1); /* kept */
        else if (p->tokens[pv].kind == JTAPE_OBJECT)
            rc |= merge_object(out, t, t->tokens[k + 1].kind == JTAPE_OBJECT ? k + 1 : 0, p, pv);
        else
            rc |= merge_raw(out, p, pv); /* replaced in place */
    }
    for (uint32_t k = pobj + 1; k < p->tokens[pobj].end; k = p->tokens[k + 1].end) {
        if (merge_find(t, tobj, p, k) || p->tokens[k + 1].kind == JTAPE_NULL)
            continue; /* merged above, or nothing to remove */
        rc |= merge_key(out, &first, p, k);
        if (p->tokens[k + 1].kind == JTAPE_OBJECT)
            rc |= merge_object(out, t, 0, p, k + 1);
        else
            rc |= merge_raw(out, p, k + 1);
    }
    return rc | buf_append(out, "}", 1);
}

/* Appends `,"name":` and patch member pv (may be 0 or null) merged into
 * stored member cv (may be 0) of the document, as revision.c's
 * next_members does for attributes (required) or relationships (not).
 * 0, 1 when the general path must decide, -1 out of memory. */
static int merge_member(struct buf *out, const char *name, int required, const struct jtape *st,
                        uint32_t cv, const struct jtape *p, uint32_t pv)
{
    int cobj = cv && st->tokens[cv].kind == JTAPE_OBJECT;
    int rc = 0;
    if (pv && p->tokens[pv].kind != JTAPE_NULL) {
        assert(p->tokens[pv].kind == JTAPE_OBJECT); /* payment_fastbody_read's check */
        rc |= merge_name(out, name);
        rc |= merge_object(out, st, cobj ? cv : 0, p, pv);
        return rc ? -1 : 0;
    }
    if (!required && (pv || !cv || st->tokens[cv].kind == JTAPE_NULL))
        return 0; /* relationships null in the patch, or none stored: none */
    if (!cobj)
        return 1; /* "must be an object" */
    rc |= merge_name(out, name);
    rc |= merge_raw(out, st, cv); /* the stored member as it is */
    return rc ? -1 : 0;
}

/* Appends `"name":` and member tok of p (not 0), after a comma unless
 * *first. */
static int merge_envelope(struct buf *out, int *first, const char *name, const struct jtape *p,
                          uint32_t tok)
{
    int rc = *first ? buf_append(out, "\"", 1) | buf_puts(out, name) | buf_append(out, "\":", 2)
                    : merge_name(out, name);
    *first = 0;
    return rc | merge_raw(out, p, tok);
}

/* The merged body of patch fb (on fb->tape) and stored document st into
 * fb->merged: 0, 1 when the general path must decide, -1 out of memory. */
static int merge_body(struct payment_fastbody *fb, const struct jtape *st)
{
    const struct jtape *p = &fb->tape;
    struct buf *out = &fb->merged;
    uint32_t org = fb->organisation_id;
    const struct jtape *org_tape = p;
    if (!org) {
        org = jtape_get(st, 0, "organisation_id", 15);
        org_tape = st;
        if (!org || st->tokens[org].kind != JTAPE_STRING)
            return 1; /* revision_next: REVISION_ESTORED */
    }
    buf_reset(out);
    int first = 1;
    int rc = buf_append(out, "{\"data\":{", 9);
    if (fb->id)
        rc |= merge_envelope(out, &first, "id", p, fb->id);
    if (fb->version)
        rc |= merge_envelope(out, &first, "version", p, fb->version);
    rc |= merge_envelope(out, &first, "organisation_id", org_tape, org);
    if (fb->type)
        rc |= merge_envelope(out, &first, "type", p, fb->type);
    if (rc != 0)
        return -1;
    int m = merge_member(out, "attributes", 1, st, jtape_get(st, 0, "attributes", 10), p,
                         jtape_get(p, fb->data, "attributes", 10));
    if (m == 0)
        m = merge_member(out, "relationships", 0, st, jtape_get(st, 0, "relationships", 13), p,
                         jtape_get(p, fb->data, "relationships", 13));
    if (m != 0)
        return m;
    return buf_append(out, "}}", 2) != 0 || buf_failed(out) ? -1 : 0;
}

int payment_fastbody_merge(struct payment_fastbody *fb, const payment_validator *v,
                           const struct jtape *stored)
{
    assert(fb && v && stored && stored->count > 0);
    assert(fb->data); /* after payment_fastbody_read(PATCH) said OK */
    int rc = stored->tokens[0].kind == JTAPE_OBJECT ? merge_body(fb, stored) : 1;
    if (rc != 0) {
        fb->data = fb->id = fb->version = fb->organisation_id = 0;
        fb->type = fb->attributes = fb->relationships = 0;
        return rc < 0 ? PAYMENT_FASTBODY_ENOMEM : PAYMENT_FASTBODY_DEFER;
    }
    /* The patch's tape is kept for its memory; the merged body's reuses the
     * tokens of the one before. */
    struct jtape patch = fb->tape;
    fb->tape = fb->patch;
    fb->patch = patch;
    return payment_fastbody_read(fb, v, PAYMENT_CHECK_REPLACE, fb->merged.data, fb->merged.len);
}
