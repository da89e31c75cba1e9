/* api: the webhook routes (api.h) and the delivery body of an event.  The
 * handlers live in the api_*.c files (see api_internal.h). */
#include "webhook/api.h"

#include <string.h>

#include "payment/event.h"
#include "webhook/api_internal.h"

size_t webhook_api_routes(struct webhook_api *api, struct http_route *out)
{
    const unsigned body = HTTP_ROUTE_BODY | HTTP_ROUTE_AUTH;
    const unsigned id = HTTP_ROUTE_UUID_PARAM | HTTP_ROUTE_AUTH;
    const struct http_route routes[WEBHOOK_API_ROUTES] = {
        {HTTP_POST, "/v1/webhooks", wh_create, body, api},
        {HTTP_GET, "/v1/webhooks", wh_list, HTTP_ROUTE_AUTH, api},
        {HTTP_GET, "/v1/webhooks/{id}", wh_fetch, id, api},
        {HTTP_PATCH, "/v1/webhooks/{id}", wh_patch, id | body, api},
        {HTTP_DELETE, "/v1/webhooks/{id}", wh_delete, id, api},
        {HTTP_POST, "/v1/webhooks/{id}/secret/rotate", wh_rotate, id, api},
        {HTTP_GET, "/v1/webhooks/{id}/deliveries", wh_deliveries_list, id, api},
        {HTTP_POST, "/v1/webhooks/{id}/deliveries/{delivery_id}/retry", wh_delivery_retry, id,
         api},
        {HTTP_POST, "/v1/webhooks/{id}/replay", wh_replay, id | body, api},
    };
    memcpy(out, routes, sizeof routes);
    return WEBHOOK_API_ROUTES;
}

int webhook_event_body(const struct payment_event *ev, struct buf *b)
{
    return payment_event_render(ev, b);
}
