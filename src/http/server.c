#include "http/server.h"

#include <arpa/inet.h>
#include <assert.h>
#include <inttypes.h>
#include <errno.h>
#include <limits.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/hex.h"
#include "core/metrics.h"
#include "core/sync.h"
#include "core/uuid.h"
#include "http/access_log.h"
#include "http/pool.h"
#include "http/ratelimit.h"

#define MAX_HEADERS 8
#define HEADER_TEXT_MAX 512 /* a request's own room for response header text */
#define REQUEST_ID_MAX 128
/* Per-connection memory for the request line, headers and response
 * headers.  libmicrohttpd zeroes it after every request, so it is kept
 * small; bodies live in their own buffers. */
#define HTTP_CONNECTION_MEMORY (12 * 1024)
/* The reaper's tick: it looks for slow clients once a second. */
#define REAP_TICK_NS 1000000000L
/* The blocking pool's defaults (http_server_config.blocking_*): enough
 * threads for the MongoDB driver's connections to be used in parallel, and
 * a queue bounded so that a stalled dependency turns requests away at once
 * rather than piling them up. */
#define POOL_THREADS_DEFAULT 32
#define POOL_QUEUE_DEFAULT 1024
/* A request that waited this long for a pool thread is answered 503 without
 * running: the dependency it waits behind is stalled, and its client is
 * likely gone or about to retry. */
#define POOL_WAIT_MS_DEFAULT 5000

/* Statuses metrics are kept for; any other is counted as the last. */
static const int metric_statuses[] = {200, 201, 202, 204, 304, 400, 401, 403, 404, 405, 409, 410,
                                      413, 414, 415, 422, 428, 429, 431, 500, 503, 0};
#define N_METRIC_STATUSES (sizeof metric_statuses / sizeof metric_statuses[0])

struct http_server {
    struct MHD_Daemon *daemon;       /* owns the worker threads */
    int listen_fd;                   /* ours until MHD_stop_daemon */
    uint16_t port;                   /* bound port */
    struct http_server_config cfg;   /* copied at start */
    atomic_long in_flight;           /* requests begun and not completed */
    atomic_long suspended;           /* requests parked, waiting for other work */
    atomic_long connections;         /* open client connections */
    unsigned long max_connections;   /* more are refused at once */
    atomic_int draining;             /* stopping: new connections are refused at once */
    char id_prefix[17];              /* random per process, in hex: generated request ids */
    _Atomic uint64_t id_counter;     /* ... are id_prefix-counter */
    /* Latency per (route, status): (n_routes + 1) * N_METRIC_STATUSES
     * histograms, the last route row for requests that matched none. */
    struct metrics_histogram *latency;
    ratelimit *limiter;              /* --rate-limit, or NULL */
    pthread_mutex_t conns_mu;        /* guards conns and each slot's fd */
    struct conn_slot *conns;         /* open connections, for the reaper */
    pthread_t reaper;                /* closes slow connections */
    pthread_cond_t reaper_wake;      /* signalled to stop it (under conns_mu) */
    int reaper_stop;
    access_log *access;              /* the access log and its thread */
    http_pool *pool;                 /* threads for handlers that may block */
};

/* A connection as the reaper sees it.  libmicrohttpd's own timeout counts
 * inactivity only, so a client that trickles a byte at a time (slowloris)
 * would hold its connection for ever; the reaper shuts down any connection
 * that has spent longer than the client timeout receiving one request, or
 * idle between requests.  A request fully received (being handled, or
 * parked on the store) is never cut. */
struct conn_slot {
    struct conn_slot *prev, *next; /* in http_server.conns */
    int fd;                        /* the socket; valid while the slot is listed */
    _Atomic int64_t since_us;      /* when its current request (or idleness) began */
    _Atomic int busy;              /* a request is fully received and in hand */
    int cut;                       /* already shut down */
};

struct http_header {
    char *name;  /* in the request's header_text, or malloc'd when owned */
    char *value; /* likewise */
    int owned;   /* name and value are malloc'd (header_text was full) */
};

struct http_request {
    http_server *server;
    struct MHD_Connection *conn;
    enum http_method method;
    const char *method_name;         /* MHD's, valid for the request */
    const char *path;                /* MHD's, valid for the request */
    int64_t start_us;                /* monotonic, at the first call */
    const struct http_route *route;  /* the matched route, or NULL */
    const void *principal;           /* who it acts as, or NULL */
    char *param;                     /* owned copy of {id}, or NULL */
    int early_status;                /* error decided before the body (404...) */
    const char *early_code;          /* its error_code */
    unsigned retry_after;            /* seconds, for a 429 */
    struct buf body;                 /* the request body */
    int status;                      /* status answered, 0 before */
    int failed;                      /* the answer could not be queued: close */
    size_t n_headers;                /* headers[] in use */
    size_t header_used;              /* bytes of header_text in use */
    void *state;                     /* handler state */
    void (*state_free)(void *);      /* frees state */
    void (*on_answer)(void *);       /* called with state before the answer is queued */
    http_handler_fn then;            /* continuation of a suspended request */
    http_handler_fn pool_fn;         /* the handler to run on the blocking pool */
    int64_t pool_queued_us;          /* when it was handed to the pool (monotonic) */
    struct MHD_Response *staged;     /* an answer made on the pool, queued at resume */
    int staged_status;               /* its status; 0 when none was made */
    /* From here on nothing is zeroed when a request begins: each array is
     * written before it is read (see on_access). */
    char request_id[REQUEST_ID_MAX + 1];
    char early_msg[160];             /* the error_message of early_status */
    char allow[64];                  /* Allow header for 405 */
    struct http_header headers[MAX_HEADERS];
    char header_text[HEADER_TEXT_MAX]; /* the headers' names and values, NUL-terminated */
};

/* --- helpers ------------------------------------------------------------ */

static int request_id_is_sane(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_' || c == '.' || c == ':';
        if (!ok || n >= REQUEST_ID_MAX)
            return 0;
    }
    return n > 0;
}

/* application/json or application/vnd.api+json, optionally with a UTF-8
 * charset parameter. */
static int content_type_is_json(const char *ct)
{
    if (!ct)
        return 0;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, ";");
    size_t m = n;
    while (m > 0 && (ct[m - 1] == ' ' || ct[m - 1] == '\t'))
        m--;
    if (!((m == 16 && strncasecmp(ct, "application/json", 16) == 0) ||
          (m == 24 && strncasecmp(ct, "application/vnd.api+json", 24) == 0)))
        return 0;
    const char *p = ct + n;
    while (*p == ';') {
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        size_t plen = strcspn(p, ";");
        if (plen == 0) {
            continue;
        }
        if (strncasecmp(p, "charset=", 8) != 0)
            return 0;
        const char *v = p + 8;
        size_t vlen = plen - 8;
        while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
            vlen--;
        if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"') {
            v++;
            vlen -= 2;
        }
        if (!((vlen == 5 && strncasecmp(v, "utf-8", 5) == 0) ||
              (vlen == 4 && strncasecmp(v, "utf8", 4) == 0)))
            return 0;
        p += plen;
    }
    return 1;
}

static void set_early(http_request *req, int status, const char *code, const char *msg)
{
    req->early_status = status;
    req->early_code = code;
    snprintf(req->early_msg, sizeof req->early_msg, "%s", msg);
}

/* Who a request counts against for rate limiting: its API key, or its
 * address when the server runs without keys. */
static void request_caller(const http_request *req, char *out, size_t cap)
{
    if (req->principal && req->server->cfg.principal_name) {
        snprintf(out, cap, "key:%s", req->server->cfg.principal_name(req->principal));
        return;
    }
    if (req->principal) {
        snprintf(out, cap, "key:%p", req->principal);
        return;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char addr[INET6_ADDRSTRLEN] = "?";
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        const void *a = sa->sa_family == AF_INET6
                            ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                            : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
        if (!inet_ntop(sa->sa_family, a, addr, sizeof addr))
            snprintf(addr, sizeof addr, "?");
    }
    snprintf(out, cap, "addr:%s", addr);
}

/* Headers that may appear once: a second copy is either an attack on
 * framing (request smuggling through two lengths) or ambiguous. */
static const char *const single_headers[] = {
    "Content-Length", "Transfer-Encoding", "Content-Type", "Authorization",
    "If-Match",       "If-None-Match",     "Idempotency-Key", "X-Request-Id", "Host",
};
#define N_SINGLE_HEADERS (sizeof single_headers / sizeof single_headers[0])

struct header_scan {
    unsigned count[N_SINGLE_HEADERS]; /* occurrences of each single header */
    int nul;                          /* a header held a NUL byte */
};

static enum MHD_Result header_scan_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                      size_t key_size, const char *value, size_t value_size)
{
    struct header_scan *hs = cls;
    (void)kind;
    if (memchr(key, '\0', key_size) || (value && memchr(value, '\0', value_size)))
        hs->nul = 1;
    for (size_t i = 0; i < N_SINGLE_HEADERS; i++)
        if (strcasecmp(key, single_headers[i]) == 0)
            hs->count[i]++;
    return MHD_YES;
}

/* Framing and header sanity, before anything else: 400 for NUL bytes in
 * headers, repeated single headers, a transfer coding other than chunked,
 * or both a length and a transfer coding. */
static int request_headers_sane(http_request *req)
{
    struct header_scan hs = {{0}, 0};
    if (MHD_get_connection_values_n(req->conn, MHD_HEADER_KIND, header_scan_cb, &hs) < 0)
        return 0;
    if (hs.nul) {
        set_early(req, 400, "bad_request", "a header holds a NUL byte");
        return 0;
    }
    for (size_t i = 0; i < N_SINGLE_HEADERS; i++) {
        if (hs.count[i] > 1) {
            char msg[96];
            snprintf(msg, sizeof msg, "the %s header is given more than once", single_headers[i]);
            set_early(req, 400, "bad_request", msg);
            return 0;
        }
    }
    const char *te = http_request_header(req, "Transfer-Encoding");
    if (te && (strcasecmp(te, "chunked") != 0 || http_request_header(req, "Content-Length"))) {
        set_early(req, 400, "bad_request",
                  "Transfer-Encoding must be chunked, and not sent with Content-Length");
        return 0;
    }
    return 1;
}

/* The declared Content-Length: 1 and *n when it is a plain decimal number,
 * 0 when absent, -1 when malformed (libmicrohttpd answers those itself, so
 * paymentd must not answer too). */
static int content_length(const http_request *req, unsigned long long *n)
{
    const char *cl = http_request_header(req, "Content-Length");
    if (!cl)
        return 0;
    if (!*cl || strspn(cl, "0123456789") != strlen(cl))
        return -1;
    char *end;
    errno = 0;
    *n = strtoull(cl, &end, 10);
    return errno == 0 ? 1 : -1;
}

/* The checks that precede the body, in the order that decides which error
 * wins: route and method, {id} syntax, content type, declared size. */
static void request_begin(http_request *req)
{
    const struct http_server_config *cfg = &req->server->cfg;
    struct http_match m;
    /* Stopping: a request on a kept-alive connection is not started (a
     * write parked now could outlive the wait for parked writes). */
    if (atomic_load(&req->server->draining)) {
        http_request_add_header(req, "Connection", "close");
        set_early(req, 503, "shutting_down", "the server is shutting down; retry");
        return;
    }
    if (!request_headers_sane(req))
        return;
    int rc = http_router_match(cfg->routes, cfg->n_routes, req->method, req->path, &m);
    if (rc == 404) {
        set_early(req, 404, "not_found", "no such resource");
        return;
    }
    if (rc == 405) {
        http_methods_format(m.allowed, req->allow, sizeof req->allow);
        set_early(req, 405, "method_not_allowed", "method not allowed on this resource");
        return;
    }
    req->route = m.route;
    if ((req->route->flags & HTTP_ROUTE_AUTH) && cfg->authenticate) {
        req->principal =
            cfg->authenticate(cfg->auth_ctx, http_request_header(req, "Authorization"));
        if (!req->principal) {
            /* Failed attempts count against the address, so that guessing
             * keys is rate limited too. */
            char caller[80];
            request_caller(req, caller, sizeof caller);
            if (req->server->limiter &&
                (req->retry_after = ratelimit_take(req->server->limiter, caller, req->start_us))) {
                set_early(req, 429, "rate_limited", "too many requests from this caller; retry later");
                return;
            }
            set_early(req, 401, "unauthorized", "a valid API key is required: Authorization: "
                                                "Bearer <secret>");
            return;
        }
    }
    if ((req->route->flags & HTTP_ROUTE_AUTH) && req->server->limiter) {
        char caller[80];
        request_caller(req, caller, sizeof caller);
        req->retry_after = ratelimit_take(req->server->limiter, caller, req->start_us);
        if (req->retry_after) {
            set_early(req, 429, "rate_limited", "too many requests from this caller; retry later");
            return;
        }
    }
    if (req->principal && cfg->authorize_write && req->method != HTTP_GET &&
        req->method != HTTP_HEAD) {
        const char *refused = cfg->authorize_write(req->principal);
        if (refused) {
            set_early(req, 403, "forbidden", refused);
            return;
        }
    }
    if (m.param) {
        req->param = strndup(m.param, m.param_len);
        if (!req->param) {
            set_early(req, 500, "internal_error", "internal error");
            return;
        }
    }
    if ((req->route->flags & HTTP_ROUTE_UUID_PARAM) &&
        (!req->param || uuid_parse(req->param, strlen(req->param), &(struct uuid){0}) != 0)) {
        set_early(req, 400, "invalid_id", "the id in the path is not a UUID");
        return;
    }
    if (!(req->route->flags & HTTP_ROUTE_BODY))
        return;
    if (!content_type_is_json(http_request_header(req, "Content-Type"))) {
        set_early(req, 415, "unsupported_media_type",
                  "the body must be application/json or application/vnd.api+json");
        return;
    }
    unsigned long long n;
    if (content_length(req, &n) == 1 && n > cfg->max_body)
        set_early(req, 413, "payload_too_large", "the body is larger than the server accepts");
}

static void request_take_body(http_request *req, const char *data, size_t len)
{
    if (req->early_status)
        return; /* the answer is decided: the rest is read and dropped */
    if (req->body.len + len > req->server->cfg.max_body) {
        set_early(req, 413, "payload_too_large", "the body is larger than the server accepts");
        buf_free(&req->body);
        return;
    }
    if (buf_append(&req->body, data, len) != 0)
        set_early(req, 500, "internal_error", "internal error");
}

static void request_free(http_request *req)
{
    if (req->state_free)
        req->state_free(req->state);
    if (req->staged)
        MHD_destroy_response(req->staged); /* the client left before it was queued */
    for (size_t i = 0; i < req->n_headers; i++) {
        if (req->headers[i].owned) {
            free(req->headers[i].name);
            free(req->headers[i].value);
        }
    }
    buf_free(&req->body);
    free(req->param);
    free(req);
}

/* --- slow clients -------------------------------------------------------- */

static void conn_slot_link(http_server *s, struct conn_slot *slot)
{
    if (pthread_mutex_lock(&s->conns_mu) != 0)
        abort();
    slot->next = s->conns;
    if (s->conns)
        s->conns->prev = slot;
    s->conns = slot;
    sync_unlock(&s->conns_mu);
}

static void conn_slot_unlink(http_server *s, struct conn_slot *slot)
{
    if (pthread_mutex_lock(&s->conns_mu) != 0)
        abort();
    if (slot->prev)
        slot->prev->next = slot->next;
    else
        s->conns = slot->next;
    if (slot->next)
        slot->next->prev = slot->prev;
    sync_unlock(&s->conns_mu);
}

static struct conn_slot *request_slot(const http_request *req)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* The reaper.  Every tick, with a client timeout, it shuts down the sockets
 * of connections past it: the event loop then sees the connection end and
 * closes it as usual.  A slot stays listed (and its fd open) until
 * libmicrohttpd's close notification has unlisted it under the same lock,
 * so the fd cannot be another's. */
static void *reaper_main(void *arg)
{
    http_server *s = arg;
    int64_t limit_us = (int64_t)s->cfg.client_timeout_s * 1000000;
    if (pthread_mutex_lock(&s->conns_mu) != 0)
        return NULL;
    while (!s->reaper_stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += REAP_TICK_NS / 1000000000L;
        until.tv_nsec += REAP_TICK_NS % 1000000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        int rc = 0;
        while (!s->reaper_stop && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&s->reaper_wake, &s->conns_mu, &until);
        if (!s->cfg.client_timeout_s)
            continue;
        int64_t now = clock_mono_us();
        for (struct conn_slot *c = s->conns; c && !s->reaper_stop; c = c->next) {
            if (c->cut || atomic_load(&c->busy) || now - atomic_load(&c->since_us) <= limit_us)
                continue;
            c->cut = 1;
            (void)shutdown(c->fd, SHUT_RDWR); /* fails only if the peer is gone already */
        }
    }
    sync_unlock(&s->conns_mu);
    return NULL;
}

/* --- libmicrohttpd callbacks --------------------------------------------- */

/* Whether a body follows that paymentd would have to read.  A malformed
 * length is not one: libmicrohttpd refuses that request on its own. */
static int request_has_body(const http_request *req)
{
    unsigned long long n = 0;
    int cl = content_length(req, &n);
    return (cl == 1 && n > 0) || (cl == 0 && http_request_header(req, "Transfer-Encoding"));
}

static void respond_early(http_request *req)
{
    if (req->early_status == 405)
        http_request_add_header(req, "Allow", req->allow);
    if (req->early_status == 401)
        http_request_add_header(req, "WWW-Authenticate", "Bearer realm=\"paymentd\"");
    if (req->early_status == 429) {
        char secs[16];
        snprintf(secs, sizeof secs, "%u", req->retry_after);
        http_request_add_header(req, "Retry-After", secs);
    }
    http_respond_error(req, req->early_status, req->early_code, req->early_msg, NULL);
}

static void run_handler(http_request *req, http_handler_fn fn)
{
    fn(req, req->route->ctx);
    /* Handed to the blocking pool: req is the pool thread's now, and it
     * answers (pool_fn is written on this thread only, before the hand-off). */
    if (req->pool_fn)
        return;
    if (!req->status && !req->then)
        http_respond_error(req, 500, "internal_error", "internal error", NULL);
}

/* A process prefix and a counter, "<16 hex digits>-<n>": unique, and no
 * system call per request. */
static void request_id_generate(http_server *s, char out[REQUEST_ID_MAX + 1])
{
    uint64_t n = atomic_fetch_add_explicit(&s->id_counter, 1, memory_order_relaxed);
    char digits[20];
    size_t k = sizeof digits;
    do {
        digits[--k] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    memcpy(out, s->id_prefix, 16);
    out[16] = '-';
    memcpy(out + 17, digits + k, sizeof digits - k);
    out[17 + sizeof digits - k] = '\0';
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    http_server *s = cls;
    http_request *req = *con_cls;
    (void)version;

    if (!req) {
        /* The fields before request_id start zeroed; the arrays after it
         * are filled before use, and zeroing them cost more than the rest
         * of the allocation. */
        req = malloc(sizeof *req);
        if (!req)
            return MHD_NO;
        memset(req, 0, offsetof(http_request, request_id));
        req->server = s;
        req->conn = conn;
        req->method_name = method;
        req->method = http_method_parse(method);
        req->path = url;
        req->start_us = clock_mono_us();
        const char *rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
        if (rid && request_id_is_sane(rid))
            memcpy(req->request_id, rid, strlen(rid) + 1); /* sane: at most REQUEST_ID_MAX */
        else
            request_id_generate(s, req->request_id);
        atomic_fetch_add(&s->in_flight, 1);
        *con_cls = req;
        request_begin(req);
        /* A request already refused whose body is still to come is answered
         * now, without reading the body: libmicrohttpd then closes the
         * connection, which is what a client sending a refused upload (or
         * waiting for 100 Continue) needs.  Others wait for the usual
         * second call so that keep-alive is kept. */
        if (req->early_status && request_has_body(req))
            respond_early(req);
        return req->failed ? MHD_NO : MHD_YES;
    }
    if (req->failed)
        return MHD_NO;
    if (*upload_data_size) {
        request_take_body(req, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    struct conn_slot *slot = request_slot(req);
    if (slot)
        atomic_store(&slot->busy, 1); /* received whole: no longer the reaper's */
    if (req->status)
        return MHD_YES;
    if (req->then) {
        http_handler_fn then = req->then;
        req->then = NULL;
        req->pool_fn = NULL; /* back from the pool, if it went there */
        atomic_fetch_sub(&req->server->suspended, 1);
        run_handler(req, then);
        return req->failed ? MHD_NO : MHD_YES;
    }
    if (req->early_status) {
        respond_early(req);
        return req->failed ? MHD_NO : MHD_YES;
    }
    run_handler(req, req->route->fn);
    return req->failed ? MHD_NO : MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    http_server *s = cls;
    http_request *req = *con_cls;
    (void)conn;
    (void)toe;
    if (!req)
        return;
    int64_t now = clock_mono_us();
    int64_t us = now - req->start_us;
    access_log_add(s->access, req->request_id, req->method_name, req->path, req->status, us);
    struct conn_slot *slot = request_slot(req);
    if (slot) {
        atomic_store(&slot->since_us, now); /* idle from now on */
        atomic_store(&slot->busy, 0);
    }
    size_t route = req->route ? (size_t)(req->route - s->cfg.routes) : s->cfg.n_routes;
    size_t st = 0;
    while (st < N_METRIC_STATUSES - 1 && metric_statuses[st] != req->status)
        st++;
    metrics_histogram_observe(&s->latency[route * N_METRIC_STATUSES + st], us);
    /* A client that hung up while its request was parked: libmicrohttpd
     * ends the request after the resume without calling the continuation. */
    if (req->then)
        atomic_fetch_sub(&s->suspended, 1);
    request_free(req);
    *con_cls = NULL;
    atomic_fetch_sub(&s->in_flight, 1);
}

/* Percent-decoding of the path and query, as libmicrohttpd would do it,
 * except that "%00" is left encoded: a decoded NUL would silently cut the
 * string, so that "/v1/payments/<id>%00junk" served <id>. */
static size_t on_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    char *w = s;
    for (const char *r = s; *r;) {
        int hi, lo;
        if (r[0] == '%' && (hi = hex_value(r[1])) >= 0 && (lo = hex_value(r[2])) >= 0 &&
            (hi | lo) != 0) {
            *w++ = (char)(hi * 16 + lo);
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

/* Called once a request line has arrived, before its headers: from here
 * the reaper times this request, not the idleness before it. */
static void *on_request_line(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    (void)uri;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct conn_slot *slot = ci ? ci->socket_context : NULL;
    if (slot)
        atomic_store(&slot->since_us, clock_mono_us());
    return NULL; /* the request's context is made by on_access */
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode code)
{
    http_server *s = cls;
    long open = atomic_fetch_add_explicit(&s->connections,
                                          code == MHD_CONNECTION_NOTIFY_STARTED ? 1 : -1,
                                          memory_order_relaxed);
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        /* Past --max-connections a connection is refused at once: shut
         * down, so the client learns now rather than waiting in a queue
         * (libmicrohttpd, at its own limit, would stop accepting and leave
         * connections waiting in the kernel's backlog). */
        if (ci && ((unsigned long)open >= s->max_connections || atomic_load(&s->draining))) {
            (void)shutdown(ci->connect_fd, SHUT_RDWR);
            *socket_ctx = NULL;
            return;
        }
        struct conn_slot *slot = calloc(1, sizeof *slot);
        if (!slot || !ci) {
            free(slot); /* not watched: libmicrohttpd's idle timeout still applies */
            *socket_ctx = NULL;
            return;
        }
        slot->fd = ci->connect_fd;
        atomic_init(&slot->since_us, clock_mono_us());
        atomic_init(&slot->busy, 0);
        conn_slot_link(s, slot);
        *socket_ctx = slot;
        return;
    }
    struct conn_slot *slot = *socket_ctx;
    if (slot) {
        conn_slot_unlink(s, slot);
        free(slot);
        *socket_ctx = NULL;
    }
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    const struct logger *lg = cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    log_msg(lg, LOG_DEBUG, "http: %s", line);
}

/* --- start and stop --------------------------------------------------- */

static int bind_listener(const char *host, uint16_t port, int *fd_out, uint16_t *bound,
                         char *errbuf, size_t errlen)
{
    struct addrinfo hints = {0}, *res = NULL;
    char portstr[8];
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(portstr, sizeof portstr, "%u", (unsigned)port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(errbuf, errlen, "cannot resolve listen address %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
    if (fd < 0) {
        snprintf(errbuf, errlen, "socket: %s", strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        snprintf(errbuf, errlen, "cannot listen on %s:%u: %s", host, (unsigned)port,
                 strerror(errno));
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        snprintf(errbuf, errlen, "getsockname: %s", strerror(errno));
        close(fd);
        return -1;
    }
    *bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                            : ((struct sockaddr_in *)&ss)->sin_port);
    *fd_out = fd;
    return 0;
}

/* Frees the server and what it owns, the daemon and the locks aside.  The
 * access log writes its last lines first, as long as its destination takes
 * (so after the daemon has stopped: no request adds a line any more). */
static void server_free(http_server *s)
{
    http_pool_stop(s->pool);
    ratelimit_free(s->limiter);
    access_log_stop(s->access);
    free(s->latency);
    free(s);
}

int http_server_start(const struct http_server_config *cfg, http_server **out, char *errbuf,
                      size_t errlen)
{
    http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(errbuf, errlen, "out of memory");
        return -1;
    }
    s->cfg = *cfg;
    atomic_init(&s->in_flight, 0);
    atomic_init(&s->connections, 0);
    atomic_init(&s->draining, 0);
    s->max_connections = cfg->max_connections ? cfg->max_connections : 10000;
    atomic_init(&s->suspended, 0);
    atomic_init(&s->id_counter, 1);
    s->latency = calloc((cfg->n_routes + 1) * N_METRIC_STATUSES, sizeof *s->latency);
    int log_rc = access_log_start(cfg->log, &s->access);
    uint64_t prefix;
    if (!s->latency || log_rc != 0 || getrandom(&prefix, sizeof prefix, 0) != sizeof prefix) {
        snprintf(errbuf, errlen, "cannot set up the HTTP server: %s",
                 !s->latency ? "out of memory"
                 : log_rc != 0 ? "cannot start the access log (out of memory or threads)"
                               : "no random source");
        server_free(s);
        return -1;
    }
    snprintf(s->id_prefix, sizeof s->id_prefix, "%016" PRIx64, prefix);
    if (http_pool_start(cfg->blocking_threads ? cfg->blocking_threads : POOL_THREADS_DEFAULT,
                        cfg->blocking_queue ? cfg->blocking_queue : POOL_QUEUE_DEFAULT,
                        &s->pool) != HTTP_POOL_OK) {
        snprintf(errbuf, errlen, "cannot start the HTTP server's blocking pool");
        server_free(s);
        return -1;
    }
    if (cfg->rate_limit > 0 && !(s->limiter = ratelimit_new(cfg->rate_limit))) {
        snprintf(errbuf, errlen, "cannot set up the rate limiter: out of memory");
        server_free(s);
        return -1;
    }
    if (pthread_mutex_init(&s->conns_mu, NULL) != 0 ||
        pthread_cond_init(&s->reaper_wake, NULL) != 0) {
        snprintf(errbuf, errlen, "cannot set up the HTTP server's locks");
        server_free(s);
        return -1;
    }
    if (bind_listener(cfg->host, cfg->port, &s->listen_fd, &s->port, errbuf, errlen) != 0) {
        server_free(s);
        return -1;
    }
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                     MHD_USE_TURBO;
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_access, s,
        /* First, so that what libmicrohttpd says about the options that
         * follow goes to the JSON log too. */
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, (void *)cfg->log,
        MHD_OPTION_LISTEN_SOCKET, s->listen_fd,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)(cfg->threads ? cfg->threads : 1),
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
        MHD_OPTION_URI_LOG_CALLBACK, on_request_line, s,
        MHD_OPTION_UNESCAPE_CALLBACK, on_unescape, NULL,
        MHD_OPTION_STRICT_FOR_CLIENT, (int)1,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)cfg->client_timeout_s,
        /* libmicrohttpd's own limit is kept above ours, so that it keeps
         * accepting and paymentd can refuse (see on_connection). */
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)(s->max_connections + 1024),
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONNECTION_MEMORY,
        MHD_OPTION_END);
    if (!s->daemon) {
        snprintf(errbuf, errlen, "cannot start the HTTP server on %s:%u", cfg->host,
                 (unsigned)s->port);
        close(s->listen_fd);
        server_free(s);
        return -1;
    }
    if (pthread_create(&s->reaper, NULL, reaper_main, s) != 0) {
        snprintf(errbuf, errlen, "cannot start the HTTP server's reaper thread");
        MHD_stop_daemon(s->daemon);
        server_free(s);
        return -1;
    }
    *out = s;
    return 0;
}

uint16_t http_server_port(const http_server *s)
{
    return s->port;
}

void http_server_stop(http_server *s, unsigned grace_ms)
{
    if (!s)
        return;
    /* Not MHD_quiesce_daemon(): with a thread pool on epoll, libmicrohttpd
     * 0.9.75 races its workers to take the listening socket out of their
     * epoll sets and aborts the process when it loses (seen under ASan).
     * The socket stays open until MHD_stop_daemon; what it accepts
     * meanwhile is shut at once, as past --max-connections. */
    atomic_store(&s->draining, 1);
    struct timespec tick = {0, 5 * 1000 * 1000};
    for (unsigned waited = 0; atomic_load(&s->in_flight) > 0 && waited < grace_ms; waited += 5)
        nanosleep(&tick, NULL);
    /* A suspended request must be resumed and answered before the daemon
     * stops (stopping with one parked aborts the process), so these are
     * waited for without a deadline: every store operation ends, if only
     * with an error, within the store's own timeouts. */
    for (unsigned waited = 0; atomic_load(&s->suspended) > 0; waited += 5) {
        if (waited % 5000 == 0)
            log_msg(s->cfg.log, LOG_WARN, "waiting for %ld suspended requests",
                    atomic_load(&s->suspended));
        nanosleep(&tick, NULL);
    }
    if (pthread_mutex_lock(&s->conns_mu) == 0) {
        s->reaper_stop = 1;
        sync_signal(&s->reaper_wake);
        sync_unlock(&s->conns_mu);
    }
    sync_join(s->reaper);
    MHD_stop_daemon(s->daemon);
    /* server_free stops the access log: its last lines, the daemon's final
     * requests included, are written. */
    pthread_cond_destroy(&s->reaper_wake);
    pthread_mutex_destroy(&s->conns_mu);
    server_free(s);
}

void http_server_metrics(const http_server *s, struct buf *b)
{
    static const char *const name = "paymentd_http_request_duration_seconds";
    metrics_render_header(b, "paymentd_http_open_connections", "gauge",
                          "Client connections open now.");
    buf_printf(b, "paymentd_http_open_connections %ld\n",
               atomic_load_explicit(&s->connections, memory_order_relaxed));
    metrics_render_header(b, "paymentd_access_log_dropped_lines_total", "counter",
                          "Access log lines dropped: the log's destination did not take them"
                          " fast enough, or refused them.");
    buf_printf(b, "paymentd_access_log_dropped_lines_total %" PRIu64 "\n",
               access_log_dropped(s->access));
    metrics_render_header(b, "paymentd_http_blocking_queued", "gauge",
                          "Requests waiting for a thread of the pool for work that waits on the"
                          " network (MongoDB, the broker).");
    buf_printf(b, "paymentd_http_blocking_queued %zu\n", http_pool_queued(s->pool));
    metrics_render_header(b, name, "histogram",
                          "Time from a request's headers to its completion, by route and status.");
    for (size_t r = 0; r <= s->cfg.n_routes; r++) {
        const struct http_route *route = r < s->cfg.n_routes ? &s->cfg.routes[r] : NULL;
        char method[16];
        http_methods_format(route ? route->methods : 0, method, sizeof method);
        for (size_t st = 0; st < N_METRIC_STATUSES; st++) {
            char labels[160];
            snprintf(labels, sizeof labels, "method=\"%s\",route=\"%s\",status=\"%d\"",
                     route ? method : "", route ? route->pattern : "unmatched",
                     metric_statuses[st]);
            metrics_render_histogram(b, name, labels, &s->latency[r * N_METRIC_STATUSES + st]);
        }
    }
}

http_server *http_request_server(const http_request *req)
{
    return req->server;
}

const void *http_request_principal(const http_request *req)
{
    return req->principal;
}

/* --- request accessors -------------------------------------------------- */

const char *http_request_method_name(const http_request *req) { return req->method_name; }
const char *http_request_path(const http_request *req) { return req->path; }
const char *http_request_param(const http_request *req) { return req->param; }
const char *http_request_id(const http_request *req) { return req->request_id; }

const char *http_request_header(const http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_request_body(const http_request *req, size_t *len)
{
    *len = req->body.len;
    return req->body.data ? req->body.data : "";
}

struct query_iter {
    int (*fn)(void *arg, const char *key, const char *value);
    void *arg;
    int result;
};

static enum MHD_Result query_iter_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    struct query_iter *it = cls;
    (void)kind;
    it->result = it->fn(it->arg, key, value ? value : "");
    return it->result ? MHD_NO : MHD_YES;
}

int http_request_query_each(const http_request *req,
                            int (*fn)(void *arg, const char *key, const char *value), void *arg)
{
    struct query_iter it = {fn, arg, 0};
    if (MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, query_iter_cb, &it) < 0)
        return -1;
    return it.result;
}

/* --- answering -------------------------------------------------------- */

void http_request_add_header(http_request *req, const char *name, const char *value)
{
    if (req->n_headers == MAX_HEADERS)
        return;
    struct http_header *h = &req->headers[req->n_headers];
    size_t nlen = strlen(name) + 1, vlen = strlen(value) + 1;
    if (nlen + vlen <= HEADER_TEXT_MAX - req->header_used) {
        h->name = memcpy(req->header_text + req->header_used, name, nlen);
        h->value = memcpy(h->name + nlen, value, vlen);
        req->header_used += nlen + vlen;
        h->owned = 0;
    } else {
        h->name = strdup(name);
        h->value = strdup(value);
        h->owned = 1;
        if (!h->name || !h->value) {
            free(h->name);
            free(h->value);
            return;
        }
    }
    req->n_headers++;
}

/* The request a blocking-pool thread is running a handler for, and whether
 * that handler suspended it again (handing it to a store write): then the
 * pool thread must not touch it any more. */
static _Thread_local http_request *pool_request;
static _Thread_local int pool_request_handed_off;

/* Adds the request's headers and the ones every response carries to resp,
 * a JSON Content-Type to a body without one, Cache-Control no-store to an
 * answer whose handler chose no Cache-Control.  Returns resp, or NULL (resp
 * destroyed) out of memory; NULL resp gives NULL. */
static struct MHD_Response *response_headers(http_request *req, struct MHD_Response *resp,
                                             int has_body)
{
    if (!resp)
        return NULL;
    int typed = 0, cached = 0;
    for (size_t i = 0; i < req->n_headers; i++) {
        typed |= strcasecmp(req->headers[i].name, "Content-Type") == 0;
        cached |= strcasecmp(req->headers[i].name, "Cache-Control") == 0;
    }
    int ok = MHD_add_response_header(resp, "X-Request-Id", req->request_id) == MHD_YES &&
             MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff") == MHD_YES &&
             (cached || MHD_add_response_header(resp, "Cache-Control", "no-store") == MHD_YES);
    if (has_body && !typed)
        ok = ok && MHD_add_response_header(resp, "Content-Type", "application/json") == MHD_YES;
    for (size_t i = 0; i < req->n_headers; i++)
        ok = ok && MHD_add_response_header(resp, req->headers[i].name, req->headers[i].value) ==
                       MHD_YES;
    if (!ok) {
        MHD_destroy_response(resp);
        return NULL;
    }
    return resp;
}

/* Makes the response: status, body (taken from body), the request's
 * headers and the ones every response carries.  NULL out of memory. */
static struct MHD_Response *response_build(http_request *req, struct buf *body)
{
    struct MHD_Response *resp;
    int has_body = body && body->len > 0;
    if (has_body) {
        size_t len;
        char *data = buf_steal(body, &len);
        resp = MHD_create_response_from_buffer_with_free_callback(len, data, free);
        if (!resp)
            free(data);
    } else {
        resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    }
    return response_headers(req, resp, has_body);
}

/* Queues resp (NULL: it could not be made) on the loop thread and lets go
 * of it; a failure closes the connection without an answer. */
static void response_queue(http_request *req, int status, struct MHD_Response *resp)
{
    req->status = status;
    if (!resp || MHD_queue_response(req->conn, (unsigned int)status, resp) != MHD_YES) {
        log_msg(req->server->cfg.log, LOG_WARN, "could not queue a %d response", status);
        req->failed = 1;
    }
    if (resp)
        MHD_destroy_response(resp);
}

void http_respond(http_request *req, int status, struct buf *body)
{
    assert(!req->status && !req->staged_status); /* a handler answers once */
    if (req->on_answer) {
        req->on_answer(req->state);
        req->on_answer = NULL;
    }
    struct MHD_Response *resp = response_build(req, body);
    if (pool_request == req) {
        /* libmicrohttpd queues a response from the connection's own
         * thread only: this one is queued when the request resumes. */
        req->staged = resp;
        req->staged_status = status;
        return;
    }
    response_queue(req, status, resp);
}

void http_respond_buf(http_request *req, int status, struct buf *b)
{
    if (buf_failed(b))
        http_respond_error(req, 500, "internal_error", "internal error", NULL);
    else
        http_respond(req, status, b);
    buf_free(b);
}

void http_respond_error(http_request *req, int status, const char *code, const char *message,
                        const char *extra)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"error_code\":\"");
    buf_json_escape(&b, code, strlen(code));
    buf_puts(&b, "\",\"error_message\":\"");
    buf_json_escape(&b, message, strlen(message));
    buf_puts(&b, "\"");
    if (extra && *extra) {
        buf_puts(&b, ",");
        buf_puts(&b, extra);
    }
    buf_puts(&b, "}");
    if (status == 503)
        http_request_add_header(req, "Retry-After", "1");
    if (buf_failed(&b)) {
        buf_free(&b);
        http_respond(req, 500, NULL);
        return;
    }
    http_respond(req, status, &b);
    buf_free(&b);
}

/* --- a streamed answer ------------------------------------------------- */

/* The MHD block size asked of a streamed answer: what one read copies. */
#define STREAM_BLOCK (32 * 1024)

/* A streamed answer (http_respond_stream): the piece being sent and what
 * makes the next.  libmicrohttpd reads it on the connection's loop thread;
 * while a pool thread makes a piece the connection is suspended, so only
 * one thread touches it at a time.  Freed with the response. */
struct http_stream {
    http_server *server;
    struct MHD_Connection *conn;
    http_stream_fn next;          /* makes the next piece */
    void *state;                  /* next's, owned */
    void (*state_free)(void *);   /* frees state */
    int blocks;                   /* next runs on the blocking pool */
    struct buf piece;             /* the piece being sent */
    size_t sent;                  /* bytes of piece sent */
    int step;                     /* enum http_stream_step of piece */
    int filling;                  /* a pool thread is making the next piece, or just did */
};

static void stream_free(void *cls)
{
    struct http_stream *st = cls;
    if (st->filling)
        atomic_fetch_sub(&st->server->suspended, 1); /* the client left meanwhile */
    if (st->state_free)
        st->state_free(st->state);
    buf_free(&st->piece);
    free(st);
}

/* Makes the next piece into st->piece: on whatever thread runs it. */
static void stream_make(struct http_stream *st)
{
    buf_reset(&st->piece);
    st->sent = 0;
    st->step = st->next(st->state, &st->piece);
    if (buf_failed(&st->piece))
        st->step = HTTP_STREAM_FAIL;
}

/* A pool thread's job: the next piece, then the connection resumes. */
static void stream_fill_job(void *arg)
{
    struct http_stream *st = arg;
    stream_make(st);
    MHD_resume_connection(st->conn);
}

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    struct http_stream *st = cls;
    (void)pos;
    if (st->filling) { /* resumed: the pool thread made the piece */
        st->filling = 0;
        atomic_fetch_sub(&st->server->suspended, 1);
    }
    for (;;) {
        if (st->sent < st->piece.len) {
            size_t n = st->piece.len - st->sent < max ? st->piece.len - st->sent : max;
            memcpy(out, st->piece.data + st->sent, n);
            st->sent += n;
            return (ssize_t)n;
        }
        if (st->step == HTTP_STREAM_END)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (st->step != HTTP_STREAM_MORE)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (!st->blocks) {
            stream_make(st);
            continue;
        }
        /* Suspended before the hand-off, so that the pool's resume can
         * never come first; read again once resumed. */
        st->filling = 1;
        atomic_fetch_add(&st->server->suspended, 1);
        MHD_suspend_connection(st->conn);
        if (http_pool_submit(st->server->pool, stream_fill_job, st) != HTTP_POOL_OK) {
            log_msg(st->server->cfg.log, LOG_WARN,
                    "a streamed answer is cut short: the blocking pool is full");
            st->step = HTTP_STREAM_FAIL;
            buf_reset(&st->piece);
            st->sent = 0;
            MHD_resume_connection(st->conn);
        }
        return 0;
    }
}

void http_respond_stream(http_request *req, int status, struct buf *first, int blocks,
                         http_stream_fn next, void *state, void (*free_fn)(void *))
{
    assert(!req->status && !req->staged_status); /* a handler answers once */
    if (req->on_answer) {
        req->on_answer(req->state);
        req->on_answer = NULL;
    }
    struct http_stream *st = calloc(1, sizeof *st);
    if (!st) {
        if (free_fn)
            free_fn(state);
        buf_free(first);
        http_respond_error(req, 500, "internal_error", "internal error", NULL);
        return;
    }
    *st = (struct http_stream){req->server, req->conn, next, state, free_fn, blocks, BUF_INIT,
                               0, HTTP_STREAM_MORE, 0};
    st->piece = *first;
    *first = (struct buf)BUF_INIT;
    struct MHD_Response *resp = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, STREAM_BLOCK, stream_read, st, stream_free);
    if (!resp)
        stream_free(st);
    resp = response_headers(req, resp, 1); /* destroying it frees st */
    if (pool_request == req) {
        req->staged = resp; /* queued when the request resumes, as http_respond's */
        req->staged_status = status;
        return;
    }
    response_queue(req, status, resp);
}

/* --- suspension --------------------------------------------------------- */

void http_request_set_state(http_request *req, void *state, void (*free_fn)(void *))
{
    req->state = state;
    req->state_free = free_fn;
}

void *http_request_state(const http_request *req)
{
    return req->state;
}

void http_request_on_answer(http_request *req, void (*fn)(void *state))
{
    req->on_answer = fn;
}

void http_request_suspend(http_request *req, http_handler_fn then)
{
    assert(!req->status && !req->staged_status && !req->then);
    req->then = then;
    if (pool_request == req) {
        /* Suspended already, by http_request_run_blocking. */
        pool_request_handed_off = 1;
        return;
    }
    atomic_fetch_add(&req->server->suspended, 1);
    MHD_suspend_connection(req->conn);
}

void http_request_resume(http_request *req)
{
    MHD_resume_connection(req->conn);
}

/* --- the blocking pool -------------------------------------------------- */

/* The continuation that queues what a handler answered on the pool. */
static void respond_staged(http_request *req, void *ctx)
{
    (void)ctx;
    struct MHD_Response *resp = req->staged;
    req->staged = NULL;
    response_queue(req, req->staged_status, resp);
}

static void respond_pool_full(http_request *req, void *ctx)
{
    (void)ctx;
    http_respond_error(req, 503, "server_busy",
                       "the server has too much blocking work queued; retry later", NULL);
}

/* A pool thread: runs the handler, then resumes the request unless the
 * handler handed it on (its hand-off resumes it). */
static void pool_job_run(void *arg)
{
    http_request *req = arg;
    pool_request = req;
    pool_request_handed_off = 0;
    const struct http_server_config *cfg = &req->server->cfg;
    int64_t wait_ms = cfg->blocking_wait_ms ? cfg->blocking_wait_ms : POOL_WAIT_MS_DEFAULT;
    if (clock_mono_us() - req->pool_queued_us > wait_ms * 1000)
        respond_pool_full(req, NULL); /* staged, as a handler's answer */
    else
        req->pool_fn(req, req->route->ctx);
    int handed_off = pool_request_handed_off;
    pool_request = NULL;
    if (handed_off)
        return; /* req may be answered and freed by now */
    if (!req->staged_status) {
        /* A handler that neither answered nor suspended: a bug. */
        assert(!"a handler on the blocking pool returned without answering");
        req->staged_status = 500;
    }
    req->then = respond_staged;
    http_request_resume(req);
}

void http_request_run_blocking(http_request *req, http_handler_fn fn)
{
    assert(pool_request != req && !req->status && !req->then && req->route);
    req->pool_fn = fn;
    req->pool_queued_us = clock_mono_us();
    /* Suspended before it is handed over, so that the pool's resume can
     * never come first. */
    atomic_fetch_add(&req->server->suspended, 1);
    MHD_suspend_connection(req->conn);
    if (http_pool_submit(req->server->pool, pool_job_run, req) != HTTP_POOL_OK) {
        req->then = respond_pool_full;
        http_request_resume(req);
    }
}

int http_request_on_pool(const http_request *req)
{
    return pool_request == req;
}
