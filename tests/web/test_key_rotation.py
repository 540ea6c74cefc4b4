"""Key rotation. Offer-token signing keys: tokens carry a key id; two keys verify during a
rotation; a retired key's tokens are rejected. Publishable and secret keys: the old key works
for the grace period the caller chooses, then is refused; only the current secret key rotates."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import orjson

from offer_service.domain.records import StoreRecord
from offer_service.measurement.dashboard import link_params
from offer_service.storage import open_store
from offer_service_tools.demo import DEMO_STORE_ID
from tests.conftest import LiveServer


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


# --- publishable and secret keys ---------------------------------------------------------------

ADMIN = {"Authorization": "Bearer sk_demo"}
PRODUCT = {"surface": "product_page", "product_id": "cam-x100"}


def test_a_rotated_publishable_key_works_through_its_grace_period_then_is_refused(
    demo_server: LiveServer,
) -> None:
    with demo_server.client() as c:
        assert c.get("/v1/offers", params={"key": "pk_demo", **PRODUCT}).status_code == 200
        r = c.post("/v1/admin/publishable-key/rotate", json={"grace_seconds": 2}, headers=ADMIN)
        assert r.status_code == 200, r.text
        body = r.json()
        new_pk = body["publishable_key"]
        assert new_pk.startswith("pk_") and body["previous_key_expires_at"].endswith("Z")
        for key in (new_pk, "pk_demo"):
            assert c.get("/v1/offers", params={"key": key, **PRODUCT}).status_code == 200
        time.sleep(2.2)
        old = c.get("/v1/offers", params={"key": "pk_demo", **PRODUCT})
        assert (old.status_code, old.json()["error"]["code"]) == (401, "unknown_key")
        assert c.get("/v1/offers", params={"key": new_pk, **PRODUCT}).status_code == 200


def test_a_rotated_secret_key_keeps_admin_working_but_cannot_rotate_or_outlive_a_revocation(
    demo_server: LiveServer,
) -> None:
    with demo_server.client() as c:
        link = link_params(_demo_record(demo_server), int(time.time()) + 600)
        bad = c.post("/v1/admin/secret-key/rotate", json={"grace_seconds": -1}, headers=ADMIN)
        assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"]
        pk = c.post("/v1/admin/secret-key/rotate", headers={"Authorization": "Bearer pk_demo"})
        assert (pk.status_code, pk.json()["error"]["code"]) == (403, "secret_key_required")

        r = c.post("/v1/admin/secret-key/rotate", headers=ADMIN)  # no body: 24 h of grace
        assert r.status_code == 200, r.text
        first = r.json()["secret_key"]
        # The old key still runs the store (the merchant's backends switch over meanwhile)...
        assert c.get("/v1/admin/rules", headers=ADMIN).status_code == 200
        assert c.get("/dashboard", params=link).status_code == 200
        # ...but cannot rotate: a leaked key must not lock the merchant out.
        again = c.post("/v1/admin/secret-key/rotate", headers=ADMIN)
        assert (again.status_code, again.json()["error"]["code"]) == (
            403,
            "current_secret_key_required",
        )

        current = {"Authorization": f"Bearer {first}"}
        r = c.post("/v1/admin/secret-key/rotate", json={"grace_seconds": 0}, headers=current)
        assert r.status_code == 200 and r.json()["previous_key_expires_at"] is None
        newest = {"Authorization": f"Bearer {r.json()['secret_key']}"}
        for revoked in (ADMIN, current):  # a grace of 0 ends every earlier key's grace too
            answer = c.get("/v1/admin/rules", headers=revoked)
            assert (answer.status_code, answer.json()["error"]["code"]) == (401, "unknown_key")
        assert c.get("/dashboard", params=link).status_code == 401
        assert c.get("/v1/admin/rules", headers=newest).status_code == 200


def _demo_record(server: LiveServer) -> StoreRecord:
    async def read() -> StoreRecord:
        store = open_store(server.store_url)
        await store.open()
        try:
            record = await store.get_store(DEMO_STORE_ID)
            assert record is not None
            return record
        finally:
            await store.close()

    return asyncio.run(read())


def test_the_cli_rotates_a_key_of_a_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/o.db"
    cli = [sys.executable, "-m", "offer_service.cli"]

    def run(*args: str) -> dict[str, str]:
        done = subprocess.run([*cli, *args, "--store-url", url], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        out: dict[str, str] = json.loads(done.stdout)
        return out

    created = run("stores", "create", "--name", "Shop", "--origin", "https://shop.example")
    rotated = run(
        "stores", "rotate-key", "--store", created["store_id"], "--kind", "secret",
        "--grace-seconds", "0",
    )  # fmt: skip
    assert rotated["secret_key"].startswith("sk_") and rotated["previous_key_expires_at"] is None
    # A revocation replaces the webhook secrets the old key could have read.
    assert rotated["webhook_secret"].startswith("whsec_")

    async def resolve(key: str) -> str | None:
        store = open_store(url)
        await store.open()
        try:
            record = await store.store_by_key(key)
            return None if record is None else record.secret_key
        finally:
            await store.close()

    assert asyncio.run(resolve(created["secret_key"])) is None
    assert asyncio.run(resolve(rotated["secret_key"])) == rotated["secret_key"]
    missing = subprocess.run(
        [*cli, "stores", "rotate-key", "--store", "st_nope", "--kind", "publishable",
         "--store-url", url],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert missing.returncode == 1 and "no store" in missing.stderr
