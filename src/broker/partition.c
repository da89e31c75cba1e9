#include "broker/partition.h"

#include <string.h>

#define PARTITION_FNV_OFFSET 14695981039346656037ULL
#define PARTITION_FNV_PRIME 1099511628211ULL

uint64_t partition_key(const char *s, size_t len)
{
    uint64_t h = PARTITION_FNV_OFFSET;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        /* ASCII only: tolower() would depend on the locale. */
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        h ^= c;
        h *= PARTITION_FNV_PRIME;
    }
    return h;
}

/* The reference implementation of the paper, line for line: a linear
 * congruential step per jump, and the next candidate bucket computed in
 * double precision.  Its exact floating-point form is the contract, since
 * every implementation must agree on each key's bucket. */
int32_t partition_jump(uint64_t key, int32_t buckets)
{
    if (buckets < 1)
        buckets = 1;
    int64_t b = -1, j = 0;
    while (j < buckets) {
        b = j;
        key = key * 2862933555777941757ULL + 1;
        j = (int64_t)((double)(b + 1) * ((double)(1LL << 31) / (double)((key >> 33) + 1)));
    }
    return (int32_t)b;
}

uint32_t partition_of(const char *org_id, uint32_t partitions)
{
    if (partitions > INT32_MAX)
        partitions = INT32_MAX;
    uint64_t key = partition_key(org_id, strlen(org_id));
    return (uint32_t)partition_jump(key, (int32_t)partitions);
}
