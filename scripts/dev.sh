#!/usr/bin/env bash
# Brings up Coffer for local development: installs the pinned tools if missing, builds, and
# runs `coffer dev` (four anvil chains with their stablecoins, funded payers, a demo merchant, the API
# on 127.0.0.1:8080). Arguments are passed to `coffer dev`, e.g. --port 9090 or --fresh.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/install-tools.sh
exec cargo run --locked --quiet -p coffer -- dev "$@"
