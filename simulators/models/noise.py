"""Noise behaviour: A-weighted levels per interval at residential, high-street and arterial sites.

Each node reports, per ``interval_min``, LAeq (energy mean), LAmax, L10 and
L90.  Levels follow a diurnal profile per site type built from day (07-19),
evening (19-23) and night (23-07) targets with a within-period hourly shape
(morning ramp, late-evening fall, 03-05 minimum) normalised so the energy
mean of each period equals its target; weekends are quieter by day and
Friday/Saturday nights louder; each site has its own offset and each day
its own random level.  Injected events, labelled: night-time parties
(amplified music, raising LAeq and especially L90) and construction out of
hours (impulsive: LAmax and LAeq up, L90 little changed).

Calibration (``python -m simulators.calibrate noise``; Madrid municipal noise
network, ``noise/madrid_noise_daily_2020.csv``, days 2020-01-01..03-13
before the lockdown; stations grouped by median 24 h LAeq: 50-60 dB
residential (10 stations), 60-65 high street (11), 65+ arterial (8)):
the D/E/N medians, weekend-day and Friday/Saturday-night deltas, L10-LAeq
and L90-LAeq offsets by day and night, day-to-day SD and between-site SD in
:data:`SITE_LEVELS`.  Offsets for 5-minute intervals are taken equal to
the daily ones; LAmax - LAeq (8 dB + exponential, mean 12 dB) follows the
daily L01 - LAeq (6-8 dB) plus the peak above L01 within an interval.

>>> from simulators.scenario import load_scenario
>>> from simulators.fleet import build_fleet
>>> from simulators.context import make_context
>>> sc = load_scenario("tiny")
>>> fl = build_fleet(sc, counts={"bins": 0, "air": 0, "noise": 2, "road": 0})
>>> m = NoiseModel(fl.devices, sc.noise, make_context(fl, 1767225600000, 1))
>>> ups, _ = m.advance(m.ctx.start_ms, m.ctx.start_ms + 3600_000)
>>> len(ups) == 2 * 4 and sorted({r[0] for r in ups[0].records}) == ["l10", "l90", "laeq", "lamax"]
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from simulators.models.base import PeriodicModel, SampleRing, Upload, plan_poisson, qarray
from simulators.rng import substream
from simulators.timebase import DAY_MS, HOUR_MS, MIN_MS
from simulators.truth import TruthEvent

if TYPE_CHECKING:
    from simulators.context import SimContext
    from simulators.fleet import DeviceSpec

__all__ = ["NoiseParams", "NoiseModel", "SiteLevels", "SITE_LEVELS", "hourly_profile"]


@dataclass(frozen=True)
class SiteLevels:
    D: float
    E: float
    N: float
    weekend_day_delta: float
    fri_sat_night_delta: float
    l10_day: float
    l90_day: float
    l10_night: float
    l90_night: float
    day_sd: float
    site_sd: float


#: Madrid 2020 pre-lockdown medians by site group (see module docstring).
SITE_LEVELS = {
    "residential": SiteLevels(58.7, 57.6, 51.2, -1.8, 0.3, 2.5, -8.2, 2.7, -11.6, 2.04, 1.91),
    "high_street": SiteLevels(63.4, 62.1, 57.1, -2.2, 0.3, 2.8, -7.7, 3.1, -11.4, 1.2, 1.32),
    "arterial": SiteLevels(68.2, 67.2, 62.8, -2.0, 0.7, 2.2, -5.7, 3.6, -10.8, 1.0, 1.7),
}

# within-period hourly shapes (dB, before normalisation), local hours
_SHAPE = np.array([1.0, -0.5, -1.8, -2.8, -3.0, -2.0, 0.5,            # 00..06 (night)
                   -2.5, -0.3, 0.5, 0.4, 0.2, 0.3, 0.5, 0.4, 0.2, 0.3, 0.6, 0.5,   # 07..18 (day)
                   0.8, 0.3, -0.3, -1.0,                              # 19..22 (evening)
                   2.5])                                              # 23 (night)
_PERIOD = np.array(["N"] * 7 + ["D"] * 12 + ["E"] * 4 + ["N"])


def _energy_mean(levels: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(10 ** (levels / 10))))


def hourly_profile(lv: SiteLevels, weekend: bool = False, party_night: bool = False) -> np.ndarray:
    """LAeq by local hour 0..23 whose period energy means equal D/E/N.

    >>> prof = hourly_profile(SITE_LEVELS["arterial"])
    >>> round(_energy_mean(prof[7:19]), 1), round(_energy_mean(np.r_[prof[23:], prof[:7]]), 1)
    (68.2, 62.8)
    """
    out = np.empty(24)
    targets = {"D": lv.D + (lv.weekend_day_delta if weekend else 0.0), "E": lv.E,
               "N": lv.N + (lv.fri_sat_night_delta if party_night else 0.0)}
    for per, target in targets.items():
        m = _PERIOD == per
        shape = _SHAPE[m]
        out[m] = shape + target - _energy_mean(shape)
    return out


@dataclass
class NoiseParams:
    interval_min: int = 5
    upload_every: int = 3
    site_share: dict[str, float] = field(default_factory=lambda: {
        "residential": 0.45, "high_street": 0.30, "arterial": 0.25})
    interval_sd_db: float = 1.5
    party_per_site_week: float = 0.08
    party_sites: tuple[str, ...] = ("residential", "high_street")
    party_db: tuple[float, float] = (62.0, 78.0)      #: music level at the sensor
    party_hours: tuple[float, float] = (2.0, 5.0)
    construction_per_site_month: float = 0.4
    construction_db: tuple[float, float] = (68.0, 80.0)
    construction_hours: tuple[float, float] = (1.0, 3.0)


class NoiseModel(PeriodicModel):
    kind = "noise"

    def __init__(self, devices: list["DeviceSpec"], params: NoiseParams, ctx: "SimContext") -> None:
        self.p = p = params
        self.ctx = ctx
        self.specs = [d for d in devices if d.kind == "noise"]
        n = self.n = len(self.specs)
        rng = self.rng = substream(ctx.seed, "noise")
        self.gidx = np.array([d.index for d in self.specs], dtype=np.int64)
        types = [d.asset.site_type if d.asset.site_type in SITE_LEVELS else "residential" for d in self.specs]
        self.types = types
        # profiles[type][weekend][party_night] -> 24 levels
        self.prof = np.zeros((n, 4, 24))
        for i, ty in enumerate(types):
            lv = SITE_LEVELS[ty]
            for w in (0, 1):
                for pn in (0, 1):
                    self.prof[i, w * 2 + pn] = hourly_profile(lv, bool(w), bool(pn))
        self.site_off = np.array([rng.normal(0, SITE_LEVELS[ty].site_sd) for ty in types])
        self.day_sd = np.array([SITE_LEVELS[ty].day_sd for ty in types])
        self.l10d = np.array([SITE_LEVELS[ty].l10_day for ty in types])
        self.l10n = np.array([SITE_LEVELS[ty].l10_night for ty in types])
        self.l90d = np.array([SITE_LEVELS[ty].l90_day for ty in types])
        self.l90n = np.array([SITE_LEVELS[ty].l90_night for ty in types])
        self.P = p.interval_min * MIN_MS
        self.U = max(1, p.upload_every)
        self.phase = rng.integers(0, 30_000, n)
        self.slot = rng.integers(0, self.U, n)
        self.day0 = ctx.clock.local_day(ctx.start_ms) - 2
        nd = ctx.clock.local_day(ctx.end_ms) - self.day0 + 4
        self.day_off = rng.normal(0, 1, (nd, n)) * self.day_sd
        self.ring = SampleRing(n, self.U, ("laeq", "lamax", "l10", "l90"))
        self.events: dict[int, list[tuple[int, int, str, float]]] = {}
        self.truth_out: list[TruthEvent] = []
        self._plan(substream(ctx.seed, "noise", "events"))

    def _plan(self, rng: np.random.Generator) -> None:
        p, ctx = self.p, self.ctx
        clock = ctx.clock
        t0, t1 = ctx.start_ms, ctx.end_ms
        party_ok = np.array([ty in p.party_sites for ty in self.types])
        cand = np.nonzero(party_ok)[0]
        # parties: Friday / Saturday nights mostly (rate per site-week; 85 % on Fri/Sat)
        ent, ts = plan_poisson(rng, len(cand), p.party_per_site_week / 7.0, t0, t1)
        for j, t in zip(ent.tolist(), ts.tolist()):
            i = int(cand[j])
            day = clock.local_day(t)
            if rng.random() < 0.85:
                day += (4 - (day + 3) % 7) % 7 if rng.random() < 0.5 else (5 - (day + 3) % 7) % 7
            start = clock.at_local(day, float(rng.uniform(21.5, 24.5)))
            end = start + int(rng.uniform(*p.party_hours) * HOUR_MS)
            if start >= t1 or start < t0:
                continue
            self._add(i, start, end, "noise_party", float(rng.uniform(*p.party_db)), rng)
        ent, ts = plan_poisson(rng, self.n, p.construction_per_site_month / 30.0, t0, t1)
        for i, t in zip(ent.tolist(), ts.tolist()):
            day = clock.local_day(t)
            wd = (day + 3) % 7
            u = rng.random()
            if wd == 6 or u < 0.3:            # Sunday or out-of-hours weekday evening
                h0 = float(rng.uniform(8, 16)) if wd == 6 else float(rng.uniform(19, 21.5))
            else:                              # before permitted hours (08:00) on weekdays / Saturday
                h0 = float(rng.uniform(5.5, 7.0))
            start = clock.at_local(day, h0)
            end = start + int(rng.uniform(*p.construction_hours) * HOUR_MS)
            if start >= t1 or start < t0:
                continue
            self._add(i, start, end, "construction_out_of_hours", float(rng.uniform(*p.construction_db)), rng)
        self.truth_out.sort(key=lambda e: e.start_ms)

    def _add(self, i: int, start: int, end: int, kind: str, level: float, rng: np.random.Generator) -> None:
        self.events.setdefault(i, []).append((start, end, kind, level))
        d = self.specs[i]
        det: dict[str, Any] = {"device_id": d.device_id, "site_type": d.asset.site_type, "lat": d.lat,
                               "lon": d.lon, "level_db": round(level, 1)}
        self.truth_out.append(TruthEvent(kind, d.device_id, d.tenant, start, end, det, self.ctx.scenario, start))

    def _step(self, s: int, ups: list[Upload]) -> None:
        p, ctx, n, rng = self.p, self.ctx, self.n, self.rng
        k = s // self.P
        t = s + self.P + self.phase             # the interval [s, s+P) is reported just after it ends
        mid = s + self.P // 2
        off = ctx.clock.offset_s(mid) * 1000
        loc = mid + off
        h = int((loc % DAY_MS) // HOUR_MS)
        day = loc // DAY_MS
        wd = (day + 3) % 7
        weekend = wd >= 5
        # nights starting Friday/Saturday evening (hours 23, 0..6 of Sat/Sun)
        party_night = (h >= 23 and wd in (4, 5)) or (h < 7 and wd in (5, 6))
        col = (2 if weekend else 0) + (1 if party_night else 0)
        di = int(min(max(day - self.day0, 0), self.day_off.shape[0] - 1))
        night = h >= 23 or h < 7
        # minus sd² ln10/20: the energy mean of the noisy intervals then equals the profile level
        laeq = (self.prof[:, col, h] + self.site_off + self.day_off[di]
                + rng.normal(-p.interval_sd_db ** 2 * np.log(10) / 20, p.interval_sd_db, n))
        l10 = laeq + (self.l10n if night else self.l10d) + rng.normal(0, 0.5, n)
        l90 = laeq + (self.l90n if night else self.l90d) + rng.normal(0, 1.0, n)
        lamax = laeq + 8.0 + rng.exponential(4.0, n)
        for i, evs in self.events.items():
            for a, b, kind, lvl in evs:
                if a < s + self.P and b > s:
                    frac = (min(b, s + self.P) - max(a, s)) / self.P
                    e = lvl + rng.normal(0, 1.5)
                    tot = 10 * np.log10(10 ** (laeq[i] / 10) + frac * 10 ** (e / 10))
                    if kind == "noise_party":          # steady music lifts the background too
                        l90[i] = max(l90[i], e - 4 + 10 * np.log10(max(frac, 1e-3)))
                        l10[i] = max(l10[i], e + 2)
                        lamax[i] = max(lamax[i], e + 10 + rng.exponential(3))
                    else:                               # impulsive
                        l10[i] = max(l10[i], e + 3)
                        lamax[i] = max(lamax[i], e + 15 + rng.exponential(4))
                    laeq[i] = tot
        l10 = np.maximum(l10, l90)
        lamax = np.maximum(lamax, np.maximum(laeq, l10))
        q = {"laeq": qarray("laeq", laeq), "lamax": qarray("lamax", lamax), "l10": qarray("l10", l10),
             "l90": qarray("l90", np.minimum(l90, laeq))}
        self.ring.put(k, t, q)
        self._upload(k, t, ups)
