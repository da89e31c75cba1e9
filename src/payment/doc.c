#include "payment/doc.h"

#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/decimal.h"

/* Nesting is checked on the bytes before parsing, so that a hostile body
 * cannot drive the parser's recursion deep.  Brackets inside strings do not
 * count; the parser rejects anything else malformed afterwards. */
static int depth_ok(const char *s, size_t len)
{
    int depth = 0, in_string = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = 0;
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > PAYMENT_BODY_MAX_DEPTH)
                return 0;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return 1;
}

json_t *payment_body_parse(const char *body, size_t len, char *msg, size_t msglen)
{
    if (len == 0) {
        snprintf(msg, msglen, "the body is empty; expected a JSON object");
        return NULL;
    }
    if (!depth_ok(body, len)) {
        snprintf(msg, msglen, "the body is nested deeper than %d levels", PAYMENT_BODY_MAX_DEPTH);
        return NULL;
    }
    json_error_t err;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
    if (!root) {
        snprintf(msg, msglen, "malformed JSON: %s (line %d, column %d)", err.text, err.line,
                 err.column);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        snprintf(msg, msglen, "the body must be a JSON object");
        return NULL;
    }
    return root;
}

json_t *payment_doc_new(const char *type, const char *id, int64_t version, const char *org,
                        const char *created_on, int64_t modified_ms, json_t *attributes,
                        json_t *relationships)
{
    char modified_on[CLOCK_TIMESTAMP_LEN + 1];
    clock_format_ms(modified_ms, modified_on);
    json_t *doc = json_object();
    if (!doc)
        return NULL;
    int rc = json_object_set_new(doc, "type", json_string(type));
    rc |= json_object_set_new(doc, "id", json_string(id));
    rc |= json_object_set_new(doc, "version", json_integer(version));
    rc |= json_object_set_new(doc, "organisation_id", json_string(org));
    rc |= json_object_set_new(doc, "created_on", json_string(created_on));
    rc |= json_object_set_new(doc, "modified_on", json_string(modified_on));
    rc |= json_object_set(doc, "attributes", attributes);
    if (relationships)
        rc |= json_object_set(doc, "relationships", relationships);
    if (rc != 0) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

void payment_row_derive(struct payment_row *row, const char *processing_date, size_t date_len,
                        const char *amount, size_t amount_len)
{
    if (processing_date && date_len == CLOCK_DATE_LEN)
        memcpy(row->processing_date, processing_date, CLOCK_DATE_LEN + 1);
    struct decimal d;
    if (amount && decimal_parse(amount, amount_len, &d) == 0)
        decimal_sort_key(&d, row->amount_key);
}

const char *payment_doc_string(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

int payment_doc_row(const json_t *doc, int64_t created_ms, int64_t modified_ms,
                    struct payment_row *row, char **text)
{
    const char *id = payment_doc_string(doc, "id");
    const char *org = payment_doc_string(doc, "organisation_id");
    json_t *attrs = json_object_get(doc, "attributes");
    if (!id || !org || strlen(id) != UUID_STR_LEN || strlen(org) != UUID_STR_LEN)
        return -1;
    memset(row, 0, sizeof *row);
    memcpy(row->id, id, UUID_STR_LEN + 1);
    memcpy(row->organisation_id, org, UUID_STR_LEN + 1);
    row->version = json_integer_value(json_object_get(doc, "version"));
    row->created_ms = created_ms;
    row->modified_ms = modified_ms;
    row->currency = payment_doc_string(attrs, "currency");
    row->payment_scheme = payment_doc_string(attrs, "payment_scheme");
    row->payment_type = payment_doc_string(attrs, "payment_type");
    row->reference = payment_doc_string(attrs, "reference");
    row->end_to_end_reference = payment_doc_string(attrs, "end_to_end_reference");
    const char *pd = payment_doc_string(attrs, "processing_date");
    const char *amount = payment_doc_string(attrs, "amount");
    payment_row_derive(row, pd, pd ? strlen(pd) : 0, amount, amount ? strlen(amount) : 0);
    *text = json_dumps(doc, JSON_COMPACT);
    if (!*text)
        return -1;
    row->doc = *text;
    row->doc_len = strlen(*text);
    return 0;
}
