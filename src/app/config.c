#include "app/config.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "app/migrate.h"
#include "core/uri.h"
#include "webhook/deliver.h"

/* One flag: its name, its environment variable, and how to apply a value. */
struct option_def {
    const char *flag;  /* "--listen" */
    const char *env;   /* "PAYMENTD_LISTEN", or NULL */
    const char *arg;   /* placeholder in --help */
    const char *help;  /* one line */
    int (*apply)(struct config *cfg, const char *value, char *errbuf, size_t errlen);
};

/* A value as quoted in an error message: control characters shown as '?'
 * and long values cut, so that every message stays one short line. */
static const char *shown(const char *v, char out[72])
{
    size_t i = 0;
    for (; v[i] && i < 64; i++)
        out[i] = ((unsigned char)v[i] < 0x20 || v[i] == 0x7f) ? '?' : v[i];
    if (v[i])
        out[i++] = '.', out[i++] = '.', out[i++] = '.';
    out[i] = '\0';
    return out;
}

static int parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
    if (!*s)
        return -1;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return -1;
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno || v > max)
        return -1;
    *out = v;
    return 0;
}

static int apply_listen(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    char q[72];
    const char *colon = strrchr(v, ':');
    unsigned long long port;
    const char *host = v;
    size_t hlen = colon ? (size_t)(colon - v) : 0;
    if (hlen >= 2 && v[0] == '[' && v[hlen - 1] == ']') {
        host = v + 1;
        hlen -= 2;
    }
    if (!colon || hlen == 0 || hlen >= CONFIG_HOST_MAX || parse_uint(colon + 1, 65535, &port)) {
        snprintf(errbuf, errlen, "--listen: expected ADDR:PORT, got \"%s\"", shown(v, q));
        return -1;
    }
    memcpy(cfg->host, host, hlen);
    cfg->host[hlen] = '\0';
    cfg->port = (uint16_t)port;
    return 0;
}

static int apply_store(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    if (!*v || strlen(v) >= CONFIG_URI_MAX) {
        snprintf(errbuf, errlen, "--store: expected a store URI such as sqlite:./data/payments.db");
        return -1;
    }
    snprintf(cfg->store, sizeof cfg->store, "%s", v);
    return 0;
}

/* A count given to flag: 1..max (unit, "" or " bytes", follows max in the
 * message).  Returns 0 with *out set, or -1 with the reason in errbuf. */
static int apply_count(const char *flag, const char *v, unsigned long long max, const char *unit,
                       unsigned long long *out, char *errbuf, size_t errlen)
{
    char q[72];
    if (parse_uint(v, max, out) || *out == 0) {
        snprintf(errbuf, errlen, "%s: expected 1..%llu%s, got \"%s\"", flag, max, unit,
                 shown(v, q));
        return -1;
    }
    return 0;
}

static int apply_threads(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    unsigned long long n;
    if (apply_count("--threads", v, 1024, "", &n, errbuf, errlen) != 0)
        return -1;
    cfg->threads = (unsigned)n;
    return 0;
}

static int apply_max_body(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    unsigned long long n;
    if (apply_count("--max-body", v, 64ull << 20, " bytes", &n, errbuf, errlen) != 0)
        return -1;
    cfg->max_body = (size_t)n;
    return 0;
}

static int apply_public_url(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    char q[72];
    size_t n = strlen(v);
    while (n > 0 && v[n - 1] == '/')
        n--;
    size_t scheme = strncmp(v, "http://", 7) == 0 ? 7 : strncmp(v, "https://", 8) == 0 ? 8 : 0;
    if (n == 0 && !*v) {
        cfg->public_url[0] = '\0'; /* explicitly none: links are paths */
        return 0;
    }
    if (!scheme || n <= scheme || v[scheme] == '/' || n >= CONFIG_URI_MAX) {
        snprintf(errbuf, errlen, "--public-url: expected http://HOST[...] or https://HOST[...], got \"%s\"",
                 shown(v, q));
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] <= ' ' || v[i] == '"' || v[i] == '\\' || v[i] == 0x7f) {
            snprintf(errbuf, errlen, "--public-url: invalid character in \"%s\"", shown(v, q));
            return -1;
        }
    memcpy(cfg->public_url, v, n);
    cfg->public_url[n] = '\0';
    return 0;
}

static int apply_log_level(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    char q[72];
    if (log_level_parse(v, &cfg->log_level) != 0) {
        snprintf(errbuf, errlen, "--log-level: expected debug, info, warn or error, got \"%s\"", shown(v, q));
        return -1;
    }
    return 0;
}

static int apply_log_file(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    if (v[0] == '\0' || strlen(v) >= CONFIG_URI_MAX) {
        snprintf(errbuf, errlen, "--log-file: expected a file name (at most %d bytes)",
                 CONFIG_URI_MAX - 1);
        return -1;
    }
    snprintf(cfg->log_file, sizeof cfg->log_file, "%s", v);
    return 0;
}

static int apply_client_timeout(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    unsigned long long n;
    if (apply_count("--client-timeout", v, 3600, " seconds", &n, errbuf, errlen) != 0)
        return -1;
    cfg->client_timeout_s = (unsigned)n;
    return 0;
}

static int apply_api_keys(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    if (strlen(v) >= CONFIG_URI_MAX) {
        snprintf(errbuf, errlen, "--api-keys: path too long");
        return -1;
    }
    snprintf(cfg->api_keys, sizeof cfg->api_keys, "%s", v);
    return 0;
}

static int apply_max_connections(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    unsigned long long n;
    if (apply_count("--max-connections", v, 1000000, "", &n, errbuf, errlen) != 0)
        return -1;
    cfg->max_connections = (unsigned)n;
    return 0;
}

static int apply_rate_limit(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    char q[72], digits[16];
    size_t n = strcspn(v, "/");
    unsigned long long rate;
    if (n == 0 || n >= sizeof digits || (v[n] && strcmp(v + n, "/s") != 0)) {
        snprintf(errbuf, errlen, "--rate-limit: expected N/s, got \"%s\"", shown(v, q));
        return -1;
    }
    memcpy(digits, v, n);
    digits[n] = '\0';
    if (parse_uint(digits, 1000000, &rate)) {
        snprintf(errbuf, errlen, "--rate-limit: expected N/s with N in 0..1000000, got \"%s\"",
                 shown(v, q));
        return -1;
    }
    cfg->rate_limit = (double)rate;
    return 0;
}

/* A duration into *ms: N with an optional unit s, m, h or d (seconds by
 * default), positive, at most ten years; or, with forever_ok, "forever"
 * (*ms = 0).  flag names it in the message. */
static int parse_duration(const char *flag, const char *v, int forever_ok, int64_t *ms,
                          char *errbuf, size_t errlen)
{
    char q[72], digits[24];
    if (forever_ok && strcmp(v, "forever") == 0) {
        *ms = 0;
        return 0;
    }
    size_t n = strspn(v, "0123456789");
    long long unit = 1000;
    const char *u = v + n;
    if (*u == 's')
        unit = 1000;
    else if (*u == 'm')
        unit = 60 * 1000LL;
    else if (*u == 'h')
        unit = 3600 * 1000LL;
    else if (*u == 'd')
        unit = 86400 * 1000LL;
    else if (*u)
        unit = 0;
    unsigned long long count;
    if (n == 0 || n >= sizeof digits || unit == 0 || (*u && u[1])) {
        snprintf(errbuf, errlen, "%s: expected N[s|m|h|d]%s, got \"%s\"", flag,
                 forever_ok ? " or forever" : "", shown(v, q));
        return -1;
    }
    memcpy(digits, v, n);
    digits[n] = '\0';
    if (parse_uint(digits, 3650ull * 86400, &count) || count == 0) {
        snprintf(errbuf, errlen, "%s: expected a positive duration, got \"%s\"", flag,
                 shown(v, q));
        return -1;
    }
    *ms = (int64_t)count * unit;
    return 0;
}

static int apply_idempotency_ttl(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    return parse_duration("--idempotency-ttl", v, 0, &cfg->idempotency_ttl_ms, errbuf, errlen);
}

static int apply_event_retention(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    return parse_duration("--event-retention", v, 0, &cfg->event_retention_ms, errbuf, errlen);
}

static int apply_history_retention(struct config *cfg, const char *v, char *errbuf,
                                   size_t errlen)
{
    return parse_duration("--history-retention", v, 1, &cfg->history_retention_ms, errbuf,
                          errlen);
}

static int apply_mongo_collection(struct config *cfg, const char *v, char *errbuf,
                                  size_t errlen)
{
    char q[72];
    size_t n = strlen(v);
    if (n == 0 || n >= sizeof cfg->mongo_collection || strcspn(v, "$&?#=/ \t\r\n") != n) {
        snprintf(errbuf, errlen, "--mongo-collection: expected a collection name, got \"%s\"",
                 shown(v, q));
        return -1;
    }
    memcpy(cfg->mongo_collection, v, n + 1);
    return 0;
}

/* A true|false (or 1|0) flag's value into *out: 0, or -1 with a reason. */
static int apply_bool(const char *flag, const char *v, int *out, char *errbuf, size_t errlen)
{
    char q[72];
    if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0) {
        *out = 1;
    } else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0) {
        *out = 0;
    } else {
        snprintf(errbuf, errlen, "%s: expected true or false, got \"%s\"", flag, shown(v, q));
        return -1;
    }
    return 0;
}

static int apply_wait_for_store(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    return apply_bool("--wait-for-store", v, &cfg->wait_for_store, errbuf, errlen);
}

static int apply_store_shared(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    return apply_bool("--store-shared", v, &cfg->store_shared, errbuf, errlen);
}

static int apply_broker(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    char q[72];
    if (strncmp(v, "nats://", 7) != 0 || strlen(v) >= sizeof cfg->broker) {
        snprintf(errbuf, errlen, "--broker: expected nats://HOST:PORT[,...], got \"%s\"",
                 shown(v, q));
        return -1;
    }
    snprintf(cfg->broker, sizeof cfg->broker, "%s", v);
    return 0;
}

static int apply_async_writes(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    char q[72];
    if (strcmp(v, "always") == 0) {
        cfg->async_always = 1;
    } else if (strcmp(v, "prefer") == 0) {
        cfg->async_always = 0;
    } else {
        snprintf(errbuf, errlen, "--async-writes: expected prefer or always, got \"%s\"",
                 shown(v, q));
        return -1;
    }
    return 0;
}

static int apply_partitions(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    unsigned long long n;
    if (apply_count("--partitions", v, 1024, "", &n, errbuf, errlen) != 0)
        return -1;
    cfg->partitions = (unsigned)n;
    return 0;
}

static int apply_broker_replicas(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    unsigned long long n;
    if (apply_count("--broker-replicas", v, 5, "", &n, errbuf, errlen) != 0)
        return -1;
    cfg->broker_replicas = (int)n;
    return 0;
}

static int apply_worker_id(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    char q[72];
    size_t n = strlen(v);
    if (n == 0 || n >= sizeof cfg->worker_id ||
        strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != n) {
        snprintf(errbuf, errlen, "--worker-id: expected 1..63 of A-Z a-z 0-9 - _ ., got \"%s\"",
                 shown(v, q));
        return -1;
    }
    memcpy(cfg->worker_id, v, n + 1);
    return 0;
}

static int apply_max_apply_attempts(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    unsigned long long n;
    if (apply_count("--max-apply-attempts", v, 1000, "", &n, errbuf, errlen) != 0)
        return -1;
    cfg->max_apply_attempts = (unsigned)n;
    return 0;
}

static int apply_repartition(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    return apply_bool("--repartition", v, &cfg->repartition, errbuf, errlen);
}

static int apply_relay(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    return apply_bool("--relay", v, &cfg->relay, errbuf, errlen);
}

static int apply_webhooks(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    return apply_bool("--webhooks", v, &cfg->webhooks, errbuf, errlen);
}

static int apply_webhook_timeout(struct config *cfg, const char *v, char *errbuf, size_t errlen)
{
    return parse_duration("--webhook-timeout", v, 0, &cfg->webhook_timeout_ms, errbuf, errlen);
}

static int apply_webhook_schedule(struct config *cfg, const char *v, char *errbuf,
                                  size_t errlen)
{
    struct webhook_deliver_config probe;
    char q[72];
    if (strlen(v) >= sizeof cfg->webhook_schedule || webhook_schedule_parse(v, &probe) != 0) {
        snprintf(errbuf, errlen,
                 "--webhook-retry-schedule: expected delays N[ms|s|m|h|d] separated by commas "
                 "(at most %d), got \"%s\"",
                 WEBHOOK_SCHEDULE_MAX, shown(v, q));
        return -1;
    }
    snprintf(cfg->webhook_schedule, sizeof cfg->webhook_schedule, "%s", v);
    return 0;
}

static int apply_webhook_disable_after(struct config *cfg, const char *v, char *errbuf,
                                       size_t errlen)
{
    return parse_duration("--webhook-disable-after", v, 0, &cfg->webhook_disable_after_ms,
                          errbuf, errlen);
}

static int apply_webhook_allow_private(struct config *cfg, const char *v, char *errbuf,
                                       size_t errlen)
{
    return apply_bool("--webhook-allow-private", v, &cfg->webhook_allow_private, errbuf, errlen);
}

static const struct option_def options[] = {
    {"--listen", "PAYMENTD_LISTEN", "ADDR:PORT", "address to serve on (default 127.0.0.1:8080)",
     apply_listen},
    {"--store", "PAYMENTD_STORE", "URI",
     "where payments live (default sqlite:./data/payments.db)", apply_store},
    {"--threads", "PAYMENTD_THREADS", "N", "HTTP event loop threads (default: CPUs)",
     apply_threads},
    {"--max-body", "PAYMENTD_MAX_BODY", "BYTES", "largest request body (default 262144)",
     apply_max_body},
    {"--public-url", "PAYMENTD_PUBLIC_URL", "URL",
     "prefix of links in responses (default none: links are paths)", apply_public_url},
    {"--log-level", "PAYMENTD_LOG_LEVEL", "LEVEL", "debug, info, warn or error (default info)",
     apply_log_level},
    {"--log-file", "PAYMENTD_LOG_FILE", "FILE",
     "append log lines to FILE (created 0640), reopened on SIGHUP (default stderr)",
     apply_log_file},
    {"--client-timeout", "PAYMENTD_CLIENT_TIMEOUT", "SECONDS",
     "close connections idle this long (default 30)", apply_client_timeout},
    {"--api-keys", "PAYMENTD_API_KEYS", "FILE",
     "API keys and their organisations (default none: open, with a warning)", apply_api_keys},
    {"--max-connections", "PAYMENTD_MAX_CONNECTIONS", "N",
     "connections served at once; more are refused (default 10000)", apply_max_connections},
    {"--rate-limit", "PAYMENTD_RATE_LIMIT", "N/s",
     "requests per second per API key (or address); 429 beyond (default 0: none)",
     apply_rate_limit},
    {"--mongo-collection", "PAYMENTD_MONGO_COLLECTION", "NAME",
     "MongoDB store: the payments collection (default payments)", apply_mongo_collection},
    {"--store-shared", "PAYMENTD_STORE_SHARED", "true|false",
     "SQLite store: let other programs (backup tools) open it while the server runs; each "
     "read then takes file locks (default false; always with --broker)",
     apply_store_shared},
    {"--wait-for-store", "PAYMENTD_WAIT_FOR_STORE", "true|false",
     "MongoDB store: start even when it does not answer yet (default false)",
     apply_wait_for_store},
    {"--broker", "PAYMENTD_BROKER", "URLS",
     "NATS JetStream servers for asynchronous writes, nats://HOST:PORT[,...] (default none)",
     apply_broker},
    {"--async-writes", "PAYMENTD_ASYNC_WRITES", "prefer|always",
     "with --broker: writes are asynchronous with Prefer: respond-async, or always (prefer)",
     apply_async_writes},
    {"--partitions", "PAYMENTD_PARTITIONS", "N", "partitions of the operation stream (default 16)",
     apply_partitions},
    {"--broker-replicas", "PAYMENTD_BROKER_REPLICAS", "N",
     "copies of the stream and buckets: 1 on one server, 3 on a cluster (default 1)",
     apply_broker_replicas},
    {"--worker-id", "PAYMENTD_WORKER_ID", "ID", "paymentd worker: its name (default host-pid)",
     apply_worker_id},
    {"--max-apply-attempts", "PAYMENTD_MAX_APPLY_ATTEMPTS", "N",
     "paymentd worker: tries of an operation the store fails internally before it is "
     "recorded failed and dead-lettered (default 5)",
     apply_max_apply_attempts},
    {"--repartition", "PAYMENTD_REPARTITION", "true|false",
     "with --broker: record --partitions as the stream's count, replacing another one; only "
     "once the stream is drained (default false)",
     apply_repartition},
    {"--relay", "PAYMENTD_RELAY", "true|false",
     "with --broker: publish the committed events to the stream PAYMENTS_EVENTS (one server "
     "at a time does; default true)",
     apply_relay},
    {"--idempotency-ttl", "PAYMENTD_IDEMPOTENCY_TTL", "DURATION",
     "keep Idempotency-Key outcomes at least this long, e.g. 24h (default 24h)",
     apply_idempotency_ttl},
    {"--event-retention", "PAYMENTD_EVENT_RETENTION", "DURATION",
     "list events in GET /v1/events at least this long, e.g. 30d (default 30d)",
     apply_event_retention},
    {"--history-retention", "PAYMENTD_HISTORY_RETENTION", "DURATION|forever",
     "keep each payment's history at least this long (default forever)",
     apply_history_retention},
    {"--webhooks", "PAYMENTD_WEBHOOKS", "true|false",
     "deliver webhooks from this server (several may: one attempts a delivery at a time; "
     "default true)",
     apply_webhooks},
    {"--webhook-timeout", "PAYMENTD_WEBHOOK_TIMEOUT", "DURATION",
     "a webhook receiver's time to answer (default 15s)", apply_webhook_timeout},
    {"--webhook-retry-schedule", "PAYMENTD_WEBHOOK_RETRY_SCHEDULE", "LIST",
     "delays of a delivery's attempts, with jitter (default 0s,5s,5m,30m,2h,5h,10h,14h,20h,24h)",
     apply_webhook_schedule},
    {"--webhook-disable-after", "PAYMENTD_WEBHOOK_DISABLE_AFTER", "DURATION",
     "disable a webhook endpoint that has failed every attempt this long (default 5d)",
     apply_webhook_disable_after},
    {"--webhook-allow-private", "PAYMENTD_WEBHOOK_ALLOW_PRIVATE", "true|false",
     "let webhook endpoints be on loopback, private or link-local addresses (default false)",
     apply_webhook_allow_private},
};

#define N_OPTIONS (sizeof options / sizeof options[0])

/* `paymentd migrate`'s own flags, --from URI, --to URI and --page N (also
 * --flag=VALUE), at argv[*a]: 1 when it was one (*a moved past its value),
 * 0 when it is another flag, or -1 with a reason in errbuf. */
static int migrate_flag(struct config *cfg, int argc, char **argv, int *a, char *errbuf,
                        size_t errlen)
{
    static const char *const flags[] = {"--from", "--to", "--page"};
    const char *arg = argv[*a], *value = NULL;
    size_t f = 0, n = 0;
    for (; f < 3; f++) {
        n = strlen(flags[f]);
        if (strncmp(arg, flags[f], n) == 0 && (arg[n] == '=' || arg[n] == '\0'))
            break;
    }
    if (f == 3)
        return 0;
    if (arg[n] == '=') {
        value = arg + n + 1;
    } else if (*a + 1 < argc) {
        value = argv[++*a];
    } else {
        snprintf(errbuf, errlen, "%s needs a value", flags[f]);
        return -1;
    }
    if (f == 2) {
        unsigned long long page;
        if (apply_count("--page", value, PAYMENT_EXPORT_PAGE_MAX, "", &page, errbuf, errlen))
            return -1;
        cfg->migrate_page = (unsigned)page;
        return 1;
    }
    char *dest = f == 0 ? cfg->migrate_from : cfg->migrate_to;
    if (!*value || strlen(value) >= CONFIG_URI_MAX) {
        snprintf(errbuf, errlen, "%s: expected a store URI such as sqlite:./data/payments.db",
                 flags[f]);
        return -1;
    }
    snprintf(dest, CONFIG_URI_MAX, "%s", value);
    return 1;
}

int config_store_uri(const struct config *cfg, char *out, size_t cap, char *errbuf,
                     size_t errlen)
{
    int mongo = strncasecmp(cfg->store, "mongodb://", 10) == 0;
    if (!mongo && (cfg->mongo_collection[0] || cfg->wait_for_store)) {
        snprintf(errbuf, errlen, "--mongo-collection and --wait-for-store apply to a mongodb:// "
                                 "store only");
        return -1;
    }
    int postgres = strncasecmp(cfg->store, "postgres://", 11) == 0 ||
                   strncasecmp(cfg->store, "postgresql://", 13) == 0;
    if ((mongo || postgres) && cfg->store_shared) {
        snprintf(errbuf, errlen, "--store-shared applies to a sqlite: store only");
        return -1;
    }
    /* Options go after '?' (a path is needed before it: "/payment" by
     * default, as the store itself would take). */
    const char *path = strchr(cfg->store + (mongo ? 10 : 0), '/');
    const char *sep = strchr(cfg->store, '?') ? "&" : path ? "?" : "/payment?";
    int n = snprintf(out, cap, "%s", cfg->store);
    if (cfg->mongo_collection[0] && n >= 0 && (size_t)n < cap) {
        n += snprintf(out + n, cap - (size_t)n, "%spaymentdCollection=%s", sep,
                      cfg->mongo_collection);
        sep = "&";
    }
    if (cfg->wait_for_store && n >= 0 && (size_t)n < cap)
        n += snprintf(out + n, cap - (size_t)n, "%spaymentdWaitForStore=true", sep);
    if (n < 0 || (size_t)n >= cap) {
        snprintf(errbuf, errlen, "--store: the URI is too long");
        return -1;
    }
    return 0;
}

void config_redact_uri(const char *uri, char *out, size_t cap)
{
    uri_redact(uri, out, cap);
}

void config_usage(FILE *out)
{
    fprintf(out, "usage: paymentd [FLAGS]\n       paymentd worker --broker URLS [FLAGS]\n"
                 "       paymentd backup FILE [--store URI]\n"
                 "       paymentd migrate --from URI --to URI [--page N]\n\n"
                 "Serves the payment API over HTTP; as a worker, applies the asynchronous "
                 "writes of the partitions it owns.  Each flag can "
                 "also be set by its environment variable; the flag wins.\n\n"
                 "backup copies the embedded store into FILE while servers keep serving: a "
                 "consistent snapshot in one file, written beside FILE and renamed when "
                 "complete.  A server keeps its store to itself unless run with "
                 "--store-shared true (or --broker): back up such a server's store after "
                 "stopping it.\n\n"
                 "migrate copies every payment, tombstone, idempotency record, history and "
                 "event of the store --from names into the store --to names (webhooks, "
                 "deliveries and broker operations are not copied), then verifies the copy "
                 "per organisation.  Stop the servers writing --from first.  Run again after "
                 "an interruption, it resumes.  --page: items read and written at a time, "
                 "1..1000 (default 500).\n\n");
    for (size_t i = 0; i < N_OPTIONS; i++) {
        char left[48];
        snprintf(left, sizeof left, "%s %s", options[i].flag, options[i].arg);
        fprintf(out, "  %-28s %s [%s]\n", left, options[i].help, options[i].env);
    }
    fprintf(out, "  %-28s %s\n", "--help", "show this text");
    fprintf(out, "  %-28s %s\n", "--version",
            "show the release, commit, store schemas and library versions");
}

static void config_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->host, sizeof cfg->host, "127.0.0.1");
    cfg->port = 8080;
    snprintf(cfg->store, sizeof cfg->store, "sqlite:./data/payments.db");
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->threads = cpus > 0 ? (unsigned)cpus : 1;
    cfg->max_body = 256 * 1024;
    cfg->log_level = LOG_INFO;
    cfg->client_timeout_s = 30;
    cfg->shutdown_grace_ms = 10000;
    cfg->max_connections = 10000;
    cfg->idempotency_ttl_ms = 24 * 3600 * 1000LL;
    cfg->event_retention_ms = 30 * 86400 * 1000LL;
    cfg->history_retention_ms = 0;
    cfg->partitions = 16;
    cfg->broker_replicas = 1;
    cfg->max_apply_attempts = 5;
    cfg->relay = 1;
    cfg->webhooks = 1;
    cfg->webhook_timeout_ms = 15000;
    snprintf(cfg->webhook_schedule, sizeof cfg->webhook_schedule, "%s",
             "0s,5s,5m,30m,2h,5h,10h,14h,20h,24h");
    cfg->webhook_disable_after_ms = 5 * 86400 * 1000LL;
}

int config_parse(struct config *cfg, int argc, char **argv, const char *(*env)(const char *),
                 char *errbuf, size_t errlen)
{
    char q[72];
    config_defaults(cfg);
    for (size_t i = 0; env && i < N_OPTIONS; i++) {
        const char *v = env(options[i].env);
        if (v && options[i].apply(cfg, v, errbuf, errlen) != 0)
            return CONFIG_EINVAL;
    }
    int first = 1;
    if (argc > 1 && strcmp(argv[1], "worker") == 0) {
        cfg->worker = 1;
        first = 2;
    } else if (argc > 1 && strcmp(argv[1], "backup") == 0) {
        cfg->backup = 1;
        first = 2;
    } else if (argc > 1 && strcmp(argv[1], "migrate") == 0) {
        cfg->migrate = 1;
        cfg->migrate_page = MIGRATE_PAGE_DEFAULT;
        first = 2;
    }
    for (int a = first; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            cfg->help = 1;
            continue;
        }
        if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) {
            cfg->version = 1;
            continue;
        }
        if (cfg->backup && !cfg->backup_file[0] && arg[0] != '-') {
            if (strlen(arg) >= sizeof cfg->backup_file) {
                snprintf(errbuf, errlen, "backup: the file name is too long");
                return CONFIG_EINVAL;
            }
            snprintf(cfg->backup_file, sizeof cfg->backup_file, "%s", arg);
            continue;
        }
        int mig = cfg->migrate ? migrate_flag(cfg, argc, argv, &a, errbuf, errlen) : 0;
        if (mig < 0)
            return CONFIG_EINVAL;
        if (mig > 0)
            continue;
        const struct option_def *opt = NULL;
        const char *value = NULL;
        for (size_t i = 0; i < N_OPTIONS && !opt; i++) {
            size_t n = strlen(options[i].flag);
            if (strncmp(arg, options[i].flag, n) != 0)
                continue;
            if (arg[n] == '=') {
                opt = &options[i];
                value = arg + n + 1;
            } else if (arg[n] == '\0') {
                opt = &options[i];
                if (a + 1 >= argc) {
                    snprintf(errbuf, errlen, "%s needs a value", options[i].flag);
                    return CONFIG_EINVAL;
                }
                value = argv[++a];
            }
        }
        if (!opt) {
            snprintf(errbuf, errlen, "unknown flag \"%s\" (see --help)", shown(arg, q));
            return CONFIG_EINVAL;
        }
        if (opt->apply(cfg, value, errbuf, errlen) != 0)
            return CONFIG_EINVAL;
    }
    if (cfg->backup && !cfg->backup_file[0] && !cfg->help && !cfg->version) {
        snprintf(errbuf, errlen, "backup: expected paymentd backup FILE [--store URI]");
        return CONFIG_EINVAL;
    }
    if (cfg->migrate && (!cfg->migrate_from[0] || !cfg->migrate_to[0]) && !cfg->help &&
        !cfg->version) {
        snprintf(errbuf, errlen, "migrate: expected paymentd migrate --from URI --to URI [--page N]");
        return CONFIG_EINVAL;
    }
    return CONFIG_OK;
}
