"""``streetsense demo``: the whole pipeline on embedded defaults.

Broker (Mosquitto, or amqtt) + PostgreSQL (embedded wheel) + ingest worker +
API + a simulated town whose last ``days`` are replayed at ``speed`` through
the real broker. Shows live progress; Ctrl-C (or ``duration``) stops
everything cleanly.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import psycopg
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ingest.migrate import maintain, migrate
from ingest.worker import IngestConfig, IngestWorker
from streetsense.embedded import free_port, services
from streetsense.logs import get_logger, redact_url
from streetsense.settings import Settings

log = get_logger("demo")


def _counts(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute("""SELECT (SELECT coalesce(sum(inserted), 0) FROM ingest_log),
                                  (SELECT count(*) FROM quarantine),
                                  (SELECT count(*) FROM devices WHERE last_seen IS NOT NULL),
                                  (SELECT count(*) FROM devices)""").fetchone()
    return {"stored": int(row[0]), "quarantined": int(row[1]), "reporting": int(row[2]), "devices": int(row[3])}


def _demo_admin_token(database_url: str, data_dir: Path, tenant: str) -> Path:
    """A fresh admin token for the demo's council in ``<data_dir>/secrets/demo-admin.token`` (0600).

    Earlier demo tokens are revoked, so only the newest file works."""
    from streetsense import tokens

    path = data_dir / "secrets" / "demo-admin.token"
    with psycopg.connect(database_url, autocommit=True) as c:
        for old in tokens.list_tokens(c, tenant):
            if old["name"] == "demo-admin":
                tokens.revoke(c, old["key_id"], "demo")
        token, _ = tokens.create(c, name="demo-admin", role="admin", tenant=tenant, actor="demo")
    tokens.write_secret(path, token + "\n")
    return path.resolve()


def run_demo(settings: Settings, *, bins: int = 200, speed: float = 600.0, port: int = 0, duration: float = 0.0,
             data_dir: Path = Path("var"), days: float = 2.0, seed: int = 42) -> int:
    import uvicorn

    from api.app import create_app
    from simulators.engine import Simulation
    from simulators.fleet import build_fleet
    from simulators.publisher import MqttPublisher
    from simulators.register import register_fleet
    from simulators.runner import run as run_sim
    from simulators.scenario import load_scenario

    console = Console(stderr=False)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    data_dir.mkdir(parents=True, exist_ok=True)
    with services(settings.database_url, settings.mqtt_url, data_dir) as svc:
        with psycopg.connect(svc.database_url) as c:
            migrate(c, timescale=settings.timescale, retention_days=settings.retention_days)
        scenario = load_scenario()
        counts = {"bin_fill": bins, "air": max(1, bins // 40), "noise": max(1, bins // 60), "road": 2}
        fleet = build_fleet(scenario, counts, seed=seed)
        with psycopg.connect(svc.database_url) as c:
            register_fleet(c, fleet)
        # the API is never open: the demo's admin token goes to a 0600 file, shown nowhere else
        token_file = _demo_admin_token(svc.database_url, data_dir, scenario.tenant)

        worker = IngestWorker(IngestConfig(svc.database_url, svc.mqtt_url, client_id="demo-ingest-0",
                                           shared=svc.shared_subscriptions,
                                           protocol=5 if svc.shared_subscriptions else 4))
        threads = [threading.Thread(target=worker.run, args=(stop,), name="ingest", daemon=True)]

        api_port = port or free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(svc.database_url), host=settings.api_host, port=api_port,
                                               log_level="warning"))
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        threads.append(threading.Thread(target=server.run, name="api", daemon=True))

        end_ms = int(time.time() * 1000) - 60_000
        sim = Simulation(fleet, start_ms=end_ms - int(days * 86_400_000), days=days, seed=seed)
        sim_state: dict = {"done": False, "error": None}

        def simulate() -> None:
            # wait until ingest is subscribed, else the broker has nobody to queue for
            time.sleep(1.0)
            try:
                pub = MqttPublisher(svc.mqtt_url, client_id="demo-fleet",
                                    protocol=5 if svc.shared_subscriptions else 4)
                sim_state["stats"] = run_sim(sim, pub, speed=speed, should_stop=stop.is_set)
                pub.close()
            except Exception as e:  # shown in the progress view, not swallowed
                sim_state["error"] = repr(e)
                log.exception("simulation failed")
            sim_state["done"] = True

        threads.append(threading.Thread(target=simulate, name="fleet", daemon=True))

        def housekeeping() -> None:
            while not stop.wait(15):
                try:
                    with psycopg.connect(svc.database_url) as c:
                        maintain(c, settings.retention_days)
                except psycopg.Error:
                    log.exception("maintenance failed")

        threads.append(threading.Thread(target=housekeeping, name="maintain", daemon=True))
        for t in threads:
            t.start()

        api_url = f"http://{settings.api_host}:{api_port}"
        console.print(f"[bold]StreetSense demo[/bold]  API {api_url}  (docs {api_url}/docs)")
        console.print(f"database {redact_url(svc.database_url)}  broker {svc.mqtt_url}  data {data_dir.resolve()}")
        console.print(f"admin token (Authorization: Bearer …) in {token_file}; open data needs none")
        console.print(f"fleet: {fleet.count_by_kind()} in {scenario.tenant}; replaying {days} days at {speed:g}x. "
                      "Ctrl-C stops.")
        t0 = time.monotonic()
        last: dict = {}

        def view() -> Table:
            tab = Table(show_header=True, header_style="bold")
            for col in ("elapsed s", "readings stored", "readings/s", "quarantined", "devices reporting", "fleet"):
                tab.add_column(col, justify="right")
            cur = last
            tab.add_row(f"{time.monotonic() - t0:.0f}", f"{cur.get('stored', 0):,}", f"{cur.get('rate', 0):,.0f}",
                        f"{cur.get('quarantined', 0):,}", f"{cur.get('reporting', 0)}/{cur.get('devices', 0)}",
                        "error" if sim_state["error"] else ("done" if sim_state["done"] else "publishing"))
            return tab

        prev = (time.monotonic(), 0)
        tty = sys.stdout.isatty()
        with Live(view(), console=console, refresh_per_second=2, transient=False) if tty else _NoLive() as live:
            while not stop.is_set():
                if duration and time.monotonic() - t0 >= duration:
                    break
                try:
                    cur = _counts(svc.database_url)
                except psycopg.Error:
                    cur = dict(last)
                now = time.monotonic()
                cur["rate"] = (cur.get("stored", 0) - prev[1]) / max(1e-6, now - prev[0])
                prev = (now, cur.get("stored", 0))
                last.clear()
                last.update(cur)
                if tty:
                    live.update(view())
                else:
                    print(f"demo: elapsed={now - t0:.0f}s stored={cur.get('stored', 0)} "
                          f"quarantined={cur.get('quarantined', 0)} reporting={cur.get('reporting', 0)}/"
                          f"{cur.get('devices', 0)} fleet={'done' if sim_state['done'] else 'publishing'}", flush=True)
                stop.wait(1.0 if tty else 5.0)
        stop.set()
        server.should_exit = True
        for t in threads:
            t.join(30)
        final = _counts(svc.database_url)
        console.print(f"stopped: {final['stored']:,} readings stored, {final['quarantined']:,} quarantined, "
                      f"{final['reporting']}/{final['devices']} devices reported")
        if sim_state["error"]:
            console.print(f"[red]simulation error: {sim_state['error']}[/red]")
            return 1
    return 0


class _NoLive:
    def __enter__(self) -> "_NoLive":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, *_: object) -> None:
        return None
