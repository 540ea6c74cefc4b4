"""Co-purchase affinity: basket counts -> support, confidence, lift -> ranked top-K neighbours.

The measures are the association-rule ones, exactly: N is the number of baskets holding at least
one product, count(A) the baskets holding A, pair(A, B) the baskets holding both (a basket counts
once however many lines repeat a product), and

    support(A u B)     = pair / N
    confidence(A -> B) = pair / count(A)
    lift(A -> B)       = confidence(A -> B) / support(B) = pair * N / (count(A) * count(B))

Pure: no I/O. The aggregation job feeds `count_pairs` and stores what `build_neighbor_lists`
returns; order ingestion feeds `pair_increments`; the request path reads neighbour lists only.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import chain, combinations, compress, repeat
from operator import lt

from offer_service.domain.records import PairCount

__all__ = [
    "INDEPENDENT_ANCHORS",
    "AffinityCounts",
    "NeighborStats",
    "build_neighbor_lists",
    "combine",
    "count_pairs",
    "pair_increments",
    "relevance",
    "stats",
    "sum_scores",
    "top_neighbors",
]

NEGATIVE_SHRINKAGE = "shrinkage must be >= 0, got {shrinkage!r}"
BAD_K = "k must be >= 0, got {k!r}"
BAD_INDEPENDENT = "independent must be >= 1, got {independent!r}"

# A cart's anchors count as at most this many independent reasons to want a candidate (see
# `combine`).
INDEPENDENT_ANCHORS = 2

# Unsigned C int: 4 bytes per stored partner id and per count (a list would take 8 per pointer).
_TYPECODE = "I"


class AffinityCounts:
    """N, per-product basket counts and pair counts of a set of baskets; built by `count_pairs`.

    Products are numbered in ascending string order, so comparing the small ints compares the
    ids. Each product keeps two parallel arrays, most co-purchased first: every partner and the
    pair count (so each pair is stored from both sides). Ranking then reads only a short prefix.
    """

    __slots__ = ("_counts", "_ids", "_index", "_pair_counts", "_partners", "n")

    def __init__(
        self,
        n: int,
        ids: Sequence[str],
        basket_counts: Sequence[int],
        partners: Sequence[array[int]],
        pair_counts: Sequence[array[int]],
    ) -> None:
        self.n = n
        self._ids = list(ids)
        self._index = {pid: i for i, pid in enumerate(self._ids)}
        self._counts = list(basket_counts)
        self._partners = list(partners)
        self._pair_counts = list(pair_counts)

    @property
    def products(self) -> Sequence[str]:
        """Every product seen in a basket, ascending."""
        return tuple(self._ids)

    @property
    def basket_counts(self) -> dict[str, int]:
        """count(A) for every product."""
        return dict(zip(self._ids, self._counts, strict=True))

    def basket_count(self, product_id: str) -> int:
        i = self._index.get(product_id)
        return 0 if i is None else self._counts[i]

    def pair_count(self, a: str, b: str) -> int:
        """pair(A, B): baskets holding both (0 for unknown products or a == b)."""
        i, j = self._index.get(a), self._index.get(b)
        if i is None or j is None:
            return 0
        try:
            return self._pair_counts[i][self._partners[i].index(j)]
        except ValueError:
            return 0

    def partners(self, product_id: str) -> dict[str, int]:
        """Every product co-purchased with `product_id` with its pair count; most first, then id."""
        i = self._index.get(product_id)
        if i is None:
            return {}
        ids = self._ids
        items = sorted(zip(self._pair_counts[i], self._partners[i], strict=True), key=_most_first)
        return {ids[partner]: pair_count for pair_count, partner in items}

    def pairs(self) -> Iterator[tuple[str, str, int]]:
        """Every undirected pair once as (a, b, pair count) with a < b, streamed."""
        ids = self._ids
        for i, (partner_ids, counts) in enumerate(
            zip(self._partners, self._pair_counts, strict=True)
        ):
            # C-level iterators end to end: this streams millions of triples.
            triples = zip(repeat(ids[i]), map(ids.__getitem__, partner_ids), counts)
            yield from compress(triples, map(partial(lt, i), partner_ids))

    def __len__(self) -> int:
        """The number of distinct undirected pairs."""
        return sum(len(p) for p in self._partners) // 2


def count_pairs(baskets: Iterable[Collection[str]]) -> AffinityCounts:
    """Count N, count(A) and pair(A, B) over baskets of product ids (repeats, empties allowed)."""
    index: dict[str, int] = {}
    encoded: list[list[int]] = []
    for basket in baskets:
        distinct = set(basket)
        if distinct:
            encoded.append([index.setdefault(pid, len(index)) for pid in distinct])
    n = len(encoded)
    ids = sorted(index)
    rank = [0] * len(ids)
    for new, pid in enumerate(ids):
        rank[index[pid]] = new
    del index

    # An inverted index product -> its baskets, so each product's partners are counted in one
    # small Counter that stays in cache. On the full Online Retail data (28M pair increments) one
    # big Counter of pair tuples takes about 6x the time and 5x the memory.
    baskets_of: list[list[list[int]]] = [[] for _ in ids]
    for basket_ids in encoded:
        mapped = [rank[i] for i in basket_ids]
        for i in mapped:
            baskets_of[i].append(mapped)
    del encoded, rank

    counts = [len(b) for b in baskets_of]
    partners: list[array[int]] = []
    pair_counts: list[array[int]] = []
    for anchor in range(len(ids)):
        # One C-level pass over the concatenated baskets; it counts the anchor itself too.
        c = Counter(chain.from_iterable(baskets_of[anchor]))
        baskets_of[anchor] = []
        del c[anchor]
        keys = sorted(c, key=c.__getitem__, reverse=True)
        partners.append(array(_TYPECODE, keys))
        pair_counts.append(array(_TYPECODE, map(c.__getitem__, keys)))
    return AffinityCounts(n, ids, counts, partners, pair_counts)


def pair_increments(basket: Collection[str]) -> dict[tuple[str, str], int]:
    """The undirected pair counts, keyed (a, b) with a < b, that one new basket adds."""
    return dict.fromkeys(combinations(sorted(set(basket)), 2), 1)


@dataclass(frozen=True, slots=True)
class NeighborStats:
    """The association-rule measures of anchor -> `product_id`."""

    product_id: str
    pair_count: int
    support: float
    confidence: float
    lift: float


def stats(
    anchor_count: int, partner_count: int, pair_count: int, n: int, product_id: str
) -> NeighborStats:
    """support, confidence and lift of anchor -> `product_id`; a measure whose denominator is 0
    (no baskets, or counts not recorded yet) is 0.0, i.e. no evidence, rather than an error."""
    return NeighborStats(
        product_id=product_id,
        pair_count=pair_count,
        support=pair_count / n if n > 0 else 0.0,
        confidence=pair_count / anchor_count if anchor_count > 0 else 0.0,
        # Integer products first, then one division: the float nearest the true lift.
        lift=(pair_count * n) / (anchor_count * partner_count)
        if anchor_count > 0 and partner_count > 0
        else 0.0,
    )


def relevance(
    pair_count: int, anchor_count: int, partner_count: int, n: int, shrinkage: float = 5.0
) -> float:
    """How strongly buying the anchor suggests the partner, in [0, 1]; 0 means not related.

    `shrinkage` is the pair count at which half of the excess lift is believed (0 = all of it).
    """
    # Confidence alone ranks best-sellers first (bought with everything, A or not); lift alone
    # ranks rare pairs first (two baskets holding two obscure items give a huge lift). Their
    # blend confidence * (1 - 1/lift) equals P(B|A) - P(B), the "added value" of the rule: how
    # much more likely B becomes once A is in the basket, high only when B is both likely after A
    # and likelier than usual. Lift is first shrunk toward 1 by the evidence weight
    # n/(n + shrinkage), so a pair seen in few baskets keeps only part of its excess (at
    # n = shrinkage, half). Every term grows with pair_count, so the score does too; confidence
    # <= 1 and the factor is in [0, 1), so the score is in [0, 1].
    if shrinkage < 0:
        raise ValueError(NEGATIVE_SHRINKAGE.format(shrinkage=shrinkage))
    if pair_count <= 0 or anchor_count <= 0 or partner_count <= 0 or n <= 0:
        return 0.0
    lift = (pair_count * n) / (anchor_count * partner_count)
    shrunk_lift = 1.0 + (lift - 1.0) * (pair_count / (pair_count + shrinkage))
    if shrunk_lift <= 1.0:
        return 0.0
    return min(1.0, (pair_count / anchor_count) * (1.0 - 1.0 / shrunk_lift))


def top_neighbors(
    anchor: str,
    partners: Mapping[str, int] | Iterable[PairCount],
    basket_counts: Mapping[str, int],
    n: int,
    k: int = 50,
    min_pair_count: int = 2,
    *,
    shrinkage: float = 5.0,
) -> list[PairCount]:
    """The anchor's `k` most relevant partners, best first; ties go to the higher pair count,
    then the lower product id. Pairs under `min_pair_count` and partners of relevance 0 (no
    more likely with the anchor than without) are left out."""
    if k < 0:
        raise ValueError(BAD_K.format(k=k))
    anchor_count = basket_counts.get(anchor, 0)
    if isinstance(partners, Mapping):
        items: Iterable[tuple[str, int]] = partners.items()
    else:
        items = ((p.product_id, p.pair_count) for p in partners)
    scored: list[tuple[float, int, str]] = []
    for product_id, pair_count in items:
        if pair_count < min_pair_count or product_id == anchor:
            continue
        partner_count = basket_counts.get(product_id, 0)
        score = relevance(pair_count, anchor_count, partner_count, n, shrinkage)
        if score > 0.0:
            scored.append((score, pair_count, product_id))
    best = heapq.nsmallest(k, scored, key=lambda s: (-s[0], -s[1], s[2]))
    return [PairCount(product_id, pair_count) for _, pair_count, product_id in best]


def build_neighbor_lists(
    counts: AffinityCounts, k: int = 50, min_pair_count: int = 2, *, shrinkage: float = 5.0
) -> dict[str, list[PairCount]]:
    """`top_neighbors` of every product (an empty list when none is relevant), in one pass."""
    if k < 0:
        raise ValueError(BAD_K.format(k=k))
    ids = counts._ids
    return {
        ids[anchor]: [
            PairCount(ids[-neg_id], pair_count)
            for _, pair_count, neg_id in _top_k(counts, anchor, k, min_pair_count, shrinkage)
        ]
        for anchor in range(len(ids))
    }


def _top_k(
    counts: AffinityCounts, anchor: int, k: int, min_pair_count: int, shrinkage: float
) -> list[tuple[float, int, int]]:
    """(relevance, pair count, -partner) of the anchor's best k, best first.

    Ids ascend like the strings, so the largest -partner is the lowest product id: the same
    order as `top_neighbors`, whose scores come from the same `relevance` call.
    """
    if k == 0:
        return []
    partner_ids, pair_counts = counts._partners[anchor], counts._pair_counts[anchor]
    basket_counts, n = counts._counts, counts.n
    anchor_count = basket_counts[anchor]

    # Partners come most co-purchased first and relevance never exceeds confidence =
    # pair / count(anchor): once that bound falls under the k-th best score, no later partner can
    # enter the list. Popular products have thousands of partners; this reads a few dozen.
    best: list[tuple[float, int, int]] = []  # a min-heap of the best k so far
    for partner, pair_count in zip(partner_ids, pair_counts, strict=True):
        if pair_count < min_pair_count or (
            len(best) == k and pair_count / anchor_count < best[0][0]
        ):
            break
        score = relevance(pair_count, anchor_count, basket_counts[partner], n, shrinkage)
        if score > 0.0:
            item = (score, pair_count, -partner)
            if len(best) < k:
                heapq.heappush(best, item)
            elif item > best[0]:
                heapq.heapreplace(best, item)
    best.sort(reverse=True)
    return best


def combine(
    per_anchor: Mapping[str, Mapping[str, float]], independent: int = INDEPENDENT_ANCHORS
) -> dict[str, float]:
    """One relevance per candidate from several anchors' (a cart's): a noisy-OR in which the
    cart's anchors count as at most `independent` independent reasons,

        1 - prod_i (1 - r_i) ** w,    w = min(1, independent / n),

    n being the anchors with any relevant neighbour (r_i = 0 for a candidate not among an
    anchor's). Up to `independent` anchors it is the plain noisy-OR 1 - prod(1 - r_i).
    Candidates come back best first, ties by id; only positive scores count. The anchors
    themselves are not removed from the candidates: that is an eligibility rule."""
    # Noisy-OR reads each anchor as an independent reason to want the candidate: unlike the mean
    # it never dilutes a strong match with an unrelated item of a small cart, unlike the max it
    # rewards candidates that several items point to, and it stays in [0, 1]. But a large cart's
    # items are not independent reasons (one buyer's taste, the same baskets behind many pairs):
    # over hundreds of anchors the product reaches 0 for dozens of candidates, all score about
    # 1 and price alone ranks them (a wholesale order of 100+ products then did worse than the
    # best sellers). Raising it to independent / n keeps the total evidence of the cart at that
    # many anchors' worth: the ranking follows the mean over the cart of -log(1 - r_i), the
    # summed similarity of item-based collaborative filtering normalised by cart size, which
    # does not saturate. `independent` was chosen on a validation month (docs/evaluation.md).
    if independent < 1:
        raise ValueError(BAD_INDEPENDENT.format(independent=independent))
    log_miss: dict[str, float] = {}
    # Summing in a fixed anchor order makes the floats independent of mapping order.
    for anchor in sorted(per_anchor):
        for candidate, score in per_anchor[anchor].items():
            if score > 0.0:
                miss = math.log1p(-score) if score < 1.0 else -math.inf
                log_miss[candidate] = log_miss.get(candidate, 0.0) + miss
    w = min(1.0, independent / len(per_anchor)) if per_anchor else 1.0
    combined = sorted(((c, -math.expm1(w * lm)) for c, lm in log_miss.items()), key=_best_first)
    return dict(combined)


def sum_scores(per_anchor: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """A cart's score of each candidate under a linear item model: the sum over its anchors,
    best first, ties by id; only positive totals are kept."""
    total: dict[str, float] = {}
    # Summing in a fixed anchor order makes the floats independent of mapping order.
    for anchor in sorted(per_anchor):
        for candidate, score in per_anchor[anchor].items():
            total[candidate] = total.get(candidate, 0.0) + score
    return dict(sorted((item for item in total.items() if item[1] > 0), key=_best_first))


def _best_first(item: tuple[str, float]) -> tuple[float, str]:
    return (-item[1], item[0])


def _most_first(item: tuple[int, int]) -> tuple[int, int]:
    return (-item[0], item[1])
