"""`serve` on an embedded store retrains the item model itself once enough orders arrived."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from offer_service.settings import Settings
from tests.conftest import LiveServer, run_server

RETRAIN = 5
START = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def retraining_server(tmp_path: Path) -> Iterator[LiveServer]:
    yield from run_server(
        Settings(store_url=f"sqlite:///{tmp_path}/offers.db", retrain_orders=RETRAIN)
    )


def _post_order(c: httpx.Client, sk: str, n: int, basket: list[str]) -> None:
    order = {
        "id": f"o{n}",
        "placed_at": (START + timedelta(days=n)).isoformat(),
        "currency": "USD",
        "lines": [{"product_id": p, "quantity": 1, "price": 1000} for p in basket],
    }
    r = c.post("/v1/admin/orders", json=[order], headers={"Authorization": f"Bearer {sk}"})
    assert r.status_code == 200 and r.json()["imported"] == 1, r.text


def _neighbours(c: httpx.Client, sk: str, product_id: str) -> list[dict[str, object]]:
    r = c.get(
        f"/v1/admin/products/{product_id}/neighbors", headers={"Authorization": f"Bearer {sk}"}
    )
    assert r.status_code == 200, r.text
    found: list[dict[str, object]] = r.json()["neighbors"]
    return found


def _fitted(found: list[dict[str, object]]) -> dict[object, object]:
    """What a fit wrote: each neighbour and its score."""
    return {nb["product_id"]: nb["score"] for nb in found}


def _trained_within(
    c: httpx.Client, sk: str, product_id: str, want: str
) -> list[dict[str, object]]:
    """The product's list once it is the model's (every entry scored) with `want` first, within
    60 s."""
    deadline = time.monotonic() + 60
    while True:
        found = _neighbours(c, sk, product_id)
        if found and None not in _fitted(found).values() and found[0]["product_id"] == want:
            return found
        assert time.monotonic() < deadline, f"no trained list with {want} first: {found}"
        time.sleep(0.2)


def test_orders_past_the_threshold_retrain_the_lists_apart_from_serving(
    retraining_server: LiveServer,
) -> None:
    record = retraining_server.create_store("Shop")
    sk = record.secret_key
    catalog = [
        {"id": p, "title": p, "url": f"/{p}", "price": 1000, "currency": "USD"} for p in "abcde"
    ]
    baskets = [["a", "b"], ["a", "b", "c"], ["c", "d"], ["a", "b"], ["d", "e"]]
    with retraining_server.client() as c:
        r = c.put("/v1/admin/catalog", json=catalog, headers={"Authorization": f"Bearer {sk}"})
        assert r.status_code == 200, r.text
        for n, basket in enumerate(baskets[: RETRAIN - 1]):
            _post_order(c, sk, n, basket)
        # Under the threshold: the lists are the live co-occurrence counts, unscored.
        time.sleep(1.0)
        counted = _neighbours(c, sk, "a")
        assert counted and all(nb["score"] is None for nb in counted)
        assert counted[0]["product_id"] == "b" and counted[0]["pair_count"] == 3

        _post_order(c, sk, RETRAIN - 1, baskets[RETRAIN - 1])
        trained = _trained_within(c, sk, "a", "b")
        assert trained[0]["product_id"] == "b" and trained[0]["pair_count"] == 3
        assert isinstance(trained[0]["score"], float) and trained[0]["score"] > 0

        # The next orders pair a with e, which the fit saw only apart: the model's list waits
        # for the next threshold (its counts, the route's exact ones, do not).
        for n in range(RETRAIN, 2 * RETRAIN - 1):
            _post_order(c, sk, n, ["a", "e"])
        time.sleep(1.0)
        waiting = _neighbours(c, sk, "a")
        assert _fitted(waiting) == _fitted(trained)
        assert {nb["product_id"]: nb["pair_count"] for nb in waiting}.get("e") == RETRAIN - 1
        _post_order(c, sk, 2 * RETRAIN - 1, ["a", "e"])
        retrained = _trained_within(c, sk, "a", "e")
        assert retrained[0]["product_id"] == "e" and retrained[0]["pair_count"] == RETRAIN


def test_the_threshold_is_a_setting_and_a_positive_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OFFER_RETRAIN_ORDERS", raising=False)
    assert Settings.from_env().retrain_orders == 500
    monkeypatch.setenv("OFFER_RETRAIN_ORDERS", "50")
    assert Settings.from_env().retrain_orders == 50
    monkeypatch.setenv("OFFER_RETRAIN_ORDERS", "0")
    with pytest.raises(ValueError, match="OFFER_RETRAIN_ORDERS must be a positive number"):
        Settings.from_env()
