/* nats_fixture: what the broker tests share to run real nats-server
 * processes through tests/broker/nats.sh (run from the repository root). */
#ifndef TESTS_BROKER_NATS_FIXTURE_H
#define TESTS_BROKER_NATS_FIXTURE_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NATS_SH "tests/broker/nats.sh"

static inline int64_t fixture_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void fixture_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Runs "nats.sh ARGS": its exit status, its first output line in out. */
static inline int nats_sh(const char *args, char *out, size_t outlen)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s %s", NATS_SH, args);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    char line[512] = "";
    if (!fgets(line, sizeof line, p))
        line[0] = '\0';
    char rest[256];
    while (fgets(rest, sizeof rest, p))
        ;
    int st = pclose(p);
    line[strcspn(line, "\r\n")] = '\0';
    if (out && outlen) { /* cut to fit: a port or URLs, in practice */
        size_t n = strlen(line) < outlen ? strlen(line) : outlen - 1;
        memcpy(out, line, n);
        out[n] = '\0';
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A child that waits for this process to end (the pipe's write end closes
 * with it, crash or not), then runs cleanup with /bin/sh: the servers are
 * stopped and their folder removed even when a test crashes. */
static inline int start_guardian(const char *cleanup)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        close(fds[1]);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        setsid(); /* a signal to the test's process group leaves us be */
        char c;
        while (read(fds[0], &c, 1) != 0 && errno == EINTR)
            ;
        execl("/bin/sh", "sh", "-c", cleanup, (char *)NULL);
        _exit(127);
    }
    close(fds[0]); /* the write end stays open, unseen by exec'd children */
    return 0;
}

/* Makes a private folder from tmpl ("/tmp/NAME-XXXXXX", into dir), has
 * its nats-server stopped and the folder removed when this process ends,
 * and starts that server: 0 with its client URL in url, else -1 with the
 * reason on stderr. */
static inline int fixture_nats_start(const char *tmpl, char *dir, size_t dirlen, char *url,
                                     size_t urllen)
{
    dir[0] = '\0';
    if (access(NATS_SH, X_OK) != 0 || strlen(tmpl) >= dirlen) {
        fprintf(stderr, "  %s not found: run from the repository's root\n", NATS_SH);
        return -1;
    }
    snprintf(dir, dirlen, "%s", tmpl);
    if (!mkdtemp(dir)) {
        fprintf(stderr, "  mkdtemp %s: %s\n", tmpl, strerror(errno));
        dir[0] = '\0';
        return -1;
    }
    char cleanup[512], args[256], port[64];
    snprintf(cleanup, sizeof cleanup, "%s stop '%s/nats'; rm -rf '%s'", NATS_SH, dir, dir);
    if (start_guardian(cleanup) != 0) {
        fprintf(stderr, "  cannot start the guardian of %s\n", dir);
        return -1;
    }
    snprintf(args, sizeof args, "start '%s/nats'", dir);
    if (nats_sh(args, port, sizeof port) != 0) {
        fprintf(stderr, "  nats-server did not start in %s\n", dir);
        return -1;
    }
    snprintf(url, urllen, "nats://127.0.0.1:%s", port);
    return 0;
}

#endif
