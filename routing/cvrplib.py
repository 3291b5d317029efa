"""CVRPLIB X instances (Uchoa et al. 2017) and the two solvers compared on them.

Conventions (TSPLIB): ``EUC_2D`` distances rounded to the nearest integer
(``nint``); the depot is node 0; the fleet of the X set is *unlimited* — the
``kXX`` in the name is the minimum number of routes (a bin-packing bound),
and best-known solutions use up to ``k + 6`` routes (X-n936-k151 uses 157).

Fairness: both solvers get the *same* integer matrix (computed here once),
the same capacity and the same fleet bound ``fleet_size(k) = k + max(2,
ceil(0.1 k))``, which admits every best-known solution of the 50-instance
set (checked against the ``.sol`` files: the largest excess is 6 routes at
k = 151, bound 167) while keeping OR-Tools' vehicle count — which its local
search scales with — close to what is needed.  Each run is single-threaded
with a wall-clock limit; PyVRP stops on ``MaxRuntime``, OR-Tools uses
``GUIDED_LOCAL_SEARCH`` with ``time_limit`` and ``PATH_CHEAPEST_ARC`` as the
first solution.  The cost reported is recomputed here from the returned routes
on the shared matrix, so neither solver's own bookkeeping is trusted.
"""

from __future__ import annotations

import csv
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Instance", "load_instance", "list_instances", "read_bks", "fleet_size", "route_cost",
           "solve_pyvrp", "solve_ortools", "rounded_euclidean"]


@dataclass
class Instance:
    name: str
    coords: np.ndarray          #: (n, 2), depot first
    demand: np.ndarray          #: (n,), depot 0
    capacity: int
    k: int                      #: minimum number of routes (from the name)
    dist: np.ndarray            #: (n, n) int64, rounded Euclidean
    path: Path | None = None

    @property
    def n_clients(self) -> int:
        return len(self.demand) - 1


def rounded_euclidean(coords: np.ndarray) -> np.ndarray:
    """TSPLIB ``nint`` of the Euclidean distance (``floor(d + 0.5)``).

    >>> rounded_euclidean(np.array([[0, 0], [3, 4], [1, 1]])).tolist()
    [[0, 5, 1], [5, 0, 4], [1, 4, 0]]
    """
    c = np.asarray(coords, dtype=np.float64)
    d = np.hypot(c[:, None, 0] - c[None, :, 0], c[:, None, 1] - c[None, :, 1])
    return np.floor(d + 0.5).astype(np.int64)


def fleet_size(k: int) -> int:
    """Vehicles offered to both solvers.

    >>> fleet_size(6), fleet_size(25), fleet_size(151)
    (8, 28, 167)
    """
    return k + max(2, math.ceil(0.1 * k))


def load_instance(path: str | Path) -> Instance:
    import vrplib

    p = Path(path)
    d = vrplib.read_instance(str(p), compute_edge_weights=False)
    coords = np.asarray(d["node_coord"], dtype=np.float64)
    demand = np.asarray(d["demand"], dtype=np.int64)
    depots = np.atleast_1d(d.get("depot", [0]))
    if int(depots[0]) != 0:
        raise ValueError(f"{p.name}: depot must be the first node")
    m = re.search(r"-k(\d+)", p.stem)
    k = int(m.group(1)) if m else int(math.ceil(demand.sum() / int(d["capacity"])))
    return Instance(p.stem, coords, demand, int(d["capacity"]), k, rounded_euclidean(coords), p)


def list_instances(data: str | Path, instances: list[str] | str | int | None = None) -> list[Path]:
    """The ``.vrp`` files to run: all, the first/spread ``N`` by size, or the names given.

    ``instances`` may be an int N (N instances spread evenly over the size
    range), a comma-separated string of names or of an int, or a list of names.
    """
    files = sorted(Path(data).glob("*.vrp"), key=lambda f: (int(re.search(r"-n(\d+)", f.stem).group(1))
                                                            if re.search(r"-n(\d+)", f.stem) else 0, f.stem))
    if instances is None or instances == "" or instances == "all":
        return files
    if isinstance(instances, str):
        parts = [s.strip() for s in instances.split(",") if s.strip()]
        if len(parts) == 1 and parts[0].isdigit():
            instances = int(parts[0])
        else:
            instances = parts
    if isinstance(instances, int):
        n = max(1, min(instances, len(files)))
        idx = sorted({round(i * (len(files) - 1) / max(1, n - 1)) for i in range(n)}) if n > 1 else [0]
        return [files[i] for i in idx]
    by = {f.stem: f for f in files}
    missing = [x for x in instances if x.removesuffix(".vrp") not in by]
    if missing:
        raise FileNotFoundError(f"instances not found in {data}: {missing}")
    return [by[x.removesuffix(".vrp")] for x in instances]


def read_bks(data: str | Path) -> dict[str, int]:
    """Best-known costs from ``X_bks_costs.csv`` (else from the ``.sol`` files)."""
    out: dict[str, int] = {}
    f = Path(data) / "X_bks_costs.csv"
    if f.exists():
        with f.open() as fh:
            for row in csv.DictReader(fh):
                out[row["instance"]] = int(float(row["sol_cost"]))
    for s in Path(data).glob("*.sol"):
        if s.stem not in out:
            m = re.search(r"Cost\s+(\d+)", s.read_text())
            if m:
                out[s.stem] = int(m.group(1))
    return out


def route_cost(dist: np.ndarray, routes: list[list[int]]) -> int:
    """Total cost of depot-to-depot ``routes`` (client indices 1..n-1) on ``dist``."""
    tot = 0
    for r in routes:
        if not r:
            continue
        path = [0, *r, 0]
        tot += int(sum(dist[a, b] for a, b in zip(path, path[1:])))
    return tot


def _check(inst: Instance, routes: list[list[int]]) -> bool:
    seen = sorted(c for r in routes for c in r)
    if seen != list(range(1, len(inst.demand))):
        return False
    return all(int(inst.demand[r].sum()) <= inst.capacity for r in routes if r) and \
        sum(1 for r in routes if r) <= fleet_size(inst.k)


def solve_pyvrp(inst: Instance, time_limit: float, seed: int = 1) -> dict:
    """PyVRP's ILS on the shared matrix; returns cost, routes, feasibility, seconds."""
    import pyvrp
    from pyvrp.stop import MaxRuntime

    if inst.path is None:
        raise ValueError("solve_pyvrp needs the instance file")
    data = pyvrp.read(inst.path)          # clients, demands, capacity; matrices replaced below
    D = inst.dist
    vt = data.vehicle_type(0).replace(num_available=fleet_size(inst.k), capacity=[inst.capacity])
    data = data.replace(vehicle_types=[vt], distance_matrices=[D], duration_matrices=[np.zeros_like(D)])
    t0 = time.perf_counter()
    res = pyvrp.solve(data, stop=MaxRuntime(time_limit), seed=seed, display=False)
    secs = time.perf_counter() - t0
    # activities: client idx is 0-based among clients; the instance numbers clients from 1 (depot 0)
    routes = [[a.idx + data.num_depots for a in r if a.is_client()] for r in res.best.routes()]
    return {"cost": route_cost(D, routes), "feasible": bool(res.best.is_feasible()) and _check(inst, routes),
            "routes": len(routes), "seconds": round(secs, 2), "solver_cost": int(res.cost())
            if res.best.is_feasible() else None}


def solve_ortools(inst: Instance, time_limit: float) -> dict:
    """OR-Tools routing, GUIDED_LOCAL_SEARCH, on the same matrix and fleet bound."""
    from ortools.constraint_solver import pywrapcp, routing_enums_pb2

    n = len(inst.demand)
    nv = fleet_size(inst.k)
    man = pywrapcp.RoutingIndexManager(n, nv, 0)
    rm = pywrapcp.RoutingModel(man)
    tr = rm.RegisterTransitMatrix(inst.dist.tolist())
    rm.SetArcCostEvaluatorOfAllVehicles(tr)
    dem = rm.RegisterUnaryTransitVector([int(x) for x in inst.demand])
    rm.AddDimensionWithVehicleCapacity(dem, 0, [inst.capacity] * nv, True, "load")
    prm = pywrapcp.DefaultRoutingSearchParameters()
    prm.first_solution_strategy = routing_enums_pb2.FirstSolutionStrategy.PATH_CHEAPEST_ARC
    prm.local_search_metaheuristic = routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
    prm.time_limit.FromMilliseconds(int(time_limit * 1000))
    t0 = time.perf_counter()
    sol = rm.SolveWithParameters(prm)
    secs = time.perf_counter() - t0
    if sol is None:
        return {"cost": None, "feasible": False, "routes": 0, "seconds": round(secs, 2), "solver_cost": None}
    routes = []
    for v in range(nv):
        idx = rm.Start(v)
        r = []
        idx = sol.Value(rm.NextVar(idx))
        while not rm.IsEnd(idx):
            r.append(man.IndexToNode(idx))
            idx = sol.Value(rm.NextVar(idx))
        if r:
            routes.append(r)
    return {"cost": route_cost(inst.dist, routes), "feasible": _check(inst, routes), "routes": len(routes),
            "seconds": round(secs, 2), "solver_cost": int(sol.ObjectiveValue())}
