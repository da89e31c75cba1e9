/* The list handler's page: a page buffer that runs out of memory is an
 * internal error (500), never taken for one of the store's answers such as
 * ENOTFOUND (404).  Run on a real embedded store holding one payment. */
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "payment/api_internal.h"
#include "payment/query.h"
#include "store_waiter.h"
#include "test.h"

/* Creates one payment; returns the store's result. */
static int create_one(payment_store *s)
{
    struct waiter w;
    waiter_init(&w, 1);
    struct payment_row r = {.id = "00000000-0000-4000-8000-000000000001",
                            .organisation_id = "0a0a0a0a-0000-4000-8000-000000000001",
                            .created_ms = 1000,
                            .modified_ms = 1000,
                            .doc = "{\"n\":1}",
                            .doc_len = 7};
    payment_store_create(s, &r, NULL, NULL, waiter_done, &w);
    waiter_wait(&w);
    return w.err;
}

static void test_list_buffer_failure_is_internal(void)
{
    char dir[] = "/tmp/test_api_list_XXXXXX", uri[128], err[256];
    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp");
        return;
    }
    snprintf(uri, sizeof uri, "sqlite:%s/payments.db", dir);
    payment_store *s = NULL;
    CHECK_INT(payment_store_open(uri, 0, &s, err, sizeof err), PAYMENT_STORE_OK);
    if (s) {
        CHECK_INT(create_one(s), PAYMENT_STORE_OK);
        struct payment_api api = {.store = s, .public_url = ""};
        struct payment_query q;
        char msg[128];
        payment_query_init(&q);
        CHECK_INT(payment_query_finish(&q, msg, sizeof msg), 0);
        int more = 0;

        struct buf b = BUF_INIT;
        struct api_list_out out = {&b, 0, 0, q.page_size};
        CHECK_INT(api_list_fill(&api, &q, NULL, &out, &more), PAYMENT_STORE_OK);
        CHECK_INT(out.count, 1);
        buf_free(&b);

        struct buf failed = BUF_INIT;
        failed.failed = 1; /* as after an append that ran out of memory */
        struct api_list_out out2 = {&failed, 0, 0, q.page_size};
        CHECK_INT(api_list_fill(&api, &q, NULL, &out2, &more), PAYMENT_STORE_EINTERNAL);
        buf_free(&failed);
        payment_query_clear(&q);
        payment_store_close(s);
    }
    rm_tree(dir);
}

TEST_MAIN(TEST(test_list_buffer_failure_is_internal))
