/* paymentd: wires configuration, store, validator and HTTP server
 * together, then waits for SIGTERM or SIGINT and shuts down in order:
 * stop accepting, let in-flight requests finish, close the store. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/config.h"
#include "app/janitor.h"
#include "app/system.h"
#include "auth/keys.h"
#include "core/log.h"
#include "http/server.h"
#include "payment/api.h"
#include "payment/store.h"
#include "payment/validate.h"

static const char *env_lookup(const char *name)
{
    return getenv(name);
}

/* Blocks the shutdown signals in every thread (they are taken by sigwait
 * in main) and ignores SIGPIPE from closed client sockets. */
static int signals_setup(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    if (pthread_sigmask(SIG_BLOCK, set, NULL) != 0)
        return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    return sigaction(SIGPIPE, &sa, NULL);
}

int main(int argc, char **argv)
{
    struct config cfg;
    char err[512];
    if (config_parse(&cfg, argc, argv, env_lookup, err, sizeof err) != CONFIG_OK) {
        fprintf(stderr, "paymentd: %s\n", err);
        return 2;
    }
    if (cfg.help) {
        config_usage(stdout);
        return 0;
    }
    const struct logger log = {cfg.log_level, 2};
    sigset_t sigs;
    if (signals_setup(&sigs) != 0) {
        fprintf(stderr, "paymentd: cannot set up signal handling\n");
        return 1;
    }
    payment_validator *validator = payment_validator_new();
    if (!validator) {
        fprintf(stderr, "paymentd: cannot build the payment validator\n");
        return 1;
    }
    auth_keys *keys = NULL;
    if (cfg.api_keys[0] && auth_keys_load(cfg.api_keys, &keys, err, sizeof err) != 0) {
        fprintf(stderr, "paymentd: --api-keys %s\n", err);
        payment_validator_free(validator);
        return 1;
    }
    char store_uri[CONFIG_URI_MAX + 256], store_shown[CONFIG_URI_MAX + 256];
    if (config_store_uri(&cfg, store_uri, sizeof store_uri, err, sizeof err) != 0) {
        fprintf(stderr, "paymentd: %s\n", err);
        auth_keys_free(keys);
        payment_validator_free(validator);
        return 2;
    }
    config_redact_uri(store_uri, store_shown, sizeof store_shown);
    payment_store *store = NULL;
    if (payment_store_open(store_uri, &store, err, sizeof err) != PAYMENT_STORE_OK) {
        fprintf(stderr, "paymentd: cannot open store %s: %s\n", store_shown, err);
        auth_keys_free(keys);
        payment_validator_free(validator);
        return 1;
    }

    idem_inflight *inflight = idem_inflight_new();
    /* Purged a tenth of the TTL after expiry at most: kept at least the TTL. */
    janitor *jan = inflight ? janitor_start(store, cfg.idempotency_ttl_ms,
                                            cfg.idempotency_ttl_ms / 10)
                            : NULL;
    if (!jan) {
        fprintf(stderr, "paymentd: cannot start the idempotency janitor\n");
        idem_inflight_free(inflight);
        payment_store_close(store);
        auth_keys_free(keys);
        payment_validator_free(validator);
        return 1;
    }
    struct payment_api api = {0};
    api.inflight = inflight;
    api.store = store;
    api.validator = validator;
    api.public_url = cfg.public_url;
    struct system_ctx sys = {store, cfg.public_url, &api};
    struct http_route routes[SYSTEM_ROUTES + PAYMENT_API_ROUTES];
    size_t n = system_routes(&sys, routes);
    n += payment_api_routes(&api, routes + n);

    struct http_server_config hc = {
        .host = cfg.host,
        .port = cfg.port,
        .threads = cfg.threads,
        .max_body = cfg.max_body,
        .client_timeout_s = cfg.client_timeout_s,
        .routes = routes,
        .n_routes = n,
        .log = &log,
        .authenticate = keys ? auth_authenticate : NULL,
        .auth_ctx = keys,
        .max_connections = cfg.max_connections,
        .rate_limit = cfg.rate_limit,
    };
    http_server *server = NULL;
    if (http_server_start(&hc, &server, err, sizeof err) != 0) {
        fprintf(stderr, "paymentd: %s\n", err);
        janitor_stop(jan);
        idem_inflight_free(inflight);
        payment_store_close(store);
        auth_keys_free(keys);
        payment_validator_free(validator);
        return 1;
    }
    log_msg(&log, LOG_INFO, "paymentd listening on %s:%u, store %s, %u threads", cfg.host,
            (unsigned)http_server_port(server), store_shown, cfg.threads);
    if (!keys)
        log_msg(&log, LOG_WARN, "no --api-keys: every request is let in, for every organisation");

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    log_msg(&log, LOG_INFO, "signal %d: finishing in-flight requests", sig);
    http_server_stop(server, cfg.shutdown_grace_ms);
    janitor_stop(jan);
    idem_inflight_free(inflight);
    payment_store_close(store);
    auth_keys_free(keys);
    payment_validator_free(validator);
    log_msg(&log, LOG_INFO, "paymentd stopped");
    return 0;
}
