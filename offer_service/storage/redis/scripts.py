"""The Lua scripts of the Redis backend: every check-and-write that must be atomic.

Each script receives one key of the store in KEYS (so Redis Cluster routes it to the store's
slot) and the store's key prefix in ARGV, and builds the other key names from that prefix: they
carry the same hash tag, so they live in the same slot. Numbers that are written back travel as
strings from Python (Lua numbers are doubles and would be re-formatted). Scripts validate
before they write: Redis does not roll back a script that fails halfway.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from offer_service.storage.redis.keys import VISITOR_CHANGES_KEPT


@dataclass(frozen=True)
class Script:
    """A Lua script and its SHA1, run with EVALSHA (falling back to EVAL once per server)."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


# Shared by the scripts that record what a visitor did with an offered product. Each visitor
# signalled is also appended, once per script call, to the store's 'vchanged' stream (what
# `visitor_changes` reads; kept to about VISITOR_CHANGES_KEPT entries).
_SIGNAL = """
local changed = {}
local function signal(p, visitor, kind, product, at, nonce, window, vttl)
  local k
  if kind == 'impression' then
    k = p .. 'vimp:' .. visitor
    redis.call('ZADD', k, at, product .. '\\31' .. nonce)
    redis.call('ZREMRANGEBYSCORE', k, '-inf', '(' .. (tonumber(at) - tonumber(window)))
  elseif kind == 'click' then
    k = p .. 'vclick:' .. visitor
    local cur = redis.call('HGET', k, product)
    if not cur or tonumber(cur) < tonumber(at) then redis.call('HSET', k, product, at) end
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
  if not changed[visitor] then
    changed[visitor] = true
    redis.call('XADD', p .. 'vchanged', 'MAXLEN', '~', KEPT, '*', 'v', visitor)
  end
end
""".replace("KEPT", str(VISITOR_CHANGES_KEPT))

# Keep the later of two epoch-ms values in a hash field.
_KEEP_LATEST = """
local function keep_latest(k, f, ms)
  local cur = redis.call('HGET', k, f)
  if not cur or tonumber(cur) < tonumber(ms) then redis.call('HSET', k, f, ms) end
end
"""

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

# KEYS: record, events stream. ARGV: group, then the record's field/value pairs.
CREATE_STORE = Script(
    "create_store",
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[2], ARGV[1], '0', 'MKSTREAM')
end
return 1
""",
)

# KEYS: record. ARGV: rules JSON. The record after the change, or nil for an unknown store.
SET_RULES = Script(
    "set_rules",
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'rules', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'version', 1)
return redis.call('HGETALL', KEYS[1])
""",
)

# KEYS: record. ARGV: the new webhook secret; the current one becomes the previous one.
ROTATE_WEBHOOK_SECRET = Script(
    "rotate_webhook_secret",
    """
local cur = redis.call('HGET', KEYS[1], 'whsec0')
if not cur then return redis.error_reply('ERR unknown store') end
redis.call('HSET', KEYS[1], 'whsec0', ARGV[1], 'whsec1', cur)
redis.call('HINCRBY', KEYS[1], 'version', 1)
return 1
""",
)

# KEYS: record. ARGV: the new key as JSON {"kid", "secret"}. The new key signs, the previous
# signing key still verifies, older ones are retired.
ROTATE_SIGNING_KEY = Script(
    "rotate_signing_key",
    """
local cur = redis.call('HGET', KEYS[1], 'signing')
if not cur then return redis.error_reply('ERR unknown store') end
local keys = cjson.decode(cur)
redis.call('HSET', KEYS[1], 'signing', '[' .. ARGV[1] .. ',' .. cjson.encode(keys[1]) .. ']')
redis.call('HINCRBY', KEYS[1], 'version', 1)
return 1
""",
)

# KEYS: record. ARGV: the record's field ('pk' or 'sk'), the new key, its kind, the grace period's
# end (ms), now (ms). The replaced key joins the record's `retired` list (JSON [[key, kind,
# expires ms], ...]) until then; retired keys of the kind expire no later; expired ones are
# dropped. Returns (key, expires ms) pairs whose index entries must expire at that time.
ROTATE_API_KEY = Script(
    "rotate_api_key",
    """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return redis.error_reply('ERR unknown store') end
local kind, until_ms, now = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local kept, out = {}, {}
local raw = redis.call('HGET', KEYS[1], 'retired')
if raw then
  for _, r in ipairs(cjson.decode(raw)) do
    if tonumber(r[3]) > now then
      if r[2] == kind and tonumber(r[3]) > until_ms then
        r[3] = ARGV[4]
        out[#out + 1] = r[1]
        out[#out + 1] = ARGV[4]
      end
      kept[#kept + 1] = r
    end
  end
end
if until_ms > now then kept[#kept + 1] = {cur, kind, ARGV[4]} end
out[#out + 1] = cur
out[#out + 1] = ARGV[4]
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if #kept > 0 then
  redis.call('HSET', KEYS[1], 'retired', cjson.encode(kept))
else
  redis.call('HDEL', KEYS[1], 'retired')
end
redis.call('HINCRBY', KEYS[1], 'version', 1)
return out
""",
)

# KEYS: a rate limit's bucket. ARGV: emission interval, burst tolerance (both microseconds),
# the requests wanted (default 1). GCRA on Redis's clock (so instances with skewed clocks agree):
# {granted, 0} with 1 <= granted <= wanted requests counted (as many as the bucket allows now),
# else {0, the microseconds to wait}. The key expires when the bucket is full again.
RATE_LIMIT = Script(
    "rate_limit",
    """
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

# KEYS: record. ARGV: prefix, then (id, has family 0/1, family, category, product JSON) * n.
# Keeps the family sets and the per-category best-seller index in step with the catalog.
UPSERT_PRODUCTS = Script(
    "upsert_products",
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('ERR unknown store') end
local p = ARGV[1]
for i = 2, #ARGV, 5 do
  local id, hasf, fam, cat = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local oldf = redis.call('HGET', p .. 'families', id)
  if oldf and (hasf == '0' or oldf ~= fam) then
    redis.call('SREM', p .. 'family:' .. oldf, id)
  end
  if hasf == '1' then
    redis.call('HSET', p .. 'families', id, fam)
    redis.call('SADD', p .. 'family:' .. fam, id)
  elseif oldf then
    redis.call('HDEL', p .. 'families', id)
  end
  local oldc = redis.call('HGET', p .. 'categories', id)
  if oldc ~= cat then
    redis.call('HSET', p .. 'categories', id, cat)
    local score = redis.call('ZSCORE', p .. 'best', id)
    if score then
      if oldc then redis.call('ZREM', p .. 'best:' .. oldc, id) end
      redis.call('ZADD', p .. 'best:' .. cat, score, id)
    end
  end
  redis.call('HSET', p .. 'products', id, ARGV[i + 4])
  redis.call('ZADD', p .. 'product_ids', 0, id)
end
redis.call('HINCRBY', KEYS[1], 'version', 1)
return 1
""",
)

# KEYS: record. ARGV: prefix, JSON [[id, order JSON, placed ms, [subjects], [product ids]], ...].
# 1 per newly recorded order, 0 per duplicate (an order id already stored, or repeated).
ADD_ORDERS = Script(
    "add_orders",
    _KEEP_LATEST
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('ERR unknown store') end
local p = ARGV[1]
local batch = cjson.decode(ARGV[2])
local out, new, with_lines = {}, 0, 0
local baskets = {}
for i, o in ipairs(batch) do
  local id, placed, products = o[1], o[3], o[5]
  if redis.call('HSETNX', p .. 'orders', id, o[2]) == 1 then
    out[i] = 1
    new = new + 1
    redis.call('ZADD', p .. 'order_times', placed, id)
    for _, subject in ipairs(o[4]) do
      local k = p .. 'bought:' .. subject
      for _, pid in ipairs(products) do keep_latest(k, pid, placed) end
    end
    if #products > 0 then with_lines = with_lines + 1 end
    for _, pid in ipairs(products) do baskets[pid] = (baskets[pid] or 0) + 1 end
  else
    out[i] = 0
  end
end
-- Basket counts once per product of the batch (scores are minus the count).
for pid, n in pairs(baskets) do
  redis.call('ZINCRBY', p .. 'best', -n, pid)
  local c = redis.call('HGET', p .. 'categories', pid)
  if c then redis.call('ZINCRBY', p .. 'best:' .. c, -n, pid) end
end
if new > 0 then
  redis.call('HINCRBY', KEYS[1], 'baskets', with_lines)
  redis.call('HINCRBY', KEYS[1], 'version', 1)
end
return out
""",
)

# KEYS: record. ARGV: prefix, n, bump (0/1), (order id, sha1 of the order read, new order JSON)
# * n, then (subject, product, ms) * m. 0 when an order changed since it was read (retry).
ADD_RETURNS = Script(
    "add_returns",
    _KEEP_LATEST
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('ERR unknown store') end
local p, n = ARGV[1], tonumber(ARGV[2])
local base = 4
for i = 0, n - 1 do
  local cur = redis.call('HGET', p .. 'orders', ARGV[base + 3 * i])
  if not cur or redis.sha1hex(cur) ~= ARGV[base + 3 * i + 1] then return 0 end
end
for i = 0, n - 1 do
  redis.call('HSET', p .. 'orders', ARGV[base + 3 * i], ARGV[base + 3 * i + 2])
end
for j = base + 3 * n, #ARGV, 3 do
  keep_latest(p .. 'returned:' .. ARGV[j], ARGV[j + 1], ARGV[j + 2])
end
if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[1], 'version', 1) end
return 1
""",
)

# KEYS: record. ARGV: prefix, product ids... -> {generation, partners JSON or nil, ...}.
READ_PAIRS = Script(
    "read_pairs",
    """
local gen = redis.call('HGET', KEYS[1], 'pairs_gen')
if not gen then return {false} end
if #ARGV < 2 then return {gen} end
local values = redis.call('HMGET', ARGV[1] .. 'pairs:' .. gen, unpack(ARGV, 2))
local out = {gen}
for i = 1, #ARGV - 1 do out[i + 1] = values[i] end
return out
""",
)

# KEYS: record. ARGV: prefix, generation read, (product, sha1 of the value read or '', new JSON)
# * n. 0 when anything changed since it was read (retry).
UPDATE_PAIRS = Script(
    "update_pairs",
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('ERR unknown store') end
local gen = redis.call('HGET', KEYS[1], 'pairs_gen')
if gen ~= ARGV[2] then return 0 end
local k = ARGV[1] .. 'pairs:' .. gen
for j = 3, #ARGV, 3 do
  local cur = redis.call('HGET', k, ARGV[j])
  if (cur and redis.sha1hex(cur) or '') ~= ARGV[j + 1] then return 0 end
end
for j = 3, #ARGV, 3 do redis.call('HSET', k, ARGV[j], ARGV[j + 2]) end
redis.call('HINCRBY', KEYS[1], 'version', 1)
return 1
""",
)

# KEYS: record. ARGV: the new generation, already written in full. Returns the old one.
SWAP_PAIRS = Script(
    "swap_pairs",
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('ERR unknown store') end
local old = redis.call('HGET', KEYS[1], 'pairs_gen') or ''
redis.call('HSET', KEYS[1], 'pairs_gen', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'version', 1)
return old
""",
)

# KEYS: record. ARGV: prefix, (product, ranked JSON) * n.
SET_NEIGHBORS = Script(
    "set_neighbors",
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('ERR unknown store') end
if #ARGV > 1 then
  redis.call('HSET', ARGV[1] .. 'neighbors', unpack(ARGV, 2))
  redis.call('HINCRBY', KEYS[1], 'version', 1)
end
return 1
""",
)

# KEYS: any key of the visitor. ARGV: prefix, visitor, kind, product, at ms, nonce, window ms,
# visitor TTL s.
RECORD_SIGNAL = Script(
    "record_signal",
    _SIGNAL
    + """
signal(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
return 1
""",
)

# KEYS: events stream. ARGV: prefix, group, dedupe since ms, seen TTL ms, impression window ms,
# visitor TTL s, then (id, received ms, counter field, event JSON without its last field (the
# flag) and closing bracket, visitor or '', type, product, ts ms, offer id, flag or '', impression
# match window ms) * n. Dedupe, the invalid-traffic check (a click, accept or decline needs a
# valid impression of the offer by the visitor, remembered in a 'shown:' key for the match
# window of the offer's surface), the durable stream append and the visitor's signals in one
# step: 1 per event newly recorded, 0 per duplicate.
RECORD_EVENTS = Script(
    "record_events",
    _SIGNAL
    + """
local stream, p = KEYS[1], ARGV[1]
if redis.call('EXISTS', stream) == 0 then
  redis.call('XGROUP', 'CREATE', stream, ARGV[2], '0', 'MKSTREAM')
end
local since = tonumber(ARGV[3])
local acts = {click = true, accept = true, decline = true}
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
""",
)

# KEYS: events stream. ARGV: prefix, group, entry ids delivered to this consumer. Each entry is
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

# KEYS: events stream. Trims entries that every group has acknowledged: below the oldest
# pending entry and never past any group's last delivered id. Returns entries removed.
TRIM_EVENTS = Script(
    "trim_events",
    _STREAM_ID
    + """
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok or #groups == 0 then return 0 end
local minid = nil
for _, g in ipairs(groups) do
  local m = {}
  for j = 1, #g, 2 do m[g[j]] = g[j + 1] end
  local keep = m['last-delivered-id']
  local pending = redis.call('XPENDING', KEYS[1], m['name'])
  if pending[1] > 0 and sid_less(pending[2], keep) then keep = pending[2] end
  if not minid or sid_less(keep, minid) then minid = keep end
end
return redis.call('XTRIM', KEYS[1], 'MINID', minid)
""",
)

# KEYS: idempotency key. ARGV: fingerprint, owner, now ms, lease ms, ttl ms, expires ms.
# The same owner claiming again (a retried call) gets its claim back.
CLAIM_IDEMPOTENCY = Script(
    "claim_idempotency",
    """
local k = KEYS[1]
local h = redis.call('HMGET', k, 'fp', 'owner', 'state', 'status', 'body', 'started', 'expires')
local now = tonumber(ARGV[3])
if h[1] and tonumber(h[7]) <= now then
  redis.call('DEL', k)
  h[1] = false
end
if not h[1] then
  redis.call('HSET', k, 'fp', ARGV[1], 'owner', ARGV[2], 'state', 'running', 'status', '0',
    'body', '', 'started', ARGV[3], 'expires', ARGV[6])
  redis.call('PEXPIRE', k, ARGV[5])
  return {'claimed'}
end
if h[1] ~= ARGV[1] then return {'mismatch'} end
if h[3] == 'done' then return {'done', h[4], h[5]} end
if h[2] == ARGV[2] then return {'claimed'} end
if now - tonumber(h[6]) < tonumber(ARGV[4]) then return {'in_progress'} end
redis.call('HSET', k, 'owner', ARGV[2], 'started', ARGV[3])
return {'claimed'}
""",
)

# KEYS: idempotency key. ARGV: owner, status, body.
COMPLETE_IDEMPOTENCY = Script(
    "complete_idempotency",
    """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[2], 'body', ARGV[3])
end
return 1
""",
)

# KEYS: idempotency key. ARGV: owner.
RELEASE_IDEMPOTENCY = Script(
    "release_idempotency",
    """
local h = redis.call('HMGET', KEYS[1], 'owner', 'state')
if h[1] == ARGV[1] and h[2] == 'running' then redis.call('DEL', KEYS[1]) end
return 1
""",
)

_ACCEPT_VALUE = """
local function parse(v)
  return string.match(v, '^(%a+)|(%-?%d+)|(.*)$')
end
"""

# KEYS: the order's accepts hash. ARGV: product, idempotency key, cap, now ms, lease ms.
RESERVE_ACCEPT = Script(
    "reserve_accept",
    _ACCEPT_VALUE
    + """
local k, product, key = KEYS[1], ARGV[1], ARGV[2]
local v = redis.call('HGET', k, product)
if v then
  local state, updated, held = parse(v)
  if held == key then return 'reserved' end
  if state == 'charged' then return 'already_accepted' end
  if tonumber(ARGV[4]) - tonumber(updated) < tonumber(ARGV[5]) then return 'in_progress' end
  redis.call('HSET', k, product, 'reserved|' .. ARGV[4] .. '|' .. key)
  return 'reserved'
end
if redis.call('HLEN', k) >= tonumber(ARGV[3]) then return 'cap_reached' end
redis.call('HSET', k, product, 'reserved|' .. ARGV[4] .. '|' .. key)
return 'reserved'
""",
)

# KEYS: the order's accepts hash. ARGV: product, idempotency key.
CANCEL_ACCEPT = Script(
    "cancel_accept",
    _ACCEPT_VALUE
    + """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then
  local state, _, held = parse(v)
  if state == 'reserved' and held == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
end
return 1
""",
)

# KEYS: the order's accepts hash. ARGV: prefix, order id, product, charge id, now ms, sha1 of
# the order read ('' when it was missing), the order JSON with the line appended, the subject
# whose accept signal to record, the accept log member, visitor TTL s, then the buyer's
# purchase subjects. 1 when done (or nothing to do), 0 when the order changed (retry).
COMPLETE_ACCEPT = Script(
    "complete_accept",
    _ACCEPT_VALUE
    + _KEEP_LATEST
    + """
local acc, p, oid, product, now = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local v = redis.call('HGET', acc, product)
if not v then return 1 end
local state, _, held = parse(v)
if state ~= 'reserved' then return 1 end
local cur = redis.call('HGET', p .. 'orders', oid)
if ARGV[6] == '' then
  if cur then return 0 end
else
  if not cur or redis.sha1hex(cur) ~= ARGV[6] then return 0 end
  redis.call('HSET', p .. 'orders', oid, ARGV[7])
  for j = 11, #ARGV do keep_latest(p .. 'bought:' .. ARGV[j], product, now) end
  local ak = p .. 'vaccept:' .. ARGV[8]
  redis.call('SADD', ak, product)
  redis.call('EXPIRE', ak, ARGV[10])
end
redis.call('HSET', acc, product, 'charged|' .. now .. '|' .. held)
redis.call('ZADD', p .. 'acclog', now, ARGV[9])
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
