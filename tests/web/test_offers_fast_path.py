"""The GET /v1/offers parser: what its fast case (`fast_query`) accepts, OffersRequest accepts
with the same fields; everything else is left to the model (and its 422), and `offers_request`
answers with the one or the other."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from pydantic import ValidationError

from offer_service.exceptions import ValidationFailed
from offer_service.web.endpoints.offers import fast_query, offers_request
from offer_service.web.models import OffersRequest

LONG = "x" * 129
QUERIES = [
    "key=pk&surface=product_page&product_id=85123A&visitor_id=v-1&limit=4",
    "surface=product_page&product_id=p",
    "surface=product_page&product_id=p&exclude=a,b,,c&customer_id=c1&unknown=1",
    "surface=cart&items=a,b,c&visitor_id=v",
    "surface=checkout&items=a",
    "surface=cart&items=,,",
    "surface=cart",
    "surface=product_page",
    "surface=product_page&product_id=p&limit=0",
    "surface=product_page&product_id=p&limit=1001",
    "surface=product_page&product_id=p&limit=1000",
    "surface=product_page&product_id=p&limit=004",
    "surface=product_page&product_id=p&limit=four",
    "surface=product_page&product_id=p&limit=-1",
    f"surface=product_page&product_id={LONG}",
    f"surface=product_page&product_id=p&visitor_id={LONG}",
    f"surface=product_page&product_id=p&exclude=a,{LONG}",
    "surface=product_page&product_id=p&exclude=" + ",".join(f"e{i}" for i in range(101)),
    "surface=cart&items=" + ",".join(f"i{i}" for i in range(101)),
    "surface=thank_you&order_id=o&order_token=t",
    "surface=email&order_id=o&order_token=t",
    "surface=nowhere&product_id=p",
    "surface=product_page&product_id=p&product_id=q",
    "surface=product_page&product_id=",
    "surface=product_page&product_id=a%20b",
    "surface=product_page&product_id=a+b",
    "surface=product_page&product_id=caf\u00e9",
    "surface=product_page&product_id=p&visitor_id",
    "surface=product_page&product_id=p&&visitor_id=v",
    "",
]


@pytest.mark.parametrize("query", QUERIES)
def test_the_fast_parser_agrees_with_the_model_or_leaves_it_the_request(query: str) -> None:
    fast = fast_query(query.encode("utf-8"))
    try:
        model = OffersRequest.model_validate(dict(parse_qsl(query)))
    except ValidationError:
        assert fast is None  # the model explains the 422
        with pytest.raises(ValidationFailed):
            offers_request(query.encode("utf-8"))
        return
    if fast is None:
        assert isinstance(offers_request(query.encode("utf-8")), OffersRequest)  # the model's
        return
    assert offers_request(query.encode("utf-8")) == fast
    assert fast.surface == model.surface
    assert fast.key == model.key
    assert fast.product_id == model.product_id
    assert fast.visitor_id == model.visitor_id
    assert fast.customer_id == model.customer_id
    assert fast.limit == model.limit
    assert fast.exclude == model.exclude
    assert fast.order_id is None and fast.order_token is None
    if model.items is None:
        assert fast.items is None
    else:
        assert fast.items is not None
        assert [i.model_dump() for i in fast.items] == [i.model_dump() for i in model.items]


def test_the_snippet_s_queries_take_the_fast_path() -> None:
    for query in QUERIES[:5]:
        assert fast_query(query.encode()) is not None, query


@pytest.mark.parametrize("byte", [b"\t", b"\x01", b"\x7f", b" ", b"%", b"+", b"\xc3\xa9", b"\x80"])
def test_a_byte_outside_plain_printable_ascii_is_left_to_the_model(byte: bytes) -> None:
    assert fast_query(b"surface=product_page&product_id=p" + byte + b"q") is None
    assert fast_query(b"surface=product_page&product_id=pq") is not None
