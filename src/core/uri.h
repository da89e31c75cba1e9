/* uri: a store or broker URI shown without its secrets, for logs and
 * messages.  The one place that knows where a URI keeps a password: the
 * user information of its authority ("scheme://user:PASSWORD@host...") and
 * any "password=" option of its query (libpq's).
 *
 * Threads: none; reentrant.  Errors: none (the output is always a
 * NUL-terminated string, cut to its buffer). */
#ifndef CORE_URI_H
#define CORE_URI_H

#include <stddef.h>

/* Writes uri into out (cap bytes, > 0) with every password replaced by
 * "***".  The authority ends at the first '/' after "://" (as libpq reads
 * it), and its user information at the last '@' before that, so a password
 * holding '?', '#' or '@' is hidden whole. */
void uri_redact(const char *uri, char *out, size_t cap);

#endif
