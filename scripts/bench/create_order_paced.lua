-- wrk script: create_order.lua at a steady rate (latency at a given load rather than at
-- saturation).
--
--   wrk -t2 -c32 -d15s --latency -s scripts/bench/create_order_paced.lua \
--       http://127.0.0.1:PORT/api/payment-orders/ -- <api key> <nonce base> <rate per thread>
--
-- Each thread starts requests at <rate per thread> per second on whichever of its connections
-- is free; a request is timed from when it is sent, and a thread that falls behind does not
-- burst to catch up. Pacing reads the monotonic clock through LuaJIT's FFI.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "create_order.lua")

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } coffer_timespec;
int clock_gettime(int clock_id, coffer_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("coffer_timespec")

local function now_ms()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
   return tonumber(timespec.tv_sec) * 1000 + tonumber(timespec.tv_nsec) / 1e6
end

local unpaced_init = init
local interval_ms
local next_slot

function init(args)
   unpaced_init(args)
   local rate = tonumber(args[3] or "") or error("usage: -- <api key> <nonce base> <rate per thread>")
   interval_ms = 1000 / rate
end

function delay()
   local now = now_ms()
   if not next_slot or next_slot < now then
      next_slot = now
   end
   local wait = next_slot - now
   next_slot = next_slot + interval_ms
   return wait
end
