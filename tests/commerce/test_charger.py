"""What a charge call's answer says about the card: only a certain "no" is reported as not
charged. Against real sockets and the charge double (a real HTTP server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from offer_service.commerce.charger import Charger, ChargeResult, read_answer
from offer_service_tools.charge_double import ChargeDouble, running_charge_double
from tests.conftest import free_port

SECRET = "whsec_test"
PAYLOAD = {
    "order_id": "o1",
    "product_id": "p1",
    "quantity": 1,
    "amount": {"amount": 900, "currency": "USD"},
    "offer_id": "off_1",
    "idempotency_key": "acc_1",
}


@pytest.fixture
def double() -> Iterator[ChargeDouble]:
    yield from running_charge_double([SECRET])


def charge(url: str, timeout_s: float = 2.0) -> ChargeResult:
    async def run() -> ChargeResult:
        charger = Charger(allow_private=True, timeout_s=timeout_s)
        try:
            return await charger.charge(url, SECRET, PAYLOAD)
        finally:
            await charger.close()

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("status", "content", "meaning"),
    [
        (200, b'{"charge_id": "ch_1"}', "charged"),
        (201, b'{"charge_id": "ch_1"}', "charged"),
        (200, b"{}", "unknown"),
        (200, b"not json", "unknown"),
        (402, b"", "declined"),
        (400, b"", "failed"),
        (401, b"", "failed"),
        (500, b"", "failed"),
        (503, b"", "failed"),
        (502, b"", "unknown"),
        (504, b"", "unknown"),
    ],
)
def test_an_answer_means_charged_declined_not_charged_or_unknown(
    status: int, content: bytes, meaning: str
) -> None:
    assert read_answer(status, content).status == meaning


def test_a_connection_refused_is_certainly_not_charged() -> None:
    assert charge(f"http://127.0.0.1:{free_port()}/charge").status == "failed"


def test_an_answer_later_than_the_timeout_is_unknown_not_failed(double: ChargeDouble) -> None:
    double.delay_s = 1.0
    result = charge(double.url, timeout_s=0.3)
    assert result.status == "unknown", result
    # The endpoint went on and charged: that is why "unknown" is never "not charged".
    time.sleep(1.2)
    assert double.charge_count == 1


def test_a_charge_confirmed_in_time_carries_its_id(double: ChargeDouble) -> None:
    result = charge(double.url)
    assert (result.status, result.charge_id) == ("charged", double.charges[0].charge_id)
