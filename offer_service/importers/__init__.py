"""Importers: native JSON and CSV catalogs, Shopify product exports, orders, Online Retail."""

from __future__ import annotations

from offer_service.importers.catalog_csv import CsvFormat, iter_catalog_csv, parse_catalog_csv
from offer_service.importers.catalog_json import ProductIn, iter_catalog_json, parse_catalog_json
from offer_service.importers.invoice_lines import InvoiceLine, iter_invoice_lines
from offer_service.importers.online_retail import (
    OnlineRetailImport,
    OnlineRetailStats,
    parse_online_retail,
    read_online_retail,
)
from offer_service.importers.orders_json import OrderIn, OrderLineIn, parse_orders_json
from offer_service.importers.result import MAX_LISTED_REJECTIONS, ImportResult, Rejection

__all__ = [
    "MAX_LISTED_REJECTIONS",
    "CsvFormat",
    "ImportResult",
    "InvoiceLine",
    "OnlineRetailImport",
    "OnlineRetailStats",
    "OrderIn",
    "OrderLineIn",
    "ProductIn",
    "Rejection",
    "iter_catalog_csv",
    "iter_catalog_json",
    "iter_invoice_lines",
    "parse_catalog_csv",
    "parse_catalog_json",
    "parse_online_retail",
    "parse_orders_json",
    "read_online_retail",
]
