"""create_app: the one wiring, which leaves the process's own settings alone."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest

from offer_service.app import create_app
from offer_service.cli import GC_THRESHOLDS, SWITCH_INTERVAL_S, serving_app
from offer_service.settings import Settings


@pytest.mark.anyio
async def test_create_app_leaves_the_interpreter_s_settings_as_they_were(tmp_path: Path) -> None:
    before = gc.get_threshold(), sys.getswitchinterval()
    app = create_app(Settings(store_url=f"sqlite:///{tmp_path}/offers.db"))
    async with app.router.lifespan_context(app):
        assert (gc.get_threshold(), sys.getswitchinterval()) == before
    assert (gc.get_threshold(), sys.getswitchinterval()) == before


def test_a_serving_process_runs_full_collections_less_often_and_switches_sooner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = gc.get_threshold(), sys.getswitchinterval()
    gc.set_threshold(700, 10, 10)  # Python's defaults
    sys.setswitchinterval(0.005)
    monkeypatch.setenv("OFFER_STORE_URL", f"sqlite:///{tmp_path}/offers.db")
    monkeypatch.setenv("OFFER_SPOOL_DIR", str(tmp_path / "spool"))
    try:
        serving_app()
        young, middle, full = gc.get_threshold()
        assert (young, middle) == (700, 10)  # young garbage at the default rate
        assert full == GC_THRESHOLDS[2] == 100
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
        assert SWITCH_INTERVAL_S < 0.005
    finally:
        gc.set_threshold(*before[0])
        sys.setswitchinterval(before[1])


def test_the_cache_bounds_of_the_environment_bound_the_engine_s_tables(tmp_path: Path) -> None:
    """The million-visitor test holds a process to its default bounds; these are the bounds an
    operator sets instead (docs/memory.md)."""
    settings = Settings.from_env(
        {
            "OFFER_STORE_URL": f"sqlite:///{tmp_path}/offers.db",
            "OFFER_CACHE_PREPARED": "300",
            "OFFER_CACHE_PRODUCTS": "1000",
            "OFFER_CACHE_VISITORS": "1500",
            "OFFER_CACHE_KEYS": "2000",
        }
    )
    engine = create_app(settings).state.engine
    assert engine._prepared._maxsize == 300
    assert engine.products._most == 1000
    assert engine.visitors._most == 1500
    assert engine.limiter._max_keys == 2000
    assert engine.event_rates._max_keys == 2000
    assert engine.exposures.recent_max == 2000
