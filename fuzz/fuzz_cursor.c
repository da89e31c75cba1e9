/* fuzz_cursor: payment_cursor_decode() on arbitrary text, and
 * payment_cursor_encode() on sequence numbers drawn from the input.
 *
 * Properties checked, beyond "no crash, leak or UB":
 *  - a cursor that decodes names a sequence number >= 0 and is exactly what
 *    encode makes of it: encode(decode(x)) == x, so no two texts name one
 *    position and a client cannot craft a second spelling;
 *  - for every seq >= 0, encode gives PAYMENT_CURSOR_MAX_LEN characters at
 *    most, all URL-safe (they go into links unescaped), and decodes back to
 *    seq; a negative seq encodes as "", which does not decode. */
#include "fuzz.h"
#include "payment/query.h"

/* RFC 3986 unreserved characters: they need no escaping in a query. */
static int cursor_url_safe(const char *s)
{
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == '~'))
            return 0;
    }
    return 1;
}

static void cursor_check_seq(int64_t seq)
{
    char out[PAYMENT_CURSOR_MAX_LEN + 1];
    int64_t back = -1;
    memset(out, 'X', sizeof out); /* encode must terminate what it writes */
    payment_cursor_encode(seq, out);
    FUZZ_CHECK(memchr(out, '\0', sizeof out) != NULL);
    if (seq < 0) {
        FUZZ_CHECK(out[0] == '\0');
        FUZZ_CHECK(payment_cursor_decode(out, &back) != 0);
        return;
    }
    FUZZ_CHECK(out[0] != '\0' && cursor_url_safe(out));
    FUZZ_CHECK(payment_cursor_decode(out, &back) == 0 && back == seq);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_strndup(data, size);
    int64_t seq = -1;
    if (payment_cursor_decode(s, &seq) == 0) {
        char out[PAYMENT_CURSOR_MAX_LEN + 1];
        FUZZ_CHECK(seq >= 0);
        payment_cursor_encode(seq, out);
        if (strcmp(out, s) != 0)
            fprintf(stderr, "cursor %s decodes to %lld, which encodes as %s\n", s,
                    (long long)seq, out);
        FUZZ_CHECK(strcmp(out, s) == 0);
    }
    free(s);

    /* The input's first 8 bytes as a seq, big-endian, and its neighbours. */
    if (size >= 8) {
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
            v = v << 8 | data[i];
        int64_t x = (int64_t)v;
        cursor_check_seq(x);
        cursor_check_seq(x == INT64_MAX ? x : x + 1);
        cursor_check_seq(x == INT64_MIN ? x : x - 1);
    }
    return 0;
}
