"""The merchant's charge endpoint for the tests: the tools' charge double, one definition."""

from __future__ import annotations

from offer_service_tools.charge_double import ChargeDouble, running_charge_double

__all__ = ["ChargeDouble", "running_charge_double"]
