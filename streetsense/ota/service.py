"""The rollout on the wire: retained OTA notices out on cmd, acks in from ack.

``publish_notices`` puts every device's notice (or an empty retained message
that withdraws it) on its cmd topic.  ``follow`` consumes the tenant's ack
topics, feeds OTA acks to the store and re-publishes the notices whenever
the set of devices that should have one changes (a wave opened, the rollout
halted, resumed or was aborted).  Until the API takes this over it is what
``streetsense ota rollout follow`` runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
import psycopg

from contract import v1
from streetsense.mqtt import make_client
from streetsense.ota import rollout as R
from streetsense.ota.store import OtaStore


def _send(c: mqtt.Client, messages: list[tuple[str, bytes]], timeout: float = 60.0) -> int:
    infos = [c.publish(t, p, qos=1, retain=True) for t, p in messages]
    deadline = time.monotonic() + timeout
    while not all(i.is_published() for i in infos):
        if time.monotonic() > deadline:
            raise TimeoutError("the broker did not acknowledge the notices")
        c.loop(timeout=0.05)
    return len(infos)


def publish_notices(store: OtaStore, rollout_id: int, mqtt_url: str, client_id: str | None = None) -> int:
    """Publish (retained) the notice to every device that should have it, clear the rest."""
    msgs = store.notices(rollout_id)
    c = make_client(mqtt_url, client_id or f"ota-rollout-{rollout_id}", session=False)
    try:
        return _send(c, msgs)
    finally:
        c.disconnect()


def follow(database_url: str, rollout_id: int, mqtt_url: str, stop: threading.Event,
           on_change: Callable[[R.State], None] | None = None, until_final: bool = False) -> R.State:
    """Process OTA acks for the rollout until ``stop`` is set (or, with
    ``until_final``, until it is completed or aborted).  Returns its last state."""
    with psycopg.connect(database_url) as conn:
        store = OtaStore(conn)
        tenant = conn.execute("SELECT tenant FROM ota_rollouts WHERE id = %s", (rollout_id,)).fetchone()[0]
        c = make_client(mqtt_url, f"ota-follow-{rollout_id}", session=True)
        last = store.evaluate(rollout_id)
        changed = [True]

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            nonlocal last
            try:
                _, dev, ch = v1.parse_topic(msg.topic)
                ack = json.loads(msg.payload)
            except ValueError:
                return
            if ch != v1.ACK or not isinstance(ack, dict) or ack.get("id") != rollout_id:
                return
            st = store.record_ack(tenant, dev, ack)
            if st is not None and (st.status, st.wave) != (last.status, last.wave):
                changed[0] = True
            if st is not None:
                last = st

        c.on_message = on_message
        c.subscribe(v1.topic(tenant, "+", v1.ACK), qos=1)
        polled = time.monotonic()
        try:
            while not stop.is_set():
                if time.monotonic() - polled > 2.0:          # halt / resume / abort from elsewhere
                    polled = time.monotonic()
                    st = store.evaluate(rollout_id)
                    if (st.status, st.wave) != (last.status, last.wave):
                        changed[0] = True
                    last = st
                if changed[0]:
                    changed[0] = False
                    _send(c, store.notices(rollout_id))
                    if on_change:
                        on_change(last)
                if until_final and last.status in ("completed", "aborted"):
                    break
                c.loop(timeout=0.1)
        finally:
            c.disconnect()
        return last
