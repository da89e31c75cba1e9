/* idem: Idempotency-Key handling, as Stripe and the IETF draft "The
 * Idempotency-Key HTTP Header Field" describe it.
 *
 * A key is scoped to its caller (API key id, or one shared scope when the
 * server runs open).  The first request that writes with a key stores its
 * outcome in the same store transaction as the write (see
 * payment_store_idem in store.h); a retry with the same key and the same
 * request (method, path, SHA-256 of the body) is answered with that
 * outcome again.  This module holds what the store does not: the syntax of
 * keys, request fingerprints, and the keys of requests still in flight in
 * this process (a second request with one of those gets 409 at once). */
#ifndef PAYMENT_IDEM_H
#define PAYMENT_IDEM_H

#include <stddef.h>

#define IDEM_KEY_MAX 255        /* characters of a key */
#define IDEM_FINGERPRINT_LEN 64 /* hex characters of a fingerprint */

typedef struct idem_inflight idem_inflight;

/* Whether s is a key: 1 to 255 visible ASCII characters (0x21..0x7e). */
int idem_key_valid(const char *s);

/* The hex SHA-256 of method, path and body (each length-prefixed, so that
 * no two requests share a fingerprint by moving bytes between fields).
 * Returns 0, or -1 when the digest cannot be computed. */
int idem_fingerprint(const char *method, const char *path, const char *body, size_t body_len,
                     char out[IDEM_FINGERPRINT_LEN + 1]);

idem_inflight *idem_inflight_new(void);
void idem_inflight_free(idem_inflight *t);

/* Claims (scope, key) for a request now running.  Returns 0, 1 when another
 * request holds it, or -1 out of memory.  Thread-safe. */
int idem_inflight_claim(idem_inflight *t, const char *scope, const char *key);

/* Releases a claim made by idem_inflight_claim. */
void idem_inflight_release(idem_inflight *t, const char *scope, const char *key);

#endif
