"""POST /v1/accept and POST /v1/decline against real servers, with the merchant's charge endpoint
as a real server that charges through a de-duplicating processor
(offer_service_tools/charge_double.py)."""

from __future__ import annotations

import hashlib
import hmac
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from offer_service.domain.policy import StoreRules, rules_context
from offer_service.domain.tokens import OfferClaims, sign, verify
from offer_service_tools.charge_double import ChargeDouble, running_charge_double
from offer_service_tools.demo import DEMO_WEBHOOK_SECRET
from tests.conftest import LiveServer
from tests.flows import (
    ADMIN,
    FAMILIES,
    PK,
    PRICES,
    accept,
    b64,
    error_code,
    order_with_offers,
    place_order,
    reencode,
    send_accept,
    set_rules,
    signing_keys,
    thank_you_offers,
    token_payload,
    unb64,
)
from tests.processes import ServeProcess, prepare_demo_store

SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


@dataclass
class Shop:
    server: LiveServer
    client: httpx.Client
    double: ChargeDouble


@pytest.fixture
def double() -> Iterator[ChargeDouble]:
    yield from running_charge_double([DEMO_WEBHOOK_SECRET])


@pytest.fixture
def shop(demo_server: LiveServer, double: ChargeDouble) -> Iterator[Shop]:
    """The demo store charging through the double; no holdout, so every order gets offers."""
    with demo_server.client() as client:
        set_rules(client, charge_url=double.url, holdout_share=0)
        yield Shop(demo_server, client, double)


def local_charging(double: ChargeDouble) -> StoreRules:
    """Rules charging through the double, on loopback (allowed, as the tests' servers allow it)."""
    fields = {"holdout_share": 0, "charge_url": double.url}
    return StoreRules.model_validate(fields, context=rules_context("private"))


def assert_accepted(r: httpx.Response, offer: dict[str, Any], order_id: str) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["status"] == "accepted"
    assert body["order_id"] == order_id
    assert body["product_id"] == offer["product_id"]
    assert body["charged"] == offer["offer_price"]
    assert isinstance(body["charge_id"], str) and body["charge_id"]
    return body


# -- the happy path, replay, and "counts as purchased" ------------------------------------------


def test_accept_charges_once_at_the_offered_price_and_replays_byte_for_byte(shop: Shop) -> None:
    c, double = shop.client, shop.double
    _, offers = order_with_offers(c, "o-happy")
    offer = offers[0]
    r = accept(c, offer["token"], "key-happy")
    body = assert_accepted(r, offer, "o-happy")

    assert double.charge_count == 1 and double.bad_signatures == 0
    (charge,) = double.charges
    assert body["charge_id"] == charge.charge_id
    assert (charge.order_id, charge.product_id, charge.quantity) == (
        "o-happy",
        offer["product_id"],
        1,
    )
    assert charge.amount == offer["offer_price"]["amount"]
    assert charge.currency == offer["offer_price"]["currency"]
    assert charge.offer_id == offer["offer_id"]

    for _ in range(3):
        again = accept(c, offer["token"], "key-happy")
        assert again.status_code == 200
        assert again.content == r.content
    assert len(double.requests) == 1, "a replay must not call the charge endpoint again"
    assert double.charge_count == 1


def test_the_accepted_item_counts_as_purchased(shop: Shop) -> None:
    c = shop.client
    order_token, offers = order_with_offers(c, "o-bought")
    offer = offers[0]
    assert_accepted(accept(c, offer["token"], "key-bought"), offer, "o-bought")
    for _ in range(3):
        again = thank_you_offers(c, "o-bought", order_token, limit=2)
        assert offer["product_id"] not in {o["product_id"] for o in again}
    # The buyer (customer_id of the order) has it now: no surface offers it to them again.
    page = c.get(
        "/v1/offers",
        params={
            "key": PK,
            "surface": "product_page",
            "product_id": "cam-x100",
            "customer_id": "cust-o-bought",
            "limit": 5,
        },
    )
    assert page.status_code == 200, page.text
    assert offer["product_id"] not in {o["product_id"] for o in page.json()["offers"]}


def test_quantity_is_charged_as_quantity_times_the_offer_price(shop: Shop) -> None:
    c, double = shop.client, shop.double
    _, offers = order_with_offers(c, "o-qty")
    offer = offers[0]
    r = accept(c, offer["token"], "key-qty", quantity=2)
    assert r.status_code == 200, r.text
    unit = offer["offer_price"]["amount"]
    assert r.json()["charged"] == {"amount": 2 * unit, "currency": offer["offer_price"]["currency"]}
    (charge,) = double.charges
    assert (charge.quantity, charge.amount) == (2, 2 * unit)


def test_only_thank_you_offers_can_be_accepted(shop: Shop) -> None:
    c, double = shop.client, shop.double
    order_token = place_order(c, "o-surfaces", ["cam-x100"])
    queries: dict[str, dict[str, Any]] = {
        "product_page": {"product_id": "cam-x100"},
        "cart": {"items": "cam-x100"},
        "checkout": {"items": "serum-30ml"},
        "email": {"order_id": "o-surfaces", "order_token": order_token},
        "sms": {"order_id": "o-surfaces", "order_token": order_token},
    }
    for surface, query in queries.items():
        r = c.get("/v1/offers", params={"key": PK, "surface": surface, **query})
        assert r.status_code == 200, r.text
        offers = r.json()["offers"]
        assert offers, surface
        r = accept(c, offers[0]["token"], f"key-surface-{surface}")
        assert r.status_code == 403, (surface, r.text)
        assert error_code(r) == "bad_token"
    assert double.requests == []


def test_a_returned_order_cannot_accept_its_offers(shop: Shop) -> None:
    c, double = shop.client, shop.double
    _, offers = order_with_offers(c, "o-returned", ["serum-30ml"])
    r = c.post(
        "/v1/admin/returns",
        json={"order_id": "o-returned", "product_ids": ["serum-30ml"]},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    r = accept(c, offers[0]["token"], "key-returned")
    assert r.status_code == 410, r.text
    assert error_code(r) == "offer_expired"
    assert double.requests == []


def test_an_invalid_body_is_422_wherever_the_key_travels(shop: Shop) -> None:
    """A body carrying the publishable key (as the snippet sends it) and a bad field is a 422
    naming the field, exactly as with the key in the query: never a 401 for a key that is there."""
    c, double = shop.client, shop.double
    _, offers = order_with_offers(c, "o-qty0")
    token = offers[0]["token"]
    for n, quantity in enumerate((0, -1)):
        for where in ("query", "body"):
            body: dict[str, Any] = {"token": token, "quantity": quantity}
            params = {"key": PK} if where == "query" else {}
            if where == "body":
                body["key"] = PK
            r = c.post(
                "/v1/accept",
                json=body,
                params=params,
                headers={"Idempotency-Key": f"key-qty0-{n}-{where}"},
            )
            assert r.status_code == 422, (where, r.text)
            assert "quantity" in {d.get("field") for d in r.json()["error"]["details"]}, r.text
    r = c.post("/v1/decline", json={"key": PK, "token": ""})
    assert r.status_code == 422, r.text
    assert double.requests == []


def test_concurrent_accepts_of_one_offer_under_different_keys_charge_once(shop: Shop) -> None:
    c, double = shop.client, shop.double
    double.delay_s = 0.3
    _, offers = order_with_offers(c, "o-keys-race")
    barrier = threading.Barrier(20)

    def one(n: int) -> tuple[int, str]:
        with shop.server.client() as own:
            barrier.wait()
            r = accept(own, offers[0]["token"], f"key-race-{n}")
            return r.status_code, error_code(r) if r.status_code != 200 else ""

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    outcomes = Counter(results)
    assert outcomes[(200, "")] == 1, outcomes
    assert set(outcomes) <= {(200, ""), (409, "in_progress"), (409, "already_accepted")}, outcomes
    assert double.charge_count == 1 and len(double.requests) == 1


def test_the_cap_holds_under_concurrent_accepts(shop: Shop) -> None:
    c, double = shop.client, shop.double
    double.delay_s = 0.2
    set_rules(c, accept_cap=1)

    def race(order_id: str, offers: list[dict[str, Any]]) -> list[tuple[int, str]]:
        barrier = threading.Barrier(len(offers))

        def one(i: int) -> tuple[int, str]:
            with shop.server.client() as own:
                barrier.wait()
                r = accept(own, offers[i]["token"], f"key-{order_id}-{i}")
                return r.status_code, error_code(r) if r.status_code != 200 else ""

        with ThreadPoolExecutor(len(offers)) as pool:
            return sorted(pool.map(one, range(len(offers))))

    for n in range(4):
        _, offers = order_with_offers(c, f"o-cap-race-{n}")
        assert len(offers) == 2
        results = race(f"o-cap-race-{n}", offers)
        assert results == [(200, ""), (422, "accept_limit_reached")], results
    assert double.charge_count == 4


# -- tokens: price edits, window, cap, already accepted ------------------------------------------


def test_a_price_edited_in_the_token_is_403_and_charges_nothing(shop: Shop) -> None:
    c, double = shop.client, shop.double
    _, offers = order_with_offers(c, "o-edit")
    offer = offers[0]
    payload = token_payload(offer["token"])
    sig = offer["token"].partition(".")[2]
    edits: list[dict[str, Any]] = [
        {"op": 1},
        {"op": 0},
        {"pr": 1, "op": 1},
        {"d": 30, "op": payload["pr"] * 70 // 100},
        {"op": payload["op"] - 1},
        {"c": "JPY"},
    ]
    for n, edit in enumerate(edits):
        forged = reencode({**payload, **edit}, sig)
        r = accept(c, forged, f"key-edit-{n}")
        assert r.status_code == 403, (edit, r.text)
        assert error_code(r) == "bad_token"
    assert double.charge_count == 0 and double.requests == []
    # The genuine token still works, at the offered price.
    assert_accepted(accept(c, offer["token"], "key-edit-genuine"), offer, "o-edit")
    assert [ch.amount for ch in double.charges] == [offer["offer_price"]["amount"]]


def test_after_the_post_purchase_window_the_offer_is_410(shop: Shop) -> None:
    c, double = shop.client, shop.double
    # Default window: 60 minutes after placed_at.
    _, offers = order_with_offers(c, "o-late", minutes_ago=61)
    r = accept(c, offers[0]["token"], "key-late")
    assert r.status_code == 410, r.text
    assert error_code(r) == "offer_expired"

    # A store's own window.
    set_rules(c, post_purchase_window_minutes=5)
    _, offers = order_with_offers(c, "o-late-5", minutes_ago=6)
    r = accept(c, offers[0]["token"], "key-late-5")
    assert r.status_code == 410, r.text
    assert error_code(r) == "offer_expired"
    assert double.charge_count == 0 and double.requests == []

    _, offers = order_with_offers(c, "o-in-time-5", minutes_ago=4)
    assert_accepted(accept(c, offers[0]["token"], "key-in-time"), offers[0], "o-in-time-5")


def test_over_the_accepted_offer_cap_is_422(shop: Shop) -> None:
    c, double = shop.client, shop.double
    set_rules(c, accept_cap=1)
    _, offers = order_with_offers(c, "o-cap")
    assert len(offers) == 2, offers
    assert_accepted(accept(c, offers[0]["token"], "key-cap-1"), offers[0], "o-cap")
    r = accept(c, offers[1]["token"], "key-cap-2")
    assert r.status_code == 422, r.text
    assert error_code(r) == "accept_limit_reached"
    assert double.charge_count == 1 and len(double.requests) == 1


def test_the_default_cap_is_three_accepted_offers(shop: Shop) -> None:
    c, double = shop.client, shop.double
    order_token = place_order(c, "o-cap3", ["cam-x100"])
    accepted = 0
    for n in range(6):
        offers = thank_you_offers(c, "o-cap3", order_token, limit=2)
        if not offers:
            break
        r = accept(c, offers[0]["token"], f"key-cap3-{n}")
        if accepted < 3:
            assert_accepted(r, offers[0], "o-cap3")
            accepted += 1
        else:
            assert r.status_code == 422, r.text
            assert error_code(r) == "accept_limit_reached"
            break
    assert accepted == 3
    assert double.charge_count == 3


def test_the_same_offer_under_another_key_is_409_already_accepted(shop: Shop) -> None:
    c, double = shop.client, shop.double
    _, offers = order_with_offers(c, "o-twice")
    assert_accepted(accept(c, offers[0]["token"], "key-twice-1"), offers[0], "o-twice")
    r = accept(c, offers[0]["token"], "key-twice-2")
    assert r.status_code == 409, r.text
    assert error_code(r) == "already_accepted"
    # The first answer under that key is what it replays.
    again = accept(c, offers[0]["token"], "key-twice-2")
    assert (again.status_code, again.content) == (409, r.content)
    assert double.charge_count == 1 and len(double.requests) == 1


def test_the_same_key_with_another_body_is_422(shop: Shop) -> None:
    c, double = shop.client, shop.double
    _, offers = order_with_offers(c, "o-reuse")
    first = accept(c, offers[0]["token"], "key-reuse")
    assert_accepted(first, offers[0], "o-reuse")
    r = accept(c, offers[1]["token"], "key-reuse")
    assert r.status_code == 422, r.text
    assert error_code(r) == "idempotency_key_reused"
    r = accept(c, offers[0]["token"], "key-reuse", quantity=2)
    assert r.status_code == 422, r.text
    assert error_code(r) == "idempotency_key_reused"
    assert double.charge_count == 1
    # The key still replays its own request.
    assert accept(c, offers[0]["token"], "key-reuse").content == first.content


def test_the_idempotency_key_is_required_and_at_most_255_characters(shop: Shop) -> None:
    c, double = shop.client, shop.double
    _, offers = order_with_offers(c, "o-keys")
    token = offers[0]["token"]
    for key in (None, "", "k" * 256, "k" * 1000):
        r = accept(c, token, key)
        assert r.status_code == 400, (key and len(key), r.text)
        assert SNAKE.match(error_code(r)), r.text
    assert double.requests == []
    assert_accepted(accept(c, token, "k" * 255), offers[0], "o-keys")
    assert double.charge_count == 1


def test_the_key_is_scoped_to_the_store(shop: Shop) -> None:
    """Two stores using the same Idempotency-Key do not see each other's answers."""
    c, double = shop.client, shop.double
    other = shop.server.create_store("Other", rules=local_charging(double))
    double.secrets.append(other.webhook_secret)
    other_admin = {"Authorization": f"Bearer {other.secret_key}"}
    catalog = c.get("/v1/admin/catalog", params={"limit": 1000}, headers=ADMIN).json()["products"]
    assert c.put("/v1/admin/catalog", json=catalog, headers=other_admin).status_code == 200
    _, offers = order_with_offers(c, "o-scope")
    first = accept(c, offers[0]["token"], "shared-key")
    assert_accepted(first, offers[0], "o-scope")
    other_token = place_order(c, "o-scope", ["cam-x100"], headers=other_admin)
    other_offers = thank_you_offers(c, "o-scope", other_token, key=other.publishable_key)
    assert other_offers
    r = accept(c, other_offers[0]["token"], "shared-key", pk=other.publishable_key)
    assert_accepted(r, other_offers[0], "o-scope")
    assert r.content != first.content
    assert double.charge_count == 2


# -- the charge endpoint: declined, failing, hanging ---------------------------------------------


def test_a_402_from_the_charge_endpoint_is_payment_declined(shop: Shop) -> None:
    c, double = shop.client, shop.double
    _, offers = order_with_offers(c, "o-declined")
    double.set_mode("decline")
    r = accept(c, offers[0]["token"], "key-declined")
    assert r.status_code == 402, r.text
    assert error_code(r) == "payment_declined"
    assert double.charge_count == 0
    again = accept(c, offers[0]["token"], "key-declined")
    assert (again.status_code, again.content) == (402, r.content)
    # The buyer fixes their card and tries again: the offer was not used up by the decline.
    double.set_mode("ok")
    assert_accepted(accept(c, offers[0]["token"], "key-declined-2"), offers[0], "o-declined")
    assert double.charge_count == 1


def test_a_500_from_the_charge_endpoint_is_502_and_the_same_key_retries(shop: Shop) -> None:
    c, double = shop.client, shop.double
    _, offers = order_with_offers(c, "o-500")
    double.set_mode("error")
    r = accept(c, offers[0]["token"], "key-500")
    assert r.status_code == 502, r.text
    assert error_code(r) == "charge_failed"
    assert double.charge_count == 0 and len(double.requests) == 1
    double.set_mode("ok")
    retry = accept(c, offers[0]["token"], "key-500")
    body = assert_accepted(retry, offers[0], "o-500")
    assert double.charge_count == 1
    assert body["charge_id"] == double.charges[0].charge_id
    keys = {req["idempotency_key"] for req in double.requests}
    assert len(double.requests) == 2 and len(keys) == 1


def until_settled(c: httpx.Client, token: str, key: str, timeout_s: float = 60) -> httpx.Response:
    """The same key again until its answer is no longer 202 pending (the service settles the
    charge by itself; asking again only reads the outcome)."""
    deadline = time.monotonic() + timeout_s
    r = accept(c, token, key)
    while r.status_code == 202 and time.monotonic() < deadline:
        assert r.json()["code"] == "charge_pending", r.text
        time.sleep(0.5)
        r = accept(c, token, key)
    return r


def test_a_hanging_charge_endpoint_is_pending_after_the_timeout_and_settles_once(
    shop: Shop,
) -> None:
    c, double = shop.client, shop.double
    _, offers = order_with_offers(c, "o-hang")
    double.set_mode("hang")
    started = time.monotonic()
    r = accept(c, offers[0]["token"], "key-hang")
    elapsed = time.monotonic() - started
    # The processor did charge; only its answer was lost: never "not charged".
    assert r.status_code == 202, r.text
    assert (r.json()["status"], r.json()["code"]) == ("pending", "charge_pending")
    assert r.json()["amount"] == offers[0]["offer_price"]
    assert 4.0 <= elapsed < 8.0, f"the charge call timed out after {elapsed:.1f} s, not ~5 s"
    assert double.charge_count == 1
    double.release.set()
    double.set_mode("ok")
    settled = until_settled(c, offers[0]["token"], "key-hang")
    body = assert_accepted(settled, offers[0], "o-hang")
    assert double.charge_count == 1, "settling charged the buyer a second time"
    assert body["charge_id"] == double.charges[0].charge_id
    assert len({req["idempotency_key"] for req in double.requests}) == 1
    assert accept(c, offers[0]["token"], "key-hang").content == settled.content


def test_after_a_lost_charge_answer_another_key_does_not_charge_twice(shop: Shop) -> None:
    """The processor charged but its answer was lost (202 pending); the shopper clicks again,
    which sends a new Idempotency-Key: the offer's recorded charge is the only one, and the
    processor is only ever asked for it under the same charge key."""
    c, double = shop.client, shop.double
    _, offers = order_with_offers(c, "o-hang-new-key")
    double.set_mode("hang")
    r = accept(c, offers[0]["token"], "key-hang-a")
    assert r.status_code == 202, r.text
    double.release.set()
    double.set_mode("ok")
    again = accept(c, offers[0]["token"], "key-hang-b")
    assert (again.status_code, error_code(again)) in {
        (409, "in_progress"),
        (409, "already_accepted"),
    }, again.text
    body = assert_accepted(
        until_settled(c, offers[0]["token"], "key-hang-a"), offers[0], "o-hang-new-key"
    )
    assert body["charge_id"] == double.charges[0].charge_id
    again = accept(c, offers[0]["token"], "key-hang-b")
    assert (again.status_code, error_code(again)) == (409, "already_accepted")
    assert double.charge_count == 1, "a second click after a lost answer charged twice"
    assert len({req["idempotency_key"] for req in double.requests}) == 1


def test_without_a_charge_url_an_accept_is_502_and_retryable(shop: Shop) -> None:
    c, double = shop.client, shop.double
    set_rules(c, charge_url=None)
    _, offers = order_with_offers(c, "o-no-url")
    r = accept(c, offers[0]["token"], "key-no-url")
    assert r.status_code == 502, r.text
    assert error_code(r) == "charge_failed"
    set_rules(c, charge_url=double.url)
    assert_accepted(accept(c, offers[0]["token"], "key-no-url"), offers[0], "o-no-url")
    assert double.charge_count == 1


def test_charges_are_signed_with_the_new_webhook_secret_after_a_rotation(shop: Shop) -> None:
    c, double = shop.client, shop.double
    r = c.post("/v1/admin/webhook-secret/rotate", headers=ADMIN)
    assert r.status_code == 200, r.text
    new_secret = r.json()["webhook_secret"]
    double.secrets[:] = [new_secret]
    _, offers = order_with_offers(c, "o-rotated")
    assert_accepted(accept(c, offers[0]["token"], "key-rotated"), offers[0], "o-rotated")
    assert double.bad_signatures == 0 and double.charge_count == 1


# -- 1,000 forged tokens -------------------------------------------------------------------------


def _mutations(value: Any, rng: random.Random, others: list[Any]) -> list[Any]:
    if isinstance(value, bool) or value is None:
        return [not value, 0, "x"]
    if isinstance(value, int):
        return [
            value + 1,
            value - 1,
            0,
            -value,
            value * 100,
            value // 2,
            str(value),
            float(value) + 0.5,
            None,
            rng.randrange(1, 10**9),
        ]
    if isinstance(value, str):
        out: list[Any] = [
            value + "x",
            value[:-1],
            "",
            value.upper() if value.upper() != value else value.lower() + "q",
            None,
            7,
            [value],
        ]
        out.extend(o for o in others if o != value)
        return out
    return ["x", None]


def forged_tokens(
    genuine: list[str], keys: Any, other_store_tokens: list[str], rng: random.Random
) -> list[tuple[str, str]]:
    """(category, token) pairs: exactly 1,000 tokens that must never be accepted."""
    forged: list[tuple[str, str]] = []
    genuine_set = set(genuine)
    payloads = [token_payload(t) for t in genuine]
    sigs = [t.partition(".")[2] for t in genuine]
    bodies = [t.partition(".")[0] for t in genuine]
    others: dict[str, list[Any]] = {}
    for p in payloads:
        for name, value in p.items():
            others.setdefault(name, []).append(value)

    def add(category: str, token: str) -> None:
        assert token not in genuine_set
        forged.append((category, token))

    # 1. Every claim mutated (and removed, and an extra claim added), original signature.
    claim_forgeries: list[str] = []
    for p, sig, body in zip(payloads, sigs, bodies, strict=True):
        for name, value in p.items():
            for mutated in [*_mutations(value, rng, others[name]), "<removed>"]:
                if orjson.dumps(mutated) == orjson.dumps(value):
                    continue
                changed = {k: v for k, v in p.items() if k != name}
                if mutated != "<removed>":
                    changed[name] = mutated
                token = reencode(changed, sig)
                assert token.partition(".")[0] != body
                claim_forgeries.append(token)
        for extra in ({"admin": True}, {"ord": "o-someone-else"}, {"exp": p["exp"] + 86400 * 365}):
            claim_forgeries.append(reencode({**p, **extra}, sig))
        # The same claims, serialised differently (whitespace, key order): not the signed bytes.
        for option in (orjson.OPT_INDENT_2, orjson.OPT_SORT_KEYS):
            reserialised = b64(orjson.dumps(p, option=option))
            assert reserialised != body
            claim_forgeries.append(f"{reserialised}.{sig}")
    rng.shuffle(claim_forgeries)
    for token in claim_forgeries[:500]:
        add("claim", token)

    # 2. Wrong signatures on genuine claims.
    for n in range(150):
        i = n % len(genuine)
        body, mac = bodies[i], unb64(sigs[i])
        kind = n % 6
        if kind == 0:
            bad = b64(rng.randbytes(32))
        elif kind == 1:
            flipped = bytearray(mac)
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            bad = b64(bytes(flipped))
        elif kind == 2:
            bad = sigs[(i + 1) % len(genuine)]
        elif kind == 3:
            guess = [DEMO_WEBHOOK_SECRET, "sk_demo", "pk_demo", "", "secret"][n % 5].encode()
            bad = b64(hmac.new(guess, body.encode(), hashlib.sha256).digest())
        elif kind == 4:
            bad = b64(mac[:16])
        else:
            bad = ""
        add("signature", f"{body}.{bad}")

    # 3. Wrong key ids: an unknown kid, or a genuine kid with a key that is not the store's.
    for n in range(100):
        i = n % len(genuine)
        p = payloads[i]
        secret = rng.randbytes(32)
        if n % 2 == 0:
            kid: Any = ["k-unknown", "", "0", p["kid"] + "0", None][n // 2 % 5]
            changed = {**p, "kid": kid}
            body = b64(orjson.dumps(changed))
            add("kid", f"{body}.{b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())}")
        else:
            body = bodies[i]
            add("kid", f"{body}.{b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())}")

    # 4. Truncated genuine tokens.
    for n in range(150):
        t = genuine[n % len(genuine)]
        add("truncated", t[: rng.randrange(1, len(t))])

    # 5. Another store's genuine tokens.
    for n in range(50):
        add("other_store", other_store_tokens[n % len(other_store_tokens)])

    # 6. Genuinely signed with the store's key, but expired.
    key = keys[0]
    for n in range(50):
        p = payloads[n % len(genuine)]
        now = int(time.time())
        exp = now - rng.randrange(1, 7 * 86400)
        claims = OfferClaims(
            store_id=p["st"],
            surface=p["sf"],
            offer_id=p["o"],
            product_id=p["p"],
            kind=p["k"],
            price=p["pr"],
            discount_pct=p["d"],
            offer_price=p["op"],
            currency=p["c"],
            issued_at=exp - 3600,
            expires_at=exp,
            nonce=f"{p['n']}{n}",
            order_id=p.get("ord"),
            arm=p.get("x"),
        )
        token = sign(claims, key)
        # The same claims with a future expiry would verify: only the expiry is wrong.
        verify(sign(replace(claims, expires_at=now + 3600), key), keys, now)
        add("expired", token)

    assert len(forged) == 1000, len(forged)
    return forged


def test_a_thousand_forged_tokens_are_never_accepted_and_never_charged(shop: Shop) -> None:
    c, double = shop.client, shop.double
    genuine: list[str] = []
    for n, products in enumerate((["cam-x100"], ["coffee-500g"], ["serum-30ml"])):
        _, offers = order_with_offers(c, f"o-forge-{n}", products)
        genuine.extend(o["token"] for o in offers)

    other = shop.server.create_store("Other", rules=local_charging(double))
    other_admin = {"Authorization": f"Bearer {other.secret_key}"}
    catalog = c.get("/v1/admin/catalog", params={"limit": 1000}, headers=ADMIN).json()["products"]
    assert c.put("/v1/admin/catalog", json=catalog, headers=other_admin).status_code == 200
    other_tokens: list[str] = []
    for n in range(2):
        # The same order id as the demo store's, so only the store tells them apart.
        order_token = place_order(c, f"o-forge-{n}", ["cam-x100"], headers=other_admin)
        offers = thank_you_offers(c, f"o-forge-{n}", order_token, key=other.publishable_key)
        other_tokens.extend(o["token"] for o in offers)
    assert other_tokens

    keys = signing_keys(shop.server.store_url, "demo")
    forged = forged_tokens(genuine, keys, other_tokens, random.Random(1729))
    local = threading.local()

    def send(item: tuple[int, tuple[str, str]]) -> tuple[str, int, str]:
        n, (category, token) = item
        if not hasattr(local, "client"):
            local.client = shop.server.client()
        r = accept(local.client, token, f"forged-{n}")
        return category, r.status_code, error_code(r)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, enumerate(forged)))

    assert double.charge_count == 0 and double.requests == []
    assert not [r for r in results if r[1] == 200]
    outcomes = Counter((cat, status, code) for cat, status, code in results)
    unexpected = {
        k: v
        for k, v in outcomes.items()
        if k[1:] != ((410, "offer_expired") if k[0] == "expired" else (403, "bad_token"))
    }
    assert not unexpected, unexpected
    # The genuine offers were never consumed by the forgeries.
    claims = token_payload(genuine[0])
    offer = {"product_id": claims["p"], "offer_price": {"amount": claims["op"], "currency": "USD"}}
    body = assert_accepted(accept(c, genuine[0], "forge-genuine"), offer, "o-forge-0")
    assert body["charge_id"] == double.charges[0].charge_id


# -- decline and downsell ------------------------------------------------------------------------


def test_decline_returns_a_cheaper_sibling_never_the_declined_product(shop: Shop) -> None:
    c = shop.client
    keys = signing_keys(shop.server.store_url, "demo")
    downsells = 0
    declined: set[str] = set()
    for n, products in enumerate((["tripod-travel"], ["french-press"], ["grinder-burr"])):
        order_id = f"o-decline-{n}"
        order_token, offers = order_with_offers(c, order_id, products)
        for offer in offers:
            r = c.post("/v1/decline", json={"key": PK, "token": offer["token"]})
            assert r.status_code == 200, r.text
            assert set(r.json()) >= {"downsell"}
            declined.add(offer["product_id"])
            down = r.json()["downsell"]
            if down is None:
                continue
            downsells += 1
            assert down["product_id"] != offer["product_id"]
            assert down["product_id"] not in products
            family = FAMILIES[offer["product_id"]]
            assert family is not None and FAMILIES[down["product_id"]] == family
            assert PRICES[down["product_id"]] < PRICES[offer["product_id"]]
            assert down["offer_price"]["amount"] < offer["offer_price"]["amount"]
            assert down["kind"] == "downsell"
            claims = verify(down["token"], keys, time.time())
            assert claims.product_id == down["product_id"]
            assert claims.order_id == order_id
            assert claims.surface == "thank_you"
            assert claims.offer_price == down["offer_price"]["amount"]
            # The downsell's token is good for a one-click accept.
            r = accept(c, down["token"], f"key-downsell-{n}")
            assert_accepted(r, down, order_id)
        again = thank_you_offers(c, order_id, order_token, limit=2)
        assert not {o["product_id"] for o in again} & {o["product_id"] for o in offers}
    assert downsells >= 1, "no declined thank-you offer had a cheaper sibling"


def test_a_downsell_keeps_the_arm_of_the_offer_declined(shop: Shop) -> None:
    c = shop.client
    experiment = {
        "name": "downsell-discount",
        "surfaces": ["thank_you"],
        "variants": [
            {"name": "none", "discounts": {"downsell": 0}},
            {"name": "twenty", "discounts": {"downsell": 20, "default_cap": 20}},
        ],
    }
    set_rules(c, experiments=[experiment])
    keys = signing_keys(shop.server.store_url, "demo")
    seen: dict[str, set[int]] = {}
    for n in range(16):
        visitor = f"v-downsell-arm-{n}"
        order_id = f"o-downsell-arm-{n}"
        # After a press the offers are coffees: the 500 g bag has a cheaper size to fall back on.
        order_token = place_order(c, order_id, ["french-press"])
        params = {
            "key": PK,
            "surface": "thank_you",
            "order_id": order_id,
            "order_token": order_token,
            "visitor_id": visitor,
            "limit": 2,
        }
        body = c.get("/v1/offers", params=params).json()
        arm = body["experiment"]
        assert arm in ("downsell-discount:none", "downsell-discount:twenty"), body
        for offer in body["offers"]:
            assert verify(offer["token"], keys, time.time()).arm == arm
            r = c.post(
                "/v1/decline", json={"key": PK, "token": offer["token"], "visitor_id": visitor}
            )
            assert r.status_code == 200, r.text
            down = r.json()["downsell"]
            if down is None:
                continue
            # Signed into the same arm, and priced by that arm's rules.
            assert verify(down["token"], keys, time.time()).arm == arm
            seen.setdefault(arm, set()).add(down["discount_pct"])
    assert seen == {"downsell-discount:none": {0}, "downsell-discount:twenty": {20}}


def test_a_declined_product_is_not_offered_again_on_that_order(shop: Shop) -> None:
    c = shop.client
    order_token, offers = order_with_offers(c, "o-no-again")
    gone = offers[0]["product_id"]
    r = c.post("/v1/decline", json={"key": PK, "token": offers[0]["token"]})
    assert r.status_code == 200, r.text
    for surface in ("thank_you", "email"):
        body = c.get(
            "/v1/offers",
            params={
                "key": PK,
                "surface": surface,
                "order_id": "o-no-again",
                "order_token": order_token,
                "limit": 5,
            },
        ).json()
        assert gone not in {o["product_id"] for o in body["offers"]}, surface


def test_decline_with_a_forged_token_is_403(shop: Shop) -> None:
    c = shop.client
    order_token, offers = order_with_offers(c, "o-decline-forged")
    payload = token_payload(offers[0]["token"])
    forged = reencode({**payload, "p": "sd-64"}, offers[0]["token"].partition(".")[2])
    r = c.post("/v1/decline", json={"key": PK, "token": forged})
    assert r.status_code == 403, r.text
    assert error_code(r) == "bad_token"
    # The real offer was not declined by the forgery.
    again = thank_you_offers(c, "o-decline-forged", order_token)
    assert offers[0]["product_id"] in {o["product_id"] for o in again}


def test_decline_outside_thank_you_has_no_downsell_and_is_remembered(shop: Shop) -> None:
    c = shop.client
    params: dict[str, Any] = {
        "key": PK,
        "surface": "product_page",
        "product_id": "cam-x100",
        "limit": 5,
    }
    visitor = {**params, "visitor_id": "v-decliner"}
    offers = c.get("/v1/offers", params=visitor).json()["offers"]
    gone = offers[0]["product_id"]
    r = c.post(
        "/v1/decline", json={"key": PK, "token": offers[0]["token"], "visitor_id": "v-decliner"}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"downsell": None}
    assert gone not in {
        o["product_id"] for o in c.get("/v1/offers", params=visitor).json()["offers"]
    }
    # Only that visitor's "no": others still see it.
    others = c.get("/v1/offers", params={**params, "visitor_id": "v-other"}).json()
    assert others["holdout"] or gone in {o["product_id"] for o in others["offers"]}


# -- processes: two servers on one file (SIGKILL mid-charge: test_charge_settlement.py) -----------


def test_fifty_concurrent_accepts_across_two_processes_charge_once(
    tmp_path: Path, double: ChargeDouble
) -> None:
    store_url = f"sqlite:///{tmp_path}/o.db"
    prepare_demo_store(store_url, charge_url=double.url, holdout_share=0)
    double.delay_s = 0.5  # the first accept is still charging while the others arrive
    a = ServeProcess(store_url, tmp_path / "a.log")
    try:
        b = ServeProcess(store_url, tmp_path / "b.log")
        try:
            with a.client() as ca, b.client() as cb:
                order_token = place_order(ca, "o-race", ["cam-x100"])
                offers = thank_you_offers(cb, "o-race", order_token)
                assert offers
            body = orjson.dumps({"key": PK, "token": offers[0]["token"], "quantity": 1})
            barrier = threading.Barrier(50)

            def one(n: int) -> tuple[int, bytes]:
                barrier.wait()
                return send_accept((a, b)[n % 2].url, "race-key", body)

            with ThreadPoolExecutor(50) as pool:
                results = list(pool.map(one, range(50)))
            statuses = Counter(status for status, _ in results)
            assert set(statuses) <= {200, 409}, (statuses, [r for r in results if r[0] >= 500])
            successes = {content for status, content in results if status == 200}
            assert len(successes) <= 1, successes
            for status, content in results:
                if status == 409:
                    assert orjson.loads(content)["error"]["code"] == "in_progress", content
            # Whatever raced, the key ends in one success that both processes replay.
            final = {send_accept(p.url, "race-key", body) for p in (a, b)}
            assert len(final) == 1, final
            ((status, content),) = final
            assert status == 200, content
            assert successes in (set(), {content})
            assert orjson.loads(content)["charge_id"] == double.charges[0].charge_id
            assert double.charge_count == 1
            assert len(double.requests) == 1, "the charge endpoint was called more than once"
        finally:
            b.stop()
    finally:
        a.stop()
