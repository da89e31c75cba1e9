/* keys: the API keys a server accepts and the organisations each may act
 * for, loaded from a file given by --api-keys.
 *
 * The file holds one key per line, three or four fields separated by spaces
 * or tabs:
 *
 *     <key id> <SHA-256 of the secret, 64 hex digits> <org>[,<org>...] | * [read | write]
 *
 * Blank lines and lines starting with '#' are ignored.  "*" lets the key act
 * for every organisation.  A "read" key may only read (GET and HEAD); a
 * "write" key, or one without the fourth field, may also write.  Secrets themselves never reach the server's disk
 * or logs: a request's bearer secret is hashed and compared, in constant
 * time, with every key's digest.
 *
 * Threads: auth_keys_find, auth_authenticate and the principal functions
 * are called from any thread (the HTTP threads) and take no lock: they
 * read the set of keys in force through one atomic pointer (acquire), a
 * set that is never changed once published.  auth_keys_reload (SIGHUP, in
 * main's thread) builds a whole new set, then swaps the pointer (release)
 * under a lock that only reloads take.  A replaced set is retired, not
 * freed, until auth_keys_free: a request may hold a principal of it (a
 * parked feed wait, a streamed CSV export) for as long as it runs.  Memory
 * thus grows by one set (a few hundred bytes a key) per good reload. */
#ifndef AUTH_KEYS_H
#define AUTH_KEYS_H

#include <stddef.h>

#include "core/uuid.h"

#define AUTH_KEY_ID_MAX 64
#define AUTH_MAX_ORGS 100 /* organisations per key; as many as a list filter takes */
#define AUTH_MAX_ORGS_TEXT "100"

typedef struct auth_keys auth_keys;

/* Who a request acts as. */
struct auth_principal {
    char id[AUTH_KEY_ID_MAX + 1];          /* the key's id, safe to log */
    unsigned char digest[32];              /* SHA-256 of its secret */
    int all_orgs;                          /* "*": every organisation */
    int write;                             /* may write, not only read (GET, HEAD) */
    size_t n_orgs;                         /* organisations it may act for */
    char (*orgs)[UUID_STR_LEN + 1];        /* lower-case UUIDs, owned */
};

/* Loads the key file.  Returns 0, or -1 with "FILE:LINE: reason" in errbuf
 * (unreadable file, malformed line, duplicate id, no key at all). */
int auth_keys_load(const char *path, auth_keys **out, char *errbuf, size_t errlen);

/* Frees k, its set in force and every retired one: no request may hold a
 * principal of k any more, and no reload run. */
void auth_keys_free(auth_keys *k);

/* Reads the key file at path whole, as auth_keys_load does, and puts it in
 * force in place of k's keys.  Returns 0 with what changed in msg ("N keys;
 * added ID,ID; removed ID; changed ID": a key of the same id with another
 * secret, organisations or access), or -1 with "FILE:LINE: reason" in msg
 * and k unchanged.  Principals found before stay valid (see above). */
int auth_keys_reload(auth_keys *k, const char *path, char *msg, size_t msglen);

/* The key whose secret is secret (len bytes), or NULL.  Takes the same time
 * whichever key matches, or none. */
const struct auth_principal *auth_keys_find(const auth_keys *k, const char *secret, size_t len);


/* The http_server_config authenticate callback for keys k (a const
 * auth_keys *): the principal of the request's bearer secret, or NULL. */
const void *auth_authenticate(void *k, const char *authorization);

/* The http_server_config authorize_write callback: NULL when principal (a
 * const struct auth_principal *) may write, else the reason it may not. */
const char *auth_authorize_write(const void *principal);

/* Whether p may act for org (a lower-case UUID).  A NULL principal (the
 * server runs without keys) may act for every organisation. */
int auth_allows(const struct auth_principal *p, const char *org);

/* The organisations a list may show p, given a filter of the organisations
 * filter[0..n_filter) (n_filter 0: none given): every organisation (*all
 * set, 0 returned) when p may act for all and no filter was given; else the
 * filter less those p may not act for, or all of p's when none was given,
 * copied into out (room for n_filter, and for AUTH_MAX_ORGS without a
 * filter), their count returned (0: the list shows nothing). */
size_t auth_visible_orgs(const struct auth_principal *p, const char (*filter)[UUID_STR_LEN + 1],
                         size_t n_filter, char (*out)[UUID_STR_LEN + 1], int *all);

#endif
