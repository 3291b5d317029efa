"""Open data downloads (CSV, GeoJSON, FIWARE NGSI-LD) and a resident's own-data export.

``router(pool)``; the lead mounts it with ``app.include_router(opendata.router(pool))``.

* ``/opendata/v1/{dataset}.csv`` — hourly means, ``?start=&end=`` (default the
  last 7 days), datasets ``air``, ``noise``, ``bins`` (street litter bins only);
  ``/opendata/v1/{dataset}.geojson`` — sites with their latest hourly values;
  ``/opendata/v1/road-defects.geojson|.csv`` — confirmed road defects
  (pothole alerts not dismissed).  Public (any caller, no token); household bins
  never appear (the shared predicate :data:`api.sta.PUBLIC`).
* ``/opendata/v1/ngsi-ld/{WasteContainer|AirQualityObserved|NoiseLevelObserved}``
  — FIWARE Smart Data Models, NGSI-LD normalized representation.
* ``/residents/{tenant}/households/{household}/export`` — subject access:
  everything held about one household's bins (admins, and that household's
  resident token; every export is audited).  Welfare-alert consent is managed at ``/consents`` (api/consents.py).
"""


import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Response
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from api import audit
from api.auth import EVERYONE, Principal, connection, require
from api.sta import DEV, PUBLIC
from contract import v1

DATASETS = {"air": ("air", ("pm1", "pm25", "pm10", "rh", "co2", "temp")),
            "noise": ("noise", ("laeq", "lamax", "l10", "l90")), "bins": ("bin_fill", ("fill",))}
NGSI_CONTEXT = ["https://raw.githubusercontent.com/smart-data-models/dataModel.WasteManagement/master/context.jsonld",
                "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/context.jsonld",
                "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.6.jsonld"]
NGSI_ATTRS = {"AirQualityObserved": ("air", {"pm1": "pm1", "pm25": "pm25", "pm10": "pm10", "rh": "relativeHumidity",
                                             "co2": "co2", "temp": "temperature"}),
              "NoiseLevelObserved": ("noise", {"laeq": "LAeq", "lamax": "LAmax", "l10": "LA10", "l90": "LA90"}),
              "WasteContainer": ("bin_fill", {"fill": "fillingLevel", "temp": "temperature"})}
#: documented response types of the downloads (besides JSON)
_CSV = {"text/csv": {"schema": {"type": "string"}}}
_GEOJSON = {"application/geo+json": {"schema": {"type": "object"}}}
UNIT_CODES = {"ug/m3": "GQ", "dB": "2N", "%RH": "P1", "ppm": "59", "Cel": "CEL", "/": "C62"}

LATEST = f"""SELECT d.tenant, d.device_id, d.kind, a.ward, a.asset_id, a.capacity_l, d.lat, d.lon, m.name AS metric,
       m.unit, l.bucket, l.avg
FROM {DEV} JOIN metrics m ON m.id = ANY(%(metrics)s)
CROSS JOIN LATERAL (SELECT h.bucket, h.avg FROM readings_hourly h
                    WHERE h.device_id = d.id AND h.metric = m.id AND h.bucket >= %(since)s
                    ORDER BY h.bucket DESC LIMIT 1) l
WHERE {PUBLIC} AND d.kind = %(kind)s
ORDER BY d.tenant, d.device_id, m.name"""

SERIES = f"""SELECT d.tenant, d.device_id, a.ward, d.lat, d.lon, m.name AS metric, m.unit, h.bucket, h.avg AS mean,
       h.min, h.max, h.n
FROM readings_hourly h JOIN {DEV} ON d.id = h.device_id JOIN metrics m ON m.id = h.metric
WHERE {PUBLIC} AND d.kind = %(kind)s AND h.metric = ANY(%(metrics)s) AND h.bucket >= %(start)s AND h.bucket < %(end)s
ORDER BY h.bucket, d.device_id, m.name LIMIT 1000000"""

DEFECTS = """SELECT a.tenant, a.entity AS defect_id, a.kind, a.severity, a.status, a.lat, a.lon, a.window_start AS first_seen,
       a.updated_at
FROM alerts a WHERE a.kind = 'pothole' AND a.status <> 'dismissed' AND a.lat IS NOT NULL
  AND coalesce(a.verdict, 'true_positive') = 'true_positive'
ORDER BY a.window_start, a.id"""


def _ids(names) -> list[int]:
    return [v1.metric(n)[0] for n in names]


def _csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([r[c].isoformat() if isinstance(r[c], datetime) else r[c] for c in columns])
    return buf.getvalue()


def _latest_by_site(rows: list[dict]) -> dict[tuple, dict]:
    sites: dict[tuple, dict] = {}
    for r in rows:
        s = sites.setdefault((r["tenant"], r["device_id"]), {"row": r, "values": {}})
        s["values"][r["metric"]] = (r["avg"], r["unit"], r["bucket"])
    return sites


def ngsi_entities(rows: list[dict], type_: str) -> list[dict]:
    _, attrs = NGSI_ATTRS[type_]
    out = []
    for (tenant, dev), s in _latest_by_site(rows).items():
        r = s["row"]
        e = {"id": f"urn:ngsi-ld:{type_}:{tenant}:{dev}", "type": type_,
             "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [r["lon"], r["lat"]]}},
             "@context": NGSI_CONTEXT}
        observed = max(b for _, _, b in s["values"].values())
        if type_ != "WasteContainer":
            e["dateObserved"] = {"type": "Property", "value": {"@type": "DateTime", "@value": observed.isoformat()}}
        else:
            e["status"] = {"type": "Property", "value": "ok"}
            if r["capacity_l"]:
                e["cargoVolume"] = {"type": "Property", "value": r["capacity_l"] / 1000, "unitCode": "MTQ"}
            if r["ward"]:
                e["areaServed"] = {"type": "Property", "value": r["ward"]}
        for metric, (value, unit, at) in s["values"].items():
            if metric in attrs:
                val = round(max(0.0, min(1.0, value)), 3) if metric == "fill" else round(value, 2)
                e[attrs[metric]] = {"type": "Property", "value": val, "observedAt": at.isoformat().replace("+00:00", "Z"),
                                    "unitCode": UNIT_CODES.get(unit, unit)}
        out.append(e)
    return out


def router(pool: ConnectionPool) -> APIRouter:
    r = APIRouter(tags=["open data"])

    def conn(c: psycopg.Connection = Depends(connection)) -> Iterator[psycopg.Connection]:
        c.row_factory = dict_row
        yield c

    Conn = Annotated[psycopg.Connection, Depends(conn)]
    Anyone = Annotated[Principal, Depends(require(*EVERYONE))]
    Admin = Annotated[Principal, Depends(require("admin", "resident"))]

    def window(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
        end = end or datetime.now(timezone.utc)
        start = start or end - timedelta(days=7)
        if start >= end or end - start > timedelta(days=366):
            raise HTTPException(422, "start must be before end, at most 366 days apart")
        return start, end

    @r.get("/opendata/v1/road-defects.{fmt}", responses={200: {"content": {**_CSV, **_GEOJSON}}})
    def road_defects(c: Conn, _: Anyone, fmt: Literal["csv", "geojson"]) -> Response:
        rows = c.execute(DEFECTS).fetchall()
        if fmt == "csv":
            return Response(_csv(rows, list(rows[0]) if rows else ["defect_id"]), media_type="text/csv")
        feats = [{"type": "Feature", "id": f"{x['tenant']}.{x['defect_id']}",
                  "geometry": {"type": "Point", "coordinates": [x["lon"], x["lat"]]},
                  "properties": {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in x.items()
                                 if k not in ("lat", "lon")}} for x in rows]
        return Response(json.dumps({"type": "FeatureCollection", "features": feats}), media_type="application/geo+json")

    @r.get("/opendata/v1/{dataset}.csv", responses={200: {"content": _CSV}})
    def dataset_csv(c: Conn, _: Anyone, dataset: Literal["air", "noise", "bins"], start: datetime | None = None,
                    end: datetime | None = None) -> Response:
        kind, metrics = DATASETS[dataset]
        s, e = window(start, end)
        rows = c.execute(SERIES, {"kind": kind, "metrics": _ids(metrics), "start": s, "end": e}).fetchall()
        cols = ["bucket", "tenant", "device_id", "ward", "lat", "lon", "metric", "unit", "mean", "min", "max", "n"]
        return Response(_csv(rows, cols), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="streetsense-{dataset}.csv"'})

    @r.get("/opendata/v1/{dataset}.geojson", responses={200: {"content": _GEOJSON}})
    def dataset_geojson(c: Conn, _: Anyone, dataset: Literal["air", "noise", "bins"]) -> Response:
        kind, metrics = DATASETS[dataset]
        rows = c.execute(LATEST, {"kind": kind, "metrics": _ids(metrics),
                                  "since": datetime.now(timezone.utc) - timedelta(days=30)}).fetchall()
        feats = []
        for (tenant, dev), s in _latest_by_site(rows).items():
            x = s["row"]
            feats.append({"type": "Feature", "id": f"{tenant}.{dev}",
                          "geometry": {"type": "Point", "coordinates": [x["lon"], x["lat"]]},
                          "properties": {"tenant": tenant, "device_id": dev, "kind": x["kind"], "ward": x["ward"],
                                         **{m: {"value": round(v, 3), "unit": u, "hour": b.isoformat()}
                                            for m, (v, u, b) in s["values"].items()}}})
        return Response(json.dumps({"type": "FeatureCollection", "features": feats}), media_type="application/geo+json")

    @r.get("/opendata/v1/ngsi-ld/{type_}",
           responses={200: {"content": {"application/ld+json": {"schema": {"type": "array", "items": {"type": "object"}}}}}})
    def ngsi(c: Conn, _: Anyone, type_: Literal["WasteContainer", "AirQualityObserved", "NoiseLevelObserved"]) -> Response:
        kind, attrs = NGSI_ATTRS[type_]
        rows = c.execute(LATEST, {"kind": kind, "metrics": _ids(attrs),
                                  "since": datetime.now(timezone.utc) - timedelta(days=30)}).fetchall()
        return Response(json.dumps(ngsi_entities(rows, type_)), media_type="application/ld+json")

    @r.get("/residents/{tenant}/households/{household}/export")
    def subject_access(c: Conn, who: Admin, tenant: str, household: str) -> dict:
        if who.role == "resident" and (who.tenant, who.household) != (tenant, household):
            raise HTTPException(404, "no bins are registered for this household")
        assets = c.execute("""SELECT asset_id, kind, bin_kind, capacity_l, depth_m, household, street, ward, lat, lon,
                                     schedule, created_at FROM assets WHERE tenant = %s AND household = %s
                              ORDER BY asset_id""", (tenant, household)).fetchall()
        if not assets:
            raise HTTPException(404, "no bins are registered for this household")
        ids = [a["asset_id"] for a in assets]
        devices = c.execute("""SELECT id, device_id, kind, board, firmware, asset_id, status, state, last_seen, created_at
                               FROM devices WHERE tenant = %s AND asset_id = ANY(%s) ORDER BY device_id""",
                            (tenant, ids)).fetchall()
        pks = [d.pop("id") for d in devices]
        by_pk = dict(zip(pks, (d["device_id"] for d in devices), strict=True))
        readings = c.execute("""SELECT h.device_id AS pk, m.name AS metric, m.unit, h.bucket, h.n, h.avg, h.min, h.max
                                FROM readings_hourly h JOIN metrics m ON m.id = h.metric
                                WHERE h.device_id = ANY(%s) ORDER BY h.device_id, m.name, h.bucket""", (pks,)).fetchall()
        for x in readings:
            x["device_id"] = by_pk[x.pop("pk")]
        alerts = c.execute("""SELECT id, kind, severity, status, asset_id, window_start, window_end, summary, welfare,
                                     created_at, closed_at, resolution, verdict, redacted_at
                              FROM alerts WHERE tenant = %s AND (asset_id = ANY(%s) OR household = %s) ORDER BY id""",
                           (tenant, ids, household)).fetchall()
        consents = c.execute("""SELECT id, recipient_name, recipient_role, recipient_contact, purpose, granted_at,
                                       withdrawn_at FROM consents WHERE tenant = %s AND household = %s ORDER BY id""",
                             (tenant, household)).fetchall()
        audit.record(c, who, "household.export", tenant, [household], {"assets": ids, "readings": len(readings)})
        return {"tenant": tenant, "household": household, "generated_at": datetime.now(timezone.utc),
                "note": "Household bins are identified by a pseudonym only; no names or addresses are held.",
                "assets": assets, "devices": devices, "readings_hourly": readings, "alerts": alerts,
                "consents": consents,
                "consent_page": f"/consents?tenant={tenant}&household={household}"}

    return r
