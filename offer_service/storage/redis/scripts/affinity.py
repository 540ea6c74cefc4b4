"""Lua scripts of co-purchase pair counts and neighbour lists."""

from __future__ import annotations

from offer_service.storage.redis.scripts import Script

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
