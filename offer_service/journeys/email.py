"""The email-safe HTML fragment of a touchpoint's offers, for an ESP to paste into a template.

Email clients strip scripts and stylesheets and render tables best, so the fragment is a
table with inline styles only; every value from the catalog is escaped (a title cannot inject
markup), every link and image is an absolute https URL (anything else is left out), and every
image has alt text.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from offer_service.domain.surfaces import SURFACES, Surface
from offer_service.journeys.links import LinkedOffer, format_money

EMAIL_MAX = SURFACES[Surface.EMAIL].hard_max

_TABLE = (
    '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0"'
    ' style="border-collapse:collapse;max-width:600px;font-family:Arial,Helvetica,sans-serif">'
)
_CELL = 'style="padding:12px 8px;border-top:1px solid #e5e5e5;vertical-align:top"'
_BUTTON = (
    "display:inline-block;padding:8px 16px;background:#111111;color:#ffffff;"
    "text-decoration:none;border-radius:4px;font-size:14px"
)


def _attr(value: str) -> str:
    return escape(value, quote=True)


def _row(offer: LinkedOffer) -> str:
    href = _attr(offer.click_url)
    title = escape(offer.title)
    image = ""
    if offer.image_url.startswith("https://"):
        image = (
            f'<a href="{href}"><img src="{_attr(offer.image_url)}" alt="{_attr(offer.title)}"'
            ' width="96" height="96" style="display:block;border:0;width:96px;height:96px"></a>'
        )
    price = escape(format_money(offer.offer_price, offer.currency))
    if offer.discount_pct > 0:
        was = escape(format_money(offer.price, offer.currency))
        price = (
            f'<s style="color:#888888">{was}</s> <strong>{price}</strong>'
            f" ({offer.discount_pct}% off)"
        )
    else:
        price = f"<strong>{price}</strong>"
    return (
        f'<tr><td width="104" {_CELL}>{image}</td>'
        f"<td {_CELL}>"
        f'<a href="{href}" style="color:#111111;font-size:16px;text-decoration:none">{title}</a>'
        f'<div style="color:#555555;font-size:13px;padding:4px 0">{escape(offer.reason)}</div>'
        f'<div style="font-size:14px;padding:0 0 8px">{price}</div>'
        f'<a href="{href}" style="{_BUTTON}">Shop now</a>'
        "</td></tr>"
    )


def fragment(offers: Sequence[LinkedOffer], heading: str = "") -> str:
    """The offers (at most the email surface's hard max, 5) as a table; "" without offers.
    Offers whose link is not absolute https are left out."""
    rows = [_row(o) for o in offers if o.click_url.startswith("https://")][:EMAIL_MAX]
    if not rows:
        return ""
    head = ""
    if heading:
        head = (
            '<tr><td colspan="2" style="padding:8px;font-size:18px;font-weight:bold">'
            f"{escape(heading)}</td></tr>"
        )
    return _TABLE + head + "".join(rows) + "</table>"
