"""Settings read once, from the environment and the command line."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

N = TypeVar("N", int, float)

DEFAULT_STORE_URL = "sqlite:///./offer-data/offers.db"
DEFAULT_SPOOL_DIR = "./offer-data/spool"
# The proxies whose X-Forwarded-For is believed when OFFER_TRUST_PROXY=1: a proxy on this host.
DEFAULT_TRUSTED_PROXIES = "127.0.0.1,::1"
DEFAULT_KEEP_ALIVE_TIMEOUT_S = 5
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_CONCURRENCY_LIMIT = 1000
# The accept's own call to a store's charge endpoint (docs/api.md), and the settling of a charge
# whose outcome that call did not learn: a pass every interval, each call allowed the timeout.
DEFAULT_CHARGE_TIMEOUT_S = 5.0
DEFAULT_SETTLE_INTERVAL_S = 5.0
DEFAULT_SETTLE_TIMEOUT_S = 30.0
# An embedded store's item model is retrained by `serve` once this many new orders arrived
# through its admin API since the last training it started (serving/training.py).
DEFAULT_RETRAIN_ORDERS = 500
NOT_POSITIVE = "{name} must be a positive number, not {raw!r}"


@dataclass(frozen=True, slots=True)
class Settings:
    store_url: str = DEFAULT_STORE_URL
    # Serve the demo storefront at /demo/ (the `demo` command turns it on).
    demo: bool = False
    log_level: str = "info"
    # Take the client address (and scheme) from X-Forwarded-For (and -Proto) when the peer is
    # one of `trusted_proxies`: the right-most hop that is not one of them, since every proxy
    # appends its peer and anything to the left of the first proxy is the client's to forge.
    trust_proxy: bool = False
    # Addresses and networks (CIDR), comma-separated.
    trusted_proxies: str = DEFAULT_TRUSTED_PROXIES
    # Seconds a connection may stay idle after a response before it is closed.
    keep_alive_timeout_s: int = DEFAULT_KEEP_ALIVE_TIMEOUT_S
    # Seconds a request's line and headers may take from the connection opening (or from the
    # request's first byte): a connection still without them is closed (checked every half).
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    # Connections plus requests in flight per process beyond which a request is answered 503 at
    # once; below the open-file limit, so a flood of connections meets it before the process
    # runs out of file descriptors.
    concurrency_limit: int = DEFAULT_CONCURRENCY_LIMIT
    # Where events wait while the shared store is unreachable (one file per process).
    spool_dir: str = DEFAULT_SPOOL_DIR
    # Aggregate the Redis event streams in this process (off when separate workers do it).
    aggregator: bool = True
    # The service's public base URL (https://offers.example.com): tracked links in emails and
    # SMS start with it. Unset: the URL the request came in on.
    public_url: str | None = None
    # Let stores' charge endpoints be http:// or on loopback and private networks (the demo, the
    # tests and local development); otherwise only https:// to public addresses is called.
    allow_private_charge_urls: bool = False
    # Seconds the accept waits on the store's charge endpoint before its answer is 202 pending.
    charge_timeout_s: float = DEFAULT_CHARGE_TIMEOUT_S
    # Seconds between two looks for charges to settle, and a settling call's own timeout.
    settle_interval_s: float = DEFAULT_SETTLE_INTERVAL_S
    settle_timeout_s: float = DEFAULT_SETTLE_TIMEOUT_S
    # New orders after which `serve` retrains an embedded (SQLite) store's item model.
    retrain_orders: int = DEFAULT_RETRAIN_ORDERS

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            store_url=os.environ.get("OFFER_STORE_URL", DEFAULT_STORE_URL),
            demo=os.environ.get("OFFER_DEMO", "") == "1",
            log_level=os.environ.get("OFFER_LOG_LEVEL", "info"),
            trust_proxy=os.environ.get("OFFER_TRUST_PROXY", "") == "1",
            trusted_proxies=os.environ.get("OFFER_TRUSTED_PROXIES") or DEFAULT_TRUSTED_PROXIES,
            keep_alive_timeout_s=_positive(
                "OFFER_KEEP_ALIVE_TIMEOUT", DEFAULT_KEEP_ALIVE_TIMEOUT_S, int
            ),
            header_timeout_s=_positive("OFFER_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT_S, float),
            concurrency_limit=_positive("OFFER_CONCURRENCY_LIMIT", DEFAULT_CONCURRENCY_LIMIT, int),
            spool_dir=os.environ.get("OFFER_SPOOL_DIR", DEFAULT_SPOOL_DIR),
            aggregator=os.environ.get("OFFER_AGGREGATOR", "1") != "0",
            public_url=os.environ.get("OFFER_PUBLIC_URL") or None,
            allow_private_charge_urls=os.environ.get("OFFER_ALLOW_PRIVATE_CHARGE_URLS", "") == "1",
            charge_timeout_s=_positive("OFFER_CHARGE_TIMEOUT", DEFAULT_CHARGE_TIMEOUT_S, float),
            settle_interval_s=_positive("OFFER_SETTLE_INTERVAL", DEFAULT_SETTLE_INTERVAL_S, float),
            settle_timeout_s=_positive("OFFER_SETTLE_TIMEOUT", DEFAULT_SETTLE_TIMEOUT_S, float),
            retrain_orders=_positive("OFFER_RETRAIN_ORDERS", DEFAULT_RETRAIN_ORDERS, int),
        )


def _positive(name: str, default: N, kind: Callable[[str], N]) -> N:
    """The environment variable `name` as a positive number (`default` when unset)."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(NOT_POSITIVE.format(name=name, raw=raw)) from None
    if not value > 0:
        raise ValueError(NOT_POSITIVE.format(name=name, raw=raw))
    return value
