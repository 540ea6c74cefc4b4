"""The storage protocols, one per role, and `Store`, which every backend implements.

Backends: `sqlite/` (the embedded default) and `redis/` (Redis and Redis Cluster). One contract
test suite runs against each. Every method is async so network backends fit; every method is
scoped by `store_id` (a tenant); a backend wraps its own errors in `StoreError`
(`StoreUnavailable` when it cannot be reached at all). What only some backends can do is an
attribute typed by its own protocol (`Store.streams`, `Store.shared_limits`), None where the
backend cannot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from offer_service.domain.events import StoredEvent
from offer_service.domain.lifecycle import OrderEvent, ShortLink, SmsConsent
from offer_service.domain.orders import AcceptedOffer, Order, OrderLine, ProductReturn
from offer_service.domain.policy import StoreRules
from offer_service.domain.products import Product
from offer_service.domain.records import (
    ChargeAttempt,
    ChargeClaim,
    IdempotencyClaim,
    ImportCounts,
    KeyKind,
    PairCount,
    Reservation,
    SignalKind,
    SigningKey,
    StoreRecord,
    VisitorChanges,
    VisitorIds,
    VisitorState,
)
from offer_service.storage.health import AggregationLag

# More changes than this since a process last asked are not listed: it forgets every visitor.
VISITOR_CHANGES_MAX = 10_000
# Visitor ids per page of `visitor_ids`.
VISITOR_IDS_PAGE = 10_000


class Connection(Protocol):
    """Opening, closing and reaching the backend."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None:
        """Raise StoreError when the backend cannot be reached."""
        ...


class TenantStore(Protocol):
    """Stores (tenants), their keys, secrets, rules and version."""

    async def create_store(
        self,
        name: str,
        *,
        store_id: str | None = None,
        publishable_key: str | None = None,
        secret_key: str | None = None,
        webhook_secret: str | None = None,
        rules: StoreRules | None = None,
    ) -> StoreRecord:
        """Create a tenant; missing ids and secrets are generated (st_, pk_, sk_, whsec_)."""
        ...

    async def get_store(self, store_id: str) -> StoreRecord | None: ...
    async def store_by_key(self, key: str) -> StoreRecord | None:
        """Resolve a publishable or secret key to its store."""
        ...

    async def set_rules(self, store_id: str, rules: StoreRules) -> StoreRecord: ...
    async def version(self, store_id: str) -> int:
        """A number that grows whenever catalog, rules or orders change."""
        ...

    async def rotate_webhook_secret(
        self, store_id: str, new_secret: str, *, keep_previous: bool = True
    ) -> StoreRecord:
        """Make `new_secret` current and keep the previous one valid for verification, or
        (`keep_previous=False`) make it the only webhook secret. Bumps the version."""
        ...

    async def rotate_signing_key(self, store_id: str, new_key: SigningKey) -> StoreRecord:
        """Make `new_key` sign offer tokens; the previous signing key keeps verifying, and any
        older one is retired (its tokens are rejected from then on). Bumps the version."""
        ...

    async def rotate_api_key(
        self, store_id: str, kind: KeyKind, new_key: str, *, grace_ms: int, now_ms: int
    ) -> StoreRecord:
        """Make `new_key` the store's publishable or secret key. The key it replaces still
        resolves (`store_by_key`, `key_kind`) until `now_ms + grace_ms`; keys of that kind
        retired earlier expire no later than that either (so a grace of 0 revokes every old key
        of the kind at once). `new_key` must be no key of any store. Bumps the version."""
        ...


class CatalogStore(Protocol):
    """A store's products."""

    async def upsert_products(self, store_id: str, products: Sequence[Product]) -> int: ...
    async def get_products(self, store_id: str, ids: Collection[str]) -> dict[str, Product]: ...
    async def list_products(
        self, store_id: str, limit: int, after: str | None = None
    ) -> list[Product]:
        """Products ordered by id, starting after the id `after` (the cursor)."""
        ...

    async def family_products(self, store_id: str, family: str) -> list[Product]: ...
    async def best_sellers(
        self, store_id: str, category: str | None, limit: int
    ) -> list[tuple[str, int]]:
        """(product id, baskets with it), most baskets first, ties by id; None: all categories."""
        ...


class OrderStore(Protocol):
    """Orders and returns, as imported and as charged."""

    async def add_orders(self, store_id: str, orders: Sequence[Order]) -> ImportCounts:
        """Record orders (idempotent by order id): lines, purchases by customer and visitor, and
        per-product basket counts. Pair counts are written separately (`add_pair_counts`)."""
        ...

    async def get_order(self, store_id: str, order_id: str) -> Order | None: ...
    def iter_orders(self, store_id: str, since_ms: int, until_ms: int) -> AsyncIterator[Order]:
        """Orders placed in [since_ms, until_ms), oldest first, with lines, status and returns."""
        ...

    async def add_returns(self, store_id: str, returns: Sequence[ProductReturn]) -> int:
        """Record returns; a return naming every line of an order marks the order returned."""
        ...

    def iter_baskets(self, store_id: str) -> AsyncIterator[frozenset[str]]:
        """Every recorded order's distinct product ids (orders with at least one line)."""
        ...


@dataclass(frozen=True, slots=True)
class CandidateSources:
    """What candidate generation reads for a set of anchors (`AffinityStore.candidate_sources`):
    each anchor's neighbours, each family's products (by id), each category's best sellers, the
    store's basket count, and the baskets of each anchor and neighbour (those in none left out)."""

    neighbors: dict[str, list[PairCount]]
    family_members: dict[str, list[Product]]
    best_sellers: dict[str, list[tuple[str, int]]]
    basket_total: int
    basket_counts: dict[str, int]


class AffinityStore(Protocol):
    """Basket and pair counts, and the precomputed neighbour lists served from."""

    async def basket_count(self, store_id: str) -> int:
        """N: orders with at least one product line."""
        ...

    async def product_basket_counts(
        self, store_id: str, ids: Collection[str]
    ) -> dict[str, int]: ...
    async def add_pair_counts(
        self, store_id: str, increments: Mapping[tuple[str, str], int]
    ) -> None:
        """Add to undirected pair counts; keys are (a, b) with a < b."""
        ...

    async def replace_pair_counts(
        self, store_id: str, pairs: Iterable[tuple[str, str, int]]
    ) -> None:
        """Replace every pair count of the store (a < b in each triple)."""
        ...

    async def pair_counts(self, store_id: str, product_id: str) -> list[PairCount]:
        """Every product co-purchased with `product_id`, with its pair count."""
        ...

    async def set_neighbors(self, store_id: str, lists: Mapping[str, Sequence[PairCount]]) -> None:
        """Replace the precomputed, ranked top-K neighbour lists of the given products."""
        ...

    async def neighbors(self, store_id: str, product_id: str, limit: int) -> list[PairCount]:
        """The precomputed neighbour list of a product, best first."""
        ...

    async def candidate_sources(
        self,
        store_id: str,
        anchor_ids: Sequence[str],
        families: Sequence[str],
        categories: Sequence[str],
        *,
        neighbors: int,
        best_sellers: int,
    ) -> CandidateSources:
        """`neighbors(a, neighbors)` of each anchor, `family_products(f)` of each family,
        `best_sellers(c, best_sellers)` of each category, `basket_count()`, and
        `product_basket_counts` of the anchors and their neighbours, read together (on Redis in
        two round trips, whatever the anchors: a cold offer list's reads)."""
        ...


class SignalStore(Protocol):
    """What each visitor did with offered products: the per-visitor filters' input."""

    async def visitor_state(
        self, store_id: str, visitor_id: str | None, customer_id: str | None, since_ms: int
    ) -> VisitorState:
        """One round trip; impressions counted since `since_ms`."""
        ...

    async def record_visitor_signal(
        self, store_id: str, visitor_id: str, product_id: str, kind: SignalKind, at_ms: int
    ) -> None:
        """Record what a visitor did with an offered product (read back by `visitor_state`)."""
        ...

    async def visitor_changes(self, store_id: str, after: str | None) -> VisitorChanges | None:
        """The visitors of the store whose signals were written after the cursor `after`
        (by any process), and the cursor to ask from next; with `after` None, just the
        current cursor. None when this backend keeps no such list (a process then holds a
        visitor's state only briefly). Every write that gives a visitor id state is listed:
        signals, and purchases and returns under the visitor's id."""
        ...

    async def visitor_ids(
        self, store_id: str, since_ms: int, page: str | None = None
    ) -> VisitorIds | None:
        """The ids of the store's visitors with any state `visitor_state` reads without a
        customer id: a purchase or return under their visitor id, a decline or accept, or an
        impression or click since `since_ms` (ids whose state expired may be listed too). One
        page at a time, `page` None first; the first page carries the `visitor_changes`
        cursor taken before the listing began, so every write the listing may have missed is
        listed by `visitor_changes` after it. None when this backend cannot list them."""
        ...


class EventStore(Protocol):
    """Shopper events (POST /v1/events), their counters, and charged accepts for reports."""

    async def record_events(
        self, store_id: str, events: Sequence[StoredEvent], dedupe_since_ms: int
    ) -> list[bool]:
        """Store events durably (committed before returning), each id once: an id already
        stored since `dedupe_since_ms` is a duplicate. An unflagged click, accept or decline
        with no unflagged impression of the same offer and visitor received in the
        `traffic.match_window_ms(surface)` before it (earlier in the batch included) is stored
        with the flag `no_impression`. Also updates the counters per (surface, kind, product,
        arm, type), flagged events included, and, for events with a visitor, the visitor's
        signals. True = newly stored."""
        ...

    async def event_counters(self, store_id: str) -> dict[tuple[str, str, str, str, str], int]:
        """Event counts by (surface, kind, product_id, arm or "", type)."""
        ...

    def iter_events(
        self,
        store_id: str,
        since_ms: int,
        until_ms: int,
        types: frozenset[str] | None = None,
    ) -> AsyncIterator[StoredEvent]:
        """Stored events received in [since_ms, until_ms), oldest first; with `types`, only
        events of those types. Gives the event loop back every few milliseconds of work: a
        minute of a busy store's events is a hundred thousand or more."""
        ...

    def iter_accepts(
        self, store_id: str, since_ms: int, until_ms: int
    ) -> AsyncIterator[AcceptedOffer]:
        """Charged one-click accepts completed in [since_ms, until_ms), oldest first."""
        ...


class CommerceStore(Protocol):
    """Idempotency keys and accept reservations: where money moves."""

    async def claim_idempotency(
        self,
        store_id: str,
        key: str,
        fingerprint: str,
        owner: str,
        now_ms: int,
        *,
        lease_ms: int,
        ttl_ms: int,
    ) -> IdempotencyClaim:
        """Atomically claim `key` for `owner`. A finished key answers `done` with the stored
        response (or `mismatch` for another fingerprint); a running one `in_progress` unless its
        lease has run out, in which case the new owner takes it over. Keys expire after ttl."""
        ...

    async def complete_idempotency(
        self, store_id: str, key: str, owner: str, status: int, body: bytes
    ) -> None: ...

    async def release_idempotency(self, store_id: str, key: str, owner: str) -> None:
        """Give up a claim whose answer must not be replayed (a retryable failure): the key can
        be claimed again at once, but only with the same fingerprint (another is `mismatch`)."""
        ...

    async def settle_idempotency(
        self, store_id: str, key: str, answer: tuple[int, bytes] | None
    ) -> None:
        """Whoever holds the key: make `answer` (status, body) its final answer, or with None
        release it as `release_idempotency` does unless it is done. What settles a charge
        whose outcome was unknown calls it; nothing when the key has expired."""
        ...

    async def reserve_accept(
        self,
        store_id: str,
        order_id: str,
        product_id: str,
        idempotency_key: str,
        *,
        cap: int,
        now_ms: int,
        lease_ms: int,
    ) -> Reservation:
        """Atomically reserve one accept of `product_id` on the order: `already_accepted` when it
        was charged, `in_progress` when another key holds a live reservation or a recorded
        charge (whatever its age), `cap_reached` when the order has `cap` accepted or reserved
        offers; the same key re-reserves its own."""
        ...

    async def record_charge(
        self, attempt: ChargeAttempt, *, now_ms: int, lease_ms: int
    ) -> ChargeClaim:
        """Atomically write the charge down before it is made, on the reservation that
        `attempt.idempotency_key` holds, and lease the call to the caller for `lease_ms` (`call`).
        A charge already recorded there keeps its own attempt (returned); its call is `busy`
        while another caller's lease runs. A reservation charged already answers `call` with
        `charged` set (the call fetches the lost answer again)."""
        ...

    async def pending_charges(self, now_ms: int, limit: int) -> list[tuple[ChargeAttempt, int]]:
        """Recorded charges of every store not yet settled whose lease has run out, oldest
        lease first, each with the calls leased for it so far."""
        ...

    async def cancel_accept(
        self, store_id: str, order_id: str, product_id: str, idempotency_key: str
    ) -> None:
        """Drop the key's reservation and any charge recorded on it: nothing was charged."""
        ...

    async def complete_accept(
        self, store_id: str, order_id: str, line: OrderLine, charge_id: str, now_ms: int
    ) -> None:
        """Mark the reservation charged (its recorded charge settled) and append the line to the
        order, once: it now counts as purchased by the order's customer and visitor."""
        ...


class RedemptionStore(Protocol):
    """The answers of POST /v1/offers/redeem, kept so a repeat of a (cart, token) pair answers
    what its first redemption did."""

    async def remember_redemptions(
        self, store_id: str, answers: Mapping[str, tuple[bytes, int] | None], now_ms: int
    ) -> dict[str, tuple[bytes, bool]]:
        """For each key (a cart and token pair's digest), keep its answer until its expiry
        (epoch ms), unless an answer kept under the key has not expired: that first answer
        stays. A key given None is only read. The kept answer of every key that has one, and
        whether this call kept it (True) or found it (False); atomically per key."""
        ...


class JourneyStore(Protocol):
    """Post-purchase journeys: order lifecycle events, SMS consent, feed keys, short links."""

    async def add_order_event(self, store_id: str, event: OrderEvent) -> bool:
        """Record a lifecycle event of an order (shipped, delivered, returned); False when
        the very same event (type, time, products) was recorded before."""
        ...

    async def order_events(self, store_id: str, order_id: str) -> list[OrderEvent]:
        """The order's lifecycle events, oldest first."""
        ...

    async def add_sms_consent(self, store_id: str, consent: SmsConsent) -> bool:
        """Record a change of a customer's SMS consent; False when already recorded."""
        ...

    async def sms_consents(self, store_id: str, customer_id: str) -> list[SmsConsent]:
        """Every recorded change of the customer's SMS consent, oldest first."""
        ...

    async def rotate_feed_key(self, store_id: str, new_key: str) -> tuple[str, ...]:
        """Make `new_key` the store's feed key; the previous one keeps resolving until the next
        rotation, older ones stop. The store's feed keys after it, current first."""
        ...

    async def feed_keys(self, store_id: str) -> tuple[str, ...]:
        """The store's feed keys, current first (empty before the first rotation)."""
        ...

    async def store_by_feed_key(self, feed_key: str) -> str | None:
        """The id of the store a current or previous feed key belongs to."""
        ...

    async def put_short_links(self, store_id: str, links: Sequence[ShortLink]) -> None:
        """Store tracked links by code; a code already stored keeps its first link."""
        ...

    async def short_link(self, code: str) -> ShortLink | None:
        """The tracked link of a code (codes are global: a link's URL names no store)."""
        ...


class EventStreams(Protocol):
    """A backend whose events go through a stream that aggregators count (Redis)."""

    async def store_ids(self) -> list[str]: ...
    async def aggregate(self, store_id: str, consumer: str, *, count: int = ...) -> int: ...
    async def reclaim(self, store_id: str, consumer: str) -> int: ...
    async def trim_events(self, store_id: str) -> int: ...
    async def drop_idle_consumers(self, store_id: str, idle_ms: int = ...) -> int: ...
    async def aggregation_lag(self, store_id: str) -> AggregationLag:
        """How far the aggregators are behind on the store's events (pending entries, the age
        of the oldest one not yet counted)."""
        ...

    async def resend_if_restarted(self) -> int:
        """Send again the events acknowledged in the last seconds if the server restarted since
        the last call (a killed server can lose its last acknowledged writes); the events sent."""
        ...


class SharedLimits(Protocol):
    """A backend that keeps rate limits for every instance (Redis)."""

    async def rate_lease(
        self, store_id: str, bucket: str, per_second: float, burst: int, want: int
    ) -> tuple[int, float]:
        """Count up to `want` requests at once: (how many, 0.0) with at least one, or (0, the
        seconds to wait); StoreError on failure."""
        ...


class LocalReads(Protocol):
    """A backend whose reads are local to the process and answered on the calling thread
    (SQLite): what a request may read without awaiting anything."""

    def visitor_state_now(
        self, store_id: str, visitor_id: str | None, customer_id: str | None, since_ms: int
    ) -> VisitorState:
        """`SignalStore.visitor_state`, read on the spot."""
        ...


class Store(
    Connection,
    TenantStore,
    CatalogStore,
    OrderStore,
    AffinityStore,
    SignalStore,
    EventStore,
    CommerceStore,
    RedemptionStore,
    JourneyStore,
    Protocol,
):
    """Everything the service keeps. Writes that change what offers look like (catalog, rules,
    orders) bump the store's `version`, which keys every cached candidate list."""

    # Capabilities only some backends have; None where this one has not.
    @property
    def streams(self) -> EventStreams | None: ...
    @property
    def shared_limits(self) -> SharedLimits | None: ...
    @property
    def local_reads(self) -> LocalReads | None: ...
