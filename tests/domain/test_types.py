"""The shared vocabulary's checks."""

from __future__ import annotations

import pytest

from offer_service.domain.signatures import signature, verify
from offer_service.types import is_whole
from offer_service_tools.storefront.cart import parse_cart


@pytest.mark.parametrize("text", ["0", "7", "1732000000000"])
def test_whole_numbers_are_ascii_digits(text: str) -> None:
    assert is_whole(text) and int(text) >= 0


@pytest.mark.parametrize("text", ["", "-1", "1.5", " 1", "\u00b2", "\u2460", "\u0663", "1\u00b2"])
def test_anything_else_is_not_a_whole_number(text: str) -> None:
    assert not is_whole(text)


def test_a_signature_or_cart_with_a_superscript_digit_is_refused_not_a_crash() -> None:
    secret = "whsec_test_secret"
    good = signature(secret, b"{}", 1_700_000_000)
    assert verify(good, b"{}", [secret], 1_700_000_000)
    forged = good.replace("t=1700000000", "t=\u00b2")
    assert not verify(forged, b"{}", [secret], 1_700_000_000)
    assert parse_cart("a:2|b:\u00b2|c:\u0663") == {"a": 2}
