/* store_pg_schema: the PostgreSQL store's schema, as numbered steps from an
 * empty database, and the migration that brings a database of any earlier
 * version to the current one when a store is opened.
 *
 * The tables mirror the embedded store's (store_sqlite_schema.c), with what
 * PostgreSQL wants instead:
 *   - every text column is COLLATE "C": ids, organisation ids, amount keys
 *     and dates are compared and ordered byte by byte, as the embedded
 *     store orders them, whatever the database's locale;
 *   - payment sequence numbers and event positions are not given by the
 *     tables (a sequence hands numbers out in the order transactions ask,
 *     not the order they commit) but by the writer, from feed_meta's 'seq'
 *     and 'pos', under the write lock (store_pg.h);
 *   - a delivery keeps its body in its row: PostgreSQL stores a value that
 *     large out of line and an update that does not change it does not
 *     copy it.
 * The schema's version is paymentd_schema's one row.  Every step runs in
 * the migration's one transaction, under an advisory lock, so several
 * processes starting at once find it either not begun or whole. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "payment/store_pg.h"

/* The advisory lock key of the migration ("paymentd" in ASCII). */
#define PG_SCHEMA_LOCK "7061796d656e7464"

/* Schema steps: entry i moves a database from version i to i + 1.  Append
 * new steps; never edit a released one. */
static const char *const pg_migrations[] = {
    /* 1: payments, idempotency records, operations and partitions, events
     * and the feed's counters, webhooks and deliveries. */
    "CREATE TABLE payments ("
    " seq BIGINT PRIMARY KEY,"
    " id TEXT COLLATE \"C\" UNIQUE NOT NULL,"
    " organisation_id TEXT COLLATE \"C\" NOT NULL,"
    " version BIGINT NOT NULL,"
    " created_ms BIGINT NOT NULL,"
    " modified_ms BIGINT NOT NULL,"
    " currency TEXT COLLATE \"C\","
    " payment_scheme TEXT COLLATE \"C\","
    " payment_type TEXT COLLATE \"C\","
    " reference TEXT COLLATE \"C\","
    " end_to_end_reference TEXT COLLATE \"C\","
    " processing_date TEXT COLLATE \"C\","
    " amount_key TEXT COLLATE \"C\","
    " doc TEXT,"
    " deleted BOOLEAN NOT NULL DEFAULT FALSE"
    ");"
    /* An organisation's live payments in seq order, tombstones left out. */
    "CREATE INDEX payments_organisation_live ON payments (organisation_id, seq)"
    " WHERE NOT deleted;"
    "CREATE INDEX payments_reference ON payments (reference);"
    "CREATE INDEX payments_end_to_end_reference ON payments (end_to_end_reference);"
    "CREATE TABLE idempotency ("
    " scope TEXT COLLATE \"C\" NOT NULL,"
    " key TEXT COLLATE \"C\" NOT NULL,"
    " fingerprint TEXT NOT NULL,"
    " status INTEGER NOT NULL,"
    " location TEXT,"
    " etag TEXT,"
    /* The answer's bytes as they were sent: any bytes, NUL included. */
    " body BYTEA,"
    " created_ms BIGINT NOT NULL,"
    " PRIMARY KEY (scope, key)"
    ");"
    "CREATE INDEX idempotency_created ON idempotency (created_ms);"
    "CREATE TABLE operations ("
    " op_id TEXT COLLATE \"C\" PRIMARY KEY,"
    " partition BIGINT NOT NULL,"
    " seq BIGINT NOT NULL,"
    " status TEXT NOT NULL,"
    " error_code TEXT,"
    " message TEXT,"
    " payment_id TEXT COLLATE \"C\","
    " organisation_id TEXT COLLATE \"C\","
    " version BIGINT NOT NULL,"
    " applied_ms BIGINT NOT NULL,"
    " fingerprint TEXT"
    ");"
    "CREATE INDEX operations_applied ON operations (applied_ms);"
    "CREATE TABLE partitions ("
    " partition BIGINT PRIMARY KEY,"
    " last_seq BIGINT NOT NULL,"
    " fence BIGINT NOT NULL"
    ");"
    /* One row per committed change; pos from feed_meta 'pos' (store_pg.h). */
    "CREATE TABLE events ("
    " pos BIGINT PRIMARY KEY,"
    " id TEXT COLLATE \"C\" NOT NULL,"
    " payment_id TEXT COLLATE \"C\" NOT NULL,"
    " organisation_id TEXT COLLATE \"C\" NOT NULL,"
    " version BIGINT NOT NULL,"
    " type INTEGER NOT NULL,"
    " occurred_ms BIGINT NOT NULL,"
    " api_key_id TEXT,"
    " request_id TEXT,"
    " idempotency_key TEXT,"
    " operation_id TEXT,"
    " changes TEXT,"
    " doc TEXT NOT NULL"
    ");"
    "CREATE UNIQUE INDEX events_payment ON events (payment_id, version);"
    "CREATE INDEX events_organisation ON events (organisation_id, pos);"
    /* 'seq': the last payment sequence number given; 'pos': the last event
     * position given, and the row every write transaction locks first;
     * 'floor': the last position that left the feed; 'dispatch': the
     * webhook dispatcher's position. */
    "CREATE TABLE feed_meta ("
    " key TEXT COLLATE \"C\" PRIMARY KEY,"
    " value BIGINT NOT NULL"
    ");"
    "INSERT INTO feed_meta (key, value) VALUES ('seq', 0), ('pos', 0), ('floor', 0),"
    " ('dispatch', 0);"
    "CREATE TABLE webhooks ("
    " id TEXT COLLATE \"C\" PRIMARY KEY,"
    " organisation_id TEXT COLLATE \"C\" NOT NULL,"
    " version BIGINT NOT NULL,"
    " created_ms BIGINT NOT NULL,"
    " modified_ms BIGINT NOT NULL,"
    " enabled INTEGER NOT NULL,"
    " types INTEGER NOT NULL,"
    " after_pos BIGINT NOT NULL,"
    " failing_since_ms BIGINT NOT NULL,"
    " doc TEXT NOT NULL"
    ");"
    "CREATE INDEX webhooks_organisation ON webhooks (organisation_id, id);"
    /* A free lease is lease_owner NULL, lease_until 0; status 1 pending. */
    "CREATE TABLE deliveries ("
    " id TEXT COLLATE \"C\" PRIMARY KEY,"
    " webhook_id TEXT COLLATE \"C\" NOT NULL,"
    " event_id TEXT COLLATE \"C\" NOT NULL,"
    " event_pos BIGINT NOT NULL,"
    " status INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL,"
    " created_ms BIGINT NOT NULL,"
    " next_ms BIGINT NOT NULL,"
    " lease_owner TEXT,"
    " lease_until BIGINT NOT NULL,"
    " attempts_json TEXT NOT NULL,"
    " body TEXT NOT NULL"
    ");"
    "CREATE UNIQUE INDEX deliveries_event ON deliveries (webhook_id, event_id);"
    "CREATE INDEX deliveries_webhook ON deliveries (webhook_id, id);"
    "CREATE INDEX deliveries_due ON deliveries (next_ms, id) WHERE status = 1;"
    "CREATE INDEX deliveries_pending ON deliveries (created_ms) WHERE status = 1;"
    "CREATE INDEX deliveries_finished ON deliveries (created_ms) WHERE status <> 1;",
};

#define PG_SCHEMA_VERSION ((int)(sizeof pg_migrations / sizeof pg_migrations[0]))

int payment_store_schema_postgres(void)
{
    return PG_SCHEMA_VERSION;
}

/* Runs sql (several statements, no parameters): 0, or a store error with
 * the server's message in errbuf. */
static int pg_schema_exec(struct pg_conn *c, const char *sql, char *errbuf, size_t errlen)
{
    PGresult *res = PQexec(c->pg, sql);
    ExecStatusType status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    int rc = PAYMENT_STORE_OK;
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
        rc = pg_result_err(c, res);
        const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(c->pg);
        char line[256];
        snprintf(line, sizeof line, "%s", msg && *msg ? msg : "no answer");
        line[strcspn(line, "\n")] = '\0';
        store_errf(errbuf, errlen, "store schema: %s", line);
    }
    PQclear(res);
    return rc;
}

/* The version the database holds (0: none yet) into *version. */
static int pg_schema_read(struct pg_conn *c, int *version, char *errbuf, size_t errlen)
{
    PGresult *res = PQexec(c->pg, "SELECT max(version) FROM paymentd_schema");
    int rc = PAYMENT_STORE_OK;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        rc = pg_result_err(c, res);
        store_errf(errbuf, errlen, "store schema: cannot read its version");
    } else {
        *version = PQgetisnull(res, 0, 0) ? 0 : atoi(PQgetvalue(res, 0, 0));
    }
    PQclear(res);
    return rc;
}

int pg_schema_migrate(struct pg_conn *c, char *errbuf, size_t errlen)
{
    int rc = pg_schema_exec(c,
                            "BEGIN;"
                            "SELECT pg_advisory_xact_lock(x'" PG_SCHEMA_LOCK "'::bigint);"
                            "CREATE TABLE IF NOT EXISTS paymentd_schema (version INTEGER NOT NULL);",
                            errbuf, errlen);
    int version = 0;
    if (rc == PAYMENT_STORE_OK)
        rc = pg_schema_read(c, &version, errbuf, errlen);
    if (rc == PAYMENT_STORE_OK && (version < 0 || version > PG_SCHEMA_VERSION)) {
        store_errf(errbuf, errlen,
                   "store schema version %d is newer than this build's (%d): upgrade paymentd",
                   version, PG_SCHEMA_VERSION);
        rc = PAYMENT_STORE_EURI;
    }
    for (int v = version; rc == PAYMENT_STORE_OK && v < PG_SCHEMA_VERSION; v++)
        rc = pg_schema_exec(c, pg_migrations[v], errbuf, errlen);
    if (rc == PAYMENT_STORE_OK && version < PG_SCHEMA_VERSION) {
        char sql[96];
        snprintf(sql, sizeof sql, "DELETE FROM paymentd_schema; INSERT INTO paymentd_schema"
                                  " VALUES (%d)", PG_SCHEMA_VERSION);
        rc = pg_schema_exec(c, sql, errbuf, errlen);
    }
    if (rc == PAYMENT_STORE_OK)
        return pg_schema_exec(c, "COMMIT", errbuf, errlen);
    PGresult *res = PQexec(c->pg, "ROLLBACK"); /* a lost connection rolls back too */
    PQclear(res);
    return rc;
}
