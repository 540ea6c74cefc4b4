"""Lua scripts of the event stream: recording, counting, dead letters and trimming."""

from __future__ import annotations

from offer_service.domain.traffic import NEEDS_IMPRESSION
from offer_service.storage.redis.scripts import Script
from offer_service.storage.redis.scripts.signals import SIGNAL

# The event types that need an impression before them, as a Lua table literal.
_ACTS = "{" + ", ".join(f"{t} = true" for t in sorted(NEEDS_IMPRESSION)) + "}"

# Stream ids compare as (ms, seq) pairs of integers.
_STREAM_ID = """
local function sid(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function sid_less(a, b)
  local am, as = sid(a)
  local bm, bs = sid(b)
  return am < bm or (am == bm and as < bs)
end
"""


# KEYS: events stream. ARGV: prefix, group, dedupe since ms, seen TTL ms, impression window ms,
# visitor TTL s, then (id, received ms, counter field, event JSON without its last field (the
# flag) and closing bracket, visitor or '', type, product, ts ms, offer id, flag or '', impression
# match window ms) * n. Dedupe, the invalid-traffic check (a click, add, accept or decline needs a
# valid impression of the offer by the visitor, remembered in a 'shown:' key for the match
# window of the offer's surface), the durable stream append and the visitor's signals in one
# step: 1 per event newly recorded, 0 per duplicate.
RECORD_EVENTS = Script(
    "record_events",
    SIGNAL
    + """
local stream, p = KEYS[1], ARGV[1]
if redis.call('EXISTS', stream) == 0 then
  redis.call('XGROUP', 'CREATE', stream, ARGV[2], '0', 'MKSTREAM')
end
local since = tonumber(ARGV[3])
local acts = ACTS
local out = {}
for i = 7, #ARGV, 11 do
  local id, received = ARGV[i], ARGV[i + 1]
  local sk = p .. 'seen:' .. id
  local prev = redis.call('GET', sk)
  if prev and tonumber((string.gsub(prev, '^a', ''))) >= since then
    out[#out + 1] = 0
  else
    redis.call('SET', sk, received, 'PX', ARGV[4])
    local flag, kind = ARGV[i + 9], ARGV[i + 5]
    local shown = p .. 'shown:' .. ARGV[i + 8] .. '\31' .. ARGV[i + 4]
    if flag == '' and kind == 'impression' then
      redis.call('SET', shown, received, 'PX', ARGV[i + 10])
    elseif flag == '' and acts[kind] then
      local at = redis.call('GET', shown)
      if not at or tonumber(at) < tonumber(received) - tonumber(ARGV[i + 10]) then
        flag = 'no_impression'
      end
    end
    local e = ARGV[i + 3] .. (flag == '' and ',null]' or (',"' .. flag .. '"]'))
    redis.call('XADD', stream, '*', 'i', id, 'r', received, 'c', ARGV[i + 2], 'e', e)
    if ARGV[i + 4] ~= '' then
      signal(p, ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], id, ARGV[5], ARGV[6])
    end
    out[#out + 1] = 1
  end
end
return out
""".replace("ACTS", _ACTS),
)

# KEYS: events stream. ARGV: prefix, group, entry ids delivered to this consumer (at most
# APPLY_CHUNK: a call's run time grows with them, and reads wait behind it). Each entry is
# acknowledged and counted in one step, so a redelivered entry is never counted twice: 1 when
# counted, 0 when acknowledged already (or its event id was counted), -1 when malformed (left
# pending for the dead-letter step).
APPLY_EVENTS = Script(
    "apply_events",
    """
local stream, p, group = KEYS[1], ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local found = redis.call('XRANGE', stream, id, id)
  local f = found[1] and found[1][2]
  local m = {}
  if f then for j = 1, #f, 2 do m[f[j]] = f[j + 1] end end
  if not f then
    redis.call('XACK', stream, group, id)
    out[#out + 1] = 0
  elseif not (m.i and m.c and m.e and m.r and tonumber(m.r)) then
    out[#out + 1] = -1
  elseif redis.call('XACK', stream, group, id) == 1 then
    local sk = p .. 'seen:' .. m.i
    local s = redis.call('GET', sk)
    if s and string.sub(s, 1, 1) == 'a' then
      out[#out + 1] = 0
    else
      if s then redis.call('SET', sk, 'a' .. s, 'KEEPTTL') end
      redis.call('HINCRBY', p .. 'counters', m.c, 1)
      local hex = string.gsub(m.i, '.', function(ch)
        return string.format('%02x', string.byte(ch))
      end)
      redis.call('ZADD', p .. 'evlog', m.r, hex .. ' ' .. m.e)
      out[#out + 1] = 1
    end
  else
    out[#out + 1] = 0
  end
end
return out
""",
)

# KEYS: events stream, dead-letter stream. ARGV: group, entry id, deliveries, reason.
DEAD_LETTER = Script(
    "dead_letter",
    """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
local fields = {'source_id', ARGV[2], 'deliveries', ARGV[3], 'reason', ARGV[4]}
local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if found[1] then
  local f = found[1][2]
  for j = 1, #f, 2 do
    fields[#fields + 1] = 'f:' .. f[j]
    fields[#fields + 1] = f[j + 1]
  end
end
redis.call('XADD', KEYS[2], '*', unpack(fields))
return 1
""",
)

# KEYS: events stream. ARGV: most entries to remove. Trims entries that every group has
# acknowledged: below the oldest pending entry and never past any group's last delivered id.
# A call stays short on any backlog: it removes whole stream nodes (up to the limit) while there
# are some, and only then the few entries left below that id one by one (at most one node's).
# Returns {entries removed, 1 if there may be more}.
TRIM_EVENTS = Script(
    "trim_events",
    _STREAM_ID
    + """
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok or #groups == 0 then return {0, 0} end
local minid = nil
for _, g in ipairs(groups) do
  local m = {}
  for j = 1, #g, 2 do m[g[j]] = g[j + 1] end
  local keep = m['last-delivered-id']
  local pending = redis.call('XPENDING', KEYS[1], m['name'])
  if pending[1] > 0 and sid_less(pending[2], keep) then keep = pending[2] end
  if not minid or sid_less(keep, minid) then minid = keep end
end
local nodes = redis.call('XTRIM', KEYS[1], 'MINID', '~', minid, 'LIMIT', ARGV[1])
if nodes > 0 then return {nodes, 1} end
return {redis.call('XTRIM', KEYS[1], 'MINID', minid), 0}
""",
)

# KEYS: the event log. ARGV: oldest received ms kept, most entries to remove. The log is scored
# by received ms, so what is older is its lowest ranks: removed by rank, a bounded number per
# call. Returns the entries removed.
EXPIRE_EVENT_LOG = Script(
    "expire_event_log",
    """
local old = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. ARGV[1])
if old == 0 then return 0 end
local n = math.min(old, tonumber(ARGV[2]))
return redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - 1)
""",
)
