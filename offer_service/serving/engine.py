"""The offer engine: gathers a request's inputs from the store, caches prepared offers, and
answers `/v1/offers` with bytes.

The hot path for a warm pre-purchase request: resolve the key (cached), check the store's
version (cached, never more than a second old: see versions.py), find the prepared list for
(store, surface, anchors, version), read the visitor's state (one store round trip, only when a
visitor or customer is known, and held for up to VISITOR_TTL_S), filter, and join cached JSON
fragments. Pre-purchase tokens are
not visitor-specific, so they are signed once per prepared list; order-bound tokens are signed
per request.
"""

from __future__ import annotations

import dataclasses
import random
import secrets
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeGuard

import orjson

from offer_service.commerce.accept import Charger
from offer_service.decision import decide
from offer_service.decision.candidates import CandidateInputs
from offer_service.decision.experiments import Assignment, assign, in_holdout, variant_rules
from offer_service.decision.rules import PricedOffer, order_suppressed
from offer_service.domain.events import StoredEvent
from offer_service.domain.orders import Order
from offer_service.domain.policy import StoreRules
from offer_service.domain.products import Product
from offer_service.domain.records import EMPTY_VISITOR, PairCount, StoreRecord, VisitorState
from offer_service.domain.surfaces import SURFACES, Surface, clamp_limit
from offer_service.domain.tokens import OfferClaims, new_offer_id, order_token_valid, sign
from offer_service.exceptions import ApiError, Forbidden, NotFound, StoreError, StoreUnavailable
from offer_service.measurement.exposures import ExposureLog
from offer_service.serving.group_commit import GroupCommit
from offer_service.serving.learner import Learner
from offer_service.serving.local_cache import LocalCache
from offer_service.serving.ratelimit import RateLimiter
from offer_service.serving.versions import Versions
from offer_service.storage.protocols import Store
from offer_service.types import HOUR_MS
from offer_service.web.models import OfferQuery, OffersRequest

NEIGHBORS_PER_ANCHOR = 50
BEST_SELLERS_PER_CATEGORY = 20
# A prepared list lives this long before a background refresh; its tokens live `offer_ttl`.
PREPARED_TTL_S = 60.0
STORE_TTL_S = 5.0
# A visitor's state read for an offers request is reused for this long by later requests of the
# same visitor to this process (the store's version unchanged). Events, accepts and declines
# that go through this process forget it at once; another process's writes are seen within it.
VISITOR_TTL_S = 1.0
# On a store that lists the visitors whose signals changed (`Store.visitor_changes`), the list is
# read every VISITOR_POLL_S and the visitors it names are forgotten: another process's writes
# are then seen within VISITOR_POLL_S, and a state is held up to VISITOR_LISTED_TTL_S (its
# frequency-cap window slides meanwhile by at most that).
VISITOR_POLL_S = 0.5
VISITOR_LISTED_TTL_S = 10.0
# Each held state expires at a random point of the last fifth of its time, so visitors first
# seen together (a burst, a restart) are not all read again in the same moment.
VISITOR_JITTER = 0.2
VISITORS_MAX = 100_000
JOINED_MAX = 64
# Catalog products decoded by this process, all stores together; a store's are dropped when its
# version changes (every catalog write bumps it).
PRODUCTS_MAX = 200_000


@dataclass(slots=True)
class Prepared:
    """A cached, visitor-independent offer list for one anchor set and store version."""

    offers: list[PricedOffer]
    # Pre-purchase only: each offer's JSON split around its rank, its token signed when an
    # answer first shows the offer (`render`): most answers show only the first few of a list.
    fragments: list[tuple[bytes, bytes] | None] = field(default_factory=list)
    tokens_expire_s: int = 0
    error: ApiError | None = None
    # Joined offers (pre-purchase only) by the chosen indices, and by ("plain", limit, explore)
    # for a visitor with no history who excludes nothing (the common answer, so `finish` runs
    # once for it, and once more for its exploring variant).
    joined: dict[object, bytes] = field(default_factory=dict)
    render: Callable[[int], tuple[bytes, bytes]] | None = None

    def fragment(self, i: int) -> tuple[bytes, bytes]:
        found = self.fragments[i]
        if found is None:
            assert self.render is not None, "a pre-purchase list renders its offers"
            found = self.fragments[i] = self.render(i)
        return found

    def join(self, chosen: list[int]) -> bytes:
        key = tuple(chosen)
        body = self.joined.get(key)
        if body is None:
            parts = []
            for rank, i in enumerate(chosen, start=1):
                head, tail = self.fragment(i)
                parts.append(head + str(rank).encode() + tail)
            body = b",".join(parts)
            if len(self.joined) < JOINED_MAX:
                self.joined[key] = body
        return body


def _no_history(visitor: VisitorState) -> bool:
    """Nothing the visitor rules read: every offer is allowed, whoever asks."""
    return not (
        visitor.purchased
        or visitor.returned
        or visitor.declined
        or visitor.accepted
        or visitor.impressions
    )


def _polled_lately(
    feed: tuple[str | None, float] | None, now: float
) -> TypeGuard[tuple[str | None, float]]:
    """Whether a store's visitor changes were asked for less than VISITOR_POLL_S ago."""
    return feed is not None and now - feed[1] < VISITOR_POLL_S


def _iso(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


HOLDOUT_TAIL = b',"holdout":true,"experiment":null,"offers":[]}'


def _treatment_head(assignment: Assignment | None) -> bytes:
    if assignment is None:
        return _NO_EXPERIMENT
    return b',"holdout":false,"experiment":' + orjson.dumps(assignment.arm) + b',"offers":['


_NO_EXPERIMENT = b',"holdout":false,"experiment":null,"offers":['
# The answer's `surface` and `limit` as they follow its request id, for every pair clamp_limit
# can give.
_SURFACE_LIMITS = {
    (surface, limit): f',"surface":"{surface.value}","limit":{limit}'.encode()
    for surface, spec in SURFACES.items()
    for limit in range(1, spec.hard_max + 1)
}


def order_subject(order: Order) -> str:
    """Whose state post-purchase filters read: the order's visitor, or the order itself when the
    buyer was a guest without one (so a decline on its thank-you page is still remembered)."""
    return order.visitor_id or f"order:{order.id}"


def offer_body(offer: PricedOffer, token: str, offer_id: str, expires_s: int) -> dict[str, object]:
    product = offer.candidate.product
    return {
        "title": product.title,
        "url": product.url,
        "image_url": product.image_url,
        "reason": offer.candidate.reason,
        "price": {"amount": product.price, "currency": product.currency},
        "discount_pct": offer.discount_pct,
        "offer_price": {"amount": offer.offer_price, "currency": product.currency},
        "token": token,
        "expires_at": _iso(expires_s),
    }


class _VisitorEvents(GroupCommit):
    """Group commit that makes this process's cached state of the events' visitors stale."""

    def __init__(self, store: Store, forget: Callable[[str, Iterable[str]], None]) -> None:
        super().__init__(store)
        self._forget = forget

    async def record_events(
        self, store_id: str, events: Sequence[StoredEvent], dedupe_since_ms: int
    ) -> list[bool]:
        try:
            return await super().record_events(store_id, events, dedupe_since_ms)
        finally:
            self._forget(store_id, {e.visitor_id for e in events if e.visitor_id})


class Engine:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.charger = Charger()
        self.exposures = ExposureLog(store, clock=clock)
        # Event batches arriving together are written together (one commit).
        self.events: GroupCommit = _VisitorEvents(store, self.forget_visitors)
        # store id -> visitor id -> (customer id, store version, expiry, state); see VISITOR_TTL_S.
        self._visitors: dict[str, dict[str, tuple[str | None, int, float, VisitorState]]] = {}
        self._visitors_held = 0
        # store id -> (cursor of its visitor changes or None without a list, when last asked)
        self._visitor_feeds: dict[str, tuple[str | None, float]] = {}
        # On Redis every instance counts against one limit; in-process otherwise.
        self.limiter = RateLimiter(shared=store.shared_limits)
        # Learned P(accept) per store, refreshed in the background; `_prepare` samples from it
        # once per prepared list, and a request only flips `explores()`'s coin.
        self.learner = Learner(store, clock=clock)
        self.rng = random.Random()
        self._stores: LocalCache[str, StoreRecord | None] = LocalCache(10_000, STORE_TTL_S)
        self._versions = Versions(self.store.version, self._refresh_record)
        self._prepared: LocalCache[tuple[object, ...], Prepared] = LocalCache(
            50_000, PREPARED_TTL_S
        )
        # store id -> (store version, product id -> product); see `products`.
        self._products: dict[str, tuple[int, dict[str, Product]]] = {}

    def explores(self, rules: StoreRules) -> bool:
        """Whether this response gives its last slot to an under-explored offer."""
        return self.rng.random() < rules.learning.explore_share

    # tenants and versions

    async def store_by_key(self, key: str) -> StoreRecord | None:
        return await self._stores.get(key, lambda: self.store.store_by_key(key))

    def store_by_key_now(self, key: str) -> StoreRecord | None:
        """The key's store while its cache entry is fresh; None when `store_by_key` must
        decide."""
        entry = self._stores.fresh(key)
        return None if entry is None else entry[0]

    async def version(self, store_id: str) -> int:
        return await self._versions.get(store_id)

    async def _refresh_record(self, store_id: str) -> None:
        """Another process changed the store: its rules may have changed too."""
        fresh = await self.store.get_store(store_id)
        if fresh is not None:
            for key in (fresh.publishable_key, fresh.secret_key):
                self._stores.set(key, fresh)

    def _current(self, record: StoreRecord) -> StoreRecord:
        """The cached record, refreshed when the version changed since `record` was read."""
        fresh = self._stores.peek(record.publishable_key)
        return fresh if fresh is not None and fresh.id == record.id else record

    async def products(self, store_id: str, ids: Collection[str]) -> dict[str, Product]:
        """`Store.get_products`, with the products this process has read since the store's
        version last changed held decoded: an answer that misses the prepared-offer cache
        reads only the candidates it has not met yet, however big the catalog."""
        version = await self.version(store_id)
        held = self._products.get(store_id)
        if held is None or held[0] != version:
            held = self._products[store_id] = (version, {})
        known = held[1]
        answer = {i: known[i] for i in ids if i in known}
        if len(answer) < len(ids):
            found = await self.store.get_products(store_id, [i for i in ids if i not in known])
            answer.update(found)
            if sum(len(p) for _, p in self._products.values()) + len(found) > PRODUCTS_MAX:
                self._products.clear()
                known = {}
                self._products[store_id] = (version, known)
            # Kept under the version they were read for: a newer one starts afresh.
            known.update(found)
        return answer

    async def changed(self, record: StoreRecord) -> None:
        """Make a write made through this process visible to its very next request."""
        self._versions.set(record.id, await self.store.version(record.id))
        fresh = await self.store.get_store(record.id)
        # Retired keys too: a key rotation may just have ended their grace period.
        retired = (r.key for r in record.retired_keys)
        for key in (record.publishable_key, record.secret_key, *retired):
            self._stores.set(key, fresh)

    # the offers request

    async def offers(
        self,
        record: StoreRecord,
        req: OffersRequest | OfferQuery,
        request_id: str,
        flag: str | None = None,
    ) -> bytes:
        """The response body. `flag`: the request's invalid-traffic reason (a bot or a
        prefetch still gets offers, but its exposure is flagged, out of the holdout comparison)."""
        version = self._versions.fresh(record.id)
        if version is None:
            version = await self.version(record.id)
        record = self._current(record)
        rules = record.rules
        surface = req.surface
        limit = clamp_limit(surface, req.limit, rules.surface_counts.get(surface))
        head = b'{"request_id":' + orjson.dumps(request_id) + _SURFACE_LIMITS[surface, limit]
        if req.visitor_id and in_holdout(record.id, req.visitor_id, rules.holdout_share):
            self.exposures.seen(
                record.id, req.visitor_id, surface, holdout=True, arm=None, flag=flag
            )
            return head + HOLDOUT_TAIL
        now_s = self.clock()
        now_ms = int(now_s * 1000)
        spec = SURFACES[surface]
        if spec.post_purchase:
            return head + await self._post_purchase(record, req, version, limit, now_s, flag)

        if spec.anchor == "product":
            anchor_ids: tuple[str, ...] = (req.product_id or "",)
        else:
            anchor_ids = tuple(sorted({item.product_id for item in req.items or ()}))
        arm = assign(record.id, rules, surface, req.visitor_id)
        label = arm.arm if arm else None
        key = (record.id, surface, version, anchor_ids, label)
        held = self._prepared.fresh(key)
        if held is not None:
            prepared = held[0]
        else:
            prepared = await self._prepared.get(
                key, lambda: self._prepare(record, surface, anchor_ids, None, int(now_s), arm)
            )
        if prepared.error is None and prepared.tokens_expire_s - now_s < PREPARED_TTL_S:
            # Served stale for too long (the store was unreachable): never hand out a token
            # that is about to expire; build it again now.
            prepared = await self._prepare(record, surface, anchor_ids, None, int(now_s), arm)
            self._prepared.set(key, prepared)
        if prepared.error is not None:
            raise prepared.error
        if req.visitor_id:
            self.exposures.seen(
                record.id, req.visitor_id, surface, holdout=False, arm=label, flag=flag
            )
        visitor = self._held_visitor(record.id, req, version)
        if visitor is None:
            visitor = await self._cached_visitor(record, req, version, now_ms)
        explore = self.explores(rules)
        # Every visitor with no history who excludes nothing gets the same offers, with or
        # without the exploration slot: `finish` runs once for each.
        plain = not req.exclude and _no_history(visitor)
        plain_key = ("plain", limit, explore)
        joined = prepared.joined.get(plain_key) if plain else None
        if joined is None:
            chosen = decide.finish(
                prepared.offers,
                visitor,
                rules,
                limit=limit,
                surface=surface,
                exclude=req.exclude,
                now_ms=now_ms,
                explore=explore,
            )
            joined = prepared.join(chosen)
            # A replenish offer's due date moves with the clock, whoever asks.
            if plain and all(o.candidate.kind != "replenish" for o in prepared.offers):
                prepared.joined[plain_key] = joined
        return b"".join((head, _treatment_head(arm), joined, b"]}"))

    def _held_visitor(
        self, store_id: str, req: OffersRequest | OfferQuery, version: int
    ) -> VisitorState | None:
        """`_cached_visitor` without a coroutine when no poll of the visitor changes is due
        and the state it would answer is held; None when it must decide."""
        if not req.visitor_id:
            return None
        now = time.monotonic()
        if not _polled_lately(self._visitor_feeds.get(store_id), now):
            return None
        return self._held_state(store_id, req, version, now)

    def _held_state(
        self, store_id: str, req: OffersRequest | OfferQuery, version: int, now: float
    ) -> VisitorState | None:
        """The visitor's state held for this version and customer, until its expiry."""
        held = self._visitors.get(store_id)
        entry = None if held is None else held.get(req.visitor_id or "")
        if entry is None or entry[2] <= now or entry[1] != version or entry[0] != req.customer_id:
            return None
        return entry[3]

    async def _cached_visitor(
        self, record: StoreRecord, req: OffersRequest | OfferQuery, version: int, now_ms: int
    ) -> VisitorState:
        """The visitor's state, reused for up to VISITOR_TTL_S by this process."""
        visitor_id, customer_id = req.visitor_id, req.customer_id
        if not visitor_id:
            return await self._visitor(record, None, customer_id, record.rules, now_ms)
        now = time.monotonic()
        ttl = await self._follow_visitor_changes(record.id, now)
        found = self._held_state(record.id, req, version, now)
        if found is not None:
            return found
        state = await self._visitor(record, visitor_id, customer_id, record.rules, now_ms)
        if state is EMPTY_VISITOR:
            return state  # the store failed: nothing was read, nothing to keep
        if self._visitors_held >= VISITORS_MAX:
            self._visitors.clear()
            self._visitors_held = 0
        held = self._visitors.setdefault(record.id, {})
        if visitor_id not in held:
            self._visitors_held += 1
        expires = now + ttl * (1.0 - VISITOR_JITTER * self.rng.random())
        held[visitor_id] = (customer_id, version, expires, state)
        return state

    async def _follow_visitor_changes(self, store_id: str, now: float) -> float:
        """Forget the visitors another process changed since this one last asked (at most every
        VISITOR_POLL_S); how long a state read now may be held."""
        feed = self._visitor_feeds.get(store_id)
        if _polled_lately(feed, now):
            return VISITOR_TTL_S if feed[0] is None else VISITOR_LISTED_TTL_S
        cursor = None if feed is None else feed[0]
        self._visitor_feeds[store_id] = (cursor, now)  # one read at a time
        try:
            changes = await self.store.visitor_changes(store_id, cursor)
        except StoreError:
            # Asked again from the same cursor next time: nothing written meanwhile is missed.
            return VISITOR_TTL_S
        if changes is None:
            return VISITOR_TTL_S
        if cursor is None or changes.visitors is None:
            # No cursor to ask from (the first time): what is held may predate any change.
            self.forget_visitors(store_id)
        elif changes.visitors:
            self.forget_visitors(store_id, changes.visitors)
        self._visitor_feeds[store_id] = (changes.cursor, now)
        return VISITOR_LISTED_TTL_S

    def forget_visitors(self, store_id: str, visitor_ids: Iterable[str] | None = None) -> None:
        """Drop cached visitor state: these visitors', or the whole store's."""
        held = self._visitors.get(store_id)
        if held is None:
            return
        if visitor_ids is None:
            self._visitors_held -= len(held)
            del self._visitors[store_id]
            return
        for visitor_id in visitor_ids:
            if held.pop(visitor_id, None) is not None:
                self._visitors_held -= 1

    async def _visitor(
        self,
        record: StoreRecord,
        visitor_id: str | None,
        customer_id: str | None,
        rules: StoreRules,
        now_ms: int,
    ) -> VisitorState:
        if not visitor_id and not customer_id:
            return EMPTY_VISITOR
        since = now_ms - rules.frequency_cap.window_hours * HOUR_MS
        try:
            return await self.store.visitor_state(record.id, visitor_id, customer_id, since)
        except StoreUnavailable:
            # Offers from the cache beat no offers: without the visitor's history for a
            # moment, a product they declined or were shown often may be offered again.
            return EMPTY_VISITOR

    async def _post_purchase(
        self,
        record: StoreRecord,
        req: OffersRequest | OfferQuery,
        version: int,
        limit: int,
        now_s: float,
        flag: str | None = None,
    ) -> bytes:
        order_id = req.order_id or ""
        # Checked before the order is looked up, so order ids cannot be probed.
        if not order_token_valid(
            record.webhook_secrets, record.id, order_id, req.order_token or ""
        ):
            raise Forbidden("The order_token does not match this order.", code="bad_order_token")
        order = await self.store.get_order(record.id, order_id)
        if order is None:
            raise NotFound(
                f"Order {order_id!r} has not been sent to this store.", code="unknown_order"
            )
        surface = req.surface
        # An email or SMS link carries no visitor id: the order's buyer is bucketed instead, so
        # a holdout visitor's order gets no post-purchase offers either.
        visitor_id = req.visitor_id or order.visitor_id
        share = record.rules.holdout_share
        if visitor_id and not req.visitor_id and in_holdout(record.id, visitor_id, share):
            self.exposures.seen(record.id, visitor_id, surface, holdout=True, arm=None, flag=flag)
            return HOLDOUT_TAIL
        arm = assign(record.id, record.rules, surface, visitor_id)
        label = arm.arm if arm else None
        if visitor_id:
            self.exposures.seen(record.id, visitor_id, surface, holdout=False, arm=label, flag=flag)
        tail = _treatment_head(arm)
        if order_suppressed(order.status):
            return tail + b"]}"
        # The order's lines are in the key: an accepted offer appends one, which must not be
        # offered again.
        key = (record.id, surface, version, ("order", order_id, len(order.lines)), label)
        prepared = await self._prepared.get(
            key, lambda: self._prepare(record, surface, (), order, int(now_s), arm)
        )
        if prepared.error is not None:
            raise prepared.error
        now_ms = int(now_s * 1000)
        visitor = await self._visitor(
            record, order_subject(order), order.customer_id, record.rules, now_ms
        )
        chosen = decide.finish(
            prepared.offers,
            visitor,
            record.rules,
            limit=limit,
            surface=surface,
            exclude=req.exclude,
            now_ms=now_ms,
            explore=self.explores(record.rules),
        )
        expires = int(now_s) + record.rules.offer_ttl_seconds
        offers = []
        for rank, i in enumerate(chosen, start=1):
            offer = prepared.offers[i]
            offer_id = new_offer_id()
            token = self.sign(
                record, surface, offer, offer_id, int(now_s), expires, order_id, arm=arm
            )
            offers.append(
                orjson.dumps(
                    {
                        "offer_id": offer_id,
                        "product_id": offer.candidate.product.id,
                        "kind": offer.candidate.kind,
                        "rank": rank,
                        **offer_body(offer, token, offer_id, expires),
                    }
                )
            )
        return tail + b",".join(offers) + b"]}"

    def sign(
        self,
        record: StoreRecord,
        surface: Surface,
        offer: PricedOffer,
        offer_id: str,
        issued_s: int,
        expires_s: int,
        order_id: str | None,
        *,
        arm: Assignment | None = None,
    ) -> str:
        product = offer.candidate.product
        claims = OfferClaims(
            store_id=record.id,
            surface=surface.value,
            offer_id=offer_id,
            product_id=product.id,
            kind=offer.candidate.kind,
            price=product.price,
            discount_pct=offer.discount_pct,
            offer_price=offer.offer_price,
            currency=product.currency,
            issued_at=issued_s,
            expires_at=expires_s,
            nonce=secrets.token_urlsafe(9),
            order_id=order_id,
            arm=arm.arm if arm else None,
        )
        return sign(claims, record.signing_keys[0])

    # preparing (cache misses only)

    async def _prepare(
        self,
        record: StoreRecord,
        surface: Surface,
        anchor_ids: Sequence[str],
        order: Order | None,
        now_s: int,
        arm: Assignment | None = None,
    ) -> Prepared:
        sid = record.id
        if arm is not None:
            record = dataclasses.replace(record, rules=variant_rules(record.rules, arm.variant))
        if order is not None:
            anchor_ids = sorted(order.product_ids)
        anchors_found = await self.products(sid, anchor_ids)
        missing = [a for a in anchor_ids if a not in anchors_found]
        if missing and order is None:
            return Prepared(
                [],
                error=NotFound(
                    f"Unknown product {missing[0]!r}.",
                    code="unknown_product",
                    details=[
                        {
                            "field": "product_id" if surface == Surface.PRODUCT_PAGE else "items",
                            "message": f"{missing[0]} is not in the catalog",
                        }
                    ],
                ),
            )
        anchors = tuple(anchors_found[a] for a in anchor_ids if a in anchors_found)
        inputs = await self.gather(record, surface, anchors, order)
        offers = decide.prepare(inputs, record.rules, self.learner.current(record), self.rng)
        if SURFACES[surface].post_purchase:
            return Prepared(offers)
        expires = now_s + record.rules.offer_ttl_seconds

        def render(i: int) -> tuple[bytes, bytes]:
            offer = offers[i]
            offer_id = new_offer_id()
            token = self.sign(record, surface, offer, offer_id, now_s, expires, None, arm=arm)
            ident = orjson.dumps(
                {
                    "offer_id": offer_id,
                    "product_id": offer.candidate.product.id,
                    "kind": offer.candidate.kind,
                }
            )
            body = orjson.dumps(offer_body(offer, token, offer_id, expires))
            return ident[:-1] + b',"rank":', b"," + body[1:]

        return Prepared(offers, [None] * len(offers), expires, render=render)

    async def gather(
        self,
        record: StoreRecord,
        surface: Surface,
        anchors: Sequence[Product],
        order: Order | None,
    ) -> CandidateInputs:
        """Read from the store everything candidate generation needs for these anchors."""
        store, sid = self.store, record.id
        neighbors: dict[str, list[PairCount]] = {}
        for anchor in anchors:
            neighbors[anchor.id] = await store.neighbors(sid, anchor.id, NEIGHBORS_PER_ANCHOR)
        families = sorted({a.family for a in anchors if a.family})
        family_members = {f: await store.family_products(sid, f) for f in families}
        categories = sorted({a.category for a in anchors if a.category})
        best = {c: await store.best_sellers(sid, c, BEST_SELLERS_PER_CATEGORY) for c in categories}
        wanted: set[str] = {a.id for a in anchors}
        for anchor in anchors:
            wanted.update(anchor.complements)
        for pcs in neighbors.values():
            wanted.update(pc.product_id for pc in pcs)
        for rows in best.values():
            wanted.update(pid for pid, _ in rows)
        products = await self.products(sid, wanted)
        for members in family_members.values():
            for member in members:
                products.setdefault(member.id, member)
        counted = {a.id for a in anchors} | {
            pc.product_id for pcs in neighbors.values() for pc in pcs
        }
        return CandidateInputs(
            surface=surface,
            anchors=tuple(anchors),
            products=products,
            neighbors=neighbors,
            basket_counts=await store.product_basket_counts(sid, counted),
            basket_total=await store.basket_count(sid),
            family_members=family_members,
            category_best_sellers=best,
            order_total=order.total if order is not None else None,
            order_placed_at_ms=order.placed_at_ms if order is not None else None,
            min_pair_count=record.rules.min_pair_count,
        )
