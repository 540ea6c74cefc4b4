"""The Lua script of the rate limits shared by every instance."""

from __future__ import annotations

from offer_service.storage.redis.scripts import Script

# KEYS: the store's rate-limit windows of one width (`StoreKeys.rate_windows`). ARGV: emission
# interval, burst tolerance (both microseconds), the requests wanted, the bucket, the window's
# width (microseconds, at least interval + tolerance). GCRA on Redis's clock (so instances with
# skewed clocks agree): {granted, 0} with 1 <= granted <= wanted requests counted (as many as the
# bucket allows now), else {0, the microseconds to wait}.
#
# A bucket's theoretical arrival time is a field of the hash of the window (Redis's clock) it was
# last written in. It is never more than interval + tolerance ahead of that write, so it matters
# in that window and the next one only: those two are read, and a window's hash expires, whole,
# once the next one is over. Nothing of this reaches the append-only file or the replicas
# (REPL_NONE), and no key expires per bucket: a bucket is seconds of accounting that a restart
# may forget (every bucket then starts full), while a logged write, or the deletion Redis logs
# for a key that expires, costs Redis an fsync under `appendfsync always`. One shopper's address
# is one script call a request; as a key of its own with a TTL, written to the log, it made most
# of Redis's fsyncs and held up every other command behind them (docs/performance.md, capacity).
RATE_LIMIT = Script(
    "rate_limit",
    """
redis.set_repl(redis.REPL_NONE)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local bucket, width = ARGV[4], tonumber(ARGV[5])
local w = math.floor(now / width)
local current = KEYS[1] .. ':' .. w
local tat = math.max(
  tonumber(redis.call('HGET', current, bucket) or '0'),
  tonumber(redis.call('HGET', KEYS[1] .. ':' .. (w - 1), bucket) or '0'))
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait > 0 then return {0, wait} end
local n = math.min(want, math.floor((now + tolerance - tat) / interval) + 1)
redis.call('HSET', current, bucket, string.format('%.0f', tat + n * interval))
redis.call('PEXPIREAT', current, math.floor((w + 2) * width / 1000) + 1)
return {n, 0}
""",
)
