#!/usr/bin/env bash
# Starts and stops a private PostgreSQL server for the tests (Debian's
# postgresql-15, installed by scripts/setup.sh), never Debian's own cluster:
#
#   tests/pg/pg.sh start DIR [PORT]   prints the store URI once it answers
#   tests/pg/pg.sh stop DIR           fast shutdown, waits for the exit
#   tests/pg/pg.sh kill DIR           SIGKILL of the server (a crash), no wait for a checkpoint
#   tests/pg/pg.sh uri DIR            prints the store URI of a started DIR
#
# DIR holds the cluster (DIR/data, made by initdb on the first start), its
# socket, port and log.  The server listens on 127.0.0.1 only, on PORT, else
# the port DIR used before, else a free one, with trust authentication for
# the local user "paymentd" and a database "paymentd".  PostgreSQL refuses to
# run as root: as root, the cluster belongs to the "postgres" system user
# (the package makes it) and every server command runs as that user.
set -euo pipefail
PY=/usr/bin/python3

usage() { echo "usage: $0 start DIR [PORT] | stop DIR | kill DIR | uri DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1 dir=$2

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bindir" ] || { echo "pg: no PostgreSQL server installed (scripts/setup.sh)" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

uri() { echo "postgres://paymentd@127.0.0.1:$(cat "$dir/port")/paymentd"; }

running() { [ -f "$dir/data/postmaster.pid" ] && as_owner "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; }

case "$cmd" in
start)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; chmod 700 "$dir"; fi
  if [ -f "$dir/port" ] && running; then uri; exit 0; fi  # started already: the same server
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_owner "$bindir/initdb" -D "$dir/data" -U paymentd --auth=trust -E UTF8 --locale=C.UTF-8 \
      >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
  fi
  port=${3:-}
  [ -n "$port" ] || port=$(cat "$dir/port" 2>/dev/null || true)
  [ -n "$port" ] || port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  as_owner sh -c "echo $port >'$dir/port'"
  as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on -c max_connections=200" \
    start >/dev/null || { tail -n 20 "$dir/log" >&2; exit 1; }
  if ! as_owner "$bindir/psql" -h 127.0.0.1 -p "$port" -U paymentd -d postgres -Atqc \
      "SELECT 1 FROM pg_database WHERE datname = 'paymentd'" | grep -q 1; then
    as_owner "$bindir/createdb" -h 127.0.0.1 -p "$port" -U paymentd paymentd
  fi
  uri
  ;;
stop)
  [ -d "$dir/data" ] || exit 0
  if running; then as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null; fi
  ;;
kill)
  # The whole server at once, as a machine's crash would stop it: the
  # postmaster and its backends (a backend left running would hold the
  # shared memory and keep the next start from happening).
  if [ -f "$dir/data/postmaster.pid" ]; then
    pid=$(head -n 1 "$dir/data/postmaster.pid")
    pids="$pid $(pgrep -P "$pid" 2>/dev/null | tr '\n' ' ')"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    for _ in $(seq 1 200); do
      alive=0
      for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
      [ "$alive" -eq 1 ] || break
      sleep 0.05
    done
  fi
  ;;
uri) uri ;;
*) usage ;;
esac
