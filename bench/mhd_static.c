/* mhd_static: the ceiling of libmicrohttpd alone on this machine.  Answers
 * every request with the bytes of one file, held in memory, as
 * application/json, and does nothing else.
 *
 *   mhd_static PORT FILE     listens on 127.0.0.1:PORT until SIGTERM or SIGINT
 *
 * The daemon is set up as paymentd's HTTP server sets up its own
 * (src/http/server.c, with paymentd's defaults): same flags, a listening
 * socket of its own with the same backlog, a thread pool of one thread per
 * CPU, the same per-connection memory, connection limit and timeout.  So the
 * distance between this server and paymentd on the same client script is
 * what paymentd adds to the HTTP library. */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <microhttpd.h>

/* These mirror src/http/server.c and paymentd's defaults (src/app/config.c). */
#define MHD_STATIC_CONNECTION_MEMORY (12 * 1024) /* HTTP_CONNECTION_MEMORY */
#define MHD_STATIC_TIMEOUT_S 30u                  /* --client-timeout default */
#define MHD_STATIC_CONNECTIONS (10000u + 1024u)   /* --max-connections + 1024 */
#define MHD_STATIC_BACKLOG 1024                   /* listen(2) in bind_listener */

/* The whole of FILE in a heap buffer the caller frees; NULL on failure
 * (reported on stderr). */
static char *mhd_static_read_file(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "mhd_static: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || st.st_size < 0) {
        fprintf(stderr, "mhd_static: %s: %s\n", path, strerror(errno));
        (void)fclose(f); /* already failing: nothing more to report */
        return NULL;
    }
    size_t len = (size_t)st.st_size;
    char *buf = malloc(len ? len : 1);
    if (!buf) {
        fprintf(stderr, "mhd_static: out of memory\n");
        (void)fclose(f); /* already failing: nothing more to report */
        return NULL;
    }
    size_t got = fread(buf, 1, len, f);
    int failed = got != len || ferror(f);
    if (fclose(f) != 0 || failed) {
        fprintf(stderr, "mhd_static: %s: short read\n", path);
        free(buf);
        return NULL;
    }
    *len_out = len;
    return buf;
}

/* A listening TCP socket on 127.0.0.1:port, as paymentd binds its own;
 * -1 on failure (reported on stderr). */
static int mhd_static_listen(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "mhd_static: socket: %s\n", strerror(errno));
        return -1;
    }
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, MHD_STATIC_BACKLOG) != 0) {
        fprintf(stderr, "mhd_static: cannot listen on 127.0.0.1:%u: %s\n", (unsigned)port,
                strerror(errno));
        (void)close(fd); /* already failing: nothing more to report */
        return -1;
    }
    return fd;
}

/* Answers with the shared response (cls).  As in paymentd, the first call
 * only announces a request and the answer is queued once its body, if any,
 * has been read; the body is dropped. */
static enum MHD_Result mhd_static_on_access(void *cls, struct MHD_Connection *conn,
                                            const char *url, const char *method,
                                            const char *version, const char *upload_data,
                                            size_t *upload_data_size, void **con_cls)
{
    struct MHD_Response *answer = cls;
    (void)url;
    (void)method;
    (void)version;
    (void)upload_data;
    if (!*con_cls) {
        *con_cls = conn; /* any non-NULL value: "announced" */
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    return MHD_queue_response(conn, MHD_HTTP_OK, answer);
}

/* 0 and *port set when s is a port number 1..65535. */
static int mhd_static_parse_port(const char *s, uint16_t *port)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v == 0 || v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

int main(int argc, char **argv)
{
    uint16_t port;
    if (argc != 3 || mhd_static_parse_port(argv[1], &port) != 0) {
        fprintf(stderr, "usage: mhd_static PORT FILE\n");
        return 2;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned threads = cpus > 0 ? (unsigned)cpus : 1;

    /* Blocked before the daemon's threads exist, so that they inherit the
     * mask and the signals wait for sigwait below. */
    sigset_t stop;
    int err;
    if (sigemptyset(&stop) != 0 || sigaddset(&stop, SIGTERM) != 0 ||
        sigaddset(&stop, SIGINT) != 0) {
        fprintf(stderr, "mhd_static: cannot build the signal set\n");
        return 1;
    }
    if ((err = pthread_sigmask(SIG_BLOCK, &stop, NULL)) != 0) {
        fprintf(stderr, "mhd_static: pthread_sigmask: %s\n", strerror(err));
        return 1;
    }

    size_t len = 0;
    char *body = mhd_static_read_file(argv[2], &len);
    if (!body)
        return 1;
    struct MHD_Response *answer = MHD_create_response_from_buffer(len, body,
                                                                  MHD_RESPMEM_PERSISTENT);
    if (!answer) {
        fprintf(stderr, "mhd_static: cannot create the response\n");
        free(body);
        return 1;
    }
    if (MHD_add_response_header(answer, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") !=
        MHD_YES) {
        fprintf(stderr, "mhd_static: cannot add the Content-Type header\n");
        MHD_destroy_response(answer);
        free(body);
        return 1;
    }
    int fd = mhd_static_listen(port);
    if (fd < 0) {
        MHD_destroy_response(answer);
        free(body);
        return 1;
    }
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                     MHD_USE_TURBO;
    struct MHD_Daemon *daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, mhd_static_on_access, answer,
        MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_STRICT_FOR_CLIENT, (int)1,
        MHD_OPTION_CONNECTION_TIMEOUT, MHD_STATIC_TIMEOUT_S,
        MHD_OPTION_CONNECTION_LIMIT, MHD_STATIC_CONNECTIONS,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)MHD_STATIC_CONNECTION_MEMORY,
        MHD_OPTION_END);
    if (!daemon) {
        fprintf(stderr, "mhd_static: cannot start the HTTP server on 127.0.0.1:%u\n",
                (unsigned)port);
        (void)close(fd); /* already failing: nothing more to report */
        MHD_destroy_response(answer);
        free(body);
        return 1;
    }

    int sig;
    if ((err = sigwait(&stop, &sig)) != 0)
        fprintf(stderr, "mhd_static: sigwait: %s\n", strerror(err));
    /* Closes the listening socket too. */
    MHD_stop_daemon(daemon);
    MHD_destroy_response(answer);
    free(body);
    return err ? 1 : 0;
}
