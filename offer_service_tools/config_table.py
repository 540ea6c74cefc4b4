"""The configuration table of docs/configuration.md, rendered from settings.OPTIONS.

`python -m offer_service_tools.config_table` prints it; `--write` puts it into the page
between its markers (a test fails while the page and the code differ).
"""

from __future__ import annotations

import sys
from pathlib import Path

from offer_service.settings import OPTIONS, UNSET, table_default

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
BEGIN = "<!-- settings table: python -m offer_service_tools.config_table --write -->"
END = "<!-- end of the settings table -->"
NO_MARKERS = "{page} has no settings table markers ({begin} ... {end})"


def table() -> str:
    """Every environment variable of the service, as a Markdown table."""
    lines = [
        "| environment variable | setting | option | default | what |",
        "|---|---|---|---|---|",
    ]
    for option in OPTIONS:
        field = f"`{option.field}`" if option.field else ""
        flag = option.flag if option.flag is None or "`" in option.flag else f"`{option.flag}`"
        default = table_default(option)
        default = default if default == UNSET else f"`{default}`"
        lines.append(f"| `{option.env}` | {field} | {flag or ''} | {default} | {option.help} |")
    return "\n".join(lines) + "\n"


def with_table(page: str) -> str:
    """`page` with the text between the markers replaced by the table."""
    start, end = page.find(BEGIN), page.find(END)
    if start < 0 or end < start:
        raise ValueError(NO_MARKERS.format(page=PAGE.name, begin=BEGIN, end=END))
    return page[: start + len(BEGIN)] + "\n" + table() + page[end:]


def main(argv: list[str]) -> int:
    if "--write" in argv:
        PAGE.write_text(with_table(PAGE.read_text()))
    else:
        sys.stdout.write(table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
