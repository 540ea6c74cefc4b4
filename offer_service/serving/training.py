"""Training the item model off the request path: after an import, on enough new orders, on demand.

The model (`decision/ease.py`) is fitted from every recorded basket in a worker thread and stored
as the products' neighbour lists, each neighbour with its model score; serving reads those lists
exactly as it reads co-occurrence ones. Between trainings, new orders still update pair counts
live and give products the model has not seen co-occurrence lists (`commerce/ingest.py`). A
store is retrained once `RETRAIN_ORDERS` new baskets have arrived since its last fit: a Redis
store by the `worker`'s `Trainer`, an embedded (SQLite) one by the `serve` process that received
the orders (`TrainingRuns.orders_added`), in a child process at a lower priority.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from offer_service.domain.records import StoreRecord
from offer_service.exceptions import StoreError
from offer_service.serving.children import child_env, lower_priority
from offer_service.serving.loops import every
from offer_service.settings import DEFAULT_RETRAIN_ORDERS
from offer_service.storage import shared_by_processes
from offer_service.storage.protocols import EventStreams, Store
from offer_service.types import DAY_MS

# As many neighbours per product as co-occurrence lists keep (`commerce.ingest.NEIGHBORS_K`).
MODEL_K = 50
# The regularisation is chosen on the store's last VALIDATION_DAYS of orders.
VALIDATION_DAYS = 30
# A store is retrained once this many baskets were recorded since its last fit...
RETRAIN_ORDERS = DEFAULT_RETRAIN_ORDERS
# ...checked this often.
CHECK_EVERY_S = 300.0
# Product titles (the model's side information) are read this many products at a time.
TITLE_CHUNK = 1_000
# All orders: placed_at is epoch ms, and no order is placed in the year 5138.
_UNTIL_MS = 10**14

NOTHING_TO_LEARN = (
    "store {store!r} has no order of two or more products yet: nothing to learn from, so offers "
    "come from best sellers and merchandising until orders arrive"
)

Say = Callable[[str], None]
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrainSummary:
    """What one training did (`products` 0: nothing to learn)."""

    baskets: int
    products: int
    lam: float | None
    validation: dict[float, float]
    seconds: float
    title_weight: float = 0.0  # the title similarity's weight chosen (`ease.tune`)
    exponent: float = 0.0  # the popularity exponent chosen (`ease.tune`)

    def report(self) -> dict[str, Any]:
        """What `offer-service train` prints (JSON)."""
        validation = {f"{lam:g}": round(rate, 6) for lam, rate in self.validation.items()}
        return {
            "baskets": self.baskets,
            "products": self.products,
            "lambda": self.lam,
            "validation_hit_rate@5": validation,
            "title_weight": self.title_weight,
            "popularity_exponent": self.exponent,
            "seconds": round(self.seconds, 2),
        }


async def train_store(
    store: Store, record: StoreRecord, *, progress: Say | None = None, k: int = MODEL_K
) -> TrainSummary:
    """Fit the store's item model on every recorded order and store its neighbour lists.
    A store without a basket of 2+ products keeps what it has (`products` = 0)."""
    say = progress or (lambda _: None)
    started = time.monotonic()
    # One string per product, not one per order line: 5 million lines read back as 5 million
    # strings would take more memory than the model.
    dated = [
        (o.placed_at_ms, tuple(sys.intern(p) for p in o.product_ids))
        async for o in store.iter_orders(record.id, 0, _UNTIL_MS)
        if o.lines
    ]
    say(f"read {len(dated):,} orders")
    if not any(len(basket) >= 2 for _, basket in dated):
        say(NOTHING_TO_LEARN.format(store=record.id))
        return TrainSummary(len(dated), 0, None, {}, time.monotonic() - started)
    # numpy and scipy load here, never in a process that only serves.
    from offer_service.decision import ease

    ordered = {p for _, basket in dated for p in basket}
    # Titles count in the exact model only: a larger catalog's are not read.
    titles = await _titles(store, record.id, ordered) if len(ordered) <= ease.DENSE_MAX else None

    fitted = await asyncio.to_thread(
        ease.train,
        dated,
        k=k,
        window_ms=VALIDATION_DAYS * DAY_MS,
        titles=titles,
        progress=say,
    )
    say(f"writing {len(fitted.lists):,} neighbour lists")
    await store.set_neighbors(record.id, fitted.lists)
    seconds = time.monotonic() - started
    say(f"trained in {seconds:.1f} s")
    return TrainSummary(
        fitted.baskets,
        fitted.products,
        fitted.lam,
        fitted.validation,
        seconds,
        fitted.title_weight,
        fitted.exponent,
    )


async def _titles(store: Store, store_id: str, ids: Collection[str]) -> dict[str, str]:
    """The titles of the ordered products the catalog holds, TITLE_CHUNK at a time."""
    ordered = sorted(ids)
    out: dict[str, str] = {}
    for start in range(0, len(ordered), TITLE_CHUNK):
        found = await store.get_products(store_id, ordered[start : start + TITLE_CHUNK])
        out.update((pid, p.title) for pid, p in found.items())
    return out


class Trainer:
    """Retrains each store of a shared backend once RETRAIN_ORDERS baskets arrived since its
    last fit (a store seen for the first time counts from zero: it is trained once, then on new
    orders). An embedded store is retrained by `serve` (`TrainingRuns.orders_added`)."""

    def __init__(
        self, store: Store, streams: EventStreams, *, retrain_orders: int = RETRAIN_ORDERS
    ) -> None:
        self.store = store
        self.streams = streams
        self.retrain_orders = retrain_orders
        self._fitted_at: dict[str, int] = {}

    async def run_once(self) -> int:
        """One pass over every store: the stores trained."""
        trained = 0
        for store_id in await self.streams.store_ids():
            baskets = await self.store.basket_count(store_id)
            if baskets - self._fitted_at.get(store_id, 0) < self.retrain_orders:
                continue
            record = await self.store.get_store(store_id)
            if record is None:
                continue
            self._fitted_at[store_id] = baskets
            summary = await train_store(self.store, record)
            trained += summary.products > 0
            log.info("trained store %s: %s products", store_id, summary.products)
        return trained

    async def run(self, stop: asyncio.Event, every_s: float = CHECK_EVERY_S) -> None:
        await every(every_s, self.run_once, stop, log, "trainer waits for the store")


class TrainingRuns:
    """Trains a store's item model after a bulk import through the HTTP API, or once
    `retrain_orders` new orders arrived through it, apart from serving: `offer-service train` in
    a child process at a lower priority, or, for an in-memory store that no other process can
    open, in this process (the fit itself in a worker thread). One training per store at a time;
    a request arriving meanwhile trains once more after it. The bulk recount replaced the model's
    lists with co-occurrence ones: the model's come back when it ends."""

    def __init__(self, store: Store, store_url: str, *, retrain_orders: int | None = None) -> None:
        self.store = store
        self.store_url = store_url
        # None: new orders never start a training here (a Redis store's `worker` retrains it).
        self.retrain_orders = retrain_orders
        self._running: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._new_orders: dict[str, int] = {}

    def orders_added(self, record: StoreRecord, count: int) -> None:
        """Count `count` new orders of the store; the one that brings them to `retrain_orders`
        since the last training this process started starts one. Only a counter on the request
        path: a restart forgets it, and the next `retrain_orders` orders train again."""
        if self.retrain_orders is None or count <= 0:
            return
        new = self._new_orders.get(record.id, 0) + count
        if new < self.retrain_orders:
            self._new_orders[record.id] = new
            return
        self.request(record)

    def request(self, record: StoreRecord) -> None:
        self._new_orders.pop(record.id, None)
        if record.id in self._running:
            self._again.add(record.id)
            return
        task = asyncio.create_task(self._train(record))
        self._running[record.id] = task
        task.add_done_callback(lambda _: self._running.pop(record.id, None))

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def _train(self, record: StoreRecord) -> None:
        while True:
            self._again.discard(record.id)
            try:
                if shared_by_processes(self.store_url):
                    await self._in_child(record.id)
                else:
                    await train_store(self.store, record)
            except (StoreError, OSError) as exc:
                log.warning("training store %s failed: %s", record.id, exc)
            if record.id not in self._again:
                return

    async def _in_child(self, store_id: str) -> None:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "offer_service.cli",
            "train",
            "--store",
            store_id,
            "--store-url",
            self.store_url,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=child_env(),
            preexec_fn=lower_priority,
        )
        try:
            _, stderr = await child.communicate()
        except asyncio.CancelledError:
            child.kill()
            await child.wait()
            raise
        if child.returncode != 0:
            last = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
            log.warning("training store %s exited %s: %s", store_id, child.returncode, last[0])
        else:
            log.info("trained store %s after an import", store_id)
