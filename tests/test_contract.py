"""Contract v1: the shared vectors, round trips and rejection of malformed input (CPython side).

The same vector file is run through the firmware's interpreter in test_firmware_micropython.py.
"""

import json
import math
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings, strategies as st

from contract import v1
from contract.decode import PackError, decode

VECTORS = json.loads((Path(__file__).parent / "vectors" / "v1.json").read_text())


def _raw(v: dict) -> bytes:
    return v["payload"].encode() if "payload" in v else bytes.fromhex(v["payload_hex"])


@pytest.mark.parametrize("vec", VECTORS["encode"], ids=lambda v: v["name"])
def test_encoder_is_byte_exact(vec):
    recs = [tuple(r) for r in vec["records"]]
    assert v1.encode_json(vec["device"], vec["bt"], vec["seq"], recs) == vec["json"].encode()
    assert v1.encode_cbor(vec["device"], vec["bt"], vec["seq"], recs).hex() == vec["cbor_hex"]


@pytest.mark.parametrize("vec", VECTORS["encode"], ids=lambda v: v["name"])
@pytest.mark.parametrize("form", ["json", "cbor_hex"])
def test_encoded_vectors_decode_to_their_meaning(vec, form):
    raw = vec["json"].encode() if form == "json" else bytes.fromhex(vec["cbor_hex"])
    pack = decode(raw, device_id=vec["device"], received_ms=VECTORS["encode_received_ms"])
    assert pack.seq == vec["seq"]
    assert pack.rejects == []
    assert [[r.time_ms, r.metric, r.value] for r in pack.readings] == vec["readings"]


@pytest.mark.parametrize("vec", VECTORS["decode_valid"], ids=lambda v: v["name"])
def test_decode_valid_vectors(vec):
    pack = decode(_raw(vec), device_id=vec["device"], received_ms=vec["received_ms"], kind=vec.get("kind"))
    assert [[r.time_ms, r.metric, r.value] for r in pack.readings] == vec["readings"]
    assert [[r.index, r.code] for r in pack.rejects] == vec["rejects"]
    assert all(r.detail for r in pack.rejects)
    assert pack.seq == vec["seq"]
    assert pack.duplicates == vec["duplicates"]


@pytest.mark.parametrize("vec", VECTORS["decode_invalid"], ids=lambda v: v["name"])
def test_decode_invalid_vectors(vec):
    with pytest.raises(PackError) as err:
        decode(_raw(vec), device_id=vec["device"], received_ms=vec["received_ms"])
    assert err.value.code == vec["error"]
    assert err.value.detail


@pytest.mark.parametrize("vec", VECTORS["status"], ids=lambda v: v["args"][0])
def test_status_vectors(vec):
    assert v1.encode_status(*vec["args"]) == vec["json"].encode()
    assert json.loads(vec["json"])["state"] == vec["args"][0]


def test_topics():
    t = v1.topic("leeds", "bin-0001", v1.UP)
    assert t == "ss/v1/leeds/bin-0001/up"
    assert v1.parse_topic(t) == ("leeds", "bin-0001", "up")
    for bad in ["ss/v2/a/b/up", "ss/v1/a/b", "ss/v1/a/b/up/x", "ss/v1/A/b/up", "ss/v1/a/b/telemetry", "ss/v1/a/-b/up"]:
        with pytest.raises(ValueError):
            v1.parse_topic(bad)


def test_registry_is_consistent():
    ids = [m[0] for m in v1.METRICS]
    names = [m[1] for m in v1.METRICS]
    assert len(set(ids)) == len(ids) and len(set(names)) == len(names)
    for m in v1.METRICS:
        assert 0 <= m[3] <= 6 and m[4] < m[5]
        assert m[6] == "*" or set(m[6].split()) <= set(v1.KINDS)


# --- properties -------------------------------------------------------------

ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True)
BT = st.integers(min_value=1_600_000_000, max_value=1_900_000_000)


@st.composite
def records(draw):
    n = draw(st.integers(1, 40))
    out = []
    for _ in range(n):
        row = draw(st.sampled_from(v1.METRICS))
        scale = 10 ** row[3]
        q = draw(st.integers(row[4] * scale, row[5] * scale))
        dt = draw(st.integers(-86_400_000, 86_400_000))
        out.append((row[1], q, dt))
    return out


@settings(max_examples=300, deadline=None)
@given(dev=ids, bt=BT, seq=st.integers(0, 2**32 - 1), recs=records())
def test_roundtrip_json_and_cbor(dev, bt, seq, recs):
    received = (bt + 86_400) * 1000
    expected = {}
    for name, q, dt in recs:
        row = v1.BY_NAME[name]
        expected.setdefault((name, bt * 1000 + dt), q / 10 ** row[3])
    for raw in (v1.encode_json(dev, bt, seq, recs), v1.encode_cbor(dev, bt, seq, recs)):
        pack = decode(raw, device_id=dev, received_ms=received)
        assert pack.rejects == []
        assert pack.seq == seq
        got = {(r.metric, r.time_ms): r.value for r in pack.readings}
        assert got == expected
        assert pack.duplicates == len(recs) - len(expected)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(raw):
    try:
        pack = decode(raw, device_id="bin-0001", received_ms=1_767_225_600_000)
    except PackError as e:
        assert e.code and e.detail
    else:
        for r in pack.rejects:
            assert r.code and r.detail
        for r in pack.readings:
            assert math.isfinite(r.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(["bn", "bt", "n", "u", "v", "t", "bseq", "x"]), c, max_size=6),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["bn", "bt", "n", "u", "v", "t", "bseq", "vs", "x_"]), json_values, max_size=7), max_size=6),
       st.booleans())
def test_structured_garbage_rejected_with_reason(recs, as_cbor):
    raw = cbor2.dumps(recs) if as_cbor else json.dumps(recs).encode()
    try:
        pack = decode(raw, device_id="bin-0001", received_ms=1_767_225_600_000)
    except PackError as e:
        assert e.code in {"bad_encoding", "not_a_pack", "bad_base_name", "bad_base_time", "bad_seq", "bad_version", "too_large"}
    else:
        # every record is accounted for: accepted, rejected with a reason, or a counted duplicate
        assert len(pack.readings) + len(pack.rejects) + pack.duplicates == len(recs)


def test_limits():
    rec = [("fill", 500, i) for i in range(v1.MAX_RECORDS + 1)]
    with pytest.raises(PackError) as e:
        decode(v1.encode_json("d", 1767225600, 1, rec), device_id="d", received_ms=1767225700000)
    assert e.value.code in ("too_many_records", "too_large")
    with pytest.raises(PackError) as e:
        decode(b"[" + b" " * v1.MAX_PAYLOAD + b"]", device_id="d", received_ms=0)
    assert e.value.code == "too_large"


# --- the fast path must agree with the careful decoder -----------------------

from contract.decode import decode_careful  # noqa: E402

mutations = st.sampled_from(["none", "dup", "unit", "range", "future", "unknown", "bool", "base", "float_v", "int_t"])


@settings(max_examples=400, deadline=None)
@given(dev=ids, bt=BT, seq=st.integers(0, 2**32 - 1), recs=records(), mutation=mutations,
       kind=st.sampled_from([None, *v1.KINDS]))
def test_fast_path_agrees_with_careful_decoder(dev, bt, seq, recs, mutation, kind):
    doc = json.loads(v1.encode_json(dev, bt, seq, recs))
    r = doc[-1]
    if mutation == "dup":
        doc.append(dict(doc[0], bn=None, bt=None, bseq=None))
        for k in ("bn", "bt", "bseq"):
            doc[-1].pop(k)
    elif mutation == "unit":
        r["u"] = "furlong"
    elif mutation == "range":
        r["v"] = 1e9
    elif mutation == "future":
        r["t"] = 10 * 86400
    elif mutation == "unknown":
        r["n"] = "humidity"
    elif mutation == "bool":
        r["v"] = True
    elif mutation == "base" and len(doc) > 1:
        r["bn"] = "x:"
    elif mutation == "float_v":
        r["v"] = r["v"] + 0.00049
    elif mutation == "int_t":
        r["t"] = int(r.get("t", 0))
    raw = json.dumps(doc, separators=(",", ":")).encode()
    received = (bt + 86_400) * 1000

    def run(fn):
        try:
            p = fn(raw, device_id=dev, received_ms=received, kind=kind)
        except PackError as e:
            return ("error", e.code)
        return (p.seq, p.readings, [(x.index, x.code) for x in p.rejects], p.duplicates)

    assert run(decode) == run(decode_careful)
