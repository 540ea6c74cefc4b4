"""The OpenAPI 3.1 document, generated from the pydantic models that validate requests."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from offer_service import __version__
from offer_service.domain.policy import StoreRules
from offer_service.importers import OrderIn
from offer_service.journeys.timeline import FEED_TOUCHPOINTS
from offer_service.web.journey_models import (
    FeedAnswer,
    FeedKeyResponse,
    JourneyResponse,
    OrderEventRequest,
    OrderEventResponse,
    SmsConsentRequest,
    SmsConsentResponse,
)
from offer_service.web.models import (
    AcceptPending,
    AcceptRequest,
    AcceptResponse,
    CatalogImportResponse,
    CatalogPage,
    DeclineRequest,
    DeclineResponse,
    ErrorResponse,
    EventsRequest,
    EventsResponse,
    Health,
    KeyRotationRequest,
    NeighborsResponse,
    OffersRequest,
    OffersResponse,
    OrdersImportResponse,
    ProductOut,
    PublishableKeyResponse,
    ReturnRequest,
    ReturnsResponse,
    SecretKeyResponse,
    SigningKeyResponse,
    WebhookSecretResponse,
)
from offer_service.web.openapi_links import LINKS, operation_id
from offer_service.web.redeem_models import RedeemRequest, RedeemResponse
from offer_service.web.report_models import MetricsReport

REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    auth: str  # "publishable", "secret" or "none"
    responses: dict[int, type[BaseModel] | None]
    body: type[BaseModel] | None = None
    body_list_of: type[BaseModel] | None = None
    body_types: tuple[str, ...] = ("application/json",)
    query: type[BaseModel] | None = None
    params: list[dict[str, Any]] = field(default_factory=list)
    response_type: str = "application/json"
    # Other media types the success answer can take (as a string), chosen by `Accept`.
    alternatives: tuple[str, ...] = ()


def _param(name: str, where: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema}


ERRORS = {
    401: ErrorResponse,
    403: ErrorResponse,
    404: ErrorResponse,
    413: ErrorResponse,
    422: ErrorResponse,
    429: ErrorResponse,
}

OPERATIONS: list[Operation] = [
    Operation(
        "get",
        "/v1/offers",
        "Ranked offers for a surface",
        "publishable",
        {200: OffersResponse, **ERRORS},
        query=OffersRequest,
    ),
    Operation(
        "post",
        "/v1/offers",
        "Ranked offers for a surface (JSON body)",
        "publishable",
        {200: OffersResponse, **ERRORS},
        body=OffersRequest,
    ),
    Operation(
        "post",
        "/v1/events",
        "Record shopper events (text/plain from sendBeacon, or JSON)",
        "publishable",
        {
            202: EventsResponse,
            401: ErrorResponse,
            403: ErrorResponse,
            413: ErrorResponse,
            422: ErrorResponse,
            429: ErrorResponse,
        },
        body=EventsRequest,
        body_types=("application/json", "text/plain"),
    ),
    Operation(
        "post",
        "/v1/accept",
        "One-click post-purchase accept (Idempotency-Key header required)",
        "publishable",
        {
            200: AcceptResponse,
            202: AcceptPending,
            400: ErrorResponse,
            402: ErrorResponse,
            409: ErrorResponse,
            410: ErrorResponse,
            502: ErrorResponse,
            **ERRORS,
        },
        body=AcceptRequest,
        params=[
            _param(
                "Idempotency-Key",
                "header",
                {"type": "string", "minLength": 1, "maxLength": 255},
                required=True,
            )
        ],
    ),
    Operation(
        "post",
        "/v1/decline",
        "Decline an offer; on thank_you, get at most one cheaper alternative",
        "publishable",
        {200: DeclineResponse, 410: ErrorResponse, **ERRORS},
        body=DeclineRequest,
    ),
    Operation(
        "post",
        "/v1/offers/redeem",
        "Price the pre-purchase offers a cart took: one line per token (per bundle item), "
        "the same answer again for the same cart and token",
        "secret",
        {200: RedeemResponse, **ERRORS},
        body=RedeemRequest,
    ),
    Operation(
        "post",
        "/v1/admin/signing-key/rotate",
        "Make a new key sign offer tokens; the previous key keeps verifying, older ones retire",
        "secret",
        {200: SigningKeyResponse, 401: ErrorResponse, 403: ErrorResponse, 429: ErrorResponse},
    ),
    Operation(
        "post",
        "/v1/admin/webhook-secret/rotate",
        "Make a new webhook secret current; the previous one keeps verifying",
        "secret",
        {200: WebhookSecretResponse, 401: ErrorResponse, 403: ErrorResponse, 429: ErrorResponse},
    ),
    Operation(
        "put",
        "/v1/admin/catalog",
        "Upsert products (JSON list, native CSV or Shopify CSV)",
        "secret",
        {200: CatalogImportResponse, **ERRORS},
        body_list_of=ProductOut,
        body_types=("application/json", "text/csv"),
    ),
    Operation(
        "get",
        "/v1/admin/catalog",
        "The catalog, one page at a time",
        "secret",
        {
            200: CatalogPage,
            401: ErrorResponse,
            403: ErrorResponse,
            429: ErrorResponse,
            422: ErrorResponse,
        },
        params=[
            _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}),
            _param("cursor", "query", {"type": "string"}),
        ],
    ),
    Operation(
        "post",
        "/v1/admin/orders",
        "Import orders (JSON list or Online Retail CSV); a line's offer_token credits it to "
        "that offer",
        "secret",
        {200: OrdersImportResponse, **ERRORS},
        body_list_of=OrderIn,
        body_types=("application/json", "text/csv"),
    ),
    Operation(
        "post",
        "/v1/admin/returns",
        "Record returned products",
        "secret",
        {200: ReturnsResponse, **ERRORS},
        body=ReturnRequest,
    ),
    Operation(
        "get",
        "/v1/admin/products/{product_id}/neighbors",
        "Learned co-purchase neighbours",
        "secret",
        {200: NeighborsResponse, **ERRORS},
        params=[
            _param("product_id", "path", {"type": "string"}, required=True),
            _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 200}),
        ],
    ),
    Operation(
        "put",
        "/v1/admin/rules",
        "Replace the store's business rules",
        "secret",
        {200: StoreRules, **ERRORS},
        body=StoreRules,
    ),
    Operation(
        "get",
        "/v1/admin/rules",
        "The store's business rules",
        "secret",
        {200: StoreRules, 401: ErrorResponse, 403: ErrorResponse, 429: ErrorResponse},
    ),
    Operation(
        "get",
        "/v1/admin/metrics",
        "The measurement report (JSON, or CSV with Accept: text/csv)",
        "secret",
        {
            200: MetricsReport,
            401: ErrorResponse,
            403: ErrorResponse,
            429: ErrorResponse,
            422: ErrorResponse,
        },
        params=[
            _param("from", "query", {"type": "string", "description": "ISO 8601 or epoch ms"}),
            _param("to", "query", {"type": "string", "description": "ISO 8601 or epoch ms"}),
            _param("surface", "query", {"$ref": REF.format(model="Surface")}),
            _param("window_days", "query", {"type": "integer", "minimum": 1, "maximum": 90}),
        ],
        alternatives=("text/csv",),
    ),
    Operation(
        "get",
        "/dashboard",
        "The dashboard (secret key, or a signed link from `offer-service dashboard-url`)",
        "none",
        {200: None, 401: ErrorResponse, 403: ErrorResponse, 422: ErrorResponse, 429: ErrorResponse},
        params=[
            _param(name, "query", {"type": "string"})
            for name in ("store", "expires", "sig", "from", "to", "surface")
        ],
        response_type="text/html",
    ),
    Operation(
        "post",
        "/v1/admin/orders/{order_id}/events",
        "Record an order's shipment, delivery or return (signed webhook compatible)",
        "secret",
        {200: OrderEventResponse, **ERRORS},
        body=OrderEventRequest,
        params=[_param("order_id", "path", {"type": "string"}, required=True)],
    ),
    Operation(
        "post",
        "/v1/admin/customers/{customer_id}/sms-consent",
        "Record a customer's SMS opt-in (with its source) or opt-out",
        "secret",
        {200: SmsConsentResponse, **ERRORS},
        body=SmsConsentRequest,
        params=[_param("customer_id", "path", {"type": "string"}, required=True)],
    ),
    Operation(
        "get",
        "/v1/admin/customers/{customer_id}/sms-consent",
        "A customer's SMS consent in force and its history",
        "secret",
        {200: SmsConsentResponse, **ERRORS},
        params=[_param("customer_id", "path", {"type": "string"}, required=True)],
    ),
    Operation(
        "get",
        "/v1/admin/feed-key",
        "The store's feed key for email and SMS tools (made on first use)",
        "secret",
        {200: FeedKeyResponse, 401: ErrorResponse, 403: ErrorResponse, 429: ErrorResponse},
    ),
    Operation(
        "post",
        "/v1/admin/feed-key/rotate",
        "Make a new feed key current; the previous one keeps working until the next rotation",
        "secret",
        {200: FeedKeyResponse, 401: ErrorResponse, 403: ErrorResponse, 429: ErrorResponse},
    ),
    Operation(
        "get",
        "/v1/journeys/{order_id}",
        "An order's post-purchase timeline: touchpoints, their status and offers",
        "secret",
        {200: JourneyResponse, **ERRORS},
        params=[
            _param("order_id", "path", {"type": "string"}, required=True),
            _param("at", "query", {"type": "string", "description": "ISO 8601 or epoch ms"}),
        ],
    ),
    Operation(
        "get",
        "/v1/feeds/{feed_key}/{touchpoint}",
        "A touchpoint's offers for an email or SMS tool (JSON, HTML fragment or SMS text)",
        "none",
        {200: FeedAnswer, 304: None, **ERRORS},
        params=[
            _param("feed_key", "path", {"type": "string"}, required=True),
            _param("touchpoint", "path", {"type": "string", "enum": list(FEED_TOUCHPOINTS)}, True),
            _param("order_id", "query", {"type": "string", "description": "Omitted: every order"}),
            _param("format", "query", {"type": "string", "enum": ["json", "html", "sms"]}),
        ],
        alternatives=("text/html", "text/plain"),
    ),
    Operation(
        "get",
        "/r/{code}",
        "A tracked link of an email or SMS: records the click, redirects to the product",
        "none",
        {302: None, 404: ErrorResponse, 429: ErrorResponse},
        params=[_param("code", "path", {"type": "string"}, required=True)],
    ),
    Operation("get", "/healthz", "The process is up", "none", {200: Health}),
    Operation("get", "/readyz", "The store is reachable", "none", {200: Health, 503: Health}),
    Operation(
        "get", "/metrics", "Prometheus metrics", "none", {200: None}, response_type="text/plain"
    ),
    # Last: a generated call may revoke the key every other operation uses.
    Operation(
        "post",
        "/v1/admin/publishable-key/rotate",
        "Make a new publishable key current; the old one works for grace_seconds (default 24 h)",
        "secret",
        {200: PublishableKeyResponse, **ERRORS},
        body=KeyRotationRequest,
    ),
    Operation(
        "post",
        "/v1/admin/secret-key/rotate",
        "Make a new secret key current; the old one works for grace_seconds (default 24 h)",
        "secret",
        {200: SecretKeyResponse, **ERRORS},
        body=KeyRotationRequest,
    ),
]


def document() -> dict[str, Any]:
    models: set[type[BaseModel]] = {ErrorResponse}
    for op in OPERATIONS:
        models.update(m for m in op.responses.values() if m is not None)
        for m in (op.body, op.body_list_of, op.query):
            if m is not None:
                models.add(m)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, top = models_json_schema([(m, "validation") for m in ordered], ref_template=REF)
    schemas: dict[str, Any] = top.get("$defs", {})

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        return {"$ref": REF.format(model=model.__name__)}

    paths: dict[str, Any] = {}
    for op in OPERATIONS:
        item: dict[str, Any] = {
            "summary": op.summary,
            "operationId": operation_id(op.method, op.path),
        }
        params = list(op.params)
        if op.query is not None:
            for name, prop in op.query.model_json_schema(ref_template=REF)["properties"].items():
                param_schema = {"type": "string"} if name in ("items", "exclude") else prop
                params.append(_param(name, "query", param_schema, required=name == "surface"))
        if op.auth == "publishable" and op.query is None:
            params.append(_param("key", "query", {"type": "string"}))
        if params:
            item["parameters"] = params
        has_body = op.body is not None or op.body_list_of is not None
        if has_body or op.body_types != ("application/json",):
            if op.body is not None:
                schema: dict[str, Any] = ref(op.body)
            elif op.body_list_of is not None:
                schema = {"type": "array", "items": ref(op.body_list_of)}
            else:
                schema = {"type": "array", "items": {"type": "object"}}
            content = {
                t: {"schema": schema if t == "application/json" else {"type": "string"}}
                for t in op.body_types
            }
            item["requestBody"] = {"required": True, "content": content}
        responses: dict[str, Any] = {}
        for status, model in op.responses.items():
            entry: dict[str, Any] = {"description": "OK" if status < 400 else "Error"}
            if model is not None:
                entry["content"] = {"application/json": {"schema": ref(model)}}
                if status < 300:
                    for media in op.alternatives:
                        entry["content"][media] = {"schema": {"type": "string"}}
            else:
                entry["content"] = {op.response_type: {"schema": {"type": "string"}}}
            links = LINKS.get((op.method, op.path), {}).get(status)
            if links:
                entry["links"] = copy.deepcopy(links)  # the caller may change its document
            responses[str(status)] = entry
        item["responses"] = responses
        if op.auth == "secret":
            item["security"] = [{"secretKey": []}]
        elif op.auth == "publishable":
            item["security"] = [{"publishableKey": []}, {"publishableHeader": []}]
        paths.setdefault(op.path, {})[op.method] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": "Offer service", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "secretKey": {"type": "http", "scheme": "bearer"},
                "publishableKey": {"type": "apiKey", "in": "query", "name": "key"},
                "publishableHeader": {"type": "apiKey", "in": "header", "name": "X-Offer-Key"},
            },
        },
    }
