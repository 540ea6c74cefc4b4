"""What GET /metrics answers: this worker's samples, every other worker's, and the store's."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import shutil
import tempfile

from offer_service.exceptions import StoreError
from offer_service.serving.engine import Engine
from offer_service.serving.spool import Spool
from offer_service.storage.health import ERROR, FAIL_FAST, TIMEOUT, UNAVAILABLE, StoreHealth
from offer_service.storage.protocols import EventStreams
from offer_service.web.exposition import Samples, SharedSamples, clear, render
from offer_service.web.process_stats import add_process, gc_pauses
from offer_service.web.telemetry import Metrics

# Set by `serve` for its workers: the directory where each writes its counts (exposition.py).
METRICS_DIR_ENV = "OFFER_METRICS_DIR"
PUBLISH_EVERY_S = 0.5
LAG_TIMEOUT_S = 1.0
ERROR_KINDS = (UNAVAILABLE, TIMEOUT, FAIL_FAST, ERROR)

log = logging.getLogger(__name__)


class Collector:
    """This worker's samples, published for its siblings when it has any, and the scrape."""

    def __init__(
        self, metrics: Metrics, engine: Engine, spool: Spool, directory: str | None
    ) -> None:
        self.metrics = metrics
        self.engine = engine
        self.spool = spool
        self.worker = str(os.getpid())
        self.shared = SharedSamples(directory) if directory else None
        gc_pauses()  # timed from the start

    def local(self) -> Samples:
        """This worker's own samples."""
        s = Samples()
        self.metrics.add_to(s)
        health = getattr(self.engine.store, "health", None)
        fail_fast = False
        if isinstance(health, StoreHealth):
            for op in ("read", "write"):
                for kind in ERROR_KINDS:
                    s.add(
                        "offer_store_errors_total",
                        health.errors.get((op, kind), 0),
                        op=op,
                        kind=kind,
                    )
            fail_fast = health.fail_fast()
        s.gauge("offer_store_fail_fast", int(fail_fast), worker=self.worker)
        for name, cache in self.engine.caches().items():
            s.add("offer_cache_requests_total", cache.hits, cache=name, result="hit")
            s.add("offer_cache_requests_total", cache.misses, cache=name, result="miss")
        for source, n in self.engine.visitors.sources.items():
            s.add("offer_visitor_reads_total", n, source=source)
        s.add("offer_spool_events_total", self.spool.spooled, outcome="spooled")
        s.add("offer_spool_events_total", self.spool.replayed, outcome="replayed")
        s.add("offer_exposures_dropped_total", self.engine.exposures.dropped)
        add_process(s, self.worker)
        return s

    async def scrape(self) -> str:
        total = self.local()
        shared = self.shared
        if shared is not None:
            await asyncio.to_thread(shared.write, total)
            for other in await asyncio.to_thread(lambda: list(shared.others())):
                total.merge(other)
        total.gauge("offer_metrics_workers", len(total.each.get("offer_store_fail_fast", {})))
        files, size = self.spool.depth()
        total.gauge("offer_spool_files", files)
        total.gauge("offer_spool_bytes", size)
        await self._add_lag(total)
        return render(total)

    async def _add_lag(self, s: Samples) -> None:
        streams = self.engine.store.streams
        if streams is None:
            return
        try:
            # A hung store must not hang the scrape: its other series say what is wrong.
            async with asyncio.timeout(LAG_TIMEOUT_S):
                await self._read_lag(streams, s)
        except (StoreError, TimeoutError) as exc:
            log.debug("no aggregation lag in this scrape: %r", exc)

    @staticmethod
    async def _read_lag(streams: EventStreams, s: Samples) -> None:
        for store_id in await streams.store_ids():
            lag = await streams.aggregation_lag(store_id)
            s.gauge("offer_event_aggregation_lag_seconds", lag.oldest_s, store=store_id)
            s.gauge("offer_event_aggregation_pending", lag.pending, store=store_id)

    async def publish(self, stop: asyncio.Event) -> None:
        """Write this worker's samples for its siblings' scrapes until `stop` is set."""
        while not stop.is_set():
            self.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PUBLISH_EVERY_S)

    def close(self) -> None:
        """Write this worker's last samples (at exit too: its counts stay in the sums)."""
        if self.shared is not None:
            try:
                self.shared.write(self.local())
            except OSError as exc:
                log.warning("could not write this worker's metrics: %s", exc)


def share_between_workers(workers: int) -> None:
    """For `serve --workers N` (call before the workers start): a directory for the workers'
    counts, cleared of a previous run's and named to them in the environment; a temporary one,
    removed at exit, when N > 1 and OFFER_METRICS_DIR names none."""
    given = os.environ.get(METRICS_DIR_ENV)
    if workers <= 1 and not given:
        return
    directory = given or tempfile.mkdtemp(prefix="offer-metrics-")
    clear(directory)
    os.environ[METRICS_DIR_ENV] = directory
    if not given:
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
