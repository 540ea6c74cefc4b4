"""Prometheus text exposition of samples, summed across a server's worker processes.

Every worker keeps its own counts in memory (a dict increment per request) and writes a
snapshot of them to a file of its own in a directory shared by the workers, every half second
and at exit. A scrape, whichever worker answers it, sums its live counts with every other
worker's latest file: counters and histograms add up (a worker that died keeps its last counts,
so a sum never goes backwards), gauges are kept per live worker with a `worker` label.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

# Family name: (type, help). Rendered in this order.
FAMILIES: dict[str, tuple[str, str]] = {
    "offer_http_requests_total": ("counter", "HTTP requests by route, method and status."),
    "offer_http_answered_in_turn_total": (
        "counter",
        "Requests answered in the turn they arrived, without an ASGI task (warm GET /v1/offers).",
    ),
    "offer_http_request_duration_seconds": ("histogram", "Request latency by route."),
    "offer_offers_requests_total": (
        "counter",
        "Requests of /v1/offers (GET, POST, OPTIONS) by surface, method and status.",
    ),
    "offer_offers_request_duration_seconds": (
        "histogram",
        "Latency of /v1/offers by surface.",
    ),
    "offer_store_errors_total": (
        "counter",
        "Failed store operations by operation class (read, write) and kind.",
    ),
    "offer_store_fail_fast": (
        "gauge",
        "1 while this worker treats the store as down and refuses its reads unasked.",
    ),
    "offer_cache_requests_total": (
        "counter",
        "In-process cache reads by cache and result (hit, miss).",
    ),
    "offer_visitor_reads_total": (
        "counter",
        "Visitor states the offers path took, by source: index (a visitor the store's index "
        "does not list: no state, no store read), held (read earlier), store (read now).",
    ),
    "offer_spool_events_total": (
        "counter",
        "Events written to the local spool while the store was down (spooled) and replayed.",
    ),
    "offer_spool_files": ("gauge", "Spool files waiting for a replay (every worker's)."),
    "offer_spool_bytes": ("gauge", "Bytes in spool files waiting for a replay."),
    "offer_exposures_dropped_total": (
        "counter",
        "Exposure events neither stored nor spooled.",
    ),
    "offer_event_aggregation_lag_seconds": (
        "gauge",
        "Age of the oldest event of a store's stream not yet counted (0: all counted).",
    ),
    "offer_event_aggregation_pending": (
        "gauge",
        "Events delivered to an aggregator and not yet counted.",
    ),
    "offer_metrics_workers": ("gauge", "Worker processes whose counts this scrape holds."),
    "process_cpu_seconds_total": ("counter", "User and system CPU time, in seconds."),
    "process_resident_memory_bytes": ("gauge", "Resident memory, in bytes."),
    "process_virtual_memory_bytes": ("gauge", "Virtual memory, in bytes."),
    "process_open_fds": ("gauge", "Open file descriptors."),
    "process_start_time_seconds": ("gauge", "Start time since the Unix epoch, in seconds."),
    "python_gc_collections_total": ("counter", "Garbage collections by generation."),
    "python_gc_objects_collected_total": ("counter", "Objects collected by generation."),
    "python_gc_pause_seconds_total": ("counter", "Time spent in garbage collection."),
}
_SUFFIXES = ("_bucket", "_count", "_sum")


def labels(**pairs: str | int) -> str:
    """`{a="1",b="2"}`, nothing when none (values are bounded: routes, surfaces, kinds; never
    client input)."""
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in pairs.items()) + "}"


@dataclass(slots=True)
class Samples:
    """Samples by family: `summed` ones add up across workers, `each` are per worker."""

    summed: dict[str, dict[str, float]] = field(default_factory=dict)
    each: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, family: str, value: float, suffix: str = "", **pairs: str | int) -> None:
        """A counter's or histogram's sample, summed across workers."""
        self._sum(family, family + suffix + labels(**pairs), value)

    def gauge(self, family: str, value: float, **pairs: str | int) -> None:
        """A sample of one worker's own (`pairs` name the worker)."""
        self.each.setdefault(family, {})[family + labels(**pairs)] = value

    def _sum(self, family: str, sample: str, value: float) -> None:
        series = self.summed.setdefault(family, {})
        series[sample] = series.get(sample, 0.0) + value

    def merge(self, other: Samples) -> None:
        for family, series in other.summed.items():
            for sample, value in series.items():
                self._sum(family, sample, value)
        for family, series in other.each.items():
            self.each.setdefault(family, {}).update(series)

    def dumps(self) -> bytes:
        return orjson.dumps({"summed": self.summed, "each": self.each})

    @classmethod
    def loads(cls, raw: bytes, *, live: bool) -> Samples:
        data = orjson.loads(raw)
        return cls(data.get("summed", {}), data.get("each", {}) if live else {})


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    return str(int(value)) if value == int(value) else repr(value)


def render(samples: Samples) -> str:
    lines: list[str] = []
    for family, (kind, text) in FAMILIES.items():
        series = {**samples.summed.get(family, {}), **samples.each.get(family, {})}
        if not series:
            continue
        lines += [f"# HELP {family} {text}", f"# TYPE {family} {kind}"]
        lines += [f"{sample} {_number(value)}" for sample, value in series.items()]
    return "\n".join(lines) + "\n"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SharedSamples:
    """This worker's file in the workers' directory, and the sum of every worker's."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        # The pid says whether the writer lives; the random part keeps a reused pid from
        # overwriting a dead worker's counts.
        self.path = self.directory / f"{os.getpid()}-{secrets.token_hex(4)}.json"

    def write(self, samples: Samples) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(samples.dumps())
        os.replace(tmp, self.path)  # a reader sees the old file or the new one, never half

    def others(self) -> Iterable[Samples]:
        for path in sorted(self.directory.glob("*.json")):
            if path == self.path:
                continue
            with contextlib.suppress(OSError, orjson.JSONDecodeError, ValueError):
                pid = int(path.name.split("-", 1)[0])
                yield Samples.loads(path.read_bytes(), live=_alive(pid))


def clear(directory: str | Path) -> None:
    """Forget the counts of a previous run (the serving parent calls this before its workers
    start)."""
    for path in Path(directory).glob("*.json"):
        with contextlib.suppress(OSError):
            path.unlink()
