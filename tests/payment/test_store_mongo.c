/* store_mongo: what the MongoDB backend decides without a server: how it
 * maps MongoDB's errors to store errors (the cases that need a server are
 * the contract's, in test_store.c). */
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

TEST_MAIN(TEST(test_transient_codes), TEST(test_duplicate_keys))
