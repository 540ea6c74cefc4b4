"""The Redis Cluster recipe of docs/scale-out.md, run as written: the documented shell block
builds a 3-master cluster on loopback, two `serve` processes and a worker run on it, and the HTTP
contract holds whichever process a request reaches."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from offer_service_tools.charge_double import ChargeDouble, running_charge_double
from offer_service_tools.demo import CATALOG, demo_orders
from tests.flows import UNLIMITED
from tests.processes import ROOT, ServeProcess
from tests.redis_servers import RELAXED, bindable, free_port, redis_binaries

pytestmark = pytest.mark.timeout(300)

DOC = ROOT / "docs" / "scale-out.md"
HEADING = "### Build a Redis Cluster"
LOAD_REQUESTS = 400
LOAD_THREADS = 8


def documented_blocks() -> list[str]:
    """The section's shell blocks, in order: the cluster's, then the service's."""
    section = DOC.read_text().split(HEADING, 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


def node_ports(count: int = 3) -> list[int]:
    """Free ports whose cluster bus port (port + 10000) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port + 10000 < 65536 and bindable(port + 10000) and port not in ports:
            ports.append(port)
    return ports


def _setting(block: str, name: str, value: str) -> str:
    pattern = re.compile(rf"^{name}=(\"[^\"]*\"|\S+)", flags=re.MULTILINE)
    assert pattern.search(block), f"the documented block sets no {name}"
    return pattern.sub(lambda _: f"{name}={value}", block, count=1)


@dataclasses.dataclass
class Cluster:
    url: str
    ports: list[int]
    data: Path


@contextlib.contextmanager
def documented_cluster(data: Path, nodes: int = 3, replicas: int = 0) -> Iterator[Cluster]:
    """The documented block run on `nodes` free ports in `data` (with `--cluster-replicas`
    `replicas`, as the page says for six nodes); its nodes stopped after."""
    redis_binaries()
    cluster_block, service_block = documented_blocks()
    ports = node_ports(nodes)
    script = _setting(cluster_block, "DATA", str(data))
    script = _setting(script, "PORTS", f'"{" ".join(map(str, ports))}"')
    assert "--cluster-replicas 0" in script
    script = script.replace("--cluster-replicas 0", f"--cluster-replicas {replicas}")
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        documented_url = re.search(r"OFFER_STORE_URL=(\S+)", service_block)
        assert documented_url is not None
        url = documented_url.group(1).replace(":7001", f":{ports[0]}")
        assert url.startswith("redis+cluster://")
        yield Cluster(url, ports, data)
    finally:
        for port in ports:
            pidfile = data / str(port) / "redis.pid"
            if pidfile.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with documented_cluster(tmp_path_factory.mktemp("cluster")) as built:
        yield built


@pytest.fixture(scope="module")
def charges() -> Iterator[ChargeDouble]:
    # The shop's webhook secret is added once the documented command created it.
    yield from running_charge_double([])


def cli(*args: str, store_url: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "offer_service.cli", *args, "--store-url", store_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "OFFER_ALLOW_PRIVATE_CHARGE_URLS": "1"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def shop(cluster: Cluster, charges: ChargeDouble) -> dict[str, str]:
    created = cli(
        "stores",
        "create",
        "--name",
        "Shop",
        "--origin",
        "https://shop.example",
        "--charge-url",
        charges.url,
        store_url=cluster.url + RELAXED,
    )
    keys: dict[str, str] = json.loads(created)
    assert charges.secrets is not None
    charges.secrets.append(keys["webhook_secret"])
    return keys


@pytest.fixture(scope="module")
def instances(
    cluster: Cluster, shop: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    """Two `serve --no-aggregator` processes and the worker that aggregates their events, as the
    service block runs them."""
    _, service_block = documented_blocks()
    assert "--no-aggregator" in service_block and "offer-service worker" in service_block
    directory = tmp_path_factory.mktemp("serve")
    store_url = cluster.url + RELAXED
    log = (directory / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "offer_service.cli", "worker", "--store-url", store_url],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    started: list[ServeProcess] = []
    try:
        for name in ("a", "b"):
            env = {"OFFER_SPOOL_DIR": str(directory / f"spool-{name}")}
            log_path = directory / f"{name}.log"
            started.append(ServeProcess(store_url, log_path, env=env, args=["--no-aggregator"]))
        yield started[0], started[1]
        assert worker.poll() is None, (directory / "worker.log").read_text()
    finally:
        for process in started:
            process.stop()
        worker.terminate()
        worker.wait(timeout=30)
        log.close()


def catalog_json() -> list[dict[str, Any]]:
    return [dataclasses.asdict(product) for product in CATALOG]


def order_json(order: Any) -> dict[str, Any]:
    placed = datetime.fromtimestamp(order.placed_at_ms / 1000, UTC)
    return {
        "id": order.id,
        "placed_at": placed.isoformat().replace("+00:00", "Z"),
        "currency": order.currency,
        "customer_id": order.customer_id,
        "lines": [
            {"product_id": line.product_id, "quantity": line.quantity, "price": line.price}
            for line in order.lines
        ],
    }


def client(process: ServeProcess) -> httpx.Client:
    return process.client(headers={"Origin": "https://shop.example"})


def offers(c: httpx.Client, key: str, surface: str, **params: str) -> list[dict[str, Any]]:
    r = c.get("/v1/offers", params={"key": key, "surface": surface, **params})
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["offers"]
    return found


def test_the_documented_cluster_serves_the_contract_through_two_processes(
    cluster: Cluster,
    shop: dict[str, str],
    instances: tuple[ServeProcess, ServeProcess],
    charges: ChargeDouble,
) -> None:
    first, second = instances
    for port in cluster.ports:
        info = node_cli(port, "cluster", "info")
        assert "cluster_state:ok" in info and "cluster_known_nodes:3" in info
        config = node_cli(port, "config", "get", "appendfsync").split()
        assert config == ["appendfsync", "always"]

    pk, admin = shop["publishable_key"], {"Authorization": f"Bearer {shop['secret_key']}"}
    with client(first) as a, client(second) as b:
        for c in (a, b):
            r = c.get("/readyz")
            assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text
        rules = a.get("/v1/admin/rules", headers=admin).json()
        rules["rate_limits"] = {**rules["rate_limits"], **UNLIMITED}
        assert a.put("/v1/admin/rules", json=rules, headers=admin).status_code == 200
        r = a.put("/v1/admin/catalog", json=catalog_json(), headers=admin)
        assert r.status_code == 200, r.text
        history = [order_json(o) for o in demo_orders(300)]
        r = a.post("/v1/admin/orders", json=history, headers=admin)
        assert r.status_code == 200 and r.json()["imported"] == 300, r.text

        for c in (a, b):
            # A fresh process, or a version change, settles within a second.
            deadline = time.monotonic() + 10
            while not offers(c, pk, "product_page", product_id="cam-x100"):
                assert time.monotonic() < deadline, "no product-page offers"
                time.sleep(0.2)
            assert offers(c, pk, "cart", items="cam-x100,sd-128")
            assert offers(c, pk, "checkout", items="cam-x100")

        order_id = f"so-{uuid.uuid4().hex[:8]}"
        placed = {
            "id": order_id,
            "placed_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "currency": "USD",
            "customer_id": "cust-cluster",
            "lines": [{"product_id": "cam-x100", "quantity": 1, "price": 49900}],
        }
        r = a.post("/v1/admin/orders", json=[placed], headers=admin)
        assert r.status_code == 200, r.text
        token = r.json()["order_tokens"][order_id]
        thank_you = {"order_id": order_id, "order_token": token}
        shown = offers(b, pk, "thank_you", **thank_you)
        assert shown and offers(a, pk, "thank_you", **thank_you)

        # A click counts once per (offer, visitor), after its impression; visitors in the
        # holdout are shown nothing.
        batch: list[dict[str, Any]] = []
        while len(batch) < 14:
            visitor = f"v-{uuid.uuid4().hex[:8]}"
            shown_to = offers(a, pk, "product_page", product_id="coffee-250g", visitor_id=visitor)
            if not shown_to:
                continue
            now = int(time.time() * 1000)
            batch += [
                {
                    "id": uuid.uuid4().hex,
                    "type": kind,
                    "token": shown_to[0]["token"],
                    "ts": now,
                    "visitor_id": visitor,
                }
                for kind in ("impression", "click")
            ]
        before = _clicks(b, admin)
        r = a.post("/v1/events", json={"key": pk, "events": batch})
        assert r.status_code == 202 and r.json()["accepted"] == 14, r.text
        deadline = time.monotonic() + 15
        while _clicks(b, admin) < before + 7:
            assert time.monotonic() < deadline, "the other process's report never counted them"
            time.sleep(0.2)
        assert _clicks(b, admin) == before + 7

        r = b.post(
            "/v1/accept",
            json={"key": pk, "token": shown[0]["token"], "quantity": 1},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert r.status_code == 200, r.text
        assert [c.order_id for c in charges.charges].count(order_id) == 1

    failures = _load(first, second, pk)
    assert failures == []


def _clicks(c: httpx.Client, admin: dict[str, str]) -> int:
    r = c.get("/v1/admin/metrics", headers=admin)
    assert r.status_code == 200, r.text
    clicks: int = r.json()["totals"]["clicks"]
    return clicks


def _load(first: ServeProcess, second: ServeProcess, pk: str) -> list[str]:
    """Offer requests and event batches from threads, alternating processes; what failed."""
    products = [p.id for p in CATALOG[:10]]
    started = time.monotonic()

    def one(i: int) -> str | None:
        process = (first, second)[i % 2]
        with client(process) as c:
            product = products[i % len(products)]
            if i % 5 == 4:
                now = int(time.time() * 1000)
                body = [
                    {"id": uuid.uuid4().hex, "type": "impression", "token": o["token"], "ts": now}
                    for o in offers(c, pk, "product_page", product_id=product)
                ]
                r = c.post("/v1/events", json={"key": pk, "events": body})
                return None if r.status_code == 202 else f"{r.status_code} {r.text}"
            r = c.get("/v1/offers", params={"key": pk, "surface": "cart", "items": product})
            return None if r.status_code == 200 else f"{r.status_code} {r.text}"

    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        answers = list(pool.map(one, range(LOAD_REQUESTS)))
    elapsed = time.monotonic() - started
    print(f"\n{LOAD_REQUESTS} requests over two processes in {elapsed:.1f} s")
    return [a for a in answers if a is not None]


def test_six_documented_nodes_with_a_replica_each_serve_the_service(tmp_path: Path) -> None:
    with documented_cluster(tmp_path / "cluster", nodes=6, replicas=1) as six:
        # Every node agrees on the slots at once; the replicas' roles spread a moment later.
        deadline = time.monotonic() + 20
        while True:
            nodes = cluster_nodes(six.ports[0])
            roles = sorted("master" if "master" in line else "replica" for line in nodes)
            if roles == ["master"] * 3 + ["replica"] * 3:
                break
            assert time.monotonic() < deadline, nodes
            time.sleep(0.2)
        # A replica takes over only once it has synced with its master.
        replicas = [_port(line.split()) for line in nodes if "slave" in line]
        while not all(_synced(q) for q in replicas):
            assert time.monotonic() < deadline + 30, "the replicas did not sync"
            time.sleep(0.2)
        store_url = six.url + RELAXED
        keys = json.loads(cli("stores", "create", "--name", "Six", store_url=store_url))
        process = ServeProcess(store_url, tmp_path / "serve.log")
        try:
            with client(process) as c:
                assert c.get("/readyz").json() == {"status": "ok"}
                admin = {"Authorization": f"Bearer {keys['secret_key']}"}
                r = c.put("/v1/admin/catalog", json=catalog_json(), headers=admin)
                assert r.status_code == 200, r.text
                got = offers(c, keys["publishable_key"], "cart", items="cam-x100")
                assert got and all(o["product_id"] != "cam-x100" for o in got)

                # The master holding the store's slot dies: its replica takes over.
                slot = node_cli(six.ports[0], "cluster", "keyslot", "{" + keys["store_id"] + "}")
                owner = next(
                    line.split()
                    for line in nodes
                    if "master" in line and any(_covers(r, int(slot)) for r in line.split()[8:])
                )
                port = _port(owner)
                pid = int((six.data / str(port) / "redis.pid").read_text().strip())
                os.kill(pid, signal.SIGKILL)
                killed = time.monotonic()
                deadline = killed + 30
                while True:
                    r = c.put("/v1/admin/catalog", json=catalog_json()[:1], headers=admin)
                    if r.status_code == 200:
                        break
                    assert r.status_code == 503, r.text
                    survivor = next(q for q in six.ports if q != port)
                    assert time.monotonic() < deadline, (
                        f"no write within 30 s: {r.text}\n"
                        + "\n".join(cluster_nodes(survivor))
                        + process.log()[-1500:]
                    )
                    time.sleep(0.2)
                print(f"\nwrites answered again {time.monotonic() - killed:.1f} s after the kill")
                assert offers(c, keys["publishable_key"], "cart", items="sd-128")
                assert c.get("/readyz").json() == {"status": "ok"}
        finally:
            process.stop()


def node_cli(port: int, *args: str) -> str:
    """`redis-cli` against one node on loopback; its output."""
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


def cluster_nodes(port: int) -> list[str]:
    return node_cli(port, "cluster", "nodes").splitlines()


def _port(node: list[str]) -> int:
    """The client port of a `cluster nodes` line, split: `<id> <ip>:<port>@<bus> ...`."""
    return int(node[1].split("@")[0].rsplit(":", 1)[1])


def _synced(port: int) -> bool:
    return "master_link_status:up" in node_cli(port, "info", "replication")


def _covers(slots: str, slot: int) -> bool:
    low, _, high = slots.partition("-")
    return low.isdigit() and int(low) <= slot <= int(high or low)
