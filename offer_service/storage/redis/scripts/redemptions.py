"""Lua script of redeemed offers: the first answer of each (cart, offer token) pair kept."""

from __future__ import annotations

from offer_service.storage.redis.scripts import Script

# KEYS: the store's record. ARGV: (redemption key, answer or '' to only read, TTL ms) * n. Keeps
# each answer unless one is kept already (an expired one is gone), then reads every kept
# answer: false for an unknown store, else (kept answer or false for none, 1 when this call
# kept it else 0) * n in ARGV's order.
REMEMBER_REDEMPTIONS = Script(
    "remember_redemptions",
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local out = {}
for i = 1, #ARGV, 3 do
  local k = ARGV[i]
  local new = 0
  if ARGV[i + 1] ~= '' and redis.call('SET', k, ARGV[i + 1], 'NX', 'PX', ARGV[i + 2]) then
    new = 1
  end
  out[#out + 1] = redis.call('GET', k)
  out[#out + 1] = new
end
return out
""",
)
