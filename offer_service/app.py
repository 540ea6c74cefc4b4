"""create_app(settings): routes, middleware and lifespan; the only wiring module."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.routing import Route

from offer_service.commerce.charger import Charger
from offer_service.commerce.settle import Settler
from offer_service.serving.engine import Engine
from offer_service.serving.limits import CacheLimits
from offer_service.serving.spool import Spool, replay_before_exit
from offer_service.serving.training import TrainingRuns
from offer_service.serving.worker import background
from offer_service.settings import Settings
from offer_service.storage import open_store
from offer_service.web.collect import METRICS_DIR_ENV, Collector
from offer_service.web.dispatch import Dispatch, OfferApp
from offer_service.web.drain import Drain
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
    redeem,
)
from offer_service.web.endpoints import metrics as report
from offer_service.web.endpoints.common import error_response
from offer_service.web.telemetry import Metrics, Telemetry, configure_logging

# On the way out, how long a last replay of the spool may take (the store may be down).
LAST_REPLAY_S = 5.0
BROWSER_ROUTES = ("/v1/offers", "/v1/events", "/v1/accept", "/v1/decline")


def create_app(settings: Settings | None = None) -> OfferApp:
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    store = open_store(settings.store_url, pool_size=settings.redis_pool())
    spool = Spool(settings.spool_dir)
    limits = CacheLimits(
        prepared=settings.cache_prepared,
        products=settings.cache_products,
        visitors=settings.cache_visitors,
        keys=settings.cache_keys,
    )
    engine = Engine(
        store,
        spool=spool,
        limits=limits,
        visitor_index_s=settings.visitor_index_s or None,
    )
    # The store's charge endpoint's client (one-click accept): a pool of its own.
    charger = Charger(
        allow_private=settings.allow_private_charge_urls, timeout_s=settings.charge_timeout_s
    )
    # Every serving process settles charges whose outcome is unknown (commerce/settle.py).
    settler = Settler(
        store,
        charger,
        interval_s=settings.settle_interval_s,
        timeout_s=settings.settle_timeout_s,
    )
    # A bulk import through the API, and every `retrain_orders` new orders of an embedded store,
    # are learnt from apart from serving (serving/training.py; the worker retrains Redis stores).
    trainings = TrainingRuns(
        store,
        settings.store_url,
        retrain_orders=settings.retrain_orders if store.streams is None else None,
    )
    metrics = Metrics()
    # With several workers, each publishes its counts where any one's /metrics sums them.
    collector = Collector(metrics, engine, spool, os.environ.get(METRICS_DIR_ENV) or None)
    loops = [settler.run] if collector.shared is None else [settler.run, collector.publish]
    drain = Drain(settings.drain_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        if settings.demo:
            from offer_service_tools.demo import install_demo
            from offer_service_tools.storefront import charge_url_from_env

            await install_demo(store, charge_url_from_env())
        drain.hold_signals()
        try:
            async with background(store, spool, aggregate=settings.aggregator, loops=loops):
                yield
        finally:
            await trainings.close()
            await engine.exposures.close()  # into the spool if the store is down
            await replay_before_exit(spool, store, LAST_REPLAY_S)
            spool.close()
            await charger.close()
            collector.close()
            await store.close()

    # The hot path: answered by the dispatch before Starlette's stack (see dispatch.py).
    fast = [
        Route("/v1/offers", offers.GetOffers(engine), methods=["GET"]),
        Route("/v1/events", events.PostEvents(), methods=["POST"]),
    ]
    routes = [
        *fast,
        Route("/v1/offers", offers.PostOffers(), methods=["POST"]),
        Route("/v1/accept", accept.post_accept, methods=["POST"]),
        Route("/v1/decline", accept.post_decline, methods=["POST"]),
        Route("/v1/offers/redeem", redeem.post_redeem, methods=["POST"]),
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

    telemetry = Telemetry(metrics, answer=error_response)
    app = OfferApp(Dispatch(telemetry, fast), routes=routes, lifespan=lifespan)
    app.state.charger = charger
    app.state.engine = engine
    # Imports parse in a worker thread, one at a time: a second waits rather than doubling the
    # memory and CPU taken from serving.
    app.state.import_limiter = anyio.CapacityLimiter(1)
    app.state.spool = spool
    app.state.trainings = trainings
    app.state.metrics = metrics
    app.state.collector = collector
    app.state.settings = settings
    app.state.drain = drain
    return app
