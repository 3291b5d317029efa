"""Plan / re-plan against the database: the shell shared by the CLI and the API.

The fleet of a plan (:func:`resolve_fleet`): a :class:`~routing.fleet.FleetConfig` given
(``streetsense routes plan --fleet FILE``), else the tenant's stored configuration of that
name (``fleet_configs``; the API's plan request names one), else the tenant's ``default``
row, else the shipped demo-town fleet.  Its time zone is the plan's: ``now`` for a re-plan
is converted on the plan day's clock (a naive ``now`` is local wall-clock time).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from datetime import date as Date, datetime, timezone
from functools import lru_cache

from routing import store
from routing.clock import DayClock
from routing.fleet import DEFAULT_FLEET_CONFIG, FleetConfig, FleetError
from routing.plan import PlanParams, plan_day, replan

__all__ = ["tenant_graph", "make_plan", "replan_stored", "resolve_fleet"]


@lru_cache(maxsize=4)
def _graph(path: str | None):
    from simulators.geo import StreetGraph
    from simulators.scenario import load_scenario

    if path:
        return StreetGraph.load_json(path)
    return load_scenario().graph


def tenant_graph(tenant: str | None = None):
    """The street graph to plan on: ``STREETSENSE_STREET_GRAPH`` (StreetGraph JSON) or the default town."""
    return _graph(os.environ.get("STREETSENSE_STREET_GRAPH") or None)


def resolve_fleet(conn, tenant: str, fleet: FleetConfig | str | None = None) -> tuple[str, FleetConfig]:
    """(where it came from, the fleet): see the module docstring.  An unknown name is a :class:`FleetError`."""
    if isinstance(fleet, FleetConfig):
        return "given", fleet
    if fleet is not None:
        got = store.get_fleet(conn, tenant, fleet)
        if got is None:
            raise FleetError(f"tenant {tenant!r} has no fleet configuration named {fleet!r}")
        return f"fleet_configs:{fleet}", got
    got = store.get_fleet(conn, tenant, "default")
    if got is not None:
        return "fleet_configs:default", got
    return "shipped default", DEFAULT_FLEET_CONFIG


def make_plan(conn, tenant: str, day: Date, graph=None, params: PlanParams | None = None,
              fleet: FleetConfig | str | None = None) -> tuple[int, dict]:
    """Plan ``day`` for ``tenant`` with its fleet (:func:`resolve_fleet`) and store it with its inputs."""
    g = graph or tenant_graph(tenant)
    source, cfg = resolve_fleet(conn, tenant, fleet)
    p = params or PlanParams()
    p.timezone = cfg.timezone
    specs = cfg.specs()
    bins = store.load_bin_states(conn, tenant, day, g, tz=cfg.timezone)
    plan = plan_day(bins, day, g, specs, p, sites=cfg.sites(g))
    plan["fleet_source"] = source
    inputs = {"bins": [asdict(b) for b in bins], "params": asdict(p), "fleet": [asdict(v) for v in specs],
              "fleet_config": cfg.dump(), "fleet_source": source,
              "graph": g.name, "nodes": len(g.nodes), "edges": len(g.edges)}
    pid = store.save_plan(conn, tenant, day, inputs, plan)
    plan["plan_id"] = pid
    return pid, plan


def replan_stored(conn, plan_id: int, *, now: datetime | None = None, blocked_edges: set[int] = frozenset(),
                  broken: set[str] = frozenset(), graph=None, reason: str = "manual",
                  time_limit_s: float | None = None) -> tuple[int, dict]:
    """Re-plan the active descendant of ``plan_id``: completed stops come from 'collected' (and 'not_out',
    'damaged', 'contaminated': visited) crew reports; 'blocked' reports close their street."""
    pid = store.latest_plan(conn, plan_id)
    row = store.get_plan(conn, pid)
    plan = row["plan"]
    g = graph or tenant_graph(row["tenant"])
    chain = [pid]
    cur = row
    while cur["parent_id"] is not None:
        chain.append(cur["parent_id"])
        cur = store.get_plan(conn, cur["parent_id"])
    reps = store.reports(conn, chain)
    done = {r["asset_id"] for r in reps if r["status"] != "blocked"}
    blocked = set(blocked_edges) | {int(r["edge_id"]) for r in reps if r["status"] == "blocked" and r["edge_id"] is not None}
    params = PlanParams(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in plan["params"].items()})
    # the plan day's clock in the council's zone: "now" as seconds elapsed since its local midnight
    clock = DayClock(Date.fromisoformat(str(row["plan_date"])), params.timezone)
    now = now or datetime.now(timezone.utc)
    now_s = clock.seconds(now)
    if not 0 <= now_s <= clock.length_s:
        raise ValueError(f"now ({now.isoformat()}) is not on the plan's day ({clock.day}, {clock.tz})")
    if time_limit_s is not None:
        params.time_limit_s = time_limit_s
    # keep what earlier re-plans already finished
    new = replan(plan, g, now_s=now_s, completed=done, blocked_edges=blocked, broken=set(broken) | set(plan.get("broken", [])),
                 params=params)
    new["done"] = plan.get("done", []) + new.get("done", [])
    new["blocked"] = plan.get("blocked", []) + new.get("blocked", [])
    inputs = {"parent": pid, "completed": sorted(done), "blocked_edges": sorted(blocked), "broken": sorted(broken),
              "now": now.isoformat(), "now_utc": clock.utc_iso(now_s), "now_local": clock.hhmm(now_s)}
    nid = store.save_plan(conn, row["tenant"], row["plan_date"], inputs, new, parent_id=pid, reason=reason)
    new["plan_id"] = nid
    return nid, new
