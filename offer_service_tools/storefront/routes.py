"""The demo storefront's routes: the shop's pages, the cart, placing an order, its files."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlencode

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from offer_service.commerce.ingest import import_orders
from offer_service.commerce.redeem import redeem
from offer_service.domain.orders import Order, OrderLine
from offer_service.domain.products import Product
from offer_service.domain.records import StoreRecord
from offer_service.domain.tokens import order_token, order_token_valid
from offer_service.web.endpoints.common import engine, read_body
from offer_service_tools.demo import DEMO_PUBLISHABLE_KEY, replace_rules
from offer_service_tools.storefront import assets, pages
from offer_service_tools.storefront.cart import (
    CART_COOKIE,
    CART_ID_COOKIE,
    MAX_CART_LINES,
    MAX_OFFER_TOKENS,
    MAX_QUANTITY,
    MAX_TOKEN_CHARS,
    OFFERS_COOKIE,
    CartLine,
    parse_cart,
    parse_offers,
    purchasable,
    quantity,
    set_cart,
    set_offers,
)
from offer_service_tools.storefront.charge import (
    DECLINE_CUSTOMER,
    ChargeEndpoint,
    is_demo_charge_url,
    own_charge_url,
)

FORM_LIMIT = 16 * 1024
# The snippet's first-party visitor cookie: the order carries it, so the report can attribute
# the order and compare the holdout group (README, "Taking an offer").
VISITOR_COOKIE = "offer_vid"
CART_FULL = "The cart holds as many offers as it can; check out or remove one first."


def _form(raw: bytes) -> dict[str, str]:
    fields = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def _cart_count(request: Request) -> int:
    offers = len(parse_offers(request.cookies.get(OFFERS_COOKIE)))
    return sum(parse_cart(request.cookies.get(CART_COOKIE)).values()) + offers


def _cart_id(request: Request) -> str:
    found = request.cookies.get(CART_ID_COOKIE, "")
    return found if 0 < len(found) <= 64 else f"demo-{secrets.token_hex(8)}"


class Storefront:
    """The routes and the in-memory state (charges) of one app's demo storefront."""

    def __init__(self) -> None:
        self.charge_endpoint = ChargeEndpoint(self._record)
        self._charge_url_checked = False

    def routes(self) -> list[Route]:
        return [
            Route("/demo", self.to_home, methods=["GET"]),
            Route("/demo/", self.home, methods=["GET"]),
            Route("/demo/products/{product_id:path}", self.product, methods=["GET"]),
            Route("/demo/cart", self.cart, methods=["GET"]),
            Route("/demo/cart", self.update_cart, methods=["POST"]),
            Route("/demo/cart/offers", self.take_offer, methods=["POST"]),
            Route("/demo/checkout", self.checkout, methods=["GET"]),
            Route("/demo/place-order", self.place_order, methods=["POST"]),
            Route("/demo/thank-you", self.thank_you, methods=["GET"]),
            Route("/demo/img/{name:path}", self.image, methods=["GET"]),
            Route("/demo/charge", self.charge_endpoint.charge, methods=["POST"]),
            Route("/demo/charges", self.charge_endpoint.list_charges, methods=["GET"]),
            Route("/demo/assets/{name}", self.asset, methods=["GET"]),
        ]

    # -- shared ---------------------------------------------------------------------------

    async def _record(self, request: Request) -> StoreRecord | None:
        """The demo store (None when it is not installed); on the first request, point its
        charge_url at this server."""
        e = engine(request)
        record = await e.store_by_key(DEMO_PUBLISHABLE_KEY)
        if record is None:
            return None
        if not self._charge_url_checked:
            url = own_charge_url(request.scope)
            current = record.rules.charge_url
            if url and current != url and is_demo_charge_url(current):
                record = await e.store.set_rules(record.id, replace_rules(record.rules, url))
                await e.changed(record)
            self._charge_url_checked = True
        return record

    async def _cart(self, request: Request, record: StoreRecord) -> list[CartLine]:
        """The cart's lines at the shop's prices, then each offer taken at the price its token
        redeems to (what a merchant's cart does server-side: the browser never sets a price).
        An offer that no longer redeems is left out."""
        cart = parse_cart(request.cookies.get(CART_COOKIE))
        tokens = parse_offers(request.cookies.get(OFFERS_COOKIE))
        store = engine(request).store
        redeemed = await redeem(store, record, _cart_id(request), tokens) if tokens else []
        wanted = set(cart) | {ln["product_id"] for ln in redeemed if ln["valid"]}
        products = await store.get_products(record.id, list(wanted))
        lines = []
        for pid, qty in cart.items():
            product = products.get(pid)
            if product is not None and purchasable(product):
                lines.append(CartLine(product, qty))
        for ln in redeemed:
            product = products.get(ln["product_id"]) if ln["valid"] else None
            if product is not None:
                lines.append(
                    CartLine(
                        product,
                        ln["quantity"],
                        offer_price=ln["offer_price"]["amount"],
                        offer_token=tokens[ln["token_index"]],
                        discount_pct=ln["discount_pct"],
                    )
                )
        return lines

    @staticmethod
    def _message(request: Request, status: int, title: str, text: str) -> Response:
        html = pages.message(title, text, _cart_count(request))
        return pages.html_response(html, status)

    def _unavailable(self, request: Request) -> Response:
        return self._message(
            request, 503, "The demo store is not installed", "Start the server with the demo on."
        )

    # -- pages ----------------------------------------------------------------------------

    async def to_home(self, request: Request) -> Response:
        return _redirect("/demo/")

    async def home(self, request: Request) -> Response:
        record = await self._record(request)
        if record is None:
            return self._unavailable(request)
        store = engine(request).store
        products: list[Product] = []
        after: str | None = None
        while len(products) < 1000:
            page = await store.list_products(record.id, 200, after)
            products.extend(p for p in page if p.active and not p.is_fee)
            if len(page) < 200:
                break
            after = page[-1].id
        return pages.html_response(pages.home(products, _cart_count(request)))

    async def product(self, request: Request) -> Response:
        record = await self._record(request)
        if record is None:
            return self._unavailable(request)
        pid = request.path_params["product_id"]
        found = await engine(request).store.get_products(record.id, [pid])
        product = found.get(pid)
        if product is None or not product.active or product.is_fee:
            return self._message(
                request, 404, "Product not found", "This product is not in the catalog."
            )
        return pages.html_response(pages.product(product, _cart_count(request)))

    async def cart(self, request: Request) -> Response:
        record = await self._record(request)
        if record is None:
            return self._unavailable(request)
        lines = await self._cart(request, record)
        return pages.html_response(pages.cart(lines, _cart_count(request)))

    async def update_cart(self, request: Request) -> Response:
        record = await self._record(request)
        if record is None:
            return self._unavailable(request)
        form = _form(await read_body(request, FORM_LIMIT))
        cart = parse_cart(request.cookies.get(CART_COOKIE))
        pid = form.get("product_id", "")
        action = form.get("action", "add")
        if action == "add":
            found = await engine(request).store.get_products(record.id, [pid])
            if purchasable(found.get(pid)) and (pid in cart or len(cart) < MAX_CART_LINES):
                cart[pid] = min(
                    cart.get(pid, 0) + max(quantity(form.get("quantity")), 1), MAX_QUANTITY
                )
        elif action == "set" and pid in cart:
            new_quantity = quantity(form.get("quantity"), cart[pid])
            if new_quantity:
                cart[pid] = new_quantity
            else:
                del cart[pid]
        elif action == "remove":
            cart.pop(pid, None)
        response = _redirect("/demo/cart")
        set_cart(response, cart)
        if action == "remove_offer":
            tokens = parse_offers(request.cookies.get(OFFERS_COOKIE))
            left = [t for t in tokens if t != form.get("token")]
            set_offers(response, left, _cart_id(request))
        return response

    async def take_offer(self, request: Request) -> Response:
        """The snippet's add handler: `{"token": ...}` from an offer's add button. The token is
        redeemed for this cart at once, so a refused offer (expired, sold out, repriced) is
        said now, not at checkout; a taken one joins the cart at the price it redeemed to."""
        record = await self._record(request)
        if record is None:
            return JSONResponse({"code": "unavailable", "message": "No demo store."}, 503)
        try:
            token = orjson.loads(await read_body(request, FORM_LIMIT)).get("token")
        except (orjson.JSONDecodeError, AttributeError):
            token = None
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS:
            message = 'Send the offer\'s token as {"token": "..."}.'
            return JSONResponse({"code": "bad_request", "message": message}, 400)
        tokens = parse_offers(request.cookies.get(OFFERS_COOKIE))
        if token not in tokens and len(tokens) >= MAX_OFFER_TOKENS:
            return JSONResponse({"code": "cart_full", "message": CART_FULL}, 409)
        cart_id = _cart_id(request)
        lines = await redeem(engine(request).store, record, cart_id, [token])
        refused = next((ln for ln in lines if not ln["valid"]), None)
        if refused is not None:
            return JSONResponse({"code": refused["code"], "message": refused["message"]}, 409)
        if token not in tokens:
            tokens.append(token)
        count = sum(parse_cart(request.cookies.get(CART_COOKIE)).values()) + len(tokens)
        response = JSONResponse({"lines": lines, "cart_count": count})
        set_offers(response, tokens, cart_id)
        return response

    async def checkout(self, request: Request) -> Response:
        record = await self._record(request)
        if record is None:
            return self._unavailable(request)
        lines = await self._cart(request, record)
        if not lines:
            return _redirect("/demo/cart")
        return pages.html_response(pages.checkout(lines, _cart_count(request)))

    async def place_order(self, request: Request) -> Response:
        """What the merchant's backend does at payment: record the order, then show thanks."""
        record = await self._record(request)
        if record is None:
            return self._unavailable(request)
        form = _form(await read_body(request, FORM_LIMIT))
        lines = await self._cart(request, record)
        if not lines:
            return _redirect("/demo/cart")
        now = datetime.now(UTC)
        order = Order(
            id=f"web-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}",
            placed_at_ms=int(now.timestamp() * 1000),
            currency=lines[0].product.currency,
            lines=tuple(
                OrderLine(ln.product.id, ln.quantity, ln.unit_price, offer_token=ln.offer_token)
                for ln in lines
            ),
            customer_id=(
                DECLINE_CUSTOMER
                if form.get("simulate_decline")
                else f"guest-{secrets.token_hex(4)}"
            ),
            visitor_id=request.cookies.get(VISITOR_COOKIE) or None,
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
        set_cart(response, {})
        set_offers(response, [], "")
        return response

    async def thank_you(self, request: Request) -> Response:
        record = await self._record(request)
        if record is None:
            return self._unavailable(request)
        order_id = request.query_params.get("order_id", "")
        token = request.query_params.get("order_token", "")
        if not order_id or not order_token_valid(
            record.webhook_secrets, record.id, order_id, token
        ):
            return self._message(
                request, 403, "This order link is not valid", "Check the link in your email."
            )
        store = engine(request).store
        order = await store.get_order(record.id, order_id)
        if order is None:
            return self._message(
                request, 404, "Order not found", "This order has not been recorded."
            )
        charges = self.charge_endpoint.for_order(order.id)
        ids = {ln.product_id for ln in order.lines} | {c.product_id for c in charges}
        titles = {pid: p.title for pid, p in (await store.get_products(record.id, ids)).items()}
        html = pages.thank_you(order, token, titles, charges, _cart_count(request))
        return pages.html_response(html)

    # -- files ----------------------------------------------------------------------------

    async def asset(self, request: Request) -> Response:
        name: str = request.path_params["name"]
        media_type = assets.ASSET_TYPES.get(name.rpartition(".")[2])
        body = assets.asset(name) if media_type else None
        if body is None or media_type is None:
            return Response("no such file", 404, media_type="text/plain")
        return Response(body, headers=assets.ASSET_HEADERS, media_type=media_type)

    async def image(self, request: Request) -> Response:
        name: str = request.path_params["name"]
        record = await self._record(request)
        if record is None:
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
        svg = assets.product_svg(product)
        return Response(svg, headers=assets.SVG_HEADERS, media_type="image/svg+xml")


def routes() -> list[Route]:
    """The demo storefront's routes, with fresh state (one set per app)."""
    return Storefront().routes()
