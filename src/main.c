/* paymentd: wires configuration, store, validator, broker and HTTP server
 * together, then waits for SIGTERM or SIGINT and shuts down in order:
 * stop accepting, let in-flight requests finish, close the store.  Main's
 * thread takes every signal (sigwait): SIGHUP reopens --log-file and
 * reloads --api-keys while the other threads serve; it tells the service
 * manager (app/notify.h) when it is ready, reloading and stopping, and
 * pings its watchdog while the HTTP server answers (app/liveness.h).  Also
 * `paymentd worker` (applies asynchronous writes), `paymentd backup FILE`
 * (copies the store) and `paymentd migrate` (copies one store into another,
 * app/migrate.h). */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "app/config.h"
#include "app/console.h"
#include "app/deadletters.h"
#include "app/janitor.h"
#include "app/liveness.h"
#include "app/migrate.h"
#include "app/notify.h"
#include "app/opqueue_broker.h"
#include "app/relay.h"
#include "app/system.h"
#include "app/version.h"
#include "auth/keys.h"
#include "broker/broker.h"
#include "broker/opstream.h"
#include "app/worker.h"
#include "core/clock.h"
#include "core/log.h"
#include "http/server.h"
#include "payment/api.h"
#include "payment/feed_wait.h"
#include "payment/store.h"
#include "payment/validate.h"
#include "webhook/api.h"
#include "webhook/deliver.h"

#define WORKER_START_ATTEMPTS 30 /* one a second */
#define WORKER_START_EXTEND_USEC 15000000ull /* each attempt asks the manager for this long */
#define OPS_BUCKET "PAYMENTS_OPS"
#define FEED_WAITERS_POOLED_MAX 512 /* see feed_waiters_max */
#define LIVENESS_TIMEOUT_MAX_MS 5000 /* the longest a watchdog probe waits */

/* Everything main owns; each field NULL until made. */
struct app {
    payment_validator *validator;
    auth_keys *keys;
    payment_store *store;
    idem_inflight *inflight;
    janitor *janitor;
    broker *broker;
    broker_kv *ops;
    deadletters *dead;
    relay *relay;
    webhook_deliver *webhooks;
    feed_wait *feed;
    http_server *server;
};

static const char *env_lookup(const char *name)
{
    return getenv(name);
}

/* What main's thread does between signals once serving. */
struct signal_loop {
    const sigset_t *sigs;       /* the signals it takes */
    const struct logger *log;   /* its --log-file reopened on SIGHUP */
    const struct config *cfg;   /* --log-file and --api-keys */
    auth_keys *keys;            /* reloaded on SIGHUP, or NULL */
    const char *status;         /* the STATUS= line while running */
    const char *probe_host;     /* the HTTP server probed before each watchdog ping */
    uint16_t probe_port;        /* its port; 0: no server (the worker) */
};

/* Blocks the signals main takes by sigwait (shutdown, and SIGHUP's
 * reload) in every thread and ignores SIGPIPE from closed client sockets. */
static int signals_setup(sigset_t *set)
{
    if (sigemptyset(set) != 0 || sigaddset(set, SIGTERM) != 0 || sigaddset(set, SIGINT) != 0 ||
        sigaddset(set, SIGHUP) != 0)
        return -1;
    if (pthread_sigmask(SIG_BLOCK, set, NULL) != 0)
        return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    return sigaction(SIGPIPE, &sa, NULL);
}

/* Milliseconds of the monotonic clock. */
static int64_t monotonic_ms(void)
{
    return clock_mono_us() / 1000;
}

/* Reopens --log-file, if any, after logrotate moved it. */
static void log_file_reopen(const struct logger *log, const struct config *cfg)
{
    char err[512];
    if (!cfg->log_file[0])
        return;
    if (log_reopen(log, cfg->log_file, err, sizeof err) != 0)
        log_msg(log, LOG_ERROR, "log file not reopened: %s; lines still go to the file open before",
                err);
    else
        log_msg(log, LOG_INFO, "SIGHUP: log file %s reopened", cfg->log_file);
}

/* SIGHUP: reopens the log file and reloads the API keys; serving goes on
 * meanwhile, and a bad keys file leaves the previous keys in force. */
static void signal_loop_reload(const struct signal_loop *l)
{
    notify_reloading(l->log, "reloading on SIGHUP");
    log_file_reopen(l->log, l->cfg);
    int keys_refused = 0;
    if (l->keys) {
        char msg[1024];
        keys_refused = auth_keys_reload(l->keys, l->cfg->api_keys, msg, sizeof msg) != 0;
        if (keys_refused)
            log_msg(l->log, LOG_ERROR,
                    "api keys not reloaded: %s; the previous keys stay in force", msg);
        else
            log_msg(l->log, LOG_INFO, "api keys reloaded from %s: %s", l->cfg->api_keys, msg);
    }
    char status[1200];
    snprintf(status, sizeof status, "%s%s", l->status,
             keys_refused ? "; api keys not reloaded (see the log), the previous stay in force"
                          : "");
    notify_ready(l->log, status);
}

/* A watchdog period ran out: pings when the HTTP server (if any) still
 * answers, and returns whether it pinged.  A store that is down does not
 * stop the pings: it is answered with 503s, not a hung process. */
static int signal_loop_watchdog(const struct signal_loop *l, int64_t period_ms)
{
    if (l->probe_port) {
        int64_t timeout = period_ms / 2;
        if (timeout > LIVENESS_TIMEOUT_MAX_MS)
            timeout = LIVENESS_TIMEOUT_MAX_MS;
        if (!liveness_probe(l->probe_host, l->probe_port, timeout > 0 ? (int)timeout : 1)) {
            log_msg(l->log, LOG_WARN,
                    "watchdog: the HTTP server did not answer GET /healthz within %lld ms; "
                    "no ping yet", (long long)timeout);
            return 0;
        }
    }
    notify_watchdog(l->log);
    return 1;
}

/* How soon a failed watchdog probe is tried again: a quarter of the
 * period, at most a second. */
static int64_t watchdog_retry_ms(int64_t period_ms)
{
    int64_t retry = period_ms / 4;
    return retry > 1000 ? 1000 : retry > 0 ? retry : 1;
}

/* Waits for the signal that stops the process and returns it, reloading on
 * each SIGHUP and, when the service manager's watchdog is on, pinging it
 * every half of its interval in between. */
static int signal_loop_run(const struct signal_loop *l)
{
    const int64_t period = notify_watchdog_interval_ms();
    int64_t next_ping = monotonic_ms() + period;
    for (;;) {
        int sig = 0;
        if (period == 0) {
            if (sigwait(l->sigs, &sig) != 0)
                continue;
        } else {
            int64_t left = next_ping - monotonic_ms();
            if (left < 0)
                left = 0;
            struct timespec wait = {(time_t)(left / 1000), (long)(left % 1000) * 1000000L};
            sig = sigtimedwait(l->sigs, NULL, &wait);
            if (sig < 0 && errno == EAGAIN) {
                /* A ping is due every period, half the manager's interval.
                 * A failed probe is tried again soon, not a period later:
                 * one slow answer must not cost the process its life while
                 * the other half of the interval is left. */
                int64_t started = monotonic_ms();
                int pinged = signal_loop_watchdog(l, period);
                next_ping = started + (pinged ? period : watchdog_retry_ms(period));
            }
            if (sig < 0)
                continue; /* a ping was due, or EINTR */
        }
        if (sig != SIGHUP)
            return sig;
        signal_loop_reload(l);
    }
}

/* Frees in the reverse order of making; the server first, so that no
 * request is in flight when what it uses goes. */
static void app_close(struct app *a, unsigned grace_ms)
{
    /* Requests waiting on the feed are answered now: the server's stop
     * waits for every parked request. */
    feed_wait_close(a->feed);
    http_server_stop(a->server, grace_ms);
    webhook_deliver_stop(a->webhooks);
    janitor_stop(a->janitor);
    relay_stop(a->relay);
    deadletters_stop(a->dead);
    broker_kv_close(a->ops);
    if (a->broker) {
        broker_close(a->broker);
        broker_library_shutdown();
    }
    idem_inflight_free(a->inflight);
    payment_store_close(a->store);
    feed_wait_free(a->feed); /* the store reports to it until closed */
    auth_keys_free(a->keys);
    payment_validator_free(a->validator);
}

/* `paymentd worker`: applies the operations of the partitions it owns
 * until a signal, then hands them back.  Returns the exit status. */
static int worker_main(struct app *a, const struct config *cfg, const struct logger *log,
                       sigset_t *sigs)
{
    char err[512];
    struct worker_config wc = WORKER_CONFIG_INIT;
    wc.broker_urls = cfg->broker;
    wc.partitions = cfg->partitions;
    wc.worker_id = cfg->worker_id[0] ? cfg->worker_id : NULL;
    wc.replicas = cfg->broker_replicas;
    wc.max_attempts = cfg->max_apply_attempts;
    wc.repartition = cfg->repartition;
    /* The broker may still be electing leaders (a cluster just started or
     * just lost a node): try for a while before giving up. */
    worker *w = NULL;
    for (int attempt = 0; !w && attempt < WORKER_START_ATTEMPTS; attempt++) {
        int wrc = worker_start(&wc, a->store, a->validator, log, &w, err, sizeof err);
        if (wrc == WORKER_OK || wrc == WORKER_EPARTITIONS)
            break;
        log_msg(log, LOG_WARN, "worker cannot start yet: %s", err);
        /* Still starting: the service manager is told to wait for this
         * attempt and the next, past the unit's TimeoutStartSec. */
        notify_extend_timeout(log, WORKER_START_EXTEND_USEC);
        struct timespec second = {1, 0};
        int sig = sigtimedwait(sigs, NULL, &second);
        if (sig == SIGHUP)
            log_file_reopen(log, cfg);
        else if (sig > 0)
            return 0; /* asked to stop while waiting */
    }
    if (!w) {
        fprintf(stderr, "paymentd worker: %s\n", err);
        broker_library_shutdown();
        return 1;
    }
    char status[CONFIG_URI_MAX + 64];
    snprintf(status, sizeof status, "worker on %s, %u partitions", cfg->broker, cfg->partitions);
    log_msg(log, LOG_INFO, "paymentd %s", status);
    notify_ready(log, status);
    /* The worker serves no HTTP: its watchdog pings prove main's thread. */
    const struct signal_loop loop = {sigs, log, cfg, NULL, status, NULL, 0};
    int sig = signal_loop_run(&loop);
    notify_stopping(log, "stopping: handing the partitions back");
    log_msg(log, LOG_INFO, "signal %d: handing the partitions back", sig);
    worker_stop(w);
    broker_library_shutdown();
    return 0;
}

/* Connects to the broker and makes sure the stream and the bucket of
 * pending operations exist.  A pending entry lives as long as an applied
 * operation's outcome (--idempotency-ttl, purged by the janitor), so an
 * operation is never shown pending after its outcome was forgotten.
 * Returns 0, or -1 with a reason in err. */
static int app_broker_open(struct app *a, const struct config *cfg, char *err, size_t errlen)
{
    if (broker_open(cfg->broker, NULL, &a->broker, err, errlen) != BROKER_OK)
        return -1;
    if (opstream_setup(a->broker, cfg->partitions, cfg->broker_replicas, cfg->repartition, err,
                       errlen) != OPSTREAM_OK)
        return -1;
    return broker_kv_open(a->broker, OPS_BUCKET, cfg->idempotency_ttl_ms, cfg->broker_replicas, &a->ops, err,
                          errlen) == BROKER_OK
               ? 0
               : -1;
}

/* Starts the relay of the committed events to the broker (app/relay.h): NULL
 * when it cannot start. */
static relay *app_relay_start(payment_store *store, broker *b, const struct config *cfg,
                              const struct logger *log)
{
    struct relay_config rc = RELAY_CONFIG_INIT;
    rc.store = store;
    rc.broker = b;
    rc.log = log;
    rc.partitions = cfg->partitions;
    rc.replicas = cfg->broker_replicas;
    rc.max_age_ms = cfg->event_retention_ms;
    return relay_start(&rc);
}

/* Starts this process's webhook deliveries (webhook/deliver.h): NULL when
 * they cannot start. */
static webhook_deliver *app_webhooks_start(payment_store *store, const struct config *cfg,
                                           const struct logger *log)
{
    struct webhook_deliver_config wc;
    webhook_deliver_config_init(&wc);
    wc.store = store;
    wc.log = log;
    wc.timeout_ms = cfg->webhook_timeout_ms;
    wc.disable_after_ms = cfg->webhook_disable_after_ms;
    wc.allow_private = cfg->webhook_allow_private;
    /* config_parse checked the schedule. */
    if (webhook_schedule_parse(cfg->webhook_schedule, &wc) != 0)
        return NULL;
    return webhook_deliver_start(&wc);
}

/* How many requests may wait on the feed at once: half the connections, so
 * that the others still get through; with a store whose reads run on the
 * blocking pool, also no more than half its queue (1024 by default), so
 * that a commit waking them all cannot fill it. */
static size_t feed_waiters_max(const struct config *cfg, payment_store *s)
{
    size_t n = cfg->max_connections / 2;
    if (payment_store_may_block(s) && n > FEED_WAITERS_POOLED_MAX)
        n = FEED_WAITERS_POOLED_MAX;
    return n > 0 ? n : 1;
}

/* `paymentd backup FILE`: copies the store into FILE and exits, 0 when the
 * copy is complete and durable, else 1 with one line on stderr. */
static int backup_main(const char *store_uri, const char *store_shown, const char *file)
{
    char err[512];
    if (payment_store_backup(store_uri, file, err, sizeof err) != PAYMENT_STORE_OK) {
        fprintf(stderr, "paymentd backup: %s\n", err);
        return 1;
    }
    printf("paymentd backup: %s copied to %s\n", store_shown, file);
    return fflush(stdout) == 0 ? 0 : 1;
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
    if (cfg.version)
        return version_print(stdout) == 0 ? 0 : 1;
    if (payment_store_init(err, sizeof err) != PAYMENT_STORE_OK) {
        fprintf(stderr, "paymentd: %s\n", err);
        return 1;
    }
    if (cfg.migrate) /* needs no other flag: its stores are --from and --to */
        return migrate_main(cfg.migrate_from, cfg.migrate_to, cfg.migrate_page);
    char store_uri[CONFIG_URI_MAX + 256], store_shown[CONFIG_URI_MAX + 256];
    if (config_store_uri(&cfg, store_uri, sizeof store_uri, err, sizeof err) != 0) {
        fprintf(stderr, "paymentd: %s\n", err);
        return 2;
    }
    config_redact_uri(store_uri, store_shown, sizeof store_shown);
    if (cfg.backup)
        return backup_main(store_uri, store_shown, cfg.backup_file);
    int log_fd = 2;
    if (cfg.log_file[0] && (log_fd = log_file_open(cfg.log_file, err, sizeof err)) < 0) {
        fprintf(stderr, "paymentd: --log-file %s\n", err);
        return 1;
    }
    const struct logger log = {cfg.log_level, log_fd};
    sigset_t sigs;
    if (signals_setup(&sigs) != 0) {
        fprintf(stderr, "paymentd: cannot set up signal handling\n");
        return 1;
    }

    struct app a = {0};
    int rc = 1;
    if (!(a.validator = payment_validator_new())) {
        fprintf(stderr, "paymentd: cannot build the payment validator\n");
        goto out;
    }
    if (cfg.api_keys[0] && auth_keys_load(cfg.api_keys, &a.keys, err, sizeof err) != 0) {
        fprintf(stderr, "paymentd: --api-keys %s\n", err);
        goto out;
    }
    if (cfg.worker && !cfg.broker[0]) {
        fprintf(stderr, "paymentd worker: --broker is required\n");
        goto out;
    }
    /* Without a broker nothing else writes the store: the server keeps the
     * embedded store to itself (reads take no lock call) unless asked to
     * share it with other programs.  With one, the workers write it too. */
    unsigned store_flags =
        cfg.broker[0] || cfg.store_shared ? 0u : (unsigned)PAYMENT_STORE_EXCLUSIVE;
    if (payment_store_open(store_uri, store_flags, &a.store, err, sizeof err) !=
        PAYMENT_STORE_OK) {
        fprintf(stderr, "paymentd: cannot open store %s: %s\n", store_shown, err);
        goto out;
    }
    if (cfg.worker) {
        rc = worker_main(&a, &cfg, &log, &sigs);
        goto out;
    }
    if (cfg.broker[0] && app_broker_open(&a, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "paymentd: broker %s: %s\n", cfg.broker, err);
        goto out;
    }
    a.inflight = idem_inflight_new();
    /* Purged a tenth of the retention after expiry at most: kept at least
     * the retention. */
    const struct janitor_retention keep = {cfg.idempotency_ttl_ms, cfg.event_retention_ms,
                                           cfg.history_retention_ms};
    if (a.inflight)
        a.janitor = janitor_start(a.store, &keep);
    if (!a.janitor) {
        fprintf(stderr, "paymentd: cannot start the janitor\n");
        goto out;
    }
    if (feed_wait_start(a.store, feed_waiters_max(&cfg, a.store), &a.feed) != 0) {
        fprintf(stderr, "paymentd: cannot start the event feed's waiting room\n");
        goto out;
    }

    struct payment_api api = {0};
    api.inflight = a.inflight;
    api.store = a.store;
    api.validator = a.validator;
    api.public_url = cfg.public_url;
    struct opqueue_broker opq; /* the queue over the broker, for as long as api */
    struct payment_opqueue queue;
    if (a.broker) {
        opqueue_broker_init(&opq, a.broker, a.ops, cfg.partitions, &queue);
        api.queue = &queue;
    }
    api.async_always = cfg.async_always;
    api.feed = a.feed;
    if (a.broker && !(a.dead = deadletters_start(a.broker, 5000))) {
        fprintf(stderr, "paymentd: cannot start the dead-letter counter\n");
        goto out;
    }
    if (a.broker && cfg.relay && !(a.relay = app_relay_start(a.store, a.broker, &cfg, &log))) {
        fprintf(stderr, "paymentd: cannot start the event relay\n");
        goto out;
    }
    if (cfg.webhooks && !(a.webhooks = app_webhooks_start(a.store, &cfg, &log))) {
        fprintf(stderr, "paymentd: cannot start the webhook deliveries\n");
        goto out;
    }
    struct webhook_api hooks = {a.store, cfg.public_url, cfg.webhook_allow_private,
                                a.webhooks ? webhook_deliver_wake : NULL, a.webhooks};
    struct system_ctx sys = {a.store, cfg.public_url, &api, a.dead, a.relay, a.webhooks};
    struct http_route
        routes[SYSTEM_ROUTES + PAYMENT_API_ROUTES + WEBHOOK_API_ROUTES + CONSOLE_ROUTES];
    size_t n = system_routes(&sys, routes);
    n += payment_api_routes(&api, routes + n);
    n += webhook_api_routes(&hooks, routes + n);
    n += console_routes(routes + n);

    struct http_server_config hc = {
        .host = cfg.host,
        .port = cfg.port,
        .threads = cfg.threads,
        .max_body = cfg.max_body,
        .client_timeout_s = cfg.client_timeout_s,
        .routes = routes,
        .n_routes = n,
        .log = &log,
        .authenticate = a.keys ? auth_authenticate : NULL,
        .auth_ctx = a.keys,
        .authorize_write = a.keys ? auth_authorize_write : NULL,
        .principal_name = a.keys ? auth_principal_name : NULL,
        .max_connections = cfg.max_connections,
        .rate_limit = cfg.rate_limit,
    };
    if (http_server_start(&hc, &a.server, err, sizeof err) != 0) {
        fprintf(stderr, "paymentd: %s\n", err);
        goto out;
    }
    char status[CONFIG_HOST_MAX + sizeof store_shown + 64];
    snprintf(status, sizeof status, "listening on %s:%u, store %s", cfg.host,
             (unsigned)http_server_port(a.server), store_shown);
    log_msg(&log, LOG_INFO, "paymentd %s, %u threads%s%s", status, cfg.threads,
            cfg.broker[0] ? ", broker " : "", cfg.broker);
    if (!a.keys)
        log_msg(&log, LOG_WARN, "no --api-keys: every request is let in, for every organisation");
    notify_ready(&log, status);

    const struct signal_loop loop = {&sigs, &log, &cfg, a.keys, status, cfg.host,
                                     http_server_port(a.server)};
    int sig = signal_loop_run(&loop);
    notify_stopping(&log, "stopping: finishing in-flight requests");
    log_msg(&log, LOG_INFO, "signal %d: finishing in-flight requests", sig);
    rc = 0;
out:
    app_close(&a, cfg.shutdown_grace_ms);
    if (rc == 0)
        log_msg(&log, LOG_INFO, "paymentd stopped");
    if (log_fd != 2 && close(log_fd) != 0 && rc == 0)
        rc = 1; /* the last lines may not have reached the file */
    return rc;
}
