"""SMS text that fits one message: GSM 03.38 (7-bit, 160 characters) or UCS-2 (70).

A message is GSM-7 when every character is in the GSM 03.38 basic set or its extension table
(an extension character takes two septets: an escape, then the character); otherwise the whole
message is sent as UCS-2, where each UTF-16 code unit counts and only 70 fit. Typographic
punctuation and accented letters outside the set are folded to their GSM look-alikes first, so
one curly apostrophe in a product title does not cost 90 characters; a title in a script GSM
cannot write (Greek capitals aside) keeps its characters and the 70-character limit.
"""

from __future__ import annotations

import unicodedata

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
GSM7_LIMIT = 160
UCS2_LIMIT = 70
ELLIPSIS = "..."

# Look-alikes for characters GSM cannot write that titles and names often carry.
_FOLD = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u201b": "'",
    "\u2032": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u2033": '"',
    "\u2013": "-",
    "\u2014": "-",
    "\u2212": "-",
    "\u2026": "...",
    "\u00a0": " ",
    "\u2009": " ",
    "\u00b4": "'",
    "`": "'",
    "\u00d7": "x",
    "\u2122": "TM",
    "\u00ae": "(R)",
    "\u00a9": "(C)",
}


def gsm7_length(text: str) -> int | None:
    """Septets `text` takes in GSM-7, or None when a character is outside the alphabet."""
    n = 0
    for ch in text:
        if ch in GSM7_BASIC:
            n += 1
        elif ch in GSM7_EXTENSION:
            n += 2
        else:
            return None
    return n


def ucs2_length(text: str) -> int:
    """UTF-16 code units: a character outside the BMP (most emoji) takes two."""
    return len(text.encode("utf-16-le")) // 2


def measure(text: str) -> tuple[str, int, int]:
    """(encoding, length, limit): ("gsm7", septets, 160) or ("ucs2", code units, 70)."""
    septets = gsm7_length(text)
    if septets is not None:
        return "gsm7", septets, GSM7_LIMIT
    return "ucs2", ucs2_length(text), UCS2_LIMIT


def fits(text: str) -> bool:
    """Whether `text` is one SMS in the encoding it needs."""
    _, length, limit = measure(text)
    return length <= limit


def fold(text: str) -> str:
    """`text` with characters outside GSM-7 replaced by a look-alike where one exists (curly
    quotes, dashes, accents GSM lacks: "ő" -> "o"); characters without one are kept."""
    out: list[str] = []
    for ch in text:
        if ch in GSM7_BASIC or ch in GSM7_EXTENSION:
            out.append(ch)
        elif ch in _FOLD:
            out.append(_FOLD[ch])
        else:
            base = "".join(
                c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c)
            )
            out.append(base if base and gsm7_length(base) is not None else ch)
    return "".join(out)


def offer_text(
    *,
    sender: str,
    lead: str,
    title: str,
    price: str,
    link: str,
    footer: str,
    short_footer: str | None = None,
) -> str | None:
    """One SMS for one offer: `<sender>: <lead> <title> <price> <link> <footer>`, the title
    shortened (with "...") until it fits. When even a few characters of the title do not fit
    (a UCS-2 message holds 70), the sender goes, then the lead, then the footer gives way to
    `short_footer`. None when nothing fits: the link and the footer alone are too long."""
    sender, lead, title, price = fold(sender), fold(lead), fold(title).strip(), fold(price)
    variants = [(sender, lead, footer), ("", lead, footer), ("", "", footer)]
    if short_footer:
        variants.append(("", "", short_footer))

    def build(head: str, opening: str, name: str, closing: str) -> str:
        words = [f"{head}:" if head else "", opening, name, price, link, closing]
        return " ".join(w for w in words if w)

    for head, opening, closing in variants:
        full = build(head, opening, title, closing)
        if fits(full):
            return full
        for n in range(len(title) - 1, 2, -1):
            candidate = build(head, opening, title[:n].rstrip() + ELLIPSIS, closing)
            if fits(candidate):
                return candidate
    return None
