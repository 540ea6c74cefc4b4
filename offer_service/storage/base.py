"""The Store protocol every backend implements, and the records it returns.

Backends: `sqlite.py` (embedded default) and `redis.py` (Redis and Redis Cluster). The one
contract test suite in `tests/test_storage_contract.py` runs against each. Every method is async
so network backends fit; every method is scoped by `store_id` (a tenant); a backend wraps its own
errors in `StoreError` (`StoreUnavailable` when it cannot be reached at all).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from ..catalog import Product
from ..lifecycle import OrderEvent, ShortLink, SmsConsent
from ..orders import AcceptedOffer, Order, OrderLine, ProductReturn
from ..policy import StoreRules

if TYPE_CHECKING:
    from ..events import StoredEvent


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A key that signs offer tokens; `kid` travels in every token."""

    kid: str
    secret: bytes


KeyKind = Literal["publishable", "secret"]


@dataclass(frozen=True, slots=True)
class RetiredKey:
    """A publishable or secret key replaced by a rotation, still accepted until `expires_ms`."""

    key: str
    kind: KeyKind
    expires_ms: int


@dataclass(frozen=True, slots=True)
class StoreRecord:
    """A tenant: its keys, secrets and business rules."""

    id: str
    name: str
    publishable_key: str
    secret_key: str
    # The first secret signs; every one verifies (two are valid during a rotation).
    webhook_secrets: tuple[str, ...]
    # The first key signs; every one verifies.
    signing_keys: tuple[SigningKey, ...]
    rules: StoreRules
    created_at_ms: int
    # Keys replaced by a rotation, in their grace period (expired ones may linger: check).
    retired_keys: tuple[RetiredKey, ...] = ()

    @property
    def webhook_secret(self) -> str:
        return self.webhook_secrets[0]

    def key_kind(self, key: str, now_ms: int) -> KeyKind | None:
        """What `key` is to this store at `now_ms`: its publishable or secret key (current, or
        retired and still in its grace period), or None."""
        if key == self.publishable_key:
            return "publishable"
        if key == self.secret_key:
            return "secret"
        for retired in self.retired_keys:
            if retired.key == key and now_ms < retired.expires_ms:
                return retired.kind
        return None

    def secret_keys(self, now_ms: int) -> tuple[str, ...]:
        """The current secret key, then the retired ones still in their grace period."""
        retired = [r for r in self.retired_keys if r.kind == "secret" and now_ms < r.expires_ms]
        return (self.secret_key, *(r.key for r in retired))


@dataclass(frozen=True, slots=True)
class PairCount:
    """How many distinct baskets hold both the anchor and `product_id`."""

    product_id: str
    pair_count: int


@dataclass(frozen=True, slots=True)
class ImportCounts:
    """What `add_orders` did: new orders recorded, duplicates (same order id) skipped."""

    imported: int
    duplicates: int
    new_orders: tuple[Order, ...] = ()


@dataclass(frozen=True, slots=True)
class VisitorState:
    """What the per-visitor filters need about one shopper, read in one round trip.

    `purchased` maps product id to the last purchase time (epoch ms) by this customer or visitor;
    `impressions` counts impressions without a click inside the frequency-cap window.
    """

    purchased: Mapping[str, int] = field(default_factory=dict)
    returned: frozenset[str] = frozenset()
    declined: frozenset[str] = frozenset()
    accepted: frozenset[str] = frozenset()
    impressions: Mapping[str, int] = field(default_factory=dict)


EMPTY_VISITOR = VisitorState()


# More changes than this since a process last asked are not listed: it forgets every visitor.
VISITOR_CHANGES_MAX = 10_000


@dataclass(frozen=True, slots=True)
class VisitorChanges:
    """An answer of `Store.visitor_changes`. `visitors` is None when there were too many
    changes to list: every visitor of the store may have changed."""

    cursor: str
    visitors: frozenset[str] | None = frozenset()


ClaimState = Literal["claimed", "in_progress", "mismatch", "done"]
Reservation = Literal["reserved", "already_accepted", "cap_reached", "in_progress"]


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """The result of claiming an Idempotency-Key: ours to run, someone else's, or answered."""

    state: ClaimState
    status: int = 0
    body: bytes = b""


# What a shopper did with an offered product; `visitor_state` reads these back.
SignalKind = Literal["impression", "click", "decline", "accept"]


class Store(Protocol):
    """Everything the service keeps. Writes that change what offers look like (catalog, rules,
    orders) bump the store's `version`, which keys every cached candidate list."""

    # lifecycle
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None:
        """Raise StoreError when the backend cannot be reached."""
        ...

    # tenants
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

    # catalog
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

    # orders and returns
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

    # affinity
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

    # per-visitor state
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
        visitor's state only briefly)."""
        ...

    # events (POST /v1/events)
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
        self, store_id: str, since_ms: int, until_ms: int
    ) -> AsyncIterator[StoredEvent]:
        """Stored events received in [since_ms, until_ms), oldest first."""
        ...

    def iter_accepts(
        self, store_id: str, since_ms: int, until_ms: int
    ) -> AsyncIterator[AcceptedOffer]:
        """Charged one-click accepts completed in [since_ms, until_ms), oldest first."""
        ...

    # one-click accept
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
        """Forget a claim whose answer must not be replayed (a retryable failure)."""
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
        was charged, `in_progress` when another key holds a live reservation, `cap_reached` when
        the order has `cap` accepted or reserved offers; the same key re-reserves its own."""
        ...

    async def cancel_accept(
        self, store_id: str, order_id: str, product_id: str, idempotency_key: str
    ) -> None: ...

    async def complete_accept(
        self, store_id: str, order_id: str, line: OrderLine, charge_id: str, now_ms: int
    ) -> None:
        """Mark the reservation charged and append the line to the order: it now counts as
        purchased by the order's customer and visitor."""
        ...

    async def rotate_webhook_secret(self, store_id: str, new_secret: str) -> StoreRecord:
        """Make `new_secret` current and keep the previous one valid for verification."""
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

    # post-purchase journeys
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
