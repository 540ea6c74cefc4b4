"""The shared vocabulary's checks."""

from __future__ import annotations

import pytest

from offer_service.domain.signatures import signature, verify
from offer_service.types import WHOLE_MAX, is_whole, whole_in
from offer_service_tools.storefront.cart import parse_cart, quantity


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


def test_whole_in_reads_digits_within_bounds_however_many() -> None:
    assert whole_in("4", 1, 10) == 4
    assert whole_in("0" * 30 + "7", 1, 10) == 7  # leading zeros, past the digit bound
    assert whole_in("0" * 5000) == 0
    assert whole_in("9" * 5000) is None and whole_in("9" * 20) is None
    assert whole_in("9" * 19) == WHOLE_MAX == 10**19 - 1
    assert whole_in("11", 1, 10) is None and whole_in("0", 1, 10) is None
    for text in ("", "-1", "+1", " 1", "1.0", "\u0661", "\u00b2"):
        assert whole_in(text) is None, text


def test_a_cart_quantity_too_long_to_read_is_the_most_a_line_holds() -> None:
    assert parse_cart("a:" + "9" * 5000 + "|b:" + "0" * 5000 + "|c:3") == {"a": 99, "c": 3}
    assert quantity("9" * 5000) == 99 and quantity("x", 4) == 4
