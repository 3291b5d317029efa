"""Noise models: a per-site baseline by hour of week, unusual events and limit exceedances.

* :class:`NoiseBaseline` learns, per site, the mean and spread of LAeq, L90
  and LAmax for each of the 168 hours of the week (exponentially weighted,
  falling back to the hour of day until a cell has seen ``min_cell``
  intervals).  An **unusual event** is a 15-minute run (3 intervals) whose
  mean residual is both large in decibels and in standard deviations: a
  LAeq rise (``laeq_db``), an L90 rise (``l90_db`` - steady sources such as
  amplified music lift the background level, which traffic does not) or an
  LAmax rise in every interval of the run (``lamax_db`` - impulsive work
  such as construction; LAmax is heavy-tailed, so one loud interval is not
  enough).  Intervals
  inside an event, and outliers, are not learned.
* :class:`NoiseLimits` checks configured limits per period - day 07-19,
  evening 19-23, night 23-07 local - on the 15-minute energy mean LAeq,15min
  (periods as in the Environmental Noise (England) Regulations 2006 /
  WHO Lden/Lnight definitions; the limit values are the council's
  configuration, defaults by site type in the engine).
"""

from __future__ import annotations

import math
from collections import deque

from stream_models.base import StreamModel, register

__all__ = ["NoiseBaseline", "NoiseLimits", "period_of", "energy_mean"]


def period_of(hour: int) -> str:
    """Period of a local hour.

    >>> period_of(6), period_of(7), period_of(19), period_of(23)
    ('night', 'day', 'evening', 'night')
    """
    if 7 <= hour < 19:
        return "day"
    if 19 <= hour < 23:
        return "evening"
    return "night"


def energy_mean(levels) -> float:
    """Energy (logarithmic) mean of decibel levels.

    >>> round(energy_mean([60.0, 70.0]), 1)
    67.4
    """
    levels = list(levels)
    return 10.0 * math.log10(sum(10.0 ** (v / 10.0) for v in levels) / len(levels))


_METRICS = ("laeq", "l90", "lamax")


@register
class NoiseBaseline(StreamModel):
    """Hour-of-week baseline of one site and unusual-event detection.

    ``update({"t", "how": hour of week, "laeq", "l90", "lamax"})`` returns
    "start" / "end" when an unusual event begins / ends; ``score_one(x)`` the
    residuals against the baseline.

    >>> import random; rnd = random.Random(0)
    >>> m = NoiseBaseline()
    >>> evs = []
    >>> for k in range(12 * 24 * 22):            # three weeks and a day of 5-minute intervals
    ...     how = (k // 12) % 168
    ...     base = 50.0 + 8.0 * ((how % 24) in range(7, 23))
    ...     party = 12 * 24 * 20 + 12 * 23 <= k < 12 * 24 * 20 + 12 * 26
    ...     x = {"t": k * 300_000, "how": how, "laeq": base + rnd.gauss(0, 1.5) + (15.0 if party else 0.0),
    ...          "l90": base - 10 + rnd.gauss(0, 1.0) + (20.0 if party else 0.0),
    ...          "lamax": base + 12 + rnd.expovariate(0.25)}
    ...     evs.append(m.update(x))
    >>> [(i - 12 * 24 * 20) // 12 for i, e in enumerate(evs) if e]     # hours after midnight of day 20
    [23, 26]
    """

    VERSION = "noise-baseline/1"

    def __init__(
        self,
        alpha: float = 0.05,
        min_cell: int = 12,
        window: int = 3,
        laeq_db: float = 6.0,
        l90_db: float = 8.0,
        lamax_db: float = 15.0,
        z_on: float = 3.0,
        exit_n: int = 6,
        warmup: int = 576,
    ) -> None:
        self.alpha = alpha
        self.min_cell = min_cell
        self.window = window
        self.laeq_db = laeq_db
        self.l90_db = l90_db
        self.lamax_db = lamax_db
        self.z_on = z_on
        self.exit_n = exit_n
        self.warmup = warmup
        # per metric: 168 means, vars, counts; 24 hour-of-day means, vars, counts
        self.mw = {m: [0.0] * 168 for m in _METRICS}
        self.vw = {m: [9.0] * 168 for m in _METRICS}
        self.nw = [0] * 168
        self.md = {m: [0.0] * 24 for m in _METRICS}
        self.vd = {m: [9.0] * 24 for m in _METRICS}
        self.nd = [0] * 24
        self.res: deque = deque(maxlen=window)
        self.n = 0
        self.active = False
        self.calm = 0
        self.since: int | None = None
        self.peak: dict = {}
        self.z_scale = 1.0
        self.last: dict = {}

    def _cell(self, m: str, how: int) -> tuple[float, float] | None:
        if self.nw[how] >= self.min_cell:
            return self.mw[m][how], self.vw[m][how]
        hod = how % 24
        if self.nd[hod] >= self.min_cell:
            return self.md[m][hod], self.vd[m][hod]
        return None

    def score_one(self, x: dict) -> dict:
        how = int(x["how"]) % 168
        out = {}
        for m in _METRICS:
            if x.get(m) is None:
                continue
            c = self._cell(m, how)
            if c is None:
                continue
            r = float(x[m]) - c[0]
            out[m] = {"residual_db": r, "z": r / math.sqrt(c[1] + 1.0), "baseline_db": c[0]}
        return out

    def _learn(self, x: dict) -> None:
        how = int(x["how"]) % 168
        hod = how % 24
        self.nw[how] += 1
        self.nd[hod] += 1
        aw = max(self.alpha, 1.0 / self.nw[how])
        ad = max(self.alpha / 4, 1.0 / self.nd[hod])
        for m in _METRICS:
            if x.get(m) is None:
                continue
            v = float(x[m])
            mw, vw = self.mw[m], self.vw[m]
            if self.nw[how] == 1:
                mw[how] = v
            else:
                d = v - mw[how]
                mw[how] += aw * d
                vw[how] += aw * (d * d - vw[how])
            md, vd = self.md[m], self.vd[m]
            if self.nd[hod] == 1:
                md[hod] = v
            else:
                d = v - md[hod]
                md[hod] += ad * d
                vd[hod] += ad * (d * d - vd[hod])

    def update(self, x: dict) -> str | None:
        self.n += 1
        s = self.score_one(x)
        self.res.append(s)
        ev = None
        full = len(self.res) == self.window and all(self.res)
        trig = {}
        if full:
            for m, thr in (("laeq", self.laeq_db), ("l90", self.l90_db), ("lamax", self.lamax_db)):
                vals = [r[m] for r in self.res if m in r]
                if len(vals) == self.window:
                    if m == "lamax":  # impulsive and heavy-tailed: every interval must be up
                        rm = min(v["residual_db"] for v in vals)
                        zm = min(v["z"] for v in vals)
                    else:
                        rm = sum(v["residual_db"] for v in vals) / len(vals)
                        zm = sum(v["z"] for v in vals) / len(vals)
                    trig[m] = (rm, zm, rm >= thr and zm >= self.z_on * self.z_scale)
        hit = any(v[2] for v in trig.values())
        self.last = {m: {"residual_db": round(v[0], 2), "z": round(v[1], 2)} for m, v in trig.items()}
        if self.active:
            for m, v in trig.items():
                self.peak[m] = max(self.peak.get(m, -1e9), v[0])
            quiet = (
                all(
                    v[0] < 0.5 * thr
                    for (m, v), thr in zip(trig.items(), [self.laeq_db, self.l90_db, self.lamax_db])
                )
                if trig
                else True
            )
            self.calm = self.calm + 1 if quiet else 0
            if self.calm >= self.exit_n:
                self.active = False
                ev = "end"
        elif hit and self.n > self.warmup:
            self.active, self.calm, self.since = True, 0, int(x["t"])
            self.peak = {m: v[0] for m, v in trig.items()}
            ev = "start"
        z1 = max((v["z"] for v in s.values()), default=0.0)
        if not self.active and ev is None and z1 < 3.0 or self.n <= self.warmup:
            self._learn(x)
        return ev

    def learn_one(self, x: dict) -> None:
        self.update(x)

    def predict_one(self, x: dict | None = None) -> dict:
        return {
            "unusual": self.active,
            "since_ms": self.since if self.active else None,
            "residuals": self.last,
        }

    @classmethod
    def _contract_data(cls):
        xs = [
            {
                "t": k * 300_000,
                "how": (k // 12) % 168,
                "laeq": 55.0 + (k % 7) * 0.5,
                "l90": 45.0 + (k % 5) * 0.4,
                "lamax": 68.0 + (k % 11),
            }
            for k in range(500)
        ]
        return (
            {"warmup": 100},
            xs,
            [
                {"how": 5, "laeq": 70.0, "l90": 60.0, "lamax": 80.0},
                {"how": 30, "laeq": 55.0, "l90": 45.0, "lamax": 70.0},
            ],
        )


@register
class NoiseLimits(StreamModel):
    """Exceedance of configured LAeq,15min limits by period (day / evening / night).

    >>> m = NoiseLimits({"day": 70.0, "evening": 65.0, "night": 55.0})
    >>> evs = [m.update({"t": k * 300_000, "hour": 23, "laeq": 50.0 if k < 6 else 62.0}) for k in range(12)]
    >>> evs.index("start"), m.predict_one()["level_db"]      # 15-min energy mean of 50, 50, 62 dB is 57.7
    (6, 62.0)
    """

    VERSION = "noise-limits/1"

    def __init__(
        self, limits: dict | None = None, window: int = 3, exit_n: int = 6, margin_db: float = 0.0
    ) -> None:
        self.limits = dict(limits or {"day": 70.0, "evening": 65.0, "night": 60.0})
        self.window = window
        self.exit_n = exit_n
        self.margin_db = margin_db
        self.recent: deque = deque(maxlen=window)
        self.active = False
        self.calm = 0
        self.since: int | None = None
        self.peak = 0.0
        self.last: dict = {}

    def update(self, x: dict) -> str | None:
        per = period_of(int(x["hour"]))
        lim = self.limits.get(per)
        self.recent.append(float(x["laeq"]))
        if lim is None or len(self.recent) < self.window:
            return None
        lvl = energy_mean(self.recent)
        lim = lim + self.margin_db
        self.last = {"period": per, "limit_db": lim, "level_db": round(lvl, 2)}
        if self.active:
            self.peak = max(self.peak, lvl)
            self.calm = self.calm + 1 if lvl <= lim else 0
            if self.calm >= self.exit_n:
                self.active = False
                return "end"
            return None
        if lvl > lim:
            self.active, self.calm, self.since, self.peak = True, 0, int(x["t"]), lvl
            return "start"
        return None

    def learn_one(self, x: dict) -> None:
        self.update(x)

    def predict_one(self, x: dict | None = None) -> dict:
        return {"exceeding": self.active, "since_ms": self.since if self.active else None, **self.last}

    @classmethod
    def _contract_data(cls):
        xs = [{"t": k * 300_000, "hour": (k // 12) % 24, "laeq": 50.0 + (k % 20)} for k in range(100)]
        return {"limits": {"day": 68.0, "evening": 64.0, "night": 58.0}}, xs, [None]
