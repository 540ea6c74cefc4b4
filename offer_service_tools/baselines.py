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

Vector = NDArray[np.float32]


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
        m = self.matrices[method][rows]
        scores: Vector = m.max(axis=0) if method in MAXED else m.sum(axis=0)
        scores[rows] = 0.0
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
