"""What every model of one run shares: seed, scenario name, period, local clock, weather, streets.

>>> from simulators.scenario import load_scenario
>>> from simulators.fleet import build_fleet
>>> fl = build_fleet(load_scenario("tiny"))
>>> ctx = make_context(fl, 1767225600000, days=1)
>>> ctx.end_ms - ctx.start_ms
86400000
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from simulators.timebase import DAY_MS, LocalClock
from simulators.weather import Weather

if TYPE_CHECKING:
    from simulators.fleet import Fleet
    from simulators.geo import StreetGraph

__all__ = ["SimContext", "make_context"]


@dataclass
class SimContext:
    seed: int
    scenario: str
    tenant: str
    start_ms: int
    end_ms: int
    clock: LocalClock
    weather: Weather
    graph: "StreetGraph"
    lat: float
    lon: float


def make_context(fleet: "Fleet", start_ms: int, days: float, seed: int | None = None) -> SimContext:
    """Context for simulating ``days`` from ``start_ms`` (UTC ms)."""
    sc = fleet.scenario
    seed = fleet.seed if seed is None else seed
    clock = LocalClock(sc.timezone)
    end = start_ms + int(round(days * DAY_MS))
    weather = Weather(seed, sc.area.center_lat, clock, start_ms, end)
    return SimContext(seed, sc.name, sc.tenant, int(start_ms), end, clock, weather, fleet.graph,
                      sc.area.center_lat, sc.area.center_lon)
