"""Scenario files: a town described in YAML (area, streets, sites, devices, rounds, event rates).

Every section maps onto a typed parameter dataclass whose defaults are the
calibrated values (see each model's docstring); a scenario file only states
what differs.  Unknown keys are errors, so typos do not pass silently.

>>> sc = load_scenario()                      # the default town
>>> sc.name, sc.tenant, sc.devices["bins"] >= 1000
('town', 'demo-town', True)
>>> g = sc.graph                               # generated deterministically from the seed
>>> len(g.nodes) > 500 and g.depot.kind == "depot" and g.tipping.kind == "tipping"
True
>>> load_scenario("tiny").devices
{'bins': 60, 'air': 3, 'noise': 3, 'road': 2}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from contract import v1
from simulators.config import ConfigError, build, to_plain
from simulators.geo import StreetGraph, generate_town
from simulators.models.air import AirParams
from simulators.models.bins import BinParams
from simulators.models.noise import NoiseParams
from simulators.models.road import RoadParams
from simulators.node import NodeParams
from simulators.timebase import parse_start

__all__ = ["Scenario", "AreaParams", "StreetParams", "SiteParams", "load_scenario", "scenario_path",
           "SCENARIO_DIR", "KIND_ALIASES", "parse_counts"]

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"

#: accepted spellings of device kinds in counts (CLI ``--devices``, YAML ``devices``)
KIND_ALIASES = {"bins": "bins", "bin": "bins", "bin_fill": "bins", "air": "air", "noise": "noise", "road": "road"}
#: counts key -> contract device kind
COUNT_KIND = {"bins": "bin_fill", "air": "air", "noise": "noise", "road": "road"}


@dataclass
class AreaParams:
    center_lat: float = 52.95
    center_lon: float = -1.15
    width_km: float = 4.0
    height_km: float = 3.0


@dataclass
class StreetParams:
    """``generator: grid`` (see :func:`simulators.geo.generate_town`) or ``file: graph.json``."""

    generator: str = "grid"
    file: str | None = None
    seed: int | None = None
    block_m: float = 110.0
    jitter_m: float = 15.0
    drop_fraction: float = 0.12
    arterial_every: int = 7
    high_street_blocks: int = 8
    worn_fraction: float = 0.10
    speeds_kmh: dict[str, float] = field(default_factory=lambda: {
        "arterial": 48.0, "high_street": 32.0, "residential": 32.0})


@dataclass
class SiteParams:
    """A site at a relative position ``at`` = (x, y) in [0, 1]² of the area (snapped to a node)."""

    name: str = ""
    at: tuple[float, float] = (0.5, 0.5)


@dataclass
class Scenario:
    name: str = "town"
    description: str = ""
    tenant: str = "demo-town"
    seed: int = 20260101
    timezone: str = "Europe/London"
    start: str | None = None
    area: AreaParams = field(default_factory=AreaParams)
    streets: StreetParams = field(default_factory=StreetParams)
    depot: SiteParams = field(default_factory=lambda: SiteParams("Council depot", (0.04, 0.08)))
    tipping: SiteParams = field(default_factory=lambda: SiteParams("Waste transfer station", (0.97, 0.35)))
    devices: dict[str, int] = field(default_factory=lambda: {"bins": 3000, "air": 25, "noise": 20, "road": 8})
    boards: dict[str, float] = field(default_factory=lambda: {"esp32": 0.7, "picow": 0.3})
    encoding: dict[str, float] = field(default_factory=lambda: {"json": 0.5, "cbor": 0.5})
    bins: BinParams = field(default_factory=BinParams)
    air: AirParams = field(default_factory=AirParams)
    noise: NoiseParams = field(default_factory=NoiseParams)
    road: RoadParams = field(default_factory=RoadParams)
    node: NodeParams = field(default_factory=NodeParams)
    path: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not v1.valid_id(self.tenant):
            raise ConfigError(f"tenant {self.tenant!r} is not a valid contract id ([a-z0-9-], <= 64)")
        self.devices = parse_counts(self.devices)

    @property
    def start_ms(self) -> int | None:
        return None if self.start is None else parse_start(self.start)

    @cached_property
    def graph(self) -> StreetGraph:
        """The town's street graph (generated or loaded; cached)."""
        st = self.streets
        if st.file:
            p = Path(st.file)
            if not p.is_absolute() and self.path is not None:
                p = self.path.parent / p
            return StreetGraph.load_json(p)
        if st.generator != "grid":
            raise ConfigError(f"unknown street generator {st.generator!r}")
        a = self.area
        return generate_town(self.seed if st.seed is None else st.seed, center_lat=a.center_lat,
                             center_lon=a.center_lon, width_km=a.width_km, height_km=a.height_km,
                             block_m=st.block_m, jitter_m=st.jitter_m, drop_fraction=st.drop_fraction,
                             arterial_every=st.arterial_every, high_street_blocks=st.high_street_blocks,
                             worn_fraction=st.worn_fraction, speeds_kmh=dict(st.speeds_kmh),
                             depot_at=tuple(self.depot.at), tipping_at=tuple(self.tipping.at),
                             depot_name=self.depot.name or "Depot", tipping_name=self.tipping.name or "Tipping site",
                             name=self.name)

    def to_dict(self) -> dict[str, Any]:
        d = to_plain(self)
        d.pop("path", None)
        return d


def parse_counts(spec: str | dict[str, int] | None) -> dict[str, int]:
    """``"bins=5000,air=50"`` or a dict -> {"bins": .., "air": .., ...} (only the keys given).

    >>> parse_counts("bins=5000,air=50,noise=40,road=12")
    {'bins': 5000, 'air': 50, 'noise': 40, 'road': 12}
    >>> parse_counts({"bin_fill": 3})
    {'bins': 3}
    """
    if spec is None:
        return {}
    if isinstance(spec, str):
        items = []
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise ConfigError(f"device count {part!r} is not kind=N")
            k, v = part.split("=", 1)
            items.append((k.strip(), v.strip()))
    else:
        items = list(spec.items())
    out: dict[str, int] = {}
    for k, v in items:
        kk = KIND_ALIASES.get(str(k).lower())
        if kk is None:
            raise ConfigError(f"unknown device kind {k!r} (use bins, air, noise, road)")
        n = int(v)
        if n < 0:
            raise ConfigError(f"negative device count for {k}")
        out[kk] = n
    return out


def scenario_path(name: str | Path | None) -> Path:
    """Resolve a scenario name or path ("town", "town.yaml", "path/to/x.yaml")."""
    if name is None:
        return SCENARIO_DIR / "town.yaml"
    p = Path(name)
    if p.exists():
        return p
    for cand in (SCENARIO_DIR / p, SCENARIO_DIR / f"{p}.yaml", SCENARIO_DIR / p.name):
        if cand.exists():
            return cand
    raise FileNotFoundError(f"scenario {name!s} not found (looked in . and {SCENARIO_DIR})")


def load_scenario(path: str | Path | None = None) -> Scenario:
    """Load a scenario file (None = the default town, ``simulators/scenarios/town.yaml``)."""
    p = scenario_path(path)
    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a scenario is a mapping")
    sc = build(Scenario, data)
    sc.path = p
    return sc
