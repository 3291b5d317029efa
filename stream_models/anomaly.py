"""Generic per-metric anomaly scoring where nothing more specific applies.

Chosen by the NAB score (``streetsense eval nab``), see ``stream_models.evaluate.eval_nab``:

* :class:`RobustAnomalyScorer` (the one the engine uses) - a robust online
  z-score: the distance of the value (mean of the last ``k``) and of the
  median of the last ``m`` values from the median of a sliding window of
  ``window`` values, in units of the window's IQR / 1.349 (floored at
  ``floor_rel`` x |median|), each divided by the ``q`` quantile of its own
  history (so one threshold suits every series, as with Numenta's anomaly
  likelihood); the larger of the two, reported only when it is the highest
  of the last ``refractory`` scores (an alarm is not repeated while the
  same event goes on).
* :class:`HSTAnomalyScorer` - River's Half-Space Trees on min-max scaled
  shingles (the alternative the brief suggested; it scored far lower).
* :class:`WindowedGaussianScorer` - NAB's "windowed Gaussian" baseline
  (Gaussian tail over the last 1000 values), as a reference on the same data.

Scores are non-negative and unbounded (``RobustAnomalyScorer``: about 1 =
as unusual as the 99th percentile of its own past); call ``score_one``
before ``learn_one`` (or ``score_learn_one`` for both).
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections import deque

from stream_models.base import StreamModel, register

__all__ = ["RobustAnomalyScorer", "HSTAnomalyScorer", "WindowedGaussianScorer"]


def _value(x) -> float:
    if isinstance(x, dict):
        return float(x["value"] if "value" in x else next(iter(x.values())))
    return float(x)


class _RankNorm:
    """Value / the ``q`` quantile of (about) the last ``H`` values (0 until 50 seen).

    For the first ``exact`` values, the exact order statistic of all of them (a sorted array, as
    the original scorer kept); after that, an exponentially decayed histogram on a log scale
    (``_LOG_STEP`` wide bins, interpolated log-uniformly inside a bin), fed from the start, and the
    sorted array is dropped: the decay ``1/H`` per value gives the same effective memory (~``H``
    values) with O(bins) state. An exact window of 20,000 values per device and metric grew for
    months (hundreds of MB for a town); the histogram alone from the start cost the NAB score 8-19
    points (51.0 -> 43.2, and 32.3 while its range was capped at 1e4): early on, while few values
    are known, the 99th percentile falls between a handful of outliers and the bulk, where only the
    exact order statistic is stable.
    """

    __slots__ = ("H", "q", "n", "w", "total", "zw", "lo", "bins", "qv", "stale", "exact", "ex")

    def __init__(self, H: int, q: float, exact: int = 0) -> None:
        self.H = H
        self.q = q
        self.exact = exact
        self.ex: array | None = array("d") if exact > 0 else None  # sorted, while n <= exact
        self.n = 0  # values seen (the warm-up gate)
        self.w = 1.0  # weight of the next value (grows by 1/(1-1/H): decay without touching the bins)
        self.total = 0.0
        self.zw = 0.0  # weight of values at or below _LOG_LO (exact zeros, mostly): kept out of the span
        #: decayed weight per log bin ``lo + i`` at index ``i``, over the span of positive values seen
        #: (a flat array: no per-bin objects; typically 20-100 bins)
        self.lo = 0
        self.bins = array("d")
        self.qv: float | None = None  # cached quantile
        self.stale = 0

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, st) -> None:
        if isinstance(st, tuple):  # slots-only pickle (older checkpoints)
            st = st[1] or {}
        if "bins" in st:
            self.exact, self.ex, self.zw = 0, None, 0.0  # checkpoints from before these
            for k in self.__slots__:
                if k in st:
                    setattr(self, k, st[k])
            if isinstance(self.bins, dict):  # a checkpoint from before the flat array: {bin: weight}
                old = self.bins
                self.zw = old.pop(_OLD_BIN_MIN, 0.0)  # its bottom bin held everything <= 1e-3
                self.lo, self.bins = (min(old), array("d")) if old else (0, array("d"))
                for k in sorted(old):
                    self._slot(k)
                    self.bins[k - self.lo] = old[k]
            return
        # a checkpoint of the old exact window (h, s): rebuild from its values, oldest first
        self.__init__(st.get("H", 20000), st.get("q", 0.99))
        for v in st.get("h", ()):
            self.add(v)

    @staticmethod
    def _bin(v: float) -> int:
        return max(_BIN_MIN, min(_BIN_MAX, int(math.floor(math.log(v) / _LOG_STEP))))

    def _quantile(self) -> float:
        target = self.q * self.total
        acc = self.zw
        if acc > 0.0 and acc >= target:
            return 0.0
        top = None
        lo = self.lo
        for i, c in enumerate(self.bins):
            if c <= 0.0:
                continue
            top = i
            if acc + c >= target:
                f = (target - acc) / c
                return math.exp((lo + i + f) * _LOG_STEP)
            acc += c
        return math.exp((top + lo + 1) * _LOG_STEP) if top is not None else 0.0

    def _slot(self, k: int) -> int:
        """Index of bin ``k``, widening the span to hold it."""
        b = self.bins
        if not b:
            self.lo = k
            b.append(0.0)
        elif k < self.lo:
            b[0:0] = array("d", bytes(8 * (self.lo - k)))
            self.lo = k
        elif k >= self.lo + len(b):
            b.extend(array("d", bytes(8 * (k - self.lo - len(b) + 1))))
        return k - self.lo

    def norm(self, v: float) -> float:
        if self.n < 50:
            return 0.0
        ex = self.ex
        if ex is not None:
            return v / (ex[min(len(ex) - 1, int(self.q * len(ex)))] + 1e-9)
        if self.qv is None or self.stale >= _REQUANT:
            self.qv, self.stale = self._quantile(), 0
        return v / (self.qv + 1e-9)

    def add(self, v: float) -> None:
        self.n += 1
        if self.ex is not None:
            if self.n <= self.exact:
                bisect.insort(self.ex, v)
            else:
                self.ex = None  # the histogram takes over
        if v <= _LOG_LO:
            self.zw += self.w
        else:
            self.bins[self._slot(self._bin(v))] += self.w
        self.total += self.w
        self.w /= 1.0 - 1.0 / self.H
        if self.w > 1e150:  # renormalise (rarely): same distribution, smaller numbers
            s = 1.0 / self.w
            b = self.bins
            for i in range(len(b)):
                c = b[i] * s
                b[i] = c if c > 1e-300 else 0.0
            self.zw *= s
            self.total *= s
            self.w = 1.0
        self.stale += 1
        if self.n <= 100:
            self.qv = None  # early on every value moves the quantile


#: log-scale bin width of the rank histogram (10 % wide bins; interpolated inside a bin)
_LOG_STEP = math.log(1.1)
#: range of the histogram: robust z-scores reach 1e9 and more where a series' spread is ~0, and a
#: cap clamps them into one bin far below their real quantile (the NAB score fell from 43 to 32 with
#: the range capped at 1e4); bins exist only over the span seen (typically 20-100 of them)
_LOG_LO = 1e-12
_BIN_MIN = int(math.floor(math.log(_LOG_LO) / _LOG_STEP))
#: the bottom bin of checkpoints written before the range was widened (values <= 1e-3)
_OLD_BIN_MIN = int(math.floor(math.log(1e-3) / _LOG_STEP)) - 1
_BIN_MAX = int(math.floor(math.log(1e15) / _LOG_STEP))
#: re-read the quantile every this many values (it moves by ~1/H per value)
_REQUANT = 16


@register
class RobustAnomalyScorer(StreamModel):
    """Robust online z-score with self-normalisation and a refractory period.

    >>> m = RobustAnomalyScorer()
    >>> import math
    >>> scores = []
    >>> for k in range(3000):
    ...     v = 10 + math.sin(k / 20.0) + (8.0 if k == 2500 else 0.0)
    ...     scores.append(m.score_learn_one({"value": v}))
    >>> max(range(3000), key=scores.__getitem__), max(scores) > 1.5
    (2500, True)
    >>> m2 = RobustAnomalyScorer.loads(m.dumps())
    >>> m2.score_one({"value": 11.0}) == m.score_one({"value": 11.0})
    True
    """

    VERSION = "robust-anomaly/1"

    def __init__(
        self,
        window: int = 1000,
        k: int = 2,
        m: int = 36,
        history: int = 20000,
        q: float = 0.99,
        refractory: int = 100,
        floor_rel: float = 0.01,
        min_window: int = 20,
        exact: int = 5000,
    ) -> None:
        self.window = window
        self.k = k
        self.m = m
        self.history = history
        self.q = q
        self.refractory = refractory
        self.floor_rel = floor_rel
        self.min_window = min_window
        self.exact = exact
        # flat arrays of doubles, not containers of float objects: 8 bytes a value instead of ~32-56,
        # in memory and in the checkpoint (one scorer per device and metric: thousands in a town)
        self.win = array("d")  # the window, oldest first
        self.sorted = array("d")  # the same values, sorted
        self.short: deque = deque(maxlen=k)
        self.recent = array("d")  # the last m values
        self.r_point = _RankNorm(history, q, exact)
        self.r_shift = _RankNorm(history, q, exact)
        self.outs = array("d")  # the last `refractory` raw scores
        self.last: dict = {}

    def __setstate__(self, st: dict) -> None:
        self.__dict__.update(st)
        self.__dict__.setdefault("exact", 0)
        for k in ("win", "sorted", "recent", "outs"):  # checkpoints from before the arrays held deques/lists
            if not isinstance(getattr(self, k), array):
                setattr(self, k, array("d", getattr(self, k)))

    def _compute(self, v: float) -> tuple[float, float | None, float | None, dict]:
        s = self.sorted
        n = len(s)
        if n < self.min_window:
            return 0.0, None, None, {}
        med = s[n // 2]
        iqr = s[(3 * n) // 4] - s[n // 4]
        scale = max(iqr / 1.349, self.floor_rel * (abs(med) + 1e-9), 1e-9)
        z = abs(v - med) / scale
        sh = list(self.short)[-(self.k - 1) :] if self.k > 1 else []
        pt = (z + sum(sh)) / (1 + len(sh))
        o1 = self.r_point.norm(pt)
        shift = None
        o2 = 0.0
        if len(self.recent) >= self.m - 1:
            rl = sorted(self.recent[-(self.m - 1) :].tolist() + [v])
            shift = abs(rl[len(rl) // 2] - med) / scale
            o2 = self.r_shift.norm(shift)
        out = max(o1, o2)
        if self.refractory and self.outs and out <= max(self.outs):
            out_r = 0.0
        else:
            out_r = out
        info = {"median": med, "scale": scale, "z": z, "shift_z": shift, "raw": out}
        return out_r, pt, shift, {**info, "z_point": z}

    def score_one(self, x) -> float:
        return self._compute(_value(x))[0]

    def learn_one(self, x) -> None:
        self.score_learn_one(x)

    def score_learn_one(self, x) -> float:
        v = _value(x)
        out, pt, shift, info = self._compute(v)
        self.last = info
        if pt is not None:
            self.short.append(info["z_point"])
            self.r_point.add(pt)
        if shift is not None:
            self.r_shift.add(shift)
        self.recent.append(v)
        if len(self.recent) > self.m:
            del self.recent[0]
        self.outs.append(info.get("raw", 0.0))
        if len(self.outs) > max(self.refractory, 1):
            del self.outs[0]
        self.win.append(v)
        bisect.insort(self.sorted, v)
        if len(self.win) > self.window:
            o = self.win.pop(0)
            del self.sorted[bisect.bisect_left(self.sorted, o)]
        return out

    @classmethod
    def _contract_data(cls):
        xs = [{"value": 5.0 + (k % 13) * 0.3} for k in range(300)]
        return {"window": 200, "m": 12}, xs, [{"value": 5.5}, {"value": 30.0}]


@register
class HSTAnomalyScorer(StreamModel):
    """River Half-Space Trees on a min-max scaled shingle of the last ``k`` values.

    >>> m = HSTAnomalyScorer(n_trees=5, height=6, window_size=50)
    >>> for k in range(200):
    ...     m.learn_one({"value": float(k % 10)})
    >>> 0.0 <= m.score_one({"value": 5.0}) <= 1.0
    True
    """

    VERSION = "hst-anomaly/1"

    def __init__(
        self, k: int = 5, n_trees: int = 25, height: int = 10, window_size: int = 250, seed: int = 42
    ) -> None:
        from river import anomaly, preprocessing

        self.k = k
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.scaler = preprocessing.MinMaxScaler()
        self.hst = anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size, seed=seed)
        self.buf: deque = deque(maxlen=k)

    def _x(self, v: float) -> dict | None:
        b = list(self.buf)[-(self.k - 1) :] + [v] if self.k > 1 else [v]
        if len(b) < self.k:
            return None
        return {f"l{i}": b[i] for i in range(self.k)}

    def score_one(self, x) -> float:
        z = self._x(_value(x))
        if z is None:
            return 0.0
        return self.hst.score_one(self.scaler.transform_one(z))

    def learn_one(self, x) -> None:
        v = _value(x)
        z = self._x(v)
        self.buf.append(v)
        if z is not None:
            self.scaler.learn_one(z)
            self.hst.learn_one(self.scaler.transform_one(z))

    def score_learn_one(self, x) -> float:
        s = self.score_one(x)
        self.learn_one(x)
        return s

    @classmethod
    def _contract_data(cls):
        return (
            {"n_trees": 3, "height": 4, "window_size": 20},
            [{"value": float(k % 7)} for k in range(60)],
            [{"value": 3.0}, {"value": 50.0}],
        )


@register
class WindowedGaussianScorer(StreamModel):
    """NAB's windowed Gaussian baseline: 1 - Gaussian tail probability over the last ``window`` values.

    (NAB's detector returns the tail probability itself; its complement is
    what a "score >= threshold" detection needs.)

    >>> m = WindowedGaussianScorer(window=100)
    >>> for k in range(100):
    ...     m.learn_one({"value": float(k % 10)})
    >>> m.score_one({"value": 4.5}) < 0.1 < 0.99 < m.score_one({"value": 40.0})
    True
    """

    VERSION = "windowed-gaussian/1"

    def __init__(self, window: int = 1000) -> None:
        self.window = window
        self.buf: deque = deque()
        self.s = 0.0
        self.ss = 0.0

    def score_one(self, x) -> float:
        n = len(self.buf)
        if n == 0:
            return 0.0
        v = _value(x)
        m = self.s / n
        sd = math.sqrt(max(self.ss / n - m * m, 0.0)) or 1e-6
        return 1.0 - math.erfc(abs(v - m) / sd / math.sqrt(2.0))  # 1 - two-sided tail probability

    def learn_one(self, x) -> None:
        v = _value(x)
        self.buf.append(v)
        self.s += v
        self.ss += v * v
        if len(self.buf) > self.window:
            o = self.buf.popleft()
            self.s -= o
            self.ss -= o * o

    def score_learn_one(self, x) -> float:
        s = self.score_one(x)
        self.learn_one(x)
        return s

    @classmethod
    def _contract_data(cls):
        return {"window": 50}, [{"value": float(k % 5)} for k in range(80)], [{"value": 2.0}, {"value": 9.0}]
