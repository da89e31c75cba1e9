#!/usr/bin/env bash
# Runs every test binary and suite, then prints one closing line:
#   N passed, M failed, K skipped
# and exits non-zero when anything failed or was skipped: every test must run
# here (PAYMENTD_TEST_ALLOW_SKIP=1 lets a local run pass with skips).
# Unit tests run under AddressSanitizer and UBSan (leaks included); the API
# suite runs against the sanitizer build and the optimised build, on the
# embedded store, then on MongoDB, then on PostgreSQL.  MongoDB is the test
# double of tests/mongo/ (started here, stopped on exit), unless
# PAYMENTD_TEST_MONGO_URI names a MongoDB already: the store contract tests
# and the API suite then run against it.  PostgreSQL is a private server of
# Debian's postgresql-15 (tests/pg/pg.sh: initdb in a temporary directory,
# a free loopback port; stopped on exit), unless PAYMENTD_TEST_PG_URI names
# a database already; the C tests find it in PAYMENTD_TEST_PG_URI and its
# directory (for tests that stop or kill it) in PAYMENTD_TEST_PG_DIR.  A
# store that does not start is a failure, never a skip.
# The operator console's browser tests (tests/browser/) run in headless
# chromium against the sanitizer build; a missing chromium, chromium-driver
# or python3-selenium is a failure, never a skip.
# The Debian package (tests/deb/test_package.sh) is built from a copy of
# the tree, installed, checked and purged; it needs root, as CI has.
# --unit-only skips the API suite, the browser tests and the package.
set -u
cd "$(dirname "$0")/.."

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
PY=/usr/bin/python3

# Counters files of libmongoc left in /dev/shm by processes that are gone
# (killed with -9 by earlier runs).
for f in /dev/shm/mongoc-*; do
  [ -e "$f" ] || continue
  kill -0 "${f##*-}" 2>/dev/null || rm -f "$f"
done

# Each run leaves its output and a result line in $results, so that groups
# of runs can go on in parallel and be counted at the end.
results=$(mktemp -d /tmp/paymentd-test-XXXXXX)
seq_no=0

# Runs a command, takes its "N passed, M failed[, K skipped]" line; a
# non-zero exit with no failure counted counts as one failure (a crash, a
# sanitizer report).  Skipped tests are listed by name.
run() {
  local name=$1; shift
  local id out rc p f s line
  seq_no=$((seq_no + 1)); id="$results/$BASHPID.$seq_no"
  out=$("$@" 2>&1); rc=$?
  line=$(printf '%s\n' "$out" | grep -E '[0-9]+ passed, [0-9]+ failed' | tail -n 1)
  p=$(printf '%s' "$line" | sed -E 's/^(.*[^0-9])?([0-9]+) passed.*/\2/'); p=${p:-0}
  f=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/'); f=${f:-0}
  s=0
  if printf '%s' "$line" | grep -qE '[0-9]+ skipped'; then
    s=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) skipped.*/\1/')
  fi
  [ -z "$line" ] && p=0 && f=0
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  if [ "$f" -ne 0 ]; then
    { printf '%s\n' "$out" | tail -n 60; echo "FAILED: $name (exit $rc)"; } > "$id.out"
  elif [ "$s" -ne 0 ]; then
    { printf '%s\n' "$out" | grep -E '(^SKIP |skipped: )'
      echo "SKIPPED: $name ($p passed, $s skipped)"; } > "$id.out"
  else
    echo "ok: $name ($p passed)" > "$id.out"
  fi
  echo "$p $f $s" > "$id.res"
  cat "$id.out"
}

# Counts a check that is not a test binary: name, then 0 (passed) or not.
count() {
  seq_no=$((seq_no + 1))
  if [ "$2" -eq 0 ]; then echo "1 0 0"; else echo "0 1 0"; fi > "$results/$BASHPID.$seq_no.res"
}

# The MongoDB test double and the PostgreSQL server, for their stores'
# contract and API tests: stopped on exit, whatever happens.
double_dir=""
pg_dir=""
stop_stores() {
  if [ -n "$double_dir" ]; then
    tests/mongo/double.sh stop "$double_dir" >/dev/null 2>&1
    rm -rf "$double_dir"
  fi
  if [ -n "$pg_dir" ]; then
    tests/pg/pg.sh stop "$pg_dir" >/dev/null 2>&1 || tests/pg/pg.sh kill "$pg_dir" >/dev/null 2>&1
    rm -rf "$pg_dir"
  fi
  rm -rf "$results"
}
trap stop_stores EXIT
if [ -z "${PAYMENTD_TEST_MONGO_URI:-}" ]; then
  double_dir=$(mktemp -d /tmp/paymentd-double-XXXXXX)
  if port=$(tests/mongo/double.sh start "$double_dir"); then
    export PAYMENTD_TEST_MONGO_URI="mongodb://127.0.0.1:$port"
    echo "ok: MongoDB test double listening on port $port"
  else
    echo "FAILED: the MongoDB test double did not start (tests/mongo/double.sh)"
    count double 1
  fi
fi

if [ -z "${PAYMENTD_TEST_PG_URI:-}" ]; then
  pg_dir=$(mktemp -d /tmp/paymentd-pg-XXXXXX)
  if pg_uri=$(tests/pg/pg.sh start "$pg_dir"); then
    export PAYMENTD_TEST_PG_URI="$pg_uri" PAYMENTD_TEST_PG_DIR="$pg_dir"
    echo "ok: PostgreSQL listening ($pg_uri)"
  else
    echo "FAILED: PostgreSQL did not start (tests/pg/pg.sh start $pg_dir)"
    count postgresql 1
  fi
fi

# Unit tests, the schema check and the fuzz corpus replays, in the
# background: they are mostly CPU, the API suites mostly waiting.
unit_tests() {
  for t in $(find build/asan/tests -type f -name 'test_*' -perm -u+x 2>/dev/null | sort); do
    run "$t" "$t"
  done
  if make -s check-schema; then
    echo "ok: schema table matches spec/seed-swagger.yml"; count schema 0
  else
    echo "FAILED: src/payment/schema_gen.c is stale: run make schema"; count schema 1
  fi
  # The fuzzers' committed corpus, replayed once per harness (a regression
  # check; `make fuzz` does the fuzzing).
  for h in $(cd fuzz && ls fuzz_*.c | sed 's/^fuzz_//; s/\.c$//'); do
    if make -s -C fuzz "regress-$h" >/dev/null 2>"$results/fuzz-$h.log"; then
      echo "ok: fuzz corpus replay ($h)"; count "fuzz $h" 0
    else
      tail -n 40 "$results/fuzz-$h.log"
      echo "FAILED: fuzz corpus replay ($h)"; count "fuzz $h" 1
    fi
  done
}

unit_tests &
unit_pid=$!

if [ "${1:-}" != "--unit-only" ]; then
  run "api (asan build)" $PY tests/api/run.py --binary build/asan/paymentd
  run "api (release build)" $PY tests/api/run.py --binary build/paymentd
  if [ -n "${PAYMENTD_TEST_MONGO_URI:-}" ]; then
    run "api on mongodb (asan build)" \
      $PY tests/api/run.py --binary build/asan/paymentd --mongo "$PAYMENTD_TEST_MONGO_URI"
    run "api on mongodb (release build)" \
      $PY tests/api/run.py --binary build/paymentd --mongo "$PAYMENTD_TEST_MONGO_URI"
  fi
  run "browser (asan build)" $PY tests/browser/test_console.py --binary build/asan/paymentd
  run "debian package" tests/deb/test_package.sh
  if [ -n "${PAYMENTD_TEST_PG_URI:-}" ]; then
    run "api on postgresql (asan build)" \
      $PY tests/api/run.py --binary build/asan/paymentd --pg "$PAYMENTD_TEST_PG_URI"
    run "api on postgresql (release build)" \
      $PY tests/api/run.py --binary build/paymentd --pg "$PAYMENTD_TEST_PG_URI"
  fi
fi
wait "$unit_pid"

passed=0
failed=0
skipped=0
for r in "$results"/*.res; do
  [ -e "$r" ] || continue
  read -r p f s < "$r"
  passed=$((passed + p))
  failed=$((failed + f))
  skipped=$((skipped + s))
done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] || exit 1
if [ "$skipped" -ne 0 ] && [ "${PAYMENTD_TEST_ALLOW_SKIP:-}" != 1 ]; then
  echo "test.sh: $skipped tests were skipped; every test must run (PAYMENTD_TEST_ALLOW_SKIP=1 allows it locally)" >&2
  exit 1
fi
