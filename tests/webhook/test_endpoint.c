/* The webhook endpoint's document: what the deliverer reads from it
 * (webhook/endpoint.h), and how the API makes, patches and rotates it
 * (webhook/api_internal.h). */
#include "webhook/endpoint.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "payment/store.h"
#include "test.h"
#include "webhook/api_internal.h"

#define T0 1700000000000LL /* a creation time, ms */

/* A new endpoint's document text for url and types (a JSON array), made
 * as the API makes it, with its secret into secret.  The caller frees. */
static char *new_doc(const char *url, const char *types, char secret[WEBHOOK_SECRET_MAX + 1])
{
    json_t *t = json_loads(types, 0, NULL);
    struct wh_fields f = {.given = WH_F_URL | WH_F_TYPES, .url = url, .event_types = t};
    CHECK_INT(wh_secret_new(secret), 0);
    json_t *doc = wh_doc_new(&f, secret, T0);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    CHECK(text != NULL);
    json_decref(doc);
    json_decref(t);
    return text;
}

static void test_secret_format(void)
{
    char a[WEBHOOK_SECRET_MAX + 1], b[WEBHOOK_SECRET_MAX + 1];
    CHECK_INT(wh_secret_new(a), 0);
    CHECK_INT(wh_secret_new(b), 0);
    CHECK(strncmp(a, "whsec_", 6) == 0);
    CHECK(strcmp(a, b) != 0);
    /* base64 of WEBHOOK_SECRET_BYTES bytes: 44 characters for 32. */
    CHECK_INT(strlen(a), 6 + 4 * ((WEBHOOK_SECRET_BYTES + 2) / 3));
    CHECK(strlen(a) <= WEBHOOK_SECRET_MAX);
    unsigned char key[64];
    int n = EVP_DecodeBlock(key, (const unsigned char *)a + 6, (int)strlen(a) - 6);
    /* EVP_DecodeBlock counts the padding's bytes too. */
    int pad = (int)(a[strlen(a) - 1] == '=') + (int)(a[strlen(a) - 2] == '=');
    CHECK_INT(n - pad, WEBHOOK_SECRET_BYTES);
    CHECK(WEBHOOK_SECRET_BYTES >= 24 && WEBHOOK_SECRET_BYTES <= 64);
}

static void test_new_document(void)
{
    char secret[WEBHOOK_SECRET_MAX + 1];
    char *text = new_doc("https://example.com/h", "[\"payment.created\"]", secret);
    json_t *doc = json_loads(text, 0, NULL);
    CHECK_STR(json_string_value(json_object_get(doc, "url")), "https://example.com/h");
    CHECK_STR(json_string_value(json_object_get(doc, "status")), "enabled");
    CHECK(json_is_null(json_object_get(doc, "disabled_reason")));
    CHECK(json_is_null(json_object_get(doc, "description")));
    json_t *secrets = json_object_get(doc, "secrets");
    CHECK_INT(json_array_size(secrets), 1);
    CHECK_STR(json_string_value(json_object_get(json_array_get(secrets, 0), "secret")), secret);
    CHECK_INT(json_integer_value(json_object_get(json_array_get(secrets, 0), "expires_ms")), 0);
    CHECK_INT(json_integer_value(json_object_get(json_array_get(secrets, 0), "created_ms")), T0);
    json_decref(doc);

    struct webhook_target t;
    CHECK_INT(webhook_endpoint_target(text, strlen(text), T0 + 1000, &t), 0);
    CHECK_STR(t.url, "https://example.com/h");
    CHECK_INT(t.n_secrets, 1);
    CHECK_STR(t.secrets[0], secret);
    webhook_target_free(&t);
    CHECK(t.url == NULL);
    CHECK_INT(t.n_secrets, 0);
    free(text);
}

static void test_rotation(void)
{
    char first[WEBHOOK_SECRET_MAX + 1], second[WEBHOOK_SECRET_MAX + 1],
        third[WEBHOOK_SECRET_MAX + 1];
    char *text = new_doc("https://example.com/h", "[\"*\"]", first);
    json_t *doc = json_loads(text, 0, NULL);
    free(text);
    int64_t at = T0 + 60000;
    CHECK_INT(wh_secret_new(second), 0);
    CHECK_INT(wh_doc_rotate(doc, second, at), 0);
    text = json_dumps(doc, JSON_COMPACT);
    struct webhook_target t;
    /* During the overlap both sign, the new one first. */
    CHECK_INT(webhook_endpoint_target(text, strlen(text), at, &t), 0);
    CHECK_INT(t.n_secrets, 2);
    CHECK_STR(t.secrets[0], second);
    CHECK_STR(t.secrets[1], first);
    webhook_target_free(&t);
    CHECK_INT(webhook_endpoint_target(text, strlen(text), at + WEBHOOK_ROTATION_OVERLAP_MS - 1, &t),
              0);
    CHECK_INT(t.n_secrets, 2);
    webhook_target_free(&t);
    /* Once it is over, only the new one. */
    CHECK_INT(webhook_endpoint_target(text, strlen(text), at + WEBHOOK_ROTATION_OVERLAP_MS, &t),
              0);
    CHECK_INT(t.n_secrets, 1);
    CHECK_STR(t.secrets[0], second);
    webhook_target_free(&t);
    free(text);
    /* A second rotation keeps two at most: the first secret goes. */
    CHECK_INT(wh_secret_new(third), 0);
    CHECK_INT(wh_doc_rotate(doc, third, at + 1000), 0);
    CHECK_INT(json_array_size(json_object_get(doc, "secrets")), 2);
    text = json_dumps(doc, JSON_COMPACT);
    CHECK(strstr(text, first) == NULL);
    CHECK_INT(webhook_endpoint_target(text, strlen(text), at + 2000, &t), 0);
    CHECK_INT(t.n_secrets, 2);
    CHECK_STR(t.secrets[0], third);
    CHECK_STR(t.secrets[1], second);
    webhook_target_free(&t);
    free(text);
    json_decref(doc);
}

static void test_disabled(void)
{
    char secret[WEBHOOK_SECRET_MAX + 1];
    char *text = new_doc("https://example.com/h", "[\"payment.updated\"]", secret);
    size_t len = 0;
    char *off = webhook_endpoint_disabled(text, strlen(text), "the receiver answered 410 Gone",
                                          &len);
    CHECK(off != NULL);
    if (!off) {
        free(text);
        return;
    }
    CHECK_INT(len, strlen(off));
    json_t *doc = json_loads(off, 0, NULL);
    CHECK_STR(json_string_value(json_object_get(doc, "status")), "disabled");
    CHECK_STR(json_string_value(json_object_get(doc, "disabled_reason")),
              "the receiver answered 410 Gone");
    CHECK_STR(json_string_value(json_object_get(doc, "url")), "https://example.com/h");
    CHECK(strstr(off, secret) != NULL); /* its secrets kept */
    CHECK_INT(wh_doc_enabled(doc), 0);
    /* A caller enabling it clears the reason; disabling gives the caller's. */
    struct wh_fields on = {.given = WH_F_STATUS, .enabled = 1};
    struct wh_fields down = {.given = WH_F_STATUS, .enabled = 0};
    CHECK_INT(wh_doc_patch(doc, &on), 0);
    CHECK_INT(wh_doc_enabled(doc), 1);
    CHECK(json_is_null(json_object_get(doc, "disabled_reason")));
    CHECK_INT(wh_doc_patch(doc, &down), 0);
    CHECK_STR(json_string_value(json_object_get(doc, "disabled_reason")), WH_DISABLED_BY_CALLER);
    json_decref(doc);
    free(off);
    free(text);
}

static void test_types(void)
{
    static const struct {
        const char *types;
        unsigned want;
    } cases[] = {
        {"[\"payment.created\"]", PAYMENT_EVENT_CREATED},
        {"[\"payment.updated\",\"payment.deleted\"]",
         PAYMENT_EVENT_UPDATED | PAYMENT_EVENT_DELETED},
        {"[\"payment.created\",\"payment.updated\",\"payment.deleted\"]", WH_ALL_TYPES},
        {"[\"*\"]", WH_ALL_TYPES},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char secret[WEBHOOK_SECRET_MAX + 1];
        char *text = new_doc("https://example.com/h", cases[i].types, secret);
        CHECK_INT(webhook_endpoint_types(text, strlen(text)), cases[i].want);
        json_t *t = json_loads(cases[i].types, 0, NULL);
        CHECK_INT(wh_types_mask(t), cases[i].want);
        json_decref(t);
        free(text);
    }
}

static void test_malformed(void)
{
    static const char secret[] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    static const char *const docs[] = {
        "",
        "not json",
        "[]",
        "{}",
        "{\"url\":\"https://x/\",\"event_types\":[\"*\"]}",                       /* no secrets */
        "{\"url\":\"https://x/\",\"secrets\":[]}",                               /* none */
        "{\"url\":\"https://x/\",\"secrets\":[{\"secret\":\"abc\",\"expires_ms\":0}]}",
        "{\"url\":\"https://x/\",\"secrets\":[{\"secret\":\"whsec_%%%\",\"expires_ms\":0}]}",
        "{\"url\":\"https://x/\",\"secrets\":[{\"secret\":5,\"expires_ms\":0}]}",
        "{\"url\":\"https://x/\",\"secrets\":[{\"secret\":\"whsec_QUJD\"}]}",     /* no expiry */
        "{\"url\":\"https://x/\",\"secrets\":[{\"secret\":\"whsec_QUJD\",\"expires_ms\":5}]}",
        "{\"url\":7,\"secrets\":[{\"secret\":\"whsec_QUJD\",\"expires_ms\":0}]}",
        "{\"url\":\"\",\"secrets\":[{\"secret\":\"whsec_QUJD\",\"expires_ms\":0}]}",
        "{\"url\":\"https://x/\",\"url\":\"https://y/\",\"secrets\":[]}",         /* duplicate */
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        struct webhook_target t;
        int rc = webhook_endpoint_target(docs[i], strlen(docs[i]), T0, &t);
        if (rc != -1)
            fprintf(stderr, "  case %zu accepted: %s\n", i, docs[i]);
        CHECK_INT(rc, -1);
        CHECK(t.url == NULL && t.n_secrets == 0);
        webhook_target_free(&t);
    }
    /* A long secret (> WEBHOOK_SECRET_MAX) is refused, never cut. */
    char big[256];
    memset(big, 'A', sizeof big);
    memcpy(big, "{\"url\":\"https://x/\",\"secrets\":[{\"secret\":\"whsec_", 48);
    strcpy(big + 200, "\",\"expires_ms\":0}]}");
    struct webhook_target t;
    CHECK_INT(webhook_endpoint_target(big, strlen(big), T0, &t), -1);
    /* Well formed, for contrast. */
    char ok[256];
    snprintf(ok, sizeof ok,
             "{\"url\":\"https://x/\",\"secrets\":[{\"secret\":\"%s\",\"expires_ms\":0}]}",
             secret);
    CHECK_INT(webhook_endpoint_target(ok, strlen(ok), T0, &t), 0);
    webhook_target_free(&t);

    size_t len;
    CHECK(webhook_endpoint_disabled("nope", 4, "why", &len) == NULL);
    CHECK(webhook_endpoint_disabled("[1]", 3, "why", &len) == NULL);
    CHECK(webhook_endpoint_disabled("{\"url\":\"x\"}", 11, "why", &len) == NULL); /* no status */
    static const char *const types[] = {
        "{}", "nope", "{\"event_types\":\"*\"}", "{\"event_types\":[]}",
        "{\"event_types\":[\"payment.created\",\"payment.nope\"]}", "{\"event_types\":[1]}",
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        CHECK_INT(webhook_endpoint_types(types[i], strlen(types[i])), 0);
    /* Rotating a document without secrets fails, changing nothing. */
    json_t *doc = json_loads("{\"url\":\"https://x/\"}", 0, NULL);
    CHECK_INT(wh_doc_rotate(doc, secret, T0), -1);
    CHECK(json_object_get(doc, "secrets") == NULL);
    json_decref(doc);
}

static void test_patch(void)
{
    char secret[WEBHOOK_SECRET_MAX + 1];
    char *text = new_doc("https://example.com/h", "[\"*\"]", secret);
    json_t *doc = json_loads(text, 0, NULL);
    json_t *types = json_loads("[\"payment.deleted\"]", 0, NULL);
    json_t *desc = json_string("ledger");
    struct wh_fields f = {.given = WH_F_URL | WH_F_TYPES | WH_F_DESCRIPTION,
                          .url = "https://example.org/new",
                          .event_types = types,
                          .description = desc};
    CHECK_INT(wh_doc_patch(doc, &f), 0);
    CHECK_STR(json_string_value(json_object_get(doc, "url")), "https://example.org/new");
    CHECK_STR(json_string_value(json_object_get(doc, "description")), "ledger");
    CHECK_INT(wh_types_mask(json_object_get(doc, "event_types")), PAYMENT_EVENT_DELETED);
    CHECK_INT(wh_doc_enabled(doc), 1);
    /* The secrets stay as they were. */
    char *after = json_dumps(doc, JSON_COMPACT);
    CHECK(strstr(after, secret) != NULL);
    free(after);
    /* description: null removes it. */
    struct wh_fields clear = {.given = WH_F_DESCRIPTION, .description = json_null()};
    CHECK_INT(wh_doc_patch(doc, &clear), 0);
    CHECK(json_is_null(json_object_get(doc, "description")));
    json_decref(desc);
    json_decref(types);
    json_decref(doc);
    free(text);
}

TEST_MAIN(TEST(test_secret_format), TEST(test_new_document), TEST(test_rotation),
          TEST(test_disabled), TEST(test_types), TEST(test_malformed), TEST(test_patch))
