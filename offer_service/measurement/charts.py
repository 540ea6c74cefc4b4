"""Server-rendered SVG charts for the dashboard: no script, no library, no style attributes.

Each chart is an `<svg>` with presentation attributes only (so it renders under a strict
Content-Security-Policy), a `<title>` for screen readers, and one `data-value` element per
plotted figure (what the browser test counts). Text is escaped here, so a chart is `Markup`
that the page's template inserts as it is; numbers are formatted by the caller's `fmt`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

Fmt = Callable[[float], str]

INK = "#1f2933"
MUTED = "#7b8794"
GRID = "#e4e7eb"
BAR = "#3b6fd8"
BAR_ALT = "#d9822b"
GOOD = "#2f9e6b"
BAD = "#c94a4a"
FONT = 'font-family="system-ui, sans-serif"'


@dataclass(frozen=True, slots=True)
class Figure:
    """One plotted figure: a value with an optional interval."""

    label: str
    value: float
    low: float | None = None
    high: float | None = None
    note: str = ""


def _open(chart: str, title: str, width: int, height: int) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-label="{escape(title)}" data-chart="{escape(chart)}" '
        f'class="chart-svg">',
        f"<title>{escape(title)}</title>",
    ]


def empty(chart: str, title: str, width: int = 560, height: int = 120) -> Markup:
    parts = _open(chart, title, width, height)
    parts.append(
        f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="{MUTED}" {FONT} '
        'font-size="14" data-empty="true">No data in this period</text></svg>'
    )
    return Markup("".join(parts))


def _span(figures: Sequence[Figure], zero: bool = True) -> tuple[float, float]:
    values = [f.value for f in figures]
    values += [f.low for f in figures if f.low is not None]
    values += [f.high for f in figures if f.high is not None]
    lo, hi = min(values), max(values)
    if zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0:
        hi = lo + 1.0
    pad = (hi - lo) * 0.08
    return (lo - pad if lo < 0 else lo), hi + pad


def columns(
    chart: str, title: str, figures: Sequence[Figure], fmt: Fmt, width: int = 560, height: int = 260
) -> Markup:
    """Vertical bars from zero with interval whiskers, one per figure."""
    if not figures:
        return empty(chart, title, width)
    left, right, top, bottom = 56, 12, 16, 44
    lo, hi = _span(figures)
    plot_h = height - top - bottom

    def y(v: float) -> float:
        return top + (hi - v) / (hi - lo) * plot_h

    parts = _open(chart, title, width, height)
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            f'stroke="{GRID}"/><text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" '
            f'fill="{MUTED}" {FONT} font-size="11">{escape(fmt(v))}</text>'
        )
    slot = (width - left - right) / len(figures)
    bar_w = min(64.0, slot * 0.6)
    for i, f in enumerate(figures):
        cx = left + slot * (i + 0.5)
        y0, y1 = y(0.0), y(f.value)
        parts.append(
            f'<rect x="{cx - bar_w / 2:.1f}" y="{min(y0, y1):.1f}" width="{bar_w:.1f}" '
            f'height="{max(abs(y0 - y1), 1):.1f}" fill="{BAR}" data-value="{f.value:.6g}">'
            f"<title>{escape(f.label)}: {escape(fmt(f.value))}{_ci_text(f, fmt)}</title></rect>"
        )
        if f.low is not None and f.high is not None:
            parts.append(_whisker(cx, y(f.low), y(f.high), vertical=True))
        parts.append(
            f'<text x="{cx:.1f}" y="{height - bottom + 16}" text-anchor="middle" fill="{INK}" '
            f'{FONT} font-size="12">{escape(f.label)}</text>'
            f'<text x="{cx:.1f}" y="{height - bottom + 32}" text-anchor="middle" '
            f'fill="{MUTED}" {FONT} font-size="11">{escape(fmt(f.value))}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _ci_text(f: Figure, fmt: Fmt) -> str:
    if f.low is None or f.high is None:
        return ""
    return f" (95% CI {escape(fmt(f.low))} to {escape(fmt(f.high))})"


def _whisker(c: float, a: float, b: float, *, vertical: bool) -> str:
    cap = 6
    if vertical:
        return (
            f'<path d="M{c:.1f} {a:.1f}V{b:.1f}M{c - cap:.1f} {a:.1f}H{c + cap:.1f}'
            f'M{c - cap:.1f} {b:.1f}H{c + cap:.1f}" stroke="{INK}" stroke-width="1.5" '
            'fill="none"/>'
        )
    return (
        f'<path d="M{a:.1f} {c:.1f}H{b:.1f}M{a:.1f} {c - cap:.1f}V{c + cap:.1f}'
        f'M{b:.1f} {c - cap:.1f}V{c + cap:.1f}" stroke="{INK}" stroke-width="1.5" fill="none"/>'
    )


def intervals(
    chart: str, title: str, figures: Sequence[Figure], fmt: Fmt, width: int = 560
) -> Markup:
    """Point estimates with horizontal 95% intervals around a zero line (green when the whole
    interval is above zero, red when below, grey when it contains zero)."""
    if not figures:
        return empty(chart, title, width)
    row_h, top, label_w, right = 44, 20, 150, 24
    height = top + row_h * len(figures) + 28
    lo, hi = _span(figures)

    def x(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * (width - label_w - right)

    parts = _open(chart, title, width, height)
    axis_y = top + row_h * len(figures)
    parts.append(
        f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{top - 8}" y2="{axis_y}" stroke="{MUTED}" '
        'stroke-dasharray="4 3"/>'
    )
    for v in (lo, 0.0, hi):
        parts.append(
            f'<text x="{x(v):.1f}" y="{axis_y + 18}" text-anchor="middle" fill="{MUTED}" '
            f'{FONT} font-size="11">{escape(fmt(v))}</text>'
        )
    for i, f in enumerate(figures):
        cy = top + row_h * i + row_h / 2
        colour = MUTED
        if f.low is not None and f.high is not None:
            colour = GOOD if f.low > 0 else BAD if f.high < 0 else MUTED
            parts.append(_whisker(cy, x(f.low), x(f.high), vertical=False))
        parts.append(
            f'<circle cx="{x(f.value):.1f}" cy="{cy:.1f}" r="6" fill="{colour}" '
            f'data-value="{f.value:.6g}"><title>{escape(f.label)}: {escape(fmt(f.value))}'
            f"{_ci_text(f, fmt)}</title></circle>"
            f'<text x="8" y="{cy + 4:.1f}" fill="{INK}" {FONT} font-size="12">'
            f"{escape(f.label)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def bars(chart: str, title: str, figures: Sequence[Figure], fmt: Fmt, width: int = 560) -> Markup:
    """Horizontal bars from zero, largest first as given, each labelled with its value."""
    if not figures:
        return empty(chart, title, width)
    row_h, top, label_w, value_w = 28, 8, 170, 90
    height = top * 2 + row_h * len(figures)
    lo, hi = _span(figures)
    span_w = width - label_w - value_w

    def x(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * span_w

    parts = _open(chart, title, width, height)
    for i, f in enumerate(figures):
        cy = top + row_h * i
        x0, x1 = x(0.0), x(f.value)
        fill = BAR if f.value >= 0 else BAD
        parts.append(
            f'<text x="{label_w - 8}" y="{cy + 18}" text-anchor="end" fill="{INK}" {FONT} '
            f'font-size="12">{escape(f.label[:26])}</text>'
            f'<rect x="{min(x0, x1):.1f}" y="{cy + 5}" width="{max(abs(x1 - x0), 1):.1f}" '
            f'height="{row_h - 10}" fill="{fill}" data-value="{f.value:.6g}">'
            f"<title>{escape(f.label)}: {escape(fmt(f.value))}"
            f"{escape(' ' + f.note if f.note else '')}</title></rect>"
            f'<text x="{width - value_w + 6}" y="{cy + 18}" fill="{MUTED}" {FONT} '
            f'font-size="11">{escape(fmt(f.value))}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def line(
    chart: str,
    title: str,
    figures: Sequence[Figure],
    fmt: Fmt,
    width: int = 560,
    height: int = 240,
) -> Markup:
    """A series over time: the interval as a shaded band, the values as a line with points;
    `label` is the x-axis label of each point (the first and last are printed)."""
    if not figures:
        return empty(chart, title, width)
    left, right, top, bottom = 56, 16, 16, 36
    lo, hi = _span(figures)
    n = len(figures)

    def x(i: int) -> float:
        return left + (i / (n - 1) if n > 1 else 0.5) * (width - left - right)

    def y(v: float) -> float:
        return top + (hi - v) / (hi - lo) * (height - top - bottom)

    parts = _open(chart, title, width, height)
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            f'stroke="{GRID}"/><text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" '
            f'fill="{MUTED}" {FONT} font-size="11">{escape(fmt(v))}</text>'
        )
    banded = [(i, f) for i, f in enumerate(figures) if f.low is not None and f.high is not None]
    if len(banded) > 1:
        upper = " ".join(f"{x(i):.1f},{y(f.high or 0):.1f}" for i, f in banded)
        lower = " ".join(f"{x(i):.1f},{y(f.low or 0):.1f}" for i, f in reversed(banded))
        parts.append(f'<polygon points="{upper} {lower}" fill="{BAR}" fill-opacity="0.15"/>')
    path = " ".join(f"{x(i):.1f},{y(f.value):.1f}" for i, f in enumerate(figures))
    parts.append(f'<polyline points="{path}" fill="none" stroke="{BAR}" stroke-width="2"/>')
    for i, f in enumerate(figures):
        parts.append(
            f'<circle cx="{x(i):.1f}" cy="{y(f.value):.1f}" r="3.5" fill="{BAR_ALT}" '
            f'data-value="{f.value:.6g}"><title>{escape(f.label)}: {escape(fmt(f.value))}'
            f"{escape(' ' + f.note if f.note else '')}{_ci_text(f, fmt)}</title></circle>"
        )
    for i in {0, n - 1}:
        anchor = "start" if i == 0 else "end"
        parts.append(
            f'<text x="{x(i):.1f}" y="{height - 10}" text-anchor="{anchor}" fill="{MUTED}" '
            f'{FONT} font-size="11">{escape(figures[i].label)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
