"""POST /v1/events against real servers: exact counts for mixed batches, sendBeacon bodies, limits,
and durability across a SIGKILL right after the 202."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from offer_service.domain.policy import StoreRules
from offer_service.domain.tokens import OfferClaims, sign
from offer_service.storage import open_store
from tests.conftest import LiveServer
from tests.flows import (
    PK,
    copy_demo_catalog,
    reencode,
    set_rules,
    signing_keys,
    token_payload,
)
from tests.processes import ServeProcess, prepare_demo_store

SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def now_ms() -> int:
    return int(time.time() * 1000)


def page_tokens(client: httpx.Client, key: str = PK) -> list[str]:
    r = client.get(
        "/v1/offers",
        params={"key": key, "surface": "product_page", "product_id": "cam-x100", "limit": 5},
    )
    assert r.status_code == 200, r.text
    tokens = [o["token"] for o in r.json()["offers"]]
    assert tokens
    return tokens


def event(token: str, type_: str = "impression", **extra: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "type": type_,
        "token": token,
        "ts": now_ms(),
        "visitor_id": "v-events",
        **extra,
    }


def post_events(
    client: httpx.Client, events: list[Any], content_type: str = "application/json"
) -> httpx.Response:
    return client.post(
        "/v1/events",
        content=orjson.dumps({"key": PK, "events": events}),
        headers={"Content-Type": content_type},
    )


def expired_token(store_url: str, genuine: str) -> str:
    """A token the store really signed, with an expiry in the past."""
    p = token_payload(genuine)
    exp = int(time.time()) - 60
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
        nonce=p["n"] + "e",
        order_id=p.get("ord"),
        arm=p.get("x"),
    )
    return sign(claims, signing_keys(store_url, p["st"])[0])


def other_store_token(server: LiveServer, client: httpx.Client) -> str:
    other = server.create_store("Other", rules=StoreRules(holdout_share=0))
    copy_demo_catalog(client, other.secret_key)
    return page_tokens(client, other.publishable_key)[0]


def stored_event_count(store_url: str, store_id: str = "demo") -> int:
    """How many events the store holds, from its per-type counters (one per stored event)."""

    async def run() -> int:
        store = open_store(store_url)
        await store.open()
        try:
            counters = await store.event_counters(store_id)
        finally:
            await store.close()
        return sum(counters.values())

    return asyncio.run(run())


def mixed_batch(
    tokens: list[str], earlier_id: str, forged: str, expired: str, foreign: str
) -> tuple[list[Any], dict[str, Any]]:
    """A batch of good, duplicate, forged and malformed events, and its exact expected counts."""
    good = [
        event(tokens[i % len(tokens)], t) for i, t in enumerate(("impression", "click", "view"))
    ]
    batch: list[Any] = [
        good[0],  # 0 good
        good[1],  # 1 good
        {**good[0], "type": "click"},  # 2 duplicate: same id earlier in this batch
        event(tokens[0], id=earlier_id),  # 3 duplicate: id sent in an earlier batch
        event(forged),  # 4 forged token
        {k: v for k, v in event(tokens[0]).items() if k != "id"},  # 5 missing id
        event(tokens[0], "purchase"),  # 6 wrong type
        event(tokens[0], ts=str(now_ms())),  # 7 ts not an int
        good[2],  # 8 good
        event(tokens[0], ts=now_ms() + 0.5),  # 9 ts a float
        event(expired),  # 10 expired token
        event(foreign),  # 11 another store's token
        "not an event",  # 12 not an object
        event(tokens[0], id=""),  # 13 empty id
        event(tokens[0], id=12345),  # 14 id not a string
        {k: v for k, v in event(tokens[0]).items() if k != "token"},  # 15 no token
        event("x" * 40),  # 16 garbage token
        event(tokens[1], "accept"),  # 17 good
    ]
    expected = {
        "accepted": 4,
        "duplicates": 2,
        "bad_token": [4, 10, 11, 16],
        "malformed": [5, 6, 7, 9, 12, 13, 14, 15],
    }
    return batch, expected


def assert_counts(r: httpx.Response, expected: dict[str, Any]) -> None:
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == expected["accepted"], body
    assert body["duplicates"] == expected["duplicates"], body
    rejected = body["rejected"]
    indexes = [item["index"] for item in rejected]
    assert sorted(indexes) == sorted(expected["bad_token"] + expected["malformed"]), body
    assert len(set(indexes)) == len(indexes), body
    codes = {item["index"]: item["code"] for item in rejected}
    for index in expected["bad_token"]:
        assert codes[index] == "bad_token", (index, body)
    for index in expected["malformed"]:
        assert isinstance(codes[index], str) and SNAKE.match(codes[index]), (index, body)


@pytest.fixture
def shop(demo_server: LiveServer) -> Any:
    with demo_server.client() as client:
        set_rules(client, holdout_share=0)
        yield demo_server, client


def test_a_mixed_batch_counts_exactly(shop: tuple[LiveServer, httpx.Client]) -> None:
    server, c = shop
    tokens = page_tokens(c)
    earlier = event(tokens[0])
    r = post_events(c, [earlier])
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 1, "duplicates": 0, "rejected": []}

    genuine = tokens[0]
    forged = reencode({**token_payload(genuine), "op": 1}, genuine.partition(".")[2])
    batch, expected = mixed_batch(
        tokens,
        earlier["id"],
        forged,
        expired_token(server.store_url, genuine),
        other_store_token(server, c),
    )
    assert_counts(post_events(c, batch), expected)
    assert stored_event_count(server.store_url) == 1 + expected["accepted"]

    # Sent again, every valid event is a duplicate and nothing is stored twice.
    again = post_events(c, batch)
    assert again.status_code == 202, again.text
    body = again.json()
    assert body["accepted"] == 0
    assert body["duplicates"] == expected["accepted"] + expected["duplicates"]
    assert sorted(i["index"] for i in body["rejected"]) == sorted(
        expected["bad_token"] + expected["malformed"]
    )
    assert stored_event_count(server.store_url) == 1 + expected["accepted"]


def test_an_event_stamped_beyond_the_clock_window_is_rejected_with_the_reason(
    shop: tuple[LiveServer, httpx.Client],
) -> None:
    _, c = shop
    token = page_tokens(c)[0]
    day = 86_400_000
    batch = [
        event(token, ts=now_ms() - 400 * day),  # an example copied from last year's docs
        event(token, ts=now_ms() + 8 * day),
        event(token, ts=str(now_ms())),
        event(token, ts=now_ms() - 6 * day),  # a phone's slow clock: kept
    ]
    r = post_events(c, batch)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == 1
    assert [(i["index"], i["code"], i["field"]) for i in body["rejected"]] == [
        (0, "invalid_event", "ts"),
        (1, "invalid_event", "ts"),
        (2, "invalid_event", "ts"),
    ]
    messages = [i["message"] for i in body["rejected"]]
    window = "an event must be stamped within 7 days of it"
    assert (
        messages[0].startswith("ts is 400.0 days before the server's clock")
        and window in messages[0]
    )
    assert (
        messages[1].startswith("ts is 8.0 days after the server's clock") and window in messages[1]
    )
    assert (
        messages[2] == "ts must be a whole number: when the event happened, in epoch milliseconds."
    )


def test_a_text_plain_body_counts_the_same_as_json(shop: tuple[LiveServer, httpx.Client]) -> None:
    server, c = shop
    tokens = page_tokens(c)
    genuine = tokens[0]
    forged = reencode({**token_payload(genuine), "p": "sd-64"}, genuine.partition(".")[2])
    expired = expired_token(server.store_url, genuine)
    foreign = other_store_token(server, c)
    answers = []
    for content_type in ("application/json", "text/plain;charset=UTF-8", "text/plain"):
        earlier = event(tokens[0])
        assert post_events(c, [earlier], content_type).json()["accepted"] == 1
        batch, expected = mixed_batch(tokens, earlier["id"], forged, expired, foreign)
        r = post_events(c, batch, content_type)
        assert_counts(r, expected)
        answers.append(r.json())
    assert answers[0] == answers[1] == answers[2]
    assert stored_event_count(server.store_url) == 3 * (1 + 4)


def test_the_key_can_travel_in_the_query_for_sendbeacon(
    shop: tuple[LiveServer, httpx.Client],
) -> None:
    _, c = shop
    tokens = page_tokens(c)
    r = c.post(
        "/v1/events",
        params={"key": PK},
        content=orjson.dumps({"events": [event(tokens[0])]}),
        headers={"Content-Type": "text/plain"},
    )
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 1


def test_more_than_100_events_is_422_and_over_64_kib_is_413(
    shop: tuple[LiveServer, httpx.Client],
) -> None:
    server, c = shop
    tokens = page_tokens(c)
    events = [event(tokens[i % len(tokens)]) for i in range(101)]
    r = post_events(c, events)
    assert r.status_code == 422, r.text
    assert stored_event_count(server.store_url) == 0, "a refused batch stored some events"
    r = post_events(c, events[:100])
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 100, "duplicates": 0, "rejected": []}

    big = [event(tokens[0], visitor_id="v", pad="x" * 700) for _ in range(100)]
    assert len(orjson.dumps({"key": PK, "events": big})) > 64 * 1024
    r = post_events(c, big)
    assert r.status_code in (413, 422), r.text
    big = [event(tokens[0], pad="x" * 70 * 1024)]
    r = post_events(c, big)
    assert r.status_code == 413, r.text
    # Streamed without a Content-Length (chunked), it is refused all the same.
    raw = orjson.dumps({"key": PK, "events": big})
    r = c.post(
        "/v1/events",
        content=(raw[i : i + 8192] for i in range(0, len(raw), 8192)),
        headers={"Content-Type": "text/plain"},
    )
    assert r.status_code == 413, r.text
    assert stored_event_count(server.store_url) == 100


def test_accepted_events_survive_a_sigkill_right_after_the_202(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path}/o.db"
    prepare_demo_store(store_url, holdout_share=0)
    first = ServeProcess(store_url, tmp_path / "first.log")
    try:
        with first.client() as c:
            tokens = page_tokens(c)
            genuine = tokens[0]
            forged = reencode({**token_payload(genuine), "op": 1}, genuine.partition(".")[2])
            earlier = event(tokens[0])
            assert post_events(c, [earlier]).json()["accepted"] == 1
            # The other store's token is replaced by a second forgery: both are bad_token.
            batch, expected = mixed_batch(
                tokens, earlier["id"], forged, expired_token(store_url, genuine), forged
            )
            # Top the batch up to 100 events with more good ones.
            extra = 100 - len(batch)
            batch += [event(tokens[i % len(tokens)], "view") for i in range(extra)]
            expected["accepted"] += extra
            r = post_events(c, batch)
            first.kill()
        assert_counts(r, expected)
    finally:
        if first.proc.poll() is None:
            first.stop()

    second = ServeProcess(store_url, tmp_path / "second.log")
    try:
        with second.client() as c:
            again = post_events(c, batch)
            assert again.status_code == 202, again.text
            body = again.json()
            assert body["accepted"] == 0, body
            assert body["duplicates"] == expected["accepted"] + expected["duplicates"], body
            assert post_events(c, [earlier]).json() == {
                "accepted": 0,
                "duplicates": 1,
                "rejected": [],
            }
    finally:
        second.stop()
    assert stored_event_count(store_url) == 1 + expected["accepted"]


def test_impressions_feed_the_visitors_frequency_cap(shop: tuple[LiveServer, httpx.Client]) -> None:
    """Stored impressions are what the frequency cap reads: 3 in 24 h without a click rest the
    product for that visitor (the default cap)."""
    _, c = shop
    params: dict[str, Any] = {
        "key": PK,
        "surface": "product_page",
        "product_id": "cam-x100",
        "limit": 5,
        "visitor_id": "v-capped",
    }
    offers = c.get("/v1/offers", params=params).json()["offers"]
    shown = offers[0]
    events = [event(shown["token"], "impression", visitor_id="v-capped") for _ in range(3)]
    assert post_events(c, events).json()["accepted"] == 3
    again = c.get("/v1/offers", params=params).json()["offers"]
    assert shown["product_id"] not in {o["product_id"] for o in again}


def test_an_add_to_cart_is_an_event_counted_like_a_click(
    shop: tuple[LiveServer, httpx.Client],
) -> None:
    server, c = shop
    token = page_tokens(c)[0]
    r = post_events(c, [event(token), event(token, "add"), event(token, "add", visitor_id="v-x")])
    assert r.json() == {"accepted": 3, "duplicates": 0, "rejected": []}

    async def read() -> tuple[dict[tuple[str, str, str, str, str], int], list[Any]]:
        store = open_store(server.store_url)
        await store.open()
        try:
            counters = await store.event_counters("demo")
            stored = [e async for e in store.iter_events("demo", 0, now_ms() + 1000)]
        finally:
            await store.close()
        return counters, stored

    counters, stored = asyncio.run(read())
    p = token_payload(token)
    assert counters[(p["sf"], p["k"], p["p"], p.get("x") or "", "add")] == 2
    adds = {e.visitor_id: e.flag for e in stored if e.type == "add"}
    # The visitor who never saw the offer is invalid traffic, as a click would be.
    assert adds == {"v-events": None, "v-x": "no_impression"}
    # What the service records of a redeemed offer is its own: no client sends one.
    r = post_events(c, [event(token, "redeem")])
    assert [(x["code"], x["field"]) for x in r.json()["rejected"]] == [("invalid_event", "type")]
