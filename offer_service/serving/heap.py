"""A serving process's long-lived objects kept out of full garbage collections (`gc.freeze`)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

# Everything frozen is thawed this often, so that cycles among frozen objects are reclaimed:
# one full collection of the whole heap an hour.
THAW_EVERY_S = 3600.0


class Freezer:
    """A `gc.callbacks` entry: freezes the survivors of every collection of generation 1 or 2,
    except between a thaw and the next full collection.

    A serving process holds a few hundred thousand long-lived objects (offer lists, products,
    visitors' state), replaced as its caches refresh. Python's full collection walks every one
    of them each time the long-lived ones have grown by a quarter: under a million distinct
    visitors, a pause of 250-750 ms every 20-40 s that every request in flight waits out, to
    find a few dozen unreachable objects. Frozen objects are in no generation, so full
    collections find next to nothing left to walk. Freezing keeps nothing alive (reference
    counting still frees a frozen object no longer used); only a cycle of frozen objects that
    becomes garbage waits, until the hourly thaw lets the next full collection walk everything
    once."""

    def __init__(
        self, *, thaw_every_s: float = THAW_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.thaw_every_s = thaw_every_s
        self.clock = clock
        self.thawed_at = clock()
        self.thawing = False

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "stop" or info["generation"] < 1:
            return
        if self.thawing:
            if info["generation"] < 2:
                return  # wait for the full collection that walks what was frozen
            self.thawing = False
        elif self.clock() - self.thawed_at >= self.thaw_every_s:
            gc.unfreeze()
            self.thawed_at = self.clock()
            self.thawing = True
            return
        gc.freeze()

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)
        gc.unfreeze()
