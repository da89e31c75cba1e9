/* store_sqlite_list: list queries on the embedded store.  A query's SQL is
 * built from its filters and page, and kept prepared per reader by shape,
 * so that repeated shapes are not compiled again. */
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "payment/store_sqlite.h"

#define SQLITE_LIST_SQL_MAX 4096 /* the longest list query: 600 set values and every range */
#define SQLITE_LIST_BINDS (6 * PAYMENT_QUERY_MAX_VALUES + 8)

/* A list query under construction: SQL text and its positional bindings. */
struct sqlite_list_sql {
    char text[SQLITE_LIST_SQL_MAX];
    size_t len;
    int overflow; /* text did not fit: the query is not run */
    struct {
        const char *text; /* NULL: bind num */
        int64_t num;
    } binds[SQLITE_LIST_BINDS];
    int nbinds;
};

static void sqlite_list_put(struct sqlite_list_sql *l, const char *s)
{
    size_t n = strlen(s);
    if (l->overflow || n >= sizeof l->text - l->len) {
        l->overflow = 1;
        return;
    }
    memcpy(l->text + l->len, s, n + 1);
    l->len += n;
}

/* Appends clause (holding one '?') bound to text, or to num when text is NULL. */
static void sqlite_list_arg(struct sqlite_list_sql *l, const char *clause, const char *text,
                            int64_t num)
{
    if (l->nbinds == SQLITE_LIST_BINDS) {
        l->overflow = 1;
        return;
    }
    sqlite_list_put(l, clause);
    l->binds[l->nbinds].text = text;
    l->binds[l->nbinds].num = num;
    l->nbinds++;
}

static void sqlite_list_set(struct sqlite_list_sql *l, const char *column,
                            const struct payment_query_set *set)
{
    if (set->count == 0)
        return;
    sqlite_list_put(l, " AND ");
    sqlite_list_put(l, column);
    sqlite_list_put(l, " IN (");
    for (size_t i = 0; i < set->count && i < PAYMENT_QUERY_MAX_VALUES; i++)
        sqlite_list_arg(l, i ? ", ?" : "?", set->values[i], 0);
    sqlite_list_put(l, ")");
}

/* Builds the query of q's shape: its filters, its page, one row more than
 * the page to learn whether another follows. */
static void sqlite_list_build(struct sqlite_list_sql *l, const struct payment_query *q)
{
    sqlite_list_put(l, "SELECT seq, doc FROM payments WHERE deleted = 0");
    sqlite_list_set(l, "organisation_id", &q->organisation_id);
    sqlite_list_set(l, "currency", &q->currency);
    sqlite_list_set(l, "payment_scheme", &q->payment_scheme);
    sqlite_list_set(l, "payment_type", &q->payment_type);
    sqlite_list_set(l, "reference", &q->reference);
    sqlite_list_set(l, "end_to_end_reference", &q->end_to_end_reference);
    if (q->processing_date_from[0])
        sqlite_list_arg(l, " AND processing_date >= ?", q->processing_date_from, 0);
    if (q->processing_date_to[0])
        sqlite_list_arg(l, " AND processing_date <= ?", q->processing_date_to, 0);
    if (q->amount_from[0])
        sqlite_list_arg(l, " AND amount_key >= ?", q->amount_from, 0);
    if (q->amount_to[0])
        sqlite_list_arg(l, " AND amount_key <= ?", q->amount_to, 0);
    if (q->created_from_ms != INT64_MIN)
        sqlite_list_arg(l, " AND created_ms >= ?", NULL, q->created_from_ms);
    if (q->created_to_ms != INT64_MAX)
        sqlite_list_arg(l, " AND created_ms < ?", NULL, q->created_to_ms);
    if (q->mode == PAYMENT_PAGE_CURSOR)
        sqlite_list_arg(l, " AND seq > ?", NULL, q->after_seq);
    sqlite_list_put(l, " ORDER BY seq");
    sqlite_list_arg(l, " LIMIT ?", NULL, (int64_t)q->page_size + 1);
    if (q->mode == PAYMENT_PAGE_OFFSET)
        sqlite_list_arg(l, " OFFSET ?", NULL, (int64_t)q->page_number * q->page_size);
}

static int sqlite_list_bind(sqlite3_stmt *stmt, const struct sqlite_list_sql *l)
{
    int rc = SQLITE_OK;
    for (int i = 0; rc == SQLITE_OK && i < l->nbinds; i++)
        rc = l->binds[i].text ? sqlite3_bind_text(stmt, i + 1, l->binds[i].text, -1, SQLITE_STATIC)
                              : sqlite3_bind_int64(stmt, i + 1, l->binds[i].num);
    return rc;
}

/* Steps through the page, calling each per row.  Returns 0, each's non-zero
 * value, or a negative store error. */
static int sqlite_list_rows(sqlite3 *db, sqlite3_stmt *stmt, uint32_t page_size,
                            payment_store_row_fn each, void *arg, int *more)
{
    uint32_t n = 0;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (n == page_size) {
            *more = 1;
            return PAYMENT_STORE_OK;
        }
        int64_t seq = sqlite3_column_int64(stmt, 0);
        const char *doc = (const char *)sqlite3_column_text(stmt, 1);
        size_t len = (size_t)sqlite3_column_bytes(stmt, 1);
        if (!doc && sqlite3_errcode(db) == SQLITE_NOMEM)
            return PAYMENT_STORE_EINTERNAL;
        int stop = each(arg, doc ? doc : "", doc ? len : 0, seq);
        if (stop)
            return stop;
        n++;
    }
    return rc == SQLITE_DONE ? PAYMENT_STORE_OK : sqlite_map_err(rc);
}

/* The reader's prepared statement for l's text: a cached one, or a new one
 * that replaces the oldest.  The statement stays the reader's. */
static int sqlite_list_stmt(struct sqlite_reader *r, const struct sqlite_list_sql *l,
                            sqlite3_stmt **out)
{
    for (int i = 0; i < SQLITE_LIST_CACHE && r->list[i]; i++) {
        const char *sql = sqlite3_sql(r->list[i]);
        if (sql && strlen(sql) == l->len && memcmp(sql, l->text, l->len) == 0) {
            *out = r->list[i];
            return SQLITE_OK;
        }
    }
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v3(r->db, l->text, (int)l->len + 1, SQLITE_PREPARE_PERSISTENT,
                                &stmt, NULL);
    if (rc != SQLITE_OK)
        return rc;
    unsigned slot = r->list_next++ % SQLITE_LIST_CACHE;
    (void)sqlite3_finalize(r->list[slot]); /* its last run's error was handled then */
    r->list[slot] = stmt;
    *out = stmt;
    return SQLITE_OK;
}

int sqlite_list(payment_store *s, const struct payment_query *q, payment_store_row_fn each,
                       void *arg, int *more)
{
    struct sqlite_store *st = (struct sqlite_store *)s;
    *more = 0;
    int err;
    struct sqlite_reader *r = sqlite_reader_get(st, &err);
    if (!r)
        return err;
    struct sqlite_list_sql *l = malloc(sizeof *l);
    if (!l)
        return PAYMENT_STORE_EINTERNAL;
    l->len = 0;
    l->overflow = 0;
    l->nbinds = 0;
    l->text[0] = '\0';
    sqlite_list_build(l, q);
    sqlite3_stmt *stmt = NULL;
    int rc = l->overflow ? SQLITE_TOOBIG : sqlite_list_stmt(r, l, &stmt);
    if (rc == SQLITE_OK)
        rc = sqlite_list_bind(stmt, l);
    if (rc == SQLITE_OK)
        err = sqlite_list_rows(r->db, stmt, q->page_size, each, arg, more);
    else
        err = sqlite_map_err(rc);
    if (stmt)
        sqlite_stmt_release(stmt); /* its text binds point into l */
    free(l);
    return err;
}
