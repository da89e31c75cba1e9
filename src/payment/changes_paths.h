/* changes_paths: what the two walks of changes.h share (the one over
 * jansson trees in changes.c, the one over tapes in changes_tape.c): the
 * path being walked, the changed paths found so far, and the rendering of
 * the result, so that both give the same bytes.  Internal to changes*.c.
 *
 * The path is escaped as changes.h says while it is built: a name is
 * appended on the way down (change_paths_push) and cut off on the way up
 * (change_paths_pop).  A changed path is recorded by copying it, with its
 * NUL, to the end of one buffer (found) and noting its offset; the offsets
 * are sorted by the paths' bytes when rendering.  So a call allocates a few
 * buffers, never one per member or per path.
 *
 * Out of memory is sticky: once any append fails the result is abandoned
 * and change_paths_render returns NULL.  Pure: any thread. */
#ifndef PAYMENT_CHANGES_PATHS_H
#define PAYMENT_CHANGES_PATHS_H

#include <stddef.h>

#include "core/buf.h"

#define CHANGE_PATHS_INLINE 32 /* offsets held before one is allocated */

struct change_paths {
    struct buf path;                     /* the member being compared, escaped */
    struct buf found;                    /* the changed paths, each NUL-terminated */
    size_t *at;                          /* offset in found of each changed path */
    size_t n;                            /* changed paths */
    size_t cap;                          /* entries of at */
    size_t inline_at[CHANGE_PATHS_INLINE]; /* at's storage until it outgrows it */
    int failed;                          /* out of memory: the result is abandoned */
};

/* Sets ps up empty. */
void change_paths_init(struct change_paths *ps);

/* Releases what ps holds; it may then be initialised again. */
void change_paths_free(struct change_paths *ps);

/* Whether the len bytes of name are a root member the server rewrites on
 * every write ("version", "modified_on"). */
int change_paths_bookkeeping(const char *name, size_t len);

/* Appends the len bytes of name to the path, escaped ('~' as ~0, '.' as
 * ~1), after a '.' unless it is a member of the root (root set): a name may
 * be empty.  Returns the path's length before, for change_paths_pop. */
size_t change_paths_push(struct change_paths *ps, const char *name, size_t len, int root);

/* Cuts the path back to len bytes (what change_paths_push returned). */
void change_paths_pop(struct change_paths *ps, size_t len);

/* Records the path as changed. */
void change_paths_add(struct change_paths *ps);

/* The recorded paths sorted in byte order, as the text of a compact JSON
 * array of strings (changes.h): a malloc'd string, or NULL out of memory. */
char *change_paths_render(struct change_paths *ps);

#endif
