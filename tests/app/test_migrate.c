/* The copy of one store into another (app/migrate.h), between the
 * backends: SQLite to SQLite always; SQLite to PostgreSQL and back when
 * PAYMENTD_TEST_PG_URI names a server; MongoDB to PostgreSQL when
 * PAYMENTD_TEST_MONGO_URI names one too (else those are reported skipped).
 *
 * A source populated through store.h (payments of three organisations,
 * updated, deleted, some with idempotency records) is copied and verified;
 * the target then answers every read as the source does: documents and
 * versions, tombstones that refuse a new create, histories, idempotency
 * records, the list order and the feed's order.  A target holding a prefix
 * already (an interrupted copy) is completed, a finished copy run again
 * adds nothing, and a target altered after the copy (any one column of
 * a payment, an event or an idempotency record changed behind the store's
 * back, NULL made "") fails the verification naming its organisation (or
 * the idempotency records).  test_migrate_source.c has the source that
 * does not exist. */
#include "app/migrate.h"

#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/uuid.h"
#include "payment/store.h"
#include "payment/store_copy_fixture.h"
#include "payment/store_fixture.h"
#include "payment/store_waiter.h"
#include "test.h"

#define PAYMENTS 40     /* payments the source holds */
#define ORGS 3          /* spread over this many organisations */
#define PREFIX 7        /* payments an interrupted copy left in the target */
#define PAGE 6          /* items a page of the copies here holds */

/* ---- stores on either side ------------------------------------------------ */

enum side_kind { SIDE_SQLITE, SIDE_PG, SIDE_MONGO };

/* One store of a copy, and what removes it afterwards. */
struct side {
    enum side_kind kind;
    char uri[512];   /* opens it */
    char name[64];   /* its temporary folder, schema or database */
    char path[128];  /* SQLite: its file */
    payment_store *s;
};

/* Makes and opens a new, empty store of kind k: 1, or 0 (skipped when its
 * server is not named, else a failed check). */
static int side_open(struct side *sd, enum side_kind k)
{
    memset(sd, 0, sizeof *sd);
    sd->kind = k;
    if (k == SIDE_SQLITE) {
        snprintf(sd->name, sizeof sd->name, "/tmp/paymentd-migrate-XXXXXX");
        if (!mkdtemp(sd->name)) {
            CHECK(!"mkdtemp");
            return 0;
        }
        snprintf(sd->path, sizeof sd->path, "%s/payments.db", sd->name);
        snprintf(sd->uri, sizeof sd->uri, "sqlite:%s", sd->path);
    } else if (k == SIDE_PG) {
        if (!pg_base()) {
            TEST_SKIP(PG_URI_ENV " unset: no PostgreSQL to copy to or from");
            return 0;
        }
        if (!pg_schema_create(sd->name, sd->uri, sizeof sd->uri))
            return 0;
    } else {
        if (!mongo_base()) {
            TEST_SKIP(MONGO_URI_ENV " unset: no MongoDB to copy from");
            return 0;
        }
        mongo_db_name(sd->name);
        mongo_uri_for(sd->uri, sizeof sd->uri, mongo_base(), sd->name, "");
    }
    char err[256] = "";
    int rc = payment_store_open(sd->uri, 0, &sd->s, err, sizeof err);
    CHECK_INT(rc, PAYMENT_STORE_OK);
    if (rc != PAYMENT_STORE_OK)
        fprintf(stderr, "  open %s: %s\n", sd->uri, err);
    return rc == PAYMENT_STORE_OK;
}

static void side_drop(struct side *sd)
{
    payment_store_close(sd->s);
    sd->s = NULL;
    if (!sd->name[0])
        return;
    if (sd->kind == SIDE_SQLITE)
        rm_tree(sd->name);
    else if (sd->kind == SIDE_PG)
        pg_schema_drop(sd->name);
    else
        mongo_drop(sd->name);
}

/* Runs sql on the store behind its back (PostgreSQL: pg_sql instead when
 * not NULL); on SQLite it must change exactly one row. */
static void side_exec(struct side *sd, const char *sql, const char *pg_sql)
{
    if (sd->kind == SIDE_PG) {
        CHECK(pg_test_exec(sd->uri, pg_sql ? pg_sql : sql));
        return;
    }
    CHECK_INT(sd->kind, SIDE_SQLITE);
    sqlite3 *db = NULL;
    CHECK_INT(sqlite3_open_v2(sd->path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    CHECK_INT(sqlite3_busy_timeout(db, 5000), SQLITE_OK);
    CHECK_INT(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    CHECK_INT(sqlite3_changes(db), 1);
    CHECK_INT(sqlite3_close(db), SQLITE_OK);
}

/* ---- the source's contents ------------------------------------------------- */

static void pay_id(char out[UUID_STR_LEN + 1], int n)
{
    snprintf(out, UUID_STR_LEN + 1, "00000000-0000-4000-8000-%012d", n);
}

static void org_id(char out[UUID_STR_LEN + 1], int n)
{
    snprintf(out, UUID_STR_LEN + 1, "0a0a0a0a-0000-4000-8000-%012d", n % ORGS + 1);
}

static int is_updated(int n) { return n % 4 == 0; }
static int is_deleted(int n) { return n % 7 == 0; }
static int is_keyed(int n) { return n % 5 == 0; }

/* Payment n's row at version v, its document in doc. */
static void row_make(struct payment_row *row, char doc[192], int n, int64_t v)
{
    memset(row, 0, sizeof *row);
    pay_id(row->id, n);
    org_id(row->organisation_id, n);
    row->version = v;
    row->created_ms = 1700000000000 + n;
    row->modified_ms = row->created_ms + v;
    row->currency = n % 2 ? "GBP" : "EUR";
    row->reference = n % 3 ? "ref" : NULL;
    snprintf(row->processing_date, sizeof row->processing_date, "2024-01-%02u",
             (unsigned)(n % 28 + 1) % 100u);
    int len = snprintf(doc, 192, "{\"id\":\"%s\",\"version\":%lld,\"amount\":\"%d.%02d\"}",
                       row->id, (long long)v, n, (int)v);
    row->doc = doc;
    row->doc_len = (size_t)len;
}

/* Payment n, written the way the API would: created (with an idempotency
 * record when keyed), updated twice, deleted. */
static void populate_one(payment_store *s, int n)
{
    struct payment_row row;
    char doc[192], key[32], fp[65], req[32];
    memset(fp, 'a' + n % 6, 64);
    fp[64] = '\0';
    snprintf(key, sizeof key, "create-%d", n);
    snprintf(req, sizeof req, "req-%d", n);
    struct payment_event_info ev = {.api_key_id = "key-1", .request_id = req};
    row_make(&row, doc, n, 0);
    struct payment_idem idem = {"key-1", key, fp, 201, "/v1/payments/x", "\"0\"",
                                row.doc, row.doc_len, 1700000000000 + n};
    if (is_keyed(n))
        ev.idempotency_key = key;
    CHECK_INT(sync_write(s, 0, &row, -1, is_keyed(n) ? &idem : NULL, &ev), PAYMENT_STORE_OK);
    ev.idempotency_key = NULL;
    ev.changes = "[\"/attributes/amount\"]";
    for (int64_t v = 1; is_updated(n) && v <= 2; v++) {
        row_make(&row, doc, n, v);
        CHECK_INT(sync_write(s, 1, &row, v - 1, NULL, &ev), PAYMENT_STORE_OK);
    }
    ev.changes = NULL;
    if (is_deleted(n)) {
        snprintf(key, sizeof key, "delete-%d", n);
        struct payment_idem del = {"key-2", key, fp, 204, NULL, NULL, NULL, 0, 1700000000000};
        CHECK_INT(sync_write(s, 2, &row, -1, &del, &ev), PAYMENT_STORE_OK);
    }
}

static void populate(payment_store *s)
{
    for (int n = 1; n <= PAYMENTS; n++)
        populate_one(s, n);
}

/* ---- what the target answers ---------------------------------------------- */

/* Every event read, flattened into one text for comparison. */
static int event_text(void *arg, const struct payment_event *ev)
{
    struct buf *b = arg;
    buf_printf(b, "%s|%d|%s|%s|%lld|%lld|%s|%s|%s|%s|%.*s\n", ev->id, (int)ev->type,
               ev->organisation_id, ev->payment_id, (long long)ev->version,
               (long long)ev->occurred_ms, ev->api_key_id ? ev->api_key_id : "-",
               ev->request_id ? ev->request_id : "-",
               ev->idempotency_key ? ev->idempotency_key : "-", ev->changes ? ev->changes : "-",
               (int)ev->doc_len, ev->doc ? ev->doc : "");
    return 0;
}

/* Every payment read, in sequence order, without its sequence number. */
static int payment_text(void *arg, const struct payment_export *p)
{
    struct buf *b = arg;
    buf_printf(b, "%s|%s|%lld|%d|%lld|%lld|%s|%s|%s|%.*s\n", p->row.id, p->row.organisation_id,
               (long long)p->row.version, p->deleted, (long long)p->row.created_ms,
               (long long)p->row.modified_ms, p->row.currency ? p->row.currency : "-",
               p->row.reference ? p->row.reference : "-", p->row.processing_date,
               (int)p->row.doc_len, p->row.doc ? p->row.doc : "");
    return 0;
}

/* The store's payments in sequence order and its events in feed order, as
 * text (positions and sequence numbers left out: the target gives its own). */
static void store_text(payment_store *s, struct buf *payments, struct buf *events)
{
    int more = 1;
    CHECK_INT(payment_store_export_payments(s, 0, PAYMENT_EXPORT_PAGE_MAX, payment_text, payments,
                                            &more),
              PAYMENT_STORE_OK);
    CHECK_INT(more, 0);
    CHECK_INT(payment_store_export_events(s, 0, PAYMENT_EXPORT_PAGE_MAX, event_text, events,
                                          &more),
              PAYMENT_STORE_OK);
    CHECK_INT(more, 0);
    CHECK(!buf_failed(payments) && !buf_failed(events));
}

/* Payment n reads the same on both stores: document, version, history;
 * a tombstone is not found and refuses a new create. */
static void check_payment(payment_store *src, payment_store *dst, int n)
{
    char id[UUID_STR_LEN + 1];
    pay_id(id, n);
    struct buf a = BUF_INIT, b = BUF_INIT;
    int64_t va = -1, vb = -2;
    int ra = payment_store_get(src, id, &a, &va), rb = payment_store_get(dst, id, &b, &vb);
    CHECK_INT(rb, ra);
    CHECK_INT(ra, is_deleted(n) ? PAYMENT_STORE_ENOTFOUND : PAYMENT_STORE_OK);
    if (ra == PAYMENT_STORE_OK) {
        CHECK_INT(vb, va);
        CHECK_STR(b.data, a.data);
    } else {
        struct payment_row row;
        char doc[192];
        row_make(&row, doc, n, 0);
        CHECK_INT(sync_write(dst, 0, &row, -1, NULL, NULL), PAYMENT_STORE_EDUPLICATE);
    }
    buf_reset(&a);
    buf_reset(&b);
    int more = 0;
    CHECK_INT(payment_store_history(src, id, -1, 100, event_text, &a, &more), PAYMENT_STORE_OK);
    CHECK_INT(payment_store_history(dst, id, -1, 100, event_text, &b, &more), PAYMENT_STORE_OK);
    CHECK(a.len > 0);
    CHECK_STR(b.data, a.data);
    buf_free(&a);
    buf_free(&b);
}

/* An idempotency record reads the same on both stores. */
static void check_idem(payment_store *src, payment_store *dst, const char *scope, const char *key)
{
    struct payment_idem_found a = {.location = BUF_INIT, .body = BUF_INIT};
    struct payment_idem_found b = {.location = BUF_INIT, .body = BUF_INIT};
    CHECK_INT(payment_store_idem_get(src, scope, key, &a), PAYMENT_STORE_OK);
    CHECK_INT(payment_store_idem_get(dst, scope, key, &b), PAYMENT_STORE_OK);
    CHECK_STR(b.fingerprint, a.fingerprint);
    CHECK_INT(b.status, a.status);
    CHECK_STR(b.etag, a.etag);
    CHECK_INT(b.location.len, a.location.len);
    CHECK_INT(b.body.len, a.body.len);
    CHECK(a.body.len == 0 ||
          (b.body.len == a.body.len && memcmp(a.body.data, b.body.data, a.body.len) == 0));
    buf_free(&a.location);
    buf_free(&a.body);
    buf_free(&b.location);
    buf_free(&b.body);
}

static void check_copy(payment_store *src, payment_store *dst)
{
    for (int n = 1; n <= PAYMENTS; n++) {
        check_payment(src, dst, n);
        char key[32];
        snprintf(key, sizeof key, "create-%d", n);
        if (is_keyed(n))
            check_idem(src, dst, "key-1", key);
        snprintf(key, sizeof key, "delete-%d", n);
        if (is_deleted(n))
            check_idem(src, dst, "key-2", key);
    }
    struct buf pa = BUF_INIT, ea = BUF_INIT, pb = BUF_INIT, eb = BUF_INIT;
    store_text(src, &pa, &ea);
    store_text(dst, &pb, &eb);
    CHECK_STR(pb.data, pa.data);
    CHECK_STR(eb.data, ea.data);
    buf_free(&pa);
    buf_free(&ea);
    buf_free(&pb);
    buf_free(&eb);
}

/* ---- an interrupted copy ---------------------------------------------------- */

/* Imports one payment into the target given as arg, as a copy interrupted
 * after it would have left it. */
static int import_one(void *arg, const struct payment_export *p)
{
    struct payment_import im = {.payments = p, .n_payments = 1};
    struct payment_import_result res;
    CHECK_INT(payment_store_import(arg, &im, &res), PAYMENT_STORE_OK);
    CHECK_INT(res.payments, 1);
    return 0;
}

/* ---- the cases ---------------------------------------------------------------- */

/* The counts of the source as populate made it. */
static void expected_counts(size_t *payments, size_t *tombstones, size_t *events, size_t *idem)
{
    *payments = *tombstones = *events = *idem = 0;
    for (int n = 1; n <= PAYMENTS; n++) {
        (*payments)++;
        *tombstones += (size_t)is_deleted(n);
        *events += 1 + 2 * (size_t)is_updated(n) + (size_t)is_deleted(n);
        *idem += (size_t)is_keyed(n) + (size_t)is_deleted(n);
    }
}

/* Verifies dst against src: 1 when verified; the report in *text (free it). */
static int verify(payment_store *src, payment_store *dst, struct migrate_verified *v, char **text)
{
    size_t len = 0;
    FILE *report = open_memstream(text, &len);
    CHECK(report != NULL);
    char err[256] = "";
    int rc = migrate_verify(src, dst, PAGE, report, v, err, sizeof err);
    CHECK_INT(rc, PAYMENT_STORE_OK);
    if (rc != PAYMENT_STORE_OK)
        fprintf(stderr, "  verify: %s\n", err);
    if (report)
        CHECK_INT(fclose(report), 0);
    return rc == PAYMENT_STORE_OK && v->orgs_differing == 0 && !v->idem_differs;
}

/* One column of the target changed behind its back, and how to undo it
 * (PostgreSQL's own SQL where it differs; no undo: the last one). */
struct alteration {
    int n;                     /* the payment whose organisation then differs; 0: none */
    const char *sql, *pg_sql;  /* the change */
    const char *undo, *pg_undo;
    const char *says;          /* what the report says */
};

#define P2 "'00000000-0000-4000-8000-000000000002'"
#define P3 "'00000000-0000-4000-8000-000000000003'"

static const struct alteration alterations[] = {
    {2, "UPDATE payments SET doc = '{\"altered\":true}' WHERE id = " P2, NULL,
     "UPDATE payments SET doc = '{\"id\":\"00000000-0000-4000-8000-000000000002\","
     "\"version\":0,\"amount\":\"2.00\"}' WHERE id = " P2,
     NULL, "payments' checksum differs"},
    {2, "UPDATE payments SET currency = 'XXX' WHERE id = " P2, NULL,
     "UPDATE payments SET currency = 'EUR' WHERE id = " P2, NULL, "payments' checksum differs"},
    {2, "UPDATE payments SET created_ms = 1 WHERE id = " P2, NULL,
     "UPDATE payments SET created_ms = 1700000000002 WHERE id = " P2, NULL,
     "payments' checksum differs"},
    /* NULL and "" differ. */
    {3, "UPDATE payments SET reference = '' WHERE id = " P3, NULL,
     "UPDATE payments SET reference = NULL WHERE id = " P3, NULL, "payments' checksum differs"},
    {2, "UPDATE events SET request_id = 'req-x' WHERE payment_id = " P2 " AND version = 0", NULL,
     "UPDATE events SET request_id = 'req-2' WHERE payment_id = " P2 " AND version = 0", NULL,
     "events' checksum differs"},
    /* A delete's record has no body: an empty one is another. */
    {0, "UPDATE idempotency SET body = X'' WHERE key = 'delete-7'",
     "UPDATE idempotency SET body = ''::bytea WHERE key = 'delete-7'", NULL, NULL,
     "idempotency records differ: 13 -> 13, checksum differs"},
};

/* Each alteration alone makes the verification fail, naming only the
 * organisation it touched (or the idempotency records); undone, the copy
 * verifies again. */
static void alter_each(struct side *src, struct side *dst)
{
    for (size_t i = 0; i < sizeof alterations / sizeof alterations[0]; i++) {
        const struct alteration *a = &alterations[i];
        struct migrate_verified v;
        char *text = NULL;
        side_exec(dst, a->sql, a->pg_sql);
        CHECK(!verify(src->s, dst->s, &v, &text));
        CHECK(text && strstr(text, a->says) != NULL);
        CHECK_INT(v.orgs_differing, a->n ? 1 : 0);
        CHECK_INT(v.idem_differs, a->n ? 0 : 1);
        for (int n = 1; a->n && n <= ORGS; n++) {
            char org[UUID_STR_LEN + 1];
            org_id(org, n);
            CHECK((text && strstr(text, org) != NULL) == (n % ORGS == a->n % ORGS));
        }
        if (text && strstr(text, a->says) == NULL)
            fprintf(stderr, "  alteration %zu: report %s\n", i, text);
        free(text);
        if (!a->undo)
            continue;
        side_exec(dst, a->undo, a->pg_undo);
        CHECK(verify(src->s, dst->s, &v, &text));
        free(text);
    }
}

/* Populates a store of kind from, copies it into one of kind to after a
 * prefix was there already, checks the copy, runs the copy again, then
 * alters the target and sees the verification fail. */
static void copy_between(enum side_kind from, enum side_kind to)
{
    struct side src = {0}, dst = {0};
    if (!side_open(&src, from) || !side_open(&dst, to)) {
        side_drop(&src);
        side_drop(&dst);
        return;
    }
    populate(src.s);
    int more = 0;
    CHECK_INT(payment_store_export_payments(src.s, 0, PREFIX, import_one, dst.s, &more),
              PAYMENT_STORE_OK);

    size_t payments, tombstones, events, idem;
    expected_counts(&payments, &tombstones, &events, &idem);
    struct migrate_copied c;
    char err[256] = "";
    int rc = migrate_copy(src.s, dst.s, PAGE, NULL, &c, err, sizeof err);
    CHECK_INT(rc, PAYMENT_STORE_OK);
    if (rc != PAYMENT_STORE_OK) {
        fprintf(stderr, "  copy: %s\n", err);
        side_drop(&src);
        side_drop(&dst);
        return;
    }
    CHECK_INT(c.payments_read, payments);
    CHECK_INT(c.payments_added, payments - PREFIX);
    CHECK_INT(c.idem_read, idem);
    CHECK_INT(c.idem_added, idem);
    CHECK_INT(c.events_read, events);
    CHECK_INT(c.events_added, events);

    struct migrate_verified v;
    char *text = NULL;
    CHECK(verify(src.s, dst.s, &v, &text));
    CHECK_STR(text, "");
    free(text);
    CHECK_INT(v.payments, payments);
    CHECK_INT(v.tombstones, tombstones);
    CHECK_INT(v.events, events);
    CHECK_INT(v.idem, idem);
    CHECK_INT(v.orgs, ORGS);
    check_copy(src.s, dst.s);

    /* Run again: nothing added, still verified. */
    CHECK_INT(migrate_copy(src.s, dst.s, PAGE, NULL, &c, err, sizeof err), PAYMENT_STORE_OK);
    CHECK_INT(c.payments_added + c.idem_added + c.events_added, 0);
    CHECK(verify(src.s, dst.s, &v, &text));
    free(text);

    alter_each(&src, &dst);
    side_drop(&src);
    side_drop(&dst);
}

static void sqlite_to_sqlite(void) { copy_between(SIDE_SQLITE, SIDE_SQLITE); }
static void sqlite_to_pg(void) { copy_between(SIDE_SQLITE, SIDE_PG); }
static void pg_to_sqlite(void) { copy_between(SIDE_PG, SIDE_SQLITE); }

/* MongoDB to PostgreSQL: the target is altered on PostgreSQL. */
static void mongo_to_pg(void)
{
    if (!pg_base()) {
        TEST_SKIP(PG_URI_ENV " unset: no PostgreSQL to copy to");
        return;
    }
    copy_between(SIDE_MONGO, SIDE_PG);
}

/* An empty store copies to an empty store, verified with no organisation. */
static void empty_copy(void)
{
    struct side src = {0}, dst = {0};
    if (side_open(&src, SIDE_SQLITE) && side_open(&dst, SIDE_SQLITE)) {
        struct migrate_copied c;
        struct migrate_verified v;
        char err[256], *text = NULL;
        CHECK_INT(migrate_copy(src.s, dst.s, 1, NULL, &c, err, sizeof err), PAYMENT_STORE_OK);
        CHECK(verify(src.s, dst.s, &v, &text));
        free(text);
        CHECK_INT(v.payments + v.events + v.idem + v.orgs, 0);
    }
    side_drop(&src);
    side_drop(&dst);
}

/* A target holding a payment the source does not hold fails, naming the
 * organisation the source lacks. */
static void extra_in_target(void)
{
    struct side src = {0}, dst = {0};
    if (side_open(&src, SIDE_SQLITE) && side_open(&dst, SIDE_SQLITE)) {
        populate_one(src.s, 1);
        struct migrate_copied c;
        char err[256] = "";
        CHECK_INT(migrate_copy(src.s, dst.s, PAGE, NULL, &c, err, sizeof err), PAYMENT_STORE_OK);
        populate_one(dst.s, 2);
        struct migrate_verified v;
        char *text = NULL, org[UUID_STR_LEN + 1];
        org_id(org, 2);
        CHECK(!verify(src.s, dst.s, &v, &text));
        CHECK_INT(v.orgs_differing, 1);
        CHECK(text && strstr(text, org) && strstr(text, "payments 0 -> 1"));
        free(text);
    }
    side_drop(&src);
    side_drop(&dst);
}

static void same_store(void)
{
    CHECK(migrate_same_store("sqlite:/tmp/a.db", "sqlite:/tmp/a.db"));
    CHECK(!migrate_same_store("sqlite:/tmp/a.db", "sqlite:/tmp/b.db"));
    CHECK(migrate_same_store("postgres://u@h/db", "postgresql://u@h/db"));
    CHECK(migrate_same_store("POSTGRES://u@h/db", "postgres://u@h/db"));
    CHECK(!migrate_same_store("postgres://u@h/db", "postgres://u@h/db2"));
    CHECK(migrate_same_store("mongodb://h/db", "MONGODB://h/db"));
    CHECK(!migrate_same_store("mongodb://h/db", "postgres://h/db"));
    CHECK(!migrate_same_store("sqlite:/tmp/a.db", "postgres://h/db"));
}

TEST_MAIN(TEST(same_store), TEST(empty_copy), TEST(extra_in_target), TEST(sqlite_to_sqlite),
          TEST(sqlite_to_pg), TEST(pg_to_sqlite), TEST(mongo_to_pg))
