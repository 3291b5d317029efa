"""Benchmarks that print JSON: ``bench_routing`` (PyVRP vs OR-Tools on CVRPLIB X)
and ``bench_collection`` (demand-driven vs fixed collection schedule on the
simulated town).

``streetsense bench routing --data ../shared/datasets/cvrplib_x --time-limit 60 --json``
runs every instance with both solvers (see :mod:`routing.cvrplib` for how the
comparison is kept fair).  The full set is 50 instances x 2 solvers x the time
limit: ~100 min at 60 s with ``--parallel 1``.  ``--instances`` takes names
(``X-n101-k25,X-n204-k19``) or a count N (N instances spread over the size
range).  ``--parallel P`` runs P single-threaded solver jobs at once (process
pool); on a 2-core machine use at most 2 and nothing else heavy, or the
wall-clock limits buy less search — the JSON records ``parallel`` and the CPU
count so a reader can judge.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from statistics import mean
from typing import Annotated, Optional

import typer

__all__ = ["bench_routing", "bench_routing_command", "run_routing_bench", "bench_collection", "bench_plan_day",
           "bench_collection_command"]


def _job(path: str, solver: str, time_limit: float, seed: int) -> tuple[str, str, dict]:
    from routing.cvrplib import load_instance, solve_ortools, solve_pyvrp

    inst = load_instance(path)
    res = solve_pyvrp(inst, time_limit, seed) if solver == "pyvrp" else solve_ortools(inst, time_limit)
    return inst.name, solver, res


def _gap(cost: int | None, bks: int | None) -> float | None:
    if cost is None or not bks:
        return None
    return round(100.0 * (cost - bks) / bks, 3)


def run_routing_bench(data: str | Path, time_limit: float = 60.0, instances=None, parallel: int = 1,
                      seed: int = 1, solvers: tuple[str, ...] = ("pyvrp", "ortools"),
                      progress: bool = False) -> dict:
    """Run the comparison and return the result dict (see module docstring)."""
    from routing.cvrplib import fleet_size, list_instances, load_instance, read_bks

    files = list_instances(data, instances)
    bks = read_bks(data)
    meta = {}
    for f in files:
        inst = load_instance(f)
        meta[inst.name] = {"n": inst.n_clients, "k": inst.k, "fleet": fleet_size(inst.k), "bks": bks.get(inst.name)}
    jobs = [(str(f), s, time_limit, seed) for f in files for s in solvers]
    # biggest first so the pool's tail is short
    jobs.sort(key=lambda j: -meta[Path(j[0]).stem]["n"])
    results: dict[str, dict[str, dict]] = {name: {} for name in meta}
    t0 = time.perf_counter()
    par = max(1, min(int(parallel), os.cpu_count() or 1))
    if par == 1:
        for j in jobs:
            name, s, r = _job(*j)
            results[name][s] = r
            if progress:
                print(f"{name} {s}: {r['cost']} ({_gap(r['cost'], meta[name]['bks'])} %)", file=sys.stderr)
    else:
        with ProcessPoolExecutor(max_workers=par) as ex:
            for name, s, r in ex.map(_job, *zip(*jobs)):
                results[name][s] = r
                if progress:
                    print(f"{name} {s}: {r['cost']} ({_gap(r['cost'], meta[name]['bks'])} %)", file=sys.stderr)
    rows = []
    for name, m in meta.items():
        row = {"instance": name, **m}
        for s in solvers:
            r = results[name].get(s, {})
            row[s] = {"cost": r.get("cost"), "gap_pct": _gap(r.get("cost"), m["bks"]), "routes": r.get("routes"),
                      "feasible": r.get("feasible"), "seconds": r.get("seconds")}
        rows.append(row)
    summary = {}
    for s in solvers:
        gaps = [r[s]["gap_pct"] for r in rows if r[s]["gap_pct"] is not None and r[s]["feasible"]]
        summary[s] = {"mean_gap_pct": round(mean(gaps), 3) if gaps else None, "solved": len(gaps),
                      "infeasible": sum(1 for r in rows if not r[s]["feasible"])}
    out = {"bench": "routing", "data": str(data), "time_limit_s": time_limit, "parallel": par,
           "cpus": os.cpu_count(), "seed": seed, "instances": len(rows),
           "fleet_rule": "k + max(2, ceil(0.1 k)) vehicles for both solvers (X fleet is unlimited; admits every BKS)",
           "distances": "TSPLIB nint(Euclidean), one shared integer matrix",
           "ortools": "GUIDED_LOCAL_SEARCH, PATH_CHEAPEST_ARC first solution, RegisterTransitMatrix",
           "pyvrp": "pyvrp.solve (ILS), MaxRuntime",
           "summary": summary, "wall_s": round(time.perf_counter() - t0, 1), "results": rows}
    if "pyvrp" in summary and "ortools" in summary and summary["ortools"]["mean_gap_pct"]:
        pg, og = summary["pyvrp"]["mean_gap_pct"], summary["ortools"]["mean_gap_pct"]
        out["targets"] = {"pyvrp_mean_gap_le_1pct": pg is not None and pg <= 1.0,
                          "pyvrp_le_half_ortools": pg is not None and pg <= og / 2}
    return out


def bench_routing(data: str | Path, time_limit: float = 60.0, instances=None, json_out: bool = True,
                  parallel: int = 1, seed: int = 1) -> dict:
    """Run and print (JSON, or a short table)."""
    res = run_routing_bench(data, time_limit, instances, parallel, seed, progress=not json_out)
    if json_out:
        print(json.dumps(res, indent=2))
    else:
        for r in res["results"]:
            print(f"{r['instance']:>14}  bks {r['bks']:>7}  pyvrp {r['pyvrp']['cost']} ({r['pyvrp']['gap_pct']} %)"
                  f"  ortools {r['ortools']['cost']} ({r['ortools']['gap_pct']} %)")
        print(json.dumps(res["summary"]))
    return res


def bench_routing_command(
        data: Annotated[Path, typer.Option(help="folder of X instances (.vrp, .sol, X_bks_costs.csv)")] = Path(
            "../shared/datasets/cvrplib_x"),
        time_limit: Annotated[float, typer.Option(help="seconds per solver per instance")] = 60.0,
        instances: Annotated[Optional[str], typer.Option(help="names (comma-separated) or a count N")] = None,
        parallel: Annotated[int, typer.Option(help="solver jobs at once (<= CPUs; 1 = fair timing)")] = 1,
        seed: int = 1,
        json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """PyVRP vs OR-Tools (GLS) on CVRPLIB X: cost and gap to the best known solution."""
    bench_routing(data, time_limit, instances, json_out, parallel, seed)


# --- demand-driven vs fixed schedule -------------------------------------------------------------

def bench_collection(scenario: str | None = None, days: int = 28, json_out: bool = True, *, bins: int | None = None,
                     time_limit_s: float = 2.0, start: str = "2026-03-02", seed: int = 11,
                     progress: bool = False) -> dict:
    """Simulate ``days`` of collections on the town under both policies and compare.

    Truth: the simulator's bin model (``simulators.models.bins.BinModel``) gives each
    bin its true fill rate (the council's planning figure x the household's / site's
    own lognormal error) and starting fill; fills then grow day by day with its
    day-of-week factors and gamma noise (household bags arrive in lumps).  The
    sensors report the true fill + N(0, 0.02) once a day; the demand-driven planner
    forecasts with an online rate (EWMA of the reported daily rises, seeded with the
    planning figure) and plans with :func:`routing.plan.select_stops` (households:
    policy ``demand`` — lifted on their round day only when >= 50 % full or would
    overflow before the next round, plus an extra off-round lift for a bin about to
    overflow; street bins: any day they reach 80 % or would overflow by tomorrow).  The fixed schedule lifts every bin on its calendar day.
    Both policies are routed every day with the same fleet and model
    (:func:`routing.plan.plan_day`), so km and lorry hours are solver output, not
    estimates.  An overflow is a bin-day whose true fill passes the rim.
    """
    from datetime import date as Date, timedelta

    import numpy as np

    from routing.plan import PlanParams, plan_day
    from routing.town import bin_states
    from simulators.context import make_context
    from simulators.fleet import build_fleet
    from simulators.models.bins import BinModel
    from simulators.scenario import load_scenario

    sc = load_scenario(scenario)
    counts = {"air": 0, "noise": 0, "road": 0}
    if bins is not None:
        counts["bins"] = bins
    fl = build_fleet(sc, counts=counts)
    d0 = Date.fromisoformat(start)
    start_ms = int(datetime_utc(d0).timestamp() * 1000)
    bm = BinModel(fl.devices, sc.bins, make_context(fl, start_ms, days))
    rate_true = bm.rate.copy()
    hh = bm.is_house
    rng = np.random.default_rng(seed)
    base = bin_states(fl)
    n = len(base)
    plan_rate = np.array([b.rate_per_day for b in base])
    res = {}
    for policy in ("fixed", "demand"):
        fill = bm.fill.copy()
        est = plan_rate.copy()
        obs_prev = np.clip(fill + rng.normal(0, 0.02, n), 0, 1.5)
        tot = {"lifts": 0, "household_lifts": 0, "street_lifts": 0, "km": 0.0, "lorry_hours": 0.0, "lorry_trips": 0,
               "overflow_bin_days": 0, "overflow_bin_days_street": 0, "bins_overflowed": 0, "unserved": 0, "violations": 0,
               "mean_fill_at_lift": 0.0, "solve_s": 0.0}
        ever = np.zeros(n, dtype=bool)
        fills_at_lift = []
        for k in range(days):
            day = d0 + timedelta(days=k)
            dow = day.weekday()
            states = [b for b in base]
            for i, b in enumerate(states):
                b.fill, b.fill_age_h, b.rate_per_day = float(obs_prev[i]), 0.0, float(est[i])
            if policy == "fixed":
                prm = PlanParams(time_limit_s=time_limit_s, threshold=9.9, overflow_at=9.9,
                                 street_policy="calendar", working_days=tuple(range(7)))
                plan = plan_day(states, day, fl.graph, params=prm)
            else:
                prm = PlanParams(time_limit_s=time_limit_s, household_policy="demand", working_days=tuple(range(7)))
                plan = plan_day(states, day, fl.graph, params=prm)
            lifted = set()
            if plan is not None:
                for r in plan["routes"]:
                    for e in r["events"]:
                        if e["type"] == "stop":
                            lifted.add(e["asset_id"])
                tot["km"] += plan["totals"]["km"]
                tot["lorry_hours"] += plan["totals"]["lorry_hours"]
                tot["lorry_trips"] += plan["totals"]["trips"]
                tot["unserved"] += len(plan["unserved"])
                tot["violations"] += plan["totals"].get("violations", 0)
                tot["solve_s"] += plan["timings_s"]["total"]
            # the day passes: fill grows until the slot, lifts empty, then the rest of the day
            dowf = np.where(hh, bm.hh_dow[dow], bm.st_dow[dow])
            grow = rate_true * dowf * np.where(hh, rng.gamma(2.0, 0.5, n), rng.gamma(8.0, 0.125, n))
            idx = np.array([i for i, b in enumerate(base) if b.asset_id in lifted], dtype=np.int64)
            fill = fill + grow * 0.4
            if len(idx):
                fills_at_lift.extend(fill[idx].tolist())
                fill[idx] = rng.uniform(0.0, 0.03, len(idx))
                tot["household_lifts"] += int(hh[idx].sum())
                tot["street_lifts"] += int((~hh[idx]).sum())
            fill = fill + grow * 0.6
            over = fill > 1.0
            tot["overflow_bin_days"] += int(over.sum())
            tot["overflow_bin_days_street"] += int((over & ~hh).sum())
            ever |= over
            fill = np.minimum(fill, 1.3)
            obs = np.clip(fill + rng.normal(0, 0.02, n), 0, 1.5)
            rise = obs - obs_prev
            ok = np.ones(n, dtype=bool)
            if len(idx):
                ok[idx] = False           # emptied today: no rate information
            est = np.where(ok, 0.8 * est + 0.2 * np.maximum(rise, 0.0), est)
            obs_prev = obs
            if progress:
                print(f"{policy} day {k + 1}: {len(lifted)} lifts", file=sys.stderr)
        tot["lifts"] = tot["household_lifts"] + tot["street_lifts"]
        tot["bins_overflowed"] = int(ever.sum())
        tot["mean_fill_at_lift"] = round(float(np.mean(fills_at_lift)), 3) if fills_at_lift else None
        for k2 in ("km", "lorry_hours", "solve_s"):
            tot[k2] = round(tot[k2], 1)
        res[policy] = tot
    f, d = res["fixed"], res["demand"]

    def red(a, b):
        return round(100.0 * (a - b) / a, 1) if a else None

    out = {"bench": "collection", "scenario": sc.name, "days": days, "bins": n,
           "household_bins": int(hh.sum()), "street_bins": int((~hh).sum()), "start": start,
           "solver_time_limit_s": time_limit_s, "fixed": f, "demand": d,
           "reduction_pct": {"lifts": red(f["lifts"], d["lifts"]), "household_lifts": red(f["household_lifts"],
                             d["household_lifts"]), "street_lifts": red(f["street_lifts"], d["street_lifts"]),
                             "km": red(f["km"], d["km"]), "lorry_hours": red(f["lorry_hours"], d["lorry_hours"]),
                             "lorry_trips": red(f["lorry_trips"], d["lorry_trips"]),
                             "overflow_bin_days": red(f["overflow_bin_days"], d["overflow_bin_days"])}}
    if json_out:
        print(json.dumps(out, indent=2))
    return out


def datetime_utc(d):
    from datetime import datetime, time as Time, timezone

    return datetime.combine(d, Time(0), tzinfo=timezone.utc)


def bench_collection_command(
        scenario: Annotated[Optional[str], typer.Option(help="scenario name or YAML path")] = None,
        days: Annotated[int, typer.Option(help="days to simulate")] = 28,
        bins: Annotated[Optional[int], typer.Option(help="override the scenario's bin count")] = None,
        time_limit: Annotated[float, typer.Option(help="solver seconds per day and policy")] = 2.0,
        json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Demand-driven plan vs the fixed schedule on the simulated town: lifts, km, lorry hours, overflows."""
    r = bench_collection(scenario, days, json_out, bins=bins, time_limit_s=time_limit, progress=not json_out)
    if not json_out:
        print(json.dumps({"reduction_pct": r["reduction_pct"], "fixed": r["fixed"], "demand": r["demand"]}, indent=1))


# --- planning time for a big day -----------------------------------------------------------------

def bench_plan_day(stops: int = 2000, time_limit_s: float = 30.0, scenario: str | None = None,
                   json_out: bool = True, seed: int = 1) -> dict:
    """Plan a day with ``stops`` bins on the town (street-graph matrices, default fleet) and time it.

    Street bins are due when their (random) fill is >= 0.8, and household bins are put
    on today's round until ``stops`` bins are due; everything else is off-round.
    """
    from datetime import date as Date

    import numpy as np

    from routing.plan import PlanParams, plan_day
    from routing.town import bin_states
    from simulators.fleet import build_fleet
    from simulators.scenario import load_scenario

    t0 = time.perf_counter()
    sc = load_scenario(scenario)
    fl = build_fleet(sc, counts={"bins": max(stops * 2, sc.devices.get("bins", 0)), "air": 0, "noise": 0, "road": 0})
    rng = np.random.default_rng(seed)
    n = len(fl.by_kind("bin_fill"))
    fills = np.where(rng.random(n) < 0.5, rng.uniform(0.85, 1.0, n), rng.uniform(0.0, 0.3, n))
    bins = bin_states(fl, fills=fills, rates=np.zeros(n))
    due_street = sum(1 for b in bins if b.bin_kind == "street" and b.fill >= 0.8)
    k = 0
    for b in bins:
        if b.bin_kind == "household":
            b.round_days, b.frequency_weeks = ((0,) if k < stops - due_street else ()), 1
            k += 1
    t1 = time.perf_counter()
    out = plan_day(bins, Date(2026, 3, 2), sc.graph, params=PlanParams(time_limit_s=time_limit_s))
    t2 = time.perf_counter()
    res = {"bench": "plan_day", "stops": out["selected"], "served": out["totals"]["stops"],
           "unserved": len(out["unserved"]), "feasible": out["feasible"], "time_limit_s": time_limit_s,
           "graph": {"nodes": len(sc.graph.nodes), "edges": len(sc.graph.edges)}, "timings_s": out["timings_s"],
           "setup_s": round(t1 - t0, 2), "plan_wall_s": round(t2 - t1, 2), "totals": out["totals"],
           "routes": [{k2: r[k2] for k2 in ("route_id", "stops", "trips", "km", "start", "end", "trip_litres")}
                      for r in out["routes"]]}
    if json_out:
        print(json.dumps(res, indent=2))
    return res
