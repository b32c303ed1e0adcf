-- wrk script: POST /api/payment-orders/ with a unique nonce per request.
--
--   wrk -t2 -c32 -d15s --latency -s scripts/bench/create_order.lua \
--       http://127.0.0.1:PORT/api/payment-orders/ -- <api key> <nonce base>
--
-- Each wrk thread counts up from <nonce base> + thread number * 10^8, so nonces never repeat
-- within a run; give every run against the same database its own base. At the end one line
-- "BENCH key=value …" sums the run up for scripts (latencies in microseconds).

local threads = 0

function setup(thread)
   threads = threads + 1
   thread:set("thread_number", threads)
end

function init(args)
   local key = args[1] or error("usage: -- <api key> <nonce base>")
   nonce = tonumber(args[2] or "0") + thread_number * 100000000
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Authorization"] = "Bearer " .. key
end

function request()
   nonce = nonce + 1
   local body = string.format(
      '{"amount":"1.00","currency":"USDC","blockchain":"base-sepolia","order_info":"{}","nonce":%d}',
      nonce)
   return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
   local errors = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d rps=%.1f non2xx=%d socket_errors=%d " ..
      "p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.0f\n",
      summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
      errors.status, errors.connect + errors.read + errors.write + errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean))
end
