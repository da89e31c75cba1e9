/* test_event: the JSON form of a stored event (payment/event.c): every
 * rendering parses as JSON with the documented members, strings are
 * escaped, absent fields are null, the payment document is spliced in as
 * stored, and changes appear on updates only. */
#include "payment/event.h"

#include <jansson.h>
#include <stdlib.h>

#include "test.h"

static const char doc_text[] =
    "{\"type\":\"payments\",\"id\":\"4ee3a8d8-ca7b-4290-a52c-dd5b6165ec43\",\"version\":2,"
    "\"organisation_id\":\"743d5b63-8e6f-432e-a8fa-c5d8d2ee5fcb\","
    "\"attributes\":{\"amount\":\"10.00\",\"currency\":\"EUR\"}}";

/* An event with every optional field absent. */
static struct payment_event bare_event(enum payment_event_type type)
{
    struct payment_event ev = {
        .pos = 42,
        .id = "01890a5d-ac96-774b-bcce-b302099a8057",
        .type = type,
        .organisation_id = "743d5b63-8e6f-432e-a8fa-c5d8d2ee5fcb",
        .payment_id = "4ee3a8d8-ca7b-4290-a52c-dd5b6165ec43",
        .version = 2,
        .occurred_ms = 1767225600123, /* 2026-01-01T00:00:00.123Z */
        .doc = doc_text,
        .doc_len = sizeof doc_text - 1,
    };
    return ev;
}

/* Renders ev and parses the result: the object, or NULL (reported). */
static json_t *render(const struct payment_event *ev)
{
    struct buf b = BUF_INIT;
    CHECK_INT(payment_event_render(ev, &b), 0);
    json_error_t err;
    json_t *v = b.data ? json_loads(b.data, 0, &err) : NULL;
    if (!v)
        fprintf(stderr, "  not JSON: %s (%s)\n", b.data ? b.data : "(empty)",
                b.data ? err.text : "");
    CHECK(json_is_object(v));
    buf_free(&b);
    return v;
}

static const char *str(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static void test_created_with_nothing_optional(void)
{
    struct payment_event ev = bare_event(PAYMENT_EVENT_CREATED);
    json_t *v = render(&ev);
    if (!v)
        return;
    CHECK_STR(str(v, "type"), "events");
    CHECK_STR(str(v, "id"), "01890a5d-ac96-774b-bcce-b302099a8057");
    CHECK_STR(str(v, "event_type"), "payment.created");
    CHECK_STR(str(v, "organisation_id"), "743d5b63-8e6f-432e-a8fa-c5d8d2ee5fcb");
    CHECK_STR(str(v, "payment_id"), "4ee3a8d8-ca7b-4290-a52c-dd5b6165ec43");
    CHECK_INT(json_integer_value(json_object_get(v, "version")), 2);
    CHECK_INT(json_integer_value(json_object_get(v, "position")), 42);
    CHECK_STR(str(v, "occurred_at"), "2026-01-01T00:00:00.123Z");
    /* Absent fields are present, as null. */
    static const char *const nulls[] = {"actor", "request_id", "idempotency_key",
                                        "operation_id"};
    for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++) {
        json_t *m = json_object_get(v, nulls[i]);
        if (!m || !json_is_null(m))
            fprintf(stderr, "  %s is not null\n", nulls[i]);
        CHECK(m && json_is_null(m));
    }
    json_t *data = json_object_get(v, "data");
    CHECK(json_is_object(data));
    CHECK(json_object_get(data, "changes") == NULL); /* not an update */
    json_t *want = json_loads(doc_text, 0, NULL);
    CHECK(want && json_equal(json_object_get(data, "payment"), want));
    json_decref(want);
    json_decref(v);
}

static void test_every_field_escaped(void)
{
    struct payment_event ev = bare_event(PAYMENT_EVENT_CREATED);
    ev.api_key_id = "key\"with\\quote";
    ev.request_id = "line\nbreak\ttab\x01";
    ev.idempotency_key = "caf\xc3\xa9 \"k\"";
    ev.operation_id = "op</script>";
    json_t *v = render(&ev);
    if (!v)
        return;
    CHECK_STR(str(json_object_get(v, "actor"), "api_key_id"), "key\"with\\quote");
    CHECK_STR(str(v, "request_id"), "line\nbreak\ttab\x01");
    CHECK_STR(str(v, "idempotency_key"), "caf\xc3\xa9 \"k\"");
    CHECK_STR(str(v, "operation_id"), "op</script>");
    json_decref(v);
}

static void test_invalid_utf8_still_json(void)
{
    struct payment_event ev = bare_event(PAYMENT_EVENT_DELETED);
    ev.request_id = "bad \xff\xfe byte";
    json_t *v = render(&ev);
    if (!v)
        return;
    CHECK_STR(str(v, "request_id"), "bad \xef\xbf\xbd\xef\xbf\xbd byte");
    json_decref(v);
}

static void test_changes_on_updates_only(void)
{
    struct payment_event ev = bare_event(PAYMENT_EVENT_UPDATED);
    ev.changes = "[\"attributes.amount\",\"attributes.reference\"]";
    json_t *v = render(&ev);
    if (v) {
        CHECK_STR(str(v, "event_type"), "payment.updated");
        json_t *ch = json_object_get(json_object_get(v, "data"), "changes");
        CHECK(json_is_array(ch) && json_array_size(ch) == 2);
        CHECK_STR(json_string_value(json_array_get(ch, 0)), "attributes.amount");
        CHECK_STR(json_string_value(json_array_get(ch, 1)), "attributes.reference");
        json_decref(v);
    }
    /* An update that recorded no paths still has the member, empty. */
    ev.changes = NULL;
    if ((v = render(&ev))) {
        json_t *ch = json_object_get(json_object_get(v, "data"), "changes");
        CHECK(json_is_array(ch) && json_array_size(ch) == 0);
        json_decref(v);
    }
    /* A delete carries none, whatever it is given. */
    ev.type = PAYMENT_EVENT_DELETED;
    ev.changes = "[\"attributes.amount\"]";
    if ((v = render(&ev))) {
        CHECK_STR(str(v, "event_type"), "payment.deleted");
        CHECK(json_object_get(json_object_get(v, "data"), "changes") == NULL);
        json_decref(v);
    }
}

static void test_appends_to_what_is_there(void)
{
    struct payment_event ev = bare_event(PAYMENT_EVENT_CREATED);
    struct buf b = BUF_INIT;
    buf_puts(&b, "[");
    CHECK_INT(payment_event_render(&ev, &b), 0);
    buf_puts(&b, ",");
    CHECK_INT(payment_event_render(&ev, &b), 0);
    buf_puts(&b, "]");
    json_t *v = json_loads(b.data, 0, NULL);
    CHECK(json_is_array(v) && json_array_size(v) == 2);
    json_decref(v);
    buf_free(&b);
}

static void test_type_names(void)
{
    static const struct {
        enum payment_event_type type;
        const char *name;
    } types[] = {
        {PAYMENT_EVENT_CREATED, "payment.created"},
        {PAYMENT_EVENT_UPDATED, "payment.updated"},
        {PAYMENT_EVENT_DELETED, "payment.deleted"},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        enum payment_event_type t = 0;
        CHECK_STR(payment_event_type_name(types[i].type), types[i].name);
        CHECK_INT(payment_event_type_parse(types[i].name, strlen(types[i].name), &t), 0);
        CHECK_INT(t, types[i].type);
    }
    enum payment_event_type t = 0;
    /* The length given is the name: a prefix or a longer text is none. */
    CHECK_INT(payment_event_type_parse("payment.created,payment.updated", 15, &t), 0);
    CHECK_INT(t, PAYMENT_EVENT_CREATED);
    CHECK_INT(payment_event_type_parse("payment.create", 14, &t), -1);
    CHECK_INT(payment_event_type_parse("payment.createdx", 16, &t), -1);
    CHECK_INT(payment_event_type_parse("PAYMENT.CREATED", 15, &t), -1);
    CHECK_INT(payment_event_type_parse("", 0, &t), -1);
}

TEST_MAIN(TEST(test_created_with_nothing_optional), TEST(test_every_field_escaped),
          TEST(test_invalid_utf8_still_json), TEST(test_changes_on_updates_only),
          TEST(test_appends_to_what_is_there), TEST(test_type_names))
