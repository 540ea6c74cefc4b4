"""Offer service: ranked, cached upsell and cross-sell offers for every storefront surface."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
