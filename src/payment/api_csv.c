/* api_csv: GET /v1/payments as CSV, when the client's Accept prefers
 * text/csv: every page of the filtered list, not one, streamed.
 *
 * The filters, their errors and the organisations an API key may see are
 * the JSON list's (api_read.c parses them; api_list_each narrows them);
 * the paging parameters are parsed but ignored, the export being the whole
 * list.  The store is read one cursor page (CSV_PAGE_ROWS) at a time, as
 * the client takes the answer (http_respond_stream): the answer's memory is
 * one page, whatever the list's length.  The first page is read before
 * answering, so that a store error is a JSON error with its status; an
 * error on a later page cuts the chunked body short, which the client sees.
 *
 * The columns (csv_columns) are fixed and documented in the README: one
 * row per payment, a missing or null value an empty field, a number or
 * boolean its JSON text.  RFC 4180: a field holding a comma, quote, CR or
 * LF is quoted, its quotes doubled; CRLF ends each row; UTF-8, no BOM.  A
 * field starting with =, +, -, @, tab or CR gets a leading apostrophe, so
 * that a spreadsheet does not take it for a formula (CSV injection).
 *
 * Threads: the handler's (api_internal.h); the later pages on the loop
 * thread, or the blocking pool when the store may block.  The export's
 * state (struct csv_export) is used by one thread at a time. */
#include "payment/api_internal.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Rows read from the store per piece of the answer. */
#define CSV_PAGE_ROWS 200
/* The deepest column path: attributes.debtor_party.account_number. */
#define CSV_PATH_MAX 3

/* One column: its header and where its value is in the document. */
struct csv_column {
    const char *header;                  /* as the header row names it */
    const char *path[CSV_PATH_MAX + 1];  /* member names from the document, NULL-ended */
};

static const struct csv_column csv_columns[] = {
    {"id", {"id"}},
    {"organisation_id", {"organisation_id"}},
    {"version", {"version"}},
    {"created_on", {"created_on"}},
    {"modified_on", {"modified_on"}},
    {"type", {"type"}},
    {"amount", {"attributes", "amount"}},
    {"currency", {"attributes", "currency"}},
    {"payment_scheme", {"attributes", "payment_scheme"}},
    {"payment_type", {"attributes", "payment_type"}},
    {"processing_date", {"attributes", "processing_date"}},
    {"reference", {"attributes", "reference"}},
    {"end_to_end_reference", {"attributes", "end_to_end_reference"}},
    {"numeric_reference", {"attributes", "numeric_reference"}},
    {"payment_purpose", {"attributes", "payment_purpose"}},
    {"scheme_payment_type", {"attributes", "scheme_payment_type"}},
    {"scheme_payment_sub_type", {"attributes", "scheme_payment_sub_type"}},
    {"debtor_party.account_number", {"attributes", "debtor_party", "account_number"}},
    {"debtor_party.account_name", {"attributes", "debtor_party", "account_name"}},
    {"beneficiary_party.account_number", {"attributes", "beneficiary_party", "account_number"}},
    {"beneficiary_party.account_name", {"attributes", "beneficiary_party", "account_name"}},
};
#define CSV_COLUMNS (sizeof csv_columns / sizeof csv_columns[0])

/* An export in progress: freed with the answer. */
struct csv_export {
    struct payment_api *api;
    struct payment_query q; /* the filters, narrowed to the caller's organisations; owned */
    int more;               /* rows follow the last page read */
    int64_t last_seq;       /* seq of the last row written: the next page's cursor */
};

/* Where a page's rows are written. */
struct csv_page {
    struct buf *b;
    int64_t last_seq; /* seq of the last row */
};

/* csv_row's stops: positive, never taken for a store error. */
enum csv_stop {
    CSV_STOP_NO_MEMORY = 1,
    CSV_STOP_BAD_DOC = 2, /* a stored document that is not a JSON object */
};

_Static_assert(CSV_STOP_NO_MEMORY == API_LIST_STOP_NO_MEMORY, "one meaning per stop");

/* ---- Accept ----------------------------------------------------------------- */

/* How well a media range matches: 0 not at all, 1 any, 2 the family, 3 the type. */
struct csv_accept {
    int csv_rank, json_rank; /* the most specific range matching each */
    int csv_q, json_q;       /* its q, in thousandths */
};

/* A q value ("1", "0.5", "0.125"): thousandths, or -1 when malformed. */
static int accept_q(const char *s, size_t len)
{
    if (len == 0 || (s[0] != '0' && s[0] != '1') || (len > 1 && s[1] != '.') || len > 5)
        return -1;
    int q = (s[0] - '0') * 1000;
    for (size_t i = 2, scale = 100; i < len; i++, scale /= 10) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        q += (s[i] - '0') * (int)scale;
    }
    return q <= 1000 ? q : -1;
}

/* Whether range (len bytes) is name, ignoring case. */
static int range_is(const char *range, size_t len, const char *name)
{
    return len == strlen(name) && strncasecmp(range, name, len) == 0;
}

/* Takes one element of Accept ("text/csv;q=0.5"), len bytes at s. */
static void accept_element(struct csv_accept *a, const char *s, size_t len)
{
    while (len > 0 && (*s == ' ' || *s == '\t'))
        s++, len--;
    size_t rlen = 0;
    while (rlen < len && s[rlen] != ';' && s[rlen] != ' ' && s[rlen] != '\t')
        rlen++;
    int q = 1000;
    for (size_t i = rlen; i < len;) { /* parameters: only q matters */
        while (i < len && (s[i] == ';' || s[i] == ' ' || s[i] == '\t'))
            i++;
        size_t plen = 0;
        while (i + plen < len && s[i + plen] != ';')
            plen++;
        while (plen > 0 && (s[i + plen - 1] == ' ' || s[i + plen - 1] == '\t'))
            plen--;
        if (plen >= 2 && (s[i] == 'q' || s[i] == 'Q') && s[i + 1] == '=')
            q = accept_q(s + i + 2, plen - 2);
        i += plen;
    }
    if (q < 0)
        return; /* a malformed element is ignored */
    int csv = range_is(s, rlen, "text/csv")     ? 3
              : range_is(s, rlen, "text/*")     ? 2
              : range_is(s, rlen, "*/*")        ? 1
                                                : 0;
    int json = range_is(s, rlen, "application/json") ||
                       range_is(s, rlen, "application/vnd.api+json")
                   ? 3
               : range_is(s, rlen, "application/*") ? 2
               : range_is(s, rlen, "*/*")           ? 1
                                                    : 0;
    if (csv > a->csv_rank) {
        a->csv_rank = csv;
        a->csv_q = q;
    }
    if (json > a->json_rank) {
        a->json_rank = json;
        a->json_q = q;
    }
}

int api_csv_wanted(const http_request *req)
{
    const char *h = http_request_header(req, "Accept");
    if (!h)
        return 0;
    struct csv_accept a = {0, 0, 0, 0};
    for (const char *p = h;;) {
        size_t len = strcspn(p, ",");
        accept_element(&a, p, len);
        if (!p[len])
            break;
        p += len + 1;
    }
    /* q decides; on a tie, the type named over a wildcard, else JSON. */
    return a.csv_q > 0 &&
           (a.csv_q > a.json_q || (a.csv_q == a.json_q && a.csv_rank > a.json_rank));
}

/* ---- rows ------------------------------------------------------------------- */

/* Appends one field: the apostrophe before a formula's first character,
 * quotes when the text needs them. */
static void csv_field(struct buf *b, const char *s, size_t len)
{
    int formula = len > 0 && strchr("=+-@\t\r", s[0]) != NULL;
    int quoted = 0;
    for (size_t i = 0; i < len && !quoted; i++)
        quoted = s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n';
    if (quoted)
        buf_puts(b, "\"");
    if (formula)
        buf_puts(b, "'");
    if (!quoted) {
        buf_append(b, s, len);
        return;
    }
    for (const char *p = s, *end = s + len; p < end;) {
        const char *q = memchr(p, '"', (size_t)(end - p));
        size_t run = q ? (size_t)(q - p) + 1 : (size_t)(end - p);
        buf_append(b, p, run);
        if (q)
            buf_puts(b, "\""); /* the quote doubled */
        p += run;
    }
    buf_puts(b, "\"");
}

/* The value at col's path in doc, or NULL. */
static json_t *csv_value(json_t *doc, const struct csv_column *col)
{
    json_t *v = doc;
    for (size_t i = 0; col->path[i] && v; i++)
        v = json_object_get(v, col->path[i]);
    return v;
}

/* Appends v's field: a string's text, a number's or boolean's JSON text,
 * an object's or array's compact JSON, nothing for null or missing. */
static void csv_value_field(struct buf *b, json_t *v)
{
    if (!v || json_is_null(v))
        return;
    if (json_is_string(v)) {
        csv_field(b, json_string_value(v), json_string_length(v));
        return;
    }
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) {
        b->failed = 1;
        return;
    }
    csv_field(b, text, strlen(text));
    free(text);
}

static void csv_header(struct buf *b)
{
    for (size_t i = 0; i < CSV_COLUMNS; i++) {
        if (i)
            buf_puts(b, ",");
        csv_field(b, csv_columns[i].header, strlen(csv_columns[i].header));
    }
    buf_puts(b, "\r\n");
}

/* A listed payment as a row (payment_store_row_fn). */
static int csv_row(void *arg, const char *doc, size_t len, int64_t seq)
{
    struct csv_page *pg = arg;
    json_t *d = json_loadb(doc, len, 0, NULL);
    if (!json_is_object(d)) {
        json_decref(d);
        return CSV_STOP_BAD_DOC;
    }
    for (size_t i = 0; i < CSV_COLUMNS; i++) {
        if (i)
            buf_puts(pg->b, ",");
        csv_value_field(pg->b, csv_value(d, &csv_columns[i]));
    }
    buf_puts(pg->b, "\r\n");
    json_decref(d);
    pg->last_seq = seq;
    return buf_failed(pg->b) ? CSV_STOP_NO_MEMORY : 0;
}

/* ---- the export ------------------------------------------------------------- */

static void csv_export_free(void *p)
{
    struct csv_export *ex = p;
    payment_query_clear(&ex->q);
    free(ex);
}

/* Appends the next page's rows to b (p: the caller, the first page only):
 * a store error, or PAYMENT_STORE_EINTERNAL for a stop of csv_row. */
static int csv_export_page(struct csv_export *ex, const struct auth_principal *p, struct buf *b)
{
    assert(ex->more);
    struct csv_page pg = {b, ex->last_seq};
    int more = 0;
    int err = api_list_each(ex->api, &ex->q, p, csv_row, &pg, &more);
    ex->more = more;
    if (err != PAYMENT_STORE_OK) {
        ex->more = 0;
        return err > 0 ? PAYMENT_STORE_EINTERNAL : err;
    }
    ex->last_seq = pg.last_seq;
    ex->q.mode = PAYMENT_PAGE_CURSOR; /* from now on, the rows after the last */
    ex->q.after_seq = ex->last_seq;
    return PAYMENT_STORE_OK;
}

/* The answer's next piece (http_stream_fn). */
static int csv_export_next(void *state, struct buf *b)
{
    struct csv_export *ex = state;
    if (!ex->more)
        return HTTP_STREAM_END;
    int err = csv_export_page(ex, NULL, b);
    if (err != PAYMENT_STORE_OK)
        return HTTP_STREAM_FAIL; /* the client sees the body cut short */
    return ex->more ? HTTP_STREAM_MORE : HTTP_STREAM_END;
}

void api_payments_csv(http_request *req, struct payment_api *api, struct payment_query *q)
{
    struct csv_export *ex = calloc(1, sizeof *ex);
    if (!ex) {
        payment_query_clear(q);
        api_respond_internal(req);
        return;
    }
    ex->api = api;
    ex->q = *q; /* the filter values are the export's now */
    payment_query_init(q);
    ex->q.mode = PAYMENT_PAGE_FIRST; /* every page: the paging asked for is ignored */
    ex->q.page_number = 0;
    ex->q.after_seq = 0;
    ex->q.page_size = CSV_PAGE_ROWS;
    ex->more = 1;
    struct buf first = BUF_INIT;
    csv_header(&first);
    int err = csv_export_page(ex, api_principal(req), &first);
    if (err != PAYMENT_STORE_OK || buf_failed(&first)) {
        buf_free(&first);
        csv_export_free(ex);
        api_respond_store_error(req, err != PAYMENT_STORE_OK ? err : PAYMENT_STORE_EINTERNAL, -1);
        return;
    }
    http_request_add_header(req, "Content-Type", "text/csv; charset=utf-8");
    http_request_add_header(req, "Content-Disposition", "attachment; filename=\"payments.csv\"");
    http_respond_stream(req, 200, &first, api_may_block(api, 0), csv_export_next, ex,
                        csv_export_free);
}
