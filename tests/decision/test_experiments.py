"""Bucketing (deterministic, uniform, sticky), the holdout (never any offer, still measured) and
experiment arms (in the response, the token and every event)."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from offer_service.decision.experiments import assign, bucket, in_holdout, pick, variant_rules
from offer_service.domain.policy import Experiment, StoreRules, Variant
from offer_service.domain.surfaces import Surface
from offer_service.domain.tokens import verify
from offer_service.serving.engine import in_holdout as engine_in_holdout
from offer_service.storage import open_store
from offer_service_tools.demo import DEMO_STORE_ID
from tests.conftest import LiveServer

ADMIN = {"Authorization": "Bearer sk_demo"}
# chi-square critical values at p = 0.001
CHI2_999 = {99: 148.23, 2: 13.82, 1: 10.83}

TWO_ARMS = Experiment(
    name="cart-discount",
    surfaces=[Surface.CART],
    variants=[
        Variant(name="none", discounts={"cross_sell": 0}),
        Variant(name="ten", discounts={"cross_sell": 10}),
    ],
)


def chi_square(observed: list[int], expected: list[float]) -> float:
    return sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))


def test_bucket_is_deterministic_and_depends_on_store_salt_and_visitor() -> None:
    assert bucket("st_1", "holdout", "v-1") == bucket("st_1", "holdout", "v-1")
    others = {bucket("st_2", "holdout", "v-1"), bucket("st_1", "exp", "v-1")}
    assert bucket("st_1", "holdout", "v-1") not in others
    assert 0.0 <= bucket("st_1", "holdout", "v-1") < 1.0
    # The engine's holdout is this bucketing (the browser tests import it from there).
    assert engine_in_holdout is in_holdout


@pytest.mark.parametrize("store_id", ["st_1", "st_2"])
@pytest.mark.parametrize("salt", ["holdout", "exp"])
def test_a_bucket_is_the_hash_of_store_salt_and_visitor(store_id: str, salt: str) -> None:
    # Hashing only the visitor after a cached prefix must give every visitor the bucket it
    # always had: a change would move visitors between the holdout and treatment mid-test.
    for visitor in ("v-1", "v-2", "", "é" * 40):
        whole = hashlib.blake2b(f"{store_id}:{salt}:{visitor}".encode(), digest_size=8)
        assert bucket(store_id, salt, visitor) == int.from_bytes(whole.digest(), "big") / 2**64


def test_buckets_are_uniform_over_100k_visitors() -> None:
    bins = [0] * 100
    for i in range(100_000):
        bins[int(bucket("st_uniform", "holdout", f"visitor-{i}") * 100)] += 1
    assert chi_square(bins, [1000.0] * 100) < CHI2_999[99]


def test_holdout_share_and_variant_weights_are_respected() -> None:
    n = 100_000
    held = sum(in_holdout("st_w", f"v{i}", 0.10) for i in range(n))
    assert chi_square([held, n - held], [0.1 * n, 0.9 * n]) < CHI2_999[1]
    exp = Experiment(
        name="w",
        variants=[Variant(name="a"), Variant(name="b"), Variant(name="c", weight=2)],
    )
    counts = Counter(pick(exp, bucket("st_w", "w", f"v{i}")).name for i in range(n))
    observed = [counts["a"], counts["b"], counts["c"]]
    assert chi_square(observed, [n / 4, n / 4, n / 2]) < CHI2_999[2]


def test_holdout_and_experiment_buckets_are_independent() -> None:
    rules = StoreRules(experiments=[TWO_ARMS])
    table: Counter[tuple[bool, str]] = Counter()
    n = 100_000
    for i in range(n):
        v = f"v{i}"
        a = assign("st_i", rules, Surface.CART, v)
        assert a is not None
        table[(in_holdout("st_i", v, 0.1), a.variant.name)] += 1
    for held in (True, False):
        for arm in ("none", "ten"):
            expected = n * (0.1 if held else 0.9) * 0.5
            assert abs(table[(held, arm)] - expected) < 4.5 * expected**0.5


def test_an_arm_is_sticky_and_only_on_its_surfaces() -> None:
    rules = StoreRules(experiments=[TWO_ARMS])
    first = assign("st_s", rules, Surface.CART, "v-42")
    assert first is not None
    reloaded = StoreRules.model_validate_json(rules.model_dump_json())
    for _ in range(5):
        again = assign("st_s", reloaded, Surface.CART, "v-42")
        assert again is not None and again.arm == first.arm
    assert first.arm in ("cart-discount:none", "cart-discount:ten")
    assert assign("st_s", rules, Surface.PRODUCT_PAGE, "v-42") is None
    assert assign("st_s", rules, Surface.CART, None) is None


def test_a_variant_replaces_only_its_own_fields() -> None:
    rules = StoreRules(margin_floor=100, value="price")
    changed = variant_rules(rules, Variant(name="m", value="margin"))
    assert changed.value == "margin" and changed.margin_floor == 100
    assert variant_rules(rules, Variant(name="same")) is rules


def test_rules_reject_overlapping_and_reserved_experiments() -> None:
    assert StoreRules.model_validate({}).experiments == []
    with pytest.raises(ValidationError, match="already runs on cart"):
        StoreRules(experiments=[TWO_ARMS, TWO_ARMS.model_copy(update={"name": "other"})])
    with pytest.raises(ValidationError, match="reserved"):
        Experiment(name="holdout", variants=[Variant(name="a"), Variant(name="b")])
    with pytest.raises(ValidationError, match="distinct"):
        Experiment(name="x", variants=[Variant(name="a"), Variant(name="a")])
    # An inactive one does not take its surfaces.
    paused = TWO_ARMS.model_copy(update={"name": "paused", "active": False})
    assert len(StoreRules(experiments=[TWO_ARMS, paused]).experiments) == 2


# --- over HTTP ---------------------------------------------------------------------------------


def _order(c: httpx.Client, order_id: str, visitor_id: str) -> str:
    order = {
        "id": order_id,
        "visitor_id": visitor_id,
        "customer_id": f"c-{order_id}",
        "placed_at": datetime.now(UTC).isoformat(),
        "currency": "USD",
        "lines": [{"product_id": "cam-x100", "quantity": 1, "price": 49900}],
    }
    r = c.post("/v1/admin/orders", json=[order], headers=ADMIN)
    assert r.status_code == 200, r.text
    token: str = r.json()["order_tokens"][order_id]
    return token


def _counters(server: LiveServer) -> dict[tuple[str, str, str, str, str], int]:
    async def read() -> dict[tuple[str, str, str, str, str], int]:
        store = open_store(server.store_url)
        await store.open()
        try:
            return await store.event_counters(DEMO_STORE_ID)
        finally:
            await store.close()

    return asyncio.run(read())


def test_holdout_visitors_never_get_offers_on_any_surface(demo_server: LiveServer) -> None:
    visitors = [f"hv-{i}" for i in range(400)]
    held = [v for v in visitors if in_holdout(DEMO_STORE_ID, v, 0.10)]
    treated = [v for v in visitors if not in_holdout(DEMO_STORE_ID, v, 0.10)]
    assert 20 <= len(held) <= 70
    with demo_server.client() as c:
        pages: list[dict[str, Any]] = [
            {"surface": "product_page", "product_id": "cam-x100"},
            {"surface": "cart", "items": "cam-x100,coffee-250g"},
            {"surface": "checkout", "items": "serum-30ml"},
        ]
        for v in held:
            for page in pages:
                body = c.get("/v1/offers", params={"key": "pk_demo", "visitor_id": v, **page})
                assert body.json()["holdout"] is True and body.json()["offers"] == [], page
            token = _order(c, f"order-{v}", v)
            for surface in ("thank_you", "email", "sms"):
                # With the visitor id (thank-you page) and without it (an email link): the
                # order's buyer is bucketed either way.
                for extra in ({"visitor_id": v}, {}):
                    body = c.get(
                        "/v1/offers",
                        params={
                            "key": "pk_demo",
                            "surface": surface,
                            "order_id": f"order-{v}",
                            "order_token": token,
                            **extra,
                        },
                    ).json()
                    assert body["holdout"] is True and body["offers"] == [], (surface, extra)
        # The same pages do show offers to the treatment.
        shown = c.get(
            "/v1/offers",
            params={"key": "pk_demo", "visitor_id": treated[0], **pages[0]},
        ).json()
        assert shown["holdout"] is False and shown["offers"]
        # Holdout visitors are still measured: each was seen, and counted in the holdout.
        report = c.get("/v1/admin/metrics", headers=ADMIN).json()
    assert report["holdout"]["sample_sizes"] == {"treatment": 1, "holdout": len(held)}
    assert report["holdout"]["groups"]["holdout"]["converted"] == len(held)


def test_the_arm_is_in_the_response_the_token_and_every_event(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        rules = c.get("/v1/admin/rules", headers=ADMIN).json()
        rules["experiments"] = [TWO_ARMS.model_dump(mode="json")]
        r = c.put("/v1/admin/rules", json=rules, headers=ADMIN)
        assert r.status_code == 200, r.text
        seen: dict[str, set[int]] = {}
        events = []
        for i in range(60):
            v = f"arm-{i}"
            if in_holdout(DEMO_STORE_ID, v, 0.10):
                continue
            params = {"key": "pk_demo", "surface": "cart", "items": "cam-x100", "visitor_id": v}
            first = c.get("/v1/offers", params=params).json()
            again = c.get("/v1/offers", params=params).json()
            arm = first["experiment"]
            assert arm in ("cart-discount:none", "cart-discount:ten")
            assert again["experiment"] == arm  # sticky
            for offer in first["offers"]:
                if offer["kind"] == "cross_sell":
                    seen.setdefault(arm, set()).add(offer["discount_pct"])
                events.append(
                    {
                        "id": f"{v}-{offer['offer_id']}",
                        "type": "impression",
                        "token": offer["token"],
                        "ts": int(datetime.now(UTC).timestamp() * 1000),
                        "visitor_id": v,
                    }
                )
            # Other surfaces run no experiment.
            pp = c.get(
                "/v1/offers",
                params={"key": "pk_demo", "surface": "product_page", "product_id": "cam-x100"},
            ).json()
            assert pp["experiment"] is None
        # Each arm priced by its own rules: cross-sells at 0% in one arm, 10% in the other.
        assert seen == {"cart-discount:none": {0}, "cart-discount:ten": {10}}
        record = asyncio.run(_store_record(demo_server))
        for e in events[:5]:
            claims = verify(e["token"], record.signing_keys, datetime.now(UTC).timestamp())
            assert claims.arm in seen
        for start in range(0, len(events), 100):
            r = c.post("/v1/events", json={"key": "pk_demo", "events": events[start : start + 100]})
            assert r.status_code == 202 and not r.json()["rejected"], r.text
        report = c.get("/v1/admin/metrics", headers=ADMIN).json()
    counters = _counters(demo_server)
    by_arm = Counter()
    for (surface, _kind, _pid, arm, etype), n in counters.items():
        if etype == "impression" and surface == "cart":
            by_arm[arm] += n
    assert set(by_arm) == set(seen) and sum(by_arm.values()) == len(events)
    rows = {row["arm"]: row for row in report["breakdown"]["arm"]}
    assert {a: rows[a]["impressions"] for a in seen} == dict(by_arm)
    arms = {a["arm"] for a in report["holdout"]["arms"]}
    assert arms == set(seen)


async def _store_record(server: LiveServer) -> Any:
    store = open_store(server.store_url)
    await store.open()
    try:
        return await store.get_store(DEMO_STORE_ID)
    finally:
        await store.close()
