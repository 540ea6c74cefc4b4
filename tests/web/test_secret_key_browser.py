"""A secret key on a browser route (offers, events, accept, decline) is refused, 403
`secret_key_on_browser_route`, wherever it travels and whichever way the request is answered:
the hot path's fast query, the model's query, a JSON body, a cached key, a retired one."""

from __future__ import annotations

from typing import Any

import httpx

from offer_service_tools.demo import DEMO_SECRET_KEY
from tests.conftest import LiveServer
from tests.flows import ADMIN, PK

SK = DEMO_SECRET_KEY
PAGE = {"surface": "product_page", "product_id": "cam-x100"}


def refused(r: httpx.Response) -> bool:
    return r.status_code == 403 and r.json()["error"]["code"] == "secret_key_on_browser_route"


def browser_requests(c: httpx.Client, key: str) -> dict[str, httpx.Response]:
    body: dict[str, Any] = {"key": key, "token": "t"}
    return {
        "GET offers, fast query": c.get("/v1/offers", params={"key": key, **PAGE}),
        "GET offers, header": c.get("/v1/offers", params=PAGE, headers={"X-Offer-Key": key}),
        "GET offers, model query": c.get(
            "/v1/offers",
            params={"key": key, "surface": "thank_you", "order_id": "o", "order_token": "t"},
        ),
        "GET offers, invalid query": c.get("/v1/offers", params={"key": key, "surface": "x"}),
        "POST offers": c.post("/v1/offers", json={"key": key, **PAGE}),
        "POST offers, invalid body": c.post("/v1/offers", json={"key": key, "surface": "x"}),
        "POST events": c.post("/v1/events", json={"key": key, "events": []}),
        "POST events, text/plain": c.post(
            "/v1/events",
            content=f'{{"key":"{key}","events":[]}}',
            headers={"Content-Type": "text/plain"},
        ),
        "POST accept": c.post("/v1/accept", json=body, headers={"Idempotency-Key": "sk-1"}),
        "POST decline": c.post("/v1/decline", json=body),
    }


def test_a_secret_key_is_refused_on_every_browser_route(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        # The key is resolved and cached by an admin call first, then asked for twice: a cached
        # key is refused as a fresh one is.
        assert c.get("/v1/admin/rules", headers=ADMIN).status_code == 200
        for _ in range(2):
            answers = browser_requests(c, SK)
            assert {n: refused(r) for n, r in answers.items()} == dict.fromkeys(answers, True)
            for r in answers.values():
                assert SK not in r.text
        # The publishable key still works, and the secret key still opens the admin routes.
        assert c.get("/v1/offers", params={"key": PK, **PAGE}).status_code == 200
        assert c.post("/v1/events", json={"key": PK, "events": []}).status_code == 202
        assert c.get("/v1/admin/catalog", headers=ADMIN).status_code == 200


def test_a_retired_secret_key_in_its_grace_period_is_refused_too(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        rotated = c.post("/v1/admin/secret-key/rotate", json={"grace_seconds": 3600}, headers=ADMIN)
        assert rotated.status_code == 200, rotated.text
        assert c.get("/v1/admin/rules", headers=ADMIN).status_code == 200  # still in grace
        answers = browser_requests(c, SK)
        assert {n: refused(r) for n, r in answers.items()} == dict.fromkeys(answers, True)
        answers = browser_requests(c, rotated.json()["secret_key"])
        assert {n: refused(r) for n, r in answers.items()} == dict.fromkeys(answers, True)
