"""Settings read once, from the environment and the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_STORE_URL = "sqlite:///./offer-data/offers.db"
DEFAULT_SPOOL_DIR = "./offer-data/spool"
# The proxies whose X-Forwarded-For is believed when OFFER_TRUST_PROXY=1: a proxy on this host.
DEFAULT_TRUSTED_PROXIES = "127.0.0.1,::1"


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
    # Where events wait while the shared store is unreachable (one file per process).
    spool_dir: str = DEFAULT_SPOOL_DIR
    # Aggregate the Redis event streams in this process (off when separate workers do it).
    aggregator: bool = True
    # The service's public base URL (https://offers.example.com): tracked links in emails and
    # SMS start with it. Unset: the URL the request came in on.
    public_url: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            store_url=os.environ.get("OFFER_STORE_URL", DEFAULT_STORE_URL),
            demo=os.environ.get("OFFER_DEMO", "") == "1",
            log_level=os.environ.get("OFFER_LOG_LEVEL", "info"),
            trust_proxy=os.environ.get("OFFER_TRUST_PROXY", "") == "1",
            trusted_proxies=os.environ.get("OFFER_TRUSTED_PROXIES") or DEFAULT_TRUSTED_PROXIES,
            spool_dir=os.environ.get("OFFER_SPOOL_DIR", DEFAULT_SPOOL_DIR),
            aggregator=os.environ.get("OFFER_AGGREGATOR", "1") != "0",
            public_url=os.environ.get("OFFER_PUBLIC_URL") or None,
        )
