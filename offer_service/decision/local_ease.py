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

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

__all__ = ["BAD_LAMBDA", "LOCAL_NEIGHBOURS", "fit_local", "fit_local_each", "fit_local_path"]

LOCAL_NEIGHBOURS = 100
# A batch's stacked submatrices take at most this many float64 entries (64 MB): memory stays
# flat whatever the catalog's size.
BATCH_ENTRIES = 8_000_000

# Batches solved at once: one a core, on a machine of two or more (the training is a child process
# below serving's priority, so serving keeps the CPU it needs).
THREADS = min(2, os.cpu_count() or 1)

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
    # Rows are what B is read by. Every lambda's B has the same entries: the CSR structure is
    # found once (where each CSC entry goes) and shared, only the weights are each model's own.
    where = sp.csc_matrix(
        (np.arange(1, indices.size + 1, dtype=np.float64), indices, indptr), shape=(m, m)
    ).tocsr()
    order = where.data.astype(np.int64) - 1
    del hoods, indices
    models = []
    for n in range(len(lams)):
        data[n] = data[n][order]
        models.append(sp.csr_matrix((data[n], where.indices, where.indptr), shape=(m, m)))
    return models


def _solve_all(
    g: sp.csr_matrix,
    hoods: list[Indices],
    sizes: Indices,
    indptr: Indices,
    lams: Sequence[float],
    data: NDArray[np.float64],
    progress: Progress | None,
) -> None:
    """Fill `data` (a row per lambda, B's CSC order) batch by batch, smallest systems first: a
    batch is the next products in order of size up to BATCH_ENTRIES, so each lookup in G is a
    large one (scipy binary-searches the rows of G only for a lookup of more than a tenth of
    its entries, and scans them otherwise)."""
    order = np.argsort(sizes, kind="stable")
    order = order[sizes[order] > 0]
    cost = np.cumsum(sizes[order] ** 2)
    batches: list[Indices] = []
    first = 0
    while first < order.size:
        spent = cost[first - 1] if first else 0
        last = max(first + 1, int(np.searchsorted(cost, spent + BATCH_ENTRIES, side="right")))
        batches.append(order[first:last])
        first = last

    def solve(js: Indices) -> int:
        _solve_batch(g, hoods, js, indptr, lams, data)
        return js.size

    # Batches write apart (each its own products' columns of B), and the lookup and the solves
    # run without the interpreter lock: a thread per core.
    done = told = 0
    with ThreadPoolExecutor(THREADS) as pool:
        for solved in pool.map(solve, batches):
            done += solved
            if progress is not None and done - told >= sizes.size // 10:
                told = done
                progress(f"local model: {done:,} of {sizes.size:,} products solved")


def _solve_batch(
    g: sp.csr_matrix,
    hoods: list[Indices],
    js: Indices,
    indptr: Indices,
    lams: Sequence[float],
    data: NDArray[np.float64],
) -> None:
    """Solve the products `js` (ascending sizes) at every lambda: one lookup in G for all their
    Gram submatrices (upper triangles: G is symmetric) and targets, one solve per size."""
    runs = np.split(js, np.flatnonzero(np.diff([hoods[j].size for j in js])) + 1)
    rows: list[Indices] = []
    cols: list[Indices] = []
    for run in runs:
        idx = np.stack([hoods[j] for j in run])
        upper, lower = np.triu_indices(idx.shape[1])
        rows += [idx[:, upper].ravel(), idx.ravel()]
        cols += [idx[:, lower].ravel(), np.repeat(run, idx.shape[1])]
    found = np.asarray(g[np.concatenate(rows), np.concatenate(cols)], dtype=np.float64).ravel()
    at = 0
    for run in runs:
        n, size = run.size, hoods[run[0]].size
        upper, lower = np.triu_indices(size)
        sub = np.zeros((n, size, size))
        sub[:, upper, lower] = found[at : at + n * upper.size].reshape(n, upper.size)
        sub[:, lower, upper] = sub[:, upper, lower]
        at += n * upper.size
        target = found[at : at + n * size].reshape(n, size, 1)
        at += n * size
        diagonal = np.arange(size)
        where = indptr[run][:, None] + diagonal
        for k, lam in enumerate(lams):
            system = sub.copy()
            system[:, diagonal, diagonal] += lam
            data[k][where] = np.linalg.solve(system, target)[..., 0]


def fit_local(gram: sp.csr_matrix, lam: float, neighbours: int = LOCAL_NEIGHBOURS) -> sp.csr_matrix:
    """B with each column j the ridge regression of j on its `neighbours` most co-purchased
    partners only (sparse: at most `neighbours` entries a column)."""
    (b,) = fit_local_path(gram, [lam], neighbours)
    return b
