"""OpenAPI links: how one operation's answer feeds the next (the offers' tokens into events,
accepts and declines; a catalog page's ids into neighbours and offers; a feed key into feeds).

They document the flows a client follows, and let a stateful fuzzer chain real values instead
of random ones."""

from __future__ import annotations

from typing import Any

OFFER_TOKEN = "$response.body#/offers/0/token"
FIRST_PRODUCT = "$response.body#/products/0/id"


def operation_id(method: str, path: str) -> str:
    return f"{method}_{path}"


def _link(method: str, path: str, description: str, **definition: Any) -> dict[str, Any]:
    return {"operationId": operation_id(method, path), "description": description, **definition}


_OFFER_FOLLOW_UPS = {
    "RecordImpression": _link(
        "post",
        "/v1/events",
        "The snippet reports each offer shown with its token (and `ts`, its clock).",
        requestBody={
            "events": [
                {"id": "impression-1", "type": "impression", "token": OFFER_TOKEN},
            ]
        },
    ),
    "Decline": _link(
        "post",
        "/v1/decline",
        "The shopper says no to the first offer.",
        requestBody={"token": OFFER_TOKEN},
    ),
    "Accept": _link(
        "post",
        "/v1/accept",
        "One-click accept of the first offer (post-purchase surfaces only).",
        requestBody={"token": OFFER_TOKEN},
    ),
}

# (method, path) -> status -> link name -> link
LINKS: dict[tuple[str, str], dict[int, dict[str, Any]]] = {
    ("get", "/v1/offers"): {200: _OFFER_FOLLOW_UPS},
    ("post", "/v1/offers"): {200: _OFFER_FOLLOW_UPS},
    ("post", "/v1/decline"): {
        200: {
            "AcceptDownsell": _link(
                "post",
                "/v1/accept",
                "Accept the cheaper alternative offered after a decline.",
                requestBody={"token": "$response.body#/downsell/token"},
            )
        }
    },
    ("get", "/v1/admin/catalog"): {
        200: {
            "Neighbors": _link(
                "get",
                "/v1/admin/products/{product_id}/neighbors",
                "The first product's co-purchase neighbours.",
                parameters={"path.product_id": FIRST_PRODUCT},
            ),
            "ProductPageOffers": _link(
                "get",
                "/v1/offers",
                "Offers on the first product's page.",
                parameters={"query.surface": "product_page", "query.product_id": FIRST_PRODUCT},
            ),
        }
    },
    ("get", "/v1/admin/products/{product_id}/neighbors"): {
        200: {
            "NeighborPageOffers": _link(
                "get",
                "/v1/offers",
                "Offers on the first neighbour's page.",
                parameters={
                    "query.surface": "product_page",
                    "query.product_id": "$response.body#/neighbors/0/product_id",
                },
            )
        }
    },
    ("post", "/v1/admin/orders/{order_id}/events"): {
        200: {
            "Journey": _link(
                "get",
                "/v1/journeys/{order_id}",
                "The order's timeline after the event.",
                parameters={"path.order_id": "$response.body#/order_id"},
            )
        }
    },
    ("get", "/v1/admin/feed-key"): {
        200: {
            "Feed": _link(
                "get",
                "/v1/feeds/{feed_key}/{touchpoint}",
                "A touchpoint's feed, as an email tool fetches it.",
                parameters={"path.feed_key": "$response.body#/feed_key"},
            )
        }
    },
    ("post", "/v1/admin/feed-key/rotate"): {
        200: {
            "Feed": _link(
                "get",
                "/v1/feeds/{feed_key}/{touchpoint}",
                "The new key opens the feeds at once.",
                parameters={"path.feed_key": "$response.body#/feed_key"},
            )
        }
    },
}
