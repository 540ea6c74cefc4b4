"""How records are stored as bytes, where the SQLite and Redis backends store them alike.

Both backends read data written by earlier releases, so every shape here is fixed: change one
and existing files and Redis data no longer read back. What only one backend stores (a Redis
order's JSON array, SQLite's order columns) stays in that backend.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from offer_service.domain.events import StoredEvent
from offer_service.domain.lifecycle import ShortLink
from offer_service.domain.orders import OfferCredit, OrderLine
from offer_service.domain.policy import StoreRules, rules_context
from offer_service.domain.products import Product
from offer_service.domain.records import ChargeAttempt, PairCount, SigningKey

# products: the Product as a JSON object of its fields


def dump_product(product: Product) -> bytes:
    return orjson.dumps(product)


def load_product(data: bytes | str) -> Product:
    fields: dict[str, Any] = orjson.loads(data)
    for name in ("tags", "complements", "flags"):
        fields[name] = tuple(fields[name])
    return Product(**fields)


# order lines: [product_id, quantity, unit price] each, followed by [offer_id, surface, kind,
# arm or null] for a line credited to an offer by its token (lines stored before that have 3)


def line_rows(lines: Iterable[OrderLine]) -> list[tuple[Any, ...]]:
    return [_line_row(line) for line in lines]


def _line_row(line: OrderLine) -> tuple[Any, ...]:
    offer = line.offer
    if offer is None:
        return (line.product_id, line.quantity, line.price)
    return (
        line.product_id,
        line.quantity,
        line.price,
        offer.offer_id,
        offer.surface,
        offer.kind,
        offer.arm,
    )


def load_lines(rows: Iterable[Sequence[Any]]) -> tuple[OrderLine, ...]:
    return tuple(
        OrderLine(row[0], row[1], row[2])
        if len(row) == 3
        else OrderLine(row[0], row[1], row[2], offer=OfferCredit(*row[3:7]))
        for row in rows
    )


def basket(rows: Iterable[Sequence[Any]]) -> frozenset[str]:
    """The products of decoded order lines."""
    return frozenset(row[0] for row in rows)


# purchase subjects: whose purchases and returns a key or row holds


def customer_subject(customer_id: str) -> str:
    return "c:" + customer_id


# Every subject of a visitor starts with this, and sorts below VISITOR_SUBJECTS_END.
VISITOR_SUBJECT = "v:"
VISITOR_SUBJECTS_END = "v;"


def visitor_subject(visitor_id: str) -> str:
    return VISITOR_SUBJECT + visitor_id


def subject_visitor(subject: str) -> str | None:
    """The visitor id of a visitor subject; None for a customer's."""
    return subject[len(VISITOR_SUBJECT) :] if subject.startswith(VISITOR_SUBJECT) else None


def subjects(customer_id: str | None, visitor_id: str | None) -> list[str]:
    """The purchase subjects of a buyer: 'c:<customer>', then 'v:<visitor>'."""
    out = []
    if customer_id:
        out.append(customer_subject(customer_id))
    if visitor_id:
        out.append(visitor_subject(visitor_id))
    return out


# tenants: signing keys as a JSON list of {"kid", "secret": hex}, the first one signs; rules as
# StoreRules JSON


def signing_key_json(key: SigningKey) -> dict[str, str]:
    return {"kid": key.kid, "secret": key.secret.hex()}


def dump_signing_keys(keys: Iterable[SigningKey]) -> bytes:
    return orjson.dumps([signing_key_json(key) for key in keys])


def load_signing_keys(data: bytes | str) -> tuple[SigningKey, ...]:
    return tuple(
        SigningKey(kid=key["kid"], secret=bytes.fromhex(key["secret"]))
        for key in orjson.loads(data)
    )


def dump_rules(rules: StoreRules) -> str:
    return rules.model_dump_json()


def load_rules(data: bytes | str) -> StoreRules:
    # Taken as stored: a charge_url saved before the checks existed must not make the store
    # unreadable; the charge client refuses it at call time.
    return StoreRules.model_validate_json(data, context=rules_context("stored"))


# pair counts: undirected, kept under both products as JSON {partner_id: baskets}


def adjacency(pairs: Iterable[tuple[str, str, int]]) -> dict[str, dict[str, int]]:
    """Undirected pair counts grouped under both products (a later repeat of a pair wins)."""
    partners: defaultdict[str, dict[str, int]] = defaultdict(dict)
    for a, b, n in pairs:
        if a != b:
            partners[a][b] = n
            partners[b][a] = n
    return partners


def both_ways(increments: Mapping[tuple[str, str], int]) -> dict[str, Counter[str]]:
    """Pair count increments grouped under both products."""
    added: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for (a, b), n in increments.items():
        if a != b:
            added[a][b] += n
            added[b][a] += n
    return added


def dump_partners(partners: Mapping[str, int]) -> bytes:
    return orjson.dumps(partners)


def add_partners(current: bytes | None, added: Counter[str]) -> bytes:
    """A stored partner map (None: none yet) with `added` counted in; counts that reach zero
    are dropped."""
    merged: Counter[str] = Counter(orjson.loads(current) if current else {})
    merged.update(added)
    return orjson.dumps({q: n for q, n in merged.items() if n > 0})


def load_partners(data: bytes) -> list[PairCount]:
    """Every partner, most shared baskets first, ties by id."""
    partners: dict[str, int] = orjson.loads(data)
    ranked = sorted(partners.items(), key=lambda item: (-item[1], item[0]))
    return [PairCount(product_id=q, pair_count=n) for q, n in ranked]


# neighbour lists: JSON [[neighbor_id, pair_count], ...] or, trained by the item model,
# [[neighbor_id, pair_count, score], ...], best first


def dump_neighbors(ranked: Iterable[PairCount]) -> bytes:
    return orjson.dumps(
        [
            (pc.product_id, pc.pair_count)
            if pc.score is None
            else (pc.product_id, pc.pair_count, pc.score)
            for pc in ranked
        ]
    )


def load_neighbors(data: bytes, limit: int) -> list[PairCount]:
    return [PairCount(*row) for row in orjson.loads(data)[:limit]]


# events: a JSON array of StoredEvent's fields in its order; counters keyed by
# (surface, kind, product_id, arm or '', type)


def event_row(e: StoredEvent, flag: str | None) -> tuple[Any, ...]:
    """The event's fields in StoredEvent's order, with `flag` as its last (built by hand:
    `dataclasses.astuple` copies every value, on the events' hot path)."""
    return (
        e.id,
        e.type,
        e.ts_ms,
        e.received_ms,
        e.visitor_id,
        e.surface,
        e.kind,
        e.product_id,
        e.offer_id,
        e.order_id,
        e.arm,
        e.offer_price,
        e.currency,
        flag,
    )


def load_event(row: Sequence[Any]) -> StoredEvent:
    return StoredEvent(*row)


def counter_key(e: StoredEvent) -> tuple[str, str, str, str, str]:
    return (e.surface, e.kind, e.product_id, e.arm or "", e.type)


# tracked short links: the ShortLink as a JSON object of its fields


def dump_short_link(link: ShortLink) -> bytes:
    return orjson.dumps(link)


def load_short_link(data: bytes | str) -> ShortLink:
    return ShortLink(**orjson.loads(data))


# charge attempts: a JSON array of the fields after the store id, in ChargeAttempt's order


def dump_charge_attempt(attempt: ChargeAttempt) -> bytes:
    return orjson.dumps(
        [
            attempt.order_id,
            attempt.product_id,
            attempt.idempotency_key,
            attempt.charge_key,
            attempt.quantity,
            attempt.unit_price,
            attempt.currency,
            attempt.offer_id,
            attempt.started_ms,
        ]
    )


def load_charge_attempt(store_id: str, data: bytes | str) -> ChargeAttempt:
    order_id, product_id, key, charge_key, quantity, unit_price, currency, offer_id, started = (
        orjson.loads(data)
    )
    return ChargeAttempt(
        store_id,
        order_id,
        product_id,
        key,
        charge_key,
        quantity,
        unit_price,
        currency,
        offer_id,
        started,
    )
