"""Which visitors of each store have any state: the offers path skips the store for the others."""

from __future__ import annotations

import asyncio
import logging
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable
from itertools import chain

from offer_service.exceptions import StoreError
from offer_service.storage.protocols import Store

# A store's index is built again this often (seconds): visitors whose only state (impressions,
# clicks) left the frequency-cap window leave it, and the ids added since fold into the array.
VISITOR_INDEX_REBUILD_S = 600.0
# Ids added since the last build beyond which it is built again sooner (each costs a set entry).
VISITOR_INDEX_ADDED_MAX = 50_000
# After a failed build, or the loss of the index, the next build waits this long.
VISITOR_INDEX_RETRY_S = 5.0
# The hashes of a big store are kept in 2**BUCKET_BITS sorted arrays by their top bits: each is
# sorted on its own while a build yields to requests between them, and a lookup bisects one of
# them. Fewer than ONE_ARRAY_MAX are sorted into one array (a store with few visitors with a
# state costs a few hundred bytes, not 256 arrays).
BUCKET_BITS = 8
ONE_ARRAY_MAX = 65_536

log = logging.getLogger(__name__)


_U64 = (1 << 64) - 1


def visitor_hash(visitor_id: str) -> int:
    """A visitor id's 64-bit hash in this process. Two ids with one hash only cost the second a
    store read. Python's own string hash: keyed per process (SipHash), which is all an index
    built and read by one process needs, and held by the id's string once computed, so the
    request's later lookups of the same id (its held state, its exposure) pay nothing more."""
    return hash(visitor_id) & _U64


class VisitorIndex:
    """The hashes of one store's visitor ids with a state: a snapshot listed by the store, in
    sorted arrays of 8 bytes a visitor, and a set of those added since (this process's writes,
    and the store's change feed). Ids are only ever added: a visitor listed whose state has
    gone costs one store read until the next build."""

    __slots__ = ("_added", "_buckets", "_shift", "built_at", "since_ms")

    def __init__(self, since_ms: int, built_at: float) -> None:
        """`since_ms`: the oldest impression or click the snapshot lists (the start of the
        frequency-cap window when it was built); `built_at`: monotonic seconds."""
        self._buckets: list[array[int]] = [array("Q") for _ in range(1 << BUCKET_BITS)]
        self._shift = 64 - BUCKET_BITS  # a hash's bucket: its top bits
        self._added: set[int] = set()
        self.since_ms = since_ms
        self.built_at = built_at

    def __contains__(self, visitor_id: str) -> bool:
        h = visitor_hash(visitor_id)
        if h in self._added:
            return True
        bucket = self._buckets[h >> self._shift]
        i = bisect_left(bucket, h)
        return i < len(bucket) and bucket[i] == h

    def __len__(self) -> int:
        """Hashes held, snapshot and additions (a few may be counted twice)."""
        return sum(len(b) for b in self._buckets) + len(self._added)

    @property
    def added(self) -> int:
        return len(self._added)

    def add(self, visitor_ids: Iterable[str]) -> None:
        """These visitors have a state now."""
        self._added.update(visitor_hash(v) for v in visitor_ids)

    def extend(self, visitor_ids: Iterable[str]) -> None:
        """Part of the snapshot being built (unsorted until `seal`)."""
        buckets, shift = self._buckets, self._shift
        for v in visitor_ids:
            h = visitor_hash(v)
            buckets[h >> shift].append(h)

    async def seal(self) -> None:
        """Sort the snapshot, one bucket at a time with requests served in between."""
        if sum(len(b) for b in self._buckets) < ONE_ARRAY_MAX:
            self._buckets = [array("Q", sorted(chain.from_iterable(self._buckets)))]
            self._shift = 64  # every hash in the one array
            return
        for i, bucket in enumerate(self._buckets):
            self._buckets[i] = array("Q", sorted(bucket))
            await asyncio.sleep(0)

    def covers(self, since_ms: int) -> bool:
        """Whether every visitor with an impression or click since `since_ms` is listed."""
        return self.since_ms <= since_ms


class _Slot:
    """One store's index, and the next one while it is built."""

    __slots__ = ("building", "current", "failed_at", "task")

    def __init__(self) -> None:
        self.current: VisitorIndex | None = None
        self.building: VisitorIndex | None = None
        self.task: asyncio.Task[None] | None = None
        self.failed_at = -VISITOR_INDEX_RETRY_S


class VisitorIndexes:
    """Every store's VisitorIndex, built in the background from `Store.visitor_ids` and kept
    current by the caller: `add` for this process's writes and the change feed's visitors,
    `lost` when the feed could not list them."""

    def __init__(
        self,
        store: Store,
        rebuild_s: float = VISITOR_INDEX_REBUILD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.rebuild_s = rebuild_s
        self._clock = clock
        self._slots: dict[str, _Slot] = {}

    def get(self, store_id: str) -> VisitorIndex | None:
        """The store's loaded index (None before its first build ends, or after `lost`)."""
        slot = self._slots.get(store_id)
        return None if slot is None else slot.current

    def follow(self, store_id: str, since_ms: int) -> None:
        """The caller reads the store's change feed from now on and passes what it lists to
        `add`: start a build when none is loaded, or it is due, or it lists too little."""
        slot = self._slots.get(store_id)
        if slot is None:
            slot = self._slots[store_id] = _Slot()
        if slot.task is not None:
            return
        now = self._clock()
        current = slot.current
        if (
            current is not None
            and now - current.built_at < self.rebuild_s
            and current.added < VISITOR_INDEX_ADDED_MAX
            and current.covers(since_ms)
        ):
            return
        if now - slot.failed_at < VISITOR_INDEX_RETRY_S:
            return
        building = slot.building = VisitorIndex(since_ms, now)
        slot.task = asyncio.get_running_loop().create_task(self._build(store_id, slot, building))

    def add(self, store_id: str, visitor_ids: Iterable[str]) -> None:
        """These visitors of the store have a state now."""
        slot = self._slots.get(store_id)
        if slot is None:
            return
        ids = list(visitor_ids)
        for index in (slot.current, slot.building):
            if index is not None:
                index.add(ids)

    def lost(self, store_id: str) -> None:
        """The change feed skipped visitors: nothing loaded or being built can be trusted."""
        slot = self._slots.get(store_id)
        if slot is None:
            return
        slot.current = slot.building = None
        if slot.task is not None:
            slot.task.cancel()
            slot.task = None
        # Built again after VISITOR_INDEX_RETRY_S: a feed that overflows at every read (more
        # changes a poll than it lists) must not keep the store listing its visitors.
        slot.failed_at = self._clock()

    async def _build(self, store_id: str, slot: _Slot, index: VisitorIndex) -> None:
        try:
            page = await self.store.visitor_ids(store_id, index.since_ms)
            while page is not None:
                index.extend(page.ids)
                if page.next_page is None:
                    await index.seal()
                    if slot.building is index:  # not lost meanwhile
                        slot.current, slot.building = index, None
                    return
                page = await self.store.visitor_ids(store_id, index.since_ms, page.next_page)
            # This store lists none: its visitors are read as before, and asked again later.
            slot.failed_at = self._clock() + self.rebuild_s
        except StoreError as exc:
            log.info("visitor index of store %s not built: %s", store_id, exc)
            slot.failed_at = self._clock()
        finally:
            if slot.task is asyncio.current_task():
                slot.task = None
                if slot.building is index:
                    slot.building = None
