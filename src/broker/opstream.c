/* opstream: see opstream.h. */
#include "broker/opstream.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OPSTREAM_SUBJECTS "payments.cmd.*"
#define OPSTREAM_DEAD_SUBJECTS "payments.dead.*"
#define OPSTREAM_EVENTS_SUBJECTS "payments.events.*"
#define OPSTREAM_PARTITIONS_KEY "partitions"

void opstream_subject(uint32_t p, char out[OPSTREAM_SUBJECT_LEN])
{
    snprintf(out, OPSTREAM_SUBJECT_LEN, "payments.cmd.%" PRIu32, p);
}

void opstream_dead_subject(uint32_t p, char out[OPSTREAM_SUBJECT_LEN])
{
    snprintf(out, OPSTREAM_SUBJECT_LEN, "payments.dead.%" PRIu32, p);
}

void opstream_events_subject(uint32_t p, char out[OPSTREAM_SUBJECT_LEN])
{
    snprintf(out, OPSTREAM_SUBJECT_LEN, "payments.events.%" PRIu32, p);
}

static int opstream_err_of(int broker_rc)
{
    return broker_rc == BROKER_EUNAVAILABLE ? OPSTREAM_EUNAVAILABLE : OPSTREAM_EINTERNAL;
}

/* The recorded count, decimal 1..UINT32_MAX: 0, or -1 when it is not one. */
static int opstream_parse_count(const char *text, uint32_t *out)
{
    char *end = NULL;
    unsigned long long n = text[0] >= '1' && text[0] <= '9' ? strtoull(text, &end, 10) : 0;
    if (!end || *end || n > UINT32_MAX)
        return -1;
    *out = (uint32_t)n;
    return 0;
}

/* Records partitions unless a count is recorded, then compares.  The create
 * is conditional, so of processes starting together with different counts
 * exactly one records its own and the others are refused. */
static int opstream_agree(broker_kv *kv, uint32_t partitions, int repartition, char *err,
                          size_t errlen)
{
    char mine[16];
    int len = snprintf(mine, sizeof mine, "%" PRIu32, partitions);
    int rc = broker_kv_create(kv, OPSTREAM_PARTITIONS_KEY, mine, (size_t)len, NULL);
    if (rc == BROKER_OK)
        return OPSTREAM_OK;
    char *text = NULL;
    uint64_t rev = 0;
    if (rc == BROKER_EEXISTS)
        rc = broker_kv_get(kv, OPSTREAM_PARTITIONS_KEY, &text, NULL, &rev);
    if (rc != BROKER_OK) {
        snprintf(err, errlen, "broker: partition count: %s", broker_strerror(rc));
        return opstream_err_of(rc);
    }
    uint32_t recorded = 0;
    int bad = opstream_parse_count(text, &recorded);
    free(text);
    if (!bad && recorded == partitions)
        return OPSTREAM_OK;
    if (repartition) {
        rc = broker_kv_update(kv, OPSTREAM_PARTITIONS_KEY, mine, (size_t)len, rev, NULL);
        if (rc != BROKER_OK) {
            snprintf(err, errlen, "broker: recording the partition count: %s",
                     broker_strerror(rc));
            return opstream_err_of(rc);
        }
        return OPSTREAM_OK;
    }
    if (bad) {
        snprintf(err, errlen, "broker: the recorded partition count is not a number");
        return OPSTREAM_EINTERNAL;
    }
    snprintf(err, errlen,
             "the operation stream has %" PRIu32 " partitions, not --partitions %" PRIu32
             " (to change it, see \"Changing --partitions\" in README.md)",
             recorded, partitions);
    return OPSTREAM_EPARTITIONS;
}

int opstream_setup(broker *b, uint32_t partitions, int replicas, int repartition, char *err,
                   size_t errlen)
{
    assert(b && partitions > 0);
    int rc = broker_ensure_stream(b, OPSTREAM_NAME, OPSTREAM_SUBJECTS, replicas, err, errlen);
    if (rc == BROKER_OK)
        rc = broker_ensure_stream(b, OPSTREAM_DEAD_NAME, OPSTREAM_DEAD_SUBJECTS, replicas, err,
                                  errlen);
    broker_kv *kv = NULL;
    if (rc == BROKER_OK)
        rc = broker_kv_open(b, OPSTREAM_CONFIG_BUCKET, 0, replicas, &kv, err, errlen);
    if (rc != BROKER_OK)
        return opstream_err_of(rc);
    int orc = opstream_agree(kv, partitions, repartition, err, errlen);
    broker_kv_close(kv);
    return orc;
}

int opstream_events_setup(broker *b, int replicas, int64_t max_age_ms, char *err,
                          size_t errlen)
{
    assert(b && max_age_ms >= 0);
    int rc = broker_ensure_stream_aged(b, OPSTREAM_EVENTS_NAME, OPSTREAM_EVENTS_SUBJECTS,
                                       replicas, max_age_ms, err, errlen);
    return rc == BROKER_OK ? OPSTREAM_OK : opstream_err_of(rc);
}
