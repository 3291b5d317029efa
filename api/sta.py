"""Public, read-only OGC SensorThings API v1.1 (a subset) for non-personal data.

Mounted by the lead with ``app.include_router(sta.router(pool))`` under
``/sta/v1.1``.  Open to every role, anonymous callers included (declared
router-wide): only public data is reachable here.

* Things / Locations: air-quality and noise sites, and **street** litter bins.
  Household bins are excluded by the one predicate every statement shares
  (:data:`PUBLIC`), whatever the query asks.
* Datastreams: one per (Thing, public metric).  Observations: the hourly means
  of the rollup ``readings_hourly`` (phenomenonTime = the hour as an interval).
* Query options: ``$top`` (default 100, max 1000), ``$skip``, ``$orderby``
  (``@iot.id``/``name``/``phenomenonTime``/``result`` [asc|desc]), ``$filter``
  with ``eq ne gt ge lt le`` joined by ``and`` on the properties listed in
  :data:`FILTERABLE`; ``@iot.id``, ``@iot.selfLink``, ``@iot.nextLink``,
  ``@iot.count`` (with ``$count=true``).
* Ids are strings: Thing/Location ``<tenant>.<device>``, Datastream
  ``<tenant>.<device>.<metric>``, Observation ``<datastream>.<epoch s>``.
Road defects are published by :mod:`api.opendata` (GeoJSON/CSV), not here.
"""


import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from api.auth import EVERYONE, connection, require
from contract import v1

PREFIX = "/sta/v1.1"
PUBLIC_METRICS = {"air": ("pm1", "pm25", "pm10", "rh", "co2", "temp"), "noise": ("laeq", "lamax", "l10", "l90"),
                  "bin_fill": ("fill",)}
PUBLIC_METRIC_IDS = sorted(v1.metric(m)[0] for ms in PUBLIC_METRICS.values() for m in ms)
# the one place that decides what is public: never a household bin, never a vehicle
PUBLIC = ("d.status = 'active' AND (d.kind IN ('air', 'noise') OR (d.kind = 'bin_fill' AND a.bin_kind = 'street'))"
          " AND d.lat IS NOT NULL")
DEV = "devices d LEFT JOIN assets a ON a.tenant = d.tenant AND a.asset_id = d.asset_id"
KIND_METRIC = " OR ".join(f"(d.kind = '{k}' AND m.name IN ({', '.join(repr(x) for x in ms)}))"
                          for k, ms in PUBLIC_METRICS.items()).replace('"', "'")
UNITS = {"ug/m3": ("microgram per cubic metre", "ug/m3", "http://qudt.org/vocab/unit/MicroGM-PER-M3"),
         "dB": ("decibel (A-weighted)", "dB(A)", "http://qudt.org/vocab/unit/DeciB_A"),
         "/": ("fraction of capacity", "1", "http://qudt.org/vocab/unit/FRACTION"),
         "%RH": ("percent relative humidity", "%", "http://qudt.org/vocab/unit/PERCENT_RH"),
         "ppm": ("parts per million", "ppm", "http://qudt.org/vocab/unit/PPM"),
         "Cel": ("degree Celsius", "degC", "http://qudt.org/vocab/unit/DEG_C")}

ENTITY_SQL = {
    "Things": (f"""SELECT d.tenant || '.' || d.device_id AS id, d.device_id AS name, d.kind, a.ward, a.bin_kind,
                          d.tenant, d.device_id, d.lat, d.lon
                   FROM {DEV} WHERE {PUBLIC}""", {"@iot.id": "id", "name": "name", "properties/kind": "kind",
                                                  "properties/ward": "ward", "properties/tenant": "tenant"}),
    "Datastreams": (f"""SELECT d.tenant || '.' || d.device_id || '.' || m.name AS id,
                               d.device_id || ' ' || m.name AS name, m.name AS metric, m.unit, d.kind,
                               d.tenant || '.' || d.device_id AS thing_id, m.id AS metric_id, d.id AS pk
                        FROM {DEV} JOIN metrics m ON ({KIND_METRIC}) WHERE {PUBLIC}""",
                    {"@iot.id": "id", "name": "name", "ObservedProperty/name": "metric",
                     "Thing/@iot.id": "thing_id", "properties/kind": "kind"}),
}
FILTERABLE = {e: cols for e, (_, cols) in ENTITY_SQL.items()}
FILTERABLE["Locations"] = FILTERABLE["Things"]
FILTERABLE["Observations"] = {"phenomenonTime": "bucket", "result": "result", "@iot.id": "id",
                              "Datastream/@iot.id": "ds_id"}
_OPS = {"eq": "=", "ne": "<>", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_TERM = re.compile(r"\s*([A-Za-z@/._]+)\s+(eq|ne|gt|ge|lt|le)\s+('(?:[^']|'')*'|[-+0-9.eE]+|"
                   r"\d{4}-\d\d-\d\dT[0-9:.]+(?:Z|[+-]\d\d:\d\d))\s*")


def parse_filter(text: str, allowed: dict[str, str]) -> tuple[str, list[Any]]:
    """``$filter`` -> (SQL condition, parameters). Raises ValueError on anything else."""
    parts = re.split(r"\s+and\s+", text.strip())
    sql, params = [], []
    for p in parts:
        m = _TERM.fullmatch(p)
        if not m:
            raise ValueError(f"unsupported $filter term {p!r}: use <property> eq|ne|gt|ge|lt|le <literal> [and ...]")
        prop, op, lit = m.groups()
        if prop not in allowed:
            raise ValueError(f"cannot filter on {prop!r}; allowed: {', '.join(sorted(allowed))}")
        if lit.startswith("'"):
            value: Any = lit[1:-1].replace("''", "'")
        elif "T" in lit and "-" in lit[1:]:
            value = datetime.fromisoformat(lit.replace("Z", "+00:00"))
        else:
            value = float(lit)
        sql.append(f"{allowed[prop]} {_OPS[op]} %s")
        params.append(value)
    return " AND ".join(sql), params


# Ids are built from parts that cannot hold a dot (tenant and device ids, metric names), so an id splits
# back into them; statements filter on those real, indexed columns as well as on the computed id.
DEVICE_PK = "(SELECT dd.id FROM devices dd WHERE dd.tenant = %s AND dd.device_id = %s)"


def id_parts(ident: str, n: int) -> list[str] | None:
    """The ``n`` dot-separated parts of an id, or None when it has another shape (it then names nothing).

    >>> id_parts("leeds.air-001.pm25", 3), id_parts("leeds.air-001", 3)
    (['leeds', 'air-001', 'pm25'], None)
    """
    parts = ident.split(".")
    return parts if len(parts) == n and all(parts) else None


def parse_orderby(text: str | None, allowed: dict[str, str], default: str) -> str:
    if not text:
        return default
    out = []
    for item in text.split(","):
        bits = item.split()
        if not bits or bits[0] not in allowed or len(bits) > 2 or (len(bits) == 2 and bits[1] not in ("asc", "desc")):
            raise ValueError(f"unsupported $orderby {item!r}")
        out.append(f"{allowed[bits[0]]} {bits[1] if len(bits) == 2 else 'asc'}")
    return ", ".join(out + [default])


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def router(pool: ConnectionPool) -> APIRouter:
    r = APIRouter(prefix=PREFIX, tags=["open data: SensorThings"], dependencies=[Depends(require(*EVERYONE))])

    def conn(c: psycopg.Connection = Depends(connection)) -> Iterator[psycopg.Connection]:
        c.row_factory = dict_row
        yield c

    Conn = Annotated[psycopg.Connection, Depends(conn)]
    Top = Annotated[int, Query(alias="$top", ge=0, le=1000)]
    Skip = Annotated[int, Query(alias="$skip", ge=0)]
    Filter = Annotated[str | None, Query(alias="$filter", max_length=2000)]
    OrderBy = Annotated[str | None, Query(alias="$orderby", max_length=200)]
    Count = Annotated[bool, Query(alias="$count")]

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/") + PREFIX

    def page(request: Request, c, sql: str, params: list, entity: str, filt: str | None, orderby: str | None,
             default_order: str, top: int, skip: int, count: bool, shape) -> dict:
        allowed = FILTERABLE[entity]
        try:
            where, fparams = parse_filter(filt, allowed) if filt else ("true", [])
            order = parse_orderby(orderby, allowed, default_order)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        q = f"SELECT * FROM ({sql}) s WHERE {where}"
        rows = c.execute(f"{q} ORDER BY {order} LIMIT %s OFFSET %s", [*params, *fparams, top + 1, skip]).fetchall()
        out: dict[str, Any] = {}
        if count:
            out["@iot.count"] = c.execute(f"SELECT count(*) AS n FROM ({q}) x", [*params, *fparams]).fetchone()["n"]
        out["value"] = [shape(row) for row in rows[:top]]
        if len(rows) > top:
            qp = dict(request.query_params)
            qp["$skip"], qp["$top"] = str(skip + top), str(top)
            out["@iot.nextLink"] = str(request.url.replace_query_params(**qp))
        return out

    def thing(b: str, row: dict) -> dict:
        tid = row["id"]
        return {"@iot.id": tid, "@iot.selfLink": f"{b}/Things('{tid}')", "name": row["name"],
                "description": {"air": "Air quality sensor", "noise": "Noise sensor",
                                "bin_fill": "Street litter bin fill sensor"}[row["kind"]],
                "properties": {"kind": row["kind"], "ward": row["ward"], "tenant": row["tenant"]},
                "Locations@iot.navigationLink": f"{b}/Things('{tid}')/Locations",
                "Datastreams@iot.navigationLink": f"{b}/Things('{tid}')/Datastreams"}

    def location(b: str, row: dict) -> dict:
        tid = row["id"]
        return {"@iot.id": tid, "@iot.selfLink": f"{b}/Locations('{tid}')", "name": row["name"],
                "description": f"Position of {row['name']}", "encodingType": "application/geo+json",
                "location": {"type": "Point", "coordinates": [round(row["lon"], 6), round(row["lat"], 6)]},
                "Things@iot.navigationLink": f"{b}/Locations('{tid}')/Things"}

    def datastream(b: str, row: dict) -> dict:
        did = row["id"]
        name, symbol, definition = UNITS.get(row["unit"], (row["unit"], row["unit"], ""))
        return {"@iot.id": did, "@iot.selfLink": f"{b}/Datastreams('{did}')", "name": row["name"],
                "description": f"Hourly mean {row['metric']} of {row['thing_id']}",
                "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
                "unitOfMeasurement": {"name": name, "symbol": symbol, "definition": definition},
                "ObservedProperty": {"name": row["metric"]}, "properties": {"kind": row["kind"]},
                "Thing@iot.navigationLink": f"{b}/Things('{row['thing_id']}')",
                "Observations@iot.navigationLink": f"{b}/Datastreams('{did}')/Observations"}

    def observation(b: str, row: dict) -> dict:
        oid = row["id"]
        t0 = row["bucket"]
        return {"@iot.id": oid, "@iot.selfLink": f"{b}/Observations('{oid}')",
                "phenomenonTime": f"{_iso(t0)}/{_iso(t0 + timedelta(hours=1))}", "resultTime": _iso(t0 + timedelta(hours=1)),
                "result": round(row["result"], 3), "parameters": {"n": row["n"], "aggregation": "hourly mean"},
                "Datastream@iot.navigationLink": f"{b}/Datastreams('{row['ds_id']}')"}

    # pk/metric_id are readings_hourly's key columns: the default order of the unfiltered
    # collection walks its primary key (ordering on the computed ds_id sorted every row).
    obs_sql = f"""SELECT ds.id || '.' || extract(epoch FROM h.bucket)::bigint AS id, ds.id AS ds_id, h.bucket,
                         h.avg AS result, h.n, h.device_id AS pk, h.metric AS metric_id
                  FROM ({ENTITY_SQL['Datastreams'][0]}) ds
                  JOIN readings_hourly h ON h.device_id = ds.pk AND h.metric = ds.metric_id"""

    @r.get("")
    def landing(request: Request) -> dict:
        b = base(request)
        return {"value": [{"name": n, "url": f"{b}/{n}"} for n in ("Things", "Locations", "Datastreams", "Observations")],
                "serverSettings": {"conformance": ["http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel",
                                                   "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data"]}}

    def one(c, entity: str, ident: str, shape, b: str):
        sql = ENTITY_SQL["Datastreams" if entity == "Datastreams" else "Things"][0]
        parts = id_parts(ident, 3 if entity == "Datastreams" else 2)
        if entity == "Datastreams":
            where = f"id = %s AND pk = {DEVICE_PK} AND metric = %s"
        else:
            where = "id = %s AND tenant = %s AND device_id = %s"
        row = c.execute(f"SELECT * FROM ({sql}) s WHERE {where}", [ident, *parts]).fetchone() if parts else None
        if row is None:
            raise HTTPException(404, f"no {entity[:-1]} {ident!r}")
        return shape(b, row)

    for entity, shape, default in (("Things", thing, "id"), ("Locations", location, "id"),
                                   ("Datastreams", datastream, "id")):
        def make(entity=entity, shape=shape, default=default):
            sql = ENTITY_SQL["Datastreams" if entity == "Datastreams" else "Things"][0]

            def collection(request: Request, c: Conn, top: Top = 100, skip: Skip = 0, filt: Filter = None,
                           orderby: OrderBy = None, count: Count = False) -> dict:
                b = base(request)
                return page(request, c, sql, [], entity, filt, orderby, default, top, skip, count,
                            lambda row: shape(b, row))

            def single(request: Request, c: Conn, ident: str) -> dict:
                return one(c, entity, ident, shape, base(request))

            r.add_api_route(f"/{entity}", collection, methods=["GET"], name=f"sta_{entity}")
            r.add_api_route(f"/{entity}('{{ident}}')", single, methods=["GET"], name=f"sta_{entity}_one")
        make()

    @r.get("/Things('{ident}')/Datastreams")
    def thing_datastreams(request: Request, c: Conn, ident: str, top: Top = 100, skip: Skip = 0,
                          filt: Filter = None, orderby: OrderBy = None, count: Count = False) -> dict:
        b = base(request)
        sql = f"SELECT * FROM ({ENTITY_SQL['Datastreams'][0]}) x WHERE thing_id = %s"
        return page(request, c, sql, [ident], "Datastreams", filt, orderby, "id", top, skip, count,
                    lambda row: datastream(b, row))

    @r.get("/Things('{ident}')/Locations")
    def thing_locations(request: Request, c: Conn, ident: str) -> dict:
        return {"value": [one(c, "Locations", ident, location, base(request))]}

    @r.get("/Observations")
    def observations(request: Request, c: Conn, top: Top = 100, skip: Skip = 0, filt: Filter = None,
                     orderby: OrderBy = None, count: Count = False) -> dict:
        b = base(request)
        return page(request, c, obs_sql, [], "Observations", filt, orderby, "pk, metric_id, bucket", top, skip, count,
                    lambda row: observation(b, row))

    @r.get("/Datastreams('{ident}')/Observations")
    def datastream_observations(request: Request, c: Conn, ident: str, top: Top = 100, skip: Skip = 0,
                                filt: Filter = None, orderby: OrderBy = None, count: Count = False) -> dict:
        b = base(request)
        one(c, "Datastreams", ident, datastream, b)
        tenant, device, metric = id_parts(ident, 3) or ("", "", "")
        return page(request, c, obs_sql + f" WHERE ds.id = %s AND h.device_id = {DEVICE_PK} AND ds.metric = %s",
                    [ident, tenant, device, metric], "Observations", filt, orderby,
                    "bucket", top, skip, count, lambda row: observation(b, row))

    return r
