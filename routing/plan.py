"""Collection planning, the pure core: which bins to visit on a date and why, the
vehicle-routing model, solving it with PyVRP, and re-planning during the day.

No database and no HTTP here (``routing.store`` and ``api.routes`` are the shell).

**Stop selection** (:func:`select_stops`) — every stop carries its reasons:

* ``alert:<kind>`` — an open ``overflow`` / ``missed_collection`` alert (must visit);
* ``scheduled`` — a household bin on its calendar round (policy ``calendar``; street bins too
  with ``street_policy="calendar"``, the fixed schedule); with
  policy ``demand`` a household bin is skipped on its round day when it is light and
  will not overflow before its next round);
* ``fill`` — predicted fill at the planned visit time >= ``threshold``;
* ``overflow_risk`` — predicted to pass ``overflow_at - risk_margin`` before the next
  opportunity (next working day for street bins, the next round for household bins;
  with policy ``demand`` also an extra off-round lift for a household bin that would
  overflow by the next working day).

The forecast is linear: last reported fill + rate x elapsed time (the rate comes
from the readings; see ``routing.store`` and ``routing.bench``).

**Model** (:func:`build_model`), one PyVRP problem per day:

* locations: the depot (start of every shift), the tipping site (a *reload depot*
  — unloading takes ``unload_min`` — and the *end* depot: a lorry never goes home
  loaded; the fixed tipping-site -> depot leg is added to the shift afterwards);
* vehicle types with two load dimensions, *volume* (litres of loose bin contents)
  and *weight* (kg, volume x waste density), ``num_available``, a fixed cost
  (lorries used first), ``max_reloads`` trips to the tip, shift window
  ``[shift_start, shift_end]`` in local time (the fleet comes from the tenant's
  configuration, :mod:`routing.fleet`; :data:`DEFAULT_FLEET` is the demo town's);
  the last unload at the tip and the drive home fit in the shift too;
* time: seconds elapsed since the plan day's local midnight in ``params.timezone``
  (:mod:`routing.clock`): computed in real time, shown as local ``HH:MM`` and
  stored as UTC (``eta_utc``), so the clocks-change days add up;
* crew breaks: PyVRP 0.14 has no break activity, so each vehicle's shift is shortened
  by ``break_min`` (the plan keeps time for it) and :mod:`routing.schedule` places
  the break afterwards by the rule (``break_min`` after ``break_after_h`` of driving
  or of duty), shifting the later times and reporting any window or shift end it
  breaks;
* clients: every bin is a pickup of [litres, kg] with a service time (lift) and a
  time window — street bins on the high street only before ``high_street_closed``
  (no lorries in shopping hours); must-visit stops are required, ``fill`` /
  ``overflow_risk`` stops optional with a prize (dropped only if the fleet cannot
  do them all);
* travel: :mod:`routing.travel` (street-graph shortest paths; haversine fallback);
  objective = metres + ``duration_weight`` x seconds + fixed costs.

**Re-planning** (:func:`replan`): drop completed stops, close blocked streets
(bins on them get ``blocked`` and leave the plan), remove broken-down lorries;
every working lorry restarts from its last position at ``now`` with the load it
carries, the driving it has done and whether it has had its break, and the rest
is solved again.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from datetime import date as Date, timedelta

import numpy as np

from routing.clock import DayClock
from routing.schedule import BreakRule, Visit, place_break
from routing.travel import Point, matrices

__all__ = ["BinState", "VehicleSpec", "PlanParams", "Stop", "select_stops", "build_model", "solve_plan",
           "plan_day", "replan", "DEFAULT_FLEET", "next_collection_day"]

MUST = {"alert:overflow", "alert:missed_collection"}


@dataclass
class BinState:
    asset_id: str
    bin_kind: str                        #: household | street
    capacity_l: float
    lat: float
    lon: float
    edge_id: int | None = None
    street: str = ""
    road_class: str = ""
    fill: float | None = None            #: last reported (0..1+)
    fill_age_h: float = 0.0              #: hours between that report and the start of the plan day
    rate_per_day: float | None = None    #: forecast fill rate
    round_days: tuple[int, ...] = ()
    frequency_weeks: int = 1
    week_parity: int = 0
    slot_h: float = 9.0
    household: str | None = None
    alerts: tuple[str, ...] = ()         #: open alert kinds on this bin


@dataclass
class VehicleSpec:
    name: str
    count: int
    capacity_l: int           #: loose bin litres the body takes (body volume x compaction)
    capacity_kg: int          #: payload
    shift_start_h: float = 6.0
    shift_end_h: float = 14.5
    break_after_h: float = 4.5
    break_min: float = 45.0
    max_reloads: int = 3
    fixed_cost: int = 100_000
    break_basis: str = "driving"   #: driving | duty (what ``break_after_h`` counts)

    @property
    def break_rule(self) -> BreakRule:
        return BreakRule(self.break_after_h, self.break_min, self.break_basis)  # type: ignore[arg-type]


#: a 26 t rear-loader (19 m³ body, ~3.5:1 compaction, 10 t payload) and a 12 t narrow-access lorry, 06:00-14:30,
#: 45 min break after 4.5 h driving (``routing.fleet.DEFAULT_FLEET_CONFIG`` is the same fleet as configuration)
DEFAULT_FLEET = (VehicleSpec("rcv-26t", 4, 65_000, 10_000), VehicleSpec("rcv-12t", 1, 24_000, 4_000))


@dataclass
class PlanParams:
    threshold: float = 0.8
    overflow_at: float = 1.0
    household_policy: str = "calendar"   #: calendar | demand
    household_min_fill: float = 0.5      #: policy demand: lift a household bin on its round day from this fill
    risk_margin: float = 0.1             #: overflow_risk from overflow_at - risk_margin (forecast error)
    street_policy: str = "demand"        #: demand | calendar (street bins on their schedule days: the fixed plan)
    density_kg_per_l: float = 0.09       #: loose residual waste ~90 kg/m³
    service_household_s: int = 35
    service_street_s: int = 60
    unload_min: float = 20.0
    high_street_closed: tuple[float, float] = (9.5, 17.5)   #: no collections on the high street in these hours
    working_days: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    duration_weight: int = 2
    prize: int = 200_000
    time_limit_s: float = 10.0
    seed: int = 1
    timezone: str = "Europe/London"      #: the council's zone: shifts and windows are local wall-clock hours


@dataclass
class Stop:
    asset_id: str
    bin_kind: str
    lat: float
    lon: float
    edge_id: int | None
    street: str
    litres: float
    kg: float
    required: bool
    reasons: list[str]
    predicted_fill: float | None
    tw_h: tuple[float, float] | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["litres"] = round(self.litres, 1)
        d["kg"] = round(self.kg, 1)
        return d


def _on_round(b: BinState, day: Date) -> bool:
    if day.weekday() not in b.round_days:
        return False
    return b.frequency_weeks <= 1 or (day.isocalendar()[1] % 2) == b.week_parity


def next_collection_day(b: BinState, day: Date, params: PlanParams) -> Date:
    """Next opportunity after ``day``: the next round (household) or next working day (street)."""
    for k in range(1, 29):
        d = day + timedelta(days=k)
        if b.bin_kind == "household":
            if _on_round(b, d):
                return d
        elif d.weekday() in params.working_days:
            return d
    return day + timedelta(days=28)


def select_stops(bins: list[BinState], day: Date, params: PlanParams | None = None) -> tuple[list[Stop], dict]:
    """The stops for ``day`` (each with reasons) and counts of why bins were left out."""
    p = params or PlanParams()
    stops: list[Stop] = []
    skipped = {"light": 0, "not_due": 0, "no_data_off_round": 0}
    for b in bins:
        reasons: list[str] = []
        visit_h = b.slot_h if b.slot_h else 9.0
        pred = None
        nxt_pred = None
        if b.fill is not None:
            rate = max(0.0, b.rate_per_day or 0.0)
            pred = b.fill + rate * (b.fill_age_h + visit_h) / 24.0
            nxt = next_collection_day(b, day, p)
            nxt_pred = pred + rate * (nxt - day).days
        for a in b.alerts:
            if a in ("overflow", "missed_collection"):
                reasons.append(f"alert:{a}")
        on_round = (b.bin_kind == "household" or p.street_policy == "calendar") and _on_round(b, day)
        if on_round:
            if p.household_policy == "calendar" or pred is None:
                reasons.append("scheduled")
            elif pred >= p.household_min_fill:
                reasons.append("scheduled")
        if pred is not None and (b.bin_kind == "street" or on_round):
            if pred >= p.threshold:
                reasons.append("fill")
            elif nxt_pred is not None and nxt_pred >= p.overflow_at - p.risk_margin:
                reasons.append("overflow_risk")
        elif pred is not None and p.household_policy == "demand":
            # off its round: an extra lift only when it would overflow by the next working day
            tomorrow = pred + max(0.0, b.rate_per_day or 0.0)
            if tomorrow >= p.overflow_at - p.risk_margin:
                reasons.append("overflow_risk")
        if not reasons:
            skipped["light" if pred is not None else "no_data_off_round"] += 1
            continue
        fill = min(max(pred if pred is not None else 1.0, 0.05), 1.2)
        litres = b.capacity_l * fill
        tw = None
        if b.bin_kind == "street" and b.road_class == "high_street":
            tw = (0.0, p.high_street_closed[0])
        required = any(r in MUST or r == "scheduled" for r in reasons) or "overflow_risk" in reasons
        stops.append(Stop(b.asset_id, b.bin_kind, b.lat, b.lon, b.edge_id, b.street, litres,
                          litres * p.density_kg_per_l, required, reasons,
                          None if pred is None else round(pred, 3), tw))
    return stops, skipped


@dataclass
class Start:
    """Where a lorry starts (re-planning): a point, a time (s after local midnight), the load on board, the
    driving done so far (since its break, if it had it) and whether the break was had."""

    vehicle: str           #: route id (type name + index)
    point: Point
    at_s: int
    load_l: int = 0
    load_kg: int = 0
    reloads_used: int = 0
    driven_s: int = 0
    break_taken: bool = False


@dataclass
class Problem:
    model: object
    stops: list[Stop]
    vehicles: list[tuple[str, VehicleSpec]]   #: one per route id
    points: list[Point]                        #: 0 depot, 1 tipping, then starts, then stops
    n_fixed: int                               #: number of non-stop locations
    dur: np.ndarray
    dist: np.ndarray
    tip_to_depot_s: int
    tip_to_depot_m: int
    clock: DayClock
    starts: dict[str, Start]
    unload_s: int
    service_s: list[int]                       #: per stop
    tw_s: list[tuple[int, int] | None]         #: per stop (elapsed seconds)


def _sites(graph, sites: tuple[Point, Point] | None) -> tuple[Point, Point]:
    if sites is not None:
        return sites
    return (Point(graph.depot.lat, graph.depot.lon, node=graph.depot.node),
            Point(graph.tipping.lat, graph.tipping.lon, node=graph.tipping.node))


def build_model(stops: list[Stop], fleet: tuple[VehicleSpec, ...] | list[VehicleSpec], graph, params: PlanParams,
                starts: list[Start] | None = None, closed_edges: set[int] = frozenset(),
                exclude: set[str] = frozenset(), day: Date | None = None,
                sites: tuple[Point, Point] | None = None) -> Problem:
    """The PyVRP model (see module docstring).  ``starts`` overrides where named lorries begin; ``day`` (with
    ``params.timezone``) fixes the time axis (None: a day without a clock change); ``sites`` = (depot, tip)."""
    from pyvrp import Model

    p = params
    clock = DayClock(day, p.timezone) if day is not None else DayClock(Date(2026, 1, 5), "UTC")
    depot_pt, tip_pt = _sites(graph, sites)
    vehicles = [(f"{v.name}-{i + 1}", v) for v in fleet for i in range(v.count)]
    vehicles = [(rid, v) for rid, v in vehicles if rid not in exclude]
    starts = {s.vehicle: s for s in (starts or [])}
    start_pts = [starts[rid].point for rid, _ in vehicles if rid in starts]
    points = [depot_pt, tip_pt, *start_pts, *[Point(s.lat, s.lon, s.edge_id) for s in stops]]
    M = matrices(graph, points, closed_edges)
    dist, dur = M.distance_m, M.duration_s
    n_fixed = 2 + len(start_pts)
    m = Model()
    locs = [m.add_location(float(pt.lon), float(pt.lat)) for pt in points]
    unload = int(p.unload_min * 60)
    depot = m.add_depot(locs[0], name="depot")
    tip = m.add_depot(locs[1], service_duration=unload, name="tipping")
    start_depots = {}
    k = 2
    for rid, _ in vehicles:
        if rid in starts:
            start_depots[rid] = m.add_depot(locs[k], name=f"start:{rid}")
            k += 1
    tip_home_s, tip_home_m = int(dur[1, 0]), int(dist[1, 0])
    for rid, v in vehicles:
        st = starts.get(rid)
        shift0 = clock.at_local_h(v.shift_start_h)
        early = shift0 if st is None else max(int(st.at_s), shift0)
        brk = 0 if (st is not None and st.break_taken) else int(v.break_min * 60)
        # the last unload at the tip and the drive home are in the shift too (PyVRP ends the route at the tip)
        late = clock.at_local_h(v.shift_end_h) - brk - tip_home_s - unload
        late = max(late, early)
        init = [] if st is None else [int(st.load_l), int(st.load_kg)]
        m.add_vehicle_type(num_available=1, capacity=[int(v.capacity_l), int(v.capacity_kg)],
                           start_depot=start_depots.get(rid, depot), end_depot=tip, fixed_cost=v.fixed_cost,
                           tw_early=early, tw_late=late, start_late=early, shift_duration=late - early,
                           unit_distance_cost=1, unit_duration_cost=p.duration_weight,
                           initial_load=init or [0, 0],
                           reload_depots=[tip], max_reloads=max(0, v.max_reloads - (st.reloads_used if st else 0)),
                           name=rid)
    service, tws = [], []
    for i, s in enumerate(stops):
        svc = p.service_street_s if s.bin_kind == "street" else p.service_household_s
        kw = {}
        tw = None
        if s.tw_h is not None:
            tw = (clock.at_local_h(s.tw_h[0]), clock.at_local_h(s.tw_h[1]))
            kw = {"tw_early": tw[0], "tw_late": tw[1]}
        service.append(svc)
        tws.append(tw)
        m.add_client(locs[n_fixed + i], pickup=[int(math.ceil(s.litres)), int(math.ceil(s.kg))],
                     service_duration=svc, required=s.required, prize=0 if s.required else p.prize,
                     name=s.asset_id, **kw)
    # edges: the matrices go straight into ProblemData (solve_plan); millions of add_edge calls would
    # cost more than the solve
    return Problem(m, stops, vehicles, points, n_fixed, dur, dist, tip_home_s, tip_home_m, clock, starts, unload,
                   service, tws)


def _hhmm(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600:02d}:{(s % 3600) // 60:02d}"


def _route_visits(prob: Problem, r) -> list[Visit]:
    """The solver's route as :class:`~routing.schedule.Visit` s: start, stops and unloads, the final unload
    at the tip, and the drive home to the depot."""
    sched = list(r.schedule())
    out: list[Visit] = []
    for j, a in enumerate(sched):
        if a.is_client():
            ci = a.idx
            tw = prob.tw_s[ci] or (0, 1 << 62)
            out.append(Visit("stop", prob.n_fixed + ci, prob.service_s[ci], ci, int(a.trip), tw, prob.stops[ci].asset_id))
        elif j == 0:
            out.append(Visit("start", int(a.idx), 0, trip=0))
        elif j == len(sched) - 1:
            out.append(Visit("unload", 1, prob.unload_s, trip=int(a.trip)))
            out.append(Visit("end", 0, 0, trip=int(a.trip)))
        else:
            out.append(Visit("unload", 1, prob.unload_s, trip=int(a.trip)))
    return out


def solve_plan(prob: Problem, params: PlanParams) -> dict:
    """Solve and shape the plan: routes with ordered stops, ETAs (local and UTC), trips, unloads and the break."""
    import pyvrp
    from pyvrp.stop import MaxRuntime

    t0 = time.perf_counter()
    data = prob.model.data()
    data = data.replace(distance_matrices=[prob.dist], duration_matrices=[prob.dur])
    res = pyvrp.solve(data, stop=MaxRuntime(params.time_limit_s), seed=params.seed, display=False)
    secs = time.perf_counter() - t0
    sol = res.best
    clock = prob.clock
    routes = []
    served = set()
    violations_total = 0
    for r in sol.routes():
        vt = r.vehicle_type()
        rid, spec = prob.vehicles[vt]
        st = prob.starts.get(rid)
        visits = _route_visits(prob, r)
        shift0 = clock.at_local_h(spec.shift_start_h)
        sched = place_break(visits, prob.dur, int(r.start_time()), spec.break_rule,
                            shift_end_s=clock.at_local_h(spec.shift_end_h),
                            driven0=st.driven_s if st else 0, duty_start_s=shift0,
                            taken=bool(st and st.break_taken))
        events = []
        stop_no = 0
        for i, v in enumerate(visits):
            t = sched.starts[i]
            if v.kind == "stop":
                s = prob.stops[v.ref]
                served.add(s.asset_id)
                stop_no += 1
                events.append({"type": "stop", "seq": stop_no, "trip": v.trip + 1, "eta": clock.hhmm(t),
                               "eta_s": int(t), "eta_utc": clock.utc_iso(t), "drive_s": sched.drive_s[i],
                               **s.to_dict()})
            elif v.kind == "unload":
                events.append({"type": "unload", "trip": v.trip + 1, "eta": clock.hhmm(t), "eta_s": int(t),
                               "eta_utc": clock.utc_iso(t), "site": "tipping"})
            if sched.break_after == i:
                b = sched.break_start_s
                events.append({"type": "break", "eta": clock.hhmm(b), "eta_s": int(b), "eta_utc": clock.utc_iso(b),
                               "minutes": spec.break_min, "drive_s": sched.break_drive_s,
                               "rule": f"{spec.break_min:g} min after {spec.break_after_h:g} h {spec.break_basis}"})
        viol = []
        for x in sched.violations:
            y = {k: x[k] for k in ("type", "name", "reason", "late_s") if k in x}
            for k in ("start_s", "latest_s", "end_s", "shift_end_s"):
                if k in x:
                    y[k.removesuffix("_s")] = clock.hhmm(x[k])
            viol.append(y)
        violations_total += len(viol)
        start, end = sched.starts[0], sched.end_s
        loads = [sum(e["litres"] for e in events if e["type"] == "stop" and e["trip"] == t)
                 for t in range(1, r.num_trips() + 1)]
        p0 = prob.points[visits[0].loc]
        carry = {"load_l": st.load_l, "load_kg": st.load_kg, "reloads": st.reloads_used,
                 "break_taken": st.break_taken} if st else {}
        routes.append({"route_id": rid, "vehicle_type": spec.name, "stops": stop_no, "trips": int(r.num_trips()),
                       "from": [p0.lat, p0.lon], "carry": carry,
                       "km": round((r.distance() + prob.tip_to_depot_m) / 1000, 2),
                       "start": clock.hhmm(start), "end": clock.hhmm(end), "start_utc": clock.utc_iso(start),
                       "end_utc": clock.utc_iso(end), "start_s": int(start), "end_s": int(end),
                       "shift": [clock.hhmm(shift0), clock.hhmm(clock.at_local_h(spec.shift_end_h))],
                       "hours": round((end - start) / 3600, 2),
                       "trip_litres": [round(x) for x in loads],
                       "capacity_l": spec.capacity_l, "capacity_kg": spec.capacity_kg,
                       "feasible": bool(r.is_feasible()) and not viol, "violations": viol, "events": events})
    unserved = [s.to_dict() for s in prob.stops if s.asset_id not in served]
    return {"feasible": bool(sol.is_feasible()) and not violations_total, "solve_s": round(secs, 2),
            "cost": int(res.cost()) if sol.is_feasible() else None, "routes": routes, "unserved": unserved,
            "timezone": clock.tz, "day_start_utc": clock.utc_iso(0),
            "sites": {"depot": [prob.points[0].lat, prob.points[0].lon, prob.points[0].node],
                      "tip": [prob.points[1].lat, prob.points[1].lon, prob.points[1].node]},
            "totals": {"stops": len(served), "km": round(sum(r["km"] for r in routes), 2),
                       "lorry_hours": round(sum(r["hours"] for r in routes), 2), "lorries": len(routes),
                       "trips": sum(r["trips"] for r in routes), "violations": violations_total}}


def plan_day(bins: list[BinState], day: Date, graph, fleet=DEFAULT_FLEET, params: PlanParams | None = None,
             closed_edges: set[int] = frozenset(), sites: tuple[Point, Point] | None = None) -> dict:
    """Select, model, solve; returns the plan dict (with its parameters and timings)."""
    p = params or PlanParams()
    t0 = time.perf_counter()
    stops, skipped = select_stops(bins, day, p)
    t1 = time.perf_counter()
    prob = build_model(stops, fleet, graph, p, closed_edges=closed_edges, day=day, sites=sites)
    t2 = time.perf_counter()
    out = solve_plan(prob, p)
    out.update({"date": day.isoformat(), "params": asdict(p), "fleet": [asdict(v) for v in fleet],
                "selected": len(stops), "skipped": skipped, "closed_edges": sorted(closed_edges),
                "timings_s": {"select": round(t1 - t0, 2), "model": round(t2 - t1, 2), "solve": out["solve_s"],
                              "total": round(time.perf_counter() - t0, 2)}})
    return out


def _plan_sites(plan: dict, graph) -> tuple[Point, Point] | None:
    s = plan.get("sites")
    if not s:
        return None
    return Point(s["depot"][0], s["depot"][1], node=s["depot"][2]), Point(s["tip"][0], s["tip"][1], node=s["tip"][2])


def replan(plan: dict, graph, *, now_s: int, completed: set[str] = frozenset(), blocked_edges: set[int] = frozenset(),
           broken: set[str] = frozenset(), params: PlanParams | None = None) -> dict:
    """Re-solve what is left of ``plan`` at ``now_s`` (seconds elapsed since the plan day's local midnight,
    :meth:`routing.clock.DayClock.seconds`).

    Completed stops stay done and are kept in the new plan's ``done`` list; bins on
    ``blocked_edges`` leave the plan as ``blocked``; ``broken`` route ids get no more
    work (their remaining stops go to the others); every other lorry restarts from
    its last completed stop (or the depot) at ``now_s`` (not before its shift) with what it has on
    board, the driving it has done since its break, and whether it had the break (its break
    in the plan started before ``now_s``).
    """
    p = params or PlanParams(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in plan["params"].items()})
    fleet = [VehicleSpec(**v) for v in plan["fleet"]]
    day = Date.fromisoformat(str(plan["date"])) if plan.get("date") else None
    clock = DayClock(day, p.timezone) if day is not None else DayClock(Date(2026, 1, 5), "UTC")
    sites = _plan_sites(plan, graph)
    depot_pt = sites[0] if sites else Point(graph.depot.lat, graph.depot.lon, node=graph.depot.node)
    specs = {f"{v.name}-{i + 1}": v for v in fleet for i in range(v.count)}
    stops: list[Stop] = []
    blocked: list[dict] = []
    done: list[dict] = []
    starts: list[Start] = []
    earlier = {}          # stops done before ``plan`` was made (a re-plan of a re-plan): where each lorry got to
    for d in plan.get("done", []):
        earlier[d["route_id"]] = d
    for r in plan["routes"]:
        carry = r.get("carry") or {}
        last = earlier.get(r["route_id"])
        load_l, load_kg = float(carry.get("load_l", 0)), float(carry.get("load_kg", 0))
        reloads = int(carry.get("reloads", 0))
        unload_seen = False
        brk = None
        for e in r["events"]:
            if e["type"] == "unload":
                unload_seen = True
            if e["type"] == "break":
                brk = e
            if e["type"] != "stop":
                continue
            if e["asset_id"] in completed:
                if unload_seen and last is not None:     # a later stop was done: that unload happened
                    load_l = load_kg = 0.0
                    reloads += 1
                unload_seen = False
                e = dict(e, _done=True)
                done.append({"route_id": r["route_id"], **{k: v for k, v in e.items() if k != "_done"}})
                last = e
                load_l += e["litres"]; load_kg += e["kg"]
                continue
            s = Stop(e["asset_id"], e["bin_kind"], e["lat"], e["lon"], e["edge_id"], e["street"], e["litres"],
                     e["kg"], e["required"], list(e["reasons"]), e["predicted_fill"],
                     tuple(e["tw_h"]) if e.get("tw_h") else None)
            if s.edge_id is not None and s.edge_id in blocked_edges:
                blocked.append({**s.to_dict(), "status": "blocked"})
                continue
            stops.append(s)
        if r["route_id"] not in broken:
            pt = (Point(last["lat"], last["lon"], last["edge_id"]) if last is not None else depot_pt)
            taken_now = brk is not None and brk.get("eta_s") is not None and int(brk["eta_s"]) < int(now_s)
            taken = taken_now or bool(carry.get("break_taken"))
            driven = int(last.get("drive_s", 0)) if last is not None else 0
            if taken_now:
                driven = max(0, driven - int(brk.get("drive_s", 0)))
            spec = specs.get(r["route_id"])
            at = max(int(now_s), clock.at_local_h(spec.shift_start_h)) if spec else int(now_s)
            starts.append(Start(r["route_id"], pt, at, int(load_l), int(load_kg), reloads, driven, taken))
    for s in plan.get("unserved", []):
        if s["asset_id"] not in completed:
            stops.append(Stop(**{k: s[k] for k in Stop.__dataclass_fields__ if k in s}))
    # unused lorries start from the depot at now; broken ones are excluded
    used = {s.vehicle for s in starts}
    for rid, v in specs.items():
        if rid not in used and rid not in broken:
            starts.append(Start(rid, depot_pt, max(int(now_s), clock.at_local_h(v.shift_start_h))))
    closed = set(plan.get("closed_edges", [])) | set(blocked_edges)
    prob = build_model(stops, fleet, graph, p, starts=starts, closed_edges=closed, exclude=set(broken), day=day,
                       sites=sites)
    out = solve_plan(prob, p)
    out.update({"date": plan.get("date"), "params": asdict(p), "fleet": [asdict(v) for v in fleet],
                "selected": len(stops), "closed_edges": sorted(closed), "done": done, "blocked": blocked,
                "broken": sorted(broken), "replanned_at": clock.hhmm(now_s), "replanned_at_utc": clock.utc_iso(now_s)})
    return out
