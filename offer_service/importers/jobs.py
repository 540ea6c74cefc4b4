"""An import as a job: what to parse a body as, and running it to its outcome."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Literal

from offer_service.domain.orders import Order
from offer_service.domain.products import Product
from offer_service.importers.catalog_csv import CsvFormat, iter_catalog_csv
from offer_service.importers.catalog_json import iter_catalog_json
from offer_service.importers.online_retail import OnlineRetailImport, parse_online_retail
from offer_service.importers.orders_json import parse_orders_json
from offer_service.importers.result import ImportResult, Rejection

CATALOG_BATCH = 1000  # products per store write

JobKind = Literal["catalog_csv", "catalog_json", "orders_json", "online_retail"]


@dataclass(frozen=True, slots=True)
class ImportJob:
    """What to parse a body as: its kind, the currency of items that name none, a CSV layout."""

    kind: JobKind
    currency: str
    format: CsvFormat = "auto"

    @property
    def is_catalog(self) -> bool:
        return self.kind.startswith("catalog")

    def as_argument(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_argument(cls, text: str) -> ImportJob:
        return cls(**json.loads(text))


@dataclass(frozen=True, slots=True)
class CatalogOutcome:
    """What a catalog import did: products written, and the rejections (see ImportResult)."""

    upserted: int
    rejected: list[Rejection]
    rejected_total: int
    rejected_count: int


Outcome = CatalogOutcome | ImportResult[Order] | OnlineRetailImport


def import_catalog(
    job: ImportJob, source: IO[bytes], write: Callable[[list[Product]], int]
) -> CatalogOutcome:
    """Parse a catalog and `write` it a batch of CATALOG_BATCH products at a time, so that its
    products never all sit in memory. The first batch is written even when empty: that checks
    the store still exists. An error of the body as a whole is raised before any write."""
    result: ImportResult[Product] = ImportResult()
    if job.kind == "catalog_csv":
        products = iter_catalog_csv(source, result, job.currency, job.format)
    else:
        products = iter_catalog_json(source, result, job.currency)
    upserted = 0
    while True:
        batch = list(itertools.islice(products, CATALOG_BATCH))
        upserted += write(batch)
        if len(batch) < CATALOG_BATCH:
            break
    return CatalogOutcome(upserted, result.rejected, result.rejected_total, result.rejected_count)


def parse_orders(job: ImportJob, source: IO[bytes]) -> ImportResult[Order] | OnlineRetailImport:
    """The orders of a body: JSON, or Online Retail invoice lines."""
    if job.kind == "online_retail":
        return parse_online_retail(source, currency=job.currency)
    return parse_orders_json(source)
