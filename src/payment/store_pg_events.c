/* store_pg_events: the events of the PostgreSQL store (store.h, "events: the
 * history and the change feed"): recording them in the payment writes,
 * reading the feed and the histories, telling the subscriber of other
 * processes' commits, and the retention purge.
 *
 * Recording.  Each payment write (store_pg_writer.c, and the broker's
 * applies, store_pg_apply.c) inserts its event into the events table inside
 * the batch's transaction, after the payment row: a write that changes
 * nothing inserts none, and a write undone (its savepoint rolled back, or
 * the batch's transaction) takes its event with it, so a commit holds both
 * the change and its event or neither.  A delete's event is inserted from
 * the live row it deletes (the document as it was), and that insert is the
 * delete's compare-and-set.
 *
 * Positions, and why the feed is in commit order.  An event's position is
 * not the table's (a sequence hands numbers out in the order transactions
 * ask for them, not the order they commit: a write could take 5, another 6
 * and commit first, and a reader seeing 6 would pass 5 before it commits).
 * It is pg_next_pos's, handed out by the writer from feed_meta 'pos' while
 * its transaction holds that row locked FOR UPDATE (store_pg.h, "Order
 * across processes"), up to its commit.  The next transaction of any
 * process gets the lock only once that commit is visible, and starts from
 * the counter it wrote back, so positions grow in commit order: every event
 * not yet committed when a reader's snapshot was taken will commit with a
 * position above every position that snapshot holds.  A feed page, the
 * feed's end (feed_meta 'pos') and its floor are read by one statement, one
 * snapshot, so a consumer that moves its cursor to that end (or to its last
 * event) skips nothing committed later.  Positions may have gaps (a delete
 * whose compare-and-set failed, a write undone in its savepoint): a feed
 * never promises them contiguous.
 *
 * Retention: the feed's floor, feed_meta 'floor', is the last position that
 * left the feed; a cursor below it has missed events (EEXPIRED), a cursor of
 * 0 starts at it.  The writer thread purges between its batches, one small
 * transaction per turn that takes the write lock like a batch (PG_PURGE_BATCH
 * events at most for each cut-off), so a write waits at most for one of
 * those.  Each walks the events in position order from the oldest and stops
 * at the first that occurred at or after the cut-off (positions follow
 * commits and an event's time is its write's, so the oldest come first; one
 * committed late with an earlier time is kept until those before it go).
 * Events that leave the feed move the floor past them; deleted ones (from
 * the histories) too.
 *
 * The subscriber is told by the writer thread: after each commit of its own
 * that holds events (store_pg_writer.c), and, reading feed_meta 'pos' every
 * PG_EVENTS_POLL_US between its batches, after other processes' commits.
 *
 * The subscriber's poll and the retention purge are store_pg_events_upkeep.c's.
 *
 * Threads: the recording functions run on the writer thread, on st->wconn;
 * the reads on the calling thread's reader connection (store_pg_read.c),
 * single statements in autocommit. */
#include <assert.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/uuid.h"
#include "payment/store_pg.h"

/* ---- recording ---------------------------------------------------------- */

/* The columns both event inserts write, in their parameters' order. */
#define PG_EVENT_INSERT_COLUMNS                                                           \
    "INSERT INTO events (pos, id, occurred_ms, api_key_id, request_id, idempotency_key,"  \
    " operation_id, payment_id, organisation_id, version, type, changes, doc)"

/* A create's or update's event: $1..$7 the position and the description,
 * $8.. the row's. */
static const char PG_SQL_EVENT_INSERT[] =
    PG_EVENT_INSERT_COLUMNS " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

/* A delete's event, from the live row $8 at version $9 (any, when -1): its
 * version + 1, the document as it was.  Inserts one row, or none. */
static const char PG_SQL_EVENT_DELETE[] =
    PG_EVENT_INSERT_COLUMNS
    " SELECT $1::bigint, $2::text, $3::bigint, $4::text, $5::text, $6::text, $7::text, id,"
    " organisation_id, version + 1, 4, NULL, doc FROM payments"
    " WHERE id = $8::text AND NOT deleted AND ($9::bigint = -1 OR version = $9::bigint)";

/* The event's id: the one info gives, else a new UUIDv7 of occurred_ms.
 * 0, or -1 when the kernel's random source fails. */
static int pg_event_id(const struct payment_event_info *info, int64_t occurred_ms,
                       char out[UUID_STR_LEN + 1])
{
    if (info && info->id[0]) {
        memcpy(out, info->id, UUID_STR_LEN);
        out[UUID_STR_LEN] = '\0';
        return 0;
    }
    struct uuid u;
    if (uuid_v7_generate(occurred_ms, &u) != 0)
        return -1;
    uuid_format(&u, out);
    return 0;
}

/* Appends what every event insert takes first: $1 its position (the
 * writer's next), $2 the id (written into id), $3 occurred_ms, $4..$7 the
 * caller, request, key and operation (info may be NULL: none). */
static int pg_event_params_info(struct pg_store *st, struct pg_params *p,
                                const struct payment_event_info *info, int64_t occurred_ms,
                                char id[UUID_STR_LEN + 1])
{
    if (pg_event_id(info, occurred_ms, id) != 0)
        return PAYMENT_STORE_EINTERNAL;
    pg_param_int(p, pg_next_pos(st));
    pg_param_textn(p, id, UUID_STR_LEN);
    pg_param_int(p, occurred_ms);
    pg_param_text(p, info ? info->api_key_id : NULL);
    pg_param_text(p, info ? info->request_id : NULL);
    pg_param_text(p, info ? info->idempotency_key : NULL);
    pg_param_text(p, info ? info->operation_id : NULL);
    return PAYMENT_STORE_OK;
}

int pg_event_record(struct pg_store *st, struct pg_op *op, enum payment_event_type type)
{
    assert(type == PAYMENT_EVENT_CREATED || type == PAYMENT_EVENT_UPDATED);
    const struct payment_row *row = &op->row;
    const struct payment_event_info *info = op->ev;
    int64_t occurred_ms = info && info->occurred_ms ? info->occurred_ms : row->modified_ms;
    const char *changes = info && type == PAYMENT_EVENT_UPDATED ? info->changes : NULL;
    char id[UUID_STR_LEN + 1];
    struct pg_params p;
    pg_params_init(&p);
    int err = pg_event_params_info(st, &p, info, occurred_ms, id);
    if (err != PAYMENT_STORE_OK)
        return err;
    pg_param_text(&p, row->id);
    pg_param_text(&p, row->organisation_id);
    pg_param_int(&p, row->version);
    pg_param_int(&p, (int64_t)type);
    pg_param_text(&p, changes);
    pg_param_textn(&p, row->doc ? row->doc : "", row->doc ? row->doc_len : 0);
    return pg_exec(&st->wconn, PG_SQL_EVENT_INSERT, &p, NULL);
}

int pg_event_record_delete(struct pg_store *st, struct pg_op *op, int *recorded)
{
    const struct payment_event_info *info = op->ev;
    int64_t occurred_ms = info && info->occurred_ms ? info->occurred_ms : clock_now_ms();
    char id[UUID_STR_LEN + 1];
    struct pg_params p;
    pg_params_init(&p);
    *recorded = 0;
    int err = pg_event_params_info(st, &p, info, occurred_ms, id);
    if (err != PAYMENT_STORE_OK)
        return err;
    pg_param_text(&p, op->row.id);
    pg_param_int(&p, op->expected_version);
    PGresult *res = NULL;
    err = pg_exec(&st->wconn, PG_SQL_EVENT_DELETE, &p, &res);
    if (err != PAYMENT_STORE_OK)
        return err;
    const char *rows = PQcmdTuples(res);
    assert(strcmp(rows, "0") == 0 || strcmp(rows, "1") == 0); /* id is unique */
    *recorded = strcmp(rows, "1") == 0;
    PQclear(res);
    return PAYMENT_STORE_OK;
}

/* ---- reading ------------------------------------------------------------ */

int pg_event_row(const PGresult *res, int r, struct payment_event *ev)
{
    assert(PQnfields(res) >= 13);
    ev->pos = pg_int(res, r, 0);
    int64_t type = pg_int(res, r, 2);
    ev->type = (enum payment_event_type)type;
    ev->version = pg_int(res, r, 5);
    ev->occurred_ms = pg_int(res, r, 6);
    ev->api_key_id = pg_text(res, r, 7);
    ev->request_id = pg_text(res, r, 8);
    ev->idempotency_key = pg_text(res, r, 9);
    ev->operation_id = pg_text(res, r, 10);
    ev->changes = pg_text(res, r, 11);
    ev->doc = pg_text(res, r, 12);
    ev->doc_len = pg_len(res, r, 12);
    int bad = ev->pos <= 0 || pg_column_uuid(res, r, 1, ev->id) != 0 ||
              pg_column_uuid(res, r, 3, ev->organisation_id) != 0 ||
              pg_column_uuid(res, r, 4, ev->payment_id) != 0 || !ev->doc ||
              (type != PAYMENT_EVENT_CREATED && type != PAYMENT_EVENT_UPDATED &&
               type != PAYMENT_EVENT_DELETED);
    return bad ? PAYMENT_STORE_EINTERNAL : PAYMENT_STORE_OK;
}

/* What a page read: its events, the last one's position. */
struct pg_event_page {
    uint32_t n;
    int64_t last_pos;
};

/* Calls each for the events of res's rows, in the order order gives (row
 * order[i] i-th; NULL: the rows' order), at most limit of them; sets *more
 * (when not NULL) if another row follows.  Returns 0, each's non-zero
 * value, or a negative store error. */
static int pg_event_rows(const PGresult *res, const int *order, uint32_t limit,
                         payment_store_event_fn each, void *arg, struct pg_event_page *page,
                         int *more)
{
    int rows = PQntuples(res);
    for (int i = 0; i < rows; i++) {
        if (page->n == limit) {
            if (more)
                *more = 1;
            return PAYMENT_STORE_OK;
        }
        struct payment_event ev;
        int err = pg_event_row(res, order ? order[i] : i, &ev);
        if (err != PAYMENT_STORE_OK)
            return err;
        int stop = each(arg, &ev);
        if (stop)
            return stop;
        page->n++;
        page->last_pos = ev.pos;
    }
    return PAYMENT_STORE_OK;
}

static const char PG_SQL_HISTORY[] = "SELECT " PG_EVENT_COLUMNS " FROM events"
                                     " WHERE payment_id = $1 AND version > $2"
                                     " ORDER BY version LIMIT $3";

int pg_history(payment_store *s, const char *payment_id, int64_t after_version, uint32_t limit,
               payment_store_event_fn each, void *arg, int *more)
{
    struct pg_store *st = (struct pg_store *)s;
    assert(limit >= 1 && limit <= PAYMENT_EVENTS_PAGE_MAX);
    *more = 0;
    struct pg_params p;
    pg_params_init(&p);
    pg_param_text(&p, payment_id);
    pg_param_int(&p, after_version);
    pg_param_int(&p, (int64_t)limit + 1);
    PGresult *res = NULL;
    int err = pg_read(st, PG_SQL_HISTORY, &p, &res);
    if (err != PAYMENT_STORE_OK)
        return err;
    struct pg_event_page page = {0, 0};
    err = pg_event_rows(res, NULL, limit, each, arg, &page, more);
    PQclear(res);
    return err;
}

/* ---- the feed ----------------------------------------------------------- */

/* A feed query's shape: which filters its SQL holds.  Each shape's SQL is
 * made once (pg_feed_sql) and kept, so that its address keys the statement
 * prepared for it on each reader connection. */
enum pg_feed_shape {
    FEED_ORGS = 1,    /* organisation_id among a text array */
    FEED_TYPES = 2,   /* (type & mask) <> 0 */
    FEED_PAYMENT = 4, /* payment_id = */
    FEED_FROM = 8,    /* occurred_ms >= */
    FEED_TO = 16,     /* occurred_ms < */
};

#define PG_FEED_SHAPES 32
#define PG_FEED_SQL_MAX 1024 /* the longest shape's SQL */
#define PG_FEED_ALL_TYPES (PAYMENT_EVENT_CREATED | PAYMENT_EVENT_UPDATED | PAYMENT_EVENT_DELETED)

/* Every shape's SQL, made once by pg_feed_sql_init. */
static char pg_feed_sqls[PG_FEED_SHAPES][PG_FEED_SQL_MAX];
static pthread_once_t pg_feed_once = PTHREAD_ONCE_INIT;

static unsigned pg_feed_shape(const struct payment_event_query *q)
{
    unsigned shape = 0;
    if (!q->all_orgs)
        shape |= FEED_ORGS;
    if (q->types != 0 && (q->types & PG_FEED_ALL_TYPES) != PG_FEED_ALL_TYPES)
        shape |= FEED_TYPES;
    if (q->payment_id)
        shape |= FEED_PAYMENT;
    if (q->from_ms != INT64_MIN)
        shape |= FEED_FROM;
    if (q->to_ms != INT64_MAX)
        shape |= FEED_TO;
    assert(shape < PG_FEED_SHAPES);
    return shape;
}

/* Appends one filter of a shape, its parameter the next number. */
static void pg_feed_filter(struct buf *b, int *n, const char *before, const char *after)
{
    (void)buf_printf(b, " AND %s$%d%s", before, ++*n, after);
}

/* The SQL of a shape: one statement, so one snapshot, reading the events
 * above the cursor $1 (and the floor) in position order, at most $2, then
 * the feed's end and floor as columns 13 and 14 of every row; one row of
 * NULL events when the page is empty.  A cursor above 0 below the floor
 * reads no events (it has expired); one of 0 (or below) starts at the
 * floor.  The filters' parameters follow, in the order
 * of enum pg_feed_shape. */
static void pg_feed_sql(unsigned shape, char out[PG_FEED_SQL_MAX])
{
    struct buf b = BUF_INIT;
    int n = 2;
    (void)buf_puts(&b, "SELECT e.*, m.feed_end, m.feed_floor FROM"
                       " (SELECT (SELECT value FROM feed_meta WHERE key = 'pos') AS feed_end,"
                       " (SELECT value FROM feed_meta WHERE key = 'floor') AS feed_floor) m"
                       " LEFT JOIN LATERAL (SELECT " PG_EVENT_COLUMNS " FROM events"
                       " WHERE pos > GREATEST($1::bigint, m.feed_floor)"
                       " AND ($1::bigint <= 0 OR $1::bigint >= m.feed_floor)");
    if (shape & FEED_ORGS)
        pg_feed_filter(&b, &n, "organisation_id = ANY(", "::text[])");
    if (shape & FEED_TYPES)
        pg_feed_filter(&b, &n, "(type & ", "::integer) <> 0");
    if (shape & FEED_PAYMENT)
        pg_feed_filter(&b, &n, "payment_id = ", "::text");
    if (shape & FEED_FROM)
        pg_feed_filter(&b, &n, "occurred_ms >= ", "::bigint");
    if (shape & FEED_TO)
        pg_feed_filter(&b, &n, "occurred_ms < ", "::bigint");
    (void)buf_puts(&b, " ORDER BY pos LIMIT $2) e ON TRUE");
    if (buf_failed(&b) || b.len >= PG_FEED_SQL_MAX)
        abort(); /* at start-up, a few hundred bytes: only memory exhaustion */
    memcpy(out, b.data, b.len);
    out[b.len] = '\0';
    buf_free(&b);
}

static void pg_feed_sql_init(void)
{
    for (unsigned shape = 0; shape < PG_FEED_SHAPES; shape++)
        pg_feed_sql(shape, pg_feed_sqls[shape]);
}

/* The organisations of q as a PostgreSQL array literal, each element
 * quoted ("{}" for none). */
static int pg_feed_orgs(const struct payment_event_query *q, struct buf *arr)
{
    (void)buf_puts(arr, "{");
    for (size_t i = 0; i < q->n_orgs; i++) {
        (void)buf_puts(arr, i ? ",\"" : "\"");
        const char *org = q->orgs[i];
        for (size_t j = 0; j < UUID_STR_LEN && org[j]; j++) {
            if (org[j] == '"' || org[j] == '\\')
                (void)buf_puts(arr, "\\");
            (void)buf_append(arr, &org[j], 1);
        }
        (void)buf_puts(arr, "\"");
    }
    (void)buf_puts(arr, "}");
    return buf_failed(arr) ? -1 : 0;
}

/* The shape's parameters: $1 the cursor, $2 the limit, then the filters'. */
static void pg_feed_params(struct pg_params *p, unsigned shape,
                           const struct payment_event_query *q, const struct buf *orgs)
{
    pg_params_init(p);
    pg_param_int(p, q->after_pos);
    pg_param_int(p, q->limit);
    if (shape & FEED_ORGS)
        pg_param_text(p, orgs->data);
    if (shape & FEED_TYPES)
        pg_param_int(p, q->types);
    if (shape & FEED_PAYMENT)
        pg_param_text(p, q->payment_id);
    if (shape & FEED_FROM)
        pg_param_int(p, q->from_ms);
    if (shape & FEED_TO)
        pg_param_int(p, q->to_ms);
}

/* A row of a feed page and its event's position. */
struct pg_feed_row {
    int64_t pos;
    int row;
};

static int pg_feed_row_cmp(const void *a, const void *b)
{
    const struct pg_feed_row *x = a, *y = b;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

/* The rows of a feed page in position order: *order NULL when they came
 * in it (a nested loop gives them so), else an array the caller frees.
 * The statement's page is the lowest positions (its LIMIT is under its
 * ORDER BY), but SQL does not promise the order rows come out of the join
 * in; putting them in order here instead of by an outer ORDER BY keeps the
 * server from sorting the documents with them.  0, or -1 out of memory. */
static int pg_feed_order(const PGresult *res, int rows, int **order)
{
    *order = NULL;
    int sorted = 1;
    for (int r = 1; r < rows && sorted; r++)
        sorted = pg_int(res, r, 0) > pg_int(res, r - 1, 0);
    if (sorted)
        return 0;
    struct pg_feed_row *by_pos = malloc((size_t)rows * sizeof *by_pos);
    *order = malloc((size_t)rows * sizeof **order);
    int ok = by_pos && *order;
    if (ok) {
        for (int r = 0; r < rows; r++)
            by_pos[r] = (struct pg_feed_row){pg_int(res, r, 0), r};
        qsort(by_pos, (size_t)rows, sizeof *by_pos, pg_feed_row_cmp);
        for (int r = 0; r < rows; r++)
            (*order)[r] = by_pos[r].row;
    } else {
        free(*order);
        *order = NULL;
    }
    free(by_pos);
    return ok ? 0 : -1;
}

/* The page a feed statement read: each called per event, *next_pos set. */
static int pg_feed_page(const PGresult *res, const struct payment_event_query *q,
                        payment_store_event_fn each, void *arg, int64_t *next_pos)
{
    if (PQntuples(res) < 1 || PQnfields(res) != 15)
        return PAYMENT_STORE_EINTERNAL; /* one row at least, always */
    int64_t end = pg_int(res, 0, 13), floor = pg_int(res, 0, 14);
    if (q->after_pos > 0 && q->after_pos < floor)
        return PAYMENT_STORE_EEXPIRED;
    int64_t after = q->after_pos > floor ? q->after_pos : floor;
    struct pg_event_page page = {0, 0};
    if (!PQgetisnull(res, 0, 0)) {
        int *order;
        if (pg_feed_order(res, PQntuples(res), &order) != 0)
            return PAYMENT_STORE_EINTERNAL;
        int err = pg_event_rows(res, order, q->limit, each, arg, &page, NULL);
        free(order);
        if (err != PAYMENT_STORE_OK)
            return err;
    }
    if (page.n == q->limit)
        *next_pos = page.last_pos;
    else
        *next_pos = end > after ? end : after;
    return PAYMENT_STORE_OK;
}

int pg_events(payment_store *s, const struct payment_event_query *q,
              payment_store_event_fn each, void *arg, int64_t *next_pos)
{
    struct pg_store *st = (struct pg_store *)s;
    assert(q->limit >= 1 && q->limit <= PAYMENT_EVENTS_PAGE_MAX);
    if (pthread_once(&pg_feed_once, pg_feed_sql_init) != 0)
        abort();
    unsigned shape = pg_feed_shape(q);
    struct buf orgs = BUF_INIT;
    if ((shape & FEED_ORGS) && pg_feed_orgs(q, &orgs) != 0) {
        buf_free(&orgs);
        return PAYMENT_STORE_EINTERNAL;
    }
    struct pg_params p;
    pg_feed_params(&p, shape, q, &orgs);
    PGresult *res = NULL;
    int err = pg_read(st, pg_feed_sqls[shape], &p, &res);
    if (err == PAYMENT_STORE_OK) {
        err = pg_feed_page(res, q, each, arg, next_pos);
        PQclear(res);
    }
    buf_free(&orgs);
    return err;
}
