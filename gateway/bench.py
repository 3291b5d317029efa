"""``streetsense bench gateway``: the gateway's forward rate against the raw
broker rate in the same run, the outage drain time, and bytes per buffered
reading on disk.

Every figure is end to end, with real processes: Mosquitto (central, and the
gateway's own local one), the gateway (``gateway run`` as a subprocess), a
counting subscriber (its own process) and the device publisher (this process,
paho, QoS 1).

1. **raw**: the publisher sends all packs straight to the central broker; time
   until the subscriber has all of them.
2. **gateway**: the same packs to the gateway's device listener; time until
   the subscriber has all of them from the central broker.
3. **outage**: central broker stopped; the same number of new packs published
   to the gateway (buffered in SQLite: time, bytes on disk); central broker
   started again; time from the first to the last message at the subscriber (a
   persistent session, so nothing is missed while it reconnects), and apart
   from that the time the gateway took to notice the broker was back
   (``reconnect_seconds``, bounded by its reconnect backoff). The drain runs unthrottled
   (``drain_rate=0``) to measure what the hardware can do; the configured
   default would take ``messages / drain_rate``.

>>> _percentile([1.0, 2.0, 3.0, 4.0], 50)
3.0
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from contract import v1
from streetsense.embedded import MosquittoBroker, free_port, wait_port
from streetsense.mqtt import make_client, publish_all

TENANT = "bench"
GATEWAY_ID = "gw-bench"


def _percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))]


def _packs(devices: int, n_packs: int, pack: int, seq0: int, base_s: int) -> list[tuple[str, bytes]]:
    out = []
    for k in range(n_packs):
        d = f"node-{k % devices:04d}"
        seq = seq0 + k // devices
        recs = [("fill", (seq * pack + j) * 7 % 1000, (seq * pack + j) * 1000) for j in range(pack)]
        out.append((v1.topic(TENANT, d, v1.UP), v1.encode_json(d, base_s, seq, recs)))
    return out


def _counter(url: str, client_id: str, count: Any, last: Any, mark: Any, first: Any, ready: Any, stop: Any) -> None:
    """Subscriber process: counts messages on the tenant's up topics."""
    import paho.mqtt.client as mqtt

    c = make_client(url, client_id)          # persistent session: survives a central restart

    def on_message(cl: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        count.value += 1
        last.value = time.time()
        if count.value == mark.value + 1:
            first.value = last.value

    c.on_message = on_message
    c.on_subscribe = lambda *a: ready.set()
    c.subscribe(f"ss/v1/{TENANT}/+/up", 1)
    while not stop.is_set():
        if c.loop(timeout=0.01) != mqtt.MQTT_ERR_SUCCESS:
            time.sleep(0.05)
            try:
                c.reconnect()
            except OSError:
                pass
    c.disconnect()


class _Sub:
    def __init__(self, url: str, client_id: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.count = ctx.Value("q", 0, lock=False)
        self.last = ctx.Value("d", 0.0, lock=False)
        self.mark = ctx.Value("q", 0, lock=False)      # first.value: arrival of message number mark+1
        self.first = ctx.Value("d", 0.0, lock=False)
        self.ready = ctx.Event()
        self.stop = ctx.Event()
        self.p = ctx.Process(target=_counter, args=(url, client_id, self.count, self.last, self.mark, self.first,
                                                     self.ready, self.stop),
                             daemon=True)
        self.p.start()
        if not self.ready.wait(30):
            raise RuntimeError("bench subscriber did not subscribe")

    def wait(self, n: int, timeout: float) -> float:
        """Wall time of the n-th message (raises on timeout)."""
        deadline = time.monotonic() + timeout
        while self.count.value < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"subscriber has {self.count.value} of {n}")
            time.sleep(0.01)
        return self.last.value

    def close(self) -> None:
        self.stop.set()
        self.p.join(10)


def _cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _queue_stats(path: Path) -> tuple[int, int, int]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        n = db.execute("SELECT count(*) FROM queue").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
    finally:
        db.close()
    disk = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return n, pages * size, disk


def bench_gateway(readings: int = 1_000_000, json: bool = True, *, pack: int = 48, devices: int = 200,
                  work_dir: Path | None = None, timeout: float = 900.0) -> dict[str, Any]:
    """Run the three measurements; returns the figures (``json``: no progress output)."""
    say = (lambda *a: None) if json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    n = max(1, readings // pack)
    base_s = (int(time.time()) // 3600 - 24) * 3600
    own_dir = work_dir is None
    root = Path(tempfile.mkdtemp(prefix="ss-bench-gw-")) if own_dir else work_dir
    assert root is not None
    central = MosquittoBroker(root / "central").start()
    gw_dir = root / "gw"
    local_port, service_port = free_port(), free_port()
    env = dict(os.environ, **{f"STREETSENSE_GATEWAY_{k}": str(v) for k, v in {
        "TENANT": TENANT, "GATEWAY_ID": GATEWAY_ID, "CENTRAL_URL": central.url, "DATA_DIR": gw_dir,
        "LOCAL_BIND": "127.0.0.1", "LOCAL_PORT": local_port, "LOCAL_SERVICE_PORT": service_port,
        "SNTP_PORT": 0, "DRAIN_RATE": 0, "MAX_BYTES": 8 * 1024**3, "LOG_LEVEL": "WARNING"}.items()})
    gw: subprocess.Popen[bytes] | None = None
    subs: list[_Sub] = []
    out: dict[str, Any] = {"readings": n * pack, "pack": pack, "messages": n, "devices": devices}
    try:
        msgs = _packs(devices, n, pack, 0, base_s)
        out["payload_bytes_per_reading"] = round(sum(len(p) for _, p in msgs) / (n * pack), 1)

        # 1. raw broker rate
        sub = _Sub(central.url, "bench-raw")
        subs.append(sub)
        pub = make_client(central.url, "bench-raw-pub")
        say(f"raw: {n} packs straight to the central broker")
        t0 = time.time()
        publish_all(pub, msgs, timeout=timeout)
        t_end = sub.wait(n, timeout)
        pub.disconnect()
        raw_s = t_end - t0
        out["raw_broker"] = {"seconds": round(raw_s, 3), "msgs_per_s": round(n / raw_s),
                             "readings_per_s": round(n * pack / raw_s)}
        sub.close()
        subs.remove(sub)

        # 2. through the gateway
        sub = _Sub(central.url, "bench-gw")          # persistent: also used for the outage
        subs.append(sub)
        gw = subprocess.Popen([sys.executable, "-c", "from gateway.cli import app; app()", "run"], env=env,
                              stdout=subprocess.DEVNULL, stderr=(root / "gateway.log").open("ab"))
        wait_port("127.0.0.1", local_port, timeout=60)    # opens once the gateway has subscribed
        time.sleep(0.5)
        dev = make_client(f"mqtt://127.0.0.1:{local_port}", "bench-dev")
        say(f"gateway: {n} packs device -> local broker -> gateway -> central")
        cpu0 = _cpu_s(gw.pid)
        t0 = time.time()
        publish_all(dev, msgs, timeout=timeout)
        t_pub = time.time()
        t_end = sub.wait(n, timeout)
        gw_s = t_end - t0
        cpu = _cpu_s(gw.pid) - cpu0
        out["gateway"] = {"seconds": round(gw_s, 3), "msgs_per_s": round(n / gw_s),
                          "readings_per_s": round(n * pack / gw_s),
                          "device_publish_msgs_per_s": round(n / (t_pub - t0)),
                          "ratio_vs_raw": round(raw_s / gw_s, 3),
                          "gateway_cpu_ms_per_1k_msgs": round(cpu / n * 1e6, 1)}

        # 3. outage: buffer n new packs with the central broker down, then drain
        qfile = gw_dir / "queue.sqlite3"
        deadline = time.monotonic() + 30
        while _queue_stats(qfile)[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        central.stop()
        time.sleep(0.5)
        backlog = _packs(devices, n, pack, 10**6, base_s)
        say(f"outage: buffering {n} packs ({n * pack} readings) with the central broker down")
        t0 = time.time()
        publish_all(dev, backlog, timeout=timeout)
        deadline = time.monotonic() + timeout
        while (q := _queue_stats(qfile))[0] < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {q[0]} of {n} packs buffered")
            time.sleep(0.05)
        buffer_s = time.time() - t0
        depth, used, disk = q
        before = sub.count.value
        sub.mark.value = before
        say("outage: central broker back, draining")
        t0 = time.time()
        central.start()
        t_end = sub.wait(before + n, timeout)
        reconnect_s = sub.first.value - t0
        drain_s = t_end - sub.first.value
        deadline = time.monotonic() + 30
        while _queue_stats(qfile)[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        extra = sub.count.value - before - n
        out["outage"] = {"buffered_messages": depth, "buffered_readings": depth * pack,
                         "buffer_seconds": round(buffer_s, 3), "buffer_msgs_per_s": round(n / buffer_s),
                         "queue_used_bytes": used, "queue_file_bytes": disk,
                         "bytes_per_reading_used": round(used / (n * pack), 1),
                         "bytes_per_reading_file": round(disk / (n * pack), 1),
                         "reconnect_seconds": round(reconnect_s, 3),
                         "drain_seconds": round(drain_s, 3), "drain_msgs_per_s": round(n / drain_s),
                         "drain_readings_per_s": round(n * pack / drain_s), "duplicates_at_subscriber": extra,
                         "drain_at_default_rate_s": round(n / 500.0, 1)}
        dev.disconnect()
        out["host"] = {"cpus": os.cpu_count(), "sqlite": sqlite3.sqlite_version,
                       "mosquitto": _mosquitto_version()}
        return out
    finally:
        for s in subs:
            s.close()
        if gw is not None and gw.poll() is None:
            gw.send_signal(signal.SIGTERM)
            try:
                gw.wait(60)
            except subprocess.TimeoutExpired:
                gw.kill()
        _stop_orphan_broker(gw_dir / "mosquitto" / "mosquitto.pid")
        central.stop()
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)


def _stop_orphan_broker(pid_file: Path) -> None:
    try:
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
    except (OSError, ValueError):
        pass


def _mosquitto_version() -> str:
    try:
        r = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, timeout=5)
        return (r.stdout or r.stderr).split("\n", 1)[0].replace("mosquitto version ", "")
    except (OSError, subprocess.TimeoutExpired):
        return "?"


if __name__ == "__main__":  # pragma: no cover
    import json as _json

    threading.current_thread().name = "bench"
    print(_json.dumps(bench_gateway(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, json=False), indent=2))
