/* store: where payments live.  The handlers reach storage only through this
 * interface; each backend (the embedded SQLite store, MongoDB) decides
 * conflicts and duplicates itself, atomically, never by a read in a handler
 * followed by a write.
 *
 * A payment is stored as its serialized "data" object (the document, the
 * bytes GET returns) plus the columns that lookups, filters and ordering
 * need.  Every payment gets a sequence number from the store when created:
 * strictly increasing in commit order, it is the list order and what cursors
 * point at.
 *
 * Deletion leaves a tombstone: a deleted id is not found by get, update or
 * delete, is never listed, and can never be created again.
 *
 * Durability: a write's completion is reported only after it is durable.
 * Reads never wait for writes and see only committed writes.
 *
 * Errors are the negative values of enum payment_store_err, here only. */
#ifndef PAYMENT_STORE_H
#define PAYMENT_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/decimal.h"
#include "core/metrics.h"
#include "core/uuid.h"
#include "payment/query.h"

enum payment_store_err {
    PAYMENT_STORE_OK = 0,
    PAYMENT_STORE_ENOTFOUND = -1,    /* no such id, or deleted */
    PAYMENT_STORE_ECONFLICT = -2,    /* expected version is not the stored one */
    PAYMENT_STORE_EDUPLICATE = -3,   /* create: the id exists or existed */
    PAYMENT_STORE_EUNAVAILABLE = -4, /* the store cannot answer now (503) */
    PAYMENT_STORE_EINTERNAL = -5,    /* anything else (500) */
    PAYMENT_STORE_EURI = -6,         /* open: the URI names no usable store */
    PAYMENT_STORE_EIDEMPOTENT = -7,  /* the write's idempotency key is already recorded */
    PAYMENT_STORE_ESKIPPED = -8,     /* apply: already applied (seq at or below the position) */
    PAYMENT_STORE_EFENCED = -9,      /* apply: a newer lease holder owns the partition */
    PAYMENT_STORE_EEXPIRED = -10,    /* events: the cursor points at events no longer kept */
    PAYMENT_STORE_ELIMIT = -11,      /* webhooks: the organisation has the most endpoints allowed */
};

typedef struct payment_store payment_store;

/* One payment as written: the document and its indexed columns.  All
 * pointers are borrowed by the store until the write completes. */
struct payment_row {
    char id[UUID_STR_LEN + 1];              /* lower case */
    char organisation_id[UUID_STR_LEN + 1]; /* lower case */
    int64_t version;                        /* the version the document holds */
    int64_t created_ms;                     /* creation time, ms since epoch */
    int64_t modified_ms;                    /* last write time */
    const char *currency;                   /* NULL when absent, as are the next */
    const char *payment_scheme;
    const char *payment_type;
    const char *reference;
    const char *end_to_end_reference;
    char processing_date[CLOCK_DATE_LEN + 1]; /* "" when absent */
    char amount_key[DECIMAL_KEY_LEN + 1];     /* decimal_sort_key(amount), "" when absent */
    const char *doc;                        /* the serialized data object */
    size_t doc_len;
};

/* The outcome of a write made with an Idempotency-Key.  A backend stores it
 * in the same transaction as the write itself, so no crash can leave a write
 * without its record or a record without its write; a record whose (scope,
 * key) is already stored fails the whole write with EIDEMPOTENT.  Pointers
 * are borrowed until the write completes. */
struct payment_idem {
    const char *scope;       /* the caller: its API key id, or "" when the server runs open */
    const char *key;         /* the Idempotency-Key, 1..255 visible ASCII */
    const char *fingerprint; /* hex SHA-256 of the request (idem_fingerprint) */
    int status;              /* the answer's status */
    const char *location;    /* its Location header, or NULL */
    const char *etag;        /* its ETag header, or NULL */
    const char *body;        /* its body, or NULL */
    size_t body_len;
    int64_t created_ms;      /* when; purged some time after (payment_store_idem_purge) */
};

/* Who and what made a change, recorded in its event (see "events" below).
 * Pointers are borrowed until the write completes.  A write given none
 * (NULL) still records its event, with these fields empty. */
struct payment_event_info {
    char id[UUID_STR_LEN + 1];   /* the event's id, a UUIDv7; "": the store makes one */
    const char *api_key_id;      /* the caller's key id, NULL when the server runs open */
    const char *request_id;      /* the request's X-Request-Id, or NULL */
    const char *idempotency_key; /* the request's Idempotency-Key, or NULL */
    const char *operation_id;    /* an asynchronous write: its operation, else NULL */
    const char *changes;         /* an update: JSON array of the attribute paths it changed */
    int64_t occurred_ms;         /* when; 0: the row's modified_ms, or now for a delete */
};

/* A stored outcome.  The caller initialises both buffers (BUF_INIT) and
 * frees them. */
struct payment_idem_found {
    char fingerprint[65]; /* of the first request */
    int status;           /* its answer */
    char etag[32];        /* its ETag header, "" when none */
    struct buf location;  /* its Location header, empty when none */
    struct buf body;      /* its body, empty when none */
};

/* Reported once per write, from any thread, possibly before the submitting
 * call returns.  err is PAYMENT_STORE_OK or negative.  current_version is
 * the stored version when err is PAYMENT_STORE_ECONFLICT, else -1.
 * seq is the created payment's sequence number (create only, else 0). */
typedef void (*payment_store_done_fn)(void *arg, int err, int64_t current_version, int64_t seq);

/* Process-wide set-up of the backends: once, from main, before any store is
 * opened or any thread started, because SQLite takes its global settings
 * only before its first use.  Optional (a store works without it, only
 * slower).  Returns 0, or a negative error with a reason in errbuf: SQLite
 * cannot start, or was used already (a second call is refused so). */
int payment_store_init(char *errbuf, size_t errlen);

/* The schema versions this build writes, per kind of store: a store found at
 * an older version is migrated when opened, one at a newer version refused
 * (paymentd --version shows them). */
int payment_store_schema_sqlite(void);
int payment_store_schema_postgres(void);
int payment_store_schema_mongo(void);

/* payment_store_open's flags. */
enum payment_store_flag {
    /* The embedded store's file is this process's alone while it is open:
     * it takes the file's lock once and keeps it, and its readers share
     * the write-ahead log's index in memory, so a read takes no lock call.
     * Another process that opens the file, or already has it open, gets
     * PAYMENT_STORE_EUNAVAILABLE (after the store's busy timeout).  Within
     * one process every store on a file must be opened with the same flags:
     * an exclusive store opened while a shared one is open is not exclusive.
     * MongoDB ignores it. */
    PAYMENT_STORE_EXCLUSIVE = 1,
    /* Opens only a store that exists: the embedded store's file, the
     * PostgreSQL schema (its paymentd_schema table in the schema the
     * search_path makes tables in), the MongoDB collection.  Else open
     * creates nothing and answers PAYMENT_STORE_EURI with a one-line
     * reason naming what is missing (the URI's password redacted).  An
     * existing store that holds nothing opens. */
    PAYMENT_STORE_EXISTING = 2,
};

/* Opens the store a URI names: "sqlite:PATH" (the parent folder is created)
 * is the embedded store, "mongodb://..." MongoDB, "postgres://..." (or
 * "postgresql://...", libpq's URI) PostgreSQL; flags are
 * payment_store_flag values or-ed (0 for none).  Creates or migrates the
 * schema.  Returns 0 and the store, or a negative error with a one-line
 * reason in errbuf. */
int payment_store_open(const char *uri, unsigned flags, payment_store **out, char *errbuf,
                       size_t errlen);

/* Copies the store uri names into the file dest, online: other processes
 * may read and write the store meanwhile (an embedded store file kept
 * exclusively by another process, PAYMENT_STORE_EXCLUSIVE, cannot be
 * read: EUNAVAILABLE).  The copy is one consistent snapshot, every write
 * committed before the call began included, in one self-contained file a
 * store can be opened on.  It is written beside dest under a temporary
 * name, made durable, then renamed to dest (replacing any file there), so a
 * failed backup leaves dest as it was.  Blocks for as long as the copy
 * takes.  Returns 0, or a negative error with a one-line reason in errbuf:
 * EURI when uri names no store this can copy (a missing file, MongoDB, or
 * dest naming the store itself or a store's file in use), EUNAVAILABLE when
 * the store is held exclusively or busy, EINTERNAL when dest cannot be
 * written (a missing folder, a full disk). */
int payment_store_backup(const char *uri, const char *dest, char *errbuf, size_t errlen);

/* Waits for submitted writes to complete, then closes.  NULL is a no-op. */
void payment_store_close(payment_store *s);

/* Whether the store's calls may wait on the network (a server that does
 * not answer, within the store's own timeouts), so that callers must make
 * them off an HTTP event-loop thread: MongoDB yes, the embedded store no. */
int payment_store_may_block(const payment_store *s);

/* 0 when the store answers a trivial query now, else negative (/readyz). */
int payment_store_ping(payment_store *s);

/* Why the store refuses to serve for good, or NULL while it serves (or may
 * serve again once reachable): a MongoDB store opened before MongoDB
 * answered (wait_for_store) that then found a newer schema.  The text is the
 * refusal's one line ("store schema version N is newer than this build's
 * (M): upgrade paymentd"), owned by s.  Any thread. */
const char *payment_store_refusal(payment_store *s);

/* Appends the document of a live payment to doc and sets *version.
 * PAYMENT_STORE_ENOTFOUND for unknown or deleted ids. */
int payment_store_get(payment_store *s, const char *id, struct buf *doc, int64_t *version);

/* Same, also giving the creation time (the write paths keep created_on). */
int payment_store_get_meta(payment_store *s, const char *id, struct buf *doc, int64_t *version,
                           int64_t *created_ms);

/* Called per listed payment, in sequence order; non-zero stops the list
 * and is returned by payment_store_list. */
typedef int (*payment_store_row_fn)(void *arg, const char *doc, size_t len, int64_t seq);

/* Lists live payments matching q's filters in sequence order: the page q
 * names (first page, page_number * page_size rows skipped, or seq >
 * after_seq), at most page_size rows, then sets *more when another row
 * follows the page. */
int payment_store_list(payment_store *s, const struct payment_query *q, payment_store_row_fn each,
                       void *arg, int *more);

/* Each write takes an optional idempotency record (idem, NULL for none),
 * stored only when the write succeeds, atomically with it.  The versions a
 * write names, and a list's page size (1..PAYMENT_PAGE_SIZE_MAX), are
 * preconditions: breaking one is the caller's bug, and an assertion fails. */

/* Every write that changes a payment records one event (payment.created,
 * payment.updated or payment.deleted) in the same transaction, described by
 * ev (NULL: no description); a write that fails, or is refused, records
 * none. */

/* Creates a payment whose row->version is 0.  EDUPLICATE when the id exists
 * or ever existed. */
void payment_store_create(payment_store *s, const struct payment_row *row,
                          const struct payment_idem *idem, const struct payment_event_info *ev,
                          payment_store_done_fn done, void *arg);

/* Replaces the document of row->id when its stored version is
 * expected_version; row->version must be expected_version + 1.
 * ENOTFOUND before ECONFLICT. */
void payment_store_update(payment_store *s, const struct payment_row *row,
                          int64_t expected_version, const struct payment_idem *idem,
                          const struct payment_event_info *ev, payment_store_done_fn done,
                          void *arg);

/* Deletes (tombstones) id, when expected_version is -1 or the stored one.
 * The tombstone is a version of its own: the stored version + 1, which the
 * payment.deleted event carries with the document as it was. */
void payment_store_delete(payment_store *s, const char *id, int64_t expected_version,
                          const struct payment_idem *idem, const struct payment_event_info *ev,
                          payment_store_done_fn done, void *arg);

/* Looks up the outcome stored for (scope, key).  Returns 0 and fills out,
 * PAYMENT_STORE_ENOTFOUND when there is none, or another error. */
int payment_store_idem_get(payment_store *s, const char *scope, const char *key,
                           struct payment_idem_found *out);

/* Forgets idempotency outcomes stored, and operation outcomes applied,
 * before before_ms.  Best effort and possibly asynchronous: a record may
 * outlive the call by a little. */
void payment_store_idem_purge(payment_store *s, int64_t before_ms);

/* ---- operations applied from the broker ------------------------------------
 *
 * A worker applies the commands of a stream partition in stream order.  Each
 * apply is one transaction holding the payment write, the operation's
 * outcome and the partition's new position, so a redelivered command is
 * recognised and skipped: every operation takes effect exactly once, as a
 * success or as a failure.  The partition's fencing token (the revision of
 * the worker's lease) only grows: a worker whose lease was taken over is
 * refused before it writes anything.  A backend without multi-document
 * transactions (MongoDB) gives the same guarantees with single-document
 * steps, ordered and conditioned to that end: see store_mongo_apply.c for how,
 * and for the one race a stale lease holder can still win there.
 *
 * An asynchronous write's Idempotency-Key is recorded twice: its request's
 * fingerprint with the outcome (a retry is answered from the operation,
 * whose id is derived from the key), and, with a successful write, its
 * idempotency record (the 202 answer) stored atomically with the write, so
 * that the key decides once between an asynchronous request and a
 * synchronous one using it. */

enum payment_apply_kind {
    PAYMENT_APPLY_NONE,   /* no write: record the failure the worker decided */
    PAYMENT_APPLY_CREATE,
    PAYMENT_APPLY_UPDATE,
    PAYMENT_APPLY_DELETE,
};

/* One operation to apply.  Pointers are borrowed until done is called. */
struct payment_apply {
    const char *op_id;                /* the operation's id, unique forever */
    uint32_t partition;               /* its stream partition */
    uint64_t seq;                     /* its stream sequence, 1..INT64_MAX */
    uint64_t fence;                   /* the applier's lease revision, 0..INT64_MAX */
    enum payment_apply_kind kind;
    const struct payment_row *row;    /* create, update: as payment_store_create/update take it */
    const char *payment_id;           /* recorded; delete: the id; NULL: row->id */
    const char *organisation_id;      /* recorded; NULL: row->organisation_id */
    int64_t expected_version;         /* update, delete; -1 unconditional delete */
    const char *fingerprint;          /* idem_fingerprint of a keyed request, else NULL */
    const struct payment_idem *idem;  /* stored with a successful write, or NULL */
    const char *error_code;           /* kind NONE: the failure, e.g. "validation_failed" */
    const char *error_message;        /* kind NONE: its message */
    int64_t applied_ms;               /* when, ms since epoch */
    const struct payment_event_info *event; /* the write's event description, or NULL */
};

/* Applies a in one transaction of the write path (group-committed with the
 * other writes).  a must be well formed (an op_id, seq 1..INT64_MAX, fence
 * 0..INT64_MAX, and the row and versions its kind needs): a malformed one is
 * the caller's bug, and an assertion fails.  Refused with ESKIPPED when
 * a->seq is at or below the partition's last applied sequence, or EFENCED
 * when the partition's fencing token is above a->fence, changing nothing.
 * Otherwise makes the payment write as create/update/delete do, records
 * the outcome under op_id ("succeeded" with the resulting version; or
 * "failed" with not_found, version_conflict and the current version,
 * duplicate_id,
 * idempotency_key_in_use when a->idem's (scope, key) is already recorded,
 * the write then not made, or kind NONE's error) with a->fingerprint,
 * stores a->idem with a successful write, and moves the partition to
 * (a->seq, a->fence); done then gets PAYMENT_STORE_OK whatever the outcome.
 * An op_id already recorded (a republished command) gives ESKIPPED but still
 * moves the partition.  Else EUNAVAILABLE or EINTERNAL, nothing done.
 * done's current_version is -1 and seq 0: the outcome is read by op_get. */
void payment_store_apply(payment_store *s, const struct payment_apply *a,
                         payment_store_done_fn done, void *arg);

/* A recorded outcome. */
struct payment_op_found {
    char status[16];             /* "succeeded" or "failed" */
    char error_code[48];         /* "" when succeeded */
    char message[256];           /* "" when succeeded */
    char payment_id[37];
    char organisation_id[37];
    int64_t version;             /* resulting (succeeded), current (version_conflict), else -1 */
    uint32_t partition;          /* where and when it was applied */
    uint64_t seq;
    char fingerprint[65];        /* the keyed request's fingerprint, "" when it had no key */
};

/* The outcome recorded under op_id: 0, PAYMENT_STORE_ENOTFOUND (not applied
 * yet, never published, or a backend that does not apply operations), or
 * another error. */
int payment_store_op_get(payment_store *s, const char *op_id, struct payment_op_found *out);

/* The partition's position: its last applied sequence and fencing token,
 * both 0 when nothing was applied there.  Returns 0 or an error. */
int payment_store_partition_get(payment_store *s, uint32_t partition, uint64_t *last_seq,
                                uint64_t *fence);

/* ---- events: the history and the change feed ---------------------------------
 *
 * Every committed change of a payment is one event, written in the change's
 * own transaction (or atomic document write): no event without its change,
 * no change without its event.  A payment's events have contiguous versions
 * (0 created, then one per update, the last one deleted when deleted), and
 * are its history, kept after the payment is deleted.  The feed is every
 * event in commit order: each has a position (pos) such that a reader that
 * has seen every event up to position p, and reads again, finds every event
 * committed since above p and none below it.  A position given before commit
 * would not do (a write that took a smaller one could commit after a reader
 * passed it); each backend says how it keeps this (store_sqlite_events.c,
 * store_mongo_events.c). */

enum payment_event_type {
    PAYMENT_EVENT_CREATED = 1, /* "payment.created" */
    PAYMENT_EVENT_UPDATED = 2, /* "payment.updated" */
    PAYMENT_EVENT_DELETED = 4, /* "payment.deleted" */
};

#define PAYMENT_EVENTS_PAGE_MAX 1000 /* events a feed or history page holds at most */

/* One stored event, as a reader gets it: its pointers are valid only
 * during the callback it is given to. */
struct payment_event {
    int64_t pos;                              /* feed position, > 0 */
    char id[UUID_STR_LEN + 1];                /* UUIDv7 */
    enum payment_event_type type;
    char organisation_id[UUID_STR_LEN + 1];
    char payment_id[UUID_STR_LEN + 1];
    int64_t version;                          /* the version the change made */
    int64_t occurred_ms;                      /* ms since epoch */
    const char *api_key_id;                   /* NULL when none, as are the next three */
    const char *request_id;
    const char *idempotency_key;
    const char *operation_id;
    const char *changes;                      /* updates: JSON array of paths, else NULL */
    const char *doc;                          /* the payment after the change; a delete: */
    size_t doc_len;                           /* ... as it was */
};

/* Called per event read; non-zero stops the read and is returned by it. */
typedef int (*payment_store_event_fn)(void *arg, const struct payment_event *ev);

/* Which events a feed page holds. */
struct payment_event_query {
    int64_t after_pos;                       /* events above this position; 0: from the start */
    uint32_t limit;                          /* 1..PAYMENT_EVENTS_PAGE_MAX */
    int all_orgs;                            /* every organisation; else only orgs: */
    size_t n_orgs;                           /* 0 with !all_orgs: no event matches */
    const char (*orgs)[UUID_STR_LEN + 1];    /* lower case, borrowed */
    unsigned types;                          /* payment_event_type values or-ed; 0: all */
    const char *payment_id;                  /* only this payment's, or NULL */
    int64_t from_ms;                         /* occurred at or after; INT64_MIN: no bound */
    int64_t to_ms;                           /* occurred before; INT64_MAX: no bound */
};

/* Reads the feed page q names: the events matching it above q->after_pos,
 * in position order, at most q->limit.  *next_pos is where the following
 * page starts: the last event's position when the page is full, else the
 * feed's end as this read saw it (at least q->after_pos), so that a
 * filtered consumer's cursor moves past events it does not see, and one at
 * the end holds a cursor to wait on.  EEXPIRED when q->after_pos > 0 points
 * before the retained feed (events after it were purged). */
int payment_store_events(payment_store *s, const struct payment_event_query *q,
                         payment_store_event_fn each, void *arg, int64_t *next_pos);

/* Reads payment_id's history: its events with versions above after_version
 * (-1: from the first), in version order, at most limit (1..
 * PAYMENT_EVENTS_PAGE_MAX), then sets *more when another follows.  Reads
 * its own writes: a change reported done is in it.  A payment without
 * events gives an empty page, not an error. */
int payment_store_history(payment_store *s, const char *payment_id, int64_t after_version,
                          uint32_t limit, payment_store_event_fn each, void *arg, int *more);

/* Calls fn(arg), from any thread, soon after events may have been
 * committed: at once after this process's writes, and within about a second
 * after other processes' (a backend may poll).  One subscriber per store,
 * set before writes begin; fn must be quick and must not call the store. */
void payment_store_events_subscribe(payment_store *s, void (*fn)(void *arg), void *arg);

/* Retention, best effort and in small batches that never stall writes:
 * events that occurred before feed_before_ms leave the feed (a cursor
 * pointing before them then gets EEXPIRED), and those before
 * history_before_ms (INT64_MIN: none) are deleted, from the feed and from
 * the histories alike. */
void payment_store_events_purge(payment_store *s, int64_t feed_before_ms,
                                int64_t history_before_ms);

/* ---- webhooks: endpoints and their deliveries -------------------------------
 *
 * An endpoint is one organisation's registration to be sent its events
 * (webhook/endpoint.h describes its document: url, event types, status,
 * signing secrets).  The store keeps it as that document beside the columns
 * the dispatcher needs, versioned as payments are (0 when created, +1 per
 * update), and never interprets the document.
 *
 * A delivery is one event owed to one endpoint, made by the dispatcher as
 * it follows the feed: at most one per (endpoint, event), holding the bytes
 * to send.  It is attempted by one process at a time: an attempt is made
 * under a lease (claim), and its outcome recorded only while the lease is
 * held (record), so a process that crashed mid-attempt leaves a delivery
 * that another process, or the same one restarted, claims once the lease
 * has expired.  Delivery is therefore at least once: a receiver may see an
 * event twice (an attempt that succeeded but was not recorded), never none.
 *
 * Every call here is synchronous and may wait for a commit (the embedded
 * store's writer thread): call them from threads that may block, never
 * from an HTTP event-loop thread.  Strings in the structures given to a
 * callback are valid only during that call. */

#define PAYMENT_WEBHOOKS_PER_ORG_MAX 20  /* endpoints an organisation may have */
#define PAYMENT_WEBHOOKS_PAGE_MAX 1000   /* endpoints or deliveries a page holds at most */

/* One endpoint, as written or read. */
struct payment_webhook {
    char id[UUID_STR_LEN + 1];              /* a UUIDv7, lower case */
    char organisation_id[UUID_STR_LEN + 1]; /* lower case */
    int64_t version;                        /* 0 when created, +1 per update */
    int64_t created_ms;                     /* kept by update */
    int64_t modified_ms;
    int enabled;                            /* 1: owed events; 0: disabled */
    unsigned types;                         /* payment_event_type values or-ed it wants */
    int64_t after_pos;                      /* read: owed the events above this feed position
                                             * (set by create; kept by update) */
    int64_t failing_since_ms;               /* read: the first failed attempt since the last
                                             * success, 0 when none (kept by record) */
    const char *doc;                        /* its document (JSON), borrowed */
    size_t doc_len;
};

/* Called per endpoint read; non-zero stops the read and is returned. */
typedef int (*payment_store_webhook_fn)(void *arg, const struct payment_webhook *w);

/* Creates w at version 0.  The store sets w->after_pos to the feed's end as
 * of the endpoint's commit (payment_store_events' next_pos with nothing
 * above it), so that it is owed exactly the events committed after it, and
 * failing_since_ms to 0.  EDUPLICATE when the id exists, ELIMIT when its
 * organisation has PAYMENT_WEBHOOKS_PER_ORG_MAX endpoints already. */
int payment_store_webhook_create(payment_store *s, struct payment_webhook *w);

/* Replaces the document, enabled and types of w->id when its stored
 * version is expected_version; w->version must be expected_version + 1
 * (an assertion).  created_ms, organisation_id, after_pos and
 * failing_since_ms stay as stored; enabling a disabled endpoint sets
 * failing_since_ms to 0.  ENOTFOUND before ECONFLICT. */
int payment_store_webhook_update(payment_store *s, const struct payment_webhook *w,
                                 int64_t expected_version);

/* Deletes id, when expected_version is -1 or the stored one, and its
 * deliveries with it.  ENOTFOUND before ECONFLICT; *current_version (may
 * be NULL) is the stored one on ECONFLICT. */
int payment_store_webhook_delete(payment_store *s, const char *id, int64_t expected_version,
                                 int64_t *current_version);

/* Reads endpoint id into each (called once).  ENOTFOUND. */
int payment_store_webhook_get(payment_store *s, const char *id, payment_store_webhook_fn each,
                              void *arg);

/* Which endpoints a list holds: in id order (UUIDv7: creation order). */
struct payment_webhook_query {
    const char *after_id;                    /* ids above this one, or NULL from the first */
    uint32_t limit;                          /* 1..PAYMENT_WEBHOOKS_PAGE_MAX */
    int all_orgs;                            /* every organisation; else only orgs: */
    size_t n_orgs;                           /* 0 with !all_orgs: none match */
    const char (*orgs)[UUID_STR_LEN + 1];    /* lower case, borrowed */
    int enabled_only;                        /* only enabled endpoints */
};

/* Lists the endpoints q names, then sets *more when another follows. */
int payment_store_webhooks_list(payment_store *s, const struct payment_webhook_query *q,
                                payment_store_webhook_fn each, void *arg, int *more);

enum payment_delivery_status {
    PAYMENT_DELIVERY_PENDING = 1,   /* "pending": an attempt is due at next_ms */
    PAYMENT_DELIVERY_SUCCEEDED = 2, /* "succeeded": a receiver answered 2xx */
    PAYMENT_DELIVERY_FAILED = 4,    /* "failed": the schedule ran out, or the endpoint went */
};

/* One delivery, as read. */
struct payment_delivery {
    char id[UUID_STR_LEN + 1];         /* a UUIDv7 */
    char webhook_id[UUID_STR_LEN + 1];
    char event_id[UUID_STR_LEN + 1];
    int64_t event_pos;                 /* the event's feed position */
    enum payment_delivery_status status;
    int attempts;                      /* attempts recorded */
    int64_t created_ms;
    int64_t next_ms;                   /* pending: when the next attempt is due; else 0 */
    const char *attempts_json;         /* JSON array of the recorded attempts' objects, in
                                        * order ("[]" when none) */
    const char *body;                  /* the bytes to send (the event's JSON) */
    size_t body_len;
};

/* Called per delivery read; non-zero stops the read and is returned. */
typedef int (*payment_store_delivery_fn)(void *arg, const struct payment_delivery *d);

/* A delivery to make.  Pointers borrowed for the call. */
struct payment_delivery_new {
    char id[UUID_STR_LEN + 1];         /* a UUIDv7 the caller made */
    char webhook_id[UUID_STR_LEN + 1];
    char event_id[UUID_STR_LEN + 1];
    int64_t event_pos;
    const char *body;
    size_t body_len;
};

/* The dispatcher's position: every event at or below it has had its
 * deliveries made.  0 before the first dispatch. */
int payment_store_dispatch_pos(payment_store *s, int64_t *pos);

/* Makes the deliveries d[0..n) pending and due at now_ms, in one atomic
 * step with moving the dispatcher's position from expected_pos to new_pos
 * (>= expected_pos).  A delivery whose (webhook_id, event_id) exists is not
 * made again; with reset, such an existing delivery becomes pending and due
 * at now_ms instead (a replay), its attempts kept.  ECONFLICT, nothing
 * made, when the position is not expected_pos (another process dispatched
 * meanwhile).  expected_pos -1: the position is left alone (a replay).
 * A backend without multi-document transactions may make the deliveries
 * and then fail to move the position; the next dispatch makes them again,
 * which the (webhook_id, event_id) rule turns into nothing. */
int payment_store_deliveries_add(payment_store *s, int64_t expected_pos, int64_t new_pos,
                                 const struct payment_delivery_new *d, size_t n, int reset,
                                 int64_t now_ms);

/* Leases to owner, until now_ms + lease_ms, at most max (1..
 * PAYMENT_WEBHOOKS_PAGE_MAX) pending deliveries due at or before now_ms
 * whose lease is free or expired, the earliest due first, and passes each
 * to each.  Two processes never hold one delivery's lease at once. */
int payment_store_deliveries_claim(payment_store *s, const char *owner, int64_t now_ms,
                                   int64_t lease_ms, uint32_t max, payment_store_delivery_fn each,
                                   void *arg);

/* An attempt's outcome.  Pointers borrowed for the call. */
struct payment_delivery_attempt {
    const char *delivery_id;
    const char *webhook_id;            /* its endpoint */
    const char *owner;                 /* the lease holder that made it */
    const char *attempt_json;          /* the attempt's object, appended to attempts_json */
    enum payment_delivery_status status; /* the delivery's new status */
    int64_t next_ms;                   /* pending: the next attempt's time */
    int succeeded;                     /* the attempt itself succeeded (2xx) */
    int64_t at_ms;                     /* when it was made */
};

/* Records attempt a while a->owner holds the delivery's lease: appends
 * a->attempt_json, counts it, sets the status (and next_ms) and frees the
 * lease; and on the endpoint, sets failing_since_ms to a->at_ms on a failed
 * attempt when it is 0, or to 0 on a success.  *failing_since_ms (may be
 * NULL) gets the endpoint's value after that (0 when the endpoint is
 * gone).  ECONFLICT when the lease is no longer a->owner's (it expired and
 * another took it: nothing recorded), ENOTFOUND when the delivery is
 * gone. */
int payment_store_delivery_record(payment_store *s, const struct payment_delivery_attempt *a,
                                  int64_t *failing_since_ms);

/* What recording one attempt of a batch gave. */
struct payment_delivery_recorded {
    int err;                  /* payment_store_delivery_record's result for it */
    int64_t failing_since_ms; /* its endpoint's value after it (0 unless recorded) */
};

/* Records the attempts a[0..n) (1..PAYMENT_WEBHOOKS_PAGE_MAX, at most one
 * per delivery) as payment_store_delivery_record would one after the
 * other, each one's result into out[i], in one commit where the backend
 * can (the embedded store: one transaction, so a sender finishing many
 * attempts waits for one fsync, not one each).  Returns 0 when every
 * attempt was decided (out says how), or the error that kept the call from
 * deciding them: the embedded store then recorded none (every out[i].err
 * is that error); a backend without transactions may have recorded those
 * whose out[i].err is 0. */
int payment_store_deliveries_record(payment_store *s, const struct payment_delivery_attempt *a,
                                    size_t n, struct payment_delivery_recorded *out);

/* Makes delivery id of webhook webhook_id pending and due at now_ms,
 * whatever its status (a manual retry; its attempts kept).  ENOTFOUND. */
int payment_store_delivery_retry(payment_store *s, const char *webhook_id, const char *id,
                                 int64_t now_ms);

/* Which deliveries a list holds: in id order. */
struct payment_delivery_query {
    const char *webhook_id;  /* this endpoint's */
    unsigned statuses;       /* payment_delivery_status values or-ed; 0: all */
    const char *after_id;    /* ids above this one, or NULL from the first */
    uint32_t limit;          /* 1..PAYMENT_WEBHOOKS_PAGE_MAX */
};

/* Lists the deliveries q names (their bodies too), then sets *more when
 * another follows. */
int payment_store_deliveries_list(payment_store *s, const struct payment_delivery_query *q,
                                  payment_store_delivery_fn each, void *arg, int *more);

/* The pending deliveries: how many, and the creation time of the oldest
 * (0 when none), for /metrics. */
int payment_store_deliveries_pending(payment_store *s, int64_t *count, int64_t *oldest_ms);

/* Deletes, best effort and in small batches, deliveries that succeeded or
 * failed and were created before before_ms. */
void payment_store_deliveries_purge(payment_store *s, int64_t before_ms);

/* ---- copying one store into another (paymentd migrate) ----------------------
 *
 * A copy reads the source with the export calls, in pages, and writes each
 * page into the target with one payment_store_import, which skips whatever
 * the target holds already: running a copy again after an interruption
 * finishes it, and a finished copy run again adds nothing.  Payments keep
 * their ids, versions, times and tombstones, and get the target's sequence
 * numbers in the source's order; events keep everything but their position,
 * given by the target in the source's order, so the list order and the
 * feed's order are the source's.  Webhook endpoints and deliveries, broker
 * operations and partitions are not copied.  Exports read committed data
 * and never wait for writes; the copy is meant for a store no server writes. */

/* One payment as stored, for a copy.  Pointers valid during the callback. */
struct payment_export {
    struct payment_row row; /* the columns and document as stored; a tombstone:
                               doc NULL, doc_len 0, the text columns NULL */
    int deleted;            /* a tombstone; row.version is the tombstone's own */
    int64_t seq;            /* its sequence number in the store read */
};

typedef int (*payment_store_export_fn)(void *arg, const struct payment_export *p);

/* Reads the payments, tombstones included, with sequence numbers above
 * after_seq, in sequence order, at most limit (1..PAYMENT_EXPORT_PAGE_MAX),
 * then sets *more when another follows.  Each callback's non-zero answer
 * stops the read and is returned. */
#define PAYMENT_EXPORT_PAGE_MAX 1000
int payment_store_export_payments(payment_store *s, int64_t after_seq, uint32_t limit,
                                  payment_store_export_fn each, void *arg, int *more);

/* One idempotency record as stored.  Pointers valid during the callback. */
struct payment_idem_export {
    const char *scope;
    const char *key;
    const char *fingerprint;
    int status;
    const char *location;   /* NULL when none */
    const char *etag;       /* NULL when none */
    const char *body;       /* NULL when none; any bytes */
    size_t body_len;
    int64_t created_ms;
};

typedef int (*payment_store_idem_export_fn)(void *arg, const struct payment_idem_export *r);

/* Reads the idempotency records after (after_scope, after_key) (both NULL:
 * from the first) in (scope, key) byte order, at most limit
 * (1..PAYMENT_EXPORT_PAGE_MAX), then sets *more. */
int payment_store_export_idem(payment_store *s, const char *after_scope, const char *after_key,
                              uint32_t limit, payment_store_idem_export_fn each, void *arg,
                              int *more);

/* Reads every stored event, in the feed or kept only in a history, with a
 * position above after_pos, in position order, at most limit
 * (1..PAYMENT_EXPORT_PAGE_MAX), then sets *more. */
int payment_store_export_events(payment_store *s, int64_t after_pos, uint32_t limit,
                                payment_store_event_fn each, void *arg, int *more);

/* One page of a copy, written in one transaction (in order: payments, then
 * idempotency records, then events).  Everything borrowed for the call; an
 * event's pos is ignored (the target gives its own). */
struct payment_import {
    const struct payment_export *payments;
    size_t n_payments;
    const struct payment_idem_export *idem;
    size_t n_idem;
    const struct payment_event *events;
    size_t n_events;
};

/* What an import added; the rest was in the target already. */
struct payment_import_result {
    size_t payments; /* payments added (an id the target holds, live or not, is skipped) */
    size_t idem;     /* records added (a (scope, key) the target holds is skipped) */
    size_t events;   /* events added (a (payment_id, version) the target holds is skipped) */
};

/* Writes im into the store as described above, durably, in one atomic
 * step where the backend has transactions (MongoDB: one document at a
 * time, each skip-if-present, so an interruption leaves a prefix that a
 * new run completes).  No event is made for the payments written: the
 * source's events are copied as they are.  Returns 0 with *out filled, or
 * EUNAVAILABLE or EINTERNAL, nothing (or, MongoDB, a prefix) written. */
int payment_store_import(payment_store *s, const struct payment_import *im,
                         struct payment_import_result *out);

/* Counters of a backend's write path, for /metrics and tests. */
struct payment_store_stats {
    uint64_t commits;                    /* write transactions committed */
    uint64_t writes;                     /* write operations reported, whatever their result */
    const struct metrics_sizes *batches; /* operations per commit (live; NULL if not kept) */
    uint64_t checkpoints;                /* embedded store: its log copied into the database
                                            file off the writer thread; 0 elsewhere */
};

/* Fills out.  Returns 0, or -1 when the backend keeps no counters. */
int payment_store_stats(payment_store *s, struct payment_store_stats *out);

/* A short English name of an error, for logs. */
const char *payment_store_strerror(int err);

#endif
