/* migrate_verify: whether a copy holds what its source holds (migrate.h).
 *
 * Each store is read whole with the export calls and summed up per
 * organisation:
 *   - its payments and its tombstones counted, and the payments' checksum:
 *     SHA-256 over the SHA-256 of "id|version|deleted|doc" of each payment
 *     (deleted "1" for a tombstone, whose doc is empty, else "0"), in id
 *     order;
 *   - its events counted, and their checksum: SHA-256 over the SHA-256 of
 *     "payment_id|version|type|doc" of each event (type as named in the
 *     API, "payment.created"), in (payment_id, version) order.
 * Positions and sequence numbers are left out: the target gives its own.
 * The idempotency records are counted and checksummed as a whole (they
 * belong to callers, not organisations): SHA-256 over the SHA-256 of
 * "scope|key|fingerprint|status|location|etag|body" of each, in the
 * (scope, key) order the export gives.
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

/* Hashes the fields, separated by '|', into md: 0, or -1. */
static int digest_fields(EVP_MD_CTX *ctx, const char *const *field, const size_t *len, size_t n,
                         unsigned char md[MD_LEN])
{
    unsigned int mdlen = 0;
    if (!EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
        return -1;
    for (size_t i = 0; i < n; i++)
        if ((i > 0 && !EVP_DigestUpdate(ctx, "|", 1)) ||
            (len[i] > 0 && !EVP_DigestUpdate(ctx, field[i], len[i])))
            return -1;
    return EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen == MD_LEN ? 0 : -1;
}

static int read_payment(void *arg, const struct payment_export *p)
{
    struct reading *r = arg;
    struct item *it = items_add(&r->sum->payments);
    if (!it)
        return r->failed = 1;
    char version[24];
    snprintf(version, sizeof version, "%" PRId64, p->row.version);
    const char *doc = p->row.doc ? p->row.doc : "";
    const char *field[] = {p->row.id, version, p->deleted ? "1" : "0", doc};
    const size_t len[] = {strlen(p->row.id), strlen(version), 1, p->row.doc ? p->row.doc_len : 0};
    memcpy(it->org, p->row.organisation_id, sizeof it->org);
    memcpy(it->id, p->row.id, sizeof it->id);
    it->version = p->row.version;
    it->deleted = p->deleted != 0;
    r->last_seq = p->seq;
    if (digest_fields(r->ctx, field, len, 4, it->md) != 0)
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

static int read_event(void *arg, const struct payment_event *ev)
{
    struct reading *r = arg;
    struct item *it = items_add(&r->sum->events);
    if (!it)
        return r->failed = 1;
    char version[24];
    snprintf(version, sizeof version, "%" PRId64, ev->version);
    const char *type = event_type_name(ev->type);
    const char *field[] = {ev->payment_id, version, type, ev->doc ? ev->doc : ""};
    const size_t len[] = {strlen(ev->payment_id), strlen(version), strlen(type),
                          ev->doc ? ev->doc_len : 0};
    memcpy(it->org, ev->organisation_id, sizeof it->org);
    memcpy(it->id, ev->payment_id, sizeof it->id);
    it->version = ev->version;
    it->deleted = 0;
    r->last_pos = ev->pos;
    if (digest_fields(r->ctx, field, len, 4, it->md) != 0)
        return r->failed = 1;
    return 0;
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
    char status[16];
    snprintf(status, sizeof status, "%d", rec->status);
    const char *field[] = {rec->scope, rec->key, rec->fingerprint, status,
                           rec->location ? rec->location : "", rec->etag ? rec->etag : "",
                           rec->body ? rec->body : ""};
    const size_t len[] = {strlen(rec->scope),
                          strlen(rec->key),
                          strlen(rec->fingerprint),
                          strlen(status),
                          rec->location ? strlen(rec->location) : 0,
                          rec->etag ? strlen(rec->etag) : 0,
                          rec->body ? rec->body_len : 0};
    unsigned char md[MD_LEN];
    if (digest_fields(r->ctx, field, len, 7, md) != 0 || !EVP_DigestUpdate(ir->all, md, MD_LEN))
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
