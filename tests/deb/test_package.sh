#!/usr/bin/env bash
# The Debian package of paymentd, built and installed for real.
#
# Builds the package with dpkg-buildpackage from a copy of the tree (the
# committed and uncommitted files git knows, in a temporary folder: the tree
# gets no build artefact), installs it with dpkg -i, then checks, one named
# check per line (ok: ... / FAIL: ...), closing with "N passed, M failed":
#   - every path the manual's FILES section names, with its owner and mode;
#     the manual page where man finds it; /etc/default/paymentd a conffile;
#   - /usr/sbin/paymentd --version's first line, and the changelog's version
#     against VERSION;
#   - the system user paymentd (home /var/lib/paymentd, shell nologin);
#   - systemd-analyze verify and security --offline=yes (exposure at most
#     2.0) on both installed units, the scores printed;
#   - the installed server started as its unit starts it (the user paymentd,
#     the unit's ExecStart and WorkingDirectory, /etc/default/paymentd's
#     environment and nothing else, a NOTIFY_SOCKET): READY=1 arrives,
#     /healthz answers, the store is written in /var/lib/paymentd, SIGTERM
#     stops it with exit 0 after STOPPING=1;
#   - the installed units run by systemd itself, booted in a container on
#     this machine's root (tests/deb/under_systemd.sh: start, serve, write,
#     deliver a webhook in the sandbox, reload keys, restart on kill -9 and
#     on a missed watchdog, stop, the worker);
#   - dpkg -r keeps /etc and /var/lib/paymentd; dpkg --purge keeps
#     /var/lib/paymentd by default and removes it when paymentd/purge_data
#     is preseeded true.
# It prints the .deb's size in bytes and its installed size.
#
# Must run as root (dpkg -i, adduser; CI runs as root) on a machine without
# the package paymentd installed.  Whatever happens (a failed check, an
# interrupt), it leaves the machine as it found it: the package purged, and
# the user paymentd, /var/lib/paymentd and /etc/paymentd removed when they
# were not there before it ran (the package itself keeps the user on purge).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
export DEBIAN_FRONTEND=noninteractive

passed=0
failed=0
ok() { echo "ok: $1"; passed=$((passed + 1)); }
fail() { echo "FAIL: $1"; failed=$((failed + 1)); }
# check NAME CMD...: one check, passed when CMD succeeds.
check() {
  local name=$1; shift
  if "$@"; then ok "$name"; else fail "$name"; fi
}
# quiet CMD...: CMD with its output dropped (for check).
quiet() { "$@" >/dev/null 2>&1; }
finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

# Whether dpkg knows paymentd at all (installed, or its configuration kept).
known() {
  dpkg-query -W -f='${Status}' paymentd 2>/dev/null | grep -qv 'not-installed'
}
not_installed() { ! known; }

if [ "$(id -u)" -ne 0 ]; then
  fail "runs as root (dpkg -i needs it)"; finish; exit 1
fi
if known; then
  fail "paymentd is not installed before the test (it installs and purges it)"; finish; exit 1
fi

# What was there before, so that cleanup puts it back.
user_before=no; getent passwd paymentd >/dev/null && user_before=yes
group_before=no; getent group paymentd >/dev/null && group_before=yes
data_before=no; [ -e /var/lib/paymentd ] && data_before=yes
etc_before=no; [ -e /etc/paymentd ] && etc_before=yes
# A machine that has them already is not one this test may install over
# and purge: the purge would take its data.
if [ "$user_before$data_before$etc_before" != nonono ]; then
  fail "no user paymentd, /var/lib/paymentd or /etc/paymentd before the test (found: user $user_before, data $data_before, /etc/paymentd $etc_before)"
  finish; exit 1
fi

# shellcheck source=tests/deb/under_systemd.sh
. "$repo/tests/deb/under_systemd.sh"

work=$(mktemp -d /tmp/paymentd-deb-XXXXXX)
server_pid=""
listener_pid=""
cleaned=no

# Stops what the test started and removes what it installed; safe to run
# twice (at the end, then on exit).
# Runs without errexit: every step is tried, whatever failed before it.
cleanup() {
  set +e
  [ "$cleaned" = yes ] && return 0
  cleaned=yes
  if [ -n "$server_pid" ]; then kill -KILL "$server_pid"; wait "$server_pid"; fi 2>/dev/null
  if [ -n "$listener_pid" ]; then kill "$listener_pid"; wait "$listener_pid"; fi 2>/dev/null
  server_pid="" listener_pid=""
  under_systemd_cleanup
  if [ "${policy_rc:-no}" = yes ]; then rm -f /usr/sbin/policy-rc.d; policy_rc=no; fi
  if known; then
    quiet dpkg --purge paymentd
  fi
  if [ "$data_before" = no ]; then rm -rf /var/lib/paymentd; fi
  if [ "$etc_before" = no ]; then rm -rf /etc/paymentd; fi
  if [ "$user_before" = no ] && getent passwd paymentd >/dev/null; then
    deluser --system --quiet paymentd >/dev/null 2>&1 || userdel paymentd 2>/dev/null || true
  fi
  if [ "$group_before" = no ] && getent group paymentd >/dev/null; then
    delgroup --system --quiet paymentd >/dev/null 2>&1 || groupdel paymentd 2>/dev/null || true
  fi
  rm -rf "$work"
  set -e
  return 0
}
trap cleanup EXIT
# Where systemd is PID 1 the package would start paymentd.service on
# install (on 127.0.0.1:8080, holding the store): a policy-rc.d that denies
# every start keeps the checks' own servers alone.
policy_rc=no
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\n# paymentd package test: no service starts on install\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 0755 /usr/sbin/policy-rc.d
  policy_rc=yes
fi
trap 'exit 130' INT TERM

# --- build -------------------------------------------------------------
status_before=$(git status --porcelain)
src="$work/paymentd"
mkdir -p "$src"
git ls-files -z --cached --others --exclude-standard | tar -cf - --null -T - | tar -xf - -C "$src"
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
echo "building the package in $src"
if ! (cd "$src" && PAYMENTD_COMMIT="$commit" DEB_BUILD_OPTIONS="parallel=2" \
      dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1; then
  tail -n 40 "$work/build.log"
  fail "dpkg-buildpackage -us -uc -b builds the package"; finish; exit 1
fi
ok "dpkg-buildpackage -us -uc -b builds the package"
deb=$(ls "$work"/paymentd_*.deb)
check "the repository's files are as they were before the build (git status)" \
  test "$(git status --porcelain)" = "$status_before"
echo "package: $(basename "$deb"): $(stat -c %s "$deb") bytes, installed size $(dpkg-deb -f "$deb" Installed-Size) KiB"

# make install and uninstall, staged (the package build left build/paymentd).
stage="$work/stage"
if quiet make -C "$src" install PREFIX=/opt/pd DESTDIR="$stage" PAYMENTD_COMMIT="$commit"; then
  got="$(stat -c %a "$stage/opt/pd/sbin/paymentd" 2>/dev/null) $(stat -c %a "$stage/opt/pd/share/man/man8/paymentd.8" 2>/dev/null)"
  check "make install PREFIX=/opt/pd DESTDIR=...: sbin/paymentd 755, share/man/man8/paymentd.8 644 (got $got)" \
    test "$got" = "755 644"
else
  fail "make install PREFIX=/opt/pd DESTDIR=... runs"
fi
quiet make -C "$src" uninstall PREFIX=/opt/pd DESTDIR="$stage" || true
check "make uninstall PREFIX=/opt/pd DESTDIR=... removes both files" \
  test -z "$(find "$stage" -type f)"

# --- install -----------------------------------------------------------
if ! dpkg -i "$deb" >"$work/install.log" 2>&1; then
  cat "$work/install.log"
  fail "dpkg -i installs the package"; finish; exit 1
fi
ok "dpkg -i installs the package"

# The paths of the manual's FILES section (.TP then .B PATH), with the
# owner and mode each must have.
declare -A want=(
  [/usr/sbin/paymentd]="root:root 755"
  [/usr/share/man/man8/paymentd.8.gz]="root:root 644"
  [/usr/share/doc/paymentd]="root:root 755"
  [/etc/default/paymentd]="root:root 644"
  [/etc/paymentd]="root:paymentd 750"
  [/var/lib/paymentd]="paymentd:paymentd 750"
  [/lib/systemd/system/paymentd.service]="root:root 644"
  [/lib/systemd/system/paymentd-worker@.service]="root:root 644"
)
manual_files=$(sed -n '/^\.SH FILES/,/^\.SH /p' doc/paymentd.8 | grep -A1 '^\.TP' \
               | sed -n 's/^\.B //p' | sed 's/\\-/-/g' | sort)
check "the manual's FILES section names exactly the checked paths" \
  test "$manual_files" = "$(printf '%s\n' "${!want[@]}" | sort)"
for path in $manual_files; do
  got=$(stat -c '%U:%G %a' "$path" 2>/dev/null || echo missing)
  check "$path is there, ${want[$path]:-not expected} (got $got)" test "$got" = "${want[$path]:-}"
done
check "/etc/default/paymentd is a conffile" \
  bash -c "dpkg-query -W -f='\${Conffiles}' paymentd | grep -q ' /etc/default/paymentd '"
check "/etc/default/paymentd sets PAYMENTD_STORE=sqlite:/var/lib/paymentd/payments.db" \
  grep -qx 'PAYMENTD_STORE=sqlite:/var/lib/paymentd/payments.db' /etc/default/paymentd
check "/etc/default/paymentd sets PAYMENTD_LISTEN=127.0.0.1:8080" \
  grep -qx 'PAYMENTD_LISTEN=127.0.0.1:8080' /etc/default/paymentd
check "man -w paymentd finds /usr/share/man/man8/paymentd.8.gz" \
  test "$(man -w paymentd 2>/dev/null)" = /usr/share/man/man8/paymentd.8.gz
check "the manual page renders without warnings" \
  test -z "$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l /usr/share/man/man8/paymentd.8.gz 2>&1 >/dev/null)"

# --- version -----------------------------------------------------------
version=$(cat VERSION 2>/dev/null || echo "(no VERSION file)")
version_out=$(/usr/sbin/paymentd --version 2>&1 || true)
printf '%s\n' "$version_out" | sed 's/^/version: /'
first=$(printf '%s\n' "$version_out" | head -n 1)
check "/usr/sbin/paymentd --version's first line is \"paymentd $version\" (got \"$first\")" \
  test "$first" = "paymentd $version"
changelog_version=$(dpkg-parsechangelog -l debian/changelog -S Version)
check "debian/changelog's version $changelog_version is VERSION $version with a revision" \
  test "${changelog_version%-*}" = "$version"
check "the installed package is version $changelog_version" \
  test "$(dpkg-query -W -f='${Version}' paymentd)" = "$changelog_version"

# --- user --------------------------------------------------------------
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd paymentd || echo 'x:x:99999:x:x:x:x')
check "system user paymentd: uid $uid below 1000, home $home, shell $shell" \
  test "$uid" -lt 1000 -a "$home" = /var/lib/paymentd -a "$shell" = /usr/sbin/nologin
check "system group paymentd" quiet getent group paymentd
check "paymentd.service is enabled (multi-user.target wants it)" \
  test -L /etc/systemd/system/multi-user.target.wants/paymentd.service
check "no paymentd-worker@ instance is enabled" \
  test -z "$(find /etc/systemd/system -name 'paymentd-worker@*' 2>/dev/null)"

# --- units -------------------------------------------------------------
for unit in paymentd.service paymentd-worker@.service; do
  path=/lib/systemd/system/$unit
  if out=$(systemd-analyze verify "$path" 2>&1) && [ -z "$out" ]; then
    ok "systemd-analyze verify $unit"
  else
    printf '%s\n' "$out"; fail "systemd-analyze verify $unit"
  fi
  sec=$(systemd-analyze security --offline=yes --threshold=20 "$path" 2>&1) && rc=0 || rc=$?
  score=$(printf '%s\n' "$sec" | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
  echo "security: $unit exposure ${score:-unknown}"
  check "systemd-analyze security --offline=yes --threshold=20 $unit: exposure ${score:-unknown} <= 2.0" \
    test "$rc" -eq 0 -a -n "$score"
done

# --- the server as its unit starts it ----------------------------------
unit=/lib/systemd/system/paymentd.service
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
workdir=$(sed -n 's/^WorkingDirectory=//p' "$unit")
umask_unit=$(sed -n 's/^UMask=//p' "$unit")
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The environment file's assignments (KEY=VALUE lines), then PAYMENTD_LISTEN
# on a free port, as a drop-in would set it.
mapfile -t file_env < <(grep -E '^[A-Z_][A-Z0-9_]*=' /etc/default/paymentd)
sockdir="$work/notify"
mkdir -m 0755 "$sockdir"
chmod 0755 "$work"
/usr/bin/python3 - "$sockdir/notify.sock" "$sockdir/messages" <<'EOF' &
# A NOTIFY_SOCKET: writes each datagram's lines to the messages file.
import os, socket, sys
path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o777)
s.settimeout(60)
with open(out, "a") as f:
    while True:
        try:
            data = s.recv(4096)
        except socket.timeout:
            break
        f.write(data.decode(errors="replace") + "\n")
        f.flush()
EOF
listener_pid=$!
for _ in $(seq 50); do [ -S "$sockdir/notify.sock" ] && break; sleep 0.1; done
: > "$sockdir/messages"
(
  cd "$workdir"
  umask "${umask_unit:-0022}"
  # shellcheck disable=SC2086 # ExecStart is words, as systemd splits them
  exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "${file_env[@]}" \
    PAYMENTD_LISTEN="127.0.0.1:$port" NOTIFY_SOCKET="$sockdir/notify.sock" \
    setpriv --reuid=paymentd --regid=paymentd --init-groups --no-new-privs -- $exec_start
) >"$work/server.log" 2>&1 &
server_pid=$!
echo "started $exec_start as paymentd in $workdir on port $port (pid $server_pid)"

ready=no
for _ in $(seq 100); do
  grep -qx 'READY=1' "$sockdir/messages" && { ready=yes; break; }
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
check "the server tells NOTIFY_SOCKET READY=1" test "$ready" = yes
healthz=000
for _ in $(seq 100); do
  healthz=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz" || true)
  [ "$healthz" = 200 ] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
check "GET /healthz answers 200 (got $healthz)" test "$healthz" = 200
check "the store /var/lib/paymentd/payments.db is written, owned by paymentd" \
  test "$(stat -c %U /var/lib/paymentd/payments.db 2>/dev/null)" = paymentd
kill -TERM "$server_pid" 2>/dev/null || true
for _ in $(seq 300); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$server_pid" 2>/dev/null || true # still running after 30 s: a failure below
rc=0; wait "$server_pid" || rc=$?
server_pid=""
check "SIGTERM stops the server with exit 0 (got $rc)" test "$rc" -eq 0
check "the server tells NOTIFY_SOCKET STOPPING=1" grep -qx 'STOPPING=1' "$sockdir/messages"
if [ "$failed" -ne 0 ]; then
  echo "--- server log"; tail -n 20 "$work/server.log"
  echo "--- notifications"; cat "$sockdir/messages"
fi
kill "$listener_pid" 2>/dev/null || true
wait "$listener_pid" 2>/dev/null || true
listener_pid=""

# --- under systemd -----------------------------------------------------
under_systemd_checks

# --- remove and purge --------------------------------------------------
check "dpkg -r paymentd removes the package" quiet dpkg -r paymentd
check "after dpkg -r: /usr/sbin/paymentd is gone" test ! -e /usr/sbin/paymentd
check "after dpkg -r: /etc/default/paymentd, /etc/paymentd and /var/lib/paymentd/payments.db stay" \
  test -f /etc/default/paymentd -a -d /etc/paymentd -a -f /var/lib/paymentd/payments.db
check "dpkg --purge paymentd purges the package" quiet dpkg --purge paymentd
check "after dpkg --purge: /var/lib/paymentd/payments.db stays (paymentd/purge_data is false)" \
  test -f /var/lib/paymentd/payments.db
check "after dpkg --purge: /etc/default/paymentd and /etc/paymentd are gone" \
  test ! -e /etc/default/paymentd -a ! -e /etc/paymentd
check "after dpkg --purge: the user paymentd stays (it owns the kept data)" quiet getent passwd paymentd

check "dpkg -i again installs over the kept data" quiet dpkg -i "$deb"
check "the kept store is still there and paymentd's" \
  test "$(stat -c %U /var/lib/paymentd/payments.db 2>/dev/null)" = paymentd
echo "paymentd paymentd/purge_data boolean true" | debconf-set-selections
check "with paymentd/purge_data preseeded true, dpkg --purge purges" \
  quiet dpkg --purge paymentd
check "after that purge: /var/lib/paymentd is gone" test ! -e /var/lib/paymentd
check "after that purge: the package is not installed" not_installed

# --- leave the machine as found ----------------------------------------
cleanup
found=yes
known && found=no
[ "$user_before" = no ] && getent passwd paymentd >/dev/null && found=no
[ "$data_before" = no ] && [ -e /var/lib/paymentd ] && found=no
[ "$etc_before" = no ] && [ -e /etc/paymentd ] && found=no
check "the machine is left as found (package purged, user and folders as before)" test "$found" = yes
finish
