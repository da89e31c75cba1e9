/* schema: the rules of the seed spec's Payment definition as static tables.
 *
 * The tables live in schema_gen.c, generated from spec/seed-swagger.yml by
 * tools/gen_schema.py (`make schema`; `make check-schema` fails when they are
 * stale).  Each node is one value the spec declares: a member of an object,
 * the items of an array, or a root.  validate.c walks them; only what the spec
 * declares is checked, and members it does not declare are never rejected. */
#ifndef PAYMENT_SCHEMA_H
#define PAYMENT_SCHEMA_H

#include <stddef.h>

enum schema_type {
    SCHEMA_STRING,
    SCHEMA_INTEGER, /* a JSON integer only: 1.0 is a real, not an integer */
    SCHEMA_NUMBER,  /* a JSON integer or real */
    SCHEMA_BOOLEAN,
    SCHEMA_OBJECT,
    SCHEMA_ARRAY,
};

enum schema_format {
    SCHEMA_FORMAT_NONE,
    SCHEMA_FORMAT_UUID,      /* 8-4-4-4-12 hex digits (core/uuid.h) */
    SCHEMA_FORMAT_DATE,      /* YYYY-MM-DD naming a real date (core/clock.h) */
    SCHEMA_FORMAT_DATE_TIME, /* RFC 3339 date-time (core/clock.h) */
};

struct schema_node {
    const char *name;                       /* member name; NULL for items and roots */
    enum schema_type type;                  /* JSON type the value must have */
    enum schema_format format;              /* strings only */
    const char *pattern;                    /* POSIX extended regex, or NULL */
    int pattern_id;                         /* index in schema_patterns when pattern is set */
    const char *const *enum_values;         /* NULL-terminated allowed strings, or NULL */
    const char *enum_text;                  /* enum_values joined by ", ", for messages */
    int max_length;                         /* most Unicode code points of a string; 0: none */
    int required;                           /* the enclosing object must have this member */
    int has_minimum;                        /* whether minimum applies */
    long long minimum;                      /* least value of an integer */
    const struct schema_node *items;        /* arrays: the node every item must satisfy */
    const struct schema_node *properties;   /* objects: declared members, sorted by name */
    size_t property_count;                  /* entries in properties */
};

/* Every distinct pattern of the tables; node.pattern_id indexes it, so a
 * validator can compile each once. */
extern const char *const schema_patterns[];
extern const size_t schema_pattern_count;

/* The object of data.attributes. */
extern const struct schema_node schema_payment_attributes;

/* The object of data itself, without attributes and relationships, which the
 * validator handles on its own: type, version, organisation_id. */
extern const struct schema_node schema_payment_envelope;

#endif
