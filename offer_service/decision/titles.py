"""How alike two products' titles are: the item model's side information.

Each title becomes the set of its words (letters and digits, two or more characters, lower
case), each word weighed by its inverse document frequency log(m / df) over the m products, the
vector scaled to length 1; two products' similarity is the dot product of their vectors (cosine:
1 for the same words, 0 for none in common). Words held by fewer than 2 products say nothing
about a pair; words held by more than `COMMON_SHARE` of the products (or `COMMON_MAX`) are
dropped as too common to tell products apart, which also bounds the pairs a word creates.

`decision/ease.py` adds `weight` x this matrix to the Gram matrix G = X^T X, as if every word
were a basket holding the products whose titles have it (EASE with side information, Jeunen et
al. 2020): a product seldom bought leans on the products named like it. Training only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

__all__ = ["COMMON_MAX", "COMMON_SHARE", "similarity", "words"]

COMMON_SHARE = 0.10
COMMON_MAX = 500

_WORD = re.compile(r"[^\W_]{2,}")


def words(title: str) -> set[str]:
    """The distinct words of a title, lower case."""
    return set(_WORD.findall(title.lower()))


def similarity(ids: Sequence[str], titles: Mapping[str, str]) -> sp.csr_matrix:
    """The products' title similarity (rows and columns: `ids`), sparse and symmetric, with 1
    on the diagonal of every product that has a word kept (0 for one without a title)."""
    m = len(ids)
    docs = [words(titles.get(pid, "")) for pid in ids]
    df: dict[str, int] = {}
    for doc in docs:
        for w in doc:
            df[w] = df.get(w, 0) + 1
    common = min(COMMON_MAX, COMMON_SHARE * m)
    vocab = {w: i for i, w in enumerate(sorted(w for w, n in df.items() if 2 <= n <= common))}
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for r, doc in enumerate(docs):
        for w in doc:
            j = vocab.get(w)
            if j is not None:
                rows.append(r)
                cols.append(j)
                vals.append(math.log(m / df[w]))
    t = sp.csr_matrix((vals, (rows, cols)), shape=(m, len(vocab)), dtype=np.float64)
    norms = np.sqrt(np.asarray(t.multiply(t).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    t = sp.csr_matrix(sp.diags(1.0 / norms) @ t)
    out: sp.csr_matrix = (t @ t.T).tocsr()
    return out
