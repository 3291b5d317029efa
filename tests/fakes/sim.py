# Run a whole node on fake hardware in simulated time (MicroPython side).
#
# A deep-sleep wake is a reset: every firmware module is dropped from
# sys.modules (RAM is gone) and main runs again; only the flash filesystem,
# the RTC memory (world.rtc_mem) and the world survive.  Lightsleep (Pico)
# and the continuous kinds keep running in one main() call until the
# simulated end time raises StopSim.

import gc
import json
import sys
import world

CONFIG = "/config.json"


def base_config(kind, **over):
    cfg = {
        "tenant": "leeds", "device_id": kind.replace("_", "") + "-0001", "kind": kind,
        "wifi": {"ssid": world.ssid, "password": "secret-psk"},
        "mqtt": {"host": "mqtt.example.org", "port": 8883, "tls": False,
                 "username": "node-" + kind, "password": "node-secret"},
    }
    for k in over:
        cfg[k] = over[k]
    return cfg


def write_config(cfg, path=CONFIG):
    with open(path, "w") as f:
        json.dump(cfg, f)


def forget_firmware():
    for name in list(sys.modules):
        if name == "board" or name == "fakeclock" or name.startswith("ss") or name.startswith("contract"):
            del sys.modules[name]
    gc.collect()


def boot(board_name="board"):
    """One power-on or wake: run main() until it sleeps (deep) or the sim ends."""
    forget_firmware()
    from fakeclock import FakeClock
    from umqtt.simple import MQTTClient
    import ss.app
    board = __import__(board_name)
    return ss.app.main(clock=FakeClock(), board=board, client_cls=MQTTClient, config_path=CONFIG)


def run(end_s, board_name="board"):
    """Boot and keep waking until world time reaches end_s.  Returns wakes."""
    world.end_ms = end_s * 1000
    wakes = 0
    while True:
        wakes += 1
        try:
            boot(board_name)
            return wakes                  # main returned (config error)
        except world.DeepSleep as e:
            try:
                world.advance(e.ms)
            except world.StopSim:
                return wakes
        except world.StopSim:
            return wakes


def leftovers(stage_max=24, root="/ring"):
    """Readings still on the node: (in the flash ring, staged in RTC memory)."""
    forget_firmware()
    from ss.ring import Ring
    from ss.state import State

    class _Store:
        def load(self):
            return world.rtc_mem

        def save(self, b, n):
            pass
    ring = Ring(root)
    st = State(_Store(), stage_max)
    return ring.count, st.n
