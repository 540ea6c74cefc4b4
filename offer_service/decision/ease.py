"""EASE (Steck 2019): a linear item-to-item model of baskets, learned in closed form.

X is the basket-by-product 0/1 matrix, G = X^T X (G[i, j] the baskets holding both, G[i, i] the
baskets holding i) and, for a regularisation lambda,

    P = (G + lambda I)^-1,    B[i, j] = -P[i, j] / P[j, j],    B[j, j] = 0,

so B[:, j] is the ridge regression of "the basket holds j" on every other product, and a cart's
score of j is the sum of its products' rows, sum_i B[i, j] (linear: a cart combines its items by
adding their rows). A catalog of more than DENSE_MAX products does not fit a dense inverse: each
column is then the same ridge regression restricted to the product's `LOCAL_NEIGHBOURS` most
co-purchased partners (`fit_local`), its loss against the exact model measured in
docs/evaluation.md. Training only: numpy and scipy never run on the request path, which reads the
top-K rows this module turns into neighbour lists.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.linalg import lapack

from offer_service.domain.records import PairCount

__all__ = [
    "DENSE_MAX",
    "LAMBDAS",
    "Fitted",
    "basket_matrix",
    "calibration",
    "choose_lambda",
    "fit",
    "fit_dense",
    "fit_local",
    "hit_rate",
    "neighbor_lists",
]

# Above this many products a dense inverse (8 bytes x products^2, twice) no longer fits the
# memory a worker may take (20k products: 3.2 GB), so the local model is used.
DENSE_MAX = 20_000
LOCAL_NEIGHBOURS = 100
# The regularisations tried on the validation window (a log grid: the best lambda grows with
# the number of baskets, from a few on a small shop to hundreds on a big one).
LAMBDAS = (1.0, 5.0, 25.0, 100.0, 400.0, 1600.0)
# Validation scores the hidden product's rank within this many.
VALIDATION_K = 5

BAD_LAMBDA = "lambda must be > 0, got {lam!r}"

Matrix = NDArray[np.float64]
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
    lower = np.tril_indices_from(p, -1)
    p[lower] = p.T[lower]
    p /= -np.diag(p).copy()
    np.fill_diagonal(p, 0.0)
    b: Matrix = p
    return b


def fit_local(gram: sp.csr_matrix, lam: float, neighbours: int = LOCAL_NEIGHBOURS) -> sp.csr_matrix:
    """B with each column j the ridge regression of j on its `neighbours` most co-purchased
    partners only (sparse: at most `neighbours` entries a column)."""
    if lam <= 0:
        raise ValueError(BAD_LAMBDA.format(lam=lam))
    g = gram.tocsr()
    m = g.shape[0]
    rows: list[NDArray[np.int64]] = []
    cols: list[NDArray[np.int64]] = []
    vals: list[Matrix] = []
    for j in range(m):
        start, end = g.indptr[j], g.indptr[j + 1]
        idx, counts = g.indices[start:end], g.data[start:end]
        keep = idx != j
        idx, counts = idx[keep], counts[keep]
        if idx.size == 0:
            continue
        if idx.size > neighbours:
            top = np.argpartition(-counts, neighbours - 1)[:neighbours]
            idx = idx[top]
        idx = np.sort(idx)
        sub = g[idx][:, idx].toarray()
        sub[np.diag_indices_from(sub)] += lam
        target = g[idx, j].toarray().ravel()
        w = np.linalg.solve(sub, target)
        rows.append(idx.astype(np.int64))
        cols.append(np.full(idx.size, j, dtype=np.int64))
        vals.append(w)
    if not vals:
        return sp.csr_matrix((m, m))
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m)
    )


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


def _row(b: Matrix | sp.csr_matrix, i: int) -> Matrix:
    if isinstance(b, np.ndarray):
        row: Matrix = b[i]
        return row
    return np.asarray(b.getrow(i).toarray()).ravel()


def _queries(b: Matrix | sp.csr_matrix, x: sp.csr_matrix) -> Iterable[tuple[Matrix, Matrix]]:
    """Per basket of 2+ products of `x`: the leave-one-out scores (row q: the cart without its
    q-th product, the cart's other products at -inf) and each row's hidden product's score."""
    for r in range(x.shape[0]):
        idx = x.indices[x.indptr[r] : x.indptr[r + 1]]
        n = idx.size
        if n < 2:
            continue
        rows = b[idx].toarray() if sp.issparse(b) else b[idx]
        s = rows.sum(axis=0)[None, :] - rows
        target = s[np.arange(n), idx]
        s[:, idx] = -np.inf
        s[np.arange(n), idx] = target
        yield s, target


def hit_rate(b: Matrix | sp.csr_matrix, x: sp.csr_matrix, k: int = VALIDATION_K) -> float:
    """Leave-one-out hit rate@k of B over the baskets of `x` (same columns as B): each product
    of each basket of 2+ products hidden in turn, the rest scored by the sum of their rows, the
    cart left out; a tie counts against the hidden product."""
    hits = queries = 0
    for s, target in _queries(b, x):
        rank = (s >= target[:, None]).sum(axis=1)
        hits += int((rank <= k).sum())
        queries += target.size
    return hits / queries if queries else 0.0


def calibration(b: Matrix | sp.csr_matrix, x: sp.csr_matrix, k: int = VALIDATION_K) -> float:
    """The factor that turns summed scores into probabilities on `x`'s leave-one-out queries:
    over each query's k best candidates, the hidden products found divided by the scores summed
    (so a candidate's scaled score is, on average, the chance it is the product bought). 1.0
    when `x` has no query or no positive score."""
    found = 0
    total = 0.0
    for s, target in _queries(b, x):
        top = np.partition(s, s.shape[1] - k, axis=1)[:, -k:] if s.shape[1] > k else s
        top = np.where(np.isfinite(top) & (top > 0), top, 0.0)
        total += float(top.sum())
        rank = (s >= target[:, None]).sum(axis=1)
        found += int(((rank <= k) & (target > 0)).sum())
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
    gram = gram_of(train)
    dense = gram.toarray() if train.shape[1] <= dense_max else None
    scores: dict[float, float] = {}
    for lam in lambdas:
        b = fit_dense(dense, lam) if dense is not None else fit_local(gram, lam)
        scores[lam] = hit_rate(b, validation)
        if progress is not None:
            progress(f"lambda {lam:g}: validation hit rate@5 {scores[lam]:.2%}")
    best = max(scores, key=lambda lam: (scores[lam], lam))
    return best, scores


@dataclass(frozen=True, slots=True)
class Fitted:
    """A trained model's neighbour lists and how it was chosen."""

    lists: dict[str, list[PairCount]]
    lam: float
    validation: dict[float, float]  # lambda -> validation hit rate@5 (empty: not validated)
    products: int
    baskets: int
    scale: float = 1.0  # what the stored scores are B times (`calibration`)


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
    positives, negatives = k - k // 2, k // 2
    out: dict[str, list[PairCount]] = {}
    for i, anchor in enumerate(ids):
        row = _row(b, i).copy()
        row[i] = 0.0
        start, end = g.indptr[i], g.indptr[i + 1]
        pairs = dict(zip(g.indices[start:end].tolist(), g.data[start:end].tolist(), strict=True))
        chosen = _extreme(row, positives, ids) + _extreme(-row, negatives, ids)
        out[anchor] = [
            PairCount(ids[j], int(pairs.get(j, 0)), float(row[j]) * scale) for j in chosen
        ]
    return out


def _extreme(row: Matrix, k: int, ids: Sequence[str]) -> list[int]:
    """The indices of the k largest positive entries of `row`, largest first, ties by id."""
    positive = np.flatnonzero(row > 0)
    if k <= 0 or positive.size == 0:
        return []
    if positive.size > k:
        positive = positive[np.argpartition(-row[positive], k - 1)[:k]]
    return sorted(positive.tolist(), key=lambda j: (-row[j], ids[j]))


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
    progress: Progress | None = None,
) -> Fitted:
    """The model of every basket (epoch ms, product ids), lambda chosen on the last
    `window_ms` by a model of the baskets before it; with too little history to validate
    (fewer than 2 baskets on either side), the middle of `lambdas`."""
    say = progress or (lambda _: None)
    multi = [(t, b) for t, b in dated if len(set(b)) > 0]
    older, recent = split_recent(multi, window_ms)
    validation: dict[float, float] = {}
    scale: float | None = None
    if len(older) >= 2 and sum(1 for b in recent if len(set(b)) >= 2) >= 1:
        x_old, ids_old = basket_matrix(older)
        x_val, _ = basket_matrix(recent, ids_old)
        say(
            f"choosing lambda: {len(older):,} baskets before the last "
            f"{window_ms / 86_400_000:g} days, {len(recent):,} in them"
        )
        lam, validation = choose_lambda(
            x_old, x_val, lambdas, dense_max=dense_max, progress=progress
        )
        scale = calibration(fit(x_old, lam, dense_max=dense_max), x_val)
    else:
        lam = lambdas[len(lambdas) // 2]
        say(f"too few baskets to validate: lambda {lam:g}")
    x, ids = basket_matrix(b for _, b in multi)
    say(f"fitting {len(ids):,} products on {x.shape[0]:,} baskets (lambda {lam:g})")
    gram = gram_of(x)
    if len(ids) <= dense_max:
        b: Matrix | sp.csr_matrix = fit_dense(gram.toarray(), lam, overwrite=True)
    else:
        b = fit_local(gram, lam)
    if scale is None:  # nothing held out: calibrate in-sample, the best there is
        scale = calibration(b, x)
    say(f"scores scaled by {scale:.3g} to probabilities")
    lists = neighbor_lists(b, gram, ids, k, scale=scale)
    return Fitted(lists, lam, validation, len(ids), x.shape[0], scale)
