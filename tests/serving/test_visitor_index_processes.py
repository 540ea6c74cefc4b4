"""Two `offer-service serve` processes on one store (a SQLite file, Redis): a visitor whose state
forbids an offer (declined, accepted, capped by impressions, bought, returned) is never offered
it, by the process that took the write at once and by the other within VISITOR_POLL_S plus one
request, and then on the answers it gives in turn (without a task) too; a visitor without state
costs no store read, one with state exactly one."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from offer_service.domain.policy import FrequencyCap
from offer_service.serving.visitors import VISITOR_POLL_S
from offer_service_tools.charge_double import ChargeDouble, running_charge_double
from offer_service_tools.demo import CATALOG, DEMO_WEBHOOK_SECRET
from tests.flows import ADMIN, PK, PRICES, accept
from tests.processes import ServeProcess, demo_store_url, new_shopper, two_instances
from tests.prometheus import answered_in_turn, matching, scrape

pytestmark = pytest.mark.timeout(300)

ANCHOR = "cam-x100"
CAP = FrequencyCap().impressions
KINDS = ("declined", "accepted", "capped", "bought", "returned")


@pytest.fixture(scope="module")
def charges() -> Iterator[ChargeDouble]:
    yield from running_charge_double([DEMO_WEBHOOK_SECRET])


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def instances(
    request: pytest.FixtureRequest, charges: ChargeDouble, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    directory = tmp_path_factory.mktemp(request.param)
    # Rate limits raised out of the way by prepare_demo_store.
    for url in demo_store_url(request.param, directory, charge_url=charges.url):
        with two_instances(url, directory) as pair:
            yield pair


def shopper() -> str:
    return new_shopper("v")


def product_page(client: httpx.Client, visitor: str, anchor: str = ANCHOR) -> list[dict[str, Any]]:
    r = client.get(
        "/v1/offers",
        params={
            "key": PK,
            "surface": "product_page",
            "product_id": anchor,
            "visitor_id": visitor,
            "limit": 10,  # clamped to the surface's most
        },
    )
    assert r.status_code == 200, r.text
    offers: list[dict[str, Any]] = r.json()["offers"]
    return offers


def offered(client: httpx.Client, visitor: str, anchor: str = ANCHOR) -> set[str]:
    return {str(o["product_id"]) for o in product_page(client, visitor, anchor)}


def place(client: httpx.Client, visitor: str, products: list[str]) -> tuple[str, str]:
    """An order of the visitor's, sent as the merchant's backend does: its id and token."""
    order_id = f"o-{uuid.uuid4().hex[:10]}"
    body = {
        "id": order_id,
        "visitor_id": visitor,
        "placed_at": datetime.now(UTC).isoformat(),
        "currency": "USD",
        "lines": [{"product_id": p, "quantity": 1, "price": PRICES[p]} for p in products],
    }
    r = client.post("/v1/admin/orders", json=[body], headers=ADMIN)
    assert r.status_code == 200, r.text
    return order_id, str(r.json()["order_tokens"][order_id])


def events(client: httpx.Client, visitor: str, offer: dict[str, Any], kind: str, n: int) -> None:
    batch = [
        {
            "id": uuid.uuid4().hex,
            "type": kind,
            "token": offer["token"],
            "ts": int(time.time() * 1000),
            "visitor_id": visitor,
        }
        for _ in range(n)
    ]
    r = client.post("/v1/events", json={"key": PK, "events": batch})
    assert r.status_code == 202, r.text


def forbid(kind: str, writer: httpx.Client, reader: httpx.Client, visitor: str) -> tuple[str, str]:
    """Give the visitor, through `writer`, a state that forbids a product `reader` offers it
    on a product page now; the product and the page's product."""
    if kind == "accepted":
        # A thank-you offer taken one-click: an accept and a purchase of the visitor's.
        order_id, token = place(writer, visitor, [ANCHOR])
        r = writer.get(
            "/v1/offers",
            params={
                "key": PK,
                "surface": "thank_you",
                "order_id": order_id,
                "order_token": token,
                "visitor_id": visitor,
                "limit": 10,
            },
        )
        # A page that offers the product taken (the thank-you page's are the order's others).
        taken, anchor = next(
            (o, p.id)
            for o in r.json()["offers"]
            for p in CATALOG
            if o["product_id"] in offered(reader, visitor, p.id)
        )
        r = accept(writer, str(taken["token"]), f"k-{uuid.uuid4().hex}")
        assert r.status_code == 200, r.text
        return str(taken["product_id"]), anchor
    if kind == "returned":
        # A product sent back from an earlier order: the visitor is known, its state held.
        order_id, _ = place(writer, visitor, ["coffee-250g"])
        target = next(iter(offered(reader, visitor) - {"coffee-250g"}))
        r = writer.post(
            "/v1/admin/returns",
            json={"order_id": order_id, "product_ids": [target]},
            headers=ADMIN,
        )
        assert r.status_code == 200 and r.json()["recorded"] == 1, r.text
        return target, ANCHOR
    offer = product_page(reader, visitor)[0]
    target = str(offer["product_id"])
    if kind == "declined":
        r = writer.post(
            "/v1/decline", json={"key": PK, "token": offer["token"], "visitor_id": visitor}
        )
        assert r.status_code == 200, r.text
    elif kind == "capped":
        events(writer, visitor, offer, "impression", CAP)
    else:
        place(writer, visitor, [target])
    return target, ANCHOR


@pytest.mark.parametrize("kind", KINDS)
def test_this_process_never_offers_what_its_own_write_forbids(
    instances: tuple[ServeProcess, ServeProcess], kind: str
) -> None:
    _, serving = instances
    with serving.client() as b:
        visitor = shopper()
        assert offered(b, visitor)  # a fresh visitor, offered the page's products
        target, anchor = forbid(kind, b, b, visitor)

        assert target not in offered(b, visitor, anchor)


@pytest.mark.parametrize("kind", KINDS)
def test_the_other_process_stops_offering_it_within_a_poll(
    instances: tuple[ServeProcess, ServeProcess], kind: str
) -> None:
    first, second = instances
    with first.client() as a, second.client() as b:
        visitor = shopper()
        assert offered(b, visitor)
        target, anchor = forbid(kind, a, b, visitor)
        time.sleep(VISITOR_POLL_S)

        assert target not in offered(b, visitor, anchor)
        assert target in offered(b, shopper(), anchor)  # forbidden to this visitor only
        # The state read is then held: the next answers, most of them in the turn the
        # request arrives (connections.py), forbid it as well.
        before = answered_in_turn(second.url)
        for _ in range(6):
            assert target not in offered(b, visitor, anchor)
        assert answered_in_turn(second.url) > before


def store_reads(process: ServeProcess) -> dict[str, float]:
    samples, _ = scrape(process.url)
    return {
        source: sum(matching(samples, "offer_visitor_reads_total", source=source).values())
        for source in ("index", "held", "store")
    }


def test_a_visitor_without_state_costs_no_store_read_and_one_with_state_one(
    instances: tuple[ServeProcess, ServeProcess],
) -> None:
    first, second = instances
    with first.client() as a, second.client() as b:
        known = shopper()
        forbid("declined", a, b, known)
        # The index loads in the background after the first requests.
        deadline = time.monotonic() + 20
        while True:
            before = store_reads(second)
            offered(b, shopper())
            if store_reads(second)["store"] == before["store"]:
                break
            assert time.monotonic() < deadline, "the index never loaded"
            time.sleep(0.1)
        time.sleep(VISITOR_POLL_S)  # the decline made through the other process is listed

        before = store_reads(second)
        for _ in range(20):
            offered(b, shopper())
        after = store_reads(second)
        assert after["store"] == before["store"]
        assert after["index"] == before["index"] + 20

        offered(b, known)
        offered(b, known)
        known_after = store_reads(second)
        assert known_after["store"] == after["store"] + 1  # then held
