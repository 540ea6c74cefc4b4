"""Lua scripts of a store's record: its creation and its rules."""

from __future__ import annotations

from offer_service.storage.redis.scripts import Script

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
