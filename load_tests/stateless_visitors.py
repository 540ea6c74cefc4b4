"""Offers throughput and server CPU per request for visitors without state, index off vs on.

One `offer-service serve` (one worker, pinned to `--server-cpu`) on the demo store, with 20,000
visitors given an impression each; wrk pinned to `--client-cpu` asks for product pages as fast
as it can, in two shapes: every request a visitor id drawn out of a million and a random demo
product (storefront traffic: most visitors unseen, most without state), and one visitor on one
product (the best case). Each shape runs with the visitor index off (OFFER_VISITOR_INDEX_SECONDS
=0: every unheld visitor read from the store) and on, alternating over `--rounds` rounds (off on,
on off, ...), on SQLite and on Redis; the medians are printed (docs/performance.md).

    python load_tests/stateless_visitors.py
    python load_tests/stateless_visitors.py --backends sqlite --rounds 5 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

from memory import free_port, impression, redis_server  # noqa: E402

from offer_service.domain.policy import RateLimits  # noqa: E402
from offer_service.storage import open_store  # noqa: E402
from offer_service_tools.demo import CATALOG, install_demo  # noqa: E402

SEEDED = 20_000  # visitors "v1".."v20000" have an impression each
# Each request a visitor out of a million and a random product.
FRESH = """
local ids = {%s}
math.randomseed(os.time())
request = function()
  local path = "/v1/offers?key=pk_demo&surface=product_page&product_id=" ..
    ids[math.random(#ids)] .. "&visitor_id=v" .. math.random(1, 1000000)
  return wrk.format("GET", path)
end
"""
ONE = "/v1/offers?key=pk_demo&surface=product_page&product_id=cam-x100&visitor_id=v0"
TICKS = os.sysconf("SC_CLK_TCK")


async def install(url: str) -> None:
    """The demo store without rate limits (one client asks for everything), and the seeded
    visitors' impressions."""
    store = open_store(url)
    await store.open()
    try:
        record = await install_demo(store)
        lifted = record.rules.model_copy(update={"rate_limits": RateLimits.lifted()})
        await store.set_rules(record.id, lifted)
        now = int(time.time() * 1000)
        for start in range(1, SEEDED + 1, 1000):
            batch = [impression(f"v{n}", now) for n in range(start, start + 1000)]
            await store.record_events(record.id, batch, now - 86_400_000)
    finally:
        await store.close()


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


@contextlib.contextmanager
def serving(url: str, workdir: Path, cpu: int, index: bool) -> Iterator[tuple[int, str]]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OFFER_DRAIN_SECONDS": "0",
        "OFFER_SPOOL_DIR": str(workdir / "spool"),
        "OFFER_VISITOR_INDEX_SECONDS": "600" if index else "0",
    }
    command = ["taskset", "-c", str(cpu), sys.executable, "-m", "offer_service.cli", "serve"]
    with open(workdir / "serve.log", "ab") as log:
        proc = subprocess.Popen(
            [*command, "--port", str(port), "--store-url", url], env=env, stdout=log, stderr=log
        )
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base, timeout=5) as client:
                for _ in range(300):
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get("/healthz").status_code == 200:
                            break
                    time.sleep(0.1)
            yield proc.pid, base
        finally:
            proc.terminate()
            proc.wait()


def wrk(cpu: int, base: str, script: Path | None, seconds: int) -> tuple[float, int]:
    """req/s and requests of one wrk run (non-2xx answers fail the run)."""
    target = base + (ONE if script is None else "/")
    args = ["taskset", "-c", str(cpu), "wrk", "-t1", "-c32", "-d", f"{seconds}s"]
    if script is not None:
        args += ["-s", str(script)]
    out = subprocess.run([*args, target], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    count = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return rate, count


def measure(
    url: str, workdir: Path, args: argparse.Namespace, index: bool, script: Path | None
) -> tuple[float, float]:
    """(req/s, server CPU ms per request) of one round."""
    with serving(url, workdir, args.server_cpu, index) as (pid, base):
        wrk(args.client_cpu, base, script, 3)  # warm: prepared lists, the index loaded
        before = cpu_s(pid)
        rate, count = wrk(args.client_cpu, base, script, args.seconds)
        return rate, (cpu_s(pid) - before) * 1000 / count


def run(backend: str, url: str, workdir: Path, args: argparse.Namespace) -> None:
    asyncio.run(install(url))
    ids = ",".join(f'"{p.id}"' for p in CATALOG if p.active and not p.is_fee)
    script = workdir / "fresh.lua"
    script.write_text(FRESH % ids)
    for name, shape in (("fresh visitor, random product", script), ("one visitor", None)):
        got: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for r in range(args.rounds):
            for index in (False, True) if r % 2 == 0 else (True, False):
                got[index].append(measure(url, workdir, args, index, shape))
        off, on = (
            (statistics.median(x for x, _ in got[i]), statistics.median(c for _, c in got[i]))
            for i in (False, True)
        )
        print(
            f"{backend:7} {name:30} index off {off[0]:7.0f} req/s {off[1]:5.3f} ms CPU/req | "
            f"on {on[0]:7.0f} req/s {on[1]:5.3f} ms CPU/req | {on[0] / off[0]:4.2f}x",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,redis")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args()
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as scratch:
            workdir = Path(scratch)
            if backend == "redis":
                with redis_server(workdir) as url:
                    run(backend, url, workdir, args)
            else:
                run(backend, f"sqlite:///{workdir}/offers.db", workdir, args)


if __name__ == "__main__":
    main()
