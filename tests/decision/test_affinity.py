"""Affinity: exact association-rule measures on real baskets, neighbour ranking, cart combining.

Real data: the "Groceries" baskets (Hahsler, Hornik, Reutterer 2006; R package arules) and the
France rows of the UCI "Online Retail" data set (D. Chen, S. L. Sain, K. Guo 2012, CC BY 4.0),
read from ../shared/datasets.
"""

from __future__ import annotations

import csv
import random
from collections import Counter
from collections.abc import Collection, Iterable
from itertools import combinations
from pathlib import Path

import pytest

from offer_service.decision.affinity import (
    INDEPENDENT_ANCHORS,
    AffinityCounts,
    NeighborStats,
    build_neighbor_lists,
    combine,
    count_pairs,
    pair_increments,
    relevance,
    stats,
    top_neighbors,
)
from offer_service.domain.records import PairCount

DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"

GROCERY_PAIRS = [
    ("other vegetables", "whole milk"),
    ("rolls/buns", "whole milk"),
    ("whole milk", "yogurt"),
    ("other vegetables", "root vegetables"),
    ("tropical fruit", "yogurt"),
    ("cream cheese ", "yogurt"),
    ("roll products ", "whole milk"),
]
FRANCE_PAIRS = [
    ("21086", "21094"),
    ("22551", "22554"),
    ("22554", "22556"),
    ("21080", "21086"),
    ("22726", "22727"),
    ("22629", "22630"),
    ("22326", "23084"),
]


def dataset(name: str) -> Path:
    path = DATASETS / name
    if not path.is_file():
        pytest.skip(f"{path} is absent: these tests need the shared real order data sets")
    return path


@pytest.fixture(scope="module")
def grocery_baskets() -> list[list[str]]:
    with dataset("groceries.csv").open(encoding="utf-8", newline="") as f:
        return [line.rstrip("\r\n").split(",") for line in f]


@pytest.fixture(scope="module")
def france_baskets() -> list[list[str]]:
    """Stock codes per purchase invoice, one entry per line (repeats kept on purpose)."""
    baskets: dict[str, list[str]] = {}
    with dataset("online_retail_france.csv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            invoice, code = row["InvoiceNo"], row["StockCode"]
            if invoice.startswith("C") or int(row["Quantity"]) <= 0:
                continue
            if len(code) >= 5 and all(ch in "0123456789" for ch in code[:5]):
                baskets.setdefault(invoice, []).append(code)
    return list(baskets.values())


@pytest.fixture(scope="module")
def grocery_counts(grocery_baskets: list[list[str]]) -> AffinityCounts:
    return count_pairs(grocery_baskets)


@pytest.fixture(scope="module")
def france_counts(france_baskets: list[list[str]]) -> AffinityCounts:
    return count_pairs(france_baskets)


def reference_counts(baskets: Iterable[list[str]], a: str, b: str) -> tuple[int, int, int, int]:
    """N, count(a), count(b), pair(a, b) by a plain loop over every basket and line."""
    n = count_a = count_b = both = 0
    for lines in baskets:
        has_any = has_a = has_b = False
        for item in lines:
            if item == "":
                continue
            has_any = True
            if item == a:
                has_a = True
            if item == b:
                has_b = True
        n += has_any
        count_a += has_a
        count_b += has_b
        both += has_a and has_b
    return n, count_a, count_b, both


def reference_grocery_counts(a: str, b: str) -> tuple[int, int, int, int]:
    with dataset("groceries.csv").open(encoding="utf-8", newline="") as f:
        return reference_counts((line.rstrip("\r\n").split(",") for line in f), a, b)


def reference_france_counts(a: str, b: str) -> tuple[int, int, int, int]:
    invoices: dict[str, list[str]] = {}
    with dataset("online_retail_france.csv").open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        for _index, invoice, code, _description, quantity, *_rest in reader:
            is_product = code[:5].isascii() and code[:5].isdigit() and len(code) >= 5
            if not invoice.startswith("C") and is_product and int(quantity) > 0:
                invoices.setdefault(invoice, []).append(code)
    return reference_counts(invoices.values(), a, b)


def assert_same_measures(
    counts: AffinityCounts, a: str, b: str, reference: tuple[int, int, int, int]
) -> None:
    n, count_a, count_b, both = reference
    assert both > 0
    assert counts.n == n
    assert counts.basket_count(a) == count_a
    assert counts.basket_count(b) == count_b
    assert counts.pair_count(a, b) == counts.pair_count(b, a) == both
    assert counts.partners(a)[b] == counts.partners(b)[a] == both
    for anchor, partner, anchor_count, partner_count in (
        (a, b, count_a, count_b),
        (b, a, count_b, count_a),
    ):
        got = stats(
            anchor_count, partner_count, counts.pair_count(anchor, partner), counts.n, partner
        )
        assert got.product_id == partner
        assert got.pair_count == both
        assert got.support == pytest.approx(both / n, rel=0, abs=1e-12)
        assert got.confidence == pytest.approx(both / anchor_count, rel=0, abs=1e-12)
        lift = (both / anchor_count) / (partner_count / n)
        assert got.lift == pytest.approx(lift, rel=0, abs=1e-12)


@pytest.mark.dataset
@pytest.mark.parametrize(("a", "b"), GROCERY_PAIRS)
def test_grocery_measures_equal_a_plain_count_of_the_baskets(
    grocery_counts: AffinityCounts, a: str, b: str
) -> None:
    assert_same_measures(grocery_counts, a, b, reference_grocery_counts(a, b))


@pytest.mark.dataset
@pytest.mark.parametrize(("a", "b"), FRANCE_PAIRS)
def test_online_retail_measures_equal_a_plain_count_of_the_invoices(
    france_counts: AffinityCounts, a: str, b: str
) -> None:
    assert_same_measures(france_counts, a, b, reference_france_counts(a, b))


@pytest.mark.dataset
def test_groceries_match_the_published_arules_figures(grocery_counts: AffinityCounts) -> None:
    counts = grocery_counts
    assert counts.n == 9835
    assert len(counts.products) == 169
    assert "cream cheese " in counts.products and "roll products " in counts.products
    assert counts.basket_count("whole milk") == 2513
    # arules: {other vegetables} => {whole milk}  support 0.07483477  confidence 0.3867578
    # lift 1.513634 (printed to 7 significant digits).
    got = stats(1903, 2513, counts.pair_count("other vegetables", "whole milk"), 9835, "whole milk")
    assert counts.basket_count("other vegetables") == 1903
    assert got.pair_count == 736
    assert got.support == pytest.approx(0.07483477, abs=5e-9)
    assert got.confidence == pytest.approx(0.3867578, abs=5e-8)
    assert got.lift == pytest.approx(1.513634, abs=5e-7)


@pytest.mark.dataset
def test_pairs_stream_every_co_purchased_pair_once_lower_id_first(
    france_baskets: list[list[str]], france_counts: AffinityCounts
) -> None:
    expected: Counter[tuple[str, str]] = Counter()
    for basket in france_baskets:
        expected.update(combinations(sorted(set(basket)), 2))
    triples = list(france_counts.pairs())
    assert all(a < b for a, b, _ in triples)
    assert len(triples) == len(expected) == len(france_counts)
    assert {(a, b): n for a, b, n in triples} == expected


def test_a_product_repeated_on_several_lines_counts_once() -> None:
    counts = count_pairs([["a", "a", "b"], ["b", "c", "b", "b"], ["a", "b"]])
    assert counts.n == 3
    assert counts.basket_counts == {"a": 2, "b": 3, "c": 1}
    assert counts.pair_count("a", "b") == 2
    assert counts.pair_count("b", "c") == 1
    assert counts.pair_count("a", "c") == 0
    assert sorted(counts.pairs()) == [("a", "b", 2), ("b", "c", 1)]


def test_empty_baskets_do_not_count_toward_n() -> None:
    counts = count_pairs([[], ["a"], (), ["a", "b"], set()])
    assert counts.n == 2
    assert counts.basket_counts == {"a": 2, "b": 1}
    assert stats(2, 1, 1, counts.n, "b") == NeighborStats("b", 1, 0.5, 0.5, 1.0)


def test_unknown_products_have_no_counts() -> None:
    counts = count_pairs([["a", "b"]])
    assert counts.basket_count("z") == 0
    assert counts.pair_count("a", "z") == 0
    assert counts.pair_count("a", "a") == 0
    assert counts.partners("z") == {}


def test_partners_come_most_co_purchased_first_then_by_id() -> None:
    counts = count_pairs([["x", "c", "a"], ["x", "c"], ["x", "b"], ["x", "a"], ["x", "c"]])
    assert list(counts.partners("x").items()) == [("c", 3), ("a", 2), ("b", 1)]


def test_pair_increments_list_each_pair_once_lower_id_first() -> None:
    assert pair_increments(["b", "a", "b", "c"]) == {("a", "b"): 1, ("a", "c"): 1, ("b", "c"): 1}
    assert pair_increments(["a", "a"]) == {}
    assert pair_increments([]) == {}


def apply_increments(baskets: Iterable[Collection[str]]) -> Counter[tuple[str, str]]:
    totals: Counter[tuple[str, str]] = Counter()
    for basket in baskets:
        totals.update(pair_increments(basket))
    return totals


@pytest.mark.dataset
def test_pair_increments_basket_by_basket_equal_bulk_counting(
    france_baskets: list[list[str]], france_counts: AffinityCounts
) -> None:
    bulk = {(a, b): n for a, b, n in france_counts.pairs()}
    assert apply_increments(france_baskets) == bulk
    baskets = [["b", "a"], ["a", "c", "a"], [], ["c", "b", "a"], ["a", "b"]]
    assert apply_increments(baskets) == {("a", "b"): 3, ("a", "c"): 2, ("b", "c"): 1}
    assert apply_increments(baskets) == {(a, b): n for a, b, n in count_pairs(baskets).pairs()}


def test_stats_of_uncounted_products_are_zero_rather_than_an_error() -> None:
    assert stats(0, 0, 0, 0, "b") == NeighborStats("b", 0, 0.0, 0.0, 0.0)


def test_relevance_is_confidence_minus_partner_support_without_shrinkage() -> None:
    # N = 1000, A in 100 baskets, B in 150, both in 30: P(B|A) = 0.3, P(B) = 0.15.
    assert relevance(30, 100, 150, 1000, shrinkage=0.0) == pytest.approx(0.15, abs=1e-15)
    # With shrinkage 5, lift 2 shrinks to 1 + 1 * 30/35, so relevance = 0.3 * (1 - 35/65).
    assert relevance(30, 100, 150, 1000) == pytest.approx(0.3 * 30 / 65, abs=1e-15)


def test_partners_no_likelier_with_the_anchor_are_not_relevant() -> None:
    assert relevance(15, 100, 150, 1000) == 0.0  # lift exactly 1
    assert relevance(10, 100, 150, 1000) == 0.0  # lift below 1
    assert relevance(0, 100, 150, 1000) == 0.0
    assert relevance(5, 0, 150, 1000) == 0.0


def test_relevance_stays_in_unit_interval_and_grows_with_pair_count() -> None:
    for anchor_count, partner_count, n in ((1, 1, 1), (3, 3, 4), (40, 25, 100), (100, 900, 1000)):
        last = 0.0
        for pair_count in range(min(anchor_count, partner_count) + 1):
            score = relevance(pair_count, anchor_count, partner_count, n)
            assert 0.0 <= score <= 1.0
            assert score >= last
            last = score


def test_negative_shrinkage_is_refused() -> None:
    with pytest.raises(ValueError, match="shrinkage"):
        relevance(2, 10, 10, 100, shrinkage=-1.0)


N = 1000
BASKET_COUNTS = {"anchor": 100, "frequent": 150, "rare": 2, "popular": 600, "weak": 400}
PARTNERS = {"frequent": 30, "rare": 2, "popular": 61, "weak": 20, "anchor": 100}


def test_neighbors_are_ranked_by_relevance() -> None:
    ranked = top_neighbors("anchor", PARTNERS, BASKET_COUNTS, N)
    scores = {
        p.product_id: relevance(p.pair_count, 100, BASKET_COUNTS[p.product_id], N) for p in ranked
    }
    # "weak" (lift 0.5) is not relevant; the anchor never neighbours itself.
    assert ranked == [PairCount("frequent", 30), PairCount("rare", 2), PairCount("popular", 61)]
    assert scores["frequent"] > scores["rare"] > scores["popular"] > 0.0


def test_a_rare_pair_with_high_lift_ranks_below_a_frequent_pair() -> None:
    rare = stats(100, 2, 2, N, "rare")
    frequent = stats(100, 150, 30, N, "frequent")
    assert rare.lift == 10.0 and frequent.lift == 2.0
    ranked = top_neighbors("anchor", {"rare": 2, "frequent": 30}, BASKET_COUNTS, N)
    assert [p.product_id for p in ranked] == ["frequent", "rare"]


def test_shrinkage_puts_a_pair_seen_twice_below_a_well_evidenced_one() -> None:
    # A in 1000 of 10000 baskets. "rare": 2 baskets with A out of its 5 (lift 4);
    # "steady": 50 baskets with A out of 487 (lift 1.027). Unshrunk, the rare pair wins.
    counts = {"a": 1000, "rare": 5, "steady": 487}
    partners = {"rare": 2, "steady": 50}
    unshrunk = top_neighbors("a", partners, counts, 10_000, shrinkage=0.0)
    shrunk = top_neighbors("a", partners, counts, 10_000)
    assert [p.product_id for p in unshrunk] == ["rare", "steady"]
    assert [p.product_id for p in shrunk] == ["steady", "rare"]


def test_pairs_under_the_minimum_count_are_left_out() -> None:
    counts = {"a": 10, "once": 1, "twice": 2}
    partners = {"once": 1, "twice": 2}
    assert top_neighbors("a", partners, counts, 100) == [PairCount("twice", 2)]
    assert top_neighbors("a", partners, counts, 100, min_pair_count=1) == [
        PairCount("twice", 2),
        PairCount("once", 1),
    ]
    assert top_neighbors("a", partners, counts, 100, min_pair_count=3) == []


def test_ties_go_to_the_higher_pair_count_then_the_lower_id() -> None:
    # Both score exactly 0.25: (10 of 20) and (15 of 45) with A in 20 of 100 baskets.
    counts = {"a": 20, "p10": 20, "p15": 45, "x": 20, "y": 20}
    assert relevance(10, 20, 20, 100) == relevance(15, 20, 45, 100) == 0.25
    partners = {"y": 10, "p10": 10, "x": 10, "p15": 15}
    ranked = [p.product_id for p in top_neighbors("a", partners, counts, 100)]
    assert ranked == ["p15", "p10", "x", "y"]
    shuffled = list(partners.items())
    for seed in range(5):
        random.Random(seed).shuffle(shuffled)
        as_records = [PairCount(pid, n) for pid, n in shuffled]
        assert [p.product_id for p in top_neighbors("a", as_records, counts, 100)] == ranked


def test_k_caps_the_list() -> None:
    assert top_neighbors("anchor", PARTNERS, BASKET_COUNTS, N, k=2) == [
        PairCount("frequent", 30),
        PairCount("rare", 2),
    ]
    assert top_neighbors("anchor", PARTNERS, BASKET_COUNTS, N, k=0) == []
    with pytest.raises(ValueError, match="k must be"):
        top_neighbors("anchor", PARTNERS, BASKET_COUNTS, N, k=-1)


@pytest.mark.dataset
@pytest.mark.parametrize("k", [1, 5, 50])
def test_bulk_neighbor_lists_equal_top_neighbors_of_every_product(
    grocery_counts: AffinityCounts, france_counts: AffinityCounts, k: int
) -> None:
    for counts in (grocery_counts, france_counts):
        lists = build_neighbor_lists(counts, k=k)
        basket_counts = counts.basket_counts
        assert set(lists) == set(counts.products)
        for product, neighbours in lists.items():
            partners = counts.partners(product)
            assert neighbours == top_neighbors(product, partners, basket_counts, counts.n, k=k)
            assert len(neighbours) <= k
        assert sum(map(len, lists.values())) > 0


@pytest.mark.dataset
def test_grocery_neighbours_of_whole_milk_are_everyday_staples(
    grocery_counts: AffinityCounts,
) -> None:
    lists = build_neighbor_lists(grocery_counts, k=3)
    assert lists["whole milk"] == [
        PairCount("other vegetables", 736),
        PairCount("root vegetables", 481),
        PairCount("yogurt", 551),
    ]


def test_combine_is_a_noisy_or_of_the_anchors() -> None:
    combined = combine({"cart1": {"p": 0.5, "q": 0.2}, "cart2": {"p": 0.5, "r": 0.1}})
    assert list(combined) == ["p", "q", "r"]
    assert combined["p"] == pytest.approx(0.75, abs=1e-15)  # 1 - 0.5 * 0.5
    assert combined["q"] == pytest.approx(0.2, abs=1e-15)
    assert combined["r"] == pytest.approx(0.1, abs=1e-15)
    three = {"a": {"x": 0.1}, "b": {"x": 0.2}, "c": {"x": 0.3}}
    assert combine(three, independent=3)["x"] == pytest.approx(1 - 0.9 * 0.8 * 0.7, abs=1e-15)


def test_combine_counts_a_larger_cart_as_a_few_independent_anchors() -> None:
    # Past INDEPENDENT_ANCHORS (2) anchors, the product of misses is raised to 2 / n.
    assert INDEPENDENT_ANCHORS == 2
    three = combine({"a": {"x": 0.1}, "b": {"x": 0.2}, "c": {"x": 0.3}})
    assert three["x"] == pytest.approx(1 - (0.9 * 0.8 * 0.7) ** (2 / 3), abs=1e-15)  # 0.368
    # A wholesale cart of 300 items: every item points to x, one in ten to y and to z. A
    # noisy-OR scores x, y and z all above 0.99999 (then price alone ranks them); here x is
    # 1 - 0.6^2 and y, backed by a tenth of the cart, 1 - 0.6^0.2. z's links are stronger,
    # which counts, but not as much as being backed by the whole cart.
    cart: dict[str, dict[str, float]] = {f"item{i:03d}": {"x": 0.4} for i in range(300)}
    for i in range(0, 300, 10):
        cart[f"item{i:03d}"].update(y=0.4, z=0.8)
    combined = combine(cart)
    assert list(combined) == ["x", "z", "y"]
    assert combined["x"] == pytest.approx(1 - 0.6**2)
    assert combined["y"] == pytest.approx(1 - 0.6**0.2)
    assert combined["z"] == pytest.approx(1 - 0.2**0.2)
    # A certain link (score 1) stays certain however large the cart.
    assert combine({**cart, "item000": {"x": 1.0}})["x"] == 1.0
    with pytest.raises(ValueError, match="independent must be >= 1"):
        combine(cart, independent=0)


def test_combine_never_scores_below_the_best_anchor_and_caps_at_one() -> None:
    combined = combine({"a": {"x": 0.6, "y": 1.5}, "b": {"x": 0.01, "z": 0.0}})
    assert combined["x"] >= 0.6
    assert combined["y"] == 1.0
    assert "z" not in combined  # no anchor points to it


def test_combine_does_not_depend_on_mapping_order() -> None:
    forward = {"a": {"x": 0.3, "y": 0.3}, "b": {"x": 0.7, "y": 0.1}, "c": {"y": 0.2}}
    backward = {k: dict(reversed(v.items())) for k, v in reversed(forward.items())}
    assert list(combine(forward).items()) == list(combine(backward).items())
