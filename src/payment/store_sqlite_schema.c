/* store_sqlite_schema: the embedded store's schema, as numbered steps from
 * an empty file, and the migration that brings a store of any earlier
 * version to the current one when it is opened. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>

#include "payment/store_sqlite.h"

/* Schema steps: entry i moves a store from user_version i to i + 1.  Append
 * new steps; never edit a released one. */
static const char *const sqlite_migrations[] = {
    /* 1: payments, their tombstones, and the list indexes. */
    "CREATE TABLE payments ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id TEXT UNIQUE NOT NULL,"
    " organisation_id TEXT NOT NULL,"
    " version INTEGER NOT NULL,"
    " created_ms INTEGER NOT NULL,"
    " modified_ms INTEGER NOT NULL,"
    " currency TEXT,"
    " payment_scheme TEXT,"
    " payment_type TEXT,"
    " reference TEXT,"
    " end_to_end_reference TEXT,"
    " processing_date TEXT,"
    " amount_key TEXT,"
    " doc TEXT,"
    " deleted INTEGER NOT NULL DEFAULT 0"
    ");"
    /* List by organisation in seq order without a sort. */
    "CREATE INDEX payments_organisation ON payments (organisation_id, seq);"
    /* References are near-unique: an exact-match filter becomes a lookup.
     * Currency, scheme and type are too coarse, and the ranges are served
     * well enough by the seq-ordered scan, to pay an index on every write. */
    "CREATE INDEX payments_reference ON payments (reference);"
    "CREATE INDEX payments_end_to_end_reference ON payments (end_to_end_reference);",
    /* 2: outcomes of writes made with an Idempotency-Key, written in the
     * transaction of the write they answer. */
    "CREATE TABLE idempotency ("
    " scope TEXT NOT NULL,"
    " key TEXT NOT NULL,"
    " fingerprint TEXT NOT NULL,"
    " status INTEGER NOT NULL,"
    " location TEXT,"
    " etag TEXT,"
    " body BLOB,"
    " created_ms INTEGER NOT NULL,"
    " PRIMARY KEY (scope, key)"
    ") WITHOUT ROWID;"
    "CREATE INDEX idempotency_created ON idempotency (created_ms);",
    /* 3: outcomes of operations applied from the broker, and each stream
     * partition's position and fencing token, written in the transaction of
     * the payment write they describe. */
    "CREATE TABLE operations ("
    " op_id TEXT PRIMARY KEY NOT NULL,"
    " partition INTEGER NOT NULL,"
    " seq INTEGER NOT NULL,"
    " status TEXT NOT NULL,"
    " error_code TEXT,"
    " message TEXT,"
    " payment_id TEXT,"
    " organisation_id TEXT,"
    " version INTEGER NOT NULL,"
    " applied_ms INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    /* A handful of rows keyed by a small integer: the rowid table fits. */
    "CREATE TABLE partitions ("
    " partition INTEGER PRIMARY KEY,"
    " last_seq INTEGER NOT NULL,"
    " fence INTEGER NOT NULL"
    ");",
    /* 4: a keyed asynchronous request is answered from its operation's
     * outcome, which keeps the request's fingerprint; outcomes are purged by
     * age like idempotency records. */
    "ALTER TABLE operations ADD COLUMN fingerprint TEXT;"
    "CREATE INDEX operations_applied ON operations (applied_ms);",
    /* 5: idempotency records hold response bodies of a kilobyte or more.
     * In a WITHOUT ROWID table the (scope, key) b-tree held the bodies
     * themselves, few rows to a page, so deleting old ones rewrote much of
     * it; a rowid table keeps the bodies in its own b-tree, found through a
     * small unique (scope, key) index, and the purge walks the creation
     * time index in small batches. */
    "CREATE TABLE idempotency_rowid ("
    " scope TEXT NOT NULL,"
    " key TEXT NOT NULL,"
    " fingerprint TEXT NOT NULL,"
    " status INTEGER NOT NULL,"
    " location TEXT,"
    " etag TEXT,"
    " body BLOB,"
    " created_ms INTEGER NOT NULL"
    ");"
    "INSERT INTO idempotency_rowid (scope, key, fingerprint, status, location, etag, body,"
    " created_ms) SELECT scope, key, fingerprint, status, location, etag, body, created_ms"
    " FROM idempotency ORDER BY created_ms;"
    "DROP TABLE idempotency;"
    "ALTER TABLE idempotency_rowid RENAME TO idempotency;"
    "CREATE UNIQUE INDEX idempotency_key ON idempotency (scope, key);"
    "CREATE INDEX idempotency_created ON idempotency (created_ms);",
    /* 6: the history and the change feed.  One row per committed change,
     * written in the change's transaction; pos, the feed position, is given
     * by the insert itself (store_sqlite_events.c says why that keeps the
     * feed in commit order).  AUTOINCREMENT: a position is never given
     * twice, even after the newest events are purged.  The document comes
     * last so that the purge's walk by position reads the small columns
     * without it.  History by (payment_id, version), whose uniqueness also
     * refuses a second event for one version; the feed of some
     * organisations by (organisation_id, pos).  The feed's floor, the last
     * position that left the feed, is kept in feed_meta. */
    "CREATE TABLE events ("
    " pos INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id TEXT NOT NULL,"
    " payment_id TEXT NOT NULL,"
    " organisation_id TEXT NOT NULL,"
    " version INTEGER NOT NULL,"
    " type INTEGER NOT NULL,"
    " occurred_ms INTEGER NOT NULL,"
    " api_key_id TEXT,"
    " request_id TEXT,"
    " idempotency_key TEXT,"
    " operation_id TEXT,"
    " changes TEXT,"
    " doc TEXT NOT NULL"
    ");"
    "CREATE UNIQUE INDEX events_payment ON events (payment_id, version);"
    "CREATE INDEX events_organisation ON events (organisation_id, pos);"
    "CREATE TABLE feed_meta ("
    " key TEXT PRIMARY KEY NOT NULL,"
    " value INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "INSERT INTO feed_meta (key, value) VALUES ('floor', 0);",
    /* 7: webhooks (store_sqlite_webhooks.c, store_sqlite_deliveries.c).
     * Endpoints by id, counted per organisation by (organisation_id, id),
     * which also lists one organisation's in id order.  Deliveries, one per
     * (webhook_id, event_id); (webhook_id, id) lists an endpoint's and
     * deletes them with it.  Three partial indexes, each of one side of
     * the status: the claim walks the pending ones by due time, /metrics
     * counts them and finds the oldest by creation time, and the purge
     * walks the finished ones (status <> 1, as its query says it, for the
     * planner to match) by creation time; the last two hold the status so
     * that their queries read the index alone.  A free lease is
     * lease_owner NULL, lease_until 0.  The dispatcher's position is
     * feed_meta's 'dispatch'. */
    "CREATE TABLE webhooks ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " organisation_id TEXT NOT NULL,"
    " version INTEGER NOT NULL,"
    " created_ms INTEGER NOT NULL,"
    " modified_ms INTEGER NOT NULL,"
    " enabled INTEGER NOT NULL,"
    " types INTEGER NOT NULL,"
    " after_pos INTEGER NOT NULL,"
    " failing_since_ms INTEGER NOT NULL,"
    " doc TEXT NOT NULL"
    ");"
    "CREATE INDEX webhooks_organisation ON webhooks (organisation_id, id);"
    "CREATE TABLE deliveries ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " webhook_id TEXT NOT NULL,"
    " event_id TEXT NOT NULL,"
    " event_pos INTEGER NOT NULL,"
    " status INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL,"
    " created_ms INTEGER NOT NULL,"
    " next_ms INTEGER NOT NULL,"
    " lease_owner TEXT,"
    " lease_until INTEGER NOT NULL,"
    " attempts_json TEXT NOT NULL,"
    " body TEXT NOT NULL"
    ");"
    "CREATE UNIQUE INDEX deliveries_event ON deliveries (webhook_id, event_id);"
    "CREATE INDEX deliveries_webhook ON deliveries (webhook_id, id);"
    "CREATE INDEX deliveries_due ON deliveries (next_ms, id) WHERE status = 1;"
    "CREATE INDEX deliveries_pending ON deliveries (created_ms, status) WHERE status = 1;"
    "CREATE INDEX deliveries_finished ON deliveries (created_ms, status) WHERE status <> 1;"
    "INSERT INTO feed_meta (key, value) VALUES ('dispatch', 0);",
    /* 8: an organisation's live payments by seq, tombstones left out of the
     * index, so that a list's filter "deleted = 0" is the index's own
     * condition: the rows an offset page skips are skipped in the index,
     * without reading each one's row to learn whether it is deleted (a page
     * at offset 1,900 read 1,900 rows before, now none). */
    "DROP INDEX payments_organisation;"
    "CREATE INDEX payments_organisation_live ON payments (organisation_id, seq)"
    " WHERE deleted = 0;",
    /* 9: a delivery's body (the event's JSON, a payment's size) in a table
     * of its own, written once: the claim and the record of every attempt
     * rewrite the delivery's row, which SQLite rewrites whole, and with the
     * body in it each rewrite copied and logged a page of 8 KB.  Keyed by the
     * delivery's id (WITHOUT ROWID: a key VACUUM cannot renumber), deleted
     * with its delivery by a trigger, so no delete can leave one behind;
     * deliveries.body is '' from here on. */
    "CREATE TABLE delivery_bodies ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " body TEXT NOT NULL"
    ") WITHOUT ROWID;"
    "INSERT INTO delivery_bodies (id, body) SELECT id, body FROM deliveries;"
    "UPDATE deliveries SET body = '';"
    "CREATE TRIGGER deliveries_body_gone AFTER DELETE ON deliveries"
    " BEGIN DELETE FROM delivery_bodies WHERE id = old.id; END;",
};

#define SQLITE_SCHEMA_VERSION ((int)(sizeof sqlite_migrations / sizeof sqlite_migrations[0]))

int payment_store_schema_sqlite(void)
{
    return SQLITE_SCHEMA_VERSION;
}

/* The first row's first column of sql as text, into out. */
int sqlite_pragma_text(sqlite3 *db, const char *sql, char *out, size_t outlen)
{
    sqlite3_stmt *stmt;
    int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        const unsigned char *v = sqlite3_column_text(stmt, 0);
        snprintf(out, outlen, "%s", v ? (const char *)v : "");
        rc = SQLITE_OK;
    }
    (void)sqlite3_finalize(stmt);
    return rc == SQLITE_DONE ? SQLITE_ERROR : rc;
}

static int sqlite_exec(sqlite3 *db, const char *sql, char *errbuf, size_t errlen)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        store_errf(errbuf, errlen, "store schema: %s", msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return rc;
}

/* Brings the schema to SQLITE_SCHEMA_VERSION in one transaction, so that
 * concurrent openers and a crash mid-way leave a whole version. */
int sqlite_schema_migrate(sqlite3 *db, char *errbuf, size_t errlen)
{
    int rc = sqlite_exec(db, "BEGIN IMMEDIATE", errbuf, errlen);
    if (rc != SQLITE_OK)
        return rc;
    char text[32];
    rc = sqlite_pragma_text(db, "PRAGMA user_version", text, sizeof text);
    if (rc != SQLITE_OK) {
        store_errf(errbuf, errlen, "store schema: %s", sqlite3_errmsg(db));
        goto fail;
    }
    int version = atoi(text);
    if (version < 0 || version > SQLITE_SCHEMA_VERSION) {
        store_errf(errbuf, errlen, "store schema version %d is not one this build knows (%d)",
                    version, SQLITE_SCHEMA_VERSION);
        rc = SQLITE_ERROR;
        goto fail;
    }
    for (int v = version; v < SQLITE_SCHEMA_VERSION; v++) {
        rc = sqlite_exec(db, sqlite_migrations[v], errbuf, errlen);
        if (rc != SQLITE_OK)
            goto fail;
    }
    if (version < SQLITE_SCHEMA_VERSION) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", SQLITE_SCHEMA_VERSION);
        rc = sqlite_exec(db, sql, errbuf, errlen);
        if (rc != SQLITE_OK)
            goto fail;
    }
    return sqlite_exec(db, "COMMIT", errbuf, errlen);
fail:
    if (!sqlite3_get_autocommit(db))
        (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL); /* closing the connection would too */
    return rc;
}
