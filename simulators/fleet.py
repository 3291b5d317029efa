"""The fleet: every simulated device with its identity, board, position and asset.

:func:`build_fleet` places household bins along residential streets, street
litter bins mostly on the high street and arterials, air and noise nodes on
lampposts by site type, and road nodes in council vehicles at the depot.
Household bins get a round (weekday, weekly or fortnightly with a week
parity, and a slot time following the crew's serpentine order through the
round's zone) and a household pseudonym (``hh-`` + hash, never names or
addresses).  The demo registers ``Fleet.devices`` with the backend before
publishing (unknown devices are quarantined by ingest).

>>> from simulators.scenario import load_scenario
>>> fl = build_fleet(load_scenario("tiny"), counts={"bins": 10})
>>> d = fl.devices[0]
>>> d.kind, d.device_id, d.asset.bin_kind, d.asset.asset_id
('bin_fill', 'bin-000001', 'household', 'hb-000001')
>>> sorted(fl.count_by_kind().items())
[('air', 3), ('bin_fill', 10), ('noise', 3), ('road', 2)]
>>> fl.to_rows()[0]["asset"]["household_id"].startswith("hh-")
True
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from contract import v1
from simulators.geo import M_PER_DEG_LAT, StreetGraph
from simulators.rng import stable_hash, substream
from simulators.scenario import Scenario, parse_counts

__all__ = ["DeviceSpec", "BinAsset", "SiteAsset", "VehicleAsset", "Fleet", "build_fleet", "WEEKDAYS"]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class BinAsset:
    asset_id: str
    bin_kind: str                  #: "household" | "street"
    capacity_l: int
    depth_m: float                 #: sensor to bin floor
    frequency_weeks: int           #: 1 weekly, 2 fortnightly (street bins: 1)
    round_days: tuple[int, ...]    #: weekdays, Monday = 0
    week_parity: int               #: fortnightly bins: collected in weeks with (ISO-ish week index % 2) == parity
    round_id: str
    slot_h: float                  #: planned local time of collection (hours)
    edge_id: int                   #: street segment the bin stands on
    location_class: str            #: road class of that street
    household_id: str | None = None
    #: the council's planning figure: fraction of the bin filled per day (true rates differ)
    expected_fill_per_day: float = 0.0


@dataclass(frozen=True, slots=True)
class SiteAsset:
    site_id: str
    site_type: str                 #: air: roadside|high_street|background; noise: residential|high_street|arterial
    edge_id: int


@dataclass(frozen=True, slots=True)
class VehicleAsset:
    vehicle_id: str
    vehicle_type: str
    shift_days: tuple[int, ...]
    shift_start_h: float
    shift_end_h: float


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One simulated device (what the backend's device registry needs)."""

    index: int                     #: position in ``Fleet.devices``
    tenant: str
    device_id: str                 #: contract id: [a-z0-9-], <= 64
    kind: str                      #: "bin_fill" | "air" | "noise" | "road"
    board: str                     #: "esp32" | "picow"
    lat: float
    lon: float
    asset: BinAsset | SiteAsset | VehicleAsset
    encoding: str = "json"         #: "json" | "cbor" (SenML content format the node sends)
    fw: str = ""

    def to_row(self) -> dict[str, Any]:
        """JSON-able dict (e.g. for registering the device)."""
        d = {"tenant": self.tenant, "device_id": self.device_id, "kind": self.kind, "board": self.board,
             "lat": self.lat, "lon": self.lon, "encoding": self.encoding, "fw": self.fw,
             "asset": asdict(self.asset)}
        a = d["asset"]
        if "round_days" in a:
            a["round_days"] = list(a["round_days"])
        if "shift_days" in a:
            a["shift_days"] = list(a["shift_days"])
        return d


@dataclass
class Fleet:
    scenario: Scenario
    seed: int
    devices: list[DeviceSpec] = field(default_factory=list)

    @property
    def graph(self) -> StreetGraph:
        return self.scenario.graph

    @property
    def tenant(self) -> str:
        return self.scenario.tenant

    def by_kind(self, kind: str) -> list[DeviceSpec]:
        return [d for d in self.devices if d.kind == kind]

    def count_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.devices:
            out[d.kind] = out.get(d.kind, 0) + 1
        return out

    def device(self, device_id: str) -> DeviceSpec:
        for d in self.devices:
            if d.device_id == device_id:
                return d
        raise KeyError(device_id)

    def to_rows(self) -> list[dict[str, Any]]:
        return [d.to_row() for d in self.devices]

    def write_jsonl(self, path: str | Path) -> int:
        with open(path, "w", encoding="utf-8") as f:
            for r in self.to_rows():
                f.write(json.dumps(r, separators=(",", ":")) + "\n")
        return len(self.devices)


def _choose(rng: np.random.Generator, shares: dict, n: int) -> list:
    keys = list(shares)
    p = np.array([float(shares[k]) for k in keys], dtype=np.float64)
    p = p / p.sum()
    return [keys[i] for i in rng.choice(len(keys), size=n, p=p)] if n else []


def _place(graph: StreetGraph, rng: np.random.Generator, n: int, weight_by_class: dict[str, float],
           side_m: tuple[float, float] = (6.0, 12.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n points along edges weighted by length x class weight: (edge ids, offsets, lat, lon)."""
    L = np.array([e.length_m for e in graph.edges])
    w = L * np.array([weight_by_class.get(e.road_class, 0.0) for e in graph.edges])
    if n == 0 or w.sum() <= 0:
        z = np.zeros(0)
        return z.astype(np.int64), z, z, z
    eids = rng.choice(len(graph.edges), size=n, p=w / w.sum())
    off = rng.uniform(0.05, 0.95, n) * L[eids]
    side = rng.uniform(*side_m, n) * np.where(rng.random(n) < 0.5, -1.0, 1.0)
    lat_u = graph.node_lat
    lon_u = graph.node_lon
    eu = np.array([graph.edges[e].u for e in eids.tolist()], dtype=np.int64)
    ev = np.array([graph.edges[e].v for e in eids.tolist()], dtype=np.int64)
    f = off / np.maximum(L[eids], 1e-9)
    lat = lat_u[eu] + (lat_u[ev] - lat_u[eu]) * f
    lon = lon_u[eu] + (lon_u[ev] - lon_u[eu]) * f
    c = np.cos(np.radians(lat))
    dy = (lat_u[ev] - lat_u[eu]) * M_PER_DEG_LAT
    dx = (lon_u[ev] - lon_u[eu]) * M_PER_DEG_LAT * c
    nrm = np.maximum(np.hypot(dx, dy), 1e-9)
    lat = lat + dx / nrm * side / M_PER_DEG_LAT
    lon = lon - dy / nrm * side / (M_PER_DEG_LAT * c)
    return eids.astype(np.int64), off, np.round(lat, 7), np.round(lon, 7)


def _serpentine_rank(lat: np.ndarray, lon: np.ndarray, band_m: float = 300.0) -> np.ndarray:
    """0..1 rank of points visited in east-west sweeps over north-south bands."""
    if len(lat) == 0:
        return np.zeros(0)
    y = (lat - lat.min()) * M_PER_DEG_LAT
    band = (y // band_m).astype(np.int64)
    x = np.where(band % 2 == 0, lon, -lon)
    order = np.lexsort((x, band))
    rank = np.empty(len(lat))
    rank[order] = np.arange(len(lat)) / max(1, len(lat))
    return rank


def build_fleet(scenario: Scenario, counts: dict[str, int] | str | None = None, seed: int | None = None) -> "Fleet":
    """All devices of ``scenario``; ``counts`` overrides the per-kind numbers (keys bins|air|noise|road)."""
    seed = scenario.seed if seed is None else seed
    n_by = dict(scenario.devices)
    n_by.update(parse_counts(counts))
    g = scenario.graph
    tenant = scenario.tenant
    fw = scenario.node.fw
    devices: list[DeviceSpec] = []
    rng = substream(seed, "fleet")
    bp = scenario.bins

    def add(kind: str, did: str, lat: float, lon: float, asset: Any, board: str, enc: str) -> None:
        if not v1.valid_id(did):
            raise ValueError(f"bad device id {did!r}")
        devices.append(DeviceSpec(len(devices), tenant, did, kind, board, float(lat), float(lon), asset, enc, fw))

    # ---- bins ---------------------------------------------------------------
    nb = int(n_by.get("bins", 0))
    width = max(6, len(str(nb)))
    n_street = int(round(nb * bp.street_fraction))
    n_house = nb - n_street
    brng = substream(seed, "fleet", "bins")
    he, _, hlat, hlon = _place(g, brng, n_house, {"residential": 1.0, "arterial": 0.3, "high_street": 0.1})
    se, _, slat, slon = _place(g, brng, n_street, {"high_street": 12.0, "arterial": 1.0, "residential": 0.25},
                               side_m=(3.0, 6.0))
    caps = _choose(brng, bp.household.capacity_share, n_house)
    weekly = brng.random(n_house) < bp.household.weekly_share
    rd = list(bp.rounds.days) or [0]
    # zones: vertical strips by longitude, one per round day
    if n_house:
        q = np.quantile(hlon, np.linspace(0, 1, len(rd) + 1)[1:-1]) if len(rd) > 1 else np.array([])
        zone = np.searchsorted(q, hlon, side="right")
        day_of = np.array(rd)[np.clip(zone, 0, len(rd) - 1)]
        # fortnightly parity: north / south half of the zone
        parity = np.zeros(n_house, dtype=np.int64)
        slot = np.zeros(n_house)
        for z in range(len(rd)):
            m = zone == z
            if m.any():
                med = np.median(hlat[m])
                parity[m] = (hlat[m] >= med).astype(np.int64)
                slot[m] = bp.rounds.start_h + _serpentine_rank(hlat[m], hlon[m]) * (bp.rounds.end_h - bp.rounds.start_h)
    else:
        day_of = parity = slot = np.zeros(0, dtype=np.int64)
    boards = _choose(rng, scenario.boards, nb)
    encs = _choose(rng, scenario.encoding, nb)
    for j in range(n_house):
        cap = int(caps[j])
        freq = 1 if weekly[j] else 2
        wd = int(day_of[j])
        rid = f"{WEEKDAYS[wd]}-{'weekly' if freq == 1 else 'fortnightly-' + 'ab'[int(parity[j])]}"
        hh = f"hh-{stable_hash(seed, 'household', j) & 0xFFFFFFFFFF:010x}"
        lpd = bp.household.litres_per_day_weekly if freq == 1 else bp.household.litres_per_day_fortnightly
        plan = lpd * (cap / 240.0) ** 0.7 / cap      # households with bigger bins produce somewhat more
        asset = BinAsset(f"hb-{j + 1:0{width}d}", "household", cap, float(bp.household.depth_m.get(cap, 0.95)),
                         freq, (wd,), int(parity[j]) if freq == 2 else 0, rid, round(float(slot[j]), 3),
                         int(he[j]), g.edges[int(he[j])].road_class, hh, round(plan, 5))
        add("bin_fill", f"bin-{j + 1:0{width}d}", hlat[j], hlon[j], asset, boards[j], encs[j])
    sp = bp.street
    srank = _serpentine_rank(slat, slon) if n_street else np.zeros(0)
    plan_rates = sp.rate_median * np.exp(brng.normal(0, sp.rate_sigma, n_street))
    sched = [tuple(int(x) for x in s_) for s_ in sp.schedules]
    # the longest gap between collections of each schedule (days)
    max_gap = np.array([max(((s_[(k + 1) % len(s_)] - s_[k]) % 7) or 7 for k in range(len(s_))) for s_ in sched])
    for j in range(n_street):
        cls = g.edges[int(se[j])].road_class
        plan = float(plan_rates[j]) * float(sp.location_factor.get(cls, 0.5))
        cap_l = int(sp.capacity_l)
        while plan > sp.target_fill and cap_l < 4 * sp.capacity_l:     # busiest sites get bigger bins
            cap_l *= 2
            plan /= 2
        # the least frequent schedule that keeps the longest gap under the target fill (else daily)
        ok = [k for k in range(len(sched)) if plan * max_gap[k] <= sp.target_fill]
        k_s = min(ok, key=lambda k: len(sched[k])) if ok else int(np.argmax([len(x) for x in sched]))
        days = sched[k_s]
        rid = "street-" + ("daily" if len(days) == 7 else "-".join(WEEKDAYS[d] for d in days))
        asset = BinAsset(f"lb-{j + 1:0{width}d}", "street", cap_l, float(sp.depth_m), 1, days, 0,
                         rid, round(sp.start_h + float(srank[j]) * (sp.end_h - sp.start_h), 3),
                         int(se[j]), cls, None, round(plan, 5))
        k = n_house + j
        add("bin_fill", f"bin-{k + 1:0{width}d}", slat[j], slon[j], asset, boards[k], encs[k])

    # ---- air and noise -------------------------------------------------------
    site_edges = {"roadside": {"arterial": 1.0}, "high_street": {"high_street": 1.0},
                  "background": {"residential": 1.0}, "residential": {"residential": 1.0},
                  "arterial": {"arterial": 1.0}}
    for kind, key, shares, pre in (("air", "air", scenario.air.site_share, "air"),
                                   ("noise", "noise", scenario.noise.site_share, "noise")):
        n = int(n_by.get(key, 0))
        krng = substream(seed, "fleet", kind)
        types = _choose(krng, shares, n)
        kb = _choose(krng, scenario.boards, n)
        ke = _choose(krng, scenario.encoding, n)
        for j, ty in enumerate(types):
            e, _, la, lo = _place(g, krng, 1, site_edges.get(ty, {"residential": 1.0}), side_m=(4.0, 8.0))
            if len(e) == 0:
                e, _, la, lo = _place(g, krng, 1, {"residential": 1.0, "arterial": 1.0, "high_street": 1.0})
            w = max(4, len(str(n)))
            add(kind, f"{pre}-{j + 1:0{w}d}", la[0], lo[0], SiteAsset(f"{pre}-site-{j + 1:0{w}d}", ty, int(e[0])),
                kb[j], ke[j])

    # ---- road vehicles -------------------------------------------------------
    n = int(n_by.get("road", 0))
    rp = scenario.road
    rrng = substream(seed, "fleet", "road")
    vt = _choose(rrng, rp.vehicle_share, n)
    rb = _choose(rrng, scenario.boards, n)
    re_ = _choose(rrng, scenario.encoding, n)
    for j in range(n):
        w = max(4, len(str(n)))
        start = rp.shift_start_h + (0.0 if vt[j] == "refuse_truck" else float(rrng.uniform(0, 1.5)))
        end = start + (rp.shift_end_h - rp.shift_start_h)
        add("road", f"road-{j + 1:0{w}d}", g.depot.lat, g.depot.lon,
            VehicleAsset(f"veh-{j + 1:0{w}d}", vt[j], tuple(int(x) for x in rp.shift_days), round(start, 3),
                         round(end, 3)), rb[j], re_[j])
    return Fleet(scenario, seed, devices)

