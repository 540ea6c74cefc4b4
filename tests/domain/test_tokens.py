"""Offer tokens and order tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac

import orjson
import pytest

from offer_service.domain.records import SigningKey
from offer_service.domain.tokens import (
    BadToken,
    BundleItem,
    OfferClaims,
    order_token,
    order_token_valid,
    sign,
    verify,
)

KEY = SigningKey("k1", b"s" * 32)
OTHER = SigningKey("k2", b"t" * 32)
NOW = 1_800_000_000


def claims(**changes: object) -> OfferClaims:
    base = dict(
        store_id="st_1",
        surface="thank_you",
        offer_id="off_1",
        product_id="sd-128",
        kind="cross_sell",
        price=2999,
        discount_pct=10,
        offer_price=2699,
        currency="USD",
        issued_at=NOW,
        expires_at=NOW + 3600,
        nonce="n1",
        order_id="1001",
    )
    base.update(changes)
    return OfferClaims(**base)  # type: ignore[arg-type]


def test_a_signed_token_verifies_to_the_same_claims() -> None:
    token = sign(claims(), KEY)
    assert verify(token, [KEY], NOW + 10) == claims()


def test_a_bundle_token_binds_each_item_and_its_price() -> None:
    items = (BundleItem("cam-1", 44900, 40410), BundleItem("sd-128", 2999, 2699))
    bundle = claims(kind="bundle", product_id="cam-1", price=47899, offer_price=43109, items=items)
    assert verify(sign(bundle, KEY), [KEY], NOW).items == items
    assert verify(sign(claims(), KEY), [KEY], NOW).items == ()


@pytest.mark.parametrize(
    "raw", [{"a": 1}, [["p", 1]], [["p", "1", 2]], [[1, 2, 3]], [["p", 1, 1]] * 9]
)
def test_a_signed_token_with_malformed_bundle_items_is_rejected(raw: object) -> None:
    payload = claims().to_payload(KEY.kid)
    payload["it"] = raw
    body = _b64(orjson.dumps(payload))
    mac = _b64(hmac.new(KEY.secret, body.encode(), hashlib.sha256).digest())
    with pytest.raises(BadToken) as err:
        verify(f"{body}.{mac}", [KEY], NOW)
    assert err.value.reason == "malformed"


def test_a_token_verifies_with_any_listed_key_during_rotation() -> None:
    token = sign(claims(), KEY)
    assert verify(token, [OTHER, KEY], NOW).product_id == "sd-128"


def test_a_token_of_an_unknown_key_is_rejected() -> None:
    with pytest.raises(BadToken) as err:
        verify(sign(claims(), KEY), [OTHER], NOW)
    assert err.value.reason == "unknown_key"


def test_an_expired_token_is_rejected() -> None:
    with pytest.raises(BadToken) as err:
        verify(sign(claims(), KEY), [KEY], NOW + 3600)
    assert err.value.reason == "expired"


def test_an_expired_token_is_genuine_when_any_age_is_asked_but_a_forged_one_is_not() -> None:
    token = sign(claims(), KEY)
    assert verify(token, [KEY], NOW + 86_400, any_age=True) == claims()
    with pytest.raises(BadToken) as err:
        verify(sign(claims(), OTHER), [KEY], NOW, any_age=True)
    assert err.value.reason == "unknown_key"
    body, _, _ = token.partition(".")
    with pytest.raises(BadToken) as err:
        verify(f"{body}.{_b64(b'x' * 32)}", [KEY], NOW, any_age=True)
    assert err.value.reason == "bad_signature"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_an_edited_price_breaks_the_signature() -> None:
    token = sign(claims(), KEY)
    body, _, mac = token.partition(".")
    payload = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["op"] = 1
    forged = _b64(orjson.dumps(payload)) + "." + mac
    with pytest.raises(BadToken) as err:
        verify(forged, [KEY], NOW)
    assert err.value.reason == "bad_signature"


def test_a_token_re_signed_by_an_attacker_with_a_guessed_key_is_rejected() -> None:
    token = sign(claims(), SigningKey("k1", b"guess" * 7))
    with pytest.raises(BadToken):
        verify(token, [KEY], NOW)


@pytest.mark.parametrize("junk", ["", ".", "a.b", "a.b.c", "%%%.%%%", "x" * 5000])
def test_malformed_tokens_are_rejected_not_crashed_on(junk: str) -> None:
    with pytest.raises(BadToken):
        verify(junk, [KEY], NOW)


def test_order_token_is_the_documented_hmac() -> None:
    expected = hmac.new(b"whsec_x", b"st_1:1001", hashlib.sha256).hexdigest()
    assert order_token("whsec_x", "st_1", "1001") == expected
    assert order_token_valid(["whsec_old", "whsec_x"], "st_1", "1001", expected)
    assert not order_token_valid(["whsec_x"], "st_1", "1002", expected)


def test_a_non_ascii_order_token_is_refused_not_crashed_on() -> None:
    # Found by schemathesis: compare_digest raises on non-ASCII str.
    assert not order_token_valid(["whsec_x"], "st_1", "1001", "å" * 64)


def test_a_non_ascii_signature_is_refused_not_crashed_on() -> None:
    from offer_service.domain.signatures import verify as verify_signature

    assert not verify_signature("t=1800000000,v1=ü", b"{}", ["whsec_x"], 1_800_000_000)
