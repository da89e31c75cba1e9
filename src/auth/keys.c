#include "auth/keys.h"

#include "core/buf.h"
#include "core/hex.h"

#include <assert.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* One file's keys, immutable once published. */
struct key_set {
    size_t n;                       /* keys loaded */
    struct auth_principal *keys;    /* owned, n of them */
    struct key_set *retired_next;   /* the set replaced before this one, once retired */
};

struct auth_keys {
    _Atomic(struct key_set *) current; /* the set in force: swapped whole, never edited */
    pthread_mutex_t reload_lock;       /* held by one reload at a time, never by a reader */
    struct key_set *retired;           /* replaced sets, newest first: freed with k */
};

static int parse_digest(const char *hex, unsigned char out[32])
{
    if (strlen(hex) != 64)
        return -1;
    for (int i = 0; i < 32; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (unsigned char)(hi * 16 + lo);
    }
    return 0;
}

static int key_id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > AUTH_KEY_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return 0;
    }
    return 1;
}

/* Parses "org,org" or "*" into p.  Returns 0, or -1 with a reason. */
static int parse_orgs(const char *list, struct auth_principal *p, const char **why)
{
    if (strcmp(list, "*") == 0) {
        p->all_orgs = 1;
        return 0;
    }
    size_t n = 1;
    for (const char *c = list; *c; c++)
        n += *c == ',';
    p->orgs = calloc(n, sizeof *p->orgs);
    if (!p->orgs) {
        *why = "out of memory";
        return -1;
    }
    if (n > AUTH_MAX_ORGS) {
        *why = "at most " AUTH_MAX_ORGS_TEXT " organisations per key (or *)";
        return -1;
    }
    const char *s = list;
    for (size_t i = 0; i < n; i++) {
        size_t len = strcspn(s, ",");
        if (uuid_canonical(s, len, p->orgs[i]) != 0) {
            *why = "organisations must be UUIDs separated by commas, or *";
            return -1;
        }
        p->n_orgs++;
        s += len + (s[len] == ',');
    }
    return 0;
}

static void keys_free_entries(struct auth_principal *keys, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(keys[i].orgs);
    free(keys);
}

static void key_set_free(struct key_set *k)
{
    if (!k)
        return;
    keys_free_entries(k->keys, k->n);
    free(k);
}

void auth_keys_free(auth_keys *k)
{
    if (!k)
        return;
    key_set_free(atomic_load_explicit(&k->current, memory_order_acquire));
    for (struct key_set *r = k->retired, *next; r; r = next) {
        next = r->retired_next;
        key_set_free(r);
    }
    int rc = pthread_mutex_destroy(&k->reload_lock);
    assert(rc == 0); /* no reload runs while k is freed */
    (void)rc;
    free(k);
}

/* Reads the whole key file at path into a new set.  Returns 0, or -1 with
 * "FILE:LINE: reason" in errbuf and nothing allocated. */
static int key_set_read(const char *path, struct key_set **out, char *errbuf, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(errbuf, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct key_set *k = calloc(1, sizeof *k);
    size_t cap = 0;
    char line[8192];
    int lineno = 0, rc = 0;
    const char *why = NULL;
    while (k && !why && fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            why = "line too long";
            break;
        }
        char *save = NULL;
        char *id = strtok_r(line, " \t\r\n", &save);
        if (!id || id[0] == '#')
            continue;
        char *hex = strtok_r(NULL, " \t\r\n", &save);
        char *orgs = strtok_r(NULL, " \t\r\n", &save);
        char *access = orgs ? strtok_r(NULL, " \t\r\n", &save) : NULL;
        if (!hex || !orgs || (access && strtok_r(NULL, " \t\r\n", &save))) {
            why = "expected: <key id> <sha256 hex of the secret> <orgs or *> [read or write]";
            break;
        }
        if (access && strcmp(access, "read") != 0 && strcmp(access, "write") != 0) {
            why = "the fourth field, when given, must be read or write";
            break;
        }
        if (!key_id_ok(id)) {
            why = "key ids are 1..64 of A-Z a-z 0-9 - _ .";
            break;
        }
        for (size_t i = 0; i < k->n && !why; i++)
            if (strcmp(k->keys[i].id, id) == 0)
                why = "duplicate key id";
        if (why)
            break;
        if (k->n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            struct auth_principal *nk = realloc(k->keys, ncap * sizeof *nk);
            if (!nk) {
                why = "out of memory";
                break;
            }
            k->keys = nk;
            cap = ncap;
        }
        struct auth_principal *p = &k->keys[k->n];
        memset(p, 0, sizeof *p);
        k->n++;
        snprintf(p->id, sizeof p->id, "%s", id);
        p->write = !access || strcmp(access, "write") == 0;
        if (parse_digest(hex, p->digest) != 0)
            why = "the second field must be 64 hex digits (SHA-256 of the secret)";
        for (size_t i = 0; !why && i + 1 < k->n; i++)
            if (memcmp(k->keys[i].digest, p->digest, sizeof p->digest) == 0)
                why = "two keys share one secret";
        if (!why)
            parse_orgs(orgs, p, &why);
    }
    if (!k) {
        snprintf(errbuf, errlen, "%s: out of memory", path);
        rc = -1;
    } else if (why) {
        snprintf(errbuf, errlen, "%s:%d: %s", path, lineno, why);
        rc = -1;
    } else if (ferror(f)) {
        snprintf(errbuf, errlen, "%s: read error", path);
        rc = -1;
    } else if (k->n == 0) {
        snprintf(errbuf, errlen, "%s: no keys", path);
        rc = -1;
    }
    fclose(f);
    if (rc != 0) {
        key_set_free(k);
        return -1;
    }
    *out = k;
    return 0;
}

int auth_keys_load(const char *path, auth_keys **out, char *errbuf, size_t errlen)
{
    struct key_set *set = NULL;
    if (key_set_read(path, &set, errbuf, errlen) != 0)
        return -1;
    auth_keys *k = calloc(1, sizeof *k);
    if (!k || pthread_mutex_init(&k->reload_lock, NULL) != 0) {
        snprintf(errbuf, errlen, "%s: out of memory", path);
        free(k);
        key_set_free(set);
        return -1;
    }
    atomic_init(&k->current, set);
    *out = k;
    return 0;
}

/* The key of set whose id is id, or NULL. */
static const struct auth_principal *key_set_by_id(const struct key_set *set, const char *id)
{
    for (size_t i = 0; i < set->n; i++)
        if (strcmp(set->keys[i].id, id) == 0)
            return &set->keys[i];
    return NULL;
}

/* Whether a and b (keys of one id) grant the same: secret, organisations
 * and right to write. */
static int key_same_grant(const struct auth_principal *a, const struct auth_principal *b)
{
    if (memcmp(a->digest, b->digest, sizeof a->digest) != 0 || a->write != b->write ||
        a->all_orgs != b->all_orgs || a->n_orgs != b->n_orgs)
        return 0;
    for (size_t i = 0; i < a->n_orgs; i++)
        if (strcmp(a->orgs[i], b->orgs[i]) != 0)
            return 0;
    return 1;
}

/* Appends "; WORD id,id" to b for the keys of from that are missing from
 * other (changed 0) or are in other with another grant (changed 1): one
 * part of a reload's summary; nothing when no key qualifies. */
static void summary_append(struct buf *b, const char *word, const struct key_set *from,
                           const struct key_set *other, int changed)
{
    int first = 1;
    for (size_t i = 0; i < from->n; i++) {
        const struct auth_principal *same = key_set_by_id(other, from->keys[i].id);
        if (changed ? !same || key_same_grant(same, &from->keys[i]) : same != NULL)
            continue;
        buf_puts(b, first ? "; " : ",");
        if (first) {
            buf_puts(b, word);
            buf_puts(b, " ");
        }
        buf_puts(b, from->keys[i].id);
        first = 0;
    }
}

/* What replacing old by new changes, as "N keys; added a,b; removed c;
 * changed d" into msg (cut to msglen). */
static void reload_summary(const struct key_set *old, const struct key_set *new, char *msg,
                           size_t msglen)
{
    struct buf b = BUF_INIT;
    buf_printf(&b, "%zu key%s", new->n, new->n == 1 ? "" : "s");
    summary_append(&b, "added", new, old, 0);
    summary_append(&b, "removed", old, new, 0);
    summary_append(&b, "changed", new, old, 1);
    if (buf_failed(&b))
        snprintf(msg, msglen, "%zu keys (out of memory for their ids)", new->n);
    else
        snprintf(msg, msglen, "%.*s", (int)b.len, b.data);
    buf_free(&b);
}

int auth_keys_reload(auth_keys *k, const char *path, char *msg, size_t msglen)
{
    assert(k && path && msg && msglen > 0);
    struct key_set *set = NULL;
    if (key_set_read(path, &set, msg, msglen) != 0)
        return -1; /* nothing changed */
    int rc = pthread_mutex_lock(&k->reload_lock);
    assert(rc == 0);
    struct key_set *old = atomic_load_explicit(&k->current, memory_order_relaxed);
    reload_summary(old, set, msg, msglen);
    /* Release: a reader that loads set (acquire) sees it whole. */
    atomic_store_explicit(&k->current, set, memory_order_release);
    /* Retired, not freed: requests still hold principals of old. */
    old->retired_next = k->retired;
    k->retired = old;
    rc = pthread_mutex_unlock(&k->reload_lock);
    assert(rc == 0);
    (void)rc;
    return 0;
}

const struct auth_principal *auth_keys_find(const auth_keys *k, const char *secret, size_t len)
{
    unsigned char digest[32];
    unsigned int dlen = 0;
    if (!EVP_Digest(secret, len, digest, &dlen, EVP_sha256(), NULL) || dlen != sizeof digest)
        return NULL;
    /* Acquire: pairs with auth_keys_reload's release, so the set read is
     * the whole one published. */
    const struct key_set *set = atomic_load_explicit(&k->current, memory_order_acquire);
    assert(set && set->n > 0);
    const struct auth_principal *found = NULL;
    /* Every key is compared, in constant time, so that timing tells nothing
     * about which key (or how much of a digest) matched. */
    for (size_t i = 0; i < set->n; i++)
        if (CRYPTO_memcmp(digest, set->keys[i].digest, sizeof digest) == 0)
            found = &set->keys[i];
    return found;
}

/* The secret of an "Authorization: Bearer <secret>" header value, or NULL
 * when the value is absent or another scheme; *len is set. */
static const char *auth_bearer(const char *authorization, size_t *len)
{
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return NULL;
    const char *s = authorization + 7;
    while (*s == ' ')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n == 0)
        return NULL;
    *len = n;
    return s;
}

const void *auth_authenticate(void *k, const char *authorization)
{
    size_t len;
    const char *secret = auth_bearer(authorization, &len);
    return secret ? auth_keys_find(k, secret, len) : NULL;
}

const char *auth_authorize_write(const void *principal)
{
    const struct auth_principal *p = principal;
    assert(p); /* the server asks only about a principal it found */
    return p->write ? NULL : "this API key may only read";
}

int auth_allows(const struct auth_principal *p, const char *org)
{
    if (!p || p->all_orgs)
        return 1;
    for (size_t i = 0; i < p->n_orgs; i++)
        if (strcmp(p->orgs[i], org) == 0)
            return 1;
    return 0;
}

size_t auth_visible_orgs(const struct auth_principal *p, const char (*filter)[UUID_STR_LEN + 1],
                         size_t n_filter, char (*out)[UUID_STR_LEN + 1], int *all)
{
    size_t n = 0;
    *all = 0;
    if ((!p || p->all_orgs) && n_filter == 0) {
        *all = 1;
    } else if (n_filter == 0) {
        assert(p->n_orgs <= AUTH_MAX_ORGS); /* auth_keys_load's limit */
        for (; n < p->n_orgs; n++)
            memcpy(out[n], p->orgs[n], sizeof out[n]);
    } else {
        for (size_t i = 0; i < n_filter; i++)
            if (auth_allows(p, filter[i]))
                memcpy(out[n++], filter[i], sizeof out[0]);
    }
    return n;
}
