#!/usr/bin/env bash
# scripts/bench-setup.sh: prepares the two peers that bench/run.sh measures beside paymentd,
# from ../shared/peers/ (read-only: nothing is written there), into build/peers/:
#
#   scripts/bench-setup.sh node   build/peers/node/: a copy of the Node peer with node_modules
#                                 (npm ci from its package-lock.json)
#   scripts/bench-setup.sh go     build/peers/go/paymentd-go-peer, built by the peer's build.sh
#                                 (which installs golang-go and two Debian Go library packages
#                                 with apt-get when missing) from a copy of its sources
#
# A second run reuses what the first made as long as the peer's sources are the same (a
# sha256 of them is kept beside the result), so it neither reinstalls nor rebuilds.
# PEERS_DIR overrides where the peers come from.  Prints the folder it prepared on stdout,
# progress on stderr; exits non-zero with the reason on stderr when a peer cannot be prepared.
set -euo pipefail
export LC_ALL=C

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS_DIR="${PEERS_DIR:-$ROOT/../shared/peers}"
OUT_DIR="$ROOT/build/peers"
log() { printf 'bench-setup: %s\n' "$*" >&2; }
die() { printf 'bench-setup: error: %s\n' "$*" >&2; exit 1; }

# stamp DIR: a sha256 of every file under DIR but node_modules, in a fixed order.
stamp() {
  (cd "$1" && find . -path ./node_modules -prune -o -type f -print | sort | xargs -d '\n' sha256sum) |
    sha256sum | cut -d' ' -f1
}

# copy_sources SRC DEST: DEST becomes a writable copy of SRC (node_modules and build outputs
# of DEST kept).
copy_sources() {
  mkdir -p "$2"
  find "$2" -mindepth 1 -maxdepth 1 ! -name node_modules ! -name .stamp ! -name .gocache \
    ! -name paymentd-go-peer -exec rm -rf {} +
  cp -R "$1"/. "$2"/
  chmod -R u+w "$2"
}

setup_node() {
  local src="$PEERS_DIR/node" dest="$OUT_DIR/node" want
  [ -f "$src/server.js" ] || die "no Node peer at $src"
  command -v node >/dev/null || die "node is not installed (the Node peer needs Node 20 or newer)"
  command -v npm >/dev/null || die "npm is not installed"
  want="$(stamp "$src")"
  if [ -d "$dest/node_modules" ] && [ "$(cat "$dest/.stamp" 2>/dev/null)" = "$want" ]; then
    log "node peer: $dest is up to date"
  else
    log "node peer: npm ci in $dest (builds better-sqlite3: a minute or two)"
    copy_sources "$src" "$dest"
    rm -f "$dest/.stamp"
    (cd "$dest" && npm ci --no-audit --no-fund --loglevel=error >&2) || die "npm ci failed in $dest"
    printf '%s\n' "$want" >"$dest/.stamp"
  fi
  printf '%s\n' "$dest"
}

setup_go() {
  local src="$PEERS_DIR/go" dest="$OUT_DIR/go" want
  [ -f "$src/build.sh" ] || die "no Go peer at $src"
  want="$(stamp "$src")"
  if [ -x "$dest/paymentd-go-peer" ] && [ "$(cat "$dest/.stamp" 2>/dev/null)" = "$want" ]; then
    log "go peer: $dest/paymentd-go-peer is up to date"
  else
    log "go peer: building $dest/paymentd-go-peer (its build.sh)"
    copy_sources "$src" "$dest/src"
    rm -f "$dest/.stamp"
    OUT="$dest" sh "$dest/src/build.sh" >&2 || die "the Go peer's build.sh failed"
    [ -x "$dest/paymentd-go-peer" ] || die "the Go peer's build.sh made no $dest/paymentd-go-peer"
    printf '%s\n' "$want" >"$dest/.stamp"
  fi
  printf '%s\n' "$dest"
}

case "${1:-}" in
  node) setup_node ;;
  go) setup_go ;;
  *) echo "usage: scripts/bench-setup.sh node|go" >&2; exit 2 ;;
esac
