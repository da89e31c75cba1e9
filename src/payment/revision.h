/* revision: a payment's next version, from its stored document and a
 * replace or a patch: the one definition the synchronous handlers (PUT,
 * PATCH) and the worker applying asynchronous operations share.
 *
 * What it decides, in this order:
 *   - the organisation cannot change: data.organisation_id, when given,
 *     and the organisation the request acts for, when given, must be the
 *     stored one (else one problem on data.organisation_id);
 *   - the next attributes and relationships: a replace takes the request's;
 *     a patch merges them into the stored ones (RFC 7396): null attributes
 *     change nothing, null relationships remove them;
 *   - the result is valid: attributes an object (null members removed, then
 *     every rule of validate.h, unless a replace's were validated already:
 *     attributes_valid), relationships an object when present; every
 *     problem is reported at once;
 *   - the next document: the stored id, organisation and created_on, the
 *     type the request names (else the stored one), version base + 1,
 *     modified_on now.
 * It does not compare versions, and checks neither the body's id against
 * the path nor the caller's rights: the store's compare-and-set decides the
 * version, the caller the rest.
 *
 * Threads: none kept; reentrant.  Errors: enum revision_err, here only. */
#ifndef PAYMENT_REVISION_H
#define PAYMENT_REVISION_H

#include <jansson.h>
#include <stdint.h>

#include "payment/validate.h"

enum revision_err {
    REVISION_OK = 0,
    REVISION_EINVALID = -1, /* the request gives no valid next version (400): see errors */
    REVISION_ESTORED = -2,  /* the stored document lacks its id or organisation_id */
    REVISION_ENOMEM = -3,   /* out of memory */
};

enum revision_mode {
    REVISION_REPLACE, /* PUT: the request's attributes and relationships */
    REVISION_PATCH,   /* PATCH: merged into the stored ones */
};

/* What the next version is made from; everything borrowed and unchanged. */
struct revision_input {
    const json_t *current;             /* the stored document (the "data" object) */
    int64_t created_ms;                /* its creation time: created_on when it has none */
    int64_t base_version;              /* the version the request is based on, >= 0 */
    const json_t *data;                /* the request's "data" object */
    enum revision_mode mode;
    const char *organisation_id;       /* the organisation the request is for, or NULL */
    const payment_validator *validator;
    int attributes_valid;              /* replace: data's attributes passed the validator already
                                          (the HTTP handler's body check): not checked again */
    int64_t now_ms;                    /* modified_on of the next version */
};

/* Computes the next version.  Returns 0 with *doc, a new document (the
 * caller owns the reference; serialize it with payment_doc_row), or
 * REVISION_EINVALID with *errors, a new array of {"field", "message"}
 * problems (the caller owns it), or REVISION_ESTORED or REVISION_ENOMEM.
 * Whatever is not returned is set to NULL. */
int revision_next(const struct revision_input *in, json_t **doc, json_t **errors);

#endif
