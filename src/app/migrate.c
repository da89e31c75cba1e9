/* migrate: the copy of one store into another, page by page, and
 * `paymentd migrate` itself (migrate.h).  The verification is in
 * migrate_verify.c.
 *
 * A page is read from the source into memory the copy owns (an export's
 * pointers are valid only during its callback), then written into the
 * target with one payment_store_import.  Pages go in the source's order,
 * so that the target's sequence numbers and positions follow it; the next
 * page starts after the last item of the one before, whatever the import
 * skipped. */
#include "app/migrate.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "app/config.h"
#include "core/clock.h"

#define PROGRESS_EVERY_US 1000000 /* a progress line a second at most, besides the first */
#define STRINGS_PER_ITEM 6        /* heap strings one payment, record or event holds at most */

/* One page read from the source, with the copies of every string its items
 * point at. */
struct page {
    uint32_t cap;                      /* items a page holds at most */
    struct payment_export *payments;   /* cap of them; n_payments used */
    size_t n_payments;
    struct payment_idem_export *idem;  /* cap of them; n_idem used */
    size_t n_idem;
    struct payment_event *events;      /* cap of them; n_events used */
    size_t n_events;
    char **owned;                      /* the strings the items point at, owned */
    size_t n_owned;                    /* at most cap * STRINGS_PER_ITEM */
    int failed;                        /* a copy ran out of memory */
};

/* A copy's state while it runs. */
struct copy {
    payment_store *from, *to;          /* borrowed */
    struct page page;                  /* the page in hand */
    FILE *progress;                    /* where progress lines go, or NULL */
    const char *phase;                 /* "payments", "idempotency records", "events" */
    size_t read, added;                /* the phase's counts */
    int64_t phase_start_us;            /* clock_mono_us when the phase began */
    int64_t shown_us;                  /* when the last progress line was written, or 0 */
    char *errbuf;
    size_t errlen;
};

static int page_init(struct page *p, uint32_t cap)
{
    memset(p, 0, sizeof *p);
    p->cap = cap;
    p->payments = calloc(cap, sizeof *p->payments);
    p->idem = calloc(cap, sizeof *p->idem);
    p->events = calloc(cap, sizeof *p->events);
    p->owned = calloc((size_t)cap * STRINGS_PER_ITEM, sizeof *p->owned);
    return p->payments && p->idem && p->events && p->owned ? 0 : -1;
}

/* Frees the strings of the items in hand and forgets the items. */
static void page_clear(struct page *p)
{
    for (size_t i = 0; i < p->n_owned; i++)
        free(p->owned[i]);
    p->n_owned = 0;
    p->n_payments = p->n_idem = p->n_events = 0;
    p->failed = 0;
}

static void page_free(struct page *p)
{
    if (p->owned)
        page_clear(p);
    free(p->payments);
    free(p->idem);
    free(p->events);
    free(p->owned);
}

/* A copy of len bytes of s, NUL-terminated, owned by the page; NULL for
 * NULL, or when memory runs out (p->failed set). */
static const char *page_dup(struct page *p, const char *s, size_t len)
{
    if (!s)
        return NULL;
    assert(p->n_owned < (size_t)p->cap * STRINGS_PER_ITEM);
    char *c = malloc(len + 1);
    if (!c) {
        p->failed = 1;
        return NULL;
    }
    memcpy(c, s, len);
    c[len] = '\0';
    p->owned[p->n_owned++] = c;
    return c;
}

static const char *page_dupz(struct page *p, const char *s)
{
    return s ? page_dup(p, s, strlen(s)) : NULL;
}

static int collect_payment(void *arg, const struct payment_export *e)
{
    struct page *p = arg;
    assert(p->n_payments < p->cap);
    struct payment_export *c = &p->payments[p->n_payments++];
    *c = *e;
    c->row.currency = page_dupz(p, e->row.currency);
    c->row.payment_scheme = page_dupz(p, e->row.payment_scheme);
    c->row.payment_type = page_dupz(p, e->row.payment_type);
    c->row.reference = page_dupz(p, e->row.reference);
    c->row.end_to_end_reference = page_dupz(p, e->row.end_to_end_reference);
    c->row.doc = page_dup(p, e->row.doc, e->row.doc_len);
    return p->failed;
}

static int collect_idem(void *arg, const struct payment_idem_export *r)
{
    struct page *p = arg;
    assert(p->n_idem < p->cap);
    struct payment_idem_export *c = &p->idem[p->n_idem++];
    *c = *r;
    c->scope = page_dupz(p, r->scope);
    c->key = page_dupz(p, r->key);
    c->fingerprint = page_dupz(p, r->fingerprint);
    c->location = page_dupz(p, r->location);
    c->etag = page_dupz(p, r->etag);
    c->body = page_dup(p, r->body, r->body_len);
    return p->failed;
}

static int collect_event(void *arg, const struct payment_event *ev)
{
    struct page *p = arg;
    assert(p->n_events < p->cap);
    struct payment_event *c = &p->events[p->n_events++];
    *c = *ev;
    c->api_key_id = page_dupz(p, ev->api_key_id);
    c->request_id = page_dupz(p, ev->request_id);
    c->idempotency_key = page_dupz(p, ev->idempotency_key);
    c->operation_id = page_dupz(p, ev->operation_id);
    c->changes = page_dupz(p, ev->changes);
    c->doc = page_dup(p, ev->doc, ev->doc_len);
    return p->failed;
}

/* The reason an export or import failed, into the copy's errbuf; returns a
 * store error (EINTERNAL for a callback's stop, which is memory). */
static int copy_failed(struct copy *c, const char *what, int rc)
{
    if (rc > 0 || c->page.failed) {
        snprintf(c->errbuf, c->errlen, "%s: out of memory", c->phase);
        return PAYMENT_STORE_EINTERNAL;
    }
    snprintf(c->errbuf, c->errlen, "%s %s: %s", what, c->phase, payment_store_strerror(rc));
    return rc;
}

static void phase_begin(struct copy *c, const char *phase)
{
    c->phase = phase;
    c->read = c->added = 0;
    c->phase_start_us = clock_mono_us();
    c->shown_us = 0;
}

/* Writes a progress line after the first page, then once a second at most,
 * and always at the phase's end (last). */
static void phase_progress(struct copy *c, int last)
{
    if (!c->progress)
        return;
    int64_t now = clock_mono_us();
    if (!last && c->shown_us && now - c->shown_us < PROGRESS_EVERY_US)
        return;
    c->shown_us = now;
    double secs = (double)(now - c->phase_start_us) / 1e6;
    double rate = secs > 0 ? (double)c->read / secs : 0;
    fprintf(c->progress, "paymentd migrate: %s: %zu read, %zu added (%.0f/s)%s\n", c->phase,
            c->read, c->added, rate, last ? ", done" : "");
    fflush(c->progress);
}

/* Writes the page in hand into the target and counts it. */
static int page_import(struct copy *c)
{
    struct page *p = &c->page;
    struct payment_import im = {p->payments, p->n_payments, p->idem,
                                p->n_idem,   p->events,     p->n_events};
    struct payment_import_result res;
    int rc = payment_store_import(c->to, &im, &res);
    if (rc != PAYMENT_STORE_OK)
        return copy_failed(c, "writing", rc);
    assert(res.payments <= p->n_payments && res.idem <= p->n_idem && res.events <= p->n_events);
    c->read += p->n_payments + p->n_idem + p->n_events;
    c->added += res.payments + res.idem + res.events;
    phase_progress(c, 0);
    return PAYMENT_STORE_OK;
}

static int copy_payments(struct copy *c)
{
    phase_begin(c, "payments");
    int64_t after_seq = 0;
    for (int more = 1; more;) {
        page_clear(&c->page);
        int rc = payment_store_export_payments(c->from, after_seq, c->page.cap, collect_payment,
                                               &c->page, &more);
        if (rc != PAYMENT_STORE_OK)
            return copy_failed(c, "reading", rc);
        if (c->page.n_payments == 0)
            break;
        int64_t last = c->page.payments[c->page.n_payments - 1].seq;
        assert(last > after_seq);
        after_seq = last;
        if ((rc = page_import(c)) != PAYMENT_STORE_OK)
            return rc;
    }
    phase_progress(c, 1);
    return PAYMENT_STORE_OK;
}

static int copy_idem(struct copy *c)
{
    phase_begin(c, "idempotency records");
    char *after_scope = NULL, *after_key = NULL; /* the last record copied, owned */
    int rc = PAYMENT_STORE_OK;
    for (int more = 1; more && rc == PAYMENT_STORE_OK;) {
        page_clear(&c->page);
        rc = payment_store_export_idem(c->from, after_scope, after_key, c->page.cap,
                                       collect_idem, &c->page, &more);
        if (rc != PAYMENT_STORE_OK) {
            rc = copy_failed(c, "reading", rc);
            break;
        }
        if (c->page.n_idem == 0)
            break;
        const struct payment_idem_export *last = &c->page.idem[c->page.n_idem - 1];
        free(after_scope);
        free(after_key);
        after_scope = strdup(last->scope);
        after_key = strdup(last->key);
        if (!after_scope || !after_key) {
            c->page.failed = 1;
            rc = copy_failed(c, "reading", PAYMENT_STORE_EINTERNAL);
            break;
        }
        rc = page_import(c);
    }
    free(after_scope);
    free(after_key);
    if (rc == PAYMENT_STORE_OK)
        phase_progress(c, 1);
    return rc;
}

static int copy_events(struct copy *c)
{
    phase_begin(c, "events");
    int64_t after_pos = 0;
    for (int more = 1; more;) {
        page_clear(&c->page);
        int rc = payment_store_export_events(c->from, after_pos, c->page.cap, collect_event,
                                             &c->page, &more);
        if (rc != PAYMENT_STORE_OK)
            return copy_failed(c, "reading", rc);
        if (c->page.n_events == 0)
            break;
        int64_t last = c->page.events[c->page.n_events - 1].pos;
        assert(last > after_pos);
        after_pos = last;
        if ((rc = page_import(c)) != PAYMENT_STORE_OK)
            return rc;
    }
    phase_progress(c, 1);
    return PAYMENT_STORE_OK;
}

int migrate_copy(payment_store *from, payment_store *to, uint32_t page, FILE *progress,
                 struct migrate_copied *out, char *errbuf, size_t errlen)
{
    assert(from && to && from != to && out && errbuf && errlen > 0);
    assert(page >= 1 && page <= PAYMENT_EXPORT_PAGE_MAX);
    memset(out, 0, sizeof *out);
    errbuf[0] = '\0';
    struct copy c = {.from = from, .to = to, .progress = progress, .errbuf = errbuf,
                     .errlen = errlen};
    if (page_init(&c.page, page) != 0) {
        page_free(&c.page);
        snprintf(errbuf, errlen, "out of memory");
        return PAYMENT_STORE_EINTERNAL;
    }
    int rc = copy_payments(&c);
    out->payments_read = c.read;
    out->payments_added = c.added;
    if (rc == PAYMENT_STORE_OK) {
        rc = copy_idem(&c);
        out->idem_read = c.read;
        out->idem_added = c.added;
    }
    if (rc == PAYMENT_STORE_OK) {
        rc = copy_events(&c);
        out->events_read = c.read;
        out->events_added = c.added;
    }
    page_free(&c.page);
    return rc;
}

/* ---- the same store on both sides --------------------------------------- */

#define SQLITE_PREFIX "sqlite:"

/* uri without its scheme when it is a PostgreSQL one (either spelling), in
 * *rest; 1 when it is. */
static int pg_rest(const char *uri, const char **rest)
{
    if (strncasecmp(uri, "postgres://", 11) == 0)
        *rest = uri + 11;
    else if (strncasecmp(uri, "postgresql://", 13) == 0)
        *rest = uri + 13;
    else
        return 0;
    return 1;
}

int migrate_same_store(const char *a, const char *b)
{
    assert(a && b);
    const char *ra, *rb;
    if (pg_rest(a, &ra) && pg_rest(b, &rb))
        return strcmp(ra, rb) == 0;
    size_t n = strlen(SQLITE_PREFIX);
    if (strncasecmp(a, SQLITE_PREFIX, n) == 0 && strncasecmp(b, SQLITE_PREFIX, n) == 0) {
        struct stat sa, sb;
        if (stat(a + n, &sa) == 0 && stat(b + n, &sb) == 0)
            return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
        return strcmp(a + n, b + n) == 0;
    }
    const char *sep_a = strstr(a, "://"), *sep_b = strstr(b, "://");
    if (!sep_a || !sep_b || sep_a - a != sep_b - b)
        return 0;
    return strncasecmp(a, b, (size_t)(sep_a - a)) == 0 && strcmp(sep_a, sep_b) == 0;
}

/* ---- paymentd migrate ---------------------------------------------------- */

/* What a MongoDB store adds to the reason of an open that found MongoDB not
 * answering (store_mongo.c): the server's flag that starts it anyway, which
 * migrate has not (a copy needs its stores answering). */
#define SERVER_WAIT_HINT " (--wait-for-store"

/* Opens the store uri names (shown: its redacted form) into *out; a source
 * (must_exist) is opened PAYMENT_STORE_EXISTING, so that a URI naming no
 * store is refused with nothing created in it rather than copied as an
 * empty one.  Returns 0, or 1 with the reason on stderr. */
static int migrate_open(const char *uri, const char *shown, const char *side, int must_exist,
                        payment_store **out)
{
    char err[512] = "";
    unsigned flags = must_exist ? PAYMENT_STORE_EXISTING : 0;
    int rc = payment_store_open(uri, flags, out, err, sizeof err);
    if (rc == PAYMENT_STORE_OK)
        return 0;
    char *hint = strstr(err, SERVER_WAIT_HINT);
    if (hint)
        *hint = '\0';
    fprintf(stderr, "paymentd migrate: cannot open %s %s: %s%s\n", side, shown, err,
            rc == PAYMENT_STORE_EUNAVAILABLE
                ? " (the store does not answer: start it or correct the URI, then run migrate "
                  "again)"
                : "");
    return 1;
}

int migrate_main(const char *from_uri, const char *to_uri, uint32_t page)
{
    assert(from_uri && to_uri && page >= 1 && page <= PAYMENT_EXPORT_PAGE_MAX);
    char from_shown[CONFIG_URI_MAX + 256], to_shown[CONFIG_URI_MAX + 256], err[512];
    config_redact_uri(from_uri, from_shown, sizeof from_shown);
    config_redact_uri(to_uri, to_shown, sizeof to_shown);
    if (migrate_same_store(from_uri, to_uri)) {
        fprintf(stderr, "paymentd migrate: --from and --to name the same store (%s)\n",
                from_shown);
        return 2;
    }
    payment_store *from = NULL, *to = NULL;
    int status = 1;
    if (migrate_open(from_uri, from_shown, "--from", 1, &from) != 0 ||
        migrate_open(to_uri, to_shown, "--to", 0, &to) != 0)
        goto out;
    fprintf(stderr, "paymentd migrate: copying %s to %s, %u a page\n", from_shown, to_shown,
            page);
    struct migrate_copied copied;
    if (migrate_copy(from, to, page, stderr, &copied, err, sizeof err) != PAYMENT_STORE_OK) {
        fprintf(stderr, "paymentd migrate: %s (run it again to resume)\n", err);
        goto out;
    }
    fprintf(stderr, "paymentd migrate: copied; verifying\n");
    struct migrate_verified v;
    if (migrate_verify(from, to, page, stderr, &v, err, sizeof err) != PAYMENT_STORE_OK) {
        fprintf(stderr, "paymentd migrate: verifying: %s\n", err);
        goto out;
    }
    if (v.orgs_differing || v.idem_differs) {
        fprintf(stderr, "paymentd migrate: NOT verified: %zu of %zu organisations differ%s\n",
                v.orgs_differing, v.orgs, v.idem_differs ? ", idempotency records differ" : "");
        goto out;
    }
    fprintf(stderr,
            "paymentd migrate: done: %zu payments (%zu tombstones), %zu events, %zu idempotency "
            "records in %zu organisations verified\n",
            v.payments, v.tombstones, v.events, v.idem, v.orgs);
    status = 0;
out:
    payment_store_close(to);
    payment_store_close(from);
    return status;
}
