"""Running a simulation: pacing (accelerated or real time), publishing and truth sinks.

:func:`run` drains a :class:`~simulators.engine.Simulation` into a
:class:`~simulators.publisher.Publisher`.  ``speed`` is simulated seconds per
wall second (1 = real time, 3600 = an hour per second); 0 or ``None`` means
as fast as possible.  Truth events go to the ``truth`` callbacks as each
window is generated; a ``progress`` callback gets (simulated ms done, total).

>>> from simulators.scenario import load_scenario
>>> from simulators.fleet import build_fleet
>>> from simulators.engine import Simulation
>>> from simulators.publisher import ListPublisher
>>> sim = Simulation(build_fleet(load_scenario("tiny")), start_ms=1767225600000, days=0.1)
>>> pub, got = ListPublisher(), []
>>> st = run(sim, pub, truth=got.extend)
>>> st.messages == len(pub.messages) > 0 and st.readings > st.messages
True
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

from simulators.engine import Simulation
from simulators.publisher import Publisher
from simulators.timebase import DAY_MS
from simulators.truth import TruthEvent

__all__ = ["RunStats", "run", "parse_speed"]


@dataclass
class RunStats:
    devices: int
    sim_start_ms: int
    sim_end_ms: int
    sim_days: float
    speed: float
    messages: int
    payload_bytes: int
    readings: int
    truth_events: int
    wall_s: float
    messages_per_s: float
    readings_per_s: float
    sim_days_per_min: float
    acked: bool
    by_channel: dict

    def to_dict(self) -> dict:
        return asdict(self)


def parse_speed(v: str | float | int | None) -> float:
    """'max' / 0 / None -> 0.0 (as fast as possible), else the factor.

    >>> parse_speed("max"), parse_speed("3600"), parse_speed(1)
    (0.0, 3600.0, 1.0)
    """
    if v is None:
        return 0.0
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("max", "fast", "0", ""):
            return 0.0
        if s in ("realtime", "real-time", "rt"):
            return 1.0
        v = float(s)
    f = float(v)
    if f < 0:
        raise ValueError("speed must be >= 0")
    return f


def run(sim: Simulation, publisher: Publisher, *, speed: float | str | None = 0.0,
        truth: Callable[[list[TruthEvent]], object] | Iterable[Callable] | None = None,
        progress: Callable[[int, int], object] | None = None, flush_timeout: float = 120.0,
        should_stop: Callable[[], bool] | None = None) -> RunStats:
    """Publish everything ``sim`` produces, paced by ``speed``; returns figures."""
    spd = parse_speed(speed)
    sinks = [] if truth is None else ([truth] if callable(truth) else list(truth))
    t0_wall = time.monotonic()
    sim0 = sim.start_ms
    total = sim.end_ms - sim.start_ms
    n_msgs = 0
    n_truth = 0
    pub = publisher.publish
    for batch in sim.batches():
        for s in sinks:
            s(batch.truth)
        n_truth += len(batch.truth)
        if spd > 0:
            stopped = False
            for m in batch.messages:
                target = t0_wall + (m.send_ms - sim0) / 1000.0 / spd
                while True:
                    now = time.monotonic()
                    if now >= target:
                        break
                    publisher.poll(min(0.05, target - now))
                    if should_stop is not None and should_stop():
                        stopped = True
                        break
                if stopped:
                    break
                pub(m.topic, m.payload, m.qos, m.retain)
                n_msgs += 1
        else:
            for m in batch.messages:
                pub(m.topic, m.payload, m.qos, m.retain)
            n_msgs += len(batch.messages)
        if progress is not None:
            progress(min(total, batch.t1 - sim0), total)
        if should_stop is not None and should_stop():
            break
    acked = publisher.flush(flush_timeout)
    wall = max(1e-9, time.monotonic() - t0_wall)
    readings = sim.shell.stats["records"]
    days = total / DAY_MS
    return RunStats(devices=len(sim.fleet.devices), sim_start_ms=sim.start_ms, sim_end_ms=sim.end_ms,
                    sim_days=round(days, 4), speed=spd, messages=n_msgs, payload_bytes=sim.stats.payload_bytes,
                    readings=readings, truth_events=n_truth, wall_s=round(wall, 3),
                    messages_per_s=round(n_msgs / wall, 1), readings_per_s=round(readings / wall, 1),
                    sim_days_per_min=round(days / (wall / 60.0), 3), acked=acked,
                    by_channel=dict(sim.stats.by_channel))
