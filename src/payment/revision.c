/* revision: see revision.h. */
#include "payment/revision.h"

#include <assert.h>
#include <string.h>

#include "core/clock.h"
#include "core/uuid.h"
#include "payment/doc.h"
#include "payment/merge.h"

/* Appends one {"field","message"} problem: 1, or -1 out of memory. */
static int problem(json_t *errors, const char *field, const char *message)
{
    json_t *e = json_pack("{s:s,s:s}", "field", field, "message", message);
    return e && json_array_append_new(errors, e) == 0 ? 1 : -1;
}

/* Whether org (any letter case), when given, names the stored organisation. */
static int same_org(const char *org, const char *stored)
{
    char canon[UUID_STR_LEN + 1];
    return !org || (uuid_canonical(org, strlen(org), canon) == 0 && strcmp(canon, stored) == 0);
}

/* A copy of v (NULL when v is NULL or null), or NULL with *oom set. */
static json_t *copy_non_null(const json_t *v, int *oom)
{
    if (!v || json_is_null(v))
        return NULL;
    json_t *c = json_deep_copy(v);
    *oom |= !c;
    return c;
}

/* A new reference to v itself (NULL when v is NULL or null): for members
 * taken as they are, which nothing changes afterwards (the request is
 * borrowed read-only, and the next document only holds them). */
static json_t *share_non_null(const json_t *v)
{
    return v && !json_is_null(v) ? json_incref((json_t *)v) : NULL;
}

/* The next attributes and relationships (new references; either may be
 * NULL: attributes when the request has none, relationships when there are
 * none).  0, or -1 out of memory. */
static int next_members(const struct revision_input *in, json_t **attributes,
                        json_t **relationships)
{
    const json_t *pa = json_object_get(in->data, "attributes");
    const json_t *pr = json_object_get(in->data, "relationships");
    int oom = 0;
    if (in->mode == REVISION_REPLACE && in->attributes_valid) {
        /* Validated already, so never stripped of nulls here: shared. */
        *attributes = share_non_null(pa);
        *relationships = share_non_null(pr);
        return 0;
    }
    if (in->mode == REVISION_REPLACE) {
        *attributes = copy_non_null(pa, &oom);
        *relationships = copy_non_null(pr, &oom);
        return oom ? -1 : 0;
    }
    const json_t *ca = json_object_get(in->current, "attributes");
    const json_t *cr = json_object_get(in->current, "relationships");
    if (pa && !json_is_null(pa))
        *attributes = merge_patch(ca, pa);
    else
        *attributes = copy_non_null(ca, &oom);
    oom |= pa && !json_is_null(pa) && !*attributes;
    if (pr && !json_is_null(pr)) {
        *relationships = merge_patch(cr, pr); /* from {} when there are none */
        oom |= !*relationships;
    } else {
        *relationships = pr ? NULL : copy_non_null(cr, &oom);
    }
    return oom ? -1 : 0;
}

/* Validates the next members into errors: the count of problems, or -1
 * out of memory.  Null members of attributes are removed first. */
static int check_members(const struct revision_input *in, json_t *attributes,
                         const json_t *relationships, json_t *errors)
{
    int n;
    if (!json_is_object(attributes)) {
        n = problem(errors, "data.attributes", "must be an object");
    } else if (in->mode == REVISION_REPLACE && in->attributes_valid) {
        n = 0; /* validated as the request's body, and taken as they are */
    } else {
        payment_attributes_strip_nulls(attributes); /* nulls inside patched arrays too */
        n = payment_validate_attributes(in->validator, attributes, errors);
    }
    if (n == 0 && relationships && !json_is_object(relationships))
        n = problem(errors, "data.relationships", "must be an object");
    return n;
}

static const char *type_or(const json_t *obj, const char *fallback)
{
    const char *t = payment_doc_string(obj, "type");
    return t && *t ? t : fallback;
}

static json_t *next_doc(const struct revision_input *in, json_t *attributes,
                        json_t *relationships)
{
    char created_on[CLOCK_TIMESTAMP_LEN + 1];
    const char *co = payment_doc_string(in->current, "created_on");
    if (!co) {
        clock_format_ms(in->created_ms, created_on);
        co = created_on;
    }
    return payment_doc_new(type_or(in->data, type_or(in->current, "payments")),
                           payment_doc_string(in->current, "id"), in->base_version + 1,
                           payment_doc_string(in->current, "organisation_id"), co, in->now_ms,
                           attributes, relationships);
}

int revision_next(const struct revision_input *in, json_t **doc, json_t **errors)
{
    assert(in && in->current && in->data && in->validator && doc && errors);
    assert(in->base_version >= 0 && in->base_version < INT64_MAX);
    *doc = NULL;
    *errors = NULL;
    const char *stored = payment_doc_string(in->current, "organisation_id");
    if (!stored || !payment_doc_string(in->current, "id"))
        return REVISION_ESTORED;
    json_t *problems = json_array();
    if (!problems)
        return REVISION_ENOMEM;
    json_t *attributes = NULL, *relationships = NULL;
    int n;
    if (!same_org(payment_doc_string(in->data, "organisation_id"), stored) ||
        !same_org(in->organisation_id, stored))
        n = problem(problems, "data.organisation_id",
                    "cannot change: must equal the stored organisation_id");
    else if (next_members(in, &attributes, &relationships) != 0)
        n = -1;
    else
        n = check_members(in, attributes, relationships, problems);
    int rc = n < 0 ? REVISION_ENOMEM : n > 0 ? REVISION_EINVALID : REVISION_OK;
    if (rc == REVISION_OK && !(*doc = next_doc(in, attributes, relationships)))
        rc = REVISION_ENOMEM;
    json_decref(attributes);
    json_decref(relationships);
    if (rc == REVISION_EINVALID)
        *errors = problems;
    else
        json_decref(problems);
    return rc;
}
