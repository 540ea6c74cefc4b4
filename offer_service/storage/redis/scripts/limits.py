"""The Lua script of the rate limits shared by every instance."""

from __future__ import annotations

from offer_service.storage.redis.scripts import Script

# KEYS: a rate limit's bucket. ARGV: emission interval, burst tolerance (both microseconds),
# the requests wanted (default 1). GCRA on Redis's clock (so instances with skewed clocks agree):
# {granted, 0} with 1 <= granted <= wanted requests counted (as many as the bucket allows now),
# else {0, the microseconds to wait}. The key expires when the bucket is full again.
#
# Its write is kept out of the append-only file and the replicas (REPL_NONE): a bucket is a few
# seconds of accounting that a restart may forget (every bucket then starts full), and a write
# that reaches the AOF costs Redis an fsync under `appendfsync always`. One shopper's address is
# one script call a request, so logged it made most of Redis's fsyncs and held up every other
# command behind them (docs/performance.md, capacity).
RATE_LIMIT = Script(
    "rate_limit",
    """
redis.set_repl(redis.REPL_NONE)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local want = tonumber(ARGV[3] or '1')
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait > 0 then return {0, wait} end
local n = math.min(want, math.floor((now + tolerance - tat) / interval) + 1)
local nxt = tat + n * interval
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.floor((nxt - now) / 1000) + 1)
return {n, 0}
""",
)
