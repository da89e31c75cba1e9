/* hex: the value of a hexadecimal digit, for the parsers that read them
 * (UUIDs, percent-encoding, digests). */
#ifndef CORE_HEX_H
#define CORE_HEX_H

/* 0..15 for a hex digit in either letter case, else -1. */
static inline int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif
