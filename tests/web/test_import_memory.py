"""A large import costs the serving process the same memory whatever the body's size."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from offer_service.domain.signatures import inbound_signature
from offer_service_tools.demo import DEMO_SECRET_KEY, DEMO_STORE_ID, DEMO_WEBHOOK_SECRET
from tests.processes import ServeProcess, prepare_demo_store

MIB = 2**20
SMALL_MIB = 8
LARGE_MIB = 4 * SMALL_MIB
PAD_LINE = b" " * 1023 + b"\n"  # a blank CSV line: read, then skipped


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServeProcess]:
    url = f"sqlite:///{tmp_path}/offers.db"
    prepare_demo_store(url)
    process = ServeProcess(url, tmp_path / "serve.log")
    try:
        yield process
    finally:
        process.stop()


def peak_rss(pid: int) -> int:
    """The process's resident high-water mark in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def csv_body(mib: int) -> Iterator[bytes]:
    """A catalog CSV of `mib` MiB: two products, then blank lines (cheap to parse, so the
    test measures the body's cost rather than the products')."""
    yield b"id,title,price\nm1,Memory one,100\nm2,Memory two,200\n"
    chunk = PAD_LINE * 1024
    for _ in range(mib):
        yield chunk


def json_body(mib: int) -> bytes:
    """A catalog JSON list of `mib` MiB: one product after a run of whitespace."""
    return b"[" + b" " * (mib * MIB) + b'{"id": "j1", "title": "Json one", "price": 100}]'


def put_csv(service: ServeProcess, mib: int) -> httpx.Response:
    headers = {"Authorization": f"Bearer {DEMO_SECRET_KEY}", "Content-Type": "text/csv"}
    with service.client() as c:
        return c.put("/v1/admin/catalog", content=csv_body(mib), headers=headers, timeout=300)


def put_signed_json(service: ServeProcess, mib: int) -> httpx.Response:
    body = json_body(mib)
    path = "/v1/admin/catalog"
    signed = inbound_signature(DEMO_WEBHOOK_SECRET, "PUT", path, body, int(time.time()))
    headers = {
        "X-Offer-Signature": signed,
        "X-Offer-Store": DEMO_STORE_ID,
        "Content-Type": "application/json",
    }
    del body  # the client's copy: only the server's memory is measured
    with service.client() as c:
        return c.put(path, content=json_body(mib), headers=headers, timeout=300)


@pytest.mark.parametrize(
    ("put", "upserted"), [(put_csv, 2), (put_signed_json, 1)], ids=["csv", "signed-json"]
)
def test_a_catalog_four_times_larger_costs_the_server_no_more_memory(
    service: ServeProcess, put: Callable[[ServeProcess, int], httpx.Response], upserted: int
) -> None:
    assert put(service, 1).status_code == 200  # warm: first-import allocations
    base = peak_rss(service.proc.pid)

    small = put(service, SMALL_MIB)
    after_small = peak_rss(service.proc.pid)
    large = put(service, LARGE_MIB)
    after_large = peak_rss(service.proc.pid)

    answer = {"upserted": upserted, "rejected": [], "rejected_total": 0}
    assert small.json() == large.json() == answer
    # Buffered, a body costs the server its size at least once, twice while it is joined:
    # 64 MiB for the large one. Spooled to a file, it costs a few MiB whatever its size.
    growth = after_large - base
    assert growth < LARGE_MIB * MIB / 4, f"the server grew {growth / MIB:.0f} MiB"
    assert after_large - after_small < SMALL_MIB * MIB / 2
