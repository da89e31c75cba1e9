#include "payment/idem.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/sync.h"

/* Claims are few (requests in flight at once), so a list is enough. */
struct idem_claim {
    struct idem_claim *next;
    char *scope_key; /* scope, NUL, key: owned */
    size_t len;      /* bytes of scope_key including both NULs */
};

struct idem_inflight {
    pthread_mutex_t mu;       /* guards claims */
    struct idem_claim *claims;
};

int idem_key_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if ((unsigned char)s[n] < 0x21 || (unsigned char)s[n] > 0x7e || n >= IDEM_KEY_MAX)
            return 0;
    return n > 0;
}

static int digest_field(EVP_MD_CTX *ctx, const void *p, size_t len)
{
    uint64_t n = len;
    unsigned char prefix[8];
    for (int i = 0; i < 8; i++)
        prefix[i] = (unsigned char)(n >> (56 - 8 * i));
    return EVP_DigestUpdate(ctx, prefix, sizeof prefix) && EVP_DigestUpdate(ctx, p, len);
}

int idem_fingerprint(const char *method, const char *path, const char *body, size_t body_len,
                     char out[IDEM_FINGERPRINT_LEN + 1])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
             digest_field(ctx, method, strlen(method)) && digest_field(ctx, path, strlen(path)) &&
             digest_field(ctx, body, body_len) && EVP_DigestFinal_ex(ctx, md, &mdlen) &&
             mdlen == sizeof md;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return -1;
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}

idem_inflight *idem_inflight_new(void)
{
    idem_inflight *t = calloc(1, sizeof *t);
    if (t && pthread_mutex_init(&t->mu, NULL) != 0) {
        free(t);
        return NULL;
    }
    return t;
}

void idem_inflight_free(idem_inflight *t)
{
    if (!t)
        return;
    while (t->claims) {
        struct idem_claim *c = t->claims;
        t->claims = c->next;
        free(c->scope_key);
        free(c);
    }
    pthread_mutex_destroy(&t->mu);
    free(t);
}

/* scope NUL key NUL, in a new allocation. */
static char *claim_name(const char *scope, const char *key, size_t *len)
{
    size_t a = strlen(scope) + 1, b = strlen(key) + 1;
    char *s = malloc(a + b);
    if (s) {
        memcpy(s, scope, a);
        memcpy(s + a, key, b);
    }
    *len = a + b;
    return s;
}

int idem_inflight_claim(idem_inflight *t, const char *scope, const char *key)
{
    size_t len;
    char *name = claim_name(scope, key, &len);
    struct idem_claim *c = malloc(sizeof *c);
    if (!name || !c) {
        free(name);
        free(c);
        return -1;
    }
    if (pthread_mutex_lock(&t->mu) != 0) {
        free(name);
        free(c);
        return -1;
    }
    for (struct idem_claim *o = t->claims; o; o = o->next) {
        if (o->len == len && memcmp(o->scope_key, name, len) == 0) {
            sync_unlock(&t->mu);
            free(name);
            free(c);
            return 1;
        }
    }
    c->scope_key = name;
    c->len = len;
    c->next = t->claims;
    t->claims = c;
    sync_unlock(&t->mu);
    return 0;
}

void idem_inflight_release(idem_inflight *t, const char *scope, const char *key)
{
    size_t len;
    char *name = claim_name(scope, key, &len);
    if (!name || pthread_mutex_lock(&t->mu) != 0) {
        free(name);
        return; /* the claim stays: that key answers 409 until restart */
    }
    for (struct idem_claim **p = &t->claims; *p; p = &(*p)->next) {
        struct idem_claim *c = *p;
        if (c->len == len && memcmp(c->scope_key, name, len) == 0) {
            *p = c->next;
            free(c->scope_key);
            free(c);
            break;
        }
    }
    sync_unlock(&t->mu);
    free(name);
}
