/* fuzz_query: a list request's query string through payment_query_init(),
 * _add(), _finish(), _link() and _clear().
 *
 * The input is the raw query string (without "?"), taken apart as the HTTP
 * layer does it: parameters split on "&", key and value on the first "=",
 * "+" read as a space, then %XX decoded ("%00" stays encoded); a key without
 * "=" has no value.  Parsing stops at the first refused parameter, as the
 * list handler answers 400 there.
 *
 * Properties checked, beyond "no crash, leak or UB":
 *  - every refusal carries a message, which the error response's JSON
 *    escaping turns into a valid JSON string (fuzz.h);
 *  - utf8_valid(), which decides whether a value is refused, agrees with
 *    jansson's UTF-8 check on every decoded value;
 *  - for an accepted query, each link the handler can build from it (self,
 *    first, next by offset, next by cursor) parses again, into the same
 *    filters, page size and page, and builds the very same link again. */
#include "fuzz.h"
#include "payment/query.h"

#define QUERY_MSG_LEN 256

static int query_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decodes s in place: "+" is a space, %XX its byte except %00. */
static void query_unescape(char *s)
{
    char *w = s;
    for (const char *r = s; *r;) {
        int hi, lo;
        if (r[0] == '%' && (hi = query_hex(r[1])) >= 0 && (lo = query_hex(r[2])) >= 0 &&
            (hi | lo) != 0) {
            *w++ = (char)(hi * 16 + lo);
            r += 3;
        } else {
            *w++ = *r == '+' ? ' ' : *r;
            r++;
        }
    }
    *w = '\0';
}

/* Parses the query string qs (changed in place) into q, initialised here;
 * the caller clears q either way.  Returns 0, or -1 with a message. */
static int query_parse(struct payment_query *q, char *qs, char *msg)
{
    payment_query_init(q);
    msg[0] = '\0';
    if (*qs) {
        char *save = NULL;
        /* Empty pieces ("a=1&&b=2") are skipped: they name no parameter. */
        for (char *param = strtok_r(qs, "&", &save); param; param = strtok_r(NULL, "&", &save)) {
            char *value = strchr(param, '=');
            if (value) {
                *value++ = '\0';
                query_unescape(value);
            }
            query_unescape(param);
            if (value)
                fuzz_check_utf8(value, strlen(value));
            if (payment_query_add(q, param, value, msg, QUERY_MSG_LEN) != 0) {
                FUZZ_CHECK(msg[0] != '\0');
                fuzz_check_error_message(msg);
                return -1;
            }
        }
    }
    if (payment_query_finish(q, msg, QUERY_MSG_LEN) != 0) {
        FUZZ_CHECK(msg[0] != '\0');
        fuzz_check_error_message(msg);
        return -1;
    }
    return 0;
}

/* The link's query string (malloc'd, the caller frees it). */
static char *query_link(const struct payment_query *q, enum payment_page_mode mode,
                        uint32_t number, int64_t after)
{
    struct buf b = BUF_INIT;
    FUZZ_CHECK(payment_query_link(q, mode, number, after, &b) == 0);
    size_t len = 0;
    char *s = buf_steal(&b, &len);
    FUZZ_CHECK(s != NULL && len == strlen(s)); /* page[size] is always there */
    buf_free(&b);
    return s;
}

static int query_same_set(const struct payment_query_set *a, const struct payment_query_set *b)
{
    if (a->count != b->count)
        return 0;
    for (size_t i = 0; i < a->count; i++)
        if (strcmp(a->values[i], b->values[i]) != 0)
            return 0;
    return 1;
}

/* Whether a and b select the same rows and page size. */
static int query_same_filters(const struct payment_query *a, const struct payment_query *b)
{
    return query_same_set(&a->organisation_id, &b->organisation_id) &&
           query_same_set(&a->currency, &b->currency) &&
           query_same_set(&a->payment_scheme, &b->payment_scheme) &&
           query_same_set(&a->payment_type, &b->payment_type) &&
           query_same_set(&a->reference, &b->reference) &&
           query_same_set(&a->end_to_end_reference, &b->end_to_end_reference) &&
           strcmp(a->processing_date_from, b->processing_date_from) == 0 &&
           strcmp(a->processing_date_to, b->processing_date_to) == 0 &&
           strcmp(a->amount_from, b->amount_from) == 0 &&
           strcmp(a->amount_to, b->amount_to) == 0 &&
           a->created_from_ms == b->created_from_ms && a->created_to_ms == b->created_to_ms &&
           a->page_size == b->page_size;
}

/* One link of q: it parses into the same query and page, and that query
 * builds the same link. */
static void query_check_link(const struct payment_query *q, enum payment_page_mode mode,
                             uint32_t number, int64_t after)
{
    char *link = query_link(q, mode, number, after);
    FUZZ_CHECK(link[0] == '?');
    char *again = strdup(link + 1);
    FUZZ_CHECK(again != NULL);

    struct payment_query q2;
    char msg[QUERY_MSG_LEN];
    int rc = query_parse(&q2, again, msg);
    if (rc != 0)
        fprintf(stderr, "link %s refused: %s\n", link, msg);
    FUZZ_CHECK(rc == 0);
    FUZZ_CHECK(q2.mode == mode);
    FUZZ_CHECK(mode != PAYMENT_PAGE_OFFSET || q2.page_number == number);
    FUZZ_CHECK(mode != PAYMENT_PAGE_CURSOR || q2.after_seq == after);
    FUZZ_CHECK(query_same_filters(q, &q2));

    char *link2 = query_link(&q2, mode, number, after);
    if (strcmp(link, link2) != 0)
        fprintf(stderr, "link %s\nparses and builds %s\n", link, link2);
    FUZZ_CHECK(strcmp(link, link2) == 0);

    free(link2);
    payment_query_clear(&q2);
    free(again);
    free(link);
}

/* A store sequence number drawn from the input, never negative. */
static int64_t query_seq_of(const uint8_t *data, size_t size)
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * UINT64_C(1099511628211);
    return (int64_t)(h >> (h & 1 ? 1 : 40)); /* both huge and small numbers */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *qs = fuzz_strndup(data, size);
    struct payment_query q;
    char msg[QUERY_MSG_LEN];

    if (query_parse(&q, qs, msg) == 0) {
        /* The links the list handler builds: self, first and next. */
        query_check_link(&q, q.mode, q.page_number, q.after_seq);
        query_check_link(&q, PAYMENT_PAGE_FIRST, 0, 0);
        if (q.mode == PAYMENT_PAGE_OFFSET &&
            ((uint64_t)q.page_number + 1) * q.page_size < PAYMENT_OFFSET_LIMIT)
            query_check_link(&q, PAYMENT_PAGE_OFFSET, q.page_number + 1, 0);
        query_check_link(&q, PAYMENT_PAGE_CURSOR, 0, query_seq_of(data, size));
        query_check_link(&q, PAYMENT_PAGE_CURSOR, 0, INT64_MAX);
    }
    payment_query_clear(&q);
    free(qs);
    return 0;
}
