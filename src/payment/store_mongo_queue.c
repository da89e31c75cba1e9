/* store_mongo_queue: the write path's queues and threads.  Owns
 * submission (store.h's create, update, delete and apply queue an operation
 * and return), the three queues, the worker threads that take creates and
 * applies in batches and updates and deletes one at a time, the failure of
 * writes queued longer than the selection timeout, and the reports (each
 * operation's done called once, after its client went back to the pool). */

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "payment/store_mongo.h"

#define MONGO_CREATE_BATCH_MAX 500    /* creates per bulk insert */
#define MONGO_CREATE_BATCH_BYTES (16u << 20)
#define MONGO_APPLY_SCAN 1024         /* queued operations looked at for one batch */

/* Whether op wrote its payment, and with it an event in its outbox. */
static int mongo_op_wrote(const struct mongo_op *op)
{
    if (op->err != PAYMENT_STORE_OK)
        return 0;
    if (op->kind != OP_APPLY)
        return 1;
    return op->apply.kind != PAYMENT_APPLY_NONE && op->outcome.status &&
           strcmp(op->outcome.status, "succeeded") == 0;
}

/* Reports op, after noting its event for the sequencer. */
static void mongo_report(struct mongo_store *st, struct mongo_op *op)
{
    if (mongo_op_wrote(op))
        mongo_seq_note(st, op->row.id);
    atomic_fetch_add(&st->n_writes, 1);
    op->done(op->arg, op->err, op->err == PAYMENT_STORE_ECONFLICT ? op->current_version : -1,
             op->kind == OP_CREATE && op->err == PAYMENT_STORE_OK ? op->seq : 0);
    free(op->sk);
    free(op);
}

/* Reports op at once, before it reaches a worker: not counted. */
static void mongo_reject(struct mongo_op *op, int err)
{
    op->done(op->arg, err, -1, 0);
    free(op->sk);
    free(op);
}

static void mongo_queue_push(struct mongo_queue *q, struct mongo_op *op)
{
    if (q->tail)
        q->tail->next = op;
    else
        q->head = op;
    q->tail = op;
    op->next = NULL;
}

static struct mongo_op *mongo_queue_pop(struct mongo_queue *q)
{
    struct mongo_op *op = q->head;
    if (op) {
        q->head = op->next;
        if (!q->head)
            q->tail = NULL;
        op->next = NULL;
    }
    return op;
}

/* Waits for work on q; NULL when closing and q is empty. */
static struct mongo_op *mongo_queue_wait(struct mongo_store *st, struct mongo_queue *q)
{
    store_lock(&st->mu);
    while (!q->head && !st->closing)
        if (pthread_cond_wait(&q->wake, &st->mu) != 0)
            abort();
    struct mongo_op *op = mongo_queue_pop(q);
    return op; /* st->mu still held: the caller may take more, then unlocks */
}

/* Whether op waited so long in its queue that its client has been waiting
 * longer than the store's timeout: MongoDB has been unreachable meanwhile. */
static int mongo_op_stale(const struct mongo_store *st, const struct mongo_op *op)
{
    return clock_mono_us() - op->queued_us > st->stale_us;
}

/* The bytes op's document takes, roughly: its text, the copy its event
 * holds, and its record. */
static size_t mongo_op_bytes(const struct mongo_op *op)
{
    return 2 * op->row.doc_len + mongo_idem_size(op->idem);
}

/* Takes the next batch of creates (at least one, at most the batch limits);
 * NULL when closing and none is queued.  *n is its length. */
static struct mongo_op *mongo_creates_take(struct mongo_store *st, size_t *n)
{
    struct mongo_op *head = mongo_queue_wait(st, &st->creates);
    struct mongo_op *tail = head;
    size_t count = head ? 1 : 0;
    size_t bytes = head ? mongo_op_bytes(head) : 0;
    while (head && count < MONGO_CREATE_BATCH_MAX && st->creates.head &&
           bytes + mongo_op_bytes(st->creates.head) <= MONGO_CREATE_BATCH_BYTES) {
        struct mongo_op *op = mongo_queue_pop(&st->creates);
        bytes += mongo_op_bytes(op);
        tail->next = op;
        tail = op;
        count++;
    }
    store_unlock(&st->mu);
    *n = count;
    return head;
}

/* Decides a batch: stale creates fail at once, the rest go to MongoDB. */
static void mongo_creates_batch(struct mongo_store *st, struct mongo_op *batch, size_t n)
{
    struct mongo_op **live = malloc(n * sizeof *live);
    size_t nlive = 0;
    for (struct mongo_op *op = batch; op; op = op->next) {
        if (!live || mongo_op_bytes(op) > MONGO_DOC_MAX)
            op->err = PAYMENT_STORE_EINTERNAL; /* out of memory, or more than BSON holds */
        else if (mongo_op_stale(st, op))
            op->err = PAYMENT_STORE_EUNAVAILABLE;
        else
            live[nlive++] = op;
    }
    if (nlive) {
        int err = PAYMENT_STORE_OK;
        mongoc_client_t *client = mongo_client(st, &err);
        if (err != PAYMENT_STORE_OK) {
            for (size_t i = 0; i < nlive; i++)
                live[i]->err = err;
        } else if (mongo_creates_run(st, client, live, nlive)) {
            atomic_fetch_add(&st->n_commits, 1);
            metrics_sizes_observe(&st->batches, nlive);
        }
        if (client)
            mongoc_client_pool_push(st->pool, client);
    }
    free(live);
}

static void *mongo_creates_main(void *arg)
{
    struct mongo_store *st = arg;
    for (;;) {
        size_t n;
        struct mongo_op *batch = mongo_creates_take(st, &n);
        if (!batch)
            return NULL; /* closing, and every queued create is done */
        mongo_creates_batch(st, batch, n);
        while (batch) {
            struct mongo_op *op = batch;
            batch = op->next;
            mongo_report(st, op);
        }
    }
}

static void *mongo_writes_main(void *arg)
{
    struct mongo_store *st = arg;
    for (;;) {
        struct mongo_op *op = mongo_queue_wait(st, &st->writes);
        store_unlock(&st->mu);
        if (!op)
            return NULL;
        int err = PAYMENT_STORE_EUNAVAILABLE;
        mongoc_client_t *client = mongo_op_stale(st, op) ? NULL : mongo_client(st, &err);
        if (client && err == PAYMENT_STORE_OK) {
            mongo_write_run(st, client, op);
            if (op->err == PAYMENT_STORE_OK) {
                atomic_fetch_add(&st->n_commits, 1);
                metrics_sizes_observe(&st->batches, 1);
            }
        }
        else
            op->err = err;
        if (client)
            mongoc_client_pool_push(st->pool, client);
        mongo_report(st, op);
    }
}

/* Decides a batch.  While MongoDB is away (*down: the last batch met
 * EUNAVAILABLE), stale operations fail at once; else every one goes to
 * MongoDB, however long it waited (a worker's backlog under load is no
 * outage).  Sets *down for the next batch. */
static void mongo_applies_batch(struct mongo_store *st, struct mongo_op **ops, size_t n,
                                int *down)
{
    bool tried[MONGO_APPLY_BATCH_MAX];
    size_t live = 0;
    for (size_t i = 0; i < n; i++) {
        tried[i] = !(*down && mongo_op_stale(st, ops[i]));
        ops[i]->err = tried[i] ? 1 : PAYMENT_STORE_EUNAVAILABLE;
        live += tried[i];
    }
    if (live == 0)
        return; /* still down, as far as we know */
    int err = PAYMENT_STORE_OK;
    mongoc_client_t *client = mongo_client(st, &err);
    if (err != PAYMENT_STORE_OK) {
        for (size_t i = 0; i < n; i++)
            if (ops[i]->err == 1)
                ops[i]->err = err;
    } else if (mongo_apply_run(st, client, ops, n)) {
        atomic_fetch_add(&st->n_commits, 1);
        metrics_sizes_observe(&st->batches, live);
    }
    if (client)
        mongoc_client_pool_push(st->pool, client);
    *down = 0;
    for (size_t i = 0; i < n; i++)
        *down |= tried[i] && ops[i]->err == PAYMENT_STORE_EUNAVAILABLE;
}

/* Takes the next batch of operations into ops: the first queued of each
 * partition, in queue order, at most MONGO_APPLY_BATCH_MAX, looking at the
 * first MONGO_APPLY_SCAN queued only; a partition's later ones stay queued,
 * in order, so its operations are applied and reported in submission order.
 * Returns how many, 0 when closing and none is queued. */
static size_t mongo_applies_take(struct mongo_store *st, struct mongo_op **ops)
{
    struct mongo_queue *q = &st->applies;
    struct mongo_op *first = mongo_queue_wait(st, q); /* st->mu held */
    size_t n = 0, scanned = 0;
    if (first)
        ops[n++] = first;
    struct mongo_op *prev = NULL, *op = first ? q->head : NULL;
    while (op && n < MONGO_APPLY_BATCH_MAX && scanned++ < MONGO_APPLY_SCAN) {
        struct mongo_op *next = op->next;
        size_t i = 0;
        while (i < n && ops[i]->apply.partition != op->apply.partition)
            i++;
        if (i == n) { /* its partition's first: taken out of the queue */
            if (prev)
                prev->next = next;
            else
                q->head = next;
            if (q->tail == op)
                q->tail = prev;
            op->next = NULL;
            ops[n++] = op;
        } else {
            prev = op;
        }
        op = next;
    }
    store_unlock(&st->mu);
    return n;
}

static void *mongo_applies_main(void *arg)
{
    struct mongo_store *st = arg;
    struct mongo_op *ops[MONGO_APPLY_BATCH_MAX];
    int down = 0;
    for (;;) {
        size_t n = mongo_applies_take(st, ops);
        if (n == 0)
            return NULL; /* closing, and every queued operation is done */
        mongo_applies_batch(st, ops, n, &down);
        for (size_t i = 0; i < n; i++)
            mongo_report(st, ops[i]);
    }
}

static void mongo_submit(struct mongo_store *st, struct mongo_op *op)
{
    struct mongo_queue *q = op->kind == OP_CREATE  ? &st->creates
                            : op->kind == OP_APPLY ? &st->applies
                                                   : &st->writes;
    op->queued_us = clock_mono_us();
    store_lock(&st->mu);
    if (st->closing) {
        store_unlock(&st->mu);
        mongo_reject(op, PAYMENT_STORE_EUNAVAILABLE);
        return;
    }
    int was_empty = q->head == NULL;
    mongo_queue_push(q, op);
    /* Workers wait only on an empty queue; several may wait on writes. */
    if (was_empty && pthread_cond_signal(&q->wake) != 0)
        abort();
    store_unlock(&st->mu);
}

/* A new operation, or NULL after reporting EINTERNAL (out of memory). */
static struct mongo_op *mongo_op_new(enum mongo_op_kind kind, payment_store_done_fn done,
                                     void *arg)
{
    struct mongo_op *op = calloc(1, sizeof *op);
    if (!op) {
        done(arg, PAYMENT_STORE_EINTERNAL, -1, 0);
        return NULL;
    }
    op->kind = kind;
    op->done = done;
    op->arg = arg;
    op->current_version = -1;
    op->expected_version = -1;
    return op;
}

/* Gives op its record and the record's sk.  Returns 0 after rejecting op
 * (a record without a usable key is a caller bug; or out of memory). */
static int mongo_op_idem(struct mongo_op *op, const struct payment_idem *idem)
{
    if (!idem)
        return 1;
    op->idem = idem;
    op->sk = mongo_sk_new(idem->scope, idem->key);
    if (!op->sk || !idem->fingerprint) {
        mongo_reject(op, PAYMENT_STORE_EINTERNAL);
        return 0;
    }
    return 1;
}

/* Gives op the event of its write: type, payment, when, who (info, or
 * NULL), and what the row says (creates and updates; a delete completes it
 * when it reads the payment).  Returns 0 after rejecting op (no event id
 * could be made). */
static int mongo_op_event(struct mongo_op *op, enum payment_event_type type,
                          const struct payment_event_info *info)
{
    int64_t fallback = type == PAYMENT_EVENT_DELETED ? clock_now_ms() : op->row.modified_ms;
    if (mongo_event_init(&op->event, type, info, op->row.id, fallback) != 0) {
        mongo_reject(op, PAYMENT_STORE_EINTERNAL);
        return 0;
    }
    if (type != PAYMENT_EVENT_DELETED) {
        op->event.organisation_id = op->row.organisation_id;
        op->event.version = op->row.version;
        op->event.doc = op->row.doc;
        op->event.doc_len = op->row.doc ? op->row.doc_len : 0;
    }
    return 1;
}

void mongo_create(payment_store *s, const struct payment_row *row,
                  const struct payment_idem *idem, const struct payment_event_info *ev,
                  payment_store_done_fn done, void *arg)
{
    struct mongo_op *op = mongo_op_new(OP_CREATE, done, arg);
    if (!op)
        return;
    op->row = *row;
    if (!mongo_op_idem(op, idem) || !mongo_op_event(op, PAYMENT_EVENT_CREATED, ev))
        return;
    mongo_submit((struct mongo_store *)s, op);
}

void mongo_update(payment_store *s, const struct payment_row *row, int64_t expected_version,
                  const struct payment_idem *idem, const struct payment_event_info *ev,
                  payment_store_done_fn done, void *arg)
{
    struct mongo_op *op = mongo_op_new(OP_UPDATE, done, arg);
    if (!op)
        return;
    op->row = *row;
    if (!mongo_op_idem(op, idem) || !mongo_op_event(op, PAYMENT_EVENT_UPDATED, ev))
        return;
    op->expected_version = expected_version;
    mongo_submit((struct mongo_store *)s, op);
}

void mongo_remove(payment_store *s, const char *id, int64_t expected_version,
                  const struct payment_idem *idem, const struct payment_event_info *ev,
                  payment_store_done_fn done, void *arg)
{
    struct mongo_op *op = mongo_op_new(OP_DELETE, done, arg);
    if (!op)
        return;
    if (!mongo_op_idem(op, idem))
        return;
    size_t len = strlen(id);
    if (len > UUID_STR_LEN) {
        mongo_reject(op, PAYMENT_STORE_ENOTFOUND); /* longer than any stored id */
        return;
    }
    memcpy(op->row.id, id, len + 1);
    if (!mongo_op_event(op, PAYMENT_EVENT_DELETED, ev))
        return;
    op->expected_version = expected_version < 0 ? -1 : expected_version;
    mongo_submit((struct mongo_store *)s, op);
}

/* The event of an operation's write: described by a->event, with the
 * operation's id when that names none (the write is the operation's). */
static int mongo_apply_event(struct mongo_op *op, const struct payment_apply *a)
{
    static const enum payment_event_type types[] = {
        [PAYMENT_APPLY_CREATE] = PAYMENT_EVENT_CREATED,
        [PAYMENT_APPLY_UPDATE] = PAYMENT_EVENT_UPDATED,
        [PAYMENT_APPLY_DELETE] = PAYMENT_EVENT_DELETED,
    };
    if (a->kind == PAYMENT_APPLY_NONE)
        return 1; /* no write, no event */
    if (!mongo_op_event(op, types[a->kind], a->event))
        return 0;
    if (!op->event.operation_id)
        op->event.operation_id = a->op_id;
    return 1;
}

/* Queues a broker operation (store.c has checked it). */
void mongo_apply(payment_store *s, const struct payment_apply *a,
                 payment_store_done_fn done, void *arg)
{
    struct mongo_op *op = mongo_op_new(OP_APPLY, done, arg);
    if (!op)
        return;
    op->apply = *a;
    /* Kind NONE writes nothing, so it stores no record. */
    if (a->kind != PAYMENT_APPLY_NONE && !mongo_op_idem(op, a->idem))
        return;
    if (a->row) {
        op->row = *a->row;
        if (a->kind != PAYMENT_APPLY_NONE && mongo_op_bytes(op) > MONGO_DOC_MAX) {
            mongo_reject(op, PAYMENT_STORE_EINTERNAL);
            return;
        }
    }
    if (a->kind == PAYMENT_APPLY_DELETE)
        memcpy(op->row.id, a->payment_id, strlen(a->payment_id) + 1);
    if (!mongo_apply_event(op, a))
        return;
    mongo_submit((struct mongo_store *)s, op);
}

/* Stops the worker threads after they drained their queues. */
void mongo_stop_threads(struct mongo_store *st)
{
    store_lock(&st->mu);
    st->closing = 1;
    if (pthread_cond_broadcast(&st->creates.wake) != 0 ||
        pthread_cond_broadcast(&st->writes.wake) != 0 ||
        pthread_cond_broadcast(&st->applies.wake) != 0)
        abort();
    store_unlock(&st->mu);
    for (int i = 0; i < st->nthreads; i++)
        if (pthread_join(st->threads[i], NULL) != 0)
            abort(); /* joinable and not this thread: close must not be called from done */
    st->nthreads = 0;
}

/* Starts the workers with every signal blocked: signals are the main
 * thread's.  Returns 0, or -1 (the started ones are stopped). */
int mongo_start_threads(struct mongo_store *st)
{
    sigset_t all, old;
    if (sigfillset(&all) != 0 || pthread_sigmask(SIG_BLOCK, &all, &old) != 0)
        return -1;
    int rc = 0;
    for (int i = 0; rc == 0 && i < 2 + MONGO_WRITERS; i++) {
        rc = pthread_create(&st->threads[i], NULL,
                            i == 0   ? mongo_creates_main
                            : i == 1 ? mongo_applies_main
                                     : mongo_writes_main,
                            st);
        if (rc == 0)
            st->nthreads++;
    }
    if (pthread_sigmask(SIG_SETMASK, &old, NULL) != 0)
        abort(); /* cannot fail with a mask it returned */
    if (rc != 0)
        mongo_stop_threads(st);
    return rc == 0 ? 0 : -1;
}
