/* problems: 400 validation_failed with its list of problems (see
 * problems.h). */
#include "http/problems.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/buf.h"

static void respond_internal(http_request *req)
{
    http_respond_error(req, 500, "internal_error", "internal error", NULL);
}

void http_respond_invalid(http_request *req, const char *subject, json_t *errors)
{
    assert(subject && json_is_array(errors));
    char *list = json_dumps(errors, JSON_COMPACT);
    if (!list) {
        respond_internal(req);
        return;
    }
    struct buf extra = BUF_INIT;
    buf_puts(&extra, "\"errors\":");
    buf_puts(&extra, list);
    free(list);
    size_t n = json_array_size(errors);
    char msg[96];
    snprintf(msg, sizeof msg, "the %s is not valid: %zu problem%s", subject, n,
             n == 1 ? "" : "s");
    if (buf_failed(&extra))
        respond_internal(req);
    else
        http_respond_error(req, 400, "validation_failed", msg, extra.data);
    buf_free(&extra);
}

void http_respond_one_invalid(http_request *req, const char *subject, const char *field,
                              const char *message)
{
    json_t *errors = json_pack("[{s:s, s:s}]", "field", field, "message", message);
    if (!errors) {
        respond_internal(req);
        return;
    }
    http_respond_invalid(req, subject, errors);
    json_decref(errors);
}
