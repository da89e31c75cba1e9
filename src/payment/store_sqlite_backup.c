/* store_sqlite_backup: the online backup of an embedded store file, taken
 * by a process of its own (paymentd backup) while servers use the file:
 * SQLite's backup API copies one snapshot into a temporary file beside the
 * destination, which is then made durable and renamed. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "payment/store_sqlite.h"

/* Opens the store at path to copy it: read-write (a store left by a crash
 * is recovered from its write-ahead log first) but kept to reading, never
 * created, on the default VFS so that it shares the file with the
 * processes using it.  Reads the schema version, which takes the read lock
 * the copy will need: a file held exclusively fails here, and so does a
 * store of a newer schema than this build's. */
static int sqlite_backup_source(const char *path, sqlite3 **out, char *errbuf, size_t errlen)
{
    int rc = sqlite3_open_v2(path, out, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(*out, SQLITE_BUSY_TIMEOUT_MS);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(*out, "PRAGMA query_only = 1", NULL, NULL, NULL);
    char version[32] = "";
    if (rc == SQLITE_OK)
        rc = sqlite_pragma_text(*out, "PRAGMA user_version", version, sizeof version);
    if ((rc & 0xff) == SQLITE_BUSY) {
        store_errf(errbuf, errlen, "%s is held exclusively by a running paymentd: run it with "
                   "--store-shared true, or stop it, to back it up", path);
        return PAYMENT_STORE_EUNAVAILABLE;
    }
    if ((rc & 0xff) == SQLITE_CANTOPEN) {
        store_errf(errbuf, errlen, "no store at %s", path);
        return PAYMENT_STORE_EURI;
    }
    if (rc != SQLITE_OK) {
        store_errf(errbuf, errlen, "cannot read store %s: %s", path,
                   *out ? sqlite3_errmsg(*out) : sqlite3_errstr(rc));
        return rc == SQLITE_NOTADB ? PAYMENT_STORE_EURI : sqlite_map_err(rc);
    }
    if (atoi(version) <= 0) {
        store_errf(errbuf, errlen, "%s is not a paymentd store (no schema)", path);
        return PAYMENT_STORE_EURI;
    }
    /* A newer build's store is refused here as on open: its copy would be
     * one this build could not restore or vouch for. */
    char why[256];
    if (sqlite_schema_check(atoi(version), why, sizeof why) != SQLITE_OK) {
        store_errf(errbuf, errlen, "cannot open store %s: %s", path, why);
        return PAYMENT_STORE_EURI;
    }
    return PAYMENT_STORE_OK;
}

/* Copies src into the empty file tmp in one step, so in one read
 * transaction of src (a snapshot; writers in other processes go on), then
 * takes the copy out of WAL mode: the copy is one file, its log folded in. */
static int sqlite_backup_copy(sqlite3 *src, const char *tmp, char *errbuf, size_t errlen)
{
    sqlite3 *dst = NULL;
    int rc = sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    sqlite3_backup *b = rc == SQLITE_OK ? sqlite3_backup_init(dst, "main", src, "main") : NULL;
    if (b) {
        int step = sqlite3_backup_step(b, -1);
        rc = sqlite3_backup_finish(b); /* the step's error, if any */
        if (rc == SQLITE_OK && step != SQLITE_DONE)
            rc = step;
    } else if (rc == SQLITE_OK) {
        rc = sqlite3_errcode(dst);
    }
    char mode[16] = "";
    if (rc == SQLITE_OK)
        rc = sqlite_pragma_text(dst, "PRAGMA journal_mode = DELETE", mode, sizeof mode);
    if (rc == SQLITE_OK && strcasecmp(mode, "delete") != 0)
        rc = SQLITE_ERROR;
    if (rc != SQLITE_OK)
        store_errf(errbuf, errlen, "backup to %s: %s", tmp,
                   dst && sqlite3_errcode(dst) != SQLITE_OK ? sqlite3_errmsg(dst)
                                                             : sqlite3_errstr(rc));
    if (dst && sqlite3_close(dst) != SQLITE_OK && rc == SQLITE_OK) {
        store_errf(errbuf, errlen, "backup to %s: cannot close it", tmp);
        rc = SQLITE_ERROR; /* unreachable: the backup is finished */
    }
    if (rc == SQLITE_OK)
        return PAYMENT_STORE_OK;
    return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED ? PAYMENT_STORE_EUNAVAILABLE
                                                                      : PAYMENT_STORE_EINTERNAL;
}

/* fsync of the file or folder at path: 0 or -1 with errno. */
static int sqlite_fsync_path(const char *path, int flags)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | flags);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    if (close(fd) != 0 && rc == 0)
        return -1;
    errno = saved;
    return rc;
}

/* Makes the finished copy tmp durable and names it dest: the file's data,
 * then the rename, then the folder that holds the new name. */
static int sqlite_backup_publish(const char *tmp, const char *dest, char *errbuf, size_t errlen)
{
    char msg[128];
    if (sqlite_fsync_path(tmp, 0) != 0 || rename(tmp, dest) != 0) {
        store_errf(errbuf, errlen, "backup to %s: %s", dest, strerror_r(errno, msg, sizeof msg));
        return PAYMENT_STORE_EINTERNAL;
    }
    char dir[PATH_MAX];
    const char *slash = strrchr(dest, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dest)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - dest), dest); /* shorter than tmp */
    if (sqlite_fsync_path(dir, O_DIRECTORY) != 0) {
        store_errf(errbuf, errlen, "backup to %s: syncing its folder: %s", dest,
                   strerror_r(errno, msg, sizeof msg));
        return PAYMENT_STORE_EINTERNAL;
    }
    return PAYMENT_STORE_OK;
}

/* EURI when dest is the store itself, or a file with a write-ahead log
 * beside it (a store in use, or left by a crash: that log would be
 * replayed into the copy when it is opened). */
static int sqlite_backup_check_dest(const char *path, const char *dest, char *errbuf,
                                    size_t errlen)
{
    struct stat a, b;
    if (stat(path, &a) == 0 && stat(dest, &b) == 0 && a.st_dev == b.st_dev &&
        a.st_ino == b.st_ino) {
        store_errf(errbuf, errlen, "the backup file %s is the store itself", dest);
        return PAYMENT_STORE_EURI;
    }
    char wal[PATH_MAX];
    int n = snprintf(wal, sizeof wal, "%s-wal", dest);
    if (n < 0 || (size_t)n >= sizeof wal) {
        store_errf(errbuf, errlen, "backup file name too long: %s", dest);
        return PAYMENT_STORE_EURI;
    }
    if (access(wal, F_OK) == 0) {
        store_errf(errbuf, errlen, "%s has a write-ahead log beside it (%s): a store in use, "
                   "not a place for a backup", dest, wal);
        return PAYMENT_STORE_EURI;
    }
    return PAYMENT_STORE_OK;
}

int sqlite_backup(const char *uri, const char *dest, char *errbuf, size_t errlen)
{
    const char *path = uri + strlen(SQLITE_URI_PREFIX);
    if (!path[0] || !dest[0]) {
        store_errf(errbuf, errlen, "%s", path[0] ? "no backup file named"
                                                 : "the store URI names no file");
        return PAYMENT_STORE_EURI;
    }
    int err = sqlite_backup_check_dest(path, dest, errbuf, errlen);
    if (err != PAYMENT_STORE_OK)
        return err;
    char tmp[PATH_MAX];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", dest);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        store_errf(errbuf, errlen, "backup file name too long: %s", dest);
        return PAYMENT_STORE_EURI;
    }
    /* The copy's folder is checked first: a backup that cannot be written
     * is refused before it waits for the store. */
    int fd = mkstemp(tmp);
    if (fd < 0) {
        char msg[128];
        store_errf(errbuf, errlen, "cannot create %s: %s", tmp, strerror_r(errno, msg, sizeof msg));
        return PAYMENT_STORE_EINTERNAL;
    }
    if (close(fd) != 0) { /* unreachable: nothing was written to it */
        store_errf(errbuf, errlen, "cannot close %s", tmp);
        err = PAYMENT_STORE_EINTERNAL;
    }
    sqlite3 *src = NULL;
    if (err == PAYMENT_STORE_OK)
        err = sqlite_backup_source(path, &src, errbuf, errlen);
    if (err == PAYMENT_STORE_OK)
        err = sqlite_backup_copy(src, tmp, errbuf, errlen);
    if (src && sqlite3_close(src) != SQLITE_OK)
        (void)sqlite3_close_v2(src); /* unreachable: it has no statement left */
    if (err == PAYMENT_STORE_OK)
        err = sqlite_backup_publish(tmp, dest, errbuf, errlen);
    if (err != PAYMENT_STORE_OK) {
        char journal[PATH_MAX + 16];
        snprintf(journal, sizeof journal, "%s-journal", tmp);
        (void)unlink(tmp); /* best effort: the failure is already reported */
        (void)unlink(journal);
    }
    return err;
}
