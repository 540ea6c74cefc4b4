"""The serving process's freezer: survivors of collections leave full collections' walk, and
cycles among them are reclaimed after a thaw."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from offer_service.serving.heap import Freezer


class Node:
    """A cycle: the node refers to itself."""

    def __init__(self) -> None:
        self.me = self


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def freezer() -> Iterator[tuple[Freezer, Clock]]:
    gc.collect()
    gc.unfreeze()
    clock = Clock()
    freezer = Freezer(thaw_every_s=3600.0, clock=clock)
    freezer.install()
    try:
        yield freezer, clock
    finally:
        freezer.remove()
        gc.collect()


def test_the_survivors_of_a_collection_are_frozen_out_of_full_collections(
    freezer: tuple[Freezer, Clock],
) -> None:
    held = Node()
    gc.collect(1)
    assert gc.get_freeze_count() > 0
    assert not any(o is held for o in gc.get_objects())
    # Freezing keeps nothing alive: a frozen object no longer used is freed at once.
    gone = weakref.ref(held)
    held.me = None  # type: ignore[assignment]
    del held
    assert gone() is None


def test_garbage_younger_than_the_last_freeze_is_still_collected(
    freezer: tuple[Freezer, Clock],
) -> None:
    gc.collect(1)
    cycle = Node()
    gone = weakref.ref(cycle)
    del cycle
    gc.collect()
    assert gone() is None


def test_a_frozen_cycle_that_becomes_garbage_is_reclaimed_after_the_thaw(
    freezer: tuple[Freezer, Clock],
) -> None:
    _, clock = freezer
    cycle = Node()
    gc.collect(1)  # frozen while in use
    gone = weakref.ref(cycle)
    del cycle
    gc.collect()
    assert gone() is not None  # frozen: no collection looks at it
    clock.now = 3600.0
    gc.collect(1)  # the hour is up: thawed, and nothing frozen until a full collection
    assert gc.get_freeze_count() == 0
    gc.collect(1)
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert gone() is None
    gc.collect(1)
    assert gc.get_freeze_count() > 0  # freezing again
