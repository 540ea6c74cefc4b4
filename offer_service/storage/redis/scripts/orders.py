"""Lua scripts that record orders and returns with each buyer's purchases."""

from __future__ import annotations

from offer_service.storage.redis.keys import LASTING_SCORE
from offer_service.storage.redis.scripts import KEEP_LATEST, Script
from offer_service.storage.redis.scripts.signals import MARK_VISITOR

# A purchase or return under a visitor's id ('v:<visitor>') gives that visitor a lasting state.
_MARK_SUBJECT = (
    MARK_VISITOR
    + """
local function mark_subject(p, subject)
  if string.sub(subject, 1, 2) == 'v:' then mark_visitor(p, string.sub(subject, 3), 'LASTING') end
end
""".replace("LASTING", LASTING_SCORE)
)

# KEYS: record. ARGV: prefix, JSON [[id, order JSON, placed ms, [subjects], [product ids]], ...].
# 1 per newly recorded order, 0 per duplicate (an order id already stored, or repeated).
ADD_ORDERS = Script(
    "add_orders",
    KEEP_LATEST
    + _MARK_SUBJECT
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
      mark_subject(p, subject)
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
    KEEP_LATEST
    + _MARK_SUBJECT
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
  mark_subject(p, ARGV[j])
end
if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[1], 'version', 1) end
return 1
""",
)
