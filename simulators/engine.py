"""The simulation engine: messages and truth events in simulated-time order.

Pure and deterministic for a seed: no clocks, no sockets.  The engine steps
through windows of simulated time (default one hour), lets each kind model
produce its uploads and truth, passes the uploads in time order through the
node shell (clocks, batteries, buffering, encoding, delivery faults) and
yields every message whose send time falls in the window; messages delayed
past it (latency, out-of-order, bursts) are held in a heap until their turn.
Pacing (accelerated or real time) is the runner's job, so the same stream
serves both.

>>> from simulators.scenario import load_scenario
>>> from simulators.fleet import build_fleet
>>> sim = Simulation(build_fleet(load_scenario("tiny")), start_ms=1767225600000, days=0.25)
>>> items = list(sim)
>>> msgs = [m for m in items if isinstance(m, Message)]
>>> all(a.send_ms <= b.send_ms for a, b in zip(msgs, msgs[1:]))
True
>>> send_ms, topic, payload, qos, retain = msgs[0]
>>> topic.startswith("ss/v1/tiny-town/") and qos == 1
True
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

from simulators.context import SimContext, make_context
from simulators.fleet import Fleet
from simulators.models.air import AirModel
from simulators.models.bins import BinModel
from simulators.models.noise import NoiseModel
from simulators.models.road import RoadModel
from simulators.node import Message, NodeParams, NodeShell
from simulators.timebase import HOUR_MS
from simulators.truth import TruthEvent

__all__ = ["Simulation", "Batch", "Message", "SimStats"]


class Batch(NamedTuple):
    """One window of simulated time: its messages (send-time order) and the truth learned in it."""

    t0: int
    t1: int
    messages: list[Message]
    truth: list[TruthEvent]


@dataclass
class SimStats:
    windows: int = 0
    messages: int = 0
    payload_bytes: int = 0
    truth_events: int = 0
    after_end: int = 0
    by_channel: dict[str, int] = field(default_factory=dict)


class Simulation:
    """A deterministic run of ``fleet`` over ``days`` from ``start_ms`` (UTC ms).

    ``node`` overrides :class:`~simulators.node.NodeParams` fields for this
    run (e.g. ``{"malformed_rate": 0.01}`` for reliability tests).  Messages
    due at or after the end (uploads of samples taken just before it, packs
    delayed past it) are not sent unless ``drain`` is true; they are counted
    in ``stats.after_end``.
    """

    def __init__(self, fleet: Fleet, *, start_ms: int, days: float = 1.0, seed: int | None = None,
                 window_ms: int = HOUR_MS, node: dict | None = None, drain: bool = False) -> None:
        self.drain = drain
        self.fleet = fleet
        self.ctx: SimContext = make_context(fleet, start_ms, days, seed)
        sc = fleet.scenario
        params = sc.node
        if node:
            params = NodeParams(**{**vars(sc.node), **node})
        self.node_params = params
        self.window_ms = int(window_ms)
        devs = fleet.devices
        self.shell = NodeShell(devs, params, self.ctx)
        kinds = {d.kind for d in devs}
        self.models = []
        if "bin_fill" in kinds:
            self.models.append(BinModel(devs, sc.bins, self.ctx))
        if "air" in kinds:
            self.models.append(AirModel(devs, sc.air, self.ctx))
        if "noise" in kinds:
            self.models.append(NoiseModel(devs, sc.noise, self.ctx))
        if "road" in kinds:
            self.models.append(RoadModel(devs, sc.road, self.ctx))
        self.stats = SimStats()
        self._heap: list[tuple[int, int, Message]] = []
        self._seq = 0
        self._done = False

    @property
    def start_ms(self) -> int:
        return self.ctx.start_ms

    @property
    def end_ms(self) -> int:
        return self.ctx.end_ms

    def batches(self) -> Iterator[Batch]:
        """Windows of messages and truth, in simulated-time order (single use)."""
        if self._done:
            raise RuntimeError("a Simulation can be iterated once; build a new one")
        self._done = True
        ctx, W = self.ctx, self.window_ms
        t = ctx.start_ms
        last = t
        while t < ctx.end_ms:
            t1 = min(ctx.end_ms, (t // W + 1) * W)
            ups = []
            truth: list[TruthEvent] = []
            for m in self.models:
                u, tr = m.advance(t, t1)
                ups.extend(u)
                truth.extend(tr)
            ups.sort(key=lambda u: (u.t_ms, u.dev))
            out: list[Message] = []
            for u in ups:
                self.shell.process(u, out)
            truth.extend(self.shell.take_truth())
            out.extend(self.shell.timed(t, t1))
            msgs, last = self._release(out, t1, last)
            truth.sort(key=lambda e: (e.at_ms, e.kind, e.entity))
            self._count(msgs, truth)
            yield Batch(t, t1, msgs, truth)
            t = t1
        truth = []
        for m in self.models:
            truth.extend(m.finish(ctx.end_ms))
        truth.extend(self.shell.finish(ctx.end_ms))
        truth.sort(key=lambda e: (e.at_ms, e.kind, e.entity))
        msgs, last = self._release([], (1 << 62) if self.drain else ctx.end_ms, last)
        self.stats.after_end = len(self._heap)
        self._heap.clear()
        self._count(msgs, truth)
        yield Batch(ctx.end_ms, max(ctx.end_ms, last), msgs, truth)

    def _release(self, out: list[Message], t1: int, last: int) -> tuple[list[Message], int]:
        heap = self._heap
        for m in out:
            self._seq += 1
            heapq.heappush(heap, (m.send_ms, self._seq, m))
        msgs = []
        while heap and heap[0][0] < t1:
            _, _, m = heapq.heappop(heap)
            if m.send_ms < last:               # never go back in time
                m = m._replace(send_ms=last)
            last = m.send_ms
            msgs.append(m)
        return msgs, last

    def _count(self, msgs: list[Message], truth: list[TruthEvent]) -> None:
        st = self.stats
        st.windows += 1
        st.messages += len(msgs)
        st.truth_events += len(truth)
        for m in msgs:
            st.payload_bytes += len(m.payload)
            ch = m.topic.rsplit("/", 1)[-1]
            st.by_channel[ch] = st.by_channel.get(ch, 0) + 1

    def __iter__(self) -> Iterator[Message | TruthEvent]:
        """Messages and truth events merged by time (truth at the time the simulator learned it)."""
        for b in self.batches():
            truth = b.truth
            j = 0
            for m in b.messages:
                while j < len(truth) and truth[j].at_ms <= m.send_ms:
                    yield truth[j]
                    j += 1
                yield m
            yield from truth[j:]

    def messages(self) -> Iterator[Message]:
        for b in self.batches():
            yield from b.messages
