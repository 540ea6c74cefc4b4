"""The Store contract for events, idempotency keys, accepts and the list of visitors whose
signals changed: run against every backend."""

from __future__ import annotations

import asyncio

import pytest

from offer_service.domain.events import StoredEvent
from offer_service.domain.orders import OrderLine
from offer_service.domain.records import ChargeAttempt
from offer_service.storage.protocols import Store
from tests.storage.test_storage_contract import new_store, order, product, store, unique

__all__ = ["store"]

pytestmark = pytest.mark.anyio

NOW = 1_800_000_000_000
LEASE = 15_000
TTL = 86_400_000


def event(
    event_id: str, kind: str = "impression", *, visitor: str | None = "v1", product_id: str = "p1"
) -> StoredEvent:
    return StoredEvent(
        id=event_id,
        type=kind,
        ts_ms=NOW,
        received_ms=NOW,
        visitor_id=visitor,
        surface="cart",
        kind="cross_sell",
        product_id=product_id,
        offer_id="off_1",
        order_id=None,
        arm=None,
        offer_price=900,
        currency="USD",
    )


async def test_events_are_stored_once_by_id(store: Store) -> None:
    record = await new_store(store)
    first = await store.record_events(record.id, [event("e1"), event("e2", "click")], NOW - TTL)
    assert first == [True, True]
    again = await store.record_events(record.id, [event("e2", "click"), event("e3")], NOW - TTL)
    assert again == [False, True]
    counters = await store.event_counters(record.id)
    assert counters[("cart", "cross_sell", "p1", "", "impression")] == 2
    assert counters[("cart", "cross_sell", "p1", "", "click")] == 1


async def test_event_ids_are_scoped_to_the_store(store: Store) -> None:
    a, b = await new_store(store), await new_store(store)
    assert await store.record_events(a.id, [event("same")], NOW - TTL) == [True]
    assert await store.record_events(b.id, [event("same")], NOW - TTL) == [True]


async def test_impression_and_decline_events_feed_the_visitor_state(store: Store) -> None:
    record = await new_store(store)
    events = [event(unique("e"), "impression") for _ in range(3)]
    events.append(event(unique("e"), "decline", product_id="p2"))
    await store.record_events(record.id, events, NOW - TTL)
    state = await store.visitor_state(record.id, "v1", None, NOW - TTL)
    assert state.impressions == {"p1": 3}
    assert state.declined == frozenset({"p2"})


async def test_an_idempotency_key_is_claimed_once_and_replays_its_answer(store: Store) -> None:
    record = await new_store(store)
    claim = await store.claim_idempotency(
        record.id, "k", "fp", "owner-1", NOW, lease_ms=LEASE, ttl_ms=TTL
    )
    assert claim.state == "claimed"
    running = await store.claim_idempotency(
        record.id, "k", "fp", "owner-2", NOW + 1, lease_ms=LEASE, ttl_ms=TTL
    )
    assert running.state == "in_progress"
    other_body = await store.claim_idempotency(
        record.id, "k", "fp2", "owner-2", NOW + 1, lease_ms=LEASE, ttl_ms=TTL
    )
    assert other_body.state == "mismatch"
    await store.complete_idempotency(record.id, "k", "owner-1", 200, b'{"ok":1}')
    done = await store.claim_idempotency(
        record.id, "k", "fp", "owner-3", NOW + 2, lease_ms=LEASE, ttl_ms=TTL
    )
    assert (done.state, done.status, done.body) == ("done", 200, b'{"ok":1}')


async def test_a_stale_claim_is_taken_over_and_an_expired_key_is_forgotten(store: Store) -> None:
    record = await new_store(store)
    await store.claim_idempotency(record.id, "k", "fp", "dead", NOW, lease_ms=LEASE, ttl_ms=TTL)
    taken = await store.claim_idempotency(
        record.id, "k", "fp", "new", NOW + LEASE, lease_ms=LEASE, ttl_ms=TTL
    )
    assert taken.state == "claimed"
    # Only the current owner completes it.
    await store.complete_idempotency(record.id, "k", "dead", 500, b"no")
    await store.complete_idempotency(record.id, "k", "new", 201, b"yes")
    done = await store.claim_idempotency(
        record.id, "k", "fp", "x", NOW + LEASE + 1, lease_ms=LEASE, ttl_ms=TTL
    )
    assert (done.status, done.body) == (201, b"yes")
    later = await store.claim_idempotency(
        record.id, "k", "other", "y", NOW + TTL + 1, lease_ms=LEASE, ttl_ms=TTL
    )
    assert later.state == "claimed"


async def test_a_released_key_can_be_claimed_again(store: Store) -> None:
    record = await new_store(store)
    await store.claim_idempotency(record.id, "k", "fp", "a", NOW, lease_ms=LEASE, ttl_ms=TTL)
    await store.release_idempotency(record.id, "k", "a")
    again = await store.claim_idempotency(
        record.id, "k", "fp", "b", NOW, lease_ms=LEASE, ttl_ms=TTL
    )
    assert again.state == "claimed"


async def test_concurrent_claims_of_one_key_give_it_to_exactly_one(store: Store) -> None:
    record = await new_store(store)
    claims = await asyncio.gather(
        *(
            store.claim_idempotency(record.id, "k", "fp", f"o{i}", NOW, lease_ms=LEASE, ttl_ms=TTL)
            for i in range(20)
        )
    )
    assert sorted(c.state for c in claims) == ["claimed"] + ["in_progress"] * 19


async def test_accept_reservations_hold_the_cap_and_one_accept_per_product(store: Store) -> None:
    record = await new_store(store)
    await store.upsert_products(record.id, [product("a"), product("b"), product("c")])
    await store.add_orders(record.id, [order("o1", ["a"], customer="c1")])
    reserve = store.reserve_accept
    assert (
        await reserve(record.id, "o1", "b", "k1", cap=2, now_ms=NOW, lease_ms=LEASE) == "reserved"
    )
    assert (
        await reserve(record.id, "o1", "b", "k2", cap=2, now_ms=NOW, lease_ms=LEASE)
        == "in_progress"
    )
    assert (
        await reserve(record.id, "o1", "b", "k1", cap=2, now_ms=NOW, lease_ms=LEASE) == "reserved"
    )
    await store.complete_accept(record.id, "o1", OrderLine("b", 1, 900), "ch_1", NOW)
    assert (
        await reserve(record.id, "o1", "b", "k2", cap=2, now_ms=NOW, lease_ms=LEASE)
        == "already_accepted"
    )
    assert (
        await reserve(record.id, "o1", "c", "k3", cap=2, now_ms=NOW, lease_ms=LEASE) == "reserved"
    )
    await store.cancel_accept(record.id, "o1", "c", "k3")
    assert (
        await reserve(record.id, "o1", "c", "k4", cap=1, now_ms=NOW, lease_ms=LEASE)
        == "cap_reached"
    )


async def test_a_completed_accept_joins_the_order_and_the_buyers_purchases(store: Store) -> None:
    record = await new_store(store)
    await store.upsert_products(record.id, [product("a"), product("b")])
    await store.add_orders(record.id, [order("o1", ["a"], customer="c1", visitor="v9")])
    await store.reserve_accept(record.id, "o1", "b", "k", cap=3, now_ms=NOW, lease_ms=LEASE)
    await store.complete_accept(record.id, "o1", OrderLine("b", 2, 900), "ch_1", NOW)
    # Completing again (a retry after a crash) changes nothing.
    await store.complete_accept(record.id, "o1", OrderLine("b", 2, 900), "ch_1", NOW)
    got = await store.get_order(record.id, "o1")
    assert got is not None
    assert [(line.product_id, line.quantity, line.price) for line in got.lines] == [
        ("a", 1, 500),
        ("b", 2, 900),
    ]
    state = await store.visitor_state(record.id, "v9", "c1", NOW - TTL)
    assert set(state.purchased) == {"a", "b"}
    assert "b" in state.accepted


async def test_rotating_the_webhook_secret_keeps_the_previous_one(store: Store) -> None:
    record = await new_store(store)
    rotated = await store.rotate_webhook_secret(record.id, "whsec_new")
    assert rotated.webhook_secrets == ("whsec_new", record.webhook_secret)
    again = await store.rotate_webhook_secret(record.id, "whsec_newer")
    assert again.webhook_secrets == ("whsec_newer", "whsec_new")


async def test_a_webhook_secret_can_replace_every_earlier_one(store: Store) -> None:
    record = await new_store(store)
    await store.rotate_webhook_secret(record.id, "whsec_new")
    version = await store.version(record.id)
    only = await store.rotate_webhook_secret(record.id, "whsec_only", keep_previous=False)
    assert only.webhook_secrets == ("whsec_only",)
    assert await store.version(record.id) > version
    read = await store.get_store(record.id)
    assert read is not None and read.webhook_secrets == ("whsec_only",)
    again = await store.rotate_webhook_secret(record.id, "whsec_next")
    assert again.webhook_secrets == ("whsec_next", "whsec_only")


async def test_orders_events_and_accepts_are_read_back_by_time_range(store: Store) -> None:
    from offer_service.domain.orders import ProductReturn

    record = await new_store(store)
    await store.upsert_products(record.id, [product("a"), product("b")])
    await store.add_orders(
        record.id,
        [order("o1", ["a"], at_ms=NOW - 10, customer="c1"), order("o2", ["a", "b"], at_ms=NOW)],
    )
    await store.add_returns(record.id, [ProductReturn(("a",), NOW, order_id="o2")])
    orders = [o async for o in store.iter_orders(record.id, NOW - 10, NOW + 1)]
    assert [o.id for o in orders] == ["o1", "o2"]
    assert orders[1].returned == ("a",) and orders[1].status == "placed"
    assert [o.id async for o in store.iter_orders(record.id, NOW - 5, NOW + 1)] == ["o2"]

    await store.record_events(record.id, [event("e1"), event("e2", "click")], NOW - TTL)
    events = [e async for e in store.iter_events(record.id, NOW, NOW + 1)]
    assert [(e.id, e.type, e.product_id, e.offer_price) for e in events] == [
        ("e1", "impression", "p1", 900),
        ("e2", "click", "p1", 900),
    ]
    assert [e async for e in store.iter_events(record.id, NOW + 1, NOW + 2)] == []

    await store.reserve_accept(record.id, "o1", "b", "k", cap=3, now_ms=NOW, lease_ms=LEASE)
    await store.complete_accept(record.id, "o1", OrderLine("b", 1, 900), "ch_9", NOW)
    accepts = [a async for a in store.iter_accepts(record.id, NOW, NOW + 1)]
    assert [(a.order_id, a.product_id, a.charge_id) for a in accepts] == [("o1", "b", "ch_9")]


async def test_events_are_read_back_of_the_types_asked_for(store: Store) -> None:
    record = await new_store(store)
    batch = [event("e1"), event("e2", "exposure"), event("e3", "click"), event("e4", "view")]
    await store.record_events(record.id, batch, NOW - TTL)
    wanted = frozenset(("impression", "click"))
    found = [e.id async for e in store.iter_events(record.id, NOW, NOW + 1, wanted)]
    assert found == ["e1", "e3"]
    assert [e.id async for e in store.iter_events(record.id, NOW, NOW + 1)] == [
        "e1",
        "e2",
        "e3",
        "e4",
    ]


async def test_reading_many_events_gives_the_event_loop_back(store: Store) -> None:
    """A minute of a busy store's events is read without holding the loop: other tasks run
    while they are decoded, whatever the types asked for."""
    record = await new_store(store)
    for start in range(0, 20_000, 2_000):
        batch = [event(f"e{i}", "exposure", visitor=f"v{i}") for i in range(start, start + 2_000)]
        await store.record_events(record.id, batch, NOW - TTL)
    ticks = 0
    reading = True

    async def tick() -> None:
        nonlocal ticks
        while reading:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    started = ticks
    learned = frozenset(("impression", "click", "accept"))
    assert [e async for e in store.iter_events(record.id, NOW, NOW + 1, learned)] == []
    during_filtered = ticks - started
    assert len([e async for e in store.iter_events(record.id, NOW, NOW + 1)]) == 20_000
    reading = False
    await ticker
    assert during_filtered > 0
    assert ticks - started > during_filtered


async def test_rotating_the_signing_key_keeps_the_previous_one_and_retires_older(
    store: Store,
) -> None:
    from offer_service.domain.records import SigningKey

    record = await new_store(store)
    first = record.signing_keys[0]
    before = await store.version(record.id)
    k2 = SigningKey("k2", b"2" * 32)
    rotated = await store.rotate_signing_key(record.id, k2)
    assert rotated.signing_keys == (k2, first)
    k3 = SigningKey("k3", b"3" * 32)
    again = await store.rotate_signing_key(record.id, k3)
    assert again.signing_keys == (k3, k2)
    assert await store.version(record.id) > before  # cached tokens are signed again


# the visitors whose signals changed (what keeps other processes' held visitor states current)


async def test_visitor_changes_name_the_visitors_signalled_after_the_cursor(store: Store) -> None:
    record, other = await new_store(store), await new_store(store)
    start = await store.visitor_changes(record.id, None)
    if start is None:
        pytest.skip("this backend keeps no list of changed visitors")
    assert start.visitors == frozenset()
    await store.record_visitor_signal(record.id, "v1", "a", "decline", 1_000)
    await store.record_visitor_signal(record.id, "v2", "b", "impression", 1_000)
    await store.record_visitor_signal(record.id, "v1", "c", "accept", 2_000)
    await store.record_visitor_signal(other.id, "v3", "a", "decline", 1_000)
    await store.record_events(record.id, [event("e1", visitor="v4")], 0)  # an event's too

    changed = await store.visitor_changes(record.id, start.cursor)

    assert changed is not None
    assert changed.visitors == {"v1", "v2", "v4"}  # not the other store's visitor
    again = await store.visitor_changes(record.id, changed.cursor)
    assert again is not None and again.visitors == frozenset()
    theirs = await store.visitor_changes(other.id, start.cursor)
    assert theirs is not None and theirs.visitors == {"v3"}


async def test_too_many_visitor_changes_to_list_say_so(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for backend in ("sqlite", "redis"):
        monkeypatch.setattr(f"offer_service.storage.{backend}.signals.VISITOR_CHANGES_MAX", 2)
    record = await new_store(store)
    start = await store.visitor_changes(record.id, None)
    if start is None:
        pytest.skip("this backend keeps no list of changed visitors")
    for n in range(3):
        await store.record_visitor_signal(record.id, f"v{n}", "a", "decline", 1_000)

    changed = await store.visitor_changes(record.id, start.cursor)

    assert changed is not None and changed.visitors is None  # every visitor may have changed
    again = await store.visitor_changes(record.id, changed.cursor)
    assert again is not None and again.visitors == frozenset()


async def test_a_released_key_still_refuses_another_body(store: Store) -> None:
    record = await new_store(store)
    await store.claim_idempotency(record.id, "k", "fp", "a", NOW, lease_ms=LEASE, ttl_ms=TTL)
    await store.release_idempotency(record.id, "k", "a")
    other = await store.claim_idempotency(
        record.id, "k", "other", "b", NOW, lease_ms=LEASE, ttl_ms=TTL
    )
    assert other.state == "mismatch"
    same = await store.claim_idempotency(record.id, "k", "fp", "c", NOW, lease_ms=LEASE, ttl_ms=TTL)
    assert same.state == "claimed"


async def test_settling_a_key_gives_it_its_final_answer_whoever_holds_it(store: Store) -> None:
    record = await new_store(store)
    await store.claim_idempotency(record.id, "k", "fp", "dead", NOW, lease_ms=LEASE, ttl_ms=TTL)
    await store.settle_idempotency(record.id, "k", (200, b'{"settled":1}'))
    done = await store.claim_idempotency(
        record.id, "k", "fp", "x", NOW + 1, lease_ms=LEASE, ttl_ms=TTL
    )
    assert (done.state, done.status, done.body) == ("done", 200, b'{"settled":1}')
    # Releasing through settlement never undoes a final answer.
    await store.settle_idempotency(record.id, "k", None)
    again = await store.claim_idempotency(
        record.id, "k", "fp", "y", NOW + 2, lease_ms=LEASE, ttl_ms=TTL
    )
    assert again.state == "done"
    await store.claim_idempotency(record.id, "k2", "fp", "z", NOW, lease_ms=LEASE, ttl_ms=TTL)
    await store.settle_idempotency(record.id, "k2", None)
    reopened = await store.claim_idempotency(
        record.id, "k2", "fp", "w", NOW + 1, lease_ms=LEASE, ttl_ms=TTL
    )
    assert reopened.state == "claimed"


def attempt(store_id: str, key: str = "k1", quantity: int = 1) -> ChargeAttempt:
    return ChargeAttempt(store_id, "o1", "b", key, "acc_1", quantity, 900, "USD", "off_1", NOW)


async def test_a_charge_is_recorded_once_and_called_by_one_lease_holder(store: Store) -> None:
    record = await new_store(store)
    await store.upsert_products(record.id, [product("a"), product("b")])
    await store.add_orders(record.id, [order("o1", ["a"], customer="c1")])
    assert (
        await store.reserve_accept(record.id, "o1", "b", "k1", cap=3, now_ms=NOW, lease_ms=LEASE)
        == "reserved"
    )
    first = await store.record_charge(attempt(record.id), now_ms=NOW, lease_ms=LEASE)
    assert (first.turn, first.attempt, first.calls, first.charged) == (
        "call",
        attempt(record.id),
        1,
        False,
    )
    # The recorded charge is fixed: another quantity under the same key gets the first one.
    busy = await store.record_charge(attempt(record.id, quantity=2), now_ms=NOW, lease_ms=LEASE)
    assert (busy.turn, busy.attempt) == ("busy", attempt(record.id))
    assert await store.pending_charges(NOW + LEASE - 1, 10) == []
    assert await store.pending_charges(NOW + LEASE, 10) == [(attempt(record.id), 1)]
    # Another key never takes over a recorded charge, however old.
    late = NOW + 100 * LEASE
    assert (
        await store.reserve_accept(record.id, "o1", "b", "k2", cap=3, now_ms=late, lease_ms=LEASE)
        == "in_progress"
    )
    second = await store.record_charge(attempt(record.id, quantity=2), now_ms=late, lease_ms=LEASE)
    assert (second.turn, second.attempt, second.calls) == ("call", attempt(record.id), 2)
    lost = await store.record_charge(attempt(record.id, key="k2"), now_ms=late, lease_ms=LEASE)
    assert lost.turn == "lost"

    await store.complete_accept(record.id, "o1", OrderLine("b", 1, 900), "ch_1", late)
    await store.complete_accept(record.id, "o1", OrderLine("b", 1, 900), "ch_1", late)
    assert await store.pending_charges(late + 10 * LEASE, 10) == []
    got = await store.get_order(record.id, "o1")
    assert got is not None and [line.product_id for line in got.lines] == ["a", "b"]
    assert (
        await store.reserve_accept(record.id, "o1", "b", "k2", cap=3, now_ms=late, lease_ms=LEASE)
        == "already_accepted"
    )
    # Its own key asking again (its answer was lost) gets the recorded charge, marked charged.
    fetched = await store.record_charge(attempt(record.id), now_ms=late, lease_ms=LEASE)
    assert (fetched.turn, fetched.attempt, fetched.charged) == ("call", attempt(record.id), True)


async def test_cancelling_a_recorded_charge_frees_the_offer(store: Store) -> None:
    record = await new_store(store)
    await store.upsert_products(record.id, [product("a"), product("b")])
    await store.add_orders(record.id, [order("o1", ["a"], customer="c1")])
    await store.reserve_accept(record.id, "o1", "b", "k1", cap=3, now_ms=NOW, lease_ms=LEASE)
    await store.record_charge(attempt(record.id), now_ms=NOW, lease_ms=LEASE)
    await store.cancel_accept(record.id, "o1", "b", "k1")
    assert await store.pending_charges(NOW + LEASE, 10) == []
    assert (
        await store.reserve_accept(record.id, "o1", "b", "k2", cap=3, now_ms=NOW, lease_ms=LEASE)
        == "reserved"
    )
    again = await store.record_charge(
        attempt(record.id, key="k2", quantity=2), now_ms=NOW, lease_ms=LEASE
    )
    assert (again.turn, again.attempt) == ("call", attempt(record.id, key="k2", quantity=2))
