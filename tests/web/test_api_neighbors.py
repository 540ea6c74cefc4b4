"""The neighbours route against an independent count on real baskets."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import combinations
from pathlib import Path

import httpx
import pytest

from offer_service.serving.training import train_store
from offer_service.storage import open_store
from tests.conftest import LiveServer


def _admin(sk: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {sk}"}


def _import_orders(c: httpx.Client, sk: str, path: Path) -> httpx.Response:
    """Import an Online Retail CSV as the store's orders; the import must succeed."""
    r = c.post(
        "/v1/admin/orders",
        content=path.read_bytes(),
        headers={**_admin(sk), "Content-Type": "text/csv"},
    )
    assert r.status_code == 200, r.text
    return r


def _independent(baskets: list[set[str]]) -> tuple[int, Counter[str], Counter[tuple[str, str]]]:
    n = 0
    single: Counter[str] = Counter()
    pairs: Counter[tuple[str, str]] = Counter()
    for basket in baskets:
        if not basket:
            continue
        n += 1
        for item in basket:
            single[item] += 1
        for a, b in combinations(sorted(basket), 2):
            pairs[(a, b)] += 1
    return n, single, pairs


def _check_route(c: httpx.Client, sk: str, baskets: list[set[str]], anchors: list[str]) -> None:
    n, single, pairs = _independent(baskets)
    for anchor in anchors:
        r = c.get(
            f"/v1/admin/products/{anchor}/neighbors", params={"limit": 10}, headers=_admin(sk)
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["baskets"] == n
        assert body["neighbors"], anchor
        for nb in body["neighbors"]:
            b = nb["product_id"]
            pair = pairs[tuple(sorted((anchor, b)))]  # type: ignore[index]
            assert nb["pair_count"] == pair
            assert nb["support"] == pytest.approx(pair / n, abs=1e-12)
            assert nb["confidence"] == pytest.approx(pair / single[anchor], abs=1e-12)
            lift = (pair / single[anchor]) / (single[b] / n)
            assert nb["lift"] == pytest.approx(lift, abs=1e-9)


def _france_baskets(path: Path) -> list[set[str]]:
    baskets: dict[str, set[str]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            inv, code = row["InvoiceNo"], row["StockCode"]
            if inv.startswith("C") or not code[:5].isdigit():
                continue
            if float(row["Quantity"]) <= 0 or float(row["UnitPrice"]) <= 0:
                continue
            baskets.setdefault(inv, set()).add(code)
    return list(baskets.values())


def test_neighbors_match_an_independent_count_on_online_retail_france(
    server: LiveServer, datasets: Path
) -> None:
    record = server.create_store("France")
    path = datasets / "online_retail_france.csv"
    baskets = _france_baskets(path)
    with server.client() as c:
        r = _import_orders(c, record.secret_key, path)
        assert r.json()["imported"] == len(baskets)
        assert r.json()["returns"] > 0
        _, single, _ = _independent(baskets)
        anchors = [p for p, _ in single.most_common(6)]
        _check_route(c, record.secret_key, baskets, anchors)


def test_neighbors_match_an_independent_count_on_groceries(
    server: LiveServer, datasets: Path
) -> None:
    record = server.create_store("Groceries")
    lines = (datasets / "groceries.csv").read_text(encoding="utf-8").splitlines()
    # Ids are trimmed on import: "cream cheese " is the product "cream cheese" (no name collides).
    baskets = [{i.strip() for i in next(csv.reader(io.StringIO(line)))} for line in lines if line]
    items = sorted(set().union(*baskets))
    catalog = [
        {
            "id": item,
            "title": item,
            "url": "/p",
            "image_url": "",
            "price": 100,
            "currency": "USD",
            "category": "groceries",
            "tags": [],
            "active": True,
        }
        for item in items
    ]
    start = datetime(2024, 1, 1, tzinfo=UTC)
    orders = [
        {
            "id": f"g{i}",
            "placed_at": (start + timedelta(minutes=i)).isoformat(),
            "currency": "USD",
            "lines": [{"product_id": p, "quantity": 1, "price": 100} for p in sorted(b)],
        }
        for i, b in enumerate(baskets)
    ]
    with server.client() as c:
        r = c.put("/v1/admin/catalog", json=catalog, headers=_admin(record.secret_key))
        assert r.json() == {"upserted": len(items), "rejected": [], "rejected_total": 0}
        r = c.post("/v1/admin/orders", json=orders, headers=_admin(record.secret_key))
        assert r.status_code == 200 and r.json()["imported"] == len(baskets)
        _check_route(
            c,
            record.secret_key,
            baskets,
            ["whole milk", "other vegetables", "rolls/buns", "yogurt", "cream cheese"],
        )


def test_cart_offers_on_france_data_are_the_strongest_co_purchases(
    server: LiveServer, datasets: Path
) -> None:
    record = server.create_store("France cart", rules=None)
    path = datasets / "online_retail_france.csv"
    with server.client() as c:
        _import_orders(c, record.secret_key, path)
        anchor = "22726"  # ALARM CLOCK BAKELIKE GREEN
        neighbors = c.get(
            f"/v1/admin/products/{anchor}/neighbors", headers=_admin(record.secret_key)
        ).json()["neighbors"]
        body = c.get(
            "/v1/offers",
            params={"key": record.publishable_key, "surface": "cart", "items": anchor},
        ).json()
        offered = [o["product_id"] for o in body["offers"]]
        assert len(offered) == 2
        top = [nb["product_id"] for nb in neighbors[:4]]
        assert set(offered) <= set(top), (offered, neighbors[:4])
        assert all(o["kind"] == "cross_sell" for o in body["offers"])
        assert all("Frequently bought with" in o["reason"] for o in body["offers"])


def test_neighbors_keep_their_counts_and_add_the_model_score_once_trained(
    server: LiveServer, datasets: Path
) -> None:
    record = server.create_store("France trained")
    path = datasets / "online_retail_france.csv"
    baskets = _france_baskets(path)
    with server.client() as c:
        _import_orders(c, record.secret_key, path)
        _, single, _ = _independent(baskets)
        anchors = [p for p, _ in single.most_common(3)]
        url = f"/v1/admin/products/{anchors[0]}/neighbors"
        before = c.get(url, headers=_admin(record.secret_key)).json()["neighbors"]
        assert before and all(nb["score"] is None for nb in before)

        async def train() -> None:
            store = open_store(server.store_url)
            await store.open()
            try:
                stored = await store.get_store(record.id)
                assert stored is not None
                await train_store(store, stored)
            finally:
                await store.close()

        asyncio.run(train())
        _check_route(c, record.secret_key, baskets, anchors)
        after = c.get(url, headers=_admin(record.secret_key)).json()["neighbors"]
        scores = [nb["score"] for nb in after]
        assert all(s is not None and s > 0 for s in scores)
        assert scores == sorted(scores, reverse=True)


def test_a_bulk_import_through_the_api_is_learnt_from_without_a_command(
    server: LiveServer, datasets: Path
) -> None:
    # A bulk import recounts co-occurrence; the item model is then trained by a child process
    # (`offer-service train`), and its scored lists replace the counted ones within seconds.
    record = server.create_store("France learnt")
    baskets = [b for b in _france_baskets(datasets / "online_retail_france.csv") if len(b) > 1]
    start = datetime(2011, 1, 1, tzinfo=UTC)
    orders = [
        {
            "id": f"o{i}",
            "placed_at": (start + timedelta(hours=i)).isoformat(),
            "currency": "GBP",
            "lines": [{"product_id": p, "quantity": 1, "price": 100} for p in sorted(b)],
        }
        for i, b in enumerate(baskets * 2)
    ]
    catalog = [
        {"id": p, "title": p, "url": "/p", "price": 100, "currency": "GBP", "active": True}
        for p in sorted(set().union(*baskets))
    ]
    _, single, _ = _independent(baskets)
    url = f"/v1/admin/products/{single.most_common(1)[0][0]}/neighbors"
    with server.client() as c:
        r = c.put("/v1/admin/catalog", json=catalog, headers=_admin(record.secret_key))
        assert r.status_code == 200 and r.json()["rejected_total"] == 0, r.text
        r = c.post("/v1/admin/orders", json=orders, headers=_admin(record.secret_key))
        assert r.status_code == 200 and r.json()["imported"] == len(orders) > 500, r.text
        deadline = time.monotonic() + 120
        scores: list[float | None] = [None]
        while time.monotonic() < deadline and None in scores:
            time.sleep(0.5)
            neighbors = c.get(url, headers=_admin(record.secret_key)).json()["neighbors"]
            scores = [nb["score"] for nb in neighbors] or [None]

    assert None not in scores, "no trained list 120 s after the import"
    assert scores == sorted(scores, reverse=True)
