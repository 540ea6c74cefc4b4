"""Imports on the wire: answers stay small however many rows are bad."""

from __future__ import annotations

from offer_service.importers.result import MAX_LISTED_REJECTIONS
from tests.conftest import LiveServer

BAD_ROWS = 100_000


def admin(secret_key: str, content_type: str = "application/json") -> dict[str, str]:
    return {"Authorization": f"Bearer {secret_key}", "Content-Type": content_type}


def test_a_catalog_of_bad_rows_gets_a_small_answer_that_counts_them_all(
    server: LiveServer,
) -> None:
    record = server.create_store("Importer")
    body = "id,title,price\n" + "".join(f"p{n},Product {n},29.99\n" for n in range(BAD_ROWS))

    with server.client(timeout=120) as c:
        r = c.put("/v1/admin/catalog", content=body, headers=admin(record.secret_key, "text/csv"))

    assert r.status_code == 200
    answer = r.json()
    assert answer["upserted"] == 0
    assert answer["rejected_total"] == BAD_ROWS
    assert len(answer["rejected"]) == MAX_LISTED_REJECTIONS
    assert answer["rejected"][0] == {
        "line": 2,
        "field": "price",
        "message": "price must be a whole number of minor units (2999 for 29.99), not '29.99'.",
    }
    # Listing every rejection answered 65 MB for a 2 MB body.
    assert len(r.content) < 200_000


def test_orders_of_bad_items_get_a_small_answer_that_counts_them_all(server: LiveServer) -> None:
    record = server.create_store("Importer")
    body = b"[" + b",".join([b'{"id": "o", "currency": "EUR"}'] * BAD_ROWS) + b"]"

    with server.client(timeout=120) as c:
        r = c.post("/v1/admin/orders", content=body, headers=admin(record.secret_key))

    assert r.status_code == 200
    answer = r.json()
    assert (answer["imported"], answer["order_tokens"]) == (0, {})
    assert answer["rejected_total"] == 2 * BAD_ROWS  # placed_at and lines are missing
    assert len(answer["rejected"]) == MAX_LISTED_REJECTIONS
    assert len(r.content) < 200_000


def test_a_good_import_counts_no_rejections(server: LiveServer) -> None:
    record = server.create_store("Importer")
    body = "id,title,price\n" + "".join(f"p{n},Product {n},{n + 1}\n" for n in range(2_500))

    with server.client() as c:
        r = c.put("/v1/admin/catalog", content=body, headers=admin(record.secret_key, "text/csv"))
        page = c.get("/v1/admin/catalog", params={"limit": 1000}, headers=admin(record.secret_key))

    assert r.json() == {"upserted": 2_500, "rejected": [], "rejected_total": 0}
    assert len(page.json()["products"]) == 1000
