"""Group commit: concurrent event batches share one write; each caller gets its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import cast

import pytest

from offer_service.domain.events import StoredEvent
from offer_service.exceptions import StoreUnavailable
from offer_service.serving.group_commit import MAX_EVENTS_PER_WRITE, GroupCommit
from offer_service.storage.protocols import Store
from tests.storage.test_storage_commerce_contract import event


class FakeStore:
    """Records each write; an id seen before is a duplicate, as the stores answer."""

    def __init__(self, fail: bool = False) -> None:
        self.writes: list[list[str]] = []
        self.seen: set[str] = set()
        self.fail = fail

    async def record_events(
        self, store_id: str, events: Sequence[StoredEvent], dedupe_since_ms: int
    ) -> list[bool]:
        self.writes.append([e.id for e in events])
        await asyncio.sleep(0.01)
        if self.fail:
            raise StoreUnavailable("down")
        fresh = []
        for e in events:
            fresh.append(e.id not in self.seen)
            self.seen.add(e.id)
        return fresh


@pytest.mark.anyio
async def test_batches_arriving_during_a_write_share_the_next_write() -> None:
    store = FakeStore()
    group = GroupCommit(cast(Store, store))
    batches = [[event(f"b{i}-{j}") for j in range(3)] for i in range(5)]

    first = asyncio.ensure_future(group.record_events("s", batches[0], 0))
    await asyncio.sleep(0.001)  # its write is in flight
    answers = await asyncio.gather(*(group.record_events("s", b, 0) for b in batches[1:]))

    assert await first == [True, True, True]
    assert answers == [[True, True, True]] * 4
    # The first batch went alone, the four that waited went together.
    assert [len(w) for w in store.writes] == [3, 12]


@pytest.mark.anyio
async def test_waiting_batches_are_written_in_parts_of_at_most_the_write_limit() -> None:
    assert MAX_EVENTS_PER_WRITE == 2_000
    store = FakeStore()
    group = GroupCommit(cast(Store, store))
    sizes = [800, 800, 800, 2_500, 1]
    batches = [[event(f"b{i}-{j}") for j in range(n)] for i, n in enumerate(sizes)]

    first = asyncio.ensure_future(group.record_events("s", [event("first")], 0))
    await asyncio.sleep(0.001)  # its write is in flight
    answers = await asyncio.gather(*(group.record_events("s", b, 0) for b in batches))

    assert await first == [True]
    assert answers == [[True] * n for n in sizes]
    # Oldest first, up to the limit; a batch bigger than the limit goes alone.
    assert [len(w) for w in store.writes] == [1, 1_600, 800, 2_500, 1]


@pytest.mark.anyio
async def test_each_caller_gets_its_own_part_and_duplicates_across_batches() -> None:
    store = FakeStore()
    group = GroupCommit(cast(Store, store))

    first, second, third = await asyncio.gather(
        group.record_events("s", [event("a")], 0),
        group.record_events("s", [event("b"), event("c")], 0),
        group.record_events("s", [event("c"), event("d")], 0),
    )

    assert (first, second, third) == ([True], [True, True], [False, True])


@pytest.mark.anyio
async def test_a_failed_write_fails_every_caller_in_it_and_the_next_write_runs() -> None:
    store = FakeStore(fail=True)
    group = GroupCommit(cast(Store, store))

    results = await asyncio.gather(
        *(group.record_events("s", [event(f"e{i}")], 0) for i in range(3)),
        return_exceptions=True,
    )

    assert all(isinstance(r, StoreUnavailable) for r in results)
    store.fail = False
    assert await group.record_events("s", [event("later")], 0) == [True]


@pytest.mark.anyio
async def test_stores_are_written_apart_and_an_empty_batch_writes_nothing() -> None:
    store = FakeStore()
    group = GroupCommit(cast(Store, store))

    assert await group.record_events("s", [], 0) == []
    await asyncio.gather(
        group.record_events("s1", [event("x")], 0),
        group.record_events("s2", [event("y")], 0),
    )

    assert sorted(store.writes) == [["x"], ["y"]]
