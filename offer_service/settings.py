"""Settings read once, from the environment and the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_STORE_URL = "sqlite:///./offer-data/offers.db"
DEFAULT_SPOOL_DIR = "./offer-data/spool"


@dataclass(frozen=True, slots=True)
class Settings:
    store_url: str = DEFAULT_STORE_URL
    # Serve the demo storefront at /demo/ (the `demo` command turns it on).
    demo: bool = False
    log_level: str = "info"
    # Take the client address from X-Forwarded-For (only behind a proxy that sets it).
    trust_proxy: bool = False
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

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            store_url=os.environ.get("OFFER_STORE_URL", DEFAULT_STORE_URL),
            demo=os.environ.get("OFFER_DEMO", "") == "1",
            log_level=os.environ.get("OFFER_LOG_LEVEL", "info"),
            trust_proxy=os.environ.get("OFFER_TRUST_PROXY", "") == "1",
            spool_dir=os.environ.get("OFFER_SPOOL_DIR", DEFAULT_SPOOL_DIR),
            aggregator=os.environ.get("OFFER_AGGREGATOR", "1") != "0",
            public_url=os.environ.get("OFFER_PUBLIC_URL") or None,
            allow_private_charge_urls=os.environ.get("OFFER_ALLOW_PRIVATE_CHARGE_URLS", "") == "1",
        )
