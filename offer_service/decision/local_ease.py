"""The local item model: EASE restricted to each product's co-purchase neighbourhood, in batches.

Column j of B is the ridge regression of "the basket holds j" on j's `LOCAL_NEIGHBOURS` most
co-purchased partners N only: w = (G[N, N] + lambda I)^-1 G[N, j]. One small system per product
solved one at a time costs a Python round trip and a sparse slice each (about 16 minutes a
lambda at 100,000 products), so the systems are solved in batches: products grouped by the size
of their neighbourhood, their Gram submatrices gathered from G in one vectorised lookup and
stacked into a 3-D array, one `numpy.linalg.solve` a batch. A submatrix gathered once serves every
lambda (only the diagonal changes), so validating several lambdas costs one gather. The result is
the same as solving each system alone (`fit_local_each`, kept as the reference the tests compare
against).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

__all__ = ["BAD_LAMBDA", "LOCAL_NEIGHBOURS", "fit_local", "fit_local_each", "fit_local_path"]

LOCAL_NEIGHBOURS = 100
# A batch's stacked submatrices take at most this many float64 entries (64 MB): memory stays
# flat whatever the catalog's size.
BATCH_ENTRIES = 8_000_000

BAD_LAMBDA = "lambda must be > 0, got {lam!r}"

Matrix = NDArray[np.float64]
Indices = NDArray[np.int64]
Progress = Callable[[str], None]


def _check(lams: Sequence[float]) -> None:
    for lam in lams:
        if lam <= 0:
            raise ValueError(BAD_LAMBDA.format(lam=lam))


def neighbourhoods(gram: sp.csr_matrix, neighbours: int) -> list[Indices]:
    """Each product's partners (ascending): every product it was bought with, or its
    `neighbours` most co-purchased ones when there are more (ties as `argpartition` breaks
    them)."""
    g = gram.tocsr()
    out: list[Indices] = []
    for j in range(g.shape[0]):
        start, end = g.indptr[j], g.indptr[j + 1]
        idx, counts = g.indices[start:end], g.data[start:end]
        keep = idx != j
        idx, counts = idx[keep], counts[keep]
        if idx.size > neighbours:
            idx = idx[np.argpartition(-counts, neighbours - 1)[:neighbours]]
        out.append(np.sort(idx).astype(np.int64))
    return out


def fit_local_each(
    gram: sp.csr_matrix, lam: float, neighbours: int = LOCAL_NEIGHBOURS
) -> sp.csr_matrix:
    """The local model one product at a time: the definition, slow (the reference)."""
    _check([lam])
    g = gram.tocsr()
    m = g.shape[0]
    rows: list[Indices] = []
    cols: list[Indices] = []
    vals: list[Matrix] = []
    for j, idx in enumerate(neighbourhoods(g, neighbours)):
        if idx.size == 0:
            continue
        sub = g[idx][:, idx].toarray()
        sub[np.diag_indices_from(sub)] += lam
        target = g[idx, j].toarray().ravel()
        rows.append(idx)
        cols.append(np.full(idx.size, j, dtype=np.int64))
        vals.append(np.linalg.solve(sub, target))
    if not vals:
        return sp.csr_matrix((m, m))
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m)
    )


def fit_local_path(
    gram: sp.csr_matrix,
    lams: Sequence[float],
    neighbours: int = LOCAL_NEIGHBOURS,
    *,
    progress: Progress | None = None,
) -> list[sp.csr_matrix]:
    """The local model at each of `lams` (in order), every Gram submatrix gathered once."""
    _check(lams)
    g = gram.tocsr()
    g.sort_indices()
    m = g.shape[0]
    hoods = neighbourhoods(g, neighbours)
    sizes = np.fromiter((h.size for h in hoods), dtype=np.int64, count=m)
    # B is built column by column (column j: j's partners), so its CSC arrays are known up front.
    indptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(sizes, out=indptr[1:])
    indices = np.concatenate(hoods) if m else np.zeros(0, dtype=np.int64)
    data = np.zeros((len(lams), indices.size), dtype=np.float64)
    # A 100 x 100 system is too small to share: BLAS threads would cost ten times the solve.
    with threadpool_limits(1, user_api="blas"):
        _solve_all(g, hoods, sizes, indptr, lams, data, progress)
    return [
        sp.csc_matrix((data[n], indices, indptr), shape=(m, m)).tocsr() for n in range(len(lams))
    ]


def _solve_all(
    g: sp.csr_matrix,
    hoods: list[Indices],
    sizes: Indices,
    indptr: Indices,
    lams: Sequence[float],
    data: NDArray[np.float64],
    progress: Progress | None,
) -> None:
    """Fill `data` (a row per lambda, B's CSC order): the batches, smallest systems first."""
    done = told = 0
    for size in np.unique(sizes[sizes > 0]).tolist():
        members = np.flatnonzero(sizes == size)
        batch = max(1, BATCH_ENTRIES // (size * size))
        for first in range(0, members.size, batch):
            js = members[first : first + batch]
            idx = np.stack([hoods[j] for j in js])
            sub, target = _gather(g, idx, js)
            diagonal = np.arange(size)
            at = indptr[js][:, None] + diagonal
            for n, lam in enumerate(lams):
                system = sub.copy()
                system[:, diagonal, diagonal] += lam
                data[n][at] = np.linalg.solve(system, target[..., None])[..., 0]
            done += js.size
            if progress is not None and done - told >= sizes.size // 10:
                told = done
                progress(f"local model: {done:,} of {sizes.size:,} products solved")


def fit_local(gram: sp.csr_matrix, lam: float, neighbours: int = LOCAL_NEIGHBOURS) -> sp.csr_matrix:
    """B with each column j the ridge regression of j on its `neighbours` most co-purchased
    partners only (sparse: at most `neighbours` entries a column)."""
    (b,) = fit_local_path(gram, [lam], neighbours)
    return b


def _gather(g: sp.csr_matrix, idx: Indices, js: Indices) -> tuple[Matrix, Matrix]:
    """The stacked Gram submatrices G[N, N] of a batch of products (N: a row of `idx`) and their
    targets G[N, j], read from G in one lookup each."""
    n, size = idx.shape
    rows = np.repeat(idx, size, axis=1).ravel()
    cols = np.tile(idx, (1, size)).ravel()
    sub = np.asarray(g[rows, cols], dtype=np.float64).reshape(n, size, size)
    target = np.asarray(g[idx.ravel(), np.repeat(js, size)], dtype=np.float64).reshape(n, size)
    return sub, target
