/* store_sqlite_deliveries_read: reading the webhook deliveries of the
 * embedded store (store.h, "webhooks: endpoints and their deliveries"): a
 * delivery's row, an endpoint's deliveries by page, and the pending ones'
 * count for /metrics.  store_sqlite_deliveries.c writes them.
 *
 * Each read is one statement, so one snapshot, on the calling thread's
 * reader connection (store_sqlite_read.c), left outside any transaction.
 * A callback may call the store, except for the very read it is called
 * from (whose statement is in use: that call fails with EINTERNAL). */
#include <sqlite3.h>
#include <stdint.h>
#include <string.h>

#include "payment/store_sqlite.h"

/* An endpoint's page: ?1 endpoint, ?2 the id to start above, ?3 statuses
 * or-ed or 0, ?4 rows (one more than the page, to learn whether another
 * follows). */
static const char sql_list[] = "SELECT " SQLITE_DELIVERY_COLUMNS " FROM deliveries"
                               " WHERE webhook_id = ?1 AND id > ?2"
                               " AND (?3 = 0 OR (status & ?3) <> 0) ORDER BY id LIMIT ?4";
static const char sql_pending[] =
    "SELECT count(*), coalesce(min(created_ms), 0) FROM deliveries WHERE status = 1";

int sqlite_delivery_row(sqlite3_stmt *stmt, struct payment_delivery *d)
{
    memset(d, 0, sizeof *d);
    d->event_pos = sqlite3_column_int64(stmt, 3);
    d->status = (enum payment_delivery_status)sqlite3_column_int(stmt, 4);
    d->attempts = sqlite3_column_int(stmt, 5);
    d->created_ms = sqlite3_column_int64(stmt, 6);
    d->next_ms = sqlite3_column_int64(stmt, 7);
    d->attempts_json = (const char *)sqlite3_column_text(stmt, 8);
    d->body = (const char *)sqlite3_column_text(stmt, 9);
    d->body_len = (size_t)sqlite3_column_bytes(stmt, 9);
    if (sqlite_column_uuid(stmt, 0, d->id) != 0 ||
        sqlite_column_uuid(stmt, 1, d->webhook_id) != 0 ||
        sqlite_column_uuid(stmt, 2, d->event_id) != 0 || !d->attempts_json || !d->body)
        return PAYMENT_STORE_EINTERNAL;
    return PAYMENT_STORE_OK;
}

/* Binds the page q names to sql_list's statement. */
static int sqlite_deliveries_bind(sqlite3_stmt *stmt, const struct payment_delivery_query *q)
{
    int rc = sqlite3_bind_text(stmt, 1, q->webhook_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 2, q->after_id ? q->after_id : "", -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 3, q->statuses);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(stmt, 4, (int64_t)q->limit + 1);
    return rc;
}

/* A delivery callback and its argument, for sqlite_page_rows. */
struct sqlite_delivery_each {
    payment_store_delivery_fn each;
    void *arg;
};

/* Passes the current row's delivery to the callback of arg (a
 * sqlite_delivery_each). */
static int sqlite_delivery_give(sqlite3_stmt *stmt, void *arg)
{
    const struct sqlite_delivery_each *to = arg;
    struct payment_delivery d;
    int err = sqlite_delivery_row(stmt, &d);
    return err != PAYMENT_STORE_OK ? err : to->each(to->arg, &d);
}

int sqlite_deliveries_list(payment_store *s, const struct payment_delivery_query *q,
                           payment_store_delivery_fn each, void *arg, int *more)
{
    *more = 0;
    int err = PAYMENT_STORE_OK;
    sqlite3_stmt *stmt = sqlite_read_stmt((struct sqlite_store *)s, sql_list, &err);
    if (!stmt)
        return err;
    struct sqlite_delivery_each to = {each, arg};
    return sqlite_page_rows(stmt, sqlite_deliveries_bind(stmt, q), q->limit, sqlite_delivery_give,
                            &to, more);
}

int sqlite_deliveries_pending(payment_store *s, int64_t *count, int64_t *oldest_ms)
{
    int err = PAYMENT_STORE_OK;
    sqlite3_stmt *stmt = sqlite_read_stmt((struct sqlite_store *)s, sql_pending, &err);
    if (!stmt)
        return err;
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        *count = sqlite3_column_int64(stmt, 0);
        *oldest_ms = sqlite3_column_int64(stmt, 1);
        err = PAYMENT_STORE_OK;
    } else {
        /* An aggregate always gives a row: none is a broken file. */
        err = sqlite_map_err(rc == SQLITE_DONE ? SQLITE_CORRUPT : rc);
    }
    sqlite_stmt_release(stmt);
    return err;
}
