#!/usr/bin/env bash
# Starts and stops nats-server with JetStream on loopback, for the broker
# tests and for running them by hand:
#
#   tests/broker/nats.sh start DIR [PORT]   one server; prints its client port
#   tests/broker/nats.sh stop DIR           stops it, waits for the exit
#   tests/broker/nats.sh cluster-start DIR  three clustered servers; prints
#                                           their client URLs, comma-separated
#   tests/broker/nats.sh cluster-stop DIR   stops all three
#   tests/broker/nats.sh kill DIR [NODE]    kill -9 of the server in DIR (or
#                                           of node NODE, 1..3, of a cluster)
#   tests/broker/nats.sh stream-leader DIR STREAM
#                                           the node (1..3) leading STREAM in
#                                           the cluster of DIR, once elected
#
# DIR holds the state: pid, port, monitoring port, log and the JetStream
# store.  Without PORT, start reuses DIR/port when there is one (a restart
# after stop: same port, same data, which is how tests simulate an outage),
# else takes a free one.  A cluster keeps each node in DIR/n1..n3 and its
# ports in DIR/ports, so cluster-start after cluster-stop restarts the same
# cluster.  start waits until the server reports itself healthy (JetStream
# included); cluster-start waits until JetStream has a meta leader.
set -euo pipefail
PY=/usr/bin/python3
NATS_SERVER=${NATS_SERVER:-nats-server}

usage() {
  echo "usage: $0 start DIR [PORT] | stop DIR | cluster-start DIR | cluster-stop DIR |" \
    "kill DIR [NODE] | stream-leader DIR STREAM" >&2
  exit 2
}
[ $# -ge 2 ] || usage
cmd=$1 dir=$2

# Free TCP ports on 127.0.0.1 (bound and released: another process could take
# one in between, which on a test machine is unlikely enough).
free_ports() {
  "$PY" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# The body of GET PATH on 127.0.0.1:PORT, or nothing; bash's /dev/tcp, so
# neither curl nor wget is needed.
http_get() {
  local port=$1 path=$2
  (
    exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
    timeout 2 cat <&3
  ) 2>/dev/null | sed '1,/^\r\{0,1\}$/d'
}

# Whether the server of node directory $1 runs: a killed server may linger
# as a zombie until its parent (init, since nohup) reaps it, and counts as
# gone.
running() {
  local pid st
  [ -f "$1/pid" ] || return 1
  pid=$(cat "$1/pid")
  kill -0 "$pid" 2>/dev/null || return 1
  st=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$st" ] && [ "$st" != Z ]
}

# Launches one server from node directory $1 (its ports already in files).
launch() {
  local nd=$1; shift
  mkdir -p "$nd/store"
  if running "$nd"; then echo "nats: already running in $nd (pid $(cat "$nd/pid"))" >&2; return 1; fi
  nohup "$NATS_SERVER" -a 127.0.0.1 -p "$(cat "$nd/port")" -m "$(cat "$nd/mport")" \
    -js -sd "$nd/store" "$@" >>"$nd/log" 2>&1 </dev/null &
  echo $! >"$nd/pid"
}

# Waits (up to 20 s) until the server of $1 answers /healthz with "ok" and,
# when $2 is "leader", until /jsz names a meta leader.  The server must also
# have logged, under its own pid, that it is ready: its ports were free ones
# when chosen, but another process may have taken one since, and then the
# answers on them are another server's (which a test would then use, and
# stop or freeze the wrong process).
wait_ready() {
  local nd=$1 want=${2:-} body pid
  for _ in $(seq 1 400); do
    running "$nd" || break
    pid=$(cat "$nd/pid")
    if ! grep -q "^\[$pid\] .*Server is ready" "$nd/log"; then sleep 0.05; continue; fi
    body=$(http_get "$(cat "$nd/mport")" /healthz || true)
    if [[ $body == *'"ok"'* ]]; then
      if [ "$want" != leader ]; then return 0; fi
      body=$(http_get "$(cat "$nd/mport")" /jsz || true)
      if [[ $body =~ \"leader\":\ *\"[^\"]+\" ]]; then return 0; fi
    fi
    sleep 0.05
  done
  echo "nats: server in $nd did not become ready; log:" >&2
  tail -n 20 "$nd/log" >&2
  return 1
}

# Stops the server of $1: SIGTERM, then SIGKILL after 10 s.
halt() {
  local nd=$1 pid
  if ! running "$nd"; then rm -f "$nd/pid"; return 0; fi
  pid=$(cat "$nd/pid")
  kill -TERM "$pid"
  for _ in $(seq 1 200); do
    running "$nd" || { rm -f "$nd/pid"; return 0; }
    sleep 0.05
  done
  echo "nats: pid $pid did not exit within 10s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$nd/pid"
  return 1
}

case "$cmd" in
start)
  mkdir -p "$dir"
  fresh=0 # the ports are chosen here, so others can be chosen if one was taken
  if [ -n "${3:-}" ]; then echo "$3" >"$dir/port"; fi
  if [ ! -s "$dir/port" ]; then free_ports 1 >"$dir/port"; fresh=1; fi
  if [ ! -s "$dir/mport" ]; then free_ports 1 >"$dir/mport"; fi
  for _ in 1 2 3; do
    launch "$dir" -n paymentd-nats
    if wait_ready "$dir"; then cat "$dir/port"; exit 0; fi
    halt "$dir" || true
    [ "$fresh" = 1 ] || break
    read -r port mport <<<"$(free_ports 2)"
    echo "$port" >"$dir/port"
    echo "$mport" >"$dir/mport"
  done
  exit 1
  ;;
stop)
  halt "$dir"
  ;;
cluster-start)
  mkdir -p "$dir"
  if [ ! -s "$dir/ports" ]; then free_ports 9 >"$dir/ports"; fi
  read -r -a p <"$dir/ports"
  routes="nats://127.0.0.1:${p[6]},nats://127.0.0.1:${p[7]},nats://127.0.0.1:${p[8]}"
  for i in 0 1 2; do
    nd="$dir/n$((i + 1))"
    mkdir -p "$nd"
    echo "${p[$i]}" >"$nd/port"
    echo "${p[$((i + 3))]}" >"$nd/mport"
    launch "$nd" -n "n$((i + 1))" --cluster_name paymentd \
      --cluster "nats://127.0.0.1:${p[$((i + 6))]}" --routes "$routes"
  done
  ok=1
  for i in 1 2 3; do wait_ready "$dir/n$i" leader || { ok=0; break; }; done
  if [ "$ok" = 1 ]; then
    echo "nats://127.0.0.1:${p[0]},nats://127.0.0.1:${p[1]},nats://127.0.0.1:${p[2]}"
    exit 0
  fi
  for i in 1 2 3; do halt "$dir/n$i" || true; done
  exit 1
  ;;
cluster-stop)
  rc=0
  for i in 1 2 3; do
    if [ -d "$dir/n$i" ]; then halt "$dir/n$i" || rc=1; fi
  done
  exit "$rc"
  ;;
kill)
  nd=$dir
  if [ -n "${3:-}" ]; then nd="$dir/n$3"; fi
  if running "$nd"; then kill -KILL "$(cat "$nd/pid")"; fi
  for _ in $(seq 1 100); do running "$nd" || break; sleep 0.05; done
  rm -f "$nd/pid"
  ;;
stream-leader)
  [ $# -ge 3 ] || usage
  # Each live node reports the streams it holds; the leader names itself.
  for _ in $(seq 1 200); do
    for i in 1 2 3; do
      running "$dir/n$i" || continue
      if http_get "$(cat "$dir/n$i/mport")" '/jsz?streams=true' | "$PY" -c '
import json, sys
try:
    j = json.load(sys.stdin)
except ValueError:
    sys.exit(1)
for a in j.get("account_details") or []:
    for st in a.get("stream_detail") or []:
        if st.get("name") == sys.argv[1] and (st.get("cluster") or {}).get("leader") == sys.argv[2]:
            sys.exit(0)
sys.exit(1)' "$3" "n$i"; then
        echo "$i"
        exit 0
      fi
    done
    sleep 0.05
  done
  echo "nats: no leader for stream $3" >&2
  exit 1
  ;;
*) usage ;;
esac
