/* validate: walks a request's data with the spec's tables (schema.h), then
 * applies the money rules, which are tables too (money_rules, scheme_rules).
 * Each field gets at most one problem: the first rule it breaks. */
#include "payment/validate.h"

#include <assert.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/currency.h"
#include "core/decimal.h"
#include "core/uuid.h"
#include "payment/schema.h"

struct payment_validator {
    regex_t *patterns;    /* schema_patterns compiled, same indexes */
    size_t pattern_count; /* entries of patterns compiled so far */
};

/* Paths hold only names the tables declare and array indexes, so their
 * length is bounded by the tables' depth; 512 bytes leave ample room. */
#define VALIDATE_PATH_MAX 512

struct walk {
    const payment_validator *v; /* compiled patterns */
    json_t *errors;             /* problems are appended here */
    size_t start;               /* size of errors when the check began */
    int enforce_required;       /* report members the tables mark required */
    char path[VALIDATE_PATH_MAX]; /* field of the value being checked */
    size_t path_len;            /* bytes of path in use */
};

static const char *const validate_type_messages[] = {
    [SCHEMA_STRING] = "must be a string",   [SCHEMA_INTEGER] = "must be an integer",
    [SCHEMA_NUMBER] = "must be a number",   [SCHEMA_BOOLEAN] = "must be true or false",
    [SCHEMA_OBJECT] = "must be an object",  [SCHEMA_ARRAY] = "must be an array",
};

static const char *const validate_format_messages[] = {
    [SCHEMA_FORMAT_NONE] = NULL,
    [SCHEMA_FORMAT_UUID] = "must be a UUID",
    [SCHEMA_FORMAT_DATE] = "must be a real date as YYYY-MM-DD",
    [SCHEMA_FORMAT_DATE_TIME] = "must be an RFC 3339 date-time",
};

/* data.id is not part of the Payment definition (the spec declares it on
 * PaymentWithId, the response); a client may supply it on create. */
static const struct schema_node validate_id_node = {
    .name = "id",
    .type = SCHEMA_STRING,
    .format = SCHEMA_FORMAT_UUID,
};

payment_validator *payment_validator_new(void)
{
    payment_validator *v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    v->patterns = calloc(schema_pattern_count ? schema_pattern_count : 1, sizeof *v->patterns);
    if (!v->patterns) {
        free(v);
        return NULL;
    }
    for (; v->pattern_count < schema_pattern_count; v->pattern_count++) {
        if (regcomp(&v->patterns[v->pattern_count], schema_patterns[v->pattern_count],
                    REG_EXTENDED | REG_NOSUB) != 0) {
            payment_validator_free(v);
            return NULL;
        }
    }
    return v;
}

void payment_validator_free(payment_validator *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->pattern_count; i++)
        regfree(&v->patterns[i]);
    free(v->patterns);
    free(v);
}

int payment_validator_match(const payment_validator *v, int pattern_id, const char *s,
                            size_t len)
{
    assert(pattern_id >= 0 && (size_t)pattern_id < v->pattern_count);
    /* regexec stops at a NUL, so a string holding one is never a match. */
    if (memchr(s, '\0', len))
        return 0;
    /* REG_STARTEND: the len bytes are the whole string, no NUL needed. */
    regmatch_t range = {.rm_so = 0, .rm_eo = (regoff_t)len};
    int rc = regexec(&v->patterns[pattern_id], s, 1, &range, REG_STARTEND);
    if (rc == 0)
        return 1;
    return rc == REG_NOMATCH ? 0 : -1;
}

/* ---- problems and paths ---- */

/* Appends {"field", "message"}; message is a new reference, stolen (NULL
 * when its formatting ran out of memory). */
static int validate_add(json_t *errors, const char *field, json_t *message)
{
    json_t *problem = json_object();
    json_t *name = json_string(field);
    if (!problem || !name || !message) {
        json_decref(problem);
        json_decref(name);
        json_decref(message);
        return -1;
    }
    if (json_object_set_new(problem, "field", name) != 0 ||
        json_object_set_new(problem, "message", message) != 0) {
        json_decref(problem);
        return -1;
    }
    return json_array_append_new(errors, problem);
}

static int walk_problem(struct walk *w, const char *message)
{
    return validate_add(w->errors, w->path, json_string(message));
}

/* Whether a problem about field was reported since the walk began, so that
 * a later rule does not report a second one for the same field. */
static int walk_has_problem(const struct walk *w, const char *field)
{
    for (size_t i = w->start; i < json_array_size(w->errors); i++) {
        const char *f = json_string_value(json_object_get(json_array_get(w->errors, i), "field"));
        if (f && strcmp(f, field) == 0)
            return 1;
    }
    return 0;
}

/* Appends ".name" (or "name" at the start) to the path.  Returns the
 * previous length for walk_pop, or -1 when the path would not fit. */
static long walk_push_member(struct walk *w, const char *name)
{
    size_t old = w->path_len;
    size_t n = strlen(name);
    size_t dot = old ? 1 : 0;
    if (old + dot + n >= sizeof w->path)
        return -1;
    if (dot)
        w->path[w->path_len++] = '.';
    memcpy(w->path + w->path_len, name, n + 1);
    w->path_len += n;
    return (long)old;
}

static long walk_push_index(struct walk *w, size_t index)
{
    size_t old = w->path_len;
    int n = snprintf(w->path + old, sizeof w->path - old, "[%zu]", index);
    if (n < 0 || (size_t)n >= sizeof w->path - old) {
        w->path[old] = '\0';
        return -1;
    }
    w->path_len += (size_t)n;
    return (long)old;
}

static void walk_pop(struct walk *w, long old)
{
    w->path_len = (size_t)old;
    w->path[w->path_len] = '\0';
}

static void walk_init(struct walk *w, const payment_validator *v, json_t *errors,
                      const char *root)
{
    w->v = v;
    w->errors = errors;
    w->start = json_array_size(errors);
    w->enforce_required = 1;
    w->path_len = 0;
    w->path[0] = '\0';
    (void)walk_push_member(w, root); /* roots are short literals */
}

/* ---- the spec's rules ---- */

/* Unicode code points in valid UTF-8: every byte but continuation bytes. */
static size_t validate_utf8_length(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

int payment_value_in_enum(const char *const *values, const char *s, size_t len)
{
    for (; *values; values++)
        if (strlen(*values) == len && memcmp(*values, s, len) == 0)
            return 1;
    return 0;
}

int payment_value_has_format(enum schema_format format, const char *s, size_t len)
{
    struct uuid u;
    int y, m, d;
    switch (format) {
    case SCHEMA_FORMAT_NONE:
        return 1;
    case SCHEMA_FORMAT_UUID:
        return uuid_parse(s, len, &u) == 0;
    case SCHEMA_FORMAT_DATE:
        return clock_parse_date(s, len, &y, &m, &d) == 0;
    case SCHEMA_FORMAT_DATE_TIME:
        return clock_is_datetime(s, len);
    }
    return 0;
}

/* The string rules of one node; the first broken one is the field's only
 * problem. */
static int walk_string(struct walk *w, const struct schema_node *n, const json_t *value)
{
    const char *s = json_string_value(value);
    size_t len = json_string_length(value);

    if (n->pattern) {
        int rc = payment_validator_match(w->v, n->pattern_id, s, len);
        if (rc == 0)
            return validate_add(w->errors, w->path, json_sprintf("must match %s", n->pattern));
        if (rc < 0)
            return -1; /* REG_ESPACE */
    }
    if (n->enum_values && !payment_value_in_enum(n->enum_values, s, len))
        return validate_add(w->errors, w->path, json_sprintf("must be one of %s", n->enum_text));
    if (!payment_value_has_format(n->format, s, len))
        return walk_problem(w, validate_format_messages[n->format]);
    if (n->max_length > 0 && validate_utf8_length(s, len) > (size_t)n->max_length)
        return validate_add(w->errors, w->path,
                            json_sprintf("must be at most %d characters", n->max_length));
    return 0;
}

static int walk_node(struct walk *w, const struct schema_node *n, const json_t *value);

/* The declared members of obj; undeclared ones are accepted as they are, and
 * null means absent. */
static int walk_members(struct walk *w, const struct schema_node *n, const json_t *obj)
{
    for (size_t i = 0; i < n->property_count; i++) {
        const struct schema_node *member = &n->properties[i];
        const json_t *value = json_object_get(obj, member->name);
        if (json_is_null(value))
            value = NULL;
        if (!value && !(member->required && w->enforce_required))
            continue;
        long old = walk_push_member(w, member->name);
        if (old < 0)
            return -1;
        int rc = value ? walk_node(w, member, value) : walk_problem(w, "is required");
        walk_pop(w, old);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int walk_items(struct walk *w, const struct schema_node *n, const json_t *array)
{
    for (size_t i = 0; i < json_array_size(array); i++) {
        long old = walk_push_index(w, i);
        if (old < 0)
            return -1;
        int rc = walk_node(w, n->items, json_array_get(array, i));
        walk_pop(w, old);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int validate_has_type(enum schema_type type, const json_t *value)
{
    switch (type) {
    case SCHEMA_STRING:
        return json_is_string(value);
    case SCHEMA_INTEGER:
        return json_is_integer(value);
    case SCHEMA_NUMBER:
        return json_is_number(value);
    case SCHEMA_BOOLEAN:
        return json_is_boolean(value);
    case SCHEMA_OBJECT:
        return json_is_object(value);
    case SCHEMA_ARRAY:
        return json_is_array(value);
    }
    return 0;
}

static int walk_node(struct walk *w, const struct schema_node *n, const json_t *value)
{
    if (!validate_has_type(n->type, value))
        return walk_problem(w, validate_type_messages[n->type]);
    switch (n->type) {
    case SCHEMA_STRING:
        return walk_string(w, n, value);
    case SCHEMA_INTEGER:
        if (n->has_minimum && json_integer_value(value) < n->minimum)
            return validate_add(w->errors, w->path,
                                json_sprintf("must be at least %lld", n->minimum));
        return 0;
    case SCHEMA_OBJECT:
        return walk_members(w, n, value);
    case SCHEMA_ARRAY:
        return n->items ? walk_items(w, n, value) : 0;
    case SCHEMA_NUMBER:
    case SCHEMA_BOOLEAN:
        return 0;
    }
    return 0;
}

/* ---- money ---- */

static const struct payment_scheme_rule scheme_rules[] = {
    {"FPS", "250000.00", NULL},
    {"BACS", "20000000.00", NULL},
    {"SEPAINSTANT", "15000.00", "EUR"},
    {"SEPACT", NULL, "EUR"},
    {"SWIFT", NULL, NULL},
};

#define SCHEME_RULE_COUNT (sizeof scheme_rules / sizeof scheme_rules[0])

/* What the money rules learn about the attributes, in money_rules order. */
struct money {
    const char *currency;  /* currency code when valid, else NULL */
    size_t currency_len;   /* bytes of currency */
    int minor_unit;        /* its decimals, or CURRENCY_NO_MINOR_UNIT */
    struct decimal amount; /* parsed amount, when amount_ok */
    int amount_ok;         /* amount passed every rule of its own */
};

struct money_rule {
    const char *member; /* attribute the rule applies to */
    int required;       /* the attribute must be present */
    int (*check)(struct walk *w, const char *s, size_t len, struct money *m);
};

static int money_currency(struct walk *w, const char *s, size_t len, struct money *m)
{
    int minor = currency_minor_unit(s, len);
    if (minor == CURRENCY_UNKNOWN)
        return walk_problem(w, "must be a current ISO 4217 currency code");
    m->currency = s;
    m->currency_len = len;
    m->minor_unit = minor;
    return 0;
}

static int money_amount(struct walk *w, const char *s, size_t len, struct money *m)
{
    if (len > DECIMAL_MAX_LEN)
        return validate_add(w->errors, w->path,
                            json_sprintf("must be at most %d characters", DECIMAL_MAX_LEN));
    if (decimal_parse(s, len, &m->amount) != 0)
        return walk_problem(w, "must be a decimal number in plain notation, such as 10.50");
    if (decimal_is_zero(&m->amount))
        return walk_problem(w, "must be greater than 0");
    if (m->currency && m->minor_unit != CURRENCY_NO_MINOR_UNIT &&
        m->amount.frac_len > (size_t)m->minor_unit)
        return validate_add(w->errors, w->path,
                            json_sprintf("must have at most %d decimal places for %.*s",
                                         m->minor_unit, (int)m->currency_len, m->currency));
    m->amount_ok = 1;
    return 0;
}

const struct payment_scheme_rule *payment_scheme_rule(const char *s, size_t len)
{
    for (size_t i = 0; i < SCHEME_RULE_COUNT; i++)
        if (strlen(scheme_rules[i].name) == len && memcmp(scheme_rules[i].name, s, len) == 0)
            return &scheme_rules[i];
    return NULL;
}

/* Reports a problem on a sibling attribute of the rule's own. */
static int money_problem_at(struct walk *w, const char *member, json_t *message)
{
    char field[VALIDATE_PATH_MAX];
    int n = snprintf(field, sizeof field, "data.attributes.%s", member);
    if (n < 0 || (size_t)n >= sizeof field) {
        json_decref(message);
        return -1;
    }
    return validate_add(w->errors, field, message);
}

int payment_scheme_known(const char *s, size_t len)
{
    return payment_scheme_rule(s, len) != NULL;
}

/* The schemes as "FPS, BACS, ...", for messages. */
static const char *payment_scheme_names(void)
{
    return "FPS, BACS, SEPAINSTANT, SEPACT, SWIFT";
}

_Static_assert(SCHEME_RULE_COUNT == 5, "payment_scheme_names() lists every scheme rule");

static int money_scheme(struct walk *w, const char *s, size_t len, struct money *m)
{
    const struct payment_scheme_rule *rule = payment_scheme_rule(s, len);
    if (!rule)
        return validate_add(w->errors, w->path,
                            json_sprintf("must be one of %s", payment_scheme_names()));
    if (rule->currency && m->currency &&
        (strlen(rule->currency) != m->currency_len ||
         memcmp(rule->currency, m->currency, m->currency_len) != 0)) {
        if (money_problem_at(w, "currency",
                             json_sprintf("must be %s for payment scheme %s", rule->currency,
                                          rule->name)) < 0)
            return -1;
    }
    if (rule->max_amount && m->amount_ok) {
        struct decimal max;
        if (decimal_parse(rule->max_amount, strlen(rule->max_amount), &max) != 0)
            return -1; /* scheme_rules holds only plain decimals */
        if (decimal_cmp(&m->amount, &max) > 0)
            return money_problem_at(w, "amount",
                                    json_sprintf("must be at most %s for payment scheme %s",
                                                 rule->max_amount, rule->name));
    }
    return 0;
}

/* In order: each rule may use what the ones before it learnt. */
static const struct money_rule money_rules[] = {
    {"currency", 1, money_currency},
    {"amount", 1, money_amount},
    {"payment_scheme", 0, money_scheme},
};

static int walk_money(struct walk *w, const json_t *attributes)
{
    struct money m = {NULL, 0, CURRENCY_NO_MINOR_UNIT, {NULL, 0, NULL, 0}, 0};
    for (size_t i = 0; i < sizeof money_rules / sizeof money_rules[0]; i++) {
        const struct money_rule *rule = &money_rules[i];
        const json_t *value = json_object_get(attributes, rule->member);
        long old = walk_push_member(w, rule->member);
        if (old < 0)
            return -1;
        int rc = 0;
        if (!value || json_is_null(value)) {
            if (rule->required)
                rc = walk_problem(w, "is required");
        } else if (json_is_string(value) && !walk_has_problem(w, w->path)) {
            /* Values that broke the spec's own rules (type, pattern,
             * x-length) already have their one problem. */
            rc = rule->check(w, json_string_value(value), json_string_length(value), &m);
        }
        walk_pop(w, old);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* ---- entry points ---- */

static int walk_attributes(struct walk *w, const json_t *attributes)
{
    if (walk_node(w, &schema_payment_attributes, attributes) < 0)
        return -1;
    if (!json_is_object(attributes))
        return 0;
    return walk_money(w, attributes);
}

static int walk_count(const struct walk *w, int rc)
{
    return rc < 0 ? -1 : (int)(json_array_size(w->errors) - w->start);
}

int payment_validate_attributes(const payment_validator *v, const json_t *attributes,
                                json_t *errors)
{
    struct walk w;
    walk_init(&w, v, errors, "data.attributes");
    return walk_count(&w, walk_attributes(&w, attributes));
}

static void validate_strip_nulls(json_t *value)
{
    if (json_is_object(value)) {
        const char *key;
        size_t key_len;
        json_t *member;
        void *next;
        json_object_keylen_foreach_safe(value, next, key, key_len, member) {
            if (json_is_null(member))
                (void)json_object_deln(value, key, key_len); /* present: cannot fail */
            else
                validate_strip_nulls(member);
        }
    } else if (json_is_array(value)) {
        for (size_t i = 0; i < json_array_size(value); i++)
            validate_strip_nulls(json_array_get(value, i));
    }
}

void payment_attributes_strip_nulls(json_t *attributes)
{
    validate_strip_nulls(attributes);
}

/* The rules of data's own members, beyond what the envelope table holds. */
static int walk_data(struct walk *w, enum payment_check mode, json_t *data)
{
    w->enforce_required = mode != PAYMENT_CHECK_PATCH;
    if (walk_members(w, &schema_payment_envelope, data) < 0)
        return -1;
    w->enforce_required = 1;

    const json_t *id = json_object_get(data, "id");
    if (id && !json_is_null(id)) {
        long old = walk_push_member(w, "id");
        if (old < 0 || walk_node(w, &validate_id_node, id) < 0)
            return -1;
        walk_pop(w, old);
    }

    const json_t *version = json_object_get(data, "version");
    if (mode == PAYMENT_CHECK_CREATE && json_is_integer(version) &&
        json_integer_value(version) > 0) {
        if (validate_add(w->errors, "data.version", json_string("must be 0 on create")) < 0)
            return -1;
    }

    const json_t *relationships = json_object_get(data, "relationships");
    if (relationships && !json_is_null(relationships) && !json_is_object(relationships)) {
        if (validate_add(w->errors, "data.relationships", json_string("must be an object")) < 0)
            return -1;
    }

    json_t *attributes = json_object_get(data, "attributes");
    if (!attributes || json_is_null(attributes)) {
        if (mode == PAYMENT_CHECK_PATCH)
            return 0;
        return validate_add(w->errors, "data.attributes", json_string("is required"));
    }
    if (!json_is_object(attributes))
        return validate_add(w->errors, "data.attributes", json_string("must be an object"));
    if (mode == PAYMENT_CHECK_PATCH)
        return 0; /* a merge patch: the caller validates the merged result */

    payment_attributes_strip_nulls(attributes);
    long old = walk_push_member(w, "attributes");
    if (old < 0 || walk_attributes(w, attributes) < 0)
        return -1;
    walk_pop(w, old);
    return 0;
}

int payment_validate_data(const payment_validator *v, enum payment_check mode, json_t *data,
                          json_t *errors)
{
    struct walk w;
    walk_init(&w, v, errors, "data");
    if (!json_is_object(data))
        return walk_count(&w, walk_problem(&w, "must be an object"));
    return walk_count(&w, walk_data(&w, mode, data));
}
