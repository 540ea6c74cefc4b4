"""Background loops: one step every few seconds until stopped, waiting out store outages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from offer_service.exceptions import StoreError


async def every(
    interval_s: float,
    step: Callable[[], Awaitable[Any]],
    stop: asyncio.Event,
    log: logging.Logger,
    waiting: str,
) -> None:
    """Run `step` every `interval_s` until `stop` is set. A store error is an outage the next
    step waits out (logged at debug, as `waiting`: the spool and the health check report it)."""
    while not stop.is_set():
        try:
            await step()
        except StoreError as exc:
            log.debug("%s: %s", waiting, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
