/* merge: RFC 7396 JSON Merge Patch.  The result is built from deep copies,
 * so it shares no value with either argument and the caller may change it
 * freely (the handlers strip nulls from it, for instance). */
#include "payment/merge.h"

/* Applies the object patch to target, an object the caller owns. */
static int merge_object(json_t *target, const json_t *patch)
{
    const char *key;
    size_t key_len;
    json_t *value;
    /* The iteration macros take a non-const object; they only read it. */
    json_t *p = (json_t *)patch;
    json_object_keylen_foreach(p, key, key_len, value) {
        if (json_is_null(value)) {
            (void)json_object_deln(target, key, key_len); /* absent is fine */
            continue;
        }
        if (json_is_object(value)) {
            json_t *child = json_object_getn(target, key, key_len);
            if (!json_is_object(child)) {
                /* RFC 7396: a non-object target member is replaced by {}. */
                child = json_object();
                if (json_object_setn_new(target, key, key_len, child) != 0)
                    return -1;
            }
            if (merge_object(child, value) != 0)
                return -1;
            continue;
        }
        if (json_object_setn_new(target, key, key_len, json_deep_copy(value)) != 0)
            return -1;
    }
    return 0;
}

json_t *merge_patch(const json_t *target, const json_t *patch)
{
    if (!json_is_object(patch))
        return json_deep_copy(patch);
    json_t *result = json_is_object(target) ? json_deep_copy(target) : json_object();
    if (!result)
        return NULL;
    if (merge_object(result, patch) != 0) {
        json_decref(result);
        return NULL;
    }
    return result;
}
