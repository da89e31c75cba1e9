#!/usr/bin/env bash
# Installs what is missing, builds, and runs paymentd on its embedded store
# (./data/payments.db).  Arguments are passed to paymentd, e.g. --listen.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
make -j2 build/paymentd
exec build/paymentd "$@"
