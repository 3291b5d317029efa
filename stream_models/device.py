"""Device health: silence judged against the device's own plan, and low battery.

* :class:`SilenceMonitor` - a sleeping node announces ``next_wake`` in its
  status; it is silent only when that time plus a grace (``max(grace_min,
  grace_frac x its wake interval)``) has passed without a word, so a node
  asleep as planned is never "offline".  An always-connected node (no
  ``next_wake``) is judged against its learned message cadence
  (``online_factor`` x the smoothed gap, at least ``online_min_gap_min``),
  and the broker's last-will "offline" status counts once it has stood for
  ``lwt_min`` minutes.
* :class:`BatteryMonitor` - chemistry-aware thresholds (primary Li-SOCl2
  cells in bins sit flat at ~3.6 V and fall off a knee at end of life;
  lamppost Li-ion 3.3-4.2 V; vehicle supply ~14 V, below 12 V the node is on
  its backup cell), sustained for ``sustain`` readings; the learned typical
  voltage tells supply from cell.
"""

from __future__ import annotations

from stream_models.base import StreamModel, register
from stream_models.timeutil import MIN_MS

__all__ = ["SilenceMonitor", "BatteryMonitor", "DEFAULT_LOW_V"]

#: low-battery thresholds by device kind (V)
DEFAULT_LOW_V = {"bin_fill": 3.45, "air": 3.40, "noise": 3.40, "road": 3.40}


@register
class SilenceMonitor(StreamModel):
    """Is the device silent *by its own plan*?

    ``learn_one({"t": ms, "next_wake": ms, "state": ...})`` for every message
    (readings give ``next_wake`` None: unchanged); ``predict_one({"now": ms})``.

    >>> m = SilenceMonitor()
    >>> H = 3_600_000
    >>> m.learn_one({"t": 0, "state": "sleeping", "next_wake": 6 * H})
    >>> m.predict_one({"now": 7 * H})["silent"]       # asleep as announced (grace 1.5 h)
    False
    >>> m.predict_one({"now": 8 * H})["silent"]
    True
    >>> m.learn_one({"t": 8 * H + 1, "state": "sleeping", "next_wake": 14 * H})
    >>> m.predict_one({"now": 9 * H})["silent"]
    False
    """

    VERSION = "silence/1"

    def __init__(
        self,
        grace_min: float = 30.0,
        grace_frac: float = 0.25,
        online_factor: float = 4.0,
        online_min_gap_min: float = 30.0,
        lwt_min: float = 15.0,
    ) -> None:
        self.grace_min = grace_min
        self.grace_frac = grace_frac
        self.online_factor = online_factor
        self.online_min_gap_min = online_min_gap_min
        self.lwt_min = lwt_min
        self.last_heard: int | None = None
        self.next_wake = 0
        self.interval: float | None = None  # smoothed next_wake - t (ms)
        self.gap: float | None = None  # smoothed gap between messages of an online node (ms)
        self.state = "unknown"
        self.offline_since: int | None = None
        self.grace_scale = 1.0

    def learn_one(self, x: dict) -> None:
        t = int(x["t"])
        st = x.get("state")
        if st == "offline":
            # the broker's last will: not a message from the device itself
            if self.last_heard is None or t >= self.last_heard:
                self.offline_since = t
                self.state = "offline"
            return
        if self.last_heard is None or t > self.last_heard:
            if self.last_heard is not None and self.next_wake == 0 and st != "sleeping":
                g = t - self.last_heard
                self.gap = g if self.gap is None else self.gap + 0.1 * (min(g, 6 * 3_600_000) - self.gap)
            self.last_heard = t
        elif st is None:
            return  # an old buffered reading: not news of the device being alive now
        self.offline_since = None
        if st is not None:
            self.state = st
            nw = x.get("next_wake")
            if nw is not None:
                nw = int(nw)
                self.next_wake = nw if st == "sleeping" else 0
                if nw > t:
                    iv = nw - t
                    self.interval = (
                        iv if self.interval is None else self.interval + 0.2 * (iv - self.interval)
                    )

    def expected_by(self) -> int | None:
        if self.last_heard is None and self.offline_since is None:
            return None
        if self.offline_since is not None:
            return self.offline_since + int(self.lwt_min * MIN_MS)
        if self.next_wake and self.next_wake >= self.last_heard:
            iv = self.interval or 0.0
            return self.next_wake + int(self.grace_scale * max(self.grace_min * MIN_MS, self.grace_frac * iv))
        gap = self.gap if self.gap is not None else 15 * MIN_MS
        return self.last_heard + int(
            self.grace_scale * max(self.online_min_gap_min * MIN_MS, self.online_factor * gap)
        )

    def predict_one(self, x: dict) -> dict:
        now = int(x["now"])
        exp = self.expected_by()
        silent = exp is not None and now > exp
        return {
            "silent": silent,
            "expected_by_ms": exp,
            "last_heard_ms": self.last_heard,
            "next_wake_ms": self.next_wake or None,
            "state": self.state,
            "overdue_ms": (now - exp) if silent else 0,
        }

    @classmethod
    def _contract_data(cls):
        H = 3_600_000
        xs = [{"t": k * 6 * H, "state": "sleeping", "next_wake": (k + 1) * 6 * H} for k in range(10)]
        return {"grace_min": 20.0}, xs, [{"now": 60 * H}, {"now": 61 * H}, {"now": 70 * H}]


@register
class BatteryMonitor(StreamModel):
    """Low battery: below the kind's threshold for ``sustain`` readings in a row.

    >>> b = BatteryMonitor(kind="bin_fill")
    >>> for v in (3.61, 3.60, 3.61, 3.58, 3.44, 3.41, 3.30):
    ...     b.learn_one({"bat_v": v})
    >>> r = b.predict_one()
    >>> r["low"], r["threshold_v"], round(r["typical_v"], 2)
    (True, 3.45, 3.6)
    >>> v = BatteryMonitor(kind="road")
    >>> for x in (13.9, 14.0, 13.8, 4.0, 3.98, 3.95):
    ...     v.learn_one({"bat_v": x})
    >>> v.predict_one()["low"], v.predict_one()["supply"]
    (True, 'vehicle')
    """

    VERSION = "battery/1"

    def __init__(
        self, kind: str = "bin_fill", low_v: float | None = None, supply_low_v: float = 12.0, sustain: int = 2
    ) -> None:
        self.kind = kind
        self.low_v = low_v
        self.supply_low_v = supply_low_v
        self.sustain = sustain
        self.typical: float | None = None
        self.n = 0
        self.below = 0
        self.last: float | None = None
        self.supply = "cell"

    def threshold(self) -> float:
        if self.supply == "vehicle":
            return self.supply_low_v
        return self.low_v if self.low_v is not None else DEFAULT_LOW_V.get(self.kind, 3.4)

    def learn_one(self, x: dict) -> None:
        v = float(x["bat_v"])
        self.last = v
        if self.typical is None or ((v > 10.0) == (self.typical > 10.0) and v >= self.threshold()):
            self.n += 1
            a = max(0.05, 1.0 / self.n)
            self.typical = v if self.typical is None else self.typical + a * (v - self.typical)
        if self.typical is not None and self.typical > 10.0:
            self.supply = "vehicle"
        self.below = self.below + 1 if v < self.threshold() else 0

    def predict_one(self, x: dict | None = None) -> dict:
        return {
            "low": self.below >= self.sustain,
            "last_v": self.last,
            "threshold_v": self.threshold(),
            "typical_v": self.typical,
            "supply": self.supply,
            "readings_below": self.below,
        }

    @classmethod
    def _contract_data(cls):
        xs = [{"bat_v": 3.6 - 0.01 * k} for k in range(30)]
        return {"kind": "bin_fill", "sustain": 3}, xs, [None]
