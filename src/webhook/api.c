/* api: see api.h.  (A placeholder until the routes land: none yet.) */
#include "webhook/api.h"

#include "payment/event.h"

size_t webhook_api_routes(struct webhook_api *api, struct http_route *out)
{
    (void)api;
    (void)out;
    return 0;
}

int webhook_event_body(const struct payment_event *ev, struct buf *b)
{
    return payment_event_render(ev, b);
}
