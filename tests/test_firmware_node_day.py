"""Whole nodes on fake hardware in simulated time, under the real MicroPython interpreter.

Each scenario boots the firmware (firmware/main.py's ss.app.main) against the
fakes in tests/fakes, lets simulated time run (deep-sleep wakes are resets:
the firmware modules are dropped and main runs again; only flash, RTC memory
and the world survive), and prints every message the fake broker accepted.
Here the payloads go through the backend's decoder (contract.decode.decode):
every reading must be accepted, and after dropping same-bseq resends nothing
is lost and nothing is doubled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

import pytest

from contract import v1
from contract.decode import decode
from tests.support.micropython import firmware_files, micropython_available, run_micropython

pytestmark = [pytest.mark.micropython,
              pytest.mark.skipif(not micropython_available(), reason="node or the MicroPython npm package missing")]

T0 = 1767225600          # tests/fakes/world.py: simulated start, 2026-01-01T00:00:00Z
H = 3600


@dataclass
class Pub:
    t_ms: int            # simulated ms since T0 when the broker accepted it
    topic: str
    retain: bool
    payload: bytes


@dataclass
class Run:
    pubs: list[Pub] = field(default_factory=list)
    wills: list[Pub] = field(default_factory=list)
    result: dict = field(default_factory=dict)

    def on(self, channel: str) -> list[Pub]:
        return [p for p in self.pubs if p.topic.endswith("/" + channel)]


def simulate(script: str, board: str = "esp32", timeout: float = 240) -> Run:
    out = run_micropython(script, firmware_files(board), timeout=timeout)
    run = Run()
    for line in out.splitlines():
        parts = line.split(" ")
        if parts[0] == "PUB":
            run.pubs.append(Pub(int(parts[1]), parts[2], parts[3] == "1", bytes.fromhex(parts[4])))
        elif parts[0] == "WILL":
            run.wills.append(Pub(int(parts[1]), parts[2], True, bytes.fromhex(parts[3])))
        elif parts[0] == "RESULT":
            run.result = json.loads(line[7:])
    assert run.result, out[-2000:]
    return run


@dataclass
class Delivered:
    readings: dict            # (metric, time_ms) -> value
    packs: list               # (bseq, broker time ms, [Reading])
    resent: list              # bseqs that arrived more than once


def delivered(run: Run, device: str, kind: str) -> Delivered:
    """Decode every pack like the backend, check resends are byte-identical, merge."""
    by_seq: dict[int, bytes] = {}
    packs, resent = [], []
    readings: dict = {}
    for p in run.on("up"):
        pack = decode(p.payload, device_id=device, received_ms=T0 * 1000 + p.t_ms, kind=kind)
        assert pack.rejects == [] and pack.duplicates == 0, (pack.rejects, pack.duplicates)
        if pack.seq in by_seq:
            assert by_seq[pack.seq] == p.payload, f"bseq {pack.seq} reused for different data"
            resent.append(pack.seq)
            continue
        by_seq[pack.seq] = p.payload
        packs.append((pack.seq, p.t_ms, pack.readings))
        for r in pack.readings:
            key = (r.metric, r.time_ms)
            assert key not in readings, f"reading {key} delivered twice under different bseqs"
            readings[key] = r.value
    seqs = [s for s, _, _ in packs]
    assert seqs == list(range(len(seqs))), seqs          # bseq counts up from 0, no gaps
    return Delivered(readings, packs, resent)


def times(d: Delivered, metric: str) -> list[int]:
    return sorted(t for m, t in d.readings if m == metric)


def statuses(run: Run) -> list[dict]:
    return [json.loads(p.payload) for p in run.on("status")]


# --- bin fill, ESP32, deep sleep ------------------------------------------------------

BIN_DAY = r'''
import json, world, devices, sim
from umqtt.simple import BROKER
devices.standard("bin_fill")
world.outages = [(6 * 3600, 11 * 3600)]
world.distance_fn = lambda s: 950 - s * 700 // 86400           # fill 0.06 -> 0.94 over the day
world.temp_fn = lambda s: 85.0 if 16 * 3600 <= s < 16 * 3600 + 900 else 12.0 + (s % 86400) / 14400
BROKER.lose_ack = {11}                                          # one PUBACK (of an up pack) never arrives
def backend_sets_config():
    BROKER.retained["ss/v1/leeds/binfill-0001/cfg"] = json.dumps(
        {"rev": 2, "calibration": {"full_mm": 300}}).encode()
world.at(12 * 3600 + 1800, backend_sets_config)
sim.write_config(sim.base_config("bin_fill", cadence={"sample_s": 600, "tx_s": 3600},
                                 calibration={"empty_mm": 1000, "full_mm": 200}))
wakes = sim.run(86400 + 300)
ring, stage = sim.leftovers(24)
with open(sim.CONFIG) as f:
    rev = json.load(f)["rev"]
import network, ntptime
print("RESULT", json.dumps({"wakes": wakes, "ring": ring, "stage": stage, "bites": world.wdt_bites,
      "deep": len([s for s in world.sleeps if s[0] == "deep"]), "rev": rev, "ntp": ntptime.syncs}))
'''


@pytest.fixture(scope="module")
def bin_day():
    return simulate(BIN_DAY, "esp32")


def fill_milli(d, empty, full):
    span = empty - full
    return ((empty - d) * 1000 + span // 2) // span


def test_bin_day_nothing_lost_nothing_doubled(bin_day):
    d = delivered(bin_day, "binfill-0001", "bin_fill")
    res = bin_day.result
    got = times(d, "fill")
    # one sample per 10-min slot, taken in its first minute (a retry wake can come first)
    slot = [(t // 1000 - T0) // 600 for t in got]
    assert slot == list(range(len(slot)))
    assert all((t // 1000 - T0) % 600 < 30 for t in got)
    assert sum(1 for t in got if (t // 1000 - T0) % 600 == 0) >= len(got) - 6
    undelivered = (res["ring"] + res["stage"]) // 4                      # 4 records per sample
    assert len(got) + undelivered == 86400 // 600 + 1                    # slots 00:00 .. 24:00
    assert 0 < undelivered <= 6                                          # only after the last send
    for m in ("distance", "temp", "tilt"):
        assert times(d, m) == got
    assert len(d.resent) == 1                                            # the lost PUBACK: resent as is
    assert len(bin_day.wills) == 1 and json.loads(bin_day.wills[0].payload)["state"] == "offline"
    assert res["bites"] == 0 and res["ntp"] >= 1
    assert res["deep"] == res["wakes"] >= 145                            # every wake ended in deep sleep


def test_bin_day_outage_buffers_then_drains(bin_day):
    d = delivered(bin_day, "binfill-0001", "bin_fill")
    assert not [p for p in bin_day.pubs if 6 * H * 1000 <= p.t_ms < 11 * H * 1000]
    first_after = min(t for _, t, _ in d.packs if t >= 11 * H * 1000)
    assert first_after <= (11 * H + 3600 + 360 + 600) * 1000             # backoff capped at tx_s (+10 % jitter)
    backlog = [r for _, t, rs in d.packs if t == first_after for r in rs]
    assert len([r for r in backlog if r.metric == "fill"]) >= 30         # 5 h of 10-min samples
    buffered = [v for (m, t), v in d.readings.items() if m == "buffered"]
    assert max(buffered) >= 120


def test_bin_day_thresholds_send_at_once(bin_day):
    d = delivered(bin_day, "binfill-0001", "bin_fill")
    pub_times = sorted(t for _, t, _ in d.packs)
    fire = min(t for (m, t), v in d.readings.items() if m == "temp" and v >= 60)
    assert fire == (T0 + 16 * H) * 1000
    full = min(t for (m, t), v in d.readings.items() if m == "fill" and v >= 0.8)
    for t in (fire, full):
        assert any(0 <= p - (t - T0 * 1000) < 60_000 for p in pub_times), t   # same wake, not the hourly slot


def test_bin_day_remote_config(bin_day):
    d = delivered(bin_day, "binfill-0001", "bin_fill")
    acks = [json.loads(p.payload) for p in bin_day.on("ack")]
    assert acks == [{"cfg": 2, "ok": True}]
    t_ack = bin_day.on("ack")[0].t_ms
    assert bin_day.result["rev"] == 2                                    # saved to flash
    for (m, t), v in d.readings.items():
        if m != "fill":
            continue
        dist = round(d.readings[("distance", t)] * 1000)
        full = 300 if t - T0 * 1000 > t_ack else 200
        assert round(v * 1000) == fill_milli(dist, 1000, full), (t, dist, v)


def test_bin_day_status_and_health(bin_day):
    d = delivered(bin_day, "binfill-0001", "bin_fill")
    st = statuses(bin_day)
    assert all(p.retain for p in bin_day.on("status"))
    assert {s["state"] for s in st} == {"online", "sleeping"}
    last = st[-1]
    assert last["state"] == "sleeping" and last["fw"] == "0.1.0"
    assert last["next_wake"] > last["t"] and last["next_wake"] - last["t"] <= 3600
    assert last["bat_v"] == 3.9 and last["rssi"] == -67
    assert last["errors"] >= 3                                           # failed Wi-Fi attempts in the outage
    bat = [v for (m, t), v in d.readings.items() if m == "bat_v"]
    assert bat and set(bat) == {3.9}
    assert len(bat) >= 5                                                 # health every 4 h
    up = sorted((t, v) for (m, t), v in d.readings.items() if m == "uptime")
    assert up[0][1] < 60 and up[-1][1] > 20 * H                          # since power-on, across deep sleeps
    assert all(v == (t - up[0][0]) / 1000 + up[0][1] for t, v in up)


# --- power loss: the flash ring survives, the clock does not --------------------------

POWER = r'''
import json, world, devices, sim
devices.standard("bin_fill")
world.outages = [(2 * 3600, 5 * 3600)]
world.at(3 * 3600 + 60, world.power_loss)
sim.write_config(sim.base_config("bin_fill", cadence={"sample_s": 600, "tx_s": 3600, "stage": 0}))
wakes = sim.run(7 * 3600)
ring, stage = sim.leftovers(0)
print("RESULT", json.dumps({"wakes": wakes, "ring": ring, "stage": stage, "losses": world.power_losses}))
'''


def test_power_loss_keeps_flash_buffer():
    run = simulate(POWER)
    assert run.result["losses"] == 1
    d = delivered(run, "binfill-0001", "bin_fill")
    got = [(t // 1000 - T0) for t in times(d, "fill")]
    before = [k * 600 for k in range(0, 3 * 6 + 1)]            # sampled up to 03:00, buffered on flash
    assert [t - t % 600 for t in got[:len(before)]] == before   # all survived the power cut
    # between the cut and the return of Wi-Fi the RTC is unset: those samples have no
    # time and are counted as dropped, not invented
    after = [t for t in got if t > 3 * 3600]
    assert after and min(after) >= 5 * 3600
    dropped = [v for (m, t), v in d.readings.items() if m == "dropped"]
    assert max(dropped) >= 4 * 3                                # >= 3 samples x 4 metrics


# --- air quality, Pico W, lightsleep ----------------------------------------------------

AIR_DAY = r'''
import json, world, devices, sim
devices.standard("air")
world.outages = [(13 * 3600, 15 * 3600 + 1800)]
world.pm_fn = lambda s: (30, 70, 95) if 18 * 3600 <= s < 18 * 3600 + 1800 else (4 + s // 7200, 8 + s // 5400, 12 + s // 4000)
world.co2 = 655
sim.write_config(sim.base_config("air", cadence={"sample_s": 300, "tx_s": 3600}, sensors={"co2": "scd4x"}))
wakes = sim.run(86400 + 120)
print("RESULT", json.dumps({"bites": world.wdt_bites, "light": len([s for s in world.sleeps if s[0] == "light"]),
      "deep": len([s for s in world.sleeps if s[0] == "deep"]), "max_light": max(s[1] for s in world.sleeps),
      "pms_requests": devices.uart[1].requests, "pms_awake": devices.uart[1].awake}))
'''


def test_air_day_on_pico_w():
    run = simulate(AIR_DAY, "picow")
    res = run.result
    assert res["deep"] == 0 and res["light"] > 288                       # Pico: lightsleep, no resets
    assert res["max_light"] <= 4150 and res["bites"] == 0                # slept in watchdog-sized steps
    d = delivered(run, "air-0001", "air")
    got = times(d, "pm25")
    slots = [(T0 + k * 300) * 1000 for k in range(len(got))]
    assert got == slots and len(got) >= 86400 // 300 - 12               # every 5-min sample up to the last send
    assert len(got) <= res["pms_requests"] <= 86520 // 300 + 1          # one passive-mode request per sample
    assert res["pms_awake"] is False                                     # fan off between samples
    for m in ("pm1", "pm10", "temp", "rh", "co2"):
        assert times(d, m) == got, m
    assert {v for (m, t), v in d.readings.items() if m == "co2"} == {655.0}
    assert d.readings[("pm25", (T0 + 18 * H) * 1000)] == 70.0
    assert not [p for p in run.pubs if 13 * H * 1000 <= p.t_ms < (15 * H + 1800) * 1000]
    spike = (T0 + 18 * H) * 1000
    assert any(0 <= t - (spike - T0 * 1000) < 120_000 for _, t, _ in d.packs)     # PM2.5 alarm sent at once
    # a 30 s fan warm-up precedes each reading: PM is stamped at the slot, measured after warm-up
    assert d.readings[("temp", got[0])] == 18.0


# --- noise, continuous ------------------------------------------------------------------

NOISE = r'''
import json, world, devices, sim
devices.standard("noise")
world.rtc_off_s = 0                      # RTC already set (e.g. kept by a backup cell)
world.tone_fn = lambda s: (1000, 50.0 + (s % 10) * 3)
world.outages = [(25, 45)]
sim.write_config(sim.base_config("noise", cadence={"sample_s": 10, "tx_s": 20},
                                 calibration={"mic_rate": 8000}))
sim.run(66)
print("RESULT", json.dumps({"bites": world.wdt_bites, "blocks": devices.mic.blocks}))
'''


def test_noise_node_levels_through_an_outage():
    run = simulate(NOISE)
    d = delivered(run, "noise-0001", "noise")
    ends = [(T0 + s) * 1000 for s in (10, 20, 30, 40, 50, 60)]
    assert times(d, "laeq") == ends
    levels = [50.0 + 3 * k for k in range(10)]
    import math
    laeq = 10 * math.log10(sum(10 ** (l / 10) for l in levels) / 10)
    for t in ends:
        assert abs(d.readings[("laeq", t)] - laeq) <= 0.3, d.readings[("laeq", t)]
        assert abs(d.readings[("lamax", t)] - 77.0) <= 0.3
        assert abs(d.readings[("l10", t)] - 77.0) <= 0.3              # 1st of 10 seconds from the top
        assert abs(d.readings[("l90", t)] - 53.0) <= 0.3              # 9th
    assert not [p for p in run.pubs if 25_000 <= p.t_ms < 45_000]
    assert run.result["bites"] == 0 and run.result["blocks"] >= 66 * 32 - 2
    # nothing but levels leaves the node: every up record is one of the contract's noise metrics
    assert {m for m, _ in d.readings} <= {"laeq", "lamax", "l10", "l90", "bat_v", "rssi", "uptime",
                                         "buffered", "errors", "dropped"}


# --- road, Pico W, continuous, GPS time -------------------------------------------------

ROAD = r'''
import json, math, world, devices, sim
devices.standard("road")
world.accel_hz = 100
POTHOLES = (12000, 40000, 70000)              # sample index (10 ms each): 120 s, 400 s, 700 s
def accel(i):
    z = 1000 + (i * 7919) % 61 - 30
    for p in POTHOLES:
        if p <= i < p + 6:
            z -= int(1000 * math.sin(math.pi * (i - p + 0.5) / 6))
    return (0, 0, z)
world.accel_fn = accel
def track(s):
    mins = 30.1234 + s * 0.0065
    return ("53%07.4f" % mins, "N", "00132.5000", "W", "023.3")
world.gps_fn = track
world.outages = [(300, 600)]
sim.write_config(sim.base_config("road", cadence={"sample_s": 60, "tx_s": 120}))
sim.run(900)
print("RESULT", json.dumps({"bites": world.wdt_bites}))
'''


def test_road_node_reports_potholes_with_position():
    run = simulate(ROAD, "picow")
    d = delivered(run, "road-0001", "road")
    ev = times(d, "bump_g")
    assert len(ev) == 3
    for t, p_s in zip(ev, (120, 400, 700)):
        assert abs(t - (T0 + p_s) * 1000) <= 60, (t, p_s)                       # start of the pothole
        assert 8.0 <= d.readings[("bump_g", t)] <= 11.0                         # ~1 g dip
        assert 0.03 <= d.readings[("bump_dur", t)] <= 0.08
        assert d.readings[("speed", t)] == 11.99                               # 23.3 kn
        for m in ("bump_dur", "speed", "lat", "lon"):
            assert (m, t) in d.readings
        # position straight from the NMEA digits of that second (or the one before)
        cands = []
        for s in (p_s, p_s - 1):
            mins = Decimal("30.1234") + s * Decimal("0.0065")
            mins = mins.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
            cands.append(int((53 + mins / 60) * 1_000_000 + Decimal("0.5")))
        assert round(d.readings[("lat", t)] * 1e6) in cands
        assert round(d.readings[("lon", t)] * 1e6) == -1_541_667
    assert not [p for p in run.pubs if 300_000 <= p.t_ms < 600_000]
    assert run.result["bites"] == 0


# --- provisioning errors ------------------------------------------------------------

BAD_CONFIG = r"""
import json, world, devices, sim
devices.standard("bin_fill")
sim.write_config({"tenant": "leeds", "device_id": "Bin 1", "kind": "bin_fill",
                  "wifi": {"ssid": "x"}, "mqtt": {"host": "h", "port": 0}})
wakes = sim.run(3600)
print("RESULT", json.dumps({"wakes": wakes, "wdt": world.wdt_timeout, "sleeps": len(world.sleeps)}))
"""


def test_bad_config_is_reported_and_the_node_stays_at_the_repl():
    out = run_micropython(BAD_CONFIG, firmware_files(), timeout=60)
    err = next(ln for ln in out.splitlines() if "CONFIG ERROR" in ln)
    for part in ("device_id: 1-64", "mqtt.port: 0 outside 1..65535", "mqtt.username: required",
                 "mqtt.password: required"):
        assert part in err, err
    res = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    assert res == {"wakes": 1, "wdt": 0, "sleeps": 0}       # no watchdog, no sleep: fixable over USB
