"""The gateway's backhaul as a TCP relay that chaos can cut.

A gateway reaches the central broker over a link it does not control (4G,
council fibre, a VPN). :class:`Link` puts a plain TCP relay process between
the two (``python -m streetsense.chaos.link LISTEN_PORT HOST PORT``).
``SIGUSR1`` cuts the link: every relayed connection is closed and the
listening socket too, so the gateway sees its central connection drop and its
reconnects refused, like a router answering for a dead uplink. ``SIGUSR2``
restores it (listening again on the same port). The relay process lives on
across cuts, so restoring costs no process start. No firewall rules, no root.

The relay module imports only the standard library (it starts fast).

>>> Link(0, "127.0.0.1", 1).url.startswith("mqtt://127.0.0.1:")
True
"""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["Link", "relay"]


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


class Link:
    """A cuttable TCP relay ``127.0.0.1:<port>`` → ``host:port`` run as its own process."""

    def __init__(self, port: int, host: str, target_port: int, log: Path | None = None) -> None:
        from streetsense.embedded import free_port

        self.port = port or free_port()
        self.host = host
        self.target_port = target_port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.is_up = False

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> "Link":
        from streetsense.embedded import wait_port

        err = self.log.open("ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", "streetsense.chaos.link", str(self.port), self.host,
                                      str(self.target_port)], stdout=subprocess.DEVNULL, stderr=err)
        wait_port("127.0.0.1", self.port, timeout=60)
        self.is_up = True
        return self

    def cut(self, timeout: float = 10.0) -> None:
        """Take the link down: every connection through it closes, new ones are refused."""
        if self.pid is None:
            return
        self.proc.send_signal(signal.SIGUSR1)  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while not _refused(self.port):
            if time.monotonic() > deadline:
                raise TimeoutError("the link did not go down")
            time.sleep(0.02)
        self.is_up = False

    def restore(self) -> None:
        """Bring the link back (same port)."""
        from streetsense.embedded import wait_port

        if self.pid is None:
            self.start()
            return
        self.proc.send_signal(signal.SIGUSR2)  # type: ignore[union-attr]
        wait_port("127.0.0.1", self.port, timeout=10)
        self.is_up = True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self.is_up = False


def relay(listen_port: int, host: str, port: int) -> None:
    """Relay connections to ``listen_port`` on to ``host:port`` until killed; SIGUSR1 cuts, SIGUSR2 restores."""
    want = {"up": True}
    signal.signal(signal.SIGUSR1, lambda *_: want.update(up=False))
    signal.signal(signal.SIGUSR2, lambda *_: want.update(up=True))
    srv: socket.socket | None = None
    peer: dict[socket.socket, socket.socket] = {}
    while True:
        if want["up"] and srv is None:
            srv = socket.socket()
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind(("127.0.0.1", listen_port))
            srv.listen(64)
        elif not want["up"] and srv is not None:
            srv.close()
            srv = None
            for x in list(peer):
                x.close()
            peer.clear()
        r, _, _ = select.select([*([srv] if srv else []), *peer], [], [], 0.05)
        for s in r:
            if s is srv:
                a, _ = srv.accept()
                try:
                    b = socket.create_connection((host, port), timeout=5)
                except OSError:
                    a.close()
                    continue
                for x in (a, b):
                    x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                peer[a], peer[b] = b, a
                continue
            if s not in peer:
                continue
            other = peer[s]
            try:
                data = s.recv(262144)
                if data:
                    other.sendall(data)
                    continue
            except OSError:
                pass
            for x in (s, other):
                peer.pop(x, None)
                x.close()


if __name__ == "__main__":  # pragma: no cover - the relay process
    relay(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
