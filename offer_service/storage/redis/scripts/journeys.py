"""The Lua script that rotates a store's feed key."""

from __future__ import annotations

from offer_service.storage.redis.scripts import Script

# KEYS: the store's feed key list. ARGV: the new key. Pushes it, keeps it and the previous one,
# and returns the keys dropped (their global index entries are deleted next).
ROTATE_FEED_KEY = Script(
    "rotate_feed_key",
    """
local dropped = redis.call('LRANGE', KEYS[1], 1, -1)
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, 1)
return dropped
""",
)
