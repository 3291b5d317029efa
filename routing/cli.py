"""``streetsense routes plan --date YYYY-MM-DD --tenant demo-town [--fleet FILE | --fleet-name NAME] [--json]``
and ``streetsense routes fleet --tenant demo-town --file fleet.yaml [--name default] [--check]`` (mounted by the
lead)."""

from __future__ import annotations

import json
from datetime import date as Date
from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["routes_plan_command", "routes_fleet_command", "bench_collection_command", "bench_routing_command"]


def _db_url(database_url: str | None) -> str:
    if database_url is None:
        from streetsense.settings import get_settings
        database_url = get_settings().database_url
        if not database_url:
            raise typer.BadParameter("no database URL (set DATABASE_URL)")
    return database_url


def _fleet_file(path: Path, hint: str = "--fleet"):
    from routing.fleet import FleetError, load_fleet

    try:
        return load_fleet(path)
    except FleetError as e:
        raise typer.BadParameter(str(e), param_hint=hint) from None


def routes_plan_command(
        date: Annotated[str, typer.Option("--date", help="plan date (YYYY-MM-DD)")],
        tenant: Annotated[str, typer.Option(help="tenant id")] = "demo-town",
        time_limit: Annotated[float, typer.Option(help="solver seconds")] = 20.0,
        fleet: Annotated[Optional[Path], typer.Option("--fleet", help="fleet YAML file (routing/fleet.py); default: "
                                                      "the tenant's stored 'default' fleet, else the demo fleet")] = None,
        fleet_name: Annotated[Optional[str], typer.Option(help="a fleet stored with 'routes fleet'")] = None,
        database_url: Annotated[Optional[str], typer.Option(help="default: settings / DATABASE_URL")] = None,
        json_out: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False) -> dict:
    """Plan the day's collections for a tenant, store the plan with its inputs, print it."""
    import psycopg
    from psycopg.rows import dict_row

    from routing.fleet import FleetError
    from routing.plan import PlanParams
    from routing.service import make_plan

    if fleet is not None and fleet_name is not None:
        raise typer.BadParameter("give --fleet or --fleet-name, not both")
    cfg = _fleet_file(fleet) if fleet is not None else fleet_name
    with psycopg.connect(_db_url(database_url), row_factory=dict_row, autocommit=True) as conn:
        try:
            pid, plan = make_plan(conn, tenant, Date.fromisoformat(date), params=PlanParams(time_limit_s=time_limit),
                                  fleet=cfg)
        except FleetError as e:
            raise typer.BadParameter(str(e), param_hint="--fleet-name") from None
    if json_out:
        print(json.dumps(plan, default=str))
    else:
        t = plan["totals"]
        print(f"plan {pid} for {date} ({plan['timezone']} time, fleet: {plan['fleet_source']}): {t['stops']} stops, "
              f"{t['lorries']} lorries, {t['trips']} trips, {t['km']} km, {t['lorry_hours']} lorry-hours; "
              f"unserved {len(plan['unserved'])}; rule/window violations {t['violations']}")
        for r in plan["routes"]:
            print(f"  {r['route_id']}: {r['stops']} stops, {r['trips']} trips, {r['km']} km, {r['start']}-{r['end']}"
                  f"  /crew/{pid}/{r['route_id']}")
    return plan


def routes_fleet_command(
        tenant: Annotated[str, typer.Option(help="tenant id")],
        file: Annotated[Path, typer.Option(help="fleet YAML file (routing/fleet.py)")],
        name: Annotated[str, typer.Option(help="configuration name ('default' is used when a plan names none)")]
        = "default",
        check: Annotated[bool, typer.Option(help="only validate the file")] = False,
        database_url: Annotated[Optional[str], typer.Option(help="default: settings / DATABASE_URL")] = None) -> None:
    """Validate a fleet file and store it as the tenant's fleet configuration NAME."""
    import psycopg
    from psycopg.rows import dict_row

    from routing import store

    import re

    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", name):
        raise typer.BadParameter("use lower-case letters, digits, '-' and '_' (at most 64)", param_hint="--name")
    cfg = _fleet_file(file, "--file")
    if not check:
        with psycopg.connect(_db_url(database_url), row_factory=dict_row, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM tenants WHERE id = %s", (tenant,)).fetchone() is None:
                raise typer.BadParameter(f"unknown tenant {tenant!r}", param_hint="--tenant")
            store.save_fleet(conn, tenant, name, cfg)
    print(json.dumps({"tenant": tenant, "name": name, "stored": not check, "vehicles": sum(v.count for v in cfg.vehicles),
                      "timezone": cfg.timezone}))


from routing.bench import bench_collection_command, bench_routing_command  # noqa: E402
