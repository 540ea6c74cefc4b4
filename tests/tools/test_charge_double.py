"""The charge double, over real HTTP: a merchant's signature check, a processor's idempotency,
scripted answers, and the process the load tests start."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from offer_service_tools.charge_double import (
    DECLINED,
    ChargeDouble,
    ChargeRequest,
    Refusal,
    serving,
)
from tests.conftest import free_port

SECRET = "whsec_test"
ROOT = Path(__file__).resolve().parents[2]


def body(key: str = "k-1", order_id: str = "o-1", amount: int = 2699) -> bytes:
    return orjson.dumps(
        {
            "order_id": order_id,
            "product_id": "p-1",
            "quantity": 1,
            "amount": {"amount": amount, "currency": "USD"},
            "offer_id": "off_1",
            "idempotency_key": key,
        }
    )


def signed(content: bytes, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.".encode() + content, hashlib.sha256).hexdigest()
    return {"X-Offer-Signature": f"t={t},v1={mac}"}


def post(url: str, content: bytes, headers: dict[str, str] | dict[str, bytes]) -> httpx.Response:
    return httpx.post(url, content=content, headers=headers, timeout=10)


@pytest.fixture
def double() -> Iterator[ChargeDouble]:
    with serving(ChargeDouble(secrets=[SECRET])) as running:
        yield running


def test_a_signed_charge_is_made_once_per_idempotency_key(double: ChargeDouble) -> None:
    first = post(double.url, body(), signed(body()))
    again = post(double.url, body(), signed(body()))
    other = post(double.url, body("k-2"), signed(body("k-2")))

    assert first.status_code == again.status_code == other.status_code == 200
    assert first.json()["charge_id"] == again.json()["charge_id"] != other.json()["charge_id"]
    assert double.charge_count == 2 and len(double.requests) == 3
    charge = double.charges[0]
    assert (charge.order_id, charge.amount, charge.currency) == ("o-1", 2699, "USD")
    assert charge.as_json()["amount"] == {"amount": 2699, "currency": "USD"}


def test_a_bad_stale_or_missing_signature_is_401_and_charges_nothing(
    double: ChargeDouble,
) -> None:
    content = body()
    answers = [
        post(double.url, content, signed(content, secret="whsec_other")),
        post(double.url, content, signed(content, at=int(time.time()) - 3600)),
        post(double.url, content, {}),
        post(
            double.url, content, {"X-Offer-Signature": f"t={int(time.time())},v1=\u00e9".encode()}
        ),
    ]

    assert [r.status_code for r in answers] == [401] * 4
    assert answers[0].json()["error"]["code"] == "bad_signature"
    assert double.bad_signatures == 4 and double.requests == [] and double.charge_count == 0


def test_a_malformed_body_or_a_reused_key_is_refused(double: ChargeDouble) -> None:
    malformed = b'{"order_id": 3}'
    assert post(double.url, malformed, signed(malformed)).status_code == 422
    assert post(double.url, body(), signed(body())).status_code == 200
    reused = body(amount=1)
    r = post(double.url, reused, signed(reused))

    assert (r.status_code, r.json()["error"]["code"]) == (409, "idempotency_key_reused")
    assert double.mismatches == 1 and double.charge_count == 1


def test_scripted_answers_come_first_then_the_mode(double: ChargeDouble) -> None:
    double.answer_next("error", "decline")
    statuses = [post(double.url, body(), signed(body())).status_code for _ in range(3)]

    assert statuses == [500, 402, 200]
    assert double.declined == 1 and double.charge_count == 1


def test_a_hook_decides_per_request() -> None:
    async def decide(request: ChargeRequest) -> Refusal | None:
        if request.order_id == "unknown":
            return Refusal(404, "unknown_order", "This store has no such order.")
        return DECLINED if request.order_id == "declined" else None

    with serving(ChargeDouble(secrets=[SECRET], decide=decide)) as double:
        unknown = post(double.url, body("k-u", "unknown"), signed(body("k-u", "unknown")))
        declined = post(double.url, body("k-d", "declined"), signed(body("k-d", "declined")))
        charged = post(double.url, body(), signed(body()))

    assert (unknown.status_code, declined.status_code, charged.status_code) == (404, 402, 200)
    assert double.declined == 1 and [c.order_id for c in double.charges] == ["o-1"]


def test_a_route_of_its_own_passes_the_store_secrets_and_hook_per_request() -> None:
    """How a server hosting stores (the demo storefront) mounts it: `respond` with the store's
    secrets and a hook that knows its orders; a known key is answered without asking again."""
    double = ChargeDouble(id_prefix="ch_demo_")
    asked: list[str] = []

    async def decide(request: ChargeRequest) -> Refusal | None:
        asked.append(request.idempotency_key)
        return None

    async def run() -> list[int]:
        statuses = []
        for content, secret in ((body(), SECRET), (body(), SECRET), (body("k-2"), "whsec_x")):
            answer = await double.respond(
                content,
                signed(content, secret)["X-Offer-Signature"],
                secrets=[SECRET],
                decide=decide,
            )
            statuses.append(answer.status_code)
        return statuses

    assert asyncio.run(run()) == [200, 200, 401]
    assert asked == ["k-1"]
    assert [c.charge_id.startswith("ch_demo_") for c in double.charges] == [True]


def test_unsigned_requests_are_charged_when_no_secret_is_known() -> None:
    with serving(ChargeDouble(id_prefix="ch_sim_")) as double:
        r = post(double.url, body(), {})

    assert r.status_code == 200 and r.json()["charge_id"].startswith("ch_sim_")


def test_the_load_tests_start_it_as_a_process_that_verifies_their_secret(
    tmp_path: Path,
) -> None:
    port = free_port()
    command = [sys.executable, str(ROOT / "load_tests" / "charge_server.py")]
    args = ["--host", "127.0.0.1", "--port", str(port), "--webhook-secret", SECRET]
    with (tmp_path / "charge.log").open("wb") as log:
        process = subprocess.Popen([*command, *args], stdout=log, stderr=log)
        try:
            url = f"http://127.0.0.1:{port}/charge"
            deadline = time.monotonic() + 20
            while True:
                try:
                    good = post(url, body(), signed(body()))
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, (tmp_path / "charge.log").read_text()
                    time.sleep(0.1)
            bad = post(url, body(), {})
        finally:
            process.terminate()
            process.wait(10)

    assert good.status_code == 200 and good.json()["charge_id"]
    assert bad.status_code == 401
