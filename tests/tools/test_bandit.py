"""The bandit simulation: Thompson sampling has less regret than greedy and static ranking."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from offer_service_tools import bandit
from offer_service_tools.bandit import POLICIES, SCENARIO, Arm, compare, simulate, svg, table


def test_thompson_regret_is_below_greedy_and_static() -> None:
    summary = compare(requests=6000, runs=3, seed=11)
    final = {p: summary.regret[p][-1] for p in POLICIES}
    assert final["thompson"] < 0.6 * min(final["greedy"], final["static"])
    # ...and the take rate it ends on is the highest.
    assert summary.take_rate["thompson"][-1] > summary.take_rate["greedy"][-1]


def test_static_never_learns() -> None:
    static = simulate("static", requests=2000, seed=3)
    # The cold-start ranking shows the two priciest offers, forever: a constant regret rate.
    per_step = [b - a for a, b in zip(static.regret, static.regret[1:], strict=False)]
    assert max(per_step[:60]) == pytest.approx(min(per_step[:60]))


def test_a_run_is_reproducible_under_its_seed() -> None:
    a = simulate("thompson", requests=1500, seed=5)
    b = simulate("thompson", requests=1500, seed=5)
    assert a == b
    assert simulate("thompson", requests=1500, seed=6) != a


def test_regret_is_zero_when_the_best_offers_are_the_obvious_ones() -> None:
    # Take rates fall as prices rise only a little: price x take rate ranks like price alone,
    # which is what the cold-start ranking shows.
    arms = [Arm(f"p{i}", 1000 * (i + 1), 0.1 - 0.001 * i) for i in range(5)]
    trace = simulate("static", arms, requests=500)
    assert trace.regret[-1] == pytest.approx(0.0)


def test_unknown_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        simulate("epsilon", requests=10)


def test_the_table_and_the_plot() -> None:
    summary = compare(requests=600, runs=1)
    text = table(summary)
    for policy in POLICIES:
        assert f"| {policy} |" in text
    root = ET.fromstring(svg(summary))
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    assert len(root.findall(f"{ns}polyline")) == 2 * len(POLICIES)  # two panels
    assert len(SCENARIO) == 10 and bandit.SLOTS == 2
