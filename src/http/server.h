/* server: the HTTP/1.1 front of paymentd, on libmicrohttpd.
 *
 * One epoll event loop per thread of a pool; a request's body is collected
 * in memory (bounded by max_body), then its route's handler runs on the
 * loop thread.  A handler either answers at once or suspends the request,
 * hands work to another thread, and is resumed when that work is done; the
 * loop never blocks on a write to the store.  A handler that would wait on
 * the network (a MongoDB read, the broker) asks to run on the server's
 * blocking pool instead (http_request_run_blocking): a bounded set of
 * threads and a bounded queue, full at which the request is answered 503
 * server_busy with Retry-After at once.  The loop threads thus keep
 * answering /healthz, /metrics and every request that needs no stalled
 * dependency.
 *
 * Checks made here, before any handler, in the order that decides which
 * error a client sees: route and method (404, 405 with Allow), credentials
 * (401 with WWW-Authenticate), the caller's rate (429 with Retry-After), a
 * principal's right to a method other than GET and HEAD (403 forbidden), a {id} that must be a UUID (400
 * invalid_id), content type for routes with a body (415), body size (413).  Every response carries X-Request-Id and
 * X-Content-Type-Options; every error body is
 * {"error_code": "...", "error_message": "..."}.  One access log line is
 * written per request when it completes. */
#ifndef HTTP_SERVER_H
#define HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/log.h"
#include "http/router.h"

typedef struct http_server http_server;
typedef struct http_request http_request;

struct http_server_config {
    const char *host;                 /* address or host name to bind */
    uint16_t port;                    /* 0 picks a free port (see http_server_port) */
    unsigned threads;                 /* event loop threads, >= 1 */
    size_t max_body;                  /* bytes; larger bodies get 413 */
    unsigned client_timeout_s;        /* idle connections are closed after this */
    unsigned max_connections;         /* beyond this, new connections are refused */
    double rate_limit;                /* requests/s per caller on HTTP_ROUTE_AUTH routes; 0: off */
    const struct http_route *routes;  /* the route table */
    size_t n_routes;
    const struct logger *log;
    /* Decides who a request to an HTTP_ROUTE_AUTH route acts as, from its
     * Authorization header (NULL when absent): returns the principal, or
     * NULL to answer 401.  NULL authenticate: every request is let in with
     * no principal. */
    const void *(*authenticate)(void *ctx, const char *authorization);
    void *auth_ctx;
    /* Whether that principal may make a request that is not a GET or a
     * HEAD: NULL when it may, else the message of the 403 forbidden it is
     * answered with.  NULL authorize: every principal may. */
    const char *(*authorize_write)(const void *principal);
    /* The name a principal is rate limited under (its key's id): the same
     * for the same caller across reloads of the keys, which hand out new
     * principals.  NULL: the principal's address. */
    const char *(*principal_name)(const void *principal);
    unsigned blocking_threads;        /* threads of the blocking pool; 0: 32 */
    size_t blocking_queue;            /* requests waiting for them, beyond: 503; 0: 1024 */
    unsigned blocking_wait_ms;        /* a request waiting longer for them: 503; 0: 5000 */
};

/* Binds and starts serving.  Returns 0, or -1 with a one-line reason in
 * errbuf (port in use, bad address...). */
int http_server_start(const struct http_server_config *cfg, http_server **out, char *errbuf,
                      size_t errlen);

/* The bound port. */
uint16_t http_server_port(const http_server *s);

/* Stops accepting, lets in-flight requests finish (at most grace_ms, but
 * suspended ones always, since they cannot be dropped), closes every
 * connection and frees the server.  NULL is a no-op. */
void http_server_stop(http_server *s, unsigned grace_ms);

/* Appends the server's metrics in the Prometheus text format: open
 * connections, and request latency histograms by route and status (their
 * _count series are the request counts). */
void http_server_metrics(const http_server *s, struct buf *b);

/* --- What a handler reads --------------------------------------------- */

/* The server serving req. */
http_server *http_request_server(const http_request *req);
/* Who the request acts as (see authenticate), or NULL. */
const void *http_request_principal(const http_request *req);

/* The method as the client sent it ("GET"). */
const char *http_request_method_name(const http_request *req);
const char *http_request_path(const http_request *req);
/* The route's {id} segment, NUL-terminated, or NULL. */
const char *http_request_param(const http_request *req);
/* The request's id, as its answer's X-Request-Id carries it: the client's
 * X-Request-Id when sane (1..128 of A-Z a-z 0-9 - _ . :), else one made
 * here, unique within the process's life.  Valid for the request. */
const char *http_request_id(const http_request *req);
/* A request header (case-insensitive name), or NULL. */
const char *http_request_header(const http_request *req, const char *name);
/* The body (NUL-terminated for convenience; may contain NULs), len set. */
const char *http_request_body(const http_request *req, size_t *len);
/* Calls fn for each query parameter, decoded, in order; stops at and
 * returns fn's first non-zero result. */
int http_request_query_each(const http_request *req,
                            int (*fn)(void *arg, const char *key, const char *value), void *arg);

/* --- How a handler answers ---------------------------------------------- */

/* Adds a response header (copied).  At most 8 per response. */
void http_request_add_header(http_request *req, const char *name, const char *value);

/* Answers with status and a JSON body (its bytes are taken from body,
 * which is left empty; NULL or empty for no body).  Call at most once. */
void http_respond(http_request *req, int status, struct buf *body);

/* Answers status with the bytes of b, or 500 internal_error when b ran out
 * of memory while it was built; frees b either way. */
void http_respond_buf(http_request *req, int status, struct buf *b);

/* Answers {"error_code": code, "error_message": message}; extra, when not
 * NULL, is a fragment of further members ("\"errors\":[...]") spliced in. */
void http_respond_error(http_request *req, int status, const char *code, const char *message,
                        const char *extra);

/* --- A streamed answer -------------------------------------------------- */

/* What next returns (http_respond_stream). */
enum http_stream_step {
    HTTP_STREAM_MORE = 0,  /* b holds a piece (maybe empty); more follows */
    HTTP_STREAM_END = 1,   /* b holds the last piece (maybe empty) */
    HTTP_STREAM_FAIL = -1, /* the body cannot go on: it ends cut short */
};

/* Makes the next piece of a streamed body: appends it to b (empty on each
 * call) and returns an enum http_stream_step. */
typedef int (*http_stream_fn)(void *state, struct buf *b);

/* Answers status with a body of unknown length (chunked), first the bytes
 * of first (taken, left empty), then the pieces next makes as the client
 * reads, one at a time: so the answer's memory is a piece, whatever its
 * length.  next runs on a thread of the blocking pool when blocks (the
 * connection suspended meanwhile: the loop never waits on it), else on the
 * loop thread.  A piece that fails, or a full pool, ends the body without
 * its last chunk, which the client sees as a cut answer.  The headers
 * added so far go with it (a Content-Type among them).  state is freed with
 * free_fn once the answer is done or its client gone (also when the answer
 * cannot be made).  Call at most once, instead of http_respond. */
void http_respond_stream(http_request *req, int status, struct buf *first, int blocks,
                         http_stream_fn next, void *state, void (*free_fn)(void *));

/* --- Answering later ---------------------------------------------------- */

/* Attaches handler state, freed with free_fn when the request completes. */
void http_request_set_state(http_request *req, void *state, void (*free_fn)(void *));
void *http_request_state(const http_request *req);

/* Calls fn(state) once, just before the request's answer is queued: for
 * what must end as soon as the client can see the answer (a retry may
 * follow at once), before the request itself is freed. */
void http_request_on_answer(http_request *req, void (*fn)(void *state));

/* Parks the request: no answer now; after http_request_resume() the server
 * calls then(req, ctx) on a loop thread, which must answer.  Call it as the
 * handler's last step, before handing the work off. */
void http_request_suspend(http_request *req, http_handler_fn then);

/* Wakes a suspended request; safe from any thread, exactly once. */
void http_request_resume(http_request *req);

/* --- Blocking work ------------------------------------------------------- */

/* Runs fn(req, route ctx) on a thread of the server's blocking pool, the
 * request suspended meanwhile: call it from a handler on the loop thread,
 * as its last step.  fn is a handler like any other (it answers, or
 * suspends and answers from its continuation, which runs on a loop
 * thread); what it answers on the pool is queued when the request resumes.
 * When the pool's queue is full, or the request waited in it longer than
 * blocking_wait_ms, the request is answered 503 server_busy, with
 * Retry-After, without running fn. */
void http_request_run_blocking(http_request *req, http_handler_fn fn);

/* Whether the caller is the blocking pool's thread running req's handler. */
int http_request_on_pool(const http_request *req);

#endif
