/* store_mongo_uri: the MongoDB store's URI.  Owns the split of a URI into
 * this store's own options (paymentdCollection, paymentdWaitForStore) and
 * what libmongoc parses, the checks of database and collection names, and
 * the defaults applied where the URI sets none: timeouts, write concern
 * majority with journal, read concern majority; w=0 is refused. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "payment/store_mongo.h"

#define MONGO_DEFAULT_DB "payment"
#define MONGO_DEFAULT_COLLECTION "payments"
#define MONGO_OPT_COLLECTION "paymentdCollection"
#define MONGO_SELECTION_TIMEOUT_MS 2000
#define MONGO_CONNECT_TIMEOUT_MS 2000
#define MONGO_SOCKET_TIMEOUT_MS 5000

/* The URI split into what libmongoc parses and this store's own options. */
struct mongo_uri_opts {
    char *rest;                     /* the URI without this store's options, owned */
    char coll[MONGO_NAME_MAX + 1];  /* paymentdCollection */
    int wait;                       /* paymentdWaitForStore=true */
};

/* A collection name MongoDB accepts and a shell user can type. */
static int mongo_name_ok(const char *s, size_t len)
{
    if (len == 0 || len > MONGO_NAME_MAX || strncmp(s, "system.", 7) == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

/* Takes one "key=value" option of the query string: returns 1 when it is
 * this store's (and records it), 0 when it is libmongoc's, -1 when invalid. */
static int mongo_uri_own_option(struct mongo_uri_opts *o, const char *opt, size_t len,
                                char *errbuf, size_t errlen)
{
    const char *eq = memchr(opt, '=', len);
    size_t klen = eq ? (size_t)(eq - opt) : len;
    const char *v = eq ? eq + 1 : opt + len;
    size_t vlen = (size_t)(opt + len - v);
    if (klen == strlen(MONGO_OPT_COLLECTION) && strncasecmp(opt, MONGO_OPT_COLLECTION, klen) == 0) {
        if (!mongo_name_ok(v, vlen)) {
            store_errf(errbuf, errlen,
                       "MongoDB URI: %s must be 1 to %d letters, digits, '_', '-' or '.'",
                       MONGO_OPT_COLLECTION, MONGO_NAME_MAX);
            return -1;
        }
        memcpy(o->coll, v, vlen);
        o->coll[vlen] = '\0';
        return 1;
    }
    if (klen == strlen(MONGO_OPT_WAIT) && strncasecmp(opt, MONGO_OPT_WAIT, klen) == 0) {
        if (vlen == 4 && strncasecmp(v, "true", 4) == 0) {
            o->wait = 1;
        } else if (vlen == 5 && strncasecmp(v, "false", 5) == 0) {
            o->wait = 0;
        } else {
            store_errf(errbuf, errlen, "MongoDB URI: %s must be true or false", MONGO_OPT_WAIT);
            return -1;
        }
        return 1;
    }
    return 0;
}

/* Splits uri into o.  Returns 0, or -1 with a reason. */
static int mongo_uri_split(const char *uri, struct mongo_uri_opts *o, char *errbuf, size_t errlen)
{
    snprintf(o->coll, sizeof o->coll, "%s", MONGO_DEFAULT_COLLECTION);
    o->wait = 0;
    size_t n = strlen(uri);
    o->rest = malloc(n + 1);
    if (!o->rest) {
        store_errf(errbuf, errlen, "out of memory");
        return -1;
    }
    const char *q = strchr(uri, '?');
    size_t len = q ? (size_t)(q - uri) : n;
    memcpy(o->rest, uri, len);
    size_t kept = 0;
    for (const char *p = q ? q + 1 : NULL; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t olen = amp ? (size_t)(amp - p) : strlen(p);
        int own = olen ? mongo_uri_own_option(o, p, olen, errbuf, errlen) : 1;
        if (own < 0)
            return -1;
        if (!own) {
            o->rest[len++] = kept++ ? '&' : '?';
            memcpy(o->rest + len, p, olen);
            len += olen;
        }
        p = amp ? amp + 1 : NULL;
    }
    o->rest[len] = '\0';
    return 0;
}

/* "host:port,host:port" of the URI, for messages (never the credentials). */
void mongo_hosts(const mongoc_uri_t *uri, char *out, size_t outlen)
{
    size_t len = 0;
    out[0] = '\0';
    for (const mongoc_host_list_t *h = mongoc_uri_get_hosts(uri); h && len < outlen; h = h->next) {
        int n = snprintf(out + len, outlen - len, "%s%s", len ? "," : "", h->host_and_port);
        if (n < 0)
            break;
        len += (size_t)n;
    }
}

/* A timeout option: the URI's, else def.  Returns it, or -1 if it cannot be
 * set. */
static int32_t mongo_uri_timeout(mongoc_uri_t *uri, const char *key, int32_t def)
{
    if (!mongoc_uri_has_option(uri, key) && !mongoc_uri_set_option_as_int32(uri, key, def))
        return -1;
    return mongoc_uri_get_option_as_int32(uri, key, def);
}

/* Applies this store's defaults to what the URI leaves unset.  Returns 0,
 * or -1 with a reason. */
static int mongo_uri_defaults(mongoc_uri_t *uri, int32_t *selection_ms, char *errbuf,
                              size_t errlen)
{
    int32_t sel = mongo_uri_timeout(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS,
                                    MONGO_SELECTION_TIMEOUT_MS);
    int32_t sock = mongo_uri_timeout(uri, MONGOC_URI_SOCKETTIMEOUTMS, MONGO_SOCKET_TIMEOUT_MS);
    int32_t conn = mongo_uri_timeout(uri, MONGOC_URI_CONNECTTIMEOUTMS, MONGO_CONNECT_TIMEOUT_MS);
    if (sel <= 0 || sock < 0 || conn < 0) {
        store_errf(errbuf, errlen, "MongoDB URI: bad timeout options");
        return -1;
    }
    *selection_ms = sel;
    const mongoc_write_concern_t *wc = mongoc_uri_get_write_concern(uri);
    if (mongoc_write_concern_is_default(wc)) {
        mongoc_write_concern_t *maj = mongoc_write_concern_new();
        if (!maj) {
            store_errf(errbuf, errlen, "out of memory");
            return -1;
        }
        mongoc_write_concern_set_wmajority(maj, sock ? sock / 5 * 4 : 0);
        mongoc_write_concern_set_journal(maj, true);
        mongoc_uri_set_write_concern(uri, maj); /* copies it */
        mongoc_write_concern_destroy(maj);
    } else if (!mongoc_write_concern_is_acknowledged(wc)) {
        store_errf(errbuf, errlen, "MongoDB URI: w=0 is refused: a reply must follow an "
                                   "acknowledged write");
        return -1;
    }
    const mongoc_read_concern_t *rc = mongoc_uri_get_read_concern(uri);
    if (!mongoc_read_concern_get_level(rc)) {
        mongoc_read_concern_t *maj = mongoc_read_concern_new();
        bool ok = maj && mongoc_read_concern_set_level(maj, MONGOC_READ_CONCERN_LEVEL_MAJORITY);
        if (ok)
            mongoc_uri_set_read_concern(uri, maj); /* copies it */
        mongoc_read_concern_destroy(maj); /* NULL is a no-op */
        if (!ok) {
            store_errf(errbuf, errlen, "MongoDB URI: cannot set the read concern");
            return -1;
        }
    }
    return 0;
}

/* A database name MongoDB accepts. */
static int mongo_db_ok(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 63)
        return 0;
    return strpbrk(s, "/\\. \"$*<>:|?") == NULL;
}

/* Parses the URI into st: database, collection, defaults.  Returns 0, or a
 * store error with a reason. */
int mongo_configure(struct mongo_store *st, const char *uri, int *wait, char *errbuf,
                    size_t errlen)
{
    struct mongo_uri_opts o;
    if (mongo_uri_split(uri, &o, errbuf, errlen) != 0) {
        free(o.rest);
        return PAYMENT_STORE_EURI;
    }
    bson_error_t e;
    st->uri = mongoc_uri_new_with_error(o.rest, &e);
    free(o.rest);
    if (!st->uri) {
        store_errf(errbuf, errlen, "bad MongoDB URI: %s", e.message);
        return PAYMENT_STORE_EURI;
    }
    const char *db = mongoc_uri_get_database(st->uri);
    if (!db)
        db = MONGO_DEFAULT_DB;
    if (!mongo_db_ok(db)) {
        store_errf(errbuf, errlen, "MongoDB URI: bad database name \"%.64s\"", db);
        return PAYMENT_STORE_EURI;
    }
    snprintf(st->db, sizeof st->db, "%s", db);
    snprintf(st->coll, sizeof st->coll, "%s", o.coll);
    snprintf(st->ops_coll, sizeof st->ops_coll, "%s" MONGO_OPS_SUFFIX, o.coll);
    snprintf(st->parts_coll, sizeof st->parts_coll, "%s" MONGO_PARTS_SUFFIX, o.coll);
    snprintf(st->events_coll, sizeof st->events_coll, "%s" MONGO_EVENTS_SUFFIX, o.coll);
    snprintf(st->feed_id, sizeof st->feed_id, "%s" MONGO_FEED_SUFFIX, o.coll);
    *wait = o.wait;
    int32_t selection_ms = 0;
    if (mongo_uri_defaults(st->uri, &selection_ms, errbuf, errlen) != 0)
        return PAYMENT_STORE_EURI;
    st->stale_us = (int64_t)selection_ms * 1000;
    return PAYMENT_STORE_OK;
}
