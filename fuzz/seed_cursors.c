/* seed_cursors: prints payment_cursor_encode() of each sequence number on
 * the command line, one per line.  gen_corpus.py uses it so that the seed
 * corpus holds cursors the real encoder made, not a copy of its algorithm. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "payment/query.h"

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        char *end;
        errno = 0;
        long long seq = strtoll(argv[i], &end, 10);
        if (errno != 0 || *end != '\0' || end == argv[i]) {
            fprintf(stderr, "seed_cursors: not a sequence number: %s\n", argv[i]);
            return 1;
        }
        char out[PAYMENT_CURSOR_MAX_LEN + 1];
        payment_cursor_encode((int64_t)seq, out);
        if (printf("%s\n", out) < 0)
            return 1;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
