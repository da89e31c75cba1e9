#!/usr/bin/env bash
# bench/instructions.sh: paymentd's user-space instructions per request, counted by
# valgrind's callgrind over a fixed number of requests.  Requests per second move by tens of
# percent with the neighbours on a shared machine; this count does not, so it is the figure to
# compare two builds by.  (It leaves out the kernel: see `strace -c -f -p PID` for system
# calls per request.  callgrind counts each byte of a `rep stos`/`rep movs` as an instruction,
# which inflates libmicrohttpd's per-request memset of its connection pool: about 18,500 of
# the instructions of a GET.)
#
# Usage, from the repository root:
#   bench/instructions.sh                         # get:2000 list:200 post:500 put:500
#   bench/instructions.sh --binary /tmp/old/paymentd get:4000
#
# Options:
#   --binary PATH    measure this paymentd instead of building build/paymentd
#   --payments N     payments preloaded first (default 10000)
#   --connections N  keep-alive connections of the measured requests (default 4)
#   --keep DIR       keep each workload's callgrind output as DIR/NAME.cg.out
#   WORKLOAD[:N]     get, list, post or put (bench/client.py), N requests each
#
# The store is made once (preloaded through the API by the server itself, so it has the page
# size that build gives new stores); each workload then runs on a copy of it, with the server
# under callgrind, one HTTP thread, 50 requests of warm-up uncounted.
set -euo pipefail
export LC_ALL=C

BINARY="" PAYMENTS=10000 CONNECTIONS=4 KEEP="" WORKLOADS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BINARY="$2"; shift 2 ;;
    --payments) PAYMENTS="$2"; shift 2 ;;
    --connections) CONNECTIONS="$2"; shift 2 ;;
    --keep) KEEP="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) WORKLOADS+=("$1"); shift ;;
  esac
done
[ ${#WORKLOADS[@]} -gt 0 ] || WORKLOADS=(get:2000 list:200 post:500 put:500)
BENCH="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$BENCH")"
PY=/usr/bin/python3
for tool in valgrind callgrind_control callgrind_annotate curl; do
  command -v "$tool" >/dev/null || { echo "instructions: $tool is missing (apt-get install valgrind curl)" >&2; exit 1; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/paymentd-instr-XXXXXX")"
PID=""
cleanup() { [ -z "$PID" ] || kill -9 "$PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

if [ -z "$BINARY" ]; then
  make -C "$ROOT" -s -j2 build/paymentd >&2
  BINARY="$ROOT/build/paymentd"
fi
cp "$BINARY" "$WORK/paymentd"

# start DIR [PREFIX...]: paymentd (under PREFIX) on DIR/p.db and a free port; sets PID, URL.
start() {
  local dir="$1" port="" _
  shift
  "$@" "$WORK/paymentd" --store "sqlite:$dir/p.db" --listen 127.0.0.1:0 --threads 1 \
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

mkdir -p "$WORK/store"
start "$WORK/store"
BENCH_PAYMENTS=$PAYMENTS $PY "$BENCH/client.py" "$URL" preload "$PAYMENTS" 8
stop
echo "paymentd instructions per request ($PAYMENTS payments, $CONNECTIONS connections, callgrind)"
echo
echo "| workload | requests | instructions per request |"
echo "| --- | ---: | ---: |"
for w in "${WORKLOADS[@]}"; do
  name="${w%%:*}"; n="${w#*:}"; [ "$n" != "$w" ] || n=1000
  dir="$WORK/$name"; mkdir -p "$dir"; cp "$WORK/store/p.db" "$dir/"
  start "$dir" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/cg.out"
  warm="$name"; [ "$name" != put ] || warm="get"
  BENCH_PAYMENTS=$PAYMENTS RUN=1 $PY "$BENCH/client.py" "$URL" "$warm" 50 2
  callgrind_control -i on "$PID" >/dev/null 2>&1
  BENCH_PAYMENTS=$PAYMENTS RUN=2 $PY "$BENCH/client.py" "$URL" "$name" "$n" "$CONNECTIONS"
  callgrind_control -i off "$PID" >/dev/null 2>&1
  stop
  [ -z "$KEEP" ] || { mkdir -p "$KEEP"; cp "$dir/cg.out" "$KEEP/$name.cg.out"; }
  total=$(callgrind_annotate "$dir/cg.out" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
  printf '| %s | %s | %s |\n' "$name" "$n" "$(printf '%d' $((total / n)) | sed -e ':a' -e 's/\B[0-9]\{3\}\>/,&/' -e 'ta')"
done
