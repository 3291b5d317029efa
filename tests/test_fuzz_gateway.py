"""Fuzzing the gateway's input path: arbitrary topics and payloads into the real
intake (paho message objects, the real SQLite queue, the rate limit).

Properties: nothing raises; every message is kept in the queue, byte for
byte, whatever it is (nothing stays unforwarded or vanishes on the Pi); a
message is marked invalid exactly when the contract check or the rate limit
says so, with a ``<code>: <detail>`` reason; and the central ingest, given
the gateway's mark, reaches the same verdict on every ``up`` and ``status`` message.
"""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from contract import v1
from gateway.intake import Intake
from gateway.queue import DurableQueue
from gateway.validate import classify_timed
from ingest.handler import MessageHandler
from ingest.ratelimit import RateLimiter
from ingest.registry import DeviceInfo
from streetsense.fuzz import check_gateway

NOW_S = int(time.time())
DEVICES = ["bin-0001", "bin-0002", "air-0001"]


@st.composite
def pack(draw: st.DrawFn, dev: str) -> bytes:
    n = draw(st.integers(1, 12))
    bt = NOW_S - draw(st.integers(-900, 86_400))        # some a little in the future, most in the past
    recs = [("fill", draw(st.integers(0, 1000)), k * draw(st.integers(0, 2000))) for k in range(n)]
    return (v1.encode_cbor if draw(st.booleans()) else v1.encode_json)(dev, bt, draw(st.integers(0, 99)), recs)


@st.composite
def message(draw: st.DrawFn) -> tuple[str, bytes]:
    dev = draw(st.sampled_from(DEVICES))
    channel = draw(st.sampled_from([v1.UP, v1.UP, v1.UP, v1.STATUS, v1.ACK, v1.CFG, "junk"]))
    topic = draw(st.one_of(st.just(v1.topic("town", dev, channel)),
                           st.text(max_size=40).filter(lambda t: t and "\x00" not in t)))
    payload = draw(st.one_of(
        pack(dev), pack(dev),
        st.binary(max_size=120),
        st.just(v1.encode_status("online", "0.1.0", NOW_S)),
        st.sampled_from([b"", b"{}", b'{"state":"on\xc2","fw":"1","t":0}', b'[{"bn":"\xff"}]', b"\x9f\x01",
                         b'[{"bn":"bin-0001:","bt":1e308,"n":"fill","v":0.5}]']),
    ))
    if draw(st.integers(0, 9)) == 0 and payload:                         # a flipped byte
        b = bytearray(payload)
        b[draw(st.integers(0, len(b) - 1))] ^= 0x41
        payload = bytes(b)
    return topic, payload


@st.composite
def traffic(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    """Random messages with, usually, one device flooding among them (packs one second apart)."""
    msgs = draw(st.lists(message(), max_size=30))
    if draw(st.integers(0, 3)):
        dev = draw(st.sampled_from(DEVICES))
        t0 = NOW_S - draw(st.integers(0, 3600))
        for s in range(draw(st.integers(2, 15))):
            raw = v1.encode_json(dev, t0 + s, s, [("fill", (s + k) % 1000, k * 10) for k in range(12)])
            msgs.insert(draw(st.integers(0, len(msgs))), (v1.topic("town", dev, v1.UP), raw))
    return msgs or [draw(message())]


@pytest.fixture(scope="module")
def queue(tmp_path_factory: pytest.TempPathFactory) -> DurableQueue:
    return DurableQueue(tmp_path_factory.mktemp("gwq") / "queue.sqlite3", synchronous="OFF")


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(traffic())
def test_intake_keeps_every_message_and_marks_exactly_the_invalid_ones(queue: DurableQueue,
                                                                        msgs: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-fuzz", protocol=mqtt.MQTTv5, manual_ack=True)
    intake = Intake(queue, max_bytes=1 << 40, commit_max=10**6, limiter=RateLimiter(rate=2, burst=20))
    intake.attach(client)
    first = queue.next_id
    for i, (topic, payload) in enumerate(msgs):
        m = mqtt.MQTTMessage(mid=i + 1, topic=topic.encode())
        m.payload, m.qos = payload, 1
        client.on_message(client, None, m)                   # what paho calls for a delivered PUBLISH
    rows = intake.commit()
    assert [(r.topic, r.payload) for r in rows] == msgs, "every message kept, in order, byte for byte"
    assert [r.id for r in queue.read(first, queue.next_id, 10**6)] == [r.id for r in rows]
    # the marks are exactly the contract's verdict plus the rate limit, replayed in the same order
    lim = RateLimiter(rate=2, burst=20)
    centre = MessageHandler(lambda t, d: DeviceInfo(1, None, "active"))  # type: ignore[arg-type]
    for r in rows:
        v, newest = classify_timed(r.topic, r.payload, r.rx_ms)
        want = v.reason
        if v.readings and not lim.allow(r.topic.rsplit("/", 1)[0], newest, v.readings):
            want = "rate_limited"
        if want is None:
            assert r.reason is None
        else:
            assert r.reason is not None and r.reason.startswith(want)
        if r.reason is not None:
            code, _, detail = r.reason.partition(": ")
            assert code.replace("_", "").isalpha() and code.islower() and detail
        if v.channel in (v1.UP, v1.STATUS):
            out = centre.handle(r.topic, r.payload, r.rx_ms, mark=r.reason)
            central = out.quarantine.reason_code if out.quarantine else None
            assert central == (r.reason.split(":", 1)[0] if r.reason else None)
            if out.quarantine is not None:
                assert out.quarantine.payload == r.payload and out.quarantine.reason
    assert intake.stored == len(msgs) and intake.quarantined == sum(r.reason is not None for r in rows)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.binary(max_size=200))
def test_arbitrary_topic_and_payload_bytes(data: bytes) -> None:
    check_gateway(data)
