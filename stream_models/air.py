"""Air-quality models: humidity correction, UK DAQI, episodes, drift and failure of low-cost PM sensors.

**Humidity correction** (:class:`HumidityCorrector`).  Low-cost optical
sensors (Plantower PMS5003 class) over-read in humid air because particles
take up water and grow.  Default method ``"kohler"``: the kappa-Koehler
hygroscopic growth correction of Crilley et al. (2018), *Evaluation of a
low-cost optical particle counter (Alphasense OPC-N2) for ambient air
monitoring*, Atmos. Meas. Tech. 11, 709-720 (eq. 3), ``PM_corr = PM_raw / (g0
x (1 + (kappa / 1.65) / (100 / RH - 1)))``, as applied to PMS5003 data by
e.g. Malings et al. (2020), Aerosol Sci. Technol. 54, 160-174.  Here ``k =
kappa / 1.65 = 0.08`` per 5-minute sample and the sensor gain ``g0 = 1.213``
are fitted on PurpleAir PMS5003 vs US EPA reference monitors
(``../shared/datasets/air_quality``, 5,666 sensor-days; daily-mean fit k =
0.12, which the per-sample 0.08 reproduces; see ``simulators/models/air.py``).
RH is capped at 95 %.  Alternative ``"epa"``: the US-wide PurpleAir
correction of Barkjohn, Gantt & Clements (2021), Atmos. Meas. Tech. 14,
4617-4637: ``PM2.5 = 0.524 x PA_cf1 - 0.0862 x RH + 5.75``.  The corrector
can be re-fitted online against a co-located reference (``learn_one(x, y)``).

**UK Daily Air Quality Index** (:class:`DaqiIndex`).  Bands from DEFRA's
Daily Air Quality Index (COMEAP, *Review of the UK Air Quality Index*, 2011;
https://uk-air.defra.gov.uk/air-pollution/daqi?view=more-info), on the
24-hour running mean of hourly means (at least 18 of 24 hours present),
rounded to whole ug/m3:

======  ==========  ===========  =========
index   band        PM2.5        PM10
======  ==========  ===========  =========
1-3     Low         0-11/12-23/24-35   0-16/17-33/34-50
4-6     Moderate    36-41/42-47/48-53  51-58/59-66/67-75
7-9     High        54-58/59-64/65-70  76-83/84-91/92-100
10      Very High   >= 71              >= 101
======  ==========  ===========  =========

**Episodes**: :class:`PMEpisodeDetector` compares a smoothed log PM2.5 with
its own baseline for that hour of day (learned, frozen during an episode);
an episode when it is ``ratio_on`` times the baseline, a ``z_on`` deviation
and above an absolute floor.  The engine runs it on the town's median level
(a *regional* episode).  :class:`NeighbourExcessDetector` finds *local*
episodes: one site far above its neighbours against the usual ratio for the
hour (the shared background cancels out).

**Drift** (:class:`NeighbourDriftDetector`): the daily log ratio of the
device's median to its neighbours' median, against its own learned
baseline ratio, with a CUSUM - upward by default (``sides="up"``: fouled
optics make optical counters over-read; a sensor reading *low* is usually a
hard fault such as a stopped fan, which :class:`AirFailureDetector` covers,
and day-to-day composition changes between sites make a downward CUSUM
raise false alarms; ``sides="both"`` is available).  **Failure**
(:class:`AirFailureDetector`): a stopped fan (near-zero readings while the
neighbourhood is not clean) or a failing laser (intermittent huge spikes
between normal readings).
"""

from __future__ import annotations

import math
from collections import deque

from stream_models.base import StreamModel, register

__all__ = [
    "HumidityCorrector",
    "DaqiIndex",
    "PMEpisodeDetector",
    "NeighbourExcessDetector",
    "NeighbourDriftDetector",
    "AirFailureDetector",
    "daqi_index",
    "daqi_band",
    "PM25_UPPER",
    "PM10_UPPER",
    "BANDS",
]

#: upper bounds (inclusive, whole ug/m3) of DAQI indices 1..9; index 10 above the last
PM25_UPPER = (11, 23, 35, 41, 47, 53, 58, 64, 70)
PM10_UPPER = (16, 33, 50, 58, 66, 75, 83, 91, 100)
BANDS = ("Low", "Low", "Low", "Moderate", "Moderate", "Moderate", "High", "High", "High", "Very High")


def daqi_index(pollutant: str, mean_24h: float) -> int:
    """DAQI index 1..10 of a 24-hour mean.

    >>> daqi_index("pm25", 11.4), daqi_index("pm25", 11.6), daqi_index("pm25", 71), daqi_index("pm10", 50.2)
    (1, 2, 10, 3)
    """
    table = PM25_UPPER if pollutant == "pm25" else PM10_UPPER
    v = int(math.floor(mean_24h + 0.5))
    for i, up in enumerate(table):
        if v <= up:
            return i + 1
    return 10


def daqi_band(index: int) -> str:
    """Band name of a DAQI index.

    >>> daqi_band(3), daqi_band(4), daqi_band(10)
    ('Low', 'Moderate', 'Very High')
    """
    return BANDS[index - 1]


@register
class HumidityCorrector(StreamModel):
    """Humidity correction of low-cost PM readings (see the module docstring for sources).

    >>> c = HumidityCorrector()
    >>> [round(c.predict_one({"pm25": 20.0, "rh": rh}), 2) for rh in (50.0, 90.0)]
    [15.27, 9.59]
    >>> round(HumidityCorrector(method="epa").predict_one({"pm25": 20.0, "rh": 50.0}), 2)
    11.92
    """

    VERSION = "rh-correction/1"

    def __init__(
        self,
        method: str = "kohler",
        g0: float = 1.213,
        k: float = 0.08,
        rh_cap: float = 95.0,
        alpha: float = 0.02,
    ) -> None:
        if method not in ("kohler", "epa", "none"):
            raise ValueError("method is kohler, epa or none")
        self.method = method
        self.g0 = g0
        self.k = k
        self.rh_cap = rh_cap
        self.alpha = alpha
        self.n_ref = 0
        self.gain = g0  # learned against a reference (starts at the published/fitted g0)

    def factor(self, rh: float) -> float:
        h = min(max(rh, 0.0), self.rh_cap)
        return self.gain * (1.0 + self.k * h / (100.0 - h))

    def predict_one(self, x: dict) -> float:
        pm = float(x["pm25"] if "pm25" in x else x["pm"])
        rh = x.get("rh")
        if self.method == "none" or rh is None:
            return pm
        rh = float(rh)
        if self.method == "epa":
            return max(0.0, 0.524 * pm - 0.0862 * rh + 5.75)
        return pm / self.factor(rh)

    def learn_one(self, x: dict, y: float | None = None) -> None:
        """Re-fit the gain against a co-located reference ``y`` (EW mean of the log ratio)."""
        if y is None or self.method != "kohler" or y <= 0:
            return
        pm = float(x["pm25"] if "pm25" in x else x["pm"])
        if pm <= 0 or x.get("rh") is None:
            return
        h = min(max(float(x["rh"]), 0.0), self.rh_cap)
        g = pm / (y * (1.0 + self.k * h / (100.0 - h)))
        self.n_ref += 1
        a = max(self.alpha, 1.0 / self.n_ref)
        self.gain = math.exp(math.log(self.gain) + a * (math.log(g) - math.log(self.gain)))

    @classmethod
    def _contract_data(cls):
        xs = [({"pm25": 10.0 + k, "rh": 40.0 + k}, 8.0 + 0.8 * k) for k in range(20)]
        return {"method": "kohler"}, xs, [{"pm25": 12.0, "rh": 60.0}, {"pm25": 30.0, "rh": 85.0}]


@register
class DaqiIndex(StreamModel):
    """UK DAQI from 24-hour running means of hourly PM2.5 / PM10 means.

    >>> d = DaqiIndex()
    >>> H = 3_600_000
    >>> for k in range(24 * 12):             # 5-minute samples, one day
    ...     d.learn_one({"t": k * 300_000, "pm25": 30.0 if k >= 12 * 12 else 10.0, "pm10": 15.0})
    >>> r = d.predict_one()
    >>> r["pm25_24h"], r["index"], r["band"], r["hours"]
    (19.57, 2, 'Low', 23)
    """

    VERSION = "daqi/1"

    def __init__(self, min_hours: int = 18) -> None:
        self.min_hours = min_hours
        self.hour: int | None = None
        self.acc = [0.0, 0.0, 0, 0]  # pm25 sum, pm10 sum, n25, n10 in the current hour
        self.hours: deque = deque()  # (hour index, mean pm25 or None, mean pm10 or None)

    def learn_one(self, x: dict) -> None:
        h = int(x["t"]) // 3_600_000
        if self.hour is None:
            self.hour = h
        if h < self.hour:
            return
        if h > self.hour:
            a = self.acc
            if a[2] or a[3]:
                self.hours.append((self.hour, a[0] / a[2] if a[2] else None, a[1] / a[3] if a[3] else None))
            self.acc = [0.0, 0.0, 0, 0]
            self.hour = h
            while self.hours and self.hours[0][0] <= h - 25:
                self.hours.popleft()
        if x.get("pm25") is not None:
            self.acc[0] += float(x["pm25"])
            self.acc[2] += 1
        if x.get("pm10") is not None:
            self.acc[1] += float(x["pm10"])
            self.acc[3] += 1

    def predict_one(self, x: dict | None = None) -> dict:
        h = self.hour if self.hour is not None else 0
        rows = [r for r in self.hours if r[0] >= h - 24]
        p25 = [r[1] for r in rows if r[1] is not None]
        p10 = [r[2] for r in rows if r[2] is not None]
        out: dict = {"hours": len(rows), "pm25_24h": None, "pm10_24h": None, "index": None, "band": None}
        idx = 0
        if len(p25) >= self.min_hours:
            m = sum(p25) / len(p25)
            out["pm25_24h"] = round(m, 2)
            out["index_pm25"] = daqi_index("pm25", m)
            idx = max(idx, out["index_pm25"])
        if len(p10) >= self.min_hours:
            m = sum(p10) / len(p10)
            out["pm10_24h"] = round(m, 2)
            out["index_pm10"] = daqi_index("pm10", m)
            idx = max(idx, out["index_pm10"])
        if idx:
            out["index"] = idx
            out["band"] = daqi_band(idx)
        return out

    @classmethod
    def _contract_data(cls):
        xs = [{"t": k * 600_000, "pm25": 5.0 + (k % 30), "pm10": 9.0 + (k % 40)} for k in range(200)]
        return {"min_hours": 12}, xs, [None]


@register
class PMEpisodeDetector(StreamModel):
    """Pollution episode at one site against its own hour-of-day baseline.

    ``learn_one({"t", "hour", "pm25"})`` (corrected PM2.5); ``predict_one()``
    gives the current state; :meth:`update` returns "start" / "end" on a change.

    >>> m = PMEpisodeDetector()
    >>> import math
    >>> out = []
    >>> for k in range(12 * 24 * 10):
    ...     h = (k // 12) % 24
    ...     pm = 8.0 + 3 * math.sin(k / 7.0) + (60.0 if 12 * 24 * 9 + 100 < k < 12 * 24 * 9 + 150 else 0.0)
    ...     out.append(m.update({"t": k * 300_000, "hour": h, "pm25": pm}))
    >>> [i for i, e in enumerate(out) if e]
    [2694, 2756]
    """

    VERSION = "pm-episode/1"

    def __init__(
        self,
        ratio_on: float = 2.0,
        ratio_off: float = 1.4,
        z_on: float = 3.0,
        floor: float = 15.0,
        alpha_fast: float = 0.2,
        alpha_base: float = 0.01,
        exit_n: int = 6,
        warmup: int = 288,
    ) -> None:
        self.ratio_on = ratio_on
        self.ratio_off = ratio_off
        self.z_on = z_on
        self.floor = floor
        self.alpha_fast = alpha_fast
        self.alpha_base = alpha_base
        self.exit_n = exit_n
        self.warmup = warmup
        self.fast: float | None = None
        self.base = [None] * 24
        self.var = [0.09] * 24
        self.gbase: float | None = None
        self.n = 0
        self.active = False
        self.calm = 0
        self.since: int | None = None
        self.peak = 0.0
        self.scale = 1.0
        self.last: dict = {}

    def _score(self, hour: int) -> tuple[float, float, float]:
        b = self.base[hour]
        if b is None:
            b = self.gbase if self.gbase is not None else self.fast
        r = self.fast - b
        return r, r / math.sqrt(self.var[hour] + 0.005), b

    def update(self, x: dict) -> str | None:
        pm = max(0.0, float(x["pm25"]))
        hour = int(x["hour"]) % 24
        y = math.log(pm + 1.0)
        self.fast = y if self.fast is None else self.fast + self.alpha_fast * (y - self.fast)
        self.n += 1
        r, z, b = self._score(hour)
        ratio = math.exp(r)
        level = math.exp(self.fast) - 1.0
        self.last = {"ratio": ratio, "z": z, "level": level, "baseline": math.exp(b) - 1.0}
        ev = None
        if self.active:
            self.peak = max(self.peak, level)
            self.calm = self.calm + 1 if ratio < self.ratio_off else 0
            if self.calm >= self.exit_n:
                self.active = False
                ev = "end"
        elif (
            self.n > self.warmup
            and ratio >= self.ratio_on * self.scale
            and z >= self.z_on * self.scale
            and level >= self.floor
        ):
            self.active, self.calm, self.since, self.peak = True, 0, int(x["t"]), level
            ev = "start"
        if not self.active and ev is None:
            a = max(self.alpha_base, 1.0 / self.n)
            if self.base[hour] is None:
                self.base[hour] = self.gbase if self.gbase is not None else self.fast
            self.base[hour] += a * (self.fast - self.base[hour])
            self.var[hour] += a * ((self.fast - self.base[hour]) ** 2 - self.var[hour])
            self.gbase = self.fast if self.gbase is None else self.gbase + a * (self.fast - self.gbase)
        return ev

    def learn_one(self, x: dict) -> None:
        self.update(x)

    def predict_one(self, x: dict | None = None) -> dict:
        return {"episode": self.active, "since_ms": self.since if self.active else None, **self.last}

    @classmethod
    def _contract_data(cls):
        xs = [{"t": k * 300_000, "hour": (k // 12) % 24, "pm25": 6.0 + (k % 9)} for k in range(400)]
        return {"warmup": 100}, xs, [None]


@register
class NeighbourExcessDetector(StreamModel):
    """Local episode: this site far above its neighbours, against the usual ratio for the hour.

    The town-wide background (weather, regional pollution) moves every sensor
    together, so the log ratio own / neighbours' median is steady; a local
    source (bonfire, roadworks dust, idling vehicles) lifts it.  The usual
    ratio is learned per hour of day (a roadside site is higher at rush hour);
    an episode starts when the smoothed excess is ``ratio_on`` times and
    ``z_on`` deviations above it and the site reads at least ``floor``.

    >>> m = NeighbourExcessDetector(warmup=50)
    >>> evs = []
    >>> for k in range(600):
    ...     nb = 8.0 + 4.0 * math.sin(k / 40.0)
    ...     own = 1.2 * nb * (4.0 if 500 <= k < 540 else 1.0)
    ...     evs.append(m.update({"t": k * 300_000, "hour": (k // 12) % 24, "own": own, "neighbours": nb}))
    >>> [i for i, e in enumerate(evs) if e]
    [503, 548]
    """

    VERSION = "pm-local/1"

    def __init__(
        self,
        ratio_on: float = 2.5,
        ratio_off: float = 1.5,
        z_on: float = 3.0,
        floor: float = 15.0,
        alpha_fast: float = 0.3,
        alpha_base: float = 0.01,
        exit_n: int = 6,
        warmup: int = 144,
    ) -> None:
        self.ratio_on = ratio_on
        self.ratio_off = ratio_off
        self.z_on = z_on
        self.floor = floor
        self.alpha_fast = alpha_fast
        self.alpha_base = alpha_base
        self.exit_n = exit_n
        self.warmup = warmup
        self.fast: float | None = None
        self.base: list = [None] * 24
        self.var = [0.04] * 24
        self.gbase: float | None = None
        self.gvar = 0.04
        self.n = 0
        self.active = False
        self.calm = 0
        self.since: int | None = None
        self.scale = 1.0
        self.last: dict = {}

    def update(self, x: dict) -> str | None:
        own, nb = max(0.0, float(x["own"])), max(0.0, float(x["neighbours"]))
        hour = int(x["hour"]) % 24
        r = math.log((own + 1.0) / (nb + 1.0))
        self.fast = r if self.fast is None else self.fast + self.alpha_fast * (r - self.fast)
        self.n += 1
        b = (
            self.base[hour]
            if self.base[hour] is not None
            else (self.gbase if self.gbase is not None else self.fast)
        )
        v = self.var[hour] if self.base[hour] is not None else self.gvar
        e = self.fast - b
        z = e / math.sqrt(v + 0.005)
        self.last = {
            "excess_ratio": math.exp(e),
            "z": z,
            "own": own,
            "neighbours": nb,
            "usual_ratio": math.exp(b),
        }
        ev = None
        if self.active:
            self.calm = self.calm + 1 if math.exp(e) < self.ratio_off else 0
            if self.calm >= self.exit_n:
                self.active = False
                ev = "end"
        elif (
            self.n > self.warmup
            and math.exp(e) >= self.ratio_on * self.scale
            and z >= self.z_on * self.scale
            and own >= self.floor
        ):
            self.active, self.calm, self.since = True, 0, int(x["t"])
            ev = "start"
        if not self.active and ev is None and z < 2.5:
            a = max(self.alpha_base, 1.0 / self.n)
            if self.base[hour] is None:
                self.base[hour] = b
            d = self.fast - self.base[hour]
            self.base[hour] += a * d
            self.var[hour] += a * (d * d - self.var[hour])
            dg = self.fast - (self.gbase if self.gbase is not None else self.fast)
            self.gbase = self.fast if self.gbase is None else self.gbase + a * dg
            self.gvar += a * (dg * dg - self.gvar)
        return ev

    def learn_one(self, x: dict) -> None:
        self.update(x)

    def predict_one(self, x: dict | None = None) -> dict:
        return {"episode": self.active, "since_ms": self.since if self.active else None, **self.last}

    @classmethod
    def _contract_data(cls):
        xs = [
            {"t": k * 300_000, "hour": (k // 12) % 24, "own": 9.0 + k % 4, "neighbours": 8.0 + k % 3}
            for k in range(300)
        ]
        return {"warmup": 100}, xs, [None]


@register
class NeighbourDriftDetector(StreamModel):
    """Drift against the neighbours: CUSUM on the daily log ratio own / neighbours.

    ``learn_one({"own": daily median, "neighbours": their median})`` once a day.

    >>> m = NeighbourDriftDetector()
    >>> import random; rnd = random.Random(3)
    >>> days = []
    >>> for d in range(40):
    ...     g = 1.0 if d < 15 else 1.0 + 0.03 * (d - 15)     # gain creeps up 3 %/day from day 15
    ...     nb = 8.0 * math.exp(rnd.gauss(0, 0.4))
    ...     m.learn_one({"own": 1.3 * nb * g * math.exp(rnd.gauss(0, 0.2)), "neighbours": nb})
    ...     days.append(m.predict_one()["drift"])
    >>> days.index(True)             # 19 days after the drift began (+57 % gain; day-to-day noise 20 %)
    34
    """

    VERSION = "air-drift/1"

    def __init__(
        self,
        warmup_days: int = 10,
        k: float = 0.5,
        h: float = 5.0,
        min_sd: float = 0.2,
        alpha: float = 0.05,
        sides: str = "up",
    ) -> None:
        self.sides = sides
        self.warmup_days = warmup_days
        self.k = k
        self.h = h
        self.min_sd = min_sd
        self.alpha = alpha
        self.hist: list[float] = []
        self.mu: float | None = None
        self.sd = 0.3
        self.up = 0.0
        self.down = 0.0
        self.last_r: float | None = None
        self.h_scale = 1.0

    def learn_one(self, x: dict) -> None:
        own, nb = float(x["own"]), float(x["neighbours"])
        if own <= 0 or nb <= 0:
            return
        r = math.log((own + 0.5) / (nb + 0.5))
        self.last_r = r
        if self.mu is None:
            self.hist.append(r)
            if len(self.hist) >= self.warmup_days:
                s = sorted(self.hist)
                self.mu = s[len(s) // 2]
                dev = sorted(abs(v - self.mu) for v in s)
                self.sd = max(self.min_sd, 1.4826 * dev[len(dev) // 2])
            return
        z = (r - self.mu) / self.sd
        self.up = max(0.0, self.up + z - self.k)
        self.down = max(0.0, self.down - z - self.k)
        if self.up < 1.0 and self.down < 1.0:  # in control: let the baseline follow slowly
            self.mu += self.alpha * (r - self.mu)
            self.sd = max(self.min_sd, self.sd + self.alpha * (1.2533 * abs(r - self.mu) - self.sd))

    def rebaseline(self) -> None:
        """Accept the current ratio as normal (after a verdict or a recalibration)."""
        if self.last_r is not None:
            self.mu = self.last_r
        self.up = self.down = 0.0

    def predict_one(self, x: dict | None = None) -> dict:
        hh = self.h * self.h_scale
        drift = self.mu is not None and (self.up > hh or (self.sides == "both" and self.down > hh))
        return {
            "drift": drift,
            "direction": "high" if self.up >= self.down else "low",
            "log_ratio": self.last_r,
            "baseline_log_ratio": self.mu,
            "sd": self.sd,
            "cusum_up": round(self.up, 3),
            "cusum_down": round(self.down, 3),
            "threshold": hh,
        }

    @classmethod
    def _contract_data(cls):
        xs = [{"own": 10.0 + (d % 3), "neighbours": 8.0 + (d % 4)} for d in range(20)]
        return {"warmup_days": 5}, xs, [None]


@register
class AirFailureDetector(StreamModel):
    """Sensor failure: stopped fan (flat near-zero) or failing laser (intermittent spikes).

    >>> m = AirFailureDetector()
    >>> for k in range(30):
    ...     m.learn_one({"pm25": 9.0 + k % 3, "neighbours": 9.0})
    >>> for k in range(12):
    ...     m.learn_one({"pm25": 0.2, "neighbours": 9.0})
    >>> m.predict_one()["failure"], m.predict_one()["mode"]
    (True, 'fan_stopped')
    """

    VERSION = "air-failure/1"

    def __init__(
        self,
        zero_pm: float = 0.5,
        zero_n: int = 6,
        clean_pm: float = 2.0,
        spike_pm: float = 150.0,
        spike_factor: float = 8.0,
        window: int = 12,
        min_spikes: int = 2,
        clear_n: int = 24,
    ) -> None:
        self.zero_pm = zero_pm
        self.zero_n = zero_n
        self.clean_pm = clean_pm
        self.spike_pm = spike_pm
        self.spike_factor = spike_factor
        self.window = window
        self.min_spikes = min_spikes
        self.clear_n = clear_n
        self.zeros = 0
        self.recent: deque = deque(maxlen=window)
        self.flags: deque = deque(maxlen=window)
        self.typical: float | None = None
        self.mode: str | None = None
        self.ok_run = 0

    def learn_one(self, x: dict) -> None:
        pm = float(x["pm25"])
        nb = x.get("neighbours")
        s = sorted(self.recent)
        med = s[len(s) // 2] if s else pm
        spike = pm > max(self.spike_pm, self.spike_factor * max(med, 1.0))
        self.flags.append(spike)
        if not spike:
            self.recent.append(pm)
        self.zeros = self.zeros + 1 if pm < self.zero_pm else 0
        ref = nb if nb is not None else self.typical
        fan = self.zeros >= self.zero_n and ref is not None and ref > self.clean_pm
        n_sp = sum(self.flags)
        # intermittent: spikes with normal readings between them
        fl = list(self.flags)
        inter = n_sp >= self.min_spikes and any(
            fl[i] and not fl[i + 1] and any(fl[i + 2 :]) for i in range(len(fl) - 2)
        )
        if fan:
            self.mode, self.ok_run = "fan_stopped", 0
        elif inter:
            self.mode, self.ok_run = "laser_spikes", 0
        elif self.mode is not None:
            self.ok_run += 1
            if self.ok_run >= self.clear_n:
                self.mode = None
        if self.mode is None and not spike and pm >= self.zero_pm:
            self.typical = pm if self.typical is None else self.typical + 0.02 * (pm - self.typical)

    def predict_one(self, x: dict | None = None) -> dict:
        return {
            "failure": self.mode is not None,
            "mode": self.mode,
            "zero_run": self.zeros,
            "spikes_in_window": int(sum(self.flags)),
            "typical_pm25": self.typical,
        }

    @classmethod
    def _contract_data(cls):
        xs = [{"pm25": 7.0 + k % 5, "neighbours": 8.0} for k in range(30)] + [
            {"pm25": 900.0 if k % 3 == 0 else 8.0, "neighbours": 8.0} for k in range(12)
        ]
        return {"window": 10}, xs, [None]
