"""A new tenant's record, with the ids and secrets every backend generates alike."""

from __future__ import annotations

import secrets

from offer_service.domain.policy import StoreRules
from offer_service.domain.records import KeyKind, SigningKey, StoreRecord
from offer_service.domain.signatures import new_webhook_secret
from offer_service.types import now_ms


def new_store_record(
    name: str,
    *,
    store_id: str | None = None,
    publishable_key: str | None = None,
    secret_key: str | None = None,
    webhook_secret: str | None = None,
    rules: StoreRules | None = None,
) -> StoreRecord:
    """The record `Store.create_store` writes: what is not given is generated (st_, pk_, sk_,
    whsec_, and one signing key 'k1')."""
    return StoreRecord(
        id=store_id or "st_" + secrets.token_hex(8),
        name=name,
        publishable_key=publishable_key or new_api_key("publishable"),
        secret_key=secret_key or new_api_key("secret"),
        webhook_secrets=(webhook_secret or new_webhook_secret(),),
        signing_keys=(SigningKey(kid="k1", secret=secrets.token_bytes(32)),),
        rules=rules or StoreRules(),
        created_at_ms=now_ms(),
    )


def new_api_key(kind: KeyKind) -> str:
    """A new publishable (`pk_`) or secret (`sk_`) key."""
    return (
        "pk_" + secrets.token_urlsafe(18)
        if kind == "publishable"
        else "sk_" + secrets.token_urlsafe(24)
    )
