"""Fuzzing the firmware's byte parsers: NMEA 0183 (``ss/nmea.py``) and PMS5003
frames (``ss/drivers/pms5003.py``).

Under CPython with Hypothesis: valid checksummed sentences and frames round
trip exactly; any one-byte change inside the checksummed part is refused;
arbitrary bytes never raise (in an exact-size buffer, where a read past the
end raises, and in the GPS driver's 100-byte line buffer). Then the same
generated corpus runs under the real MicroPython interpreter, which must give
line for line the same results as CPython.
"""

from __future__ import annotations

import json
import random
from datetime import date
from pathlib import Path

import pytest
from hypothesis import example, given, settings, strategies as st

from streetsense.fuzz import check_nmea, check_pms5003, firmware_module
from tests.support.micropython import FIRMWARE, firmware_files, micropython_available, run_micropython

nmea = firmware_module("ss.nmea")
pms = firmware_module("ss.drivers.pms5003")
FUZZ = settings(max_examples=300, deadline=None, derandomize=True)


def sentence(body: bytes, lower: bool = False) -> bytes:
    x = 0
    for c in body:
        x ^= c
    return b"$" + body + b"*" + (b"%02x" if lower else b"%02X") % x + b"\r\n"


def feed(line: bytes) -> tuple[int, object]:
    p = nmea.NMEA()
    buf = bytearray(line)
    return p.feed(buf, len(buf)), p


def ddmm(micro: int, degdigits: int, decimals: int) -> bytes:
    """micro-degrees -> (d)ddmm.mmmmmm with exactly the digits that give ``micro`` back."""
    deg, frac = divmod(micro, 1_000_000)
    m6 = frac * 60                                    # minutes in 1e-6, exact
    mins, rest = divmod(m6, 1_000_000)
    digits = f"{rest:06d}" + "0" * max(0, decimals - 6)
    return f"{deg:0{degdigits}d}{mins:02d}.{digits[:max(6, decimals)]}".encode()


fixes = st.fixed_dictionaries({
    "lat": st.integers(0, 89_999_999), "lon": st.integers(0, 179_999_999), "south": st.booleans(),
    "west": st.booleans(), "day": st.dates(date(2020, 1, 1), date(2099, 12, 31)), "hh": st.integers(0, 23),
    "mm": st.integers(0, 59), "ss": st.integers(0, 59), "ms": st.integers(0, 999), "knots": st.integers(0, 99_999),
    "talker": st.sampled_from([b"GP", b"GN", b"GL", b"GA"]), "decimals": st.integers(6, 7), "lower": st.booleans(),
})


@FUZZ
@given(fixes)
def test_rmc_round_trips_exactly(f: dict) -> None:
    d = f["day"]
    body = b",".join([f["talker"] + b"RMC", b"%02d%02d%02d.%03d" % (f["hh"], f["mm"], f["ss"], f["ms"]), b"A",
                      ddmm(f["lat"], 2, f["decimals"]), b"S" if f["south"] else b"N",
                      ddmm(f["lon"], 3, f["decimals"]), b"W" if f["west"] else b"E",
                      b"%d.%03d" % divmod(f["knots"], 1000), b"", b"%02d%02d%02d" % (d.day, d.month, d.year % 100),
                      b"", b"", b"A"])
    r, p = feed(sentence(body, f["lower"]))
    assert r == nmea.RMC and p.fix
    assert p.lat == (-1 if f["south"] else 1) * f["lat"] and p.lon == (-1 if f["west"] else 1) * f["lon"]
    assert p.speed == (f["knots"] * 463 + 4500) // 9000
    sod = f["hh"] * 3600 + f["mm"] * 60 + f["ss"]
    assert (p.sod, p.ms) == (sod, f["ms"])
    assert p.time == (d - date(2020, 1, 1)).days * 86400 + sod


@FUZZ
@given(fixes, st.integers(0, 40), st.integers(0, 999), st.integers(-999, 9999))
def test_gga_round_trips_exactly(f: dict, sats: int, hdop: int, alt: int) -> None:
    body = b",".join([f["talker"] + b"GGA", b"%02d%02d%02d" % (f["hh"], f["mm"], f["ss"]),
                      ddmm(f["lat"], 2, f["decimals"]), b"S" if f["south"] else b"N",
                      ddmm(f["lon"], 3, f["decimals"]), b"W" if f["west"] else b"E", b"1", b"%02d" % sats,
                      b"%d.%d" % divmod(hdop, 10), (b"-" if alt < 0 else b"") + b"%d.%d" % divmod(abs(alt), 10),
                      b"M", b"47.0", b"M", b"", b""])
    r, p = feed(sentence(body))
    assert r == nmea.GGA and p.fix
    assert (p.lat, p.lon) == ((-1 if f["south"] else 1) * f["lat"], (-1 if f["west"] else 1) * f["lon"])
    assert (p.sats, p.hdop, p.alt) == (sats, hdop, alt)


@FUZZ
@given(fixes, st.data())
def test_any_one_byte_change_in_the_checksummed_part_is_refused(f: dict, data: st.DataObject) -> None:
    body = b",".join([f["talker"] + b"RMC", b"%02d%02d%02d" % (f["hh"], f["mm"], f["ss"]), b"A",
                      ddmm(f["lat"], 2, 6), b"N", ddmm(f["lon"], 3, 6), b"E", b"1.0", b"", b"010126"])
    line = bytearray(sentence(body))
    i = data.draw(st.integers(1, len(body)))               # a byte between '$' and '*'
    new = data.draw(st.integers(0, 255).filter(lambda c: c != line[i] and c not in (10, 13, 42)))
    line[i] = new
    p = nmea.NMEA()
    assert p.feed(line, len(line)) == 0 and p.bad == 1


@FUZZ
@given(st.binary(max_size=110))
@example(sentence(b"GPRMC,1")[:-2])
@example(sentence(b"GPRMC,123519,A,4,N,0,E,1,,1"))
def test_arbitrary_lines_never_raise(line: bytes) -> None:
    check_nmea(line)


@FUZZ
@given(st.lists(st.sampled_from([b"GPGGA", b"GPRMC", b"GNRMC", b",", b"*", b".", b"-", b"A", b"N", b"S", b"W", b"E",
                                 b"1", b"12", b"123519", b"4807.038", b"01131.000", b"230394", b""]), max_size=16))
def test_checksum_valid_garbage_sentences_never_raise(parts: list[bytes]) -> None:
    check_nmea(sentence(b",".join(parts)))


# --- PMS5003 -------------------------------------------------------------------------

def frame(words: list[int]) -> bytes:
    f = bytearray(b"\x42\x4d\x00\x1c")
    for w in words:
        f += bytes((w >> 8, w & 0xFF))
    s = sum(f)
    return bytes(f + bytes(((s >> 8) & 0xFF, s & 0xFF)))


words13 = st.lists(st.integers(0, 0xFFFF), min_size=13, max_size=13)


@FUZZ
@given(words13, st.binary(max_size=40), st.binary(max_size=40))
def test_pms5003_frame_round_trips_anywhere_in_a_stream(words: list[int], before: bytes, after: bytes) -> None:
    buf = bytearray(before + frame(words) + after)
    out = [0, 0, 0]
    assert pms.parse(buf, len(before), out) and out == words[3:6]
    check_pms5003(bytes(buf))


@FUZZ
@given(words13, st.data())
def test_pms5003_any_one_byte_change_is_refused(words: list[int], data: st.DataObject) -> None:
    f = bytearray(frame(words))
    i = data.draw(st.integers(0, 31))
    f[i] = data.draw(st.integers(0, 255).filter(lambda c: c != f[i]))
    assert not pms.parse(f, 0, [0, 0, 0])


@FUZZ
@given(st.binary(max_size=100))
def test_pms5003_arbitrary_bytes_never_raise(raw: bytes) -> None:
    check_pms5003(raw)


# --- the same corpus under real MicroPython ----------------------------------------------

DIFF = r'''
import json
from ss.nmea import NMEA
from ss.drivers import pms5003
with open("corpus.json") as f:
    C = json.load(f)
for h in C["nmea"]:
    raw = bytes(int(h[i:i + 2], 16) for i in range(0, len(h), 2))
    for size in (len(raw), 100):
        b = bytearray(size)
        b[:len(raw)] = raw
        p = NMEA()
        try:
            r = p.feed(b, len(raw))
            print("n", r, p.fix, p.lat, p.lon, p.speed, p.sod, p.ms, p.time, p.sats, p.hdop, p.alt, p.good, p.bad)
        except Exception as e:
            print("n raised", type(e).__name__)
out = [0, 0, 0]
for h in C["pms"]:
    b = bytearray(int(h[i:i + 2], 16) for i in range(0, len(h), 2))
    hits = [(i, list(out)) for i in range(len(b) + 1) if pms5003.parse(b, i, out)]
    print("p", hits)
'''


def corpus(seed: int = 9, n: int = 250) -> dict[str, list[str]]:
    rng = random.Random(seed)
    valid = [sentence(b"GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"),
             sentence(b"GNRMC,083015.250,A,3352.1234567,S,15112.9876543,W,0.00,,010126,,,A"),
             sentence(b"GPRMC,1"), sentence(b"GPRMC,123519,A,4,N,0,E,1,,1"), sentence(b"GPGGA,1,,,,,1")]
    lines = list(valid)
    for _ in range(n):
        b = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(b))
            op = rng.random()
            if op < 0.4:
                b[i] = rng.randrange(256)
            elif op < 0.7:
                del b[i:i + rng.randint(1, 6)]
            else:
                b[i:i] = bytes(rng.randrange(32, 127) for _ in range(rng.randint(1, 4)))
        body = bytes(b[1:]).split(b"*")[0]
        lines.append(bytes(b[:100]) if rng.random() < 0.5 else sentence(body)[:100])   # re-checksummed half the time
    frames = [frame([rng.randrange(65536) for _ in range(13)]) for _ in range(20)]
    pmsc = [bytes(rng.randrange(256) for _ in range(rng.randint(0, 70))) + f + bytes(rng.randrange(256)
            for _ in range(rng.randint(0, 10))) for f in frames]
    pmsc += [bytes(f[:i]) + bytes([f[i] ^ 0x10]) + bytes(f[i + 1:]) for f in frames for i in (0, 3, 17, 31)]
    return {"nmea": [x.hex() for x in lines], "pms": [x.hex() for x in pmsc]}


@pytest.mark.skipif(not micropython_available(), reason="node or the MicroPython npm package missing")
def test_fuzz_corpus_gives_the_same_results_under_micropython(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    (tmp_path / "corpus.json").write_text(json.dumps(corpus()))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(FIRMWARE), str(FIRMWARE / "cpython")]))
    cpy = subprocess.run([sys.executable, "-c", DIFF], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=120, check=True).stdout
    files = firmware_files()
    files["/corpus.json"] = tmp_path / "corpus.json"
    mpy = run_micropython(DIFF, files, timeout=180)
    assert "raised" not in cpy, "the parser raised under CPython"
    assert cpy.count("\n") == mpy.count("\n") > 500
    assert mpy == cpy
    accepted = [ln for ln in cpy.splitlines() if ln.startswith("n ") and ln.split()[1] != "0"]
    assert len(accepted) >= 10, "the corpus exercises accepted sentences too"
