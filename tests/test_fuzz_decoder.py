"""Fuzzing the contract decoder with Hypothesis (extends tests/test_contract.py).

test_contract.py covers round trips, arbitrary bytes into ``decode`` and
structured garbage. Here: the property every input must keep
(:func:`streetsense.fuzz.check_decoder`: both paths agree, only documented
rejections, every record accounted for) on arbitrary bytes and on byte-level
mutations of valid JSON and CBOR packs; hostile numbers in CBOR (decimal
fractions with huge exponents, bignums), which used to raise or take seconds;
and invalid UTF-8 inside JSON strings, which used to escape the fast path.
"""

from __future__ import annotations

import time

import cbor2
from hypothesis import HealthCheck, example, given, settings, strategies as st

from contract import v1
from contract.decode import PackError, decode, decode_careful
from streetsense.fuzz import DEVICE, PACK_CODES, RECEIVED_MS, RECORD_CODES, check_decoder

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

metric_names = st.sampled_from([m[1] for m in v1.METRICS])


@st.composite
def valid_pack(draw: st.DrawFn) -> bytes:
    recs = []
    for _ in range(draw(st.integers(1, 8))):
        row = v1.BY_NAME[draw(metric_names)]
        scale = 10 ** row[3]
        recs.append((row[1], draw(st.integers(row[4] * scale, row[5] * scale)), draw(st.integers(-3_600_000, 0))))
    enc = v1.encode_cbor if draw(st.booleans()) else v1.encode_json
    return enc(DEVICE, RECEIVED_MS // 1000 - 60, draw(st.integers(0, 2**32 - 1)), recs)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    b = bytearray(draw(valid_pack()))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice"]))
        i = draw(st.integers(0, max(0, len(b) - 1)))
        if not b:
            break
        if op == "flip":
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            b[i] = draw(st.sampled_from([0x00, 0x22, 0x2C, 0x5B, 0x5D, 0x7B, 0x7D, 0x80, 0x9F, 0xC4, 0xFB, 0xFF]))
        elif op == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del b[i:i + draw(st.integers(1, 8))]
        elif op == "truncate":
            del b[i:]
        else:
            b[i:i] = b[draw(st.integers(0, len(b) - 1)):][:draw(st.integers(1, 32))]
    return bytes(b)


@FUZZ
@given(st.binary(max_size=400))
@example(b'[{"bn":"\xff"}]')
def test_arbitrary_bytes_both_paths_agree(raw: bytes) -> None:
    check_decoder(raw)


@FUZZ
@given(mutated())
def test_mutated_valid_packs_both_paths_agree_and_every_record_accounted_for(raw: bytes) -> None:
    check_decoder(raw)
    try:
        p = decode(raw, device_id=DEVICE, received_ms=RECEIVED_MS)
    except PackError:
        return
    recs = cbor2.loads(raw) if raw[:1] >= b"\x80" else __import__("json").loads(raw)
    assert len(p) + len(p.rejects) + p.duplicates == len(recs)


@FUZZ
@given(valid_pack())
def test_valid_packs_decode_with_no_rejects(raw: bytes) -> None:
    p = decode(raw, device_id=DEVICE, received_ms=RECEIVED_MS)
    assert p.rejects == [] and len(p) + p.duplicates >= 1
    check_decoder(raw)


hostile_numbers = st.one_of(
    st.builds(lambda e, m: cbor2.CBORTag(4, [e, m]), st.integers(-10**9, 10**9), st.integers(-10**30, 10**30)),
    st.builds(lambda e, m: cbor2.CBORTag(5, [e, m]), st.integers(-10**6, 10**6), st.integers(-10**6, 10**6)),
    st.integers(-10**400, 10**400),
    st.floats(allow_nan=True, allow_infinity=True),
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(field=st.sampled_from([-3, 2, 6]), x=hostile_numbers)
@example(field=-3, x=cbor2.CBORTag(4, [10**8, 1]))
@example(field=2, x=cbor2.CBORTag(4, [10**6, 1]))
@example(field=6, x=cbor2.CBORTag(4, [10**5, 1]))
@example(field=-3, x=10**5000)
def test_hostile_cbor_numbers_rejected_with_a_reason_quickly(field: int, x: object) -> None:
    rec = {-2: DEVICE + ":", -3: RECEIVED_MS // 1000, 0: "fill", 2: 0.5}
    rec[field] = x
    raw = cbor2.dumps([rec])
    t0 = time.perf_counter()
    try:
        p = decode(raw, device_id=DEVICE, received_ms=RECEIVED_MS)
    except PackError as e:
        assert e.code in PACK_CODES
    else:
        assert all(r.code in RECORD_CODES for r in p.rejects)
        assert len(p) + len(p.rejects) == 1
    assert time.perf_counter() - t0 < 0.5, "a 40-byte pack must not cost half a second"
    check_decoder(raw)


def _bad_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return b'"' not in b and b"\\" not in b
    return False


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.binary(min_size=1, max_size=4).filter(_bad_utf8), st.sampled_from(["bn", "n", "u", "x"]))
def test_invalid_utf8_in_json_strings_is_bad_encoding(bad: bytes, where: str) -> None:
    fields = {"bn": DEVICE.encode() + b":", "n": b"fill", "u": b"/", "x": b"ignorable"}
    fields[where] = bad
    raw = (b'[{"bn":"%s","bt":1767225540,"n":"%s","u":"%s","v":0.5,"x":"%s"}]'
           % (fields["bn"], fields["n"], fields["u"], fields["x"]))
    for fn in (decode, decode_careful):
        try:
            fn(raw, device_id=DEVICE, received_ms=RECEIVED_MS)
        except PackError as e:
            assert e.code == "bad_encoding"
        else:
            raise AssertionError("invalid UTF-8 accepted")
