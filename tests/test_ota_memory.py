"""The OTA code a node carries on every wake stays small: ``ss.ota`` (slot selection,
boot counter, the agent) is imported at every reset and wake, the heavy half
``ss.ota_install`` (SHA-512 + Ed25519, manifest checks, HTTP, installer, ESP32
partitions) only when a notice for a new version arrives.

Measured under the real MicroPython interpreter (WebAssembly port, 32-bit) on the
firmware's compiled bytecode, the way tests/test_firmware_memory.py does: a node
is set up, then ``gc.collect(); gc.mem_alloc()`` before and after ``import ss.ota``
plus ``attach(node)``, each in its own top-level run (this port frees memory only
between them).  Then one real wake with the agent attached, checking
``sys.modules`` after every asyncio step.

Figures when the split was made (bytecode .mpy, bin_fill node): import + attach
held 16.7 KB with the single 13.4 KB module, 6.0 KB after the split; importing
the heavy half adds 11.1 KB.
"""

from __future__ import annotations

import json
import shutil

import pytest

from streetsense.firmware.build import build
from tests.support.micropython import firmware_files, micropython_available, run_micropython

pytestmark = [pytest.mark.micropython,
              pytest.mark.skipif(not micropython_available(), reason="node or the MicroPython npm package missing")]

LIGHT_MAX = 8 * 1024        # import ss.ota + attach(node); measured 6.0 KB (16.7 KB before the split)

SCRIPT = r'''
import gc, sys, json, world, devices, sim, stepper
devices.standard("bin_fill")
world.rtc_off_s = 0
from umqtt.simple import BROKER, MQTTClient
BROKER.echo = False
BROKER.keep = False
sim.write_config(sim.base_config("bin_fill"))
NOTICE = %r
HEAVY = "ss.ota_install"
R = {"heavy_in_wake": False, "sessions": 0, "connects": [], "acks": [], "errors": []}
G = {}


def setup():
    from fakeclock import FakeClock
    from ss.app import load_config
    from ss.hw import HW
    from ss.node import Node
    import board
    clock = FakeClock()
    cfg = load_config(sim.CONFIG)
    hw = HW(cfg, clock, board)
    hw.start_wdt(cfg["wdt_ms"])
    G["node"] = Node(cfg, hw, clock, MQTTClient)
    G["cfg"] = cfg


def connect(host, port, timeout):          # the heavy half's HTTP client gets here
    R["connects"].append(HEAVY in sys.modules)
    raise OSError(113)


def run_step():
    try:
        return stepper.step()
    except world.StopSim:
        return False


phase = [0]


def __step__():
    gc.collect()
    p = phase[0]
    phase[0] = p + 1
    if p == 0:
        setup()
        R["before"] = sorted(k for k in sys.modules if k.startswith("ss.ota"))
    elif p == 1:
        G["m0"] = gc.mem_alloc()
    elif p == 2:
        import ss.ota
        G["agent"] = ss.ota.attach(G["node"])
        ss.ota.CONNECT = connect
    elif p == 3:
        R["held"] = gc.mem_alloc() - G["m0"]
        R["after_import"] = sorted(k for k in sys.modules if k.startswith("ss.ota"))
        a = G["agent"]
        session, ack = a.session, a.ack

        def counted():
            R["sessions"] += 1
            session()

        def acked(rep):
            R["acks"].append(rep.get("state"))
            if "error" in rep:
                R["errors"].append(rep["error"])
            ack(rep)
        a.session = counted
        a.ack = acked
        if NOTICE:
            from contract import v1
            cfg = G["cfg"]
            BROKER.retained[v1.topic(cfg["tenant"], cfg["device_id"], v1.CMD)] = NOTICE.encode()
        stepper.start(G["node"].wake())
    elif p == 4:
        more = run_step()
        R["heavy_in_wake"] = R["heavy_in_wake"] or HEAVY in sys.modules
        if more:
            phase[0] = 4
    else:
        R["after_wake"] = gc.mem_alloc() - G["m0"]
        R["after_wake_mods"] = sorted(k for k in sys.modules if k.startswith("ss.ota"))
        print("RESULT", json.dumps(R))
        return False
    return True
'''

NEW = {"op": "ota", "id": 4, "version": "9.9.9", "url": "http://ota.example.org/esp32/9.9.9/",
       "sha256": "0" * 64, "sig": "0" * 128}


@pytest.fixture(scope="module")
def mpy_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("fw-bytecode")
    build("esp32", out, arch="bytecode")
    return out


def wake(mpy_build, notice: dict | None, files: dict | None = None) -> dict:
    files = files or firmware_files(mpy_dir=mpy_build)
    text = run_micropython(SCRIPT % (json.dumps(notice) if notice else None,), files, timeout=120)
    return json.loads(next(ln for ln in text.splitlines() if ln.startswith("RESULT "))[7:])


def test_wake_without_notice_keeps_the_heavy_half_out(mpy_build):
    r = wake(mpy_build, None)
    print(f"\nimport ss.ota + attach: {r['held']} B held (bound {LIGHT_MAX}); after the wake {r['after_wake']} B")
    assert r["before"] == [] and r["after_import"] == ["ss.ota"]
    assert 0 < r["held"] < LIGHT_MAX, r
    assert r["sessions"] == 1 and r["acks"] == []          # the agent's session really ran
    assert not r["heavy_in_wake"] and r["after_wake_mods"] == ["ss.ota"], r


def test_retained_notice_of_the_running_version_stays_light(mpy_build):
    # after an update the notice stays retained on cmd: every later wake gets it
    r = wake(mpy_build, dict(NEW, version="0.1.0"))
    assert r["sessions"] == 1 and r["acks"] == ["running"]
    assert not r["heavy_in_wake"] and r["after_wake_mods"] == ["ss.ota"], r


def test_new_version_loads_the_heavy_half_and_drops_it_after_a_failed_try(mpy_build):
    r = wake(mpy_build, NEW)
    assert r["acks"] == ["downloading", "failed"]
    assert r["connects"] == [True]                           # the download ran from ss.ota_install
    assert r["after_wake_mods"] == ["ss.ota"], r             # unloaded again after the failure
    assert r["after_wake"] < r["held"] + 4096, r             # ... and its heap given back


def test_heavy_half_that_cannot_load_is_a_failed_try_not_a_crash(mpy_build, tmp_path):
    # e.g. no heap left for it mid-session: reported and counted like a failed download
    ss = tmp_path / "ss"
    shutil.copytree(mpy_build / "ss", ss)
    (ss / "ota_install.mpy").unlink()
    files = firmware_files(mpy_dir=mpy_build)
    files["/lib/ss"] = ss
    r = wake(mpy_build, NEW, files)
    assert r["acks"] == ["downloading", "failed"] and "ota_install" in r["errors"][0], r
    assert r["connects"] == [] and r["after_wake_mods"] == ["ss.ota"]
