"""Offline evaluation: hide one product of each later basket and ask the engine to find it again.

`offer-service evaluate --orders FILE --format online-retail --split 2011-11-01 --k 1,2,5`
trains on the orders placed before the split exactly as a store would hold them (affinity counts
and top-50 neighbour lists as `ingest.rebuild_affinity` builds them, best sellers), then for
every later basket of two or more products hides each product in turn and asks the real
decision pipeline (`decide.prepare` on the cart surface, the store's default `StoreRules`, no
visitor) for cross-sells of the rest. The cart surface shows at most 2 offers, so the ranking
scored at k is the prepared list, one product per family, cut at k: for k <= 2 exactly what
`decide.decide` answers with `limit=k`.

Metrics, over leave-one-out queries: hit rate@k (the hidden product is among the first k), MRR
(1/rank of the hidden product within the first max-k, 0 when absent) and catalog coverage (the
share of the products sold before the split that appear in at least one top-max-k list).
Baselines: global best sellers before the split, and random products of that catalog (seeded);
both skip products already in the cart, as the engine does.

The baselines answer every query. The engine's cost grows with the cart, and Online Retail
baskets are wholesale orders (up to 748 products): asking it all 104,513 queries takes about an
hour of CPU. So by default every basket takes part but the engine is asked about at most
`--per-basket` (4) of its products, drawn with a seeded RNG, each answer standing for n / asked
queries of a basket of n: its figures estimate the mean over every query, and the report gives
their standard error (`--per-basket 0` asks every query: no sampling, no error).
The engine's coverage counts the queries asked. Work is split over `--jobs` processes (default:
one per CPU). `--until` ends the test window: settings are chosen on a validation month (split a
month earlier, test until the official split) so that the official figure is measured once.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import random
import sys
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from offer_service.commerce.ingest import NEIGHBORS_K
from offer_service.decision import affinity, decide
from offer_service.decision.candidates import CandidateInputs
from offer_service.decision.rules import diversify
from offer_service.domain.orders import Order
from offer_service.domain.policy import StoreRules
from offer_service.domain.products import Product
from offer_service.domain.records import PairCount
from offer_service.domain.surfaces import Surface
from offer_service.domain.time import epoch_ms, parse_date

METHODS = ("engine", "best_sellers", "random")
# Basket sizes (distinct products) the text report breaks hit rates down by.
SIZES = ((2, 10, "2-10"), (11, 30, "11-30"), (31, 100, "31-100"), (101, math.inf, "101+"))
DEFAULT_PER_BASKET = 4
DEFAULT_SEED = 7
BEST_SELLERS_PER_CATEGORY = 20  # as the engine reads them (engine.BEST_SELLERS_PER_CATEGORY)

BAD_K = "--k takes positive integers separated by commas, e.g. 1,2,5"
BAD_SPLIT = "--split takes a date, YYYY-MM-DD (UTC)"
BAD_UNTIL = "--until takes a date, YYYY-MM-DD (UTC), after --split"


@dataclass(slots=True)
class Trained:
    """What a store knows at the split: its catalog, affinity and best sellers."""

    products: dict[str, Product]  # every product, at its last price before the split
    catalog: list[str]  # products sold before the split: what any method may recommend
    catalog_set: frozenset[str]
    neighbors: dict[str, list[PairCount]]
    basket_counts: dict[str, int]
    basket_total: int
    best_sellers: list[str]  # the catalog, most baskets first, then id
    best_seller_rank: dict[str, int]
    category_best_sellers: dict[str, list[tuple[str, int]]]
    family_members: dict[str, list[Product]]
    rules: StoreRules


@dataclass(slots=True)
class Tally:
    """Weighted hits per k, reciprocal ranks and recommended products of one method."""

    hits: dict[int, float]
    reciprocal: float = 0.0
    shown: set[str] = field(default_factory=set)
    # Sampling variance of the estimated number of hits per k (0 when every query is asked).
    variance: dict[int, float] = field(default_factory=dict)

    def add(self, ranking: Sequence[str], hidden: str, weight: float, ks: Sequence[int]) -> None:
        self.shown.update(ranking)
        if hidden in ranking:
            rank = ranking.index(hidden) + 1
            self.reciprocal += weight / rank
            for k in ks:
                if rank <= k:
                    self.hits[k] += weight

    def merge(self, other: Tally) -> None:
        for k, v in other.hits.items():
            self.hits[k] += v
        for k, v in other.variance.items():
            self.variance[k] = self.variance.get(k, 0.0) + v
        self.reciprocal += other.reciprocal
        self.shown |= other.shown


@dataclass(slots=True)
class Result:
    ks: tuple[int, ...]
    tallies: dict[str, Tally]
    weight: float = 0.0  # the leave-one-out queries
    evaluated: int = 0  # the queries the engine was asked
    baskets: int = 0
    unseen: float = 0.0  # weight of queries whose hidden product was never sold before
    # basket size label -> [baskets, weight, weighted hits at max k per method in METHODS order]
    sizes: dict[str, list[float]] = field(default_factory=dict)

    def merge(self, other: Result) -> None:
        for name, tally in other.tallies.items():
            self.tallies[name].merge(tally)
        self.weight += other.weight
        self.evaluated += other.evaluated
        self.baskets += other.baskets
        self.unseen += other.unseen
        for label, row in other.sizes.items():
            mine = self.sizes.setdefault(label, [0.0] * len(row))
            for i, v in enumerate(row):
                mine[i] += v

    def standard_error(self, k: int) -> float:
        """The standard error of the engine's hit rate@k from sampling hidden products."""
        return math.sqrt(self.tallies["engine"].variance.get(k, 0.0)) / (self.weight or 1.0)

    def metrics(self, catalog_size: int) -> dict[str, dict[str, float]]:
        w = self.weight or 1.0
        return {
            name: {
                **{f"hit_rate@{k}": t.hits[k] / w for k in self.ks},
                "mrr": t.reciprocal / w,
                "coverage": len(t.shown) / catalog_size if catalog_size else 0.0,
            }
            for name, t in self.tallies.items()
        }


def empty_result(ks: Sequence[int]) -> Result:
    return Result(tuple(ks), {m: Tally(dict.fromkeys(ks, 0.0)) for m in METHODS})


def train(
    orders: Iterable[Order], products: Iterable[Product], rules: StoreRules | None = None
) -> Trained:
    """The store's state after importing `orders` (all before the split): affinity as
    `ingest.rebuild_affinity` computes it, prices as of the last order line seen."""
    rules = rules or StoreRules()
    by_id = {p.id: p for p in products}
    last_price: dict[str, tuple[int, int]] = {}
    baskets = []
    for order in orders:
        baskets.append(order.product_ids)
        for line in order.lines:
            seen = last_price.get(line.product_id)
            if seen is None or order.placed_at_ms >= seen[0]:
                last_price[line.product_id] = (order.placed_at_ms, line.price)
    for pid, (_, price) in last_price.items():
        p = by_id.get(pid)
        by_id[pid] = (
            Product(id=pid, title=pid, price=price) if p is None else replace(p, price=price)
        )
    counts = affinity.count_pairs(baskets)
    del baskets
    neighbors = affinity.build_neighbor_lists(
        counts, k=NEIGHBORS_K, min_pair_count=rules.min_pair_count
    )
    basket_counts = counts.basket_counts
    catalog = sorted(basket_counts)
    best = sorted(catalog, key=lambda pid: (-basket_counts[pid], pid))
    by_category: dict[str, list[tuple[str, int]]] = {}
    for pid in best:
        category = by_id[pid].category
        if category and len(by_category.setdefault(category, [])) < BEST_SELLERS_PER_CATEGORY:
            by_category[category].append((pid, basket_counts[pid]))
    families: dict[str, list[Product]] = {}
    for p in by_id.values():
        if p.family:
            families.setdefault(p.family, []).append(p)
    return Trained(
        products=by_id,
        catalog=catalog,
        catalog_set=frozenset(catalog),
        neighbors=neighbors,
        basket_counts=basket_counts,
        basket_total=counts.n,
        best_sellers=best,
        best_seller_rank={pid: i for i, pid in enumerate(best)},
        category_best_sellers=by_category,
        family_members=families,
        rules=rules,
    )


def engine_ranking(trained: Trained, cart: Sequence[str], k: int) -> list[str]:
    """The engine's cart cross-sells for `cart`, best first, at most k (see the module doc)."""
    anchors = tuple(trained.products[pid] for pid in sorted(cart) if pid in trained.products)
    inputs = CandidateInputs(
        surface=Surface.CART,
        anchors=anchors,
        products=trained.products,
        neighbors=trained.neighbors,
        basket_counts=trained.basket_counts,
        basket_total=trained.basket_total,
        family_members={
            f: trained.family_members.get(f, []) for f in {a.family for a in anchors if a.family}
        },
        category_best_sellers={
            c: trained.category_best_sellers.get(c, [])
            for c in {a.category for a in anchors if a.category}
        },
        min_pair_count=trained.rules.min_pair_count,
    )
    prepared = decide.prepare(inputs, trained.rules)
    return [o.candidate.product.id for o in diversify(prepared)[:k]]


def best_seller_ranking(trained: Trained, cart: Collection[str], k: int) -> list[str]:
    """The k best sellers not in the cart."""
    out: list[str] = []
    for pid in trained.best_sellers:
        if pid not in cart:
            out.append(pid)
            if len(out) == k:
                break
    return out


def random_ranking(
    trained: Trained, cart: Collection[str], k: int, rng: random.Random, hidden: str | None = None
) -> list[str]:
    """k distinct random catalog products not in the cart (`cart` minus `hidden`, if given)."""
    catalog = trained.catalog
    held = sum(1 for pid in cart if pid in trained.catalog_set and pid != hidden)
    out: list[str] = []
    while len(out) < min(k, len(catalog) - held):
        pid = catalog[rng.randrange(len(catalog))]
        if (pid not in cart or pid == hidden) and pid not in out:
            out.append(pid)
    return out


def _with_hidden(trained: Trained, outside: list[str], hidden: str, k: int) -> list[str]:
    """The best sellers for a basket less `hidden`, from `outside` (those for the whole basket):
    the hidden product goes back in at its own rank."""
    rank = trained.best_seller_rank.get(hidden)
    if rank is None:
        return outside[:k]
    at = sum(1 for pid in outside if trained.best_seller_rank[pid] < rank)
    return [*outside[:at], hidden, *outside[at:]][:k]


def evaluate_baskets(
    trained: Trained,
    baskets: Sequence[tuple[str, Sequence[str]]],
    ks: Sequence[int],
    *,
    per_basket: int = DEFAULT_PER_BASKET,
    seed: int = DEFAULT_SEED,
) -> Result:
    """Leave-one-out over `baskets` ((basket id, product ids)); baskets of fewer than two
    distinct products are skipped. Deterministic per basket, whatever the batching."""
    result = empty_result(ks)
    k_max = max(ks)
    catalog = trained.catalog_set
    engine, best, rand = (result.tallies[m] for m in METHODS)
    for basket_id, product_ids in baskets:
        items = sorted(set(product_ids))
        n = len(items)
        if n < 2:
            continue
        rng = random.Random(f"{seed}:{basket_id}")
        asked = set(items if not per_basket or n <= per_basket else rng.sample(items, per_basket))
        weight = n / len(asked)
        basket = frozenset(items)
        outside = best_seller_ranking(trained, basket, k_max)
        label = next(name for low, high, name in SIZES if low <= n <= high)
        by_size = result.sizes.setdefault(label, [0.0] * (2 + len(METHODS)))
        by_size[0] += 1
        by_size[1] += n
        result.baskets += 1
        result.weight += n
        engine_hits = dict.fromkeys(ks, 0)
        for h in items:
            if h not in catalog:
                result.unseen += 1
            rankings = [
                _with_hidden(trained, outside, h, k_max),
                random_ranking(trained, basket, k_max, rng, hidden=h),
            ]
            for i, (tally, ranking) in enumerate(zip((best, rand), rankings, strict=True)):
                tally.add(ranking, h, 1.0, ks)
                by_size[3 + i] += h in ranking
            if h in asked:
                ranking = engine_ranking(trained, [p for p in items if p != h], k_max)
                engine.add(ranking, h, weight, ks)
                result.evaluated += 1
                if h in ranking:
                    by_size[2] += weight
                    for k in ks:
                        engine_hits[k] += ranking.index(h) < k
        m = len(asked)
        if 1 < m < n:
            # The estimated total n * mean hits has variance n^2 (1 - m/n) s^2 / m (sampling
            # without replacement), s^2 the sample variance of the 0/1 hits.
            for k, x in engine_hits.items():
                s2 = (x - x * x / m) / (m - 1)
                engine.variance[k] = engine.variance.get(k, 0.0) + n * n * (1 - m / n) * s2 / m
    return result


# Set before the worker processes fork, so they share the trained state without pickling it.
_WORK: tuple[Trained, list[tuple[str, list[str]]], tuple[int, ...], int, int, int] | None = None


def _work_chunk(index: int) -> Result:
    assert _WORK is not None
    trained, baskets, ks, per_basket, seed, chunks = _WORK
    return evaluate_baskets(trained, baskets[index::chunks], ks, per_basket=per_basket, seed=seed)


def evaluate(
    trained: Trained,
    baskets: list[tuple[str, list[str]]],
    ks: Sequence[int],
    *,
    per_basket: int = DEFAULT_PER_BASKET,
    seed: int = DEFAULT_SEED,
    jobs: int = 1,
) -> Result:
    """`evaluate_baskets` over `jobs` forked processes (in this one when fork is unavailable)."""
    global _WORK
    ks = tuple(ks)
    if jobs <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return evaluate_baskets(trained, baskets, ks, per_basket=per_basket, seed=seed)
    # Many small interleaved chunks: basket sizes vary 300-fold, and big ones come in runs.
    chunks = jobs * 16
    _WORK = (trained, baskets, ks, per_basket, seed, chunks)
    try:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            result = empty_result(ks)
            for part in pool.imap_unordered(_work_chunk, range(chunks)):
                result.merge(part)
    finally:
        _WORK = None
    return result


# --- the command ---------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate", help="offline hit rate, MRR and coverage of the engine against baselines"
    )
    p.add_argument("--orders", required=True, help="Online Retail CSV or .tar.xz of daily CSVs")
    p.add_argument("--format", default="online-retail", choices=["online-retail"])
    p.add_argument("--split", required=True, help="train before this UTC date, test from it")
    p.add_argument("--until", help="test only on orders before this UTC date (a validation window)")
    p.add_argument("--k", default="1,2,5", help="cut-offs, comma-separated (default 1,2,5)")
    p.add_argument(
        "--per-basket",
        type=int,
        default=DEFAULT_PER_BASKET,
        help=f"hidden products drawn per basket, 0 = all (default {DEFAULT_PER_BASKET})",
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise SystemExit(f"error: {BAD_K}") from None
    if not ks or ks[0] < 1:
        raise SystemExit(f"error: {BAD_K}")
    return tuple(ks)


def parse_split(text: str, error: str = BAD_SPLIT) -> int:
    try:
        day = parse_date(text)
    except ValueError:
        raise SystemExit(f"error: {error}") from None
    return epoch_ms(datetime(day.year, day.month, day.day, tzinfo=UTC))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from offer_service.importers.online_retail import parse_online_retail

    ks = parse_ks(args.k)
    split_ms = parse_split(args.split)
    until_ms = math.inf if args.until is None else parse_split(args.until, BAD_UNTIL)
    if until_ms <= split_ms:
        raise SystemExit(f"error: {BAD_UNTIL}")
    if args.per_basket == 1 or args.per_basket < 0:
        # One answer per basket leaves its share of the standard error unknown.
        raise SystemExit("error: --per-basket takes 0 (every query) or at least 2")
    path = Path(args.orders)
    if not path.exists():
        print(f"error: no such file: {path}", file=sys.stderr)
        return 2
    started = time.monotonic()
    parsed = parse_online_retail(path)
    before = [o for o in parsed.orders if o.placed_at_ms < split_ms]
    after = [
        (o.id, sorted(o.product_ids))
        for o in parsed.orders
        if split_ms <= o.placed_at_ms < until_ms
    ]
    trained = train(before, parsed.products)
    result = evaluate(
        trained, after, ks, per_basket=args.per_basket, seed=args.seed, jobs=args.jobs
    )
    seconds = time.monotonic() - started
    metrics = result.metrics(len(trained.catalog))
    if args.json:
        sys.stdout.write(orjson.dumps(metrics).decode() + "\n")
    else:
        text = table(
            metrics, result, ks, len(before), len(trained.catalog), args.split, seconds, args.until
        )
        sys.stdout.write(text)
    return 0


def table(
    metrics: Mapping[str, Mapping[str, float]],
    result: Result,
    ks: Sequence[int],
    trained_orders: int,
    catalog_size: int,
    split: str,
    seconds: float,
    until: str | None = None,
) -> str:
    """The evaluation as a Markdown table with a few lines of context."""
    window = "" if until is None else f" placed before {until}"
    heads = [f"hit rate@{k}" for k in ks] + ["MRR", "coverage"]
    lines = [
        f"Trained on {trained_orders:,} orders before {split} ({catalog_size:,} products sold); "
        f"tested on {result.baskets:,} later baskets of 2+ products{window}.",
        f"{round(result.weight):,} leave-one-out queries, "
        f"{result.unseen / (result.weight or 1):.1%} of them hiding a product never sold before "
        "the split (no method can find it). "
        + (
            "The engine was asked every one."
            if result.evaluated == round(result.weight)
            else f"The engine was asked {result.evaluated:,} of them, sampled per basket; the "
            "baselines all."
        ),
        "",
        "| method | " + " | ".join(heads) + " |",
        "|---|" + "---:|" * len(heads),
    ]
    for name in METHODS:
        m = metrics[name]
        cells = [f"{m[f'hit_rate@{k}']:.2%}" for k in ks] + [
            f"{m['mrr']:.4f}",
            f"{m['coverage']:.1%}",
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    k = max(ks)
    base = metrics["best_sellers"][f"hit_rate@{k}"]
    ratio = metrics["engine"][f"hit_rate@{k}"] / base if base else math.inf
    error = result.standard_error(k)
    summary = f"engine / best sellers at hit rate@{k}: {ratio:.2f}x"
    if error and base:
        low, high = ratio - 1.96 * error / base, ratio + 1.96 * error / base
        summary += (
            f" (the engine's hit rate@{k} has a standard error of {error:.2%} from sampling: "
            f"95% interval {low:.2f}x-{high:.2f}x)"
        )
    lines += [
        "",
        f"{summary}; took {seconds:.1f} s",
        "",
        f"Hit rate@{k} by basket size (distinct products):",
        "",
        "| basket size | baskets | queries | " + " | ".join(METHODS) + " | engine / best |",
        "|---|" + "---:|" * (len(METHODS) + 3),
    ]
    for _, _, label in SIZES:
        row = result.sizes.get(label)
        if row is None:
            continue
        baskets, weight, *hits = row
        rates = [h / weight for h in hits]
        versus = f"{rates[0] / rates[1]:.2f}x" if rates[1] else "-"
        cells = [f"{r:.2%}" for r in rates]
        lines.append(
            f"| {label} | {baskets:,.0f} | {weight:,.0f} | " + " | ".join(cells) + f" | {versus} |"
        )
    return "\n".join(lines) + "\n"
