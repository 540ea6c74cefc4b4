"""Property tests: the decision pipeline's promises hold for random catalogs, carts and rules."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offer_service.decision import decide
from offer_service.decision.candidates import CandidateInputs
from offer_service.decision.rules import discount_cap, family_key
from offer_service.domain.policy import ABSOLUTE_DISCOUNT_CAP, DiscountRules, StoreRules
from offer_service.domain.products import Product
from offer_service.domain.records import PairCount, VisitorState
from offer_service.domain.surfaces import SURFACES, Surface

NOW = 1_800_000_000_000
FAMILIES = ["f1", "f2", "f3", None]
CATEGORIES = ["cams", "cards", "bags"]
FLAGS = ["new", "clearance", "consumable", "fee"]


@st.composite
def catalogs(draw: st.DrawFn) -> list[Product]:
    n = draw(st.integers(3, 25))
    ids = [f"p{i}" for i in range(n)]
    products = []
    for pid in ids:
        price = draw(st.integers(1, 200_000))
        products.append(
            Product(
                id=pid,
                title=pid,
                price=price,
                category=draw(st.sampled_from(CATEGORIES)),
                cost=draw(st.one_of(st.none(), st.integers(0, price * 2))),
                compare_at_price=draw(st.one_of(st.none(), st.integers(0, price * 2))),
                family=draw(st.sampled_from(FAMILIES)),
                tier=draw(st.one_of(st.none(), st.integers(1, 4))),
                inventory=draw(st.one_of(st.none(), st.integers(0, 3))),
                active=draw(st.booleans()),
                complements=tuple(draw(st.lists(st.sampled_from(ids), max_size=4, unique=True))),
                flags=tuple(draw(st.lists(st.sampled_from(FLAGS), max_size=2, unique=True))),  # type: ignore[arg-type]
                replenish_days=draw(st.one_of(st.none(), st.integers(1, 60))),
            )
        )
    return products


@st.composite
def rule_sets(draw: st.DrawFn) -> StoreRules:
    # model_construct skips validation: even rules that ask for more than the caps allow must
    # not produce a discount above them.
    discounts = DiscountRules.model_construct(
        upsell=draw(st.integers(0, 80)),
        cross_sell=draw(st.integers(0, 80)),
        downsell=draw(st.integers(0, 80)),
        replenish=draw(st.integers(0, 80)),
        default_cap=draw(st.integers(0, 80)),
        new_cap=draw(st.integers(0, 80)),
        clearance_cap=draw(st.integers(0, 80)),
        new_bonus=draw(st.integers(0, 40)),
        clearance_bonus=draw(st.integers(0, 40)),
    )
    return StoreRules.model_construct(
        **{
            **StoreRules().__dict__,
            "discounts": discounts,
            "margin_floor": draw(st.integers(0, 5000)),
            "value": draw(st.sampled_from(["price", "margin"])),
        }
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[CandidateInputs, StoreRules, VisitorState, int]:
    catalog = draw(catalogs())
    surface = draw(st.sampled_from(list(Surface)))
    by_id = {p.id: p for p in catalog}
    anchors = draw(
        st.lists(st.sampled_from(catalog), min_size=1, max_size=4, unique_by=lambda p: p.id)
    )
    anchor_ids = {a.id for a in anchors}
    neighbors = {
        a.id: [
            PairCount(pid, draw(st.integers(1, 50)))
            for pid in draw(st.lists(st.sampled_from(list(by_id)), max_size=8, unique=True))
            if pid != a.id
        ]
        for a in anchors
    }
    families = {a.family for a in anchors if a.family}
    inputs = CandidateInputs(
        surface=surface,
        anchors=tuple(anchors),
        products=by_id,
        neighbors=neighbors,
        basket_counts={p.id: draw(st.integers(50, 100)) for p in catalog},
        basket_total=200,
        family_members={f: [p for p in catalog if p.family == f] for f in families},
        category_best_sellers={
            c: [(p.id, 60) for p in catalog if p.category == c][:10] for c in CATEGORIES
        },
        order_total=sum(a.price for a in anchors) if SURFACES[surface].post_purchase else None,
        order_placed_at_ms=NOW - 90 * 86_400_000,
    )
    visitor = VisitorState(
        purchased={
            pid: NOW - 86_400_000
            for pid in draw(st.lists(st.sampled_from(list(by_id)), max_size=3))
        },
        declined=frozenset(draw(st.lists(st.sampled_from(list(by_id)), max_size=3))),
    )
    limit = draw(st.integers(1, 10))
    del anchor_ids
    return inputs, draw(rule_sets()), visitor, limit


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_the_pipeline_keeps_every_promise(
    scenario: tuple[CandidateInputs, StoreRules, VisitorState, int],
) -> None:
    inputs, rules, visitor, limit = scenario
    offers = decide.decide(inputs, rules, visitor, limit=limit, now_ms=NOW)
    spec = SURFACES[inputs.surface]
    anchor_ids = {a.id for a in inputs.anchors}

    assert len(offers) <= min(limit, spec.hard_max)
    singles = [o for o in offers if not o.items]
    bundles = [o for o in offers if o.items]
    families = [family_key(o.candidate.product) for o in singles]
    assert len(families) == len(set(families)), "one product per family"
    assert len(bundles) <= 1, "at most one bundle"
    for offer in singles:
        p = offer.candidate.product
        assert offer.candidate.kind in spec.kinds
        if offer.candidate.kind != "replenish":
            assert p.id not in anchor_ids, "never an item of the cart or order"
            assert p.id not in visitor.purchased
        assert p.id not in visitor.declined
        assert p.active and p.in_stock and not p.is_fee
        assert 0 <= offer.discount_pct <= ABSOLUTE_DISCOUNT_CAP
        d = rules.discounts
        assert offer.discount_pct <= max(d.default_cap, d.new_cap, d.clearance_cap)
        if p.on_sale:
            assert offer.discount_pct == 0
        if "clearance" not in p.flags and "new" not in p.flags:
            assert offer.discount_pct <= d.default_cap
        assert offer.offer_price == (p.price * (100 - offer.discount_pct) + 50) // 100
        if p.cost is not None:
            assert offer.offer_price - p.cost >= rules.margin_floor, "never below the margin floor"
        if spec.post_purchase and inputs.order_total is not None:
            assert offer.offer_price <= inputs.order_total
    for bundle in bundles:
        assert inputs.surface == Surface.PRODUCT_PAGE and bundle.candidate.kind == "bundle"
        viewed, *complements = [i.product for i in bundle.items]
        assert viewed == bundle.candidate.product == inputs.anchors[0]
        assert 1 <= len(complements) <= 2
        assert 5 <= bundle.discount_pct <= 15
        total = sum(p.price for p in (viewed, *complements))
        assert bundle.offer_price == (total * (100 - bundle.discount_pct) + 50) // 100
        assert sum(i.offer_price for i in bundle.items) == bundle.offer_price, "exact shares"
        groups = {family_key(viewed), *families}
        for item in bundle.items:
            p = item.product
            assert p.active and p.in_stock and not p.is_fee and not p.on_sale
            assert p.id not in visitor.purchased and p.id not in visitor.declined
            assert bundle.discount_pct <= discount_cap(p, rules)
            if p.cost is not None:
                assert item.offer_price - p.cost >= rules.margin_floor, "each item keeps the floor"
        for p in complements:
            assert p.id not in anchor_ids
            assert family_key(p) not in groups, "a complement is not beside its family"
            groups.add(family_key(p))

    again = decide.decide(inputs, rules, visitor, limit=limit, now_ms=NOW)
    assert again == offers, "the same input gives the same answer"
