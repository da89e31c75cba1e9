/* changes_paths: what the two walks of changes.h share (the one over
 * jansson trees in changes.c, the one over tapes in changes_tape.c): how
 * a member is named, the changed paths found so far, and the rendering of
 * the result, so that both give the same bytes.  Internal to changes*.c.
 *
 * A walk names the member it compares with a chain of struct change_name
 * on its own stack, one per level, the root's members last; nothing is
 * written for a member that did not change.  A changed path is written,
 * escaped as changes.h says and NUL-terminated, to the end of one buffer
 * (found), and its offset noted; the offsets are sorted by the paths'
 * bytes when rendering.  So a call allocates a few buffers, never one per
 * member or per path.
 *
 * A struct change_paths may point into itself: never copy one.  Out of
 * memory is sticky: once any append fails the result is abandoned and
 * change_paths_render returns NULL.  Pure: any thread. */
#ifndef PAYMENT_CHANGES_PATHS_H
#define PAYMENT_CHANGES_PATHS_H

#include <stddef.h>

#include "core/buf.h"

#define CHANGE_PATHS_INLINE 32 /* offsets held before one is allocated */

/* A member's name and the object's it is in. */
struct change_name {
    const struct change_name *parent; /* the enclosing member; NULL in the root */
    const char *name;                 /* the name, not escaped, not NUL-terminated */
    size_t len;                       /* its bytes */
};

struct change_paths {
    struct buf found;                      /* the changed paths, each NUL-terminated */
    size_t *at;                            /* offset in found of each changed path */
    size_t n;                              /* changed paths */
    size_t cap;                            /* entries of at */
    size_t inline_at[CHANGE_PATHS_INLINE]; /* at's storage until it outgrows it */
    int failed;                            /* out of memory: the result is abandoned */
};

/* Sets ps up empty. */
void change_paths_init(struct change_paths *ps);

/* Releases what ps holds; it may then be initialised again. */
void change_paths_free(struct change_paths *ps);

/* Whether the len bytes of name are a root member the server rewrites on
 * every write ("version", "modified_on"). */
int change_paths_bookkeeping(const char *name, size_t len);

/* Records the path of member at as changed: its names from the root, each
 * escaped ('~' as ~0, '.' as ~1), joined by '.' (a name may be empty). */
void change_paths_add(struct change_paths *ps, const struct change_name *at);

/* The recorded paths sorted in byte order, as the text of a compact JSON
 * array of strings (changes.h): a malloc'd string, or NULL out of memory. */
char *change_paths_render(struct change_paths *ps);

#endif
