/* event: the JSON form of a stored event (store.h, struct payment_event),
 * the one the API's history and feed routes answer with and the broker
 * relay publishes, so that a consumer reads the same bytes from either:
 *
 *   {"type": "events", "id", "event_type", "organisation_id", "payment_id",
 *    "version", "occurred_at", "actor": {"api_key_id"} | null, "request_id",
 *    "idempotency_key", "operation_id", "position",
 *    "data": {"payment": {...}, "changes": [...] (updates only)}}
 *
 * Absent fields are JSON null.  Pure functions: any thread. */
#ifndef PAYMENT_EVENT_H
#define PAYMENT_EVENT_H

#include <stddef.h>

#include "core/buf.h"
#include "payment/store.h"

/* "payment.created", "payment.updated" or "payment.deleted". */
const char *payment_event_type_name(enum payment_event_type t);

/* The type named name (len bytes): 0 and *out, or -1 when it names none. */
int payment_event_type_parse(const char *name, size_t len, enum payment_event_type *out);

/* Appends the event's JSON object to b.  Returns 0, or -1 when b ran out
 * of memory (b is then failed, see buf.h). */
int payment_event_render(const struct payment_event *ev, struct buf *b);

#endif
