/* The worker against a real nats-server (started here by tests/broker/nats.sh,
 * run from the repository's root) and a temporary SQLite store: operations
 * published directly on the stream are applied once each, in order per
 * partition, by two workers sharing 8 partitions, one of which is abandoned
 * (as if killed) mid-stream; failures are recorded with the synchronous
 * API's codes; a worker with another partition count than the stream's is
 * refused; an operation the store keeps failing internally is dead-lettered
 * and recorded after --max-apply-attempts tries while one it cannot take
 * for a while (unavailable) is not; and a worker joining one that owns every
 * partition gets its half within a few seconds, never owning one at the
 * same time as the other.  Every applied write records its event, naming
 * the operation and what the message says of the caller and the request,
 * and failed operations record none. */
#include "app/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/opstream.h"
#include "broker/partition.h"
#include "payment/store.h"
#include "payment/store_impl.h"
#include "payment/validate.h"
#include "broker/nats_fixture.h"
#include "test.h"

#define PARTITIONS 8
#define ORGS 40
#define PAYMENTS_PER_ORG 10
#define STEPS 5 /* a create, then STEPS - 1 patches, each on the previous version */
#define OPS (ORGS * PAYMENTS_PER_ORG * STEPS)
#define TTL_MS 2000
#define PATIENCE_MS 90000

/* The run's fixture, set up by test_setup. */
static struct {
    char url[256];             /* the server */
    char dir[128];             /* its directory and the store's */
    broker *b;                 /* the publisher's handle */
    payment_store *store;      /* shared by the workers */
    payment_validator *v;
    struct logger log;
    json_t *attributes;        /* a valid payment's attributes, and a null */
    worker *a, *b2;            /* the two workers; a is abandoned mid-stream */
} fx;

static void org_id(int o, char out[37])
{
    snprintf(out, 37, "00000000-0000-4000-8000-%012x", 0x100000 + o);
}

static void payment_id(int o, int k, char out[37])
{
    snprintf(out, 37, "00000000-0000-4000-9000-%06x%06x", o, k);
}

static void op_id(int o, int k, int step, char out[37])
{
    snprintf(out, 37, "00000000-0000-4000-a000-%04x%04x%04x", o, k, step);
}

/* Publishes an operation on its organisation's partition; msg_id NULL: the
 * op id.  Returns the stream sequence, 0 on failure. */
static uint64_t publish(const char *op, const char *kind, const char *pid, const char *org,
                        int64_t base, json_t *data, const char *msg_id)
{
    json_t *m = json_pack("{s:s,s:s,s:s,s:s,s:I,s:I}", "op", op, "kind", kind, "payment_id", pid,
                          "organisation_id", org, "base_version", (json_int_t)base,
                          "submitted_ms", (json_int_t)0);
    if (!m)
        return 0;
    if (data && json_object_set(m, "data", data) != 0) {
        json_decref(m);
        return 0;
    }
    char *text = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    if (!text)
        return 0;
    char subject[64];
    snprintf(subject, sizeof subject, "payments.cmd.%" PRIu32, partition_of(org, PARTITIONS));
    uint64_t seq = 0;
    int rc = broker_publish(fx.b, subject, msg_id ? msg_id : op, text, strlen(text), 0, &seq, NULL);
    free(text);
    return rc == 0 ? seq : 0;
}

/* The data of step `step` of payment (o, k): the create, or a patch of
 * reference to "step-<step>". */
static json_t *step_data(int o, int step)
{
    if (step == 0) {
        char org[37];
        org_id(o, org);
        return json_pack("{s:s,s:s,s:O}", "type", "payments", "organisation_id", org,
                         "attributes", fx.attributes);
    }
    char ref[32];
    snprintf(ref, sizeof ref, "step-%d", step);
    return json_pack("{s:{s:s}}", "attributes", "reference", ref);
}

static uint64_t publish_step(int o, int k, int step)
{
    char op[37], pid[37], org[37];
    op_id(o, k, step, op);
    payment_id(o, k, pid);
    org_id(o, org);
    json_t *data = step_data(o, step);
    uint64_t seq = data ? publish(op, step ? "patch" : "create", pid, org, step ? step - 1 : -1,
                                  data, NULL)
                        : 0;
    json_decref(data);
    return seq;
}

/* Waits until op has an outcome; 0 with it in out, or -1 on timeout. */
static int wait_op(const char *op, struct payment_op_found *out, int patience_ms)
{
    int64_t until = fixture_mono_ms() + patience_ms;
    do {
        if (payment_store_op_get(fx.store, op, out) == 0)
            return 0;
        fixture_sleep_ms(20);
    } while (fixture_mono_ms() < until);
    return -1;
}

static worker *start_worker_every(const char *id, int refresh_ms)
{
    struct worker_config c = WORKER_CONFIG_INIT;
    c.broker_urls = fx.url;
    c.partitions = PARTITIONS;
    c.worker_id = id;
    c.lease_ttl_ms = TTL_MS;
    c.refresh_ms = refresh_ms;
    char err[256] = "";
    worker *w = NULL;
    if (worker_start(&c, fx.store, fx.v, &fx.log, &w, err, sizeof err) != WORKER_OK)
        fprintf(stderr, "  %s\n", err);
    return w;
}

static worker *start_worker(const char *id)
{
    return start_worker_every(id, 250);
}

static void test_setup(void)
{
    fx.log.level = LOG_ERROR; /* takeover warnings are expected here */
    fx.log.fd = 2;
    char err[256] = "";
    CHECK_INT(fixture_nats_start("/tmp/paymentd-worker-test-XXXXXX", fx.dir, sizeof fx.dir, fx.url,
                                 sizeof fx.url),
              0);
    if (!fx.url[0])
        return;
    CHECK_INT(broker_open(fx.url, NULL, &fx.b, err, sizeof err), 0);
    CHECK_INT(broker_ensure_stream(fx.b, "PAYMENTS", "payments.cmd.*", 1, err, sizeof err), 0);
    char uri[256];
    snprintf(uri, sizeof uri, "sqlite:%s/store.db", fx.dir);
    CHECK_INT(payment_store_open(uri, 0, &fx.store, err, sizeof err), 0);
    fx.v = payment_validator_new();
    CHECK(fx.v != NULL);
    fx.attributes = json_pack("{s:s,s:s,s:s,s:s,s:n}", "amount", "100.21", "currency", "GBP",
                              "payment_scheme", "FPS", "reference", "step-0", "numeric_reference");
    json_t *errors = json_array();
    payment_attributes_strip_nulls(fx.attributes);
    CHECK(fx.v && errors && payment_validate_attributes(fx.v, fx.attributes, errors) == 0);
    json_decref(errors);
    json_object_set_new(fx.attributes, "numeric_reference", json_null()); /* the create strips it */
    CHECK(json_is_object(fx.attributes));
}

/* 2,000 operations over 40 organisations; worker a is abandoned once it
 * has applied some, and b takes its partitions over after the lease TTL. */
static void test_ordered_exactly_once_with_takeover(void)
{
    if (!fx.store || !fx.b)
        return;
    fx.a = start_worker("worker-a");
    CHECK(fx.a != NULL);
    fixture_sleep_ms(600); /* a owns every partition before b joins: a rebalance follows */
    fx.b2 = start_worker("worker-b");
    CHECK(fx.b2 != NULL);
    if (!fx.a || !fx.b2)
        return;
    int published = 0;
    int64_t abandoned_at = 0;
    for (int step = 0; step < STEPS; step++) {
        if (step == 2) {
            /* a is abandoned mid-stream, once it has applied some: the rest
             * of its partitions' operations, queued or to come, are left to
             * b after a's leases expire. */
            int64_t t0 = fixture_mono_ms();
            while (worker_applied(fx.a) <= 50 && fixture_mono_ms() - t0 < PATIENCE_MS)
                fixture_sleep_ms(5);
            CHECK(worker_applied(fx.a) > 50);
            worker_abandon(fx.a); /* its leases stay until they expire */
            fx.a = NULL;
            abandoned_at = fixture_mono_ms();
        }
        for (int o = 0; o < ORGS; o++)
            for (int k = 0; k < PAYMENTS_PER_ORG; k++)
                published += publish_step(o, k, step) != 0;
    }
    CHECK_INT(published, OPS);
    int missing = 0, failed = 0, wrong = 0;
    for (int o = 0; o < ORGS; o++)
        for (int k = 0; k < PAYMENTS_PER_ORG; k++)
            for (int step = 0; step < STEPS; step++) {
                char op[37];
                op_id(o, k, step, op);
                struct payment_op_found f;
                if (wait_op(op, &f, PATIENCE_MS) != 0) {
                    missing++;
                    continue;
                }
                if (strcmp(f.status, "succeeded") != 0) {
                    if (failed++ < 3)
                        fprintf(stderr, "  %s: %s %s %s\n", op, f.status, f.error_code,
                                f.message);
                } else if (f.version != step || f.partition != partition_of(f.organisation_id,
                                                                             PARTITIONS)) {
                    wrong++;
                }
            }
    CHECK_INT(missing, 0);
    CHECK_INT(failed, 0);
    CHECK_INT(wrong, 0);
    /* The final documents: version STEPS - 1 and the last patch's reference. */
    int bad_docs = 0;
    for (int o = 0; o < ORGS; o++)
        for (int k = 0; k < PAYMENTS_PER_ORG; k++) {
            char pid[37];
            payment_id(o, k, pid);
            struct buf doc = BUF_INIT;
            int64_t version = -1;
            int rc = payment_store_get(fx.store, pid, &doc, &version);
            json_t *d = rc == 0 ? json_loadb(doc.data, doc.len, 0, NULL) : NULL;
            const char *ref =
                json_string_value(json_object_get(json_object_get(d, "attributes"), "reference"));
            char want[32];
            snprintf(want, sizeof want, "step-%d", STEPS - 1);
            if (rc != 0 || version != STEPS - 1 || !ref || strcmp(ref, want) != 0 ||
                json_integer_value(json_object_get(d, "version")) != STEPS - 1)
                bad_docs++;
            json_decref(d);
            buf_free(&doc);
        }
    CHECK_INT(bad_docs, 0);
    fprintf(stderr, "  all applied %" PRId64 " ms after the abandonment\n",
            fixture_mono_ms() - abandoned_at);
    /* Every partition's position is its last message: nothing is left. */
    for (uint32_t p = 0; p < PARTITIONS; p++) {
        uint64_t last = 0, fence = 0;
        CHECK_INT(payment_store_partition_get(fx.store, p, &last, &fence), 0);
        CHECK(last > 0 && fence > 0);
    }
    CHECK(worker_applied(fx.b2) > 0);
}

/* A command published again (same op id, a new stream sequence) is
 * skipped, and the partition goes on past it. */
static void test_republished_skipped(void)
{
    if (!fx.b2)
        return;
    char op[37], pid[37], org[37];
    op_id(0, 0, 1, op);
    payment_id(0, 0, pid);
    org_id(0, org);
    struct payment_op_found before, after;
    CHECK_INT(payment_store_op_get(fx.store, op, &before), 0);
    json_t *data = step_data(0, 1);
    uint64_t seq = publish(op, "patch", pid, org, 0, data, "republished-1");
    json_decref(data);
    CHECK(seq > before.seq);
    /* A later operation of the same partition shows that it was passed. */
    char marker[37];
    op_id(0, 0, 100, marker);
    data = json_pack("{s:{s:s}}", "attributes", "end_to_end_reference", "marker");
    CHECK(publish(marker, "patch", pid, org, STEPS - 1, data, NULL) != 0);
    json_decref(data);
    struct payment_op_found m;
    CHECK_INT(wait_op(marker, &m, PATIENCE_MS), 0);
    CHECK_STR(m.status, "succeeded");
    CHECK_INT(m.version, STEPS);
    CHECK_INT(payment_store_op_get(fx.store, op, &after), 0);
    CHECK_INT(after.seq, before.seq); /* the first outcome stands */
    CHECK_INT(after.version, 1);
}

/* Failures are recorded with the synchronous API's error codes. */
static void test_failures_recorded(void)
{
    if (!fx.b2)
        return;
    char pid[37], org[37];
    payment_id(1, 0, pid);
    org_id(1, org);
    struct {
        const char *op;
        const char *kind;
        const char *pid;
        int64_t base;
        json_t *data;
        const char *status;
        const char *code;
        int64_t version;
    } cases[] = {
        {"00000000-0000-4000-b000-000000000001", "patch", pid, 0,
         json_pack("{s:{s:s}}", "attributes", "reference", "stale"), "failed",
         "version_conflict", STEPS - 1},
        {"00000000-0000-4000-b000-000000000002", "patch", "00000000-0000-4000-9000-ffffffffffff",
         0, json_pack("{s:{s:s}}", "attributes", "reference", "x"), "failed", "not_found", -1},
        {"00000000-0000-4000-b000-000000000003", "patch", pid, STEPS - 1,
         json_pack("{s:{s:s}}", "attributes", "amount", "-1"), "failed", "validation_failed",
         -1},
        {"00000000-0000-4000-b000-000000000004", "create", pid, -1,
         json_pack("{s:s,s:O}", "organisation_id", org, "attributes", fx.attributes), "failed",
         "duplicate_id", -1},
        {"00000000-0000-4000-b000-000000000005", "frobnicate", pid, 0, json_object(), "failed",
         "bad_request", -1},
        {"00000000-0000-4000-b000-000000000006", "delete", pid, STEPS - 1, NULL, "succeeded",
         "", -1},
        {"00000000-0000-4000-b000-000000000007", "patch", pid, STEPS,
         json_pack("{s:{s:s}}", "attributes", "reference", "gone"), "failed", "not_found", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(publish(cases[i].op, cases[i].kind, cases[i].pid, org, cases[i].base,
                      cases[i].data, NULL) != 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct payment_op_found f;
        CHECK_INT(wait_op(cases[i].op, &f, PATIENCE_MS), 0);
        CHECK_STR(f.status, cases[i].status);
        CHECK_STR(f.error_code, cases[i].code);
        if (cases[i].version >= 0)
            CHECK_INT(f.version, cases[i].version);
        json_decref(cases[i].data);
    }
    /* A message without an operation id is skipped; the next is applied. */
    char subject[64];
    snprintf(subject, sizeof subject, "payments.cmd.%" PRIu32, partition_of(org, PARTITIONS));
    CHECK_INT(broker_publish(fx.b, subject, "garbage-1", "not json", 8, 0, NULL, NULL), 0);
    char pid2[37];
    payment_id(1, 1, pid2);
    json_t *data = json_pack("{s:{s:s}}", "attributes", "reference", "after-garbage");
    CHECK(publish("00000000-0000-4000-b000-000000000008", "patch", pid2, org, STEPS - 1, data,
                  NULL) != 0);
    json_decref(data);
    struct payment_op_found f;
    CHECK_INT(wait_op("00000000-0000-4000-b000-000000000008", &f, PATIENCE_MS), 0);
    CHECK_STR(f.status, "succeeded");

    /* Another organisation's payment does not exist for an operation: its
     * patch, replace or delete records not_found, as for an unknown id. */
    char other[37];
    org_id(2, other);
    const char *kinds[] = {"patch", "replace", "delete"};
    for (int i = 0; i < 3; i++) {
        char op[37];
        snprintf(op, sizeof op, "00000000-0000-4000-b000-0000000000%02x", 0x10 + i);
        data = i == 2 ? NULL
                      : json_pack("{s:s,s:{s:s}}", "organisation_id", other, "attributes",
                                  "reference", "not yours");
        CHECK(publish(op, kinds[i], pid2, other, STEPS, data, NULL) != 0);
        json_decref(data);
        CHECK_INT(wait_op(op, &f, PATIENCE_MS), 0);
        CHECK_STR(f.status, "failed");
        CHECK_STR(f.error_code, "not_found");
        CHECK_STR(f.message, "no payment with this id");
    }
    struct buf doc = BUF_INIT;
    int64_t version = -1;
    CHECK_INT(payment_store_get(fx.store, pid2, &doc, &version), 0);
    CHECK_INT(version, STEPS); /* untouched */
    buf_free(&doc);
}

/* One event of a history, copied out of the store's callback. */
struct seen_event {
    char id[37];
    enum payment_event_type type;
    int64_t version;
    int64_t occurred_ms;
    char api_key_id[80];      /* "" when none, as the next three */
    char request_id[160];
    char idempotency_key[80];
    char operation_id[140];
    char changes[160];        /* "" when none */
    char reference[32];       /* the document's attributes.reference */
};

struct seen {
    struct seen_event ev[16];
    size_t n;
};

static void copy_or_empty(char *out, size_t cap, const char *s)
{
    snprintf(out, cap, "%s", s ? s : "");
}

static int collect_event(void *arg, const struct payment_event *ev)
{
    struct seen *s = arg;
    if (s->n == sizeof s->ev / sizeof s->ev[0])
        return 1;
    struct seen_event *e = &s->ev[s->n++];
    memcpy(e->id, ev->id, sizeof e->id);
    e->type = ev->type;
    e->version = ev->version;
    e->occurred_ms = ev->occurred_ms;
    copy_or_empty(e->api_key_id, sizeof e->api_key_id, ev->api_key_id);
    copy_or_empty(e->request_id, sizeof e->request_id, ev->request_id);
    copy_or_empty(e->idempotency_key, sizeof e->idempotency_key, ev->idempotency_key);
    copy_or_empty(e->operation_id, sizeof e->operation_id, ev->operation_id);
    copy_or_empty(e->changes, sizeof e->changes, ev->changes);
    json_t *d = json_loadb(ev->doc, ev->doc_len, 0, NULL);
    copy_or_empty(e->reference, sizeof e->reference,
                  json_string_value(json_object_get(json_object_get(d, "attributes"),
                                                    "reference")));
    json_decref(d);
    return 0;
}

/* Every applied operation recorded one event, naming the operation, with
 * an update's changed paths; the failed ones none: payment (1, 0) went
 * through STEPS writes, the failures of test_failures_recorded, and a
 * delete.  A message carrying the caller's key, the request id and an
 * Idempotency-Key gives them to its event. */
static void test_events_recorded(void)
{
    if (!fx.b2)
        return;
    char pid[37], org[37], op[37];
    payment_id(1, 0, pid);
    org_id(1, org);
    struct seen s = {.n = 0};
    int more = 1;
    CHECK_INT(payment_store_history(fx.store, pid, -1, 100, collect_event, &s, &more), 0);
    CHECK_INT(more, 0);
    CHECK_INT(s.n, STEPS + 1);
    for (size_t i = 0; i < s.n && i <= STEPS; i++) {
        const struct seen_event *e = &s.ev[i];
        CHECK_INT(e->version, (int64_t)i);
        CHECK_INT(e->type, i == 0 ? PAYMENT_EVENT_CREATED
                           : i == STEPS ? PAYMENT_EVENT_DELETED : PAYMENT_EVENT_UPDATED);
        if (i < STEPS) {
            op_id(1, 0, (int)i, op);
            CHECK_STR(e->operation_id, op);
        } else {
            CHECK_STR(e->operation_id, "00000000-0000-4000-b000-000000000006");
        }
        CHECK_STR(e->changes, i == 0 || i == STEPS ? "" : "[\"attributes.reference\"]");
        char ref[32];
        snprintf(ref, sizeof ref, "step-%d", i == STEPS ? STEPS - 1 : (int)i);
        CHECK_STR(e->reference, ref); /* a delete holds the payment as it was */
        CHECK(strlen(e->id) == 36 && e->id[14] == '7');
        CHECK(i == 0 || strcmp(e->id, s.ev[i - 1].id) != 0);
        CHECK(e->occurred_ms > 0 && (i == 0 || e->occurred_ms >= s.ev[i - 1].occurred_ms));
        CHECK_STR(e->api_key_id, ""); /* published without them */
        CHECK_STR(e->request_id, "");
        CHECK_STR(e->idempotency_key, "");
    }
    /* A keyed create with the caller's key and the request id; and one of
     * before those members, whose key is its idempotency scope. */
    static const struct {
        const char *op, *scope, *api_key_id, *request_id, *want_key_id;
    } cases[] = {
        {"00000000-0000-4000-b000-000000000020", "billing", "billing", "req-20", "billing"},
        {"00000000-0000-4000-b000-000000000021", "ops", NULL, NULL, "ops"},
    };
    for (int i = 0; i < 2; i++) {
        char pid3[37];
        payment_id(1, 0x800 + i, pid3); /* a payment of its own */
        json_t *m = json_pack(
            "{s:s,s:s,s:s,s:s,s:i,s:i,s:{s:s,s:O},s:{s:s,s:s,s:s,s:s,s:s}}", "op", cases[i].op,
            "kind", "create", "payment_id", pid3, "organisation_id", org, "base_version", -1,
            "submitted_ms", 0, "data", "organisation_id", org, "attributes", fx.attributes,
            "idempotency", "scope", cases[i].scope, "key", "ik-20", "fingerprint",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "location",
            "/v1/operations/20", "body", "{}");
        if (m && cases[i].api_key_id)
            json_object_set_new(m, "api_key_id", json_string(cases[i].api_key_id));
        if (m && cases[i].request_id)
            json_object_set_new(m, "request_id", json_string(cases[i].request_id));
        char *text = m ? json_dumps(m, JSON_COMPACT) : NULL;
        json_decref(m);
        char subject[64];
        snprintf(subject, sizeof subject, "payments.cmd.%" PRIu32, partition_of(org, PARTITIONS));
        CHECK(text && broker_publish(fx.b, subject, cases[i].op, text, strlen(text), 0, NULL,
                                     NULL) == 0);
        free(text);
        struct payment_op_found f;
        CHECK_INT(wait_op(cases[i].op, &f, PATIENCE_MS), 0);
        CHECK_STR(f.status, "succeeded");
        s.n = 0;
        CHECK_INT(payment_store_history(fx.store, pid3, -1, 100, collect_event, &s, &more), 0);
        CHECK_INT(s.n, 1);
        CHECK_STR(s.ev[0].api_key_id, cases[i].want_key_id);
        CHECK_STR(s.ev[0].request_id, cases[i].request_id ? cases[i].request_id : "");
        CHECK_STR(s.ev[0].idempotency_key, "ik-20");
        CHECK_STR(s.ev[0].operation_id, cases[i].op);
    }
}

/* The first process to set the stream up records its partition count; a
 * worker with another count is refused at start, with the reason, unless
 * told to record its own (the stream drained), after which the old count
 * is the one refused. */
static void test_partition_count_agreed(void)
{
    if (!fx.b2)
        return;
    struct worker_config c = WORKER_CONFIG_INIT;
    c.broker_urls = fx.url;
    c.partitions = PARTITIONS / 2;
    c.lease_ttl_ms = TTL_MS;
    char err[256] = "";
    worker *w = NULL;
    CHECK_INT(worker_start(&c, fx.store, fx.v, &fx.log, &w, err, sizeof err), WORKER_EPARTITIONS);
    CHECK(w == NULL);
    worker_stop(w); /* a worker started in spite of the count is stopped */
    CHECK(strstr(err, "has 8 partitions, not --partitions 4") != NULL);
    CHECK(strchr(err, '\n') == NULL);
    /* The servers' set-up call agrees with the workers'. */
    CHECK_INT(opstream_setup(fx.b, PARTITIONS / 2, 1, 0, err, sizeof err), OPSTREAM_EPARTITIONS);
    CHECK_INT(opstream_setup(fx.b, PARTITIONS, 1, 0, err, sizeof err), OPSTREAM_OK);
    /* Repartitioning records the new count; the old one is then refused. */
    CHECK_INT(opstream_setup(fx.b, PARTITIONS * 2, 1, 1, err, sizeof err), OPSTREAM_OK);
    c.partitions = PARTITIONS;
    w = NULL;
    CHECK_INT(worker_start(&c, fx.store, fx.v, &fx.log, &w, err, sizeof err), WORKER_EPARTITIONS);
    worker_stop(w);
    CHECK(strstr(err, "has 16 partitions, not --partitions 8") != NULL);
    CHECK_INT(opstream_setup(fx.b, PARTITIONS, 1, 1, err, sizeof err), OPSTREAM_OK);
    CHECK_INT(opstream_setup(fx.b, PARTITIONS, 1, 0, err, sizeof err), OPSTREAM_OK);
}

/* A store that forwards to another, but fails the apply of chosen
 * operations: one always with EINTERNAL (never its failure record), one
 * with EUNAVAILABLE a given number of times. */
static struct faulty {
    struct payment_store head; /* first: what the worker is given */
    payment_store *inner;      /* the real store, borrowed */
    char poison_op[37];        /* applies of this operation fail with EINTERNAL */
    char down_op[37];          /* applies of this one fail with EUNAVAILABLE while down_left */
    _Atomic int poison_tries;  /* applies of poison_op tried */
    _Atomic int down_left;     /* EUNAVAILABLE answers still to give */
    _Atomic int down_tries;    /* applies of down_op tried */
} faulty;

static int faulty_get(payment_store *s, const char *id, struct buf *doc, int64_t *version,
                      int64_t *created_ms)
{
    (void)s;
    return faulty.inner->backend->get(faulty.inner, id, doc, version, created_ms);
}

static void faulty_apply(payment_store *s, const struct payment_apply *a,
                         payment_store_done_fn done, void *arg)
{
    (void)s;
    if (a->kind != PAYMENT_APPLY_NONE && strcmp(a->op_id, faulty.poison_op) == 0) {
        faulty.poison_tries++;
        done(arg, PAYMENT_STORE_EINTERNAL, -1, 0);
        return;
    }
    if (strcmp(a->op_id, faulty.down_op) == 0) {
        faulty.down_tries++;
        if (faulty.down_left-- > 0) {
            done(arg, PAYMENT_STORE_EUNAVAILABLE, -1, 0);
            return;
        }
    }
    faulty.inner->backend->apply(faulty.inner, a, done, arg);
}

static int faulty_op_get(payment_store *s, const char *op_id, struct payment_op_found *out)
{
    (void)s;
    return faulty.inner->backend->op_get(faulty.inner, op_id, out);
}

static int faulty_partition_get(payment_store *s, uint32_t partition, uint64_t *last_seq,
                                uint64_t *fence)
{
    (void)s;
    return faulty.inner->backend->partition_get(faulty.inner, partition, last_seq, fence);
}

static const struct payment_store_backend faulty_backend = {
    .scheme = "faulty",
    .get = faulty_get,
    .apply = faulty_apply,
    .op_get = faulty_op_get,
    .partition_get = faulty_partition_get,
};

/* The dead letter of operation op on partition p: the decoded message, or
 * NULL when none is found. */
static json_t *dead_letter_of(uint32_t p, const char *op)
{
    char subject[OPSTREAM_SUBJECT_LEN];
    opstream_dead_subject(p, subject);
    broker_reader *r = NULL;
    if (broker_reader_open(fx.b, OPSTREAM_DEAD_NAME, subject, 1, &r) != 0)
        return NULL;
    json_t *found = NULL;
    struct broker_msg m;
    while (!found && broker_reader_next(r, 2000, &m) == 0)
        if (m.msg_id && strcmp(m.msg_id, op) == 0)
            found = json_loadb(m.data, m.len, 0, NULL);
    broker_reader_close(r);
    return found;
}

/* An operation the store fails internally is tried max_attempts times,
 * then copied to the dead letters and recorded as failed with
 * internal_error, and the partition moves on to the next operation; one the
 * store cannot take while it is unavailable is tried past max_attempts and
 * applied once it can. */
static void test_poison_dead_lettered(void)
{
    if (!fx.b2)
        return;
    worker_stop(fx.b2);
    fx.b2 = NULL;
    faulty.head.backend = &faulty_backend;
    faulty.inner = fx.store;
    snprintf(faulty.poison_op, sizeof faulty.poison_op, "00000000-0000-4000-c000-000000000001");
    snprintf(faulty.down_op, sizeof faulty.down_op, "00000000-0000-4000-c000-000000000003");
    faulty.down_left = 8;
    struct worker_config c = WORKER_CONFIG_INIT;
    c.broker_urls = fx.url;
    c.partitions = PARTITIONS;
    c.worker_id = "worker-poison";
    c.lease_ttl_ms = TTL_MS;
    c.refresh_ms = 250;
    c.max_attempts = 3;
    char err[256] = "";
    if (worker_start(&c, &faulty.head, fx.v, &fx.log, &fx.b2, err, sizeof err) != WORKER_OK) {
        fprintf(stderr, "  %s\n", err);
        test_failures++;
        return;
    }
    char pid0[37], pid1[37], org[37];
    payment_id(3, 8, pid0);
    payment_id(3, 9, pid1);
    org_id(3, org);
    json_t *poisoned = json_pack("{s:{s:s}}", "attributes", "reference", "poison");
    json_t *next = json_pack("{s:{s:s}}", "attributes", "reference", "after-poison");
    CHECK(publish(faulty.poison_op, "patch", pid0, org, STEPS - 1, poisoned, NULL) != 0);
    CHECK(publish("00000000-0000-4000-c000-000000000002", "patch", pid0, org, STEPS - 1, next,
                  NULL) != 0);
    CHECK(publish(faulty.down_op, "patch", pid1, org, STEPS - 1, next, NULL) != 0);
    json_decref(poisoned);
    json_decref(next);
    struct payment_op_found f;
    CHECK_INT(wait_op(faulty.poison_op, &f, PATIENCE_MS), 0);
    CHECK_STR(f.status, "failed");
    CHECK_STR(f.error_code, "internal_error");
    CHECK_INT(faulty.poison_tries, 3);
    CHECK_INT(wait_op("00000000-0000-4000-c000-000000000002", &f, PATIENCE_MS), 0);
    CHECK_STR(f.status, "succeeded");
    CHECK_INT(f.version, STEPS); /* the poisoned patch wrote nothing */
    CHECK_INT(wait_op(faulty.down_op, &f, PATIENCE_MS), 0);
    CHECK_STR(f.status, "succeeded");
    CHECK_INT(faulty.down_tries, 9);
    json_t *dead = dead_letter_of(partition_of(org, PARTITIONS), faulty.poison_op);
    CHECK(dead != NULL);
    CHECK_STR(json_string_value(json_object_get(dead, "payment_id")), pid0);
    CHECK_STR(json_string_value(json_object_get(
                  json_object_get(json_object_get(dead, "data"), "attributes"), "reference")),
              "poison");
    json_decref(dead);
    CHECK(dead_letter_of(partition_of(org, PARTITIONS), faulty.down_op) == NULL);
}

/* A stopped worker releases its leases: another takes its partitions at
 * once, well before they would have expired. */
static void test_stop_releases(void)
{
    if (!fx.b2)
        return;
    worker *c = start_worker("worker-c");
    CHECK(c != NULL);
    if (!c)
        return;
    fixture_sleep_ms(1500); /* c joins and takes half of the partitions */
    worker_stop(fx.b2);
    fx.b2 = c;
    int64_t t0 = fixture_mono_ms();
    for (int o = 2; o < ORGS; o++) {
        char op[37], pid[37], org[37];
        op_id(o, 0, 200, op);
        payment_id(o, 0, pid);
        org_id(o, org);
        json_t *data = json_pack("{s:{s:s}}", "attributes", "reference", "after-stop");
        CHECK(publish(op, "patch", pid, org, STEPS - 1, data, NULL) != 0);
        json_decref(data);
    }
    int late = 0;
    for (int o = 2; o < ORGS; o++) {
        char op[37];
        op_id(o, 0, 200, op);
        struct payment_op_found f;
        /* Well under the lease TTL: only a released lease is taken so soon. */
        if (wait_op(op, &f, (int)(t0 + TTL_MS - 300 - fixture_mono_ms())) != 0 ||
            strcmp(f.status, "succeeded") != 0)
            late++;
    }
    CHECK_INT(late, 0);
}

#define REBAL_K 0x40     /* the payment of each organisation the rebalance test writes */
#define REBAL_STEPS 16   /* its create and patches, one round of all organisations apart */
#define REBAL_ROUND_MS 100

/* Publishes REBAL_STEPS rounds, one step of every organisation's payment
 * REBAL_K per round; arg points to the count published. */
static void *rebalance_publisher(void *arg)
{
    int *published = arg;
    for (int step = 0; step < REBAL_STEPS; step++) {
        for (int o = 0; o < ORGS; o++)
            *published += publish_step(o, REBAL_K, step) != 0;
        fixture_sleep_ms(REBAL_ROUND_MS);
    }
    return NULL;
}

/* Partitions that x and y were both seen to own at one instant: x owned p
 * before and after y was seen owning it, with no new acquisition between. */
static int owned_by_both(worker *x, worker *y)
{
    int both = 0;
    for (uint32_t p = 0; p < PARTITIONS; p++) {
        uint64_t e1 = 0, e2 = 0;
        int a1 = worker_owns(x, p, &e1);
        int b = worker_owns(y, p, NULL);
        int a2 = worker_owns(x, p, &e2);
        both += a1 && b && a2 && e1 == e2;
    }
    return both;
}

/* Whether x and y own half of the partitions each. */
static int balanced(worker *x, worker *y)
{
    int nx = 0, ny = 0;
    for (uint32_t p = 0; p < PARTITIONS; p++) {
        int ox = worker_owns(x, p, NULL), oy = worker_owns(y, p, NULL);
        if (ox == oy)
            return 0;
        nx += ox;
        ny += oy;
    }
    return nx == PARTITIONS / 2 && ny == PARTITIONS / 2;
}

/* A worker joining one that owns every partition gets its half within a
 * few seconds, while operations keep coming: no partition is ever owned by
 * both, and every organisation's operations are applied once, in order. */
static void test_rebalance_on_join(void)
{
    if (!fx.b2)
        return;
    worker_stop(fx.b2);
    fx.b2 = NULL;
    worker_stop(fx.a);
    fx.a = NULL;
    const int refresh_ms = 1000; /* the default */
    worker *x = start_worker_every("worker-x", refresh_ms);
    CHECK(x != NULL);
    if (!x)
        return;
    int64_t t0 = fixture_mono_ms();
    int all = 0;
    while (!all && fixture_mono_ms() - t0 < 10000) {
        all = 1;
        for (uint32_t p = 0; p < PARTITIONS; p++)
            all &= worker_owns(x, p, NULL);
        fixture_sleep_ms(20);
    }
    CHECK(all);
    int published = 0;
    pthread_t pub;
    int started = pthread_create(&pub, NULL, rebalance_publisher, &published) == 0;
    CHECK(started);
    fixture_sleep_ms(300); /* operations are flowing */
    t0 = fixture_mono_ms();
    worker *y = start_worker_every("worker-y", refresh_ms);
    CHECK(y != NULL);
    int64_t joined = fixture_mono_ms() - t0, balanced_ms = -1;
    int both = 0;
    while (y && fixture_mono_ms() - t0 < 15000) {
        both += owned_by_both(x, y) + owned_by_both(y, x);
        if (balanced_ms < 0 && balanced(x, y))
            balanced_ms = fixture_mono_ms() - t0;
        if (balanced_ms >= 0 && fixture_mono_ms() - t0 > balanced_ms + 1500)
            break; /* and it stays so */
        fixture_sleep_ms(1);
    }
    if (started)
        pthread_join(pub, NULL);
    fprintf(stderr, "  rebalance: joined in %" PRId64 " ms, balanced %" PRId64 " ms after the start\n",
            joined, balanced_ms);
    CHECK_INT(both, 0);
    CHECK(balanced_ms >= 0 && balanced_ms < 3 * refresh_ms);
    CHECK(y && balanced(x, y));
    CHECK_INT(published, ORGS * REBAL_STEPS);
    int missing = 0, wrong = 0;
    for (int o = 0; o < ORGS; o++)
        for (int step = 0; step < REBAL_STEPS; step++) {
            char op[37];
            op_id(o, REBAL_K, step, op);
            struct payment_op_found f;
            if (wait_op(op, &f, PATIENCE_MS) != 0)
                missing++;
            else if (strcmp(f.status, "succeeded") != 0 || f.version != step)
                wrong++;
        }
    CHECK_INT(missing, 0);
    CHECK_INT(wrong, 0);
    CHECK(y && worker_applied(y) > 0);
    worker_stop(x);
    fx.b2 = y;
}

/* Applied operations are trimmed from the stream: a reader from the start
 * of a partition finds nothing at or below the store's position. */
static void test_stream_trimmed(void)
{
    if (!fx.b2)
        return;
    int applied = 0, trimmed = 0;
    int64_t t0 = fixture_mono_ms();
    while (!trimmed && fixture_mono_ms() - t0 < 20000) {
        trimmed = 1;
        for (uint32_t p = 0; p < PARTITIONS && trimmed; p++) {
            uint64_t last = 0, fence = 0;
            CHECK_INT(payment_store_partition_get(fx.store, p, &last, &fence), 0);
            applied |= last > 0;
            char subject[64];
            snprintf(subject, sizeof subject, "payments.cmd.%" PRIu32, p);
            broker_reader *r = NULL;
            if (broker_reader_open(fx.b, "PAYMENTS", subject, 1, &r) != 0) {
                trimmed = 0;
                break;
            }
            struct broker_msg m;
            int rc = broker_reader_next(r, 100, &m);
            if ((rc == 0 && m.seq <= last) || (rc != 0 && rc != BROKER_ETIMEDOUT))
                trimmed = 0;
            broker_reader_close(r);
        }
        if (!trimmed)
            fixture_sleep_ms(500);
    }
    CHECK(applied);
    CHECK(trimmed);
}

static void test_teardown(void)
{
    worker_abandon(fx.a);
    worker_stop(fx.b2);
    payment_store_close(fx.store);
    payment_validator_free(fx.v);
    json_decref(fx.attributes);
    broker_close(fx.b);
    broker_library_shutdown();
    if (fx.dir[0]) {
        char args[256];
        snprintf(args, sizeof args, "stop '%s/nats'", fx.dir);
        CHECK_INT(nats_sh(args, NULL, 0), 0);
    }
}

TEST_MAIN(TEST(test_setup), TEST(test_ordered_exactly_once_with_takeover),
          TEST(test_republished_skipped), TEST(test_failures_recorded), TEST(test_events_recorded),
          TEST(test_partition_count_agreed), TEST(test_poison_dead_lettered),
          TEST(test_stop_releases), TEST(test_rebalance_on_join), TEST(test_stream_trimmed),
          TEST(test_teardown))
