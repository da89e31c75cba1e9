#!/usr/bin/env bash
# bench/instructions.sh: paymentd's user-space instructions and heap allocations per request,
# counted by valgrind's callgrind over a fixed number of requests.  Requests per second move by
# tens of percent with the neighbours on a shared machine; these counts do not, so they are the
# figures to compare two builds by.  (They leave out the kernel: see `strace -c -f -p PID` for
# system calls per request.  callgrind counts each byte of a `rep stos`/`rep movs` as an
# instruction, which inflates libmicrohttpd's per-request memset of its connection pool: about
# 18,500 of the instructions of a GET.)
#
# Usage, from the repository root:
#   bench/instructions.sh                         # get:2000 list:200 post:500 put:500 patch:500
#   bench/instructions.sh --binary /tmp/old/paymentd get:4000
#   bench/instructions.sh --no-webhooks post:500  # the server as measured before webhooks
#
# Options:
#   --binary PATH    measure this paymentd instead of building build/paymentd
#   --payments N     payments preloaded first (default 10000)
#   --connections N  keep-alive connections of the measured requests (default 4)
#   --keep DIR       keep each workload's callgrind output, one file per thread, as
#                    DIR/NAME.cg.out-NN (callgrind_annotate reads them)
#   --no-webhooks    no webhook endpoint and no webhook flag: the server with its defaults
#   WORKLOAD[:N]     get, list, post, put or patch (bench/client.py), N requests each
#
# History and webhooks are on by default, as the write path's targets count them: the server
# runs with --webhooks true --webhook-allow-private true, and before the measured requests every
# organisation the workloads write (bench/client.py: organisation i % 100) has one webhook
# endpoint subscribed to every event type ("*"), pointing at a local receiver answering 200 at
# once (bench/mhd_static.c).  Each write is then owed to one endpoint.  The webhook deliverer's
# threads (src/webhook/deliver.c) are counted apart, in their own column: their work happens
# after the answer, as much of it inside the measured window as the receiver and the schedule
# allow, so it is a rough figure; the request columns are the other threads (HTTP, store
# writer, relay...).
#
# Allocations are the calls of malloc, calloc, realloc, posix_memalign and aligned_alloc
# (memalign) in those threads, from callgrind's call counts (bench/callgrind_counts.py;
# `bench/callgrind_counts.py selftest` checks the count on a program of known allocations).
#
# The store is made once (preloaded through the API by the server itself, so it has the page
# size that build gives new stores; the endpoints registered after the preload); each workload
# then runs on a copy of it, with the server under callgrind, one HTTP thread, 50 requests of
# warm-up uncounted.
set -euo pipefail
export LC_ALL=C

BINARY="" PAYMENTS=10000 CONNECTIONS=4 KEEP="" WEBHOOKS=1 WORKLOADS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BINARY="$2"; shift 2 ;;
    --payments) PAYMENTS="$2"; shift 2 ;;
    --connections) CONNECTIONS="$2"; shift 2 ;;
    --keep) KEEP="$2"; shift 2 ;;
    --no-webhooks) WEBHOOKS=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) WORKLOADS+=("$1"); shift ;;
  esac
done
[ ${#WORKLOADS[@]} -gt 0 ] || WORKLOADS=(get:2000 list:200 post:500 put:500 patch:500)
BENCH="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$BENCH")"
PY=/usr/bin/python3
for tool in valgrind callgrind_control curl gcc; do
  command -v "$tool" >/dev/null || { echo "instructions: $tool is missing (apt-get install valgrind curl gcc)" >&2; exit 1; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/paymentd-instr-XXXXXX")"
PID="" HOOK_PID=""
cleanup() {
  [ -z "$PID" ] || kill -9 "$PID" 2>/dev/null || true
  [ -z "$HOOK_PID" ] || { kill "$HOOK_PID" 2>/dev/null; wait "$HOOK_PID" 2>/dev/null; } || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "$BINARY" ]; then
  make -C "$ROOT" -s -j2 build/paymentd >&2
  BINARY="$ROOT/build/paymentd"
fi
cp "$BINARY" "$WORK/paymentd"

SERVER_FLAGS=(--threads 1)
[ "$WEBHOOKS" -eq 0 ] || SERVER_FLAGS+=(--webhooks true --webhook-allow-private true)

# free_port: a port of 127.0.0.1 free right now.
free_port() {
  $PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The webhook receiver: bench/mhd_static answering {} with 200 to any request.
start_receiver() {
  local port _
  gcc -std=c17 -O2 -Wall -Wextra -Werror -o "$WORK/mhd_static" "$BENCH/mhd_static.c" -lmicrohttpd
  printf '{}\n' >"$WORK/hook_answer.json"
  port=$(free_port)
  "$WORK/mhd_static" "$port" "$WORK/hook_answer.json" 2>"$WORK/receiver.log" &
  HOOK_PID=$!
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    kill -0 "$HOOK_PID" 2>/dev/null || { cat "$WORK/receiver.log" >&2; exit 1; }
    sleep 0.1
  done
  HOOK_URL="http://127.0.0.1:$port"
}

# register_endpoints: one endpoint per organisation 0..99 for every event type.
register_endpoints() {
  local k org code
  for k in $(seq 0 99); do
    org=$(printf '0e0e0e0e-0000-4000-8000-%012x' "$k")
    code=$(curl -s -o "$WORK/endpoint.json" -w '%{http_code}' -H 'Content-Type: application/json' \
           --data-binary "{\"data\": {\"organisation_id\": \"$org\", \"url\": \"$HOOK_URL/hook/$k\",
                           \"event_types\": [\"*\"], \"description\": \"instructions $k\"}}" \
           "$URL/v1/webhooks")
    [ "$code" = 201 ] || { cat "$WORK/endpoint.json" >&2; echo "instructions: endpoint $k: $code" >&2; exit 1; }
  done
}

# start DIR [PREFIX...]: paymentd (under PREFIX) on DIR/p.db and a free port; sets PID, URL.
start() {
  local dir="$1" port="" _
  shift
  "$@" "$WORK/paymentd" --store "sqlite:$dir/p.db" --listen 127.0.0.1:0 "${SERVER_FLAGS[@]}" \
    2>"$dir/log" &
  PID=$!
  for _ in $(seq 600); do
    port=$(sed -n 's/.*paymentd listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$dir/log" | head -1)
    if [ -n "$port" ] && curl -s -o /dev/null "http://127.0.0.1:$port/healthz"; then break; fi
    kill -0 "$PID" 2>/dev/null || { tail -5 "$dir/log" >&2; exit 1; }
    sleep 0.1
  done
  URL="http://127.0.0.1:$port"
}
stop() { kill -TERM "$PID"; wait "$PID" || true; PID=""; }

# group N: N with thousands separators.
group() { printf '%d' "$1" | sed -e ':a' -e 's/\B[0-9]\{3\}\>/,&/' -e 'ta'; }

[ "$WEBHOOKS" -eq 0 ] || start_receiver
mkdir -p "$WORK/store"
start "$WORK/store"
BENCH_PAYMENTS=$PAYMENTS $PY "$BENCH/client.py" "$URL" preload "$PAYMENTS" 8
[ "$WEBHOOKS" -eq 0 ] || register_endpoints
stop
if [ "$WEBHOOKS" -eq 1 ]; then
  hooks="history and webhooks on: 100 endpoints, one per organisation written, every event type"
else
  hooks="--no-webhooks: history on, no webhook endpoint"
fi
echo "paymentd instructions per request ($PAYMENTS payments, $CONNECTIONS connections, callgrind;" \
     "flags: ${SERVER_FLAGS[*]}; $hooks)"
echo
echo "| workload | requests | instructions per request | allocations per request | webhook deliverer's instructions per request |"
echo "| --- | ---: | ---: | ---: | ---: |"
for w in "${WORKLOADS[@]}"; do
  name="${w%%:*}"; n="${w#*:}"; [ "$n" != "$w" ] || n=1000
  dir="$WORK/$name"; mkdir -p "$dir"; cp "$WORK/store/p.db" "$dir/"
  start "$dir" valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes \
    --callgrind-out-file="$dir/cg.out"
  warm="$name"; [ "$name" != put ] && [ "$name" != patch ] || warm="get"
  BENCH_PAYMENTS=$PAYMENTS RUN=1 $PY "$BENCH/client.py" "$URL" "$warm" 50 2
  callgrind_control -i on "$PID" >/dev/null 2>&1
  BENCH_PAYMENTS=$PAYMENTS RUN=2 $PY "$BENCH/client.py" "$URL" "$name" "$n" "$CONNECTIONS"
  callgrind_control -i off "$PID" >/dev/null 2>&1
  stop
  files=("$dir"/cg.out-*)
  [ -e "${files[0]}" ] || { echo "instructions: callgrind wrote no output for $name" >&2; exit 1; }
  if [ -n "$KEEP" ]; then
    mkdir -p "$KEEP"
    for f in "${files[@]}"; do cp "$f" "$KEEP/$name.${f##*/}"; done
  fi
  line=$($PY "$BENCH/callgrind_counts.py" "${files[@]}" | grep '^TOTAL ')
  total=$(sed -n 's/.* instructions=\([0-9]*\).*/\1/p' <<<"$line")
  allocs=$(sed -n 's/.* allocations=\([0-9]*\).*/\1/p' <<<"$line")
  hook=$(sed -n 's/.* webhook_instructions=\([0-9]*\).*/\1/p' <<<"$line")
  printf '| %s | %s | %s | %s | %s |\n' "$name" "$n" "$(group $((total / n)))" \
    "$(awk -v a="$allocs" -v n="$n" 'BEGIN { printf "%.1f", a / n }')" "$(group $((hook / n)))"
done
