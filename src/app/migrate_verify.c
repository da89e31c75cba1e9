/* migrate_verify: whether a copy holds what its source holds (migrate.h).
 *
 * Each store is read whole with the export calls and summed up per
 * organisation:
 *   - its payments and its tombstones counted, and the payments' checksum:
 *     SHA-256 over the digest of each payment in id order, a payment's
 *     digest covering every field of its row (id, organisation, version,
 *     times, list columns, document) and whether it is a tombstone;
 *   - its events counted, and their checksum: SHA-256 over the digest of
 *     each event in (payment_id, version) order, an event's digest covering
 *     every field but its position (id, type as named in the API, ids,
 *     version, time, caller, request, key, operation, changes, document).
 * Positions and sequence numbers are left out: the target gives its own.
 * The idempotency records are counted and checksummed as a whole (they
 * belong to callers, not organisations): SHA-256 over the digest of each
 * record (every field), in the (scope, key) order the export gives.
 * A digest is SHA-256 over the fields in a fixed order, each written as
 * its length then its bytes, NULL as a length no text has (struct fields),
 * so that NULL and "" differ and no field's bytes can pass for another's.
 *
 * The summaries of both stores are then compared organisation by
 * organisation, in organisation order. */
#include "app/migrate.h"

#include <assert.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/uuid.h"

#define MD_LEN 32 /* SHA-256 */

/* One payment or event of a store, as summed up. */
struct item {
    char org[UUID_STR_LEN + 1]; /* its organisation */
    char id[UUID_STR_LEN + 1];  /* the payment's id */
    int64_t version;            /* an event's version; a payment's is in md */
    int deleted;                /* a tombstone (payments only) */
    unsigned char md[MD_LEN];   /* SHA-256 of its text (see above) */
};

/* A growable array of items. */
struct items {
    struct item *v;
    size_t n, cap;
};

/* One organisation of a store, summed up. */
struct org_sum {
    char org[UUID_STR_LEN + 1];
    size_t payments, tombstones, events;
    unsigned char payments_md[MD_LEN], events_md[MD_LEN];
};

/* One store summed up. */
struct store_sum {
    struct items payments, events;    /* sorted once read */
    struct org_sum *orgs;             /* in organisation order */
    size_t n_orgs;
    size_t idem;                      /* idempotency records */
    unsigned char idem_md[MD_LEN];
};

/* A reading's state: the digest context it reuses and its failure. */
struct reading {
    EVP_MD_CTX *ctx;
    struct store_sum *sum;
    int64_t last_seq, last_pos;       /* the last payment's sequence, event's position read */
    struct buf last_scope, last_key;  /* the last idempotency record read */
    int failed;                       /* memory or the digest failed */
};

static struct item *items_add(struct items *a)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 1024;
        struct item *v = realloc(a->v, cap * sizeof *v);
        if (!v)
            return NULL;
        a->v = v;
        a->cap = cap;
    }
    return &a->v[a->n++];
}

/* One item's digest as it is made: each field goes in as its length (8
 * bytes, big-endian) then its bytes, a NULL one as the length FIELD_NULL
 * alone, so that no two different sequences of fields (NULL and "" among
 * them) give the same bytes. */
#define FIELD_NULL UINT64_MAX

struct fields {
    EVP_MD_CTX *ctx;
    int failed; /* the digest failed */
};

static void fields_begin(struct fields *f, EVP_MD_CTX *ctx)
{
    f->ctx = ctx;
    f->failed = !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
}

/* len bytes of s, or NULL (s NULL). */
static void field_bytes(struct fields *f, const char *s, size_t len)
{
    uint64_t n = s ? (uint64_t)len : FIELD_NULL;
    unsigned char prefix[8];
    for (int i = 0; i < 8; i++)
        prefix[i] = (unsigned char)(n >> (56 - 8 * i));
    if (f->failed || !EVP_DigestUpdate(f->ctx, prefix, sizeof prefix) ||
        (s && len > 0 && !EVP_DigestUpdate(f->ctx, s, len)))
        f->failed = 1;
}

/* A NUL-terminated text, or NULL. */
static void field_text(struct fields *f, const char *s)
{
    field_bytes(f, s, s ? strlen(s) : 0);
}

static void field_int(struct fields *f, int64_t v)
{
    char text[24];
    int n = snprintf(text, sizeof text, "%" PRId64, v);
    assert(n > 0 && (size_t)n < sizeof text);
    field_bytes(f, text, (size_t)n);
}

/* The digest of the fields given since fields_begin, into md: 0, or -1. */
static int fields_end(struct fields *f, unsigned char md[MD_LEN])
{
    unsigned int mdlen = 0;
    if (f->failed || !EVP_DigestFinal_ex(f->ctx, md, &mdlen) || mdlen != MD_LEN)
        return -1;
    return 0;
}

/* Every field of the payment's row, and whether it is a tombstone. */
static int payment_digest(EVP_MD_CTX *ctx, const struct payment_export *p,
                          unsigned char md[MD_LEN])
{
    const struct payment_row *row = &p->row;
    struct fields f;
    fields_begin(&f, ctx);
    field_text(&f, row->id);
    field_text(&f, row->organisation_id);
    field_int(&f, row->version);
    field_int(&f, p->deleted != 0);
    field_int(&f, row->created_ms);
    field_int(&f, row->modified_ms);
    field_text(&f, row->currency);
    field_text(&f, row->payment_scheme);
    field_text(&f, row->payment_type);
    field_text(&f, row->reference);
    field_text(&f, row->end_to_end_reference);
    field_text(&f, row->processing_date);
    field_text(&f, row->amount_key);
    field_bytes(&f, row->doc, row->doc_len);
    return fields_end(&f, md);
}

static int read_payment(void *arg, const struct payment_export *p)
{
    struct reading *r = arg;
    struct item *it = items_add(&r->sum->payments);
    if (!it)
        return r->failed = 1;
    memcpy(it->org, p->row.organisation_id, sizeof it->org);
    memcpy(it->id, p->row.id, sizeof it->id);
    it->version = p->row.version;
    it->deleted = p->deleted != 0;
    r->last_seq = p->seq;
    if (payment_digest(r->ctx, p, it->md) != 0)
        return r->failed = 1;
    return 0;
}

static const char *event_type_name(enum payment_event_type t)
{
    switch (t) {
    case PAYMENT_EVENT_CREATED:
        return "payment.created";
    case PAYMENT_EVENT_UPDATED:
        return "payment.updated";
    case PAYMENT_EVENT_DELETED:
        return "payment.deleted";
    }
    return "";
}

/* Every field of the event but its position. */
static int event_digest(EVP_MD_CTX *ctx, const struct payment_event *ev, unsigned char md[MD_LEN])
{
    struct fields f;
    fields_begin(&f, ctx);
    field_text(&f, ev->id);
    field_text(&f, event_type_name(ev->type));
    field_text(&f, ev->organisation_id);
    field_text(&f, ev->payment_id);
    field_int(&f, ev->version);
    field_int(&f, ev->occurred_ms);
    field_text(&f, ev->api_key_id);
    field_text(&f, ev->request_id);
    field_text(&f, ev->idempotency_key);
    field_text(&f, ev->operation_id);
    field_text(&f, ev->changes);
    field_bytes(&f, ev->doc, ev->doc_len);
    return fields_end(&f, md);
}

static int read_event(void *arg, const struct payment_event *ev)
{
    struct reading *r = arg;
    struct item *it = items_add(&r->sum->events);
    if (!it)
        return r->failed = 1;
    memcpy(it->org, ev->organisation_id, sizeof it->org);
    memcpy(it->id, ev->payment_id, sizeof it->id);
    it->version = ev->version;
    it->deleted = 0;
    r->last_pos = ev->pos;
    if (event_digest(r->ctx, ev, it->md) != 0)
        return r->failed = 1;
    return 0;
}

/* Every field of the idempotency record. */
static int idem_digest(EVP_MD_CTX *ctx, const struct payment_idem_export *rec,
                       unsigned char md[MD_LEN])
{
    struct fields f;
    fields_begin(&f, ctx);
    field_text(&f, rec->scope);
    field_text(&f, rec->key);
    field_text(&f, rec->fingerprint);
    field_int(&f, rec->status);
    field_text(&f, rec->location);
    field_text(&f, rec->etag);
    field_bytes(&f, rec->body, rec->body_len);
    field_int(&f, rec->created_ms);
    return fields_end(&f, md);
}

/* Folds a record's digest into the running digest of all records (the
 * reading's ctx is the per-record one, so this one is kept apart). */
struct idem_reading {
    struct reading *r;
    EVP_MD_CTX *all; /* SHA-256 over every record's digest, in order */
};

static int read_idem(void *arg, const struct payment_idem_export *rec)
{
    struct idem_reading *ir = arg;
    struct reading *r = ir->r;
    unsigned char md[MD_LEN];
    if (idem_digest(r->ctx, rec, md) != 0 || !EVP_DigestUpdate(ir->all, md, MD_LEN))
        return r->failed = 1;
    buf_reset(&r->last_scope);
    buf_reset(&r->last_key);
    if (buf_puts(&r->last_scope, rec->scope) != 0 || buf_puts(&r->last_key, rec->key) != 0)
        return r->failed = 1;
    r->sum->idem++;
    return 0;
}

/* The reason a read failed, into errbuf; returns a store error. */
static int read_failed(const struct reading *r, const char *what, int rc, char *errbuf,
                       size_t errlen)
{
    if (rc > 0 || r->failed) {
        snprintf(errbuf, errlen, "reading %s: out of memory", what);
        return PAYMENT_STORE_EINTERNAL;
    }
    snprintf(errbuf, errlen, "reading %s: %s", what, payment_store_strerror(rc));
    return rc;
}

static int read_idem_all(struct reading *r, payment_store *s, uint32_t page, char *errbuf,
                         size_t errlen)
{
    struct idem_reading ir = {r, EVP_MD_CTX_new()};
    unsigned int mdlen = 0;
    int rc = PAYMENT_STORE_OK;
    if (!ir.all || !EVP_DigestInit_ex(ir.all, EVP_sha256(), NULL))
        r->failed = 1;
    for (int more = !r->failed; more && rc == PAYMENT_STORE_OK;) {
        int first = r->sum->idem == 0;
        rc = payment_store_export_idem(s, first ? NULL : r->last_scope.data,
                                       first ? NULL : r->last_key.data, page, read_idem, &ir,
                                       &more);
    }
    if (rc == PAYMENT_STORE_OK && !r->failed &&
        (!EVP_DigestFinal_ex(ir.all, r->sum->idem_md, &mdlen) || mdlen != MD_LEN))
        r->failed = 1;
    EVP_MD_CTX_free(ir.all);
    return rc != PAYMENT_STORE_OK || r->failed
               ? read_failed(r, "idempotency records", rc, errbuf, errlen)
               : PAYMENT_STORE_OK;
}

static int item_cmp(const void *pa, const void *pb)
{
    const struct item *a = pa, *b = pb;
    int c = strcmp(a->org, b->org);
    if (!c)
        c = strcmp(a->id, b->id);
    if (!c)
        c = (a->version > b->version) - (a->version < b->version);
    return c;
}

/* Reads every payment, event and idempotency record of s into sum, the
 * payments and events sorted. */
static int store_read(payment_store *s, uint32_t page, struct store_sum *sum, char *errbuf,
                      size_t errlen)
{
    struct reading r = {EVP_MD_CTX_new(), sum, 0, 0, BUF_INIT, BUF_INIT, 0};
    r.failed = !r.ctx;
    int rc = PAYMENT_STORE_OK;
    for (int more = !r.failed; more && rc == PAYMENT_STORE_OK;)
        rc = payment_store_export_payments(s, r.last_seq, page, read_payment, &r, &more);
    if (rc != PAYMENT_STORE_OK || r.failed) {
        rc = read_failed(&r, "payments", rc, errbuf, errlen);
        goto out;
    }
    for (int more = 1; more && rc == PAYMENT_STORE_OK;)
        rc = payment_store_export_events(s, r.last_pos, page, read_event, &r, &more);
    if (rc != PAYMENT_STORE_OK || r.failed) {
        rc = read_failed(&r, "events", rc, errbuf, errlen);
        goto out;
    }
    rc = read_idem_all(&r, s, page, errbuf, errlen);
    if (sum->payments.n > 1)
        qsort(sum->payments.v, sum->payments.n, sizeof *sum->payments.v, item_cmp);
    if (sum->events.n > 1)
        qsort(sum->events.v, sum->events.n, sizeof *sum->events.v, item_cmp);
out:
    buf_free(&r.last_scope);
    buf_free(&r.last_key);
    EVP_MD_CTX_free(r.ctx);
    return rc;
}

/* The items of a (sorted) at *i onwards that belong to org: counted, and
 * their digests hashed in order into md; *i moves past them. */
static int org_fold(const struct items *a, size_t *i, const char *org, EVP_MD_CTX *ctx,
                    size_t *count, size_t *deleted, unsigned char md[MD_LEN])
{
    unsigned int mdlen = 0;
    if (!EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
        return -1;
    for (; *i < a->n && strcmp(a->v[*i].org, org) == 0; (*i)++) {
        (*count)++;
        *deleted += (size_t)a->v[*i].deleted;
        if (!EVP_DigestUpdate(ctx, a->v[*i].md, MD_LEN))
            return -1;
    }
    return EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen == MD_LEN ? 0 : -1;
}

/* Makes sum->orgs from the sorted payments and events. */
static int orgs_make(struct store_sum *sum, char *errbuf, size_t errlen)
{
    size_t cap = sum->payments.n + sum->events.n;
    sum->orgs = calloc(cap ? cap : 1, sizeof *sum->orgs);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = sum->orgs && ctx;
    size_t ip = 0, ie = 0;
    while (ok && (ip < sum->payments.n || ie < sum->events.n)) {
        const char *p = ip < sum->payments.n ? sum->payments.v[ip].org : NULL;
        const char *e = ie < sum->events.n ? sum->events.v[ie].org : NULL;
        const char *org = !p ? e : !e ? p : strcmp(p, e) <= 0 ? p : e;
        struct org_sum *o = &sum->orgs[sum->n_orgs++];
        assert(sum->n_orgs <= cap);
        memcpy(o->org, org, sizeof o->org);
        size_t no_tombstones = 0;
        ok = org_fold(&sum->payments, &ip, o->org, ctx, &o->payments, &o->tombstones,
                      o->payments_md) == 0 &&
             org_fold(&sum->events, &ie, o->org, ctx, &o->events, &no_tombstones,
                      o->events_md) == 0;
    }
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        snprintf(errbuf, errlen, "summing up: out of memory");
        return PAYMENT_STORE_EINTERNAL;
    }
    return PAYMENT_STORE_OK;
}

/* Frees the items once summed up into sum->orgs. */
static void store_sum_free_items(struct store_sum *sum)
{
    free(sum->payments.v);
    free(sum->events.v);
    memset(&sum->payments, 0, sizeof sum->payments);
    memset(&sum->events, 0, sizeof sum->events);
}

static void store_sum_free(struct store_sum *sum)
{
    store_sum_free_items(sum);
    free(sum->orgs);
}

/* Writes how organisation org differs between a (the source's, or NULL
 * when it has none) and b (the target's, or NULL). */
static void org_report(FILE *report, const char *org, const struct org_sum *a,
                       const struct org_sum *b)
{
    static const struct org_sum none;
    const struct org_sum *x = a ? a : &none, *y = b ? b : &none;
    if (!report)
        return;
    fprintf(report,
            "paymentd migrate: organisation %s differs: payments %zu -> %zu, tombstones %zu -> "
            "%zu, events %zu -> %zu%s%s\n",
            org, x->payments, y->payments, x->tombstones, y->tombstones, x->events, y->events,
            memcmp(x->payments_md, y->payments_md, MD_LEN) ? ", payments' checksum differs" : "",
            memcmp(x->events_md, y->events_md, MD_LEN) ? ", events' checksum differs" : "");
}

static int org_equal(const struct org_sum *a, const struct org_sum *b)
{
    return a->payments == b->payments && a->tombstones == b->tombstones &&
           a->events == b->events && memcmp(a->payments_md, b->payments_md, MD_LEN) == 0 &&
           memcmp(a->events_md, b->events_md, MD_LEN) == 0;
}

/* Compares the organisations of src and dst, in order, into out. */
static void orgs_compare(const struct store_sum *src, const struct store_sum *dst, FILE *report,
                         struct migrate_verified *out)
{
    size_t i = 0, j = 0;
    while (i < src->n_orgs || j < dst->n_orgs) {
        const struct org_sum *a = i < src->n_orgs ? &src->orgs[i] : NULL;
        const struct org_sum *b = j < dst->n_orgs ? &dst->orgs[j] : NULL;
        int c = !a ? 1 : !b ? -1 : strcmp(a->org, b->org);
        if (c == 0 && org_equal(a, b)) {
            i++, j++;
            continue;
        }
        out->orgs_differing++;
        if (c == 0) {
            org_report(report, a->org, a, b);
            i++, j++;
        } else if (c < 0) {
            org_report(report, a->org, a, NULL);
            i++;
        } else {
            org_report(report, b->org, NULL, b);
            j++;
        }
    }
}

int migrate_verify(payment_store *from, payment_store *to, uint32_t page, FILE *report,
                   struct migrate_verified *out, char *errbuf, size_t errlen)
{
    assert(from && to && out && errbuf && errlen > 0);
    assert(page >= 1 && page <= PAYMENT_EXPORT_PAGE_MAX);
    memset(out, 0, sizeof *out);
    errbuf[0] = '\0';
    struct store_sum src = {0}, dst = {0};
    int rc = store_read(from, page, &src, errbuf, errlen);
    if (rc == PAYMENT_STORE_OK)
        rc = orgs_make(&src, errbuf, errlen);
    size_t src_payments = src.payments.n, src_events = src.events.n;
    store_sum_free_items(&src); /* one store's items in memory at a time */
    if (rc == PAYMENT_STORE_OK)
        rc = store_read(to, page, &dst, errbuf, errlen);
    if (rc == PAYMENT_STORE_OK)
        rc = orgs_make(&dst, errbuf, errlen);
    if (rc == PAYMENT_STORE_OK) {
        out->payments = src_payments;
        out->events = src_events;
        out->idem = src.idem;
        out->orgs = src.n_orgs;
        for (size_t i = 0; i < src.n_orgs; i++)
            out->tombstones += src.orgs[i].tombstones;
        orgs_compare(&src, &dst, report, out);
        out->idem_differs = src.idem != dst.idem || memcmp(src.idem_md, dst.idem_md, MD_LEN);
        if (out->idem_differs && report)
            fprintf(report, "paymentd migrate: idempotency records differ: %zu -> %zu%s\n",
                    src.idem, dst.idem, src.idem == dst.idem ? ", checksum differs" : "");
    }
    store_sum_free(&src);
    store_sum_free(&dst);
    return rc;
}
