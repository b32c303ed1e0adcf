#!/usr/bin/env bash
# Benchmarks Coffer's payment-order targets on this machine and prints a summary table:
#
#   1. order creation over HTTP (POST /api/payment-orders/): wrk against `coffer serve`, on
#      SQLite and on PostgreSQL (each a fresh database with a merchant, key and deposit wallet
#      made with the CLI, and an anvil chain behind base-sepolia): the throughput at saturation
#      (every connection sends again as soon as it is answered), then the latency at the goal
#      rate (1,000/s on SQLite, 2,000/s on PostgreSQL, paced by the wrk script);
#   2. the chain watcher's time per block with 10 and with 100,000 open orders
#      (`coffer-bench watcher`), on both databases;
#   3. the time from the block that completes confirmations to the payment_order.confirmed
#      webhook leaving (`coffer-bench webhook-latency`), on both databases;
#   4. the x402 paywall (`coffer-bench paywall`): a paid request's latency through the paywall
#      against calling the upstream directly (p50/p99), and unpaid 402 answers per second;
#   5. x402 settlements per second and gas per settled payment, with Multicall3 batching and
#      with one transaction per payment (`coffer-bench settle`), on both databases.
#
# Installs the pinned tools and wrk when missing and builds in release mode. All traffic stays
# on 127.0.0.1; everything started here is stopped, and every database made here removed, on
# exit. Tunables (environment):
#   BENCH_DURATION=15        seconds of each measured wrk run (after a 3 s warm-up)
#   BENCH_THREADS=2          wrk threads
#   BENCH_CONNECTIONS=32     wrk connections
#   BENCH_WATCHER_ORDERS=100000  open orders in the large watcher run
#   BENCH_BACKENDS="sqlite postgres"
#   BENCH_PARTS="http watcher webhook paywall settle"   which measurements to run
#   BENCH_SETTLEMENTS=2000   payments settled in each settle run
#   BENCH_SKIP_BUILD=1       use the release binaries already in target/release
#   COFFER_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres  (needs CREATEDB)
set -euo pipefail
shopt -s inherit_errexit

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

duration="${BENCH_DURATION:-15}"
threads="${BENCH_THREADS:-2}"
connections="${BENCH_CONNECTIONS:-32}"
large="${BENCH_WATCHER_ORDERS:-100000}"
backends="${BENCH_BACKENDS:-sqlite postgres}"
parts="${BENCH_PARTS:-http watcher webhook paywall settle}"
settlements="${BENCH_SETTLEMENTS:-2000}"
export COFFER_BENCH_POSTGRES_URL="${COFFER_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
pg_admin="$COFFER_BENCH_POSTGRES_URL"

# Other work on the machine skews the numbers: each step shows the load average.
step() { printf '\n==> %s (load average %s)\n' "$*" "$(cut -d' ' -f1-3 /proc/loadavg)"; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/coffer-bench.XXXXXX")"
pids=()
databases=()

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    for name in "${databases[@]}"; do
        [[ -n "$name" ]] || continue
        psql "$pg_admin" -qc "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" >/dev/null 2>&1 ||
            printf 'bench: could not drop database %s\n' "$name" >&2
    done
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A port nothing listens on (checked just before use).
free_port() {
    local port
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free port found"
}

# wait_for <what> <pid> <command…>: retries the command for up to 30 s while pid lives.
wait_for() {
    local what="$1" pid="$2"
    shift 2
    for _ in $(seq 1 300); do
        "$@" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || die "$what exited during startup"
        sleep 0.1
    done
    die "$what did not come up within 30 s"
}

# field <line> <key>: the value of key=value in a line.
field() { sed -n "s/.*[[:space:]]$2=\([^[:space:]]*\).*/\1/p" <<<" $1"; }

# JSON string value of a key in the CLI's pretty output.
json_string() { sed -n "s/.*\"$2\": *\"\([^\"]*\)\".*/\1/p" <<<"$1" | head -n 1; }

step "tools (anvil, wrk)"
scripts/install-tools.sh
if ! command -v wrk >/dev/null 2>&1; then
    sudo=""
    [[ "$(id -u)" == 0 ]] || sudo="sudo"
    $sudo apt-get update
    $sudo apt-get install -y wrk
fi
wrk --version 2>&1 | head -n 1 || true

if [[ " $backends " == *" postgres "* ]]; then
    step "PostgreSQL"
    if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && command -v pg_ctlcluster >/dev/null 2>&1; then
        echo "starting the local PostgreSQL cluster"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
        for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    fi
    psql "$pg_admin" -Atqc "SELECT 1" >/dev/null || die "PostgreSQL is not reachable at $pg_admin"
fi

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    step "build (release)"
    cargo build --release -p coffer -p coffer-bench
fi
coffer="$root/target/release/coffer"
bench="$root/target/release/coffer-bench"
lua="$root/scripts/bench/create_order.lua"
paced_lua="$root/scripts/bench/create_order_paced.lua"
xpub="$("$bench" xpub)"

step "anvil (chain RPC for the server's readiness and watcher)"
anvil_port="$(free_port)"
"$root/.tools/bin/anvil" --host 127.0.0.1 --port "$anvil_port" --chain-id 84532 --quiet >/dev/null &
pids+=("$!")
anvil_pid="$!"
wait_for anvil "$anvil_pid" curl -sf -X POST -H 'Content-Type: application/json' \
    --data '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}' "http://127.0.0.1:$anvil_port"
echo "anvil on 127.0.0.1:$anvil_port"

declare -A http_rps http_p50 http_p99 http_non2xx http_stored http_requests
declare -A paced_rps paced_p50 paced_p99 paced_errors

# goal_rate <backend>: the order-creation rate the issue asks of the backend.
goal_rate() { [[ "$1" == postgres ]] && echo 2000 || echo 1000; }
declare -A watch_median watch_p99 watch_load webhook_median webhook_p99 webhook_wait

# stored_orders <port> <key>: how many orders the merchant has.
stored_orders() {
    curl -sf -H "Authorization: Bearer $2" "http://127.0.0.1:$1/api/payment-orders/?page_size=1" |
        sed -n 's/.*"count":\([0-9]*\).*/\1/p'
}

# http_bench <backend>: fresh database, merchant, key and wallet via the CLI; coffer serve;
# wrk warm-up and measured run.
http_bench() {
    local backend="$1" url name port server_pid
    case "$backend" in
        sqlite) url="sqlite://$work/http-$backend.db" ;;
        postgres)
            name="coffer_bench_http_$$"
            psql "$pg_admin" -qc "CREATE DATABASE \"$name\"" >/dev/null
            databases+=("$name")
            url="${pg_admin%/*}/$name"
            ;;
        *) die "unknown backend $backend" ;;
    esac
    port="$(free_port)"
    export COFFER__DATABASE__URL="$url"
    export COFFER__SERVER__LISTEN="127.0.0.1:$port"
    export COFFER__LOG__LEVEL=warn
    export COFFER__CHAINS__BASE_SEPOLIA__RPC_URLS="[\"http://127.0.0.1:$anvil_port\"]"
    # The merchant's webhook secret is stored encrypted: a throwaway master key.
    COFFER_MASTER_KEY="$("$coffer" secrets generate-key)"
    export COFFER_MASTER_KEY
    # Run from the scratch directory so that no ./coffer.toml is picked up.
    local merchant key created
    created="$(cd "$work" && "$coffer" merchant create --name "Bench $backend" --json)"
    merchant="$(json_string "$created" id)"
    created="$(cd "$work" && "$coffer" key create --merchant "$merchant" --label bench --json)"
    key="$(json_string "$created" key)"
    [[ -n "$merchant" && -n "$key" ]] || die "could not create a merchant and key"
    (cd "$work" && "$coffer" wallet set --merchant "$merchant" --xpub "$xpub")

    (cd "$work" && exec "$coffer" serve) &
    server_pid="$!"
    pids+=("$server_pid")
    wait_for "coffer serve" "$server_pid" curl -sf "http://127.0.0.1:$port/healthz"
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || echo "warning: /readyz is not ready"

    local endpoint="http://127.0.0.1:$port/api/payment-orders/"
    echo "warm-up: 3 s"
    wrk -t"$threads" -c"$connections" -d3s -s "$lua" "$endpoint" -- "$key" 0 >/dev/null
    local before
    before="$(stored_orders "$port" "$key")"
    echo "measured: wrk -t$threads -c$connections -d${duration}s --latency"
    local out="$work/wrk-$backend.txt"
    wrk -t"$threads" -c"$connections" -d"${duration}s" --latency -s "$lua" "$endpoint" \
        -- "$key" 1000000000 | tee "$out"
    local line
    line="$(grep '^BENCH ' "$out")"
    http_rps[$backend]="$(field "$line" rps)"
    http_p50[$backend]="$(awk -v us="$(field "$line" p50_us)" 'BEGIN { printf "%.2f", us / 1000 }')"
    http_p99[$backend]="$(awk -v us="$(field "$line" p99_us)" 'BEGIN { printf "%.2f", us / 1000 }')"
    http_non2xx[$backend]="$(( $(field "$line" non2xx) + $(field "$line" socket_errors) ))"
    # Requests still in flight when wrk stopped finish on the server too.
    sleep 1
    local after
    after="$(stored_orders "$port" "$key")"
    http_stored[$backend]="$((after - before))"
    http_requests[$backend]="$(field "$line" requests)"

    local goal per_thread
    goal="$(goal_rate "$backend")"
    per_thread="$(awk -v g="$goal" -v t="$threads" 'BEGIN { printf "%.3f", g / t }')"
    # Let the saturated run's writes reach the disk first, so they do not stall this one.
    sync
    sleep 2
    echo "paced at $goal req/s: wrk -t$threads -c$connections -d${duration}s --latency"
    out="$work/wrk-$backend-paced.txt"
    wrk -t"$threads" -c"$connections" -d"${duration}s" --latency -s "$paced_lua" "$endpoint" \
        -- "$key" 2000000000 "$per_thread" | tee "$out"
    line="$(grep '^BENCH ' "$out")"
    paced_rps[$backend]="$(field "$line" rps)"
    paced_p50[$backend]="$(awk -v us="$(field "$line" p50_us)" 'BEGIN { printf "%.2f", us / 1000 }')"
    paced_p99[$backend]="$(awk -v us="$(field "$line" p99_us)" 'BEGIN { printf "%.2f", us / 1000 }')"
    paced_errors[$backend]="$(( $(field "$line" non2xx) + $(field "$line" socket_errors) ))"

    kill -TERM "$server_pid"
    wait "$server_pid" || true
    if [[ "$backend" == postgres ]]; then
        psql "$pg_admin" -qc "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" >/dev/null
        databases=("${databases[@]/$name/}")
    fi
    unset COFFER__DATABASE__URL COFFER__SERVER__LISTEN COFFER__LOG__LEVEL COFFER__CHAINS__BASE_SEPOLIA__RPC_URLS COFFER_MASTER_KEY
}

wants() { [[ " $parts " == *" $1 "* ]]; }

if wants http; then
    for backend in $backends; do
        step "order creation over HTTP: $backend"
        http_bench "$backend"
    done
fi

# run_bench <log name> <args…>: runs coffer-bench, shows its output, returns its SUMMARY line.
run_bench() {
    local log="$work/$1.txt"
    shift
    "$bench" "$@" | tee "$log" >&2
    grep '^SUMMARY ' "$log"
}

if wants watcher; then
    for backend in $backends; do
        for orders in 10 "$large"; do
            step "watcher per block: $backend, $orders open orders"
            line="$(run_bench "watcher-$backend-$orders" watcher --orders "$orders" --backend "$backend")"
            watch_median[$backend-$orders]="$(field "$line" median_ms)"
            watch_p99[$backend-$orders]="$(field "$line" p99_ms)"
            watch_load[$backend-$orders]="$(field "$line" load_ms)"
        done
    done
fi

first_backend="${backends%% *}"
webhook_runs=()
if wants webhook; then
    for backend in $backends; do
        step "webhook latency: $backend, watcher polling every 50 ms (coffer serve's default)"
        line="$(run_bench "webhook-$backend" webhook-latency --backend "$backend" --watcher-poll-ms 50)"
        webhook_median[$backend-50]="$(field "$line" median_ms)"
        webhook_p99[$backend-50]="$(field "$line" p99_ms)"
        webhook_wait[$backend-50]="$(field "$line" wait_median_ms)"
        webhook_runs+=("$backend-50")
    done
    step "webhook latency: $first_backend, watcher polling every 250 ms"
    line="$(run_bench "webhook-$first_backend-250" webhook-latency --backend "$first_backend" \
        --watcher-poll-ms 250 --orders 10)"
    webhook_median[$first_backend-250]="$(field "$line" median_ms)"
    webhook_p99[$first_backend-250]="$(field "$line" p99_ms)"
    webhook_wait[$first_backend-250]="$(field "$line" wait_median_ms)"
    webhook_runs+=("$first_backend-250")
fi

if wants paywall; then
    step "x402 paywall: paid overhead and unpaid 402s per second"
    line="$(run_bench paywall paywall --paid 200 --seconds "$duration" --connections "$connections")"
    paywall_direct_p50="$(field "$line" direct_p50_ms)"
    paywall_direct_p99="$(field "$line" direct_p99_ms)"
    paywall_paid_p50="$(field "$line" paid_p50_ms)"
    paywall_paid_p99="$(field "$line" paid_p99_ms)"
    paywall_rps="$(field "$line" unpaid_rps)"

    # Unpaid 402s from coffer serve itself, loaded by wrk (the in-process client above shares
    # the server's cores and runtime).
    step "x402 paywall: unpaid 402s per second, wrk against coffer serve"
    mkdir -p "$work/paywall"
    paywall_port="$(free_port)"
    cat >"$work/paywall/coffer.toml" <<TOML
[server]
listen = "127.0.0.1:$paywall_port"
[database]
url = "sqlite://$work/paywall/coffer.db"
[log]
level = "warn"
[[paywall.routes]]
path = "/premium/*"
method = "GET"
price = "0.01"
networks = ["base-sepolia"]
assets = ["USDC"]
pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
upstream = "http://127.0.0.1:9"
TOML
    (cd "$work/paywall" && exec "$coffer" serve) &
    paywall_pid="$!"
    pids+=("$paywall_pid")
    wait_for "coffer serve (paywall)" "$paywall_pid" curl -sf "http://127.0.0.1:$paywall_port/healthz"
    wrk -t"$threads" -c"$connections" -d3s "http://127.0.0.1:$paywall_port/premium/data" >/dev/null
    wrk -t"$threads" -c"$connections" -d"${duration}s" --latency "http://127.0.0.1:$paywall_port/premium/data" |
        tee "$work/paywall-wrk.txt"
    paywall_wrk_rps="$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$work/paywall-wrk.txt")"
    paywall_wrk_p99="$(awk '$1 == "99%" { print $2 }' "$work/paywall-wrk.txt")"
    kill -TERM "$paywall_pid"
    wait "$paywall_pid" || true
fi

settle_tables=()
if wants settle; then
    for backend in $backends; do
        step "x402 settlement: $backend, $settlements payments, batched and not"
        "$bench" settle --backend "$backend" --payments "$settlements" | tee "$work/settle-$backend.txt"
        settle_tables+=("$backend")
    done
fi

# verdict <awk condition over a and b> <a> <b>
verdict() { awk -v a="$2" -v b="$3" "BEGIN { exit !($1) }" && echo "yes" || echo "**no**"; }

step "summary"
printf 'Machine: %s cores, %s; wrk -t%s -c%s -d%ss; confirmations = 2; load average at the end %s.\n\n' \
    "$(nproc)" "$(uname -sr)" "$threads" "$connections" "$duration" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '| Target | Database | Measured | Goal | Met |\n'
printf '|---|---|---|---|---|\n'
for backend in $backends; do
    wants http || break
    goal="$(goal_rate "$backend")"
    rps="${http_rps[$backend]}"
    met="$(verdict 'a >= b' "$rps" "$goal")"
    [[ "${http_non2xx[$backend]}" == 0 ]] || met="**no** (${http_non2xx[$backend]} errors)"
    printf '| Order creation (HTTP), saturated | %s | %.0f req/s (p50 %s ms, p99 %s ms at c%s; %s responses, %s orders stored) | ≥ %s req/s | %s |\n' \
        "$backend" "$rps" "${http_p50[$backend]}" "${http_p99[$backend]}" "$connections" \
        "${http_requests[$backend]}" "${http_stored[$backend]}" "$goal" "$met"
    rps="${paced_rps[$backend]}"
    # The paced run must actually hold the rate (within 2%) and keep p99 under 25 ms.
    met="$(verdict 'a >= 0.98 * b' "$rps" "$goal")"
    [[ "$met" == yes ]] && met="$(verdict 'a < b' "${paced_p99[$backend]}" 25)"
    [[ "${paced_errors[$backend]}" == 0 ]] || met="**no** (${paced_errors[$backend]} errors)"
    printf '| Order creation (HTTP), at %s req/s | %s | %.0f req/s held, p50 %s ms, p99 %s ms | p99 < 25 ms | %s |\n' \
        "$goal" "$backend" "$rps" "${paced_p50[$backend]}" "${paced_p99[$backend]}" "$met"
done
for backend in $backends; do
    wants watcher || break
    small="${watch_median[$backend-10]}"
    big="${watch_median[$backend-$large]}"
    ratio="$(awk -v a="$big" -v b="$small" 'BEGIN { printf "%.2f", a / b }')"
    printf '| Watcher time per block | %s | median %s ms (10 orders) vs %s ms (%s orders): %s×; p99 %s vs %s ms; first step incl. load %s vs %s ms | ≤ 2× | %s |\n' \
        "$backend" "$small" "$big" "$large" "$ratio" "${watch_p99[$backend-10]}" \
        "${watch_p99[$backend-$large]}" "${watch_load[$backend-10]}" "${watch_load[$backend-$large]}" \
        "$(verdict 'a <= 2' "$ratio" 0)"
done
for key in "${webhook_runs[@]}"; do
    backend="${key%-*}"
    poll="${key##*-}"
    printf '| Confirming block → webhook | %s | p50 %s ms, p99 %s ms (watcher poll %s ms; median %s ms waiting for the poll) | < 100 ms | %s |\n' \
        "$backend" "${webhook_median[$key]}" "${webhook_p99[$key]}" "$poll" "${webhook_wait[$key]}" \
        "$(verdict 'a < 100' "${webhook_p99[$key]}" 0)"
done
if wants paywall; then
    printf '| Paywall, paid request | sqlite | p50 %s ms, p99 %s ms (upstream directly: p50 %s ms, p99 %s ms) | (documented) | - |\n' \
        "$paywall_paid_p50" "$paywall_paid_p99" "$paywall_direct_p50" "$paywall_direct_p99"
    printf '| Paywall, unpaid 402s (in-process client) | - | %s/s | (see wrk) | - |\n' "$paywall_rps"
    printf '| Paywall, unpaid 402s (wrk -c%s against coffer serve) | - | %s/s, p99 %s | ≥ 20,000/s | %s |\n' \
        "$connections" "$paywall_wrk_rps" "$paywall_wrk_p99" "$(verdict 'a >= 20000' "$paywall_wrk_rps" 0)"
fi
for backend in "${settle_tables[@]}"; do
    printf '\nx402 settlement on %s (goal: ≥ 500 settlements/s batched; gas per payment ≥ 20%% below one transaction each):\n\n' "$backend"
    cat "$work/settle-$backend.txt"
done
