"""Road-bump behaviour: council vehicles with accelerometer nodes driving over the street graph.

Vehicles leave the depot at shift start and drive a non-backtracking random
walk over the :class:`~simulators.geo.StreetGraph` at a fraction of each
street's speed limit (slower in rush hours, slowing for speed humps).  The
network has potholes, castings (manhole covers; ``castings_per_pothole`` = 8,
as Boston's Street Bump found about eight times as many bumps from castings
as from potholes) and speed humps at known positions, plus new potholes
forming during the run.  Each time a wheel hits a feature (hit probability
per feature: potholes and castings are hit only by wheels in their lane
position) the node sees a vertical-acceleration event whose peak grows with
speed; events above ``threshold`` are reported as five records sharing a
time: ``bump_g`` (peak |a_z - g|, m/s²), ``bump_dur`` (s), ``speed`` (m/s),
``lat``, ``lon`` (GPS with noise, fix lag and occasional multipath
outliers).  Rough and worn surfaces produce false bump events at the rate
the data show.  Packs go out every minute with events and every
``health_s`` as a heartbeat.

Calibration (``python -m simulators.calibrate road``; González et al. 2017
smartphone clips, 50 Hz ``acc_z``, 60 per class, ``road_surface/``):
:data:`SHAPES` holds, per class, lognormal fits of the peak |a_z - median|
and of the span above 30 % of the peak: speed humps = ``asphalt_bumps``
(peak median 4.29 m/s², log-sd 0.27; span 1.42 s), castings =
``metal_bumps`` (4.58, 0.35; 0.96 s), potholes = ``potholes`` (4.00, 0.55;
1.26 s).  False-event rates above the 4 m/s² threshold: 0.029 /s on regular
road and 0.115 /s on worn road (``regular_road``, ``worn_out_road``), with
the peak excess over the threshold exponential (mean 0.92 and 1.87 m/s²).
Clip speeds are not recorded: the reference speeds (21 km/h over potholes and
castings, 16 km/h over humps) are the median simulated speeds over those
features, so at typical speed the simulated peaks and spans follow the clips
(``python -m simulators.calibrate validate``); peak ∝ speed^alpha (1 for
potholes and castings, 1.5 for humps) is an assumption.

>>> from simulators.scenario import load_scenario
>>> from simulators.fleet import build_fleet
>>> from simulators.context import make_context
>>> sc = load_scenario("tiny")
>>> fl = build_fleet(sc, counts={"bins": 0, "air": 0, "noise": 0, "road": 2})
>>> m = RoadModel(fl.devices, sc.road, make_context(fl, 1767571200000, 1))   # a Monday
>>> ups, truth = m.advance(m.ctx.start_ms, m.ctx.end_ms)
>>> any(r[0] == "bump_g" for u in ups for r in u.records)
True
>>> {e.kind for e in truth} >= {"pothole", "casting", "speed_hump"}
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from contract import v1
from simulators.geo import M_PER_DEG_LAT
from simulators.models.base import Upload, plan_poisson
from simulators.rng import substream
from simulators.timebase import DAY_MS
from simulators.truth import TruthEvent

if TYPE_CHECKING:
    from simulators.context import SimContext
    from simulators.fleet import DeviceSpec

__all__ = ["RoadParams", "RoadModel", "Feature", "SHAPES", "build_features"]

#: class -> (peak log-mu, peak log-sd, span log-mu, span log-sd, reference speed km/h, speed exponent)
SHAPES = {
    "speed_hump": (1.494, 0.268, 0.348, 0.246, 16.0, 1.5),
    "casting": (1.532, 0.351, -0.053, 0.284, 21.0, 1.0),
    "pothole": (1.291, 0.548, 0.196, 0.316, 21.0, 1.0),
}
#: false events per second of driving above a 4 m/s² threshold, and mean peak excess (m/s²)
BACKGROUND = {"good": (0.029, 0.921), "worn": (0.1153, 1.873)}


@dataclass
class RoadParams:
    potholes_per_km: float = 0.5
    castings_per_pothole: float = 8.0
    humps_per_km_residential: float = 0.6
    new_potholes_per_day: float = 0.3
    threshold: float = 4.0
    background_scale: float = 1.0
    hit_prob: dict[str, tuple[float, float]] = field(default_factory=lambda: {
        "pothole": (0.3, 0.8), "casting": (0.2, 0.6), "speed_hump": (1.0, 1.0)})
    gps_sd_m: float = 4.0
    gps_lag_s: tuple[float, float] = (0.0, 1.0)
    gps_outlier: float = 0.02
    shift_days: tuple[int, ...] = (0, 1, 2, 3, 4)
    shift_start_h: float = 7.0
    shift_end_h: float = 15.0
    vehicle_share: dict[str, float] = field(default_factory=lambda: {
        "refuse_truck": 0.6, "street_sweeper": 0.2, "van": 0.2})
    speed_factor: tuple[float, float] = (0.55, 0.95)
    hump_speed_kmh: tuple[float, float] = (12.0, 22.0)
    upload_s: int = 60
    health_s: int = 600


@dataclass(slots=True)
class Feature:
    id: str
    kind: str
    edge: int
    offset_m: float
    lat: float
    lon: float
    severity: float        #: log-peak offset of this feature (sd = 0.6 x class sd)
    hit_prob: float
    since_ms: int


def build_features(graph, params: RoadParams, seed: int, t0: int, t1: int) -> list[Feature]:
    """Potholes, castings and speed humps on ``graph`` (deterministic for ``seed``)."""
    rng = substream(seed, "road", "features")
    edges = graph.edges
    L = np.array([e.length_m for e in edges])
    km = L.sum() / 1000.0
    w_pot = L * np.array([3.0 if e.surface == "worn" else 1.0 for e in edges]) * \
        np.array([1.5 if e.road_class == "arterial" else 1.0 for e in edges])
    w_cast = L * np.array([1.5 if e.road_class != "residential" else 1.0 for e in edges])
    w_hump = L * np.array([1.0 if e.road_class == "residential" else 0.0 for e in edges])
    res_km = L[w_hump > 0].sum() / 1000.0
    n_pot = int(rng.poisson(params.potholes_per_km * km))
    n_cast = int(round(n_pot * params.castings_per_pothole))
    n_hump = int(rng.poisson(params.humps_per_km_residential * res_km))
    feats: list[Feature] = []

    def place(kind: str, count: int, w: np.ndarray, since: np.ndarray | None = None) -> None:
        if count <= 0 or w.sum() <= 0:
            return
        eidx = rng.choice(len(edges), size=count, p=w / w.sum())
        lo, hi = params.hit_prob[kind]
        sd = SHAPES[kind][1]
        for j, ei in enumerate(eidx.tolist()):
            e = edges[ei]
            off = float(rng.uniform(min(3.0, e.length_m / 2), max(e.length_m - 3.0, e.length_m / 2)))
            lat, lon = graph.point_on_edge(ei, off, float(rng.uniform(-2.0, 2.0)))
            n = sum(1 for f in feats if f.kind == kind) + 1
            feats.append(Feature(f"{kind.replace('_', '-')}-{n:04d}", kind, ei, round(off, 1), round(lat, 7),
                                 round(lon, 7), float(rng.normal(0, 0.6 * sd)), float(rng.uniform(lo, hi)),
                                 int(since[j]) if since is not None else t0))

    place("pothole", n_pot, w_pot)
    place("casting", n_cast, w_cast)
    place("speed_hump", n_hump, w_hump)
    _, ts = plan_poisson(rng, 1, params.new_potholes_per_day, t0, t1)
    place("pothole", len(ts), w_pot, ts)
    return feats


class RoadModel:
    kind = "road"

    def __init__(self, devices: list["DeviceSpec"], params: RoadParams, ctx: "SimContext") -> None:
        self.p = p = params
        self.ctx = ctx
        self.g = ctx.graph
        self.specs = [d for d in devices if d.kind == "road"]
        self.n = len(self.specs)
        self.rng = substream(ctx.seed, "road")
        self.features = build_features(self.g, p, ctx.seed, ctx.start_ms, ctx.end_ms) if self.n else []
        self.by_edge: dict[int, list[Feature]] = {}
        for f in self.features:
            self.by_edge.setdefault(f.edge, []).append(f)
        for lst in self.by_edge.values():
            lst.sort(key=lambda f: f.offset_m)
        self.truth_out = [TruthEvent(f.kind, f.id, ctx.tenant, f.since_ms, None,
                                     {"lat": f.lat, "lon": f.lon, "edge_id": f.edge, "offset_m": f.offset_m,
                                      "road_class": self.g.edges[f.edge].road_class,
                                      "severity": round(f.severity, 3), "hit_prob": round(f.hit_prob, 2),
                                      "formed_during_run": f.since_ms > ctx.start_ms},
                                     ctx.scenario, f.since_ms) for f in self.features]
        self.truth_out.sort(key=lambda e: e.at_ms)
        self.adj = self.g.adjacency()
        depot = self.g.depot.node
        self.node = [depot] * self.n
        self.prev = [-1] * self.n
        self.cursor = [ctx.start_ms] * self.n
        self.gidx = [d.index for d in self.specs]
        self.vfac = [0.8 if d.asset.vehicle_type == "refuse_truck" else 1.0 for d in self.specs]
        self.coslat = math.cos(math.radians(ctx.lat))
        #: set to a list to record (feature kind, peak m/s², span s, speed m/s, detected) per hit
        self.trace: list | None = None

    # ---- shifts -----------------------------------------------------------
    def _shift(self, i: int, t: int) -> tuple[int, int]:
        """(start, end) of the shift containing or following ``t``."""
        a = self.specs[i].asset
        clock = self.ctx.clock
        day = clock.local_day(t)
        for d in range(day, day + 15):
            if (d + 3) % 7 not in a.shift_days:
                continue
            s = clock.at_local(d, a.shift_start_h)
            e = clock.at_local(d, a.shift_end_h)
            if e > t:
                return s, e
        return 1 << 62, 1 << 62

    def advance(self, t0: int, t1: int) -> tuple[list[Upload], list[TruthEvent]]:
        ups: list[Upload] = []
        for i in range(self.n):
            self._drive(i, t1, ups)
        out = [e for e in self.truth_out if e.at_ms < t1]
        self.truth_out = [e for e in self.truth_out if e.at_ms >= t1]
        return ups, out

    def _drive(self, i: int, t1: int, ups: list[Upload]) -> None:
        p, rng, g = self.p, self.rng, self.g
        while self.cursor[i] < t1:
            s, e = self._shift(i, self.cursor[i])
            if s >= t1:
                self.cursor[i] = max(self.cursor[i], min(s, t1))
                return
            if self.cursor[i] <= s:           # shift starts: leave the depot
                self.cursor[i] = s
                self.node[i], self.prev[i] = g.depot.node, -1
            stop = min(e, t1)
            events: list[tuple[int, list]] = []
            seg0 = tau = self.cursor[i]
            while tau < stop:
                tau = self._edge(i, tau, events)
            self.cursor[i] = tau
            end_of_shift = tau >= e
            self._uploads(i, seg0, tau, events, ups, e if end_of_shift else None)
            if end_of_shift:
                self.cursor[i] = max(tau, e) + 1

    def _edge(self, i: int, tau: int, events: list) -> int:
        """Drive one edge from the current node; returns the arrival time."""
        p, rng, g = self.p, self.rng, self.g
        node, prev = self.node[i], self.prev[i]
        nb = self.adj[node]
        choices = [x for x in nb if x[0] != prev] or nb
        nxt, eid = choices[int(rng.integers(0, len(choices)))]
        e = g.edges[eid]
        h = self.ctx.clock.hour_frac(tau)
        cong = 0.7 if (7.5 <= h <= 9.0 or 16.5 <= h <= 18.0) else 1.0
        v = e.speed_kmh / 3.6 * float(rng.uniform(*p.speed_factor)) * cong * self.vfac[i]
        feats = self.by_edge.get(eid, ())
        if any(f.kind == "speed_hump" for f in feats):
            v = min(v, float(rng.uniform(*p.hump_speed_kmh)) / 3.6)
        v = max(v, 2.0)
        dur_ms = int(e.length_m / v * 1000)
        forward = e.u == node
        for f in feats:
            if f.since_ms > tau or rng.random() >= f.hit_prob:
                continue
            pos = f.offset_m if forward else e.length_m - f.offset_m
            th = tau + int(pos / v * 1000)
            mu, sd, smu, ssd, vref, alpha = SHAPES[f.kind]
            peak = math.exp(mu + f.severity + rng.normal(0, 0.8 * sd)) * (v * 3.6 / vref) ** alpha
            span = math.exp(smu + rng.normal(0, ssd)) * (vref / (v * 3.6)) ** (0.7 if f.kind == "speed_hump" else 0.3)
            if self.trace is not None:
                self.trace.append((f.kind, peak, span, v, peak >= p.threshold))
            if peak < p.threshold:
                continue
            events.append(self._event(th, peak, span, v, f.lat, f.lon, e, forward))
        rate, excess = BACKGROUND.get(e.surface, BACKGROUND["good"])
        nbg = int(rng.poisson(rate * self.p.background_scale * dur_ms / 1000.0))
        for _ in range(nbg):
            off = float(rng.uniform(0, e.length_m))
            lat, lon = g.point_on_edge(eid, off if forward else e.length_m - off)
            th = tau + int(off / v * 1000)
            peak = p.threshold + float(rng.exponential(excess))
            span = math.exp(math.log(0.5) + rng.normal(0, 0.4))
            events.append(self._event(th, peak, span, v, lat, lon, e, forward))
        self.prev[i], self.node[i] = node, nxt
        return tau + max(dur_ms, 1)

    def _event(self, th: int, peak: float, span: float, v: float, lat: float, lon: float, e, forward: bool) -> tuple:
        rng, p = self.rng, self.p
        # GPS: fix lag (position where the vehicle was), noise, occasional multipath outliers
        lag = float(rng.uniform(*p.gps_lag_s)) * v
        a, b = self.g.nodes[e.u], self.g.nodes[e.v]
        if not forward:
            a, b = b, a
        dy = (b.lat - a.lat) * M_PER_DEG_LAT
        dx = (b.lon - a.lon) * M_PER_DEG_LAT * self.coslat
        nrm = math.hypot(dx, dy) or 1.0
        sd = p.gps_sd_m * (8.0 if rng.random() < p.gps_outlier else 1.0)
        north = -lag * dy / nrm + rng.normal(0, sd)
        east = -lag * dx / nrm + rng.normal(0, sd)
        glat = lat + north / M_PER_DEG_LAT
        glon = lon + east / (M_PER_DEG_LAT * self.coslat)
        spd = max(0.0, v + rng.normal(0, 0.3))
        q = v1.quantize
        return (th, [("bump_g", min(q("bump_g", peak), 30000), th), ("bump_dur", min(q("bump_dur", span), 10000), th),
                     ("speed", q("speed", spd), th), ("lat", q("lat", glat), th), ("lon", q("lon", glon), th)])

    def _uploads(self, i: int, seg_start: int, seg_end: int, events: list, ups: list[Upload],
                 shift_end: int | None) -> None:
        """Minute packs with events, plus a heartbeat every ``health_s``; a last one at shift end."""
        p, rng = self.p, self.rng
        U = p.upload_s * 1000
        H = p.health_s * 1000
        buckets: dict[int, list] = {}
        events.sort(key=lambda ev: ev[0])
        prev = -1
        for th, recs in events:
            if th <= prev:               # two events in the same millisecond: keep (device, metric, time) unique
                th = prev + 1
                recs = [(nm, q, th) for nm, q, _ in recs]
            prev = th
            buckets.setdefault(th // U, []).extend(recs)
        hb = -(-seg_start // H) * H
        heartbeats = set()
        while hb < min(seg_end, shift_end if shift_end is not None else seg_end):
            buckets.setdefault(hb // U, [])
            heartbeats.add(hb // U)
            hb += H
        weather = self.ctx.weather
        last = seg_start
        for b in sorted(buckets):
            recs = buckets[b]
            tu = (b + 1) * U + int(rng.integers(300, 3000))
            if b in heartbeats:
                temp = float(weather.temp_c(np.array([b * U]))[0]) + 6.0 + rng.normal(0, 0.3)
                recs.append(("temp", v1.quantize("temp", temp), b * U + 1))
            if recs:
                ups.append(Upload(tu, self.gidx[i], recs, 0, False, "online"))
                last = max(last, tu)
        if shift_end is not None:
            nxt, _ = self._shift(i, shift_end + 1)
            tu = max(shift_end, last) + int(rng.integers(1000, 5000))
            temp = float(weather.temp_c(np.array([shift_end]))[0]) + 6.0
            ups.append(Upload(tu, self.gidx[i], [("temp", v1.quantize("temp", temp), shift_end)],
                              nxt if nxt < (1 << 61) else tu + 7 * DAY_MS, False, "sleeping"))

    def finish(self, t_end: int) -> list[TruthEvent]:
        out, self.truth_out = self.truth_out, []
        return out

