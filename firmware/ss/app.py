# Entry point: load and validate the config, bring up the hardware, run the node.
#
# main() is what /main.py calls.  clock / board / client_cls can be passed in
# (the tests hand over a simulated clock and a fake MQTT transport); on a
# device they default to the real ones.

import asyncio
import sys
from ss import VERSION


def load_config(path):
    """Validated config, or None after printing why.  The validator (~10 KB of
    heap) is dropped again afterwards: it is needed only at boot."""
    import ss
    from ss import config as C
    try:
        return C.load(path or C.PATH)
    except C.ConfigError as e:
        # Stay awake at the REPL so whoever provisions the node sees why.
        print("StreetSense", VERSION, "CONFIG ERROR:", e)
        return None
    finally:
        C = None
        sys.modules.pop("ss.config", None)
        try:
            delattr(ss, "config")
        except (AttributeError, TypeError):
            pass


def main(clock=None, board=None, client_cls=None, config_path=None):
    if clock is None:
        from ss.clock import Clock
        clock = Clock()
    cfg = load_config(config_path)
    if cfg is None:
        return None
    if board is None:
        import board
    from ss.hw import HW
    from ss.node import Node
    hw = HW(cfg, clock, board)
    if config_path:
        hw.config_path = config_path
    hw.start_wdt(cfg["wdt_ms"])
    node = Node(cfg, hw, clock, client_cls)
    from ss import ota
    ota.attach(node)
    if node.continuous:
        asyncio.run(node.run())
        return node
    while True:
        ms = asyncio.run(node.wake())
        hw.sleep(ms)            # ESP32: deep sleep, never returns; Pico: lightsleep
