/* changes_tape: payment_changes_between_tapes (changes.h), the changed
 * paths of an update from the two stored documents read into tapes
 * (core/jtape.h), without building a jansson tree.  It walks the tapes as
 * changes.c walks the trees and shares its path list (changes_paths.h), so
 * both give the same bytes for the same texts.
 *
 * Looking members up.  Each member of a `before` object is looked for in
 * the `after` object first at a cursor just past the last member found
 * there: the stored documents come from one serializer, so their members
 * are usually in the same order and a lookup is one key comparison.  When
 * the cursor's key differs, jtape_get scans the object, and the cursor
 * resumes after what it found.  Members found are counted: when every
 * `after` member was found, none is new, and the second pass (looking each
 * `after` member up in `before`) is skipped.  Both counts are exact because
 * a tape holds no duplicate keys.
 *
 * Comparing values.  Two values whose texts are the same bytes are equal,
 * whatever they hold, so one memcmp settles most members of an update,
 * whole unchanged objects included; the others are compared by jtape_equal,
 * or member by member when both are objects.
 *
 * Names.  jtape reads no key holding an escape (asserted), so a key is its
 * raw bytes in the text, compared and written as they are.
 *
 * Pure: any thread.  Allocations: the path list's few buffers, none per
 * member. */
#include "payment/changes.h"

#include <assert.h>
#include <string.h>

#include "payment/changes_paths.h"

/* One comparison of two tapes. */
struct tape_walk {
    const struct jtape *a;   /* the document before the update */
    const struct jtape *b;   /* the document after it */
    struct change_paths *ps; /* the paths found */
};

/* The name of key k of t, as member at of parent. */
static struct change_name walk_name(const struct jtape *t, uint32_t k,
                                    const struct change_name *parent)
{
    assert(k < t->count && t->tokens[k].kind == JTAPE_STRING && !t->tokens[k].escaped);
    return (struct change_name){parent, t->text + t->tokens[k].start, t->tokens[k].len};
}

/* Whether key k of t is the name of at. */
static int walk_key_is(const struct jtape *t, uint32_t k, const struct change_name *at)
{
    const struct jtape_token *key = &t->tokens[k];
    assert(key->kind == JTAPE_STRING && !key->escaped);
    return key->len == at->len && memcmp(t->text + key->start, at->name, at->len) == 0;
}

/* Whether value i of a and value j of b are the same bytes of text (then
 * equal values). */
static int walk_same_text(const struct jtape *a, uint32_t i, const struct jtape *b, uint32_t j)
{
    const struct jtape_token *x = &a->tokens[i], *y = &b->tokens[j];
    return x->kind == y->kind && x->len == y->len &&
           memcmp(a->text + x->start, b->text + y->start, x->len) == 0;
}

static void walk_objects(const struct tape_walk *w, uint32_t oa, uint32_t ob,
                         const struct change_name *parent);

/* Compares member at: value va of a with value vb of b (0 when absent). */
static void walk_member(const struct tape_walk *w, uint32_t va, uint32_t vb,
                        const struct change_name *at)
{
    if (!vb) {
        change_paths_add(w->ps, at);
        return;
    }
    if (walk_same_text(w->a, va, w->b, vb))
        return;
    if (w->a->tokens[va].kind == JTAPE_OBJECT && w->b->tokens[vb].kind == JTAPE_OBJECT)
        walk_objects(w, va, vb, at);
    else if (!jtape_equal(w->a, va, w->b, vb))
        change_paths_add(w->ps, at);
}

/* Records every member of object ob of b that object oa of a lacks. */
static void walk_added(const struct tape_walk *w, uint32_t oa, uint32_t ob,
                       const struct change_name *parent)
{
    const struct jtape_token *tokens = w->b->tokens;
    for (uint32_t k = ob + 1; k < tokens[ob].end; k = tokens[k + 1].end) {
        struct change_name at = walk_name(w->b, k, parent);
        if ((!parent && change_paths_bookkeeping(at.name, at.len)) ||
            jtape_get(w->a, oa, at.name, at.len))
            continue;
        change_paths_add(w->ps, &at);
    }
}

/* Compares the members of object oa of a and object ob of b (the members
 * of parent, or the root's when NULL): every member of a against b's, then
 * (unless every member of b was found) the members only b has. */
static void walk_objects(const struct tape_walk *w, uint32_t oa, uint32_t ob,
                         const struct change_name *parent)
{
    const struct jtape_token *ta = w->a->tokens, *tb = w->b->tokens;
    assert(ta[oa].kind == JTAPE_OBJECT && tb[ob].kind == JTAPE_OBJECT);
    uint32_t cursor = ob + 1; /* b's key after the last one found */
    uint32_t found = 0;       /* b's members found in a */
    for (uint32_t k = oa + 1; k < ta[oa].end; k = ta[k + 1].end) {
        struct change_name at = walk_name(w->a, k, parent);
        uint32_t vb;
        if (cursor < tb[ob].end && walk_key_is(w->b, cursor, &at))
            vb = cursor + 1;
        else
            vb = jtape_get(w->b, ob, at.name, at.len);
        if (vb) {
            found++;
            cursor = tb[vb].end;
        }
        if (!parent && change_paths_bookkeeping(at.name, at.len))
            continue;
        walk_member(w, k + 1, vb, &at);
    }
    assert(found <= tb[ob].count);
    if (found < tb[ob].count)
        walk_added(w, oa, ob, parent);
}

char *payment_changes_between_tapes(const struct jtape *before, const struct jtape *after)
{
    assert(before->count > 0 && before->tokens[0].kind == JTAPE_OBJECT);
    assert(after->count > 0 && after->tokens[0].kind == JTAPE_OBJECT);
    struct change_paths ps;
    change_paths_init(&ps);
    const struct tape_walk w = {before, after, &ps};
    walk_objects(&w, 0, 0, NULL);
    char *text = change_paths_render(&ps);
    change_paths_free(&ps);
    return text;
}
