#!/usr/bin/env bash
# Brings up Coffer for local development: installs what running needs if missing (anvil, from
# npm into .tools/), builds with progress shown, and runs `coffer dev` (four anvil chains with
# their stablecoins, funded payers, a demo merchant, the API on 127.0.0.1:8080). Arguments are
# passed to `coffer dev`, e.g. --port 9090, --fresh or --chains base-sepolia,polygon.
# Supported: Linux on x86-64 with Rust 1.95+ and Node.js 20+ (anvil's npm build is linux-amd64).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/install-tools.sh --run
echo "dev.sh: building coffer (the first build takes a few minutes)"
exec cargo run --locked -p coffer -- dev "$@"
