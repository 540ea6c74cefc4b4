"""Money as text: ISO 4217 minor units in, what `Intl.NumberFormat('en-US')` prints out."""

from __future__ import annotations

import decimal
import math
import unicodedata
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal

# Ten billion in major units: far above any real price or threshold, far below int64 trouble.
MAX_MINOR_UNITS = 10**12

# ISO 4217 exponents other than 2: how many of an amount's digits are minor units (1500 JPY is
# ¥1,500, 1500 KWD is KWD 1.500, 1500 of any other currency is 15.00). The snippet
# (sdk_js/src/offers.js) divides by the same table; tests/domain/test_money.py keeps them equal.
ZERO_DIGIT_CURRENCIES = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF"
THREE_DIGIT_CURRENCIES = "BHD IQD JOD KWD LYD OMR TND"
MINOR_UNIT_DIGITS: Mapping[str, int] = {
    **dict.fromkeys(ZERO_DIGIT_CURRENCIES.split(), 0),
    **dict.fromkeys(THREE_DIGIT_CURRENCIES.split(), 3),
}

# The fraction digits Intl.NumberFormat prints (CLDR 48), where they are not 2. They differ from
# the minor units for some currencies: 12950 HUF is 129.50 forints, printed rounded as HUF 130.
_PRINTED_ZERO = (
    "AFN ALL BIF CLP COP DJF GNF HUF IDR IQD IRR ISK JPY KMF KPW KRW LAK LBP MGA MMK PKR PYG RWF"
    " SLL SOS SYP UGX VND VUV XAF XOF XPF YER"
)
_PRINTED_DIGITS: Mapping[str, int] = {
    **dict.fromkeys(_PRINTED_ZERO.split(), 0),
    **dict.fromkeys(("BHD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}
# The en-US currency symbols (CLDR 48); every other currency prints its code.
_SYMBOLS: Mapping[str, str] = {
    "AUD": "A$",
    "BRL": "R$",
    "CAD": "CA$",
    "CNY": "CN¥",
    "EUR": "€",
    "GBP": "£",
    "HKD": "HK$",
    "ILS": "₪",
    "INR": "₹",
    "JPY": "¥",
    "KRW": "₩",
    "MXN": "MX$",
    "NZD": "NZ$",
    "PHP": "₱",
    "TWD": "NT$",
    "USD": "$",
    "VND": "₫",
    "XAF": "FCFA",
    "XCD": "EC$",
    "XCG": "Cg.",
    "XOF": "F\u202fCFA",
    "XPF": "CFPF",
}
# Enough digits for any float written out in full (the largest has 309).
_PRECISION = 400


def minor_unit_digits(currency: str) -> int:
    """How many digits of an amount in `currency` are minor units (ISO 4217 exponent)."""
    return MINOR_UNIT_DIGITS.get(currency.upper(), 2)


def _symbol_spacing(symbol: str) -> str:
    # CLDR currency spacing: a symbol that ends in a letter (a code, "F CFA") is kept apart
    # from the digits by a no-break space; one that ends in a currency sign ("NT$") is not.
    return "" if unicodedata.category(symbol[-1]).startswith("S") else "\u00a0"


def format_money(amount: float, currency: str, *, signed: bool = False) -> str:
    """An amount in minor units as `Intl.NumberFormat('en-US', {style: 'currency'})` prints it:
    12999 USD -> "$129.99", 1500 JPY -> "¥1,500", 995 SEK -> "SEK\u00a09.95". `signed` adds
    "+" to amounts above zero (signDisplay "exceptZero"). An amount may be fractional (an
    average); it is rounded half away from zero to the digits the currency prints."""
    code = currency.upper()
    # The same float division as the snippet's, then the shortest decimal that reads back as
    # that float (what ICU rounds): 100.5 / 100 is 1.005, printed $1.01 in both.
    major = float(amount) / 10 ** MINOR_UNIT_DIGITS.get(code, 2)
    digits = _PRINTED_DIGITS.get(code, 2)
    symbol = _SYMBOLS.get(code, code)
    spacing = _symbol_spacing(symbol)
    if not math.isfinite(major):
        number = "NaN" if math.isnan(major) else "∞"
        sign = "-" if major < 0 else ("+" if signed and major > 0 else "")
        return f"{sign}{symbol}{spacing}{number}"
    with decimal.localcontext(prec=_PRECISION):
        value = Decimal(repr(major)).quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP)
        number = f"{abs(value):,.{digits}f}"
    if signed:
        sign = "-" if value < 0 else ("+" if value > 0 else "")
    else:
        sign = "-" if value.is_signed() else ""
    return f"{sign}{symbol}{spacing}{number}"
