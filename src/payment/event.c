/* event: the JSON form of a stored event.  The payment document is stored
 * serialized and is spliced in as it is: it was valid JSON when written. */
#include "payment/event.h"

#include <assert.h>
#include <string.h>

#include "core/clock.h"

static const struct {
    enum payment_event_type type;
    const char *name;
} event_types[] = {
    {PAYMENT_EVENT_CREATED, "payment.created"},
    {PAYMENT_EVENT_UPDATED, "payment.updated"},
    {PAYMENT_EVENT_DELETED, "payment.deleted"},
};

#define N_EVENT_TYPES (sizeof event_types / sizeof event_types[0])

const char *payment_event_type_name(enum payment_event_type t)
{
    for (size_t i = 0; i < N_EVENT_TYPES; i++)
        if (event_types[i].type == t)
            return event_types[i].name;
    assert(!"an event type the store cannot have");
    return "payment.unknown";
}

int payment_event_type_parse(const char *name, size_t len, enum payment_event_type *out)
{
    for (size_t i = 0; i < N_EVENT_TYPES; i++) {
        if (strlen(event_types[i].name) == len && memcmp(event_types[i].name, name, len) == 0) {
            *out = event_types[i].type;
            return 0;
        }
    }
    return -1;
}

/* "key":"escaped value" or "key":null, with a leading comma. */
static void render_string_member(struct buf *b, const char *key, const char *value)
{
    buf_printf(b, ",\"%s\":", key);
    if (!value) {
        buf_puts(b, "null");
        return;
    }
    buf_puts(b, "\"");
    buf_json_escape(b, value, strlen(value));
    buf_puts(b, "\"");
}

int payment_event_render(const struct payment_event *ev, struct buf *b)
{
    assert(ev->doc && ev->doc_len > 0); /* every event holds the payment */
    char at[CLOCK_TIMESTAMP_LEN + 1];
    clock_format_ms(ev->occurred_ms, at);
    buf_printf(b,
               "{\"type\":\"events\",\"id\":\"%s\",\"event_type\":\"%s\","
               "\"organisation_id\":\"%s\",\"payment_id\":\"%s\",\"version\":%lld,"
               "\"occurred_at\":\"%s\",\"position\":%lld,\"actor\":",
               ev->id, payment_event_type_name(ev->type), ev->organisation_id, ev->payment_id,
               (long long)ev->version, at, (long long)ev->pos);
    if (ev->api_key_id) {
        buf_puts(b, "{\"api_key_id\":\"");
        buf_json_escape(b, ev->api_key_id, strlen(ev->api_key_id));
        buf_puts(b, "\"}");
    } else {
        buf_puts(b, "null");
    }
    render_string_member(b, "request_id", ev->request_id);
    render_string_member(b, "idempotency_key", ev->idempotency_key);
    render_string_member(b, "operation_id", ev->operation_id);
    buf_puts(b, ",\"data\":{\"payment\":");
    buf_append(b, ev->doc, ev->doc_len);
    if (ev->type == PAYMENT_EVENT_UPDATED) {
        buf_puts(b, ",\"changes\":");
        buf_puts(b, ev->changes ? ev->changes : "[]");
    }
    buf_puts(b, "}}");
    return buf_failed(b) ? -1 : 0;
}
