"""Settings read once, from the environment and the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_STORE_URL = "sqlite:///./offer-data/offers.db"


@dataclass(frozen=True, slots=True)
class Settings:
    store_url: str = DEFAULT_STORE_URL
    # Serve the demo storefront at /demo/ (the `demo` command turns it on).
    demo: bool = False
    log_level: str = "info"

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            store_url=os.environ.get("OFFER_STORE_URL", DEFAULT_STORE_URL),
            demo=os.environ.get("OFFER_DEMO", "") == "1",
            log_level=os.environ.get("OFFER_LOG_LEVEL", "info"),
        )
