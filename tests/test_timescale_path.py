"""The TimescaleDB storage variant, for real, against PGlite (PostgreSQL 17 +
TimescaleDB 2.23 in WebAssembly, tests/support/pglite.py).

Everything the plain-PostgreSQL tests prove (tests/test_ingest_e2e.py,
tests/test_api.py) is proved here on the other variant: the migration and its
policies, ingest through a real Mosquitto and the worker (unnest path: PGlite
refuses COPY FROM STDIN), continuous aggregates, compressed chunks, every API
statement over HTTP, and retention. Expected values are computed in Python.

PGlite serves ONE connection at a time, so: every test gets a fresh in-memory
server (a fresh database; CREATE DATABASE is not available), the worker and the
API run with ``pool_size=1``, and while one of them holds its pool's connection
the test reads the database through that same pool, or not at all.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psycopg
import pytest

from api import queries
from api.app import create_app
from contract import v1
from ingest.migrate import migrate, migrations, storage_variant
from ingest.store import Batch, ReadingStore
from ingest.worker import IngestConfig, IngestWorker
from streetsense.mqtt import make_client, publish_all
from tests.support.api_auth import bearer, make_token
from tests.support.http import serve
from tests.support.pglite import PGliteTimescale, node_available, node_unavailable_reason

pytestmark = [pytest.mark.timescale,
              pytest.mark.skipif(not node_available(), reason=node_unavailable_reason() or "")]

UTC = dt.UTC
TENANT = "tstown"
FILL = v1.metric("fill")[0]
TEMP = v1.metric("temp")[0]
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
# Midnight UTC three days ago: in the past (the decoder refuses future times), inside
# the hourly refresh window, and old enough that each day is a whole (closed) 1-day chunk.
DAY0 = dt.datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - 3 * DAY


@pytest.fixture
def server() -> Iterator[PGliteTimescale]:
    """A fresh PGlite + TimescaleDB server (in memory) for one test."""
    with PGliteTimescale(queue_timeout=20.0) as pg:
        yield pg


@pytest.fixture
def tsdb(server: PGliteTimescale) -> str:
    """The URL of a database migrated to the TimescaleDB variant (retention 30 days)."""
    with psycopg.connect(server.url) as c:
        migrate(c, timescale="on", retention_days=30)
    return server.url


# --------------------------------------------------------------------------- helpers


def ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def register(url: str, devices: list[str], kind: str = "bin_fill") -> dict[str, int]:
    with psycopg.connect(url) as c:
        c.execute("INSERT INTO tenants (id, name) VALUES (%s, 'TS Town') ON CONFLICT DO NOTHING", (TENANT,))
        c.cursor().executemany("INSERT INTO devices (tenant, device_id, kind, status) VALUES (%s, %s, %s, 'active')",
                               [(TENANT, d, kind) for d in devices])
        return dict(c.execute("SELECT device_id, id FROM devices WHERE tenant = %s", (TENANT,)).fetchall())


def write(url: str, rows: list[tuple[int, int, int, float]]):
    """Store rows (ms, device pk, metric, value) as the ingest worker does (probing COPY)."""
    with psycopg.connect(url) as c:
        store = ReadingStore(c, "test")
        assert store.use_copy is False, "PGlite refuses COPY FROM STDIN: the unnest path is expected"
        return store.write(Batch.from_rows(rows, messages=1))


def aggregate(rows, width: dt.timedelta) -> dict[tuple, tuple]:
    """(bucket, device, metric) -> (n, sum, min, max, avg), computed in Python (UTC buckets)."""
    acc: dict[tuple, list[float]] = defaultdict(list)
    epoch = dt.datetime(2000, 1, 1, tzinfo=UTC)
    for t_ms, d, k, v in rows:
        t = dt.datetime.fromtimestamp(t_ms / 1000, UTC)
        acc[(epoch + (t - epoch) // width * width, d, k)].append(v)
    return {key: (len(vs), sum(vs), min(vs), max(vs), sum(vs) / len(vs)) for key, vs in acc.items()}


def view(conn: psycopg.Connection, name: str) -> dict[tuple, tuple]:
    return {(b, d, k): (n, s, lo, hi, a) for b, d, k, n, s, lo, hi, a in conn.execute(
        f"SELECT bucket, device_id, metric, n, sum, min, max, avg FROM {name}")}


def materialized(conn: psycopg.Connection, name: str) -> int:
    """Rows actually materialized for a continuous aggregate (its internal hypertable)."""
    schema, table = conn.execute(
        "SELECT materialization_hypertable_schema, materialization_hypertable_name "
        "FROM timescaledb_information.continuous_aggregates WHERE view_name = %s", (name,)).fetchone()
    return conn.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()[0]


def jobs(conn: psycopg.Connection) -> dict[tuple[str, str], tuple[int, dict]]:
    """(proc_name, hypertable/view name) -> (job id, config) of the readings policies."""
    out = {}
    for job_id, proc, ht, cfg in conn.execute(
            "SELECT job_id, proc_name, hypertable_name, config FROM timescaledb_information.jobs "
            "WHERE hypertable_name IN ('readings', 'readings_hourly', 'readings_daily')"):
        assert (proc, ht) not in out, f"two {proc} jobs on {ht}"
        out[(proc, ht)] = (job_id, cfg)
    return out


def grid(pks: list[int], start: dt.datetime, hours: int, every_min: int = 10):
    """Fill and temp readings; values are multiples of 1/4, so every sum and average is exact."""
    rows = []
    for i in range(hours * 60 // every_min):
        t = ms(start + dt.timedelta(minutes=every_min * i))
        for j, pk in enumerate(pks):
            rows.append((t, pk, FILL, ((i * 7 + j * 3) % 5) / 4))
            rows.append((t, pk, TEMP, 10 + ((i * 11 + j) % 40) / 4))
    return rows


def stored(conn: psycopg.Connection, pks=None) -> list[tuple]:
    q = "SELECT (extract(epoch FROM time) * 1000)::bigint, device_id, metric, value FROM readings"
    if pks is not None:
        return conn.execute(q + " WHERE device_id = ANY(%s)", (list(pks),)).fetchall()
    return conn.execute(q).fetchall()


# --------------------------------------------------------------------------- 1. migration


def test_migration_creates_hypertable_compression_caggs_and_policies(server):
    with psycopg.connect(server.url) as c:
        applied = migrate(c, timescale="on", retention_days=30)
        assert applied[:2] == ["0001_core", "0002_readings.timescale"]
        assert applied == [f"{m.version:04d}_{m.name}" + (f".{m.variant}" if m.variant else "")
                           for m in migrations("timescale")]
        assert migrate(c, timescale="on", retention_days=30) == []          # idempotent
        assert migrate(c, timescale="auto", retention_days=30) == []        # the recorded variant wins
        assert storage_variant(c) == "timescale"
        assert c.execute("SELECT version, name, variant FROM schema_migrations ORDER BY version").fetchall()[:2] == [
            (1, "core", None), (2, "readings", "timescale")]
        assert c.execute("SELECT hypertable_name, num_dimensions, compression_enabled "
                         "FROM timescaledb_information.hypertables WHERE hypertable_name = 'readings'"
                         ).fetchall() == [("readings", 1, True)]
        assert c.execute("SELECT column_name, time_interval FROM timescaledb_information.dimensions "
                         "WHERE hypertable_name = 'readings'").fetchall() == [("time", DAY)]
        settings = c.execute("SELECT attname, segmentby_column_index, orderby_column_index "
                             "FROM timescaledb_information.compression_settings "
                             "WHERE hypertable_name = 'readings' ORDER BY attname").fetchall()
        assert settings == [("device_id", 1, None), ("metric", None, 1), ("time", None, 2)]
        caggs = c.execute("SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates "
                          "ORDER BY 1").fetchall()
        assert caggs == [("readings_daily", False), ("readings_hourly", False)]
        assert c.execute("SELECT count(*) FROM metrics").fetchone() == (len(v1.METRICS),)
        j = jobs(c)
        assert sorted(j) == [("policy_compression", "readings"), ("policy_refresh_continuous_aggregate", "readings_daily"),
                             ("policy_refresh_continuous_aggregate", "readings_hourly"), ("policy_retention", "readings")]
        assert j[("policy_compression", "readings")][1]["compress_after"] == "7 days"
        assert j[("policy_retention", "readings")][1]["drop_after"] == "30 days"
        # refresh windows stop at the retention horizon (see the retention test for why)
        assert j[("policy_refresh_continuous_aggregate", "readings_hourly")][1]["start_offset"] == "30 days"
        assert j[("policy_refresh_continuous_aggregate", "readings_daily")][1]["start_offset"] == "30 days"
        assert all(cfg["end_offset"] is None for (p, _), (_, cfg) in j.items() if p.startswith("policy_refresh"))
        schedules = dict(c.execute("SELECT hypertable_name, schedule_interval FROM timescaledb_information.jobs "
                                   "WHERE proc_name = 'policy_refresh_continuous_aggregate'").fetchall())
        assert schedules == {"readings_hourly": dt.timedelta(minutes=5), "readings_daily": HOUR}
        # re-running with the same settings leaves the very same jobs
        assert migrate(c, timescale="on", retention_days=30) == []
        assert jobs(c) == j
        # a changed retention setting replaces the policies it affects; nothing is duplicated
        assert migrate(c, timescale="on", retention_days=90) == []
        j2 = jobs(c)
        assert sorted(j2) == sorted(j)
        assert j2[("policy_retention", "readings")][1]["drop_after"] == "90 days"
        assert j2[("policy_refresh_continuous_aggregate", "readings_hourly")][1]["start_offset"] == "35 days"
        assert j2[("policy_refresh_continuous_aggregate", "readings_daily")][1]["start_offset"] == "90 days"
        assert j2[("policy_compression", "readings")] == j[("policy_compression", "readings")]
        assert migrate(c, timescale="on", retention_days=730) == []
        assert jobs(c)[("policy_refresh_continuous_aggregate", "readings_daily")][1]["start_offset"] == "400 days"
        assert c.execute("SELECT ss_refresh_rollups()").fetchone() == (0,)


# --------------------------------------------------------------------------- 2. ingest through the worker


def wait_until(cond, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def worker_thread(url: str, mqtt_url: str) -> Iterator[IngestWorker]:
    """The worker in a thread (use_copy=None: it probes COPY and falls back to unnest),
    returned once its subscription is proven: a probe pack published after it
    subscribed has been committed (the broker drops what it has nobody to queue for)."""
    w = IngestWorker(IngestConfig(url, mqtt_url, client_id="ingest-ts", use_copy=None, pool_size=1))
    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(stop,), daemon=True)
    t.start()
    try:
        pub = make_client(mqtt_url, "probe-pub", session=False)
        base = int(DAY0.timestamp()) + 3 * 86400 - 3600
        deadline = time.monotonic() + 30
        seq = 0
        while w.stats["inserted"] == 0:
            if time.monotonic() > deadline:
                raise TimeoutError("ingest worker did not subscribe")
            publish_all(pub, [(v1.topic(TENANT, "probe", v1.UP), v1.encode_json("probe", base, seq, [("fill", 1, seq)]))])
            seq += 1
            time.sleep(0.3)
        pub.disconnect()
        yield w
    finally:
        stop.set()
        t.join(30)
        assert not t.is_alive(), "worker did not stop"


def test_ingest_through_mqtt_and_the_worker_stores_exactly_once(tsdb, broker, monkeypatch):
    import ingest.store

    probed: list[bool] = []
    real_probe = ingest.store.supports_copy
    monkeypatch.setattr(ingest.store, "supports_copy", lambda conn: probed.append(real_probe(conn)) or probed[-1])
    pks = register(tsdb, ["bin-0001", "bin-0002", "bin-0003", "probe"])
    base = int(DAY0.timestamp())
    msgs, expected = [], set()
    for name in ("bin-0001", "bin-0002", "bin-0003"):
        for seq in range(6):
            recs = []
            for k in range(20):
                i = seq * 20 + k
                q = (i * 37 + pks[name]) % 1000
                recs.append(("fill", q, i * 60_000))
                expected.add(((base + i * 60) * 1000, pks[name], FILL, q / 1000))
            msgs.append((v1.topic(TENANT, name, v1.UP), v1.encode_json(name, base, seq, recs)))
    redelivered = [msgs[1], msgs[7], msgs[7], msgs[15]]       # 4 packs again: 80 duplicate readings
    bad = (v1.topic(TENANT, "bin-0001", v1.UP), b"{not json")
    with worker_thread(tsdb, broker.url) as w:
        assert w.registry.get(TENANT, "bin-0001") is not None
        publish_all(make_client(broker.url, "dev-pub"), msgs[:10] + [bad] + redelivered + msgs[10:])

        def committed() -> bool:
            # the worker holds PGlite's only connection: read through its pool
            with w.pool.connection() as c:
                n = c.execute("SELECT count(*) FROM readings WHERE device_id <> %s", (pks["probe"],)).fetchone()[0]
            return n >= len(expected) and w.stats["duplicates"] >= 80 and w.stats["quarantined"] >= 1

        wait_until(committed, what="every message committed")
    assert w.stats["duplicates"] == 80 and w.stats["quarantined"] == 1
    assert probed == [False], "the worker probes COPY once, finds it refused, and uses unnest from then on"
    with psycopg.connect(tsdb) as c:
        rows = stored(c, [pks[n] for n in ("bin-0001", "bin-0002", "bin-0003")])
        assert len(rows) == len(expected) and set(rows) == expected
        # batch counters: each (device, seq) once although 4 packs came twice
        assert c.execute("SELECT count(*) FROM batches WHERE device_id <> %s", (pks["probe"],)
                         ).fetchone() == (len(msgs),)
        assert c.execute("SELECT count(*) FROM devices WHERE last_seq = 5 AND device_id LIKE 'bin-%'"
                         ).fetchone() == (3,)
        q = c.execute("SELECT topic, device_id, reason_code, payload FROM quarantine").fetchall()
        assert [(t, d, r, bytes(p)) for t, d, r, p in q] == [(bad[0], "bin-0001", "bad_encoding", bad[1])]
        # one ingest_log row per committed batch, duplicates counted (probe packs included)
        probes = c.execute("SELECT count(*) FROM readings WHERE device_id = %s", (pks["probe"],)).fetchone()[0]
        assert c.execute("SELECT sum(inserted), sum(readings) - sum(inserted), sum(quarantined) FROM ingest_log"
                         ).fetchone() == (len(expected) + probes, 80, 1)
        # the readings landed in the hypertable's chunks (one day: one chunk)
        assert c.execute("SELECT count(*) FROM show_chunks('readings', older_than => %s::timestamptz)",
                         (DAY0 + DAY,)).fetchone() == (1,)


# --------------------------------------------------------------------------- 3. continuous aggregates


def test_continuous_aggregates_refresh_policies_and_real_time(tsdb):
    pks = list(register(tsdb, ["bin-0001", "bin-0002"]).values())
    first = grid(pks, DAY0, hours=30)                   # day 0 and the first 6 hours of day 1
    assert write(tsdb, first).inserted == len(first)
    with psycopg.connect(tsdb, autocommit=True) as c:
        # real-time aggregation: nothing materialized, every bucket already answers
        assert materialized(c, "readings_hourly") == materialized(c, "readings_daily") == 0
        assert view(c, "readings_hourly") == aggregate(first, HOUR)
        assert view(c, "readings_daily") == aggregate(first, DAY)
        # materialize the first 24 hours by hand
        c.execute("CALL refresh_continuous_aggregate('readings_hourly', %s::timestamptz, %s::timestamptz)",
                  (DAY0, DAY0 + DAY))
        assert materialized(c, "readings_hourly") == len(aggregate([r for r in first if r[0] < ms(DAY0 + DAY)], HOUR))
        assert view(c, "readings_hourly") == aggregate(first, HOUR)       # materialized + real-time, no overlap

    # more rows after the watermark: shown at once by the real-time part, not materialized
    later = grid(pks, DAY0 + 30 * HOUR, hours=4)
    # a late (redelivered-then-corrected) reading inside an already materialized hour
    late = [(ms(DAY0 + dt.timedelta(minutes=5)), pks[0], FILL, 100.0)]
    assert write(tsdb, later + late).inserted == len(later) + 1
    with psycopg.connect(tsdb, autocommit=True) as c:
        n_mat = materialized(c, "readings_hourly")
        got = view(c, "readings_hourly")
        want_stale = aggregate(first + later, HOUR)         # the materialized hour does not see the late row yet
        assert got == want_stale
        # the refresh policies (as the scheduler would run them) bring everything up to date
        j = jobs(c)
        for v in ("readings_hourly", "readings_daily"):
            c.execute("CALL run_job(%s)", (j[("policy_refresh_continuous_aggregate", v)][0],))
        everything = first + later + late
        assert materialized(c, "readings_hourly") > n_mat
        assert view(c, "readings_hourly") == aggregate(everything, HOUR)
        assert view(c, "readings_daily") == aggregate(everything, DAY)
        assert c.execute("SELECT n, max FROM readings_hourly WHERE bucket = %s AND device_id = %s AND metric = %s",
                         (DAY0, pks[0], FILL)).fetchone() == (7, 100.0)
        # materialized-only reads give the same answers once materialized
        c.execute("ALTER MATERIALIZED VIEW readings_hourly SET (timescaledb.materialized_only = true)")
        assert view(c, "readings_hourly") == aggregate(everything, HOUR)
        c.execute("ALTER MATERIALIZED VIEW readings_hourly SET (timescaledb.materialized_only = false)")


# --------------------------------------------------------------------------- 4. compression


def test_compressed_chunks_answer_queries_and_absorb_redelivery(tsdb):
    pks = list(register(tsdb, ["bin-0001", "bin-0002", "bin-0003"]).values())
    old = DAY0 - 10 * DAY                               # older than the 7-day compression policy
    rows = grid(pks, old, hours=72, every_min=15)       # three daily chunks
    assert write(tsdb, rows).inserted == len(rows)
    stats = "SELECT total_chunks, number_compressed_chunks FROM hypertable_compression_stats('readings')"
    raw = {"pk": pks[1], "metric_id": TEMP, "start": old + 20 * HOUR, "end": old + 50 * HOUR, "limit": 10_000}
    with psycopg.connect(tsdb, autocommit=True) as c:
        chunks = [r[0] for r in c.execute("SELECT show_chunks('readings') ORDER BY 1")]
        assert len(chunks) == 3
        raw_before = c.execute(queries.RAW, raw).fetchall()
        # compress two chunks by hand, leave the third to the policy
        for ch in chunks[:2]:
            assert c.execute("SELECT compress_chunk(%s::regclass)", (ch,)).fetchone() == (ch,)
        assert c.execute(stats).fetchone() == (3, 2)
        assert sorted(stored(c)) == sorted(rows)
        assert c.execute(queries.RAW, raw).fetchall() == raw_before
        assert len(raw_before) == 30 * 4 and raw_before[0] == (
            old + 20 * HOUR, next(r[3] for r in rows if r[0] == ms(old + 20 * HOUR) and r[1:3] == (pks[1], TEMP)))
        c.execute("CALL run_job(%s)", (jobs(c)[("policy_compression", "readings")][0],))
        assert c.execute(stats).fetchone() == (3, 3)
        assert c.execute("SELECT bool_and(is_compressed) FROM timescaledb_information.chunks "
                         "WHERE hypertable_name = 'readings'").fetchone() == (True,)
        in_range = [r for r in rows if r[1:3] == (pks[1], TEMP) and ms(raw["start"]) <= r[0] < ms(raw["end"])]
        assert c.execute(queries.BINNED, {**raw, "width": dt.timedelta(hours=6)}).fetchall() == [
            (b, n, a, lo, hi) for (b, _d, _k), (n, _s, lo, hi, a) in sorted(aggregate(in_range, 6 * HOUR).items())]
    # a redelivered batch (the worker crashed before its ack) lands in compressed chunks: nothing doubles
    again = write(tsdb, rows[100:400])
    assert (again.inserted, again.duplicates) == (0, 300)
    # a batch mixing redelivered readings and genuinely late ones: only the late ones go in
    late = [(ms(old + dt.timedelta(hours=h, minutes=1)), pks[0], FILL, 0.5) for h in (1, 30, 60)]
    mixed = write(tsdb, rows[:50] + late + rows[-50:])
    assert (mixed.inserted, mixed.duplicates) == (3, 100)
    with psycopg.connect(tsdb, autocommit=True) as c:
        assert sorted(stored(c)) == sorted(rows + late)
        assert c.execute("SELECT count(*), count(DISTINCT (device_id, metric, time)) FROM readings"
                         ).fetchone() == (len(rows) + 3, len(rows) + 3)
        # the unique key is still enforced on compressed data without ON CONFLICT
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute("INSERT INTO readings VALUES (%s, %s, %s, %s)",
                      (dt.datetime.fromtimestamp(rows[7][0] / 1000, UTC), *rows[7][1:]))
        # aggregates over compressed chunks include the late rows, exactly
        c.execute("CALL refresh_continuous_aggregate('readings_hourly', NULL, NULL)")
        assert view(c, "readings_hourly") == aggregate(rows + late, HOUR)


# --------------------------------------------------------------------------- 5. every API statement


def test_every_api_query_and_route_on_timescale(tsdb):
    pks = register(tsdb, ["bin-0001"])
    pk = pks["bin-0001"]
    # 48 hours of 10-minute fill readings
    rows = [(ms(DAY0 + dt.timedelta(minutes=10 * i)), pk, FILL, ((i * 7) % 9) / 4) for i in range(288)]
    assert write(tsdb, rows).inserted == 288
    start, end = DAY0, DAY0 + 2 * DAY
    with psycopg.connect(tsdb) as c:
        # only the first day of the hourly aggregate is materialized: reads mix both halves
        c.autocommit = True
        c.execute("CALL refresh_continuous_aggregate('readings_hourly', %s::timestamptz, %s::timestamptz)",
                  (DAY0, DAY0 + DAY))
        c.autocommit = False
        # each statement in api.queries.ALL, server-side prepared, in one rolled-back transaction
        p = {"tenant": TENANT, "kind": "air", "status": "active", "limit": 10_000, "offset": 0, "device_id": "air-0009",
             "board": "picow", "firmware": "0.1.0", "lat": 53.8, "lon": -1.55, "asset_id": None, "pk": pk,
             "metric_id": FILL, "metric": "fill", "start": start, "end": end, "width": dt.timedelta(minutes=15)}
        order = ["HEALTH", "TENANT_EXISTS", "INSERT_DEVICE", "UPDATE_DEVICE", "GET_DEVICE", "LIST_DEVICES",
                 "DEVICE_PK", "METRIC_ID", "RAW", "HOURLY", "DAILY", "BINNED"]
        assert sorted(order) == sorted(queries.ALL)
        got = {}
        for name in order:
            sql = queries.ALL[name]
            args = {**p, "device_id": "bin-0001"} if name == "DEVICE_PK" else p
            got[name] = c.execute(sql, args if "%(" in sql else None, prepare=True).fetchall()
        c.rollback()
    assert got["HEALTH"][0][0] == "timescale"
    assert got["TENANT_EXISTS"] == [(1,)] and got["DEVICE_PK"] == [(pk,)] and got["METRIC_ID"] == [(FILL, "/")]
    assert [r[1] for r in got["LIST_DEVICES"]] == ["air-0009"] and got["GET_DEVICE"][0][:4] == (
        TENANT, "air-0009", "air", "picow")
    assert [(r[0], r[1]) for r in got["RAW"]] == [(dt.datetime.fromtimestamp(t / 1000, UTC), v) for t, _, _, v in rows]
    for name, width in (("HOURLY", HOUR), ("DAILY", DAY), ("BINNED", dt.timedelta(minutes=15))):
        want = [(b, n, a, lo, hi) for (b, _d, _k), (n, _s, lo, hi, a) in sorted(aggregate(rows, width).items())]
        assert got[name] == want, name

    def buckets(width: dt.timedelta) -> list[dict]:
        return [{"bucket": b, "n": n, "avg": a, "min": lo, "max": hi}
                for (b, _d, _k), (n, _s, lo, hi, a) in sorted(aggregate(rows, width).items())]

    def parsed(items: list[dict]) -> list[dict]:
        return [{**i, "bucket": dt.datetime.fromisoformat(i["bucket"])} for i in items]

    # over HTTP: the app with one pooled connection (PGlite serves one at a time)
    admin = bearer(make_token(tsdb, "admin", TENANT))       # before the pool holds PGlite's one connection
    with serve(create_app(tsdb, pool_size=1)) as base, httpx.Client(base_url=base, timeout=20, headers=admin) as api:
        h = api.get("/health").json()
        assert h["status"] == "ok" and h["storage"] == "timescale"
        body = {"tenant": TENANT, "device_id": "air-0007", "kind": "air", "board": "picow", "lat": 53.8, "lon": -1.55}
        r = api.post("/devices", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "provisioned" and r.json()["board"] == "picow"
        assert api.post("/devices", json=body).status_code == 409
        assert api.post("/devices", json={**body, "tenant": "nowhere"}).status_code == 404
        assert api.post("/devices", json={**body, "device_id": "x-1", "asset_id": "NO-SUCH"}).status_code == 422
        r = api.patch(f"/devices/{TENANT}/air-0007", json={"status": "active", "firmware": "0.2.0"})
        assert r.status_code == 200 and r.json()["status"] == "active" and r.json()["lat"] == 53.8
        assert [d["device_id"] for d in api.get("/devices", params={"tenant": TENANT, "kind": "air"}).json()] == [
            "air-0007"]
        assert [d["device_id"] for d in api.get("/devices", params={"tenant": TENANT}).json()] == [
            "air-0007", "bin-0001"]
        assert api.delete(f"/devices/{TENANT}/air-0007").status_code == 204
        assert api.get(f"/devices/{TENANT}/air-0007").json()["status"] == "retired"
        assert api.get(f"/devices/{TENANT}/nope").status_code == 404

        q = {"tenant": TENANT, "device": "bin-0001", "metric": "fill", "start": start.isoformat(),
             "end": end.isoformat()}
        raw = api.get("/readings", params=q).json()
        assert raw["unit"] == "/" and raw["bucket"] == "raw"
        assert [(dt.datetime.fromisoformat(p["time"]), p["value"]) for p in raw["points"]] == [
            (dt.datetime.fromtimestamp(t / 1000, UTC), v) for t, _, _, v in rows]
        for bucket, width, count in (("1h", HOUR, 48), ("1d", DAY, 2), ("15m", dt.timedelta(minutes=15), 192)):
            got_b = parsed(api.get("/readings", params={**q, "bucket": bucket}).json()["buckets"])
            assert len(got_b) == count and got_b == buckets(width), bucket
        # a window that cuts into the data: hourly buckets are whole hours inside it
        part = api.get("/readings", params={**q, "bucket": "1h", "start": (DAY0 + 23 * HOUR).isoformat(),
                                            "end": (DAY0 + 25 * HOUR).isoformat()}).json()["buckets"]
        assert [b["n"] for b in part] == [6, 6]
        assert api.get("/readings", params={**q, "bucket": "fortnightly"}).status_code == 422
        assert api.get("/readings", params={**q, "metric": "nonsense"}).status_code == 404


# --------------------------------------------------------------------------- 6. retention


def test_retention_job_removes_old_readings_and_keeps_their_rollups(tsdb):
    pk = register(tsdb, ["bin-0001"])["bin-0001"]
    now = dt.datetime.now(UTC).replace(microsecond=0)
    ages = {40: 1.0, 31: 2.0, 29: 3.0, 1: 4.0}          # days old -> value; retention is 30 days
    rows = [(ms(now - dt.timedelta(days=a, minutes=m)), pk, FILL, v) for a, v in ages.items() for m in (0, 7)]
    assert write(tsdb, rows).inserted == len(rows)
    with psycopg.connect(tsdb, autocommit=True) as c:
        j = jobs(c)
        job, cfg = j[("policy_retention", "readings")]
        assert cfg["drop_after"] == "30 days"
        # the rollups as they were when that data was new (the policies had materialized it then)
        for v in ("readings_hourly", "readings_daily"):
            c.execute(f"CALL refresh_continuous_aggregate('{v}', NULL, NULL)")
        hourly, daily = view(c, "readings_hourly"), view(c, "readings_daily")
        assert hourly == aggregate(rows, HOUR) and daily == aggregate(rows, DAY)
        assert c.execute("SELECT count(*) FROM show_chunks('readings')").fetchone()[0] >= 4

        c.execute("CALL run_job(%s)", (job,))           # what the scheduler would run daily
        assert sorted(r[3] for r in stored(c)) == [3.0, 3.0, 4.0, 4.0]
        # whole chunks went: nothing older than the window is left behind
        assert c.execute("SELECT count(*) FROM show_chunks('readings', older_than => interval '30 days')"
                         ).fetchone() == (0,)
        # The refresh policies run after the drop must not recompute the dropped days from
        # no rows (drop_chunks logs them as invalidated): the rollups outlive the raw
        # readings, as the plain variant's rollup tables do.
        for v in ("readings_hourly", "readings_daily"):
            c.execute("CALL run_job(%s)", (j[("policy_refresh_continuous_aggregate", v)][0],))
        assert view(c, "readings_hourly") == hourly and view(c, "readings_daily") == daily
