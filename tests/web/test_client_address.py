"""The client address a browser route's rate limit counts, on a real `offer-service serve`:
X-Forwarded-For is believed only from a proxy the service is told to trust, and then only the
hop that proxy added (the right-most one that is not a trusted proxy)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from offer_service.domain.policy import RateLimits
from offer_service.storage import open_store
from offer_service_tools.demo import DEMO_STORE_ID
from tests.flows import PK
from tests.processes import ServeProcess, prepare_demo_store

pytestmark = pytest.mark.timeout(120)

BURST = 5
# So slow that the bucket does not refill while a test runs: the burst is all a client gets.
PER_SECOND = 0.001
REQUESTS = 40
PARAMS = {"key": PK, "surface": "product_page", "product_id": "cam-x100"}


def limited_store(tmp_path: Path) -> str:
    """A SQLite file with the demo store, its browser routes limited to BURST requests."""
    url = f"sqlite:///{tmp_path}/offers.db"
    prepare_demo_store(url)

    async def run() -> None:
        store = open_store(url)
        await store.open()
        try:
            record = await store.get_store(DEMO_STORE_ID)
            assert record is not None
            limits = RateLimits(browser_per_second=PER_SECOND, browser_burst=BURST)
            await store.set_rules(
                DEMO_STORE_ID, record.rules.model_copy(update={"rate_limits": limits})
            )
        finally:
            await store.close()

    asyncio.run(run())
    return url


def serving(tmp_path: Path, **env: str) -> Iterator[ServeProcess]:
    service = ServeProcess(limited_store(tmp_path), tmp_path / "serve.log", env=env)
    try:
        yield service
    finally:
        service.stop()


def admitted(client: httpx.Client, forwarded_for: list[str | None]) -> int:
    """How many of these requests (one per X-Forwarded-For value; None: no header) got a 200."""
    statuses = []
    for value in forwarded_for:
        headers = {"X-Forwarded-For": value} if value is not None else {}
        statuses.append(client.get("/v1/offers", params=PARAMS, headers=headers).status_code)
    assert set(statuses) <= {200, 429}, statuses
    return statuses.count(200)


def rotating(last_hop: str | None = None) -> list[str | None]:
    """A forged address per request, before the hop a proxy would append when there is one."""
    return [f"198.51.100.{i}" + (f", {last_hop}" if last_hop else "") for i in range(REQUESTS)]


@pytest.fixture
def untrusting(tmp_path: Path) -> Iterator[ServeProcess]:
    """A server told of no proxy (OFFER_TRUST_PROXY unset): it counts the socket's peer."""
    yield from serving(tmp_path)


@pytest.fixture
def behind_a_proxy(tmp_path: Path) -> Iterator[ServeProcess]:
    """A server behind a proxy on its own host (OFFER_TRUST_PROXY=1, the loopback trusted)."""
    yield from serving(tmp_path, OFFER_TRUST_PROXY="1")


def test_a_rotating_forwarded_for_gets_what_the_peer_gets(untrusting: ServeProcess) -> None:
    with untrusting.client() as client:
        forged = admitted(client, rotating())
        # The same peer without the header: its bucket is the one the forged requests emptied.
        plain = admitted(client, [None] * REQUESTS)
    print(f"\nadmitted with a rotating X-Forwarded-For: {forged} of {REQUESTS}")
    assert forged == BURST
    assert plain == 0


def test_an_untrusted_peer_cannot_name_a_client(tmp_path: Path) -> None:
    """OFFER_TRUST_PROXY set, but the peer (the loopback) is not among the trusted proxies."""
    for service in serving(tmp_path, OFFER_TRUST_PROXY="1", OFFER_TRUSTED_PROXIES="10.0.0.0/8"):
        with service.client() as client:
            assert admitted(client, rotating()) == BURST
            assert admitted(client, rotating("203.0.113.7")) == 0


def test_behind_a_trusted_proxy_a_forged_left_hop_does_not_change_the_bucket(
    behind_a_proxy: ServeProcess,
) -> None:
    with behind_a_proxy.client() as client:
        # The proxy appended 203.0.113.7, the address it saw; the hops before it are the
        # client's own words.
        forged = admitted(client, rotating("203.0.113.7"))
        again = admitted(client, ["203.0.113.7"] * REQUESTS)
        # Another client behind the proxy has a bucket of its own, and so has the proxy itself.
        other = admitted(client, ["203.0.113.8"] * REQUESTS)
        proxy = admitted(client, [None] * REQUESTS)
    print(f"\nadmitted behind the proxy with forged left hops: {forged} of {REQUESTS}")
    assert (forged, again, other, proxy) == (BURST, 0, BURST, BURST)


def test_a_chain_of_trusted_proxies_is_walked_from_the_right(tmp_path: Path) -> None:
    """Two proxies (a CDN in 10.0.0.0/8 before the local one): the client is the hop before
    them, wherever the chain starts."""
    env = {"OFFER_TRUST_PROXY": "1", "OFFER_TRUSTED_PROXIES": "127.0.0.1,10.0.0.0/8"}
    for service in serving(tmp_path, **env):
        with service.client() as client:
            assert admitted(client, rotating("203.0.113.7, 10.1.2.3")) == BURST
            assert admitted(client, ["203.0.113.7"] * REQUESTS) == 0
