"""Pure message handling: one MQTT message in, rows / quarantine entries out.

No MQTT or database code here; the worker feeds it messages and writes what it
returns.

>>> from contract import v1
>>> from ingest.registry import DeviceInfo
>>> h = MessageHandler(lambda t, d: DeviceInfo(7, "bin_fill", "active") if d == "bin-0001" else None)
>>> raw = v1.encode_json("bin-0001", 1767225600, 3, [("fill", 500, 0)])
>>> out = h.handle("ss/v1/demo/bin-0001/up", raw, received_ms=1767225601000)
>>> out.pack.times_ms, out.pack.metric_ids, out.pack.values, out.seq, out.quarantine
([1767225600000], [2], [0.5], (7, 3, 1, 1767225601000), None)
>>> h.handle("ss/v1/demo/bin-9999/up", raw, received_ms=1767225601000).quarantine.reason_code
'unknown_device'

With a :class:`~ingest.ratelimit.RateLimiter`, a device over its rate limit has
the message quarantined as ``rate_limited`` (raw bytes kept, replayable); a
message a gateway already marked ``rate_limited`` (user property
``ss-invalid``) is quarantined the same way, and a replay (``ss-replay``)
skips the limit, since an operator chose to let it in:

>>> from ingest.ratelimit import RateLimiter
>>> h = MessageHandler(lambda t, d: DeviceInfo(7, "bin_fill", "active"), RateLimiter(rate=1, burst=1))
>>> [h.handle("ss/v1/demo/bin-0001/up", raw, 1767225601000).quarantine is None for _ in range(2)]
[True, False]
>>> h.handle("ss/v1/demo/bin-0001/up", raw, 1767225601000).quarantine.reason_code
'rate_limited'
>>> h.handle("ss/v1/demo/bin-0001/up", raw, 1767225601000, replay=True).quarantine is None
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from contract import v1
from contract.decode import DecodedPack, PackError, decode
from ingest.ratelimit import RateLimiter
from ingest.registry import DeviceInfo
from ingest.store import Batch, QuarantineRow


@dataclass(slots=True)
class Handled:
    channel: str = ""
    device_pk: int | None = None
    #: the accepted readings (columns), when the channel is ``up``
    pack: DecodedPack | None = None
    quarantine: QuarantineRow | None = None
    #: (device pk, seq, readings, received ms) when the pack carried a batch counter
    seq: tuple[int, int, int, int] | None = None
    #: (state, firmware, next_wake) from a status message
    status: tuple[str, str, int] | None = None
    duplicates_in_pack: int = 0
    #: readings refused by the rate limit (the message is quarantined ``rate_limited``)
    rate_limited: int = 0
    #: kept so a batch the database refuses can be retried message by message
    topic: str = ""
    payload: bytes = b""

    @property
    def readings(self) -> int:
        return len(self.pack) if self.pack is not None else 0


class _Status(msgspec.Struct):
    state: str
    fw: str
    t: int
    next_wake: int = 0


_STATES = {"online", "sleeping", "offline"}


class MessageHandler:
    """Turns (topic, payload) into what to store. Never raises on bad input."""

    def __init__(self, lookup: Callable[[str, str], DeviceInfo | None], limiter: RateLimiter | None = None) -> None:
        self._lookup = lookup
        self._limiter = limiter

    def handle(self, topic: str, payload: bytes, received_ms: int, *, replay: bool = False,
               mark: str | None = None) -> Handled:
        """``mark`` is a gateway's ``ss-invalid`` verdict; ``replay`` is set for
        ``streetsense quarantine replay`` (the rate limit does not apply)."""
        out = Handled()
        try:
            tenant, dev, channel = v1.parse_topic(topic)
        except ValueError as e:
            out.quarantine = QuarantineRow(topic, None, None, "bad_topic", str(e), payload)
            return out
        out.channel = channel
        info = self._lookup(tenant, dev)
        if info is None:
            out.quarantine = QuarantineRow(topic, tenant, dev, "unknown_device",
                                           f"device {dev!r} is not registered for tenant {tenant!r}", payload)
            return out
        if info.status not in ("active", "provisioned"):
            out.quarantine = QuarantineRow(topic, tenant, dev, "device_not_active",
                                           f"device {dev!r} is {info.status}", payload)
            return out
        out.device_pk = info.pk
        if channel == v1.UP and not replay and mark is not None and mark.startswith("rate_limited"):
            out.quarantine = QuarantineRow(topic, tenant, dev, "rate_limited", f"at the gateway: {mark}", payload)
        elif channel == v1.UP:
            self._up(out, topic, tenant, dev, info, payload, received_ms, replay)
        elif channel == v1.STATUS:
            self._status(out, topic, tenant, dev, payload)
        else:
            out.quarantine = QuarantineRow(topic, tenant, dev, "bad_channel",
                                           f"ingest does not accept the {channel!r} channel", payload)
        return out

    def _up(self, out: Handled, topic: str, tenant: str, dev: str, info: DeviceInfo, payload: bytes,
            received_ms: int, replay: bool) -> None:
        try:
            pack = decode(payload, device_id=dev, received_ms=received_ms, kind=info.kind)
        except PackError as e:
            out.quarantine = QuarantineRow(topic, tenant, dev, e.code, e.detail, payload)
            return
        lim = self._limiter
        n = len(pack.times_ms)
        if lim is not None and n and not replay and not lim.allow(f"{tenant}/{dev}", max(pack.times_ms), n):
            out.rate_limited = n
            out.quarantine = QuarantineRow(
                topic, tenant, dev, "rate_limited",
                f"device {dev!r} is over its rate limit ({lim.rate:g} readings/s of device time, bursts of "
                f"{lim.burst:g}): {n} readings held back; replay to store them", payload)
            return
        out.pack = pack
        out.duplicates_in_pack = pack.duplicates
        if pack.seq is not None:
            out.seq = (info.pk, pack.seq, len(pack), received_ms)
        if pack.rejects:
            first = pack.rejects[0]
            more = f" (and {len(pack.rejects) - 1} more)" if len(pack.rejects) > 1 else ""
            out.quarantine = QuarantineRow(
                topic, tenant, dev, "records_rejected",
                f"{len(pack.rejects)} of {len(pack.rejects) + len(pack) + pack.duplicates} records rejected: "
                f"record {first.index}: {first.code}: {first.detail}{more}",
                payload, [{"index": r.index, "code": r.code, "detail": r.detail} for r in pack.rejects])

    def _status(self, out: Handled, topic: str, tenant: str, dev: str, payload: bytes) -> None:
        if not payload:      # an empty retained message clears the retained status: nothing to store
            return
        try:
            st = msgspec.json.decode(payload, type=_Status)
            if st.state not in _STATES:
                raise ValueError(f"state must be one of {sorted(_STATES)}")
            if len(st.fw) > 32:
                raise ValueError("firmware version longer than 32 characters")
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
            out.quarantine = QuarantineRow(topic, tenant, dev, "bad_status", f"bad status payload: {e}", payload)
            return
        out.status = (st.state, st.fw, st.next_wake)


def batch_of(handled: list[Handled]) -> Batch:
    """Merge handled messages into one :class:`~ingest.store.Batch` (one transaction)."""
    b = Batch(messages=len(handled))
    for h in handled:
        p = h.pack
        if p is not None and p.times_ms:
            b.times_ms.extend(p.times_ms)
            b.devices.extend([h.device_pk] * len(p.times_ms))
            b.metric_ids.extend(p.metric_ids)
            b.values.extend(p.values)
            last = max(p.times_ms)
            prev = b.seen.get(h.device_pk)
            seq = h.seq[1] if h.seq else None
            if prev is None:
                b.seen[h.device_pk] = (last, seq)
            else:
                b.seen[h.device_pk] = (max(prev[0], last), max(x for x in (prev[1], seq) if x is not None)
                                       if (prev[1] is not None or seq is not None) else None)
        if h.quarantine is not None:
            b.quarantine.append(h.quarantine)
        if h.seq is not None:
            b.seqs.append(h.seq)
        if h.status is not None and h.device_pk is not None:
            b.status[h.device_pk] = h.status
    return b
