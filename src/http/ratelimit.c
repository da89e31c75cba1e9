#include "http/ratelimit.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/sync.h"

#define RATELIMIT_SLOTS 4096  /* buckets; a power of two */
#define RATELIMIT_STRIPES 64  /* locks; each guards every 64th slot */
#define RATELIMIT_PROBES 8    /* slots a caller may occupy */
#define RATELIMIT_KEY 72      /* bytes of a caller's name kept */

struct bucket {
    char key[RATELIMIT_KEY]; /* caller, "" for a free slot */
    double tokens;           /* requests it may make now */
    int64_t seen_us;         /* last refill */
};

struct ratelimit {
    double rate;                                /* tokens per second, and the burst */
    pthread_mutex_t locks[RATELIMIT_STRIPES];   /* stripe i guards slots = i mod STRIPES */
    struct bucket slots[RATELIMIT_SLOTS];
};

ratelimit *ratelimit_new(double rate)
{
    ratelimit *rl = calloc(1, sizeof *rl);
    if (!rl)
        return NULL;
    rl->rate = rate;
    for (int i = 0; i < RATELIMIT_STRIPES; i++) {
        if (pthread_mutex_init(&rl->locks[i], NULL) != 0) {
            while (i-- > 0)
                pthread_mutex_destroy(&rl->locks[i]);
            free(rl);
            return NULL;
        }
    }
    return rl;
}

void ratelimit_free(ratelimit *rl)
{
    if (!rl)
        return;
    for (int i = 0; i < RATELIMIT_STRIPES; i++)
        pthread_mutex_destroy(&rl->locks[i]);
    free(rl);
}

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

unsigned ratelimit_take(ratelimit *rl, const char *caller, int64_t now_us)
{
    /* The probes of one caller stay within one stripe: slot = base + k *
     * STRIPES, so one lock covers them all. */
    uint64_t h = hash(caller);
    size_t stripe = h % RATELIMIT_STRIPES;
    size_t base = (h / RATELIMIT_STRIPES) % (RATELIMIT_SLOTS / RATELIMIT_STRIPES);
    pthread_mutex_t *lock = &rl->locks[stripe];
    if (pthread_mutex_lock(lock) != 0)
        return 0; /* never refuse a request because of the limiter itself */
    struct bucket *b = NULL, *oldest = NULL;
    for (size_t k = 0; k < RATELIMIT_PROBES && !b; k++) {
        size_t row = (base + k) % (RATELIMIT_SLOTS / RATELIMIT_STRIPES);
        struct bucket *c = &rl->slots[row * RATELIMIT_STRIPES + stripe];
        if (c->key[0] && strncmp(c->key, caller, RATELIMIT_KEY - 1) == 0)
            b = c;
        else if (!oldest || (oldest->key[0] && (!c->key[0] || c->seen_us < oldest->seen_us)))
            oldest = c; /* a free slot, else the least recently seen */
    }
    if (!b) {
        b = oldest;
        strncpy(b->key, caller, RATELIMIT_KEY - 1);
        b->key[RATELIMIT_KEY - 1] = '\0';
        b->tokens = rl->rate;
        b->seen_us = now_us;
    }
    double elapsed = (double)(now_us - b->seen_us) / 1e6;
    if (elapsed > 0) {
        b->tokens = fmin(rl->rate, b->tokens + elapsed * rl->rate);
        b->seen_us = now_us;
    }
    unsigned wait = 0;
    if (b->tokens >= 1.0)
        b->tokens -= 1.0;
    else
        wait = (unsigned)ceil((1.0 - b->tokens) / rl->rate);
    sync_unlock(lock);
    return wait;
}
