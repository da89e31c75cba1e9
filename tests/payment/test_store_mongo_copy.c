/* store_mongo_copy: what the MongoDB store's copy calls promise beyond the
 * contract cases of test_store_copy.c, where its documents make it
 * different (store_mongo_copy.c, store_mongo_import.c), against the server
 * PAYMENTD_TEST_MONGO_URI names (the test double); without it every case is
 * reported skipped.  Each case runs on a fresh database, dropped
 * afterwards; two stores opened on one database stand for two processes. */
#include "payment/store_mongo.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_fixture.h"
#include "store_waiter.h"
#include "test.h"

#define PAGE_SMALL 2 /* export pages smaller than a document's records */

/* ---- writes ------------------------------------------------------------- */

/* A payment row and the bytes it borrows. */
struct pay {
    struct payment_row row;
    char doc[128];
};

static void pay_make(struct pay *p, int n, int64_t v)
{
    memset(p, 0, sizeof *p);
    snprintf(p->row.id, sizeof p->row.id, "00000000-0000-4000-8000-%012d", n);
    snprintf(p->row.organisation_id, sizeof p->row.organisation_id,
             "0a0a0a0a-0000-4000-8000-%012d", n % 2 + 1);
    p->row.version = v;
    p->row.created_ms = 1767225600000LL + n;
    p->row.modified_ms = p->row.created_ms + v;
    int len = snprintf(p->doc, sizeof p->doc, "{\"id\":\"%s\",\"version\":%lld}", p->row.id,
                       (long long)v);
    CHECK(len > 0 && (size_t)len < sizeof p->doc);
    p->row.doc = p->doc;
    p->row.doc_len = (size_t)len;
}

/* A record of scope and key; the caller keeps them alive. */
static struct payment_idem rec_make(const char *scope, const char *key)
{
    return (struct payment_idem){.scope = scope,
                                 .key = key,
                                 .fingerprint = "ab12",
                                 .status = 201,
                                 .location = "/v1/payments/x",
                                 .body = "{}",
                                 .body_len = 2,
                                 .created_ms = 1767225600000LL};
}

/* Creates (expected -2) or updates payment n to version v, with idem. */
static int write_one(payment_store *s, int n, int64_t v, const struct payment_idem *idem)
{
    struct pay p;
    pay_make(&p, n, v);
    struct waiter w;
    waiter_init(&w, 1);
    if (v == 0)
        payment_store_create(s, &p.row, idem, NULL, waiter_done, &w);
    else
        payment_store_update(s, &p.row, v - 1, idem, NULL, waiter_done, &w);
    waiter_wait(&w);
    return w.err;
}

/* ---- exports, read out ------------------------------------------------------ */

/* The (scope, key) pairs of an export, in the order given. */
struct keys {
    char scope[16][16];
    char key[16][16];
    int n;
};

static int keys_add(void *arg, const struct payment_idem_export *r)
{
    struct keys *k = arg;
    CHECK(k->n < 16);
    if (k->n >= 16)
        return 1;
    snprintf(k->scope[k->n], sizeof k->scope[0], "%s", r->scope);
    snprintf(k->key[k->n], sizeof k->key[0], "%s", r->key);
    k->n++;
    return 0;
}

/* Every record s holds, page by page of limit. */
static void keys_read(payment_store *s, uint32_t limit, struct keys *k)
{
    memset(k, 0, sizeof *k);
    int more = 1;
    for (int pages = 0; more && pages < 32; pages++) {
        const char *scope = k->n ? k->scope[k->n - 1] : NULL;
        const char *key = k->n ? k->key[k->n - 1] : NULL;
        int before = k->n;
        CHECK_INT(payment_store_export_idem(s, scope, key, limit, keys_add, k, &more), 0);
        CHECK(k->n - before == (int)limit || !more);
    }
    CHECK(!more);
}

static int count_event(void *arg, const struct payment_event *ev)
{
    (void)ev;
    (*(int *)arg)++;
    return 0;
}

static int count_payment(void *arg, const struct payment_export *p)
{
    (void)p;
    (*(int *)arg)++;
    return 0;
}

static int count_row(void *arg, const char *doc, size_t len, int64_t seq)
{
    (void)doc, (void)len, (void)seq;
    (*(int *)arg)++;
    return 0;
}

/* ---- the cases ------------------------------------------------------------ */

/* Records several to a payment, whose keys interleave with other payments'
 * records, come out in (scope, key) byte order through pages smaller than
 * one document's records. */
static void case_idem_order(struct fixture *fx)
{
    static const char *const keys[] = {"k1", "k4", "k7", "k2", "k5", "k8", "k3", "k6", "k9"};
    for (int n = 1; n <= 3; n++) {
        for (int v = 0; v < 3; v++) {
            struct payment_idem r = rec_make(v == 1 && n == 2 ? "s" : "", keys[(n - 1) * 3 + v]);
            CHECK_INT(write_one(fx->s, n, v, &r), 0);
        }
    }
    struct keys k;
    keys_read(fx->s, PAGE_SMALL, &k);
    static const char *const want_key[] = {"k1", "k2", "k3", "k4", "k6", "k7", "k8", "k9", "k5"};
    CHECK_INT(k.n, 9);
    for (int i = 0; i < k.n && i < 9; i++) {
        CHECK_STR(k.key[i], want_key[i]);
        CHECK_STR(k.scope[i], i < 8 ? "" : "s");
    }
}

/* A sequencer that stopped leaves events in the outboxes (a process that
 * died): another store's export of the events still gives every one, in
 * each payment's version order, before any adoption could have taken them. */
static int hook_never(void *arg, enum mongo_seq_stage stage)
{
    (void)arg;
    return stage == MONGO_SEQ_START;
}

struct pv {
    char payment_id[3][UUID_STR_LEN + 1];
    int64_t version[3];
    int n;
};

static int pv_add(void *arg, const struct payment_event *ev)
{
    struct pv *l = arg;
    if (l->n < 3) {
        snprintf(l->payment_id[l->n], sizeof l->payment_id[0], "%s", ev->payment_id);
        l->version[l->n] = ev->version;
    }
    l->n++;
    return 0;
}

static void case_events_in_outboxes(struct fixture *fx)
{
    mongo_seq_set_hook(fx->s, hook_never, NULL);
    CHECK_INT(write_one(fx->s, 1, 0, NULL), 0);
    CHECK_INT(write_one(fx->s, 1, 1, NULL), 0);
    CHECK_INT(write_one(fx->s, 2, 0, NULL), 0);
    payment_store *other = NULL;
    char err[256] = "";
    CHECK_INT(payment_store_open(fx->uri, 0, &other, err, sizeof err), 0);
    if (!other)
        return;
    struct pv l = {0};
    int more = 1;
    CHECK_INT(payment_store_export_events(other, 0, 10, pv_add, &l, &more), 0);
    CHECK_INT(l.n, 3);
    CHECK(!more);
    int first1 = -1;
    for (int i = 0; i < l.n && i < 3; i++)
        if (strcmp(l.payment_id[i], "00000000-0000-4000-8000-000000000001") == 0 && first1 < 0)
            first1 = i;
    CHECK(first1 >= 0 && first1 < 2);
    if (first1 >= 0 && first1 < 2) {
        CHECK_INT(l.version[first1], 0);
        CHECK_INT(l.version[first1 + 1], 1);
    }
    payment_store_close(other);
    mongo_seq_set_hook(fx->s, NULL, NULL);
}

/* A record imported without its payment answers as the source's did: found
 * by its key, refusing the key to a write, never listed or exported as a
 * payment; imported again, it adds nothing. */
static void case_import_record_alone(struct fixture *fx)
{
    struct payment_idem_export r = {.scope = "apikey-1",
                                    .key = "key-9",
                                    .fingerprint = "f00d",
                                    .status = 204,
                                    .etag = "\"4\"",
                                    .created_ms = 1767225600000LL};
    struct payment_import im = {.idem = &r, .n_idem = 1};
    struct payment_import_result out;
    CHECK_INT(payment_store_import(fx->s, &im, &out), 0);
    CHECK_INT(out.idem, 1);
    CHECK_INT(payment_store_import(fx->s, &im, &out), 0);
    CHECK_INT(out.idem, 0);

    struct payment_idem_found f = {.location = BUF_INIT, .body = BUF_INIT};
    CHECK_INT(payment_store_idem_get(fx->s, "apikey-1", "key-9", &f), 0);
    CHECK_STR(f.fingerprint, "f00d");
    CHECK_INT(f.status, 204);
    CHECK_STR(f.etag, "\"4\"");
    CHECK_INT(f.location.len, 0);
    CHECK_INT(f.body.len, 0);
    buf_free(&f.location);
    buf_free(&f.body);

    struct payment_idem w = rec_make("apikey-1", "key-9");
    CHECK_INT(write_one(fx->s, 1, 0, &w), PAYMENT_STORE_EIDEMPOTENT);
    CHECK_INT(write_one(fx->s, 1, 0, NULL), 0);

    int n = 0, more = 1;
    CHECK_INT(payment_store_export_payments(fx->s, 0, 10, count_payment, &n, &more), 0);
    CHECK_INT(n, 1);
    struct payment_query q;
    memset(&q, 0, sizeof q);
    q.created_from_ms = INT64_MIN;
    q.created_to_ms = INT64_MAX;
    q.page_size = 10;
    q.mode = PAYMENT_PAGE_FIRST;
    n = 0;
    CHECK_INT(payment_store_list(fx->s, &q, count_row, &n, &more), 0);
    CHECK_INT(n, 1);
    struct keys k;
    keys_read(fx->s, PAGE_SMALL, &k);
    CHECK_INT(k.n, 1);
    CHECK_STR(k.key[0], "key-9");
    CHECK_STR(k.scope[0], "apikey-1");
    n = 0;
    CHECK_INT(payment_store_export_events(fx->s, 0, 10, count_event, &n, &more), 0);
    CHECK_INT(n, 1); /* the create's, not the import's */
}

/* An event a history's purge took leaves a stub of its position alone: the
 * export passes over it and gives the events kept. */
static void case_purged_left_out(struct fixture *fx)
{
    CHECK_INT(write_one(fx->s, 1, 0, NULL), 0);
    CHECK_INT(write_one(fx->s, 2, 0, NULL), 0);
    struct pv l = {0};
    int more = 1;
    CHECK_INT(payment_store_export_events(fx->s, 0, 10, pv_add, &l, &more), 0);
    CHECK_INT(l.n, 2);
    int64_t cut = 1767225600000LL + 2; /* after payment 1's creation, at payment 2's */
    payment_store_events_purge(fx->s, cut, cut);
    memset(&l, 0, sizeof l);
    CHECK_INT(payment_store_export_events(fx->s, 0, 10, pv_add, &l, &more), 0);
    CHECK_INT(l.n, 1);
    CHECK_STR(l.payment_id[0], "00000000-0000-4000-8000-000000000002");
    CHECK(!more);
}

#define MONGO_CASE(name)                                                                      \
    static void mongo_##name(void) { run_on_mongo(case_##name); }
MONGO_CASE(idem_order)
MONGO_CASE(events_in_outboxes)
MONGO_CASE(import_record_alone)
MONGO_CASE(purged_left_out)

TEST_MAIN(TEST(mongo_idem_order), TEST(mongo_events_in_outboxes), TEST(mongo_import_record_alone),
          TEST(mongo_purged_left_out))
