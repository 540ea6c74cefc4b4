"""Lua scripts that rotate a store's webhook secret, signing key and API keys."""

from __future__ import annotations

from offer_service.storage.redis.scripts import Script

# KEYS: record. ARGV: the new webhook secret, then '1' to keep the current one as the previous
# one, or '0' to drop every earlier one.
ROTATE_WEBHOOK_SECRET = Script(
    "rotate_webhook_secret",
    """
local cur = redis.call('HGET', KEYS[1], 'whsec0')
if not cur then return redis.error_reply('ERR unknown store') end
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'whsec0', ARGV[1], 'whsec1', cur)
else
  redis.call('HSET', KEYS[1], 'whsec0', ARGV[1])
  redis.call('HDEL', KEYS[1], 'whsec1')
end
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
