/* changes: see changes.h.  payment_changes_between walks two jansson trees
 * together; what both walks share (the path, the paths found, the sorted
 * result) is defined here and declared in changes_paths.h; the walk over
 * tapes is changes_tape.c. */
#include "payment/changes.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "payment/changes_paths.h"

void change_paths_init(struct change_paths *ps)
{
    ps->path = (struct buf)BUF_INIT;
    ps->found = (struct buf)BUF_INIT;
    ps->at = ps->inline_at;
    ps->n = 0;
    ps->cap = CHANGE_PATHS_INLINE;
    ps->failed = 0;
}

void change_paths_free(struct change_paths *ps)
{
    buf_free(&ps->path);
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

size_t change_paths_push(struct change_paths *ps, const char *name, size_t len, int root)
{
    struct buf *path = &ps->path;
    size_t before = path->len;
    if (!root)
        buf_append(path, ".", 1);
    const char *end = name + len;
    for (const char *c = name; c < end;) {
        const char *run = c;
        while (c < end && *c != '~' && *c != '.')
            c++;
        buf_append(path, run, (size_t)(c - run));
        if (c < end)
            buf_append(path, *c++ == '~' ? "~0" : "~1", 2);
    }
    return before;
}

void change_paths_pop(struct change_paths *ps, size_t len)
{
    struct buf *path = &ps->path;
    assert(len <= path->len);
    path->len = len;
    if (path->data)
        path->data[len] = '\0';
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

void change_paths_add(struct change_paths *ps)
{
    if (ps->failed || buf_failed(&ps->path) || change_paths_grow(ps) != 0) {
        ps->failed = 1;
        return;
    }
    size_t offset = ps->found.len;
    /* The empty path (a root member named "") has no data yet: "" then. */
    const char *path = ps->path.data ? ps->path.data : "";
    if (buf_append(&ps->found, path, ps->path.len + 1) != 0) {
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

static void diff_objects(const json_t *a, const json_t *b, int root, struct change_paths *ps);

/* Compares the member at the path: a or b NULL when absent on that side. */
static void diff_member(const json_t *a, const json_t *b, struct change_paths *ps)
{
    if (json_is_object(a) && json_is_object(b))
        diff_objects(a, b, 0, ps);
    else if (!a || !b || !json_equal(a, b))
        change_paths_add(ps);
}

/* Compares the members of two objects: every member of a against b's, then
 * the members only b has. */
static void diff_objects(const json_t *a, const json_t *b, int root, struct change_paths *ps)
{
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)a, name, v) {
        size_t name_len = strlen(name);
        if (root && change_paths_bookkeeping(name, name_len))
            continue;
        size_t len = change_paths_push(ps, name, name_len, root);
        diff_member(v, json_object_get(b, name), ps);
        change_paths_pop(ps, len);
    }
    json_object_foreach((json_t *)b, name, v) {
        size_t name_len = strlen(name);
        if ((root && change_paths_bookkeeping(name, name_len)) || json_object_get(a, name))
            continue;
        size_t len = change_paths_push(ps, name, name_len, root);
        change_paths_add(ps);
        change_paths_pop(ps, len);
    }
}

char *payment_changes_between(const json_t *before, const json_t *after)
{
    assert(json_is_object(before) && json_is_object(after));
    struct change_paths ps;
    change_paths_init(&ps);
    diff_objects(before, after, 1, &ps);
    char *text = change_paths_render(&ps);
    change_paths_free(&ps);
    return text;
}
