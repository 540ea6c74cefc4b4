"""The Store contract for taking pre-purchase offers: kept redeem answers, add events, and order
lines credited to an offer by their token, run against every backend."""

from __future__ import annotations

import asyncio

import pytest

from offer_service.domain.orders import OfferCredit, Order, OrderLine, ProductReturn
from offer_service.exceptions import StoreError
from offer_service.storage.protocols import Store
from tests.storage.test_storage_commerce_contract import event
from tests.storage.test_storage_contract import new_store, store, unique

__all__ = ["store"]

pytestmark = pytest.mark.anyio

NOW = 1_800_000_000_000
HOUR = 3_600_000


async def test_the_first_answer_of_a_key_is_kept_and_read_back(store: Store) -> None:
    record = await new_store(store)
    kept = await store.remember_redemptions(
        record.id, {"k1": (b"first", NOW + HOUR), "k2": (b"other", NOW + HOUR)}, NOW
    )
    assert kept == {"k1": (b"first", True), "k2": (b"other", True)}
    again = await store.remember_redemptions(
        record.id, {"k1": (b"second", NOW + 2 * HOUR), "k3": (b"third", NOW + HOUR)}, NOW + 1
    )
    assert again == {"k1": (b"first", False), "k3": (b"third", True)}


async def test_a_read_only_key_answers_only_what_was_kept(store: Store) -> None:
    record = await new_store(store)
    await store.remember_redemptions(record.id, {"k1": (b"kept", NOW + HOUR)}, NOW)
    assert await store.remember_redemptions(record.id, {"k1": None, "k2": None}, NOW + 1) == {
        "k1": (b"kept", False)
    }


async def test_an_expired_answer_is_gone_and_a_new_one_takes_its_place(store: Store) -> None:
    record = await new_store(store)
    # Redis expires keys on its own clock: the answer lives 150 ms from the call.
    now = NOW
    await store.remember_redemptions(record.id, {"k": (b"old", now + 150)}, now)
    await asyncio.sleep(0.3)
    later = now + 300
    assert await store.remember_redemptions(record.id, {"k": None}, later) == {}
    kept = await store.remember_redemptions(record.id, {"k": (b"new", later + HOUR)}, later)
    assert kept == {"k": (b"new", True)}


async def test_answers_are_kept_per_store(store: Store) -> None:
    a, b = await new_store(store), await new_store(store)
    await store.remember_redemptions(a.id, {"k": (b"a", NOW + HOUR)}, NOW)
    kept = await store.remember_redemptions(b.id, {"k": (b"b", NOW + HOUR)}, NOW)
    assert kept == {"k": (b"b", True)}
    assert await store.remember_redemptions(a.id, {"k": None}, NOW) == {"k": (b"a", False)}


async def test_concurrent_first_answers_of_one_key_agree(store: Store) -> None:
    record = await new_store(store)
    answers = await asyncio.gather(
        *(
            store.remember_redemptions(record.id, {"race": (f"a{i}".encode(), NOW + HOUR)}, NOW)
            for i in range(8)
        )
    )
    assert len({a["race"][0] for a in answers}) == 1
    # Exactly one call kept its answer; every other one found it.
    assert sorted(a["race"][1] for a in answers) == [False] * 7 + [True]


async def test_an_unknown_store_keeps_nothing(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.remember_redemptions(unique("st_none"), {"k": (b"x", NOW + HOUR)}, NOW)


async def test_an_order_line_keeps_the_offer_it_is_credited_to(store: Store) -> None:
    record = await new_store(store)
    credit = OfferCredit("off_1", "cart", "cross_sell", "exp:b")
    bundle = OfferCredit("off_2", "product_page", "bundle", None)
    placed = Order(
        id="o1",
        placed_at_ms=NOW,
        currency="USD",
        lines=(
            OrderLine("p1", 1, 1000),
            OrderLine("p2", 2, 900, offer=credit),
            OrderLine("p3", 1, 450, offer=bundle),
        ),
        visitor_id="v1",
    )
    await store.add_orders(record.id, [placed])
    got = await store.get_order(record.id, "o1")
    assert got is not None
    assert got.lines == placed.lines
    listed = [o async for o in store.iter_orders(record.id, NOW, NOW + 1)]
    assert [o.lines for o in listed] == [placed.lines]
    baskets = [b async for b in store.iter_baskets(record.id)]
    assert baskets == [frozenset({"p1", "p2", "p3"})]
    # A return rewrites the order: the credits stay.
    await store.add_returns(record.id, [ProductReturn(("p2",), NOW + HOUR, "o1")])
    returned = await store.get_order(record.id, "o1")
    assert returned is not None
    assert returned.lines == placed.lines
    assert returned.returned == ("p2",)


async def test_an_add_is_counted_and_needs_an_impression_like_a_click(store: Store) -> None:
    record = await new_store(store)
    events = [
        event("i1", "impression", visitor="v1"),
        event("a1", "add", visitor="v1"),
        event("a2", "add", visitor="v2"),  # v2 never saw the offer
    ]
    assert await store.record_events(record.id, events, NOW - HOUR) == [True, True, True]
    assert await store.record_events(record.id, [event("a1", "add")], NOW - HOUR) == [False]
    counters = await store.event_counters(record.id)
    assert counters[("cart", "cross_sell", "p1", "", "add")] == 2
    stored = {e.id: e async for e in store.iter_events(record.id, NOW - HOUR, NOW + HOUR)}
    assert (stored["a1"].type, stored["a1"].flag) == ("add", None)
    assert stored["a2"].flag == "no_impression"
