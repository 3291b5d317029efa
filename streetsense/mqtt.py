"""Small MQTT helpers over paho-mqtt 2.x used by the bench, tests and demo.

The publisher is driven by a tight ``loop(timeout=…)`` in the calling thread:
on this machine paho's ``loop_start()`` background thread was an order of
magnitude slower for QoS 1 traffic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from streetsense.embedded import MqttTarget


def make_client(url: str, client_id: str, *, session: bool = True, inflight: int = 1000,
                protocol: int = mqtt.MQTTv5) -> mqtt.Client:
    """A connected paho client (MQTT 5, persistent session unless ``session=False``)."""
    t = MqttTarget.parse(url)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    if t.username:
        c.username_pw_set(t.username, t.password)
    if t.tls:
        c.tls_set()
    c.max_inflight_messages_set(inflight)
    c.max_queued_messages_set(0)
    c._ss_target = t  # type: ignore[attr-defined]
    connect(c, session)
    return c


def connect(c: mqtt.Client, session: bool = True) -> None:
    t: MqttTarget = c._ss_target  # type: ignore[attr-defined]
    if c._protocol == mqtt.MQTTv5:  # noqa: SLF001
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if session else 0
        c.connect(t.host, t.port, keepalive=30, clean_start=not session, properties=props)
    else:
        c.connect(t.host, t.port, keepalive=30)


def publish_all(c: mqtt.Client, messages: Iterable[tuple[str, bytes]], *, qos: int = 1, rate: float | None = None,
                on_sent: Callable[[int, float], None] | None = None, timeout: float = 600.0,
                properties: Properties | Callable[[str, bytes], Properties] | None = None) -> int:
    """Publish every message and wait until the broker acknowledged all of them.

    Survives broker restarts: on a lost connection it reconnects and paho
    re-sends the QoS 1 messages still unacknowledged. ``rate`` paces messages
    per second; ``on_sent(index, time)`` is called as each one is handed over.
    ``properties`` (MQTT 5) go with every message; a callable
    ``properties(topic, payload)`` gives each message its own.
    Returns the number published.
    """
    infos = []
    t0 = time.monotonic()
    deadline = t0 + timeout
    for i, (topic, payload) in enumerate(messages):
        if rate:
            due = t0 + i / rate
            while time.monotonic() < due:
                _pump(c, max(0.0, min(0.01, due - time.monotonic())))
        props = properties(topic, payload) if callable(properties) else properties
        infos.append(c.publish(topic, payload, qos=qos, properties=props))
        if on_sent:
            on_sent(i, time.time())
        _pump(c, 0)
    pending = [i for i in infos if qos and not i.is_published()]
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} messages not acknowledged by the broker after {timeout} s")
        _pump(c, 0.01)
        pending = [i for i in pending if not i.is_published()]
    return len(infos)


def _pump(c: mqtt.Client, timeout: float) -> None:
    rc = c.loop(timeout=timeout)
    if rc != mqtt.MQTT_ERR_SUCCESS:
        time.sleep(0.2)
        try:
            c.reconnect()
        except OSError:
            pass
