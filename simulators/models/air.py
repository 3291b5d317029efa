"""Air-quality behaviour: low-cost optical PM sensors (PMS5003 class) plus RH, temperature, CO2.

True PM2.5 at a site is a regional background (daily lognormal AR(1),
interpolated smoothly) times a boundary-layer diurnal shape (higher at night
and early morning) plus a local traffic part with morning and evening rush
hours and a weekly pattern (weekends quieter).  Regional pollution episodes
multiply the background for days; local episodes (bonfire, roadworks dust)
hit one site for hours.  The sensor reports ``raw = gain x true x g0 x
(1 + k x RH / (100 - RH))`` with multiplicative noise: humid air inflates
low-cost readings (particle growth).  Sensor drift (gain creeping up) and
failures (fan stopped: near-zero readings; laser degrading: spikes) are
injected and labelled.

Calibration (``python -m simulators.calibrate air``; PurpleAir PMS5003 A/B
channels paired with US EPA reference monitors, daily means 2021-2023,
``air_quality/purpleair_vs_epa_aqs_daily_2021_2023.csv``, 18 sensors, 5,666
sensor-days):

* reference PM2.5: median 8.06 µg/m³, log-sd 0.471 (p5 3.9, p95 17.8,
  p99 26.0), lag-1 autocorrelation of log daily means 0.594 -> background
  ``background_median``, ``background_log_sd``, ``background_rho``;
* raw/reference on daily means: g0 = 1.213, k = 0.12 (median ratio 1.25
  below 40 % RH, 1.46 at 60-70 %, 1.68 at 70-90 %) -> ``pms_g0``; applied
  to each 5-minute sample the growth term is convex in RH, so the
  per-sample ``pms_k`` is 0.08, which reproduces the daily-mean ratios
  (``python -m simulators.calibrate validate``: 1.45 at 60-70 %, 1.55 and
  1.81 at 70-80 and 80-90 %);
* sensor-to-sensor gain log-sd 0.235 and day-to-day residual log-sd 0.307
  -> ``sensor_gain_log_sd``, ``daily_noise_log_sd``;
* weekday factors of the reference (Mon..Sun 0.97 1.03 1.06 1.04 0.99 0.97
  0.94) set the background weekly pattern.

The daily data carry no hours: the rush-hour shape is an assumption
(peaks 08:00 and 17:30 local), as are the PM1/PM2.5 (0.62-0.72) and
PM10/PM2.5 (1.1-1.35) ratios typical of PMS5003 output.

>>> from simulators.scenario import load_scenario
>>> from simulators.fleet import build_fleet
>>> from simulators.context import make_context
>>> sc = load_scenario("tiny")
>>> fl = build_fleet(sc, counts={"bins": 0, "air": 3, "noise": 0, "road": 0})
>>> m = AirModel(fl.devices, sc.air, make_context(fl, 1767225600000, 1))
>>> ups, _ = m.advance(m.ctx.start_ms, m.ctx.start_ms + 3600_000)
>>> len(ups) == 3 * 4 and {r[0] for r in ups[0].records} == {"pm1", "pm25", "pm10", "rh", "temp", "co2"}
True
"""

from __future__ import annotations

import math
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

__all__ = ["AirParams", "AirModel", "traffic_shape"]

#: Background weekly factor Mon..Sun (EPA reference daily means, normalised).
BG_WEEKDAY = (0.968, 1.032, 1.061, 1.04, 0.987, 0.968, 0.943)
#: Traffic activity by day Mon..Sun relative to a weekday.
TRAFFIC_WEEKDAY = (1.0, 1.0, 1.0, 1.0, 1.05, 0.75, 0.6)


def traffic_shape(hour: np.ndarray) -> np.ndarray:
    """Relative traffic by local hour: rush hours at 08:00 and 17:30, low at night (mean ~1).

    >>> s = traffic_shape(np.arange(24.0))
    >>> int(np.argmax(s)), bool(s[3] < 0.3)
    (8, True)
    """
    h = np.asarray(hour, dtype=np.float64)
    base = 0.15 + 0.75 * np.clip(np.sin(np.pi * (h - 5.5) / 16.5), 0, None)
    am = 1.1 * np.exp(-0.5 * ((h - 8.0) / 0.9) ** 2)
    pm = 0.8 * np.exp(-0.5 * ((h - 17.5) / 1.2) ** 2)
    return (base + am + pm) / 0.682


@dataclass
class AirParams:
    sample_min: int = 5
    upload_every: int = 3
    site_share: dict[str, float] = field(default_factory=lambda: {
        "roadside": 0.4, "high_street": 0.2, "background": 0.4})
    #: local traffic contribution relative to the background, by site type
    traffic_share: dict[str, float] = field(default_factory=lambda: {
        "roadside": 0.8, "high_street": 0.5, "background": 0.12})
    background_median: float = 8.06
    background_log_sd: float = 0.471
    background_rho: float = 0.594
    pms_g0: float = 1.213
    pms_k: float = 0.08
    sensor_gain_log_sd: float = 0.235
    daily_noise_log_sd: float = 0.25
    sample_noise_log_sd: float = 0.15
    co2: bool = True
    regional_episodes_per_month: float = 1.0
    regional_factor: tuple[float, float] = (2.0, 4.0)
    regional_days: tuple[float, float] = (0.5, 3.0)
    local_episodes_per_site_month: float = 0.3
    local_factor: tuple[float, float] = (3.0, 8.0)
    local_hours: tuple[float, float] = (1.0, 6.0)
    drift_per_sensor_year: float = 0.5
    drift_per_day: tuple[float, float] = (0.01, 0.04)
    drift_days: tuple[float, float] = (10.0, 60.0)
    failure_per_sensor_year: float = 0.2
    failure_days: tuple[float, float] = (1.0, 20.0)


def _trapezoid(t: np.ndarray, start: int, end: int) -> np.ndarray:
    """0..1 window with 20 % ramps."""
    dur = max(1, end - start)
    ramp = 0.2 * dur
    x = (t - start).astype(np.float64)
    up = np.clip(x / ramp, 0, 1)
    down = np.clip((end - t).astype(np.float64) / ramp, 0, 1)
    return np.minimum(up, down)


class AirModel(PeriodicModel):
    kind = "air"

    def __init__(self, devices: list["DeviceSpec"], params: AirParams, ctx: "SimContext") -> None:
        self.p = p = params
        self.ctx = ctx
        self.specs = [d for d in devices if d.kind == "air"]
        n = self.n = len(self.specs)
        rng = self.rng = substream(ctx.seed, "air")
        self.gidx = np.array([d.index for d in self.specs], dtype=np.int64)
        self.tau = np.array([p.traffic_share.get(d.asset.site_type, 0.1) for d in self.specs])
        self.gain0 = np.exp(rng.normal(0, p.sensor_gain_log_sd, n))
        self.r1 = rng.uniform(0.62, 0.72, n)
        self.r10 = rng.uniform(1.10, 1.35, n)
        self.P = p.sample_min * MIN_MS
        self.U = max(1, p.upload_every)
        self.phase = rng.integers(0, self.P, n)
        self.slot = rng.integers(0, self.U, n)
        self.ring = SampleRing(n, self.U, ("pm1", "pm25", "pm10", "rh", "temp", "co2") if p.co2 else
                               ("pm1", "pm25", "pm10", "rh", "temp"))
        # regional background per local day (AR(1) in logs), evaluated at local noon
        self.day0 = ctx.clock.local_day(ctx.start_ms) - 2
        nd = ctx.clock.local_day(ctx.end_ms) - self.day0 + 4
        z = rng.normal(0, 1, nd)
        lb = np.empty(nd)
        lb[0] = z[0]
        k = math.sqrt(1 - p.background_rho ** 2)
        for i in range(1, nd):
            lb[i] = p.background_rho * lb[i - 1] + k * z[i]
        tau_bg = p.traffic_share.get("background", 0.12)
        wk = np.array(BG_WEEKDAY)[(self.day0 + np.arange(nd) + 3) % 7]
        self.log_bg = math.log(p.background_median / (1 + tau_bg)) + p.background_log_sd * lb + np.log(wk)
        self.day_noise = rng.normal(0, p.daily_noise_log_sd, (nd, n))
        self.truth_out: list[TruthEvent] = []
        #: set to a list to record (t, true PM2.5, raw PM2.5, reported RH) per step (calibration checks)
        self.trace: list | None = None
        self._plan(substream(ctx.seed, "air", "events"))

    def _truth(self, kind: str, entity: str, start: int, end: int | None, **details: Any) -> TruthEvent:
        return TruthEvent(kind, entity, self.ctx.tenant, int(start), None if end is None else int(end), details,
                          self.ctx.scenario, int(start))

    def _dev_details(self, i: int) -> dict:
        d = self.specs[i]
        return {"device_id": d.device_id, "site_type": d.asset.site_type, "lat": d.lat, "lon": d.lon}

    def _plan(self, rng: np.random.Generator) -> None:
        p, ctx = self.p, self.ctx
        t0, t1 = ctx.start_ms, ctx.end_ms
        self.regional: list[tuple[int, int, float]] = []
        _, ts = plan_poisson(rng, 1, p.regional_episodes_per_month / 30.0, t0, t1)
        for t in ts.tolist():
            end = t + int(rng.uniform(*p.regional_days) * DAY_MS)
            f = float(rng.uniform(*p.regional_factor))
            self.regional.append((t, end, f))
            self.truth_out.append(self._truth("air_episode", ctx.tenant, t, end, scope="regional",
                                              factor=round(f, 2),
                                              devices=[d.device_id for d in self.specs]))
        self.local: dict[int, list[tuple[int, int, float]]] = {}
        ent, ts = plan_poisson(rng, self.n, p.local_episodes_per_site_month / 30.0, t0, t1)
        for i, t in zip(ent.tolist(), ts.tolist()):
            end = t + int(rng.uniform(*p.local_hours) * HOUR_MS)
            f = float(rng.uniform(*p.local_factor))
            cause = ["bonfire", "roadworks_dust", "idling_vehicles"][int(rng.integers(0, 3))]
            self.local.setdefault(i, []).append((t, end, f))
            self.truth_out.append(self._truth("air_episode", self.specs[i].device_id, t, end, scope="local",
                                              factor=round(f, 2), cause=cause, **self._dev_details(i)))
        self.drift: dict[int, tuple[int, int, float]] = {}
        ent, ts = plan_poisson(rng, self.n, p.drift_per_sensor_year / 365.0, t0, t1)
        for i, t in zip(ent.tolist(), ts.tolist()):
            if i in self.drift:
                continue
            end = t + int(rng.uniform(*p.drift_days) * DAY_MS)
            rate = float(rng.uniform(*p.drift_per_day))
            self.drift[i] = (t, end, rate)
            self.truth_out.append(self._truth("sensor_drift", self.specs[i].device_id, t, end,
                                              gain_per_day=round(rate, 4), metric="pm25", **self._dev_details(i)))
        self.fail: dict[int, tuple[int, int, str]] = {}
        ent, ts = plan_poisson(rng, self.n, p.failure_per_sensor_year / 365.0, t0, t1)
        for i, t in zip(ent.tolist(), ts.tolist()):
            if i in self.fail:
                continue
            end = t + int(rng.uniform(*p.failure_days) * DAY_MS)
            mode = "fan_stopped" if rng.random() < 0.5 else "laser_spikes"
            self.fail[i] = (t, end, mode)
            self.truth_out.append(self._truth("sensor_failure", self.specs[i].device_id, t, end, mode=mode,
                                              **self._dev_details(i)))
        self.truth_out.sort(key=lambda e: e.start_ms)

    def _background(self, t: np.ndarray) -> np.ndarray:
        clock = self.ctx.clock
        off = clock.offset_s(int(t[0])) * 1000
        x = (t + off - 12 * HOUR_MS) / DAY_MS - self.day0      # day index, centred on local noon
        i0 = np.clip(np.floor(x).astype(np.int64), 0, len(self.log_bg) - 2)
        f = np.clip(x - i0, 0, 1)
        bg = np.exp(self.log_bg[i0] * (1 - f) + self.log_bg[i0 + 1] * f)
        for a, b, fac in self.regional:
            if a < t.max() and b > t.min():
                bg = bg * (1 + (fac - 1) * _trapezoid(t, a, b))
        return bg

    def _step(self, s: int, ups: list[Upload]) -> None:
        p, ctx, n, rng = self.p, self.ctx, self.n, self.rng
        k = s // self.P
        t = s + self.phase
        off = ctx.clock.offset_s(s) * 1000
        loc = t + off
        h = (loc % DAY_MS) / HOUR_MS
        dow = ((loc // DAY_MS) + 3) % 7
        tr = traffic_shape(h) * np.array(TRAFFIC_WEEKDAY)[dow]
        bl = 1 + 0.15 * np.cos(2 * np.pi * (h - 4.0) / 24.0)
        bg = self._background(t)
        true = bg * (bl + self.tau * tr)
        for i, eps in self.local.items():
            for a, b, fac in eps:
                if a <= t[i] < b:
                    true[i] *= 1 + (fac - 1) * float(_trapezoid(np.array([t[i]]), a, b)[0])
        rh = ctx.weather.rh(t)
        rh_rep = np.clip(rh - 4.0 + rng.normal(0, 1.0, n), 0, 100)     # sensor inside the warm enclosure
        rhc = np.minimum(rh_rep, 95.0)         # the fit (humidity_a) is on the sensor's own RH
        day = np.clip((loc // DAY_MS) - self.day0, 0, self.day_noise.shape[0] - 1)
        gain = self.gain0.copy()
        for i, (a, b, rate) in self.drift.items():
            if a <= t[i] < b:
                gain[i] *= 1 + rate * (t[i] - a) / DAY_MS
        noise = np.exp(self.day_noise[day, np.arange(n)] + rng.normal(0, p.sample_noise_log_sd, n))
        raw = gain * true * p.pms_g0 * (1 + p.pms_k * rhc / (100 - rhc)) * noise + rng.normal(0, 0.3, n)
        raw = np.maximum(raw, 0.0)
        pm1 = raw * self.r1 * np.exp(rng.normal(0, 0.03, n))
        pm10 = raw * self.r10 * np.exp(rng.normal(0, 0.05, n))
        for i, (a, b, mode) in self.fail.items():
            if a <= t[i] < b:
                if mode == "fan_stopped":
                    raw[i] = rng.uniform(0, 0.4)
                    pm1[i] = raw[i] * 0.6
                    pm10[i] = raw[i] * 1.2
                elif rng.random() < 0.3:
                    raw[i] = rng.uniform(300, 1500)
                    pm1[i] = raw[i] * 0.7
                    pm10[i] = raw[i] * 1.1
        temp = ctx.weather.temp_c(t) + 1.0 + 3.0 * ctx.weather.sun(t) + rng.normal(0, 0.2, n)
        q = {"pm1": qarray("pm1", pm1), "pm25": qarray("pm25", raw), "pm10": qarray("pm10", pm10),
             "rh": qarray("rh", rh_rep),
             "temp": qarray("temp", temp)}
        if p.co2:
            q["co2"] = qarray("co2", 425 + 30 * self.tau * tr + 15 * (bl - 1) + rng.normal(0, 4, n))
        self.ring.put(k, t, q)
        if self.trace is not None:
            self.trace.append((t.copy(), true.copy(), raw.copy(), rh_rep.copy()))
        self._upload(k, t, ups)
