#include "broker/broker.h"

#include <nats/nats.h>

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BROKER_DEFAULT_CONNECT_TIMEOUT_MS 2000
#define BROKER_DEFAULT_REQUEST_TIMEOUT_MS 5000
#define BROKER_DEFAULT_RECONNECT_WAIT_MS 250
#define BROKER_DEFAULT_PING_INTERVAL_MS 5000
#define BROKER_MAX_SERVERS 16
#define BROKER_MAX_MSG_ID 128
#define BROKER_DUPLICATE_WINDOW_NS (120LL * 1000 * 1000 * 1000)
#define BROKER_NS_PER_MS (1000LL * 1000)
/* Heartbeats of a reader's consumer: libnats re-creates the consumer when
 * they stop, so a short interval shortens a reader's stall after the
 * consumer's server died (the server accepts 100 ms and more). */
#define BROKER_READER_HEARTBEAT_NS (1000LL * 1000 * 1000)
/* Pause between attempts to re-create a reader's consumer. */
#define BROKER_READER_RETRY_MS 100
/* Pause before sending again a request that could not be sent. */
#define BROKER_RETRY_PAUSE_MS 50

/* Headers of the key-value layout libnats and the server agree on. */
#define BROKER_KV_OP_HEADER "KV-Operation"
#define BROKER_MSG_ID_HEADER "Nats-Msg-Id"

struct broker {
    natsConnection *nc;     /* the connection; thread-safe, reconnects by itself */
    jsCtx *js;              /* JetStream context on nc; thread-safe */
    int request_timeout_ms; /* the JetStream API requests' wait */
};

struct broker_kv {
    broker *b;     /* borrowed: outlives the handle */
    char *stream;  /* "KV_<bucket>": the stream behind the bucket */
    char *prefix;  /* "$KV.<bucket>.": a key's subject is prefix + key */
};

struct broker_reader {
    broker *b;              /* borrowed: outlives the reader */
    char *stream;           /* stream name */
    char *subject;          /* filter subject */
    natsSubscription *sub;  /* ordered consumer, NULL while it must be re-created */
    uint64_t next_seq;      /* every message returned from now on has seq >= this */
    natsMsg *cur;           /* the message last returned, owned until the next call */
};

static void broker_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void broker_seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* libnats' own description of the calling thread's last failure. */
static const char *broker_nats_detail(natsStatus s)
{
    const char *t = nats_GetLastError(NULL);
    if (!t || !*t)
        return natsStatus_GetText(s);
    /* Without libnats' "(file.c:123): " prefix. */
    const char *p = t[0] == '(' ? strstr(t, "): ") : NULL;
    return p ? p + 3 : t;
}

/* The broker error for a libnats status and JetStream error code.  Only the
 * failures in which no server (or no JetStream leader) answered are
 * "unavailable"; a server that answered no is "internal". */
static int broker_rc(natsStatus s, jsErrCode jerr)
{
    switch (s) {
    case NATS_OK:
        return BROKER_OK;
    case NATS_TIMEOUT:
    case NATS_NO_RESPONDERS:
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NO_SERVER:
    case NATS_NOT_YET_CONNECTED:
    case NATS_INSUFFICIENT_BUFFER: /* publishing while reconnecting */
    case NATS_IO_ERROR:
    case NATS_STALE_CONNECTION:
        return BROKER_EUNAVAILABLE;
    default:
        break;
    }
    switch ((int)jerr) {
    case JSClusterNotAvailErr:  /* JetStream temporarily unavailable */
    case JSClusterNotLeaderErr: /* an election is under way */
    case JSStreamOfflineErr:
    case JSInsufficientResourcesErr:
        return BROKER_EUNAVAILABLE;
    default:
        return BROKER_EINTERNAL;
    }
}

static int broker_or(int a, int dflt)
{
    return a > 0 ? a : dflt;
}

static char *broker_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* malloc'd a followed by b, or NULL. */
static char *broker_concat(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *p = malloc(na + nb + 1);
    if (p) {
        memcpy(p, a, na);
        memcpy(p + na, b, nb + 1);
    }
    return p;
}

/* Errors surface through the calls that meet them; libnats' default
 * handler would print to stderr, outside the server's JSON log. */
static void broker_on_async_error(natsConnection *nc, natsSubscription *sub, natsStatus s,
                                  void *closure)
{
    (void)nc;
    (void)sub;
    (void)s;
    (void)closure;
}

/* Giving libnats a callback is what makes a failed first connect go on in
 * the background instead of blocking broker_open(). */
static void broker_on_late_connect(natsConnection *nc, void *closure)
{
    (void)nc;
    (void)closure;
}

/* Splits urls at commas into a copy (*copy, free() it) and pointers into it. */
static int broker_split_urls(const char *urls, char **copy, const char **servers, int *count)
{
    *count = 0;
    *copy = broker_strdup(urls);
    if (!*copy)
        return BROKER_EINTERNAL;
    char *save = NULL;
    for (char *tok = strtok_r(*copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (*tok == '\0')
            continue;
        if (*count == BROKER_MAX_SERVERS)
            return BROKER_EINTERNAL;
        servers[(*count)++] = tok;
    }
    return *count > 0 ? BROKER_OK : BROKER_EINTERNAL;
}

static natsStatus broker_make_options(const struct broker_options *o, const char **servers,
                                      int count, natsOptions **out)
{
    natsOptions *no = NULL;
    natsStatus s = natsOptions_Create(&no);
    if (s == NATS_OK)
        s = natsOptions_SetServers(no, servers, count);
    if (s == NATS_OK)
        s = natsOptions_SetName(no, o->name ? o->name : "paymentd");
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(no, broker_or(o->connect_timeout_ms,
                                                 BROKER_DEFAULT_CONNECT_TIMEOUT_MS));
    if (s == NATS_OK)
        s = natsOptions_SetAllowReconnect(no, true);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(no, -1); /* for ever */
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(no, broker_or(o->reconnect_wait_ms,
                                                       BROKER_DEFAULT_RECONNECT_WAIT_MS));
    if (s == NATS_OK)
        s = natsOptions_SetReconnectJitter(no, 100, 1000);
    if (s == NATS_OK)
        s = natsOptions_SetPingInterval(no, broker_or(o->ping_interval_ms,
                                                      BROKER_DEFAULT_PING_INTERVAL_MS));
    if (s == NATS_OK)
        s = natsOptions_SetMaxPingsOut(no, 2);
    /* A request in flight when the connection drops fails at once rather
     * than at its timeout. */
    if (s == NATS_OK)
        s = natsOptions_SetFailRequestsOnDisconnect(no, true);
    /* Publishes are not parked while reconnecting (broker_publish refuses
     * them first); the smallest buffer bounds the race with a disconnect. */
    if (s == NATS_OK)
        s = natsOptions_SetReconnectBufSize(no, 1);
    if (s == NATS_OK)
        s = natsOptions_SetErrorHandler(no, broker_on_async_error, NULL);
    if (s == NATS_OK && o->retry_initial_connect)
        s = natsOptions_SetRetryOnFailedConnect(no, true, broker_on_late_connect, NULL);
    if (s != NATS_OK) {
        natsOptions_Destroy(no);
        return s;
    }
    *out = no;
    return NATS_OK;
}

int broker_open(const char *urls, const struct broker_options *opt, broker **out, char *err,
                size_t errlen)
{
    static const struct broker_options defaults = BROKER_OPTIONS_INIT;
    const struct broker_options *o = opt ? opt : &defaults;
    *out = NULL;
    char *copy = NULL;
    const char *servers[BROKER_MAX_SERVERS];
    int count;
    if (!urls || broker_split_urls(urls, &copy, servers, &count) != BROKER_OK) {
        free(copy);
        broker_seterr(err, errlen, "broker: bad server list \"%s\"", urls ? urls : "");
        return BROKER_EINTERNAL;
    }
    broker *b = calloc(1, sizeof *b);
    natsOptions *no = NULL;
    natsStatus s = b ? broker_make_options(o, servers, count, &no) : NATS_NO_MEMORY;
    if (s == NATS_OK) {
        s = natsConnection_Connect(&b->nc, no);
        /* With retry_initial_connect, "not yet" is a success: the
         * connection object exists and keeps trying. */
        if (s == NATS_NOT_YET_CONNECTED)
            s = NATS_OK;
    }
    natsOptions_Destroy(no);
    if (s != NATS_OK) {
        int rc = broker_rc(s, 0);
        broker_seterr(err, errlen, "broker: cannot connect to %s: %s", urls,
                      broker_nats_detail(s));
        free(copy);
        if (b)
            natsConnection_Destroy(b->nc);
        free(b);
        return rc;
    }
    free(copy);
    b->request_timeout_ms = broker_or(o->request_timeout_ms, BROKER_DEFAULT_REQUEST_TIMEOUT_MS);
    jsOptions jo;
    s = jsOptions_Init(&jo);
    if (s == NATS_OK) {
        jo.Wait = b->request_timeout_ms;
        s = natsConnection_JetStream(&b->js, b->nc, &jo);
    }
    if (s != NATS_OK) {
        broker_seterr(err, errlen, "broker: JetStream context: %s", broker_nats_detail(s));
        natsConnection_Destroy(b->nc);
        free(b);
        return BROKER_EINTERNAL;
    }
    *out = b;
    return BROKER_OK;
}

void broker_close(broker *b)
{
    if (!b)
        return;
    jsCtx_Destroy(b->js);
    natsConnection_Destroy(b->nc); /* closes it first */
    free(b);
}

void broker_library_shutdown(void)
{
    /* A timeout only means libnats' threads finish after we return. */
    (void)nats_CloseAndWait(5000);
}

int broker_connected(broker *b)
{
    return natsConnection_Status(b->nc) == NATS_CONN_STATUS_CONNECTED;
}

const char *broker_strerror(int err)
{
    switch (err) {
    case BROKER_OK:
        return "ok";
    case BROKER_EUNAVAILABLE:
        return "broker unavailable";
    case BROKER_EINTERNAL:
        return "broker error";
    case BROKER_ETIMEDOUT:
        return "no message within the timeout";
    case BROKER_EEXISTS:
        return "key exists";
    case BROKER_ECONFLICT:
        return "revision changed";
    case BROKER_ENOTFOUND:
        return "key not found";
    default:
        return "unknown broker error";
    }
}

/* ---- Streams ---- */

int broker_ensure_stream(broker *b, const char *name, const char *subjects, int replicas,
                         char *err, size_t errlen)
{
    jsStreamConfig cfg;
    natsStatus s = jsStreamConfig_Init(&cfg);
    if (s != NATS_OK) {
        broker_seterr(err, errlen, "broker: stream %s: %s", name, broker_nats_detail(s));
        return BROKER_EINTERNAL;
    }
    if (!broker_connected(b)) {
        broker_seterr(err, errlen, "broker: stream %s: not connected", name);
        return BROKER_EUNAVAILABLE;
    }
    const char *subj[1] = {subjects};
    cfg.Name = name;
    cfg.Subjects = subj;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Retention = js_LimitsPolicy;
    cfg.Replicas = replicas > 0 ? replicas : 1;
    cfg.Duplicates = BROKER_DUPLICATE_WINDOW_NS;
    jsErrCode jerr = 0;
    /* Adding a stream that exists with this very configuration succeeds;
     * with another one it fails as "name in use", and is updated. */
    s = js_AddStream(NULL, b->js, &cfg, NULL, &jerr);
    if (s != NATS_OK && jerr == JSStreamNameExistErr) {
        jerr = 0;
        s = js_UpdateStream(NULL, b->js, &cfg, NULL, &jerr);
    }
    if (s != NATS_OK) {
        broker_seterr(err, errlen, "broker: stream %s: %s (%d)", name, broker_nats_detail(s),
                      (int)jerr);
        return broker_rc(s, jerr);
    }
    return BROKER_OK;
}

/* ---- Publishing ---- */

/* Whether a request certainly never reached a stream: the connection was
 * down before it was sent, or no server subscribed to its subject (in a
 * cluster, while a stream has no leader).  Nothing happened, so sending it
 * again is safe even for a conditional write, which a retry after a lost
 * acknowledgement is not (the first attempt may have succeeded). */
static int broker_not_sent(natsStatus s)
{
    return s == NATS_NO_RESPONDERS || s == NATS_NOT_YET_CONNECTED;
}

/* Pauses until the next attempt, or returns 0 when the deadline is too
 * close for one. */
static int broker_retry_pause(int64_t deadline)
{
    int64_t left = deadline - nats_Now();
    if (left <= BROKER_RETRY_PAUSE_MS)
        return 0;
    nats_Sleep(BROKER_RETRY_PAUSE_MS);
    return 1;
}

/* Publishes msg and reads its acknowledgement, trying again while it could
 * not be sent, until timeout_ms has passed.  po carries the expectations. */
static int broker_publish_msg(broker *b, natsMsg *msg, jsPubOptions *po, int timeout_ms,
                              uint64_t *seq, int *duplicate, jsErrCode *jerr)
{
    int64_t deadline = nats_Now() + timeout_ms;
    jsPubAck *pa = NULL;
    natsStatus s;
    for (;;) {
        *jerr = 0;
        /* While disconnected libnats would park the message until the
         * reconnection and then wait out the full timeout. */
        s = broker_connected(b) ? NATS_OK : NATS_NOT_YET_CONNECTED;
        if (s == NATS_OK) {
            int64_t left = deadline - nats_Now();
            po->MaxWait = left > 0 ? left : 1;
            s = js_PublishMsg(&pa, b->js, msg, po, jerr);
        }
        if (s == NATS_OK || !broker_not_sent(s) || !broker_retry_pause(deadline))
            break;
    }
    if (s != NATS_OK) {
        jsPubAck_Destroy(pa);
        return broker_rc(s, *jerr);
    }
    if (seq)
        *seq = pa->Sequence;
    if (duplicate)
        *duplicate = pa->Duplicate ? 1 : 0;
    jsPubAck_Destroy(pa);
    return BROKER_OK;
}

/* A message on subject with data and, when hname is not NULL, one header. */
static natsStatus broker_make_msg(natsMsg **out, const char *subject, const void *data,
                                  size_t len, const char *hname, const char *hvalue)
{
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, (const char *)data, (int)len);
    if (s == NATS_OK && hname)
        s = natsMsgHeader_Set(m, hname, hvalue);
    if (s != NATS_OK) {
        natsMsg_Destroy(m);
        return s;
    }
    *out = m;
    return NATS_OK;
}

int broker_publish(broker *b, const char *subject, const char *msg_id, const void *data,
                   size_t len, int timeout_ms, uint64_t *seq, int *duplicate)
{
    if (!subject || !msg_id || !*msg_id || strlen(msg_id) > BROKER_MAX_MSG_ID || len > INT_MAX ||
        (len > 0 && !data))
        return BROKER_EINTERNAL;
    natsMsg *msg = NULL;
    natsStatus s = broker_make_msg(&msg, subject, data, len, BROKER_MSG_ID_HEADER, msg_id);
    if (s != NATS_OK)
        return BROKER_EINTERNAL;
    jsPubOptions po;
    s = jsPubOptions_Init(&po);
    if (s != NATS_OK) {
        natsMsg_Destroy(msg);
        return BROKER_EINTERNAL;
    }
    jsErrCode jerr;
    int rc = broker_publish_msg(b, msg, &po, timeout_ms > 0 ? timeout_ms : b->request_timeout_ms,
                                seq, duplicate, &jerr);
    natsMsg_Destroy(msg);
    return rc;
}

/* ---- Key-value bucket ----
 *
 * Writes are plain JetStream publishes on the bucket's subjects, with the
 * expected last sequence of the key's subject: libnats' kvStore_Create and
 * kvStore_Update report a lost race only as a generic error, while the
 * publish acknowledgement names it (JSStreamWrongLastSequenceErr).  Reads
 * ask the stream leader for the subject's last message: kvStore_Get uses
 * "direct get", which any replica answers, possibly one that lags. */

/* Letters, digits, "-_=/" in dot-separated non-empty tokens. */
static int broker_kv_key_ok(const char *key)
{
    if (!key || !*key || *key == '.')
        return 0;
    size_t n = strlen(key);
    if (key[n - 1] == '.' || n > 200)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = key[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_' || c == '=' || c == '/' || (c == '.' && key[i - 1] != '.');
        if (!ok)
            return 0;
    }
    return 1;
}

/* Bucket names: letters, digits, '-' and '_'. */
static int broker_bucket_ok(const char *bucket)
{
    if (!bucket || !*bucket || strlen(bucket) > 64)
        return 0;
    for (const char *p = bucket; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

/* Brings an existing bucket's stream to the wanted TTL and replicas. */
static int broker_kv_reconfigure(broker *b, jsStreamInfo *si, int64_t ttl_ns, int replicas,
                                 char *err, size_t errlen)
{
    jsStreamConfig *cfg = si->Config;
    if (cfg->MaxAge == ttl_ns && cfg->Replicas == replicas)
        return BROKER_OK;
    cfg->MaxAge = ttl_ns;
    cfg->Replicas = replicas;
    /* The server requires the duplicate window to fit in the max age. */
    if (ttl_ns > 0 && (cfg->Duplicates == 0 || cfg->Duplicates > ttl_ns))
        cfg->Duplicates = ttl_ns < BROKER_DUPLICATE_WINDOW_NS ? ttl_ns : BROKER_DUPLICATE_WINDOW_NS;
    jsErrCode jerr = 0;
    natsStatus s = js_UpdateStream(NULL, b->js, cfg, NULL, &jerr);
    if (s != NATS_OK) {
        broker_seterr(err, errlen, "broker: bucket stream %s: %s (%d)", cfg->Name,
                      broker_nats_detail(s), (int)jerr);
        return broker_rc(s, jerr);
    }
    return BROKER_OK;
}

static int broker_kv_create_bucket(broker *b, const char *bucket, int64_t ttl_ns, int replicas,
                                   char *err, size_t errlen)
{
    kvConfig kc;
    natsStatus s = kvConfig_Init(&kc);
    if (s == NATS_OK) {
        kc.Bucket = bucket;
        kc.History = 1;
        kc.TTL = ttl_ns; /* libnats passes it on as the stream's MaxAge */
        kc.StorageType = js_FileStorage;
        kc.Replicas = replicas;
        kvStore *kvs = NULL;
        s = js_CreateKeyValue(&kvs, b->js, &kc);
        kvStore_Destroy(kvs);
    }
    if (s != NATS_OK) {
        broker_seterr(err, errlen, "broker: bucket %s: %s", bucket, broker_nats_detail(s));
        return broker_rc(s, 0);
    }
    return BROKER_OK;
}

int broker_kv_open(broker *b, const char *bucket, int64_t ttl_ms, int replicas,
                   broker_kv **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!broker_bucket_ok(bucket) || ttl_ms < 0 || ttl_ms > INT64_MAX / BROKER_NS_PER_MS) {
        broker_seterr(err, errlen, "broker: bad bucket name or TTL");
        return BROKER_EINTERNAL;
    }
    if (replicas < 1)
        replicas = 1;
    int64_t ttl_ns = ttl_ms * BROKER_NS_PER_MS;
    broker_kv *kv = calloc(1, sizeof *kv);
    if (kv) {
        kv->b = b;
        kv->stream = broker_concat("KV_", bucket);
        char *pre = broker_concat("$KV.", bucket);
        kv->prefix = pre ? broker_concat(pre, ".") : NULL;
        free(pre);
    }
    if (!kv || !kv->stream || !kv->prefix) {
        broker_kv_close(kv);
        broker_seterr(err, errlen, "broker: out of memory");
        return BROKER_EINTERNAL;
    }
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = broker_connected(b) ? js_GetStreamInfo(&si, b->js, kv->stream, NULL, &jerr)
                                       : NATS_NOT_YET_CONNECTED;
    int rc;
    if (s == NATS_OK) {
        rc = broker_kv_reconfigure(b, si, ttl_ns, replicas, err, errlen);
    } else if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
        /* Two processes may both get here: creating with one same
         * configuration twice succeeds. */
        rc = broker_kv_create_bucket(b, bucket, ttl_ns, replicas, err, errlen);
    } else {
        broker_seterr(err, errlen, "broker: bucket %s: %s", bucket, broker_nats_detail(s));
        rc = broker_rc(s, jerr);
    }
    jsStreamInfo_Destroy(si);
    if (rc != BROKER_OK) {
        broker_kv_close(kv);
        return rc;
    }
    *out = kv;
    return BROKER_OK;
}

void broker_kv_close(broker_kv *kv)
{
    if (!kv)
        return;
    free(kv->stream);
    free(kv->prefix);
    free(kv);
}

/* Writes value (or, with op, a marker carrying no value) to key's subject,
 * expecting its last revision to be `last` (0: expecting no message at
 * all; UINT64_MAX: no expectation). */
static int broker_kv_write(broker_kv *kv, const char *key, const void *value, size_t len,
                           const char *op, uint64_t last, uint64_t *revision)
{
    if (!broker_kv_key_ok(key) || len > INT_MAX || (len > 0 && !value))
        return BROKER_EINTERNAL;
    char *subject = broker_concat(kv->prefix, key);
    if (!subject)
        return BROKER_EINTERNAL;
    natsMsg *msg = NULL;
    natsStatus s = broker_make_msg(&msg, subject, value, len, op ? BROKER_KV_OP_HEADER : NULL, op);
    free(subject);
    if (s != NATS_OK)
        return BROKER_EINTERNAL;
    jsPubOptions po;
    s = jsPubOptions_Init(&po);
    if (s != NATS_OK) {
        natsMsg_Destroy(msg);
        return BROKER_EINTERNAL;
    }
    po.ExpectStream = kv->stream;
    if (last == 0)
        po.ExpectNoMessage = true;
    else if (last != UINT64_MAX)
        po.ExpectLastSubjectSeq = last;
    jsErrCode jerr = 0;
    int rc = broker_publish_msg(kv->b, msg, &po, kv->b->request_timeout_ms, revision, NULL, &jerr);
    natsMsg_Destroy(msg);
    if (rc != BROKER_OK && jerr == JSStreamWrongLastSequenceErr)
        return BROKER_ECONFLICT;
    return rc;
}

/* The last message of key's subject: 0 and *msg (natsMsg_Destroy it),
 * BROKER_ENOTFOUND, or an error. */
static int broker_kv_last(broker_kv *kv, const char *key, natsMsg **msg)
{
    *msg = NULL;
    if (!broker_kv_key_ok(key))
        return BROKER_EINTERNAL;
    char *subject = broker_concat(kv->prefix, key);
    if (!subject)
        return BROKER_EINTERNAL;
    int64_t deadline = nats_Now() + kv->b->request_timeout_ms;
    jsErrCode jerr;
    natsStatus s;
    for (;;) {
        jerr = 0;
        s = broker_connected(kv->b) ? NATS_OK : NATS_NOT_YET_CONNECTED;
        if (s == NATS_OK) {
            jsOptions jo;
            s = jsOptions_Init(&jo);
            int64_t left = deadline - nats_Now();
            jo.Wait = left > 0 ? left : 1;
            if (s == NATS_OK)
                s = js_GetLastMsg(msg, kv->b->js, kv->stream, subject, &jo, &jerr);
        }
        if (s == NATS_OK || !broker_not_sent(s) || !broker_retry_pause(deadline))
            break;
    }
    free(subject);
    if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr)
        return BROKER_ENOTFOUND;
    if (s != NATS_OK)
        return broker_rc(s, jerr);
    return BROKER_OK;
}

/* Whether a bucket message is a delete or purge marker rather than a value. */
static int broker_kv_is_marker(natsMsg *m)
{
    const char *op = NULL;
    return natsMsgHeader_Get(m, BROKER_KV_OP_HEADER, &op) == NATS_OK && op &&
           (strcmp(op, "DEL") == 0 || strcmp(op, "PURGE") == 0);
}

int broker_kv_create(broker_kv *kv, const char *key, const void *value, size_t len,
                     uint64_t *revision)
{
    int rc = broker_kv_write(kv, key, value, len, NULL, 0, revision);
    if (rc != BROKER_ECONFLICT)
        return rc;
    /* The subject has a message: a value (the key exists) or a delete
     * marker (it does not, and the marker's revision is the one to
     * replace). */
    natsMsg *m = NULL;
    rc = broker_kv_last(kv, key, &m);
    if (rc == BROKER_ENOTFOUND) /* expired in between: try once more */
        rc = broker_kv_write(kv, key, value, len, NULL, 0, revision);
    else if (rc == BROKER_OK && broker_kv_is_marker(m))
        rc = broker_kv_write(kv, key, value, len, NULL, natsMsg_GetSequence(m), revision);
    else if (rc == BROKER_OK)
        rc = BROKER_EEXISTS;
    natsMsg_Destroy(m);
    return rc == BROKER_ECONFLICT ? BROKER_EEXISTS : rc; /* another creator won */
}

int broker_kv_update(broker_kv *kv, const char *key, const void *value, size_t len,
                     uint64_t last, uint64_t *revision)
{
    if (last == 0 || last == UINT64_MAX)
        return BROKER_EINTERNAL;
    return broker_kv_write(kv, key, value, len, NULL, last, revision);
}

int broker_kv_get(broker_kv *kv, const char *key, char **value, size_t *len,
                  uint64_t *revision)
{
    if (value)
        *value = NULL;
    natsMsg *m = NULL;
    int rc = broker_kv_last(kv, key, &m);
    if (rc == BROKER_OK && broker_kv_is_marker(m))
        rc = BROKER_ENOTFOUND;
    if (rc != BROKER_OK) {
        natsMsg_Destroy(m);
        return rc;
    }
    size_t n = (size_t)natsMsg_GetDataLength(m);
    if (value) {
        *value = malloc(n + 1);
        if (!*value) {
            natsMsg_Destroy(m);
            return BROKER_EINTERNAL;
        }
        if (n)
            memcpy(*value, natsMsg_GetData(m), n);
        (*value)[n] = '\0';
    }
    if (len)
        *len = n;
    if (revision)
        *revision = natsMsg_GetSequence(m);
    natsMsg_Destroy(m);
    return BROKER_OK;
}

int broker_kv_delete(broker_kv *kv, const char *key, uint64_t last)
{
    return broker_kv_write(kv, key, NULL, 0, "DEL", last ? last : UINT64_MAX, NULL);
}

/* ---- Readers ----
 *
 * An ordered consumer: an ephemeral push consumer that libnats watches
 * with heartbeats and re-creates, from the stream sequence after the last
 * one delivered, whenever a gap, a lost consumer or a reconnection is
 * detected.  The reader keeps its own position as well and re-subscribes
 * from it after any other failure, and drops anything before it, so what
 * it returns is in stream order without repeats whatever libnats does. */

static int broker_reader_subscribe(broker_reader *r)
{
    if (!broker_connected(r->b))
        return BROKER_EUNAVAILABLE;
    jsSubOptions so;
    natsStatus s = jsSubOptions_Init(&so);
    if (s != NATS_OK)
        return BROKER_EINTERNAL;
    so.Stream = r->stream;
    so.Ordered = true;
    so.Config.DeliverPolicy = js_DeliverByStartSequence;
    so.Config.OptStartSeq = r->next_seq;
    so.Config.Heartbeat = BROKER_READER_HEARTBEAT_NS;
    jsErrCode jerr = 0;
    s = js_SubscribeSync(&r->sub, r->b->js, r->subject, NULL, &so, &jerr);
    if (s != NATS_OK) {
        r->sub = NULL;
        return broker_rc(s, jerr);
    }
    return BROKER_OK;
}

/* Drops the subscription.  Its server-side consumer is ephemeral: the
 * server deletes it a few seconds after its interest went.  Not
 * natsSubscription_Unsubscribe(), which would delete it at once: in libnats
 * 3.4 that races with the ordered consumer's own re-creation and reads the
 * old consumer's freed name (seen under ASan after a cluster node's kill). */
static void broker_reader_drop(broker_reader *r)
{
    natsSubscription_Destroy(r->sub);
    r->sub = NULL;
}

int broker_reader_open(broker *b, const char *stream, const char *subject, uint64_t start_seq,
                       broker_reader **out)
{
    *out = NULL;
    if (!stream || !subject)
        return BROKER_EINTERNAL;
    broker_reader *r = calloc(1, sizeof *r);
    if (!r)
        return BROKER_EINTERNAL;
    r->b = b;
    r->next_seq = start_seq > 0 ? start_seq : 1;
    r->stream = broker_strdup(stream);
    r->subject = broker_strdup(subject);
    int rc = r->stream && r->subject ? broker_reader_subscribe(r) : BROKER_EINTERNAL;
    if (rc != BROKER_OK) {
        broker_reader_close(r);
        return rc;
    }
    *out = r;
    return BROKER_OK;
}

/* Fills out from r->cur. */
static int broker_reader_fill(broker_reader *r, uint64_t seq, struct broker_msg *out)
{
    natsMsg *m = r->cur;
    const char *id = NULL;
    if (natsMsgHeader_Get(m, BROKER_MSG_ID_HEADER, &id) != NATS_OK)
        id = NULL;
    out->data = natsMsg_GetData(m);
    out->len = (size_t)natsMsg_GetDataLength(m);
    out->seq = seq;
    out->msg_id = id;
    out->subject = natsMsg_GetSubject(m);
    return BROKER_OK;
}

int broker_reader_next(broker_reader *r, int timeout_ms, struct broker_msg *out)
{
    natsMsg_Destroy(r->cur);
    r->cur = NULL;
    int64_t deadline = nats_Now() + (timeout_ms > 0 ? timeout_ms : 0);
    int rc = BROKER_ETIMEDOUT;
    for (;;) {
        int64_t left = deadline - nats_Now();
        if (!r->sub) {
            rc = broker_reader_subscribe(r);
            if (rc != BROKER_OK) {
                if (left <= 0)
                    return rc;
                nats_Sleep(left < BROKER_READER_RETRY_MS ? left : BROKER_READER_RETRY_MS);
                continue;
            }
            left = deadline - nats_Now();
        }
        natsMsg *m = NULL;
        /* NextMsg needs a positive wait: 1 ms stands for "whatever has
         * arrived already". */
        natsStatus s = natsSubscription_NextMsg(&m, r->sub, left > 0 ? left : 1);
        if (s == NATS_TIMEOUT)
            return BROKER_ETIMEDOUT;
        if (s != NATS_OK) {
            /* Gaps, lost heartbeats, a slow consumer, an invalidated
             * subscription: start again from our own position. */
            broker_reader_drop(r);
            if (deadline - nats_Now() <= 0)
                return BROKER_EUNAVAILABLE;
            continue;
        }
        jsMsgMetaData *meta = NULL;
        if (natsMsg_GetMetaData(&meta, m) != NATS_OK) {
            natsMsg_Destroy(m); /* not a stream message: nothing of ours */
            continue;
        }
        uint64_t seq = meta->Sequence.Stream;
        jsMsgMetaData_Destroy(meta);
        if (seq < r->next_seq) {
            natsMsg_Destroy(m); /* already returned before a re-subscription */
            continue;
        }
        r->next_seq = seq + 1;
        r->cur = m;
        return broker_reader_fill(r, seq, out);
    }
}

uint64_t broker_reader_position(const broker_reader *r)
{
    return r->next_seq;
}

void broker_reader_close(broker_reader *r)
{
    if (!r)
        return;
    natsMsg_Destroy(r->cur);
    broker_reader_drop(r);
    free(r->stream);
    free(r->subject);
    free(r);
}
