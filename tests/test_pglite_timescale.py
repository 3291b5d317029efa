"""The TimescaleDB code path, for real: PGlite (PostgreSQL 17 + TimescaleDB 2.23 in
WebAssembly) served over the wire protocol by tests/tools/pglite_timescale.mjs and
driven with psycopg 3 exactly as the ingest code drives a production server.

These tests pin down what the harness can and cannot do (see tests/support/pglite.py):
if PGlite changes behaviour, a test here fails and says what changed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import threading
import time
from collections import defaultdict

import psycopg
import pytest
from psycopg import errors
from psycopg_pool import ConnectionPool

from tests.support.pglite import PGliteTimescale, node_unavailable_reason, pglite_fixture

_UNAVAILABLE = node_unavailable_reason()
pytestmark = [pytest.mark.timescale, pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or "")]

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)

# One server for the module; a second connection waits up to 5 s for the first to close.
pg = pglite_fixture(scope="module", name="pg", queue_timeout=5.0)


@pytest.fixture(scope="module")
def ts(pg: PGliteTimescale) -> PGliteTimescale:
    """The module server with the timescaledb extension created."""
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    return pg


@pytest.fixture
def conn(ts: PGliteTimescale):
    """An autocommit connection, closed after the test (the server takes one at a time)."""
    with psycopg.connect(ts.url, autocommit=True) as c:
        yield c


def make_readings(conn: psycopg.Connection, name: str, chunk: str = "1 day") -> None:
    """The production table shape as a hypertable."""
    conn.execute(f"""CREATE TABLE {name} (
        time timestamptz NOT NULL, device_id bigint NOT NULL, metric smallint NOT NULL,
        value double precision, UNIQUE (device_id, metric, time))""")
    row = conn.execute(
        f"SELECT * FROM create_hypertable('{name}', by_range('time', interval '{chunk}'))").fetchone()
    assert row is not None and row[0] > 0 and row[1] is True


INSERT_UNNEST = """INSERT INTO {table} (time, device_id, metric, value)
    SELECT * FROM unnest(%s::timestamptz[], %s::bigint[], %s::smallint[], %s::float8[])
    ON CONFLICT DO NOTHING"""


def unnest_insert(conn: psycopg.Connection, table: str, rows: list[tuple]) -> int:
    cols = [list(c) for c in zip(*rows)] if rows else [[], [], [], []]
    return conn.execute(INSERT_UNNEST.format(table=table), cols).rowcount


def grid(start: dt.datetime, hours: int, devices=(1, 2, 3), metrics=(1, 2),
         every_min: int = 5) -> list[tuple]:
    """Samples every ``every_min`` minutes; value = device*1000 + metric*100 + minutes since start."""
    out = []
    for m in range(0, hours * 60, every_min):
        t = start + dt.timedelta(minutes=m)
        for d in devices:
            for k in metrics:
                out.append((t, d, k, float(d * 1000 + k * 100 + m)))
    return out


def hourly(rows: list[tuple]) -> dict[tuple, tuple[int, float]]:
    """(hour, device, metric) -> (count, avg), computed in Python."""
    acc: dict[tuple, list[float]] = defaultdict(list)
    for t, d, k, v in rows:
        acc[(t.replace(minute=0, second=0, microsecond=0), d, k)].append(v)
    return {key: (len(vs), sum(vs) / len(vs)) for key, vs in acc.items()}


# --------------------------------------------------------------------------- server


def test_server_starts_quickly_and_reports_versions(ts, conn, record_property):
    record_property("pglite_startup_s", round(ts.startup_seconds, 2))
    assert ts.startup_seconds < 30, f"PGlite took {ts.startup_seconds:.1f} s to start"
    assert ts.url == f"postgresql://postgres:postgres@127.0.0.1:{ts.port}/postgres"
    assert conn.info.server_version >= 170000
    assert conn.execute("SELECT version()").fetchone()[0].startswith("PostgreSQL 17.")
    ext = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    assert ext is not None and ext[0].startswith("2.23"), ext
    # what ingest/migrate.py probes to choose the storage variant
    assert conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone() == (1,)
    assert conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'plpgsql'").fetchone() == (1,)


def test_connection_rules(ts):
    # Any user and any non-empty password; the session is always "postgres" in "template1".
    with psycopg.connect(f"postgresql://someone:whatever@{ts.host}:{ts.port}/anydb") as c:
        assert c.execute("SELECT current_user, current_database()").fetchone() == ("postgres", "template1")
        assert c.execute("SHOW search_path").fetchone() == ("public",)
        assert c.execute("SHOW TimeZone").fetchone() == ("GMT",)
        # PGlite boots with enable_seqscan=off: plans differ from production, results do not.
        assert c.execute("SHOW enable_seqscan").fetchone() == ("off",)
    with pytest.raises(psycopg.OperationalError, match="fe_sendauth: no password supplied"):
        psycopg.connect(f"postgresql://postgres@{ts.host}:{ts.port}/postgres")
    # Encryption is declined: sslmode=prefer (the default) works, require does not.
    with pytest.raises(psycopg.OperationalError, match="server does not support SSL, but SSL was required"):
        psycopg.connect(ts.url + "?sslmode=require")
    with psycopg.connect(ts.conninfo) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_second_connection_waits_for_the_first(ts):
    first = psycopg.connect(ts.url, autocommit=True)
    got: dict[str, object] = {}

    def second():
        t = time.monotonic()
        with psycopg.connect(ts.url, autocommit=True) as c:
            got["row"] = c.execute("SELECT 42").fetchone()
            got["waited"] = time.monotonic() - t

    th = threading.Thread(target=second)
    th.start()
    time.sleep(0.5)
    assert "row" not in got, "the second connection was served while the first was open"
    first.execute("SELECT 1")          # the first is still served normally
    first.close()
    th.join(10)
    assert got["row"] == (42,)
    assert 0.4 < got["waited"] < 5


def test_second_connection_gives_up_after_queue_timeout():
    with PGliteTimescale(queue_timeout=0.5) as short:
        with psycopg.connect(short.url) as first:
            t = time.monotonic()
            with pytest.raises(psycopg.OperationalError,
                               match="FATAL:  PGlite serves only one connection at a time; waited 500 ms"):
                psycopg.connect(short.url, connect_timeout=10)
            assert time.monotonic() - t < 3
            assert first.execute("SELECT 1").fetchone() == (1,)   # the first is unharmed


# --------------------------------------------------------------------------- hypertables


def test_hypertable_and_on_conflict_do_nothing(conn):
    make_readings(conn, "ht_basic")
    row = (T0, 7, 3, 21.5)
    ins = "INSERT INTO ht_basic VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING"
    assert conn.execute(ins, row).rowcount == 1
    assert conn.execute(ins, row).rowcount == 0
    assert conn.execute(ins, (T0, 7, 3, 99.0)).rowcount == 0          # same key, other value
    assert conn.execute(ins, (T0 + dt.timedelta(days=2), 7, 3, 1.0)).rowcount == 1
    assert conn.execute("SELECT count(*), sum(value) FROM ht_basic").fetchone() == (2, 22.5)
    assert conn.execute(
        "SELECT num_dimensions, num_chunks FROM timescaledb_information.hypertables "
        "WHERE hypertable_name = 'ht_basic'").fetchone() == (1, 2)
    with pytest.raises(errors.UniqueViolation):
        conn.execute("INSERT INTO ht_basic VALUES (%s, %s, %s, %s)", row)


def test_unnest_bulk_insert_10k_rows(conn, record_property):
    make_readings(conn, "ht_bulk")
    n = 10_000
    rows = [(T0 + dt.timedelta(seconds=10 * i), i % 25, i % 4, i * 0.5) for i in range(n)]
    # ~280 KiB of binary parameters: the request spans several TCP reads on the server.
    t = time.perf_counter()
    assert unnest_insert(conn, "ht_bulk", rows) == n
    elapsed = time.perf_counter() - t
    rate = n / elapsed
    record_property("unnest_rows_per_s", round(rate))
    print(f"\nunnest insert: {n} rows in {elapsed * 1000:.0f} ms = {rate:,.0f} rows/s")
    assert rate > 2_000
    assert conn.execute("SELECT count(*), sum(value), min(time), max(time), count(DISTINCT device_id) "
                        "FROM ht_bulk").fetchone() == (
        n, sum(r[3] for r in rows), rows[0][0], rows[-1][0], 25)
    # idempotent: the same batch again inserts nothing; a batch overlapping by half inserts half
    assert unnest_insert(conn, "ht_bulk", rows) == 0
    more = [(r[0] + dt.timedelta(seconds=5 * n), r[1], r[2], r[3]) for r in rows]
    assert unnest_insert(conn, "ht_bulk", more) == n // 2
    assert conn.execute("SELECT count(*) FROM ht_bulk").fetchone() == (n + n // 2,)
    assert unnest_insert(conn, "ht_bulk", []) == 0


def test_time_bucket(conn):
    make_readings(conn, "ht_bucket")
    rows = grid(T0, hours=3)
    unnest_insert(conn, "ht_bucket", rows)
    got = conn.execute("""SELECT time_bucket('1 hour', time) AS b, device_id, metric, count(*), avg(value)
                          FROM ht_bucket GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""").fetchall()
    want = hourly(rows)
    assert len(got) == len(want) == 3 * 3 * 2
    for b, d, k, cnt, avg in got:
        assert (cnt, avg) == pytest.approx(want[(b, d, k)]), (b, d, k)
    # bucket width and origin as parameters, and time_bucket_gapfill
    got = conn.execute("SELECT time_bucket(%s::interval, time, %s::timestamptz) AS b, count(*) "
                       "FROM ht_bucket GROUP BY 1 ORDER BY 1", ("90 minutes", T0)).fetchall()
    assert [(b - T0, c) for b, c in got] == [(dt.timedelta(0), 18 * 6), (dt.timedelta(minutes=90), 18 * 6)]
    got = conn.execute("""SELECT time_bucket_gapfill('1 hour', time, %s, %s) AS b, count(*) FROM ht_bucket
                          WHERE time >= %s AND time < %s GROUP BY 1 ORDER BY 1""",
                       (T0, T0 + dt.timedelta(hours=5), T0, T0 + dt.timedelta(hours=5))).fetchall()
    assert [c for _, c in got] == [72, 72, 72, None, None]


# --------------------------------------------------------------------------- continuous aggregates


def test_continuous_aggregate_refresh_and_policy(conn):
    make_readings(conn, "ht_cagg")
    start = dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=12)
    rows = grid(start, hours=6)
    unnest_insert(conn, "ht_cagg", rows)
    conn.execute("""CREATE MATERIALIZED VIEW ht_cagg_hourly WITH (timescaledb.continuous) AS
        SELECT time_bucket('1 hour', time) AS bucket, device_id, metric,
               count(*) AS n, avg(value) AS avg, min(value) AS min, max(value) AS max
        FROM ht_cagg GROUP BY 1, 2, 3 WITH NO DATA""")
    # materialized_only (the 2.x default): nothing until refreshed
    assert conn.execute("SELECT count(*) FROM ht_cagg_hourly").fetchone() == (0,)
    conn.execute("CALL refresh_continuous_aggregate('ht_cagg_hourly', %s::timestamptz, %s::timestamptz)",
                 (start, start + dt.timedelta(hours=6)))
    got = conn.execute("SELECT bucket, device_id, metric, n, avg FROM ht_cagg_hourly "
                       "ORDER BY 1, 2, 3").fetchall()
    want = hourly(rows)
    assert len(got) == len(want) == 6 * 3 * 2
    for b, d, k, n, avg in got:
        assert (n, avg) == pytest.approx(want[(b, d, k)])

    # Materialize everything: the policy refreshes the newest invalid buckets first, a few
    # batches per run (TimescaleDB 2.2x), so the never-materialized range up to +infinity
    # would otherwise come before the late row below.
    conn.execute("CALL refresh_continuous_aggregate('ht_cagg_hourly', NULL, NULL)")
    job = conn.execute("""SELECT add_continuous_aggregate_policy('ht_cagg_hourly',
        start_offset => interval '3 days', end_offset => interval '1 hour',
        schedule_interval => interval '5 minutes')""").fetchone()[0]
    assert job >= 1000
    assert conn.execute("SELECT proc_name, schedule_interval FROM timescaledb_information.jobs "
                        "WHERE job_id = %s", (job,)).fetchone() == (
        "policy_refresh_continuous_aggregate", dt.timedelta(minutes=5))
    # a late reading for an already materialized hour: the policy picks it up when it runs
    late = (start + dt.timedelta(minutes=1), 1, 1, 1_000_000.0)
    assert unnest_insert(conn, "ht_cagg", [late]) == 1
    assert conn.execute("SELECT n FROM ht_cagg_hourly WHERE bucket = %s AND device_id = 1 AND metric = 1",
                        (start,)).fetchone() == (12,)
    # Background jobs never run by themselves under PGlite: run the policy by hand. A run
    # refreshes a bounded number of invalidated batches, so the late hour may take another run.
    for _ in range(5):
        conn.execute("CALL run_job(%s)", (job,))
        got_late = conn.execute("SELECT n, max FROM ht_cagg_hourly "
                                "WHERE bucket = %s AND device_id = 1 AND metric = 1", (start,)).fetchone()
        if got_late == (13, 1_000_000.0):
            break
    assert got_late == (13, 1_000_000.0)
    with pytest.raises(errors.InvalidParameterValue, match="refresh policy already exists"):
        conn.execute("SELECT add_continuous_aggregate_policy('ht_cagg_hourly', "
                     "start_offset => interval '3 days', end_offset => interval '1 hour', "
                     "schedule_interval => interval '5 minutes')")
    # refresh_continuous_aggregate cannot run inside a transaction block (as on PostgreSQL)
    conn.autocommit = False
    try:
        with pytest.raises(errors.ActiveSqlTransaction):
            conn.execute("CALL refresh_continuous_aggregate('ht_cagg_hourly', NULL, NULL)")
        conn.rollback()
    finally:
        conn.autocommit = True


def test_migration_style_script_realtime_aggregate_and_advisory_lock(conn):
    """What ingest/migrate.py does: advisory lock, a multi-statement script in one
    transaction (hypertable, compression settings, real-time caggs), then policies."""
    script = """
        CREATE TABLE mig_readings (
            time timestamptz NOT NULL, device_id bigint NOT NULL, metric smallint NOT NULL,
            value double precision NOT NULL, PRIMARY KEY (device_id, metric, time));
        SELECT create_hypertable('mig_readings', 'time', chunk_time_interval => interval '1 day');
        ALTER TABLE mig_readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id',
                                      timescaledb.compress_orderby = 'metric, time');
        CREATE MATERIALIZED VIEW mig_hourly
            WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
            SELECT time_bucket(interval '1 hour', time) AS bucket, device_id, metric,
                   count(*) AS n, sum(value) AS sum, avg(value) AS avg
            FROM mig_readings GROUP BY 1, 2, 3 WITH NO DATA;
    """
    assert conn.execute("SELECT pg_advisory_lock(%s)", (0x5757_0001,)).fetchone() == ("",)
    try:
        with conn.transaction():
            conn.execute(script)
            conn.execute("CREATE TABLE IF NOT EXISTS mig_log (v int PRIMARY KEY)")
            conn.execute("INSERT INTO mig_log VALUES (%s)", (2,))
        compression = ("SELECT add_compression_policy('mig_readings', interval '7 days', "
                       "if_not_exists => true)")
        conn.execute(compression)
        conn.execute("SELECT remove_retention_policy('mig_readings', if_exists => true)")
        conn.execute("SELECT add_retention_policy('mig_readings', make_interval(days => %s), "
                     "if_not_exists => true)", (730,))
        conn.execute("""SELECT add_continuous_aggregate_policy('mig_hourly',
                            start_offset => interval '35 days', end_offset => NULL,
                            schedule_interval => interval '5 minutes', if_not_exists => true)""")
        conn.execute(compression)        # a second run: if_not_exists makes it a no-op
    finally:
        assert conn.execute("SELECT pg_advisory_unlock(%s)", (0x5757_0001,)).fetchone() == (True,)
    procs = sorted(conn.execute(
        "SELECT proc_name, hypertable_name FROM timescaledb_information.jobs "
        "WHERE hypertable_name IN ('mig_readings', 'mig_hourly')").fetchall())
    assert procs == [("policy_compression", "mig_readings"),
                     ("policy_refresh_continuous_aggregate", "mig_hourly"),
                     ("policy_retention", "mig_readings")]
    rows = grid(T0, hours=2, devices=(5,), metrics=(1,))
    unnest_insert(conn, "mig_readings", rows)
    # real-time aggregate: rows show without any refresh
    got = conn.execute("SELECT bucket, n, sum FROM mig_hourly ORDER BY bucket").fetchall()
    assert got == [(T0, 12, sum(r[3] for r in rows[:12])),
                   (T0 + dt.timedelta(hours=1), 12, sum(r[3] for r in rows[12:]))]


# --------------------------------------------------------------------------- compression and retention


def test_compression_policy_and_manual_compress_chunk(conn):
    make_readings(conn, "ht_comp")
    conn.execute("ALTER TABLE ht_comp SET (timescaledb.compress, "
                 "timescaledb.compress_segmentby = 'device_id')")
    rows = grid(T0, hours=72, devices=(1, 2), metrics=(1,), every_min=10)        # 3 daily chunks
    unnest_insert(conn, "ht_comp", rows)
    totals = "SELECT count(*), sum(value), min(time), max(time) FROM ht_comp"
    before = conn.execute(totals).fetchone()
    per_hour = conn.execute("SELECT time_bucket('1 hour', time), device_id, avg(value) FROM ht_comp "
                            "GROUP BY 1, 2 ORDER BY 1, 2").fetchall()

    job = conn.execute("SELECT add_compression_policy('ht_comp', interval '7 days')").fetchone()[0]
    assert conn.execute("SELECT proc_name FROM timescaledb_information.jobs WHERE job_id = %s",
                        (job,)).fetchone() == ("policy_compression",)
    assert conn.execute("SELECT segmentby_column_index FROM timescaledb_information.compression_settings "
                        "WHERE hypertable_name = 'ht_comp' AND attname = 'device_id'").fetchone() == (1,)

    chunks = [r[0] for r in conn.execute("SELECT show_chunks('ht_comp') ORDER BY 1")]
    assert len(chunks) == 3
    done = conn.execute("SELECT compress_chunk(%s::regclass)", (chunks[0],)).fetchone()[0]
    assert done == chunks[0]
    status = dict(conn.execute(
        "SELECT chunk_schema || '.' || chunk_name, is_compressed "
        "FROM timescaledb_information.chunks WHERE hypertable_name = 'ht_comp'").fetchall())
    assert [status[c] for c in chunks] == [True, False, False]
    # queries over compressed and uncompressed chunks give the same answers
    assert conn.execute(totals).fetchone() == before
    assert conn.execute("SELECT time_bucket('1 hour', time), device_id, avg(value) FROM ht_comp "
                        "GROUP BY 1, 2 ORDER BY 1, 2").fetchall() == per_hour
    assert conn.execute("SELECT value FROM ht_comp WHERE device_id = 2 AND time = %s",
                        (T0 + dt.timedelta(minutes=30),)).fetchone() == (2000 + 100 + 30,)
    # late data into a compressed chunk: ON CONFLICT DO NOTHING still sees the existing rows
    assert unnest_insert(conn, "ht_comp", rows[:50]) == 0
    assert unnest_insert(conn, "ht_comp", [(T0 + dt.timedelta(minutes=5), 1, 1, -1.0)]) == 1
    assert conn.execute("SELECT count(*) FROM ht_comp").fetchone() == (before[0] + 1,)
    compressed = "SELECT total_chunks, number_compressed_chunks FROM hypertable_compression_stats('ht_comp')"
    assert conn.execute(compressed).fetchone() == (3, 1)
    # the policy compresses the other two chunks (data is older than 7 days) when run by hand
    conn.execute("CALL run_job(%s)", (job,))
    assert conn.execute(compressed).fetchone() == (3, 3)
    assert conn.execute(totals).fetchone()[:2] == (before[0] + 1, before[1] - 1.0)
    conn.execute("SELECT decompress_chunk(%s::regclass)", (chunks[2],))
    assert conn.execute(compressed).fetchone() == (3, 2)


def test_retention_policy_drops_old_chunks(conn):
    make_readings(conn, "ht_ret")
    now = dt.datetime.now(UTC).replace(microsecond=0)
    old = [(now - dt.timedelta(days=100, minutes=i), 1, 1, 1.0) for i in range(10)]
    recent = [(now - dt.timedelta(days=1, minutes=i), 1, 1, 2.0) for i in range(10)]
    unnest_insert(conn, "ht_ret", old + recent)
    job = conn.execute("SELECT add_retention_policy('ht_ret', interval '30 days')").fetchone()[0]
    assert conn.execute("SELECT proc_name, config->>'drop_after' FROM timescaledb_information.jobs "
                        "WHERE job_id = %s", (job,)).fetchone() == ("policy_retention", "30 days")
    assert conn.execute("SELECT count(*) FROM ht_ret").fetchone() == (20,)      # not run by itself
    conn.execute("CALL run_job(%s)", (job,))
    assert conn.execute("SELECT count(*), min(value) FROM ht_ret").fetchone() == (10, 2.0)
    recent_days = len({r[0].date() for r in recent})                  # 1, or 2 around midnight UTC
    assert conn.execute("SELECT count(*) FROM show_chunks('ht_ret')").fetchone() == (recent_days,)
    # drop_chunks directly: every chunk that ends before now
    dropped = conn.execute("SELECT drop_chunks('ht_ret', older_than => interval '0 days')").fetchall()
    assert len(dropped) == recent_days
    assert conn.execute("SELECT count(*) FROM ht_ret").fetchone() == (0,)


# --------------------------------------------------------------------------- COPY


def test_copy_from_stdin_is_refused_and_the_server_survives(conn):
    conn.execute("CREATE TABLE copy_in (a int, b text)")
    with pytest.raises(errors.FeatureNotSupported,
                       match="COPY FROM STDIN is not supported by the PGlite test server"):
        with conn.cursor() as cur, cur.copy("COPY copy_in FROM STDIN") as cp:
            cp.write_row((1, "x"))
    with pytest.raises(errors.FeatureNotSupported):
        with conn.cursor() as cur, cur.copy("COPY copy_in (a, b) FROM STDIN (FORMAT BINARY)") as cp:
            cp.write_row((1, "x"))
    assert conn.execute("SELECT count(*) FROM copy_in").fetchone() == (0,)
    # inside a transaction it fails the transaction, as any SQL error does
    conn.autocommit = False
    try:
        conn.execute("INSERT INTO copy_in VALUES (1, 'a')")
        with pytest.raises(errors.FeatureNotSupported):
            with conn.cursor() as cur, cur.copy("copy copy_in from stdin"):
                pass
        with pytest.raises(errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
    finally:
        conn.autocommit = True
    # COPY TO STDOUT works
    conn.execute("INSERT INTO copy_in SELECT g, 'v' || g FROM generate_series(1, 3) g")
    with conn.cursor() as cur, cur.copy("COPY (SELECT a, b FROM copy_in ORDER BY a) TO STDOUT") as cp:
        assert list(cp.rows()) == [("1", "v1"), ("2", "v2"), ("3", "v3")]


def test_copy_from_stdin_crashes_pglite_when_let_through():
    """Documents the failure the server's guard prevents. If this test fails because the
    COPY worked, the fork has fixed COPY FROM STDIN: drop the guard in pglite_timescale.mjs."""
    with PGliteTimescale(allow_copy_from_stdin=True) as raw:
        with psycopg.connect(raw.url, autocommit=True) as c:
            c.execute("CREATE TABLE t (a int)")
            with pytest.raises(errors.InternalError_,
                               match="PGlite backend failure: RuntimeError: unreachable"):
                with c.cursor() as cur, cur.copy("COPY t FROM STDIN") as cp:
                    cp.write_row((1,))
            assert c.closed
        # the WebAssembly backend is dead: every later connection is refused
        with pytest.raises(psycopg.OperationalError, match="PGlite backend crashed earlier"):
            psycopg.connect(raw.url)
        assert "RuntimeError: unreachable" in raw.log()


# --------------------------------------------------------------------------- psycopg features


def test_psycopg_defaults_prepared_statements_and_binary(ts):
    # default prepare_threshold=5: the 6th execution runs a server-side prepared statement
    with psycopg.connect(ts.url, autocommit=True) as c:
        assert c.prepare_threshold == 5
        q = "SELECT %s::int * 2, %s::timestamptz + interval '1 hour', %s::float8[]"
        for i in range(10):
            assert c.execute(q, (i, T0, [float(i), 0.5])).fetchone() == (
                2 * i, T0 + dt.timedelta(hours=1), [float(i), 0.5])
        names = [r[0] for r in c.execute("SELECT name FROM pg_prepared_statements")]
        assert any(n.startswith("_pg3_") for n in names), names
        # binary results and binary parameters
        cur = c.cursor(binary=True)
        row = cur.execute("SELECT %b::numeric, %b::bigint[], %b::text", (1.25, [1, 2, 3], "é")).fetchone()
        assert row == (pytest.approx(1.25), [1, 2, 3], "é")
        # errors in prepared statements are ordinary errors
        for _ in range(7):
            with pytest.raises(errors.DivisionByZero):
                c.execute("SELECT 1 / %s::int", (0,))
        assert c.execute("SELECT 1 / %s::int", (1,)).fetchone() == (1,)
    for threshold in (0, None):
        with psycopg.connect(ts.url, autocommit=True, prepare_threshold=threshold) as c:
            got = [c.execute("SELECT %s::int + 1", (i,)).fetchone()[0] for i in range(8)]
            assert got == list(range(1, 9))
            n = c.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
            assert (n > 0) if threshold == 0 else (n == 0)


def test_each_connection_gets_a_fresh_session(ts):
    # a client that leaves behind a transaction, prepared statements, temp table, LISTEN, settings...
    c = psycopg.connect(ts.url)
    c.execute("CREATE TABLE IF NOT EXISTS fresh (v int)")
    c.commit()
    for i in range(6):
        c.execute("INSERT INTO fresh VALUES (%s)", (i,))            # prepared as _pg3_0
    c.execute("CREATE TEMP TABLE scratch (x int)")
    c.execute("LISTEN somewhere")
    c.execute("SET search_path TO pg_catalog")
    c.execute("SET statement_timeout TO '5s'")
    c.close()                                                      # no commit
    # ...and one that vanishes mid-transaction without a Terminate message
    d = psycopg.connect(ts.url)
    d.execute("INSERT INTO fresh VALUES (100)")
    socket.socket(fileno=os.dup(d.fileno())).shutdown(socket.SHUT_RDWR)
    d.close()
    with psycopg.connect(ts.url, autocommit=True) as e:
        assert e.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert e.execute("SELECT count(*) FROM fresh").fetchone() == (0,)
        assert e.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
        assert e.execute("SELECT to_regclass('pg_temp.scratch')").fetchone() == (None,)
        assert e.execute("SELECT count(*) FROM pg_listening_channels()").fetchone() == (0,)
        assert e.execute("SELECT current_setting('search_path'), current_setting('statement_timeout'), "
                         "current_setting('client_min_messages')").fetchone() == ("public", "0", "notice")
        # psycopg starts naming statements at _pg3_0 again: no "already exists" clash
        for i in range(7):
            assert e.execute("INSERT INTO fresh VALUES (%s) RETURNING v", (i,)).fetchone() == (i,)


def test_transactions_commit_rollback_savepoints(ts):
    with psycopg.connect(ts.url) as c:          # autocommit off, like the ingest writer
        c.execute("CREATE TABLE tx (id int PRIMARY KEY, v text)")
        c.execute("INSERT INTO tx VALUES (1, 'a')")
        c.execute("INSERT INTO tx VALUES (2, 'b')")
        c.execute("UPDATE tx SET v = 'bb' WHERE id = %s", (2,))
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        c.commit()
        c.execute("INSERT INTO tx VALUES (3, 'c')")
        c.rollback()
        with pytest.raises(errors.UniqueViolation):
            with c.transaction():
                c.execute("INSERT INTO tx VALUES (4, 'd')")
                c.execute("INSERT INTO tx VALUES (1, 'dup')")
        with c.transaction():
            c.execute("INSERT INTO tx VALUES (5, 'e')")
            with pytest.raises(errors.UniqueViolation):
                with c.transaction():                       # savepoint
                    c.execute("INSERT INTO tx VALUES (2, 'dup')")
            c.execute("INSERT INTO tx VALUES (6, 'f')")
        c.execute("INSERT INTO tx VALUES (7, 'g')")
        with pytest.raises(errors.SyntaxError):
            c.execute("SELEC 1")
        with pytest.raises(errors.InFailedSqlTransaction):
            c.execute("SELECT 1")
        c.rollback()
        assert c.execute("SELECT id, v FROM tx ORDER BY id").fetchall() == [
            (1, "a"), (2, "bb"), (5, "e"), (6, "f")]
        c.commit()


def test_executemany_and_pipeline(conn):
    make_readings(conn, "ht_many")
    rows = grid(T0, hours=2, devices=(1, 2), metrics=(1,))
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO ht_many VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING", rows)
        assert cur.rowcount == len(rows)
        cur.executemany("INSERT INTO ht_many VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING", rows)
        assert cur.rowcount == 0
        cur.executemany("INSERT INTO ht_many VALUES (%s, %s, %s, %s) RETURNING device_id",
                        [(T0 - dt.timedelta(minutes=i), 9, 1, 0.0) for i in range(1, 4)], returning=True)
        returned = []
        while True:
            returned.append(cur.fetchone())
            if not cur.nextset():
                break
        assert returned == [(9,), (9,), (9,)]
        # an error mid-batch: the whole executemany fails (one implicit transaction)
        with pytest.raises(errors.UniqueViolation):
            cur.executemany("INSERT INTO ht_many VALUES (%s, %s, %s, %s)",
                            [(T0 - dt.timedelta(hours=5), 8, 1, 0.0), rows[0]])
    assert conn.execute("SELECT count(*) FROM ht_many WHERE device_id = 8").fetchone() == (0,)
    with conn.pipeline():
        curs = [conn.execute("SELECT count(*) FROM ht_many WHERE device_id = %s", (d,)) for d in (1, 2, 9)]
        conn.execute("INSERT INTO ht_many VALUES (%s, 1, 1, 0.0)", (T0 - dt.timedelta(days=1),))
    assert [c.fetchone()[0] for c in curs] == [24, 24, 3]
    assert conn.execute("SELECT count(*) FROM ht_many").fetchone() == (len(rows) + 4,)


def test_listen_notify_within_one_session(conn):
    conn.execute("LISTEN ingest_events")
    conn.execute("NOTIFY ingest_events, 'hello'")
    conn.execute("SELECT pg_notify(%s, %s)", ("ingest_events", "world"))
    got = [(n.channel, n.payload) for n in conn.notifies(timeout=2.0, stop_after=2)]
    assert got == [("ingest_events", "hello"), ("ingest_events", "world")]
    # notifications are delivered at commit, as on PostgreSQL
    conn.autocommit = False
    conn.execute("NOTIFY ingest_events, 'later'")
    assert list(conn.notifies(timeout=0.2)) == []
    conn.commit()
    assert [n.payload for n in conn.notifies(timeout=2.0, stop_after=1)] == ["later"]
    conn.autocommit = True


def test_connection_pool_max_size_1(ts):
    results: list[int] = []
    with ConnectionPool(ts.url, min_size=1, max_size=1, timeout=20,
                        kwargs={"autocommit": True}, open=True) as pool:
        pool.wait(timeout=10)

        def worker(base: int) -> None:
            for i in range(5):
                with pool.connection() as c:
                    results.append(c.execute("SELECT %s::int", (base + i,)).fetchone()[0])

        threads = [threading.Thread(target=worker, args=(100 * k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        stats = pool.get_stats()
    assert sorted(results) == sorted(100 * k + i for k in range(4) for i in range(5))
    assert stats["connections_num"] == 1 and stats.get("connections_errors", 0) == 0
    # the pool closed its connection: the server takes a new client at once
    with psycopg.connect(ts.url, connect_timeout=5) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_async_connection(ts):
    async def main() -> list:
        async with await psycopg.AsyncConnection.connect(ts.url, autocommit=True) as ac:
            await ac.execute("CREATE TABLE IF NOT EXISTS async_t (v int)")
            for i in range(7):
                await ac.execute("INSERT INTO async_t VALUES (%s)", (i,))
            cur = await ac.execute("SELECT array_agg(v ORDER BY v) FROM async_t")
            return (await cur.fetchone())[0]

    assert asyncio.run(main()) == list(range(7))


def test_larger_result_set(conn):
    rows = conn.execute("SELECT g, md5(g::text) FROM generate_series(1, 20000) g").fetchall()
    assert len(rows) == 20000 and rows[-1][0] == 20000


# --------------------------------------------------------------------------- persistence


def test_data_dir_survives_a_restart(tmp_path):
    data = tmp_path / "pgdata"
    first = PGliteTimescale(data).start()
    try:
        with psycopg.connect(first.url, autocommit=True) as c:
            c.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            make_readings(c, "kept")
            unnest_insert(c, "kept", grid(T0, hours=1, devices=(1,), metrics=(1,)))
    finally:
        assert first.stop() == 0          # SIGTERM: clean shutdown, PGlite closed
    assert "SIGTERM: shutting down" in first.log()
    with PGliteTimescale(data) as second:
        with psycopg.connect(second.url, autocommit=True) as c:
            assert c.execute("SELECT count(*) FROM kept").fetchone() == (12,)
            assert c.execute("SELECT hypertable_name FROM timescaledb_information.hypertables"
                             ).fetchall() == [("kept",)]
    print(f"\nstartup: fresh data dir {first.startup_seconds:.2f} s, reopened {second.startup_seconds:.2f} s")
