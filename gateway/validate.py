"""Check one device message against the contract (pure, no I/O).

Policy for invalid input: **forward everything, mark what is invalid.** The
gateway subscribes only to its tenant's device channels, so every message it
receives has a device topic; it is queued and forwarded byte for byte like a
valid one, with an MQTT 5 user property ``ss-invalid`` = ``"<code>: <detail>"``
added. The central ingest runs the same contract decoder (with the same
receive time, ``ss-rx``) and quarantines the message with the same reason, raw
bytes kept; the mark tells operators where the problem was first seen and is
counted in the gateway's ``quarantined`` metric. Nothing is dropped or kept
only on the Pi, where nobody would look.

The device kind is not known on the gateway (the registry is central), so the
per-kind metric check happens only centrally.

>>> from contract import v1
>>> ok = v1.encode_json("bin-1", 1767225600, 3, [("fill", 500, 0)])
>>> classify("ss/v1/leeds/bin-1/up", ok, 1767225601000)
Verdict(channel='up', device_id='bin-1', readings=1, reason=None)
>>> classify_timed("ss/v1/leeds/bin-1/up", ok, 1767225601000)[1]     # newest reading: the rate limit's clock
1767225600000
>>> classify("ss/v1/leeds/bin-1/up", b"{oops", 1767225601000).reason[:24]
'bad_encoding: cannot par'
>>> classify("ss/v1/leeds/bin-1/status", b'{"state":"napping","fw":"1","t":0}', 0).reason
"bad_status: state 'napping' is not online, sleeping or offline"
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from contract import v1
from contract.decode import PackError, decode

#: Longest ``ss-invalid`` value (the full reason is recomputed centrally).
MAX_REASON = 240
_STATES = ("online", "sleeping", "offline")


class Verdict(NamedTuple):
    channel: str | None
    device_id: str | None
    #: readings in a valid (or partly valid) pack; 0 for other channels
    readings: int
    #: ``"<code>: <detail>"`` when the message is invalid, else None
    reason: str | None


class _Status(msgspec.Struct):
    state: str
    fw: str
    t: int
    next_wake: int = 0


def _cut(s: str) -> str:
    return s if len(s) <= MAX_REASON else s[: MAX_REASON - 1] + "…"


def classify(topic: str, payload: bytes, received_ms: int) -> Verdict:
    """Channel, device, reading count and (if invalid) why, for one message."""
    return classify_timed(topic, payload, received_ms)[0]


def classify_timed(topic: str, payload: bytes, received_ms: int) -> tuple[Verdict, int]:
    """:func:`classify`, plus the time of the pack's newest accepted reading (ms; 0 if none)."""
    try:
        _tenant, dev, channel = v1.parse_topic(topic)
    except ValueError as e:
        return Verdict(None, None, 0, _cut(f"bad_topic: {e}")), 0
    if channel == v1.UP:
        try:
            pack = decode(payload, device_id=dev, received_ms=received_ms)
        except PackError as e:
            return Verdict(channel, dev, 0, _cut(f"{e.code}: {e.detail}")), 0
        cols = pack.times_ms
        newest = max(cols) if cols else 0
        if pack.rejects:
            r = pack.rejects[0]
            return Verdict(channel, dev, len(cols), _cut(
                f"records_rejected: {len(pack.rejects)} records rejected: record {r.index}: {r.code}: {r.detail}")), newest
        return Verdict(channel, dev, len(cols), None), newest
    return _other(channel, dev, payload), 0


def _other(channel: str, dev: str, payload: bytes) -> Verdict:
    if channel == v1.STATUS:
        if not payload:   # an empty retained message clears the retained status: fine
            return Verdict(channel, dev, 0, None)
        try:
            st = msgspec.json.decode(payload, type=_Status)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:   # ValueError: bad UTF-8
            return Verdict(channel, dev, 0, _cut(f"bad_status: {e}"))
        if st.state not in _STATES:
            return Verdict(channel, dev, 0, f"bad_status: state {st.state!r} is not online, sleeping or offline")
        if len(st.fw) > 32:           # the same rule as ingest (ingest.handler)
            return Verdict(channel, dev, 0, "bad_status: firmware version longer than 32 characters")
        return Verdict(channel, dev, 0, None)
    if channel == v1.ACK:
        try:
            ok = isinstance(msgspec.json.decode(payload), dict)
        except (msgspec.DecodeError, ValueError):
            ok = False
        return Verdict(channel, dev, 0, None if ok else "bad_ack: an ack is a JSON object")
    # cfg / cmd travel down, never up: a device publishing them is misbehaving
    return Verdict(channel, dev, 0, f"bad_channel: devices do not publish on {channel!r}")
