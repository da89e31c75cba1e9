#!/usr/bin/env bash
# bench/run.sh: measures paymentd against the references that give its figures
# a meaning on this machine, and prints one table with the targets of the
# benchmark issue marked PASS or FAIL.
#
# Usage, from the repository root:
#   bench/run.sh                      # 10,000 payments, 10 s per workload (a few minutes)
#   bench/run.sh --growth             # the same, plus GET and list at 1,000,000 payments
#   bench/run.sh --duration 5 --payments 50000 --connections 128
#   bench/run.sh --webhooks-only      # only the webhook runs (step 6c), with their table
#   bench/run.sh --store postgres     # also every paymentd workload on PostgreSQL (step 6e)
#
# Options:
#   --payments N          payments preloaded before the workloads (default 10000)
#   --duration SECONDS    length of each wrk run (default 10)
#   --connections N       keep-alive connections of the main runs (default 64)
#   --threads N           wrk threads (default 2)
#   --growth              also a second paymentd on a fresh store of --growth-payments
#                         payments: GET and list on it, each next to the same run on
#                         the first store, and their ratios
#   --growth-payments N   size of the growth store (default 1000000)
#   --binary PATH         benchmark this paymentd instead of building one
#   --server-args "ARGS"  extra flags for paymentd (e.g. "--log-level warn")
#   --tmpdir DIR          where the temporary folder goes (default $TMPDIR or /tmp);
#                         the store and the fsync measurement live there
#   --keep                keep the temporary folder (logs, wrk outputs, store)
#   --baseline REF        also measure a previous build beside this one: REF is a
#                         git revision (built in a temporary worktree) or a
#                         paymentd binary; GET, list, PUT and POST run against
#                         it next to the same run against this build, each on
#                         its own preloaded store (reads twice each, in the
#                         order this, baseline, baseline, this, and averaged),
#                         with the bytes each write makes the server write
#   --webhooks-only       run only the webhook measurements (6c) and print their rows
#   --no-peers            do not build, start or measure the two peers
#   --peer-duration S     length of each wrk run against a peer (default 5)
#   --store KIND          sqlite (default: the embedded store only) or postgres:
#                         also a private PostgreSQL server (tests/pg/pg.sh, in the
#                         temporary folder) and a second paymentd on it, measured
#                         right after each of paymentd's runs on SQLite (step 6e);
#                         with --webhooks-only, the webhook runs on both stores
#
# What it does:
#   1. Installs what is missing (scripts/setup.sh for the server's packages,
#      then wrk and nginx-light), with apt-get as root or through sudo.
#   2. Builds build/paymentd with the project's default flags (make, -O2) and
#      copies it into the temporary folder, so a rebuild during the run changes
#      nothing.
#   3. Measures the rate of single 4 KiB write + fdatasync calls in the
#      temporary folder (bench/fsync_rate.c).
#   4. Starts paymentd with its default flags on a fresh store in the
#      temporary folder on a free port (stderr, the access log, to a file) and
#      preloads the payments with wrk (bench/preload.lua): the seed sample with
#      payment_purpose_coded "X", ids derived from an index (bench/common.lua),
#      spread over 100 organisations.
#   5. Measures the ceilings next to the paymentd run each one serves, every
#      one answering bytes fetched from paymentd and checked byte for byte
#      (cmp) before it is measured, with paymentd idle and no reference
#      running while paymentd is measured: nginx serving one payment's GET body
#      as a static file and from memory (return 200 of the body held in
#      variables) and a bare libmicrohttpd server (bench/mhd_static.c, the
#      daemon set up as paymentd's) answering it from memory, before GET;
#      nginx serving one list page as a static file, before list; nginx
#      answering POST with one create answer of paymentd from memory (return
#      201), before POST.
#   6. Runs wrk (2 threads, --latency) for --duration each: nginx static,
#      nginx memory, bare libmicrohttpd, GET by id, GET by id over 1,000
#      connections, nginx list page, list of 100 by organisation, PUT replace,
#      [--growth: GET and list on both stores, alternately], nginx POST, POST
#      create.  Requests/s counts successful responses only; errors are socket
#      errors plus responses >= 400.
#   6b. The change feed: bytes the server wrote per PUT and per POST (its
#      /proc/PID/io, over each run, divided by the successful requests), a
#      consumer reading the whole feed from the start, and a consumer
#      following it with wait while POST runs (bench/feed_consumer.py).
#   6c. Webhooks, on servers of their own (--webhook-allow-private true, a
#      fresh store), the receiver a bare libmicrohttpd answering 200 at once
#      (bench/mhd_static.c): POST creates in one organisation with no
#      endpoint, then with three endpoints of that organisation registered
#      (every create owed to each), and the deliveries made meanwhile until
#      the backlog is drained; then a backlog written with --webhooks false
#      and drained by a server started with them: deliveries per second from
#      the store, POSTs competing with nothing (bench/post_org.lua; counts
#      from /metrics).
#   6d. The peers of ../shared/peers/ (node/ and go/, set up by
#      scripts/bench-setup.sh into build/peers/, copied into the temporary
#      folder), each on a fresh store preloaded as paymentd's, measured right
#      after paymentd on GET, the deep list, PUT and POST (--peer-duration).
#   6e. --store postgres: tests/pg/pg.sh starts a private PostgreSQL server
#      (initdb in the temporary folder, synchronous_commit and fsync on, as
#      shipped) and a second paymentd on it (--store postgres://...), preloaded
#      as the first; GET, list, the deep list's offset and cursor pages, PUT,
#      POST, the feed and the webhooks (on a database of their own) each run on
#      it right after the same run on SQLite, with paymentd's store counters
#      (/metrics: commits, writes, batch sizes) and the server's WAL
#      (pg_stat_wal: bytes, fsyncs) over each write run, and the bytes the
#      server's processes sent to storage.  A second table gives both stores
#      side by side with the ratio PostgreSQL/SQLite, the server's version and
#      configuration (SHOW ...) and the final batch sizes.
#   7. Prints the table: stdout gets only the table (markdown), progress goes
#      to stderr.  The exit status is 0 when the measurements ran, whatever the
#      targets say.
# Everything it started is stopped and the temporary folder removed on exit.
set -euo pipefail
export LC_ALL=C

PAYMENTS=10000
DURATION=10
CONNECTIONS=64
THREADS=2
GROWTH=0
GROWTH_PAYMENTS=1000000
BINARY=""
SERVER_ARGS=""
TMPBASE="${TMPDIR:-/tmp}"
KEEP=0
BASELINE=""
BIG_CONNECTIONS=1000
WEBHOOKS_ONLY=0
DRAIN_TIMEOUT=600   # seconds a webhook backlog may take to drain before the run fails
PEERS=1
PEER_DURATION=5
DEEP=2000           # payments of the deep organisation the offset and cursor lists page through
STORE=sqlite        # sqlite, or postgres: every paymentd workload on PostgreSQL too

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
log() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

while [ $# -gt 0 ]; do
  case "$1" in
    --payments) PAYMENTS="${2:-}"; shift 2 ;;
    --duration) DURATION="${2:-}"; shift 2 ;;
    --connections) CONNECTIONS="${2:-}"; shift 2 ;;
    --threads) THREADS="${2:-}"; shift 2 ;;
    --growth) GROWTH=1; shift ;;
    --growth-payments) GROWTH_PAYMENTS="${2:-}"; shift 2 ;;
    --binary) BINARY="${2:-}"; shift 2 ;;
    --server-args) SERVER_ARGS="${2:-}"; shift 2 ;;
    --tmpdir) TMPBASE="${2:-}"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --baseline) BASELINE="${2:-}"; shift 2 ;;
    --webhooks-only) WEBHOOKS_ONLY=1; shift ;;
    --no-peers) PEERS=0; shift ;;
    --peer-duration) PEER_DURATION="${2:-}"; shift 2 ;;
    --store) STORE="${2:-}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done
for v in PAYMENTS DURATION CONNECTIONS THREADS GROWTH_PAYMENTS PEER_DURATION; do
  if ! is_uint "${!v}" || [ "${!v}" -eq 0 ]; then
    die "--$(tr 'A-Z_' 'a-z-' <<<"$v") needs a positive integer"
  fi
done
[ "$PAYMENTS" -ge 1000 ] || die "--payments must be at least 1000"
[ "$GROWTH_PAYMENTS" -ge 1000 ] || die "--growth-payments must be at least 1000"
[ "$CONNECTIONS" -ge "$THREADS" ] || die "--connections must be at least --threads"
case "$STORE" in sqlite | postgres) ;; *) die "--store must be sqlite or postgres" ;; esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
cd "$ROOT"

# --- installation ------------------------------------------------------------

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

install_tools() {
  scripts/setup.sh
  local missing=()
  command -v wrk >/dev/null || missing+=(wrk)
  command -v curl >/dev/null || missing+=(curl)
  command -v gcc >/dev/null || missing+=(gcc)
  command -v make >/dev/null || missing+=(make)
  local nginx_missing=0
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || nginx_missing=1
  [ ${#missing[@]} -gt 0 ] || [ $nginx_missing -eq 1 ] || return 0
  export DEBIAN_FRONTEND=noninteractive
  log "installing ${missing[*]} $([ $nginx_missing -eq 1 ] && echo nginx-light)"
  as_root apt-get update -q
  [ ${#missing[@]} -eq 0 ] || as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [ $nginx_missing -eq 1 ]; then
    as_root apt-get install -y -q --no-install-recommends nginx-light ||
      as_root apt-get install -y -q --no-install-recommends nginx
  fi
}
install_tools
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
NPROC="$(nproc)"

# 1,000 connections need descriptors on both sides of the socket.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((2 * BIG_CONNECTIONS + 100)) ] ||
  log "warning: ulimit -n is $(ulimit -n): the 1,000-connection run may fail for that reason"

# --- temporary folder and cleanup --------------------------------------------

mkdir -p "$TMPBASE"
WORK="$(mktemp -d "$TMPBASE/paymentd-bench.XXXXXX")"
SERVER_PID="" MAIN_PID="" GROWTH_PID="" NGINX_PID="" MHD_PID="" SPAWN_PID="" WRK_PID="" RSS_PID=""
BASE_PID="" FEED_PID="" BASE_TREE="" HOOK_PID="" PG_PID="" PG_DIR="" SAMPLER_PID=""
declare -A PEER_PID PEER_URL PEER_FAIL
PEER_NAMES=(node go)

# Stops a child: SIGTERM (or $2), then SIGKILL if it is still there after 10 s.
stop_pid() {
  local pid="$1" sig="${2:-TERM}" _
  [ -n "$pid" ] || return 0
  kill -s "$sig" "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -s KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  set +e
  stop_pid "$RSS_PID"
  stop_pid "$WRK_PID"
  stop_pid "$NGINX_PID" QUIT
  stop_pid "$MHD_PID"
  stop_pid "$SPAWN_PID"
  stop_pid "$SERVER_PID"
  stop_pid "$MAIN_PID"
  stop_pid "$GROWTH_PID"
  stop_pid "$BASE_PID"
  stop_pid "$FEED_PID"
  stop_pid "$HOOK_PID"
  stop_pid "$SAMPLER_PID"
  stop_pid "$PG_PID"
  for p in "${PEER_NAMES[@]}"; do stop_pid "${PEER_PID[$p]:-}"; done
  [ -z "$PG_DIR" ] || "$ROOT/tests/pg/pg.sh" stop "$PG_DIR" >&2 || log "warning: could not stop PostgreSQL in $PG_DIR"
  [ -z "$BASE_TREE" ] || git -C "$ROOT" worktree remove --force "$BASE_TREE" >/dev/null 2>&1
  if [ "$KEEP" -eq 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# nginx workers drop root and must reach their file.
chmod 755 "$WORK"
mkdir -p "$WORK/state"

export BENCH_DIR="$BENCH" BENCH_SEED="$ROOT/spec/seed-payment.json"
export BENCH_THREADS="$THREADS" BENCH_STATE="$WORK/state"

# --- helpers -----------------------------------------------------------------

# Ports come from below the kernel's ephemeral range: wrk's thousands of
# client sockets (and their TIME_WAIT) live in that range and would make a
# later bind fail.
USED_PORTS=" "
EPHEMERAL_LO=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
if [ "$EPHEMERAL_LO" -gt 12000 ]; then PORT_LO=10000 PORT_SPAN=$((EPHEMERAL_LO - 10000))
else PORT_LO=61000 PORT_SPAN=4000; fi
port_in_use() {
  if command -v ss >/dev/null; then
    [ -n "$(ss -Htan "( sport = :$1 )" 2>/dev/null)" ]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}
# free_port VAR: a free port into VAR, never one handed out before (not run
# in a subshell, so that USED_PORTS remembers it).
free_port() {
  local p _
  for _ in $(seq 200); do
    p=$((PORT_LO + RANDOM % PORT_SPAN))
    case "$USED_PORTS" in *" $p "*) continue ;; esac
    if ! port_in_use "$p"; then
      USED_PORTS="$USED_PORTS$p "
      printf -v "$1" '%s' "$p"
      return 0
    fi
  done
  die "no free port found"
}

# The id of preloaded payment $1 and of organisation $1 (as in common.lua).
payment_id() { printf '%08x-%04x-4000-8000-%012x' $((($1 * 2654435761) % 4294967296)) $((0xb001)) "$1"; }
org_id() { printf '0e0e0e0e-0000-4000-8000-%012x' "$1"; }

# Value of key $2 in a "BENCH k=v ..." line $1.
field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }

calc() { awk "BEGIN { print $* }"; }

wait_http() { # url pid: waits up to 10 s for an answer while pid lives
  local _
  for _ in $(seq 100); do
    curl -s -o /dev/null "$1" && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# --- build -------------------------------------------------------------------

if [ -n "$BINARY" ]; then
  [ -x "$BINARY" ] || die "--binary $BINARY is not an executable"
  cp "$BINARY" "$WORK/paymentd"
else
  log "building build/paymentd (make, default flags)"
  make -j2 build/paymentd >&2 || die "make build/paymentd failed"
  cp build/paymentd "$WORK/paymentd"
fi
# The baseline: a binary, or a git revision built in a worktree of its own.
if [ -n "$BASELINE" ]; then
  if [ -x "$BASELINE" ] && [ -f "$BASELINE" ]; then
    cp "$BASELINE" "$WORK/paymentd.base"
  else
    BASE_REV="$(git -C "$ROOT" rev-parse --short "$BASELINE^{commit}" 2>/dev/null)" ||
      die "--baseline $BASELINE is neither a binary nor a git revision"
    BASE_TREE="$WORK/baseline-src"
    log "building the baseline $BASE_REV"
    git -C "$ROOT" worktree add --detach "$BASE_TREE" "$BASE_REV" >&2 || die "git worktree add failed"
    make -C "$BASE_TREE" -j2 build/paymentd >&2 || die "make of the baseline failed"
    cp "$BASE_TREE/build/paymentd" "$WORK/paymentd.base"
    BASELINE="$BASE_REV"
  fi
fi
CFLAGS_BENCH=(-std=c17 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
              -Wmissing-prototypes)
gcc "${CFLAGS_BENCH[@]}" -o "$WORK/fsync_rate" "$BENCH/fsync_rate.c" || die "cannot build fsync_rate"
gcc "${CFLAGS_BENCH[@]}" -o "$WORK/mhd_static" "$BENCH/mhd_static.c" -lmicrohttpd ||
  die "cannot build mhd_static (libmicrohttpd-dev comes with scripts/setup.sh)"

# --- results -----------------------------------------------------------------

declare -A RPS P50 P99 ERRS OKS WBYTES WCHARS
ORDER=()

# run_wrk NAME SCRIPT URL CONNECTIONS: one measured wrk run.
run_wrk() {
  local name="$1" script="$2" url="$3" conns="$4" out line req dur st
  log "wrk $name: $conns connections, ${DURATION}s"
  out="$WORK/wrk.$name.txt"
  wrk -t"$THREADS" -c"$conns" -d"${DURATION}s" --latency -s "$BENCH/$script" "$url" >"$out" 2>&1 &
  WRK_PID=$!
  wait "$WRK_PID" || { WRK_PID=""; cat "$out" >&2; die "wrk $name failed"; }
  WRK_PID=""
  line="$(grep '^BENCH ' "$out" || true)"
  [ -n "$line" ] || { cat "$out" >&2; die "wrk $name printed no result"; }
  req="$(field "$line" requests)"; dur="$(field "$line" duration_us)"; st="$(field "$line" status)"
  RPS[$name]="$(calc "($req - $st) / ($dur / 1e6)")"
  OKS[$name]=$((req - st))
  P50[$name]="$(calc "$(field "$line" p50_us) / 1000")"
  P99[$name]="$(calc "$(field "$line" p99_us) / 1000")"
  ERRS[$name]=$(($(field "$line" connect) + $(field "$line" read) + $(field "$line" write) +
                 $(field "$line" timeout) + st))
  ORDER+=("$name")
  log "  $(printf '%.0f' "${RPS[$name]}") req/s, p50 ${P50[$name]} ms, p99 ${P99[$name]} ms, errors ${ERRS[$name]}"
}

# io_counter PID FIELD: a counter of /proc/PID/io (write_bytes: what the
# process made the kernel send to storage; wchar: what it passed to write
# calls).
io_counter() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/io"; }

# run_wrk_io NAME SCRIPT URL CONNECTIONS PID: run_wrk, and the bytes PID wrote
# per successful request meanwhile.
run_wrk_io() {
  local name="$1" pid="$5" wb wc
  wb=$(io_counter "$pid" write_bytes); wc=$(io_counter "$pid" wchar)
  run_wrk "$1" "$2" "$3" "$4"
  WBYTES[$name]=$(calc "($(io_counter "$pid" write_bytes) - $wb) / (${OKS[$name]} > 0 ? ${OKS[$name]} : 1)")
  WCHARS[$name]=$(calc "($(io_counter "$pid" wchar) - $wc) / (${OKS[$name]} > 0 ? ${OKS[$name]} : 1)")
  log "  $(printf '%.0f' "${WBYTES[$name]}") bytes to storage, $(printf '%.0f' "${WCHARS[$name]}") bytes written per request"
}

# run_pair NAME SCRIPT: NAME on this build, then NAME_base on the baseline
# right after (when there is one), then NAME_pg on PostgreSQL (--store
# postgres); writes count their bytes and the store's commits.
run_pair() {
  local name="$1" script="$2"
  if [ "$script" = put.lua ] || [ "$script" = post.lua ]; then
    run_wrk_commits "$name" "$script" "$URL" "$SERVER_PID"
    [ -z "$BASE_PID" ] || run_wrk_io "${name}_base" "$script" "$BASE_URL" "$CONNECTIONS" "$BASE_PID"
    [ -z "$PG_PID" ] || run_wrk_pg_write "${name}_pg" "$script"
    return 0
  fi
  run_reads "$name" "$script"
  [ -z "$PG_PID" ] || run_wrk "${name}_pg" "$script" "$PG_URL" "$CONNECTIONS"
}

# run_reads NAME SCRIPT: NAME on this build, or beside the baseline.
run_reads() {
  local name="$1" script="$2"
  if [ -z "$BASE_PID" ]; then
    run_wrk "$name" "$script" "$URL" "$CONNECTIONS"
  else
    # Reads change nothing, so they run this, baseline, baseline, this, and
    # each side's figures are the mean of its two runs: a machine whose load
    # drifts during the four favours neither.
    run_wrk "${name}_1" "$script" "$URL" "$CONNECTIONS"
    run_wrk "${name}_base_1" "$script" "$BASE_URL" "$CONNECTIONS"
    run_wrk "${name}_base_2" "$script" "$BASE_URL" "$CONNECTIONS"
    run_wrk "${name}_2" "$script" "$URL" "$CONNECTIONS"
    mean_runs "$name"
    mean_runs "${name}_base"
  fi
}

# mean_runs NAME: NAME's figures, the mean of NAME_1's and NAME_2's (errors
# summed).
mean_runs() {
  local n="$1"
  RPS[$n]=$(calc "(${RPS[${n}_1]} + ${RPS[${n}_2]}) / 2")
  P50[$n]=$(calc "(${P50[${n}_1]} + ${P50[${n}_2]}) / 2")
  P99[$n]=$(calc "(${P99[${n}_1]} + ${P99[${n}_2]}) / 2")
  ERRS[$n]=$((ERRS[${n}_1] + ERRS[${n}_2]))
  log "  $n: mean $(printf '%.0f' "${RPS[$n]}") req/s of two runs"
}

# feed_read NAME ARGS...: bench/feed_consumer.py against this build; its
# result into FEED_EVENTS, FEED_SECS, FEED_LAG of NAME.
declare -A FEED_EVENTS FEED_SECS FEED_LAG FEED_AFTER
feed_result() {
  local name="$1" out="$2" line
  line="$(grep '^FEED ' "$out" || true)"
  [ -n "$line" ] || { cat "$out" >&2; die "feed consumer $name printed no result"; }
  [ "$(field "$line" errors)" = 0 ] || { cat "$out" >&2; die "feed consumer $name saw errors"; }
  FEED_EVENTS[$name]=$(field "$line" events); FEED_SECS[$name]=$(field "$line" seconds)
  FEED_LAG[$name]=$(field "$line" lag_s); FEED_AFTER[$name]=$(field "$line" after)
  log "  feed $name: ${FEED_EVENTS[$name]} events in ${FEED_SECS[$name]} s, lag ${FEED_LAG[$name]} s"
}

# --- paymentd ----------------------------------------------------------------

# spawn_listening NAME LOG PATH CMD...: starts CMD in the background on a free
# port of 127.0.0.1 (every @PORT@ in its arguments becomes the port), its
# stderr to LOG, and waits until PATH answers.  Another program may take the
# port first: then it tries another.  Sets SPAWN_PID and SPAWN_URL; the
# caller takes SPAWN_PID over (cleanup stops it meanwhile).
spawn_listening() {
  local name="$1" log_file="$2" path="$3" attempt port
  shift 3
  for attempt in 1 2 3; do
    free_port port
    SPAWN_URL="http://127.0.0.1:$port"
    "${@//@PORT@/$port}" 2>"$log_file" &
    SPAWN_PID=$!
    wait_http "$SPAWN_URL$path" "$SPAWN_PID" && return 0
    stop_pid "$SPAWN_PID"; SPAWN_PID=""
    grep -q 'in use' "$log_file" && [ "$attempt" -lt 3 ] && continue
    tail -5 "$log_file" >&2
    die "$name did not start"
  done
}

# start_server DIR [BINARY]: paymentd (or BINARY) on a fresh store in DIR.
start_server() {
  local dir="$1" bin="${2:-$WORK/paymentd}"
  mkdir -p "$dir"
  # shellcheck disable=SC2086  # SERVER_ARGS is a list of flags
  spawn_listening paymentd "$dir/paymentd.log" /healthz \
    "$bin" --store "sqlite:$dir/p.db" --listen "127.0.0.1:@PORT@" $SERVER_ARGS
  SERVER_PID=$SPAWN_PID URL=$SPAWN_URL SPAWN_PID=""
  log "paymentd $SERVER_PID on $URL, store $dir/p.db"
}

stop_server() { stop_pid "$RSS_PID"; RSS_PID=""; stop_pid "$SERVER_PID"; SERVER_PID=""; }

# warm_store DIR: reads the store's files once, so that they are in the page
# cache.  A preload writes the whole file, yet on these machines part of a
# large one (1.2 to 2.8 GB of the 7.8 GB store of 1,000,000 payments) is not
# cached afterwards, and GETs would then measure the disk.  The growth check
# compares lookups at two sizes, each with its store cached, as the 10,000
# payments are anyway.
warm_store() {
  local dir="$1" f
  for f in "$dir/p.db" "$dir/p.db-wal"; do
    [ ! -f "$f" ] || cat "$f" >/dev/null || die "cannot read $f"
  done
  if command -v fincore >/dev/null; then
    log "  store $dir/p.db in the page cache: $(fincore --noheadings --output RES "$dir/p.db" | tr -d ' ') of $(du -h "$dir/p.db" | cut -f1)"
  fi
}

# RSS of paymentd, sampled twice a second into rss.txt while it runs: the
# kernel updates VmHWM lazily, so a sample can exceed it.
start_rss_sampler() {
  : >"$WORK/rss.txt"
  ( while :; do awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null; sleep 0.5; done ) \
    >"$WORK/rss.txt" &
  RSS_PID=$!
}

# Peak RSS so far in KiB: the larger of VmHWM and the samples.
peak_rss_kb() {
  { awk '/^VmHWM/ {print $2}' "/proc/$SERVER_PID/status"; cat "$WORK/rss.txt"; } | sort -n | tail -1
}

# preload N: creates payments 0..N-1 through the API, all threads in parallel.
preload() {
  local n="$1" limit start now last=0 done_files progress out line created existed rejected secs
  export BENCH_PAYMENTS="$n"
  rm -f "$WORK/state"/preload.*
  limit=$((120 + n / 100))   # wrk's own deadline: no slower than 100 creates/s
  out="$WORK/wrk.preload.$n.txt"
  log "preloading $n payments"
  start=$(date +%s.%N); last=$(date +%s)
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${limit}s" -s "$BENCH/preload.lua" "$URL" >"$out" 2>&1 &
  WRK_PID=$!
  while kill -0 "$WRK_PID" 2>/dev/null; do
    done_files=$(find "$WORK/state" -name 'preload.done.*' | wc -l)
    if [ "$done_files" -ge "$THREADS" ]; then kill -INT "$WRK_PID" 2>/dev/null || true; break; fi
    now=$(date +%s)
    if [ $((now - last)) -ge 15 ]; then
      last=$now
      progress=$(find "$WORK/state" -name 'preload.progress.*' -exec cat {} + | awk '{s += $1} END {print s + 0}')
      log "  $progress / $n ($(calc "int($progress / ($(date +%s.%N) - $start))")/s)"
    fi
    sleep 0.2
  done
  wait "$WRK_PID" || true
  WRK_PID=""
  secs=$(calc "$(date +%s.%N) - $start")
  line="$(grep '^PRELOAD created' "$out" || true)"
  [ -n "$line" ] || { cat "$out" >&2; die "preload printed no result"; }
  created=$(field "$line" created); existed=$(field "$line" existed); rejected=$(field "$line" rejected)
  if [ "$rejected" -ne 0 ] || [ $((created + existed)) -ne "$n" ]; then
    cat "$out" >&2
    die "preload incomplete: $line"
  fi
  PRELOAD_RATE[$n]="$(calc "int($n / $secs)")"
  log "  $n payments in $(printf '%.1f' "$secs") s ($(printf '%s' "${PRELOAD_RATE[$n]}")/s)"
}
declare -A PRELOAD_RATE

# check_store N: a preloaded payment answers and a list page is full.
check_store() {
  local n="$1" code items want
  code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/v1/payments/$(payment_id $((n - 1)))")
  [ "$code" = 200 ] || die "GET of the last preloaded payment answered $code"
  items=$(curl -gs "$URL/v1/payments?filter[organisation_id]=$(org_id 0)&page[size]=100" |
          grep -o '"type":"payments"' | wc -l)
  want=$((n / 100 < 100 ? n / 100 : 100))
  [ "$items" -eq "$want" ] || die "list of organisation 0 has $items payments, expected $want"
  LIST_ITEMS=$items
}

# --- references --------------------------------------------------------------

# nginx_return_server PORT STATUS FILE TAG: a server block answering every
# request with STATUS and FILE's bytes from memory.  nginx reads no config
# token longer than 4 KiB, so the bytes go into variables of 2,000 bytes each
# ($bench_TAG_0, ...) and `return` answers their concatenation (still memory
# only).  Inside '...' nginx unescapes \\ and \'; $ starts a variable, so a
# literal one goes through $bench_dollar (start_nginx defines it).  The
# trailing x keeps final newlines.
nginx_return_server() {
  local port="$1" status="$2" file="$3" tag="$4" d="$WORK/nginx.$NGINX_RUNS" f esc sets="" text="" k=0
  split -b 2000 -d -a 4 "$file" "$d/part.$tag."
  for f in "$d/part.$tag."*; do
    [ -e "$f" ] || continue   # an empty file has no part
    # shellcheck disable=SC2016  # ${bench_dollar} is nginx's, not ours
    esc="$(sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g" -e 's/\$/${bench_dollar}/g' "$f"; echo x)"
    sets="$sets            set \$bench_${tag}_$k '${esc%x}';"$'\n'
    text="$text\${bench_${tag}_$k}"
    k=$((k + 1))
  done
  printf '    server {\n        listen 127.0.0.1:%s;\n        location / {\n%s            return %s "%s";\n        }\n    }\n' \
    "$port" "$sets" "$status" "$text"
}

# start_nginx SPEC...: one nginx (own config and paths, a worker per CPU,
# keep-alive without a request limit) with a server per SPEC, each on a free
# port, each answering any URI and method: "static:FILE" serves FILE as a
# static file (sendfile), "STATUS:FILE" answers STATUS with FILE's bytes from
# memory.  NGINX_URL[i] is the URL of the i-th SPEC.
NGINX_RUNS=0
start_nginx() {
  local d spec file i=0 port servers="" dollar_var="" url
  NGINX_RUNS=$((NGINX_RUNS + 1))
  d="$WORK/nginx.$NGINX_RUNS"
  mkdir -p "$d/www" "$d/tmp"
  chmod 755 "$d" "$d/www"
  NGINX_URL=()
  for spec in "$@"; do
    file="${spec#*:}"
    free_port port
    NGINX_URL+=("http://127.0.0.1:$port")
    if [ "${spec%%:*}" = static ]; then
      cp "$file" "$d/www/static.$i"; chmod 644 "$d/www/static.$i"
      servers="$servers    server {
        listen 127.0.0.1:$port;
        root $d/www;
        location / { try_files /static.$i =404; }
    }
"
    else
      servers="$servers$(nginx_return_server "$port" "${spec%%:*}" "$file" "s$i")"$'\n'
      # shellcheck disable=SC2016
      ! grep -q '\$' "$file" || dollar_var='geo $bench_dollar { default "$"; }'
    fi
    i=$((i + 1))
  done
  cat >"$d/nginx.conf" <<EOF
daemon off;
worker_processes $NPROC;
worker_rlimit_nofile 65536;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    server_tokens off;
    default_type application/json;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 1000000000;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    $dollar_var
$servers}
EOF
  "$NGINX" -p "$d" -c "$d/nginx.conf" -e "$d/error.log" &
  NGINX_PID=$!
  for url in "${NGINX_URL[@]}"; do
    wait_http "$url/" "$NGINX_PID" && continue
    cat "$d/error.log" >&2
    die "nginx did not start"
  done
  log "nginx $NGINX_PID: ${NGINX_URL[*]}"
}

stop_nginx() { stop_pid "$NGINX_PID" QUIT; NGINX_PID=""; }

# start_mhd FILE: bench/mhd_static answering FILE's bytes on MHD_URL.
start_mhd() {
  spawn_listening "bare libmicrohttpd" "$WORK/mhd_static.log" / "$WORK/mhd_static" @PORT@ "$1"
  MHD_PID=$SPAWN_PID MHD_URL=$SPAWN_URL SPAWN_PID=""
  log "bare libmicrohttpd $MHD_PID on $MHD_URL"
}

stop_mhd() { stop_pid "$MHD_PID"; MHD_PID=""; }

# check_same NAME STATUS FILE URL [CURL ARGS...]: a reference must answer
# STATUS and FILE's bytes (paymentd's answer) to two requests on one
# connection, the second reusing it: wrk then measures the same bytes with
# keep-alive.
check_same() {
  local name="$1" status="$2" want="$3" url="$4" out="$WORK/check.$1" got
  shift 4
  got="$(curl -s -o "$out.1" -o "$out.2" -w '%{http_code}:%{num_connects} ' "$@" "$url" "$url")" ||
    die "$name does not answer on $url"
  if ! cmp -s "$want" "$out.1" || ! cmp -s "$want" "$out.2"; then
    die "$name does not answer the same bytes as paymentd"
  fi
  [ "$got" = "$status:1 $status:0 " ] ||
    die "$name does not answer $status twice on one connection (status:connections made: $got)"
  log "  $name answers $status and paymentd's $(wc -c <"$want") bytes, with keep-alive"
}

# --- table helpers -----------------------------------------------------------

ms() { printf '%.2f ms' "$1"; }
num() { printf '%.0f' "$1" | sed -e ':a' -e 's/\B[0-9]\{3\}\>/,&/' -e 'ta'; }
verdict() { if [ "$(calc "($1) ? 1 : 0")" = 1 ]; then echo PASS; else echo FAIL; fi; }
row() { printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$@"; }
wrow() { # name label
  row "$2" "$(num "${RPS[$1]}") req/s" "$(ms "${P50[$1]}")" "$(ms "${P99[$1]}")" "${ERRS[$1]}" "" ""
}
ratio() { calc "$1 / ($2 > 0 ? $2 : 1e-9)"; }

# --- webhooks ----------------------------------------------------------------

DELIVERED='paymentd_webhook_deliveries_total{outcome="succeeded"}'
declare -A HOOK

# metric SERIES: the value of one series (name and labels) of the server's
# /metrics, 0 when absent.
metric() {
  curl -s "$URL/metrics" | awk -v k="$1" '$1 == k {v = $2} END {print v + 0}'
}

# start_hook_server DIR ARGS...: paymentd on the store in DIR (made when new),
# or on HOOK_STORE when set, webhooks to this machine's addresses allowed,
# with ARGS.
start_hook_server() {
  local dir="$1" store
  shift
  mkdir -p "$dir"
  store="${HOOK_STORE:-sqlite:$dir/p.db}"
  # shellcheck disable=SC2086  # SERVER_ARGS is a list of flags
  spawn_listening paymentd "$dir/paymentd.log" /healthz \
    "$WORK/paymentd" --store "$store" --listen "127.0.0.1:@PORT@" \
    --webhook-allow-private true "$@" $SERVER_ARGS
  SERVER_PID=$SPAWN_PID URL=$SPAWN_URL SPAWN_PID=""
  log "paymentd $SERVER_PID on $URL${*:+ ($*)}, store $store"
}

# register_hooks N ORG: N endpoints of organisation ORG for every event type,
# each a path of the receiver.
register_hooks() {
  local i code
  for i in $(seq "$1"); do
    code=$(curl -s -o "$WORK/hook.$i.json" -w '%{http_code}' -H 'Content-Type: application/json' \
           --data-binary "{\"data\": {\"organisation_id\": \"$2\", \"url\": \"$HOOK_URL/hook/$i\",
                           \"event_types\": [\"*\"], \"description\": \"bench $i\"}}" \
           "$URL/v1/webhooks")
    [ "$code" = 201 ] || { cat "$WORK/hook.$i.json" >&2; die "registering endpoint $i answered $code"; }
  done
  log "  $1 webhook endpoints of organisation $2 on $HOOK_URL/hook/*"
}

# wait_delivered WANT: until the server has delivered WANT deliveries since
# it started (the counter moves at each success; the pending gauge is read
# from the store only about every second); fails after DRAIN_TIMEOUT seconds.
wait_delivered() {
  local want="$1" start got pending last now
  start=$(date +%s.%N); last=$(date +%s)
  while :; do
    got=$(metric "$DELIVERED"); pending=$(metric paymentd_webhook_pending_deliveries)
    [ "$(calc "($got >= $want) ? 1 : 0")" = 0 ] || return 0
    [ "$(calc "($(date +%s.%N) - $start > $DRAIN_TIMEOUT) ? 1 : 0")" = 0 ] ||
      die "webhooks: $got of $want deliveries made, $pending pending, after ${DRAIN_TIMEOUT}s"
    now=$(date +%s)
    if [ $((now - last)) -ge 10 ]; then last=$now; log "  $got of $want delivered, $pending pending"; fi
    sleep 0.1
  done
}

# webhook_runs [SFX]: step 6c (see the top), into RPS[post_hooks0SFX],
# RPS[post_hooks3SFX] and HOOK[...SFX], on a fresh SQLite store, or with SFX
# _pg on a fresh database of the private PostgreSQL server.
webhook_runs() {
  local sfx="${1:-}" n t0 t1 t2 HOOK_STORE=""
  [ "$sfx" != _pg ] || HOOK_STORE=$(pg_db hooks)
  printf '{}\n' >"$WORK/hook_answer.json"
  start_mhd "$WORK/hook_answer.json"
  HOOK_PID=$MHD_PID HOOK_URL=$MHD_URL MHD_PID=""
  export BENCH_POST_ORG=0
  start_hook_server "$WORK/hooks$sfx"
  BENCH_POST_ROUND=10 run_wrk "post_hooks0$sfx" post_org.lua "$URL" "$CONNECTIONS"
  register_hooks 3 "$(org_id 0)"
  t0=$(date +%s.%N)
  BENCH_POST_ROUND=11 run_wrk "post_hooks3$sfx" post_org.lua "$URL" "$CONNECTIONS"
  t1=$(date +%s.%N)
  n=$((3 * OKS["post_hooks3$sfx"]))
  HOOK[left$sfx]=$((n - $(printf '%.0f' "$(metric "$DELIVERED")")))
  wait_delivered "$n"
  t2=$(date +%s.%N)
  HOOK[during_n$sfx]=$n
  HOOK[during_rate$sfx]=$(calc "$n / ($t2 - $t0)")
  HOOK[drain_s$sfx]=$(calc "$t2 - $t1")
  log "  $n deliveries in $(printf '%.1f' "$(calc "$t2 - $t0")") s from the run's start, ${HOOK[left$sfx]} left at its end, drained $(printf '%.1f' "${HOOK[drain_s$sfx]}") s after"
  stop_server
  # A backlog written while no server delivers, then drained alone.
  start_hook_server "$WORK/hooks$sfx" --webhooks false
  BENCH_POST_ROUND=12 run_wrk "post_backlog$sfx" post_org.lua "$URL" "$CONNECTIONS"
  stop_server
  n=$((3 * OKS["post_backlog$sfx"]))
  log "webhooks: draining a backlog of $n deliveries"
  t0=$(date +%s.%N)
  start_hook_server "$WORK/hooks$sfx"
  wait_delivered "$n"
  t2=$(date +%s.%N)
  HOOK[backlog_n$sfx]=$n
  HOOK[backlog_rate$sfx]=$(calc "$n / ($t2 - $t0)")
  log "  $n deliveries in $(printf '%.1f' "$(calc "$t2 - $t0")") s: $(printf '%.0f' "${HOOK[backlog_rate$sfx]}")/s"
  stop_server
  stop_pid "$HOOK_PID"; HOOK_PID=""
}

webhook_rows() {
  wrow post_hooks0 "POST /v1/payments in one organisation, no webhook endpoint"
  wrow post_hooks3 "POST /v1/payments in one organisation, 3 webhook endpoints owed every create"
  row "POST with 3 endpoints / with none" \
    "$(printf '%.2fx' "$(ratio "${RPS[post_hooks3]}" "${RPS[post_hooks0]}")")" "" "" "" "" ""
  row "webhook deliveries/s over that run and its drain ($(num "${HOOK[during_n]}") deliveries)" \
    "$(num "${HOOK[during_rate]}")/s" "" "" "" "" ""
  row "... deliveries owed at the run's end, drained after" \
    "$(num "${HOOK[left]}"), $(printf '%.1f s' "${HOOK[drain_s]}")" "" "" "" "" ""
  row "webhook deliveries/s draining a backlog of $(num "${HOOK[backlog_n]}") (nothing else running)" \
    "$(num "${HOOK[backlog_rate]}")/s" "" "" "" "" ""
}


# --- the deep organisation: offset and cursor pages --------------------------

# preload_deep: the deep organisation's DEEP payments (preload.lua with
# BENCH_PRELOAD=deep) on the server at URL; BENCH_PAYMENTS is then set back.
preload_deep() {
  BENCH_PRELOAD=deep BENCH_DEEP=$DEEP preload "$DEEP"
  export BENCH_PAYMENTS="$PAYMENTS"
}

DEEP_BASE="/v1/payments?filter[organisation_id]=$(org_id 100)&page[size]=100"

# next_link FILE: links.next of the list page in FILE (empty on the last page).
next_link() {
  /usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["links"].get("next") or "")' "$1"
}

# page_items FILE: how many payments the list page in FILE holds.
page_items() {
  /usr/bin/python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["data"]))' "$1"
}

# cursor_page N: the path of page N of the deep organisation reached by
# following links.next from the first page (cursor paging: the first page's
# next link is a cursor), into CURSOR_PATH; checks that each page is full.
cursor_page() {
  local n="$1" k path="$DEEP_BASE" f="$WORK/cursor.json" items
  for k in $(seq "$n"); do
    curl -gs -o "$f" "$URL$path" || die "cursor walk: page $((k - 1)) did not answer"
    path="$(next_link "$f")"
    [ -n "$path" ] || die "cursor walk: page $((k - 1)) of the deep organisation has no next link"
    case "$path" in http://* | https://*) path="/${path#*//*/}" ;; esac   # --public-url: absolute
  done
  curl -gs -o "$f" "$URL$path" || die "cursor walk: page $n did not answer"
  items=$(page_items "$f")
  [ "$items" -eq 100 ] || die "cursor page $n of the deep organisation has $items payments, expected 100"
  CURSOR_PATH="$path"
}

# --- the peers -----------------------------------------------------------------

# start_peer NAME: sets up (scripts/bench-setup.sh), copies and starts peer
# NAME on a fresh store.  On any failure PEER_FAIL[NAME] says why and the
# peer is left out: never a die.
start_peer() {
  local p="$1" built dir="$WORK/peers/$1" port log_file attempt
  mkdir -p "$dir/data" "$dir/state"
  log_file="$dir/peer.log"
  log "peer $p: setting up (scripts/bench-setup.sh $p)"
  if ! built="$("$ROOT/scripts/bench-setup.sh" "$p" 2>"$dir/setup.log")"; then
    tail -5 "$dir/setup.log" >&2
    PEER_FAIL[$p]="could not be set up: $(grep 'error:' "$dir/setup.log" | tail -1 | sed 's/^bench-setup: error: //')"
    return 0
  fi
  local cmd=()
  if [ "$p" = node ]; then
    mkdir -p "$dir/app"
    (cd "$built" && find . -mindepth 1 -maxdepth 1 ! -name node_modules -exec cp -R {} "$dir/app/" \;)
    ln -s "$built/node_modules" "$dir/app/node_modules"
    cmd=(node "$dir/app/server.js" --listen "127.0.0.1:@PORT@" --store "sqlite:$dir/data/p.db" --workers 2)
  else
    cp "$built/paymentd-go-peer" "$dir/paymentd-go-peer"
    cmd=("$dir/paymentd-go-peer" --listen "127.0.0.1:@PORT@" --store "sqlite:$dir/data/p.db")
  fi
  for attempt in 1 2 3; do
    free_port port
    PEER_URL[$p]="http://127.0.0.1:$port"
    (cd "$dir" && exec "${cmd[@]//@PORT@/$port}") 2>"$log_file" &
    PEER_PID[$p]=$!
    wait_http "${PEER_URL[$p]}/healthz" "${PEER_PID[$p]}" && break
    stop_pid "${PEER_PID[$p]}"; PEER_PID[$p]=""
    if grep -q 'in use' "$log_file" && [ "$attempt" -lt 3 ]; then continue; fi
    tail -5 "$log_file" >&2
    PEER_FAIL[$p]="did not start: $(tail -1 "$log_file")"
    return 0
  done
  log "peer $p ${PEER_PID[$p]} on ${PEER_URL[$p]}, store $dir/data/p.db"
}

# preload_peers: every started peer preloaded as paymentd's store was, all at
# once (their writes wait on their own fsyncs, not on the CPUs), then checked.
# Each preload runs in a subshell with a state folder of its own; its exit
# status says whether it completed (the preload dies on failure).
preload_peers() {
  local p dir code items
  declare -A pids
  for p in "${PEER_NAMES[@]}"; do
    [ -n "${PEER_PID[$p]:-}" ] || continue
    dir="$WORK/peers/$p"
    log "peer $p: preloading $PAYMENTS + $DEEP payments"
    ( WORK=$dir URL=${PEER_URL[$p]} BENCH_STATE=$dir/state; export BENCH_STATE
      preload "$PAYMENTS"; preload_deep ) 2>"$dir/preload.log" &
    pids[$p]=$!
  done
  for p in "${!pids[@]}"; do
    dir="$WORK/peers/$p"
    if ! wait "${pids[$p]}"; then
      cat "$dir/preload.log" >&2
      PEER_FAIL[$p]="preload failed: $(grep 'error:' "$dir/preload.log" | tail -1 | sed 's/^bench: error: //')"
      stop_pid "${PEER_PID[$p]}"; PEER_PID[$p]=""
      continue
    fi
    sed "s/^bench: /bench: peer $p: /" "$dir/preload.log" | grep '^bench: ' >&2 || true
    code=$(curl -s -o /dev/null -w '%{http_code}' "${PEER_URL[$p]}/v1/payments/$(payment_id $((PAYMENTS - 1)))")
    curl -gs -o "$dir/deep.json" "${PEER_URL[$p]}$DEEP_BASE&page[number]=19"
    items=$(page_items "$dir/deep.json" 2>/dev/null || echo 0)
    if [ "$code" != 200 ] || [ "$items" != 100 ]; then
      PEER_FAIL[$p]="preloaded store does not answer: GET of the last payment $code, deep page 19 has $items payments"
      stop_pid "${PEER_PID[$p]}"; PEER_PID[$p]=""
    fi
  done
}

# run_peers NAME SCRIPT: NAME_PEER for each running peer, right after
# paymentd's NAME run, for --peer-duration.  A peer that died meanwhile is
# marked failed.
run_peers() {
  local name="$1" script="$2" p saved="$DURATION"
  for p in "${PEER_NAMES[@]}"; do
    [ -n "${PEER_PID[$p]:-}" ] || continue
    if ! kill -0 "${PEER_PID[$p]}" 2>/dev/null || ! curl -s -o /dev/null "${PEER_URL[$p]}/healthz"; then
      PEER_FAIL[$p]="stopped answering before its $name run: $(tail -1 "$WORK/peers/$p/peer.log")"
      stop_pid "${PEER_PID[$p]}"; PEER_PID[$p]=""
      continue
    fi
    DURATION=$PEER_DURATION
    run_wrk "${name}_$p" "$script" "${PEER_URL[$p]}" "$CONNECTIONS"
    DURATION=$saved
  done
}

stop_peers() {
  local p
  for p in "${PEER_NAMES[@]}"; do stop_pid "${PEER_PID[$p]:-}"; PEER_PID[$p]=""; done
}

# peer_rows: each peer's runs, then paymentd against the faster peer.
PEER_LABEL_node="Node peer (Fastify, better-sqlite3, ajv; --workers 2)"
PEER_LABEL_go="Go peer (net/http, go-sqlite3, gojsonschema)"
peer_rows() {
  local p w label best best_p r
  for p in "${PEER_NAMES[@]}"; do
    label="PEER_LABEL_$p"; label="${!label}"
    if [ -n "${PEER_FAIL[$p]:-}" ]; then
      row "$label" "not measured: ${PEER_FAIL[$p]}" "" "" "" "runs" "FAIL"
      continue
    fi
    wrow "get_$p" "$label: GET /v1/payments/{id}"
    wrow "list_deep_$p" "$label: list of 100, offset page 0-19 of $(num "$DEEP")"
    wrow "put_$p" "$label: PUT /v1/payments/{id} (If-Match)"
    wrow "post_$p" "$label: POST /v1/payments"
  done
  for w in post:5 put:5 get:3; do
    best="" best_p=""
    for p in "${PEER_NAMES[@]}"; do
      [ -z "${PEER_FAIL[$p]:-}" ] && [ -n "${RPS[${w%%:*}_$p]:-}" ] || continue
      if [ -z "$best" ] || [ "$(calc "(${RPS[${w%%:*}_$p]} > $best) ? 1 : 0")" = 1 ]; then
        best=${RPS[${w%%:*}_$p]} best_p=$p
      fi
    done
    if [ -z "$best" ]; then
      row "$(tr a-z A-Z <<<"${w%%:*}") / the faster peer" "no peer measured" "" "" "" ">= ${w#*:}x" "FAIL"
      continue
    fi
    r=$(ratio "${RPS[${w%%:*}]}" "$best")
    row "$(tr a-z A-Z <<<"${w%%:*}") / the faster peer ($best_p)" "$(printf '%.2fx' "$r")" "" "" "" \
      ">= ${w#*:}x" "$(verdict "$r >= ${w#*:}")"
  done
  if [ -z "${PEER_FAIL[go]:-}" ] && [ -n "${RPS[list_deep_go]:-}" ]; then
    r=$(ratio "${RPS[list_deep]}" "${RPS[list_deep_go]}")
    row "list of 100 (offset page 0-19) / the Go peer" "$(printf '%.2fx' "$r")" "" "" "" ">= 2x" "$(verdict "$r >= 2")"
  else
    row "list of 100 (offset page 0-19) / the Go peer" "not measured" "" "" "" ">= 2x" "FAIL"
  fi
}

# --- PostgreSQL (--store postgres) ------------------------------------------------

declare -A COMMITS WRITES WAL_BYTES WAL_SYNCS PG_WBYTES

# store_counts URL: paymentd's store counters at URL, "commits writes".
store_counts() {
  curl -s "$1/metrics" | awk '$1 == "paymentd_store_commits_total" {c = $2}
                              $1 == "paymentd_store_writes_total" {w = $2}
                              END {print c + 0, w + 0}'
}

# count_delta NAME BEFORE AFTER: the commits and writes between two
# store_counts into COMMITS and WRITES of NAME.
count_delta() {
  local c0 w0 c1 w1
  read -r c0 w0 <<<"$2"; read -r c1 w1 <<<"$3"
  COMMITS[$1]=$((c1 - c0)) WRITES[$1]=$((w1 - w0))
  log "  ${WRITES[$1]} writes in ${COMMITS[$1]} commits ($(printf '%.1f' "$(ratio "${WRITES[$1]}" "${COMMITS[$1]}")") per commit)"
}

# run_wrk_commits NAME SCRIPT URL PID: run_wrk_io, and the store's commits
# and writes meanwhile.
run_wrk_commits() {
  local before
  before=$(store_counts "$3")
  run_wrk_io "$1" "$2" "$3" "$CONNECTIONS" "$4"
  count_delta "$1" "$before" "$(store_counts "$3")"
}

# pg_sql SQL: one statement on the private server, its rows unaligned.
pg_sql() { "$PG_BIN/psql" "$PG_URI" -XAtq -v ON_ERROR_STOP=1 -c "$1"; }

# pg_wal: the server's "WAL bytes, WAL fsyncs" so far (pg_stat_wal, which
# backends update about once a second: read it after a pause).
pg_wal() { pg_sql "SELECT wal_bytes, wal_sync FROM pg_stat_wal" | tr '|' ' '; }

# pg_io_bytes: write_bytes of /proc/PID/io summed over the server's
# processes (the postmaster and its children): what they sent to storage.
pg_io_bytes() {
  local pm p
  pm=$(head -1 "$PG_DIR/data/postmaster.pid")
  for p in "$pm" $(ps -o pid= --ppid "$pm"); do
    awk '$1 == "write_bytes:" {print $2}' "/proc/$p/io" 2>/dev/null || true
  done | awk '{s += $1} END {print s + 0}'
}

# What paymentd's busy connections to the server are doing, sampled every
# 50 ms by one psql session (one query, then pg_sleep): "state:wait event
# type:wait event" per connection not idle ("-" when it waits on nothing),
# "none busy" when there is none.
# During writes that is the writer's connection: "idle in transaction" is the
# server waiting for paymentd's next statement (a round trip plus paymentd's
# own work), "active:-" running one, "active:IO:WALSync" a commit's flush.
PG_SAMPLE_SQL="WITH busy AS (SELECT state || ':' || coalesce(wait_event_type || ':' || wait_event, '-') AS s
  FROM pg_stat_activity WHERE application_name = 'paymentd' AND state <> 'idle')
SELECT s FROM busy UNION ALL SELECT 'none busy' WHERE NOT EXISTS (SELECT 1 FROM busy);
SELECT pg_sleep(0.05);"

# start_pg_sampler FILE: samples (above) into FILE until stop_pg_sampler,
# at most for the run's length and 20 s more.
start_pg_sampler() {
  local i
  for i in $(seq $(((DURATION + 20) * 20))); do echo "$PG_SAMPLE_SQL"; done >"$WORK/pg_sample.sql"
  "$PG_BIN/psql" "$PG_URI" -XAtq -f "$WORK/pg_sample.sql" >"$1" 2>&1 &
  SAMPLER_PID=$!
}

stop_pg_sampler() { stop_pid "$SAMPLER_PID"; SAMPLER_PID=""; }

declare -A PG_STATES
# pg_states FILE: the states sampled in FILE, the most frequent first, each
# with its share of the samples and the share of waits for the WAL among them,
# e.g. "active:- 50%, idle in transaction:Client:ClientRead 30%, ... (WAL
# waits 3%)".
pg_states() {
  grep -v '^$' "$1" | sort | uniq -c | sort -rn |
    awk '{n = $1; $1 = ""; sub(/^ /, ""); a[++k] = $0; c[k] = n; t += n; if ($0 ~ /WAL/) w += n}
         END {for (i = 1; i <= k && i <= 5; i++) printf "%s%s %.0f%%", (i > 1 ? ", " : ""), a[i], 100 * c[i] / t
              printf " (%d samples; waits for the WAL %.0f%%)", t, (t > 0 ? 100 * w / t : 0)}'
}

# run_wrk_pg_write NAME SCRIPT: a write run on paymentd on PostgreSQL, with
# its commits and writes, the server's WAL and bytes to storage per
# successful request, and what the connections did (PG_STATES).
run_wrk_pg_write() {
  local name="$1" before wal_b0 wal_s0 wal_b1 wal_s1 io0
  before=$(store_counts "$PG_URL"); read -r wal_b0 wal_s0 <<<"$(pg_wal)"; io0=$(pg_io_bytes)
  start_pg_sampler "$WORK/pg_states.$name.txt"
  run_wrk_io "$name" "$2" "$PG_URL" "$CONNECTIONS" "$PG_PID"
  stop_pg_sampler
  count_delta "$name" "$before" "$(store_counts "$PG_URL")"
  PG_STATES[$name]=$(pg_states "$WORK/pg_states.$name.txt")
  log "  PostgreSQL connections: ${PG_STATES[$name]}"
  sleep 2
  read -r wal_b1 wal_s1 <<<"$(pg_wal)"
  WAL_BYTES[$name]=$(calc "($wal_b1 - $wal_b0) / (${OKS[$name]} > 0 ? ${OKS[$name]} : 1)")
  WAL_SYNCS[$name]=$((wal_s1 - wal_s0))
  PG_WBYTES[$name]=$(calc "($(pg_io_bytes) - $io0) / (${OKS[$name]} > 0 ? ${OKS[$name]} : 1)")
  log "  PostgreSQL: $(printf '%.0f' "${WAL_BYTES[$name]}") WAL bytes and $(printf '%.0f' "${PG_WBYTES[$name]}") bytes to storage per request, ${WAL_SYNCS[$name]} WAL fsyncs"
}

# start_pg: the private PostgreSQL server in the temporary folder, as
# tests/pg/pg.sh ships it (fsync and synchronous_commit on), into PG_URI.
start_pg() {
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$PG_BIN" ] || die "no PostgreSQL server installed (scripts/setup.sh installs postgresql-15)"
  PG_DIR="$WORK/pg"
  log "starting PostgreSQL in $PG_DIR (tests/pg/pg.sh)"
  PG_URI=$("$ROOT/tests/pg/pg.sh" start "$PG_DIR") || die "PostgreSQL did not start"
  PG_VERSION=$(pg_sql "SHOW server_version")
  log "  PostgreSQL $PG_VERSION on $PG_URI"
}

# pg_db NAME: a new database NAME on the private server; its URI.
pg_db() {
  pg_sql "CREATE DATABASE $1" >&2 || die "cannot create database $1"
  echo "${PG_URI%/*}/$1"
}

# start_pg_server: paymentd (default flags) on the private server's
# database paymentd, into PG_PID and PG_URL; preloaded as the first store.
start_pg_server() {
  mkdir -p "$WORK/pgd"
  # shellcheck disable=SC2086  # SERVER_ARGS is a list of flags
  spawn_listening "paymentd on PostgreSQL" "$WORK/pgd/paymentd.log" /healthz \
    "$WORK/paymentd" --store "$PG_URI" --listen "127.0.0.1:@PORT@" $SERVER_ARGS
  PG_PID=$SPAWN_PID PG_URL=$SPAWN_URL SPAWN_PID=""
  log "paymentd $PG_PID on $PG_URL, store $PG_URI"
}

# The server's settings that bear on commits, for the table.
PG_SETTINGS=(synchronous_commit fsync full_page_writes wal_sync_method commit_delay commit_siblings
             wal_level shared_buffers max_connections)

# batch_sizes URL: the commit batch sizes of /metrics at URL, one
# "<= le: count" per bucket that holds any (the buckets are cumulative).
batch_sizes() {
  curl -s "$1/metrics" | awk '
    /^paymentd_store_commit_batch_size_bucket/ {
      le = $1; sub(/.*le="/, "", le); sub(/".*/, "", le)
      if ($2 > prev) { out = out sep "<= " le ": " ($2 - prev); sep = ", " }
      prev = $2 }
    /^paymentd_store_commit_batch_size_sum/ { sum = $2 }
    /^paymentd_store_commit_batch_size_count/ { n = $2 }
    END { printf "%s (mean %.1f of %d commits)\n", out, (n > 0 ? sum / n : 0), n }'
}

# prow NAME LABEL: NAME on SQLite beside NAME_pg on PostgreSQL.
prow() {
  local sq="$1" pg="$1_pg"
  row "$2" "$(num "${RPS[$sq]}") req/s" "$(num "${RPS[$pg]}") req/s" \
    "$(printf '%.2fx' "$(ratio "${RPS[$pg]}" "${RPS[$sq]}")")" \
    "$(ms "${P50[$sq]}") / $(ms "${P50[$pg]}")" "$(ms "${P99[$sq]}") / $(ms "${P99[$pg]}")" \
    "${ERRS[$sq]} / ${ERRS[$pg]}"
}

# vrow LABEL SQLITE PG UNIT: a figure of both stores and their ratio.
vrow() {
  row "$1" "$(num "$2")$4" "$(num "$3")$4" "$(printf '%.2fx' "$(ratio "$3" "$2")")" "" "" ""
}

pg_header() {
  echo
  echo "paymentd on PostgreSQL beside SQLite ($REVISION): PostgreSQL $PG_VERSION, a private server" \
       "(tests/pg/pg.sh) in the temporary folder on the disk of the SQLite store, paymentd with its" \
       "default flags on each; each PostgreSQL run right after the same run on SQLite (the webhook runs" \
       "after SQLite's webhook runs);" \
       "${DURATION}s per run, $CONNECTIONS connections, $NPROC CPUs shared by wrk, paymentd and the server"
  echo
  row "measure" "SQLite" "PostgreSQL" "PostgreSQL / SQLite" "p50 SQLite / PostgreSQL" \
    "p99 SQLite / PostgreSQL" "errors SQLite / PostgreSQL"
  row "---" "---:" "---:" "---:" "---:" "---:" "---:"
}

pg_webhook_rows() {
  prow post_hooks0 "POST in one organisation, no webhook endpoint"
  prow post_hooks3 "POST in one organisation, 3 webhook endpoints owed every create"
  vrow "webhook deliveries/s over that run and its drain" "${HOOK[during_rate]}" "${HOOK[during_rate_pg]}" "/s"
  row "... deliveries owed at the run's end, drained after" "$(num "${HOOK[left]}"), $(printf '%.1f s' "${HOOK[drain_s]}")" \
    "$(num "${HOOK[left_pg]}"), $(printf '%.1f s' "${HOOK[drain_s_pg]}")" "" "" "" ""
  vrow "webhook deliveries/s draining a backlog (nothing else running)" "${HOOK[backlog_rate]}" "${HOOK[backlog_rate_pg]}" "/s"
}

# pg_config_rows: the server's version and PG_SETTINGS, a table of their own.
pg_config_rows() {
  local s
  echo
  printf '| %s | %s |\n' "PostgreSQL setting" "value" "---" "---" "version" "$(pg_sql "SELECT version()")"
  for s in "${PG_SETTINGS[@]}"; do printf '| %s | %s |\n' "$s" "$(pg_sql "SHOW $s")"; done
}

# --- the run -----------------------------------------------------------------

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
REVISION="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
[ -z "$(git -C "$ROOT" status --porcelain -- src Makefile 2>/dev/null)" ] || REVISION="$REVISION + local changes"
[ -z "$BINARY" ] || REVISION="$BINARY"

[ "$STORE" != postgres ] || start_pg

if [ "$WEBHOOKS_ONLY" -eq 1 ]; then
  webhook_runs
  [ "$STORE" != postgres ] || webhook_runs _pg
  echo
  echo "paymentd webhook benchmark ($REVISION): ${DURATION}s per run, $THREADS wrk threads," \
       "$CONNECTIONS connections, receiver: bare libmicrohttpd answering 200, $NPROC CPUs," \
       "load average $LOAD_BEFORE before, $(cut -d' ' -f1-3 /proc/loadavg) after"
  echo
  row "measure" "value" "p50" "p99" "errors" "target" "result"
  row "---" "---:" "---:" "---:" "---:" "---" "---"
  webhook_rows
  if [ "$STORE" = postgres ]; then
    pg_header
    pg_webhook_rows
    pg_config_rows
  fi
  exit 0
fi

# The disk is shared too: the rate is measured at the start and again right
# before POST, and the higher one (what the disk can do) is the reference.
measure_fsync() {
  local r
  log "fsync rate in $WORK"
  r="$("$WORK/fsync_rate" "$WORK" 3)" || die "fsync_rate failed"
  log "  $r fdatasync/s"
  FSYNC_RATES="${FSYNC_RATES:+$FSYNC_RATES, }$r"
  [ "$r" -le "${FSYNC_RATE:-0}" ] || FSYNC_RATE=$r
}
measure_fsync

if [ -n "$BASELINE" ]; then
  start_server "$WORK/base" "$WORK/paymentd.base"
  BASE_PID=$SERVER_PID BASE_URL=$URL SERVER_PID=""
  preload "$PAYMENTS"
  check_store "$PAYMENTS"
fi
start_server "$WORK/store"
start_rss_sampler
preload "$PAYMENTS"
check_store "$PAYMENTS"
MAIN_LIST_ITEMS=$LIST_ITEMS
PRELOAD_SQLITE=${PRELOAD_RATE[$PAYMENTS]}
preload_deep
# The references' answers, fetched before anything changes the store: one
# payment's GET body, and the list page of organisation 0 (the URL shape
# list.lua requests; every organisation's page has the same size).
GET_PATH="/v1/payments/$(payment_id 0)"
LIST_PATH="/v1/payments?filter[organisation_id]=$(org_id 0)&page[size]=100"
curl -s -o "$WORK/payment.json" "$URL$GET_PATH"
curl -gs -o "$WORK/list.json" "$URL$LIST_PATH"
BODY_BYTES=$(wc -c <"$WORK/payment.json")
LIST_BYTES=$(wc -c <"$WORK/list.json")
# The deep organisation: one offset page for nginx (pages differ only in the
# page[number] of their links), and the cursor pages at depth 0 (the first
# page, whose next link is a cursor) and 19 (19 next links later).
DEEP_PAGE_PATH="$DEEP_BASE&page[number]=10"
curl -gs -o "$WORK/deep_page.json" "$URL$DEEP_PAGE_PATH"
[ "$(page_items "$WORK/deep_page.json")" -eq 100 ] || die "offset page 10 of the deep organisation is not full"
DEEP_BYTES=$(wc -c <"$WORK/deep_page.json")
cursor_page 19
CURSOR19_PATH=$CURSOR_PATH
CURSOR0_PATH=$DEEP_BASE

# paymentd on PostgreSQL, preloaded as the first, idle until its runs.
if [ "$STORE" = postgres ]; then
  start_pg_server
  URL=$PG_URL preload "$PAYMENTS"
  PRELOAD_PG=${PRELOAD_RATE[$PAYMENTS]}
  URL=$PG_URL check_store "$PAYMENTS"
  URL=$PG_URL preload_deep
  URL=$PG_URL cursor_page 19
  CURSOR19_PG=$CURSOR_PATH
fi

# The peers, each on a store of its own preloaded as paymentd's, idle until
# their runs, which come right after paymentd's same run.
if [ "$PEERS" -eq 1 ]; then
  for p in "${PEER_NAMES[@]}"; do start_peer "$p"; done
  preload_peers
fi

# Each reference runs right before the paymentd run it serves (the machine
# drifts over minutes), and none runs while paymentd is measured.
start_nginx "static:$WORK/payment.json" "200:$WORK/payment.json"
check_same nginx_static 200 "$WORK/payment.json" "${NGINX_URL[0]}$GET_PATH"
check_same nginx_memory 200 "$WORK/payment.json" "${NGINX_URL[1]}$GET_PATH"
run_wrk nginx_static get.lua "${NGINX_URL[0]}" "$CONNECTIONS"
run_wrk nginx_memory get.lua "${NGINX_URL[1]}" "$CONNECTIONS"
stop_nginx
start_mhd "$WORK/payment.json"
check_same mhd 200 "$WORK/payment.json" "$MHD_URL$GET_PATH"
run_wrk mhd get.lua "$MHD_URL" "$CONNECTIONS"
stop_mhd
run_pair get get.lua
run_peers get get.lua

run_wrk get_1000 get.lua "$URL" "$BIG_CONNECTIONS"
start_nginx "static:$WORK/list.json"
check_same nginx_list 200 "$WORK/list.json" "${NGINX_URL[0]}$LIST_PATH" -g
run_wrk nginx_list list.lua "${NGINX_URL[0]}" "$CONNECTIONS"
stop_nginx
run_pair list list.lua
# The issue's list: 100 payments at a random offset page 0-19 of the deep
# organisation, beside nginx serving one such page as a file; then cursor
# pages at depth 0 and 19, which should cost the same.
start_nginx "static:$WORK/deep_page.json"
check_same nginx_deep 200 "$WORK/deep_page.json" "${NGINX_URL[0]}$DEEP_PAGE_PATH" -g
run_wrk nginx_deep list_offset.lua "${NGINX_URL[0]}" "$CONNECTIONS"
stop_nginx
run_wrk list_deep list_offset.lua "$URL" "$CONNECTIONS"
[ -z "$PG_PID" ] || run_wrk list_deep_pg list_offset.lua "$PG_URL" "$CONNECTIONS"
run_peers list_deep list_offset.lua
BENCH_PATH=$CURSOR0_PATH run_wrk list_cursor0 list_path.lua "$URL" "$CONNECTIONS"
[ -z "$PG_PID" ] || BENCH_PATH=$CURSOR0_PATH run_wrk list_cursor0_pg list_path.lua "$PG_URL" "$CONNECTIONS"
BENCH_PATH=$CURSOR19_PATH run_wrk list_cursor19 list_path.lua "$URL" "$CONNECTIONS"
[ -z "$PG_PID" ] || BENCH_PATH=$CURSOR19_PG run_wrk list_cursor19_pg list_path.lua "$PG_URL" "$CONNECTIONS"
run_pair put put.lua
run_peers put put.lua
HWM_KB=$(peak_rss_kb)

# Growth, before POST adds payments to the first store: a second paymentd on
# a fresh store of GROWTH_PAYMENTS, and each of its runs right next to the
# same run against the first store, since a shared machine drifts over
# minutes.  SERVER_PID stays the first server (RSS, cleanup).
if [ "$GROWTH" -eq 1 ]; then
  MAIN_PID=$SERVER_PID MAIN_URL=$URL
  start_server "$WORK/growth"
  GROWTH_PID=$SERVER_PID GROWTH_URL=$URL SERVER_PID=$MAIN_PID
  preload "$GROWTH_PAYMENTS"
  check_store "$GROWTH_PAYMENTS"
  warm_store "$WORK/growth"
  warm_store "$WORK/store"
  export BENCH_PAYMENTS="$GROWTH_PAYMENTS"
  run_wrk get_growth get.lua "$GROWTH_URL" "$CONNECTIONS"
  export BENCH_PAYMENTS="$PAYMENTS"
  run_wrk get_pair get.lua "$MAIN_URL" "$CONNECTIONS"
  run_wrk list_growth list.lua "$GROWTH_URL" "$CONNECTIONS"
  run_wrk list_pair list.lua "$MAIN_URL" "$CONNECTIONS"
  stop_pid "$GROWTH_PID"; GROWTH_PID=""
  URL=$MAIN_URL
fi

# The POST reference needs one create answer of paymentd: the probe payment
# (create_body.lua: an id no workload uses, built as post.lua builds its
# bodies) is created here, after every run that counts payments and right
# before POST, which grows the store anyway.
export BENCH_PAYMENTS="$PAYMENTS"
wrk -t1 -c1 -d1s -s "$BENCH/create_body.lua" "$URL" >"$WORK/wrk.create_body.txt" 2>&1 ||
  { cat "$WORK/wrk.create_body.txt" >&2; die "wrk create_body.lua failed"; }
CREATE_BODY="$WORK/state/create_body.json"
[ -s "$CREATE_BODY" ] || { cat "$WORK/wrk.create_body.txt" >&2; die "create_body.lua wrote no body"; }
code=$(curl -s -o "$WORK/create.json" -w '%{http_code}' -H 'Content-Type: application/json' \
       --data-binary "@$CREATE_BODY" "$URL/v1/payments")
[ "$code" = 201 ] || { cat "$WORK/create.json" >&2; die "the probe create answered $code"; }
CREATE_BYTES=$(wc -c <"$WORK/create.json")
start_nginx "201:$WORK/create.json"
check_same nginx_post 201 "$WORK/create.json" "${NGINX_URL[0]}/v1/payments" \
  -H 'Content-Type: application/json' --data-binary "@$CREATE_BODY"
run_wrk nginx_post post.lua "${NGINX_URL[0]}" "$CONNECTIONS"
stop_nginx
measure_fsync
run_pair post post.lua
run_peers post post.lua
stop_peers
HWM_END_KB=$(peak_rss_kb)
stop_pid "$BASE_PID"; BASE_PID=""

# The feed: the whole of it read from the start (the preload, PUT and POST
# runs' events), then a consumer following it with wait=1 while POST runs
# again, and how long after the run it took to catch up.
log "feed: reading every event from the start"
/usr/bin/python3 "$BENCH/feed_consumer.py" "$URL" --until-caught-up >"$WORK/feed.all.txt" 2>&1 ||
  { cat "$WORK/feed.all.txt" >&2; die "feed consumer failed"; }
feed_result all "$WORK/feed.all.txt"
rm -f "$WORK/feed.stop"
/usr/bin/python3 "$BENCH/feed_consumer.py" "$URL" --after "${FEED_AFTER[all]}" --wait 1 --seconds 100000 \
  --stop-file "$WORK/feed.stop" >"$WORK/feed.follow.txt" 2>&1 &
FEED_PID=$!
BENCH_POST_ROUND=1 run_wrk post_follow post.lua "$URL" "$CONNECTIONS"
touch "$WORK/feed.stop"
wait "$FEED_PID" || { FEED_PID=""; cat "$WORK/feed.follow.txt" >&2; die "feed follower failed"; }
FEED_PID=""
feed_result follow "$WORK/feed.follow.txt"
[ "$STORE" != postgres ] || SQLITE_BATCHES=$(batch_sizes "$URL")
stop_server
if [ -n "$PG_PID" ]; then
  log "feed on PostgreSQL: reading every event from the start"
  /usr/bin/python3 "$BENCH/feed_consumer.py" "$PG_URL" --until-caught-up >"$WORK/feed.all_pg.txt" 2>&1 ||
    { cat "$WORK/feed.all_pg.txt" >&2; die "feed consumer failed"; }
  feed_result all_pg "$WORK/feed.all_pg.txt"
  rm -f "$WORK/feed.stop"
  /usr/bin/python3 "$BENCH/feed_consumer.py" "$PG_URL" --after "${FEED_AFTER[all_pg]}" --wait 1 \
    --seconds 100000 --stop-file "$WORK/feed.stop" >"$WORK/feed.follow_pg.txt" 2>&1 &
  FEED_PID=$!
  BENCH_POST_ROUND=1 run_wrk post_follow_pg post.lua "$PG_URL" "$CONNECTIONS"
  touch "$WORK/feed.stop"
  wait "$FEED_PID" || { FEED_PID=""; cat "$WORK/feed.follow_pg.txt" >&2; die "feed follower failed"; }
  FEED_PID=""
  feed_result follow_pg "$WORK/feed.follow_pg.txt"
  PG_BATCHES=$(batch_sizes "$PG_URL")
  stop_pid "$PG_PID"; PG_PID=""
fi
webhook_runs
[ "$STORE" != postgres ] || webhook_runs _pg

# --- the table ---------------------------------------------------------------


k=$(num "$PAYMENTS")
echo
echo "paymentd benchmark ($REVISION): $k payments, ${DURATION}s per run, $THREADS wrk threads," \
     "$CONNECTIONS connections unless noted, GET body $BODY_BYTES bytes, list page $LIST_BYTES bytes," \
     "create answer $CREATE_BYTES bytes, deep list page $DEEP_BYTES bytes, $NPROC CPUs," \
     "$([ "$PEERS" -eq 1 ] && echo "peers ${PEER_DURATION}s per run," || echo "no peers,")" \
     "load average $LOAD_BEFORE before, $(cut -d' ' -f1-3 /proc/loadavg) after"
echo
row "measure" "value" "p50" "p99" "errors" "target" "result"
row "---" "---:" "---:" "---:" "---:" "---" "---"
row "fdatasync of 4 KiB, one at a time (higher of $FSYNC_RATES)" "$(num "$FSYNC_RATE") calls/s" "" "" "" "" ""
wrow nginx_static "nginx, static file"
wrow nginx_memory "nginx, return 200 from memory"
wrow mhd "bare libmicrohttpd, the GET body from memory (paymentd's daemon options)"
wrow get "GET /v1/payments/{id}"
wrow get_1000 "GET /v1/payments/{id}, $BIG_CONNECTIONS connections"
wrow nginx_list "nginx, the list page as a static file"
wrow list "GET /v1/payments?filter[organisation_id]&page[size]=100 ($MAIN_LIST_ITEMS items)"
wrow nginx_deep "nginx, an offset page of the deep organisation as a static file"
wrow list_deep "list of 100, random offset page 0-19 of one organisation's $(num "$DEEP") (page[number])"
wrow list_cursor0 "list of 100, cursor paging: page 0 (the first page) of those $(num "$DEEP")"
wrow list_cursor19 "list of 100, cursor paging: page 19 (page[after], 19 next links from page 0)"
wrow put "PUT /v1/payments/{id} (If-Match)"
wrow nginx_post "nginx, POST answered from memory (return 201)"
wrow post "POST /v1/payments"
if [ "$GROWTH" -eq 1 ]; then
  g=$(num "$GROWTH_PAYMENTS")
  wrow get_growth "GET /v1/payments/{id} at $g payments"
  wrow get_pair "GET /v1/payments/{id} at $k, right after"
  wrow list_growth "list of 100 at $g payments"
  wrow list_pair "list of 100 at $k, right after"
fi
r=$(ratio "${RPS[get]}" "${RPS[nginx_static]}")
row "GET / nginx static" "$(printf '%.2fx' "$r")" "" "" "" ">= 1.0x" "$(verdict "$r >= 1.0")"
r=$(ratio "${RPS[get]}" "${RPS[nginx_memory]}")
row "GET / nginx memory" "$(printf '%.2fx' "$r")" "" "" "" "" ""
r=$(ratio "${RPS[get]}" "${RPS[mhd]}")
row "GET / bare libmicrohttpd" "$(printf '%.2fx' "$r")" "" "" "" "" ""
r=$(ratio "${RPS[post]}" "$FSYNC_RATE")
row "POST / fdatasync rate" "$(printf '%.2fx' "$r")" "" "" "" ">= 10x" "$(verdict "$r >= 10")"
r=$(ratio "${RPS[post]}" "${RPS[nginx_post]}")
row "POST / nginx POST from memory" "$(printf '%.2fx' "$r")" "" "" "" "" ""
r=$(ratio "10 * $FSYNC_RATE" "${RPS[nginx_post]}")
row "POST target (10 x fdatasync rate) / nginx POST from memory" "$(printf '%.2fx' "$r")" "" "" "" "" ""
r=$(ratio "${RPS[put]}" "${RPS[post]}")
row "PUT / POST" "$(printf '%.2fx' "$r")" "" "" "" ">= 0.5x" "$(verdict "$r >= 0.5")"
row "list pages/s (first page of 100 organisations)" "$(num "${RPS[list]}")" "" "" "" "" ""
r=$(ratio "${RPS[list]}" "${RPS[nginx_list]}")
row "list / nginx list page static" "$(printf '%.2fx' "$r")" "" "" "" "" ""
r=$(ratio "${RPS[list_deep]}" "${RPS[nginx_deep]}")
row "list / nginx same page (offset page 0-19, $DEEP_BYTES bytes)" "$(printf '%.2fx' "$r")" "" "" "" ">= 0.8x" "$(verdict "$r >= 0.8")"
r=$(ratio "${RPS[list_cursor19]}" "${RPS[list_cursor0]}")
row "cursor page 19 / cursor page 0" "$(printf '%.2fx' "$r")" "" "" "" ">= 0.8x (same cost)" "$(verdict "$r >= 0.8")"
row "GET p99, $CONNECTIONS connections" "$(ms "${P99[get]}")" "" "" "" "< 5 ms" "$(verdict "${P99[get]} < 5")"
row "errors, $BIG_CONNECTIONS connections" "${ERRS[get_1000]}" "" "" "" "0" "$(verdict "${ERRS[get_1000]} == 0")"
other=$((ERRS[get] + ERRS[list] + ERRS[list_deep] + ERRS[list_cursor0] + ERRS[list_cursor19] + ERRS[put] + ERRS[post] + ERRS[post_follow] + ERRS[post_hooks0] +
         ERRS[post_hooks3] + ERRS[post_backlog] + ${ERRS[get_growth]:-0} + ${ERRS[get_pair]:-0} +
         ${ERRS[list_growth]:-0} + ${ERRS[list_pair]:-0}))
row "errors, other paymentd runs" "$other" "" "" "" "0" "$(verdict "$other == 0")"
row "peak RSS, $k payments, up to $BIG_CONNECTIONS connections" "$(printf '%.1f MB' "$(calc "$HWM_KB / 1024")")" \
  "" "" "" "< 64 MB" "$(verdict "$HWM_KB < 64 * 1024")"
row "peak RSS, after the POST run too" "$(printf '%.1f MB' "$(calc "$HWM_END_KB / 1024")")" "" "" "" "" ""
# The change feed's cost: bytes per write, and this build beside the baseline.
bytes() { printf '%s B' "$(num "$1")"; }
row "bytes to storage per PUT / per POST" "$(bytes "${WBYTES[put]}") / $(bytes "${WBYTES[post]}")" "" "" "" "" ""
row "bytes written (write calls) per PUT / per POST" "$(bytes "${WCHARS[put]}") / $(bytes "${WCHARS[post]}")" "" "" "" "" ""
row "feed read from the start (page[size]=1000)" \
  "$(num "$(calc "${FEED_EVENTS[all]} / ${FEED_SECS[all]}")") events/s" "" "" "" "" ""
wrow post_follow "POST /v1/payments, a consumer following the feed with wait"
row "feed followed with wait=1 during that POST run" \
  "$(num "$(calc "${FEED_EVENTS[follow]} / ${FEED_SECS[follow]}")") events/s" "" "" "" "" ""
row "... its lag after the run: time to catch up" "$(printf '%.2f s' "${FEED_LAG[follow]}")" "" "" "" "" ""
row "POST with the follower / POST" "$(printf '%.2fx' "$(ratio "${RPS[post_follow]}" "${RPS[post]}")")" "" "" "" "" ""
webhook_rows
[ "$PEERS" -eq 0 ] || peer_rows
if [ -n "$BASELINE" ]; then
  for w in get list put post; do
    wrow "${w}_base" "baseline $BASELINE: the same $w run$( [ "$w" = get ] || [ "$w" = list ] && echo ', mean of two' || echo ', right after')"
  done
  row "baseline bytes to storage per PUT / per POST" \
    "$(bytes "${WBYTES[put_base]}") / $(bytes "${WBYTES[post_base]}")" "" "" "" "" ""
  for w in get list; do
    r=$(ratio "${RPS[$w]}" "${RPS[${w}_base]}")
    row "$w / baseline $w" "$(printf '%.2fx' "$r")" "" "" "" ">= 0.9x (noise)" "$(verdict "$r >= 0.9")"
  done
  for w in put post; do
    r=$(ratio "${RPS[$w]}" "${RPS[${w}_base]}")
    row "$w / baseline $w" "$(printf '%.2fx' "$r")" "" "" "" "" ""
  done
fi
if [ "$GROWTH" -eq 1 ]; then
  r=$(ratio "${RPS[get_growth]}" "${RPS[get_pair]}")
  row "GET at $g / at $k" "$(printf '%.2fx' "$r")" "" "" "" ">= 0.8x" "$(verdict "$r >= 0.8")"
  r=$(ratio "${RPS[list_growth]}" "${RPS[list_pair]}")
  row "list at $g / at $k" "$(printf '%.2fx' "$r")" "" "" "" ">= 0.8x" "$(verdict "$r >= 0.8")"
  row "preload rate at $g" "$(num "${PRELOAD_RATE[$GROWTH_PAYMENTS]}") creates/s" "" "" "" "" ""
fi

# --- the PostgreSQL table (--store postgres) -----------------------------------

[ "$STORE" = postgres ] || exit 0
pg_header
prow get "GET /v1/payments/{id}"
prow list "list of 100 by organisation (first page)"
prow list_deep "list of 100, random offset page 0-19 of one organisation's $(num "$DEEP")"
prow list_cursor0 "list of 100, cursor page 0"
prow list_cursor19 "list of 100, cursor page 19 (page[after])"
prow put "PUT /v1/payments/{id} (If-Match)"
prow post "POST /v1/payments"
prow post_follow "POST, a consumer following the feed with wait"
vrow "preload: POST of $k payments, $CONNECTIONS connections" "$PRELOAD_SQLITE" "$PRELOAD_PG" " creates/s"
for w in put post; do
  vrow "$(tr a-z A-Z <<<"$w"): writes per commit (/metrics: writes / commits)" \
    "$(ratio "${WRITES[$w]}" "${COMMITS[$w]}")" "$(ratio "${WRITES[${w}_pg]}" "${COMMITS[${w}_pg]}")" ""
done
for w in put post; do
  vrow "$(tr a-z A-Z <<<"$w"): commits/s" "$(calc "${COMMITS[$w]} / $DURATION")" \
    "$(calc "${COMMITS[${w}_pg]} / $DURATION")" ""
done
row "bytes to storage per PUT / per POST (SQLite: paymentd; PostgreSQL: the server's processes)" \
  "$(bytes "${WBYTES[put]}") / $(bytes "${WBYTES[post]}")" \
  "$(bytes "${PG_WBYTES[put_pg]}") / $(bytes "${PG_WBYTES[post_pg]}")" "" "" "" ""
row "PostgreSQL WAL per PUT / per POST (pg_stat_wal)" "" \
  "$(bytes "${WAL_BYTES[put_pg]}") / $(bytes "${WAL_BYTES[post_pg]}")" "" "" "" ""
row "PostgreSQL WAL fsyncs during PUT / POST (pg_stat_wal), and commits" "" \
  "$(num "${WAL_SYNCS[put_pg]}") / $(num "${WAL_SYNCS[post_pg]}"), commits $(num "${COMMITS[put_pg]}") / $(num "${COMMITS[post_pg]}")" "" "" "" ""
for w in put post; do
  row "PostgreSQL: paymentd's busy connections during $(tr a-z A-Z <<<"$w") (state:wait, pg_stat_activity every 50 ms)" "" \
    "${PG_STATES[${w}_pg]}" "" "" "" ""
done
vrow "feed read from the start (page[size]=1000)" "$(calc "${FEED_EVENTS[all]} / ${FEED_SECS[all]}")" \
  "$(calc "${FEED_EVENTS[all_pg]} / ${FEED_SECS[all_pg]}")" " events/s"
vrow "feed followed with wait=1 during the POST run" "$(calc "${FEED_EVENTS[follow]} / ${FEED_SECS[follow]}")" \
  "$(calc "${FEED_EVENTS[follow_pg]} / ${FEED_SECS[follow_pg]}")" " events/s"
row "... its lag after the run" "$(printf '%.2f s' "${FEED_LAG[follow]}")" "$(printf '%.2f s' "${FEED_LAG[follow_pg]}")" "" "" "" ""
pg_webhook_rows
row "commit batch sizes over the whole run (/metrics, paymentd_store_commit_batch_size)" \
  "$SQLITE_BATCHES" "$PG_BATCHES" "" "" "" ""
pg_config_rows
