"""Bin models: fill level and rate, tilt, fire risk, sensor faults, and the collection judge.

Every model here works on one bin (except :class:`CollectionJudge`, which
holds the tenant-level rates it learns) and is driven by the engine with
whole samples: the readings a node takes at one instant (``distance``,
``fill``, ``temp``, ``tilt``), or a lone ``tilt`` record written by the
accelerometer when the bin is moved ("motion").

* :class:`FillLevelModel` - robust fill level (median of the last three
  samples), collection detection (a drop to near empty confirmed by the next
  sample, so a single spurious echo is not a collection), fill rate per day
  of week (a ratio estimator over consecutive samples with exponential
  forgetting, shrunk towards the council's planning figure) and the
  forecast: fill at a future time and time to full.
* :class:`TiltClassifier` - rest / handled (put out, taken in) / tipped by
  the lifter / knocked over / lid open / lid propped by rubbish, from the
  tilt angle, whether the record is a lone motion record, and the distance
  reading (an open lid looks past the bin floor); learns the bin's resting
  angle.
* :class:`FireRiskDetector` - lid temperature above an absolute limit (the
  firmware's 60 C alarm) or a jump of 25 C above the learned baseline.
* :class:`FillSensorFaults` - stuck (the same millimetre distance for
  ``stuck_n`` samples in a row: with >= 6 mm noise, a run of 8 equal values
  has probability < 1e-9; readings pinned at the sensor's minimum range
  mean a full bin, not a stuck sensor), noisy (the median deviation from a 3-point
  running median above 3.5 cm, which real steps and lone spikes do not
  reach) and impossible jumps (single-sample excursions that revert,
  several a day).
* :class:`CollectionJudge` - decides, for a bin that was due and was not
  emptied, between a **missed collection** (the bin was out; the crew did
  not empty it) and **not put out** (the household did not present it).
  See its docstring for the evidence and how it is combined.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections import deque

from stream_models.base import StreamModel, register
from stream_models.timeutil import DAY_MS, HOUR_MS

__all__ = [
    "FillLevelModel",
    "TiltClassifier",
    "FireRiskDetector",
    "FillSensorFaults",
    "CollectionJudge",
    "TILT_CLASSES",
]

TILT_CLASSES = ("rest", "handled", "propped", "tipped", "knocked", "lid_open")

#: FillLevelModel remembers its level after this many recent samples (``level_at``)
_HIST = 96


def _median3(a: list[float]) -> float:
    n = len(a)
    if n == 1:
        return a[0]
    if n == 2:
        return (a[0] + a[1]) / 2
    x, y, z = a[-3], a[-2], a[-1]
    if x > y:
        x, y = y, x
    if y > z:
        y = z
    return x if x > y else y


@register
class FillLevelModel(StreamModel):
    """Fill level, collection detection and fill rate by day of week for one bin.

    ``learn_one({"t": utc_ms, "local": local_ms, "fill": f})`` with valid
    samples in time order; :meth:`update` does the same and returns a
    collection event (dict) when one is confirmed.  ``predict_one({"local":
    local_ms, "horizon_h": h})`` is the forecast fill ``h`` hours ahead.

    >>> m = FillLevelModel(prior_rate=0.1, prior_weight_days=0.5)
    >>> H = 3_600_000
    >>> evs = []
    >>> for k in range(72):                       # three days filling at 0.2/day
    ...     evs.append(m.update({"t": k * H, "local": k * H, "fill": 0.05 + 0.2 * k / 24}))
    >>> round(m.level, 2), round(m.rate_per_day(3), 2)
    (0.63, 0.16)
    >>> m.update({"t": 72 * H, "local": 72 * H, "fill": 0.01}) is None    # drop: wait for the next sample
    True
    >>> ev = m.update({"t": 73 * H, "local": 73 * H, "fill": 0.02})
    >>> ev["type"], round(ev["before"], 2)
    ('collection', 0.63)
    >>> round(m.predict_one({"local": 73 * H, "horizon_h": 48}), 2)    # Sun, Mon not seen yet: the prior
    0.22
    """

    VERSION = "fill-level/1"

    def __init__(
        self,
        prior_rate: float = 0.1,
        prior_weight_days: float = 3.0,
        drop_min: float = 0.15,
        empty_max: float = 0.2,
        decay: float = 0.99,
        max_gap_h: float = 7.0,
        censor_above: float = 0.9,
    ) -> None:
        self.prior_rate = prior_rate
        self.prior_weight_days = prior_weight_days
        self.drop_min = drop_min
        self.empty_max = empty_max
        self.decay = decay
        self.max_gap_h = max_gap_h
        self.censor_above = censor_above
        self.recent: list[float] = []
        self.level: float | None = None
        self.last_t: int | None = None
        self.last_local: int | None = None
        self.pending: tuple[int, int, float, float, int | None] | None = None  # t, local, fill, level, prev_t
        self.inc = [0.0] * 7  # forgotten sums of fill gained, per local weekday
        self.dur = [0.0] * 7  # ... and of days observed
        self.last_collection: tuple[int, int] | None = None
        self.n = 0
        # (t, level) after each of the last HIST samples, as two flat arrays (no tuple per sample)
        self.hist_t = array("q")
        self.hist_v = array("d")

    def __setstate__(self, st: dict) -> None:
        hist = st.pop("hist", None)  # checkpoints from before the arrays: a deque of (t, level)
        self.__dict__.update(st)
        if hist is not None:
            self.hist_t = array("q", (int(t) for t, _ in hist))
            self.hist_v = array("d", (float(v) for _, v in hist))

    def _remember(self, t: int, level: float) -> None:
        self.hist_t.append(t)
        self.hist_v.append(level)
        if len(self.hist_t) > _HIST:
            del self.hist_t[0]
            del self.hist_v[0]

    # ---- learning -------------------------------------------------------
    def learn_one(self, x: dict) -> None:
        self.update(x)

    def update(self, x: dict) -> dict | None:
        t, loc, f = int(x["t"]), int(x["local"]), float(x["fill"])
        if self.last_t is not None and t <= self.last_t:
            return None
        self.n += 1
        ev = None
        if self.pending is not None:
            pt, ploc, pf, plevel, prev_t = self.pending
            self.pending = None
            if f < self.empty_max + 0.1 and f < plevel - 0.7 * self.drop_min:
                ev = {
                    "type": "collection",
                    "t0": prev_t if prev_t is not None else pt,
                    "t1": pt,
                    "before": plevel,
                    "after": min(pf, f),
                }
                self.recent = [pf, f]
                self.level = _median3(self.recent)
                self.last_t, self.last_local = t, loc
                self.last_collection = (ev["t0"], pt)
                self._remember(pt, min(pf, f))
                self._remember(t, self.level)
                return ev
            # a lone low reading (spurious echo): forget it and carry on
        if self.level is not None and f < self.level - self.drop_min and f < self.empty_max:
            self.pending = (t, loc, f, self.level, self.last_t)
            return None
        self.recent.append(f)
        if len(self.recent) > 3:
            del self.recent[0]
        new = _median3(self.recent)
        if self.level is not None and self.last_local is not None:
            gap_h = (loc - self.last_local) / HOUR_MS
            if 0 < gap_h <= self.max_gap_h and max(new, self.level) < self.censor_above:
                dow = (loc // DAY_MS + 3) % 7
                d = self.decay
                self.inc[dow] = self.inc[dow] * d + (new - self.level)
                self.dur[dow] = self.dur[dow] * d + gap_h / 24.0
        self.level = new
        self.last_t, self.last_local = t, loc
        self._remember(t, new)
        return ev

    def level_at(self, t: int) -> float | None:
        """The level after the last sample at or before ``t`` (None if not known)."""
        i = bisect.bisect_right(self.hist_t, t)
        return self.hist_v[i - 1] if i else None

    def note_emptied(self, t: int) -> None:
        """An emptying seen by other evidence (tip tilt, crew report): restart the level."""
        self.recent = []
        self.level = None
        self.pending = None
        self.last_collection = (t, t)

    # ---- prediction -----------------------------------------------------
    def rate_per_day(self, dow: int) -> float:
        w = self.prior_weight_days
        return max(0.0, (self.inc[dow] + self.prior_rate * w) / (self.dur[dow] + w))

    def predict_one(self, x: dict) -> float:
        """Forecast fill ``horizon_h`` hours after local time ``local``."""
        level = self.level if self.level is not None else 0.0
        return level + self.gain_between(
            int(x["local"]), int(x["local"]) + int(float(x["horizon_h"]) * HOUR_MS)
        )

    def gain_between(self, loc0: int, loc1: int) -> float:
        """Expected fill gained between two local times (daily rates, uniform within a day)."""
        g = 0.0
        t = loc0
        steps = 0
        while t < loc1 and steps < 60:
            day = t // DAY_MS
            end = min(loc1, (day + 1) * DAY_MS)
            g += self.rate_per_day((day + 3) % 7) * (end - t) / DAY_MS
            t = end
            steps += 1
        return g

    def time_to_full_h(self, local_now: int, full: float = 1.0, max_days: int = 60) -> float | None:
        """Hours until the forecast reaches ``full`` (None beyond ``max_days``)."""
        level = self.level if self.level is not None else 0.0
        need = full - level
        if need <= 0:
            return 0.0
        t = local_now
        for _ in range(max_days + 1):
            day = t // DAY_MS
            r = self.rate_per_day((day + 3) % 7)
            rem = ((day + 1) * DAY_MS - t) / DAY_MS
            if r * rem >= need:
                return (t - local_now) / HOUR_MS + need / r * 24.0
            need -= r * rem
            t = (day + 1) * DAY_MS
        return None

    @classmethod
    def _contract_data(cls):
        H = HOUR_MS
        xs = [{"t": k * H, "local": k * H, "fill": min(0.95, 0.05 + 0.01 * (k % 90))} for k in range(200)]
        return {"prior_rate": 0.12}, xs, [{"local": 200 * H, "horizon_h": h} for h in (1, 24, 96)]


@register
class TiltClassifier(StreamModel):
    """What a tilt reading means for a bin; learns the bin's resting angle.

    ``predict_one({"tilt": deg, "motion": bool, "distance": m or None})`` ->
    one of :data:`TILT_CLASSES`.  A *motion* record is a lone tilt written by
    the accelerometer wake-up (bin moved or tipped); scheduled samples carry
    the distance too.  Tipped (>= 110 deg, motion), knocked over (70-100 deg
    with a short distance: the sensor now looks along the ground), lid open
    (>= 90 deg with a distance past the bin floor), handled / propped (more
    than ``handled_margin`` above the resting angle: moving the bin, or a lid
    held open by rubbish).

    >>> c = TiltClassifier(depth_m=0.95)
    >>> for _ in range(20):
    ...     c.learn_one({"tilt": 2.0, "motion": False, "distance": 0.5})
    >>> [c.predict_one(x) for x in ({"tilt": 2.3, "motion": False, "distance": 0.5},
    ...                             {"tilt": 31.0, "motion": True}, {"tilt": 135.0, "motion": True},
    ...                             {"tilt": 88.0, "motion": False, "distance": 0.2},
    ...                             {"tilt": 104.0, "motion": False, "distance": 2.9})]
    ['rest', 'handled', 'tipped', 'knocked', 'lid_open']
    """

    VERSION = "tilt/1"

    def __init__(
        self,
        depth_m: float = 0.95,
        handled_margin: float = 10.0,
        knock_min: float = 70.0,
        lid_min: float = 90.0,
        tip_min: float = 110.0,
        alpha: float = 0.05,
    ) -> None:
        self.depth_m = depth_m
        self.handled_margin = handled_margin
        self.knock_min = knock_min
        self.lid_min = lid_min
        self.tip_min = tip_min
        self.alpha = alpha
        self.rest = 2.0
        self.n = 0

    def predict_one(self, x: dict) -> str:
        a = float(x["tilt"])
        d = x.get("distance")
        if x.get("motion"):
            if a >= self.tip_min:
                return "tipped"
            if a >= self.knock_min:
                return "knocked"
            return "handled" if a >= self.rest + self.handled_margin else "rest"
        if a >= self.knock_min:
            if d is not None and d > self.depth_m * 1.05 and a >= self.lid_min:
                return "lid_open"
            if d is None and a >= self.tip_min:
                return "tipped"
            if d is not None and d > self.depth_m * 1.05:
                return "lid_open"
            return "knocked"
        return "propped" if a >= self.rest + self.handled_margin else "rest"

    def learn_one(self, x: dict) -> None:
        if x.get("motion"):
            return
        a = float(x["tilt"])
        if a < self.rest + self.handled_margin:
            self.n += 1
            al = max(self.alpha, 1.0 / self.n)
            self.rest += al * (a - self.rest)

    @classmethod
    def _contract_data(cls):
        xs = [{"tilt": 1.5 + 0.1 * (k % 5), "motion": False, "distance": 0.6} for k in range(30)]
        return (
            {"depth_m": 0.8},
            xs,
            [
                {"tilt": 2.0, "motion": False, "distance": 0.5},
                {"tilt": 130.0, "motion": True},
                {"tilt": 100.0, "motion": False, "distance": 3.0},
            ],
        )


@register
class FireRiskDetector(StreamModel):
    """Fire risk from the lid temperature: absolute limit or a jump over the learned baseline.

    >>> m = FireRiskDetector()
    >>> for k in range(50):
    ...     m.learn_one({"t": k * 3_600_000, "temp": 8.0 + (k % 3)})
    >>> m.predict_one({"temp": 12.0}), m.predict_one({"temp": 48.0}), m.predict_one({"temp": 75.0})
    (False, True, True)
    >>> round(m.score_one({"temp": 48.0})["excess_c"], 1)
    39.0
    """

    VERSION = "fire-risk/1"

    def __init__(
        self, abs_c: float = 60.0, jump_c: float = 25.0, min_c: float = 45.0, alpha: float = 0.02
    ) -> None:
        self.abs_c = abs_c
        self.jump_c = jump_c
        self.min_c = min_c
        self.alpha = alpha
        self.mean: float | None = None
        self.n = 0

    def score_one(self, x: dict) -> dict:
        c = float(x["temp"])
        base = self.mean if self.mean is not None else 15.0
        return {"temp_c": c, "baseline_c": round(base, 2), "excess_c": c - base}

    def predict_one(self, x: dict) -> bool:
        s = self.score_one(x)
        return s["temp_c"] >= self.abs_c or (s["temp_c"] >= self.min_c and s["excess_c"] >= self.jump_c)

    def learn_one(self, x: dict) -> None:
        c = float(x["temp"])
        if self.predict_one(x) or c > self.min_c:
            return
        self.n += 1
        al = max(self.alpha, 1.0 / self.n)
        self.mean = c if self.mean is None else self.mean + al * (c - self.mean)

    @classmethod
    def _contract_data(cls):
        xs = [{"t": k, "temp": 5.0 + (k % 7)} for k in range(40)]
        return {"abs_c": 58.0}, xs, [{"temp": 10.0}, {"temp": 47.0}, {"temp": 90.0}]


@register
class FillSensorFaults(StreamModel):
    """Stuck, noisy and spiking distance sensors (scheduled samples in time order).

    *Noisy*: over the last ``noise_window`` samples, the median of ``|d_i -
    median(d_i-1, d_i, d_i+1)|`` (a residual that ignores genuine steps - a
    bag dropped in - and counts a lone spike once) is above ``noise_m`` and
    the median successive difference is above ``step_m``.  Healthy sensors
    (<= 2.5 cm noise at the fullest) stay below 1.5 cm; a noisy one (12 cm)
    is near 6 cm.

    >>> m = FillSensorFaults(stuck_n=5)
    >>> for k in range(6):
    ...     m.learn_one({"t": k, "distance": 0.5, "fill": 0.47})
    >>> m.predict_one()["stuck"]
    True
    >>> import random; rnd = random.Random(1)
    >>> n = FillSensorFaults()
    >>> for k in range(24):
    ...     d = 0.5 + rnd.gauss(0, 0.12)
    ...     n.learn_one({"t": k * 3_600_000, "distance": round(d, 3), "fill": 1 - d / 0.95})
    >>> n.predict_one()["noisy"], n.predict_one()["stuck"]
    (True, False)
    """

    VERSION = "fill-faults/2"

    def __init__(
        self,
        stuck_n: int = 8,
        noise_window: int = 16,
        noise_m: float = 0.035,
        step_m: float = 0.05,
        noise_clear_m: float = 0.015,
        spike_jump: float = 0.3,
        spikes_per_day: int = 4,
        min_range_m: float = 0.025,
    ) -> None:
        self.stuck_n = stuck_n
        self.min_range_m = min_range_m
        self.noise_window = noise_window
        self.noise_m = noise_m
        self.step_m = step_m
        self.noise_clear_m = noise_clear_m
        self.spike_jump = spike_jump
        self.spikes_per_day = spikes_per_day
        self.last_d: float | None = None
        self.run = 0
        self.d3: deque = deque(maxlen=3)
        self.resid: deque = deque(maxlen=noise_window)
        self.diffs: deque = deque(maxlen=noise_window)
        self.noisy = False
        self.f3: deque = deque(maxlen=3)
        self.spikes: deque = deque()
        self.last_t = -1

    @staticmethod
    def _med(q) -> float:
        s = sorted(q)
        return s[len(s) // 2] if s else 0.0

    def learn_one(self, x: dict) -> None:
        t = int(x["t"])
        if t <= self.last_t:
            return
        self.last_t = t
        d = x.get("distance")
        if d is not None:
            d = float(d)
            if d <= self.min_range_m:
                self.run = 0  # pinned at the sensor's blind zone: a full bin, not a stuck sensor
            elif self.last_d is not None:
                self.run = self.run + 1 if d == self.last_d else 1
                self.diffs.append(abs(d - self.last_d))
            else:
                self.run = 1
            self.last_d = d
            self.d3.append(d)
            if len(self.d3) == 3:
                a, b, c = self.d3
                self.resid.append(abs(b - sorted((a, b, c))[1]))
            if len(self.resid) >= self.noise_window - 2:
                r = self._med(self.resid)
                if self.noisy and r < self.noise_clear_m:
                    self.noisy = False
                elif not self.noisy and r > self.noise_m and self._med(self.diffs) > self.step_m:
                    self.noisy = True
        f = x.get("fill")
        if f is not None:
            self.f3.append((t, float(f)))
            if len(self.f3) == 3:
                (_, a), (tb, b), (_, c) = self.f3
                J = self.spike_jump
                if (b - a > J and b - c > J) or (a - b > J and c - b > J):
                    self.spikes.append(tb)
            while self.spikes and self.spikes[0] < t - DAY_MS:
                self.spikes.popleft()

    def predict_one(self, x: dict | None = None) -> dict:
        return {
            "stuck": self.run >= self.stuck_n,
            "run": self.run,
            "stuck_value_m": self.last_d,
            "noisy": self.noisy,
            "noise_m": self._med(self.resid),
            "step_m": self._med(self.diffs),
            "spikes_24h": len(self.spikes),
            "jumpy": len(self.spikes) >= self.spikes_per_day,
        }

    @classmethod
    def _contract_data(cls):
        xs = [{"t": k, "distance": 0.4 + 0.003 * (k % 4), "fill": 0.55} for k in range(20)]
        return {"stuck_n": 6}, xs, [None]


@register
class CollectionJudge(StreamModel):
    """Missed collection or not put out? A naive-Bayes combination of the evidence.

    Called for a bin that was due and shows no emptying after the round's
    window closed (no tip by the lifter, no fill drop, no crew "collected").
    The two explanations are *the bin was out and the crew did not empty it*
    (missed collection) and *the household did not present it* (not put out):

    ``odds(missed : not out) = P(out) / P(not out)
    x P(left | out, round context) x LR(motion)``

    * ``P(out)``: the learned presentation rate (Beta counts, prior 0.96).
    * ``P(left | out, context)``: the round-level evidence.  If other bins on
      the same street that were out were left too and none was emptied, the
      crew skipped the street (p = ``p_street``); if the round's emptied
      share is tiny the round did not run (``p_round``); otherwise a single
      bin was missed (the learned per-bin miss rate, prior 0.006).
    * ``LR(motion)``: the bin's accelerometer records being wheeled out / in.
      Seen: r / f, unseen: (1 - r) / (1 - f), where r is the *device's own*
      learned probability of recording the put-out (Beta counts over its past
      collections) and f the false motion rate.  A device that never reports
      motion gets r ~ 0.5 and the round evidence decides.
    * A crew report ("not_out", "blocked") decides outright.

    ``bias`` shifts the log-odds and moves with operator verdicts.

    >>> j = CollectionJudge()
    >>> out = {"motion_seen": True, "reliability": (9, 1), "street_left": 0, "street_emptied": 3,
    ...        "round_emptied_frac": 0.97, "round_n": 40}
    >>> j.predict_one(out)["decision"]
    'missed_collection'
    >>> j.predict_one({**out, "motion_seen": False})["decision"]
    'not_put_out'
    >>> j.predict_one({**out, "motion_seen": False, "reliability": (1, 6), "street_left": 3,
    ...                "street_emptied": 0})["decision"]
    'missed_collection'
    >>> j.predict_one({**out, "crew": "not_out"})["decision"]
    'not_put_out'
    """

    VERSION = "collection-judge/1"

    def __init__(
        self,
        prior_not_out: float = 0.04,
        prior_miss: float = 0.006,
        prior_weight: float = 200.0,
        false_motion: float = 0.02,
        p_street: float = 0.9,
        p_round: float = 0.9,
        round_min_bins: int = 8,
        bias: float = 0.0,
    ) -> None:
        self.prior_not_out = prior_not_out
        self.prior_miss = prior_miss
        self.prior_weight = prior_weight
        self.false_motion = false_motion
        self.p_street = p_street
        self.p_round = p_round
        self.round_min_bins = round_min_bins
        self.bias = bias
        self.n_due = 0.0
        self.n_not_out = 0.0
        self.n_out = 0.0
        self.n_missed = 0.0

    def rates(self) -> tuple[float, float]:
        """(P(not out), P(single bin missed | out)) with the priors as pseudo-counts."""
        w = self.prior_weight
        p_no = (self.n_not_out + self.prior_not_out * w) / (self.n_due + w)
        p_miss = (self.n_missed + self.prior_miss * w) / (self.n_out + w)
        return p_no, p_miss

    def predict_one(self, x: dict) -> dict:
        crew = x.get("crew")
        if crew == "not_out":
            return {
                "decision": "not_put_out",
                "p_missed": 0.0,
                "log_odds": -math.inf,
                "terms": {"crew": crew},
            }
        if crew == "blocked":
            return {
                "decision": "missed_collection",
                "p_missed": 1.0,
                "log_odds": math.inf,
                "terms": {"crew": crew},
                "cause": "blocked",
            }
        p_no, p_miss = self.rates()
        terms: dict[str, float] = {"prior_out": math.log((1 - p_no) / p_no)}
        sl, se = int(x.get("street_left", 0)), int(x.get("street_emptied", 0))
        rf, rn = float(x.get("round_emptied_frac", 1.0)), int(x.get("round_n", 0))
        cause = "crew_missed_bin"
        if sl >= 1 and se == 0:
            p_left, cause = self.p_street, "street_skipped"
        elif rn >= self.round_min_bins and rf < 0.2:
            p_left, cause = self.p_round, "round_not_run"
        else:
            p_left = p_miss
        terms["left_given_out"] = math.log(p_left)
        a, b = x.get("reliability", (4.0, 1.0))
        r = min(0.995, max(0.005, a / (a + b)))
        f = self.false_motion
        terms["motion"] = math.log(r / f) if x.get("motion_seen") else math.log((1 - r) / (1 - f))
        terms["bias"] = self.bias
        lo = sum(terms.values())
        p = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, lo))))
        return {
            "decision": "missed_collection" if lo > 0 else "not_put_out",
            "p_missed": p,
            "log_odds": lo,
            "terms": {k: round(v, 3) for k, v in terms.items()},
            "cause": cause,
        }

    def learn_one(self, x: dict, y: str | None = None) -> None:
        """Count one judged due occurrence: y = collected | missed_collection | not_put_out."""
        y = y or x.get("outcome")
        if y is None:
            return
        self.n_due += 1
        if y == "not_put_out":
            self.n_not_out += 1
        else:
            self.n_out += 1
            if y == "missed_collection" and x.get("cause", "crew_missed_bin") == "crew_missed_bin":
                self.n_missed += 1

    @classmethod
    def _contract_data(cls):
        xs = [
            ({"cause": "crew_missed_bin"}, y)
            for y in ["collected"] * 30 + ["not_put_out"] * 2 + ["missed_collection"]
        ]
        probe = [
            {
                "motion_seen": m,
                "reliability": (8, 2),
                "street_left": sl,
                "street_emptied": se,
                "round_emptied_frac": 0.9,
                "round_n": 30,
            }
            for m in (True, False)
            for sl, se in ((0, 3), (2, 0))
        ]
        return {"prior_weight": 50.0}, xs, probe
