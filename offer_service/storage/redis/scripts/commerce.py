"""Lua scripts where money moves: idempotency claims, accept reservations, recorded charges."""

from __future__ import annotations

from offer_service.storage.redis.keys import LASTING_SCORE
from offer_service.storage.redis.scripts import KEEP_LATEST, Script
from offer_service.storage.redis.scripts.signals import MARK_VISITOR

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
if h[2] == ARGV[2] and h[3] == 'running' then return {'claimed'} end
if h[3] == 'running' and now - tonumber(h[6]) < tonumber(ARGV[4]) then return {'in_progress'} end
redis.call('HSET', k, 'owner', ARGV[2], 'state', 'running', 'started', ARGV[3])
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

# KEYS: idempotency key. ARGV: owner. Kept with its fingerprint: the same key with another
# body stays refused.
RELEASE_IDEMPOTENCY = Script(
    "release_idempotency",
    """
local h = redis.call('HMGET', KEYS[1], 'owner', 'state')
if h[1] == ARGV[1] and h[2] == 'running' then redis.call('HSET', KEYS[1], 'state', 'open') end
return 1
""",
)

# KEYS: idempotency key. ARGV: status, body ('' and '': release it unless done).
SETTLE_IDEMPOTENCY = Script(
    "settle_idempotency",
    """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
if ARGV[1] == '' then
  if state ~= 'done' then redis.call('HSET', KEYS[1], 'state', 'open') end
else
  redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[1], 'body', ARGV[2])
end
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
  -- A recorded charge is never taken over: only settling it ends it.
  if state == 'charging' then return 'in_progress' end
  if tonumber(ARGV[4]) - tonumber(updated) < tonumber(ARGV[5]) then return 'in_progress' end
  redis.call('HSET', k, product, 'reserved|' .. ARGV[4] .. '|' .. key)
  return 'reserved'
end
if redis.call('HLEN', k) >= tonumber(ARGV[3]) then return 'cap_reached' end
redis.call('HSET', k, product, 'reserved|' .. ARGV[4] .. '|' .. key)
return 'reserved'
""",
)

# KEYS: the order's accepts hash. ARGV: prefix, order id, product, idempotency key, now ms,
# lease ms, the attempt JSON, the charge's member ('<hex order> <hex product>').
# {turn, attempt JSON, calls, charged 0/1}.
RECORD_CHARGE = Script(
    "record_charge",
    _ACCEPT_VALUE
    + """
local acc, p, product, key, now = KEYS[1], ARGV[1], ARGV[3], ARGV[4], tonumber(ARGV[5])
local charges, due, calls, member = p .. 'charges:' .. ARGV[2], p .. 'chargesdue',
  p .. 'chargecalls', ARGV[8]
local v = redis.call('HGET', acc, product)
if not v then return {'lost'} end
local state, _, held = parse(v)
if held ~= key then return {'lost'} end
local found = redis.call('HGET', charges, product)
if state == 'charged' then return {'call', found or ARGV[7], '1', '1'} end
if state == 'charging' and found then
  local lease = redis.call('ZSCORE', due, member)
  local n = redis.call('HGET', calls, member) or '0'
  if lease and tonumber(lease) > now then return {'busy', found, n, '0'} end
  redis.call('ZADD', due, now + tonumber(ARGV[6]), member)
  return {'call', found, tostring(redis.call('HINCRBY', calls, member, 1)), '0'}
end
redis.call('HSET', charges, product, ARGV[7])
redis.call('ZADD', due, now + tonumber(ARGV[6]), member)
redis.call('HSET', calls, member, 1)
redis.call('HSET', acc, product, 'charging|' .. ARGV[5] .. '|' .. key)
return {'call', ARGV[7], '1', '0'}
""",
)

# KEYS: the order's accepts hash. ARGV: prefix, order id, product, idempotency key, the
# charge's member.
CANCEL_ACCEPT = Script(
    "cancel_accept",
    _ACCEPT_VALUE
    + """
local p, product = ARGV[1], ARGV[3]
local v = redis.call('HGET', KEYS[1], product)
if v then
  local state, _, held = parse(v)
  if (state == 'reserved' or state == 'charging') and held == ARGV[4] then
    redis.call('HDEL', KEYS[1], product)
    redis.call('HDEL', p .. 'charges:' .. ARGV[2], product)
    redis.call('ZREM', p .. 'chargesdue', ARGV[5])
    redis.call('HDEL', p .. 'chargecalls', ARGV[5])
  end
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
    + KEEP_LATEST
    + MARK_VISITOR
    + """
local acc, p, oid, product, now = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local v = redis.call('HGET', acc, product)
if not v then return 1 end
local state, _, held = parse(v)
if state ~= 'reserved' and state ~= 'charging' then return 1 end
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
  mark_visitor(p, ARGV[8], 'LASTING')
end
redis.call('HSET', acc, product, 'charged|' .. now .. '|' .. held)
redis.call('ZADD', p .. 'acclog', now, ARGV[9])
local member = string.match(ARGV[9], '^(%x* %x*) ')
redis.call('ZREM', p .. 'chargesdue', member)
redis.call('HDEL', p .. 'chargecalls', member)
return 1
""".replace("LASTING", LASTING_SCORE),
)
