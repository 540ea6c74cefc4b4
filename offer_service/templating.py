"""The Jinja2 environment of a package's `templates/` folder: autoescaped, built once."""

from __future__ import annotations

from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined

from offer_service.domain.money import format_money


@cache
def environment(package: str) -> Environment:
    """The environment of `package`'s templates (one per package, made on first use).

    Every value is escaped unless it is `Markup` (markup built by code that escapes its own
    text, such as an SVG chart); a misspelt variable is an error rather than an empty string.
    """
    env = Environment(
        loader=PackageLoader(package, "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        # Templates ship inside the package: no need to stat them on every render.
        auto_reload=False,
    )
    env.filters["money"] = format_money
    return env
