/* `paymentd migrate` refuses a source that does not exist, with nothing
 * created in it (the store opened PAYMENT_STORE_EXISTING, store.h): a
 * missing SQLite file (not even its folder is made); a PostgreSQL
 * search_path whose schema holds no store, or that names no schema that
 * exists (the schema still holds no table afterwards; the reason never
 * shows the URI's password); a MongoDB database
 * without the payments collection (still without it afterwards).  A store
 * that exists but holds nothing opens and migrates: 0 payments, verified.
 * PostgreSQL and MongoDB cases run when PAYMENTD_TEST_PG_URI and
 * PAYMENTD_TEST_MONGO_URI name servers (else they are reported skipped). */
#include "app/migrate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "payment/store.h"
#include "payment/store_fixture.h"
#include "payment/store_waiter.h"
#include "test.h"

#define PAGE 6 /* items a page of the migrates here holds */

/* A new temporary folder, its name in dir: 1, or 0 (a failed check). */
static int tmp_dir(char dir[64])
{
    snprintf(dir, 64, "/tmp/paymentd-migrate-XXXXXX");
    int ok = mkdtemp(dir) != NULL;
    CHECK(ok);
    return ok;
}

/* Opens uri PAYMENT_STORE_EXISTING expecting EURI with a reason holding
 * says; then migrate from it (into a new file under dir) fails. */
static void refused(const char *uri, const char *says, const char *dir)
{
    payment_store *s = NULL;
    char err[512] = "";
    CHECK_INT(payment_store_open(uri, PAYMENT_STORE_EXISTING, &s, err, sizeof err),
              PAYMENT_STORE_EURI);
    CHECK(s == NULL);
    payment_store_close(s); /* NULL unless the check above failed */
    CHECK(strstr(err, says) != NULL && strstr(err, "nothing created") != NULL);
    if (!strstr(err, says))
        fprintf(stderr, "  open %s: %s\n", uri, err);
    char to[256];
    snprintf(to, sizeof to, "sqlite:%s/copy.db", dir);
    CHECK_INT(migrate_main(uri, to, PAGE), 1);
}

/* A store made by an ordinary open and left empty opens EXISTING and
 * migrates (0 payments, verified) into a new file under dir. */
static void empty_accepted(const char *uri, const char *dir)
{
    payment_store *s = NULL;
    char err[512] = "", to[256];
    CHECK_INT(payment_store_open(uri, 0, &s, err, sizeof err), PAYMENT_STORE_OK);
    payment_store_close(s);
    s = NULL;
    CHECK_INT(payment_store_open(uri, PAYMENT_STORE_EXISTING, &s, err, sizeof err),
              PAYMENT_STORE_OK);
    payment_store_close(s);
    snprintf(to, sizeof to, "sqlite:%s/empty-copy.db", dir);
    CHECK_INT(migrate_main(uri, to, PAGE), 0);
}

static void missing_sqlite(void)
{
    char dir[64], sub[160], uri[192];
    if (!tmp_dir(dir))
        return;
    struct stat st;
    snprintf(sub, sizeof sub, "%s/sub", dir);
    snprintf(uri, sizeof uri, "sqlite:%s/payments.db", sub);
    refused(uri, "does not exist", dir);
    CHECK(stat(sub, &st) != 0); /* not even its folder */
    snprintf(uri, sizeof uri, "sqlite:%s/other.db", dir);
    empty_accepted(uri, dir);
    rm_tree(dir);
}

/* Fails unless schema holds no table. */
static void pg_no_tables(const char *schema)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = '%s') THEN "
             "RAISE EXCEPTION 'schema %s holds tables'; END IF; END $$",
             schema, schema);
    CHECK(pg_test_exec(pg_base(), sql));
}

/* uri (postgres://USER@...) with the password "secret" (which a server
 * that trusts its local users does not ask for) into out. */
static void with_password(char *out, size_t len, const char *uri)
{
    const char *at = strchr(uri, '@');
    CHECK(at != NULL);
    int n = at ? snprintf(out, len, "%.*s:secret%s", (int)(at - uri), uri, at) : -1;
    CHECK(n > 0 && (size_t)n < len);
}

static void missing_pg(void)
{
    if (!pg_base()) {
        TEST_SKIP(PG_URI_ENV " unset: no PostgreSQL");
        return;
    }
    char dir[64], schema[64], uri[512];
    if (!tmp_dir(dir))
        return;
    if (pg_schema_create(schema, uri, sizeof uri)) {
        char says[128], nowhere[80], uri2[512];
        snprintf(says, sizeof says, "schema \"%s\" holds no paymentd_schema table", schema);
        refused(uri, says, dir);
        pg_no_tables(schema);
        /* A search_path naming no schema that exists. */
        snprintf(nowhere, sizeof nowhere, "%s_none", schema);
        pg_uri_for(uri2, sizeof uri2, pg_base(), nowhere);
        refused(uri2, "search_path names no schema that exists", dir);
        with_password(uri2, sizeof uri2, uri);
        payment_store *s = NULL;
        char err[512] = "";
        CHECK_INT(payment_store_open(uri2, PAYMENT_STORE_EXISTING, &s, err, sizeof err),
                  PAYMENT_STORE_EURI);
        CHECK(strstr(err, "secret") == NULL && strstr(err, "***") != NULL);
        empty_accepted(uri, dir);
        pg_schema_drop(schema);
    }
    rm_tree(dir);
}

/* Whether collection coll of database db has an index (one that exists
 * has its _id index). */
static int mongo_has_indexes(const char *db, const char *coll)
{
    bson_t *cmd = BCON_NEW("listIndexes", BCON_UTF8(coll)), reply;
    bson_iter_t it;
    int found = mongo_command(db, cmd, &reply) &&
                bson_iter_init(&it, &reply) &&
                bson_iter_find_descendant(&it, "cursor.firstBatch.0", &it);
    bson_destroy(&reply);
    bson_destroy(cmd);
    return found;
}

static void missing_mongo(void)
{
    if (!mongo_base()) {
        TEST_SKIP(MONGO_URI_ENV " unset: no MongoDB");
        return;
    }
    char dir[64], db[64], uri[512], says[128];
    if (!tmp_dir(dir))
        return;
    mongo_db_name(db);
    mongo_uri_for(uri, sizeof uri, mongo_base(), db, "");
    snprintf(says, sizeof says, "database %s: no collection payments", db);
    refused(uri, says, dir);
    CHECK(!mongo_has_indexes(db, "payments"));
    empty_accepted(uri, dir);
    CHECK(mongo_has_indexes(db, "payments"));
    mongo_drop(db);
    rm_tree(dir);
}

TEST_MAIN(TEST(missing_sqlite), TEST(missing_pg), TEST(missing_mongo))
