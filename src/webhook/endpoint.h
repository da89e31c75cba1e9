/* endpoint: the webhook endpoint's document, the one the store keeps
 * (store.h, struct payment_webhook's doc):
 *
 *   {"url", "event_types": ["payment.created", ...] | ["*"], "description",
 *    "status": "enabled" | "disabled", "disabled_reason": null | "...",
 *    "secrets": [{"secret": "whsec_...", "created_ms", "expires_ms": 0 | N}]}
 *
 * the newest secret first; one that expires (a rotated-out secret, for
 * WEBHOOK_ROTATION_OVERLAP_MS after the rotation) signs until expires_ms.
 * The module parses and validates the members a caller sends under "data"
 * (POST, PATCH as a merge patch), makes and rotates secrets, and renders the
 * API's answers, which never hold a secret except the answer that made it.
 *
 * Pure functions (secrets from OpenSSL's RAND_bytes): any thread.  Errors:
 * -1, with the field and message of a caller's mistake where it says so. */
#ifndef WEBHOOK_ENDPOINT_H
#define WEBHOOK_ENDPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "payment/store.h"

#define WEBHOOK_SECRET_BYTES 32                     /* random bytes in a new secret */
#define WEBHOOK_SECRET_MAX 100                      /* "whsec_" + base64 of at most 64 bytes */
#define WEBHOOK_ROTATION_OVERLAP_MS (24LL * 3600 * 1000) /* both secrets sign this long */
#define WEBHOOK_URL_MAX 2048                        /* bytes of an endpoint's url */
#define WEBHOOK_DESCRIPTION_MAX 1024                /* bytes of its description */

/* What a delivery to an endpoint needs, from its document. */
struct webhook_target {
    char *url;                                   /* owned (webhook_target_free) */
    int n_secrets;                               /* 1 or 2 */
    char secrets[2][WEBHOOK_SECRET_MAX + 1];     /* those that sign at the time asked */
};

/* Fills t from doc for an attempt at now_ms: its url and the secrets that
 * sign then (the newest first).  Returns 0, or -1 for a malformed document
 * or out of memory (t then holds nothing to free). */
int webhook_endpoint_target(const char *doc, size_t len, int64_t now_ms,
                            struct webhook_target *t);

/* Frees what t owns; t may be zeroed or filled. */
void webhook_target_free(struct webhook_target *t);

/* A new document made from doc with status "disabled" and disabled_reason
 * reason: malloc'd, its length in *out_len, or NULL (malformed, out of
 * memory).  The caller frees it. */
char *webhook_endpoint_disabled(const char *doc, size_t len, const char *reason,
                                size_t *out_len);

/* The event types a document's event_types names, as payment_event_type
 * values or-ed ("*": all of them); 0 for a malformed document. */
unsigned webhook_endpoint_types(const char *doc, size_t len);

#endif
