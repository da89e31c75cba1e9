/* validate: the rules a payment document must satisfy, from the seed spec's
 * Payment definition (see schema.h, generated from it) and the money rules of
 * ISO 4217 and the payment schemes.
 *
 * Every problem is reported, not just the first: each appends one object
 * {"field": "data.attributes.amount", "message": "..."} to a JSON array the
 * caller owns.  Field paths use dots for members and [i] for array items,
 * e.g. "data.attributes.beneficiary_party.address[1]".
 *
 * A validator is immutable once built and safe to share between threads. */
#ifndef PAYMENT_VALIDATE_H
#define PAYMENT_VALIDATE_H

#include <jansson.h>
#include <stddef.h>

#include "payment/schema.h"

typedef struct payment_validator payment_validator;

enum payment_check {
    PAYMENT_CHECK_CREATE,  /* POST: organisation_id and attributes required, version 0 if given */
    PAYMENT_CHECK_REPLACE, /* PUT: as create, but any version >= 0 */
    PAYMENT_CHECK_PATCH,   /* PATCH: every member optional; attributes is a merge patch */
};

/* Builds the validator (compiles the spec's patterns).  NULL on failure. */
payment_validator *payment_validator_new(void);
void payment_validator_free(payment_validator *v);

/* Checks the request's "data" object for the given kind of write:
 * type (string matching ^[A-Za-z_]*$, may be empty), id (UUID), version
 * (integer >= 0; 0 on create), organisation_id (UUID), attributes (object),
 * relationships (object).  created_on and modified_on are ignored.
 * For CREATE and REPLACE it first removes null members from attributes
 * (payment_attributes_strip_nulls) and then validates them fully
 * (payment_validate_attributes); for PATCH the attributes are a merge patch
 * and are validated after merging, by the caller.
 * data may be any JSON value (a non-object is one problem, field "data").
 * Returns the count of problems appended (0: valid), or -1 out of memory. */
int payment_validate_data(const payment_validator *v, enum payment_check mode, json_t *data,
                          json_t *errors);

/* Removes every object member whose value is null, recursively, including
 * inside objects held by arrays.  Null array items are left in place. */
void payment_attributes_strip_nulls(json_t *attributes);

/* Whether s (len bytes, need not be NUL-terminated) matches pattern
 * pattern_id of schema_patterns, as the validation judges a string: one
 * holding a NUL never matches.  Returns 1 (match), 0 (no match) or -1 (out
 * of memory). */
int payment_validator_match(const payment_validator *v, int pattern_id, const char *s,
                            size_t len);

/* Whether s (len bytes) names a payment scheme: FPS, BACS, SEPAINSTANT,
 * SEPACT or SWIFT, the one list the validation and the list filter share. */
int payment_scheme_known(const char *s, size_t len);

/* A payment scheme's limits, as the spec's x-description of amount and
 * currency states them. */
struct payment_scheme_rule {
    const char *name;       /* value of payment_scheme */
    const char *max_amount; /* largest amount allowed, or NULL: no limit */
    const char *currency;   /* the only currency allowed, or NULL: any */
};

/* The rule of the scheme named s (len bytes), or NULL when it names none. */
const struct payment_scheme_rule *payment_scheme_rule(const char *s, size_t len);

/* The string rules of the tables (schema.h) the validation and the body's
 * fast path (fastbody.h) share: whether s (len bytes) is one of values
 * (NULL-terminated), and whether it has format. */
int payment_value_in_enum(const char *const *values, const char *s, size_t len);
int payment_value_has_format(enum schema_format format, const char *s, size_t len);

/* Validates a complete attributes object (nulls already removed): every
 * member the spec declares for its type, pattern, enum, format and x-length;
 * amount and currency (required; amount a positive plain decimal with no more
 * decimals than the currency's minor unit); processing_date a real date;
 * payment_scheme one of FPS, BACS, SEPAINSTANT, SEPACT, SWIFT with its
 * limits.  Members the spec does not declare are accepted as they are.
 * Returns the count of problems appended, or -1 out of memory. */
int payment_validate_attributes(const payment_validator *v, const json_t *attributes,
                                json_t *errors);

#endif
