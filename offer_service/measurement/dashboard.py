"""The merchant's dashboard: the measurement report as one server-rendered HTML page with SVG
charts, and the signed expiring links that open it without the secret key.

A link is `/dashboard?store=<id>&expires=<unix s>&sig=<hex HMAC-SHA256(secret key,
"dashboard:<id>:<expires>")>`: anyone holding it can read that store's report until it expires,
and nothing else. The page has no script at all, so it runs under `script-src 'none'`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import urlencode

from offer_service.domain.records import StoreRecord
from offer_service.measurement import charts
from offer_service.measurement.charts import Figure

CSP = (
    "default-src 'none'; script-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # The page's URL may hold a signed link: never send it to another site.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
DEFAULT_LINK_TTL_S = 24 * 3600
SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}
ZERO_DECIMAL = frozenset(("JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XOF", "XAF"))
TOP_OFFERS = 10


def link_signature(secret_key: str, store_id: str, expires_s: int) -> str:
    msg = f"dashboard:{store_id}:{expires_s}".encode()
    return hmac.new(secret_key.encode(), msg, hashlib.sha256).hexdigest()


def link_params(record: StoreRecord, expires_s: int) -> dict[str, str]:
    return {
        "store": record.id,
        "expires": str(expires_s),
        "sig": link_signature(record.secret_key, record.id, expires_s),
    }


def dashboard_url(base_url: str, record: StoreRecord, expires_s: int) -> str:
    """A link to the store's dashboard that works until `expires_s` (epoch seconds)."""
    return f"{base_url.rstrip('/')}/dashboard?{urlencode(link_params(record, expires_s))}"


def link_valid(record: StoreRecord, expires: str, sig: str, now_s: float) -> bool:
    """A link signed with the current secret key, or with a retired one in its grace period
    (so rotating the secret key with no grace revokes every link at once)."""
    if not expires.isdecimal() or int(expires) <= now_s:
        return False
    return any(
        hmac.compare_digest(link_signature(key, record.id, int(expires)), sig)
        for key in record.secret_keys(int(now_s * 1000))
    )


# --- formatting --------------------------------------------------------------------------------


def pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 100:.1f}%"


def pp(v: float | None) -> str:
    """A difference of rates, in percentage points."""
    return "n/a" if v is None else f"{v * 100:+.2f} pp"


def amount(v: float | None, currency: str, *, signed: bool = False) -> str:
    """Minor units as a price: 1234.5 USD -> $12.35."""
    if v is None:
        return "n/a"
    major = v if currency in ZERO_DECIMAL else v / 100
    digits = 0 if currency in ZERO_DECIMAL else 2
    sign = "-" if major < 0 else ("+" if signed and major > 0 else "")
    symbol = SYMBOLS.get(currency, currency + " ")
    return f"{sign}{symbol}{abs(major):,.{digits}f}"


def _ci(e: Mapping[str, Any], fmt: Any) -> str:
    ci = e.get("ci")
    if not ci:
        return ""
    return f"95% CI {fmt(ci[0])} to {fmt(ci[1])}"


def _figure(label: str, e: Mapping[str, Any], note: str = "") -> Figure | None:
    if e.get("value") is None:
        return None
    ci = e.get("ci") or (None, None)
    return Figure(label, e["value"], ci[0], ci[1], note)


def _present(figures: Sequence[Figure | None]) -> list[Figure]:
    return [f for f in figures if f is not None]


# --- the page ----------------------------------------------------------------------------------


def chart_sections(report: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(chart id, heading, svg) for every chart of the page."""
    cur = report["currency"]

    def money_fmt(v: float) -> str:
        return amount(v, cur)

    by = report["breakdown"]
    take = _present([_figure(r["surface"], r["take_rate"]) for r in by["surface"]])
    holdout = report["holdout"]
    incremental = _present(
        [_figure("All offers", holdout["incremental_revenue_per_visitor"])]
        + [_figure(a["arm"], a["incremental_revenue_per_visitor"]) for a in holdout["arms"]]
    )
    points = report["series"]["attach_rate"]["points"]
    attach = _present(
        [
            _figure(p["start"][:19].replace("T", " "), p["attach_rate"], f"({p['orders']} orders)")
            for p in points
        ]
    )
    top = sorted(by["product"], key=lambda r: -r["margin_contribution"]["amount"])[:TOP_OFFERS]
    margin = [
        Figure(r["title"] or r["product_id"], r["margin_contribution"]["amount"])
        for r in top
        if r["accepts"]
    ]
    returns = _present(
        [
            _figure(r["surface"], r["return_rate"], amount(r["refunded_revenue"]["amount"], cur))
            for r in by["surface"]
            if r["accepts"]
        ]
    )
    return [
        (
            "take-rate-by-surface",
            "Take rate by surface",
            charts.columns("take-rate-by-surface", "Take rate by surface", take, pct),
        ),
        (
            "incremental-rpv",
            "Incremental revenue per visitor against the holdout",
            charts.intervals(
                "incremental-rpv", "Incremental revenue per visitor", incremental, money_fmt
            ),
        ),
        (
            "attach-rate-over-time",
            "Attach rate over time",
            charts.line("attach-rate-over-time", "Attach rate over time", attach, pct),
        ),
        (
            "top-offers-by-margin",
            "Top offers by margin contribution",
            charts.bars("top-offers-by-margin", "Top offers by margin", margin, money_fmt),
        ),
        (
            "returns",
            "Return rate of offer items by surface",
            charts.columns("returns", "Return rate of offer items", returns, pct),
        ),
    ]


def _tile(label: str, value: str, detail: str, name: str) -> str:
    return (
        f'<div class="tile" data-kpi="{escape(name)}"><div class="tile-label">{escape(label)}'
        f'</div><div class="tile-value">{escape(value)}</div>'
        f'<div class="tile-detail">{escape(detail)}</div></div>'
    )


def tiles(report: Mapping[str, Any]) -> str:
    cur = report["currency"]
    h = report["holdout"]
    t = report["totals"]
    o = report["orders"]
    sizes = h["sample_sizes"]

    def m(v: float | None) -> str:
        return amount(v, cur, signed=True)

    inc, total = h["incremental_revenue_per_visitor"], h["incremental_revenue"]
    conv = h["conversion_rate_difference"]
    return "".join(
        [
            _tile("Incremental revenue per visitor", m(inc["value"]), _ci(inc, m), "rpv"),
            _tile("Incremental revenue", m(total["value"]), _ci(total, m), "revenue"),
            _tile("Conversion, treatment vs holdout", pp(conv["value"]), _ci(conv, pp), "cr"),
            _tile(
                "Take rate",
                pct(t["take_rate"]["value"]),
                f"{t['accepts']:,} accepts of {t['impressions']:,} impressions",
                "take-rate",
            ),
            _tile(
                "Attach rate",
                pct(o["attach_rate"]["value"]),
                f"{o['orders_with_offer_items']:,} of {o['orders']:,} orders",
                "attach-rate",
            ),
            _tile(
                "AOV",
                amount(o["aov"]["value"], cur),
                "without offer items " + amount(o["aov_without_offer_items"]["value"], cur),
                "aov",
            ),
            _tile(
                "Invalid traffic left out",
                f"{report['invalid_traffic']['events']:,}",
                ", ".join(
                    f"{n:,} {reason.replace('_', ' ')}"
                    for reason, n in report["invalid_traffic"]["by_reason"].items()
                ),
                "invalid",
            ),
            _tile(
                "Visitors measured",
                f"{sizes['treatment'] + sizes['holdout']:,}",
                f"{sizes['treatment']:,} treatment, {sizes['holdout']:,} holdout",
                "visitors",
            ),
        ]
    )


def _rows_table(report: Mapping[str, Any], dimension: str, caption: str) -> str:
    cur = report["currency"]
    name = "product_id" if dimension == "product" else dimension
    head = (
        "<tr><th>" + escape(dimension) + "</th><th>Impressions</th><th>Clicks</th><th>Accepts"
        "</th><th>Take rate</th><th>CTR</th><th>Attach rate</th><th>Revenue</th>"
        "<th>Refund-adjusted</th><th>Margin</th><th>Return rate</th></tr>"
    )
    body = []
    for r in report["breakdown"][dimension]:
        body.append(
            "<tr>"
            + "".join(
                f"<td>{escape(str(c))}</td>"
                for c in (
                    r[name] if r[name] is not None else "(none)",
                    f"{r['impressions']:,}",
                    f"{r['clicks']:,}",
                    f"{r['accepts']:,}",
                    pct(r["take_rate"]["value"]),
                    pct(r["click_through_rate"]["value"]),
                    pct(r["attach_rate"]["value"]),
                    amount(r["attributed_revenue"]["amount"], cur),
                    amount(r["refund_adjusted_revenue"]["amount"], cur),
                    amount(r["margin_contribution"]["amount"], cur),
                    pct(r["return_rate"]["value"]),
                )
            )
            + "</tr>"
        )
    if not body:
        body.append('<tr><td colspan="11">No offers in this period</td></tr>')
    return (
        f'<table data-table="{escape(dimension)}"><caption>{escape(caption)}</caption>'
        f"<thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"
    )


def _groups_table(report: Mapping[str, Any]) -> str:
    cur = report["currency"]
    h = report["holdout"]
    rows = [("Treatment", h["groups"]["treatment"]), ("Holdout", h["groups"]["holdout"])]
    rows += [(a["arm"], a) for a in h["arms"]]
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{escape(c)}</td>"
            for c in (
                label,
                f"{g['visitors']:,}",
                pct(g["conversion_rate"]["value"]),
                amount(g["revenue_per_visitor"]["value"], cur),
                _ci(g["revenue_per_visitor"], lambda v: amount(v, cur)),
                amount(g["aov"]["value"], cur),
            )
        )
        + "</tr>"
        for label, g in rows
    )
    return (
        '<table data-table="groups"><caption>Visitors by group</caption><thead><tr><th>Group'
        "</th><th>Visitors</th><th>Conversion</th><th>Revenue per visitor</th><th>Interval</th>"
        f"<th>AOV</th></tr></thead><tbody>{body}</tbody></table>"
    )


def _form(params: Mapping[str, str], report: Mapping[str, Any], surfaces: Sequence[str]) -> str:
    hidden = "".join(
        f'<input type="hidden" name="{k}" value="{escape(params[k])}">'
        for k in ("store", "expires", "sig")
        if params.get(k)
    )
    to = params.get("to") or report["to"]
    options = '<option value="">All surfaces</option>' + "".join(
        f'<option value="{s}"{" selected" if report["surface"] == s else ""}>{s}</option>'
        for s in surfaces
    )
    return (
        f'<form method="get" action="/dashboard" class="range">{hidden}'
        f'<label>From <input type="date" name="from" value="{report["from"][:10]}"></label>'
        f'<label>To <input type="date" name="to" value="{escape(to[:10])}">'
        f'</label><label>Surface <select name="surface">{options}</select></label>'
        '<button type="submit">Show</button></form>'
    )


def page(
    report: Mapping[str, Any],
    store_name: str,
    params: Mapping[str, str],
    surfaces: Sequence[str],
) -> str:
    """The whole dashboard page."""
    attribution = report["attribution"]
    csv_query = urlencode({k: v for k, v in params.items() if v})
    sections = "".join(
        f'<section class="card" data-section="{cid}"><h2>{escape(heading)}</h2>{svg}</section>'
        for cid, heading, svg in chart_sections(report)
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Offers dashboard: {escape(store_name)}</title>
<link rel="stylesheet" href="/dashboard/dashboard.css">
<link rel="icon" href="/dashboard/favicon.svg" type="image/svg+xml">
</head><body>
<header><h1>Offers: what they added</h1>
<p class="muted">{escape(store_name)} &middot; {escape(report["from"])} to {escape(report["to"])}
&middot; {escape(report["surface"] or "all surfaces")} &middot; attribution window
{attribution["window_days"]} days after a click &middot; money in {escape(report["currency"])}</p>
{_form(params, report, surfaces)}
</header>
<main>
<div class="tiles">{tiles(report)}</div>
<p class="muted">{escape(attribution["rule"])} Intervals are 95%. The holdout
({report["holdout"]["share"] * 100:g}% of visitors) saw no offers and is measured the same way.</p>
<div class="grid">{sections}</div>
<section class="card wide">{_groups_table(report)}</section>
<section class="card wide">{_rows_table(report, "surface", "Offers by surface")}</section>
<section class="card wide">{_rows_table(report, "kind", "Offers by kind")}</section>
<section class="card wide">{_rows_table(report, "arm", "Offers by experiment arm")}</section>
<p><a href="/dashboard/report.csv?{escape(csv_query)}" download>Download this report as CSV</a>
&middot; generated {escape(report["generated_at"])}</p>
</main></body></html>
"""


# --- `offer-service dashboard-url` -------------------------------------------------------------


def add_parser(sub: Any, store_url_option: Any) -> None:
    """Register `dashboard-url` on the CLI's subparsers."""
    p = sub.add_parser("dashboard-url", help="print a signed, expiring link to a store's dashboard")
    p.add_argument("--store", required=True, help="the store id")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="where the service answers")
    p.add_argument("--hours", type=float, default=DEFAULT_LINK_TTL_S / 3600, help="link lifetime")
    store_url_option(p)


def cmd_dashboard_url(args: Any, store_url: str) -> int:
    import asyncio
    import sys
    import time

    from offer_service.storage import open_store

    async def find() -> StoreRecord | None:
        store = open_store(store_url)
        await store.open()
        try:
            return await store.get_store(args.store)
        finally:
            await store.close()

    record = asyncio.run(find())
    if record is None:
        print(f"error: no store {args.store!r} in {store_url}", file=sys.stderr)
        return 1
    expires = int(time.time() + args.hours * 3600)
    print(dashboard_url(args.url, record, expires))
    return 0
