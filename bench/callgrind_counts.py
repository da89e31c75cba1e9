#!/usr/bin/python3
"""callgrind_counts.py: instructions and heap allocations in callgrind output files, for
bench/instructions.sh.

  callgrind_counts.py FILE...     one line per file, then a total line for the files that are
                                  not the webhook deliverer's threads:
                                  "FILE instructions=N allocations=N webhook=0|1"
                                  "TOTAL instructions=N allocations=N webhook_instructions=N"
  callgrind_counts.py selftest    compiles a program with a known number of allocations, runs
                                  it under callgrind and checks the count (exit 1 when wrong)

Allocations are the calls of malloc, calloc, realloc, posix_memalign, aligned_alloc and
memalign, read from the calls= lines under each cfn= (callgrind_annotate prints costs, not call
counts).  A call from one of those functions to another (glibc's realloc(NULL, n) may enter
malloc) is not counted twice.  callgrind compresses names: "fn=(12) malloc" names id 12 once,
later lines say "cfn=(12)"; fn= and cfn= share the ids.

With --separate-threads=yes each thread has its own file; a file whose thread runs one of the
webhook deliverer's thread functions (src/webhook/deliver.c) is counted apart: that is the
delivering of webhooks, not the requests' own work.
"""
import os
import re
import subprocess
import sys
import tempfile

ALLOCATORS = {"malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign"}
WEBHOOK_THREADS = {"webhook_dispatch_main", "webhook_transfer_main", "webhook_sender_main"}
NAME = re.compile(r"^c?fn=\((\d+)\)(?: (.*))?$")


def base_name(name):
    """A function's name without callgrind's recursion suffix ('2) or a symbol version."""
    return name.split("'", 1)[0].split("@", 1)[0]


def count_file(path, names):
    """(instructions, allocations, is a webhook thread) of one callgrind output file."""
    instructions = None
    totals = None
    allocations = 0
    webhook = False
    caller = ""
    callee = ""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(("fn=", "cfn=")):
                m = NAME.match(line.rstrip("\n"))
                if not m:
                    continue
                if m.group(2) is not None:
                    names[m.group(1)] = base_name(m.group(2))
                name = names.get(m.group(1), "")
                if line.startswith("fn="):
                    caller = name
                    webhook = webhook or name in WEBHOOK_THREADS
                else:
                    callee = name
            elif line.startswith("calls="):
                if callee in ALLOCATORS and caller not in ALLOCATORS:
                    allocations += int(line[6:].split()[0])
            elif line.startswith("summary:"):
                instructions = int(line.split()[1])
            elif line.startswith("totals:"):
                totals = int(line.split()[1])
    # The header's summary: is 0 when collection started off (--instr-atstart=no); the
    # totals: line at the end holds the dump's cost.
    if totals is not None:
        instructions = totals
    if instructions is None:
        sys.exit("callgrind_counts: %s has no summary line" % path)
    return instructions, allocations, webhook


def report(paths):
    names = {}
    total_i = total_a = hook_i = 0
    for path in paths:
        i, a, hook = count_file(path, names)
        print("%s instructions=%d allocations=%d webhook=%d" % (path, i, a, hook))
        if hook:
            hook_i += i
        else:
            total_i += i
            total_a += a
    print("TOTAL instructions=%d allocations=%d webhook_instructions=%d" % (total_i, total_a, hook_i))


# The known case: 100 malloc, 20 calloc, 30 realloc (the first of NULL), 5 posix_memalign,
# 3 strdup (a malloc each), 8 aligned_alloc (glibc's alias of memalign), pthread_create's calloc
# of the new thread's TLS vector (allocate_dtv) and, in the second thread, 7 malloc: 174.
SELFTEST_C = r"""
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
static void *thread_main(void *arg) {
    (void)arg;
    for (int i = 0; i < 7; i++) free(malloc(10 + (size_t)i));
    return NULL;
}
int main(void) {
    void *p = NULL;
    for (int i = 0; i < 100; i++) free(malloc(32 + (size_t)i));
    for (int i = 0; i < 20; i++) free(calloc(4, 8 + (size_t)i));
    for (int i = 0; i < 30; i++) { p = realloc(p, 16 * ((size_t)i + 1)); if (!p) return 1; }
    free(p);
    for (int i = 0; i < 5; i++) { void *q; if (posix_memalign(&q, 64, 100)) return 1; free(q); }
    for (int i = 0; i < 3; i++) free(strdup("abc"));
    for (int i = 0; i < 8; i++) free(aligned_alloc(64, 128));
    pthread_t t;
    if (pthread_create(&t, NULL, thread_main, NULL) || pthread_join(t, NULL)) return 1;
    return 0;
}
"""
SELFTEST_WANT = 100 + 20 + 30 + 5 + 3 + 8 + 1 + 7


def selftest():
    with tempfile.TemporaryDirectory() as d:
        src, exe = os.path.join(d, "known.c"), os.path.join(d, "known")
        with open(src, "w", encoding="utf-8") as f:
            f.write(SELFTEST_C)
        subprocess.run(["gcc", "-std=c17", "-D_GNU_SOURCE", "-Wall", "-Werror", "-O0", "-o", exe, src, "-lpthread"], check=True)
        # The baseline: the same program's startup allocations (the dynamic loader, stdio...)
        # are counted too, so the check takes the difference with collection limited to main.
        out = os.path.join(d, "cg.out")
        subprocess.run(["valgrind", "--tool=callgrind", "--separate-threads=yes",
                        "--toggle-collect=main", "--toggle-collect=thread_main",
                        "--callgrind-out-file=" + out, exe],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        files = sorted(os.path.join(d, n) for n in os.listdir(d) if n.startswith("cg.out-"))
        names = {}
        got = sum(count_file(p, names)[1] for p in files)
    if got != SELFTEST_WANT:
        sys.exit("callgrind_counts selftest: counted %d allocations, the program makes %d"
                 % (got, SELFTEST_WANT))
    print("callgrind_counts selftest: %d allocations counted, %d made: ok" % (got, SELFTEST_WANT))


def main():
    if sys.argv[1:] == ["selftest"]:
        selftest()
    elif len(sys.argv) > 1:
        report(sys.argv[1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
