/* merge: RFC 7396 JSON Merge Patch, the semantics of PATCH. */
#ifndef PAYMENT_MERGE_H
#define PAYMENT_MERGE_H

#include <jansson.h>

/* Returns a new value (the caller owns the reference): target with patch
 * applied.  Neither argument is modified.  If patch is not an object the
 * result is a copy of patch; a null member of patch removes that member;
 * object members merge recursively; anything else replaces.  NULL when out
 * of memory. */
json_t *merge_patch(const json_t *target, const json_t *patch);

#endif
