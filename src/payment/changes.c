/* changes: see changes.h.  payment_changes_between walks two jansson trees
 * together; what both walks share (how a member is named, the paths found,
 * the sorted result) is defined here and declared in changes_paths.h; the
 * walk over tapes is changes_tape.c. */
#include "payment/changes.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "payment/changes_paths.h"

void change_paths_init(struct change_paths *ps)
{
    ps->found = (struct buf)BUF_INIT;
    ps->at = ps->inline_at;
    ps->n = 0;
    ps->cap = CHANGE_PATHS_INLINE;
    ps->failed = 0;
}

void change_paths_free(struct change_paths *ps)
{
    buf_free(&ps->found);
    if (ps->at != ps->inline_at)
        free(ps->at);
    ps->at = NULL;
    ps->n = ps->cap = 0;
}

int change_paths_bookkeeping(const char *name, size_t len)
{
    return (len == 7 && memcmp(name, "version", 7) == 0) ||
           (len == 11 && memcmp(name, "modified_on", 11) == 0);
}

/* Appends the path of at to found: the enclosing members' first, then a
 * '.' unless at is in the root, then its name escaped. */
static void change_paths_write(struct buf *found, const struct change_name *at)
{
    if (at->parent) {
        change_paths_write(found, at->parent);
        buf_append(found, ".", 1);
    }
    const char *c = at->name, *end = at->name + at->len;
    while (c < end) {
        const char *run = c;
        while (c < end && *c != '~' && *c != '.')
            c++;
        buf_append(found, run, (size_t)(c - run));
        if (c < end)
            buf_append(found, *c++ == '~' ? "~0" : "~1", 2);
    }
}

/* Makes room for one more offset; 0, or -1 out of memory. */
static int change_paths_grow(struct change_paths *ps)
{
    if (ps->n < ps->cap)
        return 0;
    if (ps->cap > ((size_t)-1) / 2 / sizeof *ps->at)
        return -1;
    size_t cap = ps->cap * 2;
    size_t *at = ps->at == ps->inline_at ? malloc(cap * sizeof *at)
                                         : realloc(ps->at, cap * sizeof *at);
    if (!at)
        return -1;
    if (ps->at == ps->inline_at)
        memcpy(at, ps->inline_at, ps->n * sizeof *at);
    ps->at = at;
    ps->cap = cap;
    return 0;
}

void change_paths_add(struct change_paths *ps, const struct change_name *at)
{
    assert(at != NULL);
    if (ps->failed || change_paths_grow(ps) != 0) {
        ps->failed = 1;
        return;
    }
    size_t offset = ps->found.len;
    change_paths_write(&ps->found, at);
    if (buf_append(&ps->found, "", 1) != 0) { /* the NUL ending the path */
        ps->failed = 1;
        return;
    }
    ps->at[ps->n++] = offset;
}

/* Orders two offsets into found (ctx) by the bytes of their paths. */
static int change_paths_compare(const void *x, const void *y, void *ctx)
{
    const char *found = ctx;
    return strcmp(found + *(const size_t *)x, found + *(const size_t *)y);
}

char *change_paths_render(struct change_paths *ps)
{
    if (ps->failed)
        return NULL;
    if (ps->n > 1)
        qsort_r(ps->at, ps->n, sizeof *ps->at, change_paths_compare, ps->found.data);
    struct buf out = BUF_INIT;
    /* Each path takes its bytes and 3 more ("", and a ','), escapes aside;
     * found holds the bytes and a NUL per path. */
    buf_reserve(&out, ps->found.len + 2 * ps->n + 2);
    buf_append(&out, "[", 1);
    for (size_t i = 0; i < ps->n; i++) {
        const char *path = ps->found.data + ps->at[i];
        buf_append(&out, i ? ",\"" : "\"", i ? 2 : 1);
        buf_json_escape(&out, path, strlen(path));
        buf_append(&out, "\"", 1);
    }
    buf_append(&out, "]", 1);
    if (buf_failed(&out)) {
        buf_free(&out);
        return NULL;
    }
    return buf_steal(&out, NULL);
}

static void diff_objects(const json_t *a, const json_t *b, const struct change_name *parent,
                         struct change_paths *ps);

/* Compares member at: a or b NULL when absent on that side. */
static void diff_member(const json_t *a, const json_t *b, const struct change_name *at,
                        struct change_paths *ps)
{
    if (json_is_object(a) && json_is_object(b))
        diff_objects(a, b, at, ps);
    else if (!a || !b || !json_equal(a, b))
        change_paths_add(ps, at);
}

/* Compares the members of two objects (the members of parent, or the
 * root's when NULL): every member of a against b's, then the members only b
 * has. */
static void diff_objects(const json_t *a, const json_t *b, const struct change_name *parent,
                         struct change_paths *ps)
{
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)a, name, v) {
        struct change_name at = {parent, name, strlen(name)};
        if (!parent && change_paths_bookkeeping(at.name, at.len))
            continue;
        diff_member(v, json_object_get(b, name), &at, ps);
    }
    json_object_foreach((json_t *)b, name, v) {
        struct change_name at = {parent, name, strlen(name)};
        if ((!parent && change_paths_bookkeeping(at.name, at.len)) || json_object_get(a, name))
            continue;
        change_paths_add(ps, &at);
    }
}

char *payment_changes_between(const json_t *before, const json_t *after)
{
    assert(json_is_object(before) && json_is_object(after));
    struct change_paths ps;
    change_paths_init(&ps);
    diff_objects(before, after, NULL, &ps);
    char *text = change_paths_render(&ps);
    change_paths_free(&ps);
    return text;
}
