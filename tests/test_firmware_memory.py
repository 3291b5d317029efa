"""Heap used by a full sample -> encode -> buffer -> publish cycle, per device kind,
measured under the real MicroPython interpreter (WebAssembly port, 32-bit like the
ESP32 and the RP2040) running the firmware's compiled bytecode (.mpy).

The WebAssembly port frees memory only between top-level runs, so the cycle is
driven one asyncio task resumption at a time (tests/fakes/stepper.py), each in its
own top-level run (tests/tools/micropython_run.mjs: __step__).  Before a step the
heap is collected (gc.collect, gc.mem_alloc); after it, everything the step
allocated is still counted.  Per kind:

  resident  live heap after boot: imported modules (their bytecode is loaded
            into RAM unless frozen), the node's objects and buffers
  live      highest live heap above ``resident`` between steps (the node's
            data at rest: staged readings, records of a pack, the payload)
  cycle     highest heap above ``resident`` at the end of a step: live data plus
            all the step allocated -- a bound on the cycle's real peak

The target is cycle <= 40 KB for every kind.  micropython.mem_info() is printed.
"""

from __future__ import annotations

import json

import pytest

from streetsense.firmware.build import build
from tests.support.micropython import firmware_files, micropython_available, run_micropython

pytestmark = [pytest.mark.micropython,
              pytest.mark.skipif(not micropython_available(), reason="node or the MicroPython npm package missing")]

TARGET = 40 * 1024

SCRIPT = r'''
import gc, json, math, micropython, world, devices, sim, stepper
KIND = %r
devices.standard(KIND)
world.rtc_off_s = 0
from umqtt.simple import BROKER, MQTTClient
BROKER.echo = False
BROKER.keep = False
over = {"bin_fill": {},
        "air": {"sensors": {"co2": "scd4x"}},
        "noise": {"cadence": {"sample_s": 5, "tx_s": 10}},
        "road": {"cadence": {"sample_s": 60, "tx_s": 10}}}[KIND]
sim.write_config(sim.base_config(KIND, **over))
world.accel_fn = lambda i: (0, 0, 1000 - (int(1000 * math.sin(math.pi * (i %% 500 - 300 + 0.5) / 6))
                                          if 300 <= i %% 500 < 306 else 0))
world.gps_fn = lambda s: ("5330.1234", "N", "00132.5000", "W", "023.3")
R = {"kind": KIND, "steps": 0, "live": 0, "cycle": 0}
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


def next_cycle():
    node = G["node"]
    G["sent0"] = node.sent
    if node.continuous:
        world.end_ms = world.now_ms + 10500          # two intervals and a transmission
        stepper.start(node.run())
    else:
        world.advance(G["cfg"]["cadence"]["sample_s"] * 1000)
        node.state.v[2] = 0                          # LAST_TX = 0: sample and transmit
        node.clock._waiting[:] = []
        stepper.start(node.wake())


def run_step():
    try:
        return stepper.step()
    except world.StopSim:
        return False


phase = [0]


def __step__():
    gc.collect()
    p = phase[0]
    if p == 0:
        G["m0"] = gc.mem_alloc()
        phase[0] = 1
        return True
    if p == 1:
        setup()
        phase[0] = 2
        return True
    if p == 2:
        R["resident"] = gc.mem_alloc() - G["m0"]
        G["base"] = gc.mem_alloc()
        if G["node"].continuous:
            phase[0] = 4                             # its first intervals are the cycle
        else:
            stepper.start(G["node"].wake())          # warm-up wake: NTP, first pack
            phase[0] = 3
        if phase[0] == 4:
            next_cycle()
        return True
    if p == 3:
        if not run_step():
            gc.collect()
            G["base"] = gc.mem_alloc()
            next_cycle()
            phase[0] = 4
        return True
    live = gc.mem_alloc() - G["base"]
    more = run_step()
    used = gc.mem_alloc() - G["base"]
    R["steps"] += 1
    R["live"] = max(R["live"], live)
    R["cycle"] = max(R["cycle"], used)
    if more:
        return True
    node = G["node"]
    R["sent"] = node.sent - G["sent0"]              # packs acknowledged in the measured cycle
    R["events"] = getattr(node.sampler, "events", None)
    R["publishes"] = BROKER.n_pub
    print("RESULT", json.dumps(R))
    micropython.mem_info()
    return False
'''


@pytest.fixture(scope="module")
def mpy_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("fw-bytecode")
    return out, build("esp32", out, arch="bytecode")


@pytest.mark.parametrize("kind", ["bin_fill", "air", "noise", "road"])
def test_cycle_heap(kind, mpy_build):
    out, res = mpy_build
    text = run_micropython(SCRIPT % kind, firmware_files(mpy_dir=out), timeout=240)
    line = next(ln for ln in text.splitlines() if ln.startswith("RESULT "))
    r = json.loads(line[7:])
    print(f"\n{kind}: resident {r['resident']} B, cycle peak {r['cycle']} B (live {r['live']} B) "
          f"over {r['steps']} steps; .mpy total {res.total_mpy} B")
    assert "GC: total:" in text                          # micropython.mem_info() output
    assert r["sent"] >= 1 and r["steps"] >= 2            # the cycle really published
    if kind == "road":
        assert r["events"] >= 1                           # a bump went through encode and publish
    assert 0 <= r["live"] <= r["cycle"] <= TARGET and r["cycle"] > 0, r
    assert r["resident"] < 110 * 1024, r
