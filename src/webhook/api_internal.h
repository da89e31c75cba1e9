/* api_internal: what the files of the webhook API share, and nothing else
 * includes (but their unit tests).  Split by concept: request pieces (the
 * body and its members validated, versions, times, the path's endpoint as
 * the caller may see it: api_request.c), the stored document (made,
 * patched, rotated: api_doc.c), answers (errors, an endpoint and a
 * delivery rendered: api_render.c), a list's query (api_query.c), the
 * endpoint handlers (api_crud.c), the list of endpoints (api_list.c), the
 * deliveries and their retry (api_deliveries.c), replays
 * (api_replay.c) and the route table (api.c).
 *
 * Threads: every handler runs on the server's blocking pool (wh_offload
 * sends it there first), since the store's webhook calls wait for commits
 * and a registration resolves its url's host.  Errors: answered to the
 * client; functions returning int say 0 (go on) or -1 (answered) unless
 * stated. */
#ifndef WEBHOOK_API_INTERNAL_H
#define WEBHOOK_API_INTERNAL_H

#include <jansson.h>
#include <stdint.h>

#include "auth/keys.h"
#include "core/buf.h"
#include "core/uuid.h"
#include "http/problems.h"
#include "http/server.h"
#include "http/version.h"
#include "payment/store.h"
#include "webhook/api.h"
#include "webhook/endpoint.h"

/* Every event type there is: what "*" stands for. */
#define WH_ALL_TYPES                                                          \
    ((unsigned)PAYMENT_EVENT_CREATED | (unsigned)PAYMENT_EVENT_UPDATED |      \
     (unsigned)PAYMENT_EVENT_DELETED)

#define WH_PAGE_SIZE_DEFAULT 100      /* page[size] when not given */
#define WH_REPLAY_EVENTS_MAX 10000    /* events one replay may send again */
#define WH_DISABLED_BY_CALLER "disabled by the caller"

/* Which request a body is checked for. */
enum wh_mode {
    WH_CREATE, /* POST /v1/webhooks: organisation_id, url, event_types required */
    WH_PATCH,  /* PATCH /v1/webhooks/{id}: a merge patch, any member may be absent */
};

/* The members of data a caller gave (bits of wh_fields.given). */
enum wh_field {
    WH_F_ORG = 1 << 0,
    WH_F_URL = 1 << 1,
    WH_F_TYPES = 1 << 2,
    WH_F_DESCRIPTION = 1 << 3, /* a string, or null (PATCH: removes it) */
    WH_F_STATUS = 1 << 4,
};

/* The members of a body's data, validated.  Pointers are borrowed from the
 * body, which must outlive this. */
struct wh_fields {
    unsigned given;                         /* wh_field bits */
    char organisation_id[UUID_STR_LEN + 1]; /* lower case */
    const char *url;
    json_t *event_types;                    /* a non-empty array of names, or ["*"] */
    json_t *description;                    /* a string, or JSON null */
    int enabled;                            /* status: 1 "enabled", 0 "disabled" */
};

/* An endpoint read from the store, its strings copied. */
struct wh_endpoint {
    struct payment_webhook w; /* w.doc points into doc */
    struct buf doc;           /* owned */
};

/* --- request pieces (api_request.c) -------------------------------------- */

/* 1 after handing req to the server's blocking pool to run fn there; 0
 * when it runs there already (the handler goes on). */
int wh_offload(http_request *req, http_handler_fn fn);
/* The caller's principal, or NULL when the server runs open. */
const struct auth_principal *wh_principal(const http_request *req);
/* The path's {id}, in lower case (the router checked it is a UUID). */
void wh_path_id(http_request *req, char id[UUID_STR_LEN + 1]);
/* The body parsed, its data member an object: the root (the caller's
 * reference), or NULL after answering 400. */
json_t *wh_read_body(http_request *req);
/* Checks data's members for mode, filling f and appending to errors one
 * {"field", "message"} per problem; path_id (PATCH) is the id data.id must
 * equal when given.  Resolves the url's host (may block).  Returns the
 * problems' count, or -1 out of memory. */
int wh_fields_check(json_t *data, enum wh_mode mode, const char *path_id, int allow_private,
                    struct wh_fields *f, json_t *errors);
/* An RFC 3339 date-time into ms since the epoch (a finer fraction rounds
 * up): 0, or -1. */
int wh_parse_time(const char *s, int64_t *ms);
/* Reads endpoint id as the caller may see it: another organisation's is
 * answered 404 as an unknown one.  0 with e filled (wh_endpoint_free), or
 * -1 after answering. */
int wh_endpoint_load(http_request *req, struct webhook_api *api, const char *id,
                     struct wh_endpoint *e);
void wh_endpoint_free(struct wh_endpoint *e);

/* --- a list's query (api_query.c) ---------------------------------------- */

/* Which list a query is for. */
enum wh_list {
    WH_LIST_ENDPOINTS,  /* GET /v1/webhooks: filter[organisation_id] */
    WH_LIST_DELIVERIES, /* GET /v1/webhooks/{id}/deliveries: filter[status] */
};

/* A list's query, parsed. */
struct wh_query {
    enum wh_list list;
    uint32_t size;                                /* page[size] */
    char after[UUID_STR_LEN + 1];                 /* page[after], "" when not given */
    size_t n_orgs;                                /* filter[organisation_id]; 0: none */
    char orgs[AUTH_MAX_ORGS][UUID_STR_LEN + 1];   /* lower case */
    unsigned statuses;                            /* filter[status]: payment_delivery_status
                                                   * bits; 0: all */
};

/* Parses the request's query for list into q: 0, or -1 after answering 400
 * (bad_request for an unknown parameter, validation_failed naming each
 * parameter refused). */
int wh_query_parse(http_request *req, enum wh_list list, struct wh_query *q);
/* Appends "name":"<url of the list of endpoint id (deliveries) with q's
 * filters and size, and page[after]=after unless NULL>" to b. */
void wh_query_link(struct buf *b, const struct webhook_api *api, const char *name,
                   const char *id, const struct wh_query *q, const char *after);
/* Ends the page b holds ({"data":[<items>), with its links "self" and
 * "next" (page[after]=next_after, or null when NULL: the last page), and
 * answers it 200 (b is taken). */
void wh_respond_page(http_request *req, const struct webhook_api *api, struct buf *b,
                     const char *id, const struct wh_query *q, const char *next_after);

/* --- the stored document (api_doc.c) -------------------------------------- */

/* A new secret, "whsec_" + base64 of WEBHOOK_SECRET_BYTES random bytes:
 * 0, or -1 when the random source fails. */
int wh_secret_new(char out[WEBHOOK_SECRET_MAX + 1]);
/* The document of a new endpoint from f (a checked create) with secret:
 * a new reference, or NULL out of memory. */
json_t *wh_doc_new(const struct wh_fields *f, const char *secret, int64_t now_ms);
/* Applies f (a checked patch) to doc: url, event_types, description;
 * status, a caller disabling an enabled endpoint giving the reason
 * WH_DISABLED_BY_CALLER, enabling clearing it.  0, or -1 out of memory. */
int wh_doc_patch(json_t *doc, const struct wh_fields *f);
/* Puts secret first in doc's secrets; the one that signed until now signs
 * until now_ms + WEBHOOK_ROTATION_OVERLAP_MS; older ones go.  0, or -1
 * (malformed document, out of memory). */
int wh_doc_rotate(json_t *doc, const char *secret, int64_t now_ms);
/* Whether doc's status is "enabled". */
int wh_doc_enabled(json_t *doc);
/* The payment_event_type bits an event_types array names ("*": all). */
unsigned wh_types_mask(json_t *event_types);

/* --- answers (api_render.c) ----------------------------------------------- */

void wh_respond_internal(http_request *req);
/* 400 validation_failed listing errors ({"field", "message"} items). */
void wh_respond_invalid(http_request *req, json_t *errors);
/* 400 validation_failed with one problem. */
void wh_respond_one_invalid(http_request *req, const char *field, const char *message);
/* 403: the key may not act for the organisation. */
void wh_respond_forbidden(http_request *req);
/* A store error about an endpoint (current_version with ECONFLICT). */
void wh_respond_store_error(http_request *req, int err, int64_t current_version);
/* Appends "<public url>/v1/webhooks/<id><suffix>" as a JSON string body
 * (no quotes). */
void wh_append_url(struct buf *b, const struct webhook_api *api, const char *id,
                   const char *suffix);
/* The answer's data object of endpoint w (its document parsed), with
 * "secret" when secret is not NULL: a new reference, or NULL (malformed
 * document, out of memory). */
json_t *wh_endpoint_json(const struct payment_webhook *w, const char *secret);
/* Answers status with {"data": endpoint, "links": {"self", "deliveries"}},
 * ETag, and Location when location is set. */
void wh_respond_endpoint(http_request *req, const struct webhook_api *api,
                         const struct payment_webhook *w, const char *secret, int status,
                         int location);
/* Appends delivery d's object to b. */
void wh_render_delivery(struct buf *b, const struct payment_delivery *d);

/* --- handlers ------------------------------------------------------------- */

void wh_create(http_request *req, void *ctx);        /* api_crud.c */
void wh_fetch(http_request *req, void *ctx);
void wh_patch(http_request *req, void *ctx);
void wh_delete(http_request *req, void *ctx);
void wh_rotate(http_request *req, void *ctx);
void wh_list(http_request *req, void *ctx);          /* api_list.c */
void wh_deliveries_list(http_request *req, void *ctx); /* api_deliveries.c */
void wh_delivery_retry(http_request *req, void *ctx);
void wh_replay(http_request *req, void *ctx);         /* api_replay.c */

#endif
