"""A warm GET /v1/offers answered in the turn it arrived, without an ASGI task (connections.py,
dispatch.py, `Engine.offers_now`), on a real `offer-service serve`: the same answer the app's
task gives, counted the same; a visitor's state, a rate limit and a trusted proxy's client
address hold on it; pipelined requests are answered in order; whatever must wait or fail still
takes the task's way."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import pytest

from tests.flows import PK
from tests.processes import ServeProcess, new_shopper, prepare_demo_store
from tests.prometheus import answered_in_turn

# The demo store limited to BURST browser requests a client.
from tests.web.test_client_address import BURST, limited_store

pytestmark = pytest.mark.timeout(120)

ORIGIN = "http://localhost:8000"
PAGE = {"key": PK, "surface": "product_page", "product_id": "cam-x100"}
# Headers whose values differ between any two answers.
PER_ANSWER = {b"date", b"x-request-id"}


@contextmanager
def serving(url: str, tmp_path: Path, **env: str) -> Iterator[ServeProcess]:
    process = ServeProcess(url, tmp_path / "serve.log", env=env)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServeProcess]:
    url = f"sqlite:///{tmp_path}/offers.db"
    # No exploration slot: two answers to the same request name the same offers.
    prepare_demo_store(url, learning={"explore_share": 0.0})
    with serving(url, tmp_path) as process:
        yield process


def without_request_id(body: bytes) -> dict[str, object]:
    answer = orjson.loads(body)
    assert isinstance(answer, dict)
    answer.pop("request_id")
    return answer


def test_a_warm_request_is_answered_in_turn_as_the_task_answers_it(
    service: ServeProcess,
) -> None:
    visitor = new_shopper("turn")
    params = {**PAGE, "visitor_id": visitor}
    headers = {"Origin": ORIGIN}
    with httpx.Client(base_url=service.url) as client:
        cold = client.get("/v1/offers", params=params, headers=headers)
        assert cold.status_code == 200, cold.text
        asked = 1
        # The store's version and the visitor index are checked twice a second, by the task:
        # a request may meet that check; the next one is answered in turn.
        for _ in range(20):
            before = answered_in_turn(service.url)
            warm = client.get("/v1/offers", params=params, headers=headers)
            asked += 1
            if answered_in_turn(service.url) == before + 1:
                break
        else:
            pytest.fail("no request was answered in turn")
        # A connection to be closed is the task's to answer (uvicorn says so and closes it).
        closing = client.get(
            "/v1/offers", params=params, headers={**headers, "Connection": "close"}
        )
        asked += 1
        assert answered_in_turn(service.url) == before + 1
    assert warm.status_code == closing.status_code == 200
    assert without_request_id(warm.content) == without_request_id(closing.content)
    assert without_request_id(warm.content) == without_request_id(cold.content)
    assert orjson.loads(warm.content)["offers"], "the demo camera has offers"
    task_headers = [h for h in closing.headers.raw if h[0] != b"connection"]
    assert [h for h in warm.headers.raw if h[0] not in PER_ANSWER] == [
        h for h in task_headers if h[0] not in PER_ANSWER
    ]
    assert warm.headers["access-control-allow-origin"] == ORIGIN
    assert warm.headers["x-request-id"] != closing.headers["x-request-id"]
    assert warm.headers["x-request-id"] == orjson.loads(warm.content)["request_id"]
    # Counted as the task's answers are.
    scrape = httpx.get(service.url + "/metrics").text
    counted = (
        f'offer_offers_requests_total{{surface="product_page",method="GET",status="200"}} {asked}'
    )
    assert counted in scrape


def test_a_visitors_state_holds_on_the_answers_in_turn(service: ServeProcess) -> None:
    """A decline is read from the store by the task, then held: the warm answers in turn
    leave the declined product out as well."""
    visitor = new_shopper("declines")
    params = {**PAGE, "visitor_id": visitor}
    with httpx.Client(base_url=service.url) as client:
        offers = client.get("/v1/offers", params=params).json()["offers"]
        declined = offers[0]
        r = client.post(
            "/v1/decline", json={"key": PK, "token": declined["token"], "visitor_id": visitor}
        )
        assert r.status_code == 200, r.text
        before = answered_in_turn(service.url)
        for _ in range(5):
            answer = client.get("/v1/offers", params=params).json()
            assert declined["product_id"] not in {o["product_id"] for o in answer["offers"]}
        assert answered_in_turn(service.url) >= before + 1


def test_the_rate_limit_counts_each_request_once_whichever_way_it_is_answered(
    tmp_path: Path,
) -> None:
    with serving(limited_store(tmp_path), tmp_path) as service:
        params = {**PAGE, "visitor_id": new_shopper("limited")}
        with httpx.Client(base_url=service.url) as client:
            statuses = [client.get("/v1/offers", params=params) for _ in range(3 * BURST)]
        assert [r.status_code for r in statuses] == [200] * BURST + [429] * (2 * BURST)
        assert all(r.headers["retry-after"] for r in statuses[BURST:])
        assert statuses[-1].json()["error"]["code"] == "rate_limited"
        # The 200s after the first (which filled the caches) were answered in turn, but for
        # one that found the store's version due for its check (each second); no 429 was.
        assert 1 <= answered_in_turn(service.url) <= BURST - 1
        # Each request read its key's store once, whichever way it went.
        scrape = httpx.get(service.url + "/metrics").text
        reads = re.findall(
            r'offer_cache_requests_total\{cache="stores",result="\w+"\} (\S+)', scrape
        )
        assert sum(float(n) for n in reads) == 3 * BURST


def test_a_trusted_proxys_clients_are_counted_apart_in_turn(tmp_path: Path) -> None:
    with serving(limited_store(tmp_path), tmp_path, OFFER_TRUST_PROXY="1") as service:
        params = {**PAGE, "visitor_id": new_shopper("proxied")}
        admitted = []
        with httpx.Client(base_url=service.url) as client:
            for address in ("203.0.113.7", "203.0.113.8"):
                headers = {"X-Forwarded-For": address}
                answers = [
                    client.get("/v1/offers", params=params, headers=headers)
                    for _ in range(2 * BURST)
                ]
                admitted.append(sum(r.status_code == 200 for r in answers))
        assert admitted == [BURST, BURST]
        assert 1 <= answered_in_turn(service.url) <= 2 * BURST - 1


def test_pipelined_requests_are_answered_in_order(service: ServeProcess) -> None:
    path = "/v1/offers?" + str(httpx.QueryParams({**PAGE, "visitor_id": new_shopper("pipe")}))
    httpx.get(service.url + path)  # the caches filled
    ids = [f"pipelined-{n}" for n in range(3)]
    sent = b"".join(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Request-Id: {i}\r\n\r\n".encode() for i in ids
    )
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(sent)
        received = b""
        while received.count(b'"request_id"') < len(ids):
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection"
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK\r\n") == len(ids)
    positions = [received.index(f'"request_id":"{i}"'.encode()) for i in ids]
    assert positions == sorted(positions)
    assert answered_in_turn(service.url) >= 1
