"""The item model against EASE computed by hand, its local approximation and its validation."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from offer_service.decision import ease, local_ease
from offer_service.domain.records import PairCount

# Five products, eight baskets: a and b go together, c with d, e with anything.
BASKETS = [
    {"a", "b"},
    {"a", "b", "e"},
    {"a", "b", "c"},
    {"c", "d"},
    {"c", "d", "e"},
    {"d", "e"},
    {"a", "e"},
    {"b"},
]
IDS = ["a", "b", "c", "d", "e"]


def hand_ease(baskets: list[set[str]], lam: int) -> list[list[Fraction]]:
    """EASE by its definition in exact arithmetic: G by counting, (G + lam I)^-1 by Gauss-Jordan,
    B[i][j] = -P[i][j] / P[j][j], zero diagonal."""
    m = len(IDS)
    g = [[Fraction(sum(1 for b in baskets if p in b and q in b)) for q in IDS] for p in IDS]
    a = [[g[i][j] + (lam if i == j else 0) for j in range(m)] for i in range(m)]
    inv = [[Fraction(int(i == j)) for j in range(m)] for i in range(m)]
    for col in range(m):
        pivot = next(r for r in range(col, m) if a[r][col] != 0)
        a[col], a[pivot] = a[pivot], a[col]
        inv[col], inv[pivot] = inv[pivot], inv[col]
        f = a[col][col]
        a[col] = [v / f for v in a[col]]
        inv[col] = [v / f for v in inv[col]]
        for r in range(m):
            if r != col and a[r][col] != 0:
                f = a[r][col]
                a[r] = [v - f * w for v, w in zip(a[r], a[col], strict=True)]
                inv[r] = [v - f * w for v, w in zip(inv[r], inv[col], strict=True)]
    return [[Fraction(0) if i == j else -inv[i][j] / inv[j][j] for j in range(m)] for i in range(m)]


def test_basket_matrix_columns_ascend_and_count_once() -> None:
    x, ids = ease.basket_matrix([["b", "a", "a"], ["c"], []])
    assert ids == ["a", "b", "c"]
    assert x.toarray().tolist() == [[1, 1, 0], [0, 0, 1], [0, 0, 0]]


@pytest.mark.parametrize("lam", [1, 3, 25])
def test_fit_matches_hand_computed_ease(lam: int) -> None:
    x, ids = ease.basket_matrix(BASKETS)
    assert ids == IDS
    b = ease.fit(x, float(lam))
    expected = hand_ease(BASKETS, lam)
    assert np.allclose(b, np.array(expected, dtype=float), atol=1e-12)
    assert np.all(np.diag(b) == 0)


def test_neighbor_lists_keep_the_strongest_positive_and_negative_weights() -> None:
    x, ids = ease.basket_matrix(BASKETS)
    b = ease.fit(x, 1.0)
    lists = ease.neighbor_lists(b, ease.gram_of(x), ids, k=4)
    expected = hand_ease(BASKETS, 1)
    for i, anchor in enumerate(IDS):
        row = {q: float(expected[i][j]) for j, q in enumerate(IDS) if j != i}
        up = sorted((q for q in row if row[q] > 0), key=lambda q: (-row[q], q))[:2]
        down = sorted((q for q in row if row[q] < 0), key=lambda q: (row[q], q))[:2]
        assert [pc.product_id for pc in lists[anchor]] == up + down, anchor
        for pc in lists[anchor]:
            assert pc.score == pytest.approx(row[pc.product_id], abs=1e-12)
    top = lists["a"][0]
    assert top == PairCount(top.product_id, 3 if top.product_id == "b" else 1, top.score)
    # A scale (the calibration) multiplies every score.
    scaled = ease.neighbor_lists(b, ease.gram_of(x), ids, k=4, scale=2.0)
    assert [pc.score for pc in scaled["a"]] == [2 * (pc.score or 0) for pc in lists["a"]]


def test_a_cart_scores_the_sum_of_its_rows() -> None:
    # Linear: the score of e for the cart {a, c} is B[a, e] + B[c, e].
    x, _ = ease.basket_matrix(BASKETS)
    b = ease.fit(x, 1.0)
    expected = hand_ease(BASKETS, 1)
    assert np.isclose(b[[0, 2]].sum(axis=0)[4], float(expected[0][4] + expected[2][4]))


def test_local_model_equals_exact_when_the_neighbourhood_holds_everything() -> None:
    # Every pair co-purchased at least once: each product's neighbourhood is the whole catalog.
    x, _ = ease.basket_matrix([*BASKETS, {"a", "b", "d"}])
    gram = ease.gram_of(x)
    exact = ease.fit_dense(gram.toarray(), 2.0)
    local = ease.fit_local(gram, 2.0, neighbours=10)
    assert np.allclose(local.toarray(), exact, atol=1e-12)
    assert ease.hit_rate(local, x) == pytest.approx(ease.hit_rate(exact, x))


def test_fit_goes_local_above_the_dense_limit() -> None:
    x, _ = ease.basket_matrix(BASKETS)
    b = ease.fit(x, 2.0, dense_max=3)
    assert not isinstance(b, np.ndarray)


def test_lambda_must_be_positive() -> None:
    x, _ = ease.basket_matrix(BASKETS)
    with pytest.raises(ValueError, match="lambda must be > 0"):
        ease.fit(x, 0.0)


def test_hit_rate_hides_each_product_in_turn() -> None:
    x, ids = ease.basket_matrix(BASKETS)
    b = ease.fit(x, 1.0)
    # Baskets of one product are not queries; a basket of 2 is two queries.
    one, _ = ease.basket_matrix([{"a", "b"}, {"c"}], ids)
    assert ease.hit_rate(b, one, k=len(IDS)) == 1.0
    assert ease.hit_rate(b, one[1:], k=1) == 0.0


def test_lambda_is_chosen_on_validation_only() -> None:
    # Validation baskets pair a with b; the test window is never passed to `train`. Training
    # sees both pairings, so the lambda choice depends on which window is read.
    dated = [(i, basket) for i, basket in enumerate(BASKETS * 3)]
    seen: list[str] = []
    x_train, ids = ease.basket_matrix([b for _, b in dated])
    validation, _ = ease.basket_matrix([{"a", "b"}] * 3, ids)
    lam, scores = ease.choose_lambda(x_train, validation, (1.0, 5.0), progress=lambda m: None)
    assert set(scores) == {1.0, 5.0}
    assert lam == max(scores, key=lambda v: (scores[v], v))
    # `train` validates on the most recent window of its input and nothing later: a basket
    # placed after the window would change the split, so it is the caller's to leave out.
    fitted = ease.train(dated, k=3, window_ms=5, lambdas=(1.0, 5.0), progress=seen.append)
    older, recent = ease.split_recent(dated, 5)
    assert len(recent) == 5 and len(older) == len(dated) - 5
    x_old, ids_old = ease.basket_matrix(older)
    x_val, _ = ease.basket_matrix(recent, ids_old)
    # The lambda and every rate are those of the older baskets scored on the last window.
    assert (fitted.lam, fitted.validation) == ease.choose_lambda(x_old, x_val, (1.0, 5.0))
    assert fitted.baskets == len(dated)
    assert any("lambda 1:" in line for line in seen)


def test_train_without_history_to_validate_uses_the_middle_lambda() -> None:
    fitted = ease.train([(0, {"a", "b"})], k=5, window_ms=10)
    assert fitted.validation == {}
    assert fitted.lam == ease.LAMBDAS[len(ease.LAMBDAS) // 2]
    assert fitted.lists["a"][0].product_id == "b"


def random_baskets(products: int = 80, baskets: int = 300, seed: int = 3) -> list[set[str]]:
    """Baskets of 1-8 products drawn unevenly, so neighbourhoods have many sizes."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, products + 1) ** 1.5
    weights /= weights.sum()
    return [
        {f"p{j:02d}" for j in rng.choice(products, size=rng.integers(1, 9), p=weights)}
        for _ in range(baskets)
    ]


@pytest.mark.parametrize("neighbours", [3, 7, 100])
def test_batched_local_model_equals_solving_each_product_alone(neighbours: int) -> None:
    x, _ = ease.basket_matrix(random_baskets())
    gram = ease.gram_of(x)
    sizes = {h.size for h in local_ease.neighbourhoods(gram, neighbours)}
    assert len(sizes) > 1  # products of several neighbourhood sizes, so several batches
    lams = (1.0, 25.0, 400.0)
    path = local_ease.fit_local_path(gram, lams, neighbours)
    for lam, batched in zip(lams, path, strict=True):
        each = local_ease.fit_local_each(gram, lam, neighbours)
        assert batched.nnz == each.nnz
        assert np.abs((batched - each).toarray()).max() <= 1e-8
        assert np.array_equal(ease.fit_local(gram, lam, neighbours).toarray(), batched.toarray())


def test_batched_local_model_solves_in_many_small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    x, _ = ease.basket_matrix(random_baskets())
    gram = ease.gram_of(x)
    whole = local_ease.fit_local(gram, 5.0, 7)
    monkeypatch.setattr(local_ease, "BATCH_ENTRIES", 60)  # one product a batch
    assert np.abs((local_ease.fit_local(gram, 5.0, 7) - whole).toarray()).max() <= 1e-12


def test_a_sparse_model_is_scored_as_its_dense_copy() -> None:
    # Validation scores a sparse B over the columns its rows touch; the rest count as zeros.
    baskets = random_baskets()
    x, ids = ease.basket_matrix(baskets[:200])
    held, _ = ease.basket_matrix(baskets[200:], ids)
    b = local_ease.fit_local(ease.gram_of(x), 5.0, 4)
    dense = b.toarray()
    for k in (1, 2, 5, 10):
        assert ease.hit_rate(b, held, k) == ease.hit_rate(dense, held, k)
    assert ease.calibration(b, held) == pytest.approx(ease.calibration(dense, held), rel=1e-12)
    gram = ease.gram_of(x)
    assert ease.neighbor_lists(b, gram, ids, 6) == ease.neighbor_lists(dense, gram, ids, 6)
    # The lambdas of one path are scored in one pass; models of other shapes one by one.
    path = local_ease.fit_local_path(gram, (1.0, 25.0), 4)
    other = local_ease.fit_local(gram, 5.0, 9)
    models = [*path, other, dense]
    assert ease.hit_rates(models, held) == [ease.hit_rate(m.toarray(), held) for m in path] + [
        ease.hit_rate(other.toarray(), held),
        ease.hit_rate(dense, held),
    ]
    assert ease.hit_rates([b, dense], held) == [ease.hit_rate(dense, held)] * 2


def test_training_goes_local_above_the_dense_limit_with_progress() -> None:
    dated = [(i * 1_000, basket) for i, basket in enumerate(random_baskets())]
    said: list[str] = []
    fitted = ease.train(dated, k=4, window_ms=50_000, dense_max=10, progress=said.append)
    assert fitted.lam in ease.LAMBDAS and set(fitted.validation) == set(ease.LAMBDAS)
    assert any(line.startswith("local model:") for line in said)
    assert fitted.lists["p00"] and all(pc.score is not None for pc in fitted.lists["p00"])


@pytest.mark.parametrize("block", [1, 2, 3, 512])
def test_the_inverse_is_mirrored_block_by_block(block: int) -> None:
    p = np.random.default_rng(5).random((7, 7))
    expected = np.triu(p) + np.triu(p, 1).T
    ease._mirror_upper(p, block)
    assert np.array_equal(p, expected)


@pytest.mark.parametrize("dense_max", [10, 1_000])
def test_scores_are_calibrated_by_the_model_chosen_on_validation(dense_max: int) -> None:
    # The held-out model is the one validated, not fitted again: the same scale either way.
    dated = [(i * 1_000, basket) for i, basket in enumerate(random_baskets())]
    fitted = ease.train(dated, k=4, window_ms=50_000, dense_max=dense_max)
    older, recent = ease.split_recent(dated, 50_000)
    x_old, ids_old = ease.basket_matrix(older)
    x_val, _ = ease.basket_matrix(recent, ids_old)
    again = ease.fit(x_old, fitted.lam, dense_max=dense_max)
    # With no titles the title weight stays 0; the popularity exponent is chosen too.
    assert fitted.title_weight == 0.0
    again = ease.damped(again, ease.gram_of(x_old).diagonal(), fitted.exponent)
    assert fitted.scale == pytest.approx(ease.calibration(again, x_val), rel=1e-9)
