"""The on-device self-test (firmware/ss/selftest.py) under the real MicroPython interpreter
on fake hardware (tests/fakes): a passing node of every kind, and failing sensors."""

from __future__ import annotations

import json

import pytest

from streetsense.firmware.build import build
from tests.support.micropython import firmware_files, micropython_available, run_micropython

pytestmark = [pytest.mark.micropython,
              pytest.mark.skipif(not micropython_available(), reason="node or the MicroPython npm package missing")]


def selftest(kind: str, setup: str = "", board: str = "esp32", config: dict | None = None, files=None,
             call: str = "t.main(config_path='/config.json', clock=FakeClock(), board=board)") -> tuple[dict, str]:
    script = f"""
import os, json, world, devices, sim
devices.standard({kind!r})
world.gps_fn = lambda s: ("5347.9820", "N", "00132.9520", "W", "0.0")
cfg = sim.base_config({kind!r})
cfg.update(json.loads({json.dumps(json.dumps(config or {}))}))
sim.write_config(cfg)
{setup}
from fakeclock import FakeClock
import ss.selftest as t, board
{call}
print("ROOT", sorted(os.listdir("/")))
"""
    out = run_micropython(script, files or firmware_files(board))
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, out                      # exactly one JSON line
    return json.loads(lines[0]), out


def by_name(res: dict) -> dict:
    return {c["name"]: c for c in res["checks"]}


@pytest.mark.parametrize("kind,board,expect", [
    ("bin_fill", "esp32", {"config", "temperature", "humidity", "range", "accelerometer", "battery", "flash"}),
    ("air", "picow", {"config", "temperature", "humidity", "particulates", "co2", "battery", "flash"}),
    ("noise", "pico2w", {"config", "microphone", "battery", "flash"}),
    ("road", "esp32", {"config", "accelerometer", "gps", "battery", "flash"}),
])
def test_passes_on_healthy_hardware(kind, board, expect):
    cfg = {"sensors": {"co2": "scd4x"}} if kind == "air" else {}
    setup = "import devices as D\nD.i2c[0x62] = D.SCD4x()" if kind == "air" else ""
    res, out = selftest(kind, setup, board=board, config=cfg)
    checks = by_name(res)
    assert res["ok"] is True and res["failed"] == [], res
    assert {n for n, c in checks.items() if c["status"] == "pass"} == expect
    assert checks["wifi"]["status"] == "skip"
    assert res["selftest"] == 1 and res["kind"] == kind and res["board"] == board and res["fw"] == "0.1.0"
    assert checks["battery"]["value"] == 3900
    assert "selftest-ring" not in out                 # the flash check cleans up after itself
    if kind == "bin_fill":
        assert res["empty_mm"] == 800 and res["readings_mm"] == [800] * 5
        assert checks["accelerometer"]["value"] == 1000 and checks["temperature"]["value"] == 1800
    if kind == "air":
        assert checks["co2"]["value"] == 612 and checks["particulates"]["value"] == 9


def test_empty_bin_distance_is_the_median_of_the_readings():
    # a distance that wanders around 1234 mm between pings: the median is robust to the outliers
    setup = ("import world\nseq = [1234, 1236, 5000, 1233, 1235, 90, 1234] * 10\nn = [0]\n"
             "def d(t):\n    n[0] += 1\n    return seq[n[0] % len(seq)]\nworld.distance_fn = d")
    res, _ = selftest("bin_fill", setup, config={"calibration": {"pings": 1}})
    assert res["ok"] is True
    assert len(res["readings_mm"]) == 5 and 1230 <= res["empty_mm"] <= 1240, res["readings_mm"]


@pytest.mark.parametrize("kind,setup,failed,detail", [
    ("bin_fill", "world.distance_mm = 60000", ["range"], "too few echoes"),
    ("bin_fill", "devices.i2c.pop(0x44)", ["climate"], "no valid measurement"),
    ("bin_fill", "devices.i2c[0x44].corrupt = True", ["climate"], "CRC"),
    ("bin_fill", "world.tilt = (0, 0, 3000)", ["accelerometer"], "outside 700..1300"),
    ("bin_fill", "world.vbat_mv = 2700", ["battery"], "outside 3000..15000"),
    ("air", "devices.uart.pop(1)", ["particulates"], "did not answer at start-up"),
    ("road", "world.gps_fn = None", ["gps"], "no NMEA sentences"),
])
def test_failing_sensor(kind, setup, failed, detail):
    res, _ = selftest(kind, setup)
    assert res["ok"] is False and res["failed"] == failed, res
    (c,) = [c for c in res["checks"] if c["name"] == failed[0]]
    assert detail in c["detail"], c
    # the other checks still ran and passed
    assert all(c["status"] in ("pass", "skip") for c in res["checks"] if c["name"] not in failed)


def test_bad_config_is_a_failed_check_not_a_crash():
    res, _ = selftest("bin_fill", config={"cadence": {"tx_s": 1}})
    assert res["ok"] is False and res["failed"] == ["config"]
    assert "cadence.tx_s: 1 outside 10..604800" in res["checks"][0]["detail"]


def test_wifi_check_joins_and_reports_rssi():
    call = "t.main(config_path='/config.json', clock=FakeClock(), board=board, wifi=True)"
    res, _ = selftest("bin_fill", "world.rssi = -71", call=call)
    assert by_name(res)["wifi"] == {"name": "wifi", "status": "pass", "value": -71, "detail": "joined, RSSI -71 dBm"}
    res, _ = selftest("bin_fill", "world.outages = [(0, 10 ** 6)]", call=call)
    assert res["failed"] == ["wifi"]


def test_runs_from_the_compiled_build(tmp_path):
    """As on a node: the .mpy files from streetsense.firmware.build (bytecode build for this interpreter)."""
    build("esp32", tmp_path, arch="bytecode")
    res, _ = selftest("bin_fill", files=firmware_files("esp32", mpy_dir=tmp_path))
    assert res["ok"] is True and res["empty_mm"] == 800


def test_pure_parts_under_cpython():
    import importlib.util
    import sys

    from tests.support.micropython import FIRMWARE

    sys.path[:0] = [str(FIRMWARE), str(FIRMWARE / "cpython")]
    try:
        spec = importlib.util.spec_from_file_location("selftest_pure", FIRMWARE / "ss" / "selftest.py")
        st = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(st)
    finally:
        del sys.path[:2]
    assert st.median([5, 1, 3]) == 3 and st.median([4, 1, 3, 2]) == 2 and st.median([]) is None
    assert st.judge("range", 800, "range_mm")["status"] == "pass"
    assert st.judge("range", 20, "range_mm") == {"name": "range", "status": "fail", "value": 20,
                                                 "detail": "20 outside 50..7500"}
    assert st.judge("range", None, "range_mm")["detail"] == "no reading"
    res = st.result({"tenant": "t", "device_id": "d", "kind": "air"}, "picow",
                    [st.check("a", True), st.skip("b", "why"), st.check("c", False)])
    assert res["ok"] is False and res["failed"] == ["c"]
    assert json.loads(json.dumps(res)) == res
