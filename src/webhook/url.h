/* url: which destinations an endpoint may have.  A url is absolute, http or
 * https, with a host, no user information and at most WEBHOOK_URL_MAX
 * bytes (libcurl's URL parser judges the syntax).  Unless private
 * destinations are allowed (--webhook-allow-private), every address its host
 * resolves to must be public: loopback, private (RFC 1918, unique local
 * fc00::/7, shared 100.64/10), link-local, multicast, unspecified, broadcast
 * and IPv4-mapped forms of these are refused, at registration and again at
 * each connection (DNS may answer otherwise the second time).
 *
 * Threads: any.  webhook_url_resolve blocks on DNS (getaddrinfo): never call
 * it on an HTTP event-loop thread. */
#ifndef WEBHOOK_URL_H
#define WEBHOOK_URL_H

#include <stddef.h>
#include <sys/socket.h>

enum webhook_url_err {
    WEBHOOK_URL_OK = 0,
    WEBHOOK_URL_ESYNTAX = -1,   /* not an absolute url libcurl accepts, too long, user info */
    WEBHOOK_URL_ESCHEME = -2,   /* a scheme other than http and https */
    WEBHOOK_URL_EPRIVATE = -3,  /* the host is, or resolves to, a refused address */
    WEBHOOK_URL_ERESOLVE = -4,  /* the host does not resolve */
};

/* Checks url's syntax and scheme.  Returns 0 or an error, with a message
 * for the caller in why. */
int webhook_url_check(const char *url, char *why, size_t whylen);

/* Whether a connection to sa may be made: 1 yes, 0 refused (see above);
 * allow_private allows every address. */
int webhook_addr_allowed(const struct sockaddr *sa, int allow_private);

/* webhook_url_check, then resolves the host and checks every address it
 * has.  Returns 0 or an error, with a message for the caller in why. */
int webhook_url_resolve(const char *url, int allow_private, char *why, size_t whylen);

#endif
