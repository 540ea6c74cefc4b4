"""The configuration table in docs/configuration.md is the one settings.OPTIONS renders, every
environment variable the code reads is in it, and every Settings field has its variable."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from offer_service.cli import build_parser
from offer_service.settings import NOT_NEGATIVE, NOT_POSITIVE, OPTIONS, Settings
from offer_service_tools import config_table

ROOT = Path(__file__).resolve().parents[2]
# os.environ.get("X"), os.environ["X"], os.environ.setdefault("X", ...), os.getenv("X") and
# a mapping named environ (a function's environment) read the same way.
ENV_READ = re.compile(
    r"""(?:environ(?:\.get|\.setdefault|\.pop)?\(?\[?|getenv\()\s*["']([A-Z][A-Z0-9_]*)["']"""
)
# A variable's name kept in a constant first (METRICS_DIR_ENV = "OFFER_METRICS_DIR").
SERVICE_NAME = re.compile(r"""["'](OFFER_[A-Z0-9_]+)["']""")
# Variables of the platform, not settings of the service.
NOT_SETTINGS = {"PYTHONPATH"}


def test_the_page_holds_the_table_the_code_renders() -> None:
    page = config_table.PAGE.read_text()
    assert config_table.with_table(page) == page, (
        "docs/configuration.md differs from settings.OPTIONS: run "
        "python -m offer_service_tools.config_table --write"
    )


def environment_reads() -> set[str]:
    names: set[str] = set()
    for package in ("offer_service", "offer_service_tools"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            names |= set(ENV_READ.findall(text)) | set(SERVICE_NAME.findall(text))
    return names - NOT_SETTINGS


def test_every_variable_the_code_reads_is_in_the_table() -> None:
    reads = environment_reads()
    assert {"OFFER_STORE_URL", "OFFER_LOG_LEVEL", "OFFER_DEMO_PORT"} <= reads  # the pattern works
    assert reads - {option.env for option in OPTIONS} == set()


def test_every_setting_has_one_variable_and_the_options_exist() -> None:
    named = [option.field for option in OPTIONS if option.field is not None]
    assert sorted(named) == sorted(f.name for f in fields(Settings))
    assert len({option.env for option in OPTIONS}) == len(OPTIONS)
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    flags = {flag for action in serve._actions for flag in action.option_strings}
    for option in OPTIONS:
        if option.flag is not None and "`" not in option.flag:
            assert option.flag in flags, option.flag


def test_the_environment_sets_each_setting() -> None:
    environ = {
        "OFFER_STORE_URL": "redis://r:6379/0",
        "OFFER_TRUST_PROXY": "1",
        "OFFER_AGGREGATOR": "0",
        "OFFER_KEEP_ALIVE_TIMEOUT": "7",
        "OFFER_DRAIN_SECONDS": "0",
        "OFFER_SETTLE_TIMEOUT": "2.5",
        "OFFER_PUBLIC_URL": "",
    }
    settings = Settings.from_env(environ)
    assert settings.store_url == "redis://r:6379/0"
    assert (settings.trust_proxy, settings.aggregator) == (True, False)
    assert (settings.keep_alive_timeout_s, settings.drain_s) == (7, 0.0)
    assert settings.settle_timeout_s == 2.5
    assert settings.public_url is None
    assert Settings.from_env({}) == Settings()


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("OFFER_DRAIN_SECONDS", "-1", NOT_NEGATIVE),
        ("OFFER_DRAIN_SECONDS", "soon", NOT_NEGATIVE),
        ("OFFER_KEEP_ALIVE_TIMEOUT", "0", NOT_POSITIVE),
        ("OFFER_KEEP_ALIVE_TIMEOUT", "1.5", NOT_POSITIVE),
    ],
)
def test_a_wrong_number_is_refused_by_name(name: str, raw: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        Settings.from_env({name: raw})
    assert str(caught.value) == message.format(name=name, raw=raw)


# A row of the store URL parameters' table: | `name` | `default` | what |
URL_ROW = re.compile(r"^\| `([a-z_]+)` \| `(\d+)` \|", re.MULTILINE)
URL_READ = re.compile(r"""options(?:\.get\(|, )\s*["']([a-z_]+)["']""")


def test_the_store_url_parameters_are_those_the_redis_backend_reads() -> None:
    from offer_service.storage.redis.client import RedisBase

    page = config_table.PAGE.read_text()
    section = page[page.index("## Store URL parameters") :].split("\n## ", 1)[0]
    rows = dict(URL_ROW.findall(section))
    reads: set[str] = set()
    for path in (ROOT / "offer_service" / "storage").rglob("*.py"):
        reads |= set(URL_READ.findall(path.read_text()))
    assert set(rows) == reads
    base = RedisBase("redis://127.0.0.1:6379/0")
    for name, default in rows.items():
        if name.endswith("_ms"):
            assert getattr(base, name.removesuffix("_ms") + "_s") == int(default) / 1000, name
        else:
            assert getattr(base, name) == int(default), name
