/* fsync_rate: how many single fdatasync(2) calls per second the disk under a
 * folder completes, each after rewriting one 4 KiB block.
 *
 *   fsync_rate DIR [SECONDS]     prints one integer: calls per second
 *
 * This is the ceiling of a store that makes each write durable on its own;
 * group commit exists to beat it.  The block is rewritten in place (the file
 * is allocated and synced first), so each call flushes data, not the file's
 * size.  The file is removed at the end. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FSYNC_RATE_BLOCK 4096

static double fsync_rate_now(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        perror("fsync_rate: clock_gettime");
        exit(1);
    }
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Writes the block at offset 0 and makes it durable; 0 or -1 with errno. */
static int fsync_rate_write_sync(int fd, const char *block)
{
    ssize_t n = pwrite(fd, block, FSYNC_RATE_BLOCK, 0);
    if (n != FSYNC_RATE_BLOCK) {
        if (n >= 0)
            errno = EIO;
        return -1;
    }
    return fdatasync(fd);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: fsync_rate DIR [SECONDS]\n");
        return 2;
    }
    double seconds = argc == 3 ? atof(argv[2]) : 3.0;
    if (seconds <= 0) {
        fprintf(stderr, "fsync_rate: SECONDS must be positive\n");
        return 2;
    }

    char path[4096];
    int len = snprintf(path, sizeof path, "%s/fsync_rate.XXXXXX", argv[1]);
    if (len < 0 || (size_t)len >= sizeof path) {
        fprintf(stderr, "fsync_rate: folder name too long\n");
        return 2;
    }
    int fd = mkstemp(path);
    if (fd < 0) {
        fprintf(stderr, "fsync_rate: %s: %s\n", path, strerror(errno));
        return 1;
    }

    char block[FSYNC_RATE_BLOCK];
    memset(block, 'x', sizeof block);
    int rc = 0;
    if (fsync_rate_write_sync(fd, block) != 0 || fsync(fd) != 0) {
        fprintf(stderr, "fsync_rate: %s: %s\n", path, strerror(errno));
        rc = 1;
    }

    long calls = 0;
    double start = fsync_rate_now(), elapsed = 0;
    while (rc == 0 && elapsed < seconds) {
        block[calls % FSYNC_RATE_BLOCK] ^= 1; /* a real change every time */
        if (fsync_rate_write_sync(fd, block) != 0) {
            fprintf(stderr, "fsync_rate: %s: %s\n", path, strerror(errno));
            rc = 1;
        }
        calls++;
        elapsed = fsync_rate_now() - start;
    }

    if (close(fd) != 0 && rc == 0) {
        fprintf(stderr, "fsync_rate: close: %s\n", strerror(errno));
        rc = 1;
    }
    if (unlink(path) != 0 && rc == 0) {
        fprintf(stderr, "fsync_rate: unlink: %s\n", strerror(errno));
        rc = 1;
    }
    if (rc == 0 && printf("%.0f\n", (double)calls / elapsed) < 0)
        rc = 1;
    return rc;
}
