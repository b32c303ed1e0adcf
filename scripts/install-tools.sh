#!/usr/bin/env bash
# Install Coffer's pinned third-party developer tools into <repo>/.tools/.
#
# Idempotent: each toolset records a stamp of what it installed and is skipped
# when the stamp still matches the pinned versions. Safe to run from any
# directory and from CI.
#
# Toolsets:
#   npm    - tools/package.json + tools/package-lock.json (anvil, solc-js, x402 clients)
#   python - tools/requirements.txt (the PyPI x402 client, schemathesis) in a venv at .tools/python
#   chromium - Debian's chromium package (/usr/bin/chromium) for the checkout-page browser
#            test, installed with apt-get when missing (needs root, as in CI)
#   nextest - cargo-nextest, the test runner, at tools/nextest-version: the machine's when it
#            is that version, else built with `cargo install` into .tools/cargo
#
# `install-tools.sh --run` installs only what running Coffer locally needs (the npm toolset:
# anvil, and viem for examples/seeds); `scripts/dev.sh` uses it. Without it, everything the
# tests need is installed too.
#
# To add a toolset, write an install_<name> function and call it from main.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
TOOLS_DIR="${REPO_ROOT}/.tools"
TOOLS_BIN="${TOOLS_DIR}/bin"
PINS_DIR="${REPO_ROOT}/tools"

log() { printf 'install-tools: %s\n' "$*"; }
die() { printf 'install-tools: error: %s\n' "$*" >&2; exit 1; }

need() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' is required but not found on PATH"
}

# Stable digest of the given files (order matters).
digest() {
    cat "$@" | sha256sum | cut -d' ' -f1
}

# Create/refresh the symlink .tools/bin/<name> -> <target> (relative link).
link_bin() {
    local name="$1" target="$2"
    [[ -f "${TOOLS_DIR}/${target}" ]] || die "expected binary missing: .tools/${target}"
    chmod +x "${TOOLS_DIR}/${target}"
    mkdir -p "${TOOLS_BIN}"
    # Left alone when already right: a running test may be starting the tool through it.
    if [[ "$(readlink "${TOOLS_BIN}/${name}" 2>/dev/null)" != "../${target}" ]]; then
        ln -sfn "../${target}" "${TOOLS_BIN}/${name}"
    fi
}

# --- npm toolset -------------------------------------------------------------
# Pinned in tools/package.json (exact versions) and tools/package-lock.json.
ANVIL_REL="node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
SOLC_REL="node_modules/solc/package.json"

install_npm_tools() {
    need node
    need npm
    local stamp="${TOOLS_DIR}/.npm-tools.stamp"
    local want
    want="$(digest "${PINS_DIR}/package.json" "${PINS_DIR}/package-lock.json")"

    if [[ -f "${stamp}" && "$(cat "${stamp}")" == "${want}" \
        && -f "${TOOLS_DIR}/${ANVIL_REL}" && -f "${TOOLS_DIR}/${SOLC_REL}" ]]; then
        log "npm tools: up to date (tools/package-lock.json unchanged)"
    else
        log "npm tools: installing from tools/package-lock.json"
        rm -f "${stamp}"
        cp "${PINS_DIR}/package.json" "${PINS_DIR}/package-lock.json" "${TOOLS_DIR}/"
        (cd "${TOOLS_DIR}" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
        printf '%s\n' "${want}" >"${stamp}"
    fi

    # anvil: prebuilt binary shipped inside the npm package.
    link_bin anvil "${ANVIL_REL}"
    log "anvil: linked .tools/bin/anvil"

    # solc-js: used by contracts/build.mjs via .tools/node_modules/solc.
    local solc_version
    solc_version="$(node -p 'require(process.argv[1]).version' "${TOOLS_DIR}/${SOLC_REL}")"
    log "solc-js: ${solc_version} at .tools/node_modules/solc"
}

# --- Python toolset ----------------------------------------------------------
# The official PyPI x402 client and schemathesis (API fuzzing against /openapi.json), pinned
# in tools/requirements.txt, in a venv at .tools/python.
install_python_tools() {
    need python3
    local venv="${TOOLS_DIR}/python"
    local stamp="${TOOLS_DIR}/.python-tools.stamp"
    local want
    want="$(digest "${PINS_DIR}/requirements.txt")"
    if [[ -f "${stamp}" && "$(cat "${stamp}")" == "${want}" && -x "${venv}/bin/python" ]]; then
        log "python tools: up to date (tools/requirements.txt unchanged)"
        return
    fi
    log "python tools: installing from tools/requirements.txt"
    rm -f "${stamp}"
    [[ -x "${venv}/bin/python" ]] || python3 -m venv "${venv}"
    "${venv}/bin/pip" install --quiet --disable-pip-version-check -r "${PINS_DIR}/requirements.txt"
    printf '%s\n' "${want}" >"${stamp}"
    log "python tools: x402 $("${venv}/bin/pip" show x402 | sed -n 's/^Version: //p'), schemathesis $("${venv}/bin/pip" show schemathesis | sed -n 's/^Version: //p')"
}

# --- Chromium ----------------------------------------------------------------
# The checkout-page browser test drives Debian's Chromium with playwright-core (npm toolset).
install_chromium() {
    if [[ -x /usr/bin/chromium ]]; then
        log "chromium: $(/usr/bin/chromium --version 2>/dev/null | head -n1)"
        return
    fi
    need apt-get
    [[ "$(id -u)" == "0" ]] || die "chromium is missing and installing it needs root: apt-get install chromium"
    log "chromium: installing the Debian package with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-noto-cjk >/dev/null
    log "chromium: $(/usr/bin/chromium --version 2>/dev/null | head -n1)"
}

# The test runner. `scripts/test.sh` runs .tools/bin/cargo-nextest.
install_nextest() {
    local want have
    want="$(tr -d '[:space:]' <"${PINS_DIR}/nextest-version")"
    for candidate in "${TOOLS_DIR}/cargo/bin/cargo-nextest" "$(command -v cargo-nextest || true)"; do
        [[ -n "${candidate}" && -x "${candidate}" ]] || continue
        have="$("${candidate}" nextest --version 2>/dev/null | head -n1 | awk '{print $2}')"
        if [[ "${have}" == "${want}" ]]; then
            mkdir -p "${TOOLS_BIN}"
            ln -sfn "${candidate}" "${TOOLS_BIN}/cargo-nextest"
            log "nextest: cargo-nextest ${have} (${candidate})"
            return
        fi
    done
    need cargo
    log "nextest: building cargo-nextest ${want} with cargo install (a few minutes, once)"
    cargo install --locked --quiet --root "${TOOLS_DIR}/cargo" cargo-nextest --version "=${want}"
    ln -sfn "${TOOLS_DIR}/cargo/bin/cargo-nextest" "${TOOLS_BIN}/cargo-nextest"
    log "nextest: cargo-nextest ${want} (.tools/cargo)"
}

main() {
    case "$(uname -s)-$(uname -m)" in
        Linux-x86_64) ;;
        *) die "unsupported platform $(uname -s)-$(uname -m): pinned tools are linux-amd64 only" ;;
    esac
    mkdir -p "${TOOLS_DIR}" "${TOOLS_BIN}"
    log "installing into ${TOOLS_DIR}"

    install_npm_tools
    if [[ "${1:-}" != "--run" ]]; then
        install_python_tools
        install_chromium
        install_nextest
    fi

    log "done: $("${TOOLS_BIN}/anvil" --version | head -n1)"
}

main "$@"
