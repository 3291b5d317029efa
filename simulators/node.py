"""The node shell: what turns a model's readings into the bytes a real node sends.

Pure (no MQTT): per device it keeps the batch counter (``bseq``), a drifting
clock that is re-synchronised (NTP) whenever the node connects, a battery,
radio signal strength, a pack buffer for connectivity outages, and it encodes
packs with the firmware's own encoders (``contract.v1.encode_json`` /
``encode_cbor``) and status messages with ``contract.v1.encode_status``.
Delivery faults for reliability tests are injected here and labelled:

* ``offline_burst`` - the node cannot connect for hours, buffers packs (up to
  ``buffer_packs``, oldest dropped and counted in ``dropped``) and bursts
  them on reconnect; always-connected nodes get an ``offline`` last-will
  status 1.5 keep-alives after the outage starts;
* ``dead_battery`` - the battery declines and the node goes silent;
* ``clock_drift`` - the clock runs fast/slow by ``clock_fault_ppm`` and NTP
  fails for a while (timestamps drift by up to minutes);
* ``duplicate`` - a pack delivered twice (QoS 1 redelivery after a lost PUBACK);
* ``out_of_order`` - a pack delivered after newer ones;
* ``malformed`` - a corrupted payload that the contract decoder must reject.

>>> p = NodeParams()
>>> 0 < p.duplicate_rate < 0.01 and p.malformed_rate == 0.0
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from contract import v1
from simulators.models.base import Upload, plan_poisson
from simulators.rng import substream
from simulators.timebase import DAY_MS, HOUR_MS, MIN_MS
from simulators.truth import TruthEvent

if TYPE_CHECKING:
    from simulators.context import SimContext
    from simulators.fleet import DeviceSpec

__all__ = ["NodeParams", "NodeShell", "Message", "MALFORMED_MODES"]

MALFORMED_MODES = ("truncated", "garbage", "bad_base_name", "empty_array", "not_senml", "empty")


class Message(NamedTuple):
    """One MQTT publication: ``(send_time_ms, topic, payload_bytes, qos, retain)``."""

    send_ms: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass
class NodeParams:
    """Device and delivery behaviour shared by every kind."""

    fw: str = "0.3.0"
    latency_ms: tuple[int, int] = (60, 1200)
    duplicate_rate: float = 0.002        #: per pack
    out_of_order_rate: float = 0.001     #: per pack
    malformed_rate: float = 0.0          #: per pack (raise for reliability tests)
    offline_per_device_year: float = 3.0
    offline_hours: tuple[float, float] = (2.0, 36.0)
    buffer_packs: int = 48
    dead_battery_per_device_year: float = 0.1
    dead_battery_decline_days: tuple[float, float] = (1.0, 4.0)
    clock_ppm_sd: dict[str, float] = field(default_factory=lambda: {"esp32": 150.0, "picow": 40.0})
    clock_fault_per_device_year: float = 0.1
    clock_fault_ppm: float = 2000.0
    clock_fault_days: tuple[float, float] = (0.5, 2.5)
    sync_error_ms: float = 40.0
    keepalive_s: int = 60
    status_every_s: int = 3600           #: heartbeat status of always-connected nodes
    #: label every duplicate / out-of-order / malformed message in the truth
    label_delivery_faults: bool = True


_POWER = {"bin_fill": "primary", "air": "lamppost", "noise": "lamppost", "road": "vehicle"}
_RSSI = {"bin_fill": (-97.0, 8.0), "air": (-68.0, 6.0), "noise": (-68.0, 6.0), "road": (-85.0, 8.0)}


class _Noise:
    """Pre-drawn random numbers (fast scalar draws in the per-upload path)."""

    def __init__(self, rng: np.random.Generator, size: int = 1 << 16) -> None:
        self.rng = rng
        self.size = size
        self._u: list[float] = []
        self._n: list[float] = []

    def u(self) -> float:
        if not self._u:
            self._u = self.rng.random(self.size).tolist()
        return self._u.pop()

    def n(self) -> float:
        if not self._n:
            self._n = self.rng.normal(0, 1, self.size).tolist()
        return self._n.pop()


class NodeShell:
    """Device runtime for every device of a fleet (global device indices)."""

    def __init__(self, devices: list["DeviceSpec"], params: NodeParams, ctx: "SimContext") -> None:
        self.p = params
        self.ctx = ctx
        self.devices = devices
        n = self.n = len(devices)
        rng = substream(ctx.seed, "node")
        self.noise = _Noise(substream(ctx.seed, "node", "noise"))
        self.dev_id = [d.device_id for d in devices]
        self.tenant = [d.tenant for d in devices]
        self.kind = [d.kind for d in devices]
        self.topic_up = [v1.topic(d.tenant, d.device_id, v1.UP) for d in devices]
        self.topic_status = [v1.topic(d.tenant, d.device_id, v1.STATUS) for d in devices]
        self.encode = [v1.encode_cbor if d.encoding == "cbor" else v1.encode_json for d in devices]
        self.fw = [d.fw or params.fw for d in devices]
        sd = np.array([params.clock_ppm_sd.get(d.board, 50.0) for d in devices])
        self.ppm = (rng.normal(0, 1, n) * sd).tolist()
        self.sync_off = (rng.normal(0, params.sync_error_ms, n)).tolist()
        self.last_sync = [ctx.start_ms] * n
        self.seq = rng.integers(0, 5000, n).tolist()
        self.power = [_POWER.get(d.kind, "primary") for d in devices]
        self.soc = rng.uniform(0.35, 1.0, n).tolist()
        self.soc_t = [ctx.start_ms] * n
        base = np.array([_RSSI[d.kind][0] for d in devices])
        spread = np.array([_RSSI[d.kind][1] for d in devices])
        self.rssi0 = np.clip(base + rng.normal(0, 1, n) * spread, -125, -45).tolist()
        self.queue: list[list[tuple[int, int, bytes]]] = [[] for _ in range(n)]   # (t_pack, bseq, payload)
        self.dropped = [0] * n
        self.errors = [0] * n
        self.online = [False] * n
        self.last_status = [-(1 << 62)] * n
        self.death = [math.inf] * n
        self.decline = [math.inf] * n
        self.dead_reported = [False] * n
        self.offline: list[list[tuple[int, int]]] = [[] for _ in range(n)]
        self.outage_pending: dict[int, tuple[int, int]] = {}
        self.clock_fault: list[tuple[int, int, float] | None] = [None] * n
        self.timed_msgs: list[Message] = []
        self.truth_q: list[TruthEvent] = []
        self.stats = {"uploads": 0, "packs": 0, "messages": 0, "dropped_dead": 0, "dropped_buffer": 0,
                      "queued": 0, "records": 0, "duplicates": 0, "out_of_order": 0, "malformed": 0}
        self._plan(rng)

    # ---- planning -------------------------------------------------------
    def _truth(self, kind: str, i: int, start: int, end: int | None, at: int, **details: Any) -> TruthEvent:
        d = self.devices[i]
        det = {"device_id": d.device_id, "device_kind": d.kind, "lat": d.lat, "lon": d.lon}
        if getattr(d.asset, "asset_id", None):
            det["asset_id"] = d.asset.asset_id
        det.update(details)
        return TruthEvent(kind, d.device_id, d.tenant, int(start), None if end is None else int(end), det,
                          self.ctx.scenario, int(at))

    def _plan(self, rng: np.random.Generator) -> None:
        p, ctx = self.p, self.ctx
        t0, t1 = ctx.start_ms, ctx.end_ms
        ent, ts = plan_poisson(rng, self.n, p.offline_per_device_year / 365.0, t0, t1)
        hrs = rng.uniform(p.offline_hours[0], p.offline_hours[1], len(ts))
        for i, t, h in zip(ent.tolist(), ts.tolist(), hrs.tolist()):
            end = t + int(h * HOUR_MS)
            if any(a <= t <= b or a <= end <= b for a, b in self.offline[i]):
                continue
            self.offline[i].append((t, end))
            if self.kind[i] in ("air", "noise"):
                # broker publishes the last will after 1.5 keep-alives without traffic
                self.timed_msgs.append(Message(t + int(1.5 * p.keepalive_s * 1000), self.topic_status[i],
                                               v1.encode_status("offline", self.fw[i], (t + 90_000) // 1000),
                                               1, True))
        for lst in self.offline:
            lst.sort()
        ent, ts = plan_poisson(rng, self.n, p.dead_battery_per_device_year / 365.0, t0, t1)
        for i, t in zip(ent.tolist(), ts.tolist()):
            if self.decline[i] < math.inf:
                continue
            self.decline[i] = t
            if self.power[i] == "vehicle":
                self.death[i] = t + int(rng.uniform(2, 6) * HOUR_MS)
            elif self.power[i] == "primary":
                self.death[i] = t + int(rng.uniform(*p.dead_battery_decline_days) * DAY_MS)
            else:           # lamppost: charger failed; death when the cell is flat (emergent)
                self.death[i] = t + int((0.2 + 0.8 * rng.random()) * 2.5 * DAY_MS)
            if self.kind[i] in ("air", "noise") and self.death[i] < t1:
                self.timed_msgs.append(Message(int(self.death[i]) + int(1.5 * p.keepalive_s * 1000),
                                               self.topic_status[i],
                                               v1.encode_status("offline", self.fw[i], int(self.death[i]) // 1000 + 90),
                                               1, True))
        ent, ts = plan_poisson(rng, self.n, p.clock_fault_per_device_year / 365.0, t0, t1)
        for i, t in zip(ent.tolist(), ts.tolist()):
            if self.clock_fault[i] is not None:
                continue
            days = rng.uniform(*p.clock_fault_days)
            sign = 1.0 if rng.random() < 0.5 else -1.0
            ppm = sign * p.clock_fault_ppm
            end = t + int(days * DAY_MS)
            if sign > 0:        # keep a fast clock within the backend's 10 min future allowance (8 min here)
                end = min(end, t + int(480_000 / (ppm * 1e-6)))
            self.clock_fault[i] = (t, end, ppm)
            self.truth_q.append(self._truth("clock_drift", i, t, end, t, ppm=ppm))
        self.timed_msgs.sort()

    # ---- device state ---------------------------------------------------
    def clock_offset(self, i: int, t: int) -> float:
        """Device clock minus true time (ms) at true time ``t``."""
        ppm = self.ppm[i]
        cf = self.clock_fault[i]
        if cf is not None and cf[0] <= t:
            # drift accumulates from the fault start (no successful sync during the fault)
            a = max(cf[0], self.last_sync[i])
            if t <= cf[1]:
                return self.sync_off[i] + ppm * 1e-6 * (a - self.last_sync[i]) + cf[2] * 1e-6 * (t - a)
        return self.sync_off[i] + ppm * 1e-6 * (t - self.last_sync[i])

    def _sync(self, i: int, t: int) -> None:
        cf = self.clock_fault[i]
        if cf is not None and cf[0] <= t <= cf[1]:
            return                    # NTP unreachable during a clock fault
        self.last_sync[i] = t
        self.sync_off[i] = self.noise.n() * self.p.sync_error_ms

    def battery_mv(self, i: int, t: int) -> int:
        """Battery (or supply) voltage in mV at ``t``."""
        pw = self.power[i]
        nz = self.noise
        if pw == "primary":       # Li-SOCl2 D cell: flat ~3.6 V, knee at end of life
            soc = self.soc[i] - (t - self.ctx.start_ms) / DAY_MS / (6 * 365)
            v = 3.52 + 0.12 * soc
            if t >= self.decline[i]:
                f = min(1.0, (t - self.decline[i]) / max(1.0, self.death[i] - self.decline[i]))
                v = v - (v - 2.9) * f ** 1.5
            return int(v * 1000 + nz.n() * 4)
        if pw == "vehicle":
            if t >= self.decline[i]:      # supply lost: on the 3.7 V backup cell
                f = min(1.0, (t - self.decline[i]) / max(1.0, self.death[i] - self.decline[i]))
                return int((4.05 - 0.85 * f) * 1000 + nz.n() * 10)
            return int(13900 + nz.n() * 150)
        # lamppost: Li-ion charged while the street lights are on (part-night power)
        dt_h = (t - self.soc_t[i]) / HOUR_MS
        self.soc_t[i] = t
        s = self.soc[i]
        if t >= self.decline[i]:
            f = min(1.0, (t - self.decline[i]) / max(1.0, self.death[i] - self.decline[i]))
            s = min(s, 0.9 * (1 - f))
        elif self.ctx.weather.lamps_on(t):
            s = min(1.0, s + 0.08 * dt_h)
        else:
            s = max(0.05, s - 0.03 * dt_h)
        self.soc[i] = s
        v = 3.3 + 0.9 * s - 0.15 * (1 - s) ** 3
        return int(v * 1000 + nz.n() * 5)

    def rssi(self, i: int) -> int:
        return int(round(max(-140.0, min(-30.0, self.rssi0[i] + self.noise.n() * 3.0))))

    def is_offline(self, i: int, t: int) -> tuple[int, int] | None:
        for a, b in self.offline[i]:
            if a <= t < b:
                return (a, b)
            if a > t:
                break
        return None

    # ---- per upload -----------------------------------------------------
    def timed(self, t0: int, t1: int) -> list[Message]:
        """Messages that happen at fixed times in [t0, t1) (last wills)."""
        out = []
        while self.timed_msgs and self.timed_msgs[0].send_ms < t1:
            out.append(self.timed_msgs.pop(0))
        return out

    def take_truth(self) -> list[TruthEvent]:
        out, self.truth_q = self.truth_q, []
        return out

    def process(self, u: Upload, out: list[Message]) -> None:
        """Turn one upload into messages appended to ``out`` (possibly none)."""
        i, t = u.dev, u.t_ms
        st = self.stats
        st["uploads"] += 1
        if t >= self.death[i]:
            st["dropped_dead"] += 1
            if not self.dead_reported[i]:
                self.dead_reported[i] = True
                self.truth_q.append(self._truth("dead_battery", i, int(self.death[i]), None, t,
                                                decline_from=int(self.decline[i]), power=self.power[i]))
            return
        outage = self.is_offline(i, t)
        recs = u.records
        recs.append(("bat_v", self.battery_mv(i, t), t))
        recs.append(("rssi", self.rssi(i), t))
        reconnect = bool(self.queue[i]) and outage is None
        if reconnect and self.dropped[i]:
            recs.append(("dropped", self.dropped[i], t))
        packs = self._packs(i, recs)
        if outage is not None:
            q = self.queue[i]
            for bseq, payload in packs:
                q.append((t, bseq, payload))
                st["queued"] += 1
                if len(q) > self.p.buffer_packs:
                    q.pop(0)
                    self.dropped[i] += 1
                    st["dropped_buffer"] += 1
            self.outage_pending[i] = outage
            self.online[i] = False
            return
        nz = self.noise
        lat = self.p.latency_ms
        ts = t + int(lat[0] + nz.u() * (lat[1] - lat[0]))
        burst = self.queue[i]
        if burst:
            a, b = self.outage_pending.pop(i, (t, t))
            self.truth_q.append(self._truth("offline_burst", i, a, b, t, packs=len(burst),
                                            dropped=self.dropped[i], reconnect_ms=t))
            for _, bseq, payload in burst:
                ts = self._emit(i, ts, bseq, payload, u, out)
            self.queue[i] = []
        self._sync(i, t)
        for bseq, payload in packs:
            ts = self._emit(i, ts, bseq, payload, u, out)
        # status
        if u.next_wake_ms or not self.online[i] or t - self.last_status[i] >= self.p.status_every_s * 1000:
            off = self.clock_offset(i, t)
            state = "sleeping" if u.next_wake_ms else "online"
            nw = int((u.next_wake_ms + off) // 1000) if u.next_wake_ms else 0
            payload = v1.encode_status(state, self.fw[i], int((t + off) // 1000), nw, recs_value(recs, "bat_v"),
                                       recs_value(recs, "rssi"), len(self.queue[i]), self.errors[i])
            out.append(Message(ts + 5, self.topic_status[i], payload, 1, True))
            st["messages"] += 1
            self.last_status[i] = t
        self.online[i] = not u.next_wake_ms

    def _packs(self, i: int, recs: list) -> list[tuple[int, bytes]]:
        """Device-clock timestamps, splitting and encoding.

        (metric, time) is made unique within an upload (the idempotency key;
        a clash moves the later record by 1 ms); the clock maps distinct true
        milliseconds to distinct device ones.
        """
        if len({(r[0], r[2]) for r in recs}) != len(recs):
            seen: set = set()
            fixed = []
            for nm, q, tt in recs:
                while (nm, tt) in seen:
                    tt += 1
                seen.add((nm, tt))
                fixed.append((nm, q, tt))
            recs = fixed
        t_first = min(r[2] for r in recs)
        t_last = max(r[2] for r in recs)
        off0 = self.clock_offset(i, t_first)
        off1 = self.clock_offset(i, t_last)
        enc = self.encode[i]
        did = self.dev_id[i]
        out = []
        nrec = len(recs)
        if off0 == off1 or t_last == t_first:
            o = int(off0)
            chunks = [recs] if nrec <= v1.MAX_RECORDS else [recs[k:k + v1.MAX_RECORDS]
                                                             for k in range(0, nrec, v1.MAX_RECORDS)]
            for chunk in chunks:
                base = (min(r[2] for r in chunk) + o) // 1000 * 1000
                d = o - base
                seq = self.seq[i]
                self.seq[i] = (seq + 1) & 0xFFFFFFFF
                out.append((seq, enc(did, base // 1000, seq, [(nm, q, tt + d) for nm, q, tt in chunk])))
        else:
            slope = (off1 - off0) / (t_last - t_first)
            dev = [(nm, q, int(tt + off0 + slope * (tt - t_first))) for nm, q, tt in recs]
            for k in range(0, nrec, v1.MAX_RECORDS):
                chunk = dev[k:k + v1.MAX_RECORDS]
                base = min(r[2] for r in chunk) // 1000 * 1000
                seq = self.seq[i]
                self.seq[i] = (seq + 1) & 0xFFFFFFFF
                out.append((seq, enc(did, base // 1000, seq, [(nm, q, ms - base) for nm, q, ms in chunk])))
        self.stats["packs"] += len(out)
        self.stats["records"] += nrec
        return out

    def _emit(self, i: int, ts: int, bseq: int, payload: bytes, u: Upload, out: list[Message]) -> int:
        p, nz, st = self.p, self.noise, self.stats
        topic = self.topic_up[i]
        send = ts
        bad = False
        if p.malformed_rate and nz.u() < p.malformed_rate:
            bad = True
            mode = MALFORMED_MODES[int(nz.u() * len(MALFORMED_MODES)) % len(MALFORMED_MODES)]
            payload = corrupt(payload, mode, self.dev_id[i])
            st["malformed"] += 1
            self.errors[i] += 1
            if p.label_delivery_faults:
                self.truth_q.append(self._truth("malformed", i, send, None, send, mode=mode, bseq=bseq,
                                                topic=topic, send_ms=send))
        elif p.out_of_order_rate and nz.u() < p.out_of_order_rate:
            gap = (u.next_wake_ms - u.t_ms) if u.next_wake_ms else 15 * MIN_MS
            send = ts + int(max(gap, MIN_MS) * (1.0 + 1.5 * nz.u()))
            st["out_of_order"] += 1
            if p.label_delivery_faults:
                self.truth_q.append(self._truth("out_of_order", i, ts, send, ts, bseq=bseq, topic=topic,
                                                send_ms=send))
        out.append(Message(send, topic, payload, 1, False))
        st["messages"] += 1
        if p.duplicate_rate and nz.u() < p.duplicate_rate and not bad:
            dup = send + 200 + int(nz.u() * 2800)
            out.append(Message(dup, topic, payload, 1, False))
            st["messages"] += 1
            st["duplicates"] += 1
            if p.label_delivery_faults:
                self.truth_q.append(self._truth("duplicate", i, dup, None, send, bseq=bseq, topic=topic,
                                                send_ms=dup))
        return ts + 15

    def finish(self, t_end: int) -> list[TruthEvent]:
        out = self.take_truth()
        for i, (a, b) in sorted(self.outage_pending.items()):
            if self.queue[i]:
                out.append(self._truth("offline_burst", i, a, None, t_end, packs=len(self.queue[i]),
                                       dropped=self.dropped[i], reconnect_ms=None))
        for i in range(self.n):
            if not self.dead_reported[i] and self.death[i] < t_end:
                self.dead_reported[i] = True
                out.append(self._truth("dead_battery", i, int(self.death[i]), None, t_end,
                                       decline_from=int(self.decline[i]), power=self.power[i]))
        return out


def recs_value(recs: list, name: str) -> int:
    for r in reversed(recs):
        if r[0] == name:
            return r[1]
    return 0


def corrupt(payload: bytes, mode: str, device_id: str) -> bytes:
    """A malformed version of ``payload`` that the contract decoder rejects as a whole pack.

    >>> from contract.decode import decode, PackError
    >>> good = v1.encode_json("bin-000001", 1767225600, 1, [("fill", 500, 0)])
    >>> codes = []
    >>> for m in MALFORMED_MODES:
    ...     try:
    ...         decode(corrupt(good, m, "bin-000001"), device_id="bin-000001", received_ms=1767225600000)
    ...     except PackError as e:
    ...         codes.append(e.code)
    >>> codes
    ['bad_encoding', 'bad_encoding', 'bad_base_name', 'not_a_pack', 'not_a_pack', 'empty']
    """
    if mode == "truncated":
        return payload[: max(1, len(payload) // 2)]
    if mode == "garbage":
        return b"\x00\xff" + payload[2:40]
    if mode == "bad_base_name":
        if payload[:1] == b"[":
            return payload.replace(b'"bn":"' + device_id.encode(), b'"bn":"x' + device_id.encode(), 1)
        return payload.replace(device_id.encode() + b":", b"x" + device_id.encode()[1:] + b":", 1)
    if mode == "empty_array":
        return b"[]"
    if mode == "not_senml":
        return b'{"v":1}'
    return b""
