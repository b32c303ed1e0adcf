#!/usr/bin/env bash
# The payment core speaks no HTTP: coffer-gateway may not depend on a web framework directly,
# nor name one in its code. Run by scripts/test.sh; fails with the offending lines.
set -euo pipefail
cd "$(dirname "$0")/.."

forbidden='^(axum|axum-core|http|http-body|hyper|hyper-util|tower|tower-http|utoipa|utoipa-axum) '
direct=$(cargo tree -p coffer-gateway -e normal --depth 1 --prefix none --locked | tail -n +2 | sort -u)
if offending=$(grep -E "$forbidden" <<<"$direct"); then
    echo "coffer-gateway depends on HTTP crates directly:" >&2
    echo "$offending" >&2
    exit 1
fi
# Code only: a file's unit tests (after its `#[cfg(test)]` line, or a whole file under
# `#![cfg(test)]`) may build header maps the way the server hands headers over (axum is a
# dev-dependency).
offending=$(find crates/coffer-gateway/src -name '*.rs' -exec awk '
    /^#!?\[cfg\(test\)\]/ { exit }
    /^[[:space:]]*\/\// { next }
    /(axum|hyper|tower|tower_http|utoipa_axum)::|(^|[^_[:alnum:]])http::/ && !/cfg_attr\(feature = "openapi"/ {
        print FILENAME ":" FNR ": " $0
    }' {} \;)
if [[ -n "$offending" ]]; then
    echo "coffer-gateway names an HTTP crate outside its tests:" >&2
    echo "$offending" >&2
    exit 1
fi
echo "coffer-gateway: no HTTP dependency ($(wc -l <<<"$direct") direct dependencies checked)"
