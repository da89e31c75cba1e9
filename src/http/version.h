/* version: the optimistic concurrency pieces of a request, as every
 * resource with a version reads them (payments, webhook endpoints): a
 * version written "N" (a canonical non-negative integer), the If-Match
 * header's one strong entity tag "N", the body's data.version beside it,
 * and a DELETE's ?version beside If-Match.
 *
 * Functions that take a request and return -1 have answered it (400
 * bad_request, or 428 version_required); the answers name no resource, so
 * each API gives the same text.  No state; any thread. */
#ifndef HTTP_VERSION_H
#define HTTP_VERSION_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "http/server.h"

/* Parses the len bytes at s, "N" in its one canonical form (no leading
 * zeros: the entity tag "00" is not the tag "0"), into *out: 0, or -1. */
int http_parse_version(const char *s, size_t len, int64_t *out);

/* If-Match: 1 with *v set when present, 0 when absent, -1 after answering
 * 400 when it is not exactly one strong entity tag "N". */
int http_if_match_version(http_request *req, int64_t *v);

/* The version the client based its write on, from data.version (data may
 * be NULL) and If-Match: 0 with *v set (-1 when neither is given and
 * required is 0), or -1 after answering 400 (malformed, or they disagree)
 * or 428 (required, and neither given). */
int http_client_version(http_request *req, json_t *data, int required, int64_t *v);

/* The same, with the body's version given as read: has_body says whether
 * data.version is an integer, body_version is its value. */
int http_client_version_of(http_request *req, int has_body, int64_t body_version, int required,
                           int64_t *v);

/* A DELETE's version, from its query (the only parameter it takes is
 * version, once) and If-Match: 0 with *v set (-1 when neither is given),
 * or -1 after answering 400 (an unknown, repeated or malformed parameter,
 * a malformed If-Match, or the two disagree). */
int http_delete_version(http_request *req, int64_t *v);

#endif
