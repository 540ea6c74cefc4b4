"""Admin routes (secret key; writes also signed): catalog, orders, returns, neighbours, rules."""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any, cast

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from offer_service import importers
from offer_service.commerce.egress import check_resolved
from offer_service.commerce.ingest import import_orders
from offer_service.decision import affinity
from offer_service.domain.charge_urls import BadChargeUrl
from offer_service.domain.lifecycle import OrderEvent
from offer_service.domain.orders import Order, ProductReturn
from offer_service.domain.policy import StoreRules, rules_context
from offer_service.domain.products import Product
from offer_service.domain.records import SigningKey
from offer_service.domain.signatures import new_webhook_secret
from offer_service.domain.time import epoch_ms, parse_datetime
from offer_service.domain.tokens import order_token
from offer_service.exceptions import NotFound, ValidationFailed, field_error
from offer_service.importers.jobs import CatalogOutcome, ImportJob
from offer_service.types import is_whole, now_ms, whole_in
from offer_service.web.endpoints.common import (
    BROWSER_BODY_LIMIT,
    IMPORT_BODY_LIMIT,
    engine,
    json_response,
    read_body,
    secret_store,
    settings,
)
from offer_service.web.import_runs import run_import
from offer_service.web.models import ReturnRequest, validation_failed
from offer_service.web.uploads import spool_body

BAD_CHARGE_URL = "The charge_url is not an address the service calls."
DEFAULT_PAGE = 100
MAX_PAGE = 1000


def product_json(p: Product) -> dict[str, Any]:
    data = dataclasses.asdict(p)
    for name in ("tags", "complements", "flags"):
        data[name] = list(data[name])
    return data


def _is_csv(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == "text/csv"


async def put_catalog(request: Request) -> Response:
    with await spool_body(request, IMPORT_BODY_LIMIT) as upload:
        record = await secret_store(request, upload, signable=True)
        currency = request.query_params.get("currency", "USD")
        job = ImportJob("catalog_json", currency)
        if _is_csv(request):
            fmt = request.query_params.get("format", "auto")
            if fmt not in ("auto", "csv", "shopify"):
                raise ValidationFailed(
                    "Unknown catalog format.",
                    details=[{"field": "format", "message": "use csv, shopify or auto"}],
                )
            job = ImportJob("catalog_csv", currency, cast(importers.CsvFormat, fmt))
        # Written a batch at a time as it is parsed (see importers.jobs.import_catalog). An
        # import is an upsert, so batches written before a failure are harmless.
        outcome = cast(CatalogOutcome, await run_import(request, job, upload, record))
    await engine(request).changed(record)
    return json_response(
        {
            "upserted": outcome.upserted,
            "rejected": [r.as_dict() for r in outcome.rejected],
            "rejected_total": outcome.rejected_total,
        }
    )


async def get_catalog(request: Request) -> Response:
    record = await secret_store(request)
    limit = whole_in(request.query_params.get("limit", str(DEFAULT_PAGE)), 1, MAX_PAGE)
    if limit is None:
        raise ValidationFailed(
            "The catalog page request is invalid.",
            details=[
                {"field": "limit", "message": f"limit must be an integer from 1 to {MAX_PAGE}"}
            ],
        )
    cursor = request.query_params.get("cursor") or None
    products = await engine(request).store.list_products(record.id, limit, cursor)
    next_cursor = products[-1].id if len(products) == limit else None
    return json_response(
        {"products": [product_json(p) for p in products], "next_cursor": next_cursor}
    )


async def post_orders(request: Request) -> Response:
    with await spool_body(request, IMPORT_BODY_LIMIT) as upload:
        record = await secret_store(request, upload, signable=True)
        if _is_csv(request):
            job = ImportJob("online_retail", request.query_params.get("currency", "GBP"))
        else:
            job = ImportJob("orders_json", "GBP")
        parsed = await run_import(request, job, upload, record)
    store = engine(request).store
    tokens: dict[str, str] = {}
    if isinstance(parsed, importers.OnlineRetailImport):
        existing = await store.get_products(record.id, [p.id for p in parsed.products])
        await store.upsert_products(record.id, [p for p in parsed.products if p.id not in existing])
        orders, returns = parsed.orders, parsed.returns
        rejected, rejected_total = parsed.rejected, parsed.rejected_total
    else:
        result = cast(importers.ImportResult[Order], parsed)
        orders, returns = result.items, []
        rejected, rejected_total = result.rejected, result.rejected_total
        tokens = {o.id: order_token(record.webhook_secret, record.id, o.id) for o in orders}
    summary = await import_orders(store, record, orders, returns)
    await engine(request).changed(record)
    if summary.rebuilt:  # a bulk import: learn from it, apart from serving
        request.app.state.trainings.request(record)
    else:  # enough new orders retrain the model, apart from serving
        request.app.state.trainings.orders_added(record, summary.imported)
    return json_response(
        {
            "imported": summary.imported,
            "duplicates": summary.duplicates,
            "returns": summary.returns,
            "rejected": [r.as_dict() for r in rejected],
            "rejected_total": rejected_total,
            "order_tokens": tokens,
            "refused_tokens": [r.as_dict() for r in summary.refused_tokens],
        }
    )


async def post_returns(request: Request) -> Response:
    raw = await read_body(request, BROWSER_BODY_LIMIT)
    record = await secret_store(request, raw, signable=True)
    try:
        req = ReturnRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_failed(exc, "The return is invalid.") from None
    at_ms = now_ms()
    if req.at:
        try:
            at_ms = epoch_ms(parse_datetime(req.at))
        except ValueError:
            raise ValidationFailed(
                "The return is invalid.",
                details=[{"field": "at", "message": "at must be an ISO 8601 time"}],
            ) from None
    store = engine(request).store
    if req.order_id and await store.get_order(record.id, req.order_id) is None:
        raise NotFound(
            f"Order {req.order_id!r} has not been sent to this store.", code="unknown_order"
        )
    recorded = await store.add_returns(
        record.id,
        [ProductReturn(tuple(req.product_ids), at_ms, req.order_id, req.customer_id)],
    )
    if req.order_id:  # the order's journey stops offering from the return on
        event = OrderEvent(req.order_id, "returned", at_ms, tuple(sorted(set(req.product_ids))))
        await store.add_order_event(record.id, event)
    await engine(request).changed(record)
    return json_response({"recorded": recorded})


async def neighbors(request: Request) -> Response:
    record = await secret_store(request)
    product_id: str = request.path_params["product_id"]
    limit = whole_in(request.query_params.get("limit", "20"), 1, 200)
    if limit is None:
        raise ValidationFailed(
            "The neighbours request is invalid.",
            details=[{"field": "limit", "message": "limit must be an integer from 1 to 200"}],
        )
    store = engine(request).store
    anchor = (await store.get_products(record.id, [product_id])).get(product_id)
    if anchor is None:
        raise NotFound(f"Unknown product {product_id!r}.", code="unknown_product")
    pcs = await store.neighbors(record.id, product_id, limit)
    ids = [pc.product_id for pc in pcs]
    counts = await store.product_basket_counts(record.id, [product_id, *ids])
    products = await store.get_products(record.id, ids)
    n = await store.basket_count(record.id)
    # The exact counts of now: a model's list keeps the counts of its fit until the next one.
    pairs = {pc.product_id: pc.pair_count for pc in await store.pair_counts(record.id, product_id)}
    out = []
    for pc in pcs:
        s = affinity.stats(
            counts.get(product_id, 0),
            counts.get(pc.product_id, 0),
            pairs.get(pc.product_id, 0),
            n,
            pc.product_id,
        )
        partner = products.get(pc.product_id)
        out.append(
            {
                "product_id": pc.product_id,
                "title": partner.title if partner else "",
                "pair_count": s.pair_count,
                "support": s.support,
                "confidence": s.confidence,
                "lift": s.lift,
                # The item model's weight of the partner for this product (null until trained).
                "score": pc.score,
            }
        )
    return json_response({"product_id": product_id, "baskets": n, "neighbors": out})


async def put_rules(request: Request) -> Response:
    raw = await read_body(request, BROWSER_BODY_LIMIT)
    record = await secret_store(request, raw, signable=True)
    allow_private = settings(request).allow_private_charge_urls
    context = rules_context("private" if allow_private else "public")
    try:
        rules = StoreRules.model_validate_json(raw, context=context)
    except ValidationError as exc:
        failed = validation_failed(exc, "The rules are invalid.")
        if any(detail["field"] == "charge_url" for detail in failed.details):
            failed.code, failed.message = "bad_charge_url", BAD_CHARGE_URL
        raise failed from None
    if rules.charge_url is not None:
        try:
            await check_resolved(rules.charge_url, allow_private=allow_private)
        except BadChargeUrl as exc:
            details = [field_error("charge_url", str(exc))]
            raise ValidationFailed(BAD_CHARGE_URL, code="bad_charge_url", details=details) from None
    updated = await engine(request).store.set_rules(record.id, rules)
    await engine(request).changed(updated)
    return json_response(orjson.loads(updated.rules.model_dump_json()))


async def get_rules(request: Request) -> Response:
    record = await secret_store(request)
    return json_response(orjson.loads(record.rules.model_dump_json()))


async def rotate_webhook_secret(request: Request) -> Response:
    """Make a new webhook secret current; the previous one keeps verifying until the next
    rotation, so a merchant can switch their signer without a gap."""
    raw = await read_body(request, BROWSER_BODY_LIMIT)
    record = await secret_store(request, raw)
    new_secret = new_webhook_secret()
    updated = await engine(request).store.rotate_webhook_secret(record.id, new_secret)
    await engine(request).changed(updated)
    return json_response({"webhook_secret": new_secret})


async def rotate_signing_key(request: Request) -> Response:
    """Make a new key sign offer tokens. Tokens of the previous key keep verifying (offers already
    on pages still work); tokens of any older key are rejected from now on."""
    raw = await read_body(request, BROWSER_BODY_LIMIT)
    record = await secret_store(request, raw)
    numbers = [int(k.kid[1:]) for k in record.signing_keys if is_whole(k.kid[1:])]
    new_key = SigningKey(kid=f"k{max(numbers, default=0) + 1}", secret=secrets.token_bytes(32))
    updated = await engine(request).store.rotate_signing_key(record.id, new_key)
    await engine(request).changed(updated)
    return json_response({"kid": new_key.kid, "verifying": [k.kid for k in updated.signing_keys]})
