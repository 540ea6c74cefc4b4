"""Long work on the event loop's thread, cut into slices that give the loop back between them."""

from __future__ import annotations

import asyncio
import time

# Longer than this without giving the loop back delays every request in flight by as much.
SLICE_S = 0.002


class Slices:
    """`await give_back()` inside a long loop: suspends (one pass of the event loop) once
    SLICE_S has passed since the last suspension, else returns at once."""

    __slots__ = ("_until",)

    def __init__(self) -> None:
        self._until = time.perf_counter() + SLICE_S

    async def __call__(self) -> None:
        if time.perf_counter() >= self._until:
            await asyncio.sleep(0)
            self._until = time.perf_counter() + SLICE_S
