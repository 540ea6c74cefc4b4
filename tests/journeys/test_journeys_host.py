"""A forged Host header cannot poison a shared cache: with OFFER_PUBLIC_URL set, tracked links and
feed URLs ignore the Host; unset, they are made from it, and every answer holding them says
`Vary: Host` and is never publicly cacheable."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from offer_service.domain.records import StoreRecord
from tests.conftest import LiveServer
from tests.journey_flows import PUBLIC_URL, admin, iso, lifecycle, place, serve_shop, shop

__all__ = ["shop"]

FORGED = {"Host": "evil.example"}


@pytest.fixture
def shop_without_public_url(tmp_path: Path) -> Iterator[tuple[LiveServer, StoreRecord]]:
    yield from serve_shop(f"sqlite:///{tmp_path}/offers.db", public_url=None)


def shipped_order(c: httpx.Client, record: StoreRecord) -> str:
    """An order placed two days ago and shipped 12 hours ago; the store's feed key."""
    now = datetime.now(UTC)
    place(c, record, "o-1", ["cam", "coffee"], placed=now - timedelta(days=2))
    lifecycle(c, record, "o-1", "shipped", iso(now - timedelta(hours=12)))
    key: str = c.get("/v1/admin/feed-key", headers=admin(record)).json()["feed_key"]
    return key


def host_answers(live: LiveServer, record: StoreRecord) -> dict[str, httpx.Response]:
    """Every answer that holds a tracked link or a feed URL, asked with a forged Host."""
    with live.client() as c:
        return _host_answers(c, record, shipped_order(c, record))


def _host_answers(c: httpx.Client, record: StoreRecord, key: str) -> dict[str, httpx.Response]:
    feed = f"/v1/feeds/{key}/shipping"
    answers = {
        "feed json": c.get(feed, params={"order_id": "o-1"}, headers=FORGED),
        "feed html": c.get(feed, params={"order_id": "o-1", "format": "html"}, headers=FORGED),
        "store feed": c.get(feed, headers=FORGED),
        "journey": c.get("/v1/journeys/o-1", headers={**admin(record), **FORGED}),
        "feed key": c.get("/v1/admin/feed-key", headers={**admin(record), **FORGED}),
        "feed key rotation": c.post(
            "/v1/admin/feed-key/rotate", headers={**admin(record), **FORGED}
        ),
    }
    etag = answers["feed json"].headers["etag"]
    answers["feed 304"] = c.get(
        feed, params={"order_id": "o-1"}, headers={**FORGED, "If-None-Match": etag}
    )
    return answers


def test_links_made_from_the_host_vary_by_host_and_are_never_shared(
    shop_without_public_url: tuple[LiveServer, StoreRecord],
) -> None:
    answers = host_answers(*shop_without_public_url)
    assert answers["feed 304"].status_code == 304
    for name, r in answers.items():
        assert r.status_code in (200, 304), (name, r.text)
        assert "host" in r.headers["vary"].lower(), name
        cache = r.headers["cache-control"]
        assert "public" not in cache and ("private" in cache or "no-store" in cache), name
    assert answers["feed json"].headers["cache-control"] == "private, max-age=300"
    # The links do follow the Host here: that is why no shared cache may keep them.
    offers = answers["feed json"].json()["offers"]
    assert offers and all(o["click_url"].startswith("http://evil.example/r/") for o in offers)


def test_with_a_public_url_a_forged_host_changes_no_link(
    shop: tuple[LiveServer, StoreRecord],
) -> None:
    answers = host_answers(*shop)
    for name, r in answers.items():
        assert r.status_code in (200, 304), (name, r.text)
        assert "evil.example" not in r.text, name
        assert "host" not in r.headers.get("vary", "").lower(), name
    assert answers["feed json"].headers["cache-control"] == "public, max-age=300"
    assert answers["journey"].headers["cache-control"] == "no-store"
    offers = answers["feed json"].json()["offers"]
    assert offers and all(o["click_url"].startswith(f"{PUBLIC_URL}/r/") for o in offers)
    assert answers["feed key"].json()["feed_url"].startswith(f"{PUBLIC_URL}/v1/feeds/")
