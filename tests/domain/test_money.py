"""The one money formatter: what the snippet's Intl.NumberFormat prints, from the same table."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from offer_service.domain.money import (
    MINOR_UNIT_DIGITS,
    THREE_DIGIT_CURRENCIES,
    ZERO_DIGIT_CURRENCIES,
    format_money,
    minor_unit_digits,
)

SNIPPET = Path(__file__).parents[2] / "sdk_js" / "src" / "offers.js"
PROJECT_CURRENCIES = [
    "USD", "EUR", "GBP", "JPY", "HUF", "TWD", "ISK", "KWD", "BHD", "JOD", "OMR", "TND", "IQD",
    "LYD", "KRW", "VND", "CLP", "UGX", "XOF", "XAF", "XPF", "BIF", "DJF", "GNF", "KMF", "PYG",
    "RWF", "VUV", "MGA", "SEK", "CHF", "CAD", "AUD", "INR", "CNY", "COP", "IDR", "XCG",
]  # fmt: skip
AMOUNTS = [
    0, 1, 5, 9, 10, 49, 50, 99, 100, 105, 995, 1005, 1234, 1500, 2999, 12950, 99999, 100000,
    119900, 123456789, 9007199254740991, -1, -50, -250, -12950, -123456789,
]  # fmt: skip
# Averages (the dashboard's): halves, float noise, and a tiny negative that rounds to zero.
FRACTIONS = [100.5, 123456.5, 0.4, -0.4, 2.675, 1234.565, 1e-9, -1e-9, 5e20]


def node(script: str, *args: str, stdin: str = "") -> Any:
    """What `node -e script args...` prints, read as JSON."""
    out = subprocess.run(
        ["node", "-e", script, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def intl(cases: list[tuple[float, str, bool]]) -> list[str]:
    """What node's Intl.NumberFormat('en-US') prints for each case, dividing like the snippet."""
    script = (
        "const digits = JSON.parse(process.argv[1]);"
        "const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "console.log(JSON.stringify(cases.map(([a, c, s]) => new Intl.NumberFormat('en-US',"
        " {style: 'currency', currency: c, signDisplay: s ? 'exceptZero' : 'auto'})"
        ".format(a / 10 ** (digits[c] ?? 2)))));"
    )
    result: list[str] = node(script, json.dumps(MINOR_UNIT_DIGITS), stdin=json.dumps(cases))
    return result


def node_currencies() -> list[str]:
    codes: list[str] = node("console.log(JSON.stringify(Intl.supportedValuesOf('currency')))")
    return codes


needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


@needs_node
def test_every_project_currency_prints_as_intl_does_byte_for_byte() -> None:
    cases = [
        (float(a), c, s)
        for c in PROJECT_CURRENCIES
        for a in [*AMOUNTS, *FRACTIONS]
        for s in (False, True)
    ]
    expected = intl(cases)
    got = [format_money(a, c, signed=s) for a, c, s in cases]
    assert [g for g, e in zip(got, expected, strict=True) if g != e] == []
    assert got == expected


@needs_node
def test_every_currency_intl_knows_prints_the_same() -> None:
    cases = [(float(a), c, False) for c in node_currencies() for a in (0, -1, 12950, 123456789)]
    got = [format_money(a, c) for a, c, _ in cases]
    assert got == intl(cases)


def test_the_snippet_divides_by_the_same_minor_unit_digits() -> None:
    source = SNIPPET.read_text(encoding="utf-8")
    zero = re.search(r"const DIGITS0 = '([A-Z ]+)'", source)
    three = re.search(r"const DIGITS3 = '([A-Z ]+)'", source)
    assert zero is not None and three is not None, "offers.js: DIGITS0 and DIGITS3 not found"
    assert zero.group(1).split() == ZERO_DIGIT_CURRENCIES.split()
    assert three.group(1).split() == THREE_DIGIT_CURRENCIES.split()


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (12999, "USD", "$129.99"),
        (49900, "USD", "$499.00"),
        (119900, "USD", "$1,199.00"),
        (1500, "JPY", "¥1,500"),
        (1500, "ISK", "ISK\u00a01,500"),
        (12950, "HUF", "HUF\u00a0130"),
        (12950, "TWD", "NT$129.50"),
        (1500, "KWD", "KWD\u00a01.500"),
        (995, "SEK", "SEK\u00a09.95"),
        (-250, "EUR", "-€2.50"),
    ],
)
def test_minor_units_print_in_the_currency_s_major_unit(
    amount: int, currency: str, text: str
) -> None:
    assert format_money(amount, currency) == text


def test_minor_unit_digits_are_iso_4217() -> None:
    assert [minor_unit_digits(c) for c in ("USD", "JPY", "HUF", "TWD", "KWD", "jpy")] == [
        2,
        0,
        2,
        2,
        3,
        0,
    ]


def test_signed_amounts_show_plus_above_zero_only() -> None:
    assert format_money(250, "EUR", signed=True) == "+€2.50"
    assert format_money(-250, "EUR", signed=True) == "-€2.50"
    assert format_money(0, "EUR", signed=True) == "€0.00"
    assert format_money(-0.4, "USD") == "-$0.00"
