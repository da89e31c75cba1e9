/* fuzz_changes: payment_changes_between_tapes() against
 * payment_changes_between(), the changed paths of an update from two
 * stored documents read into tapes, and from the jansson trees of the same
 * texts.
 *
 * Input format: BEFORE 0xFF AFTER.  A 0xFF byte never occurs in UTF-8, so
 * it cannot be part of either document.  Each side is read by jtape and by
 * jansson (duplicates rejected, as the stores read documents); an input
 * without 0xFF is skipped.
 *
 * Properties checked, beyond "no crash, leak or UB":
 *  - a side jtape reads, jansson accepts (jtape's own promise);
 *  - when jtape read both sides and both are objects, the tape function's
 *    text equals the tree function's byte for byte;
 *  - that text is a JSON array of strings equal to a reference written
 *    here independently of changes*.c (changes_reference below: its own
 *    walk, its own escaping, its own sort), so that what the two functions
 *    share (changes_paths.h) is held to changes.h too;
 *  - the paths are symmetric: AFTER against BEFORE gives the same text; a
 *    document against itself gives "[]". */
#include <jansson.h>

#include "core/jtape.h"
#include "fuzz.h"
#include "payment/changes.h"

#define CHANGES_DEPTH 32 /* nesting jtape reads, as for a request body */

/* The paths the reference found. */
struct ref_paths {
    char **v;   /* malloc'd paths */
    size_t n;   /* in use */
    size_t cap; /* allocated */
};

/* The path prefix, then '.' unless it is empty and at the root, then name
 * with each '~' as "~0" and each '.' as "~1": a malloc'd string. */
static char *ref_join(const char *prefix, int root, const char *name)
{
    size_t cap = strlen(prefix) + 1 + 2 * strlen(name) + 1, n = 0;
    char *path = malloc(cap);
    FUZZ_CHECK(path != NULL);
    for (const char *c = prefix; *c; c++)
        path[n++] = *c;
    if (!root)
        path[n++] = '.';
    for (const char *c = name; *c; c++) {
        if (*c == '~' || *c == '.') {
            path[n++] = '~';
            path[n++] = *c == '~' ? '0' : '1';
        } else {
            path[n++] = *c;
        }
    }
    path[n] = '\0';
    FUZZ_CHECK(n < cap);
    return path;
}

static void ref_add(struct ref_paths *ps, char *path)
{
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? 2 * ps->cap : 8;
        ps->v = realloc(ps->v, ps->cap * sizeof *ps->v);
        FUZZ_CHECK(ps->v != NULL);
    }
    ps->v[ps->n++] = path;
}

/* changes.h's rule on the trees: the members of a and of b, by name; both
 * objects: their members; otherwise one path when they differ or one is
 * absent; the root's version and modified_on left out. */
static void ref_walk(const json_t *a, const json_t *b, const char *prefix, int root,
                     struct ref_paths *ps)
{
    const json_t *sides[2] = {a, b};
    for (int side = 0; side < 2; side++) {
        const char *name;
        json_t *v;
        json_object_foreach((json_t *)sides[side], name, v) {
            if (root && (!strcmp(name, "version") || !strcmp(name, "modified_on")))
                continue;
            json_t *other = json_object_get(sides[1 - side], name);
            if (side == 1 && other)
                continue; /* met from a's side */
            char *path = ref_join(prefix, root, name);
            if (json_is_object(v) && json_is_object(other)) {
                ref_walk(side ? other : v, side ? v : other, path, 0, ps);
                free(path);
            } else if (!other || !json_equal(v, other)) {
                ref_add(ps, path);
            } else {
                free(path);
            }
        }
    }
}

static int ref_compare(const void *x, const void *y)
{
    const unsigned char *p = *(const unsigned char *const *)x;
    const unsigned char *q = *(const unsigned char *const *)y;
    while (*p && *p == *q)
        p++, q++;
    return (int)*p - (int)*q;
}

/* The reference's changed paths, sorted by their bytes, as a JSON array. */
static json_t *changes_reference(const json_t *a, const json_t *b)
{
    struct ref_paths ps = {0};
    ref_walk(a, b, "", 1, &ps);
    if (ps.n)
        qsort(ps.v, ps.n, sizeof *ps.v, ref_compare);
    json_t *arr = json_array();
    FUZZ_CHECK(arr != NULL);
    for (size_t i = 0; i < ps.n; i++) {
        FUZZ_CHECK(json_array_append_new(arr, json_string(ps.v[i])) == 0);
        free(ps.v[i]);
    }
    free(ps.v);
    return arr;
}

/* The text of a's changes by the tapes, checked against the trees'. */
static void changes_check(const struct jtape *ta, const struct jtape *tb, const json_t *a,
                          const json_t *b)
{
    char *tape = payment_changes_between_tapes(ta, tb);
    char *tree = payment_changes_between(a, b);
    FUZZ_CHECK(tape && tree);
    if (strcmp(tape, tree) != 0)
        fprintf(stderr, "tapes give %s, trees give %s\n", tape, tree);
    FUZZ_CHECK(strcmp(tape, tree) == 0);

    json_t *got = json_loads(tape, JSON_REJECT_DUPLICATES, NULL);
    json_t *want = changes_reference(a, b);
    if (!json_equal(got, want)) {
        char *w = json_dumps(want, JSON_COMPACT);
        fprintf(stderr, "changes are %s, the reference says %s\n", tape, w ? w : "?");
        free(w);
    }
    FUZZ_CHECK(json_equal(got, want));

    char *back = payment_changes_between_tapes(tb, ta);
    FUZZ_CHECK(back && strcmp(back, tape) == 0);
    char *same = payment_changes_between_tapes(ta, ta);
    FUZZ_CHECK(same && strcmp(same, "[]") == 0);

    free(same);
    free(back);
    json_decref(want);
    json_decref(got);
    free(tree);
    free(tape);
}

/* Reads one side with both readers: whether jtape read it; *tree is
 * jansson's value or NULL. */
static int changes_read(struct jtape *t, const uint8_t *data, size_t size, json_t **tree)
{
    int r = jtape_parse(t, (const char *)data, size, CHANGES_DEPTH);
    FUZZ_CHECK(r == JTAPE_OK || r == JTAPE_DEFER);
    *tree = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    FUZZ_CHECK(r != JTAPE_OK || *tree != NULL);
    return r == JTAPE_OK;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    json_object_seed(0x7061796d); /* the same hash layout on every run */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *split = memchr(data, 0xFF, size);
    if (!split)
        return 0;
    size_t before_len = (size_t)(split - data);
    struct jtape ta = JTAPE_INIT, tb = JTAPE_INIT;
    json_t *a, *b;
    int read_a = changes_read(&ta, data, before_len, &a);
    int read_b = changes_read(&tb, split + 1, size - before_len - 1, &b);
    if (read_a && read_b && json_is_object(a) && json_is_object(b))
        changes_check(&ta, &tb, a, b);
    json_decref(b);
    json_decref(a);
    jtape_free(&tb);
    jtape_free(&ta);
    return 0;
}
