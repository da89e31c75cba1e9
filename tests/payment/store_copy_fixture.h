/* store_copy_fixture: what the copy's contract tests (test_store_copy.c)
 * need beside store_fixture.h's runners: another fresh store of a kind,
 * opened and removed by the case itself (a second temporary file, schema or
 * database); everything a store's exports give, read page by page and
 * copied out of the callbacks; and the comparisons of two stores' exported
 * payments, records and events.  Header-only: each test binary is one
 * file. */
#ifndef TESTS_PAYMENT_STORE_COPY_FIXTURE_H
#define TESTS_PAYMENT_STORE_COPY_FIXTURE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event_list.h"
#include "payment/store.h"
#include "store_fixture.h"
#include "store_waiter.h"
#include "test.h"

/* ---- another store of a kind ------------------------------------------------ */

enum store_kind { KIND_SQLITE, KIND_PG, KIND_MONGO };

/* A store the case opens itself, and what removes it. */
struct extra {
    payment_store *s;
    enum store_kind kind;
    char uri[512];
    char where[64]; /* sqlite: its folder; pg: its schema; mongo: its database */
};

static inline const char *kind_name(enum store_kind k)
{
    return k == KIND_SQLITE ? "sqlite" : k == KIND_PG ? "PostgreSQL" : "MongoDB";
}

/* Whether stores of kind k can be had here; else the case is skipped. */
static inline int kind_available(enum store_kind k)
{
    if (k == KIND_PG && !pg_base()) {
        TEST_SKIP(PG_URI_ENV " unset: no PostgreSQL to run on");
        return 0;
    }
    if (k == KIND_MONGO && !mongo_base()) {
        TEST_SKIP(MONGO_URI_ENV " unset: no MongoDB to run on");
        return 0;
    }
    return 1;
}

/* Makes a fresh, empty store of kind k and opens it: 1, or 0 (a failed
 * check, nothing left to remove). */
static inline int extra_open(enum store_kind k, struct extra *x)
{
    memset(x, 0, sizeof *x);
    x->kind = k;
    if (k == KIND_SQLITE) {
        snprintf(x->where, sizeof x->where, "/tmp/paymentd-copy-XXXXXX");
        CHECK(mkdtemp(x->where) != NULL);
        if (!x->where[0])
            return 0;
        snprintf(x->uri, sizeof x->uri, "sqlite:%s/payments.db", x->where);
    } else if (k == KIND_PG) {
        char schema[64];
        if (!pg_schema_create(schema, x->uri, sizeof x->uri))
            return 0;
        snprintf(x->where, sizeof x->where, "%s", schema);
    } else {
        char db[64];
        mongo_db_name(db);
        snprintf(x->where, sizeof x->where, "%s", db);
        mongo_uri_for(x->uri, sizeof x->uri, mongo_base(), db, "");
    }
    char err[256] = "";
    int rc = payment_store_open(x->uri, 0, &x->s, err, sizeof err);
    CHECK_INT(rc, PAYMENT_STORE_OK);
    if (rc == PAYMENT_STORE_OK)
        return 1;
    fprintf(stderr, "  open %s: %s\n", x->uri, err);
    x->s = NULL;
    return 1; /* opened nothing, but made a place extra_close removes */
}

static inline void extra_close(struct extra *x)
{
    payment_store_close(x->s);
    x->s = NULL;
    if (x->kind == KIND_SQLITE)
        rm_tree(x->where);
    else if (x->kind == KIND_PG)
        pg_schema_drop(x->where);
    else
        mongo_drop(x->where);
}

/* The kind of the store a fixture opened. */
static inline enum store_kind fixture_kind(const struct fixture *fx)
{
    if (strncmp(fx->uri, "sqlite:", 7) == 0)
        return KIND_SQLITE;
    if (strncmp(fx->uri, "postgres", 8) == 0)
        return KIND_PG;
    return KIND_MONGO;
}

/* ---- writing ------------------------------------------------------------------ */

/* Writes row through store.h and waits for the result: kind 0 creates it,
 * 1 updates it at expected, 2 deletes it at expected. */
static inline int sync_write(payment_store *s, int kind, const struct payment_row *row,
                             int64_t expected, const struct payment_idem *idem,
                             const struct payment_event_info *ev)
{
    struct waiter w;
    waiter_init(&w, 1);
    if (kind == 0)
        payment_store_create(s, row, idem, ev, waiter_done, &w);
    else if (kind == 1)
        payment_store_update(s, row, expected, idem, ev, waiter_done, &w);
    else
        payment_store_delete(s, row->id, expected, idem, ev, waiter_done, &w);
    waiter_wait(&w);
    return w.err;
}

/* ---- what a store holds, read out ------------------------------------------ */

/* A payment as exported, copied out of the callback. */
struct held_pay {
    struct payment_export e;
    char *currency, *scheme, *type, *reference, *e2e, *doc;
};

/* A record as exported, copied out. */
struct held_rec {
    struct payment_idem_export r;
    char *scope, *key, *fingerprint, *location, *etag, *body;
};

/* Every payment, record and event a store holds, as its exports give them. */
struct held {
    struct held_pay *pay;
    size_t n_pay;
    struct held_rec *rec;
    size_t n_rec;
    struct seen_list ev;
};

/* A copy of n bytes at p with a NUL after them, or NULL for NULL. */
static inline char *dup_bytes(const char *p, size_t n)
{
    if (!p)
        return NULL;
    char *c = malloc(n + 1);
    CHECK(c != NULL);
    if (!c)
        return NULL;
    memcpy(c, p, n);
    c[n] = '\0';
    return c;
}

static inline char *dup_text(const char *p)
{
    return p ? dup_bytes(p, strlen(p)) : NULL;
}

/* Grows an array of n elements of size sz to hold one more. */
static inline void *grow(void *v, size_t n, size_t sz)
{
    void *g = realloc(v, (n + 1) * sz);
    CHECK(g != NULL);
    if (!g)
        abort(); /* a test's small arrays */
    return g;
}

static inline int held_add_pay(void *arg, const struct payment_export *e)
{
    struct held *h = arg;
    h->pay = grow(h->pay, h->n_pay, sizeof *h->pay);
    struct held_pay *c = &h->pay[h->n_pay++];
    c->e = *e;
    const struct payment_row *r = &e->row;
    c->currency = dup_text(r->currency);
    c->scheme = dup_text(r->payment_scheme);
    c->type = dup_text(r->payment_type);
    c->reference = dup_text(r->reference);
    c->e2e = dup_text(r->end_to_end_reference);
    c->doc = dup_bytes(r->doc, r->doc_len);
    c->e.row.currency = c->currency;
    c->e.row.payment_scheme = c->scheme;
    c->e.row.payment_type = c->type;
    c->e.row.reference = c->reference;
    c->e.row.end_to_end_reference = c->e2e;
    c->e.row.doc = c->doc;
    return 0;
}

static inline int held_add_rec(void *arg, const struct payment_idem_export *r)
{
    struct held *h = arg;
    h->rec = grow(h->rec, h->n_rec, sizeof *h->rec);
    struct held_rec *c = &h->rec[h->n_rec++];
    c->r = *r;
    c->scope = dup_text(r->scope);
    c->key = dup_text(r->key);
    c->fingerprint = dup_text(r->fingerprint);
    c->location = dup_text(r->location);
    c->etag = dup_text(r->etag);
    c->body = dup_bytes(r->body, r->body_len);
    c->r.scope = c->scope;
    c->r.key = c->key;
    c->r.fingerprint = c->fingerprint;
    c->r.location = c->location;
    c->r.etag = c->etag;
    c->r.body = c->body;
    return 0;
}

static inline void held_free(struct held *h)
{
    for (size_t i = 0; i < h->n_pay; i++) {
        struct held_pay *c = &h->pay[i];
        free(c->currency), free(c->scheme), free(c->type), free(c->reference), free(c->e2e);
        free(c->doc);
    }
    for (size_t i = 0; i < h->n_rec; i++) {
        struct held_rec *c = &h->rec[i];
        free(c->scope), free(c->key), free(c->fingerprint), free(c->location), free(c->etag);
        free(c->body);
    }
    free(h->pay);
    free(h->rec);
    seen_free(&h->ev);
    memset(h, 0, sizeof *h);
}

/* Reads everything s holds, page rows at a time. */
static inline void held_read(payment_store *s, uint32_t page, struct held *h)
{
    memset(h, 0, sizeof *h);
    int more = 1;
    while (more) {
        size_t before = h->n_pay;
        int64_t after = before ? h->pay[before - 1].e.seq : 0;
        CHECK_INT(payment_store_export_payments(s, after, page, held_add_pay, h, &more),
                  PAYMENT_STORE_OK);
        CHECK(h->n_pay - before <= page && (!more || h->n_pay - before == page));
        if (h->n_pay == before)
            break;
    }
    more = 1;
    while (more) {
        size_t before = h->n_rec;
        const struct held_rec *last = before ? &h->rec[before - 1] : NULL;
        CHECK_INT(payment_store_export_idem(s, last ? last->scope : NULL, last ? last->key : NULL,
                                            page, held_add_rec, h, &more),
                  PAYMENT_STORE_OK);
        if (h->n_rec == before)
            break;
    }
    for (size_t i = 1; i < h->n_rec; i++) { /* (scope, key) byte order, each once */
        int c = strcmp(h->rec[i - 1].scope, h->rec[i].scope);
        CHECK(c < 0 || (c == 0 && strcmp(h->rec[i - 1].key, h->rec[i].key) < 0));
    }
    more = 1;
    while (more) {
        size_t before = h->ev.n;
        int64_t after = before ? h->ev.ev[before - 1].pos : 0;
        CHECK_INT(payment_store_export_events(s, after, page, seen_add, &h->ev, &more),
                  PAYMENT_STORE_OK);
        if (h->ev.n == before)
            break;
    }
}

/* ---- the checks ------------------------------------------------------------- */

static inline int same_text(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static inline int same_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
    return (!a && !b) || (a && b && alen == blen && memcmp(a, b, alen) == 0);
}

/* Two exported payments are the same but for their seq. */
static inline void check_same_pay(const struct held_pay *a, const struct held_pay *b)
{
    const struct payment_row *x = &a->e.row, *y = &b->e.row;
    CHECK_STR(y->id, x->id);
    CHECK_STR(y->organisation_id, x->organisation_id);
    CHECK_INT(b->e.deleted, a->e.deleted);
    CHECK_INT(y->version, x->version);
    CHECK_INT(y->created_ms, x->created_ms);
    CHECK_INT(y->modified_ms, x->modified_ms);
    CHECK(same_text(y->currency, x->currency));
    CHECK(same_text(y->payment_scheme, x->payment_scheme));
    CHECK(same_text(y->payment_type, x->payment_type));
    CHECK(same_text(y->reference, x->reference));
    CHECK(same_text(y->end_to_end_reference, x->end_to_end_reference));
    CHECK_STR(y->processing_date, x->processing_date);
    CHECK_STR(y->amount_key, x->amount_key);
    CHECK(same_bytes(y->doc, y->doc_len, x->doc, x->doc_len));
    if (a->e.deleted)
        CHECK(x->doc == NULL && x->doc_len == 0 && x->currency == NULL && x->reference == NULL);
}

static inline void check_same_rec(const struct held_rec *a, const struct held_rec *b)
{
    CHECK_STR(b->r.scope, a->r.scope);
    CHECK_STR(b->r.key, a->r.key);
    CHECK_STR(b->r.fingerprint, a->r.fingerprint);
    CHECK_INT(b->r.status, a->r.status);
    CHECK(same_text(b->r.location, a->r.location));
    CHECK(same_text(b->r.etag, a->r.etag));
    CHECK(same_bytes(b->r.body, b->r.body_len, a->r.body, a->r.body_len));
    CHECK_INT(b->r.created_ms, a->r.created_ms);
}

/* Two events are the same but for their position. */
static inline void check_same_event(const struct seen *a, const struct seen *b)
{
    CHECK_STR(b->id, a->id);
    CHECK_INT(b->type, a->type);
    CHECK_STR(b->org, a->org);
    CHECK_STR(b->pid, a->pid);
    CHECK_INT(b->version, a->version);
    CHECK_INT(b->occurred_ms, a->occurred_ms);
    CHECK_STR(b->api_key_id, a->api_key_id);
    CHECK_STR(b->request_id, a->request_id);
    CHECK_STR(b->idem_key, a->idem_key);
    CHECK_STR(b->op_id, a->op_id);
    CHECK_STR(b->changes, a->changes);
    CHECK_STR(b->doc, a->doc);
}

/* The events lists a and b hold the same events in the same order; b's
 * positions strictly increase. */
static inline void check_same_events(const struct seen_list *a, const struct seen_list *b)
{
    CHECK_INT(b->n, a->n);
    for (size_t i = 0; i < a->n && i < b->n; i++) {
        check_same_event(&a->ev[i], &b->ev[i]);
        if (i)
            CHECK(b->ev[i].pos > b->ev[i - 1].pos);
    }
}

/* A live payment's get: the same document, version and creation time. */

#endif
