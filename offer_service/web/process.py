"""The uvicorn server of `offer-service serve`, with the settings and a clean stop."""

from __future__ import annotations

import signal
from types import FrameType

from offer_service.settings import Settings

# Once the drain is over (web/drain.py), seconds the requests still in flight may take before
# they are cancelled; the lifespan's flushes follow either way.
FINISH_TIMEOUT_S = 10


def _stopped(sig: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def run_server(settings: Settings, host: str, port: int, workers: int, *, quiet: bool) -> None:
    """Serve `offer_service.cli:serving_app` until SIGTERM or SIGINT (and the drain) ends it."""
    import uvicorn

    from offer_service.web.connections import PROTOCOL

    # uvicorn hands a SIGTERM it stopped on back to the process's handler once done; a stop
    # on request is a success (exit status 0), not death by the signal.
    signal.signal(signal.SIGTERM, _stopped)
    uvicorn.run(
        "offer_service.cli:serving_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning" if quiet else "info",
        # The app logs JSON lines itself (telemetry.configure_logging); uvicorn's access log
        # would print query strings, which carry publishable keys and order tokens.
        log_config=None,
        access_log=False,
        # uvicorn believes X-Forwarded-For from any peer on this host unless told otherwise:
        # anyone could then pick their own rate-limit bucket. Only OFFER_TRUST_PROXY turns it
        # on, for the proxies named; the client is the right-most hop that is not one of them.
        proxy_headers=settings.trust_proxy,
        forwarded_allow_ips=settings.trusted_proxies,
        http=PROTOCOL,
        timeout_keep_alive=settings.keep_alive_timeout_s,
        limit_concurrency=settings.concurrency_limit,
        timeout_graceful_shutdown=FINISH_TIMEOUT_S,
    )
