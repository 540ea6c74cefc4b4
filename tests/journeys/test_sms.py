"""SMS text: GSM 03.38 counting (extension characters take two), UCS-2 when a character needs
it, folding of look-alikes, and a composed offer text that never exceeds its limit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offer_service.domain.money import format_money
from offer_service.journeys.sms import (
    GSM7_LIMIT,
    UCS2_LIMIT,
    fits,
    fold,
    gsm7_length,
    measure,
    offer_text,
    ucs2_length,
)

LINK = "https://offers.test/r/AbCdEfGhIjK"


def text(title: str, sender: str = "Field & Kettle") -> str | None:
    return offer_text(
        sender=sender,
        lead="Your order is on its way! Add",
        title=title,
        price="$26.99 (10% off)",
        link=LINK,
        footer="Reply STOP to opt out",
        short_footer="STOP to end",
    )


def test_gsm7_counts_basic_characters_once_and_extension_characters_twice() -> None:
    assert gsm7_length("Hello @ £5 ¥ èé ÄÖÑÜ §¿ Ωß") == 26
    assert gsm7_length("{[~]}|\\^€") == 18
    assert gsm7_length("Café") == 4  # é is in the basic set
    assert gsm7_length("naïve") is None  # ï is not
    assert gsm7_length("☕") is None


@pytest.mark.parametrize("currency", ["USD", "EUR", "GBP", "JPY", "SEK", "HUF", "XOF", "XAF"])
def test_a_formatted_price_folds_to_gsm7(currency: str) -> None:
    # Prices print with a no-break space ("SEK 9.95") or a narrow one ("F CFA 1,500").
    assert gsm7_length(fold(format_money(-123456, currency))) is not None


def test_a_message_with_one_non_gsm_character_is_ucs2_and_limited_to_70() -> None:
    assert measure("a" * 160) == ("gsm7", 160, GSM7_LIMIT)
    assert measure("€" * 80) == ("gsm7", 160, GSM7_LIMIT)
    assert not fits("€" * 81)
    assert measure("ł" + "a" * 69) == ("ucs2", 70, UCS2_LIMIT)
    assert not fits("ł" + "a" * 70)
    # Outside the BMP a character is two UTF-16 code units.
    assert ucs2_length("😀") == 2
    assert measure("😀" * 35) == ("ucs2", 70, UCS2_LIMIT)


def test_folding_keeps_a_title_in_gsm7_when_look_alikes_exist() -> None:
    assert fold("Kettle\u2019s \u201cbest\u201d \u2014 2\u2026") == 'Kettle\'s "best" - 2...'
    assert fold("Łódź Grünkohl naïve") == "Łodz Grünkohl naive"  # Ł has no GSM look-alike
    assert fold("咖啡") == "咖啡"


def test_an_offer_text_keeps_the_whole_title_when_it_fits() -> None:
    out = text("Travel tripod")
    assert out == (
        "Field & Kettle: Your order is on its way! Add Travel tripod $26.99 (10% off) "
        f"{LINK} Reply STOP to opt out"
    )
    assert measure(out)[0] == "gsm7"


def test_a_long_title_is_shortened_with_an_ellipsis_and_never_exceeds_160() -> None:
    out = text("Carbon fibre travel tripod with ball head, quick release plate and bag " * 3)
    assert out is not None
    encoding, length, limit = measure(out)
    assert (encoding, limit) == ("gsm7", 160)
    assert length <= 160
    assert "..." in out and LINK in out and out.endswith("Reply STOP to opt out")


def test_a_title_only_ucs2_can_write_gets_the_70_character_limit() -> None:
    out = text("埃塞俄比亚 耶加雪菲 咖啡豆 手工烘焙 一公斤装", sender="Café ☕")
    assert out is not None
    encoding, length, limit = measure(out)
    assert (encoding, limit) == ("ucs2", 70)
    assert length <= 70
    assert LINK in out


def test_a_text_that_cannot_fit_is_refused_rather_than_cut() -> None:
    assert (
        offer_text(
            sender="x",
            lead="y",
            title="z",
            price="$1",
            link="https://a.test/" + "r" * 200,
            footer="",
        )
        is None
    )


@settings(max_examples=300, deadline=None)
@given(
    title=st.text(min_size=1, max_size=200),
    sender=st.text(max_size=60),
    price=st.sampled_from(["$26.99", "€12.00 (5% off)", "1500 SEK", "¥1500"]),
)
def test_every_offer_text_fits_one_message(title: str, sender: str, price: str) -> None:
    out = offer_text(
        sender=sender,
        lead="Running low? Get",
        title=title,
        price=price,
        link=LINK,
        footer="Reply STOP to opt out",
        short_footer="STOP to end",
    )
    if out is not None:
        _, length, limit = measure(out)
        assert length <= limit
        assert LINK in out
