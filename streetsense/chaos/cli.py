"""The ``streetsense chaos`` and ``streetsense bench soak`` commands (Typer).

Only Typer is imported here; the work is imported when a command runs, so
registering them keeps ``streetsense --help`` (and every ``streetsense …``
process start) fast.

>>> from typer.testing import CliRunner
>>> import typer
>>> app = typer.Typer()
>>> _ = app.command("chaos")(chaos_command)
>>> "--faults" in CliRunner().invoke(app, ["--help"]).output
True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["chaos_command", "soak_command"]

DEFAULT_FAULTS = "broker_restart:5,postgres_restart:10,worker_kill:10,backhaul_cut:30,sink_outage:30"


def _env(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for p in pairs or []:
        k, sep, v = p.partition("=")
        if not sep:
            raise typer.BadParameter(f"--env takes NAME=VALUE, got {p!r}")
        out[k] = v
    return out


def chaos_command(
    json_out: Annotated[bool, typer.Option("--json", help="print the report as one line of JSON")] = False,
    scenario: Annotated[str, typer.Option(help="simulated town (scenario YAML or name)")] = "town",
    devices: Annotated[Optional[str], typer.Option(help="device counts, e.g. bins=500,air=5")] = None,
    seed: Annotated[Optional[int], typer.Option(help="simulation seed (default: the scenario's)")] = None,
    speed: Annotated[float, typer.Option(help="target load: simulated seconds per wall second")] = 360.0,
    overload: Annotated[float, typer.Option(help="overload phase: this many times the target speed")] = 2.0,
    overload_s: Annotated[float, typer.Option(help="overload phase length (0 = none)")] = 60.0,
    warmup_s: float = 20.0,
    baseline_s: float = 20.0,
    faults: Annotated[str, typer.Option(help="fault:seconds, in order (broker_restart, postgres_restart, "
                                             "worker_kill, backhaul_cut, sink_outage)")] = DEFAULT_FAULTS,
    lag_ok_s: Annotated[float, typer.Option(help="recovered: p99 end-to-end lag back under this")] = 5.0,
    settle_s: Annotated[float, typer.Option(help="steady time between faults")] = 5.0,
    workers: Annotated[int, typer.Option(help="ingest worker processes")] = 2,
    work: Annotated[Optional[Path], typer.Option(help="keep data and logs here (default: a temporary dir)")] = None,
    env: Annotated[Optional[list[str]], typer.Option(help="NAME=VALUE for the gateway and workers, e.g. a rate "
                                                          "limit for the run (repeatable)")] = None,
) -> None:
    """Break the running pipeline (broker, PostgreSQL, a worker, the backhaul, a webhook) under load; then
    compare the database with what was sent. JSON report; exit 1 if anything was lost or duplicated or a
    fault did not recover."""
    from streetsense.chaos.cluster import ClusterConfig
    from streetsense.chaos.run import ChaosConfig, parse_faults, run_chaos

    try:
        plan = parse_faults(faults)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    cfg = ChaosConfig(cluster=ClusterConfig(scenario=scenario, devices=devices, seed=seed, workers=workers,
                                            env=_env(env)),
                      speed=speed, overload=overload, overload_s=overload_s, warmup_s=warmup_s,
                      baseline_s=baseline_s, faults=plan, lag_ok_s=lag_ok_s, settle_s=settle_s, work=work)
    rep = run_chaos(cfg)
    print(json.dumps(rep, indent=None if json_out else 2, default=str))
    if not rep["ok"]:
        raise typer.Exit(1)


def soak_command(
    minutes: Annotated[float, typer.Option(help="measured minutes (after the warm-up)")] = 30.0,
    rate: Annotated[Optional[float], typer.Option(help="target messages/s (default: the town's real-time "
                                                       "rate x --speed)")] = None,
    speed: Annotated[float, typer.Option(help="simulated seconds per wall second, when --rate is not given")] = 360.0,
    scenario: str = "town",
    devices: Annotated[Optional[str], typer.Option(help="device counts, e.g. bins=500,air=5")] = None,
    seed: Optional[int] = None,
    sample_s: Annotated[float, typer.Option(help="sampling interval")] = 10.0,
    warmup_s: Annotated[float, typer.Option(help="seconds before measuring")] = 60.0,
    warmup_speed: Annotated[Optional[float], typer.Option(
        help="speed during the warm-up (default --speed); faster carries the models past the days in which "
             "their per-device windows fill, then --settle-s at --speed")] = None,
    settle_s: Annotated[float, typer.Option(help="seconds at --speed after a faster warm-up")] = 60.0,
    work: Annotated[Optional[Path], typer.Option(help="keep data and logs here (default: a temporary dir)")] = None,
    env: Annotated[Optional[list[str]], typer.Option(help="NAME=VALUE for the gateway and workers")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON only (one line)")] = False,
) -> None:
    """Sustained load through the whole pipeline: lag, throughput, memory and database size sampled;
    drift (slope per minute, first vs last quarter) and a verdict, stable or drifting (JSON)."""
    from streetsense.soak import run_soak

    rep = run_soak(minutes, rate=rate, speed=None if rate is not None else speed, scenario=scenario,
                   devices=devices, seed=seed, sample_s=sample_s, warmup_s=warmup_s, warmup_speed=warmup_speed,
                   settle_s=settle_s, work=work, env=_env(env))
    print(json.dumps(rep, indent=None if json_out else 2, default=str))
