"""The item model's side information and popularity damping, and how both are chosen."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from offer_service.decision import ease, titles

TITLES = {
    "a": "Red Retrospot Jumbo Bag",
    "b": "Pink Retrospot Jumbo Bag",
    "c": "Red Retrospot Cake Cases",
    "d": "Glass Star T-Light Holder",
    "e": "",
}
# The same five among 40 fillers: a catalog where "red" or "bag" is rare and "filler" common.
CATALOG = {**TITLES, **{f"z{i}": f"filler item {i}" for i in range(40)}}


def test_title_similarity_is_the_cosine_of_idf_weighted_words() -> None:
    # Among 5 products a word held by 2 is already above COMMON_SHARE: nothing is kept.
    ids = sorted(TITLES)
    assert titles.similarity(ids, TITLES).nnz == 0
    ids = sorted(CATALOG)
    sim = titles.similarity(ids, CATALOG).toarray()
    at = {pid: i for i, pid in enumerate(ids)}
    m = len(ids)
    # df over 45 products: retrospot 3, red 2, jumbo 2, bag 2; pink, cake, cases, glass, star,
    # light, holder once each (dropped: no pair to tell); "filler"/"item" 40 > 10% (dropped);
    # the digits 10-39 once each; "t" is one character.
    idf = {w: math.log(m / n) for w, n in {"retrospot": 3, "red": 2, "jumbo": 2, "bag": 2}.items()}

    def unit(ws: list[str]) -> dict[str, float]:
        norm = math.sqrt(sum(idf[w] ** 2 for w in ws))
        return {w: idf[w] / norm for w in ws}

    va = unit(["red", "retrospot", "jumbo", "bag"])
    vb = unit(["retrospot", "jumbo", "bag"])
    vc = unit(["red", "retrospot"])
    assert sim[at["a"], at["b"]] == pytest.approx(sum(va[w] * vb.get(w, 0) for w in va))
    assert sim[at["a"], at["c"]] == pytest.approx(sum(va[w] * vc.get(w, 0) for w in va))
    assert sim[at["b"], at["c"]] == pytest.approx(vb["retrospot"] * vc["retrospot"])
    assert sim[at["a"], at["a"]] == pytest.approx(1.0)
    # No kept word: no similarity to anything, not even itself; common words count for nothing.
    assert not sim[at["d"]].any() and not sim[at["e"]].any()
    assert not sim[at["z1"], at["z2"]]
    assert np.allclose(sim, sim.T)


def test_title_words_are_unicode_letters_and_digits() -> None:
    assert titles.words("Crème BRÛLÉE set_of 2, 12-pack!") == {
        "crème",
        "brûlée",
        "set",
        "of",
        "12",
        "pack",
    }


def test_title_weight_is_the_words_as_extra_baskets() -> None:
    # EASE on G + w C is EASE on X with one more row per kept word: sqrt(w) x that word's
    # column of the unit idf matrix (the docstring's "as if every word were a basket").
    baskets = [{"a", "d"}, {"a", "b"}, {"c", "d"}, {"a", "b", "c"}, {"b"}, {"d", "e"}]
    baskets += [{f"z{i}"} for i in range(40)]  # a catalog where "red" or "bag" is rare
    x, ids = ease.basket_matrix(baskets)
    sim = titles.similarity(ids, CATALOG)
    w = 4.0
    g = ease.gram_of(x).toarray()
    g += w * sim.toarray()
    with_titles = ease.fit_dense(g, 2.0)
    # The same model from the stacked matrix: T with T T^T = sim (eigen-decomposition).
    vals, vecs = np.linalg.eigh(sim.toarray())
    t = vecs * np.sqrt(np.clip(vals, 0, None))
    stacked = np.vstack([x.toarray(), math.sqrt(w) * t.T])
    assert np.allclose(ease.fit_dense(stacked.T @ stacked, 2.0), with_titles, atol=1e-10)
    # And the title-alike pair a-b gains against the plain model.
    plain = ease.fit_dense(ease.gram_of(x).toarray(), 2.0)
    a, b = ids.index("a"), ids.index("b")
    assert with_titles[a, b] > plain[a, b]


def test_damping_scales_each_column_so_a_carts_sum_keeps_its_factor() -> None:
    rng = np.random.default_rng(1)
    b = rng.normal(size=(6, 6))
    counts = np.array([0.0, 1, 3, 7, 15, 31])
    d = ease.damped(b, counts, 0.5)
    assert isinstance(d, np.ndarray)
    assert np.allclose(d, b / np.sqrt(counts + 1)[None, :])
    cart = [0, 2, 5]
    assert np.allclose(d[cart].sum(axis=0), b[cart].sum(axis=0) / np.sqrt(counts + 1))
    assert ease.damped(b, counts, 0.0) is b  # exponent 0: the model itself
    sparse = ease.damped(sp.csr_matrix(b), counts, 0.5)
    assert sp.issparse(sparse) and np.allclose(sparse.toarray(), d)


@pytest.mark.parametrize("k", [2, 4, 7])
def test_cut_keeps_what_the_served_lists_keep(k: int) -> None:
    rng = np.random.default_rng(k)
    ids = [f"p{i}" for i in range(9)]
    b = rng.normal(size=(9, 9))  # no ties
    np.fill_diagonal(b, 0.0)
    gram = sp.csr_matrix(np.ones((9, 9)))
    lists = ease.neighbor_lists(b, gram, ids, k)
    for source in (b, sp.csr_matrix(b)):
        served = ease.cut(source, k).toarray()
        for i, anchor in enumerate(ids):
            kept = {ids[j]: served[i, j] for j in np.flatnonzero(served[i])}
            assert kept == {pc.product_id: pytest.approx(pc.score) for pc in lists[anchor]}
    # With a factor, the cut of the damped copy, dense or sparse, without making the copy.
    counts = rng.integers(0, 30, size=9).astype(np.float64)
    factor = ease.popularity_factor(counts, 0.1)
    want = ease.cut(ease.damped(b, counts, 0.1), k).toarray()
    assert np.array_equal(ease.cut(b, k, factor).toarray(), want)
    assert np.allclose(ease.cut(sp.csr_matrix(b), k, factor).toarray(), want)


def dated_baskets() -> list[tuple[int, set[str]]]:
    """Training where a and b (alike titles) are never bought together, then a validation
    month where shoppers buy them together: the titles predict it, co-purchases cannot."""
    rng = np.random.default_rng(7)
    filler = [f"z{i}" for i in range(40)]
    out: list[tuple[int, set[str]]] = []
    for t in range(300):
        first = ["a", "b", "c", "d"][t % 4]
        out.append((t, {first, *rng.choice(filler, size=2, replace=False)}))
    for t in range(300, 340):
        out.append((t, {"a", "b"}))
    return out


def test_the_title_weight_is_chosen_on_validation_and_only_with_titles() -> None:
    dated = dated_baskets()
    said: list[str] = []
    fitted = ease.train(
        dated, k=6, window_ms=40, lambdas=(5.0,), titles=CATALOG, progress=said.append
    )
    assert fitted.title_weight > 0
    assert fitted.tuning is not None
    assert set(fitted.tuning) == {
        (w, e) for w in ease.TITLE_WEIGHTS for e in ease.POPULARITY_EXPONENTS
    }
    best = max(fitted.tuning.values())
    chosen = fitted.tuning[(fitted.title_weight, fitted.exponent)]
    assert chosen == best
    # Ties go to the smaller weight, then the smaller exponent.
    assert all(
        (w, e) >= (fitted.title_weight, fitted.exponent)
        for (w, e), rate in fitted.tuning.items()
        if rate == best
    )
    assert any(line.startswith("chosen: lambda 5, title weight") for line in said)
    # Served, a's list now names b, which no training basket pairs it with.
    assert "b" in {pc.product_id for pc in fitted.lists["a"] if (pc.score or 0) > 0}
    # Without titles, or for the local model, no weight is tried.
    plain = ease.train(dated, k=6, window_ms=40, lambdas=(5.0,))
    assert plain.title_weight == 0.0 and plain.tuning is not None
    assert {w for w, _ in plain.tuning} == {0.0}
    local = ease.train(dated, k=6, window_ms=40, lambdas=(5.0,), titles=CATALOG, dense_max=10)
    assert local.title_weight == 0.0
    # Nor when only the validation's older catalog is small enough for the exact model: the
    # final fit of every product would be the local one, which has no titles.
    grown = [*dated, *((340 + i, {"a", f"new{i}"}) for i in range(5))]
    mixed = ease.train(grown, k=6, window_ms=45, lambdas=(5.0,), titles=CATALOG, dense_max=44)
    assert mixed.products == 49 and mixed.tuning is not None
    assert mixed.title_weight == 0.0 and {w for w, _ in mixed.tuning} == {0.0}
    # Too little history to validate: neither is used.
    short = ease.train([(0, {"a", "b"})], k=4, window_ms=10, titles=CATALOG)
    assert (short.title_weight, short.exponent, short.tuning) == (0.0, 0.0, None)


def test_trains_choice_is_tune_on_its_last_window() -> None:
    # `train` tunes on the last `window_ms` of what it is given, by a model of what precedes it.
    dated = dated_baskets()
    first = ease.train(dated, k=6, window_ms=40, lambdas=(5.0,), titles=CATALOG)
    older, recent = ease.split_recent(dated, 40)
    x_old, ids_old = ease.basket_matrix(older)
    x_val, _ = ease.basket_matrix(recent, ids_old)
    held = ease.fit(x_old, 5.0)
    gram = ease.gram_of(x_old)
    tuned = ease.tune(gram, x_val, 5.0, held, k=6, ids=ids_old, titles=CATALOG)
    assert (tuned.title_weight, tuned.exponent) == (first.title_weight, first.exponent)
    assert tuned.scores == first.tuning
