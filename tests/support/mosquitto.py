"""A private Mosquitto broker for tests and benchmarks.

Starts ``mosquitto`` on a free 127.0.0.1 port with a generated config in a
temporary directory and stops it again, so tests never depend on a system
broker at 1883.  Reusable from any test module::

    from tests.support.mosquitto import Mosquitto, mosquitto_fixture

    broker = mosquitto_fixture()        # module-level: defines a pytest fixture "broker"

    def test_something(broker):
        assert broker.url.startswith("mqtt://127.0.0.1:")

or directly::

    with Mosquitto() as b:
        print(b.host, b.port, b.url)

The config disables persistence and lifts Mosquitto's queue and in-flight
limits (``max_queued_messages 0`` and ``max_inflight_messages 0`` mean
unlimited), so a fast publisher is never throttled by broker defaults
(the default queue of 1000 messages per client silently drops QoS 1 messages
for a slow subscriber).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["Mosquitto", "MosquittoError", "find_mosquitto", "free_port", "mosquitto_fixture"]

_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto")


class MosquittoError(RuntimeError):
    """The broker could not be started."""


def find_mosquitto() -> str | None:
    """Path to the mosquitto binary, or None (``$MOSQUITTO`` overrides the search)."""
    env = os.environ.get("MOSQUITTO")
    if env:
        return env
    for c in _CANDIDATES:
        if os.access(c, os.X_OK):
            return c
    return shutil.which("mosquitto")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """One private broker process.

    ``extra_config`` lines are appended to the generated config (e.g.
    ``["max_packet_size 70000"]``).  ``start()`` waits until the port accepts
    connections; ``stop()`` terminates only this process.
    """

    def __init__(self, port: int | None = None, extra_config: list[str] | None = None,
                 binary: str | None = None) -> None:
        self.binary = binary or find_mosquitto()
        self.host = "127.0.0.1"
        self.port = port or 0
        self.extra_config = list(extra_config or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def config_text(self) -> str:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence false",
            "max_queued_messages 0",
            "max_queued_bytes 0",
            "max_inflight_messages 0",
            "max_inflight_bytes 0",
            "set_tcp_nodelay true",
            "log_type error",
            "log_type warning",
            "log_dest stderr",
            *self.extra_config,
        ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> "Mosquitto":
        if self.binary is None:
            raise MosquittoError("mosquitto binary not found (set $MOSQUITTO)")
        last_err = ""
        for _attempt in range(5):        # a free port can be taken between probe and bind
            if not self.port or _attempt:
                self.port = free_port()
            self._tmp = tempfile.TemporaryDirectory(prefix="ss-mosquitto-")
            conf = Path(self._tmp.name) / "mosquitto.conf"
            conf.write_text(self.config_text())
            self.log_path = Path(self._tmp.name) / "mosquitto.log"
            log = open(self.log_path, "wb")
            self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
            log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    with socket.create_connection((self.host, self.port), timeout=0.2):
                        return self
                except OSError:
                    time.sleep(0.02)
            last_err = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            self._kill()
        raise MosquittoError(f"mosquitto did not start: {last_err.strip()}")

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def stop(self) -> None:
        """Terminate this broker (only this process) and delete its temp dir."""
        self._kill()

    def __enter__(self) -> "Mosquitto":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mosquitto_fixture(scope: str = "module", name: str = "broker"):
    """Return a pytest fixture yielding a running :class:`Mosquitto` (skips if none installed)."""
    import pytest

    @pytest.fixture(scope=scope, name=name)
    def _broker():
        if find_mosquitto() is None:
            pytest.skip("mosquitto not installed")
        with Mosquitto() as b:
            yield b

    return _broker
