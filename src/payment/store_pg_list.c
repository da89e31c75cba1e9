/* store_pg_list: list queries on the PostgreSQL store.  A query's SQL is
 * built from its filters and page and run unprepared on the calling
 * thread's reader (pg_read_unprepared), so the server plans it for its
 * values: one organisation's page is a walk of payments_organisation_live
 * (organisation_id, seq, live rows only) in seq order, stopped after the
 * page.  A filter of one value is an equality; of several, one array
 * parameter (= ANY), so that no query needs more than PG_PARAMS_MAX
 * parameters.
 *
 * Text comparisons (the sets, the date and amount ranges) are byte by byte
 * as the embedded store's, since every text column is COLLATE "C". */
#include <assert.h>
#include <string.h>

#include "payment/store_pg.h"

#define PG_LIST_SETS 6 /* the any-of filters of struct payment_query */

/* A list query under construction: its SQL, its parameters, and the
 * array literals of the filters with several values, which the parameters
 * point into. */
struct pg_list_sql {
    struct buf text;
    struct buf arrays[PG_LIST_SETS];
    int narrays;
    struct pg_params params;
};

/* Appends v to b as an element of an array literal: quoted, its quotes
 * and backslashes escaped. */
static void pg_list_element(struct buf *b, const char *v)
{
    (void)buf_puts(b, "\"");
    for (const char *c = v; *c;) {
        size_t n = strcspn(c, "\"\\");
        (void)buf_append(b, c, n);
        c += n;
        if (*c) {
            char esc[2] = {'\\', *c};
            (void)buf_append(b, esc, 2);
            c++;
        }
    }
    (void)buf_puts(b, "\"");
}

/* Appends " AND column = $n" for a one-value set, or = ANY($n) of an array
 * of its values: nothing for a set not given. */
static void pg_list_set(struct pg_list_sql *l, const char *column,
                        const struct payment_query_set *set)
{
    if (set->count == 0)
        return;
    size_t count = set->count < PAYMENT_QUERY_MAX_VALUES ? set->count : PAYMENT_QUERY_MAX_VALUES;
    if (count == 1) {
        (void)buf_printf(&l->text, " AND %s = $%d", column, l->params.n + 1);
        pg_param_text(&l->params, set->values[0]);
        return;
    }
    assert(l->narrays < PG_LIST_SETS);
    struct buf *a = &l->arrays[l->narrays++];
    (void)buf_puts(a, "{");
    for (size_t i = 0; i < count; i++) {
        if (i)
            (void)buf_puts(a, ",");
        pg_list_element(a, set->values[i]);
    }
    (void)buf_puts(a, "}"); /* NUL-terminated: a's data is the parameter */
    (void)buf_printf(&l->text, " AND %s = ANY($%d::text[])", column, l->params.n + 1);
    pg_param_text(&l->params, a->data);
}

/* Appends clause, whose parameter is the next one ("%d"), bound to text. */
static void pg_list_text(struct pg_list_sql *l, const char *clause, const char *text)
{
    (void)buf_printf(&l->text, clause, l->params.n + 1);
    pg_param_text(&l->params, text);
}

static void pg_list_int(struct pg_list_sql *l, const char *clause, int64_t num)
{
    (void)buf_printf(&l->text, clause, l->params.n + 1);
    pg_param_int(&l->params, num);
}

/* Builds the query of q: its filters, its page, one row more than the page
 * to learn whether another follows. */
static void pg_list_build(struct pg_list_sql *l, const struct payment_query *q)
{
    (void)buf_puts(&l->text, "SELECT seq, doc FROM payments WHERE NOT deleted");
    pg_list_set(l, "organisation_id", &q->organisation_id);
    pg_list_set(l, "currency", &q->currency);
    pg_list_set(l, "payment_scheme", &q->payment_scheme);
    pg_list_set(l, "payment_type", &q->payment_type);
    pg_list_set(l, "reference", &q->reference);
    pg_list_set(l, "end_to_end_reference", &q->end_to_end_reference);
    if (q->processing_date_from[0])
        pg_list_text(l, " AND processing_date >= $%d", q->processing_date_from);
    if (q->processing_date_to[0])
        pg_list_text(l, " AND processing_date <= $%d", q->processing_date_to);
    if (q->amount_from[0])
        pg_list_text(l, " AND amount_key >= $%d", q->amount_from);
    if (q->amount_to[0])
        pg_list_text(l, " AND amount_key <= $%d", q->amount_to);
    if (q->created_from_ms != INT64_MIN)
        pg_list_int(l, " AND created_ms >= $%d", q->created_from_ms);
    if (q->created_to_ms != INT64_MAX)
        pg_list_int(l, " AND created_ms < $%d", q->created_to_ms);
    if (q->mode == PAYMENT_PAGE_CURSOR)
        pg_list_int(l, " AND seq > $%d", q->after_seq);
    (void)buf_puts(&l->text, " ORDER BY seq");
    pg_list_int(l, " LIMIT $%d", (int64_t)q->page_size + 1);
    if (q->mode == PAYMENT_PAGE_OFFSET)
        pg_list_int(l, " OFFSET $%d", (int64_t)q->page_number * q->page_size);
}

/* Calls each per row of the page.  Returns 0, each's non-zero value, or
 * EINTERNAL for a row no write makes. */
static int pg_list_rows(const PGresult *res, uint32_t page_size, payment_store_row_fn each,
                        void *arg, int *more)
{
    if (PQnfields(res) != 2)
        return PAYMENT_STORE_EINTERNAL;
    int n = PQntuples(res);
    for (int i = 0; i < n; i++) {
        if ((uint32_t)i == page_size) {
            *more = 1;
            break;
        }
        const char *doc = pg_text(res, i, 1);
        if (!doc)
            return PAYMENT_STORE_EINTERNAL; /* a live payment has its document */
        int stop = each(arg, doc, pg_len(res, i, 1), pg_int(res, i, 0));
        if (stop)
            return stop;
    }
    return PAYMENT_STORE_OK;
}

static int pg_list_failed(const struct pg_list_sql *l)
{
    for (int i = 0; i < l->narrays; i++)
        if (buf_failed(&l->arrays[i]))
            return 1;
    return buf_failed(&l->text) || !l->text.data;
}

static void pg_list_free(struct pg_list_sql *l)
{
    for (int i = 0; i < l->narrays; i++)
        buf_free(&l->arrays[i]);
    buf_free(&l->text);
}

int pg_list(payment_store *s, const struct payment_query *q, payment_store_row_fn each,
            void *arg, int *more)
{
    *more = 0;
    struct pg_list_sql l = {.text = BUF_INIT, .narrays = 0};
    for (int i = 0; i < PG_LIST_SETS; i++)
        l.arrays[i] = (struct buf)BUF_INIT;
    pg_params_init(&l.params);
    pg_list_build(&l, q);
    int err = PAYMENT_STORE_EINTERNAL; /* out of memory building it */
    PGresult *res = NULL;
    if (!pg_list_failed(&l))
        err = pg_read_unprepared((struct pg_store *)s, l.text.data, &l.params, &res);
    if (err == PAYMENT_STORE_OK)
        err = pg_list_rows(res, q->page_size, each, arg, more);
    PQclear(res); /* NULL: a no-op */
    pg_list_free(&l);
    return err;
}
