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
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from offer_service.storage.protocols import Store

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = ROOT.parent / "shared" / "datasets" / "retail-data-by-day.tar.xz"
CACHE_DIR = Path(os.environ.get("OFFER_LOAD_CACHE", Path(tempfile.gettempdir()) / "offer_load"))
# Bump when the cached JSON's layout or meaning changes.
CACHE_VERSION = 1
# A catalog holding this share of the data set's products counts as "already imported".
IMPORTED_SHARE = 0.95
ADMIN_TIMEOUT_S = 900.0
# Seeded orders per import: under the service's bulk-recount threshold, as a live store's
# orders arrive.
ORDERS_PER_IMPORT = 400


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


# --- real traffic's shape -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Traffic:
    """Who asks, in real storefront traffic: sessions of visitors out of a large population.

    A session is one visitor drawn uniformly from `population` ids; it makes a geometric number
    of page views (mean `views`: after each view it ends with probability 1/views). `sessions`
    sessions are open at once and each request goes to one of them at random, so at R requests
    a second a session's views are about sessions/R seconds apart (100,000 sessions at 5,000
    req/s: 20 s apart, a four-view session over about a minute), and a visitor the process
    served seconds ago is the exception. Every `stateful_every`-th visitor of the population
    has a history, which `seed_history` writes to the store before a run."""

    population: int = 1_000_000
    sessions: int = 100_000
    views: float = 4.0
    stateful_every: int = 10
    prefix: str = "rv-"

    def visitor(self, n: int) -> str:
        return f"{self.prefix}{n}"

    def stateful(self) -> Iterator[int]:
        return iter(range(0, self.population, self.stateful_every))


class Sessions:
    """The open sessions of a `Traffic` model: which visitor makes the next page view."""

    def __init__(self, traffic: Traffic, rng: random.Random | None = None) -> None:
        self.traffic = traffic
        self.rng = rng or random.Random()
        self.open = [self.rng.randrange(traffic.population) for _ in range(traffic.sessions)]

    def next_visitor(self) -> str:
        slot = self.rng.randrange(len(self.open))
        n = self.open[slot]
        if self.rng.random() * self.traffic.views < 1.0:
            self.open[slot] = self.rng.randrange(self.traffic.population)  # session over
        return self.traffic.visitor(n)


@dataclass(frozen=True, slots=True)
class History:
    """What each stateful visitor did before the run: `impressions` offers seen in the last
    days (some products reach the frequency cap), a decline for one in `decline_every`, and a
    one-line order for one in `purchase_every`, all of popular products."""

    impressions: int = 3
    decline_every: int = 3
    purchase_every: int = 5
    days: int = 3


async def seed_history(
    store: Store,
    store_id: str,
    traffic: Traffic,
    picker: Picker,
    history: History = History(),
    batch: int = 2_000,
) -> dict[str, int]:
    """Write the stateful visitors' history through the Store API (events and orders, as the
    service records them), so the known-visitor path is exercised. Counts of what was written."""
    from offer_service.commerce.ingest import import_orders
    from offer_service.domain.events import StoredEvent
    from offer_service.domain.orders import Order, OrderLine

    record = await store.get_store(store_id)
    assert record is not None
    now = int(time.time() * 1000)
    rng = picker.rng
    span = history.days * 86_400_000
    events: list[StoredEvent] = []
    orders: list[Order] = []
    counts = {"visitors": 0, "events": 0, "orders": 0}

    def event(kind: str, visitor: str, product: str, at: int) -> StoredEvent:
        return StoredEvent(
            id=uuid.uuid4().hex,
            type=kind,
            ts_ms=at,
            received_ms=at,
            visitor_id=visitor,
            surface="product_page",
            kind="cross_sell",
            product_id=product,
            offer_id=f"seed-{product}",
            order_id=None,
            arm=None,
            offer_price=100,
            currency="GBP",
        )

    for k, n in enumerate(traffic.stateful()):
        visitor = traffic.visitor(n)
        counts["visitors"] += 1
        for _ in range(history.impressions):
            events.append(event("impression", visitor, picker.product(), now - rng.randrange(span)))
        if k % history.decline_every == 0:
            events.append(event("decline", visitor, picker.product(), now - rng.randrange(span)))
        if k % history.purchase_every == 0:
            at = now - rng.randrange(span)
            line = OrderLine(product_id=picker.product(), quantity=1, price=100)
            orders.append(Order(f"seed-{n}", at, "GBP", (line,), visitor_id=visitor))
    # Written in the order they happened, as the service would have received them: each
    # write then covers minutes of the history (a learner reads only the writes it needs).
    events.sort(key=lambda e: e.received_ms)
    for start in range(0, len(events), batch):
        await store.record_events(store_id, events[start : start + batch], now - span)
    orders.sort(key=lambda o: o.placed_at_ms)
    for start in range(0, len(orders), ORDERS_PER_IMPORT):
        await import_orders(store, record, orders[start : start + ORDERS_PER_IMPORT], ())
    counts["events"], counts["orders"] = len(events), len(orders)
    return counts


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
