"""create_app(settings): routes, middleware and lifespan; the only wiring module."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from offer_service.exceptions import ApiError, StoreUnavailable
from offer_service.serving.engine import Engine
from offer_service.serving.spool import Spool
from offer_service.serving.worker import background
from offer_service.settings import Settings
from offer_service.storage import open_store
from offer_service.web.endpoints import (
    accept,
    admin,
    dashboard,
    events,
    feeds,
    journeys,
    keys,
    offers,
    ops,
)
from offer_service.web.endpoints import metrics as report
from offer_service.web.endpoints.common import json_response, unavailable_response
from offer_service.web.telemetry import Metrics, RequestContext, configure_logging

HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
BROWSER_ROUTES = ("/v1/offers", "/v1/events", "/v1/accept", "/v1/decline")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return json_response(exc.body(), exc.status_code, exc.headers or None)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, "http_error")
    message = "No route matches this path." if exc.status_code == 404 else str(exc.detail)
    return json_response(
        {"error": {"code": code, "message": message, "details": []}},
        exc.status_code,
        dict(exc.headers) if exc.headers else None,
    )


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    # Only what cannot be answered from the in-process cache gets here (a cache miss, an
    # admin write, a one-click accept): fail closed, fast, and say when to retry.
    return unavailable_response()


class OfferApp(Starlette):
    """Starlette, but a request for one of RequestContext's direct routes (the hot path) goes
    straight to that context, past the ServerErrorMiddleware Starlette puts in front of it: the
    context answers any exception with a JSON 500 itself, so for these requests that layer only
    cost time. Everything else goes the usual way; the first request builds the middleware
    stack and with it `context`."""

    context: RequestContext | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        context = self.context
        if scope["type"] == "http" and context is not None:
            direct = context.direct_route(scope)
            if direct is not None:
                scope["app"] = self
                await context.handle(scope, receive, send, direct)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> OfferApp:
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    store = open_store(settings.store_url)
    engine = Engine(store)
    metrics = Metrics()
    spool = Spool(settings.spool_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        if settings.demo:
            from offer_service_tools.demo import install_demo
            from offer_service_tools.storefront import charge_url_from_env

            await install_demo(store, charge_url_from_env())
        try:
            async with background(store, spool, aggregate=settings.aggregator):
                yield
        finally:
            spool.close()
            await engine.exposures.close()
            await engine.charger.close()
            await store.close()

    # The hot paths: called straight from RequestContext (see there and OfferApp).
    get_offers = Route(
        "/v1/offers", offers.GetOffers(engine, trust_proxy=settings.trust_proxy), methods=["GET"]
    )
    post_events = Route("/v1/events", events.PostEvents(), methods=["POST"])
    routes = [
        get_offers,
        Route("/v1/offers", offers.post_offers, methods=["POST"]),
        post_events,
        Route("/v1/accept", accept.post_accept, methods=["POST"]),
        Route("/v1/decline", accept.post_decline, methods=["POST"]),
        *(Route(path, offers.preflight, methods=["OPTIONS"]) for path in BROWSER_ROUTES),
        Route("/v1/admin/catalog", admin.put_catalog, methods=["PUT"]),
        Route("/v1/admin/catalog", admin.get_catalog, methods=["GET"]),
        Route("/v1/admin/orders", admin.post_orders, methods=["POST"]),
        Route("/v1/admin/returns", admin.post_returns, methods=["POST"]),
        Route("/v1/admin/products/{product_id:path}/neighbors", admin.neighbors, methods=["GET"]),
        Route("/v1/admin/rules", admin.put_rules, methods=["PUT"]),
        Route("/v1/admin/rules", admin.get_rules, methods=["GET"]),
        Route("/v1/admin/webhook-secret/rotate", admin.rotate_webhook_secret, methods=["POST"]),
        Route("/v1/admin/signing-key/rotate", admin.rotate_signing_key, methods=["POST"]),
        Route(
            "/v1/admin/orders/{order_id:path}/events", journeys.post_order_event, methods=["POST"]
        ),
        Route(
            "/v1/admin/customers/{customer_id:path}/sms-consent",
            journeys.post_sms_consent,
            methods=["POST"],
        ),
        Route(
            "/v1/admin/customers/{customer_id:path}/sms-consent",
            journeys.get_sms_consent,
            methods=["GET"],
        ),
        Route("/v1/admin/feed-key", journeys.get_feed_key, methods=["GET"]),
        Route("/v1/admin/feed-key/rotate", journeys.rotate_feed_key, methods=["POST"]),
        Route("/v1/journeys/{order_id:path}", journeys.get_journey, methods=["GET"]),
        Route("/v1/feeds/{feed_key}/{touchpoint}", feeds.get_feed, methods=["GET"]),
        Route("/r/{code}", feeds.redirect, methods=["GET"]),
        Route("/v1/admin/publishable-key/rotate", keys.rotate_publishable_key, methods=["POST"]),
        Route("/v1/admin/secret-key/rotate", keys.rotate_secret_key, methods=["POST"]),
        Route("/v1/admin/metrics", report.get_metrics, methods=["GET"]),
        Route("/dashboard", dashboard.get_dashboard, methods=["GET"]),
        Route("/dashboard/report.csv", dashboard.get_dashboard_csv, methods=["GET"]),
        Route("/dashboard/{name}", dashboard.get_asset, methods=["GET"]),
        Route("/healthz", ops.healthz, methods=["GET"]),
        Route("/readyz", ops.readyz, methods=["GET"]),
        Route("/metrics", ops.metrics, methods=["GET"]),
        Route("/openapi.json", ops.openapi_json, methods=["GET"]),
        Route("/sdk/v1/{name}", ops.sdk, methods=["GET"]),
    ]
    if settings.demo:
        from offer_service_tools import storefront

        routes += storefront.routes()

    def request_context(inner: ASGIApp) -> RequestContext:
        app.context = RequestContext(inner, metrics, direct=(get_offers, post_events))
        return app.context

    app = OfferApp(
        routes=routes,
        middleware=[Middleware(request_context)],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            StoreUnavailable: _store_unavailable,
        },
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.spool = spool
    app.state.metrics = metrics
    app.state.settings = settings
    return app
