"""The demo storefront at /demo/: a small shop that uses the snippet exactly as a merchant would.

Pages are rendered here, server side, with every catalog value passed through `html.escape`;
the only scripts are static files (the queue stub, the snippet, a tiny activity log), so the
pages are served under a strict Content-Security-Policy with no inline script or style at all.

- `/demo/`, `/demo/products/{id}`, `/demo/cart`, `/demo/checkout`, `/demo/thank-you`: the shop.
  The cart lives in a first-party cookie that the server sets (`POST /demo/cart`); placing an
  order (`POST /demo/place-order`) records it in the demo store exactly as `POST
  /v1/admin/orders` would, then redirects to the thank-you page with the order's token.
- `/demo/img/{id}.svg`: a generated tile per product.
- `/demo/charge`: the charge endpoint a merchant implements (API.md): verifies the signature,
  approves with a charge id (one per idempotency key) and declines (402) orders placed by the
  customer `decline-card` (the checkout page's "Simulate a declined card" box).
  `GET /demo/charges` lists the charges this process has seen (demo only).

The demo store's `charge_url` must point at this very server. The `demo` command knows its port
(`OFFER_DEMO_PORT`, see `charge_url_from_env`); when it does not (tests pick a free port after
building the app), the first storefront request sets it from the address the connection arrived
on (the ASGI `server` of the socket, never the client's Host header).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from html import escape
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from offer_service.commerce.ingest import import_orders
from offer_service.domain.orders import Order, OrderLine
from offer_service.domain.products import Product
from offer_service.domain.records import StoreRecord
from offer_service.domain.signatures import verify
from offer_service.domain.tokens import order_token, order_token_valid
from offer_service.types import is_whole
from offer_service.web.endpoints.common import engine, read_body
from offer_service_tools.demo import CATALOG, DEMO_PUBLISHABLE_KEY, replace_rules

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
SVG_HEADERS = {
    "Content-Security-Policy": "default-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "public, max-age=300",
}
ASSET_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=300"}
ASSET_TYPES = {
    "css": "text/css; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "svg": "image/svg+xml",
}
SHOP_NAME = "Field & Kettle"
CART_COOKIE = "demo_cart"
MAX_CART_LINES = 50
MAX_QUANTITY = 99
FORM_LIMIT = 16 * 1024
CHARGE_LIMIT = 64 * 1024
# The documented decline trigger: orders of this customer are declined by /demo/charge.
DECLINE_CUSTOMER = "decline-card"
# Currencies without minor units (the Stripe list, as in the snippet).
_ZERO = "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF"
ZERO_DECIMAL = frozenset(_ZERO.split())
SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}

# Departments of the demo catalog, in shop order; categories outside them form their own.
DEPARTMENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Cameras & gear", ("cameras", "memory", "camera-accessories", "bags", "tripods")),
    ("Coffee", ("coffee", "coffee-gear")),
    ("Skincare", ("skincare",)),
)
# Two gradient stops per category for the product tiles.
TILE_COLOURS = {
    "cameras": ("#1f3b4d", "#3c6e8f"),
    "memory": ("#3f3d7a", "#6c69b8"),
    "camera-accessories": ("#264653", "#2a9d8f"),
    "bags": ("#5c4033", "#9c6b4e"),
    "tripods": ("#2f4f3a", "#5f8f63"),
    "coffee": ("#4b2e1e", "#8a5a3b"),
    "coffee-gear": ("#6b3f2a", "#c07f4f"),
    "skincare": ("#a15c6b", "#e2a3ad"),
}
FALLBACK_COLOURS = (
    ("#37474f", "#78909c"),
    ("#4a148c", "#8e63c7"),
    ("#004d40", "#3f9c8c"),
    ("#8d3b1f", "#d17b4f"),
)
_CATALOG_ORDER = {p.id: n for n, p in enumerate(CATALOG)}


def charge_url_from_env(environ: Mapping[str, str] = os.environ) -> str | None:
    """The demo charge endpoint of a server started by `offer-service demo` (OFFER_DEMO_PORT)."""
    port = environ.get("OFFER_DEMO_PORT", "")
    return f"http://127.0.0.1:{port}/demo/charge" if is_whole(port) else None


def own_charge_url(scope: Scope) -> str | None:
    """`/demo/charge` on the socket address this request arrived on (not the Host header)."""
    server = scope.get("server")
    if not server or server[1] is None:
        return None
    host, port = str(server[0]), int(server[1])
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/demo/charge"


def _is_demo_charge_url(url: str | None) -> bool:
    """An unset charge URL, or one of ours: a store owner's own endpoint is never replaced."""
    return url is None or urlsplit(url).path == "/demo/charge"


# ---- formatting ---------------------------------------------------------------------------


def money(amount: int, currency: str) -> str:
    digits = 0 if currency in ZERO_DECIMAL else 2
    text = f"{Decimal(amount).scaleb(-digits):,.{digits}f}"
    symbol = SYMBOLS.get(currency)
    return f"{symbol}{text}" if symbol else f"{text} {currency}"


def department(category: str) -> str:
    for name, categories in DEPARTMENTS:
        if category in categories:
            return name
    return category.replace("-", " ").capitalize() or "More"


def _shop_order(product: Product) -> tuple[int, int, str]:
    dept = next(
        (n for n, (_, cats) in enumerate(DEPARTMENTS) if product.category in cats),
        len(DEPARTMENTS),
    )
    return dept, _CATALOG_ORDER.get(product.id, len(_CATALOG_ORDER)), product.id


def product_href(product_id: str) -> str:
    return "/demo/products/" + quote(product_id, safe="")


def image_href(product_id: str) -> str:
    return "/demo/img/" + quote(product_id, safe="") + ".svg"


# ---- the cart cookie ----------------------------------------------------------------------


def parse_cart(value: str | None) -> dict[str, int]:
    """`id:qty|id:qty` with each id percent-encoded; anything malformed is dropped."""
    cart: dict[str, int] = {}
    for part in (value or "").split("|"):
        pid, _, qty = part.rpartition(":")
        if pid and is_whole(qty) and len(cart) < MAX_CART_LINES:
            quantity = min(int(qty), MAX_QUANTITY)
            if quantity > 0:
                cart[unquote(pid)] = quantity
    return cart


def format_cart(cart: Mapping[str, int]) -> str:
    return "|".join(f"{quote(pid, safe='')}:{qty}" for pid, qty in cart.items())


def _form(raw: bytes) -> dict[str, str]:
    fields = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


def _quantity(text: str | None, default: int = 1) -> int:
    text = (text or "").strip()
    return max(0, min(int(text), MAX_QUANTITY)) if is_whole(text) else default


# ---- the charge endpoint's memory ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Charge:
    charge_id: str
    idempotency_key: str
    order_id: str
    product_id: str
    quantity: int
    amount: dict[str, Any]
    offer_id: str
    at: str


@dataclass
class ChargeLog:
    """What /demo/charge has done in this process: charges by idempotency key, every request."""

    by_key: dict[str, Charge] = field(default_factory=dict)
    requests: int = 0
    declined: int = 0

    def for_order(self, order_id: str) -> list[Charge]:
        return [c for c in self.by_key.values() if c.order_id == order_id]


# ---- HTML ---------------------------------------------------------------------------------


def layout(title: str, body: str, *, cart_count: int, page: str) -> str:
    cart_label = f"Cart ({cart_count})" if cart_count else "Cart"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · {escape(SHOP_NAME)}</title>
<link rel="icon" href="/demo/assets/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/demo/assets/store.css">
<script src="/demo/assets/offers-stub.js"></script>
<script async src="/sdk/v1/offers.js" data-key="{escape(DEMO_PUBLISHABLE_KEY)}"></script>
<script defer src="/demo/assets/store.js"></script>
</head>
<body data-page="{escape(page)}">
<a class="skip" href="#main">Skip to content</a>
<header class="site-header">
  <div class="wrap header-row">
    <a class="brand" href="/demo/"><span class="brand-mark" aria-hidden="true">F&amp;K</span>
      {escape(SHOP_NAME)}</a>
    <nav class="site-nav" aria-label="Main">
      <a href="/demo/">Shop</a>
      <a class="cart-link" href="/demo/cart">{escape(cart_label)}</a>
    </nav>
  </div>
</header>
<p class="demo-banner">Demo storefront of <strong>offer_service</strong>: every recommendation on
these pages is rendered by <code>/sdk/v1/offers.js</code> with the publishable key
<code>pk_demo</code>. No real payments.</p>
<main id="main" class="wrap">
{body}
</main>
<footer class="site-footer">
  <div class="wrap">
    <details class="activity">
      <summary>What the snippet did on this page</summary>
      <ol class="activity-log" data-activity-log></ol>
    </details>
    <p>{escape(SHOP_NAME)} is a demo shop. Images are generated tiles.</p>
  </div>
</footer>
</body>
</html>
"""


def price_html(product: Product) -> str:
    now = f'<span class="price-now">{escape(money(product.price, product.currency))}</span>'
    if product.on_sale and product.compare_at_price is not None:
        was = escape(money(product.compare_at_price, product.currency))
        return f'<s class="price-was"><span class="sr">Was </span>{was}</s> {now}'
    return now


def badges_html(product: Product) -> str:
    names = {"new": "New", "clearance": "Clearance"}
    badges = [
        f'<span class="badge badge-{f}">{names[f]}</span>' for f in product.flags if f in names
    ]
    if not product.in_stock:
        badges.append('<span class="badge badge-out">Sold out</span>')
    return f'<span class="badges">{"".join(badges)}</span>' if badges else ""


def card_html(product: Product) -> str:
    return f"""<li class="card">
  <a class="card-link" href="{escape(product_href(product.id))}">
    <img class="card-image" src="{escape(image_href(product.id))}" alt="" width="400"
      height="400">
    <span class="card-title">{escape(product.title)}</span>
  </a>
  <p class="card-meta">{badges_html(product)}</p>
  <p class="card-price">{price_html(product)}</p>
</li>"""


def home_body(products: Sequence[Product]) -> str:
    sections: list[str] = []
    groups: dict[str, list[Product]] = {}
    for product in sorted(products, key=_shop_order):
        groups.setdefault(department(product.category), []).append(product)
    for name, items in groups.items():
        cards = "\n".join(card_html(p) for p in items)
        sections.append(
            f'<section class="department"><h2>{escape(name)}</h2>'
            f'<ul class="grid">{cards}</ul></section>'
        )
    return f"""<section class="hero">
  <h1>Good gear for mornings and memories</h1>
  <p>Cameras, coffee and skincare. Open any product, add it to your cart and check out to see
  product page, cart, checkout and one-click thank-you offers.</p>
</section>
{"".join(sections) or '<p class="empty">The catalog is empty.</p>'}"""


def product_body(product: Product) -> str:
    stock = (
        '<p class="stock stock-in">In stock, ships tomorrow</p>'
        if product.in_stock
        else '<p class="stock stock-out">Sold out</p>'
    )
    disabled = "" if product.in_stock else " disabled"
    return f"""<nav class="crumbs" aria-label="Breadcrumb"><a href="/demo/">Shop</a>
  <span aria-hidden="true">/</span> {escape(department(product.category))}</nav>
<article class="product">
  <img class="product-image" src="{escape(image_href(product.id))}" alt="{escape(product.title)}"
    width="400" height="400">
  <div class="product-info">
    <p class="eyebrow">{escape(product.category.replace("-", " "))}</p>
    <h1 class="product-title">{escape(product.title)}</h1>
    <p class="product-price">{price_html(product)} {badges_html(product)}</p>
    {stock}
    <form class="add-form" method="post" action="/demo/cart">
      <input type="hidden" name="action" value="add">
      <input type="hidden" name="product_id" value="{escape(product.id)}">
      <label for="qty">Quantity</label>
      <input id="qty" name="quantity" type="number" min="1" max="{MAX_QUANTITY}" value="1"
        inputmode="numeric">
      <button class="button primary" type="submit" data-add-to-cart{disabled}>Add to cart</button>
    </form>
  </div>
</article>
<section class="offers-section" aria-labelledby="also">
  <h2 id="also">Goes well with it</h2>
  <div class="placement" data-offers="product_page" data-product-id="{escape(product.id)}"></div>
</section>"""


@dataclass(frozen=True, slots=True)
class CartLine:
    product: Product
    quantity: int

    @property
    def total(self) -> int:
        return self.product.price * self.quantity


def _items_attr(lines: Sequence[CartLine]) -> str:
    return escape(",".join(line.product.id for line in lines))


def _subtotal(lines: Sequence[CartLine]) -> str:
    currency = lines[0].product.currency if lines else "USD"
    return money(sum(line.total for line in lines), currency)


def cart_body(lines: Sequence[CartLine]) -> str:
    if not lines:
        return """<h1>Your cart</h1>
<div class="empty"><p>Your cart is empty.</p>
<p><a class="button primary" href="/demo/">Continue shopping</a></p></div>"""
    rows = []
    for line in lines:
        p = line.product
        pid = escape(p.id)
        rows.append(f"""<li class="cart-line" data-line="{pid}">
  <img class="thumb" src="{escape(image_href(p.id))}" alt="" width="72" height="72">
  <div class="cart-line-info"><a href="{escape(product_href(p.id))}">{escape(p.title)}</a>
    <span class="muted">{escape(money(p.price, p.currency))} each</span></div>
  <form class="qty-form" method="post" action="/demo/cart">
    <input type="hidden" name="action" value="set"><input type="hidden" name="product_id"
      value="{pid}">
    <label class="sr" for="q-{pid}">Quantity of {escape(p.title)}</label>
    <input id="q-{pid}" name="quantity" type="number" min="0" max="{MAX_QUANTITY}"
      value="{line.quantity}" inputmode="numeric">
    <button class="button small" type="submit">Update</button>
  </form>
  <form method="post" action="/demo/cart"><input type="hidden" name="action" value="remove">
    <input type="hidden" name="product_id" value="{pid}">
    <button class="button small ghost" type="submit"
      aria-label="Remove {escape(p.title)}">Remove</button></form>
  <span class="cart-line-total">{escape(money(line.total, p.currency))}</span>
</li>""")
    return f"""<h1>Your cart</h1>
<div class="cart-layout">
  <ul class="cart-lines">{"".join(rows)}</ul>
  <aside class="summary">
    <p class="summary-row"><span>Subtotal</span> <strong>{escape(_subtotal(lines))}</strong></p>
    <a class="button primary wide" href="/demo/checkout">Checkout</a>
  </aside>
</div>
<section class="offers-section" aria-labelledby="more">
  <h2 id="more">Complete your order</h2>
  <div class="placement" data-offers="cart" data-items="{_items_attr(lines)}"></div>
</section>"""


def summary_lines_html(lines: Sequence[tuple[str, int, int, str]]) -> str:
    """(title, quantity, line total, currency) rows."""
    return "".join(
        f'<li class="summary-line"><span>{escape(title)} <span class="muted">x {qty}</span></span>'
        f"<span>{escape(money(total, currency))}</span></li>"
        for title, qty, total, currency in lines
    )


def checkout_body(lines: Sequence[CartLine]) -> str:
    summary = summary_lines_html(
        [(ln.product.title, ln.quantity, ln.total, ln.product.currency) for ln in lines]
    )
    return f"""<h1>Checkout</h1>
<div class="checkout-layout">
  <form class="checkout-form" method="post" action="/demo/place-order">
    <fieldset>
      <legend>Contact</legend>
      <label for="email">Email</label>
      <input id="email" name="email" type="email" value="shopper@example.com"
        autocomplete="email">
    </fieldset>
    <fieldset>
      <legend>Payment</legend>
      <p class="muted">Demo card on file: Visa ending 4242. Nothing is charged for real.</p>
      <label class="check"><input type="checkbox" name="simulate_decline" value="1"
        data-simulate-decline> Simulate a declined card</label>
      <p class="hint">The order is then placed by the customer <code>{DECLINE_CUSTOMER}</code>,
      and the demo charge endpoint declines every one-click add-on on its thank-you page
      (the offer shows "Payment declined").</p>
    </fieldset>
    <button class="button primary wide" type="submit" data-place-order>Place order</button>
  </form>
  <aside class="summary">
    <h2>Order summary</h2>
    <ul class="summary-lines">{summary}</ul>
    <p class="summary-row"><span>Total</span> <strong>{escape(_subtotal(lines))}</strong></p>
    <section class="offers-section compact" aria-labelledby="last">
      <h2 id="last">Last chance to add</h2>
      <div class="placement" data-offers="checkout" data-items="{_items_attr(lines)}"></div>
    </section>
  </aside>
</div>"""


def thank_you_body(
    order: Order, token: str, titles: Mapping[str, str], charges: Sequence[Charge]
) -> str:
    summary = summary_lines_html(
        [
            (
                titles.get(ln.product_id, ln.product_id),
                ln.quantity,
                ln.price * ln.quantity,
                order.currency,
            )
            for ln in order.lines
        ]
    )
    added = ""
    if charges:
        items = summary_lines_html(
            [
                (
                    titles.get(c.product_id, c.product_id),
                    c.quantity,
                    int(c.amount["amount"]),
                    str(c.amount["currency"]),
                )
                for c in charges
            ]
        )
        added = f'<h3>Added after checkout</h3><ul class="summary-lines">{items}</ul>'
    decline_note = ""
    if order.customer_id == DECLINE_CUSTOMER:
        decline_note = (
            '<p class="notice">This order was placed with the simulated declined card: '
            "one-click add-ons below will be declined.</p>"
        )
    return f"""<section class="thanks">
  <h1>Thank you, your order is confirmed</h1>
  <p>Order <strong data-order-number>{escape(order.id)}</strong>.
  A confirmation is on its way to shopper@example.com.</p>
  {decline_note}
</section>
<div class="thanks-layout">
  <section class="offers-section highlight" aria-labelledby="oneclick">
    <h2 id="oneclick">Add to your order with one click</h2>
    <p class="muted">Charged to the card you just used; nothing to enter again.</p>
    <div class="placement" data-offers="thank_you" data-order-id="{escape(order.id)}"
      data-order-token="{escape(token)}" data-limit="2"></div>
  </section>
  <aside class="summary receipt">
    <h2>Your order</h2>
    <ul class="summary-lines">{summary}</ul>
    <p class="summary-row"><span>Total</span>
      <strong>{escape(money(order.total, order.currency))}</strong></p>
    {added}
    <p><a class="button" href="/demo/">Continue shopping</a></p>
  </aside>
</div>"""


def message_body(title: str, text: str) -> str:
    return f"""<section class="empty"><h1>{escape(title)}</h1><p>{escape(text)}</p>
<p><a class="button primary" href="/demo/">Back to the shop</a></p></section>"""


# ---- product tiles ------------------------------------------------------------------------

_ICONS = {
    "camera": (
        '<rect x="120" y="120" width="160" height="112" rx="18" fill="#fff" fill-opacity=".9"/>'
        '<rect x="150" y="102" width="46" height="26" rx="6" fill="#fff" fill-opacity=".9"/>'
        '<circle cx="200" cy="176" r="38" fill="{dark}"/>'
        '<circle cx="200" cy="176" r="22" fill="#fff" fill-opacity=".35"/>'
        '<circle cx="252" cy="140" r="7" fill="{dark}"/>'
    ),
    "card": (
        '<path d="M158 96h70l26 26v116a8 8 0 0 1-8 8h-88a8 8 0 0 1-8-8V104a8 8 0 0 1 8-8z"'
        ' fill="#fff" fill-opacity=".9"/>'
        '<rect x="170" y="108" width="10" height="26" rx="2" fill="{dark}"/>'
        '<rect x="188" y="108" width="10" height="26" rx="2" fill="{dark}"/>'
        '<rect x="206" y="108" width="10" height="26" rx="2" fill="{dark}"/>'
    ),
    "lens": (
        '<circle cx="200" cy="172" r="72" fill="#fff" fill-opacity=".9"/>'
        '<circle cx="200" cy="172" r="50" fill="{dark}"/>'
        '<circle cx="200" cy="172" r="26" fill="#fff" fill-opacity=".3"/>'
    ),
    "bag": (
        '<path d="M170 128v-14a30 30 0 0 1 60 0v14" fill="none" stroke="#fff" stroke-width="12"'
        ' stroke-opacity=".9"/>'
        '<rect x="128" y="124" width="144" height="124" rx="20" fill="#fff" fill-opacity=".9"/>'
        '<rect x="176" y="160" width="48" height="14" rx="7" fill="{dark}"/>'
    ),
    "tripod": (
        '<rect x="170" y="92" width="60" height="30" rx="8" fill="#fff" fill-opacity=".9"/>'
        '<path d="M200 122 150 252M200 122v130M200 122l50 130" stroke="#fff" stroke-width="10"'
        ' stroke-linecap="round" stroke-opacity=".9"/>'
    ),
    "bean": (
        '<ellipse cx="200" cy="172" rx="56" ry="78" fill="#fff" fill-opacity=".9"'
        ' transform="rotate(30 200 172)"/>'
        '<path d="M232 112c-40 20-24 100-64 120" fill="none" stroke="{dark}" stroke-width="10"'
        ' stroke-linecap="round"/>'
    ),
    "cup": (
        '<rect x="130" y="132" width="112" height="112" rx="20" fill="#fff" fill-opacity=".9"/>'
        '<circle cx="254" cy="180" r="26" fill="none" stroke="#fff" stroke-width="12"'
        ' stroke-opacity=".9"/>'
        '<path d="M162 118c-8-12 8-20 0-32M198 118c-8-12 8-20 0-32" fill="none" stroke="#fff"'
        ' stroke-width="7" stroke-linecap="round" stroke-opacity=".7"/>'
    ),
    "bottle": (
        '<rect x="182" y="88" width="36" height="40" rx="6" fill="#fff" fill-opacity=".9"/>'
        '<rect x="156" y="124" width="88" height="130" rx="22" fill="#fff" fill-opacity=".9"/>'
        '<rect x="172" y="166" width="56" height="44" rx="6" fill="{dark}" fill-opacity=".5"/>'
    ),
}
_CATEGORY_ICONS = {
    "cameras": "camera",
    "memory": "card",
    "camera-accessories": "lens",
    "bags": "bag",
    "tripods": "tripod",
    "coffee": "bean",
    "coffee-gear": "cup",
    "skincare": "bottle",
}


def _initials(title: str) -> str:
    words = [w for w in title.split() if w[:1].isalnum()]
    letters = "".join(w[0] for w in words if w[0].isalpha())[:2]
    return (letters or "".join(words)[:2] or "?").upper()


def _title_lines(title: str, width: int = 20) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in title.split():
        candidate = f"{current} {word}".strip()
        if len(candidate) <= width or not current:
            current = candidate
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    if len(lines) > 2:
        lines = [lines[0], lines[1] + "…"]
    return [line if len(line) <= width + 1 else line[: width - 1] + "…" for line in lines]


def product_svg(product: Product) -> str:
    """A 400x400 tile: the category's colours, a simple icon (or initials), the title."""
    colours = TILE_COLOURS.get(product.category)
    if colours is None:
        digest = hashlib.sha256(product.category.encode()).digest()
        colours = FALLBACK_COLOURS[digest[0] % len(FALLBACK_COLOURS)]
    light, dark = colours[1], colours[0]
    icon_name = _CATEGORY_ICONS.get(product.category)
    if icon_name:
        icon = _ICONS[icon_name].replace("{dark}", dark)
    else:
        icon = (
            '<circle cx="200" cy="172" r="78" fill="#fff" fill-opacity=".9"/>'
            f'<text x="200" y="196" text-anchor="middle" font-size="68" font-weight="700"'
            f' font-family="system-ui, sans-serif" fill="{dark}">'
            f"{escape(_initials(product.title))}</text>"
        )
    text = "".join(
        f'<text x="200" y="{312 + 34 * n}" text-anchor="middle" font-size="26"'
        f' font-weight="600" font-family="system-ui, sans-serif" fill="#fff">'
        f"{escape(line)}</text>"
        for n, line in enumerate(_title_lines(product.title))
    )
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 400 400" width="400" height="400"'
        f' role="img" aria-label="{escape(product.title)}">'
        '<defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1">'
        f'<stop offset="0" stop-color="{light}"/><stop offset="1" stop-color="{dark}"/>'
        "</linearGradient></defs>"
        '<rect width="400" height="400" fill="url(#g)"/>'
        '<circle cx="340" cy="60" r="120" fill="#fff" fill-opacity=".07"/>'
        '<circle cx="40" cy="380" r="90" fill="#000" fill-opacity=".06"/>'
        f"{icon}{text}</svg>"
    )


@lru_cache(maxsize=16)
def _asset(name: str) -> bytes | None:
    """A file of offer_service_tools/static/demo/ (a plain name: no directories, no dot files)."""
    if "/" in name or "\\" in name or name.startswith("."):
        return None
    try:
        return resources.files("offer_service_tools").joinpath("static", "demo", name).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None


# ---- the routes ---------------------------------------------------------------------------


def _page(html: str, status: int = 200) -> Response:
    return Response(html, status, headers=PAGE_HEADERS, media_type="text/html; charset=utf-8")


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status, media_type="application/json")


def _json_error(status: int, code: str, message: str) -> Response:
    return _json({"error": {"code": code, "message": message, "details": []}}, status)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def _purchasable(product: Product | None) -> bool:
    return product is not None and product.active and product.in_stock and not product.is_fee


class DemoUnavailable(Exception):
    """The demo store is not installed in this server's store."""


class Storefront:
    """The routes and the in-memory state (charges) of one app's demo storefront."""

    def __init__(self) -> None:
        self.charges = ChargeLog()
        self._charge_url_checked = False

    def routes(self) -> list[Route]:
        return [
            Route("/demo", self.to_home, methods=["GET"]),
            Route("/demo/", self.home, methods=["GET"]),
            Route("/demo/products/{product_id:path}", self.product, methods=["GET"]),
            Route("/demo/cart", self.cart, methods=["GET"]),
            Route("/demo/cart", self.update_cart, methods=["POST"]),
            Route("/demo/checkout", self.checkout, methods=["GET"]),
            Route("/demo/place-order", self.place_order, methods=["POST"]),
            Route("/demo/thank-you", self.thank_you, methods=["GET"]),
            Route("/demo/img/{name:path}", self.image, methods=["GET"]),
            Route("/demo/charge", self.charge, methods=["POST"]),
            Route("/demo/charges", self.list_charges, methods=["GET"]),
            Route("/demo/assets/{name}", self.asset, methods=["GET"]),
        ]

    # -- shared ---------------------------------------------------------------------------

    async def _record(self, request: Request) -> StoreRecord:
        """The demo store; on the first request, point its charge_url at this server."""
        e = engine(request)
        record = await e.store_by_key(DEMO_PUBLISHABLE_KEY)
        if record is None:
            raise DemoUnavailable
        if not self._charge_url_checked:
            url = own_charge_url(request.scope)
            current = record.rules.charge_url
            if url and current != url and _is_demo_charge_url(current):
                record = await e.store.set_rules(record.id, replace_rules(record.rules, url))
                await e.changed(record)
            self._charge_url_checked = True
        return record

    async def _cart(self, request: Request, record: StoreRecord) -> list[CartLine]:
        cart = parse_cart(request.cookies.get(CART_COOKIE))
        products = await engine(request).store.get_products(record.id, list(cart))
        lines = []
        for pid, qty in cart.items():
            product = products.get(pid)
            if product is not None and _purchasable(product):
                lines.append(CartLine(product, qty))
        return lines

    async def _render(
        self, request: Request, page: str, title: str, body: str, status: int = 200
    ) -> Response:
        cart = parse_cart(request.cookies.get(CART_COOKIE))
        html = layout(title, body, cart_count=sum(cart.values()), page=page)
        return _page(html, status)

    async def _message(self, request: Request, status: int, title: str, text: str) -> Response:
        return await self._render(request, "message", title, message_body(title, text), status)

    async def _unavailable(self, request: Request) -> Response:
        return await self._message(
            request, 503, "The demo store is not installed", "Start the server with the demo on."
        )

    # -- pages ----------------------------------------------------------------------------

    async def to_home(self, request: Request) -> Response:
        return _redirect("/demo/")

    async def home(self, request: Request) -> Response:
        try:
            record = await self._record(request)
        except DemoUnavailable:
            return await self._unavailable(request)
        store = engine(request).store
        products: list[Product] = []
        after: str | None = None
        while len(products) < 1000:
            page = await store.list_products(record.id, 200, after)
            products.extend(p for p in page if p.active and not p.is_fee)
            if len(page) < 200:
                break
            after = page[-1].id
        return await self._render(request, "home", "Shop", home_body(products))

    async def product(self, request: Request) -> Response:
        try:
            record = await self._record(request)
        except DemoUnavailable:
            return await self._unavailable(request)
        pid = request.path_params["product_id"]
        found = await engine(request).store.get_products(record.id, [pid])
        product = found.get(pid)
        if product is None or not product.active or product.is_fee:
            return await self._message(
                request, 404, "Product not found", "This product is not in the catalog."
            )
        return await self._render(request, "product", product.title, product_body(product))

    async def cart(self, request: Request) -> Response:
        try:
            record = await self._record(request)
        except DemoUnavailable:
            return await self._unavailable(request)
        lines = await self._cart(request, record)
        return await self._render(request, "cart", "Cart", cart_body(lines))

    async def update_cart(self, request: Request) -> Response:
        try:
            record = await self._record(request)
        except DemoUnavailable:
            return await self._unavailable(request)
        form = _form(await read_body(request, FORM_LIMIT))
        cart = parse_cart(request.cookies.get(CART_COOKIE))
        pid = form.get("product_id", "")
        action = form.get("action", "add")
        if action == "add":
            found = await engine(request).store.get_products(record.id, [pid])
            if _purchasable(found.get(pid)) and (pid in cart or len(cart) < MAX_CART_LINES):
                cart[pid] = min(
                    cart.get(pid, 0) + max(_quantity(form.get("quantity")), 1), MAX_QUANTITY
                )
        elif action == "set" and pid in cart:
            quantity = _quantity(form.get("quantity"), cart[pid])
            if quantity:
                cart[pid] = quantity
            else:
                del cart[pid]
        elif action == "remove":
            cart.pop(pid, None)
        response = _redirect("/demo/cart")
        self._set_cart(response, cart)
        return response

    @staticmethod
    def _set_cart(response: Response, cart: Mapping[str, int]) -> None:
        if cart:
            response.set_cookie(
                CART_COOKIE,
                format_cart(cart),
                max_age=30 * 24 * 3600,
                path="/demo",
                httponly=True,
                samesite="lax",
            )
        else:
            response.delete_cookie(CART_COOKIE, path="/demo", httponly=True, samesite="lax")

    async def checkout(self, request: Request) -> Response:
        try:
            record = await self._record(request)
        except DemoUnavailable:
            return await self._unavailable(request)
        lines = await self._cart(request, record)
        if not lines:
            return _redirect("/demo/cart")
        return await self._render(request, "checkout", "Checkout", checkout_body(lines))

    async def place_order(self, request: Request) -> Response:
        """What the merchant's backend does at payment: record the order, then show thanks."""
        try:
            record = await self._record(request)
        except DemoUnavailable:
            return await self._unavailable(request)
        form = _form(await read_body(request, FORM_LIMIT))
        lines = await self._cart(request, record)
        if not lines:
            return _redirect("/demo/cart")
        now = datetime.now(UTC)
        order = Order(
            id=f"web-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}",
            placed_at_ms=int(now.timestamp() * 1000),
            currency=lines[0].product.currency,
            lines=tuple(OrderLine(ln.product.id, ln.quantity, ln.product.price) for ln in lines),
            customer_id=(
                DECLINE_CUSTOMER
                if form.get("simulate_decline")
                else f"guest-{secrets.token_hex(4)}"
            ),
        )
        e = engine(request)
        await import_orders(e.store, record, [order], [])
        await e.changed(record)
        query = urlencode(
            {
                "order_id": order.id,
                "order_token": order_token(record.webhook_secret, record.id, order.id),
            }
        )
        response = _redirect(f"/demo/thank-you?{query}")
        self._set_cart(response, {})
        return response

    async def thank_you(self, request: Request) -> Response:
        try:
            record = await self._record(request)
        except DemoUnavailable:
            return await self._unavailable(request)
        order_id = request.query_params.get("order_id", "")
        token = request.query_params.get("order_token", "")
        if not order_id or not order_token_valid(
            record.webhook_secrets, record.id, order_id, token
        ):
            return await self._message(
                request, 403, "This order link is not valid", "Check the link in your email."
            )
        store = engine(request).store
        order = await store.get_order(record.id, order_id)
        if order is None:
            return await self._message(
                request, 404, "Order not found", "This order has not been recorded."
            )
        charges = self.charges.for_order(order.id)
        ids = {ln.product_id for ln in order.lines} | {c.product_id for c in charges}
        titles = {pid: p.title for pid, p in (await store.get_products(record.id, ids)).items()}
        body = thank_you_body(order, token, titles, charges)
        return await self._render(request, "thank_you", "Thank you", body)

    async def asset(self, request: Request) -> Response:
        name: str = request.path_params["name"]
        media_type = ASSET_TYPES.get(name.rpartition(".")[2])
        body = _asset(name) if media_type else None
        if body is None or media_type is None:
            return Response("no such file", 404, media_type="text/plain")
        return Response(body, headers=ASSET_HEADERS, media_type=media_type)

    async def image(self, request: Request) -> Response:
        name: str = request.path_params["name"]
        try:
            record = await self._record(request)
        except DemoUnavailable:
            return Response("demo store not installed", 503, media_type="text/plain")
        pid = name.removesuffix(".svg")
        found = (
            await engine(request).store.get_products(record.id, [pid])
            if name.endswith(".svg")
            else {}
        )
        product = found.get(pid)
        if product is None:
            return Response("no such image", 404, media_type="text/plain")
        return Response(product_svg(product), headers=SVG_HEADERS, media_type="image/svg+xml")

    # -- the merchant's charge endpoint -----------------------------------------------------

    async def charge(self, request: Request) -> Response:
        """API.md "The store's charge endpoint", as a merchant would implement it."""
        try:
            record = await self._record(request)
        except DemoUnavailable:
            return _json_error(503, "unavailable", "The demo store is not installed.")
        raw = await read_body(request, CHARGE_LIMIT)
        header = request.headers.get("x-offer-signature", "")
        if not verify(header, raw, record.webhook_secrets, time.time()):
            return _json_error(401, "bad_signature", "The X-Offer-Signature header is invalid.")
        self.charges.requests += 1
        request_body = _charge_request(raw)
        if request_body is None:
            return _json_error(422, "invalid_charge", "The charge request is malformed.")
        key = request_body["idempotency_key"]
        if key in self.charges.by_key:
            return _json({"charge_id": self.charges.by_key[key].charge_id})
        order = await engine(request).store.get_order(record.id, request_body["order_id"])
        if order is None:
            return _json_error(404, "unknown_order", "This store has no such order.")
        if order.customer_id == DECLINE_CUSTOMER:
            self.charges.declined += 1
            return _json_error(402, "card_declined", "The card on file was declined.")
        existing = self.charges.by_key.get(key)  # an identical request may have won meanwhile
        if existing is None:
            existing = Charge(
                charge_id="ch_demo_" + secrets.token_hex(8),
                idempotency_key=key,
                order_id=order.id,
                product_id=request_body["product_id"],
                quantity=request_body["quantity"],
                amount=request_body["amount"],
                offer_id=request_body["offer_id"],
                at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            self.charges.by_key[key] = existing
        return _json({"charge_id": existing.charge_id})

    async def list_charges(self, request: Request) -> Response:
        """Demo only: what /demo/charge did (the browser tests count charges with it)."""
        order_id = request.query_params.get("order_id")
        charges = [
            asdict(c)
            for c in self.charges.by_key.values()
            if order_id is None or c.order_id == order_id
        ]
        return _json(
            {
                "requests": self.charges.requests,
                "declined": self.charges.declined,
                "charges": charges,
            }
        )


def _charge_request(raw: bytes) -> dict[str, Any] | None:
    """The charge body's fields, or None when one is missing or of the wrong type."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    amount = body.get("amount")
    strings = ("order_id", "product_id", "idempotency_key")
    if not all(isinstance(body.get(k), str) and body[k] for k in strings):
        return None
    quantity = body.get("quantity")
    if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
        return None
    if not (
        isinstance(amount, dict)
        and isinstance(amount.get("amount"), int)
        and isinstance(amount.get("currency"), str)
    ):
        return None
    offer_id = body.get("offer_id")
    return {
        "order_id": body["order_id"],
        "product_id": body["product_id"],
        "quantity": quantity,
        "amount": {"amount": amount["amount"], "currency": amount["currency"]},
        "offer_id": offer_id if isinstance(offer_id, str) else "",
        "idempotency_key": body["idempotency_key"],
    }


def routes() -> list[Route]:
    """The demo storefront's routes, with fresh state (one set per app)."""
    return Storefront().routes()


__all__ = ["charge_url_from_env", "routes"]
