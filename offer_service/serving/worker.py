"""Background work of a serving process: aggregate the event streams, replay the event spool,
send a restarted server its last acknowledged events again, and the loops the app adds (settling
charges whose outcome is unknown); the `worker` command also retrains item models.

The aggregator reads every store's event stream as one consumer of the consumer group and
counts what it reads (see `storage/redis/events.py`); every few seconds it also claims entries
left pending by consumers that died, dead-letters poison entries, trims what every group has
acknowledged and forgets long-gone consumers. It runs inside `serve` by default (each process
one consumer) and as `offer-service worker` when a platform team runs it apart (then start
`serve` with `--no-aggregator`). Any number of aggregators can run: counting is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

from offer_service.exceptions import StoreError
from offer_service.serving.loops import every
from offer_service.serving.spool import Spool, replay_forever
from offer_service.serving.training import Trainer
from offer_service.storage.protocols import EventStreams, Store

IDLE_SLEEP_S = 0.5
ERROR_SLEEP_S = 1.0
MAINTENANCE_EVERY_S = 5.0
RESTART_CHECK_S = 0.5
# On the way out, how long the background loops may take to finish the step they are in.
LOOP_FINISH_S = 5.0

log = logging.getLogger(__name__)


def consumer_name() -> str:
    """Unique per process, readable in XINFO CONSUMERS."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Aggregator:
    """One consumer of every store's event stream."""

    def __init__(self, streams: EventStreams, consumer: str | None = None) -> None:
        self.store = streams
        self.consumer = consumer or consumer_name()
        self._last_maintenance = 0.0

    async def run_once(self) -> int:
        """One pass over every store: the events counted."""
        counted = 0
        for store_id in await self.store.store_ids():
            counted += await self.store.aggregate(store_id, self.consumer)
        now = time.monotonic()
        if now - self._last_maintenance >= MAINTENANCE_EVERY_S:
            self._last_maintenance = now
            counted += await self.maintain()
        return counted

    async def maintain(self) -> int:
        counted = 0
        for store_id in await self.store.store_ids():
            counted += await self.store.reclaim(store_id, self.consumer)
            await self.store.trim_events(store_id)
            await self.store.drop_idle_consumers(store_id)
        return counted

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                counted = await self.run_once()
            except StoreError as exc:
                log.debug("aggregator waits for the store: %s", exc)
                counted, pause = 0, ERROR_SLEEP_S
            else:
                pause = 0.0 if counted else IDLE_SLEEP_S
            if pause:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)


# A loop of the process's own that runs until the event is set (the charge settler).
Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


async def resend_forever(
    streams: EventStreams, stop: asyncio.Event, interval_s: float = RESTART_CHECK_S
) -> None:
    """Check every `interval_s` whether the server restarted; if so send its last acknowledged
    events again (see storage/redis/recent.py)."""
    await every(
        interval_s, streams.resend_if_restarted, stop, log, "restart check waits for the store"
    )


@contextlib.asynccontextmanager
async def background(
    store: Store, spool: Spool | None, *, aggregate: bool, loops: Sequence[Loop] = ()
) -> AsyncIterator[None]:
    """Run the spool replay, (for a Redis store) the aggregator and `loops` while the block
    runs."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = [asyncio.create_task(loop(stop)) for loop in loops]
    if spool is not None:
        tasks.append(asyncio.create_task(replay_forever(spool, store, stop)))
    if store.streams is not None:
        tasks.append(asyncio.create_task(resend_forever(store.streams, stop)))
    if aggregate and store.streams is not None:
        tasks.append(asyncio.create_task(Aggregator(store.streams).run(stop)))
    try:
        yield
    finally:
        stop.set()
        # A step under way (a pass of the aggregator, a settling call) ends on its own rather
        # than half-done; one that is stuck is cancelled.
        if tasks:
            await asyncio.wait(tasks, timeout=LOOP_FINISH_S)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_worker(store_url: str, spool_dir: str | None) -> None:
    """`offer-service worker`: aggregate until SIGINT or SIGTERM; replay orphaned spool files
    of the machine's service processes when given their spool directory."""
    from offer_service.storage import open_store

    store = open_store(store_url)
    streams = store.streams
    if streams is None:
        raise SystemExit(
            "error: the worker aggregates a Redis store (redis:// or redis+cluster://)"
        )
    await store.open()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    spool = Spool(spool_dir) if spool_dir else None
    aggregator = Aggregator(streams)
    log.info("worker %s aggregating every store's events", aggregator.consumer)
    # The item model retrains apart from serving: the worker is where CPU-heavy work belongs.
    training = asyncio.create_task(Trainer(store, streams).run(stop))
    try:
        async with background(store, spool, aggregate=False):
            await aggregator.run(stop)
    finally:
        training.cancel()
        await asyncio.gather(training, return_exceptions=True)
        await store.close()
