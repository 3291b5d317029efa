"""The firmware's hardware-independent code, run under CPython *and* the real
MicroPython interpreter (WebAssembly port), with the same check scripts.

Each check is a script in the MicroPython/CPython common subset that asserts
exact values and prints a few result lines; both interpreters must pass and
print the same thing.  Device models and fake buses come from tests/fakes.
"""

from __future__ import annotations

import ast
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.micropython import (FAKES, FIRMWARE, REPO, firmware_files, micropython_available,
                                       run_micropython)

VECTORS = REPO / "tests" / "vectors" / "v1.json"
needs_mpy = pytest.mark.skipif(not micropython_available(), reason="node or the MicroPython npm package missing")


def run_cpython(script: str, tmp: Path) -> str:
    """Run a check script in a fresh CPython with the firmware and fakes on sys.path."""
    shutil.copyfile(VECTORS, tmp / "vectors.json")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(FIRMWARE), str(FIRMWARE / "cpython"), str(FAKES), str(REPO)])
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp, env=env,
                       timeout=120)
    assert r.returncode == 0, f"CPython failed:\n{r.stderr}\n{r.stdout}"
    return r.stdout


def run_mpy(script: str) -> str:
    files = firmware_files()
    files["/vectors.json"] = VECTORS
    return run_micropython(script, files, timeout=120)


# --- the checks ------------------------------------------------------------------

CONTRACT = r'''
import json, struct, time
from binascii import hexlify
from contract import v1
with open("vectors.json") as f:
    V = json.load(f)
n = 0
for vec in V["encode"]:
    recs = [tuple(r) for r in vec["records"]]
    j = v1.encode_json(vec["device"], vec["bt"], vec["seq"], recs)
    assert j == vec["json"].encode(), (vec["name"], j)
    c = v1.encode_cbor(vec["device"], vec["bt"], vec["seq"], recs)
    assert hexlify(c).decode() == vec["cbor_hex"], vec["name"]
    n += 1
for vec in V["status"]:
    assert v1.encode_status(*vec["args"]) == vec["json"].encode(), vec["args"]
    n += 1
print("vectors", n)
assert v1.quantize("fill", 0.6254) == 625 and v1.quantize("temp", -12.345) == -1235
assert v1.quantize("lat", 51.5072183) == 51507218
assert v1.topic("leeds", "bin-0001", v1.UP) == "ss/v1/leeds/bin-0001/up"
assert v1.parse_topic("ss/v1/leeds/bin-0001/cfg") == ("leeds", "bin-0001", "cfg")
# interpreter facts the firmware relies on
assert struct.pack("<BBHIi", 2, 0, 999, 189475200, -1250) == b"\x02\x00\xe7\x03\x80\x29\x4b\x0b\x1e\xfb\xff\xff"
assert struct.unpack("<i", b"\xff\xff\xff\xff")[0] == -1
assert time.gmtime(1767225600)[:6] == (2026, 1, 1, 0, 0, 0)
assert 1767225600 - 1577836800 == 189388800
print("float", repr(1 / 3), repr(0.1 + 0.2))
'''

RING = r'''
import os
from ss.ring import Ring, REC, pack, check
def rm(d):
    try:
        for f in os.listdir(d):
            os.remove(d + "/" + f)
        os.rmdir(d)
    except OSError:
        pass
rm("ringt")
r = Ring("ringt", segments=3, seg_records=4)
for i in range(10):
    r.append(2, 100 + i, 1000 + i, i)
assert r.count == 10 and r.dropped == 0
buf = bytearray(6 * REC)
assert r.peek(buf, 6) == 6
assert [buf[i * REC + 4] for i in range(6)] == [232, 233, 234, 235, 236, 237]   # t low bytes
r.begin(6)
# reboot before the PUBACK: the same pack comes back
r = Ring("ringt", segments=3, seg_records=4)
assert r.count == 10 and r.inflight == 6 and r.seq == 0
r.commit(6)
assert r.count == 4 and r.seq == 1 and r.inflight == 0
# reboot: cursor, seq and counts survive
r = Ring("ringt", segments=3, seg_records=4)
assert (r.count, r.seq, r.rd_seg, r.rd_idx) == (4, 1, 2, 2), (r.count, r.seq, r.rd_seg, r.rd_idx)
assert sorted(os.listdir("ringt")) == ["00000002", "00000003", "cur"]
# overflow: 3 segments of 4 -> the oldest unsent records are dropped and counted
for i in range(10):
    r.append(2, 200 + i, 2000 + i)
assert r.count + r.dropped == 14, (r.count, r.dropped)
assert r.dropped == 2 and r.count == 12 and len(os.listdir("ringt")) == 4
# torn append (power cut mid-write): ignored, writing resumes in a fresh segment
last = "ringt/%08d" % r.last
with open(last, "ab") as f:
    f.write(b"\x02\x00\x00")
r = Ring("ringt", segments=3, seg_records=4)
before = r.count + r.dropped
r.append(2, 999, 3000)
assert r.count + r.dropped == before + 1 and r.last_n == 1     # a new segment was started
assert os.stat(last)[6] % REC == 3
# torn cursor entry: the previous one wins
with open("ringt/cur", "ab") as f:
    f.write(b"\x00" * 20)
r2 = Ring("ringt", segments=3, seg_records=4)
assert (r2.seq, r2.count) == (r.seq, r.count)
# drain everything
big = bytearray(64 * REC)
packs = 0
expect = (r2.count + 4) // 5
while r2.count:
    k = r2.peek(big, 5)
    for i in range(k):
        assert check(big, i * REC) == big[i * REC + 1]
    r2.commit(k)
    packs += 1
assert r2.count == 0 and packs == expect and r2.seq == 1 + packs, (packs, r2.seq)
r3 = Ring("ringt", segments=3, seg_records=4)
assert r3.count == 0 and r3.seq == r2.seq and r3.dropped == r2.dropped
# the cursor log compacts
for i in range(70):
    r3.append(1, i, 5000 + i)
    r3.commit(1)
assert os.stat("ringt/cur")[6] <= 64 * 20
print("ring ok", r3.seq, r3.dropped)
rm("ringt")
'''

STATE = r'''
from ss.ring import Ring, REC
from ss.state import State, LAST_TX, ERRORS, E_WIFI, URGENT
import os
class Mem:
    def __init__(self):
        self.b = None
    def load(self):
        return self.b
    def save(self, buf, n):
        self.b = bytes(buf[:n])
m = Mem()
st = State(m, 4)
assert st.cold and st.n == 0
st.v[LAST_TX] = 189388800
st.error(E_WIFI)
for d in os.listdir("."):
    pass
try:
    for f in os.listdir("ringst"):
        os.remove("ringst/" + f)
except OSError:
    pass
ring = Ring("ringst", 4, 16)
for i in range(6):
    st.add(ring, 3, 2000 + i, 189388800 + i)
assert st.n == 2 and ring.count == 4       # stage of 4 spilled once
st.save()
st2 = State(m, 4)                          # deep sleep: RTC memory kept
assert not st2.cold and st2.n == 2 and st2.v[LAST_TX] == 189388800 and st2.v[ERRORS] == 1
st2.flush(ring)
assert ring.count == 6 and st2.n == 0
bad = bytearray(m.b)
bad[20] ^= 0xFF
m.b = bytes(bad)
assert State(m, 4).cold                    # corrupted RTC memory: start afresh
assert st2.alarm(2, True) and not st2.alarm(2, True) and not st2.alarm(2, False) and st2.alarm(2, True)
print("state ok", len(m.b))
'''

SCHED = r'''
from ss.sched import Plan, Backoff, slot_after, slot_of, seed_of
p = Plan(600, 3600, 3600, seed=0)
assert slot_of(189389123, 600) == 189388800 and slot_after(189389123, 600) == 189389400
assert p.sample_due(189389123, 0) and not p.sample_due(189389123, 189388800)
assert p.sample_due(189389400, 189388800)
assert p.tx_due(100000, 96400, 0, 0) and not p.tx_due(100000, 96401, 0, 0)
assert p.tx_due(100000, 99999, 0, 1) and not p.tx_due(100000, 0, 100001, 1)
# backoff after failures: 60, 120, 240 ... capped at tx_s, plus < 10 % jitter
d = [p.retry_after(0, f) for f in range(1, 9)]
base = [60, 120, 240, 480, 960, 1920, 3600, 3600]
for got, b in zip(d, base):
    assert b <= got <= b + b // 10 + 1, (got, b)
assert p.next_wake(189389123, 189388800, 189388800, 0, 0) == 189389400
assert p.next_wake(189389123, 189388800, 189388800, 189389200, 1) == 189389200
assert p.next_wake(189389523, 189388800, 189388800, 0, 0) == 189389524      # a slot was missed: now
assert p.next_wake(189389123, 0, 0, 0, 0) == 189389400                     # never sampled: the next slot

b = Backoff(500, 8000, seed_of("bin-0001"))
seq = [b.next_ms() for _ in range(7)]
assert all(250 <= s <= 8000 for s in seq) and seq[-1] >= 4000, seq
print("sched", d)
'''

PMS = r'''
from ss.drivers import pms5003, sds011, a02yyuw
# A PMS5003 frame by hand: 42 4D, length 28, 13 words, checksum = sum of 30 bytes.
words = [12, 18, 22, 11, 17, 21, 2100, 620, 110, 9, 3, 1, 0]
f = bytearray(b"\x42\x4d\x00\x1c")
for w in words:
    f.append(w >> 8)
    f.append(w & 0xFF)
s = 0
for b in f:
    s += b
assert s == 0x42 + 0x4D + 0x1C + 12 + 18 + 22 + 11 + 17 + 21 + (2100 >> 8) + (2100 & 255) + (620 >> 8) + (620 & 255) + 110 + 9 + 3 + 1
f.append(s >> 8)
f.append(s & 0xFF)
assert len(f) == 32 and f[30:] == b"\x02\x35", f[30:]      # 565
out = [0, 0, 0]
assert pms5003.parse(f, 0, out) and out == [11, 17, 21]
g = bytearray(f)
g[12] ^= 1                                  # one bit flipped in PM2.5
assert not pms5003.parse(g, 0, out)
stream = bytearray(b"\x4d\x00\x42") + f
hits = [i for i in range(len(stream) - 31) if pms5003.parse(stream, i, out)]
assert hits == [3]
assert pms5003.command(0xE2, 0) == bytearray(pms5003.CMD_READ)
assert pms5003.command(0xE1, 0) == bytearray(pms5003.CMD_PASSIVE)
assert pms5003.command(0xE4, 1) == bytearray(pms5003.CMD_WAKE)
# SDS011: AA C0 25L 25H 10L 10H id id sum AB, 0.1 ug/m3
fr = bytearray(b"\xaa\xc0\xd4\x04\x3a\x0a\xa1\x60\x00\xab")
fr[8] = (0xd4 + 0x04 + 0x3a + 0x0a + 0xa1 + 0x60) & 0xFF
o2 = [0, 0]
assert sds011.parse(fr, 0, o2) and o2 == [1236, 2618]
fr[8] ^= 1
assert not sds011.parse(fr, 0, o2)
assert sds011.CMD_QUERY[17] == (4 + 0xFF + 0xFF) & 0xFF and len(sds011.CMD_QUERY) == 19
# A02YYUW: FF H L sum
assert a02yyuw.parse(b"\xff\x07\xa1\xa7", 0) == 1953
assert a02yyuw.parse(b"\xff\x07\xa1\xa8", 0) == -1
print("frames ok", out)
'''

NMEA = r'''
from ss.nmea import NMEA, GGA, RMC, checksum_ok, days_from_civil
def line(s):
    b = bytearray(100)
    b[:len(s)] = s
    return b, len(s)
p = NMEA()
b, n = line(b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n")
assert checksum_ok(b, n - 2)
assert p.feed(b, n) == GGA
assert (p.lat, p.lon, p.fix, p.sats, p.hdop, p.alt, p.sod) == (48117300, 11516667, True, 8, 9, 5454, 45319), (p.lat, p.lon)
b, n = line(b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r\n")
assert p.feed(b, n) == RMC
assert p.speed == 1152, p.speed                # 22.4 kn = 11.52 m/s
b, n = line(b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6B\r\n")
assert p.feed(b, n) == 0 and p.bad == 1
# Southern / western hemisphere, 7 decimals of minutes, a fixed date.
def cs(body):
    x = 0
    for c in body:
        x ^= c
    return body, x
body, x = cs(b"GNRMC,083015.250,A,3352.1234567,S,15112.9876543,W,0.00,,010126,,,A")
s = b"$" + body + b"*" + ("%02X" % x).encode()
b, n = line(s)
assert p.feed(b, n) == RMC
# 33 + 52.1234567/60 deg: 33868724.28 -> 33868724 (never through a float32)
assert (p.lat, p.lon, p.speed) == (-33868724, -151216461, 0), (p.lat, p.lon)
assert p.time == (days_from_civil(2026, 1, 1) - 18262) * 86400 + 8 * 3600 + 30 * 60 + 15 and p.ms == 250
assert days_from_civil(2026, 1, 1) * 86400 == 1767225600
# 51 deg 30.433098 min N: 51.5072183 deg, where float32 would be off by ~2 micro-degrees
body, x = cs(b"GPGGA,000001,5130.433098,N,00007.5648,W,1,05,1.2,11.0,M,47.0,M,,")
b, n = line(b"$" + body + b"*" + ("%02X" % x).encode())
assert p.feed(b, n) == GGA and (p.lat, p.lon) == (51507218, -126080), (p.lat, p.lon)
body, x = cs(b"GPGGA,000002,,,,,0,00,,,M,,M,,")
b, n = line(b"$" + body + b"*" + ("%02X" % x).encode())
assert p.feed(b, n) == GGA and not p.fix and p.lat == 51507218
b, n = line(b"$GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00*74")
assert p.feed(b, n) == 0
print("nmea ok", p.good, p.bad)
'''

AWEIGHT = r'''
import math
from array import array
from ss.aweight import AWeighting, response, iec_db
from ss.leq import offset_db, level_db
def tone_level(fs, f, db_spl, seconds=1.0):
    aw = AWeighting(fs)
    off = offset_db(-26.0, aw.g1k)
    amp = 32768 * 10 ** ((db_spl - 120) / 20.0)      # INMP441: 94 dB SPL = -26 dBFS
    n = int(fs * seconds)
    half = n // 2
    buf = array("h", [int(round(amp * math.sin(2 * math.pi * f * i / fs))) for i in range(n)])
    aw.energy(buf, half)                              # let the 20 Hz poles settle
    e = aw.energy(memoryview(buf)[half:], n - half)
    return level_db(e / (n - half), off)
l1k = tone_level(16000, 1000, 94.0)
assert abs(l1k - 94.0) < 0.5, l1k
l100 = tone_level(16000, 100, 94.0)
assert abs(l100 - (94.0 + iec_db(100))) < 0.5, (l100, iec_db(100))        # A(100 Hz) = -19.1 dB
l250 = tone_level(16000, 250, 80.0)
assert abs(l250 - (80.0 + iec_db(250))) < 0.5, l250
l4k = tone_level(32000, 4000, 70.0, 0.5)
assert abs(l4k - (70.0 + iec_db(4000))) < 0.5, l4k                       # +1.0 dB
lq = tone_level(16000, 1000, 40.0)
assert abs(lq - 40.0) < 0.5, lq                                          # quiet street at night
# the step-2 path reads the high halves of 32-bit I2S slots
aw = AWeighting(16000)
amp = 32768 * 10 ** ((94 - 120) / 20.0)
buf = array("h", [0] * 32000)
for i in range(16000):
    buf[2 * i + 1] = int(round(amp * math.sin(2 * math.pi * 1000 * i / 16000)))
view = memoryview(buf)[1:]
aw.energy(view, 8000, 2)
e = aw.energy(memoryview(buf)[16001:], 8000, 2)
l2 = level_db(e / 8000, offset_db(-26.0, aw.g1k))
assert abs(l2 - 94.0) < 0.5, l2
print("aweight %.1f %.1f %.1f %.1f %.1f" % (l1k, l100, l250, l4k, lq))
'''

LEQ = r'''
from ss.leq import Levels, q01
# One second per level; energies chosen so each 1 s level is exact (offset 0).
lv = Levels(1000, 0.0, fast_per_s=1)
levels = list(range(50, 110))               # 60 seconds, 50..109 dB
for L in levels:
    lv.add(10 ** (L / 10.0) * 1000, 1000)
laeq, lamax, l10, l90 = lv.report()
s = 0.0
for L in levels:
    s += 10 ** (L / 10.0)
import math
exp = q01(10 * math.log10(s / len(levels)))
assert laeq == exp, (laeq, exp)
assert lamax == 1090, lamax
assert l10 == 1040, l10                     # 6th highest of 60
assert l90 == 560, l90                      # 54th highest: exceeded in 54 of 60 s
assert lv.report() is None                  # reset after a report
lv2 = Levels(1000, 0.0, fast_per_s=4)
for k in range(4):
    lv2.add((10 ** 9.5 if k == 2 else 10 ** 6.0) * 250, 250)
r = lv2.report()
assert r[1] == 950 and r[0] == q01(10 * math.log10((3 * 10 ** 6.0 + 10 ** 9.5) / 4)), r
print("leq", laeq, lamax, l10, l90)
'''

BUMP = r'''
import math
from ss.bump import BumpDetector
G = 9807
def drive(trace, speed_cms):
    d = BumpDetector(100, 6000, 1000, 200, 20, 800)
    d.set_speed(speed_cms)
    ev = []
    for i in range(len(trace)):
        if d.feed(trace[i]):
            ev.append((d.at, d.peak, d.dur, d.ev_speed))
    return ev, d
def noise(n, amp, seed):
    x = seed
    out = []
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(G + (x % (2 * amp + 1)) - amp)
    return out
smooth = noise(3000, 800, 7)                 # +-0.8 m/s2 of road texture
ev, d = drive(smooth, 1200)
assert ev == [], ev
pothole = noise(600, 800, 3)
for i in range(6):                           # 60 ms half-sine, 9 m/s2 peak
    pothole[300 + i] += int(-9000 * math.sin(math.pi * (i + 0.5) / 6))
ev, d = drive(pothole, 1000)
assert len(ev) == 1, ev
at, peak, dur, v = ev[0]
assert 296 <= at <= 301 and 8000 <= peak <= 10000 and 30 <= dur <= 80 and v == 1000, ev[0]
ev, d = drive(pothole, 150)                  # below min speed: a parked van, ignored
assert ev == [] and d.rejected == 0
ev, d = drive(pothole, 3000)                 # same shake at 30 m/s: mild after normalisation
assert ev == [], ev
hump = noise(600, 300, 5)
for i in range(120):                         # 1.2 s undulation (speed hump taken slowly)
    hump[200 + i] += int(4000 * math.sin(math.pi * i / 120))
ev, d = drive(hump, 400)
assert ev == [] and d.rejected >= 1, ev
print("bump", at, peak, dur)
'''

FILL = r'''
from array import array
from ss import fill
a = array("i", [5829, 5811, 9000, 5820, 100, 5815, 5833])
assert fill.median(a, 7) == 5820 and list(a) == [100, 5811, 5815, 5820, 5829, 5833, 9000]
assert fill.median(array("i", [4, 1, 3, 2]), 4) == 2
assert fill.sound_speed10(2000) == 3434 and fill.sound_speed10(-1000) == 3252
assert fill.echo_mm(5820, 3434) == 999         # 5.82 ms round trip at 20 degC ~ 1 m
assert fill.fill_milli(1000, 1000, 200) == 0 and fill.fill_milli(200, 1000, 200) == 1000
assert fill.fill_milli(500, 1000, 200) == 625 and fill.fill_milli(5000, 1000, 200) == -1000
assert fill.tilt_deg10(0, 0, 1000) == 0 and fill.tilt_deg10(1000, 0, 0) == 900
assert fill.tilt_deg10(0, 500, 866) == 300 and fill.tilt_deg10(0, 0, -1000) == 1800
print("fill ok")
'''

CONFIG = r'''
import json
from ss import config as C
good = {"tenant": "leeds", "device_id": "bin-0001", "kind": "bin_fill",
        "wifi": {"ssid": "council-iot", "password": "pw"},
        "mqtt": {"host": "mqtt.example.org", "username": "bin-0001", "password": "s3cret"},
        "calibration": {"empty_mm": 1100}}
c = C.validate(good)
assert c["mqtt"]["port"] == 8883 and c["mqtt"]["tls"] is True
assert c["cadence"]["sample_s"] == 600 and c["calibration"]["empty_mm"] == 1100
assert c["calibration"]["full_mm"] == 200 and c["sensors"]["range"] == "jsn_sr04t"
assert c["wifi"] == [("council-iot", "pw")]
bad = {"tenant": "Leeds", "kind": "toaster", "wifi": {"password": "x"},
       "mqtt": {"host": "h", "port": 70000, "username": "u", "password": "p", "tls": "yes"},
       "cadence": {"sample_s": 0, "bogus": 1}, "colour": "red"}
try:
    C.validate(bad)
    raise AssertionError("accepted")
except C.ConfigError as e:
    msg = str(e)
for part in ("colour: unknown setting", "tenant: 1-64", "device_id: 1-64", "kind: must be one of",
             "wifi[0].ssid: required", "mqtt.tls: must be true or false", "mqtt.port: 70000 outside",
             "cadence.bogus: unknown setting", "cadence.sample_s: 0 outside 1..86400"):
    assert part in msg, (part, msg)
try:
    C.validate(dict(good, calibration={"empty_mm": 300, "full_mm": 400}))
    raise AssertionError("accepted")
except C.ConfigError as e:
    assert "full_mm: must be less than empty_mm" in str(e)
# remote updates: only newer revs, only the remote sections
assert C.merge_remote(c, {"rev": 0, "cadence": {"tx_s": 600}}) is None
n = C.merge_remote(c, {"rev": 3, "cadence": {"tx_s": 600}, "thresholds": {"fill": 0.7}})
assert n["rev"] == 3 and n["cadence"]["tx_s"] == 600 and n["cadence"]["sample_s"] == 600
assert n["thresholds"]["fill"] == 0.7 and n["mqtt"] == c["mqtt"]
for upd in ({"rev": 4, "mqtt": {"host": "evil"}}, {"rev": 4, "cadence": {"tx_s": 1}}, {"cadence": {}}):
    try:
        C.merge_remote(n, upd)
        raise AssertionError(upd)
    except C.ConfigError:
        pass
C.save(n, "cfgtest.json")
assert C.load("cfgtest.json") == n
C.save(c, "cfgtest.json")                    # replaces the existing file
assert C.load("cfgtest.json")["rev"] == 0
with open("cfgtest.json", "w") as f:
    f.write("{not json")
try:
    C.load("cfgtest.json")
    raise AssertionError("accepted")
except C.ConfigError as e:
    assert "not valid JSON" in str(e)
print("config ok")
'''

DRIVERS = r'''
import world, devices, machine
from array import array
from ss.drivers.sht3x import SHT3x, crc8
from ss.drivers.scd4x import SCD4x
from ss.drivers.bme280 import BME280
from ss.drivers.lis3dh import LIS3DH
from ss.drivers.adxl345 import ADXL345
from ss.drivers.vl53l1x import VL53L1X, DEFAULT_CONFIG
from ss.drivers.jsn_sr04t import JSNSR04T
from ss.drivers.pms5003 import PMS5003
from ss.drivers.a02yyuw import A02YYUW
from ss.drivers.gps import GPS
from ss.drivers.battery import Battery
def nosleep(ms):
    world.advance(ms)
assert crc8(b"\xbe\xef", 0, 2) == 0x92                 # Sensirion datasheet example
bus = machine.I2C(0)
devices.i2c[0x44] = devices.SHT3x()
world.temp_c = 23.45
world.rh = 41.2
s = SHT3x(bus, sleep_ms=nosleep)
assert s.read() and (s.t, s.rh) == (2345, 412), (s.t, s.rh)
devices.i2c[0x44].corrupt = True
assert not s.read() and s.errors == 1 and s.t == 2345
devices.i2c[0x62] = devices.SCD4x()
world.co2 = 812
c = SCD4x(bus, sleep_ms=nosleep)
assert not c.ready()
c.start()
assert c.ready() and c.read() and (c.co2, c.t, c.rh) == (812, 2345, 412)
devices.i2c[0x76] = devices.BME280()
b = BME280(bus, sleep_ms=nosleep)
assert b.read() and b.t == 2508, b.t                   # Bosch's worked example: 25.08 degC
rh_bme = b.rh
devices.i2c[0x18] = devices.LIS3DH()
world.tilt = (-120, 500, 866)
xyz = array("i", [0, 0, 0])
a = LIS3DH(bus)
a.read(xyz)
assert list(xyz) == [-120, 500, 866], list(xyz)
devices.i2c[0x53] = devices.ADXL345()
a2 = ADXL345(bus)
a2.read(xyz)
assert all(abs(g - w) <= 4 for g, w in zip(xyz, (-120, 500, 866))), list(xyz)
# FIFO at 100 Hz: 250 ms of samples are waiting
world.accel_fn = lambda i: (0, 0, 1000 + i)
a.start_fifo()
t0 = world.now_ms
devices.i2c[0x18].next = t0 * 100 // 1000
world.advance(250)
buf = array("i", [0] * 96)
n = a.read_fifo(buf, 32)
assert n == 25 and buf[2] == 1000 + t0 // 10 and buf[3 * 24 + 2] == buf[2] + 24, (n, buf[2])
world.accel_fn = None
devices.i2c[0x29] = devices.VL53L1X()
world.distance_mm = 733
v = VL53L1X(bus, sleep_ms=nosleep)
assert len(DEFAULT_CONFIG) == 91 and devices.i2c[0x29].config == DEFAULT_CONFIG
assert v.read_mm() == 733 and devices.i2c[0x29].cleared == 5
world.temp_c = 20.0
world.distance_mm = 1000
j = JSNSR04T(machine.Pin(25), machine.Pin(26), 7, pulse=machine.time_pulse_us, sleep_ms=nosleep)
assert j.read_mm(2000) == 1000
assert j.read_mm(-1000) == 947       # told 10 degC colder than the air: 5 % short
devices.uart[1] = devices.PMS5003()
world.pm = (4, 11, 17)
p = PMS5003(machine.UART(1), sleep_ms=nosleep)
assert devices.uart[1].passive
p.wake()
assert p.read() and p.pm == [4, 11, 17], p.pm
p.sleep()
assert not devices.uart[1].awake and not p.read() and p.errors == 1
devices.uart[2] = devices.A02YYUW()
world.distance_mm = 1953
u = A02YYUW(machine.UART(2), 5, sleep_ms=nosleep)
assert u.read_mm() == 1953
devices.uart[0] = devices.GPSModule()
world.gps_fn = lambda s: ("5330.1234", "N", "00132.5000", "W", "019.4")
world.advance(1000)
g = GPS(machine.UART(0))
assert g.poll() == 2
assert (g.nmea.lat, g.nmea.lon, g.nmea.speed, g.nmea.fix) == (53502057, -1541667, 998, True)
world.vbat_mv = 3712
bat = Battery(machine.ADC(machine.Pin(35)), 2.0)
assert bat.read_mv() == 3712
print("drivers ok", rh_bme)
'''

CHECKS = {"contract": CONTRACT, "ring": RING, "state": STATE, "sched": SCHED, "frames": PMS, "nmea": NMEA,
          "aweight": AWEIGHT, "leq": LEQ, "bump": BUMP, "fill": FILL, "config": CONFIG, "drivers": DRIVERS}


@pytest.mark.parametrize("name", list(CHECKS))
def test_cpython(name, tmp_path):
    out = run_cpython(CHECKS[name], tmp_path)
    assert out.strip()


@needs_mpy
@pytest.mark.micropython
@pytest.mark.parametrize("name", list(CHECKS))
def test_micropython(name, tmp_path):
    out = run_mpy(CHECKS[name])
    cpy = run_cpython(CHECKS[name], tmp_path)
    if name == "contract":
        # same vectors, same bytes; the float line documents the interpreter's precision
        assert out.splitlines()[0] == cpy.splitlines()[0] == "vectors 9"
        assert "float 0.3333333333333333 0.30000000000000004" in out
    else:
        assert out == cpy


# --- CPython-only structure checks -------------------------------------------------

PURE = ["ss/config.py", "ss/ring.py", "ss/state.py", "ss/sched.py", "ss/nmea.py", "ss/aweight.py",
        "ss/leq.py", "ss/bump.py", "ss/fill.py", "ss/metrics.py", "ss/clock.py",
        "ss/kinds/bin_fill.py", "ss/kinds/air.py", "ss/kinds/noise.py", "ss/kinds/road.py",
        "ss/drivers/a02yyuw.py", "ss/drivers/pms5003.py", "ss/drivers/sds011.py", "ss/drivers/sht3x.py",
        "ss/drivers/gps.py", "ss/drivers/bme280.py", "ss/drivers/scd4x.py", "ss/drivers/lis3dh.py",
        "ss/drivers/adxl345.py", "ss/drivers/vl53l1x.py", "ss/drivers/i2s_mic.py", "ss/drivers/battery.py"]


@pytest.mark.parametrize("rel", PURE)
def test_pure_modules_import_no_hardware(rel):
    tree = ast.parse((FIRMWARE / rel).read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for n in names:
            assert n.split(".")[0] not in ("machine", "network"), f"{rel} imports {n}"


def _kernel_body(path: Path, name: str) -> str:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            node.decorator_list = []
            node.name = "k"
            node.returns = None
            for a in node.args.args:
                a.annotation = None
            return ast.dump(node)
    raise AssertionError(f"{name} not in {path}")


def test_viper_kernel_is_the_tested_kernel():
    assert _kernel_body(FIRMWARE / "ss" / "akern.py", "kernel") == _kernel_body(FIRMWARE / "ss" / "aweight.py", "_kernel")


def test_metric_ids_match_the_contract():
    sys.path[:0] = [str(FIRMWARE / "cpython")]
    try:
        ns: dict = {}
        exec((FIRMWARE / "ss" / "metrics.py").read_text(), ns)
    finally:
        sys.path.remove(str(FIRMWARE / "cpython"))
    from contract import v1
    for row in v1.METRICS:
        assert ns[row[1].upper()] == row[0]


def test_aweighting_design_tracks_iec_61672():
    sys.path[:0] = [str(FIRMWARE), str(FIRMWARE / "cpython")]
    try:
        from ss import aweight as aw
    finally:
        del sys.path[:2]
    for fs, freqs, tol in ((16000, (31.5, 63, 125, 250, 500, 1000, 2000), 1.0),
                           (32000, (31.5, 63, 125, 250, 500, 1000, 2000, 4000, 6300), 1.3),
                           (48000, (31.5, 125, 1000, 4000, 8000), 1.3)):
        co = aw.quantize(aw.design(fs))
        for f in freqs:
            got = 20 * math.log10(aw.response(co, f, fs))
            assert abs(got - aw.iec_db(f)) <= tol, (fs, f, got, aw.iec_db(f))
    assert abs(aw.iec_db(1000)) < 0.01 and abs(aw.iec_db(100) + 19.1) < 0.05


def test_bme280_humidity_matches_bosch_float_formula(tmp_path):
    """The integer compensation in the driver against the datasheet's float version."""
    out = run_cpython(DRIVERS, tmp_path)
    rh_int = int(out.split()[-1]) / 10
    t_fine = 125759.52   # from the temperature example; humidity below uses the float code
    h1, h2, h3, h4, h5, h6 = 75, 362, 0, 324, 50, 30
    adc_h = 30154
    var_h = t_fine - 76800.0
    var_h = (adc_h - (h4 * 64.0 + h5 / 16384.0 * var_h)) * (
        h2 / 65536.0 * (1.0 + h6 / 67108864.0 * var_h * (1.0 + h3 / 67108864.0 * var_h)))
    var_h = var_h * (1.0 - h1 * var_h / 524288.0)
    assert abs(rh_int - var_h) < 0.2, (rh_int, var_h)
