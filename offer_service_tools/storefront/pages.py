"""The demo shop's HTML pages, rendered from templates/storefront/ under a strict CSP."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from starlette.responses import Response

from offer_service.domain.money import format_money
from offer_service.domain.orders import Order
from offer_service.domain.products import Product
from offer_service.templating import environment
from offer_service_tools.charge_double import Charge
from offer_service_tools.demo import CATALOG, DEMO_PUBLISHABLE_KEY
from offer_service_tools.storefront.cart import MAX_QUANTITY, CartLine, subtotal
from offer_service_tools.storefront.charge import DECLINE_CUSTOMER

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
SHOP_NAME = "Field & Kettle"
# Departments of the demo catalog, in shop order; categories outside them form their own.
DEPARTMENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Cameras & gear", ("cameras", "memory", "camera-accessories", "bags", "tripods")),
    ("Coffee", ("coffee", "coffee-gear")),
    ("Skincare", ("skincare",)),
)
_CATALOG_ORDER = {p.id: n for n, p in enumerate(CATALOG)}
# (title, quantity, line total, currency): one line of an order summary.
SummaryLine = tuple[str, int, int, str]


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


def html_response(html: str, status: int = 200) -> Response:
    return Response(html, status, headers=PAGE_HEADERS, media_type="text/html; charset=utf-8")


def render(name: str, *, title: str, page: str, cart_count: int, **context: Any) -> str:
    """Template `storefront/<name>.html` in the shop's layout."""
    template = environment("offer_service_tools").get_template(f"storefront/{name}.html")
    return template.render(
        title=title,
        page=page,
        cart_count=cart_count,
        shop_name=SHOP_NAME,
        publishable_key=DEMO_PUBLISHABLE_KEY,
        max_quantity=MAX_QUANTITY,
        decline_customer=DECLINE_CUSTOMER,
        product_href=product_href,
        image_href=image_href,
        **context,
    )


def home(products: Sequence[Product], cart_count: int) -> str:
    groups: dict[str, list[Product]] = {}
    for product in sorted(products, key=_shop_order):
        groups.setdefault(department(product.category), []).append(product)
    return render(
        "home", title="Shop", page="home", cart_count=cart_count, departments=groups.items()
    )


def product(item: Product, cart_count: int) -> str:
    return render(
        "product",
        title=item.title,
        page="product",
        cart_count=cart_count,
        product=item,
        department=department(item.category),
    )


def _lines_context(lines: Sequence[CartLine]) -> dict[str, Any]:
    return {
        "lines": lines,
        "subtotal": format_money(*subtotal(lines)),
        "items": ",".join(dict.fromkeys(line.product.id for line in lines)),
        "summary": [(ln.product.title, ln.quantity, ln.total, ln.product.currency) for ln in lines],
    }


def cart(lines: Sequence[CartLine], cart_count: int) -> str:
    return render("cart", title="Cart", page="cart", cart_count=cart_count, **_lines_context(lines))


def checkout(lines: Sequence[CartLine], cart_count: int) -> str:
    return render(
        "checkout",
        title="Checkout",
        page="checkout",
        cart_count=cart_count,
        **_lines_context(lines),
    )


def thank_you(
    order: Order,
    token: str,
    titles: Mapping[str, str],
    charges: Sequence[Charge],
    cart_count: int,
) -> str:
    summary: list[SummaryLine] = [
        (
            titles.get(ln.product_id, ln.product_id),
            ln.quantity,
            ln.price * ln.quantity,
            order.currency,
        )
        for ln in order.lines
    ]
    added: list[SummaryLine] = [
        (
            titles.get(c.product_id, c.product_id),
            c.quantity,
            c.amount,
            c.currency,
        )
        for c in charges
    ]
    return render(
        "thank_you",
        title="Thank you",
        page="thank_you",
        cart_count=cart_count,
        order=order,
        token=token,
        summary=summary,
        added=added,
        declined=order.customer_id == DECLINE_CUSTOMER,
    )


def message(title: str, text: str, cart_count: int) -> str:
    return render("message", title=title, page="message", cart_count=cart_count, text=text)
