/* endpoint: see endpoint.h.  What the deliverer reads from an endpoint's
 * stored document: its target (url and the secrets that sign at a time),
 * its event types, and the document disabled.  Making and changing the
 * document for the API (secrets, rotation, merge patches) is api_doc.c's.
 *
 * A document is the store's, written by api_doc.c, so a malformed one is
 * an internal fault: every function refuses it (-1, 0 or NULL) rather
 * than guess.  Pure functions: any thread. */
#include "webhook/endpoint.h"

#include <assert.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "payment/event.h"

/* The parsed document, or NULL when it is not a JSON object. */
static json_t *doc_load(const char *doc, size_t len)
{
    if (!doc)
        return NULL;
    json_t *root = json_loadb(doc, len, JSON_REJECT_DUPLICATES, NULL);
    if (root && !json_is_object(root)) {
        json_decref(root);
        return NULL;
    }
    return root;
}

/* Whether s is a secret as api_doc.c makes them: "whsec_" and base64, at
 * most WEBHOOK_SECRET_MAX bytes. */
static int secret_well_formed(const char *s)
{
    size_t len = strlen(s);
    if (len <= 6 || len > WEBHOOK_SECRET_MAX || strncmp(s, "whsec_", 6) != 0)
        return 0;
    for (const char *p = s + 6; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '+' || *p == '/' || *p == '='))
            return 0;
    return 1;
}

/* Copies into t the secrets of the array that sign at now_ms (those that
 * do not expire, or expire later), newest (first) first, two at most.
 * Returns 0, or -1 when the array is malformed or none signs. */
static int signing_secrets(json_t *secrets, int64_t now_ms, struct webhook_target *t)
{
    size_t i;
    json_t *item;
    if (!json_is_array(secrets))
        return -1;
    t->n_secrets = 0;
    json_array_foreach(secrets, i, item) {
        const char *s = json_string_value(json_object_get(item, "secret"));
        json_t *expires = json_object_get(item, "expires_ms");
        if (!s || !secret_well_formed(s) || !json_is_integer(expires))
            return -1;
        int64_t until = json_integer_value(expires);
        if (until != 0 && until <= now_ms)
            continue; /* rotated out, and its overlap is over */
        if (t->n_secrets == 2)
            break;
        memcpy(t->secrets[t->n_secrets], s, strlen(s) + 1);
        t->n_secrets++;
    }
    return t->n_secrets > 0 ? 0 : -1;
}

int webhook_endpoint_target(const char *doc, size_t len, int64_t now_ms,
                            struct webhook_target *t)
{
    assert(t);
    memset(t, 0, sizeof *t);
    json_t *root = doc_load(doc, len);
    if (!root)
        return -1;
    const char *url = json_string_value(json_object_get(root, "url"));
    int rc = -1;
    if (url && url[0] && signing_secrets(json_object_get(root, "secrets"), now_ms, t) == 0 &&
        (t->url = strdup(url)) != NULL)
        rc = 0;
    json_decref(root);
    if (rc != 0)
        memset(t, 0, sizeof *t);
    return rc;
}

void webhook_target_free(struct webhook_target *t)
{
    if (!t)
        return;
    free(t->url);
    t->url = NULL;
    memset(t->secrets, 0, sizeof t->secrets); /* no secret left behind in freed memory */
    t->n_secrets = 0;
}

char *webhook_endpoint_disabled(const char *doc, size_t len, const char *reason,
                                size_t *out_len)
{
    assert(reason && out_len);
    json_t *root = doc_load(doc, len);
    if (!root)
        return NULL;
    char *text = NULL;
    if (json_is_string(json_object_get(root, "status")) &&
        json_object_set_new(root, "status", json_string("disabled")) == 0 &&
        json_object_set_new(root, "disabled_reason", json_string(reason)) == 0)
        text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (text)
        *out_len = strlen(text);
    return text;
}

/* All the event types there are. */
#define ALL_TYPES \
    ((unsigned)PAYMENT_EVENT_CREATED | (unsigned)PAYMENT_EVENT_UPDATED | (unsigned)PAYMENT_EVENT_DELETED)

unsigned webhook_endpoint_types(const char *doc, size_t len)
{
    json_t *root = doc_load(doc, len);
    if (!root)
        return 0;
    json_t *types = json_object_get(root, "event_types");
    unsigned mask = 0;
    size_t i;
    json_t *item;
    json_array_foreach(types, i, item) {
        const char *name = json_string_value(item);
        enum payment_event_type t;
        if (!name) {
            mask = 0;
            break;
        }
        if (strcmp(name, "*") == 0) {
            mask |= ALL_TYPES;
        } else if (payment_event_type_parse(name, strlen(name), &t) == 0) {
            mask |= (unsigned)t;
        } else {
            mask = 0; /* an unknown name: the document is not one api_doc.c wrote */
            break;
        }
    }
    json_decref(root);
    return mask;
}
