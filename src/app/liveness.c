/* liveness: a loopback GET /healthz to our own server (see liveness.h).
 * Blocking for at most its timeout; one socket, always closed. */
#include "app/liveness.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"

#define PROBE_REQUEST                                                                           \
    "GET /healthz HTTP/1.1\r\nHost: localhost\r\nUser-Agent: paymentd-watchdog\r\n"             \
    "Connection: close\r\n\r\n"

/* Milliseconds of the monotonic clock. */
static int64_t monotonic_ms(void)
{
    return clock_mono_us() / 1000;
}

/* The address to probe for a server listening on host: loopback for the
 * wildcards. */
static const char *probe_host(const char *host)
{
    if (strcmp(host, "0.0.0.0") == 0 || host[0] == '\0')
        return "127.0.0.1";
    if (strcmp(host, "::") == 0)
        return "::1";
    return host;
}

/* Waits until fd is ready for events or deadline_ms passes.  Returns 1
 * ready, 0 timed out, -1 error. */
static int wait_for(int fd, short events, int64_t deadline_ms)
{
    for (;;) {
        int64_t left = deadline_ms - monotonic_ms();
        if (left <= 0)
            return 0;
        struct pollfd pfd = {.fd = fd, .events = events};
        int n = poll(&pfd, 1, (int)left);
        if (n > 0)
            return 1;
        if (n == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* Closes a probe socket: Linux releases the fd even when close reports an
 * error, and the probe wrote nothing that could be lost. */
static void probe_close(int fd)
{
    int rc = close(fd);
    assert(rc == 0 || errno != EBADF); /* each socket closed once */
    (void)rc;
}

/* A non-blocking socket connected to ai within deadline_ms, or -1. */
static int probe_connect(const struct addrinfo *ai, int64_t deadline_ms)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd < 0)
        return -1;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        return fd;
    int err = 0;
    socklen_t len = sizeof err;
    if (errno == EINPROGRESS && wait_for(fd, POLLOUT, deadline_ms) == 1 &&
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0)
        return fd;
    probe_close(fd);
    return -1;
}

/* Sends the request and waits for the server's first byte or its close.
 * Returns 1 on either, 0 otherwise. */
static int probe_exchange(int fd, int64_t deadline_ms)
{
    const char *req = PROBE_REQUEST;
    size_t len = strlen(req), off = 0;
    while (off < len) {
        ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (n >= 0) {
            off += (size_t)n;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (wait_for(fd, POLLOUT, deadline_ms) != 1)
                return 0;
        } else if (errno == EPIPE || errno == ECONNRESET) {
            return 1; /* a thread took the connection and closed it */
        } else if (errno != EINTR) {
            return 0;
        }
    }
    for (;;) {
        if (wait_for(fd, POLLIN, deadline_ms) != 1)
            return 0;
        char answer[64];
        ssize_t n = recv(fd, answer, sizeof answer, 0);
        if (n >= 0 || errno == ECONNRESET)
            return 1; /* "HTTP/1.1 ...", or closed by a thread */
        if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
            return 0;
    }
}

int liveness_probe(const char *host, uint16_t port, int timeout_ms)
{
    assert(host && timeout_ms > 0);
    int64_t deadline = monotonic_ms() + timeout_ms;
    char service[8];
    int n = snprintf(service, sizeof service, "%u", (unsigned)port);
    assert(n > 0 && (size_t)n < sizeof service);
    (void)n;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *list = NULL;
    if (getaddrinfo(probe_host(host), service, &hints, &list) != 0)
        return 0;
    int alive = 0;
    for (const struct addrinfo *ai = list; ai && !alive; ai = ai->ai_next) {
        int fd = probe_connect(ai, deadline);
        if (fd < 0)
            continue;
        alive = probe_exchange(fd, deadline);
        probe_close(fd);
    }
    freeaddrinfo(list);
    return alive;
}
