"""EASE (Steck 2019): a linear item-to-item model of baskets, learned in closed form.

X is the basket-by-product 0/1 matrix, G = X^T X (G[i, j] the baskets holding both, G[i, i] the
baskets holding i) and, for a regularisation lambda,

    P = (G + lambda I)^-1,    B[i, j] = -P[i, j] / P[j, j],    B[j, j] = 0,

so B[:, j] is the ridge regression of "the basket holds j" on every other product, and a cart's
score of j is the sum of its products' rows, sum_i B[i, j] (linear: a cart combines its items by
adding their rows). A catalog of more than DENSE_MAX products does not fit a dense inverse: each
column is then the same ridge regression restricted to the product's `LOCAL_NEIGHBOURS` most
co-purchased partners (`local_ease.fit_local`), its loss against the exact model measured in
docs/evaluation.md.

Two more choices are made on the validation window, at the chosen lambda, by the hit rate of the
lists a store serves (each row cut to K entries, `cut`):
- the weight of the products' title similarity added to G (`titles.similarity`; exact model
  only): a product seldom bought borrows from those named like it;
- how much popularity is taken out of B's columns: column j times (c_j + 1) ** -exponent, c_j the
  baskets holding j. EASE ranks popular products a little too high for a cart's next product;
  the same factor multiplies each of j's entries in every list, so a cart's sum is still the
  model's sum times one factor per product.
Training only: numpy and scipy never run on the request path, which reads the top-K rows this
module turns into neighbour lists.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.linalg import lapack

from offer_service.decision.local_ease import (
    BAD_LAMBDA,
    LOCAL_NEIGHBOURS,
    fit_local,
    fit_local_path,
)
from offer_service.decision.served import cut, damped, popularity_factor
from offer_service.decision.titles import similarity
from offer_service.domain.records import PairCount

__all__ = [
    "DENSE_MAX",
    "LAMBDAS",
    "LOCAL_NEIGHBOURS",
    "POPULARITY_EXPONENTS",
    "TITLE_WEIGHTS",
    "Fitted",
    "basket_matrix",
    "calibration",
    "choose_lambda",
    "cut",
    "damped",
    "fit",
    "fit_dense",
    "fit_local",
    "hit_rate",
    "hit_rates",
    "neighbor_lists",
    "popularity_factor",
]

# Above this many products a dense inverse (8 bytes x products^2, twice) no longer fits the
# memory a worker may take (20k products: 3.2 GB), so the local model is used.
DENSE_MAX = 20_000
# The regularisations tried on the validation window (a log grid: the best lambda grows with
# the number of baskets, from a few on a small shop to hundreds on a big one).
LAMBDAS = (1.0, 5.0, 25.0, 100.0, 400.0, 1600.0)
# Validation scores the hidden product's rank within this many.
VALIDATION_K = 5
# The title similarity's weights tried in G (0: none). A weight w counts two products with the
# same title words as w baskets holding both.
TITLE_WEIGHTS = (0.0, 3.0, 10.0, 30.0)
# The popularity exponents tried on B's columns (0: EASE's own scores).
POPULARITY_EXPONENTS = (0.0, 0.05, 0.1, 0.15)

Matrix = NDArray[np.float64]
Indices = NDArray[np.int64]
Progress = Callable[[str], None]


def basket_matrix(
    baskets: Iterable[Collection[str]], ids: Sequence[str] | None = None
) -> tuple[sp.csr_matrix, list[str]]:
    """The 0/1 basket-by-product matrix and its column ids (ascending). With `ids`, products
    outside them are dropped and baskets left empty become empty rows."""
    fixed = ids is not None
    columns: dict[str, int] = {pid: i for i, pid in enumerate(ids)} if ids is not None else {}
    rows: list[int] = []
    cols: list[int] = []
    n = 0
    for basket in baskets:
        for pid in set(basket):
            j = columns.get(pid)
            if j is None:
                if fixed:
                    continue
                j = columns[pid] = len(columns)
            rows.append(n)
            cols.append(j)
        n += 1
    names = sorted(columns, key=columns.__getitem__)
    data = np.ones(len(rows), dtype=np.float64)
    x = sp.csr_matrix((data, (rows, cols)), shape=(n, len(names)))
    if fixed:
        return x, names
    order = np.argsort(np.array(names, dtype=object), kind="stable")
    return x[:, order].tocsr(), [names[i] for i in order]


def fit_dense(gram: Matrix, lam: float, *, overwrite: bool = False) -> Matrix:
    """B of the exact model from G = X^T X (dense), as in the module doc. With `overwrite`,
    `gram` becomes B (no copy: a 4k-product catalog's matrices take 128 MB each)."""
    if lam <= 0:
        raise ValueError(BAD_LAMBDA.format(lam=lam))
    g = gram if overwrite and gram.dtype == np.float64 else gram.astype(np.float64)
    g[np.diag_indices_from(g)] += lam
    # G + lambda I is symmetric positive definite: a Cholesky inverse takes a third of the
    # time of a general one. Both LAPACK calls work in place on the upper triangle.
    c, info = lapack.dpotrf(g, lower=0, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"Cholesky factorisation failed ({info})")
    p, info = lapack.dpotri(c, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"Cholesky inverse failed ({info})")
    _mirror_upper(p)
    p /= -np.diag(p).copy()
    np.fill_diagonal(p, 0.0)
    b: Matrix = p
    return b


def _mirror_upper(p: Matrix, block: int = 512) -> None:
    """Copy the upper triangle of the square `p` onto its lower one, a block of rows at a time
    (the index arrays of the whole triangle would take as much memory as `p`)."""
    m = p.shape[0]
    for start in range(0, m, block):
        end = min(start + block, m)
        p[end:, start:end] = p[start:end, end:].T
        square = p[start:end, start:end]
        lower = np.tril_indices(end - start, -1)
        square[lower] = square.T[lower]


def gram_of(x: sp.csr_matrix) -> sp.csr_matrix:
    """G = X^T X, sparse."""
    gram: sp.csr_matrix = (x.T @ x).tocsr()
    return gram


def fit(x: sp.csr_matrix, lam: float, *, dense_max: int = DENSE_MAX) -> Matrix | sp.csr_matrix:
    """B of `x`: the exact model up to `dense_max` products, the local one above."""
    gram = gram_of(x)
    if x.shape[1] <= dense_max:
        return fit_dense(gram.toarray(), lam, overwrite=True)
    return fit_local(gram, lam)


def _row(b: Matrix | sp.csr_matrix, i: int) -> tuple[Indices, Matrix]:
    """Row i of B as (columns, weights) of its non-zero entries off the diagonal."""
    if isinstance(b, np.ndarray):
        cols: Indices = np.flatnonzero(b[i]).astype(np.int64)
        vals: Matrix = b[i, cols]
    else:
        start, end = b.indptr[i], b.indptr[i + 1]
        cols = b.indices[start:end].astype(np.int64)
        vals = b.data[start:end]
    keep = cols != i
    return cols[keep], vals[keep]


def _queries(
    models: Sequence[Matrix | sp.csr_matrix], x: sp.csr_matrix
) -> Iterable[list[tuple[Matrix, Matrix, int]]]:
    """Per basket of 2+ products of `x`, for each of `models`: the leave-one-out scores (row q:
    the cart without its q-th product, the cart's other products at -inf), each row's hidden
    product's score, and how many more products (outside the cart) score 0 in every row.

    A sparse B is scored over the cart and its rows' columns only: a 100,000-product row per
    query would cost more than the fit. Sparse models of one structure (the lambdas of one
    `fit_local_path`) share the work of finding those columns."""
    local = [sp.csr_matrix(b) for b in models if sp.issparse(b)]
    if local and (len(local) < len(models) or not _one_structure(local)):
        for each in zip(*(_queries([b], x) for b in models), strict=True):
            yield [scored for (scored,) in each]
        return
    m = x.shape[1]
    for r in range(x.shape[0]):
        idx = x.indices[x.indptr[r] : x.indptr[r + 1]].astype(np.int64)
        n = idx.size
        if n < 2:
            continue
        if not local:
            yield [_left_out(np.asarray(b)[idx], idx, 0) for b in models]
            continue
        starts = local[0].indptr[idx]
        lengths = local[0].indptr[idx + 1] - starts
        # The positions of the cart's rows' entries in B's arrays, row after row.
        sel = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        found = local[0].indices[sel]
        cols = np.sort(np.concatenate((found, idx)))
        cols = cols[np.concatenate(([True], cols[1:] != cols[:-1]))]
        which, pos = np.repeat(np.arange(n), lengths), np.searchsorted(cols, found)
        at: Indices = np.searchsorted(cols, idx).astype(np.int64)
        out = []
        for b in local:
            rows: Matrix = np.zeros((n, cols.size))
            rows[which, pos] = b.data[sel]
            out.append(_left_out(rows, at, m - cols.size))
        yield out


def _one_structure(models: Sequence[sp.csr_matrix]) -> bool:
    first = models[0]
    return all(
        np.array_equal(b.indptr, first.indptr) and np.array_equal(b.indices, first.indices)
        for b in models[1:]
    )


def _left_out(rows: Matrix, at: Indices, outside: int) -> tuple[Matrix, Matrix, int]:
    """`_queries`' triple of one basket from its products' rows (columns: `at` the cart's)."""
    n = rows.shape[0]
    s = rows.sum(axis=0)[None, :] - rows
    target = s[np.arange(n), at]
    s[:, at] = -np.inf
    s[np.arange(n), at] = target
    return s, target, outside


def _ranks(s: Matrix, target: Matrix, outside: int) -> NDArray[np.int64]:
    """Each query's rank of its hidden product (ties count against it)."""
    rank: NDArray[np.int64] = (s >= target[:, None]).sum(axis=1) + outside * (target <= 0)
    return rank


def hit_rate(b: Matrix | sp.csr_matrix, x: sp.csr_matrix, k: int = VALIDATION_K) -> float:
    """Leave-one-out hit rate@k of B over the baskets of `x` (same columns as B): each product
    of each basket of 2+ products hidden in turn, the rest scored by the sum of their rows, the
    cart left out; a tie counts against the hidden product."""
    (rate,) = hit_rates([b], x, k)
    return rate


def hit_rates(
    models: Sequence[Matrix | sp.csr_matrix], x: sp.csr_matrix, k: int = VALIDATION_K
) -> list[float]:
    """`hit_rate` of each of `models`, in one pass over the baskets."""
    hits = [0] * len(models)
    queries = 0
    for scored in _queries(models, x):
        for n, (s, target, outside) in enumerate(scored):
            hits[n] += int((_ranks(s, target, outside) <= k).sum())
        queries += scored[0][1].size
    return [h / queries if queries else 0.0 for h in hits]


def calibration(b: Matrix | sp.csr_matrix, x: sp.csr_matrix, k: int = VALIDATION_K) -> float:
    """The factor that turns summed scores into probabilities on `x`'s leave-one-out queries:
    over each query's k best candidates, the hidden products found divided by the scores summed
    (so a candidate's scaled score is, on average, the chance it is the product bought). 1.0
    when `x` has no query or no positive score."""
    found = 0
    total = 0.0
    for ((s, target, outside),) in _queries([b], x):
        # Products outside the scored columns score 0: never among the positive top k.
        top = np.partition(s, s.shape[1] - k, axis=1)[:, -k:] if s.shape[1] > k else s
        top = np.where(np.isfinite(top) & (top > 0), top, 0.0)
        total += float(top.sum())
        found += int(((_ranks(s, target, outside) <= k) & (target > 0)).sum())
    return found / total if total > 0 and found > 0 else 1.0


def choose_lambda(
    train: sp.csr_matrix,
    validation: sp.csr_matrix,
    lambdas: Sequence[float] = LAMBDAS,
    *,
    dense_max: int = DENSE_MAX,
    progress: Progress | None = None,
) -> tuple[float, dict[float, float]]:
    """The lambda of `lambdas` whose model, fitted on `train`, has the best hit rate@5 on
    `validation` (ties: the larger, smoother one), and every lambda's hit rate."""
    best, scores, _ = _choose(gram_of(train), validation, lambdas, dense_max, progress)
    return best, scores


def _choose(
    gram: sp.csr_matrix,
    validation: sp.csr_matrix,
    lambdas: Sequence[float],
    dense_max: int,
    progress: Progress | None,
) -> tuple[float, dict[float, float], Matrix | sp.csr_matrix]:
    """`choose_lambda` from the training baskets' Gram matrix, and the model at the chosen
    lambda."""
    scores: dict[float, float] = {}
    kept: Matrix | sp.csr_matrix | None = None

    def scored(lam: float, rate: float, b: Matrix | sp.csr_matrix) -> None:
        nonlocal kept
        if not scores or (rate, lam) > max((r, v) for v, r in scores.items()):
            kept = b
        scores[lam] = rate
        if progress is not None:
            progress(f"lambda {lam:g}: validation hit rate@5 {rate:.2%}")

    if gram.shape[1] <= dense_max:
        dense = gram.toarray()
        for lam in lambdas:
            exact = fit_dense(dense, lam)
            scored(lam, hit_rate(exact, validation), exact)
            del exact  # at most two models at once: the best so far and the next
    else:
        # Every lambda from one gather of the Gram submatrices (local_ease.py), scored in one
        # pass over the validation baskets.
        models = fit_local_path(gram, lambdas, progress=progress)
        for lam, rate, local in zip(lambdas, hit_rates(models, validation), models, strict=True):
            scored(lam, rate, local)
    best = max(scores, key=lambda lam: (scores[lam], lam))
    assert kept is not None
    return best, scores, kept


@dataclass(frozen=True, slots=True)
class Tuned:
    """The title weight and popularity exponent chosen on validation, every pair's hit rate@5
    (served lists), and the chosen held-out model (full rows, for calibration)."""

    title_weight: float
    exponent: float
    scores: dict[tuple[float, float], float]
    held_out: Matrix | sp.csr_matrix


def tune(
    gram: sp.csr_matrix,
    validation: sp.csr_matrix,
    lam: float,
    held_out: Matrix | sp.csr_matrix,
    *,
    k: int,
    ids: Sequence[str],
    titles: Mapping[str, str] | None,
    progress: Progress | None = None,
) -> Tuned:
    """Choose the title weight (exact model with titles only) and the popularity exponent at
    `lam` by the served lists' hit rate@5 on `validation`; ties go to the smaller weight and
    exponent (the plain model wins a tie). `gram` is the training baskets' G, `held_out` their
    model at `lam`."""
    counts = gram.diagonal()
    dense = isinstance(held_out, np.ndarray)
    weights = TITLE_WEIGHTS if dense and titles is not None else (0.0,)
    sim = similarity(ids, titles) if len(weights) > 1 and titles is not None else None
    scores: dict[tuple[float, float], float] = {}
    best: tuple[float, float, float] | None = None
    # At most three models at once (as many as choosing lambda holds): `held_out`, the one
    # being scored and the best so far; the damping is applied inside `cut`, never copied.
    best_b: Matrix | sp.csr_matrix = held_out
    for w in weights:
        if w == 0 or sim is None:
            b = held_out
        else:
            g = gram.toarray()
            _add(g, sim, w)
            b = fit_dense(g, lam, overwrite=True)
            del g
        for exponent in POPULARITY_EXPONENTS:
            rate = hit_rate(cut(b, k, popularity_factor(counts, exponent)), validation)
            scores[(w, exponent)] = rate
            if progress is not None:
                progress(
                    f"title weight {w:g}, popularity exponent {exponent:g}: "
                    f"served lists' validation hit rate@5 {rate:.2%}"
                )
            if best is None or (rate, -w, -exponent) > best:
                best = (rate, -w, -exponent)
                best_b = b
        del b
    assert best is not None
    return Tuned(-best[1], -best[2], scores, damped(best_b, counts, -best[2]))


def _add(g: Matrix, sim: sp.csr_matrix, weight: float) -> None:
    """g += weight x sim, in place (sim sparse)."""
    coo = sim.tocoo()
    g[coo.row, coo.col] += weight * coo.data


@dataclass(frozen=True, slots=True)
class Fitted:
    """A trained model's neighbour lists and how it was chosen."""

    lists: dict[str, list[PairCount]]
    lam: float
    validation: dict[float, float]  # lambda -> validation hit rate@5 (empty: not validated)
    products: int
    baskets: int
    scale: float = 1.0  # what the stored scores are B times (`calibration`)
    title_weight: float = 0.0  # the title similarity's weight in G (`tune`)
    exponent: float = 0.0  # the popularity exponent taken out of B's columns (`tune`)
    tuning: dict[tuple[float, float], float] | None = None  # (weight, exponent) -> hit rate@5


def neighbor_lists(
    b: Matrix | sp.csr_matrix,
    gram: sp.csr_matrix,
    ids: Sequence[str],
    k: int,
    *,
    scale: float = 1.0,
) -> dict[str, list[PairCount]]:
    """Each product's row of B cut to k entries: its k - k // 2 largest positive weights, best
    first (ties by id), then its k // 2 most negative ones, each with the pair count from G and
    the model's score times `scale`.

    The negative weights are kept because a cart sums its rows: a product that is less likely
    with one item of the cart must lose some of what another item gives it. On Online Retail
    (train before 2011-11-01, every third later basket) 50 positive entries find the hidden
    product in the top 5 for 13.9% of the queries where the full rows find it for 15.7%; 25
    positive and 25 negative ones for 15.9% (docs/evaluation.md).
    """
    g = gram.tocsr()
    if sp.issparse(b):
        b = sp.csr_matrix(b)
    positives, negatives = k - k // 2, k // 2
    out: dict[str, list[PairCount]] = {}
    for i, anchor in enumerate(ids):
        cols, vals = _row(b, i)
        start, end = g.indptr[i], g.indptr[i + 1]
        pairs = dict(zip(g.indices[start:end].tolist(), g.data[start:end].tolist(), strict=True))
        chosen = _extreme(cols, vals, positives, ids) + _extreme(cols, -vals, negatives, ids)
        out[anchor] = [
            PairCount(ids[int(cols[at])], int(pairs.get(int(cols[at]), 0)), float(vals[at]) * scale)
            for at in chosen
        ]
    return out


def _extreme(cols: Indices, vals: Matrix, k: int, ids: Sequence[str]) -> list[int]:
    """The positions of the k largest positive `vals`, largest first, ties by id (`cols`)."""
    positive = np.flatnonzero(vals > 0)
    if k <= 0 or positive.size == 0:
        return []
    if positive.size > k:
        positive = positive[np.argpartition(-vals[positive], k - 1)[:k]]
    return sorted(positive.tolist(), key=lambda at: (-vals[at], ids[int(cols[at])]))


def split_recent(
    dated: Sequence[tuple[int, Collection[str]]], window_ms: int
) -> tuple[list[Collection[str]], list[Collection[str]]]:
    """(older, the last `window_ms`) of baskets dated in epoch ms: validation is the most recent
    window, never a later one."""
    if not dated:
        return [], []
    cut = max(t for t, _ in dated) - window_ms
    older = [b for t, b in dated if t <= cut]
    recent = [b for t, b in dated if t > cut]
    return older, recent


def train(
    dated: Sequence[tuple[int, Collection[str]]],
    *,
    k: int,
    window_ms: int,
    lambdas: Sequence[float] = LAMBDAS,
    dense_max: int = DENSE_MAX,
    titles: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> Fitted:
    """The model of every basket (epoch ms, product ids), lambda chosen on the last
    `window_ms` by a model of the baskets before it, then the title weight (with `titles`,
    product id -> title) and the popularity exponent (`tune`); with too little history to
    validate (fewer than 2 baskets on either side), the middle of `lambdas` and neither."""
    say = progress or (lambda _: None)
    multi = [(t, b) for t, b in dated if len(set(b)) > 0]
    older, recent = split_recent(multi, window_ms)
    validation: dict[float, float] = {}
    scale: float | None = None
    tuned: Tuned | None = None
    x, ids = basket_matrix(b for _, b in multi)
    if len(older) >= 2 and sum(1 for b in recent if len(set(b)) >= 2) >= 1:
        x_old, ids_old = basket_matrix(older)
        x_val, _ = basket_matrix(recent, ids_old)
        say(
            f"choosing lambda: {len(older):,} baskets before the last "
            f"{window_ms / 86_400_000:g} days, {len(recent):,} in them"
        )
        gram_old = gram_of(x_old)
        lam, validation, held_out = _choose(gram_old, x_val, lambdas, dense_max, progress)
        # Titles weigh only in an exact final fit: the validation's catalog may be small enough
        # for it when the whole one is not.
        exact = len(ids) <= dense_max
        tuned = tune(
            gram_old,
            x_val,
            lam,
            held_out,
            k=k,
            ids=ids_old,
            titles=titles if exact else None,
            progress=progress,
        )
        del gram_old
        del held_out
        scale = calibration(tuned.held_out, x_val)
        say(
            f"chosen: lambda {lam:g}, title weight {tuned.title_weight:g}, "
            f"popularity exponent {tuned.exponent:g}"
        )
    else:
        lam = lambdas[len(lambdas) // 2]
        say(f"too few baskets to validate: lambda {lam:g}")
    weight = tuned.title_weight if tuned is not None else 0.0
    exponent = tuned.exponent if tuned is not None else 0.0
    if tuned is not None:
        tuning = tuned.scores
        del tuned  # its held-out model: as large as the one fitted next
    else:
        tuning = None
    say(f"fitting {len(ids):,} products on {x.shape[0]:,} baskets (lambda {lam:g})")
    gram = gram_of(x)
    if len(ids) <= dense_max:
        g = gram.toarray()
        if weight and titles is not None:
            _add(g, similarity(ids, titles), weight)
        b: Matrix | sp.csr_matrix = fit_dense(g, lam, overwrite=True)
        del g
    else:
        b = fit_local_path(gram, [lam], progress=progress)[0]
    b = damped(b, gram.diagonal(), exponent)
    if scale is None:  # nothing held out: calibrate in-sample, the best there is
        scale = calibration(b, x)
    say(f"scores scaled by {scale:.3g} to probabilities")
    lists = neighbor_lists(b, gram, ids, k, scale=scale)
    return Fitted(lists, lam, validation, len(ids), x.shape[0], scale, weight, exponent, tuning)
