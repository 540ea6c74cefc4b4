"""A serving process's memory under a million distinct visitors, at the default cache limits.

One `offer-service serve` on a Redis of its own with the demo store; `wrk` (pinned to the other
core) asks for offers as fast as it can, every request from a new visitor id and a new client
address (X-Forwarded-For, `OFFER_TRUST_PROXY=1`), half of them product pages of random products,
half carts of four products whose contents keep changing (`visitors.lua`, which
tests/web/test_memory_plateau.py runs too). The process's resident size is read every 10 s:
once the bounded tables are full it stops growing (docs/memory.md).

    python load_tests/visitor_flood.py                   # 480 s
    python load_tests/visitor_flood.py --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

from memory import redis_server, rss, serving  # noqa: E402

from offer_service.storage import open_store  # noqa: E402
from offer_service_tools.demo import CATALOG, DEMO_PUBLISHABLE_KEY, install_demo  # noqa: E402

MIB = 2**20
SAMPLE_EVERY_S = 10

# A new visitor and address per request, new carts all the time (its header says how).
WRK_SCRIPT = HERE / "visitors.lua"


async def install(url: str) -> None:
    store = open_store(url)
    await store.open()
    try:
        await install_demo(store)
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=480)
    args = parser.parse_args()
    ids = ",".join(p.id for p in CATALOG if p.active and not p.is_fee)
    with tempfile.TemporaryDirectory() as scratch, redis_server(Path(scratch)) as url:
        asyncio.run(install(url))
        samples: list[tuple[float, float]] = []
        done = threading.Event()
        served_settings = {"OFFER_TRUST_PROXY": "1"}  # every other limit at its default
        with serving(url, Path(scratch), served_settings) as served:

            def sample() -> None:
                started = time.monotonic()
                while not done.is_set():
                    samples.append((time.monotonic() - started, rss(served.pid) / MIB))
                    done.wait(SAMPLE_EVERY_S)

            sampler = threading.Thread(target=sample)
            sampler.start()
            wrk = ["wrk", "-t2", "-c32", "-d", f"{args.seconds}s", "-s", str(WRK_SCRIPT)]
            wrk += [served.url + "/", "--", DEMO_PUBLISHABLE_KEY, ids]
            out = subprocess.run(["taskset", "-c", "1", *wrk], capture_output=True, text=True)
            done.set()
            sampler.join()
    print(out.stdout)
    for at, mib in samples:
        print(f"{at:6.0f} s  {mib:7.1f} MiB")


if __name__ == "__main__":
    main()
