"""Learned P(accept): posterior updates, decay, Thompson draws and the bounded exploration slot."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from offer_service.decision.candidates import Candidate
from offer_service.decision.decide import arrange, finish
from offer_service.decision.learning import (
    Beta,
    Evidence,
    Feedback,
    Learned,
    LearningConfig,
    SignalWeights,
    evidence,
)
from offer_service.decision.ranking import EXPLORERS, sampled_p_accept
from offer_service.decision.rules import PricedOffer
from offer_service.domain.events import StoredEvent
from offer_service.domain.orders import Order, OrderLine
from offer_service.domain.policy import LearningRules, StoreRules
from offer_service.domain.products import Product
from offer_service.domain.records import EMPTY_VISITOR
from offer_service.domain.surfaces import Surface
from offer_service.serving.engine import Engine
from offer_service.serving.learner import Learner
from offer_service.storage.protocols import Store
from offer_service.storage.sqlite.store import SQLiteStore
from offer_service.types import DAY_MS, HOUR_MS, MINUTE_MS
from offer_service.web.models import OffersRequest
from tests.conftest import LiveServer
from tests.redis_servers import RELAXED, RedisServer, opened_redis, running_redis

# Value weighed in full (expected value): the ranking these hand-computed orders follow.
RULES = StoreRules(value_weight=1.0)
CART = Surface.CART
T = 1_700_000_000_000
CONFIG = LearningConfig()


def offer(pid: str, price: int, relevance: float = 0.9) -> PricedOffer:
    product = Product(id=pid, title=pid, price=price)
    candidate = Candidate(product, "cross_sell", relevance, "why", "complement")
    return PricedOffer(candidate, 0, price, None, 1.0)


def event(
    type_: str, pid: str, *, at: int = T, visitor: str | None = None, n: int = 0
) -> StoredEvent:
    return StoredEvent(
        id=f"{type_}-{pid}-{visitor}-{at}-{n}", type=type_, ts_ms=at - MINUTE_MS, received_ms=at,
        visitor_id=visitor, surface="cart", kind="cross_sell", product_id=pid, offer_id="o",
        order_id=None, arm=None, offer_price=1000, currency="GBP",
    )  # fmt: skip


def learned(ev: dict[str, Evidence], config: LearningConfig = CONFIG) -> Learned:
    return Learned({("cart", pid): e for pid, e in ev.items()}, config)


def shown_ids(prepared: list[PricedOffer], picked: list[int]) -> list[str]:
    return [prepared[i].candidate.product.id for i in picked]


# --- the posterior ------------------------------------------------------------------------------


def test_signal_weights_keep_purchase_over_accept_over_click_over_impression() -> None:
    w = SignalWeights()
    assert 1.0 >= w.purchase > w.accept > w.click > w.impression >= 0.0
    with pytest.raises(ValueError):
        SignalWeights(purchase=0.5, accept=0.9)
    with pytest.raises(ValueError):
        SignalWeights(click=0.0, impression=0.0)


def test_the_posterior_starts_at_the_surface_prior() -> None:
    b = learned({}).posterior(CART, "new")
    # cart prior 0.08, worth 20 pseudo-impressions
    assert (b.alpha, b.beta) == pytest.approx((1.6, 18.4))
    assert b.mean == pytest.approx(0.08)
    assert learned({}).posterior(Surface.PRODUCT_PAGE, "new").mean == pytest.approx(0.10)


def test_each_impression_counts_once_by_its_best_outcome() -> None:
    # 110 impressions, 10 clicks of which 4 led to a purchase, 3 one-click accepts:
    # credit = 1.0 * 4 + 0.2 * 6 + 0.9 * 3 + 0.0 * 97 = 7.9 over 110 trials.
    ev = evidence(110, 10, 3, 4, SignalWeights())
    assert ev.trials == 110
    assert ev.credit == pytest.approx(7.9)
    # A purchase is credited only after a click; a click never reported as an impression is
    # still a trial.
    assert evidence(1, 0, 0, 5, SignalWeights()) == Evidence(1, 0.0)
    assert evidence(0, 2, 1, 0, SignalWeights()).trials == 3


def test_a_bundles_events_teach_nothing_about_its_viewed_product_on_its_own() -> None:
    fb = Feedback(CONFIG, T, window_ms=7 * DAY_MS)
    for i in range(50):
        fb.add_event(replace(event("impression", "p1", n=i), kind="bundle"))
        fb.add_event(replace(event("accept", "p1", n=i), kind="bundle"))
    assert ("cart", "p1") not in fb.snapshot().evidence


def test_posterior_update_from_events_and_orders_matches_hand_computed_values() -> None:
    fb = Feedback(CONFIG, T, window_ms=7 * DAY_MS)
    for i in range(100):
        fb.add_event(event("impression", "p1", n=i))
    for i in range(20):  # two weeks old: one half-life, so they weigh 0.5 each
        fb.add_event(event("impression", "p1", at=T - 14 * DAY_MS, n=i))
    for i in range(10):
        fb.add_event(event("click", "p1", visitor=f"v{i}"))
    for i in range(3):
        fb.add_event(event("accept", "p1", n=i))
    fb.add_event(event("view", "p1"))  # not a signal
    fb.add_event(event("decline", "p1"))  # an impression without a click, already counted
    # Four clickers buy p1; another visitor's purchase and a clicker's other product do not count.
    lines = (OrderLine("p1", 1, 1000), OrderLine("p2", 1, 500))
    orders = [Order(f"o{i}", T, "GBP", lines, visitor_id=f"v{i}") for i in range(4)]
    orders.append(Order("o-x", T, "GBP", lines[:1], visitor_id="stranger"))
    fb.add_orders(orders, T)

    # impressions 100 + 20 * 0.5 = 110; clicks 10, accepts 3, purchases 4:
    # credit = 4 * 1.0 + 6 * 0.2 + 3 * 0.9 = 7.9
    # alpha = 0.08 * 20 + 7.9 = 9.5;  beta = 0.92 * 20 + 110 - 7.9 = 120.5
    b = fb.snapshot().posterior(CART, "p1")
    assert (b.alpha, b.beta) == pytest.approx((9.5, 120.5))
    assert b.mean == pytest.approx(9.5 / 130)
    assert ("cart", "p2") not in fb.snapshot().evidence

    # Fourteen days on, every count has halved: trials 55, credit 3.95.
    fb.advance(T + 14 * DAY_MS)
    b = fb.snapshot().posterior(CART, "p1")
    assert (b.alpha, b.beta) == pytest.approx((1.6 + 3.95, 18.4 + 55 - 3.95))


def test_a_click_older_than_the_attribution_window_credits_no_purchase() -> None:
    fb = Feedback(CONFIG, T, window_ms=DAY_MS)
    fb.add_event(event("click", "p1", visitor="v"))
    late = Order("late", T + 2 * DAY_MS, "GBP", (OrderLine("p1", 1, 1000),), visitor_id="v")
    fb.add_orders([late], T + 2 * DAY_MS)
    assert fb.snapshot().evidence[("cart", "p1")].credit == pytest.approx(0.2)  # the click alone
    assert fb.clicks == []  # and the click is forgotten once no unread order can use it


# --- Thompson draws -----------------------------------------------------------------------------


def test_thompson_draw_matches_a_hand_computed_value_under_a_fixed_seed() -> None:
    # random.Random(42) starts 0.6394267984578837, 0.025010755222666936. Beta(1, 1) is
    # G1 / (G1 + G2) with Gamma(1) = Exp(1) = -ln(1 - u).
    g1, g2 = -math.log(1 - 0.6394267984578837), -math.log(1 - 0.025010755222666936)
    assert g1 == pytest.approx(1.0200, abs=1e-4)
    assert g2 == pytest.approx(0.02533, abs=1e-5)
    assert Beta(1.0, 1.0).draw(random.Random(42)) == pytest.approx(g1 / (g1 + g2))
    assert g1 / (g1 + g2) == pytest.approx(0.97577, abs=1e-5)
    # alpha first: Beta(1, 1) is symmetric, the draw is not
    assert Beta(1.0, 1.0).draw(random.Random(42)) != pytest.approx(g2 / (g1 + g2))


def test_explored_offers_are_drawn_in_product_order_and_new_ones_keep_their_mean() -> None:
    ev = {"b": Evidence(100, 10), "a": Evidence(200, 5), "n": Evidence(10, 0)}
    state = learned(ev)
    offers = [offer(p, 1000) for p in ("b", "n", "a", "unseen")]
    p = sampled_p_accept(offers, CART, state, random.Random(7))
    rng = random.Random(7)
    assert p["a"] == state.posterior(CART, "a").draw(rng)  # "a" first, then "b"
    assert p["b"] == state.posterior(CART, "b").draw(rng)
    # Under min_evidence (50): the posterior mean (1.6 / 30), no draw; no evidence: the prior.
    assert p["n"] == pytest.approx(1.6 / 30)
    assert "unseen" not in p


def test_the_same_seed_gives_the_same_ranking() -> None:
    ev = {p: Evidence(100, 8 + i) for i, p in enumerate("abcdef")}
    offers = [offer(p, 1000 + 10 * i) for i, p in enumerate("abcdefgh")]
    runs = [arrange(offers, CART, RULES, learned(ev), random.Random(3)) for _ in range(2)]
    assert runs[0] == runs[1]


# --- the exploration slot -----------------------------------------------------------------------


def serve(
    offers: list[PricedOffer], state: Learned, requests: int, seed: int = 1, rebuild_every: int = 10
) -> Iterator[list[str]]:
    """What `requests` cart responses show, built as the engine builds them."""
    rng = random.Random(seed)
    prepared: list[PricedOffer] = []
    for r in range(requests):
        if r % rebuild_every == 0:
            prepared = arrange(offers, CART, RULES, state, rng)
        explore = rng.random() < state.config.explore_share
        picked = finish(
            prepared, EMPTY_VISITOR, RULES, limit=2, surface=CART, now_ms=T, explore=explore
        )
        yield shown_ids(prepared, picked)


def test_a_new_offer_is_shown_at_a_rate_within_the_exploration_bound() -> None:
    # Two proven offers fill the cart's two slots; the new one ranks third on its prior.
    state = learned({"a": Evidence(1000, 100), "b": Evidence(1000, 100)})
    offers = [offer("a", 3000), offer("b", 2500), offer("new", 2000)]
    responses = list(serve(offers, state, 4000))
    share = sum("new" in r for r in responses) / len(responses)
    bound = CONFIG.explore_share
    # Shown, in about explore_share of responses (the only offer to explore), never more.
    assert 0.085 < share <= bound + 3 * math.sqrt(bound * (1 - bound) / len(responses))
    assert all(r[0] != "new" for r in responses)  # exploration only takes the last slot


def test_many_new_offers_together_stay_within_the_bound() -> None:
    state = learned({"a": Evidence(1000, 100), "b": Evidence(1000, 100)})
    new = [offer(f"new{i}", 2400 - 10 * i) for i in range(8)]
    responses = list(serve([offer("a", 3000), offer("b", 2500), *new], state, 4000))
    share = sum(any(p.startswith("new") for p in r) for r in responses) / len(responses)
    assert share <= CONFIG.explore_share + 0.015
    shown = {p for r in responses for p in r if p.startswith("new")}
    assert len(shown) >= 3  # the slot rotates among the new offers


def test_a_bad_offers_share_falls_as_its_evidence_grows() -> None:
    good = {"g1": Evidence(2000, 200), "g2": Evidence(2000, 200)}
    offers = [offer("bad", 4000), offer("g1", 2000), offer("g2", 1500)]
    shares = []
    for impressions in (0, 60, 150, 1000):
        ev = {**good, "bad": Evidence(impressions, 0.0)} if impressions else good
        responses = list(serve(offers, learned(ev), 3000, rebuild_every=1))
        shares.append(sum("bad" in r for r in responses) / len(responses))
    # Unknown, its price ranks it first; every impression without a take pushes it down.
    assert shares[0] == 1.0
    assert shares[0] > shares[1] > shares[2] >= shares[3]
    assert shares[1] < 0.5 and shares[3] < 0.01


def test_exploring_without_flagged_offers_changes_nothing() -> None:
    offers = arrange([offer(p, 1000 + i) for i, p in enumerate("abcd")], CART, RULES)
    for explore in (False, True):
        picked = finish(
            offers, EMPTY_VISITOR, RULES, limit=2, surface=CART, now_ms=T, explore=explore
        )
        assert shown_ids(offers, picked) == ["d", "c"]


def test_flagged_offers_are_appended_when_the_list_is_trimmed() -> None:
    offers = [offer(f"p{i:02}", 5000 - i) for i in range(30)]
    proven = {o.candidate.product.id: Evidence(500, 100) for o in offers[:25]}
    prepared = arrange(offers, CART, RULES, learned(proven), random.Random(1))
    # The 20 best proven offers, then EXPLORERS of the five new ones, flagged.
    assert [o.explore for o in prepared] == [False] * 20 + [True] * EXPLORERS
    assert all(o.candidate.product.id >= "p25" for o in prepared[20:])


# --- the learner (real SQLite store) ------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = SQLiteStore.from_url(f"sqlite:///{tmp_path}/offers.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.mark.anyio
async def test_the_learner_reads_stored_events_and_orders_off_the_request_path(
    store: Store,
) -> None:
    record = await store.create_store("Learning")
    # One of the impressions is the clicking visitor's: a click without one is invalid traffic.
    events = [event("impression", "p1", n=i, at=T - HOUR_MS) for i in range(29)]
    events += [event("impression", "p1", visitor="v", at=T - HOUR_MS)]
    events += [event("click", "p1", visitor="v", at=T - HOUR_MS)]
    await store.record_events(record.id, events + events, dedupe_since_ms=T - DAY_MS)  # twice
    bought = Order("o1", T - 30 * MINUTE_MS, "GBP", (OrderLine("p1", 1, 1000),), visitor_id="v")
    await store.add_orders(record.id, [bought])

    now = [T / 1000]
    learner = Learner(store, clock=lambda: now[0], refresh_s=60)
    assert learner.current(record) is None  # starts a background load, never waits for it
    first = await learner.load(record)  # waits for that load
    b = first.posterior(CART, "p1")
    # 30 impressions (the duplicates dropped) and a click an hour ago, then a purchase: the
    # click's impression earns full credit.
    hour = 2 ** (-1 / (14 * 24))
    assert b.alpha == pytest.approx(1.6 + hour)
    assert b.alpha + b.beta == pytest.approx(20 + 30 * hour)
    assert learner.current(record) is first  # fresh: no reload

    now[0] += 61  # stale: the next read starts one reload and answers with the old snapshot
    more = [event("impression", "p1", n=100 + i, at=T + 30_000) for i in range(10)]
    await store.record_events(record.id, more, dedupe_since_ms=T - DAY_MS)
    assert learner.current(record) is first
    second = await learner.load(record)
    assert second.evidence[("cart", "p1")].trials == pytest.approx(
        30 * hour * 2 ** (-61_000 / CONFIG.half_life_ms) + 10 * 2 ** (-31_000 / CONFIG.half_life_ms)
    )


@pytest.mark.anyio
async def test_the_engine_ranks_on_what_shoppers_took(store: Store) -> None:
    # Single offers learn; a bundle would take its complements' place (test_bundles.py).
    rules = StoreRules(holdout_share=0, bundles=False)
    record = await store.create_store("Learning engine", rules=rules)
    anchor = Product(id="cam", title="Camera", price=50000, complements=("bag", "strap"))
    bag, strap = Product(id="bag", title="Bag", price=3000), Product("strap", "Strap", 2000)
    await store.upsert_products(record.id, [anchor, bag, strap])
    engine = Engine(store)
    engine.rng = random.Random(1)
    now = [T / 1000]
    engine.learner.clock = lambda: now[0]
    request = OffersRequest(surface=Surface.PRODUCT_PAGE, product_id="cam", limit=1)

    async def first_offer() -> str:
        body = orjson.loads(await engine.offers(record, request, "req"))
        return str(body["offers"][0]["product_id"])

    assert await first_offer() == "bag"  # cold start: equal relevance, the pricier one
    shown = [page_event("impression", p, n) for p in ("bag", "strap") for n in range(300)]
    taken = [page_event("accept", "strap", n) for n in range(60)]
    await store.record_events(record.id, shown + taken, dedupe_since_ms=T - DAY_MS)
    now[0] += 120
    await engine.learner.load(record)
    await store.upsert_products(record.id, [strap])  # a new version: the list is prepared again
    await engine.changed(record)
    assert await first_offer() == "strap"


def page_event(type_: str, pid: str, n: int) -> StoredEvent:
    return replace(event(type_, pid, n=n, at=T + MINUTE_MS), surface="product_page")


# --- per-store learning settings ----------------------------------------------------------------


def test_a_store_tunes_its_own_learning_within_bounds() -> None:
    default = StoreRules().learning
    assert (
        (default.explore_share, default.prior_strength, default.half_life_days)
        == (
            CONFIG.explore_share,
            CONFIG.prior_strength,
            CONFIG.half_life_days,
        )
        == (0.1, 20.0, 14.0)
    )
    own = CONFIG.for_store(LearningRules(explore_share=0.2, prior_strength=50, half_life_days=7))
    assert (own.explore_share, own.prior_strength, own.half_life_days) == (0.2, 50, 7)
    assert (own.weights, own.min_evidence) == (CONFIG.weights, CONFIG.min_evidence)
    for field_name, bad in (
        ("explore_share", -0.1),
        ("explore_share", 0.6),
        ("prior_strength", 0.5),
        ("prior_strength", 20_000),
        ("half_life_days", 0),
        ("half_life_days", 400),
    ):
        with pytest.raises(ValidationError) as caught:
            StoreRules.model_validate({"learning": {field_name: bad}})
        assert [e["loc"] for e in caught.value.errors()] == [("learning", field_name)]


def test_bad_learning_rules_are_a_422_naming_the_field(demo_server: LiveServer) -> None:
    admin = {"Authorization": "Bearer sk_demo"}
    with demo_server.client() as c:
        rules = c.get("/v1/admin/rules", headers=admin).json()
        assert rules["learning"] == {
            "explore_share": 0.1,
            "prior_strength": 20.0,
            "half_life_days": 14.0,
        }
        bad = {**rules, "learning": {"explore_share": 0.9, "half_life_days": 0}}
        r = c.put("/v1/admin/rules", json=bad, headers=admin)
        assert r.status_code == 422
        fields = {d["field"] for d in r.json()["error"]["details"]}
        assert fields == {"learning.explore_share", "learning.half_life_days"}
        good = {**rules, "learning": {"explore_share": 0.05, "prior_strength": 40}}
        r = c.put("/v1/admin/rules", json=good, headers=admin)
        assert r.status_code == 200, r.text
        assert r.json()["learning"] == {
            "explore_share": 0.05,
            "prior_strength": 40.0,
            "half_life_days": 14.0,
        }


@pytest.mark.anyio
async def test_the_learner_uses_the_stores_prior_strength_and_half_life(store: Store) -> None:
    own = LearningRules(prior_strength=50, half_life_days=7)
    record = await store.create_store("Own learning", rules=StoreRules(learning=own))
    week_old = [event("impression", "p1", n=i, at=T - 7 * DAY_MS) for i in range(40)]
    await store.record_events(record.id, week_old, dedupe_since_ms=T - 30 * DAY_MS)
    learner = Learner(store, clock=lambda: T / 1000, refresh_s=60)

    b = (await learner.load(record)).posterior(CART, "p1")
    # 40 impressions a week ago at a 7-day half-life weigh 20; the prior is worth 50.
    assert b.alpha + b.beta == pytest.approx(50 + 20)
    assert b.alpha == pytest.approx(0.08 * 50)

    # A rules change reaches the learner at once (no waiting for the refresh interval), and a
    # new half-life folds the history again.
    record = await store.set_rules(record.id, StoreRules(learning=LearningRules()))
    first = learner.current(record)
    second = await learner.load(record)
    assert second is not first
    b = second.posterior(CART, "p1")
    assert b.alpha + b.beta == pytest.approx(20 + 40 * 2**-0.5)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path / "redis")


@pytest.mark.anyio
async def test_a_redis_outage_is_one_line_of_the_learner_and_its_end_another(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that cannot be reached is an outage readiness and the metrics report: the
    learner says so once, without a traceback (the outage log carries no stack trace), keeps
    its last snapshot, and says when it learns again."""
    async with opened_redis(redis_server.url + RELAXED) as redis:
        record = await redis.create_store("Outage")
        at = int(time.time() * 1000)  # a stream's entries are dated as Redis receives them
        await redis.record_events(
            record.id, [event("impression", "p1", n=i, at=at) for i in range(5)], at - DAY_MS
        )
        now = [at / 1000 + 1]
        learner = Learner(redis, clock=lambda: now[0], refresh_s=60)
        before = await learner.load(record)
        assert before.evidence[("cart", "p1")].trials == pytest.approx(5)

        caplog.set_level(logging.INFO, logger="offer_service.serving.learner")
        redis_server.stop()
        for _ in range(3):  # three refreshes during the outage
            now[0] += 61
            assert learner.current(record) is before
            assert await learner.load(record) is before
        said = [r for r in caplog.records if r.name == "offer_service.serving.learner"]
        assert [(r.levelname, r.exc_info) for r in said] == [("WARNING", None)]
        assert record.id in said[0].getMessage()
        assert "unavailable" in said[0].getMessage()

        redis_server.start()
        now[0] += 61
        after = await learner.load(record)
        assert after is not before
        said = [r for r in caplog.records if r.name == "offer_service.serving.learner"]
        assert [r.levelname for r in said] == ["WARNING", "INFO"]
        assert "works again" in said[1].getMessage()


def test_the_engine_explores_in_the_stores_share(tmp_path: Path) -> None:
    engine = Engine(SQLiteStore.from_url(f"sqlite:///{tmp_path}/offers.db"))
    engine.rng = random.Random(5)
    never = StoreRules(learning=LearningRules(explore_share=0))
    assert not any(engine.explores(never) for _ in range(2000))
    half = StoreRules(learning=LearningRules(explore_share=0.5))
    share = sum(engine.explores(half) for _ in range(4000)) / 4000
    assert share == pytest.approx(0.5, abs=0.03)
