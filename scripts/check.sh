#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (make test).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
make -j2 tests
exec scripts/test.sh
