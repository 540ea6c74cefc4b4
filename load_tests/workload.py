"""What simulated shoppers ask for: products, popularity, real baskets and customers of a data set.

The shoppers browse the Online Retail data set (UCI 352) as its real customers did: a product page
is chosen with the probability that a real basket holds the product, a cart is a few items of a
real basket, a logged-in shopper is a real customer id (so "never offer what they bought" has real
histories to read). The data set is parsed with the service's own importer, so product ids are
exactly the ones `offer-service import orders --format online-retail` creates, and the result
is cached as JSON (parsing half a million invoice lines takes seconds; the cache, milliseconds).

This module also talks to a deployment's admin API for the set-up a load test needs: which
products its catalog holds, and importing the data set over HTTP when it does not hold them yet.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = ROOT.parent / "shared" / "datasets" / "retail-data-by-day.tar.xz"
CACHE_DIR = Path(os.environ.get("OFFER_LOAD_CACHE", Path(tempfile.gettempdir()) / "offer_load"))
# Bump when the cached JSON's layout or meaning changes.
CACHE_VERSION = 1
# A catalog holding this share of the data set's products counts as "already imported".
IMPORTED_SHARE = 0.95
ADMIN_TIMEOUT_S = 900.0


@dataclass(frozen=True, slots=True)
class Workload:
    """The shoppers' view of one store's data."""

    products: list[str]
    # Baskets holding each product: how often a shopper lands on its page.
    weights: list[int]
    # Distinct product ids of real orders with at least two products.
    baskets: list[list[str]]
    customers: list[str]

    def restricted_to(self, catalog: set[str]) -> Workload:
        """Only products the deployment's catalog holds (a partial import, another store)."""
        kept = [(p, w) for p, w in zip(self.products, self.weights, strict=True) if p in catalog]
        baskets = [[p for p in b if p in catalog] for b in self.baskets]
        return Workload(
            products=[p for p, _ in kept],
            weights=[w for _, w in kept],
            baskets=[b for b in baskets if len(b) >= 2],
            customers=self.customers,
        )


class Picker:
    """Weighted random choices over a workload, cheap enough for every simulated request."""

    def __init__(self, workload: Workload, rng: random.Random | None = None) -> None:
        self.workload = workload
        self.rng = rng or random.Random()
        cumulative = 0
        self._cum: list[int] = []
        for w in workload.weights:
            cumulative += max(w, 1)
            self._cum.append(cumulative)

    def product(self) -> str:
        return self.rng.choices(self.workload.products, cum_weights=self._cum, k=1)[0]

    def cart(self, most: int = 3) -> list[str]:
        """1 to `most` distinct items of one real basket (carts are small; baskets are not)."""
        basket = self.rng.choice(self.workload.baskets)
        return self.rng.sample(basket, self.rng.randint(1, min(most, len(basket))))

    def customer(self) -> str:
        return self.rng.choice(self.workload.customers)


def _cache_path(dataset: Path) -> Path:
    stat = dataset.stat()
    key = f"{CACHE_VERSION}:{dataset.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return CACHE_DIR / f"workload-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def from_dataset(dataset: Path = DEFAULT_DATASET) -> Workload:
    """The workload of an Online Retail file or archive (parsed once, then cached)."""
    cached = _cache_path(dataset)
    if cached.exists():
        return Workload(**json.loads(cached.read_bytes()))
    from offer_service.importers import read_online_retail

    parsed = read_online_retail(dataset)
    popularity: Counter[str] = Counter()
    baskets = []
    for order in parsed.orders:
        ids = sorted(order.product_ids)
        popularity.update(ids)
        if len(ids) >= 2:
            baskets.append(ids)
    offered = {p.id for p in parsed.products}
    products = sorted(p for p in popularity if p in offered)
    workload = Workload(
        products=products,
        weights=[popularity[p] for p in products],
        baskets=baskets,
        customers=sorted({o.customer_id for o in parsed.orders if o.customer_id}),
    )
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(workload)))
    tmp.replace(cached)
    return workload


# --- the deployment's admin API -----------------------------------------------------------------


class AdminError(RuntimeError):
    """An admin call failed; the message carries the status and the service's error body."""


def admin_call(
    host: str,
    secret_key: str,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str = "application/json",
    timeout: float = 30.0,
) -> Any:
    """One admin request with the secret key; the decoded JSON answer."""
    request = urllib.request.Request(
        host.rstrip("/") + path,
        data=body,
        method=method,
        headers={"Authorization": f"Bearer {secret_key}", "Content-Type": content_type},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:500].decode("utf-8", "replace")
        raise AdminError(f"{method} {path} answered {exc.code}: {detail}") from None
    except OSError as exc:
        raise AdminError(f"{method} {path} failed: {exc}") from None


def catalog_ids(host: str, secret_key: str) -> set[str]:
    """Every product id of the store's catalog (GET /v1/admin/catalog, 1000 per page)."""
    from offer_service.web.models import CatalogPage

    ids: set[str] = set()
    cursor = ""
    while True:
        query = urllib.parse.urlencode({"limit": 1000, **({"cursor": cursor} if cursor else {})})
        raw = admin_call(host, secret_key, "GET", f"/v1/admin/catalog?{query}")
        page = CatalogPage.model_validate(raw)
        ids.update(p.id for p in page.products)
        if not page.next_cursor:
            return ids
        cursor = page.next_cursor


def online_retail_csv(dataset: Path) -> bytes:
    """One CSV of the whole data set: an archive's daily files joined under a single header."""
    if not tarfile.is_tarfile(dataset):
        return dataset.read_bytes()
    out = io.BytesIO()
    header: bytes | None = None
    with tarfile.open(dataset, "r:*") as archive:
        members = sorted(
            (m for m in archive.getmembers() if m.isfile() and m.name.endswith(".csv")),
            key=lambda m: m.name,
        )
        for member in members:
            handle = archive.extractfile(member)
            if handle is None:
                continue
            first, _, rest = handle.read().partition(b"\n")
            if header is None:
                header = first
                out.write(first + b"\n")
            elif first != header:
                rest = first + b"\n" + rest
            out.write(rest if rest.endswith(b"\n") else rest + b"\n")
    return out.getvalue()


def ensure_imported(host: str, secret_key: str, dataset: Path, workload: Workload) -> str:
    """Import the data set's orders over HTTP unless the catalog already holds its products.
    Idempotent: the service de-duplicates orders by id. A one-line summary of what happened."""
    present = catalog_ids(host, secret_key)
    share = sum(1 for p in workload.products if p in present) / max(len(workload.products), 1)
    if share >= IMPORTED_SHARE:
        return f"catalog already holds {share:.0%} of the data set's products: no import"
    answer = admin_call(
        host,
        secret_key,
        "POST",
        "/v1/admin/orders?currency=GBP",
        online_retail_csv(dataset),
        "text/csv",
        timeout=ADMIN_TIMEOUT_S,
    )
    return (
        f"imported {answer['imported']} orders ({answer['duplicates']} duplicates, "
        f"{answer['returns']} returns, {len(answer['rejected'])} rejected)"
    )
