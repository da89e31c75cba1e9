#!/usr/bin/env bash
# bench/cpu.sh: server CPU time per request (user + system, from /proc/PID/stat)
# of one or more paymentd builds, next to a bare libmicrohttpd server
# (bench/mhd_static.c) answering the same GET body (GET workload only).  Requests per second of a
# server follow what its neighbours do; the CPU it spends per request moves
# much less, so this is how two builds, or a build and its HTTP library, are
# compared on a shared machine.  Kernel work done for the server (system
# calls, the loopback path) counts; wrk's own does not.
#
# Usage, from the repository root:
#   bench/cpu.sh                                  # build/paymentd, GET, 3 rounds
#   bench/cpu.sh --binary /tmp/old/paymentd --binary build/paymentd --workload list
#
# Options:
#   --binary PATH    a paymentd to measure (repeatable; default: make build/paymentd)
#   --workload W     get or list (bench/get.lua, bench/list.lua; default get)
#   --payments N     payments each server preloads (default 10000)
#   --rounds N       rounds; each runs every server once, in turn (default 3)
#   --duration S     seconds of each wrk run (default 8)
#   --server-args A  flags every paymentd gets (default "--log-level warn": no
#                    access log; "--log-level info" measures it, to a file)
#
# Every server runs on a store it preloaded itself, all at once, idle but for
# its own wrk run; prints one line per run and leaves nothing behind.
set -euo pipefail
export LC_ALL=C

BINARIES=() WORKLOAD=get PAYMENTS=10000 ROUNDS=3 DURATION=8 SERVER_ARGS="--log-level warn"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BINARIES+=("$2"); shift 2 ;;
    --workload) WORKLOAD="$2"; shift 2 ;;
    --payments) PAYMENTS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --server-args) SERVER_ARGS="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "cpu: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$WORKLOAD" in get|list) ;; *) echo "cpu: --workload is get or list" >&2; exit 2 ;; esac
BENCH="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$BENCH")"
PY=/usr/bin/python3
for tool in wrk curl gcc; do
  command -v "$tool" >/dev/null || { echo "cpu: $tool is missing (bench/run.sh installs it)" >&2; exit 1; }
done
if [ ${#BINARIES[@]} -eq 0 ]; then
  make -C "$ROOT" -s -j2 build/paymentd >&2
  BINARIES=("$ROOT/build/paymentd")
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/paymentd-cpu-XXXXXX")"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# start NAME CMD...: CMD in the background (@PORT@ becomes a free port) until
# /healthz or / answers; appends to PIDS, NAMES and URLS.
NAMES=() URLS=()
start() {
  local name="$1" port _
  shift
  port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "${@//@PORT@/$port}" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!) NAMES+=("$name") URLS+=("http://127.0.0.1:$port")
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && return 0
    kill -0 "${PIDS[-1]}" 2>/dev/null || { tail -3 "$WORK/$name.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "cpu: $name did not answer" >&2
  exit 1
}

gcc -std=c17 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -o "$WORK/mhd_static" "$BENCH/mhd_static.c" \
  -lmicrohttpd
# Each build preloads a fresh store of its own: builds with different store
# schemas can be compared, and each is measured on the layout it writes.
for i in "${!BINARIES[@]}"; do
  mkdir -p "$WORK/s$i"
  start "paymentd-$i" "${BINARIES[$i]}" --store "sqlite:$WORK/s$i/p.db" --listen 127.0.0.1:@PORT@ \
    $SERVER_ARGS
  BENCH_PAYMENTS=$PAYMENTS $PY "$BENCH/client.py" "${URLS[$i]}" preload "$PAYMENTS" 16 >/dev/null
done
# payment 0 of the preload (bench/common.lua's ids): the body mhd_static answers
curl -s -f -o "$WORK/body" "${URLS[0]}/v1/payments/00000000-b001-4000-8000-000000000000"
# A list ceiling would need the list page; mhd_static is the GET's.
[ "$WORKLOAD" != get ] || start mhd_static "$WORK/mhd_static" @PORT@ "$WORK/body"

echo "server CPU per request, $WORKLOAD, $PAYMENTS payments, wrk -t2 -c64 -d${DURATION}s, paymentd $SERVER_ARGS"
for i in "${!BINARIES[@]}"; do echo "  paymentd-$i: ${BINARIES[$i]}"; done
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for round in $(seq "$ROUNDS"); do
  for j in "${!PIDS[@]}"; do
    c0=$(cpu_ticks "${PIDS[$j]}")
    BENCH_DIR="$BENCH" BENCH_PAYMENTS=$PAYMENTS wrk -t2 -c64 -d"${DURATION}s" \
      -s "$BENCH/$WORKLOAD.lua" "${URLS[$j]}" >"$WORK/wrk.out" 2>&1
    c1=$(cpu_ticks "${PIDS[$j]}")
    n=$(awk '/requests in/ {print $1}' "$WORK/wrk.out")
    rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$WORK/wrk.out")
    awk -v r="$round" -v s="${NAMES[$j]}" -v c="$((c1 - c0))" -v t="$ticks" -v n="$n" -v q="$rps" \
      'BEGIN { printf "round %d  %-12s %8d req/s  %7.2f us CPU per request\n", r, s, q, c * 1e6 / t / n }'
  done
done
