/* changes: which parts of a payment an update changed, as an event's
 * data.changes lists them: the paths, from the document's root, of the
 * members whose values differ between the stored document and the one
 * written.
 *
 * A path is the member names from the root joined by '.', e.g.
 * "attributes.beneficiary_party.name".  Within one name, '~' is written
 * "~0" and '.' is written "~1" (as JSON Pointer, RFC 6901, escapes '/'),
 * so that every '.' of a path separates two names and a path names one
 * member only: "attributes.a~1b" is the member "a.b" of attributes, while
 * "attributes.a.b" is the member "b" of attributes.a.
 *
 * Objects are compared member by member, down to the members that are not
 * objects on both sides: a member whose value is an array, a scalar, or an
 * object on one side only is one path when its values differ (an array is
 * compared whole).  A member present on one side only is a changed path
 * too.  The root's "version" and "modified_on" are left out: the server
 * sets them on every write, so they tell nothing.
 *
 * Pure functions: any thread.  Errors: out of memory only. */
#ifndef PAYMENT_CHANGES_H
#define PAYMENT_CHANGES_H

#include <jansson.h>

#include "core/jtape.h"

/* The changed paths between two documents (objects), as the text of a
 * compact JSON array of strings sorted in byte order, e.g.
 * ["attributes.amount","attributes.beneficiary_party.name"]; "[]" when
 * nothing but the bookkeeping changed.  Returns a malloc'd NUL-terminated
 * string (free() it), or NULL out of memory. */
char *payment_changes_between(const json_t *before, const json_t *after);

/* The same list for two documents read into tapes (core/jtape.h), each the
 * root (token 0) of its tape: byte for byte what payment_changes_between
 * gives for the trees jansson builds from the same texts.  Returns a
 * malloc'd string, or NULL out of memory. */
char *payment_changes_between_tapes(const struct jtape *before, const struct jtape *after);

#endif
