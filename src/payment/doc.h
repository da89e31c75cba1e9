/* doc: a payment's stored form, the "data" object of the API
 *   {"type", "id", "version", "organisation_id", "created_on", "modified_on",
 *    "attributes", "relationships"}
 * serialized once per write and served as stored, and the columns a store
 * indexes from it.  Also the byte-level rules of a request body. */
#ifndef PAYMENT_DOC_H
#define PAYMENT_DOC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "payment/store.h"

#define PAYMENT_BODY_MAX_DEPTH 32 /* the root object is level 1 */

/* Parses a request body: one JSON object, valid UTF-8, no duplicate keys,
 * nested at most PAYMENT_BODY_MAX_DEPTH deep.  Returns a new reference, or
 * NULL with a message for a 400 bad_request in msg. */
json_t *payment_body_parse(const char *body, size_t len, char *msg, size_t msglen);

/* Builds a document (new reference; NULL out of memory).  attributes and
 * relationships are borrowed (the document takes its own references);
 * relationships may be NULL.  created_on is the stored text form. */
json_t *payment_doc_new(const char *type, const char *id, int64_t version, const char *org,
                        const char *created_on, int64_t modified_ms, json_t *attributes,
                        json_t *relationships);

/* Serializes doc into *text (malloc'd, the caller frees it) and fills row
 * from it.  The row's pointers point into doc and *text: both must outlive
 * the row.  Returns 0, or -1 out of memory or on a malformed document. */
int payment_doc_row(const json_t *doc, int64_t created_ms, int64_t modified_ms,
                    struct payment_row *row, char **text);

/* The row's columns derived from two attributes' strings (either may be
 * NULL): the processing date when it has a date's length, the amount's
 * sort key when it is a decimal.  Shared by payment_doc_row and the body's
 * fast path (fastbody.h). */
void payment_row_derive(struct payment_row *row, const char *processing_date, size_t date_len,
                        const char *amount, size_t amount_len);

/* The string member key of obj, or NULL when absent or not a string. */
const char *payment_doc_string(const json_t *obj, const char *key);

#endif
