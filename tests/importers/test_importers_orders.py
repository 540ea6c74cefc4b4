"""Native orders JSON importer."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from offer_service.domain.orders import Order, OrderLine
from offer_service.exceptions import ValidationFailed
from offer_service.importers import Rejection, parse_orders_json

NOV_25_18H_MS = int(datetime(2026, 11, 25, 18, 0, tzinfo=UTC).timestamp()) * 1000


def order(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": "o-1",
        "placed_at": "2026-11-25T18:00:00Z",
        "currency": "USD",
        "lines": [{"product_id": "cam", "quantity": 1, "price": 49900}],
    }
    base.update(fields)
    return base


def test_an_order_in_the_api_shape_becomes_an_order() -> None:
    body = orjson.dumps(
        [
            order(
                customer_id="cus_1",
                visitor_id="v_1",
                lines=[
                    {"product_id": "cam", "quantity": 1, "price": 49900},
                    {"product_id": "sd-128", "quantity": 2, "price": 2999},
                ],
                status="shipped",
            )
        ]
    )

    result = parse_orders_json(body)

    assert result.rejected == []
    assert result.items == [
        Order(
            id="o-1",
            placed_at_ms=NOV_25_18H_MS,
            currency="USD",
            lines=(OrderLine("cam", 1, 49900), OrderLine("sd-128", 2, 2999)),
            customer_id="cus_1",
            visitor_id="v_1",
            status="shipped",
        )
    ]
    assert result.items[0].total == 49900 + 2 * 2999


@pytest.mark.parametrize(
    ("placed_at", "expected_ms"),
    [
        ("2026-11-25T18:00:00Z", NOV_25_18H_MS),
        ("2026-11-25T18:00:00", NOV_25_18H_MS),  # naive: UTC
        ("2026-11-25T19:00:00+01:00", NOV_25_18H_MS),
        ("2026-11-25T18:00:00.250Z", NOV_25_18H_MS + 250),
        ("2026-11-25", NOV_25_18H_MS - 18 * 3_600_000),
    ],
)
def test_placed_at_is_converted_to_utc_epoch_ms(placed_at: str, expected_ms: int) -> None:
    result = parse_orders_json(orjson.dumps([order(placed_at=placed_at)]))

    assert result.items[0].placed_at_ms == expected_ms


def test_a_bad_line_rejects_its_order_naming_the_line_field_and_keeps_the_others() -> None:
    body = (
        b"[\n"
        + orjson.dumps(order(id="good-1"))
        + b",\n"
        + orjson.dumps(
            order(
                id="bad",
                lines=[
                    {"product_id": "a", "quantity": 1, "price": 100},
                    {"product_id": "b", "quantity": 1, "price": 9.99},
                ],
            )
        )
        + b",\n"
        + orjson.dumps(order(id="good-2"))
        + b"\n]"
    )

    result = parse_orders_json(body)

    assert [o.id for o in result.items] == ["good-1", "good-2"]
    assert len(result.rejected) == 1
    rejection = result.rejected[0]
    assert (rejection.index, rejection.line, rejection.field) == (1, 3, "lines[1].price")
    assert rejection.message == (
        "lines[1].price must be an integer amount in minor units (2999 for 29.99), not 9.99."
    )


def test_every_bad_field_of_an_order_is_reported() -> None:
    bad = order(
        placed_at="yesterday",
        currency="dollars",
        lines=[
            {"product_id": "a", "quantity": 0, "price": 100},
            {"product_id": "b", "quantity": True, "price": -1},
        ],
        status="lost",
    )

    result = parse_orders_json(orjson.dumps([bad]))

    assert result.items == []
    assert {r.field: r.message for r in result.rejected} == {
        "placed_at": "placed_at must be an ISO 8601 date-time such as 2026-11-25T18:00:00Z,"
        " not 'yesterday'.",
        "currency": "currency must be a three-letter ISO 4217 currency code such as USD.",
        "lines[0].quantity": "lines[0].quantity must be at least 1.",
        "lines[1].quantity": "lines[1].quantity must be a whole number.",
        "lines[1].price": "lines[1].price must not be negative.",
        "status": "status must be 'placed', 'shipped', 'delivered' or 'returned'.",
    }
    assert {r.index for r in result.rejected} == {0}
    assert result.rejected_count == 1


def test_an_order_needs_lines_an_id_a_date_and_a_currency() -> None:
    result = parse_orders_json(b'[{"lines": []}]')

    assert sorted(r.field or "" for r in result.rejected) == [
        "currency",
        "id",
        "lines",
        "placed_at",
    ]
    messages = {r.field: r.message for r in result.rejected}
    assert messages["lines"] == "lines must not be empty."
    assert messages["id"] == "id is required."


def test_a_returned_order_is_still_an_order() -> None:
    result = parse_orders_json(orjson.dumps([order(status="returned")]))

    assert [(o.id, o.status) for o in result.items] == [("o-1", "returned")]


def test_currency_is_upper_cased_and_unknown_fields_are_rejected() -> None:
    body = orjson.dumps([order(id="a", currency="eur"), order(id="b", coupon="X")])

    result = parse_orders_json(body)

    assert [(o.id, o.currency) for o in result.items] == [("a", "EUR")]
    assert result.rejected == [
        Rejection("coupon is not a known field.", line=1, index=1, field="coupon")
    ]


def test_a_repeated_order_id_is_rejected() -> None:
    result = parse_orders_json(orjson.dumps([order(), order()]))

    assert len(result.items) == 1
    assert [(r.index, r.field) for r in result.rejected] == [(1, "id")]
    assert result.rejected[0].message == "id 'o-1' was already used by item 0."


@pytest.mark.parametrize("body", [b'{"orders": []}', b"[", b"42"])
def test_a_body_that_is_not_a_json_list_raises_validation_failed(body: bytes) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_orders_json(body)

    assert caught.value.code == "validation_error"
    assert caught.value.details[0]["field"] == "body"
