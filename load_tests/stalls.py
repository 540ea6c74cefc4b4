"""The serving app with a stall recorder: where the event loop stops answering, and for how long.

`uvicorn stalls:create_app --factory` (from load_tests/) serves the app `offer-service serve`
serves (on uvicorn's own HTTP protocol, not the service's), and records every event-loop stall
longer than `OFFER_STALL_MS` (default 5 ms): a heartbeat runs on the loop every millisecond, and
a watchdog thread, seeing it late, samples the loop thread's Python stack every millisecond
until it beats again. Garbage collections are timed through `gc.callbacks`. On SIGUSR1 the
process writes the JSON file `OFFER_STALL_LOG`: each stall's start, wall and CPU time and stacks
(the deepest frames last), each collection's generation, wall and CPU time, and the tracked
objects by type.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from typing import Any

from starlette.applications import Starlette

from offer_service.cli import serving_app

BEAT_S = 0.001
SAMPLE_S = 0.001
STACK_DEPTH = 14


class Recorder:
    """Stalls of one event loop and the collections that ran meanwhile."""

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold_s: float, path: str) -> None:
        self.loop = loop
        self.threshold_s = threshold_s
        self.path = path
        self.last_beat = time.perf_counter()
        self.loop_thread = threading.get_ident()
        self.stalls: list[dict[str, Any]] = []
        # (start, generation, wall s, CPU s, objects collected)
        self.collections: list[tuple[float, int, float, float, int]] = []
        self._gc_start = self._gc_cpu = 0.0
        self.started = time.perf_counter()
        self.cpu_clock = time.pthread_getcpuclockid(self.loop_thread)
        loop.call_soon(self._beat)
        loop.add_signal_handler(signal.SIGUSR1, self.census)
        gc.callbacks.append(self._gc)
        threading.Thread(target=self._watch, name="stall-watchdog", daemon=True).start()

    def _beat(self) -> None:
        self.last_beat = time.perf_counter()
        self.loop.call_later(BEAT_S, self._beat)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if threading.get_ident() != self.loop_thread:
            return
        now = time.perf_counter()
        if phase == "start":
            self._gc_start, self._gc_cpu = now, time.thread_time()
        else:
            self.collections.append(
                (
                    self._gc_start - self.started,
                    info["generation"],
                    now - self._gc_start,
                    time.thread_time() - self._gc_cpu,
                    info["collected"],
                )
            )

    def _stack(self) -> str:
        frame = sys._current_frames().get(self.loop_thread)
        if frame is None:
            return "?"
        frames = traceback.extract_stack(frame)[-STACK_DEPTH:]
        return ";".join(f"{f.name} ({os.path.basename(f.filename)}:{f.lineno})" for f in frames)

    def _watch(self) -> None:
        while True:
            time.sleep(SAMPLE_S)
            now = time.perf_counter()
            beat = self.last_beat
            if now - beat > self.threshold_s:
                cpu0 = time.clock_gettime(self.cpu_clock)
                samples: Counter[str] = Counter()
                while self.last_beat == beat and time.perf_counter() - beat < 5.0:
                    samples[self._stack()] += 1
                    time.sleep(SAMPLE_S)
                self.stalls.append(
                    {
                        "at_s": round(beat - self.started, 3),
                        "ms": round((self.last_beat - beat) * 1000, 2),
                        # The loop thread's CPU time over the stall (from when it was seen):
                        # far below the wall time, the thread was waiting or not scheduled.
                        "cpu_ms": round((time.clock_gettime(self.cpu_clock) - cpu0) * 1000, 2),
                        "stacks": samples.most_common(5),
                    }
                )

    def census(self) -> None:
        """On SIGUSR1: the objects the collector tracks, by type (a full collection walks
        them all), and the stalls so far (written then, not while recording: writing holds the
        interpreter lock)."""
        counts = Counter(type(o).__qualname__ for o in gc.get_objects())
        with open(self.path + ".census", "w") as f:
            json.dump({"total": sum(counts.values()), "types": counts.most_common(40)}, f, indent=1)
        self.dump()

    def dump(self) -> None:
        data = {
            "stalls": self.stalls,
            "collections": [
                {
                    "at_s": round(at, 3),
                    "generation": g,
                    "ms": round(wall * 1000, 3),
                    "cpu_ms": round(cpu * 1000, 3),
                    "collected": n,
                }
                for at, g, wall, cpu, n in self.collections
                if wall * 1000 >= 1.0 or g == 2
            ],
            "collections_total": Counter(c[1] for c in self.collections),
        }
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, self.path)


def create_app() -> Starlette:
    app = serving_app()
    threshold_s = float(os.environ.get("OFFER_STALL_MS", "5")) / 1000
    path = os.environ.get("OFFER_STALL_LOG", f"stalls-{os.getpid()}.json")
    Recorder(asyncio.get_running_loop(), threshold_s, path)
    return app
