/* version: what this build of paymentd is, for `paymentd --version` and the
 * paymentd_build_info metric: its release (the VERSION file), the git commit
 * it was built from, the store schema versions it writes, and the version of
 * every library it runs with, as each library reports it at run time (the
 * shared library loaded, not the headers built against).
 *
 * Threads: every function may be called from any thread; nothing is cached. */
#ifndef APP_VERSION_H
#define APP_VERSION_H

#include <stdio.h>

#include "core/buf.h"

/* The release, "1.0.0": a static string. */
const char *version_release(void);

/* The git commit built from (12 hex digits), or "unknown": a static string. */
const char *version_commit(void);

/* Writes the `--version` text to out, one "name value" per line, the first
 * "paymentd RELEASE".  Returns 0, or -1 when out could not be written. */
int version_print(FILE *out);

/* Appends the paymentd_build_info gauge (Prometheus text format): value 1,
 * labelled with the release, the commit, the schema versions and the
 * libraries' versions. */
void version_metrics(struct buf *b);

#endif
