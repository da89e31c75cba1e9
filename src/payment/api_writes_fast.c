/* api_writes_fast: the fast path of a synchronous create (POST), replace
 * (PUT) and patch (PATCH): the body read and checked on a tape
 * (fastbody.h), a patch merged into the stored document on tapes, the
 * stored document written from it, and for a replace or a patch the stored
 * document and the next one compared on tapes (changes.h), with no jansson
 * tree.
 *
 * It takes only requests the general path (api_writes.c) would accept up
 * to the store's compare-and-set, and answers only what that path answers
 * at the same step: anything else (a body it does not read, a problem to
 * report, a payment it does not find, an id or organisation to refuse) it
 * gives back before answering or writing anything, and the general path
 * starts over and decides.  So both paths give the same answer to every
 * request; fuzz/fuzz_fastbody.c and the API suite hold them to it. */
#include "payment/api_internal.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "payment/changes.h"
#include "payment/doc.h"

#define FAST_TAKEN 0    /* answered or submitted */
#define FAST_DECLINED 1 /* nothing done: the general path takes the request */

/* The canonical form of the body's UUID member tok into out: 0, or -1 when
 * it is absent or not a UUID (which the fast check has ruled out for the
 * members it read). */
static int body_uuid(struct payment_fastbody *fb, uint32_t tok, char out[UUID_STR_LEN + 1])
{
    size_t len;
    const char *s = tok ? payment_fastbody_string(fb, tok, &len) : NULL;
    return s && uuid_canonical(s, len, out) == 0 ? 0 : -1;
}

/* Reads the request's body on the fast path for mode: 0, FAST_DECLINED, or
 * -1 after answering 500. */
static int read_body(http_request *req, struct payment_api *api, struct api_write_op *w,
                     enum payment_check mode)
{
    size_t len;
    const char *body = http_request_body(req, &len);
    int rc = payment_fastbody_read(&w->fast, api->validator, mode, body, len);
    if (rc == PAYMENT_FASTBODY_ENOMEM) {
        api_respond_internal(req);
        return -1;
    }
    return rc == PAYMENT_FASTBODY_OK ? 0 : FAST_DECLINED;
}

int api_create_fast(http_request *req, struct payment_api *api, struct api_write_op *w)
{
    int rc = read_body(req, api, w, PAYMENT_CHECK_CREATE);
    if (rc != 0)
        return rc < 0 ? FAST_TAKEN : FAST_DECLINED;
    struct payment_fastbody *fb = &w->fast;
    char org[UUID_STR_LEN + 1];
    /* Required on create and checked as a UUID: only out of memory (an
     * escaped one is decoded into scratch) fails here. */
    if (body_uuid(fb, fb->organisation_id, org) != 0) {
        api_respond_internal(req);
        return FAST_TAKEN;
    }
    if (!auth_allows(api_principal(req), org)) {
        api_respond_forbidden(req);
        return FAST_TAKEN;
    }
    int64_t now = clock_now_ms();
    struct uuid u;
    if (fb->id) {
        if (body_uuid(fb, fb->id, w->id) != 0) {
            api_respond_internal(req); /* out of memory, as above: nothing was written */
            return FAST_TAKEN;
        }
    } else if (uuid_v7_generate(now, &u) == 0) {
        uuid_format(&u, w->id);
    } else {
        api_respond_internal(req); /* no random source: nothing was written */
        return FAST_TAKEN;
    }
    w->creates = 1; /* from here on a 5xx names w->id */
    char created_on[CLOCK_TIMESTAMP_LEN + 1];
    clock_format_ms(now, created_on);
    struct payment_fastbody_base base = {
        .fallback_type = "payments",
        .id = w->id,
        .version = 0,
        .organisation_id = org,
        .created_on = created_on,
        .created_ms = now,
        .modified_ms = now,
    };
    if (payment_fastbody_doc(fb, &base, &w->row, &w->text) != PAYMENT_FASTBODY_OK) {
        api_respond_write_error(req, w, PAYMENT_STORE_EINTERNAL, -1);
        return FAST_TAKEN;
    }
    if (api_write_op_prepare_row(req, w, 201) == 0)
        api_write_op_submit(req, w, PAYMENT_OP_CREATE, -1);
    return FAST_TAKEN;
}

/* The stored payment a replace or a patch is based on, read onto a tape. */
struct stored {
    struct buf text;            /* the stored document */
    struct jtape tape;          /* ... read */
    struct buf scratch;         /* its decoded strings while they are copied out */
    int64_t version;            /* stored version */
    int64_t created_ms;         /* stored creation time */
    char id[UUID_STR_LEN + 1];  /* its id */
    char org[UUID_STR_LEN + 1]; /* its organisation */
    char type[256];             /* its type, "" when it has none */
    char created_on[CLOCK_TIMESTAMP_LEN + 1]; /* its created_on, or created_ms's */
};

static void stored_free(struct stored *st)
{
    buf_free(&st->text);
    jtape_free(&st->tape);
    buf_free(&st->scratch);
}

/* The string member key of the stored document copied into out (size
 * bytes): 0, 1 when absent, not a string, holding a NUL or too long, or -1
 * out of memory. */
static int stored_member(struct stored *st, const char *key, char *out, size_t size)
{
    uint32_t tok = jtape_get(&st->tape, 0, key, strlen(key));
    if (!tok || st->tape.tokens[tok].kind != JTAPE_STRING)
        return 1;
    size_t len;
    buf_reset(&st->scratch);
    const char *s = jtape_string(&st->tape, tok, &st->scratch, &len);
    if (!s)
        return -1;
    if (len >= size || memchr(s, '\0', len))
        return 1;
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

/* The members of the stored document the next version keeps: 0, 1 when one
 * is missing or malformed, -1 out of memory. */
static int stored_members(struct stored *st)
{
    int rc = stored_member(st, "organisation_id", st->org, sizeof st->org);
    if (rc == 0)
        rc = stored_member(st, "id", st->id, sizeof st->id);
    /* A document this server wrote holds canonical UUIDs; any other is the
     * general path's to judge. */
    if (rc == 0 && (strlen(st->org) != UUID_STR_LEN || strlen(st->id) != UUID_STR_LEN))
        rc = 1;
    if (rc == 0) {
        rc = stored_member(st, "type", st->type, sizeof st->type);
        if (rc == 1 && !jtape_get(&st->tape, 0, "type", 4)) {
            st->type[0] = '\0';
            rc = 0;
        }
    }
    if (rc == 0) {
        rc = stored_member(st, "created_on", st->created_on, sizeof st->created_on);
        if (rc == 1 && !jtape_get(&st->tape, 0, "created_on", 10)) {
            clock_format_ms(st->created_ms, st->created_on);
            rc = 0;
        }
    }
    return rc;
}

/* Reads the stored payment id: 0, FAST_DECLINED (none, or one the fast path
 * does not read), or -1 after answering the store's error. */
static int stored_read(http_request *req, struct payment_api *api, const char *id,
                       struct stored *st)
{
    int64_t t0 = clock_mono_us();
    int err = payment_store_get_meta(api->store, id, &st->text, &st->version, &st->created_ms);
    metrics_histogram_observe(&api->store_latency[PAYMENT_OP_GET], clock_mono_us() - t0);
    if (err == PAYMENT_STORE_ENOTFOUND)
        return FAST_DECLINED;
    if (err != PAYMENT_STORE_OK) {
        api_respond_store_error(req, err, -1);
        return -1;
    }
    int rc = jtape_parse(&st->tape, st->text.data, st->text.len, PAYMENT_BODY_MAX_DEPTH);
    if (rc == JTAPE_DEFER)
        return FAST_DECLINED; /* a document jtape leaves to jansson (a real, say) */
    if (rc == JTAPE_OK)
        rc = st->tape.tokens[0].kind == JTAPE_OBJECT ? stored_members(st) : 1;
    if (rc < 0) { /* JTAPE_ENOMEM, or stored_members out of memory */
        api_respond_internal(req);
        return -1;
    }
    return rc == 0 ? 0 : FAST_DECLINED;
}

/* The stored payment is one the caller may act for, and the body's
 * organisation_id, when given, is its own (else the general path answers
 * 404 or 400).  0 or FAST_DECLINED. */
static int body_names_stored(http_request *req, struct payment_fastbody *fb,
                             const struct stored *st)
{
    char canon[UUID_STR_LEN + 1];
    if (fb->organisation_id &&
        (body_uuid(fb, fb->organisation_id, canon) != 0 || strcmp(canon, st->org) != 0))
        return FAST_DECLINED;
    return auth_allows(api_principal(req), st->org) ? 0 : FAST_DECLINED;
}

/* The paths the next version (w->text) changes against the stored one,
 * into w->changes: 0, or -1 out of memory or when the new text does not
 * read back (an invariant: it is jtape_dump's output). */
static int update_changes(struct api_write_op *w, const struct stored *st)
{
    struct jtape next = JTAPE_INIT;
    int rc = jtape_parse(&next, w->row.doc, w->row.doc_len, PAYMENT_BODY_MAX_DEPTH);
    assert(rc != JTAPE_DEFER);
    if (rc == JTAPE_OK)
        w->changes = payment_changes_between_tapes(&st->tape, &next);
    jtape_free(&next);
    return w->changes ? 0 : -1;
}

/* After the body: the stored payment, a patch merged into it, the version
 * the client names, then the document and its changes.  Returns FAST_TAKEN
 * or FAST_DECLINED. */
static int update_stored(http_request *req, struct payment_api *api, struct api_write_op *w,
                         enum payment_check mode, struct stored *st)
{
    struct payment_fastbody *fb = &w->fast;
    char id[UUID_STR_LEN + 1];
    api_path_id(req, id);
    char canon[UUID_STR_LEN + 1];
    if (fb->id && (body_uuid(fb, fb->id, canon) != 0 || strcmp(canon, id) != 0))
        return FAST_DECLINED; /* 400: not the path's id */
    if (fb->organisation_id && (body_uuid(fb, fb->organisation_id, canon) != 0 ||
                                !auth_allows(api_principal(req), canon)))
        return FAST_DECLINED; /* 403 */
    int rc = stored_read(req, api, id, st);
    if (rc != 0)
        return rc < 0 ? FAST_TAKEN : FAST_DECLINED;
    if (body_names_stored(req, fb, st) != 0)
        return FAST_DECLINED;
    if (mode == PAYMENT_CHECK_PATCH) {
        rc = payment_fastbody_merge(fb, api->validator, &st->tape);
        if (rc == PAYMENT_FASTBODY_ENOMEM) {
            api_respond_internal(req);
            return FAST_TAKEN;
        }
        if (rc != PAYMENT_FASTBODY_OK)
            return FAST_DECLINED; /* a problem in the merged result: the general path's 400 */
    }
    const struct jtape_token *bv = fb->version ? &fb->tape.tokens[fb->version] : NULL;
    int64_t expected;
    if (http_client_version_of(req, bv && bv->kind == JTAPE_INTEGER, bv ? bv->integer : 0, 1,
                               &expected) != 0)
        return FAST_TAKEN;
    if (st->version != expected) {
        api_respond_store_error(req, PAYMENT_STORE_ECONFLICT, st->version);
        return FAST_TAKEN;
    }
    snprintf(w->id, sizeof w->id, "%s", id);
    int64_t now = clock_now_ms();
    struct payment_fastbody_base base = {
        .fallback_type = st->type[0] ? st->type : "payments",
        .id = st->id,
        .version = st->version + 1,
        .organisation_id = st->org,
        .created_on = st->created_on,
        .created_ms = st->created_ms,
        .modified_ms = now,
    };
    if (payment_fastbody_doc(fb, &base, &w->row, &w->text) != PAYMENT_FASTBODY_OK ||
        update_changes(w, st) != 0) {
        api_respond_write_error(req, w, PAYMENT_STORE_EINTERNAL, -1);
        return FAST_TAKEN;
    }
    if (api_write_op_prepare_row(req, w, 200) == 0)
        api_write_op_submit(req, w, PAYMENT_OP_UPDATE, expected);
    return FAST_TAKEN;
}

int api_update_fast(http_request *req, struct payment_api *api, struct api_write_op *w,
                    enum payment_check mode)
{
    assert(mode == PAYMENT_CHECK_REPLACE || mode == PAYMENT_CHECK_PATCH);
    int rc = read_body(req, api, w, mode);
    if (rc != 0)
        return rc < 0 ? FAST_TAKEN : FAST_DECLINED;
    struct stored st = {.text = BUF_INIT, .tape = JTAPE_INIT, .scratch = BUF_INIT};
    rc = update_stored(req, api, w, mode, &st);
    stored_free(&st);
    return rc;
}
