"""The template environments: one per package, autoescaped, strict about unknown names."""

from __future__ import annotations

import pytest
from jinja2 import UndefinedError
from markupsafe import Markup

from offer_service.templating import environment

PACKAGES = ("offer_service.journeys", "offer_service.measurement", "offer_service_tools")


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_has_one_environment_with_its_templates(package: str) -> None:
    env = environment(package)
    assert environment(package) is env
    assert env.list_templates()


def test_values_are_escaped_unless_they_are_markup() -> None:
    env = environment("offer_service.journeys")
    template = env.from_string('<a title="{{ t }}">{{ t }}{{ svg }}</a>')
    html = template.render(t='"><script>x</script>', svg=Markup("<svg></svg>"))
    assert html == (
        '<a title="&#34;&gt;&lt;script&gt;x&lt;/script&gt;">'
        "&#34;&gt;&lt;script&gt;x&lt;/script&gt;<svg></svg></a>"
    )


def test_a_misspelt_name_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(UndefinedError):
        environment("offer_service.journeys").from_string("{{ nope }}").render()


def test_money_is_the_one_formatter() -> None:
    env = environment("offer_service.measurement")
    assert env.from_string("{{ 1500|money('JPY') }}").render() == "¥1,500"
