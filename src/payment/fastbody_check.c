/* fastbody_check: payment_fastbody_read, a create's or a replace's body read
 * into a tape and checked against the rules payment_validate_data applies
 * (validate.c), without a jansson tree.
 *
 * The spec's rules come from the generated tables (schema.h), each object's
 * members looked up by name (fastbody_index.h), so a regenerated table
 * needs no change here; the string rules (enum, format) and the schemes'
 * limits are validate.c's own functions.  The rules validate.c writes out in
 * its walk (data.id a UUID, version 0 on create, relationships an object,
 * attributes required and an object, the money rules' order) are restated
 * below, each next to the rule it mirrors.
 *
 * Invariant: OK only when the general path accepts the body for the same
 * mode.  Any rule broken, and anything this file does not decide itself, is
 * DEFER; a refusal's wording is always the general path's.  Null members
 * count as absent, as for the general path (which strips them from
 * attributes before validating, and ignores them in data).
 *
 * Threads: none of its own; fb belongs to the calling thread.  Decoded
 * strings live in fb->scratch only while one rule looks at them. */
#include "payment/fastbody.h"

#include <assert.h>
#include <string.h>

#include "core/currency.h"
#include "core/decimal.h"
#include "core/uuid.h"
#include "payment/doc.h"
#include "payment/fastbody_index.h"
#include "payment/schema.h"

/* One check of one body. */
struct check {
    struct payment_fastbody *fb; /* the tape read and its scratch */
    const payment_validator *v;  /* the spec's patterns, compiled */
};

/* The decoded value of string token tok, valid until the next call (an
 * escaped string is decoded into fb->scratch, emptied first).  NULL out of
 * memory. */
static const char *check_string(struct check *c, uint32_t tok, size_t *len)
{
    const struct jtape *t = &c->fb->tape;
    const struct jtape_token *s = &t->tokens[tok];
    assert(s->kind == JTAPE_STRING);
    if (!s->escaped) {
        *len = s->len;
        return t->text + s->start;
    }
    buf_reset(&c->fb->scratch);
    return jtape_string(t, tok, &c->fb->scratch, len);
}

/* ---- patterns ---- */

static int check_bytes_in(const char *s, size_t len, const char *set)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] == '\0' || !strchr(set, s[i]))
            return 0;
    return 1;
}

/* ^[0-9.]{0,20}$ */
static int check_amount_pattern(const char *s, size_t len)
{
    return len <= 20 && check_bytes_in(s, len, "0123456789.");
}

/* ^[A-Za-z_]*$ */
static int check_type_pattern(const char *s, size_t len)
{
    return check_bytes_in(s, len,
                          "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_");
}

/* Patterns of the tables decided without regexec.  Each accepts only ASCII
 * strings its regex matches in any locale; test_fastbody and fuzz_fastbody
 * hold them to payment_validator_match. */
static const struct {
    const char *pattern;                       /* as schema_patterns spells it */
    int (*match)(const char *s, size_t len);   /* exact equivalent */
} check_native_patterns[] = {
    {"^[0-9.]{0,20}$", check_amount_pattern},
    {"^[A-Za-z_]*$", check_type_pattern},
};

/* 1 match, 0 no match, -1 out of memory. */
static int check_pattern(const struct check *c, const struct schema_node *n, const char *s,
                         size_t len)
{
    for (size_t i = 0; i < sizeof check_native_patterns / sizeof check_native_patterns[0]; i++)
        if (strcmp(n->pattern, check_native_patterns[i].pattern) == 0)
            return check_native_patterns[i].match(s, len);
    return payment_validator_match(c->v, n->pattern_id, s, len);
}

/* ---- the spec's rules (validate.c walk_node) ---- */

/* validate.c walk_string: pattern, enum, format, x-length. */
static int check_string_node(struct check *c, const struct schema_node *n, uint32_t tok)
{
    const struct jtape_token *s = &c->fb->tape.tokens[tok];
    if (n->max_length > 0 && s->count > (uint32_t)n->max_length)
        return PAYMENT_FASTBODY_DEFER; /* count: code points, as validate.c counts */
    if (!n->pattern && !n->enum_values && n->format == SCHEMA_FORMAT_NONE)
        return PAYMENT_FASTBODY_OK;
    size_t len;
    const char *value = check_string(c, tok, &len);
    if (!value)
        return PAYMENT_FASTBODY_ENOMEM;
    if (n->pattern) {
        int rc = check_pattern(c, n, value, len);
        if (rc < 0)
            return PAYMENT_FASTBODY_ENOMEM;
        if (rc == 0)
            return PAYMENT_FASTBODY_DEFER;
    }
    if (n->enum_values && !payment_value_in_enum(n->enum_values, value, len))
        return PAYMENT_FASTBODY_DEFER;
    if (!payment_value_has_format(n->format, value, len))
        return PAYMENT_FASTBODY_DEFER;
    return PAYMENT_FASTBODY_OK;
}

/* validate.c validate_has_type; jtape reads no reals, so a NUMBER is an
 * integer on the tape. */
static int check_type(enum schema_type type, enum jtape_kind kind)
{
    switch (type) {
    case SCHEMA_STRING:
        return kind == JTAPE_STRING;
    case SCHEMA_INTEGER:
    case SCHEMA_NUMBER:
        return kind == JTAPE_INTEGER;
    case SCHEMA_BOOLEAN:
        return kind == JTAPE_TRUE || kind == JTAPE_FALSE;
    case SCHEMA_OBJECT:
        return kind == JTAPE_OBJECT;
    case SCHEMA_ARRAY:
        return kind == JTAPE_ARRAY;
    }
    return 0;
}

static size_t check_required_count(const struct schema_node *n)
{
    size_t count = 0;
    for (size_t i = 0; i < n->property_count; i++)
        count += n->properties[i].required != 0;
    return count;
}

static int check_node(struct check *c, const struct schema_node *n, uint32_t tok);

/* validate.c walk_members: the declared members (null is absent), the
 * required ones present when enforce_required (always but for a patch's
 * envelope); undeclared members are accepted as they are. */
static int check_members_of(struct check *c, const struct schema_node *n, uint32_t obj,
                            int enforce_required)
{
    const struct jtape *t = &c->fb->tape;
    size_t required = 0;
    for (uint32_t k = obj + 1; k < t->tokens[obj].end; k = t->tokens[k + 1].end) {
        assert(t->tokens[k].kind == JTAPE_STRING && !t->tokens[k].escaped);
        const struct schema_node *member =
            fastbody_property(n, t->text + t->tokens[k].start, t->tokens[k].len);
        if (!member || t->tokens[k + 1].kind == JTAPE_NULL)
            continue;
        required += member->required != 0;
        int rc = check_node(c, member, k + 1);
        if (rc != PAYMENT_FASTBODY_OK)
            return rc;
    }
    return !enforce_required || required == check_required_count(n) ? PAYMENT_FASTBODY_OK
                                                                     : PAYMENT_FASTBODY_DEFER;
}

static int check_members(struct check *c, const struct schema_node *n, uint32_t obj)
{
    return check_members_of(c, n, obj, 1);
}

/* validate.c walk_items: every item, nulls included. */
static int check_items(struct check *c, const struct schema_node *n, uint32_t arr)
{
    const struct jtape *t = &c->fb->tape;
    for (uint32_t i = arr + 1; i < t->tokens[arr].end; i = t->tokens[i].end) {
        int rc = check_node(c, n->items, i);
        if (rc != PAYMENT_FASTBODY_OK)
            return rc;
    }
    return PAYMENT_FASTBODY_OK;
}

/* validate.c walk_node. */
static int check_node(struct check *c, const struct schema_node *n, uint32_t tok)
{
    const struct jtape_token *value = &c->fb->tape.tokens[tok];
    if (!check_type(n->type, value->kind))
        return PAYMENT_FASTBODY_DEFER;
    switch (n->type) {
    case SCHEMA_STRING:
        return check_string_node(c, n, tok);
    case SCHEMA_INTEGER:
        return n->has_minimum && value->integer < n->minimum ? PAYMENT_FASTBODY_DEFER
                                                              : PAYMENT_FASTBODY_OK;
    case SCHEMA_OBJECT:
        return check_members(c, n, tok);
    case SCHEMA_ARRAY:
        return n->items ? check_items(c, n, tok) : PAYMENT_FASTBODY_OK;
    case SCHEMA_NUMBER:
    case SCHEMA_BOOLEAN:
        return PAYMENT_FASTBODY_OK;
    }
    return PAYMENT_FASTBODY_DEFER;
}

/* ---- money (validate.c money_rules, scheme_rules) ---- */

/* Longest currency code kept for the scheme rule; ISO 4217 codes have 3. */
#define CHECK_CURRENCY_MAX 8

/* The string attribute name of attrs, decoded and copied into out (cap
 * bytes, NUL-terminated): 1 when copied, 0 absent or null, DEFER when not
 * a string or too long, ENOMEM. */
static int check_money_member(struct check *c, uint32_t attrs, const char *name, char *out,
                              size_t cap, size_t *len)
{
    const struct jtape *t = &c->fb->tape;
    uint32_t tok = jtape_get(t, attrs, name, strlen(name));
    if (!tok || t->tokens[tok].kind == JTAPE_NULL)
        return 0;
    if (t->tokens[tok].kind != JTAPE_STRING)
        return PAYMENT_FASTBODY_DEFER;
    const char *s = check_string(c, tok, len);
    if (!s)
        return PAYMENT_FASTBODY_ENOMEM;
    if (*len >= cap)
        return PAYMENT_FASTBODY_DEFER;
    memcpy(out, s, *len);
    out[*len] = '\0';
    return 1;
}

/* The scheme's limits on the currency and the amount (validate.c's rules,
 * payment_scheme_rule). */
static int check_scheme(const char *scheme, size_t scheme_len, const char *currency,
                        const struct decimal *amount)
{
    const struct payment_scheme_rule *rule = payment_scheme_rule(scheme, scheme_len);
    if (!rule)
        return PAYMENT_FASTBODY_DEFER; /* not a scheme */
    if (rule->currency && strcmp(rule->currency, currency) != 0)
        return PAYMENT_FASTBODY_DEFER;
    struct decimal limit;
    const char *max = rule->max_amount;
    if (max && (decimal_parse(max, strlen(max), &limit) != 0 || decimal_cmp(amount, &limit) > 0))
        return PAYMENT_FASTBODY_DEFER;
    return PAYMENT_FASTBODY_OK;
}

/* currency and amount required; a current ISO 4217 code; amount a plain
 * positive decimal with no more decimals than the currency's minor unit;
 * payment_scheme, when given, a known scheme within its limits. */
static int check_money(struct check *c, uint32_t attrs)
{
    char currency[CHECK_CURRENCY_MAX + 1], amount_text[DECIMAL_MAX_LEN + 1];
    char scheme[CHECK_CURRENCY_MAX * 2 + 1];
    size_t currency_len, amount_len, scheme_len;
    int rc = check_money_member(c, attrs, "currency", currency, sizeof currency, &currency_len);
    if (rc != 1)
        return rc == 0 ? PAYMENT_FASTBODY_DEFER : rc;
    int minor = currency_minor_unit(currency, currency_len);
    if (minor == CURRENCY_UNKNOWN)
        return PAYMENT_FASTBODY_DEFER;

    rc = check_money_member(c, attrs, "amount", amount_text, sizeof amount_text, &amount_len);
    if (rc != 1)
        return rc == 0 ? PAYMENT_FASTBODY_DEFER : rc;
    struct decimal amount;
    if (decimal_parse(amount_text, amount_len, &amount) != 0 || decimal_is_zero(&amount))
        return PAYMENT_FASTBODY_DEFER;
    if (minor != CURRENCY_NO_MINOR_UNIT && amount.frac_len > (size_t)minor)
        return PAYMENT_FASTBODY_DEFER;

    rc = check_money_member(c, attrs, "payment_scheme", scheme, sizeof scheme, &scheme_len);
    if (rc != 1)
        return rc; /* absent: no limits; or DEFER, ENOMEM */
    return check_scheme(scheme, scheme_len, currency, &amount);
}

/* ---- data (validate.c walk_data) ---- */

/* The value of member key of data, 0 when absent or null. */
static uint32_t check_member(const struct jtape *t, uint32_t data, const char *key)
{
    uint32_t tok = jtape_get(t, data, key, strlen(key));
    return tok && t->tokens[tok].kind != JTAPE_NULL ? tok : 0;
}

/* validate.c walk_data up to the attributes: the envelope's members (a
 * patch's need not be all there), the id a UUID, version 0 on create,
 * relationships an object. */
static int check_envelope(struct check *c, enum payment_check mode)
{
    struct payment_fastbody *fb = c->fb;
    const struct jtape *t = &fb->tape;
    int rc = check_members_of(c, &schema_payment_envelope, fb->data, mode != PAYMENT_CHECK_PATCH);
    if (rc != PAYMENT_FASTBODY_OK)
        return rc;

    if (fb->id) {
        size_t len;
        struct uuid u;
        if (t->tokens[fb->id].kind != JTAPE_STRING)
            return PAYMENT_FASTBODY_DEFER;
        const char *id = check_string(c, fb->id, &len);
        if (!id)
            return PAYMENT_FASTBODY_ENOMEM;
        if (uuid_parse(id, len, &u) != 0)
            return PAYMENT_FASTBODY_DEFER;
    }
    if (mode == PAYMENT_CHECK_CREATE && fb->version &&
        t->tokens[fb->version].kind == JTAPE_INTEGER && t->tokens[fb->version].integer > 0)
        return PAYMENT_FASTBODY_DEFER; /* must be 0 on create */
    if (fb->relationships && t->tokens[fb->relationships].kind != JTAPE_OBJECT)
        return PAYMENT_FASTBODY_DEFER;
    return PAYMENT_FASTBODY_OK;
}

/* validate.c walk_data from the attributes on: required and an object
 * (a patch's may be absent), then every rule of the spec and the money
 * rules; a patch's are left to the merged result. */
static int check_attributes(struct check *c, enum payment_check mode)
{
    struct payment_fastbody *fb = c->fb;
    const struct jtape *t = &fb->tape;
    if (!fb->attributes)
        return mode == PAYMENT_CHECK_PATCH ? PAYMENT_FASTBODY_OK : PAYMENT_FASTBODY_DEFER;
    if (t->tokens[fb->attributes].kind != JTAPE_OBJECT)
        return PAYMENT_FASTBODY_DEFER;
    if (mode == PAYMENT_CHECK_PATCH)
        return PAYMENT_FASTBODY_OK;
    int rc = check_node(c, &schema_payment_attributes, fb->attributes);
    if (rc != PAYMENT_FASTBODY_OK)
        return rc;
    return check_money(c, fb->attributes);
}

static int check_data(struct check *c, enum payment_check mode)
{
    int rc = check_envelope(c, mode);
    return rc == PAYMENT_FASTBODY_OK ? check_attributes(c, mode) : rc;
}

static void check_forget(struct payment_fastbody *fb)
{
    fb->data = fb->id = fb->version = fb->organisation_id = 0;
    fb->type = fb->attributes = fb->relationships = 0;
}

int payment_fastbody_read(struct payment_fastbody *fb, const payment_validator *v,
                          enum payment_check mode, const char *body, size_t len)
{
    assert(fb && v && (body || len == 0));
    assert(mode == PAYMENT_CHECK_CREATE || mode == PAYMENT_CHECK_REPLACE ||
           mode == PAYMENT_CHECK_PATCH);
    check_forget(fb);
    buf_reset(&fb->scratch);
    if (len == 0)
        return PAYMENT_FASTBODY_DEFER;
    if (fastbody_index_init() != 0)
        return PAYMENT_FASTBODY_DEFER;

    int rc = jtape_parse(&fb->tape, body, len, PAYMENT_BODY_MAX_DEPTH);
    if (rc == JTAPE_ENOMEM)
        return PAYMENT_FASTBODY_ENOMEM;
    if (rc != JTAPE_OK)
        return PAYMENT_FASTBODY_DEFER;
    const struct jtape *t = &fb->tape;
    if (t->tokens[0].kind != JTAPE_OBJECT)
        return PAYMENT_FASTBODY_DEFER; /* the body must be an object */
    uint32_t data = jtape_get(t, 0, "data", 4);
    if (!data || t->tokens[data].kind != JTAPE_OBJECT)
        return PAYMENT_FASTBODY_DEFER;

    fb->data = data;
    fb->id = check_member(t, data, "id");
    fb->version = check_member(t, data, "version");
    fb->organisation_id = check_member(t, data, "organisation_id");
    fb->type = check_member(t, data, "type");
    fb->attributes = check_member(t, data, "attributes");
    fb->relationships = check_member(t, data, "relationships");

    struct check c = {fb, v};
    rc = check_data(&c, mode);
    buf_reset(&fb->scratch);
    if (rc != PAYMENT_FASTBODY_OK)
        check_forget(fb);
    return rc;
}
