"""Shared types for the behaviour models (pure: no MQTT, no database).

A model owns the devices of one kind.  :meth:`KindModel.advance` simulates a
window ``[t0, t1)`` of UTC milliseconds and returns the device uploads that
happen in it (records with *true* times; the node shell adds clocks,
batteries, packing and delivery faults) and the truth events it learned.

>>> qarray("fill", np.array([0.6254, -0.0005, 5.0])).tolist()     # clipped to the valid range [-1, 2]
[625, -1, 2000]
>>> [v1.quantize("fill", x) for x in (0.6254, -0.0005)]
[625, -1]
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np

from contract import v1
from simulators.truth import TruthEvent

__all__ = ["Upload", "KindModel", "qarray", "plan_poisson", "Record"]

#: (metric name, quantized value, true UTC ms)
Record = tuple[str, int, int]


class Upload(NamedTuple):
    """One transmission by one device."""

    t_ms: int                 #: true UTC time of transmission
    dev: int                  #: global device index (``Fleet.devices[dev]``)
    records: list[Record]     #: readings with true times (the shell converts to device clock)
    next_wake_ms: int = 0     #: when the device will next wake (0 = always connected)
    alarm: bool = False       #: sent out of schedule because of an alarm
    state: str = "sleeping"   #: status after this upload: "sleeping" or "online"


class KindModel(Protocol):
    kind: str

    def advance(self, t0: int, t1: int) -> tuple[list[Upload], list[TruthEvent]]: ...

    def finish(self, t_end: int) -> list[TruthEvent]: ...


class PeriodicModel:
    """Shared stepping for models that sample on a fixed period ``P`` (ms): each
    step ``_step(s, ups)`` handles the slot starting at ``s``; truth events are
    released once their start falls before the end of the window."""

    n: int
    P: int
    U: int
    truth_out: list[TruthEvent]

    def _step(self, s: int, ups: list[Upload]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def advance(self, t0: int, t1: int) -> tuple[list[Upload], list[TruthEvent]]:
        ups: list[Upload] = []
        if self.n:
            P = self.P
            s = -(-t0 // P) * P
            while s < t1:
                self._step(s, ups)
                s += P
        out = [e for e in self.truth_out if e.start_ms < t1]
        self.truth_out = [e for e in self.truth_out if e.start_ms >= t1]
        return ups, out

    def _upload(self, k: int, t: np.ndarray, ups: list[Upload]) -> None:
        """Devices whose upload slot is step ``k`` send their buffered samples (mains-powered nodes:
        delivered a fraction of a second to a few seconds after the slot)."""
        up = np.nonzero((k % self.U) == self.slot)[0]
        if len(up) == 0:
            return
        recs = self.ring.records(up, k)
        delay = self.rng.integers(200, 2500, len(up)).tolist()
        tl = t[up].tolist()
        for j, i in enumerate(up.tolist()):
            ups.append(Upload(tl[j] + delay[j], int(self.gidx[i]), recs[j], 0, False, "online"))

    def finish(self, t_end: int) -> list[TruthEvent]:
        out, self.truth_out = self.truth_out, []
        return out


def qarray(name: str, x: np.ndarray) -> np.ndarray:
    """Vectorised :func:`contract.v1.quantize`, clipped to the metric's valid range.

    Identical to ``v1.quantize`` element-wise for in-range values (same float
    arithmetic: ``x * 10**dec`` then half away from zero).
    """
    row = v1.BY_NAME[name]
    scale = 10 ** row[3]
    y = np.asarray(x, dtype=np.float64) * scale
    q = np.where(y >= 0, np.floor(y + 0.5), -np.floor(-y + 0.5))
    return np.clip(q, row[4] * scale, row[5] * scale).astype(np.int64)


def plan_poisson(rng: np.random.Generator, n_entities: int, rate_per_entity_day: float,
                 t0: int, t1: int) -> tuple[np.ndarray, np.ndarray]:
    """Poisson events over entities and time: (entity index, start ms) sorted by time.

    >>> r = np.random.default_rng(1)
    >>> ent, t = plan_poisson(r, 1000, 0.01, 0, 10 * 86_400_000)
    >>> 60 < len(t) < 140 and bool((np.diff(t) >= 0).all())
    True
    """
    days = max(0.0, (t1 - t0) / 86_400_000)
    n = int(rng.poisson(max(0.0, rate_per_entity_day) * n_entities * days)) if n_entities else 0
    ent = rng.integers(0, max(1, n_entities), n)
    t = rng.integers(t0, max(t0 + 1, t1), n)
    order = np.argsort(t, kind="stable")
    return ent[order], t[order]


class SampleRing:
    """Per-device ring buffer of quantized samples, one column per sample step.

    ``put`` stores a step's samples for every device; ``records`` returns, for
    the given devices, the records of the last ``width`` steps (oldest first),
    skipping steps before the first one stored.

    >>> r = SampleRing(2, 3, ("pm25", "rh"))
    >>> for k in range(4):
    ...     r.put(k, np.array([k * 10, k * 10 + 1]), {"pm25": np.array([k, k]), "rh": np.array([50, 51])})
    >>> r.records(np.array([1]), 3)[0][:2]
    [('pm25', 1, 11), ('rh', 51, 11)]
    """

    def __init__(self, n: int, width: int, names: tuple[str, ...]) -> None:
        self.width = width
        self.names = names
        self.t = np.zeros((n, width), dtype=np.int64)
        self.v = {nm: np.zeros((n, width), dtype=np.int64) for nm in names}
        self.first: int | None = None

    def put(self, k: int, t: np.ndarray, q: dict[str, np.ndarray]) -> None:
        if self.first is None:
            self.first = k
        c = k % self.width
        self.t[:, c] = t
        for nm in self.names:
            self.v[nm][:, c] = q[nm]

    def records(self, idx: np.ndarray, k: int) -> list[list[Record]]:
        first = self.first if self.first is not None else k
        order = [c % self.width for c in range(k - self.width + 1, k + 1) if c >= first]
        T = self.t[idx][:, order].tolist()
        cols = [(nm, self.v[nm][idx][:, order].tolist()) for nm in self.names]
        out = []
        for j in range(len(idx)):
            recs: list[Record] = []
            tj = T[j]
            for c in range(len(order)):
                tt = tj[c]
                for nm, vals in cols:
                    recs.append((nm, vals[j][c], tt))
            out.append(recs)
        return out

    def last_time(self, idx: np.ndarray, k: int) -> list[int]:
        return self.t[idx, k % self.width].tolist()
