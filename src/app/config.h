/* config: the server's configuration, from command-line flags and the
 * environment (a flag wins over its variable).  Built once in main.c and
 * read-only afterwards: the only configuration state of the process. */
#ifndef APP_CONFIG_H
#define APP_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/log.h"

#define CONFIG_HOST_MAX 256
#define CONFIG_URI_MAX 1024

struct config {
    char host[CONFIG_HOST_MAX];        /* --listen address part */
    uint16_t port;                     /* --listen port part */
    char store[CONFIG_URI_MAX];        /* --store URI */
    unsigned threads;                  /* --threads, >= 1 */
    size_t max_body;                   /* --max-body, bytes */
    char public_url[CONFIG_URI_MAX];   /* --public-url without a trailing '/', or "" */
    enum log_level log_level;          /* --log-level */
    char log_file[CONFIG_URI_MAX];     /* --log-file, or "" for stderr */
    unsigned client_timeout_s;         /* --client-timeout, seconds */
    unsigned shutdown_grace_ms;        /* how long in-flight requests get on SIGTERM */
    char api_keys[CONFIG_URI_MAX];     /* --api-keys file, or "" to run open */
    unsigned max_connections;          /* --max-connections */
    double rate_limit;                 /* --rate-limit, requests/s per caller; 0: none */
    int64_t idempotency_ttl_ms;        /* --idempotency-ttl: records kept at least this long */
    int64_t event_retention_ms;        /* --event-retention: the feed lists events this long */
    int64_t history_retention_ms;      /* --history-retention: histories kept; 0: forever */
    char mongo_collection[128];        /* --mongo-collection, or "" for the store's default */
    int wait_for_store;                /* --wait-for-store: start even if the store is down */
    int store_shared;                  /* --store-shared: other programs may open the SQLite file */
    char broker[CONFIG_URI_MAX];       /* --broker nats://..., or "": writes are synchronous */
    int async_always;                  /* --async-writes always (else only with Prefer) */
    unsigned partitions;               /* --partitions of the operation stream */
    int broker_replicas;               /* --broker-replicas of the stream and buckets */
    int worker;                        /* `paymentd worker`: apply operations, serve no HTTP */
    char worker_id[64];                /* --worker-id, or "" for host-pid */
    int backup;                        /* `paymentd backup FILE`: copy the store, serve nothing */
    char backup_file[CONFIG_URI_MAX];  /* its FILE */
    int migrate;                       /* `paymentd migrate`: copy --from into --to, serve nothing */
    char migrate_from[CONFIG_URI_MAX]; /* its --from URI */
    char migrate_to[CONFIG_URI_MAX];   /* its --to URI */
    unsigned migrate_page;             /* its --page: items a page read and written holds */
    unsigned max_apply_attempts;       /* --max-apply-attempts before an operation is poison */
    int repartition;                   /* --repartition: record --partitions over another count */
    int relay;                         /* --relay: with --broker, publish the committed events */
    int webhooks;                      /* --webhooks: deliver webhooks from this process */
    int64_t webhook_timeout_ms;        /* --webhook-timeout: a receiver's time to answer */
    char webhook_schedule[512];        /* --webhook-retry-schedule, checked by webhook/deliver.h */
    int64_t webhook_disable_after_ms;  /* --webhook-disable-after: failing this long disables */
    int webhook_allow_private;         /* --webhook-allow-private: private destinations allowed */
    int help;                          /* --help was given */
    int version;                       /* --version (-V) was given */
};

enum config_result {
    CONFIG_OK = 0,
    CONFIG_EINVAL = -1, /* a bad flag or value; the reason is in errbuf */
};

/* Fills cfg from defaults, then env (getenv-like lookup, may be NULL for
 * none), then argv.  Returns CONFIG_OK or CONFIG_EINVAL with one line in
 * errbuf. */
int config_parse(struct config *cfg, int argc, char **argv, const char *(*env)(const char *),
                 char *errbuf, size_t errlen);

/* The store URI to open: --store, with the MongoDB options of
 * --mongo-collection and --wait-for-store added.  Returns 0, or -1 with a
 * reason (those flags with a store that is not MongoDB, --store-shared with
 * one that is MongoDB or PostgreSQL, or too long). */
int config_store_uri(const struct config *cfg, char *out, size_t cap, char *errbuf,
                     size_t errlen);

/* Copies a store URI for logs, with any password replaced by "***": the
 * user information's ("mongodb://user:***@host/db") and every password=
 * option's ("postgres://host/db?password=***&sslmode=require"). */
void config_redact_uri(const char *uri, char *out, size_t cap);

/* Writes the --help text. */
void config_usage(FILE *out);

#endif
