"""The offer engine: answers `/v1/offers` with bytes, from the caches it composes.

The hot path for a warm pre-purchase request: resolve the key (cached here), check the store's
version (cached, never more than a second old: versions.py), find the prepared list for (store,
surface, anchors, version) (prepared.py), take the visitor's state (no store round trip for a
visitor the store's index does not list; else one, then held a while: visitors.py), filter, and
join cached JSON fragments. Pre-purchase tokens are not visitor-specific, so they are signed
once per prepared list; order-bound tokens are signed per request. A cache miss reads its
products through products.py.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from offer_service.decision import decide
from offer_service.decision.candidates import CandidateInputs
from offer_service.decision.experiments import Assignment, assign, in_holdout, variant_rules
from offer_service.decision.rules import order_suppressed
from offer_service.decision.shipping import shortfall
from offer_service.domain.asks import OfferAsk
from offer_service.domain.events import StoredEvent
from offer_service.domain.orders import Order
from offer_service.domain.policy import StoreRules
from offer_service.domain.products import Product
from offer_service.domain.records import EMPTY_VISITOR, StoreRecord, VisitorState
from offer_service.domain.surfaces import SURFACES, Surface, clamp_limit
from offer_service.domain.tokens import new_offer_id, order_token_valid
from offer_service.exceptions import Forbidden, NotFound
from offer_service.measurement.exposures import ExposureLog
from offer_service.serving.event_rates import EventRates
from offer_service.serving.group_commit import GroupCommit
from offer_service.serving.learner import Learner
from offer_service.serving.limits import DEFAULT_LIMITS, CacheLimits
from offer_service.serving.local_cache import LocalCache
from offer_service.serving.prepared import (
    PREPARED_REFRESH_SHARE,
    PREPARED_TTL_S,
    CartLines,
    Prepared,
    cart_lines,
    free_shipping,
    pre_purchase,
    sign_offer,
)
from offer_service.serving.prepared import offer_body as offer_body
from offer_service.serving.products import Products
from offer_service.serving.ratelimit import RateLimiter
from offer_service.serving.spool import Spool
from offer_service.serving.versions import Versions
from offer_service.serving.visitor_index import VISITOR_INDEX_REBUILD_S
from offer_service.serving.visitors import Visitors, no_history
from offer_service.serving.visitors import order_subject as order_subject
from offer_service.storage.protocols import Store

NEIGHBORS_PER_ANCHOR = 50
BEST_SELLERS_PER_CATEGORY = 20
STORE_TTL_S = 5.0

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


def _head(request_id: str, surface: Surface, limit: int) -> bytes:
    """The answer's start: its request id, surface and limit."""
    return b'{"request_id":' + orjson.dumps(request_id) + _SURFACE_LIMITS[surface, limit]


class _VisitorEvents(GroupCommit):
    """Group commit that makes this process's cached state of the events' visitors stale."""

    def __init__(self, store: Store, forget: Callable[[str, Iterable[str]], None]) -> None:
        super().__init__(store)
        self._forget = forget

    async def record_events(
        self, store_id: str, events: Sequence[StoredEvent], dedupe_since_ms: int
    ) -> list[bool]:
        visitors = {e.visitor_id for e in events if e.visitor_id}
        # Before too: a request served while the write commits must not take them as stateless.
        self._forget(store_id, visitors)
        try:
            return await super().record_events(store_id, events, dedupe_since_ms)
        finally:
            self._forget(store_id, visitors)


class Engine:
    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        spool: Spool | None = None,
        limits: CacheLimits = DEFAULT_LIMITS,
        visitor_index_s: float | None = VISITOR_INDEX_REBUILD_S,
    ) -> None:
        """`spool`: where exposures go while the store cannot be reached; `limits`: how much
        each table that grows with traffic may hold; `visitor_index_s`: how often each store's
        index of visitors with a state is built again (None: no index, every visitor is read)."""
        self.store = store
        self.clock = clock
        self.exposures = ExposureLog(store, clock=clock, spool=spool, recent_max=limits.keys)
        self.rng = random.Random()
        self.visitors = Visitors(store, self.rng, limits.visitors, visitor_index_s)
        # Event batches arriving together are written together (one commit).
        self.events: GroupCommit = _VisitorEvents(store, self.visitors.forget)
        # On Redis every instance counts against one limit; in-process otherwise.
        self.limiter = RateLimiter(max_keys=limits.keys, shared=store.shared_limits)
        # Events are counted against a budget per client, and flagged past what no shopper does.
        self.event_rates = EventRates(self.limiter, max_keys=limits.keys)
        # Learned P(accept) per store, refreshed in the background; `_prepare` samples from it
        # once per prepared list, and a request only flips `explores()`'s coin.
        self.learner = Learner(store, clock=clock)
        self._stores: LocalCache[str, StoreRecord | None] = LocalCache(10_000, STORE_TTL_S)
        self._versions = Versions(self.store.version, self._refresh_record)
        self._prepared: LocalCache[tuple[object, ...], Prepared] = LocalCache(
            limits.prepared, PREPARED_TTL_S, refresh_share=PREPARED_REFRESH_SHARE
        )
        self.products = Products(store, self.version, limits.products)

    def caches(self) -> dict[str, LocalCache[Any, Any]]:
        """The in-process caches by name, for the metrics' hit rates."""
        return {"stores": self._stores, "prepared": self._prepared}

    def explores(self, rules: StoreRules) -> bool:
        """Whether this response gives its last slot to an under-explored offer."""
        return self.rng.random() < rules.learning.explore_share

    # tenants and versions

    async def store_by_key(self, key: str) -> StoreRecord | None:
        """The store of a publishable or secret key (None: no store has it), cached."""
        found = self.store_by_key_now(key)
        if found is not None:
            return found
        return await self._stores.get(key, lambda: self.store.store_by_key(key))

    def store_by_key_now(self, key: str, *, count: bool = True) -> StoreRecord | None:
        """`store_by_key`'s answer when it needs no coroutine (it asks here first): the key's
        store while its cache entry is fresh. None when `store_by_key` must decide. `count`:
        whether the read counts as a hit now (else `count_store_hit` once it is used)."""
        entry = self._stores.fresh(key, count=count)
        return None if entry is None else entry[0]

    def count_store_hit(self) -> None:
        self._stores.hits += 1

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

    async def changed(self, record: StoreRecord) -> None:
        """Make a write made through this process visible to its very next request."""
        # Orders and returns may give visitors a state: the change feed names them.
        self.visitors.follow_soon(record.id)
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
        req: OfferAsk,
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
        if req.visitor_id and in_holdout(record.id, req.visitor_id, rules.holdout_share):
            return self._holdout(record, req, request_id, limit, flag)
        now_s = self.clock()
        if SURFACES[surface].post_purchase:
            head = _head(request_id, surface, limit)
            return head + await self._post_purchase(record, req, version, limit, now_s, flag)
        key, arm, lines = self._prepared_key(record, req, version)
        held = self._prepared.fresh(key)
        if held is not None:
            prepared = held[0]
        else:
            anchor_ids = key[3]
            prepared = await self._prepared.get(
                key,
                lambda: self._prepare(record, surface, anchor_ids, None, int(now_s), arm, lines),
            )
        if prepared.error is None and now_s >= prepared.renew_s:
            # Served stale for too long (the store was unreachable), or its tokens live less
            # than two refreshes: never hand out a token that is about to expire; build it again.
            prepared = await self._prepare(record, surface, key[3], None, int(now_s), arm, lines)
            self._prepared.set(key, prepared)
        if prepared.error is not None:
            raise prepared.error
        self._exposed(record, req, arm, flag)
        visitor = self.visitors.held(record.id, req.visitor_id, req.customer_id, version)
        if visitor is None:
            now_ms = int(now_s * 1000)
            visitor = await self.visitors.state(
                record.id, req.visitor_id, req.customer_id, rules, version, now_ms
            )
        return self._joined(record, req, request_id, limit, arm, prepared, visitor, now_s)

    def offers_now(
        self,
        record: StoreRecord,
        req: OfferAsk,
        request_id: str,
        flag: str | None,
        admit: Callable[[], bool],
    ) -> bytes | None:
        """`offers`' answer when it needs no coroutine: a pre-purchase request whose store
        version (fresh), prepared list (stale ones refreshed in the background, as `offers`
        serves them) and visitor state this process holds, or reads on the spot from a local
        store (`Visitors.state_now`). `admit` is called once all of them are found, before
        anything else is noted (the exposure, the caches' hit counts): when it says False, or
        when anything is missing, the answer is None and nothing but such a read (its state
        held and counted) was done, so `offers` may answer the same request afterwards."""
        version = self._versions.fresh(record.id)
        if version is None:
            return None
        record = self._current(record)
        rules = record.rules
        surface = req.surface
        if SURFACES[surface].post_purchase:
            return None
        limit = clamp_limit(surface, req.limit, rules.surface_counts.get(surface))
        if req.visitor_id and in_holdout(record.id, req.visitor_id, rules.holdout_share):
            return self._holdout(record, req, request_id, limit, flag) if admit() else None
        now_s = self.clock()
        key, arm, lines = self._prepared_key(record, req, version)
        # Stale, it is served while it is built again in the background, as `offers` does.
        held = self._prepared.held(
            key,
            lambda: self._prepare(record, surface, key[3], None, int(now_s), arm, lines),
            count=False,
        )
        if held is None:
            return None
        prepared = held[0]
        if prepared.error is not None or now_s >= prepared.renew_s:
            return None
        # Nobody named: nobody's state to read (as `Visitors.read` answers).
        anonymous = not req.visitor_id and not req.customer_id
        visitor = (
            EMPTY_VISITOR
            if anonymous
            else self.visitors.held(
                record.id, req.visitor_id, req.customer_id, version, count=False
            )
        )
        kept = visitor is not None
        if not kept:
            # A store whose reads are local (SQLite) reads it here, as `offers` would, before
            # the limit is asked: the state is then held (and counted) whatever it says.
            visitor = self.visitors.state_now(
                record.id, req.visitor_id, req.customer_id, rules, version, int(now_s * 1000)
            )
        if visitor is None or not admit():
            return None
        self._prepared.hits += 1
        if kept and not anonymous:
            self.visitors.count_held(visitor)
        self._exposed(record, req, arm, flag)
        return self._joined(record, req, request_id, limit, arm, prepared, visitor, now_s)

    def _holdout(
        self, record: StoreRecord, req: OfferAsk, request_id: str, limit: int, flag: str | None
    ) -> bytes:
        """The answer of a holdout visitor: no offers, the exposure noted."""
        visitor_id = req.visitor_id or ""
        self.exposures.seen(record.id, visitor_id, req.surface, holdout=True, arm=None, flag=flag)
        return _head(request_id, req.surface, limit) + HOLDOUT_TAIL

    def _prepared_key(
        self, record: StoreRecord, req: OfferAsk, version: int
    ) -> tuple[tuple[Any, ...], Assignment | None, CartLines]:
        """A pre-purchase request's key in the prepared lists (its anchors fourth), its
        experiment arm and, when the cart's subtotal decides the answer, the cart's lines."""
        rules = record.rules
        surface = req.surface
        lines: CartLines = ()
        if SURFACES[surface].anchor == "product":
            anchor_ids: tuple[str, ...] = (req.product_id or "",)
        else:
            anchor_ids = tuple(sorted({item.product_id for item in req.items or ()}))
            if rules.free_shipping_threshold is not None:
                # The cart's subtotal decides the answer: what it holds is in the key.
                lines = cart_lines(req.items or ())
        arm = assign(record.id, rules, surface, req.visitor_id)
        label = arm.arm if arm else None
        return (record.id, surface, version, anchor_ids, label, lines), arm, lines

    def _exposed(
        self, record: StoreRecord, req: OfferAsk, arm: Assignment | None, flag: str | None
    ) -> None:
        if req.visitor_id:
            label = arm.arm if arm else None
            surface = req.surface
            self.exposures.seen(
                record.id, req.visitor_id, surface, holdout=False, arm=label, flag=flag
            )

    def _joined(
        self,
        record: StoreRecord,
        req: OfferAsk,
        request_id: str,
        limit: int,
        arm: Assignment | None,
        prepared: Prepared,
        visitor: VisitorState,
        now_s: float,
    ) -> bytes:
        """The answer of a pre-purchase request: the prepared offers this visitor may get."""
        rules = record.rules
        explore = self.explores(rules)
        # Every visitor with no history who excludes nothing gets the same offers, with or
        # without the exploration slot: `finish` runs once for each.
        plain = not req.exclude and no_history(visitor)
        plain_key = ("plain", limit, explore)
        joined = prepared.joined.get(plain_key) if plain else None
        if joined is None:
            chosen = decide.finish(
                prepared.offers,
                visitor,
                rules,
                limit=limit,
                surface=req.surface,
                exclude=req.exclude,
                now_ms=int(now_s * 1000),
                explore=explore,
            )
            joined = prepared.join(chosen)
            # A replenish offer's due date moves with the clock, whoever asks.
            if plain and all(o.candidate.kind != "replenish" for o in prepared.offers):
                prepared.joined[plain_key] = joined
        head = _head(request_id, req.surface, limit)
        return b"".join((head, _treatment_head(arm), joined, b"]", prepared.tail, b"}"))

    def forget_visitors(self, store_id: str, visitor_ids: Iterable[str] | None = None) -> None:
        """Drop this process's held visitor states: these visitors', or the whole store's (an
        accept or a decline changed them)."""
        self.visitors.forget(store_id, visitor_ids)

    async def _post_purchase(
        self,
        record: StoreRecord,
        req: OfferAsk,
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
        visitor = await self.visitors.read(
            record.id, order_subject(order), order.customer_id, record.rules, now_ms
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

    sign = staticmethod(sign_offer)

    # preparing (cache misses only)

    async def _prepare(
        self,
        record: StoreRecord,
        surface: Surface,
        anchor_ids: Sequence[str],
        order: Order | None,
        now_s: int,
        arm: Assignment | None = None,
        lines: CartLines = (),
    ) -> Prepared:
        sid = record.id
        if arm is not None:
            record = dataclasses.replace(record, rules=variant_rules(record.rules, arm.variant))
        if order is not None:
            anchor_ids = sorted(order.product_ids)
        anchors_found = await self.products.get(sid, anchor_ids)
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
        threshold = record.rules.free_shipping_threshold
        gap: int | None = None
        if lines and anchors:
            subtotal = sum(
                q * (p if p is not None else anchors_found[i].price) for i, q, p in lines
            )
            inputs = dataclasses.replace(inputs, cart_subtotal=subtotal)
            gap = shortfall(threshold, subtotal)
        offers = decide.prepare(inputs, record.rules, self.learner.current(record), self.rng)
        if SURFACES[surface].post_purchase:
            return Prepared(offers)
        prepared = pre_purchase(record, surface, offers, now_s, arm)
        if gap is not None and threshold is not None:
            prepared.tail = free_shipping(threshold, gap, anchors[0].currency)
        return prepared

    async def gather(
        self,
        record: StoreRecord,
        surface: Surface,
        anchors: Sequence[Product],
        order: Order | None,
    ) -> CandidateInputs:
        """Read from the store everything candidate generation needs for these anchors."""
        store, sid = self.store, record.id
        families = sorted({a.family for a in anchors if a.family})
        categories = sorted({a.category for a in anchors if a.category})
        # Two round trips on Redis, whatever the number of anchors.
        sources = await store.candidate_sources(
            sid,
            [a.id for a in anchors],
            families,
            categories,
            neighbors=NEIGHBORS_PER_ANCHOR,
            best_sellers=BEST_SELLERS_PER_CATEGORY,
        )
        neighbors, family_members = sources.neighbors, sources.family_members
        best = sources.best_sellers
        wanted: set[str] = {a.id for a in anchors}
        for anchor in anchors:
            wanted.update(anchor.complements)
        for pcs in neighbors.values():
            wanted.update(pc.product_id for pc in pcs)
        for rows in best.values():
            wanted.update(pid for pid, _ in rows)
        products = await self.products.get(sid, wanted)
        for members in family_members.values():
            for member in members:
                products.setdefault(member.id, member)
        return CandidateInputs(
            surface=surface,
            anchors=tuple(anchors),
            products=products,
            neighbors=neighbors,
            basket_counts=sources.basket_counts,
            basket_total=sources.basket_total,
            family_members=family_members,
            category_best_sellers=best,
            order_total=order.total if order is not None else None,
            order_placed_at_ms=order.placed_at_ms if order is not None else None,
            min_pair_count=record.rules.min_pair_count,
        )
