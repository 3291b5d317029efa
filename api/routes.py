"""Collection planning routes (``routing/``): make and read plans, re-plan during the
day, the crew app per route (HTML, GPX, GeoJSON) and crew reports.

A ``blocked`` report closes its street segment and re-plans the rest of the day at
once; the crew page redirects to the newest plan (and reloads itself after a report
that triggered a re-plan).  "collected" reports are ground truth
for collection detection, "not_out" feeds the not-put-out alert: both are stored in
``crew_reports`` for those stages to read.
"""

from datetime import date as Date, datetime
from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Path, Response, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, Field

from api import audit
from api.auth import Principal, connection, require, token_loader_page
from routing import crew, store
from routing.fleet import FleetError, validate_fleet
from routing.plan import PlanParams
from routing.service import make_plan, replan_stored, tenant_graph

ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
FLEET_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"
ReportStatus = Literal["collected", "not_out", "blocked", "contaminated", "damaged"]


class PlanIn(BaseModel):
    tenant: str = Field(pattern=ID_PATTERN)
    date: Date
    time_limit_s: float = Field(default=20.0, gt=0, le=300)
    threshold: float = Field(default=0.8, gt=0, le=1.5)
    fleet: str | None = Field(default=None, pattern=FLEET_NAME,
                              description="a stored fleet configuration (PUT /routes/fleets/{tenant}/{name}); "
                                          "default: the tenant's 'default', else the demo fleet")


class ReplanIn(BaseModel):
    now: datetime | None = Field(default=None, description="default: now; without an offset it is the council's "
                                                          "local time")
    blocked_edges: list[int] = []
    broken: list[str] = Field(default=[], description="route ids of lorries out of service")
    time_limit_s: float = Field(default=10.0, gt=0, le=300)


class ReportIn(BaseModel):
    client_id: str = Field(min_length=1, max_length=64)
    asset_id: str = Field(min_length=1, max_length=64)
    status: ReportStatus
    reported_at: datetime
    note: str = Field(default="", max_length=500)
    edge_id: int | None = None


def router(pool: ConnectionPool, graph=None, replan_time_limit_s: float = 5.0) -> APIRouter:
    r = APIRouter()

    Conn = Annotated[psycopg.Connection, Depends(connection)]
    Reader = Annotated[Principal, Depends(require("admin", "operations", "crew", "integration"))]
    Writer = Annotated[Principal, Depends(require("admin", "operations"))]
    Crew = Annotated[Principal, Depends(require("admin", "operations", "crew"))]
    # the page: a browser without a token gets (with the 401) a loader that takes it from the URL fragment
    CrewPage = Annotated[Principal, Depends(require("admin", "operations", "crew", page=token_loader_page))]

    def g(tenant: str):
        return graph if graph is not None else tenant_graph(tenant)

    def plan_row(c, plan_id: int) -> dict:
        row = store.get_plan(c, plan_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such plan")
        return row

    def summary(pid: int, plan: dict) -> dict:
        return {"plan_id": pid, "date": str(plan.get("date")), "timezone": plan.get("timezone"),
                "feasible": plan["feasible"], "totals": plan["totals"],
                "unserved": len(plan.get("unserved", [])),
                "routes": [{k: x[k] for k in ("route_id", "vehicle_type", "stops", "trips", "km", "start", "end",
                                               "hours")} | {"crew_url": f"/crew/{pid}/{x['route_id']}"}
                           for x in plan["routes"]]}

    @r.post("/routes/plans", status_code=status.HTTP_201_CREATED, tags=["routes"])
    def create_plan(c: Conn, _: Writer, body: PlanIn) -> dict:
        if c.execute("SELECT 1 FROM tenants WHERE id = %s", (body.tenant,)).fetchone() is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown tenant {body.tenant!r}")
        try:
            pid, plan = make_plan(c, body.tenant, body.date, g(body.tenant),
                                  PlanParams(time_limit_s=body.time_limit_s, threshold=body.threshold),
                                  fleet=body.fleet)
        except FleetError as e:
            raise HTTPException(422, str(e)) from None
        return summary(pid, plan)

    @r.put("/routes/fleets/{tenant}/{name}", tags=["routes"])
    def put_fleet(c: Conn, _: Writer, tenant: Annotated[str, Path(pattern=ID_PATTERN)],
                  name: Annotated[str, Path(pattern=FLEET_NAME)], body: dict) -> dict:
        """Store a fleet configuration (``routing/fleet.py``); every invalid field is named in the 422."""
        if c.execute("SELECT 1 FROM tenants WHERE id = %s", (tenant,)).fetchone() is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown tenant {tenant!r}")
        try:
            cfg = validate_fleet(body, "request body")
        except FleetError as e:
            raise HTTPException(422, str(e)) from None
        store.save_fleet(c, tenant, name, cfg)
        return {"tenant": tenant, "name": name, "config": cfg.dump()}

    @r.get("/routes/fleets/{tenant}/{name}", tags=["routes"])
    def get_fleet(c: Conn, _: Reader, tenant: Annotated[str, Path(pattern=ID_PATTERN)],
                  name: Annotated[str, Path(pattern=FLEET_NAME)]) -> dict:
        cfg = store.get_fleet(c, tenant, name)
        if cfg is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such fleet configuration")
        return {"tenant": tenant, "name": name, "config": cfg.dump()}

    @r.get("/routes/plans/{plan_id}", tags=["routes"])
    def read_plan(c: Conn, p: Reader, plan_id: int) -> dict:
        row = plan_row(c, plan_id)
        audit.route_view(c, p, row["tenant"], plan_id, row["plan"], None, "plan")
        return {"plan_id": row["id"], "tenant": row["tenant"], "status": row["status"], "parent_id": row["parent_id"],
                "reason": row["reason"], "latest_id": store.latest_plan(c, plan_id), "plan": row["plan"]}

    @r.post("/routes/plans/{plan_id}/replan", status_code=status.HTTP_201_CREATED, tags=["routes"])
    def replan(c: Conn, _: Writer, plan_id: int, body: ReplanIn) -> dict:
        row = plan_row(c, plan_id)
        reason = "breakdown" if body.broken else ("blocked_street" if body.blocked_edges else "manual")
        parent = store.latest_plan(c, plan_id)
        try:
            nid, plan = replan_stored(c, plan_id, now=body.now, blocked_edges=set(body.blocked_edges),
                                      broken=set(body.broken), graph=g(row["tenant"]), reason=reason,
                                      time_limit_s=body.time_limit_s)
        except ValueError as e:          # "now" is not on the plan's day
            raise HTTPException(422, str(e)) from None
        return summary(nid, plan) | {"parent_id": parent,
                                     "done": len(plan.get("done", [])), "blocked": len(plan.get("blocked", []))}

    def route_or_404(c, plan_id: int, route_id: str) -> tuple[dict, dict]:
        row = plan_row(c, plan_id)
        rt = crew.route_of(row["plan"], route_id)
        if rt is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such route in this plan")
        return row, rt

    @r.get("/crew/{plan_id}/{route_id}.gpx", tags=["crew"])
    def gpx(c: Conn, p: Crew, plan_id: int, route_id: str) -> Response:
        row, rt = route_or_404(c, plan_id, route_id)
        audit.route_view(c, p, row["tenant"], plan_id, row["plan"], route_id, "gpx")
        return Response(crew.route_gpx(g(row["tenant"]), plan_id, rt), media_type="application/gpx+xml",
                        headers={"Content-Disposition": f'attachment; filename="{route_id}-{plan_id}.gpx"'})

    @r.get("/crew/{plan_id}/{route_id}.geojson", tags=["crew"])
    def geojson(c: Conn, p: Crew, plan_id: int, route_id: str) -> JSONResponse:
        row, rt = route_or_404(c, plan_id, route_id)
        audit.route_view(c, p, row["tenant"], plan_id, row["plan"], route_id, "geojson")
        return JSONResponse(crew.route_geojson(g(row["tenant"]), plan_id, rt), media_type="application/geo+json")

    @r.get("/crew/{plan_id}/{route_id}", response_class=HTMLResponse, tags=["crew"])
    def crew_page(c: Conn, p: CrewPage, plan_id: int, route_id: str) -> Response:
        # open it as /crew/<plan>/<route>#token=<crew token>: the fragment never reaches the server
        latest = store.latest_plan(c, plan_id)
        if latest != plan_id and crew.route_of(plan_row(c, latest)["plan"], route_id) is not None:
            return RedirectResponse(f"/crew/{latest}/{route_id}", status_code=status.HTTP_307_TEMPORARY_REDIRECT)
        row, rt = route_or_404(c, plan_id, route_id)
        audit.route_view(c, p, row["tenant"], plan_id, row["plan"], route_id, "crew_page")
        base = f"/crew/{plan_id}/{route_id}"
        return HTMLResponse(crew.crew_page(g(row["tenant"]), plan_id, rt, base + "/reports", base),
                            headers={"Cache-Control": "no-store"})

    @r.post("/crew/{plan_id}/{route_id}/reports", tags=["crew"])
    def report(c: Conn, _: Crew, plan_id: int, route_id: str, body: ReportIn, response: Response) -> dict:
        row, rt = route_or_404(c, plan_id, route_id)
        rep, created = store.add_report(c, plan_id, row["tenant"], route_id, body.asset_id, body.status,
                                        body.client_id, body.reported_at, body.note, body.edge_id)
        response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        out = {"report": rep, "created": created}
        if created and body.status == "blocked" and body.edge_id is not None:
            # the rest of the day from when the crew found the street blocked (their phone's time)
            nid, _plan = replan_stored(c, plan_id, now=body.reported_at, blocked_edges={body.edge_id},
                                       graph=g(row["tenant"]), reason="blocked_street",
                                       time_limit_s=replan_time_limit_s)
            store.supersede(c, rep["id"], nid)
            out["replan_id"] = nid
        return out

    return r
