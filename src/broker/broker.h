/* broker: what paymentd needs of NATS JetStream, as a small synchronous API
 * over libnats (the NATS C client, 3.4): one connection per broker handle,
 * streams created or updated on start, publishes acknowledged by the stream
 * and deduplicated by message id, a key-value bucket whose keys expire and
 * can be listed, and an in-order reader of one subject from a given stream
 * sequence.
 *
 * Threads.  A broker handle and a broker_kv handle may be used from any
 * number of threads at once (libnats' connection and JetStream context are
 * thread-safe).  A broker_reader is used by one thread at a time.  Every
 * broker_kv and broker_reader must be closed before their broker, and
 * broker_library_shutdown() runs once, after the last broker_close().
 *
 * Timeouts.  No call waits longer than its timeout (or the broker's request
 * timeout) for the network.  A request that certainly was not delivered
 * (connection down, or, in a cluster, a stream without a leader while one is
 * elected) is tried again every 50 ms until then; it is not left in libnats
 * to be sent on reconnection.  libnats reconnects in the background, for
 * ever, and the same handles work again afterwards.  Set-up calls
 * (ensure_stream, kv_open) fail at once while disconnected.
 *
 * An unacknowledged write is not a rejected one: BROKER_EUNAVAILABLE from a
 * write whose message had left (the acknowledgement timed out, or the
 * connection dropped during the call, when libnats may still deliver the
 * message on reconnection) means the outcome is unknown.  Publishing again
 * with the same message id within the stream's duplicate window stores it
 * at most once; a key-value write's effect can be read back.
 *
 * Errors are the negative values of enum broker_err, here only. */
#ifndef BROKER_BROKER_H
#define BROKER_BROKER_H

#include <stddef.h>
#include <stdint.h>

enum broker_err {
    BROKER_OK = 0,
    BROKER_EUNAVAILABLE = -1, /* no server answered in time: disconnected, timed out, no
                                 JetStream responder, cluster without a leader (503); a
                                 write that timed out may still have been applied */
    BROKER_EINTERNAL = -2,    /* anything else: a refused request, a bad argument,
                                 a configuration the server rejects, no memory (500) */
    BROKER_ETIMEDOUT = -3,    /* reader: no message within the timeout; not a failure */
    BROKER_EEXISTS = -4,      /* kv create: the key holds a value */
    BROKER_ECONFLICT = -5,    /* kv update or delete: the key's revision is not the given one
                                 (changed, deleted, or expired) */
    BROKER_ENOTFOUND = -6,    /* kv get: no value (never set, deleted, or expired) */
};

typedef struct broker broker;
typedef struct broker_kv broker_kv;
typedef struct broker_reader broker_reader;

/* Connection settings; a zero field takes the default in brackets. */
struct broker_options {
    const char *name;          /* client name shown by the server's monitoring ["paymentd"] */
    int connect_timeout_ms;    /* TCP connect and handshake, per server [2000] */
    int request_timeout_ms;    /* JetStream API requests: streams, KV, readers [5000] */
    int reconnect_wait_ms;     /* pause after a failed round over the server list [250] */
    int ping_interval_ms;      /* probe of an idle connection; 2 unanswered: reconnect [5000] */
    int retry_initial_connect; /* 1: open succeeds with no server up and connects later */
};

#define BROKER_OPTIONS_INIT {NULL, 0, 0, 0, 0, 0}

/* Connects to urls, "nats://HOST:PORT" or several of them comma-separated
 * (members of one cluster; any may be tried first).  opt may be NULL for
 * the defaults.  Returns 0 and a handle (broker_close() it), or
 * BROKER_EUNAVAILABLE (no server answered) or BROKER_EINTERNAL (bad URL,
 * no memory), with a one-line reason in err. */
int broker_open(const char *urls, const struct broker_options *opt, broker **out, char *err,
                size_t errlen);

/* Closes the connection and frees the handle; NULL is a no-op. */
void broker_close(broker *b);

/* Releases libnats' process-wide state (its threads and memory): once, at
 * exit, after every broker_close().  Waits at most a few seconds. */
void broker_library_shutdown(void);

/* Whether the connection is up at this instant (1) or not (0). */
int broker_connected(broker *b);

/* A short English name of an error, for logs. */
const char *broker_strerror(int err);

/* Creates the stream `name` over `subjects` (one subject, wildcards
 * allowed: "payments.cmd.*") with file storage, `replicas` copies (1 on a
 * single server, 3 on a 3-node cluster), no limits, and a 2-minute window in
 * which a repeated message id is stored once.  An existing stream of that
 * name is updated to this configuration (what the server cannot change, such
 * as the storage type, fails).  Idempotent.  Returns 0, or an error with a
 * one-line reason in err. */
int broker_ensure_stream(broker *b, const char *name, const char *subjects, int replicas,
                         char *err, size_t errlen);

/* As broker_ensure_stream, but a message is removed max_age_ms after it
 * was stored (0: kept for ever, as there); the duplicate window is then at
 * most max_age_ms. */
int broker_ensure_stream_aged(broker *b, const char *name, const char *subjects, int replicas,
                              int64_t max_age_ms, char *err, size_t errlen);

/* Publishes len bytes of data on subject with header Nats-Msg-Id: msg_id
 * (required, at most 128 bytes) and waits up to timeout_ms (<= 0: the
 * request timeout) for the stream's acknowledgement.  Returns 0 with the
 * message's stream sequence in *seq and *duplicate 0; for a msg_id already
 * stored within the duplicate window, 0 with the ORIGINAL message's
 * sequence and *duplicate 1 (nothing new is stored).  Errors:
 * BROKER_EUNAVAILABLE (see the note on unknown outcomes above),
 * BROKER_EINTERNAL (e.g. the server refused the message).  seq and
 * duplicate may be NULL. */
int broker_publish(broker *b, const char *subject, const char *msg_id, const void *data,
                   size_t len, int timeout_ms, uint64_t *seq, int *duplicate);

/* Deletes the messages of `subject` (no wildcards needed, but allowed) in
 * stream `stream` whose sequence is below `below`; those at or above stay.
 * Returns 0, or BROKER_EUNAVAILABLE / BROKER_EINTERNAL. */
int broker_purge_below(broker *b, const char *stream, const char *subject, uint64_t below);

/* The number of messages stream `stream` holds now, in one request waiting
 * up to timeout_ms (<= 0: the request timeout).  Returns 0, or
 * BROKER_EUNAVAILABLE / BROKER_EINTERNAL (no such stream included). */
int broker_stream_messages(broker *b, const char *stream, int timeout_ms, uint64_t *msgs);

/* ---- Key-value bucket with a time-to-live ----
 *
 * A key's value lives ttl_ms after its last write, then disappears (the
 * server's clock).  A revision is the stream sequence of the write; it
 * changes on every write of the key, so it serves as a fencing token:
 * update and delete succeed only while the key's current revision is the
 * one the caller holds.  Writes and reads go to the bucket's stream leader,
 * so a read sees every acknowledged write.  Keys: letters, digits and
 * "-_=/", dot-separated tokens ("partition.7"). */

/* Opens the bucket, creating it (history 1, file storage, `replicas`
 * copies) or updating an existing one's TTL and replicas; ttl_ms 0: keys
 * never expire.  Returns 0 and a handle (broker_kv_close() it), or an
 * error with a reason in err. */
int broker_kv_open(broker *b, const char *bucket, int64_t ttl_ms, int replicas,
                   broker_kv **out, char *err, size_t errlen);

/* Frees the handle (the bucket stays); NULL is a no-op. */
void broker_kv_close(broker_kv *kv);

/* Sets key only when it has no value.  Returns 0 and the revision, or
 * BROKER_EEXISTS, or BROKER_EUNAVAILABLE / BROKER_EINTERNAL. */
int broker_kv_create(broker_kv *kv, const char *key, const void *value, size_t len,
                     uint64_t *revision);

/* Sets key only when its current revision is last (> 0).  Returns 0 and
 * the new revision, or BROKER_ECONFLICT, or BROKER_EUNAVAILABLE /
 * BROKER_EINTERNAL. */
int broker_kv_update(broker_kv *kv, const char *key, const void *value, size_t len,
                     uint64_t last, uint64_t *revision);

/* The key's value (a malloc'd copy with a NUL after len bytes: free() it)
 * and revision.  Returns 0, BROKER_ENOTFOUND, or BROKER_EUNAVAILABLE /
 * BROKER_EINTERNAL.  value and len may be NULL when only the revision is
 * wanted. */
int broker_kv_get(broker_kv *kv, const char *key, char **value, size_t *len,
                  uint64_t *revision);

/* Deletes key: when last > 0, only if its current revision is last
 * (BROKER_ECONFLICT otherwise, also when the key has no value); when last
 * is 0, whatever it holds.  Deleting a key without a value with last 0
 * succeeds.  The key's messages are purged from the bucket's stream (no
 * delete marker is written), so a deleted key is not listed by
 * broker_kv_keys().  Returns 0 or an error. */
int broker_kv_delete(broker_kv *kv, const char *key, uint64_t last);

/* The keys that hold a value, sorted (strcmp), in one request (the
 * bucket's stream information, with its subjects), waiting up to
 * timeout_ms (<= 0: the request timeout): *keys is one malloc'd block
 * holding the *count pointers and the strings they point to (free(*keys)
 * once, whatever *count).  A key deleted by another client with a delete
 * marker (libnats' kvStore_Delete) is listed until the marker expires.  In
 * a cluster the request needs the metadata leader as well as the stream's:
 * it fails while either is being elected, even though keys can be read and
 * written.  Returns 0, or BROKER_EUNAVAILABLE / BROKER_EINTERNAL. */
int broker_kv_keys(broker_kv *kv, int timeout_ms, char ***keys, size_t *count);

/* ---- Reading a subject in stream order ----
 *
 * A reader returns the messages of one subject of a stream, one at a time,
 * in stream order, from a given stream sequence on, each exactly once: it
 * keeps the position itself and, whenever the server side is lost (server
 * restart, cluster failover, missed heartbeats), resumes from the message
 * after the last one returned.  Nothing is acknowledged to the server:
 * where processing has got to is the caller's to record.  The server side
 * is one ephemeral consumer per reader, which the reader deletes when it
 * replaces it or is closed (else the server drops it 5 s after the reader
 * stopped listening). */

/* One message, borrowed from the reader: valid until the next
 * broker_reader_next() or broker_reader_close() on it. */
struct broker_msg {
    const void *data;    /* payload, len bytes */
    size_t len;
    uint64_t seq;        /* stream sequence */
    const char *msg_id;  /* the Nats-Msg-Id header, or NULL when it had none */
    const char *subject; /* the subject it was published on */
};

/* Opens a reader of `subject` (no wildcards needed, but allowed) in stream
 * `stream`, starting at stream sequence start_seq (>= 1; sequences before
 * the stream's first are skipped).  Returns 0 and a reader
 * (broker_reader_close() it), or an error. */
int broker_reader_open(broker *b, const char *stream, const char *subject, uint64_t start_seq,
                       broker_reader **out);

/* Waits up to timeout_ms (0: only what has arrived) for the next message.
 * Returns 0 and the message, BROKER_ETIMEDOUT when none came,
 * BROKER_EUNAVAILABLE when the server side could not be re-established
 * within the timeout (call again to keep trying), or BROKER_EINTERNAL.
 * Replacing the server side may take, on top of timeout_ms, up to the
 * broker's request timeout plus 2 s (dropping the old consumer waits at
 * most 1 s for each of two answers). */
int broker_reader_next(broker_reader *r, int timeout_ms, struct broker_msg *out);

/* Stops reading, deletes the reader's consumer and frees the reader; NULL
 * is a no-op.  Waits at most about 2 s for the server. */
void broker_reader_close(broker_reader *r);

#endif
