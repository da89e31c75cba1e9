/* migrate: `paymentd migrate --from URI --to URI`, the copy of one store
 * into another (any direction between the embedded store, MongoDB and
 * PostgreSQL) and its verification.
 *
 * The copy follows store.h's "copying one store into another": payments
 * (tombstones included) in sequence pages, then idempotency records, then
 * events in position pages, each page one payment_store_import, which skips
 * what the target holds.  A copy run again after an interruption therefore
 * finishes it, and a finished copy run again adds nothing.
 *
 * The verification reads both stores whole with the same export calls and
 * compares, per organisation: the payments, the tombstones and the events
 * counted, and two checksums (migrate_verify.c says how they are made);
 * plus the idempotency records counted and checksummed.  It holds about 120
 * bytes per payment and per event of one store in memory at a time (then a
 * summary per organisation).
 *
 * Single-threaded; nothing here is shared between calls. */
#ifndef APP_MIGRATE_H
#define APP_MIGRATE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "payment/store.h"

#define MIGRATE_PAGE_DEFAULT 500 /* items per page read and imported */

/* What a copy read from the source and added to the target. */
struct migrate_copied {
    size_t payments_read, payments_added;
    size_t idem_read, idem_added;
    size_t events_read, events_added;
};

/* What a verification found: the source's totals, and how many
 * organisations differ (0 with equal idempotency records: verified). */
struct migrate_verified {
    size_t payments;   /* payments, tombstones included */
    size_t tombstones;
    size_t events;
    size_t idem;       /* idempotency records */
    size_t orgs;       /* organisations holding payments or events */
    size_t orgs_differing; /* organisations whose counts or checksums differ */
    int idem_differs;  /* the idempotency records differ */
};

/* Copies from into to, page items at a time (1..PAYMENT_EXPORT_PAGE_MAX),
 * writing progress lines (counts, rate) to progress (NULL: none).  Returns
 * 0 with *out filled, or a store error with a one-line reason in errbuf. */
int migrate_copy(payment_store *from, payment_store *to, uint32_t page, FILE *progress,
                 struct migrate_copied *out, char *errbuf, size_t errlen);

/* Verifies that to holds what from holds (see above), writing one line per
 * organisation that differs (and one when the idempotency records do) to
 * report (NULL: none).  Returns 0 with *out filled (out->orgs_differing
 * and out->idem_differs say whether the copy is verified), or a store
 * error with a reason in errbuf (a store that cannot be read, or memory). */
int migrate_verify(payment_store *from, payment_store *to, uint32_t page, FILE *report,
                   struct migrate_verified *out, char *errbuf, size_t errlen);

/* Whether two store URIs name the same store: the same text (the scheme's
 * case and postgres/postgresql aside), or two sqlite: paths of one file. */
int migrate_same_store(const char *a, const char *b);

/* `paymentd migrate`: opens both stores (the source must exist: it is
 * opened PAYMENT_STORE_EXISTING, so nothing is created in a URI naming no
 * store), refuses one store on both sides,
 * copies, verifies, and writes the outcome to stderr (URIs without their
 * passwords).  Returns the exit status: 0 verified, 1 a failure or a
 * difference, 2 a bad argument. */
int migrate_main(const char *from_uri, const char *to_uri, uint32_t page);

#endif
