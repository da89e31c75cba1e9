/* deliver_internal: what the deliverer's files share (deliver.c: start,
 * stop, wake, metrics; dispatch.c: the dispatcher thread; sender.c: the
 * sender thread, which claims deliveries and records their attempts;
 * transfer.c: the transfer thread, which runs the requests on libcurl's
 * multi handle; request.c: one attempt's request; record.c: an attempt's
 * outcome into the store; attempt.c: the pure decisions, unit tested).
 *
 * The sender and the transfer threads are two so that a slow store call
 * (a claim, a record) never holds up the transfers in flight, whose
 * timeouts run meanwhile: the sender hands made requests to the transfer
 * thread on the ready list (and wakes it with curl_multi_wakeup), which
 * hands them back finished on the done list (and broadcasts cv).
 *
 * Threads: the configuration and owner are set before the threads start
 * and read-only after; the flags and both lists are under mu; the counters
 * are atomics; the multi handle belongs to the transfer thread, except
 * curl_multi_wakeup, which any thread may call. */
#ifndef WEBHOOK_DELIVER_INTERNAL_H
#define WEBHOOK_DELIVER_INTERNAL_H

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/buf.h"
#include "webhook/deliver.h"
#include "webhook/endpoint.h"

#define WEBHOOK_LEASE_EXTRA_MS 5000        /* a lease outlasts the timeout by this */
#define WEBHOOK_IN_FLIGHT_MAX 64           /* attempts claimed and not yet recorded, at most */
#define WEBHOOK_ANSWER_MAX (64 * 1024)     /* bytes of a receiver's answer read */
#define WEBHOOK_RETRY_AFTER_MAX_MS (24LL * 3600 * 1000) /* a Retry-After is capped at this */
#define WEBHOOK_JITTER_PERCENT 10          /* a retry's delay varies by +- this */
#define WEBHOOK_OWNER_MAX 128              /* bytes of the lease owner's name */
#define WEBHOOK_PENDING_EVERY_MS 1000      /* how often the pending gauges are read */
#define WEBHOOK_ERROR_MAX 160              /* bytes of an attempt's error text */
#define WEBHOOK_NICE 10                    /* the delivery threads' nice value above the process's */

struct webhook_request;

struct webhook_deliver {
    struct webhook_deliver_config c;    /* as started; pointers borrowed */
    char owner[WEBHOOK_OWNER_MAX];      /* this process's lease owner: host-pid-random */
    pthread_mutex_t mu;                 /* guards the flags and lists below */
    pthread_cond_t cv;                  /* broadcast by wake, stop and a finished transfer */
    int stopping;                       /* set once by stop */
    int dispatch_woken;                 /* wake was called since the dispatcher last looked */
    int sender_woken;                   /* deliveries may be due: the sender claims */
    struct webhook_request *ready;      /* made, for the transfer thread (a list on next) */
    struct webhook_request *done;       /* finished, for the sender to record (on next) */
    CURLM *multi;                       /* the transfer thread's transfers */
    pthread_t dispatcher;               /* webhook_dispatch_main */
    pthread_t sender;                   /* webhook_sender_main */
    pthread_t transfer;                 /* webhook_transfer_main */
    /* Counters and gauges, for metrics: */
    _Atomic uint64_t succeeded;         /* deliveries that succeeded */
    _Atomic uint64_t failed;            /* deliveries that failed */
    _Atomic uint64_t retrying;          /* attempts that left their delivery pending */
    _Atomic uint64_t attempts;          /* attempts recorded */
    _Atomic int64_t pending;            /* pending deliveries, as last read; -1 not yet */
    _Atomic int64_t oldest_pending_ms;  /* creation time of the oldest of them; 0 none */
};

/* The thread functions; arg is the webhook_deliver. */
void *webhook_dispatch_main(void *arg);
void *webhook_sender_main(void *arg);
void *webhook_transfer_main(void *arg);

/* Lowers the calling delivery thread's scheduling priority by WEBHOOK_NICE:
 * when the CPUs are busy the request threads run first and deliveries wait
 * (they only ever run late), never the other way round.  Each thread calls
 * it first; a failure is logged and leaves the thread as it was. */
void webhook_thread_deprioritize(webhook_deliver *d);

/* Whether stop was called. */
int webhook_deliver_stopping(webhook_deliver *d);

/* Wakes the sender: it claims at once (when it has room). */
void webhook_sender_wake(webhook_deliver *d);

/* ---- attempt.c: the decisions of an attempt ---------------------------- */

/* What an attempt gave. */
struct webhook_attempt_result {
    long status;                      /* the receiver's HTTP status; 0 when none */
    const char *error;                /* NULL, or what went wrong when no status came */
    int64_t retry_after_ms;           /* the answer's Retry-After as a time; 0 none */
    int final;                        /* no retry whatever the schedule (endpoint disabled) */
};

/* What to record of it. */
struct webhook_decision {
    enum payment_delivery_status status; /* the delivery's new status */
    int64_t next_ms;                  /* pending: when the next attempt is due; else 0 */
    int succeeded;                    /* the attempt succeeded (2xx) */
    int gone;                         /* 410: the endpoint is to be disabled */
};

/* Decides the outcome of attempt number attempt (1-based) made at now_ms
 * under c's schedule: 2xx succeeded; 410 failed and gone; final failed;
 * otherwise
 * pending, due at now_ms + schedule_ms[attempt] with jitter (rnd picks it)
 * and no earlier than a 429's or 503's Retry-After (capped at
 * WEBHOOK_RETRY_AFTER_MAX_MS from now), while the schedule lasts; then
 * failed. */
void webhook_attempt_decide(const struct webhook_deliver_config *c, int attempt,
                            const struct webhook_attempt_result *r, int64_t now_ms,
                            uint64_t rnd, struct webhook_decision *out);

/* delay_ms varied by up to +- WEBHOOK_JITTER_PERCENT, rnd picking where;
 * never negative. */
int64_t webhook_jitter(int64_t delay_ms, uint64_t rnd);

/* The time a Retry-After value (len bytes: delta-seconds or an HTTP-date,
 * surrounding blanks allowed) names, received at now_ms.  Returns it (never
 * before now_ms), or 0 when the value is malformed. */
int64_t webhook_retry_after_parse(const char *v, size_t len, int64_t now_ms);

/* Appends the attempt's object, as store.h's attempt_json holds it:
 * {"attempt","at","status_code","error","latency_ms","next_attempt_at"}.
 * Returns 0, or -1 out of memory. */
int webhook_attempt_json(struct buf *b, int attempt, int64_t at_ms,
                         const struct webhook_attempt_result *r, int64_t latency_ms,
                         const struct webhook_decision *dec);

/* ---- record.c: an attempt's outcome into the store ---------------------- */

/* One claimed delivery, as the sender holds it. */
struct webhook_job {
    char delivery_id[UUID_STR_LEN + 1];
    char webhook_id[UUID_STR_LEN + 1];
    char event_id[UUID_STR_LEN + 1];
    int attempts;                        /* recorded before this attempt */
    char *body;                          /* owned: the bytes to send */
    size_t body_len;
};

/* One finished attempt to record: what the caller gives, then what
 * webhook_record_attempts works out. */
struct webhook_record {
    const struct webhook_job *job;              /* what was attempted */
    int64_t at_ms;                              /* when the attempt was made */
    int64_t latency_ms;                         /* how long it took */
    const struct webhook_attempt_result *r;     /* what it gave */
    int attempt;                                /* its number, 1-based */
    int64_t now_ms;                             /* when it was decided */
    struct webhook_decision dec;                /* the delivery's new state */
    struct buf json;                            /* the attempt's object, while recorded */
};

/* Records the attempts recs[0..n) (n at most WEBHOOK_IN_FLIGHT_MAX) in one
 * store call (one commit on the embedded store), counts them, logs each
 * failure, and disables an endpoint on a 410 or when it has failed for
 * disable_after.  Never fails: a lost lease (ECONFLICT) or a store error is
 * logged, and the lease lets the delivery be tried again. */
void webhook_record_attempts(webhook_deliver *d, struct webhook_record *recs, size_t n);

/* webhook_record_attempts of one attempt: job's, made at at_ms, what it
 * gave and its latency. */
void webhook_record_attempt(webhook_deliver *d, const struct webhook_job *job, int64_t at_ms,
                            const struct webhook_attempt_result *r, int64_t latency_ms);

/* Disables endpoint webhook_id with reason (its document and enabled
 * column), retrying a few times when its version moves meanwhile.  Logged;
 * nothing returned. */
void webhook_disable_endpoint(webhook_deliver *d, const char *webhook_id, const char *reason);

/* ---- request.c: one attempt's HTTP request ------------------------------- */

#define WEBHOOK_RETRY_AFTER_MAX 64 /* bytes of a Retry-After value kept */

/* One attempt, from its making to its record: its easy handle, what its
 * callbacks saw, and what it gave. */
struct webhook_request {
    struct webhook_job job;          /* what is attempted; owns the body */
    webhook_deliver *d;
    CURL *easy;                      /* owned; in d->multi while in flight */
    struct curl_slist *headers;      /* owned */
    int64_t at_ms;                   /* when it was begun */
    int64_t started_us;              /* monotonic, for the latency */
    size_t answer_bytes;             /* of the answer's body read */
    int answer_cut;                  /* the answer was longer than WEBHOOK_ANSWER_MAX */
    int refused;                     /* a connection's address was refused */
    char retry_after[WEBHOOK_RETRY_AFTER_MAX]; /* the last answer's Retry-After, or "" */
    char errbuf[CURL_ERROR_SIZE];    /* libcurl's detail of a failure */
    struct webhook_attempt_result outcome; /* finished: what it gave (error may be error's) */
    char error[WEBHOOK_ERROR_MAX];   /* finished: the text of an error */
    int64_t latency_ms;              /* finished: from its start */
    struct webhook_request *prev, *next; /* the list it is on (ready, in flight, done) */
};

/* A request for job to t's url, signed by t's secrets at this second,
 * ready for the multi handle.  It takes job's body.  NULL, with why an
 * error text for the attempt and job untouched, when it cannot be made. */
struct webhook_request *webhook_request_new(webhook_deliver *d, struct webhook_job *job,
                                            const struct webhook_target *t, const char **why);

/* Frees q, its easy handle (out of the multi handle already) and body. */
void webhook_request_free(struct webhook_request *q);

/* Sets q's outcome, error and latency_ms from its finished transfer
 * (libcurl's result, or a failure to start it). */
void webhook_request_finish(struct webhook_request *q, CURLcode result);

/* Hands q to the transfer thread (sender). */
void webhook_transfer_submit(webhook_deliver *d, struct webhook_request *q);

#endif
