"""The load: a simulated town publishing through the gateway, as its own
process, at a speed chaos can change while it runs, recording exactly what
it sent.

``python -m streetsense.chaos.feed --url gateway://127.0.0.1:P --record F
--status S --scenario town --speed 360 --start-ms … --days …`` runs the
seeded :class:`~simulators.engine.Simulation` and publishes each message at
its simulated send time divided by the speed (simulated seconds per wall
second). Lines on stdin steer it: ``speed 720`` (re-anchors the clock, so a
2x overload phase is one line) and ``stop``. Every ``up`` message it
published is appended to the record file (``>HI`` lengths, topic, payload):
the ground truth of what was sent, decoded afterwards with the contract
decoder (:func:`read_record`), never inferred from the database. A status
JSON (published, acked, simulated time, how far behind its schedule) is
rewritten about once a second; the final figures are printed as JSON.

:class:`Feed` starts and steers that process.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "rec.bin"
>>> with p.open("wb") as f:
...     write_record(f, "ss/v1/t/d/up", b"[]")
>>> list(read_record(p))
[('ss/v1/t/d/up', b'[]')]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["Feed", "write_record", "read_record", "main"]

_HDR = struct.Struct(">HI")


def write_record(f: BinaryIO, topic: str, payload: bytes) -> None:
    t = topic.encode()
    f.write(_HDR.pack(len(t), len(payload)))
    f.write(t)
    f.write(payload)


def read_record(path: Path) -> Iterator[tuple[str, bytes]]:
    """(topic, payload) of every recorded message, in publish order."""
    with path.open("rb") as f:
        while True:
            h = f.read(_HDR.size)
            if len(h) < _HDR.size:
                return
            lt, lp = _HDR.unpack(h)
            yield f.read(lt).decode(), f.read(lp)


class Feed:
    """The feed process: start, change speed, stop; its status and final figures."""

    def __init__(self, url: str, work: Path, *, scenario: str, speed: float, start_ms: int, days: float,
                 devices: str | None = None, seed: int | None = None, log: Path | None = None) -> None:
        self.record = work / "sent.bin"
        self.status_file = work / "feed.json"
        self.args = [sys.executable, "-m", "streetsense.chaos.feed", "--url", url, "--record", str(self.record),
                     "--status", str(self.status_file), "--scenario", scenario, "--speed", str(speed),
                     "--start-ms", str(start_ms), "--days", str(days)]
        if devices:
            self.args += ["--devices", devices]
        if seed is not None:
            self.args += ["--seed", str(seed)]
        self.log = log
        self.speed = speed
        self.proc: subprocess.Popen[bytes] | None = None
        self.result: dict | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> "Feed":
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log.open("ab") if self.log else subprocess.DEVNULL)
        return self

    def _send(self, line: str) -> None:
        if self.proc is not None and self.proc.stdin is not None and self.proc.poll() is None:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()

    def set_speed(self, speed: float) -> None:
        self.speed = speed
        self._send(f"speed {speed}")

    def status(self) -> dict:
        try:
            return json.loads(self.status_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def stop(self, timeout: float = 180.0) -> dict:
        """Stop publishing, wait until everything sent is acknowledged; the final figures."""
        if self.proc is None:
            return self.result or {}
        self._send("stop")
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.proc = None
        try:
            self.result = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            self.result = {"error": "feed printed no figures"}
        return self.result


def _control(speed: float) -> tuple[float | None, bool]:
    """Read pending control lines: (new speed or None, stop?)."""
    new, stop = None, False
    fd = sys.stdin.fileno()
    while select.select([fd], [], [], 0)[0]:
        line = sys.stdin.readline()
        if not line:
            return new, True          # the controller went away
        cmd = line.split()
        if cmd[:1] == ["speed"] and len(cmd) == 2:
            new = float(cmd[1])
        elif cmd[:1] == ["stop"]:
            stop = True
    return new, stop


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="streetsense.chaos.feed")
    ap.add_argument("--url", required=True)
    ap.add_argument("--record", type=Path, required=True)
    ap.add_argument("--status", type=Path, required=True)
    ap.add_argument("--scenario", default="town")
    ap.add_argument("--devices")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--speed", type=float, default=360.0)
    ap.add_argument("--start-ms", type=int, required=True)
    ap.add_argument("--days", type=float, required=True)
    a = ap.parse_args(argv)

    from simulators.engine import Simulation
    from simulators.fleet import build_fleet
    from simulators.publisher import make_publisher
    from simulators.scenario import load_scenario

    fleet = build_fleet(load_scenario(a.scenario), counts=a.devices, seed=a.seed)
    sim = Simulation(fleet, start_ms=a.start_ms, days=a.days, seed=a.seed)
    pub = make_publisher(a.url)
    speed = a.speed
    anchor_wall, anchor_sim = time.monotonic(), float(a.start_ms)
    published = up = 0
    next_ctl = next_status = 0.0
    stop = exhausted = False
    sim_ms = a.start_ms
    rec = a.record.open("wb", buffering=1 << 20)

    def status(final: bool = False) -> dict:
        now = time.monotonic()
        st = {"published": published, "up": up, "acked": pub.stats.get("acked", published),
              "reconnects": pub.stats.get("reconnects", 0), "speed": speed, "sim_ms": sim_ms,
              "behind_s": round(max(0.0, (anchor_sim + (now - anchor_wall) * speed * 1000 - sim_ms)
                                    / (speed * 1000)), 3), "t": time.time(), "final": final}
        tmp = a.status.with_suffix(".tmp")
        tmp.write_text(json.dumps(st))
        os.replace(tmp, a.status)
        return st

    try:
        for batch in sim.batches():
            for m in batch.messages:
                while True:
                    now = time.monotonic()
                    if now >= next_ctl:
                        next_ctl = now + 0.1
                        new, stop = _control(speed)
                        if new is not None and new > 0:
                            anchor_sim = anchor_sim + (now - anchor_wall) * speed * 1000
                            anchor_wall, speed = now, new
                        if stop:
                            break
                        if now >= next_status:
                            next_status = now + 1.0
                            status()
                    due = anchor_sim + (now - anchor_wall) * speed * 1000
                    if m.send_ms <= due:
                        break
                    pub.poll(min(0.05, (m.send_ms - due) / (speed * 1000)))
                if stop:
                    break
                pub.publish(m.topic, m.payload, m.qos, m.retain)
                published += 1
                sim_ms = m.send_ms
                if m.topic.endswith("/up"):
                    up += 1
                    write_record(rec, m.topic, m.payload)
            if stop:
                break
        else:
            exhausted = True
        rec.flush()
        acked = pub.flush(120.0)
    finally:
        rec.close()
        pub.close()
    out = status(final=True)
    out.update({"all_acked": acked, "sim_exhausted": exhausted, "devices": len(fleet.devices),
                "tenant": fleet.tenant})
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover - the feed process
    sys.exit(main())
