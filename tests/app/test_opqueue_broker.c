/* The payment API's queue of operations over a real nats-server (started
 * here by tests/broker/nats.sh, run from the repository's root): an
 * operation is published on its organisation's partition with its id as
 * message id, a second publish of the id is a duplicate, pending marks are
 * created once and read back, and with the server gone every call answers
 * OPQUEUE_EUNAVAILABLE within its timeout. */
#include "app/opqueue_broker.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/nats_fixture.h"
#include "broker/opstream.h"
#include "broker/partition.h"
#include "test.h"

#define PARTITIONS 4
#define ORG "ee2fb143-6dfe-4787-b183-ca8ddd4164d2"
#define OP_ID "0190a6a4-0000-7000-8000-000000000001"

/* The run's fixture, set up by test_setup. */
static struct {
    char dir[128];                /* the server's directory */
    broker *b;                    /* the connection the queue borrows */
    broker_kv *pending;           /* the bucket of pending marks */
    struct opqueue_broker ob;     /* the queue's state */
    struct payment_opqueue q;     /* the queue */
} fx;

static void test_setup(void)
{
    char url[128] = "", err[256] = "";
    CHECK_INT(fixture_nats_start("/tmp/paymentd-opqueue-test-XXXXXX", fx.dir, sizeof fx.dir, url,
                                 sizeof url),
              0);
    if (!url[0])
        return;
    struct broker_options opt = BROKER_OPTIONS_INIT;
    opt.request_timeout_ms = 1000; /* the outage test waits for it */
    CHECK_INT(broker_open(url, &opt, &fx.b, err, sizeof err), 0);
    if (!fx.b)
        return;
    CHECK_INT(opstream_setup(fx.b, PARTITIONS, 1, 0, err, sizeof err), 0);
    CHECK_INT(broker_kv_open(fx.b, "PAYMENTS_OPS", 0, 1, &fx.pending, err, sizeof err), 0);
    if (!fx.pending)
        return;
    opqueue_broker_init(&fx.ob, fx.b, fx.pending, PARTITIONS, &fx.q);
    CHECK(fx.q.ctx == &fx.ob);
}

/* The publish lands on the organisation's partition, as the worker reads
 * it; the same id again is a duplicate, stored once. */
static void test_publish_on_partition(void)
{
    if (!fx.pending)
        return;
    static const char msg[] = "{\"op\":\"" OP_ID "\"}";
    int duplicate = -1;
    CHECK_INT(fx.q.publish(fx.q.ctx, OP_ID, ORG, msg, strlen(msg), 2000, &duplicate), OPQUEUE_OK);
    CHECK_INT(duplicate, 0);
    CHECK_INT(fx.q.publish(fx.q.ctx, OP_ID, ORG, msg, strlen(msg), 2000, &duplicate), OPQUEUE_OK);
    CHECK_INT(duplicate, 1);

    char subject[OPSTREAM_SUBJECT_LEN];
    opstream_subject(partition_of(ORG, PARTITIONS), subject);
    broker_reader *r = NULL;
    CHECK_INT(broker_reader_open(fx.b, OPSTREAM_NAME, subject, 1, &r), 0);
    if (!r)
        return;
    struct broker_msg m;
    CHECK_INT(broker_reader_next(r, 2000, &m), 0);
    CHECK_INT(m.len, strlen(msg));
    CHECK(m.len == strlen(msg) && memcmp(m.data, msg, m.len) == 0);
    CHECK_STR(m.msg_id, OP_ID);
    CHECK_INT(broker_reader_next(r, 200, &m), BROKER_ETIMEDOUT); /* the duplicate was not stored */
    broker_reader_close(r);
}

/* A mark is created once and read back as it was written. */
static void test_pending_marks(void)
{
    if (!fx.pending)
        return;
    char *value = (char *)1;
    size_t len = 1;
    CHECK_INT(fx.q.pending_get(fx.q.ctx, OP_ID, &value, &len), OPQUEUE_ENOTFOUND);
    CHECK(value == NULL && len == 0);
    static const char mark[] = "{\"payment_id\":\"p\"}";
    CHECK_INT(fx.q.pending_mark(fx.q.ctx, OP_ID, mark, strlen(mark)), OPQUEUE_OK);
    CHECK_INT(fx.q.pending_mark(fx.q.ctx, OP_ID, "{}", 2), OPQUEUE_EEXISTS);
    CHECK_INT(fx.q.pending_get(fx.q.ctx, OP_ID, &value, &len), OPQUEUE_OK);
    CHECK_INT(len, strlen(mark));
    CHECK_STR(value, mark);
    free(value);
}

/* With the server stopped: not connected, and each call answers
 * OPQUEUE_EUNAVAILABLE within its timeout. */
static void test_unavailable(void)
{
    if (!fx.pending)
        return;
    CHECK_INT(fx.q.connected(fx.q.ctx), 1);
    char args[256];
    snprintf(args, sizeof args, "stop '%s/nats'", fx.dir);
    CHECK_INT(nats_sh(args, NULL, 0), 0);
    int64_t until = fixture_mono_ms() + 5000;
    while (fx.q.connected(fx.q.ctx) && fixture_mono_ms() < until)
        fixture_sleep_ms(20);
    CHECK_INT(fx.q.connected(fx.q.ctx), 0);
    int duplicate = -1;
    int64_t t0 = fixture_mono_ms();
    CHECK_INT(fx.q.publish(fx.q.ctx, "op-2", ORG, "{}", 2, 300, &duplicate),
              OPQUEUE_EUNAVAILABLE);
    CHECK(fixture_mono_ms() - t0 < 3000);
    CHECK_INT(fx.q.pending_mark(fx.q.ctx, "op-2", "{}", 2), OPQUEUE_EUNAVAILABLE);
    char *value = NULL;
    size_t len = 0;
    CHECK_INT(fx.q.pending_get(fx.q.ctx, "op-2", &value, &len), OPQUEUE_EUNAVAILABLE);
    CHECK(value == NULL);
}

static void test_teardown(void)
{
    broker_kv_close(fx.pending);
    broker_close(fx.b);
    broker_library_shutdown();
    if (fx.dir[0]) {
        char args[256];
        snprintf(args, sizeof args, "stop '%s/nats'", fx.dir); /* stopped already: a no-op */
        CHECK_INT(nats_sh(args, NULL, 0), 0);
    }
}

TEST_MAIN(TEST(test_setup), TEST(test_publish_on_partition), TEST(test_pending_marks),
          TEST(test_unavailable), TEST(test_teardown))
