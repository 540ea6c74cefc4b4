"""Visitors' states as one service process holds them between a visitor's requests."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from typing import NamedTuple

from offer_service.domain.orders import Order
from offer_service.domain.policy import StoreRules
from offer_service.domain.records import EMPTY_VISITOR, VisitorState
from offer_service.exceptions import StoreError, StoreUnavailable
from offer_service.serving.limits import VISITORS_MAX
from offer_service.serving.visitor_index import VISITOR_INDEX_REBUILD_S, VisitorIndexes
from offer_service.storage.protocols import Store
from offer_service.types import HOUR_MS

# A visitor's state read for an offers request is reused for this long by later requests of the
# same visitor to this process (the store's version unchanged). Events, accepts and declines
# that go through this process forget it at once; another process's writes are seen within it.
VISITOR_TTL_S = 1.0
# On a store that lists the visitors whose signals changed (`Store.visitor_changes`), the list is
# read every VISITOR_POLL_S and the visitors it names are forgotten: another process's writes
# are then seen within VISITOR_POLL_S, and a state is held up to VISITOR_LISTED_TTL_S. Meanwhile
# its windows (the frequency cap's, a decline's) slide by at most that: what aged out of one is
# still counted, which can only rest an offer a little longer, never show one it forbids. Two
# minutes hold a visitor's state over a typical session's page views (about 20 s apart under
# the benchmark's real traffic): one read a session rather than one a view.
VISITOR_POLL_S = 0.5
VISITOR_LISTED_TTL_S = 120.0
# Each held state expires at a random point of the last fifth of its time, so visitors first
# seen together (a burst, a restart) are not all read again in the same moment.
VISITOR_JITTER = 0.2
# A store's visitor index answers only while the change feed was read successfully this
# recently: past it (the store fails), visitors are read from the store as without an index.
VISITOR_INDEX_FRESH_S = 2 * VISITOR_POLL_S
# Where `state` found a visitor's state, counted for the metrics.
INDEX, HELD, STORE = "index", "held", "store"


class HeldVisitor(NamedTuple):
    """A visitor's state as read for one customer id at one store version, until `expires`
    (monotonic seconds)."""

    customer_id: str | None
    version: int
    expires: float
    state: VisitorState


class Feed(NamedTuple):
    """Where this process is in a store's list of changed visitors."""

    cursor: str | None  # None: no list read yet, or the store keeps none
    asked: float  # monotonic seconds of the last read
    read: float = float("-inf")  # of the last read that listed the changes

    def polled(self, now: float) -> bool:
        """Asked within VISITOR_POLL_S: no read of the list is due."""
        return now - self.asked < VISITOR_POLL_S

    @property
    def hold_s(self) -> float:
        """How long a state read now may be held: longer once changes are listed."""
        return VISITOR_TTL_S if self.cursor is None else VISITOR_LISTED_TTL_S


def window_start(rules: StoreRules, now_ms: int) -> int:
    """The start of the frequency cap's window: impressions before it are not counted."""
    return now_ms - rules.frequency_cap.window_hours * HOUR_MS


def order_subject(order: Order) -> str:
    """Whose state post-purchase filters read: the order's visitor, or the order itself when the
    buyer was a guest without one (so a decline on its thank-you page is still remembered)."""
    return order.visitor_id or f"order:{order.id}"


def no_history(visitor: VisitorState) -> bool:
    """Nothing the visitor rules read: every offer is allowed, whoever asks."""
    return not (
        visitor.purchased
        or visitor.returned
        or visitor.declined
        or visitor.accepted
        or visitor.impressions
    )


class Visitors:
    """Reads visitors' states from the store and holds each visitor's for a while (see
    VISITOR_TTL_S): `held` answers a warm request without a coroutine, `state` any request.

    On a store with a change feed, an index of the visitors with any state (visitor_index.py)
    answers a request with a visitor id and no customer id whose visitor it does not list:
    EMPTY_VISITOR, without reading the store."""

    def __init__(
        self,
        store: Store,
        rng: random.Random,
        most: int = VISITORS_MAX,
        index_rebuild_s: float | None = VISITOR_INDEX_REBUILD_S,
    ) -> None:
        """`most`: states held, all stores together; past it they are all read again.
        `index_rebuild_s`: how often each store's index is built again (None: no index)."""
        self.store = store
        self._local = store.local_reads
        self._rng = rng
        self._most = most
        # store id -> visitor id -> what was read for that visitor
        self._held: dict[str, dict[str, HeldVisitor]] = {}
        self._count = 0
        self._feeds: dict[str, Feed] = {}
        self.indexes = None if index_rebuild_s is None else VisitorIndexes(store, index_rebuild_s)
        # The start of each store's frequency-cap window, as its last `state` call had it.
        self._since: dict[str, int] = {}
        # Where each state came from: INDEX, HELD or STORE (a read).
        self.sources = {INDEX: 0, HELD: 0, STORE: 0}

    def __len__(self) -> int:
        """How many visitors' states are held, all stores together."""
        return self._count

    def held(
        self,
        store_id: str,
        visitor_id: str | None,
        customer_id: str | None,
        version: int,
        *,
        count: bool = True,
    ) -> VisitorState | None:
        """`state`'s answer when it needs no coroutine: no poll of the store's visitor changes
        is due and this visitor's state is held. None when `state` must decide. `count`:
        whether it counts in `sources` now (else `count_held` counts it once it is used)."""
        if not visitor_id:
            return None
        now = time.monotonic()
        feed = self._feeds.get(store_id)
        if feed is None or not feed.polled(now):
            return None
        return self._known(store_id, visitor_id, customer_id, version, now, count=count)

    def count_held(self, state: VisitorState) -> None:
        """Count a state `held` answered without counting: the index's empty state, or held."""
        self.sources[INDEX if state is EMPTY_VISITOR else HELD] += 1

    def _known(
        self,
        store_id: str,
        visitor_id: str,
        customer_id: str | None,
        version: int,
        now: float,
        *,
        count: bool = True,
    ) -> VisitorState | None:
        """The visitor's state without a store read: held, or empty when the store's index
        does not list the visitor (counted by where it came from). None: read it."""
        found = self._unexpired(store_id, visitor_id, customer_id, version, now)
        if found is None and customer_id is None and self._unlisted(store_id, visitor_id, now):
            found = EMPTY_VISITOR
        if found is not None and count:
            self.count_held(found)
        return found

    def _unlisted(self, store_id: str, visitor_id: str, now: float) -> bool:
        """The store's current index says this visitor has no state."""
        feed = self._feeds.get(store_id)
        if self.indexes is None or feed is None or now - feed.read > VISITOR_INDEX_FRESH_S:
            return False
        index = self.indexes.get(store_id)
        if index is None:
            return False
        since = self._since.get(store_id)
        return since is not None and index.covers(since) and visitor_id not in index

    def _unexpired(
        self, store_id: str, visitor_id: str, customer_id: str | None, version: int, now: float
    ) -> VisitorState | None:
        """The visitor's state held for this version and customer, until its expiry."""
        by_visitor = self._held.get(store_id)
        entry = None if by_visitor is None else by_visitor.get(visitor_id)
        if (
            entry is None
            or entry.expires <= now
            or entry.version != version
            or entry.customer_id != customer_id
        ):
            return None
        return entry.state

    async def state(
        self,
        store_id: str,
        visitor_id: str | None,
        customer_id: str | None,
        rules: StoreRules,
        version: int,
        now_ms: int,
    ) -> VisitorState:
        """The visitor's state, reused for up to VISITOR_TTL_S by this process."""
        found = self.held(store_id, visitor_id, customer_id, version)
        if found is not None:
            return found
        if not visitor_id:
            return await self.read(store_id, None, customer_id, rules, now_ms)
        now = time.monotonic()
        self._since[store_id] = window_start(rules, now_ms)
        ttl = await self._follow_changes(store_id, now)
        found = self._known(store_id, visitor_id, customer_id, version, now)
        if found is not None:
            return found
        state = await self.read(store_id, visitor_id, customer_id, rules, now_ms)
        if state is EMPTY_VISITOR:
            return state  # the store failed: nothing was read, nothing to keep
        self._hold(store_id, visitor_id, customer_id, version, now, ttl, state)
        return state

    def state_now(
        self,
        store_id: str,
        visitor_id: str | None,
        customer_id: str | None,
        rules: StoreRules,
        version: int,
        now_ms: int,
    ) -> VisitorState | None:
        """`state`'s answer, read on the spot, for a visitor `held` does not hold, on a store
        whose reads are local (SQLite: `Store.local_reads`) and whose change feed was read
        within VISITOR_POLL_S (no poll due). The state is held as `state` holds it. None when
        `state` must answer: another backend, a poll due, no visitor id, or the read failed
        (`state` then reads again, and answers the failure as it does)."""
        reads = self._local
        if reads is None or not visitor_id:
            return None
        now = time.monotonic()
        feed = self._feeds.get(store_id)
        if feed is None or not feed.polled(now):
            return None
        since = self._since[store_id] = window_start(rules, now_ms)
        try:
            state = reads.visitor_state_now(store_id, visitor_id, customer_id, since)
        except StoreError:
            return None
        self.sources[STORE] += 1
        self._hold(store_id, visitor_id, customer_id, version, now, feed.hold_s, state)
        return state

    def _hold(
        self,
        store_id: str,
        visitor_id: str,
        customer_id: str | None,
        version: int,
        now: float,
        ttl: float,
        state: VisitorState,
    ) -> None:
        """Hold a state read from the store at `now` for up to `ttl` (see VISITOR_JITTER)."""
        if self._count >= self._most:
            self._held.clear()
            self._count = 0
        by_visitor = self._held.setdefault(store_id, {})
        if visitor_id not in by_visitor:
            self._count += 1
        expires = now + ttl * (1.0 - VISITOR_JITTER * self._rng.random())
        by_visitor[visitor_id] = HeldVisitor(customer_id, version, expires, state)

    async def read(
        self,
        store_id: str,
        visitor_id: str | None,
        customer_id: str | None,
        rules: StoreRules,
        now_ms: int,
    ) -> VisitorState:
        """The visitor's state from the store, within the frequency cap's window."""
        if not visitor_id and not customer_id:
            return EMPTY_VISITOR
        since = window_start(rules, now_ms)
        self.sources[STORE] += 1
        try:
            return await self.store.visitor_state(store_id, visitor_id, customer_id, since)
        except StoreUnavailable:
            # Offers from the cache beat no offers: without the visitor's history for a
            # moment, a product they declined or were shown often may be offered again.
            return EMPTY_VISITOR

    async def _follow_changes(self, store_id: str, now: float) -> float:
        """Forget the visitors another process changed since this one last asked (at most every
        VISITOR_POLL_S), and add them to the store's index; how long a state read now may be
        held."""
        feed = self._feeds.get(store_id)
        if feed is not None and feed.polled(now):
            return feed.hold_s
        cursor = None if feed is None else feed.cursor
        read = float("-inf") if feed is None else feed.read
        self._feeds[store_id] = Feed(cursor, now, read)  # one read at a time
        try:
            changes = await self.store.visitor_changes(store_id, cursor)
        except StoreError:
            # Asked again from the same cursor next time: nothing written meanwhile is missed.
            # Till then the index may miss changes: visitors are read (and fail as the store).
            self._feeds[store_id] = Feed(cursor, now)
            return VISITOR_TTL_S
        if changes is None:
            return VISITOR_TTL_S
        indexes = self.indexes
        if cursor is None or changes.visitors is None:
            # No cursor to ask from (the first time): what is held may predate any change.
            self._drop(store_id)
            if indexes is not None and cursor is not None:
                indexes.lost(store_id)  # visitors changed that no list names
        elif changes.visitors:
            self.forget(store_id, changes.visitors)
        # A write of this process's during the read (`follow_soon`) may not be in it.
        pending = self._feeds.get(store_id)
        asked = now if pending is None or pending.asked == now else pending.asked
        self._feeds[store_id] = Feed(changes.cursor, asked, now)
        since = self._since.get(store_id)
        if indexes is not None and since is not None:
            # Built from after this read: every later change reaches it through `forget`.
            indexes.follow(store_id, since)
        return VISITOR_LISTED_TTL_S

    def follow_soon(self, store_id: str) -> None:
        """Read the store's change feed before the next answer that needs it: this process
        wrote states of visitors it cannot name here (an order, a return, an accept)."""
        feed = self._feeds.get(store_id)
        if feed is not None:
            self._feeds[store_id] = feed._replace(asked=float("-inf"))

    def forget(self, store_id: str, visitor_ids: Iterable[str] | None = None) -> None:
        """Drop held states: these visitors' (their state changed: the store's index now
        lists them), or the whole store's (and the change feed is read before the next
        answer)."""
        if visitor_ids is None:
            self.follow_soon(store_id)
            self._drop(store_id)
            return
        visitor_ids = list(visitor_ids)
        if self.indexes is not None:
            self.indexes.add(store_id, visitor_ids)
        by_visitor = self._held.get(store_id)
        if by_visitor is None:
            return
        for visitor_id in visitor_ids:
            if by_visitor.pop(visitor_id, None) is not None:
                self._count -= 1

    def _drop(self, store_id: str) -> None:
        """Drop every held state of the store."""
        by_visitor = self._held.pop(store_id, None)
        if by_visitor is not None:
            self._count -= len(by_visitor)
