"""deploy/haproxy.cfg, run as shipped (addresses replaced) in front of two real `serve`
processes: requests are spread over both, and a process stopped with SIGTERM under load is taken
out before it closes its listener, with no request failed."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import browser_client, free_port
from tests.flows import PK
from tests.processes import ROOT, ServeProcess, prepare_demo_store
from tests.redis_servers import RELAXED, RedisServer

pytestmark = pytest.mark.timeout(180)

CONFIG = ROOT / "deploy" / "haproxy.cfg"
SHIPPED_SERVERS = ("10.0.0.1:8000", "10.0.0.2:8000")
SHIPPED_BIND = "bind :8080"
CLIENTS = 4


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    return found


def test_the_shipped_config_is_valid() -> None:
    done = subprocess.run(
        [haproxy_binary(), "-c", "-f", str(CONFIG)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def configured(targets: list[str], port: int) -> str:
    text = CONFIG.read_text()
    assert SHIPPED_BIND in text and all(s in text for s in SHIPPED_SERVERS)
    for shipped, target in zip(SHIPPED_SERVERS, targets, strict=True):
        text = text.replace(shipped, target)
    return text.replace(SHIPPED_BIND, f"bind 127.0.0.1:{port}")


@contextmanager
def serving(url: str, directory: Path) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    started: list[ServeProcess] = []
    try:
        for name in ("a", "b"):
            # The default drain period, as the config's check interval assumes.
            env = {"OFFER_DRAIN_SECONDS": "5", "OFFER_SPOOL_DIR": str(directory / f"spool-{name}")}
            started.append(ServeProcess(url, directory / f"{name}.log", env=env))
        yield started[0], started[1]
    finally:
        for process in started:
            process.stop()


@contextmanager
def balancing(instances: tuple[ServeProcess, ServeProcess], directory: Path) -> Iterator[str]:
    """haproxy with the shipped config in front of `instances`; its URL."""
    binary = haproxy_binary()
    port = free_port()
    config = directory / "haproxy.cfg"
    config.write_text(configured([f"127.0.0.1:{p.port}" for p in instances], port))
    log = (directory / "haproxy.log").open("wb")
    proc = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (directory / "haproxy.log").read_text()
            assert time.monotonic() < deadline, "haproxy did not answer"
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[tuple[str, ServeProcess, ServeProcess]]:
    haproxy_binary()
    url = f"sqlite:///{tmp_path / 'offers.db'}"
    prepare_demo_store(url)
    with serving(url, tmp_path) as (first, second), balancing((first, second), tmp_path) as lb:
        yield lb, first, second


def spread(url: str, requests: int = 100) -> Counter[str]:
    """Which instance answered each of `requests` product pages through the balancer."""
    served: Counter[str] = Counter()
    with browser_client(url) as c:
        for _ in range(requests):
            r = product_page(c)
            assert r.status_code == 200, r.text
            served[r.headers["X-Offer-Instance"]] += 1
    return served


def product_page(client: httpx.Client) -> httpx.Response:
    return client.get(
        "/v1/offers", params={"key": PK, "surface": "product_page", "product_id": "cam-x100"}
    )


def test_requests_are_spread_over_both_instances(
    balancer: tuple[str, ServeProcess, ServeProcess],
) -> None:
    url, _, _ = balancer
    served = spread(url)
    print(f"\n100 requests: {dict(served)}")
    assert set(served) == {"offer-a", "offer-b"}
    assert min(served.values()) >= 40


def test_a_sigtermed_instance_is_taken_out_with_no_failed_request(
    balancer: tuple[str, ServeProcess, ServeProcess],
) -> None:
    url, _, second = balancer
    stop = threading.Event()
    served: list[tuple[float, str]] = []
    failures: list[str] = []
    lock = threading.Lock()

    def shop() -> None:
        with browser_client(url) as c:
            while not stop.is_set():
                try:
                    r = product_page(c)
                except httpx.HTTPError as exc:
                    with lock:
                        failures.append(repr(exc))
                    continue
                with lock:
                    if r.status_code == 200:
                        served.append((time.monotonic(), r.headers["X-Offer-Instance"]))
                    else:
                        failures.append(f"{r.status_code} {r.text}")

    clients = [threading.Thread(target=shop) for _ in range(CLIENTS)]
    for thread in clients:
        thread.start()
    try:
        time.sleep(1.0)
        signalled = time.monotonic()
        second.proc.terminate()
        second.proc.wait(timeout=30)
        exited = time.monotonic()
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=30)

    last_b = max(t for t, name in served if name == "offer-b")
    after = [name for t, name in served if t > exited]
    print(
        f"\n{len(served)} requests, {len(failures)} failed; offer-b exited "
        f"{exited - signalled:.2f} s after SIGTERM, served its last request "
        f"{last_b - signalled:.2f} s after it"
    )
    assert second.proc.returncode == 0
    assert failures == []
    assert after and set(after) == {"offer-a"}


def test_a_redis_outage_takes_no_instance_out(tmp_path: Path) -> None:
    # Every instance's /readyz is 503 store_unavailable, yet each serves offers from its cache.
    haproxy_binary()
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        url = redis.url + RELAXED
        prepare_demo_store(url)
        with serving(url, tmp_path) as (first, second), balancing((first, second), tmp_path) as lb:
            assert set(spread(lb, 20)) == {"offer-a", "offer-b"}  # both have the list cached
            redis.stop()
            for instance in (first, second):
                r = httpx.get(f"{instance.url}/readyz", timeout=5)
                assert r.status_code == 503 and "draining" not in r.text, r.text
            time.sleep(3.5)  # three check intervals: two failures would have taken one out
            served = spread(lb)
            print(f"\nwith Redis down, 100 requests: {dict(served)}")
            assert set(served) == {"offer-a", "offer-b"}
    finally:
        redis.stop()
