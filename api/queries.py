"""Every SQL statement the API runs, in one place, parameterised.

The same statements serve plain PostgreSQL and TimescaleDB: the rollups are
tables on one and continuous aggregates on the other, under the same names and
columns, and ad-hoc buckets use ``date_bin`` (core PostgreSQL).
"""

from __future__ import annotations

import re
from datetime import timedelta

HEALTH = "SELECT (SELECT variant FROM schema_migrations WHERE variant IS NOT NULL LIMIT 1), now()"

DEVICE_COLUMNS = ("tenant, device_id, kind, board, firmware, lat, lon, asset_id, status, state, next_wake, "
                  "last_seen, last_seq, created_at, updated_at")

LIST_DEVICES = f"""SELECT {DEVICE_COLUMNS} FROM devices
    WHERE tenant = %(tenant)s AND (%(kind)s::text IS NULL OR kind = %(kind)s)
      AND (%(status)s::text IS NULL OR status = %(status)s)
    ORDER BY device_id LIMIT %(limit)s OFFSET %(offset)s"""

GET_DEVICE = f"SELECT {DEVICE_COLUMNS} FROM devices WHERE tenant = %(tenant)s AND device_id = %(device_id)s"

INSERT_DEVICE = f"""INSERT INTO devices (tenant, device_id, kind, board, firmware, lat, lon, asset_id, status)
    VALUES (%(tenant)s, %(device_id)s, %(kind)s, %(board)s, %(firmware)s, %(lat)s, %(lon)s, %(asset_id)s, %(status)s)
    RETURNING {DEVICE_COLUMNS}"""

UPDATE_DEVICE = f"""UPDATE devices SET
      board = coalesce(%(board)s, board), firmware = coalesce(%(firmware)s, firmware),
      lat = coalesce(%(lat)s, lat), lon = coalesce(%(lon)s, lon), asset_id = coalesce(%(asset_id)s, asset_id),
      status = coalesce(%(status)s, status), updated_at = now()
    WHERE tenant = %(tenant)s AND device_id = %(device_id)s
    RETURNING {DEVICE_COLUMNS}"""

TENANT_EXISTS = "SELECT 1 FROM tenants WHERE id = %(tenant)s"

DEVICE_PK = "SELECT id FROM devices WHERE tenant = %(tenant)s AND device_id = %(device_id)s"

METRIC_ID = "SELECT id, unit FROM metrics WHERE name = %(metric)s"

RAW = """SELECT time, value FROM readings
    WHERE device_id = %(pk)s AND metric = %(metric_id)s AND time >= %(start)s AND time < %(end)s
    ORDER BY time LIMIT %(limit)s"""

HOURLY = """SELECT bucket, n, avg, min, max FROM readings_hourly
    WHERE device_id = %(pk)s AND metric = %(metric_id)s AND bucket >= %(start)s AND bucket < %(end)s
    ORDER BY bucket LIMIT %(limit)s"""

DAILY = """SELECT bucket, n, avg, min, max FROM readings_daily
    WHERE device_id = %(pk)s AND metric = %(metric_id)s AND bucket >= %(start)s AND bucket < %(end)s
    ORDER BY bucket LIMIT %(limit)s"""

BINNED = """SELECT date_bin(%(width)s, time, timestamptz '2000-01-01') AS bucket, count(*) AS n,
           avg(value) AS avg, min(value) AS min, max(value) AS max
    FROM readings
    WHERE device_id = %(pk)s AND metric = %(metric_id)s AND time >= %(start)s AND time < %(end)s
    GROUP BY 1 ORDER BY 1 LIMIT %(limit)s"""

ALL = {"HEALTH": HEALTH, "LIST_DEVICES": LIST_DEVICES, "GET_DEVICE": GET_DEVICE, "INSERT_DEVICE": INSERT_DEVICE,
       "UPDATE_DEVICE": UPDATE_DEVICE, "TENANT_EXISTS": TENANT_EXISTS, "DEVICE_PK": DEVICE_PK,
       "METRIC_ID": METRIC_ID, "RAW": RAW, "HOURLY": HOURLY, "DAILY": DAILY, "BINNED": BINNED}

_WIDTH = re.compile(r"^(\d{1,4})([smhd])$")


def parse_bucket(bucket: str) -> tuple[str, timedelta | None]:
    """``raw``, ``1h``, ``1d`` or a width like ``15m`` -> (query name, width).

    >>> parse_bucket("1h"), parse_bucket("15m")
    (('HOURLY', None), ('BINNED', datetime.timedelta(seconds=900)))
    """
    if bucket == "raw":
        return "RAW", None
    if bucket == "1h":
        return "HOURLY", None
    if bucket == "1d":
        return "DAILY", None
    m = _WIDTH.match(bucket)
    if not m or int(m.group(1)) == 0:
        raise ValueError("bucket must be raw, 1h, 1d or a width such as 30s, 15m, 6h, 7d")
    n = int(m.group(1))
    return "BINNED", timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]: n})
