/* store_mongo: what the MongoDB backend decides without a server: how it
 * maps MongoDB's errors to store errors, and the outbox entry a write
 * pushes (the cases that need a server are the contract's, in
 * test_store.c and test_store_events.c, and test_store_mongo_events.c). */
#include "payment/store_mongo.h"

#include "test.h"

/* The server errors of a failover, an overload or a stale shard routing
 * table are EUNAVAILABLE (a worker retries them for ever), never EINTERNAL
 * (retried --max-apply-attempts times, then recorded failed). */
static void test_transient_codes(void)
{
    static const uint32_t transient[] = {6,     7,     24,    46,    50,    63,   64,   89,
                                         91,    112,   133,   150,   189,   262,  9001, 10058,
                                         10107, 11600, 11601, 11602, 13388, 13435, 13436};
    for (size_t i = 0; i < sizeof transient / sizeof transient[0]; i++)
        if (mongo_code_err(transient[i], NULL) != PAYMENT_STORE_EUNAVAILABLE) {
            fprintf(stderr, "  server code %u is not transient\n", transient[i]);
            test_failures++;
        }
    CHECK_INT(mongo_code_err(2, NULL), PAYMENT_STORE_EINTERNAL); /* BadValue: never */
}

/* A duplicate key is EIDEMPOTENT when it names an idempotency index, this
 * one or a store's from before, else EDUPLICATE (the payment id). */
static void test_duplicate_keys(void)
{
    CHECK_INT(mongo_code_err(MONGOC_ERROR_DUPLICATE_KEY,
                             "E11000 duplicate key error collection: d.payments index: _id_ dup "
                             "key: { _id: \"x\" }"),
              PAYMENT_STORE_EDUPLICATE);
    CHECK_INT(mongo_code_err(MONGOC_ERROR_DUPLICATE_KEY,
                             "E11000 duplicate key error collection: d.payments index: idem_sk "
                             "dup key: { idem.sk: \"k\" }"),
              PAYMENT_STORE_EIDEMPOTENT);
    bson_error_t e = {.domain = MONGOC_ERROR_STREAM, .code = 1};
    CHECK_INT(mongo_map_err(&e), PAYMENT_STORE_EUNAVAILABLE);
}

/* The outbox entry: the event as the feed stores it, its optional fields
 * absent when NULL (a reader tells NULL from ""), the time it was made; and
 * the outbox's bound, smaller for large payments but never 0. */
static void test_outbox_entry(void)
{
    struct mongo_event e;
    struct payment_event_info info = {.api_key_id = "k", .occurred_ms = 5,
                                      .changes = "[\"/a\"]"};
    CHECK_INT(mongo_event_init(&e, PAYMENT_EVENT_CREATED, &info, "pid", 9), 0);
    e.organisation_id = "org";
    e.version = 0;
    e.doc = "{}";
    e.doc_len = 2;
    bson_t b = BSON_INITIALIZER, entry;
    CHECK(mongo_append_event(&b, "0", &e));
    bson_iter_t it;
    CHECK(bson_iter_init_find(&it, &b, "0") && BSON_ITER_HOLDS_DOCUMENT(&it));
    const uint8_t *data = NULL;
    uint32_t len = 0;
    bson_iter_document(&it, &len, &data);
    CHECK(data && bson_init_static(&entry, data, len));
    CHECK_STR(mongo_get_utf8(&entry, "type", NULL), "payment.created");
    CHECK_STR(mongo_get_utf8(&entry, "payment_id", NULL), "pid");
    CHECK_STR(mongo_get_utf8(&entry, "api_key_id", NULL), "k");
    CHECK_STR(mongo_get_utf8(&entry, "doc", NULL), "{}");
    CHECK(mongo_get_utf8(&entry, "request_id", NULL) == NULL);
    CHECK(mongo_get_utf8(&entry, "changes", NULL) == NULL); /* a create has none */
    CHECK_INT(mongo_get_int64(&entry, "occurred_ms", -1), 5);
    CHECK(mongo_get_int64(&entry, "made_us", 0) > 1000000000000000LL);
    CHECK_INT(strlen(mongo_get_utf8(&entry, "id", NULL)), UUID_STR_LEN);
    bson_destroy(&b);
    e.organisation_id = NULL; /* a delete that read no organisation: no entry */
    bson_init(&b);
    CHECK(!mongo_append_event(&b, "0", &e));
    bson_destroy(&b);
    CHECK_INT(mongo_pend_keep(1000), MONGO_PEND_KEEP);
    CHECK_INT(mongo_pend_keep(MONGO_DOC_MAX / 8), 2);
    CHECK_INT(mongo_pend_keep(MONGO_DOC_MAX), 1);
}

TEST_MAIN(TEST(test_transient_codes), TEST(test_duplicate_keys), TEST(test_outbox_entry))
