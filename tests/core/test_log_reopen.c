/* test_log_reopen: --log-file's reopen after logrotate moved the file: the
 * lines written before are in the moved file, those after in the new one,
 * each whole; threads logging meanwhile lose no line and split none; a
 * reopen that fails leaves the logger writing where it did. */
#include "core/log.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"

#define WRITERS 4
#define ROTATIONS 50

/* A fresh directory under /tmp with "log" as the path inside it. */
static int temp_dir(char dir[64], char log[96])
{
    snprintf(dir, 64, "/tmp/paymentd-logreopen-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(log, 96, "%s/log", dir);
    return 0;
}

/* Counts the lines of path that contain needle, and the lines that are not
 * one whole JSON object ({...} then a newline) into *broken. */
static long count_lines(const char *path, const char *needle, long *broken)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[4096];
    long n = 0;
    while (fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        if (len < 3 || line[0] != '{' || line[len - 1] != '\n' || line[len - 2] != '}')
            ++*broken;
        if (strstr(line, needle))
            n++;
    }
    fclose(f);
    return n;
}

static void test_rotate_then_reopen(void)
{
    char dir[64], path[96], moved[128], err[256];
    CHECK(temp_dir(dir, path) == 0);
    mode_t old_mask = umask(0);
    int fd = log_file_open(path, err, sizeof err);
    umask(old_mask);
    CHECK(fd > 2);
    if (fd <= 2)
        return;
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0640);
    const struct logger lg = {LOG_INFO, fd};
    log_msg(&lg, LOG_INFO, "before rotation");
    snprintf(moved, sizeof moved, "%s.1", path);
    CHECK(rename(path, moved) == 0);
    log_msg(&lg, LOG_INFO, "after the move, before the reopen");
    CHECK_INT(log_reopen(&lg, path, err, sizeof err), 0);
    log_msg(&lg, LOG_INFO, "after the reopen");
    long broken = 0;
    CHECK_INT(count_lines(moved, "before rotation", &broken), 1);
    CHECK_INT(count_lines(moved, "before the reopen", &broken), 1);
    CHECK_INT(count_lines(moved, "after the reopen", &broken), 0);
    CHECK_INT(count_lines(path, "after the reopen", &broken), 1);
    CHECK_INT(count_lines(path, "before", &broken), 0);
    CHECK_INT(broken, 0);
    /* The fd keeps its number and stays close-on-exec. */
    CHECK_INT(lg.fd, fd);
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    /* A reopen that cannot open leaves the logger on its file. */
    char bad[128];
    snprintf(bad, sizeof bad, "%s/missing/log", dir);
    CHECK_INT(log_reopen(&lg, bad, err, sizeof err), -1);
    CHECK(strncmp(err, bad, strlen(bad)) == 0 && strstr(err, "No such file"));
    log_msg(&lg, LOG_INFO, "after a failed reopen");
    CHECK_INT(count_lines(path, "after a failed reopen", &broken), 1);
    CHECK(close(fd) == 0);
    unlink(path);
    unlink(moved);
    rmdir(dir);
}

/* What the writer threads share with the rotating one. */
struct writers {
    const struct logger *lg; /* reopened meanwhile */
    atomic_int stop;         /* set once the rotations are done */
    atomic_long lines;       /* lines logged */
};

static void *writer(void *arg)
{
    struct writers *w = arg;
    while (!atomic_load(&w->stop)) {
        /* Long enough that a split write would show as a broken line. */
        log_msg(w->lg, LOG_INFO, "writer line %ld %0300d", atomic_fetch_add(&w->lines, 1), 7);
    }
    return NULL;
}

static void test_no_line_lost_while_rotating(void)
{
    char dir[64], path[96], moved[160], err[256];
    CHECK(temp_dir(dir, path) == 0);
    int fd = log_file_open(path, err, sizeof err);
    CHECK(fd > 2);
    if (fd <= 2)
        return;
    const struct logger lg = {LOG_INFO, fd};
    struct writers w = {.lg = &lg};
    pthread_t threads[WRITERS];
    int started = 0;
    for (; started < WRITERS; started++)
        if (pthread_create(&threads[started], NULL, writer, &w) != 0)
            break;
    CHECK_INT(started, WRITERS);
    int reopen_failures = 0;
    for (int i = 1; i <= ROTATIONS; i++) {
        usleep(2000);
        snprintf(moved, sizeof moved, "%s.%d", path, i);
        CHECK(rename(path, moved) == 0);
        reopen_failures += log_reopen(&lg, path, err, sizeof err) != 0;
    }
    atomic_store(&w.stop, 1);
    for (int i = 0; i < started; i++)
        CHECK(pthread_join(threads[i], NULL) == 0);
    CHECK_INT(reopen_failures, 0);
    long total = 0, broken = 0, files_with_lines = 0;
    for (int i = 0; i <= ROTATIONS; i++) {
        if (i == 0)
            snprintf(moved, sizeof moved, "%s", path);
        else
            snprintf(moved, sizeof moved, "%s.%d", path, i);
        long n = count_lines(moved, "writer line", &broken);
        CHECK(n >= 0);
        total += n;
        files_with_lines += n > 0;
        unlink(moved);
    }
    CHECK_INT(total, atomic_load(&w.lines));
    CHECK_INT(broken, 0);
    CHECK(files_with_lines > ROTATIONS / 2); /* the lines did move along */
    fprintf(stderr, "  %ld lines from %d threads over %d rotations, in %ld files\n", total,
            WRITERS, ROTATIONS, files_with_lines);
    CHECK(close(fd) == 0);
    rmdir(dir);
}

/* Started with standard input closed (a supervisor's doing), the file must
 * not become fd 0: a reopen replaces the logger's fd, which must never be a
 * standard one. */
static void test_file_never_takes_a_standard_fd(void)
{
    char dir[64], path[96], err[256];
    CHECK(temp_dir(dir, path) == 0);
    int saved = dup(0);
    CHECK(saved > 2);
    CHECK(close(0) == 0);
    int fd = log_file_open(path, err, sizeof err);
    CHECK(fd > 2);
    CHECK(fcntl(fd, F_GETFD) == FD_CLOEXEC);
    CHECK(fcntl(0, F_GETFD) == -1); /* fd 0 left free, not held open */
    CHECK(dup2(saved, 0) == 0);
    CHECK(close(saved) == 0);
    if (fd > 2) {
        struct logger lg = {LOG_INFO, fd};
        CHECK(log_reopen(&lg, path, err, sizeof err) == 0);
        CHECK(close(fd) == 0);
    }
    CHECK(unlink(path) == 0);
    rmdir(dir);
}

TEST_MAIN({"rotate_then_reopen", test_rotate_then_reopen},
          {"file_never_takes_a_standard_fd", test_file_never_takes_a_standard_fd},
          {"no_line_lost_while_rotating", test_no_line_lost_while_rotating})
