/* problems: the answer to a body or query that breaks the rules, in the
 * shape every API of the server gives it: 400 validation_failed, its
 * message counting the problems, and "errors": [{"field", "message"}, ...]
 * beside error_code and error_message.  No state; any thread. */
#ifndef HTTP_PROBLEMS_H
#define HTTP_PROBLEMS_H

#include <jansson.h>

#include "http/server.h"

/* Answers 400 validation_failed listing errors (an array of {"field",
 * "message"} objects, borrowed), the message "the <subject> is not valid:
 * N problem(s)"; 500 internal_error when out of memory. */
void http_respond_invalid(http_request *req, const char *subject, json_t *errors);

/* http_respond_invalid with the one problem field, message. */
void http_respond_one_invalid(http_request *req, const char *subject, const char *field,
                              const char *message);

#endif
