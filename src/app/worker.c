/* worker: see worker.h.  One control thread keeps the membership key and
 * the leases; one thread per partition applies that partition's messages
 * while the worker holds its lease.  Ownership (owned, fence) lives in the
 * partition's slot under the worker's mutex; the store's fencing makes a
 * stale view harmless, so neither side waits on the network while holding
 * the mutex. */
#include "app/worker.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/opstream.h"
#include "core/clock.h"
#include "core/sync.h"
#include "core/uuid.h"
#include "payment/changes.h"
#include "payment/doc.h"
#include "payment/idem.h"
#include "payment/operation.h"
#include "payment/revision.h"

#define WORKER_LEASES "PAYMENTS_LEASES"
#define WORKER_MEMBERS "PAYMENTS_WORKERS"
#define WORKER_RETRY_MS 100 /* pause before retrying a message the store did not take */
#define WORKER_BACKOFF_MAX_MS 5000 /* longest pause between tries of a failing message */
#define WORKER_READ_MS 200  /* longest wait for a message before ownership is checked */
#define WORKER_TRIM_REFRESHES 5 /* applied messages are trimmed from the stream this often */
#define WORKER_TICK_MS 250  /* how often membership is looked at, at most */
#define WORKER_ACQUIRE_MS 100 /* how often a wanted lease held by another is looked for */
/* Longest wait for a listing: one that cannot be had (a cluster electing
 * its metadata leader) must not hold up the refreshes of the leases. */
#define WORKER_LIST_MS 1000

/* A store write's answer, awaited by the partition thread. */
struct wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done; /* set by the callback */
    int err;  /* its err */
};

/* One partition's slot. */
struct part {
    struct worker *w; /* owner of the slot */
    uint32_t p;       /* partition number */
    pthread_t thread; /* its applying thread */
    struct wait wait; /* the store answer in flight */
    /* Guarded by w->mu (written by the control thread, but for busy, and
     * owned cleared when the store fences the partition thread off): */
    int owned;         /* the worker holds the lease */
    uint64_t fence;    /* the lease's current revision, valid while owned */
    uint64_t acquired; /* acquisitions of the lease so far: a reader's epoch */
    int busy;          /* the thread applies a message; released only when 0 */
    int releasing;     /* being handed back: owned is 0, the lease not yet deleted */
    /* The control thread's own: */
    int wanted;        /* ours by the current membership */
    int leased;        /* acquisition: its lease is held (by anyone), or not wanted */
};

struct worker {
    char *urls;                    /* broker URLs, owned */
    char id[128];                  /* lease value */
    uint32_t partitions;           /* partitions of the stream */
    int ttl_ms;                    /* lease and membership lifetime */
    int refresh_ms;                /* refresh interval */
    unsigned max_attempts;         /* tries of a message failing with EINTERNAL, >= 1 */
    payment_store *store;          /* borrowed */
    const payment_validator *v;    /* borrowed */
    const struct logger *log;      /* borrowed */
    broker *b;                     /* the connection, owned */
    broker_kv *leases;             /* bucket PAYMENTS_LEASES */
    broker_kv *members;            /* bucket PAYMENTS_WORKERS */
    pthread_t control;             /* membership and leases */
    int control_started;           /* control was created */
    pthread_mutex_t mu;            /* guards stopping and each part's owned/fence/busy */
    pthread_cond_t cv;             /* signalled on any change under mu */
    int stopping;                  /* set once by stop */
    char member_key[48];           /* our membership key "w.<UUIDv7 of the start>" */
    uint64_t member_rev;           /* its revision, 0 while it is not ours */
    _Atomic uint64_t applied;      /* messages applied or skipped */
    struct part *parts;            /* partitions slots */
    uint32_t started;              /* partition threads started */
};

/* Sleeps ms, or less when the worker stops.  The condition variable is
 * signalled for other reasons too: only the deadline or the stop end it. */
static void worker_pause(struct worker *w, int ms)
{
    (void)sync_pause_ms(&w->cv, &w->mu, &w->stopping, ms); /* callers read stopping again */
}

/* ---- applying one message ---------------------------------------------- */

static void wait_done(void *arg, int err, int64_t current_version, int64_t seq)
{
    (void)current_version;
    (void)seq;
    struct wait *wt = arg;
    sync_lock(&wt->mu);
    wt->err = err;
    wt->done = 1;
    sync_signal(&wt->cv);
    sync_unlock(&wt->mu);
}

/* What an apply borrows until the store answers. */
struct prepared {
    struct operation op; /* the decoded message */
    json_t *cur;         /* the stored document (replace, patch) */
    json_t *doc;         /* the document to write */
    char *text;          /* its serialization */
    struct payment_row row;
    char msg[240];       /* kind NONE's message */
    struct payment_idem idem; /* a keyed request's record, pointing into op */
    char *changes;       /* an update: the paths it changes (changes.h) */
    struct payment_event_info event; /* the write's event, pointing into op */
};

static void prepared_free(struct prepared *pr)
{
    operation_free(&pr->op);
    json_decref(pr->cur);
    json_decref(pr->doc);
    free(pr->text);
    free(pr->changes);
}

static const char *type_or(const json_t *data, const char *fallback)
{
    const char *t = payment_doc_string(data, "type");
    return t && *t ? t : fallback;
}

static void fail(struct payment_apply *a, struct prepared *pr, const char *code, const char *msg)
{
    a->kind = PAYMENT_APPLY_NONE;
    a->row = NULL;
    a->event = NULL; /* no write, no event */
    snprintf(pr->msg, sizeof pr->msg, "%s", msg);
    a->error_code = code;
    a->error_message = pr->msg;
}

/* "the payment is not valid: N problems: field message; ..." in pr->msg. */
static void fail_invalid(struct payment_apply *a, struct prepared *pr, const json_t *errors)
{
    size_t n = json_array_size(errors);
    char msg[sizeof pr->msg];
    int len = snprintf(msg, sizeof msg, "the payment is not valid: %zu problem%s", n,
                       n == 1 ? "" : "s");
    for (size_t i = 0; i < n && len > 0 && (size_t)len < sizeof msg; i++) {
        const json_t *e = json_array_get(errors, i);
        len += snprintf(msg + len, sizeof msg - (size_t)len, "%s %s %s", i ? ";" : ":",
                        payment_doc_string(e, "field") ?: "",
                        payment_doc_string(e, "message") ?: "");
    }
    fail(a, pr, "validation_failed", msg);
}

/* Fills a->row from pr->doc.  0, or EINTERNAL (no memory). */
static int build_row(struct payment_apply *a, struct prepared *pr, int64_t created_ms,
                     int64_t now)
{
    if (!pr->doc || payment_doc_row(pr->doc, created_ms, now, &pr->row, &pr->text) != 0)
        return PAYMENT_STORE_EINTERNAL;
    a->row = &pr->row;
    return 0;
}

static int prepare_create(struct payment_apply *a, struct prepared *pr, json_t *data, int64_t now)
{
    char created_on[CLOCK_TIMESTAMP_LEN + 1];
    clock_format_ms(now, created_on);
    json_t *attributes = json_object_get(data, "attributes");
    json_t *rel = json_object_get(data, "relationships");
    if (!json_is_object(attributes))
        return fail(a, pr, "bad_request", "data.attributes must be an object"), 0;
    payment_attributes_strip_nulls(attributes); /* as the HTTP node's validation did */
    pr->doc = payment_doc_new(type_or(data, "payments"), pr->op.payment_id, 0,
                              pr->op.organisation_id, created_on, now, attributes,
                              json_is_null(rel) ? NULL : rel);
    a->kind = PAYMENT_APPLY_CREATE;
    return build_row(a, pr, now, now);
}

/* Reads the payment an update or delete names into pr->cur, with its
 * creation time.  Returns 0, or 1 after recording not_found: no such
 * payment, or one of another organisation than the operation's, which does
 * not exist for it (as on the synchronous routes, so that an operation's
 * outcome never tells that another organisation's payment exists); or a
 * store error to retry on. */
static int read_current(struct worker *w, struct payment_apply *a, struct prepared *pr,
                        int64_t *created_ms)
{
    struct buf b = BUF_INIT;
    int64_t version;
    int err = payment_store_get_meta(w->store, pr->op.payment_id, &b, &version, created_ms);
    if (err != PAYMENT_STORE_OK && err != PAYMENT_STORE_ENOTFOUND) {
        buf_free(&b);
        return err;
    }
    if (err == PAYMENT_STORE_OK) {
        pr->cur = json_loadb(b.data, b.len, 0, NULL);
        if (!json_is_object(pr->cur)) {
            buf_free(&b);
            return PAYMENT_STORE_EINTERNAL;
        }
    }
    buf_free(&b);
    const char *org = payment_doc_string(pr->cur, "organisation_id");
    if (err == PAYMENT_STORE_ENOTFOUND || !org || strcmp(org, pr->op.organisation_id) != 0)
        return fail(a, pr, "not_found", "no payment with this id"), 1;
    return 0;
}

/* Replace and patch: the next version of the stored payment, as the
 * synchronous PUT and PATCH build it (revision.h). */
static int prepare_update(struct worker *w, struct payment_apply *a, struct prepared *pr,
                          int64_t now)
{
    int64_t created_ms;
    int err = read_current(w, a, pr, &created_ms);
    if (err != 0)
        return err > 0 ? 0 : err;
    struct revision_input in = {
        .current = pr->cur,
        .created_ms = created_ms,
        .base_version = pr->op.base_version,
        .data = pr->op.data,
        .mode = pr->op.kind == OPERATION_PATCH ? REVISION_PATCH : REVISION_REPLACE,
        .organisation_id = pr->op.organisation_id,
        .validator = w->v,
        .now_ms = now,
    };
    json_t *errors = NULL;
    int rc = revision_next(&in, &pr->doc, &errors);
    if (rc == REVISION_EINVALID)
        fail_invalid(a, pr, errors);
    json_decref(errors);
    if (rc == REVISION_EINVALID)
        return 0;
    if (rc != REVISION_OK)
        return PAYMENT_STORE_EINTERNAL;
    a->kind = PAYMENT_APPLY_UPDATE;
    a->expected_version = pr->op.base_version;
    return build_row(a, pr, created_ms, now);
}

/* A keyed request: its fingerprint, kept with the outcome to tell its
 * retries from another request reusing the key, and its 202 answer, stored
 * as the key's idempotency record with a successful write, so that the key
 * decides once between this operation and a synchronous request. */
static void prepare_idem(struct payment_apply *a, struct prepared *pr, int64_t now)
{
    const struct operation_idem *i = &pr->op.idem;
    if (!pr->op.has_idem)
        return;
    a->fingerprint = i->fingerprint;
    pr->idem = (struct payment_idem){
        .scope = i->scope,
        .key = i->key,
        .fingerprint = i->fingerprint,
        .status = 202,
        .location = i->location,
        .etag = NULL,
        .body = i->body,
        .body_len = i->body_len,
        .created_ms = now,
    };
    a->idem = &pr->idem;
}

/* The event of the write a makes: a new id (a UUIDv7 of now, when it is
 * applied), the operation's id, the caller's key and the request's id and
 * Idempotency-Key as the operation carries them (a message of before the
 * key id names its key only when keyed: its idempotency scope), and for an
 * update the paths it changes between the stored document and the one
 * written.  Returns 0, or EINTERNAL (no memory, no random source). */
static int prepare_event(struct payment_apply *a, struct prepared *pr, int64_t now)
{
    const struct operation *op = &pr->op;
    assert(a->kind != PAYMENT_APPLY_NONE);
    struct uuid u;
    if (uuid_v7_generate(now, &u) != 0)
        return PAYMENT_STORE_EINTERNAL;
    if (a->kind == PAYMENT_APPLY_UPDATE) {
        pr->changes = payment_changes_between(pr->cur, pr->doc);
        if (!pr->changes)
            return PAYMENT_STORE_EINTERNAL;
    }
    const char *key_id = op->api_key_id;
    if (!key_id && op->has_idem && op->idem.scope[0])
        key_id = op->idem.scope;
    pr->event = (struct payment_event_info){
        .api_key_id = key_id,
        .request_id = op->request_id,
        .idempotency_key = op->has_idem ? op->idem.key : NULL,
        .operation_id = op->id,
        .changes = pr->changes,
        .occurred_ms = now,
    };
    uuid_format(&u, pr->event.id);
    a->event = &pr->event;
    return 0;
}

/* The write the operation makes into a, with its event.  Returns 0 (a's
 * kind NONE when the operation fails), or a store error to retry on. */
static int prepare_write(struct worker *w, struct payment_apply *a, struct prepared *pr,
                         int64_t now)
{
    int err;
    switch (pr->op.kind) {
    case OPERATION_CREATE:
        err = prepare_create(a, pr, pr->op.data, now);
        break;
    case OPERATION_REPLACE:
    case OPERATION_PATCH:
        err = prepare_update(w, a, pr, now);
        break;
    case OPERATION_DELETE: {
        int64_t created_ms;
        err = read_current(w, a, pr, &created_ms);
        if (err != 0)
            return err > 0 ? 0 : err; /* not_found recorded, or a store error */
        a->kind = PAYMENT_APPLY_DELETE;
        a->expected_version = pr->op.base_version;
        break;
    }
    default:
        assert(!"unknown operation kind");
        return PAYMENT_STORE_EINTERNAL;
    }
    if (err != 0 || a->kind == PAYMENT_APPLY_NONE)
        return err;
    return prepare_event(a, pr, now);
}

/* Decodes the message into a (pr keeps what a borrows).  Returns 0, 1 when
 * the message is JSON but carries no operation id and is to be skipped, or
 * a store error to retry on (EINTERNAL too for bytes that did not read as
 * JSON: out of memory reads so).  A malformed operation is recorded as
 * failed with bad_request. */
static int prepare(struct part *pt, const struct broker_msg *m, uint64_t fence,
                   struct payment_apply *a, struct prepared *pr)
{
    struct worker *w = pt->w;
    int64_t now = clock_now_ms();
    memset(a, 0, sizeof *a);
    a->partition = pt->p;
    a->seq = m->seq;
    a->fence = fence;
    a->applied_ms = now;
    a->expected_version = -1;
    char why[sizeof pr->msg];
    int rc = operation_decode(m->data, m->len, &pr->op, why, sizeof why);
    if (rc == OPERATION_ENOMEM || rc == OPERATION_EUNREADABLE) {
        /* Perhaps only memory ran out: retried, then dead-lettered as an
         * internal failure, never given up at the first try. */
        log_msg(w->log, LOG_WARN, "partition %" PRIu32 " seq %" PRIu64 ": %s", pt->p, m->seq,
                rc == OPERATION_ENOMEM ? "out of memory" : why);
        return PAYMENT_STORE_EINTERNAL;
    }
    if (!pr->op.id[0]) {
        /* Without an operation id nothing can be recorded, so the partition's
         * stored position cannot move past it: it is skipped again after a
         * restart, which is harmless. */
        log_msg(w->log, LOG_ERROR, "partition %" PRIu32 " seq %" PRIu64 ": %s, skipped", pt->p,
                m->seq, why);
        return 1;
    }
    a->op_id = pr->op.id;
    if (rc != OPERATION_OK)
        return fail(a, pr, "bad_request", why), 0;
    a->payment_id = pr->op.payment_id;
    a->organisation_id = pr->op.organisation_id;
    prepare_idem(a, pr, now);
    return prepare_write(w, a, pr, now);
}

/* Whether the partition thread may go on with its partition: it still
 * holds the lease it read the message under (acquisition `epoch`), and a
 * stop lets the message in hand have one attempt, not retries. */
static int still_owned(struct part *pt, uint64_t epoch, int retry, uint64_t *fence)
{
    sync_lock(&pt->w->mu);
    int ok = pt->owned && pt->acquired == epoch && !(retry && pt->w->stopping);
    *fence = pt->fence;
    sync_unlock(&pt->w->mu);
    return ok;
}

/* The pause after the n-th (>= 1) internal failure of a message: doubling
 * from WORKER_RETRY_MS up to WORKER_BACKOFF_MAX_MS. */
static int backoff_ms(unsigned n)
{
    int ms = WORKER_RETRY_MS;
    for (unsigned i = 1; i < n && ms < WORKER_BACKOFF_MAX_MS; i++)
        ms *= 2;
    return ms < WORKER_BACKOFF_MAX_MS ? ms : WORKER_BACKOFF_MAX_MS;
}

/* Copies a message no worker can apply, as it is, to its partition's
 * dead-letter subject, with its operation id as the message id (else the
 * one it was published with, else its position), so that a copy made again
 * within the duplicate window (a crash in between, a redelivery) is kept
 * once.  0, or a broker error. */
static int dead_letter(struct part *pt, const struct broker_msg *m, const char *op_id)
{
    struct worker *w = pt->w;
    char subject[OPSTREAM_SUBJECT_LEN], id[64];
    opstream_dead_subject(pt->p, subject);
    if (!op_id && m->msg_id && *m->msg_id && strlen(m->msg_id) <= 128)
        op_id = m->msg_id;
    if (!op_id) {
        snprintf(id, sizeof id, "p%" PRIu32 "-s%" PRIu64, pt->p, m->seq);
        op_id = id;
    }
    int rc = broker_publish(w->b, subject, op_id, m->data, m->len, 0, NULL, NULL);
    if (rc != 0) {
        log_msg(w->log, LOG_WARN, "partition %" PRIu32 " seq %" PRIu64 ": dead letter: %s",
                pt->p, m->seq, broker_strerror(rc));
        return rc;
    }
    log_msg(w->log, LOG_ERROR, "partition %" PRIu32 " seq %" PRIu64 ": operation %s copied to %s",
            pt->p, m->seq, op_id, subject);
    return 0;
}

/* Turns a, after `failures` internal failures, into the record of its
 * failure with internal_error: the partition then moves on. */
static void poison(struct payment_apply *a, struct prepared *pr, unsigned failures)
{
    char msg[128];
    snprintf(msg, sizeof msg, "the operation could not be applied: %u tries failed", failures);
    fail(a, pr, "internal_error", msg);
    a->idem = NULL; /* stored only with a successful write */
}

/* Applies one message, read under acquisition `epoch`, retrying until the
 * store takes it: while the store is unavailable, every WORKER_RETRY_MS for
 * as long as it takes; after an internal failure, with a doubling pause, at
 * most max_attempts times, after which the message is copied to the dead
 * letters and recorded as failed with internal_error.  A message without an
 * operation id is copied to the dead letters and skipped.  Returns 0 when it
 * is done with (applied, recorded, skipped), or -1 when the lease was lost
 * (even if taken again since: another owner may have applied more in
 * between) or the worker stops first; the message is then read again from
 * the store's position by whoever owns the partition next, with its tries
 * counted afresh. */
static int apply_message(struct part *pt, uint64_t epoch, const struct broker_msg *m)
{
    struct worker *w = pt->w;
    unsigned failures = 0; /* tries that failed with EINTERNAL */
    int dead = 0;          /* the message is in the dead letters */
    for (int retry = 0;; retry = 1) {
        uint64_t fence;
        if (!still_owned(pt, epoch, retry, &fence))
            return -1;
        struct payment_apply a;
        struct prepared pr;
        memset(&pr, 0, sizeof pr);
        int err = prepare(pt, m, fence, &a, &pr);
        if (err == 1) {
            prepared_free(&pr);
            if (dead || dead_letter(pt, m, NULL) == 0)
                return 0;
            worker_pause(w, WORKER_RETRY_MS);
            continue;
        }
        if (err != PAYMENT_STORE_EUNAVAILABLE && failures >= w->max_attempts) {
            dead = dead || dead_letter(pt, m, a.op_id) == 0;
            if (dead && !a.op_id) { /* not even decoded: nothing to record it under */
                prepared_free(&pr);
                return 0;
            }
            if (dead)
                poison(&a, &pr, failures);
            err = dead ? 0 : PAYMENT_STORE_EUNAVAILABLE;
        }
        if (err == 0) {
            pt->wait.done = 0;
            payment_store_apply(w->store, &a, wait_done, &pt->wait);
            sync_lock(&pt->wait.mu);
            while (!pt->wait.done)
                sync_wait(&pt->wait.cv, &pt->wait.mu);
            err = pt->wait.err;
            sync_unlock(&pt->wait.mu);
        }
        prepared_free(&pr);
        if (err == PAYMENT_STORE_OK || err == PAYMENT_STORE_ESKIPPED) {
            atomic_fetch_add(&w->applied, 1);
            return 0;
        }
        if (err == PAYMENT_STORE_EFENCED) {
            log_msg(w->log, LOG_WARN, "partition %" PRIu32 ": fenced off, lease lost", pt->p);
            sync_lock(&w->mu);
            if (pt->fence == fence)
                pt->owned = 0;
            sync_broadcast(&w->cv);
            sync_unlock(&w->mu);
            return -1;
        }
        int pause = WORKER_RETRY_MS;
        if (err != PAYMENT_STORE_EUNAVAILABLE)
            pause = backoff_ms(++failures);
        log_msg(w->log, LOG_WARN,
                "partition %" PRIu32 " seq %" PRIu64 ": %s (internal failures: %u of %u), retrying",
                pt->p, m->seq, payment_store_strerror(err), failures, w->max_attempts);
        worker_pause(w, pause);
    }
}

/* Opens a reader at the store's position of the partition. */
static broker_reader *open_reader(struct part *pt)
{
    struct worker *w = pt->w;
    uint64_t last = 0, fence = 0;
    int err = payment_store_partition_get(w->store, pt->p, &last, &fence);
    if (err != PAYMENT_STORE_OK) {
        log_msg(w->log, LOG_WARN, "partition %" PRIu32 ": position: %s", pt->p,
                payment_store_strerror(err));
        return NULL;
    }
    char subject[OPSTREAM_SUBJECT_LEN];
    opstream_subject(pt->p, subject);
    broker_reader *r = NULL;
    int rc = broker_reader_open(w->b, OPSTREAM_NAME, subject, last + 1, &r);
    if (rc != 0) {
        log_msg(w->log, LOG_WARN, "partition %" PRIu32 ": reader: %s", pt->p, broker_strerror(rc));
        return NULL;
    }
    log_msg(w->log, LOG_INFO, "partition %" PRIu32 ": reading from seq %" PRIu64, pt->p, last + 1);
    return r;
}

/* Deletes from the stream the partition's messages at or below its stored
 * position.  None is read again (a reader starts after the position, and a
 * republished operation is recognised by its id in the store, not in the
 * stream), and without this the stream would keep every operation for
 * ever.  Best effort: a failure leaves them for the next time. */
static void trim_partition(struct part *pt)
{
    struct worker *w = pt->w;
    uint64_t last = 0, fence = 0;
    if (payment_store_partition_get(w->store, pt->p, &last, &fence) != PAYMENT_STORE_OK ||
        last == 0)
        return;
    char subject[OPSTREAM_SUBJECT_LEN];
    opstream_subject(pt->p, subject);
    int rc = broker_purge_below(w->b, OPSTREAM_NAME, subject, last + 1);
    if (rc != 0)
        log_msg(w->log, LOG_WARN, "partition %" PRIu32 ": trim below %" PRIu64 ": %s", pt->p,
                last + 1, broker_strerror(rc));
}

/* The partition's thread.  It is busy only while it applies a message:
 * waiting for the next one never holds up a release.  Its reader belongs to
 * one acquisition of the lease (epoch); after any other, it reads again
 * from the store's position. */
static void *part_main(void *arg)
{
    struct part *pt = arg;
    struct worker *w = pt->w;
    broker_reader *r = NULL;
    uint64_t epoch = 0;
    const int64_t trim_us = (int64_t)WORKER_TRIM_REFRESHES * w->refresh_ms * 1000;
    int64_t trimmed_us = clock_mono_us();
    int untrimmed = 0; /* applied since the last trim */
    for (;;) {
        if (untrimmed && clock_mono_us() - trimmed_us >= trim_us) {
            trim_partition(pt);
            trimmed_us = clock_mono_us();
            untrimmed = 0;
        }
        sync_lock(&w->mu);
        while (!w->stopping && !pt->owned && !r)
            sync_wait(&w->cv, &w->mu);
        int stop = w->stopping, owned = pt->owned;
        uint64_t acquired = pt->acquired;
        sync_unlock(&w->mu);
        if (stop)
            break;
        if (!owned || (r && acquired != epoch)) {
            broker_reader_close(r);
            r = NULL;
            continue;
        }
        if (!r) {
            epoch = acquired;
            r = open_reader(pt);
            if (!r)
                worker_pause(w, WORKER_RETRY_MS);
            untrimmed = 1; /* what earlier owners applied, once */
            continue;
        }
        struct broker_msg m;
        int rc = broker_reader_next(r, WORKER_READ_MS, &m);
        if (rc == BROKER_ETIMEDOUT)
            continue;
        if (rc != 0) {
            log_msg(w->log, LOG_WARN, "partition %" PRIu32 ": read: %s", pt->p,
                    broker_strerror(rc));
            worker_pause(w, WORKER_RETRY_MS);
            continue;
        }
        sync_lock(&w->mu);
        int go = pt->owned && pt->acquired == epoch && !w->stopping;
        pt->busy = go;
        sync_unlock(&w->mu);
        int done = go && apply_message(pt, epoch, &m) == 0;
        untrimmed |= done;
        sync_lock(&w->mu);
        pt->busy = 0;
        sync_broadcast(&w->cv);
        sync_unlock(&w->mu);
        if (!done) {
            broker_reader_close(r);
            r = NULL;
        }
    }
    broker_reader_close(r);
    return NULL;
}

/* ---- membership and leases --------------------------------------------- */

/* Creates or refreshes our membership key.  0, or a broker error. */
static int membership_refresh(struct worker *w)
{
    if (w->member_rev) {
        uint64_t rev;
        int rc = broker_kv_update(w->members, w->member_key, w->id, strlen(w->id),
                                  w->member_rev, &rev);
        if (rc == 0) {
            w->member_rev = rev;
            return 0;
        }
        if (rc != BROKER_ECONFLICT)
            return rc;
        log_msg(w->log, LOG_WARN, "membership %s expired; joining again", w->member_key);
        w->member_rev = 0;
    }
    /* The same key again: the worker keeps its rank, and the partitions
     * stay where they were. */
    int rc = broker_kv_create(w->members, w->member_key, w->id, strlen(w->id), &w->member_rev);
    if (rc == BROKER_EEXISTS) /* our own write, whose answer was lost: the key is ours alone */
        rc = broker_kv_get(w->members, w->member_key, NULL, NULL, &w->member_rev);
    if (rc != 0) {
        w->member_rev = 0;
        return rc;
    }
    log_msg(w->log, LOG_INFO, "worker %s joined as %s", w->id, w->member_key);
    return 0;
}

/* The live members (one listing of the bucket) and our rank among them,
 * -1 before we joined.  0, or a broker error. */
static int membership_rank(struct worker *w, uint32_t *live, int *rank)
{
    char **keys = NULL;
    size_t n = 0;
    int rc = broker_kv_keys(w->members, WORKER_LIST_MS, &keys, &n);
    if (rc != 0)
        return rc;
    size_t below = 0;
    int listed = 0;
    for (size_t i = 0; i < n; i++) {
        int c = strcmp(keys[i], w->member_key);
        below += c < 0;
        listed |= c == 0;
    }
    free(keys);
    /* Just refreshed, our key cannot have expired: count it even if the
     * listing raced with its creation. */
    *live = (uint32_t)n + (w->member_rev && !listed);
    *rank = w->member_rev ? (int)below : -1;
    return 0;
}

static void lease_key(uint32_t p, char key[24])
{
    snprintf(key, 24, "p%" PRIu32, p);
}

/* Gives up, at once, every owned partition that is not wanted: each thread
 * finishes the message it is applying, then the lease is deleted, so that
 * the new owner can take it straight away.  The applies in hand are waited
 * for at most a refresh interval: one slow apply (a store in the middle of
 * an election) must not hold up the refresh of the other leases past their
 * time-to-live; a partition still busy then is released at a later tick. */
static void leases_release(struct worker *w)
{
    int any = 0;
    sync_lock(&w->mu);
    for (uint32_t p = 0; p < w->partitions; p++) {
        struct part *pt = &w->parts[p];
        if (pt->owned && !pt->wanted) {
            pt->owned = 0;
            pt->releasing = 1;
        }
        any |= pt->releasing;
    }
    if (!any) {
        sync_unlock(&w->mu);
        return;
    }
    sync_broadcast(&w->cv);
    struct timespec until = sync_deadline_in_ms(w->refresh_ms);
    for (uint32_t p = 0; p < w->partitions; p++)
        while (w->parts[p].releasing && w->parts[p].busy &&
               pthread_cond_timedwait(&w->cv, &w->mu, &until) != ETIMEDOUT)
            ;
    for (uint32_t p = 0; p < w->partitions; p++) {
        struct part *pt = &w->parts[p];
        if (!pt->releasing || pt->busy)
            continue;
        pt->releasing = 0;
        uint64_t fence = pt->fence;
        sync_unlock(&w->mu);
        char key[24];
        lease_key(p, key);
        int rc = broker_kv_delete(w->leases, key, fence);
        if (rc != 0 && rc != BROKER_ECONFLICT)
            log_msg(w->log, LOG_WARN, "partition %" PRIu32 ": release: %s", p,
                    broker_strerror(rc));
        else
            log_msg(w->log, LOG_INFO, "partition %" PRIu32 ": released", p);
        sync_lock(&w->mu);
    }
    sync_unlock(&w->mu);
}

/* Refreshes every lease we hold; one found changed or expired is lost (the
 * store fences us off anyway).  Returns 0, or BROKER_EUNAVAILABLE at the
 * first refresh the broker did not answer: the others would wait as long
 * in vain. */
static int leases_refresh(struct worker *w)
{
    for (uint32_t p = 0; p < w->partitions; p++) {
        struct part *pt = &w->parts[p];
        sync_lock(&w->mu);
        int owned = pt->owned;
        uint64_t fence = pt->fence;
        sync_unlock(&w->mu);
        if (!owned)
            continue;
        char key[24];
        lease_key(p, key);
        uint64_t rev;
        int rc = broker_kv_update(w->leases, key, w->id, strlen(w->id), fence, &rev);
        sync_lock(&w->mu);
        if (rc == 0 && pt->owned && pt->fence == fence)
            pt->fence = rev;
        else if (rc == BROKER_ECONFLICT && pt->fence == fence)
            pt->owned = 0;
        sync_broadcast(&w->cv);
        sync_unlock(&w->mu);
        if (rc == BROKER_ECONFLICT)
            log_msg(w->log, LOG_WARN, "partition %" PRIu32 ": lease lost", p);
        else if (rc == BROKER_EUNAVAILABLE)
            return rc;
    }
    return 0;
}

/* Takes the wanted partitions whose leases are free: one listing of the
 * leases, then a create for each free one.  Returns how many wanted
 * partitions are still held by others. */
static uint32_t leases_acquire(struct worker *w)
{
    uint32_t missing = 0;
    sync_lock(&w->mu);
    for (uint32_t p = 0; p < w->partitions; p++) {
        struct part *pt = &w->parts[p];
        pt->leased = !pt->wanted || pt->owned; /* nothing to do for it */
        missing += !pt->leased;
    }
    sync_unlock(&w->mu);
    if (missing == 0)
        return 0;
    char **keys = NULL;
    size_t n = 0;
    if (broker_kv_keys(w->leases, WORKER_LIST_MS, &keys, &n) != 0)
        return missing; /* try again at the next tick */
    for (size_t i = 0; i < n; i++) {
        char *end = NULL;
        unsigned long p = keys[i][0] == 'p' ? strtoul(keys[i] + 1, &end, 10) : ULONG_MAX;
        if (end && *end == '\0' && p < w->partitions)
            w->parts[p].leased = 1;
    }
    free(keys);
    for (uint32_t p = 0; p < w->partitions; p++) {
        struct part *pt = &w->parts[p];
        if (pt->leased)
            continue;
        char key[24];
        lease_key(p, key);
        uint64_t rev;
        if (broker_kv_create(w->leases, key, w->id, strlen(w->id), &rev) != 0)
            continue; /* taken by another first, or the broker failed: next tick */
        sync_lock(&w->mu);
        pt->owned = 1;
        pt->fence = rev;
        pt->acquired++;
        sync_broadcast(&w->cv);
        sync_unlock(&w->mu);
        missing--;
        log_msg(w->log, LOG_INFO, "partition %" PRIu32 ": acquired (fence %" PRIu64 ")", p, rev);
    }
    return missing;
}

/* The control thread.  Every tick it lists the members (one request) and
 * hands back at once whatever is no longer ours; every refresh interval it
 * refreshes its membership and leases; while a partition of ours is still
 * held by another, it looks for the lease's release every
 * WORKER_ACQUIRE_MS, so that it takes it as soon as it is free. */
static void *control_main(void *arg)
{
    struct worker *w = arg;
    int tick = w->refresh_ms < WORKER_TICK_MS ? w->refresh_ms : WORKER_TICK_MS;
    int64_t next_refresh = 0;
    for (;;) {
        sync_lock(&w->mu);
        int stop = w->stopping;
        sync_unlock(&w->mu);
        if (stop)
            break;
        int64_t now = clock_mono_us() / 1000;
        int joined = 0;
        if (now >= next_refresh) {
            /* Leases and membership live in two buckets, whose streams may
             * lose their leaders separately: one failing does not hold
             * the other back.  A failure is tried again at the next tick. */
            int held = leases_refresh(w);
            joined = held == BROKER_EUNAVAILABLE && !broker_connected(w->b)
                         ? held /* it would only wait as long again */
                         : membership_refresh(w);
            next_refresh = now + (held == 0 && joined == 0 ? w->refresh_ms : tick);
            if (joined != 0)
                log_msg(w->log, LOG_WARN, "membership: %s", broker_strerror(joined));
        }
        uint32_t live = 0;
        int rank = -1;
        /* A listing the broker cannot give now leaves everything as it is:
         * what we hold stays ours while its leases are refreshed. */
        int rc = joined == 0 ? membership_rank(w, &live, &rank) : joined;
        if (rc == 0) {
            /* Contiguous ranges by rank: a newcomer (ranked last) takes a
             * share from the end, and most partitions stay where they are. */
            for (uint32_t p = 0; p < w->partitions; p++)
                w->parts[p].wanted =
                    rank >= 0 && (uint64_t)p * live / w->partitions == (uint64_t)rank;
            leases_release(w);
        }
        uint32_t missing = rc == 0 ? leases_acquire(w) : 0;
        worker_pause(w, missing ? WORKER_ACQUIRE_MS : tick);
    }
    return NULL;
}

/* ---- start and stop ---------------------------------------------------- */

static void worker_free(struct worker *w, int release)
{
    sync_lock(&w->mu);
    w->stopping = 1;
    sync_broadcast(&w->cv);
    sync_unlock(&w->mu);
    if (w->control_started)
        sync_join(w->control);
    for (uint32_t p = 0; p < w->started; p++)
        sync_join(w->parts[p].thread);
    /* What is not deleted expires; a broker that does not answer one
     * deletion would keep the others waiting as long, for nothing. */
    int rc = w->b && broker_connected(w->b) ? 0 : BROKER_EUNAVAILABLE;
    for (uint32_t p = 0; release && rc != BROKER_EUNAVAILABLE && p < w->partitions; p++) {
        if (!w->parts[p].owned)
            continue;
        char key[24];
        lease_key(p, key);
        rc = broker_kv_delete(w->leases, key, w->parts[p].fence);
    }
    if (release && rc != BROKER_EUNAVAILABLE && w->member_rev)
        (void)broker_kv_delete(w->members, w->member_key, w->member_rev);
    for (uint32_t p = 0; w->parts && p < w->partitions; p++) {
        pthread_mutex_destroy(&w->parts[p].wait.mu);
        pthread_cond_destroy(&w->parts[p].wait.cv);
    }
    broker_kv_close(w->leases);
    broker_kv_close(w->members);
    broker_close(w->b);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w->parts);
    free(w->urls);
    free(w);
}

int worker_start(const struct worker_config *cfg, payment_store *store,
                 const payment_validator *v, const struct logger *log, worker **out, char *err,
                 size_t errlen)
{
    assert(cfg && cfg->broker_urls && store && v && log && out);
    *out = NULL;
    struct worker *w = calloc(1, sizeof *w);
    if (!w || pthread_mutex_init(&w->mu, NULL) != 0) {
        free(w);
        snprintf(err, errlen, "worker: out of memory");
        return WORKER_EINTERNAL;
    }
    if (sync_cond_init_monotonic(&w->cv) != 0) {
        pthread_mutex_destroy(&w->mu);
        free(w);
        snprintf(err, errlen, "worker: out of memory");
        return WORKER_EINTERNAL;
    }
    w->store = store;
    w->v = v;
    w->log = log;
    w->partitions = cfg->partitions ? cfg->partitions : 16;
    w->ttl_ms = cfg->lease_ttl_ms > 0 ? cfg->lease_ttl_ms : 6000;
    w->refresh_ms = cfg->refresh_ms > 0 ? cfg->refresh_ms : 1000;
    w->max_attempts = cfg->max_attempts > 0 ? cfg->max_attempts : 5;
    int replicas = cfg->replicas > 0 ? cfg->replicas : 1;
    if (cfg->worker_id && *cfg->worker_id) {
        snprintf(w->id, sizeof w->id, "%s", cfg->worker_id);
    } else {
        char host[64];
        if (gethostname(host, sizeof host) != 0)
            snprintf(host, sizeof host, "worker");
        host[sizeof host - 1] = '\0';
        snprintf(w->id, sizeof w->id, "%s-%ld", host, (long)getpid());
    }
    /* A time-ordered UUID: keys sort by starting time, so a newcomer ranks
     * last and the others keep most of their partitions. */
    struct uuid u;
    char text[UUID_STR_LEN + 1];
    if (uuid_v7_generate(clock_now_ms(), &u) != 0) {
        snprintf(err, errlen, "worker: no random source");
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return WORKER_EINTERNAL;
    }
    uuid_format(&u, text);
    snprintf(w->member_key, sizeof w->member_key, "w.%s", text);
    w->urls = strdup(cfg->broker_urls);
    w->parts = calloc(w->partitions, sizeof *w->parts);
    if (!w->urls || !w->parts) {
        snprintf(err, errlen, "worker: out of memory");
        worker_free(w, 0);
        return WORKER_EINTERNAL;
    }
    for (uint32_t p = 0; p < w->partitions; p++) {
        w->parts[p].w = w;
        w->parts[p].p = p;
        if (pthread_mutex_init(&w->parts[p].wait.mu, NULL) != 0 ||
            pthread_cond_init(&w->parts[p].wait.cv, NULL) != 0)
            abort(); /* cannot fail with default attributes on Linux */
    }
    struct broker_options o = BROKER_OPTIONS_INIT;
    o.name = "paymentd-worker";
    char why[256] = "";
    size_t wl = sizeof why;
    int rc = broker_open(w->urls, &o, &w->b, why, wl) != 0 ? OPSTREAM_EUNAVAILABLE
             : opstream_setup(w->b, w->partitions, replicas, cfg->repartition, why, wl);
    if (rc == OPSTREAM_EPARTITIONS) {
        snprintf(err, errlen, "%s", why);
        worker_free(w, 0);
        return WORKER_EPARTITIONS;
    }
    if (rc != OPSTREAM_OK ||
        broker_kv_open(w->b, WORKER_LEASES, w->ttl_ms, replicas, &w->leases, why, wl) != 0 ||
        broker_kv_open(w->b, WORKER_MEMBERS, w->ttl_ms, replicas, &w->members, why, wl) != 0) {
        snprintf(err, errlen, "worker: broker: %s", why);
        worker_free(w, 0);
        return WORKER_EUNAVAILABLE;
    }
    for (; w->started < w->partitions; w->started++)
        if (pthread_create(&w->parts[w->started].thread, NULL, part_main,
                           &w->parts[w->started]) != 0)
            break;
    if (w->started == w->partitions && pthread_create(&w->control, NULL, control_main, w) == 0)
        w->control_started = 1;
    if (!w->control_started) {
        snprintf(err, errlen, "worker: cannot start threads");
        worker_free(w, 0);
        return WORKER_EINTERNAL;
    }
    *out = w;
    return WORKER_OK;
}

void worker_stop(worker *w)
{
    if (w)
        worker_free(w, 1);
}

void worker_abandon(worker *w)
{
    if (w)
        worker_free(w, 0);
}

uint64_t worker_applied(const worker *w)
{
    return atomic_load(&((worker *)w)->applied);
}

int worker_owns(const worker *w, uint32_t p, uint64_t *acquired)
{
    struct worker *mw = (struct worker *)w;
    sync_lock(&mw->mu);
    int owned = p < w->partitions && w->parts[p].owned;
    if (acquired)
        *acquired = p < w->partitions ? w->parts[p].acquired : 0;
    sync_unlock(&mw->mu);
    return owned;
}
