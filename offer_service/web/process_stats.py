"""The standard `process_*` and `python_gc_*` samples of this process (Linux /proc where read)."""

from __future__ import annotations

import gc
import os
import resource
import time
from typing import Any

from offer_service.web.exposition import Samples

_PAGE = resource.getpagesize()
_TICKS = os.sysconf("SC_CLK_TCK")


class GcPauses:
    """Time spent in each generation's collections, timed by a gc callback (installed once)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._started


_pauses: GcPauses | None = None


def gc_pauses() -> GcPauses:
    global _pauses
    if _pauses is None:
        _pauses = GcPauses()
        gc.callbacks.append(_pauses)
    return _pauses


def _start_time() -> float:
    """When this process started, from /proc (the boot time plus its start in clock ticks)."""
    with open("/proc/self/stat", "rb") as f:
        started_ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
    with open("/proc/stat", "rb") as f:
        boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
    return boot + started_ticks / _TICKS


def add_process(samples: Samples, worker: str) -> None:
    """This process's CPU, memory, descriptors and garbage collections, labelled by worker:
    each is one process's own (counters among them: sum them in the query if wanted)."""
    t = os.times()
    samples.gauge("process_cpu_seconds_total", t.user + t.system, worker=worker)
    try:
        with open("/proc/self/statm", "rb") as f:
            virtual, resident = (int(x) * _PAGE for x in f.read().split()[:2])
        samples.gauge("process_resident_memory_bytes", resident, worker=worker)
        samples.gauge("process_virtual_memory_bytes", virtual, worker=worker)
        samples.gauge("process_open_fds", len(os.listdir("/proc/self/fd")), worker=worker)
        samples.gauge("process_start_time_seconds", _start_time(), worker=worker)
    except OSError:
        pass  # not Linux: the CPU and GC samples still hold
    pauses = gc_pauses().seconds
    for generation, stats in enumerate(gc.get_stats()):
        for family, value in (
            ("python_gc_collections_total", stats["collections"]),
            ("python_gc_objects_collected_total", stats["collected"]),
            ("python_gc_pause_seconds_total", pauses[generation]),
        ):
            samples.gauge(family, value, worker=worker, generation=generation)
