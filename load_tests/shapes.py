"""Load shapes: smoke, average, stress and soak, as stages of simulated shoppers over time.

A shape is picked with `OFFER_SHAPE=<name>` (run_slo.py's `--shape`); its size with
`OFFER_SHAPE_USERS` (the expected peak of concurrent shoppers; each asks for about one page a
second, see the locustfile's think time) and `OFFER_SHAPE_MINUTES` (how long the main stage holds).
`OFFER_SHAPE_SHARE=N` runs 1/N of the shoppers (rounded up): one of N Locusts, one per host.

- smoke: a handful of shoppers for a minute. Does every route answer, and validate?
- average: ramp to the expected peak, hold it, ramp down. The SLO gate for a release.
- stress: step up to twice the expected peak and keep going; find where p99 and errors break.
- soak: the average load for hours (default 2 h): leaks, growing tables, expiring tokens.
"""

from __future__ import annotations

import os
from typing import ClassVar, NamedTuple

from locust import LoadTestShape


class Stage(NamedTuple):
    until_s: float  # the stage lasts until this many seconds into the run
    users: int
    spawn_rate: float  # users started (or stopped) per second to reach `users`


class StagedShape(LoadTestShape):
    """Runs `stages()` in order, then stops the test."""

    abstract: ClassVar[bool] = True
    default_users: ClassVar[int] = 50
    default_minutes: ClassVar[float] = 10.0

    def __init__(self) -> None:
        super().__init__()
        peak = int(os.environ.get("OFFER_SHAPE_USERS") or self.default_users)
        self.peak = -(-peak // int(os.environ.get("OFFER_SHAPE_SHARE") or 1))
        self.minutes = float(os.environ.get("OFFER_SHAPE_MINUTES") or self.default_minutes)
        self.plan = self.stages()

    def stages(self) -> list[Stage]:
        raise NotImplementedError

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        for stage in self.plan:
            if elapsed < stage.until_s:
                return stage.users, stage.spawn_rate
        return None

    def ramp_rate(self, users: int, seconds: float) -> float:
        return max(users / seconds, 1.0)


class SmokeShape(StagedShape):
    default_users = 5
    default_minutes = 1.0

    def stages(self) -> list[Stage]:
        return [Stage(self.minutes * 60, self.peak, self.peak)]


class AverageShape(StagedShape):
    default_users = 50
    default_minutes = 10.0

    def stages(self) -> list[Stage]:
        ramp = 60.0
        hold_end = ramp + self.minutes * 60
        return [
            Stage(ramp, self.peak, self.ramp_rate(self.peak, ramp)),
            Stage(hold_end, self.peak, self.peak),
            Stage(hold_end + 30, 0, self.ramp_rate(self.peak, 30)),
        ]


class StressShape(StagedShape):
    """Steps of 25% of the expected peak up to 200%, each held `minutes` / 8 (default 2 min)."""

    default_users = 50
    default_minutes = 16.0

    def stages(self) -> list[Stage]:
        step_s = self.minutes * 60 / 8
        plan = []
        for i in range(1, 9):
            users = max(1, round(self.peak * 0.25 * i))
            plan.append(Stage(step_s * i, users, self.ramp_rate(users, 10)))
        return plan


class SoakShape(StagedShape):
    default_users = 50
    default_minutes = 120.0

    def stages(self) -> list[Stage]:
        ramp = 120.0
        return [
            Stage(ramp, self.peak, self.ramp_rate(self.peak, ramp)),
            Stage(ramp + self.minutes * 60, self.peak, self.peak),
        ]


SHAPES: dict[str, type[StagedShape]] = {
    "smoke": SmokeShape,
    "average": AverageShape,
    "stress": StressShape,
    "soak": SoakShape,
}


def selected() -> type[StagedShape] | None:
    """The shape named by OFFER_SHAPE, or None (Locust's own -u/-r/-t then apply)."""
    name = os.environ.get("OFFER_SHAPE", "").strip().lower()
    if not name or name == "none":
        return None
    if name not in SHAPES:
        raise SystemExit(f"OFFER_SHAPE must be one of {', '.join(SHAPES)} or none, not {name!r}")
    return SHAPES[name]
