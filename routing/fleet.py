"""A council's fleet for collection planning: vehicle types, shifts, break rules, depot, tipping site
and time zone, from a YAML file or the ``fleet_configs`` table (``ingest/schema/0012_fleet.sql``).

Validation names every bad field at once (:class:`FleetError`).  Shift times
are local wall-clock ``"HH:MM"`` in ``timezone`` (the plan computes in UTC; see
:mod:`routing.clock`).  Depot and tipping site default to the town's street
graph's; given as ``{lat, lon}`` they are snapped to the nearest street node.

>>> cfg = parse_fleet('''
... timezone: Europe/London
... vehicles:
...   - {name: rcv-26t, count: 3, capacity_l: 65000, capacity_kg: 10000, shift: ["06:00", "14:30"]}
...   - name: rcv-12t
...     count: 1
...     capacity_l: 24000
...     capacity_kg: 4000
...     shift: ["07:00", "15:00"]
...     break: {after_h: 4.5, minutes: 45, basis: driving}
... ''')
>>> [(v.name, v.count, v.shift_start_h, v.break_min) for v in cfg.specs()]
[('rcv-26t', 3, 6.0, 45.0), ('rcv-12t', 1, 7.0, 45.0)]
>>> parse_fleet("vehicles: [{name: x, count: 0, capacity_l: -1, capacity_kg: 10, shift: ['09:00', '08:00']}]")
Traceback (most recent call last):
...
routing.fleet.FleetError: invalid fleet configuration (<text>):
  vehicles.0.count: Input should be greater than or equal to 1
  vehicles.0.capacity_l: Input should be greater than 0
  vehicles.0.shift: Value error, the shift must end after it starts (09:00 - 08:00)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from routing.plan import VehicleSpec
from routing.travel import Point

__all__ = ["FleetConfig", "VehicleType", "BreakConfig", "SiteConfig", "FleetError", "parse_fleet", "load_fleet",
           "DEFAULT_FLEET_CONFIG"]

_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


class FleetError(ValueError):
    """A fleet configuration that does not validate; the message lists every problem."""


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _hours(v: Any) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        h = float(v)
    else:
        m = _HHMM.match(str(v).strip())
        if not m:
            raise ValueError(f"{v!r} is not a time of day (HH:MM)")
        h = int(m.group(1)) + int(m.group(2)) / 60
    if not 0 <= h <= 30:
        raise ValueError(f"{v!r} is out of range")
    return h


def _fmt(h: float) -> str:
    return f"{int(h):02d}:{round((h % 1) * 60):02d}"


class BreakConfig(BaseModel):
    """``minutes`` of break once ``after_h`` hours of driving (or of duty) would be passed."""

    model_config = ConfigDict(extra="forbid")
    after_h: float = Field(default=4.5, gt=0, le=24)
    minutes: float = Field(default=45.0, ge=0, le=240)
    basis: Literal["driving", "duty"] = "driving"


class VehicleType(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: Name
    count: int = Field(ge=1, le=500)
    capacity_l: int = Field(gt=0, description="loose bin litres the body takes (body volume x compaction)")
    capacity_kg: int = Field(gt=0, description="payload")
    shift: tuple[str, str] = ("06:00", "14:30")
    break_: BreakConfig = Field(default_factory=BreakConfig, alias="break")
    max_reloads: int = Field(default=3, ge=0, le=20)
    fixed_cost: int = Field(default=100_000, ge=0)

    @field_validator("shift", mode="before")
    @classmethod
    def _shift(cls, v: Any) -> tuple[str, str]:
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            raise ValueError("give the shift as [start, end], e.g. ['06:00', '14:30']")
        a, b = _hours(v[0]), _hours(v[1])
        if b <= a:
            raise ValueError(f"the shift must end after it starts ({_fmt(a)} - {_fmt(b)})")
        return _fmt(a), _fmt(b)

    @model_validator(mode="after")
    def _break_fits(self) -> "VehicleType":
        a, b = _hours(self.shift[0]), _hours(self.shift[1])
        if self.break_.minutes / 60 >= b - a:
            raise ValueError(f"the {self.break_.minutes:g} min break does not fit in the {b - a:g} h shift")
        return self

    def spec(self) -> VehicleSpec:
        return VehicleSpec(self.name, self.count, self.capacity_l, self.capacity_kg, _hours(self.shift[0]),
                           _hours(self.shift[1]), self.break_.after_h, self.break_.minutes, self.max_reloads,
                           self.fixed_cost, self.break_.basis)


class SiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=200)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    node: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _where(self) -> "SiteConfig":
        if self.node is None and (self.lat is None or self.lon is None):
            raise ValueError("give the site as {lat, lon} or {node}")
        return self

    def point(self, graph) -> Point:
        if self.node is not None:
            if self.node >= len(graph.nodes):
                raise FleetError(f"site {self.name or ''} node {self.node} is not in the street graph "
                                 f"({len(graph.nodes)} nodes)")
            n = graph.nodes[self.node]
            return Point(n.lat, n.lon, node=self.node)
        node = graph.nearest_node(self.lat, self.lon)
        return Point(self.lat, self.lon, node=node)


class FleetConfig(BaseModel):
    """One tenant's fleet (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    timezone: str = "Europe/London"
    depot: SiteConfig | None = None
    tip: SiteConfig | None = None
    vehicles: list[VehicleType] = Field(min_length=1, max_length=50)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        if v not in _zones():
            raise ValueError(f"unknown time zone {v[:64]!r} (use an IANA name such as Europe/London)")
        ZoneInfo(v)
        return v

    @field_validator("vehicles")
    @classmethod
    def _unique(cls, v: list[VehicleType]) -> list[VehicleType]:
        names = [x.name for x in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"vehicle type names must be unique: {', '.join(dup)}")
        if sum(x.count for x in v) > 500:
            raise ValueError("at most 500 vehicles in a fleet")
        return v

    def specs(self) -> tuple[VehicleSpec, ...]:
        return tuple(v.spec() for v in self.vehicles)

    def sites(self, graph) -> tuple[Point, Point]:
        """(depot, tipping site) on ``graph``."""
        depot = self.depot.point(graph) if self.depot else Point(graph.depot.lat, graph.depot.lon,
                                                                 node=graph.depot.node)
        tip = self.tip.point(graph) if self.tip else Point(graph.tipping.lat, graph.tipping.lon,
                                                           node=graph.tipping.node)
        return depot, tip

    def dump(self) -> dict:
        return self.model_dump(by_alias=True, exclude_none=True)


def validate_fleet(data: Any, source: str = "<data>") -> FleetConfig:
    """A :class:`FleetConfig` from parsed data, or :class:`FleetError` listing every problem."""
    if not isinstance(data, dict):
        raise FleetError(f"invalid fleet configuration ({source}): expected a mapping with 'vehicles'")
    try:
        return FleetConfig.model_validate(data)
    except ValidationError as e:
        lines = [f"  {'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in e.errors()]
        raise FleetError(f"invalid fleet configuration ({source}):\n" + "\n".join(lines)) from None


def parse_fleet(text: str, source: str = "<text>") -> FleetConfig:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise FleetError(f"invalid fleet configuration ({source}): not YAML: {e}") from None
    return validate_fleet(data, source)


def load_fleet(path: str | Path) -> FleetConfig:
    """Read and validate a fleet YAML file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise FleetError(f"cannot read fleet file {p}: {e.strerror}") from None
    return parse_fleet(text, str(p))


#: the shipped default (the demo town): four 26 t rear-loaders (19 m³ body, ~3.5:1 compaction, 10 t payload)
#: and a 12 t narrow-access lorry, 06:00-14:30, 45 min break after 4.5 h driving, in London time
DEFAULT_FLEET_CONFIG = FleetConfig(vehicles=[
    VehicleType(name="rcv-26t", count=4, capacity_l=65_000, capacity_kg=10_000),
    VehicleType(name="rcv-12t", count=1, capacity_l=24_000, capacity_kg=4_000)])
