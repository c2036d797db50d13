-- wrk script for tests/benchmark/run.py.
-- BENCH_DELAY_MS > 0: each connection waits that long between requests (a steady,
-- low rate for latency probes). Requests stay static (headers come from -H), so
-- Lua is not called per request. At the end: one line "BENCH_JSON {...}".

local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "") or 0
if delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"mean": %.1f, "p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
