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
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup

from offer_service.domain.money import format_money
from offer_service.domain.records import StoreRecord
from offer_service.measurement import charts
from offer_service.measurement.charts import Figure
from offer_service.templating import environment
from offer_service.types import whole_in

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
    expires_s = whole_in(expires)
    if expires_s is None or expires_s <= now_s:
        return False
    return any(
        hmac.compare_digest(link_signature(key, record.id, expires_s), sig)
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
    return "n/a" if v is None else format_money(v, currency, signed=signed)


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


def chart_sections(report: Mapping[str, Any]) -> list[tuple[str, str, Markup]]:
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


@dataclass(frozen=True, slots=True)
class Tile:
    """One headline figure."""

    name: str
    label: str
    value: str
    detail: str


@dataclass(frozen=True, slots=True)
class Table:
    """One table of the page: its cells as text."""

    name: str
    caption: str
    headings: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    empty: str = ""


def tiles(report: Mapping[str, Any]) -> list[Tile]:
    cur = report["currency"]
    h = report["holdout"]
    t = report["totals"]
    o = report["orders"]
    sizes = h["sample_sizes"]

    def m(v: float | None) -> str:
        return amount(v, cur, signed=True)

    inc, total = h["incremental_revenue_per_visitor"], h["incremental_revenue"]
    conv = h["conversion_rate_difference"]
    return [
        Tile("rpv", "Incremental revenue per visitor", m(inc["value"]), _ci(inc, m)),
        Tile("revenue", "Incremental revenue", m(total["value"]), _ci(total, m)),
        Tile("cr", "Conversion, treatment vs holdout", pp(conv["value"]), _ci(conv, pp)),
        Tile(
            "take-rate",
            "Take rate",
            pct(t["take_rate"]["value"]),
            f"{t['accepts']:,} accepts of {t['impressions']:,} impressions",
        ),
        Tile(
            "attach-rate",
            "Attach rate",
            pct(o["attach_rate"]["value"]),
            f"{o['orders_with_offer_items']:,} of {o['orders']:,} orders",
        ),
        Tile(
            "aov",
            "AOV",
            amount(o["aov"]["value"], cur),
            "without offer items " + amount(o["aov_without_offer_items"]["value"], cur),
        ),
        Tile(
            "invalid",
            "Invalid traffic left out",
            f"{report['invalid_traffic']['events']:,}",
            ", ".join(
                f"{n:,} {reason.replace('_', ' ')}"
                for reason, n in report["invalid_traffic"]["by_reason"].items()
            ),
        ),
        Tile(
            "visitors",
            "Visitors measured",
            f"{sizes['treatment'] + sizes['holdout']:,}",
            f"{sizes['treatment']:,} treatment, {sizes['holdout']:,} holdout",
        ),
    ]


ROW_HEADINGS = (
    "Impressions",
    "Clicks",
    "Accepts",
    "Take rate",
    "CTR",
    "Attach rate",
    "Revenue",
    "Refund-adjusted",
    "Margin",
    "Return rate",
)


def rows_table(report: Mapping[str, Any], dimension: str, caption: str) -> Table:
    cur = report["currency"]
    name = "product_id" if dimension == "product" else dimension
    rows = [
        (
            str(r[name]) if r[name] is not None else "(none)",
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
        for r in report["breakdown"][dimension]
    ]
    return Table(dimension, caption, (dimension, *ROW_HEADINGS), rows, "No offers in this period")


TAKEN_HEADINGS = (
    "Impressions",
    "Clicks",
    "Click-attributed",
    "Adds",
    "Add rate",
    "Redeemed",
    "Take rate",
    "Token purchases",
    "Token orders",
    "Token revenue",
)
# Where offers are added to a cart rather than accepted one-click.
TAKEN_SURFACES = ("product_page", "cart", "checkout")


def taken_table(report: Mapping[str, Any]) -> Table:
    """Pre-purchase offers taken: adds to cart and purchases credited by token, beside the
    clicks and click-attributed purchases."""
    cur = report["currency"]
    rows = [
        (
            r["surface"],
            f"{r['impressions']:,}",
            f"{r['clicks']:,}",
            f"{r['click_attributed_purchases']:,}",
            f"{r['adds']:,}",
            pct(r["add_rate"]["value"]),
            f"{r['redeemed_lines']:,}",
            pct(r["take_rate"]["value"]),
            f"{r['token_purchases']:,}",
            f"{r['token_orders']:,}",
            amount(r["token_revenue"]["amount"], cur),
        )
        for r in report["breakdown"]["surface"]
        if r["surface"] in TAKEN_SURFACES
    ]
    caption = "Pre-purchase offers taken: adds to cart and purchases by offer token"
    return Table("taken", caption, ("surface", *TAKEN_HEADINGS), rows, "No offers in this period")


def groups_table(report: Mapping[str, Any]) -> Table:
    cur = report["currency"]
    h = report["holdout"]
    groups = [("Treatment", h["groups"]["treatment"]), ("Holdout", h["groups"]["holdout"])]
    groups += [(a["arm"], a) for a in h["arms"]]
    rows = [
        (
            label,
            f"{g['visitors']:,}",
            pct(g["conversion_rate"]["value"]),
            amount(g["revenue_per_visitor"]["value"], cur),
            _ci(g["revenue_per_visitor"], lambda v: amount(v, cur)),
            amount(g["aov"]["value"], cur),
        )
        for label, g in groups
    ]
    headings = ("Group", "Visitors", "Conversion", "Revenue per visitor", "Interval", "AOV")
    return Table("groups", "Visitors by group", headings, rows)


def page(
    report: Mapping[str, Any],
    store_name: str,
    params: Mapping[str, str],
    surfaces: Sequence[str],
) -> str:
    """The whole dashboard page."""
    template = environment("offer_service.measurement").get_template("dashboard.html")
    return template.render(
        report=report,
        store_name=store_name,
        hidden=[(k, params[k]) for k in ("store", "expires", "sig") if params.get(k)],
        to=params.get("to") or report["to"],
        surfaces=surfaces,
        tiles=tiles(report),
        charts=chart_sections(report),
        tables=[
            groups_table(report),
            rows_table(report, "surface", "Offers by surface"),
            taken_table(report),
            rows_table(report, "kind", "Offers by kind"),
            rows_table(report, "arm", "Offers by experiment arm"),
        ],
        csv_query=urlencode({k: v for k, v in params.items() if v}),
    )


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
        store = open_store(store_url, create=False)
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
