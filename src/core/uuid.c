#include "core/uuid.h"

#include "core/hex.h"

#include <errno.h>
#include <sys/random.h>
#include <sys/types.h>

/* Offsets of the hyphens in the textual form. */
static int uuid_is_hyphen_at(size_t i)
{
    return i == 8 || i == 13 || i == 18 || i == 23;
}

int uuid_parse(const char *s, size_t len, struct uuid *out)
{
    if (!s || len != UUID_STR_LEN)
        return -1;
    struct uuid u;
    size_t nibble = 0;
    for (size_t i = 0; i < UUID_STR_LEN; i++) {
        if (uuid_is_hyphen_at(i)) {
            if (s[i] != '-')
                return -1;
            continue;
        }
        int v = hex_value(s[i]);
        if (v < 0)
            return -1;
        if (nibble % 2 == 0)
            u.bytes[nibble / 2] = (uint8_t)(v << 4);
        else
            u.bytes[nibble / 2] |= (uint8_t)v;
        nibble++;
    }
    *out = u;
    return 0;
}

void uuid_format(const struct uuid *u, char out[UUID_STR_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    size_t pos = 0;
    for (size_t i = 0; i < 16; i++) {
        if (uuid_is_hyphen_at(pos))
            out[pos++] = '-';
        out[pos++] = hex[u->bytes[i] >> 4];
        out[pos++] = hex[u->bytes[i] & 15];
    }
    out[UUID_STR_LEN] = '\0';
}

int uuid_canonical(const char *s, size_t len, char out[UUID_STR_LEN + 1])
{
    struct uuid u;
    if (uuid_parse(s, len, &u) != 0)
        return -1;
    uuid_format(&u, out);
    return 0;
}

/* Fills buf from the kernel's random source, retrying interrupted and
 * short reads (a request above 256 bytes may legitimately return short). */
static int uuid_random_fill(uint8_t *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(buf + got, len - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        got += (size_t)n;
    }
    return 0;
}

int uuid_v7_generate(int64_t unix_ms, struct uuid *out)
{
    struct uuid u;
    if (uuid_random_fill(u.bytes + 6, sizeof u.bytes - 6) != 0)
        return -1;
    uint64_t ms = (uint64_t)unix_ms;
    for (int i = 0; i < 6; i++)
        u.bytes[i] = (uint8_t)(ms >> (8 * (5 - i)));
    u.bytes[6] = (uint8_t)(0x70 | (u.bytes[6] & 0x0f)); /* version 7 */
    u.bytes[8] = (uint8_t)(0x80 | (u.bytes[8] & 0x3f)); /* variant 10 */
    *out = u;
    return 0;
}
