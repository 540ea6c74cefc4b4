"""Offer-token key rotation: tokens carry a key id; two keys verify during a rotation; a retired
key's tokens are rejected."""

from __future__ import annotations

import base64

import orjson

from .conftest import LiveServer


def kid_of(token: str) -> str:
    body = token.split(".")[0]
    kid: str = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["kid"]
    return kid


def test_rotation_keeps_one_previous_key_and_retires_older_ones(demo_server: LiveServer) -> None:
    admin = {"Authorization": "Bearer sk_demo"}
    params = {"key": "pk_demo", "surface": "cart", "items": "cam-x100"}
    with demo_server.client() as c:

        def token() -> str:
            t: str = c.get("/v1/offers", params=params).json()["offers"][0]["token"]
            return t

        def event_status(t: str) -> list[object]:
            body = {
                "key": "pk_demo",
                "events": [{"id": t[-20:] + str(len(t)), "type": "click", "token": t, "ts": 0}],
            }
            import time

            body["events"][0]["ts"] = int(time.time() * 1000)  # type: ignore[index]
            return c.post("/v1/events", json=body).json()["rejected"]  # type: ignore[no-any-return]

        old = token()
        assert kid_of(old) == "k1"
        r = c.post("/v1/admin/signing-key/rotate", headers=admin)
        assert r.json() == {"kid": "k2", "verifying": ["k2", "k1"]}
        mid = token()
        assert kid_of(mid) == "k2"
        assert event_status(old) == []  # the previous key still verifies
        c.post("/v1/admin/signing-key/rotate", headers=admin)
        assert kid_of(token()) == "k3"
        assert event_status(mid) == []
        rejected = event_status(old)  # k1 is retired now
        assert rejected and rejected[0]["code"] == "bad_token"  # type: ignore[index]
