"""What the backend should store for a simulated run (for end-to-end ingest tests).

Decodes every ``up`` message with the contract decoder exactly as ingest
does and reduces them to the idempotency key (device, metric, time): the
rows an ingest that is correct, idempotent and loses nothing must hold.
Malformed payloads are counted, not raised.  A sketch of the end-to-end
test the lead can add once ingest runs::

    sim = Simulation(build_fleet(load_scenario("tiny")), start_ms=..., days=0.5)
    msgs = []
    run(sim, TeePublisher(MqttPublisher(broker.url), msgs))      # or collect batches first
    ...wait for ingest...
    assert rows_in_db == expected_readings(msgs, sim.fleet).readings

>>> from simulators.scenario import load_scenario
>>> from simulators.fleet import build_fleet
>>> from simulators.engine import Simulation
>>> sim = Simulation(build_fleet(load_scenario("tiny")), start_ms=1767225600000, days=0.05)
>>> exp = expected_readings(list(sim.messages()), sim.fleet)
>>> exp.packs > 0 and len(exp.readings) > exp.packs and exp.malformed == 0
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from contract import v1
from contract.decode import PackError, decode
from simulators.fleet import Fleet
from simulators.node import Message

__all__ = ["Expected", "expected_readings", "TeePublisher"]


@dataclass
class Expected:
    #: (tenant, device_id, metric, time_ms) -> value
    readings: dict[tuple[str, str, str, int], float] = field(default_factory=dict)
    packs: int = 0
    malformed: int = 0
    duplicate_readings: int = 0
    #: (tenant, device_id) -> set of bseq seen
    seqs: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    status: dict[tuple[str, str], bytes] = field(default_factory=dict)


def expected_readings(messages: Iterable[Message | tuple], fleet: Fleet | None = None) -> Expected:
    """Reduce published messages to the rows the backend should hold."""
    kinds = {d.device_id: d.kind for d in fleet.devices} if fleet is not None else {}
    out = Expected()
    for m in messages:
        send_ms, topic, payload = m[0], m[1], m[2]
        if send_ms is None:            # unknown send time (TeePublisher): no "future" check
            send_ms = 1 << 60
        tenant, dev, ch = v1.parse_topic(topic)
        if ch == v1.STATUS:
            out.status[(tenant, dev)] = payload
            continue
        if ch != v1.UP:
            continue
        try:
            pack = decode(payload, device_id=dev, received_ms=send_ms, kind=kinds.get(dev))
        except PackError:
            out.malformed += 1
            continue
        out.packs += 1
        if pack.seq is not None:
            out.seqs.setdefault((tenant, dev), set()).add(pack.seq)
        for r in pack.readings:
            key = (tenant, dev, r.metric, r.time_ms)
            if key in out.readings:
                out.duplicate_readings += 1
            out.readings[key] = r.value
    return out


class TeePublisher:
    """Publishes through ``inner`` and also keeps (None, topic, payload, qos, retain) in ``messages``."""

    def __init__(self, inner, keep: list | None = None) -> None:
        self.inner = inner
        self.messages = keep if keep is not None else []
        self.stats = inner.stats

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.messages.append((None, topic, payload, qos, retain))
        self.inner.publish(topic, payload, qos, retain)

    def poll(self, timeout: float = 0.0) -> None:
        self.inner.poll(timeout)

    def flush(self, timeout: float = 60.0) -> bool:
        return self.inner.flush(timeout)

    def close(self) -> None:
        self.inner.close()
