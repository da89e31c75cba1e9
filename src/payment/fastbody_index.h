/* fastbody_index: the members the generated tables (schema.h) declare,
 * looked up by name for the body fast path (fastbody_check.c).
 *
 * An index of every object reachable from schema_payment_envelope and
 * schema_payment_attributes, by (property array, name), built once on
 * first use and read-only afterwards: a lookup hashes the key's length and
 * three of its bytes and compares one or two names, where a binary search
 * in a node's properties (sorted by name, byte order) compares five or
 * six.  Should the tables outgrow it, lookups fall back to that binary
 * search.  Internal to the fast path.
 *
 * Threads: fastbody_index_init may be called from any thread, any number
 * of times (pthread_once); lookups only read. */
#ifndef PAYMENT_FASTBODY_INDEX_H
#define PAYMENT_FASTBODY_INDEX_H

#include <stddef.h>

#include "payment/schema.h"

/* Builds the index unless built.  0, or -1 when the build could not run. */
int fastbody_index_init(void);

/* The property of object node n named key (len bytes, no NUL), or NULL
 * when n declares none.  n is schema_payment_envelope,
 * schema_payment_attributes or a node reachable from them, and
 * fastbody_index_init has returned 0. */
const struct schema_node *fastbody_property(const struct schema_node *n, const char *key,
                                            size_t len);

#endif
