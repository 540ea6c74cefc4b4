"""The item model's rows as a store serves them: popularity damped out of B's columns, each row
cut to the entries a neighbour list keeps. Training only (`decision/ease.py`): what the
validation scores must be what the lists hold."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

__all__ = ["cut", "damped", "popularity_factor"]

Matrix = NDArray[np.float64]
Indices = NDArray[np.int64]


def popularity_factor(counts: Matrix, exponent: float) -> Matrix:
    """Each column's damping factor, (counts[j] + 1) ** -exponent."""
    factor: Matrix = (np.asarray(counts, dtype=np.float64) + 1.0) ** -exponent
    return factor


def damped(b: Matrix | sp.csr_matrix, counts: Matrix, exponent: float) -> Matrix | sp.csr_matrix:
    """B with column j times (counts[j] + 1) ** -exponent (a new matrix; B itself at 0)."""
    if exponent == 0:
        return b
    factor = popularity_factor(counts, exponent)
    if sp.issparse(b):
        return _scaled(b, factor)
    out: Matrix = np.asarray(b) * factor[None, :]
    return out


def _scaled(b: sp.csr_matrix, factor: Matrix | None) -> sp.csr_matrix:
    """A sparse B with its columns times `factor` (None: B as it is)."""
    sparse = sp.csr_matrix(b)
    return sparse if factor is None else sp.csr_matrix(sparse @ sp.diags(factor))


def cut(b: Matrix | sp.csr_matrix, k: int, factor: Matrix | None = None) -> sp.csr_matrix:
    """B as a store serves it: each row's k - k // 2 largest positive entries and k // 2 most
    negative ones (`neighbor_lists`' choice; ties broken by position, not by id), the rest 0.
    With `factor`, B's columns times it first (`damped`), a block of rows at a time: no copy
    of a dense B."""
    m = b.shape[0]
    counts = [(1.0, k - k // 2), (-1.0, k // 2)]
    if sp.issparse(b):
        return _cut_sparse(_scaled(b, factor), counts)
    block = max(1, 4_000_000 // max(m, 1))  # rows densified at once (32 MB)
    rows: list[Indices] = []
    cols: list[Indices] = []
    vals: list[Matrix] = []
    for start in range(0, m, block):
        end = min(start + block, m)
        dense: Matrix = np.array(b[start:end])
        if factor is not None:
            dense *= factor[None, :]
        dense[np.arange(end - start), np.arange(start, end)] = 0.0
        for sign, count in counts:
            c = min(count, m)
            if c <= 0:
                continue
            at = np.argpartition(-sign * dense, c - 1, axis=1)[:, :c]
            v = np.take_along_axis(dense, at, axis=1)
            keep = sign * v > 0
            rows.append(np.broadcast_to(np.arange(start, end)[:, None], at.shape)[keep])
            cols.append(at[keep])
            vals.append(v[keep])
    if not rows:
        return sp.csr_matrix(b.shape, dtype=np.float64)
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=b.shape
    )


def _cut_sparse(b: sp.csr_matrix, counts: Sequence[tuple[float, int]]) -> sp.csr_matrix:
    """`cut` of a sparse B: its entries sorted by row, then by signed value, and each row's
    first `count` of each sign kept."""
    coo = b.tocoo()
    off = coo.row != coo.col
    row, col, val = coo.row[off], coo.col[off], coo.data[off]
    keep = np.zeros(val.size, dtype=bool)
    for sign, count in counts:
        if count <= 0:
            continue
        order = np.lexsort((-sign * val, row))
        ranked = row[order]
        # Each entry's place within its row (rows are contiguous after the sort).
        starts = np.searchsorted(ranked, ranked, side="left")
        place = np.arange(ranked.size) - starts
        chosen = order[(place < count) & (sign * val[order] > 0)]
        keep[chosen] = True
    return sp.csr_matrix((val[keep], (row[keep], col[keep])), shape=b.shape)
