"""The one command line: ``streetsense …`` (Typer).

Imports are lazy so ``streetsense --help`` stays fast.
"""

from __future__ import annotations

import json
import multiprocessing
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer

from streetsense import logs
from streetsense.settings import get_settings

app = typer.Typer(help="StreetSense: sensor infrastructure for local councils.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema and housekeeping.", no_args_is_help=True)
ingest_app = typer.Typer(help="The MQTT → PostgreSQL ingest service.", no_args_is_help=True)
api_app = typer.Typer(help="The HTTP API.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print their figures as JSON.", no_args_is_help=True)
quarantine_app = typer.Typer(help="Inspect and replay quarantined messages.", no_args_is_help=True)
firmware_app = typer.Typer(help="Firmware build and energy budget.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(ingest_app, name="ingest")
app.add_typer(api_app, name="api")
app.add_typer(bench_app, name="bench")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(firmware_app, name="firmware")


def _setup() -> None:
    s = get_settings()
    logs.configure(s.log_level, s.log_json)


def _database_url() -> str:
    url = get_settings().database_url
    if not url:
        raise typer.BadParameter("DATABASE_URL is not set (or use `streetsense demo`, which starts an embedded one)")
    return url


@app.command()
def version() -> None:
    """Print the version."""
    from streetsense import __version__

    print(__version__)


# --- db ---------------------------------------------------------------------

@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations (idempotent)."""
    import psycopg

    from ingest.migrate import migrate

    _setup()
    s = get_settings()
    with psycopg.connect(_database_url()) as conn:
        done = migrate(conn, timescale=s.timescale, retention_days=s.retention_days)
    print(json.dumps({"applied": done}))


@db_app.command("datasource-role")
def db_datasource_role(tenant: Annotated[str, typer.Option(help="the council the role may see")],
                       role: Annotated[Optional[str], typer.Option(help="login role name (default grafana_<tenant>)")] = None,
                       out: Annotated[Optional[Path], typer.Option(help="DSN file, 0600 (default <data_dir>/secrets/"
                                                                        "<role>.dsn)")] = None) -> None:
    """A tenant-bound login role for a Grafana datasource; writes its DSN (with a new password) to a 0600 file."""
    import psycopg

    from streetsense.datasource import create_role, dsn
    from streetsense.tokens import write_secret

    _setup()
    url = _database_url()
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            name, password = create_role(conn, tenant, role)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
    path = out or get_settings().data_dir / "secrets" / f"{name}.dsn"
    write_secret(path, dsn(url, name, password) + "\n")
    print(json.dumps({"role": name, "tenant": tenant, "dsn_file": str(path)}))


@db_app.command("maintain")
def db_maintain() -> None:
    """Housekeeping: partitions ahead, retention, rollup refresh (plain PostgreSQL)."""
    import psycopg

    from ingest.migrate import maintain

    _setup()
    with psycopg.connect(_database_url()) as conn:
        print(json.dumps(maintain(conn, get_settings().retention_days)))


@quarantine_app.command("stats")
def quarantine_stats() -> None:
    """Pending quarantined messages per reason (JSON)."""
    import psycopg

    from ingest.quarantine import stats

    with psycopg.connect(_database_url()) as conn:
        print(json.dumps(stats(conn), indent=1))


@quarantine_app.command("replay")
def quarantine_replay(reason: Annotated[Optional[str], typer.Option(help="only this reason code")] = None,
                      tenant: Annotated[Optional[str], typer.Option(help="only this tenant")] = None,
                      limit: int = 100_000) -> None:
    """Republish quarantined messages (e.g. after registering an unknown device)."""
    import psycopg

    from ingest.quarantine import replay

    s = get_settings()
    if not s.mqtt_url:
        raise typer.BadParameter("MQTT_URL is not set")
    with psycopg.connect(_database_url()) as conn:
        print(json.dumps({"replayed": replay(conn, s.mqtt_url, reason_code=reason, tenant=tenant, limit=limit)}))


# --- ingest -----------------------------------------------------------------

def _run_worker(database_url: str, mqtt_url: str, shared: bool, metrics_port: int, slot: int = 0,
                slot_of_many: bool = False) -> None:
    from ingest.worker import IngestConfig, IngestWorker

    _setup()
    s = get_settings()
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1")
    import socket

    from streetsense.embedded import MqttTarget
    from streetsense.identity.mosquitto import ingest_names

    group, client_id = s.ingest_group, f"{s.ingest_client_prefix or s.ingest_group + '-' + socket.gethostname()}-{slot}"
    password = MqttTarget.parse(mqtt_url).password
    if password:    # an authenticated broker: names no other account can guess (see ingest_names)
        group, derived = ingest_names(password, s.ingest_group, f"{socket.gethostname()}-{slot}")
        client_id = f"{s.ingest_client_prefix}-{slot}" if s.ingest_client_prefix else derived
    cfg = IngestConfig(database_url, mqtt_url, group=group, shared=shared, client_id=client_id,
                       batch_readings=s.ingest_batch_readings, batch_ms=s.ingest_batch_ms,
                       receive_maximum=s.ingest_receive_maximum,
                       use_copy={"auto": None, "on": True, "off": False}[s.ingest_use_copy],
                       pool_size=s.ingest_pool_size, rate_readings_per_s=s.ingest_rate_readings_per_s,
                       rate_burst=s.ingest_rate_burst)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if slot_of_many:
        threading.Thread(target=_stop_when_orphaned, args=(stop,), daemon=True, name="parent-watch").start()
    IngestWorker(cfg).run(stop)


def _stop_when_orphaned(stop: threading.Event) -> None:
    """A worker started by `ingest run --workers N` stops when its parent is gone."""
    import os

    parent = os.getppid()
    while not stop.wait(1.0):
        if os.getppid() != parent:
            stop.set()


@ingest_app.command("run")
def ingest_run(workers: Annotated[int, typer.Option(help="worker processes sharing the subscription")] = 1,
               metrics_port: Annotated[int, typer.Option(help="Prometheus port of the first worker (0 = off)")] = 0,
               no_shared: Annotated[bool, typer.Option(help="plain subscription (brokers without $share)")] = False) -> None:
    """Consume telemetry from MQTT_URL into DATABASE_URL until stopped."""
    s = get_settings()
    if not s.mqtt_url:
        raise typer.BadParameter("MQTT_URL is not set")
    db = _database_url()
    if workers == 1:
        _run_worker(db, s.mqtt_url, not no_shared, metrics_port)
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_run_worker, args=(db, s.mqtt_url, True, metrics_port + i if metrics_port else 0, i,
                                                   True))
             for i in range(workers)]
    for p in procs:
        p.start()

    def stop_all(*_: object) -> None:
        for p in procs:
            if p.is_alive():
                p.terminate()   # each worker commits and acks what it holds, then exits

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    for p in procs:
        p.join()


# --- api --------------------------------------------------------------------

@api_app.command("run")
def api_run(host: Optional[str] = None, port: Optional[int] = None) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    from api.app import create_app

    _setup()
    s = get_settings()
    uvicorn.run(create_app(_database_url()), host=host or s.api_host, port=port or s.api_port, log_level="warning")


# --- demo -------------------------------------------------------------------

@app.command()
def demo(bins: Annotated[int, typer.Option(help="simulated bin-fill sensors")] = 200,
         speed: Annotated[float, typer.Option(help="simulated seconds per real second")] = 600.0,
         port: Annotated[int, typer.Option(help="API port (0 = any free port)")] = 0,
         duration: Annotated[float, typer.Option(help="stop after this many seconds (0 = until Ctrl-C)")] = 0.0,
         data_dir: Annotated[Optional[Path], typer.Option(help="where embedded services keep data")] = None) -> None:
    """The whole pipeline on embedded defaults: broker, database, ingest, API and a simulated fleet."""
    from streetsense.demo import run_demo

    _setup()
    s = get_settings()
    sys.exit(run_demo(s, bins=bins, speed=speed, port=port, duration=duration, data_dir=data_dir or s.data_dir))


# --- bench ------------------------------------------------------------------

@bench_app.command("gateway")
def bench_gateway_cmd(readings: Annotated[int, typer.Option(help="readings to buffer and forward")] = 1_000_000,
                      pack: int = 48, devices: int = 200) -> None:
    """Gateway forward rate vs raw broker rate, outage drain time, buffered bytes per reading (JSON)."""
    from gateway.bench import bench_gateway

    print(json.dumps(bench_gateway(readings, json=True, pack=pack, devices=devices)))


@bench_app.command("api")
def bench_api_cmd(devices: int = 10_000, days: int = 30, repeats: int = 20,
                  data_dir: Annotated[Optional[Path], typer.Option(help="embedded PostgreSQL data (on disk: ~5 GB)")] = None,
                  json_out: Annotated[bool, typer.Option("--json", help="print JSON only")] = False,
                  reuse: Annotated[bool, typer.Option(help="re-time a complete load of the same size in --data-dir (migrated first) instead of loading")] = False) -> None:
    """Dashboard panel and SensorThings p50/p99 latency over a synthetic fleet (30 days x 10,000 devices)."""
    from dashboards.bench import bench_api

    res = bench_api(devices=devices, days=days, json_out=json_out, repeats=repeats, data_dir=data_dir, reuse=reuse)
    print(json.dumps(res, indent=None if json_out else 2, default=str))


@bench_app.command("ingest")
def bench_ingest(readings: Annotated[int, typer.Option(help="readings to publish")] = 500_000,
                 pack: Annotated[int, typer.Option(help="readings per SenML pack")] = 50,
                 workers: Annotated[int, typer.Option(help="ingest worker processes")] = 1,
                 json_out: Annotated[bool, typer.Option("--json", help="print JSON only")] = False) -> None:
    """End-to-end durable ingest rate vs raw binary COPY and a naive baseline."""
    from streetsense.bench_ingest import run_bench

    _setup()
    s = get_settings()
    res = run_bench(s, readings=readings, pack=pack, workers=workers, progress=not json_out)
    print(json.dumps(res, indent=None if json_out else 2))


@bench_app.command("rls")
def bench_rls(devices: Annotated[int, typer.Option(help="bin sensors, split over two councils")] = 2000,
              days: Annotated[int, typer.Option(help="days of 10-minute readings")] = 7,
              repeats: Annotated[int, typer.Option(help="EXPLAIN ANALYZE runs per query (median)")] = 15) -> None:
    """Row-level security's cost on the API's readings queries: owner vs streetsense_api (JSON)."""
    from streetsense.bench_rls import run_bench

    _setup()
    print(json.dumps(run_bench(get_settings().database_url, devices=devices, days=days, repeats=repeats)))


# --- fuzzing ----------------------------------------------------------------

@app.command()
def fuzz(target: Annotated[str, typer.Argument(help="decoder, nmea, pms5003 or gateway")],
         runs: Annotated[int, typer.Option(help="executions")] = 100_000,
         seconds: Annotated[Optional[int], typer.Option(help="run this long instead of --runs")] = None,
         artifacts: Annotated[Path, typer.Option(help="failing inputs and the corpus")] = Path("var/fuzz"),
         json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Coverage-guided fuzzing (atheris) of a parser; exit 1 if any input broke it."""
    from streetsense.fuzz import main

    raise typer.Exit(main(target, runs, artifacts, json_out, seconds))


# --- firmware ---------------------------------------------------------------

@firmware_app.command("build")
def firmware_build(board: Annotated[str, typer.Option(help="esp32, picow or pico2w")] = "esp32",
                   out: Annotated[Optional[Path], typer.Option(help="output directory")] = None,
                   json_out: Annotated[bool, typer.Option("--json", help="print JSON with sizes")] = False) -> None:
    """Compile the node firmware for BOARD with mpy-cross and report .mpy sizes."""
    from streetsense.firmware.build import build_command

    build_command(board, out, json_out)


def _register_firmware() -> None:
    from streetsense.firmware.energy import energy_command

    firmware_app.command("energy")(energy_command)


_register_firmware()


def _register_simulators() -> None:
    from simulators.bench import bench_command
    from simulators.cli import simulate_command

    app.command("simulate", help="Run a simulated town over real MQTT (ground truth to JSONL/DB).")(simulate_command)
    bench_app.command("simulator", help="Simulator scale: devices per process, publish rate vs raw broker.")(
        bench_command)


_register_simulators()


def _register_identity() -> None:
    from streetsense.identity.cli import broker_app, pki_app
    from streetsense.provision.cli import device_app

    app.add_typer(pki_app, name="pki", help="Broker CA and server certificates (devices pin the CA).")
    app.add_typer(broker_app, name="broker", help="Mosquitto password/ACL files from the device registry.")
    app.add_typer(device_app, name="device", help="Provision, list, retire devices; rotate credentials.")


_register_identity()


def _register_tokens() -> None:
    from streetsense.tokens import cli as tokens_app

    app.add_typer(tokens_app, name="tokens", help="API tokens: create (shown once), list, revoke.")


_register_tokens()


def _register_alerts() -> None:
    from alerts.__main__ import app as alerts_app

    app.add_typer(alerts_app, name="alerts", help="Alert delivery worker (outbox) and the model runner.")


_register_alerts()


dashboards_app = typer.Typer(help="Grafana dashboards as code.", no_args_is_help=True)
app.add_typer(dashboards_app, name="dashboards")


@dashboards_app.command("build")
def dashboards_build(out_dir: Annotated[Path, typer.Option(help="where to write the JSON models")] = Path("dashboards/json"),
                     check: Annotated[bool, typer.Option(help="fail if a committed JSON file is stale")] = False) -> None:
    """Build every dashboard with the Grafana Foundation SDK and write its JSON."""
    from dashboards.build import build_command

    for p in build_command(out_dir, check=check):
        print(p)


@dashboards_app.command("push")
def dashboards_push(url: Annotated[str, typer.Option(help="Grafana base URL")],
                    token: Annotated[str, typer.Option(envvar="GRAFANA_TOKEN", help="service-account token")],
                    folder: str = "StreetSense") -> None:
    """Create or update every dashboard in a Grafana folder (grafana-client)."""
    from dashboards.build import push_command

    print(json.dumps(push_command(url, token, folder), indent=1, default=str))


def _register_gateway() -> None:
    from gateway.cli import app as gateway_app

    app.add_typer(gateway_app, name="gateway", help="The on-site gateway: local broker, durable queue, forwarding.")


_register_gateway()


def _register_routing() -> None:
    from routing.bench import bench_collection_command, bench_routing_command
    from routing.cli import routes_fleet_command, routes_plan_command

    routes_app = typer.Typer(help="Collection planning and routes for waste crews.", no_args_is_help=True)
    routes_app.command("plan")(routes_plan_command)
    routes_app.command("fleet")(routes_fleet_command)
    app.add_typer(routes_app, name="routes")
    bench_app.command("routing")(bench_routing_command)
    bench_app.command("collection")(bench_collection_command)


_register_routing()


eval_app = typer.Typer(help="Evaluate the models: labelled scenario, NAB, real road clips, humidity correction.",
                       invoke_without_command=True)
app.add_typer(eval_app, name="eval")


@eval_app.callback()
def eval_scenario_cmd(ctx: typer.Context,
                      scenario: Annotated[Optional[str], typer.Option(help="scenario YAML or name")] = None,
                      days: float = 60, seed: int = 7,
                      counts: Annotated[Optional[str], typer.Option(help="e.g. bins=800,air=12")] = None,
                      json_out: Annotated[bool, typer.Option("--json", help="print JSON only")] = False) -> None:
    """Precision, recall, F1 and detection delay per alert kind on the simulator's labelled fleet."""
    if ctx.invoked_subcommand is not None:
        return
    from stream_models.evaluate import eval_scenario

    eval_scenario(scenario, days=days, seed=seed, counts=counts, json_out=json_out, progress=not json_out)


@eval_app.command("nab")
def eval_nab_cmd(data: str = "../shared/datasets/nab", subset: Optional[str] = None,
                 json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """NAB standard-profile score of the generic anomaly scorer."""
    from stream_models.evaluate import eval_nab

    eval_nab(data, json_out=json_out, subset=subset)


@eval_app.command("roads")
def eval_roads_cmd(data: str = "../shared/datasets/road_surface",
                   json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Pothole vs casting vs asphalt bump vs texture on real accelerometer clips (macro-F1, confusion)."""
    from stream_models.evaluate import eval_roads

    eval_roads(data, json_out=json_out)


@eval_app.command("air")
def eval_air_cmd(data: str = "../shared/datasets/air_quality",
                 json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Humidity correction of low-cost PM against reference monitors (MAE, bias)."""
    from stream_models.evaluate import eval_air

    eval_air(data, json_out=json_out)


@bench_app.command("models")
def bench_models_cmd(days: float = 2.0, json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Readings/s scored by the full model set on the scenario mix, against the ingest rate."""
    from stream_models.evaluate import bench_models

    bench_models(json_out=json_out, days=days)


def _register_ota() -> None:
    from streetsense.ota.cli import ota_app

    app.add_typer(ota_app, name="ota", help="Signed firmware bundles and staged rollouts.")


_register_ota()


def _register_retention() -> None:
    from streetsense.retention import cli_app

    app.add_typer(cli_app(), name="retention", help="Retention per data class: show policies, apply them (audited).")


_register_retention()


def _register_households() -> None:
    from streetsense.pseudonym import cli_app

    app.add_typer(cli_app(), name="households", help="A council's household list as keyed pseudonyms (no addresses).")


_register_households()


def _register_chaos() -> None:
    from streetsense.chaos.cli import chaos_command, soak_command

    app.command("chaos")(chaos_command)
    bench_app.command("soak")(soak_command)


_register_chaos()


def main() -> None:  # pragma: no cover
    app()
