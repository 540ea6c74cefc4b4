"""Shopper events (impression, click, add, accept, decline, view), each validated on its own.

A batch is never all-or-nothing: every event is checked separately, the good ones are stored and
each bad one is reported with its index and a stable code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from offer_service.domain.records import SigningKey
from offer_service.domain.tokens import BadToken, OfferClaims, verify
from offer_service.types import DAY_MS

EventType = Literal["impression", "click", "add", "accept", "decline", "view"]
# `add`: a pre-purchase offer put in the cart at its offered price (the snippet's add button).
EVENT_TYPES: frozenset[str] = frozenset(("impression", "click", "add", "accept", "decline", "view"))
# Recorded by the service itself, never accepted from a client: a line priced by
# POST /v1/offers/redeem for a cart, the first time (`commerce.redeem`).
REDEEM = "redeem"
MAX_EVENTS = 100
MAX_ID_LENGTH = 64
# Events stamped further than this from the server's clock are implausible: rejected.
MAX_CLOCK_SKEW_DAYS = 7
MAX_CLOCK_SKEW_MS = MAX_CLOCK_SKEW_DAYS * DAY_MS

# Genuine tokens already verified, with the keys they were verified against: the events of a
# page, and the pages of many visitors, carry the same few tokens. Expiry and the keys are
# checked again at every use; only tokens that passed `verify` are kept.
_VERIFIED: dict[str, tuple[OfferClaims, Sequence[SigningKey]]] = {}
_VERIFIED_MAX = 4096

INVALID_EVENT = "invalid_event"
BAD_TOKEN = "bad_token"


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which made building
# one cost 2 us (a tenth of an event's budget at 20,000 events/s); nothing changes one once made.
@dataclass(slots=True)
class StoredEvent:
    """A validated event with the offer it refers to, as its token proved it."""

    id: str
    type: str
    ts_ms: int
    received_ms: int
    visitor_id: str | None
    surface: str
    kind: str
    product_id: str
    offer_id: str
    order_id: str | None
    arm: str | None
    offer_price: int
    currency: str
    # Why this event is invalid traffic (`traffic.REASONS`), or None for a billable event.
    flag: str | None = None


NOT_AN_OBJECT = "The event must be a JSON object."
BAD_ID = f"id must be a string of 1 to {MAX_ID_LENGTH} characters."
BAD_TYPE = f"type must be one of {', '.join(sorted(EVENT_TYPES))}."
TS_NOT_MS = "ts must be a whole number: when the event happened, in epoch milliseconds."
TS_TOO_FAR = (
    "ts is {days:.1f} days {side} the server's clock: an event must be stamped within "
    f"{MAX_CLOCK_SKEW_DAYS} days of it (epoch milliseconds, as Date.now() gives)."
)
BAD_VISITOR_ID = "visitor_id must be a string of at most 128 characters."
NO_TOKEN = "token must be the offer's token, a string."
FORGED_TOKEN = "The token is not a valid offer token of this store (forged, edited or expired)."


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why one event of a batch was not stored: a stable code, the field, one sentence."""

    index: int
    code: str
    field: str | None = None
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "code": self.code}
        if self.field:
            out["field"] = self.field
        if self.message:
            out["message"] = self.message
        return out


def ts_problem(ts: object, now_ms: int) -> str | None:
    """Why `ts` cannot be an event's time (None if it can): not epoch ms, or too far from now."""
    if type(ts) is not int:
        return TS_NOT_MS
    if abs(ts - now_ms) > MAX_CLOCK_SKEW_MS:
        side = "before" if ts < now_ms else "after"
        return TS_TOO_FAR.format(days=abs(ts - now_ms) / DAY_MS, side=side)
    return None


def validate_event(
    index: int,
    raw: object,
    store_id: str,
    keys: Sequence[SigningKey],
    now_ms: int,
    flag: str | None = None,
) -> StoredEvent | Rejected:
    """One event of a batch: a StoredEvent (carrying the request's invalid-traffic `flag`), or
    why it was rejected."""
    if not isinstance(raw, dict):
        return Rejected(index, INVALID_EVENT, None, NOT_AN_OBJECT)
    event_id = raw.get("id")
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= MAX_ID_LENGTH:
        return Rejected(index, INVALID_EVENT, "id", BAD_ID)
    event_type = raw.get("type")
    # A str check first: an unhashable value (a JSON object) cannot be looked up in a set.
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        return Rejected(index, INVALID_EVENT, "type", BAD_TYPE)
    ts = raw.get("ts")
    if type(ts) is not int or abs(ts - now_ms) > MAX_CLOCK_SKEW_MS:  # inline: the hot path
        return Rejected(index, INVALID_EVENT, "ts", ts_problem(ts, now_ms) or "")
    visitor_id = raw.get("visitor_id")
    if visitor_id is not None and (not isinstance(visitor_id, str) or len(visitor_id) > 128):
        return Rejected(index, INVALID_EVENT, "visitor_id", BAD_VISITOR_ID)
    token = raw.get("token")
    if not isinstance(token, str):
        return Rejected(index, INVALID_EVENT, "token", NO_TOKEN)
    try:
        claims = _verify(token, keys, now_ms / 1000)
    except BadToken:
        return Rejected(index, BAD_TOKEN, "token", FORGED_TOKEN)
    if claims.store_id != store_id:
        return Rejected(index, BAD_TOKEN, "token", FORGED_TOKEN)
    # Positional, in the order of the fields: keywords take twice as long to bind.
    return StoredEvent(
        event_id,
        event_type,
        ts,
        now_ms,
        visitor_id or None,
        claims.surface,
        claims.kind,
        claims.product_id,
        claims.offer_id,
        claims.order_id,
        claims.arm,
        claims.offer_price,
        claims.currency,
        flag,
    )


def _verify(token: str, keys: Sequence[SigningKey], now_s: float) -> OfferClaims:
    """`tokens.verify`, remembering the tokens it accepted."""
    known = _VERIFIED.get(token)
    if known is not None:
        claims, verified_with = known
        if claims.expires_at > now_s and (verified_with is keys or verified_with == keys):
            return claims
    claims = verify(token, keys, now_s)
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[token] = (claims, keys)
    return claims
