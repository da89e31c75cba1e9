/* store_pg_deliveries_read: reading the webhook deliveries of the
 * PostgreSQL store (store.h, "webhooks: endpoints and their deliveries"): a
 * delivery's row, an endpoint's deliveries by page, and the pending ones'
 * count for /metrics.  store_pg_deliveries.c writes them.
 *
 * Each read is one statement, so one snapshot, on the calling thread's
 * reader (pg_read), outside any transaction.  Its rows are the client's
 * before any callback runs, so a callback may call the store, the same
 * read included. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "payment/store_pg.h"

/* An endpoint's page: $1 endpoint, $2 the id to start above, $3 statuses
 * or-ed or 0, $4 rows (one more than the page, to learn whether another
 * follows). */
static const char sql_list[] = "SELECT " PG_DELIVERY_COLUMNS " FROM deliveries"
                               " WHERE webhook_id = $1 AND id > $2"
                               " AND ($3::integer = 0 OR (status & $3::integer) <> 0)"
                               " ORDER BY id LIMIT $4";
static const char sql_pending[] =
    "SELECT count(*), coalesce(min(created_ms), 0) FROM deliveries WHERE status = 1";

int pg_delivery_row(const PGresult *res, int r, struct payment_delivery *d)
{
    memset(d, 0, sizeof *d);
    d->event_pos = pg_int(res, r, 3);
    d->status = (enum payment_delivery_status)pg_int(res, r, 4);
    d->attempts = (int)pg_int(res, r, 5);
    d->created_ms = pg_int(res, r, 6);
    d->next_ms = pg_int(res, r, 7);
    d->attempts_json = pg_text(res, r, 8);
    d->body = pg_text(res, r, 9);
    d->body_len = pg_len(res, r, 9);
    if (pg_column_uuid(res, r, 0, d->id) != 0 || pg_column_uuid(res, r, 1, d->webhook_id) != 0 ||
        pg_column_uuid(res, r, 2, d->event_id) != 0 || !d->attempts_json || !d->body)
        return PAYMENT_STORE_EINTERNAL;
    return PAYMENT_STORE_OK;
}

int pg_deliveries_list(payment_store *s, const struct payment_delivery_query *q,
                       payment_store_delivery_fn each, void *arg, int *more)
{
    assert(q->limit >= 1 && q->limit <= PAYMENT_WEBHOOKS_PAGE_MAX);
    *more = 0;
    struct pg_params p;
    pg_params_init(&p);
    pg_param_text(&p, q->webhook_id);
    pg_param_text(&p, q->after_id ? q->after_id : "");
    pg_param_int(&p, q->statuses);
    pg_param_int(&p, (int64_t)q->limit + 1);
    PGresult *res = NULL;
    int err = pg_read((struct pg_store *)s, sql_list, &p, &res);
    if (err != PAYMENT_STORE_OK)
        return err;
    int n = PQntuples(res);
    assert(n >= 0 && (uint32_t)n <= q->limit + 1);
    int page = (uint32_t)n > q->limit ? (int)q->limit : n;
    for (int r = 0; err == PAYMENT_STORE_OK && r < page; r++) {
        struct payment_delivery d;
        err = pg_delivery_row(res, r, &d);
        if (err == PAYMENT_STORE_OK)
            err = each(arg, &d);
    }
    if (err == PAYMENT_STORE_OK)
        *more = n > page;
    PQclear(res);
    return err;
}

int pg_deliveries_pending(payment_store *s, int64_t *count, int64_t *oldest_ms)
{
    PGresult *res = NULL;
    int err = pg_read((struct pg_store *)s, sql_pending, NULL, &res);
    if (err != PAYMENT_STORE_OK)
        return err;
    if (PQntuples(res) == 1) {
        *count = pg_int(res, 0, 0);
        *oldest_ms = pg_int(res, 0, 1);
    } else {
        err = PAYMENT_STORE_EINTERNAL; /* an aggregate always gives a row */
    }
    PQclear(res);
    return err;
}
