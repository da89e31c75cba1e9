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
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
