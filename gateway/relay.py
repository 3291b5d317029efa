"""Downlink: retained config and commands from the centre to the devices.

The gateway subscribes on the central broker to ``ss/v1/<tenant>/<device>/cfg``
and ``…/cmd`` for each device behind it (the ``devices`` setting plus every
device it has heard from, remembered in the queue file), or to ``+`` for the
whole tenant with ``relay_all``. Each message is republished on the local
broker at QoS 1, cfg retained (so a node that wakes tomorrow still finds it),
cmd not. The central message is acknowledged only after the local broker's
PUBACK (manual acks), so a gateway crash in between means a redelivery, never
a loss; a node may see a command twice (at-least-once, like every QoS 1
path), and the firmware ignores a cfg revision it already has.

cfg subscriptions use the default retain handling: the centre resends the
retained cfg at every (re)subscription, which re-creates local retained
config if the local broker's store was lost; republishing it is idempotent.

Upward, device ``status`` and ``ack`` go through the durable queue like
telemetry (see :mod:`gateway.service`).

>>> r = Relay("leeds", devices=["bin-1"])
>>> [f for f, _ in r.filters(["bin-1"])]
['ss/v1/leeds/bin-1/cfg', 'ss/v1/leeds/bin-1/cmd']
>>> r.note_device("bin-2"), r.note_device("bin-2"), sorted(r.unsubscribed)
(True, False, ['bin-1', 'bin-2'])
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from contract import v1
from gateway import health as hm
from streetsense.logs import get_logger

log = get_logger("gateway.relay")

#: topic filters per SUBSCRIBE packet
SUB_CHUNK = 100


class Down(NamedTuple):
    topic: str
    payload: bytes
    retain: bool
    channel: str
    central_mid: int
    qos: int
    central: mqtt.Client


class Relay:
    """cfg/cmd from the central client to the local client; both driven by the service loop."""

    def __init__(self, tenant: str, devices: Iterable[str] = (), relay_all: bool = False) -> None:
        self.tenant = tenant
        self.relay_all = relay_all
        self.known: set[str] = set()
        self.unsubscribed: set[str] = set()
        self.down: deque[Down] = deque()
        self.local_inflight: dict[int, Down] = {}
        self.central: mqtt.Client | None = None
        self.local: mqtt.Client | None = None
        self.relayed = 0
        for d in devices:
            self.note_device(d)

    def filters(self, devices: Iterable[str]) -> list[tuple[str, SubscribeOptions]]:
        opts = SubscribeOptions(qos=1)
        if self.relay_all:
            return [(v1.PREFIX + self.tenant + "/+/" + ch, opts) for ch in (v1.CFG, v1.CMD)]
        return [(v1.topic(self.tenant, d, ch), opts) for d in sorted(devices) for ch in (v1.CFG, v1.CMD)]

    def note_device(self, device_id: str) -> bool:
        """A device seen behind this gateway; True if it is new."""
        if device_id in self.known or not v1.valid_id(device_id):
            return False
        self.known.add(device_id)
        self.unsubscribed.add(device_id)
        return True

    # --- central side ----------------------------------------------------

    def central_connected(self, c: mqtt.Client) -> None:
        """(Re)subscribe everything on a fresh central connection."""
        self.central = c
        self.unsubscribed = set(self.known)
        c.on_message = self._on_central_message
        if self.relay_all:
            c.subscribe(self.filters(()))
            self.unsubscribed.clear()
        self._subscribe_new()

    def central_lost(self) -> None:
        # Not yet acked centrally, so the centre redelivers them on reconnect.
        self.central = None
        self.down.clear()

    def _subscribe_new(self) -> None:
        c = self.central
        if self.relay_all:
            self.unsubscribed.clear()       # one wildcard subscription covers everyone
            return
        if c is None or not self.unsubscribed:
            return
        devs = sorted(self.unsubscribed)
        for i in range(0, len(devs), SUB_CHUNK // 2):
            c.subscribe(self.filters(devs[i:i + SUB_CHUNK // 2]))
        self.unsubscribed.clear()

    def _on_central_message(self, c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            _t, _dev, ch = v1.parse_topic(msg.topic)
        except ValueError:
            ch = ""
        if ch not in (v1.CFG, v1.CMD):
            log.warning("unexpected downlink topic, acknowledged and ignored", topic=msg.topic)
            if msg.qos:
                c.ack(msg.mid, msg.qos)
            return
        self.down.append(Down(msg.topic, bytes(msg.payload), ch == v1.CFG, ch, msg.mid, msg.qos, c))

    # --- local side ------------------------------------------------------

    def local_connected(self, c: mqtt.Client) -> None:
        self.local = c
        c.on_publish = self._on_local_publish
        # republish what the previous local connection had not confirmed
        self.down.extendleft(reversed(list(self.local_inflight.values())))
        self.local_inflight.clear()

    def local_lost(self) -> None:
        self.local = None

    def pump(self) -> None:
        self._subscribe_new()
        lc = self.local
        if lc is None:
            return
        while self.down:
            d = self.down.popleft()
            if d.central is not self.central:
                continue          # from an old central connection: it will be redelivered
            info = lc.publish(d.topic, d.payload, qos=1, retain=d.retain)
            self.local_inflight[info.mid] = d

    def _on_local_publish(self, c: mqtt.Client, userdata: object, mid: int, rc: object, props: object = None) -> None:
        d = self.local_inflight.pop(mid, None)
        if d is None:
            return
        if d.central is self.central and d.qos:
            d.central.ack(d.central_mid, d.qos)
        self.relayed += 1
        hm.DOWNLINK.labels(d.channel).inc()
