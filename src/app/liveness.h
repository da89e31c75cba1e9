/* liveness: whether this process's HTTP server still answers, the check
 * behind each watchdog ping (main.c).  A store that is down does not count:
 * the probe asks GET /healthz, which touches no store.  Called from main's
 * thread only; keeps no state. */
#ifndef APP_LIVENESS_H
#define APP_LIVENESS_H

#include <stdint.h>

/* Connects to the server listening on host:port (a wildcard address is
 * probed on loopback) and asks GET /healthz.  Returns 1 when one of the
 * server's threads took the connection within timeout_ms: it answered, or
 * closed it (every connection slot busy); 0 when it was refused or nothing
 * happened in time (the server is wedged). */
int liveness_probe(const char *host, uint16_t port, int timeout_ms);

#endif
