"""The offline evaluation's report: Markdown tables of every method's figures."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from offer_service_tools.evaluate import METHODS, SIZES, Result

Metrics = Mapping[str, Mapping[str, float]]


def table(
    metrics: Metrics,
    result: Result,
    ks: Sequence[int],
    trained_orders: int,
    catalog_size: int,
    split: str,
    seconds: float,
    until: str | None = None,
    lam: float | None = None,
    tuned: tuple[float, float] | None = None,
) -> str:
    """The evaluation as Markdown tables with a few lines of context."""
    window = "" if until is None else f" placed before {until}"
    methods = [name for name in METHODS if name in metrics]
    heads = [f"hit rate@{k}" for k in ks] + ["MRR", "coverage"]
    model = "" if lam is None else f" The item model's lambda, chosen on the last 30 days: {lam:g}"
    if model and tuned is not None:
        model += f"; its title weight {tuned[0]:g} and popularity exponent {tuned[1]:g}"
    model += "." if model else ""
    lines = [
        f"Trained on {trained_orders:,} orders before {split} ({catalog_size:,} products sold); "
        f"tested on {result.baskets:,} later baskets of 2+ products{window}.{model}",
        f"{round(result.weight):,} leave-one-out queries, "
        f"{result.unseen / (result.weight or 1):.1%} of them hiding a product never sold before "
        "the split (no method can find it). "
        + (
            "Every method was asked every one."
            if result.evaluated == round(result.weight)
            else f"The engine and the model baselines were asked the same {result.evaluated:,} "
            "of them, sampled per basket; best sellers and random all."
        ),
        "",
        "| method | " + " | ".join(heads) + " |",
        "|---|" + "---:|" * len(heads),
    ]
    for name in methods:
        m = metrics[name]
        cells = [f"{m[f'hit_rate@{k}']:.2%}" for k in ks] + [
            f"{m['mrr']:.4f}",
            f"{m['coverage']:.1%}",
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    k = max(ks)
    lines += [
        "",
        "Revenue@k: the mean price of the hidden product per query when it is in the first k "
        "(minor units: what the value weighting buys).",
        "",
        "| method | " + " | ".join(f"revenue@{k}" for k in ks) + " |",
        "|---|" + "---:|" * len(ks),
    ]
    for name in methods:
        cells = [f"{metrics[name].get(f'revenue@{k}', 0.0):.2f}" for k in ks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    base = metrics["best_sellers"][f"hit_rate@{k}"]
    ratio = metrics["engine"][f"hit_rate@{k}"] / base if base else math.inf
    error = result.standard_error(k)
    summary = f"engine / best sellers at hit rate@{k}: {ratio:.2f}x"
    if error and base:
        low, high = ratio - 1.96 * error / base, ratio + 1.96 * error / base
        summary += (
            f" (the engine's hit rate@{k} has a standard error of {error:.2%} from sampling: "
            f"95% interval {low:.2f}x-{high:.2f}x)"
        )
    if "ease" in metrics and metrics["ease"][f"hit_rate@{k}"]:
        versus = metrics["engine"][f"hit_rate@{k}"] / metrics["ease"][f"hit_rate@{k}"]
        summary += f"; engine / EASE: {versus:.2f}x"
    lines += [
        "",
        f"{summary}; took {seconds:.1f} s",
        "",
        f"Hit rate@{k} by basket size (distinct products):",
        "",
        "| basket size | baskets | queries | " + " | ".join(methods) + " |",
        "|---|" + "---:|" * (len(methods) + 2),
    ]
    for _, _, label in SIZES:
        row = result.sizes.get(label)
        if row is None:
            continue
        baskets, weight, *hits = row
        cells = [f"{hits[METHODS.index(name)] / weight:.2%}" for name in methods]
        lines.append(f"| {label} | {baskets:,.0f} | {weight:,.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
