"""The HTTP API (FastAPI), built by :func:`create_app`.

Routes are thin: they validate input with pydantic models, run the named
statement from :mod:`api.queries` through a psycopg pool, and shape the rows.
"""


from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Query, Response, status
from pydantic import BaseModel, Field

from api import alerts as alerts_api, audit, consents as consents_api, opendata, queries as q, routes, sta
from api.auth import EVERYONE, Principal, check_declared, connection, install, make_pool, require
from streetsense import __version__

ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
Kind = Literal["bin_fill", "air", "noise", "road"]
Board = Literal["esp32", "esp32s3", "picow", "pico2w"]
Status = Literal["provisioned", "active", "retired", "revoked"]


class DeviceIn(BaseModel):
    tenant: str = Field(pattern=ID_PATTERN)
    device_id: str = Field(pattern=ID_PATTERN)
    kind: Kind
    board: Board = "esp32"
    firmware: str | None = Field(default=None, max_length=32)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    asset_id: str | None = Field(default=None, max_length=64)
    status: Status = "provisioned"


class DevicePatch(BaseModel):
    board: Board | None = None
    firmware: str | None = Field(default=None, max_length=32)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    asset_id: str | None = Field(default=None, max_length=64)
    status: Status | None = None


class Device(DeviceIn):
    state: str | None = None
    next_wake: datetime | None = None
    last_seen: datetime | None = None
    last_seq: int | None = None
    created_at: datetime
    updated_at: datetime


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    storage: str | None
    database_time: datetime


class Point(BaseModel):
    time: datetime
    value: float


class Bucket(BaseModel):
    bucket: datetime
    n: int
    avg: float
    min: float
    max: float


class Readings(BaseModel):
    tenant: str
    device_id: str
    metric: str
    unit: str
    bucket: str
    start: datetime
    end: datetime
    points: list[Point] | None = None
    buckets: list[Bucket] | None = None


def create_app(database_url: str, *, pool_size: int = 4) -> FastAPI:
    """Build the app around a connection pool to ``database_url`` (a migrated database).

    Every route needs a token for its role (:mod:`api.auth`); without one the
    caller is the anonymous public (open data and health only).  Queries run as
    ``streetsense_api`` under row-level security.  ``pool_size=1`` suits servers
    that take one connection at a time.
    """
    pool = make_pool(database_url, max_size=pool_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool.open(wait=True, timeout=30)
        try:
            yield
        finally:
            pool.close()

    app = FastAPI(title="StreetSense API", version=__version__, lifespan=lifespan,
                  description="Devices and readings of a StreetSense deployment.")
    install(app, pool)

    Conn = Annotated[psycopg.Connection, Depends(connection)]
    Anyone = Annotated[Principal, Depends(require(*EVERYONE))]
    Reader = Annotated[Principal, Depends(require("admin", "operations", "field_engineer", "integration"))]
    Writer = Annotated[Principal, Depends(require("admin", "field_engineer"))]

    @app.get("/health", response_model=Health, tags=["system"])
    def health(c: Conn, _: Anyone) -> Health:
        row = c.execute(q.HEALTH).fetchone()
        return Health(status="ok", version=__version__, storage=row["variant"], database_time=row["now"])

    @app.get("/devices", response_model=list[Device], tags=["devices"])
    def list_devices(c: Conn, _: Reader, tenant: Annotated[str, Query(pattern=ID_PATTERN)],
                     kind: Kind | None = None, status_: Annotated[Status | None, Query(alias="status")] = None,
                     limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
                     offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0) -> list[dict]:
        return c.execute(q.LIST_DEVICES, {"tenant": tenant, "kind": kind, "status": status_,
                                          "limit": limit, "offset": offset}).fetchall()

    @app.post("/devices", response_model=Device, status_code=status.HTTP_201_CREATED, tags=["devices"])
    def create_device(c: Conn, _: Writer, body: DeviceIn) -> dict:
        if c.execute(q.TENANT_EXISTS, {"tenant": body.tenant}).fetchone() is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown tenant {body.tenant!r}")
        try:
            return c.execute(q.INSERT_DEVICE, body.model_dump()).fetchone()
        except psycopg.errors.UniqueViolation:
            raise HTTPException(status.HTTP_409_CONFLICT, f"device {body.device_id!r} already exists") from None
        except psycopg.errors.ForeignKeyViolation:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"unknown asset {body.asset_id!r}") from None

    @app.get("/devices/{tenant}/{device_id}", response_model=Device, tags=["devices"])
    def get_device(c: Conn, _: Reader, tenant: str, device_id: str) -> dict:
        row = c.execute(q.GET_DEVICE, {"tenant": tenant, "device_id": device_id}).fetchone()
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such device")
        return row

    @app.patch("/devices/{tenant}/{device_id}", response_model=Device, tags=["devices"])
    def patch_device(c: Conn, _: Writer, tenant: str, device_id: str, body: DevicePatch) -> dict:
        try:
            row = c.execute(q.UPDATE_DEVICE, {"tenant": tenant, "device_id": device_id, **body.model_dump()}).fetchone()
        except psycopg.errors.ForeignKeyViolation:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"unknown asset {body.asset_id!r}") from None
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such device")
        return row

    @app.delete("/devices/{tenant}/{device_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["devices"])
    def retire_device(c: Conn, _: Writer, tenant: str, device_id: str) -> Response:
        """Retire (never erase: its readings stay attributable). Ingest refuses it from then on."""
        row = c.execute(q.UPDATE_DEVICE, {"tenant": tenant, "device_id": device_id, "board": None, "firmware": None,
                                          "lat": None, "lon": None, "asset_id": None, "status": "retired"}).fetchone()
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such device")
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @app.get("/readings", response_model=Readings, response_model_exclude_none=True, tags=["readings"])
    def readings(c: Conn, p: Reader, tenant: Annotated[str, Query(pattern=ID_PATTERN)],
                 device: Annotated[str, Query(pattern=ID_PATTERN)], metric: Annotated[str, Query(max_length=32)],
                 start: datetime | None = None, end: datetime | None = None,
                 bucket: Annotated[str, Query(description="raw, 1h, 1d, or a width such as 15m")] = "raw",
                 limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000) -> Readings:
        try:
            name, width = q.parse_bucket(bucket)
        except ValueError as e:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(e)) from None
        end = _aware(end) or datetime.now(timezone.utc)
        start = _aware(start) or end - timedelta(days=1)
        if start >= end:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "start must be before end")
        dev = c.execute(q.DEVICE_PK, {"tenant": tenant, "device_id": device}).fetchone()
        if dev is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such device")
        met = c.execute(q.METRIC_ID, {"metric": metric}).fetchone()
        if met is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown metric {metric!r}")
        audit.readings_view(c, p, tenant, dev["id"], f"readings:{metric}")     # a household's bin: personal data
        rows = c.execute(getattr(q, name), {"pk": dev["id"], "metric_id": met["id"], "start": start, "end": end,
                                            "limit": limit, "width": width}).fetchall()
        out = Readings(tenant=tenant, device_id=device, metric=metric, unit=met["unit"], bucket=bucket,
                       start=start, end=end)
        if name == "RAW":
            out.points = [Point(**r) for r in rows]
        else:
            out.buckets = [Bucket(**r) for r in rows]
        return out

    app.include_router(alerts_api.router(pool))
    app.include_router(consents_api.router(pool))
    app.include_router(sta.router(pool))
    app.include_router(opendata.router(pool))
    app.include_router(routes.router(pool))
    check_declared(app)
    _document_text_422(app)
    return app


def _document_text_422(app: FastAPI) -> None:
    """Routes answer 422 with a text ``detail`` for input that is well-formed but
    wrong (``start`` after ``end``, an unknown bucket width); FastAPI's own 422s carry
    a list. Say so in the spec, so clients (and schemathesis) expect both."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            spec = build()
            err = spec.get("components", {}).get("schemas", {}).get("HTTPValidationError")
            if err is not None:
                err["properties"]["detail"] = {"anyOf": [err["properties"]["detail"], {"type": "string"}],
                                               "title": "Detail"}
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _aware(t: datetime | None) -> datetime | None:
    if t is not None and t.tzinfo is None:
        return t.replace(tzinfo=timezone.utc)
    return t
