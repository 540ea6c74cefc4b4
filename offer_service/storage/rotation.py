"""Rotating a store's API keys, alike on the admin route and on the command line."""

from __future__ import annotations

from dataclasses import dataclass

from offer_service.domain.records import KeyKind, StoreRecord
from offer_service.domain.signatures import new_webhook_secret
from offer_service.storage.protocols import Store
from offer_service.storage.tenants import new_api_key


@dataclass(frozen=True, slots=True)
class KeyRotation:
    """A rotation's outcome: the new key, the webhook secret that replaced every earlier one
    (a revocation of the secret key only), and the record as it now is."""

    key: str
    webhook_secret: str | None
    record: StoreRecord


async def rotate_api_key(
    store: Store, store_id: str, kind: KeyKind, *, grace_ms: int, now_ms: int
) -> KeyRotation:
    """Make a new `kind` key current; the old one keeps working for `grace_ms`. A secret key
    revoked at once (grace 0) takes every webhook secret with it: whoever held the old key may
    have rotated the webhook secret and kept the answer, and a webhook secret signs admin
    writes. The webhook secret is replaced first, so a failure in between leaves the current
    key able to try again."""
    webhook_secret = None
    if kind == "secret" and grace_ms <= 0:
        webhook_secret = new_webhook_secret()
        await store.rotate_webhook_secret(store_id, webhook_secret, keep_previous=False)
    key = new_api_key(kind)
    record = await store.rotate_api_key(store_id, kind, key, grace_ms=grace_ms, now_ms=now_ms)
    return KeyRotation(key, webhook_secret, record)
