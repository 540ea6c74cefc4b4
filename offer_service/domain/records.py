"""Records kept and passed between layers: tenants, keys, pair counts, visitor state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from offer_service.domain.orders import Order
from offer_service.domain.policy import StoreRules


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
    """How many distinct baskets hold both the anchor and `product_id`; in a neighbour list
    trained by the item model, also the model's weight of `product_id` for the anchor."""

    product_id: str
    pair_count: int
    score: float | None = None


@dataclass(frozen=True, slots=True)
class ImportCounts:
    """What `add_orders` did: new orders recorded, duplicates (same order id) skipped."""

    imported: int
    duplicates: int
    new_orders: tuple[Order, ...] = ()


# A visitor's "no thanks" to a product page's bundle is remembered under this key of the viewed
# product, not under the product itself: declining the set is not declining the product.
BUNDLE_SIGNAL_PREFIX = "bundle:"


def bundle_signal(product_id: str) -> str:
    """The signal key of the bundle of `product_id`'s page."""
    return BUNDLE_SIGNAL_PREFIX + product_id


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


@dataclass(frozen=True, slots=True)
class VisitorChanges:
    """An answer of `Store.visitor_changes`. `visitors` is None when there were too many
    changes to list: every visitor of the store may have changed."""

    cursor: str
    visitors: frozenset[str] | None = frozenset()


@dataclass(frozen=True, slots=True)
class VisitorIds:
    """A page of `Store.visitor_ids`: visitor ids with state, `next_page` to ask for the next
    (None: this was the last), and on the first page the `visitor_changes` cursor taken before
    anything was listed."""

    ids: tuple[str, ...]
    next_page: str | None = None
    cursor: str | None = None


ClaimState = Literal["claimed", "in_progress", "mismatch", "done"]
Reservation = Literal["reserved", "already_accepted", "cap_reached", "in_progress"]


@dataclass(frozen=True, slots=True)
class ChargeAttempt:
    """A charge written down before the store's charge endpoint is called, fixed from then on:
    settling an unknown outcome calls again with exactly this (the same processor key and
    amount), and the accept's answer is built from it."""

    store_id: str
    order_id: str
    product_id: str
    # The accept request that made it: a settled outcome becomes this key's answer.
    idempotency_key: str
    charge_key: str
    quantity: int
    unit_price: int
    currency: str
    offer_id: str
    started_ms: int

    @property
    def amount(self) -> int:
        return self.unit_price * self.quantity


# call: this caller may call the charge endpoint now (it holds the attempt's lease); busy:
# another caller holds the lease; lost: the reservation is not this key's.
ChargeTurn = Literal["call", "busy", "lost"]


@dataclass(frozen=True, slots=True)
class ChargeClaim:
    """The result of `record_charge`: whose turn it is, and the attempt as recorded (the first
    one written wins). `calls` counts the calls leased for it, this one included: a call after
    the first follows one whose outcome was never learnt. `charged` is True when the accept is
    recorded as charged already (only its answer was lost)."""

    turn: ChargeTurn
    attempt: ChargeAttempt | None = None
    calls: int = 0
    charged: bool = False


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """The result of claiming an Idempotency-Key: ours to run, someone else's, or answered."""

    state: ClaimState
    status: int = 0
    body: bytes = b""


# What a shopper did with an offered product; `visitor_state` reads these back.
SignalKind = Literal["impression", "click", "decline", "accept"]
