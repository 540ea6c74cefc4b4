"""The Lua script that writes products with their family and category indexes."""

from __future__ import annotations

from offer_service.storage.redis.scripts import Script

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
