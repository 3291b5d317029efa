"""``streetsense simulate``: the Typer-compatible command (registered by the lead).

    from simulators.cli import simulate_command
    app.command("simulate")(simulate_command)

Example::

    streetsense simulate --scenario town.yaml --days 30 --speed 3600 \\
        --devices bins=5000,air=50,noise=40,road=12 --truth out.jsonl

``--speed``: simulated seconds per wall second (1 = real time, 3600 = one hour
per second, 0 or "max" = as fast as possible).  ``--mqtt-url none`` runs the
models without a broker (truth and figures only).  Without ``--start``,
accelerated runs end today (so every reading lies in the past, as the
backend requires) and real-time runs start now.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["simulate_command", "simulate"]


def simulate(scenario: str | None = None, days: float = 1.0, speed: str | float = "max",
             devices: str | dict | None = None, seed: int | None = None, truth: str | Path | None = None,
             mqtt_url: str | None = "mqtt://127.0.0.1:1883", start: str | None = None,
             truth_db: str | None = None, devices_out: str | Path | None = None,
             malformed_rate: float | None = None, progress: bool = True, quiet: bool = False) -> dict:
    """Run a simulation; returns the figures (a JSON-able dict)."""
    from simulators.engine import Simulation
    from simulators.fleet import build_fleet
    from simulators.publisher import make_publisher
    from simulators.runner import parse_speed, run
    from simulators.scenario import load_scenario
    from simulators.timebase import default_start, iso, parse_start
    from simulators.truth import TruthWriter, insert_truth

    sc = load_scenario(scenario)
    spd = parse_speed(speed)
    fleet = build_fleet(sc, counts=devices, seed=seed)
    if devices_out:
        fleet.write_jsonl(devices_out)
    t_start = parse_start(start) if start else (sc.start_ms if sc.start_ms is not None else
                                                default_start(days, spd))
    node = {"malformed_rate": malformed_rate} if malformed_rate is not None else None
    sim = Simulation(fleet, start_ms=t_start, days=days, seed=seed, node=node)
    pub = make_publisher(mqtt_url)
    sinks = []
    writer = TruthWriter(truth) if truth else None
    if writer is not None:
        sinks.append(writer.write_many)
    db_rows: list = []
    if truth_db:
        sinks.append(db_rows.extend)
    stop = {"flag": False}

    def on_sigint(*_a: object) -> None:
        stop["flag"] = True

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        if progress and not quiet:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            with Progress(TextColumn("[bold]simulate[/] {task.description}"), BarColumn(),
                          TextColumn("{task.percentage:>5.1f}%"), TimeElapsedColumn(), TimeRemainingColumn(),
                          transient=False) as bar:
                task = bar.add_task(f"{sc.name}: {len(fleet.devices)} devices, {days:g} days", total=sim.end_ms - sim.start_ms)
                st = run(sim, pub, speed=spd, truth=sinks,
                         progress=lambda done, total: bar.update(task, completed=done),
                         should_stop=lambda: stop["flag"])
        else:
            st = run(sim, pub, speed=spd, truth=sinks, should_stop=lambda: stop["flag"])
    finally:
        signal.signal(signal.SIGINT, old)
        if writer is not None:
            writer.close()
        pub.close()
    if truth_db:
        import psycopg

        with psycopg.connect(truth_db) as conn:
            insert_truth(conn, db_rows, scenario=sc.name)
            conn.commit()
    out = st.to_dict()
    out.update({"scenario": sc.name, "tenant": sc.tenant, "seed": fleet.seed, "start": iso(sim.start_ms),
                "end": iso(sim.end_ms), "devices_by_kind": fleet.count_by_kind(),
                "truth_file": str(truth) if truth else None, "node_stats": dict(sim.shell.stats),
                "interrupted": stop["flag"]})
    return out


def simulate_command(
    scenario: Annotated[str, typer.Option(help="Scenario YAML (path or name in simulators/scenarios).")] = "town.yaml",
    days: Annotated[float, typer.Option(help="Simulated days.")] = 1.0,
    speed: Annotated[str, typer.Option(help="Simulated s per wall s: 1 = real time, 0 or 'max' = as fast as possible.")] = "max",
    devices: Annotated[Optional[str], typer.Option(help="Device counts, e.g. bins=5000,air=50,noise=40,road=12.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (default: the scenario's).")] = None,
    truth: Annotated[Optional[Path], typer.Option(help="Write ground-truth events to this JSONL file.")] = None,
    mqtt_url: Annotated[str, typer.Option("--mqtt-url", help="Broker URL, or 'none' to run without one.")] = "mqtt://127.0.0.1:1883",
    start: Annotated[Optional[str], typer.Option(help="Simulated start (ISO, UTC if naive).")] = None,
    truth_db: Annotated[Optional[str], typer.Option("--truth-db", help="Also insert truth into truth_events at this PostgreSQL URL.")] = None,
    devices_out: Annotated[Optional[Path], typer.Option("--devices-out", help="Write the device registry (JSONL).")] = None,
    malformed_rate: Annotated[Optional[float], typer.Option(help="Override the malformed-payload rate per pack.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Simulate a town of devices publishing the wire contract over MQTT, with labelled ground truth."""
    try:
        res = simulate(scenario, days, speed, devices, seed, truth, mqtt_url, start, truth_db, devices_out,
                       malformed_rate, progress=not json_out)
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as e:
        typer.echo(f"simulate: {e}", err=True)
        raise typer.Exit(2) from None
    if json_out:
        typer.echo(json.dumps(res, indent=2))
    else:
        typer.echo(f"{res['messages']} messages ({res['readings']} readings) from {res['devices']} devices, "
                   f"{res['sim_days']} simulated days in {res['wall_s']} s: {res['messages_per_s']} msg/s, "
                   f"{res['readings_per_s']} readings/s, {res['sim_days_per_min']} simulated days/min; "
                   f"{res['truth_events']} truth events" + (f" -> {res['truth_file']}" if res['truth_file'] else ""))


def main() -> None:  # pragma: no cover - convenience entry: python -m simulators.cli
    app = typer.Typer(add_completion=False)
    app.command("simulate")(simulate_command)
    from simulators.bench import bench_command

    app.command("bench")(bench_command)
    app(args=sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    main()
