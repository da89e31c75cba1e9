# shellcheck shell=bash
# The installed package run by systemd itself, in its hardened units: sourced
# by tests/deb/test_package.sh once the package is installed, with its
# check/ok/fail helpers.
#
# The machine's init is not systemd, so the checks boot one: systemd-nspawn
# starts systemd as PID 1 of a container whose root is an overlay of this
# machine's (the installed package included; every change lands in the
# overlay's upper folder and goes with it), with a network of its own (only
# loopback), in basic.target so that no other service of the machine starts.
# Commands run inside through nsenter.  Then, on the unit exactly as packaged
# (a drop-in only where a check says so):
#   - systemctl start returns once READY=1 came; the server answers, writes
#     payments into /var/lib/paymentd under ProtectSystem=strict, resolves
#     "localhost" and delivers a signed webhook to a receiver (libcurl, DNS,
#     the system call filter and the address families at work);
#   - systemctl reload (SIGHUP) takes a changed API keys file with the same
#     main PID; a bad file leaves the previous keys in force;
#   - kill -9 is restarted (Restart=on-failure); with WatchdogSec=2s the
#     pings keep it running, and a frozen server is killed and restarted;
#   - systemctl stop ends it with status 0 and "paymentd stopped" in the
#     journal; systemd-analyze security scores the running unit;
#   - paymentd-worker@1 (with a NATS JetStream server inside) starts, is
#     ready and stops cleanly.
# under_systemd_cleanup stops the container and removes the overlay; the
# caller's cleanup calls it, whatever happened.

ns_dir=""        # the overlay's folders
ns_root=""       # the container's root (the overlay's mount point)
ns_pid=""        # systemd-nspawn's pid
ns_init=""       # the container's PID 1, as this machine sees it

# Runs CMD inside the container (every namespace of its PID 1).
in_ns() { nsenter -t "$ns_init" -a "$@"; }

# HTTP status of one request made inside the container: METHOD PATH
# [curl arguments...].
in_http() {
  local method=$1 path=$2; shift 2
  in_ns curl -s -o /dev/null -w '%{http_code}' -X "$method" "http://127.0.0.1:8080$path" "$@" \
    2>/dev/null || echo 000
}

# One property of a unit (systemctl show -P).
unit_prop() { in_ns systemctl show -P "$2" "$1" 2>/dev/null; }

# Waits up to SECONDS for CMD to succeed.
wait_for() {
  local seconds=$1; shift
  local i
  for ((i = 0; i < seconds * 10; i++)); do
    "$@" && return 0
    sleep 0.1
  done
  return 1
}

# Whether the process PID still runs (a zombie, exited but not waited
# for, does not).
running() { [ -e "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

# Stops the container: a halt (SIGTERM to systemd-nspawn), and when that
# takes more than 5 s, SIGKILL to its PID 1, which ends every process of the
# container at once (its changes are thrown away with the overlay anyway).
# Safe under errexit and safe to run twice.
under_systemd_cleanup() {
  if [ -n "$ns_pid" ]; then
    kill -TERM "$ns_pid" 2>/dev/null || true
    for _ in $(seq 50); do running "$ns_pid" || break; sleep 0.1; done
    if running "$ns_pid" && [ -n "$ns_init" ]; then kill -KILL "$ns_init" 2>/dev/null || true; fi
    for _ in $(seq 50); do running "$ns_pid" || break; sleep 0.1; done
    kill -KILL "$ns_pid" 2>/dev/null || true
    wait "$ns_pid" 2>/dev/null || true
    ns_pid=""
  fi
  if [ -n "$ns_root" ] && mountpoint -q "$ns_root"; then
    umount "$ns_root" 2>/dev/null || umount -l "$ns_root" || true
  fi
  if [ -n "$ns_dir" ]; then rm -rf "$ns_dir"; fi
  ns_root="" ns_dir="" ns_init=""
  return 0
}

# Boots the container; 0 once its systemd reports itself running.
under_systemd_boot() {
  ns_dir=$(mktemp -d /tmp/paymentd-nspawn-XXXXXX)
  mkdir -p "$ns_dir/upper" "$ns_dir/work" "$ns_dir/root"
  ns_root="$ns_dir/root"
  mount -t overlay overlay -o "lowerdir=/,upperdir=$ns_dir/upper,workdir=$ns_dir/work" "$ns_root" ||
    return 1
  systemd-nspawn -q -D "$ns_root" --private-network --register=no --keep-unit \
    --link-journal=no -b --console=pipe -- systemd.unit=basic.target \
    >"$ns_dir/boot.log" 2>&1 </dev/null &
  ns_pid=$!
  local p
  for _ in $(seq 300); do
    for p in $(pgrep -P "$ns_pid"); do
      [ "$(cat "/proc/$p/comm" 2>/dev/null)" = systemd ] && ns_init=$p
    done
    [ -n "$ns_init" ] && break
    kill -0 "$ns_pid" 2>/dev/null || return 1
    sleep 0.1
  done
  [ -n "$ns_init" ] || return 1
  local state=""
  for _ in $(seq 600); do
    state=$(in_ns systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) return 0 ;; esac
    sleep 0.1
  done
  echo "container's systemd: $state"
  return 1
}

# A drop-in for UNIT (e.g. paymentd.service) holding TEXT, then daemon-reload.
drop_in() {
  mkdir -p "$ns_root/etc/systemd/system/$1.d"
  printf '%s\n' "$2" > "$ns_root/etc/systemd/system/$1.d/$3.conf"
  in_ns systemctl daemon-reload
}

api_key_line() { # ID SECRET
  printf '%s %s *\n' "$1" "$(printf '%s' "$2" | sha256sum | cut -d' ' -f1)"
}

under_systemd_checks() {
  if ! under_systemd_boot; then
    tail -n 20 "$ns_dir/boot.log" 2>/dev/null
    fail "systemd boots in a container on this machine's root (systemd-nspawn)"
    return 0
  fi
  ok "systemd boots in a container on this machine's root (systemd-nspawn)"
  local org=ee2fb143-6dfe-4787-b183-ca8ddd4164d2
  local body="{\"data\":{\"organisation_id\":\"$org\",\"attributes\":{\"amount\":\"10.00\",\"currency\":\"GBP\"}}}"
  local json=(-H 'Content-Type: application/json')

  # --- start, serve, write, deliver --------------------------------------
  # A webhook receiver inside (loopback; a transient unit of the container's
  # systemd, so that no process of this machine waits on it), and private
  # destinations allowed.
  in_ns systemd-run --quiet --unit=paymentd-test-receiver /usr/bin/python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        with open("/var/tmp/paymentd-received", "a") as f:
            f.write("%s %s\n" % (self.headers.get("webhook-id"), self.headers.get("webhook-signature")))
        self.send_response(204); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", 8099), H).serve_forever()
'
  drop_in paymentd.service $'[Service]\nEnvironment=PAYMENTD_WEBHOOK_ALLOW_PRIVATE=true' test-webhooks
  check "systemctl start paymentd returns (READY=1) and the unit is active" \
    quiet in_ns systemctl start paymentd
  check "paymentd.service is active/running as user paymentd" \
    test "$(unit_prop paymentd ActiveState)/$(unit_prop paymentd SubState)/$(unit_prop paymentd User)" = active/running/paymentd
  check "GET /healthz under systemd answers 200" test "$(in_http GET /healthz)" = 200
  local code
  code=$(in_http POST /v1/webhooks "${json[@]}" -d "{\"data\":{\"organisation_id\":\"$org\",\"url\":\"http://localhost:8099/hook\",\"event_types\":[\"*\"]}}")
  check "a webhook endpoint (http://localhost:8099) is registered: 201 (got $code)" test "$code" = 201
  code=$(in_http POST /v1/payments "${json[@]}" -d "$body")
  check "POST /v1/payments under ProtectSystem=strict: 201 (got $code)" test "$code" = 201
  check "the store written is /var/lib/paymentd/payments.db (with its WAL)" \
    test -s "$ns_root/var/lib/paymentd/payments.db" -a -e "$ns_root/var/lib/paymentd/payments.db-wal"
  check "the webhook is delivered, signed, from inside the sandbox (DNS, libcurl, TCP)" \
    wait_for 20 quiet grep -q ' v1,' "$ns_root/var/tmp/paymentd-received"
  check "nothing the sandbox refused is in the journal (no \"not permitted\", no \"denied\")" \
    sh -c "! nsenter -t $ns_init -a journalctl -u paymentd -o cat --no-pager | grep -Eqi 'not permitted|denied'"

  # --- reload: API keys ----------------------------------------------------
  local keys="$ns_root/etc/paymentd/api-keys"
  api_key_line alpha secret-alpha > "$keys"
  in_ns chown root:paymentd /etc/paymentd/api-keys
  in_ns chmod 0640 /etc/paymentd/api-keys
  drop_in paymentd.service $'[Service]\nEnvironment=PAYMENTD_API_KEYS=/etc/paymentd/api-keys' test-keys
  check "systemctl restart paymentd with API keys" quiet in_ns systemctl restart paymentd
  local pid
  pid=$(unit_prop paymentd MainPID)
  check "with keys: alpha 200, beta 401" test \
    "$(in_http GET /v1/payments -H 'Authorization: Bearer secret-alpha')/$(in_http GET /v1/payments -H 'Authorization: Bearer secret-beta')" = 200/401
  { api_key_line alpha secret-alpha; api_key_line beta secret-beta; } > "$keys.new"
  mv "$keys.new" "$keys"
  in_ns chown root:paymentd /etc/paymentd/api-keys
  check "systemctl reload paymentd" quiet in_ns systemctl reload paymentd
  check "after the reload beta is let in (200)" \
    wait_for 10 test "$(in_http GET /v1/payments -H 'Authorization: Bearer secret-beta')" = 200
  echo "alpha not-a-digest *" > "$keys"
  check "systemctl reload paymentd with a bad keys file" quiet in_ns systemctl reload paymentd
  check "the journal has the refusal in one line" wait_for 10 \
    sh -c "nsenter -t $ns_init -a journalctl -u paymentd -o cat --no-pager | grep -q 'api keys not reloaded: /etc/paymentd/api-keys:1'"
  check "after the bad file alpha and beta still work (the previous keys stay)" test \
    "$(in_http GET /v1/payments -H 'Authorization: Bearer secret-alpha')/$(in_http GET /v1/payments -H 'Authorization: Bearer secret-beta')" = 200/200
  check "the reloads kept the main PID ($pid) and the service active" \
    test "$(unit_prop paymentd MainPID)/$(unit_prop paymentd ActiveState)" = "$pid/active"
  rm -f "$ns_root/etc/systemd/system/paymentd.service.d/test-keys.conf"
  in_ns systemctl daemon-reload

  # --- restart on failure, watchdog --------------------------------------
  drop_in paymentd.service $'[Service]\nWatchdogSec=2s\nRestartSec=1s' test-watchdog
  check "systemctl restart paymentd with WatchdogSec=2s" quiet in_ns systemctl restart paymentd
  local restarts
  restarts=$(unit_prop paymentd NRestarts)
  pid=$(unit_prop paymentd MainPID)
  sleep 6
  check "with WatchdogSec=2s the pings keep it running 6 s (PID $pid, restarts $restarts)" \
    test "$(unit_prop paymentd MainPID)/$(unit_prop paymentd NRestarts)" = "$pid/$restarts"
  in_ns kill -KILL "$pid"
  check "kill -9: Restart=on-failure starts it again" wait_for 20 \
    sh -c "[ \"\$(nsenter -t $ns_init -a systemctl show -P NRestarts paymentd)\" -gt $restarts ] && \
           nsenter -t $ns_init -a systemctl is-active -q paymentd"
  check "and it serves again: GET /healthz 200" wait_for 10 test "$(in_http GET /healthz)" = 200
  restarts=$(unit_prop paymentd NRestarts)
  pid=$(unit_prop paymentd MainPID)
  in_ns kill -STOP "$pid"
  check "a frozen server misses its watchdog and is restarted" wait_for 40 \
    sh -c "[ \"\$(nsenter -t $ns_init -a systemctl show -P NRestarts paymentd)\" -gt $restarts ] && \
           nsenter -t $ns_init -a systemctl is-active -q paymentd"
  check "the journal says why (watchdog timeout)" \
    sh -c "nsenter -t $ns_init -a journalctl -u paymentd --no-pager | grep -qi 'watchdog timeout'"
  rm -f "$ns_root/etc/systemd/system/paymentd.service.d/test-watchdog.conf"
  in_ns systemctl daemon-reload

  # --- stop, score ---------------------------------------------------------
  code=$(in_http GET /v1/payments)
  check "still serving before the stop: 200 (got $code)" test "$code" = 200
  check "systemctl stop paymentd" quiet in_ns systemctl stop paymentd
  check "stopped cleanly: inactive, result success, exit status 0" test \
    "$(unit_prop paymentd ActiveState)/$(unit_prop paymentd Result)/$(unit_prop paymentd ExecMainStatus)" = inactive/success/0
  check "the journal has \"paymentd stopped\"" \
    sh -c "nsenter -t $ns_init -a journalctl -u paymentd -o cat --no-pager | grep -q 'paymentd stopped'"
  local score
  score=$(in_ns systemd-analyze security paymentd.service 2>/dev/null |
    sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
  echo "security: paymentd.service as loaded by systemd: exposure ${score:-unknown}"
  check "systemd-analyze security of the loaded unit: ${score:-unknown} <= 2.0" \
    awk -v s="${score:-99}" 'BEGIN { exit !(s <= 2.0) }'

  # --- the worker ----------------------------------------------------------
  in_ns systemd-run --quiet --unit=paymentd-test-nats \
    nats-server -js -a 127.0.0.1 -p 4222 -sd /var/tmp/paymentd-nats
  check "NATS JetStream inside the container answers" wait_for 20 \
    quiet nsenter -t "$ns_init" -a bash -c 'exec 3<>/dev/tcp/127.0.0.1/4222'
  drop_in paymentd-worker@.service $'[Service]\nEnvironment=PAYMENTD_BROKER=nats://127.0.0.1:4222' test-broker
  check "systemctl start paymentd-worker@1 returns (READY=1)" \
    quiet timeout 90 nsenter -t "$ns_init" -a systemctl start paymentd-worker@1
  check "paymentd-worker@1 is active/running as paymentd" test \
    "$(unit_prop paymentd-worker@1 ActiveState)/$(unit_prop paymentd-worker@1 SubState)/$(unit_prop paymentd-worker@1 User)" = active/running/paymentd
  check "systemctl stop paymentd-worker@1: inactive, result success" sh -c \
    "nsenter -t $ns_init -a systemctl stop paymentd-worker@1 && \
     [ \"\$(nsenter -t $ns_init -a systemctl show -P Result paymentd-worker@1)\" = success ]"
  if [ "$failed" -ne 0 ]; then
    echo "--- journal of the container's paymentd units"
    in_ns journalctl -u paymentd -u 'paymentd-worker@*' -o cat --no-pager 2>/dev/null | tail -n 30
  fi
  under_systemd_cleanup
}
