"""The event batches Redis acknowledged in the last seconds, kept to send again if it restarts.

With `appendfsync everysec` Redis may answer a write before handing it to the append-only file:
while a slow disk finishes the previous fsync it postpones the write by up to 2 s but answers at
once, so a SIGKILL of Redis (or a crash of its machine) in that moment loses events it already
acknowledged. Each process therefore keeps what it recorded in the last `RETAIN_S` (a bounded
count) and compares the server's run id (new at every start) every half second: when it
changed, everything kept is sent again. The store's dedupe by event id makes that idempotent:
an event the server kept is not appended or counted twice.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster

from offer_service.domain.events import StoredEvent

# Longer than Redis's longest postponed write (2 s) plus its once-a-second fsync.
RETAIN_S = 5.0
# Beyond this many events (about 100 MB of memory at worst) the oldest are forgotten early.
RETAIN_MAX_EVENTS = 200_000


@dataclasses.dataclass
class Batch:
    at: float
    store_id: str
    events: Sequence[StoredEvent]
    dedupe_since_ms: int


class Acknowledged:
    """The batches acknowledged in the last `retain_s`, and the server they went to."""

    def __init__(
        self,
        retain_s: float = RETAIN_S,
        max_events: int = RETAIN_MAX_EVENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retain_s = retain_s
        self.max_events = max_events
        self.clock = clock
        # The run id(s) seen at the last check; None until the first one.
        self.server: str | None = None
        self._batches: deque[Batch] = deque()
        self._events = 0

    def add(self, store_id: str, events: Sequence[StoredEvent], dedupe_since_ms: int) -> None:
        self._batches.append(Batch(self.clock(), store_id, events, dedupe_since_ms))
        self._events += len(events)
        while self._events > self.max_events and len(self._batches) > 1:
            self._events -= len(self._batches.popleft().events)

    def kept(self) -> list[Batch]:
        return list(self._batches)

    def checked(self, server: str, started: float) -> None:
        """The server answered `server` to a check begun at `started`: it has lived since the
        previous check, so what it acknowledged more than `retain_s` before is written."""
        self.server = server
        cutoff = started - self.retain_s
        while self._batches and self._batches[0].at < cutoff:
            self._events -= len(self._batches.popleft().events)

    def sent_again(self, batches: Sequence[Batch], at: float) -> None:
        """`batches` went to a new server at `at`: keep them as long as anything sent then."""
        for batch in batches:
            batch.at = at

    def __len__(self) -> int:
        return self._events


async def server_run_id(client: Any, cluster: bool) -> str:
    """Redis's run id (new at every start); a cluster's: every node's, joined in order."""
    if cluster:
        nodes = await client.info("server", target_nodes=RedisCluster.ALL_NODES)
        return " ".join(sorted(str(info["run_id"]) for info in nodes.values()))
    info = await client.info("server")
    return str(info["run_id"])
