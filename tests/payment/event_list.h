/* event_list: a list of events as a store read them, copied out of the
 * read's callback (seen_add), for the event tests of both stores.
 * Header-only: each test binary is one file. */
#ifndef TESTS_PAYMENT_EVENT_LIST_H
#define TESTS_PAYMENT_EVENT_LIST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "payment/store.h"
#include "test.h"

#define NULL_TEXT "<null>" /* how a NULL text of an event is kept */

/* One event as read. */
struct seen {
    int64_t pos;
    char id[UUID_STR_LEN + 1];
    int type;
    char org[UUID_STR_LEN + 1];
    char pid[UUID_STR_LEN + 1];
    int64_t version;
    int64_t occurred_ms;
    char api_key_id[48];  /* NULL_TEXT when NULL, as are the next four */
    char request_id[48];
    char idem_key[48];
    char op_id[48];
    char changes[96];
    char doc[192];
};

/* Events read, in the order read. */
struct seen_list {
    struct seen *ev;
    size_t n, cap;
};

static inline void seen_copy_text(char *out, size_t len, const char *v)
{
    snprintf(out, len, "%s", v ? v : NULL_TEXT);
}

/* A payment_store_event_fn; arg is a seen_list.  A document too long for
 * struct seen fails a check. */
static inline int seen_add(void *arg, const struct payment_event *ev)
{
    struct seen_list *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        struct seen *grown = realloc(l->ev, cap * sizeof *grown);
        CHECK(grown != NULL);
        if (!grown)
            return 1;
        l->ev = grown;
        l->cap = cap;
    }
    struct seen *e = &l->ev[l->n++];
    memset(e, 0, sizeof *e);
    e->pos = ev->pos;
    seen_copy_text(e->id, sizeof e->id, ev->id);
    e->type = (int)ev->type;
    seen_copy_text(e->org, sizeof e->org, ev->organisation_id);
    seen_copy_text(e->pid, sizeof e->pid, ev->payment_id);
    e->version = ev->version;
    e->occurred_ms = ev->occurred_ms;
    seen_copy_text(e->api_key_id, sizeof e->api_key_id, ev->api_key_id);
    seen_copy_text(e->request_id, sizeof e->request_id, ev->request_id);
    seen_copy_text(e->idem_key, sizeof e->idem_key, ev->idempotency_key);
    seen_copy_text(e->op_id, sizeof e->op_id, ev->operation_id);
    seen_copy_text(e->changes, sizeof e->changes, ev->changes);
    CHECK(ev->doc != NULL && ev->doc_len < sizeof e->doc);
    if (ev->doc && ev->doc_len < sizeof e->doc) {
        memcpy(e->doc, ev->doc, ev->doc_len);
        CHECK_INT(strlen(e->doc), ev->doc_len);
    }
    return 0;
}

static inline void seen_reset(struct seen_list *l)
{
    l->n = 0;
}

static inline void seen_free(struct seen_list *l)
{
    free(l->ev);
    memset(l, 0, sizeof *l);
}

#endif
