#include "broker/broker.h"

#include <nats/nats.h>

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/sync.h"

#define BROKER_DEFAULT_CONNECT_TIMEOUT_MS 2000
#define BROKER_DEFAULT_REQUEST_TIMEOUT_MS 5000
#define BROKER_DEFAULT_RECONNECT_WAIT_MS 250
#define BROKER_DEFAULT_PING_INTERVAL_MS 5000
#define BROKER_MAX_SERVERS 16
#define BROKER_MAX_MSG_ID 128
#define BROKER_DUPLICATE_WINDOW_NS (120LL * 1000 * 1000 * 1000)
#define BROKER_NS_PER_MS (1000LL * 1000)
/* Heartbeats of a reader's idle consumer, and the silence after which the
 * consumer counts as lost (its server died, or the connection dropped): a
 * short interval shortens a reader's stall after a failover. */
#define BROKER_READER_HEARTBEAT_NS (1000LL * 1000 * 1000)
#define BROKER_READER_STALL_MS 3000
/* How long the server keeps a consumer nobody listens to any more. */
#define BROKER_READER_INACTIVE_NS (5LL * 1000 * 1000 * 1000)
/* Longest wait for a reader's consumer to be created. */
#define BROKER_READER_CREATE_MS 2000
/* Longest wait for a consumer's deletion when a reader drops it. */
#define BROKER_READER_DELETE_MS 1000
/* Pause between attempts to re-create a reader's consumer. */
#define BROKER_READER_RETRY_MS 100
/* Longest wait for the round trip that makes a subscription safe to free. */
#define BROKER_RETIRE_FLUSH_MS 1000
/* Pause before sending again a request that could not be sent. */
#define BROKER_RETRY_PAUSE_MS 50

/* Headers of the key-value layout libnats and the server agree on. */
#define BROKER_KV_OP_HEADER "KV-Operation"
#define BROKER_MSG_ID_HEADER "Nats-Msg-Id"

/* A subscription removed from the connection but not destroyed yet: see
 * broker_retire(). */
struct broker_retired {
    natsSubscription *sub;        /* unsubscribed, still allocated */
    uint64_t seq;                 /* order of retirement */
    struct broker_retired *next;
};

struct broker {
    natsConnection *nc;     /* the connection; thread-safe, reconnects by itself */
    jsCtx *js;              /* JetStream context on nc; thread-safe */
    int request_timeout_ms; /* the JetStream API requests' wait */
    pthread_mutex_t mu;     /* guards retired and retire_seq */
    struct broker_retired *retired; /* subscriptions awaiting a safe destruction */
    uint64_t retire_seq;    /* seq of the next retirement */
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
    natsSubscription *sub;  /* plain subscription to the consumer's inbox, NULL: none */
    char *consumer;         /* the consumer's name while it may exist, else NULL */
    uint64_t delivered;     /* consumer sequence of the last delivery taken */
    int64_t heard_ms;       /* nats_Now() when the subscription last gave anything */
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

/* ---- Freeing subscriptions ----
 *
 * libnats 3.4 looks a subscription up under its connection's subscription
 * lock, releases that lock, and only then locks the subscription to queue a
 * message, without holding a reference in between (fixed in nats.c 3.6,
 * pull request 638).  A subscription destroyed in that window is used after
 * it was freed, on libnats' reader thread: natsSubscription_Destroy() is
 * unsafe while the server may still be sending to it.  So a subscription is
 * unsubscribed first (no lookup finds it any more), then a PING/PONG round
 * trip is made: the reader thread handles the PONG only after whatever it
 * was doing when the subscription was removed, so once the PONG is back no
 * lookup of it is in progress, and it is freed.  When the round trip fails
 * (disconnected, timed out), the subscription is kept until a later round
 * trip covers it, or until broker_close(), after libnats' threads ended. */

/* Destroys the retired subscriptions with seq below `below`. */
static void broker_free_retired(broker *b, uint64_t below)
{
    struct broker_retired *dead = NULL;
    sync_lock(&b->mu);
    for (struct broker_retired **pp = &b->retired; *pp;) {
        struct broker_retired *r = *pp;
        if (r->seq < below) {
            *pp = r->next;
            r->next = dead;
            dead = r;
        } else {
            pp = &r->next;
        }
    }
    sync_unlock(&b->mu);
    while (dead) {
        struct broker_retired *next = dead->next;
        natsSubscription_Destroy(dead->sub);
        free(dead);
        dead = next;
    }
}

/* Unsubscribes sub and destroys it once libnats' reader thread cannot be
 * using it any more (see above). */
static void broker_retire(broker *b, natsSubscription *sub)
{
    /* Fails only when the connection is closed or the subscription gone
     * already: either way nothing can reach it any more. */
    (void)natsSubscription_Unsubscribe(sub);
    sync_lock(&b->mu);
    uint64_t covered = b->retire_seq; /* retired before this round trip began */
    sync_unlock(&b->mu);
    natsStatus s = broker_connected(b) ? natsConnection_FlushTimeout(b->nc, BROKER_RETIRE_FLUSH_MS)
                                       : NATS_NOT_YET_CONNECTED;
    if (s == NATS_OK) {
        natsSubscription_Destroy(sub);
        broker_free_retired(b, covered);
        return;
    }
    struct broker_retired *r = malloc(sizeof *r);
    sync_lock(&b->mu);
    if (r) {
        r->sub = sub;
        r->seq = b->retire_seq++;
        r->next = b->retired;
        b->retired = r;
    }
    sync_unlock(&b->mu);
    /* Out of memory: leaking the subscription is the safe choice. */
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
    if (b && pthread_mutex_init(&b->mu, NULL) != 0) {
        free(b);
        b = NULL;
    }
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
        if (b) {
            natsConnection_Destroy(b->nc);
            pthread_mutex_destroy(&b->mu);
        }
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
        pthread_mutex_destroy(&b->mu);
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
    natsConnection_Destroy(b->nc); /* closes it first, its reader thread ended */
    broker_free_retired(b, UINT64_MAX);
    pthread_mutex_destroy(&b->mu);
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

/* Options of a JetStream request that must finish by deadline (nats_Now()
 * milliseconds; at least 1 ms is always left), or NATS_NOT_YET_CONNECTED
 * while the connection is down, so that the caller's retry loop waits. */
static natsStatus broker_request_options(broker *b, int64_t deadline, jsOptions *jo)
{
    if (!broker_connected(b))
        return NATS_NOT_YET_CONNECTED;
    natsStatus s = jsOptions_Init(jo);
    int64_t left = deadline - nats_Now();
    jo->Wait = left > 0 ? left : 1;
    return s;
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
    return broker_ensure_stream_aged(b, name, subjects, replicas, 0, err, errlen);
}

int broker_ensure_stream_aged(broker *b, const char *name, const char *subjects, int replicas,
                              int64_t max_age_ms, char *err, size_t errlen)
{
    if (max_age_ms < 0 || max_age_ms > INT64_MAX / BROKER_NS_PER_MS) {
        broker_seterr(err, errlen, "broker: stream %s: bad maximum age", name);
        return BROKER_EINTERNAL;
    }
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
    cfg.MaxAge = max_age_ms * BROKER_NS_PER_MS;
    /* The server requires the duplicate window to fit in the maximum age. */
    if (cfg.MaxAge > 0 && cfg.Duplicates > cfg.MaxAge)
        cfg.Duplicates = cfg.MaxAge;
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
        jsOptions jo;
        s = broker_request_options(kv->b, deadline, &jo);
        if (s == NATS_OK)
            s = js_GetLastMsg(msg, kv->b->js, kv->stream, subject, &jo, &jerr);
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

/* Purges subject in stream: its messages of sequence below `below`, or all
 * of them when below is 0.  0 or an error. */
static int broker_stream_purge(broker *b, const char *stream, const char *subject,
                               uint64_t below)
{
    int64_t deadline = nats_Now() + b->request_timeout_ms;
    jsErrCode jerr;
    natsStatus s;
    for (;;) {
        jerr = 0;
        jsOptions jo;
        s = broker_request_options(b, deadline, &jo);
        if (s == NATS_OK) {
            jo.Stream.Purge.Subject = subject;
            jo.Stream.Purge.Sequence = below;
            s = js_PurgeStream(b->js, stream, &jo, &jerr);
        }
        if (s == NATS_OK || !broker_not_sent(s) || !broker_retry_pause(deadline))
            break;
    }
    return broker_rc(s, jerr);
}

int broker_purge_below(broker *b, const char *stream, const char *subject, uint64_t below)
{
    if (!stream || !subject || below == 0)
        return BROKER_EINTERNAL;
    return broker_stream_purge(b, stream, subject, below);
}

/* Purges key's subject in the bucket's stream (see broker_stream_purge). */
static int broker_kv_purge(broker_kv *kv, const char *key, uint64_t below)
{
    char *subject = broker_concat(kv->prefix, key);
    if (!subject)
        return BROKER_EINTERNAL;
    int rc = broker_stream_purge(kv->b, kv->stream, subject, below);
    free(subject);
    return rc;
}

/* A key is deleted by purging its subject from the bucket's stream, not by
 * writing a delete marker: the key then has no subject in the stream at
 * all, which is what broker_kv_keys() lists.  (Deleting single messages is
 * not an option: buckets deny it.)  A purge of the messages up to `last`
 * is conditional by itself: a later write survives it.  The bucket keeps
 * one message per key (history 1), so after the purge the key is either
 * gone (it was at `last`) or at a later revision (a write won the race). */
int broker_kv_delete(broker_kv *kv, const char *key, uint64_t last)
{
    if (!broker_kv_key_ok(key))
        return BROKER_EINTERNAL;
    if (last == 0)
        return broker_kv_purge(kv, key, 0);
    natsMsg *m = NULL;
    int rc = broker_kv_last(kv, key, &m);
    uint64_t rev = rc == BROKER_OK ? natsMsg_GetSequence(m) : 0;
    natsMsg_Destroy(m);
    if (rc == BROKER_ENOTFOUND || (rc == BROKER_OK && rev != last))
        return BROKER_ECONFLICT;
    if (rc == BROKER_OK)
        rc = broker_kv_purge(kv, key, last + 1);
    if (rc != BROKER_OK)
        return rc;
    m = NULL;
    rc = broker_kv_last(kv, key, &m);
    rev = rc == BROKER_OK ? natsMsg_GetSequence(m) : 0;
    natsMsg_Destroy(m);
    if (rc == BROKER_ENOTFOUND)
        return BROKER_OK;
    if (rc != BROKER_OK)
        return rc;
    return rev > last ? BROKER_ECONFLICT : BROKER_EINTERNAL;
}

static int broker_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The information of stream (with its subjects matching subjects, when not
 * NULL), asked until the deadline of timeout_ms (0: the request timeout)
 * while the request was certainly not sent.  Returns 0 with *si (the
 * caller destroys it), or a broker error. */
static int broker_stream_info(broker *b, const char *stream, const char *subjects,
                              int timeout_ms, jsStreamInfo **si)
{
    int64_t deadline = nats_Now() + (timeout_ms > 0 ? timeout_ms : b->request_timeout_ms);
    jsErrCode jerr;
    natsStatus s;
    *si = NULL;
    for (;;) {
        jerr = 0;
        jsOptions jo;
        s = broker_request_options(b, deadline, &jo);
        if (s == NATS_OK) {
            jo.Stream.Info.SubjectsFilter = subjects;
            s = js_GetStreamInfo(si, b->js, stream, &jo, &jerr);
        }
        if (s == NATS_OK || !broker_not_sent(s) || !broker_retry_pause(deadline))
            break;
    }
    return s == NATS_OK ? BROKER_OK : broker_rc(s, jerr);
}

int broker_stream_messages(broker *b, const char *stream, int timeout_ms, uint64_t *msgs)
{
    jsStreamInfo *si;
    int rc = broker_stream_info(b, stream, NULL, timeout_ms, &si);
    if (rc != BROKER_OK)
        return rc;
    *msgs = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return BROKER_OK;
}

int broker_kv_keys(broker_kv *kv, int timeout_ms, char ***keys, size_t *count)
{
    *keys = NULL;
    *count = 0;
    char *filter = broker_concat(kv->prefix, ">");
    if (!filter)
        return BROKER_EINTERNAL;
    jsStreamInfo *si;
    int rc = broker_stream_info(kv->b, kv->stream, filter, timeout_ms, &si);
    free(filter);
    if (rc != BROKER_OK)
        return rc;
    /* One block: the pointers, then the keys they point to. */
    const jsStreamStateSubjects *subj = si->State.Subjects;
    size_t n = 0, bytes = 0, plen = strlen(kv->prefix);
    for (int i = 0; subj && i < subj->Count; i++) {
        const char *name = subj->List[i].Subject;
        if (name && strncmp(name, kv->prefix, plen) == 0 && name[plen]) {
            n++;
            bytes += strlen(name + plen) + 1;
        }
    }
    char **list = malloc(n * sizeof *list + bytes + 1);
    if (!list) {
        jsStreamInfo_Destroy(si);
        return BROKER_EINTERNAL;
    }
    char *p = (char *)(list + n);
    n = 0;
    for (int i = 0; subj && i < subj->Count; i++) {
        const char *name = subj->List[i].Subject;
        if (name && strncmp(name, kv->prefix, plen) == 0 && name[plen]) {
            size_t len = strlen(name + plen) + 1;
            memcpy(p, name + plen, len);
            list[n++] = p;
            p += len;
        }
    }
    jsStreamInfo_Destroy(si);
    qsort(list, n, sizeof *list, broker_cmp_str);
    *keys = list;
    *count = n;
    return BROKER_OK;
}

/* ---- Readers ----
 *
 * A plain push consumer that the reader creates, watches and deletes
 * itself: ephemeral, filtered on the subject, delivering from the reader's
 * position without acknowledgements to a fresh inbox that a plain (not
 * JetStream) subscription reads.  libnats therefore runs no consumer logic
 * of its own on its reader thread (its ordered consumers re-create their
 * subscriptions there, racing with everything else): flow control,
 * heartbeats and gaps are handled here, on the reader's thread; a consumer
 * is only ever replaced by this code, and its subscription freed only once
 * that is safe (broker_retire()).
 *
 * The consumer counts what it delivers (the consumer sequence in each
 * message's metadata, the last count in each heartbeat); any mismatch with
 * what arrived means a delivery was lost, and so does a silence longer than
 * a few heartbeats, or any other status.  The reader then drops the
 * consumer and creates another from its own position: what it returns is
 * in stream order, each message once. */

#define BROKER_STATUS_HEADER "Status"
#define BROKER_LAST_CONSUMER_HEADER "Nats-Last-Consumer"
#define BROKER_STALLED_HEADER "Nats-Consumer-Stalled"
#define BROKER_CONTROL_STATUS "100" /* heartbeats and flow control requests */

/* What one delivery on a reader's subscription turned out to be. */
enum broker_delivery {
    BROKER_DELIVERY_DATA,    /* the next message of the subject */
    BROKER_DELIVERY_CONTROL, /* heartbeat, flow control, or nothing of ours: read on */
    BROKER_DELIVERY_LOST,    /* the consumer lost a delivery or itself: re-create it */
};

/* Drops the reader's subscription and forgets its consumer, deleting it
 * when `delete` says so.  Deletion waits for the server only while
 * connected, and at most BROKER_READER_DELETE_MS.  A consumer left behind
 * (not deleted: silent, so probably gone with its node; or the server did
 * not answer) is removed by the server itself after its inactive
 * threshold, its interest being gone. */
static void broker_reader_drop(broker_reader *r, int delete)
{
    if (r->sub) {
        broker_retire(r->b, r->sub);
        r->sub = NULL;
    }
    if (delete && r->consumer && broker_connected(r->b)) {
        jsOptions jo;
        if (jsOptions_Init(&jo) == NATS_OK) {
            jo.Wait = r->b->request_timeout_ms < BROKER_READER_DELETE_MS
                          ? r->b->request_timeout_ms
                          : BROKER_READER_DELETE_MS;
            jsErrCode jerr = 0;
            (void)js_DeleteConsumer(r->b->js, r->stream, r->consumer, &jo, &jerr);
        }
    }
    free(r->consumer);
    r->consumer = NULL;
}

/* Creates the consumer, delivering from r->next_seq, and subscribes to its
 * inbox first, so that nothing it sends is missed. */
static int broker_reader_subscribe(broker_reader *r)
{
    if (!broker_connected(r->b))
        return BROKER_EUNAVAILABLE;
    natsInbox *inbox = NULL;
    natsStatus s = natsInbox_Create(&inbox);
    if (s != NATS_OK)
        return BROKER_EINTERNAL;
    s = natsConnection_SubscribeSync(&r->sub, r->b->nc, inbox);
    if (s != NATS_OK) {
        r->sub = NULL;
        natsInbox_Destroy(inbox);
        return broker_rc(s, 0);
    }
    jsConsumerConfig cc;
    jsOptions jo;
    jsConsumerInfo *ci = NULL;
    s = jsConsumerConfig_Init(&cc);
    if (s == NATS_OK)
        s = jsOptions_Init(&jo);
    jsErrCode jerr = 0;
    if (s == NATS_OK) {
        /* Named by the server, as libnats' own ephemeral consumers are. */
        cc.DeliverSubject = inbox;
        cc.FilterSubject = r->subject;
        cc.DeliverPolicy = js_DeliverByStartSequence;
        cc.OptStartSeq = r->next_seq;
        cc.AckPolicy = js_AckNone;
        cc.FlowControl = true;
        cc.Heartbeat = BROKER_READER_HEARTBEAT_NS;
        cc.InactiveThreshold = BROKER_READER_INACTIVE_NS;
        /* Lost with its node, the consumer is re-created from the reader's
         * position: replicating or persisting it would buy nothing. */
        cc.Replicas = 1;
        cc.MemoryStorage = true;
        /* A creation takes milliseconds, unless the cluster placed the
         * consumer on a node that died and is not known dead yet: then
         * trying again soon, elsewhere, beats waiting. */
        jo.Wait = r->b->request_timeout_ms < BROKER_READER_CREATE_MS ? r->b->request_timeout_ms
                                                                     : BROKER_READER_CREATE_MS;
        s = js_AddConsumer(&ci, r->b->js, r->stream, &cc, &jo, &jerr);
    }
    natsInbox_Destroy(inbox);
    if (s == NATS_OK && ci && ci->Name)
        r->consumer = broker_strdup(ci->Name); /* NULL: it cannot be deleted, it expires */
    jsConsumerInfo_Destroy(ci);
    if (s != NATS_OK) {
        /* A consumer whose creation timed out may exist: with nobody
         * listening, the server deletes it after its inactive threshold. */
        int rc = broker_rc(s, jerr);
        broker_reader_drop(r, 0);
        return rc;
    }
    r->delivered = 0;
    r->heard_ms = nats_Now();
    return BROKER_OK;
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

/* Answers a flow control request, or the one a heartbeat says the consumer
 * is stalled on.  A lost answer leaves the consumer stalled: its
 * heartbeats then carry the request again. */
static void broker_reader_flow(broker_reader *r, natsMsg *m)
{
    const char *reply = natsMsg_GetReply(m);
    if (!reply || !*reply) {
        if (natsMsgHeader_Get(m, BROKER_STALLED_HEADER, &reply) != NATS_OK)
            reply = NULL;
    }
    if (reply && *reply)
        (void)natsConnection_Publish(r->b->nc, reply, NULL, 0);
}

/* Sorts out one delivery; for data, *seq is its stream sequence. */
static enum broker_delivery broker_reader_classify(broker_reader *r, natsMsg *m, uint64_t *seq)
{
    const char *status = NULL;
    if (natsMsgHeader_Get(m, BROKER_STATUS_HEADER, &status) == NATS_OK && status) {
        if (strcmp(status, BROKER_CONTROL_STATUS) != 0)
            return BROKER_DELIVERY_LOST; /* e.g. 409: the consumer was deleted */
        broker_reader_flow(r, m);
        const char *last = NULL;
        if (natsMsgHeader_Get(m, BROKER_LAST_CONSUMER_HEADER, &last) == NATS_OK && last) {
            /* Everything the consumer sent before the heartbeat has arrived
             * before it, on the one connection. */
            char *end = NULL;
            unsigned long long n = strtoull(last, &end, 10);
            if (end == last || *end != '\0' || n != r->delivered)
                return BROKER_DELIVERY_LOST;
        }
        return BROKER_DELIVERY_CONTROL;
    }
    jsMsgMetaData *meta = NULL;
    if (natsMsg_GetMetaData(&meta, m) != NATS_OK)
        return BROKER_DELIVERY_CONTROL; /* not a stream message: nothing of ours */
    uint64_t cseq = meta->Sequence.Consumer;
    *seq = meta->Sequence.Stream;
    jsMsgMetaData_Destroy(meta);
    if (cseq != r->delivered + 1)
        return BROKER_DELIVERY_LOST;
    r->delivered = cseq;
    /* A fresh consumer starts at next_seq: an earlier message cannot come;
     * if one did, it was returned already. */
    return *seq >= r->next_seq ? BROKER_DELIVERY_DATA : BROKER_DELIVERY_CONTROL;
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

/* Whether the consumer has been silent too long: nothing queued and nothing
 * taken for BROKER_READER_STALL_MS.  What arrived while the caller was busy
 * elsewhere is still queued, so a slow caller is never taken for a silent
 * consumer. */
static int broker_reader_silent(broker_reader *r, int64_t now)
{
    if (now - r->heard_ms < BROKER_READER_STALL_MS)
        return 0;
    int msgs = 0, bytes = 0;
    if (natsSubscription_GetPending(r->sub, &msgs, &bytes) != NATS_OK)
        return 1; /* the subscription is unusable */
    return msgs == 0;
}

int broker_reader_next(broker_reader *r, int timeout_ms, struct broker_msg *out)
{
    natsMsg_Destroy(r->cur);
    r->cur = NULL;
    int64_t deadline = nats_Now() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        int64_t now = nats_Now();
        if (!r->sub) {
            int rc = broker_reader_subscribe(r);
            if (rc != BROKER_OK) {
                if (deadline - now <= 0)
                    return rc;
                int64_t left = deadline - now;
                nats_Sleep(left < BROKER_READER_RETRY_MS ? left : BROKER_READER_RETRY_MS);
                continue;
            }
            now = nats_Now();
        }
        if (broker_reader_silent(r, now)) {
            broker_reader_drop(r, 0);
            if (deadline - nats_Now() <= 0)
                return BROKER_EUNAVAILABLE;
            continue;
        }
        /* Wake up in time to notice a silence; NextMsg needs a positive
         * wait: 1 ms stands for "whatever has arrived already". */
        int64_t wait = deadline - now;
        int64_t quiet = r->heard_ms + BROKER_READER_STALL_MS - now;
        if (wait > quiet)
            wait = quiet;
        natsMsg *m = NULL;
        natsStatus s = natsSubscription_NextMsg(&m, r->sub, wait > 0 ? wait : 1);
        if (s == NATS_TIMEOUT) {
            if (deadline - nats_Now() <= 0)
                return BROKER_ETIMEDOUT;
            continue;
        }
        uint64_t seq = 0;
        enum broker_delivery d = BROKER_DELIVERY_LOST; /* slow consumer, closed subscription */
        if (s == NATS_OK) {
            r->heard_ms = nats_Now();
            d = broker_reader_classify(r, m, &seq);
        }
        if (d == BROKER_DELIVERY_DATA) {
            r->next_seq = seq + 1;
            r->cur = m;
            return broker_reader_fill(r, seq, out);
        }
        natsMsg_Destroy(m);
        if (d == BROKER_DELIVERY_LOST) {
            broker_reader_drop(r, 1);
            if (deadline - nats_Now() <= 0)
                return BROKER_EUNAVAILABLE;
        }
    }
}

void broker_reader_close(broker_reader *r)
{
    if (!r)
        return;
    natsMsg_Destroy(r->cur);
    broker_reader_drop(r, 1);
    free(r->stream);
    free(r->subject);
    free(r);
}
