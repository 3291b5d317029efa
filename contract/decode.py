"""Strict decoder for contract v1 SenML packs (CPython side).

A pack is decoded into readings keyed by (device, metric, time in ms). Problems
are reported, never raised past the caller: a structural problem rejects the
whole pack (:class:`PackError`), a problem with one record rejects only that
record and is listed in :attr:`DecodedPack.rejects` with its reason.

>>> from contract import v1
>>> raw = v1.encode_json("bin-0001", 1767225600, 7, [("fill", 625, 0), ("temp", 2150, 1500)])
>>> pack = decode(raw, device_id="bin-0001", received_ms=1767225700000)
>>> pack.seq, [(r.time_ms, r.metric, r.value) for r in pack.readings]
(7, [(1767225600000, 'fill', 0.625), (1767225601500, 'temp', 21.5)])
>>> decode(b"[]", device_id="bin-0001", received_ms=0)
Traceback (most recent call last):
...
contract.decode.PackError: not_a_pack: a pack is a non-empty array of records
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

import cbor2
import msgspec

from contract import v1

#: Earliest plausible reading time (2020-01-01T00:00:00Z) in ms.
EARLIEST_MS = 1_577_836_800_000
#: How far ahead of the receive time a reading may be (clock skew allowance).
FUTURE_SKEW_MS = 10 * 60 * 1000

# SenML CBOR integer labels (RFC 8428 section 6) -> JSON labels.
_CBOR_LABELS = {-1: "bver", -2: "bn", -3: "bt", -4: "bu", -5: "bv", -6: "bs",
                0: "n", 1: "u", 2: "v", 3: "vs", 4: "vb", 5: "s", 6: "t", 7: "ut", 8: "vd"}
_SUPPORTED = {"bn", "bt", "bseq", "bver", "n", "u", "v", "t"}

_POW10 = (1, 10, 100, 1000, 10000, 100000, 1000000)


class PackError(ValueError):
    """The whole pack is rejected; ``code`` is a stable machine-readable reason."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class Reading(NamedTuple):
    """One accepted reading. ``value`` is the exact decimal as a float."""

    time_ms: int
    metric: str
    metric_id: int
    value: float


@dataclass(frozen=True, slots=True)
class Reject:
    """One rejected record: its index in the pack and why."""

    index: int
    code: str
    detail: str


_NAMES = {m[0]: m[1] for m in v1.METRICS}


@dataclass(slots=True)
class DecodedPack:
    """Accepted readings as columns (what storage wants), plus the rejects.

    :attr:`readings` gives the same data as :class:`Reading` tuples.
    """

    device_id: str
    seq: int | None
    content_type: str
    times_ms: list[int] = field(default_factory=list)
    metric_ids: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    duplicates: int = 0

    @property
    def readings(self) -> list[Reading]:
        return [Reading(t, _NAMES[m], m, v) for t, m, v in zip(self.times_ms, self.metric_ids, self.values)]

    def __len__(self) -> int:
        return len(self.times_ms)


def sniff(payload: bytes) -> str:
    """Content type from the first byte: JSON starts with '[', '{' or space; CBOR with an array or map head."""
    if not payload:
        raise PackError("empty", "empty payload")
    b = payload[0]
    if b in b"[{ \t\r\n":
        return v1.CT_JSON
    if 0x80 <= b <= 0xBF:      # CBOR array or map head
        return v1.CT_CBOR
    raise PackError("bad_encoding", f"neither SenML JSON nor CBOR (first byte 0x{b:02x})")


def _records(payload: bytes, content_type: str) -> list:
    try:
        if content_type == v1.CT_JSON:
            recs = msgspec.json.decode(payload)
        else:
            recs = cbor2.loads(payload)
    except (msgspec.DecodeError, cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as e:
        raise PackError("bad_encoding", f"cannot parse {content_type}: {e}") from None
    if not isinstance(recs, list) or not recs:
        raise PackError("not_a_pack", "a pack is a non-empty array of records")
    if len(recs) > v1.MAX_RECORDS:
        raise PackError("too_many_records", f"{len(recs)} records, limit {v1.MAX_RECORDS}")
    if content_type == v1.CT_CBOR:
        out = []
        for r in recs:
            if not isinstance(r, dict):
                raise PackError("not_a_pack", "every record must be a map")
            out.append({(_CBOR_LABELS.get(k, k) if isinstance(k, int) else k): val for k, val in r.items()})
        return out
    return recs


#: Integers and decimal fractions beyond this magnitude are not numbers the
#: contract can carry (its largest is 4e9). Refusing them up front keeps
#: hostile CBOR bignums and decimal fractions such as 1E+100000000 from
#: costing seconds of arithmetic or raising ``decimal.Overflow``.
_MAX_MAGNITUDE = 10**18


def _number(x: object) -> float | int | Decimal | None:
    """``x`` if it is a finite number of sane magnitude, else None.

    >>> _number(Decimal("2.5")), _number(True), _number(Decimal("1E+100000000")), _number(-10**19), _number(1e308)
    (Decimal('2.5'), None, None, None, None)
    """
    if isinstance(x, bool) or not isinstance(x, (int, float, Decimal)):
        return None
    if isinstance(x, float) and not (math.isfinite(x) and -_MAX_MAGNITUDE <= x <= _MAX_MAGNITUDE):
        return None      # 1e308 is finite, but 1e308 * 1000 is not
    if isinstance(x, Decimal) and (not x.is_finite() or x.adjusted() > 18):
        return None
    if isinstance(x, int) and not -_MAX_MAGNITUDE <= x <= _MAX_MAGNITUDE:
        return None
    return x


def _to_ms(x: float | int | Decimal) -> int:
    if isinstance(x, int):
        return x * 1000
    if isinstance(x, Decimal):
        return int((x * 1000).to_integral_value())
    return round(x * 1000)


def _quantize(x: float | int | Decimal, dec: int) -> int:
    scale = _POW10[dec]
    if isinstance(x, int):
        return x * scale
    if isinstance(x, Decimal):
        return int((x * scale).to_integral_value())
    return round(x * scale)


class _Rec(msgspec.Struct, forbid_unknown_fields=True):
    """A record as the contract's own encoder writes it (fast path only)."""

    n: str
    v: float
    u: str | None = None
    t: float = 0.0
    bn: str | None = None
    bt: float | None = None
    bseq: int | None = None


_fast_json = msgspec.json.Decoder(list[_Rec])

# name -> (id, unit, scale, lowest q, highest q, kinds or None for every kind)
_FAST = {m[1]: (m[0], m[2], _POW10[m[3]], m[4] * _POW10[m[3]], m[5] * _POW10[m[3]],
                None if m[6] == "*" else frozenset(m[6].split())) for m in v1.METRICS}


def _decode_fast(payload: bytes, device_id: str, received_ms: int, kind: str | None) -> DecodedPack | None:
    """The common case, a well-formed JSON pack with nothing to reject, in one
    typed msgspec pass and a tight loop. Returns None at the first thing out of
    the ordinary; the careful path then works out exactly what is wrong, so
    both paths always give the same answer (a property test checks this)."""
    try:
        recs = _fast_json.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):   # ValueError: invalid UTF-8 in a string
        return None
    if not recs or len(recs) > v1.MAX_RECORDS:
        return None
    first = recs[0]
    if first.bn != device_id + ":" or first.bt is None or not -1e15 < first.bt < 1e15:
        return None
    seq = first.bseq
    if seq is not None and not 0 <= seq < 2**32:
        return None
    bt_ms = round(first.bt * 1000)
    latest = received_ms + FUTURE_SKEW_MS
    out = DecodedPack(device_id=device_id, seq=seq, content_type=v1.CT_JSON)
    times, ids, values = out.times_ms, out.metric_ids, out.values
    seen: set[tuple[int, int]] = set()
    fast = _FAST
    for i, r in enumerate(recs):
        if i and (r.bn is not None or r.bt is not None or r.bseq is not None):
            return None
        name = r.n
        row = fast.get(name)
        if row is None:
            return None
        mid, unit, scale, lo, hi, kinds = row
        if (r.u is not None and r.u != unit) or (kinds is not None and kind is not None and kind not in kinds):
            return None
        x = r.v * scale
        if not lo - 0.5 <= x <= hi + 0.5:
            return None
        q = round(x)
        if not lo <= q <= hi:
            return None
        if not -1e15 < r.t < 1e15:
            return None
        ms = bt_ms + round(r.t * 1000)
        if ms < EARLIEST_MS or ms > latest:
            return None
        key = (mid, ms)
        if key in seen:
            out.duplicates += 1
            continue
        seen.add(key)
        times.append(ms)
        ids.append(mid)
        values.append(q / scale)
    return out


def decode(payload: bytes, *, device_id: str, received_ms: int, kind: str | None = None,
           content_type: str | None = None) -> DecodedPack:
    """Decode and validate one pack published by ``device_id``.

    ``received_ms`` bounds timestamps (no readings from the future beyond
    :data:`FUTURE_SKEW_MS`); ``kind``, when known, restricts metrics to those
    the device kind sends. Raises :class:`PackError` for a pack-level problem.
    """
    if len(payload) > v1.MAX_PAYLOAD:
        raise PackError("too_large", f"{len(payload)} bytes, limit {v1.MAX_PAYLOAD}")
    ct = content_type or sniff(payload)
    if ct == v1.CT_JSON:
        fast = _decode_fast(payload, device_id, received_ms, kind)
        if fast is not None:
            return fast
    return decode_careful(payload, device_id=device_id, received_ms=received_ms, kind=kind, content_type=ct)


def decode_careful(payload: bytes, *, device_id: str, received_ms: int, kind: str | None = None,
                   content_type: str | None = None) -> DecodedPack:
    """The full validating decoder: every record accepted or rejected with a reason."""
    if len(payload) > v1.MAX_PAYLOAD:
        raise PackError("too_large", f"{len(payload)} bytes, limit {v1.MAX_PAYLOAD}")
    ct = content_type or sniff(payload)
    recs = _records(payload, ct)

    first = recs[0]
    if not isinstance(first, dict):
        raise PackError("not_a_pack", "every record must be an object")
    bn = first.get("bn")
    if bn != device_id + ":":
        raise PackError("bad_base_name", f"base name {bn!r} does not match device {device_id!r}")
    bt = _number(first.get("bt"))
    if bt is None:
        raise PackError("bad_base_time", "base time (bt) missing or not a number")
    bt_ms = _to_ms(bt)
    seq = first.get("bseq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**32):
        raise PackError("bad_seq", "bseq must be an integer 0..2^32-1")
    bver = first.get("bver", 10)
    if bver != 10:
        raise PackError("bad_version", f"SenML version {bver!r} not supported")

    out = DecodedPack(device_id=device_id, seq=seq, content_type=ct)
    seen: set[tuple[int, int]] = set()
    latest = received_ms + FUTURE_SKEW_MS
    by_name = v1.BY_NAME
    for i, r in enumerate(recs):
        if not isinstance(r, dict):
            out.rejects.append(Reject(i, "not_a_record", "record is not an object"))
            continue
        if i and ("bn" in r or "bt" in r):
            out.rejects.append(Reject(i, "base_changed", "base fields may appear only in the first record"))
            continue
        unknown = [k for k in r if k not in _SUPPORTED]
        if unknown:
            # Labels ending in "_" must be understood (RFC 8428 4.4); others are
            # ignorable, except value kinds we do not store (vs, vb, vd, s).
            bad = [k for k in unknown if str(k).endswith("_") or k in ("vs", "vb", "vd", "s", "bu", "bv", "bs", "ut")]
            if bad:
                out.rejects.append(Reject(i, "unsupported_field", f"unsupported field(s) {sorted(map(str, bad))}"))
                continue
        name = r.get("n")
        row = by_name.get(name) if isinstance(name, str) else None
        if row is None:
            out.rejects.append(Reject(i, "unknown_metric", f"unknown metric {name!r}"))
            continue
        if kind is not None and row[6] != "*" and kind not in row[6].split():
            out.rejects.append(Reject(i, "wrong_kind", f"metric {name!r} is not sent by {kind} devices"))
            continue
        u = r.get("u")
        if u is not None and u != row[2]:
            out.rejects.append(Reject(i, "unit_mismatch", f"{name} is in {row[2]!r}, got {u!r}"))
            continue
        v = _number(r.get("v"))
        if v is None:
            out.rejects.append(Reject(i, "bad_value", f"{name}: value missing or not a finite number"))
            continue
        q = _quantize(v, row[3])
        if not v1.in_range(row, q):
            out.rejects.append(Reject(i, "out_of_range", f"{name}={v} outside [{row[4]}, {row[5]}] {row[2]}"))
            continue
        t = r.get("t", 0)
        tn = _number(t)
        if tn is None:
            out.rejects.append(Reject(i, "bad_time", f"{name}: time offset is not a number"))
            continue
        ms = bt_ms + _to_ms(tn)
        if ms < EARLIEST_MS or ms > latest:
            out.rejects.append(Reject(i, "impossible_time",
                                      f"{name}: time {ms} ms is before 2020 or more than 10 min after receipt"))
            continue
        key = (row[0], ms)
        if key in seen:
            out.duplicates += 1
            continue
        seen.add(key)
        out.times_ms.append(ms)
        out.metric_ids.append(row[0])
        out.values.append(q / _POW10[row[3]])
    return out
