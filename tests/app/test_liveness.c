/* test_liveness: the watchdog's probe says alive only when a thread serves
 * the port: it answers, or accepts and closes; a listener whose connections
 * nobody accepts (a wedged server) and a closed port are not alive. */
#include "app/liveness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

/* A loopback listener on a free port; its port in *port.  Returns the fd,
 * or -1. */
static int listener(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* What a serving thread does with one connection. */
struct server_thread {
    int listen_fd; /* accepted from once */
    int answer;    /* 1: reads the request and answers; 0: closes at once */
};

static void *serve_one(void *arg)
{
    struct server_thread *s = arg;
    int c = accept(s->listen_fd, NULL, NULL);
    if (c < 0)
        return NULL;
    if (s->answer) {
        char req[512];
        const char *resp = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        if (read(c, req, sizeof req) > 0 && write(c, resp, strlen(resp)) < 0)
            fprintf(stderr, "  cannot answer the probe\n");
    }
    close(c);
    return NULL;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void check_served(int answer)
{
    uint16_t port = 0;
    struct server_thread s = {listener(&port), answer};
    CHECK(s.listen_fd >= 0);
    if (s.listen_fd < 0)
        return;
    pthread_t th;
    CHECK(pthread_create(&th, NULL, serve_one, &s) == 0);
    CHECK_INT(liveness_probe("127.0.0.1", port, 2000), 1);
    CHECK(pthread_join(th, NULL) == 0);
    close(s.listen_fd);
}

static void test_answering_server_is_alive(void)
{
    check_served(1);
}

static void test_closing_server_is_alive(void)
{
    check_served(0); /* every connection slot busy: taken and closed */
}

static void test_wedged_server_is_not(void)
{
    uint16_t port = 0;
    int fd = listener(&port); /* listens, never accepts */
    CHECK(fd >= 0);
    int64_t started = now_ms();
    CHECK_INT(liveness_probe("0.0.0.0", port, 200), 0);
    int64_t took = now_ms() - started;
    CHECK(took >= 190 && took < 3000); /* waited its timeout, not forever (a loaded machine may add some) */
    close(fd);
}

static void test_closed_port_is_not(void)
{
    uint16_t port = 0;
    int fd = listener(&port);
    CHECK(fd >= 0);
    close(fd); /* nobody listens there now */
    CHECK_INT(liveness_probe("127.0.0.1", port, 200), 0);
}

TEST_MAIN({"answering_server_is_alive", test_answering_server_is_alive},
          {"closing_server_is_alive", test_closing_server_is_alive},
          {"wedged_server_is_not", test_wedged_server_is_not},
          {"closed_port_is_not", test_closed_port_is_not})
