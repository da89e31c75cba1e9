/* ratelimit: a token bucket per caller (its API key, or its address when
 * the server runs without keys), for --rate-limit N/s.
 *
 * Buckets live in a fixed table: memory does not grow with the number of
 * callers.  When the table is crowded the least recently seen of the few
 * candidate buckets is reused, so a flood of distinct callers can only
 * reset other callers' buckets (letting them burst again), never lock
 * anyone out. */
#ifndef HTTP_RATELIMIT_H
#define HTTP_RATELIMIT_H

#include <stdint.h>

typedef struct ratelimit ratelimit;

/* rate: requests per second each caller may make, sustained; a caller may
 * also burst up to rate requests at once.  NULL when out of memory. */
ratelimit *ratelimit_new(double rate);
void ratelimit_free(ratelimit *rl);

/* Takes one token of caller's bucket at now_us (monotonic).  Returns 0 when
 * the request may go on, else the whole seconds (>= 1) after which a token
 * will be there, for Retry-After.  Thread-safe. */
unsigned ratelimit_take(ratelimit *rl, const char *caller, int64_t now_us);

#endif
