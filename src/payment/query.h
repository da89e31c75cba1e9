/* query: the list endpoint's query string (filters and paging) and the
 * opaque cursors of cursor paging.
 *
 * A query is parsed one decoded parameter at a time, in the order the client
 * sent them, then finished.  Every failure is a client error with a message
 * fit for the error response.  The parsed query is what the stores filter on
 * and what the handler rebuilds links from. */
#ifndef PAYMENT_QUERY_H
#define PAYMENT_QUERY_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/decimal.h"

#define PAYMENT_QUERY_MAX_VALUES 100   /* values of one comma-separated filter */
#define PAYMENT_PAGE_SIZE_DEFAULT 100
#define PAYMENT_PAGE_SIZE_MAX 1000
#define PAYMENT_OFFSET_LIMIT 10000     /* page[number] * page[size] must stay below */
#define PAYMENT_CURSOR_MAX_LEN 64

/* One any-of filter: the row matches when its column equals one value. */
struct payment_query_set {
    size_t count;                          /* 0: filter not given */
    char *values[PAYMENT_QUERY_MAX_VALUES]; /* owned, NUL-terminated */
};

enum payment_page_mode {
    PAYMENT_PAGE_FIRST,  /* neither page[number] nor page[after] */
    PAYMENT_PAGE_OFFSET, /* page[number] given */
    PAYMENT_PAGE_CURSOR, /* page[after] given */
};

struct payment_query {
    struct payment_query_set organisation_id;      /* lower-case UUIDs */
    struct payment_query_set currency;             /* ISO 4217 codes */
    struct payment_query_set payment_scheme;       /* FPS, BACS, ... */
    struct payment_query_set payment_type;         /* any text */
    struct payment_query_set reference;            /* exact match */
    struct payment_query_set end_to_end_reference; /* exact match */
    char processing_date_from[CLOCK_DATE_LEN + 1]; /* "YYYY-MM-DD", "" unset; inclusive */
    char processing_date_to[CLOCK_DATE_LEN + 1];   /* "" unset; inclusive */
    char amount_from[DECIMAL_KEY_LEN + 1];         /* decimal_sort_key(), "" unset; inclusive */
    char amount_to[DECIMAL_KEY_LEN + 1];           /* "" unset; inclusive */
    int64_t created_from_ms;  /* first ms of the from-day, INT64_MIN unset */
    int64_t created_to_ms;    /* first ms AFTER the to-day (exclusive), INT64_MAX unset */
    uint32_t page_size;       /* 1..PAYMENT_PAGE_SIZE_MAX */
    enum payment_page_mode mode;
    uint32_t page_number;     /* PAYMENT_PAGE_OFFSET only */
    int64_t after_seq;        /* PAYMENT_PAGE_CURSOR only: rows with seq > after_seq */
    uint32_t seen;            /* private: which parameters were given */
};

/* Sets every filter unset and the page to the first, default size. */
void payment_query_init(struct payment_query *q);

/* Frees the filter values; the query may be initialised again. */
void payment_query_clear(struct payment_query *q);

/* Takes one decoded parameter.  Returns 0, or -1 with a message in msg:
 * unknown parameter, a repeated one, a malformed value (bad UUID, unknown
 * currency or scheme, negative or malformed amount, bad date, page[size]
 * outside 1..1000, bad cursor), or more than PAYMENT_QUERY_MAX_VALUES. */
int payment_query_add(struct payment_query *q, const char *key, const char *value, char *msg,
                      size_t msglen);

/* Checks the combination: page[after] with page[number], offset beyond
 * PAYMENT_OFFSET_LIMIT (the message points to cursor paging), a from bound
 * above its to bound.  Returns 0, or -1 with a message. */
int payment_query_finish(struct payment_query *q, char *msg, size_t msglen);

/* Appends the query string of a link to b ("" or "?..."), keys in a fixed
 * order, values percent-encoded: the filters and page[size] of q, then
 *   PAYMENT_PAGE_FIRST:  nothing more (the first page);
 *   PAYMENT_PAGE_OFFSET: page[number]=number;
 *   PAYMENT_PAGE_CURSOR: page[after]=<cursor of after_seq>.
 * Returns 0, or -1 out of memory. */
int payment_query_link(const struct payment_query *q, enum payment_page_mode mode,
                       uint32_t number, int64_t after_seq, struct buf *b);

/* Cursors are opaque to clients: a checked encoding of a store sequence
 * number.  encode writes a NUL-terminated token of URL-safe characters;
 * decode returns 0, or -1 for anything encode did not produce. */
void payment_cursor_encode(int64_t seq, char out[PAYMENT_CURSOR_MAX_LEN + 1]);
int payment_cursor_decode(const char *s, int64_t *seq);

#endif
