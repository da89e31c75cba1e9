/* changes: see changes.h.  The two documents are walked together; each
 * changed path is built in one buffer (a name appended on the way down,
 * cut off on the way up), copied out, and the copies sorted at the end. */
#include "payment/changes.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

/* The paths found so far. */
struct paths {
    char **v;   /* malloc'd paths, escaped as changes.h says */
    size_t n;   /* in use */
    size_t cap; /* allocated */
    int failed; /* out of memory: the result is abandoned */
};

/* The root members the server rewrites on every write. */
static int bookkeeping(const char *name)
{
    return strcmp(name, "version") == 0 || strcmp(name, "modified_on") == 0;
}

/* Appends name to path, escaped ('~' as ~0, '.' as ~1), after a '.' unless
 * it is a member of the root (root set): a name may be empty. */
static void path_push(struct buf *path, const char *name, int root)
{
    if (!root)
        buf_puts(path, ".");
    for (const char *c = name; *c;) {
        size_t run = strcspn(c, "~.");
        buf_append(path, c, run);
        c += run;
        if (*c)
            buf_puts(path, *c++ == '~' ? "~0" : "~1");
    }
}

/* Cuts path back to len bytes (what it was before path_push). */
static void path_pop(struct buf *path, size_t len)
{
    assert(len <= path->len);
    path->len = len;
    if (path->data)
        path->data[len] = '\0';
}

/* Records a copy of path. */
static void paths_add(struct paths *ps, const struct buf *path)
{
    if (ps->failed || buf_failed(path)) {
        ps->failed = 1;
        return;
    }
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 16;
        char **v = realloc(ps->v, cap * sizeof *v);
        if (!v) {
            ps->failed = 1;
            return;
        }
        ps->v = v;
        ps->cap = cap;
    }
    char *copy = strdup(path->data ? path->data : "");
    if (!copy) {
        ps->failed = 1;
        return;
    }
    ps->v[ps->n++] = copy;
}

static void diff_objects(const json_t *a, const json_t *b, struct buf *path, int root,
                         struct paths *ps);

/* Compares the member at path: a or b NULL when absent on that side. */
static void diff_member(const json_t *a, const json_t *b, struct buf *path, struct paths *ps)
{
    if (json_is_object(a) && json_is_object(b))
        diff_objects(a, b, path, 0, ps);
    else if (!a || !b || !json_equal(a, b))
        paths_add(ps, path);
}

/* Compares the members of two objects: every member of a against b's, then
 * the members only b has. */
static void diff_objects(const json_t *a, const json_t *b, struct buf *path, int root,
                         struct paths *ps)
{
    const char *name;
    json_t *v;
    size_t len = path->len;
    json_object_foreach((json_t *)a, name, v) {
        if (root && bookkeeping(name))
            continue;
        path_push(path, name, root);
        diff_member(v, json_object_get(b, name), path, ps);
        path_pop(path, len);
    }
    json_object_foreach((json_t *)b, name, v) {
        if ((root && bookkeeping(name)) || json_object_get(a, name))
            continue;
        path_push(path, name, root);
        paths_add(ps, path);
        path_pop(path, len);
    }
}

static int compare_paths(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

/* The sorted paths as a JSON array's text, or NULL out of memory. */
static char *paths_render(struct paths *ps)
{
    if (ps->n > 1)
        qsort(ps->v, ps->n, sizeof *ps->v, compare_paths);
    struct buf out = BUF_INIT;
    buf_puts(&out, "[");
    for (size_t i = 0; i < ps->n; i++) {
        buf_puts(&out, i ? ",\"" : "\"");
        buf_json_escape(&out, ps->v[i], strlen(ps->v[i]));
        buf_puts(&out, "\"");
    }
    buf_puts(&out, "]");
    if (buf_failed(&out)) {
        buf_free(&out);
        return NULL;
    }
    return buf_steal(&out, NULL);
}

char *payment_changes_between(const json_t *before, const json_t *after)
{
    assert(json_is_object(before) && json_is_object(after));
    struct paths ps = {0};
    struct buf path = BUF_INIT;
    diff_objects(before, after, &path, 1, &ps);
    char *text = ps.failed ? NULL : paths_render(&ps);
    for (size_t i = 0; i < ps.n; i++)
        free(ps.v[i]);
    free(ps.v);
    buf_free(&path);
    return text;
}
