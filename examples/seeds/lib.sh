# Shared by the seed scripts: where the helpers are, and how an answer is shown.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
devkit() { node "$here/devkit.mjs" "$@"; }
note() { printf '%s\n' "$*" >&2; }
# Runs curl with the given arguments, printing {"step", "status", "body"} as one JSON line;
# leaves the body in $body and the HTTP status in $status.
send() {
    local step="$1"
    shift
    local out
    out="$(curl -sS -w '\n%{http_code}' "$@")"
    status="${out##*$'\n'}"
    body="${out%$'\n'*}"
    devkit show "$step" "$status" "$body"
}
