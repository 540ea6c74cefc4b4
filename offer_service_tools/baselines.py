"""The recommenders a practitioner tries first, as dense score matrices over the catalog.

Every one scores a cart's candidates from its products' rows of one matrix, G being the pair
counts (G[i, j] the baskets holding both) and c the basket counts:

    cooccurrence  sum over the cart of G[i, j]
    cosine        sum over the cart of G[i, j] / sqrt(c_i c_j)   (item-kNN, all neighbours)
    rules         max over the cart of G[i, j] / c_i             (association rules, best one)
    ease          sum over the cart of B[i, j]                   (EASE, every entry of its rows)

Candidates with a score of 0 or less are left out; the cart itself never counts; ties go to
the lower product id. Offline only: the matrices are catalog x catalog.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from offer_service.decision import ease

SUMMED = ("cooccurrence", "cosine", "ease")
MAXED = ("rules",)
MODEL_METHODS = (*SUMMED, *MAXED)


@dataclass(slots=True)
class Baselines:
    """The score matrices of one training set (columns: `ids`, ascending)."""

    ids: list[str]
    index: dict[str, int]
    matrices: dict[str, NDArray[np.float32]]

    def ranking(self, method: str, cart: Collection[str], k: int) -> list[str]:
        """The method's k best products for `cart`, best first (see the module doc)."""
        rows = [self.index[p] for p in cart if p in self.index]
        if not rows:
            return []
        m = self.matrices[method][rows].astype(np.float64)
        scores: NDArray[np.float64] = m.max(axis=0) if method in MAXED else m.sum(axis=0)
        scores[rows] = 0.0
        return self._best(scores, k)

    def leave_one_out(
        self, basket: Sequence[str], hidden: Sequence[str], k: int
    ) -> dict[str, dict[str, list[str]]]:
        """For each product h of `hidden` (all in `basket`), every method's `ranking` of the
        basket less h: the basket's rows are summed (or maxed) once and h's row taken out."""
        rows = [self.index[p] for p in basket if p in self.index]
        if not rows:  # nothing known to ask with
            return {h: {method: [] for method in MODEL_METHODS} for h in hidden}
        at = {self.ids[r]: n for n, r in enumerate(rows)}
        out: dict[str, dict[str, list[str]]] = {h: {} for h in hidden}
        for method in MODEL_METHODS:
            m = self.matrices[method][rows].astype(np.float64)
            if method in MAXED:
                # The largest and second largest entry per column: the max without row n is
                # the largest unless row n holds it.
                order = np.argsort(-m, axis=0, kind="stable")[:2]
                best = np.take_along_axis(m, order, axis=0)
                second = best[1] if len(rows) > 1 else np.zeros(m.shape[1])
            total = m.sum(axis=0)
            for h in hidden:
                n = at.get(h)
                if n is None:  # h unknown: the cart is the whole basket
                    scores = (best[0] if method in MAXED else total).copy()
                elif len(rows) == 1:  # h was the basket's only known product
                    out[h][method] = []
                    continue
                elif method in MAXED:
                    scores = np.where(order[0] == n, second, best[0])
                else:
                    scores = total - m[n]
                kept = None if n is None else scores[rows[n]]
                scores[rows] = 0.0  # the cart is never offered; h is not in it
                if n is not None:
                    scores[rows[n]] = kept
                out[h][method] = self._best(scores, k)
        return out

    def _best(self, scores: NDArray[np.float64], k: int) -> list[str]:
        positive = np.flatnonzero(scores > 0)
        if positive.size > k:
            positive = positive[np.argpartition(-scores[positive], k - 1)[:k]]
        best = positive[np.lexsort((positive, -scores[positive]))]
        return [self.ids[i] for i in best[:k]]


def build(baskets: Sequence[Collection[str]], lam: float) -> Baselines:
    """Every method's matrix from the training baskets; EASE with regularisation `lam`."""
    x, ids = ease.basket_matrix(baskets)
    gram = ease.gram_of(x)
    g = gram.toarray().astype(np.float32)
    counts = np.diag(g).copy()
    np.fill_diagonal(g, 0.0)
    safe = np.where(counts > 0, counts, 1.0).astype(np.float32)
    root = np.sqrt(safe)
    matrices: dict[str, NDArray[np.float32]] = {
        "cooccurrence": g,
        "cosine": (g / root[:, None] / root[None, :]).astype(np.float32),
        "rules": g / safe[:, None],
        "ease": ease.fit_dense(_dense(gram), lam, overwrite=True).astype(np.float32),
    }
    return Baselines(ids, {p: i for i, p in enumerate(ids)}, matrices)


def _dense(gram: sp.csr_matrix) -> NDArray[np.float64]:
    dense: NDArray[np.float64] = gram.toarray().astype(np.float64)
    return dense
