"""Gateway health: a retained JSON message on the central broker, a local
``health.json`` for ``gateway status``, and Prometheus metrics.

Health topic: ``ss/v1/<tenant>/<gateway_id>/health``, retained, QoS 1, every
``health_interval_s``; the central connection's last will puts
``{"gateway": …, "state": "offline"}`` there. It sits in the tenant's subtree
(so one ACL grant ``ss/v1/<tenant>/#`` covers the gateway) but on a channel
that is not a device channel: the central ingest subscribes only to ``+/up``
and ``+/status`` and :func:`contract.v1.parse_topic` rejects it, so a gateway
is never mistaken for a device.

Payload fields (fixed order)::

    gateway, state ("online"), t (Unix s), queue_depth (messages),
    queue_readings, queue_bytes (pages in use), max_bytes,
    oldest_age_s (oldest buffered message, 0 when empty), forward_rate
    (messages/s acked by the centre over the last interval), forwarded
    (total since start), central_connected, draining (backlog lane busy),
    devices (known devices behind this gateway), devices_active_1h,
    refusing (device listener closed: queue full), refusals (times closed),
    held (messages left unacked at the hard bound), quarantined (invalid
    messages forwarded with ss-invalid since start), central_rejects
    (PUBACKs with a failure reason, e.g. not authorised: kept and retried)

>>> h = Health(gateway="gw-1", t=1767225600, queue_depth=3, queue_readings=60, queue_bytes=40960,
...            max_bytes=10**9, oldest_age_s=1.5)
>>> health_payload(h)[:60]
b'{"gateway":"gw-1","state":"online","t":1767225600,"queue_dep'
>>> health_topic("leeds", "gw-1")
'ss/v1/leeds/gw-1/health'
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import msgspec
from prometheus_client import Counter, Gauge, Histogram

from contract import v1

HEALTH_CHANNEL = "health"


def health_topic(tenant: str, gateway_id: str) -> str:
    return v1.PREFIX + tenant + "/" + gateway_id + "/" + HEALTH_CHANNEL


@dataclass(slots=True)
class Health:
    gateway: str
    t: int
    state: str = "online"
    queue_depth: int = 0
    queue_readings: int = 0
    queue_bytes: int = 0
    max_bytes: int = 0
    oldest_age_s: float = 0.0
    forward_rate: float = 0.0
    forwarded: int = 0
    central_connected: bool = False
    draining: bool = False
    devices: int = 0
    devices_active_1h: int = 0
    refusing: bool = False
    refusals: int = 0
    held: int = 0
    quarantined: int = 0
    central_rejects: int = 0


def health_payload(h: Health) -> bytes:
    d = asdict(h)
    # fixed key order: gateway, state, t first
    out = {"gateway": d.pop("gateway"), "state": d.pop("state"), "t": d.pop("t")}
    out.update(d)
    return msgspec.json.encode(out)


def offline_payload(gateway_id: str) -> bytes:
    return msgspec.json.encode({"gateway": gateway_id, "state": "offline"})


def write_health_file(path: Path, payload: bytes) -> None:
    """Atomically replace ``path`` (read by ``gateway status``)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


# --- Prometheus (one set per process) ---------------------------------------

QUEUE_DEPTH = Gauge("streetsense_gateway_queue_depth", "Messages buffered in the gateway queue")
QUEUE_READINGS = Gauge("streetsense_gateway_queue_readings", "Readings buffered in the gateway queue")
QUEUE_BYTES = Gauge("streetsense_gateway_queue_bytes", "Bytes of queue pages in use (bounded by max_bytes)")
OLDEST_AGE = Gauge("streetsense_gateway_oldest_age_seconds", "Age of the oldest buffered message")
FORWARD_RATE = Gauge("streetsense_gateway_forward_rate", "Messages per second acked by the central broker")
FORWARDED = Counter("streetsense_gateway_forwarded", "Messages acked by the central broker (and deleted)")
FORWARDED_READINGS = Counter("streetsense_gateway_forwarded_readings", "Readings acked by the central broker")
RECEIVED = Counter("streetsense_gateway_received", "Messages stored from devices, by channel", ["channel"])
QUARANTINED = Counter("streetsense_gateway_quarantined", "Invalid messages (forwarded, marked), by reason",
                      ["reason"])
RATE_LIMITED = Counter("streetsense_gateway_rate_limited_readings",
                       "Readings over their device's rate limit (forwarded marked rate_limited)")
REFUSALS = Counter("streetsense_gateway_refusals", "Times the device listener was closed: queue full")
REFUSING = Gauge("streetsense_gateway_refusing", "1 while devices are refused because the queue is full")
HELD = Counter("streetsense_gateway_held", "Messages left unacked in the local broker at the hard bound")
CENTRAL_UP = Gauge("streetsense_gateway_central_connected", "1 while connected to the central broker")
DEVICES = Gauge("streetsense_gateway_devices", "Devices known behind this gateway")
DOWNLINK = Counter("streetsense_gateway_downlink", "cfg/cmd messages relayed to devices", ["channel"])
FORWARD_LATENCY = Histogram("streetsense_gateway_forward_latency_seconds",
                            "Gateway receive to central PUBACK, per message",
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300, 3600, 86400))
