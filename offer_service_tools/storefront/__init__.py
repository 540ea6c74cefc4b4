"""The demo storefront at /demo/: a small shop that uses the snippet exactly as a merchant would.

Pages are rendered server side from Jinja2 templates with autoescape (pages.py); the only
scripts are static files (the queue stub, the snippet, a tiny activity log), so the pages are
served under a strict Content-Security-Policy with no inline script or style at all.

- `/demo/`, `/demo/products/{id}`, `/demo/cart`, `/demo/checkout`, `/demo/thank-you`: the shop.
  The cart lives in a first-party cookie that the server sets (`POST /demo/cart`, cart.py);
  placing an order (`POST /demo/place-order`) records it in the demo store exactly as `POST
  /v1/admin/orders` would, then redirects to the thank-you page with the order's token.
- `/demo/img/{id}.svg`: a generated tile per product; `/demo/assets/{name}`: static files
  (assets.py).
- `/demo/charge` and `/demo/charges`: the charge endpoint a merchant implements (charge.py).
"""

from __future__ import annotations

from offer_service_tools.storefront.charge import charge_url_from_env
from offer_service_tools.storefront.routes import routes

__all__ = ["charge_url_from_env", "routes"]
