"""Importers: native JSON and CSV catalogs, Shopify product exports, orders, Online Retail."""

from __future__ import annotations

from .catalog_csv import CsvFormat, parse_catalog_csv
from .catalog_json import ProductIn, parse_catalog_json
from .invoice_lines import InvoiceLine, iter_invoice_lines
from .online_retail import (
    OnlineRetailImport,
    OnlineRetailStats,
    parse_online_retail,
    read_online_retail,
)
from .orders_json import OrderIn, OrderLineIn, parse_orders_json
from .result import ImportResult, Rejection

__all__ = [
    "CsvFormat",
    "ImportResult",
    "InvoiceLine",
    "OnlineRetailImport",
    "OnlineRetailStats",
    "OrderIn",
    "OrderLineIn",
    "ProductIn",
    "Rejection",
    "iter_invoice_lines",
    "parse_catalog_csv",
    "parse_catalog_json",
    "parse_online_retail",
    "parse_orders_json",
    "read_online_retail",
]
