#!/usr/bin/env bash
# Installs the Debian packages paymentd needs to build, run and test, when
# they are missing.  Safe to run again: it installs nothing already there.
set -euo pipefail

packages=(
  gcc make                                    # build
  libmicrohttpd-dev libjansson-dev libsqlite3-dev  # HTTP, JSON, embedded store
  libssl-dev                                  # SHA-256 of API key secrets, webhook HMACs (libcrypto)
  libcurl4-openssl-dev ca-certificates        # webhook deliveries (libcurl), HTTPS verified
  python3 python3-yaml                        # schema generator and API tests (/usr/bin/python3)
  libmongoc-dev pkg-config                    # MongoDB store (libmongoc, found by pkg-config)
  libnats-dev nats-server                     # broker: NATS JetStream client, and a server for its tests
  python3-mockupdb python3-mongomock          # MongoDB test double (tests/mongo/double.py)
  clang libclang-rt-14-dev                    # libFuzzer harnesses (fuzz/)
  curl                                        # the README's examples
  libpq-dev postgresql-15                     # PostgreSQL store (libpq), and a server for its tests
  chromium chromium-driver python3-selenium   # the console's browser tests (tests/browser/)
  libsystemd-dev                              # readiness and watchdog notifications (sd_notify)
  debhelper dpkg-dev fakeroot                 # the Debian package (dpkg-buildpackage, debian/)
  systemd adduser debconf man-db              # its tests: systemd-analyze, the user, purge, man -w
  systemd-container                           # ...and systemd-nspawn, to run the units under systemd
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# The tests start PostgreSQL servers of their own (tests/pg/pg.sh); the
# package must not leave Debian's default cluster created and running.
no_default_cluster() {
  command -v pg_lsclusters >/dev/null 2>&1 || return 0
  pg_lsclusters -h 2>/dev/null | while read -r ver name _port status _rest; do
    case "$status" in online*) $sudo pg_ctlcluster "$ver" "$name" stop || true ;; esac
  done
}

if [ ${#missing[@]} -eq 0 ]; then no_default_cluster; exit 0; fi

echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
  $sudo mkdir -p /etc/postgresql-common
  echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.conf >/dev/null
fi
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold "${missing[@]}"
no_default_cluster
