/* The embedded store's upgrades at the store's level: the migration of an
 * older store is one transaction, so a step that fails leaves the old
 * version whole (the steps before it undone) and the next open, with the
 * cause gone, migrates it; a store of a newer schema is refused with the
 * words the operator reads, and neither open nor backup writes to it.  The
 * older store is tests/upgrade/v6.sql (written by the paymentd of schema
 * 6); run from the repository's root. */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "payment/store.h"
#include "store_waiter.h"
#include "test.h"

#define FIXTURE_V6 "tests/upgrade/v6.sql"
/* A payment the schema 6 binary created and replaced (tests/upgrade/v6.json). */
#define FIXTURE_ID "3f1d9c2a-6b4e-4a8d-9c7f-1e2b3c4d5e01"

/* A store file in a new temporary folder. */
struct upgrade_store {
    char dir[32];  /* the folder, removed with its files by rm_tree */
    char path[64]; /* dir/p.db */
    char uri[80];  /* "sqlite:" path */
};

static void upgrade_store_make(struct upgrade_store *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/paymentd-upgrade-XXXXXX");
    CHECK(mkdtemp(t->dir) != NULL);
    snprintf(t->path, sizeof t->path, "%s/p.db", t->dir);
    snprintf(t->uri, sizeof t->uri, "sqlite:%s", t->path);
}

/* The whole file at path, NUL-terminated, in *len bytes (caller frees), or
 * NULL. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *data = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0)
        data = malloc((size_t)n + 1);
    if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
        free(data);
        data = NULL;
    }
    if (fclose(f) != 0 && data) {
        free(data);
        data = NULL;
    }
    if (data) {
        data[n] = '\0';
        *len = (size_t)n;
    }
    return data;
}

/* Runs sql on the file at path (its own connection): SQLITE_OK or the error. */
static int exec_on(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open(path, &db);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        fprintf(stderr, "  %s: %s\n", sql[0] == 'P' ? sql : "(script)",
                db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    CHECK_INT(sqlite3_close(db), SQLITE_OK);
    return rc;
}

/* The integer sql answers on the file at path, read-only; -1 on failure. */
static long long int_of(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    (void)sqlite3_finalize(st);
    CHECK_INT(sqlite3_close(db), SQLITE_OK);
    return v;
}

/* Whether the schema of the file at path holds an object named name. */
static long long has_object(const char *path, const char *name)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM sqlite_master WHERE name = '%s'", name);
    return int_of(path, sql);
}

/* The schema version of a new store, as this build makes it. */
static int current_version(void)
{
    struct upgrade_store t;
    upgrade_store_make(&t);
    payment_store *s = NULL;
    char err[256];
    CHECK_INT(payment_store_open(t.uri, 0, &s, err, sizeof err), PAYMENT_STORE_OK);
    if (s)
        payment_store_close(s);
    int v = (int)int_of(t.path, "PRAGMA user_version");
    rm_tree(t.dir);
    return v;
}

/* The schema 6 store of tests/upgrade at t, in WAL mode as paymentd left it. */
static int make_v6(const struct upgrade_store *t)
{
    size_t len = 0;
    char *dump = read_file(FIXTURE_V6, &len);
    CHECK(dump != NULL);
    if (!dump)
        return -1;
    int rc = exec_on(t->path, dump);
    free(dump);
    if (rc == SQLITE_OK)
        rc = exec_on(t->path, "PRAGMA user_version = 6");
    if (rc == SQLITE_OK)
        rc = exec_on(t->path, "PRAGMA journal_mode = WAL");
    CHECK_INT(rc, SQLITE_OK);
    return rc == SQLITE_OK ? 0 : -1;
}

/* Steps 7 and 8 run, then step 9 fails (a table of its name is in the
 * way): the open is refused, the store is still a whole schema 6 (no
 * webhooks table from step 7, the index step 8 drops still there), and once
 * the obstacle is gone the next open migrates it to the current version
 * with its payments. */
static void test_failed_step_keeps_the_old_version(void)
{
    int current = current_version();
    CHECK(current > 8); /* step 9 exists */
    struct upgrade_store t;
    upgrade_store_make(&t);
    if (make_v6(&t) != 0) {
        rm_tree(t.dir);
        return;
    }
    long long payments = int_of(t.path, "SELECT count(*) FROM payments");
    long long events = int_of(t.path, "SELECT count(*) FROM events");
    CHECK(payments > 0 && events > 0);
    CHECK_INT(exec_on(t.path, "CREATE TABLE delivery_bodies (x)"), SQLITE_OK);

    payment_store *s = NULL;
    char err[256] = "";
    CHECK_INT(payment_store_open(t.uri, 0, &s, err, sizeof err), PAYMENT_STORE_EURI);
    CHECK(s == NULL);
    CHECK(strstr(err, "delivery_bodies already exists") != NULL);
    CHECK_INT(int_of(t.path, "PRAGMA user_version"), 6);
    CHECK_INT(has_object(t.path, "webhooks"), 0);               /* step 7 undone */
    CHECK_INT(has_object(t.path, "deliveries"), 0);
    CHECK_INT(has_object(t.path, "payments_organisation"), 1);  /* step 8 undone */
    CHECK_INT(has_object(t.path, "payments_organisation_live"), 0);
    CHECK_INT(int_of(t.path, "SELECT count(*) FROM payments"), payments);
    CHECK_INT(int_of(t.path, "SELECT count(*) FROM events"), events);
    CHECK_INT(int_of(t.path, "SELECT count(*) FROM feed_meta"), 1); /* step 7 adds 'dispatch' */

    CHECK_INT(exec_on(t.path, "DROP TABLE delivery_bodies"), SQLITE_OK);
    CHECK_INT(payment_store_open(t.uri, 0, &s, err, sizeof err), PAYMENT_STORE_OK);
    if (s) {
        struct buf doc = BUF_INIT;
        int64_t version = -1;
        CHECK_INT(payment_store_get(s, FIXTURE_ID, &doc, &version), PAYMENT_STORE_OK);
        CHECK_INT(version, 0);
        CHECK(doc.len > 0 && strstr(doc.data, "rent for oct") != NULL);
        buf_free(&doc);
        payment_store_close(s);
    }
    CHECK_INT(int_of(t.path, "PRAGMA user_version"), current);
    CHECK_INT(has_object(t.path, "delivery_bodies"), 1);
    CHECK_INT(has_object(t.path, "payments_organisation"), 0);
    CHECK_INT(int_of(t.path, "SELECT count(*) FROM payments"), payments);
    rm_tree(t.dir);
}

/* The file at path is bytes [0, len) and nothing lies beside it. */
static void check_untouched(const struct upgrade_store *t, const char *bytes, size_t len)
{
    size_t now_len = 0;
    char *now = read_file(t->path, &now_len);
    CHECK(now != NULL && now_len == len && memcmp(now, bytes, len) == 0);
    free(now);
    char side[96];
    snprintf(side, sizeof side, "%s-wal", t->path);
    CHECK(access(side, F_OK) != 0 && errno == ENOENT);
    snprintf(side, sizeof side, "%s-journal", t->path);
    CHECK(access(side, F_OK) != 0 && errno == ENOENT);
}

/* A store one version past this build's, in rollback-journal mode (as a
 * restored backup is, so that the WAL switch would rewrite its header):
 * open and backup refuse it in the operator's words and write nothing. */
static void test_newer_store_refused_without_a_write(void)
{
    int current = current_version();
    struct upgrade_store t;
    upgrade_store_make(&t);
    payment_store *s = NULL;
    char err[256] = "";
    CHECK_INT(payment_store_open(t.uri, 0, &s, err, sizeof err), PAYMENT_STORE_OK);
    if (s)
        payment_store_close(s);
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", current + 1);
    CHECK_INT(exec_on(t.path, sql), SQLITE_OK);
    CHECK_INT(exec_on(t.path, "PRAGMA journal_mode = DELETE"), SQLITE_OK);
    size_t len = 0;
    char *bytes = read_file(t.path, &len);
    CHECK(bytes != NULL);
    if (!bytes) {
        rm_tree(t.dir);
        return;
    }
    char want[160];
    snprintf(want, sizeof want,
             "store schema version %d is newer than this build's (%d): upgrade paymentd",
             current + 1, current);

    CHECK_INT(payment_store_open(t.uri, 0, &s, err, sizeof err), PAYMENT_STORE_EURI);
    CHECK_STR(err, want);
    check_untouched(&t, bytes, len);

    char copy[96], line[320];
    snprintf(copy, sizeof copy, "%s/copy.db", t.dir);
    CHECK_INT(payment_store_backup(t.uri, copy, err, sizeof err), PAYMENT_STORE_EURI);
    snprintf(line, sizeof line, "cannot open store %s: %s", t.path, want);
    CHECK_STR(err, line);
    CHECK(access(copy, F_OK) != 0);
    check_untouched(&t, bytes, len);
    free(bytes);
    rm_tree(t.dir);
}

TEST_MAIN(TEST(test_failed_step_keeps_the_old_version),
          TEST(test_newer_store_refused_without_a_write))
