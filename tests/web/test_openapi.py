"""/openapi.json is a valid OpenAPI 3.1 document generated from the validating models."""

from __future__ import annotations

from openapi_spec_validator import validate

from offer_service.web.models import OffersRequest
from offer_service.web.openapi import document
from tests.conftest import LiveServer


def test_openapi_document_is_valid_and_covers_every_route(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        spec = c.get("/openapi.json").json()
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    expected = {
        ("get", "/v1/offers"),
        ("post", "/v1/offers"),
        ("put", "/v1/admin/catalog"),
        ("get", "/v1/admin/catalog"),
        ("post", "/v1/admin/orders"),
        ("post", "/v1/admin/returns"),
        ("get", "/v1/admin/products/{product_id}/neighbors"),
        ("put", "/v1/admin/rules"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("post", "/v1/admin/orders/{order_id}/events"),
        ("post", "/v1/admin/customers/{customer_id}/sms-consent"),
        ("get", "/v1/admin/customers/{customer_id}/sms-consent"),
        ("get", "/v1/admin/feed-key"),
        ("post", "/v1/admin/feed-key/rotate"),
        ("get", "/v1/journeys/{order_id}"),
        ("get", "/v1/feeds/{feed_key}/{touchpoint}"),
        ("get", "/r/{code}"),
    }
    present = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert expected <= present


def test_the_offers_body_schema_is_the_validating_models(demo_server: LiveServer) -> None:
    with demo_server.client() as c:
        spec = c.get("/openapi.json").json()
    schema = spec["components"]["schemas"]["OffersRequest"]
    assert set(schema["properties"]) == set(OffersRequest.model_fields)
    assert schema["properties"]["limit"]["anyOf"][0]["minimum"] == 1
    surfaces = spec["components"]["schemas"]["Surface"]["enum"]
    assert surfaces == ["product_page", "cart", "checkout", "thank_you", "email", "sms"]


def test_every_link_names_an_operation_of_the_document_and_its_parameters() -> None:
    spec = document()
    operations = {
        op["operationId"]: (path, op) for path, ops in spec["paths"].items() for op in ops.values()
    }
    links = [
        link
        for ops in spec["paths"].values()
        for op in ops.values()
        for answer in op["responses"].values()
        for link in answer.get("links", {}).values()
    ]
    assert len(links) >= 10
    for link in links:
        assert link["operationId"] in operations, link
        path, op = operations[link["operationId"]]
        declared = {(p["in"], p["name"]) for p in op.get("parameters", [])}
        for name in link.get("parameters", {}):
            where, _, param = name.partition(".")
            assert (where, param) in declared or f"{{{param}}}" in path, (link, name)
        if "requestBody" in link:
            assert "requestBody" in op, link
