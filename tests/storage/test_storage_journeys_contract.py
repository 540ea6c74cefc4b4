"""The Store contract for journeys (order lifecycle events, SMS consent, feed keys, tracked
links): run against every backend."""

from __future__ import annotations

import pytest

from offer_service.domain.lifecycle import OrderEvent, ShortLink, SmsConsent
from offer_service.exceptions import StoreError
from offer_service.storage.protocols import Store
from tests.storage.test_storage_contract import new_store, store, unique

__all__ = ["store"]

pytestmark = pytest.mark.anyio

T = 1_800_000_000_000


def link(code: str, store_id: str, product_id: str = "p1") -> ShortLink:
    return ShortLink(
        code=code,
        store_id=store_id,
        order_id="o-1",
        touchpoint="shipping",
        surface="email",
        product_id=product_id,
        kind="cross_sell",
        offer_id="off_x",
        offer_price=900,
        currency="USD",
        url=f"https://shop.example/products/{product_id}",
        visitor_id="order:o-1",
    )


async def test_order_events_are_kept_once_each_oldest_first(store: Store) -> None:
    record = await new_store(store)
    delivered = OrderEvent("o-1", "delivered", T + 3, ())
    shipped = OrderEvent("o-1", "shipped", T + 1, ())
    returned = OrderEvent("o-1", "returned", T + 5, ("b", "a"))
    assert await store.add_order_event(record.id, delivered) is True
    assert await store.add_order_event(record.id, shipped) is True
    assert await store.add_order_event(record.id, returned) is True
    # A redelivered webhook (same type, time and lines, in any order) is the same event.
    assert not await store.add_order_event(
        record.id, OrderEvent("o-1", "returned", T + 5, ("a", "b"))
    )
    events = await store.order_events(record.id, "o-1")
    assert [(e.type, e.at_ms) for e in events] == [
        ("shipped", T + 1),
        ("delivered", T + 3),
        ("returned", T + 5),
    ]
    assert events[2] == OrderEvent("o-1", "returned", T + 5, ("a", "b"))
    assert await store.order_events(record.id, "o-2") == []
    other = await new_store(store)
    assert await store.order_events(other.id, "o-1") == []


async def test_order_events_of_an_unknown_store_are_refused(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.add_order_event(unique("st_"), OrderEvent("o-1", "shipped", T))


async def test_sms_consent_keeps_its_history(store: Store) -> None:
    record = await new_store(store)
    opt_in = SmsConsent("c-1", "opted_in", T, "checkout_checkbox")
    opt_out = SmsConsent("c-1", "opted_out", T + 10, "")
    assert await store.add_sms_consent(record.id, opt_out) is True
    assert await store.add_sms_consent(record.id, opt_in) is True
    assert await store.add_sms_consent(record.id, opt_in) is False
    assert await store.sms_consents(record.id, "c-1") == [opt_in, opt_out]
    assert await store.sms_consents(record.id, "c-2") == []


async def test_a_feed_key_rotation_keeps_one_previous_key(store: Store) -> None:
    record = await new_store(store)
    assert await store.feed_keys(record.id) == ()
    first, second, third = unique("fk_"), unique("fk_"), unique("fk_")
    assert await store.rotate_feed_key(record.id, first) == (first,)
    assert await store.store_by_feed_key(first) == record.id
    assert await store.rotate_feed_key(record.id, second) == (second, first)
    assert await store.store_by_feed_key(first) == record.id
    assert await store.rotate_feed_key(record.id, third) == (third, second)
    assert await store.store_by_feed_key(first) is None
    assert await store.store_by_feed_key(second) == record.id
    assert await store.feed_keys(record.id) == (third, second)
    assert await store.store_by_feed_key(unique("fk_")) is None


async def test_a_feed_key_belongs_to_one_store(store: Store) -> None:
    a, b = await new_store(store), await new_store(store)
    key = unique("fk_")
    await store.rotate_feed_key(a.id, key)
    with pytest.raises(StoreError):
        await store.rotate_feed_key(b.id, key)
    assert await store.store_by_feed_key(key) == a.id


async def test_short_links_resolve_by_code_and_keep_their_first_target(store: Store) -> None:
    record = await new_store(store)
    code, other = unique("c"), unique("c")
    await store.put_short_links(record.id, [link(code, record.id), link(other, record.id, "p2")])
    await store.put_short_links(record.id, [link(code, record.id, "p3")])
    assert await store.short_link(code) == link(code, record.id)
    found = await store.short_link(other)
    assert found is not None and found.product_id == "p2"
    assert await store.short_link(unique("c")) is None
    await store.put_short_links(record.id, [])
