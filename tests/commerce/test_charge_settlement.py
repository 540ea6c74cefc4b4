"""A charge whose outcome is unknown (a slow endpoint, a killed service, a killed Redis) is never
answered as not charged: it is recorded before the call and settled by the service itself,
without a client retry, and recorded exactly once. Real servers throughout: `offer-service
serve` processes, redis-server, and the merchant's charge endpoint as a real HTTP server."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from offer_service.settings import Settings
from offer_service.storage import open_store
from offer_service.web.models import AcceptPending
from offer_service_tools.charge_double import ChargeDouble, running_charge_double
from offer_service_tools.demo import DEMO_STORE_ID, DEMO_WEBHOOK_SECRET
from tests.conftest import LiveServer, run_server
from tests.flows import (
    PK,
    accept,
    error_code,
    order_with_offers,
    place_order,
    send_accept,
    set_rules,
    thank_you_offers,
)
from tests.processes import ServeProcess, prepare_demo_store
from tests.redis_servers import RELAXED, RedisServer, running_redis

pytestmark = pytest.mark.timeout(240)

# Short enough for the tests to be quick, long enough for a busy two-core machine.
CHARGE_TIMEOUT_S = 0.5
SETTLE_INTERVAL_S = 0.2
FAST = {
    "OFFER_CHARGE_TIMEOUT": "3",
    "OFFER_SETTLE_INTERVAL": str(SETTLE_INTERVAL_S),
    "OFFER_SETTLE_TIMEOUT": "5",
}
# What the contract promises: settled within a minute, without the client's help.
SETTLE_WITHIN_S = 60.0


@pytest.fixture
def double() -> Iterator[ChargeDouble]:
    yield from running_charge_double([DEMO_WEBHOOK_SECRET])


@pytest.fixture
def fast_server(tmp_path: Path) -> Iterator[LiveServer]:
    """The demo store served with a short charge timeout and a settler that looks often."""
    yield from run_server(
        Settings(
            store_url=f"sqlite:///{tmp_path}/offers.db",
            demo=True,
            allow_private_charge_urls=True,
            charge_timeout_s=CHARGE_TIMEOUT_S,
            settle_interval_s=SETTLE_INTERVAL_S,
            settle_timeout_s=5.0,
        )
    )


def recorded(store_url: str, order_id: str, product_id: str) -> tuple[int, list[str]]:
    """Read straight from the store: the order's lines of `product_id` (their quantities
    summed, 0 when none) and the charge ids of the accepts recorded for it."""

    async def run() -> tuple[int, list[str]]:
        store = open_store(store_url)
        await store.open()
        try:
            order = await store.get_order(DEMO_STORE_ID, order_id)
            assert order is not None
            quantity = sum(line.quantity for line in order.lines if line.product_id == product_id)
            charge_ids = [
                a.charge_id
                async for a in store.iter_accepts(DEMO_STORE_ID, 0, 2**53)
                if (a.order_id, a.product_id) == (order_id, product_id)
            ]
            return quantity, charge_ids
        finally:
            await store.close()

    return asyncio.run(run())


def wait_for(check: Callable[[], bool], timeout_s: float = SETTLE_WITHIN_S) -> float:
    """Seconds until `check()` held; fails the test past `timeout_s`."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, "not settled in time"
        time.sleep(0.1)
    return time.monotonic() - started


def assert_settled_answer(r: httpx.Response, double: ChargeDouble, order_id: str) -> None:
    """A 200 that names the charge the processor made, at the amount it charged."""
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    (charge,) = [ch for ch in double.charges if ch.order_id == order_id]
    assert body["status"] == "accepted"
    assert body["charge_id"] == charge.charge_id
    assert body["charged"] == {"amount": charge.amount, "currency": charge.currency}


# -- (a) an endpoint slower than the timeout ----------------------------------------------------


def test_a_charge_endpoint_slower_than_the_timeout_is_settled_never_reported_not_charged(
    fast_server: LiveServer, double: ChargeDouble
) -> None:
    orders = [f"o-slow-{n}" for n in range(6)]
    with fast_server.client() as c:
        set_rules(c, charge_url=double.url, holdout_share=0)
        offers = {order_id: order_with_offers(c, order_id)[1][0] for order_id in orders}
        double.delay_s = CHARGE_TIMEOUT_S * 3  # every call outlives the accept's timeout
        answers = {
            order_id: accept(c, offer["token"], f"key-{order_id}")
            for order_id, offer in offers.items()
        }
        sent = time.monotonic()
        statuses = [r.status_code for r in answers.values()]
        not_charged = sum(r.status_code == 502 for r in answers.values())
        assert not_charged == 0, [r.text for r in answers.values()]
        for r in answers.values():
            AcceptPending.model_validate_json(r.content)
            assert (r.status_code, r.json()["status"], r.json()["code"]) == (
                202,
                "pending",
                "charge_pending",
            ), r.text

        # No client retry: the service settles each charge itself.
        def all_recorded() -> bool:
            return all(
                recorded(fast_server.store_url, o, offers[o]["product_id"])[0] == 1 for o in orders
            )

        wait_for(all_recorded)
        settled_s = time.monotonic() - sent
        print(
            f"\nslow endpoint: {not_charged}/6 answered 502, statuses {statuses}; all 6 "
            f"recorded {settled_s:.1f} s after the last answer"
        )
        assert double.charge_count == 6
        for order_id, offer in offers.items():
            quantity, charge_ids = recorded(fast_server.store_url, order_id, offer["product_id"])
            (charge,) = [ch for ch in double.charges if ch.order_id == order_id]
            assert (quantity, charge_ids) == (1, [charge.charge_id])
            # The key now replays the settled answer, byte for byte.
            replay = accept(c, offer["token"], f"key-{order_id}")
            assert_settled_answer(replay, double, order_id)
            assert accept(c, offer["token"], f"key-{order_id}").content == replay.content
        assert double.charge_count == 6 and double.mismatches == 0


# -- (d) the same key with another body, after an unknown or a failed outcome --------------------


def test_the_same_key_with_another_quantity_after_an_unknown_outcome_is_422(
    fast_server: LiveServer, double: ChargeDouble
) -> None:
    with fast_server.client() as c:
        set_rules(c, charge_url=double.url, holdout_share=0)
        _, offers = order_with_offers(c, "o-changed")
        offer = offers[0]
        double.delay_s = CHARGE_TIMEOUT_S * 3
        first = accept(c, offer["token"], "key-changed", quantity=1)
        assert first.status_code == 202, first.text
        changed = accept(c, offer["token"], "key-changed", quantity=2)
        assert (changed.status_code, error_code(changed)) == (422, "idempotency_key_reused")
        # Another key cannot start a second charge for the offer either.
        other = accept(c, offer["token"], "key-changed-2", quantity=2)
        assert (other.status_code, error_code(other)) in {
            (409, "in_progress"),
            (409, "already_accepted"),
        }
        wait_for(lambda: recorded(fast_server.store_url, "o-changed", offer["product_id"])[0] > 0)
        assert accept(c, offer["token"], "key-changed", quantity=2).status_code == 422
        settled = accept(c, offer["token"], "key-changed", quantity=1)
        assert_settled_answer(settled, double, "o-changed")
        assert settled.json()["charged"]["amount"] == offer["offer_price"]["amount"]
        quantity, charge_ids = recorded(fast_server.store_url, "o-changed", offer["product_id"])
        assert (quantity, len(charge_ids)) == (1, 1)
        assert double.charge_count == 1 and double.mismatches == 0


def test_the_same_key_with_another_quantity_after_a_502_is_422(
    fast_server: LiveServer, double: ChargeDouble
) -> None:
    with fast_server.client() as c:
        set_rules(c, charge_url=double.url, holdout_share=0)
        _, offers = order_with_offers(c, "o-502-changed")
        offer = offers[0]
        double.set_mode("error")
        failed = accept(c, offer["token"], "key-502-changed", quantity=1)
        assert (failed.status_code, error_code(failed)) == (502, "charge_failed")
        double.set_mode("ok")
        changed = accept(c, offer["token"], "key-502-changed", quantity=2)
        assert (changed.status_code, error_code(changed)) == (422, "idempotency_key_reused")
        retry = accept(c, offer["token"], "key-502-changed", quantity=1)
        assert_settled_answer(retry, double, "o-502-changed")
        assert double.charge_count == 1


def test_a_refusal_after_a_lost_answer_does_not_drop_the_charge(
    fast_server: LiveServer, double: ChargeDouble
) -> None:
    """The first call charged and its answer was lost; the endpoint then fails (500) for a
    while: that proves nothing about the first call, so the charge stays recorded and the offer
    taken until the endpoint answers for the processor key."""
    with fast_server.client() as c:
        set_rules(c, charge_url=double.url, holdout_share=0)
        _, offers = order_with_offers(c, "o-lost-then-500")
        offer = offers[0]
        double.set_mode("hang")
        first = accept(c, offer["token"], "key-lost")
        assert first.status_code == 202, first.text
        double.set_mode("error")
        wait_for(lambda: len(double.requests) >= 3)  # the settler was refused twice
        assert double.charge_count == 1
        again = accept(c, offer["token"], "key-lost")
        assert again.status_code == 202, again.text
        other = accept(c, offer["token"], "key-lost-2")
        assert (other.status_code, error_code(other)) == (409, "in_progress"), other.text
        # Without a charge_url for a while, still never "not charged".
        set_rules(c, charge_url=None)
        assert accept(c, offer["token"], "key-lost").status_code == 202
        set_rules(c, charge_url=double.url)
        double.set_mode("ok")
        wait_for(lambda: recorded(fast_server.store_url, "o-lost-then-500", offer["product_id"])[0])
        assert_settled_answer(accept(c, offer["token"], "key-lost"), double, "o-lost-then-500")
        assert double.charge_count == 1
        assert len({req["idempotency_key"] for req in double.requests}) == 1


# -- (b) the service killed mid-charge -----------------------------------------------------------


def _doomed_accept(url: str, key: str, body: bytes) -> tuple[threading.Thread, list[object]]:
    """An accept sent from a thread whose answer (or error) lands in the list."""
    outcome: list[object] = []

    def send() -> None:
        try:
            outcome.append(send_accept(url, key, body))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=send)
    caller.start()
    return caller, outcome


def test_sigkill_mid_charge_is_settled_after_a_restart_without_a_client_retry(
    tmp_path: Path, double: ChargeDouble
) -> None:
    store_url = f"sqlite:///{tmp_path}/o.db"
    prepare_demo_store(store_url, charge_url=double.url, holdout_share=0)
    first = ServeProcess(store_url, tmp_path / "first.log", env=FAST)
    try:
        with first.client() as c:
            order_token = place_order(c, "o-killed", ["cam-x100"])
            offers = thank_you_offers(c, "o-killed", order_token)
        body = orjson.dumps({"key": PK, "token": offers[0]["token"], "quantity": 1})
        double.set_mode("ok", hold=True)
        caller, outcome = _doomed_accept(first.url, "killed-key", body)
        assert double.received.wait(15), "the charge never reached the charge endpoint"
        first.kill()
    finally:
        if first.proc.poll() is None:
            first.stop()
    # The processor finishes charging after the service died; its answer goes nowhere.
    double.release.set()
    wait_for(lambda: double.charge_count == 1, 10)
    caller.join(timeout=30)
    assert outcome and isinstance(outcome[0], httpx.HTTPError), outcome
    double.set_mode("ok")
    product_id = offers[0]["product_id"]
    assert recorded(store_url, "o-killed", product_id) == (0, [])

    second = ServeProcess(store_url, tmp_path / "second.log", env=FAST)
    try:
        restarted = time.monotonic()
        # Nobody asks: the restarted service settles the charge by itself.
        wait_for(lambda: recorded(store_url, "o-killed", product_id)[0] > 0)
        settled_s = time.monotonic() - restarted
        print(f"\nSIGKILL mid-charge: recorded {settled_s:.1f} s after the restart")
        charge = double.charges[0]
        assert recorded(store_url, "o-killed", product_id) == (1, [charge.charge_id])
        keys = {req["idempotency_key"] for req in double.requests}
        assert len(double.requests) == 2 and len(keys) == 1 and double.charge_count == 1
        status, content = send_accept(second.url, "killed-key", body)
        assert status == 200, content
        answer = orjson.loads(content)
        assert (answer["status"], answer["charge_id"]) == ("accepted", charge.charge_id)
        assert answer["charged"] == {"amount": charge.amount, "currency": charge.currency}
        status, other = send_accept(second.url, "killed-key-2", body)
        assert (status, orjson.loads(other)["error"]["code"]) == (409, "already_accepted")
        # The item is bought: the order's offers no longer include it.
        with second.client() as c:
            again = thank_you_offers(c, "o-killed", order_token)
            assert product_id not in {o["product_id"] for o in again}
        assert double.charge_count == 1 and len(double.requests) == 2
    finally:
        second.stop()


# -- (c) Redis killed mid-charge -----------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path / "redis")


def test_redis_killed_mid_charge_is_never_answered_as_not_charged(
    tmp_path: Path, redis_server: RedisServer, double: ChargeDouble
) -> None:
    url = redis_server.url  # the production timeouts
    prepare_demo_store(url, charge_url=double.url, holdout_share=0)
    order_id = f"redis-killed-{uuid.uuid4().hex[:6]}"
    # The call is held long enough for Redis to have written everything to its AOF
    # (`appendfsync everysec` may keep the last second or two of writes from a SIGKILL).
    env = {**FAST, "OFFER_CHARGE_TIMEOUT": "15", "OFFER_SPOOL_DIR": str(tmp_path / "spool")}
    service = ServeProcess(url, tmp_path / "service.log", env=env)
    try:
        with service.client() as c:
            _, offers = order_with_offers(c, order_id)
        product_id = offers[0]["product_id"]
        body = orjson.dumps({"key": PK, "token": offers[0]["token"], "quantity": 1})
        double.set_mode("ok", hold=True)
        caller, outcome = _doomed_accept(service.url, "redis-key", body)
        assert double.received.wait(15), "the charge never reached the charge endpoint"
        time.sleep(3)
        redis_server.kill()
        double.release.set()  # charged, while the store that would record it is gone
        caller.join(timeout=60)
        assert outcome and isinstance(outcome[0], tuple), outcome
        status, content = outcome[0]
        answer = orjson.loads(content)
        print(f"\nRedis killed mid-charge: answered {status} {content[:80]!r}")
        assert double.charge_count == 1
        assert status != 503, "answered 'nothing was charged' while the card was charged"
        assert (status, answer["status"], answer["code"]) == (202, "pending", "charge_pending")
        assert answer["amount"] == {
            "amount": double.charges[0].amount,
            "currency": double.charges[0].currency,
        }
        double.set_mode("ok")

        redis_server.start()
        restarted = time.monotonic()
        # Read with the tests' patient timeouts (the service keeps the production ones).
        wait_for(lambda: recorded(url + RELAXED, order_id, product_id)[0] > 0)
        print(f"recorded {time.monotonic() - restarted:.1f} s after Redis came back")
        expected = (1, [double.charges[0].charge_id])
        assert recorded(url + RELAXED, order_id, product_id) == expected
        status, content = send_accept(service.url, "redis-key", body)
        assert status == 200, content
        assert orjson.loads(content)["charge_id"] == double.charges[0].charge_id
        assert double.charge_count == 1
    finally:
        service.stop()
