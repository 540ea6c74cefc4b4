"""The charge endpoint cannot be aimed at the service's own network (SSRF), on real servers run as
deployed (OFFER_ALLOW_PRIVATE_CHARGE_URLS unset): a charge_url that is not https to a public host
is refused when set, and one stored before the checks existed, or a name re-pointed since, is
refused at call time without a single connection to the address it names."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import threading
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import httpx
import pytest

from offer_service.settings import Settings
from offer_service.storage import open_store
from offer_service_tools.charge_double import ChargeDouble, running_charge_double
from offer_service_tools.demo import DEMO_WEBHOOK_SECRET, install_demo
from tests.conftest import LiveServer, run_server
from tests.flows import ADMIN, accept, error_code, order_with_offers, set_rules

# Each reached this machine, a private network, a cloud's metadata service or Redis, or carried
# credentials or 60 KB, and was accepted and called.
NOT_PUBLIC = [
    "http://shop.example/charge",
    "http://127.0.0.1:6379/",
    "https://127.0.0.1/charge",
    "https://127.1/charge",
    "https://0x7f000001/charge",
    "https://2130706433/charge",
    "https://127.0.0.1./charge",
    "https://[::1]/charge",
    "https://[::ffff:127.0.0.1]/charge",
    "https://[::ffff:7f00:1]/charge",
    "https://localhost/charge",
    "https://localhost./charge",
    "https://10.0.0.7/charge",
    "https://192.168.1.10:6379/",
    "https://169.254.169.254/latest/meta-data/",
    "https://[fe80::1]/charge",
    "https://0.0.0.0/charge",
    "https://user:secret@shop.example/charge",
    "https://shop.example@127.0.0.1/charge",
    "https://shop.example/" + "a" * 60_000,
    "ftp://shop.example/charge",
]

# A charge_url saved before the checks existed, aimed at a real server on loopback: `{double}`
# is the port of a charge double that would charge, `{listener}` that of a server counting every
# connection it is offered.
STORED = [
    "http://127.0.0.1:{double}/charge",
    "http://localhost:{double}/charge",
    "http://user:secret@127.0.0.1:{double}/charge",
    "http://127.0.0.1:{double}/charge?pad=" + "a" * 60_000,
    "https://127.1:{listener}/charge",
    "https://0x7f000001:{listener}/charge",
    "https://2130706433:{listener}/charge",
    "https://localhost:{listener}/charge",
]

PUBLIC_ADDRESS = "93.184.215.14"

IPAddress = IPv4Address | IPv6Address


def deployed(store_url: str) -> Settings:
    """The settings of a service run as deployed: private charge URLs not allowed."""
    with pytest.MonkeyPatch.context() as env:
        env.delenv("OFFER_ALLOW_PRIVATE_CHARGE_URLS", raising=False)
        return dataclasses.replace(Settings.from_env(), store_url=store_url, demo=False)


def install(store_url: str, charge_url: str | None = None) -> None:
    """The demo store, charge_url written straight into the store (no check), no holdout."""

    async def run() -> None:
        store = open_store(store_url)
        await store.open()
        try:
            record = await install_demo(store)
            rules = record.rules.model_copy(update={"charge_url": charge_url, "holdout_share": 0})
            await store.set_rules(record.id, rules)
        finally:
            await store.close()

    asyncio.run(run())


@contextlib.contextmanager
def deployed_service(store_url: str) -> Iterator[LiveServer]:
    yield from run_server(deployed(store_url))


@dataclasses.dataclass
class Listener:
    port: int
    connections: int = 0
    # What it answers each connection, after reading the request (nothing: it just closes).
    reply: bytes = b""


@pytest.fixture
def listener() -> Iterator[Listener]:
    """A TCP server on loopback counting the connections it is offered."""
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(0.1)
    found = Listener(sock.getsockname()[1])
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            found.connections += 1
            with conn:
                if found.reply:
                    conn.settimeout(5)
                    conn.recv(65536)
                    conn.sendall(found.reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield found
    stop.set()
    thread.join(timeout=5)
    sock.close()


@pytest.fixture
def double() -> Iterator[ChargeDouble]:
    yield from running_charge_double([DEMO_WEBHOOK_SECRET])


@pytest.fixture(scope="module")
def deployed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    store_url = f"sqlite:///{tmp_path_factory.mktemp('deployed')}/offers.db"
    install(store_url)
    with deployed_service(store_url) as server:
        yield server


class FakeDns:
    """A resolver knowing only `answers` (DNS is the outside system here: the tests make no real
    lookup of an outside name); every question is kept in `asked`."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ip_address(a) for a in self.answers[host]]


def put_charge_url(c: httpx.Client, url: str | None) -> httpx.Response:
    rules = c.get("/v1/admin/rules", headers=ADMIN).json()
    return c.put("/v1/admin/rules", json={**rules, "charge_url": url}, headers=ADMIN)


def assert_bad_charge_url(r: httpx.Response) -> None:
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "bad_charge_url"
    assert [d["field"] for d in error["details"]] == ["charge_url"]


@pytest.mark.parametrize("url", NOT_PUBLIC, ids=lambda url: url[:48])
def test_put_rules_refuses_a_charge_url_that_is_not_https_to_a_public_host(
    deployed_server: LiveServer, url: str
) -> None:
    with deployed_server.client() as c:
        before = c.get("/v1/admin/rules", headers=ADMIN).json()["charge_url"]
        assert_bad_charge_url(put_charge_url(c, url))
        assert c.get("/v1/admin/rules", headers=ADMIN).json()["charge_url"] == before


def test_put_rules_refuses_a_name_that_resolves_to_a_private_address(
    deployed_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from offer_service.commerce import egress

    dns = FakeDns(
        {
            "charge.shop.example": ["10.20.30.40"],
            # One private address among public ones is enough to refuse.
            "mixed.shop.example": [PUBLIC_ADDRESS, "127.0.0.1"],
            "rebind.shop.example": ["::ffff:169.254.169.254"],
            "public.shop.example": [PUBLIC_ADDRESS],
        }
    )
    monkeypatch.setattr(egress, "lookup", dns)
    with deployed_server.client() as c:
        for name in ("charge", "mixed", "rebind"):
            r = put_charge_url(c, f"https://{name}.shop.example/charge")
            assert_bad_charge_url(r)
            assert name in r.json()["error"]["details"][0]["message"]
        assert put_charge_url(c, "https://public.shop.example/charge").status_code == 200
        assert put_charge_url(c, None).status_code == 200


def test_put_rules_accepts_https_to_a_public_host_on_any_port(
    deployed_server: LiveServer,
) -> None:
    with deployed_server.client() as c:
        for url in (f"https://{PUBLIC_ADDRESS}/charge", f"https://{PUBLIC_ADDRESS}:8443/c?v=1"):
            r = put_charge_url(c, url)
            assert r.status_code == 200, r.text
            assert r.json()["charge_url"] == url
        assert put_charge_url(c, None).status_code == 200


@pytest.mark.parametrize("template", STORED, ids=lambda url: url[:48])
def test_a_charge_url_stored_before_the_checks_is_refused_at_call_time(
    tmp_path: Path, double: ChargeDouble, listener: Listener, template: str
) -> None:
    url = template.format(double=httpx.URL(double.url).port, listener=listener.port)
    store_url = f"sqlite:///{tmp_path}/offers.db"
    install(store_url, url)
    with deployed_service(store_url) as server, server.client() as c:
        _, offers = order_with_offers(c, "o-stored")
        r = accept(c, offers[0]["token"], "key-stored")
    assert r.status_code == 502, r.text
    assert error_code(r) == "charge_failed"
    assert double.requests == [] and double.charge_count == 0
    assert listener.connections == 0


def test_a_name_re_pointed_at_loopback_after_it_was_checked_is_refused_at_call_time(
    tmp_path: Path, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    from offer_service.commerce import egress

    dns = FakeDns({"charge.shop.example": [PUBLIC_ADDRESS]})
    monkeypatch.setattr(egress, "lookup", dns)
    store_url = f"sqlite:///{tmp_path}/offers.db"
    install(store_url)
    with deployed_service(store_url) as server, server.client() as c:
        url = f"https://charge.shop.example:{listener.port}/charge"
        assert put_charge_url(c, url).status_code == 200
        dns.answers["charge.shop.example"] = ["127.0.0.1"]  # DNS rebinding
        _, offers = order_with_offers(c, "o-rebind")
        r = accept(c, offers[0]["token"], "key-rebind")
    assert r.status_code == 502 and error_code(r) == "charge_failed", r.text
    assert listener.connections == 0


def test_the_charge_connects_to_the_address_it_checked(
    demo_server: LiveServer, double: ChargeDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Private charge URLs allowed (as the tests' servers do): the name is looked up once per
    connection by the charge client itself, and the connection made to that answer."""
    from offer_service.commerce import egress

    dns = FakeDns({"charge.shop.example": ["127.0.0.1"]})
    monkeypatch.setattr(egress, "lookup", dns)
    url = f"http://charge.shop.example:{httpx.URL(double.url).port}/charge"
    with demo_server.client() as c:
        set_rules(c, charge_url=url, holdout_share=0)
        _, offers = order_with_offers(c, "o-resolved")
        r = accept(c, offers[0]["token"], "key-resolved")
    assert r.status_code == 200, r.text
    assert double.charge_count == 1
    assert dns.asked == ["charge.shop.example"]


def test_a_redirect_from_the_charge_endpoint_is_not_followed(
    demo_server: LiveServer, double: ChargeDouble, listener: Listener
) -> None:
    """An endpoint that passed the checks cannot send the signed charge on to another address."""
    listener.reply = (
        f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {double.url}\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    ).encode()
    with demo_server.client() as c:
        set_rules(c, charge_url=f"http://127.0.0.1:{listener.port}/charge", holdout_share=0)
        _, offers = order_with_offers(c, "o-redirect")
        r = accept(c, offers[0]["token"], "key-redirect")
    assert r.status_code == 502 and error_code(r) == "charge_failed", r.text
    assert listener.connections == 1
    assert double.requests == []
