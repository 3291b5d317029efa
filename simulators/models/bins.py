"""Bin-fill behaviour: household wheelie bins on rounds and street litter bins.

Physics and behaviour (all seeded, vectorised over bins with numpy):

* **Filling.**  Household bins receive bags (Poisson, mostly in the evening)
  at a per-household rate drawn from a lognormal; street litter bins fill
  continuously with footfall.  Rates vary by day of week and season.
* **Rounds.**  Household bins are collected weekly or fortnightly on their
  round day at a slot that follows the crew's order along the round; the
  household puts the bin out the evening before (or early morning) and
  takes it in afterwards (the accelerometer records both as tilt events, the
  lifter tips the bin over ~130°).  Street bins are emptied on their
  schedule without tilting.
* **Sensor.**  An ultrasonic / time-of-flight sensor in the lid measures the
  distance to the rubbish (mm resolution, ~6 mm noise plus surface
  roughness and 0.5 % spurious echoes); the firmware reports ``distance``,
  ``fill`` = 1 - distance/depth, the lid ``temp`` and ``tilt``, sampling every
  ``sample_min`` and uploading every ``upload_every`` samples; a temperature
  above ``alarm_temp_c`` or a fall triggers immediate alarm uploads.
* **Injected events**, all labelled: crew missed a collection (single bins
  and whole streets), household did not put the bin out (one and two rounds
  in a row), extra waste (overflow), fire, lid left open, bin knocked over,
  sensor stuck, sensor noisy.  Emergent states are labelled too: every
  ``collection`` (with the fill before it) and every ``overflow`` (true fill
  above the rim, with its cause).  Device faults (dead battery, offline
  bursts, clock drift) belong to ``simulators.node``.

Calibration (``python -m simulators.calibrate bins``, City of Edinburgh
Enevo litter-bin pilot, ``smart_bins/edinburgh_enevo_bin_collections_2016.csv``,
10,000 collections at 334 sites, Jun-Aug 2016, fill % scaled by 0.8 as the
sheet notes): street-bin fill rate per site lognormal with median 0.274/day
and log-sd 0.567 (exp(-1.296)); fill before collection median 0.65 with 14 %
of collections at or above the "full" mark; day-of-week factors from a
least-squares fit of fill gained per interval (see ``STREET_DOW``); summer
amplitude from the June -> August rise of the median rate (0.316 -> 0.448
per day, partly the Festival) damped to +/-20 % for a non-festival town.
Each street bin's planning rate is drawn from that lognormal (times a
location factor) and the council gives it the schedule (daily, Mon/Wed/Fri,
Tue/Fri, weekly) that brings it closest to 0.65 full at collection, as the
Edinburgh service did (median fill before collection 0.65); the true rate
differs from the planning figure by a lognormal error (sd 0.25).  Household rates are not in the data: 15 L/day for
weekly and 8.5 L/day for fortnightly bins (WRAP-scale residual waste of ~9-11 kg
per household per week at ~80-100 kg/m³ loose), lognormal sigma 0.30
between households, so a few per cent of bins overflow by collection day.

>>> from simulators.scenario import load_scenario
>>> from simulators.fleet import build_fleet
>>> sc = load_scenario("tiny")
>>> fl = build_fleet(sc, counts={"bins": 40, "air": 0, "noise": 0, "road": 0})
>>> from simulators.context import make_context
>>> m = BinModel(fl.devices, sc.bins, make_context(fl, 1767225600000, 2))
>>> ups, truth = m.advance(m.ctx.start_ms, m.ctx.start_ms + 24 * 3600_000)
>>> len(ups) >= 40 * 3 and all(u.records for u in ups)
True
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from simulators.models.base import Upload, plan_poisson, qarray
from simulators.rng import substream
from simulators.timebase import DAY_MS, HOUR_MS, MIN_MS, iso
from simulators.truth import TruthEvent

if TYPE_CHECKING:
    from simulators.fleet import DeviceSpec, SimContext

__all__ = ["BinParams", "HouseholdBinParams", "StreetBinParams", "RoundParams", "BinEventParams", "BinModel",
           "STREET_DOW"]

#: Street litter bins, relative fill rate Mon..Sun (Edinburgh 2016 least-squares fit, normalised to mean 1;
#: ``python -m simulators.calibrate bins``).
STREET_DOW = (0.987, 0.955, 0.878, 0.994, 0.991, 1.195, 1.001)
#: Footfall-shaped hourly weights for street bins (local hour 0..23).
STREET_HOURS = (0.15, 0.1, 0.05, 0.05, 0.05, 0.1, 0.3, 0.7, 1.1, 1.3, 1.5, 1.8,
                2.1, 2.0, 1.8, 1.6, 1.6, 1.7, 1.6, 1.3, 1.0, 0.8, 0.6, 0.35)
#: Household bag disposal by local hour (breakfast, after work, evening tidy-up).
HOUSE_HOURS = (0.05, 0.0, 0.0, 0.0, 0.0, 0.1, 0.5, 1.2, 1.2, 0.8, 0.7, 0.8,
               0.9, 0.8, 0.8, 0.9, 1.2, 1.8, 2.3, 2.5, 2.4, 1.8, 1.1, 0.4)


@dataclass
class HouseholdBinParams:
    """Household wheelie bins.  ``capacity_share`` maps litres -> share of bins."""

    capacity_share: dict[int, float] = field(default_factory=lambda: {140: 0.15, 240: 0.75, 360: 0.10})
    #: sensor (lid) to bin floor, metres, per capacity
    depth_m: dict[int, float] = field(default_factory=lambda: {140: 0.80, 240: 0.95, 360: 1.00})
    weekly_share: float = 0.55
    litres_per_day_weekly: float = 15.0
    litres_per_day_fortnightly: float = 8.5
    rate_sigma: float = 0.30
    bag_l: float = 30.0
    dow: tuple[float, ...] = (1.0, 0.95, 0.95, 0.95, 1.0, 1.08, 1.07)
    christmas_boost: float = 0.35


@dataclass
class StreetBinParams:
    capacity_l: int = 240
    depth_m: float = 0.90
    rate_median: float = 0.274
    rate_sigma: float = 0.567
    #: rate multiplier by road class where the bin stands
    location_factor: dict[str, float] = field(default_factory=lambda: {
        "high_street": 1.0, "arterial": 0.55, "residential": 0.35})
    summer_amp: float = 0.20
    #: collection schedules (weekdays, Mon=0) the council chooses from; each bin gets the one whose mean
    #: interval brings its planning rate closest to ``target_fill`` at collection
    schedules: tuple[tuple[int, ...], ...] = ((0, 1, 2, 3, 4, 5, 6), (0, 2, 4, 6), (0, 3, 5), (1, 4), (2,))
    target_fill: float = 0.8
    #: true rate = planning rate x lognormal(0, planning_error) (the council's estimate is imperfect)
    planning_error: float = 0.25
    start_h: float = 5.5
    end_h: float = 10.0


@dataclass
class RoundParams:
    """Household collection rounds (local time)."""

    days: tuple[int, ...] = (0, 1, 2, 3, 4)
    start_h: float = 7.0
    end_h: float = 15.0
    slot_jitter_min: float = 10.0
    put_out_evening_share: float = 0.7
    take_in_after_h: tuple[float, float] = (2.0, 10.0)
    residual_fill: tuple[float, float] = (0.0, 0.03)


@dataclass
class BinEventParams:
    """Injected event rates (labelled in the truth)."""

    not_put_out: float = 0.04            #: per scheduled household collection
    not_put_out_repeat: float = 0.25     #: chance a not-put-out streak lasts a second round
    missed_collection: float = 0.006     #: per bin that is out (crew misses it)
    missed_street: float = 0.004         #: per street segment per round day (crew skips the street)
    extra_waste_per_bin_day: float = 0.0015
    extra_waste_fill: tuple[float, float] = (0.4, 0.9)
    fire_per_bin_year: float = 0.02
    fire_peak_c: tuple[float, float] = (80.0, 150.0)
    fire_hours: tuple[float, float] = (1.0, 4.0)
    lid_open_per_bin_day: float = 0.002
    lid_open_hours: tuple[float, float] = (1.0, 18.0)
    knocked_over_per_bin_day: float = 0.0005
    knocked_over_hours: tuple[float, float] = (1.0, 20.0)
    sensor_stuck_per_bin_year: float = 0.1
    sensor_stuck_days: tuple[float, float] = (2.0, 30.0)
    sensor_noisy_per_bin_year: float = 0.1
    sensor_noisy_days: tuple[float, float] = (1.0, 20.0)


@dataclass
class BinParams:
    street_fraction: float = 0.06
    sample_min: int = 60
    upload_every: int = 6
    alarm_temp_c: float = 60.0
    alarm_sample_min: int = 5
    household: HouseholdBinParams = field(default_factory=HouseholdBinParams)
    street: StreetBinParams = field(default_factory=StreetBinParams)
    rounds: RoundParams = field(default_factory=RoundParams)
    events: BinEventParams = field(default_factory=BinEventParams)


# event queue codes
_PUT_OUT, _COLLECT, _MISSED, _NOT_OUT, _TAKE_IN, _DUMP, _FIRE, _LID, _KNOCK, _STUCK, _NOISY = range(11)
_EV_NAMES = {_LID: "lid_open", _KNOCK: "knocked_over", _STUCK: "sensor_stuck", _NOISY: "sensor_noisy"}


@dataclass(slots=True)
class _Fire:
    start: int
    peak: float
    rise_ms: float
    burn_ms: int
    tau_ms: float
    end: int
    amb: float = 10.0

    def temp(self, t: np.ndarray) -> np.ndarray:
        dt = (t - self.start).astype(np.float64)
        up = self.amb + (self.peak - self.amb) * (1 - np.exp(-np.maximum(dt, 0) / self.rise_ms))
        top = self.amb + (self.peak - self.amb) * (1 - math.exp(-self.burn_ms / self.rise_ms))
        down = self.amb + (top - self.amb) * np.exp(-np.maximum(dt - self.burn_ms, 0) / self.tau_ms)
        return np.where(dt < 0, -1e9, np.where(dt <= self.burn_ms, up, down))


class BinModel:
    """All bin-fill devices of a fleet.  See the module docstring."""

    kind = "bin_fill"

    def __init__(self, devices: list["DeviceSpec"], params: BinParams, ctx: "SimContext") -> None:
        self.p = params
        self.ctx = ctx
        specs = [d for d in devices if d.kind == "bin_fill"]
        self.specs = specs
        n = self.n = len(specs)
        rng = self.rng = substream(ctx.seed, "bins")
        self.gidx = np.array([d.index for d in specs], dtype=np.int64)
        a = [d.asset for d in specs]
        self.is_house = np.array([x.bin_kind == "household" for x in a], dtype=bool)
        self.depth = np.array([x.depth_m for x in a], dtype=np.float64)
        cap = np.array([x.capacity_l for x in a], dtype=np.float64)
        self.freq = np.array([x.frequency_weeks for x in a], dtype=np.int64)
        self.parity = np.array([x.week_parity for x in a], dtype=np.int64)
        self.slot_h = np.array([x.slot_h for x in a], dtype=np.float64)
        self.edge = np.array([x.edge_id for x in a], dtype=np.int64)
        self.days_mask = np.zeros((n, 7), dtype=bool)
        for i, x in enumerate(a):
            self.days_mask[i, list(x.round_days)] = True
        hp, sp = params.household, params.street
        plan = np.array([x.expected_fill_per_day for x in a], dtype=np.float64)
        # true fill rate per day: the household's own habits / the error of the council's planning figure
        err = np.where(self.is_house, hp.rate_sigma, sp.planning_error)
        self.rate = plan * np.exp(rng.normal(0, 1, n) * err)
        self.bag = np.where(self.is_house, hp.bag_l / cap, 0.0)
        self.tilt0 = rng.uniform(0.5, 3.5, n)
        self.P = params.sample_min * MIN_MS
        self.U = max(1, params.upload_every)
        self.phase = rng.integers(0, self.P, n)
        self.slot = rng.integers(0, self.U, n)
        cycle_days = np.where(self.is_house, 7.0 * self.freq, 3.0)
        self.fill = np.clip(self.rate * rng.uniform(0, 1, n) * cycle_days, 0, 0.95)
        self.last_t = np.full(n, ctx.start_ms, dtype=np.int64)
        self.hh_dow = np.array(hp.dow, dtype=np.float64)
        self.st_dow = np.array(STREET_DOW, dtype=np.float64)
        self.hh_hours = np.array(HOUSE_HOURS) / np.mean(HOUSE_HOURS)
        self.st_hours = np.array(STREET_HOURS) / np.mean(STREET_HOURS)
        # ring buffers of quantized samples (column = step % U)
        self.r_t = np.zeros((n, self.U), dtype=np.int64)
        self.r_d = np.zeros((n, self.U), dtype=np.int64)
        self.r_f = np.zeros((n, self.U), dtype=np.int64)
        self.r_temp = np.zeros((n, self.U), dtype=np.int64)
        self.r_tilt = np.zeros((n, self.U), dtype=np.int64)
        self.first_step: int | None = None
        self.extras: dict[int, list] = {}
        # states
        self.stuck_until = np.zeros(n, dtype=np.int64)
        self.stuck_q = np.zeros(n, dtype=np.int64)
        self.noisy_until = np.zeros(n, dtype=np.int64)
        self.lid_until = np.zeros(n, dtype=np.int64)
        self.knock_until = np.zeros(n, dtype=np.int64)
        self.fires: dict[int, _Fire] = {}
        self.ov_start = np.full(n, -1, dtype=np.int64)
        self.ov_max = np.zeros(n)
        self.ov_cause: dict[int, str] = {}
        self.open_miss: dict[int, TruthEvent] = {}
        self.np_streak = np.zeros(n, dtype=np.int64)      # rounds still to skip
        self.np_event: dict[int, TruthEvent] = {}
        self.last_dump = np.full(n, -1, dtype=np.int64)
        self.pending_out = np.zeros(n, dtype=bool)
        self.planned_day = ctx.clock.local_day(ctx.start_ms) - 1
        self.queue: list[tuple[int, int, int, int, Any]] = []    # (time, seq, code, bin, data)
        self._qseq = 0
        self.truth_out: list[TruthEvent] = []
        self._alarms: list[Upload] = []
        self._plan_injected()

    # ---- planning -------------------------------------------------------
    def _push(self, t: int, code: int, i: int, data: Any = None) -> None:
        self._qseq += 1
        heapq.heappush(self.queue, (int(t), self._qseq, code, int(i), data))

    def _truth(self, kind: str, i: int, start: int, end: int | None, at: int, **details: Any) -> TruthEvent:
        s = self.specs[i]
        d = {"device_id": s.device_id, "asset_id": s.asset.asset_id, "bin_kind": s.asset.bin_kind,
             "lat": s.lat, "lon": s.lon}
        d.update(details)
        return TruthEvent(kind, s.asset.asset_id, s.tenant, int(start), None if end is None else int(end), d,
                          self.ctx.scenario, int(at))

    def _plan_injected(self) -> None:
        e = self.p.events
        ctx = self.ctx
        t0, t1 = ctx.start_ms, ctx.end_ms
        rng = substream(ctx.seed, "bins", "events")

        def plan(code: int, per_day: float, dur: tuple[float, float] | None, unit_ms: int) -> None:
            ent, ts = plan_poisson(rng, self.n, per_day, t0, t1)
            durs = rng.uniform(dur[0], dur[1], len(ts)) if dur else np.zeros(len(ts))
            for i, t, d in zip(ent.tolist(), ts.tolist(), durs.tolist()):
                self._push(t, code, i, int(d * unit_ms))

        plan(_DUMP, e.extra_waste_per_bin_day, e.extra_waste_fill, 1000)     # data = fill * 1000
        plan(_FIRE, e.fire_per_bin_year / 365.0, e.fire_hours, HOUR_MS)
        plan(_LID, e.lid_open_per_bin_day, e.lid_open_hours, HOUR_MS)
        plan(_KNOCK, e.knocked_over_per_bin_day, e.knocked_over_hours, HOUR_MS)
        plan(_STUCK, e.sensor_stuck_per_bin_year / 365.0, e.sensor_stuck_days, DAY_MS)
        plan(_NOISY, e.sensor_noisy_per_bin_year / 365.0, e.sensor_noisy_days, DAY_MS)

    def _plan_day(self, day: int) -> None:
        """Plan the collections of local ``day`` (put-outs may fall on the evening before)."""
        ctx, rp, ev = self.ctx, self.p.rounds, self.p.events
        rng = substream(ctx.seed, "bins", "day", day)
        wd = (day + 3) % 7
        week = (day + 3) // 7
        due_house = self.is_house & self.days_mask[:, wd] & ((self.freq == 1) | ((week % 2) == self.parity))
        due_street = (~self.is_house) & self.days_mask[:, wd]
        due = np.nonzero(due_house | due_street)[0]
        if len(due) == 0:
            return
        slot = self.slot_h[due] + rng.normal(0, rp.slot_jitter_min / 60.0, len(due))
        t_slot = np.array([ctx.clock.at_local(day, h) for h in slot.tolist()], dtype=np.int64)
        u_np = rng.random(len(due))
        u_rep = rng.random(len(due))
        u_miss = rng.random(len(due))
        u_eve = rng.random(len(due))
        put_h = np.where(u_eve < rp.put_out_evening_share, rng.uniform(-6.0, -2.0, len(due)),
                         rng.uniform(6.0, 6.9, len(due)))
        take_in = rng.uniform(rp.take_in_after_h[0], rp.take_in_after_h[1], len(due))
        # crew skips whole streets (blocked access)
        edges = np.unique(self.edge[due])
        skipped = set(edges[rng.random(len(edges)) < ev.missed_street].tolist())
        for k, i in enumerate(due.tolist()):
            ts = int(t_slot[k])
            if ts < ctx.start_ms or ts >= ctx.end_ms + DAY_MS:
                continue
            house = bool(self.is_house[i])
            if house:
                if self.np_streak[i] > 0:
                    self.np_streak[i] -= 1
                    self._push(ts, _NOT_OUT, i, 0)
                    continue
                if u_np[k] < ev.not_put_out:
                    rounds = 2 if u_rep[k] < ev.not_put_out_repeat else 1
                    self.np_streak[i] = rounds - 1
                    self._push(ts, _NOT_OUT, i, rounds)
                    continue
                t_put = min(ctx.clock.at_local(day, float(put_h[k])), ts - 5 * MIN_MS)
                if t_put >= ctx.start_ms:
                    self._push(t_put, _PUT_OUT, i)
            street = int(self.edge[i]) in skipped
            if street or u_miss[k] < ev.missed_collection:
                self._push(ts, _MISSED, i, "street_skipped" if street else "crew")
                if house:
                    self._push(ts + int(take_in[k] * HOUR_MS), _TAKE_IN, i)
            else:
                self._push(ts, _COLLECT, i)
                if house:
                    self._push(ts + int(take_in[k] * HOUR_MS), _TAKE_IN, i)

    # ---- simulation -----------------------------------------------------
    def advance(self, t0: int, t1: int) -> tuple[list[Upload], list[TruthEvent]]:
        ups: list[Upload] = []
        P = self.P
        s = -(-t0 // P) * P if t0 % P else t0
        if self.first_step is None:
            self.first_step = s // P
        while s < t1:
            # plan collections up to the day after the latest sample of this step
            need = self.ctx.clock.local_day(s + P) + 1
            while self.planned_day < need:
                self.planned_day += 1
                self._plan_day(self.planned_day)
            self._step(s, ups)
            s += P
        out, self.truth_out = self.truth_out, []
        return ups, out

    def _step(self, s: int, ups: list[Upload]) -> None:
        ctx, n, P = self.ctx, self.n, self.P
        k = s // P
        t = s + self.phase                                # this step's sample time per bin
        dt_days = (t - self.last_t) / DAY_MS
        off = ctx.clock.offset_s(s) * 1000
        loc = t + off
        hour = (loc // HOUR_MS) % 24
        dow = (loc // DAY_MS + 3) % 7
        doy = ((loc // DAY_MS) % 365.25)
        season_h = 1.0 + self.p.household.christmas_boost * np.exp(-0.5 * (((doy - 361 + 182) % 365.25 - 182) / 6.0) ** 2)
        # normalised to 1 in mid-July, the centre of the Edinburgh calibration period
        amp = self.p.street.summer_amp
        season_s = (1.0 + amp * np.cos(2 * np.pi * (doy - 196) / 365.25)) / (1.0 + amp)
        mult_h = self.hh_dow[dow] * self.hh_hours[hour] * season_h
        mult_s = self.st_dow[dow] * self.st_hours[hour] * season_s
        rng = self.rng
        lam = np.where(self.is_house, self.rate / np.maximum(self.bag, 1e-9) * mult_h * dt_days, 0.0)
        bags = rng.poisson(np.maximum(lam, 0))
        inc = np.where(self.is_house, bags * self.bag * rng.uniform(0.6, 1.4, n),
                       self.rate * mult_s * dt_days * rng.gamma(4.0, 0.25, n))

        # sparse events due up to this step's last sample
        t_max = s + P
        deferred = []
        while self.queue and self.queue[0][0] <= t_max:
            item = heapq.heappop(self.queue)
            te, _, code, i, data = item
            if te > t[i]:
                deferred.append(item)
                continue
            self._event(te, code, i, data, t, inc)
        for item in deferred:
            heapq.heappush(self.queue, item)

        self.fill += inc
        # overflow tracking (true fill above the rim)
        over = self.fill > 1.0
        opening = over & (self.ov_start < 0)
        for i in np.nonzero(opening)[0].tolist():
            self.ov_start[i] = int(t[i])
            self.ov_cause[i] = self._overflow_cause(i, int(t[i]))
        self.ov_max = np.where(over, np.maximum(self.ov_max, self.fill), self.ov_max)
        closing = (~over) & (self.ov_start >= 0)
        for i in np.nonzero(closing)[0].tolist():
            self._close_overflow(i, int(t[i]))

        # --- measurement ---------------------------------------------------
        depth = self.depth
        f = np.clip(self.fill, 0.0, 1.0)
        d = depth * (1 - f) + rng.normal(0, 1, n) * (0.006 + 0.02 * f)
        d = np.where(self.fill >= 1.0, rng.uniform(0.02, 0.06, n), d)
        spur = rng.random(n) < 0.005
        d = np.where(spur, rng.uniform(0.05, 1.0, n) * depth, d)
        tilt = self.tilt0 + rng.normal(0, 0.3, n)
        tilt = np.where(self.fill > 1.02, rng.uniform(15, 40, n), tilt)      # lid propped open by rubbish
        noisy = self.noisy_until > t
        if noisy.any():
            d = np.where(noisy, d + rng.normal(0, 0.12, n), d)
            d = np.where(noisy & (rng.random(n) < 0.15), rng.uniform(0.02, 1.0, n) * depth, d)
        lid = self.lid_until > t
        if lid.any():
            d = np.where(lid, rng.uniform(1.2, 4.5, n), d)
            tilt = np.where(lid, rng.uniform(95, 120, n), tilt)
        knock = self.knock_until > t
        if knock.any():
            d = np.where(knock, rng.uniform(0.05, 0.5, n), d)
            tilt = np.where(knock, rng.uniform(80, 95, n), tilt)
        sun = ctx.weather.sun(t)
        temp = ctx.weather.temp_c(t) + sun * np.where(self.is_house, 7.0, 4.0) + rng.normal(0, 0.25, n)
        fire_idx = [i for i, fs in self.fires.items() if fs.start <= t[i]]
        for i in fire_idx:
            fs = self.fires[i]
            ft = float(fs.temp(np.array([t[i]]))[0])
            if ft > temp[i]:
                temp[i] = ft
                d[i] = rng.uniform(0.05, 1.0) * depth[i]
        d = np.clip(d, 0.02, 4.5)
        dq = qarray("distance", d)
        stuck = self.stuck_until > t
        if stuck.any():
            dq = np.where(stuck, self.stuck_q, dq)
        self.stuck_q = np.where(stuck, self.stuck_q, dq)
        # firmware: fill from the (integer mm) distance and its configured depth
        fq = qarray("fill", 1.0 - (dq / 1000.0) / depth)
        col = k % self.U
        self.r_t[:, col] = t
        self.r_d[:, col] = dq
        self.r_f[:, col] = fq
        self.r_temp[:, col] = qarray("temp", temp)
        self.r_tilt[:, col] = qarray("tilt", np.clip(tilt, 0, 180))
        self.last_t = t

        # alarm uploads: falls (queued by events) and fires (5-minute samples while hot)
        if self._alarms:
            ups.extend(self._alarms)
            self._alarms.clear()
        for i in fire_idx:
            self._fire_alarms(i, s, t, ups)

        # scheduled uploads
        first = self.first_step or 0
        order = [c % self.U for c in range(k - self.U + 1, k + 1) if c >= first]
        up_idx = np.nonzero((k % self.U) == self.slot)[0]
        if len(up_idx) == 0:
            return
        T = self.r_t[up_idx][:, order].tolist()
        D = self.r_d[up_idx][:, order].tolist()
        F = self.r_f[up_idx][:, order].tolist()
        TE = self.r_temp[up_idx][:, order].tolist()
        TI = self.r_tilt[up_idx][:, order].tolist()
        delay = rng.integers(1500, 9000, len(up_idx)).tolist()
        nxt = self.U * P
        gidx = self.gidx
        for j, i in enumerate(up_idx.tolist()):
            recs = []
            for tt, dd, ff, te, ti in zip(T[j], D[j], F[j], TE[j], TI[j]):
                recs.append(("distance", dd, tt))
                recs.append(("fill", ff, tt))
                recs.append(("temp", te, tt))
                recs.append(("tilt", ti, tt))
            ex = self.extras.pop(i, None)
            if ex:
                recs.extend(ex)
            tu = T[j][-1] + delay[j]
            ups.append(Upload(tu, int(gidx[i]), recs, T[j][-1] + nxt + delay[j]))

    def _overflow_cause(self, i: int, t: int) -> str:
        if self.np_streak[i] > 0 or i in self.np_event:
            return "not_put_out"
        if i in self.open_miss:
            return "missed_collection"
        if self.last_dump[i] >= 0 and t - self.last_dump[i] < 2 * DAY_MS:
            return "extra_waste"
        return "high_use"

    def _close_overflow(self, i: int, t_end: int) -> None:
        st = int(self.ov_start[i])
        self.truth_out.append(self._truth("overflow", i, st, t_end, t_end, cause=self.ov_cause.pop(i, "high_use"),
                                          max_fill=round(float(self.ov_max[i]), 3)))
        self.ov_start[i] = -1
        self.ov_max[i] = 0.0

    def _motion(self, i: int, te: int, lo: float, hi: float) -> None:
        """An accelerometer wake-up records the tilt at ``te``."""
        tilt = self.rng.uniform(lo, hi)
        self.extras.setdefault(i, []).append(("tilt", int(qarray("tilt", np.array([tilt]))[0]), int(te) + 1))

    def _event(self, te: int, code: int, i: int, data: Any, t: np.ndarray, inc: np.ndarray) -> None:
        rng = self.rng
        frac = min(1.0, max(0.0, (te - self.last_t[i]) / max(1, t[i] - self.last_t[i])))
        if code == _PUT_OUT:
            self._motion(i, te, 25, 40)
            self.pending_out[i] = True
        elif code == _TAKE_IN:
            self._motion(i, te, 25, 40)
            self.pending_out[i] = False
        elif code == _COLLECT:
            before = float(self.fill[i] + inc[i] * frac)
            res = float(rng.uniform(*self.p.rounds.residual_fill))
            self.fill[i] = res - inc[i] * frac
            if self.is_house[i]:
                self._motion(i, te, 120, 150)
            self.truth_out.append(self._truth("collection", i, te, None, te, fill_before=round(before, 3),
                                              round_id=self.specs[i].asset.round_id))
            self._close_on_collection(i, te)
            if self.ov_start[i] >= 0:
                self._close_overflow(i, te)
        elif code == _MISSED:
            if i not in self.open_miss:
                self.open_miss[i] = self._truth("missed_collection", i, te, None, te, cause=data,
                                                street_edge=int(self.edge[i]),
                                                round_id=self.specs[i].asset.round_id,
                                                fill_at_schedule=round(float(self.fill[i] + inc[i] * frac), 3))
        elif code == _NOT_OUT:
            if data:        # first round of a streak: data = planned streak length
                prev = self.np_event.pop(i, None)
                if prev is not None:    # a new streak before any emptying: the earlier one is labelled too
                    prev.end_ms = te
                    prev.at_ms = te
                    self.truth_out.append(prev)
                kind = "not_put_out_2" if data == 2 else "not_put_out"
                self.np_event[i] = self._truth(kind, i, te, None, te, rounds=int(data), scheduled=[iso(te)],
                                               round_id=self.specs[i].asset.round_id)
            elif i in self.np_event:
                self.np_event[i].details["scheduled"].append(iso(te))
        elif code == _DUMP:
            self.fill[i] += data / 1000.0
            self.last_dump[i] = te
        elif code == _FIRE:
            if i in self.fires:
                return
            e = self.p.events
            peak = float(rng.uniform(*e.fire_peak_c))
            burn = int(data * 0.4)
            rise = float(rng.uniform(5, 15)) * MIN_MS
            tau = max(data * 0.3, 20 * MIN_MS)
            amb = float(self.ctx.weather.temp_c(np.array([te]))[0])
            fs = _Fire(te, peak, rise, burn, tau, 0, amb)
            # fire is over when the lid is back under 40 °C
            top = amb + (peak - amb) * (1 - math.exp(-burn / rise))
            fs.end = te + burn + int(tau * math.log(max(1.0001, (top - amb) / max(0.5, 40.0 - amb))))
            self.fires[i] = fs
            self.truth_out.append(self._truth("fire", i, te, fs.end, te, peak_c=round(peak, 1)))
        elif code in (_LID, _KNOCK, _STUCK, _NOISY):
            end = te + int(data)
            if code == _LID:
                self.lid_until[i] = max(self.lid_until[i], end)
            elif code == _KNOCK:
                self.knock_until[i] = max(self.knock_until[i], end)
                self.fill[i] *= 0.5
                tilt = float(rng.uniform(80, 95))
                dq = int(qarray("distance", np.array([rng.uniform(0.05, 0.5)]))[0])
                if self.stuck_until[i] > te:
                    dq = int(self.stuck_q[i])
                recs = [("tilt", int(qarray("tilt", np.array([tilt]))[0]), te), ("distance", dq, te),
                        ("fill", int(qarray("fill", np.array([1 - dq / 1000 / self.depth[i]]))[0]), te)]
                self.extras.setdefault(i, []).extend(recs)
                self._alarm_upload(i, te + int(rng.integers(2000, 8000)))
            elif code == _STUCK:
                self.stuck_until[i] = max(self.stuck_until[i], end)
            else:
                self.noisy_until[i] = max(self.noisy_until[i], end)
            end = min(end, self.ctx.end_ms) if end > self.ctx.end_ms else end
            self.truth_out.append(self._truth(_EV_NAMES[code], i, te, end, te))

    def _close_on_collection(self, i: int, te: int) -> None:
        m = self.open_miss.pop(i, None)
        if m is not None:
            m.end_ms = te
            m.at_ms = te
            self.truth_out.append(m)
        npe = self.np_event.pop(i, None)
        if npe is not None:
            npe.end_ms = te
            npe.at_ms = te
            self.truth_out.append(npe)

    def _alarm_upload(self, i: int, tu: int) -> None:
        """Send buffered event records now (pushed with the next step's uploads)."""
        recs = self.extras.pop(i, [])
        if recs:
            self._alarms.append(Upload(tu, int(self.gidx[i]), recs, self.next_upload_ms(i, tu), True))

    def _fire_alarms(self, i: int, s: int, t: np.ndarray, ups: list[Upload]) -> None:
        fs = self.fires[i]
        A = self.p.alarm_sample_min * MIN_MS
        lo = int(self.last_t[i]) - self.P       # previous sample time of this bin
        ts = np.arange(max(fs.start, lo + 1) // A * A + A, int(t[i]) + 1, A, dtype=np.int64)
        ts = ts[(ts > lo) & (ts <= t[i])]
        if len(ts):
            temps = fs.temp(ts)
            hot = temps > self.p.alarm_temp_c
            if hot.any():
                rng = self.rng
                depth = self.depth[i]
                for tt, tv in zip(ts[hot].tolist(), temps[hot].tolist()):
                    dq = int(qarray("distance", np.array([rng.uniform(0.05, 1.0) * depth]))[0])
                    if self.stuck_until[i] > tt:
                        dq = int(self.stuck_q[i])
                    recs = [("temp", int(qarray("temp", np.array([tv]))[0]), tt + 7), ("distance", dq, tt + 7),
                            ("fill", int(qarray("fill", np.array([1 - dq / 1000 / depth]))[0]), tt + 7)]
                    recs.extend(self.extras.pop(i, []))
                    tu = tt + int(rng.integers(1500, 6000))
                    ups.append(Upload(tu, int(self.gidx[i]), recs, self.next_upload_ms(i, tu), True))
        if fs.end <= t[i]:
            self.fill[i] *= 0.3
            del self.fires[i]

    def next_upload_ms(self, i: int, after: int) -> int:
        """Approximate time of the next scheduled upload of bin ``i`` after ``after``."""
        P, U = self.P, self.U
        k = (after - int(self.phase[i])) // P + 1
        k += (int(self.slot[i]) - k) % U
        return int(k * P + self.phase[i] + 5000)

    def finish(self, t_end: int) -> list[TruthEvent]:
        """Close open emergent events at the end of the run (end = None: still ongoing)."""
        out = self.truth_out
        self.truth_out = []
        for i in np.nonzero(self.ov_start >= 0)[0].tolist():
            out.append(self._truth("overflow", i, int(self.ov_start[i]), None, t_end,
                                   cause=self.ov_cause.get(i, "high_use"), max_fill=round(float(self.ov_max[i]), 3)))
        for ev in list(self.open_miss.values()) + list(self.np_event.values()):
            ev.at_ms = t_end
            out.append(ev)
        self.open_miss.clear()
        self.np_event.clear()
        return out
