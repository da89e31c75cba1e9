/* sign: Standard Webhooks signatures.  A delivery's signature is
 * "v1," + base64(HMAC-SHA256(key, "{msg_id}.{timestamp}.{body}")) where key
 * is the base64-decoded part of the secret after "whsec_"; several
 * signatures (a rotation) are separated by spaces.
 *
 * Pure functions (OpenSSL's HMAC): any thread. */
#ifndef WEBHOOK_SIGN_H
#define WEBHOOK_SIGN_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* Appends the signature of (msg_id, timestamp, body) under secret
 * ("whsec_<base64>") to out, preceded by a space when out is not empty.
 * Returns 0, or -1 for a malformed secret or out of memory. */
int webhook_sign(const char *secret, const char *msg_id, int64_t timestamp, const char *body,
                 size_t len, struct buf *out);

#endif
