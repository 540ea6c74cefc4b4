"""Lua scripts of what visitors did with offers: one signal recorded, a visitor's state read."""

from __future__ import annotations

from offer_service.storage.redis.keys import LASTING_SCORE, VISITOR_CHANGES_KEPT
from offer_service.storage.redis.scripts import Script

# Shared by every script that gives a visitor id state (signals, purchases and returns under
# the visitor's id, one-click accepts): the visitor joins the store's 'vstate' sorted set
# (what `visitor_ids` lists), scored by its last impression or click ms, or LASTING_SCORE once
# it has a state that does not age (a decline, accept, purchase or return); and it is appended,
# once per script call, to the store's 'vchanged' stream (what `visitor_changes` reads; kept to
# about VISITOR_CHANGES_KEPT entries).
MARK_VISITOR = """
local changed = {}
local function mark_visitor(p, visitor, score)
  redis.call('ZADD', p .. 'vstate', 'GT', score, visitor)
  if not changed[visitor] then
    changed[visitor] = true
    redis.call('XADD', p .. 'vchanged', 'MAXLEN', '~', KEPT, '*', 'v', visitor)
  end
end
""".replace("KEPT", str(VISITOR_CHANGES_KEPT))

# Records what a visitor did with an offered product. An impression also drops the visitor's
# impressions, and from 'vstate' the visitors whose last impression or click is, older than the
# longest frequency-cap window.
SIGNAL = (
    MARK_VISITOR
    + """
local function signal(p, visitor, kind, product, at, nonce, window, vttl)
  local k
  local score = 'LASTING'
  if kind == 'impression' then
    k = p .. 'vimp:' .. visitor
    redis.call('ZADD', k, at, product .. '\\31' .. nonce)
    -- Never past Redis's clock: an event's own time may run days ahead (a client's clock),
    -- and what it would trim could still be inside a frequency-cap window.
    local now = redis.call('TIME')
    local upto = math.min(tonumber(at), tonumber(now[1]) * 1000)
    local old = '(' .. (upto - tonumber(window))
    redis.call('ZREMRANGEBYSCORE', k, '-inf', old)
    redis.call('ZREMRANGEBYSCORE', p .. 'vstate', '-inf', old)
    score = at
  elseif kind == 'click' then
    k = p .. 'vclick:' .. visitor
    local cur = redis.call('HGET', k, product)
    if not cur or tonumber(cur) < tonumber(at) then redis.call('HSET', k, product, at) end
    score = at
  elseif kind == 'decline' then
    k = p .. 'vdecline:' .. visitor
    redis.call('SADD', k, product)
  elseif kind == 'accept' then
    k = p .. 'vaccept:' .. visitor
    redis.call('SADD', k, product)
  else
    return
  end
  redis.call('EXPIRE', k, vttl)
  mark_visitor(p, visitor, score)
end
""".replace("LASTING", LASTING_SCORE)
)


# KEYS: any key of the visitor. ARGV: prefix, visitor, kind, product, at ms, nonce, window ms,
# visitor TTL s.
RECORD_SIGNAL = Script(
    "record_signal",
    SIGNAL
    + """
signal(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
return 1
""",
)


# KEYS: each purchase subject's `bought` hash, then each one's `returned` hash (ARGV[1] subjects),
# then, with a visitor, its declined, accepted, impressions and clicks keys. ARGV: the number of
# subjects, the frequency-cap window's start (ms). A visitor's whole state in one command:
# {purchases as [product, last ms]*, returned ids, declined ids, accepted ids,
# [product, impressions since the window start and after its last click]*}.
VISITOR_STATE = Script(
    "visitor_state",
    """
local n, since = tonumber(ARGV[1]), tonumber(ARGV[2])
-- {key, value, key, value, ...} in the order the keys were first met.
local function flat(order, values)
  local out = {}
  for _, k in ipairs(order) do
    out[#out + 1] = k
    out[#out + 1] = values[k]
  end
  return out
end
local last, order = {}, {}
for i = 1, n do
  local h = redis.call('HGETALL', KEYS[i])
  for j = 1, #h, 2 do
    local at, prev = tonumber(h[j + 1]), last[h[j]]
    if prev == nil then order[#order + 1] = h[j] end
    if prev == nil or prev < at then last[h[j]] = at end
  end
end
local purchased = flat(order, last)
local returned = {}
for i = n + 1, 2 * n do
  local ids = redis.call('HKEYS', KEYS[i])
  for j = 1, #ids do returned[#returned + 1] = ids[j] end
end
if #KEYS == 2 * n then return {purchased, returned, {}, {}, {}} end
local declined = redis.call('SMEMBERS', KEYS[2 * n + 1])
local accepted = redis.call('SMEMBERS', KEYS[2 * n + 2])
local shown = redis.call('ZRANGEBYSCORE', KEYS[2 * n + 3], since, '+inf', 'WITHSCORES')
local clicks = redis.call('HGETALL', KEYS[2 * n + 4])
local clicked = {}
for j = 1, #clicks, 2 do clicked[clicks[j]] = tonumber(clicks[j + 1]) end
local counts, seen = {}, {}
for j = 1, #shown, 2 do
  local pid = string.match(shown[j], '^(.*)\\31') or shown[j]
  if tonumber(shown[j + 1]) > (clicked[pid] or -1) then
    if counts[pid] == nil then
      counts[pid] = 0
      seen[#seen + 1] = pid
    end
    counts[pid] = counts[pid] + 1
  end
end
return {purchased, returned, declined, accepted, flat(seen, counts)}
""",
)
