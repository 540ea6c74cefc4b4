"""An import's parsing as a job: the frames it produces, here or in a child process of its own.

A large import runs in a child (`python -m offer_service.importers.jobs FD JOB`), at a lower
CPU priority, that reads the spooled body from the inherited descriptor FD and writes its frames
to stdout as pickles: it never shares the serving process's interpreter lock, so the event loop
answers other stores at their usual pace while it parses.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pickle
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Literal

from offer_service.domain.orders import Order
from offer_service.domain.products import Product
from offer_service.exceptions import ApiError
from offer_service.importers.catalog_csv import CsvFormat, iter_catalog_csv
from offer_service.importers.catalog_json import iter_catalog_json
from offer_service.importers.online_retail import OnlineRetailImport, parse_online_retail
from offer_service.importers.orders_json import parse_orders_json
from offer_service.importers.result import ImportResult

CATALOG_BATCH = 1000  # products per frame, and so per store write
CHILD_NICENESS = 10

JobKind = Literal["catalog_csv", "catalog_json", "orders_json", "online_retail"]
Frame = list[Product] | ImportResult[Product] | ImportResult[Order] | OnlineRetailImport


@dataclass(frozen=True, slots=True)
class ImportJob:
    """What to parse a body as: its kind, the currency of items that name none, a CSV layout."""

    kind: JobKind
    currency: str
    format: CsvFormat = "auto"

    def as_argument(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_argument(cls, text: str) -> ImportJob:
        return cls(**json.loads(text))


def job_frames(job: ImportJob, source: IO[bytes]) -> Iterator[Frame]:
    """The frames of a job, in order. A catalog: lists of products, CATALOG_BATCH at a time
    until a shorter list (perhaps empty), then its ImportResult (rejections only). Orders: one
    ImportResult, or one OnlineRetailImport. An error of the body as a whole is raised before
    the first frame."""
    if job.kind == "orders_json":
        yield parse_orders_json(source)
    elif job.kind == "online_retail":
        yield parse_online_retail(source, currency=job.currency)
    else:
        result: ImportResult[Product] = ImportResult()
        if job.kind == "catalog_csv":
            products = iter_catalog_csv(source, result, job.currency, job.format)
        else:
            products = iter_catalog_json(source, result, job.currency)
        while True:
            batch = list(itertools.islice(products, CATALOG_BATCH))
            yield batch
            if len(batch) < CATALOG_BATCH:
                break
        yield result


def main(argv: Sequence[str]) -> int:
    """The child: run the job on the body at descriptor argv[0], frames to stdout."""
    os.nice(CHILD_NICENESS)  # serving comes first; an import may take longer
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames on the pipe
    job = ImportJob.from_argument(argv[1])
    with os.fdopen(int(argv[0]), "rb") as source:
        try:
            for frame in job_frames(job, source):
                pickle.dump(("frame", frame), out, pickle.HIGHEST_PROTOCOL)
                out.flush()
        except ApiError as exc:
            error = (type(exc).__name__, exc.status_code, exc.code, exc.message, exc.details)
            pickle.dump(("error", error), out, pickle.HIGHEST_PROTOCOL)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
