/* The PostgreSQL store's delivery claims shared by several processes: two
 * stores opened on one schema (two paymentd processes), each with three
 * threads claiming for owners of their own in a loop over 300 pending
 * deliveries and recording each claimed one's success.  Leases outlast the
 * test, so a delivery is claimed once and only by one owner: every
 * delivery is recorded exactly once, by the owner that claimed it, no claim
 * hands a delivery another owner holds, and no record is refused.  Needs
 * PAYMENTD_TEST_PG_URI (run_on_pg of store_fixture.h); skipped without. */
#include "payment/store.h"

#include <assert.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/uuid.h"
#include "store_fixture.h"
#include "test.h"

/* The longest a case may take before SIGALRM ends the run. */
#define HARD_TIMEOUT_S 300

enum { CLAIM_ENDPOINTS = 3, CLAIM_DELIVERIES = 300, CLAIM_THREADS = 6, CLAIM_MAX = 5,
       CLAIM_LEASE_MS = 10 * 60 * 1000 };

static void wh_id(char out[UUID_STR_LEN + 1], int n)
{
    snprintf(out, UUID_STR_LEN + 1, "01900000-0000-7000-8000-%012d", n);
}

static void dl_id(char out[UUID_STR_LEN + 1], int n)
{
    snprintf(out, UUID_STR_LEN + 1, "01910000-0000-7000-8000-%012d", n);
}

static void ev_id(char out[UUID_STR_LEN + 1], int n)
{
    snprintf(out, UUID_STR_LEN + 1, "01920000-0000-7000-8000-%012d", n);
}

/* The number of a delivery id dl_id made, or -1 for another. */
static int dl_number(const char *id)
{
    int n = strlen(id) == UUID_STR_LEN ? atoi(id + 24) : -1;
    return n >= 1 && n <= CLAIM_DELIVERIES ? n : -1;
}

/* What every thread shares, by delivery number. */
struct board {
    _Atomic int holder[CLAIM_DELIVERIES + 1];  /* the owner (1..) holding it now, 0: none */
    _Atomic int claims[CLAIM_DELIVERIES + 1];  /* times it was handed to a claim */
    _Atomic int claimer[CLAIM_DELIVERIES + 1]; /* the owner of its last claim */
    _Atomic int recorded;                      /* records accepted, all deliveries */
    _Atomic int checked;                       /* deliveries found as expected at the end */
};

/* One thread claiming and recording for its owner on its store. */
struct claimer {
    payment_store *s;
    int owner;           /* 1..CLAIM_THREADS */
    char owner_name[8];
    struct board *b;
    pthread_t thread;
    int held_by_another; /* claims that handed a delivery another owner held */
    int refused;         /* records refused */
    int errors;          /* other failures */
    int recorded;
    unsigned seed;
    char (*ids)[UUID_STR_LEN + 1]; /* the current claim's, CLAIM_MAX of them */
    char (*webhooks)[UUID_STR_LEN + 1];
    size_t n;
};

/* A payment_store_delivery_fn: takes the delivery on the board for the
 * claimer (arg), noting one another owner held. */
static int claimer_take(void *arg, const struct payment_delivery *d)
{
    struct claimer *c = arg;
    int n = dl_number(d->id);
    CHECK(n > 0 && c->n < CLAIM_MAX);
    if (n <= 0 || c->n >= CLAIM_MAX)
        return 1;
    CHECK_INT(d->status, PAYMENT_DELIVERY_PENDING);
    CHECK_INT(d->attempts, 0);
    atomic_fetch_add(&c->b->claims[n], 1);
    atomic_store(&c->b->claimer[n], c->owner);
    int none = 0;
    if (!atomic_compare_exchange_strong(&c->b->holder[n], &none, c->owner)) {
        fprintf(stderr, "  delivery %d handed to %s while owner %d held it\n", n, c->owner_name,
                none);
        c->held_by_another++;
    }
    memcpy(c->ids[c->n], d->id, sizeof c->ids[c->n]);
    memcpy(c->webhooks[c->n], d->webhook_id, sizeof c->webhooks[c->n]);
    c->n++;
    return 0;
}

/* The name of owner k (1..CLAIM_THREADS): its store's letter and k. */
static void owner_name(int k, char out[8])
{
    assert(k >= 1 && k <= CLAIM_THREADS);
    out[0] = (k - 1) % 2 ? 'B' : 'A';
    out[1] = (char)('0' + k);
    out[2] = '\0';
}

/* Records the success of claimed delivery i, then lets it go on the board. */
static void claimer_record(struct claimer *c, size_t i)
{
    if (rand_r(&c->seed) % 2 == 0)
        (void)usleep((useconds_t)(rand_r(&c->seed) % 3000)); /* others claim meanwhile */
    char attempt[64];
    snprintf(attempt, sizeof attempt, "{\"o\":\"%s\"}", c->owner_name);
    struct payment_delivery_attempt a = {.delivery_id = c->ids[i], .webhook_id = c->webhooks[i],
                                         .owner = c->owner_name, .attempt_json = attempt,
                                         .status = PAYMENT_DELIVERY_SUCCEEDED, .succeeded = 1,
                                         .at_ms = clock_now_ms()};
    int64_t failing = -1;
    int err = payment_store_delivery_record(c->s, &a, &failing);
    if (err == PAYMENT_STORE_OK) {
        c->recorded++;
        atomic_fetch_add(&c->b->recorded, 1);
        CHECK_INT(failing, 0);
    } else if (err == PAYMENT_STORE_ECONFLICT) {
        c->refused++;
    } else {
        fprintf(stderr, "  %s: record: %s\n", c->owner_name, payment_store_strerror(err));
        c->errors++;
    }
    int mine = c->owner;
    (void)atomic_compare_exchange_strong(&c->b->holder[dl_number(c->ids[i])], &mine, 0);
}

static void *claimer_main(void *arg)
{
    struct claimer *c = arg;
    int64_t deadline = clock_mono_us() + 120 * 1000000LL;
    while (atomic_load(&c->b->recorded) < CLAIM_DELIVERIES && clock_mono_us() < deadline &&
           c->errors < 10) {
        c->n = 0;
        int err = payment_store_deliveries_claim(c->s, c->owner_name, clock_now_ms(),
                                                 CLAIM_LEASE_MS, CLAIM_MAX, claimer_take, c);
        if (err != PAYMENT_STORE_OK) {
            fprintf(stderr, "  %s: claim: %s\n", c->owner_name, payment_store_strerror(err));
            c->errors++;
            continue;
        }
        if (c->n == 0) {
            int64_t count = 0, oldest = 0;
            if (payment_store_deliveries_pending(c->s, &count, &oldest) == PAYMENT_STORE_OK &&
                count == 0)
                break;
            (void)usleep(1000);
            continue;
        }
        for (size_t i = 0; i < c->n; i++)
            claimer_record(c, i);
    }
    return NULL;
}

/* Makes the endpoints and the 300 deliveries, pending and due now. */
static void claims_setup(payment_store *s)
{
    for (int e = 1; e <= CLAIM_ENDPOINTS; e++) {
        struct payment_webhook w;
        memset(&w, 0, sizeof w);
        wh_id(w.id, e);
        snprintf(w.organisation_id, sizeof w.organisation_id,
                 "0a0a0a0a-0000-4000-8000-000000000001");
        w.created_ms = w.modified_ms = 1000;
        w.enabled = 1;
        w.types = PAYMENT_EVENT_CREATED;
        w.doc = "{}";
        w.doc_len = 2;
        CHECK_INT(payment_store_webhook_create(s, &w), PAYMENT_STORE_OK);
    }
    static struct payment_delivery_new d[CLAIM_DELIVERIES];
    static char body[CLAIM_DELIVERIES][32];
    for (int i = 0; i < CLAIM_DELIVERIES; i++) {
        memset(&d[i], 0, sizeof d[i]);
        dl_id(d[i].id, i + 1);
        wh_id(d[i].webhook_id, i % CLAIM_ENDPOINTS + 1);
        ev_id(d[i].event_id, i + 1);
        d[i].event_pos = i + 1;
        int len = snprintf(body[i], sizeof body[i], "{\"event\":%d}", i + 1);
        d[i].body = body[i];
        d[i].body_len = (size_t)len;
    }
    CHECK_INT(payment_store_deliveries_add(s, 0, CLAIM_DELIVERIES, d, CLAIM_DELIVERIES, 0,
                                           clock_now_ms() - 1000),
              PAYMENT_STORE_OK);
}

/* Checks one delivery as stored (arg the board): succeeded, one attempt,
 * made by the owner the board says claimed it. */
static int claims_check_delivery(void *arg, const struct payment_delivery *d)
{
    struct board *b = arg;
    int n = dl_number(d->id);
    CHECK(n > 0);
    if (n <= 0)
        return 1;
    char claimer[8];
    owner_name(atomic_load(&b->claimer[n]), claimer);
    CHECK_INT(d->status, PAYMENT_DELIVERY_SUCCEEDED);
    CHECK_INT(d->attempts, 1);
    json_error_t je;
    json_t *arr = json_loads(d->attempts_json, 0, &je);
    CHECK(arr && json_is_array(arr) && json_array_size(arr) == 1);
    const char *by = json_string_value(json_object_get(json_array_get(arr, 0), "o"));
    CHECK(by != NULL && strcmp(by, claimer) == 0);
    json_decref(arr);
    atomic_fetch_add(&b->checked, 1);
    return 0;
}

static void case_claims_across_stores(struct fixture *fx)
{
    payment_store *other = NULL;
    char err[256] = "";
    CHECK_INT(payment_store_open(fx->uri, fx->flags, &other, err, sizeof err), PAYMENT_STORE_OK);
    if (!other) {
        fprintf(stderr, "  open: %s\n", err);
        return;
    }
    claims_setup(fx->s);
    static struct board b;
    memset(&b, 0, sizeof b);
    struct claimer c[CLAIM_THREADS];
    static char ids[CLAIM_THREADS][CLAIM_MAX][UUID_STR_LEN + 1];
    static char webhooks[CLAIM_THREADS][CLAIM_MAX][UUID_STR_LEN + 1];
    for (int i = 0; i < CLAIM_THREADS; i++) {
        c[i] = (struct claimer){.s = i % 2 ? other : fx->s, .owner = i + 1, .b = &b,
                               .seed = (unsigned)(i + 1), .ids = ids[i],
                               .webhooks = webhooks[i]};
        owner_name(i + 1, c[i].owner_name);
    }
    for (int i = 0; i < CLAIM_THREADS; i++)
        CHECK_INT(pthread_create(&c[i].thread, NULL, claimer_main, &c[i]), 0);
    int held_by_another = 0, refused = 0, errors = 0, recorded = 0, stores = 0;
    for (int i = 0; i < CLAIM_THREADS; i++) {
        CHECK_INT(pthread_join(c[i].thread, NULL), 0);
        held_by_another += c[i].held_by_another;
        refused += c[i].refused;
        errors += c[i].errors;
        recorded += c[i].recorded;
        if (c[i].recorded > 0)
            stores |= i % 2 ? 2 : 1;
        fprintf(stderr, "  claims: %s recorded %d, refused %d\n", c[i].owner_name,
                c[i].recorded, c[i].refused);
    }
    CHECK_INT(held_by_another, 0);
    CHECK_INT(refused, 0);
    CHECK_INT(errors, 0);
    CHECK_INT(recorded, CLAIM_DELIVERIES);
    CHECK_INT(stores, 3); /* both stores took part */
    int claimed_twice = 0, unclaimed = 0;
    for (int n = 1; n <= CLAIM_DELIVERIES; n++) {
        int k = atomic_load(&b.claims[n]);
        claimed_twice += k > 1;
        unclaimed += k == 0;
    }
    CHECK_INT(claimed_twice, 0);
    CHECK_INT(unclaimed, 0);

    /* As stored: every one succeeded with its one attempt, none pending. */
    for (int e = 1; e <= CLAIM_ENDPOINTS; e++) {
        char id[UUID_STR_LEN + 1];
        wh_id(id, e);
        struct payment_delivery_query q = {.webhook_id = id, .limit = PAYMENT_WEBHOOKS_PAGE_MAX};
        int more = -1;
        CHECK_INT(payment_store_deliveries_list(fx->s, &q, claims_check_delivery, &b,
                                                &more),
                  PAYMENT_STORE_OK);
        CHECK_INT(more, 0);
    }
    CHECK_INT(atomic_load(&b.checked), CLAIM_DELIVERIES);
    int64_t count = -1, oldest = -1;
    CHECK_INT(payment_store_deliveries_pending(other, &count, &oldest), PAYMENT_STORE_OK);
    CHECK_INT(count, 0);
    payment_store_close(other);
}

static void pg_claims_across_stores(void)
{
    alarm(HARD_TIMEOUT_S); /* a store that hangs fails the run instead of holding it */
    run_on_pg(case_claims_across_stores);
    alarm(0);
}

TEST_MAIN(TEST(pg_claims_across_stores))
