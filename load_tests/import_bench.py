"""A large catalog import against another store's offers: p99 while it runs, over p99 idle.

One `offer-service serve` on a SQLite file with two stores: the demo store (B), asked for cart
offers back to back by one client, and an empty store (A), sent a catalog CSV of `--mib` MiB
(Online Retail products repeated under new ids, written once to `--workdir`, never into the
repository) by curl. B's p99 is measured idle before the import, while it runs, and idle after;
the figure is the ratio of the p99 during the import to the p99 of both idle windows, measured
in the same run (target <= 2x for 256 MiB), with the resident high-water marks of the server and
of any import process it starts (sampled from /proc).

    python load_tests/import_bench.py                      # 256 MiB
    python load_tests/import_bench.py --mib 32 --code DIR  # another checkout's server
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import httpx  # noqa: E402
from bench import free_port  # noqa: E402
from workload import DEFAULT_DATASET  # noqa: E402

MIB = 2**20
OFFERS = {"key": "pk_demo", "surface": "cart", "items": "cam-x100"}
UNLIMITED = {
    "browser_per_second": 1_000_000,
    "browser_burst": 1_000_000,
    "admin_per_second": 1_000_000,
    "admin_burst": 1_000_000,
}


def write_catalog(path: Path, mib: int, dataset: Path) -> int:
    """A catalog CSV of as many whole rows as fit in `mib` MiB (the import limit is 256 MiB):
    the data set's products again and again, each copy under new ids. Returns the number of
    products."""
    from offer_service.importers import read_online_retail

    products = read_online_retail(dataset).products
    room = mib * MIB
    rows = 0
    with path.open("wb") as out:
        header = b"id,title,price,url,category\n"
        out.write(header)
        room -= len(header)
        for copy in itertools.count():
            for p in products:
                title = p.title.replace('"', "")
                line = f'{p.id}-{copy},"{title}",{p.price},{p.url}-{copy},retail\n'.encode()
                if len(line) > room:
                    return rows
                out.write(line)
                room -= len(line)
                rows += 1
    return rows


def prepare_stores(store_url: str) -> str:
    """The demo store (B) with no rate limits, and an empty store (A): A's secret key."""
    from offer_service.domain.policy import StoreRules, rules_context
    from offer_service.storage import open_store
    from offer_service_tools.demo import install_demo

    async def run() -> str:
        store = open_store(store_url)
        await store.open()
        try:
            demo = await install_demo(store)
            rules = demo.rules.model_dump()
            rules["rate_limits"] = {**rules["rate_limits"], **UNLIMITED}
            context = rules_context("private")
            await store.set_rules(demo.id, StoreRules.model_validate(rules, context=context))
            limits = {"rate_limits": UNLIMITED}
            importer = await store.create_store(
                "Import A", rules=StoreRules.model_validate(limits, context=context)
            )
            return importer.secret_key
        finally:
            await store.close()

    return asyncio.run(run())


def status_kb(pid: int, name: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


@dataclass
class Sampler:
    """B's offers back to back, each latency stamped with the phase it ran in; and the
    largest resident size seen of the server's child processes."""

    url: str
    server_pid: int
    phase: str = "idle-before"
    latencies: dict[str, list[float]] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    child_peak_kb: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run_offers(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.is_set():
                phase = self.phase
                asked = time.perf_counter()
                status = client.get("/v1/offers", params=OFFERS).status_code
                took = time.perf_counter() - asked
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if phase == self.phase:  # a request across a phase change counts in neither
                    self.latencies.setdefault(phase, []).append(took)

    def run_memory(self) -> None:
        while not self.stop.wait(0.2):
            for child in children(self.server_pid):
                self.child_peak_kb = max(self.child_peak_kb, status_kb(child, "VmHWM"))


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 100 else max(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="size of the catalog CSV")
    parser.add_argument("--idle-s", type=float, default=30.0, help="each idle window")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "import_bench"
    )
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout the server runs")
    args = parser.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    catalog = args.workdir / f"catalog-{args.mib}mib-v2.csv"
    if not catalog.exists():
        rows = write_catalog(catalog, args.mib, args.dataset)
        print(f"wrote {catalog} ({rows:,} products)", flush=True)
    run_dir = Path(tempfile.mkdtemp(dir=args.workdir))
    store_url = f"sqlite:///{run_dir}/offers.db"
    secret_key = prepare_stores(store_url)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(args.code.resolve())}
    log = (run_dir / "serve.log").open("ab")
    command = [sys.executable, "-m", "offer_service.cli", "serve", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--store-url", store_url], cwd=args.code, env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start; see {run_dir / 'serve.log'}")
            time.sleep(0.1)
        sampler = Sampler(url, server.pid)
        threads = [
            threading.Thread(target=sampler.run_offers),
            threading.Thread(target=sampler.run_memory),
        ]
        for thread in threads:
            thread.start()
        time.sleep(args.idle_s)
        rss_before_kb = status_kb(server.pid, "VmRSS")
        sampler.phase = "import"
        started = time.monotonic()
        upload = subprocess.run(
            [
                "curl",
                "-sS",
                "-T",  # a PUT read from the file as it is sent, not loaded first
                str(catalog),
                "-H",
                f"Authorization: Bearer {secret_key}",
                "-H",
                "Content-Type: text/csv",
                f"{url}/v1/admin/catalog",
            ],
            capture_output=True,
            check=False,
        )
        took = time.monotonic() - started
        sampler.phase = "idle-after"
        time.sleep(args.idle_s)
        sampler.stop.set()
        for thread in threads:
            thread.join()
        server_peak_kb = status_kb(server.pid, "VmHWM")
    finally:
        server.terminate()
        server.wait(30)
        log.close()

    answer = upload.stdout[:300].decode(errors="replace")
    if '"upserted"' not in answer:
        print(f"the import failed: {answer} {upload.stderr.decode(errors='replace')}")
        return 1
    idle = sampler.latencies.get("idle-before", []) + sampler.latencies.get("idle-after", [])
    during = sampler.latencies.get("import", [])
    size_mib = catalog.stat().st_size / MIB
    print(f"import of {size_mib:.0f} MiB: {took:.1f} s, answer {answer}")
    print(f"offers statuses: {sampler.statuses}")
    for name, values in (("idle", idle), ("during import", during)):
        print(
            f"B offers {name}: n={len(values)} p50={statistics.median(values) * 1000:.2f} ms "
            f"p99={p99(values) * 1000:.2f} ms max={max(values) * 1000:.1f} ms"
        )
    print(f"p99 during import / idle p99: {p99(during) / p99(idle):.2f}x (target <= 2x)")
    print(
        f"server resident: {rss_before_kb / 1024:.0f} MB before the import, peak "
        f"{server_peak_kb / 1024:.0f} MB; import process peak {sampler.child_peak_kb / 1024:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
