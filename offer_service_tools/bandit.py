"""The bandit simulation: Thompson sampling against greedy and static ranking, on known take rates.

Shoppers of one cart see two cross-sells out of curated complements (equal relevance) whose true
take rates the policies do not know; two more offers arrive a third of the way in. Each policy
runs the real pipeline, `decide.arrange` + `decide.finish`, rebuilding its prepared list every
`rebuild_every` requests as the engine's cache does, and learns from its own impressions and
takes (a take is a click followed by a purchase) through `learning.Feedback`:

- static: the cold-start ranking, relevance x surface prior x price, never updated;
- greedy: P(accept) = the posterior mean, no exploration;
- thompson: the engine's policy (Thompson draws for explored offers, the bounded exploration
  slot for under-explored ones).

Regret is the expected revenue lost against showing the two best offers available (by true take
rate x price); take rate is takes / impressions. Both are averaged over `runs` runs, and every
policy of a run meets the same shoppers (one uniform per request and offer decides a take).

`python -m offer_service_tools.bandit --svg docs/bandit-regret.svg` prints the table and writes the
plot (an SVG drawn here: no plotting dependency).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from offer_service.decision import decide
from offer_service.decision.candidates import COMPLEMENT_RELEVANCE, Candidate
from offer_service.decision.learning import Feedback, LearningConfig
from offer_service.decision.ranking import rank
from offer_service.decision.rules import PricedOffer
from offer_service.domain.policy import StoreRules
from offer_service.domain.products import Product
from offer_service.domain.records import EMPTY_VISITOR
from offer_service.domain.surfaces import Surface

POLICIES = ("thompson", "greedy", "static")
SURFACE = Surface.CART
SLOTS = 2
START_MS = 1_700_000_000_000
REQUEST_MS = 1_000  # one cart view a second: decay is negligible over a run
POINTS = 200  # samples per curve
NEW_OFFERS_AT = 1 / 3  # share of a run after which the scenario's last two offers exist


@dataclass(frozen=True, slots=True)
class Arm:
    product_id: str
    price: int  # minor units
    take_rate: float  # true P(take | shown), unknown to every policy
    arrives: float = 0.0  # share of the run after which the offer exists


# Pricier offers sell less often; the best revenue per impression is in the middle of the range,
# where the cold-start ranking (by price) does not look. Two offers arrive a third of the way in:
# one becomes the best, one is bad.
SCENARIO: tuple[Arm, ...] = (
    Arm("premium-kit", 4500, 0.03),
    Arm("gift-box", 3200, 0.05),
    Arm("travel-case", 2400, 0.06),
    Arm("stand", 2000, 0.07),
    Arm("strap", 1500, 0.08),
    Arm("batteries", 1200, 0.15),
    Arm("lens-cloth", 900, 0.22),
    Arm("sticker", 400, 0.10),
    Arm("charger", 1800, 0.12, arrives=NEW_OFFERS_AT),
    Arm("poster", 2800, 0.01, arrives=NEW_OFFERS_AT),
)


@dataclass(slots=True)
class Trace:
    """One policy's curves, sampled every `step` requests."""

    step: int
    regret: list[float]  # cumulative expected regret, minor units
    take_rate: list[float]  # takes / impressions within each step
    impressions: int = 0
    takes: int = 0


def _offer(arm: Arm) -> PricedOffer:
    product = Product(id=arm.product_id, title=arm.product_id, price=arm.price)
    candidate = Candidate(product, "cross_sell", COMPLEMENT_RELEVANCE, "Goes well", "complement")
    return PricedOffer(candidate, 0, arm.price, None, 1.0)


def simulate(
    policy: str,
    arms: Sequence[Arm] = SCENARIO,
    *,
    requests: int = 20_000,
    seed: int = 1,
    rebuild_every: int = 10,
    config: LearningConfig | None = None,
) -> Trace:
    """One run of `policy`; the shoppers (take uniforms) depend on `seed` only."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
    config = config or LearningConfig()
    # The study measures revenue regret, so offers rank by their expected value, as a store that
    # ranks for revenue sets it (the default weighs value at 0: relevance first).
    rules = StoreRules(value_weight=1.0)
    shoppers = random.Random(f"shoppers:{seed}")
    rng = random.Random(f"{policy}:{seed}")
    feedback = Feedback(config, START_MS, window_ms=0)
    offers = [_offer(a) for a in arms]
    index = {a.product_id: i for i, a in enumerate(arms)}
    arrival = [int(a.arrives * requests) for a in arms]
    worth = [a.take_rate * a.price for a in arms]
    step = max(1, requests // POINTS)
    trace = Trace(step, [], [])
    regret = 0.0
    shown = takes = 0
    prepared: list[PricedOffer] = []
    live: list[int] = []
    for r in range(requests):
        now = START_MS + r * REQUEST_MS
        u = [shoppers.random() for _ in arms]  # drawn whatever is shown: common to policies
        available = [i for i in range(len(arms)) if arrival[i] <= r]
        if r % rebuild_every == 0 or available != live:
            live = available
            feedback.advance(now)
            prepared = _prepare(policy, [offers[i] for i in live], rules, feedback, rng)
        explore = policy == "thompson" and rng.random() < config.explore_share
        chosen = decide.finish(
            prepared, EMPTY_VISITOR, rules, limit=SLOTS, surface=SURFACE, now_ms=now,
            explore=explore,
        )  # fmt: skip
        regret += sum(sorted((worth[i] for i in live), reverse=True)[:SLOTS])
        for j in chosen:
            pid = prepared[j].candidate.product.id
            i = index[pid]
            regret -= worth[i]
            feedback.add(SURFACE.value, pid, "impression", now)
            shown += 1
            if u[i] < arms[i].take_rate:
                feedback.add(SURFACE.value, pid, "click", now)
                feedback.add(SURFACE.value, pid, "purchase", now)
                takes += 1
        if (r + 1) % step == 0:
            trace.regret.append(regret)
            trace.take_rate.append(takes / shown if shown else 0.0)
            trace.impressions += shown
            trace.takes += takes
            shown = takes = 0
    return trace


def _prepare(
    policy: str,
    priced: list[PricedOffer],
    rules: StoreRules,
    feedback: Feedback,
    rng: random.Random,
) -> list[PricedOffer]:
    if policy == "static":
        return decide.arrange(priced, SURFACE, rules)
    learned = feedback.snapshot()
    if policy == "greedy":
        ids = [o.candidate.product.id for o in priced]
        return rank(priced, SURFACE, rules, {p: learned.posterior(SURFACE, p).mean for p in ids})
    return decide.arrange(priced, SURFACE, rules, learned, rng)


@dataclass(slots=True)
class Summary:
    """Every policy's curves averaged over runs."""

    requests: int
    runs: int
    step: int
    regret: dict[str, list[float]]
    take_rate: dict[str, list[float]]
    overall_take_rate: dict[str, float]


def compare(requests: int = 20_000, runs: int = 20, seed: int = 1) -> Summary:
    """Every policy over `runs` runs (seeds seed .. seed + runs - 1), averaged."""
    regret: dict[str, list[float]] = {}
    take: dict[str, list[float]] = {}
    overall: dict[str, float] = {}
    step = 1
    for policy in POLICIES:
        traces = [simulate(policy, requests=requests, seed=seed + i) for i in range(runs)]
        step = traces[0].step
        regret[policy] = [sum(col) / runs for col in zip(*(t.regret for t in traces), strict=True)]
        take[policy] = [sum(col) / runs for col in zip(*(t.take_rate for t in traces), strict=True)]
        overall[policy] = sum(t.takes for t in traces) / max(sum(t.impressions for t in traces), 1)
    return Summary(requests, runs, step, regret, take, overall)


def table(summary: Summary, checkpoints: Sequence[float] = (0.05, 0.25, 0.5, 0.75, 1.0)) -> str:
    """Cumulative regret (GBP) and the take rate around each checkpoint, as Markdown."""
    marks = [max(1, round(c * len(summary.regret[POLICIES[0]]))) for c in checkpoints]
    heads = [f"{m * summary.step:,}" for m in marks]
    lines = [
        f"Cumulative expected regret (GBP) after N cart requests, mean of {summary.runs} runs; "
        f"new offers arrive after {int(summary.requests * NEW_OFFERS_AT):,}.",
        "",
        "| policy | " + " | ".join(heads) + " | take rate (all) |",
        "|---|" + "---:|" * (len(heads) + 1),
    ]
    for policy in POLICIES:
        cells = [f"{summary.regret[policy][m - 1] / 100:,.0f}" for m in marks]
        lines.append(
            f"| {policy} | " + " | ".join(cells) + f" | {summary.overall_take_rate[policy]:.1%} |"
        )
    lines += [
        "",
        "Take rate in the window ending at N (takes / impressions):",
        "",
        "| policy | " + " | ".join(heads) + " |",
        "|---|" + "---:|" * len(heads),
    ]
    for policy in POLICIES:
        cells = [f"{summary.take_rate[policy][m - 1]:.1%}" for m in marks]
        lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- the plot ----------------------------------------------------------------------------------

COLORS = {"thompson": "#1b7837", "greedy": "#d95f02", "static": "#7570b3"}
WIDTH, PANEL_HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 760, 250, 78, 20, 36, 46


def svg(summary: Summary) -> str:
    """Two panels: cumulative regret and the take rate over requests, one line per policy."""
    xs = [(i + 1) * summary.step for i in range(len(summary.regret[POLICIES[0]]))]
    regret = {p: [v / 100 for v in summary.regret[p]] for p in POLICIES}
    smooth = {p: _moving_average(summary.take_rate[p], 5) for p in POLICIES}
    height = 2 * (PANEL_HEIGHT + TOP + BOTTOM)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
    ]
    parts += _panel(xs, regret, 0, "Cumulative expected regret (GBP)", "{:,.0f}")
    parts += _panel(
        xs, smooth, PANEL_HEIGHT + TOP + BOTTOM, "Take rate (takes / impressions)", "{:.0%}"
    )
    for i, policy in enumerate(POLICIES):
        x = LEFT + 12 + i * 110
        parts.append(
            f'<line x1="{x}" y1="{TOP + 14}" x2="{x + 22}" y2="{TOP + 14}" '
            f'stroke="{COLORS[policy]}" stroke-width="3"/>'
            f'<text x="{x + 28}" y="{TOP + 18}">{policy}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _panel(
    xs: Sequence[int], series: Mapping[str, Sequence[float]], y0: int, title: str, fmt: str
) -> list[str]:
    top = y0 + TOP
    plot_w, plot_h = WIDTH - LEFT - RIGHT, PANEL_HEIGHT
    y_max = _nice(max(max(v) for v in series.values()) or 1.0)
    x_max = xs[-1]

    def px(x: float) -> float:
        return LEFT + plot_w * x / x_max

    def py(y: float) -> float:
        return top + plot_h * (1 - y / y_max)

    out = [
        f'<text x="{LEFT}" y="{top - 12}" font-size="14" font-weight="bold">{title}</text>',
        f'<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#999"/>',
    ]
    for k in range(5):
        y = y_max * k / 4
        out.append(
            f'<line x1="{LEFT}" y1="{py(y):.1f}" x2="{LEFT + plot_w}" y2="{py(y):.1f}" '
            f'stroke="#eee"/><text x="{LEFT - 6}" y="{py(y) + 4:.1f}" text-anchor="end">'
            f"{fmt.format(y)}</text>"
        )
    for k in range(5):
        x = x_max * k / 4
        out.append(
            f'<text x="{px(x):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{x:,.0f}</text>'
        )
    out.append(
        f'<text x="{LEFT + plot_w / 2}" y="{top + plot_h + 34}" text-anchor="middle">'
        "cart requests</text>"
    )
    arrival = x_max * NEW_OFFERS_AT
    out.append(
        f'<line x1="{px(arrival):.1f}" y1="{top}" x2="{px(arrival):.1f}" y2="{top + plot_h}" '
        f'stroke="#666" stroke-dasharray="4 3"/><text x="{px(arrival) + 4:.1f}" '
        f'y="{top + plot_h - 6}" fill="#666">new offers arrive</text>'
    )
    for policy in POLICIES:
        points = " ".join(
            f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, series[policy], strict=True)
        )
        out.append(
            f'<polyline points="{points}" fill="none" stroke="{COLORS[policy]}" stroke-width="2"/>'
        )
    return out


def _nice(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 x 10^k at or above `value`."""
    scale = 10.0 ** math.floor(math.log10(value))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * scale >= value:
            return m * scale
    return 10 * scale


def _moving_average(values: Sequence[float], width: int) -> list[float]:
    out = []
    for i in range(len(values)):
        window = values[max(0, i - width + 1) : i + 1]
        out.append(sum(window) / len(window))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m offer_service_tools.bandit", description=__doc__
    )
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--svg", type=Path, help="write the regret plot here")
    args = parser.parse_args(argv)
    summary = compare(args.requests, args.runs, args.seed)
    sys.stdout.write(table(summary))
    if args.svg:
        args.svg.write_text(svg(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
