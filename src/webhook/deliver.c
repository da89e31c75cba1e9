/* deliver: see deliver.h.  (A placeholder until the deliverer lands: it
 * starts, delivers nothing and stops.) */
#include <stdlib.h>

#include "webhook/deliver.h"

struct webhook_deliver {
    struct webhook_deliver_config c; /* as started */
};

webhook_deliver *webhook_deliver_start(const struct webhook_deliver_config *c)
{
    webhook_deliver *d = calloc(1, sizeof *d);
    if (d)
        d->c = *c;
    return d;
}

void webhook_deliver_wake(void *d)
{
    (void)d;
}

void webhook_deliver_stop(webhook_deliver *d)
{
    free(d);
}

void webhook_deliver_metrics(webhook_deliver *d, struct buf *b)
{
    (void)d;
    (void)b;
}
