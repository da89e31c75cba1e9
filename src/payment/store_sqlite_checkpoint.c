/* store_sqlite_checkpoint: the embedded store's checkpoints, off the writer
 * thread.  SQLite's default copies the write-ahead log back into the
 * database file from inside the commit that takes the log past 1,000
 * pages: the writer then stops for the copy and the database file's fsync,
 * and every write queued behind it waits (a third of the create rate under
 * load, measured with bench/post.lua).  Here the writer's commit only
 * notices the log's length (a WAL hook, which replaces the default) and
 * wakes a thread of its own, which checkpoints on a connection of its own
 * while the writer goes on appending: SQLite lets one checkpoint run beside
 * the writer, and a PASSIVE one waits for no reader and no writer.
 *
 * Invariants: a commit is durable in the log before it is reported, so a
 * checkpoint, early or late, changes no answer; the log is restarted by
 * the writer's next transaction once a checkpoint copied all of it.  Should
 * the thread fall behind (readers holding old snapshots, a slow disk), the
 * writer checkpoints itself once the log passes SQLITE_CHECKPOINT_FRAMES_MAX
 * pages, so the log stays bounded as it was.
 *
 * Threads: the hook runs on the writer thread; the checkpointer thread owns
 * its connection.  ck->mu guards wanted and stop. */
#include <assert.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "payment/store_sqlite.h"

/* The log's length, in pages, at which the thread checkpoints (SQLite's own
 * default), and at which the writer stops to checkpoint itself. */
#define SQLITE_CHECKPOINT_FRAMES 1000
#define SQLITE_CHECKPOINT_FRAMES_MAX 2000

/* The WAL hook of the write connection: called after each commit with the
 * log's length in pages. */
static int sqlite_wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    struct sqlite_checkpointer *ck = arg;
    if (frames >= SQLITE_CHECKPOINT_FRAMES_MAX) {
        /* Busy (the thread is checkpointing) or failed: the next commit
         * tries again; the commit itself is durable either way. */
        (void)sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        return SQLITE_OK;
    }
    /* Woken once per quarter of the threshold the log grows by (or when it
     * restarted), not at every commit: a checkpoint meanwhile would find
     * little or nothing new to copy. */
    if (frames >= SQLITE_CHECKPOINT_FRAMES &&
        (frames < ck->woken_at || frames - ck->woken_at >= SQLITE_CHECKPOINT_FRAMES / 4)) {
        ck->woken_at = frames;
        store_lock(&ck->mu);
        ck->wanted = 1;
        if (pthread_cond_signal(&ck->wake) != 0)
            abort();
        store_unlock(&ck->mu);
    }
    return SQLITE_OK;
}

static void *sqlite_checkpointer_main(void *arg)
{
    struct sqlite_checkpointer *ck = arg;
    for (;;) {
        store_lock(&ck->mu);
        while (!ck->wanted && !ck->stop)
            if (pthread_cond_wait(&ck->wake, &ck->mu) != 0)
                abort();
        int stop = ck->stop;
        ck->wanted = 0;
        store_unlock(&ck->mu);
        if (stop)
            return NULL;
        /* A failure (the disk, another checkpoint meanwhile) leaves the log
         * as it is: the next commit past the threshold asks again. */
        if (sqlite3_wal_checkpoint_v2(ck->db, "main", SQLITE_CHECKPOINT_PASSIVE, NULL, NULL) ==
            SQLITE_OK)
            atomic_fetch_add(&ck->runs, 1);
    }
}

/* Opens the checkpointer's connection: the store's file and VFS, full sync
 * (the checkpoint syncs the log before and the database after). */
static int sqlite_checkpointer_open(struct sqlite_store *st)
{
    struct sqlite_checkpointer *ck = &st->ckpt;
    int rc = sqlite3_open_v2(st->path, &ck->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                             sqlite_vfs(st));
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(ck->db, "PRAGMA synchronous = FULL", NULL, NULL, NULL);
    return rc;
}

int sqlite_checkpointer_start(struct sqlite_store *st)
{
    struct sqlite_checkpointer *ck = &st->ckpt;
    assert(st->wdb && st->path && !st->writer_started && !ck->started);
    atomic_init(&ck->runs, 0);
    if (pthread_mutex_init(&ck->mu, NULL) != 0)
        return -1;
    if (pthread_cond_init(&ck->wake, NULL) != 0) {
        (void)pthread_mutex_destroy(&ck->mu);
        return -1;
    }
    ck->sync_made = 1;
    if (sqlite_checkpointer_open(st) != SQLITE_OK)
        return -1;
    sigset_t all, old;
    if (sigfillset(&all) != 0 || pthread_sigmask(SIG_BLOCK, &all, &old) != 0)
        return -1;
    int rc = pthread_create(&ck->thread, NULL, sqlite_checkpointer_main, ck);
    if (pthread_sigmask(SIG_SETMASK, &old, NULL) != 0)
        abort(); /* cannot fail with a mask it returned */
    if (rc != 0)
        return -1;
    ck->started = 1;
    (void)sqlite3_wal_hook(st->wdb, sqlite_wal_hook, ck);
    return 0;
}

void sqlite_checkpointer_stop(struct sqlite_store *st)
{
    struct sqlite_checkpointer *ck = &st->ckpt;
    if (ck->started) {
        store_lock(&ck->mu);
        ck->stop = 1;
        if (pthread_cond_signal(&ck->wake) != 0)
            abort();
        store_unlock(&ck->mu);
        if (pthread_join(ck->thread, NULL) != 0)
            abort(); /* joinable, and never this thread */
        ck->started = 0;
    }
    if (st->wdb)
        (void)sqlite3_wal_hook(st->wdb, NULL, NULL); /* the last close checkpoints itself */
    if (ck->db && sqlite3_close(ck->db) != SQLITE_OK)
        (void)sqlite3_close_v2(ck->db); /* unreachable: it prepares no statement */
    ck->db = NULL;
    if (ck->sync_made) {
        (void)pthread_cond_destroy(&ck->wake);
        (void)pthread_mutex_destroy(&ck->mu);
        ck->sync_made = 0;
    }
}
