"""The drain before a serving process stops: readiness says 503 while requests are still served."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger(__name__)

DRAINING = "draining for %.1f s: /readyz answers 503, requests are still served"
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Drain:
    """Whether this process is draining: told to stop and still serving until its drain period
    ends, so that a balancer polling /readyz takes it out before its listener closes."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self.since: float | None = None  # time.monotonic() when the drain began
        self._handed_on = False

    @property
    def draining(self) -> bool:
        return self.since is not None

    def begin(self) -> None:
        if self.since is None:
            self.since = time.monotonic()

    def hold_signals(self) -> None:
        """Put the drain between SIGTERM or SIGINT and the uvicorn server's own handling of it
        (stop listening, finish what is in flight, the lifespan's shutdown): the first signal
        begins the drain and hands the signal on `period_s` later; further SIGTERMs (a process
        manager that signals every process of the group, as well as the supervisor of the
        workers) change nothing, a second SIGINT (Ctrl-C again) stops at once. Only where a
        uvicorn server handles the signals, in the main thread; elsewhere nothing changes."""
        if threading.current_thread() is not threading.main_thread() or self.period_s <= 0:
            return
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            stop = signal.getsignal(sig)
            if callable(stop) and isinstance(getattr(stop, "__self__", None), uvicorn.Server):
                signal.signal(sig, self._handler(stop, loop))

    def _handler(
        self, stop: Callable[[int, FrameType | None], Any], loop: asyncio.AbstractEventLoop
    ) -> Callable[[int, FrameType | None], None]:
        def hand_on(sig: int, frame: FrameType | None) -> None:
            if not self._handed_on:
                self._handed_on = True
                stop(sig, frame)

        def handle(sig: int, frame: FrameType | None) -> None:
            if not self.draining:
                self.begin()
                log.info(DRAINING, self.period_s)
                loop.call_soon_threadsafe(loop.call_later, self.period_s, hand_on, sig, None)
            elif sig == signal.SIGINT:
                # Stop now; once stopping, uvicorn takes another SIGINT as "do not wait".
                if self._handed_on:
                    stop(sig, frame)
                hand_on(sig, frame)

        return handle
