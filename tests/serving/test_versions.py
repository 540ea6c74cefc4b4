"""Store versions as a process sees them: never more than a second old, stale while the store
is down, and the store's record refreshed before a new version is used."""

from __future__ import annotations

import asyncio

import pytest

from offer_service.exceptions import StoreUnavailable
from offer_service.serving.versions import FRESH_S, MAX_AGE_S, Versions

pytestmark = pytest.mark.anyio


class FakeStore:
    def __init__(self) -> None:
        self.version = 1
        self.reads = 0
        self.down = False
        self.changes: list[str] = []

    async def load(self, store_id: str) -> int:
        self.reads += 1
        await asyncio.sleep(0)
        if self.down:
            raise StoreUnavailable("down")
        return self.version

    async def changed(self, store_id: str) -> None:
        self.changes.append(f"{store_id}@{self.version}")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup() -> tuple[FakeStore, Clock, Versions]:
    store, clock = FakeStore(), Clock()
    return store, clock, Versions(store.load, store.changed, clock=clock)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_fresh_version_is_served_without_a_read(
    setup: tuple[FakeStore, Clock, Versions],
) -> None:
    store, clock, versions = setup
    assert await versions.get("s") == 1
    store.version = 2
    clock.now += FRESH_S / 2

    assert await versions.get("s") == 1
    assert store.reads == 1


async def test_an_aging_version_is_served_while_one_background_read_refreshes_it(
    setup: tuple[FakeStore, Clock, Versions],
) -> None:
    store, clock, versions = setup
    await versions.get("s")
    store.version = 2
    clock.now += (FRESH_S + MAX_AGE_S) / 2

    assert await asyncio.gather(*(versions.get("s") for _ in range(10))) == [1] * 10
    await settle()

    assert store.reads == 2
    assert await versions.get("s") == 2
    assert store.changes == ["s@2"]


async def test_a_version_older_than_a_second_is_never_served_while_the_store_answers(
    setup: tuple[FakeStore, Clock, Versions],
) -> None:
    store, clock, versions = setup
    await versions.get("s")
    store.version = 7
    clock.now += MAX_AGE_S

    assert await versions.get("s") == 7
    assert store.changes == ["s@7"]


async def test_the_last_version_is_served_while_the_store_is_down(
    setup: tuple[FakeStore, Clock, Versions],
) -> None:
    store, clock, versions = setup
    await versions.get("s")
    store.down = True
    clock.now += 10

    assert await versions.get("s") == 1
    reads = store.reads
    # The next requests do not wait on the store again at once.
    assert await versions.get("s") == 1
    await settle()
    assert store.reads <= reads + 1

    store.down, store.version = False, 3
    clock.now += MAX_AGE_S
    assert await versions.get("s") == 3


async def test_without_any_version_read_an_outage_is_an_error(
    setup: tuple[FakeStore, Clock, Versions],
) -> None:
    store, _, versions = setup
    store.down = True

    with pytest.raises(StoreUnavailable):
        await versions.get("s")


async def test_fresh_answers_only_a_version_younger_than_fresh_s(
    setup: tuple[FakeStore, Clock, Versions],
) -> None:
    store, clock, versions = setup
    assert versions.fresh("s") is None  # never read
    assert await versions.get("s") == 1
    clock.now += FRESH_S / 2
    assert versions.fresh("s") == 1
    clock.now += FRESH_S / 2
    assert versions.fresh("s") is None  # `get` decides: a background read, or a wait
    assert store.reads == 1
