#!/usr/bin/env bash
# Starts and stops the MongoDB test double (tests/mongo/double.py) in the
# background, for CI and for running the MongoDB tests by hand:
#
#   tests/mongo/double.sh start DIR [PORT]   prints the port once it listens
#   tests/mongo/double.sh stop DIR           saves its data, waits for the exit
#
# DIR holds its state: port, pid, log and data.bson.  Without PORT, start
# reuses DIR/port when there is one (a restart after stop: same port, same
# data, which is how tests simulate a MongoDB outage), else takes a free one.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
PY=/usr/bin/python3

usage() { echo "usage: $0 start DIR [PORT] | stop DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1 dir=$2

running() { [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; }

case "$cmd" in
start)
  mkdir -p "$dir"
  if running; then echo "double: already running (pid $(cat "$dir/pid"))" >&2; exit 1; fi
  port=${3:-}
  [ -n "$port" ] || port=$(cat "$dir/port" 2>/dev/null || echo 0)
  rm -f "$dir/ready"
  nohup "$PY" "$here/double.py" --port "$port" --data "$dir/data.bson" --ready "$dir/ready" \
    >>"$dir/log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  for _ in $(seq 1 200); do
    if [ -f "$dir/ready" ]; then
      cp "$dir/ready" "$dir/port"
      cat "$dir/port"
      exit 0
    fi
    running || break
    sleep 0.05
  done
  echo "double: did not start; log:" >&2
  tail -n 20 "$dir/log" >&2
  if running; then kill "$(cat "$dir/pid")"; fi
  rm -f "$dir/pid"
  exit 1
  ;;
stop)
  if ! running; then rm -f "$dir/pid"; exit 0; fi
  pid=$(cat "$dir/pid")
  kill -TERM "$pid"
  for _ in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$dir/pid"; exit 0; }
    sleep 0.05
  done
  echo "double: pid $pid did not exit within 10s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
  exit 1
  ;;
*) usage ;;
esac
