"""The Lua scripts of the Redis backend, one module per role, and what they share.

Every check-and-write that must be atomic is a script. Each script receives one key of the
store in KEYS (so Redis Cluster routes it to the store's slot) and the store's key prefix in
ARGV, and builds the other key names from that prefix: they carry the same hash tag, so they
live in the same slot. Numbers that are written back travel as strings from Python (Lua numbers
are doubles and would be re-formatted). Scripts validate before they write: Redis does not roll
back a script that fails halfway.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Script:
    """A Lua script and its SHA1, run with EVALSHA (falling back to EVAL once per server)."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


# Keep the later of two epoch-ms values in a hash field.
KEEP_LATEST = """
local function keep_latest(k, f, ms)
  local cur = redis.call('HGET', k, f)
  if not cur or tonumber(cur) < tonumber(ms) then redis.call('HSET', k, f, ms) end
end
"""
