"""Every Redis key name, stream name and TTL of the Redis backend, in one place.

A store's keys all start with `offer:{<store_id>}:`: the braces are Redis Cluster's hash tag, so
every key of one store lives in one slot and a Lua script or a pipeline may touch any of them
together. The variable part of a key (a product, visitor or order id) always comes last, so two
key families can never produce the same name. Only a few keys are global (outside any store's
slot): the index from API keys to stores, the set of store ids the worker walks, and the indexes
that a URL naming no store reaches (feed keys, the codes of tracked links).
"""

from __future__ import annotations

from offer_service.types import DAY_MS

PREFIX = "offer"

# Global keys.
STORES = f"{PREFIX}:stores"  # SET of every store id: what the events worker aggregates


def key_index(api_key: str) -> str:
    """STRING: a publishable or secret key -> its store id (one namespace for both kinds)."""
    return f"{PREFIX}:key:{api_key}"


# The consumer group that aggregates every store's event stream.
GROUP = "aggregator"

# TTLs and windows.
# An event id is remembered a day (the dedupe window of POST /v1/events) plus a margin, so the
# window the caller asks for decides, never a key that expired a moment early.
EVENT_SEEN_TTL_MS = DAY_MS + 3_600_000
# Impressions older than the longest frequency-cap window (30 days) are never read again.
IMPRESSION_WINDOW_MS = 30 * DAY_MS
# A visitor's signals (impressions, clicks, declines, accepts) expire after this long without a
# new one: visitor ids are anonymous cookies, and without a bound they would grow forever.
VISITOR_TTL_S = 400 * 86_400
# The stream of visitors whose signals changed keeps about this many entries: a process that
# falls further behind than that between two reads forgets every visitor (`visitor_changes`).
VISITOR_CHANGES_KEPT = 100_000
# The score in a store's 'vstate' of a visitor whose state does not age (a decline, an accept, a
# purchase or a return): 2**52, after every epoch-ms time and exact as a double.
LASTING_SCORE = str(2**52)
# Poison entries: after this many deliveries an entry goes to the dead-letter stream.
MAX_DELIVERIES = 5
# A pending entry idle this long belongs to a consumer presumed dead: it is claimed again.
RECLAIM_IDLE_MS = 30_000
# Consumers without pending entries idle this long are removed from the group.
CONSUMER_IDLE_MS = 3_600_000


def tag(store_id: str) -> str:
    """The common prefix of a store's keys, hash tag included (Lua scripts build keys from it)."""
    return f"{PREFIX}:{{{store_id}}}:"


class StoreKeys:
    """The key names of one store."""

    __slots__ = ("prefix",)

    def __init__(self, store_id: str) -> None:
        self.prefix = tag(store_id)

    # tenant
    @property
    def record(self) -> str:
        """HASH: name, keys, secrets, rules, created, version, baskets, pairs_gen, and
        vlisted ('1': `visitor_ids` lists every visitor with a state since the store began)."""
        return self.prefix + "store"

    # catalog
    @property
    def products(self) -> str:
        """HASH: product id -> Product JSON."""
        return self.prefix + "products"

    @property
    def product_ids(self) -> str:
        """ZSET (all scores 0): product ids in byte order, for cursor paging."""
        return self.prefix + "product_ids"

    @property
    def families(self) -> str:
        """HASH: product id -> family (only products that have one)."""
        return self.prefix + "families"

    def family(self, family: str) -> str:
        """SET: the product ids of one family."""
        return self.prefix + "family:" + family

    @property
    def categories(self) -> str:
        """HASH: product id -> category, for the best-seller index of each category."""
        return self.prefix + "categories"

    @property
    def best(self) -> str:
        """ZSET: product id scored by minus its basket count (ascending = most baskets first,
        ties by id)."""
        return self.prefix + "best"

    def best_in(self, category: str) -> str:
        """ZSET: as `best`, for the products of one category."""
        return self.prefix + "best:" + category

    # orders
    @property
    def orders(self) -> str:
        """HASH: order id -> JSON [placed_ms, currency, customer, visitor, status, lines,
        returned]."""
        return self.prefix + "orders"

    @property
    def order_times(self) -> str:
        """ZSET: order id scored by placed_at_ms."""
        return self.prefix + "order_times"

    def bought(self, subject: str) -> str:
        """HASH: product id -> last purchase ms, for subject 'c:<customer>' or 'v:<visitor>'."""
        return self.prefix + "bought:" + subject

    def returned(self, subject: str) -> str:
        """HASH: product id -> last return ms."""
        return self.prefix + "returned:" + subject

    # affinity
    def pairs(self, generation: str) -> str:
        """HASH: product id -> JSON {partner: baskets}; replaced whole by a new generation."""
        return self.prefix + "pairs:" + generation

    @property
    def neighbors(self) -> str:
        """HASH: product id -> JSON [[neighbour, pair count], ...], best first."""
        return self.prefix + "neighbors"

    # visitors
    def impressions(self, visitor_id: str) -> str:
        """ZSET: '<product>\\x1f<nonce>' scored by the impression's ms."""
        return self.prefix + "vimp:" + visitor_id

    def clicks(self, visitor_id: str) -> str:
        """HASH: product id -> last click ms."""
        return self.prefix + "vclick:" + visitor_id

    def declined(self, visitor_id: str) -> str:
        """SET of product ids."""
        return self.prefix + "vdecline:" + visitor_id

    def accepted(self, visitor_id: str) -> str:
        """SET of product ids."""
        return self.prefix + "vaccept:" + visitor_id

    @property
    def visitor_ids(self) -> str:
        """ZSET: each visitor id with a state (`visitor_ids`), scored by its last impression or
        click ms, or LASTING_SCORE once a decline, accept, purchase or return gave it one
        that does not age; members past the longest frequency-cap window are trimmed."""
        return self.prefix + "vstate"

    @property
    def visitor_changes(self) -> str:
        """STREAM: a visitor id ('v') each time its signals were written (`visitor_changes`)."""
        return self.prefix + "vchanged"

    # events
    @property
    def events(self) -> str:
        """STREAM: every newly recorded event, consumed by the aggregator group."""
        return self.prefix + "events"

    @property
    def dead_letters(self) -> str:
        """STREAM: entries that failed `MAX_DELIVERIES` times, with the reason."""
        return self.prefix + "events:dead"

    def seen(self, event_id: str) -> str:
        """STRING: the received ms of a recorded event ('a' prepended once aggregated)."""
        return self.prefix + "seen:" + event_id

    def shown(self, offer_id: str, visitor_id: str) -> str:
        """STRING: a valid impression's received ms (what a click, accept or decline of the
        offer by the visitor needs); expires after `traffic.match_window_ms(surface)`."""
        return self.prefix + "shown:" + offer_id + "\x1f" + visitor_id

    def rate_windows(self, width_ms: int) -> str:
        """The prefix of the HASHes of rate-limit windows `width_ms` wide: `<prefix>:<window>`
        maps a bucket to its theoretical arrival time (microseconds, Redis's clock); the
        RATE_LIMIT script names the window from Redis's clock."""
        return f"{self.prefix}rl:{width_ms}"

    @property
    def counters(self) -> str:
        """HASH: JSON [surface, kind, product, arm, type] -> count."""
        return self.prefix + "counters"

    @property
    def event_log(self) -> str:
        """ZSET: '<hex id> <event JSON>' scored by received ms (what iter_events reads)."""
        return self.prefix + "evlog"

    # one-click accept
    def idempotency(self, key: str) -> str:
        """HASH: fp, owner, state, status, body, started, expires."""
        return self.prefix + "idem:" + key

    def accepts(self, order_id: str) -> str:
        """HASH: product id -> '<state>|<updated ms>|<idempotency key>'; state 'reserved',
        'charging' (a charge is recorded in `charges`) or 'charged'."""
        return self.prefix + "accepts:" + order_id

    def charges(self, order_id: str) -> str:
        """HASH: product id -> the charge recorded before calling (codec's JSON), kept once
        charged, dropped with a cancelled reservation."""
        return self.prefix + "charges:" + order_id

    @property
    def charges_due(self) -> str:
        """ZSET: '<hex order> <hex product>' of every unsettled recorded charge, scored by the
        ms its current call's lease ends (no call before it)."""
        return self.prefix + "chargesdue"

    @property
    def charge_calls(self) -> str:
        """HASH: '<hex order> <hex product>' -> calls leased for an unsettled recorded charge."""
        return self.prefix + "chargecalls"

    @property
    def accept_log(self) -> str:
        """ZSET: '<hex order> <hex product> <charge id>' scored by the charge's ms."""
        return self.prefix + "acclog"

    # pre-purchase offers taken
    def redemption(self, digest: str) -> str:
        """STRING: the first answer of a redeemed (cart, offer token) pair, by the pair's digest;
        expires with the answer (the token's expiry plus a day)."""
        return self.prefix + "redeemed:" + digest

    # post-purchase journeys
    def order_events(self, order_id: str) -> str:
        """SET of JSON [type, at ms, [product ids]]: an order's lifecycle events."""
        return self.prefix + "oevents:" + order_id

    def sms_consent(self, customer_id: str) -> str:
        """SET of JSON [at ms, status, source]: a customer's SMS consent changes."""
        return self.prefix + "smsconsent:" + customer_id

    @property
    def feed_keys(self) -> str:
        """LIST: the current feed key, then the previous one."""
        return self.prefix + "feedkeys"


def feed_key_index(feed_key: str) -> str:
    """STRING (global): a feed key -> its store id."""
    return f"{PREFIX}:feedkey:{feed_key}"


def short_link(code: str) -> str:
    """STRING (global): a tracked link's code -> the ShortLink JSON (it names its store)."""
    return f"{PREFIX}:link:{code}"


# Tracked links in emails and SMS keep working this long after they were first made.
SHORT_LINK_TTL_S = 400 * 86_400
