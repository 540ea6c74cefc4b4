"""The email-safe HTML fragment of a touchpoint's offers, for an ESP to paste into a template.

A table with inline styles only (templates/email_fragment.html: email clients strip scripts and
stylesheets); every catalog value is escaped, every link and image is an absolute https URL
(anything else is left out), and every image has alt text.
"""

from __future__ import annotations

from collections.abc import Sequence

from offer_service.domain.surfaces import SURFACES, Surface
from offer_service.journeys.links import LinkedOffer
from offer_service.templating import environment

EMAIL_MAX = SURFACES[Surface.EMAIL].hard_max


def fragment(offers: Sequence[LinkedOffer], heading: str = "") -> str:
    """The offers (at most the email surface's hard max, 5) as a table; "" without offers.
    Offers whose link is not absolute https are left out."""
    shown = [o for o in offers if o.click_url.startswith("https://")][:EMAIL_MAX]
    if not shown:
        return ""
    template = environment("offer_service.journeys").get_template("email_fragment.html")
    return template.render(offers=shown, heading=heading)
