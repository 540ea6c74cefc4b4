"""Shared fixtures: the data sets, a real uvicorn server in a thread, and stores in it."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from offer_service.app import create_app
from offer_service.domain.records import StoreRecord
from offer_service.settings import Settings
from offer_service.storage import open_store

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
# Test clients present themselves as a shopper's browser: httpx's own User-Agent is a known bot
# (traffic.py), whose events the measurement report leaves out.
BROWSER_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


def browser_client(base_url: str, **kwargs: object) -> httpx.Client:
    headers = {"User-Agent": BROWSER_UA, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.Client(base_url=base_url, timeout=30, headers=headers, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def datasets() -> Path:
    if not DATASETS.is_dir():
        pytest.skip(f"the shared data sets are not present at {DATASETS}")
    return DATASETS


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class LiveServer:
    url: str
    store_url: str

    def client(self, **kwargs: object) -> httpx.Client:
        return browser_client(self.url, **kwargs)

    def create_store(self, name: str = "Test store", **kwargs: object) -> StoreRecord:
        """Create a tenant directly in the server's store file (as `stores create` does)."""

        async def run() -> StoreRecord:
            store = open_store(self.store_url)
            await store.open()
            try:
                return await store.create_store(name, **kwargs)  # type: ignore[arg-type]
            finally:
                await store.close()

        return asyncio.run(run())


def run_server(settings: Settings) -> Iterator[LiveServer]:
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", settings.store_url)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    """A real uvicorn server on a fresh SQLite file."""
    yield from run_server(
        Settings(store_url=f"sqlite:///{tmp_path}/offers.db", allow_private_charge_urls=True)
    )


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A real uvicorn server with the demo store installed."""
    yield from run_server(
        Settings(
            store_url=f"sqlite:///{tmp_path}/offers.db", demo=True, allow_private_charge_urls=True
        )
    )
