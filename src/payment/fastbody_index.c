/* fastbody_index: the tables' members by name (fastbody_index.h).
 * Invariant: once index_ready is set, every property of every object node
 * reachable from the two roots has its slot, and no slot changes again. */
#include "payment/fastbody_index.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "payment/doc.h"

/* The property of n named key (len bytes, no NUL), or NULL when n declares
 * none, by binary search over the names in byte order, which skips the
 * prefix every name left in the range shares with the key (the shorter of
 * the prefixes the range's two bounds share with it). */
static const struct schema_node *index_search(const struct schema_node *n, const char *key,
                                              size_t len)
{
    size_t lo = 0, hi = n->property_count;
    size_t lo_common = 0, hi_common = 0; /* bytes names[lo - 1] and names[hi] share with key */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *name = n->properties[mid].name;
        size_t i = lo_common < hi_common ? lo_common : hi_common;
        while (i < len && name[i] == key[i])
            i++;
        if (i == len && name[len] == '\0')
            return &n->properties[mid];
        /* name[i] is NUL when name is a prefix of key: then it orders first. */
        if (i < len && (unsigned char)name[i] < (unsigned char)key[i]) {
            lo = mid + 1;
            lo_common = i;
        } else {
            hi = mid;
            hi_common = i;
        }
    }
    return NULL;
}

#define INDEX_SLOTS 1024 /* a power of two; at most half are used */

struct index_slot {
    const struct schema_node *properties; /* the object's property array; NULL: free */
    const struct schema_node *member;     /* one of its entries */
    size_t len;                           /* strlen(member->name) */
};

static struct index_slot index_slots[INDEX_SLOTS];
static size_t index_used; /* slots taken while building */
static int index_ready;   /* built in full: lookups use it */
static pthread_once_t index_once = PTHREAD_ONCE_INIT;

static size_t index_hash(const struct schema_node *properties, const char *key, size_t len)
{
    uint64_t h = (uint64_t)(uintptr_t)properties ^ (uint64_t)len << 32;
    if (len)
        h ^= (uint64_t)(unsigned char)key[0] | (uint64_t)(unsigned char)key[len / 2] << 8 |
             (uint64_t)(unsigned char)key[len - 1] << 16;
    h *= UINT64_C(0x9E3779B97F4A7C15);
    return (size_t)(h >> 54) & (INDEX_SLOTS - 1);
}

/* Indexes n's members and theirs, once per property array.  Returns 0, or
 * -1 when the index would be more than half full or the tables deeper
 * than any document may nest. */
static int index_add(const struct schema_node *n, int depth)
{
    if (depth > PAYMENT_BODY_MAX_DEPTH)
        return -1;
    for (size_t p = 0; p < n->property_count; p++) {
        const struct schema_node *member = &n->properties[p];
        size_t len = strlen(member->name);
        size_t i = index_hash(n->properties, member->name, len);
        while (index_slots[i].properties && index_slots[i].member != member)
            i = (i + 1) & (INDEX_SLOTS - 1);
        if (index_slots[i].member == member)
            return 0; /* this array is indexed already (a shared definition) */
        if (++index_used > INDEX_SLOTS / 2)
            return -1;
        index_slots[i] = (struct index_slot){n->properties, member, len};
        if (index_add(member, depth + 1) != 0)
            return -1;
    }
    return n->items ? index_add(n->items, depth + 1) : 0;
}

static void index_build(void)
{
    index_ready = index_add(&schema_payment_envelope, 0) == 0 &&
                  index_add(&schema_payment_attributes, 0) == 0;
}

const struct schema_node *fastbody_property(const struct schema_node *n, const char *key,
                                            size_t len)
{
    if (n->property_count == 0)
        return NULL;
    if (!index_ready)
        return index_search(n, key, len);
    size_t i = index_hash(n->properties, key, len);
    for (;; i = (i + 1) & (INDEX_SLOTS - 1)) {
        const struct index_slot *slot = &index_slots[i];
        if (!slot->properties)
            return NULL;
        if (slot->properties == n->properties && slot->len == len &&
            memcmp(slot->member->name, key, len) == 0)
            return slot->member;
    }
}

int fastbody_index_init(void)
{
    return pthread_once(&index_once, index_build) == 0 ? 0 : -1;
}
