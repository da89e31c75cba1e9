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
 * Names.  jtape reads no key holding an escape, so a key is its raw bytes
 * in the text; jtape_string is used anyway (it returns those bytes without
 * copying) so that a tape that did hold one would still be compared by its
 * decoded value.  A name is used only before recursing, as the scratch
 * buffer it may live in is reused below.
 *
 * Pure: any thread.  Allocations: the path list's few buffers, none per
 * member. */
#include "payment/changes.h"

#include <assert.h>
#include <string.h>

#include "payment/changes_paths.h"

/* One comparison of two tapes. */
struct tape_walk {
    const struct jtape *a;    /* the document before the update */
    const struct jtape *b;    /* the document after it */
    struct change_paths *ps;  /* the path walked and the paths found */
    struct buf scratch;       /* decoded keys that held an escape (none, today) */
    int failed;               /* out of memory decoding a key */
};

/* The decoded name of key k of t, *len bytes; NULL out of memory. */
static const char *walk_name(struct tape_walk *w, const struct jtape *t, uint32_t k, size_t *len)
{
    assert(k < t->count && t->tokens[k].kind == JTAPE_STRING);
    const struct jtape_token *key = &t->tokens[k];
    if (!key->escaped) {
        *len = key->len;
        return t->text + key->start;
    }
    buf_reset(&w->scratch);
    const char *name = jtape_string(t, k, &w->scratch, len);
    if (!name)
        w->failed = 1;
    return name;
}

/* Whether key k of t is exactly the len bytes of name. */
static int walk_key_is(const struct jtape *t, uint32_t k, const char *name, size_t len)
{
    const struct jtape_token *key = &t->tokens[k];
    if (key->escaped)
        return jtape_string_eq(t, k, name, len);
    return key->len == len && memcmp(t->text + key->start, name, len) == 0;
}

static void walk_objects(struct tape_walk *w, uint32_t oa, uint32_t ob, int root);

/* Compares value va of a with value vb of b (0 when absent) at the path. */
static void walk_member(struct tape_walk *w, uint32_t va, uint32_t vb)
{
    const struct jtape_token *ta = &w->a->tokens[va];
    if (!vb) {
        change_paths_add(w->ps);
        return;
    }
    const struct jtape_token *tb = &w->b->tokens[vb];
    if (ta->kind == JTAPE_OBJECT && tb->kind == JTAPE_OBJECT)
        walk_objects(w, va, vb, 0);
    else if (!jtape_equal(w->a, va, w->b, vb))
        change_paths_add(w->ps);
}

/* Records every member of object ob of b that object oa of a lacks. */
static void walk_added(struct tape_walk *w, uint32_t oa, uint32_t ob, int root)
{
    const struct jtape_token *tokens = w->b->tokens;
    for (uint32_t k = ob + 1; k < tokens[ob].end; k = tokens[k + 1].end) {
        size_t len;
        const char *name = walk_name(w, w->b, k, &len);
        if (!name)
            return;
        if ((root && change_paths_bookkeeping(name, len)) || jtape_get(w->a, oa, name, len))
            continue;
        size_t before = change_paths_push(w->ps, name, len, root);
        change_paths_add(w->ps);
        change_paths_pop(w->ps, before);
    }
}

/* Compares the members of object oa of a and object ob of b: every member
 * of a against b's, then (unless every member of b was found) the members
 * only b has. */
static void walk_objects(struct tape_walk *w, uint32_t oa, uint32_t ob, int root)
{
    const struct jtape_token *ta = w->a->tokens, *tb = w->b->tokens;
    assert(ta[oa].kind == JTAPE_OBJECT && tb[ob].kind == JTAPE_OBJECT);
    uint32_t cursor = ob + 1; /* b's key after the last one found */
    uint32_t found = 0;       /* b's members found in a */
    for (uint32_t k = oa + 1; k < ta[oa].end; k = ta[k + 1].end) {
        size_t len;
        const char *name = walk_name(w, w->a, k, &len);
        if (!name)
            return;
        uint32_t vb;
        if (cursor < tb[ob].end && walk_key_is(w->b, cursor, name, len))
            vb = cursor + 1;
        else
            vb = jtape_get(w->b, ob, name, len);
        if (vb) {
            found++;
            cursor = tb[vb].end;
        }
        if (root && change_paths_bookkeeping(name, len))
            continue;
        size_t before = change_paths_push(w->ps, name, len, root);
        walk_member(w, k + 1, vb);
        change_paths_pop(w->ps, before);
    }
    assert(found <= tb[ob].count);
    if (found < tb[ob].count)
        walk_added(w, oa, ob, root);
}

char *payment_changes_between_tapes(const struct jtape *before, const struct jtape *after)
{
    assert(before->count > 0 && before->tokens[0].kind == JTAPE_OBJECT);
    assert(after->count > 0 && after->tokens[0].kind == JTAPE_OBJECT);
    struct change_paths ps;
    change_paths_init(&ps);
    struct tape_walk w = {before, after, &ps, BUF_INIT, 0};
    walk_objects(&w, 0, 0, 1);
    char *text = w.failed ? NULL : change_paths_render(&ps);
    change_paths_free(&ps);
    buf_free(&w.scratch);
    return text;
}
