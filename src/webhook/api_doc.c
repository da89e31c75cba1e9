/* api_doc: the stored document of an endpoint (endpoint.h's top comment)
 * as the API makes and changes it: a new endpoint's, a merge patch's
 * result, a rotation's.  Secrets come from OpenSSL's RAND_bytes and go
 * nowhere but the document and the one answer that shows each.
 *
 * Pure functions but for the random source: any thread. */
#include "webhook/api_internal.h"

#include <assert.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <string.h>

#include "payment/event.h"

_Static_assert(6 + 4 * ((WEBHOOK_SECRET_BYTES + 2) / 3) <= WEBHOOK_SECRET_MAX,
               "a new secret fits WEBHOOK_SECRET_MAX");
_Static_assert(WEBHOOK_SECRET_BYTES >= 24 && WEBHOOK_SECRET_BYTES <= 64,
               "secrets of 24 to 64 bytes, as the issue says");

int wh_secret_new(char out[WEBHOOK_SECRET_MAX + 1])
{
    unsigned char key[WEBHOOK_SECRET_BYTES];
    if (RAND_bytes(key, sizeof key) != 1)
        return -1;
    memcpy(out, "whsec_", 6);
    int n = EVP_EncodeBlock((unsigned char *)out + 6, key, (int)sizeof key);
    OPENSSL_cleanse(key, sizeof key);
    assert(n > 0 && 6 + n <= WEBHOOK_SECRET_MAX);
    out[6 + n] = '\0';
    return 0;
}

/* {"secret", "created_ms", "expires_ms"}: a new reference, or NULL. */
static json_t *secret_item(const char *secret, int64_t created_ms, int64_t expires_ms)
{
    return json_pack("{s:s, s:I, s:I}", "secret", secret, "created_ms", (json_int_t)created_ms,
                     "expires_ms", (json_int_t)expires_ms);
}

json_t *wh_doc_new(const struct wh_fields *f, const char *secret, int64_t now_ms)
{
    assert((f->given & (WH_F_URL | WH_F_TYPES)) == (WH_F_URL | WH_F_TYPES));
    json_t *secrets = json_array();
    json_t *doc = json_object();
    int rc = !secrets || !doc;
    rc = rc || json_array_append_new(secrets, secret_item(secret, now_ms, 0)) != 0;
    rc = rc || json_object_set_new(doc, "url", json_string(f->url)) != 0;
    rc = rc || json_object_set_new(doc, "event_types", json_deep_copy(f->event_types)) != 0;
    rc = rc || json_object_set_new(doc, "description",
                                   f->description ? json_deep_copy(f->description)
                                                  : json_null()) != 0;
    rc = rc || json_object_set_new(doc, "status", json_string("enabled")) != 0;
    rc = rc || json_object_set_new(doc, "disabled_reason", json_null()) != 0;
    rc = rc || json_object_set(doc, "secrets", secrets) != 0;
    json_decref(secrets);
    if (rc) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

int wh_doc_patch(json_t *doc, const struct wh_fields *f)
{
    int rc = 0;
    if (f->given & WH_F_URL)
        rc |= json_object_set_new(doc, "url", json_string(f->url));
    if (f->given & WH_F_TYPES)
        rc |= json_object_set_new(doc, "event_types", json_deep_copy(f->event_types));
    if (f->given & WH_F_DESCRIPTION)
        rc |= json_object_set_new(doc, "description", json_deep_copy(f->description));
    if ((f->given & WH_F_STATUS) && f->enabled) {
        rc |= json_object_set_new(doc, "status", json_string("enabled"));
        rc |= json_object_set_new(doc, "disabled_reason", json_null());
    } else if ((f->given & WH_F_STATUS) && wh_doc_enabled(doc)) {
        /* Disabling a disabled endpoint keeps the reason it has (paymentd's,
         * say), which tells more than the caller's repeat. */
        rc |= json_object_set_new(doc, "status", json_string("disabled"));
        rc |= json_object_set_new(doc, "disabled_reason", json_string(WH_DISABLED_BY_CALLER));
    }
    return rc ? -1 : 0;
}

int wh_doc_rotate(json_t *doc, const char *secret, int64_t now_ms)
{
    json_t *old = json_object_get(doc, "secrets");
    json_t *current = json_array_get(old, 0);
    const char *previous = json_string_value(json_object_get(current, "secret"));
    json_t *created = json_object_get(current, "created_ms");
    if (!previous || !json_is_integer(created))
        return -1;
    json_t *secrets = json_array();
    int rc = !secrets;
    rc = rc || json_array_append_new(secrets, secret_item(secret, now_ms, 0)) != 0;
    rc = rc || json_array_append_new(secrets,
                                     secret_item(previous, json_integer_value(created),
                                                 now_ms + WEBHOOK_ROTATION_OVERLAP_MS)) != 0;
    rc = rc || json_object_set(doc, "secrets", secrets) != 0; /* frees old, and previous */
    json_decref(secrets);
    return rc ? -1 : 0;
}

int wh_doc_enabled(json_t *doc)
{
    const char *s = json_string_value(json_object_get(doc, "status"));
    return s && strcmp(s, "enabled") == 0;
}

unsigned wh_types_mask(json_t *event_types)
{
    unsigned mask = 0;
    size_t i;
    json_t *item;
    json_array_foreach(event_types, i, item) {
        const char *name = json_string_value(item);
        enum payment_event_type t;
        if (name && strcmp(name, "*") == 0)
            mask |= WH_ALL_TYPES;
        else if (name && payment_event_type_parse(name, strlen(name), &t) == 0)
            mask |= (unsigned)t;
    }
    return mask;
}
