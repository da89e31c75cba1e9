/* fastbody: the stored document and the row of a body payment_fastbody_read
 * accepted (fastbody_check.c), written straight from the tape.
 *
 * The document is what payment_doc_new() builds and json_dumps(JSON_COMPACT)
 * writes, member for member in its order:
 *   {"type","id","version","organisation_id","created_on","modified_on",
 *    "attributes" (nulls stripped at any depth),"relationships" (when given)}
 * and the row is what payment_doc_row() fills from it.  A compact dump of a
 * value is never longer than its text in the body (whitespace goes, an
 * escape comes out no longer than it went in), so the text is sized once
 * up front: one allocation per call, the text the caller takes.  The row's
 * strings are decoded into fb->scratch, which keeps its memory between
 * bodies.
 *
 * Ownership: *text is the caller's; the row's strings point into *text and
 * fb->scratch, which payment_fastbody_string() also appends to: call it
 * before payment_fastbody_doc(), not while the row is in use. */
#include "payment/fastbody.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "payment/doc.h"
#include "core/uuid.h"

/* The envelope's text around its values, in the document's order. */
#define DOC_TYPE "{\"type\":"
#define DOC_ID ",\"id\":"
#define DOC_VERSION ",\"version\":"
#define DOC_ORG ",\"organisation_id\":"
#define DOC_CREATED ",\"created_on\":"
#define DOC_MODIFIED ",\"modified_on\":"
#define DOC_ATTRIBUTES ",\"attributes\":"
#define DOC_RELATIONSHIPS ",\"relationships\":"
#define DOC_END "}"

/* Longest text of an int64_t: a sign and 19 digits. */
#define DOC_INTEGER_MAX 20

/* Most bytes a string of len bytes takes quoted: every byte escaped as
 * \u00XX at worst. */
static size_t doc_quoted_max(size_t len)
{
    return 6 * len + 2;
}

/* The most bytes the document of fb and base can take. */
static size_t doc_max(const struct payment_fastbody *fb, const struct payment_fastbody_base *base)
{
    const struct jtape_token *tokens = fb->tape.tokens;
    size_t n = sizeof DOC_TYPE DOC_ID DOC_VERSION DOC_ORG DOC_CREATED DOC_MODIFIED DOC_ATTRIBUTES
                   DOC_RELATIONSHIPS DOC_END;
    n += fb->type && tokens[fb->type].len ? tokens[fb->type].len + 2
                                          : doc_quoted_max(strlen(base->fallback_type));
    n += doc_quoted_max(strlen(base->id)) + DOC_INTEGER_MAX;
    n += doc_quoted_max(strlen(base->organisation_id)) + doc_quoted_max(strlen(base->created_on));
    n += CLOCK_TIMESTAMP_LEN + 2 + tokens[fb->attributes].len;
    if (fb->relationships)
        n += tokens[fb->relationships].len;
    return n;
}

static int doc_string(struct buf *out, const char *s)
{
    return jtape_dump_string(out, s, strlen(s));
}

/* The document's text into out, reserved beforehand. */
static int doc_write(const struct payment_fastbody *fb, const struct payment_fastbody_base *base,
                     struct buf *out)
{
    const struct jtape *t = &fb->tape;
    char modified_on[CLOCK_TIMESTAMP_LEN + 1], version[DOC_INTEGER_MAX + 2];
    clock_format_ms(base->modified_ms, modified_on);
    int n = snprintf(version, sizeof version, "%lld", (long long)base->version);
    assert(n > 0 && (size_t)n < sizeof version);

    int rc = buf_append(out, DOC_TYPE, sizeof DOC_TYPE - 1);
    /* A non-empty string's raw text is never empty, nor its decoded value
     * (jtape reads no \u0000): the type is the body's when it names one. */
    if (fb->type && t->tokens[fb->type].len)
        rc |= jtape_dump(t, fb->type, 0, out);
    else
        rc |= doc_string(out, base->fallback_type);
    rc |= buf_append(out, DOC_ID, sizeof DOC_ID - 1);
    rc |= doc_string(out, base->id);
    rc |= buf_append(out, DOC_VERSION, sizeof DOC_VERSION - 1);
    rc |= buf_append(out, version, (size_t)n);
    rc |= buf_append(out, DOC_ORG, sizeof DOC_ORG - 1);
    rc |= doc_string(out, base->organisation_id);
    rc |= buf_append(out, DOC_CREATED, sizeof DOC_CREATED - 1);
    rc |= doc_string(out, base->created_on);
    rc |= buf_append(out, DOC_MODIFIED, sizeof DOC_MODIFIED - 1);
    rc |= doc_string(out, modified_on);
    rc |= buf_append(out, DOC_ATTRIBUTES, sizeof DOC_ATTRIBUTES - 1);
    rc |= jtape_dump(t, fb->attributes, JTAPE_DUMP_STRIP_NULLS, out);
    if (fb->relationships) {
        rc |= buf_append(out, DOC_RELATIONSHIPS, sizeof DOC_RELATIONSHIPS - 1);
        rc |= jtape_dump(t, fb->relationships, 0, out);
    }
    rc |= buf_append(out, DOC_END, sizeof DOC_END - 1);
    return rc != 0 || buf_failed(out) ? -1 : 0;
}

/* ---- the row ---- */

/* The attributes payment_doc_row reads, in the order fb->scratch holds
 * them. */
enum doc_column {
    DOC_CURRENCY,
    DOC_SCHEME,
    DOC_PAYMENT_TYPE,
    DOC_REFERENCE,
    DOC_E2E_REFERENCE,
    DOC_PROCESSING_DATE,
    DOC_AMOUNT,
    DOC_COLUMNS,
};

static const char *const doc_column_names[DOC_COLUMNS] = {
    [DOC_CURRENCY] = "currency",
    [DOC_SCHEME] = "payment_scheme",
    [DOC_PAYMENT_TYPE] = "payment_type",
    [DOC_REFERENCE] = "reference",
    [DOC_E2E_REFERENCE] = "end_to_end_reference",
    [DOC_PROCESSING_DATE] = "processing_date",
    [DOC_AMOUNT] = "amount",
};

/* Where a column's decoded value sits in fb->scratch. */
struct doc_value {
    int present; /* a string attribute (json_string_value would not be NULL) */
    size_t at;   /* offset in scratch of its NUL-terminated value */
    size_t len;  /* bytes, without the NUL */
};

/* Appends the decoded string attribute name of the attributes to scratch,
 * NUL included; absent, null or not a string leaves v->present 0.
 * Returns 0, or -1 out of memory. */
static int doc_decode(struct payment_fastbody *fb, const char *name, struct doc_value *v)
{
    const struct jtape *t = &fb->tape;
    uint32_t tok = jtape_get(t, fb->attributes, name, strlen(name));
    v->present = 0;
    if (!tok || t->tokens[tok].kind != JTAPE_STRING)
        return 0;
    v->at = fb->scratch.len;
    const char *s = jtape_string(t, tok, &fb->scratch, &v->len);
    if (!s)
        return -1;
    if (!t->tokens[tok].escaped && buf_append(&fb->scratch, s, v->len) != 0)
        return -1;
    assert(fb->scratch.len == v->at + v->len || fb->scratch.len == v->at + v->len + 1);
    if (fb->scratch.len == v->at + v->len && buf_append(&fb->scratch, "", 1) != 0)
        return -1; /* the NUL kept as part of the value */
    v->present = 1;
    return 0;
}

static const char *doc_column(const struct payment_fastbody *fb, const struct doc_value *v)
{
    return v->present ? fb->scratch.data + v->at : NULL;
}

/* payment_doc_row's columns from the stripped attributes. */
static int doc_row(struct payment_fastbody *fb, const struct payment_fastbody_base *base,
                   struct payment_row *row)
{
    struct doc_value values[DOC_COLUMNS];
    buf_reset(&fb->scratch);
    for (int i = 0; i < DOC_COLUMNS; i++)
        if (doc_decode(fb, doc_column_names[i], &values[i]) != 0)
            return -1;

    memset(row, 0, sizeof *row);
    assert(strlen(base->id) == UUID_STR_LEN && strlen(base->organisation_id) == UUID_STR_LEN);
    memcpy(row->id, base->id, UUID_STR_LEN + 1);
    memcpy(row->organisation_id, base->organisation_id, UUID_STR_LEN + 1);
    row->version = base->version;
    row->created_ms = base->created_ms;
    row->modified_ms = base->modified_ms;
    /* scratch is complete: its pointers no longer move. */
    row->currency = doc_column(fb, &values[DOC_CURRENCY]);
    row->payment_scheme = doc_column(fb, &values[DOC_SCHEME]);
    row->payment_type = doc_column(fb, &values[DOC_PAYMENT_TYPE]);
    row->reference = doc_column(fb, &values[DOC_REFERENCE]);
    row->end_to_end_reference = doc_column(fb, &values[DOC_E2E_REFERENCE]);
    payment_row_derive(row, doc_column(fb, &values[DOC_PROCESSING_DATE]),
                       values[DOC_PROCESSING_DATE].len, doc_column(fb, &values[DOC_AMOUNT]),
                       values[DOC_AMOUNT].len);
    return 0;
}

int payment_fastbody_doc(struct payment_fastbody *fb, const struct payment_fastbody_base *base,
                         struct payment_row *row, char **text)
{
    assert(fb->data && fb->attributes); /* after a successful read */
    assert(base->fallback_type && base->id && base->organisation_id && base->created_on);
    *text = NULL;
    struct buf out = BUF_INIT;
    size_t max = doc_max(fb, base);
    if (buf_reserve(&out, max) != 0)
        return PAYMENT_FASTBODY_ENOMEM;
    size_t cap = out.cap;
    if (doc_write(fb, base, &out) != 0 || doc_row(fb, base, row) != 0) {
        buf_free(&out);
        return PAYMENT_FASTBODY_ENOMEM;
    }
    assert(out.cap == cap && out.len <= max); /* sized once */
    (void)cap;
    size_t len;
    *text = buf_steal(&out, &len);
    row->doc = *text;
    row->doc_len = len;
    return PAYMENT_FASTBODY_OK;
}

const char *payment_fastbody_string(struct payment_fastbody *fb, uint32_t tok, size_t *len)
{
    if (tok == 0 || tok >= fb->tape.count || fb->tape.tokens[tok].kind != JTAPE_STRING)
        return NULL;
    return jtape_string(&fb->tape, tok, &fb->scratch, len);
}

void payment_fastbody_free(struct payment_fastbody *fb)
{
    jtape_free(&fb->tape);
    buf_free(&fb->scratch);
    jtape_free(&fb->patch);
    buf_free(&fb->merged);
    *fb = (struct payment_fastbody)PAYMENT_FASTBODY_INIT;
}
