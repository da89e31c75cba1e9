/* opqueue_broker: see opqueue_broker.h. */
#include "app/opqueue_broker.h"

#include <assert.h>

#include "broker/opstream.h"
#include "broker/partition.h"

/* The queue's error for a broker error. */
static int opqueue_err_of(int rc)
{
    switch (rc) {
    case BROKER_OK:
        return OPQUEUE_OK;
    case BROKER_EUNAVAILABLE:
        return OPQUEUE_EUNAVAILABLE;
    case BROKER_EEXISTS:
        return OPQUEUE_EEXISTS;
    case BROKER_ENOTFOUND:
        return OPQUEUE_ENOTFOUND;
    default:
        return OPQUEUE_EINTERNAL;
    }
}

static int opqueue_broker_publish(void *ctx, const char *op_id, const char *org, const char *msg,
                                  size_t len, int timeout_ms, int *duplicate)
{
    struct opqueue_broker *ob = ctx;
    char subject[OPSTREAM_SUBJECT_LEN];
    opstream_subject(partition_of(org, ob->partitions), subject);
    *duplicate = 0;
    return opqueue_err_of(
        broker_publish(ob->broker, subject, op_id, msg, len, timeout_ms, NULL, duplicate));
}

static int opqueue_broker_pending_mark(void *ctx, const char *op_id, const char *value,
                                       size_t len)
{
    struct opqueue_broker *ob = ctx;
    return opqueue_err_of(broker_kv_create(ob->pending, op_id, value, len, NULL));
}

static int opqueue_broker_pending_get(void *ctx, const char *op_id, char **value, size_t *len)
{
    struct opqueue_broker *ob = ctx;
    *value = NULL;
    *len = 0;
    return opqueue_err_of(broker_kv_get(ob->pending, op_id, value, len, NULL));
}

static int opqueue_broker_connected(void *ctx)
{
    struct opqueue_broker *ob = ctx;
    return broker_connected(ob->broker);
}

void opqueue_broker_init(struct opqueue_broker *ob, broker *b, broker_kv *pending,
                         uint32_t partitions, struct payment_opqueue *q)
{
    assert(ob && b && pending && partitions > 0 && q);
    *ob = (struct opqueue_broker){b, pending, partitions};
    *q = (struct payment_opqueue){
        .publish = opqueue_broker_publish,
        .pending_mark = opqueue_broker_pending_mark,
        .pending_get = opqueue_broker_pending_get,
        .connected = opqueue_broker_connected,
        .ctx = ob,
    };
}
