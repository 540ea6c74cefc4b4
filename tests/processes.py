"""`offer-service serve` as real subprocesses, for the tests that need processes: two servers on
one SQLite file, and a server killed with SIGKILL and restarted on the same file."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from offer_service.decision.experiments import in_holdout
from offer_service.domain.policy import StoreRules, rules_context
from offer_service.storage import open_store
from offer_service_tools.demo import DEMO_STORE_ID, install_demo
from tests.conftest import browser_client, free_port
from tests.flows import UNLIMITED
from tests.redis_servers import RELAXED, running_redis

ROOT = Path(__file__).resolve().parents[1]
# Settings of this environment a server must not inherit: each test says what it wants.
SERVER_SETTINGS = {
    "OFFER_DEMO",
    "OFFER_TRUST_PROXY",
    "OFFER_TRUSTED_PROXIES",
    "OFFER_KEEP_ALIVE_TIMEOUT",
    "OFFER_HEADER_TIMEOUT",
    "OFFER_CONCURRENCY_LIMIT",
    "OFFER_CHARGE_TIMEOUT",
    "OFFER_SETTLE_INTERVAL",
    "OFFER_SETTLE_TIMEOUT",
    "OFFER_DRAIN_SECONDS",
    "OFFER_RETRAIN_ORDERS",
    "FORWARDED_ALLOW_IPS",
}


class ServeProcess:
    """One `python -m offer_service.cli serve` on a loopback port."""

    def __init__(
        self,
        store_url: str,
        log_path: Path,
        port: int | None = None,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        """`env`: environment variables of the server's own (its settings), over this one's;
        `args`: more `serve` flags (`--workers 2`)."""
        self.store_url = store_url
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in stop/kill)
        inherited = {k: v for k, v in os.environ.items() if k not in SERVER_SETTINGS}
        # The tests' charge endpoints listen on loopback.
        private = {"OFFER_ALLOW_PRIVATE_CHARGE_URLS": "1"}
        # Stopped at once unless a test asks for a drain period.
        quick = {"OFFER_DRAIN_SECONDS": "0"}
        env = {**inherited, "PYTHONUNBUFFERED": "1", **private, **quick, **(env or {})}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "offer_service.cli",
                "serve",
                "--port",
                str(self.port),
                "--store-url",
                store_url,
                *args,
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_healthy()

    def _wait_healthy(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"offer-service serve exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"offer-service serve did not become healthy:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def client(self, **kwargs: Any) -> httpx.Client:
        return browser_client(self.url, **kwargs)

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flushing, nothing."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


@contextmanager
def two_instances(store_url: str, directory: Path) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    """Two `serve` processes on one store, each with its log (`a.log`, `b.log`) and its spool
    directory (`spool-a`, `spool-b`) in `directory`, stopped after."""

    def serve(name: str) -> ServeProcess:
        env = {"OFFER_SPOOL_DIR": str(directory / f"spool-{name}")}
        return ServeProcess(store_url, directory / f"{name}.log", env=env)

    first = serve("a")
    try:
        second = serve("b")
    except BaseException:
        first.stop()
        raise
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def prepare_demo_store(store_url: str, **rules: Any) -> None:
    """Install the demo store (pk_demo / sk_demo / whsec_demo) into the file before serving it,
    with `rules` applied over its rules (so every process starts with the same rules)."""

    async def run() -> None:
        store = open_store(store_url)
        await store.open()
        try:
            record = await install_demo(store)
            merged = {**record.rules.model_dump(), **rules}
            if "rate_limits" in merged:
                merged["rate_limits"] = {**merged["rate_limits"], **UNLIMITED}
            merged_rules = StoreRules.model_validate(merged, context=rules_context("private"))
            await store.set_rules(record.id, merged_rules)
        finally:
            await store.close()

    asyncio.run(run())


def demo_store_url(backend: str, directory: Path, **rules: Any) -> Iterator[str]:
    """For a fixture parametrised by backend ("sqlite" or "redis"): the URL of a store holding
    the demo store (`rules` over its rules), a SQLite file in `directory` or a Redis server of
    the fixture's own, stopped after."""
    if backend == "redis":
        with contextmanager(running_redis)(directory / "redis") as server:
            url = server.url + RELAXED
            prepare_demo_store(url, **rules)
            yield url
        return
    url = f"sqlite:///{directory}/offers.db"
    prepare_demo_store(url, **rules)
    yield url


def new_shopper(prefix: str) -> str:
    """A demo-store visitor id never seen before, outside the holdout (which gets no offers)."""
    while True:
        visitor = f"{prefix}-{uuid.uuid4().hex[:12]}"
        if not in_holdout(DEMO_STORE_ID, visitor, 0.5):
            return visitor
