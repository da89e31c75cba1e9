/* query: the list endpoint's query string and its cursors.
 *
 * One table, query_params[], names every known parameter in link order and
 * says how its value is checked and where it is stored, so parsing and link
 * building cannot drift apart.
 *
 * Links keep the brackets of keys literal ("filter[currency]=EUR"): readable,
 * and every HTTP server decodes them the same.  (curl globs brackets: use
 * curl -g.)  Values are percent-encoded, everything but RFC 3986's
 * unreserved characters becoming %XX; a value never holds a comma (commas
 * split values before they are stored), so the literal commas joining the
 * values of one filter are always separators. */
#include "payment/query.h"

#include "payment/validate.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/currency.h"
#include "core/utf8.h"
#include "core/uuid.h"

#define QUERY_DAY_MS INT64_C(86400000)

/* How a parameter's value is checked and stored. */
enum query_kind {
    QUERY_SET,          /* comma-separated any-of values, each checked by set_check */
    QUERY_DATE,         /* one YYYY-MM-DD, kept as text */
    QUERY_AMOUNT,       /* one plain decimal, kept as its sort key */
    QUERY_CREATED_FROM, /* one YYYY-MM-DD, kept as the first ms of that day */
    QUERY_CREATED_TO,   /* one YYYY-MM-DD, kept as the first ms of the next day */
    QUERY_PAGE_SIZE,
    QUERY_PAGE_NUMBER,
    QUERY_PAGE_AFTER,
};

/* How each value of a QUERY_SET parameter is checked. */
enum query_check {
    QUERY_CHECK_NONE,     /* any non-empty text */
    QUERY_CHECK_UUID,     /* a UUID, stored in lower case */
    QUERY_CHECK_CURRENCY, /* a code of ISO 4217 list one */
    QUERY_CHECK_SCHEME,   /* one of query_schemes[] */
};

struct query_param {
    const char *key;         /* as the client spells it, decoded */
    enum query_kind kind;    /* how the value is parsed */
    enum query_check check;  /* QUERY_SET only */
    size_t offset;           /* of the field in struct payment_query */
};

#define QUERY_FIELD(f) offsetof(struct payment_query, f)

/* Link order: filters as the API documents them, then the page. */
static const struct query_param query_params[] = {
    {"filter[organisation_id]", QUERY_SET, QUERY_CHECK_UUID, QUERY_FIELD(organisation_id)},
    {"filter[currency]", QUERY_SET, QUERY_CHECK_CURRENCY, QUERY_FIELD(currency)},
    {"filter[payment_scheme]", QUERY_SET, QUERY_CHECK_SCHEME, QUERY_FIELD(payment_scheme)},
    {"filter[payment_type]", QUERY_SET, QUERY_CHECK_NONE, QUERY_FIELD(payment_type)},
    {"filter[reference]", QUERY_SET, QUERY_CHECK_NONE, QUERY_FIELD(reference)},
    {"filter[end_to_end_reference]", QUERY_SET, QUERY_CHECK_NONE,
     QUERY_FIELD(end_to_end_reference)},
    {"filter[processing_date_from]", QUERY_DATE, QUERY_CHECK_NONE,
     QUERY_FIELD(processing_date_from)},
    {"filter[processing_date_to]", QUERY_DATE, QUERY_CHECK_NONE, QUERY_FIELD(processing_date_to)},
    {"filter[amount][from]", QUERY_AMOUNT, QUERY_CHECK_NONE, QUERY_FIELD(amount_from)},
    {"filter[amount][to]", QUERY_AMOUNT, QUERY_CHECK_NONE, QUERY_FIELD(amount_to)},
    {"filter[created_date_from]", QUERY_CREATED_FROM, QUERY_CHECK_NONE,
     QUERY_FIELD(created_from_ms)},
    {"filter[created_date_to]", QUERY_CREATED_TO, QUERY_CHECK_NONE, QUERY_FIELD(created_to_ms)},
    {"page[size]", QUERY_PAGE_SIZE, QUERY_CHECK_NONE, QUERY_FIELD(page_size)},
    {"page[number]", QUERY_PAGE_NUMBER, QUERY_CHECK_NONE, QUERY_FIELD(page_number)},
    {"page[after]", QUERY_PAGE_AFTER, QUERY_CHECK_NONE, QUERY_FIELD(after_seq)},
};

#define QUERY_NPARAMS (sizeof query_params / sizeof query_params[0])

/* The bit of query_params[i] in payment_query.seen. */
#define QUERY_BIT(i) (UINT32_C(1) << (i))

_Static_assert(QUERY_NPARAMS <= 32, "payment_query.seen has one bit per parameter");


static const char query_cursor_hint[] =
    "use cursor paging: page[after] with the cursor of the next link";

/* ---- values ---- */

static void query_set_free(struct payment_query_set *set)
{
    for (size_t i = 0; i < set->count; i++) {
        free(set->values[i]);
        set->values[i] = NULL;
    }
    set->count = 0;
}


/* Checks one value of a set filter (len bytes of s) and returns a heap copy
 * in its stored form, or NULL with a message. */
static char *query_set_value(const struct query_param *p, const char *s, size_t len, char *msg,
                             size_t msglen)
{
    char uuid[UUID_STR_LEN + 1];
    const char *what = NULL;

    switch (p->check) {
    case QUERY_CHECK_UUID:
        if (uuid_canonical(s, len, uuid) != 0)
            what = "is not a UUID";
        else
            s = uuid;
        break;
    case QUERY_CHECK_CURRENCY:
        if (currency_minor_unit(s, len) == CURRENCY_UNKNOWN)
            what = "is not an ISO 4217 currency code";
        break;
    case QUERY_CHECK_SCHEME:
        if (!payment_scheme_known(s, len))
            what = "is not a payment scheme";
        break;
    case QUERY_CHECK_NONE:
        break;
    }
    if (what) {
        snprintf(msg, msglen, "%s: '%.*s' %s", p->key, (int)len, s, what);
        return NULL;
    }
    char *copy = strndup(s, len);
    if (!copy)
        snprintf(msg, msglen, "%s: out of memory", p->key);
    return copy;
}

/* Splits value on commas into set.  On failure the set is left empty, so a
 * failed add leaves nothing half-stored. */
static int query_add_set(const struct query_param *p, struct payment_query_set *set,
                         const char *value, char *msg, size_t msglen)
{
    const char *s = value;
    for (;;) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        if (len == 0) {
            snprintf(msg, msglen, "%s: empty value", p->key);
            goto fail;
        }
        if (set->count == PAYMENT_QUERY_MAX_VALUES) {
            snprintf(msg, msglen, "%s: more than %d values", p->key, PAYMENT_QUERY_MAX_VALUES);
            goto fail;
        }
        char *v = query_set_value(p, s, len, msg, msglen);
        if (!v)
            goto fail;
        set->values[set->count++] = v;
        if (!comma)
            return 0;
        s = comma + 1;
    }
fail:
    query_set_free(set);
    return -1;
}

/* Digits only (no sign, no space), at most max.  Stops as soon as the value
 * exceeds max, so it never overflows. */
static int query_parse_uint(const char *s, uint32_t max, uint32_t *out)
{
    uint64_t n = 0;
    if (*s == '\0')
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        n = n * 10 + (uint64_t)(*s - '0');
        if (n > max)
            return -1;
    }
    *out = (uint32_t)n;
    return 0;
}

/* One value of a range or page parameter into its field of q. */
static int query_add_single(struct payment_query *q, const struct query_param *p,
                            const char *value, char *msg, size_t msglen)
{
    void *field = (char *)q + p->offset;
    size_t len = strlen(value);
    int y, m, d;

    if (strchr(value, ',') && p->kind != QUERY_PAGE_AFTER) {
        snprintf(msg, msglen, "%s takes one value, not a list", p->key);
        return -1;
    }
    switch (p->kind) {
    case QUERY_DATE:
    case QUERY_CREATED_FROM:
    case QUERY_CREATED_TO:
        if (clock_parse_date(value, len, &y, &m, &d) != 0) {
            snprintf(msg, msglen, "%s: '%s' is not a date (YYYY-MM-DD)", p->key, value);
            return -1;
        }
        if (p->kind == QUERY_DATE)
            memcpy(field, value, CLOCK_DATE_LEN + 1);
        else if (p->kind == QUERY_CREATED_FROM)
            *(int64_t *)field = clock_date_to_ms(y, m, d);
        else
            *(int64_t *)field = clock_date_to_ms(y, m, d) + QUERY_DAY_MS;
        return 0;
    case QUERY_AMOUNT: {
        struct decimal dec;
        /* decimal_parse() takes at most DECIMAL_MAX_LEN bytes. */
        if (len > DECIMAL_MAX_LEN || decimal_parse(value, len, &dec) != 0) {
            snprintf(msg, msglen,
                     "%s: '%s' is not a non-negative decimal in plain notation (such as 10.50)",
                     p->key, value);
            return -1;
        }
        decimal_sort_key(&dec, field);
        return 0;
    }
    case QUERY_PAGE_SIZE: {
        uint32_t size;
        if (query_parse_uint(value, PAYMENT_PAGE_SIZE_MAX, &size) != 0 || size == 0) {
            snprintf(msg, msglen, "%s must be an integer from 1 to %d", p->key,
                     PAYMENT_PAGE_SIZE_MAX);
            return -1;
        }
        q->page_size = size;
        return 0;
    }
    case QUERY_PAGE_NUMBER:
        if (query_parse_uint(value, UINT32_MAX, &q->page_number) != 0) {
            if (strspn(value, "0123456789") == len)
                snprintf(msg, msglen, "%s is too large; %s", p->key, query_cursor_hint);
            else
                snprintf(msg, msglen, "%s must be a non-negative integer", p->key);
            return -1;
        }
        return 0;
    case QUERY_PAGE_AFTER:
        if (payment_cursor_decode(value, &q->after_seq) != 0) {
            snprintf(msg, msglen, "%s is not a cursor of this server", p->key);
            return -1;
        }
        return 0;
    case QUERY_SET:
        break;
    }
    snprintf(msg, msglen, "%s: internal error", p->key);
    return -1;
}

/* ---- parsing ---- */

void payment_query_init(struct payment_query *q)
{
    memset(q, 0, sizeof *q);
    q->created_from_ms = INT64_MIN;
    q->created_to_ms = INT64_MAX;
    q->page_size = PAYMENT_PAGE_SIZE_DEFAULT;
    q->mode = PAYMENT_PAGE_FIRST;
}

void payment_query_clear(struct payment_query *q)
{
    for (size_t i = 0; i < QUERY_NPARAMS; i++)
        if (query_params[i].kind == QUERY_SET)
            query_set_free((struct payment_query_set *)((char *)q + query_params[i].offset));
}

int payment_query_add(struct payment_query *q, const char *key, const char *value, char *msg,
                      size_t msglen)
{
    size_t i;
    for (i = 0; i < QUERY_NPARAMS; i++)
        if (strcmp(query_params[i].key, key) == 0)
            break;
    if (i == QUERY_NPARAMS) {
        snprintf(msg, msglen, "unknown query parameter '%s'", key);
        return -1;
    }
    const struct query_param *p = &query_params[i];
    if (q->seen & QUERY_BIT(i)) {
        snprintf(msg, msglen, "query parameter %s is given more than once", p->key);
        return -1;
    }
    /* A key without "=" arrives with no value at all. */
    if (value == NULL || value[0] == '\0') {
        snprintf(msg, msglen, "%s: empty value", p->key);
        return -1;
    }
    /* Stores compare text as UTF-8 (MongoDB refuses anything else). */
    if (!utf8_valid(value, strlen(value))) {
        snprintf(msg, msglen, "%s: the value is not valid UTF-8", p->key);
        return -1;
    }
    int rc = p->kind == QUERY_SET
                 ? query_add_set(p, (struct payment_query_set *)((char *)q + p->offset), value,
                                 msg, msglen)
                 : query_add_single(q, p, value, msg, msglen);
    if (rc == 0)
        q->seen |= QUERY_BIT(i);
    return rc;
}

/* The seen bit of the parameter whose kind is k (unique for page kinds). */
static uint32_t query_seen_kind(const struct payment_query *q, enum query_kind k)
{
    for (size_t i = 0; i < QUERY_NPARAMS; i++)
        if (query_params[i].kind == k)
            return q->seen & QUERY_BIT(i);
    return 0;
}

int payment_query_finish(struct payment_query *q, char *msg, size_t msglen)
{
    int number = query_seen_kind(q, QUERY_PAGE_NUMBER) != 0;
    int after = query_seen_kind(q, QUERY_PAGE_AFTER) != 0;

    if (number && after) {
        snprintf(msg, msglen, "page[after] and page[number] cannot be used together");
        return -1;
    }
    q->mode = after ? PAYMENT_PAGE_CURSOR : number ? PAYMENT_PAGE_OFFSET : PAYMENT_PAGE_FIRST;
    if (number && (uint64_t)q->page_number * q->page_size >= PAYMENT_OFFSET_LIMIT) {
        snprintf(msg, msglen, "page[number] * page[size] must stay below %d; %s",
                 PAYMENT_OFFSET_LIMIT, query_cursor_hint);
        return -1;
    }
    if (q->processing_date_from[0] && q->processing_date_to[0] &&
        strcmp(q->processing_date_from, q->processing_date_to) > 0) {
        snprintf(msg, msglen,
                 "filter[processing_date_from] is after filter[processing_date_to]");
        return -1;
    }
    if (q->amount_from[0] && q->amount_to[0] && strcmp(q->amount_from, q->amount_to) > 0) {
        snprintf(msg, msglen, "filter[amount][from] is above filter[amount][to]");
        return -1;
    }
    /* to is exclusive: from-day <= to-day exactly when from < to. */
    if (q->created_from_ms != INT64_MIN && q->created_to_ms != INT64_MAX &&
        q->created_from_ms >= q->created_to_ms) {
        snprintf(msg, msglen, "filter[created_date_from] is after filter[created_date_to]");
        return -1;
    }
    return 0;
}

/* ---- links ---- */

/* Appends s percent-encoded: RFC 3986 unreserved characters stay, every
 * other byte becomes %XX. */
static void query_put_encoded(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            buf_append(b, s, 1);
        } else {
            char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
            buf_append(b, esc, 3);
        }
    }
}

/* The shortest plain decimal of a decimal_sort_key(): integer digits without
 * leading zeros, fraction without trailing zeros ("12.5", "0"). */
static void query_amount_text(const char *key, char out[DECIMAL_KEY_LEN + 2])
{
    size_t i = 0, n = 0, frac_end = DECIMAL_KEY_LEN;
    while (i < DECIMAL_MAX_LEN - 1 && key[i] == '0')
        i++;
    while (i < DECIMAL_MAX_LEN)
        out[n++] = key[i++];
    while (frac_end > DECIMAL_MAX_LEN && key[frac_end - 1] == '0')
        frac_end--;
    if (frac_end > DECIMAL_MAX_LEN) {
        out[n++] = '.';
        while (i < frac_end)
            out[n++] = key[i++];
    }
    out[n] = '\0';
}

/* The YYYY-MM-DD of the UTC day holding ms. */
static void query_date_text(int64_t ms, char out[CLOCK_TIMESTAMP_LEN + 1])
{
    clock_format_ms(ms, out);
    out[CLOCK_DATE_LEN] = '\0';
}

/* Appends "?" before the first parameter, "&" before the others. */
static void query_put_key(struct buf *b, const char *key, int *first)
{
    buf_puts(b, *first ? "?" : "&");
    *first = 0;
    buf_puts(b, key);
    buf_puts(b, "=");
}

int payment_query_link(const struct payment_query *q, enum payment_page_mode mode,
                       uint32_t number, int64_t after_seq, struct buf *b)
{
    char text[CLOCK_TIMESTAMP_LEN + DECIMAL_KEY_LEN + 2];
    size_t start = b->len;
    int first = 1;

    for (size_t i = 0; i < QUERY_NPARAMS; i++) {
        const struct query_param *p = &query_params[i];
        const void *field = (const char *)q + p->offset;
        switch (p->kind) {
        case QUERY_SET: {
            const struct payment_query_set *set = field;
            if (set->count == 0)
                break;
            query_put_key(b, p->key, &first);
            for (size_t j = 0; j < set->count; j++) {
                if (j)
                    buf_puts(b, ",");
                query_put_encoded(b, set->values[j]);
            }
            break;
        }
        case QUERY_DATE:
            if (((const char *)field)[0]) {
                query_put_key(b, p->key, &first);
                query_put_encoded(b, field);
            }
            break;
        case QUERY_AMOUNT:
            if (((const char *)field)[0]) {
                query_amount_text(field, text);
                query_put_key(b, p->key, &first);
                query_put_encoded(b, text);
            }
            break;
        case QUERY_CREATED_FROM:
            if (q->created_from_ms != INT64_MIN) {
                query_date_text(q->created_from_ms, text);
                query_put_key(b, p->key, &first);
                query_put_encoded(b, text);
            }
            break;
        case QUERY_CREATED_TO:
            if (q->created_to_ms != INT64_MAX) {
                query_date_text(q->created_to_ms - QUERY_DAY_MS, text);
                query_put_key(b, p->key, &first);
                query_put_encoded(b, text);
            }
            break;
        case QUERY_PAGE_SIZE:
            query_put_key(b, p->key, &first);
            buf_printf(b, "%" PRIu32, q->page_size);
            break;
        case QUERY_PAGE_NUMBER:
            if (mode == PAYMENT_PAGE_OFFSET) {
                query_put_key(b, p->key, &first);
                buf_printf(b, "%" PRIu32, number);
            }
            break;
        case QUERY_PAGE_AFTER:
            if (mode == PAYMENT_PAGE_CURSOR) {
                payment_cursor_encode(after_seq, text);
                query_put_key(b, p->key, &first);
                buf_puts(b, text);
            }
            break;
        }
    }
    if (buf_failed(b)) {
        /* Leave b as it was before the call: appends are all-or-nothing. */
        if (b->data && start <= b->len) {
            b->len = start;
            b->data[start] = '\0';
        }
        return -1;
    }
    return 0;
}

/* ---- cursors ----
 *
 * A cursor is 15 bytes in base64url (exactly 20 characters, no padding):
 * a version byte, the seq as 8 bytes big-endian, and 6 bytes of a keyed
 * hash of the first 9.  The check catches random and edited strings (one
 * in 2^48 passes by chance); it does not make cursors secret or unforgeable,
 * which they need not be: a forged cursor only skips rows the client may
 * list anyway. */

#define CURSOR_VERSION 1
#define CURSOR_PAYLOAD 9                      /* version + seq */
#define CURSOR_CHECK 6                        /* bytes of check */
#define CURSOR_BYTES (CURSOR_PAYLOAD + CURSOR_CHECK)
#define CURSOR_CHARS (CURSOR_BYTES / 3 * 4)   /* 15 bytes: 20 characters, no padding */

_Static_assert(CURSOR_BYTES % 3 == 0, "every cursor character carries 6 whole bits");
_Static_assert(CURSOR_CHARS <= PAYMENT_CURSOR_MAX_LEN, "cursor fits the contract");

static const char cursor_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* FNV-1a from a fixed basis, finished with MurmurHash3's fmix64 so that
 * every input bit reaches every checked bit. */
static uint64_t cursor_hash(const uint8_t *p, size_t n)
{
    uint64_t h = UINT64_C(0x7061796d656e7464); /* "paymentd" */
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    return h;
}

static void cursor_seal(uint8_t bytes[CURSOR_BYTES])
{
    uint64_t h = cursor_hash(bytes, CURSOR_PAYLOAD);
    for (int i = 0; i < CURSOR_CHECK; i++)
        bytes[CURSOR_PAYLOAD + i] = (uint8_t)(h >> (56 - 8 * i));
}

static int cursor_sextet(char c)
{
    const char *p = c ? strchr(cursor_alphabet, c) : NULL;
    return p ? (int)(p - cursor_alphabet) : -1;
}

/* A negative seq comes from no store; it encodes as "", which decode
 * rejects, rather than as a cursor that would restart the listing. */
void payment_cursor_encode(int64_t seq, char out[PAYMENT_CURSOR_MAX_LEN + 1])
{
    uint8_t bytes[CURSOR_BYTES];
    if (seq < 0) {
        out[0] = '\0';
        return;
    }
    bytes[0] = CURSOR_VERSION;
    for (int i = 0; i < 8; i++)
        bytes[1 + i] = (uint8_t)((uint64_t)seq >> (56 - 8 * i));
    cursor_seal(bytes);
    for (int i = 0, o = 0; i < CURSOR_BYTES; i += 3) {
        uint32_t v = (uint32_t)bytes[i] << 16 | (uint32_t)bytes[i + 1] << 8 | bytes[i + 2];
        out[o++] = cursor_alphabet[v >> 18];
        out[o++] = cursor_alphabet[(v >> 12) & 63];
        out[o++] = cursor_alphabet[(v >> 6) & 63];
        out[o++] = cursor_alphabet[v & 63];
    }
    out[CURSOR_CHARS] = '\0';
}

int payment_cursor_decode(const char *s, int64_t *seq)
{
    uint8_t bytes[CURSOR_BYTES], want[CURSOR_BYTES];
    if (strnlen(s, CURSOR_CHARS + 1) != CURSOR_CHARS)
        return -1;
    for (int i = 0, o = 0; i < CURSOR_CHARS; i += 4) {
        uint32_t v = 0;
        for (int k = 0; k < 4; k++) {
            int x = cursor_sextet(s[i + k]);
            if (x < 0)
                return -1;
            v = v << 6 | (uint32_t)x;
        }
        bytes[o++] = (uint8_t)(v >> 16);
        bytes[o++] = (uint8_t)(v >> 8);
        bytes[o++] = (uint8_t)v;
    }
    if (bytes[0] != CURSOR_VERSION || bytes[1] & 0x80) /* version, then sign of seq */
        return -1;
    memcpy(want, bytes, CURSOR_PAYLOAD);
    cursor_seal(want);
    if (memcmp(want, bytes, CURSOR_BYTES) != 0)
        return -1;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | bytes[1 + i];
    *seq = (int64_t)v;
    return 0;
}
