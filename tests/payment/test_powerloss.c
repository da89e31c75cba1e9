/* Power loss: the embedded store's durability under a simulated power cut.
 *
 * A test VFS, "powerloss", wraps the unix VFS and is registered as the
 * default, so the store (opened without PAYMENT_STORE_EXCLUSIVE) runs on it
 * unchanged.  For every database, journal and WAL file it keeps a model of
 * the disk: the file's content as of its last xSync (the "image") and the
 * writes and truncations made since, in order.  Reads see every write, as
 * from the page cache.  At a chosen count of VFS writes, truncations,
 * syncs and deletes the power is cut: that call fails (made first, or not,
 * at random: a sync can reach the disk and still fail its caller), and so
 * does every later one, with SQLITE_IOERR (creating a file with
 * SQLITE_CANTOPEN), so the store's writer can no longer commit.  Once the
 * store is closed, a reboot rewrites each file to what a disk may have kept
 * (one mode per run, in turn):
 *
 *   - PL_LOST: nothing since the last sync (the file is its image);
 *   - PL_PREFIX: the unsynced operations in issue order up to a random one,
 *     which is torn: a random subset of its 512-byte units is kept (half the
 *     time the very last write, so the last sector written is torn);
 *   - PL_RANDOM: each 512-byte unit of each unsynced write, and each
 *     truncation, kept or lost independently;
 *   - PL_KEPT: everything (the disk wrote it all, the sync did not return).
 *
 * Units are cut at 512-byte boundaries of the file, and a unit is only ever
 * the bytes the write covered: bytes a write did not cover never change,
 * the "powersafe overwrite" the unix VFS reports.  Bytes past the synced end
 * that no kept write covers read as zeros.
 *
 * Directory entries: a file created, or deleted, since its directory was
 * last synced may reappear or vanish at the cut (always so under PL_LOST; a
 * coin flip per file otherwise); a deleted file that reappears has the
 * content it had at its last sync.  The directory is synced by xDelete with
 * dirSync, and by the first xSync of a journal or WAL opened with
 * SQLITE_OPEN_CREATE, which is when the unix VFS fsyncs the directory.
 *
 * Not modelled: the -shm file (opened by the unix VFS itself, not through
 * xOpen; SQLite rebuilds the WAL index from the WAL when the first
 * connection opens the database, as every reopen after a reboot is), and
 * temporary files.  The real xSync is never called: the model, not the
 * disk, decides what survives, and the runs are faster without fsyncs.
 *
 * The store test runs concurrent keyed writes (creates, then updates and
 * deletes of earlier ones, each with its idempotency record, each read back
 * once acknowledged) on a new store, with a clean close and reopen in the
 * middle, cuts the power at a random point, reboots, reopens the store and
 * checks: every write reported PAYMENT_STORE_OK is there with its
 * idempotency record; the write in flight at the cut, reported with an
 * error, is either wholly there (the payment at its version with its
 * document, and its record) or wholly absent; the events are exactly the
 * writes that took effect (each payment's history one event per such
 * write, in order, its versions from 0 to the stored one, a tombstone's
 * included, and the feed those events and no other); PRAGMA
 * integrity_check is "ok".  Every connection checkpoints at 16 WAL pages (an auto-extension;
 * the store sets no checkpoint size of its own), so that cuts also fall in
 * checkpoints and WAL restarts.  The reboot mode and the cut point change
 * from run to run; PL_SEED=<n> repeats a sequence of choices (thread
 * scheduling still varies).  A first test checks the model itself: a
 * commit without a sync is lost, one with a sync kept. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "payment/store.h"
#include "test.h"

#define PL_UNIT 512           /* what a disk writes wholly or not at all */
#define PL_RUNS 200           /* power cuts per test: about 7 s of CPU under ASan */
#define PL_WORKERS 4          /* threads writing at once */
#define PL_OPS_PER_PHASE 6    /* writes per worker before, and after, the mid-run reopen */
#define PL_MAX_PAYMENTS (2 * PL_OPS_PER_PHASE)
#define PL_MAX_WRITES (2 * PL_OPS_PER_PHASE)
#define PL_DOC_MAX 4096

/* ---- random numbers ----------------------------------------------------- */

/* splitmix64: small, and good enough to pick cut points and units. */
static uint64_t pl_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t pl_rand_below(uint64_t *state, uint64_t n)
{
    if (n == 0)
        abort(); /* a caller bug: nothing to pick from */
    return pl_rand(state) % n;
}

/* ---- locks: their calls fail only on a caller bug ------------------------ */

static void pl_mu_lock(pthread_mutex_t *mu)
{
    if (pthread_mutex_lock(mu) != 0)
        abort();
}

static void pl_mu_unlock(pthread_mutex_t *mu)
{
    if (pthread_mutex_unlock(mu) != 0)
        abort();
}

static void pl_cond_wait(pthread_cond_t *cv, pthread_mutex_t *mu)
{
    if (pthread_cond_wait(cv, mu) != 0)
        abort();
}

static void pl_cond_signal(pthread_cond_t *cv)
{
    if (pthread_cond_signal(cv) != 0)
        abort();
}

/* ---- the disk model ----------------------------------------------------- */

enum pl_op_kind { PL_WRITE, PL_TRUNCATE };

/* One unsynced change of a file. */
struct pl_op {
    enum pl_op_kind kind;
    sqlite3_int64 off;   /* PL_WRITE: where; PL_TRUNCATE: the new size */
    int len;             /* PL_WRITE: bytes in data */
    unsigned char *data; /* PL_WRITE: a copy of what was written, owned */
};

/* What the disk holds of one file name, and what it may lose. */
struct pl_shadow {
    char *path;             /* the full name SQLite opens, owned */
    unsigned char *image;   /* content as of the last sync, owned (NULL when empty) */
    size_t image_len;
    struct pl_op *ops;      /* changes since the last sync, in issue order, owned */
    size_t nops, ops_cap;
    unsigned char *ghost;   /* deleted since the directory's last sync: the
                             * deleted file's synced content, owned */
    size_t ghost_len;
    int has_ghost;          /* ghost is meaningful (it may be empty) */
    int exists_synced;      /* the name is in the directory as last synced */
    int exists_now;         /* the name is in the directory now */
    struct pl_shadow *next; /* in pl.files */
};

/* One open file: ours, then the unix VFS's file right after it. */
struct pl_file {
    sqlite3_file base;        /* first: what SQLite points at */
    struct pl_shadow *shadow; /* NULL for files not modelled (temporary files) */
    int dirsync_pending;      /* a journal or WAL opened with CREATE: its first
                               * sync also syncs the directory, as unix does */
    sqlite3_int64 align_;     /* keeps the unix file after it 8-byte aligned */
};

enum pl_mode { PL_LOST, PL_PREFIX, PL_RANDOM, PL_KEPT, PL_MODES };
static const char *const pl_mode_names[] = {"lost", "prefix-torn", "random-subset", "kept"};

/* The VFS's state, process-wide like the VFS registration. */
static struct {
    pthread_mutex_t mu;      /* guards everything below, and orders every modelled I/O */
    sqlite3_vfs vfs;         /* "powerloss" */
    sqlite3_vfs *unix_vfs;   /* what it wraps */
    struct pl_shadow *files; /* every file name modelled since pl_forget */
    int open_files;          /* modelled files open now */
    long budget;             /* the counted call that cuts the power; <= 0: never */
    long counted;            /* writes, truncations, syncs, deletes since pl_arm */
    int off;                 /* the power is cut: every counted call fails */
    int cut_makes_call;      /* the cut call is made before it fails */
} pl = {.mu = PTHREAD_MUTEX_INITIALIZER};

static sqlite3_file *pl_real(struct pl_file *p)
{
    return (sqlite3_file *)(p + 1);
}

/* What a counted call does. */
enum pl_power {
    PL_FAIL,      /* nothing: the power is off */
    PL_DO,        /* the call */
    PL_DO_FAIL,   /* the call, then the power goes before it returns: it fails */
};

/* Counts a modifying call and says what it does.  The cut call is made, or
 * not, at random: a sync made before the cut leaves its write durable
 * though unacknowledged.  Called with pl.mu held. */
static enum pl_power pl_power_allows(void)
{
    if (pl.off)
        return PL_FAIL;
    pl.counted++;
    if (pl.budget > 0 && pl.counted >= pl.budget) {
        pl.off = 1;
        return pl.cut_makes_call ? PL_DO_FAIL : PL_FAIL;
    }
    return PL_DO;
}

static int pl_power_is_off(void)
{
    pl_mu_lock(&pl.mu);
    int off = pl.off;
    pl_mu_unlock(&pl.mu);
    return off;
}

static void pl_ops_clear(struct pl_shadow *sh)
{
    for (size_t i = 0; i < sh->nops; i++)
        free(sh->ops[i].data);
    sh->nops = 0;
}

static void pl_op_push(struct pl_shadow *sh, struct pl_op op)
{
    if (sh->nops == sh->ops_cap) {
        sh->ops_cap = sh->ops_cap ? 2 * sh->ops_cap : 16;
        sh->ops = realloc(sh->ops, sh->ops_cap * sizeof *sh->ops);
        if (!sh->ops)
            abort(); /* the test cannot go on without memory */
    }
    sh->ops[sh->nops++] = op;
}

/* A growable byte image of a file. */
struct pl_bytes {
    unsigned char *data; /* owned */
    size_t len, cap;
};

static void pl_bytes_resize(struct pl_bytes *b, size_t len)
{
    if (len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < len)
            cap *= 2;
        b->data = realloc(b->data, cap);
        if (!b->data)
            abort();
        b->cap = cap;
    }
    if (len > b->len)
        memset(b->data + b->len, 0, len - b->len); /* never written: zeros */
    b->len = len;
}

static void pl_bytes_put(struct pl_bytes *b, sqlite3_int64 off, const unsigned char *data, int len)
{
    if ((size_t)off + (size_t)len > b->len)
        pl_bytes_resize(b, (size_t)off + (size_t)len);
    memcpy(b->data + off, data, (size_t)len);
}

/* Sets an empty b to a copy of data. */
static void pl_bytes_from(struct pl_bytes *b, const unsigned char *data, size_t len)
{
    pl_bytes_resize(b, len);
    if (len)
        memcpy(b->data, data, len);
}

/* Applies op to b: wholly when keep_one_in is 0, else each 512-byte unit of
 * a write (a truncation) with probability 1/keep_one_in. */
static void pl_op_apply(struct pl_bytes *b, const struct pl_op *op, uint64_t *rng,
                        unsigned keep_one_in)
{
    if (op->kind == PL_TRUNCATE) {
        if (keep_one_in == 0 || pl_rand_below(rng, keep_one_in) == 0)
            pl_bytes_resize(b, (size_t)op->off);
        return;
    }
    sqlite3_int64 pos = op->off, end = op->off + op->len;
    while (pos < end) {
        sqlite3_int64 unit_end = (pos / PL_UNIT + 1) * PL_UNIT;
        if (unit_end > end)
            unit_end = end;
        if (keep_one_in == 0 || pl_rand_below(rng, keep_one_in) == 0)
            pl_bytes_put(b, pos, op->data + (pos - op->off), (int)(unit_end - pos));
        pos = unit_end;
    }
}

/* A sync: every change of the file is now in its image. */
static void pl_shadow_sync(struct pl_shadow *sh)
{
    struct pl_bytes b = {sh->image, sh->image_len, sh->image_len};
    for (size_t i = 0; i < sh->nops; i++)
        pl_op_apply(&b, &sh->ops[i], NULL, 0);
    sh->image = b.data;
    sh->image_len = b.len;
    pl_ops_clear(sh);
}

/* The directory was synced: creations and deletions are now durable. */
static void pl_dir_sync(void)
{
    for (struct pl_shadow *sh = pl.files; sh; sh = sh->next) {
        free(sh->ghost);
        sh->ghost = NULL;
        sh->ghost_len = 0;
        sh->has_ghost = 0;
        sh->exists_synced = sh->exists_now;
    }
}

/* Reads a file that predates the model into its image, as synced. */
static void pl_shadow_load(struct pl_shadow *sh)
{
    FILE *f = fopen(sh->path, "rb");
    if (!f)
        return; /* does not exist */
    struct pl_bytes b = {NULL, 0, 0};
    unsigned char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        pl_bytes_put(&b, (sqlite3_int64)b.len, chunk, (int)n);
    if (ferror(f) || fclose(f) != 0)
        abort();
    sh->image = b.data;
    sh->image_len = b.len;
    sh->exists_synced = sh->exists_now = 1;
}

static struct pl_shadow *pl_shadow_find(const char *path)
{
    for (struct pl_shadow *sh = pl.files; sh; sh = sh->next)
        if (strcmp(sh->path, path) == 0)
            return sh;
    return NULL;
}

static struct pl_shadow *pl_shadow_get(const char *path)
{
    struct pl_shadow *sh = pl_shadow_find(path);
    if (sh)
        return sh;
    sh = calloc(1, sizeof *sh);
    if (!sh || !(sh->path = strdup(path)))
        abort();
    pl_shadow_load(sh);
    sh->next = pl.files;
    pl.files = sh;
    return sh;
}

static void pl_shadow_free(struct pl_shadow *sh)
{
    pl_ops_clear(sh);
    free(sh->ops);
    free(sh->image);
    free(sh->ghost);
    free(sh->path);
    free(sh);
}

/* Drops the model of every file (their files are gone or no longer used). */
static void pl_forget(void)
{
    pl_mu_lock(&pl.mu);
    if (pl.open_files != 0)
        abort(); /* a caller bug: a connection is still open */
    while (pl.files) {
        struct pl_shadow *sh = pl.files;
        pl.files = sh->next;
        pl_shadow_free(sh);
    }
    pl_mu_unlock(&pl.mu);
}

/* Cuts the power at the budget-th counted call from now (never when <= 0),
 * that call made first or not. */
static void pl_arm(long budget, int cut_makes_call)
{
    pl_mu_lock(&pl.mu);
    pl.budget = budget;
    pl.cut_makes_call = cut_makes_call;
    pl.counted = 0;
    pl.off = 0;
    pl_mu_unlock(&pl.mu);
}

static long pl_counted(void)
{
    pl_mu_lock(&pl.mu);
    long n = pl.counted;
    pl_mu_unlock(&pl.mu);
    return n;
}

/* What the disk keeps of sh's current file under mode. */
static void pl_survivor(const struct pl_shadow *sh, enum pl_mode mode, uint64_t *rng,
                        struct pl_bytes *out)
{
    pl_bytes_from(out, sh->image, sh->image_len);
    if (mode == PL_LOST || sh->nops == 0)
        return;
    if (mode == PL_KEPT) {
        for (size_t i = 0; i < sh->nops; i++)
            pl_op_apply(out, &sh->ops[i], NULL, 0);
        return;
    }
    if (mode == PL_RANDOM) {
        for (size_t i = 0; i < sh->nops; i++)
            pl_op_apply(out, &sh->ops[i], rng, 2);
        return;
    }
    /* PL_PREFIX: the first `torn` operations whole, then that one torn. */
    size_t torn = pl_rand_below(rng, 2) ? sh->nops - 1 : pl_rand_below(rng, sh->nops);
    for (size_t i = 0; i < torn; i++)
        pl_op_apply(out, &sh->ops[i], NULL, 0);
    pl_op_apply(out, &sh->ops[torn], rng, 2);
}

/* Replaces the real file at path with data, or removes it. */
static void pl_rewrite(const char *path, int exists, const struct pl_bytes *data)
{
    if (!exists) {
        if (unlink(path) != 0 && errno != ENOENT)
            abort();
        return;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        abort();
    size_t done = 0;
    while (done < data->len) {
        ssize_t n = pwrite(fd, data->data + done, data->len - done, (off_t)done);
        if (n <= 0)
            abort();
        done += (size_t)n;
    }
    if (close(fd) != 0)
        abort();
}

/* Reboots: every modelled file becomes what the disk kept under mode, and
 * the power comes back.  Every connection must be closed. */
static void pl_reboot(enum pl_mode mode, uint64_t *rng)
{
    pl_mu_lock(&pl.mu);
    if (pl.open_files != 0)
        abort(); /* a caller bug: the store is still open */
    for (struct pl_shadow *sh = pl.files; sh; sh = sh->next) {
        int keep_dir = mode != PL_LOST && pl_rand_below(rng, 2);
        int exists = keep_dir ? sh->exists_now : sh->exists_synced;
        struct pl_bytes kept = {NULL, 0, 0};
        if (exists && !keep_dir && sh->has_ghost)
            pl_bytes_from(&kept, sh->ghost, sh->ghost_len); /* the deletion is undone */
        else if (exists)
            pl_survivor(sh, mode, rng, &kept);
        pl_rewrite(sh->path, exists, &kept);
        pl_ops_clear(sh);
        free(sh->image);
        free(sh->ghost);
        sh->image = kept.data;
        sh->image_len = kept.len;
        sh->ghost = NULL;
        sh->ghost_len = 0;
        sh->has_ghost = 0;
        sh->exists_synced = sh->exists_now = exists;
    }
    pl.off = 0;
    pl.budget = 0;
    pl_mu_unlock(&pl.mu);
}

/* ---- the VFS ------------------------------------------------------------ */

static int pl_close(sqlite3_file *f)
{
    struct pl_file *p = (struct pl_file *)f;
    int rc = pl_real(p)->pMethods->xClose(pl_real(p));
    if (p->shadow) {
        pl_mu_lock(&pl.mu);
        pl.open_files--;
        pl_mu_unlock(&pl.mu);
    }
    return rc;
}

static int pl_read(sqlite3_file *f, void *buf, int amt, sqlite3_int64 off)
{
    struct pl_file *p = (struct pl_file *)f;
    return pl_real(p)->pMethods->xRead(pl_real(p), buf, amt, off);
}

static int pl_write(sqlite3_file *f, const void *buf, int amt, sqlite3_int64 off)
{
    struct pl_file *p = (struct pl_file *)f;
    sqlite3_file *real = pl_real(p);
    if (!p->shadow)
        return real->pMethods->xWrite(real, buf, amt, off);
    pl_mu_lock(&pl.mu);
    enum pl_power power = pl_power_allows();
    int rc = power == PL_FAIL ? SQLITE_IOERR_WRITE : real->pMethods->xWrite(real, buf, amt, off);
    if (rc == SQLITE_OK) {
        struct pl_op op = {PL_WRITE, off, amt, malloc((size_t)amt)};
        if (!op.data)
            abort();
        memcpy(op.data, buf, (size_t)amt);
        pl_op_push(p->shadow, op);
    }
    if (power == PL_DO_FAIL)
        rc = SQLITE_IOERR_WRITE;
    pl_mu_unlock(&pl.mu);
    return rc;
}

static int pl_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    struct pl_file *p = (struct pl_file *)f;
    sqlite3_file *real = pl_real(p);
    if (!p->shadow)
        return real->pMethods->xTruncate(real, size);
    pl_mu_lock(&pl.mu);
    enum pl_power power = pl_power_allows();
    int rc = power == PL_FAIL ? SQLITE_IOERR_TRUNCATE : real->pMethods->xTruncate(real, size);
    if (rc == SQLITE_OK)
        pl_op_push(p->shadow, (struct pl_op){PL_TRUNCATE, size, 0, NULL});
    if (power == PL_DO_FAIL)
        rc = SQLITE_IOERR_TRUNCATE;
    pl_mu_unlock(&pl.mu);
    return rc;
}

/* A sync makes the file's changes durable, whichever handle made them.
 * No real fsync: the model decides what a cut keeps. */
static int pl_sync(sqlite3_file *f, int flags)
{
    struct pl_file *p = (struct pl_file *)f;
    sqlite3_file *real = pl_real(p);
    if (!p->shadow)
        return real->pMethods->xSync(real, flags);
    pl_mu_lock(&pl.mu);
    enum pl_power power = pl_power_allows();
    if (power != PL_FAIL) {
        pl_shadow_sync(p->shadow);
        if (p->dirsync_pending)
            pl_dir_sync();
        p->dirsync_pending = 0;
    }
    pl_mu_unlock(&pl.mu);
    return power == PL_DO ? SQLITE_OK : SQLITE_IOERR_FSYNC;
}

static int pl_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    struct pl_file *p = (struct pl_file *)f;
    return pl_real(p)->pMethods->xFileSize(pl_real(p), size);
}

static int pl_lock(sqlite3_file *f, int level)
{
    struct pl_file *p = (struct pl_file *)f;
    return pl_real(p)->pMethods->xLock(pl_real(p), level);
}

static int pl_unlock(sqlite3_file *f, int level)
{
    struct pl_file *p = (struct pl_file *)f;
    return pl_real(p)->pMethods->xUnlock(pl_real(p), level);
}

static int pl_check_reserved(sqlite3_file *f, int *out)
{
    struct pl_file *p = (struct pl_file *)f;
    return pl_real(p)->pMethods->xCheckReservedLock(pl_real(p), out);
}

static int pl_file_control(sqlite3_file *f, int op, void *arg)
{
    struct pl_file *p = (struct pl_file *)f;
    return pl_real(p)->pMethods->xFileControl(pl_real(p), op, arg);
}

static int pl_sector_size(sqlite3_file *f)
{
    struct pl_file *p = (struct pl_file *)f;
    return pl_real(p)->pMethods->xSectorSize(pl_real(p));
}

static int pl_device_characteristics(sqlite3_file *f)
{
    struct pl_file *p = (struct pl_file *)f;
    return pl_real(p)->pMethods->xDeviceCharacteristics(pl_real(p));
}

static int pl_shm_map(sqlite3_file *f, int page, int size, int extend, void volatile **out)
{
    struct pl_file *p = (struct pl_file *)f;
    return pl_real(p)->pMethods->xShmMap(pl_real(p), page, size, extend, out);
}

static int pl_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    struct pl_file *p = (struct pl_file *)f;
    return pl_real(p)->pMethods->xShmLock(pl_real(p), offset, n, flags);
}

static void pl_shm_barrier(sqlite3_file *f)
{
    struct pl_file *p = (struct pl_file *)f;
    pl_real(p)->pMethods->xShmBarrier(pl_real(p));
}

static int pl_shm_unmap(sqlite3_file *f, int delete_flag)
{
    struct pl_file *p = (struct pl_file *)f;
    return pl_real(p)->pMethods->xShmUnmap(pl_real(p), delete_flag);
}

/* Version 2: no xFetch, so SQLite never maps a file and every read goes
 * through xRead. */
static const sqlite3_io_methods pl_io = {
    .iVersion = 2,
    .xClose = pl_close,
    .xRead = pl_read,
    .xWrite = pl_write,
    .xTruncate = pl_truncate,
    .xSync = pl_sync,
    .xFileSize = pl_file_size,
    .xLock = pl_lock,
    .xUnlock = pl_unlock,
    .xCheckReservedLock = pl_check_reserved,
    .xFileControl = pl_file_control,
    .xSectorSize = pl_sector_size,
    .xDeviceCharacteristics = pl_device_characteristics,
    .xShmMap = pl_shm_map,
    .xShmLock = pl_shm_lock,
    .xShmBarrier = pl_shm_barrier,
    .xShmUnmap = pl_shm_unmap,
};

#define PL_MODELLED                                                                      \
    (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_MAIN_JOURNAL | SQLITE_OPEN_WAL |                  \
     SQLITE_OPEN_SUPER_JOURNAL)

static int pl_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
    (void)vfs;
    struct pl_file *p = (struct pl_file *)f;
    memset(p, 0, sizeof *p);
    sqlite3_file *real = pl_real(p);
    if (!name || !(flags & PL_MODELLED) || (flags & SQLITE_OPEN_DELETEONCLOSE)) {
        int rc = pl.unix_vfs->xOpen(pl.unix_vfs, name, real, flags, out_flags);
        p->base.pMethods = rc == SQLITE_OK ? &pl_io : NULL;
        return rc;
    }
    pl_mu_lock(&pl.mu);
    struct pl_shadow *sh = pl_shadow_get(name);
    int rc = SQLITE_CANTOPEN; /* no file, and with the power off none can be made */
    if (sh->exists_now || ((flags & SQLITE_OPEN_CREATE) && !pl.off))
        rc = pl.unix_vfs->xOpen(pl.unix_vfs, name, real, flags, out_flags);
    if (rc == SQLITE_OK) {
        sh->exists_now = 1;
        p->shadow = sh;
        p->dirsync_pending = (flags & SQLITE_OPEN_CREATE) &&
                             (flags & (SQLITE_OPEN_MAIN_JOURNAL | SQLITE_OPEN_WAL |
                                       SQLITE_OPEN_SUPER_JOURNAL));
        pl.open_files++;
    }
    p->base.pMethods = rc == SQLITE_OK ? &pl_io : NULL;
    pl_mu_unlock(&pl.mu);
    return rc;
}

/* A deleted file keeps its synced content as a ghost until the directory
 * is synced: the cut may bring it back. */
static int pl_delete(sqlite3_vfs *vfs, const char *name, int dir_sync)
{
    (void)vfs;
    pl_mu_lock(&pl.mu);
    struct pl_shadow *sh = pl_shadow_find(name);
    enum pl_power power = sh ? pl_power_allows() : PL_DO;
    int rc = power == PL_FAIL ? SQLITE_IOERR_DELETE
                              : pl.unix_vfs->xDelete(pl.unix_vfs, name, dir_sync);
    if (rc == SQLITE_OK && sh && sh->exists_now) {
        if (sh->exists_synced && !sh->has_ghost) {
            sh->ghost = sh->image; /* the file the synced directory names */
            sh->ghost_len = sh->image_len;
            sh->has_ghost = 1;
        } else {
            free(sh->image);
        }
        sh->image = NULL;
        sh->image_len = 0;
        pl_ops_clear(sh);
        sh->exists_now = 0;
    }
    if (rc == SQLITE_OK && dir_sync)
        pl_dir_sync();
    pl_mu_unlock(&pl.mu);
    return power == PL_DO_FAIL ? SQLITE_IOERR_DELETE : rc;
}

static int pl_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    (void)vfs;
    return pl.unix_vfs->xAccess(pl.unix_vfs, name, flags, out);
}

static int pl_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    (void)vfs;
    return pl.unix_vfs->xFullPathname(pl.unix_vfs, name, n, out);
}

static void *pl_dl_open(sqlite3_vfs *vfs, const char *name)
{
    (void)vfs;
    return pl.unix_vfs->xDlOpen(pl.unix_vfs, name);
}

static void pl_dl_error(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    pl.unix_vfs->xDlError(pl.unix_vfs, n, out);
}

static void (*pl_dl_sym(sqlite3_vfs *vfs, void *lib, const char *sym))(void)
{
    (void)vfs;
    return pl.unix_vfs->xDlSym(pl.unix_vfs, lib, sym);
}

static void pl_dl_close(sqlite3_vfs *vfs, void *lib)
{
    (void)vfs;
    pl.unix_vfs->xDlClose(pl.unix_vfs, lib);
}

static int pl_randomness(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    return pl.unix_vfs->xRandomness(pl.unix_vfs, n, out);
}

static int pl_sleep(sqlite3_vfs *vfs, int us)
{
    (void)vfs;
    return pl.unix_vfs->xSleep(pl.unix_vfs, us);
}

static int pl_current_time(sqlite3_vfs *vfs, double *out)
{
    (void)vfs;
    return pl.unix_vfs->xCurrentTime(pl.unix_vfs, out);
}

static int pl_last_error(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    return pl.unix_vfs->xGetLastError(pl.unix_vfs, n, out);
}

static int pl_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    (void)vfs;
    return pl.unix_vfs->xCurrentTimeInt64(pl.unix_vfs, out);
}

/* Registers "powerloss" as the default VFS: 0, or -1 without the unix VFS. */
static int pl_install(void)
{
    pl.unix_vfs = sqlite3_vfs_find("unix");
    if (!pl.unix_vfs || pl.unix_vfs->iVersion < 2)
        return -1;
    pl.vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)sizeof(struct pl_file) + pl.unix_vfs->szOsFile,
        .mxPathname = pl.unix_vfs->mxPathname,
        .zName = "powerloss",
        .xOpen = pl_open,
        .xDelete = pl_delete,
        .xAccess = pl_access,
        .xFullPathname = pl_full_pathname,
        .xDlOpen = pl_dl_open,
        .xDlError = pl_dl_error,
        .xDlSym = pl_dl_sym,
        .xDlClose = pl_dl_close,
        .xRandomness = pl_randomness,
        .xSleep = pl_sleep,
        .xCurrentTime = pl_current_time,
        .xGetLastError = pl_last_error,
        .xCurrentTimeInt64 = pl_current_time64,
    };
    return sqlite3_vfs_register(&pl.vfs, 1) == SQLITE_OK ? 0 : -1;
}

static void pl_uninstall(void)
{
    if (sqlite3_vfs_unregister(&pl.vfs) != SQLITE_OK)
        abort(); /* it was registered */
    pl_forget();
}

/* ---- the workload ------------------------------------------------------- */

enum pl_kind { PL_CREATE, PL_UPDATE, PL_DELETE };

/* One write submitted for a payment. */
struct pl_write {
    enum pl_kind kind;
    int64_t version; /* the version written; a delete: the version it deleted */
    int acked;       /* reported PAYMENT_STORE_OK; else reported an error after the cut */
};

/* One payment's writes in submission order: all acknowledged but perhaps
 * the last, which was in flight at the cut. */
struct pl_payment {
    char id[UUID_STR_LEN + 1];
    int nwrites;
    struct pl_write writes[PL_MAX_WRITES];
};

/* A thread writing payments of its own, one write at a time. */
struct pl_worker {
    int index;
    payment_store *store; /* borrowed */
    uint64_t rng;
    int npay;
    struct pl_payment pay[PL_MAX_PAYMENTS];
    int stopped;          /* a write failed: the power is off */
    int failed_early;     /* a write failed while the power was on */
    int misread;          /* acknowledged writes not read back as written */
    pthread_mutex_t mu;   /* guards pending and err */
    pthread_cond_t cv;    /* signalled when the write in flight is reported */
    int pending;
    int err;
};

/* The idempotency record of a payment's write and the document it wrote,
 * derived from (worker, payment, write) so that the check rebuilds them. */
struct pl_answer {
    char key[48];
    char fingerprint[65];
    int status;
    char location[64];  /* "" when none */
    char etag[24];      /* "" when none */
    char doc[PL_DOC_MAX];
    size_t doc_len;     /* 0: a delete, no document */
};

/* Payment id's document at version: its id and version, padded to a length
 * of its own (50..3049 bytes) so that rows span different page counts. */
static void pl_doc(const char *id, int64_t version, char *out, size_t *len)
{
    unsigned pad = 50;
    for (const char *c = id; *c; c++)
        pad = pad * 31 + (unsigned char)*c;
    pad = (pad + (unsigned)version * 977u) % 3000u + 50u;
    int n = snprintf(out, PL_DOC_MAX, "{\"id\":\"%s\",\"version\":%" PRId64 ",\"pad\":\"%*s\"}",
                     id, version, (int)pad, "");
    if (n < 0 || n >= PL_DOC_MAX)
        abort(); /* PL_DOC_MAX holds the longest */
    *len = (size_t)n;
}

static void pl_answer(const struct pl_worker *w, int p, int n, struct pl_answer *a)
{
    const struct pl_payment *pay = &w->pay[p];
    const struct pl_write *wr = &pay->writes[n];
    snprintf(a->key, sizeof a->key, "key-%d-%d-%d", w->index, p, n);
    snprintf(a->fingerprint, sizeof a->fingerprint, "%064x", (w->index << 16) | (p << 8) | n);
    a->status = wr->kind == PL_CREATE ? 201 : wr->kind == PL_UPDATE ? 200 : 204;
    a->location[0] = a->etag[0] = a->doc[0] = 0;
    a->doc_len = 0;
    if (wr->kind == PL_CREATE)
        snprintf(a->location, sizeof a->location, "/v1/payments/%s", pay->id);
    if (wr->kind != PL_DELETE) {
        snprintf(a->etag, sizeof a->etag, "\"%" PRId64 "\"", wr->version);
        pl_doc(pay->id, wr->version, a->doc, &a->doc_len);
    }
}

static void pl_done(void *arg, int err, int64_t current_version, int64_t seq)
{
    struct pl_worker *w = arg;
    (void)current_version;
    (void)seq;
    pl_mu_lock(&w->mu);
    w->err = err;
    w->pending = 0;
    pl_cond_signal(&w->cv);
    pl_mu_unlock(&w->mu);
}

/* Submits payment p's last write and waits for its report. */
static int pl_submit(struct pl_worker *w, int p)
{
    struct pl_payment *pay = &w->pay[p];
    const struct pl_write *wr = &pay->writes[pay->nwrites - 1];
    struct pl_answer a;
    pl_answer(w, p, pay->nwrites - 1, &a);
    struct payment_idem idem = {
        .scope = "powerloss",
        .key = a.key,
        .fingerprint = a.fingerprint,
        .status = a.status,
        .location = a.location[0] ? a.location : NULL,
        .etag = a.etag[0] ? a.etag : NULL,
        .body = a.doc_len ? a.doc : NULL,
        .body_len = a.doc_len,
        .created_ms = 1000,
    };
    struct payment_row row;
    memset(&row, 0, sizeof row);
    memcpy(row.id, pay->id, sizeof row.id);
    snprintf(row.organisation_id, sizeof row.organisation_id, "0a0a0a0a-0000-4000-8000-%012d",
             w->index);
    row.version = wr->version;
    row.created_ms = 1000;
    row.modified_ms = 1000 + wr->version;
    row.currency = "EUR";
    row.reference = a.key;
    row.doc = a.doc;
    row.doc_len = a.doc_len;
    /* The event names the write by its key. */
    struct payment_event_info ev = {.request_id = a.key, .occurred_ms = 1000};
    pl_mu_lock(&w->mu);
    w->pending = 1;
    pl_mu_unlock(&w->mu);
    switch (wr->kind) {
    case PL_CREATE: payment_store_create(w->store, &row, &idem, &ev, pl_done, w); break;
    case PL_UPDATE: payment_store_update(w->store, &row, wr->version - 1, &idem, &ev, pl_done, w); break;
    case PL_DELETE: payment_store_delete(w->store, pay->id, wr->version, &idem, &ev, pl_done, w); break;
    }
    pl_mu_lock(&w->mu);
    while (w->pending)
        pl_cond_wait(&w->cv, &w->mu);
    int err = w->err;
    pl_mu_unlock(&w->mu);
    return err;
}

/* Whether a payment may take another write: all its writes acknowledged,
 * not deleted, room left. */
static int pl_live(const struct pl_payment *pay)
{
    const struct pl_write *last = &pay->writes[pay->nwrites - 1];
    return last->acked && last->kind != PL_DELETE && pay->nwrites < PL_MAX_WRITES;
}

/* Appends the worker's next write: a new payment, or an update or delete
 * of a live one.  Returns the payment's index, -1 when there is none. */
static int pl_next_write(struct pl_worker *w)
{
    int live[PL_MAX_PAYMENTS], nlive = 0;
    for (int p = 0; p < w->npay; p++)
        if (pl_live(&w->pay[p]))
            live[nlive++] = p;
    if (w->npay < PL_MAX_PAYMENTS && (nlive == 0 || pl_rand_below(&w->rng, 3) == 0)) {
        struct pl_payment *pay = &w->pay[w->npay];
        snprintf(pay->id, sizeof pay->id, "%08x-0000-4000-8000-%012d", (unsigned)w->index,
                 w->npay);
        pay->writes[0] = (struct pl_write){PL_CREATE, 0, 0};
        pay->nwrites = 1;
        return w->npay++;
    }
    if (nlive == 0)
        return -1;
    int p = live[pl_rand_below(&w->rng, (uint64_t)nlive)];
    struct pl_payment *pay = &w->pay[p];
    int64_t v = pay->writes[pay->nwrites - 1].version;
    pay->writes[pay->nwrites++] = pl_rand_below(&w->rng, 4) == 0
                                      ? (struct pl_write){PL_DELETE, v, 0}
                                      : (struct pl_write){PL_UPDATE, v + 1, 0};
    return p;
}

/* Whether payment p after its first n writes reads as got (err, version,
 * document). */
static int pl_state_is(const struct pl_worker *w, int p, int n, int err, int64_t version,
                       const struct buf *doc)
{
    const struct pl_payment *pay = &w->pay[p];
    if (n == 0 || pay->writes[n - 1].kind == PL_DELETE)
        return err == PAYMENT_STORE_ENOTFOUND;
    int64_t want = pay->writes[n - 1].version;
    char expect[PL_DOC_MAX];
    size_t len;
    pl_doc(pay->id, want, expect, &len);
    return err == PAYMENT_STORE_OK && version == want && doc->len == len &&
           memcmp(doc->data, expect, len) == 0;
}

/* Whether payment p reads, on the store's reader, as its last write left it. */
static int pl_reads_back(const struct pl_worker *w, int p)
{
    struct buf doc = BUF_INIT;
    int64_t version = -1;
    int err = payment_store_get(w->store, w->pay[p].id, &doc, &version);
    int same = pl_state_is(w, p, w->pay[p].nwrites, err, version, &doc);
    buf_free(&doc);
    return same;
}

static void *pl_worker_main(void *arg)
{
    struct pl_worker *w = arg;
    for (int i = 0; i < PL_OPS_PER_PHASE && !w->stopped; i++) {
        int p = pl_next_write(w);
        if (p < 0)
            break;
        int err = pl_submit(w, p);
        if (err == PAYMENT_STORE_OK) {
            w->pay[p].writes[w->pay[p].nwrites - 1].acked = 1;
            /* Readers hold WAL snapshots, which checkpoints must respect. */
            w->misread += !pl_reads_back(w, p);
            continue;
        }
        /* Not acknowledged: on disk or not.  Only the cut may fail a write,
         * and after it nothing can succeed. */
        w->stopped = 1;
        if (!pl_power_is_off()) {
            fprintf(stderr, "  worker %d: a write failed with the power on: %s\n", w->index,
                    payment_store_strerror(err));
            w->failed_early = 1;
        }
    }
    return NULL;
}

/* Runs every worker's next phase of writes on s, concurrently. */
static void pl_phase(struct pl_worker *workers, payment_store *s)
{
    pthread_t threads[PL_WORKERS];
    for (int i = 0; i < PL_WORKERS; i++) {
        workers[i].store = s;
        if (pthread_create(&threads[i], NULL, pl_worker_main, &workers[i]) != 0)
            abort();
    }
    for (int i = 0; i < PL_WORKERS; i++)
        if (pthread_join(threads[i], NULL) != 0)
            abort();
}

/* ---- the checks after a reboot ------------------------------------------ */

/* What the runs saw, for the closing summary. */
struct pl_stats {
    long runs;
    long cuts;             /* runs whose cut came before their end */
    long acked;            /* acknowledged writes checked */
    long in_flight_there;  /* unacknowledged writes found wholly there */
    long in_flight_absent; /* and wholly absent */
};

/* Checks that write n of payment p left its idempotency record (present),
 * or none. */
static void pl_check_record(payment_store *s, const struct pl_worker *w, int p, int n,
                            int present)
{
    struct pl_answer a;
    pl_answer(w, p, n, &a);
    struct payment_idem_found found = {.location = BUF_INIT, .body = BUF_INIT};
    int err = payment_store_idem_get(s, "powerloss", a.key, &found);
    if (err != (present ? PAYMENT_STORE_OK : PAYMENT_STORE_ENOTFOUND))
        fprintf(stderr, "  %s: the record of a write %s: %s\n", a.key,
                present ? "made" : "not made", payment_store_strerror(err));
    if (!present) {
        CHECK_INT(err, PAYMENT_STORE_ENOTFOUND);
    } else {
        CHECK_INT(err, PAYMENT_STORE_OK);
        if (err == PAYMENT_STORE_OK) {
            CHECK_STR(found.fingerprint, a.fingerprint);
            CHECK_INT(found.status, a.status);
            CHECK_STR(found.etag, a.etag);
            CHECK_STR(found.location.data ? found.location.data : "", a.location);
            CHECK(found.body.len == a.doc_len &&
                  (a.doc_len == 0 || memcmp(found.body.data, a.doc, a.doc_len) == 0));
        }
    }
    buf_free(&found.location);
    buf_free(&found.body);
}

/* The events a history read gives, checked one by one against the writes
 * that took effect. */
struct pl_history {
    const struct pl_worker *w;
    int p;
    int kept;      /* payment p's first writes that took effect */
    int n;         /* events read */
    int wrong;     /* events that are not the n-th kept write's */
};

/* The event of payment p's n-th write: its type, the version it records
 * (a delete: the tombstone's, one above the version it deleted), and the
 * document (a delete: the one it deleted). */
static int pl_event_is(const struct pl_worker *w, int p, int n, const struct payment_event *ev)
{
    const struct pl_write *wr = &w->pay[p].writes[n];
    enum payment_event_type type = wr->kind == PL_CREATE   ? PAYMENT_EVENT_CREATED
                                   : wr->kind == PL_UPDATE ? PAYMENT_EVENT_UPDATED
                                                           : PAYMENT_EVENT_DELETED;
    int64_t version = wr->kind == PL_DELETE ? wr->version + 1 : wr->version;
    char doc[PL_DOC_MAX];
    size_t len;
    pl_doc(w->pay[p].id, wr->version, doc, &len);
    struct pl_answer a;
    pl_answer(w, p, n, &a);
    return ev->type == type && ev->version == version && ev->doc_len == len &&
           memcmp(ev->doc, doc, len) == 0 && ev->request_id &&
           strcmp(ev->request_id, a.key) == 0 && strcmp(ev->payment_id, w->pay[p].id) == 0;
}

static int pl_history_event(void *arg, const struct payment_event *ev)
{
    struct pl_history *h = arg;
    if (h->n >= h->kept || !pl_event_is(h->w, h->p, h->n, ev)) {
        if (h->wrong++ == 0)
            fprintf(stderr, "  %s: event %d of %d kept writes is type %d, version %" PRId64
                            ", request %s\n", h->w->pay[h->p].id, h->n, h->kept, (int)ev->type,
                    ev->version, ev->request_id ? ev->request_id : "(none)");
    }
    h->n++;
    return 0;
}

/* Checks payment p's history: one event per write that took effect (its
 * first kept writes), in order, and no other, so the versions run from 0
 * to the stored one (a tombstone's included). */
static void pl_check_history(payment_store *s, const struct pl_worker *w, int p, int kept)
{
    struct pl_history h = {.w = w, .p = p, .kept = kept};
    int more = -1;
    CHECK_INT(payment_store_history(s, w->pay[p].id, -1, PAYMENT_EVENTS_PAGE_MAX,
                                    pl_history_event, &h, &more),
              PAYMENT_STORE_OK);
    CHECK_INT(more, 0);
    if (h.n != kept)
        fprintf(stderr, "  %s: %d events for %d writes that took effect\n", w->pay[p].id, h.n,
                kept);
    CHECK_INT(h.n, kept);
    CHECK_INT(h.wrong, 0);
}

static int pl_count_event(void *arg, const struct payment_event *ev)
{
    int64_t *last = arg;
    CHECK(ev->pos > last[0]);
    last[0] = ev->pos;
    last[1]++;
    return 0;
}

/* Checks that the feed holds want events, in increasing positions. */
static void pl_check_feed(payment_store *s, long want)
{
    struct payment_event_query q = {.limit = PAYMENT_EVENTS_PAGE_MAX, .all_orgs = 1,
                                    .from_ms = INT64_MIN, .to_ms = INT64_MAX};
    int64_t last[2] = {0, 0}; /* the last position read, and the events read */
    for (;;) {
        int64_t before = last[1], next = -1;
        int err = payment_store_events(s, &q, pl_count_event, last, &next);
        CHECK_INT(err, PAYMENT_STORE_OK);
        if (err != PAYMENT_STORE_OK || last[1] - before < q.limit)
            break;
        q.after_pos = next;
    }
    CHECK_INT(last[1], want);
}

/* Checks payment p: its acknowledged writes are all there; the write in
 * flight at the cut, if any, wholly there or wholly absent, its event with
 * it.  Adds its events to *events. */
static void pl_check_payment(payment_store *s, const struct pl_worker *w, int p,
                             struct pl_stats *stats, long *events)
{
    const struct pl_payment *pay = &w->pay[p];
    int acked = 0;
    while (acked < pay->nwrites && pay->writes[acked].acked)
        acked++;
    CHECK(acked >= pay->nwrites - 1); /* only the last may be unacknowledged */
    int in_flight = acked < pay->nwrites;
    struct buf doc = BUF_INIT;
    int64_t version = -1;
    int err = payment_store_get(s, pay->id, &doc, &version);
    int applied = -1; /* the write in flight: 0 absent, 1 there */
    if (pl_state_is(w, p, acked, err, version, &doc))
        applied = 0;
    else if (in_flight && pl_state_is(w, p, acked + 1, err, version, &doc))
        applied = 1;
    buf_free(&doc);
    if (applied < 0) {
        fprintf(stderr, "  %s: %d of its %d writes acknowledged, read %s, version %" PRId64 "\n",
                pay->id, acked, pay->nwrites, payment_store_strerror(err), version);
        CHECK(!"an acknowledged write is lost, or a write is half there");
        return;
    }
    for (int n = 0; n < acked; n++)
        pl_check_record(s, w, p, n, 1);
    if (in_flight)
        pl_check_record(s, w, p, acked, applied);
    pl_check_history(s, w, p, acked + applied);
    *events += acked + applied;
    stats->acked += acked;
    stats->in_flight_there += in_flight && applied;
    stats->in_flight_absent += in_flight && !applied;
}

/* PRAGMA integrity_check of the closed store, on a read-only connection of
 * the unix VFS. */
static void pl_check_integrity(const char *path)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, "unix");
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    CHECK_INT(rc, SQLITE_ROW);
    if (rc == SQLITE_ROW)
        CHECK_STR((const char *)sqlite3_column_text(st, 0), "ok");
    else
        fprintf(stderr, "  integrity_check: %s\n", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    CHECK_INT(sqlite3_finalize(st), SQLITE_OK);
    CHECK_INT(sqlite3_close(db), SQLITE_OK);
}

/* Makes checkpoints frequent, so that the WAL is copied into the database
 * file, and restarted, many times per run and cuts fall in those steps too
 * (a run writes far less than the 1000 pages that start one by default). */
static int pl_small_checkpoints(sqlite3 *db, const char **errmsg,
                                const struct sqlite3_api_routines *api)
{
    (void)errmsg;
    (void)api;
    return sqlite3_wal_autocheckpoint(db, 16);
}
/* ---- the runs ----------------------------------------------------------- */

static void pl_workers_init(struct pl_worker *workers, uint64_t *rng)
{
    for (int i = 0; i < PL_WORKERS; i++) {
        struct pl_worker *w = &workers[i];
        memset(w, 0, sizeof *w);
        w->index = i;
        w->rng = pl_rand(rng);
        if (pthread_mutex_init(&w->mu, NULL) != 0 || pthread_cond_init(&w->cv, NULL) != 0)
            abort();
    }
}

static void pl_workers_destroy(struct pl_worker *workers)
{
    for (int i = 0; i < PL_WORKERS; i++) {
        CHECK_INT(pthread_cond_destroy(&workers[i].cv), 0);
        CHECK_INT(pthread_mutex_destroy(&workers[i].mu), 0);
    }
}

/* Writes until the cut (or the end): two phases of concurrent writes with
 * a clean close and reopen between them, so that the cut also falls in the
 * close's checkpoint, the WAL's removal and the reopen.  Every store is
 * closed on return. */
static void pl_write_until_cut(const char *uri, struct pl_worker *workers)
{
    char errbuf[256];
    payment_store *s = NULL;
    for (int phase = 0; phase < 2 && !pl_power_is_off(); phase++) {
        int err = payment_store_open(uri, 0, &s, errbuf, sizeof errbuf);
        if (err != PAYMENT_STORE_OK) {
            if (!pl_power_is_off())
                fprintf(stderr, "  open with the power on: %s\n", errbuf);
            CHECK(pl_power_is_off());
            return;
        }
        pl_phase(workers, s);
        payment_store_close(s);
    }
}

/* Removes the store's files and forgets their model. */
static void pl_remove_store(const char *path)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char name[160];
        snprintf(name, sizeof name, "%s%s", path, suffixes[i]);
        if (unlink(name) != 0)
            CHECK_INT(errno, ENOENT);
    }
    pl_forget();
}

/* One run on a new store in dir: writes, the power cut at the budget-th
 * counted call (never when 0), a reboot under mode, the checks.  Returns
 * the counted calls made before the cut (all of them when none). */
static long pl_run(const char *dir, long budget, enum pl_mode mode, uint64_t *rng,
                   struct pl_stats *stats)
{
    char path[128], uri[160], errbuf[256];
    snprintf(path, sizeof path, "%s/p.db", dir);
    snprintf(uri, sizeof uri, "sqlite:%s", path);
    struct pl_worker *workers = calloc(PL_WORKERS, sizeof *workers);
    if (!workers)
        abort();
    pl_workers_init(workers, rng);
    pl_arm(budget, (int)pl_rand_below(rng, 2));
    pl_write_until_cut(uri, workers);
    long counted = pl_counted();
    stats->runs++;
    stats->cuts += pl_power_is_off();
    pl_reboot(mode, rng);

    payment_store *s = NULL;
    int err = payment_store_open(uri, 0, &s, errbuf, sizeof errbuf);
    if (err != PAYMENT_STORE_OK)
        fprintf(stderr, "  reopen after the cut: %s\n", errbuf);
    CHECK_INT(err, PAYMENT_STORE_OK);
    long events = 0;
    for (int i = 0; i < PL_WORKERS && err == PAYMENT_STORE_OK; i++) {
        CHECK_INT(workers[i].failed_early, 0);
        CHECK_INT(workers[i].misread, 0);
        for (int p = 0; p < workers[i].npay; p++)
            pl_check_payment(s, &workers[i], p, stats, &events);
    }
    if (err == PAYMENT_STORE_OK)
        pl_check_feed(s, events);
    payment_store_close(s);
    pl_check_integrity(path);
    pl_remove_store(path);
    pl_workers_destroy(workers);
    free(workers);
    return counted;
}

static double pl_seconds(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        abort();
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The one number sql selects from the database at path, read through the
 * unix VFS; -1 after saying why when it cannot be read. */
static int64_t pl_select_number(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, "unix");
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    else
        fprintf(stderr, "  %s: %s\n", sql, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    CHECK_INT(sqlite3_finalize(st), SQLITE_OK);
    CHECK_INT(sqlite3_close(db), SQLITE_OK);
    return n;
}

/* On one connection (of the default VFS): a table made durably, then a row
 * committed with the given synchronous setting; the power is cut, every
 * unsynced change lost.  Returns the rows the table then holds. */
static int64_t pl_rows_after_cut(const char *dir, const char *synchronous)
{
    char path[128], sql[128];
    snprintf(path, sizeof path, "%s/t.db", dir);
    snprintf(sql, sizeof sql, "PRAGMA synchronous = %s; INSERT INTO t VALUES (1)", synchronous);
    pl_arm(0, 0);
    sqlite3 *db = NULL;
    CHECK_INT(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
              SQLITE_OK);
    CHECK_INT(sqlite3_exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
                               "CREATE TABLE t (x)", NULL, NULL, NULL), SQLITE_OK);
    CHECK_INT(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    pl_arm(1, 0); /* the next write or sync, here the close's checkpoint, cuts */
    CHECK_INT(sqlite3_close(db), SQLITE_OK);
    uint64_t rng = 1;
    pl_reboot(PL_LOST, &rng);
    int64_t rows = pl_select_number(path, "SELECT count(*) FROM t");
    pl_remove_store(path);
    return rows;
}

/* The model keeps what was synced and only that: a row committed without a
 * sync is gone after the cut, one committed with synchronous=FULL is
 * there.  Without this, a VFS the store bypassed would pass the test below. */
static void test_the_disk_model_loses_only_unsynced_writes(void)
{
    CHECK_INT(pl_install(), 0);
    if (test_failures)
        return;
    char dir[] = "/tmp/paymentd-powerloss-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    CHECK_INT(pl_rows_after_cut(dir, "OFF"), 0);
    CHECK_INT(pl_rows_after_cut(dir, "FULL"), 1);
    CHECK_INT(rmdir(dir), 0);
    pl_uninstall();
}

/* Every acknowledged write survives a power cut at any point, with its
 * idempotency record; an unacknowledged one is wholly there or wholly
 * absent; the file stays sound. */
static void test_acknowledged_writes_survive_power_loss(void)
{
    CHECK_INT(pl_install(), 0);
    if (test_failures)
        return;
    CHECK_INT(sqlite3_auto_extension((void (*)(void))pl_small_checkpoints), SQLITE_OK);
    const char *env = getenv("PL_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL) ^ (uint64_t)getpid();
    uint64_t rng = seed;
    char dir[] = "/tmp/paymentd-powerloss-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    double start = pl_seconds();
    struct pl_stats stats = {0};
    /* The first run is cut only after the store is closed; it measures how
     * many counted calls a run makes: the next cuts are spread over them,
     * and a little past (no cut before the close). */
    long total = 0;
    for (int i = 0; i < PL_RUNS && !test_failures; i++) {
        long budget = i ? 1 + (long)pl_rand_below(&rng, (uint64_t)(total + total / 8 + 1)) : 0;
        enum pl_mode mode = (enum pl_mode)(i % PL_MODES);
        long counted = pl_run(dir, budget, mode, &rng, &stats);
        if (i == 0)
            total = counted;
        if (test_failures && budget)
            fprintf(stderr, "  run %d: cut at counted call %ld of %ld, reboot %s (PL_SEED=%" PRIu64
                            ")\n", i, budget, total, pl_mode_names[mode], seed);
        else if (test_failures)
            fprintf(stderr, "  run %d: cut after the store closed, reboot %s (PL_SEED=%" PRIu64
                            ")\n", i, pl_mode_names[mode], seed);
    }
    CHECK(total > 0);
    fprintf(stderr,
            "  %ld runs (%ld cut), %ld counted calls per uncut run, %ld acknowledged writes "
            "checked, %ld in flight at the cut found there, %ld absent, %.1f s (PL_SEED=%" PRIu64
            ")\n",
            stats.runs, stats.cuts, total, stats.acked, stats.in_flight_there,
            stats.in_flight_absent, pl_seconds() - start, seed);
    CHECK_INT(rmdir(dir), 0);
    CHECK_INT(sqlite3_cancel_auto_extension((void (*)(void))pl_small_checkpoints), 1);
    pl_uninstall();
}

TEST_MAIN(TEST(test_the_disk_model_loses_only_unsynced_writes),
          TEST(test_acknowledged_writes_survive_power_loss))
