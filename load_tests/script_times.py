"""The longest Redis calls the aggregator makes on a backlog of events.

A Redis runs one command (a Lua script is one) at a time: while the aggregator's call runs, every
request-path read waits behind it, and a read waits at most 100 ms. This records `--events`
impressions while no aggregator runs (a worker that was down), then counts them as the
aggregator does and trims the stream, on a server of its own with every command in its SLOWLOG,
and prints the median, p99 and longest call of each command or script.

    python load_tests/script_times.py --events 100000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import redis  # noqa: E402
from memory import impression, redis_cli, redis_server  # noqa: E402

from offer_service.storage.redis.scripts import Script  # noqa: E402
from offer_service.storage.redis.scripts import events as event_scripts  # noqa: E402
from offer_service.storage.redis.store import RedisStore  # noqa: E402
from offer_service.types import now_ms  # noqa: E402

RECORD_BATCH = 200
# Per command or script: (median, p99, longest) ms and calls.
Figures = dict[str, tuple[float, float, float, int]]
SLOWLOG_MAX = 1_000_000


def script_names() -> dict[str, str]:
    return {s.sha: s.name for s in vars(event_scripts).values() if isinstance(s, Script)}


def longest_calls(url: str) -> Figures:
    """Per command, scripts by name, from the SLOWLOG: (median, p99, longest) ms and calls."""
    names = script_names()
    times: dict[str, list[float]] = defaultdict(list)
    with redis.Redis.from_url(url) as client:
        for entry in client.slowlog_get(SLOWLOG_MAX):
            words = entry["command"].split(b" ", 1)
            name = words[0].decode().lower()
            if name == "evalsha":
                name = names.get(words[1].split(b" ", 1)[0].decode(), "script")
            elif name == "eval":
                # SLOWLOG keeps 128 characters of an argument: a source is cut short.
                head = words[1].decode(errors="replace")[:60]
                name = next(
                    (n for k, n in names.items() if k.startswith(head)), "eval (first call)"
                )
            if name != "slowlog":
                times[name].append(entry["duration"] / 1000)
    figures = {}
    for name, ms in times.items():
        ms.sort()
        figures[name] = (ms[len(ms) // 2], ms[int(len(ms) * 0.99)], ms[-1], len(ms))
    return figures


def slowlog_reset(port: int) -> None:
    redis_cli(port, "config", "set", "slowlog-log-slower-than", "0")
    redis_cli(port, "config", "set", "slowlog-max-len", str(SLOWLOG_MAX))
    redis_cli(port, "slowlog", "reset")


async def measure(url: str, port: int, events: int) -> tuple[Figures, Figures]:
    """The longest calls while recording the backlog, and while aggregating it."""
    store = RedisStore.from_url(url + "?write_timeout_ms=60000")
    await store.open()
    try:
        record = await store.create_store("Backlog")
        at = now_ms()
        slowlog_reset(port)
        for start in range(0, events, RECORD_BATCH):
            end = min(events, start + RECORD_BATCH)
            batch = [impression(f"v{n % 5000}", at) for n in range(start, end)]
            await store.record_events(record.id, batch, at - 86_400_000)
        recording = longest_calls(url)
        slowlog_reset(port)
        started = time.monotonic()
        # Counted first, then trimmed at once: the trim's worst case (the aggregator trims
        # every few seconds, a worker that was down finds the whole backlog to trim).
        counted = await store.aggregate(record.id, "catching-up")
        trimmed = await store.trim_events(record.id)
        print(
            f"counted {counted} events in {time.monotonic() - started:.1f} s, "
            f"{trimmed} stream entries trimmed",
            flush=True,
        )
        aggregating = longest_calls(url)
        counters = await store.event_counters(record.id)
        assert sum(counters.values()) == events, counters
        return recording, aggregating
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory, redis_server(Path(directory)) as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        phases = asyncio.run(measure(url, port, args.events))
    for title, figures in zip(("recording", "aggregating"), phases, strict=True):
        print(f"\n{title}: longest calls, ms (the machine's own noise included)")
        print(f"  {'command or script':<20} {'median':>8} {'p99':>8} {'longest':>8} {'calls':>8}")
        for name, (p50, p99, top, calls) in sorted(figures.items(), key=lambda kv: -kv[1][2])[:10]:
            print(f"  {name:<20} {p50:>8.2f} {p99:>8.2f} {top:>8.1f} {calls:>8}")


if __name__ == "__main__":
    main()
