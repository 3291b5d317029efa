"""A subscriber in a separate process that counts messages (benchmarks, delivery checks).

Running it in its own process keeps it from competing with the publisher
for the GIL.  ``snapshot()`` returns (count, first receive time, last
receive time) in Unix seconds.

    with MessageCounter("mqtt://127.0.0.1:18830", "ss/v1/#") as c:
        ...publish...
        n, first, last = c.wait_for(expected, timeout=60)
"""

from __future__ import annotations

import select
import subprocess
import sys
import time

from simulators.publisher import parse_mqtt_url

__all__ = ["MessageCounter"]


class MessageCounter:
    def __init__(self, url: str, topic: str = "ss/v1/#", qos: int = 1, timeout: float = 15.0) -> None:
        cfg = parse_mqtt_url(url)
        self.proc = subprocess.Popen([sys.executable, "-m", "simulators.counter", cfg["host"], str(cfg["port"]),
                                      topic, str(qos)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     bufsize=1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if r:
                line = self.proc.stdout.readline().strip()
                if line == "READY":
                    return
                if not line and self.proc.poll() is not None:
                    break
        self.close()
        raise RuntimeError("counter subscriber did not start")

    def snapshot(self) -> tuple[int, float, float]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("r\n")
        self.proc.stdin.flush()
        n, a, b = self.proc.stdout.readline().split()
        return int(n), float(a), float(b)

    def wait_for(self, expected: int, timeout: float = 60.0, idle: float = 10.0) -> tuple[int, float, float]:
        """Wait until ``expected`` messages arrived, or nothing new came for ``idle`` s, or ``timeout``."""
        deadline = time.monotonic() + timeout
        last_n, last_change = -1, time.monotonic()
        while True:
            snap = self.snapshot()
            now = time.monotonic()
            if snap[0] >= expected or now > deadline:
                return snap
            if snap[0] != last_n:
                last_n, last_change = snap[0], now
            elif now - last_change > idle:
                return snap
            time.sleep(0.05)

    def reset(self) -> None:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("z\n")
        self.proc.stdin.flush()
        self.proc.stdout.readline()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin
                self.proc.stdin.write("q\n")
                self.proc.stdin.flush()
                self.proc.wait(5)
            except Exception:
                self.proc.terminate()
                self.proc.wait(5)

    def __enter__(self) -> "MessageCounter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _main(host: str, port: int, topic: str, qos: int) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    st = {"n": 0, "first": 0.0, "last": 0.0}

    def on_message(c, u, m) -> None:
        now = time.time()
        if st["n"] == 0:
            st["first"] = now
        st["n"] += 1
        st["last"] = now

    def on_connect(c, u, flags, rc, props=None) -> None:
        c.subscribe(topic, qos=qos)

    def on_subscribe(*a) -> None:
        print("READY", flush=True)

    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_message = on_message
    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.connect(host, port, keepalive=60)
    while True:
        c.loop(timeout=0.01)
        r, _, _ = select.select([sys.stdin], [], [], 0)
        if r:
            cmd = sys.stdin.readline().strip()
            if cmd == "r":
                print(f"{st['n']} {st['first']:.6f} {st['last']:.6f}", flush=True)
            elif cmd == "z":
                st.update(n=0, first=0.0, last=0.0)
                print("ok", flush=True)
            elif cmd in ("q", ""):
                break
    c.disconnect()


if __name__ == "__main__":
    _main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
