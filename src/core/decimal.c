#include "core/decimal.h"

#include <string.h>

static int decimal_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

int decimal_parse(const char *s, size_t len, struct decimal *out)
{
    if (!s || len == 0 || len > DECIMAL_MAX_LEN)
        return -1;
    size_t i = 0;
    while (i < len && decimal_is_digit(s[i]))
        i++;
    size_t int_len = i;
    if (int_len == 0 || (int_len > 1 && s[0] == '0'))
        return -1;

    const char *frac = NULL;
    size_t frac_len = 0;
    if (i < len) {
        if (s[i] != '.')
            return -1;
        size_t start = ++i;
        while (i < len && decimal_is_digit(s[i]))
            i++;
        if (i != len || i == start)
            return -1;
        frac = s + start;
        frac_len = len - start;
    }
    out->digits = s;
    out->int_len = int_len;
    out->frac = frac;
    out->frac_len = frac_len;
    return 0;
}

int decimal_is_zero(const struct decimal *d)
{
    for (size_t i = 0; i < d->int_len; i++)
        if (d->digits[i] != '0')
            return 0;
    for (size_t i = 0; i < d->frac_len; i++)
        if (d->frac[i] != '0')
            return 0;
    return 1;
}

/* Fraction digit i, reading zeros past the end (0.5 == 0.50). */
static char decimal_frac_digit(const struct decimal *d, size_t i)
{
    return i < d->frac_len ? d->frac[i] : '0';
}

int decimal_cmp(const struct decimal *a, const struct decimal *b)
{
    /* Skip leading zeros so that integer parts of equal length compare
     * lexically; parsed values have none beyond a lone "0", but a
     * hand-built struct may. */
    const char *ai = a->digits, *bi = b->digits;
    size_t al = a->int_len, bl = b->int_len;
    while (al > 0 && *ai == '0') {
        ai++;
        al--;
    }
    while (bl > 0 && *bi == '0') {
        bi++;
        bl--;
    }
    if (al != bl)
        return al < bl ? -1 : 1;
    int c = al ? memcmp(ai, bi, al) : 0;
    if (c != 0)
        return c < 0 ? -1 : 1;

    size_t n = a->frac_len > b->frac_len ? a->frac_len : b->frac_len;
    for (size_t i = 0; i < n; i++) {
        char x = decimal_frac_digit(a, i), y = decimal_frac_digit(b, i);
        if (x != y)
            return x < y ? -1 : 1;
    }
    return 0;
}

void decimal_sort_key(const struct decimal *d, char out[DECIMAL_KEY_LEN + 1])
{
    /* A parsed value has at most DECIMAL_MAX_LEN characters in all, so each
     * part fits its half of the key. */
    size_t int_len = d->int_len > DECIMAL_MAX_LEN ? DECIMAL_MAX_LEN : d->int_len;
    size_t frac_len = d->frac_len > DECIMAL_MAX_LEN ? DECIMAL_MAX_LEN : d->frac_len;
    size_t pad = DECIMAL_MAX_LEN - int_len;

    memset(out, '0', DECIMAL_KEY_LEN);
    memcpy(out + pad, d->digits + (d->int_len - int_len), int_len);
    if (frac_len)
        memcpy(out + DECIMAL_MAX_LEN, d->frac, frac_len);
    out[DECIMAL_KEY_LEN] = '\0';
}
