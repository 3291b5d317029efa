"""``streetsense routes plan --date YYYY-MM-DD --tenant demo-town [--json]`` (mounted by the lead)."""

from __future__ import annotations

import json
from datetime import date as Date
from typing import Annotated, Optional

import typer

__all__ = ["routes_plan_command", "bench_collection_command", "bench_routing_command"]


def routes_plan_command(
        date: Annotated[str, typer.Option("--date", help="plan date (YYYY-MM-DD)")],
        tenant: Annotated[str, typer.Option(help="tenant id")] = "demo-town",
        time_limit: Annotated[float, typer.Option(help="solver seconds")] = 20.0,
        database_url: Annotated[Optional[str], typer.Option(help="default: settings / DATABASE_URL")] = None,
        json_out: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False) -> dict:
    """Plan the day's collections for a tenant, store the plan with its inputs, print it."""
    import psycopg
    from psycopg.rows import dict_row

    from routing.plan import PlanParams
    from routing.service import make_plan

    if database_url is None:
        from streetsense.settings import get_settings
        database_url = get_settings().database_url
        if not database_url:
            raise typer.BadParameter("no database URL (set DATABASE_URL)")
    with psycopg.connect(database_url, row_factory=dict_row, autocommit=True) as conn:
        pid, plan = make_plan(conn, tenant, Date.fromisoformat(date), params=PlanParams(time_limit_s=time_limit))
    if json_out:
        print(json.dumps(plan, default=str))
    else:
        t = plan["totals"]
        print(f"plan {pid} for {date}: {t['stops']} stops, {t['lorries']} lorries, {t['trips']} trips, "
              f"{t['km']} km, {t['lorry_hours']} lorry-hours; unserved {len(plan['unserved'])}")
        for r in plan["routes"]:
            print(f"  {r['route_id']}: {r['stops']} stops, {r['trips']} trips, {r['km']} km, {r['start']}-{r['end']}"
                  f"  /crew/{pid}/{r['route_id']}")
    return plan


from routing.bench import bench_collection_command, bench_routing_command  # noqa: E402
